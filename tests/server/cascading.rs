//! Cascading deletion as kube-apiserver's generic registry does it for a custom resource: an
//! Orphan or Foreground delete leaves the entry with its deletionTimestamp and the garbage
//! collector's finalizer, and the entry goes when the garbage collector removes it.

use serde_json::{Value, json};

use super::common::*;

const NAMESPACE: &str = "cascade";

fn path(name: &str) -> String {
    format!("{BASE}/namespaces/{NAMESPACE}/catalogimages/{name}")
}

fn apply(server: &Server, name: &str, labels: &str) {
    server
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(&image_yaml(NAMESPACE, name, "cs9", "x86_64", labels)),
        )
        .success();
}

async fn get(http: &Http, name: &str) -> (u16, Value) {
    http.request("GET", &path(name), "", "").await
}

/// The events of the entry `name` from `rv` on.
async fn events(http: &Http, name: &str, rv: &str) -> Vec<String> {
    let request = http::Request::get(format!(
        "{BASE}/namespaces/{NAMESPACE}/catalogimages?watch=true&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=metadata.name%3D{name}"
    ))
    .body(Vec::new())
    .unwrap();
    let (_, _, body) = http.send(request).await;
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// What the garbage collector sends once it has dealt with the dependents
/// (`pkg/controller/garbagecollector/operations.go`, `removeFinalizer`): a merge patch of the
/// finalizers it keeps and the resourceVersion it read, through the metadata client.
async fn remove_finalizer_as_the_garbage_collector(
    http: &Http,
    name: &str,
    rv: &str,
) -> (u16, Value) {
    let patch = json!({"metadata": {"resourceVersion": rv, "finalizers": null}});
    let request = http::Request::patch(path(name))
        .header("Content-Type", "application/merge-patch+json")
        .header(
            "Accept",
            "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        )
        .body(patch.to_string().into_bytes())
        .unwrap();
    let (code, _, body) = http.send(request).await;
    (code, serde_json::from_slice(&body).unwrap())
}

#[test]
fn orphan_and_foreground_deletes_wait_for_the_garbage_collector() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        for (cascade, finalizer) in [("orphan", "orphan"), ("foreground", "foregroundDeletion")] {
            let name = format!("parent-{cascade}");
            apply(&server, &name, "");
            let created = get(&http, &name).await.1;
            let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
            server
                .kubectl(&["delete", "catalogimage", &name, "-n", NAMESPACE, &format!("--cascade={cascade}"), "--wait=false"])
                .success();
            let (code, deleting) = get(&http, &name).await;
            assert_eq!(code, 200, "{cascade}: the entry stays");
            assert!(deleting["metadata"]["deletionTimestamp"].is_string(), "{deleting}");
            assert_eq!(deleting["metadata"]["finalizers"], json!([finalizer]));
            assert_eq!(deleting["metadata"]["generation"], 2);
            // A second delete with the same policy changes nothing.
            server
                .kubectl(&["delete", "catalogimage", &name, "-n", NAMESPACE, &format!("--cascade={cascade}"), "--wait=false"])
                .success();
            let again = get(&http, &name).await.1;
            assert_eq!(again["metadata"]["resourceVersion"], deleting["metadata"]["resourceVersion"]);

            let deleting_rv = deleting["metadata"]["resourceVersion"].as_str().unwrap();
            let (code, answer) = remove_finalizer_as_the_garbage_collector(&http, &name, deleting_rv).await;
            assert_eq!(code, 200, "{answer}");
            assert_eq!(answer["kind"], "PartialObjectMetadata", "{answer}");
            assert_eq!(get(&http, &name).await.0, 404, "{cascade}: gone with its last finalizer");
            assert_eq!(events(&http, &name, &rv).await, ["MODIFIED", "DELETED"], "{cascade}");
        }

        // The deprecated orphanDependents, in the body.
        apply(&server, "parent-deprecated", "");
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": true});
        let (code, _) = http.request("DELETE", &path("parent-deprecated"), "application/json", &options.to_string()).await;
        assert_eq!(code, 200);
        assert_eq!(get(&http, "parent-deprecated").await.1["metadata"]["finalizers"], json!(["orphan"]));
        // Without a policy the finalizer the entry has stands; Background takes it away.
        let (code, _) = http.request("DELETE", &path("parent-deprecated"), "", "").await;
        assert_eq!(code, 200);
        assert_eq!(get(&http, "parent-deprecated").await.1["metadata"]["finalizers"], json!(["orphan"]));
        server
            .kubectl(&["delete", "catalogimage", "parent-deprecated", "-n", NAMESPACE, "--cascade=background"])
            .success();
        assert_eq!(get(&http, "parent-deprecated").await.0, 404);

        // The deprecated orphanDependents=false on an entry its own finalizer keeps: 202.
        let kept = json!({"apiVersion": "catalog.automotive.io/v1alpha1", "kind": "CatalogImage",
            "metadata": {"name": "kept", "namespace": NAMESPACE, "finalizers": ["example.com/hold"]},
            "spec": {"registryUrl": "quay.io/automotive/cs9:kept"}});
        let collection = format!("{BASE}/namespaces/{NAMESPACE}/catalogimages");
        assert_eq!(http.request("POST", &collection, "application/json", &kept.to_string()).await.0, 201);
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": false});
        let (code, answer) = http.request("DELETE", &path("kept"), "application/json", &options.to_string()).await;
        assert_eq!(code, 202, "{answer}");
        assert_eq!(answer["metadata"]["finalizers"], json!(["example.com/hold"]));

        // Background, the default, deletes at once.
        apply(&server, "parent-background", "");
        server.kubectl(&["delete", "catalogimage", "parent-background", "-n", NAMESPACE]).success();
        assert_eq!(get(&http, "parent-background").await.0, 404);

        // deletecollection applies the policy to every item.
        for name in ["batch-a", "batch-b"] {
            apply(&server, name, "batch: \"yes\"");
        }
        let collection = format!("{BASE}/namespaces/{NAMESPACE}/catalogimages?labelSelector=batch%3Dyes&propagationPolicy=Orphan");
        let (code, deleted) = http.request("DELETE", &collection, "", "").await;
        assert_eq!(code, 200, "{deleted}");
        for name in ["batch-a", "batch-b"] {
            let (code, entry) = get(&http, name).await;
            assert_eq!(code, 200);
            assert_eq!(entry["metadata"]["finalizers"], json!(["orphan"]), "{name}");
            assert!(entry["metadata"]["deletionTimestamp"].is_string());
        }
    });
}
