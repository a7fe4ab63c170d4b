//! The runtime a test runs the app on: the test host in process, or the real Spin CLI.

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the app runs. `TEST_RUNTIME=spin` picks [`Runtime::Spin`] with the CLI named by
/// `SPIN_BIN` (or `spin` on `PATH`); anything else, or nothing, the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// The project's test host, in this process.
    Host,
    /// `spin up` of the real CLI, one process per spawned app.
    Spin(PathBuf),
}

impl Runtime {
    pub fn from_env() -> Runtime {
        match std::env::var("TEST_RUNTIME").as_deref() {
            Ok("spin") => Runtime::Spin(
                std::env::var_os("SPIN_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("spin")),
            ),
            _ => Runtime::Host,
        }
    }

    /// A short name for messages: `host` or `spin`.
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Host => "host",
            Runtime::Spin(_) => "spin",
        }
    }
}

/// How long a `spin up` may take to answer its health route: the first start after a build
/// compiles the components.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A `spin up` of the project's manifest on a free loopback port, stopped when dropped.
pub struct SpinApp {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl SpinApp {
    /// Starts `spin` with `manifest`, `runtime-config.toml` beside it, and `variables` as
    /// `SPIN_VARIABLE_*`, and waits until it serves.
    pub fn start(
        spin: &Path,
        manifest: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<Self> {
        let root = manifest.parent().context("the manifest has a directory")?;
        let port = super::unused_port();
        let logs = root.join("target/test-logs");
        std::fs::create_dir_all(&logs).context("create target/test-logs")?;
        let log = logs.join(format!("spin-{port}.log"));
        let out = std::fs::File::create(&log).context("create the spin log")?;
        let mut command = Command::new(spin);
        command
            .arg("up")
            .arg("--from")
            .arg(manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runtime-config-file")
            .arg(root.join("runtime-config.toml"))
            .arg("--log-dir")
            .arg(logs.join(format!("spin-{port}")))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("share the spin log")?)
            .stderr(out);
        // Only the test's variables reach the app, as they would in a deployment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                command.env_remove(name);
            }
        }
        for (name, value) in variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", spin.display()))?;
        let mut app = SpinApp { child, port, log };
        app.wait_until_serving()?;
        Ok(app)
    }

    fn wait_until_serving(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "spin up exited with {status} before serving:\n{}",
                    self.log_tail()
                );
            }
            if health_ok(self.port) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "spin up did not serve within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of what `spin up` printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for SpinApp {
    /// SIGTERM, which `spin up` passes on to its trigger process, then SIGKILL if it lingers.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET /.well-known/spin/health` over a plain socket.
fn health_ok(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(
            b"GET /.well-known/spin/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}
