//! The harness both integration test binaries use: the app under test on either runtime, the
//! Dapr sidecar double in front of it, a database cloned from the migrated template, bearer
//! tokens, and typed calls.
//!
//! The runtime is the test host unless `TEST_RUNTIME=spin`, which starts the real Spin CLI
//! (`SPIN_BIN`, else `spin` on `PATH`) with `spin up` for every app a test spawns, with the same
//! variables (see [`Runtime`]). Tests that need controls only the host has (instance reuse
//! limits, in-process access) live in modules named `host_only`, which `scripts/test.sh`
//! skips on Spin.

mod app;
mod database;
mod fresh;
mod spin;

pub use app::{
    APP_TOKEN, JWT_SECRET, TestApp, TestResponse, spawn_app, spawn_app_on, spawn_app_with,
    spawn_app_with_own_database, spawn_app_with_var,
};
pub use database::{connect, database, own_database, server_url, template};
pub use spin::{Runtime, SpinApp};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

/// The repository's root, where `spin.toml` is.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A user id no other test uses: every statement is scoped by user, so tests sharing a
/// database do not see each other.
pub fn new_user() -> String {
    format!("user-{}", Uuid::now_v7().simple())
}

/// A loopback port nothing listens on: connecting to it is refused, as to a stopped server.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// An HS256 token for `sub`, expiring in `expires_in` seconds, signed with `secret`.
pub fn token_for(sub: &str, expires_in: i64, secret: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + expires_in;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}
