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
use std::time::Duration;

use deadpool_postgres::GenericClient;
use std::collections::HashMap;
use std::ops::Range;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::committer::{Committed, Op, Replicated, check_index_pairs};
use crate::notification::{self, Inbox};
use crate::postgres_tls::Postgres;
use crate::{ReadError, StorageError, WriteError};

/// The channel a commit notifies, with its changes as payload when they fit (see
/// [`notification`]).
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
-- Every write updates the one catalog_meta row: room on its page keeps the new versions there
-- (HOT updates). And no vacuum truncates these tables: truncating takes an exclusive lock,
-- which queued every write behind it for seconds at a time (measured: creates stalled up to
-- 2 s while autovacuum waited to truncate catalog_meta).
ALTER TABLE catalog_meta SET (fillfactor = 10, vacuum_truncate = false);
ALTER TABLE catalog_objects SET (vacuum_truncate = false);
ALTER TABLE catalog_log SET (vacuum_truncate = false);
-- Nothing is ever selected by these columns, so ANALYZE has no use for their statistics, and
-- gathering them from their arrays and bytes after a bulk import took autovacuum most of a
-- core for seconds (watch delivery up to 1 s late meanwhile; BENCHMARKS.md).
ALTER TABLE catalog_objects ALTER COLUMN value SET STATISTICS 0,
    ALTER COLUMN index_names SET STATISTICS 0, ALTER COLUMN index_values SET STATISTICS 0;
ALTER TABLE catalog_log ALTER COLUMN value SET STATISTICS 0,
    ALTER COLUMN index_names SET STATISTICS 0, ALTER COLUMN index_values SET STATISTICS 0;
-- The objects' bytes are compressed with lz4 where PostgreSQL has it (any build since 14 with
-- --with-lz4, as Debian's and CloudNativePG's): pglz, the default, compressing two copies of
-- every write under the revision lock and decompressing each for every replica, cost about
-- 10% of creates/s (BENCHMARKS.md). Tables made before are altered once. (Nested: a server
-- without column compression, before 14, has no attcompression to ask about.)
DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        IF EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid IN ('catalog_objects'::regclass, 'catalog_log'::regclass)
                     AND attname = 'value' AND attcompression <> 'l') THEN
            ALTER TABLE catalog_objects ALTER COLUMN value SET COMPRESSION lz4;
            ALTER TABLE catalog_log ALTER COLUMN value SET COMPRESSION lz4;
        END IF;
    END IF;
END $$;
";

/// The advisory lock that serialises creating the tables.
const SCHEMA_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog"

/// The most changes one step of compaction drops from the log.
const COMPACTION_STEP: i64 = 2_000;

/// A pool of at most `size` connections, each waited for and made within `TIMEOUT`.
fn connection_pool(
    config: &tokio_postgres::Config,
    tls: &Option<MakeRustlsConnect>,
    size: usize,
) -> Result<Pool, StorageError> {
    let recycling = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(config.clone(), tls.clone(), recycling),
        None => Manager::from_config(config.clone(), NoTls, recycling),
    };
    // Bounded waits everywhere: with PostgreSQL gone a write fails in seconds, not hangs.
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .build()
        .map_err(shared_error)
}

/// Connections kept to PostgreSQL for reads (the group writer has one of its own).
const POOL_SIZE: usize = 16;
/// How long getting or making a connection may take.
const TIMEOUT: Duration = Duration::from_secs(5);

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
    tls: Option<MakeRustlsConnect>,
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
    pub async fn connect(postgres: impl Into<Postgres>) -> Result<SharedLog, StorageError> {
        let (config, tls) = postgres.into().connector()?;
        let pool = connection_pool(&config, &tls, POOL_SIZE)?;
        let writes = spawn_group_writer(connection_pool(&config, &tls, 1)?)?;
        let (revision_requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(revision_batches(pool.clone(), waiting));
        let log = SharedLog {
            pool,
            config,
            tls,
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

    /// Listens for commits on a connection of its own: each notification goes to `inbox`.
    pub(crate) async fn listen(&self, inbox: Arc<Inbox>) -> Result<Listener, StorageError> {
        match &self.tls {
            Some(tls) => listen(&self.config, tls.clone(), inbox).await,
            None => listen(&self.config, NoTls, inbox).await,
        }
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

    /// Commits `ops` as one transaction; each op gets the next revision. Returns the changes
    /// committed, one per op. The writes of this replica that wait together share one
    /// PostgreSQL transaction (see [`commit_group`]).
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Committed>, WriteError> {
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

    /// Makes an empty shared store start from the live objects of a store at `revision` (the
    /// migration of an embedded store), which `next_page` gives a page at a time (None: no
    /// more), in one transaction; refused unless the shared store is still empty.
    pub async fn seed(
        &self,
        revision: u64,
        mut next_page: impl FnMut() -> Result<Option<Vec<Replicated>>, StorageError>,
    ) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(shared_error)?;
        let (current, _) = revision_and_clock(&query_one(&tx, LOCK_REVISION, &[]).await?);
        if current != 0 {
            return Err(StorageError::Shared(format!(
                "the shared store is at revision {current}, not empty: nothing to seed"
            )));
        }
        let insert = tx
            .prepare_cached("INSERT INTO catalog_objects VALUES ($1, $2, $3, $4, $5)")
            .await
            .map_err(shared_error)?;
        while let Some(page) = next_page()? {
            let columns: Vec<_> = page.iter().map(Columns::of).collect();
            let statements: Vec<_> = columns.iter().map(|c| (&insert, c.object())).collect();
            execute_pipelined(&tx, &statements).await?;
        }
        query(
            &tx,
            "UPDATE catalog_meta SET revision = $1, compacted = $1 WHERE id = 1",
            &[&(revision as i64)],
        )
        .await?;
        tx.commit().await.map_err(shared_error)
    }

    /// The revision the log's history starts after.
    pub async fn compacted(&self) -> Result<u64, StorageError> {
        Ok(self.meta::<i64>("compacted").await? as u64)
    }

    /// Drops the log's changes up to the last one committed before `cutoff_ms` (a prefix:
    /// commit times are PostgreSQL's, taken under the revision lock), always keeping the latest
    /// change; returns the revision the history now starts after. A step at a time: the step's
    /// cut is found among the oldest changes through the primary key (not by a scan of the
    /// whole log) and recorded in a statement of its own, so writers wait on the revision row
    /// only for that; its rows are deleted after, without the lock, as no reader asks for them
    /// any more (a reader from before the cut is told its revision has expired).
    pub async fn compact(&self, cutoff_ms: u64) -> Result<u64, StorageError> {
        let client = self.client().await?;
        loop {
            let row = query_one(
                &client,
                "WITH cut AS (
                     SELECT COALESCE(MAX(revision), 0) AS upto FROM (
                         SELECT revision, committed_at_ms FROM catalog_log
                         ORDER BY revision LIMIT $2) oldest
                     WHERE committed_at_ms < $1
                       AND revision < (SELECT revision FROM catalog_meta WHERE id = 1))
                 UPDATE catalog_meta SET compacted = GREATEST(compacted, (SELECT upto FROM cut))
                 WHERE id = 1 RETURNING compacted",
                &[&(cutoff_ms as i64), &COMPACTION_STEP],
            )
            .await?;
            let compacted: i64 = row.get(0);
            let statement = client
                .prepare_cached("DELETE FROM catalog_log WHERE revision <= $1")
                .await
                .map_err(shared_error)?;
            let dropped = client
                .execute(&statement, &[&compacted])
                .await
                .map_err(shared_error)?;
            if dropped < COMPACTION_STEP as u64 {
                return Ok(compacted as u64);
            }
        }
    }

    /// At most `limit` changes after revision `after`, in order; `Expired` when the log no
    /// longer reaches back that far. One query: the history's start comes with the changes.
    pub async fn changes(&self, after: u64, limit: u32) -> Result<Vec<Replicated>, ReadError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT log.revision, log.committed_at_ms, log.key, log.value,
                    log.index_names, log.index_values, meta.compacted
             FROM catalog_meta meta LEFT JOIN LATERAL (
                 SELECT * FROM catalog_log WHERE revision > $1 ORDER BY revision LIMIT $2
             ) log ON true
             WHERE meta.id = 1",
            &[&(after as i64), &i64::from(limit)],
        )
        .await?;
        let compacted = rows.first().map_or(0, |row| row.get::<_, i64>(6) as u64);
        if after < compacted {
            return Err(ReadError::Expired {
                requested: after,
                compacted,
            });
        }
        // Without changes, the one row has NULL for the log's columns.
        let changes = rows
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(0).is_some());
        Ok(changes.map(replicated).collect())
    }

    /// The latest state, read in one snapshot a page at a time: its revision, and the pages
    /// of its objects (each with its own revision) as they are read, for
    /// [`Store::restore`](crate::Store::restore). The pages end after the last, or with the
    /// error that ended the read.
    pub async fn snapshot(&self) -> Result<(u64, mpsc::Receiver<Pages>), StorageError> {
        let mut client = self.client().await?;
        let (revision, revision_read) = oneshot::channel();
        let (pages, received) = mpsc::channel(2);
        tokio::spawn(async move {
            let tx = match begin_snapshot(&mut client).await {
                Ok((tx, at)) => {
                    let _ = revision.send(Ok(at));
                    tx
                }
                Err(e) => return drop(revision.send(Err(e))),
            };
            if let Err(e) = read_snapshot(&tx, &pages).await {
                let _ = pages.send(Err(e)).await;
            }
        });
        let revision = revision_read.await.map_err(|_| StorageError::Closed)??;
        Ok((revision, received))
    }
}

/// A page of a snapshot's objects, or why the snapshot ended.
pub type Pages = Result<Vec<Replicated>, StorageError>;

/// Objects read at once from a snapshot.
const SNAPSHOT_PAGE: i64 = 1_000;

/// Opens the repeatable-read transaction a snapshot is read in, and reads its revision.
async fn begin_snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<(deadpool_postgres::Transaction<'_>, u64), StorageError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(shared_error)?;
    let at = query_one(&tx, "SELECT revision FROM catalog_meta WHERE id = 1", &[]).await?;
    let at = at.get::<_, i64>(0) as u64;
    Ok((tx, at))
}

/// Reads a snapshot's objects in key order, a page at a time, to `pages`.
async fn read_snapshot(
    tx: &deadpool_postgres::Transaction<'_>,
    pages: &mpsc::Sender<Pages>,
) -> Result<(), StorageError> {
    let mut after = String::new();
    loop {
        let rows = query(
            tx,
            "SELECT revision, 0::bigint, key, value, index_names, index_values
             FROM catalog_objects WHERE key > $1 ORDER BY key LIMIT $2",
            &[&after, &SNAPSHOT_PAGE],
        )
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(2);
        if pages
            .send(Ok(rows.iter().map(replicated).collect()))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// A connection of its own, with `tls` (or none), that listens on the log's channel and leaves
/// each notification in `inbox`; closed when its connection ends.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    inbox: Arc<Inbox>,
) -> Result<Listener, StorageError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(shared_error)?;
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    inbox.received(notification.payload());
                    // Let the follower run now. Without this its wake sat unserved until the
                    // worker's next timer: traced, the follower's read went out 20-24 ms after
                    // each notification (a write reached other replicas' watchers 23 ms after
                    // its answer, against 1 ms with this).
                    tokio::task::yield_now().await;
                }
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

/// One column of the `catalog_meta` row.
async fn read_meta<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    pool: &Pool,
    column: &str,
) -> Result<T, StorageError> {
    let client = pool.get().await.map_err(shared_error)?;
    let sql = format!("SELECT {column} FROM catalog_meta WHERE id = 1");
    Ok(query_one(&client, &sql, &[]).await?.get(0))
}

type RevisionReply = oneshot::Sender<Result<u64, String>>;

/// The longest a consistent read waits for others to share its revision query. GETs at 64
/// clients over 3 replicas on a 2-vCPU machine: a query answered about 3.6 reads and cost
/// PostgreSQL 0.1 ms of CPU; gathering cut PostgreSQL's CPU by a third and raised GETs/s
/// about 15% (BENCHMARKS.md). Tokio's timer rounds it up to its 1 ms tick.
const GATHER_AT_MOST: Duration = Duration::from_millis(1);

/// Answers the consistent reads waiting, in batches of one query each. A batch waits for as
/// many readers as the last one answered (they tend to come back together), at most
/// [`GATHER_AT_MOST`]: a lone reader never waits, and under load batches grow until it is
/// the time that bounds them.
async fn revision_batches(pool: Pool, mut waiting: mpsc::UnboundedReceiver<RevisionReply>) {
    let mut expected = 1;
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        gather(&mut waiting, &mut batch, expected).await;
        let revision = read_meta::<i64>(&pool, "revision")
            .await
            .map(|r| r as u64)
            .map_err(|e| e.to_string());
        expected = batch.len();
        for reply in batch {
            let _ = reply.send(revision.clone());
        }
    }
}

/// Adds to `batch` the readers waiting, then those arriving until it has `expected` readers
/// or [`GATHER_AT_MOST`] has passed.
async fn gather(
    waiting: &mut mpsc::UnboundedReceiver<RevisionReply>,
    batch: &mut Vec<RevisionReply>,
    expected: usize,
) {
    while let Ok(more) = waiting.try_recv() {
        batch.push(more);
    }
    if batch.len() >= expected {
        return;
    }
    let deadline = tokio::time::sleep(GATHER_AT_MOST);
    tokio::pin!(deadline);
    while batch.len() < expected {
        tokio::select! {
            more = waiting.recv() => match more {
                Some(more) => batch.push(more),
                None => return,
            },
            _ = &mut deadline => return,
        }
    }
}

/// One write asked of the shared log, and where its answer goes.
struct WriteRequest {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Vec<Committed>, WriteError>>,
}

/// The most writes one PostgreSQL transaction takes.
const MAX_GROUP: usize = 256;

/// Starts the group writer on a thread and a connection of its own; returns its queue. The
/// row lock a group takes is held until the group's next round trip, so every moment the
/// writer waits for a CPU after PostgreSQL answered is a moment every replica's writes wait.
/// On the server's runtime it queued behind request handling: sampled during spread creates,
/// the lock holder sat idle in transaction, waiting for its client, in 18 of 60 samples (10
/// with its own thread), and creates/s rose about 15% (BENCHMARKS.md).
fn spawn_group_writer(pool: Pool) -> Result<mpsc::UnboundedSender<WriteRequest>, StorageError> {
    let failed = |e: std::io::Error| StorageError::Shared(format!("group writer: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let (writes, queue) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("shared-log-writer".into())
        .spawn(move || runtime.block_on(group_writer(pool, queue)))
        .map_err(failed)?;
    Ok(writes)
}

/// Commits the writes queued at `queue`, all those waiting at once in one transaction; ends
/// when every sender is gone.
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
/// would allow only one write per fsync across every replica. The group costs two round trips
/// whatever its size (tokio-postgres pipelines the requests of a connection polled together,
/// and PostgreSQL runs them in order): begin, lock the revision row and read the revisions of
/// the keys it touches; then, every write decided here ([`plan`]), all its statements and the
/// commit. So the lock is held for one round trip and the commit, whichever replica writes.
/// Each write is all or nothing on its own: a refused one writes nothing and its revisions go
/// to the next. Returns each write's changes or refusal; an error when the transaction failed,
/// and then nothing of it was committed.
async fn commit_group(
    pool: &Pool,
    writes: Vec<Vec<Op>>,
) -> Result<Vec<Result<Vec<Committed>, WriteError>>, StorageError> {
    let client = pool.get().await.map_err(shared_error)?;
    let committed = decide_and_commit(&client, writes).await;
    if committed.is_err() {
        // A statement that failed leaves its transaction open, aborted: end it before the
        // connection serves anyone else.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    committed
}

/// The transaction of [`commit_group`], on `client`.
async fn decide_and_commit(
    client: &impl GenericClient,
    writes: Vec<Vec<Op>>,
) -> Result<Vec<Result<Vec<Committed>, WriteError>>, StorageError> {
    let keys: Vec<&str> = writes.iter().flatten().map(Op::key).collect();
    let (lock, live) = tokio::try_join!(
        client.prepare_cached(LOCK_REVISION),
        client.prepare_cached(LIVE_REVISIONS),
    )
    .map_err(shared_error)?;
    // The keys are read once the lock is granted: every write that could have changed them
    // has committed by then, and every later one waits for this transaction.
    let key_list: [&(dyn ToSql + Sync); 1] = [&keys];
    let (_, locked, live) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock, &[]),
        client.query(&live, &key_list),
    )
    .map_err(shared_error)?;
    let (revision, now_ms) = revision_and_clock(&locked);
    let current = live
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1) as u64))
        .collect();
    let plan = plan(writes, current, revision, now_ms);
    write_and_commit(client, &plan.rows).await?;
    Ok(plan.into_results())
}

/// Locks the revision row; the current revision and PostgreSQL's clock, read under the lock
/// (so commit times follow revision order whichever replica writes, and compaction by time
/// drops a prefix of the log).
const LOCK_REVISION: &str =
    "SELECT revision, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
     FROM catalog_meta WHERE id = 1 FOR UPDATE";

/// The revisions of those of the keys `$1` that are live.
const LIVE_REVISIONS: &str = "SELECT key, revision FROM catalog_objects WHERE key = ANY($1)";

/// The revision and the clock of a row of [`LOCK_REVISION`].
fn revision_and_clock(row: &Row) -> (u64, u64) {
    (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)
}

/// What a group writes: each write's outcome (the range of `rows` it makes), and the changes
/// of those that happen.
struct Plan {
    results: Vec<Result<Range<usize>, WriteError>>,
    rows: Vec<Replicated>,
}

impl Plan {
    /// What each write did, or why it was refused.
    fn into_results(self) -> Vec<Result<Vec<Committed>, WriteError>> {
        let mut rows = self.rows.into_iter().map(Committed::from);
        self.results
            .into_iter()
            .map(|result| result.map(|range| rows.by_ref().take(range.len()).collect()))
            .collect()
    }
}

/// Decides a group's writes in order, as the local committer does: each against the live
/// revisions the group's earlier writes left, each all or nothing.
fn plan(writes: Vec<Vec<Op>>, mut live: HashMap<String, u64>, revision: u64, now_ms: u64) -> Plan {
    let mut plan = Plan {
        results: Vec::with_capacity(writes.len()),
        rows: Vec::new(),
    };
    let mut revision = revision;
    for ops in writes {
        match plan_write(ops, &live, revision, now_ms) {
            Ok(rows) => {
                for row in &rows {
                    match row.value {
                        Some(_) => live.insert(row.key.clone(), row.revision),
                        None => live.remove(&row.key),
                    };
                }
                revision += rows.len() as u64;
                let start = plan.rows.len();
                plan.rows.extend(rows);
                plan.results.push(Ok(start..plan.rows.len()));
            }
            Err(refused) => plan.results.push(Err(refused)),
        }
    }
    plan
}

/// One write's changes from revision `after` + 1 on, or why it is refused.
fn plan_write(
    ops: Vec<Op>,
    live: &HashMap<String, u64>,
    after: u64,
    now_ms: u64,
) -> Result<Vec<Replicated>, WriteError> {
    let mut rows: Vec<Replicated> = Vec::with_capacity(ops.len());
    for op in ops {
        // The key as this write has left it so far, else as the group has.
        let current = match rows.iter().rev().find(|row| row.key == op.key()) {
            Some(row) => row.value.as_ref().map(|_| row.revision),
            None => live.get(op.key()).copied(),
        };
        op.check(current)?;
        let row = op.into_change(after + rows.len() as u64 + 1, now_ms);
        check_index_pairs(&row.key, &row.indexes)?;
        rows.push(row);
    }
    Ok(rows)
}

/// Writes a group's changes to the latest state and the log, records its last revision,
/// notifies the followers and commits: every statement sent at once.
async fn write_and_commit(
    client: &impl GenericClient,
    rows: &[Replicated],
) -> Result<(), StorageError> {
    let Some(last) = rows.last() else {
        return client.batch_execute("COMMIT").await.map_err(shared_error);
    };
    let prepare = |sql| client.prepare_cached(sql);
    let (put, delete, finish) = tokio::try_join!(
        prepare(
            "WITH latest AS (
                 INSERT INTO catalog_objects VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET revision = $2, value = $3,
                     index_names = $4, index_values = $5)
             INSERT INTO catalog_log VALUES ($2, $6, $1, $3, $4, $5)"
        ),
        prepare(
            "WITH latest AS (DELETE FROM catalog_objects WHERE key = $1)
             INSERT INTO catalog_log VALUES ($2, $3, $1, NULL, '{}', '{}')"
        ),
        prepare(
            "WITH meta AS (UPDATE catalog_meta SET revision = $1 WHERE id = 1)
             SELECT pg_notify($2, $3)"
        ),
    )
    .map_err(shared_error)?;
    let columns: Vec<_> = rows.iter().map(Columns::of).collect();
    let mut statements: Vec<_> = columns
        .iter()
        .map(|c| -> (&Statement, Parameters) {
            match c.value {
                Some(_) => (&put, [c.object(), vec![&c.committed_at_ms]].concat()),
                None => (&delete, vec![c.key, &c.revision, &c.committed_at_ms]),
            }
        })
        .collect();
    let (last_revision, payload) = (last.revision as i64, notification::encode(rows));
    let notify: Parameters = vec![&last_revision, &CHANNEL, &payload];
    statements.push((&finish, notify));
    // Should a statement fail, PostgreSQL ends the transaction at the COMMIT without
    // committing anything, and the statement's error is the answer.
    let commit = async { client.batch_execute("COMMIT").await.map_err(shared_error) };
    tokio::try_join!(execute_pipelined(client, &statements), commit)?;
    Ok(())
}

type Parameters<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Runs `statements` in order, sent all at once: tokio-postgres pipelines the queries of one
/// connection polled together, so they cost one round trip, not one each.
async fn execute_pipelined(
    client: &impl GenericClient,
    statements: &[(&Statement, Parameters<'_>)],
) -> Result<(), StorageError> {
    let executions = statements
        .iter()
        .map(|(statement, parameters)| client.execute(*statement, parameters));
    futures_util::future::try_join_all(executions)
        .await
        .map_err(shared_error)?;
    Ok(())
}

/// A change as the columns of its rows.
struct Columns<'a> {
    key: &'a String,
    revision: i64,
    committed_at_ms: i64,
    value: Option<&'a [u8]>,
    names: Vec<&'a str>,
    values: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(row: &'a Replicated) -> Self {
        let (names, values) = row
            .indexes
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .unzip();
        Columns {
            key: &row.key,
            revision: row.revision as i64,
            committed_at_ms: row.committed_at_ms as i64,
            value: row.value.as_deref(),
            names,
            values,
        }
    }

    /// The parameters of a `catalog_objects` row.
    fn object(&self) -> Parameters<'_> {
        vec![
            self.key,
            &self.revision,
            &self.value,
            &self.names,
            &self.values,
        ]
    }
}

/// The rows of `sql`, prepared once per connection: a statement given as text is prepared
/// at each use, one more round trip.
async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StorageError> {
    let statement = client.prepare_cached(sql).await.map_err(shared_error)?;
    client.query(&statement, params).await.map_err(shared_error)
}

/// The one row of `sql`, prepared once per connection.
async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StorageError> {
    let statement = client.prepare_cached(sql).await.map_err(shared_error)?;
    client
        .query_one(&statement, params)
        .await
        .map_err(shared_error)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn create(key: &str) -> Op {
        Op::Create {
            key: key.into(),
            indexes: vec![("name".into(), key.into())],
            value: Box::new(|revision| Bytes::from(revision.to_string())),
        }
    }

    fn update(key: &str, expected: Option<u64>) -> Op {
        Op::Update {
            key: key.into(),
            expected,
            indexes: Vec::new(),
            value: Box::new(|revision| Bytes::from(revision.to_string())),
        }
    }

    fn delete(key: &str) -> Op {
        Op::Delete {
            key: key.into(),
            expected: None,
        }
    }

    /// Each write's last revision, or why it was refused.
    fn outcomes(plan: &Plan) -> Vec<Result<u64, String>> {
        let outcome = |r: &Result<Range<usize>, WriteError>| match r {
            Ok(range) => Ok(plan.rows[range.end - 1].revision),
            Err(e) => Err(e.to_string()),
        };
        plan.results.iter().map(outcome).collect()
    }

    #[test]
    fn a_group_decides_each_write_over_those_before_it() {
        let live = HashMap::from([("a".to_string(), 7)]);
        let plan = plan(
            vec![
                vec![create("b")],
                vec![create("b")],
                // Refused as a whole at its second op: its first takes no revision.
                vec![update("a", Some(7)), update("c", None)],
                vec![update("a", Some(7)), delete("b")],
                vec![create("b"), update("a", Some(12))],
                vec![update("a", Some(7))],
            ],
            live,
            10,
            1_000,
        );
        assert_eq!(
            outcomes(&plan),
            [
                Ok(11),
                Err("b already exists".into()),
                Err("c not found".into()),
                Ok(13),
                Ok(15),
                Err("a is at revision 15, not the expected 7".into()),
            ]
        );
        let rows: Vec<_> = plan
            .rows
            .iter()
            .map(|r| {
                (
                    r.revision,
                    r.key.as_str(),
                    r.value.clone(),
                    r.committed_at_ms,
                )
            })
            .collect();
        let value = |v: &str| Some(Bytes::from(v.to_string()));
        assert_eq!(
            rows,
            [
                (11, "b", value("11"), 1_000),
                (12, "a", value("12"), 1_000),
                (13, "b", None, 1_000),
                (14, "b", value("14"), 1_000),
                (15, "a", value("15"), 1_000),
            ]
        );
    }

    /// A reader waiting for a revision, its answer dropped.
    fn reader() -> RevisionReply {
        oneshot::channel().0
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_as_many_readers_as_the_last_one_had_for_a_while_at_most() {
        let (readers, mut waiting) = mpsc::unbounded_channel();
        let gathered = async |waiting: &mut _, expected| {
            let started = tokio::time::Instant::now();
            let mut batch = vec![reader()];
            gather(waiting, &mut batch, expected).await;
            (batch.len(), started.elapsed())
        };

        // A lone reader never waits; those already waiting all join.
        assert_eq!(gathered(&mut waiting, 1).await, (1, Duration::ZERO));
        readers.send(reader()).unwrap();
        readers.send(reader()).unwrap();
        assert_eq!(gathered(&mut waiting, 1).await, (3, Duration::ZERO));

        // Short of the readers expected, it waits for the next (sent once it waits)...
        let late = readers.clone();
        tokio::spawn(async move { late.send(reader()).unwrap() });
        assert_eq!(gathered(&mut waiting, 2).await, (2, Duration::ZERO));
        // ...but not longer than GATHER_AT_MOST.
        assert_eq!(gathered(&mut waiting, 3).await, (1, GATHER_AT_MOST));
    }
}
