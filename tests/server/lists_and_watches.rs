//! List and watch semantics over raw HTTPS: snapshots, continue tokens, resourceVersion rules,
//! watch resumption, selectors on events, bookmarks, timeouts, Tables, discovery.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::*;

async fn create(http: &Http, namespace: &str, name: &str, distro: &str) -> Value {
    let (code, body) = http
        .request(
            "POST",
            &format!("{BASE}/namespaces/{namespace}/catalogimages"),
            "application/json",
            &image_json(namespace, name, distro).to_string(),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body
}

/// Reads a watch response body to its end, as lines of JSON.
async fn watch_events(http: &Http, query: &str) -> Vec<Value> {
    let request = http::Request::builder()
        .uri(format!("{BASE}/catalogimages?watch=true&{query}"))
        .body(Vec::new())
        .unwrap();
    let (code, _, body) = http.send(request).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| {
            // `type` first, as kube-apiserver writes events: some clients read it off the start.
            assert!(l.starts_with(r#"{"type":""#), "{l}");
            serde_json::from_str(l).unwrap()
        })
        .collect()
}

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn continue_tokens_read_one_snapshot_and_expire_with_it() {
    let server = Server::start_with(&["--history-retention", "1s"]);
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        for i in 0..6 {
            create(&http, "snap", &format!("i{i}"), "cs9").await;
        }
        let (_, first) = http
            .request("GET", &format!("{BASE}/catalogimages?limit=2"), "", "")
            .await;
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        let at = first["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        // Writes after the first page do not show in the rest of it.
        http.request(
            "DELETE",
            &format!("{BASE}/namespaces/snap/catalogimages/i3"),
            "",
            "",
        )
        .await;
        create(&http, "snap", "i9", "cs9").await;
        let (_, second) = http
            .request(
                "GET",
                &format!("{BASE}/catalogimages?limit=10&continue={token}"),
                "",
                "",
            )
            .await;
        let names: Vec<&str> = second["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["i2", "i3", "i4", "i5"]);
        assert_eq!(second["metadata"]["resourceVersion"], at.as_str());
        // Exact reads at that revision agree, and NotOlderThan reads the newest.
        let (_, exact) = http
            .request(
                "GET",
                &format!("{BASE}/catalogimages?resourceVersion={at}&resourceVersionMatch=Exact"),
                "",
                "",
            )
            .await;
        assert_eq!(exact["items"].as_array().unwrap().len(), 6);
        let (_, newest) = http
            .request(
                "GET",
                &format!(
                    "{BASE}/catalogimages?resourceVersion={at}&resourceVersionMatch=NotOlderThan"
                ),
                "",
                "",
            )
            .await;
        assert_eq!(newest["items"].as_array().unwrap().len(), 6);
        assert_ne!(newest["metadata"]["resourceVersion"], at.as_str());
    });
    // A revision not written yet is 504, as kube-apiserver answers it (kube-rs retries 504s,
    // so kubectl asks).
    let error = server
        .kubectl(&[
            "get",
            "--raw",
            &format!("{BASE}/catalogimages?resourceVersion=99999&resourceVersionMatch=Exact"),
        ])
        .failure();
    assert!(
        error.contains("Too large resource version: 99999"),
        "{error}"
    );
    // Once the history of that snapshot is compacted, the token is expired: 410 with a token
    // that continues inconsistently. Compaction runs every few seconds; wait for its effect.
    rt.block_on(async {
        let http = server.http();
        let (_, first) = http
            .request("GET", &format!("{BASE}/catalogimages?limit=2"), "", "")
            .await;
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        create(&http, "snap", "later", "cs9").await;
        let started = Instant::now();
        loop {
            let (code, body) = http
                .request(
                    "GET",
                    &format!("{BASE}/catalogimages?limit=2&continue={token}"),
                    "",
                    "",
                )
                .await;
            if code == 410 {
                assert_eq!(body["reason"], "Expired");
                let inconsistent = body["metadata"]["continue"].as_str().unwrap();
                let (code, rest) = http
                    .request(
                        "GET",
                        &format!("{BASE}/catalogimages?limit=100&continue={inconsistent}"),
                        "",
                        "",
                    )
                    .await;
                assert_eq!(code, 200, "{rest}");
                assert!(
                    rest["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i["metadata"]["name"] == "later")
                );
                break;
            }
            assert_eq!(code, 200);
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "history was never compacted"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[test]
fn paged_lists_without_selectors_say_how_many_items_remain() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        for (namespace, count) in [("left-a", 5), ("left-b", 2)] {
            for i in 0..count {
                create(&http, namespace, &format!("i{i}"), "cs9").await;
            }
        }
        let get = |query: String| {
            let http = &http;
            async move {
                let (code, body) = http
                    .request("GET", &format!("{BASE}/{query}"), "", "")
                    .await;
                assert_eq!(code, 200, "{body}");
                body
            }
        };
        let remaining = |page: &Value| page["metadata"]["remainingItemCount"].as_u64();
        let first = get("catalogimages?limit=3".into()).await;
        assert_eq!(remaining(&first), Some(4));
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        // The count belongs to the list's snapshot, like its items.
        http.request(
            "DELETE",
            &format!("{BASE}/namespaces/left-b/catalogimages/i1"),
            "",
            "",
        )
        .await;
        let second = get(format!("catalogimages?limit=3&continue={token}")).await;
        assert_eq!(remaining(&second), Some(1));
        let token = second["metadata"]["continue"].as_str().unwrap().to_string();
        let last = get(format!("catalogimages?limit=3&continue={token}")).await;
        assert_eq!(last["items"].as_array().unwrap().len(), 1);
        assert_eq!(last["metadata"].get("remainingItemCount"), None);
        assert_eq!(last["metadata"].get("continue"), None);

        let namespaced = get("namespaces/left-a/catalogimages?limit=2".into()).await;
        assert_eq!(remaining(&namespaced), Some(3));
        let now = get("catalogimages?limit=2".into()).await;
        assert_eq!(remaining(&now), Some(4), "six live after the delete");
        // With a selector the count is not known without reading, and kube-apiserver omits it.
        for selector in [
            "labelSelector=distro%3Dcs9",
            "fieldSelector=metadata.namespace%3Dleft-a",
        ] {
            let page = get(format!("catalogimages?limit=2&{selector}")).await;
            assert!(page["metadata"]["continue"].is_string(), "{page}");
            assert_eq!(remaining(&page), None, "{selector}");
        }
        let request = http::Request::builder()
            .uri(format!("{BASE}/catalogimages?limit=2"))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
        let (_, _, body) = http.send(request).await;
        let table: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(table["kind"], "Table");
        assert_eq!(remaining(&table), Some(4));
    });
}

#[test]
fn watches_resume_filter_bookmark_and_time_out() {
    let server = Server::start_with(&["--watch-bookmark-interval", "1s"]);
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        let a = create(&http, "w", "a", "cs9").await;
        let start = a["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        create(&http, "w", "b", "autosd10").await;
        // b moves into the selector, a moves out of it, a comes back and is deleted.
        let path = |n: &str| format!("{BASE}/namespaces/w/catalogimages/{n}");
        http.request("PATCH", &path("a"), "application/merge-patch+json", &json!({"spec": {"metadata": {"distro": "autosd10"}}}).to_string()).await;
        http.request("PATCH", &path("b"), "application/merge-patch+json", &json!({"spec": {"metadata": {"distro": "cs9"}}}).to_string()).await;
        http.request("DELETE", &path("b"), "", "").await;

        // Resuming from a's creation replays everything after it, filtered by the selector.
        let events = watch_events(&http, &format!("resourceVersion={start}&fieldSelector=spec.metadata.distro%3Dcs9&timeoutSeconds=1")).await;
        assert_eq!(summary(&events), [("DELETED".into(), "a".into()), ("ADDED".into(), "b".into()), ("DELETED".into(), "b".into())]);
        // Every event carries the resourceVersion of its change, in order.
        let revisions: Vec<u64> = events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");

        // Without a resourceVersion the current state comes first, as ADDED.
        let events = watch_events(&http, "timeoutSeconds=1").await;
        assert_eq!(summary(&events), [("ADDED".into(), "a".into())]);

        // timeoutSeconds is honoured, and bookmarks arrive when allowed.
        let started = Instant::now();
        let events = watch_events(&http, &format!("resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=3&labelSelector=distro%3Dnone")).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(5), "{elapsed:?}");
        let bookmarks: Vec<&Value> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
        assert!(bookmarks.len() >= 2, "{events:?}");
        assert_eq!(bookmarks.last().unwrap()["object"]["metadata"]["resourceVersion"], http.request("GET", &format!("{BASE}/catalogimages"), "", "").await.1["metadata"]["resourceVersion"]);

        // sendInitialEvents: the state, then the bookmark that ends it.
        let events = watch_events(&http, "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1").await;
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[1]["type"], "BOOKMARK");
        assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    });
}

#[test]
fn a_watch_from_compacted_history_is_gone() {
    let server = Server::start_with(&["--history-retention", "1s"]);
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        create(&http, "g", "a", "cs9").await;
        let started = Instant::now();
        loop {
            // As kube-apiserver's watch cache does, the watch is refused with 410 Expired.
            let (code, status) = http
                .request(
                    "GET",
                    &format!("{BASE}/catalogimages?watch=true&resourceVersion=1&timeoutSeconds=1"),
                    "",
                    "",
                )
                .await;
            if code == 410 {
                assert_eq!(status["reason"], "Expired");
                assert!(
                    status["message"]
                        .as_str()
                        .unwrap()
                        .contains("too old resource version: 1")
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "history was never compacted"
            );
            create(
                &http,
                "g",
                &format!("n{}", started.elapsed().as_millis()),
                "cs9",
            )
            .await;
        }
    });
}

#[test]
fn tables_and_discovery() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        create(&http, "t", "a", "cs9").await;
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        let request = http::Request::builder().uri(format!("{BASE}/namespaces/t/catalogimages?includeObject=Object")).header("Accept", accept).body(Vec::new()).unwrap();
        let (code, _, body) = http.send(request).await;
        let table: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, 200);
        assert_eq!(table["kind"], "Table");
        let columns: Vec<&str> = table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Name", "Registry", "Architecture", "Distro", "Phase", "Age", "Targets", "Format", "Digest"]);
        assert_eq!(table["rows"][0]["cells"][0], "a");
        assert_eq!(table["rows"][0]["object"]["kind"], "CatalogImage");
        // As kubectl get asks: rows carry their object's metadata (the default), cells in column order.
        let request = http::Request::builder().uri(format!("{BASE}/namespaces/t/catalogimages?limit=10")).header("Accept", accept).body(Vec::new()).unwrap();
        let (_, _, body) = http.send(request).await;
        let table: Value = serde_json::from_slice(&body).unwrap();
        let row = &table["rows"][0];
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["name"], "a");
        assert!(row["object"].get("spec").is_none(), "metadata only");
        let cells: Vec<&str> = row["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(cells[..5], ["a", "quay.io/automotive/cs9:a", "x86_64", "cs9", "Pending"]);
        assert!(cells[5].ends_with('s'), "age in seconds: {}", cells[5]);
        assert_eq!(cells[6..], ["", "", ""]);
        assert!(table["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));

        let (_, resources) = http.request("GET", BASE, "", "").await;
        assert_eq!(resources["kind"], "APIResourceList");
        assert_eq!(resources["resources"][0]["shortNames"], json!(["cimg"]));
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let request = http::Request::builder().uri("/apis").header("Accept", v2).body(Vec::new()).unwrap();
        let (code, headers, body) = http.send(request).await;
        assert_eq!(code, 200);
        assert_eq!(headers["content-type"], v2);
        let etag = headers["etag"].to_str().unwrap().to_string();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["items"][0]["metadata"]["name"], "catalog.automotive.io");
        let request = http::Request::builder().uri("/apis").header("Accept", v2).header("If-None-Match", &etag).body(Vec::new()).unwrap();
        assert_eq!(http.send(request).await.0, 304);
        let (code, openapi) = http.request("GET", "/openapi/v2", "", "").await;
        assert_eq!(code, 200);
        let gvk = &openapi["definitions"]["io.automotive.catalog.v1alpha1.CatalogImage"]["x-kubernetes-group-version-kind"];
        assert_eq!(gvk[0]["kind"], "CatalogImage");
        let patch = &openapi["paths"]["/apis/catalog.automotive.io/v1alpha1/namespaces/{namespace}/catalogimages/{name}"]["patch"]["consumes"];
        assert_eq!(*patch, json!(["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]));
    });
}

/// What the namespace controller does for every resource in discovery through client-go's
/// metadata client: list PartialObjectMetadata, deletecollection, list again until empty.
#[test]
fn metadata_lists_as_the_namespace_controller_does() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        for name in ["a", "b", "c"] {
            create(&http, "doomed", name, "cs9").await;
        }
        create(&http, "kept", "k", "cs9").await;
        let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        let list = |accept: &'static str| {
            let http = &http;
            async move {
                let request = http::Request::builder().uri(format!("{BASE}/namespaces/doomed/catalogimages")).header("Accept", accept).body(Vec::new()).unwrap();
                let (code, _, body) = http.send(request).await;
                assert_eq!(code, 200);
                serde_json::from_slice::<Value>(&body).unwrap()
            }
        };
        let metadata = list(accept).await;
        assert_eq!(metadata["kind"], "PartialObjectMetadataList");
        assert_eq!(metadata["apiVersion"], "meta.k8s.io/v1");
        let items = metadata["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["kind"], "PartialObjectMetadata");
        assert_eq!(items[0]["metadata"]["namespace"], "doomed");
        assert!(items[0].get("spec").is_none(), "metadata only");
        let request = http::Request::builder().uri(format!("{BASE}/namespaces/doomed/catalogimages/a")).header("Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1").body(Vec::new()).unwrap();
        let (_, _, body) = http.send(request).await;
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["metadata"]["name"], "a");

        let (code, _) = http.request("DELETE", &format!("{BASE}/namespaces/doomed/catalogimages"), "", "").await;
        assert_eq!(code, 200);
        assert_eq!(list(accept).await["items"].as_array().unwrap().len(), 0);
        let (_, kept) = http.request("GET", &format!("{BASE}/catalogimages"), "", "").await;
        assert_eq!(kept["items"].as_array().unwrap().len(), 1, "other namespaces are untouched");
    });
}
