//! Spin component: the task API under `/api/{user_id}/tasks`.
//!
//! Thin adapter: it turns the request into a [`routes::Action`], lets `todo-core` validate and
//! build SQL, runs the SQL through Spin's pg interface, and renders the outcome. Every failure
//! is rendered here as RFC 9457 problem+json; nothing reaches the SDK as an `Err`.

mod handlers;
mod request;
mod routes;

use spin_sdk::http::{IntoResponse, Request};
use todo_adapters::reply;

/// Answers one request. Instances are reused across requests, serially and concurrently, so
/// nothing here is kept in statics.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    match handlers::handle(req).await {
        Ok(response) => response,
        Err(error) => reply::problem(&error, &path),
    }
}
