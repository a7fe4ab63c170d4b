//! How the double calls the app: [`AppClient`], implemented by closures (an app in the same
//! process, or a fake) and by [`HttpApp`], an app listening on a real HTTP port such as
//! `spin up`'s.

use std::future::Future;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::test_support::{Calls, event, fake_app, subscriptions_json};
    use crate::dapr::{
        API_TOKEN_HEADER, AppAnswer, CLOUD_EVENTS_JSON, DaprDouble, DeliveryOutcome, Options, bind,
        lock,
    };
    use http::Method;
    use http::header::CONTENT_TYPE;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::Value;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::task::{JoinHandle, JoinSet};

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
}
