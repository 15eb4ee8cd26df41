//! Latency samples and what is reported of them.

use std::time::Duration;

use serde::Serialize;

/// One scenario's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub operations: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Scenario-specific figures (bytes per second, watchers, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<(String, f64)>,
}

pub fn report(
    scenario: &str,
    mut latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
) -> Report {
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let operations = latencies.len() as u64;
    Report {
        scenario: scenario.to_string(),
        operations,
        errors,
        seconds: elapsed.as_secs_f64(),
        per_second: operations as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        notes: Vec::new(),
    }
}

pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<14} {:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}  notes\n",
        "scenario", "ops", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for r in reports {
        let notes: Vec<String> = r.notes.iter().map(|(k, v)| format!("{k}={v:.1}")).collect();
        out.push_str(&format!(
            "{:<14} {:>9} {:>6} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}\n",
            r.scenario,
            r.operations,
            r.errors,
            r.per_second,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            notes.join(" ")
        ));
    }
    out
}
