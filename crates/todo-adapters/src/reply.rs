//! Building responses: JSON bodies and RFC 9457 problems.
//!
//! Every response carries an exact `Content-Length`. Without one, Spin 4.0.2 answers with
//! `Transfer-Encoding: chunked` and writes the closing `0\r\n\r\n` as a segment of its own;
//! since Spin sets no `TCP_NODELAY`, Nagle's algorithm holds that segment until the client's
//! delayed ACK, about 40 ms later (BENCHMARKS.md, "The 40 ms stall"). A body the guest has not
//! handed over by the time Spin writes the head can still be held that way; only a response
//! without a body is safe from it, which is why the answers the sidecar waits for most often
//! are empty (`intake` acknowledges with 204).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use spin_sdk::http::FullBody;
use todo_core::error::{ApiError, PROBLEM_JSON};
use todo_core::prefer;

pub type Reply = Response<FullBody<Bytes>>;

/// What every component's handler returns: `outcome`, or the problem it failed with.
pub fn answer(outcome: Result<Reply, ApiError>, path: &str) -> Reply {
    outcome.unwrap_or_else(|error| problem(&error, path))
}

/// A response with `body`, its length, and `content_type` when there is a body.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let length = body.len();
    let mut response = Response::new(FullBody::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if length > 0 {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_body(status, "application/json", bytes),
        Err(e) => problem(
            &ApiError::internal(format!("serializing a response: {e}")),
            "",
        ),
    }
}

/// A response without a body (`Content-Length: 0`, which 204 and 304 must not carry).
pub fn empty(status: StatusCode) -> Reply {
    let mut response = Response::new(FullBody::new(Bytes::new()));
    *response.status_mut() = status;
    if !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    }
    response
}

/// Renders an error; internal causes go to the log, never to the client.
pub fn problem(error: &ApiError, path: &str) -> Reply {
    if matches!(
        error,
        ApiError::Internal { .. } | ApiError::Unavailable { .. }
    ) {
        eprintln!("{path}: {error}");
    }
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = with_body(status, PROBLEM_JSON, error.to_body(Some(path)));
    let headers = response.headers_mut();
    for (name, value) in error.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `reply` without its body, for a client that sent `Prefer: return=minimal`
/// ([`prefer`]): a 200 or 201 keeps its status and headers but the content ones, and
/// says `Preference-Applied`. Other answers (problems, 204) are returned as they are.
pub fn minimal(reply: Reply) -> Reply {
    if !matches!(reply.status(), StatusCode::OK | StatusCode::CREATED) {
        return reply;
    }
    let (mut parts, _) = reply.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    parts.headers.insert(
        prefer::PREFERENCE_APPLIED,
        HeaderValue::from_static(prefer::RETURN_MINIMAL),
    );
    Response::from_parts(parts, FullBody::new(Bytes::new()))
}
