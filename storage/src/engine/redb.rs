//! The engine on redb: one table of byte keys. A commit is durable once its batch is in the
//! write-ahead log (`wal.rs`); the B-tree takes it without durability and is made durable at
//! checkpoints.

use std::path::Path;
use std::sync::Mutex;

use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use super::wal::Wal;
use super::{Batch, Engine, EngineError, View, Visitor};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog");

/// The log size at which the B-tree is made durable and the log emptied: it bounds what an
/// open after a crash applies again, and lets the groups in between share each page write.
const CHECKPOINT_BYTES: u64 = 32 << 20;

/// Also checkpoint after this many commits: redb keeps a record of the pages each commit
/// without durability freed, and every commit walks all of them until the next durable one,
/// so small groups (one write each, from a single client) grew slower as the log grew. Measured
/// at 100k entries, one client: create p50 4.9 → 2.7 ms, update 5.9 → 2.5 ms (BENCHMARKS.md).
const CHECKPOINT_COMMITS: usize = 1024;

pub struct RedbEngine {
    db: Database,
    /// Locked only by commits, which the store makes from one thread.
    wal: Mutex<Wal>,
}

fn fail(e: impl Into<redb::Error>) -> EngineError {
    EngineError(Box::new(e.into()))
}

impl RedbEngine {
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, EngineError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(fail)?;
        // Create the table once so that readers never meet a missing table.
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(TABLE).map_err(fail)?;
        txn.commit().map_err(fail)?;
        let (wal, batches) = Wal::open(&path.with_extension("wal"))?;
        let engine = RedbEngine {
            db,
            wal: Mutex::new(wal),
        };
        if !batches.is_empty() {
            // What the B-tree lost in a crash: each batch holds final values, so applying
            // again what it kept changes nothing.
            let records = batches.len();
            let mut lost = Batch::default();
            for batch in batches {
                lost.absorb(batch);
            }
            engine.apply(&lost, Durability::None)?;
            engine.checkpoint(&mut engine.wal.lock().expect("not poisoned"))?;
            tracing::info!(records, "write-ahead log applied");
        }
        Ok(engine)
    }

    fn apply(&self, batch: &Batch, durability: Durability) -> Result<(), EngineError> {
        let mut txn = self.db.begin_write().map_err(fail)?;
        txn.set_durability(durability).map_err(fail)?;
        {
            let mut table = txn.open_table(TABLE).map_err(fail)?;
            for (key, value) in batch.writes() {
                match value {
                    Some(v) => {
                        table.insert(key, v).map_err(fail)?;
                    }
                    None => {
                        table.remove(key).map_err(fail)?;
                    }
                }
            }
        }
        txn.commit().map_err(fail)
    }

    /// Makes every commit so far durable in the B-tree, then empties the log.
    fn checkpoint(&self, wal: &mut Wal) -> Result<(), EngineError> {
        self.apply(&Batch::default(), Durability::Immediate)?;
        wal.clear()
    }
}

impl Drop for RedbEngine {
    /// A clean close leaves an empty log, so the next open has nothing to apply.
    fn drop(&mut self) {
        let mut wal = self.wal.lock().expect("not poisoned");
        if wal.len() > 0
            && let Err(e) = self.checkpoint(&mut wal)
        {
            tracing::warn!(error = %e, "checkpoint at close failed; the log is applied at the next open");
        }
    }
}

/// A redb read transaction: an isolated snapshot.
struct RedbView(ReadOnlyTable<&'static [u8], &'static [u8]>);

impl View for RedbView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key).map_err(fail)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut Visitor) -> Result<(), EngineError> {
        for entry in self.0.range(start..end).map_err(fail)? {
            let (k, v) = entry.map_err(fail)?;
            if visit(k.value(), v.value()).is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl Engine for RedbEngine {
    fn view(&self) -> Result<Box<dyn View>, EngineError> {
        let txn = self.db.begin_read().map_err(fail)?;
        Ok(Box::new(RedbView(txn.open_table(TABLE).map_err(fail)?)))
    }

    fn commit(&self, batch: &Batch) -> Result<(), EngineError> {
        let mut wal = self.wal.lock().expect("not poisoned");
        let before = wal.len();
        wal.append(batch)?;
        if let Err(e) = self.apply(batch, Durability::None) {
            // The batch is reported failed, so it must not come back at the next open.
            if let Err(undo) = wal.take_back(before) {
                tracing::error!(error = %undo, "a failed batch could not be taken out of the write-ahead log");
            }
            return Err(e);
        }
        if (wal.len() >= CHECKPOINT_BYTES || wal.records() >= CHECKPOINT_COMMITS)
            && let Err(e) = self.checkpoint(&mut wal)
        {
            // Nothing is lost: the log still holds it all, and the next commit tries again.
            tracing::warn!(error = %e, "checkpoint failed");
        }
        Ok(())
    }
}
