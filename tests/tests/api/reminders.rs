//! Reminders end to end: set through the API, fired by `POST /reminder-sweep` as the Dapr cron
//! binding calls it, published to the sidecar double on topic `reminders`, and checked in
//! PostgreSQL.
//!
//! Every test runs on a database of its own: the sweep fires the due reminders of all users,
//! and would otherwise fire (and publish to its own sidecar double) those of tests running
//! beside it. Times are a few seconds ahead at most, and every wait is bounded.

use crate::helpers::{TestApp, spawn_app_with, spawn_app_with_own_database};
use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use todo_test_host::ReuseConfig;
use todo_test_host::dapr::{DaprDouble, Message, Mode, Options};
use uuid::Uuid;

const TRIGGERED: &str = "reminder.triggered";
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn spawn_app() -> TestApp {
    spawn_app_with_own_database(HashMap::new()).await
}

/// A second host on the same database and sidecar: another replica of the app.
async fn replica_of(app: &TestApp) -> TestApp {
    let vars = HashMap::from([
        ("db_name".to_owned(), app.db_name.clone()),
        ("dapr_http_port".to_owned(), app.dapr.port().to_string()),
    ]);
    let replica = spawn_app_with(vars, ReuseConfig::default()).await;
    replica.as_user(&app.user)
}

/// The current time in whole seconds, so that what the API echoes compares as text.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

fn rfc(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task has an id").to_owned()
}

/// Sleeps until just after `time`.
async fn sleep_until(time: DateTime<Utc>) {
    let left = (time - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(100)).await;
}

fn fired(summary: &Value) -> u64 {
    summary["fired"]
        .as_u64()
        .expect("the summary counts fired reminders")
}

/// The `reminder.triggered` events the sidecar double accepted for this user.
fn triggered(app: &TestApp) -> Vec<Message> {
    app.dapr
        .messages_on("reminders")
        .into_iter()
        .filter(|m| m.partition_key() == Some(app.user.as_str()))
        .filter(|m| m.event_type() == Some(TRIGGERED))
        .collect()
}

/// Waits until the double has `count` triggered events of this user (or the time is up), then
/// a little longer so that a duplicate would show.
async fn wait_for_triggered(app: &TestApp, count: usize) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while triggered(app).len() < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    triggered(app)
}

/// This user's reminder events in the outbox, in order, as (type, task id, data).
async fn outbox_reminders(app: &TestApp) -> Vec<(String, String, Value)> {
    app.db
        .query(
            "select event->>'type', event->>'subject', event->'data' from outbox \
             where user_id = $1 and topic = 'reminders' order by seq",
            &[&app.user],
        )
        .await
        .expect("query outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The reminder events of one task, as (type, data).
async fn reminder_events_of(app: &TestApp, task_id: &str) -> Vec<(String, Value)> {
    outbox_reminders(app)
        .await
        .into_iter()
        .filter(|(_, subject, _)| subject == task_id)
        .map(|(kind, _, data)| (kind, data))
        .collect()
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(kind, _)| kind.as_str()).collect()
}

/// How many of this user's tasks have a fired reminder.
async fn fired_rows(app: &TestApp) -> i64 {
    app.db
        .query_one(
            "select count(*) from tasks where user_id = $1 and reminder_fired_at is not null",
            &[&app.user],
        )
        .await
        .expect("query tasks")
        .get(0)
}

#[tokio::test]
async fn a_reminder_fires_on_time_once_on_the_reminders_topic_keyed_by_user() {
    // Arrange
    let app = spawn_app().await;
    let fire = now() + Duration::seconds(3);
    let due = fire + Duration::hours(1);
    let task = app
        .create(json!({"title": "Stretch", "due_at": rfc(due), "remind_at": rfc(fire)}))
        .await;
    let id = id_of(&task);
    assert_eq!(task["remind_at"], rfc(fire));
    assert_eq!(task["remind_before_minutes"], Value::Null);
    assert_eq!(task["reminder_fires_at"], rfc(fire));
    assert_eq!(task["reminder_fired_at"], Value::Null);

    // Act + Assert: before its time, nothing fires
    let early = app.sweep().await;
    assert_eq!(fired(&early), 0, "{early}");
    assert_eq!(fired_rows(&app).await, 0);

    // Act: the first sweep after its time
    sleep_until(fire).await;
    let on_time = app.sweep().await;

    // Assert
    assert_eq!(fired(&on_time), 1, "{on_time}");
    assert_eq!(on_time["users"], 1);
    let messages = wait_for_triggered(&app, 1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message.topic, "reminders");
    assert_eq!(message.pubsub, "kafka-pubsub");
    assert_eq!(message.partition_key(), Some(app.user.as_str()));
    assert_eq!(message.envelope["partitionkey"], app.user);
    assert_eq!(message.envelope["subject"], id);
    assert_eq!(
        message.data(),
        Some(&json!({
            "task_id": id, "title": "Stretch", "due_at": rfc(due), "remind_at": rfc(fire),
            "remind_before_minutes": null,
        }))
    );
    let read = app.get_task(&id).await.json();
    assert!(read["reminder_fired_at"].is_string(), "{read}");

    // Act + Assert: a fired reminder does not fire again, through sweeps or the relay
    assert_eq!(fired(&app.sweep().await), 0);
    app.relay().await;
    assert_eq!(wait_for_triggered(&app, 2).await.len(), 1);
    assert_eq!(fired_rows(&app).await, 1);
}

#[tokio::test]
async fn concurrent_and_repeated_sweeps_on_two_replicas_fire_each_reminder_once() {
    // Arrange: six reminders that are due, and two hosts on the same database and sidecar
    let app = spawn_app().await;
    let replica = replica_of(&app).await;
    let due = now() + Duration::hours(1);
    let mut ids = BTreeSet::new();
    for i in 0..6 {
        let fire = now() - Duration::seconds(1 + i);
        let task = app
            .create(
                json!({"title": format!("Call {i}"), "due_at": rfc(due), "remind_at": rfc(fire)}),
            )
            .await;
        ids.insert(id_of(&task));
    }

    // Act: eight sweeps at once, alternating between the replicas, then three more in turn
    let sweeps = (0..8).map(|i| {
        if i % 2 == 0 {
            app.sweep()
        } else {
            replica.sweep()
        }
    });
    let summaries = futures::future::join_all(sweeps).await;
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(fired(&replica.sweep().await));
    }

    // Assert: one claim per reminder, one fired row, one event in the outbox and on the sidecar
    let total: u64 = summaries.iter().map(fired).sum();
    assert_eq!(total, 6, "{summaries:?}");
    assert_eq!(again, [0, 0, 0]);
    assert_eq!(fired_rows(&app).await, 6);
    let stored: Vec<String> = outbox_reminders(&app)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == TRIGGERED)
        .map(|(_, subject, _)| subject)
        .collect();
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), ids);
    app.relay().await;
    let messages = wait_for_triggered(&app, 6).await;
    let published: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.envelope["subject"].as_str())
        .collect();
    assert_eq!(published.len(), 6, "{published:?}");
    assert_eq!(
        published
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        ids
    );
}

#[tokio::test]
async fn completing_deleting_or_moving_the_due_time_cancels_a_reminder_that_then_never_fires() {
    // Arrange: four reminders firing in a few seconds
    let app = spawn_app().await;
    let fire = now() + Duration::seconds(3);
    let later = fire + Duration::hours(1);
    let absolute =
        |title: &str| json!({"title": title, "due_at": rfc(later), "remind_at": rfc(fire)});
    let completed = id_of(&app.create(absolute("Complete me")).await);
    let deleted = id_of(&app.create(absolute("Delete me")).await);
    let removed = id_of(&app.create(absolute("Keep me, quietly")).await);
    // Relative: fires at its due time, and moves with it.
    let moved = id_of(
        &app.create(json!({"title": "Move me", "due_at": rfc(fire), "remind_before_minutes": 0}))
            .await,
    );

    // Act
    assert_eq!(app.complete(&completed, None).await.status, StatusCode::OK);
    assert_eq!(
        app.delete_task(&deleted).await.status,
        StatusCode::NO_CONTENT
    );
    let response = app.patch_task(&removed, json!({"remind_at": null})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["reminder_fires_at"], Value::Null);
    let new_due = fire + Duration::days(1);
    let response = app
        .patch_task(&moved, json!({"due_at": rfc(new_due)}))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let moved_task = response.json();
    assert_eq!(moved_task["remind_before_minutes"], 0);
    assert_eq!(moved_task["reminder_fires_at"], rfc(new_due));

    // Assert: each pending reminder was cancelled, with its reason
    for (id, reason) in [
        (&completed, "completed"),
        (&deleted, "deleted"),
        (&removed, "removed"),
    ] {
        let events = reminder_events_of(&app, id).await;
        assert_eq!(
            kinds(&events),
            ["reminder.scheduled", "reminder.cancelled"],
            "{reason}"
        );
        assert_eq!(
            events[1].1,
            json!({"task_id": id, "remind_at": rfc(fire), "reason": reason})
        );
    }
    let events = reminder_events_of(&app, &moved).await;
    assert_eq!(
        kinds(&events),
        [
            "reminder.scheduled",
            "reminder.cancelled",
            "reminder.scheduled"
        ]
    );
    assert_eq!(events[1].1["reason"], "due_changed");
    assert_eq!(events[2].1["remind_at"], rfc(new_due));

    // Assert: none of them fires when its old time comes
    sleep_until(fire).await;
    let summary = app.sweep().await;
    assert_eq!(fired(&summary), 0, "{summary}");
    assert_eq!(fired_rows(&app).await, 0);
    assert!(
        outbox_reminders(&app)
            .await
            .iter()
            .all(|(kind, _, _)| kind != TRIGGERED)
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let cancelled_on_sidecar = loop {
        let cancelled = app
            .dapr
            .messages_on("reminders")
            .into_iter()
            .filter(|m| m.partition_key() == Some(app.user.as_str()))
            .filter(|m| m.event_type() == Some("reminder.cancelled"))
            .count();
        if cancelled >= 4 || tokio::time::Instant::now() > deadline {
            break cancelled;
        }
        app.relay().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(cancelled_on_sidecar, 4);
    assert!(triggered(&app).is_empty());
}

#[tokio::test]
async fn a_sweep_after_downtime_fires_every_overdue_reminder_in_time_order() {
    // Arrange: reminders that came due while nothing swept, hours, minutes and a second ago
    let app = spawn_app().await;
    let start = now();
    let soon = start + Duration::seconds(1);
    let long_ago = app
        .create(
            json!({"title": "Long overdue", "due_at": rfc(start + Duration::hours(1)),
                       "remind_at": rfc(start - Duration::hours(2))}),
        )
        .await;
    let overdue_task = app
        .create(
            json!({"title": "Overdue task", "due_at": rfc(start - Duration::minutes(10)),
                       "remind_before_minutes": 5}),
        )
        .await;
    let at_due = app
        .create(json!({"title": "At due time", "due_at": rfc(soon), "remind_before_minutes": 0}))
        .await;
    let absolute = app
        .create(
            json!({"title": "Absolute", "due_at": rfc(start + Duration::hours(1)),
                       "remind_at": rfc(soon)}),
        )
        .await;
    sleep_until(soon).await;

    // Act: the first sweep after the outage
    let summary = app.sweep().await;

    // Assert: everything overdue fired at once, earliest first
    assert_eq!(fired(&summary), 4, "{summary}");
    assert_eq!(summary["due"], 4);
    let order: Vec<String> = outbox_reminders(&app)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == TRIGGERED)
        .map(|(_, subject, _)| subject)
        .collect();
    assert_eq!(
        order,
        [
            id_of(&long_ago),
            id_of(&overdue_task),
            id_of(&at_due),
            id_of(&absolute)
        ]
    );
    let messages = wait_for_triggered(&app, 4).await;
    assert_eq!(messages.len(), 4);
    let overdue = messages
        .iter()
        .find(|m| m.envelope["subject"] == id_of(&overdue_task))
        .expect("the overdue task's reminder was published");
    assert_eq!(
        overdue.data().map(|d| &d["remind_before_minutes"]),
        Some(&json!(5))
    );
    assert_eq!(
        overdue.data().map(|d| &d["remind_at"]),
        Some(&json!(rfc(start - Duration::minutes(15))))
    );
    assert_eq!(fired(&app.sweep().await), 0);
}

#[tokio::test]
async fn reminders_fired_while_the_sidecar_is_down_are_published_by_the_relay() {
    // Arrange: two due reminders, and a sidecar that refuses connections
    let app = spawn_app().await;
    let due = now() + Duration::hours(1);
    for title in ["Water plants", "Feed cat"] {
        app.create(json!({"title": title, "due_at": rfc(due), "remind_at": rfc(now())}))
            .await;
    }
    app.dapr.set_mode(Mode::Refuse).await;

    // Act
    let summary = app.sweep().await;

    // Assert: fired and kept in the outbox, not lost
    assert_eq!(fired(&summary), 2, "{summary}");
    assert_eq!(summary["published"], 0);
    assert_eq!(fired_rows(&app).await, 2);

    // Act: the sidecar is back; the relay delivers once the backoff has passed
    app.dapr.set_mode(Mode::Healthy).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while triggered(&app).len() < 2 && tokio::time::Instant::now() < deadline {
        app.relay().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Assert
    assert_eq!(wait_for_triggered(&app, 2).await.len(), 2);
    assert_eq!(fired(&app.sweep().await), 0);
}

#[tokio::test]
async fn completing_a_recurring_task_carries_its_reminder_offset_to_the_next_occurrence() {
    let app = spawn_app().await;
    // (reminder as set, the next occurrence's reminder as the API shows it, its fire time)
    let cases = [
        (
            json!({"remind_before_minutes": 45}),
            json!({"remind_before_minutes": 45, "remind_at": null}),
            "2030-01-14T08:15:00Z",
        ),
        (
            json!({"remind_at": "2030-01-06T21:00:00+01:00"}),
            json!({"remind_before_minutes": null, "remind_at": "2030-01-13T20:00:00Z"}),
            "2030-01-13T20:00:00Z",
        ),
    ];
    for (reminder, expected, fires_at) in cases {
        // Arrange: a weekly task due 2030-01-07 09:00 UTC with a reminder
        let mut body = json!({"title": "Team sync", "due_at": "2030-01-07T09:00:00Z",
                              "recurrence": {"frequency": "weekly"}});
        body.as_object_mut()
            .expect("object")
            .extend(reminder.as_object().expect("object").clone());
        let first = id_of(&app.create(body).await);

        // Act: complete it, and deliver the completion as the sidecar does
        assert_eq!(app.complete(&first, None).await.status, StatusCode::OK);
        let completed = app.outbox_event("task.completed", &first).await;
        app.dapr
            .deliver_event(&app.sidecar_view(), "kafka-pubsub", "tasks", &completed)
            .await
            .expect("the double delivers");

        // Assert: the next occurrence has the reminder, at the same distance before its due time
        let next: Uuid = app
            .db
            .query_one(
                "select id from tasks where user_id = $1 and series_id = $2 and occurrence = 1",
                &[&app.user, &Uuid::parse_str(&first).expect("uuid")],
            )
            .await
            .expect("the next occurrence exists")
            .get(0);
        let next = app.get_task(&next.to_string()).await.json();
        assert_eq!(next["due_at"], "2030-01-14T09:00:00Z");
        for (field, value) in expected.as_object().expect("object") {
            assert_eq!(&next[field], value, "{field} of {next}");
        }
        assert_eq!(next["reminder_fires_at"], fires_at);
        assert_eq!(next["reminder_fired_at"], Value::Null);
        let events = reminder_events_of(&app, &id_of(&next)).await;
        assert_eq!(kinds(&events), ["reminder.scheduled"]);
        assert_eq!(events[0].1["remind_at"], fires_at);
        let first_events = reminder_events_of(&app, &first).await;
        assert_eq!(
            kinds(&first_events),
            ["reminder.scheduled", "reminder.cancelled"],
            "completing the first cancelled its reminder"
        );
    }
}

#[tokio::test]
async fn invalid_reminders_get_422_with_a_precise_message() {
    let app = spawn_app().await;
    let due = "2030-05-01T09:00:00Z";
    // (body, field, message, case)
    let cases = [
        (
            json!({"title": "t", "due_at": due, "remind_before_minutes": 10, "remind_at": due}),
            "remind_at",
            "send either remind_before_minutes or remind_at, not both",
            "both forms",
        ),
        (
            json!({"title": "t", "remind_before_minutes": 10}),
            "remind_before_minutes",
            "requires due_at: a reminder belongs to a due date; set one, or remove the reminder \
             in the same request",
            "no due date",
        ),
        (
            json!({"title": "t", "due_at": due, "remind_at": "2030-05-01T11:00:01+02:00"}),
            "remind_at",
            "must not be after due_at (2030-05-01T09:00:00Z)",
            "after the due time",
        ),
        (
            json!({"title": "t", "due_at": due, "remind_before_minutes": 525_601}),
            "remind_before_minutes",
            "must be a whole number of minutes from 0 to 525600 (a year)",
            "more than a year",
        ),
        (
            json!({"title": "t", "due_at": due, "remind_before_minutes": -5}),
            "remind_before_minutes",
            "must be a whole number of minutes from 0 to 525600 (a year)",
            "negative",
        ),
        (
            json!({"title": "t", "due_at": due, "remind_at": "tomorrow"}),
            "remind_at",
            "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-05-01T09:00:00+02:00",
            "not a date-time",
        ),
    ];
    for (body, field, message, case) in cases {
        let problem = app.post_task(body).await.problem(422);
        assert_eq!(
            problem["errors"],
            json!([{"field": field, "message": message}]),
            "{case}"
        );
    }

    // A change that leaves the stored reminder without a fitting due time is refused too.
    let task = app
        .create(json!({"title": "t", "due_at": due, "remind_before_minutes": 30}))
        .await;
    let id = id_of(&task);
    let problem = app
        .patch_task(&id, json!({"due_at": null}))
        .await
        .problem(422);
    assert_eq!(problem["errors"][0]["field"], "remind_before_minutes");
    let problem = app
        .patch_task(&id, json!({"remind_at": "2030-05-02T00:00:00Z"}))
        .await
        .problem(422);
    assert_eq!(
        problem["errors"][0]["message"],
        "must not be after due_at (2030-05-01T09:00:00Z)"
    );
    assert_eq!(
        app.get_task(&id).await.json()["remind_before_minutes"],
        30,
        "nothing was written"
    );
}

#[tokio::test]
async fn put_resets_an_omitted_reminder_and_patch_keeps_it() {
    let app = spawn_app().await;
    let due = "2030-05-01T09:00:00Z";
    let task = app
        .create(json!({"title": "Dentist", "due_at": due, "remind_before_minutes": 60}))
        .await;
    let id = id_of(&task);
    assert_eq!(task["reminder_fires_at"], "2030-05-01T08:00:00Z");

    // PATCH without reminder fields keeps it; sending back what was read changes nothing.
    let patched = app
        .patch_task(&id, json!({"title": "Dentist!"}))
        .await
        .json();
    assert_eq!(patched["remind_before_minutes"], 60);
    let mut read_back = patched.clone();
    read_back["title"] = json!("Dentist!!");
    let replaced = app.put_task(&id, read_back).await.json();
    assert_eq!(replaced["remind_before_minutes"], 60);
    assert_eq!(replaced["reminder_fires_at"], "2030-05-01T08:00:00Z");

    // A relative reminder can become an absolute one.
    let switched = app
        .patch_task(
            &id,
            json!({"remind_at": "2030-04-30T20:00:00Z", "remind_before_minutes": null}),
        )
        .await
        .json();
    assert_eq!(switched["remind_before_minutes"], Value::Null);
    assert_eq!(switched["remind_at"], "2030-04-30T20:00:00Z");

    // PUT without reminder fields removes it.
    let reset = app
        .put_task(&id, json!({"title": "Dentist", "due_at": due}))
        .await
        .json();
    assert_eq!(reset["remind_at"], Value::Null);
    assert_eq!(reset["reminder_fires_at"], Value::Null);
    let events = reminder_events_of(&app, &id).await;
    assert_eq!(
        kinds(&events),
        [
            "reminder.scheduled",
            "reminder.scheduled",
            "reminder.cancelled"
        ]
    );
    assert_eq!(events[1].1["remind_at"], "2030-04-30T20:00:00Z");
    assert_eq!(events[2].1["reason"], "removed");
}

#[tokio::test]
async fn the_sweep_answers_the_cron_binding_contract_and_checks_the_app_token() {
    let app = spawn_app_with_own_database(HashMap::from([(
        "app_api_token".to_owned(),
        "a-second-app-token-32-bytes-or-more".to_owned(),
    )]))
    .await;
    let sidecar = DaprDouble::start_with(Options {
        app_api_token: Some("a-second-app-token-32-bytes-or-more".to_owned()),
        ..Options::default()
    })
    .await;
    let view = app.sidecar_view();

    app.send(Method::POST, "/reminder-sweep", &[], "")
        .await
        .problem(401);
    assert!(
        sidecar
            .binding_subscribed(&view, "/reminder-sweep")
            .await
            .expect("OPTIONS answered")
    );
    assert_eq!(
        sidecar
            .fire_cron_binding(&view, "/reminder-sweep", Utc::now())
            .await,
        Ok(200)
    );
    let response = app
        .send(
            Method::GET,
            "/reminder-sweep",
            &[("dapr-api-token", "a-second-app-token-32-bytes-or-more")],
            "",
        )
        .await;
    response.problem(405);
    assert_eq!(response.header("allow"), Some("POST, OPTIONS"));
}
