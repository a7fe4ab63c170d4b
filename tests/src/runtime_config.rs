//! The runtime configuration the project hands Spin (`spin up --runtime-config-file
//! runtime-config.toml`, the file beside `spin.toml`), as far as it changes behaviour the host
//! models: the `[outbound_http]` table (spinframework/spin
//! `crates/factor-outbound-http/src/runtime_config/spin.rs`). Spin's other tables (variable
//! providers, key-value and SQLite stores) configure parts the app does not use on the host and
//! are left alone.

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::path::Path;

/// What the host takes from the runtime configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Whether outbound HTTP keeps connections alive for later requests (Spin's default).
    pub connection_pooling: bool,
}

impl Default for RuntimeConfig {
    /// Spin's behaviour without an `[outbound_http]` table.
    fn default() -> Self {
        Self {
            connection_pooling: true,
        }
    }
}

#[derive(Deserialize)]
struct File {
    outbound_http: Option<OutboundHttp>,
}

/// The table as Spin reads it: unknown keys are an error, and a key left out takes serde's
/// default, so a present table without `connection_pooling` turns pooling off, as on Spin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundHttp {
    #[serde(default)]
    connection_pooling: bool,
    #[serde(default)]
    max_concurrent_requests: Option<usize>,
}

impl RuntimeConfig {
    /// Reads `runtime-config.toml` beside `manifest`; without one, Spin's defaults.
    pub fn beside(manifest: &Path) -> Result<Self> {
        let path = manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join("runtime-config.toml");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid runtime config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: File = toml::from_str(text)?;
        let Some(outbound) = file.outbound_http else {
            return Ok(Self::default());
        };
        if outbound.max_concurrent_requests.is_some() {
            bail!("[outbound_http] max_concurrent_requests is not modelled by the test host");
        }
        Ok(Self {
            connection_pooling: outbound.connection_pooling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_pooling_follows_spin() {
        let pooling = |text| {
            RuntimeConfig::parse(text)
                .map(|c| c.connection_pooling)
                .ok()
        };
        assert_eq!(pooling(""), Some(true), "no table: Spin pools");
        assert_eq!(
            pooling("[outbound_http]\nconnection_pooling = true"),
            Some(true)
        );
        assert_eq!(
            pooling("[outbound_http]\nconnection_pooling = false"),
            Some(false)
        );
        assert_eq!(
            pooling("[outbound_http]"),
            Some(false),
            "key left out: serde's false"
        );
        assert_eq!(
            pooling("[outbound_http]\npooling = false"),
            None,
            "unknown key"
        );
        assert_eq!(pooling("[[config_provider]]\ntype = \"vault\""), Some(true));
    }

    #[test]
    fn the_projects_runtime_config_is_read() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let config = RuntimeConfig::beside(&manifest).expect("runtime-config.toml parses");
        assert!(
            !config.connection_pooling,
            "runtime-config.toml turns pooling off"
        );
        let cluster = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../k8s/secrets/runtime-config.toml.example");
        let text = std::fs::read_to_string(cluster).expect("the cluster's template");
        assert_eq!(
            RuntimeConfig::parse(&text).expect("the template parses"),
            config,
            "the cluster's runtime config configures what the local one does"
        );
    }
}
