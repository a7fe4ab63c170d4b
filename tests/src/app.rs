//! `App`: a loaded Spin application that answers HTTP requests the way `spin up` does.
//!
//! Request handling follows spinframework/spin `crates/trigger-http/src/server.rs`:
//! `/.well-known/spin/health` answers `200 OK`, other `/.well-known/spin/*` paths are Spin's own,
//! an unmatched path gets an empty 404, a matched one goes to its component with the `spin-*`
//! headers added and an absolute URI, and a guest that traps or returns an error code gets an
//! empty 500. Each component runs under wasmtime's `ProxyHandler`, which reuses instances
//! serially and concurrently with the limits in [`ReuseConfig`], as Spin 4 does for WASI 0.3
//! components.
//!
//! Bodies are streamed as Spin 4.0 streams them: the request body is handed to the guest as it
//! arrives, and the guest's response goes to hyper as soon as the guest returns it, with its body
//! read from the guest's stream while hyper writes it (no buffering, no added `Content-Length`:
//! hyper frames it from the guest's headers). The instance's task lasts until hyper is done with
//! the body. Accepted sockets keep Nagle's algorithm on (no `TCP_NODELAY`), as in Spin 4.0.2, so
//! a response whose head and body leave in separate writes waits for the client's delayed ACK
//! here exactly as it does on Spin. [`App::handle`] runs the same path and collects the body.

use crate::calls::HostCalls;
use crate::host::{self, ComponentContext, HostState, IntoAnyhow as _};
use crate::manifest::Manifest;
use crate::outbound::OutboundClient;
use crate::postgres::{PgContext, Pools};
use crate::router::{RouteDisplay, Router};
use crate::runtime_config::RuntimeConfig;
use crate::variables::Providers;
use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// A request or response body as it travels between hyper and a guest.
pub type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// A body made of `bytes`, for requests made in process and the host's own answers.
fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| -> ErrorCode { match never {} })
        .boxed_unsync()
}

/// Spin's reserved path prefix.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// Instance reuse limits. `Default` is what `spin up` uses for WASI 0.3 components
/// (spinframework/spin `crates/trigger-http/src/lib.rs`): 128 requests per instance, 16 at once,
/// no request timeout, idle instances dropped after 1 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReuseConfig {
    /// Requests one instance serves before it is dropped (at least 1).
    pub max_reuse: usize,
    /// Requests one instance serves at the same time (at least 1).
    pub max_concurrent_reuse: usize,
    /// How long an idle instance is kept for reuse.
    pub idle_timeout: Duration,
    /// How long a request may run (`Duration::MAX`: no limit).
    pub request_timeout: Duration,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        Self {
            max_reuse: 128,
            max_concurrent_reuse: 16,
            idle_timeout: Duration::from_secs(1),
            request_timeout: Duration::MAX,
        }
    }
}

impl ReuseConfig {
    /// A fresh instance for every request.
    pub fn no_reuse() -> Self {
        Self {
            max_reuse: 1,
            max_concurrent_reuse: 1,
            ..Self::default()
        }
    }
}

/// Creates stores for one component's instances.
struct ComponentHandler {
    context: ComponentContext,
    reuse: ReuseConfig,
}

impl HandlerState for ComponentHandler {
    type StoreData = HostState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<HostState>> {
        let engine = host::engine().map_err(wasmtime::Error::from_anyhow)?;
        Ok(StoreBundle {
            store: Store::new(engine, self.context.new_state()),
            write_profile: Box::new(|_| {}),
        })
    }

    fn request_timeout(&self) -> Duration {
        self.reuse.request_timeout
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.reuse.idle_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.reuse.max_reuse
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.reuse.max_concurrent_reuse
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        if self.context.log_guest_output {
            eprintln!("[host] component {} failed: {error:?}", self.context.id);
        }
    }
}

struct Inner {
    name: String,
    version: String,
    router: Router,
    handlers: HashMap<String, ProxyHandler<ComponentHandler>>,
    descriptions: HashMap<String, String>,
    /// What each routed component's instances asked of the host.
    calls: HashMap<String, HostCalls>,
    log: bool,
}

/// A Spin application loaded from its manifest. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

/// Whether guest output is shown: `TEST_LOG` set, or forced (serve mode).
fn log_enabled() -> bool {
    std::env::var_os("TEST_LOG").is_some()
}

impl App {
    /// Loads `manifest` with Spin 4's default instance reuse. `overrides` win over
    /// `SPIN_VARIABLE_*` env vars, which win over defaults.
    pub fn load(manifest: &Path, overrides: HashMap<String, String>) -> Result<App> {
        Self::load_with(manifest, overrides, ReuseConfig::default())
    }

    /// Loads `manifest` with the given instance reuse limits.
    pub fn load_with(
        manifest: &Path,
        overrides: HashMap<String, String>,
        reuse: ReuseConfig,
    ) -> Result<App> {
        Self::load_inner(
            manifest,
            Providers::from_env(overrides),
            reuse,
            log_enabled(),
        )
    }

    /// Like [`App::load_with`], with guest output always shown (for `todo-host`).
    pub fn load_verbose(
        manifest: &Path,
        overrides: HashMap<String, String>,
        reuse: ReuseConfig,
    ) -> Result<App> {
        Self::load_inner(manifest, Providers::from_env(overrides), reuse, true)
    }

    fn load_inner(
        manifest_path: &Path,
        providers: Providers,
        reuse: ReuseConfig,
        log: bool,
    ) -> Result<App> {
        ensure!(
            reuse.max_reuse >= 1 && reuse.max_concurrent_reuse >= 1,
            "instance reuse limits must be at least 1"
        );
        let manifest = Manifest::load(manifest_path, &providers)?;
        let router = Router::build(
            manifest
                .routes
                .iter()
                .map(|(c, r)| (c.as_str(), r.as_str())),
        )?;
        let pools = Arc::new(Pools::default());
        let runtime_config = RuntimeConfig::beside(manifest_path)?;
        let outbound = OutboundClient::new(runtime_config.connection_pooling);
        let linker = host::linker()?;
        let mut handlers = HashMap::new();
        let mut descriptions = HashMap::new();
        let mut calls = HashMap::new();
        for (id, config) in &manifest.components {
            // Only routed components are instantiated, as Spin does.
            if !manifest.routes.iter().any(|(c, _)| c == id) {
                continue;
            }
            let component =
                host::component(&config.source).with_context(|| format!("component {id:?}"))?;
            let pre = linker
                .instantiate_pre(&component)
                .into_anyhow()
                .with_context(|| format!("component {id:?}: unsatisfied imports"))?;
            let pre = ServicePre::new(pre).into_anyhow().with_context(|| {
                format!("component {id:?} does not export wasi:http/handler@0.3")
            })?;
            let allowed_hosts = Arc::new(config.allowed_hosts.clone());
            let counted = HostCalls::default();
            calls.insert(id.clone(), counted.clone());
            let context = ComponentContext {
                id: id.as_str().into(),
                variables: Arc::new(config.variables.clone()),
                environment: config.environment.clone(),
                pg: PgContext::new(pools.clone(), allowed_hosts.clone()),
                outbound: outbound.clone(),
                allowed_hosts,
                log_guest_output: log,
                calls: counted,
            };
            handlers.insert(
                id.clone(),
                ProxyHandler::new(ComponentHandler { context, reuse }, ProxyPre::P3(pre)),
            );
            descriptions.insert(id.clone(), config.description.clone());
        }
        Ok(App(Arc::new(Inner {
            name: manifest.name,
            version: manifest.version,
            router,
            handlers,
            descriptions,
            calls,
            log,
        })))
    }

    /// What `component`'s instances have asked of the host so far (all zero for one that is
    /// not routed).
    pub fn host_calls(&self, component: &str) -> HostCalls {
        self.0.calls.get(component).cloned().unwrap_or_default()
    }

    /// The routes as `spin up` lists them: `(route, component, description)`.
    pub fn routes(&self) -> Vec<(RouteDisplay, String, String)> {
        self.0
            .router
            .routes()
            .map(|(route, component)| {
                let description = self
                    .0
                    .descriptions
                    .get(component)
                    .cloned()
                    .unwrap_or_default();
                (route, component.to_string(), description)
            })
            .collect()
    }

    /// Handles one request in process, as if it came from `127.0.0.1`.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>> {
        self.handle_from(req, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Handles one request from `client_addr` in process: the same path as a request served
    /// over TCP, with the response body collected once the guest has written it all.
    pub async fn handle_from(
        &self,
        req: Request<Bytes>,
        client_addr: SocketAddr,
    ) -> Result<Response<Bytes>> {
        let response = self.respond(req.map(full), client_addr).await?;
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(body) => Ok(Response::from_parts(parts, body.to_bytes())),
            Err(e) => {
                // Over TCP the connection would be cut after the head; in process the caller
                // gets Spin's answer to a failed guest.
                self.log(format_args!("response body failed: {e:?}"));
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// Routes one request and answers it, streaming both bodies: the response is returned as
    /// soon as the guest returns it, before its body is written.
    pub async fn respond(
        &self,
        mut req: Request<Body>,
        client_addr: SocketAddr,
    ) -> Result<Response<Body>> {
        strip_service_chaining_host(&mut req);
        let path = req.uri().path().to_string();
        if let Some(well_known) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            let response = match well_known {
                "health" => text(StatusCode::OK, "OK"),
                "info" => self.info(),
                _ => empty(StatusCode::NOT_FOUND),
            };
            return Ok(response.map(full));
        }
        let Some(route) = self.0.router.route(&path) else {
            return Ok(empty(StatusCode::NOT_FOUND).map(full));
        };
        let Some(handler) = self.0.handlers.get(route.component()) else {
            bail!("unknown routing destination {:?}", route.component());
        };
        if let Err(e) = prepare_request(&mut req, &route, client_addr) {
            self.log(format_args!("error processing request: {e:?}"));
            return Ok(empty(StatusCode::INTERNAL_SERVER_ERROR).map(full));
        }
        match call_guest(handler, req).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.log(format_args!(
                    "error processing request for {}: {e:?}",
                    route.component()
                ));
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR).map(full))
            }
        }
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        if self.0.log {
            eprintln!("[host] {message}");
        }
    }

    fn info(&self) -> Response<Bytes> {
        // Spin's `AppInfo`: the name, and the version when the manifest has one.
        let mut info = serde_json::json!({ "name": self.0.name });
        if !self.0.version.is_empty() {
            info["version"] = self.0.version.clone().into();
        }
        let body = serde_json::to_vec_pretty(&info).unwrap_or_default();
        let mut res = Response::new(Bytes::from(body));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }

    /// Serves HTTP/1.1 on `listener` until the future is dropped. Like Spin 4.0.2, accepted
    /// sockets keep Nagle's algorithm on.
    pub async fn serve(&self, listener: TcpListener) -> Result<()> {
        loop {
            let (stream, client_addr) = listener.accept().await.context("accept failed")?;
            let app = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { app.serve_one(req, client_addr).await }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // Connection errors (client gone, bad request line) end that connection only.
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(io, service)
                    .await;
            });
        }
    }

    /// Binds `addr` (port 0 picks a free port) and returns the bound address and the server
    /// future, so callers can report the port before serving.
    pub async fn bind(
        &self,
        addr: SocketAddr,
    ) -> Result<(
        SocketAddr,
        impl Future<Output = Result<()>> + Send + 'static,
    )> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("unable to listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let app = self.clone();
        Ok((bound, async move { app.serve(listener).await }))
    }

    async fn serve_one(
        &self,
        req: Request<hyper::body::Incoming>,
        client_addr: SocketAddr,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let req = req.map(|body| {
            body.map_err(ErrorCode::from_hyper_request_error)
                .boxed_unsync()
        });
        Ok(self.respond(req, client_addr).await.unwrap_or_else(|e| {
            self.log(format_args!("{e:?}"));
            empty(StatusCode::INTERNAL_SERVER_ERROR).map(full)
        }))
    }
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = status;
    res
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from_static(body.as_bytes()));
    *res.status_mut() = status;
    res
}

/// Spin drops a `Host` header naming a service-chaining host (`*.spin.internal`).
fn strip_service_chaining_host<B>(req: &mut Request<B>) {
    let chaining = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            host.split_once('.')
                .is_some_and(|(_, rest)| rest == "spin.internal")
        });
    if chaining {
        req.headers_mut().remove(http::header::HOST);
    }
}

/// Makes the URI absolute and adds the `spin-*` headers, as Spin's `set_req_uri` and
/// `prepare_request` do. Spin takes the authority from `Host` or the URI (they must agree); an
/// in-process request with neither is treated as addressed to `localhost`.
fn prepare_request<B>(
    req: &mut Request<B>,
    route: &crate::router::RouteMatch<'_>,
    client_addr: SocketAddr,
) -> Result<()> {
    let header_authority = req
        .headers()
        .get(http::header::HOST)
        .map(|h| -> Result<http::uri::Authority> {
            h.to_str()
                .context("'Host' header is not valid UTF-8")?
                .parse()
                .context("'Host' header contains an invalid authority")
        })
        .transpose()?;
    let mut parts = req.uri().clone().into_parts();
    let authority = match (header_authority, parts.authority.take()) {
        (Some(h), Some(u)) => {
            ensure!(
                h == u,
                "authority in 'Host' header does not match authority in URI"
            );
            h
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => http::uri::Authority::from_static("localhost"),
    };
    if !req.headers().contains_key(http::header::HOST) {
        req.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_str(authority.as_str())?,
        );
    }
    let scheme = parts.scheme.take().unwrap_or(http::uri::Scheme::HTTP);
    let path_and_query = parts
        .path_and_query
        .take()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let full_url = format!("{scheme}://{authority}{path_and_query}");
    *req.uri_mut() = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;

    // Spin rebuilds the header map from UTF-8 copies of the incoming headers plus its own.
    for value in req.headers().values() {
        value
            .to_str()
            .context("request header is not valid UTF-8")?;
    }
    for (name, value) in route.spin_headers(&full_url, client_addr) {
        if let (Ok(name), Ok(value)) = (
            name.parse::<HeaderName>(),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            req.headers_mut().append(name, value);
        }
    }
    Ok(())
}

/// Runs one request through the component's handler and returns the guest's response as soon
/// as the guest returns it, as Spin 4.0's WASI 0.3 executor does.
///
/// The instance's task lasts until the response body has been dropped (read to its end, or
/// abandoned with its connection): the guest writes the body from that instance's event loop,
/// which runs only while the instance does. Work the guest goes on with after its body (a
/// publish after the response) runs while the instance lives; wasmtime 44, which Spin 4.0.2
/// embeds, offers no way to wait for a guest task's exit, so neither Spin 4.0.2 nor this host
/// holds the instance for it once the body is done.
async fn call_guest(
    handler: &ProxyHandler<ComponentHandler>,
    req: Request<Body>,
) -> Result<Response<Body>> {
    type Outcome = Result<Response<Body>>;
    let (tx, rx) = oneshot::channel::<Outcome>();
    let req_id = handler.next_req_id();
    let single_use = handler.state().max_instance_reuse_count() == 1;
    handler.spawn(
        single_use.then_some(req_id),
        Box::new(move |store, proxy| {
            Box::pin(async move {
                let outcome: Result<(Response<Body>, oneshot::Receiver<()>)> = async {
                    let Proxy::P3(service) = proxy else {
                        bail!("only wasi:http@0.3 components are supported");
                    };
                    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(req);
                    let response = match service.handle(store, request).await? {
                        Ok(response) => response,
                        Err(code) => bail!("guest returned error code {code:?}"),
                    };
                    let response =
                        store.with(|mut store| response.into_http(&mut store, request_io))?;
                    let (done_tx, done_rx) = oneshot::channel();
                    let response = response.map(|body| {
                        HeldBody {
                            body,
                            _done: done_tx,
                        }
                        .boxed_unsync()
                    });
                    Ok((response, done_rx))
                }
                .await;
                match outcome {
                    Ok((response, body_done)) => {
                        if tx.send(Ok(response)).is_ok() {
                            // Resolves (with an error) when the body is dropped.
                            let _ = body_done.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
        }),
    );
    rx.await
        .context("the component instance failed before responding")?
}

/// A response body that tells its instance's task, by being dropped, that hyper is done with
/// it. Frames, end of stream and size hint are the guest body's own, so hyper frames the
/// response exactly as it would the guest's body.
struct HeldBody {
    body: Body,
    _done: oneshot::Sender<()>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
