//! Building responses: JSON bodies and RFC 9457 problems.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use spin_sdk::http::FullBody;
use todo_core::error::{ApiError, PROBLEM_JSON};

pub type Reply = Response<FullBody<Bytes>>;

pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(FullBody::new(Bytes::from(bytes)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => problem(
            &ApiError::internal(format!("serializing a response: {e}")),
            "",
        ),
    }
}

pub fn empty(status: StatusCode) -> Reply {
    let mut response = Response::new(FullBody::new(Bytes::new()));
    *response.status_mut() = status;
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
    let mut response = Response::new(FullBody::new(Bytes::from(error.to_body(Some(path)))));
    *response.status_mut() =
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    for (name, value) in error.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}
