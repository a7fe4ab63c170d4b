//! The wasmtime side: one engine per process, compiled components cached by path, one linker
//! with everything Spin 4 offers the app, and the per-store state (`HostState`).
//!
//! Imports linked: WASI 0.2 (what Rust's std on wasm32-wasip2 calls) and WASI 0.3, `wasi:http`
//! 0.2 and 0.3 with outbound requests limited to `allowed_outbound_hosts`,
//! `spin:postgres@4.2.0` and `spin:variables@3.0.0`. Like Spin, a guest gets no environment
//! variables beyond the manifest's `environment`, no preopened files and no raw sockets.

use crate::allowed_hosts::{AllowedHosts, OutboundUrl};
use crate::bindings::spin::{postgres::postgres, variables::variables};
use crate::calls::HostCalls;
use crate::outbound::OutboundClient;
use crate::postgres::PgContext;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode as P2ErrorCode;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// The process-wide engine: component-model async on, as Spin 4 runs P3 components, and
/// wasmtime's on-disk compilation cache so repeated runs skip Cranelift.
pub fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    // `TODO_HOST_PERFMAP=1` writes /tmp/perf-<pid>.map so that `perf report` names guest
    // functions (used to profile the benchmarks, see BENCHMARKS.md).
    if std::env::var_os("TODO_HOST_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    // A cache that cannot be set up (no home directory, read-only disk) only costs time.
    if let Ok(cache) = wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
        config.cache(Some(cache));
    }
    let engine = Engine::new(&config)
        .into_anyhow()
        .context("failed to create the wasmtime engine")?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// Compiles `path` once per process (recompiling if the file changed since).
pub fn component(path: &Path) -> Result<Component> {
    type Key = (PathBuf, Option<SystemTime>, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Component>>> = OnceLock::new();

    let canonical = path
        .canonicalize()
        .with_context(|| format!("component source {} not found", path.display()))?;
    let meta = std::fs::metadata(&canonical)
        .with_context(|| format!("failed to stat {}", canonical.display()))?;
    let key = (canonical, meta.modified().ok(), meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = lock(cache)?.get(&key) {
        return Ok(found.clone());
    }
    // Compiled outside the lock: other components may compile in parallel.
    let compiled = Component::from_file(engine()?, &key.0)
        .into_anyhow()
        .with_context(|| format!("failed to compile {}", key.0.display()))?;
    lock(cache)?.insert(key, compiled.clone());
    Ok(compiled)
}

/// Turns a wasmtime error into an `anyhow` one so `anyhow::Context` applies.
pub(crate) trait IntoAnyhow<T> {
    fn into_anyhow(self) -> Result<T>;
}

impl<T> IntoAnyhow<T> for wasmtime::Result<T> {
    fn into_anyhow(self) -> Result<T> {
        self.map_err(anyhow::Error::from)
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| anyhow::anyhow!("component cache lock poisoned"))
}

/// The linker every component is instantiated with.
pub fn linker() -> Result<&'static Linker<HostState>> {
    static LINKER: OnceLock<Linker<HostState>> = OnceLock::new();
    if let Some(linker) = LINKER.get() {
        return Ok(linker);
    }
    let mut linker = Linker::new(engine()?);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .into_anyhow()
        .context("failed to link `wasi:cli@0.2.x`")?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)
        .into_anyhow()
        .context("failed to link `wasi:cli@0.3.x`")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .into_anyhow()
        .context("failed to link `wasi:http@0.2.x`")?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)
        .into_anyhow()
        .context("failed to link `wasi:http@0.3.x`")?;
    postgres::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
        .into_anyhow()
        .context("failed to link `spin:postgres@4.2.0`")?;
    variables::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
        .into_anyhow()
        .context("failed to link `spin:variables@3.0.0`")?;
    Ok(LINKER.get_or_init(|| linker))
}

/// What one component instance may do, shared by all its stores.
pub struct ComponentContext {
    /// The component id, used in messages and in log prefixes.
    pub id: Arc<str>,
    /// Resolved `[component.x.variables]`.
    pub variables: Arc<HashMap<String, String>>,
    /// `environment` from the manifest.
    pub environment: Vec<(String, String)>,
    /// Resolved `allowed_outbound_hosts`.
    pub allowed_hosts: Arc<AllowedHosts>,
    /// The app's Postgres pools.
    pub pg: PgContext,
    /// The app's outbound HTTP client (one connection pool for all its components).
    pub outbound: OutboundClient,
    /// Whether guest stdout/stderr and refused outbound requests are printed.
    pub log_guest_output: bool,
    /// What the component's instances asked of the host, counted.
    pub calls: HostCalls,
}

impl ComponentContext {
    /// A fresh store state, as Spin prepares one per instance.
    pub fn new_state(&self) -> HostState {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&self.environment)
            .stdout(GuestOutput::new(&self.id, self.log_guest_output))
            .stderr(GuestOutput::new(&self.id, self.log_guest_output));
        HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp {
                allowed_hosts: self.allowed_hosts.clone(),
                client: self.outbound.clone(),
                log: self.log_guest_output,
            },
            pg: self.pg.clone(),
            variables: self.variables.clone(),
            component_id: self.id.clone(),
            calls: self.calls.clone(),
        }
    }
}

/// The data of one store (one component instance, possibly serving many requests).
pub struct HostState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    pub(crate) pg: PgContext,
    pub(crate) variables: Arc<HashMap<String, String>>,
    pub(crate) component_id: Arc<str>,
    pub(crate) calls: HostCalls,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::p3::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::p3::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p3::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl wasmtime_wasi_http::p2::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::p2::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::p2::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Outbound HTTP: refused with `HTTP-request-denied` unless `allowed_outbound_hosts` admits the
/// request's `scheme://host:port`, as Spin's outbound-http factor does; otherwise WASI 0.3
/// requests over `http` go through the app's pooled client (`outbound.rs`), as on Spin 4.0.
/// `https` requests and WASI 0.2 ones (which this app's components do not make) are sent by
/// wasmtime's default client on a fresh connection.
struct OutboundHttp {
    allowed_hosts: Arc<AllowedHosts>,
    client: OutboundClient,
    /// Print refusals, as Spin warns about them on its terminal.
    log: bool,
}

impl OutboundHttp {
    fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        OutboundUrl::parse(&uri.to_string(), scheme).is_ok_and(|url| {
            let allowed = self.allowed_hosts.allows(&url);
            if !allowed && self.log {
                eprintln!(
                    "[host] outbound request to {} refused: not in allowed_outbound_hosts",
                    url.describe()
                );
            }
            allowed
        })
    }
}

type P3Response = http::Response<UnsyncBoxBody<Bytes, ErrorCode>>;
type P3Io = Box<dyn Future<Output = Result<(), ErrorCode>> + Send>;

impl wasmtime_wasi_http::p3::WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
        options: Option<wasmtime_wasi_http::p3::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<
        dyn Future<Output = Result<(P3Response, P3Io), wasmtime_wasi::TrappableError<ErrorCode>>>
            + Send,
    > {
        // Spin ignores the guest-side request body result too.
        drop(fut);
        let allowed = self.allows(request.uri());
        let client = self.client.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            if !allowed {
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                let (response, io) =
                    wasmtime_wasi_http::p3::default_send_request(request, options).await?;
                return Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as P3Io));
            }
            let response = client.send(request, options).await?;
            // As in Spin, connection errors reach the guest through the response body.
            Ok((response, Box::new(async { Ok(()) }) as P3Io))
        })
    }
}

impl wasmtime_wasi_http::p2::WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        config: wasmtime_wasi_http::p2::types::OutgoingRequestConfig,
    ) -> wasmtime_wasi_http::p2::HttpResult<wasmtime_wasi_http::p2::types::HostFutureIncomingResponse>
    {
        if !self.allows(request.uri()) {
            return Err(P2ErrorCode::HttpRequestDenied.into());
        }
        Ok(wasmtime_wasi_http::p2::default_send_request(
            request, config,
        ))
    }
}

/// Guest stdout/stderr: printed to the host's stderr line by line with a `[guest <id>]` prefix
/// when enabled, dropped otherwise.
#[derive(Clone)]
struct GuestOutput {
    prefix: Arc<str>,
    enabled: bool,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    fn new(component: &str, enabled: bool) -> Self {
        Self {
            prefix: format!("[guest {component}] ").into(),
            enabled,
            partial: Arc::default(),
        }
    }

    fn write(&self, bytes: &[u8]) {
        if !self.enabled {
            return;
        }
        let Ok(mut partial) = self.partial.lock() else {
            return;
        };
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(self.prefix.as_bytes());
            let _ = err.write_all(&line);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
