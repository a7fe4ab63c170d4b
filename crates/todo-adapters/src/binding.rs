//! Calls from a Dapr input binding (`bindings.cron` here): the sidecar sends `OPTIONS /{name}` once
//! at start-up to learn whether the app takes the binding (any 2xx means yes), then `POST /{name}`
//! on every tick, with the app token (Dapr's cron binding reference); `crate::sidecar` admits only
//! such calls.

use http::{Method, StatusCode};
use spin_sdk::http::Request;
use todo_core::error::ApiError;

use crate::reply::{self, Reply};
use crate::sidecar;

/// Admits the sidecar only (`crate::sidecar`) and checks the method. `Ok(Some(reply))` answers the
/// start-up discovery; `Ok(None)` is a tick the component should run.
pub async fn accept(req: &Request) -> Result<Option<Reply>, ApiError> {
    sidecar::admit(req).await?;
    match *req.method() {
        Method::OPTIONS => Ok(Some(reply::empty(StatusCode::OK))),
        Method::POST => Ok(None),
        _ => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: &["POST", "OPTIONS"],
        }),
    }
}
