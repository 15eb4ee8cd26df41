//! Commits without fsync, for a copy of a shared log. Such a commit is in the operating
//! system's page cache when it returns: a killed process loses none of it, a machine that stops
//! may lose any part of it, in any order. So the file is marked, durably, before the first one;
//! the mark names the boot it was made in, and a file found marked from another boot may be
//! torn and is not opened. A copy loses nothing by it: PostgreSQL holds what it held.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// A redb file whose `sync_data` is skipped while `syncs` is off.
#[derive(Debug)]
pub(super) struct SwitchedFile {
    file: FileBackend,
    syncs: Arc<AtomicBool>,
}

impl SwitchedFile {
    pub(super) fn new(file: File, syncs: Arc<AtomicBool>) -> Result<Self, redb::DatabaseError> {
        Ok(SwitchedFile {
            file: FileBackend::new(file)?,
            syncs,
        })
    }
}

impl StorageBackend for SwitchedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if self.syncs.load(Ordering::Acquire) {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// How often, at most, a file with commits without fsync is written back while they go on.
const WRITEBACK_INTERVAL: Duration = Duration::from_secs(1);

/// Writes back, from a thread of its own, what commits without fsync leave in the page cache.
/// Left to the kernel, it came out 30 s late (its `dirty_expire`) in bursts of 150-215 MB/s
/// that held PostgreSQL's fsyncs on the same disk, and so the writes, up for over a second.
pub(super) struct Writeback {
    nudges: SyncSender<()>,
}

impl Writeback {
    pub(super) fn start(path: &Path) -> io::Result<Self> {
        // A file of its own: redb's locks belong to its own open file, not to this one.
        let file = OpenOptions::new().write(true).open(path)?;
        let (nudges, nudged) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("copy-writeback".into())
            .spawn(move || {
                // Ends when the engine is gone (its sender with it).
                for () in nudged {
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(error = %e, "writing back the local copy failed");
                    }
                    std::thread::sleep(WRITEBACK_INTERVAL);
                }
            })?;
        Ok(Writeback { nudges })
    }

    /// Asks for a writeback of what was written so far: within the interval, never blocking.
    pub(super) fn nudge(&self) {
        // Full: one is asked for already, and will cover this.
        let _ = self.nudges.try_send(());
    }
}

/// The mark beside a file that has commits without fsync.
pub(super) struct Mark {
    path: PathBuf,
}

impl Mark {
    pub(super) fn beside(file: &Path) -> Self {
        Mark {
            path: file.with_extension("unsynced"),
        }
    }

    /// Whether the file has commits without fsync, and from which boot.
    pub(super) fn read(&self) -> io::Result<Marked> {
        match std::fs::read_to_string(&self.path) {
            Ok(boot) if boot_id().is_some_and(|id| id == boot) => Ok(Marked::ThisBoot),
            Ok(_) => Ok(Marked::OtherBoot),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Marked::No),
            Err(e) => Err(e),
        }
    }

    /// Marks the file, durably, before a commit without fsync.
    pub(super) fn set(&self) -> io::Result<()> {
        let mut file = File::create(&self.path)?;
        file.write_all(boot_id().unwrap_or_default().as_bytes())?;
        file.sync_all()?;
        // The mark's directory entry must last too.
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Takes the mark away once the file is synced. Should this be lost, a copy is rebuilt
    /// after a machine restart that it did not need: nothing worse.
    pub(super) fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether a file has commits without fsync (`Mark::read`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Marked {
    No,
    /// Made since this machine started: all of them are in the page cache.
    ThisBoot,
    /// Made before the machine restarted: the file may be torn.
    OtherBoot,
}

/// This boot's identity: Linux gives every boot a random one. Where there is none, a marked
/// file counts as from another boot, which is safe.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}
