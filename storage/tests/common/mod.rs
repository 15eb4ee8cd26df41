//! What the store's test files share: a runtime, and a store's contents to compare.

use bytes::Bytes;
use catalog_storage::{ListOptions, Store};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// (key, revision, value) of everything a store lists now.
pub fn contents(store: &Store) -> Vec<(String, u64, Bytes)> {
    store
        .list(&ListOptions::default(), &mut |_| true)
        .unwrap()
        .items
        .into_iter()
        .map(|i| (i.key, i.revision, i.value))
        .collect()
}
