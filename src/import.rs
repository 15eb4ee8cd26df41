//! `catalog-apiserver import`: moves the CatalogImages of the automotive-dev-operator CRD
//! (`automotive.sdv.cloud.redhat.com/v1alpha1`) into this API, keeping names, namespaces,
//! labels, annotations, the whole spec and the status fields the verifier does not recompute.
//! A dry run by default (the server validates each object with `dryRun=All`, so a dry run finds
//! every object that would be refused); idempotent: an entry that already matches is left
//! alone, one that differs is updated. Whatever of an old object does not arrive is named.

use std::time::Instant;

use futures_util::StreamExt;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::types::{API_VERSION, CatalogImageStatus, GROUP, KIND, PLURAL, VERSION};
use crate::kube_errors::one_line;

const SOURCE_GROUP: &str = "automotive.sdv.cloud.redhat.com";
const SOURCE_VERSION: &str = "v1alpha1";
/// Objects per list page read from the source cluster.
const PAGE: u32 = 500;
/// Objects written at once.
const CONCURRENCY: usize = 16;
/// Status fields that the old objects' publisher wrote and our verifier does not recompute:
/// carried over through `/status`. The rest of the old status is the old controller's view of
/// the registry, which the verifier writes anew.
const PROVENANCE: [&str; 4] = [
    "publishedAt",
    "sourceImageBuild",
    "artifactRefs",
    "accessCount",
];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Why the import could not read the old objects at all (one object's failure is counted, not
/// this).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(String);

fn resource(group: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, KIND), PLURAL)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Fields of old objects that did not arrive, each printed as it was found.
    pub not_imported: usize,
}

/// What an old object becomes here.
struct Translation {
    entry: DynamicObject,
    /// The PROVENANCE fields the old status has.
    provenance: Map<String, Value>,
    /// Paths of what the old object has that is not carried over, and why.
    left_behind: Vec<String>,
}

fn translate(old: &DynamicObject) -> Translation {
    let mut left_behind = Vec::new();
    let name = old.metadata.name.clone().unwrap_or_default();
    let mut entry = DynamicObject::new(&name, &resource(GROUP, VERSION));
    entry.metadata.namespace = old.metadata.namespace.clone();
    entry.metadata.labels = old.metadata.labels.clone();
    let mut annotations = old.metadata.annotations.clone().unwrap_or_default();
    if let Some(text) = annotations.remove(LAST_APPLIED) {
        match last_applied(&text) {
            Some(ours) => {
                annotations.insert(LAST_APPLIED.to_string(), ours);
            }
            None => left_behind.push(format!(
                "metadata.annotations[{LAST_APPLIED}]: not imported: not a JSON object"
            )),
        }
    }
    entry.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    let meta = &old.metadata;
    if meta
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty())
    {
        left_behind.push(
            "metadata.ownerReferences: not imported: the owners' uids are the source's".into(),
        );
    }
    if meta.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
        left_behind
            .push("metadata.finalizers: not imported: they belong to the old controller".into());
    }
    entry.data = json!({"spec": old.data.get("spec").cloned().unwrap_or(Value::Null)});
    let provenance = old
        .data
        .get("status")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(field, value)| PROVENANCE.contains(&field.as_str()) && !is_unset(value))
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect();
    Translation {
        entry,
        provenance,
        left_behind,
    }
}

/// kubectl's record of the last client-side apply, naming our group instead of the old one, so
/// that the next `kubectl apply` of the moved manifest computes its patch from it.
fn last_applied(text: &str) -> Option<String> {
    let mut applied: Map<String, Value> = serde_json::from_str(text).ok()?;
    applied.insert("apiVersion".into(), API_VERSION.into());
    applied.remove("status");
    Some(Value::Object(applied).to_string())
}

/// Empty strings and nulls mean unset, here as in our API.
fn is_unset(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// The paths under `path` of every value `old` sets that `new` does not hold.
fn missing(path: &str, old: &Value, new: &Value, found: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old), _) => {
            for (field, value) in old.iter().filter(|(_, v)| !is_unset(v)) {
                let at = format!("{path}.{field}");
                missing(&at, value, new.get(field).unwrap_or(&Value::Null), found);
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (i, (old, new)) in old.iter().zip(new).enumerate() {
                missing(&format!("{path}[{i}]"), old, new, found);
            }
        }
        (old, new) if old == new => {}
        _ => found.push(path.to_string()),
    }
}

/// Whether `existing` already carries what `wanted` brings.
fn matches(existing: &DynamicObject, wanted: &Translation) -> bool {
    let entry = &wanted.entry;
    let mut differences = Vec::new();
    missing(
        "spec",
        &entry.data["spec"],
        &existing.data["spec"],
        &mut differences,
    );
    let provenance = Value::Object(wanted.provenance.clone());
    missing(
        "status",
        &provenance,
        &existing.data["status"],
        &mut differences,
    );
    existing.metadata.labels.clone().unwrap_or_default()
        == entry.metadata.labels.clone().unwrap_or_default()
        && existing.metadata.annotations.clone().unwrap_or_default()
            == entry.metadata.annotations.clone().unwrap_or_default()
        && differences.is_empty()
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// What became of one old object: its outcome and the fields that did not arrive.
struct Imported {
    outcome: Outcome,
    left_behind: Vec<String>,
}

/// Creates or updates our entry for one old object; an error is one line naming the object.
async fn import_one(
    target: &kube::Client,
    object: &DynamicObject,
    dry_run: bool,
) -> Result<Imported, String> {
    let wanted = translate(object);
    let namespace = wanted.entry.metadata.namespace.clone().unwrap_or_default();
    let name = wanted.entry.metadata.name.clone().unwrap_or_default();
    let ours: Api<DynamicObject> =
        Api::namespaced_with(target.clone(), &namespace, &resource(GROUP, VERSION));
    let fail = |e: kube::Error| format!("{namespace}/{name}: {}", one_line(&e));
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let (mut outcome, mut written) = match ours.get_opt(&name).await.map_err(fail)? {
        None => {
            let created = ours.create(&params, &wanted.entry).await;
            (Outcome::Created, created.map_err(fail)?)
        }
        Some(existing) if matches(&existing, &wanted) => (Outcome::Unchanged, existing),
        Some(mut existing) => {
            existing.metadata.labels = wanted.entry.metadata.labels.clone();
            existing.metadata.annotations = wanted.entry.metadata.annotations.clone();
            existing.data["spec"] = wanted.entry.data["spec"].clone();
            let replaced = ours.replace(&name, &params, &existing).await;
            (Outcome::Updated, replaced.map_err(fail)?)
        }
    };
    let provenance = Value::Object(wanted.provenance.clone());
    let mut stale = Vec::new();
    missing("status", &provenance, &written.data["status"], &mut stale);
    if !stale.is_empty() {
        written.data["status"] = match (&outcome, dry_run) {
            // A dry-run create leaves nothing whose /status a dry run could write: the status
            // is checked against our types instead.
            (Outcome::Created, true) => CatalogImageStatus::deserialize(&provenance)
                .and_then(serde_json::to_value)
                .map_err(|e| format!("{namespace}/{name}: status: {e}"))?,
            _ => {
                let patch = Patch::Merge(json!({"status": provenance}));
                let params = PatchParams {
                    dry_run,
                    ..PatchParams::default()
                };
                let patched = ours.patch_status(&name, &params, &patch).await;
                patched.map_err(fail)?.data["status"].clone()
            }
        };
        if matches!(outcome, Outcome::Unchanged) {
            outcome = Outcome::Updated;
        }
    }
    let mut left_behind = wanted.left_behind;
    let mut lost = Vec::new();
    missing(
        "spec",
        &object.data["spec"],
        &written.data["spec"],
        &mut lost,
    );
    missing("status", &provenance, &written.data["status"], &mut lost);
    left_behind.extend(
        lost.into_iter()
            .map(|path| format!("{path}: not imported: {GROUP} has no such field")),
    );
    let left_behind = left_behind
        .into_iter()
        .map(|line| format!("{namespace}/{name}: {line}"))
        .collect();
    Ok(Imported {
        outcome,
        left_behind,
    })
}

/// Imports every object of the old CRD that `source` lists into `target`, printing one line
/// per object that fails and per field that does not arrive.
pub async fn import(
    source: kube::Client,
    target: kube::Client,
    apply: bool,
) -> Result<Summary, ImportError> {
    let old: Api<DynamicObject> = Api::all_with(source, &resource(SOURCE_GROUP, SOURCE_VERSION));
    let mut summary = Summary::default();
    let started = Instant::now();
    let mut list = ListParams::default().limit(PAGE);
    loop {
        let page = old.list(&list).await.map_err(|e| {
            ImportError(format!("listing {PLURAL}.{SOURCE_GROUP}: {}", one_line(&e)))
        })?;
        let results: Vec<Result<Imported, String>> = futures_util::stream::iter(&page.items)
            .map(|object| import_one(&target, object, !apply))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(imported) => {
                    match imported.outcome {
                        Outcome::Created => summary.created += 1,
                        Outcome::Updated => summary.updated += 1,
                        Outcome::Unchanged => summary.unchanged += 1,
                    }
                    summary.not_imported += imported.left_behind.len();
                    for line in imported.left_behind {
                        eprintln!("{line}");
                    }
                }
                Err(line) => {
                    summary.failed += 1;
                    eprintln!("{line}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_named_and_empty_strings_mean_unset() {
        let old = json!({"registryUrl": "q.io/a:b", "metadata": {"variant": "", "arch": "x",
            "targets": [{"name": "qemu"}]}, "gone": {"deep": 1}, "list": [1, 2]});
        let new = json!({"registryUrl": "q.io/a:b", "metadata": {"os": "linux",
            "targets": [{"name": "qemu", "verified": false}]}, "list": [1]});
        let mut found = Vec::new();
        missing("spec", &old, &new, &mut found);
        assert_eq!(found, ["spec.gone.deep", "spec.list", "spec.metadata.arch"]);
    }

    #[test]
    fn the_last_applied_configuration_names_our_group() {
        let old = r#"{"apiVersion":"automotive.sdv.cloud.redhat.com/v1alpha1","kind":"CatalogImage","spec":{"registryUrl":"q.io/a:b"}}"#;
        let ours: Value = serde_json::from_str(&last_applied(old).unwrap()).unwrap();
        assert_eq!(ours["apiVersion"], API_VERSION);
        assert_eq!(ours["spec"]["registryUrl"], "q.io/a:b");
        assert_eq!(last_applied("not json"), None);
    }
}
