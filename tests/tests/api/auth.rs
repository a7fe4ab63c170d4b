//! Bearer tokens through the host: claims (`nbf`, `aud`, `iss`) and unsafe secrets.

use crate::helpers::{JWT_SECRET, TestApp, spawn_app, spawn_app_with};
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::collections::HashMap;
use todo_test_host::ReuseConfig;

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
async fn list_with(app: &TestApp, token: &str) -> crate::helpers::TestResponse {
    let auth = format!("Bearer {token}");
    app.send(
        Method::GET,
        &app.tasks_path(),
        &[("authorization", &auth)],
        "",
    )
    .await
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
