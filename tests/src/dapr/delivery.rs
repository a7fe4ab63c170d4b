//! The calls the sidecar makes into the app (Dapr's pub/sub API reference): event delivery with
//! Dapr's reading of the answer, retries and dead letters (dapr
//! `pkg/runtime/subscription/subscription.go`, `postman/http/http.go`), and the ticks of a
//! `bindings.cron` input binding.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::discovery::find_route;
use super::{
    API_TOKEN_HEADER, AppClient, CLOUD_EVENTS_JSON, DaprDouble, Message, Subscription, Via,
};

/// What the app answered to one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppAnswer {
    /// 2xx with `{"status":"SUCCESS"}`, an empty status, an empty or a non-JSON body.
    Success,
    /// 2xx with `{"status":"RETRY"}`.
    Retry,
    /// 2xx with `{"status":"DROP"}`.
    Drop,
    /// 2xx with any other status value (Dapr retries these).
    UnknownStatus(String),
    /// 404: Dapr logs the error and drops the message, without dead-lettering it.
    NotFound,
    /// Any other status code: retried.
    Status(u16),
    /// The app could not be reached: retried.
    Unreachable(String),
}

/// The end of a delivery, with every answer the app gave on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered {
        path: String,
        answers: Vec<AppAnswer>,
    },
    /// `DROP` (dead-lettered when the subscription has a `deadLetterTopic`) or 404 (never).
    Dropped {
        path: String,
        answers: Vec<AppAnswer>,
        dead_letter: Option<String>,
    },
    /// Every attempt asked for a retry; dead-lettered when a `deadLetterTopic` is set.
    Exhausted {
        path: String,
        answers: Vec<AppAnswer>,
        dead_letter: Option<String>,
    },
    /// No rule matched (or a match expression failed); dead-lettered when set, as Dapr does.
    NoRoute {
        dead_letter: Option<String>,
        error: Option<String>,
    },
    /// The app has no subscription for this pub/sub and topic.
    NoSubscription,
}

impl DeliveryOutcome {
    pub fn answers(&self) -> &[AppAnswer] {
        match self {
            Self::Delivered { answers, .. }
            | Self::Dropped { answers, .. }
            | Self::Exhausted { answers, .. } => answers,
            Self::NoRoute { .. } | Self::NoSubscription => &[],
        }
    }

    pub fn dead_letter(&self) -> Option<&str> {
        match self {
            Self::Dropped { dead_letter, .. }
            | Self::Exhausted { dead_letter, .. }
            | Self::NoRoute { dead_letter, .. } => dead_letter.as_deref(),
            Self::Delivered { .. } | Self::NoSubscription => None,
        }
    }
}

impl DaprDouble {
    /// Asks the app whether it takes the input binding routed to `route`, as the sidecar does
    /// at start-up for a binding whose metadata sets no `direction: input`: `OPTIONS {route}`;
    /// a 2xx or a 405 means yes (dapr `pkg/runtime/processor/binding/send.go`,
    /// `isAppSubscribedToBinding`).
    pub async fn binding_subscribed(
        &self,
        app: &impl AppClient,
        route: &str,
    ) -> anyhow::Result<bool> {
        let request = self.app_request(Method::OPTIONS, route, "application/json", Bytes::new());
        let response = app
            .call(request)
            .await
            .with_context(|| format!("Failed to call OPTIONS {route}"))?;
        let status = response.status();
        Ok(status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED)
    }

    /// One tick of a `bindings.cron` input binding routed to `route`, as the sidecar sends it
    /// (dapr `send.go`, `sendBindingEventToApp`; components-contrib `bindings/cron/cron.go`):
    /// `POST {route}` with an empty body, `Content-Type: application/json`, the app token, and
    /// the binding's read metadata as headers, `timeZone` and `readTimeUTC` (Go's time format).
    /// Returns the app's status code; the sidecar counts only 200 as handled. Ticks are not
    /// scheduled here: a test fires one when it wants it.
    pub async fn fire_cron_binding(
        &self,
        app: &impl AppClient,
        route: &str,
        now: DateTime<Utc>,
    ) -> Result<u16, String> {
        let mut request = self.app_request(Method::POST, route, "application/json", Bytes::new());
        let read_time = now.format("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string();
        for (name, value) in [("timeZone", "Local".to_owned()), ("readTimeUTC", read_time)] {
            let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        app.call(request)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e:#}"))
    }

    /// Delivers one CloudEvent to the app's subscription for `pubsub`/`topic` as the sidecar does
    /// (dapr `postman/http/http.go`): picks the route, POSTs it as
    /// `application/cloudevents+json`, retries up to `max_delivery_attempts`, and republishes
    /// dropped or exhausted events to the `deadLetterTopic`. Discovers subscriptions first when
    /// none are known yet.
    pub async fn deliver_event(
        &self,
        app: &impl AppClient,
        pubsub: &str,
        topic: &str,
        event: &Value,
    ) -> anyhow::Result<DeliveryOutcome> {
        let known = self.shared.state().subscriptions.clone();
        let subscriptions = match known {
            Some(subscriptions) => subscriptions,
            None => self.discover_subscriptions(app).await?,
        };
        let Some(subscription) = subscriptions
            .into_iter()
            .find(|s| s.pubsubname == pubsub && s.topic == topic)
        else {
            return Ok(DeliveryOutcome::NoSubscription);
        };
        if subscription
            .bulk_subscribe
            .as_ref()
            .is_some_and(|b| b.enabled)
        {
            bail!("bulkSubscribe on {topic}: bulk delivery is not modelled by the Dapr double");
        }
        Ok(self.deliver_to(app, &subscription, event).await)
    }

    async fn deliver_to(
        &self,
        app: &impl AppClient,
        subscription: &Subscription,
        event: &Value,
    ) -> DeliveryOutcome {
        let path = match find_route(&subscription.rules, event) {
            Ok(Some(path)) => path.to_owned(),
            Ok(None) => {
                return DeliveryOutcome::NoRoute {
                    dead_letter: self.dead_letter(subscription, event),
                    error: None,
                };
            }
            Err(error) => {
                return DeliveryOutcome::NoRoute {
                    dead_letter: self.dead_letter(subscription, event),
                    error: Some(error),
                };
            }
        };
        let body = Bytes::from(event.to_string());
        let mut answers = Vec::new();
        for _ in 0..self.shared.options.max_delivery_attempts.max(1) {
            let request = self.app_request(Method::POST, &path, CLOUD_EVENTS_JSON, body.clone());
            let answer = match app.call(request).await {
                Ok(response) => read_app_answer(&response),
                Err(error) => AppAnswer::Unreachable(format!("{error:#}")),
            };
            answers.push(answer.clone());
            match answer {
                AppAnswer::Success => return DeliveryOutcome::Delivered { path, answers },
                AppAnswer::Drop => {
                    let dead_letter = self.dead_letter(subscription, event);
                    return DeliveryOutcome::Dropped {
                        path,
                        answers,
                        dead_letter,
                    };
                }
                AppAnswer::NotFound => {
                    return DeliveryOutcome::Dropped {
                        path,
                        answers,
                        dead_letter: None,
                    };
                }
                AppAnswer::Retry
                | AppAnswer::UnknownStatus(_)
                | AppAnswer::Status(_)
                | AppAnswer::Unreachable(_) => {}
            }
        }
        let dead_letter = self.dead_letter(subscription, event);
        DeliveryOutcome::Exhausted {
            path,
            answers,
            dead_letter,
        }
    }

    /// Republishes the original event to the subscription's dead-letter topic, if it has one.
    fn dead_letter(&self, subscription: &Subscription, event: &Value) -> Option<String> {
        let topic = subscription.dead_letter_topic.clone()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUD_EVENTS_JSON));
        self.shared.record(Message {
            pubsub: subscription.pubsubname.clone(),
            topic: topic.clone(),
            metadata: BTreeMap::new(),
            headers,
            content_type: Some(CLOUD_EVENTS_JSON.to_owned()),
            body: event.clone(),
            envelope: event.clone(),
            via: Via::DeadLetter {
                from_topic: subscription.topic.clone(),
            },
        });
        Some(topic)
    }

    /// A request into the app, with the app token when one is configured.
    pub(super) fn app_request(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Request<Bytes> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(CONTENT_TYPE, content_type);
        if let Some(token) = &self.shared.options.app_api_token {
            request = request.header(API_TOKEN_HEADER, token);
        }
        request.body(body).expect("valid request parts")
    }
}

/// Dapr's reading of a 2xx/4xx/5xx answer to a delivery (`postman/http/http.go`).
fn read_app_answer(response: &Response<Bytes>) -> AppAnswer {
    #[derive(Deserialize)]
    struct Ack {
        #[serde(default)]
        status: String,
    }
    let status = response.status();
    if status.is_success() {
        return match serde_json::from_slice::<Ack>(response.body()) {
            // Empty and unparseable bodies skip the status check: success.
            Err(_) => AppAnswer::Success,
            Ok(ack) => match ack.status.as_str() {
                "" | "SUCCESS" => AppAnswer::Success,
                "RETRY" => AppAnswer::Retry,
                "DROP" => AppAnswer::Drop,
                other => AppAnswer::UnknownStatus(other.to_owned()),
            },
        };
    }
    if status == StatusCode::NOT_FOUND {
        return AppAnswer::NotFound;
    }
    AppAnswer::Status(status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::test_support::{event, fake_app, subscriptions_json};
    use crate::dapr::{BulkSubscribe, Options, lock};
    use serde_json::json;

    #[tokio::test]
    async fn cron_binding_ticks_are_posted_with_their_metadata_and_discovery_is_options()
    -> anyhow::Result<()> {
        let dapr = DaprDouble::start_with(Options {
            app_api_token: Some("app-token".into()),
            ..Options::default()
        })
        .await;
        let (calls, app) = fake_app(&[("/sweep", 200, "{}"), ("/refused", 500, "")]);
        assert!(dapr.binding_subscribed(&app, "/sweep").await?);
        assert!(!dapr.binding_subscribed(&app, "/absent").await?, "404");
        let now = DateTime::parse_from_rfc3339("2026-05-01T08:30:00.25Z")?.to_utc();
        assert_eq!(dapr.fire_cron_binding(&app, "/sweep", now).await, Ok(200));
        assert_eq!(dapr.fire_cron_binding(&app, "/refused", now).await, Ok(500));

        let calls = lock(&calls);
        assert_eq!(calls[0].method(), Method::OPTIONS);
        let tick = &calls[2];
        assert_eq!(tick.method(), Method::POST);
        assert_eq!(tick.uri().path(), "/sweep");
        assert!(tick.body().is_empty());
        assert_eq!(tick.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(tick.headers()[API_TOKEN_HEADER], "app-token");
        assert_eq!(tick.headers()["timeZone"], "Local");
        assert_eq!(
            tick.headers()["readTimeUTC"],
            "2026-05-01 08:30:00.250 +0000 UTC"
        );
        Ok(())
    }

    #[tokio::test]
    async fn delivery_interprets_the_app_answer_as_dapr_does() -> anyhow::Result<()> {
        use AppAnswer::*;
        let cases: [(u16, &'static str, &[AppAnswer], &str); 9] = [
            (200, r#"{"status":"SUCCESS"}"#, &[Success], "SUCCESS"),
            (200, "", &[Success], "empty body"),
            (204, "not json", &[Success], "unparseable 2xx body"),
            (200, "{}", &[Success], "no status"),
            (200, r#"{"status":"DROP"}"#, &[Drop], "DROP"),
            (404, "", &[NotFound], "404"),
            (
                200,
                r#"{"status":"RETRY"}"#,
                &[Retry, Retry, Retry],
                "RETRY",
            ),
            (
                200,
                r#"{"status":"ok"}"#,
                &[
                    UnknownStatus("ok".into()),
                    UnknownStatus("ok".into()),
                    UnknownStatus("ok".into()),
                ],
                "unknown status",
            ),
            (500, "", &[Status(500), Status(500), Status(500)], "500"),
        ];
        for (status, body, expected, case) in cases {
            let dapr = DaprDouble::start().await;
            let (calls, app) = fake_app(&[
                ("/dapr/subscribe", 200, subscriptions_json()),
                ("/events/completed", status, body),
            ]);
            let outcome = dapr
                .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.completed"))
                .await?;
            assert_eq!(outcome.answers(), expected, "{case}");
            let dead_lettered = dapr.messages_on("tasks-dlq");
            let should_dead_letter = matches!(
                expected.last(),
                Some(Drop | Retry | UnknownStatus(_) | Status(_))
            );
            assert_eq!(
                outcome.dead_letter().is_some(),
                should_dead_letter,
                "{case}"
            );
            assert_eq!(
                dead_lettered.len(),
                usize::from(should_dead_letter),
                "{case}"
            );
            let calls = lock(&calls);
            assert_eq!(
                calls[1].headers()[CONTENT_TYPE],
                CLOUD_EVENTS_JSON,
                "{case}"
            );
            assert_eq!(
                serde_json::from_slice::<Value>(calls[1].body())?,
                event("task.completed"),
                "{case}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn delivery_routes_by_the_match_rules() -> anyhow::Result<()> {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[
            ("/dapr/subscribe", 200, subscriptions_json()),
            ("/events/completed", 200, ""),
            ("/events/deleted", 200, ""),
            ("/events/other", 200, ""),
            ("/events/reminders", 200, ""),
        ]);
        for (topic, kind, path) in [
            ("tasks", "task.completed", "/events/completed"),
            ("tasks", "task.deleted", "/events/deleted"),
            ("tasks", "task.created", "/events/other"),
            ("reminders", "reminder.due", "/events/reminders"),
        ] {
            let outcome = dapr
                .deliver_event(&app, "kafka-pubsub", topic, &event(kind))
                .await?;
            assert_eq!(
                outcome,
                DeliveryOutcome::Delivered {
                    path: path.into(),
                    answers: vec![AppAnswer::Success]
                },
                "{kind}"
            );
        }
        let outcome = dapr
            .deliver_event(&app, "kafka-pubsub", "unknown", &event("x"))
            .await?;
        assert_eq!(outcome, DeliveryOutcome::NoSubscription);
        assert_eq!(
            lock(&calls).len(),
            5,
            "one discovery, then one call per event"
        );
        Ok(())
    }

    #[tokio::test]
    async fn events_no_rule_routes_are_dead_lettered_as_dapr_does() -> anyhow::Result<()> {
        // Arrange
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"kafka-pubsub","topic":"tasks","deadLetterTopic":"tasks-dlq",
                "routes":{"rules":[{"match":"event.type == \"task.completed\"","path":"/events/completed"}]}}]"#,
        )]);
        let untyped = json!({"specversion": "1.0", "id": "e2", "source": "/todo"});
        // Act
        let unmatched = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.created"))
            .await?;
        let unevaluable = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &untyped)
            .await?;
        // Assert
        assert_eq!(
            unmatched,
            DeliveryOutcome::NoRoute {
                dead_letter: Some("tasks-dlq".into()),
                error: None
            }
        );
        assert_eq!(
            unevaluable,
            DeliveryOutcome::NoRoute {
                dead_letter: Some("tasks-dlq".into()),
                error: Some("no such key: type".into())
            }
        );
        let dead = dapr.messages_on("tasks-dlq");
        let ids: Vec<_> = dead.iter().filter_map(Message::event_id).collect();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(
            dead[0].via,
            Via::DeadLetter {
                from_topic: "tasks".into()
            }
        );
        assert_eq!(lock(&calls).len(), 1, "only discovery reached the app");
        Ok(())
    }

    #[tokio::test]
    async fn bulk_subscriptions_are_refused_rather_than_delivered_one_by_one() -> anyhow::Result<()>
    {
        let dapr = DaprDouble::start().await;
        let (calls, app) = fake_app(&[(
            "/dapr/subscribe",
            200,
            r#"[{"pubsubname":"kafka-pubsub","topic":"tasks","route":"/events",
                "bulkSubscribe":{"enabled":true,"maxMessagesCount":10}}]"#,
        )]);
        let subscriptions = dapr.discover_subscriptions(&app).await?;
        assert_eq!(
            subscriptions[0].bulk_subscribe,
            Some(BulkSubscribe {
                enabled: true,
                max_messages_count: Some(10),
                max_await_duration_ms: None
            })
        );
        let error = dapr
            .deliver_event(&app, "kafka-pubsub", "tasks", &event("task.created"))
            .await
            .expect_err("bulk delivery is not modelled");
        assert!(error.to_string().contains("bulkSubscribe"), "{error}");
        assert_eq!(lock(&calls).len(), 1, "nothing was delivered");
        Ok(())
    }
}
