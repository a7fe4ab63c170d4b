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

    /// Publishes up to `batch` pending events of `user_id`, in order.
    pub async fn flush_user(&self, db: &Db, user_id: &str, batch: i64) -> Result<Flush, ApiError> {
        let holder = Uuid::now_v7();
        if db
            .rows(outbox::claim_lease(user_id, holder, LEASE_SECONDS))
            .await?
            .is_empty()
        {
            return Ok(Flush::Busy);
        }
        let outcome = self.publish_pending(db, user_id, batch).await;
        // The lease also expires by itself; releasing early lets the next writer publish now.
        let released = db.execute(outbox::release_lease(user_id, holder)).await;
        let outcome = outcome?;
        released?;
        Ok(outcome)
    }

    async fn publish_pending(&self, db: &Db, user_id: &str, batch: i64) -> Result<Flush, ApiError> {
        let pending = db.pending(outbox::pending(user_id, batch)).await?;
        let mut delivered = Vec::new();
        let mut failure = None;
        for event in &pending {
            match self.publish(user_id, event).await {
                Ok(()) => delivered.push(event.seq),
                Err(error) => {
                    failure = Some((event.seq, error));
                    break;
                }
            }
        }
        if !delivered.is_empty() {
            db.execute(outbox::mark_delivered(user_id, &delivered))
                .await?;
        }
        match failure {
            None => Ok(Flush::Delivered(delivered.len())),
            Some((seq, error)) => {
                db.execute(outbox::mark_failed(user_id, seq, &error))
                    .await?;
                Ok(Flush::Failed {
                    delivered: delivered.len(),
                    error,
                })
            }
        }
    }

    /// One structured CloudEvent to `POST /v1.0/publish/{pubsub}/{topic}`; 204 means the
    /// broker has it.
    async fn publish(&self, user_id: &str, event: &Pending) -> Result<(), String> {
        let url = outbox::publish_url(&self.dapr_url, &self.pubsub, &event.topic, user_id);
        let body = serde_json::to_vec(&event.event).map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, CLOUDEVENTS_JSON);
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
            .map_err(|e| format!("publishing {}: {e:?}", event.event_id))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(format!("sidecar answered {status}: {body}"))
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
