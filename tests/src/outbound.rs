//! Outbound HTTP as Spin 4.0's outbound-http factor sends it (spinframework/spin
//! `crates/factor-outbound-http/src/wasi.rs`): one pooled hyper-util legacy `Client` per app,
//! HTTP/1 only, so keep-alive connections are reused across requests and instances; TCP
//! connections opened without `TCP_NODELAY`; the connect timeout applied in the connector, the
//! first-byte timeout around the response future and the between-bytes timeout on the response
//! body, each 600 s unless the guest's request options say otherwise; the guest's request body
//! streamed as the guest writes it; errors reported with Spin's codes.
//!
//! Reusing a connection matters for timing: with Nagle's algorithm on, a request whose head and
//! body leave in separate writes can wait for the server's delayed ACK on a kept-alive
//! connection, which a fresh connection (quick-ACK at its start) hides.
//!
//! The `allowed_outbound_hosts` check happens before a request gets here (`host.rs`).

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::p3::RequestOptions;
use wasmtime_wasi_http::p3::bindings::http::types::{DnsErrorPayload, ErrorCode};

/// Spin's timeout for each phase a request's options leave unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A request or response body between the guest and the client.
pub type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// The app's outbound HTTP client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<Connector, Body>,
}

impl Default for OutboundClient {
    fn default() -> Self {
        Self::new(true)
    }
}

impl OutboundClient {
    /// A client with hyper-util's default pool (idle connections kept 90 s), as Spin builds it,
    /// or, with `pooling` off (`[outbound_http] connection_pooling = false`), one that opens a
    /// connection per request and closes it after the response.
    pub fn new(pooling: bool) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        if !pooling {
            builder.pool_max_idle_per_host(0);
        }
        Self {
            client: builder.build(Connector),
        }
    }

    /// Sends `request` (an absolute `http://` URI: `https` is not pooled here, see `host.rs`)
    /// and returns the response once its head has
    /// arrived; its body is read as the guest reads it.
    pub async fn send(
        &self,
        mut request: http::Request<Body>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<Body>, ErrorCode> {
        let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
            options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
        };
        let connect_timeout = timeout(|o| o.connect_timeout);
        let first_byte_timeout = timeout(|o| o.first_byte_timeout);
        let between_bytes_timeout = timeout(|o| o.between_bytes_timeout);

        // Spin drops the guest's `Host`; the client sets it from the URI.
        request.headers_mut().remove(http::header::HOST);

        let response = CONNECT_TIMEOUT.scope(connect_timeout, self.client.request(request));
        let response = tokio::time::timeout(first_byte_timeout, response)
            .await
            .map_err(|_| ErrorCode::ConnectionReadTimeout)?
            .map_err(legacy_request_error)?;
        Ok(response.map(|body| {
            BetweenBytes {
                body: body.map_err(hyper_error).boxed_unsync(),
                sleep: None,
                timeout: between_bytes_timeout,
            }
            .boxed_unsync()
        }))
    }
}

tokio::task_local! {
    /// The connect timeout of the request being sent. The legacy client takes no per-request
    /// connector settings, so Spin passes it this way too; a pooled connection ignores it.
    static CONNECT_TIMEOUT: Duration;
}

/// Opens plain TCP connections the way Spin's connector does: resolve, connect within the
/// timeout, Nagle left on.
#[derive(Clone, Copy)]
struct Connector;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ErrorCode;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ErrorCode>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ErrorCode>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        // Read now: the connection may be driven to completion on another task.
        let connect_timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_TIMEOUT);
        Box::pin(async move {
            let host = uri.host().ok_or(ErrorCode::HttpRequestUriInvalid)?;
            let port = uri.port_u16().unwrap_or(80);
            let addrs: Vec<_> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| dns_error())?
                .collect();
            let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&*addrs))
                .await
                .map_err(|_| ErrorCode::ConnectionTimeout)?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrNotAvailable => dns_error(),
                    _ => ErrorCode::ConnectionRefused,
                })?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Spin's answer to a name that does not resolve.
fn dns_error() -> ErrorCode {
    ErrorCode::DnsError(DnsErrorPayload {
        rcode: Some("address not available".into()),
        info_code: Some(0),
    })
}

/// The connector's own code when the failure came from it, else a protocol error, as Spin maps
/// the legacy client's errors.
fn legacy_request_error(err: hyper_util::client::legacy::Error) -> ErrorCode {
    if let Some(code) = err
        .source()
        .and_then(|cause| cause.downcast_ref::<ErrorCode>())
    {
        return code.clone();
    }
    ErrorCode::HttpProtocolError
}

fn hyper_error(err: hyper::Error) -> ErrorCode {
    if let Some(code) = err
        .source()
        .and_then(|cause| cause.downcast_ref::<ErrorCode>())
    {
        return code.clone();
    }
    ErrorCode::HttpProtocolError
}

/// A response body that fails with `connection-read-timeout` when no frame arrives within the
/// between-bytes timeout, as Spin's body wrapper does.
struct BetweenBytes {
    body: Body,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
}

impl http_body::Body for BetweenBytes {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        let me = &mut *self;
        match Pin::new(&mut me.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                me.sleep = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = me.timeout;
                let sleep = me
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
