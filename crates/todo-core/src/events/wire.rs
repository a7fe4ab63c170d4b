//! The JSON of a task and of each event's `data`, one struct per shape, used both ways: the
//! API and the event builders serialize them, the intake deserializes them and turns them into
//! domain values with the API's own validators (`TryFrom`). Each shape has its schema in
//! `schemas/`; `tests/event_schemas.rs` fails when a struct and its schema disagree.
//!
//! Time stamps are RFC 3339 strings, always UTC (`Z`) when written (`tasks::time::format`) and
//! read with `tasks::time::parse_utc`, so a bad one is reported with the field it is in.
//! Fields added after events were first published default when absent, so older events read.

use crate::recurrence::Recurrence;
use crate::tasks::reminder::Reminder;
use crate::tasks::time::{format, parse_utc};
use crate::tasks::{Priority, Task, UserId, model};
use crate::validation::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// The JSON form of a [`Task`] (schemas/task.json), as the API returns it and events carry it.
/// The reminder appears as the client set it (`remind_before_minutes` or `remind_at`, the other
/// null) and as it takes effect: `reminder_fires_at` is when it fires, `reminder_fired_at` when
/// it did. Those two are read-only, so a client may send back what it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskJson {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub completed_at: Option<String>,
    /// Read as the API reads it (`Priority::parse`: any case, surrounding blanks).
    pub priority: String,
    pub tags: Vec<String>,
    pub due_at: Option<String>,
    #[serde(default, deserialize_with = "crate::validation::optional_whole_number")]
    pub remind_before_minutes: Option<u32>,
    #[serde(default)]
    pub remind_at: Option<String>,
    /// Derived from the reminder and the due time; not read back.
    #[serde(default)]
    pub reminder_fires_at: Option<String>,
    #[serde(default)]
    pub reminder_fired_at: Option<String>,
    pub recurrence: Option<Recurrence>,
    /// Always written. Absent in events from before series existed: the task is then its
    /// own series.
    #[serde(default)]
    pub series_id: Option<Uuid>,
    #[serde(default, deserialize_with = "crate::validation::required_whole_number")]
    pub occurrence: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// `data` of `task.created`: the task itself.
pub type CreatedData = TaskJson;

/// `data` of `task.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatedData {
    pub task: TaskJson,
    /// The fields whose value changed, in `Task::apply`'s order.
    pub changed_fields: Vec<String>,
}

/// `data` of `task.completed`, sent when completion flipped either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedData {
    pub task_id: Uuid,
    pub completed: bool,
    pub completed_at: Option<String>,
    pub due_at: Option<String>,
    pub recurrence: Option<Recurrence>,
    /// The task as it is after the change, so consumers need no read-back.
    pub task: TaskJson,
    /// Where the series' calendar counts from (see `series`), so the recurrence engine can
    /// compute the next occurrence from the event alone.
    #[serde(default)]
    pub series_anchor: Option<String>,
    #[serde(default, deserialize_with = "crate::validation::required_whole_number")]
    pub anchor_occurrence: u32,
}

/// `data` of `task.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedData {
    pub task_id: Uuid,
    /// The task as it was just before deletion.
    pub last_state: TaskJson,
}

/// `data` of `reminder.scheduled` and `reminder.triggered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderData {
    pub task_id: Uuid,
    pub title: String,
    pub due_at: String,
    /// When the reminder fires (fired).
    pub remind_at: String,
    /// Set when the reminder is relative to the due time.
    #[serde(default, deserialize_with = "crate::validation::optional_whole_number")]
    pub remind_before_minutes: Option<u32>,
}

/// `data` of `reminder.cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelledData {
    pub task_id: Uuid,
    /// The fire time that will not happen.
    pub remind_at: String,
    pub reason: CancelReason,
}

/// Why a pending reminder will not fire (`data.reason` of `reminder.cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    Completed,
    Deleted,
    /// The reminder was removed from the task.
    Removed,
    /// The task's due time changed; a `reminder.scheduled` follows if a reminder remains.
    DueChanged,
}

impl From<&Task> for TaskJson {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id,
            title: task.title.clone(),
            description: task.description.clone(),
            completed: task.completed,
            completed_at: task.completed_at.as_ref().map(format),
            priority: task.priority.as_str().to_owned(),
            tags: task.tags.clone(),
            due_at: task.due_at.as_ref().map(format),
            remind_before_minutes: task.reminder.and_then(Reminder::minutes_before),
            remind_at: task
                .reminder
                .and_then(Reminder::absolute)
                .as_ref()
                .map(format),
            reminder_fires_at: task.reminder_fires_at().as_ref().map(format),
            reminder_fired_at: task.reminder_fired_at.as_ref().map(format),
            recurrence: task.recurrence.clone(),
            series_id: Some(task.series_id),
            occurrence: task.occurrence,
            created_at: format(&task.created_at),
            updated_at: format(&task.updated_at),
        }
    }
}

impl Serialize for Task {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TaskJson::from(self).serialize(serializer)
    }
}

impl UpdatedData {
    pub fn new(task: &Task, changed: &[&str]) -> Self {
        Self {
            task: task.into(),
            changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

impl CompletedData {
    pub fn new(task: &Task) -> Self {
        Self {
            task_id: task.id,
            completed: task.completed,
            completed_at: task.completed_at.as_ref().map(format),
            due_at: task.due_at.as_ref().map(format),
            recurrence: task.recurrence.clone(),
            task: task.into(),
            series_anchor: task.series_anchor.as_ref().map(format),
            anchor_occurrence: task.anchor_occurrence,
        }
    }
}

impl DeletedData {
    pub fn new(task: &Task) -> Self {
        Self {
            task_id: task.id,
            last_state: task.into(),
        }
    }
}

impl ReminderData {
    pub fn new(
        task_id: Uuid,
        title: &str,
        due_at: DateTime<Utc>,
        remind_at: DateTime<Utc>,
        remind_before_minutes: Option<u32>,
    ) -> Self {
        Self {
            task_id,
            title: title.to_owned(),
            due_at: format(&due_at),
            remind_at: format(&remind_at),
            remind_before_minutes,
        }
    }
}

impl CancelledData {
    pub fn new(task_id: Uuid, remind_at: DateTime<Utc>, reason: CancelReason) -> Self {
        Self {
            task_id,
            remind_at: format(&remind_at),
            reason,
        }
    }
}

/// Why an event's data is no valid domain value: a sentence naming the field
/// (`data.task.title: must not be blank`), for the log.
pub type Invalid = String;

/// A time stamp at `path`, read as the API reads one.
fn time(path: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Invalid> {
    text.map(|t| parse_utc(t).map_err(|why| format!("{path} {why}")))
        .transpose()
}

fn required_time(path: &str, text: &str) -> Result<DateTime<Utc>, Invalid> {
    parse_utc(text).map_err(|why| format!("{path} {why}"))
}

/// The task of `owner` an event carries, validated with the rules the API applies to what it
/// stores. The version is not carried (it is 0), nor the series' anchor, which only
/// `task.completed` carries.
impl TryFrom<(&UserId, TaskJson)> for Task {
    type Error = Invalid;

    fn try_from((owner, data): (&UserId, TaskJson)) -> Result<Self, Invalid> {
        let field = |e: FieldError| format!("data.task.{}: {}", e.field, e.message);
        let named = |name: &str, e: FieldError| format!("data.task.{name}: {}", e.message);
        let completed_at = time("data.task.completed_at", data.completed_at.as_deref())?;
        if data.completed != completed_at.is_some() {
            return Err(
                "data.task.completed_at must be set exactly when the task is completed".into(),
            );
        }
        let due_at = time("data.task.due_at", data.due_at.as_deref())?;
        let remind_at = time("data.task.remind_at", data.remind_at.as_deref())?;
        let minutes = data.remind_before_minutes;
        let reminder = Reminder::from_fields(minutes, remind_at).map_err(|e| {
            if minutes.is_some() && remind_at.is_some() {
                "data.task has both remind_before_minutes and remind_at".to_owned()
            } else {
                field(e)
            }
        })?;
        if let Some(reminder) = reminder {
            reminder.check(due_at).map_err(field)?;
        }
        Ok(Task {
            id: data.id,
            user_id: owner.as_str().to_owned(),
            title: model::parse_title(&data.title).map_err(|e| named("title", e))?,
            description: match data.description {
                Some(text) => {
                    model::parse_description(&text).map_err(|e| named("description", e))?
                }
                None => None,
            },
            completed: data.completed,
            completed_at,
            priority: Priority::parse(&data.priority)
                .ok_or_else(|| format!("data.task.priority must be one of {}", Priority::NAMES))?,
            tags: model::parse_tags(data.tags.iter().map(String::as_str))
                .map_err(|e| named("tags", e))?,
            due_at,
            reminder,
            reminder_fired_at: time(
                "data.task.reminder_fired_at",
                data.reminder_fired_at.as_deref(),
            )?,
            recurrence: data.recurrence,
            series_id: data.series_id.unwrap_or(data.id),
            occurrence: data.occurrence,
            series_anchor: None,
            anchor_occurrence: 0,
            created_at: required_time("data.task.created_at", &data.created_at)?,
            updated_at: required_time("data.task.updated_at", &data.updated_at)?,
            version: 0,
        })
    }
}

/// The task a `task.completed` describes, with the series' anchor from the event.
impl TryFrom<(&UserId, CompletedData)> for Task {
    type Error = Invalid;

    fn try_from((owner, data): (&UserId, CompletedData)) -> Result<Self, Invalid> {
        if data.task.id != data.task_id {
            return Err("data.task_id and data.task.id differ".into());
        }
        if data.task.completed != data.completed {
            return Err("data.completed and data.task.completed differ".into());
        }
        let mut task = Task::try_from((owner, data.task))?;
        task.series_anchor = time("data.series_anchor", data.series_anchor.as_deref())?;
        task.anchor_occurrence = data.anchor_occurrence;
        if task.anchor_occurrence > task.occurrence {
            return Err("data.anchor_occurrence is after data.task.occurrence".into());
        }
        Ok(task)
    }
}

/// The task a `task.deleted` was about, as it was.
impl TryFrom<(&UserId, DeletedData)> for Task {
    type Error = Invalid;

    fn try_from((owner, data): (&UserId, DeletedData)) -> Result<Self, Invalid> {
        if data.last_state.id != data.task_id {
            return Err("data.task_id and data.last_state.id differ".into());
        }
        Task::try_from((owner, data.last_state))
    }
}

/// The task a `task.updated` carries, as it is after the change.
impl TryFrom<(&UserId, UpdatedData)> for Task {
    type Error = Invalid;

    fn try_from((owner, data): (&UserId, UpdatedData)) -> Result<Self, Invalid> {
        Task::try_from((owner, data.task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskChanges;

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    fn task() -> Task {
        let changes = TaskChanges {
            title: Some("Dentist".into()),
            tags: Some(vec!["health".into()]),
            due_at: Some(Some(parse_utc("2026-05-01T09:00:00Z").expect("valid"))),
            reminder: Some(Some(Reminder::Before(30))),
            ..TaskChanges::default()
        };
        let now = parse_utc("2026-04-01T00:00:00.123456Z").expect("valid");
        Task::create(Uuid::now_v7(), &alice(), changes, now)
    }

    /// Serialize, then read back as JSON text: what a consumer of the topic does.
    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        let text = serde_json::to_string(value).expect("serializes");
        serde_json::from_str(&text).expect("reads back")
    }

    #[test]
    fn every_shape_reads_back_as_written() {
        let task = task();
        let json = TaskJson::from(&task);
        assert_eq!(round_trip(&json), json);
        let updated = UpdatedData::new(&task, &["title"]);
        assert_eq!(round_trip(&updated), updated);
        let completed = CompletedData::new(&task);
        assert_eq!(round_trip(&completed), completed);
        let deleted = DeletedData::new(&task);
        assert_eq!(round_trip(&deleted), deleted);
        let at = parse_utc("2026-05-01T08:30:00Z").expect("valid");
        let reminder = ReminderData::new(task.id, &task.title, at, at, Some(30));
        assert_eq!(round_trip(&reminder), reminder);
        let cancelled = CancelledData::new(task.id, at, CancelReason::DueChanged);
        assert_eq!(round_trip(&cancelled), cancelled);
        assert_eq!(
            serde_json::to_value(&cancelled).expect("json")["reason"],
            "due_changed"
        );
    }

    #[test]
    fn a_task_survives_the_wire_but_for_its_version_and_series_anchor() {
        let task = task();
        let read = Task::try_from((&alice(), round_trip(&TaskJson::from(&task))));
        let unanchored = Task {
            version: 0,
            series_anchor: None,
            ..task.clone()
        };
        assert_eq!(read, Ok(unanchored));
        let completed = Task::try_from((&alice(), round_trip(&CompletedData::new(&task))));
        assert_eq!(
            completed,
            Ok(Task { version: 0, ..task }),
            "a completion anchors"
        );
    }

    /// JSON Schema's `integer` includes `30.0`, so a producer that writes whole numbers with
    /// a fraction part still publishes valid events; a fraction or a negative count is not.
    #[test]
    fn whole_numbers_with_a_fraction_part_are_read_as_integers() {
        let task = Task {
            occurrence: 2,
            anchor_occurrence: 1,
            ..task()
        };
        let mut completed = serde_json::to_value(CompletedData::new(&task)).expect("json");
        completed["anchor_occurrence"] = serde_json::json!(1.0);
        completed["task"]["occurrence"] = serde_json::json!(2.0);
        completed["task"]["remind_before_minutes"] = serde_json::json!(30.0);
        let read: CompletedData = serde_json::from_value(completed.clone()).expect("valid");
        assert_eq!(read, CompletedData::new(&task));
        let at = parse_utc("2026-05-01T08:30:00Z").expect("valid");
        let mut reminder =
            serde_json::to_value(ReminderData::new(task.id, "t", at, at, Some(30))).expect("json");
        reminder["remind_before_minutes"] = serde_json::json!(30.0);
        let read: ReminderData = serde_json::from_value(reminder).expect("valid");
        assert_eq!(read.remind_before_minutes, Some(30));

        for (path, value) in [
            ("/task/remind_before_minutes", serde_json::json!(30.5)),
            ("/task/occurrence", serde_json::json!(-1)),
            ("/anchor_occurrence", serde_json::json!(1.5)),
        ] {
            let mut bad = completed.clone();
            *bad.pointer_mut(path).expect("the field") = value.clone();
            let error = serde_json::from_value::<CompletedData>(bad).expect_err(path);
            assert!(
                error.to_string().contains("not a whole number"),
                "{path}: {error}"
            );
        }
        let mut absent = completed;
        absent["task"]
            .as_object_mut()
            .expect("an object")
            .remove("occurrence");
        let read: CompletedData = serde_json::from_value(absent).expect("valid");
        assert_eq!(
            read.task.occurrence, 0,
            "events from before series have none"
        );
    }

    #[test]
    fn the_task_json_is_written_in_utc_with_nulls_not_absent_fields() {
        let task = Task {
            reminder: None,
            ..task()
        };
        let text = serde_json::to_string(&task).expect("json");
        assert!(
            text.starts_with(&format!(
                "{{\"id\":\"{}\",\"title\":\"Dentist\",\"description\":null,\"completed\":false,",
                task.id
            )),
            "{text}"
        );
        assert!(
            text.contains("\"remind_before_minutes\":null,\"remind_at\":null,"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\"created_at\":\"2026-04-01T00:00:00.123456Z\",\
                 \"updated_at\":\"2026-04-01T00:00:00.123456Z\"}"
            ),
            "{text}"
        );
    }

    #[test]
    fn stored_rules_apply_to_what_events_carry() {
        let json = TaskJson::from(&task());
        let read = |edit: &dyn Fn(&mut TaskJson)| {
            let mut data = json.clone();
            edit(&mut data);
            Task::try_from((&alice(), data))
        };
        let reason = |edit: &dyn Fn(&mut TaskJson)| read(edit).expect_err("refused");
        assert!(reason(&|d| d.title = " ".into()).starts_with("data.task.title: "));
        assert!(reason(&|d| d.priority = "urgent".into()).contains("priority"));
        assert!(reason(&|d| d.due_at = Some("soon".into())).contains("data.task.due_at"));
        assert!(reason(&|d| d.remind_before_minutes = Some(525_601)).contains("525600"));
        assert!(reason(&|d| d.tags = vec!["x".repeat(51)]).starts_with("data.task.tags: "));
        let trimmed = read(&|d| d.priority = " HIGH ".into()).expect("as the API reads it");
        assert_eq!(trimmed.priority, Priority::High);
        let blank = read(&|d| d.description = Some("  ".into())).expect("valid");
        assert_eq!(blank.description, None, "a blank description is none");
        let old = read(&|d| {
            d.series_id = None;
            d.occurrence = 0;
        })
        .expect("from before series");
        assert_eq!(old.series_id, old.id);
    }
}
