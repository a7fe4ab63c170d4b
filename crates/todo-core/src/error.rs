//! The one error type of the API and its RFC 9457 `application/problem+json` rendering.
//!
//! Every variant is an HTTP outcome. Components map their failures into it and render it in one
//! place, so a client mistake never surfaces as a 500 and internal details are never echoed.

use crate::validation::FieldError;
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON it claims to be, or a query parameter is malformed.
    #[error("bad request: {detail}")]
    BadRequest { detail: String },
    #[error("unauthorized: {detail}")]
    Unauthorized { detail: String },
    #[error("forbidden: {detail}")]
    Forbidden { detail: String },
    /// Unknown route, unknown id, or another user's task: indistinguishable on purpose.
    #[error("not found: {detail}")]
    NotFound { detail: String },
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        method: String,
        allow: &'static [&'static str],
    },
    /// The task changed concurrently more often than a request retries.
    #[error("conflict: {detail}")]
    Conflict { detail: String },
    /// `If-Match` named a version the task no longer has.
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type: {detail}")]
    UnsupportedMediaType { detail: String },
    /// Well-formed JSON whose fields break the rules.
    #[error("invalid fields")]
    Unprocessable { errors: Vec<FieldError> },
    /// A dependency (PostgreSQL) is unreachable: retrying later may succeed.
    #[error("service unavailable: {detail}")]
    Unavailable { detail: String },
    /// The bearer token cannot be verified right now (the identity provider's JWKS cannot be
    /// fetched): retrying after `retry_after` seconds may succeed. The detail is sent.
    #[error("token verification unavailable: {detail}")]
    VerificationUnavailable { detail: String, retry_after: u32 },
    /// A bug or an unexpected state. The detail is logged, never sent.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension member listing each invalid field (422 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::Unauthorized {
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound {
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            errors: vec![FieldError::new(field, message)],
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal {
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict { .. } => 409,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType { .. } => 415,
            Self::Unprocessable { .. } => 422,
            Self::Unavailable { .. } | Self::VerificationUnavailable { .. } => 503,
            Self::Internal { .. } => 500,
        }
    }

    /// Extra response headers the status calls for (RFC 9110: `Allow` on 405,
    /// `WWW-Authenticate` on 401, `Retry-After` on 503).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::MethodNotAllowed { allow, .. } => vec![("allow", allow.join(", "))],
            Self::Unauthorized { .. } => vec![("www-authenticate", "Bearer".to_owned())],
            Self::Unavailable { .. } => vec![("retry-after", "1".to_owned())],
            Self::VerificationUnavailable { retry_after, .. } => {
                vec![("retry-after", retry_after.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// The document sent to the client. `instance` is the request path.
    pub fn to_problem(&self, instance: Option<&str>) -> Problem {
        let (slug, title, detail, errors) = match self {
            Self::BadRequest { detail } => ("bad-request", "Bad Request", detail.clone(), vec![]),
            Self::Unauthorized { detail } => {
                ("unauthorized", "Unauthorized", detail.clone(), vec![])
            }
            Self::Forbidden { detail } => ("forbidden", "Forbidden", detail.clone(), vec![]),
            Self::NotFound { detail } => ("not-found", "Not Found", detail.clone(), vec![]),
            Self::MethodNotAllowed { method, allow } => (
                "method-not-allowed",
                "Method Not Allowed",
                format!("{method} is not allowed here; use {}", allow.join(", ")),
                vec![],
            ),
            Self::Conflict { detail } => ("conflict", "Conflict", detail.clone(), vec![]),
            Self::PreconditionFailed => (
                "precondition-failed",
                "Precondition Failed",
                "the task has changed since the version named in If-Match; read it again"
                    .to_owned(),
                vec![],
            ),
            Self::PayloadTooLarge { limit } => (
                "payload-too-large",
                "Content Too Large",
                format!("the request body exceeds {limit} bytes"),
                vec![],
            ),
            Self::UnsupportedMediaType { detail } => (
                "unsupported-media-type",
                "Unsupported Media Type",
                detail.clone(),
                vec![],
            ),
            Self::Unprocessable { errors } => (
                "validation",
                "Unprocessable Content",
                summarize(errors),
                errors.clone(),
            ),
            Self::Unavailable { .. } => (
                "unavailable",
                "Service Unavailable",
                "the database is unavailable; nothing was changed, retry later".to_owned(),
                vec![],
            ),
            Self::VerificationUnavailable { detail, .. } => (
                "verification-unavailable",
                "Service Unavailable",
                detail.clone(),
                vec![],
            ),
            Self::Internal { .. } => (
                "internal",
                "Internal Server Error",
                "an unexpected error occurred".to_owned(),
                vec![],
            ),
        };
        Problem {
            type_uri: format!("urn:todo-spin:problem:{slug}"),
            title,
            status: self.status(),
            detail,
            instance: instance.map(str::to_owned),
            errors,
        }
    }

    /// The serialized problem document.
    pub fn to_body(&self, instance: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&self.to_problem(instance)).unwrap_or_else(|_| b"{}".to_vec())
    }
}

fn summarize(errors: &[FieldError]) -> String {
    match errors {
        [only] => format!("{}: {}", only.field, only.message),
        _ => format!("{} fields are invalid", errors.len()),
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        Self::Unprocessable { errors }
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::Unprocessable {
            errors: vec![error],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_are_never_rendered() {
        let problem = ApiError::internal("password=hunter2").to_problem(None);
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    fn validation_problem_lists_every_field() {
        let error = ApiError::from(vec![
            FieldError::new("title", "must not be blank"),
            FieldError::new("priority", "must be one of low, medium, high"),
        ]);
        let json: serde_json::Value =
            serde_json::from_slice(&error.to_body(Some("/api/u/tasks"))).expect("json");
        assert_eq!(json["status"], 422);
        assert_eq!(json["instance"], "/api/u/tasks");
        assert_eq!(json["errors"][1]["field"], "priority");
        assert_eq!(json["detail"], "2 fields are invalid");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let error = ApiError::MethodNotAllowed {
            method: "DELETE".into(),
            allow: &["GET", "POST"],
        };
        assert_eq!(error.status(), 405);
        assert_eq!(error.headers(), vec![("allow", "GET, POST".to_owned())]);
    }
}
