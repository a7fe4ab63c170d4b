//! Publishing outbox events to the Dapr sidecar (Dapr's pub/sub API reference, "Publish a
//! message"), by the rules of `todo_core::outbox`.
//!
//! A publisher sends one user's pending events in order under that user's lease, one publish
//! answered before the next, and marks what the sidecar accepted. A failure stops the user's
//! run, so no event overtakes an earlier one, and backs the head off; an event the sidecar keeps
//! refusing while it accepts others is parked as dead. The outbox keeps the rest for the next
//! attempt.

use crate::db::Db;
use crate::settings::{PublishPath, Publishing};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http::{Method, Request, header};
use http_body_util::BodyExt;
use spin_sdk::http::FullBody;
use spin_sdk::wasip3::http::types::RequestOptions;
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;
use std::time::{Duration, Instant};
use todo_core::error::ApiError;
use todo_core::outbox::{
    self, CLOUDEVENTS_JSON, Claimed, OutboxRow, Pending, RoundEnd, WriteClaim,
};
use todo_core::sidecar::TOKEN_HEADER;
use uuid::Uuid;

/// Events a request publishes per round before it answers.
const INLINE_BATCH: i64 = 20;
/// How long a request keeps publishing while its user writes on (others' writes flag the
/// lease it holds): bounded, so one busy user cannot hold a client for long; what is left then
/// goes out with the next write or the relay.
const INLINE_BUDGET: Duration = Duration::from_secs(1);
/// After the sidecar could not be reached (refused, timed out), requests on this instance
/// leave publishing to the relay for this long instead of each waiting out the timeout.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(2);
/// Users whose events the relay and the sweep publish at the same time, each with its own
/// connection; a user's own events still go one at a time.
const USERS_AT_ONCE: usize = 8;

pub struct Publisher {
    dapr_url: String,
    api_token: String,
    pubsub: String,
    /// The limit of one publish, from connect to the last byte of the answer.
    timeout: Duration,
    /// Failed attempts after which an event the sidecar refuses is parked as dead.
    max_attempts: i32,
    /// How long one flush may go on, round after round.
    budget: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dapr_url", &self.dapr_url)
            .field("pubsub", &self.pubsub)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one flush achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Events the sidecar accepted.
    pub delivered: usize,
    /// Events parked as dead after their last failed attempt.
    pub parked: usize,
    /// Another publisher holds the user's lease; it will deliver.
    pub busy: bool,
    /// The failure that stopped the user's run; the rest waits for backoff.
    pub error: Option<String>,
    /// That failure was the sidecar not answering, not a refusal of one event.
    pub unreachable: bool,
}

/// Publishes `user_id`'s pending events before the request answers, so that a write's events
/// are on their way when its client hears of it. Never after the response, not even the end
/// of a slow publish: Spin 4.0.2 retires an instance (its 128th request, or 1 s idle) without
/// waiting for work the guest spawned after responding, and a publish cut off that way holds
/// the user's lease for its 30 s, stranding the user's later events until it expires
/// (BENCHMARKS.md, "Events that keep up"; on real Spin a publish a little slower than usual
/// did exactly that, `events::writes_across_an_instance_retirement...`). A healthy sidecar
/// takes a few milliseconds; a hung one costs one request its `publish_timeout_ms`, after which
/// the instance leaves publishing to the relay for [`UNREACHABLE_PAUSE`]. A failure never
/// reaches the client: the events stay in the outbox for the relay.
///
/// `written` is what the write's own statement claimed, if it was built with
/// [`claim_for_write`]: with the lease in hand and nothing older pending, the write's events go
/// out without a claim statement; with older events the round reads the queue under the lease
/// it holds; a busy lease was flagged by the write, and its holder publishes.
pub async fn before_response(db: Db, user_id: String, written: Option<Written>) {
    if paused() {
        // A claim is only taken while publishing runs, but the pause may have begun since.
        if let Some(written) = written {
            release(&db, &user_id, &written).await;
        }
        return;
    }
    let flushed = async {
        let publisher = match Publisher::for_requests().await {
            Ok(publisher) => publisher,
            Err(error) => {
                if let Some(written) = &written {
                    release(&db, &user_id, written).await;
                }
                return Err(error);
            }
        };
        let start = match written {
            None => Start::Claim,
            Some(written) if !written.claimed.ours => return Ok(Flush::busy()),
            Some(written) => match written.claimed.own_events(&written.events) {
                Some(pending) => Start::Own(written.claim.holder, pending),
                None => Start::Holding(written.claim.holder),
            },
        };
        publisher
            .flush_user_from(&db, &user_id, INLINE_BATCH, start)
            .await
    };
    match flushed.await {
        Ok(Flush {
            error: Some(error),
            unreachable,
            ..
        }) => {
            if unreachable {
                pause();
            }
            eprintln!("publishing events of {user_id} left to the relay: {error}");
        }
        Ok(_) => {}
        Err(error) => eprintln!("publishing events of {user_id} left to the relay: {error}"),
    }
}

/// A write's claim of its user's lease for the request to publish with: `None` while this
/// instance leaves publishing to the relay, so that no lease is held that nobody uses.
pub fn claim_for_write(user_id: &str) -> Option<WriteClaim> {
    (!paused()).then(|| WriteClaim::new(user_id))
}

/// What a write's statement claimed, with the events it stored.
#[derive(Debug)]
pub struct Written {
    pub claim: WriteClaim,
    pub claimed: Claimed,
    pub events: Vec<OutboxRow>,
}

impl Written {
    /// The write's `claim` with what its statement found (`outbox::Claimed::decode`); `None`
    /// when it was built without one or stored nothing, and the publisher claims as usual.
    pub fn of(
        claim: Option<WriteClaim>,
        claimed: Option<Claimed>,
        events: &[OutboxRow],
    ) -> Option<Self> {
        let (claim, claimed) = claim.zip(claimed)?;
        Some(Self {
            claim,
            claimed,
            events: events.to_vec(),
        })
    }
}

/// Gives back a lease a write claimed but nobody will publish under; best effort: it expires
/// anyway.
async fn release(db: &Db, user_id: &str, written: &Written) {
    if written.claimed.ours {
        let _ = db
            .flag(outbox::finish_round(user_id, written.claim.holder, &[]))
            .await;
    }
}

/// How a flush begins.
enum Start {
    /// Claim the lease under a new holder.
    Claim,
    /// The lease is held under this holder already (a write claimed it): read the queue.
    Holding(Uuid),
    /// The lease is held and these events, the head of the queue, are the first round's.
    Own(Uuid, Vec<Pending>),
}

/// Until when this instance leaves publishing to the relay.
static PAUSED_UNTIL: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

fn paused() -> bool {
    PAUSED_UNTIL
        .lock()
        .map(|until| until.is_some_and(|t| Instant::now() < t))
        .unwrap_or(false)
}

fn pause() {
    if let Ok(mut until) = PAUSED_UNTIL.lock() {
        *until = Some(Instant::now() + UNREACHABLE_PAUSE);
    }
}

impl Flush {
    /// Another publisher holds the lease and will deliver.
    fn busy() -> Self {
        Self {
            busy: true,
            ..Self::default()
        }
    }
}

/// What one round sent: the sequence numbers the sidecar accepted, and how it ended.
#[derive(Default)]
struct Round {
    delivered: Vec<i64>,
    parked: usize,
    end: RoundEnd,
    error: Option<String>,
    unreachable: bool,
}

/// Why one publish failed.
struct Failure {
    message: String,
    /// No answer from the sidecar (connect, timeout), as opposed to an answer refusing it.
    unreachable: bool,
}

impl Publisher {
    /// A publisher for the request path: `publish_timeout_ms` per publish (short: a request
    /// leaves whatever the sidecar does not take quickly to the relay).
    pub async fn for_requests() -> Result<Self, ApiError> {
        Self::load(PublishPath::Requests, INLINE_BUDGET).await
    }

    /// A publisher for the relay and the reminder sweep: `relay_publish_timeout_ms` per
    /// publish, and `budget` for the whole call.
    pub async fn for_relay(budget: Duration) -> Result<Self, ApiError> {
        Self::load(PublishPath::Relay, budget).await
    }

    async fn load(path: PublishPath, budget: Duration) -> Result<Self, ApiError> {
        let Publishing {
            sidecar,
            timeout,
            max_attempts,
        } = Publishing::load(path).await?;
        Ok(Self {
            dapr_url: sidecar.dapr_url,
            api_token: sidecar.api_token,
            pubsub: sidecar.pubsub,
            timeout,
            max_attempts,
            budget,
        })
    }

    /// Publishes `user_id`'s pending events under the user's lease, up to `batch` per round,
    /// round after round while more may be due (`outbox::another_round`) and the budget lasts.
    /// A publisher that finds the lease busy returns at once (`busy`): the holder goes round
    /// again for it. A round is two statements (claim-and-read, then mark-and-release) plus one
    /// for each failure; a write's first round can skip the first (see [`before_response`]).
    pub async fn flush_user(&self, db: &Db, user_id: &str, batch: i64) -> Result<Flush, ApiError> {
        self.flush_user_from(db, user_id, batch, Start::Claim).await
    }

    async fn flush_user_from(
        &self,
        db: &Db,
        user_id: &str,
        batch: i64,
        mut start: Start,
    ) -> Result<Flush, ApiError> {
        let started = Instant::now();
        let mut flush = Flush::default();
        let lease_seconds = outbox::lease_seconds();
        loop {
            let (holder, own) = match std::mem::replace(&mut start, Start::Claim) {
                Start::Claim => (Uuid::now_v7(), None),
                Start::Holding(holder) => (holder, None),
                Start::Own(holder, pending) => (holder, Some(pending)),
            };
            let pending = match own {
                Some(pending) => pending,
                None => {
                    let claim = outbox::claim_pending(user_id, holder, lease_seconds, batch);
                    let Some(pending) = db.claim_pending(claim).await? else {
                        flush.busy = outbox::left_to_other_holder(flush.delivered, flush.parked);
                        return Ok(flush);
                    };
                    pending
                }
            };
            let mut round = self.publish_run(db, user_id, &pending).await?;
            round.end.full = outbox::read_full_batch(pending.len(), batch);
            round.end.recheck = db
                .flag(outbox::finish_round(user_id, holder, &round.delivered))
                .await?
                .unwrap_or(false);
            flush.delivered += round.delivered.len();
            flush.parked += round.parked;
            if round.error.is_some() {
                flush.error = round.error;
                flush.unreachable = round.unreachable;
            }
            if !outbox::another_round(&round.end, started.elapsed() < self.budget) {
                return Ok(flush);
            }
        }
    }

    /// Flushes each of `users` (the relay's and the sweep's way): several users at once, each
    /// on its own connection to `db_url`, each user's events in order. Returns every user's
    /// outcome.
    pub async fn flush_users(
        &self,
        db_url: &str,
        users: Vec<String>,
        batch: i64,
    ) -> Vec<(String, Result<Flush, ApiError>)> {
        stream::iter(users)
            .map(|user| async move {
                let flushed = match Db::open(db_url).await {
                    Ok(db) => self.flush_user(&db, &user, batch).await,
                    Err(error) => Err(error),
                };
                (user, flushed)
            })
            .buffer_unordered(USERS_AT_ONCE)
            .collect()
            .await
    }

    /// Sends `pending` in order, one publish at a time, and stops at the first failure, so
    /// nothing overtakes it. A failed event is backed off, or parked as dead, in which case
    /// the run goes on with the next event. No publish starts that could outlast the lease.
    async fn publish_run(
        &self,
        db: &Db,
        user_id: &str,
        pending: &[Pending],
    ) -> Result<Round, ApiError> {
        let claimed = Instant::now();
        let mut round = Round::default();
        let timeout = outbox::publish_limit(self.timeout);
        for (i, event) in pending.iter().enumerate() {
            if !outbox::may_publish(i == 0, claimed.elapsed(), timeout, outbox::LEASE) {
                round.end.cut_short = true;
                break;
            }
            let Err(error) = self.publish(user_id, event).await else {
                round.delivered.push(event.seq);
                continue;
            };
            let parked = db
                .flag(outbox::mark_failed(
                    user_id,
                    event.seq,
                    &error.message,
                    self.max_attempts,
                ))
                .await?
                .unwrap_or(false);
            if parked {
                eprintln!(
                    "event {} of {user_id} parked as dead after {} attempts: {}",
                    event.event_id, self.max_attempts, error.message
                );
                round.parked += 1;
                continue;
            }
            round.end.failed = true;
            round.error = Some(error.message);
            round.unreachable = error.unreachable;
            break;
        }
        Ok(round)
    }

    /// One structured CloudEvent to `POST /v1.0/publish/{pubsub}/{topic}`; 204 means the
    /// broker has it.
    async fn publish(&self, user_id: &str, event: &Pending) -> Result<(), Failure> {
        let url = outbox::publish_url(&self.dapr_url, &self.pubsub, &event.topic, user_id);
        let body = serde_json::to_vec(&event.event).map_err(|e| Failure {
            message: e.to_string(),
            unreachable: false,
        })?;
        let (status, text) =
            self.post(&url, CLOUDEVENTS_JSON, body)
                .await
                .map_err(|e| Failure {
                    message: format!("publishing {}: {e}", event.event_id),
                    unreachable: true,
                })?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure {
                message: format!("sidecar answered {status}: {text}"),
                unreachable: false,
            })
        }
    }

    /// POSTs to the sidecar with the API token and timeouts; returns the status and body.
    async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, String), String> {
        // An exact length spares the sidecar a chunked body, whose terminator Spin would send
        // as a segment of its own (see `crate::reply`).
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len());
        if !self.api_token.is_empty() {
            request = request.header(TOKEN_HEADER, &self.api_token);
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
        // Each limit alone bounds a hanging sidecar; together they keep a slow one from
        // stalling a round past its lease.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        options
    }
}
