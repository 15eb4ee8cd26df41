//! The one write path. A single thread owns every write: it takes all requests waiting in its
//! queue as one group, applies each transaction in turn (checking preconditions against the
//! group's own uncommitted writes), commits the whole group as one engine batch (one fsync for
//! everyone: group commit), then publishes the new revision, fans the changes out to watchers
//! and answers the writers. Compaction runs through the same thread, so it never races a write.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::codec::{self, Change, IndexEntry, IndexValues, ObjectRecord};
use crate::count::{Count, count_key, namespace_of};
use crate::engine::{Batch, EngineError, View};
use crate::store::{Core, Options};
use crate::{StorageError, WriteError};

/// Produces an object's bytes once its revision is known, so that the stored bytes carry their
/// own resourceVersion and can be served without re-encoding.
pub type BuildValue = Box<dyn FnOnce(u64) -> Bytes + Send>;

/// One write of a transaction. `expected` is an optimistic-concurrency precondition: the
/// revision the caller last saw.
pub enum Op {
    Create {
        key: String,
        indexes: Vec<(String, String)>,
        value: BuildValue,
    },
    Update {
        key: String,
        expected: Option<u64>,
        indexes: Vec<(String, String)>,
        value: BuildValue,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
}

impl Op {
    pub(crate) fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    /// Whether this op may happen to its key, live at revision `current` (None: absent).
    pub(crate) fn check(&self, current: Option<u64>) -> Result<(), WriteError> {
        let key = || self.key().to_string();
        match (self, current) {
            (Op::Create { .. }, Some(_)) => Err(WriteError::AlreadyExists { key: key() }),
            (Op::Create { .. }, None) => Ok(()),
            (_, None) => Err(WriteError::NotFound { key: key() }),
            (Op::Update { expected, .. } | Op::Delete { expected, .. }, Some(actual)) => {
                match expected.filter(|e| *e != actual) {
                    Some(expected) => Err(WriteError::Conflict {
                        key: key(),
                        expected,
                        actual,
                    }),
                    None => Ok(()),
                }
            }
        }
    }

    /// The change this op makes at `revision`.
    pub(crate) fn into_change(self, revision: u64, committed_at_ms: u64) -> Replicated {
        let (key, value, indexes) = match self {
            Op::Create {
                key,
                indexes,
                value,
            }
            | Op::Update {
                key,
                indexes,
                value,
                ..
            } => (key, Some(value(revision)), indexes),
            Op::Delete { key, .. } => (key, None, Vec::new()),
        };
        Replicated {
            revision,
            committed_at_ms,
            key,
            value,
            indexes,
        }
    }
}

/// A change decided elsewhere (a log shared by several stores), at its own revision, for this
/// store to follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Replicated {
    pub revision: u64,
    pub committed_at_ms: u64,
    pub key: String,
    /// None: the key was deleted.
    pub value: Option<Bytes>,
    pub indexes: Vec<(String, String)>,
}

/// What a write did to one key: the revision it took and the bytes stored there now (None:
/// deleted). All a writer learns; watchers get the whole [`Change`].
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    pub revision: u64,
    pub value: Option<Bytes>,
}

impl From<&Change> for Committed {
    fn from(change: &Change) -> Self {
        Committed {
            revision: change.revision,
            value: change.value.clone(),
        }
    }
}

impl From<Replicated> for Committed {
    fn from(change: Replicated) -> Self {
        Committed {
            revision: change.revision,
            value: change.value,
        }
    }
}

type WriteReply = oneshot::Sender<Result<Vec<Arc<Change>>, WriteError>>;

pub(crate) enum Request {
    Write {
        ops: Vec<Op>,
        reply: WriteReply,
    },
    /// Changes decided elsewhere, applied at their revisions.
    Replicate {
        changes: Vec<Replicated>,
        reply: WriteReply,
    },
    /// Objects of a snapshot taken elsewhere, written into an empty store; with `at`, the
    /// snapshot is complete and the store is at revision `at`, its history starting there.
    Restore {
        objects: Vec<Replicated>,
        at: Option<u64>,
        reply: WriteReply,
    },
    /// Records which shared history this store is a copy of.
    Follows {
        history: String,
        reply: WriteReply,
    },
    Compact {
        cutoff_ms: u64,
        reply: oneshot::Sender<Result<Compacted, StorageError>>,
    },
}

/// How far one compaction step got.
pub(crate) struct Compacted {
    pub revision: u64,
    pub done: bool,
}

/// History records compacted per step, so that a large backlog never holds writes up for long.
const COMPACTION_STEP: usize = 2_000;

/// How long the queue stays empty before the engine settles what it deferred (`settle`): a
/// pause, not the gaps between the groups of a burst.
const SETTLE_AFTER: Duration = Duration::from_millis(200);

/// The committer thread: groups and commits requests until every sender is gone, compacts
/// history older than the retention window every compaction interval, and settles the engine
/// when the queue pauses.
pub(crate) fn run(core: Arc<Core>, requests: Receiver<Request>, options: Options) {
    let mut last_ms = 0;
    let mut next_compaction = Instant::now() + options.compaction_interval;
    let mut unsettled = false;
    loop {
        let mut wait = next_compaction.saturating_duration_since(Instant::now());
        if unsettled {
            wait = wait.min(SETTLE_AFTER);
        }
        let first = match requests.recv_timeout(wait) {
            Ok(first) => Some(first),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if first.is_none()
            && std::mem::take(&mut unsettled)
            && let Err(e) = core.engine.settle()
        {
            tracing::warn!(error = %e, "settling the engine failed");
        }
        // Commit times only move forward, even if the wall clock steps back.
        last_ms = last_ms.max(now_ms());
        if let Some(first) = first {
            let mut group = vec![first];
            while group.len() < options.max_group {
                match requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            commit_group(&core, group, last_ms);
            unsettled = true;
        }
        if Instant::now() >= next_compaction {
            let cutoff_ms = last_ms.saturating_sub(options.retention.as_millis() as u64);
            let (reply, mut answer) = oneshot::channel();
            commit_group(&core, vec![Request::Compact { cutoff_ms, reply }], last_ms);
            next_compaction = match answer.try_recv() {
                // A backlog is worked off one step at a time between groups of writes.
                Ok(Ok(step)) if !step.done => Instant::now(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "compaction failed; will retry");
                    Instant::now() + options.compaction_interval
                }
                _ => Instant::now() + options.compaction_interval,
            };
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a request's answer goes.
enum Reply {
    Write(WriteReply),
    Compact(oneshot::Sender<Result<Compacted, StorageError>>),
}

/// What a request did to the group, answered once the group is durable.
enum Answer {
    Write(WriteReply, Vec<Arc<Change>>),
    Compact(oneshot::Sender<Result<Compacted, StorageError>>, Compacted),
}

impl Answer {
    fn into_reply(self) -> Reply {
        match self {
            Answer::Write(reply, _) => Reply::Write(reply),
            Answer::Compact(reply, _) => Reply::Compact(reply),
        }
    }
}

fn commit_group(core: &Core, requests: Vec<Request>, now_ms: u64) {
    let view = match core.engine.view() {
        Ok(view) => view,
        Err(e) => return fail_all(requests.into_iter().map(Request::into_reply), &e),
    };
    let mut group = Group {
        view,
        batch: Batch::default(),
        revision: core.revision.load(Ordering::Acquire),
        compacted: core.compacted.load(Ordering::Acquire),
        now_ms,
    };
    let mut answers = Vec::with_capacity(requests.len());
    let mut starts_following = false;
    // What a copy of a shared log commits is durable there, or only forgets: its replicated
    // changes and its compaction. It commits them without an fsync of its own (a copy that
    // loses them in a crash catches up, or compacts again), which also spares it the
    // checkpoint a durable commit would make of every lazy one before it.
    let follows = core.follows.load(Ordering::Acquire);
    let lazily = requests.iter().all(|request| match request {
        Request::Replicate { .. } => true,
        Request::Compact { .. } => follows,
        _ => false,
    });
    for request in requests {
        match request {
            Request::Write { ops, reply } => match group.apply(ops) {
                Ok(changes) => answers.push(Answer::Write(reply, changes)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::Replicate { changes, reply } => match group.replicate(changes) {
                Ok(changes) => answers.push(Answer::Write(reply, changes)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::Restore { objects, at, reply } => match group.restore(objects, at) {
                Ok(()) => answers.push(Answer::Write(reply, Vec::new())),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::Follows { history, reply } => {
                group
                    .batch
                    .put(codec::META_FOLLOWS.to_vec(), history.into_bytes());
                starts_following = true;
                answers.push(Answer::Write(reply, Vec::new()));
            }
            Request::Compact { cutoff_ms, reply } => match group.compact(cutoff_ms) {
                Ok(step) => answers.push(Answer::Compact(reply, step)),
                Err(e) => drop(reply.send(Err(e.into()))),
            },
        }
    }
    if !group.batch.is_empty() {
        group.batch.put(
            codec::META_REVISION.to_vec(),
            group.revision.to_be_bytes().to_vec(),
        );
        group.batch.put(
            codec::META_COMPACTED.to_vec(),
            group.compacted.to_be_bytes().to_vec(),
        );
        group.batch.put(
            codec::META_COUNTED.to_vec(),
            group.revision.to_be_bytes().to_vec(),
        );
        let committed = if lazily {
            core.engine.commit_lazily(&group.batch)
        } else {
            core.engine.commit(&group.batch)
        };
        if let Err(e) = committed {
            return fail_all(answers.into_iter().map(Answer::into_reply), &e);
        }
    }
    core.revision.store(group.revision, Ordering::Release);
    core.compacted.store(group.compacted, Ordering::Release);
    if starts_following {
        core.follows.store(true, Ordering::Release);
    }
    core.published.send_replace(group.revision);
    for answer in answers {
        match answer {
            Answer::Write(reply, changes) => {
                for change in &changes {
                    // No receiver is fine: nobody is watching.
                    let _ = core.events.send(change.clone());
                }
                let _ = reply.send(Ok(changes));
            }
            Answer::Compact(reply, step) => drop(reply.send(Ok(step))),
        }
    }
}

impl Request {
    fn into_reply(self) -> Reply {
        match self {
            Request::Write { reply, .. }
            | Request::Replicate { reply, .. }
            | Request::Restore { reply, .. }
            | Request::Follows { reply, .. } => Reply::Write(reply),
            Request::Compact { reply, .. } => Reply::Compact(reply),
        }
    }
}

/// Tells every requester of a group that it failed: nothing of the group was committed.
fn fail_all(replies: impl Iterator<Item = Reply>, e: &EngineError) {
    tracing::error!(error = %e, "group commit failed");
    for reply in replies {
        let failed = || StorageError::CommitFailed(e.to_string());
        match reply {
            Reply::Write(reply) => drop(reply.send(Err(failed().into()))),
            Reply::Compact(reply) => drop(reply.send(Err(failed()))),
        }
    }
}

/// The state of one group being assembled: its batch and the revision it has reached.
struct Group {
    /// Opened after the previous group committed, so it sees everything before this group.
    view: Box<dyn View>,
    batch: Batch,
    revision: u64,
    compacted: u64,
    now_ms: u64,
}

impl Group {
    /// Reads a key as this group would leave it: `txn`'s writes, then the group's, then disk.
    fn read(&self, txn: &Batch, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match txn.pending(key).or_else(|| self.batch.pending(key)) {
            Some(pending) => Ok(pending.map(<[u8]>::to_vec)),
            None => self.view.get(key),
        }
    }

    fn read_object(&self, txn: &Batch, key: &str) -> Result<Option<ObjectRecord>, EngineError> {
        self.read(txn, &codec::object_key(key))?
            .map(|bytes| ObjectRecord::decode(&bytes))
            .transpose()
    }

    /// Applies one transaction on top of the group, all of it or none of it.
    fn apply(&mut self, ops: Vec<Op>) -> Result<Vec<Arc<Change>>, WriteError> {
        let mut txn = Batch::default();
        let mut revision = self.revision;
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            let current = self.read_object(&txn, op.key())?;
            let live = current.as_ref().filter(|record| record.value.is_some());
            op.check(live.map(|record| record.revision))?;
            revision += 1;
            let change = op.into_change(revision, self.now_ms);
            changes.push(self.stage(&mut txn, change, current.as_ref())?);
        }
        self.batch.absorb(txn);
        self.revision = revision;
        Ok(changes)
    }

    /// Stages `change` over the key's `current` record: object record, index entries, history,
    /// count.
    fn stage(
        &self,
        txn: &mut Batch,
        change: Replicated,
        current: Option<&ObjectRecord>,
    ) -> Result<Arc<Change>, WriteError> {
        let live = current.filter(|record| record.value.is_some());
        let indexes = match change.value {
            Some(_) => normalise(&change.key, change.indexes)?,
            None => IndexValues::default(),
        };
        let change = Change {
            revision: change.revision,
            committed_at_ms: change.committed_at_ms,
            key: change.key,
            value: change.value,
            indexes,
            prev_revision: current.map_or(0, |record| record.revision),
            prev_value: live.and_then(|record| record.value.clone()),
            prev_indexes: live
                .map(|record| record.indexes.clone())
                .unwrap_or_default(),
        };
        stage_change(txn, &change);
        self.count(txn, &change)?;
        Ok(Arc::new(change))
    }

    /// Applies changes decided elsewhere at their own revisions, which must follow this
    /// store's without a gap; those it has already are skipped, so a log read twice applies
    /// once.
    fn replicate(&mut self, changes: Vec<Replicated>) -> Result<Vec<Arc<Change>>, WriteError> {
        let mut txn = Batch::default();
        let mut revision = self.revision;
        let mut applied = Vec::new();
        for change in changes.into_iter().filter(|c| c.revision > self.revision) {
            if change.revision != revision + 1 {
                return Err(WriteError::OutOfOrder {
                    expected: revision + 1,
                    got: change.revision,
                });
            }
            revision = change.revision;
            let current = self.read_object(&txn, &change.key)?;
            applied.push(self.stage(&mut txn, change, current.as_ref())?);
        }
        self.batch.absorb(txn);
        self.revision = revision;
        Ok(applied)
    }

    /// Writes the live objects of a snapshot into a store that has never been written; `at`
    /// completes it: the store is then at that revision, with no history before it.
    fn restore(&mut self, objects: Vec<Replicated>, at: Option<u64>) -> Result<(), WriteError> {
        if self.revision != 0 {
            return Err(WriteError::NotEmpty {
                revision: self.revision,
            });
        }
        for object in objects.into_iter().filter(|o| o.value.is_some()) {
            let indexes = normalise(&object.key, object.indexes)?;
            for (name, value) in indexes.iter() {
                let entry = IndexEntry {
                    touched: object.revision,
                    live: true,
                };
                self.batch
                    .put(codec::index_key(name, value, &object.key), entry.encode());
            }
            let record = ObjectRecord {
                revision: object.revision,
                value: object.value,
                indexes,
            };
            let mut txn = Batch::default();
            self.count_one(&mut txn, &object.key, Live::Added, object.revision)?;
            txn.put(codec::object_key(&object.key), record.encode());
            self.batch.absorb(txn);
        }
        if let Some(at) = at {
            self.revision = at;
            self.compacted = at;
        }
        Ok(())
    }

    /// Moves the count of the change's namespace when the change creates or deletes.
    fn count(&self, txn: &mut Batch, change: &Change) -> Result<(), EngineError> {
        match (change.prev_value.is_some(), change.value.is_some()) {
            (false, true) => self.count_one(txn, &change.key, Live::Added, change.revision),
            (true, false) => self.count_one(txn, &change.key, Live::Removed, change.revision),
            _ => Ok(()),
        }
    }

    /// Moves the count of `key`'s namespace by one object, at `revision`.
    fn count_one(
        &self,
        txn: &mut Batch,
        key: &str,
        live: Live,
        revision: u64,
    ) -> Result<(), EngineError> {
        let key = count_key(namespace_of(key));
        let mut count = match self.read(txn, &key)? {
            Some(bytes) => Count::decode(&bytes)?,
            None => Count::default(),
        };
        count.live = match live {
            Live::Added => count.live + 1,
            Live::Removed => count.live.saturating_sub(1),
        };
        count.revision = revision;
        txn.put(key, count.encode());
        Ok(())
    }

    /// Drops history older than `cutoff_ms`, with the tombstones and dead index entries that
    /// only that history still needed.
    fn compact(&mut self, cutoff_ms: u64) -> Result<Compacted, EngineError> {
        let mut records = codec::read_history(
            self.view.as_ref(),
            self.compacted + 1,
            u64::MAX,
            COMPACTION_STEP,
        )?;
        let done = records.len() < COMPACTION_STEP
            || records
                .last()
                .is_some_and(|c| c.committed_at_ms >= cutoff_ms);
        records.retain(|change| change.committed_at_ms < cutoff_ms);
        let no_txn = Batch::default();
        for change in &records {
            self.batch.delete(codec::history_key(change.revision));
            if change.value.is_none() {
                let object_key = codec::object_key(&change.key);
                if let Some(record) = self.read_object(&no_txn, &change.key)?
                    && record.value.is_none()
                    && record.revision == change.revision
                {
                    self.batch.delete(object_key);
                }
            }
            for (name, value) in removed(&change.prev_indexes, &change.indexes) {
                let entry_key = codec::index_key(name, value, &change.key);
                if let Some(bytes) = self.read(&no_txn, &entry_key)? {
                    let entry = IndexEntry::decode(&bytes)?;
                    if !entry.live && entry.touched == change.revision {
                        self.batch.delete(entry_key);
                    }
                }
            }
            self.compacted = change.revision;
        }
        Ok(Compacted {
            revision: self.compacted,
            done,
        })
    }
}

/// How a write changes the number of live objects.
enum Live {
    Added,
    Removed,
}

/// Writes a change's object record (or tombstone), index entry updates and history record.
fn stage_change(txn: &mut Batch, change: &Change) {
    let record = ObjectRecord {
        revision: change.revision,
        value: change.value.clone(),
        indexes: change.indexes.clone(),
    };
    txn.put(codec::object_key(&change.key), record.encode());
    for (pairs, live) in [
        (removed(&change.prev_indexes, &change.indexes), false),
        (removed(&change.indexes, &change.prev_indexes), true),
    ] {
        for (name, value) in pairs {
            let entry = IndexEntry {
                touched: change.revision,
                live,
            };
            txn.put(codec::index_key(name, value, &change.key), entry.encode());
        }
    }
    txn.put(codec::history_key(change.revision), change.encode());
}

/// The pairs of `from` that are not in `to`.
fn removed<'a>(from: &'a IndexValues, to: &IndexValues) -> Vec<(&'a str, &'a str)> {
    from.iter()
        .filter(|(name, value)| !to.contains(name, value))
        .collect()
}

fn normalise(key: &str, indexes: Vec<(String, String)>) -> Result<IndexValues, WriteError> {
    check_index_pairs(key, &indexes)?;
    Ok(IndexValues::new(indexes))
}

/// Index names must be non-empty, and neither names nor values may contain NUL (the key
/// layout's separator).
pub(crate) fn check_index_pairs(key: &str, indexes: &[(String, String)]) -> Result<(), WriteError> {
    match indexes
        .iter()
        .find(|(name, value)| name.is_empty() || name.contains('\0') || value.contains('\0'))
    {
        Some((name, value)) => Err(WriteError::InvalidIndex {
            key: key.to_string(),
            reason: format!(
                "index {name:?} = {value:?}: names must be non-empty, neither may contain NUL"
            ),
        }),
        None => Ok(()),
    }
}
