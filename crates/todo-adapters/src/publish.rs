//! Publishing outbox events to the Dapr sidecar (DESIGN.md section 3).
//!
//! `flush_user` sends one user's pending events in order under that user's lease and marks
//! what the sidecar accepted. Any failure stops the batch, so no event overtakes an earlier
//! one; the outbox keeps the rest for the next attempt.

use crate::db::Db;
use crate::vars;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use spin_sdk::http::FullBody;
use spin_sdk::wasip3::http::types::RequestOptions;
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;
use std::time::Duration;
use todo_core::error::ApiError;
use todo_core::outbox::{self, CLOUDEVENTS_JSON, Pending};
use uuid::Uuid;

/// How long a publisher may hold a user's lease before another may take over.
const LEASE_SECONDS: i32 = 30;
/// Publishing rounds per flush: bounds the work one request does after its response.
const MAX_ROUNDS: usize = 4;

pub struct Publisher {
    dapr_url: String,
    api_token: String,
    pubsub: String,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dapr_url", &self.dapr_url)
            .field("pubsub", &self.pubsub)
            .finish_non_exhaustive()
    }
}

/// What one flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything pending (up to the batch size) was delivered.
    Delivered(usize),
    /// Another publisher holds the user's lease; it will deliver.
    Busy,
    /// Some were delivered, then the sidecar failed; the rest waits for backoff.
    Failed { delivered: usize, error: String },
}

/// Events a request publishes itself before leaving the rest to the relay.
const INLINE_BATCH: i64 = 20;

/// Publishes `user_id`'s pending events after the response has gone out: the component-model
/// task keeps running once it has returned its value (`wit_bindgen::spawn`). It takes over the
/// request's connection rather than checking out another (each checkout costs Spin's pool a
/// session reset). A failure here never reaches the client; the events stay in the outbox and
/// the relay delivers them.
pub fn after_response(db: Db, user_id: String) {
    spin_sdk::wit_bindgen::spawn(async move {
        let flushed = async {
            let publisher = Publisher::load().await?;
            publisher.flush_user(&db, &user_id, INLINE_BATCH).await
        };
        if let Err(error) = flushed.await {
            eprintln!("publishing events of {user_id} left to the relay: {error}");
        }
    });
}

/// What one round sent: the sequence numbers the sidecar accepted, and the first failure.
struct Round {
    delivered: Vec<i64>,
    failure: Option<(i64, String)>,
}

/// How far a run of events got.
struct RunOutcome {
    delivered: usize,
    error: Option<String>,
}

impl Publisher {
    /// Reads `dapr_url`, `dapr_api_token`, `pubsub_name` and `publish_timeout_ms`.
    pub async fn load() -> Result<Self, ApiError> {
        Ok(Self {
            dapr_url: vars::get("dapr_url").await?,
            api_token: vars::get("dapr_api_token").await?,
            pubsub: vars::get("pubsub_name").await?,
            timeout: Duration::from_millis(vars::number("publish_timeout_ms").await?),
        })
    }

    /// Publishes up to `batch` pending events of `user_id`, in order, one request per event
    /// (what a request does after its response: usually one or two events).
    pub async fn flush_user(&self, db: &Db, user_id: &str, batch: i64) -> Result<Flush, ApiError> {
        self.flush(db, user_id, batch, false).await
    }

    /// Like [`Publisher::flush_user`], sending runs of events with Dapr's bulk publish API
    /// (the relay's way: many events per request).
    pub async fn flush_user_bulk(
        &self,
        db: &Db,
        user_id: &str,
        batch: i64,
    ) -> Result<Flush, ApiError> {
        self.flush(db, user_id, batch, true).await
    }

    /// Publishes under the user's lease, round after round while more may be due (up to
    /// `MAX_ROUNDS`): a full batch may have left some behind, and a publisher that found the
    /// lease busy meanwhile (a writer after its commit) has left its events to this holder.
    /// That publisher returns `Busy` at once instead of waiting for the lease.
    ///
    /// A round is two statements: claim-and-read, then mark-and-release.
    async fn flush(
        &self,
        db: &Db,
        user_id: &str,
        batch: i64,
        bulk: bool,
    ) -> Result<Flush, ApiError> {
        let mut delivered = 0;
        for round in 0..MAX_ROUNDS {
            let holder = Uuid::now_v7();
            let claim = outbox::claim_pending(user_id, holder, LEASE_SECONDS, batch);
            let Some(pending) = db.claim_pending(claim).await? else {
                return Ok(if round == 0 {
                    Flush::Busy
                } else {
                    Flush::Delivered(delivered)
                });
            };
            let full = i64::try_from(pending.len()).is_ok_and(|n| n >= batch);
            let sent = self.publish_pending(user_id, &pending, bulk).await;
            if let Some((seq, error)) = &sent.failure {
                // Backs the user off before the lease goes, so no one retries at once. Should
                // this fail, the lease expires by itself and the round is sent again.
                db.execute(outbox::mark_failed(user_id, *seq, error))
                    .await?;
            }
            let recheck = db
                .flag(outbox::finish_round(user_id, holder, &sent.delivered))
                .await?
                .unwrap_or(false);
            delivered += sent.delivered.len();
            if let Some((_, error)) = sent.failure {
                return Ok(Flush::Failed { delivered, error });
            }
            if !(recheck || full) {
                break;
            }
        }
        Ok(Flush::Delivered(delivered))
    }

    /// Sends `pending` in order and stops at the first failure, so nothing overtakes it.
    async fn publish_pending(&self, user_id: &str, pending: &[Pending], bulk: bool) -> Round {
        let mut round = Round {
            delivered: Vec::new(),
            failure: None,
        };
        // Runs of the same topic, in order; a bulk request carries one topic.
        for run in pending.chunk_by(|a, b| a.topic == b.topic) {
            let outcome = if bulk && run.len() > 1 {
                self.publish_bulk(user_id, run).await
            } else {
                self.publish_each(user_id, run).await
            };
            round
                .delivered
                .extend(run.iter().take(outcome.delivered).map(|e| e.seq));
            if let Some(error) = outcome.error {
                round.failure = Some((run[outcome.delivered].seq, error));
                break;
            }
        }
        round
    }

    async fn publish_each(&self, user_id: &str, events: &[Pending]) -> RunOutcome {
        for (index, event) in events.iter().enumerate() {
            if let Err(error) = self.publish(user_id, event).await {
                return RunOutcome {
                    delivered: index,
                    error: Some(error),
                };
            }
        }
        RunOutcome {
            delivered: events.len(),
            error: None,
        }
    }

    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`: 204 when every entry was published;
    /// 500 lists `failedEntries`. Only the entries before the first failure count as
    /// delivered, so nothing overtakes a failed event; later ones are sent again (consumers
    /// de-duplicate by event id). A sidecar without the bulk API gets single publishes.
    async fn publish_bulk(&self, user_id: &str, events: &[Pending]) -> RunOutcome {
        let url = outbox::bulk_publish_url(&self.dapr_url, &self.pubsub, &events[0].topic, user_id);
        let entries: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "entryId": e.event_id.to_string(),
                    "event": e.event,
                    "contentType": CLOUDEVENTS_JSON,
                })
            })
            .collect();
        let body = serde_json::to_vec(&entries).unwrap_or_default();
        let (status, text) = match self.post(&url, "application/json", body).await {
            Ok(answer) => answer,
            Err(error) => {
                return RunOutcome {
                    delivered: 0,
                    error: Some(error),
                };
            }
        };
        if status.is_success() {
            return RunOutcome {
                delivered: events.len(),
                error: None,
            };
        }
        if status.as_u16() != 500 {
            // Not the bulk API's failure answer: an older sidecar, or a request-level problem
            // that single publishes report precisely.
            return self.publish_each(user_id, events).await;
        }
        let failed: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("failedEntries").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| entry.get("entryId")?.as_str().map(str::to_owned))
            .collect();
        let delivered = events
            .iter()
            .position(|e| failed.is_empty() || failed.contains(&e.event_id.to_string()))
            .unwrap_or(events.len());
        RunOutcome {
            delivered,
            error: (delivered < events.len())
                .then(|| format!("bulk publish answered {status}: {text}")),
        }
    }

    /// One structured CloudEvent to `POST /v1.0/publish/{pubsub}/{topic}`; 204 means the
    /// broker has it.
    async fn publish(&self, user_id: &str, event: &Pending) -> Result<(), String> {
        let url = outbox::publish_url(&self.dapr_url, &self.pubsub, &event.topic, user_id);
        let body = serde_json::to_vec(&event.event).map_err(|e| e.to_string())?;
        let (status, text) = self
            .post(&url, CLOUDEVENTS_JSON, body)
            .await
            .map_err(|e| format!("publishing {}: {e}", event.event_id))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("sidecar answered {status}: {text}"))
        }
    }

    /// POSTs to the sidecar with the API token and timeouts; returns the status and body.
    async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, String), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, content_type);
        if !self.api_token.is_empty() {
            request = request.header("dapr-api-token", &self.api_token);
        }
        let mut request = request
            .body(FullBody::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        request
            .extensions_mut()
            .insert(RequestOptionsExtension(self.options()));
        let response = spin_sdk::http::send(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, text))
    }

    fn options(&self) -> RequestOptions {
        let options = RequestOptions::new();
        let nanos = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        // Each limit alone bounds a hanging sidecar; both keep a slow one from stalling.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        options
    }
}
