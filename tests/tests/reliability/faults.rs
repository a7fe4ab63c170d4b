//! Faults underneath the app: PostgreSQL stopped mid-load, the sidecar refusing, hanging and
//! failing, and Dapr's duplicate and reordered deliveries.

use crate::support::{
    JWT_SECRET, PUBLISH_TIMEOUT_MS, PrivatePostgres, Tally, TestApp, connect, database_url, held,
    new_user, runtime, serial, spawn_app, spawn_app_on, token,
};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use todo_test_host::ReuseConfig;
use todo_test_host::dapr::Mode;
use uuid::Uuid;

const WORKERS: usize = 16;

/// Phases of the outage check.
const BEFORE: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

struct Outcome {
    phase: u8,
    kind: &'static str,
    status: Option<StatusCode>,
    problem: bool,
    at: Instant,
}

/// Each worker creates a task and then edits it, over and over, recording every answer.
async fn outage_worker(
    app: Arc<TestApp>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
    created: Arc<Mutex<Vec<Uuid>>>,
) {
    let user = new_user("outage");
    let auth = token(&user, 3600, JWT_SECRET);
    let base = format!("/api/{user}/tasks");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let at_phase = phase.load(Ordering::SeqCst);
        let body = json!({"title": format!("Outage task {n}"), "tags": ["outage"]});
        let answer = app.call(Method::POST, &base, &auth, Some(&body)).await;
        let id = answer
            .as_ref()
            .filter(|a| a.status == StatusCode::CREATED)
            .and_then(|a| {
                a.json()["id"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
            });
        let record = |kind, answer: &Option<crate::support::Answer>| Outcome {
            phase: at_phase,
            kind,
            status: answer.as_ref().map(|a| a.status),
            problem: answer.as_ref().is_some_and(|a| a.is_problem()),
            at: Instant::now(),
        };
        let outcome = record("create", &answer);
        log.lock().unwrap_or_else(|p| p.into_inner()).push(outcome);
        let Some(id) = id else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        created.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        let patch = json!({"priority": "high", "description": format!("edit {n}")});
        let answer = app
            .call(Method::PATCH, &format!("{base}/{id}"), &auth, Some(&patch))
            .await;
        let outcome = record("patch", &answer);
        log.lock().unwrap_or_else(|p| p.into_inner()).push(outcome);
    }
}

#[test]
fn postgres_stopped_mid_load_answers_503_and_service_resumes_by_itself() {
    let _one_at_a_time = serial();
    runtime().block_on(async {
        let server = PrivatePostgres::start().await;
        server.create_database("todo").await;
        let app = Arc::new(spawn_app_on(server.port, "todo", PUBLISH_TIMEOUT_MS, ReuseConfig::default()).await);
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let created = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                tokio::spawn(outage_worker(
                    app.clone(),
                    phase.clone(),
                    stop.clone(),
                    log.clone(),
                    created.clone(),
                ))
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(1500)).await;
        phase.store(DOWN, Ordering::SeqCst);
        assert!(server.stop().await, "pg_ctl stop failed");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(server.start_again().await, "pg_ctl start failed");
        let restarted = Instant::now();
        phase.store(BACK, Ordering::SeqCst);
        // Service must resume by itself: wait for plenty of successes after the restart.
        let deadline = restarted + Duration::from_secs(30);
        loop {
            let ok_after = log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|o| o.phase == BACK && o.status.is_some_and(|s| s.is_success()))
                .count();
            if ok_after >= 100 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("a worker panicked");
        }

        let log = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
        let unanswered = log.iter().filter(|o| o.status.is_none()).count();
        assert_eq!(unanswered, 0, "requests left without an answer");
        let unexpected: Vec<String> = log
            .iter()
            .filter_map(|o| {
                let status = o.status?;
                let fine = status.is_success() || (status == StatusCode::SERVICE_UNAVAILABLE && o.problem);
                (!fine).then(|| format!("{} in phase {}: {status} (problem+json: {})", o.kind, o.phase, o.problem))
            })
            .collect();
        assert!(unexpected.is_empty(), "{unexpected:?}");
        let unavailable = log.iter().filter(|o| o.status == Some(StatusCode::SERVICE_UNAVAILABLE)).count();
        assert!(unavailable > 0, "no request noticed the outage");
        for p in [BEFORE, BACK] {
            assert!(
                log.iter().any(|o| o.phase == p && o.status.is_some_and(|s| s.is_success())),
                "no success in phase {p}"
            );
        }
        let back_after = log
            .iter()
            .filter(|o| o.phase == BACK && o.status.is_some_and(|s| s.is_success()))
            .map(|o| o.at.duration_since(restarted))
            .min()
            .expect("a success after the restart");
        let ok_after = log
            .iter()
            .filter(|o| o.phase == BACK && o.status.is_some_and(|s| s.is_success()))
            .count();
        assert!(ok_after >= 100, "only {ok_after} successes in 30 s after the restart");

        // No partial write: every task has its created event and one update event per edit,
        // and every task the API reported created exists. (The restart closed the test's own
        // connection too.)
        let db = connect(&database_url(server.port, "todo")).await;
        let rows = db
            .query(
                "select t.id, t.version, \
                 (select count(*) from outbox o where o.event->>'subject' = t.id::text \
                  and o.event->>'type' = 'task.created'), \
                 (select count(*) from outbox o where o.event->>'subject' = t.id::text \
                  and o.event->>'type' = 'task.updated') \
                 from tasks t",
                &[],
            )
            .await
            .expect("read tasks and their events");
        for row in &rows {
            let (id, version, created_events, updated_events): (Uuid, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            assert_eq!(created_events, 1, "task.created of {id}");
            assert_eq!(updated_events, version - 1, "task.updated of {id} at version {version}");
        }
        let orphans: i64 = db
            .query_one(
                "select count(*) from outbox o where o.event->>'type' = 'task.created' \
                 and not exists (select 1 from tasks t where t.id::text = o.event->>'subject')",
                &[],
            )
            .await
            .expect("count orphan events")
            .get(0);
        assert_eq!(orphans, 0, "events of tasks that were not written");
        let stored: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let created = created.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(created.iter().all(|id| stored.contains(id)), "a 201 without its row");

        held(
            1,
            format!("PostgreSQL outage ({unavailable} x 503, 0 x 500, no partial write, recovered)"),
            format!(
            "PostgreSQL stopped mid-load under {} requests ({unavailable} answered 503 problem+json, none 500 or unanswered, no partial write, service back {:.2} s after restart)",
            log.len(),
            back_after.as_secs_f64()
        ),
        );
    });
}

#[test]
fn sidecar_down_hanging_or_failing_fails_no_task_request_and_loses_no_event() {
    let _one_at_a_time = serial();
    runtime().block_on(async {
        let app = Arc::new(spawn_app().await);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let users: Vec<String> = (0..WORKERS).map(|_| new_user("sidecar")).collect();
        let workers: Vec<_> = users
            .iter()
            .cloned()
            .map(|user| {
                let (app, stop, tally) = (app.clone(), stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let auth = token(&user, 3600, JWT_SECRET);
                    let base = format!("/api/{user}/tasks");
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = json!({"title": format!("Sidecar task {n}")});
                        let created = app.call(Method::POST, &base, &auth, Some(&body)).await;
                        let id = match &created {
                            Some(a) if a.status == StatusCode::CREATED => a.json()["id"].as_str().map(str::to_owned),
                            other => {
                                tally.add(format!("create failed: {:?}", other.as_ref().map(|a| a.status)));
                                None
                            }
                        };
                        tally.add("requests");
                        let Some(id) = id else { continue };
                        for (method, path, body) in [
                            (Method::PATCH, format!("{base}/{id}"), Some(json!({"priority": "low"}))),
                            (Method::PATCH, format!("{base}/{id}/complete"), None),
                        ] {
                            let answer = app.call(method, &path, &auth, body.as_ref()).await;
                            tally.add("requests");
                            if answer.as_ref().is_none_or(|a| a.status != StatusCode::OK) {
                                tally.add(format!("edit failed: {:?}", answer.as_ref().map(|a| a.status)));
                            }
                        }
                    }
                })
            })
            .collect();

        for mode in [Mode::Refuse, Mode::Hang, Mode::Fail500] {
            tokio::time::sleep(Duration::from_millis(700)).await;
            app.dapr.set_mode(mode).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            app.dapr.set_mode(Mode::Healthy).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("a worker panicked");
        }
        let counts = tally.snapshot();
        let failed: Vec<_> = counts.iter().filter(|(k, _)| k.contains("failed")).collect();
        assert!(failed.is_empty(), "task requests failed while the sidecar did: {failed:?}");

        app.relay_until_delivered(&users).await;
        let outbox = app.outbox_events(&users).await;
        let deliveries = app.deliveries();
        let events: Vec<&String> = outbox.values().flatten().collect();
        let missing: Vec<&&String> = events.iter().filter(|e| !deliveries.contains_key(e.as_str())).collect();
        assert!(missing.is_empty(), "{} of {} events never delivered", missing.len(), events.len());
        let repeated = events.iter().filter(|e| deliveries.get(e.as_str()).copied().unwrap_or(0) > 1).count();
        held(
            2,
            "3 sidecar fault modes (0 failed requests, 0 lost events)".to_owned(),
            format!(
            "sidecar refused, hung and answered 500 during {} task requests (0 failed, all {} events delivered after recovery, {repeated} more than once)",
            tally.get("requests"),
            events.len()
        ),
        );
    });
}

/// A recurring task completed through the API, and its `task.completed` event as stored for
/// the sidecar to deliver.
async fn completed_recurring(app: &TestApp, user: &str, auth: &str, n: usize) -> Value {
    let base = format!("/api/{user}/tasks");
    let body = json!({"title": format!("Recurring {n}"), "due_at": "2026-03-02T08:00:00Z",
                      "recurrence": {"frequency": *["daily", "weekly", "monthly"].get(n % 3).unwrap_or(&"daily")}});
    let created = app
        .call(Method::POST, &base, auth, Some(&body))
        .await
        .expect("an answer");
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["id"].as_str().expect("an id").to_owned();
    let done = app
        .call(Method::PATCH, &format!("{base}/{id}/complete"), auth, None)
        .await
        .expect("an answer");
    assert_eq!(done.status, StatusCode::OK);
    app.db
        .query_one(
            "select event from outbox where user_id = $1 and event->>'type' = 'task.completed' \
             and event->>'subject' = $2",
            &[&user, &id],
        )
        .await
        .expect("the task.completed event")
        .get(0)
}

/// The users' tasks and outbox, to compare before and after redeliveries.
async fn snapshot(app: &TestApp, users: &[String]) -> (Vec<String>, i64) {
    let tasks = app
        .db
        .query(
            "select concat_ws('|', user_id, id, title, completed, version, coalesce(series_id, id), occurrence) \
             from tasks where user_id = any($1) order by 1",
            &[&users],
        )
        .await
        .expect("read tasks")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let outbox: i64 = app
        .db
        .query_one(
            "select count(*) from outbox where user_id = any($1)",
            &[&users],
        )
        .await
        .expect("count outbox rows")
        .get(0);
    (tasks, outbox)
}

async fn deliver(app: &TestApp, event: &Value) -> String {
    let answer = app
        .send(
            Method::POST,
            "/api/events/tasks",
            &[
                ("content-type", "application/cloudevents+json"),
                ("dapr-api-token", app.app_token.as_str()),
            ],
            Bytes::from(event.to_string()),
        )
        .await
        .expect("the intake answers");
    // Dapr's reading: an empty 2xx is SUCCESS, a 200 body names RETRY or DROP.
    if answer.status == StatusCode::NO_CONTENT && answer.body.is_empty() {
        return "SUCCESS".to_owned();
    }
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()["status"].as_str().unwrap_or("").to_owned()
}

#[test]
fn duplicate_and_reordered_deliveries_change_nothing() {
    let _one_at_a_time = serial();
    runtime().block_on(async {
        let app = spawn_app().await;
        if !app.has_intake {
            held(
                3,
                "redeliveries skipped (no event-intake)".to_owned(),
                "duplicate and reordered deliveries: skipped, spin.toml routes nothing to event-intake".to_owned(),
            );
            return;
        }
        let users: Vec<String> = (0..6).map(|_| new_user("redeliver")).collect();
        let mut events = Vec::new();
        for user in &users {
            let auth = token(user, 3600, JWT_SECRET);
            for n in 0..3 {
                events.push(completed_recurring(&app, user, &auth, n).await);
            }
        }
        // First pass: every event twice, interleaved, last first.
        let mut first: Vec<&Value> = events.iter().rev().chain(events.iter()).collect();
        first.rotate_left(events.len() / 2);
        let answers = futures::future::join_all(first.iter().map(|e| deliver(&app, e))).await;
        assert!(answers.iter().all(|a| a == "SUCCESS"), "{answers:?}");
        let settled = snapshot(&app, &users).await;
        let series: i64 = app
            .db
            .query_one("select count(*) from tasks where user_id = any($1) and occurrence = 1", &[&users])
            .await
            .expect("count next occurrences")
            .get(0);
        assert_eq!(series as usize, events.len(), "one next occurrence per completed task");

        // Again, in order and reversed: nothing changes.
        for event in events.iter().chain(events.iter().rev()) {
            assert_eq!(deliver(&app, event).await, "SUCCESS");
        }
        assert_eq!(snapshot(&app, &users).await, settled, "redeliveries changed rows");
        held(
            3,
            format!("{} duplicate and reordered deliveries (no change)", events.len() * 4),
            format!(
            "{} task.completed events delivered 4 times each, duplicated and reordered (one next occurrence each, rows unchanged by redelivery)",
            events.len()
        ),
        );
    });
}

/// With PostgreSQL really stopped, a delivery is answered RETRY (Dapr redelivers later) and
/// changes nothing; once the server is back, the redelivery succeeds by itself and creates the
/// next occurrence exactly once.
#[test]
fn the_intake_answers_retry_while_postgres_is_stopped_and_succeeds_once_it_is_back() {
    let _one_at_a_time = serial();
    runtime().block_on(async {
        let server = PrivatePostgres::start().await;
        server.create_database("todo").await;
        let app = spawn_app_on(
            server.port,
            "todo",
            PUBLISH_TIMEOUT_MS,
            ReuseConfig::default(),
        )
        .await;
        let user = new_user("retry");
        let auth = token(&user, 3600, JWT_SECRET);
        let event = completed_recurring(&app, &user, &auth, 0).await;

        assert!(server.stop().await, "pg_ctl stop failed");
        assert_eq!(deliver(&app, &event).await, "RETRY", "database down");
        assert!(server.start_again().await, "pg_ctl start failed");
        let mut status = String::new();
        for _ in 0..50 {
            status = deliver(&app, &event).await;
            if status == "SUCCESS" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, "SUCCESS", "redelivery once the database is back");
        assert_eq!(
            deliver(&app, &event).await,
            "SUCCESS",
            "and again: already handled"
        );

        let db = connect(&format!(
            "postgres://postgres@127.0.0.1:{}/todo",
            server.port
        ))
        .await;
        let next: i64 = db
            .query_one(
                "select count(*) from tasks where user_id = $1 and occurrence = 1",
                &[&user],
            )
            .await
            .expect("count next occurrences")
            .get(0);
        assert_eq!(next, 1, "exactly one next occurrence");
        held(
            1,
            "intake RETRY while PostgreSQL was stopped".into(),
            "intake answered RETRY while PostgreSQL was stopped and SUCCESS after restart (one next occurrence)".into(),
        );
    });
}
