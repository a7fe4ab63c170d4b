//! Application and component variables, resolved the way Spin 4 resolves them.
//!
//! Spin's rules (spinframework/spin `crates/expressions`): variable names are lower-case ASCII
//! letters, digits and single underscores, start with a letter and end with a letter or digit;
//! templates hold `{{ name }}` expressions over application variables; a value comes from a
//! provider (here `SPIN_VARIABLE_<NAME>` env vars, then explicit overrides) or else the
//! variable's default. Component variables are templates over application variables and are the
//! only names a component can read through `spin:variables`.

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;

/// One `[variables]` entry of the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Value used when no provider has one.
    #[serde(default)]
    pub default: Option<String>,
    /// Load fails when no provider has a value.
    #[serde(default)]
    pub required: bool,
    /// Kept out of logs.
    #[serde(default)]
    pub secret: bool,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Why a variable name was refused, worded as Spin words it.
pub fn validate_name(key: &str) -> std::result::Result<(), String> {
    let reason = if key.is_empty() {
        "must not be empty".to_string()
    } else if let Some(invalid) = key
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!(
            "invalid character {invalid:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !key.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_string()
    } else if !key.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_string()
    } else if key.contains("__") {
        "must not contain multiple consecutive underscores".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{key:?}: {reason}"))
}

/// A piece of a `{{ expr }}` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Lit(String),
    /// The name of an application variable.
    Expr(String),
}

/// A string with `{{ name }}` expressions, parsed like Spin's `Template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Splits `text` into literals and expressions; an unclosed `{{` is an error.
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("{{") {
                let Some((expr, tail)) = after.split_once("}}") else {
                    bail!("invalid variable template {text:?}: unmatched '{{{{' in template");
                };
                parts.push(Part::Expr(expr.trim().to_string()));
                rest = tail;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Lit(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        Ok(Self { parts })
    }

    /// The parts in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// True when the template has no expression.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Fills every expression from `values`; a name missing there is an error.
    pub fn render(&self, values: &HashMap<String, String>) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(lit) => out.push_str(lit),
                Part::Expr(name) => out.push_str(
                    values
                        .get(name)
                        .with_context(|| format!("unknown variable {name:?}"))?,
                ),
            }
        }
        Ok(out)
    }
}

/// Where application variable values come from besides their defaults.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    /// `SPIN_VARIABLE_*` values captured once, keyed by lower-case variable name.
    pub env: HashMap<String, String>,
    /// Values passed in by code; they win over the environment.
    pub overrides: HashMap<String, String>,
}

impl Providers {
    /// Captures the `SPIN_VARIABLE_<NAME>` entries of the process environment.
    pub fn from_env(overrides: HashMap<String, String>) -> Self {
        Self {
            env: env_variables(std::env::vars()),
            overrides,
        }
    }

    fn get(&self, name: &str) -> Option<&String> {
        self.overrides.get(name).or_else(|| self.env.get(name))
    }
}

/// Spin's environment provider reads `SPIN_VARIABLE_<UPPER_NAME>` for variable `<name>`.
pub fn env_variables(vars: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    vars.into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("SPIN_VARIABLE_")
                .map(|name| (name.to_ascii_lowercase(), v))
        })
        .collect()
}

/// Resolves every application variable: provider value, else default, else a load error.
pub fn resolve_application(
    declared: &HashMap<String, Variable>,
    providers: &Providers,
) -> Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    for (name, var) in declared {
        validate_name(name).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
        if var.required && var.default.is_some() {
            bail!("variable {name:?} cannot be both required and have a default");
        }
        if !var.required && var.default.is_none() {
            bail!("variable {name:?} must either be required or have a default");
        }
        let value = providers
            .get(name)
            .or(var.default.as_ref())
            .with_context(|| format!("no provider resolved required variable {name:?}"))?;
        values.insert(name.clone(), value.clone());
    }
    Ok(values)
}

/// Resolves a component's `[component.x.variables]` templates against application values.
pub fn resolve_component(
    component: &str,
    templates: &HashMap<String, String>,
    app_values: &HashMap<String, String>,
) -> Result<HashMap<String, String>> {
    templates
        .iter()
        .map(|(key, text)| {
            validate_name(key).map_err(|e| {
                anyhow::anyhow!("component {component:?}: invalid variable name: {e}")
            })?;
            let value = Template::parse(text)
                .and_then(|t| t.render(app_values))
                .with_context(|| format!("component {component:?} variable {key:?}"))?;
            Ok((key.clone(), value))
        })
        .collect()
}

/// `spin:variables/variables@3.0.0`: a component reads only its own `[component.x.variables]`.
mod host {
    use crate::bindings::spin::variables::variables::{Error, Host, HostWithStore};
    use crate::host::HostState;
    use wasmtime::component::{Accessor, HasSelf};

    impl Host for HostState {}

    impl HostWithStore for HasSelf<HostState> {
        async fn get<T>(
            accessor: &Accessor<T, Self>,
            name: String,
        ) -> wasmtime::Result<Result<String, Error>> {
            if let Err(reason) = super::validate_name(&name) {
                return Ok(Err(Error::InvalidName(reason)));
            }
            accessor.with(|mut access| {
                let host = access.get();
                host.calls.count_variable_read();
                Ok(host.variables.get(&name).cloned().ok_or_else(|| {
                    Error::Undefined(format!(
                        "no variable for {:?}.{name:?}",
                        host.component_id.as_ref()
                    ))
                }))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(entries: &[(&str, Option<&str>, bool)]) -> HashMap<String, Variable> {
        entries
            .iter()
            .map(|(name, default, required)| {
                (
                    name.to_string(),
                    Variable {
                        default: default.map(str::to_string),
                        required: *required,
                        ..Variable::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn names_follow_spins_rules() {
        for good in ["a", "abc", "a1b2c3", "a_1", "a_1_b_3", "db_url"] {
            assert!(validate_name(good).is_ok(), "{good} should be valid");
        }
        for bad in [
            "", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y", "Bad-Name",
        ] {
            assert!(validate_name(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn templates_split_into_literals_and_trimmed_expressions() {
        let t = Template::parse("postgres://{{ user }}:{{pw}}@h").unwrap();
        assert_eq!(
            t.parts(),
            &[
                Part::Lit("postgres://".into()),
                Part::Expr("user".into()),
                Part::Lit(":".into()),
                Part::Expr("pw".into()),
                Part::Lit("@h".into()),
            ]
        );
        assert!(Template::parse("plain").unwrap().is_literal());
        assert!(Template::parse("").unwrap().parts().is_empty());
        assert!(Template::parse("{{ open").is_err());
    }

    #[test]
    fn overrides_beat_env_which_beats_defaults() {
        let vars = declared(&[
            ("a", Some("default-a"), false),
            ("b", Some("default-b"), false),
            ("c", Some("default-c"), false),
        ]);
        let providers = Providers {
            env: env_variables([
                ("SPIN_VARIABLE_A".to_string(), "env-a".to_string()),
                ("SPIN_VARIABLE_B".to_string(), "env-b".to_string()),
                ("OTHER".to_string(), "x".to_string()),
            ]),
            overrides: HashMap::from([("a".to_string(), "override-a".to_string())]),
        };
        let values = resolve_application(&vars, &providers).unwrap();
        assert_eq!(values["a"], "override-a");
        assert_eq!(values["b"], "env-b");
        assert_eq!(values["c"], "default-c");
    }

    #[test]
    fn a_missing_required_variable_fails_the_load() {
        let vars = declared(&[("secret", None, true)]);
        let err = resolve_application(&vars, &Providers::default()).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn component_templates_render_against_application_values() {
        let app = HashMap::from([
            ("db_user".to_string(), "todo".to_string()),
            ("db_host".to_string(), "127.0.0.1".to_string()),
        ]);
        let templates = HashMap::from([(
            "db_url".to_string(),
            "postgres://{{ db_user }}@{{ db_host }}/todo".to_string(),
        )]);
        let values = resolve_component("api", &templates, &app).unwrap();
        assert_eq!(values["db_url"], "postgres://todo@127.0.0.1/todo");

        let unknown = HashMap::from([("x".to_string(), "{{ nope }}".to_string())]);
        assert!(resolve_component("api", &unknown, &app).is_err());
    }
}
