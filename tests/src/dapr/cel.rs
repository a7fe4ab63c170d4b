//! The CEL of routing rules (`match`), limited to what the app's `/dapr/subscribe` emits. Dapr
//! compiles rules with cel-go over `{"event": <the CloudEvent>}`
//! (dapr `pkg/runtime/pubsub/subscriptions.go`, `pkg/expr`).

use anyhow::anyhow;
use serde_json::Value;

/// The one form of CEL the app's routing rules take (`todo_core::subscriptions`):
/// `event.<attribute>[.<key>...] == "<text>"`, the text quoted as JSON quotes it (CEL reads the
/// escapes serde_json writes the same way). Any other expression is refused at discovery with an
/// error naming it, so a test notices when the app emits more than the double evaluates.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Cel {
    /// The keys below `event`, outermost first.
    path: Vec<String>,
    text: String,
}

impl Cel {
    pub(super) fn parse(source: &str) -> anyhow::Result<Self> {
        let unsupported = || {
            anyhow!(
                "unsupported match expression {source:?}: the Dapr double evaluates only \
                 `event.<attribute> == \"text\"`, the form /dapr/subscribe emits"
            )
        };
        let (left, right) = source.split_once("==").ok_or_else(unsupported)?;
        let mut keys = left.trim().split('.');
        if keys.next() != Some("event") {
            return Err(unsupported());
        }
        let path: Vec<String> = keys.map(str::to_owned).collect();
        let identifier = |key: &String| {
            key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if path.is_empty() || !path.iter().all(identifier) {
            return Err(unsupported());
        }
        let text = serde_json::from_str(right.trim()).map_err(|_| unsupported())?;
        Ok(Self { path, text })
    }

    /// As CEL evaluates it: a missing key is an error, a value of another type is not equal.
    pub(super) fn eval(&self, event: &Value) -> Result<bool, String> {
        let mut value = event;
        for key in &self.path {
            value = value
                .get(key)
                .ok_or_else(|| format!("no such key: {key}"))?;
        }
        Ok(value.as_str() == Some(self.text.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cel_subset_evaluates_like_cel() -> anyhow::Result<()> {
        let event = json!({"type": "a", "source": "s", "data": {"n": 2, "kind": "k\"1"}});
        for (source, expected) in [
            (r#"event.type == "a""#, Ok(true)),
            (r#"event.type == "b""#, Ok(false)),
            (r#"event.data.kind=="k\"1""#, Ok(true)),
            (r#"event.data.n == "2""#, Ok(false)),
            (
                r#"event.missing == "a""#,
                Err("no such key: missing".to_owned()),
            ),
        ] {
            assert_eq!(Cel::parse(source)?.eval(&event), expected, "{source}");
        }
        for unsupported in [
            "event.type in ['a']",
            "event.type.startsWith('a')",
            "event.type ==",
            "(true",
            "true",
            "event.type == 'a'",
            r#"event.type != "a""#,
            r#"event.type == "b" || event.source == "s""#,
            r#"event.type == "a" && event.source == "s""#,
            r#"(event.type == "a")"#,
            "event.data.n == 2",
            r#"type == "a""#,
            r#"event == "a""#,
        ] {
            let error = Cel::parse(unsupported).expect_err(unsupported).to_string();
            assert!(
                error.contains("unsupported match expression"),
                "{unsupported}: {error}"
            );
        }
        Ok(())
    }
}
