//! The event catalog: CloudEvents 1.0 built with the maintained `cloudevents-sdk`.
//!
//! CloudEvents 1.0 (README, "Events"). Each type's `data` is one struct in [`wire`], with its
//! JSON schema in `schemas/`; the tests below and `tests/event_schemas.rs` check every built
//! event against it. Events are stored in the outbox with the task change and published later
//! with the same `id`, so a retry is recognisable as the same event.
//!
//! Task events go to the `tasks` topic. Reminder events go to the `reminders` topic (an
//! [`EventContext`] of its own), keyed by user id like every event, and only ever concern a
//! *pending* reminder (`Task::pending_reminder`: set, not fired, task open):
//! - `reminder.scheduled` when a task gains a pending reminder or its fire time moves;
//! - `reminder.cancelled` when a pending reminder will not fire: its task was completed or
//!   deleted, the reminder removed, or the due time changed (then a `reminder.scheduled` for
//!   the new time follows, if a reminder remains);
//! - `reminder.triggered` when the sweep fires it (`crate::reminders`).

pub mod wire;

use crate::outbox::OutboxRow;
use crate::reminders::DueReminder;
use crate::tasks::Task;
use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use uuid::Uuid;
use wire::{
    CancelReason, CancelledData, CompletedData, DeletedData, ReminderData, TaskJson, UpdatedData,
};

pub const TASK_CREATED: &str = "task.created";
pub const TASK_UPDATED: &str = "task.updated";
pub const TASK_COMPLETED: &str = "task.completed";
pub const TASK_DELETED: &str = "task.deleted";
pub const REMINDER_SCHEDULED: &str = "reminder.scheduled";
pub const REMINDER_CANCELLED: &str = "reminder.cancelled";
pub const REMINDER_TRIGGERED: &str = "reminder.triggered";

/// Where events go and what they carry over from the request.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// CloudEvents `source` (a URI reference naming this app).
    pub source: String,
    /// Topic of the events built with this context: `tasks` for task events, `reminders` for
    /// reminder events.
    pub topic: String,
    /// W3C trace context of the request that caused the change, if it had one.
    pub traceparent: Option<String>,
}

/// Where a task write's events go: task events to one topic, reminder events to another, with
/// the same source and trace context.
#[derive(Debug, Clone)]
pub struct Topics {
    pub tasks: EventContext,
    pub reminders: EventContext,
}

impl Topics {
    pub fn new(
        source: String,
        tasks_topic: String,
        reminders_topic: String,
        traceparent: Option<String>,
    ) -> Self {
        let tasks = EventContext {
            source,
            topic: tasks_topic,
            traceparent,
        };
        let reminders = EventContext {
            topic: reminders_topic,
            ..tasks.clone()
        };
        Self { tasks, reminders }
    }

    /// The events of a new task, a client's or a next occurrence: `task.created`, then
    /// `reminder.scheduled` if it has a pending reminder.
    pub fn created(&self, task: &Task, now: DateTime<Utc>) -> Vec<OutboxRow> {
        let mut rows = vec![self.tasks.created(task, now)];
        rows.extend(self.reminders.reminder_changes(None, Some(task), now));
        rows
    }

    /// The events of a change from `before` to `after` whose fields `changed` changed: the
    /// task's ([`EventContext::for_change`]), then the reminder's.
    pub fn changed(
        &self,
        before: &Task,
        after: &Task,
        changed: &[&'static str],
        now: DateTime<Utc>,
    ) -> Vec<OutboxRow> {
        let mut rows = self.tasks.for_change(after, changed, now);
        rows.extend(
            self.reminders
                .reminder_changes(Some(before), Some(after), now),
        );
        rows
    }

    /// The events of deleting `task`: `task.deleted`, then `reminder.cancelled` if a
    /// reminder was pending.
    pub fn deleted(&self, task: &Task, now: DateTime<Utc>) -> Vec<OutboxRow> {
        let mut rows = vec![self.tasks.deleted(task, now)];
        rows.extend(self.reminders.reminder_changes(Some(task), None, now));
        rows
    }
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

    /// The reminder events of a change from `before` to `after` (`None` before a task is
    /// created and after it is deleted), built with `self` as the context of the `reminders`
    /// topic. See the module documentation for when each type is emitted.
    pub fn reminder_changes(
        &self,
        before: Option<&Task>,
        after: Option<&Task>,
        now: DateTime<Utc>,
    ) -> Vec<OutboxRow> {
        let was = before.and_then(|t| Some((t, t.pending_reminder()?)));
        let will = after.and_then(|t| Some((t, t.pending_reminder()?)));
        let due_moved = matches!((before, after), (Some(b), Some(a)) if b.due_at != a.due_at);
        let mut rows = Vec::new();
        match (was, will) {
            (None, None) => {}
            (None, Some((task, at))) => rows.extend(self.reminder_scheduled(task, at, now)),
            (Some((task, at)), None) => {
                let reason = match after {
                    None => CancelReason::Deleted,
                    Some(a) if a.completed => CancelReason::Completed,
                    Some(_) if due_moved => CancelReason::DueChanged,
                    Some(_) => CancelReason::Removed,
                };
                rows.push(self.reminder_cancelled(task, at, reason, now));
            }
            (Some((old_task, old_at)), Some((task, at))) => {
                if due_moved {
                    let reason = CancelReason::DueChanged;
                    rows.push(self.reminder_cancelled(old_task, old_at, reason, now));
                }
                if due_moved || at != old_at {
                    rows.extend(self.reminder_scheduled(task, at, now));
                }
            }
        }
        rows
    }

    fn reminder_scheduled(
        &self,
        task: &Task,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<OutboxRow> {
        // A pending reminder always has a due time (`Task::reminder_fires_at`).
        let due_at = task.due_at?;
        let minutes = task.reminder.and_then(|r| r.minutes_before());
        let data = ReminderData::new(task.id, &task.title, due_at, at, minutes);
        Some(self.build_for(
            REMINDER_SCHEDULED,
            task.id,
            &task.user_id,
            serde_json::to_value(data),
            now,
        ))
    }

    fn reminder_cancelled(
        &self,
        task: &Task,
        at: DateTime<Utc>,
        reason: CancelReason,
        now: DateTime<Utc>,
    ) -> OutboxRow {
        let data = CancelledData::new(task.id, at, reason);
        self.build_for(
            REMINDER_CANCELLED,
            task.id,
            &task.user_id,
            serde_json::to_value(data),
            now,
        )
    }

    /// `reminder.triggered` of a reminder the sweep found due, built before it is claimed.
    pub fn reminder_triggered(&self, due: &DueReminder, now: DateTime<Utc>) -> OutboxRow {
        let data = ReminderData::new(
            due.task_id,
            &due.title,
            due.due_at,
            due.remind_at,
            due.remind_before_minutes,
        );
        self.build_for(
            REMINDER_TRIGGERED,
            due.task_id,
            &due.user_id,
            serde_json::to_value(data),
            now,
        )
    }

    pub fn created(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        let data = TaskJson::from(task);
        self.build(TASK_CREATED, task, serde_json::to_value(data), now)
    }

    pub fn updated(&self, task: &Task, changed: &[&'static str], now: DateTime<Utc>) -> OutboxRow {
        let data = UpdatedData::new(task, changed);
        self.build(TASK_UPDATED, task, serde_json::to_value(data), now)
    }

    pub fn completed(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        let data = CompletedData::new(task);
        self.build(TASK_COMPLETED, task, serde_json::to_value(data), now)
    }

    pub fn deleted(&self, task: &Task, now: DateTime<Utc>) -> OutboxRow {
        let data = DeletedData::new(task);
        self.build(TASK_DELETED, task, serde_json::to_value(data), now)
    }

    fn build(
        &self,
        kind: &str,
        task: &Task,
        data: serde_json::Result<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> OutboxRow {
        self.build_for(kind, task.id, &task.user_id, data, now)
    }

    /// An event about task `subject` of `user_id`.
    fn build_for(
        &self,
        kind: &str,
        subject: Uuid,
        user_id: &str,
        data: serde_json::Result<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> OutboxRow {
        let id = Uuid::now_v7();
        let data = data.unwrap_or(serde_json::Value::Null);
        let event = cloud_event(
            id,
            &self.source,
            kind,
            &subject.to_string(),
            user_id,
            self.traceparent.as_deref(),
            data,
            now,
        );
        OutboxRow {
            event_id: id,
            user_id: user_id.to_owned(),
            topic: self.topic.clone(),
            event,
        }
    }
}

/// A structured-mode CloudEvent (JSON) with this app's attributes. `partitionkey` is the user id:
/// Dapr's Kafka publisher keys the record by `metadata.partitionKey` in the publish URL, and the
/// extension keeps the key visible to consumers (Dapr's Kafka pub/sub takes the record key only
/// from `metadata.partitionKey`).
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

    mod reminders {
        use super::*;
        use crate::events::wire::CancelReason;
        use crate::tasks::Reminder;
        use crate::tasks::time::parse_utc;

        fn utc(text: &str) -> DateTime<Utc> {
            parse_utc(text).expect("valid")
        }

        fn reminders() -> EventContext {
            EventContext {
                topic: "reminders".into(),
                ..context(None)
            }
        }

        /// An open task due at 09:00 with a reminder 30 minutes before.
        fn reminded() -> Task {
            let changes = TaskChanges {
                title: Some("Dentist".into()),
                due_at: Some(Some(utc("2026-05-01T09:00:00Z"))),
                reminder: Some(Some(Reminder::Before(30))),
                ..TaskChanges::default()
            };
            Task::create(
                Uuid::now_v7(),
                &UserId::parse("alice").expect("id"),
                changes,
                utc("2026-04-01T00:00:00Z"),
            )
        }

        fn change(task: &Task, changes: TaskChanges) -> Vec<OutboxRow> {
            let (after, _) = task.apply(&changes, utc("2026-04-02T00:00:00Z"));
            reminders().reminder_changes(Some(task), Some(&after), Utc::now())
        }

        fn kinds(rows: &[OutboxRow]) -> Vec<&str> {
            rows.iter()
                .map(|r| r.event["type"].as_str().unwrap_or(""))
                .collect()
        }

        #[test]
        fn a_new_reminder_is_scheduled_on_the_reminders_topic_keyed_by_user() {
            let task = reminded();
            let rows = reminders().reminder_changes(None, Some(&task), Utc::now());
            assert_eq!(kinds(&rows), ["reminder.scheduled"]);
            let e = &rows[0].event;
            assert_eq!(rows[0].topic, "reminders");
            assert_eq!(e["partitionkey"], "alice");
            assert_eq!(e["subject"], task.id.to_string());
            assert_eq!(
                e["data"],
                serde_json::json!({
                    "task_id": task.id, "title": "Dentist", "due_at": "2026-05-01T09:00:00Z",
                    "remind_at": "2026-05-01T08:30:00Z", "remind_before_minutes": 30,
                })
            );
            let plain = Task {
                reminder: None,
                ..task
            };
            assert!(
                reminders()
                    .reminder_changes(None, Some(&plain), Utc::now())
                    .is_empty()
            );
        }

        #[test]
        fn completing_deleting_or_removing_cancels_a_pending_reminder() {
            let task = reminded();
            let cases = [
                (
                    TaskChanges {
                        completed: Some(true),
                        ..TaskChanges::default()
                    },
                    "completed",
                ),
                (
                    TaskChanges {
                        reminder: Some(None),
                        ..TaskChanges::default()
                    },
                    "removed",
                ),
            ];
            for (changes, reason) in cases {
                let rows = change(&task, changes);
                assert_eq!(kinds(&rows), ["reminder.cancelled"], "{reason}");
                assert_eq!(rows[0].event["data"]["reason"], reason);
                assert_eq!(rows[0].event["data"]["remind_at"], "2026-05-01T08:30:00Z");
            }
            let rows = reminders().reminder_changes(Some(&task), None, Utc::now());
            assert_eq!(kinds(&rows), ["reminder.cancelled"]);
            assert_eq!(
                rows[0].event["data"]["reason"],
                serde_json::to_value(CancelReason::Deleted).expect("json")
            );
        }

        #[test]
        fn a_due_change_cancels_and_reschedules_and_a_moved_reminder_reschedules() {
            let task = reminded();
            let rows = change(
                &task,
                TaskChanges {
                    due_at: Some(Some(utc("2026-05-02T09:00:00Z"))),
                    ..TaskChanges::default()
                },
            );
            assert_eq!(kinds(&rows), ["reminder.cancelled", "reminder.scheduled"]);
            assert_eq!(rows[0].event["data"]["reason"], "due_changed");
            assert_eq!(rows[1].event["data"]["remind_at"], "2026-05-02T08:30:00Z");

            let rows = change(
                &task,
                TaskChanges {
                    reminder: Some(Some(Reminder::Before(60))),
                    ..TaskChanges::default()
                },
            );
            assert_eq!(kinds(&rows), ["reminder.scheduled"]);
            assert_eq!(rows[0].event["data"]["remind_at"], "2026-05-01T08:00:00Z");

            let same_time = TaskChanges {
                title: Some("Dentist at 9".into()),
                reminder: Some(Some(Reminder::At(utc("2026-05-01T08:30:00Z")))),
                ..TaskChanges::default()
            };
            assert!(change(&task, same_time).is_empty(), "the fire time stayed");

            let undated = TaskChanges {
                due_at: Some(None),
                reminder: Some(None),
                ..TaskChanges::default()
            };
            let rows = change(&task, undated);
            assert_eq!(kinds(&rows), ["reminder.cancelled"]);
            assert_eq!(rows[0].event["data"]["reason"], "due_changed");
        }

        #[test]
        fn a_fired_reminder_is_not_cancelled_and_reopening_reschedules() {
            let task = Task {
                reminder_fired_at: Some(utc("2026-05-01T08:30:05Z")),
                ..reminded()
            };
            let done = TaskChanges {
                completed: Some(true),
                ..TaskChanges::default()
            };
            assert!(change(&task, done.clone()).is_empty(), "nothing pending");

            let moved = change(
                &task,
                TaskChanges {
                    due_at: Some(Some(utc("2026-05-03T09:00:00Z"))),
                    ..TaskChanges::default()
                },
            );
            assert_eq!(kinds(&moved), ["reminder.scheduled"], "fires again, later");

            let (completed, _) = reminded().apply(&done, utc("2026-04-02T00:00:00Z"));
            let reopen = TaskChanges {
                completed: Some(false),
                ..TaskChanges::default()
            };
            assert_eq!(kinds(&change(&completed, reopen)), ["reminder.scheduled"]);
        }
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
