//! The app's Dapr pub/sub subscriptions, as `GET /dapr/subscribe` declares them.
//!
//! Dapr's programmatic subscription schema (docs.dapr.io, "Declarative and programmatic
//! subscription methods" and "How to: Route messages to different event handlers"; the JSON
//! is read by dapr/dapr `pkg/runtime/subscription`): a JSON array of
//!
//! ```json
//! {"pubsubname": "kafka-pubsub", "topic": "tasks", "routes": {"rules": [{"match": "event.type ==
//! \"task.completed\"", "path": "/api/events/tasks"}], "default": "/api/events/tasks"},
//! "deadLetterTopic": "tasks-dlq", "metadata": {}}
//! ```
//!
//! `deadLetterTopic` must be a top-level field: Dapr does not read it from `metadata`, which is
//! where the old app put it, so nothing ever reached its dead-letter topic (Dapr reads
//! `deadLetterTopic` at the top level only). `match` is a CEL expression over the CloudEvent; rules
//! are tried in order and `default` takes the rest.

use serde::Serialize;
use std::collections::BTreeMap;

/// Where the intake component receives deliveries (spin.toml routes it).
pub const TASKS_ROUTE: &str = "/api/events/tasks";
pub const REMINDERS_ROUTE: &str = "/api/events/reminders";

/// Names and paths the subscriptions are built from. The names come from Spin variables
/// (`pubsub_name`, `topic_tasks`, `topic_reminders`, `topic_dead_letter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub pubsub: String,
    pub tasks_topic: String,
    pub reminders_topic: String,
    /// Where Dapr forwards events the app answered `DROP` or that exhausted their retries.
    pub dead_letter_topic: String,
    /// The path of `task.completed`, the one task event that causes work.
    pub completed_path: String,
    /// The path of every other task event.
    pub tasks_path: String,
    pub reminders_path: String,
}

impl SubscriptionConfig {
    /// The configuration with this app's routes.
    pub fn new(
        pubsub: impl Into<String>,
        tasks_topic: impl Into<String>,
        reminders_topic: impl Into<String>,
        dead_letter_topic: impl Into<String>,
    ) -> Self {
        Self {
            pubsub: pubsub.into(),
            tasks_topic: tasks_topic.into(),
            reminders_topic: reminders_topic.into(),
            dead_letter_topic: dead_letter_topic.into(),
            completed_path: TASKS_ROUTE.to_owned(),
            tasks_path: TASKS_ROUTE.to_owned(),
            reminders_path: REMINDERS_ROUTE.to_owned(),
        }
    }
}

/// One entry of the `/dapr/subscribe` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    pub routes: Routes,
    #[serde(rename = "deadLetterTopic")]
    pub dead_letter_topic: String,
    /// Component-specific subscription metadata; nothing of the app's belongs here.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routes {
    pub rules: Vec<Rule>,
    pub default: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// A CEL expression over the CloudEvent.
    #[serde(rename = "match")]
    pub matches: String,
    pub path: String,
}

/// The subscriptions: topic `tasks` with `task.completed` routed by a rule, topic `reminders`,
/// both dead-lettering to the same topic.
pub fn subscriptions(config: &SubscriptionConfig) -> Vec<Subscription> {
    let subscription = |topic: &str, rules: Vec<Rule>, default: &str| Subscription {
        pubsubname: config.pubsub.clone(),
        topic: topic.to_owned(),
        routes: Routes {
            rules,
            default: default.to_owned(),
        },
        dead_letter_topic: config.dead_letter_topic.clone(),
        metadata: BTreeMap::new(),
    };
    vec![
        subscription(
            &config.tasks_topic,
            vec![Rule {
                matches: type_is(crate::events::TASK_COMPLETED),
                path: config.completed_path.clone(),
            }],
            &config.tasks_path,
        ),
        subscription(&config.reminders_topic, Vec::new(), &config.reminders_path),
    ]
}

/// The `/dapr/subscribe` response body.
pub fn body(config: &SubscriptionConfig) -> serde_json::Value {
    serde_json::to_value(subscriptions(config)).unwrap_or_else(|_| serde_json::json!([]))
}

/// `event.type == "<kind>"`, with the type quoted as a CEL string literal.
fn type_is(kind: &str) -> String {
    let quoted = serde_json::to_string(kind).unwrap_or_default();
    format!("event.type == {quoted}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn config() -> SubscriptionConfig {
        SubscriptionConfig::new("kafka-pubsub", "tasks", "reminders", "tasks-dlq")
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_body_is_an_array_with_one_entry_per_topic() {
        let body = body(&config());
        let entries = body.as_array().expect("an array");
        let topics: Vec<&str> = entries
            .iter()
            .map(|e| e["topic"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(topics, ["tasks", "reminders"]);
    }

    #[test]
    fn every_entry_has_exactly_the_documented_fields() {
        for entry in body(&config()).as_array().expect("an array") {
            assert_eq!(
                keys(entry),
                [
                    "deadLetterTopic",
                    "metadata",
                    "pubsubname",
                    "routes",
                    "topic"
                ],
                "{entry}"
            );
            assert_eq!(entry["pubsubname"], "kafka-pubsub");
            assert!(entry.get("route").is_none(), "routes replaces route");
            assert_eq!(keys(&entry["routes"]), ["default", "rules"]);
            assert!(entry["routes"]["rules"].is_array());
            assert!(entry["routes"]["default"].is_string());
        }
    }

    #[test]
    fn dead_letter_topic_is_top_level_and_not_in_metadata() {
        for entry in body(&config()).as_array().expect("an array") {
            assert_eq!(entry["deadLetterTopic"], "tasks-dlq");
            assert_eq!(
                entry["metadata"],
                json!({}),
                "metadata holds no deadLetterTopic"
            );
            assert!(
                entry.get("deadlettertopic").is_none(),
                "the key is camelCase"
            );
        }
    }

    #[test]
    fn completed_tasks_are_matched_by_a_cel_rule() {
        let body = body(&config());
        let tasks = &body[0];
        assert_eq!(
            tasks["routes"],
            json!({
                "rules": [{"match": "event.type == \"task.completed\"", "path": "/api/events/tasks"}],
                "default": "/api/events/tasks",
            })
        );
        assert_eq!(keys(&tasks["routes"]["rules"][0]), ["match", "path"]);
    }

    #[test]
    fn reminders_go_to_their_own_route() {
        let body = body(&config());
        let reminders = &body[1];
        assert_eq!(reminders["topic"], "reminders");
        assert_eq!(
            reminders["routes"],
            json!({"rules": [], "default": "/api/events/reminders"})
        );
        assert_eq!(reminders["deadLetterTopic"], "tasks-dlq");
    }

    #[test]
    fn names_come_from_the_configuration() {
        let config = SubscriptionConfig::new("ps", "t", "r", "dlq");
        let body = body(&config);
        assert_eq!(body[0]["pubsubname"], "ps");
        assert_eq!(body[0]["topic"], "t");
        assert_eq!(body[1]["topic"], "r");
        assert_eq!(body[1]["deadLetterTopic"], "dlq");
    }
}
