//! Recurring series: what follows a completed recurring task.
//!
//! A series is the chain of tasks a recurring task creates, one per occurrence. Its calendar
//! counts from an anchor: a due time and the occurrence it belongs to, normally the first task's
//! due time and 0. Each next due time is computed from the anchor, never from the previous,
//! possibly clamped, one (`Recurrence::occurrence`), so Jan 31 -> Feb 28 -> Mar 31.
//!
//! The anchor travels with the series. When a task's due time is not where the anchor puts it
//! (the user moved it, changed the rule, or added a due date later), the series re-anchors at
//! that task: its due time becomes the anchor from then on. The occurrence numbers keep
//! counting either way, so `count` still bounds the whole series and the database still sees at
//! most one task per occurrence.
//!
//! A task without a due date has an undated next occurrence, which still counts towards
//! `count`; its `until` is compared with the time the task was completed.

use crate::recurrence::Recurrence;
use crate::tasks::Task;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where the task after a completed one falls in its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextSchedule {
    pub occurrence: u32,
    pub due_at: Option<DateTime<Utc>>,
    pub series_anchor: Option<DateTime<Utc>>,
    pub anchor_occurrence: u32,
}

/// The schedule of the occurrence after `task`, or `None` when the task does not recur or its
/// series has ended (`count` reached, or the next due time would fall after `until`).
/// `completed_at` is when the task was completed; it bounds undated series by `until`.
pub fn next_schedule(task: &Task, completed_at: DateTime<Utc>) -> Option<NextSchedule> {
    let rule = task.recurrence.as_ref()?;
    let occurrence = task.occurrence.checked_add(1)?;
    if rule.count.is_some_and(|count| occurrence >= count) {
        return None;
    }
    // The limits are applied here, to the occurrence numbers of the whole series; the
    // calendar only steps from the anchor.
    let calendar = Recurrence {
        until: None,
        count: None,
        ..rule.clone()
    };
    let Some(due_at) = task.due_at else {
        if rule.until.is_some_and(|until| completed_at > until) {
            return None;
        }
        return Some(NextSchedule {
            occurrence,
            due_at: None,
            series_anchor: task.series_anchor,
            anchor_occurrence: task.anchor_occurrence,
        });
    };
    let on_calendar = |anchor: DateTime<Utc>| {
        task.occurrence
            .checked_sub(task.anchor_occurrence)
            .and_then(|steps| calendar.occurrence(anchor, steps))
            == Some(due_at)
    };
    let (anchor, anchor_occurrence) = match task.series_anchor {
        Some(anchor) if on_calendar(anchor) => (anchor, task.anchor_occurrence),
        _ => (due_at, task.occurrence),
    };
    let next_due = calendar.occurrence(anchor, occurrence - anchor_occurrence)?;
    if rule.until.is_some_and(|until| next_due > until) {
        return None;
    }
    Some(NextSchedule {
        occurrence,
        due_at: Some(next_due),
        series_anchor: Some(anchor),
        anchor_occurrence,
    })
}

/// The task that follows `completed` in its series, with id `id`, or `None` when there is
/// none: the task is not completed, does not recur, or its series has ended. The new task is a
/// copy of the completed one (title, description, priority, tags, rule and any field added
/// later carry over without a line here) but for what the series or a new task decides: it is
/// open, due at the next occurrence, new, and its reminder is carried over at the same distance
/// before the new due time (`Reminder::carried`), not yet fired. A field that must not carry
/// over is set here.
pub fn next_occurrence(completed: &Task, id: Uuid, now: DateTime<Utc>) -> Option<Task> {
    if !completed.completed {
        return None;
    }
    let next = next_schedule(completed, completed.completed_at.unwrap_or(now))?;
    let reminder = match (completed.reminder, completed.due_at, next.due_at) {
        (Some(reminder), Some(due_at), Some(next_due)) => reminder.carried(due_at, next_due),
        _ => None,
    };
    Some(Task {
        id,
        completed: false,
        completed_at: None,
        due_at: next.due_at,
        reminder,
        reminder_fired_at: None,
        occurrence: next.occurrence,
        series_anchor: next.series_anchor,
        anchor_occurrence: next.anchor_occurrence,
        created_at: now,
        updated_at: now,
        version: 1,
        ..completed.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recurrence::{Frequency, RecurrenceInput};
    use crate::tasks::{Priority, TaskChanges, UserId};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid date-time")
            .to_utc()
    }

    fn rule(frequency: &str, extra: impl FnOnce(&mut RecurrenceInput)) -> Recurrence {
        let mut input = RecurrenceInput {
            frequency: frequency.into(),
            ..RecurrenceInput::default()
        };
        extra(&mut input);
        Recurrence::parse(input).expect("valid rule")
    }

    fn task(due: Option<&str>, recurrence: Option<Recurrence>) -> Task {
        let created = utc("2026-01-01T00:00:00Z");
        let changes = TaskChanges {
            title: Some("Pay rent".into()),
            description: Some(Some("flat 3".into())),
            priority: Some(Priority::High),
            tags: Some(vec!["home".into(), "money".into()]),
            due_at: Some(due.map(utc)),
            recurrence: Some(recurrence),
            ..TaskChanges::default()
        };
        Task::create(
            Uuid::now_v7(),
            &UserId::parse("alice").expect("valid"),
            changes,
            created,
        )
    }

    fn complete(task: &Task, at: &str) -> Task {
        let changes = TaskChanges {
            completed: Some(true),
            ..TaskChanges::default()
        };
        task.apply(&changes, utc(at)).0
    }

    /// Completes each task as the user would and collects the due times of the series.
    fn series(first: Task, completions: usize) -> Vec<Option<DateTime<Utc>>> {
        let mut dues = vec![first.due_at];
        let mut current = first;
        for _ in 0..completions {
            let done = complete(&current, "2026-01-01T12:00:00Z");
            let Some(next) = next_occurrence(&done, Uuid::now_v7(), utc("2026-01-01T12:00:01Z"))
            else {
                break;
            };
            dues.push(next.due_at);
            current = next;
        }
        dues
    }

    fn dues(texts: &[&str]) -> Vec<Option<DateTime<Utc>>> {
        texts.iter().map(|t| Some(utc(t))).collect()
    }

    #[test]
    fn the_next_occurrence_copies_the_fields_and_continues_the_series() {
        let first = task(Some("2026-01-05T09:00:00Z"), Some(rule("weekly", |_| {})));
        let done = complete(&first, "2026-01-05T10:00:00Z");
        let now = utc("2026-01-05T10:00:01Z");
        let id = Uuid::now_v7();
        let next = next_occurrence(&done, id, now).expect("a next occurrence");
        assert_eq!(next.id, id);
        assert_eq!(next.user_id, "alice");
        assert_eq!(next.title, "Pay rent");
        assert_eq!(next.description.as_deref(), Some("flat 3"));
        assert_eq!(next.priority, Priority::High);
        assert_eq!(next.tags, ["home", "money"]);
        assert_eq!(next.recurrence, first.recurrence);
        assert!(!next.completed);
        assert_eq!(next.completed_at, None);
        assert_eq!(next.due_at, Some(utc("2026-01-12T09:00:00Z")));
        assert_eq!(
            next.series_id, first.id,
            "the series is named by its first task"
        );
        assert_eq!(next.occurrence, 1);
        assert_eq!(next.series_anchor, first.due_at);
        assert_eq!(next.anchor_occurrence, 0);
        assert_eq!(
            (next.created_at, next.updated_at, next.version),
            (now, now, 1)
        );
    }

    #[test]
    fn the_next_occurrence_carries_the_reminder_offset_unfired() {
        use crate::tasks::Reminder;
        let now = utc("2026-01-31T10:00:00Z");
        for (reminder, expected) in [
            (Reminder::Before(90), Reminder::Before(90)),
            (
                Reminder::At(utc("2026-01-30T21:00:00Z")),
                Reminder::At(utc("2026-02-27T21:00:00Z")),
            ),
        ] {
            let mut first = task(Some("2026-01-31T09:00:00Z"), Some(rule("monthly", |_| {})));
            first.reminder = Some(reminder);
            first.reminder_fired_at = Some(utc("2026-01-31T07:30:00Z"));
            let done = complete(&first, "2026-01-31T09:30:00Z");
            let next = next_occurrence(&done, Uuid::now_v7(), now).expect("a next occurrence");
            assert_eq!(next.due_at, Some(utc("2026-02-28T09:00:00Z")));
            assert_eq!(next.reminder, Some(expected));
            assert_eq!(next.reminder_fired_at, None, "the new reminder is pending");
            assert_eq!(
                next.reminder_fires_at()
                    .map(|at| next.due_at.map(|due| due - at)),
                first
                    .reminder_fires_at()
                    .map(|at| first.due_at.map(|due| due - at)),
                "the same distance before due"
            );
        }
    }

    #[test]
    fn open_and_one_off_tasks_have_no_next_occurrence() {
        let now = utc("2026-01-02T00:00:00Z");
        let recurring = task(Some("2026-01-01T09:00:00Z"), Some(rule("daily", |_| {})));
        assert_eq!(
            next_occurrence(&recurring, Uuid::now_v7(), now),
            None,
            "open"
        );
        let one_off = complete(
            &task(Some("2026-01-01T09:00:00Z"), None),
            "2026-01-01T10:00:00Z",
        );
        assert_eq!(
            next_occurrence(&one_off, Uuid::now_v7(), now),
            None,
            "no rule"
        );
    }

    #[test]
    fn monthly_series_stay_on_the_anchor_day() {
        let first = task(Some("2026-01-31T09:00:00Z"), Some(rule("monthly", |_| {})));
        assert_eq!(
            series(first, 4),
            dues(&[
                "2026-01-31T09:00:00Z",
                "2026-02-28T09:00:00Z",
                "2026-03-31T09:00:00Z",
                "2026-04-30T09:00:00Z",
                "2026-05-31T09:00:00Z",
            ])
        );
    }

    #[test]
    fn yearly_series_from_a_leap_day_return_to_it() {
        let first = task(Some("2024-02-29T12:00:00Z"), Some(rule("yearly", |_| {})));
        assert_eq!(
            series(first, 4),
            dues(&[
                "2024-02-29T12:00:00Z",
                "2025-02-28T12:00:00Z",
                "2026-02-28T12:00:00Z",
                "2027-02-28T12:00:00Z",
                "2028-02-29T12:00:00Z",
            ])
        );
    }

    #[test]
    fn local_time_survives_daylight_saving_changes() {
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer (DST from Mar 29).
        let berlin = rule("daily", |r| r.timezone = Some("Europe/Berlin".into()));
        let first = task(Some("2026-03-28T08:00:00Z"), Some(berlin));
        assert_eq!(
            series(first, 2),
            dues(&[
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z"
            ])
        );
        // 09:00 in New York is 13:00 UTC in summer and 14:00 UTC in winter (EST from Nov 1).
        let new_york = rule("weekly", |r| r.timezone = Some("America/New_York".into()));
        let first = task(Some("2026-10-25T13:00:00Z"), Some(new_york));
        assert_eq!(
            series(first, 2),
            dues(&[
                "2026-10-25T13:00:00Z",
                "2026-11-01T14:00:00Z",
                "2026-11-08T14:00:00Z"
            ])
        );
    }

    #[test]
    fn intervals_multiply_the_step() {
        let every_other_month = rule("monthly", |r| r.interval = Some(2));
        let first = task(Some("2026-01-31T09:00:00Z"), Some(every_other_month));
        assert_eq!(
            series(first, 3),
            dues(&[
                "2026-01-31T09:00:00Z",
                "2026-03-31T09:00:00Z",
                "2026-05-31T09:00:00Z",
                "2026-07-31T09:00:00Z",
            ])
        );
    }

    #[test]
    fn count_ends_the_series_including_the_first_task() {
        let three = rule("daily", |r| r.count = Some(3));
        let first = task(Some("2026-01-01T09:00:00Z"), Some(three));
        assert_eq!(
            series(first, 10),
            dues(&[
                "2026-01-01T09:00:00Z",
                "2026-01-02T09:00:00Z",
                "2026-01-03T09:00:00Z",
            ])
        );
        let once = rule("daily", |r| r.count = Some(1));
        assert_eq!(
            series(task(Some("2026-01-01T09:00:00Z"), Some(once)), 5).len(),
            1
        );
    }

    #[test]
    fn until_is_inclusive_and_ends_the_series() {
        let until = rule("weekly", |r| r.until = Some("2026-01-15T09:00:00Z".into()));
        let first = task(Some("2026-01-01T09:00:00Z"), Some(until));
        assert_eq!(
            series(first, 10),
            dues(&[
                "2026-01-01T09:00:00Z",
                "2026-01-08T09:00:00Z",
                "2026-01-15T09:00:00Z",
            ])
        );
    }

    #[test]
    fn undated_series_count_occurrences_and_end_at_until() {
        let count = rule("daily", |r| r.count = Some(2));
        let dues = series(task(None, Some(count)), 5);
        assert_eq!(
            dues,
            vec![None, None],
            "the count applies without dates too"
        );

        let until = rule("daily", |r| r.until = Some("2026-01-10T00:00:00Z".into()));
        let first = task(None, Some(until));
        let before = complete(&first, "2026-01-09T00:00:00Z");
        let next = next_schedule(&before, utc("2026-01-09T00:00:00Z")).expect("not ended");
        assert_eq!((next.occurrence, next.due_at), (1, None));
        assert_eq!(next_schedule(&before, utc("2026-01-10T00:00:01Z")), None);
    }

    #[test]
    fn a_moved_due_date_re_anchors_the_series() {
        let first = task(Some("2026-01-01T09:00:00Z"), Some(rule("daily", |_| {})));
        let done = complete(&first, "2026-01-01T10:00:00Z");
        let mut second =
            next_occurrence(&done, Uuid::now_v7(), utc("2026-01-01T10:00:00Z")).expect("next");
        second.due_at = Some(utc("2026-01-03T11:00:00Z"));
        let done = complete(&second, "2026-01-03T12:00:00Z");
        let next = next_schedule(&done, utc("2026-01-03T12:00:00Z")).expect("next");
        assert_eq!(next.due_at, Some(utc("2026-01-04T11:00:00Z")));
        assert_eq!(next.occurrence, 2);
        assert_eq!(
            (next.series_anchor, next.anchor_occurrence),
            (second.due_at, 1),
            "the moved task is the new anchor"
        );
    }

    #[test]
    fn a_due_date_added_later_anchors_the_series() {
        let mut first = task(None, Some(rule("monthly", |_| {})));
        first.due_at = Some(utc("2026-01-31T09:00:00Z"));
        assert_eq!(first.series_anchor, None);
        assert_eq!(
            series(first, 2),
            dues(&[
                "2026-01-31T09:00:00Z",
                "2026-02-28T09:00:00Z",
                "2026-03-31T09:00:00Z",
            ])
        );
    }

    #[test]
    fn a_changed_rule_re_anchors_at_the_current_due_date() {
        let mut first = task(Some("2026-01-01T09:00:00Z"), Some(rule("daily", |_| {})));
        first.occurrence = 3;
        first.due_at = Some(utc("2026-01-04T09:00:00Z"));
        first.recurrence = Some(rule("weekly", |_| {}));
        let next = next_schedule(&first, utc("2026-01-04T10:00:00Z")).expect("next");
        assert_eq!(next.due_at, Some(utc("2026-01-11T09:00:00Z")));
        assert_eq!(next.anchor_occurrence, 3);
        assert_eq!(next.occurrence, 4);
    }

    #[test]
    fn every_frequency_is_handled() {
        for frequency in Frequency::ALL {
            let first = task(
                Some("2026-01-01T09:00:00Z"),
                Some(rule(frequency.as_str(), |_| {})),
            );
            let dues = series(first, 1);
            assert_eq!(dues.len(), 2, "{frequency}");
            assert!(dues[1] > dues[0], "{frequency}");
        }
    }
}
