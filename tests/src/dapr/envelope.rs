//! What Dapr hands the broker for a publish (dapr `pkg/runtime/pubsub/cloudevents.go`,
//! components-contrib `pubsub/envelope.go`): the app's CloudEvent, or one built around any other
//! body, plus Dapr's own attributes; and the parts of a publish request that decide it
//! (`metadata.*` query pairs, `rawPayload`, content types, bulk entry events).

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::{Map, Value, json};

use super::sidecar_api::{CLOUD_EVENT, PUBSUB_METADATA, Rejected, dapr_error};
use super::{CLOUD_EVENTS_JSON, Shared};

/// Event type Dapr gives the envelopes it builds (`DefaultCloudEventType`).
const DAPR_EVENT_TYPE: &str = "com.dapr.event.sent";

impl Shared {
    /// The CloudEvent Dapr publishes: the app's own (`FromCloudEvent`) or one wrapped around the
    /// body (`NewCloudEventsEnvelope`), plus Dapr's `topic`, `pubsubname` and trace fields.
    pub(super) fn envelope(
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
            // rest itself: an app relying on that would break on structured CloudEvents, and a test
            // notices.
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

/// The `metadata.` query pairs, prefix removed, first value wins (dapr `getMetadataFromRequest`).
pub(super) fn query_metadata(query: Option<&str>) -> BTreeMap<String, String> {
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
pub(super) fn raw_payload(metadata: &BTreeMap<String, String>) -> Result<bool, Rejected> {
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

pub(super) fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A bulk entry's event as bytes (dapr `ConvertEventToBytes`): JSON for JSON content types,
/// otherwise the event must be a string.
pub(super) fn event_bytes(event: &Value, content_type: &str) -> Option<Vec<u8>> {
    if is_json(&media_type(content_type)) {
        return Some(event.to_string().into_bytes());
    }
    event.as_str().map(|text| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::DaprDouble;
    use crate::dapr::test_support::send;
    use http::{Method, StatusCode};

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
