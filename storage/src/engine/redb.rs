//! The engine on redb: one table of byte keys, every commit with immediate durability.

use std::ops::ControlFlow;
use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadableDatabase, TableDefinition};

use super::{Batch, Engine, EngineError, View};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog");

pub struct RedbEngine {
    db: Database,
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
        Ok(RedbEngine { db })
    }
}

/// A redb read transaction: an isolated snapshot.
struct RedbView(ReadOnlyTable<&'static [u8], &'static [u8]>);

impl View for RedbView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key).map_err(fail)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
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
        let txn = self.db.begin_write().map_err(fail)?;
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
        // The default durability is Immediate: commit returns after fsync.
        txn.commit().map_err(fail)
    }
}
