//! The on-disk layout: which engine key holds what, and how records are encoded.
//!
//! One ordered keyspace, five regions:
//!
//! | key                               | value                                   |
//! |-----------------------------------|-----------------------------------------|
//! | `m/revision`, `m/compacted`, `m/counted` | u64 (big endian)                 |
//! | `m/follows`                       | the shared log's history id (UTF-8)     |
//! | `n/<namespace>`                   | live objects, revision that changed it (u64 BE each; see `count.rs`) |
//! | `o/<key>`                         | [`ObjectRecord`]: latest state or tombstone |
//! | `x/<index>\0<value>\0<key>`       | [`IndexEntry`]: live now or removed when |
//! | `h/<revision as u64 BE>`          | [`Change`]: one committed change  |
//!
//! `o/` always holds the latest state, so reads at the latest revision are a plain range scan.
//! A state at an older revision S is found by walking back from `o/<key>` through the history
//! records newer than S (each names the revision it replaced). A deleted key leaves a tombstone
//! and a removed index value leaves a dead entry, both until compaction passes them, so that
//! lists at S still find what existed at S. Index names and values must not contain NUL.

use bytes::Bytes;

use std::ops::ControlFlow;

use crate::EngineError;
use crate::engine::View;

pub const META_REVISION: &[u8] = b"m/revision";
pub const META_COMPACTED: &[u8] = b"m/compacted";
/// The revision at which the `n/` counts are current.
pub const META_COUNTED: &[u8] = b"m/counted";
/// The shared log's history this store is a copy of (see `shared.rs`), when it is one.
pub const META_FOLLOWS: &[u8] = b"m/follows";
pub const COUNTS: &[u8] = b"n/";
pub const OBJECTS: &[u8] = b"o/";
pub const HISTORY: &[u8] = b"h/";

/// (index name, index value) pairs of one object, sorted and without duplicates.
///
/// Kept in their stored encoding (a count, then length-prefixed names and values), checked once
/// when decoded: reading an object costs no allocation per pair, which is most of what a list
/// of a million objects would otherwise spend.
#[derive(Clone, PartialEq, Eq)]
pub struct IndexValues(Bytes);

impl Default for IndexValues {
    fn default() -> Self {
        // A count of zero.
        IndexValues(Bytes::from_static(&[0; 4]))
    }
}

impl IndexValues {
    /// Sorts and deduplicates `pairs`.
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort();
        pairs.dedup();
        let mut w = Writer::default();
        w.0.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (name, value) in &pairs {
            w.bytes(name.as_bytes());
            w.bytes(value.as_bytes());
        }
        IndexValues(w.0.into())
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut r = Reader(&self.0);
        let count = r.u32().expect("checked when built");
        (0..count).map(move |_| {
            let mut text = || {
                std::str::from_utf8(r.bytes().expect("checked when built"))
                    .expect("checked when built")
            };
            (text(), text())
        })
    }

    /// The values of index `name`.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str, value: &str) -> bool {
        self.values(name).any(|v| v == value)
    }

    /// Checks the encoded pairs at the start of `r`'s input and takes them from `whole`.
    fn decode(r: &mut Reader, whole: &Bytes) -> Result<Self, EngineError> {
        let start = r.0;
        let count = r.u32()?;
        for _ in 0..u64::from(count) * 2 {
            std::str::from_utf8(r.bytes()?).map_err(|_| EngineError::corrupt("not UTF-8"))?;
        }
        let taken = start.len() - r.0.len();
        Ok(IndexValues(whole.slice_ref(&start[..taken])))
    }
}

impl std::fmt::Debug for IndexValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn object_key(key: &str) -> Vec<u8> {
    join(&[OBJECTS, key.as_bytes()])
}

pub fn index_prefix(name: &str, value: &str) -> Vec<u8> {
    join(&[b"x/", name.as_bytes(), b"\0", value.as_bytes(), b"\0"])
}

pub fn index_key(name: &str, value: &str, key: &str) -> Vec<u8> {
    join(&[&index_prefix(name, value), key.as_bytes()])
}

pub fn history_key(revision: u64) -> Vec<u8> {
    join(&[HISTORY, &revision.to_be_bytes()])
}

/// The smallest byte string greater than every string starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

pub fn decode_u64(bytes: &[u8]) -> Result<u64, EngineError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| EngineError::corrupt("revision is not 8 bytes"))?;
    Ok(u64::from_be_bytes(array))
}

/// The latest state of a key: its value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectRecord {
    pub revision: u64,
    pub value: Option<Bytes>,
    pub indexes: IndexValues,
}

/// An index entry: the key has the value now (`live`) or had it until `touched`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexEntry {
    pub touched: u64,
    pub live: bool,
}

/// One committed change of one key: what watchers receive and what history keeps.
/// `prev_revision` is the revision of the record it replaced (0 if there was none), which is
/// what lets a read walk back to an older state.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub committed_at_ms: u64,
    pub key: String,
    pub value: Option<Bytes>,
    pub indexes: IndexValues,
    pub prev_revision: u64,
    pub prev_value: Option<Bytes>,
    pub prev_indexes: IndexValues,
}

/// Reads at most `max` history records with revisions in `[from, until]`, in order.
pub fn read_history(
    view: &dyn View,
    from: u64,
    until: u64,
    max: usize,
) -> Result<Vec<Change>, EngineError> {
    let mut records = Vec::new();
    let mut failure = None;
    let end = history_key(until.saturating_add(1));
    let end = if until == u64::MAX {
        prefix_end(HISTORY)
    } else {
        end
    };
    view.scan(
        &history_key(from),
        &end,
        &mut |_, bytes| match Change::decode(bytes) {
            Ok(change) => {
                records.push(change);
                if records.len() < max {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(records),
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn optional(&mut self, b: Option<&Bytes>) {
        match b {
            Some(b) => {
                self.0.push(1);
                self.bytes(b);
            }
            None => self.0.push(0),
        }
    }
    fn indexes(&mut self, pairs: &IndexValues) {
        self.0.extend_from_slice(&pairs.0);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EngineError> {
        if self.0.len() < n {
            return Err(EngineError::corrupt("record is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, EngineError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, EngineError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], EngineError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, EngineError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| EngineError::corrupt("not UTF-8"))
    }
    /// Optional bytes, taken from `whole` (which this reader reads) without copying.
    fn optional(&mut self, whole: &Bytes) -> Result<Option<Bytes>, EngineError> {
        match self.take(1)?[0] {
            0 => Ok(None),
            _ => Ok(Some(whole.slice_ref(self.bytes()?))),
        }
    }
}

impl ObjectRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.revision);
        w.indexes(&self.indexes);
        w.optional(self.value.as_ref());
        w.0
    }

    /// Copies `bytes` once; the value and index pairs are views of that copy.
    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        let whole = Bytes::copy_from_slice(bytes);
        let mut r = Reader(&whole);
        Ok(ObjectRecord {
            revision: r.u64()?,
            indexes: IndexValues::decode(&mut r, &whole)?,
            value: r.optional(&whole)?,
        })
    }
}

impl IndexEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.touched);
        w.0.push(self.live as u8);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        let mut r = Reader(bytes);
        Ok(IndexEntry {
            touched: r.u64()?,
            live: r.take(1)?[0] != 0,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match (&self.prev_value, &self.value) {
            (None, _) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(_), Some(_)) => ChangeKind::Modified,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.revision);
        w.u64(self.committed_at_ms);
        w.bytes(self.key.as_bytes());
        w.optional(self.value.as_ref());
        w.indexes(&self.indexes);
        w.u64(self.prev_revision);
        w.optional(self.prev_value.as_ref());
        w.indexes(&self.prev_indexes);
        w.0
    }

    /// Copies `bytes` once; values and index pairs are views of that copy.
    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        let whole = Bytes::copy_from_slice(bytes);
        let mut r = Reader(&whole);
        Ok(Change {
            revision: r.u64()?,
            committed_at_ms: r.u64()?,
            key: r.string()?,
            value: r.optional(&whole)?,
            indexes: IndexValues::decode(&mut r, &whole)?,
            prev_revision: r.u64()?,
            prev_value: r.optional(&whole)?,
            prev_indexes: IndexValues::decode(&mut r, &whole)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let object = ObjectRecord {
            revision: 7,
            value: Some(Bytes::from_static(b"{}")),
            indexes: IndexValues::new(vec![("distro".into(), "cs9".into())]),
        };
        assert_eq!(ObjectRecord::decode(&object.encode()).unwrap(), object);
        let pairs = IndexValues::new(vec![
            ("tag".into(), "b".into()),
            ("distro".into(), "cs9".into()),
            ("tag".into(), "a".into()),
            ("tag".into(), "b".into()),
        ]);
        let decoded: Vec<_> = pairs.iter().collect();
        assert_eq!(decoded, [("distro", "cs9"), ("tag", "a"), ("tag", "b")]);
        assert_eq!(pairs.values("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert!(pairs.contains("distro", "cs9") && !pairs.contains("distro", "cs10"));
        let entry = IndexEntry {
            touched: 9,
            live: false,
        };
        assert_eq!(IndexEntry::decode(&entry.encode()).unwrap(), entry);
        let history = Change {
            revision: 8,
            committed_at_ms: 1,
            key: "ns/a".into(),
            value: None,
            indexes: IndexValues::default(),
            prev_revision: 7,
            prev_value: object.value.clone(),
            prev_indexes: object.indexes.clone(),
        };
        assert_eq!(Change::decode(&history.encode()).unwrap(), history);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let bytes = ObjectRecord {
            revision: 1,
            value: None,
            indexes: IndexValues::default(),
        }
        .encode();
        for len in 0..bytes.len() {
            assert!(ObjectRecord::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"o/ns/"), b"o/ns0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert!(index_key("tag", "v1", "ns/x") < prefix_end(&index_prefix("tag", "v1")));
        // A value that extends another never falls inside its range.
        assert!(index_key("tag", "v10", "a") > prefix_end(&index_prefix("tag", "v1")));
    }
}
