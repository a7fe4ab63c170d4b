//! The harness of `todo_test_host::testing`, as these tests use it.
//!
//! One database per test binary (cloned from the migrated template); each test works as its
//! own fresh user, which every statement is scoped by, so tests run in parallel without
//! seeing each other. Tests that run the relay or the sweep take a database of their own.

pub use todo_test_host::testing::{
    JWT_SECRET, TestApp, TestResponse, connect, database, new_user, own_database, spawn_app,
    spawn_app_with, spawn_app_with_own_database, spawn_app_with_var, token_for, unused_port,
};
