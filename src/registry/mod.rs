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

    /// The stored item a write starts from, None if there is none.
    async fn base(
        &self,
        namespace: &str,
        name: &str,
        base: Base,
    ) -> Result<Option<Item>, ApiError> {
        if base == Base::Latest {
            self.fresh(None).await?;
        }
        self.store.get(&key(namespace, name)).map_err(read_error)
    }

    /// The same for an object that must exist: 404 if it does not.
    async fn existing(&self, namespace: &str, name: &str, base: Base) -> Result<Item, ApiError> {
        self.base(namespace, name, base)
            .await?
            .ok_or_else(|| ApiError::not_found(name))
    }

    /// Runs a write, tried again on an error `retry` accepts, at most `retries` times.
    ///
    /// With several replicas, the first try starts from this replica's copy as it is, without
    /// first catching it up with PostgreSQL, as kube-apiserver's `GuaranteedUpdate` starts from
    /// its watch cache (k8s.io/apiserver, storage/etcd3/store.go, `cachedExistingObject`): a
    /// write the store takes proves that the copy was current, since it carries the revision
    /// it started from as its precondition, checked in PostgreSQL's transaction. Any other
    /// outcome (a refusal, a 404, a no-op, a dry run) may come from a copy that has not yet
    /// caught up, so it is computed again from the latest; that try is not a retry. A
    /// replica's writes so wait neither for a consistent read nor for its copy. Without a
    /// shared log the copy is the latest, and the first try is from the latest.
    async fn write_from_copy<T: Stored, Try: Future<Output = Result<T, ApiError>>>(
        &self,
        name: &str,
        (retries, retry): (usize, impl Fn(&ApiError) -> bool),
        write: impl Fn(Base) -> Try,
    ) -> Result<T, ApiError> {
        if self.store.follows() {
            let result = write(Base::Copy).await;
            if result.as_ref().is_ok_and(T::stored) {
                return result;
            }
        }
        for _ in 0..retries {
            match write(Base::Latest).await {
                Err(e) if retry(&e) => continue,
                result => return result,
            }
        }
        Err(ApiError::stale(name))
    }
}

/// Where the object a write starts from is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// This replica's copy as it is: it may lack other replicas' latest writes.
    Copy,
    /// The copy once it has every write any replica acknowledged.
    Latest,
}

/// What one try of a write did.
trait Stored {
    /// Whether the store took a write (not a no-op, a dry run or a refusal).
    fn stored(&self) -> bool;
}

/// A write tried once, as the request asks: no retry on a conflict.
const ONCE: (usize, fn(&ApiError) -> bool) = (1, |_| false);
