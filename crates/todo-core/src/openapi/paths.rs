//! `paths` of the API's OpenAPI document: one entry per route `tasks-api` answers, with every
//! status it can return (README, "API"). The methods come from `tasks::routes`, which the
//! component's router uses too.

use super::schemas::{any_case_word, date_time_input, trimmed};
use crate::tasks::idempotency::{self, MAX_KEY_BYTES};
use crate::tasks::list::{DEFAULT_LIMIT, MAX_LIMIT, Q_MAX};
use crate::tasks::model::{TAG_MAX, TAGS_MAX, USER_ID_MAX};
use crate::tasks::routes;
use serde_json::{Map, Value, json};

const PROBLEM_JSON: &str = crate::error::PROBLEM_JSON;

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// The error answers an operation can give, by status.
fn errors(statuses: &[u16]) -> Map<String, Value> {
    let mut map = Map::new();
    for status in statuses {
        let answer = match status {
            400 => problem("malformed JSON, query, cursor or Idempotency-Key"),
            401 => {
                let mut answer = problem("no, malformed, expired or unverifiable bearer token");
                answer["headers"] = json!({"WWW-Authenticate": header("Bearer")});
                answer
            }
            403 => problem("a valid token of another user"),
            404 => problem("no such task for this user (or a malformed id or user id)"),
            409 => problem("the task kept changing concurrently; retry"),
            412 => problem("If-Match names a version the task no longer has"),
            413 => problem("the body is larger than 64 KiB"),
            415 => problem("a body that is not JSON"),
            422 => problem("well-formed JSON whose fields break the rules; errors[] names each"),
            503 => {
                let mut answer = problem(
                    "the database, or the JWKS a token needs, is unreachable; nothing was written",
                );
                answer["headers"] = json!({"Retry-After": header("seconds to wait")});
                answer
            }
            _ => continue,
        };
        map.insert(status.to_string(), answer);
    }
    map
}

fn header(description: &str) -> Value {
    json!({"description": description, "schema": {"type": "string"}})
}

fn task_answer(description: &str, extra_headers: Value) -> Value {
    let mut headers = json!({"ETag": header("the task's version, for If-Match")});
    if let (Value::Object(all), Value::Object(extra)) = (&mut headers, extra_headers) {
        all.extend(extra);
    }
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Task"}}},
        "links": task_links("$response.body#/id"),
    })
}

/// Where a task answer leads: the stateful checks follow these from a created task.
fn task_links(id: &str) -> Value {
    let parameters = json!({"user_id": "$request.path.user_id", "id": id});
    let mut links = Map::new();
    for (name, operation) in [
        ("GetTask", "getTask"),
        ("ReplaceTask", "replaceTask"),
        ("PatchTask", "patchTask"),
        ("CompleteTask", "completeTask"),
        ("DeleteTask", "deleteTask"),
    ] {
        links.insert(
            name.to_owned(),
            json!({"operationId": operation, "parameters": parameters}),
        );
    }
    Value::Object(links)
}

fn body(schema: &str, required: bool) -> Value {
    json!({
        "required": required,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
    })
}

fn if_match() -> Value {
    json!({
        "name": "If-Match",
        "in": "header",
        "required": false,
        "description": "`*` or a list of ETags; the write happens only if one is the task's current version (412 otherwise)",
        "schema": {"type": "string"},
    })
}

const PREFER_NOTE: &str = "With `Prefer: return=minimal` (RFC 7240) the answer keeps its status, \
     Location and ETag and has no body (`Preference-Applied: return=minimal`).";

/// One operation. `parameters` are the operation's own; the path's come from its entry.
struct Operation<'a> {
    id: &'a str,
    summary: &'a str,
    description: Option<String>,
    parameters: Vec<Value>,
    body: Option<Value>,
    success: (&'a str, Value),
    errors: &'a [u16],
}

impl Operation<'_> {
    fn build(self) -> Value {
        let mut responses = Map::new();
        responses.insert(self.success.0.to_owned(), self.success.1);
        responses.extend(errors(self.errors));
        let mut op = json!({
            "operationId": self.id,
            "summary": self.summary,
            "tags": ["tasks"],
            "responses": responses,
        });
        if let Some(description) = self.description {
            op["description"] = json!(description);
        }
        if !self.parameters.is_empty() {
            op["parameters"] = json!(self.parameters);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

fn list_parameters() -> Vec<Value> {
    // Comma lists as `ListQuery::parse` splits them: every part trimmed, blank parts allowed.
    let comma_list = |part: &str, max: Option<usize>| match max {
        Some(max) => format!("^{part}(?:,{part}){{0,{}}}$", max.saturating_sub(1)),
        None => format!("^{part}(?:,{part})*$"),
    };
    let priority = comma_list(&any_case_word(&["low", "medium", "high"]), None);
    let tag = trimmed(TAG_MAX, true, ",");
    let query = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    vec![
        query(
            "q",
            json!({"type": "string", "pattern": format!("^{}$", trimmed(Q_MAX, true, ""))}),
            "case-insensitive keyword in title or description",
        ),
        query(
            "status",
            json!({"enum": ["pending", "completed", "all"], "default": "all"}),
            "",
        ),
        query(
            "priority",
            json!({"type": "string", "pattern": priority}),
            "comma-separated priorities, any of",
        ),
        query(
            "tags",
            json!({"type": "string", "pattern": comma_list(&tag, Some(TAGS_MAX))}),
            "comma-separated tags, any of, case-insensitive",
        ),
        query(
            "due_before",
            date_time_input(false),
            "exclusive; later than due_after",
        ),
        query("due_after", date_time_input(false), "exclusive"),
        query(
            "sort",
            json!({"enum": ["created_at", "-created_at", "due_at", "-due_at", "priority", "-priority", "title", "-title"], "default": "created_at"}),
            "`-` for descending; ties by id; tasks without a due date sort last ascending",
        ),
        query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            "",
        ),
        query(
            "cursor",
            json!({"type": "string"}),
            "opaque, from next_cursor; valid for the same sort",
        ),
    ]
}

pub fn all() -> Value {
    let user_id = json!({
        "name": "user_id", "in": "path", "required": true,
        "description": "the token's `sub`: letters, digits and - _ . : @ | ~, not only dots",
        "schema": {"type": "string", "minLength": 1, "maxLength": USER_ID_MAX, "pattern": "^[.]*[A-Za-z0-9_:@|~-][A-Za-z0-9._:@|~-]*$"},
    });
    let task_id = json!({
        "name": "id", "in": "path", "required": true,
        "schema": {"type": "string", "format": "uuid"},
    });
    let idempotency_key = json!({
        "name": spelled(idempotency::HEADER), "in": "header", "required": false,
        "description": "the same key with the same body within 24 h answers the first answer again (Idempotent-Replayed: true); with another body 422",
        "schema": {"type": "string", "pattern": format!(
            "^(?:\"(?:[ !#-\\[\\]-~]|\\\\[\"\\\\]){{1,{MAX_KEY_BYTES}}}\"|[!#-+\\--:<-\\[\\]-~]{{1,{MAX_KEY_BYTES}}})$"
        )},
    });
    let written = |what: &str| Some(format!("{what} {PREFER_NOTE}"));
    let item_errors: &[u16] = &[400, 401, 403, 404, 409, 412, 413, 415, 422, 503];
    let mut created_headers = Map::new();
    created_headers.insert("Location".to_owned(), header("the task's path"));
    created_headers.insert(
        spelled(idempotency::REPLAYED),
        header("true when this repeats an earlier answer under the same Idempotency-Key"),
    );

    let mut collection = json!({"parameters": [user_id]});
    for method in routes::COLLECTION {
        collection[method.to_ascii_lowercase()] = match *method {
            "GET" => Operation {
                id: "listTasks",
                summary: "List the user's tasks",
                description: None,
                parameters: list_parameters(),
                body: None,
                success: ("200", json!({
                    "description": "a page of tasks",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskPage"}}},
                })),
                errors: &[400, 401, 403, 404, 422, 503],
            },
            _ => Operation {
                id: "createTask",
                summary: "Create a task",
                description: written("Creates a task."),
                parameters: vec![idempotency_key.clone()],
                body: Some(body("TaskCreate", true)),
                success: ("201", task_answer("the task", Value::Object(created_headers.clone()))),
                errors: &[400, 401, 403, 404, 413, 415, 422, 503],
            },
        }
        .build();
    }

    let mut item = json!({"parameters": [user_id, task_id]});
    for method in routes::ITEM {
        item[method.to_ascii_lowercase()] = match *method {
            "GET" => Operation {
                id: "getTask",
                summary: "Read a task",
                description: None,
                parameters: vec![],
                body: None,
                success: ("200", task_answer("the task", json!({}))),
                errors: &[401, 403, 404, 503],
            },
            "PUT" => Operation {
                id: "replaceTask",
                summary: "Replace a task",
                description: written("Replaces the task; omitted optional fields are reset."),
                parameters: vec![if_match()],
                body: Some(body("TaskReplace", true)),
                success: ("200", task_answer("the task", json!({}))),
                errors: item_errors,
            },
            "PATCH" => Operation {
                id: "patchTask",
                summary: "Change a task",
                description: written("Changes the given fields; null clears an optional one."),
                parameters: vec![if_match()],
                body: Some(body("TaskPatch", true)),
                success: ("200", task_answer("the task", json!({}))),
                errors: item_errors,
            },
            _ => Operation {
                id: "deleteTask",
                summary: "Delete a task",
                description: None,
                parameters: vec![if_match()],
                body: None,
                success: ("204", json!({"description": "deleted"})),
                errors: &[401, 403, 404, 409, 412, 503],
            },
        }
        .build();
    }

    let mut complete = json!({"parameters": [user_id, task_id]});
    for method in routes::COMPLETE {
        complete[method.to_ascii_lowercase()] = Operation {
            id: if *method == "PATCH" {
                "completeTask"
            } else {
                "completeTaskPost"
            },
            summary: "Toggle completion, or set it",
            description: written(
                "Without a body toggles `completed`; `{\"completed\": bool}` sets it.",
            ),
            parameters: vec![if_match()],
            body: Some(body("Completion", false)),
            success: ("200", task_answer("the task", json!({}))),
            errors: item_errors,
        }
        .build();
    }

    let mut paths = Map::new();
    paths.insert(
        super::PATH.to_owned(),
        json!({"get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": {
                "description": "the OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }},
        }}),
    );
    paths.insert(routes::COLLECTION_PATH.to_owned(), collection);
    paths.insert(routes::ITEM_PATH.to_owned(), item);
    paths.insert(routes::COMPLETE_PATH.to_owned(), complete);
    Value::Object(paths)
}

/// A header of the app's own as documents spell it (`idempotency-key` -> `Idempotency-Key`).
/// Header names match whatever their case; the constants the API reads and writes them by are
/// lower-case, and the document takes its names from them.
fn spelled(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_s_own_headers_are_spelled_from_the_names_the_api_uses() {
        assert_eq!(spelled(idempotency::HEADER), "Idempotency-Key");
        assert_eq!(spelled(idempotency::REPLAYED), "Idempotent-Replayed");
        let document = all();
        let create = &document["/api/{user_id}/tasks"]["post"];
        assert_eq!(create["parameters"][0]["name"], "Idempotency-Key");
        assert!(create["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    }
}
