//! Discovery documents: the legacy ones (APIGroupList, APIGroup, APIResourceList) and
//! aggregated discovery v2 (APIGroupDiscoveryList), as kube-aggregator and kubectl read them.

use serde_json::{Value, json};

use super::types::*;

pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
pub const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// The Content-Type kube-aggregator and client-go expect for aggregated discovery v2.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn group_version() -> Value {
    json!({"groupVersion": API_VERSION, "version": VERSION})
}

fn api_group() -> Value {
    json!({"name": GROUP, "versions": [group_version()], "preferredVersion": group_version()})
}

/// `GET /apis`
pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]})
}

/// `GET /apis/catalog.automotive.io`
pub fn api_group_document() -> Value {
    let mut group = api_group();
    group["kind"] = "APIGroup".into();
    group["apiVersion"] = "v1".into();
    group
}

/// `GET /apis/catalog.automotive.io/v1alpha1`
pub fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {
                "name": PLURAL,
                "singularName": SINGULAR,
                "namespaced": true,
                "kind": KIND,
                "verbs": VERBS,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            {
                "name": format!("{PLURAL}/status"),
                "singularName": "",
                "namespaced": true,
                "kind": KIND,
                "verbs": STATUS_VERBS,
            }
        ]
    })
}

/// `GET /apis` asked as aggregated discovery v2.
pub fn aggregated() -> Value {
    let kind = json!({"group": GROUP, "version": VERSION, "kind": KIND});
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP, "creationTimestamp": null},
            "versions": [{
                "version": VERSION,
                "freshness": "Current",
                "resources": [{
                    "resource": PLURAL,
                    "responseKind": kind,
                    "scope": "Namespaced",
                    "singularResource": SINGULAR,
                    "verbs": VERBS,
                    "shortNames": SHORT_NAMES,
                    "categories": CATEGORIES,
                    "subresources": [{"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS}],
                }],
            }],
        }],
    })
}
