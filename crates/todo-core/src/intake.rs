//! Event intake: reading the CloudEvents Dapr delivers, deciding what they cause, answering
//! Dapr, and the SQL of the `processed_events` table (migrations/0003_recurrence.sql).
//!
//! # What a delivery may look like
//! The body is a structured-mode CloudEvent 1.0 in JSON (CloudEvents 1.0, JSON event format):
//! Dapr sends `application/cloudevents+json`; `application/json` (and any other `+json` type, or
//! none) is read the same way, as the CloudEvent itself, so tools and tests may post the event as
//! plain JSON. Dapr adds attributes of its own (`topic`, `pubsubname`, `traceid`, ...), which are
//! ignored. When an event was published with a plain JSON content type, Dapr wraps it in an
//! envelope of its own (type `com.dapr.event.sent`) with the original as `data`: such envelopes
//! are unwrapped once. Binary-mode and non-JSON bodies are not accepted.
//!
//! # What Dapr is told
//! Dapr's contract (its pub/sub API reference, "Expected HTTP response"; any other status value
//! means retry, so an app answering `{"status":"ok"}` has every event redelivered forever): a 2xx
//! with an empty body is `SUCCESS`; HTTP 200 with `{"status": "RETRY" | "DROP"}`, exactly these
//! case-sensitive values, asks for a retry or a drop, see [`Ack`].
//! - `DROP` for what can never be handled: not JSON, not a CloudEvent 1.0, a type unknown on
//!   the topic, data that does not match the type's schema. Dapr forwards it to the dead-letter
//!   topic. The component logs why.
//! - `RETRY` when acting on it failed, e.g. the database is unavailable.
//! - `SUCCESS` otherwise, including events handled before.
//!
//! # What events cause
//! Only `task.completed` of a completed recurring task does something: the next occurrence is
//! created from the completed task (see `series`) with its `task.created` event, in one
//! statement with the `processed_events` marker of the event ([`record_next_occurrence`]).
//! The stored row decides, never the event alone: anyone able to publish to the topic could
//! forge one. The statement first tries the event's copy of the task and writes only if the
//! stored row (scoped by the event's user) holds that copy in every column ([`Guard::Copy`]):
//! the genuine, current completion, which is nearly every delivery, costs no read. Otherwise
//! the intake reads the task, and only if it exists and is still completed and recurring
//! ([`next_occurrence`]) writes from the stored row, guarded by the version read
//! ([`Guard::Version`]). Every other event is
//! acknowledged without touching the database, and so leaves no marker: there is nothing to
//! de-duplicate. The engine only ever emits `task.created` (and `reminder.scheduled` when the next
//! occurrence carries a reminder), which causes no work, so it cannot loop. Reminder events are
//! accepted and acknowledged: they are for notifiers (push, e-mail) and cause no work in the
//! backend, which already did its part by firing them (`crate::reminders`).

use crate::error::ApiError;
use crate::events::wire::{CompletedData, CreatedData, DeletedData, UpdatedData};
use crate::events::{
    REMINDER_CANCELLED, REMINDER_SCHEDULED, REMINDER_TRIGGERED, TASK_COMPLETED, TASK_CREATED,
    TASK_DELETED, TASK_UPDATED,
};
use crate::outbox::{OutboxRow, WriteClaim, push_outbox};
use crate::series;
use crate::sql::{Builder, SqlValue, Statement};
use crate::tasks::store;
use crate::tasks::{Task, UserId};
use chrono::{DateTime, Utc};
use cloudevents::event::{Data, ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Event};
use serde_json::Value;
use uuid::Uuid;

/// The types each topic carries; anything else on it is dropped.
pub const TASK_TYPES: [&str; 4] = [TASK_CREATED, TASK_UPDATED, TASK_COMPLETED, TASK_DELETED];
pub const REMINDER_TYPES: [&str; 3] = [REMINDER_SCHEDULED, REMINDER_CANCELLED, REMINDER_TRIGGERED];

/// The largest delivery read; a CloudEvent of a task is a few KiB.
pub const MAX_DELIVERY_BYTES: usize = 1024 * 1024;
/// Bounds of `id` and `source`, which key `processed_events`.
const MAX_KEY_BYTES: usize = 1024;
/// The type of the envelopes Dapr builds around bodies that are not CloudEvents.
const DAPR_ENVELOPE_TYPE: &str = "com.dapr.event.sent";

/// The subscribed topic a delivery arrived for, told by its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Tasks,
    Reminders,
}

impl Topic {
    fn accepts(self, kind: &str) -> bool {
        match self {
            Topic::Tasks => TASK_TYPES.contains(&kind),
            Topic::Reminders => REMINDER_TYPES.contains(&kind),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Topic::Tasks => "tasks",
            Topic::Reminders => "reminders",
        }
    }
}

/// The app's answer to a delivery (Dapr "Publish and subscribe API reference",
/// expected HTTP response): a 2xx, empty for `SUCCESS`, and HTTP 200 with a status body for
/// the others (see [`Ack::body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Handled, now or before.
    Success,
    /// Failed for now; Dapr redelivers.
    Retry,
    /// Can never be handled; Dapr forwards it to the dead-letter topic.
    Drop,
}

impl Ack {
    /// The status value, case-sensitive as Dapr reads it: any other value means retry.
    pub fn as_str(self) -> &'static str {
        match self {
            Ack::Success => "SUCCESS",
            Ack::Retry => "RETRY",
            Ack::Drop => "DROP",
        }
    }

    /// The response body: none for `SUCCESS` (Dapr reads a 2xx with an empty body as
    /// success, and an empty answer is the one Spin 4.0.2 never holds back, see
    /// `todo_adapters::reply`), `{"status":"RETRY"}` or `{"status":"DROP"}` otherwise.
    pub fn body(self) -> Option<Vec<u8>> {
        (self != Ack::Success).then(|| format!(r#"{{"status":"{}"}}"#, self.as_str()).into_bytes())
    }

    /// The answer when acting on a valid event failed. Unavailable dependencies, conflicts and
    /// unexpected errors are worth another attempt (an error that persists ends in the
    /// dead-letter topic once Dapr's retries are exhausted); an error about the event itself is
    /// not.
    pub fn for_error(error: &ApiError) -> Ack {
        match error {
            ApiError::Unavailable { .. }
            | ApiError::Internal { .. }
            | ApiError::Conflict { .. } => Ack::Retry,
            _ => Ack::Drop,
        }
    }
}

/// Why a delivery can never be handled; logged, and answered `DROP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

fn reject<T>(why: impl Into<String>) -> Result<T, Rejected> {
    Err(Rejected(why.into()))
}

/// What identifies an event: CloudEvents ids are unique per source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    pub source: String,
    pub id: String,
}

/// A valid delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub key: EventKey,
    /// The CloudEvents `type`.
    pub kind: String,
    /// The W3C trace context the event carries, to continue its trace in what it causes.
    pub traceparent: Option<String>,
    pub event: IncomingEvent,
}

/// The parts of each event type the intake reads.
#[derive(Debug, Clone, PartialEq)]
pub enum IncomingEvent {
    /// `task.created`, `task.updated` or `task.deleted`: nothing to do.
    TaskChanged { user: UserId, task_id: Uuid },
    /// `task.completed`: the task as it was completed, or re-opened.
    TaskCompleted(Box<Task>),
    /// `reminder.*`.
    Reminder,
}

/// Reads and validates a delivery for `topic`. `content_type` is the request's.
pub fn parse(topic: Topic, content_type: Option<&str>, body: &[u8]) -> Result<Delivery, Rejected> {
    check_content_type(content_type)?;
    if body.len() > MAX_DELIVERY_BYTES {
        return reject(format!("the body exceeds {MAX_DELIVERY_BYTES} bytes"));
    }
    let event = match serde_json::from_slice::<Value>(body) {
        Ok(value) => cloud_event(value)?,
        Err(e) => return reject(format!("the body is not JSON: {e}")),
    };
    let event = unwrap_dapr_envelope(event)?;
    let kind = event.ty().to_owned();
    let key = EventKey {
        source: event.source().to_string(),
        id: event.id().to_owned(),
    };
    for (name, value) in [("id", &key.id), ("source", &key.source)] {
        if value.is_empty() || value.len() > MAX_KEY_BYTES {
            return reject(format!("{name} must be 1 to {MAX_KEY_BYTES} bytes"));
        }
    }
    if !topic.accepts(&kind) {
        return reject(format!(
            "type '{}' is not an event of topic {}",
            excerpt(&kind),
            topic.name()
        ));
    }
    let data = match event.data() {
        Some(Data::Json(Value::Object(data))) => Value::Object(data.clone()),
        Some(_) => return reject("data must be a JSON object"),
        None => return reject("the event has no data"),
    };
    let traceparent = extension(&event, "traceparent")
        .filter(|t| crate::events::is_traceparent(t))
        .map(str::to_owned);
    let event = match topic {
        Topic::Reminders => IncomingEvent::Reminder,
        Topic::Tasks => {
            let user = match extension(&event, "partitionkey").map(UserId::parse) {
                Some(Ok(user)) => user,
                Some(Err(e)) => return reject(format!("partitionkey {}", e.message)),
                None => return reject("a task event needs the partitionkey extension (user id)"),
            };
            task_event(&kind, user, data)?
        }
    };
    Ok(Delivery {
        key,
        kind,
        traceparent,
        event,
    })
}

fn check_content_type(content_type: Option<&str>) -> Result<(), Rejected> {
    let Some(content_type) = content_type else {
        return Ok(());
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence.is_empty()
        || essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        reject(format!(
            "Content-Type '{}' is not a structured CloudEvent in JSON",
            excerpt(&essence)
        ))
    }
}

fn cloud_event(value: Value) -> Result<Event, Rejected> {
    if value.get("specversion") != Some(&Value::String("1.0".into())) {
        return reject("specversion must be \"1.0\"");
    }
    let event: Event = match serde_json::from_value(value) {
        Ok(event) => event,
        Err(e) => return reject(format!("not a valid CloudEvent: {e}")),
    };
    if event.specversion() != SpecVersion::V10 {
        return reject("specversion must be \"1.0\"");
    }
    Ok(event)
}

/// Dapr's own envelope around an event published as plain JSON: the event is its `data`.
fn unwrap_dapr_envelope(event: Event) -> Result<Event, Rejected> {
    if event.ty() != DAPR_ENVELOPE_TYPE {
        return Ok(event);
    }
    match event.data() {
        Some(Data::Json(inner)) if inner.get("specversion").is_some() => cloud_event(inner.clone()),
        _ => reject("a Dapr envelope whose data is not a CloudEvent"),
    }
}

fn extension<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    match event.extension(name) {
        Some(ExtensionValue::String(value)) => Some(value.as_str()),
        _ => None,
    }
}

/// Client text quoted in a log line, cut short.
fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

fn data<T: serde::de::DeserializeOwned>(kind: &str, data: Value) -> Result<T, Rejected> {
    serde_json::from_value(data)
        .map_err(|e| Rejected(format!("data does not match the schema of {kind}: {e}")))
}

/// Reads a task event's `data` as its wire type and validates the task it carries with the
/// API's rules (`events::wire`).
fn task_event(kind: &str, user: UserId, value: Value) -> Result<IncomingEvent, Rejected> {
    let task = match kind {
        TASK_CREATED => Task::try_from((&user, data::<CreatedData>(kind, value)?)),
        TASK_UPDATED => Task::try_from((&user, data::<UpdatedData>(kind, value)?)),
        TASK_DELETED => Task::try_from((&user, data::<DeletedData>(kind, value)?)),
        TASK_COMPLETED => {
            let task =
                Task::try_from((&user, data::<CompletedData>(kind, value)?)).map_err(Rejected)?;
            return Ok(IncomingEvent::TaskCompleted(Box::new(task)));
        }
        _ => return reject(format!("type '{}' has no schema", excerpt(kind))),
    }
    .map_err(Rejected)?;
    Ok(IncomingEvent::TaskChanged {
        user,
        task_id: task.id,
    })
}

/// What a valid delivery causes.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Nothing: acknowledge it. The reason is for the log.
    Acknowledge(&'static str),
    /// A completion of a recurring task, with the event's copy of the task: the stored row
    /// decides whether and what follows (see the module's "What events cause").
    CheckTask(Box<Task>),
    /// Create this task, the next occurrence of a completed recurring task.
    CreateNext(Box<Task>),
}

/// Decides from the event alone what `delivery` causes: most events nothing, a completion of
/// a recurring task a check against the stored task.
pub fn plan(delivery: &Delivery) -> Work {
    match &delivery.event {
        IncomingEvent::Reminder => Work::Acknowledge("reminder events are for notifiers"),
        IncomingEvent::TaskChanged { .. } => Work::Acknowledge("no work for this type"),
        IncomingEvent::TaskCompleted(task) if !task.completed => {
            Work::Acknowledge("the task was re-opened")
        }
        IncomingEvent::TaskCompleted(task) if task.recurrence.is_none() => {
            Work::Acknowledge("the task does not recur")
        }
        IncomingEvent::TaskCompleted(task) => Work::CheckTask(task.clone()),
    }
}

/// Decides from `stored`, the task a completion names as stored or as the event's copy
/// (checked against the stored row when written, [`Guard::Copy`]), `None` when the event's
/// user has no such task: the next occurrence, with id `id` and created at `now`, follows only a
/// task that exists and is still completed and recurring. So an event published by someone
/// else, or one delivered after the task was re-opened or deleted, creates nothing.
pub fn next_occurrence(stored: Option<&Task>, id: Uuid, now: DateTime<Utc>) -> Work {
    match stored {
        None => Work::Acknowledge("the event's user has no such task (deleted, or never was)"),
        Some(task) if !task.completed => {
            Work::Acknowledge("the task is no longer completed (re-opened since)")
        }
        Some(task) if task.recurrence.is_none() => Work::Acknowledge("the task no longer recurs"),
        Some(task) => match series::next_occurrence(task, id, now) {
            Some(next) => Work::CreateNext(Box::new(next)),
            None => Work::Acknowledge("the series has ended"),
        },
    }
}

/// How [`record_next_occurrence`] makes sure that the completed task a next occurrence
/// follows from is the stored one, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The task is the event's copy, never read: the stored row must hold it in every column
    /// but the version (`store::push_holds`; `updated_at` changes with every write). A forged,
    /// altered or stale copy writes nothing.
    Copy,
    /// The task was read: the stored row must still have the version read.
    Version,
}

/// Records `key` as processed and, only if it was not processed before, inserts `next` with
/// its events; the task is skipped when its series already has that occurrence. One
/// statement, so the marker and its effect commit together. All of it happens only while
/// `source`, the completed task `next` follows, is the stored row, as `guard` checks, and
/// still completed: a change in between (re-opened, deleted, edited, a reminder firing) or a
/// copy the stored row does not hold makes the statement write nothing, and the intake reads
/// the task (again).
///
/// Returns one row: `(source unchanged, markers inserted, tasks inserted)`, each 0 or 1.
/// `(1, 0, 0)`: the event was handled before. `(1, 1, 0)`: another event (an earlier
/// completion of the same task) created this occurrence already. `(0, 0, 0)`: read again.
/// With a `claim`, the claim's columns follow (`outbox::Claimed::decode`).
pub fn record_next_occurrence(
    key: &EventKey,
    source: &Task,
    guard: Guard,
    next: &Task,
    events: &[OutboxRow],
    claim: Option<&WriteClaim>,
) -> Statement {
    let mut sql = Builder::new("with source as (select 1 from tasks where id = ");
    let task = sql.typed(SqlValue::Uuid(source.id), "uuid");
    let user = sql.typed(SqlValue::Text(source.user_id.clone()), "text");
    let unchanged = match guard {
        Guard::Version => {
            let version = sql.typed(SqlValue::Int64(source.version), "int8");
            format!("version = {version}")
        }
        Guard::Copy => store::push_holds(&mut sql, source),
    };
    sql.push(&format!(
        "{task} and user_id = {user} and {unchanged} and completed), \
         processed as (insert into processed_events (source, event_id) select "
    ));
    let event_source = sql.typed(SqlValue::Text(key.source.clone()), "text");
    let id = sql.typed(SqlValue::Text(key.id.clone()), "text");
    sql.push(&format!(
        "{event_source}, {id} where exists (select 1 from source) \
         on conflict (source, event_id) do nothing returning 1), "
    ));
    store::push_insert(&mut sql, next, Some("processed"));
    let claimed = push_outbox(&mut sql, events, claim);
    sql.push(&format!(
        " select (select count(*) from source), (select count(*) from processed), \
         (select count(*) from written){claimed}"
    ));
    sql.build()
}

/// What [`record_next_occurrence`] did, read from its one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The completed task is not the stored one, or changed since it was read: read it
    /// (again).
    SourceChanged,
    /// The next occurrence was created, with its events.
    Created,
    /// Another event (an earlier completion of the same task) created this occurrence already.
    OccurrenceExists,
    /// The event was handled before.
    HandledBefore,
}

impl Recorded {
    /// The columns it is decoded from, before those of a claim (`outbox::Claimed`).
    pub const COLUMNS: usize = 3;

    /// Decodes `(source unchanged, markers inserted, tasks inserted)`.
    pub fn decode(row: &[SqlValue]) -> Result<Self, String> {
        match row.get(..Self::COLUMNS) {
            Some(
                [
                    SqlValue::Int64(source),
                    SqlValue::Int64(processed),
                    SqlValue::Int64(created),
                ],
            ) => Ok(match (source, processed, created) {
                (0, _, _) => Recorded::SourceChanged,
                (_, _, 1) => Recorded::Created,
                (_, 1, _) => Recorded::OccurrenceExists,
                _ => Recorded::HandledBefore,
            }),
            _ => Err(format!("recording a next occurrence returned {row:?}")),
        }
    }
}

/// Deletes markers older than `days`. Dapr redelivers within minutes to hours; past the
/// horizon a late duplicate is still harmless, because the series index stops a second
/// occurrence.
pub fn prune_processed(days: i32) -> Statement {
    Statement::new(
        "delete from processed_events where processed_at < now() - make_interval(days => $1::int4)",
        vec![SqlValue::Int32(days)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventContext;
    use crate::recurrence::Recurrence;
    use crate::tasks::time::parse_utc;
    use crate::tasks::{Reminder, TaskChanges};
    use serde_json::json;

    fn context() -> EventContext {
        EventContext {
            source: "/todo-spin/tasks".into(),
            topic: "tasks".into(),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    /// `plan`, with the event's own copy of the task standing in for the stored row.
    fn plan_event(delivery: &Delivery, id: Uuid, now: DateTime<Utc>) -> Work {
        match (plan(delivery), &delivery.event) {
            (Work::CheckTask(_), IncomingEvent::TaskCompleted(task)) => {
                next_occurrence(Some(task), id, now)
            }
            (work, _) => work,
        }
    }

    fn now() -> DateTime<Utc> {
        parse_utc("2026-01-31T10:00:00Z").expect("valid")
    }

    fn recurring_task() -> Task {
        let rule = Recurrence::parse(crate::recurrence::RecurrenceInput {
            frequency: "monthly".into(),
            count: Some(12),
            timezone: Some("Europe/Berlin".into()),
            ..Default::default()
        })
        .expect("valid rule");
        let changes = TaskChanges {
            title: Some("Pay rent".into()),
            tags: Some(vec!["home".into()]),
            due_at: Some(Some(parse_utc("2026-01-31T08:00:00Z").expect("valid"))),
            recurrence: Some(Some(rule)),
            ..TaskChanges::default()
        };
        Task::create(
            Uuid::now_v7(),
            &UserId::parse("alice").expect("valid"),
            changes,
            now(),
        )
    }

    fn completed_event() -> (Task, Value) {
        let task = recurring_task();
        let done = TaskChanges {
            completed: Some(true),
            ..TaskChanges::default()
        };
        let (done, changed) = task.apply(&done, now());
        let rows = context().for_change(&done, &changed, now());
        (done, rows[0].event.clone())
    }

    fn body(event: &Value) -> Vec<u8> {
        serde_json::to_vec(event).expect("serializes")
    }

    fn tasks(event: &Value) -> Result<Delivery, Rejected> {
        parse(
            Topic::Tasks,
            Some("application/cloudevents+json"),
            &body(event),
        )
    }

    #[test]
    fn acks_are_the_exact_bodies_dapr_reads() {
        assert_eq!(Ack::Success.body(), None, "an empty 2xx is SUCCESS");
        assert_eq!(
            Ack::Retry.body().as_deref(),
            Some(&br#"{"status":"RETRY"}"#[..])
        );
        assert_eq!(
            Ack::Drop.body().as_deref(),
            Some(&br#"{"status":"DROP"}"#[..])
        );
        for ack in [Ack::Retry, Ack::Drop] {
            let json: Value = serde_json::from_slice(&ack.body().expect("a body")).expect("JSON");
            assert_eq!(json, json!({"status": ack.as_str()}));
        }
    }

    #[test]
    fn failures_retry_unless_the_event_is_at_fault() {
        let retry = [
            ApiError::Unavailable {
                detail: "down".into(),
            },
            ApiError::internal("bug"),
            ApiError::Conflict {
                detail: "busy".into(),
            },
        ];
        for error in retry {
            assert_eq!(Ack::for_error(&error), Ack::Retry, "{error}");
        }
        let drop = ApiError::invalid("title", "must not be blank");
        assert_eq!(Ack::for_error(&drop), Ack::Drop);
    }

    #[test]
    fn the_app_s_own_events_are_read_back() {
        let task = recurring_task();
        let ctx = context();
        let (done, completed) = completed_event();
        for row in [
            ctx.created(&task, now()),
            ctx.updated(&task, &["title"], now()),
            ctx.deleted(&task, now()),
        ] {
            let delivery = tasks(&row.event).expect("valid");
            assert_eq!(
                delivery.event,
                IncomingEvent::TaskChanged {
                    user: UserId::parse("alice").expect("valid"),
                    task_id: task.id
                }
            );
            assert_eq!(delivery.key.id, row.event_id.to_string());
            assert_eq!(delivery.key.source, "/todo-spin/tasks");
            assert_eq!(delivery.traceparent, ctx.traceparent);
        }
        let delivery = tasks(&completed).expect("valid");
        assert_eq!(delivery.kind, "task.completed");
        let IncomingEvent::TaskCompleted(read) = delivery.event else {
            panic!("not a completion: {:?}", delivery.event);
        };
        assert_eq!(
            *read,
            Task { version: 0, ..done },
            "the task survives the round trip"
        );
    }

    #[test]
    fn plain_json_and_dapr_additions_are_accepted() {
        let (_, mut event) = completed_event();
        event["topic"] = json!("tasks");
        event["pubsubname"] = json!("kafka-pubsub");
        event["traceid"] = json!("");
        event["tracestate"] = json!("");
        for content_type in [
            None,
            Some("application/json"),
            Some("application/cloudevents+json; charset=utf-8"),
        ] {
            let delivery = parse(Topic::Tasks, content_type, &body(&event));
            assert!(delivery.is_ok(), "{content_type:?}: {delivery:?}");
        }
    }

    #[test]
    fn dapr_envelopes_around_a_cloud_event_are_unwrapped() {
        let (_, event) = completed_event();
        let envelope = json!({
            "specversion": "1.0", "id": "d1", "source": "todo-backend",
            "type": "com.dapr.event.sent", "datacontenttype": "application/json",
            "data": event, "topic": "tasks", "pubsubname": "kafka-pubsub",
        });
        let delivery = tasks(&envelope).expect("valid");
        assert_eq!(delivery.key.id, event["id"].as_str().expect("id"));
        assert_eq!(delivery.kind, "task.completed");
        let not_an_event = json!({
            "specversion": "1.0", "id": "d2", "source": "todo-backend",
            "type": "com.dapr.event.sent", "data": {"hello": "world"},
        });
        assert!(tasks(&not_an_event).is_err());
    }

    #[test]
    fn malformed_deliveries_are_rejected_with_a_reason() {
        let (_, good) = completed_event();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut event = good.clone();
            edit(&mut event);
            event
        };
        let remove = |path: &'static [&'static str]| {
            move |e: &mut Value| {
                let (last, parents) = path.split_last().expect("a path");
                let parent = parents.iter().fold(e, |v, key| &mut v[*key]);
                parent.as_object_mut().map(|m| m.remove(*last));
            }
        };
        // (case, the reason it is rejected for, the event)
        let cases: Vec<(&str, &str, Value)> = vec![
            (
                "specversion 0.3",
                "specversion",
                with(&|e| e["specversion"] = json!("0.3")),
            ),
            (
                "no specversion",
                "specversion",
                with(&remove(&["specversion"])),
            ),
            ("no id", "`id`", with(&remove(&["id"]))),
            ("empty id", "id must be", with(&|e| e["id"] = json!(""))),
            (
                "huge id",
                "id must be",
                with(&|e| e["id"] = json!("x".repeat(2000))),
            ),
            ("no source", "`source`", with(&remove(&["source"]))),
            ("no type", "`type`", with(&remove(&["type"]))),
            (
                "unknown type",
                "not an event of topic tasks",
                with(&|e| e["type"] = json!("task.archived")),
            ),
            (
                "reminder on tasks",
                "not an event of topic tasks",
                with(&|e| e["type"] = json!("reminder.triggered")),
            ),
            ("no data", "no data", with(&remove(&["data"]))),
            (
                "data a string",
                "JSON object",
                with(&|e| e["data"] = json!("{\"task_id\":1}")),
            ),
            (
                "data an array",
                "JSON object",
                with(&|e| e["data"] = json!([])),
            ),
            (
                "no partitionkey",
                "partitionkey",
                with(&remove(&["partitionkey"])),
            ),
            (
                "bad partitionkey",
                "partitionkey",
                with(&|e| e["partitionkey"] = json!("a/b")),
            ),
            (
                "no task",
                "missing field `task`",
                with(&remove(&["data", "task"])),
            ),
            (
                "task_id mismatch",
                "differ",
                with(&|e| e["data"]["task_id"] = json!(Uuid::nil())),
            ),
            (
                "completed mismatch",
                "differ",
                with(&|e| e["data"]["completed"] = json!(false)),
            ),
            (
                "no completed_at",
                "completed_at",
                with(&|e| e["data"]["task"]["completed_at"] = json!(null)),
            ),
            (
                "blank title",
                "title",
                with(&|e| e["data"]["task"]["title"] = json!("  ")),
            ),
            (
                "bad priority",
                "priority",
                with(&|e| e["data"]["task"]["priority"] = json!("urgent")),
            ),
            (
                "bad due_at",
                "due_at",
                with(&|e| e["data"]["task"]["due_at"] = json!("tomorrow")),
            ),
            (
                "bad rule",
                "frequency",
                with(&|e| e["data"]["task"]["recurrence"]["frequency"] = json!("hourly")),
            ),
            (
                "negative occurrence",
                "u32",
                with(&|e| e["data"]["task"]["occurrence"] = json!(-1)),
            ),
            (
                "anchor after task",
                "anchor_occurrence",
                with(&|e| e["data"]["anchor_occurrence"] = json!(5)),
            ),
            (
                "bad anchor",
                "series_anchor",
                with(&|e| e["data"]["series_anchor"] = json!("soon")),
            ),
        ];
        for (case, reason, event) in cases {
            let why = tasks(&event).expect_err(case);
            assert!(why.0.contains(reason), "{case}: {why}");
        }
        for (case, content_type, body) in [
            ("not JSON", Some("application/json"), b"{not json".to_vec()),
            ("an array", Some("application/json"), b"[]".to_vec()),
            ("text", Some("text/plain"), body(&good)),
            ("binary", Some("application/octet-stream"), body(&good)),
        ] {
            let result = parse(Topic::Tasks, content_type, &body);
            let why = result.expect_err(case);
            assert!(!why.0.is_empty(), "{case} has a reason");
        }
    }

    #[test]
    fn reminder_events_are_accepted_on_their_topic_only() {
        let event = |kind: &str| {
            json!({
                "specversion": "1.0", "id": "r1", "source": "/todo-spin/tasks", "type": kind,
                "partitionkey": "alice", "datacontenttype": "application/json",
                "data": {"task_id": Uuid::nil()},
            })
        };
        for kind in REMINDER_TYPES {
            let delivery = parse(Topic::Reminders, None, &body(&event(kind))).expect(kind);
            assert_eq!(delivery.event, IncomingEvent::Reminder);
            assert_eq!(
                plan_event(&delivery, Uuid::nil(), now()),
                Work::Acknowledge("reminder events are for notifiers")
            );
        }
        assert!(parse(Topic::Reminders, None, &body(&event("reminder.snoozed"))).is_err());
        let (_, task_event) = completed_event();
        assert!(parse(Topic::Reminders, None, &body(&task_event)).is_err());
    }

    #[test]
    fn only_completing_a_recurring_task_creates_work() {
        let (done, completed) = completed_event();
        let id = Uuid::now_v7();
        let delivery = tasks(&completed).expect("valid");
        let Work::CreateNext(next) = plan_event(&delivery, id, now()) else {
            panic!("no next occurrence");
        };
        assert_eq!(next.id, id);
        assert_eq!(next.series_id, done.id);
        assert_eq!(next.occurrence, 1);
        // 09:00 in Berlin on Jan 31, then on the last day of February.
        assert_eq!(
            next.due_at,
            Some(parse_utc("2026-02-28T08:00:00Z").expect("valid"))
        );

        let reopened = done.apply(
            &TaskChanges {
                completed: Some(false),
                ..TaskChanges::default()
            },
            now(),
        );
        let event = context().for_change(&reopened.0, &reopened.1, now())[0]
            .event
            .clone();
        let delivery = tasks(&event).expect("valid");
        assert_eq!(
            plan_event(&delivery, id, now()),
            Work::Acknowledge("the task was re-opened")
        );

        let created = context().created(&next, now()).event;
        let delivery = tasks(&created).expect("valid");
        assert!(
            matches!(plan_event(&delivery, id, now()), Work::Acknowledge(_)),
            "what the engine emits causes no further work"
        );
    }

    #[test]
    fn the_next_occurrence_carries_the_reminder_the_event_describes() {
        let mut task = recurring_task();
        task.reminder = Some(Reminder::At(
            parse_utc("2026-01-30T19:00:00Z").expect("valid"),
        ));
        let done = TaskChanges {
            completed: Some(true),
            ..TaskChanges::default()
        };
        let (done, changed) = task.apply(&done, now());
        let event = context().for_change(&done, &changed, now())[0]
            .event
            .clone();
        let delivery = tasks(&event).expect("valid");
        let Work::CreateNext(next) = plan_event(&delivery, Uuid::now_v7(), now()) else {
            panic!("no next occurrence");
        };
        assert_eq!(
            next.due_at,
            Some(parse_utc("2026-02-28T08:00:00Z").expect("valid"))
        );
        assert_eq!(
            next.reminder,
            Some(Reminder::At(
                parse_utc("2026-02-27T19:00:00Z").expect("valid")
            )),
            "13 hours before due, as before"
        );

        let with = |edit: &dyn Fn(&mut Value)| {
            let mut bad = event.clone();
            edit(&mut bad);
            tasks(&bad).expect_err("rejected").0
        };
        let both = with(&|e| e["data"]["task"]["remind_before_minutes"] = json!(5));
        assert!(
            both.contains("both remind_before_minutes and remind_at"),
            "{both}"
        );
        let late = with(&|e| e["data"]["task"]["remind_at"] = json!("2026-02-01T00:00:00Z"));
        assert!(
            late.contains("data.task.remind_at: must not be after due_at"),
            "{late}"
        );
        let undated = with(&|e| e["data"]["task"]["due_at"] = json!(null));
        assert!(undated.contains("requires due_at"), "{undated}");
    }

    #[test]
    fn completions_from_before_series_start_their_own_series() {
        let (done, mut event) = completed_event();
        for field in ["series_id", "occurrence"] {
            event["data"]["task"]
                .as_object_mut()
                .map(|m| m.remove(field));
        }
        for field in ["series_anchor", "anchor_occurrence"] {
            event["data"].as_object_mut().map(|m| m.remove(field));
        }
        let delivery = tasks(&event).expect("valid");
        let Work::CreateNext(next) = plan_event(&delivery, Uuid::now_v7(), now()) else {
            panic!("no next occurrence");
        };
        assert_eq!((next.series_id, next.occurrence), (done.id, 1));
        assert_eq!(
            next.due_at,
            Some(parse_utc("2026-02-28T08:00:00Z").expect("valid"))
        );
    }

    #[test]
    fn the_next_occurrence_statement_is_one_guarded_write() {
        let (done, completed) = completed_event();
        let delivery = tasks(&completed).expect("valid");
        let Work::CreateNext(next) = plan_event(&delivery, Uuid::now_v7(), now()) else {
            panic!("no next occurrence");
        };
        let events = [context().created(&next, now())];
        let statement =
            record_next_occurrence(&delivery.key, &done, Guard::Version, &next, &events, None);
        let sql = &statement.sql;
        assert!(
            sql.starts_with("with source as (select 1 from tasks where id = $1::uuid and user_id = $2::text and version = $3::int8 and completed)"),
            "{sql}"
        );
        assert!(
            sql.contains("processed as (insert into processed_events (source, event_id) select"),
            "{sql}"
        );
        assert!(sql.contains("where exists (select 1 from source)"), "{sql}");
        assert!(
            sql.contains("on conflict (source, event_id) do nothing returning 1"),
            "{sql}"
        );
        assert!(
            sql.contains("where exists (select 1 from processed)"),
            "{sql}"
        );
        assert!(
            sql.contains("on conflict (user_id, (coalesce(series_id, id)), occurrence) do nothing"),
            "{sql}"
        );
        assert!(
            sql.contains("where exists (select 1 from written)"),
            "{sql}"
        );
        assert!(!sql.contains("Pay rent"), "values are parameters");
        let placeholders = (1..=200)
            .take_while(|n| sql.contains(&format!("${n}")))
            .count();
        assert_eq!(placeholders, statement.params.len());
        assert_eq!(statement.params[0], SqlValue::Uuid(done.id));
        assert_eq!(
            statement.params[3],
            SqlValue::Text("/todo-spin/tasks".into())
        );
    }

    /// The stored row decides, not the event: a completion whose task is gone, re-opened or no
    /// longer recurring creates nothing, and the event alone only ever asks for a check of its
    /// copy against the stored row.
    #[test]
    fn the_stored_task_decides_whether_a_next_occurrence_follows() {
        let (done, completed) = completed_event();
        let delivery = tasks(&completed).expect("valid");
        let Work::CheckTask(copy) = plan(&delivery) else {
            panic!("a completion of a recurring task is checked");
        };
        // The copy is the task in every column but the version, which events do not carry:
        // what `Guard::Copy` compares with the stored row.
        assert_eq!(
            Task {
                version: done.version,
                ..*copy
            },
            done
        );
        let id = Uuid::now_v7();
        assert!(matches!(
            next_occurrence(None, id, now()),
            Work::Acknowledge(why) if why.contains("no such task")
        ));
        let mut reopened = done.clone();
        reopened.completed = false;
        assert!(matches!(
            next_occurrence(Some(&reopened), id, now()),
            Work::Acknowledge(why) if why.contains("no longer completed")
        ));
        let mut one_off = done.clone();
        one_off.recurrence = None;
        assert!(matches!(
            next_occurrence(Some(&one_off), id, now()),
            Work::Acknowledge(why) if why.contains("no longer recurs")
        ));
        // The stored row's fields, not the event's, go into the next occurrence.
        let mut edited = done.clone();
        edited.title = "Edited since".to_owned();
        let Work::CreateNext(next) = next_occurrence(Some(&edited), id, now()) else {
            panic!("a next occurrence");
        };
        assert_eq!((next.id, next.title.as_str()), (id, "Edited since"));
    }

    /// The event's copy is written from only where the stored row holds it: the same
    /// statement, with every column compared instead of the version.
    #[test]
    fn a_next_occurrence_from_the_event_s_copy_requires_the_stored_row_to_hold_it() {
        let (_, completed) = completed_event();
        let delivery = tasks(&completed).expect("valid");
        let Work::CheckTask(copy) = plan(&delivery) else {
            panic!("a completion of a recurring task is checked");
        };
        let Work::CreateNext(next) = next_occurrence(Some(&copy), Uuid::now_v7(), now()) else {
            panic!("no next occurrence");
        };
        let events = [context().created(&next, now())];
        let by_copy =
            record_next_occurrence(&delivery.key, &copy, Guard::Copy, &next, &events, None);
        let by_version =
            record_next_occurrence(&delivery.key, &copy, Guard::Version, &next, &events, None);
        let source = |sql: &str| sql[..sql.find("), processed as").expect("a source")].to_owned();
        let checked = source(&by_copy.sql);
        assert!(
            checked.starts_with(
                "with source as (select 1 from tasks where id = $1::uuid and user_id = $2::text and row(id, user_id, title, "
            ),
            "{checked}"
        );
        assert!(checked.ends_with(" and completed"), "{checked}");
        assert!(!checked.contains("version"), "{checked}");
        assert!(source(&by_version.sql).contains("version = $3::int8"));
        // The rest of the statement is the same write.
        let rest = |sql: &str| sql[sql.find("), processed as").expect("a source")..].to_owned();
        let renumbered = |statement: &Statement| {
            let mut sql = rest(&statement.sql);
            for n in (1..=statement.params.len()).rev() {
                sql = sql.replace(&format!("${n}:"), "$_:");
            }
            sql
        };
        assert_eq!(renumbered(&by_copy), renumbered(&by_version));
        let placeholders = (1..=200)
            .take_while(|n| by_copy.sql.contains(&format!("${n}:")))
            .count();
        assert_eq!(placeholders, by_copy.params.len());
        assert!(!by_copy.sql.contains("Pay rent"), "values are parameters");
    }

    #[test]
    fn the_recorded_counts_tell_what_happened() {
        let row = |s, p, c| [SqlValue::Int64(s), SqlValue::Int64(p), SqlValue::Int64(c)];
        assert_eq!(Recorded::decode(&row(0, 0, 0)), Ok(Recorded::SourceChanged));
        assert_eq!(Recorded::decode(&row(1, 1, 1)), Ok(Recorded::Created));
        assert_eq!(
            Recorded::decode(&row(1, 1, 0)),
            Ok(Recorded::OccurrenceExists)
        );
        assert_eq!(Recorded::decode(&row(1, 0, 0)), Ok(Recorded::HandledBefore));
        assert!(Recorded::decode(&[SqlValue::Int64(1)]).is_err());
    }

    #[test]
    fn pruning_is_bounded_by_age() {
        let statement = prune_processed(30);
        assert!(
            statement
                .sql
                .starts_with("delete from processed_events where processed_at <")
        );
        assert_eq!(statement.params, vec![SqlValue::Int32(30)]);
    }
}
