//! Several replicas sharing one PostgreSQL (`--store`): what one acknowledges the others serve
//! at once, a list paged on one continues on another, a watch on one sees the others' writes,
//! and of two updates raced on two replicas from the same resourceVersion exactly one wins.

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, WatchEvent, WatchParams};
use serde_json::{Value, json};

use super::common::*;
use super::postgres::Postgres;

fn replica(postgres: &Postgres) -> Server {
    Server::start_with(&["--store", &postgres.config()])
}

fn resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("catalog.automotive.io", "v1alpha1", "CatalogImage"),
        "catalogimages",
    )
}

async fn put(http: &Http, object: &Value) -> (u16, Value) {
    let name = object["metadata"]["name"].as_str().unwrap();
    let path = format!("{BASE}/namespaces/shared/catalogimages/{name}");
    http.request("PUT", &path, "application/json", &object.to_string())
        .await
}

#[test]
fn replicas_on_one_postgres_serve_each_others_writes() {
    let postgres = Postgres::start();
    let (a, b) = (replica(&postgres), replica(&postgres));
    runtime().block_on(async {
        let (on_a, on_b) = (a.http(), b.http());
        let watched: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&b), "shared", &resource());
        let mut events = watched
            .watch(&WatchParams::default().timeout(30), "0")
            .await
            .unwrap()
            .boxed();

        // Acknowledged on A, served by B at once.
        let created = on_a
            .request(
                "POST",
                &format!("{BASE}/namespaces/shared/catalogimages"),
                "application/json",
                &image_json("shared", "first", "cs9").to_string(),
            )
            .await;
        assert_eq!(created.0, 201, "{}", created.1);
        let revision = created.1["metadata"]["resourceVersion"].clone();
        let (code, read) = on_b
            .request(
                "GET",
                &format!("{BASE}/namespaces/shared/catalogimages/first"),
                "",
                "",
            )
            .await;
        assert_eq!(
            (code, &read["metadata"]["resourceVersion"]),
            (200, &revision)
        );
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(object) => assert_eq!(object.metadata.name.as_deref(), Some("first")),
            other => panic!("{other:?}"),
        }

        // Of two updates from the same resourceVersion on two replicas, one wins.
        let mut changed = read.clone();
        changed["spec"]["tags"] = json!(["a"]);
        let mut other = read.clone();
        other["spec"]["tags"] = json!(["b"]);
        let (first, second) = tokio::join!(put(&on_a, &changed), put(&on_b, &other));
        let mut codes = [first.0, second.0];
        codes.sort();
        assert_eq!(codes, [200, 409], "{} {}", first.1, second.1);

        // A list paged on B continues on A, at B's snapshot.
        for i in 0..4 {
            let object = image_json("shared", &format!("more-{i}"), "cs9");
            let path = format!("{BASE}/namespaces/shared/catalogimages");
            let (code, _) = on_b
                .request("POST", &path, "application/json", &object.to_string())
                .await;
            assert_eq!(code, 201);
        }
        let (_, page) = on_b
            .request(
                "GET",
                &format!("{BASE}/namespaces/shared/catalogimages?limit=2"),
                "",
                "",
            )
            .await;
        let token = page["metadata"]["continue"].as_str().unwrap().to_string();
        assert_eq!(page["metadata"]["remainingItemCount"], 3);
        let (code, rest) = on_a
            .request(
                "GET",
                &format!("{BASE}/namespaces/shared/catalogimages?limit=10&continue={token}"),
                "",
                "",
            )
            .await;
        assert_eq!(code, 200, "{rest}");
        let names: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(rest["items"].as_array().unwrap())
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["first", "more-0", "more-1", "more-2", "more-3"]);
        assert_eq!(
            rest["metadata"]["resourceVersion"],
            page["metadata"]["resourceVersion"]
        );
    });
}

/// The names listed by a replica, after it has every acknowledged write.
async fn names(http: &Http) -> Vec<String> {
    let (code, list) = http
        .request(
            "GET",
            &format!("{BASE}/namespaces/shared/catalogimages"),
            "",
            "",
        )
        .await;
    assert_eq!(code, 200, "{list}");
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_replica_killed_mid_write_loses_nothing_acknowledged_and_a_wiped_one_rebuilds() {
    let postgres = Postgres::start();
    let flags = ["--store", &postgres.config()];
    let (mut a, mut b) = (Server::start_with(&flags), Server::start_with(&flags));
    let rt = runtime();
    let acknowledged = rt.block_on(async {
        let on_a = a.http();
        let path = format!("{BASE}/namespaces/shared/catalogimages");
        let mut acknowledged = Vec::new();
        let mut writes = futures_util::stream::iter(0..400)
            .map(|i| {
                let (on_a, path) = (&on_a, &path);
                async move {
                    let object = image_json("shared", &format!("w-{i:03}"), "cs9");
                    let answer = on_a.try_request("POST", path, &object.to_string()).await;
                    (i, answer)
                }
            })
            .buffer_unordered(8);
        let mut killed = false;
        while let Some((i, answer)) = writes.next().await {
            if let Some(201) = answer {
                acknowledged.push(format!("w-{i:03}"));
            }
            if acknowledged.len() == 100 && !killed {
                a.kill();
                killed = true;
            }
        }
        acknowledged
    });
    assert!(acknowledged.len() >= 100);
    a.restart(&flags);
    rt.block_on(async {
        let (on_a, on_b) = (a.http(), b.http());
        let (after_restart, on_other) = (names(&on_a).await, names(&on_b).await);
        for name in &acknowledged {
            assert!(
                after_restart.contains(name),
                "{name} lost on the restarted replica"
            );
        }
        assert_eq!(after_restart, on_other, "both replicas serve the same");
    });
    // A replica whose local copy is gone rebuilds it from PostgreSQL.
    b.stop();
    std::fs::remove_dir_all(b.dir.path().join("store")).unwrap();
    b.restart(&flags);
    rt.block_on(async {
        let (on_a, on_b) = (a.http(), b.http());
        assert_eq!(names(&on_b).await, names(&on_a).await);
    });
}

/// A create sent once over a connection of its own, so that no client retry (kube-rs retries
/// 503s) hides the server's own answer; its status code.
async fn post_once(server: &Server, name: &str) -> u16 {
    let body = image_json("shared", name, "cs9").to_string();
    let io = hyper_util::rt::TokioIo::new(admin_tls(server).await);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("{BASE}/namespaces/shared/catalogimages"))
        .header("host", "catalog")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    sender
        .send_request(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn while_postgres_is_down_writes_fail_fast_and_reads_go_on_then_everything_resumes() {
    let mut postgres = Postgres::start();
    let flags = ["--store", &postgres.config()];
    let (a, b) = (Server::start_with(&flags), Server::start_with(&flags));
    let rt = runtime();
    let mut events = rt.block_on(async {
        assert_eq!(post_once(&a, "before").await, 201);
        let watched: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&b), "shared", &resource());
        watched
            .watch(&WatchParams::default().timeout(60), "0")
            .await
            .unwrap()
            .boxed()
    });
    postgres.crash();
    rt.block_on(async {
        let started = std::time::Instant::now();
        assert_eq!(post_once(&a, "during").await, 503);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "fails fast"
        );
        assert_eq!(
            names(&b.http()).await,
            ["before"],
            "reads go on from the local copy"
        );
    });
    postgres.restart();
    rt.block_on(async {
        assert_eq!(post_once(&a, "after").await, 201);
        assert_eq!(names(&b.http()).await, ["after", "before"]);
        // The watch opened before the outage goes on, without a gap.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let WatchEvent::Added(object) = events.try_next().await.unwrap().unwrap() {
                seen.push(object.metadata.name.unwrap());
            }
        }
        assert_eq!(seen, ["before", "after"]);
    });
}

#[test]
fn a_client_go_informer_and_a_kube_rs_reflector_on_different_replicas_end_the_same() {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let postgres = Postgres::start();
    let flags = ["--store", &postgres.config()];
    let replicas = [
        Server::start_with(&flags),
        Server::start_with(&flags),
        Server::start_with(&flags),
    ];
    let program = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers/bin/informer");
    let informer = std::process::Command::new(program)
        .args([
            replicas[2].kubeconfig().to_str().unwrap(),
            "shared",
            "mirror",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = runtime();
    let reflected = rt.block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&replicas[1]), "shared", &resource());
        let writer = reflector::store::Writer::new(resource());
        let reader = writer.as_reader();
        let stream = reflector(writer, watcher(api, watcher::Config::default()))
            .applied_objects()
            .boxed();
        let follow = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(object) = stream.try_next().await.unwrap() {
                if object.metadata.name.as_deref() == Some("sentinel") {
                    return;
                }
            }
        });
        // Creates, updates and deletes spread over the three replicas.
        let path = format!("{BASE}/namespaces/shared/catalogimages");
        for i in 0..30 {
            let on = replicas[i % 3].http();
            let body = image_json("shared", &format!("e-{i:02}"), "cs9").to_string();
            assert_eq!(
                on.request("POST", &path, "application/json", &body).await.0,
                201
            );
        }
        for i in (0..30).step_by(3) {
            let on = replicas[(i + 1) % 3].http();
            let patch = json!({"spec": {"tags": ["patched"]}}).to_string();
            let object = format!("{path}/e-{i:02}");
            let (code, _) = on
                .request("PATCH", &object, "application/merge-patch+json", &patch)
                .await;
            assert_eq!(code, 200);
        }
        for i in (1..30).step_by(5) {
            let on = replicas[(i + 2) % 3].http();
            let (code, _) = on
                .request("DELETE", &format!("{path}/e-{i:02}"), "", "")
                .await;
            assert_eq!(code, 200);
        }
        let sentinel = image_json("shared", "sentinel", "cs9").to_string();
        let on_a = replicas[0].http();
        assert_eq!(
            on_a.request("POST", &path, "application/json", &sentinel)
                .await
                .0,
            201
        );
        follow.await.unwrap();
        let versions: std::collections::BTreeMap<String, String> = reader
            .state()
            .iter()
            .map(|o| {
                let meta = &o.metadata;
                (
                    meta.name.clone().unwrap(),
                    meta.resource_version.clone().unwrap(),
                )
            })
            .collect();
        versions
    });
    let output = informer.wait_with_output().unwrap();
    assert!(output.status.success(), "the informer failed");
    let informed: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(informed.len(), 30 - 6 + 1);
    assert_eq!(
        informed, reflected,
        "client-go on C and kube-rs on B hold the same"
    );
    let listed: std::collections::BTreeMap<String, String> = rt.block_on(async {
        let (_, list) = replicas[0]
            .http()
            .request(
                "GET",
                &format!("{BASE}/namespaces/shared/catalogimages"),
                "",
                "",
            )
            .await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let meta = &i["metadata"];
                (
                    meta["name"].as_str().unwrap().into(),
                    meta["resourceVersion"].as_str().unwrap().into(),
                )
            })
            .collect()
    });
    assert_eq!(listed, informed, "and a list on A");
}

#[test]
fn postgres_crashing_under_load_loses_no_acknowledged_write() {
    let mut postgres = Postgres::start();
    let flags = ["--store", &postgres.config()];
    let (a, b) = (Server::start_with(&flags), Server::start_with(&flags));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answers, answered) = std::sync::mpsc::channel::<(String, u16)>();
    let acknowledged = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            runtime().block_on(async {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("load-{i:04}");
                    i += 1;
                    let code = post_once(&a, &name).await;
                    answers.send((name, code)).unwrap();
                }
            })
        });
        let mut acknowledged = Vec::new();
        let mut wait_for = |wanted: &dyn Fn(u16) -> bool, times: usize| {
            let mut seen = 0;
            while seen < times {
                let (name, code) = answered.recv().unwrap();
                if code == 201 {
                    acknowledged.push(name);
                }
                seen += usize::from(wanted(code));
            }
        };
        wait_for(&|code| code == 201, 20);
        postgres.crash();
        wait_for(&|code| code == 503, 3);
        postgres.restart();
        wait_for(&|code| code == 201, 20);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        let late = answered.try_iter().filter(|(_, code)| *code == 201);
        acknowledged.extend(late.map(|(name, _)| name));
        acknowledged
    });
    assert!(acknowledged.len() >= 40);
    runtime().block_on(async {
        let served = names(&b.http()).await;
        for name in &acknowledged {
            assert!(served.contains(name), "{name} acknowledged, then lost");
        }
        assert_eq!(served, names(&a.http()).await);
    });
}

#[test]
fn a_replica_ahead_of_a_restored_database_rebuilds_its_copy() {
    let postgres = Postgres::start();
    let flags = ["--store", &postgres.config()];
    let mut a = Server::start_with(&flags);
    let rt = runtime();
    rt.block_on(async {
        for name in ["kept", "gone-1", "gone-2"] {
            assert_eq!(post_once(&a, name).await, 201);
        }
    });
    a.stop();
    // The database goes back to a backup taken after the first create.
    postgres.psql(
        "DELETE FROM catalog_log WHERE revision > 1; DELETE FROM catalog_objects WHERE revision > 1;
         UPDATE catalog_meta SET revision = 1",
    );
    a.restart(&flags);
    rt.block_on(async {
        assert_eq!(names(&a.http()).await, ["kept"]);
        assert_eq!(post_once(&a, "new").await, 201);
        assert_eq!(names(&a.http()).await, ["kept", "new"]);
    });
}

#[test]
fn a_replica_reaches_postgres_over_verified_tls_with_store_ca() {
    let ca = super::pki::Ca::new("postgres-ca");
    let issued = ca.server("postgres");
    // A PostgreSQL that refuses connections without TLS.
    let postgres = Postgres::start_with_tls(&issued.cert, &issued.key);
    let trust = tempfile::tempdir().unwrap();
    let ca_file = trust.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = Server::start_with(&[
        "--store",
        &postgres.config(),
        "--store-ca",
        ca_file.to_str().unwrap(),
    ]);
    runtime().block_on(async {
        let http = server.http();
        let created = http
            .request(
                "POST",
                &format!("{BASE}/namespaces/shared/catalogimages"),
                "application/json",
                &image_json("shared", "over-tls", "cs9").to_string(),
            )
            .await;
        assert_eq!(created.0, 201, "{}", created.1);
        let path = format!("{BASE}/namespaces/shared/catalogimages/over-tls");
        assert_eq!(http.request("GET", &path, "", "").await.0, 200);
    });
}

/// What one replica acknowledged is the base of the next write on another at once, as the
/// aggregator sends a client's requests to any of them: a patch, an update with the returned
/// resourceVersion, a status write testing what the update wrote and a delete with the status
/// write's resourceVersion as precondition, each on the replica the last one was not on.
/// Writes start from the replica's copy without catching it up: each of these fails if a
/// refusal computed from a copy that lacks the last write is answered.
#[test]
fn a_write_acknowledged_on_one_replica_is_the_base_of_the_next_on_another() {
    let postgres = Postgres::start();
    let (a, b) = (replica(&postgres), replica(&postgres));
    runtime().block_on(async {
        let (on_a, on_b) = (a.http(), b.http());
        for i in 0..20 {
            let name = format!("hop-{i}");
            let path = format!("{BASE}/namespaces/shared/catalogimages/{name}");
            let object = image_json("shared", &name, "cs9").to_string();
            let collection = format!("{BASE}/namespaces/shared/catalogimages");
            let (code, created) = on_a
                .request("POST", &collection, "application/json", &object)
                .await;
            assert_eq!(code, 201, "{created}");
            let patch = json!({"spec": {"tags": ["patched"]}}).to_string();
            let (code, patched) = on_b
                .request("PATCH", &path, "application/merge-patch+json", &patch)
                .await;
            assert_eq!(
                code, 200,
                "a patch on B of {name}, just created on A: {patched}"
            );
            let mut updated = patched.clone();
            updated["spec"]["tags"] = json!(["updated"]);
            let (code, updated) = put(&on_a, &updated).await;
            assert_eq!(
                code, 200,
                "an update on A with B's resourceVersion: {updated}"
            );
            // A test of what A just wrote: refused only if B tested its copy before it had it.
            let status = json!([
                {"op": "test", "path": "/spec/tags", "value": ["updated"]},
                {"op": "add", "path": "/status", "value": {"phase": "Failed"}},
            ])
            .to_string();
            let status_path = format!("{path}/status");
            let (code, body) = on_b
                .request(
                    "PATCH",
                    &status_path,
                    "application/json-patch+json",
                    &status,
                )
                .await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["spec"]["tags"], json!(["updated"]));
            let preconditions = json!({"preconditions": {
                "resourceVersion": body["metadata"]["resourceVersion"],
            }});
            let (code, body) = on_a
                .request(
                    "DELETE",
                    &path,
                    "application/json",
                    &preconditions.to_string(),
                )
                .await;
            assert_eq!(code, 200, "a delete on A with B's resourceVersion: {body}");
        }
    });
}
