//! All SQL of the `tasks` table (schema: migrations/0001_tasks.sql, 0003_recurrence.sql,
//! 0004_reminders.sql). The reminder sweep's SQL is in `crate::reminders`.
//!
//! Writes are single statements: the task change and the events it causes (rows of the
//! `outbox` table) commit together or not at all, with no transaction left open across calls.
//! Updates and deletes are conditional on the version that was read, so a concurrent writer
//! makes the statement touch nothing instead of silently overwriting.

use crate::outbox::{OutboxRow, push_outbox};
use crate::sql::{Builder, SqlValue, Statement};
use crate::tasks::model::{Task, tag_keys};
use crate::tasks::reminder::Reminder;
use uuid::Uuid;

/// Column order every task query selects; the components decode rows in this order: the
/// columns of `TaskRow`, then those of `ReminderColumns`.
///
/// Time columns are stored as `timestamptz` but selected as their UTC wall time (a plain
/// `timestamp`): Spin's pg host decodes date-times with the naive `timestamp` decoder, which
/// refuses `timestamptz` values (spinframework/spin `factor-outbound-pg` `convert_entry`).
pub const TASK_COLUMNS: &str = "id, user_id, title, description, completed, \
     completed_at at time zone 'UTC' as completed_at, priority, tags, \
     due_at at time zone 'UTC' as due_at, recurrence, \
     created_at at time zone 'UTC' as created_at, updated_at at time zone 'UTC' as updated_at, \
     version, coalesce(series_id, id) as series_id, occurrence, \
     series_anchor at time zone 'UTC' as series_anchor, anchor_occurrence, \
     remind_before_minutes, remind_at at time zone 'UTC' as remind_at, \
     reminder_fired_at at time zone 'UTC' as reminder_fired_at";

pub fn get(user_id: &str, id: Uuid) -> Statement {
    Statement::new(
        format!("select {TASK_COLUMNS} from tasks where id = $1 and user_id = $2"),
        vec![SqlValue::Uuid(id), SqlValue::Text(user_id.to_owned())],
    )
}

/// `remind_before_minutes`: only a relative reminder has it.
fn minutes_value(task: &Task) -> SqlValue {
    task.reminder
        .and_then(Reminder::minutes_before)
        .map_or(SqlValue::Null, |m| {
            SqlValue::Int32(i32::try_from(m).unwrap_or(i32::MAX))
        })
}

fn recurrence_value(task: &Task) -> SqlValue {
    match &task.recurrence {
        Some(r) => SqlValue::Jsonb(serde_json::to_value(r).unwrap_or_default()),
        None => SqlValue::Null,
    }
}

/// Inserts a task with its events. Returns one row: the number of tasks inserted (1).
pub fn insert(task: &Task, events: &[OutboxRow]) -> Statement {
    let mut sql = Builder::new("with ");
    push_insert(&mut sql, task, None);
    push_outbox(&mut sql, events);
    sql.push(" select count(*) from written");
    sql.build()
}

/// Adds the CTE `written as (insert into tasks ... returning id)`, for statements that combine
/// the insert with other writes.
///
/// With `only_after: Some(cte)` the task is inserted only if the CTE named `cte` returned a
/// row, and is skipped, not an error, when its series already has a task with its occurrence
/// number (the unique index `tasks_series_occurrence`): that is how the recurrence engine
/// creates a next occurrence at most once. Concurrent inserts of the same occurrence wait for
/// each other on that index, and all but the first insert nothing.
pub fn push_insert(sql: &mut Builder, task: &Task, only_after: Option<&str>) {
    sql.push(
        "written as (insert into tasks (id, user_id, title, description, completed, \
         completed_at, priority, tags, tag_keys, due_at, recurrence, created_at, updated_at, \
         version, series_id, occurrence, series_anchor, anchor_occurrence, \
         remind_before_minutes, remind_at, reminder_fired_at) ",
    );
    let values = [
        (SqlValue::Uuid(task.id), "uuid"),
        (SqlValue::Text(task.user_id.clone()), "text"),
        (SqlValue::Text(task.title.clone()), "text"),
        (task.description.clone().into(), "text"),
        (SqlValue::Bool(task.completed), "bool"),
        (task.completed_at.into(), "timestamptz"),
        (SqlValue::Int16(task.priority.rank()), "int2"),
        (SqlValue::TextArray(task.tags.clone()), "text[]"),
        (SqlValue::TextArray(tag_keys(&task.tags)), "text[]"),
        (task.due_at.into(), "timestamptz"),
        (recurrence_value(task), "jsonb"),
        (SqlValue::Timestamp(task.created_at), "timestamptz"),
        (SqlValue::Timestamp(task.updated_at), "timestamptz"),
        (SqlValue::Int64(task.version), "int8"),
        (SqlValue::Uuid(task.series_id), "uuid"),
        (SqlValue::Int32(occurrence_value(task.occurrence)), "int4"),
        (task.series_anchor.into(), "timestamptz"),
        (
            SqlValue::Int32(occurrence_value(task.anchor_occurrence)),
            "int4",
        ),
        (minutes_value(task), "int4"),
        (task.reminder_fires_at().into(), "timestamptz"),
        (task.reminder_fired_at.into(), "timestamptz"),
    ];
    let placeholders: Vec<String> = values
        .into_iter()
        .map(|(value, cast)| sql.typed(value, cast))
        .collect();
    let placeholders = placeholders.join(", ");
    match only_after {
        None => sql.push(&format!("values ({placeholders})")),
        Some(cte) => sql.push(&format!(
            "select {placeholders} where exists (select 1 from {cte}) \
             on conflict (user_id, (coalesce(series_id, id)), occurrence) do nothing"
        )),
    };
    sql.push(" returning id)");
}

/// Occurrence numbers are bounded by a rule's `count` (at most 1000) in practice; a value
/// beyond `int4` saturates and fails the insert instead of wrapping.
fn occurrence_value(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Replaces a task's fields if it still has version `expected_version`. Returns one row: the
/// number of tasks updated (0 when it changed or vanished in between).
///
/// `reminder_fired_at` is written as computed in Rust (`Task::apply` clears it when the fire
/// time moved, and keeps it otherwise). That is safe only because the write is conditional on
/// the version read and the sweep's claim bumps the version (`crate::reminders::claim`): a
/// reminder firing between this request's read and write makes the write touch nothing and the
/// request retry, instead of clearing the mark and firing the reminder twice.
pub fn update(task: &Task, expected_version: i64, events: &[OutboxRow]) -> Statement {
    let mut sql = Builder::new("with written as (update tasks set ");
    let sets = [
        ("title", SqlValue::Text(task.title.clone()), "text"),
        ("description", task.description.clone().into(), "text"),
        ("completed", SqlValue::Bool(task.completed), "bool"),
        ("completed_at", task.completed_at.into(), "timestamptz"),
        ("priority", SqlValue::Int16(task.priority.rank()), "int2"),
        ("tags", SqlValue::TextArray(task.tags.clone()), "text[]"),
        (
            "tag_keys",
            SqlValue::TextArray(tag_keys(&task.tags)),
            "text[]",
        ),
        ("due_at", task.due_at.into(), "timestamptz"),
        ("remind_before_minutes", minutes_value(task), "int4"),
        ("remind_at", task.reminder_fires_at().into(), "timestamptz"),
        (
            "reminder_fired_at",
            task.reminder_fired_at.into(),
            "timestamptz",
        ),
        ("recurrence", recurrence_value(task), "jsonb"),
        (
            "updated_at",
            SqlValue::Timestamp(task.updated_at),
            "timestamptz",
        ),
        ("version", SqlValue::Int64(task.version), "int8"),
    ];
    let assignments: Vec<String> = sets
        .into_iter()
        .map(|(column, value, cast)| format!("{column} = {}", sql.typed(value, cast)))
        .collect();
    sql.push(&assignments.join(", "));
    push_where_version(&mut sql, task, expected_version);
    push_outbox(&mut sql, events);
    sql.push(" select count(*) from written");
    sql.build()
}

/// Deletes a task if it still has version `expected_version`. Returns one row: the number of
/// tasks deleted.
pub fn delete(task: &Task, expected_version: i64, events: &[OutboxRow]) -> Statement {
    let mut sql = Builder::new("with written as (delete from tasks");
    push_where_version(&mut sql, task, expected_version);
    push_outbox(&mut sql, events);
    sql.push(" select count(*) from written");
    sql.build()
}

fn push_where_version(sql: &mut Builder, task: &Task, expected_version: i64) {
    let id = sql.bind(SqlValue::Uuid(task.id));
    let user = sql.bind(SqlValue::Text(task.user_id.clone()));
    let version = sql.bind(SqlValue::Int64(expected_version));
    sql.push(&format!(
        " where id = {id}::uuid and user_id = {user}::text and version = {version}::int8 returning id)"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::changes::TaskChanges;
    use crate::tasks::model::UserId;
    use chrono::Utc;

    fn task() -> Task {
        let changes = TaskChanges {
            title: Some("x'); drop table tasks; --".into()),
            ..TaskChanges::default()
        };
        let user = UserId::parse("alice").expect("valid");
        Task::create(Uuid::now_v7(), &user, changes, Utc::now())
    }

    fn placeholders(sql: &str) -> usize {
        (1..=200)
            .take_while(|n| sql.contains(&format!("${n}")))
            .count()
    }

    #[test]
    fn every_value_is_a_parameter() {
        let task = task();
        let event = OutboxRow {
            event_id: Uuid::now_v7(),
            user_id: "alice".into(),
            topic: "tasks".into(),
            event: serde_json::json!({"title": task.title}),
        };
        for statement in [
            insert(&task, std::slice::from_ref(&event)),
            update(&task, 1, std::slice::from_ref(&event)),
            delete(&task, 1, std::slice::from_ref(&event)),
            get("alice", task.id),
        ] {
            assert!(!statement.sql.contains("drop table"), "{}", statement.sql);
            assert!(!statement.sql.contains("alice"), "{}", statement.sql);
            assert_eq!(placeholders(&statement.sql), statement.params.len());
        }
    }

    #[test]
    fn writes_are_scoped_by_user_and_version() {
        let sql = update(&task(), 7, &[]).sql;
        assert!(sql.contains("user_id = $"), "{sql}");
        assert!(sql.contains("version = $"), "{sql}");
        assert!(!sql.contains("outbox"), "no events, no outbox insert");
    }
}
