//! Helpers shared by the double's unit tests.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{AppClient, CLOUD_EVENTS_JSON, DaprDouble, HttpApp, lock};

/// Sends one request to the double and returns status, headers and body.
pub(super) async fn send(
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

pub(super) fn error_code(body: &Bytes) -> String {
    let body: Value = serde_json::from_slice(body).expect("error body is JSON");
    body["errorCode"]
        .as_str()
        .expect("errorCode is a string")
        .to_owned()
}

pub(super) fn task_event(id: &str, kind: &str) -> String {
    json!({"specversion": "1.0", "id": id, "source": "/todo", "type": kind, "data": {"title": "x"}})
        .to_string()
}

pub(super) const CE: (&str, &str) = ("content-type", CLOUD_EVENTS_JSON);

/// Records the requests it gets and answers `status`/`body` by path.
pub(super) type Calls = Arc<Mutex<Vec<Request<Bytes>>>>;

pub(super) fn fake_app(
    answers: &[(&'static str, u16, &'static str)],
) -> (Calls, impl AppClient + use<>) {
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

pub(super) fn event(kind: &str) -> Value {
    json!({"specversion": "1.0", "id": "e1", "source": "/todo", "type": kind})
}

pub(super) fn subscriptions_json() -> &'static str {
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
