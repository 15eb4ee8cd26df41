//! `catalog-apiserver import`: moves the CatalogImages of the automotive-dev-operator CRD
//! (`automotive.sdv.cloud.redhat.com/v1alpha1`) into this API, keeping names, namespaces,
//! labels, annotations and spec. A dry run by default (the server validates each object with
//! `dryRun=All`, so a dry run finds every object that would be refused); idempotent: an entry
//! that already matches is left alone, one that differs is updated.

use std::time::Instant;

use futures_util::StreamExt;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::Value;

use crate::api::types::{GROUP, KIND, PLURAL, VERSION};

const SOURCE_GROUP: &str = "automotive.sdv.cloud.redhat.com";
const SOURCE_VERSION: &str = "v1alpha1";
/// Objects per list page read from the source cluster.
const PAGE: u32 = 500;
/// Objects written at once.
const CONCURRENCY: usize = 16;

fn resource(group: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, KIND), PLURAL)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
}

/// The entry of ours for an object of the old CRD.
fn translate(old: &DynamicObject) -> DynamicObject {
    let resource = resource(GROUP, VERSION);
    let name = old.metadata.name.clone().unwrap_or_default();
    let mut new = DynamicObject::new(&name, &resource);
    new.metadata.namespace = old.metadata.namespace.clone();
    new.metadata.labels = old.metadata.labels.clone();
    new.metadata.annotations = old.metadata.annotations.clone();
    new.data = serde_json::json!({"spec": old.data.get("spec").cloned().unwrap_or(Value::Null)});
    new
}

/// Whether `existing` already carries what `wanted` brings.
fn matches(existing: &DynamicObject, wanted: &DynamicObject) -> bool {
    existing.metadata.labels.clone().unwrap_or_default()
        == wanted.metadata.labels.clone().unwrap_or_default()
        && existing.metadata.annotations.clone().unwrap_or_default()
            == wanted.metadata.annotations.clone().unwrap_or_default()
        && spec_subset(&wanted.data["spec"], &existing.data["spec"])
}

/// Every field `wanted` sets has the same value in `existing` (which also has our defaults).
fn spec_subset(wanted: &Value, existing: &Value) -> bool {
    match (wanted, existing) {
        (Value::Object(w), Value::Object(e)) => w
            .iter()
            .all(|(k, v)| v.is_null() || e.get(k).is_some_and(|ev| spec_subset(v, ev))),
        (w, e) => w == e,
    }
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// Creates or updates our entry for one old object; an error names the object.
async fn import_one(
    target: &kube::Client,
    object: &DynamicObject,
    params: &PostParams,
) -> Result<Outcome, String> {
    let wanted = translate(object);
    let namespace = wanted.metadata.namespace.clone().unwrap_or_default();
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let ours: Api<DynamicObject> =
        Api::namespaced_with(target.clone(), &namespace, &resource(GROUP, VERSION));
    let result = match ours.get_opt(&name).await {
        Ok(None) => ours.create(params, &wanted).await.map(|_| Outcome::Created),
        Ok(Some(existing)) if matches(&existing, &wanted) => Ok(Outcome::Unchanged),
        Ok(Some(mut existing)) => {
            existing.metadata.labels = wanted.metadata.labels.clone();
            existing.metadata.annotations = wanted.metadata.annotations.clone();
            existing.data["spec"] = wanted.data["spec"].clone();
            ours.replace(&name, params, &existing)
                .await
                .map(|_| Outcome::Updated)
        }
        Err(e) => Err(e),
    };
    result.map_err(|e| format!("{namespace}/{name}: {e}"))
}

/// Imports every object of the old CRD that `source` lists into `target`.
pub async fn import(
    source: kube::Client,
    target: kube::Client,
    apply: bool,
) -> Result<Summary, String> {
    let old: Api<DynamicObject> = Api::all_with(source, &resource(SOURCE_GROUP, SOURCE_VERSION));
    let params = PostParams {
        dry_run: !apply,
        ..PostParams::default()
    };
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut list = ListParams::default().limit(PAGE);
    loop {
        let page = old
            .list(&list)
            .await
            .map_err(|e| format!("listing {PLURAL}.{SOURCE_GROUP}: {e}"))?;
        let outcomes: Vec<Result<Outcome, String>> = futures_util::stream::iter(&page.items)
            .map(|object| import_one(&target, object, &params))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(Outcome::Created) => summary.created += 1,
                Ok(Outcome::Updated) => summary.updated += 1,
                Ok(Outcome::Unchanged) => summary.unchanged += 1,
                Err(message) => {
                    summary.failed += 1;
                    eprintln!("{message}");
                }
            }
        }
        let done = summary.created + summary.updated + summary.unchanged + summary.failed;
        tracing::info!(
            done,
            per_second = (done as f64 / started.elapsed().as_secs_f64().max(0.001)) as u64,
            "import progress"
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => list = list.continue_token(&token),
            None => break,
        }
    }
    Ok(summary)
}
