//! client-go's dynamic informer (tests/go/src/informer, built by scripts/install-peers from
//! Debian's client-go sources) against the real server, with and without WatchList.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::common::*;

fn run_informer(server: &Server, namespace: &str, expected: usize, watch_list: bool) -> Value {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers/bin/informer");
    assert!(
        program.exists(),
        "{} is missing: run scripts/install-peers",
        program.display()
    );
    let stdout = succeed(
        Command::new(program)
            .args([
                server.kubeconfig().to_str().unwrap(),
                namespace,
                &expected.to_string(),
            ])
            .env("KUBE_FEATURE_WatchListClient", watch_list.to_string()),
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn client_go_informers_sync_and_follow_with_and_without_watch_list() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        for i in 0..7 {
            let body = image_json("informers", &format!("seed-{i}"), "cs9").to_string();
            let path = format!("{BASE}/namespaces/informers/catalogimages");
            assert_eq!(
                http.request("POST", &path, "application/json", &body)
                    .await
                    .0,
                201
            );
        }
    });
    // The classic reflector: LIST, then WATCH.
    let classic = run_informer(&server, "informers", 7, false);
    assert_eq!(classic["synced"], 7);
    assert!(classic["lists"].as_u64().unwrap() >= 1, "{classic}");
    assert_eq!(classic["watchLists"], 0, "{classic}");
    // WatchList: the initial state streamed by one watch, no LIST at all.
    let streamed = run_informer(&server, "informers", 7, true);
    assert_eq!(streamed["synced"], 7);
    assert_eq!(streamed["lists"], 0, "{streamed}");
    assert!(streamed["watchLists"].as_u64().unwrap() >= 1, "{streamed}");
}
