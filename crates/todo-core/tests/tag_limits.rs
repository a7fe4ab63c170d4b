//! Every place tags come in (a task body, an event delivery, the list filter) refuses more than
//! ten of them at once: the largest input each accepts, full of distinct tags, is answered in
//! milliseconds, not the seconds that comparing every tag with every other one took.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use todo_core::events::EventContext;
use todo_core::intake::{self, MAX_DELIVERY_BYTES, Topic};
use todo_core::tasks::input::MAX_BODY_BYTES;
use todo_core::tasks::{ListQuery, Task, TaskChanges, UserId, parse_create};
use uuid::Uuid;

/// Loose enough for a loaded machine, far below the quadratic cost (seconds for 10 000 tags,
/// minutes for a mebibyte). Reading a mebibyte of JSON takes about 0.1 s in a release build.
const BOUND: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(5)
} else {
    Duration::from_millis(500)
};

/// `n` distinct tags of letters and digits, `width` characters each.
fn distinct_tags(n: usize, width: u32) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|i| {
            (0..width)
                .rev()
                .map(|place| char::from(ALPHABET[i / 36usize.pow(place) % 36]))
                .collect()
        })
        .collect()
}

fn timed<T>(what: &str, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = run();
    let took = started.elapsed();
    assert!(took < BOUND, "{what} took {took:?}");
    out
}

#[test]
fn a_task_body_of_ten_thousand_distinct_tags_is_refused_fast() {
    let body =
        serde_json::to_vec(&json!({"title": "t", "tags": distinct_tags(10_000, 3)})).expect("json");
    assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());

    let error = timed("parse_create", || parse_create(&body)).expect_err("too many tags");

    assert_eq!(error.status(), 422);
    let problem = serde_json::to_value(error.to_problem(None)).expect("json");
    assert_eq!(problem["errors"][0]["field"], "tags", "{problem}");
}

#[test]
fn a_list_filter_of_ten_thousand_distinct_tags_is_refused_fast() {
    let query = format!("tags={}", distinct_tags(10_000, 3).join(","));

    let error = timed("ListQuery::parse", || ListQuery::parse(&query)).expect_err("too many");

    assert_eq!(error.status(), 422);
}

#[test]
fn a_delivery_of_a_mebibyte_of_distinct_tags_is_refused_fast() {
    let now: DateTime<Utc> = DateTime::UNIX_EPOCH;
    let task = Task::create(
        Uuid::now_v7(),
        &UserId::parse("alice").expect("user"),
        TaskChanges {
            title: Some("t".into()),
            ..TaskChanges::default()
        },
        now,
    );
    let done = TaskChanges {
        completed: Some(true),
        ..TaskChanges::default()
    };
    let (done, changed) = task.apply(&done, now);
    let context = EventContext {
        source: "/todo-spin/tasks".into(),
        topic: "tasks".into(),
        traceparent: None,
    };
    let mut event: Value = context.for_change(&done, &changed, now)[0].event.clone();
    assert_eq!(event["type"], "task.completed");
    // As many distinct tags as fit in the largest delivery the intake reads.
    let tags = distinct_tags(150_000, 4);
    let mut fitting = tags.len();
    loop {
        event["data"]["task"]["tags"] = json!(tags[..fitting]);
        let size = serde_json::to_vec(&event).expect("json").len();
        if size <= MAX_DELIVERY_BYTES {
            break;
        }
        fitting -= (size - MAX_DELIVERY_BYTES) / 7 + 1;
    }
    assert!(fitting > 100_000, "{fitting} tags");
    let body = serde_json::to_vec(&event).expect("json");

    let rejected = timed("intake::parse", || {
        intake::parse(Topic::Tasks, Some("application/cloudevents+json"), &body)
    })
    .expect_err("too many tags");

    assert!(rejected.0.contains("tags"), "{}", rejected.0);
}
