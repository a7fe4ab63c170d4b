//! `todo-host`: serves the app like `spin up`, for manual runs and benchmarks.
//!
//! ```text
//! todo-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--no-reuse]
//! ```
//!
//! Variables come from `SPIN_VARIABLE_*` env vars and, for names not set there, from a `.env`
//! file next to the manifest, as `spin up` reads them. Guest output is always shown.

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use todo_test_host::{App, ReuseConfig};

struct Args {
    manifest: PathBuf,
    listen: SocketAddr,
    reuse: ReuseConfig,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        manifest: PathBuf::from("spin.toml"),
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        reuse: ReuseConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--manifest" | "-f" => args.manifest = value("--manifest")?.into(),
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v
                    .parse()
                    .with_context(|| format!("invalid --listen {v:?}"))?;
            }
            "--no-reuse" => args.reuse = ReuseConfig::no_reuse(),
            "-h" | "--help" => {
                println!(
                    "usage: todo-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--no-reuse]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// `KEY=value` lines of `<manifest dir>/.env` that set `SPIN_VARIABLE_*` names not already in
/// the environment, turned into variable overrides.
fn dotenv_overrides(manifest: &Path) -> Result<HashMap<String, String>> {
    let path = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(HashMap::new());
    };
    let mut overrides = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}: cannot parse line {line:?}", path.display());
        };
        let key = key.trim();
        let value = value.trim().trim_matches('"').trim_matches('\'');
        if std::env::var_os(key).is_some() {
            continue;
        }
        if let Some(name) = key.strip_prefix("SPIN_VARIABLE_") {
            overrides.insert(name.to_ascii_lowercase(), value.to_string());
        }
    }
    Ok(overrides)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let overrides = dotenv_overrides(&args.manifest)?;
    let app = App::load_verbose(&args.manifest, overrides, args.reuse)?;
    let (addr, server) = app.bind(args.listen).await?;
    let base = format!("http://{addr}");
    println!("\nServing {base}");
    println!("Available Routes:");
    for (route, component, description) in app.routes() {
        println!("  {component}: {base}{route}");
        if !description.is_empty() {
            println!("    {description}");
        }
    }
    tokio::select! {
        result = server => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
