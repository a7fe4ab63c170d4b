//! The load generator: a fixed number of operations shared by N workers, each with its own
//! connection, every operation timed on its own.

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One worker of a run: owns its connection and performs operations by number.
pub trait Worker: Send + 'static {
    /// Performs operation `op`. Operation numbers are unique within a benchmark process, so
    /// they can make titles and event ids unique.
    fn call(&mut self, op: usize) -> impl Future<Output = Result<()>> + Send;
}

/// CPU time used so far, in clock ticks (1/100 s, Linux `USER_HZ`): this process (the host
/// or the floor, plus the load generator) and each `postgres` process by pid.
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    this_process: u64,
    postgres: HashMap<u32, u64>,
}

/// CPU used between two snapshots, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub this_process: u64,
    pub postgres: u64,
}

/// utime + stime of `/proc/<pid>/stat` and the process name.
fn proc_stat(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuSnapshot {
    pub fn now() -> Self {
        let this_process = proc_stat(std::path::Path::new("/proc/self/stat")).map_or(0, |(_, t)| t);
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let (name, ticks) = proc_stat(&e.path().join("stat"))?;
                (name == "postgres").then_some((pid, ticks))
            })
            .collect();
        Self {
            this_process,
            postgres,
        }
    }

    /// CPU used since `start`, per process, so that backends ending in between (their time
    /// leaves the totals) do not distort the sum; time of backends that ended is not counted.
    fn since(&self, start: &CpuSnapshot) -> Cpu {
        let postgres = self
            .postgres
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(start.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        Cpu {
            this_process: self.this_process.saturating_sub(start.this_process),
            postgres,
        }
    }
}

/// Latencies of one run.
pub struct Stats {
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// CPU used during the run (PostgreSQL's includes its background work).
    pub cpu: Cpu,
    /// Sorted ascending.
    latencies: Vec<Duration>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile (0-100) in milliseconds, nearest rank.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1e3
    }

    /// CPU microseconds per request: (this process, PostgreSQL).
    pub fn cpu_us(&self) -> (f64, f64) {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / self.ok.max(1) as f64;
        (per(self.cpu.this_process), per(self.cpu.postgres))
    }

    pub fn mean_ms(&self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let total: Duration = self.latencies.iter().sum();
        total.as_secs_f64() * 1e3 / self.latencies.len() as f64
    }
}

/// Runs operations `ops` on `workers` (one task each, taking the next number until none is
/// left) and returns the workers for the next run with the timings.
pub async fn drive<W: Worker>(workers: Vec<W>, ops: Range<usize>) -> Result<(Vec<W>, Stats)> {
    let next = Arc::new(AtomicUsize::new(ops.start));
    let end = ops.end;
    let per_worker = ops.len() / workers.len().max(1) + 1;
    let cpu = CpuSnapshot::now();
    let started = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                let mut errors = Vec::new();
                loop {
                    let op = next.fetch_add(1, Ordering::Relaxed);
                    if op >= end {
                        break;
                    }
                    let t = Instant::now();
                    match worker.call(op).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                (worker, latencies, errors)
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(ops.len());
    let mut errors = Vec::new();
    for task in tasks {
        let (worker, l, e) = task.await.context("a load worker panicked")?;
        workers.push(worker);
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    let cpu = CpuSnapshot::now().since(&cpu);
    latencies.sort_unstable();
    Ok((
        workers,
        Stats {
            ok: latencies.len(),
            errors: errors.len(),
            first_error: errors.into_iter().next(),
            elapsed,
            cpu,
            latencies,
        },
    ))
}

/// Builds request `op` of worker `worker`.
pub type MakeRequest = Arc<dyn Fn(usize, usize) -> Request<Full<Bytes>> + Send + Sync>;

/// Checks a response: `Ok` or why it is wrong.
pub type CheckResponse = Arc<dyn Fn(StatusCode, &[u8]) -> Result<()> + Send + Sync>;

/// An HTTP/1.1 client on one keep-alive connection.
pub struct HttpWorker {
    index: usize,
    sender: SendRequest<Full<Bytes>>,
    make: MakeRequest,
    check: CheckResponse,
}

impl HttpWorker {
    pub async fn connect(
        addr: SocketAddr,
        index: usize,
        make: MakeRequest,
        check: CheckResponse,
    ) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(connection);
        Ok(Self {
            index,
            sender,
            make,
            check,
        })
    }
}

impl Worker for HttpWorker {
    fn call(&mut self, op: usize) -> impl Future<Output = Result<()>> + Send {
        let request = (self.make)(self.index, op);
        async move {
            self.sender.ready().await.context("connection closed")?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            (self.check)(status, &body)
        }
    }
}

/// Expects exactly `status`.
pub fn expect_status(status: StatusCode) -> CheckResponse {
    Arc::new(move |got, body| {
        if got == status {
            Ok(())
        } else {
            bail!(
                "expected {status}, got {got}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        }
    })
}

/// Operation `op` of worker `worker` on its own database connection.
pub type PgOp = Arc<
    dyn Fn(Arc<tokio_postgres::Client>, usize, usize) -> BoxFuture<'static, Result<()>>
        + Send
        + Sync,
>;

/// A worker with its own PostgreSQL connection, for the floor.
pub struct PgWorker {
    index: usize,
    client: Arc<tokio_postgres::Client>,
    op: PgOp,
}

impl PgWorker {
    pub async fn connect(url: &str, index: usize, op: PgOp) -> Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("connecting the floor's PostgreSQL client")?;
        tokio::spawn(connection);
        Ok(Self {
            index,
            client: Arc::new(client),
            op,
        })
    }
}

impl Worker for PgWorker {
    fn call(&mut self, op: usize) -> impl Future<Output = Result<()>> + Send {
        (self.op)(self.client.clone(), self.index, op)
    }
}
