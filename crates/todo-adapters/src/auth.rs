//! Bearer-token checks at the edge: reads the auth variables and hands the header to the core.

use crate::vars;
use todo_core::auth::{AuthConfig, AuthVars};
use todo_core::error::ApiError;

/// The token verifier of one request, built from the component's variables `auth_enabled`,
/// `jwt_secret`, `jwt_audience` and `jwt_issuer`.
#[derive(Debug)]
pub struct Verifier {
    config: AuthConfig,
}

impl Verifier {
    /// Reads the auth variables.
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
        });
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
