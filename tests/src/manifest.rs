//! The parts of a Spin manifest (v2) this host understands, resolved into one `Manifest`.
//!
//! Supported: `[application]`, `[variables]`, `[[trigger.http]]` with a string `route` (or
//! `{ private = true }`) and a component id, and `[component.x]` with a local `source`,
//! `allowed_outbound_hosts` (templates over application variables allowed), `variables` and
//! `environment`. Anything else Spin accepts (build, watch, files, key-value stores...) is read
//! and ignored; settings this host cannot honour (remote sources, static responses, Wagi) fail
//! the load instead of being silently skipped.

use crate::allowed_hosts::AllowedHosts;
use crate::variables::{self, Providers, Template, Variable};
use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    #[serde(default)]
    application: RawApplication,
    #[serde(default)]
    variables: HashMap<String, Variable>,
    #[serde(default)]
    trigger: HashMap<String, Vec<RawTrigger>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawApplication {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct RawTrigger {
    #[serde(default)]
    route: Option<toml::Value>,
    #[serde(default)]
    component: Option<toml::Value>,
    #[serde(default)]
    executor: Option<toml::Value>,
    #[serde(default)]
    static_response: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    description: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    variables: HashMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

/// One component, with everything templated already resolved.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    /// The `[component.<id>]` key.
    pub id: String,
    /// Absolute path of the Wasm file.
    pub source: PathBuf,
    /// `description`, shown by `todo-host` next to the routes.
    pub description: String,
    /// Resolved `allowed_outbound_hosts`.
    pub allowed_hosts: AllowedHosts,
    /// Resolved `[component.<id>.variables]`: all the component can read.
    pub variables: HashMap<String, String>,
    /// `environment`, passed to the guest as environment variables.
    pub environment: Vec<(String, String)>,
}

/// A loaded manifest with variables resolved.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// `[application] name`.
    pub name: String,
    /// `[application] version`.
    pub version: String,
    /// `[application] description`.
    pub description: String,
    /// Application variable values after providers and defaults.
    pub variables: HashMap<String, String>,
    /// `(component id, route)` for each public HTTP trigger, in manifest order.
    pub routes: Vec<(String, String)>,
    /// Components by id.
    pub components: BTreeMap<String, ComponentConfig>,
}

impl Manifest {
    /// Reads and resolves the manifest at `path`.
    pub fn load(path: &Path, providers: &Providers) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, dir, providers)
            .with_context(|| format!("failed to load manifest {}", path.display()))
    }

    /// Resolves manifest text; relative sources are taken from `dir`.
    pub fn parse(text: &str, dir: &Path, providers: &Providers) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).context("invalid manifest TOML")?;
        ensure!(
            raw.spin_manifest_version.as_integer() == Some(2)
                || raw.spin_manifest_version.as_str() == Some("2"),
            "only spin_manifest_version = 2 is supported"
        );
        let app_values = variables::resolve_application(&raw.variables, providers)?;

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            components.insert(id.clone(), resolve_component(&id, c, dir, &app_values)?);
        }

        let mut routes = Vec::new();
        for (kind, triggers) in raw.trigger {
            ensure!(
                kind == "http",
                "trigger type {kind:?} is not supported by this host"
            );
            for t in triggers {
                ensure!(
                    t.static_response.is_none(),
                    "static_response triggers are not supported"
                );
                ensure!(
                    t.executor.is_none(),
                    "trigger executors (Wagi) are not supported"
                );
                let component = match t.component {
                    Some(toml::Value::String(id)) => id,
                    Some(_) => bail!("inline trigger components are not supported"),
                    None => bail!("an HTTP trigger has no component"),
                };
                ensure!(
                    components.contains_key(&component),
                    "trigger refers to undefined component {component:?}"
                );
                match t.route {
                    Some(toml::Value::String(route)) => routes.push((component, route)),
                    Some(toml::Value::Table(t))
                        if t.get("private").and_then(toml::Value::as_bool) == Some(true) => {}
                    _ => bail!(
                        "route must be a string pattern or '{{ private = true }}': component {component:?}"
                    ),
                }
            }
        }

        Ok(Self {
            name: raw.application.name,
            version: raw.application.version,
            description: raw.application.description,
            variables: app_values,
            routes,
            components,
        })
    }
}

fn resolve_component(
    id: &str,
    raw: RawComponent,
    dir: &Path,
    app_values: &HashMap<String, String>,
) -> Result<ComponentConfig> {
    let source = match raw.source {
        toml::Value::String(path) => dir.join(path),
        _ => bail!("component {id:?}: only local file sources are supported"),
    };
    ensure!(
        raw.allowed_http_hosts.is_empty(),
        "component {id:?}: allowed_http_hosts is deprecated; use allowed_outbound_hosts"
    );
    let hosts = raw
        .allowed_outbound_hosts
        .iter()
        .map(|entry| Template::parse(entry).and_then(|t| t.render(app_values)))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    let allowed_hosts = AllowedHosts::parse(&hosts)
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    Ok(ComponentConfig {
        id: id.to_string(),
        source,
        description: raw.description,
        allowed_hosts,
        variables: variables::resolve_component(id, &raw.variables, app_values)?,
        environment: raw.environment.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
version = "1.0.0"
[variables]
db_host = { default = "127.0.0.1" }
db_port = { default = "5432" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = { private = true }
component = "api"
[component.api]
source = "target/api.wasm"
allowed_outbound_hosts = ["postgres://{{ db_host }}:{{ db_port }}", "https://example.com"]
[component.api.variables]
db_url = "postgres://u@{{ db_host }}:{{db_port}}/db"
token = "{{ token }}"
[component.api.build]
command = "cargo build"
"#;

    fn providers(overrides: &[(&str, &str)]) -> Providers {
        Providers {
            env: HashMap::new(),
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn templates_resolve_in_hosts_and_component_variables() {
        let m = Manifest::parse(
            MANIFEST,
            Path::new("/app"),
            &providers(&[("token", "t0k"), ("db_port", "55432")]),
        )
        .unwrap();
        let api = &m.components["api"];
        assert_eq!(api.source, Path::new("/app/target/api.wasm"));
        assert_eq!(api.variables["db_url"], "postgres://u@127.0.0.1:55432/db");
        assert_eq!(api.variables["token"], "t0k");
        assert!(api.allowed_hosts.allows_url("127.0.0.1:55432", "postgres"));
        assert!(!api.allowed_hosts.allows_url("127.0.0.1:5432", "postgres"));
        assert_eq!(m.routes, vec![("api".to_string(), "/api/...".to_string())]);
    }

    #[test]
    fn a_missing_required_variable_is_a_load_error() {
        let err = Manifest::parse(MANIFEST, Path::new("/app"), &providers(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("token"), "{err:#}");
    }

    #[test]
    fn templates_over_undeclared_variables_are_rejected() {
        let text = MANIFEST.replace("{{ token }}", "{{ nope }}");
        assert!(Manifest::parse(&text, Path::new("/app"), &providers(&[("token", "x")])).is_err());
    }
}
