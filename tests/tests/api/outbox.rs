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

async fn more_due(
    db: &tokio_postgres::Client,
    user: &str,
    holder: Uuid,
    delivered: &[i64],
) -> bool {
    run(db, &outbox::finish_round(user, holder, delivered))
        .await
        .expect("finish a round")[0]
        .get(0)
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
    assert!(
        more_due(&a, &user, holder_a, &seq[..2]).await,
        "the third is due"
    );
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
async fn a_claim_is_busy_while_held_and_empty_when_nothing_is_due() {
    let (db_name, _) = database().await;
    let db = connect(db_name).await;
    let user = new_user();
    let holder = Uuid::now_v7();

    // Nothing pending: claimed, one row of nulls.
    let rows = run(&db, &outbox::claim_pending(&user, holder, 30, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&rows), vec![None]);
    // Held: another holder gets no row at all.
    let seq = insert_events(&db, &user, 1).await;
    let busy = run(&db, &outbox::claim_pending(&user, Uuid::now_v7(), 30, 10))
        .await
        .unwrap();
    assert!(busy.is_empty(), "the lease is held");
    assert!(
        more_due(&db, &user, holder, &[]).await,
        "the new event is due"
    );

    // Released: the next holder reads it, and delivering it leaves nothing due.
    let next = Uuid::now_v7();
    let rows = run(&db, &outbox::claim_pending(&user, next, 30, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&rows), vec![Some(seq[0])]);
    assert!(!more_due(&db, &user, next, &seq).await);
    let row = db
        .query_one(
            "select delivered_at is not null, attempts, \
             (select count(*) from outbox_leases where user_id = $1) \
             from outbox where seq = $2",
            &[&user, &seq[0]],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, i32>(1),
            row.get::<_, i64>(2)
        ),
        (true, 1, 0),
        "delivered once, lease released"
    );
}
