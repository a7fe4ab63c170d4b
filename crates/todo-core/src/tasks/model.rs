//! The task and the value types it is made of. Each type validates once, when it is built.

use crate::recurrence::{Recurrence, RecurrenceInput};
use crate::tasks::input::TaskChanges;
use crate::tasks::time::serde_utc;
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
    /// and a valid Kafka key.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= USER_ID_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@|~".contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "user_id",
                "must be 1-128 characters of letters, digits and - _ . : @ | ~",
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

/// Trims each tag, drops blanks and case-insensitive duplicates (the first spelling wins).
pub fn parse_tags<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, FieldError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in raw {
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
        if !tags.iter().any(|t| t.to_lowercase() == tag.to_lowercase()) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(FieldError::new(
            "tags",
            format!("at most {TAGS_MAX} tags are allowed"),
        ));
    }
    Ok(tags)
}

/// Lower-cased tags, stored beside the tags for case-insensitive filtering.
pub fn tag_keys(tags: &[String]) -> Vec<String> {
    tags.iter().map(|t| t.to_lowercase()).collect()
}

/// A task as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: Uuid,
    #[serde(skip)]
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    pub tags: Vec<String>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub due_at: Option<DateTime<Utc>>,
    pub recurrence: Option<Recurrence>,
    /// The series the task belongs to: the id of its first task (its own id for a new task).
    pub series_id: Uuid,
    /// The task's position in its series, 0 for the first. A series has at most one task per
    /// occurrence, which the database enforces (migrations/0003_recurrence.sql).
    pub occurrence: u32,
    /// The due time the series' calendar counts from (see `series`).
    #[serde(skip)]
    pub series_anchor: Option<DateTime<Utc>>,
    /// The occurrence `series_anchor` belongs to.
    #[serde(skip)]
    pub anchor_occurrence: u32,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; the basis of the `ETag` and of lost-update protection.
    #[serde(skip)]
    pub version: i64,
}

impl Task {
    /// A new task from the validated body of a create request. It starts its own series, at
    /// occurrence 0, anchored at its due time.
    pub fn create(id: Uuid, user: &UserId, changes: TaskChanges, now: DateTime<Utc>) -> Task {
        let completed = changes.completed.unwrap_or(false);
        let due_at = changes.due_at.flatten();
        Task {
            id,
            user_id: user.as_str().to_owned(),
            title: changes.title.unwrap_or_default(),
            description: changes.description.flatten(),
            completed,
            completed_at: completed.then_some(now),
            priority: changes.priority.unwrap_or_default(),
            tags: changes.tags.unwrap_or_default(),
            due_at,
            recurrence: changes.recurrence.flatten(),
            series_id: id,
            occurrence: 0,
            series_anchor: due_at,
            anchor_occurrence: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// The task after `changes`, and the names of the fields whose value changed, in a fixed
    /// order. A change of `completed` also moves `completed_at`. With no change the task is
    /// returned as it was (same version and `updated_at`).
    pub fn apply(&self, changes: &TaskChanges, now: DateTime<Utc>) -> (Task, Vec<&'static str>) {
        let mut next = self.clone();
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = &changes.$field
                    && next.$field != *value
                {
                    next.$field = value.clone();
                    changed.push(stringify!($field));
                }
            };
        }
        set!(title);
        set!(description);
        set!(priority);
        set!(tags);
        set!(due_at);
        set!(recurrence);
        if let Some(completed) = changes.completed
            && next.completed != completed
        {
            next.completed = completed;
            next.completed_at = completed.then_some(now);
            changed.push("completed");
        }
        if !changed.is_empty() {
            next.updated_at = now;
            next.version += 1;
        }
        (next, changed)
    }

    /// `"<version>"`, a strong entity tag for conditional requests.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// A task as read from the database, before its stored values are re-validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: i16,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub recurrence: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub series_id: Uuid,
    pub occurrence: i32,
    pub series_anchor: Option<DateTime<Utc>>,
    pub anchor_occurrence: i32,
}

impl TaskRow {
    /// Fails only if the database holds something this code never writes.
    pub fn into_task(self) -> Result<Task, String> {
        let priority = Priority::from_rank(self.priority)
            .ok_or_else(|| format!("task {} has priority rank {}", self.id, self.priority))?;
        let recurrence = self
            .recurrence
            .map(|stored| {
                serde_json::from_value::<RecurrenceInput>(stored)
                    .map_err(|e| e.to_string())
                    .and_then(|input| Recurrence::parse(input).map_err(|e| format!("{e:?}")))
            })
            .transpose()
            .map_err(|e| format!("task {} has an unreadable recurrence: {e}", self.id))?;
        let occurrence = u32::try_from(self.occurrence)
            .map_err(|_| format!("task {} has occurrence {}", self.id, self.occurrence))?;
        let anchor_occurrence = u32::try_from(self.anchor_occurrence).map_err(|_| {
            format!(
                "task {} has anchor occurrence {}",
                self.id, self.anchor_occurrence
            )
        })?;
        Ok(Task {
            id: self.id,
            user_id: self.user_id,
            title: self.title,
            description: self.description,
            completed: self.completed,
            completed_at: self.completed_at,
            priority,
            tags: self.tags,
            due_at: self.due_at,
            recurrence,
            series_id: self.series_id,
            occurrence,
            series_anchor: self.series_anchor,
            anchor_occurrence,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        })
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
        assert!(
            parse_tags((0..11).map(|_| "x").collect::<Vec<_>>()).is_ok(),
            "dupes collapse"
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(eleven.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn user_ids_are_single_url_safe_segments() {
        assert!(UserId::parse("user_123-abc").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(129), "a%2Fb"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
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

    #[test]
    fn priority_ranks_round_trip() {
        for p in [Priority::Low, Priority::Medium, Priority::High] {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
    }
}
