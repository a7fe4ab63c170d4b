//! `spawn_app()` and the typed calls the tests make, on either runtime.

use super::database::{connect_url, database, own_database};
use super::spin::{Runtime, SpinApp};
use super::{new_user, repo_root, token_for};
use crate::dapr::{AppClient, DaprDouble, HttpApp, Message, Options};
use crate::{App, ReuseConfig};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// At least 32 random-looking bytes: the app refuses short or placeholder secrets.
pub const JWT_SECRET: &str = "d-VEA3KGfDsgH3ngwXXtRjpWG5J8mIAKsyVR0lPuWdNb60Qm";
/// The app token the sidecar double presents, as a deployment's sidecar does.
pub const APP_TOKEN: &str = "gP1vN7wq0yZ2sR8tK4dH6mB3xL9cF5jA-app";
/// How long a request may take before the harness gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What answers the test's requests.
#[derive(Clone)]
pub enum Target {
    /// The test host, called in process (as if from 127.0.0.1).
    Host(App),
    /// A `spin up`, called over HTTP on its loopback port.
    Spin(Arc<SpinApp>, Arc<HttpApp>),
}

/// The app under test, its sidecar double, its database and the user the test acts as.
pub struct TestApp {
    pub target: Target,
    pub dapr: Arc<DaprDouble>,
    /// The user this test acts as.
    pub user: String,
    pub db: Arc<tokio_postgres::Client>,
    pub db_name: String,
    pub db_port: u16,
    /// The app token the app expects and the double presents (empty: none configured).
    pub app_token: String,
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

    /// The body as text, cut short for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).into_owned()
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

    /// Whether this is an RFC 9457 problem carrying its own status.
    pub fn is_problem(&self) -> bool {
        self.header("content-type") == Some("application/problem+json")
            && serde_json::from_slice::<Value>(&self.body)
                .is_ok_and(|p| p["status"] == self.status.as_u16())
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(HashMap::new(), ReuseConfig::default()).await
}

/// The app with one variable overridden, e.g. a dependency pointed at an unused port.
pub async fn spawn_app_with_var(name: &str, value: impl ToString) -> TestApp {
    spawn_app_with(
        HashMap::from([(name.to_owned(), value.to_string())]),
        ReuseConfig::default(),
    )
    .await
}

/// The app on a database of its own, with `extra` variables. For tests of work that spans
/// every user, such as the relay and the reminder sweep, which would otherwise act on (and
/// publish to their own sidecar) what tests running beside them wrote.
pub async fn spawn_app_with_own_database(extra: HashMap<String, String>) -> TestApp {
    let name = own_database().await;
    let mut vars = HashMap::from([("db_name".to_owned(), name)]);
    vars.extend(extra);
    spawn_app_with(vars, ReuseConfig::default()).await
}

/// Variables as the tests run the app: the test database (`db_name`, default: this process's
/// shared one), the double as sidecar with the app token, a known JWT secret. `extra`
/// overrides any of them. On Spin, instance reuse is Spin's own: a test that sets other limits
/// must be in a `host_only` module.
pub async fn spawn_app_with(extra: HashMap<String, String>, reuse: ReuseConfig) -> TestApp {
    let shared_port = database().await.1;
    spawn_app_on(shared_port, extra, reuse).await
}

/// Like [`spawn_app_with`], with the test's database client on the server at
/// `127.0.0.1:client_port` (a private server a test stops and starts); the app's own
/// `db_port` comes from `extra`, as with [`spawn_app_with`].
pub async fn spawn_app_on(
    client_port: u16,
    extra: HashMap<String, String>,
    reuse: ReuseConfig,
) -> TestApp {
    let (shared, shared_port) = database().await.clone();
    let app_token = extra
        .get("app_api_token")
        .cloned()
        .unwrap_or_else(|| APP_TOKEN.to_owned());
    let dapr = DaprDouble::start_with(Options {
        app_api_token: (!app_token.is_empty()).then(|| app_token.clone()),
        ..Options::default()
    })
    .await;
    let mut vars: HashMap<String, String> = [
        ("db_host", "127.0.0.1".to_owned()),
        ("db_port", shared_port.to_string()),
        ("db_name", shared),
        ("db_user", "postgres".to_owned()),
        ("db_password", String::new()),
        ("jwt_secret", JWT_SECRET.to_owned()),
        ("app_api_token", app_token.clone()),
        ("dapr_host", "127.0.0.1".to_owned()),
        ("dapr_http_port", dapr.port().to_string()),
        ("publish_timeout_ms", "300".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(extra);
    let db_name = vars["db_name"].clone();

    let manifest = repo_root().join("spin.toml");
    // Once per process: every app of the process runs the same components.
    static FRESH: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Err(stale) = FRESH.get_or_init(|| super::fresh::check(&repo_root())) {
        panic!("{stale}");
    }
    let target = match Runtime::from_env() {
        Runtime::Host => Target::Host(App::load_with(&manifest, vars, reuse).unwrap_or_else(|e| {
            panic!(
                "loading {}: {e:?}\n(build the components first: scripts/test.sh does)",
                manifest.display()
            )
        })),
        Runtime::Spin(spin) => {
            assert_eq!(
                reuse,
                ReuseConfig::default(),
                "instance reuse limits are a control of the test host: put this test in a \
                 `host_only` module"
            );
            let process =
                tokio::task::spawn_blocking(move || SpinApp::start(&spin, &manifest, &vars))
                    .await
                    .expect("start spin")
                    .unwrap_or_else(|e| panic!("spin up: {e:?}"));
            let client = HttpApp::new(process.url());
            Target::Spin(Arc::new(process), Arc::new(client))
        }
    };
    TestApp {
        target,
        dapr: Arc::new(dapr),
        user: new_user(),
        // The test's view of the database stays on its server even when the app is pointed
        // at an unreachable one.
        db: Arc::new(
            connect_url(&format!(
                "postgres://postgres@127.0.0.1:{client_port}/{db_name}"
            ))
            .await,
        ),
        db_name,
        db_port: client_port,
        app_token,
    }
}

impl TestApp {
    /// Which runtime serves this app.
    pub fn runtime(&self) -> &'static str {
        match self.target {
            Target::Host(_) => "host",
            Target::Spin(..) => "spin",
        }
    }

    /// The host's `App`, for tests of the host itself; `None` on Spin.
    pub fn host(&self) -> Option<&App> {
        match &self.target {
            Target::Host(app) => Some(app),
            Target::Spin(..) => None,
        }
    }

    /// The app over HTTP at a loopback URL: Spin's own port, or the host serving on a free one.
    pub async fn serve(&self) -> String {
        match &self.target {
            Target::Spin(process, _) => process.url(),
            Target::Host(app) => {
                let (addr, server) = app
                    .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("bind a loopback port");
                tokio::spawn(server);
                format!("http://{addr}")
            }
        }
    }

    /// Any request, as it reaches the app from 127.0.0.1; an error when the runtime failed.
    pub async fn send_request(&self, mut req: Request<Bytes>) -> anyhow::Result<Response<Bytes>> {
        if req.uri().authority().is_none() {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://127.0.0.1:3000{path}").parse()?;
        }
        match &self.target {
            Target::Host(app) => app.handle(req).await,
            Target::Spin(_, client) => client.call(req).await,
        }
    }

    /// Any request; `headers` are added as given. `None` when no answer came within 30 s or
    /// the runtime failed.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Option<TestResponse> {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.into()).ok()?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.send_request(request))
            .await
            .ok()?
            .ok()?;
        let (parts, body) = response.into_parts();
        Some(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Any request; `headers` are added as given (use them for auth and content type).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let described = format!("{method} {path}");
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("{described}: no answer within 30 s ({})", self.runtime()))
    }

    /// A request as the sidecar makes it: with the app token the double presents.
    pub async fn send_as_sidecar(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut all = vec![("dapr-api-token", self.app_token.as_str())];
        all.extend_from_slice(headers);
        self.send(method, path, &all, body).await
    }

    /// The app as the sidecar double calls it (over HTTP on Spin, in process on the host).
    pub fn sidecar_view(&self) -> impl AppClient + use<> {
        let target = self.target.clone();
        move |mut req: Request<Bytes>| {
            let target = target.clone();
            async move {
                *req.uri_mut() = format!("http://127.0.0.1:3000{}", req.uri()).parse()?;
                match &target {
                    Target::Host(app) => app.handle(req).await,
                    Target::Spin(_, client) => client.call(req).await,
                }
            }
        }
    }

    pub fn token(&self) -> String {
        token_for(&self.user, 3600, JWT_SECRET)
    }

    pub fn tasks_path(&self) -> String {
        format!("/api/{}/tasks", self.user)
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
    pub async fn task_rows(&self) -> Vec<(uuid::Uuid, String, bool, i64)> {
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

    /// The latest event of type `kind` about task `task_id` that the app stored for
    /// publishing, as the sidecar would deliver it. The outbox row is written in the same
    /// statement as the change, so it is there as soon as the request has been answered.
    pub async fn outbox_event(&self, kind: &str, task_id: &str) -> Value {
        self.db
            .query_one(
                "select event from outbox where user_id = $1 and event->>'type' = $2 \
                 and event->>'subject' = $3 order by seq desc limit 1",
                &[&self.user, &kind, &task_id],
            )
            .await
            .unwrap_or_else(|e| panic!("no {kind} of {task_id} in the outbox: {e}"))
            .get(0)
    }

    /// One relay run, as the Dapr cron binding triggers it; returns its summary.
    pub async fn relay(&self) -> Value {
        let response = self
            .send_as_sidecar(Method::POST, "/outbox-relay", &[], "")
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()
    }

    /// One reminder sweep, as the Dapr cron binding triggers it; returns its summary.
    pub async fn sweep(&self) -> Value {
        let response = self
            .send_as_sidecar(Method::POST, "/reminder-sweep", &[], "")
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()
    }

    /// The events the sidecar double accepted for this user, in arrival order.
    pub fn events(&self) -> Vec<Message> {
        self.dapr
            .messages()
            .into_iter()
            .filter(|m| m.partition_key() == Some(self.user.as_str()))
            .collect()
    }

    /// Waits until the double has accepted `count` events of this user.
    pub async fn wait_for_events(&self, count: usize) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if events.len() >= count || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The same app as another user (sharing the runtime, database and sidecar double).
    pub fn as_user(&self, user: &str) -> Self {
        Self {
            target: self.target.clone(),
            dapr: self.dapr.clone(),
            user: user.to_owned(),
            db: self.db.clone(),
            db_name: self.db_name.clone(),
            db_port: self.db_port,
            app_token: self.app_token.clone(),
        }
    }
}
