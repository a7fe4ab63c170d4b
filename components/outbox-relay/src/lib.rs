//! Spin component: the outbox relay at `POST /outbox-relay`.
//!
//! A Dapr `bindings.cron` input binding named `outbox-relay` POSTs here on a schedule (and
//! sends `OPTIONS` once at start-up to learn whether the app takes the binding). Each call
//! publishes the events that requests could not publish themselves, user by user, oldest
//! first, under per-user leases so several replicas can relay at once without reordering,
//! then prunes what was delivered long enough ago.

use http::StatusCode;
use serde::Serialize;
use spin_sdk::http::{IntoResponse, Request};
use std::time::Duration;
use todo_adapters::binding;
use todo_adapters::db::Db;
use todo_adapters::publish::Publisher;
use todo_adapters::reply::{self, Reply};
use todo_adapters::settings;
use todo_core::error::ApiError;
use todo_core::sql::SqlValue;
use todo_core::tasks::idempotency;
use todo_core::{intake, outbox};

/// Users served per call and events per user per round: bounded so one call stays short; the
/// next tick continues.
const USERS_PER_RUN: i64 = 200;
const EVENTS_PER_USER: i64 = 100;
/// How long one call keeps publishing round after round for a user.
const BUDGET: Duration = Duration::from_secs(20);
/// How long processed-event markers are kept for de-duplication.
const PROCESSED_RETENTION_DAYS: i32 = 30;

/// What one call did; the response body.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Users with due events.
    users: usize,
    /// Events the sidecar accepted.
    delivered: usize,
    /// Users whose run stopped at a failure (backed off).
    failed_users: usize,
    /// Users another publisher was serving.
    busy_users: usize,
    /// Events this call parked as dead.
    parked: usize,
    /// Events parked as dead in all, waiting for an operator (README, "Delivery guarantees").
    dead: i64,
    pruned_outbox: u64,
    pruned_processed: u64,
    /// Idempotency keys past their lifetime.
    pruned_idempotency_keys: u64,
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    reply::answer(relay(req).await, &path)
}

async fn relay(req: Request) -> Result<Reply, ApiError> {
    if let Some(discovery) = binding::accept(&req).await? {
        return Ok(discovery);
    }
    let database = settings::Database::load().await?;
    let db = Db::open(&database.url).await?;
    let publisher = Publisher::for_relay(BUDGET).await?;
    let retention = settings::Retention::load().await?;

    let mut summary = Summary::default();
    let users: Vec<String> = db
        .rows(outbox::due_users(USERS_PER_RUN))
        .await?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(SqlValue::Text(user)) => Some(user),
            _ => None,
        })
        .collect();
    summary.users = users.len();
    for (user, flushed) in publisher
        .flush_users(&database.url, users, EVENTS_PER_USER)
        .await
    {
        let flush = flushed?;
        summary.delivered += flush.delivered;
        summary.parked += flush.parked;
        if flush.busy {
            summary.busy_users += 1;
        }
        if let Some(error) = flush.error {
            summary.failed_users += 1;
            eprintln!("relay: events of {user} wait for the next attempt: {error}");
        }
    }
    summary.dead = db.count(outbox::dead_count()).await?;
    if summary.dead > 0 {
        eprintln!(
            "relay: {} events are parked as dead (README, \"Delivery guarantees\")",
            summary.dead
        );
    }
    summary.pruned_outbox = db.execute(outbox::prune(retention.outbox_hours)).await?;
    summary.pruned_processed = db
        .execute(intake::prune_processed(PROCESSED_RETENTION_DAYS))
        .await?;
    summary.pruned_idempotency_keys = db.execute(idempotency::prune()).await?;
    Ok(reply::json(StatusCode::OK, &summary))
}
