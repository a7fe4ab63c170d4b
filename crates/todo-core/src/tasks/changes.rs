//! Validated changes to a task: what a request body (`tasks::input`) or a rule (the complete
//! toggle) asks for, applied by `Task::apply`. A value type, so the task can use it without
//! depending on the request parser.

use crate::recurrence::Recurrence;
use crate::tasks::model::Priority;
use crate::tasks::reminder::Reminder;
use chrono::{DateTime, Utc};

/// Validated changes to a task. `None` leaves a field as it is; for optional fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChanges {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
    pub priority: Option<Priority>,
    pub tags: Option<Vec<String>>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub reminder: Option<Option<Reminder>>,
    pub recurrence: Option<Option<Recurrence>>,
}
