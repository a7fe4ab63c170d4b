//! The API's contract: `GET /api/openapi.json` serves the committed `openapi.json`, without a
//! token (schemathesis checks the API against it: scripts/contract.sh).

use crate::helpers::spawn_app;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use todo_test_host::testing::repo_root;

#[tokio::test]
async fn the_document_is_served_without_a_token_and_equals_openapi_json() {
    let app = spawn_app().await;
    let response = app
        .send(Method::GET, "/api/openapi.json", &[], Bytes::new())
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let committed = std::fs::read(repo_root().join("openapi.json")).expect("openapi.json");
    assert!(
        response.body == committed,
        "the served document differs from openapi.json"
    );
    let doc: Value = response.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/{user_id}/tasks/{id}"]["patch"].is_object());
}

#[tokio::test]
async fn the_document_answers_get_only() {
    let app = spawn_app().await;
    let response = app
        .send(Method::POST, "/api/openapi.json", &[], Bytes::new())
        .await;
    let problem = response.problem(405);
    assert_eq!(response.header("allow"), Some("GET"));
    assert_eq!(problem["instance"], "/api/openapi.json");
}
