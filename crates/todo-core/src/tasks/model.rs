//! The task and the value types it is made of. Each type validates once, when it is built.

use crate::recurrence::Recurrence;
use crate::tasks::reminder::Reminder;
use crate::validation::FieldError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 1000;
pub const TAGS_MAX: usize = 10;
pub const TAG_MAX: usize = 50;
pub const USER_ID_MAX: usize = 128;

/// The owner of tasks: the auth provider's subject, taken from the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserId(String);

impl UserId {
    /// Ids are opaque, but restricted to URL-safe characters so they stay a single path segment
    /// and a valid Kafka key. Dots alone (`.`, `..`) are no id: as path segments they mean
    /// "this" and "parent", which clients and proxies rewrite.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= USER_ID_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@|~".contains(&b))
            && !raw.bytes().all(|b| b == b'.');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "user_id",
                "must be 1-128 characters of letters, digits and - _ . : @ | ~, not only dots",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
}

impl Priority {
    pub const NAMES: &'static str = "low, medium, high";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    /// Stored as a small integer so sorting by priority is an index scan.
    pub fn rank(self) -> i16 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
        }
    }

    pub fn from_rank(rank: i16) -> Option<Self> {
        match rank {
            1 => Some(Self::Low),
            2 => Some(Self::Medium),
            3 => Some(Self::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// Rejects what PostgreSQL cannot store in `text` (NUL) and other control characters that
/// have no place in a one-line field.
fn check_text(field: &str, text: &str, allow_newlines: bool) -> Result<(), FieldError> {
    let bad = text
        .chars()
        .any(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t')));
    if bad {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub fn parse_title(raw: &str) -> Result<String, FieldError> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(FieldError::new("title", "must not be blank"));
    }
    if title.chars().count() > TITLE_MAX {
        return Err(FieldError::new(
            "title",
            format!("must be at most {TITLE_MAX} characters"),
        ));
    }
    check_text("title", title, false)?;
    Ok(title.to_owned())
}

/// A blank description is no description.
pub fn parse_description(raw: &str) -> Result<Option<String>, FieldError> {
    if raw.chars().count() > DESCRIPTION_MAX {
        return Err(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
        ));
    }
    check_text("description", raw, true)?;
    Ok(if raw.trim().is_empty() {
        None
    } else {
        Some(raw.to_owned())
    })
}

/// At most [`TAGS_MAX`] entries, each trimmed; blank entries and case-insensitive duplicates
/// are dropped (the first spelling wins). The limit counts entries as sent, so it is the one
/// JSON Schema states (`maxItems`, openapi.json), and input of any size (a 64 KiB body, a 1 MiB
/// event delivery, a query string) costs at most eleven entries' work.
pub fn parse_tags<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, FieldError> {
    let mut tags: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (entry, tag) in raw.into_iter().enumerate() {
        if entry == TAGS_MAX {
            return Err(FieldError::new(
                "tags",
                format!("at most {TAGS_MAX} tags are allowed"),
            ));
        }
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > TAG_MAX {
            return Err(FieldError::new(
                "tags",
                format!("each tag must be at most {TAG_MAX} characters"),
            ));
        }
        check_text("tags", tag, false)?;
        let key = tag.to_lowercase();
        if keys.contains(&key) {
            continue;
        }
        keys.push(key);
        tags.push(tag.to_owned());
    }
    Ok(tags)
}

/// Lower-cased tags, stored beside the tags for case-insensitive filtering.
pub fn tag_keys(tags: &[String]) -> Vec<String> {
    tags.iter().map(|t| t.to_lowercase()).collect()
}

/// Declares [`TaskChanges`] and [`apply_changes`] from one list of fields, so that a field
/// added to the struct is applied too, in the order declared. A field without a rule is
/// applied by plain comparison: it is set, and its name reported, when the new value differs
/// from the task's field of the same name. A field with `=> rule` is handed to that function,
/// which sets it and reports the names it changed.
macro_rules! task_changes {
    (
        $(#[$meta:meta])*
        pub struct TaskChanges {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty $(=> $rule:path)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct TaskChanges {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        /// Applies `changes` to `next` field by field, in the declared order, and pushes the
        /// names of the fields whose value changed onto `changed`.
        fn apply_changes(
            changes: &TaskChanges,
            next: &mut Task,
            now: DateTime<Utc>,
            changed: &mut Vec<&'static str>,
        ) {
            $( task_changes!(@apply changes, next, now, changed, $field $(=> $rule)?); )*
        }
    };
    (@apply $changes:ident, $next:ident, $now:ident, $changed:ident, $field:ident) => {
        if let Some(value) = &$changes.$field
            && $next.$field != *value
        {
            $next.$field = value.clone();
            $changed.push(stringify!($field));
        }
    };
    (@apply $changes:ident, $next:ident, $now:ident, $changed:ident, $field:ident => $rule:path) => {
        if let Some(value) = &$changes.$field {
            $rule($next, value, $now, $changed);
        }
    };
}

task_changes! {
    /// Validated changes to a task, as a request body (`tasks::input`) or a rule (the complete
    /// toggle, `tasks::write`) asks for them; [`Task::apply`] applies them. `None` leaves a field
    /// as it is; for optional fields `Some(None)` clears it. Each field is applied to the
    /// [`Task`] field of the same name, in the order listed here, which is the order
    /// `task.updated` reports changed fields in. A new writable field is one line here; it
    /// needs a rule only when a change of it does more than set it.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct TaskChanges {
        pub title: Option<String>,
        pub description: Option<Option<String>>,
        pub priority: Option<Priority>,
        pub tags: Option<Vec<String>>,
        pub due_at: Option<Option<DateTime<Utc>>>,
        pub reminder: Option<Option<Reminder>> => change_reminder,
        pub recurrence: Option<Option<Recurrence>>,
        pub completed: Option<bool> => change_completed,
    }
}

/// A reminder is one setting that clients see under two names: a change reports whichever of
/// `remind_before_minutes` and `remind_at` took another value.
fn change_reminder(
    next: &mut Task,
    reminder: &Option<Reminder>,
    _now: DateTime<Utc>,
    changed: &mut Vec<&'static str>,
) {
    let (old, new) = (next.reminder, *reminder);
    if old == new {
        return;
    }
    if old.and_then(Reminder::minutes_before) != new.and_then(Reminder::minutes_before) {
        changed.push("remind_before_minutes");
    }
    if old.and_then(Reminder::absolute) != new.and_then(Reminder::absolute) {
        changed.push("remind_at");
    }
    next.reminder = new;
}

/// Completing a task stamps `completed_at`; reopening it clears the stamp.
fn change_completed(
    next: &mut Task,
    completed: &bool,
    now: DateTime<Utc>,
    changed: &mut Vec<&'static str>,
) {
    if next.completed != *completed {
        next.completed = *completed;
        next.completed_at = completed.then_some(now);
        changed.push("completed");
    }
}

/// A task. Its JSON form, as the API returns it and events carry it, is
/// `events::wire::TaskJson` (schemas/task.json). `Default` is the blank task
/// [`Task::create`] fills in: every writable field as a create that omits it leaves it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Task {
    pub id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    /// The reminder, valid against `due_at` (see `tasks::reminder`).
    pub reminder: Option<Reminder>,
    /// When the reminder fired; cleared whenever its fire time moves, so a moved reminder
    /// fires again.
    pub reminder_fired_at: Option<DateTime<Utc>>,
    pub recurrence: Option<Recurrence>,
    /// The series the task belongs to: the id of its first task (its own id for a new task).
    pub series_id: Uuid,
    /// The task's position in its series, 0 for the first. A series has at most one task per
    /// occurrence, which the database enforces (migrations/0003_recurrence.sql).
    pub occurrence: u32,
    /// The due time the series' calendar counts from (see `series`).
    pub series_anchor: Option<DateTime<Utc>>,
    /// The occurrence `series_anchor` belongs to.
    pub anchor_occurrence: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write, and by a reminder firing; the basis of the `ETag` and of
    /// lost-update protection.
    pub version: i64,
}

impl Task {
    /// A new task from the validated body of a create request: the blank task with `changes`
    /// applied, so every writable field is set as a change would set it. It starts its own
    /// series, at occurrence 0, anchored at its due time.
    pub fn create(id: Uuid, user: &UserId, changes: TaskChanges, now: DateTime<Utc>) -> Task {
        let blank = Task {
            id,
            user_id: user.as_str().to_owned(),
            series_id: id,
            created_at: now,
            ..Task::default()
        };
        let (task, _) = blank.apply(&changes, now);
        Task {
            series_anchor: task.due_at,
            updated_at: now,
            version: 1,
            ..task
        }
    }

    /// The task after `changes`, and the names of the fields whose value changed, in a fixed
    /// order. A change of `completed` also moves `completed_at`; a change of the reminder's
    /// fire time (by the reminder or by `due_at`) clears `reminder_fired_at`, so the moved
    /// reminder fires again. With no change the task is returned as it was (same version and
    /// `updated_at`). The result may hold a reminder that no longer fits its due time:
    /// [`Task::check_reminder`] tells.
    pub fn apply(&self, changes: &TaskChanges, now: DateTime<Utc>) -> (Task, Vec<&'static str>) {
        let mut next = self.clone();
        let mut changed = Vec::new();
        apply_changes(changes, &mut next, now, &mut changed);
        if next.reminder_fires_at() != self.reminder_fires_at() {
            next.reminder_fired_at = None;
        }
        if !changed.is_empty() {
            next.updated_at = now;
            next.version += 1;
        }
        (next, changed)
    }

    /// When the reminder fires: its time relative to `due_at`, or its absolute time. `None`
    /// without a reminder.
    pub fn reminder_fires_at(&self) -> Option<DateTime<Utc>> {
        let due_at = self.due_at?;
        self.reminder.map(|r| r.fire_time(due_at))
    }

    /// The fire time of a reminder still to come: set, not fired, on an open task. Only a
    /// pending reminder is ever announced as scheduled, cancelled or triggered.
    pub fn pending_reminder(&self) -> Option<DateTime<Utc>> {
        if self.completed || self.reminder_fired_at.is_some() {
            return None;
        }
        self.reminder_fires_at()
    }

    /// Whether the reminder fits the due time (see `Reminder::check`); a change that breaks
    /// that, such as clearing `due_at` but not the reminder, is a 422.
    pub fn check_reminder(&self) -> Result<(), FieldError> {
        match self.reminder {
            Some(reminder) => reminder.check(self.due_at),
            None => Ok(()),
        }
    }

    /// `"<version>"`, a strong entity tag for conditional requests.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(parse_title("  Buy milk ").as_deref(), Ok("Buy milk"));
        assert!(parse_title("   ").is_err(), "blank");
        assert!(parse_title(&"x".repeat(201)).is_err(), "201 chars");
        assert!(
            parse_title(&"é".repeat(200)).is_ok(),
            "200 chars, 400 bytes"
        );
        assert!(parse_title("a\u{0}b").is_err(), "NUL cannot be stored");
        assert!(parse_title("a\nb").is_err(), "a title is one line");
    }

    #[test]
    fn tags_drop_blanks_and_duplicates() {
        let tags = parse_tags(["Work", " work ", "", "  ", "Home"]).expect("valid");
        assert_eq!(tags, vec!["Work", "Home"]);
        assert_eq!(
            parse_tags((0..10).map(|_| "x").collect::<Vec<_>>()),
            Ok(vec!["x".to_owned()]),
            "dupes collapse"
        );
        // The limit counts entries as sent, blanks and duplicates too (maxItems in openapi.json).
        for eleven in [vec!["x"; 11], vec![""; 11]] {
            assert!(parse_tags(eleven).is_err());
        }
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(eleven.iter().map(String::as_str)).is_err());
    }

    /// `n` distinct tags of three letters or digits, so 10 000 of them fit a 64 KiB body.
    fn distinct_tags(n: usize) -> Vec<String> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|i| {
                [i / 1296, i / 36 % 36, i % 36]
                    .iter()
                    .map(|&d| char::from(ALPHABET[d % 36]))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn many_tags_are_refused_at_once() {
        let distinct = distinct_tags(10_000);
        let upper: Vec<String> = distinct[..10].iter().map(|t| t.to_uppercase()).collect();
        let repeated: Vec<&str> = (0..10_000)
            .flat_map(|_| distinct[..10].iter().chain(&upper).map(String::as_str))
            .collect();
        for (what, tags) in [
            (
                "10 000 distinct tags",
                distinct.iter().map(String::as_str).collect(),
            ),
            ("200 000 duplicates", repeated),
        ] {
            let started = std::time::Instant::now();
            let error = parse_tags(tags).expect_err("too many");
            let refused_in = started.elapsed();
            assert_eq!(error.field, "tags");
            assert_eq!(error.message, "at most 10 tags are allowed");
            // The eleventh entry ends the parse, however long the input.
            let bound = std::time::Duration::from_millis(50);
            assert!(refused_in < bound, "{what}: {refused_in:?}");
        }

        let mixed: Vec<&str> = distinct[..5]
            .iter()
            .chain(&upper[..5])
            .map(String::as_str)
            .collect();
        assert_eq!(
            parse_tags(mixed).expect("ten entries"),
            distinct[..5],
            "the first spelling wins"
        );
    }

    #[test]
    fn user_ids_are_single_url_safe_segments() {
        assert!(UserId::parse("user_123-abc").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(129), "a%2Fb"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_ids_of_dots_alone_are_refused_as_path_segments() {
        for bad in [".", "..", "..."] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["a.", ".a", "..a", "a..b", "a.b.c", "~", "@."] {
            assert!(UserId::parse(good).is_ok(), "{good:?}");
        }
    }

    fn sample(now: DateTime<Utc>) -> Task {
        let user = UserId::parse("alice").expect("valid");
        let changes = TaskChanges {
            title: Some("t".into()),
            ..TaskChanges::default()
        };
        Task::create(Uuid::nil(), &user, changes, now)
    }

    #[test]
    fn apply_reports_only_real_changes() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let t1 = t0 + chrono::Duration::seconds(5);
        let task = sample(t0);
        let same = TaskChanges {
            title: Some("t".into()),
            priority: Some(Priority::Medium),
            ..TaskChanges::default()
        };
        let (unchanged, fields) = task.apply(&same, t1);
        assert!(fields.is_empty());
        assert_eq!(unchanged, task, "no-op keeps version and updated_at");

        let done = TaskChanges {
            completed: Some(true),
            priority: Some(Priority::High),
            ..TaskChanges::default()
        };
        let (next, fields) = task.apply(&done, t1);
        assert_eq!(fields, vec!["priority", "completed"]);
        assert_eq!(next.completed_at, Some(t1));
        assert_eq!(next.updated_at, t1);
        assert_eq!(next.version, 2);

        let undone = TaskChanges {
            completed: Some(false),
            ..TaskChanges::default()
        };
        let (reopened, _) = next.apply(&undone, t1);
        assert_eq!(reopened.completed_at, None);
    }

    /// `task.updated` consumers see the changed fields in this order, whatever the request.
    #[test]
    fn a_change_of_every_field_reports_them_in_the_declared_order() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let mut task = sample(t0);
        task.reminder = Some(Reminder::Before(5));
        let rule = Recurrence::parse(crate::recurrence::RecurrenceInput {
            frequency: "daily".into(),
            ..Default::default()
        })
        .expect("valid rule");
        let every = TaskChanges {
            title: Some("other".into()),
            description: Some(Some("d".into())),
            priority: Some(Priority::High),
            tags: Some(vec!["x".into()]),
            due_at: Some(Some(t0 + chrono::Duration::hours(1))),
            reminder: Some(Some(Reminder::At(t0))),
            recurrence: Some(Some(rule)),
            completed: Some(true),
        };
        let (_, changed) = task.apply(&every, t0);
        assert_eq!(
            changed,
            [
                "title",
                "description",
                "priority",
                "tags",
                "due_at",
                "remind_before_minutes",
                "remind_at",
                "recurrence",
                "completed",
            ]
        );
    }

    #[test]
    fn a_created_task_starts_its_series_at_version_1() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1);
        let due = t0 + chrono::Duration::hours(2);
        let user = UserId::parse("alice").expect("valid");
        let id = Uuid::now_v7();
        let changes = TaskChanges {
            title: Some("t".into()),
            due_at: Some(Some(due)),
            completed: Some(true),
            ..TaskChanges::default()
        };
        let task = Task::create(id, &user, changes, t0);
        assert_eq!((task.id, task.series_id, task.occurrence), (id, id, 0));
        assert_eq!((task.series_anchor, task.anchor_occurrence), (Some(due), 0));
        assert_eq!(
            (task.created_at, task.updated_at, task.version),
            (t0, t0, 1)
        );
        assert_eq!(task.completed_at, Some(t0));
        assert_eq!(
            (task.priority, task.reminder_fired_at),
            (Priority::Medium, None)
        );
        let empty = Task::create(id, &user, TaskChanges::default(), t0);
        assert_eq!(
            (empty.updated_at, empty.version),
            (t0, 1),
            "nothing applied"
        );
    }

    #[test]
    fn a_moved_fire_time_clears_the_fired_mark_and_a_kept_one_does_not() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let due = |h: i64| Some(Some(t0 + chrono::Duration::hours(h)));
        let mut relative = sample(t0);
        relative.due_at = Some(t0 + chrono::Duration::hours(10));
        relative.reminder = Some(Reminder::Before(60));
        relative.reminder_fired_at = Some(t0);
        let mut absolute = relative.clone();
        absolute.reminder = Some(Reminder::At(t0 + chrono::Duration::hours(5)));

        let move_due = TaskChanges {
            due_at: due(12),
            ..TaskChanges::default()
        };
        let (moved, changed) = relative.apply(&move_due, t0);
        assert_eq!(changed, ["due_at"]);
        assert_eq!(
            moved.reminder_fires_at(),
            Some(t0 + chrono::Duration::hours(11))
        );
        assert_eq!(moved.reminder_fired_at, None, "fires again at the new time");
        assert_eq!(moved.pending_reminder(), moved.reminder_fires_at());

        let (kept, _) = absolute.apply(&move_due, t0);
        assert_eq!(
            kept.reminder_fired_at,
            Some(t0),
            "same fire time, fired already"
        );
        assert_eq!(kept.pending_reminder(), None);

        let retitle = TaskChanges {
            title: Some("other".into()),
            ..TaskChanges::default()
        };
        assert_eq!(relative.apply(&retitle, t0).0.reminder_fired_at, Some(t0));
    }

    #[test]
    fn a_completed_task_or_a_reminder_without_due_time_has_nothing_pending() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let mut task = sample(t0);
        task.due_at = Some(t0);
        task.reminder = Some(Reminder::Before(0));
        assert_eq!(task.pending_reminder(), Some(t0));
        let done = TaskChanges {
            completed: Some(true),
            ..TaskChanges::default()
        };
        assert_eq!(task.apply(&done, t0).0.pending_reminder(), None);

        let undated = TaskChanges {
            due_at: Some(None),
            ..TaskChanges::default()
        };
        let (undated, _) = task.apply(&undated, t0);
        assert_eq!(undated.pending_reminder(), None);
        let error = undated
            .check_reminder()
            .expect_err("a reminder needs a due time");
        assert_eq!(error.field, "remind_before_minutes");
    }

    #[test]
    fn the_json_shows_the_reminder_as_set_and_as_it_fires() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let mut task = sample(t0);
        task.due_at = Some(t0 + chrono::Duration::hours(1));
        task.reminder = Some(Reminder::Before(15));
        let json = serde_json::to_value(&task).expect("json");
        assert_eq!(json["remind_before_minutes"], 15);
        assert_eq!(json["remind_at"], serde_json::Value::Null);
        assert_eq!(json["reminder_fires_at"], "1970-01-01T00:45:00Z");
        assert_eq!(json["reminder_fired_at"], serde_json::Value::Null);
        assert!(json.get("user_id").is_none() && json.get("version").is_none());
        task.reminder = Some(Reminder::At(t0));
        let json = serde_json::to_value(&task).expect("json");
        assert_eq!(json["remind_before_minutes"], serde_json::Value::Null);
        assert_eq!(json["remind_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["reminder_fires_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn priority_ranks_round_trip() {
        for p in [Priority::Low, Priority::Medium, Priority::High] {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
    }
}
