//! Calls from a Dapr input binding (`bindings.cron` here): the sidecar sends `OPTIONS /{name}`
//! once at start-up to learn whether the app takes the binding (any 2xx means yes), then
//! `POST /{name}` on every tick, with the app token when one is configured (DESIGN.md section 3).

use http::{Method, StatusCode};
use spin_sdk::http::Request;
use todo_core::auth::check_app_token;
use todo_core::error::ApiError;

use crate::reply::{self, Reply};
use crate::vars;

/// Checks the app token and the method. `Ok(Some(reply))` answers the start-up discovery;
/// `Ok(None)` is a tick the component should run.
pub async fn accept(req: &Request) -> Result<Option<Reply>, ApiError> {
    let token = req
        .headers()
        .get("dapr-api-token")
        .and_then(|v| v.to_str().ok());
    check_app_token(&vars::get("app_api_token").await?, token)?;
    match *req.method() {
        Method::OPTIONS => Ok(Some(reply::empty(StatusCode::OK))),
        Method::POST => Ok(None),
        _ => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: &["POST", "OPTIONS"],
        }),
    }
}
