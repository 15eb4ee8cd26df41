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
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event {
                if o.metadata.name.as_deref() == Some(name) {
                    return;
                }
            }
        }
        panic!("the watch ended before {name} was seen");
    })
}
