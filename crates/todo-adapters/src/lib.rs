//! Spin-side plumbing shared by the components: the PostgreSQL adapter, publishing to the Dapr
//! sidecar, reading the settings and request bodies, and rendering responses.
//!
//! Domain rules stay in `todo-core`; this crate only moves bytes between Spin and the core.

pub mod auth;
pub mod binding;
pub mod db;
pub mod headers;
pub mod pool;
pub mod publish;
pub mod reply;
pub mod settings;
pub mod sidecar;
mod vars;
