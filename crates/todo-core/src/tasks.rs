//! Tasks: the domain model, request parsing, reminders, list queries, the write rules and
//! their SQL.
//!
//! A new writable field of a task is added in these places, and no others:
//! - a migration adding the column (and its line in `k8s/base/kustomization.yaml`, which CI
//!   compares with `migrations/`);
//! - its column in `store::STORED` and its read in `store::decode`;
//! - its field in `Task` and `TaskChanges` and its validation (`model`), its parse and its
//!   name in `input::WRITABLE` (`input`);
//! - its JSON in `events::wire::TaskJson` and `schemas/task.json`, its name in the
//!   `changed_fields` enum of `schemas/task.updated.json`, and `openapi.json` regenerated
//!   (`UPDATE_OPENAPI=1 cargo test -p todo-core openapi`);
//! - its value in the every-field patch of `tests/event_schemas.rs`, which fails until
//!   `WRITABLE`, the names `Task::apply` reports and that enum agree;
//! - a word for readers in README's "API" section, which lists the fields.
//!
//! `Task::create`, the next occurrence of a series (`series::next_occurrence`) and the request
//! body schemas follow by themselves; a field that a request sends differently from how a
//! read task shows it gets a line in `openapi::schemas::input_differences`, and one that must
//! not carry over to the next occurrence a line in `next_occurrence`.

pub mod idempotency;
pub mod input;
pub mod list;
pub mod model;
pub mod reminder;
pub mod routes;
pub mod store;
pub mod time;
pub mod write;

pub use input::{parse_complete, parse_create, parse_patch, parse_replace};
pub use list::{ListQuery, Page};
pub use model::{Priority, Task, TaskChanges, UserId};
pub use reminder::Reminder;
