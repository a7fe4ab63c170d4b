//! Delivery under partial failure: per-user order when the sidecar refuses one event, backoff
//! of the failing head only, poison events parked so a user's later events flow, and a relay
//! whose timeout and lease fit its work.

use crate::helpers::{TestApp, spawn_app_with, spawn_app_with_own_database, unused_port};
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use todo_core::outbox::REQUEUE_DEAD;
use todo_test_host::ReuseConfig;
use todo_test_host::dapr::{Fault, Mode};

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("id").to_owned()
}

/// The user's outbox as (seq, event id, delivered, dead), in order.
async fn outbox(app: &TestApp) -> Vec<(i64, String, bool, bool)> {
    app.db
        .query(
            "select seq, event_id::text, delivered_at is not null, dead_at is not null \
             from outbox where user_id = $1 order by seq",
            &[&app.user],
        )
        .await
        .expect("read the outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The event ids the sidecar double accepted for the user, in arrival order.
fn accepted(app: &TestApp) -> Vec<String> {
    app.events()
        .iter()
        .filter_map(|m| m.event_id().map(str::to_owned))
        .collect()
}

/// Waits for the writer's post-response publishing to have tried and given up (the head
/// failed once against the closed port, the lease is released), then makes the user's queue
/// due at once, skipping the backoff that failure began.
async fn make_due(app: &TestApp) {
    for _ in 0..250 {
        let settled: bool = app
            .db
            .query_one(
                "select not exists (select 1 from outbox_leases where user_id = $1) \
                 and (select attempts from outbox where user_id = $1 order by seq limit 1) >= 1",
                &[&app.user],
            )
            .await
            .expect("read the lease")
            .get(0);
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.db
        .execute(
            "update outbox set next_attempt_at = now() where user_id = $1",
            &[&app.user],
        )
        .await
        .expect("make the queue due");
}

/// One task and three edits written while no sidecar listens: four pending events, due.
async fn four_pending_events(writer: &TestApp) -> Vec<String> {
    let id = id_of(&writer.create(json!({"title": "draft"})).await);
    for n in 1..=3 {
        let edited = writer
            .patch_task(&id, json!({"description": format!("rev {n}")}))
            .await;
        assert_eq!(edited.status, StatusCode::OK);
    }
    make_due(writer).await;
    let rows = outbox(writer).await;
    assert_eq!(rows.len(), 4);
    rows.into_iter().map(|(_, id, _, _)| id).collect()
}

/// Two apps on a database of their own (the relay serves every user of its database, and
/// whether a sidecar "works" is judged by any delivery there): a writer whose sidecar is
/// unreachable, so its events stay pending, and a relay with the sidecar double and `vars`,
/// acting as the writer's user.
async fn writer_and_relay(vars: &[(&str, &str)]) -> (TestApp, TestApp) {
    let nowhere = unused_port().to_string();
    let writer =
        spawn_app_with_own_database(HashMap::from([("dapr_http_port".to_owned(), nowhere)])).await;
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    vars.insert("db_name".to_owned(), writer.db_name.clone());
    let mut relay = spawn_app_with(vars, ReuseConfig::default()).await;
    relay.user = writer.user.clone();
    relay.db = writer.db.clone();
    relay.db_name = writer.db_name.clone();
    (writer, relay)
}

#[tokio::test]
async fn a_refused_event_holds_back_its_successors_so_consumers_see_outbox_order() {
    let (writer, relay) = writer_and_relay(&[]).await;
    let ids = four_pending_events(&writer).await;

    // The sidecar refuses the second event: nothing after it may go out before it.
    relay.dapr.set_fault(Fault::event_ids([ids[1].clone()]));
    let first = relay.relay().await;
    assert_eq!(first["delivered"], 1, "{first}");
    assert_eq!(first["failed_users"], 1, "{first}");
    assert_eq!(
        accepted(&relay),
        ids[..1],
        "nothing overtook the refused event"
    );

    // Once the sidecar takes it, the rest follows in order, each event exactly once.
    relay.dapr.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = relay.relay().await;
    assert_eq!(second["delivered"], 3, "{second}");
    assert_eq!(accepted(&relay), ids);
    assert!(
        relay
            .dapr
            .messages()
            .iter()
            .all(|m| m.via == todo_test_host::dapr::Via::Publish),
        "one publish per event: a bulk publish has no order"
    );
    assert!(
        outbox(&relay)
            .await
            .iter()
            .all(|(_, _, delivered, _)| *delivered)
    );
}

#[tokio::test]
async fn new_writes_do_not_make_a_failing_head_due_before_its_backoff() {
    let (writer, app) = writer_and_relay(&[]).await;
    let id = id_of(&writer.create(json!({"title": "head"})).await);
    make_due(&writer).await;
    app.dapr.set_mode(Mode::Fail500).await;
    let failed = app.relay().await;
    assert_eq!(failed["failed_users"], 1, "{failed}");
    let attempts_after_failure = app.dapr.publish_attempts();

    // Writes inside the head's one-second backoff: their own publishing finds nothing due.
    for n in 0..5 {
        let edited = app
            .patch_task(&id, json!({"description": format!("edit {n}")}))
            .await;
        assert_eq!(edited.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.dapr.publish_attempts(),
        attempts_after_failure,
        "no publish was tried while the head backs off"
    );
    let head_attempts: i32 = app
        .db
        .query_one(
            "select attempts from outbox where user_id = $1 order by seq limit 1",
            &[&app.user],
        )
        .await
        .expect("the head")
        .get(0);
    assert_eq!(
        head_attempts, 2,
        "the writer's failure against the closed port, the relay's, and none by the writes"
    );
}

#[tokio::test]
async fn a_poison_event_is_parked_after_its_attempts_and_the_users_later_events_flow() {
    let (writer, relay) = writer_and_relay(&[("outbox_max_attempts", "2")]).await;
    let ids = four_pending_events(&writer).await;
    let poison = ids[1].clone();
    relay.dapr.set_fault(Fault::event_ids([poison.clone()]));

    // Attempt 1: the head before it goes out, the poison event fails and backs off.
    relay.relay().await;
    assert_eq!(accepted(&relay), ids[..1]);
    // Attempt 2, after the backoff: the sidecar delivered an event since the first failure,
    // so the fault is the event's. It is parked and the two behind it go out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let parked = relay.relay().await;
    assert_eq!(parked["parked"], 1, "{parked}");
    assert_eq!(parked["dead"], 1, "{parked}");
    assert_eq!(parked["delivered"], 2, "{parked}");
    assert_eq!(
        accepted(&relay),
        [ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    let rows = outbox(&relay).await;
    assert_eq!(
        rows.iter().map(|r| (r.2, r.3)).collect::<Vec<_>>(),
        [(true, false), (false, true), (true, false), (true, false)],
        "the poison event is kept, parked; the others are delivered"
    );

    // Requeued by the documented statement, it goes out once the sidecar takes it.
    relay.dapr.set_fault(Fault::None);
    let requeued = relay
        .db
        .execute(&format!("{REQUEUE_DEAD} and user_id = $1"), &[&relay.user])
        .await
        .expect("requeue");
    assert_eq!(requeued, 1);
    let last = relay.relay().await;
    assert_eq!(last["delivered"], 1, "{last}");
    assert_eq!(last["dead"], 0, "{last}");
    assert_eq!(accepted(&relay).last(), Some(&poison));
}

#[tokio::test]
async fn an_outage_parks_nothing_however_often_it_fails() {
    let (writer, relay) = writer_and_relay(&[("outbox_max_attempts", "1")]).await;
    four_pending_events(&writer).await;
    relay.dapr.set_mode(Mode::Fail500).await;
    let failed = relay.relay().await;
    assert_eq!(failed["parked"], 0, "{failed}");
    assert!(
        outbox(&relay)
            .await
            .iter()
            .all(|(_, _, d, dead)| !d && !dead),
        "nothing got through, so the fault is the sidecar's: every event waits"
    );
}

#[tokio::test]
async fn the_relay_has_a_timeout_of_its_own_and_delivers_what_requests_could_not() {
    // Requests give the sidecar 100 ms, the relay 5 s; the broker takes 400 ms to answer.
    let (_, app) = writer_and_relay(&[
        ("publish_timeout_ms", "100"),
        ("relay_publish_timeout_ms", "5000"),
    ])
    .await;
    app.dapr.set_publish_latency(Duration::from_millis(400));
    let id = id_of(&app.create(json!({"title": "slow broker"})).await);
    let edited = app.patch_task(&id, json!({"priority": "high"})).await;
    assert_eq!(edited.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let relayed = app.relay().await;
    assert_eq!(relayed["failed_users"], 0, "{relayed}");
    assert!(
        outbox(&app)
            .await
            .iter()
            .all(|(_, _, delivered, _)| *delivered),
        "one relay call delivered everything: {relayed}"
    );
    let distinct: BTreeSet<String> = accepted(&app).into_iter().collect();
    assert_eq!(distinct.len(), 2);
}

#[tokio::test]
async fn a_relay_timeout_that_cannot_fit_the_lease_is_refused() {
    let (_, app) = writer_and_relay(&[("relay_publish_timeout_ms", "20000")]).await;
    app.create(json!({"title": "x"})).await;
    let answer = app
        .send_as_sidecar(http::Method::POST, "/outbox-relay", &[], "")
        .await;
    answer.problem(500);
}
