//! Integration tests: real HTTP requests through the test host to the compiled components,
//! against a real PostgreSQL server and the Dapr sidecar double.
//!
//! Run through `scripts/test.sh`, which builds the components and starts PostgreSQL; it
//! exports `TEST_DATABASE_URL` (server) and `TEST_TEMPLATE_DB` (a database with migrations).

mod auth;
mod delivery;
mod events;
mod helpers;
mod intake;
mod openapi;
mod outbox;
mod plans;
mod reminders;
mod tasks;
mod wire;
