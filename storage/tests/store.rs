//! The store's behaviour, run on every engine: a model-based property test, and one test per
//! contract (preconditions, snapshots, indexes, history, watch, compaction, restart, faults).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use catalog_storage::*;
use proptest::prelude::*;

use common::{contents, runtime};

fn options(engine: EngineKind) -> Options {
    Options {
        engine,
        cache_bytes: 8 << 20,
        ..Options::default()
    }
}

fn open(dir: &std::path::Path, engine: EngineKind) -> Store {
    Store::open(dir, options(engine)).expect("open store")
}

fn value_of(key: &str, tag: &str) -> BuildValue {
    let text = format!("{key}:{tag}");
    Box::new(move |rev| Bytes::from(format!("{text}@{rev}")))
}

fn create(key: &str, tag: &str) -> Op {
    Op::Create {
        key: key.into(),
        indexes: vec![("tag".into(), tag.into())],
        value: value_of(key, tag),
    }
}

fn update(key: &str, tag: &str, expected: Option<u64>) -> Op {
    Op::Update {
        key: key.into(),
        expected,
        indexes: vec![("tag".into(), tag.into())],
        value: value_of(key, tag),
    }
}

fn delete(key: &str, expected: Option<u64>) -> Op {
    Op::Delete {
        key: key.into(),
        expected,
    }
}

fn keys(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.key.as_str()).collect()
}

fn list_all(store: &Store, options: ListOptions) -> Result<Page, ReadError> {
    store.list(&options, &mut |_| true)
}

/// Everything after the first page is read at the first page's revision, as a continue token would.
fn paginate(store: &Store, options: ListOptions, limit: usize) -> Result<Vec<Item>, ReadError> {
    let mut items: Vec<Item> = Vec::new();
    let mut revision = options.revision;
    loop {
        let after = items.last().map(|i| i.key.clone());
        let after = after.as_deref().or(options.after);
        let page_options = ListOptions {
            limit: Some(limit),
            revision,
            after,
            ..options.clone()
        };
        let page = list_all(store, page_options)?;
        revision = Some(page.revision);
        let more = page.more;
        items.extend(page.items);
        if !more {
            return Ok(items);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model-based: random transactions, compactions and snapshot lists against a plain in-memory
// model that keeps every revision's full state.

#[derive(Clone, Debug)]
enum ModelOp {
    Create(usize, usize),
    Update(usize, usize, bool),
    Delete(usize, bool),
}

#[derive(Clone, Debug)]
enum Step {
    Txn(Vec<ModelOp>),
    CompactAll,
    List {
        at_back: usize,
        namespace: Option<usize>,
        tag: Option<usize>,
        limit: usize,
    },
}

const KEYS: [&str; 6] = ["n1/a", "n1/b", "n1/c", "n2/a", "n2/b", "n3/z"];
const TAGS: [&str; 3] = ["x", "y", "z"];
const NAMESPACES: [&str; 3] = ["n1/", "n2/", "n4/"];

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0..KEYS.len(), 0..TAGS.len()).prop_map(|(k, t)| ModelOp::Create(k, t)),
        (0..KEYS.len(), 0..TAGS.len(), any::<bool>())
            .prop_map(|(k, t, e)| ModelOp::Update(k, t, e)),
        (0..KEYS.len(), any::<bool>()).prop_map(|(k, e)| ModelOp::Delete(k, e)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(model_op(), 1..4).prop_map(Step::Txn),
        1 => Just(Step::CompactAll),
        3 => (0..8usize, prop::option::of(0..NAMESPACES.len()), prop::option::of(0..TAGS.len()), 1..4usize)
            .prop_map(|(at_back, namespace, tag, limit)| Step::List { at_back, namespace, tag, limit }),
    ]
}

type State = BTreeMap<String, (u64, String)>;

struct Model {
    /// states[r] is the state at revision r.
    states: Vec<State>,
    compacted: u64,
}

impl Model {
    fn current(&self) -> &State {
        self.states.last().unwrap()
    }

    /// Applies a transaction like the store must (all or nothing, a revision per op); returns
    /// the store's ops and, if the model accepts the transaction, the states it leads to.
    fn apply(&self, ops: &[ModelOp]) -> (Vec<Op>, Option<Vec<State>>) {
        let mut state = self.current().clone();
        let mut revision = self.states.len() as u64 - 1;
        let mut store_ops = Vec::new();
        let mut new_states = Some(Vec::new());
        for op in ops {
            revision += 1;
            let (k, stale) = match *op {
                ModelOp::Create(k, _) => (k, false),
                ModelOp::Update(k, _, stale) | ModelOp::Delete(k, stale) => (k, stale),
            };
            let current = state.get(KEYS[k]).map(|(r, _)| *r);
            let expected = Some(current.map_or(0, |r| if stale { r + 1000 } else { r }));
            let ok = match *op {
                ModelOp::Create(k, t) => {
                    store_ops.push(create(KEYS[k], TAGS[t]));
                    current.is_none()
                        && state
                            .insert(KEYS[k].into(), (revision, TAGS[t].into()))
                            .is_none()
                }
                ModelOp::Update(k, t, _) => {
                    store_ops.push(update(KEYS[k], TAGS[t], expected));
                    current.is_some()
                        && !stale
                        && state
                            .insert(KEYS[k].into(), (revision, TAGS[t].into()))
                            .is_some()
                }
                ModelOp::Delete(k, _) => {
                    store_ops.push(delete(KEYS[k], expected));
                    current.is_some() && !stale && state.remove(KEYS[k]).is_some()
                }
            };
            match (&mut new_states, ok) {
                (Some(states), true) => states.push(state.clone()),
                _ => new_states = None,
            }
        }
        (store_ops, new_states)
    }
}

/// Removes the live counts, as a store written before they were kept has none.
fn forget_counts(dir: &std::path::Path, engine: EngineKind) {
    let engine = engine.open(dir, 1 << 20).unwrap();
    let mut keys = Vec::new();
    let view = engine.view().unwrap();
    view.scan(b"n/", b"n0", &mut |key, _| {
        keys.push(key.to_vec());
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    drop(view);
    let mut batch = Batch::default();
    keys.into_iter().for_each(|key| batch.delete(key));
    batch.delete(b"m/counted".to_vec());
    engine.commit(&batch).unwrap();
}

fn run_model(engine: EngineKind, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    let rt = runtime();
    let mut model = Model {
        states: vec![State::new()],
        compacted: 0,
    };
    for step in steps {
        match step {
            Step::Txn(ops) => {
                let (store_ops, expected) = model.apply(&ops);
                let result = rt.block_on(store.write(store_ops));
                match (expected, result) {
                    (Some(states), Ok(changes)) => {
                        prop_assert_eq!(changes.len(), states.len());
                        model.states.extend(states);
                    }
                    (None, Err(_)) => {}
                    (expected, result) => {
                        prop_assert!(
                            false,
                            "model {:?} store {:?}",
                            expected.is_some(),
                            result.map(|_| ())
                        );
                    }
                }
                prop_assert_eq!(store.revision(), model.states.len() as u64 - 1);
            }
            Step::CompactAll => {
                let compacted = rt
                    .block_on(store.compact(SystemTime::now() + Duration::from_secs(60)))
                    .unwrap();
                model.compacted = model.states.len() as u64 - 1;
                prop_assert_eq!(compacted, model.compacted);
            }
            Step::List {
                at_back,
                namespace,
                tag,
                limit,
            } => {
                let current = model.states.len() as u64 - 1;
                let at = current.saturating_sub(at_back as u64);
                let prefix = namespace.map_or("", |n| NAMESPACES[n]);
                let index = tag.map(|t| ("tag", TAGS[t]));
                let options = ListOptions {
                    prefix,
                    index,
                    revision: Some(at),
                    ..Default::default()
                };
                let result = paginate(&store, options, limit);
                if at < model.compacted {
                    let is_expired = matches!(result, Err(ReadError::Expired { .. }));
                    prop_assert!(is_expired);
                    continue;
                }
                let got: Vec<(String, u64, String)> = result
                    .unwrap()
                    .into_iter()
                    .map(|i| {
                        (
                            i.key,
                            i.revision,
                            String::from_utf8(i.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let want: Vec<(String, u64, String)> = model.states[at as usize]
                    .iter()
                    .filter(|(k, (_, t))| k.starts_with(prefix) && tag.is_none_or(|i| TAGS[i] == t))
                    .map(|(k, (r, t))| (k.clone(), *r, format!("{k}:{t}@{r}")))
                    .collect();
                prop_assert_eq!(
                    got,
                    want,
                    "list at {} prefix {:?} tag {:?}",
                    at,
                    prefix,
                    tag
                );
                // The live count, where the store still knows it at `at`; at the latest
                // revision it always does.
                let namespace = namespace.map(|n| NAMESPACES[n].trim_end_matches('/'));
                let live = model.states[at as usize]
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .count() as u64;
                let counted = store.count(namespace, at).unwrap();
                prop_assert!(
                    counted.is_none_or(|c| c == live),
                    "count {counted:?} model {live}"
                );
                prop_assert!(at < current || counted == Some(live));
            }
        }
    }
    // Reopened, and reopened after losing its counts (a store from before them), the store
    // counts what the model has.
    drop(store);
    let live = model.current().len() as u64;
    let store = open(dir.path(), engine);
    prop_assert_eq!(store.count(None, store.revision()).unwrap(), Some(live));
    drop(store);
    forget_counts(dir.path(), engine);
    let store = open(dir.path(), engine);
    prop_assert_eq!(store.count(None, store.revision()).unwrap(), Some(live));
    // History: a watch from the compacted revision replays exactly the model's changes.
    let mut watch = store.watch(model.compacted).unwrap();
    for revision in model.compacted + 1..model.states.len() as u64 {
        let change = rt.block_on(watch.next()).unwrap();
        prop_assert_eq!(change.revision, revision);
        let before = &model.states[revision as usize - 1];
        let after = &model.states[revision as usize];
        prop_assert_eq!(change.value.is_some(), after.contains_key(&change.key));
        prop_assert_eq!(
            change.prev_value.is_some(),
            before.contains_key(&change.key)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_model_on_redb(steps in prop::collection::vec(step(), 1..40)) {
        run_model(EngineKind::Redb, steps)?;
    }

    #[test]
    fn matches_the_model_on_sled(steps in prop::collection::vec(step(), 1..40)) {
        run_model(EngineKind::Sled, steps)?;
    }
}

// ---------------------------------------------------------------------------------------------
// One test per contract, each run on every engine.

fn on_every_engine(test: impl Fn(EngineKind, &std::path::Path, &tokio::runtime::Runtime)) {
    for engine in EngineKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        test(engine, dir.path(), &runtime());
    }
}

#[test]
fn preconditions_are_checked_and_failed_transactions_leave_nothing() {
    on_every_engine(|engine, dir, rt| {
        let store = open(dir, engine);
        let created = rt.block_on(store.write(vec![create("n/a", "x")])).unwrap();
        assert_eq!(created[0].revision, 1);
        assert!(matches!(
            rt.block_on(store.write(vec![create("n/a", "x")])),
            Err(WriteError::AlreadyExists { key }) if key == "n/a"
        ));
        assert!(matches!(
            rt.block_on(store.write(vec![update("n/a", "y", Some(7))])),
            Err(WriteError::Conflict {
                expected: 7,
                actual: 1,
                ..
            })
        ));
        assert!(matches!(
            rt.block_on(store.write(vec![delete("n/missing", None)])),
            Err(WriteError::NotFound { .. })
        ));
        // The second op fails, so the first must not be visible either.
        let result =
            rt.block_on(store.write(vec![create("n/b", "x"), update("n/a", "y", Some(9))]));
        assert!(matches!(result, Err(WriteError::Conflict { .. })));
        assert_eq!(store.get("n/b").unwrap(), None);
        assert_eq!(store.revision(), 1);
        // A NUL in an index value is refused, not stored.
        let bad = Op::Create {
            key: "n/c".into(),
            indexes: vec![("tag".into(), "a\0b".into())],
            value: value_of("n/c", "x"),
        };
        assert!(matches!(
            rt.block_on(store.write(vec![bad])),
            Err(WriteError::InvalidIndex { .. })
        ));
        assert_eq!(store.revision(), 1);
        // Delete with the right revision works.
        let deleted = rt
            .block_on(store.write(vec![delete("n/a", Some(1))]))
            .unwrap();
        assert_eq!(
            deleted,
            [Committed {
                revision: 2,
                value: None
            }]
        );
        assert!(store.get("n/a").unwrap().is_none());
    });
}

#[test]
fn concurrent_writers_share_commits_and_get_distinct_revisions() {
    on_every_engine(|engine, dir, rt| {
        let store = open(dir, engine);
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                rt.spawn(async move {
                    let mut revisions = Vec::new();
                    for j in 0..10 {
                        let key = format!("n/{i}-{j}");
                        revisions
                            .push(store.write(vec![create(&key, "x")]).await.unwrap()[0].revision);
                    }
                    revisions
                })
            })
            .collect();
        let mut all: Vec<u64> = writers
            .into_iter()
            .flat_map(|w| rt.block_on(w).unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (1..=640).collect::<Vec<_>>());
        assert_eq!(
            list_all(&store, ListOptions::default())
                .unwrap()
                .items
                .len(),
            640
        );
    });
}

#[test]
fn a_snapshot_stays_exact_while_writes_go_on() {
    on_every_engine(|engine, dir, rt| {
        let store = open(dir, engine);
        let ops = (0..200)
            .map(|i| create(&format!("n/{i:03}"), "x"))
            .collect();
        rt.block_on(store.write(ops)).unwrap();
        let first = list_all(
            &store,
            ListOptions {
                limit: Some(50),
                ..Default::default()
            },
        )
        .unwrap();
        let at = first.revision;
        // Rewrite, delete and add keys on both sides of the page boundary.
        let writer = {
            let store = store.clone();
            rt.spawn(async move {
                for i in (0..200).step_by(3) {
                    let key = format!("n/{i:03}");
                    store.write(vec![update(&key, "y", None)]).await.unwrap();
                    store.write(vec![delete(&key, None)]).await.unwrap();
                    store
                        .write(vec![create(&format!("n/{i:03}+"), "y")])
                        .await
                        .unwrap();
                }
            })
        };
        let rest = paginate(
            &store,
            ListOptions {
                after: Some("n/049"),
                revision: Some(at),
                ..Default::default()
            },
            7,
        )
        .unwrap();
        rt.block_on(writer).unwrap();
        let mut all = first.items.clone();
        all.extend(rest);
        let want: Vec<String> = (0..200).map(|i| format!("n/{i:03}")).collect();
        assert_eq!(keys(&all), want);
        assert!(all.iter().all(|i| i.revision == 1 || i.revision <= at));
        // The index at the old revision still answers, though every value changed since.
        let tagged = paginate(
            &store,
            ListOptions {
                index: Some(("tag", "x")),
                revision: Some(at),
                ..Default::default()
            },
            13,
        )
        .unwrap();
        assert_eq!(keys(&tagged), want);
        let now = list_all(
            &store,
            ListOptions {
                index: Some(("tag", "x")),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(now.items.len(), 200 - 67);
    });
}

#[test]
fn namespaces_and_indexes_select_exactly() {
    on_every_engine(|engine, dir, rt| {
        let store = open(dir, engine);
        let multi = |key: &str, tags: &[&str]| Op::Create {
            key: key.into(),
            indexes: tags
                .iter()
                .map(|t| ("tag".to_string(), t.to_string()))
                .collect(),
            value: value_of(key, "m"),
        };
        rt.block_on(store.write(vec![
            multi("a/1", &["v1", "v10"]),
            multi("a/2", &["v10"]),
            multi("ab/1", &["v1"]),
            multi("b/1", &["v1", "v1"]),
        ]))
        .unwrap();
        let select = |prefix: &str, tag: Option<&str>| {
            let page = list_all(
                &store,
                ListOptions {
                    prefix,
                    index: tag.map(|t| ("tag", t)),
                    ..Default::default()
                },
            )
            .unwrap();
            page.items.into_iter().map(|i| i.key).collect::<Vec<_>>()
        };
        assert_eq!(select("a/", None), ["a/1", "a/2"]);
        assert_eq!(select("", Some("v1")), ["a/1", "ab/1", "b/1"]);
        assert_eq!(select("a/", Some("v10")), ["a/1", "a/2"]);
        assert_eq!(select("c/", Some("v1")), Vec::<String>::new());
        // `after` past the prefix gives an empty page, not an error.
        let page = list_all(
            &store,
            ListOptions {
                prefix: "a/",
                after: Some("zz"),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(page.items.is_empty() && !page.more);
        // The filter counts toward the limit only for what it keeps.
        let page = store
            .list(
                &ListOptions {
                    limit: Some(1),
                    ..Default::default()
                },
                &mut |i| i.key.starts_with('b'),
            )
            .unwrap();
        assert_eq!(keys(&page.items), ["b/1"]);
    });
}

#[test]
fn compaction_expires_old_snapshots_and_history() {
    on_every_engine(|engine, dir, rt| {
        let store = open(dir, engine);
        rt.block_on(store.write(vec![create("n/a", "x"), create("n/b", "x")]))
            .unwrap();
        rt.block_on(store.write(vec![delete("n/a", None), update("n/b", "y", None)]))
            .unwrap();
        let compacted = rt
            .block_on(store.compact(SystemTime::now() + Duration::from_secs(1)))
            .unwrap();
        assert_eq!(compacted, 4);
        assert!(matches!(
            list_all(
                &store,
                ListOptions {
                    revision: Some(3),
                    ..Default::default()
                }
            ),
            Err(ReadError::Expired {
                requested: 3,
                compacted: 4
            })
        ));
        assert!(matches!(
            store.watch(3),
            Err(WatchError::Gone {
                requested: 3,
                compacted: 4
            })
        ));
        assert!(matches!(
            list_all(
                &store,
                ListOptions {
                    revision: Some(5),
                    ..Default::default()
                }
            ),
            Err(ReadError::Future {
                requested: 5,
                current: 4
            })
        ));
        // Tombstones and dead index entries went with the history: nothing stale answers.
        let page = list_all(
            &store,
            ListOptions {
                index: Some(("tag", "x")),
                revision: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(page.items.is_empty());
        let page = list_all(
            &store,
            ListOptions {
                index: Some(("tag", "y")),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&page.items), ["n/b"]);
        // A compaction cut-off in the past leaves newer history alone.
        rt.block_on(store.write(vec![create("n/c", "x")])).unwrap();
        let compacted = rt
            .block_on(store.compact(SystemTime::now() - Duration::from_secs(3600)))
            .unwrap();
        assert_eq!(compacted, 4);
    });
}

#[test]
fn everything_survives_reopening() {
    on_every_engine(|engine, dir, rt| {
        {
            let store = open(dir, engine);
            rt.block_on(store.write(vec![create("n/a", "x"), create("n/b", "x")]))
                .unwrap();
            rt.block_on(store.write(vec![update("n/a", "y", Some(1)), delete("n/b", Some(2))]))
                .unwrap();
        }
        let store = open(dir, engine);
        assert_eq!(store.revision(), 4);
        let item = store.get("n/a").unwrap().unwrap();
        assert_eq!((item.revision, &item.value[..]), (3, &b"n/a:y@3"[..]));
        let page = list_all(
            &store,
            ListOptions {
                index: Some(("tag", "y")),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&page.items), ["n/a"]);
        let old = list_all(
            &store,
            ListOptions {
                revision: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&old.items), ["n/a", "n/b"]);
        // History replays across the restart, then the watch goes on live.
        let mut watch = store.watch(1).unwrap();
        let kinds: Vec<_> = (2..=4)
            .map(|_| rt.block_on(watch.next()).unwrap())
            .map(|c| (c.revision, c.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                (2, ChangeKind::Added),
                (3, ChangeKind::Modified),
                (4, ChangeKind::Deleted)
            ]
        );
        rt.block_on(store.write(vec![create("n/c", "x")])).unwrap();
        assert_eq!(rt.block_on(watch.next()).unwrap().revision, 5);
    });
}

#[test]
fn a_watcher_that_falls_behind_is_cut_off() {
    on_every_engine(|engine, dir, rt| {
        let store = Store::open(
            dir,
            Options {
                watch_buffer: 4,
                ..options(engine)
            },
        )
        .unwrap();
        let mut slow = store.watch(0).unwrap();
        let mut keeping_up = store.watch(0).unwrap();
        for i in 0..10 {
            rt.block_on(store.write(vec![create(&format!("n/{i}"), "x")]))
                .unwrap();
            assert_eq!(rt.block_on(keeping_up.next()).unwrap().revision, i + 1);
        }
        assert!(matches!(
            rt.block_on(slow.next()),
            Err(WatchError::FellBehind { buffered: 4 })
        ));
    });
}

/// An engine that fails commits while `failing` is set: the store must report the failure to
/// every writer of the group, publish nothing, and carry on once the engine recovers.
struct FlakyEngine {
    inner: Box<dyn Engine>,
    failing: Arc<AtomicBool>,
}

impl Engine for FlakyEngine {
    fn view(&self) -> Result<Box<dyn View>, EngineError> {
        self.inner.view()
    }
    fn commit(&self, batch: &Batch) -> Result<(), EngineError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(EngineError::corrupt("injected: disk full"));
        }
        self.inner.commit(batch)
    }
}

#[test]
fn a_failed_commit_is_reported_and_changes_nothing() {
    on_every_engine(|engine, dir, rt| {
        let failing = Arc::new(AtomicBool::new(false));
        let flaky = FlakyEngine {
            inner: engine.open(dir, 8 << 20).unwrap(),
            failing: failing.clone(),
        };
        let store = Store::with_engine(Box::new(flaky), options(engine)).unwrap();
        rt.block_on(store.write(vec![create("n/a", "x")])).unwrap();
        let mut watch = store.watch(1).unwrap();
        failing.store(true, Ordering::SeqCst);
        let result = rt.block_on(store.write(vec![update("n/a", "y", None)]));
        assert!(matches!(
            result,
            Err(WriteError::Storage(StorageError::CommitFailed(_)))
        ));
        assert_eq!(store.revision(), 1);
        assert_eq!(&store.get("n/a").unwrap().unwrap().value[..], b"n/a:x@1");
        failing.store(false, Ordering::SeqCst);
        let changes = rt
            .block_on(store.write(vec![update("n/a", "z", None)]))
            .unwrap();
        assert_eq!(changes[0].revision, 2);
        let seen = rt.block_on(watch.next()).unwrap();
        assert_eq!(
            (seen.revision, seen.value.as_deref()),
            (2, Some(&b"n/a:z@2"[..]))
        );
    });
}

/// A change as a log shared by several stores would carry it.
fn replicated(change: &Change) -> Replicated {
    Replicated {
        revision: change.revision,
        committed_at_ms: change.committed_at_ms,
        key: change.key.clone(),
        value: change.value.clone(),
        indexes: owned_pairs(&change.indexes),
    }
}

fn owned_pairs(indexes: &IndexValues) -> Vec<(String, String)> {
    indexes
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `store`'s changes after `after`, up to its current revision.
fn log_of(store: &Store, rt: &tokio::runtime::Runtime, after: u64) -> Vec<Replicated> {
    let mut watch = store.watch(after).unwrap();
    (after..store.revision())
        .map(|_| replicated(&rt.block_on(watch.next()).unwrap()))
        .collect()
}

#[test]
fn a_store_follows_changes_decided_elsewhere_and_restores_a_snapshot() {
    on_every_engine(|engine, dir, rt| {
        let leader = open(&dir.join("leader"), engine);
        let follower = open(&dir.join("follower"), engine);
        rt.block_on(leader.write(vec![create("n1/a", "x"), create("n1/b", "y")]))
            .unwrap();
        rt.block_on(leader.write(vec![create("n2/c", "x")]))
            .unwrap();
        rt.block_on(leader.write(vec![update("n1/a", "z", Some(1))]))
            .unwrap();
        rt.block_on(leader.write(vec![delete("n1/b", None), create("n2/d", "y")]))
            .unwrap();
        let log = log_of(&leader, rt, 0);
        assert_eq!(log.len(), 6);

        let applied = rt.block_on(follower.replicate(log[..3].to_vec())).unwrap();
        assert_eq!(applied.len(), 3);
        let again = rt.block_on(follower.replicate(log[..3].to_vec())).unwrap();
        assert!(again.is_empty(), "a log read twice applies once");
        let gap = rt.block_on(follower.replicate(log[4..].to_vec()));
        assert!(
            matches!(
                gap,
                Err(WriteError::OutOfOrder {
                    expected: 4,
                    got: 5
                })
            ),
            "{gap:?}"
        );
        rt.block_on(follower.replicate(log[3..].to_vec())).unwrap();
        assert_eq!(follower.revision(), leader.revision());
        assert_eq!(contents(&follower), contents(&leader));
        assert_eq!(follower.count(Some("n1"), 6).unwrap(), Some(1));
        // Watchers of the follower see what watchers of the leader see, previous states too.
        let (mut theirs, mut ours) = (leader.watch(0).unwrap(), follower.watch(0).unwrap());
        for _ in 0..6 {
            let (a, b) = (
                rt.block_on(theirs.next()).unwrap(),
                rt.block_on(ours.next()).unwrap(),
            );
            assert_eq!(
                (a.revision, &a.value, &a.prev_value),
                (b.revision, &b.value, &b.prev_value)
            );
        }

        // A new copy starts from a snapshot of the live objects, then follows.
        let fresh = open(&dir.join("fresh"), engine);
        let snapshot: Vec<Replicated> = list_all(&leader, ListOptions::default())
            .unwrap()
            .items
            .iter()
            .map(|item| Replicated {
                revision: item.revision,
                committed_at_ms: 0,
                key: item.key.clone(),
                value: Some(item.value.clone()),
                indexes: owned_pairs(&item.indexes),
            })
            .collect();
        let at = leader.revision();
        rt.block_on(fresh.restore(snapshot[..1].to_vec(), None))
            .unwrap();
        rt.block_on(fresh.restore(snapshot[1..].to_vec(), Some(at)))
            .unwrap();
        assert_eq!(fresh.revision(), at);
        assert!(matches!(fresh.watch(0), Err(WatchError::Gone { .. })));
        let refused = rt.block_on(fresh.restore(Vec::new(), Some(at)));
        assert!(matches!(refused, Err(WriteError::NotEmpty { .. })));
        rt.block_on(leader.write(vec![update("n2/c", "y", None), create("n1/e", "x")]))
            .unwrap();
        let more = log_of(&leader, rt, at);
        rt.block_on(fresh.replicate(more.clone())).unwrap();
        rt.block_on(follower.replicate(more)).unwrap();
        assert_eq!(contents(&fresh), contents(&leader));
        assert_eq!(contents(&follower), contents(&leader));
        let by_tag = |store: &Store| {
            let options = ListOptions {
                index: Some(("tag", "y")),
                ..ListOptions::default()
            };
            keys(&list_all(store, options).unwrap().items).join(",")
        };
        assert_eq!(by_tag(&fresh), "n2/c,n2/d");
        assert_eq!(fresh.count(None, fresh.revision()).unwrap(), Some(4));
    });
}
