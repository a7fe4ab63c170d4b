//! Every event the app builds conforms to its published JSON schema in `schemas/`.

use chrono::{TimeZone, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use todo_core::events::EventContext;
use todo_core::events::wire::{
    CancelReason, CancelledData, CompletedData, DeletedData, ReminderData, TaskJson, UpdatedData,
};
use todo_core::reminders::DueReminder;
use todo_core::tasks::{Reminder, Task, TaskChanges, UserId, parse_create, parse_patch};
use uuid::Uuid;

const BASE: &str = "https://todo-spin.dev/schemas/";

fn schema(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Resolves `$ref`s between the schema files from disk; nothing is fetched.
struct SchemaFiles;

impl jsonschema::Retrieve for SchemaFiles {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .as_str()
            .strip_prefix(BASE)
            .and_then(|file| file.strip_suffix(".json"))
            .ok_or_else(|| format!("{} is not one of ours", uri.as_str()))?;
        Ok(schema(name))
    }
}

fn validator(kind: &str) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(SchemaFiles)
        .build(&schema(kind))
        .expect("schema compiles")
}

fn assert_valid(kind: &str, event: &Value) {
    let validator = validator(kind);
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{kind}: {errors:?}\n{event:#}");
}

fn task(body: &str) -> Task {
    let changes = parse_create(body.as_bytes()).expect("valid body");
    let now = Utc
        .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("time");
    Task::create(
        Uuid::now_v7(),
        &UserId::parse("alice").expect("user"),
        changes,
        now,
    )
}

fn context() -> EventContext {
    EventContext {
        source: "/todo-spin/tasks".into(),
        topic: "tasks".into(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

#[test]
fn every_event_type_matches_its_schema() {
    let plain = task(r#"{"title": "Plain"}"#);
    let full = task(
        r#"{"title": "Full", "description": "d", "priority": "high", "tags": ["a", "b"],
            "due_at": "2026-03-31T09:00:00+02:00",
            "recurrence": {"frequency": "monthly", "interval": 2, "count": 5,
                           "until": "2027-01-01T00:00:00Z", "timezone": "Europe/Berlin"}}"#,
    );
    let now = Utc::now();
    let ctx = context();
    for t in [&plain, &full] {
        assert_valid("task.created", &ctx.created(t, now).event);
        assert_valid("task.deleted", &ctx.deleted(t, now).event);
        let changes = TaskChanges {
            title: Some("New title".into()),
            tags: Some(vec!["x".into()]),
            completed: Some(true),
            ..TaskChanges::default()
        };
        let (after, changed) = t.apply(&changes, now);
        let rows = ctx.for_change(&after, &changed, now);
        assert_valid("task.updated", &rows[0].event);
        assert_valid("task.completed", &rows[1].event);
    }
}

/// `task.updated` publishes the names `Task::apply` reports; the schema's `changed_fields` enum
/// must hold every one of them (`completed` goes out as `task.completed` instead), and a patch
/// of every writable field reports each.
#[test]
fn changed_fields_of_task_updated_are_the_fields_apply_reports() {
    let before = task(
        r#"{"title": "Before", "due_at": "2026-03-31T09:00:00Z", "remind_before_minutes": 30}"#,
    );
    let every_change = parse_patch(
        br#"{"title": "After", "description": "now one", "priority": "high", "tags": ["t"],
             "due_at": "2026-04-01T09:00:00Z", "remind_at": "2026-04-01T08:00:00Z",
             "remind_before_minutes": null, "completed": true,
             "recurrence": {"frequency": "weekly"}}"#,
    )
    .expect("valid patch");
    let (_, changed) = before.apply(&every_change, Utc::now());
    // The patch sets every writable field to a new value, so each must be reported: a field
    // the parser reads but `Task::apply` forgets would be silently ignored by PATCH and PUT.
    let mut all: Vec<&str> = changed.clone();
    all.sort_unstable();
    let mut writable = todo_core::tasks::input::WRITABLE.to_vec();
    writable.sort_unstable();
    assert_eq!(all, writable, "fields a full patch changes");
    let mut reported: Vec<&str> = changed.into_iter().filter(|f| *f != "completed").collect();
    reported.sort_unstable();
    let schema = schema("task.updated");
    let mut listed: Vec<&str> =
        schema["properties"]["data"]["properties"]["changed_fields"]["items"]["enum"]
            .as_array()
            .expect("changed_fields enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
    listed.sort_unstable();
    assert_eq!(reported, listed);
}

fn kinds(rows: &[todo_core::outbox::OutboxRow]) -> Vec<&str> {
    rows.iter()
        .map(|r| r.event["type"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn every_reminder_event_matches_its_schema() {
    let reminders = EventContext {
        topic: "reminders".into(),
        ..context()
    };
    let relative = task(
        r#"{"title": "Call the bank", "due_at": "2026-03-31T09:00:00+02:00",
            "remind_before_minutes": 30}"#,
    );
    let absolute = task(
        r#"{"title": "Call the bank", "due_at": "2026-03-31T09:00:00+02:00",
            "remind_at": "2026-03-30T20:00:00Z"}"#,
    );
    let now = Utc::now();
    let later = Utc
        .with_ymd_and_hms(2026, 4, 2, 7, 0, 0)
        .single()
        .expect("time");
    for t in [&relative, &absolute] {
        assert_valid("task.created", &context().created(t, now).event);
        let scheduled = reminders.reminder_changes(None, Some(t), now);
        assert_eq!(kinds(&scheduled), ["reminder.scheduled"]);
        assert_valid("reminder.scheduled", &scheduled[0].event);

        let move_due = TaskChanges {
            due_at: Some(Some(later)),
            ..TaskChanges::default()
        };
        let (moved, _) = t.apply(&move_due, now);
        let rows = reminders.reminder_changes(Some(t), Some(&moved), now);
        assert_eq!(kinds(&rows), ["reminder.cancelled", "reminder.scheduled"]);
        assert_valid("reminder.cancelled", &rows[0].event);
        assert_valid("reminder.scheduled", &rows[1].event);

        let deleted = reminders.reminder_changes(Some(t), None, now);
        assert_eq!(kinds(&deleted), ["reminder.cancelled"]);
        assert_valid("reminder.cancelled", &deleted[0].event);

        let due = DueReminder {
            task_id: t.id,
            user_id: t.user_id.clone(),
            title: t.title.clone(),
            due_at: t.due_at.expect("due"),
            remind_at: t.reminder_fires_at().expect("a reminder"),
            remind_before_minutes: t.reminder.and_then(Reminder::minutes_before),
        };
        assert_valid(
            "reminder.triggered",
            &reminders.reminder_triggered(&due, now).event,
        );
    }
    let switch = TaskChanges {
        reminder: Some(Some(Reminder::At(later))),
        due_at: Some(Some(later)),
        ..TaskChanges::default()
    };
    let (after, changed) = relative.apply(&switch, now);
    assert_eq!(changed, ["due_at", "remind_before_minutes", "remind_at"]);
    assert_valid(
        "task.updated",
        &context().for_change(&after, &changed, now)[0].event,
    );
}

#[test]
fn the_schemas_reject_what_the_contract_forbids() {
    let t = task(r#"{"title": "x"}"#);
    let mut event = context().created(&t, Utc::now()).event;
    event["type"] = "task.updated".into();
    assert!(!validator("task.created").is_valid(&event), "wrong type");
    let mut event = context().created(&t, Utc::now()).event;
    event
        .as_object_mut()
        .expect("object")
        .remove("partitionkey");
    assert!(
        !validator("task.created").is_valid(&event),
        "partition key required"
    );
    let t = task(r#"{"title": "x", "due_at": "2026-04-01T09:00:00Z", "remind_before_minutes": 5}"#);
    let reminders = EventContext {
        topic: "reminders".into(),
        ..context()
    };
    let mut event = reminders.reminder_changes(Some(&t), None, Utc::now())[0]
        .event
        .clone();
    event["data"]["reason"] = "snoozed".into();
    assert!(
        !validator("reminder.cancelled").is_valid(&event),
        "unknown reason"
    );
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

/// `properties` and `required` of the object schema at `pointer` in `schema`'s file.
fn declared(schema_name: &str, pointer: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let schema = schema(schema_name);
    let object = schema.pointer(pointer).expect("an object schema");
    let required = object["required"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (keys(&object["properties"]), required)
}

/// Each wire struct writes exactly the fields its schema declares, all of them required: a
/// field added to one and not the other fails here.
#[test]
fn every_wire_struct_has_the_fields_of_its_schema() {
    let t = task(
        r#"{"title": "Call the bank", "due_at": "2026-03-31T09:00:00+02:00",
            "remind_before_minutes": 30}"#,
    );
    let at = t.reminder_fires_at().expect("a reminder");
    let due = t.due_at.expect("due");
    let samples: Vec<(&str, &str, Value)> = vec![
        (
            "task",
            "",
            serde_json::to_value(TaskJson::from(&t)).expect("json"),
        ),
        (
            "task.updated",
            "/properties/data",
            serde_json::to_value(UpdatedData::new(&t, &["title"])).expect("json"),
        ),
        (
            "task.completed",
            "/properties/data",
            serde_json::to_value(CompletedData::new(&t)).expect("json"),
        ),
        (
            "task.deleted",
            "/properties/data",
            serde_json::to_value(DeletedData::new(&t)).expect("json"),
        ),
        (
            "reminder.scheduled",
            "/properties/data",
            serde_json::to_value(ReminderData::new(t.id, &t.title, due, at, Some(30)))
                .expect("json"),
        ),
        (
            "reminder.triggered",
            "/properties/data",
            serde_json::to_value(ReminderData::new(t.id, &t.title, due, at, None)).expect("json"),
        ),
        (
            "reminder.cancelled",
            "/properties/data",
            serde_json::to_value(CancelledData::new(t.id, at, CancelReason::Removed))
                .expect("json"),
        ),
    ];
    for (name, pointer, written) in samples {
        let (properties, required) = declared(name, pointer);
        assert_eq!(keys(&written), properties, "{name}: written vs declared");
        assert_eq!(required, properties, "{name}: every field is required");
    }
    assert_eq!(
        schema("task.created")["properties"]["data"]["$ref"],
        "task.json",
        "task.created carries the task itself"
    );
}

/// The task schema's limits are the parser's constants, so a limit changed in one place fails
/// here rather than letting the published schema and the API disagree.
#[test]
fn the_task_schema_states_the_parser_limits() {
    use todo_core::recurrence::{MAX_COUNT, MAX_INTERVAL};
    use todo_core::tasks::model::{DESCRIPTION_MAX, TAG_MAX, TAGS_MAX, TITLE_MAX};
    use todo_core::tasks::reminder::MAX_MINUTES_BEFORE;

    let task = schema("task");
    let limit = |pointer: &str| {
        task.pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("task.json has no number at {pointer}"))
    };
    let cases: [(&str, u64); 7] = [
        ("/properties/title/maxLength", TITLE_MAX as u64),
        ("/properties/description/maxLength", DESCRIPTION_MAX as u64),
        ("/properties/tags/maxItems", TAGS_MAX as u64),
        ("/properties/tags/items/maxLength", TAG_MAX as u64),
        (
            "/properties/remind_before_minutes/maximum",
            u64::from(MAX_MINUTES_BEFORE),
        ),
        (
            "/$defs/recurrence/properties/interval/maximum",
            u64::from(MAX_INTERVAL),
        ),
        (
            "/$defs/recurrence/properties/count/maximum",
            u64::from(MAX_COUNT),
        ),
    ];
    for (pointer, constant) in cases {
        assert_eq!(limit(pointer), constant, "{pointer}");
    }
}
