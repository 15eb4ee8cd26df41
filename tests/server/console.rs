//! The OpenShift console plugin: its files served on the plugin listener with their types and
//! caching, and its pages driven in Chromium against this server (console-plugin/harness).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::*;

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console-plugin")
}

/// A server with the plugin listener on, and that listener's address.
fn server_with_plugin() -> (Server, String) {
    let dist = plugin_dir().join("dist");
    assert!(
        dist.join("plugin-manifest.json").exists(),
        "the plugin is built by the test command (scripts/test: npm run build in console-plugin)"
    );
    let address = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(&[
        "--console-plugin-bind",
        &address,
        "--console-plugin-dir",
        dist.to_str().unwrap(),
    ]);
    server.wait_for_log("serving the console plugin", 0);
    (server, address)
}

/// A client of the plugin listener, which has the API's serving certificate by default: the
/// kubeconfig's CA trusts it.
fn plugin_client(server: &Server, address: &str) -> kube::Client {
    let mut config = kube_config(server);
    config.cluster_url = format!("https://{address}").parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn fetch(client: &kube::Client, method: &str, path: &str) -> (u16, http::HeaderMap, Vec<u8>) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    let (code, headers) = (response.status().as_u16(), response.headers().clone());
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, headers, body.to_vec())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

#[test]
fn the_plugin_listener_serves_the_manifest_and_assets_with_their_types() {
    let (server, address) = server_with_plugin();
    runtime().block_on(async {
        let client = plugin_client(&server, &address);
        let (code, headers, body) = fetch(&client, "GET", "/plugin-manifest.json").await;
        assert_eq!(code, 200);
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        // Not hashed: revalidated, so a new version is seen at once.
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(manifest["name"], "catalog-console-plugin");
        let types: Vec<&str> = manifest["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        for wanted in [
            "console.model-metadata",
            "console.navigation/resource-ns",
            "console.page/resource/list",
            "console.page/resource/details",
        ] {
            assert!(types.contains(&wanted), "{wanted} missing from {types:?}");
        }

        let entry = manifest["loadScripts"][0].as_str().unwrap();
        let (code, headers, body) = fetch(&client, "GET", &format!("/{entry}")).await;
        assert_eq!(code, 200);
        assert_eq!(
            header(&headers, "content-type"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(
            header(&headers, "cache-control"),
            "public, max-age=31536000, immutable",
            "{entry} carries a content hash"
        );
        assert!(!body.is_empty());
        let (code, headers, _) = fetch(
            &client,
            "GET",
            "/locales/en/plugin__catalog-console-plugin.json",
        )
        .await;
        assert_eq!(
            (code, header(&headers, "content-type")),
            (200, "application/json")
        );

        let (code, headers, body) = fetch(&client, "HEAD", "/plugin-manifest.json").await;
        assert_eq!(code, 200);
        assert!(body.is_empty());
        assert!(header(&headers, "content-length").parse::<usize>().unwrap() > 0);
        let (code, headers, _) = fetch(&client, "GET", "/../Cargo.toml").await;
        assert_eq!(code, 404);
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        let (code, headers, _) = fetch(&client, "POST", "/plugin-manifest.json").await;
        assert_eq!((code, header(&headers, "allow")), (405, "GET, HEAD"));
    });
}

#[test]
fn the_plugin_pages_show_the_servers_entries_live_in_chromium() {
    let (server, _) = server_with_plugin();
    let screenshots = tempfile::tempdir().unwrap();
    let output = Command::new("node")
        .arg(plugin_dir().join("harness/browser-test.mjs"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .arg("--kubectl")
        .arg(kubectl_binary())
        .arg("--screenshots")
        .arg(screenshots.path())
        .output()
        .expect("node runs the browser test");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for shot in ["list.png", "filtered-live.png", "error.png", "details.png"] {
        let bytes = std::fs::read(screenshots.path().join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    // Kept for whoever wants to look: target/console-plugin-screenshots.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-plugin-screenshots");
    std::fs::create_dir_all(&kept).unwrap();
    for entry in std::fs::read_dir(screenshots.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), kept.join(entry.file_name())).unwrap();
    }
}
