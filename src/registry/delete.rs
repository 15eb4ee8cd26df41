//! delete and deletecollection: preconditions, dry run, and finalizers (an object with
//! finalizers gets a deletionTimestamp and stays until an update removes the last one).

use bytes::Bytes;
use catalog_storage::{Item, ListOptions, Op};
use serde::Deserialize;

use super::{Registry, decode_stored, encode, key, now, read_error, write_error};
use crate::api::fields::index_values;
use crate::server::selectors::Selector;
use crate::server::status::ApiError;

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
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    pub fn parse(body: &[u8]) -> Result<DeleteOptions, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(DeleteOptions::default());
        }
        let options: DeleteOptions = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(policy) = &options.propagation_policy {
            if !["Orphan", "Background", "Foreground"].contains(&policy.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy {policy:?} is not one of Orphan, Background, Foreground"
                )));
            }
        }
        if options.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request(
                "gracePeriodSeconds must be 0 or more",
            ));
        }
        Ok(options)
    }
}

impl Registry {
    /// Deletes one object; returns its last state.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Bytes, ApiError> {
        let current = self.get(namespace, name)?;
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
            return Ok(current.value);
        }
        let op = self.delete_op(&current)?;
        let changes = self
            .store
            .write(vec![op])
            .await
            .map_err(|e| write_error(e, name))?;
        Ok(changes[0].value.clone().unwrap_or(current.value))
    }

    /// The write that deletes `item`: removal, or for an object with finalizers the setting of
    /// its deletionTimestamp (an object already being deleted is left as it is).
    fn delete_op(&self, item: &Item) -> Result<Op, ApiError> {
        let mut image = decode_stored(&item.value)?;
        let expected = Some(item.revision);
        if image.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
            return Ok(Op::Delete {
                key: item.key.clone(),
                expected,
            });
        }
        if image.metadata.deletion_timestamp.is_none() {
            image.metadata.deletion_timestamp = Some(now());
            image.metadata.deletion_grace_period_seconds = Some(0);
            image.metadata.generation = Some(image.metadata.generation.unwrap_or(1) + 1);
        }
        let indexes = index_values(&image);
        Ok(Op::Update {
            key: item.key.clone(),
            expected,
            indexes,
            value: Box::new(move |rev| encode(&image, rev)),
        })
    }

    /// Deletes every selected object of a namespace (or of all) in one transaction; returns
    /// the last states.
    pub async fn delete_collection(
        &self,
        namespace: Option<&str>,
        selector: &Selector,
        dry_run: bool,
    ) -> Result<(u64, Vec<Bytes>), ApiError> {
        let prefix = namespace.map(|ns| key(ns, "")).unwrap_or_default();
        let index = selector.index();
        let options = ListOptions {
            prefix: &prefix,
            index: index.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
            ..Default::default()
        };
        let page = self
            .store
            .list(&options, &mut |item| selector.matches(&item.indexes))
            .map_err(read_error)?;
        if dry_run || page.items.is_empty() {
            return Ok((
                page.revision,
                page.items.into_iter().map(|i| i.value).collect(),
            ));
        }
        let ops = page
            .items
            .iter()
            .map(|item| self.delete_op(item))
            .collect::<Result<Vec<_>, _>>()?;
        let changes = self
            .store
            .write(ops)
            .await
            .map_err(|e| write_error(e, "collection"))?;
        let revision = changes.last().map_or(page.revision, |c| c.revision);
        let objects = changes
            .iter()
            .zip(page.items)
            .map(|(c, item)| c.value.clone().unwrap_or(item.value))
            .collect();
        Ok((revision, objects))
    }
}
