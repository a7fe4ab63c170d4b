//! Subscription discovery: `GET /dapr/subscribe` read as Dapr reads programmatic subscriptions
//! (dapr `pkg/runtime/subscription`, `pkg/runtime/pubsub`), and the route an
//! event takes through a subscription's rules (`findMatchingRoute`).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::cel::Cel;
use super::{AppClient, DaprDouble};

/// A subscription as the app declared it in `GET /dapr/subscribe`.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    /// Routing rules in order; the default route (`routes.default` or `route`) comes last,
    /// without a match, as Dapr builds them.
    pub rules: Vec<Rule>,
    pub dead_letter_topic: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The CEL source; `None` matches every event.
    pub matches: Option<String>,
    pub path: String,
    condition: Option<Cel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub max_messages_count: Option<i32>,
    #[serde(default)]
    pub max_await_duration_ms: Option<i32>,
}

impl DaprDouble {
    /// `GET /dapr/subscribe` on the app, parsed as Dapr's programmatic subscriptions and kept for
    /// later deliveries. A 404 means no subscriptions. Subscriptions without any route are left
    /// out, as Dapr does; `deadLetterTopic` is read at the top level only (dapr
    /// `pkg/runtime/subscription`).
    pub async fn discover_subscriptions(
        &self,
        app: &impl AppClient,
    ) -> anyhow::Result<Vec<Subscription>> {
        let request = self.app_request(
            Method::GET,
            "/dapr/subscribe",
            "application/json",
            Bytes::new(),
        );
        let response = app
            .call(request)
            .await
            .context("Failed to call GET /dapr/subscribe")?;
        let subscriptions = match response.status() {
            StatusCode::OK => parse_subscriptions(response.body())?,
            StatusCode::NOT_FOUND => Vec::new(),
            status => bail!("GET /dapr/subscribe answered {status}"),
        };
        self.shared.state().subscriptions = Some(subscriptions.clone());
        Ok(subscriptions)
    }
}

fn parse_subscriptions(body: &[u8]) -> anyhow::Result<Vec<Subscription>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        pubsubname: String,
        topic: String,
        #[serde(default)]
        route: String,
        #[serde(default)]
        routes: Option<Routes>,
        #[serde(default)]
        dead_letter_topic: String,
        #[serde(default)]
        metadata: BTreeMap<String, String>,
        #[serde(default)]
        bulk_subscribe: Option<BulkSubscribe>,
    }
    #[derive(Deserialize)]
    struct Routes {
        #[serde(default)]
        rules: Vec<WireRule>,
        #[serde(default)]
        default: String,
    }
    #[derive(Deserialize)]
    struct WireRule {
        #[serde(default, rename = "match")]
        matches: String,
        path: String,
    }

    let wire: Vec<Wire> = serde_json::from_slice(body)
        .context("GET /dapr/subscribe did not answer Dapr's subscription JSON")?;
    let mut subscriptions = Vec::with_capacity(wire.len());
    for s in wire {
        let routes = s.routes.unwrap_or(Routes {
            rules: Vec::new(),
            default: String::new(),
        });
        let mut rules = Vec::with_capacity(routes.rules.len() + 1);
        for rule in routes.rules {
            let matches = Some(rule.matches).filter(|m| !m.trim().is_empty());
            let condition = matches
                .as_deref()
                .map(Cel::parse)
                .transpose()
                .with_context(|| format!("Invalid match on topic {}", s.topic))?;
            rules.push(Rule {
                matches,
                path: rule.path,
                condition,
            });
        }
        let fallback = if routes.default.is_empty() {
            s.route
        } else {
            routes.default
        };
        if !fallback.is_empty() {
            rules.push(Rule {
                matches: None,
                path: fallback,
                condition: None,
            });
        }
        if rules.is_empty() {
            continue;
        }
        subscriptions.push(Subscription {
            pubsubname: s.pubsubname,
            topic: s.topic,
            rules,
            dead_letter_topic: Some(s.dead_letter_topic).filter(|t| !t.is_empty()),
            metadata: s.metadata,
            bulk_subscribe: s.bulk_subscribe,
        });
    }
    Ok(subscriptions)
}

/// The path of the first rule matching `event` (dapr `findMatchingRoute`).
pub(super) fn find_route<'a>(rules: &'a [Rule], event: &Value) -> Result<Option<&'a str>, String> {
    for rule in rules {
        match &rule.condition {
            None => return Ok(Some(&rule.path)),
            Some(condition) => {
                if condition.eval(event)? {
                    return Ok(Some(&rule.path));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::lock;
    use crate::dapr::test_support::{fake_app, subscriptions_json};

    #[tokio::test]
    async fn discovery_reads_dapr_programmatic_subscriptions() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[("/dapr/subscribe", 200, subscriptions_json())]);
        let subscriptions = dapr.discover_subscriptions(&app).await?;
        assert_eq!(
            subscriptions.len(),
            3,
            "a subscription without a route is dropped"
        );
        assert_eq!(
            subscriptions[2].rules[0].matches, None,
            "a rule without match takes all"
        );
        let tasks = &subscriptions[0];
        assert_eq!(tasks.dead_letter_topic.as_deref(), Some("tasks-dlq"));
        assert_eq!(
            tasks
                .rules
                .iter()
                .map(|r| r.path.as_str())
                .collect::<Vec<_>>(),
            ["/events/completed", "/events/deleted", "/events/other"]
        );
        assert_eq!(tasks.rules[2].matches, None);
        assert_eq!(tasks.metadata["consumerGroup"], "todo-backend");
        assert_eq!(
            subscriptions[1].dead_letter_topic, None,
            "deadLetterTopic in metadata is not read"
        );
        assert_eq!(lock(&calls)[0].method(), Method::GET);

        let (_, broken) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"p","topic":"t","routes":{"rules":[{"match":"event.type.size() > 1","path":"/x"}]}}]"#,
        )]);
        assert!(dapr.discover_subscriptions(&broken).await.is_err());
        let (_, none) = fake_app(&[]);
        assert!(
            dapr.discover_subscriptions(&none).await?.is_empty(),
            "404 means no subscriptions"
        );
        Ok(())
    }
}
