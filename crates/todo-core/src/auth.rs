//! Bearer-token authentication: HS256 JWTs signed with the secret shared with the auth provider.
//!
//! DESIGN.md section 1: no or invalid token -> 401, a token for another user -> 403.

use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

/// Authentication settings, read from Spin variables by the component.
pub struct AuthConfig {
    /// `false` only when the `auth_enabled` variable says so, for local demos.
    pub enabled: bool,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AuthConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

impl AuthConfig {
    /// Auth is on unless `enabled` is literally `false` (case-insensitive): a typo must not
    /// open the API.
    pub fn new(enabled: &str, secret: &str) -> Self {
        Self {
            enabled: !enabled.trim().eq_ignore_ascii_case("false"),
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// Checks the `Authorization` header against the user the path names.
    pub fn authorize(&self, authorization: Option<&str>, user_id: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let subject = self.subject(authorization)?;
        if subject != user_id {
            return Err(ApiError::Forbidden {
                detail: "the token does not belong to this user".to_owned(),
            });
        }
        Ok(())
    }

    /// The verified subject of a bearer token.
    pub fn subject(&self, authorization: Option<&str>) -> Result<String, ApiError> {
        let header =
            authorization.ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        if self.secret.is_empty() {
            // A missing secret must never make every signature valid.
            return Err(ApiError::unauthorized(
                "token verification is not configured",
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        let data = decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token signature is invalid",
                    ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks the exp or sub claim",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    _ => "the token is malformed",
                };
                ApiError::unauthorized(why)
            })?;
        Ok(data.claims.sub)
    }
}

/// Checks the `dapr-api-token` header of a call from the Dapr sidecar (DESIGN.md §3: with
/// `APP_API_TOKEN` set, the sidecar sends it on every call to the app). An empty `expected`
/// token means none is configured and every call is accepted. The comparison takes the same
/// time wherever the tokens differ.
pub fn check_app_token(expected: &str, given: Option<&str>) -> Result<(), ApiError> {
    if expected.is_empty() {
        return Ok(());
    }
    let given = given.unwrap_or("").as_bytes();
    let expected = expected.as_bytes();
    let differs = given.len() != expected.len()
        || given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0;
    if differs {
        return Err(ApiError::unauthorized(
            "calls from the Dapr sidecar must carry the app token in dapr-api-token",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "test-secret";

    fn token(sub: &str, exp_offset: i64, secret: &str, alg: Algorithm) -> String {
        let exp = chrono::Utc::now().timestamp() + exp_offset;
        encode(
            &Header::new(alg),
            &serde_json::json!({ "sub": sub, "exp": exp }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn accepts_a_valid_token_for_the_same_user() {
        let auth = AuthConfig::new("true", SECRET);
        let header = bearer(&token("alice", 600, SECRET, Algorithm::HS256));
        assert_eq!(auth.authorize(Some(&header), "alice"), Ok(()));
    }

    #[test]
    fn rejects_bad_tokens_with_401_and_other_users_with_403() {
        let auth = AuthConfig::new("true", SECRET);
        let cases: Vec<(&str, Option<String>, u16)> = vec![
            ("no header", None, 401),
            ("not bearer", Some("Basic abc".into()), 401),
            ("empty bearer", Some("Bearer ".into()), 401),
            ("garbage", Some("Bearer a.b.c".into()), 401),
            (
                "expired",
                Some(bearer(&token("alice", -3600, SECRET, Algorithm::HS256))),
                401,
            ),
            (
                "forged",
                Some(bearer(&token("alice", 600, "other", Algorithm::HS256))),
                401,
            ),
            (
                "wrong algorithm",
                Some(bearer(&token("alice", 600, SECRET, Algorithm::HS512))),
                401,
            ),
            (
                "other user",
                Some(bearer(&token("bob", 600, SECRET, Algorithm::HS256))),
                403,
            ),
        ];
        for (name, header, status) in cases {
            let error = auth.authorize(header.as_deref(), "alice").expect_err(name);
            assert_eq!(error.status(), status, "{name}");
        }
    }

    #[test]
    fn only_the_word_false_disables_auth() {
        assert!(!AuthConfig::new("false", "").enabled);
        assert!(!AuthConfig::new(" FALSE ", "").enabled);
        assert!(AuthConfig::new("no", "").enabled);
        assert!(AuthConfig::new("", "").enabled);
    }

    #[test]
    fn an_empty_secret_rejects_every_token() {
        let auth = AuthConfig::new("true", "");
        let header = bearer(&token("alice", 600, "", Algorithm::HS256));
        assert_eq!(
            auth.authorize(Some(&header), "alice")
                .map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn the_app_token_is_checked_only_when_configured() {
        assert!(check_app_token("", None).is_ok());
        assert!(check_app_token("", Some("anything")).is_ok());
        assert!(check_app_token("s3cret", Some("s3cret")).is_ok());
        for given in [
            None,
            Some(""),
            Some("s3cre"),
            Some("s3cret!"),
            Some("S3CRET"),
        ] {
            let error = check_app_token("s3cret", given).expect_err("rejected");
            assert_eq!(error.status(), 401, "{given:?}");
        }
    }
}
