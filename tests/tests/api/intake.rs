//! The Dapr subscription and the event intake end to end: the app publishes through the outbox
//! to the sidecar double, the double delivers to the intake as Dapr would, and the recurrence
//! engine's effects are checked in PostgreSQL.

use crate::helpers::{
    TestApp, new_user, spawn_app, spawn_app_with, spawn_app_with_var, unused_port,
};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use todo_test_host::ReuseConfig;
use todo_test_host::dapr::{AppAnswer, DaprDouble, DeliveryOutcome, Message};
use uuid::Uuid;

const PUBSUB: &str = "kafka-pubsub";
const WAIT: Duration = Duration::from_secs(10);

fn id_of(task: &Value) -> Uuid {
    Uuid::parse_str(task["id"].as_str().expect("task has an id")).expect("a uuid")
}

async fn deliver(app: &TestApp, dapr: &DaprDouble, topic: &str, event: &Value) -> DeliveryOutcome {
    dapr.deliver_event(&app.sidecar_view(), PUBSUB, topic, event)
        .await
        .expect("the double delivers")
}

#[track_caller]
fn assert_success(outcome: &DeliveryOutcome) {
    assert!(
        matches!(outcome, DeliveryOutcome::Delivered { answers, .. } if answers == &[AppAnswer::Success]),
        "{outcome:?}"
    );
}

async fn outbox_event(app: &TestApp, kind: &str, task_id: Uuid) -> Value {
    app.outbox_event(kind, &task_id.to_string()).await
}

/// Waits until no publisher holds the user's outbox lease, so that the next publish after a
/// response is not skipped as busy.
async fn publishing_settled(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leases: i64 = app
            .db
            .query_one(
                "select count(*) from outbox_leases where user_id = $1",
                &[&app.user],
            )
            .await
            .expect("query outbox_leases")
            .get(0);
        if leases == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a publisher kept the lease"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the sidecar double has received the event of type `kind` about `task_id` and
/// returns the message.
async fn published(app: &TestApp, kind: &str, task_id: Uuid) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found =
            app.dapr.messages().into_iter().find(|m| {
                m.event_type() == Some(kind) && m.envelope["subject"] == task_id.to_string()
            });
        if let Some(message) = found {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind} of {task_id} was not published"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The rows of a series, by occurrence: (occurrence, id, title, completed, due_at in UTC).
async fn series_rows(
    app: &TestApp,
    series_id: Uuid,
) -> Vec<(i32, Uuid, String, bool, Option<String>)> {
    app.db
        .query(
            "select occurrence, id, title, completed, \
             to_char(due_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             from tasks where user_id = $1 and coalesce(series_id, id) = $2 order by occurrence",
            &[&app.user, &series_id],
        )
        .await
        .expect("query the series")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

async fn processed_markers(app: &TestApp, event: &Value) -> i64 {
    app.db
        .query_one(
            "select count(*) from processed_events where source = $1 and event_id = $2",
            &[&event["source"].as_str(), &event["id"].as_str()],
        )
        .await
        .expect("query processed_events")
        .get(0)
}

/// Creates a recurring task, completes it through the API and returns it with the
/// `task.completed` event the sidecar would deliver.
async fn complete_recurring(app: &TestApp, body: Value) -> (Value, Value) {
    let task = app.create(body).await;
    let id = id_of(&task);
    let done = app.complete(&id.to_string(), None).await;
    assert_eq!(done.status, StatusCode::OK);
    (task, outbox_event(app, "task.completed", id).await)
}

#[tokio::test]
async fn subscribe_declares_both_topics_with_a_top_level_dead_letter_topic() {
    let app = spawn_app().await;

    let response = app
        .send_as_sidecar(Method::GET, "/dapr/subscribe", &[], Bytes::new())
        .await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    let entries = body.as_array().expect("an array of subscriptions");
    assert_eq!(entries.len(), 2);
    let tasks = &entries[0];
    let fields: Vec<&String> = tasks.as_object().expect("an object").keys().collect();
    assert_eq!(
        fields,
        [
            "deadLetterTopic",
            "metadata",
            "pubsubname",
            "routes",
            "topic"
        ]
    );
    assert_eq!(tasks["pubsubname"], "kafka-pubsub");
    assert_eq!(tasks["topic"], "tasks");
    assert_eq!(tasks["deadLetterTopic"], "tasks-dlq");
    assert_eq!(
        tasks["metadata"],
        json!({}),
        "nothing, and no deadLetterTopic, in metadata"
    );
    assert_eq!(
        tasks["routes"]["rules"][0]["match"],
        "event.type == \"task.completed\""
    );
    assert_eq!(tasks["routes"]["rules"][0]["path"], "/api/events/tasks");
    assert_eq!(tasks["routes"]["default"], "/api/events/tasks");
    let reminders = &entries[1];
    assert_eq!(reminders["pubsubname"], "kafka-pubsub");
    assert_eq!(reminders["topic"], "reminders");
    assert_eq!(reminders["deadLetterTopic"], "tasks-dlq");
    assert_eq!(
        reminders["routes"],
        json!({"rules": [], "default": "/api/events/reminders"})
    );

    // The double reads it as Dapr does.
    let subscriptions = app
        .dapr
        .discover_subscriptions(&app.sidecar_view())
        .await
        .expect("discovery succeeds");
    assert_eq!(subscriptions.len(), 2);
    assert_eq!(
        subscriptions[0].dead_letter_topic.as_deref(),
        Some("tasks-dlq")
    );
    assert_eq!(subscriptions[0].metadata, BTreeMap::new());
    let paths: Vec<(Option<&str>, &str)> = subscriptions[0]
        .rules
        .iter()
        .map(|r| (r.matches.as_deref(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                Some("event.type == \"task.completed\""),
                "/api/events/tasks"
            ),
            (None, "/api/events/tasks")
        ]
    );
    assert_eq!(
        subscriptions[1].dead_letter_topic.as_deref(),
        Some("tasks-dlq")
    );
}

#[tokio::test]
async fn subscribe_takes_its_names_from_variables_and_only_answers_get() {
    let vars = HashMap::from([
        ("pubsub_name".to_owned(), "ps".to_owned()),
        ("topic_tasks".to_owned(), "t".to_owned()),
        ("topic_reminders".to_owned(), "r".to_owned()),
        ("topic_dead_letter".to_owned(), "dead".to_owned()),
    ]);
    let app = spawn_app_with(vars, ReuseConfig::default()).await;

    let body = app
        .send_as_sidecar(Method::GET, "/dapr/subscribe", &[], Bytes::new())
        .await
        .json();
    assert_eq!(body[0]["pubsubname"], "ps");
    assert_eq!(body[0]["topic"], "t");
    assert_eq!(body[1]["topic"], "r");
    assert_eq!(body[1]["deadLetterTopic"], "dead");

    let post = app
        .send_as_sidecar(Method::POST, "/dapr/subscribe", &[], Bytes::new())
        .await;
    post.problem(405);
    assert_eq!(post.header("allow"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_delivered_and_acknowledged() {
    let app = spawn_app().await;
    let task = app
        .create(json!({"title": "Water plants", "due_at": "2026-03-01T09:00:00Z"}))
        .await;
    let id = id_of(&task);
    let path = format!("{}/{id}", app.tasks_path());
    assert_eq!(
        app.call(Method::PATCH, &path, Some(json!({"priority": "high"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.complete(&id.to_string(), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete_task(&id.to_string()).await.status,
        StatusCode::NO_CONTENT
    );
    let mut events = Vec::new();
    for kind in [
        "task.created",
        "task.updated",
        "task.completed",
        "task.deleted",
    ] {
        events.push(outbox_event(&app, kind, id).await);
    }

    for event in &events {
        assert_success(&deliver(&app, &app.dapr, "tasks", event).await);
    }

    assert!(app.dapr.messages_on("tasks-dlq").is_empty());
    for kind in [
        "reminder.scheduled",
        "reminder.cancelled",
        "reminder.triggered",
    ] {
        let event = json!({
            "specversion": "1.0", "id": Uuid::now_v7().to_string(), "source": "/todo-spin/tasks",
            "type": kind, "subject": id.to_string(), "partitionkey": app.user,
            "datacontenttype": "application/json",
            "data": {"task_id": id, "title": "Water plants", "due_at": "2026-03-01T09:00:00Z"},
        });
        assert_success(&deliver(&app, &app.dapr, "reminders", &event).await);
    }
    assert_eq!(
        app.task_rows().await.len(),
        0,
        "one-off tasks cause no work"
    );
}

#[tokio::test]
async fn a_completed_event_delivered_three_times_creates_one_next_occurrence() {
    let app = spawn_app().await;
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Stand-up", "description": "daily sync", "priority": "high",
               "tags": ["work"], "due_at": "2026-03-02T09:00:00+01:00",
               "recurrence": {"frequency": "daily", "timezone": "Europe/Berlin"}}),
    )
    .await;
    let series = id_of(&task);
    publishing_settled(&app).await;

    for _ in 0..3 {
        assert_success(&deliver(&app, &app.dapr, "tasks", &completed).await);
    }

    let rows = series_rows(&app, series).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (occurrence, next_id, title, done, due) = &rows[1];
    assert_eq!((*occurrence, title.as_str(), *done), (1, "Stand-up", false));
    assert_eq!(due.as_deref(), Some("2026-03-03T08:00:00Z"));
    assert_eq!(processed_markers(&app, &completed).await, 1);

    // The new task is a copy, visible through the API, and announced with task.created.
    let next = app.get_task(&next_id.to_string()).await.json();
    assert_eq!(next["description"], "daily sync");
    assert_eq!(next["priority"], "high");
    assert_eq!(next["tags"], json!(["work"]));
    assert_eq!(next["recurrence"], task["recurrence"]);
    assert_eq!(next["series_id"], series.to_string());
    assert_eq!(next["occurrence"], 1);
    let created = outbox_event(&app, "task.created", *next_id).await;
    assert_eq!(created["partitionkey"], app.user.as_str());
    assert_eq!(created["data"]["occurrence"], 1);
    let queued: Vec<(String, bool)> = app.outbox_rows().await;
    let types: Vec<&str> = queued.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["task.created", "task.completed", "task.created"],
        "one event per effect"
    );

    // The intake publishes it after answering, keyed by the user, and what the engine emitted
    // causes no further work when it comes back.
    let message = published(&app, "task.created", *next_id).await;
    assert_eq!(message.partition_key(), Some(app.user.as_str()));
    assert_eq!(message.event_id(), created["id"].as_str());
    assert_success(&deliver(&app, &app.dapr, "tasks", &message.envelope).await);
    assert_eq!(series_rows(&app, series).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_event_delivered_concurrently_by_four_workers_creates_one_next_occurrence() {
    let app = Arc::new(spawn_app().await);
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Backup", "due_at": "2026-03-02T22:00:00Z", "recurrence": {"frequency": "weekly"}}),
    )
    .await;

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            let completed = completed.clone();
            tokio::spawn(async move { deliver(&app, &app.dapr, "tasks", &completed).await })
        })
        .collect();
    for worker in workers {
        assert_success(&worker.await.expect("the worker finishes"));
    }

    let rows = series_rows(&app, id_of(&task)).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].0, 1);
    assert_eq!(rows[1].4.as_deref(), Some("2026-03-09T22:00:00Z"));
    assert_eq!(processed_markers(&app, &completed).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uncompleting_and_completing_again_does_not_create_a_second_next_occurrence() {
    let app = spawn_app().await;
    let task = app
        .create(json!({"title": "Invoice", "due_at": "2026-01-15T10:00:00Z", "recurrence": {"frequency": "monthly"}}))
        .await;
    let id = id_of(&task);
    for completed in [true, false, true] {
        let response = app
            .complete(&id.to_string(), Some(json!({"completed": completed})))
            .await;
        assert_eq!(response.status, StatusCode::OK);
    }
    let completions: Vec<Value> = app
        .db
        .query(
            "select event from outbox where user_id = $1 and event->>'type' = 'task.completed' order by seq",
            &[&app.user],
        )
        .await
        .expect("query the outbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(completions.len(), 3);
    assert_ne!(
        completions[0]["id"], completions[2]["id"],
        "each completion is its own event"
    );

    let client = app.sidecar_view();
    let deliveries = completions
        .iter()
        .map(|event| app.dapr.deliver_event(&client, PUBSUB, "tasks", event));
    for outcome in futures::future::join_all(deliveries).await {
        assert_success(&outcome.expect("the double delivers"));
    }

    let rows = series_rows(&app, id).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].4.as_deref(), Some("2026-02-15T10:00:00Z"));
}

/// The stored task decides, not the event: a completion delivered after the task was
/// re-opened or deleted creates nothing, and is acknowledged.
#[tokio::test]
async fn a_completion_delivered_after_the_task_was_reopened_or_deleted_creates_nothing() {
    let app = spawn_app().await;
    let recurring = json!({"title": "Laundry", "due_at": "2026-03-02T18:00:00Z",
                           "recurrence": {"frequency": "weekly"}});
    let (reopened, completed_then_reopened) = complete_recurring(&app, recurring.clone()).await;
    let reopened_id = id_of(&reopened);
    let response = app
        .complete(&reopened_id.to_string(), Some(json!({"completed": false})))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let (deleted, completed_then_deleted) = complete_recurring(&app, recurring).await;
    let deleted_id = id_of(&deleted);
    assert_eq!(
        app.delete_task(&deleted_id.to_string()).await.status,
        StatusCode::NO_CONTENT
    );

    for event in [&completed_then_reopened, &completed_then_deleted] {
        assert_success(&deliver(&app, &app.dapr, "tasks", event).await);
        assert_eq!(processed_markers(&app, event).await, 0, "nothing was done");
    }
    assert_eq!(series_rows(&app, reopened_id).await.len(), 1);
    assert!(series_rows(&app, deleted_id).await.is_empty());
    let rows = app.task_rows().await;
    assert_eq!(rows.len(), 1, "only the re-opened task: {rows:?}");
    assert!(!rows[0].2);
}

/// Whoever can publish to the topic cannot create tasks: an event naming another user's task,
/// or a task that never existed, writes nothing; an event whose copy of the task was altered
/// makes the next occurrence from the stored row.
#[tokio::test]
async fn forged_completions_create_nothing_and_altered_ones_copy_the_stored_row() {
    let app = spawn_app().await;
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Pay rent", "due_at": "2026-03-01T09:00:00Z",
               "recurrence": {"frequency": "monthly"}}),
    )
    .await;
    let series = id_of(&task);
    let mallory = app.as_user(&new_user());

    // The victim's task, claimed for another user (the partition key names the event's user).
    let mut stolen = completed.clone();
    stolen["id"] = json!(Uuid::now_v7().to_string());
    stolen["partitionkey"] = json!(mallory.user);
    // A task that was never stored.
    let mut invented = completed.clone();
    let ghost = Uuid::now_v7();
    invented["id"] = json!(Uuid::now_v7().to_string());
    invented["subject"] = json!(ghost.to_string());
    invented["data"]["task_id"] = json!(ghost.to_string());
    invented["data"]["task"]["id"] = json!(ghost.to_string());
    invented["data"]["task"]["series_id"] = json!(ghost.to_string());
    for event in [&stolen, &invented] {
        assert_success(&deliver(&app, &app.dapr, "tasks", event).await);
        assert_eq!(processed_markers(&app, event).await, 0);
    }
    assert!(
        mallory.task_rows().await.is_empty(),
        "nothing for the forger"
    );
    assert_eq!(series_rows(&app, series).await.len(), 1);

    // The real task with an altered copy: the next occurrence is the stored task's.
    let mut altered = completed.clone();
    altered["id"] = json!(Uuid::now_v7().to_string());
    altered["data"]["task"]["title"] = json!("Pay mallory");
    altered["data"]["task"]["priority"] = json!("high");
    assert_success(&deliver(&app, &app.dapr, "tasks", &altered).await);
    let rows = series_rows(&app, series).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].2, "Pay rent");
    let next = app.get_task(&rows[1].1.to_string()).await.json();
    assert_eq!(next["priority"], "medium", "{next}");
}

#[tokio::test]
async fn completing_a_monthly_task_clamps_to_month_end_and_keeps_the_local_time() {
    let app = spawn_app().await;
    // 09:00 in Berlin: 08:00 UTC in winter, 07:00 UTC once summer time starts on March 29.
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Rent", "due_at": "2026-01-31T09:00:00+01:00",
               "recurrence": {"frequency": "monthly", "timezone": "Europe/Berlin"}}),
    )
    .await;
    let series = id_of(&task);
    assert_success(&deliver(&app, &app.dapr, "tasks", &completed).await);
    let february = series_rows(&app, series).await[1].clone();
    assert_eq!(february.4.as_deref(), Some("2026-02-28T08:00:00Z"));

    assert_eq!(
        app.complete(&february.1.to_string(), None).await.status,
        StatusCode::OK
    );
    let completed = outbox_event(&app, "task.completed", february.1).await;
    assert_success(&deliver(&app, &app.dapr, "tasks", &completed).await);

    let dues: Vec<Option<String>> = series_rows(&app, series)
        .await
        .into_iter()
        .map(|r| r.4)
        .collect();
    assert_eq!(
        dues,
        [
            Some("2026-01-31T08:00:00Z".to_owned()),
            Some("2026-02-28T08:00:00Z".to_owned()),
            Some("2026-03-31T07:00:00Z".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_series_ends_at_its_count() {
    let app = spawn_app().await;
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Twice", "recurrence": {"frequency": "daily", "count": 2}}),
    )
    .await;
    let series = id_of(&task);
    assert_success(&deliver(&app, &app.dapr, "tasks", &completed).await);
    let rows = series_rows(&app, series).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1].4, None,
        "an undated task has an undated next occurrence"
    );

    assert_eq!(
        app.complete(&rows[1].1.to_string(), None).await.status,
        StatusCode::OK
    );
    let last = outbox_event(&app, "task.completed", rows[1].1).await;
    assert_success(&deliver(&app, &app.dapr, "tasks", &last).await);

    assert_eq!(
        series_rows(&app, series).await.len(),
        2,
        "count 2 means two tasks"
    );
}

#[tokio::test]
async fn malformed_events_are_dropped_to_the_dead_letter_topic() {
    let app = spawn_app().await;
    let (_, good) = complete_recurring(
        &app,
        json!({"title": "Gym", "due_at": "2026-03-02T18:00:00Z", "recurrence": {"frequency": "weekly"}}),
    )
    .await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut event = good.clone();
        event["id"] = json!(Uuid::now_v7().to_string());
        edit(&mut event);
        event
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "an unknown type",
            with(&|e| e["type"] = json!("task.archived")),
        ),
        (
            "data that is not an object",
            with(&|e| e["data"] = json!("task")),
        ),
        (
            "a task without a title",
            with(&|e| e["data"]["task"]["title"] = json!("")),
        ),
        (
            "an invalid rule",
            with(&|e| e["data"]["task"]["recurrence"]["interval"] = json!(0)),
        ),
        (
            "no partition key",
            with(&|e| e["partitionkey"] = json!(null)),
        ),
        (
            "a reminder on the tasks topic",
            with(&|e| e["type"] = json!("reminder.triggered")),
        ),
    ];

    for (case, event) in &cases {
        let outcome = deliver(&app, &app.dapr, "tasks", event).await;
        assert!(
            matches!(&outcome, DeliveryOutcome::Dropped { answers, .. } if answers == &[AppAnswer::Drop]),
            "{case}: {outcome:?}"
        );
        assert_eq!(outcome.dead_letter(), Some("tasks-dlq"), "{case}");
    }

    let dead: Vec<Value> = app
        .dapr
        .messages_on("tasks-dlq")
        .into_iter()
        .map(|m| m.envelope)
        .collect();
    assert_eq!(dead.len(), cases.len());
    for ((case, event), dead) in cases.iter().zip(&dead) {
        assert_eq!(
            dead["id"], event["id"],
            "{case} reached the dead-letter topic unchanged"
        );
    }
    let rows = app.task_rows().await;
    assert_eq!(rows.len(), 1, "nothing was created: {rows:?}");
}

#[tokio::test]
async fn bodies_that_are_no_cloud_events_are_answered_drop() {
    let app = spawn_app().await;
    let cases: [(&str, &str, &[u8]); 4] = [
        ("not JSON", "application/cloudevents+json", b"{oops"),
        ("a JSON array", "application/json", b"[]"),
        (
            "specversion 0.3",
            "application/cloudevents+json",
            br#"{"specversion":"0.3","id":"1","source":"s","type":"task.created","data":{}}"#,
        ),
        ("plain text", "text/plain", b"hello"),
    ];
    for (case, content_type, body) in cases {
        let response = app
            .send_as_sidecar(
                Method::POST,
                "/api/events/tasks",
                &[("content-type", content_type)],
                Bytes::from_static(body),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{case}");
        assert_eq!(response.json(), json!({"status": "DROP"}), "{case}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_answered_retry_and_a_redelivery_succeeds() {
    let app = spawn_app().await;
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Pills", "due_at": "2026-03-02T08:00:00Z", "recurrence": {"frequency": "daily"}}),
    )
    .await;
    // The same app with a database port nothing listens on, as when PostgreSQL is stopped.
    let dead_port = unused_port();
    let down = spawn_app_with_var("db_port", dead_port).await;

    let outcome = deliver(&down, &down.dapr, "tasks", &completed).await;

    let DeliveryOutcome::Exhausted { answers, .. } = &outcome else {
        panic!("expected retries until exhausted: {outcome:?}");
    };
    assert!(
        answers.iter().all(|a| a == &AppAnswer::Retry),
        "{answers:?}"
    );
    assert_eq!(
        series_rows(&app, id_of(&task)).await.len(),
        1,
        "nothing was written"
    );
    assert_eq!(
        processed_markers(&app, &completed).await,
        0,
        "no marker without its effect"
    );

    assert_success(&deliver(&app, &app.dapr, "tasks", &completed).await);
    assert_eq!(series_rows(&app, id_of(&task)).await.len(), 2);
}

#[tokio::test]
async fn calls_without_the_app_token_get_401() {
    const TOKEN: &str = "a-second-app-token-32-bytes-or-more";
    let app = spawn_app_with_var("app_api_token", TOKEN).await;
    let event = json!({
        "specversion": "1.0", "id": "e1", "source": "/todo-spin/tasks", "type": "reminder.triggered",
        "datacontenttype": "application/json", "data": {"task_id": Uuid::nil()},
    });
    let body = Bytes::from(serde_json::to_vec(&event).expect("json"));
    let ce = ("content-type", "application/cloudevents+json");

    for token in [None, Some("wrong"), Some(""), Some(&TOKEN[1..])] {
        let headers: Vec<(&str, &str)> = token
            .map(|t| ("dapr-api-token", t))
            .into_iter()
            .chain([ce])
            .collect();
        for (method, path) in [
            (Method::GET, "/dapr/subscribe"),
            (Method::POST, "/api/events/reminders"),
            (Method::POST, "/api/events/tasks"),
            (Method::POST, "/outbox-relay"),
            (Method::POST, "/reminder-sweep"),
        ] {
            app.send(method, path, &headers, body.clone())
                .await
                .problem(401);
        }
    }

    let headers = [("dapr-api-token", TOKEN), ce];
    let listed = app
        .send(Method::GET, "/dapr/subscribe", &headers, Bytes::new())
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let delivered = app
        .send(Method::POST, "/api/events/reminders", &headers, body)
        .await;
    assert_eq!(
        delivered.status,
        StatusCode::NO_CONTENT,
        "SUCCESS is an empty 2xx"
    );
    assert!(delivered.body.is_empty());

    // A sidecar configured with the token gets through.
    assert_success(&deliver(&app, &app.dapr, "reminders", &event).await);
}

/// The defaults of a fresh deployment: no app token, so the routes only the sidecar calls
/// refuse everyone, and a forged `task.completed` creates nothing.
#[tokio::test]
async fn without_an_app_token_the_sidecar_routes_refuse_every_call() {
    let app = spawn_app_with_var("app_api_token", "").await;
    let (task, completed) = complete_recurring(
        &app,
        json!({"title": "Forged", "due_at": "2026-03-02T09:00:00Z", "recurrence": {"frequency": "daily"}}),
    )
    .await;
    let forged = Bytes::from(completed.to_string());
    for token in [None, Some("anything-at-all-even-32-bytes-long!!")] {
        let headers: Vec<(&str, &str)> = token
            .map(|t| ("dapr-api-token", t))
            .into_iter()
            .chain([("content-type", "application/cloudevents+json")])
            .collect();
        for (method, path) in [
            (Method::GET, "/dapr/subscribe"),
            (Method::POST, "/api/events/tasks"),
            (Method::POST, "/api/events/reminders"),
            (Method::POST, "/outbox-relay"),
            (Method::OPTIONS, "/outbox-relay"),
            (Method::POST, "/reminder-sweep"),
        ] {
            let problem = app
                .send(method, path, &headers, forged.clone())
                .await
                .problem(401);
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("app_api_token")),
                "{problem}"
            );
        }
    }
    assert_eq!(
        series_rows(&app, id_of(&task)).await.len(),
        1,
        "the forged delivery created nothing"
    );
    // The task API itself is unaffected.
    assert_eq!(app.list("").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_local_development_switch_opens_the_sidecar_routes_without_a_token() {
    let app = spawn_app_with(
        HashMap::from([
            ("app_api_token".to_owned(), String::new()),
            ("allow_open_sidecar_routes".to_owned(), "true".to_owned()),
        ]),
        ReuseConfig::default(),
    )
    .await;
    let listed = app
        .send(Method::GET, "/dapr/subscribe", &[], Bytes::new())
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
}

#[tokio::test]
async fn a_weak_or_placeholder_app_token_stops_the_sidecar_routes_with_a_bare_500() {
    for weak in ["s3cret", "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME"] {
        let app = spawn_app_with_var("app_api_token", weak).await;
        for (method, path) in [
            (Method::GET, "/dapr/subscribe"),
            (Method::POST, "/api/events/tasks"),
            (Method::POST, "/outbox-relay"),
        ] {
            let answer = app
                .send(method, path, &[("dapr-api-token", weak)], Bytes::new())
                .await;
            let problem = answer.problem(500);
            let text = problem.to_string();
            assert!(
                !text.contains("app_api_token") && !text.contains(weak),
                "nothing about the cause reaches the caller: {problem}"
            );
        }
    }
}

/// In-process calls that claim another address: a control only the host has.
mod host_only {
    use super::*;
    use std::net::SocketAddr;

    async fn call_from(app: &TestApp, addr: &str) -> StatusCode {
        let request = http::Request::builder()
            .method(Method::GET)
            .uri("http://127.0.0.1:3000/dapr/subscribe")
            .header("dapr-api-token", app.app_token.as_str())
            .body(Bytes::new())
            .expect("a request");
        let from: SocketAddr = addr.parse().expect("an address");
        app.host()
            .expect("the test host")
            .handle_from(request, from)
            .await
            .expect("an answer")
            .status()
    }

    /// The database statements the intake sends while `event` is delivered and answered.
    async fn statements_for(app: &TestApp, event: &Value) -> u64 {
        let host = app.host().expect("the test host");
        let before = host.host_calls("event-intake").statements();
        assert_success(&deliver(app, &app.dapr, "tasks", event).await);
        host.host_calls("event-intake").statements() - before
    }

    /// A genuine completion, the event Dapr delivers nearly every time, is checked against the
    /// stored row in the statement that records the next occurrence: two statements (record;
    /// mark published and release the lease), no read. Every column takes part, so the tasks
    /// carry all of them: description, tags, due time, both kinds of reminder, a rule with a
    /// time zone and a count.
    #[tokio::test]
    async fn a_genuine_completion_is_recorded_without_reading_the_task() {
        let app = spawn_app().await;
        for body in [
            json!({"title": "Water plants", "recurrence": {"frequency": "daily"}}),
            json!({"title": "Stand-up", "description": "daily sync", "priority": "high",
                   "tags": ["work", "Team"], "due_at": "2026-03-02T09:00:00+01:00",
                   "remind_before_minutes": 15,
                   "recurrence": {"frequency": "weekly", "timezone": "Europe/Berlin",
                                  "count": 5}}),
            json!({"title": "Rent", "priority": "low", "due_at": "2026-03-01T09:00:00Z",
                   "remind_at": "2026-02-28T18:00:00Z", "recurrence": {"frequency": "monthly"}}),
        ] {
            let (task, completed) = complete_recurring(&app, body).await;
            publishing_settled(&app).await;
            assert_eq!(statements_for(&app, &completed).await, 2, "{task}");
            let rows = series_rows(&app, id_of(&task)).await;
            assert_eq!(rows.len(), 2, "{rows:?}");
            assert_eq!(processed_markers(&app, &completed).await, 1);
            publishing_settled(&app).await;
            // A redelivery is answered from the marker, in one statement.
            assert_eq!(statements_for(&app, &completed).await, 1);
            assert_eq!(series_rows(&app, id_of(&task)).await.len(), 2);
        }
    }

    /// A copy the stored row does not hold (altered here; forged or stale alike) writes nothing
    /// from the copy: the task is read and the next occurrence follows the stored row.
    #[tokio::test]
    async fn a_copy_that_is_not_the_stored_row_is_read_past() {
        let app = spawn_app().await;
        let (task, completed) = complete_recurring(
            &app,
            json!({"title": "Pay rent", "tags": ["home"], "recurrence": {"frequency": "monthly"}}),
        )
        .await;
        publishing_settled(&app).await;
        let mut altered = completed.clone();
        altered["data"]["task"]["tags"] = json!(["home", "mallory"]);
        assert_eq!(
            statements_for(&app, &altered).await,
            4,
            "the copy's record writes nothing; read, record, mark follow"
        );
        let rows = series_rows(&app, id_of(&task)).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        let next = app.get_task(&rows[1].1.to_string()).await.json();
        assert_eq!(next["tags"], json!(["home"]), "{next}");
    }

    #[tokio::test]
    async fn sidecar_routes_refuse_callers_on_other_hosts_unless_turned_off() {
        let app = spawn_app().await;
        assert_eq!(call_from(&app, "127.0.0.1:40000").await, StatusCode::OK);
        assert_eq!(call_from(&app, "[::1]:40000").await, StatusCode::OK);
        assert_eq!(
            call_from(&app, "10.0.3.7:40000").await,
            StatusCode::FORBIDDEN,
            "the token alone is not enough from another host"
        );
        let shared = spawn_app_with_var("sidecar_loopback_only", "false").await;
        assert_eq!(call_from(&shared, "10.0.3.7:40000").await, StatusCode::OK);
    }
}

#[tokio::test]
async fn other_paths_under_api_events_are_not_found_and_deliveries_are_post_only() {
    let app = spawn_app().await;

    for path in ["/api/events", "/api/events/orders", "/api/events/tasks/x"] {
        app.send_as_sidecar(Method::POST, path, &[], Bytes::new())
            .await
            .problem(404);
    }
    let get = app
        .send_as_sidecar(Method::GET, "/api/events/tasks", &[], Bytes::new())
        .await;
    get.problem(405);
    assert_eq!(get.header("allow"), Some("POST"));
    // The task API keeps its own routes and catch-all.
    app.send(Method::GET, "/api/nothing-here", &[], Bytes::new())
        .await
        .problem(404);
    assert_eq!(app.list("").await.status, StatusCode::OK);
}
