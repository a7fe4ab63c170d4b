//! Runs `todo-core` statements natively through tokio-postgres, bound the way the pg host binds
//! the components' parameters: for the benchmark's floor and for tests of the SQL itself.

use anyhow::{Context as _, Result, anyhow};
use bytes::BytesMut;
use todo_core::sql::{SqlValue, Statement};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Row};

/// SQL NULL for a placeholder of any type, as the pg host binds `db-null`.
#[derive(Debug)]
struct AnyNull;

impl ToSql for AnyNull {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The Rust value each core parameter is bound as; the same mapping as the components'
/// (todo-adapters `db.rs`) through the pg host: date-times as naive UTC `timestamp`.
fn bind(value: &SqlValue) -> Box<dyn ToSql + Sync + Send> {
    match value {
        SqlValue::Null => Box::new(AnyNull),
        SqlValue::Bool(b) => Box::new(*b),
        SqlValue::Int16(n) => Box::new(*n),
        SqlValue::Int32(n) => Box::new(*n),
        SqlValue::Int64(n) => Box::new(*n),
        SqlValue::Text(s) => Box::new(s.clone()),
        SqlValue::TextArray(v) => Box::new(v.clone()),
        SqlValue::Int32Array(v) => Box::new(v.clone()),
        SqlValue::Int64Array(v) => Box::new(v.clone()),
        SqlValue::Uuid(u) => Box::new(*u),
        SqlValue::Timestamp(t) => Box::new(t.naive_utc()),
        SqlValue::Jsonb(v) => Box::new(v.clone()),
    }
}

/// Runs one core statement as the pg host does: text and parameters, no prepared-statement
/// cache.
pub async fn run(client: &Client, statement: &Statement) -> Result<Vec<Row>> {
    let params: Vec<Box<dyn ToSql + Sync + Send>> = statement.params.iter().map(bind).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client
        .query(statement.sql.as_str(), &refs)
        .await
        .with_context(|| format!("running {}", excerpt(&statement.sql)))
}

/// The single count a write statement returns.
pub async fn count(client: &Client, statement: &Statement) -> Result<i64> {
    let rows = run(client, statement).await?;
    rows.first()
        .map(|row| row.try_get::<_, i64>(0))
        .transpose()?
        .ok_or_else(|| anyhow!("the statement returned no row"))
}

/// A row as the core's values, read the way the pg host reads them for the components
/// (todo-adapters `db.rs`), so the core's row decoders apply: date-times as naive UTC
/// `timestamp`, null array elements dropped.
pub fn values(row: &Row) -> Result<Vec<SqlValue>> {
    (0..row.len()).map(|i| value(row, i)).collect()
}

fn value(row: &Row, i: usize) -> Result<SqlValue> {
    fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<Option<T>> {
        row.try_get::<_, Option<T>>(i)
            .with_context(|| format!("reading column {i}"))
    }
    let value = match *row.columns()[i].type_() {
        Type::BOOL => get(row, i)?.map(SqlValue::Bool),
        Type::INT2 => get(row, i)?.map(SqlValue::Int16),
        Type::INT4 => get(row, i)?.map(SqlValue::Int32),
        Type::INT8 => get(row, i)?.map(SqlValue::Int64),
        Type::TEXT | Type::VARCHAR => get(row, i)?.map(SqlValue::Text),
        Type::TEXT_ARRAY => get::<Vec<Option<String>>>(row, i)?
            .map(|items| SqlValue::TextArray(items.into_iter().flatten().collect())),
        Type::UUID => get(row, i)?.map(SqlValue::Uuid),
        Type::TIMESTAMP => {
            get::<chrono::NaiveDateTime>(row, i)?.map(|t| SqlValue::Timestamp(t.and_utc()))
        }
        Type::JSONB | Type::JSON => get(row, i)?.map(SqlValue::Jsonb),
        ref other => return Err(anyhow!("column {i} has type {other}, which is not read")),
    };
    Ok(value.unwrap_or(SqlValue::Null))
}

fn excerpt(sql: &str) -> &str {
    &sql[..sql.floor_char_boundary(80)]
}
