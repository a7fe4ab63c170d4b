//! Bearer-token authentication: JWTs signed with HS256 and the secret shared with the auth
//! provider, or with an asymmetric key (RS256, ES256, EdDSA, ...) of the identity provider's
//! JWKS ([`jwks`]).
//!
//! No or invalid token -> 401, a token for another user -> 403 (README, "Authentication"). The
//! token's `alg` must be one the deployment accepts (`jwt_algorithms`); HS256 is verified with
//! `jwt_secret` only, every other algorithm with a JWKS key of the matching type, so a forged
//! `alg` (`none`, or HS256 "signed" with a public key) never verifies. Besides the signature, a
//! token must carry `exp` and `sub`, is refused before its `nbf`, and must name the configured
//! audience (`aud`) and issuer (`iss`) when those are set (RFC 7519 section 4.1).
//!
//! Verifying takes two steps so that the component can fetch a JWKS in between:
//! [`AuthConfig::bearer`] reads the header, [`AuthConfig::verify`] checks the rest.

pub mod jwks;

use crate::error::ApiError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use jwks::{Jwks, KeyMiss};
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
    /// `jwt_algorithms`: comma-separated accepted `alg` values; empty means derived from the
    /// keys configured (see [`AuthConfig::new`]).
    pub algorithms: &'a str,
    /// `jwt_jwks`: the identity provider's JWKS itself, as JSON.
    pub jwks: &'a str,
    /// `jwt_jwks_url`: where to fetch the identity provider's JWKS.
    pub jwks_url: &'a str,
    /// `jwt_jwks_origin`: the `scheme://host[:port]` of `jwt_jwks_url`, as spin.toml allows it
    /// in `allowed_outbound_hosts`.
    pub jwks_origin: &'a str,
}

impl<'a> AuthVars<'a> {
    /// The Spin variables behind the fields, in the order of [`AuthVars::from_values`].
    pub const NAMES: [&'static str; 8] = [
        "auth_enabled",
        "jwt_secret",
        "jwt_audience",
        "jwt_issuer",
        "jwt_algorithms",
        "jwt_jwks",
        "jwt_jwks_url",
        "jwt_jwks_origin",
    ];

    /// The fields from the values of [`AuthVars::NAMES`], read in that order.
    pub fn from_values(values: &'a [String; AuthVars::NAMES.len()]) -> Self {
        let [
            enabled,
            secret,
            audience,
            issuer,
            algorithms,
            jwks,
            jwks_url,
            jwks_origin,
        ] = values;
        Self {
            enabled,
            secret,
            audience,
            issuer,
            algorithms,
            jwks,
            jwks_url,
            jwks_origin,
        }
    }
}

/// The algorithms a deployment may accept. HMAC is HS256 alone, with `jwt_secret`; the others
/// verify against a JWKS. `none` never is.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 10] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a JWKS is trusted for when `jwt_algorithms` is empty: what identity providers sign
/// with (RS256 by most, ES256 and EdDSA by Better Auth and others).
pub const JWKS_DEFAULT_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Where the public keys come from.
#[derive(Debug)]
enum KeySource {
    None,
    Inline(Jwks),
    Url(String),
}

/// Authentication settings, read from Spin variables by the component.
pub struct AuthConfig {
    /// `false` only when the `auth_enabled` variable says so, for local demos.
    pub enabled: bool,
    secret: Vec<u8>,
    algorithms: Vec<Algorithm>,
    audience: Vec<String>,
    issuer: Vec<String>,
    keys: KeySource,
}

impl std::fmt::Debug for AuthConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// A bearer token whose header has been read, not yet verified.
#[derive(Debug)]
pub struct Bearer<'a> {
    token: &'a str,
    /// The header's `alg`, one the deployment accepts.
    pub alg: Algorithm,
    /// The header's `kid`, naming the JWKS key that signed it.
    pub kid: Option<String>,
}

/// Why a token was not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No JWKS key fits the token's `kid` and `alg`. A fresher copy of a fetched JWKS might
    /// have it (keys rotate); the 401 stands otherwise.
    UnknownKey(ApiError),
    /// Anything else: the 401 (or, for a missing JWKS, 500) stands.
    Refused(ApiError),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownKey(error) | Refusal::Refused(error) => error,
        }
    }
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

fn names(algorithms: &[Algorithm]) -> String {
    let names: Vec<String> = algorithms.iter().map(|alg| format!("{alg:?}")).collect();
    names.join(", ")
}

fn config_error(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

impl AuthConfig {
    /// Reads and checks the auth variables.
    ///
    /// Auth is on unless `enabled` is literally `false` (case-insensitive): a typo must not
    /// open the API. With auth on:
    /// - keys come from `jwt_secret` (HS256) and from one of `jwt_jwks` (inline) or
    ///   `jwt_jwks_url` (fetched; it must lie under `jwt_jwks_origin`);
    /// - the accepted algorithms are `jwt_algorithms`, or by default HS256 when `jwt_secret` is
    ///   set plus [`JWKS_DEFAULT_ALGORITHMS`] when a JWKS is; each needs its key;
    /// - when HS256 is accepted, the secret must be safe ([`unsafe_secret`]).
    pub fn new(vars: &AuthVars<'_>) -> Result<Self, ConfigError> {
        let enabled = !vars.enabled.trim().eq_ignore_ascii_case("false");
        let mut config = Self {
            enabled,
            secret: Vec::new(),
            algorithms: Vec::new(),
            audience: list(vars.audience),
            issuer: list(vars.issuer),
            keys: KeySource::None,
        };
        if !enabled {
            return Ok(config);
        }
        config.keys = match (vars.jwks.trim(), vars.jwks_url.trim()) {
            ("", "") => KeySource::None,
            (json, "") => KeySource::Inline(
                Jwks::parse(json.as_bytes()).map_err(|e| config_error("jwt_jwks", e.0))?,
            ),
            ("", url) => {
                check_jwks_url(url, vars.jwks_origin.trim())?;
                KeySource::Url(url.to_owned())
            }
            _ => {
                return Err(config_error(
                    "jwt_jwks",
                    "set either jwt_jwks or jwt_jwks_url, not both",
                ));
            }
        };
        let has_jwks = !matches!(config.keys, KeySource::None);
        config.algorithms = if vars.algorithms.trim().is_empty() {
            let mut derived = Vec::new();
            if !vars.secret.is_empty() {
                derived.push(Algorithm::HS256);
            }
            if has_jwks {
                derived.extend(JWKS_DEFAULT_ALGORITHMS);
            }
            if derived.is_empty() {
                return Err(config_error(
                    "jwt_secret",
                    "no key verifies tokens: set jwt_secret, jwt_jwks or jwt_jwks_url",
                ));
            }
            derived
        } else {
            parse_algorithms(vars.algorithms)?
        };
        for alg in &config.algorithms {
            if *alg == Algorithm::HS256 && vars.secret.is_empty() {
                return Err(config_error(
                    "jwt_algorithms",
                    "it lists HS256 but jwt_secret is empty",
                ));
            }
            if *alg != Algorithm::HS256 && !has_jwks {
                return Err(config_error(
                    "jwt_algorithms",
                    format!("it lists {alg:?}, which needs jwt_jwks or jwt_jwks_url"),
                ));
            }
        }
        if config.algorithms.contains(&Algorithm::HS256) {
            if let Some(reason) = unsafe_secret(vars.secret) {
                return Err(config_error("jwt_secret", reason));
            }
            config.secret = vars.secret.as_bytes().to_vec();
        }
        Ok(config)
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Checks the `Authorization` header against the user the path names, for configurations
    /// that need no fetch (HS256, inline JWKS); see [`AuthConfig::verify`] for the others.
    pub fn authorize(&self, authorization: Option<&str>, user_id: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let subject = self.subject(authorization)?;
        check_subject(&subject, user_id)
    }

    /// The verified subject of a bearer token, for configurations that need no fetch.
    pub fn subject(&self, authorization: Option<&str>) -> Result<String, ApiError> {
        let bearer = self.bearer(authorization)?;
        Ok(self.verify(&bearer, None)?)
    }

    /// Reads the bearer token's header: 401 unless it is a JWS whose `alg` is accepted.
    pub fn bearer<'a>(&self, authorization: Option<&'a str>) -> Result<Bearer<'a>, ApiError> {
        let header =
            authorization.ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let malformed = || ApiError::unauthorized("the token is malformed");
        let (encoded, _) = token.split_once('.').ok_or_else(malformed)?;
        let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
        let header: serde_json::Value = serde_json::from_slice(&json).map_err(|_| malformed())?;
        let name = header
            .get("alg")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(malformed)?;
        let alg = name
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "the token's algorithm {name:?} is not accepted; this API accepts {}",
                    names(&self.algorithms)
                ))
            })?;
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed()),
        };
        Ok(Bearer { token, alg, kid })
    }

    /// The JWKS URL to fetch before `bearer` can be verified, if any.
    pub fn jwks_url_for(&self, bearer: &Bearer<'_>) -> Option<&str> {
        match &self.keys {
            KeySource::Url(url) if bearer.alg != Algorithm::HS256 => Some(url),
            _ => None,
        }
    }

    /// Verifies the signature and the claims of `bearer` and returns its subject. HS256 uses
    /// `jwt_secret`; the other algorithms the inline JWKS, or `fetched` for a JWKS URL.
    pub fn verify(&self, bearer: &Bearer<'_>, fetched: Option<&Jwks>) -> Result<String, Refusal> {
        let secret;
        let key = if bearer.alg == Algorithm::HS256 {
            if self.secret.is_empty() {
                // Unreachable through `new`, and a missing secret must never make every
                // signature valid.
                return Err(Refusal::Refused(ApiError::unauthorized(
                    "token verification is not configured",
                )));
            }
            secret = DecodingKey::from_secret(&self.secret);
            &secret
        } else {
            let jwks = match (&self.keys, fetched) {
                (KeySource::Inline(jwks), _) | (KeySource::Url(_), Some(jwks)) => jwks,
                _ => {
                    return Err(Refusal::Refused(ApiError::internal(
                        "verifying a token with a JWKS that was not given",
                    )));
                }
            };
            jwks.select(bearer.kid.as_deref(), bearer.alg)
                .map_err(|miss| match miss {
                    KeyMiss::Unknown => Refusal::UnknownKey(ApiError::unauthorized(match &bearer.kid {
                        Some(kid) => format!(
                            "no signing key of the identity provider has the token's kid {kid:?} and fits {:?}",
                            bearer.alg
                        ),
                        None => format!(
                            "no signing key of the identity provider fits {:?}",
                            bearer.alg
                        ),
                    })),
                    KeyMiss::Ambiguous => Refusal::Refused(ApiError::unauthorized(
                        "the token names no kid and several signing keys could have signed it",
                    )),
                })?
        };
        decode::<Claims>(bearer.token, key, &self.validation(bearer.alg))
            .map(|data| data.claims.sub)
            .map_err(|error| Refusal::Refused(ApiError::unauthorized(rejection(&error))))
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
}

/// 403 unless the verified `subject` is the user the path names.
pub fn check_subject(subject: &str, user_id: &str) -> Result<(), ApiError> {
    if subject != user_id {
        return Err(ApiError::Forbidden {
            detail: "the token does not belong to this user".to_owned(),
        });
    }
    Ok(())
}

fn parse_algorithms(value: &str) -> Result<Vec<Algorithm>, ConfigError> {
    let mut algorithms = Vec::new();
    for name in list(value) {
        let alg = name
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| SUPPORTED_ALGORITHMS.contains(alg))
            .ok_or_else(|| {
                config_error(
                    "jwt_algorithms",
                    format!("{name:?} is not one of {}", names(&SUPPORTED_ALGORITHMS)),
                )
            })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    Ok(algorithms)
}

/// The scheme, host and port of an absolute `http(s)` URL (the scheme's port when none is
/// written), lower-cased; `None` for anything else, or for a URL with user info.
fn origin_of(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// `url` must be an absolute http(s) URL under `origin`, the `allowed_outbound_hosts` entry
/// spin.toml makes of `jwt_jwks_origin`: otherwise Spin refuses the fetch on every request.
/// An origin with a wildcard is left to Spin.
fn check_jwks_url(url: &str, origin: &str) -> Result<(), ConfigError> {
    let (scheme, host, port) = origin_of(url).ok_or_else(|| {
        config_error(
            "jwt_jwks_url",
            "it must be an absolute http:// or https:// URL without user info",
        )
    })?;
    if origin.contains('*') {
        return Ok(());
    }
    let expected = match port {
        80 if scheme == "http" => format!("{scheme}://{host}"),
        443 if scheme == "https" => format!("{scheme}://{host}"),
        _ => format!("{scheme}://{host}:{port}"),
    };
    let origin_path_free = origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/').find(['/', '?', '#']).is_none());
    if !origin_path_free || origin_of(origin) != Some((scheme, host, port)) {
        return Err(config_error(
            "jwt_jwks_origin",
            format!(
                "it must be {expected}, the origin of jwt_jwks_url, for Spin to allow the fetch"
            ),
        ));
    }
    Ok(())
}

/// Why jsonwebtoken refused a token, in words a client can act on.
fn rejection(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "the token signature is invalid".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".to_owned(),
        ErrorKind::InvalidAudience => "the token is not meant for this API (aud)".to_owned(),
        ErrorKind::InvalidIssuer => "the token comes from an unexpected issuer (iss)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's {claim} claim is malformed"),
        _ => "the token is malformed".to_owned(),
    }
}

/// Checks the `dapr-api-token` header of a call from the Dapr sidecar (Dapr's app API token docs:
/// with `APP_API_TOKEN` set, the sidecar sends it on every call to the app). An empty `expected`
/// token means none is configured and every call is accepted. The comparison takes the same time
/// wherever the tokens differ.
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

    /// Key pairs generated per test binary (RSA once: it takes a while), with their public JWK.
    mod keys {
        use jsonwebtoken::jwk::Jwk;
        use jsonwebtoken::{Algorithm, EncodingKey};
        use rand::rngs::OsRng;
        use serde_json::{Value, json};
        use std::sync::OnceLock;

        pub struct TestKey {
            pub alg: Algorithm,
            pub encoding: EncodingKey,
            pub jwk: Value,
        }

        fn rsa_der(which: usize) -> &'static [u8] {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            static KEYS: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
            KEYS[which].get_or_init(|| {
                let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("an RSA key");
                key.to_pkcs1_der().expect("DER").as_bytes().to_vec()
            })
        }

        /// A key for `alg`; `which` (0 or 1) picks one of two RSA keys, EC and Ed keys are
        /// fresh every time.
        pub fn generate(alg: Algorithm, kid: &str, which: usize) -> TestKey {
            let encoding = match alg {
                Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_der(rsa_der(which)),
                Algorithm::ES256 => {
                    use p256::pkcs8::EncodePrivateKey;
                    let key = p256::SecretKey::random(&mut OsRng);
                    EncodingKey::from_ec_der(key.to_pkcs8_der().expect("DER").as_bytes())
                }
                Algorithm::EdDSA => {
                    use base64::Engine as _;
                    use ed25519_dalek::pkcs8::EncodePrivateKey;
                    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                    // jsonwebtoken derives the public JWK only from 48-byte (v1) PKCS#8 keys;
                    // dalek writes v2, so the JWK is written out here.
                    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(key.verifying_key().as_bytes());
                    let encoding =
                        EncodingKey::from_ed_der(key.to_pkcs8_der().expect("DER").as_bytes());
                    let jwk =
                        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": x});
                    return TestKey { alg, encoding, jwk };
                }
                other => panic!("no test key for {other:?}"),
            };
            let mut jwk =
                serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("a JWK"))
                    .expect("JSON");
            jwk["kid"] = json!(kid);
            TestKey { alg, encoding, jwk }
        }
    }

    fn signed_by(key: &keys::TestKey, kid: Option<&str>, claims: &Value) -> String {
        let header = Header {
            kid: kid.map(str::to_owned),
            ..Header::new(key.alg)
        };
        encode(&header, claims, &key.encoding).expect("sign")
    }

    fn alice_claims() -> Value {
        json!({ "sub": "alice", "exp": now() + 600 })
    }

    fn jwks_of(keys: &[&keys::TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    fn with_jwks(jwks: &str, secret: &str, algorithms: &str) -> AuthConfig {
        AuthConfig::new(&AuthVars {
            enabled: "true",
            secret,
            algorithms,
            jwks,
            ..AuthVars::default()
        })
        .expect("a valid configuration")
    }

    /// The outcome of verifying `token` (the header read, then the signature and claims).
    fn outcome(auth: &AuthConfig, token: &str) -> Result<String, Refusal> {
        let header = bearer(token);
        let bearer = auth.bearer(Some(&header)).map_err(Refusal::Refused)?;
        auth.verify(&bearer, None)
    }

    fn refused(detail: &str) -> Result<String, Refusal> {
        Err(Refusal::Refused(ApiError::unauthorized(detail)))
    }

    #[test]
    fn rs256_es256_and_eddsa_tokens_verify_against_the_jwks() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let key = keys::generate(alg, "k1", 0);
            let algorithms = if alg == Algorithm::PS256 { "PS256" } else { "" };
            let auth = with_jwks(&jwks_of(&[&key]), "", algorithms);
            let token = signed_by(&key, Some("k1"), &alice_claims());
            assert_eq!(outcome(&auth, &token), Ok("alice".to_owned()), "{alg:?}");
            assert_eq!(
                auth.authorize(Some(&bearer(&token)), "alice"),
                Ok(()),
                "{alg:?}"
            );
            // Without a kid, the only key of the type is used.
            let token = signed_by(&key, None, &alice_claims());
            assert_eq!(outcome(&auth, &token), Ok("alice".to_owned()), "{alg:?}");
            // The claims are checked as for HS256.
            let token = signed_by(
                &key,
                Some("k1"),
                &json!({ "sub": "alice", "exp": now() - 600 }),
            );
            assert_eq!(
                outcome(&auth, &token),
                refused("the token has expired"),
                "{alg:?}"
            );
            let token = signed_by(
                &key,
                Some("k1"),
                &json!({ "sub": "bob", "exp": now() + 600 }),
            );
            assert_eq!(
                auth.authorize(Some(&bearer(&token)), "alice")
                    .map_err(|e| e.status()),
                Err(403)
            );
        }
    }

    #[test]
    fn an_unknown_kid_is_a_miss_a_fresher_jwks_may_resolve() {
        let key = keys::generate(Algorithm::ES256, "current", 0);
        let auth = with_jwks(&jwks_of(&[&key]), "", "");
        let token = signed_by(&key, Some("next"), &alice_claims());
        assert_eq!(
            outcome(&auth, &token),
            Err(Refusal::UnknownKey(ApiError::unauthorized(
                "no signing key of the identity provider has the token's kid \"next\" and fits ES256"
            )))
        );
        assert_eq!(
            auth.authorize(Some(&bearer(&token)), "alice")
                .map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn a_token_signed_by_another_key_under_a_published_kid_is_refused() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let published = keys::generate(alg, "k1", 0);
            let other = keys::generate(alg, "k1", 1);
            let auth = with_jwks(&jwks_of(&[&published]), "", "");
            let token = signed_by(&other, Some("k1"), &alice_claims());
            assert_eq!(
                outcome(&auth, &token),
                refused("the token signature is invalid"),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn a_forged_alg_never_verifies() {
        let key = keys::generate(Algorithm::RS256, "rsa", 0);
        let jwks = jwks_of(&[&key]);
        let with_hs256 = with_jwks(&jwks, SECRET, "");
        let without_hs256 = with_jwks(&jwks, "", "");
        assert_eq!(
            with_hs256.algorithms(),
            [
                Algorithm::HS256,
                Algorithm::RS256,
                Algorithm::ES256,
                Algorithm::EdDSA
            ]
        );
        assert_eq!(without_hs256.algorithms(), JWKS_DEFAULT_ALGORITHMS);

        // HS256 "signed" with what is public: the JWK's modulus, the JWKS document.
        let n = URL_SAFE_NO_PAD
            .decode(key.jwk["n"].as_str().expect("n"))
            .expect("base64url");
        for public in [n, jwks.clone().into_bytes()] {
            let header = Header {
                kid: Some("rsa".to_owned()),
                ..Header::new(Algorithm::HS256)
            };
            let forged =
                encode(&header, &alice_claims(), &EncodingKey::from_secret(&public)).expect("sign");
            assert_eq!(
                outcome(&with_hs256, &forged),
                refused("the token signature is invalid")
            );
            assert_eq!(
                outcome(&without_hs256, &forged),
                refused(
                    "the token's algorithm \"HS256\" is not accepted; this API accepts RS256, ES256, EdDSA"
                )
            );
        }

        // alg none, unsigned.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(alice_claims().to_string())
        );
        assert_eq!(
            outcome(&with_hs256, &none),
            refused(
                "the token's algorithm \"none\" is not accepted; this API accepts HS256, RS256, ES256, EdDSA"
            )
        );

        // A header claiming RS256 over an HMAC signature.
        let hmac = token("alice", 600, SECRET, Algorithm::HS256);
        let (_, rest) = hmac.split_once('.').expect("a JWT");
        let relabelled = format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"rsa"}"#)
        );
        assert_eq!(
            outcome(&with_hs256, &relabelled),
            refused("the token signature is invalid")
        );
    }

    #[test]
    fn an_algorithm_outside_jwt_algorithms_is_refused_even_with_a_fitting_key() {
        let es = keys::generate(Algorithm::ES256, "ec", 0);
        let ed = keys::generate(Algorithm::EdDSA, "ed", 0);
        let auth = with_jwks(&jwks_of(&[&es, &ed]), SECRET, "EdDSA");
        assert_eq!(
            outcome(&auth, &signed_by(&es, Some("ec"), &alice_claims())),
            refused("the token's algorithm \"ES256\" is not accepted; this API accepts EdDSA")
        );
        assert_eq!(
            outcome(&auth, &token("alice", 600, SECRET, Algorithm::HS256)),
            refused("the token's algorithm \"HS256\" is not accepted; this API accepts EdDSA")
        );
        assert_eq!(
            outcome(&auth, &signed_by(&ed, Some("ed"), &alice_claims())),
            Ok("alice".to_owned())
        );
    }

    #[test]
    fn malformed_headers_are_401() {
        let auth = hs256(AuthVars::default());
        let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for token in [
            "no-dots".to_owned(),
            "!!!.e30.sig".to_owned(),
            format!("{}.e30.sig", b64("not json")),
            format!("{}.e30.sig", b64(r#"{"typ":"JWT"}"#)),
            format!("{}.e30.sig", b64(r#"{"alg":7}"#)),
            format!("{}.e30.sig", b64(r#"{"alg":"HS256","kid":7}"#)),
        ] {
            assert_eq!(
                auth.bearer(Some(&bearer(&token))).map(|_| ()),
                Err(ApiError::unauthorized("the token is malformed")),
                "{token}"
            );
        }
    }

    #[test]
    fn the_configuration_must_be_complete_and_consistent() {
        let jwks = jwks_of(&[&keys::generate(Algorithm::EdDSA, "ed", 0)]);
        let url = "https://auth.example.com/api/auth/jwks";
        let origin = "https://auth.example.com";
        let base = AuthVars {
            enabled: "true",
            ..AuthVars::default()
        };
        let cases = [
            (
                "nothing",
                AuthVars { ..base },
                "jwt_secret",
                "no key verifies tokens",
            ),
            (
                "both jwks",
                AuthVars {
                    jwks: &jwks,
                    jwks_url: url,
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks",
                "set either",
            ),
            (
                "bad jwks",
                AuthVars {
                    jwks: "{\"keys\": 3}",
                    ..base
                },
                "jwt_jwks",
                "\"keys\" is not an array",
            ),
            (
                "hs256 without secret",
                AuthVars {
                    jwks: &jwks,
                    algorithms: "HS256, EdDSA",
                    ..base
                },
                "jwt_algorithms",
                "it lists HS256 but jwt_secret is empty",
            ),
            (
                "rs256 without jwks",
                AuthVars {
                    secret: SECRET,
                    algorithms: "RS256",
                    ..base
                },
                "jwt_algorithms",
                "it lists RS256, which needs",
            ),
            (
                "none",
                AuthVars {
                    secret: SECRET,
                    algorithms: "HS256,none",
                    ..base
                },
                "jwt_algorithms",
                "\"none\" is not one of HS256, RS256",
            ),
            (
                "hs512",
                AuthVars {
                    secret: SECRET,
                    algorithms: "HS512",
                    ..base
                },
                "jwt_algorithms",
                "\"HS512\" is not one of",
            ),
            (
                "weak secret beside a jwks",
                AuthVars {
                    secret: "CHANGE-ME",
                    jwks: &jwks,
                    ..base
                },
                "jwt_secret",
                "it contains the placeholder",
            ),
            (
                "relative url",
                AuthVars {
                    jwks_url: "/jwks.json",
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks_url",
                "it must be an absolute",
            ),
            (
                "ftp url",
                AuthVars {
                    jwks_url: "ftp://auth.example.com/jwks",
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks_url",
                "it must be an absolute",
            ),
            (
                "user info",
                AuthVars {
                    jwks_url: "https://u:p@auth.example.com/jwks",
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks_url",
                "it must be an absolute",
            ),
            (
                "default origin",
                AuthVars {
                    jwks_url: url,
                    jwks_origin: "https://jwks.invalid",
                    ..base
                },
                "jwt_jwks_origin",
                "it must be https://auth.example.com, the origin",
            ),
            (
                "other port",
                AuthVars {
                    jwks_url: "https://auth.example.com:8443/jwks",
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks_origin",
                "it must be https://auth.example.com:8443,",
            ),
            (
                "other scheme",
                AuthVars {
                    jwks_url: "http://auth.example.com/jwks",
                    jwks_origin: origin,
                    ..base
                },
                "jwt_jwks_origin",
                "it must be http://auth.example.com,",
            ),
            (
                "origin with a path",
                AuthVars {
                    jwks_url: url,
                    jwks_origin: "https://auth.example.com/api",
                    ..base
                },
                "jwt_jwks_origin",
                "it must be https://auth.example.com,",
            ),
        ];
        for (name, vars, variable, reason) in cases {
            let error = AuthConfig::new(&vars).expect_err(name);
            assert_eq!(error.variable, variable, "{name}: {error}");
            assert!(error.reason.starts_with(reason), "{name}: {error}");
        }
    }

    #[test]
    fn accepted_algorithms_default_to_what_is_configured() {
        let jwks = jwks_of(&[&keys::generate(Algorithm::EdDSA, "ed", 0)]);
        let url = "http://127.0.0.1:8080/jwks.json";
        let base = AuthVars {
            enabled: "true",
            ..AuthVars::default()
        };
        let cases = [
            (
                AuthVars {
                    secret: SECRET,
                    ..base
                },
                vec![Algorithm::HS256],
            ),
            (
                AuthVars {
                    jwks: &jwks,
                    ..base
                },
                JWKS_DEFAULT_ALGORITHMS.to_vec(),
            ),
            (
                AuthVars {
                    jwks_url: url,
                    jwks_origin: "http://127.0.0.1:8080",
                    ..base
                },
                JWKS_DEFAULT_ALGORITHMS.to_vec(),
            ),
            (
                AuthVars {
                    secret: SECRET,
                    jwks_url: url,
                    jwks_origin: "http://127.0.0.1:8080/",
                    ..base
                },
                vec![
                    Algorithm::HS256,
                    Algorithm::RS256,
                    Algorithm::ES256,
                    Algorithm::EdDSA,
                ],
            ),
            (
                AuthVars {
                    secret: SECRET,
                    jwks: &jwks,
                    algorithms: " PS256 ,ES384,PS256",
                    ..base
                },
                vec![Algorithm::PS256, Algorithm::ES384],
            ),
            (
                AuthVars {
                    jwks_url: "https://tenant.idp.example/.well-known/jwks.json",
                    jwks_origin: "https://*.idp.example",
                    ..base
                },
                JWKS_DEFAULT_ALGORITHMS.to_vec(),
            ),
        ];
        for (vars, expected) in cases {
            let auth = AuthConfig::new(&vars).expect("valid");
            assert_eq!(auth.algorithms(), expected, "{auth:?}");
        }
    }

    #[test]
    fn only_tokens_needing_a_fetched_jwks_ask_for_the_url() {
        let url = "http://127.0.0.1:8080/jwks.json";
        let auth = AuthConfig::new(&AuthVars {
            enabled: "true",
            secret: SECRET,
            jwks_url: url,
            jwks_origin: "http://127.0.0.1:8080",
            ..AuthVars::default()
        })
        .expect("valid");
        let key = keys::generate(Algorithm::EdDSA, "ed", 0);
        let asymmetric = bearer(&signed_by(&key, Some("ed"), &alice_claims()));
        let symmetric = bearer(&token("alice", 600, SECRET, Algorithm::HS256));
        let asymmetric = auth.bearer(Some(&asymmetric)).expect("accepted alg");
        let symmetric = auth.bearer(Some(&symmetric)).expect("accepted alg");
        assert_eq!(auth.jwks_url_for(&asymmetric), Some(url));
        assert_eq!(auth.jwks_url_for(&symmetric), None);
        assert_eq!(auth.verify(&symmetric, None), Ok("alice".to_owned()));
        let fetched = jwks::Jwks::parse(jwks_of(&[&key]).as_bytes()).expect("a set");
        assert_eq!(
            auth.verify(&asymmetric, Some(&fetched)),
            Ok("alice".to_owned())
        );
        // Without the fetched set, verification cannot happen: an internal error, not a 401.
        assert_eq!(
            auth.verify(&asymmetric, None)
                .map_err(|r| ApiError::from(r).status()),
            Err(500)
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
