//! A smoke run of catalog-load: every scenario runs against the real server at small N and
//! reports sane figures (not timing thresholds: performance is measured, see BENCHMARKS.md).

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use super::common::*;

#[test]
fn every_load_scenario_runs_and_reports() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let stdout = succeed(
        Command::new(env!("CARGO_BIN_EXE_catalog-load"))
            .args(["--kubeconfig", server.kubeconfig().to_str().unwrap()])
            .args([
                "--seed",
                "300",
                "--namespaces",
                "3",
                "--duration",
                "1s",
                "--concurrency",
                "4",
            ])
            .args(["--watchers", "5", "--watch-write-rate", "20"])
            .args(["--json", json.to_str().unwrap()]),
    );
    let reports: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scenarios: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        [
            "get",
            "list-page",
            "list-indexed",
            "list-label",
            "list-table",
            "list-full",
            "whole-readers",
            "watch-fanout",
            "create",
            "update",
            "mixed",
            "server"
        ]
    );
    for report in &reports[..reports.len() - 1] {
        let name = &report["scenario"];
        assert!(
            report["operations"].as_u64().unwrap() > 0,
            "{name}: {report}"
        );
        assert_eq!(report["errors"], 0, "{name}: {report}");
        let (p50, p99, max) = (
            report["p50_ms"].as_f64().unwrap(),
            report["p99_ms"].as_f64().unwrap(),
            report["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{name}: {report}");
    }
    let server_figures = notes(reports.last().unwrap());
    for figure in [
        "serde_page_ms",
        "tls_copy_MB/s",
        "list_full_of_floor_%",
        "catalog_process_resident_memory_bytes",
        "catalog_store_size_bytes",
    ] {
        assert!(
            server_figures.get(figure).is_some_and(|v| *v > 0.0),
            "{figure} in {server_figures:?}"
        );
    }
    assert!(stdout.contains("watch-fanout"), "{stdout}");
    let fanout = notes(&reports[scenarios.iter().position(|s| *s == "watch-fanout").unwrap()]);
    let (write_p50, write_p99) = (fanout["write_p50_ms"], fanout["write_p99_ms"]);
    assert!(0.0 < write_p50 && write_p50 <= write_p99, "{fanout:?}");
}

/// A report's notes by name.
fn notes(report: &Value) -> HashMap<String, f64> {
    report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n[0].as_str().unwrap().to_string(), n[1].as_f64().unwrap()))
        .collect()
}
