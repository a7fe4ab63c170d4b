//! Bearer tokens through the host: claims (`nbf`, `aud`, `iss`), unsafe secrets, and tokens
//! signed with asymmetric keys published as a JWKS, inline or fetched from a loopback server
//! that each test starts (keys are generated in the test; nothing leaves the machine).

use crate::helpers::{JWT_SECRET, TestApp, TestResponse, spawn_app, spawn_app_with, unused_port};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rand::rngs::OsRng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use todo_test_host::ReuseConfig;
use todo_test_host::testing::Runtime;
use tokio::net::TcpListener;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An HS256 token for `sub`, valid for ten minutes, with `extra` claims added or replaced.
fn hs256_token(sub: &str, extra: Value) -> String {
    hs256_token_with(JWT_SECRET, sub, extra)
}

fn hs256_token_with(secret: &str, sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": now() + 600 });
    for (name, value) in extra.as_object().expect("claims are an object") {
        claims[name] = value.clone();
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

/// `GET` the user's task list with `token`.
async fn list_with(app: &TestApp, token: &str) -> TestResponse {
    settle().await;
    let auth = format!("Bearer {token}");
    app.send(
        Method::GET,
        &app.tasks_path(),
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// Gives the instance that answered the last request time to take the next one. The host
/// (like Spin) starts another instance for a request that arrives while none is free, and the
/// JWKS tests count fetches per instance.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf_and_accepted_from_it() {
    let app = spawn_app().await;

    let early = list_with(&app, &hs256_token(&app.user, json!({ "nbf": now() + 600 }))).await;
    let problem = early.problem(401);
    assert_eq!(problem["detail"], "the token is not valid yet (nbf)");
    assert_eq!(early.header("www-authenticate"), Some("Bearer"));

    let valid = list_with(&app, &hs256_token(&app.user, json!({ "nbf": now() - 5 }))).await;
    assert_eq!(valid.status.as_u16(), 200, "{:?}", valid.body);
}

#[tokio::test]
async fn a_token_naming_an_audience_and_issuer_is_accepted_when_none_is_configured() {
    let app = spawn_app().await;
    for extra in [
        json!({ "aud": "todo-web" }),
        json!({ "aud": ["todo-web", "account"] }),
        json!({ "iss": "https://auth.example.com", "aud": "todo-web" }),
    ] {
        let response = list_with(&app, &hs256_token(&app.user, extra.clone())).await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "{extra}: {}",
            String::from_utf8_lossy(&response.body)
        );
    }
}

#[tokio::test]
async fn a_configured_audience_and_issuer_must_be_the_tokens() {
    let app = spawn_app_with(
        vars(&[
            ("jwt_audience", "todo-api, todo-web"),
            ("jwt_issuer", "https://auth.example.com"),
        ]),
        ReuseConfig::default(),
    )
    .await;
    let iss = "https://auth.example.com";

    for extra in [
        json!({ "aud": "todo-api", "iss": iss }),
        json!({ "aud": ["account", "todo-web"], "iss": iss }),
    ] {
        let response = list_with(&app, &hs256_token(&app.user, extra.clone())).await;
        assert_eq!(response.status.as_u16(), 200, "{extra}");
    }

    let cases = [
        (
            "another audience",
            json!({ "aud": "billing", "iss": iss }),
            "the token is not meant for this API (aud)",
        ),
        (
            "no audience",
            json!({ "iss": iss }),
            "the token lacks the aud claim",
        ),
        (
            "another issuer",
            json!({ "aud": "todo-api", "iss": "https://evil.example.com" }),
            "the token comes from an unexpected issuer (iss)",
        ),
        (
            "no issuer",
            json!({ "aud": "todo-api" }),
            "the token lacks the iss claim",
        ),
    ];
    for (name, extra, detail) in cases {
        let response = list_with(&app, &hs256_token(&app.user, extra)).await;
        assert_eq!(response.problem(401)["detail"], detail, "{name}");
    }
    assert!(app.task_rows().await.is_empty());
}

#[tokio::test]
async fn an_unsafe_jwt_secret_answers_every_request_with_a_bare_500() {
    let secrets = [
        "local-dev-secret-change-me",
        "CHANGE-ME",
        "short-but-random-Xq7",
        "0123456789abcdef0123456789abcdef-Change-Me",
    ];
    for secret in secrets {
        let app = spawn_app_with(vars(&[("jwt_secret", secret)]), ReuseConfig::default()).await;
        let auth = format!("Bearer {}", hs256_token_with(secret, &app.user, json!({})));
        let requests = [
            (Method::GET, app.tasks_path(), Some(auth.clone())),
            (Method::POST, app.tasks_path(), Some(auth.clone())),
            (Method::GET, app.tasks_path(), None),
            (Method::GET, "/api/nothing-here".to_owned(), None),
        ];
        for (method, path, authorization) in requests {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(authorization) = &authorization {
                headers.push(("authorization", authorization));
            }
            let response = app
                .send(method.clone(), &path, &headers, r#"{"title":"x"}"#)
                .await;
            let problem = response.problem(500);
            assert_eq!(
                problem["detail"], "an unexpected error occurred",
                "{secret} {method} {path}"
            );
            let body = String::from_utf8_lossy(&response.body).to_lowercase();
            for hint in ["jwt", "secret", "change", "bytes", "placeholder"] {
                assert!(!body.contains(hint), "{secret}: {hint} in {body}");
            }
        }
        assert!(
            app.task_rows().await.is_empty(),
            "{secret}: nothing written"
        );
    }
}

#[tokio::test]
async fn an_unsafe_jwt_secret_does_not_matter_with_auth_switched_off() {
    let app = spawn_app_with(
        vars(&[("jwt_secret", "CHANGE-ME"), ("auth_enabled", "false")]),
        ReuseConfig::default(),
    )
    .await;
    let response = app.send(Method::GET, &app.tasks_path(), &[], "").await;
    assert_eq!(response.status.as_u16(), 200);
}

// ---------------------------------------------------------------------------------------------
// Asymmetric keys and JWKS
// ---------------------------------------------------------------------------------------------

/// The instance-level JWKS refetch limit of `todo_adapters::auth` (`FETCH_COOLDOWN`), and the
/// `Retry-After` of its 503.
const COOLDOWN: Duration = Duration::from_secs(5);

/// A signing key generated for the test and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// PKCS#1 DER of one of two RSA keys, generated once per test binary (RSA generation is slow).
fn rsa_der(which: usize) -> &'static [u8] {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    static KEYS: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[which].get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("an RSA key");
        key.to_pkcs1_der().expect("DER").as_bytes().to_vec()
    })
}

impl TestKey {
    /// RS256 with RSA key `which` (0 or 1); ES256 and EdDSA keys are fresh every time.
    fn new(alg: Algorithm, kid: &str, which: usize) -> Self {
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => {
                let encoding = EncodingKey::from_rsa_der(rsa_der(which));
                let jwk =
                    serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("JWK"))
                        .expect("JSON");
                (encoding, jwk)
            }
            Algorithm::ES256 => {
                use p256::pkcs8::EncodePrivateKey;
                let key = p256::SecretKey::random(&mut OsRng);
                let encoding =
                    EncodingKey::from_ec_der(key.to_pkcs8_der().expect("DER").as_bytes());
                let jwk =
                    serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("JWK"))
                        .expect("JSON");
                (encoding, jwk)
            }
            Algorithm::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                let encoding =
                    EncodingKey::from_ed_der(key.to_pkcs8_der().expect("DER").as_bytes());
                let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
                (
                    encoding,
                    json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x}),
                )
            }
            other => panic!("no test key for {other:?}"),
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// A token for `sub`, valid for ten minutes, with this key's `kid`.
    fn token(&self, sub: &str) -> String {
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(self.alg)
        };
        encode(
            &header,
            &json!({ "sub": sub, "exp": now() + 600 }),
            &self.encoding,
        )
        .expect("sign a token")
    }
}

fn jwks_of(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// What the JWKS server answers, and how often it was asked.
struct Served {
    status: StatusCode,
    body: String,
    hits: usize,
}

/// A loopback HTTP server answering every request with the current [`Served`] document.
struct JwksServer {
    port: u16,
    served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let served = Arc::new(Mutex::new(Served {
            status: StatusCode::OK,
            body,
            hits: 0,
        }));
        let shared = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let shared = shared.clone();
                        async move {
                            let mut served = shared.lock().expect("lock");
                            served.hits += 1;
                            let mut response =
                                Response::new(Full::new(Bytes::from(served.body.clone())));
                            *response.status_mut() = served.status;
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().expect("value"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, served, task }
    }

    fn serve(&self, status: StatusCode, body: String) {
        let mut served = self.served.lock().expect("lock");
        served.status = status;
        served.body = body;
    }

    fn hits(&self) -> usize {
        self.served.lock().expect("lock").hits
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("{}/api/auth/jwks", self.origin())
    }
}

/// Instances kept while idle for the whole test, so that what one caches is what the next
/// request sees.
fn one_instance() -> ReuseConfig {
    ReuseConfig {
        idle_timeout: Duration::from_secs(120),
        ..ReuseConfig::default()
    }
}

/// The app verifying tokens against `url` (served from `origin`), plus `extra` variables. On
/// the host its instances stay for the whole test; on real Spin, Spin's own reuse applies.
async fn app_with_jwks_url(origin: &str, url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut variables = vars(&[("jwt_jwks_url", url), ("jwt_jwks_origin", origin)]);
    variables.extend(vars(extra));
    let reuse = match Runtime::from_env() {
        Runtime::Host => one_instance(),
        Runtime::Spin(_) => ReuseConfig::default(),
    };
    spawn_app_with(variables, reuse).await
}

#[track_caller]
fn assert_ok(response: &TestResponse, what: &str) {
    assert_eq!(
        response.status.as_u16(),
        200,
        "{what}: {}",
        String::from_utf8_lossy(&response.body)
    );
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_against_a_jwks_fetched_once_per_instance() {
    let keys = [
        TestKey::new(Algorithm::RS256, "rsa-1", 0),
        TestKey::new(Algorithm::ES256, "ec-1", 0),
        TestKey::new(Algorithm::EdDSA, "ed-1", 0),
    ];
    let server = JwksServer::start(jwks_of(&keys.iter().collect::<Vec<_>>())).await;
    let app = app_with_jwks_url(&server.origin(), &server.url(), &[]).await;

    for key in &keys {
        let response = list_with(&app, &key.token(&app.user)).await;
        assert_ok(&response, &format!("{:?}", key.alg));
        settle().await;
        let created = app
            .send(
                Method::POST,
                &app.tasks_path(),
                &[
                    ("authorization", &format!("Bearer {}", key.token(&app.user))),
                    ("content-type", "application/json"),
                ],
                format!(r#"{{"title":"signed with {:?}"}}"#, key.alg),
            )
            .await;
        assert_eq!(created.status.as_u16(), 201, "{:?}", key.alg);
        let other_user = list_with(&app, &key.token("mallory")).await;
        other_user.problem(403);
    }
    // HS256 with jwt_secret keeps working beside the JWKS.
    assert_ok(
        &list_with(&app, &hs256_token(&app.user, json!({}))).await,
        "HS256",
    );

    let titles: Vec<String> = app.task_rows().await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        titles,
        [
            "signed with RS256",
            "signed with ES256",
            "signed with EdDSA"
        ]
    );
    // How many instances served the requests is Spin's choice; on the host it is one.
    if app.host().is_some() {
        assert_eq!(server.hits(), 1, "one fetch serves every later request");
    }
}

#[tokio::test]
async fn an_inline_jwks_verifies_without_any_fetch() {
    let key = TestKey::new(Algorithm::EdDSA, "inline", 0);
    let jwks = jwks_of(&[&key]);
    let app = spawn_app_with(vars(&[("jwt_jwks", &jwks)]), ReuseConfig::default()).await;
    assert_ok(&list_with(&app, &key.token(&app.user)).await, "EdDSA");
    let unknown = TestKey::new(Algorithm::EdDSA, "unknown", 0);
    let problem = list_with(&app, &unknown.token(&app.user))
        .await
        .problem(401);
    assert_eq!(
        problem["detail"],
        "no signing key of the identity provider has the token's kid \"unknown\" and fits EdDSA"
    );
}

#[tokio::test]
async fn an_unreachable_or_broken_jwks_endpoint_answers_503_with_retry_after() {
    let key = TestKey::new(Algorithm::EdDSA, "ed", 0);
    let down = format!("http://127.0.0.1:{}", unused_port());
    let broken = JwksServer::start(String::new()).await;
    let cases = [
        ("connection refused", None),
        (
            "500",
            Some((StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned())),
        ),
        (
            "html",
            Some((StatusCode::OK, "<html>login</html>".to_owned())),
        ),
        (
            "empty set",
            Some((StatusCode::OK, r#"{"keys":[]}"#.to_owned())),
        ),
        (
            "only a secret key",
            Some((
                StatusCode::OK,
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned(),
            )),
        ),
    ];
    let mut last = None;
    for (name, answer) in cases {
        let (origin, url) = match &answer {
            None => (down.clone(), format!("{down}/jwks")),
            Some((status, body)) => {
                broken.serve(*status, body.clone());
                (broken.origin(), broken.url())
            }
        };
        let app = app_with_jwks_url(&origin, &url, &[]).await;
        let auth = format!("Bearer {}", key.token(&app.user));
        settle().await;
        let response = app
            .send(
                Method::POST,
                &app.tasks_path(),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                r#"{"title":"unverifiable"}"#,
            )
            .await;
        let problem = response.problem(503);
        assert_eq!(response.header("retry-after"), Some("5"), "{name}");
        assert_eq!(
            problem["detail"],
            "the identity provider's signing keys (JWKS) cannot be fetched right now, so the \
             token cannot be checked; retry later",
            "{name}"
        );
        // The failure is remembered for the cooldown: the next request does not fetch.
        let hits = broken.hits();
        list_with(&app, &key.token(&app.user)).await.problem(503);
        assert_eq!(broken.hits(), hits, "{name}");
        // Tokens that need no JWKS are unaffected.
        assert_ok(
            &list_with(&app, &hs256_token(&app.user, json!({}))).await,
            name,
        );
        assert!(app.task_rows().await.is_empty(), "{name}: nothing written");
        last = Some(app);
    }

    // Once the endpoint answers again, the first request after the cooldown fetches and passes.
    let app = last.expect("the last case's app");
    broken.serve(StatusCode::OK, jwks_of(&[&key]));
    tokio::time::sleep(COOLDOWN + Duration::from_millis(300)).await;
    assert_ok(&list_with(&app, &key.token(&app.user)).await, "recovered");
}

#[tokio::test]
async fn forged_algorithms_are_refused() {
    let key = TestKey::new(Algorithm::RS256, "rsa", 0);
    let server = JwksServer::start(jwks_of(&[&key])).await;
    // HS256 accepted too (jwt_secret is set), and JWKS only.
    let both = app_with_jwks_url(&server.origin(), &server.url(), &[]).await;
    let jwks_only = app_with_jwks_url(&server.origin(), &server.url(), &[("jwt_secret", "")]).await;

    let n = URL_SAFE_NO_PAD
        .decode(key.jwk["n"].as_str().expect("n"))
        .expect("base64url");
    let hs256_with_public_key = |sub: &str, public: &[u8]| {
        let header = Header {
            kid: Some("rsa".to_owned()),
            ..Header::new(Algorithm::HS256)
        };
        encode(
            &header,
            &json!({ "sub": sub, "exp": now() + 600 }),
            &EncodingKey::from_secret(public),
        )
        .expect("sign")
    };
    let none = |sub: &str| {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(json!({ "sub": sub, "exp": now() + 600 }).to_string())
        )
    };
    for public in [n, jwks_of(&[&key]).into_bytes()] {
        let problem = list_with(&both, &hs256_with_public_key(&both.user, &public))
            .await
            .problem(401);
        assert_eq!(problem["detail"], "the token signature is invalid");
        let problem = list_with(&jwks_only, &hs256_with_public_key(&jwks_only.user, &public))
            .await
            .problem(401);
        assert_eq!(
            problem["detail"],
            "the token's algorithm \"HS256\" is not accepted; this API accepts RS256, ES256, EdDSA"
        );
    }
    let problem = list_with(&both, &none(&both.user)).await.problem(401);
    assert_eq!(
        problem["detail"],
        "the token's algorithm \"none\" is not accepted; this API accepts HS256, RS256, ES256, EdDSA"
    );
    assert_ok(
        &list_with(&jwks_only, &key.token(&jwks_only.user)).await,
        "RS256",
    );
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused() {
    for alg in [Algorithm::RS256, Algorithm::EdDSA] {
        let published = TestKey::new(alg, "signing", 0);
        let other = TestKey::new(alg, "signing", 1);
        let server = JwksServer::start(jwks_of(&[&published])).await;
        let app = app_with_jwks_url(&server.origin(), &server.url(), &[]).await;
        let problem = list_with(&app, &other.token(&app.user)).await.problem(401);
        assert_eq!(
            problem["detail"], "the token signature is invalid",
            "{alg:?}"
        );
        assert_ok(
            &list_with(&app, &published.token(&app.user)).await,
            &format!("published {alg:?} key"),
        );
    }
}

#[tokio::test]
async fn an_algorithm_outside_jwt_algorithms_is_refused() {
    let ec = TestKey::new(Algorithm::ES256, "ec", 0);
    let ed = TestKey::new(Algorithm::EdDSA, "ed", 0);
    let server = JwksServer::start(jwks_of(&[&ec, &ed])).await;
    let app = app_with_jwks_url(
        &server.origin(),
        &server.url(),
        &[("jwt_algorithms", "EdDSA")],
    )
    .await;
    for (name, token, alg) in [
        ("ES256", ec.token(&app.user), "ES256"),
        ("HS256", hs256_token(&app.user, json!({})), "HS256"),
    ] {
        let problem = list_with(&app, &token).await.problem(401);
        assert_eq!(
            problem["detail"],
            format!("the token's algorithm \"{alg}\" is not accepted; this API accepts EdDSA"),
            "{name}"
        );
    }
    assert_ok(&list_with(&app, &ed.token(&app.user)).await, "EdDSA");
}

#[tokio::test]
async fn a_jwks_url_spin_would_not_allow_is_a_bare_500() {
    let server = JwksServer::start(String::new()).await;
    // jwt_jwks_origin left at its default: Spin would refuse every fetch.
    let app = spawn_app_with(
        vars(&[("jwt_jwks_url", &server.url())]),
        ReuseConfig::default(),
    )
    .await;
    let key = TestKey::new(Algorithm::EdDSA, "ed", 0);
    let problem = list_with(&app, &key.token(&app.user)).await.problem(500);
    assert_eq!(problem["detail"], "an unexpected error occurred");
    assert_eq!(server.hits(), 0);
}

/// What a JWKS cache does over several requests depends on those requests meeting the same
/// instance, which only the host's reuse limits guarantee; real Spin retires idle instances by
/// its own rules.
mod host_only {
    use super::*;

    #[tokio::test]
    async fn an_unknown_kid_refetches_the_jwks_once_and_is_refused() {
        let key = TestKey::new(Algorithm::ES256, "known", 0);
        let server = JwksServer::start(jwks_of(&[&key])).await;
        let app = app_with_jwks_url(&server.origin(), &server.url(), &[]).await;
        let stranger = TestKey::new(Algorithm::ES256, "made-up", 0);

        assert_ok(&list_with(&app, &key.token(&app.user)).await, "known kid");
        assert_eq!(server.hits(), 1);

        // Just fetched: an unknown kid does not fetch again within the cooldown.
        let problem = list_with(&app, &stranger.token(&app.user))
            .await
            .problem(401);
        assert_eq!(
            problem["detail"],
            "no signing key of the identity provider has the token's kid \"made-up\" and fits ES256"
        );
        assert_eq!(server.hits(), 1);

        // After it, one refetch; the kid is still unknown, so 401 again, and no more fetches.
        tokio::time::sleep(COOLDOWN + Duration::from_millis(300)).await;
        list_with(&app, &stranger.token(&app.user))
            .await
            .problem(401);
        assert_eq!(server.hits(), 2);
        for _ in 0..5 {
            list_with(&app, &stranger.token(&app.user))
                .await
                .problem(401);
        }
        assert_eq!(
            server.hits(),
            2,
            "made-up kids cannot make the app flood the provider"
        );
        assert_ok(&list_with(&app, &key.token(&app.user)).await, "known kid");
    }

    #[tokio::test]
    async fn a_rotated_key_is_accepted_after_the_refetch_and_the_removed_one_refused() {
        let old = TestKey::new(Algorithm::RS256, "2026-11", 0);
        let new = TestKey::new(Algorithm::RS256, "2026-12", 1);
        let server = JwksServer::start(jwks_of(&[&old])).await;
        let app = app_with_jwks_url(&server.origin(), &server.url(), &[]).await;
        assert_ok(&list_with(&app, &old.token(&app.user)).await, "old key");

        // The provider rotates: the new key replaces the old one.
        server.serve(StatusCode::OK, jwks_of(&[&new]));
        tokio::time::sleep(COOLDOWN + Duration::from_millis(300)).await;

        assert_ok(
            &list_with(&app, &new.token(&app.user)).await,
            "new key after the refetch",
        );
        assert_eq!(server.hits(), 2);
        let problem = list_with(&app, &old.token(&app.user)).await.problem(401);
        assert_eq!(
            problem["detail"],
            "no signing key of the identity provider has the token's kid \"2026-11\" and fits RS256"
        );
        assert_ok(
            &list_with(&app, &new.token(&app.user)).await,
            "new key, cached",
        );
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn the_previous_jwks_serves_while_the_endpoint_is_down() {
        let key = TestKey::new(Algorithm::ES256, "ec", 0);
        let server = JwksServer::start(jwks_of(&[&key])).await;
        let app = app_with_jwks_url(
            &server.origin(),
            &server.url(),
            &[("jwt_jwks_cache_seconds", "1")],
        )
        .await;
        assert_ok(&list_with(&app, &key.token(&app.user)).await, "fetched");

        // Expired (1 s) and past the cooldown, the copy is refreshed: that fails, so it serves on.
        server.serve(StatusCode::BAD_GATEWAY, "upstream down".to_owned());
        tokio::time::sleep(COOLDOWN + Duration::from_millis(300)).await;
        assert_ok(&list_with(&app, &key.token(&app.user)).await, "stale copy");
        assert_eq!(
            server.hits(),
            2,
            "the expired copy was refreshed, unsuccessfully"
        );
    }
}
