//! A host that runs this app's Spin components the way Spin 4 does, for the integration tests,
//! local runs (`todo-host`) and benchmarks.
//!
//! It reads `spin.toml` (routes, variables, `allowed_outbound_hosts`), reuses component instances
//! like `spin up` does for WASI 0.3 components, adds Spin's request headers, limits outbound HTTP
//! and Postgres to the allowed hosts, and implements `spin:postgres@4.2.0` and
//! `spin:variables@3.0.0` with Spin's semantics. tests/README.md lists which module mirrors which
//! part of Spin.

pub mod allowed_hosts;
pub mod app;
pub mod calls;
pub mod dapr;
mod host;
pub mod manifest;
pub mod native_sql;
mod outbound;
mod postgres;
pub mod router;
pub mod runtime_config;
pub mod testing;
pub mod variables;

pub use app::{App, ReuseConfig};
pub use calls::HostCalls;

/// Host bindings for the Spin interfaces, generated from the WIT in `tests/wit`.
#[allow(
    dead_code,
    reason = "bindgen also generates helpers to instantiate the world, which only guests export"
)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "todo:test-host/spin-imports",
        imports: { default: async | trappable },
        additional_derives: [PartialEq],
        with: {
            "spin:postgres/postgres.connection": crate::postgres::PgConnection,
            "spin:postgres/postgres.connection-builder": crate::postgres::PgConnectionBuilder,
        },
    });
}
