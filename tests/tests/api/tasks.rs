//! The task API end to end: every endpoint, filter, sort, pagination, error status and
//! cross-user isolation, asserting status, headers, body and the rows in PostgreSQL.

use crate::helpers::{
    JWT_SECRET, TestApp, new_user, spawn_app, spawn_app_with_own_database, spawn_app_with_var,
    token_for, unused_port,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task has an id").to_owned()
}

#[tokio::test]
async fn create_returns_201_with_location_etag_and_a_stored_row() {
    let app = spawn_app().await;

    let response = app
        .post_task(json!({
            "title": "  Buy milk ", "description": "2 litres", "priority": "high",
            "tags": ["Home", " home ", "", "Errands"], "due_at": "2026-05-01T09:30:00+02:00"
        }))
        .await;

    assert_eq!(response.status, StatusCode::CREATED);
    let task = response.json();
    let id = id_of(&task);
    assert_eq!(Uuid::parse_str(&id).expect("uuid").get_version_num(), 7);
    assert_eq!(
        response.header("location"),
        Some(format!("{}/{id}", app.tasks_path()).as_str())
    );
    assert_eq!(response.header("etag"), Some("\"1\""));
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["tags"], json!(["Home", "Errands"]));
    assert_eq!(task["priority"], "high");
    assert_eq!(
        task["due_at"], "2026-05-01T07:30:00Z",
        "converted to UTC, not truncated"
    );
    assert_eq!(task["completed"], false);
    assert_eq!(task["completed_at"], Value::Null);
    let row = app
        .db
        .query_one(
            "select title, priority, tags, tag_keys, to_char(due_at at time zone 'UTC', 'HH24:MI') \
             from tasks where id = $1 and user_id = $2",
            &[&Uuid::parse_str(&id).expect("uuid"), &app.user],
        )
        .await
        .expect("row stored");
    assert_eq!(row.get::<_, String>(0), "Buy milk");
    assert_eq!(row.get::<_, i16>(1), 3);
    assert_eq!(row.get::<_, Vec<String>>(2), vec!["Home", "Errands"]);
    assert_eq!(row.get::<_, Vec<String>>(3), vec!["home", "errands"]);
    assert_eq!(row.get::<_, String>(4), "07:30");
}

#[tokio::test]
async fn get_returns_the_task_and_404_for_unknown_or_malformed_ids() {
    let app = spawn_app().await;
    let task = app.create(json!({"title": "Read"})).await;

    let found = app.get_task(&id_of(&task)).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json(), task);
    assert_eq!(found.header("etag"), Some("\"1\""));

    app.get_task(&Uuid::now_v7().to_string()).await.problem(404);
    app.get_task("not-a-uuid").await.problem(404);
}

#[tokio::test]
async fn put_replaces_every_field_and_resets_the_ones_left_out() {
    let app = spawn_app().await;
    let task = app
        .create(
            json!({"title": "Old", "description": "d", "priority": "low", "tags": ["a"],
                       "due_at": "2026-01-01T00:00:00Z"}),
        )
        .await;
    let id = id_of(&task);

    let response = app
        .put_task(&id, json!({"title": "New", "priority": "high"}))
        .await;

    assert_eq!(response.status, StatusCode::OK);
    let updated = response.json();
    assert_eq!(updated["title"], "New");
    assert_eq!(updated["priority"], "high");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["tags"], json!([]));
    assert_eq!(updated["due_at"], Value::Null);
    assert_eq!(updated["created_at"], task["created_at"]);
    assert_ne!(updated["updated_at"], task["updated_at"]);
    assert_eq!(response.header("etag"), Some("\"2\""));
    assert_eq!(app.task_rows().await[0].1, "New");

    app.put_task(&id, json!({"priority": "high"}))
        .await
        .problem(422);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields_and_null_clears() {
    let app = spawn_app().await;
    let task = app
        .create(
            json!({"title": "Keep", "description": "drop me", "tags": ["x"], "priority": "low"}),
        )
        .await;
    let id = id_of(&task);

    let patched = app
        .patch_task(&id, json!({"description": null, "priority": "medium"}))
        .await;

    assert_eq!(patched.status, StatusCode::OK);
    let patched = patched.json();
    assert_eq!(patched["title"], "Keep");
    assert_eq!(patched["tags"], json!(["x"]));
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["priority"], "medium");

    // A patch that changes nothing writes nothing.
    let same = app.patch_task(&id, json!({"title": "Keep"})).await;
    assert_eq!(same.header("etag"), Some("\"2\""));
    assert_eq!(
        app.task_rows().await[0].3,
        2,
        "version unchanged by a no-op"
    );

    let problem = app
        .patch_task(&id, json!({"title": null}))
        .await
        .problem(422);
    assert_eq!(problem["errors"][0]["field"], "title");
}

#[tokio::test]
async fn delete_returns_204_removes_the_row_and_then_404() {
    let app = spawn_app().await;
    let id = id_of(&app.create(json!({"title": "Gone soon"})).await);

    let response = app.delete_task(&id).await;

    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(response.body.is_empty());
    assert!(app.task_rows().await.is_empty());
    app.delete_task(&id).await.problem(404);
    app.get_task(&id).await.problem(404);
}

#[tokio::test]
async fn complete_toggles_with_patch_or_post_and_sets_from_the_body() {
    let app = spawn_app().await;
    let id = id_of(&app.create(json!({"title": "Done?"})).await);
    let path = format!("{}/{id}/complete", app.tasks_path());

    let done = app.call(Method::PATCH, &path, None).await.json();
    assert_eq!(done["completed"], true);
    assert!(done["completed_at"].is_string());

    let undone = app.call(Method::POST, &path, None).await.json();
    assert_eq!(undone["completed"], false);
    assert_eq!(undone["completed_at"], Value::Null);

    let set = app
        .complete(&id, Some(json!({"completed": true})))
        .await
        .json();
    assert_eq!(set["completed"], true);
    let again = app
        .complete(&id, Some(json!({"completed": true})))
        .await
        .json();
    assert_eq!(
        again["completed_at"], set["completed_at"],
        "setting the same state is a no-op"
    );
    let rows = app.task_rows().await;
    assert!(rows[0].2);

    app.complete(&id, Some(json!({"completed": "yes"})))
        .await
        .problem(422);
    app.call(Method::GET, &path, None).await.problem(405);
}

#[tokio::test]
async fn list_filters_by_keyword_status_priority_tags_and_due_dates() {
    let app = spawn_app().await;
    let a = app
        .create(
            json!({"title": "Write report", "priority": "high", "tags": ["Work"],
                              "due_at": "2026-03-01T10:00:00Z"}),
        )
        .await;
    let b = app
        .create(
            json!({"title": "Buy bread", "description": "Bakery REPORT", "priority": "low",
                              "tags": ["home"], "due_at": "2026-03-05T10:00:00Z"}),
        )
        .await;
    let c = app
        .create(json!({"title": "Call mum", "priority": "medium", "tags": ["family", "HOME"]}))
        .await;
    app.complete(&id_of(&c), None).await;

    let ids = |response: crate::helpers::TestResponse| -> Vec<String> {
        assert_eq!(response.status, StatusCode::OK);
        response.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(id_of)
            .collect()
    };

    assert_eq!(
        ids(app.list("q=report").await),
        vec![id_of(&a), id_of(&b)],
        "title or description, any case"
    );
    assert_eq!(ids(app.list("status=completed").await), vec![id_of(&c)]);
    assert_eq!(
        ids(app.list("status=pending").await),
        vec![id_of(&a), id_of(&b)]
    );
    assert_eq!(
        ids(app.list("priority=high,low").await),
        vec![id_of(&a), id_of(&b)]
    );
    assert_eq!(
        ids(app.list("tags=HOME").await),
        vec![id_of(&b), id_of(&c)],
        "any of, any case"
    );
    assert_eq!(
        ids(app.list("tags=work,family").await),
        vec![id_of(&a), id_of(&c)]
    );
    assert_eq!(
        ids(app.list("due_before=2026-03-03T00:00:00Z").await),
        vec![id_of(&a)]
    );
    assert_eq!(
        ids(app.list("due_after=2026-03-03T00:00:00%2B01:00").await),
        vec![id_of(&b)]
    );
    assert_eq!(ids(app.list("q=zzz").await), Vec::<String>::new());
}

#[tokio::test]
async fn list_sorts_by_each_key_in_both_directions_with_a_stable_tie_break() {
    let app = spawn_app().await;
    let t1 = id_of(
        &app.create(
            json!({"title": "banana", "priority": "high", "due_at": "2026-01-03T00:00:00Z"}),
        )
        .await,
    );
    let t2 = id_of(
        &app.create(json!({"title": "Apple", "priority": "low"}))
            .await,
    );
    let t3 = id_of(
        &app.create(
            json!({"title": "cherry", "priority": "high", "due_at": "2026-01-01T00:00:00Z"}),
        )
        .await,
    );

    let order = |query: &'static str| {
        let app = &app;
        async move {
            let body = app.list(query).await.json();
            body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(id_of)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        order("sort=created_at").await,
        [t1.as_str(), t2.as_str(), t3.as_str()]
    );
    assert_eq!(
        order("sort=-created_at").await,
        [t3.as_str(), t2.as_str(), t1.as_str()]
    );
    assert_eq!(
        order("sort=title").await,
        [t2.as_str(), t1.as_str(), t3.as_str()],
        "case-insensitive"
    );
    assert_eq!(
        order("sort=-title").await,
        [t3.as_str(), t1.as_str(), t2.as_str()]
    );
    assert_eq!(
        order("sort=due_at").await,
        [t3.as_str(), t1.as_str(), t2.as_str()],
        "no due date last"
    );
    assert_eq!(
        order("sort=-due_at").await,
        [t2.as_str(), t1.as_str(), t3.as_str()]
    );
    assert_eq!(
        order("sort=priority").await,
        [t2.as_str(), t1.as_str(), t3.as_str()],
        "ties by id"
    );
    assert_eq!(
        order("sort=-priority").await,
        [t3.as_str(), t1.as_str(), t2.as_str()]
    );
}

#[tokio::test]
async fn cursor_pagination_visits_every_task_once_in_order() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let priority = ["low", "medium", "high"][i % 3];
        created.push(
            app.create(json!({"title": format!("task {i}"), "priority": priority}))
                .await,
        );
    }
    for sort in ["created_at", "-priority", "title", "-due_at"] {
        let mut seen = Vec::new();
        let mut query = format!("sort={sort}&limit=3");
        let mut pages = 0;
        loop {
            let page = app.list(&query).await.json();
            pages += 1;
            let items = page["items"].as_array().expect("items");
            assert!(items.len() <= 3);
            seen.extend(items.iter().map(id_of));
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("sort={sort}&limit=3&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{sort}");
        let all: Vec<String> = app.list(&format!("sort={sort}&limit=200")).await.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(seen, all, "{sort}: pages concatenate to the full order");
        assert_eq!(seen.len(), created.len());
    }
    let cursor = app.list("limit=3").await.json()["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    app.list(&format!("sort=title&cursor={cursor}"))
        .await
        .problem(400);
    app.list("cursor=bm9wZQ").await.problem(400);
}

#[tokio::test]
async fn each_client_mistake_gets_its_own_status_as_problem_json() {
    let app = spawn_app().await;
    let path = app.tasks_path();
    let auth = format!("Bearer {}", app.token());
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let malformed = app
        .send(Method::POST, &path, &json_headers, "{\"title\": ")
        .await
        .problem(400);
    assert!(
        malformed["detail"]
            .as_str()
            .unwrap_or("")
            .contains("line 1"),
        "{malformed}"
    );

    let invalid = app
        .post_task(json!({"title": "", "priority": "urgent", "due_at": "tomorrow", "colour": 1}))
        .await
        .problem(422);
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(fields, ["colour", "title", "priority", "due_at"]);

    let huge = format!(
        "{{\"title\": \"x\", \"description\": \"{}\"}}",
        "a".repeat(70 * 1024)
    );
    app.send(Method::POST, &path, &json_headers, huge)
        .await
        .problem(413);

    app.send(
        Method::POST,
        &path,
        &[("authorization", &auth), ("content-type", "text/plain")],
        "title=x",
    )
    .await
    .problem(415);
    app.send(
        Method::POST,
        &path,
        &[("authorization", &auth)],
        "{\"title\":\"x\"}",
    )
    .await
    .problem(415);

    let wrong_method = app.call(Method::DELETE, &path, None).await;
    wrong_method.problem(405);
    assert_eq!(wrong_method.header("allow"), Some("GET, POST"));

    app.call(Method::GET, "/api/nothing/here", None)
        .await
        .problem(404);
    app.call(
        Method::GET,
        &format!("{path}/{}/extra/segments", Uuid::now_v7()),
        None,
    )
    .await
    .problem(404);
    app.list("limit=0&status=sometimes").await.problem(422);

    assert!(
        app.task_rows().await.is_empty(),
        "no request above wrote anything"
    );
}

#[tokio::test]
async fn missing_invalid_or_expired_tokens_get_401_and_other_users_tokens_403() {
    let app = spawn_app().await;
    let path = app.tasks_path();
    let cases = [
        ("no header", None, 401),
        ("not bearer", Some("Basic dXNlcjpwYXNz".to_owned()), 401),
        (
            "forged",
            Some(format!(
                "Bearer {}",
                token_for(&app.user, 600, "wrong-secret")
            )),
            401,
        ),
        (
            "expired",
            Some(format!("Bearer {}", token_for(&app.user, -600, JWT_SECRET))),
            401,
        ),
        ("garbage", Some("Bearer a.b.c".to_owned()), 401),
        (
            "another user",
            Some(format!("Bearer {}", token_for("mallory", 600, JWT_SECRET))),
            403,
        ),
    ];
    for (name, header, status) in cases {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("authorization", h)])
            .unwrap_or_default();
        let response = app.send(Method::GET, &path, &headers, "").await;
        assert_eq!(response.status.as_u16(), status, "{name}");
        response.problem(status);
        if status == 401 {
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer"),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn auth_can_be_switched_off_for_local_demos() {
    let app = spawn_app_with_var("auth_enabled", "false").await;
    let response = app.send(Method::GET, &app.tasks_path(), &[], "").await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn a_user_can_neither_read_change_nor_list_another_users_tasks() {
    let alice = spawn_app().await;
    let bob = alice.as_user(&new_user());
    let task = alice
        .create(json!({"title": "Alice's secret", "priority": "high"}))
        .await;
    let id = id_of(&task);

    bob.get_task(&id).await.problem(404);
    bob.put_task(&id, json!({"title": "pwned"}))
        .await
        .problem(404);
    bob.patch_task(&id, json!({"title": "pwned"}))
        .await
        .problem(404);
    bob.complete(&id, None).await.problem(404);
    bob.delete_task(&id).await.problem(404);
    assert_eq!(bob.list("").await.json()["items"], json!([]));
    // Bob's token on Alice's path is refused outright.
    let bobs_token = format!("Bearer {}", bob.token());
    alice
        .send(
            Method::GET,
            &alice.tasks_path(),
            &[("authorization", &bobs_token)],
            "",
        )
        .await
        .problem(403);

    let rows = alice.task_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "Alice's secret");
    assert_eq!(rows[0].3, 1, "never written");
    assert!(bob.task_rows().await.is_empty());
}

#[tokio::test]
async fn if_match_with_a_stale_etag_gets_412_and_changes_nothing() {
    let app = spawn_app().await;
    let id = id_of(&app.create(json!({"title": "v1"})).await);
    app.patch_task(&id, json!({"title": "v2"})).await;
    let auth = format!("Bearer {}", app.token());
    let path = format!("{}/{id}", app.tasks_path());
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("if-match", "\"1\""),
    ];

    app.send(Method::PATCH, &path, &headers, "{\"title\": \"v3\"}")
        .await
        .problem(412);
    app.send(
        Method::DELETE,
        &path,
        &headers[..1]
            .iter()
            .chain(&headers[2..])
            .copied()
            .collect::<Vec<_>>(),
        "",
    )
    .await
    .problem(412);
    let current = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("if-match", "\"2\""),
    ];
    let ok = app
        .send(Method::PATCH, &path, &current, "{\"title\": \"v3\"}")
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(app.task_rows().await[0].1, "v3");
}

#[tokio::test]
async fn sql_metacharacters_and_unicode_are_stored_verbatim() {
    let app = spawn_app().await;
    let title = "Robert'); DROP TABLE tasks; -- 100% _done_ \\ ünïcødé 🚀";
    let task = app
        .create(json!({"title": title, "tags": ["'; --", "%"]}))
        .await;
    assert_eq!(task["title"], title);
    assert_eq!(app.task_rows().await[0].1, title);
    let found = app.list("q=100%25%20_done_").await.json();
    assert_eq!(
        found["items"].as_array().map(Vec::len),
        Some(1),
        "LIKE wildcards match literally"
    );
    // Unescaped, `%` and `_` would match "0% _d" and "100" here.
    assert_eq!(
        app.list("q=0%25_d").await.json()["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        app.list("q=1_0").await.json()["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn an_unreachable_database_gives_503_and_no_partial_write() {
    // A port nothing listens on: the connection is refused like a stopped server's.
    let dead_port = unused_port();
    let app = spawn_app_with_var("db_port", dead_port).await;

    let response = app.post_task(json!({"title": "lost?"})).await;
    let problem = response.problem(503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "no internals leak"
    );
    app.list("").await.problem(503);
    assert!(app.task_rows().await.is_empty());
}

#[tokio::test]
async fn legacy_clients_fields_are_accepted() {
    let app = spawn_app().await;
    let task = app
        .create(
            json!({"title": "Old client", "due_date": "2026-02-01T08:00:00-05:00",
                       "is_recurring": true, "recurring_interval": "weekly"}),
        )
        .await;
    assert_eq!(task["due_at"], "2026-02-01T13:00:00Z");
    assert_eq!(task["recurrence"]["frequency"], "weekly");
    assert_eq!(task["recurrence"]["interval"], 1);
}

/// With instances reused across many concurrent requests, nothing leaks between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_reused_instances_stay_separate() {
    let app = std::sync::Arc::new(spawn_app().await);
    let users: Vec<String> = (0..8).map(|_| new_user()).collect();
    let mut handles = Vec::new();
    for (i, user) in users.iter().enumerate() {
        for n in 0..5 {
            let app = app.clone();
            let user = user.clone();
            handles.push(tokio::spawn(async move {
                let me: TestApp = app.as_user(&user);
                me.create(json!({"title": format!("{i}-{n}")})).await
            }));
        }
    }
    for handle in handles {
        handle.await.expect("task");
    }
    for (i, user) in users.iter().enumerate() {
        let me = app.as_user(user);
        let rows = me.task_rows().await;
        assert_eq!(rows.len(), 5, "user {i}");
        assert!(
            rows.iter().all(|r| r.1.starts_with(&format!("{i}-"))),
            "user {i}: {rows:?}"
        );
    }
}

/// `.` and `..` would be path segments with a meaning of their own (and user ids that a path
/// normalizer rewrites), so they are no user ids: 404 like any other invalid one, whatever the
/// token says, and nothing is written.
#[tokio::test]
async fn user_ids_of_dots_alone_get_404_and_write_nothing() {
    let app = spawn_app().await;
    for user in [".", ".."] {
        let me = app.as_user(user);
        let path = format!("/api/{user}/tasks");
        assert_eq!(me.tasks_path(), path, "the host gets the path as sent");
        me.post_task(json!({"title": "dot"})).await.problem(404);
        me.list("").await.problem(404);
        me.get_task(&Uuid::now_v7().to_string()).await.problem(404);
        let rows = app
            .db
            .query_one("select count(*) from tasks where user_id = $1", &[&user])
            .await
            .expect("count");
        assert_eq!(rows.get::<_, i64>(0), 0, "{user:?}: nothing written");
    }
}

/// Ten thousand distinct tags fill most of a 64 KiB body. They are refused as soon as the
/// eleventh is read, not after comparing each one with all the others (seconds of CPU).
#[tokio::test]
async fn ten_thousand_distinct_tags_get_422_fast_and_write_nothing() {
    let app = spawn_app().await;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tags: Vec<String> = (0..10_000usize)
        .map(|i| {
            [i / 1296, i / 36 % 36, i % 36]
                .iter()
                .map(|&d| char::from(ALPHABET[d % 36]))
                .collect()
        })
        .collect();
    let body = json!({"title": "Tagged", "tags": tags});
    assert!(serde_json::to_vec(&body).expect("json").len() <= 64 * 1024);

    let started = std::time::Instant::now();
    let response = app.post_task(body).await;
    let took = started.elapsed();

    let problem = response.problem(422);
    let errors = problem["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{problem}");
    assert_eq!(errors[0]["field"], "tags");
    assert_eq!(errors[0]["message"], "at most 10 tags are allowed");
    assert!(
        took < std::time::Duration::from_secs(1),
        "answered in {took:?}"
    );
    assert!(app.task_rows().await.is_empty(), "nothing written");
    assert!(app.outbox_rows().await.is_empty(), "no event stored");
}

/// base64url without padding, as the API encodes cursors; for crafting tampered ones.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// PostgreSQL's `lower()` and Rust's `to_lowercase()` disagree on final sigma (`ΤΕΛΟΣ`), dotted
/// capital I (`İ`) and more. The title cursor holds what the database sorts on, so paging one
/// task at a time, either way, visits every task once, in the order of a single page.
#[tokio::test]
async fn title_pages_visit_each_task_once_whatever_the_case_rules() {
    let app = spawn_app().await;
    let titles = [
        "ΤΕΛΟΣ",
        "ΩΡΑ",
        "İstanbul",
        "Ivy",
        "straße",
        "STRASSE",
        "apple",
        "Omega",
        "Zebra",
    ];
    for title in titles {
        app.create(json!({ "title": title })).await;
    }
    for sort in ["title", "-title"] {
        let whole: Vec<String> = app.list(&format!("sort={sort}&limit=200")).await.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|t| t["title"].as_str().expect("title").to_owned())
            .collect();
        assert_eq!(whole.len(), titles.len());
        let mut seen: Vec<String> = Vec::new();
        let mut query = format!("sort={sort}&limit=1");
        for _ in 0..titles.len() + 3 {
            let page = app.list(&query).await.json();
            let items = page["items"].as_array().expect("items");
            assert!(items.len() <= 1, "{page}");
            seen.extend(
                items
                    .iter()
                    .map(|t| t["title"].as_str().expect("title").to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("sort={sort}&limit=1&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(
            seen, whole,
            "{sort}: one page at a time, each task once, in order"
        );
    }

    // A cursor is still checked: one whose key could not come from a stored title is refused,
    // whatever its sort, before it reaches the database.
    let id = Uuid::nil();
    for (sort, key) in [
        ("title", json!({"text": "a\u{0}b"})),
        ("title", json!({"text": "x".repeat(201)})),
        ("title", json!({"text": " padded "})),
        ("title", json!({"rank": 1})),
        ("created_at", json!({"text": "apple"})),
    ] {
        let cursor = json!({"s": sort, "d": false, "k": key, "i": id});
        let cursor = base64url(&serde_json::to_vec(&cursor).expect("json"));
        app.list(&format!("sort={sort}&cursor={cursor}"))
            .await
            .problem(400);
    }
    let genuine = json!({"s": "title", "d": false, "k": {"text": "apple"}, "i": id});
    let genuine = base64url(&serde_json::to_vec(&genuine).expect("json"));
    assert_eq!(
        app.list(&format!("sort=title&cursor={genuine}"))
            .await
            .status,
        StatusCode::OK,
        "the crafted form is the real one"
    );
}

/// `Prefer: return=minimal` (RFC 7240): writes answer with their status, `Location` and `ETag`
/// but no body; the write itself is the same, and errors keep their problem body.
#[tokio::test]
async fn prefer_return_minimal_answers_writes_without_a_body() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", app.token());
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("prefer", "return=minimal"),
    ];
    let path = app.tasks_path();
    let created = app
        .send(Method::POST, &path, &headers, r#"{"title":"Lean"}"#)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.body.is_empty(), "{}", created.text());
    assert_eq!(created.header("content-length"), Some("0"));
    assert_eq!(created.header("content-type"), None);
    assert_eq!(created.header("preference-applied"), Some("return=minimal"));
    let location = created.header("location").expect("Location").to_owned();
    let etag = created.header("etag").expect("ETag").to_owned();
    let id = location.rsplit('/').next().expect("an id").to_owned();

    let stored = app.get_task(&id).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.json()["title"], "Lean");
    assert_eq!(stored.header("etag"), Some(etag.as_str()));

    let patched = app
        .send(
            Method::PATCH,
            &format!("{path}/{id}"),
            &headers,
            r#"{"priority":"high"}"#,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert!(patched.body.is_empty());
    assert_eq!(app.get_task(&id).await.json()["priority"], "high");

    let refused = app
        .send(Method::POST, &path, &headers, r#"{"title":""}"#)
        .await;
    refused.problem(422);
    assert_eq!(refused.header("preference-applied"), None);
    assert_eq!(
        app.task_rows().await.len(),
        1,
        "the refused create wrote nothing"
    );
}

/// `Idempotency-Key` on create (IETF httpapi draft): a resent create with the same key and body
/// answers the first answer and writes nothing; the same key with another body is 422; keys
/// are per user; a malformed key is 400 and writes nothing.
#[tokio::test]
async fn a_create_resent_under_its_idempotency_key_writes_nothing() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", app.token());
    let path = app.tasks_path();
    let send = |key: &'static str, body: &'static str| {
        let app = &app;
        let bearer = bearer.clone();
        let path = path.clone();
        async move {
            let headers = [
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ];
            app.send(Method::POST, &path, &headers, body).await
        }
    };
    let first = send("\"order-7\"", r#"{"title":"Pay rent","tags":["home"]}"#).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = id_of(&first.json());

    // The same document: other key order and spacing, the key as a bare token.
    let again = send("order-7", r#"{ "tags": ["home"], "title": "Pay rent" }"#).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the first answer, byte for byte");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("content-type"), Some("application/json"));

    let other_body = send("order-7", r#"{"title":"Pay rent twice"}"#).await;
    let problem = other_body.problem(422);
    assert!(
        problem["errors"][0]["field"] == "Idempotency-Key",
        "{problem}"
    );

    let malformed = send("\"unterminated", r#"{"title":"Nope"}"#).await;
    malformed.problem(400);

    let rows = app.task_rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0.to_string(), id);
    assert_eq!(rows[0].1, "Pay rent");
    assert_eq!(
        app.outbox_rows().await.len(),
        1,
        "one task.created event, not one per attempt"
    );
    let keys: i64 = app
        .db
        .query_one(
            "select count(*) from idempotency_keys where user_id = $1",
            &[&app.user],
        )
        .await
        .expect("count keys")
        .get(0);
    assert_eq!(keys, 1);

    // Another user's key space is their own.
    let bob = app.as_user(&new_user());
    let bob_bearer = format!("Bearer {}", bob.token());
    let headers = [
        ("authorization", bob_bearer.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "order-7"),
    ];
    let theirs = bob
        .send(
            Method::POST,
            &bob.tasks_path(),
            &headers,
            r#"{"title":"Pay rent"}"#,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_eq!(theirs.header("idempotent-replayed"), None);
    assert_ne!(id_of(&theirs.json()), id);
    assert_eq!(bob.task_rows().await.len(), 1);
}

/// Concurrent retries under one key create one task, and every one of them gets its answer.
#[tokio::test]
async fn concurrent_creates_under_one_idempotency_key_create_one_task() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", app.token());
    let path = app.tasks_path();
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "burst-1"),
    ];
    let answers = futures::future::join_all(
        (0..8).map(|_| app.send(Method::POST, &path, &headers, r#"{"title":"Once"}"#)),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|answer| {
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
            id_of(&answer.json())
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the one task: {ids:?}");
    assert_eq!(app.task_rows().await.len(), 1);
    assert_eq!(app.outbox_rows().await.len(), 1);
}

/// A key past its 24 hours is free again: the create writes a new task, and the relay's
/// housekeeping deletes keys that have expired.
#[tokio::test]
async fn an_expired_idempotency_key_creates_again_and_is_pruned() {
    let app = spawn_app_with_own_database(Default::default()).await;
    let bearer = format!("Bearer {}", app.token());
    let path = app.tasks_path();
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "monthly"),
    ];
    let age = async || {
        app.db
            .execute(
                "update idempotency_keys set created_at = now() - interval '25 hours' \
                 where user_id = $1",
                &[&app.user],
            )
            .await
            .expect("age the key")
    };
    let first = app
        .send(Method::POST, &path, &headers, r#"{"title":"Water plants"}"#)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(age().await, 1);

    let later = app
        .send(Method::POST, &path, &headers, r#"{"title":"Water plants"}"#)
        .await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(id_of(&later.json()), id_of(&first.json()));
    assert_eq!(app.task_rows().await.len(), 2);

    assert_eq!(age().await, 1);
    let summary = app.relay().await;
    assert_eq!(summary["pruned_idempotency_keys"], 1, "{summary}");
    let keys: i64 = app
        .db
        .query_one("select count(*) from idempotency_keys", &[])
        .await
        .expect("count keys")
        .get(0);
    assert_eq!(keys, 0);
}

/// Round trips to PostgreSQL, counted by the host: a control only the host has.
mod host_only {
    use super::*;

    /// Runs `call` and returns what it answered with the statements tasks-api sent for it.
    async fn statements<T>(app: &TestApp, call: impl std::future::Future<Output = T>) -> (T, u64) {
        let host = app.host().expect("the test host");
        let before = host.host_calls("tasks-api").statements();
        let answer = call.await;
        (answer, host.host_calls("tasks-api").statements() - before)
    }

    /// Each request sends the fewest statements its work allows, each a prepare and an
    /// execute through Spin's pg host: a read is one; a write is its change (which stores the
    /// events and claims the publishing lease) and, after the publish, the mark that releases
    /// the lease; an update or a delete first reads the task it changes.
    #[tokio::test]
    async fn each_request_sends_the_fewest_statements_its_work_allows() {
        let app = spawn_app().await;
        let (created, sent) = statements(
            &app,
            app.post_task(
                json!({"title": "Count", "tags": ["a"], "due_at": "2026-05-01T09:30:00Z",
                                 "remind_before_minutes": 10}),
            ),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED);
        assert_eq!(sent, 2, "insert with events and claim; mark and release");
        let id = id_of(&created.json());

        let (got, sent) = statements(&app, app.get_task(&id)).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(sent, 1, "get by id");

        let (listed, sent) = statements(&app, app.list("limit=10")).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(sent, 1, "one page of a list");

        let (patched, sent) =
            statements(&app, app.patch_task(&id, json!({"title": "Counted"}))).await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(sent, 3, "read, update with events and claim, mark");

        let (completed, sent) = statements(&app, app.complete(&id, None)).await;
        assert_eq!(completed.status, StatusCode::OK);
        assert_eq!(sent, 3, "read, update with events and claim, mark");

        let (deleted, sent) = statements(&app, app.delete_task(&id)).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(sent, 3, "read, delete with events and claim, mark");

        let (missing, sent) = statements(&app, app.get_task(&id)).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(sent, 1);
        let (refused, sent) = statements(&app, app.post_task(json!({"title": ""}))).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(sent, 0, "invalid input never reaches the database");
    }
}
