//! The floor: what the same work costs natively. The statements come from `todo-core`, built
//! exactly as the components build them, and run through tokio-postgres on one connection per
//! worker; the no-database route is answered by a bare hyper server.

use anyhow::{Context as _, Result, anyhow};
use bytes::{Bytes, BytesMut};
use chrono::NaiveDateTime;
use http::{Response, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::net::SocketAddr;
use todo_core::sql::{SqlValue, Statement};
use todo_core::tasks::{ReminderColumns, Task, TaskRow};
use tokio::net::TcpListener;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
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

/// Rows selected with `TASK_COLUMNS`, decoded as the components decode them.
pub async fn tasks(client: &Client, statement: &Statement) -> Result<Vec<Task>> {
    run(client, statement)
        .await?
        .iter()
        .map(decode_task)
        .collect()
}

fn utc(t: Option<NaiveDateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.map(|t| t.and_utc())
}

fn decode_task(row: &Row) -> Result<Task> {
    let tags: Vec<Option<String>> = row.try_get(7)?;
    let created_at: NaiveDateTime = row.try_get(10)?;
    let updated_at: NaiveDateTime = row.try_get(11)?;
    // The reminder columns follow the others (migrations/0004_reminders.sql).
    let reminder = if row.len() >= 20 {
        ReminderColumns {
            remind_before_minutes: row.try_get(17)?,
            remind_at: utc(row.try_get(18)?),
            reminder_fired_at: utc(row.try_get(19)?),
        }
    } else {
        ReminderColumns::default()
    };
    TaskRow {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        title: row.try_get(2)?,
        description: row.try_get(3)?,
        completed: row.try_get(4)?,
        completed_at: utc(row.try_get(5)?),
        priority: row.try_get(6)?,
        tags: tags.into_iter().flatten().collect(),
        due_at: utc(row.try_get(8)?),
        recurrence: row.try_get(9)?,
        created_at: created_at.and_utc(),
        updated_at: updated_at.and_utc(),
        version: row.try_get(12)?,
        series_id: row.try_get(13)?,
        occurrence: row.try_get(14)?,
        series_anchor: utc(row.try_get(15)?),
        anchor_occurrence: row.try_get(16)?,
    }
    .into_task_with(reminder)
    .map_err(|e| anyhow!(e))
}

fn excerpt(sql: &str) -> &str {
    &sql[..sql.len().min(80)]
}

/// A bare HTTP/1.1 server answering every request with `body` as `application/json`: the
/// floor of a route that needs no database.
pub async fn static_json_server(body: Bytes) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
