//! A Dapr sidecar double for tests: the HTTP API the app calls (publish, bulk publish, health)
//! and the calls the sidecar makes into the app (subscription discovery, event delivery, cron
//! input bindings).
//!
//! It follows the contract in DESIGN.md §3. Status codes, error codes and messages were checked
//! against the Dapr sources (dapr/dapr `pkg/api/http/http.go`, `middlewares.go`,
//! `pkg/api/errors/pubsub.go`, `pkg/runtime/subscription/postman/http/http.go`,
//! `pkg/runtime/subscription/subscription.go`, dapr/components-contrib `pubsub/envelope.go`).
//! The app schedules with a `bindings.cron` component, not the Jobs API, so the double has no
//! Jobs API: its routes answer 404.
//!
//! ```ignore
//! let dapr = DaprDouble::start().await;
//! // point the app at dapr.url(), exercise it, then:
//! let events = dapr.wait_for(1, Duration::from_secs(5)).await?;
//! assert_eq!(events[0].partition_key(), Some("user-1"));
//! ```

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The pub/sub component the app publishes to (DESIGN.md §1).
pub const DEFAULT_PUBSUB: &str = "kafka-pubsub";
/// Header carrying the API token, in both directions (`pkg/security/consts`).
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
const CLOUD_EVENTS_JSON: &str = "application/cloudevents+json";
/// Event type Dapr gives the envelopes it builds (`DefaultCloudEventType`).
const DAPR_EVENT_TYPE: &str = "com.dapr.event.sent";

/// How the double is set up. `Options::default()` is a sidecar with the `kafka-pubsub` component,
/// no tokens and no topic restrictions.
#[derive(Clone, Debug)]
pub struct Options {
    /// `DAPR_API_TOKEN`: when set, every call but `GET /v1.0/healthz[/outbound]` must carry it.
    pub api_token: Option<String>,
    /// `APP_API_TOKEN`: sent as `dapr-api-token` on every call the double makes into the app.
    pub app_api_token: Option<String>,
    /// Names of the configured pub/sub components; any other name answers 404.
    pub pubsubs: Vec<String>,
    /// Topics the app may publish to (the component's `publishingScopes`/`allowedTopics`);
    /// `None` allows all, others answer 403.
    pub allowed_topics: Option<Vec<String>>,
    /// The app id, used as `source` of the envelopes Dapr builds around non-CloudEvent bodies.
    pub app_id: String,
    /// Delivery attempts per message: 1 + the retries of the inbound resiliency policy. After the
    /// last failed attempt the message goes to the dead-letter topic (when set).
    pub max_delivery_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_token: None,
            app_api_token: None,
            pubsubs: vec![DEFAULT_PUBSUB.to_owned()],
            allowed_topics: None,
            app_id: "todo-backend".to_owned(),
            max_delivery_attempts: 3,
        }
    }
}

/// Runtime fault switch, see [`DaprDouble::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers as a working sidecar.
    Healthy,
    /// The port is closed: connects are refused, open connections are dropped.
    Refuse,
    /// Every API call answers 500 with Dapr's error JSON (`/v1.0/healthz` excepted).
    Fail500,
    /// Connections are accepted and requests never answered until the mode changes.
    Hang,
}

/// Publish failures of chosen events, for partial-failure and ordering tests, see
/// [`DaprDouble::set_fault`]. `Mode::Fail500` fails every publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Publishes of the events whose CloudEvent `id` is a key fail with Dapr's publish error, in
    /// single and in bulk publishes; a failed bulk entry is listed in `failedEntries` while the
    /// other entries are accepted. The value is how many more publishes of that event fail,
    /// `None` for all of them.
    EventIds(BTreeMap<String, Option<u32>>),
}

impl Fault {
    /// Fails every publish of these events.
    pub fn event_ids<I: Into<String>>(ids: impl IntoIterator<Item = I>) -> Self {
        Self::EventIds(ids.into_iter().map(|id| (id.into(), None)).collect())
    }

    /// Fails the next `times` publishes of each of these events; later ones go through.
    pub fn event_ids_times<I: Into<String>>(ids: impl IntoIterator<Item = I>, times: u32) -> Self {
        Self::EventIds(ids.into_iter().map(|id| (id.into(), Some(times))).collect())
    }
}

/// How a recorded message reached the double.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Publish,
    Bulk {
        entry_id: String,
    },
    /// Forwarded by the double itself to a subscription's `deadLetterTopic`.
    DeadLetter {
        from_topic: String,
    },
}

/// One message the double accepted for a topic, in arrival order.
#[derive(Clone, Debug)]
pub struct Message {
    pub pubsub: String,
    pub topic: String,
    /// The `metadata.*` query pairs, without the prefix (bulk: request level, then entry level).
    pub metadata: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub content_type: Option<String>,
    /// The body as sent, parsed as JSON (a string when it is not JSON); a bulk entry's `event`.
    pub body: Value,
    /// What Dapr hands the broker: the CloudEvent with Dapr's additions, or the body itself when
    /// `metadata.rawPayload=true`. Subscribers receive this.
    pub envelope: Value,
    pub via: Via,
}

impl Message {
    /// `metadata.partitionKey`, the Kafka record key (DESIGN.md §2.3).
    pub fn partition_key(&self) -> Option<&str> {
        self.metadata.get("partitionKey").map(String::as_str)
    }

    pub fn event_id(&self) -> Option<&str> {
        self.envelope.get("id").and_then(Value::as_str)
    }

    pub fn event_type(&self) -> Option<&str> {
        self.envelope.get("type").and_then(Value::as_str)
    }

    /// The CloudEvent `data` attribute.
    pub fn data(&self) -> Option<&Value> {
        self.envelope.get("data")
    }
}

/// A subscription as the app declared it in `GET /dapr/subscribe`.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    /// Routing rules in order; the default route (`routes.default` or `route`) comes last,
    /// without a match, as Dapr builds them.
    pub rules: Vec<Rule>,
    pub dead_letter_topic: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The CEL source; `None` matches every event.
    pub matches: Option<String>,
    pub path: String,
    condition: Option<Cel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub max_messages_count: Option<i32>,
    #[serde(default)]
    pub max_await_duration_ms: Option<i32>,
}

/// What the app answered to one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppAnswer {
    /// 2xx with `{"status":"SUCCESS"}`, an empty status, an empty or a non-JSON body.
    Success,
    /// 2xx with `{"status":"RETRY"}`.
    Retry,
    /// 2xx with `{"status":"DROP"}`.
    Drop,
    /// 2xx with any other status value (Dapr retries these).
    UnknownStatus(String),
    /// 404: Dapr logs the error and drops the message, without dead-lettering it.
    NotFound,
    /// Any other status code: retried.
    Status(u16),
    /// The app could not be reached: retried.
    Unreachable(String),
}

/// The end of a delivery, with every answer the app gave on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered {
        path: String,
        answers: Vec<AppAnswer>,
    },
    /// `DROP` (dead-lettered when the subscription has a `deadLetterTopic`) or 404 (never).
    Dropped {
        path: String,
        answers: Vec<AppAnswer>,
        dead_letter: Option<String>,
    },
    /// Every attempt asked for a retry; dead-lettered when a `deadLetterTopic` is set.
    Exhausted {
        path: String,
        answers: Vec<AppAnswer>,
        dead_letter: Option<String>,
    },
    /// No rule matched (or a match expression failed); dead-lettered when set, as Dapr does.
    NoRoute {
        dead_letter: Option<String>,
        error: Option<String>,
    },
    /// The app has no subscription for this pub/sub and topic.
    NoSubscription,
}

impl DeliveryOutcome {
    pub fn answers(&self) -> &[AppAnswer] {
        match self {
            Self::Delivered { answers, .. }
            | Self::Dropped { answers, .. }
            | Self::Exhausted { answers, .. } => answers,
            Self::NoRoute { .. } | Self::NoSubscription => &[],
        }
    }

    pub fn dead_letter(&self) -> Option<&str> {
        match self {
            Self::Dropped { dead_letter, .. }
            | Self::Exhausted { dead_letter, .. }
            | Self::NoRoute { dead_letter, .. } => dead_letter.as_deref(),
            Self::Delivered { .. } | Self::NoSubscription => None,
        }
    }
}

/// The app as the sidecar sees it: something that answers HTTP requests. Requests carry only a
/// path and query in their URI.
pub trait AppClient {
    fn call(
        &self,
        req: Request<Bytes>,
    ) -> impl Future<Output = anyhow::Result<Response<Bytes>>> + Send;
}

/// Closures are apps too, handy for fakes in tests.
impl<F, Fut> AppClient for F
where
    F: Fn(Request<Bytes>) -> Fut,
    Fut: Future<Output = anyhow::Result<Response<Bytes>>> + Send,
{
    fn call(
        &self,
        req: Request<Bytes>,
    ) -> impl Future<Output = anyhow::Result<Response<Bytes>>> + Send {
        self(req)
    }
}

/// An app listening on a base URL such as `http://127.0.0.1:3000`.
#[derive(Clone, Debug)]
pub struct HttpApp {
    base_url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpApp {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl AppClient for HttpApp {
    async fn call(&self, req: Request<Bytes>) -> anyhow::Result<Response<Bytes>> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{path}", self.base_url)
            .parse()
            .context("Failed to build the app URL")?;
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
            .context("Failed to call the app")?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .context("Failed to read the app's answer")?;
        Ok(Response::from_parts(parts, body.to_bytes()))
    }
}

/// The sidecar double. Dropping it stops the server and every connection task.
pub struct DaprDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    options: Options,
    mode: watch::Sender<Mode>,
    state: Mutex<State>,
    arrived: Notify,
    publish_attempts: AtomicUsize,
}

#[derive(Default)]
struct State {
    messages: Vec<Message>,
    fault: Fault,
    /// How long a publish takes before it is answered: the broker's acknowledgement.
    publish_latency: Duration,
    subscriptions: Option<Vec<Subscription>>,
}

impl DaprDouble {
    /// Starts a double with [`Options::default`] on `127.0.0.1` and a free port.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Panics when no port can be bound, like any test fixture that cannot start.
    pub async fn start_with(options: Options) -> Self {
        let listener = bind("127.0.0.1:0".parse().expect("valid address"))
            .expect("Failed to bind the Dapr double");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let shared = Arc::new(Shared {
            options,
            mode: watch::Sender::new(Mode::Healthy),
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            publish_attempts: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self {
            shared,
            addr,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`, the value for the app's Dapr URL setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the fault mode. Leaving `Refuse` binds the same port again; entering it closes
    /// the listener and every open connection before returning. Requests held by `Hang` are
    /// answered under the new mode.
    pub async fn set_mode(&self, mode: Mode) {
        let old = self.shared.mode.send_replace(mode);
        if mode == Mode::Refuse && old != Mode::Refuse {
            let server = lock(&self.server).take();
            if let Some(server) = server {
                server.abort();
                let _ = server.await;
            }
        } else if old == Mode::Refuse && mode != Mode::Refuse {
            let listener = bind(self.addr).expect("Failed to bind the Dapr double's port again");
            *lock(&self.server) = Some(tokio::spawn(serve(listener, self.shared.clone())));
        }
    }

    /// Replaces the publish fault; counts of a previous [`Fault::EventIds`] are forgotten.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.state().fault = fault;
    }

    /// Delays every publish and bulk publish answer by `latency` (zero by default), as a
    /// broker's acknowledgement does.
    pub fn set_publish_latency(&self, latency: Duration) {
        self.shared.state().publish_latency = latency;
    }

    /// Every accepted message, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.state().messages.clone()
    }

    pub fn messages_on(&self, topic: &str) -> Vec<Message> {
        self.shared
            .state()
            .messages
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    /// Forgets recorded messages and resets the attempt counter (subscriptions stay).
    pub fn clear(&self) {
        let mut state = self.shared.state();
        state.messages.clear();
        self.shared.publish_attempts.store(0, Ordering::SeqCst);
    }

    /// Publish and bulk publish requests received, including rejected and failed ones.
    pub fn publish_attempts(&self) -> usize {
        self.shared.publish_attempts.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` messages were accepted and returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let messages = self.messages();
            if messages.len() >= count {
                return Ok(messages);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!(
                    "Expected {count} messages within {timeout:?}, got {}",
                    messages.len()
                );
            }
        }
    }

    /// Asks the app whether it takes the input binding routed to `route`, as the sidecar does
    /// at start-up for a binding whose metadata sets no `direction: input`: `OPTIONS {route}`;
    /// a 2xx or a 405 means yes (dapr `pkg/runtime/processor/binding/send.go`,
    /// `isAppSubscribedToBinding`).
    pub async fn binding_subscribed(
        &self,
        app: &impl AppClient,
        route: &str,
    ) -> anyhow::Result<bool> {
        let request = self.app_request(Method::OPTIONS, route, "application/json", Bytes::new());
        let response = app
            .call(request)
            .await
            .with_context(|| format!("Failed to call OPTIONS {route}"))?;
        let status = response.status();
        Ok(status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED)
    }

    /// One tick of a `bindings.cron` input binding routed to `route`, as the sidecar sends it
    /// (dapr `send.go`, `sendBindingEventToApp`; components-contrib `bindings/cron/cron.go`):
    /// `POST {route}` with an empty body, `Content-Type: application/json`, the app token, and
    /// the binding's read metadata as headers, `timeZone` and `readTimeUTC` (Go's time format).
    /// Returns the app's status code; the sidecar counts only 200 as handled. Ticks are not
    /// scheduled here: a test fires one when it wants it.
    pub async fn fire_cron_binding(
        &self,
        app: &impl AppClient,
        route: &str,
        now: DateTime<Utc>,
    ) -> Result<u16, String> {
        let mut request = self.app_request(Method::POST, route, "application/json", Bytes::new());
        let read_time = now.format("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string();
        for (name, value) in [("timeZone", "Local".to_owned()), ("readTimeUTC", read_time)] {
            let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        app.call(request)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e:#}"))
    }

    /// `GET /dapr/subscribe` on the app, parsed as Dapr's programmatic subscriptions and kept for
    /// later deliveries. A 404 means no subscriptions. Subscriptions without any route are left
    /// out, as Dapr does; `deadLetterTopic` is read at the top level only (DESIGN.md §2.2).
    pub async fn discover_subscriptions(
        &self,
        app: &impl AppClient,
    ) -> anyhow::Result<Vec<Subscription>> {
        let request = self.app_request(
            Method::GET,
            "/dapr/subscribe",
            "application/json",
            Bytes::new(),
        );
        let response = app
            .call(request)
            .await
            .context("Failed to call GET /dapr/subscribe")?;
        let subscriptions = match response.status() {
            StatusCode::OK => parse_subscriptions(response.body())?,
            StatusCode::NOT_FOUND => Vec::new(),
            status => bail!("GET /dapr/subscribe answered {status}"),
        };
        self.shared.state().subscriptions = Some(subscriptions.clone());
        Ok(subscriptions)
    }

    /// Delivers one CloudEvent to the app's subscription for `pubsub`/`topic` as the sidecar does
    /// (DESIGN.md §3, dapr `postman/http/http.go`): picks the route, POSTs it as
    /// `application/cloudevents+json`, retries up to `max_delivery_attempts`, and republishes
    /// dropped or exhausted events to the `deadLetterTopic`. Discovers subscriptions first when
    /// none are known yet.
    pub async fn deliver_event(
        &self,
        app: &impl AppClient,
        pubsub: &str,
        topic: &str,
        event: &Value,
    ) -> anyhow::Result<DeliveryOutcome> {
        let known = self.shared.state().subscriptions.clone();
        let subscriptions = match known {
            Some(subscriptions) => subscriptions,
            None => self.discover_subscriptions(app).await?,
        };
        let Some(subscription) = subscriptions
            .into_iter()
            .find(|s| s.pubsubname == pubsub && s.topic == topic)
        else {
            return Ok(DeliveryOutcome::NoSubscription);
        };
        if subscription
            .bulk_subscribe
            .as_ref()
            .is_some_and(|b| b.enabled)
        {
            bail!("bulkSubscribe on {topic}: bulk delivery is not modelled by the Dapr double");
        }
        Ok(self.deliver_to(app, &subscription, event).await)
    }

    async fn deliver_to(
        &self,
        app: &impl AppClient,
        subscription: &Subscription,
        event: &Value,
    ) -> DeliveryOutcome {
        let path = match find_route(&subscription.rules, event) {
            Ok(Some(path)) => path.to_owned(),
            Ok(None) => {
                return DeliveryOutcome::NoRoute {
                    dead_letter: self.dead_letter(subscription, event),
                    error: None,
                };
            }
            Err(error) => {
                return DeliveryOutcome::NoRoute {
                    dead_letter: self.dead_letter(subscription, event),
                    error: Some(error),
                };
            }
        };
        let body = Bytes::from(event.to_string());
        let mut answers = Vec::new();
        for _ in 0..self.shared.options.max_delivery_attempts.max(1) {
            let request = self.app_request(Method::POST, &path, CLOUD_EVENTS_JSON, body.clone());
            let answer = match app.call(request).await {
                Ok(response) => read_app_answer(&response),
                Err(error) => AppAnswer::Unreachable(format!("{error:#}")),
            };
            answers.push(answer.clone());
            match answer {
                AppAnswer::Success => return DeliveryOutcome::Delivered { path, answers },
                AppAnswer::Drop => {
                    let dead_letter = self.dead_letter(subscription, event);
                    return DeliveryOutcome::Dropped {
                        path,
                        answers,
                        dead_letter,
                    };
                }
                AppAnswer::NotFound => {
                    return DeliveryOutcome::Dropped {
                        path,
                        answers,
                        dead_letter: None,
                    };
                }
                AppAnswer::Retry
                | AppAnswer::UnknownStatus(_)
                | AppAnswer::Status(_)
                | AppAnswer::Unreachable(_) => {}
            }
        }
        let dead_letter = self.dead_letter(subscription, event);
        DeliveryOutcome::Exhausted {
            path,
            answers,
            dead_letter,
        }
    }

    /// Republishes the original event to the subscription's dead-letter topic, if it has one.
    fn dead_letter(&self, subscription: &Subscription, event: &Value) -> Option<String> {
        let topic = subscription.dead_letter_topic.clone()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUD_EVENTS_JSON));
        self.shared.record(Message {
            pubsub: subscription.pubsubname.clone(),
            topic: topic.clone(),
            metadata: BTreeMap::new(),
            headers,
            content_type: Some(CLOUD_EVENTS_JSON.to_owned()),
            body: event.clone(),
            envelope: event.clone(),
            via: Via::DeadLetter {
                from_topic: subscription.topic.clone(),
            },
        });
        Some(topic)
    }

    /// A request into the app, with the app token when one is configured.
    fn app_request(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Request<Bytes> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(CONTENT_TYPE, content_type);
        if let Some(token) = &self.shared.options.app_api_token {
            request = request.header(API_TOKEN_HEADER, token);
        }
        request.body(body).expect("valid request parts")
    }
}

impl Drop for DaprDouble {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Accepts connections until aborted; aborting drops the listener and, with the `JoinSet`,
/// every connection task.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| shared.clone().handle(request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type Reply = Response<Full<Bytes>>;
/// An early answer, for `?` in handlers (boxed: a response is large).
type Rejected = Box<Reply>;
type Answer = Result<Reply, Rejected>;

/// The Dapr errors the double answers: HTTP status, `errorCode` and the `ErrorInfo` reason
/// (dapr `pkg/api/errors/pubsub.go`, `health.go`, `pkg/messages/errorcodes`).
type DaprError = (StatusCode, &'static str, &'static str);
const PUBSUB_EMPTY: DaprError = (
    StatusCode::NOT_FOUND,
    "ERR_PUBSUB_EMPTY",
    "DAPR_PUBSUB_NAME_EMPTY",
);
const PUBSUB_NOT_FOUND: DaprError = (
    StatusCode::NOT_FOUND,
    "ERR_PUBSUB_NOT_FOUND",
    "DAPR_PUBSUB_NOT_FOUND",
);
const TOPIC_EMPTY: DaprError = (
    StatusCode::NOT_FOUND,
    "ERR_TOPIC_EMPTY",
    "DAPR_PUBSUB_TOPICNAME_EMPTY",
);
const PUBSUB_FORBIDDEN: DaprError = (
    StatusCode::FORBIDDEN,
    "ERR_PUBSUB_FORBIDDEN",
    "DAPR_PUBSUB_FORBIDDEN",
);
const PUBSUB_METADATA: DaprError = (
    StatusCode::BAD_REQUEST,
    "ERR_PUBSUB_REQUEST_METADATA",
    "DAPR_PUBSUB_METADATA_DESERIALIZATION",
);
const PUBSUB_EVENTS: DaprError = (
    StatusCode::BAD_REQUEST,
    "ERR_PUBSUB_EVENTS_SER",
    "DAPR_PUBSUB_UNMARSHAL_EVENTS",
);
const CLOUD_EVENT: DaprError = (
    StatusCode::INTERNAL_SERVER_ERROR,
    "ERR_PUBSUB_CLOUD_EVENTS_SER",
    "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
);
const PUBLISH_FAILED: DaprError = (
    StatusCode::INTERNAL_SERVER_ERROR,
    "ERR_PUBSUB_PUBLISH_MESSAGE",
    "DAPR_PUBSUB_PUBLISH_MESSAGE",
);
const OUTBOUND_NOT_READY: DaprError = (
    StatusCode::INTERNAL_SERVER_ERROR,
    "ERR_OUTBOUND_HEALTH_NOT_READY",
    "DAPR_HEALTH_OUTBOUND_NOT_READY",
);

/// A Dapr error body as dapr/kit renders it: `errorCode`, `message`, one `ErrorInfo` detail.
fn dapr_error((status, code, reason): DaprError, message: impl Into<String>) -> Rejected {
    let detail = json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "dapr.io",
        "metadata": {},
    });
    let body = json!({"errorCode": code, "message": message.into(), "details": [detail]});
    Box::new(json_reply(status, &body))
}

fn reply(status: StatusCode, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

fn no_content() -> Reply {
    reply(StatusCode::NO_CONTENT, Bytes::new())
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut response = reply(status, Bytes::from(body.to_string()));
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, json);
    response
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn record(&self, message: Message) {
        self.state().messages.push(message);
        self.arrived.notify_waiters();
    }

    /// Whether this publish of `envelope` fails: always under `Mode::Fail500`, otherwise when
    /// the fault names the event's id, which uses up one of its failures.
    fn fails(&self, envelope: &Value) -> bool {
        if *self.mode.borrow() == Mode::Fail500 {
            return true;
        }
        let Some(id) = envelope.get("id").and_then(Value::as_str) else {
            return false;
        };
        let mut state = self.state();
        let Fault::EventIds(ids) = &mut state.fault else {
            return false;
        };
        match ids.get_mut(id) {
            None | Some(Some(0)) => false,
            Some(None) => true,
            Some(Some(left)) => {
                *left -= 1;
                true
            }
        }
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Result<Reply, Infallible> {
        let mut mode = self.mode.subscribe();
        if *mode.borrow_and_update() == Mode::Hang {
            // Held until the mode changes; the task ends when the client hangs up or the
            // double is dropped.
            let _ = mode.wait_for(|m| *m != Mode::Hang).await;
        }
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await else {
            return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
        };
        let latency = self.state().publish_latency;
        if !latency.is_zero() && parts.uri.path().contains("/publish/") {
            tokio::time::sleep(latency).await;
        }
        Ok(self
            .route(&parts, &body.to_bytes())
            .unwrap_or_else(|reply| *reply))
    }

    fn route(&self, parts: &Parts, body: &Bytes) -> Answer {
        let path = parts.uri.path().trim_end_matches('/');
        let get = parts.method == Method::GET;
        let write = parts.method == Method::POST || parts.method == Method::PUT;
        let health = get && matches!(path, "/v1.0/healthz" | "/v1.0/healthz/outbound");
        // dapr `APITokenAuthMiddleware`: a plain-text 401; only GET healthz is exempt.
        let token = parts
            .headers
            .get(API_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(expected) = &self.options.api_token
            && !health
            && token != Some(expected.as_str())
        {
            let mut response = reply(StatusCode::UNAUTHORIZED, "invalid api token\n".into());
            let text = HeaderValue::from_static("text/plain; charset=utf-8");
            response.headers_mut().insert(CONTENT_TYPE, text);
            return Err(Box::new(response));
        }
        let fail = *self.mode.borrow() == Mode::Fail500;
        if health {
            if fail && path.ends_with("/outbound") {
                return Err(dapr_error(OUTBOUND_NOT_READY, "dapr outbound is not ready"));
            }
            return Ok(no_content());
        }
        let path = parts.uri.path();
        let bulk = ["/v1.0-alpha1/publish/bulk/", "/v1.0/publish/bulk/"]
            .into_iter()
            .find_map(|prefix| path.strip_prefix(prefix));
        match (bulk, path.strip_prefix("/v1.0/publish/")) {
            (Some(target), _) if write => self.bulk_publish(parts, target, body),
            (None, Some(target)) if write => self.publish(parts, target, body),
            _ => Err(Box::new(reply(StatusCode::NOT_FOUND, Bytes::new()))),
        }
    }

    /// `POST /v1.0/publish/{pubsub}/{topic}`, in the order of dapr `onPublish`.
    fn publish(&self, parts: &Parts, target: &str, body: &Bytes) -> Answer {
        self.publish_attempts.fetch_add(1, Ordering::SeqCst);
        let metadata = query_metadata(parts.uri.query());
        let (pubsub, topic) = self.pubsub_and_topic(target)?;
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let payload = parse_body(body);
        let envelope = if raw_payload(&metadata)? {
            payload.clone()
        } else {
            self.envelope(
                &parts.headers,
                content_type.unwrap_or_default(),
                body,
                pubsub,
                topic,
            )?
        };
        self.check_topic(topic)?;
        if self.fails(&envelope) {
            return Err(publish_failed(pubsub, topic));
        }
        self.record(Message {
            pubsub: pubsub.to_owned(),
            topic: topic.to_owned(),
            metadata,
            headers: parts.headers.clone(),
            content_type: content_type.map(str::to_owned),
            body: payload,
            envelope,
            via: Via::Publish,
        });
        Ok(no_content())
    }

    /// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}` (dapr `onBulkPublish`). Entries that
    /// fail are listed in `failedEntries` with a 500; the others stay published.
    fn bulk_publish(&self, parts: &Parts, target: &str, body: &Bytes) -> Answer {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            #[serde(default)]
            entry_id: String,
            #[serde(default)]
            event: Value,
            #[serde(default)]
            content_type: String,
            #[serde(default)]
            metadata: BTreeMap<String, String>,
        }

        self.publish_attempts.fetch_add(1, Ordering::SeqCst);
        let request_metadata = query_metadata(parts.uri.query());
        let (pubsub, topic) = self.pubsub_and_topic(target)?;
        let raw = raw_payload(&request_metadata)?;
        let entries: Vec<Entry> = serde_json::from_slice(body).map_err(|error| {
            let message = format!(
                "error when unmarshaling the request for topic {topic} pubsub {pubsub}: {error}"
            );
            dapr_error(PUBSUB_EVENTS, message)
        })?;
        let mut ids = HashSet::new();
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.entry_id.is_empty() || !ids.insert(entry.entry_id.clone()) {
                let message = format!(
                    "error marshaling events to bytes for topic {topic} pubsub {pubsub}. \
                     error: entryId is duplicated or not present for entry"
                );
                return Err(dapr_error(PUBSUB_EVENTS, message));
            }
            let bytes = event_bytes(&entry.event, &entry.content_type).ok_or_else(|| {
                let message = format!(
                    "error when marshalling cloud event envelope for topic {topic} pubsub {pubsub}"
                );
                dapr_error(CLOUD_EVENT, message)
            })?;
            let envelope = if raw {
                entry.event.clone()
            } else {
                self.envelope(&parts.headers, &entry.content_type, &bytes, pubsub, topic)?
            };
            let mut metadata = request_metadata.clone();
            metadata.extend(entry.metadata);
            messages.push(Message {
                pubsub: pubsub.to_owned(),
                topic: topic.to_owned(),
                metadata,
                headers: parts.headers.clone(),
                content_type: Some(entry.content_type),
                body: entry.event,
                envelope,
                via: Via::Bulk {
                    entry_id: entry.entry_id,
                },
            });
        }
        self.check_topic(topic)?;
        let mut failed = Vec::new();
        for message in messages {
            match (&message.via, self.fails(&message.envelope)) {
                (Via::Bulk { entry_id }, true) => failed.push(json!({
                    "entryId": entry_id,
                    "error": "simulated publish failure",
                })),
                _ => self.record(message),
            }
        }
        if failed.is_empty() {
            return Ok(no_content());
        }
        let body = json!({"failedEntries": failed, "errorCode": PUBLISH_FAILED.1});
        Err(Box::new(json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &body,
        )))
    }

    /// Splits `{pubsub}/{topic}` and checks both as dapr `validateAndGetPubsubAndTopic` does.
    fn pubsub_and_topic<'a>(&self, target: &'a str) -> Result<(&'a str, &'a str), Rejected> {
        let (pubsub, topic) = target.split_once('/').unwrap_or((target, ""));
        if pubsub.is_empty() {
            return Err(dapr_error(PUBSUB_EMPTY, "pubsub name is empty"));
        }
        if !self.options.pubsubs.iter().any(|known| known == pubsub) {
            return Err(dapr_error(
                PUBSUB_NOT_FOUND,
                format!("pubsub {pubsub} not found"),
            ));
        }
        if topic.is_empty() {
            let message = format!("topic is empty in pubsub {pubsub}");
            return Err(dapr_error(TOPIC_EMPTY, message));
        }
        Ok((pubsub, topic))
    }

    fn check_topic(&self, topic: &str) -> Result<(), Rejected> {
        match &self.options.allowed_topics {
            Some(allowed) if !allowed.iter().any(|t| t == topic) => {
                let app_id = &self.options.app_id;
                let message = format!("topic {topic} is not allowed for app id {app_id}");
                Err(dapr_error(PUBSUB_FORBIDDEN, message))
            }
            _ => Ok(()),
        }
    }

    /// The CloudEvent Dapr publishes: the app's own (`FromCloudEvent`) or one wrapped around the
    /// body (`NewCloudEventsEnvelope`), plus Dapr's `topic`, `pubsubname` and trace fields.
    fn envelope(
        &self,
        headers: &HeaderMap,
        content_type: &str,
        body: &[u8],
        pubsub: &str,
        topic: &str,
    ) -> Result<Value, Rejected> {
        let media_type = media_type(content_type);
        let mut event = if media_type == CLOUD_EVENTS_JSON {
            let Ok(Value::Object(event)) = serde_json::from_slice(body) else {
                return Err(dapr_error(CLOUD_EVENT, "cannot create cloudevent"));
            };
            let present = |key| {
                event
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            };
            // Stricter than Dapr, which refuses only bodies that are not JSON and completes the
            // rest itself: an app relying on that would break DESIGN.md §4, and a test notices.
            let complete = ["id", "source", "type"].into_iter().all(present)
                && event.get("specversion") == Some(&json!("1.0"));
            if !complete {
                return Err(dapr_error(CLOUD_EVENT, "cannot create cloudevent"));
            }
            event
        } else {
            let text = || Value::String(String::from_utf8_lossy(body).into_owned());
            let data = match is_json(&media_type) {
                true => serde_json::from_slice(body).unwrap_or_else(|_| text()),
                false => text(),
            };
            let data_content_type = if media_type.is_empty() {
                "text/plain"
            } else {
                content_type
            };
            let mut event = Map::new();
            event.insert("id".into(), json!(uuid::Uuid::now_v7().to_string()));
            event.insert("specversion".into(), json!("1.0"));
            event.insert("datacontenttype".into(), json!(data_content_type));
            event.insert("source".into(), json!(self.options.app_id));
            event.insert("type".into(), json!(DAPR_EVENT_TYPE));
            event.insert("data".into(), data);
            event
        };
        event.insert("topic".into(), json!(topic));
        event.insert("pubsubname".into(), json!(pubsub));
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        // Dapr writes its span's trace context; without an incoming one the app's stays.
        if !header("traceparent").is_empty() || !event.contains_key("traceparent") {
            event.insert("traceid".into(), json!(header("traceparent")));
            event.insert("traceparent".into(), json!(header("traceparent")));
            event.insert("tracestate".into(), json!(header("tracestate")));
        }
        Ok(Value::Object(event))
    }
}

fn publish_failed(pubsub: &str, topic: &str) -> Rejected {
    let message = format!(
        "error when publishing to topic {topic} in pubsub {pubsub}: simulated publish failure"
    );
    dapr_error(PUBLISH_FAILED, message)
}

/// The `metadata.` query pairs, prefix removed, first value wins (dapr `getMetadataFromRequest`).
fn query_metadata(query: Option<&str>) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(key) = percent_decode(key).strip_prefix("metadata.") {
            metadata
                .entry(key.to_owned())
                .or_insert_with(|| percent_decode(value));
        }
    }
    metadata
}

/// Query-string decoding (`+` is a space); invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (byte, None) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `metadata.rawPayload` as Go's `strconv.ParseBool` reads it (components-contrib `IsRawPayload`).
fn raw_payload(metadata: &BTreeMap<String, String>) -> Result<bool, Rejected> {
    match metadata.get("rawPayload").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => {
            let message = format!(
                "failed deserializing metadata. Error: rawPayload value must be a valid boolean: \
                 actual is '{other}'"
            );
            Err(dapr_error(PUBSUB_METADATA, message))
        }
    }
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A bulk entry's event as bytes (dapr `ConvertEventToBytes`): JSON for JSON content types,
/// otherwise the event must be a string.
fn event_bytes(event: &Value, content_type: &str) -> Option<Vec<u8>> {
    if is_json(&media_type(content_type)) {
        return Some(event.to_string().into_bytes());
    }
    event.as_str().map(|text| text.as_bytes().to_vec())
}

/// Dapr's reading of a 2xx/4xx/5xx answer to a delivery (`postman/http/http.go`).
fn read_app_answer(response: &Response<Bytes>) -> AppAnswer {
    #[derive(Deserialize)]
    struct Ack {
        #[serde(default)]
        status: String,
    }
    let status = response.status();
    if status.is_success() {
        return match serde_json::from_slice::<Ack>(response.body()) {
            // Empty and unparseable bodies skip the status check: success.
            Err(_) => AppAnswer::Success,
            Ok(ack) => match ack.status.as_str() {
                "" | "SUCCESS" => AppAnswer::Success,
                "RETRY" => AppAnswer::Retry,
                "DROP" => AppAnswer::Drop,
                other => AppAnswer::UnknownStatus(other.to_owned()),
            },
        };
    }
    if status == StatusCode::NOT_FOUND {
        return AppAnswer::NotFound;
    }
    AppAnswer::Status(status.as_u16())
}

fn parse_subscriptions(body: &[u8]) -> anyhow::Result<Vec<Subscription>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        pubsubname: String,
        topic: String,
        #[serde(default)]
        route: String,
        #[serde(default)]
        routes: Option<Routes>,
        #[serde(default)]
        dead_letter_topic: String,
        #[serde(default)]
        metadata: BTreeMap<String, String>,
        #[serde(default)]
        bulk_subscribe: Option<BulkSubscribe>,
    }
    #[derive(Deserialize)]
    struct Routes {
        #[serde(default)]
        rules: Vec<WireRule>,
        #[serde(default)]
        default: String,
    }
    #[derive(Deserialize)]
    struct WireRule {
        #[serde(default, rename = "match")]
        matches: String,
        path: String,
    }

    let wire: Vec<Wire> = serde_json::from_slice(body)
        .context("GET /dapr/subscribe did not answer Dapr's subscription JSON")?;
    let mut subscriptions = Vec::with_capacity(wire.len());
    for s in wire {
        let routes = s.routes.unwrap_or(Routes {
            rules: Vec::new(),
            default: String::new(),
        });
        let mut rules = Vec::with_capacity(routes.rules.len() + 1);
        for rule in routes.rules {
            let matches = Some(rule.matches).filter(|m| !m.trim().is_empty());
            let condition = matches
                .as_deref()
                .map(Cel::parse)
                .transpose()
                .with_context(|| format!("Invalid match on topic {}", s.topic))?;
            rules.push(Rule {
                matches,
                path: rule.path,
                condition,
            });
        }
        let fallback = if routes.default.is_empty() {
            s.route
        } else {
            routes.default
        };
        if !fallback.is_empty() {
            rules.push(Rule {
                matches: None,
                path: fallback,
                condition: None,
            });
        }
        if rules.is_empty() {
            continue;
        }
        subscriptions.push(Subscription {
            pubsubname: s.pubsubname,
            topic: s.topic,
            rules,
            dead_letter_topic: Some(s.dead_letter_topic).filter(|t| !t.is_empty()),
            metadata: s.metadata,
            bulk_subscribe: s.bulk_subscribe,
        });
    }
    Ok(subscriptions)
}

/// The path of the first rule matching `event` (dapr `findMatchingRoute`).
fn find_route<'a>(rules: &'a [Rule], event: &Value) -> Result<Option<&'a str>, String> {
    for rule in rules {
        match &rule.condition {
            None => return Ok(Some(&rule.path)),
            Some(condition) => {
                if condition.eval(event)? {
                    return Ok(Some(&rule.path));
                }
            }
        }
    }
    Ok(None)
}

/// The one form of CEL the app's routing rules take (`todo_core::subscriptions`):
/// `event.<attribute>[.<key>...] == "<text>"`, the text quoted as JSON quotes it (CEL reads the
/// escapes serde_json writes the same way). Any other expression is refused at discovery with an
/// error naming it, so a test notices when the app emits more than the double evaluates.
#[derive(Clone, Debug, PartialEq)]
struct Cel {
    /// The keys below `event`, outermost first.
    path: Vec<String>,
    text: String,
}

impl Cel {
    fn parse(source: &str) -> anyhow::Result<Self> {
        let unsupported = || {
            anyhow!(
                "unsupported match expression {source:?}: the Dapr double evaluates only \
                 `event.<attribute> == \"text\"`, the form /dapr/subscribe emits"
            )
        };
        let (left, right) = source.split_once("==").ok_or_else(unsupported)?;
        let mut keys = left.trim().split('.');
        if keys.next() != Some("event") {
            return Err(unsupported());
        }
        let path: Vec<String> = keys.map(str::to_owned).collect();
        let identifier = |key: &String| {
            key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if path.is_empty() || !path.iter().all(identifier) {
            return Err(unsupported());
        }
        let text = serde_json::from_str(right.trim()).map_err(|_| unsupported())?;
        Ok(Self { path, text })
    }

    /// As CEL evaluates it: a missing key is an error, a value of another type is not equal.
    fn eval(&self, event: &Value) -> Result<bool, String> {
        let mut value = event;
        for key in &self.path {
            value = value
                .get(key)
                .ok_or_else(|| format!("no such key: {key}"))?;
        }
        Ok(value.as_str() == Some(self.text.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one request to the double and returns status, headers and body.
    async fn send(
        dapr: &DaprDouble,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = HttpApp::new(dapr.url())
            .call(request.body(Bytes::from(body.to_owned()))?)
            .await?;
        let (parts, body) = response.into_parts();
        Ok((parts.status, parts.headers, body))
    }

    fn error_code(body: &Bytes) -> String {
        let body: Value = serde_json::from_slice(body).expect("error body is JSON");
        body["errorCode"]
            .as_str()
            .expect("errorCode is a string")
            .to_owned()
    }

    fn task_event(id: &str, kind: &str) -> String {
        json!({"specversion": "1.0", "id": id, "source": "/todo", "type": kind, "data": {"title": "x"}})
            .to_string()
    }

    const CE: (&str, &str) = ("content-type", CLOUD_EVENTS_JSON);

    #[tokio::test]
    async fn publish_latency_delays_publishes_only() -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start().await;
        dapr.set_publish_latency(Duration::from_millis(150));
        // Act
        let started = std::time::Instant::now();
        let (status, _, _) = send(
            &dapr,
            Method::POST,
            "/v1.0/publish/kafka-pubsub/tasks",
            &[CE],
            &task_event("e1", "task.created"),
        )
        .await?;
        let publish = started.elapsed();
        let started = std::time::Instant::now();
        let (health, _, _) = send(&dapr, Method::GET, "/v1.0/healthz", &[], "").await?;
        let other = started.elapsed();
        // Assert
        assert_eq!(
            (status, health),
            (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT)
        );
        assert!(publish >= Duration::from_millis(150), "{publish:?}");
        assert!(other < Duration::from_millis(150), "{other:?}");
        Ok(())
    }

    #[tokio::test]
    async fn publish_records_the_cloud_event_with_its_partition_key() -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start().await;
        // Act
        let (status, _, _) = send(
            &dapr,
            Method::POST,
            "/v1.0/publish/kafka-pubsub/tasks?metadata.partitionKey=user%2D1&other=x",
            &[CE, ("traceparent", "00-abc-def-01")],
            &task_event("e1", "task.created"),
        )
        .await?;
        // Assert
        assert_eq!(status, StatusCode::NO_CONTENT);
        let messages = dapr.wait_for(1, Duration::from_secs(1)).await?;
        let message = &messages[0];
        assert_eq!(
            (message.pubsub.as_str(), message.topic.as_str()),
            ("kafka-pubsub", "tasks")
        );
        assert_eq!(message.partition_key(), Some("user-1"));
        assert_eq!(
            message.metadata.len(),
            1,
            "only metadata.* pairs are metadata"
        );
        assert_eq!(
            (message.event_id(), message.event_type()),
            (Some("e1"), Some("task.created"))
        );
        assert_eq!(message.envelope["topic"], "tasks");
        assert_eq!(message.envelope["pubsubname"], "kafka-pubsub");
        assert_eq!(message.envelope["traceparent"], "00-abc-def-01");
        assert_eq!(message.headers["traceparent"], "00-abc-def-01");
        assert_eq!(message.body["source"], "/todo");
        assert_eq!(message.via, Via::Publish);
        assert_eq!(dapr.messages_on("tasks").len(), 1);
        assert!(dapr.messages_on("reminders").is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn publish_wraps_a_json_body_in_a_cloud_event_of_its_own() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let (status, _, _) = send(
            &dapr,
            Method::POST,
            "/v1.0/publish/kafka-pubsub/tasks",
            &[("content-type", "application/json")],
            r#"{"title":"x"}"#,
        )
        .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let message = &dapr.messages()[0];
        assert_eq!(message.event_type(), Some(DAPR_EVENT_TYPE));
        assert_eq!(message.envelope["source"], "todo-backend");
        assert_eq!(message.envelope["datacontenttype"], "application/json");
        assert_eq!(message.data(), Some(&json!({"title": "x"})));
        assert!(message.event_id().is_some_and(|id| !id.is_empty()));
        Ok(())
    }

    #[tokio::test]
    async fn publish_rejects_what_dapr_rejects() -> anyhow::Result<()> {
        let dapr = DaprDouble::start_with(Options {
            allowed_topics: Some(vec!["tasks".into()]),
            ..Options::default()
        })
        .await;
        let cases = [
            (
                "/v1.0/publish/nope/tasks",
                CE.1,
                task_event("e", "t"),
                404,
                "ERR_PUBSUB_NOT_FOUND",
                "unknown pubsub",
            ),
            (
                "/v1.0/publish/kafka-pubsub/",
                CE.1,
                task_event("e", "t"),
                404,
                "ERR_TOPIC_EMPTY",
                "no topic",
            ),
            (
                "/v1.0/publish/kafka-pubsub/other",
                CE.1,
                task_event("e", "t"),
                403,
                "ERR_PUBSUB_FORBIDDEN",
                "topic not allowed",
            ),
            (
                "/v1.0/publish/kafka-pubsub/tasks",
                CE.1,
                "not json".into(),
                500,
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                "body is not JSON",
            ),
            (
                "/v1.0/publish/kafka-pubsub/tasks",
                CE.1,
                r#"{"specversion":"1.0","source":"s","type":"t"}"#.into(),
                500,
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                "no id",
            ),
            (
                "/v1.0/publish/kafka-pubsub/tasks?metadata.rawPayload=maybe",
                CE.1,
                task_event("e", "t"),
                400,
                "ERR_PUBSUB_REQUEST_METADATA",
                "rawPayload not a boolean",
            ),
        ];
        let count = cases.len();
        for (path, content_type, body, status, code, case) in cases {
            let (got, headers, answer) = send(
                &dapr,
                Method::POST,
                path,
                &[("content-type", content_type)],
                &body,
            )
            .await?;
            assert_eq!(got.as_u16(), status, "{case}");
            assert_eq!(headers[CONTENT_TYPE], "application/json", "{case}");
            assert_eq!(error_code(&answer), code, "{case}");
        }
        assert!(dapr.messages().is_empty());
        assert_eq!(dapr.publish_attempts(), count);
        Ok(())
    }

    #[tokio::test]
    async fn fail500_mode_fails_publishes_and_outbound_health_but_counts_attempts()
    -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        dapr.set_mode(Mode::Fail500).await;
        for _ in 0..2 {
            let (status, _, body) = send(
                &dapr,
                Method::POST,
                "/v1.0/publish/kafka-pubsub/tasks",
                &[CE],
                &task_event("e", "t"),
            )
            .await?;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(error_code(&body), "ERR_PUBSUB_PUBLISH_MESSAGE");
        }
        let (status, _, _) = send(&dapr, Method::GET, "/v1.0/healthz/outbound", &[], "").await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, _, _) = send(&dapr, Method::GET, "/v1.0/healthz", &[], "").await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(dapr.publish_attempts(), 2);
        assert!(dapr.messages().is_empty());

        dapr.set_mode(Mode::Healthy).await;
        let (status, _, _) = send(&dapr, Method::GET, "/v1.0/healthz/outbound", &[], "").await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        Ok(())
    }

    #[tokio::test]
    async fn refuse_mode_closes_the_port_and_healthy_reopens_the_same_one() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let port = dapr.port();
        let (status, _, _) = send(&dapr, Method::GET, "/v1.0/healthz", &[], "").await?;
        assert_eq!(status, StatusCode::NO_CONTENT);

        dapr.set_mode(Mode::Refuse).await;
        let error = tokio::net::TcpStream::connect(dapr.addr())
            .await
            .expect_err("connect is refused");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            send(&dapr, Method::GET, "/v1.0/healthz", &[], "")
                .await
                .is_err()
        );

        dapr.set_mode(Mode::Healthy).await;
        assert_eq!(dapr.port(), port);
        let (status, _, _) = send(&dapr, Method::GET, "/v1.0/healthz", &[], "").await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        Ok(())
    }

    #[tokio::test]
    async fn hang_mode_holds_requests_until_the_mode_changes() -> anyhow::Result<()> {
        let dapr = Arc::new(DaprDouble::start().await);
        dapr.set_mode(Mode::Hang).await;
        let held = tokio::time::timeout(
            Duration::from_millis(200),
            send(
                &dapr,
                Method::POST,
                "/v1.0/publish/kafka-pubsub/tasks",
                &[CE],
                &task_event("e", "t"),
            ),
        )
        .await;
        assert!(held.is_err(), "a hanging sidecar does not answer");

        let pending = tokio::spawn({
            let dapr = dapr.clone();
            async move {
                send(
                    &dapr,
                    Method::POST,
                    "/v1.0/publish/kafka-pubsub/tasks",
                    &[CE],
                    &task_event("e2", "t"),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!pending.is_finished());
        dapr.set_mode(Mode::Healthy).await;
        let (status, _, _) = pending.await??;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            dapr.messages().len(),
            1,
            "the abandoned request was never answered"
        );
        Ok(())
    }

    fn bulk_body(ids: &[&str]) -> String {
        let entries: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({
                    "entryId": format!("entry-{id}"),
                    "event": serde_json::from_str::<Value>(&task_event(id, "task.created")).unwrap_or_default(),
                    "contentType": CLOUD_EVENTS_JSON,
                    "metadata": {"partitionKey": format!("user-{id}")},
                })
            })
            .collect();
        Value::Array(entries).to_string()
    }

    #[tokio::test]
    async fn bulk_publish_reports_only_the_failed_entries() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let path = "/v1.0-alpha1/publish/bulk/kafka-pubsub/tasks?metadata.source=bulk";
        let (status, _, _) = send(&dapr, Method::POST, path, &[], &bulk_body(&["a", "b"])).await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(dapr.messages().len(), 2);

        dapr.clear();
        dapr.set_fault(Fault::event_ids(["b", "d"]));
        let (status, _, body) = send(
            &dapr,
            Method::POST,
            path,
            &[],
            &bulk_body(&["a", "b", "c", "d"]),
        )
        .await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = serde_json::from_slice(&body)?;
        assert_eq!(body["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE");
        let failed: Vec<&str> = body["failedEntries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["entryId"].as_str())
            .collect();
        assert_eq!(failed, ["entry-b", "entry-d"]);
        let published = dapr.messages();
        let ids: Vec<_> = published.iter().filter_map(Message::event_id).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(
            published[0].via,
            Via::Bulk {
                entry_id: "entry-a".into()
            }
        );
        assert_eq!(published[0].partition_key(), Some("user-a"));
        assert_eq!(published[0].metadata["source"], "bulk");

        dapr.set_fault(Fault::event_ids(["c"]));
        let (status, _, body) =
            send(&dapr, Method::POST, path, &[], &bulk_body(&["c", "e"])).await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            serde_json::from_slice::<Value>(&body)?["failedEntries"][0]["entryId"],
            "entry-c"
        );

        let duplicated = format!(
            "[{0},{0}]",
            &bulk_body(&["x"])[1..bulk_body(&["x"]).len() - 1]
        );
        let (status, _, body) = send(&dapr, Method::POST, path, &[], &duplicated).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "ERR_PUBSUB_EVENTS_SER");
        assert_eq!(dapr.publish_attempts(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn an_event_fault_with_a_count_fails_that_many_publishes_then_lets_the_event_through()
    -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start().await;
        dapr.set_fault(Fault::event_ids_times(["a"], 2));
        let single = "/v1.0/publish/kafka-pubsub/tasks";
        let bulk = "/v1.0-alpha1/publish/bulk/kafka-pubsub/tasks";
        let event_a = task_event("a", "task.created");
        // Act
        let (first, _, refused) = send(&dapr, Method::POST, single, &[CE], &event_a).await?;
        let (second, _, partial) =
            send(&dapr, Method::POST, bulk, &[], &bulk_body(&["a", "b"])).await?;
        let (third, _, _) = send(&dapr, Method::POST, single, &[CE], &event_a).await?;
        let (fourth, _, _) = send(&dapr, Method::POST, bulk, &[], &bulk_body(&["a"])).await?;
        // Assert
        assert_eq!(first, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error_code(&refused), "ERR_PUBSUB_PUBLISH_MESSAGE");
        assert_eq!(second, StatusCode::INTERNAL_SERVER_ERROR);
        let partial: Value = serde_json::from_slice(&partial)?;
        assert_eq!(
            partial["failedEntries"].as_array().map(Vec::len),
            Some(1),
            "{partial}"
        );
        assert_eq!(partial["failedEntries"][0]["entryId"], "entry-a");
        assert_eq!(
            (third, fourth),
            (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT),
            "two failures used up"
        );
        let messages = dapr.messages();
        let ids: Vec<_> = messages.iter().filter_map(Message::event_id).collect();
        assert_eq!(ids, ["b", "a", "a"]);
        assert_eq!(dapr.publish_attempts(), 4);
        Ok(())
    }

    #[tokio::test]
    async fn api_token_is_required_except_on_health_checks() -> anyhow::Result<()> {
        let dapr = DaprDouble::start_with(Options {
            api_token: Some("s3cret".into()),
            ..Options::default()
        })
        .await;
        let path = "/v1.0/publish/kafka-pubsub/tasks";
        let (status, headers, body) =
            send(&dapr, Method::POST, path, &[CE], &task_event("e", "t")).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers[CONTENT_TYPE].to_str()?.starts_with("text/plain"));
        assert_eq!(body, "invalid api token\n");
        let (status, _, _) = send(
            &dapr,
            Method::POST,
            path,
            &[CE, (API_TOKEN_HEADER, "wrong")],
            &task_event("e", "t"),
        )
        .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = send(
            &dapr,
            Method::POST,
            path,
            &[CE, (API_TOKEN_HEADER, "s3cret")],
            &task_event("e", "t"),
        )
        .await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for health in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
            let (status, _, _) = send(&dapr, Method::GET, health, &[], "").await?;
            assert_eq!(status, StatusCode::NO_CONTENT, "{health}");
        }
        Ok(())
    }

    /// Records the requests it gets and answers `status`/`body` by path.
    type Calls = Arc<Mutex<Vec<Request<Bytes>>>>;

    fn fake_app(answers: &[(&'static str, u16, &'static str)]) -> (Calls, impl AppClient + use<>) {
        let calls = Calls::default();
        let answers: Vec<(&'static str, u16, &'static str)> = answers.to_vec();
        let seen = calls.clone();
        let app = move |request: Request<Bytes>| {
            let (status, body) = answers
                .iter()
                .find(|(path, _, _)| *path == request.uri().path())
                .map_or((404, ""), |(_, status, body)| (*status, *body));
            lock(&seen).push(request);
            async move {
                let mut response = Response::new(Bytes::from_static(body.as_bytes()));
                *response.status_mut() = StatusCode::from_u16(status)?;
                Ok(response)
            }
        };
        (calls, app)
    }

    #[tokio::test]
    async fn cron_binding_ticks_are_posted_with_their_metadata_and_discovery_is_options()
    -> anyhow::Result<()> {
        let dapr = DaprDouble::start_with(Options {
            app_api_token: Some("app-token".into()),
            ..Options::default()
        })
        .await;
        let (calls, app) = fake_app(&[("/sweep", 200, "{}"), ("/refused", 500, "")]);
        assert!(dapr.binding_subscribed(&app, "/sweep").await?);
        assert!(!dapr.binding_subscribed(&app, "/absent").await?, "404");
        let now = DateTime::parse_from_rfc3339("2026-05-01T08:30:00.25Z")?.to_utc();
        assert_eq!(dapr.fire_cron_binding(&app, "/sweep", now).await, Ok(200));
        assert_eq!(dapr.fire_cron_binding(&app, "/refused", now).await, Ok(500));

        let calls = lock(&calls);
        assert_eq!(calls[0].method(), Method::OPTIONS);
        let tick = &calls[2];
        assert_eq!(tick.method(), Method::POST);
        assert_eq!(tick.uri().path(), "/sweep");
        assert!(tick.body().is_empty());
        assert_eq!(tick.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(tick.headers()[API_TOKEN_HEADER], "app-token");
        assert_eq!(tick.headers()["timeZone"], "Local");
        assert_eq!(
            tick.headers()["readTimeUTC"],
            "2026-05-01 08:30:00.250 +0000 UTC"
        );
        Ok(())
    }

    fn subscriptions_json() -> &'static str {
        r#"[
            {"pubsubname":"kafka-pubsub","topic":"tasks","deadLetterTopic":"tasks-dlq",
             "routes":{"rules":[
                {"match":"event.type == \"task.completed\"","path":"/events/completed"},
                {"match":"event.type == \"task.deleted\"","path":"/events/deleted"}
             ],"default":"/events/other"},
             "metadata":{"consumerGroup":"todo-backend"}},
            {"pubsubname":"kafka-pubsub","topic":"reminders","route":"/events/reminders",
             "metadata":{"deadLetterTopic":"ignored"}},
            {"pubsubname":"kafka-pubsub","topic":"no-route"},
            {"pubsubname":"kafka-pubsub","topic":"catch-all","routes":{"rules":[{"path":"/events/all"}]}}
        ]"#
    }

    #[tokio::test]
    async fn discovery_reads_dapr_programmatic_subscriptions() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[("/dapr/subscribe", 200, subscriptions_json())]);
        let subscriptions = dapr.discover_subscriptions(&app).await?;
        assert_eq!(
            subscriptions.len(),
            3,
            "a subscription without a route is dropped"
        );
        assert_eq!(
            subscriptions[2].rules[0].matches, None,
            "a rule without match takes all"
        );
        let tasks = &subscriptions[0];
        assert_eq!(tasks.dead_letter_topic.as_deref(), Some("tasks-dlq"));
        assert_eq!(
            tasks
                .rules
                .iter()
                .map(|r| r.path.as_str())
                .collect::<Vec<_>>(),
            ["/events/completed", "/events/deleted", "/events/other"]
        );
        assert_eq!(tasks.rules[2].matches, None);
        assert_eq!(tasks.metadata["consumerGroup"], "todo-backend");
        assert_eq!(
            subscriptions[1].dead_letter_topic, None,
            "deadLetterTopic in metadata is not read"
        );
        assert_eq!(lock(&calls)[0].method(), Method::GET);

        let (_, broken) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"p","topic":"t","routes":{"rules":[{"match":"event.type.size() > 1","path":"/x"}]}}]"#,
        )]);
        assert!(dapr.discover_subscriptions(&broken).await.is_err());
        let (_, none) = fake_app(&[]);
        assert!(
            dapr.discover_subscriptions(&none).await?.is_empty(),
            "404 means no subscriptions"
        );
        Ok(())
    }

    fn event(kind: &str) -> Value {
        json!({"specversion": "1.0", "id": "e1", "source": "/todo", "type": kind})
    }

    #[tokio::test]
    async fn delivery_interprets_the_app_answer_as_dapr_does() -> anyhow::Result<()> {
        use AppAnswer::*;
        let cases: [(u16, &'static str, &[AppAnswer], &str); 9] = [
            (200, r#"{"status":"SUCCESS"}"#, &[Success], "SUCCESS"),
            (200, "", &[Success], "empty body"),
            (204, "not json", &[Success], "unparseable 2xx body"),
            (200, "{}", &[Success], "no status"),
            (200, r#"{"status":"DROP"}"#, &[Drop], "DROP"),
            (404, "", &[NotFound], "404"),
            (
                200,
                r#"{"status":"RETRY"}"#,
                &[Retry, Retry, Retry],
                "RETRY",
            ),
            (
                200,
                r#"{"status":"ok"}"#,
                &[
                    UnknownStatus("ok".into()),
                    UnknownStatus("ok".into()),
                    UnknownStatus("ok".into()),
                ],
                "unknown status",
            ),
            (500, "", &[Status(500), Status(500), Status(500)], "500"),
        ];
        for (status, body, expected, case) in cases {
            let dapr = DaprDouble::start().await;
            let (calls, app) = fake_app(&[
                ("/dapr/subscribe", 200, subscriptions_json()),
                ("/events/completed", status, body),
            ]);
            let outcome = dapr
                .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.completed"))
                .await?;
            assert_eq!(outcome.answers(), expected, "{case}");
            let dead_lettered = dapr.messages_on("tasks-dlq");
            let should_dead_letter = matches!(
                expected.last(),
                Some(Drop | Retry | UnknownStatus(_) | Status(_))
            );
            assert_eq!(
                outcome.dead_letter().is_some(),
                should_dead_letter,
                "{case}"
            );
            assert_eq!(
                dead_lettered.len(),
                usize::from(should_dead_letter),
                "{case}"
            );
            let calls = lock(&calls);
            assert_eq!(
                calls[1].headers()[CONTENT_TYPE],
                CLOUD_EVENTS_JSON,
                "{case}"
            );
            assert_eq!(
                serde_json::from_slice::<Value>(calls[1].body())?,
                event("task.completed"),
                "{case}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn delivery_routes_by_the_match_rules() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[
            ("/dapr/subscribe", 200, subscriptions_json()),
            ("/events/completed", 200, ""),
            ("/events/deleted", 200, ""),
            ("/events/other", 200, ""),
            ("/events/reminders", 200, ""),
        ]);
        for (topic, kind, path) in [
            ("tasks", "task.completed", "/events/completed"),
            ("tasks", "task.deleted", "/events/deleted"),
            ("tasks", "task.created", "/events/other"),
            ("reminders", "reminder.due", "/events/reminders"),
        ] {
            let outcome = dapr
                .deliver_event(&app, "kafka-pubsub", topic, &event(kind))
                .await?;
            assert_eq!(
                outcome,
                DeliveryOutcome::Delivered {
                    path: path.into(),
                    answers: vec![AppAnswer::Success]
                },
                "{kind}"
            );
        }
        let outcome = dapr
            .deliver_event(&app, "kafka-pubsub", "unknown", &event("x"))
            .await?;
        assert_eq!(outcome, DeliveryOutcome::NoSubscription);
        assert_eq!(
            lock(&calls).len(),
            5,
            "one discovery, then one call per event"
        );
        Ok(())
    }

    #[tokio::test]
    async fn events_no_rule_routes_are_dead_lettered_as_dapr_does() -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"kafka-pubsub","topic":"tasks","deadLetterTopic":"tasks-dlq",
                "routes":{"rules":[{"match":"event.type == \"task.completed\"","path":"/events/completed"}]}}]"#,
        )]);
        let untyped = json!({"specversion": "1.0", "id": "e2", "source": "/todo"});
        // Act
        let unmatched = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.created"))
            .await?;
        let unevaluable = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &untyped)
            .await?;
        // Assert
        assert_eq!(
            unmatched,
            DeliveryOutcome::NoRoute {
                dead_letter: Some("tasks-dlq".into()),
                error: None
            }
        );
        assert_eq!(
            unevaluable,
            DeliveryOutcome::NoRoute {
                dead_letter: Some("tasks-dlq".into()),
                error: Some("no such key: type".into())
            }
        );
        let dead = dapr.messages_on("tasks-dlq");
        let ids: Vec<_> = dead.iter().filter_map(Message::event_id).collect();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(
            dead[0].via,
            Via::DeadLetter {
                from_topic: "tasks".into()
            }
        );
        assert_eq!(lock(&calls).len(), 1, "only discovery reached the app");
        Ok(())
    }

    #[tokio::test]
    async fn bulk_subscriptions_are_refused_rather_than_delivered_one_by_one() -> anyhow::Result<()>
    {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"kafka-pubsub","topic":"tasks","route":"/events",
                "bulkSubscribe":{"enabled":true,"maxMessagesCount":10}}]"#,
        )]);
        let subscriptions = dapr.discover_subscriptions(&app).await?;
        assert_eq!(
            subscriptions[0].bulk_subscribe,
            Some(BulkSubscribe {
                enabled: true,
                max_messages_count: Some(10),
                max_await_duration_ms: None
            })
        );
        let error = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.created"))
            .await
            .expect_err("bulk delivery is not modelled");
        assert!(error.to_string().contains("bulkSubscribe"), "{error}");
        assert_eq!(lock(&calls).len(), 1, "nothing was delivered");
        Ok(())
    }

    /// [`fake_app`] on a loopback port. Aborting the task closes the port and every connection.
    async fn serve_app(
        answers: &[(&'static str, u16, &'static str)],
    ) -> anyhow::Result<(Calls, SocketAddr, JoinHandle<()>)> {
        let listener = bind("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let (calls, app) = fake_app(answers);
        let app = Arc::new(app);
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let app = app.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let app = app.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let response = app.call(Request::from_parts(parts, body)).await?;
                            anyhow::Ok(response.map(Full::new))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((calls, addr, server))
    }

    #[tokio::test]
    async fn http_app_calls_an_app_over_http() -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start_with(Options {
            app_api_token: Some("app-token".into()),
            ..Options::default()
        })
        .await;
        let (calls, addr, server) = serve_app(&[
            ("/dapr/subscribe", 200, subscriptions_json()),
            ("/events/completed", 200, r#"{"status":"SUCCESS"}"#),
        ])
        .await?;
        let app = HttpApp::new(format!("http://{addr}/"));
        // Act
        let delivered = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.completed"))
            .await?;
        server.abort();
        let _ = server.await;
        let unreachable = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.completed"))
            .await?;
        // Assert
        assert_eq!(
            delivered,
            DeliveryOutcome::Delivered {
                path: "/events/completed".into(),
                answers: vec![AppAnswer::Success]
            }
        );
        {
            let calls = lock(&calls);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].method(), Method::GET);
            assert_eq!(calls[0].uri().path(), "/dapr/subscribe");
            let delivery = &calls[1];
            assert_eq!(delivery.method(), Method::POST);
            assert_eq!(delivery.uri().path(), "/events/completed");
            assert_eq!(delivery.headers()[CONTENT_TYPE], CLOUD_EVENTS_JSON);
            assert_eq!(delivery.headers()[API_TOKEN_HEADER], "app-token");
            assert_eq!(
                serde_json::from_slice::<Value>(delivery.body())?,
                event("task.completed")
            );
        }
        let DeliveryOutcome::Exhausted { answers, .. } = &unreachable else {
            panic!("a closed port is retried until exhausted: {unreachable:?}");
        };
        assert_eq!(answers.len(), 3);
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, AppAnswer::Unreachable(_))),
            "{answers:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn wait_for_gives_up_after_the_timeout() {
        let dapr = DaprDouble::start().await;
        let error = dapr
            .wait_for(1, Duration::from_millis(50))
            .await
            .expect_err("nothing arrives");
        assert!(error.to_string().contains("got 0"));
    }

    #[test]
    fn cel_subset_evaluates_like_cel() -> anyhow::Result<()> {
        let event = json!({"type": "a", "source": "s", "data": {"n": 2, "kind": "k\"1"}});
        for (source, expected) in [
            (r#"event.type == "a""#, Ok(true)),
            (r#"event.type == "b""#, Ok(false)),
            (r#"event.data.kind=="k\"1""#, Ok(true)),
            (r#"event.data.n == "2""#, Ok(false)),
            (
                r#"event.missing == "a""#,
                Err("no such key: missing".to_owned()),
            ),
        ] {
            assert_eq!(Cel::parse(source)?.eval(&event), expected, "{source}");
        }
        for unsupported in [
            "event.type in ['a']",
            "event.type.startsWith('a')",
            "event.type ==",
            "(true",
            "true",
            "event.type == 'a'",
            r#"event.type != "a""#,
            r#"event.type == "b" || event.source == "s""#,
            r#"event.type == "a" && event.source == "s""#,
            r#"(event.type == "a")"#,
            "event.data.n == 2",
            r#"type == "a""#,
            r#"event == "a""#,
        ] {
            let error = Cel::parse(unsupported).expect_err(unsupported).to_string();
            assert!(
                error.contains("unsupported match expression"),
                "{unsupported}: {error}"
            );
        }
        Ok(())
    }

    #[test]
    fn query_metadata_keeps_only_decoded_metadata_pairs() {
        let metadata = query_metadata(Some(
            "metadata.partitionKey=user%201&x=1&metadata.rawPayload=true&metadata.partitionKey=2",
        ));
        assert_eq!(metadata.len(), 2);
        assert_eq!(metadata["partitionKey"], "user 1");
        assert_eq!(percent_decode("a+b%2Fc%zz"), "a b/c%zz");
    }
}
