//! The plans PostgreSQL picks for the app's statements where a wrong one reads far more than
//! it returns. Each test has a database of its own with autovacuum off on `tasks`, so the
//! statistics are exactly as old as the test makes them.

use crate::helpers::{connect, own_database};
use serde_json::Value;
use todo_core::sql::Statement;
use todo_core::tasks::{Task, store};
use todo_test_host::native_sql::{run, values};
use uuid::Uuid;

/// Tasks of the user the statistics never saw: enough that reading them all is obvious.
const UNSEEN_TASKS: i32 = 3000;
/// Buffers a statement touching one task may use (its index entries and heap page, and for a
/// write the entries of every index of `tasks`); reading every task of the user takes thousands.
const ONE_TASK_BUFFERS: u64 = 100;

/// Inserts `count` minimal tasks for `user` in one statement and returns their ids.
async fn insert_tasks(db: &tokio_postgres::Client, user: &str, count: i32) -> Vec<Uuid> {
    db.query(
        "insert into tasks (id, user_id, title, created_at, updated_at) \
         select gen_random_uuid(), $1, 'Task ' || g, now(), now() \
         from generate_series(1, $2) g returning id",
        &[&user, &count],
    )
    .await
    .expect("insert tasks")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Runs `statement` under `explain (analyze, buffers)` in a transaction that is rolled back,
/// and returns the buffers its plan touched and the rows its top node returned.
async fn measured(db: &tokio_postgres::Client, statement: &Statement) -> (u64, u64) {
    let explained = Statement {
        sql: format!("explain (analyze, buffers, format json) {}", statement.sql),
        params: statement.params.clone(),
    };
    db.batch_execute("begin").await.expect("begin");
    let rows = run(db, &explained).await.expect("explain");
    db.batch_execute("rollback").await.expect("rollback");
    let plan: Value = rows[0].get(0);
    let top = &plan[0]["Plan"];
    let count = |key: &str| {
        top[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {top}"))
    };
    (
        count("Shared Hit Blocks") + count("Shared Read Blocks"),
        count("Actual Rows"),
    )
}

/// Every statement finds a task by user and id. With statistics taken before a user's tasks
/// arrived, PostgreSQL takes that user for one with a single task; a key of `id` alone then
/// let it reach the task through an index on `user_id` and read every task of the user (a
/// bench run's reads took 2,900 buffers instead of 3). The key `(user_id, id)` makes the exact
/// lookup the cheapest plan whatever the statistics say.
#[tokio::test]
async fn a_task_is_found_by_id_without_reading_its_user_s_other_tasks() {
    let name = own_database().await;
    let db = connect(&name).await;
    db.batch_execute("alter table tasks set (autovacuum_enabled = false)")
        .await
        .expect("autovacuum off");
    insert_tasks(&db, "known", 1000).await;
    db.batch_execute("analyze tasks").await.expect("analyze");
    let ids = insert_tasks(&db, "unseen", UNSEEN_TASKS).await;
    let id = ids[ids.len() * 2 / 3];

    let get = store::get("unseen", id);
    let (buffers, found) = measured(&db, &get).await;
    assert_eq!(found, 1, "the get finds the task");
    assert!(
        buffers < ONE_TASK_BUFFERS,
        "a get by id touched {buffers} buffers"
    );

    let rows = run(&db, &get).await.expect("get");
    let task: Task = store::decode(&values(&rows[0]).expect("values")).expect("a task");
    for (what, statement) in [
        ("update", store::update(&task, task.version, &[], None)),
        ("delete", store::delete(&task, task.version, &[], None)),
    ] {
        let (buffers, _) = measured(&db, &statement).await;
        assert!(
            buffers < ONE_TASK_BUFFERS,
            "an {what} by id touched {buffers} buffers"
        );
    }
}
