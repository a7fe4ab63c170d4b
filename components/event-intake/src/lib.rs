//! Spin component: the event intake, where the Dapr sidecar delivers what the app subscribed
//! to (`todo_core::subscriptions`): `POST /api/events/tasks` and `POST /api/events/reminders`.
//!
//! Thin adapter: it reads the delivery, lets `todo_core::intake` validate it and decide what it
//! causes, runs the resulting statement, and answers Dapr with `SUCCESS` (204, no body), `RETRY` or
//! `DROP` (200 with a status body), per Dapr's pub/sub API reference. Requests that are not
//! deliveries (wrong token, path or method) get an RFC 9457 problem instead.

mod handlers;

use spin_sdk::http::{IntoResponse, Request};
use todo_adapters::reply;

/// Answers one delivery. Instances are reused across requests, serially and concurrently, so
/// nothing here is kept in statics.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    reply::answer(handlers::handle(req).await, &path)
}
