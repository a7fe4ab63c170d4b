//! Tasks: the domain model, request parsing, list queries and their SQL.

pub mod input;
pub mod list;
pub mod model;
pub mod store;
pub mod time;

pub use input::{TaskChanges, parse_complete, parse_create, parse_patch, parse_replace};
pub use list::{ListQuery, Page};
pub use model::{Priority, Task, TaskRow, UserId};
