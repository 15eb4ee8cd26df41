//! The log several stores share, in PostgreSQL: the authoritative order of every write, the
//! latest state, and the recent history, which each replica's local store follows
//! ([`Store::replicate`](crate::Store::replicate)).
//!
//! A write is one PostgreSQL transaction that takes the next revisions under the row lock of
//! `catalog_meta`, so that commit order is revision order and a revision is never skipped (no
//! sequence, no gap-filling as kine must do); its preconditions are checked in the same
//! transaction, so two replicas can never both win; it notifies `catalog_log` on commit.
//!
//! | table | rows |
//! |---|---|
//! | `catalog_meta` | one: the latest revision, the revision history is kept after, and the history's id (a UUID that a local copy records, so a store of another history never follows this one) |
//! | `catalog_objects` | the latest state: key, revision, bytes, index names and values |
//! | `catalog_log` | one row a change: revision, commit time, key, bytes (NULL: deleted), indexes |

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::committer::{Op, Replicated, check_index_pairs};
use crate::{ReadError, StorageError, WriteError};

/// The channel a commit notifies, with its last revision as payload.
pub const CHANNEL: &str = "catalog_log";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL,
    compacted bigint NOT NULL,
    history text NOT NULL
);
INSERT INTO catalog_meta VALUES (1, 0, 0, gen_random_uuid()::text) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS catalog_objects (
    key text PRIMARY KEY,
    revision bigint NOT NULL,
    value bytea NOT NULL,
    index_names text[] NOT NULL,
    index_values text[] NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_log (
    revision bigint PRIMARY KEY,
    committed_at_ms bigint NOT NULL,
    key text NOT NULL,
    value bytea,
    index_names text[] NOT NULL,
    index_values text[] NOT NULL
);
";

/// The advisory lock that serialises creating the tables.
const SCHEMA_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog"

/// Connections kept to PostgreSQL: writers hold one for a transaction.
const POOL_SIZE: usize = 16;
/// How long getting or making a connection may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An error with its causes: tokio-postgres says only "db error" and keeps PostgreSQL's
/// message in the source.
fn shared_error(e: impl std::error::Error) -> StorageError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StorageError::Shared(text)
}

#[derive(Clone)]
pub struct SharedLog {
    pool: Pool,
    /// For the listener's own connection.
    config: tokio_postgres::Config,
    /// This replica's writes, committed in groups.
    writes: mpsc::UnboundedSender<WriteRequest>,
    /// Consistent reads waiting for the current revision, answered in batches.
    revision_requests: mpsc::UnboundedSender<RevisionReply>,
}

/// A connection that listens for the log's notifications; closed when its connection is.
pub(crate) struct Listener {
    _client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }
}

impl SharedLog {
    /// Connects (lazily, through a pool) and creates the tables if they are missing.
    pub async fn connect(config: tokio_postgres::Config) -> Result<SharedLog, StorageError> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Bounded waits everywhere: with PostgreSQL gone a write fails in seconds, not hangs.
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
            .map_err(shared_error)?;
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(group_writer(pool.clone(), queue));
        let (revision_requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(revision_batches(pool.clone(), waiting));
        let log = SharedLog {
            pool,
            config,
            writes,
            revision_requests,
        };
        // Replicas starting together would race to create the tables: one at a time.
        let mut client = log.client().await?;
        let tx = client.transaction().await.map_err(shared_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(shared_error)?;
        tx.batch_execute(SCHEMA).await.map_err(shared_error)?;
        tx.commit().await.map_err(shared_error)?;
        Ok(log)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(shared_error)
    }

    /// Listens for commits on a connection of its own: each wakes `woken`.
    pub(crate) async fn listen(&self, woken: Arc<Notify>) -> Result<Listener, StorageError> {
        let (client, mut connection) = self.config.connect(NoTls).await.map_err(shared_error)?;
        let task = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => woken.notify_one(),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(shared_error)?;
        Ok(Listener {
            _client: client,
            task,
        })
    }

    async fn meta<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        &self,
        column: &str,
    ) -> Result<T, StorageError> {
        read_meta(&self.pool, column).await
    }

    /// The latest revision committed to the log.
    pub async fn revision(&self) -> Result<u64, StorageError> {
        Ok(self.meta::<i64>("revision").await? as u64)
    }

    /// Commits `ops` as one transaction; each op gets the next revision. Returns the last.
    /// The writes of this replica that wait together share one PostgreSQL transaction (see
    /// [`commit_group`]).
    pub async fn write(&self, ops: Vec<Op>) -> Result<u64, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { ops, reply })
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    /// The log's current revision for a consistent read, one query for every reader waiting
    /// when it starts (as etcd batches ReadIndex requests): a reader waits for a query that
    /// starts after it asked, so the answer is at least every revision acknowledged before the
    /// read began, and a thousand concurrent reads cost one query instead of a thousand.
    pub(crate) async fn current_revision(&self) -> Result<u64, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.revision_requests
            .send(reply)
            .map_err(|_| StorageError::Closed)?;
        let answer = answer.await.map_err(|_| StorageError::Closed)?;
        answer.map_err(StorageError::Shared)
    }

    /// The id of this log's history.
    pub async fn history(&self) -> Result<String, StorageError> {
        self.meta("history").await
    }

    /// Makes an empty shared store start from `objects`, the live objects of a store at
    /// `revision` (the migration of an embedded store); refused unless it is still empty.
    pub async fn seed(&self, objects: Vec<Replicated>, revision: u64) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(shared_error)?;
        let current: i64 = tx
            .query_one(
                "SELECT revision FROM catalog_meta WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(shared_error)?
            .get(0);
        if current != 0 {
            return Err(StorageError::Shared(format!(
                "the shared store is at revision {current}, not empty: nothing to seed"
            )));
        }
        for object in objects {
            let (names, values): (Vec<String>, Vec<String>) = object.indexes.into_iter().unzip();
            let bytes = object.value.map(|v| v.to_vec()).unwrap_or_default();
            tx.execute(
                "INSERT INTO catalog_objects VALUES ($1, $2, $3, $4, $5)",
                &[
                    &object.key,
                    &(object.revision as i64),
                    &bytes,
                    &names,
                    &values,
                ],
            )
            .await
            .map_err(shared_error)?;
        }
        tx.execute(
            "UPDATE catalog_meta SET revision = $1, compacted = $1 WHERE id = 1",
            &[&(revision as i64)],
        )
        .await
        .map_err(shared_error)?;
        tx.commit().await.map_err(shared_error)
    }

    /// The revision the log's history starts after.
    pub async fn compacted(&self) -> Result<u64, StorageError> {
        Ok(self.meta::<i64>("compacted").await? as u64)
    }

    /// Drops the log's changes up to the last one committed before `cutoff_ms` (a prefix:
    /// commit times are PostgreSQL's, taken under the revision lock), always keeping the latest
    /// change; returns the revision the history now starts after.
    pub async fn compact(&self, cutoff_ms: u64) -> Result<u64, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH cut AS (
                     SELECT COALESCE(MAX(revision), 0) AS upto FROM catalog_log
                     WHERE committed_at_ms < $1
                       AND revision < (SELECT revision FROM catalog_meta WHERE id = 1)),
                 dropped AS (
                     DELETE FROM catalog_log WHERE revision <= (SELECT upto FROM cut))
                 UPDATE catalog_meta SET compacted = GREATEST(compacted, (SELECT upto FROM cut))
                 WHERE id = 1 RETURNING compacted",
                &[&(cutoff_ms as i64)],
            )
            .await
            .map_err(shared_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// At most `limit` changes after revision `after`, in order; `Expired` when the log no
    /// longer reaches back that far.
    pub async fn changes(&self, after: u64, limit: u32) -> Result<Vec<Replicated>, ReadError> {
        let compacted = self.compacted().await?;
        if after < compacted {
            return Err(ReadError::Expired {
                requested: after,
                compacted,
            });
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT revision, committed_at_ms, key, value, index_names, index_values
                 FROM catalog_log WHERE revision > $1 ORDER BY revision LIMIT $2",
                &[&(after as i64), &i64::from(limit)],
            )
            .await
            .map_err(shared_error)?;
        Ok(rows.iter().map(replicated).collect())
    }

    /// The latest state, read in one snapshot: its revision, and every object with its own
    /// revision, for [`Store::restore`](crate::Store::restore).
    pub async fn snapshot(&self) -> Result<(u64, Vec<Replicated>), StorageError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(shared_error)?;
        let revision = tx
            .query_one("SELECT revision FROM catalog_meta WHERE id = 1", &[])
            .await
            .map_err(shared_error)?
            .get::<_, i64>(0) as u64;
        let rows = tx
            .query(
                "SELECT revision, 0::bigint, key, value, index_names, index_values
                 FROM catalog_objects ORDER BY key",
                &[],
            )
            .await
            .map_err(shared_error)?;
        tx.commit().await.map_err(shared_error)?;
        Ok((revision, rows.iter().map(replicated).collect()))
    }
}

/// One column of the `catalog_meta` row.
async fn read_meta<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    pool: &Pool,
    column: &str,
) -> Result<T, StorageError> {
    let client = pool.get().await.map_err(shared_error)?;
    let query = format!("SELECT {column} FROM catalog_meta WHERE id = 1");
    let row = client.query_one(&query, &[]).await.map_err(shared_error)?;
    Ok(row.get(0))
}

type RevisionReply = oneshot::Sender<Result<u64, String>>;

/// Answers the consistent reads waiting, all those waiting when a query starts with its result.
async fn revision_batches(pool: Pool, mut waiting: mpsc::UnboundedReceiver<RevisionReply>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = waiting.try_recv() {
            batch.push(more);
        }
        let revision = read_meta::<i64>(&pool, "revision")
            .await
            .map(|r| r as u64)
            .map_err(|e| e.to_string());
        for reply in batch {
            let _ = reply.send(revision.clone());
        }
    }
}

/// One write asked of the shared log, and where its answer goes.
struct WriteRequest {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<u64, WriteError>>,
}

/// The most writes one PostgreSQL transaction takes.
const MAX_GROUP: usize = 256;

/// Commits the writes queued at `queue`, all those waiting at once in one transaction.
async fn group_writer(pool: Pool, mut queue: mpsc::UnboundedReceiver<WriteRequest>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let (replies, writes): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.reply, r.ops)).unzip();
        match commit_group(&pool, writes).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            // Nothing of the group was committed: every write of it failed.
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Shared(e.to_string()).into()));
                }
            }
        }
    }
}

/// Commits a group of writes as one transaction, the revision row locked once and one commit
/// (one fsync) for all: the row lock is held through a commit, so committing writes one by one
/// would allow only one write per fsync across every replica. Each write is all or nothing on
/// its own (a savepoint each): a refused precondition rolls back that write alone, and its
/// revisions go to the next. Returns each write's last revision or refusal; an error when the
/// transaction failed, and then nothing of it was committed.
async fn commit_group(
    pool: &Pool,
    writes: Vec<Vec<Op>>,
) -> Result<Vec<Result<u64, WriteError>>, StorageError> {
    let mut client = pool.get().await.map_err(shared_error)?;
    let tx = client.transaction().await.map_err(shared_error)?;
    let (mut revision, now_ms) = lock_revision(&tx).await?;
    let mut results = Vec::with_capacity(writes.len());
    for ops in writes {
        let before = revision;
        match write_request(&tx, ops, &mut revision, now_ms).await {
            Ok(()) => results.push(Ok(revision as u64)),
            Err(Rollback::Write(e)) => {
                revision = before;
                results.push(Err(e));
            }
            Err(Rollback::Transaction(e)) => return Err(e),
        }
    }
    finish(tx, revision).await?;
    Ok(results)
}

/// Locks the revision row; the current revision and PostgreSQL's clock, read under the lock
/// (so commit times follow revision order whichever replica writes, and compaction by time
/// drops a prefix of the log).
async fn lock_revision(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(i64, i64), StorageError> {
    let row = tx
        .query_one(
            "SELECT revision, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
             FROM catalog_meta WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(shared_error)?;
    Ok((row.get(0), row.get(1)))
}

/// Why a write of a group did not happen: refused (the group goes on without it), or the
/// transaction itself failed.
enum Rollback {
    Write(WriteError),
    Transaction(StorageError),
}

/// One write of a group, inside a savepoint.
async fn write_request(
    tx: &deadpool_postgres::Transaction<'_>,
    ops: Vec<Op>,
    revision: &mut i64,
    now_ms: i64,
) -> Result<(), Rollback> {
    let sql = |e| Rollback::Transaction(shared_error(e));
    tx.batch_execute("SAVEPOINT write").await.map_err(sql)?;
    for op in ops {
        *revision += 1;
        if let Err(e) = write_op(tx, op, *revision, now_ms).await {
            tx.batch_execute("ROLLBACK TO SAVEPOINT write")
                .await
                .map_err(sql)?;
            return Err(match e {
                WriteError::Storage(e) => Rollback::Transaction(e),
                refused => Rollback::Write(refused),
            });
        }
    }
    tx.batch_execute("RELEASE SAVEPOINT write")
        .await
        .map_err(sql)
}

/// Records the group's last revision, notifies the followers, commits.
async fn finish(tx: deadpool_postgres::Transaction<'_>, revision: i64) -> Result<(), StorageError> {
    tx.execute(
        "UPDATE catalog_meta SET revision = $1 WHERE id = 1",
        &[&revision],
    )
    .await
    .map_err(shared_error)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &revision.to_string()],
    )
    .await
    .map_err(shared_error)?;
    tx.commit().await.map_err(shared_error)
}

/// One op of a write transaction at `revision`: its precondition, the latest state, the log.
async fn write_op(
    tx: &deadpool_postgres::Transaction<'_>,
    op: Op,
    revision: i64,
    now_ms: i64,
) -> Result<(), WriteError> {
    let (key, expected, must_exist) = match &op {
        Op::Create { key, .. } => (key.clone(), None, false),
        Op::Update { key, expected, .. } | Op::Delete { key, expected } => {
            (key.clone(), *expected, true)
        }
    };
    let current = tx
        .query_opt(
            "SELECT revision FROM catalog_objects WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(shared_error)?
        .map(|row| row.get::<_, i64>(0) as u64);
    match (current, must_exist) {
        (Some(_), false) => return Err(WriteError::AlreadyExists { key }),
        (None, true) => return Err(WriteError::NotFound { key }),
        (Some(actual), true) => {
            if let Some(expected) = expected.filter(|e| *e != actual) {
                return Err(WriteError::Conflict {
                    key,
                    expected,
                    actual,
                });
            }
        }
        (None, false) => {}
    }
    let (value, indexes) = match op {
        Op::Create { indexes, value, .. } | Op::Update { indexes, value, .. } => {
            check_index_pairs(&key, &indexes)?;
            (Some(value(revision as u64)), indexes)
        }
        Op::Delete { .. } => (None, Vec::new()),
    };
    let (names, values): (Vec<String>, Vec<String>) = indexes.into_iter().unzip();
    let bytes = value.as_ref().map(|v| v.to_vec());
    match &bytes {
        Some(bytes) => tx
            .execute(
                "INSERT INTO catalog_objects VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET revision = $2, value = $3,
                     index_names = $4, index_values = $5",
                &[&key, &revision, bytes, &names, &values],
            )
            .await
            .map_err(shared_error)?,
        None => tx
            .execute("DELETE FROM catalog_objects WHERE key = $1", &[&key])
            .await
            .map_err(shared_error)?,
    };
    tx.execute(
        "INSERT INTO catalog_log VALUES ($1, $2, $3, $4, $5, $6)",
        &[&revision, &now_ms, &key, &bytes, &names, &values],
    )
    .await
    .map_err(shared_error)?;
    Ok(())
}

/// A change (or an object) as read from the log (or the latest state).
fn replicated(row: &Row) -> Replicated {
    let names: Vec<String> = row.get(4);
    let values: Vec<String> = row.get(5);
    Replicated {
        revision: row.get::<_, i64>(0) as u64,
        committed_at_ms: row.get::<_, i64>(1) as u64,
        key: row.get(2),
        value: row.get::<_, Option<Vec<u8>>>(3).map(Bytes::from),
        indexes: names.into_iter().zip(values).collect(),
    }
}
