//! Property tests of every parser that reads client or sidecar input: whatever the bytes, they
//! return a client error (never a panic, never a server error), and what they accept is valid
//! and reaches SQL only as bound parameters.

use chrono::Utc;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use todo_core::auth::{AuthConfig, AuthVars};
use todo_core::events::EventContext;
use todo_core::intake::{self, Topic};
use todo_core::sql::{SqlValue, Statement};
use todo_core::tasks::model::{TAG_MAX, TAGS_MAX, TITLE_MAX};
use todo_core::tasks::{self, ListQuery, Task, TaskChanges, UserId, store};
use uuid::Uuid;

/// Client errors a body or query parser may answer with.
const CLIENT_ERRORS: [u16; 2] = [400, 422];

/// Strings that stress parsers: SQL and JSON metacharacters, control and combining
/// characters, right-to-left marks, emoji, and long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "\\PC{0,40}",
        Just("'; drop table tasks; --".to_owned()),
        Just("\" or 1=1 --".to_owned()),
        Just("%_\\'\"$1::text".to_owned()),
        Just("\u{202e}evil\u{0301}\u{1f600}".to_owned()),
        Just("\0".to_owned()),
        Just("   ".to_owned()),
        (1usize..5000).prop_map(|n| "x".repeat(n)),
        (1usize..400).prop_map(|n| "\u{1f4a9}".repeat(n)),
        Just("2026-02-30T00:00:00Z".to_owned()),
        Just("9999999-01-01T00:00:00Z".to_owned()),
        Just("0000-01-01T00:00:00+00:00".to_owned()),
        Just("2026-01-01T00:00:00+25:00".to_owned()),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(u64::MAX)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every name the body parser knows, so the fuzzer hits real fields as often as junk ones.
fn task_fields() -> Vec<&'static str> {
    use todo_core::tasks::input::{LEGACY, READ_ONLY, WRITABLE};
    WRITABLE
        .iter()
        .chain(LEGACY)
        .chain(READ_ONLY)
        .copied()
        .collect()
}

/// A value that is plausible for one of the task fields, or deliberately of a wrong type.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_json(),
        nasty_string().prop_map(Value::String),
        prop::sample::select(vec!["low", "medium", "high", "HIGH", "urgent", ""])
            .prop_map(Value::from),
        prop::collection::vec(nasty_string(), 0..15).prop_map(|v| json!(v)),
        (
            any::<i32>(),
            nasty_string(),
            prop::option::of(nasty_string())
        )
            .prop_map(|(interval, frequency, timezone)| json!({
                "frequency": frequency, "interval": interval, "timezone": timezone
            })),
        prop::sample::select(vec!["daily", "weekly", "monthly", "yearly"])
            .prop_map(|f| json!({ "frequency": f })),
    ]
}

/// A JSON object with task fields (and strangers) holding anything.
fn task_body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop_oneof![
            prop::sample::select(task_fields()).prop_map(str::to_owned),
            nasty_string()
        ],
        field_value(),
        0..8,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// Bytes of a body: arbitrary, JSON with a random cut, or a task-shaped object.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        (task_body(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = v.to_string().into_bytes();
            let at = cut.index(bytes.len() + 1);
            bytes[..at].to_vec()
        }),
        task_body().prop_map(|v| v.to_string().into_bytes()),
        (1usize..2000).prop_map(|depth| "[".repeat(depth).into_bytes()),
    ]
}

fn placeholders(sql: &str) -> usize {
    (1..=500)
        .take_while(|n| sql.contains(&format!("${n}")))
        .count()
}

/// Every `$n` has a parameter, and user text never becomes SQL text.
fn assert_bound(statement: &Statement, texts: &[&str]) {
    assert_eq!(
        placeholders(&statement.sql),
        statement.params.len(),
        "{}",
        statement.sql
    );
    for text in texts.iter().filter(|t| t.len() > 12) {
        assert!(
            !statement.sql.contains(*text),
            "{text:?} spliced into {}",
            statement.sql
        );
    }
}

fn check_changes(changes: &TaskChanges) {
    if let Some(title) = &changes.title {
        let n = title.chars().count();
        assert!(
            (1..=TITLE_MAX).contains(&n),
            "title of {n} characters accepted"
        );
        assert_eq!(title.trim(), title, "title is trimmed");
    }
    if let Some(tags) = &changes.tags {
        assert!(tags.len() <= TAGS_MAX, "{} tags accepted", tags.len());
        for tag in tags {
            assert!(
                !tag.trim().is_empty() && tag.chars().count() <= TAG_MAX,
                "tag {tag:?}"
            );
        }
    }
}

fn events() -> EventContext {
    EventContext {
        source: "/todo-spin/tasks".into(),
        topic: "tasks".into(),
        traceparent: None,
    }
}

fn user() -> UserId {
    UserId::parse("alice").expect("a valid user id")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn task_bodies_never_panic_and_accept_only_valid_tasks(body in body_bytes()) {
        for parse in [tasks::parse_create, tasks::parse_replace, tasks::parse_patch] {
            match parse(&body) {
                Ok(changes) => {
                    check_changes(&changes);
                    // What is accepted can be stored and its events built.
                    let now = Utc::now();
                    let task = Task::create(Uuid::now_v7(), &user(), changes.clone(), now);
                    let (next, changed) = task.apply(&changes, now);
                    let rows = [events().created(&task, now)];
                    let title = task.title.clone();
                    assert_bound(&store::insert(&task, &rows, None), &[&title]);
                    let updates = events().for_change(&next, &changed, now);
                    assert_bound(&store::update(&next, task.version, &updates, None), &[&title]);
                }
                Err(e) => prop_assert!(CLIENT_ERRORS.contains(&e.status()), "{e:?}"),
            }
        }
        match tasks::parse_complete(&body) {
            Ok(_) => {}
            Err(e) => prop_assert!(CLIENT_ERRORS.contains(&e.status()), "{e:?}"),
        }
    }

    #[test]
    fn sql_metacharacters_in_fields_are_stored_verbatim(text in nasty_string()) {
        let trimmed = text.trim();
        let body = json!({"title": trimmed, "description": trimmed, "tags": [trimmed]});
        if let Ok(changes) = tasks::parse_create(body.to_string().as_bytes()) {
            let task = Task::create(Uuid::now_v7(), &user(), changes, Utc::now());
            prop_assert_eq!(&task.title, trimmed);
            let statement = store::insert(&task, &[], None);
            prop_assert!(statement.params.contains(&SqlValue::Text(trimmed.to_owned())));
            assert_bound(&statement, &[trimmed]);
        }
    }

    #[test]
    fn list_queries_never_panic_and_bind_every_value(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        "q", "status", "priority", "tags", "due_before", "due_after", "sort",
                        "limit", "cursor",
                    ]).prop_map(str::to_owned),
                    nasty_string(),
                ],
                prop_oneof![
                    nasty_string(),
                    prop::sample::select(vec![
                        "pending", "completed", "all", "high,low", "-due_at", "title", "50",
                        "0", "201", "-1", "2026-01-01T00:00:00Z", "eyJzIjoiY3JlYXRlZF9hdCJ9",
                    ]).prop_map(str::to_owned),
                ],
            ),
            0..6,
        ),
        raw in ".*",
    ) {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        for query in [encoded.as_str(), raw.as_str()] {
            match ListQuery::parse(query) {
                Ok(list) => {
                    prop_assert!((1..=200).contains(&list.limit));
                    let statement = list.statement("alice");
                    let texts: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
                    assert_bound(&statement, &texts);
                    prop_assert_eq!(&statement.params[0], &SqlValue::Text("alice".into()));
                    prop_assert!(list.page(Vec::new()).next_cursor.is_none());
                }
                Err(e) => prop_assert!(CLIENT_ERRORS.contains(&e.status()), "{e:?}"),
            }
        }
    }

    #[test]
    fn bearer_tokens_that_were_not_signed_with_the_secret_are_401(
        header in prop_oneof![
            ".*".prop_map(Some),
            ".*".prop_map(|t| Some(format!("Bearer {t}"))),
            (
                "[A-Za-z0-9_-]{0,60}",
                "[A-Za-z0-9_-]{0,200}",
                "[A-Za-z0-9_-]{0,60}",
            ).prop_map(|(a, b, c)| Some(format!("Bearer {a}.{b}.{c}"))),
            any_json().prop_map(|claims| {
                use base64::Engine as _;
                let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(v.to_string());
                Some(format!(
                    "Bearer {}.{}.{}",
                    b64(&json!({"alg": "none", "typ": "JWT"})),
                    b64(&claims),
                    "",
                ))
            }),
            Just(None),
        ],
    ) {
        let auth = AuthConfig::new(&AuthVars {
            enabled: "true",
            secret: "tN4pX8-qW2zL6vR0yB3mK7cF1hJ5dS9g",
            ..AuthVars::default()
        })
        .expect("a safe secret");
        match auth.subject(header.as_deref()) {
            Ok(subject) => prop_assert!(false, "accepted a forged token for {subject:?}"),
            Err(e) => prop_assert_eq!(e.status(), 401),
        }
    }

    #[test]
    fn deliveries_never_panic_whatever_the_body(
        body in prop_oneof![
            body_bytes(),
            (any_json(), prop::sample::select(vec![
                "task.completed", "task.created", "task.deleted", "reminder.triggered", "x",
            ]))
            .prop_map(|(data, kind)| json!({
                "specversion": "1.0", "id": Uuid::now_v7().to_string(),
                "source": "/todo-spin/tasks", "type": kind, "data": data,
            }).to_string().into_bytes()),
            task_body().prop_map(|task| json!({
                "specversion": "1.0", "id": "1", "source": "s", "type": "task.completed",
                "data": {"task_id": Uuid::nil(), "completed": true, "task": task},
            }).to_string().into_bytes()),
        ],
        content_type in prop::option::of(prop::sample::select(vec![
            "application/cloudevents+json", "application/json", "text/plain",
            "application/cloudevents-batch+json",
        ])),
    ) {
        for topic in [Topic::Tasks, Topic::Reminders] {
            if let Ok(delivery) = intake::parse(topic, content_type, &body) {
                // What a valid delivery causes is decided without panicking either.
                let _ = intake::plan(&delivery);
            }
        }
    }
}
