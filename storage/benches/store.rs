//! Store benchmarks, each beside the raw engine doing the same work (the floor).
//!
//! `CATALOG_BENCH_OBJECTS` (default 100000) objects of ~2 KiB are loaded into the store and,
//! as plain key → bytes, into a raw engine of the same kind. `CATALOG_BENCH_ENGINES` (default
//! `redb`) picks the engines, comma-separated. Besides criterion's figures, each fixture prints
//! latency percentiles for get and for an indexed page, reopen time, disk use and RSS.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use catalog_storage::{Batch, Engine, EngineKind, ListOptions, Op, Options, Store};
use criterion::{BenchmarkId, Criterion, Throughput};

const DISTROS: [&str; 8] = [
    "cs9",
    "cs10",
    "autosd9",
    "autosd10-sig",
    "autosd10",
    "f41",
    "rhivos1",
    "rhivos2",
];
const TARGETS: [&str; 6] = ["qemu", "rpi4", "beagleplay", "ridesx4", "am69sk", "s32g"];
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn key(i: usize) -> String {
    format!("ns-{:02}/image-{i:08}", i % 50)
}

/// A ~2 KiB object with the index values the API layer would extract from it.
fn object(i: usize, revision: u64) -> (Vec<(String, String)>, Bytes) {
    let distro = DISTROS[i % DISTROS.len()];
    let target = TARGETS[i % TARGETS.len()];
    let arch = ARCHES[i % 2];
    let indexes = vec![
        ("spec.metadata.distro".into(), distro.into()),
        ("spec.metadata.targets".into(), target.into()),
        ("spec.metadata.architecture".into(), arch.into()),
        (
            "status.phase".into(),
            if i.is_multiple_of(10) {
                "Failed".into()
            } else {
                "Available".into()
            },
        ),
    ];
    let padding = "x".repeat(1500);
    let json = format!(
        r#"{{"apiVersion":"catalog.automotive.io/v1alpha1","kind":"CatalogImage","metadata":{{"name":"image-{i:08}","namespace":"ns-{:02}","resourceVersion":"{revision}","labels":{{"distro":"{distro}"}}}},"spec":{{"registryUrl":"quay.io/automotive/{distro}:{i}","metadata":{{"architecture":"{arch}","distro":"{distro}","targets":[{{"name":"{target}","verified":true}}],"notes":"{padding}"}}}}}}"#,
        i % 50
    );
    (indexes, Bytes::from(json))
}

fn create(i: usize) -> Op {
    let (indexes, _) = object(i, 0);
    Op::Create {
        key: key(i),
        indexes,
        value: Box::new(move |rev| object(i, rev).1),
    }
}

fn update(i: usize) -> Op {
    let (indexes, _) = object(i, 0);
    Op::Update {
        key: key(i),
        expected: None,
        indexes,
        value: Box::new(move |rev| object(i, rev).1),
    }
}

struct Fixture {
    name: String,
    kind: EngineKind,
    dir: tempfile::TempDir,
    store: Option<Store>,
    raw: Box<dyn Engine>,
    objects: usize,
    runtime: tokio::runtime::Runtime,
}

fn options(kind: EngineKind) -> Options {
    // Keep all history for the whole run: watch replay is measured over it.
    Options {
        engine: kind,
        retention: Duration::from_secs(24 * 3600),
        ..Options::default()
    }
}

impl Fixture {
    fn load(kind: EngineKind, objects: usize) -> Fixture {
        let dir = tempfile::tempdir_in(
            std::env::var("CATALOG_BENCH_DIR")
                .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Store::open(&dir.path().join("store"), options(kind)).unwrap();
        let raw = kind
            .open(&dir.path().join("raw"), Options::default().cache_bytes)
            .unwrap();
        let started = Instant::now();
        for chunk in (0..objects).collect::<Vec<_>>().chunks(1000) {
            runtime
                .block_on(store.write(chunk.iter().map(|&i| create(i)).collect()))
                .unwrap();
            let mut batch = Batch::default();
            for &i in chunk {
                batch.put(key(i).into_bytes(), object(i, 1).1.to_vec());
            }
            raw.commit(&batch).unwrap();
        }
        let name = format!("{kind:?}").to_lowercase();
        eprintln!(
            "[{name}] loaded {objects} objects into store and raw engine in {:.1?}",
            started.elapsed()
        );
        Fixture {
            name,
            kind,
            dir,
            store: Some(store),
            raw,
            objects,
            runtime,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Latency percentiles and resource figures that criterion does not give.
    fn report(&mut self) {
        let mut get = Vec::new();
        for n in 0..20_000 {
            let k = key((n * 7919) % self.objects);
            let t = Instant::now();
            black_box(self.store().get(&k).unwrap());
            get.push(t.elapsed());
        }
        let mut page = Vec::new();
        for n in 0..200 {
            let t = Instant::now();
            let options = ListOptions {
                index: Some(("spec.metadata.distro", DISTROS[n % 8])),
                limit: Some(500),
                ..Default::default()
            };
            black_box(self.store().list(&options, &mut |_| true).unwrap());
            page.push(t.elapsed());
        }
        eprintln!("[{}] get: {}", self.name, percentiles(&mut get));
        eprintln!(
            "[{}] indexed page of 500: {}",
            self.name,
            percentiles(&mut page)
        );
        eprintln!(
            "[{}] RSS {} (peak {})",
            self.name,
            status_kib("VmRSS"),
            status_kib("VmHWM")
        );
        eprintln!(
            "[{}] disk: store {} MiB, raw engine {} MiB",
            self.name,
            du(&self.dir.path().join("store")) >> 20,
            du(&self.dir.path().join("raw")) >> 20
        );
        drop(self.store.take());
        let t = Instant::now();
        self.store = Some(Store::open(&self.dir.path().join("store"), options(self.kind)).unwrap());
        eprintln!("[{}] reopen: {:.1?}", self.name, t.elapsed());
    }
}

fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.1?} p99 {:.1?} max {:.1?}",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn status_kib(field: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .map_or("?".into(), |l| l[field.len() + 1..].trim().to_string())
}

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    du(&e.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    })
}

fn bench_fixture(c: &mut Criterion, f: &Fixture) {
    let n = f.objects;
    let name = &f.name;
    let mut group = c.benchmark_group(format!("{name}/{n}"));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let mut i = 0;
    group.bench_function("get/store", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            f.store().get(&key(i)).unwrap()
        })
    });
    group.bench_function("get/raw", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            f.raw.view().unwrap().get(key(i).as_bytes()).unwrap()
        })
    });

    group.throughput(Throughput::Elements(500));
    let mut d = 0;
    group.bench_function("indexed-page-500/store", |b| {
        b.iter(|| {
            d += 1;
            let options = ListOptions {
                index: Some(("spec.metadata.distro", DISTROS[d % 8])),
                limit: Some(500),
                ..Default::default()
            };
            f.store().list(&options, &mut |_| true).unwrap()
        })
    });
    group.bench_function("indexed-page-500/raw", |b| {
        b.iter(|| {
            d += 1;
            let start = key((d * 7919) % n);
            let mut items = Vec::with_capacity(500);
            f.raw
                .view()
                .unwrap()
                .scan(start.as_bytes(), b"\xff", &mut |k, v| {
                    items.push((k.to_vec(), v.to_vec()));
                    if items.len() < 500 {
                        std::ops::ControlFlow::Continue(())
                    } else {
                        std::ops::ControlFlow::Break(())
                    }
                })
                .unwrap();
            items
        })
    });

    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function("full-scan/store", |b| {
        b.iter(|| {
            f.store()
                .list(&ListOptions::default(), &mut |_| true)
                .unwrap()
                .items
                .len()
        })
    });
    group.bench_function("full-scan/raw", |b| {
        b.iter(|| {
            let mut items = Vec::new();
            f.raw
                .view()
                .unwrap()
                .scan(b"", b"\xff", &mut |k, v| {
                    items.push((k.to_vec(), Bytes::copy_from_slice(v)));
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            items.len()
        })
    });

    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable-write-1-writer/store", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            f.runtime
                .block_on(f.store().write(vec![update(i)]))
                .unwrap()
        })
    });
    group.bench_function("durable-write-1-writer/raw", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let mut batch = Batch::default();
            batch.put(key(i).into_bytes(), object(i, 0).1.to_vec());
            f.raw.commit(&batch).unwrap()
        })
    });
    group.bench_function(
        BenchmarkId::new("durable-writes-64-writers", "store"),
        |b| {
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(64) as usize;
                let started = Instant::now();
                let writers: Vec<_> = (0..64)
                    .map(|w| {
                        let store = f.store().clone();
                        f.runtime.spawn(async move {
                            for j in 0..per_writer {
                                store
                                    .write(vec![update((w * 15_485_863 + j * 7919) % n)])
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    f.runtime.block_on(w).unwrap();
                }
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (per_writer * 64) as f64)
            })
        },
    );
    let raw: &dyn Engine = f.raw.as_ref();
    group.bench_function(BenchmarkId::new("durable-writes-64-writers", "raw"), |b| {
        b.iter_custom(|iters| {
            let per_writer = iters.div_ceil(64) as usize;
            let started = Instant::now();
            std::thread::scope(|scope| {
                for w in 0..64 {
                    scope.spawn(move || {
                        for j in 0..per_writer {
                            let i = (w * 15_485_863 + j * 7919) % n;
                            let mut batch = Batch::default();
                            batch.put(key(i).into_bytes(), object(i, 0).1.to_vec());
                            raw.commit(&batch).unwrap();
                        }
                    });
                }
            });
            started
                .elapsed()
                .mul_f64(iters as f64 / (per_writer * 64) as f64)
        })
    });

    let replay = 10_000.min(n as u64);
    group.throughput(Throughput::Elements(replay));
    group.bench_function("watch-replay-10k/store", |b| {
        b.iter(|| {
            let mut watch = f.store().watch(f.store().revision() - replay).unwrap();
            f.runtime.block_on(async {
                for _ in 0..replay {
                    black_box(watch.next().await.unwrap());
                }
            });
        })
    });
    group.bench_function("watch-replay-10k/raw", |b| {
        b.iter(|| {
            let mut count = 0;
            f.raw
                .view()
                .unwrap()
                .scan(b"", b"\xff", &mut |_, v| {
                    black_box(Arc::new(Bytes::copy_from_slice(v)));
                    count += 1;
                    if count < replay {
                        std::ops::ControlFlow::Continue(())
                    } else {
                        std::ops::ControlFlow::Break(())
                    }
                })
                .unwrap();
        })
    });
    group.finish();
}

fn main() {
    let objects = std::env::var("CATALOG_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let engines = std::env::var("CATALOG_BENCH_ENGINES").unwrap_or_else(|_| "redb".into());
    let mut criterion = Criterion::default().configure_from_args();
    for engine in engines.split(',') {
        let mut fixture = Fixture::load(engine.parse().unwrap(), objects);
        bench_fixture(&mut criterion, &fixture);
        fixture.report();
    }
    criterion.final_summary();
}
