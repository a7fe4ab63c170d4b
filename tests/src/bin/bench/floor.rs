//! The floor: what the same work costs natively. The statements come from `todo-core`, built
//! exactly as the components build them, and run through tokio-postgres on one connection per
//! worker; the no-database route is answered by a bare hyper server.

use anyhow::{Result, anyhow};
use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::net::SocketAddr;
use todo_core::sql::Statement;
use todo_core::tasks::{Task, store};
use todo_test_host::native_sql::values;
pub use todo_test_host::native_sql::{count, run};
use tokio::net::TcpListener;
use tokio_postgres::Client;

/// Rows selected with `TASK_COLUMNS`, decoded as the components decode them.
pub async fn tasks(client: &Client, statement: &Statement) -> Result<Vec<Task>> {
    run(client, statement)
        .await?
        .iter()
        .map(|row| store::decode(&values(row)?).map_err(|e| anyhow!(e)))
        .collect()
}

/// A bare HTTP/1.1 server answering every request with `body` as `application/json`: the
/// floor of a route that needs no database.
pub async fn static_json_server(body: Bytes) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
