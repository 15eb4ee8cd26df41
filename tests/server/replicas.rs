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
