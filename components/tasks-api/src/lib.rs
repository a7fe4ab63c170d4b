//! Spin component: the task API under `/api/{user_id}/tasks`.
//!
//! Thin adapter: it turns the request into a [`todo_core::tasks::routes::Action`], lets `todo-core` validate and
//! build SQL, runs the SQL through Spin's pg interface, and renders the outcome. Every failure
//! is rendered here as RFC 9457 problem+json; nothing reaches the SDK as an `Err`.

mod handlers;
mod request;

use http::{Method, StatusCode};
use spin_sdk::http::{IntoResponse, Request};
use todo_adapters::reply;
use todo_core::error::ApiError;
use todo_core::{openapi, prefer};

/// The committed `openapi.json`, which a core test keeps equal to `todo_core::openapi::document`.
const OPENAPI_JSON: &str = include_str!("../../../openapi.json");

/// Answers one request. Instances are reused across requests, serially and concurrently, so
/// nothing here is kept in statics.
#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    if path == openapi::PATH {
        return contract(req.method());
    }
    let minimal = prefer::wants_minimal(
        req.headers()
            .get_all(prefer::PREFER)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    match handlers::handle(req).await {
        Ok(response) if minimal => reply::minimal(response),
        Ok(response) => response,
        Err(error) => reply::problem(&error, &path),
    }
}

/// `GET /api/openapi.json`: the API's contract, public like any API description.
fn contract(method: &Method) -> reply::Reply {
    match *method {
        Method::GET => reply::with_body(
            StatusCode::OK,
            "application/json",
            OPENAPI_JSON.as_bytes().to_vec(),
        ),
        _ => reply::problem(
            &ApiError::MethodNotAllowed {
                method: method.to_string(),
                allow: &["GET"],
            },
            openapi::PATH,
        ),
    }
}
