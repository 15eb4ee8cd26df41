//! The narrow contract between the store and the embedded engine underneath it: ordered byte
//! keys, point reads, range scans, and atomic durable batches. Nothing else is asked of an
//! engine, so that a distributed one can plug in later.

mod redb;
mod sled;
mod unsynced;
mod wal;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

pub use self::redb::RedbEngine;
pub use self::sled::SledEngine;

/// Errors from the engine itself (I/O, corruption). The store wraps them; they never carry
/// meaning for the API.
#[derive(Debug, thiserror::Error)]
#[error("storage engine: {0}")]
pub struct EngineError(#[from] pub(crate) Box<dyn std::error::Error + Send + Sync>);

impl EngineError {
    pub fn corrupt(what: impl Into<String>) -> Self {
        EngineError(what.into().into())
    }
}

/// A set of writes applied all together or not at all. Later writes to the same key replace
/// earlier ones, so the batch doubles as the committer's view of its own uncommitted writes.
#[derive(Debug, Default)]
pub struct Batch {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// What this batch says about `key`: `None` if it does not touch it, `Some(None)` if it
    /// deletes it.
    pub fn pending(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|v| v.as_deref())
    }

    /// Moves every write of `other` into this batch, `other`'s winning.
    pub fn absorb(&mut self, other: Batch) {
        self.writes.extend(other.writes);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The bytes of its keys and values.
    pub fn size(&self) -> u64 {
        self.writes
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
            .sum()
    }

    pub fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

pub trait Engine: Send + Sync + 'static {
    /// Opens a view to read through. Reads through one view may or may not be isolated from
    /// commits made while it lives: the store is correct either way (see `read.rs`); a view
    /// only saves the cost of opening a read transaction per key.
    fn view(&self) -> Result<Box<dyn View>, EngineError>;

    /// Applies the batch atomically and returns only once it is durable (fsync'd).
    fn commit(&self, batch: &Batch) -> Result<(), EngineError>;

    /// Applies the batch atomically, durable later: a crash of the process may lose it and the
    /// commits after it, never part of it, so the store stays a prefix of what was committed;
    /// after a crash of the machine, the engine may open empty. For changes that are durable
    /// elsewhere (a copy of a shared log, which catches up or is rebuilt after a crash).
    fn commit_lazily(&self, batch: &Batch) -> Result<(), EngineError> {
        self.commit(batch)
    }

    /// Does now the work an engine defers from its lazy commits, so that it is not done later
    /// in the way of a commit. Called when no commit is waiting; returns at once if there is
    /// nothing to do.
    fn settle(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// What a scan calls for each key and value, in order; `Break` ends the scan.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

pub trait View {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Visits the keys in `[start, end)` in ascending order until `visit` breaks.
    fn scan(&self, start: &[u8], end: &[u8], visit: &mut Visitor) -> Result<(), EngineError>;
}

/// The engines the store can run on. The choice and its figures are in storage/README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    #[default]
    Redb,
    Sled,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Redb, EngineKind::Sled];

    /// Opens (creating if needed) the engine's files inside `dir`.
    pub fn open(self, dir: &Path, cache_bytes: usize) -> Result<Box<dyn Engine>, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError(e.into()))?;
        Ok(match self {
            EngineKind::Redb => Box::new(RedbEngine::open(&dir.join("catalog.redb"), cache_bytes)?),
            EngineKind::Sled => Box::new(SledEngine::open(&dir.join("catalog.sled"), cache_bytes)?),
        })
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redb" => Ok(EngineKind::Redb),
            "sled" => Ok(EngineKind::Sled),
            other => Err(format!("unknown storage engine {other:?} (redb, sled)")),
        }
    }
}
