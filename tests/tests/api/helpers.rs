//! `spawn_app()` and the typed calls the tests make.
//!
//! One database per test binary (cloned from the migrated template); each test works as its
//! own fresh user, which every statement is scoped by, so tests run in parallel without
//! seeing each other.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use todo_test_host::dapr::AppClient;
use todo_test_host::dapr::DaprDouble;
use todo_test_host::{App, ReuseConfig};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// At least 32 random-looking bytes: the app refuses short or placeholder secrets.
pub const JWT_SECRET: &str = "d-VEA3KGfDsgH3ngwXXtRjpWG5J8mIAKsyVR0lPuWdNb60Qm";

pub struct TestApp {
    pub app: App,
    pub dapr: Arc<DaprDouble>,
    /// The user this test acts as.
    pub user: String,
    pub db: Arc<tokio_postgres::Client>,
    pub db_name: String,
    pub db_port: u16,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
        problem
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
    )
}

/// The database of this test binary, cloned once from the migrated template.
pub async fn database() -> &'static (String, u16) {
    static DB: OnceCell<(String, u16)> = OnceCell::const_new();
    DB.get_or_init(|| async {
        let server = server_url();
        let template = std::env::var("TEST_TEMPLATE_DB").unwrap_or_else(|_| "todo_template".into());
        let name = format!("todo_test_{}", std::process::id());
        let (client, connection) =
            tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL server");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("create database {name} template {template}"))
            .await
            .expect("create the test database");
        let port = server
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("TEST_DATABASE_URL ends with :port");
        (name, port)
    })
    .await
}

pub async fn connect(db_name: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("{}/{db_name}", server_url()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

pub fn new_user() -> String {
    format!("user-{}", Uuid::now_v7().simple())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(HashMap::new(), ReuseConfig::default()).await
}

/// Variables as the tests run the app: the test database, the double as sidecar, a known JWT
/// secret. `extra` overrides any of them.
pub async fn spawn_app_with(extra: HashMap<String, String>, reuse: ReuseConfig) -> TestApp {
    let (db_name, db_port) = database().await.clone();
    let dapr = DaprDouble::start().await;
    let mut vars: HashMap<String, String> = [
        ("db_host", "127.0.0.1".to_owned()),
        ("db_port", db_port.to_string()),
        ("db_name", db_name.clone()),
        ("db_user", "postgres".to_owned()),
        ("db_password", String::new()),
        ("jwt_secret", JWT_SECRET.to_owned()),
        ("dapr_host", "127.0.0.1".to_owned()),
        ("dapr_http_port", dapr.port().to_string()),
        ("publish_timeout_ms", "300".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(extra);
    let manifest = repo_root().join("spin.toml");
    let app = App::load_with(&manifest, vars, reuse).unwrap_or_else(|e| {
        panic!(
            "loading {}: {e:?}\n(build the components first: scripts/test.sh does)",
            manifest.display()
        )
    });
    TestApp {
        app,
        dapr: Arc::new(dapr),
        user: new_user(),
        db: Arc::new(connect(&db_name).await),
        db_name,
        db_port,
    }
}

/// The app on a database of its own, cloned from the migrated template, with `extra`
/// variables. For tests of work that spans every user, such as the reminder sweep, which would
/// otherwise act on (and publish to its own sidecar) what tests running beside them wrote.
pub async fn spawn_app_with_own_database(extra: HashMap<String, String>) -> TestApp {
    // Clones of one template are made one at a time, after the binary's shared database.
    static CLONING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    database().await;
    let name = format!(
        "todo_test_{}_{}",
        std::process::id(),
        Uuid::now_v7().simple()
    );
    {
        let _one_at_a_time = CLONING.lock().await;
        let template = std::env::var("TEST_TEMPLATE_DB").unwrap_or_else(|_| "todo_template".into());
        connect("postgres")
            .await
            .batch_execute(&format!("create database {name} template {template}"))
            .await
            .expect("create a test database");
    }
    let mut vars = HashMap::from([("db_name".to_owned(), name.clone())]);
    vars.extend(extra);
    let mut app = spawn_app_with(vars, ReuseConfig::default()).await;
    app.db = Arc::new(connect(&name).await);
    app.db_name = name;
    app
}

/// A loopback port nothing listens on: connecting to it is refused, as to a stopped server.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The app with one variable overridden, e.g. a dependency pointed at [`unused_port`].
pub async fn spawn_app_with_var(name: &str, value: impl ToString) -> TestApp {
    spawn_app_with(
        HashMap::from([(name.to_owned(), value.to_string())]),
        ReuseConfig::default(),
    )
    .await
}

/// The app as the sidecar calls it.
pub fn sidecar_view(app: &App) -> impl AppClient + use<> {
    let app = app.clone();
    move |mut req: Request<Bytes>| {
        let app = app.clone();
        async move {
            *req.uri_mut() = format!("http://127.0.0.1:3000{}", req.uri()).parse()?;
            app.handle(req).await
        }
    }
}

pub fn token_for(sub: &str, expires_in: i64, secret: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + expires_in;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

impl TestApp {
    pub fn token(&self) -> String {
        token_for(&self.user, 3600, JWT_SECRET)
    }

    pub fn tasks_path(&self) -> String {
        format!("/api/{}/tasks", self.user)
    }

    /// Any request; `headers` are added as given (use them for auth and content type).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:3000{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.into()).expect("valid request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.app.handle(request))
            .await
            .expect("the app answers within 30 s")
            .expect("the host handles the request");
        let (parts, body) = response.into_parts();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request as this test's user, with a valid token and a JSON body when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        let auth = format!("Bearer {}", self.token());
        match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).expect("json");
                self.send(
                    method,
                    path,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    bytes,
                )
                .await
            }
            None => {
                self.send(method, path, &[("authorization", &auth)], Bytes::new())
                    .await
            }
        }
    }

    pub async fn post_task(&self, body: Value) -> TestResponse {
        self.call(Method::POST, &self.tasks_path(), Some(body))
            .await
    }

    /// Creates a task and returns its JSON, asserting 201.
    pub async fn create(&self, body: Value) -> Value {
        let response = self.post_task(body).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    pub async fn get_task(&self, id: &str) -> TestResponse {
        self.call(Method::GET, &format!("{}/{id}", self.tasks_path()), None)
            .await
    }

    pub async fn list(&self, query: &str) -> TestResponse {
        self.call(Method::GET, &format!("{}?{query}", self.tasks_path()), None)
            .await
    }

    pub async fn put_task(&self, id: &str, body: Value) -> TestResponse {
        self.call(
            Method::PUT,
            &format!("{}/{id}", self.tasks_path()),
            Some(body),
        )
        .await
    }

    pub async fn patch_task(&self, id: &str, body: Value) -> TestResponse {
        self.call(
            Method::PATCH,
            &format!("{}/{id}", self.tasks_path()),
            Some(body),
        )
        .await
    }

    pub async fn delete_task(&self, id: &str) -> TestResponse {
        self.call(Method::DELETE, &format!("{}/{id}", self.tasks_path()), None)
            .await
    }

    pub async fn complete(&self, id: &str, body: Option<Value>) -> TestResponse {
        self.call(
            Method::PATCH,
            &format!("{}/{id}/complete", self.tasks_path()),
            body,
        )
        .await
    }

    /// The user's rows in `tasks`, oldest first, as (id, title, completed, version).
    pub async fn task_rows(&self) -> Vec<(Uuid, String, bool, i64)> {
        self.db
            .query(
                "select id, title, completed, version from tasks where user_id = $1 order by created_at, id",
                &[&self.user],
            )
            .await
            .expect("query tasks")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// The user's outbox rows in order, as (event type, delivered).
    pub async fn outbox_rows(&self) -> Vec<(String, bool)> {
        self.db
            .query(
                "select event->>'type', delivered_at is not null from outbox where user_id = $1 order by seq",
                &[&self.user],
            )
            .await
            .expect("query outbox")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// One relay run, as the Dapr cron binding triggers it; returns its summary.
    pub async fn relay(&self) -> Value {
        let response = self.send(Method::POST, "/outbox-relay", &[], "").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    /// One reminder sweep, as the Dapr cron binding triggers it; returns its summary.
    pub async fn sweep(&self) -> Value {
        let response = self.send(Method::POST, "/reminder-sweep", &[], "").await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    /// The events the sidecar double accepted for this user, in arrival order.
    pub fn events(&self) -> Vec<todo_test_host::dapr::Message> {
        self.dapr
            .messages()
            .into_iter()
            .filter(|m| m.partition_key() == Some(self.user.as_str()))
            .collect()
    }

    /// Waits until the double has accepted `count` events of this user.
    pub async fn wait_for_events(&self, count: usize) -> Vec<todo_test_host::dapr::Message> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if events.len() >= count || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The same app as another user (sharing the host, database and sidecar double).
    pub fn as_user(&self, user: &str) -> Self {
        Self {
            app: self.app.clone(),
            dapr: self.dapr.clone(),
            user: user.to_owned(),
            db: self.db.clone(),
            db_name: self.db_name.clone(),
            db_port: self.db_port,
        }
    }
}
