//! Reading what a request carries: a bounded JSON body.

use bytes::Bytes;
use http::{HeaderMap, header as h};
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::Request;
use todo_adapters::headers::header;
use todo_core::error::ApiError;
use todo_core::tasks::input::MAX_BODY_BYTES;

/// The body, at most 64 KiB. Content types other than JSON get 415 when a body is present.
/// An empty body is returned as empty; callers decide whether they need one.
pub async fn json_body(req: Request) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    let declared =
        header(&parts.headers, h::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::bad_request(format!("the request body could not be read: {e}"))
            }
        })?
        .to_bytes();
    if !bytes.is_empty() {
        check_json_content_type(&parts.headers)?;
    }
    Ok(bytes)
}

/// `application/json` or any `application/*+json`, with optional parameters.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = header(headers, h::CONTENT_TYPE.as_str()) else {
        return Err(ApiError::UnsupportedMediaType {
            detail: "send the body with Content-Type: application/json".to_owned(),
        });
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            detail: format!("Content-Type '{essence}' is not supported; use application/json"),
        })
    }
}
