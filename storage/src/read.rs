//! Reads: a key at the latest revision, and lists (by key range or by index value) at the
//! latest revision or at any retained revision S.
//!
//! No engine snapshot is needed. `o/<key>` holds the latest record and names its revision; if
//! that is newer than S, the history records newer than S are walked back (each names the one
//! it replaced) to the state at S. A write committed while a list runs only makes that walk one
//! step longer, so a list at S is exact whatever runs beside it, as long as S stays retained.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::codec::{self, Change, IndexEntry, IndexValues, ObjectRecord};
use crate::engine::View;
use crate::store::{Core, Store};
use crate::{EngineError, ReadError};

/// One object as stored: its key, the revision that wrote it, its bytes, its index values.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub key: String,
    pub revision: u64,
    pub value: Bytes,
    pub indexes: IndexValues,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions<'a> {
    /// Only keys starting with this (`""` for all, `"namespace/"` for one namespace).
    pub prefix: &'a str,
    /// Only keys whose index `.0` has value `.1`, answered from that index.
    pub index: Option<(&'a str, &'a str)>,
    /// Start after this key (exclusive): the position a continue token remembers.
    pub after: Option<&'a str>,
    /// At most this many items (after filtering).
    pub limit: Option<usize>,
    /// The revision to read at; `None` for the latest.
    pub revision: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// The revision the page is consistent at.
    pub revision: u64,
    /// Whether keys remain past the last item (they may not all pass the filter).
    pub more: bool,
}

impl Store {
    /// The key at the latest revision.
    pub fn get(&self, key: &str) -> Result<Option<Item>, ReadError> {
        let view = self.core().engine.view()?;
        let Some(bytes) = view.get(&codec::object_key(key))? else {
            return Ok(None);
        };
        let record = ObjectRecord::decode(&bytes)?;
        Ok(record.value.map(|value| Item {
            key: key.to_string(),
            revision: record.revision,
            value,
            indexes: record.indexes,
        }))
    }

    /// Lists what `options` selects, keeping only items for which `keep` is true.
    pub fn list(
        &self,
        options: &ListOptions,
        keep: &mut dyn FnMut(&Item) -> bool,
    ) -> Result<Page, ReadError> {
        let core = self.core();
        let at = core.readable(options.revision)?;
        let snapshot = Snapshot {
            view: core.engine.view()?,
            at,
            core,
        };
        let limit = options.limit.unwrap_or(usize::MAX);
        let mut page = Page {
            items: Vec::new(),
            revision: at,
            more: false,
        };
        let mut failure = None;
        let mut offer = |item: Option<Item>| -> ControlFlow<()> {
            if page.items.len() >= limit {
                page.more = true;
                return ControlFlow::Break(());
            }
            if let Some(item) = item.filter(|item| keep(item)) {
                page.items.push(item);
            }
            ControlFlow::Continue(())
        };
        let mut step = |result: Result<Option<Item>, ReadError>| match result {
            Ok(item) => offer(item),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        };
        match options.index {
            None => {
                let (start, end) = range(codec::OBJECTS, options);
                snapshot.view.scan(&start, &end, &mut |k, v| {
                    let key = &k[codec::OBJECTS.len()..];
                    step(decode_key(key).and_then(|key| snapshot.object(key, v)))
                })?
            }
            Some((name, value)) => {
                let prefix = codec::index_prefix(name, value);
                let (start, end) = range(&prefix, options);
                snapshot.view.scan(&start, &end, &mut |k, v| {
                    let key = &k[prefix.len()..];
                    step(decode_key(key).and_then(|key| snapshot.indexed(key, v, (name, value))))
                })?
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // A compaction that overtook the list may have removed history it walked through.
        core.readable(Some(at))?;
        Ok(page)
    }
}

/// The engine range for `options` below `region` (the objects or one index value); empty when
/// `after` is already past the prefix.
fn range(region: &[u8], options: &ListOptions) -> (Vec<u8>, Vec<u8>) {
    let base = [region, options.prefix.as_bytes()].concat();
    let end = codec::prefix_end(&base);
    let start = match options.after {
        // The smallest key after `after`.
        Some(after) => [region, after.as_bytes(), b"\0"].concat().max(base),
        None => base,
    };
    (start.min(end.clone()), end)
}

fn decode_key(key: &[u8]) -> Result<&str, ReadError> {
    std::str::from_utf8(key).map_err(|_| EngineError::corrupt("key is not UTF-8").into())
}

impl Core {
    /// Checks that revision `requested` (latest if `None`) can be read; returns it.
    pub(crate) fn readable(&self, requested: Option<u64>) -> Result<u64, ReadError> {
        let current = self.revision.load(Ordering::Acquire);
        let compacted = self.compacted.load(Ordering::Acquire);
        let at = requested.unwrap_or(current);
        if at > current {
            return Err(ReadError::Future {
                requested: at,
                current,
            });
        }
        if at < compacted {
            return Err(ReadError::Expired {
                requested: at,
                compacted,
            });
        }
        Ok(at)
    }
}

/// Reads of the state at revision `at`, through one engine view.
struct Snapshot<'a> {
    view: Box<dyn View>,
    at: u64,
    core: &'a Core,
}

impl Snapshot<'_> {
    /// The state at `at` of the key whose latest record is `record_bytes`.
    fn object(&self, key: &str, record_bytes: &[u8]) -> Result<Option<Item>, ReadError> {
        let at = self.at;
        let record = ObjectRecord::decode(record_bytes)?;
        if record.revision <= at {
            return Ok(record.value.map(|value| Item {
                key: key.to_string(),
                revision: record.revision,
                value,
                indexes: record.indexes,
            }));
        }
        let mut revision = record.revision;
        loop {
            let change = self.history(revision)?;
            if change.prev_revision <= at {
                return Ok(change.prev_value.map(|value| Item {
                    key: change.key,
                    revision: change.prev_revision,
                    value,
                    indexes: change.prev_indexes,
                }));
            }
            revision = change.prev_revision;
        }
    }

    /// The state at `at` of a key found under index value `pair`, if it had that value at `at`.
    fn indexed(
        &self,
        key: &str,
        entry_bytes: &[u8],
        (name, value): (&str, &str),
    ) -> Result<Option<Item>, ReadError> {
        let entry = IndexEntry::decode(entry_bytes)?;
        if !entry.live && entry.touched <= self.at {
            // Removed at or before `at`, and not added back since.
            return Ok(None);
        }
        let Some(record) = self.view.get(&codec::object_key(key))? else {
            return Ok(None);
        };
        let item = self.object(key, &record)?;
        Ok(item.filter(|item| item.indexes.contains(name, value)))
    }

    fn history(&self, revision: u64) -> Result<Change, ReadError> {
        match self.view.get(&codec::history_key(revision))? {
            Some(bytes) => Ok(Change::decode(&bytes)?),
            None => Err(ReadError::Expired {
                requested: self.at,
                compacted: self.core.compacted.load(Ordering::Acquire),
            }),
        }
    }
}
