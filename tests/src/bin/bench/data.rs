//! Test data: bulk-loaded tasks, bearer tokens, and the CloudEvents the intake is fed.

use anyhow::{Context as _, Result};
use serde_json::Value;
use std::collections::HashMap;
use tokio_postgres::Client;
use uuid::Uuid;

/// Leaves `tasks` as autovacuum does once it has caught up with a bulk load: hint bits set
/// and statistics that know the new rows, so that no measurement pays for either or has
/// autovacuum start in its middle. (Statistics that predated a load once made lookups by id
/// read every task of the new user, 2,900 buffers instead of 3, until `tasks` was keyed by
/// user and id.) Call it after each load, before measuring.
pub async fn settle_tasks(client: &Client) -> Result<()> {
    client
        .batch_execute("vacuum analyze tasks")
        .await
        .context("vacuum analyze tasks")
}

/// Inserts `per_user` tasks for each of `users` in one statement. Priority, tags (and so
/// `tag_keys`), completion and due date vary with the row number; a tenth have no due date.
/// Due dates are scattered so that due-date order is not insertion order.
pub async fn bulk_load(client: &Client, users: &[String], per_user: i32) -> Result<u64> {
    client
        .execute(
            "insert into tasks (id, user_id, title, description, completed, completed_at, \
             priority, tags, tag_keys, due_at, recurrence, created_at, updated_at, version, \
             series_id, occurrence, series_anchor, anchor_occurrence) \
             select id, u, 'Bench task ' || g, \
                    case when g % 3 = 0 then null else 'Generated description ' || g end, \
                    g % 4 = 0, case when g % 4 = 0 then now() end, \
                    1 + g % 3, tags, \
                    (select coalesce(array_agg(lower(t)), '{}') from unnest(tags) as t), \
                    due, null, created, created, 1, id, 0, due, 0 \
             from (select gen_random_uuid() as id, u, g, \
                          case g % 5 when 0 then array['Work'] when 1 then array['home'] \
                               when 2 then array['Work', 'urgent'] when 3 then array[]::text[] \
                               else array['errands', 'home'] end as tags, \
                          case when g % 10 = 0 then null \
                               else timestamptz '2026-01-01 00:00:00+00' \
                                    + ((g::bigint * 7919) % $2::int) * interval '1 minute' end as due, \
                          now() - g * interval '1 second' as created \
                   from unnest($1::text[]) as u, generate_series(1, $2::int) as g) as s",
            &[&users, &per_user],
        )
        .await
        .context("bulk-loading tasks")
}

/// The ids of each user's tasks, in id order.
pub async fn task_ids(client: &Client, users: &[String]) -> Result<HashMap<String, Vec<Uuid>>> {
    let rows = client
        .query(
            "select user_id, id from tasks where user_id = any($1) order by user_id, id",
            &[&users],
        )
        .await
        .context("reading task ids")?;
    let mut ids: HashMap<String, Vec<Uuid>> = HashMap::new();
    for row in rows {
        ids.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(ids)
}

/// A sample of up to `limit` task ids of `user`.
pub async fn sample_ids(client: &Client, user: &str, limit: i64) -> Result<Vec<Uuid>> {
    Ok(client
        .query(
            "select id from tasks where user_id = $1 order by md5(id::text) limit $2",
            &[&user, &limit],
        )
        .await
        .context("sampling task ids")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// An HS256 bearer token for `user`, valid for a day.
pub fn token(user: &str, secret: &str) -> String {
    let claims = serde_json::json!({
        "sub": user,
        "exp": chrono::Utc::now().timestamp() + 86_400,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default();
    format!("Bearer {token}")
}

/// A copy of a `task.completed` event about another stored task, `new_task` (a copy of the
/// completed task made by `clone_completed`): a new event id, and the completed task's id
/// (which is also its series id) replaced everywhere, so each copy makes the intake create one
/// next occurrence.
pub fn fresh_completion(template: &Value, task_id: &str, new_task: Uuid) -> Value {
    let mut event = template.clone();
    replace_strings(&mut event, task_id, &new_task.to_string());
    event["id"] = Value::String(Uuid::now_v7().to_string());
    event
}

/// The id of the completed task operation `op` delivers a completion of, among copies made
/// for one scenario (`prefix`).
pub fn completed_copy(prefix: u64, op: usize) -> Uuid {
    Uuid::from_u64_pair(prefix, op as u64)
}

/// Copies the stored, completed task `task_id` of `user` once per id, each its own series
/// (the intake acts only on a completion whose task is stored and still completed).
pub async fn clone_completed(
    client: &tokio_postgres::Client,
    user: &str,
    task_id: Uuid,
    ids: &[Uuid],
) -> anyhow::Result<u64> {
    let columns: Vec<String> = client
        .query(
            "select column_name from information_schema.columns where table_name = 'tasks' \
             and is_generated = 'NEVER' order by ordinal_position",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let values: Vec<String> = columns
        .iter()
        .map(|column| match column.as_str() {
            "id" => "copy.id".to_owned(),
            "series_id" => "null".to_owned(),
            other => format!("t.{other}"),
        })
        .collect();
    let sql = format!(
        "insert into tasks ({}) select {} from tasks t, unnest($1::uuid[]) as copy(id) \
         where t.id = $2 and t.user_id = $3",
        columns.join(", "),
        values.join(", ")
    );
    Ok(client.execute(&sql, &[&ids, &task_id, &user]).await?)
}

fn replace_strings(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_owned(),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}
