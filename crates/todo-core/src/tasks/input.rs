//! Request bodies of the task endpoints, parsed into validated changes.
//!
//! POST and PUT take a whole task (absent optional fields take their defaults); PATCH takes
//! only the fields to change, where `null` clears an optional field. Old clients sent
//! `due_date`, `is_recurring` and `recurring_interval`: those are accepted too.
//!
//! A reminder is one setting in two forms, `remind_before_minutes` or `remind_at` (see
//! `tasks::reminder`): at most one of them may be non-null; `null` for the one given (or both)
//! removes the reminder. Whether it fits the due time is checked here when the request carries
//! both, and on the changed task otherwise (`Task::check_reminder`).

use crate::error::ApiError;
use crate::recurrence::{Recurrence, RecurrenceInput};
use crate::tasks::model::{Priority, TaskChanges, parse_description, parse_tags, parse_title};
use crate::tasks::reminder::{self, AT_FIELD, MINUTES_FIELD, Reminder};
use crate::tasks::time::parse_utc;
use crate::validation::{Errors, FieldError, json_kind};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Largest accepted request body; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The fields a request body sets, each parsed below; the OpenAPI request schemas list the
/// same (a test in `openapi` checks).
pub const WRITABLE: &[&str] = &[
    "title",
    "description",
    "completed",
    "priority",
    "tags",
    "due_at",
    "remind_before_minutes",
    "remind_at",
    "recurrence",
];

/// Older clients' names, still accepted: `due_date` for `due_at`, `is_recurring` and
/// `recurring_interval` for `recurrence`. Not in the contract.
pub const LEGACY: &[&str] = &["due_date", "is_recurring", "recurring_interval"];

/// Fields the server owns. Clients that send back what they read may include them; they are
/// ignored rather than rejected.
pub const READ_ONLY: &[&str] = &[
    "id",
    "user_id",
    "completed_at",
    "created_at",
    "updated_at",
    "series_id",
    "occurrence",
    "reminder_fires_at",
    "reminder_fired_at",
];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every field is set: missing optional fields take their defaults, title is required.
    Whole,
    /// Only the fields present change.
    Partial,
}

/// Body of `POST /api/{user_id}/tasks`.
pub fn parse_create(body: &[u8]) -> Result<TaskChanges, ApiError> {
    parse(body, Mode::Whole)
}

/// Body of `PUT /api/{user_id}/tasks/{id}`.
pub fn parse_replace(body: &[u8]) -> Result<TaskChanges, ApiError> {
    parse(body, Mode::Whole)
}

/// Body of `PATCH /api/{user_id}/tasks/{id}`.
pub fn parse_patch(body: &[u8]) -> Result<TaskChanges, ApiError> {
    parse(body, Mode::Partial)
}

/// Body of `PATCH|POST /api/{user_id}/tasks/{id}/complete`: empty to toggle, or
/// `{"completed": bool}` to set.
pub fn parse_complete(body: &[u8]) -> Result<Option<bool>, ApiError> {
    if is_blank(body) {
        return Ok(None);
    }
    let map = parse_object(body)?;
    let mut errors = Errors::default();
    for key in map.keys().filter(|k| k.as_str() != "completed") {
        errors.push(FieldError::new(
            key.clone(),
            "is not accepted here; send only completed",
        ));
    }
    let completed = match map.get("completed") {
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errors.push(expected("completed", "true or false", other));
            None
        }
        None => None,
    };
    errors.finish(|| completed).map_err(ApiError::from)
}

/// No body at all. White space alone is no JSON document (RFC 8259), so it is malformed JSON
/// like any other bytes that do not parse.
fn is_blank(body: &[u8]) -> bool {
    body.is_empty()
}

/// Parses a JSON object body; malformed JSON is a 400, a non-object or invalid fields 422.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if is_blank(body) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "malformed JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            describe_json_error(&e)
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::invalid(
            "",
            format!("the body must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

fn describe_json_error(error: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is reported separately.
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn expected(field: &str, what: &str, got: &Value) -> FieldError {
    FieldError::new(field, format!("must be {what}, not {}", json_kind(got)))
}

fn parse(body: &[u8], mode: Mode) -> Result<TaskChanges, ApiError> {
    let map = parse_object(body)?;
    let mut errors = Errors::default();
    let mut changes = TaskChanges::default();
    let whole = mode == Mode::Whole;

    for key in map.keys() {
        let known = WRITABLE.contains(&key.as_str()) || LEGACY.contains(&key.as_str());
        if !known && !READ_ONLY.contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "is not a known task field"));
        }
    }

    changes.title = match map.get("title") {
        Some(Value::String(s)) => errors.take(parse_title(s)),
        Some(other) => {
            errors.push(expected("title", "a string", other));
            None
        }
        None if whole => {
            errors.push(FieldError::new("title", "is required"));
            None
        }
        None => None,
    };

    changes.description = match map.get("description") {
        Some(Value::String(s)) => errors.take(parse_description(s)),
        Some(Value::Null) => Some(None),
        Some(other) => {
            errors.push(expected("description", "a string or null", other));
            None
        }
        None => whole.then_some(None),
    };

    changes.completed = match map.get("completed") {
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errors.push(expected("completed", "true or false", other));
            None
        }
        None => whole.then_some(false),
    };

    changes.priority = match map.get("priority") {
        Some(Value::String(s)) => match Priority::parse(s) {
            Some(p) => Some(p),
            None => {
                errors.push(FieldError::new(
                    "priority",
                    format!("must be one of {}", Priority::NAMES),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(expected("priority", "a string", other));
            None
        }
        None => whole.then_some(Priority::default()),
    };

    changes.tags = match map.get("tags") {
        Some(Value::Array(items)) => {
            let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match strings {
                Some(strings) => errors.take(parse_tags(strings)),
                None => {
                    errors.push(FieldError::new("tags", "must be an array of strings"));
                    None
                }
            }
        }
        Some(Value::Null) => Some(Vec::new()),
        Some(other) => {
            errors.push(expected("tags", "an array of strings", other));
            None
        }
        None => whole.then(Vec::new),
    };

    changes.due_at = parse_due(&map, whole, &mut errors);
    changes.reminder = parse_reminder(&map, whole, &mut errors);
    if let (Some(due_at), Some(Some(reminder))) = (changes.due_at, changes.reminder) {
        errors.take(reminder.check(due_at));
    }
    changes.recurrence = parse_recurrence(&map, whole, &mut errors);

    errors.finish(|| changes).map_err(ApiError::from)
}

fn parse_due(
    map: &Map<String, Value>,
    whole: bool,
    errors: &mut Errors,
) -> Option<Option<DateTime<Utc>>> {
    let (field, value) = match (map.get("due_at"), map.get("due_date")) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "due_date",
                "send either due_at or the older due_date, not both",
            ));
            return None;
        }
        (Some(v), None) => ("due_at", v),
        (None, Some(v)) => ("due_date", v),
        (None, None) => return whole.then_some(None),
    };
    match value {
        Value::String(s) => errors
            .take(parse_utc(s).map_err(|m| FieldError::new(field, m)))
            .map(Some),
        Value::Null => Some(None),
        other => {
            errors.push(expected(
                field,
                "an RFC 3339 date-time string or null",
                other,
            ));
            None
        }
    }
}

fn parse_reminder(
    map: &Map<String, Value>,
    whole: bool,
    errors: &mut Errors,
) -> Option<Option<Reminder>> {
    let (minutes, at) = (map.get(MINUTES_FIELD), map.get(AT_FIELD));
    if minutes.is_none() && at.is_none() {
        return whole.then_some(None);
    }
    // Each is `None` when invalid (and reported), `Some(None)` when absent or null.
    let minutes = match minutes {
        None | Some(Value::Null) => Some(None),
        Some(value) => errors.take(reminder::parse_minutes(value)).map(Some),
    };
    let at = match at {
        None | Some(Value::Null) => Some(None),
        Some(value) => errors.take(reminder::parse_at(value)).map(Some),
    };
    errors.take(Reminder::from_fields(minutes?, at?))
}

fn parse_recurrence(
    map: &Map<String, Value>,
    whole: bool,
    errors: &mut Errors,
) -> Option<Option<Recurrence>> {
    if let Some(value) = map.get("recurrence") {
        if map.contains_key("is_recurring") || map.contains_key("recurring_interval") {
            errors.push(FieldError::new(
                "recurrence",
                "send either recurrence or the older is_recurring/recurring_interval, not both",
            ));
            return None;
        }
        return match value {
            Value::Null => Some(None),
            Value::Object(_) => match serde_json::from_value::<RecurrenceInput>(value.clone()) {
                Ok(input) => errors.take_all(Recurrence::parse(input)).map(Some),
                Err(e) => {
                    errors.push(FieldError::new("recurrence", describe_json_error(&e)));
                    None
                }
            },
            other => {
                errors.push(expected("recurrence", "an object or null", other));
                None
            }
        };
    }
    let interval = match map.get("recurring_interval") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Null) | None => None,
        Some(other) => {
            errors.push(expected("recurring_interval", "a string", other));
            return None;
        }
    };
    match (map.get("is_recurring"), interval) {
        (Some(Value::Bool(true)), Some(interval)) | (None, Some(interval)) => errors
            .take(Recurrence::from_legacy(interval).map_err(|mut e| {
                e.field = "recurring_interval".to_owned();
                e
            }))
            .map(Some),
        (Some(Value::Bool(true)), None) => {
            errors.push(FieldError::new(
                "recurring_interval",
                "is required when is_recurring is true",
            ));
            None
        }
        (Some(Value::Bool(false)), _) => Some(None),
        (Some(other), _) => {
            errors.push(expected("is_recurring", "true or false", other));
            None
        }
        (None, None) => whole.then_some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_empty_body_counts_as_no_body() {
        assert_eq!(parse_complete(b""), Ok(None));
        for body in [&b"\r"[..], b" \r\n\t", b"\x0c", b" \x0b "] {
            let error = parse_complete(body).expect_err("not JSON");
            assert_eq!(error.status(), 400, "{body:?}");
        }
    }

    /// JSON has one number type: `30.0` is the integer 30 to JSON Schema and to many encoders.
    #[test]
    fn whole_numbers_written_with_a_fraction_part_are_integers() {
        let body = json!({
            "title": "t",
            "due_at": "2026-05-01T09:00:00Z",
            "remind_before_minutes": 30.0,
            "recurrence": {"frequency": "daily", "interval": 2.0, "count": 10.0},
        });
        let changes = parse_create(body.to_string().as_bytes()).expect("valid");
        assert_eq!(changes.reminder, Some(Some(Reminder::Before(30))));
        let rule = changes.recurrence.flatten().expect("recurrence");
        assert_eq!((rule.interval, rule.count), (2, Some(10)));

        for (field, body) in [
            (
                "remind_before_minutes",
                json!({"title": "t", "due_at": "2026-05-01T09:00:00Z", "remind_before_minutes": 30.5}),
            ),
            (
                "recurrence",
                json!({"title": "t", "recurrence": {"frequency": "daily", "interval": 1.5}}),
            ),
        ] {
            let error = parse_create(body.to_string().as_bytes()).expect_err("a fraction");
            let ApiError::Unprocessable { errors } = error else {
                panic!("422 expected, got {error:?}");
            };
            assert_eq!(errors[0].field, field, "{errors:?}");
        }
    }

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("json")
    }

    fn fields(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Unprocessable { errors } => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn create_fills_defaults() {
        let changes = parse_create(&body(json!({"title": " Pay rent "}))).expect("valid");
        assert_eq!(changes.title.as_deref(), Some("Pay rent"));
        assert_eq!(changes.priority, Some(Priority::Medium));
        assert_eq!(changes.tags, Some(vec![]));
        assert_eq!(changes.due_at, Some(None));
        assert_eq!(changes.completed, Some(false));
    }

    #[test]
    fn patch_touches_only_given_fields_and_null_clears() {
        let changes =
            parse_patch(&body(json!({"description": null, "tags": ["a"]}))).expect("valid");
        assert_eq!(changes.title, None);
        assert_eq!(changes.priority, None);
        assert_eq!(changes.description, Some(None));
        assert_eq!(changes.tags, Some(vec!["a".to_owned()]));
        assert_eq!(changes.due_at, None);
    }

    #[test]
    fn malformed_json_is_a_400_and_wrong_shapes_are_422() {
        assert_eq!(
            parse_create(b"{\"title\": ").map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(parse_create(b"").map_err(|e| e.status()), Err(400));
        assert_eq!(parse_create(b"[1]").map_err(|e| e.status()), Err(422));
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let cases = vec![
            (json!({}), vec!["title"], "title is required"),
            (json!({"title": 5}), vec!["title"], "title must be a string"),
            (
                json!({"title": "t", "priority": "urgent"}),
                vec!["priority"],
                "unknown priority",
            ),
            (
                json!({"title": "t", "due_at": "2026-01-01T10:00:00"}),
                vec!["due_at"],
                "no offset",
            ),
            (
                json!({"title": "t", "tags": [1]}),
                vec!["tags"],
                "non-string tag",
            ),
            (
                json!({"title": "t", "colour": "red"}),
                vec!["colour"],
                "unknown field",
            ),
            (
                json!({"title": "t", "completed": "yes"}),
                vec!["completed"],
                "not a bool",
            ),
            (
                json!({"title": "", "priority": 3, "description": 1}),
                vec!["title", "description", "priority"],
                "three at once",
            ),
            (
                json!({"title": "t", "is_recurring": true}),
                vec!["recurring_interval"],
                "legacy",
            ),
        ];
        for (value, expected, name) in cases {
            let error = parse_create(&body(value)).expect_err(name);
            assert_eq!(fields(error), expected, "{name}");
        }
    }

    #[test]
    fn a_reminder_is_one_of_two_forms_and_fits_its_due_time() {
        let due = "2026-05-01T09:00:00Z";
        let relative = parse_create(&body(json!({
            "title": "t", "due_at": due, "remind_before_minutes": 30
        })))
        .expect("valid");
        assert_eq!(relative.reminder, Some(Some(Reminder::Before(30))));
        let absolute = parse_create(&body(json!({
            "title": "t", "due_at": due, "remind_at": "2026-05-01T10:00:00+02:00",
            "remind_before_minutes": null
        })))
        .expect("valid: a null other form is allowed, as a read task carries it");
        assert_eq!(
            absolute.reminder,
            Some(Some(Reminder::At(
                parse_utc("2026-05-01T08:00:00Z").expect("valid")
            )))
        );
        let none = parse_replace(&body(json!({"title": "t", "due_at": due}))).expect("valid");
        assert_eq!(none.reminder, Some(None), "PUT resets an omitted reminder");

        // (body, the field reported, its message, case)
        let cases = vec![
            (
                json!({"title": "t", "due_at": due, "remind_before_minutes": 5,
                       "remind_at": due}),
                "remind_at",
                "send either remind_before_minutes or remind_at, not both",
                "both forms",
            ),
            (
                json!({"title": "t", "remind_before_minutes": 5}),
                "remind_before_minutes",
                "requires due_at: a reminder belongs to a due date; set one, or remove the \
                 reminder in the same request",
                "no due date",
            ),
            (
                json!({"title": "t", "due_at": due, "remind_at": "2026-05-01T09:00:01Z"}),
                "remind_at",
                "must not be after due_at (2026-05-01T09:00:00Z)",
                "after the due time",
            ),
            (
                json!({"title": "t", "due_at": due, "remind_before_minutes": 525_601}),
                "remind_before_minutes",
                "must be a whole number of minutes from 0 to 525600 (a year)",
                "over a year",
            ),
            (
                json!({"title": "t", "due_at": due, "remind_before_minutes": "30"}),
                "remind_before_minutes",
                "must be an integer or null, not a string",
                "a string",
            ),
            (
                json!({"title": "t", "due_at": due, "remind_at": "2026-05-01T08:00:00"}),
                "remind_at",
                "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-05-01T09:00:00+02:00",
                "no offset",
            ),
        ];
        for (value, field, message, case) in cases {
            match parse_create(&body(value)).expect_err(case) {
                ApiError::Unprocessable { errors } => {
                    assert_eq!(errors, vec![FieldError::new(field, message)], "{case}");
                }
                other => panic!("{case}: expected 422, got {other:?}"),
            }
        }
    }

    #[test]
    fn patch_keeps_an_omitted_reminder_and_null_removes_it() {
        let keep = parse_patch(&body(json!({"title": "t"}))).expect("valid");
        assert_eq!(keep.reminder, None);
        for value in [
            json!({"remind_before_minutes": null}),
            json!({"remind_at": null}),
            json!({"remind_at": null, "remind_before_minutes": null}),
        ] {
            let clear = parse_patch(&body(value.clone())).expect("valid");
            assert_eq!(clear.reminder, Some(None), "{value}");
        }
        let set = parse_patch(&body(json!({"remind_before_minutes": 0}))).expect("valid");
        assert_eq!(
            set.reminder,
            Some(Some(Reminder::Before(0))),
            "checked against the stored due time later"
        );
        let read_only = parse_patch(&body(json!({
            "reminder_fires_at": "2026-01-01T00:00:00Z", "reminder_fired_at": null
        })))
        .expect("read-only fields are ignored");
        assert_eq!(read_only, TaskChanges::default());
    }

    #[test]
    fn complete_toggles_or_sets() {
        assert_eq!(parse_complete(b""), Ok(None));
        assert_eq!(parse_complete(b"{\"completed\": false}"), Ok(Some(false)));
        assert_eq!(parse_complete(b"{}"), Ok(None));
        assert_eq!(
            parse_complete(b"{\"completed\": 1}").map_err(|e| e.status()),
            Err(422)
        );
        assert_eq!(
            parse_complete(b"{\"title\": \"x\"}").map_err(|e| e.status()),
            Err(422)
        );
    }

    #[test]
    fn read_only_fields_are_ignored() {
        let changes = parse_replace(&body(json!({
            "id": "x", "title": "t", "created_at": "whenever", "updated_at": 1
        })))
        .expect("valid");
        assert_eq!(changes.title.as_deref(), Some("t"));
    }

    #[test]
    fn legacy_fields_are_understood() {
        let changes = parse_create(&body(json!({
            "title": "t", "due_date": "2026-01-01T10:00:00+01:00",
            "is_recurring": true, "recurring_interval": "weekly"
        })))
        .expect("valid");
        assert_eq!(
            changes.due_at.flatten().map(|d| d.to_rfc3339()),
            Some("2026-01-01T09:00:00+00:00".to_owned())
        );
        assert!(matches!(changes.recurrence, Some(Some(_))));
    }
}
