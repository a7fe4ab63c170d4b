//! Tasks: the domain model, request parsing, reminders, list queries, the write rules and
//! their SQL.

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
