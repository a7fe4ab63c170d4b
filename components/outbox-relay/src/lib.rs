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
use todo_adapters::binding;
use todo_adapters::db::Db;
use todo_adapters::publish::{Flush, Publisher};
use todo_adapters::reply::{self, Reply};
use todo_adapters::vars;
use todo_core::error::ApiError;
use todo_core::{intake, outbox};

/// Users served per call and events per user per call: bounded so one call stays short; the
/// next tick continues.
const USERS_PER_RUN: i64 = 200;
const EVENTS_PER_USER: i64 = 100;
/// How long processed-event markers are kept for de-duplication.
const PROCESSED_RETENTION_DAYS: i32 = 30;

#[derive(Debug, Default, Serialize)]
struct Summary {
    users: usize,
    delivered: usize,
    failed_users: usize,
    busy_users: usize,
    pruned_outbox: u64,
    pruned_processed: u64,
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    match relay(req).await {
        Ok(response) => response,
        Err(error) => reply::problem(&error, &path),
    }
}

async fn relay(req: Request) -> Result<Reply, ApiError> {
    if let Some(discovery) = binding::accept(&req).await? {
        return Ok(discovery);
    }
    let db = Db::open(&vars::get("db_url").await?).await?;
    let publisher = Publisher::load().await?;
    let retention_hours: i32 = vars::number("outbox_retention_hours").await?;

    let mut summary = Summary::default();
    let users = db.rows(outbox::due_users(USERS_PER_RUN)).await?;
    for row in &users {
        let Some(spin_sdk::pg::DbValue::Str(user)) = row.first() else {
            continue;
        };
        summary.users += 1;
        match publisher
            .flush_user_bulk(&db, user, EVENTS_PER_USER)
            .await?
        {
            Flush::Delivered(n) => summary.delivered += n,
            Flush::Busy => summary.busy_users += 1,
            Flush::Failed { delivered, error } => {
                summary.delivered += delivered;
                summary.failed_users += 1;
                eprintln!("relay: events of {user} wait for the next attempt: {error}");
            }
        }
    }
    summary.pruned_outbox = db.execute(outbox::prune(retention_hours)).await?;
    summary.pruned_processed = db
        .execute(intake::prune_processed(PROCESSED_RETENTION_DAYS))
        .await?;
    Ok(reply::json(StatusCode::OK, &summary))
}
