//! What the benchmark prints: the machine, component sizes and the results tables.

use crate::load::Stats;
use anyhow::{Context as _, Result, bail};
use std::path::Path;

/// One row of the results: a scenario at one concurrency.
pub struct Measured {
    pub scenario: String,
    pub concurrency: usize,
    pub app: Stats,
    pub floor: Option<Stats>,
    pub note: String,
}

impl Measured {
    /// Throughput of the app as a fraction of the floor's.
    pub fn ratio(&self) -> Option<f64> {
        self.floor
            .as_ref()
            .map(|floor| self.app.per_second() / floor.per_second())
    }
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {memory_gib:.1} GiB memory")
}

/// Size of a component and of its custom sections (names, producers, debug info).
pub struct WasmSize {
    pub total: usize,
    pub custom: Vec<(String, usize)>,
}

impl WasmSize {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut custom = Vec::new();
        custom_sections(&bytes, &mut custom)?;
        Ok(Self {
            total: bytes.len(),
            custom,
        })
    }

    pub fn custom_bytes(&self) -> usize {
        self.custom.iter().map(|(_, n)| n).sum()
    }

    /// Whether any DWARF (`.debug_*`) section is left.
    pub fn has_debug_info(&self) -> bool {
        self.custom
            .iter()
            .any(|(name, _)| name.starts_with(".debug"))
    }

    pub fn has_name_section(&self) -> bool {
        self.custom
            .iter()
            .any(|(name, _)| name == "name" || name == "component-name")
    }
}

fn leb_u32(bytes: &[u8], pos: &mut usize) -> Result<usize> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = bytes.get(*pos) else {
            bail!("truncated LEB128");
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value as usize);
        }
    }
    bail!("LEB128 too long")
}

/// Collects the custom sections of a core module or component, descending into the core
/// modules (section 1) and components (section 4) a component embeds.
fn custom_sections(bytes: &[u8], out: &mut Vec<(String, usize)>) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly binary");
    }
    let is_component = bytes[6..8] == [1, 0];
    let mut pos = 8;
    while pos < bytes.len() {
        let id = bytes[pos];
        pos += 1;
        let size = leb_u32(bytes, &mut pos)?;
        let end = pos + size;
        if end > bytes.len() {
            bail!("section runs past the end");
        }
        let body = &bytes[pos..end];
        match id {
            0 => {
                let mut p = 0;
                let len = leb_u32(body, &mut p)?;
                let name = String::from_utf8_lossy(&body[p..(p + len).min(body.len())]);
                out.push((name.into_owned(), size + 1));
            }
            1 | 4 if is_component => custom_sections(body, out)?,
            _ => {}
        }
        pos = end;
    }
    Ok(())
}

pub fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".to_owned()
    } else if value < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.1}")
    }
}

pub fn table(rows: &[Measured]) -> String {
    let mut out = String::from(
        "| scenario | conc. | app req/s | app p50 | app p90 | app p99 | floor req/s | floor p50 | floor p90 | floor p99 | app/floor | app CPU µs/req (process + pg) | floor CPU µs/req (process + pg) | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let (f_rps, f50, f90, f99) = match &row.floor {
            Some(f) => (
                format!("{:.0}", f.per_second()),
                ms(f.percentile_ms(50.0)),
                ms(f.percentile_ms(90.0)),
                ms(f.percentile_ms(99.0)),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let cpu = |s: &Stats| {
            let (process, pg) = s.cpu_us();
            format!("{process:.0} + {pg:.0}")
        };
        let f_cpu = row.floor.as_ref().map_or("-".to_owned(), cpu);
        let mut notes = row.note.clone();
        for (who, stats) in [("app", Some(&row.app)), ("floor", row.floor.as_ref())] {
            if let Some(stats) = stats
                && stats.errors > 0
            {
                notes.push_str(&format!(
                    " {who}: {} errors, first: {}",
                    stats.errors,
                    stats.first_error.as_deref().unwrap_or("")
                ));
            }
        }
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.concurrency,
            row.app.per_second(),
            ms(row.app.percentile_ms(50.0)),
            ms(row.app.percentile_ms(90.0)),
            ms(row.app.percentile_ms(99.0)),
            f_rps,
            f50,
            f90,
            f99,
            row.ratio().map_or("-".to_owned(), |r| format!("{r:.2}")),
            cpu(&row.app),
            f_cpu,
            notes.trim(),
        ));
    }
    out
}
