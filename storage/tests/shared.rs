//! The shared log against a real PostgreSQL 15 (Debian's server binaries, a cluster made by
//! `initdb` in a temporary directory, listening on a loopback port): revisions from many
//! connections are gap-free and in commit order, preconditions are decided in PostgreSQL, and
//! local stores follow the log or restore its snapshot to the same contents.

mod common;
mod postgres;

use std::sync::Arc;

use bytes::Bytes;
use catalog_storage::*;

use common::{contents, runtime};
use postgres::Postgres;

// The storage tests use its server certificates only.
#[allow(dead_code)]
#[path = "../../tests/server/pki.rs"]
mod pki;

/// A shared log on the test's PostgreSQL.
async fn connect(postgres: &Postgres) -> Result<SharedLog, StorageError> {
    SharedLog::connect(postgres.config().parse::<PostgresConfig>().unwrap()).await
}

/// Makes `store` a copy that follows the shared log on the test's PostgreSQL.
async fn follow(store: &Store, postgres: &Postgres) {
    store
        .follow(connect(postgres).await.unwrap())
        .await
        .unwrap();
}

fn value(key: &str) -> BuildValue {
    let key = key.to_string();
    Box::new(move |revision| Bytes::from(format!("{key}@{revision}")))
}

fn create(key: &str) -> Op {
    Op::Create {
        key: key.into(),
        indexes: vec![("tag".into(), "x".into())],
        value: value(key),
    }
}

fn update(key: &str, expected: u64) -> Op {
    Op::Update {
        key: key.into(),
        expected: Some(expected),
        indexes: vec![("tag".into(), "y".into())],
        value: value(key),
    }
}

#[test]
fn revisions_from_many_replicas_are_gap_free_and_in_commit_order() {
    let postgres = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        // Connected at once, as replicas starting together do: the tables are made once.
        let (a, b) = tokio::join!(connect(&postgres), connect(&postgres));
        let replicas = [a.unwrap(), b.unwrap()];
        let mut writers = Vec::new();
        for writer in 0..8 {
            let log = replicas[writer % 2].clone();
            writers.push(tokio::spawn(async move {
                for i in 0..25 {
                    log.write(vec![create(&format!("ns{writer}/k{i}"))])
                        .await
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(replicas[1].revision().await.unwrap(), 200);
        let changes = replicas[0].changes(0, 1000).await.unwrap();
        let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
        assert_eq!(revisions, (1..=200).collect::<Vec<_>>());
        for change in &changes {
            let expected = format!("{}@{}", change.key, change.revision);
            assert_eq!(change.value.as_deref(), Some(expected.as_bytes()));
        }
        assert_eq!(replicas[0].changes(150, 10).await.unwrap()[0].revision, 151);
    });
    // Debian's PostgreSQL has lz4: the objects' bytes are compressed with it.
    postgres.psql(
        "DO $$ BEGIN
             IF EXISTS (SELECT FROM pg_attribute
                        WHERE attrelid IN ('catalog_objects'::regclass, 'catalog_log'::regclass)
                          AND attname = 'value' AND attcompression <> 'l') THEN
                 RAISE 'values are not compressed with lz4';
             END IF;
         END $$",
    );
}

#[test]
fn preconditions_are_decided_in_postgres_so_one_replica_wins() {
    let postgres = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        let a = Arc::new(connect(&postgres).await.unwrap());
        let b = Arc::new(connect(&postgres).await.unwrap());
        let mut current = a.write(vec![create("ns/raced")]).await.unwrap()[0].revision;
        for _ in 0..20 {
            let (on_a, on_b) = tokio::join!(
                a.write(vec![update("ns/raced", current)]),
                b.write(vec![update("ns/raced", current)]),
            );
            let won: Vec<u64> = [&on_a, &on_b]
                .iter()
                .filter_map(|r| Some(r.as_ref().ok()?[0].revision))
                .collect();
            assert_eq!(won.len(), 1, "{on_a:?} {on_b:?}");
            let lost = [on_a, on_b].into_iter().find_map(Result::err).unwrap();
            assert!(matches!(lost, WriteError::Conflict { .. }), "{lost:?}");
            current = won[0];
        }
        let (on_a, on_b) = tokio::join!(
            a.write(vec![create("ns/once")]),
            b.write(vec![create("ns/once")]),
        );
        assert!(on_a.is_ok() != on_b.is_ok());
        let refused = on_a.err().or(on_b.err()).unwrap();
        assert!(matches!(refused, WriteError::AlreadyExists { .. }));
        // A transaction is all or nothing: its second op fails, its first is not written.
        let failed = a
            .write(vec![create("ns/half"), update("ns/missing", 1)])
            .await;
        assert!(matches!(failed, Err(WriteError::NotFound { .. })));
        assert_eq!(a.revision().await.unwrap(), current + 1);
        let nul = a.write(vec![Op::Create {
            key: "ns/nul".into(),
            indexes: vec![("tag".into(), "a\0b".into())],
            value: value("ns/nul"),
        }]);
        assert!(matches!(nul.await, Err(WriteError::InvalidIndex { .. })));
    });
}

#[test]
fn local_stores_follow_the_log_or_restore_its_snapshot() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    rt.block_on(async {
        let log = connect(&postgres).await.unwrap();
        for i in 0..10 {
            log.write(vec![create(&format!("ns{}/k{i}", i % 3))])
                .await
                .unwrap();
        }
        log.write(vec![update("ns1/k1", 2)]).await.unwrap();
        log.write(vec![Op::Delete {
            key: "ns2/k2".into(),
            expected: None,
        }])
        .await
        .unwrap();

        let follower = open("follower");
        follower
            .replicate(log.changes(0, 1000).await.unwrap())
            .await
            .unwrap();
        assert_eq!(follower.revision(), 12);

        let (at, mut pages) = log.snapshot().await.unwrap();
        let mut objects = Vec::new();
        while let Some(page) = pages.recv().await {
            objects.extend(page.unwrap());
        }
        assert_eq!((at, objects.len()), (12, 9));
        // A restore that stopped part way is not continued but rebuilt.
        let interrupted = open("interrupted");
        interrupted
            .restore(objects[..4].to_vec(), None)
            .await
            .unwrap();
        let refused = interrupted.follow(log.clone()).await;
        assert!(
            matches!(refused, Err(StorageError::Stale { revision: 0, .. })),
            "{refused:?}"
        );
        let restored = open("restored");
        restored.restore(objects, Some(at)).await.unwrap();
        assert_eq!(contents(&restored), contents(&follower));

        log.write(vec![create("ns0/new"), update("ns0/k0", 1)])
            .await
            .unwrap();
        for store in [&follower, &restored] {
            let changes = log.changes(store.revision(), 1000).await.unwrap();
            store.replicate(changes).await.unwrap();
        }
        assert_eq!(contents(&restored), contents(&follower));
        assert_eq!(follower.revision(), 14);
        let tagged = ListOptions {
            index: Some(("tag", "y")),
            ..ListOptions::default()
        };
        let keys = |store: &Store| -> Vec<String> {
            let page = store.list(&tagged, &mut |_| true).unwrap();
            page.items.into_iter().map(|i| i.key).collect()
        };
        assert_eq!(keys(&restored), ["ns0/k0", "ns1/k1"]);
        assert_eq!(keys(&follower), keys(&restored));
    });
}

#[test]
fn replicas_write_through_the_log_and_read_and_watch_each_others_writes() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    rt.block_on(async {
        let (a, b) = (open("a"), open("b"));
        follow(&a, &postgres).await;
        follow(&b, &postgres).await;
        let mut watched_on_b = b.watch(0).unwrap();
        let written = a
            .write(vec![create("ns/one"), create("ns/two")])
            .await
            .unwrap();
        assert_eq!(
            written.iter().map(|c| c.revision).collect::<Vec<_>>(),
            [1, 2]
        );
        // A read on B that must see every acknowledged write catches up first.
        b.catch_up().await.unwrap();
        assert_eq!(b.get("ns/two").unwrap().unwrap().revision, 2);
        let on_b = b.write(vec![update("ns/one", 1)]).await.unwrap();
        assert_eq!(on_b[0].revision, 3);
        let stale = a.write(vec![update("ns/one", 1)]).await;
        assert!(
            matches!(stale, Err(WriteError::Conflict { .. })),
            "{stale:?}"
        );
        for revision in 1..=3 {
            assert_eq!(watched_on_b.next().await.unwrap().revision, revision);
        }
        // A replica started later restores the log's snapshot, then follows it.
        let c = open("c");
        follow(&c, &postgres).await;
        assert_eq!(c.revision(), 3);
        a.write(vec![create("ns/three")]).await.unwrap();
        c.catch_up().await.unwrap();
        a.catch_up().await.unwrap();
        assert_eq!(contents(&c), contents(&a));
        assert_eq!(c.count(Some("ns"), c.revision()).unwrap(), Some(3));
    });
}

/// Changes a commit's notification announces are applied as they come: the followers read
/// the log only when nothing came for a while (the poll), not once per write; what cannot be
/// announced (too large for a payload, not text) they read from the log, in order with the rest.
#[test]
fn followers_apply_announced_changes_and_read_the_log_for_the_others() {
    let postgres = Postgres::start();
    postgres.psql("CREATE EXTENSION pg_stat_statements");
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    let (a, b) = (open("a"), open("b"));
    let log_reads = || -> u64 {
        let sql = "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                   WHERE query LIKE '%FROM catalog_meta meta LEFT JOIN LATERAL%'";
        postgres.query(sql).parse().unwrap()
    };
    let with_value = |key: &str, bytes: Vec<u8>| Op::Create {
        key: key.into(),
        indexes: vec![("tag".into(), "x".into())],
        value: Box::new(move |_| Bytes::from(bytes)),
    };
    rt.block_on(async {
        for store in [&a, &b] {
            follow(store, &postgres).await;
        }
        let mut watched_on_b = b.watch(0).unwrap();
        postgres.psql("SELECT pg_stat_statements_reset()");
        let began = std::time::Instant::now();
        const WRITES: u64 = 50;
        for i in 0..WRITES {
            a.write(vec![create(&format!("ns/k{i}"))]).await.unwrap();
        }
        for store in [&a, &b] {
            store.wait_for(WRITES).await.unwrap();
        }
        // Each follower polls once a second; read once a write, they would read 2 x WRITES.
        let polls = 2 * (began.elapsed().as_secs() + 2);
        let reads = log_reads();
        assert!(
            reads <= polls,
            "{reads} reads of the log for {WRITES} writes"
        );

        let unannounced = [
            with_value("ns/large", vec![b'x'; 10_000]),
            with_value("ns/binary", vec![0xff, 0x00, 0xfe]),
        ];
        for op in unannounced {
            a.write(vec![op]).await.unwrap();
        }
        a.write(vec![Op::Delete {
            key: "ns/k0".into(),
            expected: None,
        }])
        .await
        .unwrap();
        let last = a.write(vec![create("ns/last")]).await.unwrap()[0].revision;
        for store in [&a, &b] {
            store.wait_for(last).await.unwrap();
        }
        assert_eq!(contents(&b), contents(&a));
        assert_eq!(b.get("ns/large").unwrap().unwrap().value.len(), 10_000);
        for revision in 1..=last {
            assert_eq!(watched_on_b.next().await.unwrap().revision, revision);
        }
    });
}

#[test]
fn a_copy_left_by_a_restart_of_the_machine_is_rebuilt_from_the_log() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (live, left) = (dir.path().join("live"), dir.path().join("left"));
    // A runtime of its own, dropped with its follower task: then the copy is closed.
    runtime().block_on(async {
        let copy = Store::open(&live, Options::default()).unwrap();
        follow(&copy, &postgres).await;
        for i in 0..20 {
            copy.write(vec![create(&format!("ns/k{i}"))]).await.unwrap();
        }
        copy.catch_up().await.unwrap();
    });
    // The same files, as a restart of the machine leaves those a copy wrote out without fsync
    // (`engine/unsynced.rs`): they may be torn.
    std::fs::create_dir(&left).unwrap();
    for entry in std::fs::read_dir(&live).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), left.join(entry.file_name())).unwrap();
    }
    std::fs::write(left.join("catalog.unsynced"), "an earlier boot").unwrap();
    rt.block_on(async {
        // Closed cleanly, the copy was synced and is kept.
        let kept = Store::open(&live, Options::default()).unwrap();
        assert_eq!(kept.revision(), 20);
        let rebuilt = Store::open(&left, Options::default()).unwrap();
        assert_eq!(rebuilt.revision(), 0);
        follow(&rebuilt, &postgres).await;
        assert_eq!(rebuilt.revision(), 20);
        assert_eq!(contents(&rebuilt), contents(&kept));
    });
}

#[test]
fn followers_resume_after_postgres_restarts() {
    let mut postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    let (a, b) = (open("a"), open("b"));
    rt.block_on(async {
        for store in [&a, &b] {
            follow(store, &postgres).await;
        }
        a.write(vec![create("ns/before")]).await.unwrap();
        b.catch_up().await.unwrap();
    });
    postgres.crash();
    rt.block_on(async {
        let refused = a.write(vec![create("ns/during")]).await;
        assert!(
            matches!(refused, Err(WriteError::Storage(StorageError::Shared(_)))),
            "{refused:?}"
        );
        b.catch_up().await.unwrap();
        assert!(
            b.get("ns/before").unwrap().is_some(),
            "the local copy still serves"
        );
    });
    postgres.restart();
    rt.block_on(async {
        let written = a.write(vec![create("ns/after")]).await.unwrap();
        for store in [&a, &b] {
            store.wait_for(written[0].revision).await.unwrap();
        }
        assert_eq!(contents(&b), contents(&a));
        assert_eq!(b.revision(), 2);
    });
}

#[test]
fn an_embedded_store_seeds_an_empty_shared_store_and_no_other_history_may_join() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    rt.block_on(async {
        // Two stores of their own, as two embedded installations would have.
        let (embedded, other) = (open("embedded"), open("other"));
        for store in [&embedded, &other] {
            store
                .write(vec![create("ns/a"), create("ns/b")])
                .await
                .unwrap();
        }
        embedded.write(vec![update("ns/a", 1)]).await.unwrap();
        // More than two of the pages seeding sends at once.
        for batch in 0..5 {
            let ops = (0..500).map(|i| create(&format!("many/{batch}-{i}")));
            embedded.write(ops.collect()).await.unwrap();
        }
        let before = contents(&embedded);

        follow(&embedded, &postgres).await;
        assert_eq!(
            contents(&embedded),
            before,
            "seeding keeps every object and revision"
        );
        let refused = other.follow(connect(&postgres).await.unwrap()).await;
        assert!(
            matches!(refused, Err(StorageError::Diverged(_))),
            "{refused:?}"
        );

        let fresh = open("fresh");
        follow(&fresh, &postgres).await;
        assert_eq!(contents(&fresh), before);
        let next = fresh.revision() + 1;
        let written = fresh.write(vec![create("ns/c")]).await.unwrap();
        assert_eq!(written[0].revision, next);
        for store in [&embedded, &fresh] {
            store.wait_for(next).await.unwrap();
        }
        assert_eq!(contents(&embedded), contents(&fresh));
    });
}

#[test]
fn writes_grouped_in_one_transaction_each_stand_or_fall_alone() {
    let postgres = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        let log = connect(&postgres).await.unwrap();
        // Fifty creates at once, each key twice: they share transactions, and in each pair
        // one is refused without taking a revision or undoing the others.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..50 {
            let log = log.clone();
            writes.spawn(async move { log.write(vec![create(&format!("ns/k{}", i % 25))]).await });
        }
        let results = writes.join_all().await;
        let mut revisions: Vec<u64> = results
            .iter()
            .filter_map(|r| Some(r.as_ref().ok()?[0].revision))
            .collect();
        revisions.sort();
        assert_eq!(revisions, (1..=25).collect::<Vec<_>>());
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(WriteError::AlreadyExists { .. })));
        assert_eq!(refused.count(), 25);
        let changes = log.changes(0, 100).await.unwrap();
        assert_eq!(changes.len(), 25);
        assert_eq!(log.revision().await.unwrap(), 25);
    });
}

#[test]
fn a_copy_ahead_of_a_restored_shared_store_is_refused_for_rebuilding() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(&dir.path().join("copy"), Options::default()).unwrap();
    rt.block_on(async {
        let copy = open();
        follow(&copy, &postgres).await;
        for key in ["ns/a", "ns/b", "ns/c"] {
            copy.write(vec![create(key)]).await.unwrap();
        }
        copy.catch_up().await.unwrap();
    });
    // The database goes back to a backup taken after the first write.
    postgres.psql(
        "DELETE FROM catalog_log WHERE revision > 1; DELETE FROM catalog_objects WHERE revision > 1;
         UPDATE catalog_meta SET revision = 1",
    );
    rt.block_on(async {
        let refused = open().follow(connect(&postgres).await.unwrap()).await;
        assert!(
            matches!(
                refused,
                Err(StorageError::Stale {
                    revision: 3,
                    latest: 1,
                    ..
                })
            ),
            "{refused:?}"
        );
    });
}

#[test]
fn tls_to_postgres_verifies_the_servers_certificate() {
    let ca = pki::Ca::new("postgres-ca");
    let issued = ca.server("postgres");
    let postgres = Postgres::start_with_tls(&issued.cert, &issued.key);
    let config: PostgresConfig = postgres.config().parse::<PostgresConfig>().unwrap();
    let with_ca = |pem: &str| catalog_storage::Postgres {
        config: config.clone(),
        ca_pem: Some(pem.as_bytes().to_vec()),
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        // The server takes TLS only: without a CA (and sslmode=prefer) the replica does not
        // use it, and is refused.
        let plaintext = SharedLog::connect(config.clone()).await;
        assert!(plaintext.is_err(), "a plaintext connection was accepted");
        let stranger = pki::Ca::new("another-ca");
        let unverified = SharedLog::connect(with_ca(&stranger.pem)).await;
        let error = unverified
            .err()
            .expect("a certificate of another CA was trusted");
        assert!(error.to_string().contains("certificate"), "{error}");

        let log = SharedLog::connect(with_ca(&ca.pem)).await.unwrap();
        let follower = Store::open(dir.path(), Options::default()).unwrap();
        follower
            .follow(SharedLog::connect(with_ca(&ca.pem)).await.unwrap())
            .await
            .unwrap();
        let revision = log.write(vec![create("ns/over-tls")]).await.unwrap()[0].revision;
        // The follower hears of it on its listening connection, over TLS too.
        follower.wait_for(revision).await.unwrap();
        assert!(follower.get("ns/over-tls").unwrap().is_some());
    });
}

#[test]
fn compaction_drops_the_logs_old_changes_in_steps_and_keeps_the_latest() {
    let postgres = Postgres::start();
    let rt = runtime();
    rt.block_on(async {
        let log = connect(&postgres).await.unwrap();
        // More changes than one step of compaction drops.
        let ops = (0..4_500).map(|i| create(&format!("ns/k{i}"))).collect();
        log.write(ops).await.unwrap();
        log.write(vec![create("ns/latest")]).await.unwrap();
        assert_eq!(log.compact(0).await.unwrap(), 0, "nothing is older than 0");
        let later = u64::MAX >> 2;
        assert_eq!(log.compact(later).await.unwrap(), 4_500);
        assert_eq!(log.compacted().await.unwrap(), 4_500);
        let expired = log.changes(10, 5).await;
        assert!(
            matches!(
                expired,
                Err(ReadError::Expired {
                    compacted: 4_500,
                    ..
                })
            ),
            "{expired:?}"
        );
        let kept = log.changes(4_500, 5).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key, "ns/latest");
    });
    postgres.psql(
        "DO $$ BEGIN
             IF (SELECT count(*) FROM catalog_log) <> 1 THEN RAISE 'compacted rows are left'; END IF;
         END $$",
    );
}

#[test]
fn a_copy_compacts_its_history_like_a_store_of_its_own() {
    let postgres = Postgres::start();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Store::open(&dir.path().join(name), Options::default()).unwrap();
    let (a, b) = (open("a"), open("b"));
    rt.block_on(async {
        for store in [&a, &b] {
            follow(store, &postgres).await;
        }
        for i in 0..5 {
            a.write(vec![create(&format!("ns/k{i}"))]).await.unwrap();
        }
        for store in [&a, &b] {
            store.catch_up().await.unwrap();
        }
        // Its compaction commits without an fsync (the history is PostgreSQL's), and takes
        // effect all the same.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(b.compact(later).await.unwrap(), 5);
        assert!(matches!(b.watch(0), Err(WatchError::Gone { .. })));
        assert_eq!(contents(&b), contents(&a));
        // And it goes on following.
        let written = a.write(vec![create("ns/after")]).await.unwrap();
        b.wait_for(written[0].revision).await.unwrap();
        assert!(b.get("ns/after").unwrap().is_some());
    });
}
