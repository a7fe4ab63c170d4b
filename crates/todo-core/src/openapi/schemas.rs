//! `components.schemas` of the API's OpenAPI document.
//!
//! The task a response carries is `schemas/task.json`, the schema events carry it under too
//! (its tests check what `Task` serializes against it). A request body's field is task.json's
//! unless the parser reads it differently; those differences are described from the parser's
//! own limits (`tasks::model`, `tasks::input`, `recurrence`), as exactly as JSON Schema allows:
//! text is checked after trimming, so the patterns say "trimmed, 1 to N characters, no control
//! characters" rather than a bare `maxLength`.

use crate::recurrence::{MAX_COUNT, MAX_INTERVAL};
use crate::tasks::input::{READ_ONLY, WRITABLE};
use crate::tasks::model::{DESCRIPTION_MAX, TAG_MAX, TAGS_MAX, TITLE_MAX};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Rust's `char::is_whitespace` (Unicode White_Space), the set `str::trim` removes.
const WHITE_SPACE: &str =
    r"\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Rust's `char::is_control` (Unicode Cc).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// Text that, trimmed, has 1 to `max` characters (or none, with `blank_allowed`) and no control
/// character nor any of `excluded`; surrounding white space is allowed (and trimmed away).
/// Unanchored, for use inside a larger pattern.
pub fn trimmed(max: usize, blank_allowed: bool, excluded: &str) -> String {
    let inner = max.saturating_sub(2);
    let edge = format!("[^{WHITE_SPACE}{CONTROL}{excluded}]");
    let core = format!("{edge}(?:[^{CONTROL}{excluded}]{{0,{inner}}}{edge})?");
    let core = if blank_allowed {
        format!("(?:{core})?")
    } else {
        core
    };
    format!("[{WHITE_SPACE}]*{core}[{WHITE_SPACE}]*")
}

/// [`trimmed`] as a whole value.
fn trimmed_text(max: usize, blank_allowed: bool) -> String {
    format!("^{}$", trimmed(max, blank_allowed, ""))
}

/// One of `words` in any ASCII case, surrounded by any white space, or nothing: a part of a
/// comma list that `Priority::parse` reads (blank parts are skipped).
pub fn any_case_word(words: &[&str]) -> String {
    let spelled: Vec<String> = words
        .iter()
        .map(|word| {
            word.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase()))
                .collect()
        })
        .collect();
    format!(
        "[{WHITE_SPACE}]*(?:(?:{})[{WHITE_SPACE}]*)?",
        spelled.join("|")
    )
}

/// An RFC 3339 date-time with an offset, as `tasks::time::parse_utc` accepts it, limited to
/// the years 0002 to 9997 so that any offset keeps it inside the UTC years 1 to 9998 the API
/// stores, and to days 1 to 28 so that every generated value is a real date.
pub const DATE_TIME_PATTERN: &str = "^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-7])-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$";

pub fn date_time_input(nullable: bool) -> Value {
    let mut schema = json!({
        "type": "string",
        "format": "date-time",
        "pattern": DATE_TIME_PATTERN,
        "description": "RFC 3339 with a UTC offset, e.g. 2026-05-01T09:00:00+02:00; stored and returned in UTC",
    });
    if nullable {
        schema["type"] = json!(["string", "null"]);
    }
    schema
}

/// `schemas/task.json`, the one definition of a task's JSON form.
const TASK_JSON: &str = include_str!("../../../../schemas/task.json");

fn task_schema() -> (Value, Value) {
    let mut task: Map<String, Value> = serde_json::from_str(TASK_JSON).unwrap_or_default();
    task.remove("$schema");
    task.remove("$id");
    let recurrence = task
        .remove("$defs")
        .and_then(|mut defs| defs.get_mut("recurrence").map(Value::take))
        .unwrap_or(Value::Null);
    let mut task = Value::Object(task);
    retarget_refs(&mut task);
    (task, recurrence)
}

/// The file's `#/$defs/recurrence` lives at `#/components/schemas/Recurrence` here.
fn retarget_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && target == "#/$defs/recurrence"
            {
                *target = "#/components/schemas/Recurrence".to_owned();
            }
            map.values_mut().for_each(retarget_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(retarget_refs),
        _ => {}
    }
}

/// How a writable field in a request body differs from the same field of a read task
/// (`schemas/task.json`). A writable field not listed in [`input_differences`] is sent as it is
/// read, so a new field with the same rules both ways needs no line here.
enum Input {
    /// task.json's schema with these keywords replaced or added.
    Refine(Value),
    /// A schema of its own: what the parser accepts is not what a read task holds (text that
    /// is trimmed, a field that takes `null`, a stricter date-time).
    Own(Value),
}

/// The writable fields whose request schema is not task.json's.
fn input_differences() -> Vec<(&'static str, Input)> {
    vec![
        (
            "title",
            Input::Own(json!({
                "type": "string",
                "pattern": trimmed_text(TITLE_MAX, false),
                "description": format!("1 to {TITLE_MAX} characters once trimmed; no control characters"),
            })),
        ),
        (
            "description",
            Input::Own(json!({
                "type": ["string", "null"],
                "maxLength": DESCRIPTION_MAX,
                "pattern": format!("^[^{}]*$", r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"),
                "description": "no control characters but tab and line breaks; blank or null clears it",
            })),
        ),
        (
            "tags",
            Input::Own(json!({
                "type": ["array", "null"],
                "maxItems": TAGS_MAX,
                "items": {"type": "string", "pattern": trimmed_text(TAG_MAX, true)},
                "description": format!("at most {TAGS_MAX} entries; each trimmed, 1 to {TAG_MAX} characters; blank entries and case-insensitive duplicates are dropped; null clears"),
            })),
        ),
        ("due_at", Input::Own(date_time_input(true))),
        (
            "remind_before_minutes",
            Input::Refine(json!({
                "description": "a reminder this many minutes before due_at (which it requires); not with remind_at",
            })),
        ),
        (
            "remind_at",
            Input::Own(json!({
                "allOf": [date_time_input(true)],
                "description": "a reminder at this time, not after due_at (which it requires); not with remind_before_minutes",
            })),
        ),
        (
            "recurrence",
            Input::Own(json!({
                "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/RecurrenceInput"}],
            })),
        ),
    ]
}

/// The writable fields of a task as a request body sends them: each as the read task
/// (`task`, task.json as this document holds it) declares it, but for [`input_differences`].
fn task_input_properties(task: &Value) -> Map<String, Value> {
    let mut differences: BTreeMap<&str, Input> = input_differences().into_iter().collect();
    WRITABLE
        .iter()
        .map(|&name| {
            let mut schema = task["properties"][name].clone();
            match differences.remove(name) {
                None => {}
                Some(Input::Own(own)) => schema = own,
                Some(Input::Refine(keywords)) => {
                    if let (Value::Object(schema), Value::Object(keywords)) =
                        (&mut schema, keywords)
                    {
                        schema.extend(keywords);
                    }
                }
            }
            (name.to_owned(), schema)
        })
        .collect()
}

fn task_input(task: &Value, title: &str, description: &str, required: &[&str]) -> Value {
    let mut properties = task_input_properties(task);
    // Fields a client may send back from what it read; the parser ignores them.
    for name in READ_ONLY {
        properties.insert(
            (*name).to_owned(),
            json!({"readOnly": true, "description": "read-only: accepted and ignored"}),
        );
    }
    json!({
        "title": title,
        "description": description,
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

fn recurrence_input() -> Value {
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    json!({
        "title": "RecurrenceInput",
        "type": "object",
        "additionalProperties": false,
        "required": ["frequency"],
        "properties": {
            "frequency": {"enum": ["daily", "weekly", "monthly", "yearly"]},
            "interval": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_INTERVAL, "description": "default 1"},
            "until": date_time_input(true),
            "count": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_COUNT, "description": "occurrences, the first included"},
            "timezone": {"type": ["string", "null"], "enum": zones_with_null(zones), "description": "IANA time zone name, default UTC"},
        },
    })
}

fn zones_with_null(zones: Vec<&str>) -> Vec<Value> {
    let mut values: Vec<Value> = zones.into_iter().map(Value::from).collect();
    values.push(Value::Null);
    values
}

fn problem() -> Value {
    json!({
        "title": "Problem",
        "description": "RFC 9457 problem details",
        "type": "object",
        "additionalProperties": false,
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference", "description": "urn:todo-spin:problem:<kind>"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "the request path"},
            "errors": {
                "type": "array",
                "description": "each invalid field (422 only)",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["field", "message"],
                    "properties": {
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    })
}

pub fn all() -> Value {
    let (task, recurrence) = task_schema();
    json!({
        "Task": task.clone(),
        "Recurrence": recurrence,
        "TaskPage": {
            "type": "object",
            "additionalProperties": false,
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                "next_cursor": {"type": ["string", "null"], "description": "pass as cursor, with the same sort, for the next page"},
            },
        },
        "TaskCreate": task_input(
            &task,
            "TaskCreate",
            "A new task. Omitted fields take their defaults.",
            &["title"],
        ),
        "TaskReplace": task_input(
            &task,
            "TaskReplace",
            "The whole task. Omitted optional fields are reset to their defaults.",
            &["title"],
        ),
        "TaskPatch": task_input(
            &task,
            "TaskPatch",
            "The fields to change; null clears an optional field.",
            &[],
        ),
        "Completion": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"completed": {"type": "boolean"}},
            "description": "Omit the body to toggle.",
        },
        "RecurrenceInput": recurrence_input(),
        "Problem": problem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A difference for a field the parser does not write would never reach the document.
    #[test]
    fn input_differences_are_of_writable_fields() {
        for (name, _) in input_differences() {
            assert!(
                WRITABLE.contains(&name),
                "{name} is not in tasks::input::WRITABLE"
            );
        }
    }

    /// A field added to task.json is either written by requests or owned by the server, so
    /// that request bodies list it one way or the other.
    #[test]
    fn every_field_of_task_json_is_writable_or_read_only() {
        let (task, _) = task_schema();
        let properties = task["properties"].as_object().expect("properties");
        for name in properties.keys() {
            assert!(
                WRITABLE.contains(&name.as_str()) || READ_ONLY.contains(&name.as_str()),
                "{name}: add it to tasks::input::WRITABLE or READ_ONLY"
            );
        }
    }
}
