//! The task event catalog: CloudEvents 1.0 built with the maintained `cloudevents-sdk`.
//!
//! DESIGN.md sections 1 and 4. One JSON schema per type lives in `schemas/`; the tests below
//! check every built event against it. Events are stored in the outbox with the task change
//! and published later with the same `id`, so a retry is recognisable as the same event.

use crate::tasks::Task;
use crate::tasks::store::OutboxRow;
use crate::tasks::time::serde_utc;
use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use serde::Serialize;
use uuid::Uuid;

pub const TASK_CREATED: &str = "task.created";
pub const TASK_UPDATED: &str = "task.updated";
pub const TASK_COMPLETED: &str = "task.completed";
pub const TASK_DELETED: &str = "task.deleted";

/// Where events go and what they carry over from the request.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// CloudEvents `source` (a URI reference naming this app).
    pub source: String,
    /// Topic of task events (`tasks`).
    pub topic: String,
    /// W3C trace context of the request that caused the change, if it had one.
    pub traceparent: Option<String>,
}

#[derive(Serialize)]
struct UpdatedData<'a> {
    task: &'a Task,
    changed_fields: &'a [&'static str],
}

#[derive(Serialize)]
struct CompletedData<'a> {
    task_id: Uuid,
    completed: bool,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    completed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    due_at: Option<DateTime<Utc>>,
    recurrence: &'a Option<crate::recurrence::Recurrence>,
    /// The task as it is after the change, so consumers need no read-back.
    task: &'a Task,
    /// Where the series' calendar counts from (see `series`), so the recurrence engine can
    /// compute the next occurrence from the event alone.
    #[serde(serialize_with = "serde_utc::option::serialize")]
    series_anchor: Option<DateTime<Utc>>,
    anchor_occurrence: u32,
}

#[derive(Serialize)]
struct DeletedData<'a> {
    task_id: Uuid,
    /// The task as it was just before deletion.
    last_state: &'a Task,
}

impl EventContext {
    /// The events a change from `before` to `after` causes, in the order consumers must see
    /// them: `task.updated` for field changes, then `task.completed` when completion flipped.
    pub fn for_change(
        &self,
        after: &Task,
        changed: &[&'static str],
        now: DateTime<Utc>,
    ) -> Vec<OutboxRow> {
        let mut rows = Vec::new();
        let others: Vec<&'static str> = changed
            .iter()
            .copied()
            .filter(|f| *f != "completed")
            .collect();
        if !others.is_empty() {
            rows.push(self.updated(after, &others, now));
        }
        if changed.contains(&"completed") {
            rows.push(self.completed(after, now));
        }
        rows
    }

    pub fn created(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        self.build(TASK_CREATED, task, serde_json::to_value(task), now)
    }

    pub fn updated(&self, task: &Task, changed: &[&'static str], now: DateTime<Utc>) -> OutboxRow {
        let data = UpdatedData {
            task,
            changed_fields: changed,
        };
        self.build(TASK_UPDATED, task, serde_json::to_value(data), now)
    }

    pub fn completed(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        let data = CompletedData {
            task_id: task.id,
            completed: task.completed,
            completed_at: task.completed_at,
            due_at: task.due_at,
            recurrence: &task.recurrence,
            task,
            series_anchor: task.series_anchor,
            anchor_occurrence: task.anchor_occurrence,
        };
        self.build(TASK_COMPLETED, task, serde_json::to_value(data), now)
    }

    pub fn deleted(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        let data = DeletedData {
            task_id: task.id,
            last_state: task,
        };
        self.build(TASK_DELETED, task, serde_json::to_value(data), now)
    }

    fn build(
        &self,
        kind: &str,
        task: &Task,
        data: serde_json::Result<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> OutboxRow {
        let id = Uuid::now_v7();
        let data = data.unwrap_or(serde_json::Value::Null);
        let event = cloud_event(
            id,
            &self.source,
            kind,
            &task.id.to_string(),
            &task.user_id,
            self.traceparent.as_deref(),
            data,
            now,
        );
        OutboxRow {
            event_id: id,
            user_id: task.user_id.clone(),
            topic: self.topic.clone(),
            event,
        }
    }
}

/// A structured-mode CloudEvent (JSON) with this app's attributes. `partitionkey` is the
/// user id: Dapr's Kafka publisher keys the record by `metadata.partitionKey` in the publish
/// URL, and the extension keeps the key visible to consumers (DESIGN.md section 2.3).
#[allow(clippy::too_many_arguments)]
pub fn cloud_event(
    id: Uuid,
    source: &str,
    kind: &str,
    subject: &str,
    partition_key: &str,
    traceparent: Option<&str>,
    data: serde_json::Value,
    time: DateTime<Utc>,
) -> serde_json::Value {
    let mut builder = EventBuilderV10::new()
        .id(id.to_string())
        .source(source)
        .ty(kind)
        .subject(subject)
        .time(time)
        .extension("partitionkey", partition_key)
        .data("application/json", data);
    if let Some(traceparent) = traceparent.filter(|t| is_traceparent(t)) {
        builder = builder.extension("traceparent", traceparent);
    }
    match builder.build() {
        Ok(event) => serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        // Unreachable with the attributes above; an event is never dropped for it.
        Err(e) => serde_json::json!({
            "specversion": "1.0", "id": id.to_string(), "source": source, "type": kind,
            "subject": subject, "partitionkey": partition_key, "error": e.to_string(),
        }),
    }
}

/// W3C trace context `version-traceid-parentid-flags`; anything else is not carried over.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{TaskChanges, UserId};

    fn context(traceparent: Option<&str>) -> EventContext {
        EventContext {
            source: "/todo-spin/tasks".into(),
            topic: "tasks".into(),
            traceparent: traceparent.map(str::to_owned),
        }
    }

    fn task() -> Task {
        let changes = TaskChanges {
            title: Some("Water plants".into()),
            ..TaskChanges::default()
        };
        Task::create(
            Uuid::now_v7(),
            &UserId::parse("alice").expect("id"),
            changes,
            Utc::now(),
        )
    }

    #[test]
    fn created_event_has_every_attribute() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let task = task();
        let row = context(Some(trace)).created(&task, task.created_at);
        let e = &row.event;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], row.event_id.to_string());
        assert_eq!(e["type"], "task.created");
        assert_eq!(e["source"], "/todo-spin/tasks");
        assert_eq!(e["subject"], task.id.to_string());
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["partitionkey"], "alice");
        assert_eq!(e["traceparent"], trace);
        assert_eq!(e["data"]["title"], "Water plants", "data is embedded JSON");
        assert!(e["time"].is_string());
        assert_eq!(row.user_id, "alice");
        assert_eq!(row.topic, "tasks");
    }

    #[test]
    fn malformed_traceparent_is_not_carried_over() {
        let row = context(Some("not-a-trace")).created(&task(), Utc::now());
        assert!(row.event.get("traceparent").is_none());
    }

    #[test]
    fn a_change_yields_updated_then_completed() {
        let before = task();
        let changes = TaskChanges {
            title: Some("Water all plants".into()),
            completed: Some(true),
            ..TaskChanges::default()
        };
        let now = Utc::now();
        let (after, changed) = before.apply(&changes, now);
        let rows = context(None).for_change(&after, &changed, now);
        let types: Vec<&str> = rows
            .iter()
            .map(|r| r.event["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(types, ["task.updated", "task.completed"]);
        assert_eq!(
            rows[0].event["data"]["changed_fields"],
            serde_json::json!(["title"])
        );
        assert_eq!(rows[1].event["data"]["completed"], true);
        assert!(
            rows[0].event_id < rows[1].event_id,
            "v7 ids follow creation order"
        );
    }
}
