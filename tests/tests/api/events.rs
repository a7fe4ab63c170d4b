//! Task events: one CloudEvent per change through the transactional outbox to the Dapr
//! sidecar double, in per-user order, never slowing or failing the request, never lost.

use crate::helpers::{
    TestApp, spawn_app, spawn_app_with, spawn_app_with_own_database, unused_port,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use todo_test_host::ReuseConfig;
use todo_test_host::dapr::{Message, Mode};

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("id").to_owned()
}

fn types(events: &[Message]) -> Vec<String> {
    events
        .iter()
        .map(|m| m.event_type().unwrap_or("?").to_owned())
        .collect()
}

/// Creates, edits, completes and deletes one task: four changes.
async fn four_changes(app: &TestApp) -> String {
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let auth = format!("Bearer {}", app.token());
    let created = app
        .send(
            Method::POST,
            &app.tasks_path(),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("traceparent", trace),
            ],
            "{\"title\": \"Ship it\", \"due_at\": \"2026-06-01T12:00:00+02:00\"}",
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = id_of(&created.json());
    assert_eq!(
        app.patch_task(&id, json!({"priority": "high", "tags": ["launch"]}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.complete(&id, None).await.status, StatusCode::OK);
    assert_eq!(app.delete_task(&id).await.status, StatusCode::NO_CONTENT);
    id
}

#[tokio::test]
async fn every_change_publishes_one_cloudevent_in_order_with_the_partition_key() {
    let app = spawn_app().await;

    let id = four_changes(&app).await;

    let events = app.wait_for_events(4).await;
    assert_eq!(
        types(&events),
        [
            "task.created",
            "task.updated",
            "task.completed",
            "task.deleted"
        ]
    );
    for event in &events {
        assert_eq!(event.pubsub, "kafka-pubsub");
        assert_eq!(event.topic, "tasks");
        assert_eq!(
            event.partition_key(),
            Some(app.user.as_str()),
            "metadata.partitionKey"
        );
        assert_eq!(
            event.content_type.as_deref(),
            Some("application/cloudevents+json")
        );
        let body = &event.body;
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["source"], "/todo-spin/tasks");
        assert_eq!(body["subject"], id.as_str());
        assert_eq!(body["datacontenttype"], "application/json");
        assert_eq!(body["partitionkey"], app.user.as_str());
        assert!(body["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap_or("")).is_ok());
    }
    assert_eq!(
        events[0].body["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(
        events[1].body.get("traceparent").is_none(),
        "only the request that carried it"
    );
    assert_eq!(events[0].body["data"]["title"], "Ship it");
    assert_eq!(events[0].body["data"]["due_at"], "2026-06-01T10:00:00Z");
    assert_eq!(
        events[1].body["data"]["changed_fields"],
        json!(["priority", "tags"])
    );
    assert_eq!(events[1].body["data"]["task"]["priority"], "high");
    assert_eq!(events[2].body["data"]["completed"], true);
    assert!(events[2].body["data"]["completed_at"].is_string());
    assert_eq!(events[2].body["data"]["due_at"], "2026-06-01T10:00:00Z");
    assert_eq!(events[3].body["data"]["task_id"], id.as_str());
    assert_eq!(events[3].body["data"]["last_state"]["completed"], true);

    let outbox = app.outbox_rows().await;
    assert_eq!(outbox.len(), 4);
    assert!(outbox.iter().all(|(_, delivered)| *delivered), "{outbox:?}");
    let ids: std::collections::HashSet<_> = events
        .iter()
        .map(|e| e.event_id().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 4, "distinct event ids");
}

#[tokio::test]
async fn a_no_op_change_publishes_nothing() {
    let app = spawn_app().await;
    let id = id_of(&app.create(json!({"title": "Same"})).await);
    app.wait_for_events(1).await;
    app.patch_task(&id, json!({"title": "Same"})).await;
    app.complete(&id, Some(json!({"completed": false}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(types(&app.events()), ["task.created"]);
    assert_eq!(app.outbox_rows().await.len(), 1);
}

/// For each failure of the sidecar: requests keep their status and stay fast (a hung sidecar
/// costs one request its publish timeout, after which the instance leaves publishing to the
/// relay for a while); once it recovers, one relay run delivers every event exactly once, in
/// order.
#[tokio::test]
async fn a_down_hanging_or_failing_sidecar_never_fails_or_slows_a_request_and_loses_nothing() {
    for mode in [Mode::Refuse, Mode::Hang, Mode::Fail500] {
        // Its own database, since it runs the relay (see below).
        let app = spawn_app_with_own_database(HashMap::new()).await;
        app.dapr.set_mode(mode).await;

        let started = Instant::now();
        let id = id_of(&app.create(json!({"title": format!("{mode:?}")})).await);
        let mut took = vec![started.elapsed()];
        for body in [json!({"priority": "high"}), json!({"description": "more"})] {
            let started = Instant::now();
            assert_eq!(
                app.patch_task(&id, body).await.status,
                StatusCode::OK,
                "{mode:?}"
            );
            took.push(started.elapsed());
        }
        let started = Instant::now();
        assert_eq!(app.complete(&id, None).await.status, StatusCode::OK);
        took.push(started.elapsed());
        // The publish timeout is 300 ms: no request waits longer than that for the sidecar,
        // and once one has, the others on its instance do not wait at all.
        took.sort_unstable();
        assert!(
            took[took.len() - 1] < Duration::from_millis(600),
            "{mode:?}: a request took {took:?}"
        );
        if app.host().is_some() {
            assert!(
                took[took.len() - 2] < Duration::from_millis(150),
                "{mode:?}: more than one request waited for the sidecar: {took:?}"
            );
        }
        assert!(
            app.events().is_empty(),
            "{mode:?}: nothing accepted while failing"
        );
        let pending = app.outbox_rows().await;
        assert_eq!(pending.len(), 4, "{mode:?}");
        assert!(pending.iter().all(|(_, delivered)| !delivered), "{mode:?}");

        app.dapr.set_mode(Mode::Healthy).await;
        // Backoff after the failures: the relay publishes once the user's next attempt is due.
        let mut summary = Value::Null;
        for _ in 0..60 {
            summary = app.relay().await;
            if app
                .outbox_rows()
                .await
                .iter()
                .all(|(_, delivered)| *delivered)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = app.events();
        assert_eq!(
            types(&events),
            [
                "task.created",
                "task.updated",
                "task.updated",
                "task.completed"
            ],
            "{mode:?}: {summary}"
        );
        let ids: std::collections::HashSet<_> =
            events.iter().filter_map(|e| e.event_id()).collect();
        assert_eq!(ids.len(), 4, "{mode:?}: each event exactly once");
        assert!(
            app.relay().await["delivered"] == 0,
            "{mode:?}: nothing left"
        );
    }
}

/// The event is written in the same statement as the task: if the process dies after the
/// write and before publishing (here: the first app has no reachable sidecar at all and is
/// then dropped), a later relay run on a fresh host still delivers it.
#[tokio::test]
async fn an_event_written_with_its_task_survives_a_crash_before_publishing() {
    let nowhere = unused_port().to_string();
    let doomed =
        spawn_app_with_own_database(HashMap::from([("dapr_http_port".to_owned(), nowhere)])).await;
    let db_name = doomed.db_name.clone();
    let task = doomed.create(json!({"title": "Survivor"})).await;
    assert_eq!(
        doomed.outbox_rows().await,
        vec![("task.created".to_owned(), false)]
    );
    let user = doomed.user.clone();
    drop(doomed);

    let mut restarted = spawn_app_with(
        HashMap::from([("db_name".to_owned(), db_name.clone())]),
        ReuseConfig::default(),
    )
    .await
    .as_user(&user);
    restarted.db = std::sync::Arc::new(crate::helpers::connect(&db_name).await);
    let mut delivered = false;
    for _ in 0..60 {
        restarted.relay().await;
        if restarted.outbox_rows().await == vec![("task.created".to_owned(), true)] {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "relay delivered the stored event");
    let events = restarted.events();
    assert_eq!(types(&events), ["task.created"]);
    assert_eq!(events[0].body["subject"], task["id"]);
}

/// Writes go through an app whose sidecar is unreachable, so only the relay publishes.
#[tokio::test]
async fn events_of_many_users_keep_per_user_order_through_the_relay() {
    // A database of its own: the relay serves every user it finds, and would take other
    // tests' events to its sidecar double.
    let nowhere = unused_port().to_string();
    let writer =
        spawn_app_with_own_database(HashMap::from([("dapr_http_port".to_owned(), nowhere)])).await;
    let users: Vec<TestApp> = (0..3)
        .map(|_| writer.as_user(&crate::helpers::new_user()))
        .collect();
    for user in &users {
        let id = id_of(&user.create(json!({"title": "t"})).await);
        for n in 0..5 {
            user.patch_task(&id, json!({"description": format!("rev {n}")}))
                .await;
        }
    }
    let mut relay = spawn_app_with(
        HashMap::from([("db_name".to_owned(), writer.db_name.clone())]),
        ReuseConfig::default(),
    )
    .await;
    relay.db = writer.db.clone();
    for _ in 0..60 {
        relay.relay().await;
        let mut done = true;
        for user in &users {
            done &= user.outbox_rows().await.iter().all(|(_, d)| *d);
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for user in &users {
        let events: Vec<Message> = relay
            .dapr
            .messages()
            .into_iter()
            .filter(|m| m.partition_key() == Some(user.user.as_str()))
            .collect();
        assert_eq!(events.len(), 6);
        let revisions: Vec<Value> = events[1..]
            .iter()
            .map(|e| e.body["data"]["task"]["description"].clone())
            .collect();
        assert_eq!(
            revisions,
            (0..5)
                .map(|n| json!(format!("rev {n}")))
                .collect::<Vec<_>>()
        );
        assert!(
            events
                .iter()
                .all(|e| e.via == todo_test_host::dapr::Via::Publish),
            "the relay publishes one event at a time: Dapr's bulk publish keeps no order"
        );
    }
}

#[tokio::test]
async fn the_relay_answers_dapr_binding_discovery_and_checks_the_app_token() {
    let app = spawn_app_with_own_database(HashMap::from([(
        "app_api_token".to_owned(),
        "a-second-app-token-32-bytes-or-more".to_owned(),
    )]))
    .await;
    app.send(Method::POST, "/outbox-relay", &[], "")
        .await
        .problem(401);
    let options = app
        .send(
            Method::OPTIONS,
            "/outbox-relay",
            &[("dapr-api-token", "a-second-app-token-32-bytes-or-more")],
            "",
        )
        .await;
    assert_eq!(options.status, StatusCode::OK);
    let run = app
        .send(
            Method::POST,
            "/outbox-relay",
            &[("dapr-api-token", "a-second-app-token-32-bytes-or-more")],
            "",
        )
        .await;
    assert_eq!(run.status, StatusCode::OK);
    assert!(run.json()["users"].is_number());
}

/// Writers of one user racing each other: a writer that finds the publishing lease busy leaves
/// its events to the holder, which goes round again, so every event goes out at once and once,
/// with no relay run. (Order between different tasks is whatever their commits made it; one
/// task's changes are ordered by its version check, which the other tests cover.)
#[tokio::test]
async fn concurrent_writes_of_one_user_are_all_published_without_the_relay() {
    let app = spawn_app().await;
    // A broker taking a few milliseconds to acknowledge keeps each holder on the lease long
    // enough for other writers to commit and find it busy.
    app.dapr.set_publish_latency(Duration::from_millis(15));
    const BURSTS: usize = 3;
    const WRITES: usize = 24;
    let mut events = Vec::new();
    for burst in 1..=BURSTS {
        let answers = futures::future::join_all(
            (0..WRITES).map(|i| app.post_task(json!({"title": format!("task {burst}.{i}")}))),
        )
        .await;
        assert!(
            answers.iter().all(|a| a.status == StatusCode::CREATED),
            "every create succeeds"
        );
        events = app.wait_for_events(burst * WRITES).await;
        assert_eq!(events.len(), burst * WRITES, "burst {burst} all published");
    }
    let mut published: Vec<&str> = events.iter().filter_map(Message::event_id).collect();
    let mut outbox: Vec<String> = app
        .db
        .query(
            "select event_id::text from outbox where user_id = $1 and delivered_at is not null",
            &[&app.user],
        )
        .await
        .expect("read the outbox")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        published.len(),
        BURSTS * WRITES,
        "each event published once"
    );
    published.sort_unstable();
    outbox.sort_unstable();
    assert_eq!(
        published, outbox,
        "what was published is what is marked delivered"
    );
}

/// A write's events are published before it answers: Spin 4.0.2 retires an instance after its
/// 128th request without waiting for work spawned after a response, and a publish cut off there
/// held its user's lease for 30 s. With a sidecar a little slow to acknowledge, every event of a
/// run of writes that crosses that retirement is out within a second of the last answer,
/// without a relay run, and none twice.
#[tokio::test]
async fn writes_across_an_instance_retirement_leave_nothing_pending_without_a_relay() {
    // Its own database: the count of pending rows is the whole outbox's.
    let app = spawn_app_with_own_database(HashMap::new()).await;
    app.dapr.set_publish_latency(Duration::from_millis(20));
    let writes = ReuseConfig::default().max_reuse + 12;
    for n in 0..writes {
        let response = app.post_task(json!({"title": format!("Write {n}")})).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    }
    let answered = Instant::now();
    let mut pending = usize::MAX;
    while answered.elapsed() < Duration::from_secs(1) {
        pending = app
            .outbox_rows()
            .await
            .iter()
            .filter(|(_, delivered)| !delivered)
            .count();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pending, 0,
        "events still pending a second after the last write"
    );
    let events = app.events();
    let ids: std::collections::HashSet<_> = events.iter().filter_map(|e| e.event_id()).collect();
    assert_eq!(ids.len(), writes, "one event per write");
    assert_eq!(events.len(), writes, "none published twice");
}
