//! Thousands of generated bad requests through the host: malformed JSON, wrong types, huge and
//! unicode strings, invalid ids and dates, SQL metacharacters, forged and expired tokens, other
//! users' ids and malformed CloudEvents. Never a 5xx (the host answers 500 when a guest traps),
//! never a cross-user read or write, and metacharacters stored verbatim.

use crate::support::{
    Answer, JWT_SECRET, Rng, TestApp, held, new_user, runtime, serial, spawn_app, token,
};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use uuid::Uuid;

const REQUESTS: usize = 5_000;
const CONCURRENCY: usize = 16;

const METACHARACTERS: &[&str] = &[
    "'; drop table tasks; --",
    "\" or 1=1 --",
    "Robert'); DELETE FROM outbox;--",
    "%_\\ like 'x%' escape '\\'",
    "$1::text || $2",
    "/* comment */ select pg_sleep(10)",
    "\\x00\\\\'\\''",
    "a\u{0}b",
];

const UNICODE: &[&str] = &[
    "Zoë’s café ☕",
    "\u{202e}gnp.exe",
    "e\u{301}\u{301}\u{301}",
    "😀👩‍👩‍👧‍👦🏳️‍🌈",
    "中文标题",
    "\u{feff}BOM",
    "\u{10ffff}",
    "ﷺ",
];

fn text(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => rng.pick(METACHARACTERS).to_string(),
        1 => rng.pick(UNICODE).to_string(),
        2 => "x".repeat(1 + rng.below(3000)),
        3 => rng.pick(UNICODE).repeat(1 + rng.below(400)),
        4 => String::new(),
        5 => "   ".to_owned(),
        _ => format!("plain {}", rng.next_u64()),
    }
}

fn bad_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(rng.next_u64()),
        2 => json!(-1.5e300),
        3 => json!(true),
        4 => json!([text(rng), 5, null]),
        5 => json!({"nested": {"deeper": [text(rng)]}}),
        6 => json!(*rng.pick(&[
            "2026-02-30T00:00:00Z",
            "yesterday",
            "9999999-01-01T00:00:00Z",
            "2026-01-01T25:61:00+02:00",
            "2026-01-01",
            "0000-00-00T00:00:00Z",
            "2026-01-01T00:00:00+99:00"
        ])),
        7 => json!(text(rng)),
        _ => json!(*rng.pick(&["urgent", "HIGH", "", "daily", "every day", "-1"])),
    }
}

/// A body for a task write: broken JSON, the wrong shape, or task fields with bad values.
fn task_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => {
            let json = json!({"title": text(rng), "tags": [text(rng)]}).to_string();
            let cut = rng.below(json.len().max(1));
            json.as_bytes()[..cut].to_vec()
        }
        1 => (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect(),
        2 => "[".repeat(1 + rng.below(5000)).into_bytes(),
        3 => json!([1, 2, 3]).to_string().into_bytes(),
        4 => format!("{{\"title\": \"{}\"}}", "y".repeat(70_000)).into_bytes(),
        5 => b"{\"title\": \"\\ud800\"}".to_vec(),
        _ => {
            let mut body = serde_json::Map::new();
            for _ in 0..1 + rng.below(4) {
                let field = *rng.pick(&[
                    "title",
                    "description",
                    "priority",
                    "tags",
                    "due_at",
                    "recurrence",
                    "completed",
                    "due_date",
                    "id",
                    "user_id",
                    "remind_before_minutes",
                    "unknown",
                ]);
                body.insert(field.to_owned(), bad_value(rng));
            }
            Value::Object(body).to_string().into_bytes()
        }
    }
}

fn bad_id(rng: &mut Rng) -> String {
    rng.pick(&[
        "not-a-uuid",
        "00000000-0000-0000-0000-00000000000g",
        "%00",
        "..%2F..%2Fetc",
        "%F0%9F%98%80",
        "12345678123456781234567812345678123456781234",
        "'%20or%201=1",
        "%27%3B%20drop%20table%20tasks",
    ])
    .to_string()
}

fn bad_query(rng: &mut Rng) -> String {
    rng.pick(&[
        "limit=0",
        "limit=99999999999999999999",
        "sort=-colour",
        "status=done",
        "priority=urgent",
        "due_before=2026-02-30T00:00:00Z",
        "due_after=tomorrow",
        "cursor=%FF%FE",
        "cursor=eyJzIjoidGl0bGUifQ",
        "q=%27%3B%20drop%20table%20tasks%3B%20--",
        "q=%25%25%25_",
        "tags=%00",
        "limit=5&limit=6",
        "%ZZ=1",
        "q=%F0%9F%98%80%F0%9F%98%80",
    ])
    .to_string()
}

fn forged_auth(rng: &mut Rng, user: &str) -> String {
    match rng.below(7) {
        0 => token(user, -3600, JWT_SECRET),
        1 => token(user, 3600, "not-the-secret"),
        2 => "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
        3 => format!("Bearer {}", "a".repeat(rng.below(9000))),
        4 => "Basic dXNlcjpwYXNz".to_owned(),
        5 => "Bearer ".to_owned(),
        _ => token(user, 3600, JWT_SECRET).replace('.', ".x"),
    }
}

fn bad_event(rng: &mut Rng) -> (String, Vec<u8>) {
    let content_type = rng
        .pick(&[
            "application/cloudevents+json",
            "application/json",
            "text/plain",
            "application/xml",
        ])
        .to_string();
    let body = match rng.below(6) {
        0 => task_body(rng),
        1 => json!({"specversion": "0.3", "id": "1", "source": "s", "type": "task.completed", "data": {}}).to_string().into_bytes(),
        2 => json!({"specversion": "1.0", "id": "", "source": "", "type": "task.completed"}).to_string().into_bytes(),
        3 => json!({"specversion": "1.0", "id": Uuid::now_v7(), "source": "/x", "type": "task.completed",
                    "data": {"task": {"title": bad_value(rng), "recurrence": bad_value(rng)}, "completed": bad_value(rng)}})
            .to_string()
            .into_bytes(),
        4 => json!({"specversion": "1.0", "id": "x".repeat(5000), "source": "/x", "type": "evil.type", "data": "str"}).to_string().into_bytes(),
        _ => json!({"specversion": "1.0", "id": Uuid::now_v7(), "source": "/x", "type": "reminder.triggered", "data": bad_value(rng)})
            .to_string()
            .into_bytes(),
    };
    (content_type, body)
}

struct Actors {
    attacker: String,
    attacker_auth: String,
    attacker_task: Uuid,
    victim: String,
    victim_task: Uuid,
}

/// One generated request; returns its kind, the answer, and the statuses acceptable for it.
async fn one(
    app: &TestApp,
    actors: &Actors,
    rng: &mut Rng,
) -> (&'static str, Option<Answer>, Vec<u16>, Option<String>) {
    let Actors {
        attacker,
        attacker_auth: auth,
        attacker_task,
        victim,
        victim_task,
    } = actors;
    let mine = format!("/api/{attacker}/tasks");
    let theirs = format!("/api/{victim}/tasks");
    let json_headers = |auth: &str| {
        vec![
            ("authorization", auth.to_owned()),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let send = |method: Method,
                path: String,
                headers: Vec<(&'static str, String)>,
                body: Vec<u8>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app.send(method, &path, &headers, Bytes::from(body)).await
    };
    match rng.below(11) {
        0 => {
            let a = send(Method::POST, mine, json_headers(auth), task_body(rng)).await;
            ("malformed create", a, vec![201, 400, 413, 422], None)
        }
        1 => {
            let method = rng.pick(&[Method::PATCH, Method::PUT]).clone();
            let a = send(
                method,
                format!("{mine}/{attacker_task}"),
                json_headers(auth),
                task_body(rng),
            )
            .await;
            ("malformed update", a, vec![200, 400, 413, 422], None)
        }
        2 => {
            let title = format!("{} {}", rng.pick(METACHARACTERS), rng.next_u64())
                .trim()
                .to_owned();
            let body = json!({"title": title, "description": rng.pick(METACHARACTERS), "tags": [rng.pick(METACHARACTERS)]});
            let a = send(
                Method::POST,
                mine,
                json_headers(auth),
                body.to_string().into_bytes(),
            )
            .await;
            // A NUL character is refused (PostgreSQL text cannot hold it); anything else is stored.
            ("metacharacter create", a, vec![201, 422], Some(title))
        }
        3 => {
            let method = rng
                .pick(&[Method::GET, Method::PATCH, Method::DELETE, Method::PUT])
                .clone();
            let a = send(
                method,
                format!("{mine}/{}", bad_id(rng)),
                json_headers(auth),
                b"{}".to_vec(),
            )
            .await;
            ("invalid id", a, vec![400, 404, 405, 422], None)
        }
        4 => {
            let a = send(
                Method::GET,
                format!("{mine}?{}", bad_query(rng)),
                json_headers(auth),
                Vec::new(),
            )
            .await;
            ("invalid query", a, vec![200, 400, 422], None)
        }
        5 => {
            let forged = forged_auth(rng, attacker);
            let path = if rng.chance(50) {
                mine
            } else {
                format!("{mine}/{attacker_task}")
            };
            let method = rng
                .pick(&[Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .clone();
            let a = send(
                method,
                path,
                json_headers(&forged),
                b"{\"title\":\"forged\"}".to_vec(),
            )
            .await;
            // 405 when the method does not exist on the path: routing comes before auth.
            ("forged token", a, vec![401, 405], None)
        }
        6 => {
            let (method, path) = rng
                .pick(&[
                    (Method::GET, theirs.clone()),
                    (Method::POST, theirs.clone()),
                    (Method::GET, format!("{theirs}/{victim_task}")),
                    (Method::PATCH, format!("{theirs}/{victim_task}")),
                    (Method::DELETE, format!("{theirs}/{victim_task}")),
                    (Method::POST, format!("{theirs}/{victim_task}/complete")),
                ])
                .clone();
            let a = send(
                method,
                path,
                json_headers(auth),
                b"{\"title\":\"stolen\"}".to_vec(),
            )
            .await;
            ("other user's path", a, vec![403], None)
        }
        7 => {
            let (method, path) = rng
                .pick(&[
                    (Method::GET, format!("{mine}/{victim_task}")),
                    (Method::PATCH, format!("{mine}/{victim_task}")),
                    (Method::PUT, format!("{mine}/{victim_task}")),
                    (Method::DELETE, format!("{mine}/{victim_task}")),
                    (Method::PATCH, format!("{mine}/{victim_task}/complete")),
                ])
                .clone();
            let a = send(
                method,
                path,
                json_headers(auth),
                b"{\"title\":\"stolen\"}".to_vec(),
            )
            .await;
            // 422: the complete endpoint refuses the body before it looks for the task.
            ("other user's task id", a, vec![404, 422], None)
        }
        8 => {
            let user = rng
                .pick(&[
                    "%F0%9F%98%80",
                    "a%2Fb",
                    "..",
                    "x".repeat(300).as_str(),
                    "%27%20or%201%3D1",
                    "events%00",
                ])
                .to_string();
            let a = send(
                Method::GET,
                format!("/api/{user}/tasks"),
                json_headers(auth),
                Vec::new(),
            )
            .await;
            ("invalid user id", a, vec![401, 403, 404], None)
        }
        9 => {
            let method = rng
                .pick(&[
                    Method::OPTIONS,
                    Method::TRACE,
                    Method::HEAD,
                    Method::CONNECT,
                ])
                .clone();
            let ct = rng
                .pick(&[
                    "text/plain",
                    "application/xml",
                    "multipart/form-data; boundary=x",
                ])
                .to_string();
            let headers = vec![("authorization", auth.clone()), ("content-type", ct)];
            let path = if rng.chance(50) {
                mine
            } else {
                format!("{mine}/{attacker_task}")
            };
            let a = send(method, path, headers, b"title=x".to_vec()).await;
            (
                "odd method or content type",
                a,
                vec![400, 404, 405, 415],
                None,
            )
        }
        _ => {
            if !app.has_intake {
                return ("odd method or content type", None, vec![], None);
            }
            let (content_type, body) = bad_event(rng);
            // As the sidecar delivers them: with the app token.
            let a = send(
                Method::POST,
                "/api/events/tasks".to_owned(),
                vec![
                    ("content-type", content_type),
                    ("dapr-api-token", app.app_token.clone()),
                ],
                body,
            )
            .await;
            ("malformed CloudEvent", a, vec![200, 400, 413, 415], None)
        }
    }
}

async fn victim_state(app: &TestApp, victim: &str) -> Vec<String> {
    let mut state: Vec<String> = app
        .db
        .query(
            "select concat_ws('|', id, title, description, completed, version, priority, tags::text) \
             from tasks where user_id = $1 order by id",
            &[&victim],
        )
        .await
        .expect("read the victim's tasks")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let outbox: i64 = app
        .db
        .query_one("select count(*) from outbox where user_id = $1", &[&victim])
        .await
        .expect("count the victim's events")
        .get(0);
    state.push(format!("outbox rows: {outbox}"));
    state
}

#[test]
fn thousands_of_malformed_requests_never_get_a_server_error_or_cross_users() {
    let _one_at_a_time = serial();
    runtime().block_on(async {
        let app = Arc::new(spawn_app().await);
        let (attacker, victim) = (new_user("attacker"), new_user("victim"));
        let attacker_auth = token(&attacker, 3600, JWT_SECRET);
        let victim_auth = token(&victim, 3600, JWT_SECRET);
        let mut ids = Vec::new();
        for (user, auth) in [(&attacker, &attacker_auth), (&victim, &victim_auth)] {
            for n in 0..3 {
                let body = json!({"title": format!("Owned {n}"), "description": "keep", "tags": ["mine"]});
                let a = app.call(Method::POST, &format!("/api/{user}/tasks"), auth, Some(&body)).await.expect("an answer");
                assert_eq!(a.status, StatusCode::CREATED);
                ids.push(Uuid::parse_str(a.json()["id"].as_str().expect("an id")).expect("a uuid"));
            }
        }
        app.publishing_settled(&[attacker.clone(), victim.clone()]).await;
        let before = victim_state(&app, &victim).await;
        let actors = Arc::new(Actors {
            attacker: attacker.clone(),
            attacker_auth,
            attacker_task: ids[0],
            victim: victim.clone(),
            victim_task: ids[3],
        });

        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                let (app, actors, next) = (app.clone(), actors.clone(), next.clone());
                tokio::spawn(async move {
                    let mut rng = Rng::new(0xbad_1dea + w as u64);
                    let mut problems = Vec::new();
                    let mut verbatim = Vec::new();
                    let mut kinds = std::collections::BTreeMap::new();
                    while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                        let (kind, answer, allowed, title) = one(&app, &actors, &mut rng).await;
                        if allowed.is_empty() {
                            continue;
                        }
                        *kinds.entry(kind).or_insert(0usize) += 1;
                        let Some(answer) = answer else {
                            problems.push(format!("{kind}: no answer"));
                            continue;
                        };
                        let status = answer.status.as_u16();
                        if status >= 500 || !allowed.contains(&status) {
                            problems.push(format!("{kind}: {status} {}", answer.text()));
                        } else if status >= 400 && !answer.is_problem() && kind != "odd method or content type" {
                            problems.push(format!("{kind}: {status} without problem+json"));
                        }
                        if let (Some(title), 201) = (title, status) {
                            verbatim.push((answer.json()["id"].as_str().unwrap_or("").to_owned(), title));
                        }
                    }
                    (problems, verbatim, kinds)
                })
            })
            .collect();
        let mut problems = Vec::new();
        let mut verbatim = Vec::new();
        let mut kinds = std::collections::BTreeMap::new();
        for worker in workers {
            let (p, v, k) = worker.await.expect("a worker panicked");
            problems.extend(p);
            verbatim.extend(v);
            for (kind, n) in k {
                *kinds.entry(kind).or_insert(0) += n;
            }
        }
        assert!(problems.is_empty(), "{} bad answers, e.g. {:?}", problems.len(), &problems[..problems.len().min(8)]);

        app.publishing_settled(&[attacker.clone(), victim.clone()]).await;
        assert_eq!(victim_state(&app, &victim).await, before, "the victim's rows changed");
        for (id, title) in &verbatim {
            let id = Uuid::parse_str(id).expect("created task id");
            let stored: String = app
                .db
                .query_one("select title from tasks where id = $1 and user_id = $2", &[&id, &attacker])
                .await
                .expect("the created row")
                .get(0);
            assert_eq!(&stored, title, "stored verbatim");
        }
        assert!(!verbatim.is_empty(), "no metacharacter title was stored");
        let tried: usize = kinds.values().sum();
        held(
            4,
            format!("{tried} malformed inputs (0 5xx, no cross-user access)"),
            format!(
            "{tried} malformed requests of {} kinds (0 5xx, no cross-user read or write, {} metacharacter titles stored verbatim)",
            kinds.len(),
            verbatim.len()
        ),
        );
    });
}
