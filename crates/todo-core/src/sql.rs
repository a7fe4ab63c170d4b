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

/// A column a query selects. A `timestamptz` is selected as its UTC wall time (a plain
/// `timestamp`): Spin's pg host decodes date-times with the naive `timestamp` decoder, which
/// refuses `timestamptz` values (spinframework/spin `factor-outbound-pg` `convert_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
    /// An expression selected under the column's name instead of the column itself.
    pub expr: Option<&'static str>,
}

impl Column {
    pub const fn new(name: &'static str, sql_type: &'static str) -> Self {
        Self {
            name,
            sql_type,
            expr: None,
        }
    }

    /// The column selected as `expr`.
    pub const fn read_as(self, expr: &'static str) -> Self {
        Self {
            expr: Some(expr),
            ..self
        }
    }

    /// The select-list entry, named after the column.
    pub fn select(&self) -> String {
        let name = self.name;
        match self.expr {
            Some(expr) => format!("{expr} as {name}"),
            None if self.sql_type == "timestamptz" => {
                format!("{name} at time zone 'UTC' as {name}")
            }
            None => name.to_owned(),
        }
    }
}

/// The select list of `columns`, in their order; rows come back in it.
pub fn select_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(Column::select)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row as a query returned it, read by the name of each column in the select list it was
/// selected with. Errors mean the database returned something the query never selects.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [Column],
    values: &'a [SqlValue],
}

impl<'a> Row<'a> {
    pub fn new(columns: &'a [Column], values: &'a [SqlValue]) -> Result<Self, String> {
        if columns.len() != values.len() {
            return Err(format!(
                "a row of {} columns where {} were selected",
                values.len(),
                columns.len()
            ));
        }
        Ok(Self { columns, values })
    }

    pub fn get(&self, name: &str) -> Result<&'a SqlValue, String> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .map(|i| &self.values[i])
            .ok_or_else(|| format!("column {name} is not selected"))
    }

    fn unexpected(name: &str, value: &SqlValue) -> String {
        format!("column {name}: unexpected {value:?}")
    }

    /// The value of a nullable column, `None` for SQL NULL.
    fn nullable<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'a SqlValue) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.get(name)? {
            SqlValue::Null => Ok(None),
            value => read(value)
                .map(Some)
                .ok_or_else(|| Self::unexpected(name, value)),
        }
    }

    fn required<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'a SqlValue) -> Option<T>,
    ) -> Result<T, String> {
        self.nullable(name, read)?
            .ok_or_else(|| format!("column {name} is null"))
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>, String> {
        self.nullable(name, |v| match v {
            SqlValue::Text(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub fn text(&self, name: &str) -> Result<String, String> {
        self.required(name, |v| match v {
            SqlValue::Text(s) => Some(s.clone()),
            _ => None,
        })
    }

    pub fn bool(&self, name: &str) -> Result<bool, String> {
        self.required(name, |v| match v {
            SqlValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn int16(&self, name: &str) -> Result<i16, String> {
        self.required(name, |v| match v {
            SqlValue::Int16(n) => Some(*n),
            _ => None,
        })
    }

    pub fn opt_int32(&self, name: &str) -> Result<Option<i32>, String> {
        self.nullable(name, |v| match v {
            SqlValue::Int32(n) => Some(*n),
            _ => None,
        })
    }

    pub fn int32(&self, name: &str) -> Result<i32, String> {
        self.opt_int32(name)?
            .ok_or_else(|| format!("column {name} is null"))
    }

    pub fn int64(&self, name: &str) -> Result<i64, String> {
        self.required(name, |v| match v {
            SqlValue::Int64(n) => Some(*n),
            _ => None,
        })
    }

    pub fn uuid(&self, name: &str) -> Result<Uuid, String> {
        self.required(name, |v| match v {
            SqlValue::Uuid(u) => Some(*u),
            _ => None,
        })
    }

    pub fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, String> {
        self.nullable(name, |v| match v {
            SqlValue::Timestamp(t) => Some(*t),
            _ => None,
        })
    }

    pub fn time(&self, name: &str) -> Result<DateTime<Utc>, String> {
        self.opt_time(name)?
            .ok_or_else(|| format!("column {name} is null"))
    }

    pub fn text_array(&self, name: &str) -> Result<Vec<String>, String> {
        self.required(name, |v| match v {
            SqlValue::TextArray(items) => Some(items.clone()),
            _ => None,
        })
    }

    pub fn opt_json(&self, name: &str) -> Result<Option<&'a serde_json::Value>, String> {
        self.nullable(name, |v| match v {
            SqlValue::Jsonb(json) => Some(json),
            _ => None,
        })
    }

    pub fn json(&self, name: &str) -> Result<&'a serde_json::Value, String> {
        self.opt_json(name)?
            .ok_or_else(|| format!("column {name} is null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 3] = [
        Column::new("id", "uuid"),
        Column::new("due_at", "timestamptz"),
        Column::new("series_id", "uuid").read_as("coalesce(series_id, id)"),
    ];

    #[test]
    fn time_columns_are_selected_as_utc_wall_time_under_their_names() {
        assert_eq!(
            select_list(&COLUMNS),
            "id, due_at at time zone 'UTC' as due_at, coalesce(series_id, id) as series_id"
        );
    }

    #[test]
    fn rows_are_read_by_name_and_refuse_what_was_not_selected() {
        let id = Uuid::now_v7();
        let values = [
            SqlValue::Uuid(id),
            SqlValue::Null,
            SqlValue::Text("x".into()),
        ];
        let row = Row::new(&COLUMNS, &values).expect("three columns");
        assert_eq!(row.uuid("id"), Ok(id));
        assert_eq!(row.opt_time("due_at"), Ok(None));
        assert!(
            row.time("due_at").is_err(),
            "null where a value is required"
        );
        assert!(row.uuid("series_id").is_err(), "text is no uuid");
        assert!(row.get("title").is_err(), "not selected");
        assert!(Row::new(&COLUMNS, &values[..2]).is_err(), "a column short");
    }
}
