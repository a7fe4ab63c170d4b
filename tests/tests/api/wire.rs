//! Round trips on the wire: the app served on a loopback port, one keep-alive TCP connection
//! with Nagle's algorithm on (as wrk, Go clients and load balancers keep it), requests sent one
//! after another.
//!
//! The host serves like Spin 4.0.2: no `TCP_NODELAY` on accepted sockets, the guest's response
//! handed to hyper as soon as the guest returns it and its body streamed. A response whose head
//! leaves before its body is ready then goes out in two segments, and the second waits for the
//! client's delayed ACK (about 40 ms on Linux). Publishing has the same shape on the way out:
//! a publish whose request head and body leave apart on a kept-alive connection waits for the
//! sidecar's delayed ACK, which is why `runtime-config.toml` turns outbound pooling off.
//!
//! `WIRE_ADDR=127.0.0.1:<port>` points [`external_server_round_trips`] at another server of
//! this app (e.g. `spin up` with `SPIN_VARIABLE_JWT_SECRET` set to [`JWT_SECRET`]), to compare
//! the host with real Spin using the same client.

use crate::helpers::{JWT_SECRET, TestApp, new_user, spawn_app, token_for};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Sequential requests per series.
const REQUESTS: usize = 100;
/// A round trip on loopback takes a millisecond or two; a delayed-ACK stall takes ~40 ms. The
/// 90th percentile must stay under this too: a stall need not hit every request (whether the
/// guest's body reaches hyper before hyper first polls it is a race; on Spin 4.0.2 it loses
/// most of the time), and a tenth of requests stalling is already a 40 ms tail.
const LIMIT: Duration = Duration::from_millis(5);
/// A write does a few statements before it answers, and its publish a few more on two shared
/// cores: allow more than for reads, still far below a stall.
const WRITE_LIMIT: Duration = Duration::from_millis(15);
/// A round trip this long is counted as a stall.
const STALL: Duration = Duration::from_millis(30);
/// Stalls a series may have: a busy machine (the suite runs tests side by side on two cores)
/// can pause one request that long without any delayed ACK.
const MAX_STALLS: usize = 2;

/// One keep-alive HTTP/1.1 connection, Nagle on (tokio leaves `TCP_NODELAY` off).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to the app");
        assert!(
            !stream.nodelay().expect("read TCP_NODELAY"),
            "the client keeps Nagle on"
        );
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Self {
            sender,
            host: addr.to_string(),
        }
    }

    /// Sends one request and reads its whole answer; returns it with the round trip time.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (StatusCode, Bytes, Duration) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).expect("valid request");
        self.sender
            .ready()
            .await
            .expect("the connection stays open");
        let started = Instant::now();
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("the app answers");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body arrives whole")
            .to_bytes();
        (status, body, started.elapsed())
    }
}

/// p50, p90 and the number of stalls of a series.
struct Summary {
    p50: Duration,
    p90: Duration,
    stalls: usize,
    count: usize,
}

impl Summary {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        Self {
            p50: at(0.5),
            p90: at(0.9),
            stalls: times.iter().filter(|t| **t > STALL).count(),
            count: times.len(),
        }
    }

    fn describe(&self, what: &str) -> String {
        format!(
            "{what}: p50 {:.2} ms, p90 {:.2} ms, {} of {} over {} ms",
            self.p50.as_secs_f64() * 1e3,
            self.p90.as_secs_f64() * 1e3,
            self.stalls,
            self.count,
            STALL.as_millis()
        )
    }
}

/// Creates a task over `connection` as `user` and returns its id.
async fn create_task(connection: &mut Connection, user: &str, auth: &str) -> (String, Duration) {
    let body = serde_json::to_vec(&json!({ "title": "wire check" })).expect("json");
    let (status, body, elapsed) = connection
        .call(
            Method::POST,
            &format!("/api/{user}/tasks"),
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body.into(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let task: Value = serde_json::from_slice(&body).expect("the created task is JSON");
    let id = task["id"].as_str().expect("the task has an id").to_owned();
    (id, elapsed)
}

/// `GET /dapr/subscribe` as the sidecar calls it, over `connection`; returns the round trip.
async fn list_subscriptions(connection: &mut Connection) -> Duration {
    let (status, body, elapsed) = connection
        .call(
            Method::GET,
            "/dapr/subscribe",
            &[("dapr-api-token", todo_test_host::testing::APP_TOKEN)],
            Bytes::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let subscriptions: Value = serde_json::from_slice(&body).expect("subscriptions are JSON");
    assert!(subscriptions.is_array(), "{subscriptions}");
    elapsed
}

/// `GET /dapr/subscribe` and `GET /api/{user}/tasks/{id}`, `REQUESTS` times each, on one
/// connection; returns their summaries.
async fn read_series(addr: SocketAddr, user: &str, token: &str) -> (Summary, Summary) {
    let auth = format!("Bearer {token}");
    let mut connection = Connection::open(addr).await;
    let (id, _) = create_task(&mut connection, user, &auth).await;

    let mut subscribe = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        subscribe.push(list_subscriptions(&mut connection).await);
    }

    let path = format!("/api/{user}/tasks/{id}");
    let mut get = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let (status, body, elapsed) = connection
            .call(
                Method::GET,
                &path,
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let task: Value = serde_json::from_slice(&body).expect("the task is JSON");
        assert_eq!(task["id"], id.as_str());
        get.push(elapsed);
    }
    (Summary::of(subscribe), Summary::of(get))
}

async fn serve(app: &TestApp) -> SocketAddr {
    let url = app.serve().await;
    url.trim_start_matches("http://")
        .parse()
        .expect("a loopback address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails while Spin 4.0.2 writes a response's head before the guest's body reaches \
            it, a race an answer with a body loses in a share of requests (~40 ms each, on \
            Spin and on this host; BENCHMARKS.md, \"The 40 ms stall\")"]
async fn reads_on_a_keep_alive_connection_do_not_wait_for_delayed_acks() {
    let app = spawn_app().await;
    let addr = serve(&app).await;
    let (subscribe, get) = read_series(addr, &app.user, &app.token()).await;
    let report = format!(
        "{}\n{}",
        subscribe.describe("GET /dapr/subscribe"),
        get.describe("GET /api/{user}/tasks/{id}")
    );
    eprintln!("{report}");
    assert!(
        [&subscribe, &get].iter().all(|s| s.p90 < LIMIT),
        "round trips should take well under {LIMIT:?}:\n{report}"
    );
}

/// `GET /dapr/subscribe` needs nothing but settings, which an instance reads once
/// (`todo_adapters::vars`), so it answers without suspending and its median round trip stays
/// within the 2 ms target on both runtimes. Reading its six variables on every call made the
/// guest suspend and lose the head-before-body race in most calls (p50 44 ms on Spin's bench;
/// this test then saw 77-83 of 100 stalled there). The host loses that race in other places
/// (after database calls, see the ignored read test) but not after variable reads: there this
/// test passed with the old reads too, so Spin's run guards this route's timing, and on the
/// host `host_only::after_its_first_request_an_instance_answers_without_reading_variables`
/// guards its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_answers_within_two_milliseconds_at_the_median() {
    let app = spawn_app().await;
    let addr = serve(&app).await;
    let mut connection = Connection::open(addr).await;
    let mut times = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        times.push(list_subscriptions(&mut connection).await);
    }
    let summary = Summary::of(times);
    let report = summary.describe("GET /dapr/subscribe");
    eprintln!("{report}");
    assert!(summary.p50 < Duration::from_millis(2), "{report}");
}

/// Publishing waits for no delayed ACK: `runtime-config.toml` gives each outbound request a
/// connection of its own (`[outbound_http] connection_pooling = false`). The creates ask for
/// `Prefer: return=minimal`, whose bodiless answer cannot stall on the way in, so what is
/// timed is the write and its publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_does_not_wait_for_delayed_acks() {
    let app = spawn_app().await;
    let addr = serve(&app).await;
    let auth = format!("Bearer {}", app.token());
    let mut connection = Connection::open(addr).await;

    // Each create publishes its event before it answers; the lag is how long after the answer
    // the sidecar has it (the request waits for the publish, so about nothing).
    let mut lags = Vec::with_capacity(REQUESTS);
    let mut creates = Vec::with_capacity(REQUESTS);
    let body = Bytes::from(serde_json::to_vec(&json!({ "title": "wire check" })).expect("json"));
    for n in 1..=REQUESTS {
        let (status, answer, elapsed) = connection
            .call(
                Method::POST,
                &format!("/api/{}/tasks", app.user),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                    ("prefer", "return=minimal"),
                ],
                body.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(answer.is_empty(), "return=minimal answers without a body");
        let answered = Instant::now();
        app.dapr
            .wait_for(n, Duration::from_secs(5))
            .await
            .expect("each create is published");
        lags.push(answered.elapsed());
        creates.push(elapsed);
    }
    let creates = Summary::of(creates);
    let lags = Summary::of(lags);
    let report = format!(
        "{}\n{}",
        creates.describe("POST /api/{user}/tasks"),
        lags.describe("the event at the sidecar after the answer")
    );
    eprintln!("{report}");
    assert_eq!(app.dapr.messages().len(), REQUESTS, "one event per create");
    // A kept-alive sidecar connection shows several stalls in a hundred here and about one
    // in ten on Spin.
    assert!(
        [&creates, &lags]
            .iter()
            .all(|s| s.p90 < WRITE_LIMIT && s.stalls <= MAX_STALLS),
        "writes and their publishes should take well under {WRITE_LIMIT:?}:\n{report}"
    );
}

/// The same reads against a server started elsewhere (`WIRE_ADDR`), signing tokens with
/// [`JWT_SECRET`]. Reports only: the figures are for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs WIRE_ADDR: a server of this app started by hand, e.g. spin up"]
async fn external_server_round_trips() {
    let addr: SocketAddr = std::env::var("WIRE_ADDR")
        .expect("WIRE_ADDR=127.0.0.1:<port>")
        .parse()
        .expect("WIRE_ADDR is host:port");
    let user = new_user();
    let token = token_for(&user, 3600, JWT_SECRET);
    let (subscribe, get) = read_series(addr, &user, &token).await;
    eprintln!(
        "{addr}\n{}\n{}",
        subscribe.describe("GET /dapr/subscribe"),
        get.describe("GET /api/{user}/tasks/{id}")
    );
}

/// What suspends a guest before it answers, counted by the host: a control only the host has.
mod host_only {
    use super::*;
    use todo_test_host::dapr::{AppAnswer, DeliveryOutcome};

    /// One request of each route a client or the sidecar waits on: create, get, list, update,
    /// complete, the completion's delivery, `GET /dapr/subscribe`.
    async fn every_route_once(app: &TestApp) {
        let task = app
            .create(json!({"title": "Vars", "recurrence": {"frequency": "daily"}}))
            .await;
        let id = task["id"].as_str().expect("an id").to_owned();
        assert_eq!(app.get_task(&id).await.status, StatusCode::OK);
        assert_eq!(app.list("limit=5").await.status, StatusCode::OK);
        let patched = app.patch_task(&id, json!({"title": "Vars again"})).await;
        assert_eq!(patched.status, StatusCode::OK);
        assert_eq!(app.complete(&id, None).await.status, StatusCode::OK);
        let completed = app.outbox_event("task.completed", &id).await;
        let outcome = app
            .dapr
            .deliver_event(&app.sidecar_view(), "kafka-pubsub", "tasks", &completed)
            .await
            .expect("the double delivers");
        assert!(
            matches!(&outcome, DeliveryOutcome::Delivered { answers, .. } if answers == &[AppAnswer::Success]),
            "{outcome:?}"
        );
        let subscribe = app
            .send_as_sidecar(Method::GET, "/dapr/subscribe", &[], Bytes::new())
            .await;
        assert_eq!(subscribe.status, StatusCode::OK);
    }

    /// A variable read is an async host call that suspends the guest, and on Spin 4.0.2 an
    /// answer returned after a suspension loses the head-before-body race far more often (one
    /// read before answering: 96 of 300 stalled for 40 ms; none without). The host does not
    /// lose that race the same way, so it counts the reads instead: an instance reads its
    /// settings on its first request and never again (`todo_adapters::vars`). Reading them per
    /// request, as the app once did, fails here.
    #[tokio::test]
    async fn after_its_first_request_an_instance_answers_without_reading_variables() {
        let app = spawn_app().await;
        let host = app.host().expect("the test host");
        let components = ["tasks-api", "event-intake", "subscriptions"];
        let reads = || components.map(|c| host.host_calls(c).variable_reads());
        every_route_once(&app).await;
        let first = reads();
        assert!(
            first.iter().all(|&reads| reads > 0),
            "each component read its settings once: {first:?}"
        );
        for _ in 0..5 {
            every_route_once(&app).await;
        }
        let after = reads();
        assert_eq!(
            after, first,
            "later requests on the same instances read no variables ({components:?})"
        );
    }
}
