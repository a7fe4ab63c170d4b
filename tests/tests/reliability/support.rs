//! What the reliability checks share: the app under test with the Dapr double, requests with
//! tokens, database checks, a seeded random generator, a private PostgreSQL server that a test
//! may stop and start, and the one-line summary.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use todo_test_host::ReuseConfig;
use todo_test_host::testing::{self, database, spawn_app_on as spawn_on};
use tokio::process::Command;
use uuid::Uuid;

pub use todo_test_host::testing::{JWT_SECRET, TestResponse as Answer, repo_root};

/// The checks of this binary, for the summary line.
const PARTS: usize = 6;

/// The checks run one at a time: each loads both cores, and the outage check stops a server.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A runtime per check, with both cores for the load.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Records that check `order` (0-based) held: `detail` says what it tried, `short` is its part
/// of the summary. Once every check has held, prints the one-line summary (to the terminal
/// directly, past the test harness's output capture).
pub fn held(order: usize, short: String, detail: String) {
    static HELD: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = writeln!(std::io::stderr(), "reliability: {detail}: held");
    held.push((order, short));
    if held.len() == PARTS {
        held.sort();
        let parts: Vec<&str> = held.iter().map(|(_, s)| s.as_str()).collect();
        let _ = writeln!(
            std::io::stderr(),
            "reliability: {}: all held",
            parts.join(", ")
        );
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The app under test (the shared harness's [`testing::TestApp`], whose fields and calls it
/// derefs to), with the calls of these checks, which count an answer that never came.
pub struct TestApp {
    pub app: testing::TestApp,
    /// Whether the manifest routes anything to the event intake.
    pub has_intake: bool,
}

impl std::ops::Deref for TestApp {
    type Target = testing::TestApp;

    fn deref(&self) -> &testing::TestApp {
        &self.app
    }
}

/// How long a request waits for the sidecar before leaving its events to the relay, as the
/// other tests run the app.
pub const PUBLISH_TIMEOUT_MS: u64 = 300;

/// The app on the shared test server.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(PUBLISH_TIMEOUT_MS, ReuseConfig::default()).await
}

/// The app on the shared test server, with `publish_timeout_ms` and instance reuse limits.
pub async fn spawn_app_with(publish_timeout_ms: u64, reuse: ReuseConfig) -> TestApp {
    let (name, port) = database().await.clone();
    spawn_app_on(port, &name, publish_timeout_ms, reuse).await
}

/// The database URL of `db_name` on the server at `127.0.0.1:port`.
pub fn database_url(port: u16, db_name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{db_name}")
}

/// The app on the server at `127.0.0.1:port`, database `db_name`, user `postgres`.
pub async fn spawn_app_on(
    port: u16,
    db_name: &str,
    publish_timeout_ms: u64,
    reuse: ReuseConfig,
) -> TestApp {
    let vars = HashMap::from([
        ("db_port".to_owned(), port.to_string()),
        ("db_name".to_owned(), db_name.to_owned()),
        (
            "publish_timeout_ms".to_owned(),
            publish_timeout_ms.to_string(),
        ),
    ]);
    let app = spawn_on(port, vars, reuse).await;
    let has_intake = app
        .host()
        .is_none_or(|host| host.routes().iter().any(|(_, c, _)| c == "event-intake"));
    TestApp { app, has_intake }
}

pub fn new_user(label: &str) -> String {
    format!("{label}-{}", Uuid::now_v7().simple())
}

/// `Bearer <token>` for `sub`, expiring in `expires_in` seconds, signed with `secret`.
pub fn token(sub: &str, expires_in: i64, secret: &str) -> String {
    format!("Bearer {}", testing::token_for(sub, expires_in, secret))
}

impl TestApp {
    /// Sends a request; the path may hold any bytes a URI allows. `None` when no answer came.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Option<Answer> {
        self.app.try_send(method, path, headers, body).await
    }

    /// A JSON request with a bearer token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &str,
        body: Option<&Value>,
    ) -> Option<Answer> {
        match body {
            Some(body) => {
                let headers = [
                    ("authorization", auth),
                    ("content-type", "application/json"),
                ];
                self.send(method, path, &headers, body.to_string()).await
            }
            None => {
                self.send(method, path, &[("authorization", auth)], Bytes::new())
                    .await
            }
        }
    }

    /// Waits until no publisher holds a lease of `users`, so what requests publish after
    /// their response has happened.
    pub async fn publishing_settled(&self, users: &[String]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let leases: i64 = self
                .db
                .query_one(
                    "select count(*) from outbox_leases where user_id = any($1) and expires_at > now()",
                    &[&users],
                )
                .await
                .expect("count leases")
                .get(0);
            if leases == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a publisher kept its lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the relay, as the Dapr cron binding does, until `users` have nothing pending.
    /// Backoff after failures is skipped by making pending events due: the clock of this test.
    pub async fn relay_until_delivered(&self, users: &[String]) {
        self.publishing_settled(users).await;
        for _ in 0..200 {
            self.db
                .execute(
                    "update outbox set next_attempt_at = now() \
                     where delivered_at is null and user_id = any($1)",
                    &[&users],
                )
                .await
                .expect("make pending events due");
            let pending: i64 = self
                .db
                .query_one(
                    "select count(*) from outbox where delivered_at is null and user_id = any($1)",
                    &[&users],
                )
                .await
                .expect("count pending events")
                .get(0);
            if pending == 0 {
                return;
            }
            let answer = self
                .app
                .send_as_sidecar(Method::POST, "/outbox-relay", &[], Bytes::new())
                .await;
            assert_eq!(answer.status, StatusCode::OK, "relay: {}", answer.text());
        }
        panic!("the relay did not deliver every pending event");
    }

    /// The event ids in the users' outbox rows, by user, in publishing order.
    pub async fn outbox_events(&self, users: &[String]) -> HashMap<String, Vec<String>> {
        let rows = self
            .db
            .query(
                "select user_id, event_id::text from outbox where user_id = any($1) order by seq",
                &[&users],
            )
            .await
            .expect("read the outbox");
        let mut events: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            events.entry(row.get(0)).or_default().push(row.get(1));
        }
        events
    }

    /// How many times the double accepted each event id.
    pub fn deliveries(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for message in self.dapr.messages() {
            if let Some(id) = message.event_id() {
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// SplitMix64: a small, seeded, reproducible random generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A PostgreSQL server of this test process alone, so a test may stop and start it. Stopped
/// and removed on drop.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn server_binaries() -> PathBuf {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (scripts/test.sh installs them)")
}

/// Runs a shell command line, as the `postgres` user when this process is root (initdb and
/// pg_ctl refuse root, as in scripts/lib/common.sh).
async fn run_shell(line: &str) -> bool {
    let mut command = if is_root() {
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", line]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", line]);
        c
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let bin = server_binaries();
        let dir = std::env::temp_dir().join(format!("todo-reliability-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server directory");
        if is_root() {
            let owned = Command::new("chown")
                .args(["postgres", &dir.to_string_lossy()])
                .status()
                .await
                .is_ok_and(|s| s.success());
            assert!(owned, "chown the server directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self { bin, dir, port };
        let initdb = format!(
            "'{}/initdb' -D '{}/data' -U postgres -A trust -E UTF8 --locale=C.UTF-8",
            server.bin.display(),
            server.dir.display()
        );
        assert!(run_shell(&initdb).await, "initdb failed");
        assert!(
            server.start_again().await,
            "the private PostgreSQL did not start"
        );
        server
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub async fn start_again(&self) -> bool {
        let d = self.dir.display();
        run_shell(&format!(
            "'{}/pg_ctl' -D '{d}/data' -l '{d}/server.log' -w -o \"-p {} -k '{d}' \
             -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start",
            self.bin.display(),
            self.port
        ))
        .await
    }

    /// Stops the server the way an operator's restart does: open sessions are terminated.
    pub async fn stop(&self) -> bool {
        run_shell(&format!(
            "'{}/pg_ctl' -D '{}/data' -m fast -w stop",
            self.bin.display(),
            self.dir.display()
        ))
        .await
    }

    /// Creates a database and applies migrations/ with the Kubernetes Job's script.
    pub async fn create_database(&self, name: &str) {
        let admin = connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
        .await;
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create the database");
        let root = repo_root();
        let migrated = Command::new("sh")
            .arg(root.join("k8s/base/postgres/migrate.sh"))
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", name)
            .env("MIGRATIONS_DIR", root.join("migrations"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        assert!(migrated, "migrate.sh failed on the private server");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let line = format!(
            "'{}/pg_ctl' -D '{}/data' -m immediate stop",
            self.bin.display(),
            self.dir.display()
        );
        let _ = if is_root() {
            std::process::Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &line])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            std::process::Command::new("sh")
                .args(["-c", &line])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Shared counters of a concurrent run.
#[derive(Default)]
pub struct Tally {
    pub counts: Mutex<HashMap<String, usize>>,
}

impl Tally {
    pub fn add(&self, key: impl Into<String>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key.into()).or_insert(0) += 1;
    }

    pub fn get(&self, key: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> HashMap<String, usize> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
