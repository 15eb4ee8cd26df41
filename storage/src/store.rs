//! The store: opening it, its options, and the public operations. Reads go straight to the
//! engine (see `read.rs`); writes and compaction go through the committer thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot};

use crate::codec::{self, Change};
use crate::committer::{self, Committed, Op, Replicated, Request};
use crate::engine::{Engine, EngineKind};
use crate::read::ListOptions;
use crate::shared::SharedLog;
use crate::watch::Watch;
use crate::{StorageError, WatchError, WriteError};

/// How long a consistent read waits for the local copy.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Objects read and sent at once when an embedded store seeds a shared one.
const SEED_PAGE: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Options {
    pub engine: EngineKind,
    /// The engine's page cache.
    pub cache_bytes: usize,
    /// How long history is kept: snapshots and watch resumption reach back this far.
    pub retention: Duration,
    /// How often the committer compacts history older than `retention`.
    pub compaction_interval: Duration,
    /// Live changes buffered for watchers; a watcher further behind than this is cut off.
    pub watch_buffer: usize,
    /// The most write requests committed together in one group.
    pub max_group: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: EngineKind::default(),
            cache_bytes: 256 << 20,
            retention: Duration::from_secs(300),
            compaction_interval: Duration::from_secs(10),
            watch_buffer: 16_384,
            max_group: 4_096,
        }
    }
}

/// What readers, watchers and the committer share.
pub(crate) struct Core {
    pub engine: Box<dyn Engine>,
    /// The latest committed revision; everything up to it is durable and readable.
    pub revision: AtomicU64,
    /// History at or below this revision is gone.
    pub compacted: AtomicU64,
    pub events: broadcast::Sender<Arc<Change>>,
    pub watch_buffer: usize,
    /// The latest committed revision again, for those who wait for one.
    pub published: tokio::sync::watch::Sender<u64>,
    /// Whether this store is a copy of a shared log (whose changes are durable there).
    pub follows: AtomicBool,
}

/// A handle on the store. Clones share it; the committer thread ends when the last is dropped,
/// after answering every write it has taken.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// A store that may have been dropped: what the follower holds, so that it ends with the store.
pub(crate) struct WeakStore(std::sync::Weak<Shared>);

impl WeakStore {
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|shared| Store { shared })
    }
}

struct Shared {
    core: Arc<Core>,
    requests: mpsc::Sender<Request>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// The log this store follows, when several stores share one (`Store::follow`).
    log: std::sync::OnceLock<SharedLog>,
    /// When the follower last read the log (Unix milliseconds; 0: never).
    followed_at: AtomicU64,
    /// How long history is kept, here and, for a follower, in the shared log.
    retention: Duration,
    compaction_interval: Duration,
}

impl Drop for Shared {
    /// Closes the queue and waits for the committer to answer what it holds, so that the engine
    /// is closed when the last handle is gone (watches keep it open until they end).
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.requests, mpsc::channel().0));
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) a store in `dir`.
    pub fn open(dir: &Path, options: Options) -> Result<Store, StorageError> {
        let engine = options.engine.open(dir, options.cache_bytes)?;
        Store::with_engine(engine, options)
    }

    /// Opens a store on an engine the caller made (tests use this to inject faults).
    pub fn with_engine(engine: Box<dyn Engine>, options: Options) -> Result<Store, StorageError> {
        crate::count::ensure_current(engine.as_ref())?;
        let view = engine.view()?;
        let read_meta = |key| -> Result<u64, StorageError> {
            Ok(view
                .get(key)?
                .map(|b| codec::decode_u64(&b))
                .transpose()?
                .unwrap_or(0))
        };
        let revision = read_meta(codec::META_REVISION)?;
        let compacted = read_meta(codec::META_COMPACTED)?;
        let follows = view.get(codec::META_FOLLOWS)?.is_some();
        drop(view);
        let core = Arc::new(Core {
            engine,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            events: broadcast::channel(options.watch_buffer).0,
            watch_buffer: options.watch_buffer,
            published: tokio::sync::watch::Sender::new(revision),
            follows: AtomicBool::new(follows),
        });
        let (retention, compaction_interval) = (options.retention, options.compaction_interval);
        let (requests, inbox) = mpsc::channel();
        let committer_core = core.clone();
        let committer = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || committer::run(committer_core, inbox, options))
            .map_err(|e| StorageError::Engine(crate::EngineError(e.into())))?;
        tracing::info!(revision, compacted, "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
                core,
                requests,
                committer: Some(committer),
                log: std::sync::OnceLock::new(),
                followed_at: AtomicU64::new(0),
                retention,
                compaction_interval,
            }),
        })
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.shared.core
    }

    /// The latest committed revision.
    pub fn revision(&self) -> u64 {
        self.core().revision.load(Ordering::Acquire)
    }

    /// The oldest revision that snapshots and watches can still start from.
    pub fn compacted(&self) -> u64 {
        self.core().compacted.load(Ordering::Acquire)
    }

    /// Commits `ops` as one atomic, durable transaction; each op gets its own revision, in order.
    /// A store that follows a shared log commits there and answers once PostgreSQL has
    /// committed, before its own copy has the change: a read that must see it waits until the
    /// copy has (`catch_up`, `wait_for`), as on any other replica.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Committed>, WriteError> {
        if let Some(log) = self.shared.log.get() {
            return log.write(ops).await;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write { ops, reply })?;
        let changes = answer.await.map_err(|_| StorageError::Closed)??;
        Ok(changes
            .iter()
            .map(|change| Committed::from(change.as_ref()))
            .collect())
    }

    /// Waits until this store has reached `revision` (at most `FOLLOW_WAIT`).
    pub async fn wait_for(&self, revision: u64) -> Result<(), StorageError> {
        let mut published = self.core().published.subscribe();
        let reached = published.wait_for(|current| *current >= revision);
        match tokio::time::timeout(FOLLOW_WAIT, reached).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StorageError::Closed),
            Err(_) => Err(StorageError::Shared(format!(
                "the local copy did not reach revision {revision} within {FOLLOW_WAIT:?}"
            ))),
        }
    }

    /// For a read that must not be older than any acknowledged write: waits until this store
    /// has reached the shared log's current revision. Nothing to wait for without one; and
    /// while the log cannot be reached, the local copy is served as it is: stale by at most
    /// the time since `followed_at` (the server stops being ready soon after).
    pub async fn catch_up(&self) -> Result<(), StorageError> {
        let Some(log) = self.shared.log.get() else {
            return Ok(());
        };
        match log.current_revision().await {
            Ok(revision) => self.wait_for(revision).await,
            Err(e) => {
                tracing::debug!(error = %e, "shared log unreachable: serving the local copy");
                Ok(())
            }
        }
    }

    /// The shared history this store is a copy of, if any.
    fn history(&self) -> Result<Option<String>, StorageError> {
        let view = self.core().engine.view()?;
        let bytes = view.get(codec::META_FOLLOWS)?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn set_history(&self, history: String) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Follows { history, reply })?;
        let written = answer.await.map_err(|_| StorageError::Closed)?;
        written.map(drop).map_err(into_storage)
    }

    /// The live objects at `revision`, a page at a time from the start: what seeds a shared
    /// store, without holding the whole store in memory.
    fn live_pages(
        &self,
        revision: u64,
    ) -> impl FnMut() -> Result<Option<Vec<Replicated>>, StorageError> + '_ {
        let mut after: Option<String> = None;
        let mut done = false;
        move || {
            if done {
                return Ok(None);
            }
            let options = ListOptions {
                after: after.as_deref(),
                limit: Some(SEED_PAGE),
                revision: Some(revision),
                ..ListOptions::default()
            };
            let page = self
                .list(&options, &mut |_| true)
                .map_err(|e| StorageError::Shared(e.to_string()))?;
            done = !page.more;
            after = page.items.last().map(|item| item.key.clone());
            let objects = page.items.into_iter().map(|item| Replicated {
                revision: item.revision,
                committed_at_ms: 0,
                key: item.key,
                value: Some(item.value),
                indexes: item
                    .indexes
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            });
            Ok(Some(objects.collect()))
        }
    }

    /// Whether this store holds no object (read from the engine: a store part way through a
    /// restore is not readable at its revision).
    fn is_empty(&self) -> Result<bool, StorageError> {
        let view = self.core().engine.view()?;
        let mut empty = true;
        let end = codec::prefix_end(codec::OBJECTS);
        view.scan(codec::OBJECTS, &end, &mut |_, _| {
            empty = false;
            std::ops::ControlFlow::Break(())
        })?;
        Ok(empty)
    }

    /// When this store, following a shared log, last read it; None when it follows none or
    /// has not read it yet.
    pub fn followed_at(&self) -> Option<SystemTime> {
        let ms = self.shared.followed_at.load(Ordering::Acquire);
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Whether this store follows a shared log.
    pub fn follows(&self) -> bool {
        self.shared.log.get().is_some()
    }

    pub(crate) fn mark_followed(&self) {
        self.shared
            .followed_at
            .store(unix_ms(SystemTime::now()), Ordering::Release);
    }

    /// How long history is kept, and how often it is compacted.
    pub(crate) fn retention(&self) -> (Duration, Duration) {
        (self.shared.retention, self.shared.compaction_interval)
    }

    /// Makes this store a replica of `log`: restored from its snapshot when it has never been
    /// written, then following it for as long as the store lives; its writes go to the log.
    pub async fn follow(&self, log: SharedLog) -> Result<(), StorageError> {
        let history = log.history().await?;
        match (self.history()?, self.revision()) {
            (Some(ours), _) if ours != history => {
                return Err(StorageError::Diverged(format!(
                    "this store copies shared history {ours}, not {history}"
                )));
            }
            (Some(_), revision) => {
                let (compacted, latest) = (log.compacted().await?, log.revision().await?);
                if revision < compacted || revision > latest {
                    return Err(StorageError::Stale {
                        revision,
                        compacted,
                        latest,
                    });
                }
            }
            // A restore that did not finish: its pages are of an older snapshot.
            (None, 0) if !self.is_empty()? => {
                return Err(StorageError::Stale {
                    revision: 0,
                    compacted: log.compacted().await?,
                    latest: log.revision().await?,
                });
            }
            (None, 0) => {
                let (at, mut pages) = log.snapshot().await?;
                while let Some(page) = pages.recv().await {
                    self.restore(page?, None).await.map_err(into_storage)?;
                }
                self.restore(Vec::new(), Some(at))
                    .await
                    .map_err(into_storage)?;
            }
            // A store of its own, joining: it can only become the shared store's beginning.
            (None, revision) => {
                if log.revision().await? != 0 {
                    return Err(StorageError::Diverged(format!(
                        "this store (at revision {revision}) is not a copy of the shared store, \
                         which is not empty"
                    )));
                }
                log.seed(revision, self.live_pages(revision)).await?;
            }
        }
        self.set_history(history).await?;
        let store = WeakStore(Arc::downgrade(&self.shared));
        let follower = log.clone();
        tokio::spawn(async move { crate::follow::run(store, follower).await });
        let _ = self.shared.log.set(log);
        self.catch_up().await?;
        self.mark_followed();
        Ok(())
    }

    /// Applies changes decided elsewhere at their own revisions (see [`Replicated`]); returns
    /// the changes it applied, as watchers see them.
    pub async fn replicate(
        &self,
        changes: Vec<Replicated>,
    ) -> Result<Vec<Arc<Change>>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Replicate { changes, reply })?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    /// Writes part of a snapshot taken elsewhere into a store never written; the part with
    /// `at` completes it, at that revision.
    pub async fn restore(
        &self,
        objects: Vec<Replicated>,
        at: Option<u64>,
    ) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Restore { objects, at, reply })?;
        answer.await.map_err(|_| StorageError::Closed)?.map(drop)
    }

    /// Drops history committed before `older_than`; returns the new compacted revision.
    pub async fn compact(&self, older_than: SystemTime) -> Result<u64, StorageError> {
        loop {
            let (reply, answer) = oneshot::channel();
            self.send(Request::Compact {
                cutoff_ms: unix_ms(older_than),
                reply,
            })?;
            let step = answer.await.map_err(|_| StorageError::Closed)??;
            if step.done {
                return Ok(step.revision);
            }
        }
    }

    fn send(&self, request: Request) -> Result<(), StorageError> {
        self.shared
            .requests
            .send(request)
            .map_err(|_| StorageError::Closed)
    }

    /// Watches every change after revision `after`: the retained history first, then live.
    pub fn watch(&self, after: u64) -> Result<Watch, WatchError> {
        Watch::start(self.core().clone(), after)
    }
}

fn into_storage(e: WriteError) -> StorageError {
    match e {
        WriteError::Storage(e) => e,
        other => StorageError::Shared(other.to_string()),
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
