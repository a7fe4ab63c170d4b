//! `todo-bench`: the app served on a loopback port, by real Spin (`--runtime spin`, `spin up`
//! of the project's manifest) or by the test host (`--runtime host`, the default), driven by a
//! load generator for a fixed number of requests per scenario and concurrency, next to the
//! floor of the same work done natively. scripts/bench.sh builds everything, starts PostgreSQL
//! and runs it on each runtime it finds; BENCHMARKS.md has the figures and what they mean.
//!
//! ```text
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/todo_bench \
//!   todo-bench [--requests 2000] [--requests-c1 1000] [--concurrency 1,16,64]
//!              [--sizes 1000,10000,100000] [--only create,get,...] [--manifest spin.toml]
//!              [--runtime host|spin] [--spin /path/to/spin]
//! ```
//!
//! Scenarios: `create`, `get`, `list` (one per size), `patch`, `complete`, `intake`,
//! `subscribe`. The database must have the migrations applied; the bench adds its own users.

mod data;
mod floor;
mod load;
mod report;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use futures::FutureExt as _;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use load::{CheckResponse, HttpWorker, MakeRequest, PgOp, PgWorker, Stats, drive, expect_status};
use report::{Measured, WasmSize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use todo_core::events::EventContext;
use todo_core::intake::{self, Guard, Topic, Work};
use todo_core::prefer;
use todo_core::tasks::{self, ListQuery, Task, TaskChanges, UserId, store, time};
use todo_test_host::dapr::{AppClient as _, DaprDouble, HttpApp};
use todo_test_host::testing::SpinApp;
use todo_test_host::{App, ReuseConfig};
use uuid::Uuid;

/// At least 32 random-looking bytes: the app refuses short or placeholder secrets.
const JWT_SECRET: &str = "7RF5te9Mp7ICkpg6aOFWnznWslA_6FimgZrJSgtWt41vbdPR";
/// The app token the bench presents on the routes only the sidecar calls.
const APP_TOKEN: &str = "bench-app-token-Qm9wCq1xZ7rT2vLk8sYd3nHf";
/// Header the sidecar carries the app token in.
const APP_TOKEN_HEADER: &str = "dapr-api-token";
/// How long after a load the outbox may still hold events the writes published themselves.
const CATCH_UP: Duration = Duration::from_secs(1);
/// The list request: pending tasks tagged `work` of high or medium priority, by due date.
const LIST_QUERY: &str = "status=pending&priority=high,medium&tags=work&sort=due_at&limit=50";
/// Tasks each worker of the patch and complete scenarios cycles through.
const TASKS_PER_WRITER: i32 = 16;
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

struct Args {
    manifest: PathBuf,
    requests: usize,
    requests_c1: usize,
    concurrency: Vec<usize>,
    sizes: Vec<i32>,
    only: Option<Vec<String>>,
    instantiations: usize,
    /// Measure the app only (for profiling it).
    no_floor: bool,
    /// `spin` to serve the app with real Spin, `host` with the test host.
    runtime: String,
    spin: Option<PathBuf>,
}

fn list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow!("invalid list item {s:?}"))
        })
        .collect()
}

fn parse_args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut args = Args {
        manifest: root.join("spin.toml"),
        requests: 2000,
        requests_c1: 1000,
        concurrency: vec![1, 16, 64],
        sizes: vec![1_000, 10_000, 100_000],
        only: None,
        instantiations: 300,
        no_floor: false,
        runtime: "host".to_owned(),
        spin: std::env::var_os("SPIN_BIN").map(PathBuf::from),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--manifest" => args.manifest = value()?.into(),
            "--requests" => args.requests = value()?.parse()?,
            "--requests-c1" => args.requests_c1 = value()?.parse()?,
            "--concurrency" => args.concurrency = list(&value()?)?,
            "--sizes" => args.sizes = list(&value()?)?,
            "--only" => args.only = Some(list(&value()?)?),
            "--instantiations" => args.instantiations = value()?.parse()?,
            "--no-floor" => args.no_floor = true,
            "--runtime" => args.runtime = value()?,
            "--spin" => args.spin = Some(value()?.into()),
            "-h" | "--help" => {
                println!("{}", include_str!("usage.txt"));
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(
        args.requests > 0 && args.requests_c1 > 0,
        "request counts must be positive"
    );
    ensure!(
        matches!(args.runtime.as_str(), "host" | "spin"),
        "--runtime is host or spin, not {:?}",
        args.runtime
    );
    ensure!(
        args.runtime != "spin" || args.spin.is_some(),
        "--runtime spin needs --spin PATH or SPIN_BIN"
    );
    Ok(args)
}

fn progress(message: std::fmt::Arguments<'_>) {
    eprintln!("[bench] {message}");
}

/// What serves the app: the test host in process, or a `spin up` child reached over HTTP.
enum Served {
    Host(App),
    /// The process is held only to stop it when the bench ends.
    Spin {
        _process: SpinApp,
        client: HttpApp,
    },
}

impl Served {
    async fn handle(&self, request: Request<Bytes>) -> Result<http::Response<Bytes>> {
        match self {
            Served::Host(app) => app.handle(request).await,
            Served::Spin { client, .. } => client.call(request).await,
        }
    }
}

struct Bench {
    args: Args,
    app: Served,
    addr: SocketAddr,
    vars: HashMap<String, String>,
    db_url: String,
    admin: tokio_postgres::Client,
    dapr: Arc<DaprDouble>,
    run: String,
    next_op: usize,
    events: EventContext,
    results: Vec<Measured>,
}

impl Bench {
    fn wants(&self, scenario: &str) -> bool {
        self.args
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }

    fn requests(&self, concurrency: usize) -> usize {
        if concurrency == 1 {
            self.args.requests_c1
        } else {
            self.args.requests
        }
    }

    /// Fresh operation numbers, unique over the whole process.
    fn ops(&mut self, n: usize) -> Range<usize> {
        let start = self.next_op;
        self.next_op += n;
        start..self.next_op
    }

    fn warmup(concurrency: usize) -> usize {
        (concurrency * 4).max(20)
    }

    async fn measure_http(
        &mut self,
        addr: SocketAddr,
        concurrency: usize,
        make: MakeRequest,
        check: CheckResponse,
    ) -> Result<Stats> {
        let mut workers = Vec::with_capacity(concurrency);
        for index in 0..concurrency {
            workers.push(HttpWorker::connect(addr, index, make.clone(), check.clone()).await?);
        }
        let warm = self.ops(Self::warmup(concurrency));
        let (workers, _) = drive(workers, warm).await?;
        let measured = self.ops(self.requests(concurrency));
        let (_, stats) = drive(workers, measured).await?;
        Ok(stats)
    }

    async fn measure_pg(&mut self, concurrency: usize, op: PgOp) -> Result<Option<Stats>> {
        if self.args.no_floor {
            return Ok(None);
        }
        let mut workers = Vec::with_capacity(concurrency);
        for index in 0..concurrency {
            workers.push(PgWorker::connect(&self.db_url, index, op.clone()).await?);
        }
        let warm = self.ops(Self::warmup(concurrency));
        let (workers, _) = drive(workers, warm).await?;
        let measured = self.ops(self.requests(concurrency));
        let (_, stats) = drive(workers, measured).await?;
        Ok(Some(stats))
    }

    fn record(
        &mut self,
        scenario: &str,
        concurrency: usize,
        app: Stats,
        floor: Option<Stats>,
        note: String,
    ) {
        progress(format_args!(
            "{scenario} c={concurrency}: app {:.0}/s p99 {} ms{}",
            app.per_second(),
            report::ms(app.percentile_ms(99.0)),
            floor.as_ref().map_or(String::new(), |f| format!(
                ", floor {:.0}/s p99 {} ms",
                f.per_second(),
                report::ms(f.percentile_ms(99.0))
            )),
        ));
        self.results.push(Measured {
            scenario: scenario.to_owned(),
            concurrency,
            app,
            floor,
            note,
        });
    }

    /// One request in process, outside any measurement.
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1{path}"));
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        } else {
            request = request.header(APP_TOKEN_HEADER, APP_TOKEN);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&body)?)
            }
            None => Bytes::new(),
        };
        let response = self.app.handle(request.body(body)?).await?;
        Ok((response.status(), response.into_body()))
    }

    /// Waits for the publishes requests started after their responses, then relays what they
    /// left, so the next measurement starts with an idle app. Returns the events the double
    /// accepted since it was last cleared.
    async fn settle(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leases: i64 = self
                .admin
                .query_one("select count(*) from outbox_leases", &[])
                .await?
                .get(0);
            if leases == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..100 {
            let pending: i64 = self
                .admin
                .query_one(
                    "select count(*) from outbox where delivered_at is null",
                    &[],
                )
                .await?
                .get(0);
            if pending == 0 {
                break;
            }
            let (status, body) = self.call(Method::POST, "/outbox-relay", None, None).await?;
            ensure!(
                status == StatusCode::OK,
                "relay answered {status}: {body:?}"
            );
        }
        let published = self.dapr.messages().len();
        self.dapr.clear();
        Ok(published)
    }

    /// How the writes' own publishing kept up, without any relay run: the outbox rows still
    /// pending when the load stopped and [`CATCH_UP`] later, and the events the double took
    /// per write and more than once.
    async fn catch_up(&self, users: &[String], writes: i64) -> Result<String> {
        let pending = || async {
            Ok::<i64, anyhow::Error>(
                self.admin
                    .query_one(
                        "select count(*) from outbox where user_id = any($1) \
                         and delivered_at is null and dead_at is null",
                        &[&users],
                    )
                    .await?
                    .get(0),
            )
        };
        let stopped = Instant::now();
        let at_stop = pending().await?;
        let mut left = at_stop;
        while left > 0 && stopped.elapsed() < CATCH_UP {
            tokio::time::sleep(Duration::from_millis(10)).await;
            left = pending().await?;
        }
        let drained = if left == 0 {
            format!("0 after {} ms", stopped.elapsed().as_millis())
        } else {
            format!("{left} after {} ms", CATCH_UP.as_millis())
        };
        let messages = self.dapr.messages();
        let ids: std::collections::HashSet<String> = messages
            .iter()
            .filter_map(|m| m.body.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        Ok(format!(
            "pending at stop {at_stop}, {drained}; {:.2} events per write, {} duplicates",
            ids.len() as f64 / writes as f64,
            messages.len() - ids.len()
        ))
    }

    fn users(&self, scenario: &str, concurrency: usize, side: &str) -> Vec<String> {
        (0..concurrency)
            .map(|w| format!("{}-{scenario}-{side}-c{concurrency}-w{w}", self.run))
            .collect()
    }
}

fn request(
    method: Method,
    path: &str,
    auth: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1");
    if auth.is_empty() {
        builder = builder.header(APP_TOKEN_HEADER, APP_TOKEN);
    } else {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

fn create_body(op: usize) -> Bytes {
    let priority = ["low", "medium", "high"][op % 3];
    Bytes::from(
        json!({
            "title": format!("Bench task {op}"),
            "description": "Created by the benchmark",
            "priority": priority,
            "tags": ["bench", format!("t{}", op % 5)],
            "due_at": "2026-06-01T09:00:00+02:00",
        })
        .to_string(),
    )
}

fn patch_body(op: usize) -> Bytes {
    Bytes::from(json!({ "title": format!("Renamed {op}") }).to_string())
}

fn api<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// Creates tasks for the users of a write scenario and returns each user's token and ids.
async fn writers(bench: &Bench, users: &[String]) -> Result<Arc<Vec<(String, String, Vec<Uuid>)>>> {
    data::bulk_load(&bench.admin, users, TASKS_PER_WRITER).await?;
    data::settle_tasks(&bench.admin).await?;
    let mut ids = data::task_ids(&bench.admin, users).await?;
    Ok(Arc::new(
        users
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    data::token(u, JWT_SECRET),
                    ids.remove(u).unwrap_or_default(),
                )
            })
            .collect(),
    ))
}

/// Creates, answered with the task (`minimal: false`) or, with `Prefer: return=minimal`,
/// without a body (RFC 7240), the kind of answer Spin 4.0.2 never holds back (BENCHMARKS.md,
/// "The 40 ms stall").
async fn scenario_create(bench: &mut Bench, concurrency: usize, minimal: bool) -> Result<()> {
    let scenario = if minimal { "create-minimal" } else { "create" };
    let users: Arc<Vec<(String, String)>> = Arc::new(
        bench
            .users(scenario, concurrency, "app")
            .into_iter()
            .map(|u| {
                let t = data::token(&u, JWT_SECRET);
                (u, t)
            })
            .collect(),
    );
    let writers = users.clone();
    let make: MakeRequest = Arc::new(move |w, op| {
        let (user, token) = &writers[w];
        let mut req = request(
            Method::POST,
            &format!("/api/{user}/tasks"),
            token,
            Some("application/json"),
            create_body(op),
        );
        if minimal {
            req.headers_mut().insert(
                prefer::PREFER,
                http::HeaderValue::from_static(prefer::RETURN_MINIMAL),
            );
        }
        req
    });
    let writes = (Bench::warmup(concurrency) + bench.requests(concurrency)) as i64;
    let app = bench
        .measure_http(
            bench.addr,
            concurrency,
            make,
            expect_status(StatusCode::CREATED),
        )
        .await?;
    let app_users: Vec<String> = users.iter().map(|(u, _)| u.clone()).collect();
    let catch_up = bench.catch_up(&app_users, writes).await?;
    let published = bench.settle().await?;

    let floor_users = Arc::new(bench.users(scenario, concurrency, "floor"));
    let events = bench.events.clone();
    let op: PgOp = Arc::new(move |client, w, op| {
        let user = floor_users[w].clone();
        let events = events.clone();
        async move {
            let changes = tasks::parse_create(&create_body(op))?;
            let user = UserId::parse(&user).map_err(|e| anyhow!("{e:?}"))?;
            let now = time::now();
            let task = Task::create(Uuid::now_v7(), &user, changes, now);
            let rows = [events.created(&task, now)];
            let n = floor::count(&client, &store::insert(&task, &rows, None)).await?;
            ensure!(n == 1, "inserted {n}");
            serde_json::to_vec(&task)?;
            Ok(())
        }
        .boxed()
    });
    let floor = bench.measure_pg(concurrency, op).await?;
    let note = format!("{catch_up}; {published} published in all");
    progress(format_args!("{scenario} c={concurrency}: {catch_up}"));
    let name = if minimal {
        "create, Prefer: return=minimal"
    } else {
        "create"
    };
    bench.record(name, concurrency, app, floor, note);
    Ok(())
}

async fn scenario_get(bench: &mut Bench, concurrency: usize, user: &str) -> Result<()> {
    let ids = Arc::new(data::sample_ids(&bench.admin, user, 1000).await?);
    ensure!(!ids.is_empty(), "no tasks to read");
    let token = Arc::new(data::token(user, JWT_SECRET));
    let (u, i) = (user.to_owned(), ids.clone());
    let make: MakeRequest = Arc::new(move |_, op| {
        let id = i[op % i.len()];
        request(
            Method::GET,
            &format!("/api/{u}/tasks/{id}"),
            &token,
            None,
            Bytes::new(),
        )
    });
    let app = bench
        .measure_http(bench.addr, concurrency, make, expect_status(StatusCode::OK))
        .await?;
    let u = user.to_owned();
    let op: PgOp = Arc::new(move |client, _, op| {
        let statement = store::get(&u, ids[op % ids.len()]);
        async move {
            let found = floor::tasks(&client, &statement).await?;
            ensure!(found.len() == 1, "found {} tasks", found.len());
            serde_json::to_vec(&found[0])?;
            Ok(())
        }
        .boxed()
    });
    let floor = bench.measure_pg(concurrency, op).await?;
    bench.record("get by id", concurrency, app, floor, String::new());
    Ok(())
}

async fn scenario_list(bench: &mut Bench, concurrency: usize, user: &str, size: i32) -> Result<()> {
    let token = data::token(user, JWT_SECRET);
    let path = format!("/api/{user}/tasks?{LIST_QUERY}");
    let (status, body) = bench.call(Method::GET, &path, Some(&token), None).await?;
    ensure!(status == StatusCode::OK, "list answered {status}");
    let page: Value = serde_json::from_slice(&body)?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    ensure!(items == 50, "the list page has {items} items, not 50");
    let make: MakeRequest =
        Arc::new(move |_, _| request(Method::GET, &path, &token, None, Bytes::new()));
    let app = bench
        .measure_http(bench.addr, concurrency, make, expect_status(StatusCode::OK))
        .await?;
    let query = ListQuery::parse(LIST_QUERY).map_err(api)?;
    let statement = query.statement(user);
    let op: PgOp = Arc::new(move |client, _, _| {
        let (query, statement) = (query.clone(), statement.clone());
        async move {
            let found = floor::tasks(&client, &statement).await?;
            let page = query.page(found);
            ensure!(page.items.len() == 50, "page of {}", page.items.len());
            serde_json::to_vec(&page)?;
            Ok(())
        }
        .boxed()
    });
    let floor = bench.measure_pg(concurrency, op).await?;
    let label = format!("list, {}k tasks", size / 1000);
    bench.record(&label, concurrency, app, floor, String::new());
    Ok(())
}

/// Loads the task, applies the change and writes it with its events, as the component does.
async fn floor_update(
    client: &tokio_postgres::Client,
    events: &EventContext,
    user: &str,
    id: Uuid,
    changes_for: impl Fn(&Task) -> Result<TaskChanges>,
) -> Result<()> {
    let current = floor::tasks(client, &store::get(user, id))
        .await?
        .pop()
        .ok_or_else(|| anyhow!("task {id} not found"))?;
    let now = time::now();
    let (next, changed) = current.apply(&changes_for(&current)?, now);
    ensure!(!changed.is_empty(), "nothing changed");
    let rows = events.for_change(&next, &changed, now);
    let n = floor::count(client, &store::update(&next, current.version, &rows, None)).await?;
    ensure!(n == 1, "updated {n}");
    serde_json::to_vec(&next)?;
    Ok(())
}

async fn scenario_update(bench: &mut Bench, concurrency: usize, complete: bool) -> Result<()> {
    let name = if complete { "complete" } else { "patch" };
    let app_writers = writers(bench, &bench.users(name, concurrency, "app")).await?;
    let make: MakeRequest = Arc::new(move |w, op| {
        let (user, token, ids) = &app_writers[w];
        let id = ids[op % ids.len()];
        if complete {
            request(
                Method::PATCH,
                &format!("/api/{user}/tasks/{id}/complete"),
                token,
                None,
                Bytes::new(),
            )
        } else {
            request(
                Method::PATCH,
                &format!("/api/{user}/tasks/{id}"),
                token,
                Some("application/json"),
                patch_body(op),
            )
        }
    });
    let app = bench
        .measure_http(bench.addr, concurrency, make, expect_status(StatusCode::OK))
        .await?;
    let published = bench.settle().await?;

    let floor_writers = writers(bench, &bench.users(name, concurrency, "floor")).await?;
    let events = bench.events.clone();
    let op: PgOp = Arc::new(move |client, w, op| {
        let (user, _, ids) = &floor_writers[w];
        let (user, id, events) = (user.clone(), ids[op % ids.len()], events.clone());
        async move {
            if complete {
                floor_update(&client, &events, &user, id, |current| {
                    Ok(TaskChanges {
                        completed: Some(!current.completed),
                        ..TaskChanges::default()
                    })
                })
                .await
            } else {
                let changes = tasks::parse_patch(&patch_body(op))?;
                floor_update(&client, &events, &user, id, |_| Ok(changes.clone())).await
            }
        }
        .boxed()
    });
    let floor = bench.measure_pg(concurrency, op).await?;
    let label = if complete {
        "complete (toggle)"
    } else {
        "update (PATCH)"
    };
    bench.record(
        label,
        concurrency,
        app,
        floor,
        format!("{published} events published to the double"),
    );
    Ok(())
}

/// A real `task.completed` of a recurring task, made through the API, and the task's id.
async fn completion_template(bench: &Bench, user: &str) -> Result<(Value, String)> {
    let token = data::token(user, JWT_SECRET);
    let body = json!({"title": "Water the plants", "due_at": "2026-03-02T08:00:00Z",
                      "recurrence": {"frequency": "daily"}});
    let (status, created) = bench
        .call(
            Method::POST,
            &format!("/api/{user}/tasks"),
            Some(&token),
            Some(body),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "create answered {status}");
    let id = serde_json::from_slice::<Value>(&created)?["id"]
        .as_str()
        .context("created task has an id")?
        .to_owned();
    let (status, _) = bench
        .call(
            Method::PATCH,
            &format!("/api/{user}/tasks/{id}/complete"),
            Some(&token),
            None,
        )
        .await?;
    ensure!(status == StatusCode::OK, "complete answered {status}");
    let event: Value = bench
        .admin
        .query_one(
            "select event from outbox where user_id = $1 and event->>'type' = 'task.completed' \
             and event->>'subject' = $2",
            &[&user, &id],
        )
        .await
        .context("the task.completed event is in the outbox")?
        .get(0);
    Ok((event, id))
}

async fn next_occurrences(bench: &Bench, user: &str) -> Result<i64> {
    Ok(bench
        .admin
        .query_one(
            "select count(*) from tasks where user_id = $1 and occurrence = 1",
            &[&user],
        )
        .await?
        .get(0))
}

async fn scenario_intake(bench: &mut Bench, concurrency: usize) -> Result<()> {
    let user = format!("{}-intake-c{concurrency}", bench.run);
    let (template, task_id) = completion_template(bench, &user).await?;
    // One stored completed task per operation of the app's and the floor's runs.
    let prefix = Uuid::now_v7().as_u64_pair().1;
    let first = bench.next_op;
    let total = 2 * (Bench::warmup(concurrency) + bench.requests(concurrency));
    let copies: Vec<Uuid> = (first..first + total)
        .map(|op| data::completed_copy(prefix, op))
        .collect();
    let original = Uuid::parse_str(&task_id)?;
    data::clone_completed(&bench.admin, &user, original, &copies).await?;
    data::settle_tasks(&bench.admin).await?;
    bench.settle().await?;
    let template = Arc::new((template, task_id));
    let t = template.clone();
    let make: MakeRequest = Arc::new(move |_, op| {
        let event = data::fresh_completion(&t.0, &t.1, data::completed_copy(prefix, op));
        request(
            Method::POST,
            "/api/events/tasks",
            "",
            Some(CLOUDEVENTS_JSON),
            Bytes::from(event.to_string()),
        )
    });
    let check: CheckResponse = Arc::new(|status, body| {
        ensure!(
            status == StatusCode::NO_CONTENT && body.is_empty(),
            "answered {status}: {}",
            String::from_utf8_lossy(body)
        );
        Ok(())
    });
    let before = next_occurrences(bench, &user).await?;
    let app = bench
        .measure_http(bench.addr, concurrency, make, check)
        .await?;
    let created = next_occurrences(bench, &user).await? - before;
    let published = bench.settle().await?;

    let events = bench.events.clone();
    let op: PgOp = Arc::new(move |client, _, op| {
        let copy = data::completed_copy(prefix, op);
        let body = data::fresh_completion(&template.0, &template.1, copy).to_string();
        let events = events.clone();
        async move {
            let delivery = intake::parse(Topic::Tasks, Some(CLOUDEVENTS_JSON), body.as_bytes())
                .map_err(api)?;
            let now = time::now();
            let Work::CheckTask(copy) = intake::plan(&delivery) else {
                bail!("the event causes no work");
            };
            // As the intake does: the event's copy, written from only if the stored row
            // holds it (`Guard::Copy`), so no read.
            let Work::CreateNext(next) = intake::next_occurrence(Some(&copy), Uuid::now_v7(), now)
            else {
                bail!("the completed task causes no work");
            };
            let events = EventContext {
                traceparent: delivery.traceparent.clone(),
                ..events
            };
            let rows = [events.created(&next, now)];
            let statement = intake::record_next_occurrence(
                &delivery.key,
                &copy,
                Guard::Copy,
                &next,
                &rows,
                None,
            );
            let result = floor::run(&client, &statement).await?;
            let row = result.first().context("no result row")?;
            let counts: (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            ensure!(counts == (1, 1, 1), "recorded {counts:?}");
            Ok(())
        }
        .boxed()
    });
    let floor = bench.measure_pg(concurrency, op).await?;
    let note = format!("{created} next occurrences created, {published} events published");
    bench.record(
        "event intake (task.completed)",
        concurrency,
        app,
        floor,
        note,
    );
    Ok(())
}

async fn scenario_subscribe(bench: &mut Bench, concurrency: usize, bare: SocketAddr) -> Result<()> {
    let make: MakeRequest =
        Arc::new(|_, _| request(Method::GET, "/dapr/subscribe", "", None, Bytes::new()));
    let app = bench
        .measure_http(
            bench.addr,
            concurrency,
            make.clone(),
            expect_status(StatusCode::OK),
        )
        .await?;
    let floor = if bench.args.no_floor {
        None
    } else {
        Some(
            bench
                .measure_http(bare, concurrency, make, expect_status(StatusCode::OK))
                .await?,
        )
    };
    bench.record(
        "GET /dapr/subscribe (no database)",
        concurrency,
        app,
        floor,
        "floor: bare hyper server".into(),
    );
    Ok(())
}

/// Median time of `n` sequential in-process requests.
async fn median_ms(
    app: &App,
    n: usize,
    make: &dyn Fn() -> Request<Bytes>,
    expect: StatusCode,
) -> Result<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = app.handle(make()).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        ensure!(
            response.status() == expect,
            "answered {}",
            response.status()
        );
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Per-request instantiation: the same cheap request with instance reuse (Spin's default)
/// and with a fresh instance every time.
async fn instantiation(bench: &Bench, app: &App) -> Result<String> {
    let fresh = App::load_with(
        &bench.args.manifest,
        bench.vars.clone(),
        ReuseConfig::no_reuse(),
    )?;
    let n = bench.args.instantiations;
    let cases: [(&str, &str, StatusCode); 2] = [
        (
            "subscriptions: `GET /dapr/subscribe`",
            "/dapr/subscribe",
            StatusCode::OK,
        ),
        (
            "tasks-api: `GET /api/u/tasks` without a token (401, no database)",
            "/api/u/tasks",
            StatusCode::UNAUTHORIZED,
        ),
    ];
    let mut out = String::from(
        "| component and request | reused instance, median ms | fresh instance, median ms | instantiation cost, ms |\n|---|---:|---:|---:|\n",
    );
    for (label, path, status) in cases {
        let make = || {
            Request::builder()
                .uri(format!("http://127.0.0.1{path}"))
                .body(Bytes::new())
                .unwrap_or_default()
        };
        median_ms(app, 20, &make, status).await?;
        median_ms(&fresh, 20, &make, status).await?;
        let reused = median_ms(app, n, &make, status).await?;
        let fresh_ms = median_ms(&fresh, n, &make, status).await?;
        out.push_str(&format!(
            "| {label} | {} | {} | {} |\n",
            report::ms(reused),
            report::ms(fresh_ms),
            report::ms(fresh_ms - reused)
        ));
    }
    Ok(out)
}

fn wasm_sizes(manifest: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)?;
    let doc: toml::Table = toml::from_str(&text)?;
    let base = manifest.parent().unwrap_or(std::path::Path::new("."));
    let mut out = String::from(
        "| component | .wasm bytes | custom sections (names, producers, debug) | DWARF | name section |\n|---|---:|---:|---|---|\n",
    );
    let components = doc
        .get("component")
        .and_then(|c| c.as_table())
        .context("spin.toml has no components")?;
    for (id, component) in components {
        let Some(source) = component.get("source").and_then(|s| s.as_str()) else {
            continue;
        };
        let size = WasmSize::read(&base.join(source))?;
        out.push_str(&format!(
            "| {id} | {} | {} | {} | {} |\n",
            size.total,
            size.custom_bytes(),
            if size.has_debug_info() {
                "yes"
            } else {
                "stripped"
            },
            if size.has_name_section() {
                "kept"
            } else {
                "stripped"
            },
        ));
    }
    Ok(out)
}

async fn database_facts(client: &tokio_postgres::Client) -> Result<String> {
    let mut facts = Vec::new();
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
    ] {
        let row = client.query_one(&format!("show {setting}"), &[]).await?;
        facts.push(format!("{setting}={}", row.get::<_, String>(0)));
    }
    Ok(facts.join(", "))
}

fn app_vars(db_url: &str, dapr: &DaprDouble) -> Result<HashMap<String, String>> {
    let config: tokio_postgres::Config = db_url.parse().context("BENCH_DATABASE_URL")?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => bail!("BENCH_DATABASE_URL must name a TCP host"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    Ok([
        ("db_host", host),
        ("db_port", port.to_string()),
        ("db_name", config.get_dbname().unwrap_or("todo").to_owned()),
        (
            "db_user",
            config.get_user().unwrap_or("postgres").to_owned(),
        ),
        ("db_password", password),
        ("jwt_secret", JWT_SECRET.to_owned()),
        ("app_api_token", APP_TOKEN.to_owned()),
        ("dapr_host", dapr.host()),
        ("dapr_http_port", dapr.port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let db_url = std::env::var("BENCH_DATABASE_URL")
        .context("set BENCH_DATABASE_URL to a migrated database (scripts/bench.sh does)")?;
    let (admin, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .context("connecting to BENCH_DATABASE_URL")?;
    tokio::spawn(connection);
    let dapr = Arc::new(DaprDouble::start().await);
    let vars = app_vars(&db_url, &dapr)?;
    // Instances are kept for the whole run. Spin 4.0.2 (wasmtime 44) retires an instance after
    // 128 requests, or 1 s idle, once the response bodies are done, without waiting for the
    // guest's work after its response, and so does the test host: a publish cut off that way
    // leaves a user's publishing lease held until it expires, so that user's later writes would
    // skip publishing and look cheaper than they are. Instantiation is measured on its own.
    let reuse = ReuseConfig {
        max_reuse: usize::MAX,
        idle_timeout: Duration::from_secs(600),
        ..ReuseConfig::default()
    };
    let host = App::load_with(&args.manifest, vars.clone(), reuse)
        .context("loading the app (build the components first)")?;
    let has_intake = host
        .routes()
        .iter()
        .any(|(_, component, _)| component == "event-intake");
    let (app, addr) = match args.spin.clone().filter(|_| args.runtime == "spin") {
        Some(spin) => {
            let (manifest, vars) = (args.manifest.clone(), vars.clone());
            let served =
                tokio::task::spawn_blocking(move || SpinApp::start(&spin, &manifest, &vars))
                    .await??;
            let url = served.url();
            let addr: SocketAddr = url.trim_start_matches("http://").parse()?;
            (
                Served::Spin {
                    _process: served,
                    client: HttpApp::new(url),
                },
                addr,
            )
        }
        None => {
            let (addr, server) = host.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            tokio::spawn(server);
            (Served::Host(host), addr)
        }
    };
    progress(format_args!("app served by {} on {addr}", args.runtime));

    let mut bench = Bench {
        args,
        app,
        addr,
        vars,
        db_url,
        admin,
        dapr,
        run: Uuid::now_v7().simple().to_string()[20..].to_owned(),
        next_op: 0,
        events: EventContext {
            source: "/todo-spin/tasks".to_owned(),
            topic: "tasks".to_owned(),
            traceparent: None,
        },
        results: Vec::new(),
    };
    let started = Instant::now();
    let db_facts = database_facts(&bench.admin).await?;

    // Users with 1k, 10k and 100k tasks for the list and get scenarios.
    let mut list_users = Vec::new();
    if bench.wants("list") || bench.wants("get") {
        for &size in &bench.args.sizes.clone() {
            let user = format!("{}-list-{size}", bench.run);
            let t = Instant::now();
            data::bulk_load(&bench.admin, std::slice::from_ref(&user), size).await?;
            progress(format_args!(
                "loaded {size} tasks for {user} in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
            list_users.push((user, size));
        }
        data::settle_tasks(&bench.admin).await?;
    }
    let concurrency = bench.args.concurrency.clone();
    for &c in &concurrency {
        if bench.wants("create") {
            scenario_create(&mut bench, c, false).await?;
        }
        if bench.wants("create-minimal") {
            scenario_create(&mut bench, c, true).await?;
        }
        if bench.wants("get")
            && let Some((user, _)) = list_users.last()
        {
            scenario_get(&mut bench, c, &user.clone()).await?;
        }
        if bench.wants("list") {
            for (user, size) in list_users.clone() {
                scenario_list(&mut bench, c, &user, size).await?;
            }
        }
        if bench.wants("patch") {
            scenario_update(&mut bench, c, false).await?;
        }
        if bench.wants("complete") {
            scenario_update(&mut bench, c, true).await?;
        }
        if bench.wants("intake") && has_intake {
            scenario_intake(&mut bench, c).await?;
        }
        if bench.wants("subscribe") {
            let (status, body) = bench
                .call(Method::GET, "/dapr/subscribe", None, None)
                .await?;
            ensure!(status == StatusCode::OK, "subscribe answered {status}");
            let bare = floor::static_json_server(body).await?;
            scenario_subscribe(&mut bench, c, bare).await?;
        }
    }
    let instantiation = match &bench.app {
        Served::Host(app) => instantiation(&bench, app).await?,
        Served::Spin { .. } => {
            "Not measured on Spin, whose instance reuse the bench cannot control.\n".to_owned()
        }
    };
    let sizes = wasm_sizes(&bench.args.manifest)?;

    bench
        .results
        .sort_by_key(|r| (order(&r.scenario), r.concurrency));
    println!("## Results: {}\n", runtime_label(&bench));
    println!("Machine: {}", report::machine());
    println!("PostgreSQL: {db_facts}");
    println!(
        "Requests per scenario and concurrency: {} ({} at concurrency 1), after a warm-up; latencies in ms.\n",
        bench.args.requests, bench.args.requests_c1
    );
    println!("{}", report::table(&bench.results));
    if !has_intake {
        println!(
            "Event intake: skipped, spin.toml routes nothing to an `event-intake` component.\n"
        );
    }
    println!("{}", targets(&bench.results));
    println!("### Per-request instantiation\n\n{instantiation}");
    println!("### Component sizes (release)\n\n{sizes}");
    println!("Total run time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn runtime_label(bench: &Bench) -> String {
    match &bench.args.spin {
        Some(spin) if bench.args.runtime == "spin" => {
            let version = std::process::Command::new(spin)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|_| "spin".to_owned());
            format!("real Spin ({version})")
        }
        _ => "test host".to_owned(),
    }
}

fn order(scenario: &str) -> usize {
    [
        "create",
        "create, Prefer: return=minimal",
        "get by id",
        "list, 1k tasks",
        "list, 10k tasks",
        "list, 100k tasks",
        "update (PATCH)",
        "complete (toggle)",
        "event intake (task.completed)",
        "GET /dapr/subscribe (no database)",
    ]
    .iter()
    .position(|s| *s == scenario)
    .unwrap_or(usize::MAX)
}

/// The speed targets (on real Spin 4.0.2, two cores, the load generator beside it), checked
/// against this run: concurrency-1 medians, concurrency-16 shares of the floor and tails, and
/// event intake at the pace one partition is delivered.
fn targets(results: &[Measured]) -> String {
    let at = |scenario: &str, c: usize| {
        results
            .iter()
            .find(|r| r.scenario == scenario && r.concurrency == c)
    };
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let mut out = String::from("### Targets\n\n");
    for (scenario, limit) in [
        ("get by id", 2.0),
        ("GET /dapr/subscribe (no database)", 2.0),
        ("create", 4.0),
        ("create, Prefer: return=minimal", 4.0),
    ] {
        if let Some(row) = at(scenario, 1) {
            let p50 = row.app.percentile_ms(50.0);
            out.push_str(&format!(
                "- {scenario} at concurrency 1: p50 {} ms (target < {limit} ms): {}\n",
                report::ms(p50),
                verdict(p50 < limit)
            ));
        }
    }
    for scenario in ["create", "get by id"] {
        if let Some(row) = at(scenario, 16) {
            if let Some(ratio) = row.ratio() {
                out.push_str(&format!(
                    "- {scenario} at concurrency 16: app/floor {ratio:.2} (target >= 0.3): {}\n",
                    verdict(ratio >= 0.3)
                ));
            }
            let p99 = row.app.percentile_ms(99.0);
            out.push_str(&format!(
                "- {scenario} at concurrency 16: p99 {} ms (target < 25 ms): {}\n",
                report::ms(p99),
                verdict(p99 < 25.0)
            ));
        }
    }
    if let Some(row) = at("event intake (task.completed)", 1) {
        let rate = row.app.per_second();
        out.push_str(&format!(
            "- event intake at concurrency 1: {rate:.0} events/s (target >= 500): {}\n",
            verdict(rate >= 500.0)
        ));
    }
    let lists: Vec<&Measured> = results
        .iter()
        .filter(|r| r.scenario.starts_with("list"))
        .collect();
    for c in [1, 16, 64] {
        let rows: Vec<&&Measured> = lists.iter().filter(|r| r.concurrency == c).collect();
        if let (Some(first), Some(last)) = (rows.first(), rows.last())
            && rows.len() > 1
        {
            out.push_str(&format!(
                "- list cost at concurrency {c}, {} -> {}: mean latency {} -> {} ms (x{:.2}), throughput x{:.2}\n",
                first.scenario.trim_start_matches("list, "),
                last.scenario.trim_start_matches("list, "),
                report::ms(first.app.mean_ms()),
                report::ms(last.app.mean_ms()),
                last.app.mean_ms() / first.app.mean_ms(),
                last.app.per_second() / first.app.per_second(),
            ));
        }
    }
    out
}
