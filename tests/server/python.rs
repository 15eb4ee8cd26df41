//! The Python kubernetes client (PyPI `kubernetes`, installed by scripts/install-peers) against
//! the real server: list with paging, watch with resume. The assertions live in the script.

use std::process::Command;

use super::common::*;

#[test]
fn the_python_client_pages_and_resumes_watches() {
    let server = Server::start();
    let python = venv_binary("python");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/list_and_watch.py"
    );
    let stdout = succeed(Command::new(python).args([
        script,
        server.kubeconfig().to_str().unwrap(),
        "python",
    ]));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["pages"], 3);
    assert_eq!(summary["listed"], 25);
}
