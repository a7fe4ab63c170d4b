//! A database-neutral statement: SQL text plus typed parameters.
//!
//! The core builds statements; the components bind [`SqlValue`]s to Spin's
//! `spin_sdk::pg::ParameterValue` and run them. Every value reaches the server as a bind
//! parameter, never spliced into the text.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Text(String),
    TextArray(Vec<String>),
    Int32Array(Vec<i32>),
    Int64Array(Vec<i64>),
    Uuid(Uuid),
    /// TIMESTAMPTZ; Spin passes it as a UTC `datetime`.
    Timestamp(DateTime<Utc>),
    Jsonb(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// Builds SQL with `$n` placeholders numbered in the order values are bound.
#[derive(Debug, Default)]
pub struct Builder {
    sql: String,
    params: Vec<SqlValue>,
}

impl Builder {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// Appends literal SQL text (never user input).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Binds a value and returns its placeholder, e.g. `$3`.
    pub fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Binds a value and returns its placeholder cast to `sql_type`, so the server knows the
    /// parameter's type without inference.
    ///
    /// Spin passes date-times as a UTC `datetime`, which its host binds as a naive
    /// `timestamp`; a `timestamptz` slot is therefore written as the UTC wall time converted
    /// with `at time zone 'UTC'`, which does not depend on the session's time zone.
    pub fn typed(&mut self, value: SqlValue, sql_type: &str) -> String {
        let p = self.bind(value);
        typed(&p, sql_type)
    }

    pub fn build(self) -> Statement {
        Statement {
            sql: self.sql,
            params: self.params,
        }
    }
}

/// `$n` cast to `sql_type`, with the `timestamptz` rule of [`Builder::typed`].
pub fn typed(placeholder: &str, sql_type: &str) -> String {
    if sql_type == "timestamptz" {
        format!("({placeholder}::timestamp at time zone 'UTC')")
    } else {
        format!("{placeholder}::{sql_type}")
    }
}

impl From<Option<DateTime<Utc>>> for SqlValue {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        value.map_or(SqlValue::Null, SqlValue::Timestamp)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(value: Option<String>) -> Self {
        value.map_or(SqlValue::Null, SqlValue::Text)
    }
}
