//! How many objects are live in each namespace (the part of a key before its first `/`), kept
//! by every write, so that a list can say how many items remain without counting them: what
//! kube-apiserver answers in `remainingItemCount`.

use std::ops::ControlFlow;

use crate::codec::{self, ObjectRecord};
use crate::engine::{Batch, Engine, View};
use crate::store::Store;
use crate::{EngineError, ReadError};

/// The live objects of one namespace, and the revision that last changed how many there are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Count {
    pub live: u64,
    pub revision: u64,
}

impl Count {
    pub fn encode(&self) -> Vec<u8> {
        [self.live.to_be_bytes(), self.revision.to_be_bytes()].concat()
    }

    pub fn decode(bytes: &[u8]) -> Result<Count, EngineError> {
        let (live, revision) = bytes
            .split_at_checked(8)
            .filter(|(_, revision)| revision.len() == 8)
            .ok_or_else(|| EngineError::corrupt("a count is not 16 bytes"))?;
        Ok(Count {
            live: codec::decode_u64(live)?,
            revision: codec::decode_u64(revision)?,
        })
    }
}

pub(crate) fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(namespace, _)| namespace)
}

pub(crate) fn count_key(namespace: &str) -> Vec<u8> {
    [codec::COUNTS, namespace.as_bytes()].concat()
}

/// Counts anew when the counts are not known to match the objects: a store from before counts
/// were kept, or one that a version not keeping them has written to since (the counts are
/// stamped with the revision they are current at, in the same commits as the objects).
pub(crate) fn ensure_current(engine: &dyn Engine) -> Result<(), EngineError> {
    let view = engine.view()?;
    let meta = |key| -> Result<Option<u64>, EngineError> {
        view.get(key)?.map(|b| codec::decode_u64(&b)).transpose()
    };
    let revision = meta(codec::META_REVISION)?.unwrap_or(0);
    if meta(codec::META_COUNTED)? == Some(revision) {
        return Ok(());
    }
    let mut batch = Batch::default();
    visit(view.as_ref(), codec::COUNTS, &mut |key, _| {
        batch.delete(key.to_vec());
        Ok(())
    })?;
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    visit(view.as_ref(), codec::OBJECTS, &mut |key, record| {
        if ObjectRecord::decode(record)?.value.is_some() {
            let key = std::str::from_utf8(&key[codec::OBJECTS.len()..])
                .map_err(|_| EngineError::corrupt("key is not UTF-8"))?;
            *counts.entry(namespace_of(key).to_string()).or_default() += 1;
        }
        Ok(())
    })?;
    for (namespace, live) in &counts {
        let count = Count {
            live: *live,
            revision,
        };
        batch.put(count_key(namespace), count.encode());
    }
    batch.put(
        codec::META_COUNTED.to_vec(),
        revision.to_be_bytes().to_vec(),
    );
    drop(view);
    engine.commit(&batch)?;
    let objects: u64 = counts.values().sum();
    tracing::info!(
        namespaces = counts.len(),
        objects,
        "counted the live objects of each namespace"
    );
    Ok(())
}

/// What `visit` calls for each key and value.
type Each<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), EngineError> + 'a;

/// Visits every key under `prefix`, stopping at the first error.
fn visit(view: &dyn View, prefix: &[u8], each: &mut Each) -> Result<(), EngineError> {
    let mut failure = None;
    view.scan(
        prefix,
        &codec::prefix_end(prefix),
        &mut |key, value| match each(key, value) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

impl Store {
    /// How many objects were live at revision `at` in `namespace` (all of them for `None`);
    /// `None` when a count has changed since `at`, so that it no longer says.
    pub fn count(&self, namespace: Option<&str>, at: u64) -> Result<Option<u64>, ReadError> {
        let view = self.core().engine.view()?;
        let mut counts = Vec::new();
        match namespace {
            Some(namespace) => {
                if let Some(bytes) = view.get(&count_key(namespace))? {
                    counts.push(Count::decode(&bytes)?);
                }
            }
            None => visit(view.as_ref(), codec::COUNTS, &mut |_, bytes| {
                counts.push(Count::decode(bytes)?);
                Ok(())
            })?,
        }
        if counts.iter().any(|count| count.revision > at) {
            return Ok(None);
        }
        Ok(Some(counts.iter().map(|count| count.live).sum()))
    }
}
