//! Spin component: the app's Dapr pub/sub subscriptions.
//!
//! The sidecar calls `GET /dapr/subscribe` when it starts and subscribes the app to what the
//! answer lists (Dapr's pub/sub API reference, "Provide a route for Dapr to discover topic
//! subscriptions"; the body is built by `todo_core::subscriptions`). No database: the answer
//! depends on the settings only.

use http::StatusCode;
use spin_sdk::http::{IntoResponse, Request};
use todo_adapters::reply::{self, Reply};
use todo_adapters::settings;
use todo_adapters::sidecar;
use todo_core::error::ApiError;
use todo_core::subscriptions;

const PATH: &str = "/dapr/subscribe";

/// Answers `GET /dapr/subscribe` to the sidecar only (`todo_adapters::sidecar`: on this host,
/// with the app token).
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    reply::answer(list_subscriptions(&req).await, &path)
}

async fn list_subscriptions(req: &Request) -> Result<Reply, ApiError> {
    sidecar::admit(req).await?;
    if req.uri().path() != PATH {
        return Err(ApiError::not_found("no such resource"));
    }
    if req.method() != http::Method::GET {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: &["GET"],
        });
    }
    let config = settings::Subscriptions::load().await?.config();
    Ok(reply::json(StatusCode::OK, &subscriptions::body(&config)))
}
