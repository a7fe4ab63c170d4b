//! Pure domain logic of todo-spin.
//!
//! Nothing here performs I/O or depends on spin-sdk: the Spin components turn requests into
//! calls on this crate and carry out the SQL it builds. That keeps the rules testable natively
//! and in milliseconds.

pub mod auth;
pub mod error;
pub mod events;
pub mod intake;
pub mod openapi;
pub mod outbox;
pub mod prefer;
pub mod recurrence;
pub mod reminders;
pub mod series;
pub mod sidecar;
pub mod sql;
pub mod subscriptions;
pub mod tasks;
pub mod validation;
