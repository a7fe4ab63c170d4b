//! `Idempotency-Key` on `POST /api/{user_id}/tasks` (IETF httpapi draft
//! `draft-ietf-httpapi-idempotency-key-header`): a client that lost the answer to a create (a
//! reset connection, a timeout) resends it with the same key and gets the first answer back
//! instead of a second task.
//!
//! - Keys are per user, kept [`KEY_LIFETIME_HOURS`] in `idempotency_keys`
//!   (migrations/0007_idempotency_keys.sql) together with the first answer and a fingerprint of
//!   the request body.
//! - The key is claimed in the same statement that inserts the task and its events
//!   ([`insert_once`]), so the three commit together or not at all. Two concurrent requests
//!   with one key wait for each other on the table's primary key; the later inserts nothing.
//! - When the claim wrote nothing, the stored answer is read back ([`lookup`]) and
//!   [`replay`] decides: the same body gets the first answer again (nothing written), another
//!   body under the same key is 422.
//! - Only successful creates are stored: a refused request (422, 401, ...) may be retried under
//!   the same key once fixed.

use crate::error::ApiError;
use crate::outbox::{OutboxRow, WriteClaim, push_outbox, select_written_count};
use crate::sql::{Builder, SqlValue, Statement};
use crate::tasks::model::Task;
use crate::tasks::store;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The request header (field names are case-insensitive; `http` keeps them lowercase).
pub const HEADER: &str = "idempotency-key";
/// The response header that marks an answer as a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key holds its answer.
pub const KEY_LIFETIME_HOURS: i32 = 24;
/// Longest key accepted, in bytes: room for any UUID or ULID with a prefix.
pub const MAX_KEY_BYTES: usize = 255;

/// A key as the client sent it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header's value. The draft makes it a Structured Field String (RFC 8941,
    /// `"8e03978e-..."`); a bare token is accepted too, since many clients send one. Either way
    /// the key is 1 to [`MAX_KEY_BYTES`] printable ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let raw = raw.trim_matches([' ', '\t']);
        let key = match raw.strip_prefix('"') {
            Some(quoted) => sf_string(quoted),
            None => raw
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
                .then(|| raw.to_owned()),
        };
        match key {
            Some(key) if !key.is_empty() && key.len() <= MAX_KEY_BYTES => Ok(Self(key)),
            _ => Err(ApiError::bad_request(format!(
                "the Idempotency-Key header must be a string of 1 to {MAX_KEY_BYTES} printable \
                 ASCII characters, e.g. \"8e03978e-40d5-43e8-bc93-6894a57f9324\""
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rest of an RFC 8941 sf-string after its opening quote: printable ASCII with `\"` and
/// `\\` escapes, closed by a quote that ends the value. Parameters are not accepted.
fn sf_string(rest: &str) -> Option<String> {
    let mut key = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return chars.as_str().is_empty().then_some(key),
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => return None,
            },
            ' '..='~' => key.push(c),
            _ => return None,
        }
    }
    None
}

/// SHA-256 (hex) of the request body as JSON with object keys sorted, so that the same
/// document sent with other key order or whitespace counts as the same request.
pub fn fingerprint(body: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let mut hasher = Sha256::new();
    hash_canonical(&value, &mut hasher);
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Feeds a canonical form of `value` to the hash: scalars as JSON, objects with sorted keys.
fn hash_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hasher.update(Value::String(key.clone()).to_string().as_bytes());
                hasher.update(b":");
                hash_canonical(item, hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hash_canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

/// The first answer to a key, as [`lookup`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredAnswer {
    pub fingerprint: String,
    pub status: u16,
    pub task_id: Uuid,
    pub etag: String,
    /// The response body, byte for byte.
    pub body: String,
}

/// What a create under a key stores as its answer.
pub struct Answer<'a> {
    pub key: &'a IdempotencyKey,
    pub fingerprint: &'a str,
    pub status: u16,
    pub etag: &'a str,
    pub body: &'a str,
}

/// Inserts the task and its events only if this request claims `answer.key` for the task's
/// user: the key is new or its previous use expired. Returns one row: the number of tasks
/// inserted (1, or 0 when the key was taken), then the claim's columns as for `store::insert`.
pub fn insert_once(
    task: &Task,
    events: &[OutboxRow],
    answer: &Answer<'_>,
    claim: Option<&WriteClaim>,
) -> Statement {
    let mut sql = Builder::new(
        "with claimed as (insert into idempotency_keys \
         (user_id, key, fingerprint, status, task_id, etag, body) values (",
    );
    let values = [
        sql.typed(SqlValue::Text(task.user_id.clone()), "text"),
        sql.typed(SqlValue::Text(answer.key.as_str().to_owned()), "text"),
        sql.typed(SqlValue::Text(answer.fingerprint.to_owned()), "text"),
        sql.typed(
            SqlValue::Int16(i16::try_from(answer.status).unwrap_or(i16::MAX)),
            "int2",
        ),
        sql.typed(SqlValue::Uuid(task.id), "uuid"),
        sql.typed(SqlValue::Text(answer.etag.to_owned()), "text"),
        sql.typed(SqlValue::Text(answer.body.to_owned()), "text"),
    ];
    sql.push(&values.join(", "));
    sql.push(&format!(
        ") on conflict (user_id, key) do update set fingerprint = excluded.fingerprint, \
         status = excluded.status, task_id = excluded.task_id, etag = excluded.etag, \
         body = excluded.body, created_at = now() \
         where idempotency_keys.created_at < {} returning 1), ",
        expiry()
    ));
    store::push_insert(&mut sql, task, Some("claimed"));
    let claimed = push_outbox(&mut sql, events, claim);
    select_written_count(sql, &claimed)
}

/// The live answer stored under `key` for `user_id`, as one JSON object ([`StoredAnswer`]);
/// no row when there is none.
pub fn lookup(user_id: &str, key: &IdempotencyKey) -> Statement {
    Statement::new(
        format!(
            "select jsonb_build_object('fingerprint', fingerprint, 'status', status, \
             'task_id', task_id, 'etag', etag, 'body', body) from idempotency_keys \
             where user_id = $1 and key = $2 and created_at >= {}",
            expiry()
        ),
        vec![
            SqlValue::Text(user_id.to_owned()),
            SqlValue::Text(key.as_str().to_owned()),
        ],
    )
}

/// Deletes keys past their lifetime (the relay's housekeeping). Returns the count deleted.
pub fn prune() -> Statement {
    Statement::new(
        format!(
            "delete from idempotency_keys where created_at < {}",
            expiry()
        ),
        Vec::new(),
    )
}

fn expiry() -> String {
    format!("now() - interval '{KEY_LIFETIME_HOURS} hours'")
}

/// The answer to a request whose key was already used: the first answer when the body is the
/// same, 422 when it is not. `None` (the key vanished between claim and read, which only an
/// expiry at that instant does) is a conflict the client may retry.
pub fn replay(stored: Option<StoredAnswer>, fingerprint: &str) -> Result<StoredAnswer, ApiError> {
    match stored {
        Some(stored) if stored.fingerprint == fingerprint => Ok(stored),
        Some(_) => Err(ApiError::invalid(
            "Idempotency-Key",
            "this key was already used with a different request body; use a new key for a \
             new request",
        )),
        None => Err(ApiError::Conflict {
            detail: "the Idempotency-Key was in use at that moment; retry".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::TaskChanges;
    use crate::tasks::model::UserId;
    use chrono::Utc;

    #[test]
    fn keys_are_sf_strings_or_bare_tokens() {
        for (raw, key) in [
            (
                "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            (
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            ("  \"a b\"  ", "a b"),
            (r#""quote\"and\\slash""#, r#"quote"and\slash"#),
        ] {
            assert_eq!(IdempotencyKey::parse(raw).expect(raw).as_str(), key);
        }
    }

    #[test]
    fn malformed_keys_are_400() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for raw in [
            "",
            "\"\"",
            "\"open",
            "\"a\";p=1",
            "a b",
            "a,b",
            "\"\\n\"",
            "é",
            "\"é\"",
            &long,
        ] {
            let error = IdempotencyKey::parse(raw).expect_err(raw);
            assert_eq!(error.status(), 400, "{raw}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_BYTES)).is_ok());
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_only() {
        let a = fingerprint(br#"{"title":"a","tags":["x","y"],"x":{"b":1,"a":2}}"#).unwrap();
        let b = fingerprint(
            b"{ \"x\": {\"a\": 2, \"b\": 1}, \"tags\": [\"x\", \"y\"], \"title\": \"a\" }",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        for other in [
            &br#"{"title":"b","tags":["x","y"],"x":{"b":1,"a":2}}"#[..],
            br#"{"title":"a","tags":["y","x"],"x":{"b":1,"a":2}}"#,
            br#"{"title":"a","tags":["x","y"],"x":{"b":1,"a":2},"priority":"low"}"#,
            br#"{"title":"a","tags":["x","y"],"x":{"b":1,"a":"2"}}"#,
        ] {
            assert_ne!(a, fingerprint(other).unwrap());
        }
        assert_eq!(fingerprint(b"{").unwrap_err().status(), 400);
    }

    fn stored(fingerprint: &str) -> StoredAnswer {
        StoredAnswer {
            fingerprint: fingerprint.to_owned(),
            status: 201,
            task_id: Uuid::nil(),
            etag: "\"1\"".to_owned(),
            body: "{}".to_owned(),
        }
    }

    #[test]
    fn the_same_body_replays_and_another_is_422() {
        assert_eq!(replay(Some(stored("f")), "f").unwrap(), stored("f"));
        let error = replay(Some(stored("f")), "g").unwrap_err();
        assert_eq!(error.status(), 422);
        assert_eq!(replay(None, "f").unwrap_err().status(), 409);
    }

    #[test]
    fn the_claim_gates_the_task_and_its_events() {
        let user = UserId::parse("alice").unwrap();
        let changes = TaskChanges {
            title: Some("t".into()),
            ..TaskChanges::default()
        };
        let task = Task::create(Uuid::now_v7(), &user, changes, Utc::now());
        let key = IdempotencyKey::parse("k-1").unwrap();
        let event = OutboxRow {
            event_id: Uuid::now_v7(),
            user_id: "alice".into(),
            topic: "tasks".into(),
            event: serde_json::json!({}),
        };
        let answer = Answer {
            key: &key,
            fingerprint: "f",
            status: 201,
            etag: "\"1\"",
            body: "{}",
        };
        let statement = insert_once(&task, &[event], &answer, None);
        let sql = &statement.sql;
        assert!(
            sql.starts_with("with claimed as (insert into idempotency_keys"),
            "{sql}"
        );
        assert!(
            sql.contains("where exists (select 1 from claimed)"),
            "{sql}"
        );
        assert!(
            sql.contains("where exists (select 1 from written)"),
            "{sql}"
        );
        assert!(!sql.contains("alice") && !sql.contains("k-1"), "{sql}");
        let placeholders = (1..=100)
            .take_while(|n| sql.contains(&format!("${n}")))
            .count();
        assert_eq!(placeholders, statement.params.len());
        assert!(
            lookup("alice", &key)
                .sql
                .contains("user_id = $1 and key = $2")
        );
    }
}
