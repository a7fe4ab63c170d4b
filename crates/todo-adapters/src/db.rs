//! The PostgreSQL adapter: binds the core's [`SqlValue`]s to Spin's pg interface, reads
//! results back as `SqlValue`s for the core's row decoders, and maps database failures to API
//! errors.
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
use chrono::{Datelike, NaiveDate, Timelike};
use spin_sdk::pg::{self, Connection, DbValue, ParameterValue, PgError, QueryError};
use std::cell::Cell;
use todo_core::error::ApiError;
use todo_core::outbox::{self, Claimed, Pending};
use todo_core::reminders::DueReminder;
use todo_core::sql::{SqlValue, Statement};
use todo_core::tasks::{Task, store};
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

    /// Runs a statement and returns its rows as the core's values.
    pub async fn rows(&self, statement: Statement) -> Result<Vec<Vec<SqlValue>>, ApiError> {
        let params: Vec<ParameterValue> = statement.params.into_iter().map(bind).collect();
        let mut result = self
            .connection()?
            .query(statement.sql, params)
            .await
            .map_err(|e| self.failed(e))?;
        let mut rows = Vec::new();
        while let Some(row) = result.rows().next().await {
            rows.push(row.into_iter().map(read).collect::<Result<_, _>>()?);
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
        outbox::decode_claim(&self.rows(statement).await?).map_err(ApiError::internal)
    }

    /// Runs a statement that returns at most one boolean; `None` when it returned no row.
    pub async fn flag(&self, statement: Statement) -> Result<Option<bool>, ApiError> {
        let rows = self.rows(statement).await?;
        match rows.first().map(|row| row.first()) {
            None => Ok(None),
            Some(Some(SqlValue::Bool(b))) => Ok(Some(*b)),
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
            Some(Some(SqlValue::Jsonb(json))) => T::deserialize(json)
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
            Some(SqlValue::Int64(n)) => Ok(*n),
            other => Err(ApiError::internal(format!(
                "expected a count, got {other:?}"
            ))),
        }
    }

    /// Runs a single-count write (`outbox::select_written_count`): its count, and what its claim
    /// of the publishing lease found, if it was built with one.
    pub async fn write(&self, statement: Statement) -> Result<(i64, Option<Claimed>), ApiError> {
        let rows = self.rows(statement).await?;
        match rows.first().map(Vec::as_slice) {
            Some([SqlValue::Int64(n), claim @ ..]) => {
                let claimed = Claimed::decode(claim, 0).map_err(ApiError::internal)?;
                Ok((*n, claimed))
            }
            other => Err(ApiError::internal(format!(
                "expected a count, got {other:?}"
            ))),
        }
    }

    /// Rows selected with `tasks::store::TASK_COLUMNS`.
    pub async fn tasks(&self, statement: Statement) -> Result<Vec<Task>, ApiError> {
        self.rows(statement)
            .await?
            .iter()
            .map(|row| store::decode(row).map_err(ApiError::internal))
            .collect()
    }

    /// Rows selected by `reminders::due`.
    pub async fn due_reminders(&self, statement: Statement) -> Result<Vec<DueReminder>, ApiError> {
        self.rows(statement)
            .await?
            .iter()
            .map(|row| DueReminder::decode(row).map_err(ApiError::internal))
            .collect()
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

/// Spin's value of a column as the core's; the core decodes rows from these.
fn read(value: DbValue) -> Result<SqlValue, ApiError> {
    Ok(match value {
        DbValue::DbNull => SqlValue::Null,
        DbValue::Boolean(b) => SqlValue::Bool(b),
        DbValue::Int16(n) => SqlValue::Int16(n),
        DbValue::Int32(n) => SqlValue::Int32(n),
        DbValue::Int64(n) => SqlValue::Int64(n),
        DbValue::Str(s) => SqlValue::Text(s),
        // Null elements are never written; they would be dropped.
        DbValue::ArrayStr(items) => SqlValue::TextArray(items.into_iter().flatten().collect()),
        DbValue::ArrayInt32(items) => SqlValue::Int32Array(items.into_iter().flatten().collect()),
        DbValue::ArrayInt64(items) => SqlValue::Int64Array(items.into_iter().flatten().collect()),
        DbValue::Uuid(text) => SqlValue::Uuid(
            Uuid::parse_str(&text).map_err(|_| ApiError::internal(format!("uuid {text:?}")))?,
        ),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => SqlValue::Timestamp(
            NaiveDate::from_ymd_opt(y, u32::from(mo), u32::from(d))
                .and_then(|date| {
                    date.and_hms_nano_opt(u32::from(h), u32::from(mi), u32::from(s), ns)
                })
                .map(|naive| naive.and_utc())
                .ok_or_else(|| {
                    ApiError::internal(format!("date-time {:?}", (y, mo, d, h, mi, s, ns)))
                })?,
        ),
        DbValue::Jsonb(bytes) => SqlValue::Jsonb(
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal(format!("jsonb column: {e}")))?,
        ),
        other => return Err(ApiError::internal(format!("unexpected column {other:?}"))),
    })
}
