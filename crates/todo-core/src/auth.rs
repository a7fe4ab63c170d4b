//! Bearer-token authentication: JWTs signed with HS256 and the secret shared with the auth
//! provider.
//!
//! DESIGN.md section 1: no or invalid token -> 401, a token for another user -> 403. Besides the
//! signature, a token must carry `exp` and `sub`, is refused before its `nbf`, and must name the
//! configured audience (`aud`) and issuer (`iss`) when those are set (RFC 7519 section 4.1).

use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// The shortest secret accepted as a key, in bytes: 256 bits, the output size of HS256's
/// SHA-256 (RFC 7518 section 3.2 requires keys at least that long).
pub const MIN_SECRET_BYTES: usize = 32;

/// Spellings of the placeholder the templates ship with (`CHANGE-ME` in `k8s/secrets/`).
const PLACEHOLDERS: [&str; 3] = ["change-me", "change_me", "changeme"];

/// Why `value` must not be used as a secret, or `None` when it may be.
///
/// For any secret variable (`jwt_secret`, `app_api_token`, ...): a value shorter than
/// [`MIN_SECRET_BYTES`] bytes, or one that still contains the placeholder `change-me` (in any
/// case, also written `change_me` or `changeme`), is unsafe. The reason never repeats the
/// value, so it can be logged; it is not meant for clients.
pub fn unsafe_secret(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    if let Some(placeholder) = PLACEHOLDERS.iter().find(|p| lower.contains(*p)) {
        return Some(format!(
            "it contains the placeholder '{placeholder}'; set a random value"
        ));
    }
    if value.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "it is {} bytes long; at least {MIN_SECRET_BYTES} random bytes are needed",
            value.len()
        ));
    }
    None
}

/// A setting the component must not serve with: a deployment mistake, answered 500 and logged,
/// never described to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variable {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

/// The raw values of the auth variables, as the component reads them.
#[derive(Clone, Copy, Default)]
pub struct AuthVars<'a> {
    /// `auth_enabled`: only `false` switches checks off.
    pub enabled: &'a str,
    /// `jwt_secret`: the HS256 key.
    pub secret: &'a str,
    /// `jwt_audience`: comma-separated accepted `aud` values; empty means `aud` is not checked.
    pub audience: &'a str,
    /// `jwt_issuer`: comma-separated accepted `iss` values; empty means `iss` is not checked.
    pub issuer: &'a str,
}

/// Authentication settings, read from Spin variables by the component.
pub struct AuthConfig {
    /// `false` only when the `auth_enabled` variable says so, for local demos.
    pub enabled: bool,
    secret: Vec<u8>,
    audience: Vec<String>,
    issuer: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// The non-empty, trimmed items of a comma-separated setting.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

impl AuthConfig {
    /// Auth is on unless `enabled` is literally `false` (case-insensitive): a typo must not
    /// open the API. With auth on, the HS256 secret must be safe ([`unsafe_secret`]).
    pub fn new(vars: &AuthVars<'_>) -> Result<Self, ConfigError> {
        let enabled = !vars.enabled.trim().eq_ignore_ascii_case("false");
        if enabled && let Some(reason) = unsafe_secret(vars.secret) {
            return Err(ConfigError {
                variable: "jwt_secret",
                reason,
            });
        }
        Ok(Self {
            enabled,
            secret: vars.secret.as_bytes().to_vec(),
            audience: list(vars.audience),
            issuer: list(vars.issuer),
        })
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

    /// The claim checks for a token signed with `alg`: `exp` and `sub` required, `nbf`
    /// honoured, `aud` and `iss` checked against the configured values when there are any.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        let mut required = vec!["exp", "sub"];
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        if self.audience.is_empty() {
            // No audience configured: a token naming one is still for us (identity providers
            // put their client id there); jsonwebtoken would otherwise refuse any `aud`.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
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
        let validation = self.validation(Algorithm::HS256);
        let data = decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map_err(|error| ApiError::unauthorized(rejection(&error)))?;
        Ok(data.claims.sub)
    }
}

/// Why jsonwebtoken refused a token, in words a client can act on.
fn rejection(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "the token signature is invalid".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token must be signed with HS256".to_owned(),
        ErrorKind::InvalidAudience => "the token is not meant for this API (aud)".to_owned(),
        ErrorKind::InvalidIssuer => "the token comes from an unexpected issuer (iss)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's {claim} claim is malformed"),
        _ => "the token is malformed".to_owned(),
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
    use serde_json::{Value, json};

    const SECRET: &str = "uJ3q9Zk1-vN8xR2mT5wB7yC4eH6gL0pA";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn hs256(vars: AuthVars<'_>) -> AuthConfig {
        AuthConfig::new(&AuthVars {
            enabled: "true",
            secret: SECRET,
            ..vars
        })
        .expect("a valid configuration")
    }

    fn signed(claims: &Value, secret: &str, alg: Algorithm) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn token(sub: &str, exp_offset: i64, secret: &str, alg: Algorithm) -> String {
        signed(
            &json!({ "sub": sub, "exp": now() + exp_offset }),
            secret,
            alg,
        )
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// The status `auth` answers for a token for `alice` with `extra` claims.
    fn status_with(auth: &AuthConfig, extra: Value) -> Result<(), (u16, String)> {
        let mut claims = json!({ "sub": "alice", "exp": now() + 600 });
        for (name, value) in extra.as_object().expect("an object") {
            claims[name] = value.clone();
        }
        let header = bearer(&signed(&claims, SECRET, Algorithm::HS256));
        auth.authorize(Some(&header), "alice").map_err(|e| {
            let detail = e.to_problem(None).detail;
            (e.status(), detail)
        })
    }

    #[test]
    fn accepts_a_valid_token_for_the_same_user() {
        let auth = hs256(AuthVars::default());
        let header = bearer(&token("alice", 600, SECRET, Algorithm::HS256));
        assert_eq!(auth.authorize(Some(&header), "alice"), Ok(()));
    }

    #[test]
    fn rejects_bad_tokens_with_401_and_other_users_with_403() {
        let auth = hs256(AuthVars::default());
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
    fn a_token_is_refused_before_its_nbf_and_accepted_from_it() {
        let auth = hs256(AuthVars::default());
        let (status, detail) = status_with(&auth, json!({ "nbf": now() + 600 })).expect_err("nbf");
        assert_eq!(status, 401);
        assert_eq!(detail, "the token is not valid yet (nbf)");
        assert_eq!(status_with(&auth, json!({ "nbf": now() - 5 })), Ok(()));
        // Within the leeway, a clock slightly ahead of ours is tolerated.
        assert_eq!(status_with(&auth, json!({ "nbf": now() + 10 })), Ok(()));
        let (status, _) = status_with(&auth, json!({ "nbf": "tomorrow" })).expect_err("format");
        assert_eq!(status, 401);
    }

    #[test]
    fn a_token_with_an_audience_is_accepted_when_none_is_configured() {
        let auth = hs256(AuthVars::default());
        assert_eq!(status_with(&auth, json!({ "aud": "todo-web" })), Ok(()));
        assert_eq!(status_with(&auth, json!({ "aud": ["a", "b"] })), Ok(()));
        assert_eq!(
            status_with(&auth, json!({ "iss": "https://idp.example" })),
            Ok(())
        );
    }

    #[test]
    fn a_configured_audience_must_be_named_by_the_token() {
        let auth = hs256(AuthVars {
            audience: "todo-api, todo-web",
            ..AuthVars::default()
        });
        assert_eq!(status_with(&auth, json!({ "aud": "todo-api" })), Ok(()));
        assert_eq!(
            status_with(&auth, json!({ "aud": ["other", "todo-web"] })),
            Ok(())
        );
        let cases = [
            (
                "another audience",
                json!({ "aud": "billing" }),
                "the token is not meant for this API (aud)",
            ),
            (
                "none of several",
                json!({ "aud": ["x", "y"] }),
                "the token is not meant for this API (aud)",
            ),
            ("no aud", json!({}), "the token lacks the aud claim"),
        ];
        for (name, extra, expected) in cases {
            let (status, detail) = status_with(&auth, extra).expect_err(name);
            assert_eq!((status, detail.as_str()), (401, expected), "{name}");
        }
    }

    #[test]
    fn a_configured_issuer_must_be_the_tokens() {
        let auth = hs256(AuthVars {
            issuer: "https://idp.example",
            ..AuthVars::default()
        });
        assert_eq!(
            status_with(&auth, json!({ "iss": "https://idp.example" })),
            Ok(())
        );
        let cases = [
            (
                "another issuer",
                json!({ "iss": "https://evil.example" }),
                "the token comes from an unexpected issuer (iss)",
            ),
            ("no iss", json!({}), "the token lacks the iss claim"),
        ];
        for (name, extra, expected) in cases {
            let (status, detail) = status_with(&auth, extra).expect_err(name);
            assert_eq!((status, detail.as_str()), (401, expected), "{name}");
        }
    }

    #[test]
    fn only_the_word_false_disables_auth() {
        let enabled = |value| {
            AuthConfig::new(&AuthVars {
                enabled: value,
                secret: SECRET,
                ..AuthVars::default()
            })
            .expect("valid")
            .enabled
        };
        assert!(!enabled("false"));
        assert!(!enabled(" FALSE "));
        assert!(enabled("no"));
        assert!(enabled(""));
    }

    #[test]
    fn short_and_placeholder_secrets_are_unsafe() {
        let cases = [
            (
                "",
                Some("it is 0 bytes long; at least 32 random bytes are needed"),
            ),
            (
                "short",
                Some("it is 5 bytes long; at least 32 random bytes are needed"),
            ),
            (
                "a".repeat(31).as_str(),
                Some("it is 31 bytes long; at least 32 random bytes are needed"),
            ),
            (
                "CHANGE-ME",
                Some("it contains the placeholder 'change-me'; set a random value"),
            ),
            (
                "local-dev-secret-change-me",
                Some("it contains the placeholder 'change-me'; set a random value"),
            ),
            (
                "0123456789abcdef0123456789abcdef-Change_Me",
                Some("it contains the placeholder 'change_me'; set a random value"),
            ),
            (
                "changemechangemechangemechangeme",
                Some("it contains the placeholder 'changeme'; set a random value"),
            ),
            ("a".repeat(32).as_str(), None),
            (SECRET, None),
        ]
        .map(|(value, reason)| (value.to_owned(), reason));
        for (value, reason) in cases {
            assert_eq!(unsafe_secret(&value).as_deref(), reason, "{value:?}");
        }
    }

    #[test]
    fn an_unsafe_secret_is_refused_as_configuration_unless_auth_is_off() {
        for secret in ["", "CHANGE-ME", "local-dev-secret-change-me"] {
            let error = AuthConfig::new(&AuthVars {
                enabled: "true",
                secret,
                ..AuthVars::default()
            })
            .expect_err(secret);
            assert_eq!(error.variable, "jwt_secret");
            assert!(!error.to_string().contains(secret) || secret.is_empty());
            let off = AuthConfig::new(&AuthVars {
                enabled: "false",
                secret,
                ..AuthVars::default()
            });
            assert!(off.is_ok_and(|auth| !auth.enabled), "{secret:?}");
        }
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
