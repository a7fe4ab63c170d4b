//! Spin component: the reminder sweep at `POST /reminder-sweep`.
//!
//! A Dapr `bindings.cron` input binding named `reminder-sweep` (k8s/base/dapr) POSTs here every
//! 30 s on every replica, with an empty body (Dapr may also send `OPTIONS` once at start-up to
//! learn whether the app takes the binding). Each call fires every reminder whose time has come
//! and that has not fired: it claims each one with a single conditional statement that also
//! stores its `reminder.triggered` event in the outbox, so a reminder fires exactly once however
//! many replicas sweep at the same time, overdue ones fire on the first sweep after downtime, and
//! one that was cancelled in the meantime never fires. Why this is a sweep rather than one Dapr
//! job per reminder, and why the claim is exactly once, is documented in `todo_core::reminders`.
//!
//! The events are then published to the sidecar before the answer, user by user (the sweep is
//! not user-facing, so it may take that time); whatever is left goes out with the outbox relay.

use http::StatusCode;
use serde::Serialize;
use spin_sdk::http::{IntoResponse, Request};
use std::collections::BTreeSet;
use std::time::Duration;
use todo_adapters::binding;
use todo_adapters::db::Db;
use todo_adapters::headers::header;
use todo_adapters::publish::Publisher;
use todo_adapters::reply::{self, Reply};
use todo_adapters::settings;
use todo_core::error::ApiError;
use todo_core::reminders;
use todo_core::tasks::time;

/// Reminders read per round, and rounds per call: bounded so one call stays short; the next
/// tick continues where this one stopped.
const BATCH: i64 = 200;
const MAX_ROUNDS: usize = 10;
/// Events published per user per round, and how long one call keeps publishing.
const EVENTS_PER_USER: i64 = 100;
const BUDGET: Duration = Duration::from_secs(20);

/// What one sweep did; the response body.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Due reminders read.
    due: usize,
    /// Reminders this call fired.
    fired: usize,
    /// Due reminders another sweep fired first, or that changed since they were read.
    skipped: usize,
    /// Users whose reminders this call fired.
    users: usize,
    /// Events delivered to the sidecar.
    published: usize,
}

/// Answers one tick of the cron binding. Instances are reused across requests, serially and
/// concurrently, so nothing here is kept in statics.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    reply::answer(sweep(req).await, &path)
}

async fn sweep(req: Request) -> Result<Reply, ApiError> {
    if let Some(discovery) = binding::accept(&req).await? {
        return Ok(discovery);
    }
    let events = settings::ReminderEvents::load()
        .await?
        .context(header(req.headers(), "traceparent").map(str::to_owned));
    let database = settings::Database::load().await?;
    let db = Db::open(&database.url).await?;

    let mut summary = Summary::default();
    let mut users = BTreeSet::new();
    for _ in 0..MAX_ROUNDS {
        let due = db.due_reminders(reminders::due(BATCH)).await?;
        summary.due += due.len();
        for reminder in &due {
            let event = events.reminder_triggered(reminder, time::now());
            if db.count(reminders::claim(reminder, &event)).await? == 1 {
                summary.fired += 1;
                users.insert(reminder.user_id.clone());
            } else {
                summary.skipped += 1;
            }
        }
        if i64::try_from(due.len()).unwrap_or(i64::MAX) < BATCH {
            break;
        }
    }
    summary.users = users.len();
    drop(db);
    summary.published = publish(&database.url, users).await;
    Ok(reply::json(StatusCode::OK, &summary))
}

/// Publishes the pending events of `users`, returning how many were delivered. A failure is
/// logged, never answered: the events are in the outbox and the relay delivers them.
async fn publish(db_url: &str, users: BTreeSet<String>) -> usize {
    if users.is_empty() {
        return 0;
    }
    let publisher = match Publisher::for_relay(BUDGET).await {
        Ok(publisher) => publisher,
        Err(error) => {
            eprintln!("reminder-sweep: events left to the relay: {error}");
            return 0;
        }
    };
    let mut published = 0;
    for (user, flushed) in publisher
        .flush_users(db_url, users.into_iter().collect(), EVENTS_PER_USER)
        .await
    {
        match flushed {
            Ok(flush) => {
                published += flush.delivered;
                if let Some(error) = flush.error {
                    eprintln!("reminder-sweep: events of {user} left to the relay: {error}");
                }
            }
            Err(error) => eprintln!("reminder-sweep: events of {user} left to the relay: {error}"),
        }
    }
    published
}
