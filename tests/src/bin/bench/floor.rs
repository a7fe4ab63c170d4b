//! The floor: what the same work costs natively. The statements come from `todo-core`, built
//! exactly as the components build them, and run through tokio-postgres on one connection per
//! worker; the no-database route is answered by a bare hyper server.

use anyhow::{Result, anyhow};
use bytes::Bytes;
use chrono::NaiveDateTime;
use http::{Response, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::net::SocketAddr;
use todo_core::sql::Statement;
use todo_core::tasks::{ReminderColumns, Task, TaskRow};
pub use todo_test_host::native_sql::{count, run};
use tokio::net::TcpListener;
use tokio_postgres::{Client, Row};

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
