//! The resource's rules between HTTP and storage: what create, update, patch and delete do to
//! a CatalogImage (server-owned metadata, generation, status versus spec, finalizers, dry run,
//! optimistic concurrency), and the translation of objects to the store's keys, bytes and index
//! values. Every write, from a user or from the verification loop, goes through here.

mod apply;
mod delete;
mod fieldset;
mod limits;
mod list;
mod managed;
mod strategy;
mod watch;
mod write;

use bytes::Bytes;
use catalog_storage::{Item, ReadError, Store, WriteError};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::status::ApiError;
use crate::api::types::{API_VERSION, CatalogImage, KIND};

pub use apply::ApplyOptions;
pub use delete::DeleteOptions;
pub use limits::{MAX_OBJECT_BYTES, check_object_size};
pub use list::{ListQuery, RevisionMatch};
pub use strategy::{SecretAccess, Subresource};
pub use watch::{WatchEvent, WatchFrom, WatchStream};
pub use write::{PatchKind, WriteOptions, Written};

#[derive(Clone)]
pub struct Registry {
    store: Store,
}

/// The store key of an object.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The current time as Kubernetes serialises it: whole seconds.
pub fn now() -> Time {
    let seconds = Timestamp::now().as_second();
    Time(Timestamp::from_second(seconds).expect("the current time is representable"))
}

/// The stored bytes of an object at `revision`: the bytes carry their own resourceVersion.
pub fn encode(image: &CatalogImage, revision: u64) -> Bytes {
    let mut image = image.clone();
    image.api_version = API_VERSION.into();
    image.kind = KIND.into();
    image.metadata.resource_version = Some(revision.to_string());
    Bytes::from(serde_json::to_vec(&image).expect("a CatalogImage always serialises"))
}

/// Decodes bytes this server stored.
pub fn decode_stored(bytes: &[u8]) -> Result<CatalogImage, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Expired {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "The resourceVersion {requested} for the provided list is too old (oldest available: {compacted})."
        )),
        ReadError::Future { requested, current } => {
            ApiError::too_large_resource_version(requested, current)
        }
        ReadError::Storage(e) => e.into(),
    }
}

fn write_error(e: WriteError, name: &str) -> ApiError {
    match e {
        WriteError::AlreadyExists { .. } => ApiError::already_exists(name),
        WriteError::NotFound { .. } => ApiError::not_found(name),
        WriteError::Conflict { .. } => ApiError::stale(name),
        WriteError::InvalidIndex { reason, .. } => ApiError::bad_request(reason),
        // The registry's writes are never replicated or restored ones.
        e @ (WriteError::OutOfOrder { .. } | WriteError::NotEmpty { .. }) => {
            ApiError::internal(e.to_string())
        }
        WriteError::Storage(e) => e.into(),
    }
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        Registry { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stored item of an object, or 404.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Item, ApiError> {
        self.store
            .get(&key(namespace, name))
            .map_err(read_error)?
            .ok_or_else(|| ApiError::not_found(name))
    }

    /// The stored item a write starts from, or 404: read once this store has every write any
    /// replica acknowledged, as a consistent read is, since with several replicas a client's
    /// previous write may have been made on another one.
    pub async fn latest(&self, namespace: &str, name: &str) -> Result<Item, ApiError> {
        self.latest_if_any(namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(name))
    }

    /// The same, None for an object that does not exist.
    pub async fn latest_if_any(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Item>, ApiError> {
        self.fresh(None).await?;
        self.store.get(&key(namespace, name)).map_err(read_error)
    }
}
