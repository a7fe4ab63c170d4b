//! The task API's OpenAPI 3.1 document, built from the definitions the API itself uses: the
//! routes and their methods (`tasks::routes`), the task's JSON schema (`schemas/task.json`),
//! the parser's limits and the error statuses. `openapi.json` at the top of the repository is
//! this document as [`render`] prints it; a test fails when the two differ, and
//! `UPDATE_OPENAPI=1 cargo test -p todo-core openapi` rewrites the file. tasks-api serves the
//! file's bytes at [`PATH`].

mod paths;
mod schemas;

use serde_json::{Value, json};

/// Where the app serves the document, without a token.
pub const PATH: &str = "/api/openapi.json";

pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "todo-spin task API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tasks of one user under /api/{user_id}/tasks. Every change emits a CloudEvent (README, \"Events\"). Errors are RFC 9457 application/problem+json.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "tasks", "description": "task CRUD"},
            {"name": "meta", "description": "the contract itself"},
        ],
        "paths": paths::all(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a JWT whose sub is the path's user_id (README, \"Authentication\")",
                },
            },
            "schemas": schemas::all(),
        },
    })
}

/// The document as committed: pretty-printed with a final newline.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn committed() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
    }

    #[test]
    fn openapi_json_is_the_generated_document() {
        let path = committed();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, render()).expect("write openapi.json");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == render(),
            "openapi.json differs from todo_core::openapi::document(); run \
             `UPDATE_OPENAPI=1 cargo test -p todo-core openapi` and commit the file"
        );
    }

    #[test]
    fn every_route_method_is_documented() {
        use crate::tasks::routes;
        let doc = document();
        for (path, methods) in [
            (routes::COLLECTION_PATH, routes::COLLECTION),
            (routes::ITEM_PATH, routes::ITEM),
            (routes::COMPLETE_PATH, routes::COMPLETE),
        ] {
            let entry = doc["paths"][path].as_object().expect("path documented");
            let documented: Vec<String> = entry
                .keys()
                .filter(|k| *k != "parameters")
                .map(|k| k.to_ascii_uppercase())
                .collect();
            let mut expected: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
            let mut documented = documented;
            documented.sort();
            expected.sort();
            assert_eq!(documented, expected, "{path}");
        }
    }

    #[test]
    fn request_bodies_list_the_fields_the_parser_reads() {
        use crate::tasks::input::{READ_ONLY, WRITABLE};
        let doc = document();
        let mut expected: Vec<&str> = WRITABLE.iter().chain(READ_ONLY).copied().collect();
        expected.sort_unstable();
        for body in ["TaskCreate", "TaskReplace", "TaskPatch"] {
            let properties = doc["components"]["schemas"][body]["properties"]
                .as_object()
                .expect("properties");
            let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, expected, "{body}");
        }
    }

    #[test]
    fn the_task_schema_is_schemas_task_json() {
        let doc = document();
        let task = &doc["components"]["schemas"]["Task"];
        assert_eq!(task["additionalProperties"], false);
        assert!(task["properties"]["reminder_fires_at"].is_object());
        assert_eq!(
            task["properties"]["recurrence"]["oneOf"][1]["$ref"],
            "#/components/schemas/Recurrence"
        );
        assert_eq!(
            doc["components"]["schemas"]["Recurrence"]["properties"]["interval"]["maximum"],
            365
        );
    }
}
