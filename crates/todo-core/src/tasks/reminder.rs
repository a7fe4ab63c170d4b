//! A task's reminder: when the app announces the task on the `reminders` topic.
//!
//! A reminder belongs to a due date and is set in one of two forms:
//! - `remind_before_minutes`: a number of minutes before `due_at` (0 to 525600, a year); it
//!   follows the due date when that moves;
//! - `remind_at`: an absolute time, not after `due_at`.
//!
//! Either way the task has one effective fire time ([`Reminder::fire_time`]), which the API
//! returns as `reminder_fires_at` and the database keeps in `tasks.remind_at`
//! (migrations/0004_reminders.sql), where the sweep (`crate::reminders`) finds it.

use crate::tasks::time::parse_utc;
use crate::validation::{FieldError, json_kind};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// The largest `remind_before_minutes`: a year of minutes.
pub const MAX_MINUTES_BEFORE: u32 = 525_600;

pub const MINUTES_FIELD: &str = "remind_before_minutes";
pub const AT_FIELD: &str = "remind_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reminder {
    /// This many minutes before the due time.
    Before(u32),
    /// At this time (UTC), which is not after the due time.
    At(DateTime<Utc>),
}

impl Reminder {
    /// When the reminder fires for a task due at `due_at`.
    pub fn fire_time(self, due_at: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Reminder::Before(minutes) => due_at - Duration::minutes(i64::from(minutes)),
            Reminder::At(at) => at,
        }
    }

    /// `remind_before_minutes` as the API shows it.
    pub fn minutes_before(self) -> Option<u32> {
        match self {
            Reminder::Before(minutes) => Some(minutes),
            Reminder::At(_) => None,
        }
    }

    /// `remind_at` as the API shows it: only an absolute reminder has one.
    pub fn absolute(self) -> Option<DateTime<Utc>> {
        match self {
            Reminder::Before(_) => None,
            Reminder::At(at) => Some(at),
        }
    }

    /// The field a client set this reminder with, for error messages.
    pub fn field(self) -> &'static str {
        match self {
            Reminder::Before(_) => MINUTES_FIELD,
            Reminder::At(_) => AT_FIELD,
        }
    }

    /// Checks the reminder against the due time of its task: a reminder needs a due time, and
    /// an absolute one must not come after it.
    pub fn check(self, due_at: Option<DateTime<Utc>>) -> Result<(), FieldError> {
        let Some(due_at) = due_at else {
            return Err(FieldError::new(
                self.field(),
                "requires due_at: a reminder belongs to a due date; set one, or remove the \
                 reminder in the same request",
            ));
        };
        match self {
            Reminder::At(at) if at > due_at => Err(FieldError::new(
                AT_FIELD,
                format!(
                    "must not be after due_at ({})",
                    crate::tasks::time::format(&due_at)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The reminder its two fields set, `remind_before_minutes` and `remind_at`, as the API
    /// and events carry them: at most one may be non-null, and the minutes are at most a
    /// year. Both null is no reminder. Whether it fits the due time is [`Reminder::check`].
    pub fn from_fields(
        minutes: Option<u32>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<Reminder>, FieldError> {
        match (minutes, at) {
            (Some(_), Some(_)) => Err(FieldError::new(
                AT_FIELD,
                "send either remind_before_minutes or remind_at, not both",
            )),
            (Some(minutes), None) => check_minutes(minutes).map(|m| Some(Reminder::Before(m))),
            (None, Some(at)) => Ok(Some(Reminder::At(at))),
            (None, None) => Ok(None),
        }
    }

    /// The reminder of the next occurrence of a recurring task that was due at `due_at` and
    /// whose next occurrence is due at `next_due`: the same minutes before, or an absolute
    /// time the same distance before the new due time. `None` if that time cannot be
    /// represented.
    pub fn carried(self, due_at: DateTime<Utc>, next_due: DateTime<Utc>) -> Option<Reminder> {
        match self {
            Reminder::Before(minutes) => Some(Reminder::Before(minutes)),
            Reminder::At(at) => next_due.checked_sub_signed(due_at - at).map(Reminder::At),
        }
    }

    /// The stored columns back as a reminder: `remind_before_minutes` wins; otherwise a
    /// `remind_at` without minutes is absolute.
    pub fn from_columns(
        minutes: Option<i32>,
        remind_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Reminder>, String> {
        match (minutes, remind_at) {
            (Some(minutes), _) => u32::try_from(minutes)
                .ok()
                .filter(|m| *m <= MAX_MINUTES_BEFORE)
                .map(|m| Some(Reminder::Before(m)))
                .ok_or_else(|| format!("remind_before_minutes {minutes} is out of range")),
            (None, Some(at)) => Ok(Some(Reminder::At(at))),
            (None, None) => Ok(None),
        }
    }
}

/// `remind_before_minutes` as a client sends it: an integer from 0 to 525600.
pub fn parse_minutes(value: &Value) -> Result<u32, FieldError> {
    match value {
        Value::Number(n) => crate::validation::whole_number(n)
            .and_then(|minutes| u32::try_from(minutes).ok())
            .ok_or_else(minutes_range)
            .and_then(check_minutes),
        other => Err(FieldError::new(
            MINUTES_FIELD,
            format!("must be an integer or null, not {}", json_kind(other)),
        )),
    }
}

fn minutes_range() -> FieldError {
    FieldError::new(
        MINUTES_FIELD,
        format!("must be a whole number of minutes from 0 to {MAX_MINUTES_BEFORE} (a year)"),
    )
}

/// Minutes before the due time: at most a year.
fn check_minutes(minutes: u32) -> Result<u32, FieldError> {
    if minutes <= MAX_MINUTES_BEFORE {
        Ok(minutes)
    } else {
        Err(minutes_range())
    }
}

/// `remind_at` as a client sends it: an RFC 3339 date-time with an offset.
pub fn parse_at(value: &Value) -> Result<DateTime<Utc>, FieldError> {
    match value {
        Value::String(text) => parse_utc(text).map_err(|why| FieldError::new(AT_FIELD, why)),
        other => Err(FieldError::new(
            AT_FIELD,
            format!(
                "must be an RFC 3339 date-time string or null, not {}",
                json_kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(text: &str) -> DateTime<Utc> {
        parse_utc(text).expect("valid")
    }

    #[test]
    fn the_fire_time_is_relative_to_the_due_time_or_absolute() {
        let due = utc("2026-05-01T09:00:00Z");
        assert_eq!(
            Reminder::Before(30).fire_time(due),
            utc("2026-05-01T08:30:00Z")
        );
        assert_eq!(Reminder::Before(0).fire_time(due), due);
        assert_eq!(
            Reminder::Before(MAX_MINUTES_BEFORE).fire_time(due),
            utc("2025-05-01T09:00:00Z")
        );
        let at = utc("2026-04-30T18:00:00Z");
        assert_eq!(Reminder::At(at).fire_time(due), at);
    }

    #[test]
    fn a_reminder_needs_a_due_time_and_may_not_follow_it() {
        let due = utc("2026-05-01T09:00:00Z");
        assert_eq!(Reminder::Before(10).check(Some(due)), Ok(()));
        assert_eq!(Reminder::At(due).check(Some(due)), Ok(()), "at due time");
        let late = Reminder::At(utc("2026-05-01T09:00:01Z"))
            .check(Some(due))
            .expect_err("after due");
        assert_eq!(late.field, "remind_at");
        assert_eq!(
            late.message,
            "must not be after due_at (2026-05-01T09:00:00Z)"
        );
        for (reminder, field) in [
            (Reminder::Before(10), "remind_before_minutes"),
            (Reminder::At(due), "remind_at"),
        ] {
            let error = reminder.check(None).expect_err("no due time");
            assert_eq!(error.field, field);
            assert!(error.message.starts_with("requires due_at"), "{error:?}");
        }
    }

    #[test]
    fn minutes_are_whole_and_at_most_a_year() {
        assert_eq!(parse_minutes(&json!(0)), Ok(0));
        assert_eq!(parse_minutes(&json!(525_600)), Ok(525_600));
        for (value, why) in [
            (json!(525_601), "over a year"),
            (json!(-1), "negative"),
            (json!(1.5), "fractional"),
            (json!(u64::MAX), "huge"),
        ] {
            let error = parse_minutes(&value).expect_err(why);
            assert_eq!(
                error.message, "must be a whole number of minutes from 0 to 525600 (a year)",
                "{why}"
            );
        }
        assert_eq!(
            parse_minutes(&json!("30")).map_err(|e| e.message),
            Err("must be an integer or null, not a string".to_owned())
        );
    }

    #[test]
    fn two_fields_set_one_reminder() {
        let at = utc("2026-05-01T08:30:00Z");
        assert_eq!(Reminder::from_fields(None, None), Ok(None));
        assert_eq!(
            Reminder::from_fields(Some(30), None),
            Ok(Some(Reminder::Before(30)))
        );
        assert_eq!(
            Reminder::from_fields(None, Some(at)),
            Ok(Some(Reminder::At(at)))
        );
        let both = Reminder::from_fields(Some(30), Some(at)).expect_err("both");
        assert_eq!(both.field, AT_FIELD);
        let long = Reminder::from_fields(Some(MAX_MINUTES_BEFORE + 1), None).expect_err("long");
        assert_eq!(long.field, MINUTES_FIELD);
    }

    #[test]
    fn absolute_times_need_an_offset() {
        assert_eq!(
            parse_at(&json!("2026-05-01T11:00:00+02:00")),
            Ok(utc("2026-05-01T09:00:00Z"))
        );
        assert!(parse_at(&json!("2026-05-01T11:00:00")).is_err());
        assert_eq!(
            parse_at(&json!(5)).map_err(|e| e.message),
            Err("must be an RFC 3339 date-time string or null, not a number".to_owned())
        );
    }

    #[test]
    fn the_next_occurrence_keeps_the_distance_before_its_due_time() {
        let due = utc("2026-01-31T09:00:00Z");
        let next = utc("2026-02-28T09:00:00Z");
        assert_eq!(
            Reminder::Before(45).carried(due, next),
            Some(Reminder::Before(45))
        );
        let day_before = Reminder::At(utc("2026-01-30T20:00:00Z"));
        assert_eq!(
            day_before.carried(due, next),
            Some(Reminder::At(utc("2026-02-27T20:00:00Z")))
        );
    }

    #[test]
    fn stored_columns_read_back_as_the_reminder_they_were() {
        let at = utc("2026-05-01T08:30:00Z");
        assert_eq!(
            Reminder::from_columns(Some(30), Some(at)),
            Ok(Some(Reminder::Before(30)))
        );
        assert_eq!(
            Reminder::from_columns(None, Some(at)),
            Ok(Some(Reminder::At(at)))
        );
        assert_eq!(Reminder::from_columns(None, None), Ok(None));
        assert!(Reminder::from_columns(Some(-1), Some(at)).is_err());
    }
}
