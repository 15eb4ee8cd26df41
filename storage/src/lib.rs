//! The revisioned catalog store: objects as opaque bytes under string keys, with secondary
//! indexes, snapshots at past revisions, persisted history and watch, on an embedded engine.
//! It knows revisions, keys, bytes and index values; nothing of HTTP or of the API's schema.
//! The on-disk layout is described in `codec.rs`, the write path in `committer.rs`.

mod codec;
mod committer;
mod count;
mod engine;
mod error;
mod follow;
mod notification;
mod postgres_tls;
mod read;
mod shared;
mod store;
mod watch;

pub use codec::{Change, ChangeKind, IndexValues};
pub use committer::{BuildValue, Committed, Op, Replicated};
pub use engine::{Batch, Engine, EngineError, EngineKind, RedbEngine, SledEngine, View};
pub use error::{ReadError, StorageError, WatchError, WriteError};
pub use postgres_tls::Postgres;
pub use read::{Item, ListOptions, Page};
pub use shared::{CHANNEL, SharedLog};
pub use store::{Options, Store};
pub use tokio_postgres::Config as PostgresConfig;
pub use watch::Watch;
