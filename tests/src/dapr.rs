//! A Dapr sidecar double for tests: the HTTP API the app calls (publish, bulk publish, health)
//! and the calls the sidecar makes into the app (subscription discovery, event delivery, cron
//! input bindings).
//!
//! It follows Dapr's documented contract (pub/sub API reference, app API token, cron binding).
//! Status codes, error codes and messages were checked against the Dapr sources (dapr/dapr
//! `pkg/api/http/http.go`, `middlewares.go`, `pkg/api/errors/pubsub.go`,
//! `pkg/runtime/subscription/postman/http/http.go`, `pkg/runtime/subscription/subscription.go`,
//! dapr/components-contrib `pubsub/envelope.go`). The app schedules with a `bindings.cron`
//! component, not the Jobs API, so the double has no Jobs API: its routes answer 404.
//!
//! The parts: `dapr/sidecar_api.rs` answers the API the app calls, with Dapr's errors, and
//! `dapr/envelope.rs` builds what Dapr hands the broker; `dapr/delivery.rs` makes the calls into
//! the app (deliveries with retries and dead letters, cron binding ticks) through an
//! [`AppClient`] (`dapr/app_client.rs`), to the subscriptions `dapr/discovery.rs` reads from
//! `GET /dapr/subscribe` and routes with the CEL subset of `dapr/cel.rs`.
//!
//! ```ignore
//! let dapr = DaprDouble::start().await;
//! // point the app at dapr.url(), exercise it, then:
//! let events = dapr.wait_for(1, Duration::from_secs(5)).await?;
//! assert_eq!(events[0].partition_key(), Some("user-1"));
//! ```

mod app_client;
mod cel;
mod delivery;
mod discovery;
mod envelope;
mod sidecar_api;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use app_client::{AppClient, HttpApp};
pub use delivery::{AppAnswer, DeliveryOutcome};
pub use discovery::{BulkSubscribe, Rule, Subscription};
use sidecar_api::{Reply, reply};

/// The pub/sub component the app publishes to (README, "Events").
pub const DEFAULT_PUBSUB: &str = "kafka-pubsub";
/// Header carrying the API token, in both directions (`pkg/security/consts`).
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
const CLOUD_EVENTS_JSON: &str = "application/cloudevents+json";

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
    /// Publishes, bulk publishes and `GET /v1.0/healthz/outbound` answer 500 with Dapr's error
    /// JSON; `GET /v1.0/healthz` still answers 204.
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
    /// `metadata.partitionKey`, the Kafka record key (Dapr's Kafka pub/sub component reference).
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

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn record(&self, message: Message) {
        self.state().messages.push(message);
        self.arrived.notify_waiters();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::test_support::{CE, error_code, send, task_event};
    use http::Method;

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

    #[tokio::test]
    async fn wait_for_gives_up_after_the_timeout() {
        let dapr = DaprDouble::start().await;
        let error = dapr
            .wait_for(1, Duration::from_millis(50))
            .await
            .expect_err("nothing arrives");
        assert!(error.to_string().contains("got 0"));
    }
}
