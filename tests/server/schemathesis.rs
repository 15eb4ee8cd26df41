//! Schemathesis (PyPI, installed by scripts/install-peers) generates requests from our own
//! OpenAPI v3 document, valid and invalid, for a bounded time: not one may get a 5xx.

use std::process::Command;

use serde_json::Value;

use super::common::*;

#[test]
fn no_generated_request_gets_a_server_error() {
    let server = Server::start();
    let (code, _, document) = runtime().block_on(async {
        let request = http::Request::get(format!("/openapi/v3{BASE}"))
            .body(Vec::new())
            .unwrap();
        server.http().send(request).await
    });
    assert_eq!(code, 200);
    // Watches are long-running by design (a generated `watch=true` waits for events until its
    // timeout); they have tests of their own. Everything else is generated.
    let mut document: Value = serde_json::from_slice(&document).unwrap();
    for path in document["paths"].as_object_mut().unwrap().values_mut() {
        for (_, operation) in path.as_object_mut().unwrap().iter_mut() {
            if let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            {
                parameters.retain(|p| p["name"] != "watch");
            }
            if let Some(parameters) = operation.as_array_mut() {
                parameters.retain(|p| p["name"] != "watch");
            }
        }
    }
    let schema = server.dir.path().join("openapi.json");
    std::fs::write(&schema, document.to_string()).unwrap();
    let url = format!("https://{}", server.address);
    let output = Command::new(venv_binary("schemathesis"))
        .current_dir(server.dir.path())
        .args(["run", schema.to_str().unwrap(), "--url", &url])
        .args(["--tls-verify", server.pki("ca.crt").to_str().unwrap()])
        .args(["--request-cert", server.pki("admin.crt").to_str().unwrap()])
        .args([
            "--request-cert-key",
            server.pki("admin.key").to_str().unwrap(),
        ])
        .args(["--checks", "not_a_server_error", "--max-time", "30"])
        .args(["--request-timeout", "10", "--seed", "1"])
        .output()
        .expect("schemathesis is installed by scripts/install-peers");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("generated"), "{stdout}");
    assert_eq!(server.logged("panicked"), 0);
}
