//! The PostgreSQL adapter: binds the core's [`SqlValue`]s to Spin's pg interface, decodes rows,
//! and maps database failures to API errors.
//!
//! | core `SqlValue` | `spin_sdk::pg::ParameterValue` | PostgreSQL |
//! |-----------------|--------------------------------|------------|
//! | `Bool`          | `Boolean`                      | bool       |
//! | `Int16/32/64`   | `Int16/32/64`                  | int2/4/8   |
//! | `Text`          | `Str`                          | text       |
//! | `TextArray`     | `ArrayStr`                     | text[]     |
//! | `Int32Array`    | `ArrayInt32`                   | int4[]     |
//! | `Uuid`          | `Uuid` (string form)           | uuid       |
//! | `Timestamp`     | `Datetime` (UTC tuple)         | timestamptz|
//! | `Jsonb`         | `Jsonb` (bytes)                | jsonb      |
//! | `Null`          | `DbNull`                       | any        |

use crate::pool;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use spin_sdk::pg::{self, Connection, DbValue, ParameterValue, PgError, QueryError};
use std::cell::Cell;
use todo_core::error::ApiError;
use todo_core::outbox::Pending;
use todo_core::reminders::DueReminder;
use todo_core::sql::{SqlValue, Statement};
use todo_core::tasks::{ReminderColumns, TaskRow};
use uuid::Uuid;

/// A connection for one request: taken from the instance's idle connections when it has one
/// (see [`crate::pool`], which also states the rules), opened otherwise, and given back when
/// dropped unless it failed at the connection level.
pub struct Db {
    url: String,
    /// `None` only once given back, in `drop`.
    connection: Option<Connection>,
    broken: Cell<bool>,
}

impl Db {
    pub async fn open(url: &str) -> Result<Self, ApiError> {
        let connection = match pool::take(url) {
            Some(connection) => connection,
            None => Connection::open(url).await.map_err(map_error)?,
        };
        Ok(Db {
            url: url.to_owned(),
            connection: Some(connection),
            broken: Cell::new(false),
        })
    }

    fn connection(&self) -> Result<&Connection, ApiError> {
        self.connection
            .as_ref()
            .ok_or_else(|| ApiError::internal("the connection was given back"))
    }

    /// Maps a failure, and marks the connection broken when the failure was the connection's.
    fn failed(&self, error: pg::Error) -> ApiError {
        if is_connection_failure(&error) {
            self.broken.set(true);
        }
        map_error(error)
    }

    pub async fn rows(&self, statement: Statement) -> Result<Vec<Vec<DbValue>>, ApiError> {
        let params: Vec<ParameterValue> = statement.params.into_iter().map(bind).collect();
        let mut result = self
            .connection()?
            .query(statement.sql, params)
            .await
            .map_err(|e| self.failed(e))?;
        let mut rows = Vec::new();
        while let Some(row) = result.rows().next().await {
            rows.push(row);
        }
        result.result().await.map_err(|e| self.failed(e))?;
        Ok(rows)
    }

    pub async fn execute(&self, statement: Statement) -> Result<u64, ApiError> {
        let params: Vec<ParameterValue> = statement.params.into_iter().map(bind).collect();
        self.connection()?
            .execute(statement.sql, params)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Runs `outbox::claim_pending`: `None` when the lease is busy, else the claimed events.
    pub async fn claim_pending(
        &self,
        statement: Statement,
    ) -> Result<Option<Vec<Pending>>, ApiError> {
        let rows = self.rows(statement).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.iter()
            .filter(|row| !matches!(row.first(), Some(DbValue::DbNull)))
            .map(|row| decode_pending(row))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Runs a statement that returns at most one boolean; `None` when it returned no row.
    pub async fn flag(&self, statement: Statement) -> Result<Option<bool>, ApiError> {
        let rows = self.rows(statement).await?;
        match rows.first().map(|row| row.first()) {
            None => Ok(None),
            Some(Some(DbValue::Boolean(b))) => Ok(Some(*b)),
            Some(other) => Err(ApiError::internal(format!(
                "expected a boolean, got {other:?}"
            ))),
        }
    }

    /// Runs a statement that selects at most one JSON object and decodes it into `T`; `None`
    /// when it returned no row.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        statement: Statement,
    ) -> Result<Option<T>, ApiError> {
        let rows = self.rows(statement).await?;
        match rows.first().map(|row| row.first()) {
            None => Ok(None),
            Some(Some(DbValue::Jsonb(bytes))) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("decoding a JSON row: {e}"))),
            Some(other) => Err(ApiError::internal(format!(
                "expected a JSON object, got {other:?}"
            ))),
        }
    }

    /// Runs a statement that returns a single count (e.g. `select count(*) from written`).
    pub async fn count(&self, statement: Statement) -> Result<i64, ApiError> {
        let rows = self.rows(statement).await?;
        match rows.first().and_then(|row| row.first()) {
            Some(DbValue::Int64(n)) => Ok(*n),
            other => Err(ApiError::internal(format!(
                "expected a count, got {other:?}"
            ))),
        }
    }

    pub async fn tasks(
        &self,
        statement: Statement,
    ) -> Result<Vec<todo_core::tasks::Task>, ApiError> {
        self.rows(statement)
            .await?
            .into_iter()
            .map(|row| {
                decode_task(&row).and_then(|(task, reminder)| {
                    task.into_task_with(reminder).map_err(ApiError::internal)
                })
            })
            .collect()
    }

    /// Rows selected with `reminders::DUE_COLUMNS`.
    pub async fn due_reminders(&self, statement: Statement) -> Result<Vec<DueReminder>, ApiError> {
        self.rows(statement)
            .await?
            .iter()
            .map(|row| decode_due_reminder(row))
            .collect()
    }
}

/// A row selected with `outbox::PENDING_COLUMNS`.
fn decode_pending(row: &[DbValue]) -> Result<Pending, ApiError> {
    match row {
        [
            DbValue::Int64(seq),
            DbValue::Uuid(id),
            DbValue::Str(topic),
            DbValue::Jsonb(event),
        ] => Ok(Pending {
            seq: *seq,
            event_id: Uuid::parse_str(id)
                .map_err(|_| ApiError::internal(format!("outbox id {id}")))?,
            topic: topic.clone(),
            event: serde_json::from_slice(event)
                .map_err(|e| ApiError::internal(format!("outbox event: {e}")))?,
        }),
        other => Err(ApiError::internal(format!("outbox row {other:?}"))),
    }
}

fn bind(value: SqlValue) -> ParameterValue {
    match value {
        SqlValue::Null => ParameterValue::DbNull,
        SqlValue::Bool(b) => ParameterValue::Boolean(b),
        SqlValue::Int16(n) => ParameterValue::Int16(n),
        SqlValue::Int32(n) => ParameterValue::Int32(n),
        SqlValue::Int64(n) => ParameterValue::Int64(n),
        SqlValue::Text(s) => ParameterValue::Str(s),
        SqlValue::TextArray(v) => ParameterValue::ArrayStr(v.into_iter().map(Some).collect()),
        SqlValue::Int32Array(v) => ParameterValue::ArrayInt32(v.into_iter().map(Some).collect()),
        SqlValue::Int64Array(v) => ParameterValue::ArrayInt64(v.into_iter().map(Some).collect()),
        SqlValue::Uuid(u) => ParameterValue::Uuid(u.to_string()),
        SqlValue::Timestamp(t) => ParameterValue::Datetime((
            t.year(),
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond(),
        )),
        SqlValue::Jsonb(v) => ParameterValue::Jsonb(serde_json::to_vec(&v).unwrap_or_default()),
    }
}

/// SQLSTATE classes that mean "the database is not reachable right now": connection
/// exceptions (08), operator intervention such as shutdown (57P0x), insufficient resources (53).
fn is_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0") || code.starts_with("53")
}

/// Maps a pg failure: unreachable database -> 503, anything else -> 500 (logged).
pub fn map_error(error: pg::Error) -> ApiError {
    match &error {
        pg::Error::PgError(PgError::ConnectionFailed(_)) => ApiError::Unavailable {
            detail: error.to_string(),
        },
        pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db)))
            if is_unavailable(&db.code) =>
        {
            ApiError::Unavailable {
                detail: db.as_text.clone(),
            }
        }
        // Unstructured query failures come from the connection itself (closed, reset).
        pg::Error::PgError(PgError::QueryFailed(QueryError::Text(text))) => ApiError::Unavailable {
            detail: text.clone(),
        },
        _ => ApiError::internal(error.to_string()),
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !self.broken.get()
        {
            pool::give_back(std::mem::take(&mut self.url), connection);
        }
    }
}

/// Whether `error` leaves the session unusable: the connection failed, closed or was reset
/// (unstructured query failures come from the connection itself), or the server is going away.
/// A statement's own error (a constraint, a bad value) does not.
fn is_connection_failure(error: &pg::Error) -> bool {
    match error {
        pg::Error::PgError(PgError::ConnectionFailed(_))
        | pg::Error::PgError(PgError::QueryFailed(QueryError::Text(_))) => true,
        pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => {
            is_unavailable(&db.code)
        }
        _ => false,
    }
}

/// The SQLSTATE of a database error, to map constraint violations at the query.
pub fn sqlstate(error: &pg::Error) -> Option<&str> {
    match error {
        pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => Some(&db.code),
        _ => None,
    }
}

fn text(value: &DbValue, column: &str) -> Result<String, ApiError> {
    match value {
        DbValue::Str(s) => Ok(s.clone()),
        other => Err(unexpected(column, other)),
    }
}

fn opt_text(value: &DbValue, column: &str) -> Result<Option<String>, ApiError> {
    match value {
        DbValue::DbNull => Ok(None),
        other => text(other, column).map(Some),
    }
}

fn time(value: &DbValue, column: &str) -> Result<DateTime<Utc>, ApiError> {
    match value {
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            NaiveDate::from_ymd_opt(*y, u32::from(*mo), u32::from(*d))
                .and_then(|date| {
                    date.and_hms_nano_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *ns)
                })
                .map(|naive| naive.and_utc())
                .ok_or_else(|| unexpected(column, value))
        }
        other => Err(unexpected(column, other)),
    }
}

fn opt_time(value: &DbValue, column: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value {
        DbValue::DbNull => Ok(None),
        other => time(other, column).map(Some),
    }
}

fn int32(value: &DbValue, column: &str) -> Result<i32, ApiError> {
    match value {
        DbValue::Int32(n) => Ok(*n),
        other => Err(unexpected(column, other)),
    }
}

fn unexpected(column: &str, value: &DbValue) -> ApiError {
    ApiError::internal(format!("column {column}: unexpected {value:?}"))
}

fn opt_int32(value: &DbValue, column: &str) -> Result<Option<i32>, ApiError> {
    match value {
        DbValue::DbNull => Ok(None),
        other => int32(other, column).map(Some),
    }
}

fn uuid(value: &DbValue, column: &str) -> Result<Uuid, ApiError> {
    match value {
        DbValue::Uuid(s) => Uuid::parse_str(s).map_err(|_| unexpected(column, value)),
        other => Err(unexpected(column, other)),
    }
}

/// Decodes a row selected with `reminders::DUE_COLUMNS`.
fn decode_due_reminder(row: &[DbValue]) -> Result<DueReminder, ApiError> {
    let [id, user_id, title, due_at, remind_at, minutes] = row else {
        return Err(ApiError::internal(format!(
            "due reminder row has {} columns",
            row.len()
        )));
    };
    Ok(DueReminder {
        task_id: uuid(id, "id")?,
        user_id: text(user_id, "user_id")?,
        title: text(title, "title")?,
        due_at: time(due_at, "due_at")?,
        remind_at: time(remind_at, "remind_at")?,
        remind_before_minutes: opt_int32(minutes, "remind_before_minutes")?
            .map(|m| u32::try_from(m).map_err(|_| unexpected("remind_before_minutes", minutes)))
            .transpose()?,
    })
}

/// Decodes a row selected with `TASK_COLUMNS`.
fn decode_task(row: &[DbValue]) -> Result<(TaskRow, ReminderColumns), ApiError> {
    let [
        id,
        user_id,
        title,
        description,
        completed,
        completed_at,
        priority,
        tags,
        due_at,
        recurrence,
        created_at,
        updated_at,
        version,
        series_id,
        occurrence,
        series_anchor,
        anchor_occurrence,
        remind_before_minutes,
        remind_at,
        reminder_fired_at,
    ] = row
    else {
        return Err(ApiError::internal(format!(
            "task row has {} columns",
            row.len()
        )));
    };
    let reminder = ReminderColumns {
        remind_before_minutes: opt_int32(remind_before_minutes, "remind_before_minutes")?,
        remind_at: opt_time(remind_at, "remind_at")?,
        reminder_fired_at: opt_time(reminder_fired_at, "reminder_fired_at")?,
    };
    let task = TaskRow {
        id: match id {
            DbValue::Uuid(s) => Uuid::parse_str(s).map_err(|_| unexpected("id", id))?,
            other => return Err(unexpected("id", other)),
        },
        user_id: text(user_id, "user_id")?,
        title: text(title, "title")?,
        description: opt_text(description, "description")?,
        completed: match completed {
            DbValue::Boolean(b) => *b,
            other => return Err(unexpected("completed", other)),
        },
        completed_at: opt_time(completed_at, "completed_at")?,
        priority: match priority {
            DbValue::Int16(n) => *n,
            other => return Err(unexpected("priority", other)),
        },
        tags: match tags {
            DbValue::ArrayStr(items) => items.iter().flatten().cloned().collect(),
            other => return Err(unexpected("tags", other)),
        },
        due_at: opt_time(due_at, "due_at")?,
        recurrence: match recurrence {
            DbValue::DbNull => None,
            DbValue::Jsonb(bytes) => Some(
                serde_json::from_slice(bytes).map_err(|_| unexpected("recurrence", recurrence))?,
            ),
            other => return Err(unexpected("recurrence", other)),
        },
        created_at: time(created_at, "created_at")?,
        updated_at: time(updated_at, "updated_at")?,
        version: match version {
            DbValue::Int64(n) => *n,
            other => return Err(unexpected("version", other)),
        },
        series_id: match series_id {
            DbValue::Uuid(s) => {
                Uuid::parse_str(s).map_err(|_| unexpected("series_id", series_id))?
            }
            other => return Err(unexpected("series_id", other)),
        },
        occurrence: int32(occurrence, "occurrence")?,
        series_anchor: opt_time(series_anchor, "series_anchor")?,
        anchor_occurrence: int32(anchor_occurrence, "anchor_occurrence")?,
    };
    Ok((task, reminder))
}
