//! The settings of the components: one typed struct per concern, each read from the Spin
//! variables its component declares in spin.toml. This is the only Rust that names a variable;
//! the test below keeps the names in step with spin.toml.
//!
//! A struct is read when its concern comes up, not all at once per request: a request that
//! never reaches the database or the sidecar does not need, and so cannot fail on, their
//! variables. What the values mean is decided where they are used (`todo_core::auth`,
//! `todo_core::sidecar`, `todo_core::outbox`); here they are only read, in the order in which
//! the first unreadable one is reported.

use crate::vars;
use std::time::Duration;
use todo_core::auth::{AuthVars, ConfigError};
use todo_core::error::ApiError;
use todo_core::events::{EventContext, Topics};
use todo_core::outbox;
use todo_core::sidecar::SidecarVars;
use todo_core::subscriptions::SubscriptionConfig;

// Names read by more than one struct.
const EVENT_SOURCE: &str = "event_source";
const TOPIC_TASKS: &str = "topic_tasks";
const TOPIC_REMINDERS: &str = "topic_reminders";
const PUBSUB_NAME: &str = "pubsub_name";
const JWT_JWKS_CACHE_SECONDS: &str = "jwt_jwks_cache_seconds";

/// The PostgreSQL connection.
pub struct Database {
    /// `db_url`, assembled per component in spin.toml; it holds the password.
    pub url: String,
}

impl Database {
    const VARIABLES: [&str; 1] = ["db_url"];

    pub async fn load() -> Result<Self, ApiError> {
        let [url] = vars::all(Self::VARIABLES).await?;
        Ok(Self { url })
    }
}

/// What the events of task writes carry: their `source` and the topics of task and reminder
/// events.
#[derive(Debug)]
pub struct Events {
    pub source: String,
    pub topic_tasks: String,
    pub topic_reminders: String,
}

impl Events {
    const VARIABLES: [&str; 3] = [EVENT_SOURCE, TOPIC_TASKS, TOPIC_REMINDERS];

    pub async fn load() -> Result<Self, ApiError> {
        let [source, topic_tasks, topic_reminders] = vars::all(Self::VARIABLES).await?;
        Ok(Self {
            source,
            topic_tasks,
            topic_reminders,
        })
    }

    /// The event contexts of a change caused by a request carrying `traceparent`.
    pub fn topics(self, traceparent: Option<String>) -> Topics {
        Topics::new(
            self.source,
            self.topic_tasks,
            self.topic_reminders,
            traceparent,
        )
    }
}

/// What the reminder sweep's events carry; the sweep emits reminder events only.
#[derive(Debug)]
pub struct ReminderEvents {
    pub source: String,
    pub topic: String,
}

impl ReminderEvents {
    const VARIABLES: [&str; 2] = [EVENT_SOURCE, TOPIC_REMINDERS];

    pub async fn load() -> Result<Self, ApiError> {
        let [source, topic] = vars::all(Self::VARIABLES).await?;
        Ok(Self { source, topic })
    }

    pub fn context(self, traceparent: Option<String>) -> EventContext {
        EventContext {
            source: self.source,
            topic: self.topic,
            traceparent,
        }
    }
}

/// What `/dapr/subscribe` lists: the pub/sub component and the topics the app subscribes to.
#[derive(Debug)]
pub struct Subscriptions {
    pub pubsub: String,
    pub topic_tasks: String,
    pub topic_reminders: String,
    pub topic_dead_letter: String,
}

impl Subscriptions {
    const VARIABLES: [&str; 4] = [
        PUBSUB_NAME,
        TOPIC_TASKS,
        TOPIC_REMINDERS,
        "topic_dead_letter",
    ];

    pub async fn load() -> Result<Self, ApiError> {
        let [pubsub, topic_tasks, topic_reminders, topic_dead_letter] =
            vars::all(Self::VARIABLES).await?;
        Ok(Self {
            pubsub,
            topic_tasks,
            topic_reminders,
            topic_dead_letter,
        })
    }

    pub fn config(self) -> SubscriptionConfig {
        SubscriptionConfig::new(
            self.pubsub,
            self.topic_tasks,
            self.topic_reminders,
            self.topic_dead_letter,
        )
    }
}

/// Where events are published: the Dapr sidecar's HTTP API and its pub/sub component.
pub struct Sidecar {
    pub dapr_url: String,
    /// `dapr_api_token`, sent to the sidecar when not empty.
    pub api_token: String,
    pub pubsub: String,
}

impl Sidecar {
    const VARIABLES: [&str; 3] = ["dapr_url", "dapr_api_token", PUBSUB_NAME];

    pub async fn load() -> Result<Self, ApiError> {
        let [dapr_url, api_token, pubsub] = vars::all(Self::VARIABLES).await?;
        Ok(Self {
            dapr_url,
            api_token,
            pubsub,
        })
    }
}

/// Who publishes, which sets how long one publish may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPath {
    /// A request, before it answers: short, it leaves the rest to the relay.
    Requests,
    /// The relay and the reminder sweep, which have the time.
    Relay,
}

impl PublishPath {
    fn timeout_variable(self) -> &'static str {
        match self {
            Self::Requests => "publish_timeout_ms",
            Self::Relay => "relay_publish_timeout_ms",
        }
    }
}

/// Everything a publisher needs: the sidecar, the limit of one publish, and when an event the
/// sidecar keeps refusing is parked.
pub struct Publishing {
    pub sidecar: Sidecar,
    pub timeout: Duration,
    pub max_attempts: i32,
}

impl Publishing {
    const MAX_ATTEMPTS: &str = "outbox_max_attempts";

    /// Fails on a timeout that, three times over, would not fit the publishing lease.
    pub async fn load(path: PublishPath) -> Result<Self, ApiError> {
        let variable = path.timeout_variable();
        let timeout = Duration::from_millis(vars::number(variable).await?);
        if !outbox::timeout_fits_lease(timeout) {
            return Err(ApiError::internal(format!(
                "variable {variable} = {} ms, three times over, does not fit the {} s publishing lease",
                timeout.as_millis(),
                outbox::LEASE.as_secs()
            )));
        }
        let sidecar = Sidecar::load().await?;
        let max_attempts = vars::number(Self::MAX_ATTEMPTS).await?;
        Ok(Self {
            sidecar,
            timeout,
            max_attempts,
        })
    }
}

/// How long the relay keeps delivered outbox rows.
#[derive(Debug)]
pub struct Retention {
    pub outbox_hours: i32,
}

impl Retention {
    const VARIABLES: [&str; 1] = ["outbox_retention_hours"];

    pub async fn load() -> Result<Self, ApiError> {
        let [hours] = Self::VARIABLES;
        Ok(Self {
            outbox_hours: vars::number(hours).await?,
        })
    }
}

/// Who may call the routes only the sidecar calls, as read; `todo_core::sidecar` decides what
/// the values mean.
pub struct SidecarAdmission {
    pub app_api_token: String,
    pub allow_open: String,
    pub loopback_only: String,
}

impl SidecarAdmission {
    const VARIABLES: [&str; 3] = [
        "app_api_token",
        "allow_open_sidecar_routes",
        "sidecar_loopback_only",
    ];

    pub async fn load() -> Result<Self, ApiError> {
        let [app_api_token, allow_open, loopback_only] = vars::all(Self::VARIABLES).await?;
        Ok(Self {
            app_api_token,
            allow_open,
            loopback_only,
        })
    }

    pub fn vars(&self) -> SidecarVars<'_> {
        SidecarVars {
            app_api_token: &self.app_api_token,
            allow_open_sidecar_routes: &self.allow_open,
            sidecar_loopback_only: &self.loopback_only,
        }
    }
}

/// The bearer-token checks of the task API, as read; `todo_core::auth` decides what the values
/// mean.
pub struct Auth {
    /// The values of `AuthVars::NAMES`, in that order.
    values: [String; AuthVars::NAMES.len()],
    cache_seconds: String,
}

impl Auth {
    pub async fn load() -> Result<Self, ApiError> {
        Ok(Self {
            values: vars::all(AuthVars::NAMES).await?,
            cache_seconds: vars::get(JWT_JWKS_CACHE_SECONDS).await?,
        })
    }

    pub fn vars(&self) -> AuthVars<'_> {
        AuthVars::from_values(&self.values)
    }

    /// How long an instance keeps a fetched JWKS: `jwt_jwks_cache_seconds`, whole seconds.
    pub fn cache_ttl(&self) -> Result<Duration, ConfigError> {
        let raw = &self.cache_seconds;
        raw.trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError {
                variable: JWT_JWKS_CACHE_SECONDS,
                reason: format!("{raw:?} is not a number of seconds"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MANIFEST: &str = include_str!("../../../spin.toml");

    impl Publishing {
        fn variables(path: PublishPath) -> Vec<&'static str> {
            [
                &[path.timeout_variable()][..],
                &Sidecar::VARIABLES,
                &[Self::MAX_ATTEMPTS],
            ]
            .concat()
        }
    }

    impl Auth {
        fn variables() -> Vec<&'static str> {
            [&AuthVars::NAMES[..], &[JWT_JWKS_CACHE_SECONDS]].concat()
        }
    }

    /// The settings each component loads, by its name in spin.toml.
    fn reads() -> Vec<(&'static str, Vec<&'static str>)> {
        let requests = Publishing::variables(PublishPath::Requests);
        let relay = Publishing::variables(PublishPath::Relay);
        vec![
            (
                "tasks-api",
                [
                    &Auth::variables()[..],
                    &Database::VARIABLES,
                    &Events::VARIABLES,
                    &requests,
                ]
                .concat(),
            ),
            (
                "event-intake",
                [
                    &SidecarAdmission::VARIABLES[..],
                    &Events::VARIABLES,
                    &Database::VARIABLES,
                    &requests,
                ]
                .concat(),
            ),
            (
                "subscriptions",
                [&SidecarAdmission::VARIABLES[..], &Subscriptions::VARIABLES].concat(),
            ),
            (
                "outbox-relay",
                [
                    &SidecarAdmission::VARIABLES[..],
                    &Database::VARIABLES,
                    &relay,
                    &Retention::VARIABLES,
                ]
                .concat(),
            ),
            (
                "reminder-sweep",
                [
                    &SidecarAdmission::VARIABLES[..],
                    &ReminderEvents::VARIABLES,
                    &Database::VARIABLES,
                    &relay,
                ]
                .concat(),
            ),
        ]
    }

    fn table<'a>(value: &'a toml::Value, key: &str) -> &'a toml::Table {
        value
            .get(key)
            .and_then(toml::Value::as_table)
            .unwrap_or_else(|| panic!("spin.toml has no table {key}"))
    }

    #[test]
    fn each_component_declares_exactly_the_variables_it_reads() {
        let manifest: toml::Value = toml::from_str(MANIFEST).expect("spin.toml parses");
        let components = table(&manifest, "component");
        let reads = reads();
        let named: BTreeSet<&str> = reads.iter().map(|(name, _)| *name).collect();
        let declared: BTreeSet<&str> = components.keys().map(String::as_str).collect();
        assert_eq!(
            named, declared,
            "every component of spin.toml, and no other"
        );
        for (component, names) in reads {
            let read: BTreeSet<&str> = names.iter().copied().collect();
            assert_eq!(
                read.len(),
                names.len(),
                "{component} reads a variable twice"
            );
            let variables = components[component]
                .get("variables")
                .and_then(toml::Value::as_table)
                .map(|t| t.keys().map(String::as_str).collect::<BTreeSet<_>>())
                .unwrap_or_default();
            assert_eq!(
                read, variables,
                "[component.{component}.variables] against what it reads"
            );
        }
    }

    #[test]
    fn component_variables_refer_to_application_variables() {
        let manifest: toml::Value = toml::from_str(MANIFEST).expect("spin.toml parses");
        let application = table(&manifest, "variables");
        for (component, config) in table(&manifest, "component") {
            let Some(variables) = config.get("variables").and_then(toml::Value::as_table) else {
                continue;
            };
            for (name, value) in variables {
                let mut rest = value.as_str().expect("a template string");
                while let Some(start) = rest.find("{{") {
                    let end = rest[start..].find("}}").expect("a closed template") + start;
                    let referred = rest[start + 2..end].trim();
                    assert!(
                        application.contains_key(referred),
                        "{component}.{name} refers to {referred}, which [variables] lacks"
                    );
                    rest = &rest[end + 2..];
                }
            }
        }
    }

    fn auth(cache_seconds: &str) -> Auth {
        Auth {
            values: Default::default(),
            cache_seconds: cache_seconds.to_owned(),
        }
    }

    #[test]
    fn the_jwks_cache_lifetime_is_whole_seconds() {
        assert_eq!(auth(" 300 ").cache_ttl(), Ok(Duration::from_secs(300)));
        for wrong in ["", "5m", "-1", "1.5"] {
            let error = auth(wrong).cache_ttl().expect_err(wrong);
            assert_eq!(error.variable, JWT_JWKS_CACHE_SECONDS);
        }
    }
}
