//! The task API's routes: which operation a request asks for, and the methods each path
//! answers (the router's `Allow` header and the OpenAPI document both read them here).
//! Spin routes `/api/:user_id/tasks` and `/api/:user_id/tasks/...` to tasks-api (plus a
//! catch-all `/api/...` so unknown API paths get a problem+json 404); the user id arrives in
//! `spin-path-match-user-id`.

use crate::error::ApiError;
use uuid::Uuid;

/// The paths, as the OpenAPI document names them.
pub const COLLECTION_PATH: &str = "/api/{user_id}/tasks";
pub const ITEM_PATH: &str = "/api/{user_id}/tasks/{id}";
pub const COMPLETE_PATH: &str = "/api/{user_id}/tasks/{id}/complete";

#[derive(Debug, PartialEq)]
pub enum Action {
    List,
    Create,
    Get(Uuid),
    Replace(Uuid),
    Patch(Uuid),
    Delete(Uuid),
    Complete(Uuid),
}

pub const COLLECTION: &[&str] = &["GET", "POST"];
pub const ITEM: &[&str] = &["GET", "PUT", "PATCH", "DELETE"];
pub const COMPLETE: &[&str] = &["PATCH", "POST"];

/// `rest` is the path after `/api/{user_id}/tasks` (empty, `/{id}` or `/{id}/complete`).
pub fn parse(method: &str, rest: &str) -> Result<Action, ApiError> {
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        match rest.strip_prefix('/') {
            Some(tail) => tail.split('/').collect(),
            None => return Err(not_found()),
        }
    };
    let not_allowed = |allow: &'static [&'static str]| ApiError::MethodNotAllowed {
        method: method.to_owned(),
        allow,
    };
    match segments.as_slice() {
        [] => match method {
            "GET" => Ok(Action::List),
            "POST" => Ok(Action::Create),
            _ => Err(not_allowed(COLLECTION)),
        },
        [id] => {
            let id = task_id(id)?;
            match method {
                "GET" => Ok(Action::Get(id)),
                "PUT" => Ok(Action::Replace(id)),
                "PATCH" => Ok(Action::Patch(id)),
                "DELETE" => Ok(Action::Delete(id)),
                _ => Err(not_allowed(ITEM)),
            }
        }
        [id, "complete"] => {
            let id = task_id(id)?;
            match method {
                "PATCH" | "POST" => Ok(Action::Complete(id)),
                _ => Err(not_allowed(COMPLETE)),
            }
        }
        _ => Err(not_found()),
    }
}

/// A malformed id names no task: 404, like an unknown one.
fn task_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::not_found(format!("no task has the id '{raw}'")))
}

pub fn not_found() -> ApiError {
    ApiError::not_found("no such resource; tasks live under /api/{user_id}/tasks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let id = Uuid::now_v7();
        assert_eq!(parse("GET", ""), Ok(Action::List));
        assert_eq!(parse("POST", ""), Ok(Action::Create));
        assert_eq!(parse("PUT", &format!("/{id}")), Ok(Action::Replace(id)));
        assert_eq!(
            parse("POST", &format!("/{id}/complete")),
            Ok(Action::Complete(id))
        );
        assert_eq!(parse("DELETE", "").map_err(|e| e.status()), Err(405));
        assert_eq!(
            parse("GET", &format!("/{id}/complete")).map_err(|e| e.status()),
            Err(405)
        );
        assert_eq!(
            parse("GET", "/not-a-uuid").map_err(|e| e.status()),
            Err(404)
        );
        assert_eq!(
            parse("GET", &format!("/{id}/x")).map_err(|e| e.status()),
            Err(404)
        );
        assert_eq!(parse("GET", "s").map_err(|e| e.status()), Err(404));
    }
}
