//! The task API's writes as pure rules: create, update (patch, replace, the complete toggle)
//! and delete each decide from the task as read what to write, and return the statement with
//! the events it stores. The component loads the task, runs the statement, and loads again
//! and retries when the statement touched nothing: another write got there first
//! (`store::update` and `store::delete` are conditional on the version read).

use crate::error::ApiError;
use crate::events::Topics;
use crate::outbox::{OutboxRow, WriteClaim};
use crate::sql::Statement;
use crate::tasks::idempotency::{self, Answer};
use crate::tasks::model::{Task, TaskChanges, UserId};
use crate::tasks::store;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How often a write reads the task again and retries when it changed in between.
pub const WRITE_ATTEMPTS: usize = 3;

/// A new task and the events its creation stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub task: Task,
    pub events: Vec<OutboxRow>,
}

impl Created {
    /// The insert with its events (and `claim`, see `outbox::WriteClaim`); returns one count,
    /// 1.
    pub fn statement(&self, claim: Option<&WriteClaim>) -> Statement {
        store::insert(&self.task, &self.events, claim)
    }

    /// The insert under an `Idempotency-Key`: it writes only if it claims the key
    /// (`tasks::idempotency`); returns one count, 1 or 0.
    pub fn statement_once(&self, answer: &Answer<'_>, claim: Option<&WriteClaim>) -> Statement {
        idempotency::insert_once(&self.task, &self.events, answer, claim)
    }
}

/// A task write to carry out: the task as it leaves it (the task deleted, for a delete), the
/// events it stores, and the statement doing both. The statement returns one count: 1 when it
/// took effect, 0 when the task changed since it was read (then read again and retry).
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub task: Task,
    pub events: Vec<OutboxRow>,
    pub statement: Statement,
}

/// What an update asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// PUT and PATCH: the fields of the body.
    Fields(TaskChanges),
    /// The complete endpoint: set completion, or with `None` toggle it.
    Complete(Option<bool>),
}

impl Change {
    /// The changes this asks of `current`.
    pub fn changes_for(&self, current: &Task) -> TaskChanges {
        match self {
            Change::Fields(changes) => changes.clone(),
            Change::Complete(set) => TaskChanges {
                completed: Some(set.unwrap_or(!current.completed)),
                ..TaskChanges::default()
            },
        }
    }
}

/// The outcome of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Nothing changes: nothing is written, and the task is answered as it is.
    Unchanged,
    Write(Box<Write>),
}

/// A new task of `user` from the validated body of a create, with its events.
pub fn create(
    id: Uuid,
    user: &UserId,
    changes: TaskChanges,
    now: DateTime<Utc>,
    topics: &Topics,
) -> Created {
    let task = Task::create(id, user, changes, now);
    let events = topics.created(&task, now);
    Created { task, events }
}

/// Applies `change` to `current`, the task as read, under the request's `If-Match`. A change
/// that changes nothing writes nothing; one that leaves a reminder without the due time it
/// needs (a PATCH clearing `due_at`) is a 422. The statement takes `claim` with its events.
pub fn update(
    current: &Task,
    if_match: Option<&str>,
    change: &Change,
    now: DateTime<Utc>,
    topics: &Topics,
    claim: Option<&WriteClaim>,
) -> Result<Update, ApiError> {
    check_if_match(if_match, current)?;
    let (next, changed) = current.apply(&change.changes_for(current), now);
    if changed.is_empty() {
        return Ok(Update::Unchanged);
    }
    next.check_reminder()?;
    let events = topics.changed(current, &next, &changed, now);
    let statement = store::update(&next, current.version, &events, claim);
    Ok(Update::Write(Box::new(Write {
        task: next,
        events,
        statement,
    })))
}

/// Deletes `current`, the task as read, under the request's `If-Match`; the statement takes
/// `claim` with its events.
pub fn delete(
    current: &Task,
    if_match: Option<&str>,
    now: DateTime<Utc>,
    topics: &Topics,
    claim: Option<&WriteClaim>,
) -> Result<Write, ApiError> {
    check_if_match(if_match, current)?;
    let events = topics.deleted(current, now);
    let statement = store::delete(current, current.version, &events, claim);
    Ok(Write {
        task: current.clone(),
        events,
        statement,
    })
}

/// RFC 9110 `If-Match`: `*` or a list of entity tags, one of which must be current.
pub fn check_if_match(if_match: Option<&str>, task: &Task) -> Result<(), ApiError> {
    let Some(if_match) = if_match else {
        return Ok(());
    };
    let etag = task.etag();
    let matches = if_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag);
    if matches {
        Ok(())
    } else {
        Err(ApiError::PreconditionFailed)
    }
}

/// The answer when the task kept changing through every attempt.
pub fn conflict() -> ApiError {
    ApiError::Conflict {
        detail: "the task kept changing while this request applied; retry".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlValue;
    use crate::tasks::reminder::Reminder;
    use crate::tasks::time::parse_utc;

    fn utc(text: &str) -> DateTime<Utc> {
        parse_utc(text).expect("valid")
    }

    fn topics() -> Topics {
        Topics::new(
            "/todo-spin/tasks".into(),
            "tasks".into(),
            "reminders".into(),
            None,
        )
    }

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    fn created(changes: TaskChanges) -> Created {
        let now = utc("2026-04-01T00:00:00Z");
        create(Uuid::now_v7(), &alice(), changes, now, &topics())
    }

    /// An open task due at 09:00 with a reminder 30 minutes before.
    fn reminded() -> Task {
        created(TaskChanges {
            title: Some("Dentist".into()),
            due_at: Some(Some(utc("2026-05-01T09:00:00Z"))),
            reminder: Some(Some(Reminder::Before(30))),
            ..TaskChanges::default()
        })
        .task
    }

    fn now() -> DateTime<Utc> {
        utc("2026-04-02T00:00:00Z")
    }

    /// Each event's type and topic, in order.
    fn kinds(events: &[OutboxRow]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let kind = e.event["type"].as_str().unwrap_or("").to_owned();
                (kind, e.topic.clone())
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, t)| ((*k).to_owned(), (*t).to_owned()))
            .collect()
    }

    fn written(update: Result<Update, ApiError>) -> Write {
        match update {
            Ok(Update::Write(write)) => *write,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn fields(changes: TaskChanges) -> Change {
        Change::Fields(changes)
    }

    #[test]
    fn a_create_emits_created_and_schedules_a_pending_reminder() {
        let plain = created(TaskChanges {
            title: Some("Plain".into()),
            ..TaskChanges::default()
        });
        assert_eq!(kinds(&plain.events), pairs(&[("task.created", "tasks")]));
        assert_eq!(plain.task.version, 1);
        let statement = plain.statement(None);
        assert!(
            statement
                .sql
                .starts_with("with written as (insert into tasks")
        );
        assert_eq!(statement.params[0], SqlValue::Uuid(plain.task.id));

        let reminded = created(TaskChanges {
            title: Some("Dentist".into()),
            due_at: Some(Some(utc("2026-05-01T09:00:00Z"))),
            reminder: Some(Some(Reminder::Before(30))),
            ..TaskChanges::default()
        });
        assert_eq!(
            kinds(&reminded.events),
            pairs(&[
                ("task.created", "tasks"),
                ("reminder.scheduled", "reminders")
            ])
        );
    }

    #[test]
    fn the_complete_endpoint_toggles_or_sets() {
        let open = reminded();
        let done = written(update(
            &open,
            None,
            &Change::Complete(None),
            now(),
            &topics(),
            None,
        ));
        assert!(done.task.completed, "an open task toggles to completed");
        assert_eq!(done.task.completed_at, Some(now()));
        let reopened = written(update(
            &done.task,
            None,
            &Change::Complete(None),
            now(),
            &topics(),
            None,
        ));
        assert!(!reopened.task.completed, "a completed task toggles back");
        assert_eq!(
            update(
                &done.task,
                None,
                &Change::Complete(Some(true)),
                now(),
                &topics(),
                None
            ),
            Ok(Update::Unchanged),
            "setting what is already so writes nothing"
        );
    }

    #[test]
    fn a_change_that_changes_nothing_writes_nothing() {
        let task = reminded();
        let same = fields(TaskChanges {
            title: Some("Dentist".into()),
            reminder: Some(Some(Reminder::Before(30))),
            ..TaskChanges::default()
        });
        assert_eq!(
            update(&task, None, &same, now(), &topics(), None),
            Ok(Update::Unchanged)
        );
        assert_eq!(
            update(
                &task,
                None,
                &fields(TaskChanges::default()),
                now(),
                &topics(),
                None
            ),
            Ok(Update::Unchanged)
        );
    }

    #[test]
    fn each_change_emits_its_events_in_order() {
        let task = reminded();
        let retitled = written(update(
            &task,
            None,
            &fields(TaskChanges {
                title: Some("Dentist at 9".into()),
                ..TaskChanges::default()
            }),
            now(),
            &topics(),
            None,
        ));
        assert_eq!(kinds(&retitled.events), pairs(&[("task.updated", "tasks")]));
        assert_eq!(retitled.task.version, task.version + 1);

        let completed = written(update(
            &task,
            None,
            &Change::Complete(Some(true)),
            now(),
            &topics(),
            None,
        ));
        assert_eq!(
            kinds(&completed.events),
            pairs(&[
                ("task.completed", "tasks"),
                ("reminder.cancelled", "reminders")
            ])
        );

        let moved = written(update(
            &task,
            None,
            &fields(TaskChanges {
                title: Some("Dentist, later".into()),
                due_at: Some(Some(utc("2026-05-02T09:00:00Z"))),
                completed: Some(true),
                ..TaskChanges::default()
            }),
            now(),
            &topics(),
            None,
        ));
        assert_eq!(
            kinds(&moved.events),
            pairs(&[
                ("task.updated", "tasks"),
                ("task.completed", "tasks"),
                ("reminder.cancelled", "reminders"),
            ]),
            "completed: the reminder is cancelled, not rescheduled"
        );

        let rescheduled = written(update(
            &task,
            None,
            &fields(TaskChanges {
                due_at: Some(Some(utc("2026-05-02T09:00:00Z"))),
                ..TaskChanges::default()
            }),
            now(),
            &topics(),
            None,
        ));
        assert_eq!(
            kinds(&rescheduled.events),
            pairs(&[
                ("task.updated", "tasks"),
                ("reminder.cancelled", "reminders"),
                ("reminder.scheduled", "reminders"),
            ])
        );

        let deleted = delete(&task, None, now(), &topics(), None).expect("deleted");
        assert_eq!(
            kinds(&deleted.events),
            pairs(&[
                ("task.deleted", "tasks"),
                ("reminder.cancelled", "reminders")
            ])
        );
        assert_eq!(deleted.task, task);
    }

    #[test]
    fn writes_are_conditional_on_the_version_read() {
        let task = reminded();
        let write = written(update(
            &task,
            None,
            &Change::Complete(None),
            now(),
            &topics(),
            None,
        ));
        assert!(
            write
                .statement
                .params
                .contains(&SqlValue::Int64(task.version)),
            "guarded by the version read"
        );
        assert!(
            write
                .statement
                .params
                .contains(&SqlValue::Int64(task.version + 1)),
            "writes the next version"
        );
        let deleted = delete(&task, None, now(), &topics(), None).expect("deleted");
        assert!(
            deleted
                .statement
                .sql
                .starts_with("with written as (delete from tasks")
        );
        assert!(
            deleted
                .statement
                .params
                .contains(&SqlValue::Int64(task.version))
        );
    }

    #[test]
    fn if_match_must_name_the_current_version() {
        let task = reminded();
        let change = Change::Complete(None);
        for tag in ["\"1\"", "*", "\"7\", \"1\""] {
            assert!(
                update(&task, Some(tag), &change, now(), &topics(), None).is_ok(),
                "{tag}"
            );
        }
        assert_eq!(
            update(&task, Some("\"2\""), &change, now(), &topics(), None),
            Err(ApiError::PreconditionFailed)
        );
        let same = fields(TaskChanges::default());
        assert_eq!(
            update(&task, Some("\"2\""), &same, now(), &topics(), None),
            Err(ApiError::PreconditionFailed),
            "checked before the no-op"
        );
        assert_eq!(
            delete(&task, Some("\"2\""), now(), &topics(), None).map(|w| w.task),
            Err(ApiError::PreconditionFailed)
        );
    }

    #[test]
    fn a_reminder_left_without_its_due_time_is_refused() {
        let task = reminded();
        let undated = fields(TaskChanges {
            due_at: Some(None),
            ..TaskChanges::default()
        });
        let error = update(&task, None, &undated, now(), &topics(), None).expect_err("422");
        assert_eq!(error.status(), 422);
    }
}
