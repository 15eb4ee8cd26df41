//! create, update and patch, on the main resource and on `/status`: each prepares its object
//! and admits it (`strategy.rs`), then commits it, a dry run stopping short of the store.

use bytes::Bytes;
use catalog_storage::{Committed, Item, Op};
use rand::Rng;
use serde_json::Value;

use super::limits::{apply_json_patch, apply_merge_patch};
use super::strategy::{
    Context, Ownership, SecretAccess, Subresource, admit, generates_name, prepare_for_create,
    prepare_for_update,
};
use super::{ONCE, Registry, Stored, decode_stored, encode, key, now, read_error, write_error};
use crate::api::decode::{FieldValidation, decode_object};
use crate::api::fields::index_values;
use crate::api::status::ApiError;
use crate::api::types::{API_VERSION, CatalogImage, CatalogImageStatus, KIND};

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

impl WriteOptions {
    fn context(&self, subresource: Subresource, ownership: Ownership) -> Context<'_> {
        Context {
            manager: &self.manager,
            subresource,
            ownership,
            now: now(),
        }
    }
}

/// The object as written (its stored bytes) and the warnings to send with it.
#[derive(Debug)]
pub struct Written {
    pub object: Bytes,
    pub warnings: Vec<String>,
    /// Whether the store took the write: not a no-op or a dry run.
    stored: bool,
}

impl Written {
    fn of(object: Bytes, stored: bool) -> Written {
        Written {
            object,
            warnings: Vec::new(),
            stored,
        }
    }

    fn with_warnings(mut self, warnings: Vec<String>) -> Written {
        self.warnings.extend(warnings);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
}

/// Optimistic-concurrency retries of a patch that carries no resourceVersion of its own.
const PATCH_RETRIES: usize = 8;
/// Tries at a generated name that is not taken yet, as kube-apiserver retries them.
const NAME_TRIES: usize = 8;
/// The characters kube-apiserver draws generated name suffixes from.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

impl Stored for Written {
    fn stored(&self) -> bool {
        self.stored
    }
}

impl Registry {
    pub async fn create(
        &self,
        namespace: &str,
        image: CatalogImage,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.insert(namespace, image, options, Ownership::Record)
            .await
    }

    /// Creates `image`, its managedFields set as `ownership` says.
    pub(super) async fn insert(
        &self,
        namespace: &str,
        image: CatalogImage,
        options: &WriteOptions,
        ownership: Ownership,
    ) -> Result<Written, ApiError> {
        let context = options.context(Subresource::Main, ownership);
        let mut image = prepare_for_create(namespace, image, &context)?;
        let generate = generates_name(&image);
        for _ in 0..NAME_TRIES {
            if generate {
                let prefix = image.metadata.generate_name.clone().unwrap_or_default();
                image.metadata.name = Some(generated_name(&prefix));
            }
            admit(&image, None, options.secret_access.as_ref()).await?;
            match self.commit_create(namespace, &image, options.dry_run).await {
                Err(e) if generate && e.is_already_exists() => continue,
                result => return result.map(|object| Written::of(object, !options.dry_run)),
            }
        }
        Err(ApiError::already_exists(
            image.metadata.name.as_deref().unwrap_or(""),
        ))
    }

    async fn commit_create(
        &self,
        namespace: &str,
        image: &CatalogImage,
        dry_run: bool,
    ) -> Result<Bytes, ApiError> {
        let name = image.metadata.name.clone().unwrap_or_default();
        let key = key(namespace, &name);
        if dry_run {
            if self.store.get(&key).map_err(read_error)?.is_some() {
                return Err(ApiError::already_exists(&name));
            }
            return Ok(encode_unversioned(image));
        }
        let stored = image.clone();
        let op = Op::Create {
            key,
            indexes: index_values(image),
            value: Box::new(move |revision| encode(&stored, revision)),
        };
        match self.store.write(vec![op]).await {
            Ok(changes) => Ok(committed(&changes)),
            Err(e) => Err(write_error(e, &name)),
        }
    }

    /// PUT on the object or its `/status`.
    pub async fn update(
        &self,
        (namespace, name): (&str, &str),
        subresource: Subresource,
        image: CatalogImage,
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (image, context) = (&image, &options.context(subresource, Ownership::Record));
        self.write_from_copy(name, ONCE, |base| async move {
            let current = self.existing(namespace, name, base).await?;
            self.replace((namespace, name), image.clone(), &current, options, context)
                .await
        })
        .await
    }

    /// PATCH on the object or its `/status`; retried on a concurrent write unless the patch
    /// names the resourceVersion it expects.
    pub async fn patch(
        &self,
        (namespace, name): (&str, &str),
        subresource: Subresource,
        (kind, patch): (PatchKind, &Value),
        options: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let context = &options.context(subresource, Ownership::Record);
        let retry = |e: &ApiError| e.is_conflict() && !patch_names_revision(patch);
        self.write_from_copy(name, (PATCH_RETRIES, retry), |base| async move {
            let current = self.existing(namespace, name, base).await?;
            let mut document: Value = serde_json::from_slice(&current.value)
                .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))?;
            match kind {
                PatchKind::Merge => apply_merge_patch(&mut document, patch)?,
                PatchKind::Json => apply_json_patch(&mut document, patch)?,
            }
            let (image, warnings) = decode_object(&document, options.field_validation)?;
            let written = self
                .replace((namespace, name), image, &current, options, context)
                .await?;
            Ok(written.with_warnings(warnings))
        })
        .await
    }

    /// Writes the status `next` computes from the current one through `/status`, as `manager`
    /// (the server's own writers); retried on a concurrent write.
    pub async fn update_status(
        &self,
        (namespace, name): (&str, &str),
        manager: &str,
        next: impl Fn(Option<&CatalogImageStatus>) -> CatalogImageStatus,
    ) -> Result<Written, ApiError> {
        let options = WriteOptions {
            manager: manager.to_string(),
            ..WriteOptions::default()
        };
        let (options, next) = (&options, &next);
        let context = &options.context(Subresource::Status, Ownership::Record);
        let retry = |e: &ApiError| e.is_conflict();
        self.write_from_copy(name, (PATCH_RETRIES, retry), |base| async move {
            let current = self.existing(namespace, name, base).await?;
            let mut image = decode_stored(&current.value)?;
            image.status = Some(next(image.status.as_ref()));
            self.replace((namespace, name), image, &current, options, context)
                .await
        })
        .await
    }

    /// Replaces the stored `current` by `image`, as `context` says.
    pub(super) async fn replace(
        &self,
        (namespace, name): (&str, &str),
        image: CatalogImage,
        current: &Item,
        options: &WriteOptions,
        context: &Context<'_>,
    ) -> Result<Written, ApiError> {
        let old = decode_stored(&current.value)?;
        let image = prepare_for_update((namespace, name), image, &old, current.revision, context)?;
        admit(&image, Some(&old), options.secret_access.as_ref()).await?;
        if image == old {
            // Nothing changed: no write, no new resourceVersion, as kube-apiserver does.
            return Ok(Written::of(current.value.clone(), false));
        }
        self.commit_update((namespace, name), &image, current.revision, options.dry_run)
            .await
            .map(|object| Written::of(object, !options.dry_run))
    }

    /// Writes `image` over the stored object at `revision`; deletes it instead when it is
    /// being deleted and has just lost its last finalizer.
    async fn commit_update(
        &self,
        (namespace, name): (&str, &str),
        image: &CatalogImage,
        revision: u64,
        dry_run: bool,
    ) -> Result<Bytes, ApiError> {
        let finished = image.metadata.deletion_timestamp.is_some()
            && image.metadata.finalizers.as_ref().is_none_or(Vec::is_empty);
        if dry_run {
            return Ok(encode(image, revision));
        }
        let key = key(namespace, name);
        let expected = Some(revision);
        let op = if finished {
            Op::Delete { key, expected }
        } else {
            let stored = image.clone();
            Op::Update {
                key,
                expected,
                indexes: index_values(image),
                value: Box::new(move |revision| encode(&stored, revision)),
            }
        };
        let changes = self
            .store
            .write(vec![op])
            .await
            .map_err(|e| write_error(e, name))?;
        Ok(match finished {
            true => encode(image, changes[0].revision),
            false => committed(&changes),
        })
    }
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
fn committed(written: &[Committed]) -> Bytes {
    written[0]
        .value
        .clone()
        .expect("a create or update has a value")
}

/// A dry-run object: what would be stored, without a resourceVersion.
fn encode_unversioned(image: &CatalogImage) -> Bytes {
    let mut value = serde_json::to_value(image).expect("a CatalogImage always serialises");
    value["apiVersion"] = API_VERSION.into();
    value["kind"] = KIND.into();
    Bytes::from(value.to_string())
}
