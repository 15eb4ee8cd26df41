//! The engine on redb: one table of byte keys. A commit is durable once its batch is in the
//! write-ahead log (`wal.rs`); the B-tree takes it without durability and is made durable at
//! checkpoints. Lazy commits (a copy's) go into the B-tree without durability and are
//! written out to the file later, without fsync (`unsynced.rs`).

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use super::unsynced::{Mark, Marked, SwitchedFile, Writeback};
use super::wal::Wal;
use super::{Batch, Engine, EngineError, View, Visitor};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("catalog");

/// The log size at which the B-tree is made durable and the log emptied: it bounds what an
/// open after a crash applies again, and lets the groups in between share each page write.
/// Lazy commits are written out at the same size: what a burst leaves in memory to write at
/// its end. Bounded by count alone, a copy held up to half its cache (128 MiB) of dirty
/// pages at the end of a burst, and the three copies' write-outs and writebacks kept the
/// disk busy for 3-4 s (watch delivery p99 up to 0.7 s meanwhile; BENCHMARKS.md).
const CHECKPOINT_BYTES: u64 = 32 << 20;

/// Also checkpoint (or write out lazy commits) after this many commits: redb keeps a record
/// of the pages each commit without durability freed, and every commit walks all of them until
/// the next complete one, so small groups (one write each, from a single client) grew slower as
/// the log grew. Measured at 100k entries, one client: create p50 4.9 → 2.7 ms, update 5.9 →
/// 2.5 ms (BENCHMARKS.md).
const CHECKPOINT_COMMITS: usize = 1024;

pub struct RedbEngine {
    db: Database,
    /// Locked only by commits, which the store makes from one thread.
    log: Mutex<Log>,
    /// Whether redb's commits fsync: off while lazy commits are written out.
    syncs: Arc<AtomicBool>,
    mark: Mark,
    writeback: Writeback,
}

/// What is not yet durable: batches in the write-ahead log whose B-tree commits were not, or
/// lazy commits (never both: a log record replayed after a crash over a B-tree that lost the
/// lazy commits before it would leave a gap, so each kind of commit first checkpoints the
/// other).
struct Log {
    wal: Wal,
    /// Lazy commits since the B-tree's last complete commit (with or without fsync): redb
    /// holds them in memory.
    lazy_commits: usize,
    /// The bytes of their batches.
    lazy_bytes: u64,
    /// Whether lazy commits were written out without fsync since the last checkpoint.
    unsynced: bool,
}

fn fail(e: impl Into<redb::Error>) -> EngineError {
    EngineError(Box::new(e.into()))
}

impl RedbEngine {
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, EngineError> {
        let mark = Mark::beside(path);
        let marked = mark.read().map_err(fail)?;
        if marked == Marked::OtherBoot {
            // Only a copy commits lazily, and a copy is rebuilt from its shared log.
            tracing::warn!(path = %path.display(), "the local copy was written without fsync before the machine restarted and may be torn: removed, to be rebuilt");
            for file in [path.to_path_buf(), path.with_extension("wal")] {
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(fail(e));
                }
            }
            mark.clear().map_err(fail)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(fail)?;
        let syncs = Arc::new(AtomicBool::new(true));
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(SwitchedFile::new(file, syncs.clone()).map_err(fail)?)
            .map_err(fail)?;
        // Create the table once so that readers never meet a missing table.
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(TABLE).map_err(fail)?;
        txn.commit().map_err(fail)?;
        let (wal, batches) = Wal::open(&path.with_extension("wal"))?;
        let engine = RedbEngine {
            db,
            log: Mutex::new(Log {
                wal,
                lazy_commits: 0,
                lazy_bytes: 0,
                // What was written out in this boot may still be only in the page cache.
                unsynced: marked == Marked::ThisBoot,
            }),
            syncs,
            writeback: Writeback::start(path).map_err(fail)?,
            mark,
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
            engine.checkpoint(&mut engine.log())?;
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

    /// Makes every commit so far durable in the B-tree (the fsync covers what was written out
    /// without one), then empties the log.
    fn checkpoint(&self, log: &mut Log) -> Result<(), EngineError> {
        self.apply(&Batch::default(), Durability::Immediate)?;
        log.forget_lazy_commits();
        if log.unsynced {
            self.mark.clear().map_err(fail)?;
            log.unsynced = false;
        }
        log.wal.clear()
    }

    /// Writes the lazy commits out to the file as a complete B-tree, without fsync: from then
    /// on a killed process keeps them (see `unsynced.rs`), and redb no longer holds them.
    ///
    /// A copy used to make its lazy commits durable, with an fsync, every 1,024 commits. After a
    /// burst of writes that took it 2-3 s, during which it applied nothing and its replica's
    /// writes and consistent reads waited (BENCHMARKS.md). Nothing needs that fsync: the
    /// shared log holds every change.
    fn write_out(&self, log: &mut Log) -> Result<(), EngineError> {
        if !log.unsynced {
            self.mark.set().map_err(fail)?;
            log.unsynced = true;
        }
        self.syncs.store(false, Ordering::Release);
        let written = self.apply(&Batch::default(), Durability::Immediate);
        self.syncs.store(true, Ordering::Release);
        written?;
        log.forget_lazy_commits();
        self.writeback.nudge();
        Ok(())
    }

    fn checkpoint_if_full(&self, log: &mut Log) {
        if log.is_full()
            && let Err(e) = self.checkpoint(log)
        {
            // Nothing is lost: the log still holds its batches (lazy commits are durable
            // elsewhere), and the next commit tries again.
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("not poisoned")
    }
}

impl Log {
    fn is_empty(&self) -> bool {
        self.wal.len() == 0 && self.lazy_commits == 0 && !self.unsynced
    }

    /// Whether a checkpoint is due (see `CHECKPOINT_BYTES` and `CHECKPOINT_COMMITS`).
    fn is_full(&self) -> bool {
        full(self.wal.len(), self.wal.records())
    }

    /// Whether lazy commits are due to be written out, by the same measures.
    fn lazy_is_full(&self) -> bool {
        full(self.lazy_bytes, self.lazy_commits)
    }

    fn forget_lazy_commits(&mut self) {
        self.lazy_commits = 0;
        self.lazy_bytes = 0;
    }
}

fn full(bytes: u64, commits: usize) -> bool {
    bytes >= CHECKPOINT_BYTES || commits >= CHECKPOINT_COMMITS
}

impl Drop for RedbEngine {
    /// A clean close leaves an empty log, so the next open has nothing to apply.
    fn drop(&mut self) {
        let mut log = self.log();
        if !log.is_empty()
            && let Err(e) = self.checkpoint(&mut log)
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
        let mut log = self.log();
        if log.lazy_commits > 0 || log.unsynced {
            self.checkpoint(&mut log)?;
        }
        let before = log.wal.len();
        log.wal.append(batch)?;
        if let Err(e) = self.apply(batch, Durability::None) {
            // The batch is reported failed, so it must not come back at the next open.
            if let Err(undo) = log.wal.take_back(before) {
                tracing::error!(error = %undo, "a failed batch could not be taken out of the write-ahead log");
            }
            return Err(e);
        }
        self.checkpoint_if_full(&mut log);
        Ok(())
    }

    fn commit_lazily(&self, batch: &Batch) -> Result<(), EngineError> {
        let mut log = self.log();
        if log.wal.len() > 0 {
            self.checkpoint(&mut log)?;
        }
        self.apply(batch, Durability::None)?;
        log.lazy_commits += 1;
        log.lazy_bytes += batch.size();
        self.writeback.nudge();
        if log.lazy_is_full()
            && let Err(e) = self.write_out(&mut log)
        {
            // The commit stands; the next one tries again.
            tracing::warn!(error = %e, "writing out lazy commits failed");
        }
        Ok(())
    }

    /// Writes out the lazy commits while nobody waits, rather than at the 1,024th in the way
    /// of the next.
    fn settle(&self) -> Result<(), EngineError> {
        let mut log = self.log();
        if log.lazy_commits == 0 {
            return Ok(());
        }
        self.write_out(&mut log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Batch {
        let mut batch = Batch::default();
        batch.put(key.as_bytes().to_vec(), b"v".to_vec());
        batch
    }

    /// The keys an engine holds when opened on the files `commits` left, copied before it
    /// closed: as a process killed then would have left them; `restart` may change the copies
    /// first.
    fn after_crash(
        dir: &Path,
        commits: impl FnOnce(&RedbEngine),
        restart: impl FnOnce(&Path),
    ) -> Vec<String> {
        let (path, copy) = (dir.join("live.redb"), dir.join("crashed.redb"));
        let engine = RedbEngine::open(&path, 1 << 20).unwrap();
        commits(&engine);
        for extension in ["redb", "wal", "unsynced"] {
            let from = path.with_extension(extension);
            if from.exists() {
                std::fs::copy(from, copy.with_extension(extension)).unwrap();
            }
        }
        drop(engine);
        restart(&copy);
        let engine = RedbEngine::open(&copy, 1 << 20).unwrap();
        let mut keys = Vec::new();
        let view = engine.view().unwrap();
        view.scan(b"", b"\xff", &mut |key, _| {
            keys.push(String::from_utf8(key.to_vec()).unwrap());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        keys
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_durable_and_lazy_commits() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // A durable commit after lazy ones makes them durable too: no gap before it.
        let keys = after_crash(
            a.path(),
            |engine| {
                engine.commit(&put("1")).unwrap();
                engine.commit_lazily(&put("2")).unwrap();
                engine.commit(&put("3")).unwrap();
            },
            |_| {},
        );
        assert_eq!(keys, ["1", "2", "3"]);
        // Lazy commits after durable ones may be lost, never the durable ones before them.
        let keys = after_crash(
            b.path(),
            |engine| {
                engine.commit(&put("1")).unwrap();
                engine.commit_lazily(&put("2")).unwrap();
                engine.commit_lazily(&put("3")).unwrap();
            },
            |_| {},
        );
        assert!(keys.starts_with(&["1".to_string()]), "{keys:?}");
        assert!(!keys.contains(&"3".to_string()) || keys.contains(&"2".to_string()));
    }

    #[test]
    fn lazy_commits_written_out_outlive_the_process_and_not_the_machine() {
        let lazily = |engine: &RedbEngine| {
            engine.commit_lazily(&put("1")).unwrap();
            engine.settle().unwrap();
            engine.commit_lazily(&put("2")).unwrap();
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // In the same boot, what was written out is in the page cache, so in the file.
        assert_eq!(after_crash(a.path(), lazily, |_| {}), ["1"]);
        // After a restart of the machine the file may be torn: it opens empty, to be rebuilt.
        let other_boot = |copy: &Path| {
            std::fs::write(copy.with_extension("unsynced"), "an earlier boot").unwrap();
        };
        assert!(after_crash(b.path(), lazily, other_boot).is_empty());
        assert!(!b.path().join("crashed.unsynced").exists());
    }

    #[test]
    fn lazy_commits_are_written_out_once_their_batches_reach_the_checkpoint_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let engine = RedbEngine::open(&path, 1 << 20).unwrap();
        let quarter = |key: &str| {
            let mut batch = Batch::default();
            batch.put(key.into(), vec![0; CHECKPOINT_BYTES as usize / 4]);
            batch
        };
        for key in ["1", "2", "3"] {
            engine.commit_lazily(&quarter(key)).unwrap();
        }
        let written_out = || path.with_extension("unsynced").exists();
        assert!(!written_out(), "three quarters stay in memory");
        engine.commit_lazily(&quarter("4")).unwrap();
        assert!(written_out(), "the fourth quarter writes them out");
    }

    #[test]
    fn a_durable_commit_syncs_what_was_written_out_and_unmarks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let mark = path.with_extension("unsynced");
        let engine = RedbEngine::open(&path, 1 << 20).unwrap();
        engine.commit(&put("1")).unwrap();
        assert!(!mark.exists());
        engine.commit_lazily(&put("2")).unwrap();
        assert!(
            !mark.exists(),
            "a lazy commit stays in memory until written out"
        );
        engine.settle().unwrap();
        assert!(mark.exists());
        engine.commit(&put("3")).unwrap();
        assert!(!mark.exists());
        engine.commit_lazily(&put("4")).unwrap();
        engine.settle().unwrap();
        drop(engine);
        assert!(!mark.exists(), "a clean close syncs too");
    }
}
