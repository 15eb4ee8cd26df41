//! The server's metrics, served at `/metrics` in the Prometheus text format: requests by verb
//! and code with their latency, open watches, the store's size and revision, process memory,
//! and the verification loop's checks, latency, queue and per-host circuits.

use std::path::{Path, PathBuf};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub host: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub host: String,
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    store_dir: PathBuf,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Latencies<VerbLabels>,
    pub watches: Gauge,
    pub store_revision: Gauge,
    store_bytes: Gauge,
    resident_bytes: Gauge,
    pub checks: Family<CheckLabels, Counter>,
    pub check_seconds: Histogram,
    pub queue_depth: Gauge,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit: Family<HostLabels, Gauge>,
}

impl Metrics {
    pub fn new(store_dir: &Path) -> Metrics {
        let mut registry = Registry::with_prefix("catalog");
        let metrics = Metrics {
            registry: Registry::default(),
            store_dir: store_dir.to_path_buf(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            watches: Gauge::default(),
            store_revision: Gauge::default(),
            store_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            checks: Family::default(),
            check_seconds: latency(),
            queue_depth: Gauge::default(),
            circuit: Family::default(),
        };
        registry.register(
            "requests",
            "API requests by verb and HTTP code",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency (to the response head for streams)",
            metrics.request_seconds.clone(),
        );
        registry.register("watches", "Watches open now", metrics.watches.clone());
        registry.register(
            "store_revision",
            "The store's current revision",
            metrics.store_revision.clone(),
        );
        registry.register(
            "store_size_bytes",
            "The store's size on disk",
            metrics.store_bytes.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            metrics.resident_bytes.clone(),
        );
        registry.register(
            "verification_checks",
            "Registry checks by host and outcome",
            metrics.checks.clone(),
        );
        registry.register(
            "verification_check_duration_seconds",
            "Registry check latency",
            metrics.check_seconds.clone(),
        );
        registry.register(
            "verification_queue_depth",
            "Entries waiting for their next check",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "verification_circuit_state",
            "Registry circuit per host: 0 closed, 1 half-open, 2 open",
            metrics.circuit.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The text exposition, with the gauges that are read rather than counted brought up to date.
    pub fn render(&self) -> String {
        self.store_bytes.set(directory_size(&self.store_dir) as i64);
        self.resident_bytes.set(resident_memory() as i64);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => directory_size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Resident set size from /proc (Linux), 0 elsewhere.
fn resident_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Counts one open watch for as long as it lives.
pub struct OpenWatch(Gauge);

impl OpenWatch {
    pub fn new(watches: &Gauge) -> OpenWatch {
        watches.inc();
        OpenWatch(watches.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}
