//! The outbox's publishing statements (`todo_core::outbox`) run directly against PostgreSQL,
//! for the interleavings of two publishers that requests cannot produce on demand.

use crate::helpers::{connect, database, new_user};
use std::time::Duration;
use todo_core::outbox;
use todo_test_host::native_sql::run;
use uuid::Uuid;

async fn insert_events(db: &tokio_postgres::Client, user: &str, n: i64) -> Vec<i64> {
    db.query(
        "insert into outbox (event_id, user_id, topic, event) \
         select gen_random_uuid(), $1, 'tasks', '{}'::jsonb from generate_series(1, $2::int8) \
         returning seq",
        &[&user, &n],
    )
    .await
    .expect("insert outbox rows")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

fn seqs(rows: &[tokio_postgres::Row]) -> Vec<Option<i64>> {
    rows.iter().map(|row| row.get(0)).collect()
}

/// Runs `finish_round`: the lease's `recheck`, or `None` when the lease was not held.
async fn finish(
    db: &tokio_postgres::Client,
    user: &str,
    holder: Uuid,
    delivered: &[i64],
) -> Option<bool> {
    run(db, &outbox::finish_round(user, holder, delivered))
        .await
        .expect("finish a round")
        .first()
        .map(|row| row.get(0))
}

async fn lease(db: &tokio_postgres::Client, user: &str) -> Option<(Uuid, bool)> {
    db.query_opt(
        "select holder, recheck from outbox_leases where user_id = $1",
        &[&user],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

#[tokio::test]
async fn a_claim_racing_the_previous_holders_release_never_reads_what_it_delivered() {
    let (db_name, _) = database().await;
    let (a, b) = (connect(db_name).await, connect(db_name).await);
    let user = new_user();
    let seq = insert_events(&a, &user, 3).await;

    // A claims and reads the first two events.
    let holder_a = Uuid::now_v7();
    let claimed = run(&a, &outbox::claim_pending(&user, holder_a, 30, 2))
        .await
        .unwrap();
    assert_eq!(seqs(&claimed), vec![Some(seq[0]), Some(seq[1])]);

    // A marks them delivered and releases, but has not committed when B's claim starts: B's
    // snapshot still shows them pending, and B waits on the lease row A is deleting.
    a.batch_execute("begin").await.unwrap();
    assert_eq!(finish(&a, &user, holder_a, &seq[..2]).await, Some(false));
    let b_claim = tokio::spawn({
        let user = user.clone();
        async move {
            let rows = run(&b, &outbox::claim_pending(&user, Uuid::now_v7(), 30, 10))
                .await
                .unwrap();
            (b, seqs(&rows))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_claim.is_finished(), "B waits for A's release");
    a.batch_execute("commit").await.unwrap();

    let (_b, b_read) = b_claim.await.unwrap();
    assert_eq!(b_read, vec![Some(seq[2])], "B reads only what A left");
}

#[tokio::test]
async fn a_claim_on_a_busy_lease_hands_its_events_to_the_holder() {
    let (db_name, _) = database().await;
    let db = connect(db_name).await;
    let user = new_user();
    let holder = Uuid::now_v7();

    // Nothing pending: claimed, one row of nulls.
    let rows = run(&db, &outbox::claim_pending(&user, holder, 30, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&rows), vec![None]);
    assert_eq!(lease(&db, &user).await, Some((holder, false)));

    // A writer commits an event and finds the lease held: no row, and the lease is flagged.
    let seq = insert_events(&db, &user, 1).await;
    let busy = run(&db, &outbox::claim_pending(&user, Uuid::now_v7(), 30, 10))
        .await
        .unwrap();
    assert!(busy.is_empty(), "the lease is held");
    assert_eq!(lease(&db, &user).await, Some((holder, true)));
    assert_eq!(
        finish(&db, &user, holder, &[]).await,
        Some(true),
        "the holder learns it must go round again"
    );

    // The next round reads the event; delivering it leaves the lease clean and released.
    let next = Uuid::now_v7();
    let rows = run(&db, &outbox::claim_pending(&user, next, 30, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&rows), vec![Some(seq[0])]);
    assert_eq!(finish(&db, &user, next, &seq).await, Some(false));
    assert_eq!(finish(&db, &user, next, &seq).await, None, "released once");
    let row = db
        .query_one(
            "select delivered_at is not null, attempts from outbox where seq = $1",
            &[&seq[0]],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i32>(1)), (true, 1));
    assert_eq!(lease(&db, &user).await, None);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_releases_nothing() {
    let (db_name, _) = database().await;
    let db = connect(db_name).await;
    let user = new_user();
    let seq = insert_events(&db, &user, 1).await;
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());

    run(&db, &outbox::claim_pending(&user, old, 30, 10))
        .await
        .unwrap();
    db.execute(
        "update outbox_leases set expires_at = now() - interval '1 second', recheck = true \
         where user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    let rows = run(&db, &outbox::claim_pending(&user, new, 30, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&rows), vec![Some(seq[0])], "the event is read again");
    assert_eq!(lease(&db, &user).await, Some((new, false)));
    assert_eq!(
        finish(&db, &user, old, &[]).await,
        None,
        "not the old holder's"
    );
    assert_eq!(lease(&db, &user).await, Some((new, false)));
}
