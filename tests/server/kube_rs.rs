//! kube-rs clients against the real server: paged lists and a watcher that survives a restart.

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;

use super::common::*;

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("catalog.automotive.io", "v1alpha1", "CatalogImage"),
        "catalogimages",
    )
}

fn object(namespace: &str, name: &str) -> DynamicObject {
    serde_json::from_value(image_json(namespace, name, "autosd10")).unwrap()
}

#[test]
fn list_pages_through_everything() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let client = kube_client(&server);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "pages", &resource());
        for i in 0..23 {
            api.create(
                &PostParams::default(),
                &object("pages", &format!("i{i:02}")),
            )
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut params = ListParams::default().limit(5);
        loop {
            let page = api.list(&params).await.unwrap();
            assert!(page.items.len() <= 5);
            seen.extend(page.items.iter().map(|o| o.metadata.name.clone().unwrap()));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let want: Vec<String> = (0..23).map(|i| format!("i{i:02}")).collect();
        assert_eq!(seen, want);
        let all: Api<DynamicObject> = Api::all_with(client, &resource());
        assert_eq!(
            all.list(&ListParams::default().labels("distro=autosd10"))
                .await
                .unwrap()
                .items
                .len(),
            23
        );
    });
}

#[test]
fn a_watcher_carries_on_across_a_server_restart() {
    let mut server = Server::start();
    let rt = runtime();
    let _context = rt.enter();
    let client = kube_client(&server);
    let api: Api<DynamicObject> = Api::namespaced_with(client, "watched", &resource());
    rt.block_on(api.create(&PostParams::default(), &object("watched", "before")))
        .unwrap();
    let mut events = Box::pin(watcher(api.clone(), watcher::Config::default()));
    applied(&rt, &mut events, "before");
    server.restart(&[]);
    rt.block_on(api.create(&PostParams::default(), &object("watched", "after")))
        .unwrap();
    applied(&rt, &mut events, "after");
}

/// Reads watcher events until `name` is applied.
fn applied<S>(rt: &tokio::runtime::Runtime, events: &mut S, name: &str)
where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin,
{
    rt.block_on(async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event
                && o.metadata.name.as_deref() == Some(name)
            {
                return;
            }
        }
        panic!("the watch ended before {name} was seen");
    })
}

/// What the garbage collector and finalizing controllers rely on: owner references kept as
/// given, deletion options honoured, and a finalized delete seen as MODIFIED then DELETED.
#[test]
fn finalized_deletes_are_watched_as_modified_then_deleted() {
    use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, WatchEvent, WatchParams};

    let server = Server::start();
    runtime().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&server), "gc", &resource());
        let mut owned = object("gc", "owned");
        let owner = serde_json::json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": "6f1c2d1e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true}]);
        owned.metadata.owner_references = serde_json::from_value(owner.clone()).unwrap();
        owned.metadata.finalizers = Some(vec!["catalog.automotive.io/keep".into()]);
        let created = api.create(&PostParams::default(), &owned).await.unwrap();
        assert_eq!(serde_json::to_value(&created.metadata.owner_references).unwrap(), owner);
        let rv = created.metadata.resource_version.clone().unwrap();
        let mut events = api.watch(&WatchParams::default().timeout(30), &rv).await.unwrap().boxed();

        // A uid precondition that does not match is refused.
        let wrong_uid = DeleteParams {
            preconditions: Some(Preconditions { uid: Some("not-the-uid".into()), resource_version: None }),
            ..DeleteParams::default()
        };
        assert!(api.delete("owned", &wrong_uid).await.is_err());
        let background = DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Background), grace_period_seconds: Some(0), ..DeleteParams::default() };
        api.delete("owned", &background).await.unwrap();
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        api.patch("owned", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

        let mut seen = Vec::new();
        while seen.len() < 2 {
            match events.next().await.unwrap().unwrap() {
                WatchEvent::Modified(o) => seen.push(("MODIFIED", o.metadata.deletion_timestamp.is_some(), o.metadata.finalizers.clone().unwrap_or_default().len())),
                WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.deletion_timestamp.is_some(), o.metadata.finalizers.clone().unwrap_or_default().len())),
                WatchEvent::Bookmark(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        // Marked for deletion, then gone when its last finalizer goes: as with kube-apiserver
        // (registry/generic/registry/store.go, errEmptiedFinalizers), the emptying update is
        // never stored, so DELETED carries the last stored state.
        assert_eq!(seen, [("MODIFIED", true, 1), ("DELETED", true, 1)]);
    });
}
