//! All SQL of the `tasks` table (schema: migrations/0001_tasks.sql, 0003_recurrence.sql,
//! 0004_reminders.sql). The reminder sweep's SQL is in `crate::reminders`.
//!
//! Writes are single statements: the task change and the events it causes (rows of the
//! `outbox` table) commit together or not at all, with no transaction left open across calls.
//! Updates and deletes are conditional on the version that was read, so a concurrent writer
//! makes the statement touch nothing instead of silently overwriting.

use crate::outbox::{OutboxRow, WriteClaim, push_outbox, select_written_count};
use crate::recurrence::{Recurrence, RecurrenceInput};
use crate::sql::{Builder, Column, Row, SqlValue, Statement, select_list};
use crate::tasks::model::{Priority, Task, tag_keys};
use crate::tasks::reminder::Reminder;
use serde::Deserialize;
use std::sync::LazyLock;
use uuid::Uuid;

/// One stored column of a task: how writes store it and whether updates and selects touch it.
/// Insert, update, select and [`decode`] all follow this one table.
struct Stored {
    column: Column,
    value: fn(&Task) -> SqlValue,
    /// Whether an update rewrites it; the others are fixed when the task is inserted.
    updated: bool,
    /// Whether selects read it back; `tag_keys` only serves filters.
    selected: bool,
}

impl Stored {
    const fn fixed(
        name: &'static str,
        sql_type: &'static str,
        value: fn(&Task) -> SqlValue,
    ) -> Self {
        Self {
            column: Column::new(name, sql_type),
            value,
            updated: false,
            selected: true,
        }
    }

    const fn updated(self) -> Self {
        Self {
            updated: true,
            ..self
        }
    }

    const fn read_as(self, expr: &'static str) -> Self {
        Self {
            column: self.column.read_as(expr),
            ..self
        }
    }

    const fn not_selected(self) -> Self {
        Self {
            selected: false,
            ..self
        }
    }
}

/// The columns of `tasks` (migrations/0001_tasks.sql, 0003_recurrence.sql, 0004_reminders.sql),
/// in the order inserts list them and selects return them.
const STORED: [Stored; 21] = [
    Stored::fixed("id", "uuid", |t| SqlValue::Uuid(t.id)),
    Stored::fixed("user_id", "text", |t| SqlValue::Text(t.user_id.clone())),
    Stored::fixed("title", "text", |t| SqlValue::Text(t.title.clone())).updated(),
    Stored::fixed("description", "text", |t| t.description.clone().into()).updated(),
    Stored::fixed("completed", "bool", |t| SqlValue::Bool(t.completed)).updated(),
    Stored::fixed("completed_at", "timestamptz", |t| t.completed_at.into()).updated(),
    // A small integer, so that sorting by priority is an index scan.
    Stored::fixed("priority", "int2", |t| SqlValue::Int16(t.priority.rank())).updated(),
    Stored::fixed("tags", "text[]", |t| SqlValue::TextArray(t.tags.clone())).updated(),
    Stored::fixed("tag_keys", "text[]", |t| {
        SqlValue::TextArray(tag_keys(&t.tags))
    })
    .updated()
    .not_selected(),
    Stored::fixed("due_at", "timestamptz", |t| t.due_at.into()).updated(),
    Stored::fixed("recurrence", "jsonb", recurrence_value).updated(),
    Stored::fixed("created_at", "timestamptz", |t| {
        SqlValue::Timestamp(t.created_at)
    }),
    Stored::fixed("updated_at", "timestamptz", |t| {
        SqlValue::Timestamp(t.updated_at)
    })
    .updated(),
    Stored::fixed("version", "int8", |t| SqlValue::Int64(t.version)).updated(),
    // Tasks from before series existed have none: each is its own series.
    Stored::fixed("series_id", "uuid", |t| SqlValue::Uuid(t.series_id))
        .read_as("coalesce(series_id, id)"),
    Stored::fixed("occurrence", "int4", |t| {
        SqlValue::Int32(occurrence_value(t.occurrence))
    }),
    Stored::fixed("series_anchor", "timestamptz", |t| t.series_anchor.into()),
    Stored::fixed("anchor_occurrence", "int4", |t| {
        SqlValue::Int32(occurrence_value(t.anchor_occurrence))
    }),
    Stored::fixed("remind_before_minutes", "int4", minutes_value).updated(),
    // The effective fire time, where the sweep finds it (see `tasks::reminder`).
    Stored::fixed("remind_at", "timestamptz", |t| t.reminder_fires_at().into()).updated(),
    Stored::fixed("reminder_fired_at", "timestamptz", |t| {
        t.reminder_fired_at.into()
    })
    .updated(),
];

/// The columns every task query selects, in the order [`decode`] reads them.
static SELECTED: LazyLock<Vec<Column>> = LazyLock::new(|| {
    STORED
        .iter()
        .filter(|s| s.selected)
        .map(|s| s.column)
        .collect()
});

/// The select list of every task query; decode its rows with [`decode`].
pub static TASK_COLUMNS: LazyLock<String> = LazyLock::new(|| select_list(&SELECTED));

pub fn get(user_id: &str, id: Uuid) -> Statement {
    Statement::new(
        format!(
            "select {} from tasks where id = $1 and user_id = $2",
            *TASK_COLUMNS
        ),
        vec![SqlValue::Uuid(id), SqlValue::Text(user_id.to_owned())],
    )
}

/// Decodes a row selected with [`TASK_COLUMNS`], validating the stored values again. Fails
/// only if the database holds something this code never writes.
pub fn decode(values: &[SqlValue]) -> Result<Task, String> {
    let row = Row::new(&SELECTED, values)?;
    let id = row.uuid("id")?;
    let decoded = (|| {
        let reminder = Reminder::from_columns(
            row.opt_int32("remind_before_minutes")?,
            row.opt_time("remind_at")?,
        )?;
        let rank = row.int16("priority")?;
        let priority =
            Priority::from_rank(rank).ok_or_else(|| format!("has priority rank {rank}"))?;
        let recurrence = row
            .opt_json("recurrence")?
            .map(|stored| {
                RecurrenceInput::deserialize(stored)
                    .map_err(|e| e.to_string())
                    .and_then(|input| Recurrence::parse(input).map_err(|e| format!("{e:?}")))
            })
            .transpose()
            .map_err(|e| format!("has an unreadable recurrence: {e}"))?;
        let count = |name: &str| {
            let n = row.int32(name)?;
            u32::try_from(n).map_err(|_| format!("has {name} {n}"))
        };
        Ok::<_, String>(Task {
            id,
            user_id: row.text("user_id")?,
            title: row.text("title")?,
            description: row.opt_text("description")?,
            completed: row.bool("completed")?,
            completed_at: row.opt_time("completed_at")?,
            priority,
            tags: row.text_array("tags")?,
            due_at: row.opt_time("due_at")?,
            reminder,
            reminder_fired_at: row.opt_time("reminder_fired_at")?,
            recurrence,
            series_id: row.uuid("series_id")?,
            occurrence: count("occurrence")?,
            series_anchor: row.opt_time("series_anchor")?,
            anchor_occurrence: count("anchor_occurrence")?,
            created_at: row.time("created_at")?,
            updated_at: row.time("updated_at")?,
            version: row.int64("version")?,
        })
    })();
    decoded.map_err(|e| format!("task {id}: {e}"))
}

/// A condition on a row of `tasks`: true when it holds `task` in every column that selects
/// read back, its version aside (an event's copy of a task carries none, and `updated_at`
/// changes with every write). The row is found by its key outside this condition, which no
/// index serves.
pub fn push_holds(sql: &mut Builder, task: &Task) -> String {
    let (columns, values): (Vec<&str>, Vec<String>) = STORED
        .iter()
        .filter(|s| s.selected && s.column.name != "version")
        .map(|s| {
            let value = sql.typed((s.value)(task), s.column.sql_type);
            (s.column.expr.unwrap_or(s.column.name), value)
        })
        .unzip();
    format!(
        "row({}) is not distinct from row({})",
        columns.join(", "),
        values.join(", ")
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

/// Inserts a task with its events. Returns one row: the number of tasks inserted (1), then
/// with a `claim` the claim's columns (`outbox::Claimed::decode`).
pub fn insert(task: &Task, events: &[OutboxRow], claim: Option<&WriteClaim>) -> Statement {
    let mut sql = Builder::new("with ");
    push_insert(&mut sql, task, None);
    let claimed = push_outbox(&mut sql, events, claim);
    select_written_count(sql, &claimed)
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
    let names: Vec<&str> = STORED.iter().map(|s| s.column.name).collect();
    sql.push(&format!(
        "written as (insert into tasks ({}) ",
        names.join(", ")
    ));
    let placeholders: Vec<String> = STORED
        .iter()
        .map(|s| sql.typed((s.value)(task), s.column.sql_type))
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
/// number of tasks updated (0 when it changed or vanished in between), then the claim's
/// columns as for [`insert`].
///
/// `reminder_fired_at` is written as computed in Rust (`Task::apply` clears it when the fire
/// time moved, and keeps it otherwise). That is safe only because the write is conditional on
/// the version read and the sweep's claim bumps the version (`crate::reminders::claim`): a
/// reminder firing between this request's read and write makes the write touch nothing and the
/// request retry, instead of clearing the mark and firing the reminder twice.
pub fn update(
    task: &Task,
    expected_version: i64,
    events: &[OutboxRow],
    claim: Option<&WriteClaim>,
) -> Statement {
    let mut sql = Builder::new("with written as (update tasks set ");
    let assignments: Vec<String> = STORED
        .iter()
        .filter(|s| s.updated)
        .map(|s| {
            let value = sql.typed((s.value)(task), s.column.sql_type);
            format!("{} = {value}", s.column.name)
        })
        .collect();
    sql.push(&assignments.join(", "));
    push_where_version(&mut sql, task, expected_version);
    let claimed = push_outbox(&mut sql, events, claim);
    select_written_count(sql, &claimed)
}

/// Deletes a task if it still has version `expected_version`. Returns one row: the number of
/// tasks deleted, then the claim's columns as for [`insert`].
pub fn delete(
    task: &Task,
    expected_version: i64,
    events: &[OutboxRow],
    claim: Option<&WriteClaim>,
) -> Statement {
    let mut sql = Builder::new("with written as (delete from tasks");
    push_where_version(&mut sql, task, expected_version);
    let claimed = push_outbox(&mut sql, events, claim);
    select_written_count(sql, &claimed)
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
    use crate::tasks::model::TaskChanges;
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
            insert(&task, std::slice::from_ref(&event), None),
            update(&task, 1, std::slice::from_ref(&event), None),
            delete(&task, 1, std::slice::from_ref(&event), None),
            get("alice", task.id),
        ] {
            assert!(!statement.sql.contains("drop table"), "{}", statement.sql);
            assert!(!statement.sql.contains("alice"), "{}", statement.sql);
            assert_eq!(placeholders(&statement.sql), statement.params.len());
        }
    }

    /// What a select returns for `task`: the written value of each selected column.
    fn selected(task: &Task) -> Vec<SqlValue> {
        STORED
            .iter()
            .filter(|s| s.selected)
            .map(|s| (s.value)(task))
            .collect()
    }

    #[test]
    fn a_written_task_reads_back_as_it_was() {
        let t0 = chrono::DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let rule = Recurrence::parse(RecurrenceInput {
            frequency: "weekly".into(),
            timezone: Some("Europe/Berlin".into()),
            ..RecurrenceInput::default()
        })
        .expect("valid rule");
        let changes = TaskChanges {
            title: Some("Review".into()),
            description: Some(Some("notes".into())),
            completed: Some(true),
            priority: Some(Priority::High),
            tags: Some(vec!["Work".into(), "q3".into()]),
            due_at: Some(Some(t0 + chrono::Duration::hours(9))),
            reminder: Some(Some(Reminder::Before(15))),
            recurrence: Some(Some(rule)),
        };
        let user = UserId::parse("alice").expect("valid");
        let mut task = Task::create(Uuid::now_v7(), &user, changes, t0);
        task.reminder_fired_at = Some(t0);
        task.occurrence = 3;
        task.anchor_occurrence = 2;
        assert_eq!(decode(&selected(&task)), Ok(task.clone()));

        let absolute = Task {
            reminder: Some(Reminder::At(t0)),
            description: None,
            recurrence: None,
            ..task.clone()
        };
        assert_eq!(decode(&selected(&absolute)), Ok(absolute));
        let plain = Task {
            reminder: None,
            due_at: None,
            ..task.clone()
        };
        assert_eq!(decode(&selected(&plain)), Ok(plain));
    }

    #[test]
    fn the_select_list_follows_the_table() {
        let list = TASK_COLUMNS.as_str();
        assert!(
            list.starts_with("id, user_id, title, description, completed, "),
            "{list}"
        );
        assert!(
            list.contains("coalesce(series_id, id) as series_id"),
            "{list}"
        );
        assert!(
            list.ends_with("reminder_fired_at at time zone 'UTC' as reminder_fired_at"),
            "{list}"
        );
        assert!(!list.contains("tag_keys"), "only filters read it");
        let update = update(&task(), 1, &[], None).sql;
        for fixed in [
            "id =",
            "user_id =",
            "created_at =",
            "series_id =",
            "occurrence =",
        ] {
            assert!(!update.contains(&format!("set {fixed}")), "{update}");
            assert!(!update.contains(&format!(", {fixed}")), "{update}");
        }
        assert!(update.contains("tag_keys = $7::text[]"), "{update}");
    }

    #[test]
    fn rows_the_code_never_writes_are_refused() {
        let task = task();
        let values = selected(&task);
        let at = |name: &str| {
            SELECTED
                .iter()
                .position(|c| c.name == name)
                .expect("selected")
        };
        let with = |name: &str, value: SqlValue| {
            let mut values = values.clone();
            values[at(name)] = value;
            decode(&values).expect_err(name)
        };
        assert!(with("priority", SqlValue::Int16(9)).contains("priority rank 9"));
        assert!(with("occurrence", SqlValue::Int32(-1)).contains("occurrence -1"));
        assert!(with("remind_before_minutes", SqlValue::Int32(-5)).contains("out of range"));
        let bad_rule = with(
            "recurrence",
            SqlValue::Jsonb(serde_json::json!({"frequency": 1})),
        );
        assert!(bad_rule.contains("unreadable recurrence"), "{bad_rule}");
        assert!(with("title", SqlValue::Null).contains("title"));
        assert!(decode(&values[1..]).is_err(), "a column short");
    }

    #[test]
    fn holding_a_task_compares_every_column_read_back_but_the_version() {
        let task = task();
        let mut sql = Builder::new("select 1 from tasks where ");
        let condition = push_holds(&mut sql, &task);
        sql.push(&condition);
        let statement = sql.build();
        let compared = SELECTED.len() - 1;
        assert_eq!(statement.params.len(), compared);
        assert_eq!(placeholders(&statement.sql), compared);
        assert!(
            condition.starts_with("row(id, user_id, title, description, completed, "),
            "{condition}"
        );
        assert!(condition.contains("coalesce(series_id, id)"), "{condition}");
        assert!(!condition.contains("version"), "{condition}");
        assert!(!condition.contains("tag_keys"), "{condition}");
        assert!(
            condition.contains(") is not distinct from row($1::uuid, $2::text, $3::text"),
            "{condition}"
        );
        assert!(
            !statement.sql.contains("drop table"),
            "values are parameters"
        );
    }

    #[test]
    fn writes_are_scoped_by_user_and_version() {
        let sql = update(&task(), 7, &[], None).sql;
        assert!(sql.contains("user_id = $"), "{sql}");
        assert!(sql.contains("version = $"), "{sql}");
        assert!(!sql.contains("outbox"), "no events, no outbox insert");
    }
}
