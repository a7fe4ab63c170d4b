//! Firing reminders: the SQL of the reminder sweep, and why it is a sweep.
//!
//! # Mechanism: a cron-driven sweep over the tasks table
//! The Dapr `bindings.cron` component `reminder-sweep` (k8s/base/dapr) POSTs `/reminder-sweep`
//! every 30 s on every replica; the `reminder-sweep` component then fires every reminder whose
//! time has come. The alternative, one Dapr job per reminder (`POST /v1.0-alpha1/jobs/{name}`,
//! triggered as `POST /job/{name}`), was not taken:
//! - a job is a second source of truth beside `tasks.remind_at`: every edit, completion,
//!   deletion, due-date move and next occurrence would have to create, replace or delete a job
//!   as well, and the job API cannot join the SQL statement that changes the task, so a crash
//!   or sidecar outage between the two leaves a job that fires for nothing or a reminder that
//!   never fires. The sweep reads the one table that is written atomically with the events;
//! - catching up after downtime is just "fire everything due": the sweep selects
//!   `remind_at <= now()`, so reminders missed while the app, the sidecar or the database was
//!   down all fire on the first sweep after it;
//! - it is testable with plain HTTP: a test POSTs `/reminder-sweep` when it wants a tick.
//!
//! The price is latency: a reminder fires up to one period (30 s) after its time, plus
//! publishing. Work per sweep is one indexed range scan over due, unfired reminders of open
//! tasks (the partial index `tasks_reminders_due`, migrations/0004_reminders.sql).
//!
//! # Exactly once, with several replicas and no transaction across calls
//! The sweep selects a batch of candidates ([`due`]), builds each `reminder.triggered` event in
//! Rust, and then claims each candidate with ONE statement ([`claim`]): a CTE that sets
//! `reminder_fired_at = now()` on the task only if it is still the same pending reminder (same
//! id and user, `remind_at` still the time that was read, not fired, task not completed), and
//! inserts the event into the outbox only if that update touched the row.
//!
//! This conditional claim is the equivalent here of `select ... for update skip locked`: that
//! lock would have to be held by a transaction open across several calls from the component to
//! the database (select, build, insert, commit), which this code base never does, since a
//! component may be stopped between any two calls. Under READ COMMITTED, a second sweeper's identical
//! update blocks on the first one's row lock, re-reads the row once that commits, finds
//! `reminder_fired_at` set, and matches nothing: so each reminder fires once however many
//! sweeps race, and its event exists exactly when its mark does. A reminder that was moved,
//! completed or deleted after the candidates were read no longer matches either, so a cancelled
//! reminder never fires. The claim also bumps the task's `version`: a task write that read the
//! task before the reminder fired then retries instead of clearing the mark
//! (`tasks::store::update`).
//!
//! Publishing follows the claims: the events are in the outbox, and the sweep flushes the users
//! it fired for before it answers (the relay delivers whatever that leaves behind).

use crate::outbox::{OutboxRow, push_outbox, select_written_count};
use crate::sql::{Builder, Column, Row, SqlValue, Statement, select_list, typed};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A reminder whose time has come, as the sweep reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueReminder {
    pub task_id: Uuid,
    pub user_id: String,
    pub title: String,
    pub due_at: DateTime<Utc>,
    /// The effective fire time, as read: the claim fires only if it is unchanged.
    pub remind_at: DateTime<Utc>,
    pub remind_before_minutes: Option<u32>,
}

/// What [`due`] selects, in the order [`DueReminder::decode`] reads it.
const DUE_COLUMNS: [Column; 6] = [
    Column::new("id", "uuid"),
    Column::new("user_id", "text"),
    Column::new("title", "text"),
    Column::new("due_at", "timestamptz"),
    Column::new("remind_at", "timestamptz"),
    Column::new("remind_before_minutes", "int4"),
];

impl DueReminder {
    /// Decodes a row of [`due`].
    pub fn decode(values: &[SqlValue]) -> Result<Self, String> {
        let row = Row::new(&DUE_COLUMNS, values)?;
        let minutes = row.opt_int32("remind_before_minutes")?;
        Ok(Self {
            task_id: row.uuid("id")?,
            user_id: row.text("user_id")?,
            title: row.text("title")?,
            due_at: row.time("due_at")?,
            remind_at: row.time("remind_at")?,
            remind_before_minutes: minutes
                .map(|m| u32::try_from(m).map_err(|_| format!("remind_before_minutes {m}")))
                .transpose()?,
        })
    }
}

/// Up to `limit` pending reminders whose time has come, earliest first. Matches the partial
/// index `tasks_reminders_due`, so it reads only what is due.
pub fn due(limit: i64) -> Statement {
    Statement::new(
        format!(
            "select {} from tasks \
             where remind_at <= now() and reminder_fired_at is null and not completed \
             order by remind_at, id limit $1::int8",
            select_list(&DUE_COLUMNS)
        ),
        vec![SqlValue::Int64(limit)],
    )
}

/// Fires `due` if it is still the same pending reminder, storing `event` (its
/// `reminder.triggered`) in the outbox in the same statement. Returns one row: the number of
/// reminders fired, 1, or 0 when another sweep fired it first or it was moved, completed or
/// deleted since it was read. See the module documentation for why this is exactly once.
pub fn claim(due: &DueReminder, event: &OutboxRow) -> Statement {
    let mut sql = Builder::new(
        "with written as (update tasks set reminder_fired_at = now(), version = version + 1 ",
    );
    let id = sql.bind(SqlValue::Uuid(due.task_id));
    let user = sql.bind(SqlValue::Text(due.user_id.clone()));
    let remind_at = sql.bind(SqlValue::Timestamp(due.remind_at));
    sql.push(&format!(
        "where id = {id}::uuid and user_id = {user}::text and remind_at = {} \
         and reminder_fired_at is null and not completed returning id)",
        typed(&remind_at, "timestamptz")
    ));
    // The sweep publishes with the relay's rounds (`flush_users`), not from the write.
    let claimed = push_outbox(&mut sql, std::slice::from_ref(event), None);
    select_written_count(sql, &claimed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventContext;
    use crate::tasks::time::parse_utc;

    fn due_reminder() -> DueReminder {
        DueReminder {
            task_id: Uuid::now_v7(),
            user_id: "alice".into(),
            title: "Call mum'); drop table tasks; --".into(),
            due_at: parse_utc("2026-05-01T09:00:00Z").expect("valid"),
            remind_at: parse_utc("2026-05-01T08:30:00Z").expect("valid"),
            remind_before_minutes: Some(30),
        }
    }

    fn context() -> EventContext {
        EventContext {
            source: "/todo-spin/tasks".into(),
            topic: "reminders".into(),
            traceparent: None,
        }
    }

    #[test]
    fn candidates_are_due_pending_reminders_of_open_tasks_earliest_first() {
        let statement = due(100);
        let sql = &statement.sql;
        assert!(
            sql.contains(
                "where remind_at <= now() and reminder_fired_at is null and not completed"
            ),
            "the partial index's predicate: {sql}"
        );
        assert!(
            sql.contains("order by remind_at, id limit $1::int8"),
            "{sql}"
        );
        assert_eq!(statement.params, vec![SqlValue::Int64(100)]);
    }

    #[test]
    fn due_rows_decode_by_the_columns_selected() {
        let reminder = due_reminder();
        let row = [
            SqlValue::Uuid(reminder.task_id),
            SqlValue::Text(reminder.user_id.clone()),
            SqlValue::Text(reminder.title.clone()),
            SqlValue::Timestamp(reminder.due_at),
            SqlValue::Timestamp(reminder.remind_at),
            SqlValue::Int32(30),
        ];
        assert_eq!(DueReminder::decode(&row), Ok(reminder));
        let mut absolute = row.clone();
        absolute[5] = SqlValue::Null;
        let decoded = DueReminder::decode(&absolute).expect("valid");
        assert_eq!(decoded.remind_before_minutes, None);
        let mut negative = row.clone();
        negative[5] = SqlValue::Int32(-1);
        assert!(DueReminder::decode(&negative).is_err());
        assert!(DueReminder::decode(&row[..5]).is_err());
        assert!(
            due(1).sql.starts_with(
                "select id, user_id, title, due_at at time zone 'UTC' as due_at, \
                 remind_at at time zone 'UTC' as remind_at, remind_before_minutes from tasks"
            ),
            "{}",
            due(1).sql
        );
    }

    #[test]
    fn the_claim_is_one_conditional_statement_with_its_event() {
        let due = due_reminder();
        let event = context().reminder_triggered(&due, Utc::now());
        let statement = claim(&due, &event);
        let sql = &statement.sql;
        assert!(
            sql.starts_with(
                "with written as (update tasks set reminder_fired_at = now(), version = version + 1"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "where id = $1::uuid and user_id = $2::text \
                 and remind_at = ($3::timestamp at time zone 'UTC') \
                 and reminder_fired_at is null and not completed returning id)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("where exists (select 1 from written)"),
            "the event is stored only with the claim: {sql}"
        );
        assert!(sql.ends_with("select count(*) from written"), "{sql}");
        assert!(!sql.contains("drop table"), "values are parameters");
        assert_eq!(statement.params[2], SqlValue::Timestamp(due.remind_at));
        let placeholders = (1..=50)
            .take_while(|n| sql.contains(&format!("${n}")))
            .count();
        assert_eq!(placeholders, statement.params.len());
    }
}
