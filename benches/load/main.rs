//! catalog-load: drives a running catalog-apiserver over its real TLS, as clients do, and
//! reports latency and throughput per scenario, with the floors the figures are held against.
//!
//!   catalog-load --kubeconfig catalog-data/kubeconfig --seed 100000 --duration 10s
//!
//! Seeds N realistic entries (unless they are there), runs each scenario for `--duration`
//! with `--concurrency` clients, prints a table, and writes the same as JSON (`--json`).

mod floors;
mod scenarios;
mod stats;
mod whole;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Clone, Debug)]
#[command(about = "Load generator and benchmark for catalog-apiserver")]
pub struct Args {
    /// kubeconfig reaching the server (standalone writes one in its data directory); several
    /// (comma-separated, or the flag repeated) spread the requests over the replicas they reach,
    /// in turn.
    #[arg(long, required = true, value_delimiter = ',')]
    kubeconfig: Vec<PathBuf>,
    /// Entries to have in the catalog before the scenarios run.
    #[arg(long, default_value_t = 10_000)]
    seed: usize,
    /// Namespaces the entries are spread over.
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// How long each scenario runs.
    #[arg(long, default_value = "10s", value_parser = humantime)]
    duration: Duration,
    /// Concurrent clients per scenario (writers for create and update).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Watchers in watch-fanout.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writes per second during watch-fanout.
    #[arg(long, default_value_t = 100)]
    watch_write_rate: u64,
    /// Concurrent whole-collection readers in whole-readers (unpaged LISTs, Tables and
    /// WatchLists in turn, every other three of them slow).
    #[arg(long, default_value_t = 6)]
    whole_readers: usize,
    /// Scenarios to run (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Where to write the reports as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn humantime(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: want e.g. 10s, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: want e.g. 10s, 2m")),
    }
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(scenarios::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("catalog-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
