//! delete and deletecollection: preconditions, dry run, and finalizers (an object with
//! finalizers gets a deletionTimestamp and stays until an update removes the last one).

use bytes::Bytes;
use catalog_storage::{Item, ListOptions, Op};
use serde::Deserialize;

use super::{
    Base, ONCE, Registry, Stored, decode_stored, encode, key, now, read_error, write_error,
};
use crate::api::fields::index_values;
use crate::api::selector::Selector;
use crate::api::status::ApiError;

/// The parts of a metav1.DeleteOptions body we act on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    #[serde(default)]
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Vec<String>,
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub propagation_policy: Option<String>,
    /// Deprecated in favour of `propagationPolicy`, still honoured as kube-apiserver does.
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
}

/// The garbage collector's finalizers: orphan the dependents, or delete them first.
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// The finalizers an object deleted with these options carries, as k8s.io/apiserver's
    /// generic registry decides them (`registry/generic/registry/store.go`:
    /// `deletionFinalizersForGarbageCollection`, `shouldOrphanDependents`,
    /// `shouldDeleteDependents`): an explicit policy wins, else the garbage-collection
    /// finalizers the object already has, else this resource's default, Background (as for
    /// custom resources), which needs none. The other finalizers are kept as they are.
    fn finalizers_for(&self, finalizers: &[String]) -> Vec<String> {
        let existing = |name: &str| finalizers.iter().any(|f| f == name);
        let policy = self.propagation_policy.as_deref();
        let orphan = match (self.orphan_dependents, policy) {
            (Some(orphan), _) => orphan,
            (None, Some(policy)) => policy == "Orphan",
            // The first of the two in the list decides, as in shouldOrphanDependents.
            (None, None) => finalizers
                .iter()
                .find(|f| *f == ORPHAN || *f == FOREGROUND)
                .is_some_and(|f| f == ORPHAN),
        };
        let foreground = match (self.orphan_dependents, policy) {
            (Some(_), _) => false,
            (None, Some(policy)) => policy == "Foreground",
            (None, None) => existing(FOREGROUND),
        };
        let mut wanted: Vec<String> = finalizers
            .iter()
            .filter(|f| *f != ORPHAN && *f != FOREGROUND)
            .cloned()
            .collect();
        wanted.extend(orphan.then(|| ORPHAN.to_string()));
        wanted.extend(foreground.then(|| FOREGROUND.to_string()));
        let same_set = wanted.len() == finalizers.len() && wanted.iter().all(|f| existing(f));
        if same_set {
            finalizers.to_vec()
        } else {
            wanted
        }
    }
}

/// What a delete did: the object's last state, whether it is gone (not kept by finalizers),
/// and whether the store took a write.
struct Deleted {
    object: Bytes,
    gone: bool,
    stored: bool,
}

impl Deleted {
    /// A delete the store did not take: a dry run, or an object already being deleted just so.
    fn unstored(object: Bytes, gone: bool) -> Deleted {
        Deleted {
            object,
            gone,
            stored: false,
        }
    }
}

impl Stored for Deleted {
    fn stored(&self) -> bool {
        self.stored
    }
}

impl Registry {
    /// Deletes one object; returns its last state, and whether it is gone (not kept by
    /// finalizers).
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<(Bytes, bool), ApiError> {
        let deleted = self
            .write_from_copy(name, ONCE, |base| {
                self.delete_once((namespace, name), options, dry_run, base)
            })
            .await?;
        Ok((deleted.object, deleted.gone))
    }

    async fn delete_once(
        &self,
        (namespace, name): (&str, &str),
        options: &DeleteOptions,
        dry_run: bool,
        base: Base,
    ) -> Result<Deleted, ApiError> {
        let current = self.existing(namespace, name, base).await?;
        let image = decode_stored(&current.value)?;
        if let Some(pre) = &options.preconditions {
            let uid = image.metadata.uid.as_deref().unwrap_or("");
            if let Some(want) = pre.uid.as_deref().filter(|want| *want != uid) {
                return Err(ApiError::conflict(
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            let rv = current.revision.to_string();
            if let Some(want) = pre.resource_version.as_deref().filter(|want| *want != rv) {
                return Err(ApiError::conflict(
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                    ),
                ));
            }
        }
        if dry_run || options.dry_run.iter().any(|d| d == "All") {
            return Ok(Deleted::unstored(current.value, true));
        }
        let Some(op) = self.delete_op(&current, options)? else {
            return Ok(Deleted::unstored(current.value, false));
        };
        let changes = self
            .store
            .write(vec![op])
            .await
            .map_err(|e| write_error(e, name))?;
        let (object, gone) = match &changes[0].value {
            Some(kept) => (kept.clone(), false),
            None => (current.value, true),
        };
        Ok(Deleted {
            object,
            gone,
            stored: true,
        })
    }

    /// The write that deletes `item`: removal, or for an object that keeps finalizers (its
    /// own, or the garbage collector's the options ask for) the setting of its
    /// deletionTimestamp. None when the object is already being deleted just so.
    fn delete_op(&self, item: &Item, options: &DeleteOptions) -> Result<Option<Op>, ApiError> {
        let mut image = decode_stored(&item.value)?;
        let expected = Some(item.revision);
        let finalizers = image.metadata.finalizers.clone().unwrap_or_default();
        let wanted = options.finalizers_for(&finalizers);
        if wanted.is_empty() {
            return Ok(Some(Op::Delete {
                key: item.key.clone(),
                expected,
            }));
        }
        if wanted == finalizers && image.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        image.metadata.finalizers = Some(wanted);
        if image.metadata.deletion_timestamp.is_none() {
            image.metadata.deletion_timestamp = Some(now());
            image.metadata.deletion_grace_period_seconds = Some(0);
            image.metadata.generation = Some(image.metadata.generation.unwrap_or(1) + 1);
        }
        let indexes = index_values(&image);
        Ok(Some(Op::Update {
            key: item.key.clone(),
            expected,
            indexes,
            value: Box::new(move |rev| encode(&image, rev)),
        }))
    }

    /// Deletes every selected object of a namespace (or of all) in one transaction; returns
    /// the last states.
    pub async fn delete_collection(
        &self,
        namespace: Option<&str>,
        selector: &Selector,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<(u64, Vec<Bytes>), ApiError> {
        let dry_run = dry_run || options.dry_run.iter().any(|d| d == "All");
        // Every write acknowledged so far, of any replica, is deleted too.
        self.fresh(None).await?;
        let prefix = namespace.map(|ns| key(ns, "")).unwrap_or_default();
        let index = selector.index();
        let list = ListOptions {
            prefix: &prefix,
            index: index.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
            ..Default::default()
        };
        let page = self
            .store
            .list(&list, &mut |item| selector.matches(&item.indexes))
            .map_err(read_error)?;
        if dry_run || page.items.is_empty() {
            return Ok((
                page.revision,
                page.items.into_iter().map(|i| i.value).collect(),
            ));
        }
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for item in &page.items {
            let op = self.delete_op(item, options)?;
            written.push(op.is_some());
            ops.extend(op);
        }
        let changes = if ops.is_empty() {
            Vec::new()
        } else {
            self.store
                .write(ops)
                .await
                .map_err(|e| write_error(e, "collection"))?
        };
        let revision = changes.last().map_or(page.revision, |c| c.revision);
        let mut changes = changes.iter();
        let objects = page
            .items
            .into_iter()
            .zip(written)
            .map(
                |(item, written)| match written.then(|| changes.next()).flatten() {
                    Some(change) => change.value.clone().unwrap_or(item.value),
                    None => item.value,
                },
            )
            .collect();
        Ok((revision, objects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(policy: Option<&str>, orphan: Option<bool>) -> DeleteOptions {
        DeleteOptions {
            propagation_policy: policy.map(str::to_string),
            orphan_dependents: orphan,
            ..Default::default()
        }
    }

    fn finalizers(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn garbage_collection_finalizers_follow_the_generic_registry() {
        // (propagationPolicy, orphanDependents, finalizers before, finalizers after)
        type Case<'a> = (Option<&'a str>, Option<bool>, &'a [&'a str], &'a [&'a str]);
        let cases: [Case; 11] = [
            (None, None, &[], &[]),
            (Some("Background"), None, &[], &[]),
            (Some("Orphan"), None, &[], &["orphan"]),
            (Some("Foreground"), None, &[], &["foregroundDeletion"]),
            (None, Some(true), &[], &["orphan"]),
            (None, Some(false), &["orphan"], &[]),
            // With no policy, the object's own garbage-collection finalizers stand.
            (None, None, &["orphan"], &["orphan"]),
            (
                None,
                None,
                &["x", "foregroundDeletion"],
                &["x", "foregroundDeletion"],
            ),
            // An explicit policy replaces them; other finalizers stay.
            (
                Some("Orphan"),
                None,
                &["x", "foregroundDeletion"],
                &["x", "orphan"],
            ),
            (Some("Background"), None, &["orphan", "x"], &["x"]),
            (
                Some("Foreground"),
                None,
                &["foregroundDeletion", "x"],
                &["foregroundDeletion", "x"],
            ),
        ];
        for (policy, orphan, before, after) in cases {
            assert_eq!(
                options(policy, orphan).finalizers_for(&finalizers(before)),
                finalizers(after),
                "{policy:?} {orphan:?} {before:?}"
            );
        }
    }
}
