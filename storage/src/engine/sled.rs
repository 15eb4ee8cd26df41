//! The engine on sled 0.34: the default tree, a batch applied atomically, then flushed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Batch, Engine, EngineError, View, Visitor};

pub struct SledEngine {
    db: sled::Db,
}

fn fail(e: sled::Error) -> EngineError {
    EngineError(Box::new(e))
}

impl SledEngine {
    /// sled 0.34 releases its file lock from a background thread after the last `Db` handle is
    /// dropped (spacejam/sled#1234), so a reopen right after a close can find the lock still
    /// held. Opening retries that one error for a bounded time; any other error is returned.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, EngineError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes as u64);
        let give_up = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match config.open() {
                Ok(db) => return Ok(SledEngine { db }),
                Err(e) if is_lock_held(&e) && Instant::now() < give_up => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }
}

const LOCK_WAIT: Duration = Duration::from_secs(5);

/// sled reports a held lock as an `Other` I/O error whose text names it.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// sled has no read snapshots: a view reads the live tree.
struct SledView(sled::Db);

impl View for SledView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key).map_err(fail)?.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut Visitor) -> Result<(), EngineError> {
        for entry in self.0.range(start..end) {
            let (k, v) = entry.map_err(fail)?;
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl Engine for SledEngine {
    fn view(&self) -> Result<Box<dyn View>, EngineError> {
        Ok(Box::new(SledView(self.db.clone())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), EngineError> {
        self.db.apply_batch(sled_batch(batch)).map_err(fail)?;
        self.db.flush().map_err(fail)?;
        Ok(())
    }

    fn commit_lazily(&self, batch: &Batch) -> Result<(), EngineError> {
        self.db.apply_batch(sled_batch(batch)).map_err(fail)
    }
}

fn sled_batch(batch: &Batch) -> sled::Batch {
    let mut sled_batch = sled::Batch::default();
    for (key, value) in batch.writes() {
        match value {
            Some(v) => sled_batch.insert(key, v),
            None => sled_batch.remove(key),
        }
    }
    sled_batch
}
