//! The HTTP API the app calls on the sidecar (Dapr's pub/sub API reference): `POST
//! /v1.0/publish/{pubsub}/{topic}`, the bulk publish API, `GET /v1.0/healthz[/outbound]`, the
//! `dapr-api-token` check, and Dapr's error answers (dapr/dapr `pkg/api/http/http.go`,
//! `middlewares.go`, `pkg/api/errors/pubsub.go`, `pkg/messages/errorcodes`). The faults
//! [`Mode::Fail500`] and [`Fault`] take effect here.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{event_bytes, parse_body, query_metadata, raw_payload};
use super::{API_TOKEN_HEADER, Fault, Message, Mode, Shared, Via};

pub(super) type Reply = Response<Full<Bytes>>;
/// An early answer, for `?` in handlers (boxed: a response is large).
pub(super) type Rejected = Box<Reply>;
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
pub(super) const PUBSUB_METADATA: DaprError = (
    StatusCode::BAD_REQUEST,
    "ERR_PUBSUB_REQUEST_METADATA",
    "DAPR_PUBSUB_METADATA_DESERIALIZATION",
);
const PUBSUB_EVENTS: DaprError = (
    StatusCode::BAD_REQUEST,
    "ERR_PUBSUB_EVENTS_SER",
    "DAPR_PUBSUB_UNMARSHAL_EVENTS",
);
pub(super) const CLOUD_EVENT: DaprError = (
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
pub(super) fn dapr_error(
    (status, code, reason): DaprError,
    message: impl Into<String>,
) -> Rejected {
    let detail = json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "dapr.io",
        "metadata": {},
    });
    let body = json!({"errorCode": code, "message": message.into(), "details": [detail]});
    Box::new(json_reply(status, &body))
}

pub(super) fn reply(status: StatusCode, body: Bytes) -> Reply {
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

    pub(super) fn route(&self, parts: &Parts, body: &Bytes) -> Answer {
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
}

fn publish_failed(pubsub: &str, topic: &str) -> Rejected {
    let message = format!(
        "error when publishing to topic {topic} in pubsub {pubsub}: simulated publish failure"
    );
    dapr_error(PUBLISH_FAILED, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::test_support::{CE, error_code, send, task_event};
    use crate::dapr::{CLOUD_EVENTS_JSON, DaprDouble, Options};
    use std::time::Duration;

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
}
