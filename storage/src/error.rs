//! Errors, one enum per operation, all wrapping the shared [`StorageError`]. None of them
//! knows about HTTP: the server maps them to API statuses at one boundary.

use crate::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the store is closed")]
    Closed,
    /// The engine refused a group commit; none of its writes happened.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The shared log (PostgreSQL) failed or could not be reached.
    #[error("shared log: {0}")]
    Shared(String),
    /// This store is not a copy of the shared store it was asked to follow.
    #[error("{0}")]
    Diverged(String),
    /// This store's copy cannot follow the shared log from where it is: older than the log's
    /// history, or ahead of the log (the shared store was restored from a backup). It must be
    /// rebuilt.
    #[error(
        "the local copy is at revision {revision}, where the shared log (changes {compacted}..{latest}) cannot continue it"
    )]
    Stale {
        revision: u64,
        compacted: u64,
        latest: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} is at revision {actual}, not the expected {expected}")]
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("index value of {key} is not storable: {reason}")]
    InvalidIndex { key: String, reason: String },
    /// A change to follow does not come next: the follower missed one.
    #[error("revision {got} cannot follow revision {expected} - 1")]
    OutOfOrder { expected: u64, got: u64 },
    /// A snapshot can only be restored into a store that has never been written.
    #[error("the store is at revision {revision}, not empty")]
    NotEmpty { revision: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The revision asked for is older than the retained history.
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Expired { requested: u64, compacted: u64 },
    /// The revision asked for has not been written yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    Future { requested: u64, current: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watch would start before the retained history.
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Gone { requested: u64, compacted: u64 },
    /// The watcher did not keep up with the live stream and was cut off.
    #[error("watcher fell behind the live stream by more than {buffered} changes")]
    FellBehind { buffered: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<EngineError> for ReadError {
    fn from(e: EngineError) -> Self {
        ReadError::Storage(e.into())
    }
}

impl From<EngineError> for WriteError {
    fn from(e: EngineError) -> Self {
        WriteError::Storage(e.into())
    }
}

impl From<EngineError> for WatchError {
    fn from(e: EngineError) -> Self {
        WatchError::Storage(e.into())
    }
}
