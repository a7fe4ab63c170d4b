//! Bearer-token checks at the edge: reads the auth variables and hands the header to the core.
//!
//! A configuration the core refuses (an unsafe `jwt_secret`, ...) is a deployment mistake: every
//! request gets a bare 500, and the log says which variable and why, once per instance.

use crate::vars;
use std::sync::Mutex;
use todo_core::auth::{AuthConfig, AuthVars, ConfigError};
use todo_core::error::ApiError;

/// The configuration error this instance last logged. Instance-wide on purpose (Spin reuses an
/// instance for many requests): it only keeps the log from repeating the same reason per request.
static REPORTED: Mutex<Option<ConfigError>> = Mutex::new(None);

/// The token verifier of one request, built from the component's variables `auth_enabled`,
/// `jwt_secret`, `jwt_audience` and `jwt_issuer`.
#[derive(Debug)]
pub struct Verifier {
    config: AuthConfig,
}

impl Verifier {
    /// Reads the auth variables. A refused configuration is an internal error whose reason is
    /// logged the first time this instance meets it and never sent to the client.
    pub async fn load() -> Result<Self, ApiError> {
        let enabled = vars::get("auth_enabled").await?;
        let secret = vars::get("jwt_secret").await?;
        let audience = vars::get("jwt_audience").await?;
        let issuer = vars::get("jwt_issuer").await?;
        let config = AuthConfig::new(&AuthVars {
            enabled: &enabled,
            secret: &secret,
            audience: &audience,
            issuer: &issuer,
            ..AuthVars::default()
        })
        .map_err(refuse)?;
        Ok(Self { config })
    }

    /// Checks the `Authorization` header against the user the path names: 401 for a missing or
    /// invalid token, 403 for another user's.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        user_id: &str,
    ) -> Result<(), ApiError> {
        self.config.authorize(authorization, user_id)
    }
}

/// Logs `error` unless this instance already did, and answers with a 500 that names nothing.
fn refuse(error: ConfigError) -> ApiError {
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if reported.as_ref() != Some(&error) {
        eprintln!("refusing to serve the task API: {error}");
        *reported = Some(error);
    }
    ApiError::internal("the auth configuration is refused (reason logged once per instance)")
}
