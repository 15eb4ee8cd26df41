//! What no client can do to the server: grow its memory with a small request, exhaust its
//! descriptors or lock others out with idle connections, hold connections open forever, panic
//! it, or store entries under namespaces kube-apiserver refuses.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::*;

fn collection(namespace: &str) -> String {
    format!("{BASE}/namespaces/{namespace}/catalogimages")
}

/// The value of a metric in `/metrics`.
async fn metric(http: &Http, name: &str) -> String {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let (_, _, body) = http.send(request).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

async fn resident_mib(http: &Http) -> f64 {
    let bytes: f64 = metric(http, "catalog_process_resident_memory_bytes")
        .await
        .parse()
        .unwrap();
    bytes / (1 << 20) as f64
}

#[track_caller]
fn assert_status(got: &(u16, Value), code: u16, reason: &str) {
    assert_eq!(got.0, code, "{}", got.1);
    assert_eq!(got.1["kind"], "Status", "{}", got.1);
    assert_eq!(got.1["reason"], reason, "{}", got.1);
}

/// The bound on the server's resident memory after every bomb below (a fresh, almost empty
/// server starts at about 30 MiB).
const BOMB_RSS_BOUND_MIB: f64 = 256.0;

#[test]
fn patch_bombs_are_refused_within_their_limits() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        let body = image_json("bombs", "target", "cs9").to_string();
        let created = http.request("POST", &collection("bombs"), "application/json", &body).await;
        assert_eq!(created.0, 201, "{}", created.1);
        let path = format!("{}/target", collection("bombs"));

        // Each copy appends the array to itself: 2^40 elements unbounded.
        let mut doubling = vec![json!({"op": "add", "path": "/spec/metadata/x", "value": [1]})];
        doubling.extend((0..40).map(|_| json!({"op": "copy", "from": "/spec/metadata/x", "path": "/spec/metadata/x/-"})));
        let refused = http.request("PATCH", &path, "application/json-patch+json", &Value::Array(doubling).to_string()).await;
        assert_status(&refused, 422, "Invalid");
        assert!(refused.1["message"].as_str().unwrap().contains("copy"), "{}", refused.1);

        let many: Vec<Value> = (0..10_001).map(|_| json!({"op": "test", "path": "/kind", "value": "CatalogImage"})).collect();
        let refused = http.request("PATCH", &path, "application/json-patch+json", &Value::Array(many).to_string()).await;
        assert_status(&refused, 413, "RequestEntityTooLarge");

        // Merge patches that each double the object: refused once it would pass 3 MiB.
        let mut size = 64 << 10;
        let mut accepted = 0;
        let refused = loop {
            let patch = json!({"metadata": {"annotations": {format!("a{accepted}"): "x".repeat(size)}}});
            let answer = http.request("PATCH", &path, "application/merge-patch+json", &patch.to_string()).await;
            if answer.0 != 200 {
                break answer;
            }
            accepted += 1;
            size *= 2;
        };
        assert_status(&refused, 413, "RequestEntityTooLarge");
        assert_eq!(accepted, 5, "64 KiB + 128 KiB + ... + 1 MiB is accepted; 2 MiB more would pass 3 MiB");

        // A YAML alias bomb, through server-side apply and through a YAML create.
        let mut yaml = String::from("apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata: {name: target}\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
        for i in 1..10 {
            let p = i - 1;
            yaml.push_str(&format!("x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"));
        }
        let apply = format!("{path}?fieldManager=bomber");
        assert_status(&http.request("PATCH", &apply, "application/apply-patch+yaml", &yaml).await, 400, "BadRequest");
        assert_status(&http.request("POST", &collection("bombs"), "application/yaml", &yaml).await, 400, "BadRequest");

        let resident = resident_mib(&http).await;
        assert!(resident < BOMB_RSS_BOUND_MIB, "resident memory {resident:.0} MiB after the bombs");
        // The entry is as the accepted patches left it.
        let (code, entry) = http.request("GET", &path, "", "").await;
        assert_eq!(code, 200);
        assert_eq!(entry["metadata"]["annotations"].as_object().unwrap().len(), 5);
        assert!(entry["spec"]["metadata"].get("x").is_none());
    });
}

/// Connects without a TLS handshake and sends nothing: the cheapest idle connection.
async fn idle_flood(server: &Server, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut flood = Vec::with_capacity(count);
    for _ in 0..count {
        flood.push(
            tokio::net::TcpStream::connect(&server.address)
                .await
                .unwrap(),
        );
    }
    flood
}

/// `/readyz` over a new connection, as the kubelet probes it.
async fn ready_over_a_new_connection(server: &Server) {
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tls = tls(server, b"http/1.1", false).await;
        tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        answer
    })
    .await
    .expect("/readyz answers within 10 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_connection_flood_neither_stops_readyz_nor_spins() {
    // 256 descriptors: the cap is 192 connections.
    let server = Server::start_limited(256, &[]);
    runtime().block_on(async {
        let _flood = idle_flood(&server, 400).await;
        for _ in 0..5 {
            ready_over_a_new_connection(&server).await;
        }
        // Idle TLS connections (handshake done, no request) make room just the same.
        let mut handshaken = Vec::new();
        for _ in 0..200 {
            handshaken.push(tls(&server, b"http/1.1", true).await);
        }
        ready_over_a_new_connection(&server).await;
        let failed = server.logged("accept failed");
        assert_eq!(failed, 0, "the cap keeps descriptors for accept");
    });
}

#[test]
fn accept_failures_back_off_and_are_logged_at_most_once_a_second() {
    // A cap far above the descriptor limit: accept itself fails with EMFILE.
    let server = Server::start_limited(128, &["--max-connections", "100000"]);
    runtime().block_on(async {
        let flood = idle_flood(&server, 200).await;
        server.wait_for_log("accept failed", 0);
        let (started, before) = (Instant::now(), server.logged("accept failed"));
        // A window to count in, not a synchronisation: the loop must not log (or spin) faster.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lines = server.logged("accept failed") - before;
        let allowed = started.elapsed().as_secs() as usize + 1;
        assert!(
            lines <= allowed,
            "{lines} accept failures logged in {:?}",
            started.elapsed()
        );
        drop(flood);
        // The descriptors come back (the idle connections time out or the flood goes): serving resumes.
        ready_over_a_new_connection(&server).await;
    });
}

/// Waits for the server to close `stream`; how long that took from `since`.
async fn closed_after(stream: &mut (impl AsyncReadExt + Unpin), since: Instant) -> Duration {
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection is still open after 20 s"),
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_after_their_timeouts() {
    let server = Server::start_with(&[
        "--request-header-timeout",
        "2s",
        "--request-body-timeout",
        "2s",
        "--idle-connection-timeout",
        "3s",
    ]);
    runtime().block_on(async {
        // Slowloris: a header line every 500 ms, forever.
        let mut slow = tls(&server, b"http/1.1", true).await;
        let started = Instant::now();
        slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(slow);
        let trickle = tokio::spawn(async move {
            while writer.write_all(b"X-Slow: 1\r\n").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let took = closed_after(&mut reader, started).await;
        trickle.abort();
        assert!(took < Duration::from_secs(6), "slowloris held {took:?}");

        // A body that never arrives: 504, then the connection goes.
        let mut stalled = tls(&server, b"http/1.1", true).await;
        let started = Instant::now();
        let head = format!("POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"a\":1", collection("slow"));
        stalled.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(answer.contains("\"reason\":\"Timeout\""), "{answer}");
        let took = closed_after(&mut stalled, started).await;
        assert!(took < Duration::from_secs(6), "stalled body held {took:?}");

        // Idle HTTP/1.1 and HTTP/2 connections go after the idle timeout.
        let mut idle = tls(&server, b"http/1.1", true).await;
        let took = closed_after(&mut idle, Instant::now()).await;
        assert!(took < Duration::from_secs(6), "idle HTTP/1.1 held {took:?}");
        let started = Instant::now();
        let (mut sender, connection) = h2(&server, true).await;
        let ready = send_h2(&mut sender, http::Request::get("/readyz").body(Bytes::new()).unwrap()).await;
        assert_eq!(ready.0, 200);
        let busy_until = started.elapsed();
        connection.await.unwrap().expect("a clean GOAWAY");
        let took = started.elapsed() - busy_until;
        assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "idle HTTP/2 held {took:?}");
    });
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection over TLS, with the admin certificate or none; the connection's task.
async fn h2(
    server: &Server,
    admin: bool,
) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tls = tls(server, b"h2", admin).await;
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(connection))
}

async fn send_h2(sender: &mut H2Sender, request: http::Request<Bytes>) -> (u16, Value) {
    sender.ready().await.unwrap();
    let response = sender
        .send_request(request.map(Full::new))
        .await
        .unwrap_or_else(|e| panic!("the answer was a stream error, not a Status: {e:?}"));
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn over_http2_early_refusals_arrive_as_their_status() {
    let server = Server::start();
    runtime().block_on(async {
        let post = |body: Vec<u8>| {
            http::Request::post(collection("h2"))
                .header("content-type", "application/json")
                .body(Bytes::from(body))
                .unwrap()
        };
        let (mut admin, _connection) = h2(&server, true).await;
        for _ in 0..5 {
            let refused = send_h2(&mut admin, post(vec![b' '; 4 << 20])).await;
            assert_status(&refused, 413, "RequestEntityTooLarge");
        }
        let head = http::Request::head("/readyz").body(Bytes::new()).unwrap();
        assert_eq!(send_h2(&mut admin, head).await.0, 200);
        let head = http::Request::head(collection("h2"))
            .body(Bytes::new())
            .unwrap();
        let (code, _) = send_h2(&mut admin, head).await;
        assert!(code >= 200, "HEAD on a collection is answered");

        let (mut anonymous, _connection) = h2(&server, false).await;
        let body = image_json("h2", "x", "cs9").to_string().into_bytes();
        for _ in 0..50 {
            assert_status(
                &send_h2(&mut anonymous, post(body.clone())).await,
                401,
                "Unauthorized",
            );
        }
    });
}

#[test]
fn bad_requests_are_a_status_never_a_panic_or_a_stored_entry() {
    let server = Server::start_with(&["--fault-panic-path", "/debug/fault"]);
    runtime().block_on(async {
        let http = server.http();
        // Non-ASCII in a field selector.
        let selector = format!("{}?fieldSelector=metadata.name%3D%C3%A4", collection("a"));
        assert_status(&http.request("GET", &selector, "", "").await, 400, "BadRequest");
        assert_status(&http.request("GET", &format!("{BASE}/catalogimages?labelSelector=%C3%A4"), "", "").await, 400, "BadRequest");

        // A panic is that request's 500, logged once; the server, and the connection, go on.
        let panicked = http.request("GET", "/debug/fault", "", "").await;
        assert_status(&panicked, 500, "InternalError");
        server.wait_for_log("panicked", 0);
        assert_eq!(server.logged("panicked"), 1);
        assert_eq!(http.request("GET", &collection("a"), "", "").await.0, 200);

        // Namespaces kube-apiserver refuses, escaped or not.
        let long = "a".repeat(300);
        for namespace in ["UPPER", "a_b", long.as_str(), "..", "-x", "%2e%2e", "a%2Fb"] {
            let body = image_json("", "one", "cs9");
            let mut body = body;
            body["metadata"].as_object_mut().unwrap().remove("namespace");
            let refused = http.request("POST", &collection(namespace), "application/json", &body.to_string()).await;
            assert_status(&refused, 422, "Invalid");
            assert_eq!(refused.1["details"]["causes"][0]["field"], "metadata.namespace", "{namespace}: {}", refused.1);
        }
        let (_, all) = http.request("GET", &format!("{BASE}/catalogimages"), "", "").await;
        assert_eq!(all["items"], json!([]));

        // A watch from a revision far in the future: 504, as a list from there (asked over a
        // plain connection: kube-rs' client retries a 504 on its own).
        let mut plain = admin_tls(&server).await;
        let future = format!("GET {}?watch=1&resourceVersion=18446744073709551615 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", collection("a"));
        plain.write_all(future.as_bytes()).await.unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(answer.contains(r#""message":"Too large resource version: 18446744073709551615"#), "{answer}");
        assert!(answer.contains(r#""reason":"Timeout""#), "{answer}");

        // A refused WebSocket handshake leaves no watch behind.
        let before = metric(&http, "catalog_watches").await;
        let upgrade = http::Request::get(format!("{}?watch=1", collection("a")))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "12")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Vec::new())
            .unwrap();
        assert_eq!(http.send(upgrade).await.0, 400);
        assert_eq!(metric(&http, "catalog_watches").await, before);
    });
}
