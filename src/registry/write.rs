//! create, update and patch, on the main resource and on `/status`, in one strategy order:
//! decode → server-owned fields → defaults → validation → dry run or one store write.

use std::sync::Arc;

use bytes::Bytes;
use catalog_storage::{Item, Op, WriteError};
use futures_util::future::BoxFuture;
use rand::Rng;
use serde_json::Value;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use super::decode::{FieldValidation, decode_object, parse_json};
use super::limits::{apply_json_patch, apply_merge_patch};
use super::managed::{Writer, record_update, starting_managers};
use super::{Registry, decode_stored, encode, key, now, write_error};
use crate::api::fields::index_values;
use crate::api::types::CatalogImage;
use crate::api::validate::{Cause, default, validate};
use crate::api::status::ApiError;

#[derive(Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// The field manager the write is recorded under in managedFields.
    pub manager: String,
    /// Asked when a write makes an entry reference a Secret in another namespace: may the
    /// writer read it? None when the server itself writes.
    pub secret_access: Option<SecretAccess>,
}

/// Answers Ok when the writer may `get` Secret (namespace, name), else the error to return.
pub type SecretAccess =
    Arc<dyn Fn(String, String) -> BoxFuture<'static, Result<(), ApiError>> + Send + Sync>;

/// The object as written (its stored bytes) and the warnings to send with it.
#[derive(Debug)]
pub struct Written {
    pub object: Bytes,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
}

/// Optimistic-concurrency retries of a patch that carries no resourceVersion of its own.
const PATCH_RETRIES: usize = 8;

/// The characters kube-apiserver draws generated name suffixes from.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn check_valid(image: &CatalogImage) -> Result<(), ApiError> {
    let causes = validate(image);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            image.metadata.name.as_deref().unwrap_or(""),
            &causes,
        ))
    }
}

impl Registry {
    pub async fn create(
        &self,
        namespace: &str,
        body: &[u8],
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (image, warnings) = decode_object(&parse_json(body)?, options.field_validation)?;
        self.insert(namespace, image, warnings, options, false)
            .await
    }

    /// Creates `image`; `applied` when server-side apply has already set its managedFields.
    pub(super) async fn insert(
        &self,
        namespace: &str,
        mut image: CatalogImage,
        warnings: Vec<String>,
        options: &WriteOptions,
        applied: bool,
    ) -> Result<Written, ApiError> {
        match image.metadata.namespace.as_deref() {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => image.metadata.namespace = Some(namespace.to_string()),
        }
        let generate = image.metadata.name.as_deref().unwrap_or("").is_empty()
            && !image
                .metadata
                .generate_name
                .as_deref()
                .unwrap_or("")
                .is_empty();
        let meta = &mut image.metadata;
        meta.uid = Some(uuid::Uuid::new_v4().to_string());
        meta.creation_timestamp = Some(now());
        meta.generation = Some(1);
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        meta.self_link = None;
        // Status is written through /status only.
        image.status = None;
        default(&mut image);
        if !applied {
            let writer = Writer {
                manager: &options.manager,
                status: false,
            };
            image.metadata.managed_fields = record(&image, None, &writer);
        }
        // kube-apiserver retries a generated name that happens to be taken.
        for _ in 0..8 {
            if generate {
                let prefix = image.metadata.generate_name.clone().unwrap_or_default();
                image.metadata.name = Some(generated_name(&prefix));
            }
            check_valid(&image)?;
            check_secret_reference(&image, None, options).await?;
            let name = image.metadata.name.clone().unwrap_or_default();
            if options.dry_run {
                if self
                    .store
                    .get(&key(namespace, &name))
                    .map_err(super::read_error)?
                    .is_some()
                {
                    return Err(ApiError::already_exists(&name));
                }
                return Ok(Written {
                    object: encode_unversioned(&image),
                    warnings,
                });
            }
            let stored = image.clone();
            let op = Op::Create {
                key: key(namespace, &name),
                indexes: index_values(&image),
                value: Box::new(move |revision| encode(&stored, revision)),
            };
            match self.store.write(vec![op]).await {
                Ok(changes) => {
                    return Ok(Written {
                        object: committed(&changes),
                        warnings,
                    });
                }
                Err(WriteError::AlreadyExists { .. }) if generate => continue,
                Err(e) => return Err(write_error(e, &name)),
            }
        }
        Err(ApiError::already_exists(
            image.metadata.name.as_deref().unwrap_or(""),
        ))
    }

    /// PUT on the object (`status` false) or on its `/status`.
    pub async fn update(
        &self,
        namespace: &str,
        name: &str,
        status: bool,
        body: &[u8],
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (image, warnings) = decode_object(&parse_json(body)?, options.field_validation)?;
        let current = self.get(namespace, name)?;
        let mut written = self
            .replace(namespace, name, status, image, &current, options, false)
            .await?;
        written.warnings.extend(warnings);
        Ok(written)
    }

    /// PATCH on the object or its `/status`; retried on a concurrent write unless the patch
    /// names the resourceVersion it expects.
    pub async fn patch(
        &self,
        namespace: &str,
        name: &str,
        status: bool,
        kind: PatchKind,
        body: &[u8],
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let patch = parse_json(body)?;
        for _ in 0..PATCH_RETRIES {
            let current = self.get(namespace, name)?;
            let mut document: Value = serde_json::from_slice(&current.value)
                .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))?;
            match kind {
                PatchKind::Merge => apply_merge_patch(&mut document, &patch)?,
                PatchKind::Json => apply_json_patch(&mut document, &patch)?,
            }
            let (image, warnings) = decode_object(&document, options.field_validation)?;
            match self
                .replace(namespace, name, status, image, &current, options, false)
                .await
            {
                Err(e) if e.is_conflict() && !patch_names_revision(&patch) => continue,
                Ok(mut written) => {
                    written.warnings.extend(warnings);
                    return Ok(written);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(name))
    }

    /// Replaces the stored `current` by `image`, following the rules of the main resource or
    /// of `/status`; `applied` when server-side apply has already set its managedFields.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn replace(
        &self,
        namespace: &str,
        name: &str,
        status: bool,
        mut image: CatalogImage,
        current: &Item,
        options: &WriteOptions,
        applied: bool,
    ) -> Result<Written, ApiError> {
        let revision = current.revision;
        let old = decode_stored(&current.value)?;
        if image.metadata.name.as_deref().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                image.metadata.name.as_deref().unwrap_or("")
            )));
        }
        if image
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| !ns.is_empty() && ns != namespace)
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match image.metadata.resource_version.as_deref() {
            None | Some("") => {}
            Some(given) if given == revision.to_string() => {}
            Some(given) if given.parse::<u64>().is_err() => {
                let cause = Cause::invalid(
                    "metadata.resourceVersion",
                    given,
                    "must be a resourceVersion this server returned",
                );
                return Err(ApiError::invalid(name, &[cause]));
            }
            Some(_) => return Err(ApiError::stale(name)),
        }
        // Defaults first, so that a spec that differs only by omitted defaults is unchanged.
        default(&mut image);
        if status {
            // /status writes change nothing but status.
            let new_status = image.status.take();
            image = old.clone();
            image.status = new_status;
        } else {
            image.status = old.status.clone();
            let meta = &mut image.metadata;
            meta.deletion_timestamp = old.metadata.deletion_timestamp.clone();
            meta.deletion_grace_period_seconds = old.metadata.deletion_grace_period_seconds;
            let spec_changed = image.spec != old.spec;
            let generation = old.metadata.generation.unwrap_or(1);
            image.metadata.generation = Some(if spec_changed {
                generation + 1
            } else {
                generation
            });
        }
        let meta = &mut image.metadata;
        meta.name = Some(name.to_string());
        meta.namespace = Some(namespace.to_string());
        meta.uid = old.metadata.uid.clone();
        meta.creation_timestamp = old.metadata.creation_timestamp.clone();
        meta.generate_name = meta
            .generate_name
            .take()
            .or(old.metadata.generate_name.clone());
        meta.self_link = None;
        meta.resource_version = old.metadata.resource_version.clone();
        if !applied {
            let writer = Writer {
                manager: &options.manager,
                status,
            };
            image.metadata.managed_fields = record(&image, Some(&old), &writer);
        }
        check_valid(&image)?;
        check_secret_reference(&image, Some(&old), options).await?;
        if image == old {
            // Nothing changed: no write, no new resourceVersion, as kube-apiserver does.
            return Ok(Written {
                object: current.value.clone(),
                warnings: Vec::new(),
            });
        }
        let finished = image.metadata.deletion_timestamp.is_some()
            && image.metadata.finalizers.as_ref().is_none_or(Vec::is_empty);
        if options.dry_run {
            return Ok(Written {
                object: encode(&image, revision),
                warnings: Vec::new(),
            });
        }
        let key = key(namespace, name);
        let op = if finished {
            // The last finalizer is gone from an object being deleted: it goes now.
            Op::Delete {
                key,
                expected: Some(revision),
            }
        } else {
            let stored = image.clone();
            Op::Update {
                key,
                expected: Some(revision),
                indexes: index_values(&image),
                value: Box::new(move |revision| encode(&stored, revision)),
            }
        };
        let changes = self
            .store
            .write(vec![op])
            .await
            .map_err(|e| write_error(e, name))?;
        let object = if finished {
            encode(&image, changes[0].revision)
        } else {
            committed(&changes)
        };
        Ok(Written {
            object,
            warnings: Vec::new(),
        })
    }
}

/// An entry may name a Secret in another namespace only if its writer may read that Secret;
/// asked when the reference is new or changed, so writes that leave it alone need no access.
async fn check_secret_reference(
    image: &CatalogImage,
    old: Option<&CatalogImage>,
    options: &WriteOptions,
) -> Result<(), ApiError> {
    let (Some(check), Some(reference)) = (&options.secret_access, &image.spec.auth_secret_ref)
    else {
        return Ok(());
    };
    let namespace = image.metadata.namespace.as_deref().unwrap_or("");
    let Some(secret_namespace) = reference
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty() && *ns != namespace)
    else {
        return Ok(());
    };
    if old.is_some_and(|old| old.spec.auth_secret_ref == image.spec.auth_secret_ref) {
        return Ok(());
    }
    check(secret_namespace.to_string(), reference.name.clone()).await
}

/// The managedFields of `image` after its writer's non-apply write from `old` (None: create).
fn record(
    image: &CatalogImage,
    old: Option<&CatalogImage>,
    writer: &Writer,
) -> Option<Vec<ManagedFieldsEntry>> {
    let stored = old.and_then(|o| o.metadata.managed_fields.as_deref());
    let managers = starting_managers(image.metadata.managed_fields.as_deref(), stored)?;
    let old = old.map_or_else(|| Value::Object(Default::default()), without_managed_fields);
    record_update(
        managers,
        &old,
        &without_managed_fields(image),
        writer,
        &now(),
    )
    .encode()
}

/// An object as JSON, without its managedFields: what field ownership is computed over.
pub(super) fn without_managed_fields(image: &CatalogImage) -> Value {
    let mut value = serde_json::to_value(image).expect("a CatalogImage always serialises");
    if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
        metadata.remove("managedFields");
    }
    value
}

pub(super) fn patch_names_revision(patch: &Value) -> bool {
    match patch {
        Value::Object(_) => patch.pointer("/metadata/resourceVersion").is_some(),
        Value::Array(operations) => operations
            .iter()
            .any(|op| op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")),
        _ => false,
    }
}

/// The bytes of the object a single-op write committed.
fn committed(changes: &[std::sync::Arc<catalog_storage::Change>]) -> Bytes {
    changes[0]
        .value
        .clone()
        .expect("a create or update has a value")
}

/// A dry-run object: what would be stored, without a resourceVersion.
fn encode_unversioned(image: &CatalogImage) -> Bytes {
    let mut value = serde_json::to_value(image).expect("a CatalogImage always serialises");
    value["apiVersion"] = crate::api::types::API_VERSION.into();
    value["kind"] = crate::api::types::KIND.into();
    Bytes::from(value.to_string())
}
