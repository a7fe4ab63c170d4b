//! Bearer-token checks at the edge: reads the auth variables, keeps the identity provider's
//! JWKS per instance, and hands the token to the core.
//!
//! A configuration the core refuses (an unsafe `jwt_secret`, a JWKS URL Spin would not let the
//! component fetch, ...) is a deployment mistake: every request gets a bare 500, and the log
//! says which variable and why, once per instance.
//!
//! **The JWKS cache.** A JWKS fetched from `jwt_jwks_url` is kept in a static, shared by the
//! requests one instance serves (serially and concurrently, as Spin 4 reuses WASI 0.3 instances;
//! tests/README.md), keyed by URL. It holds nothing per request: only the last copy, when it was
//! fetched and when a fetch was last tried. A copy younger than `jwt_jwks_cache_seconds` is used as
//! it is. A token whose `kid` the copy does not know (the provider rotated its keys) triggers one
//! refetch. A fetch is tried at most once per [`FETCH_COOLDOWN`], so tokens with made-up kids
//! cannot turn into a flood of requests to the provider. When a fetch fails (unreachable, not 200,
//! not a JWKS), the previous copy keeps serving for up to [`STALE_LIMIT`] past its age limit;
//! without one, the request gets 503 with `Retry-After`: the token may be fine, it just cannot be
//! checked now.

use crate::settings;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::FullBody;
use spin_sdk::wasip3::http::types::RequestOptions;
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use todo_core::auth::jwks::Jwks;
use todo_core::auth::{AuthConfig, ConfigError, Refusal, check_subject};
use todo_core::error::ApiError;

/// How long one JWKS fetch may take (connect, first byte, between bytes).
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest JWKS read; providers publish a few keys, a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The least time between two fetches of one URL by one instance, and the `Retry-After` of a
/// 503 when none succeeded.
pub const FETCH_COOLDOWN: Duration = Duration::from_secs(5);
/// How long past its age limit a copy still serves while the JWKS cannot be fetched.
pub const STALE_LIMIT: Duration = Duration::from_secs(3600);

/// The configuration error this instance last logged. Instance-wide on purpose: it only keeps
/// the log from repeating the same reason for every request.
static REPORTED: Mutex<Option<ConfigError>> = Mutex::new(None);

/// The JWKS of each `jwt_jwks_url` this instance fetched (see the module docs).
static JWKS: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

#[derive(Default)]
struct Entry {
    /// The last copy fetched, and when.
    copy: Option<(Arc<Jwks>, Instant)>,
    /// When a fetch was last started.
    attempted: Option<Instant>,
    /// Whether the last fetch that ended failed.
    failed: bool,
}

impl Entry {
    fn fresh(&self, ttl: Duration) -> Option<Arc<Jwks>> {
        self.copy
            .as_ref()
            .filter(|(_, fetched)| fetched.elapsed() < ttl)
            .map(|(jwks, _)| jwks.clone())
    }

    fn usable(&self, ttl: Duration) -> Option<Arc<Jwks>> {
        self.copy
            .as_ref()
            .filter(|(_, fetched)| fetched.elapsed() < ttl.saturating_add(STALE_LIMIT))
            .map(|(jwks, _)| jwks.clone())
    }

    fn cooling(&self) -> bool {
        self.attempted
            .is_some_and(|at| at.elapsed() < FETCH_COOLDOWN)
    }
}

fn cache() -> MutexGuard<'static, BTreeMap<String, Entry>> {
    JWKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The token verifier of one request, built from [`settings::Auth`].
#[derive(Debug)]
pub struct Verifier {
    config: AuthConfig,
    ttl: Duration,
}

impl Verifier {
    /// Reads the auth variables. A refused configuration is an internal error whose reason is
    /// logged the first time this instance meets it and never sent to the client.
    pub async fn load() -> Result<Self, ApiError> {
        let settings = settings::Auth::load().await?;
        let config = AuthConfig::new(&settings.vars()).map_err(refuse)?;
        let ttl = settings.cache_ttl().map_err(refuse)?;
        Ok(Self { config, ttl })
    }

    /// Checks the `Authorization` header against the user the path names: 401 for a missing or
    /// invalid token, 403 for another user's, 503 when the JWKS it needs cannot be fetched.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        user_id: &str,
    ) -> Result<(), ApiError> {
        if !self.config.enabled {
            return Ok(());
        }
        let bearer = self.config.bearer(authorization)?;
        let subject = match self.config.jwks_url_for(&bearer) {
            None => self.config.verify(&bearer, None)?,
            Some(url) => {
                let jwks = current(url, self.ttl).await?;
                match self.config.verify(&bearer, Some(&jwks)) {
                    Err(Refusal::UnknownKey(error)) => match newer(url, self.ttl, &jwks).await? {
                        Some(newer) => self.config.verify(&bearer, Some(&newer))?,
                        None => return Err(error),
                    },
                    verified => verified?,
                }
            }
        };
        check_subject(&subject, user_id)
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

fn unavailable() -> ApiError {
    ApiError::VerificationUnavailable {
        detail: "the identity provider's signing keys (JWKS) cannot be fetched right now, so \
                 the token cannot be checked; retry later"
            .to_owned(),
        retry_after: u32::try_from(FETCH_COOLDOWN.as_secs()).unwrap_or(u32::MAX),
    }
}

/// The JWKS at `url`: this instance's copy while younger than `ttl`, else fetched anew.
async fn current(url: &str, ttl: Duration) -> Result<Arc<Jwks>, ApiError> {
    {
        let mut cache = cache();
        let entry = cache.entry(url.to_owned()).or_default();
        if let Some(jwks) = entry.fresh(ttl) {
            return Ok(jwks);
        }
        if entry.cooling() {
            // A fetch is under way or just failed: an older copy serves meanwhile. Without
            // one, a failure is remembered for the cooldown; a fetch under way is joined by
            // fetching too (instances start with an empty cache and several requests).
            if let Some(jwks) = entry.usable(ttl) {
                return Ok(jwks);
            }
            if entry.failed {
                return Err(unavailable());
            }
        }
        entry.attempted = Some(Instant::now());
    }
    fetch_and_keep(url, ttl).await
}

/// After a token's `kid` was not in `seen`: a copy fetched since, fetching one unless a fetch
/// was tried within the cooldown (`None` then: the 401 stands).
async fn newer(url: &str, ttl: Duration, seen: &Arc<Jwks>) -> Result<Option<Arc<Jwks>>, ApiError> {
    {
        let mut cache = cache();
        let entry = cache.entry(url.to_owned()).or_default();
        if let Some((jwks, _)) = &entry.copy
            && !Arc::ptr_eq(jwks, seen)
        {
            return Ok(Some(jwks.clone()));
        }
        if entry.cooling() {
            return Ok(None);
        }
        entry.attempted = Some(Instant::now());
    }
    fetch_and_keep(url, ttl).await.map(Some)
}

/// Fetches the JWKS and keeps it; on failure logs why, and falls back to a usable older copy.
async fn fetch_and_keep(url: &str, ttl: Duration) -> Result<Arc<Jwks>, ApiError> {
    let fetched = fetch(url).await;
    let mut cache = cache();
    let entry = cache.entry(url.to_owned()).or_default();
    match fetched {
        Ok(jwks) => {
            let jwks = Arc::new(jwks);
            entry.copy = Some((jwks.clone(), Instant::now()));
            entry.failed = false;
            Ok(jwks)
        }
        Err(why) => {
            entry.failed = true;
            match entry.usable(ttl) {
                Some(jwks) => {
                    eprintln!("JWKS {url}: {why}; the previous copy serves meanwhile");
                    Ok(jwks)
                }
                None => {
                    eprintln!("JWKS {url}: {why}; tokens cannot be verified (503)");
                    Err(unavailable())
                }
            }
        }
    }
}

/// GETs and parses the JWKS; the error says why in words for the log.
async fn fetch(url: &str) -> Result<Jwks, String> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::ACCEPT, "application/jwk-set+json, application/json")
        .body(FullBody::new(Bytes::new()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let options = RequestOptions::new();
    let nanos = u64::try_from(FETCH_TIMEOUT.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    request
        .extensions_mut()
        .insert(RequestOptionsExtension(options));
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("the request failed ({e:?})"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body failed ({e})"))?
        .to_bytes();
    Jwks::parse(&body).map_err(|e| e.to_string())
}
