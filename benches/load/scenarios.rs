//! The scenarios, each run for a duration by concurrent clients over the server's real TLS.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::Args;
use super::floors;
use super::stats::{Report, report, table};
use super::whole;

pub const BASE: &str = "/apis/catalog.automotive.io/v1alpha1";
/// What kubectl 1.3x sends for `kubectl get`.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// How long the watch fan-out waits, after its last write, for every watcher to receive it;
/// deliveries still missing then count as errors.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
const DISTROS: [&str; 6] = ["cs9", "autosd9-sig", "autosd10-sig", "cs10", "f41", "eln"];
const TARGETS: [&str; 8] = [
    "qemu",
    "rpi4",
    "beagleplay",
    "ridesx4",
    "am62sk",
    "j784s4evm",
    "s32g-vnp-rdb3",
    "tda4vm-sk",
];
const ARCHITECTURES: [&str; 4] = ["x86_64", "aarch64", "amd64", "arm64"];
const FORMATS: [&str; 4] = ["qcow2", "raw", "container", "simg"];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// The clients of the replicas the load goes to, each request to the next in turn.
#[derive(Clone)]
pub struct Client {
    replicas: Arc<[kube::Client]>,
    next: Arc<AtomicU64>,
}

impl Client {
    async fn connect(kubeconfigs: &[std::path::PathBuf]) -> Result<Client, String> {
        let mut replicas = Vec::new();
        for path in kubeconfigs {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            replicas.push(kube::Client::try_from(config).map_err(|e| e.to_string())?);
        }
        Ok(Client {
            replicas: replicas.into(),
            next: Arc::default(),
        })
    }

    /// The client the next request goes through.
    pub fn replica(&self) -> &kube::Client {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        &self.replicas[turn % self.replicas.len()]
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), String> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .body(kube::client::Body::from(body));
        self.exchange(request).await
    }

    /// Sends `request` and reads the whole response.
    async fn exchange(
        &self,
        request: http::Result<http::Request<kube::client::Body>>,
    ) -> Result<(u16, Bytes), String> {
        let request = request.map_err(|e| e.to_string())?;
        let response = self
            .replica()
            .send(request)
            .await
            .map_err(|e| e.to_string())?;
        let code = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, bytes))
    }

    /// The length of a GET's list body, counted as it streams in rather than held whole; an
    /// error if the list does not end (a server ends a failed stream early).
    async fn get_length(&self, path: &str) -> Result<u64, String> {
        let request = http::Request::get(path)
            .body(kube::client::Body::empty())
            .map_err(|e| e.to_string())?;
        let response = self
            .replica()
            .send(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("GET {path}: {}", response.status()));
        }
        let mut body = response.into_body();
        let (mut length, mut ends_list) = (0, false);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                length += data.len() as u64;
                ends_list = data.ends_with(b"]}");
            }
        }
        match ends_list {
            true => Ok(length),
            false => Err(format!("GET {path}: the list ended early")),
        }
    }

    /// A page as `kubectl get` asks for it: a Table, rows with their object's metadata.
    async fn get_table(&self, path: &str) -> Result<(), String> {
        let request = http::Request::get(format!("{path}&includeObject=Metadata"))
            .header("Accept", TABLE_ACCEPT)
            .body(kube::client::Body::empty());
        let (code, body) = self.exchange(request).await?;
        #[derive(serde::Deserialize)]
        struct Table {
            kind: String,
            rows: Vec<serde::de::IgnoredAny>,
        }
        match serde_json::from_slice::<Table>(&body) {
            Ok(table) if code == 200 && table.kind == "Table" && !table.rows.is_empty() => Ok(()),
            _ => Err(format!(
                "GET {path} as a Table: {code} {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        match self
            .send("GET", path, "application/json", Vec::new())
            .await?
        {
            (200, body) => Ok(body),
            (code, body) => Err(format!(
                "GET {path}: {code} {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

fn namespace_of(i: usize, namespaces: usize) -> String {
    format!("load-{:02}", i % namespaces.max(1))
}

fn name_of(i: usize) -> String {
    format!("image-{i:07}")
}

/// A realistic entry of about 2 KiB: spec, labels and annotations as a build pipeline writes them.
fn entry(i: usize, namespaces: usize) -> Value {
    let distro = DISTROS[i % DISTROS.len()];
    let build_mode = ["bootc", "image", "package"][i % 3];
    let targets: Vec<Value> = (0..3)
        .map(|t| json!({"name": TARGETS[(i + t) % TARGETS.len()], "verified": (i + t).is_multiple_of(2), "notes": "boots to multi-user; CAN and display checked by the nightly run"}))
        .collect();
    json!({
        "apiVersion": "catalog.automotive.io/v1alpha1",
        "kind": "CatalogImage",
        "metadata": {
            "name": name_of(i),
            "namespace": namespace_of(i, namespaces),
            "labels": {"tier": TIERS[i % TIERS.len()], "distro": distro, "pipeline": format!("nightly-{}", i % 50)},
            "annotations": {
                "automotive.sdv.cloud.redhat.com/build-id": format!("build-{i:09}"),
                "automotive.sdv.cloud.redhat.com/source": format!("https://gitlab.com/CentOS/automotive/sample-images/-/commit/{:040x}", i as u128 * 2654435761),
                "automotive.sdv.cloud.redhat.com/manifest": "images/developer.aib.yml",
            },
        },
        "spec": {
            "registryUrl": format!("quay.io/automotive/{distro}:{}-{i}", TARGETS[i % TARGETS.len()]),
            "tags": [format!("{}", i % 10), "latest", format!("nightly-{}", i % 31)],
            "verificationInterval": "6h",
            "metadata": {
                "architecture": ARCHITECTURES[i % ARCHITECTURES.len()],
                "distro": distro,
                "distroVersion": format!("{}.{}", 9 + i % 2, i % 7),
                "targets": targets,
                "bootc": i.is_multiple_of(3),
                "buildMode": build_mode,
                "exportFormat": FORMATS[i % FORMATS.len()],
            },
        },
    })
}

/// Runs `op(iteration)` from `concurrency` tasks for `duration`; latency per call.
async fn timed<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> (Vec<Duration>, u64, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (op, counter, errors) = (op.clone(), counter.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let iteration = counter.fetch_add(1, Ordering::Relaxed);
                    let at = Instant::now();
                    match op(iteration).await {
                        Ok(()) => latencies.push(at.elapsed()),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("error: {e}");
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    (latencies, errors.load(Ordering::Relaxed), started.elapsed())
}

async fn seed(client: &Client, args: &Args) -> Result<(), String> {
    // A catalog seeded before (the last entry is there) is used as it is.
    let last = args.seed.saturating_sub(1);
    let path = format!(
        "{BASE}/namespaces/{}/catalogimages/{}",
        namespace_of(last, args.namespaces),
        name_of(last)
    );
    if args.seed > 0 && client.get(&path).await.is_ok() {
        eprintln!("{} entries already seeded", args.seed);
        return Ok(());
    }
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let total = args.seed;
    let step = (total / 20).max(1) as u64;
    let namespaces = args.namespaces;
    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..total)
        .map(|i| {
            let (client, done) = (client.clone(), done.clone());
            async move {
                let object = entry(i, namespaces);
                let path = format!(
                    "{BASE}/namespaces/{}/catalogimages",
                    namespace_of(i, namespaces)
                );
                let (code, body) = client
                    .send(
                        "POST",
                        &path,
                        "application/json",
                        object.to_string().into_bytes(),
                    )
                    .await?;
                if code != 201 && code != 409 {
                    return Err(format!("create: {code} {}", String::from_utf8_lossy(&body)));
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    let rate = n as f64 / started.elapsed().as_secs_f64();
                    eprintln!(
                        "seeded {n}/{total} ({:.0}%), {rate:.0}/s",
                        n as f64 * 100.0 / total as f64
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e);
    }
    eprintln!(
        "seeded {total} entries in {:.1}s: {:.0} creates/s",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A page path of the whole catalog, `limit` items from `token`.
fn page_path(query: &str, token: Option<&str>) -> String {
    let mut path = format!("{BASE}/catalogimages?limit=500{query}");
    if let Some(token) = token {
        path.push_str(&format!("&continue={token}"));
    }
    path
}

/// The continue token of a list page; the items are checked as JSON but not kept.
fn continue_token(page: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: Metadata,
        #[allow(dead_code)]
        items: serde::de::IgnoredAny,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "continue")]
        token: Option<String>,
    }
    let page: Page = serde_json::from_slice(page).ok()?;
    page.metadata.token.filter(|t| !t.is_empty())
}

/// The resourceVersion of the object in a watch event line, without parsing the whole line.
fn event_revision(line: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"resourceVersion\":\"";
    let digits = &line[memchr::memmem::find(line, FIELD)? + FIELD.len()..];
    let end = memchr::memchr(b'"', digits)?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// A watch's body cut into event lines, as its frames come: the generator reads 100,000
/// events a second on the cores the servers use, so each line is found without copying it
/// unless a frame ends in the middle of it (with a copy of every line and a byte-by-byte
/// search, the generator used a fifth more CPU at 1,000 watchers and 100 writes/s).
#[derive(Default)]
struct Lines {
    /// The start of a line the frames so far have not completed.
    partial: Vec<u8>,
}

impl Lines {
    /// Calls `line` with each line `frame` completes.
    fn feed(&mut self, mut frame: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(end) = memchr::memchr(b'\n', frame) {
            if self.partial.is_empty() {
                line(&frame[..end]);
            } else {
                self.partial.extend_from_slice(&frame[..end]);
                line(&self.partial);
                self.partial.clear();
            }
            frame = &frame[end + 1..];
        }
        self.partial.extend_from_slice(frame);
    }
}

/// What the watchers of the fan-out scenario share.
#[derive(Default)]
struct Fanout {
    /// (revision, when received) of every event, a list per watcher (no lock shared).
    received: Vec<std::sync::Mutex<Vec<(u64, Instant)>>>,
    /// The revision of each watcher's last event.
    last_seen: Vec<AtomicU64>,
    /// The revision of the last write, once the writes have stopped (0 before).
    last_write: AtomicU64,
    /// Woken when a watcher reaches `last_write`.
    caught_up: tokio::sync::Notify,
    /// Watches that ended (or failed) and were started again from their last revision.
    rewatches: AtomicU64,
}

impl Fanout {
    fn all_caught_up(&self) -> bool {
        let last = self.last_write.load(Ordering::Acquire);
        self.last_seen
            .iter()
            .all(|seen| seen.load(Ordering::Acquire) >= last)
    }
}

/// One watcher of the whole collection from `from`, meeting the others at `started` once its
/// first watch has answered. Like a client-go reflector, a watch that ends is started again
/// from the last revision it saw.
async fn watcher(
    client: Client,
    fanout: Arc<Fanout>,
    index: usize,
    from: u64,
    started: Arc<tokio::sync::Barrier>,
) {
    let mut from = from;
    let mut started = Some(started);
    loop {
        let request = http::Request::get(format!(
            "{BASE}/catalogimages?watch=true&resourceVersion={from}"
        ))
        .body(kube::client::Body::empty())
        .expect("a valid request");
        let response = client.replica().send(request).await;
        if let Some(started) = started.take() {
            started.wait().await;
        }
        if let Ok(response) = response {
            let mut body = response.into_body();
            let mut lines = Lines::default();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                lines.feed(&data, |line| {
                    let Some(revision) = event_revision(line) else {
                        return;
                    };
                    fanout.received[index]
                        .lock()
                        .unwrap()
                        .push((revision, Instant::now()));
                    from = revision;
                    fanout.last_seen[index].store(revision, Ordering::Release);
                    let last = fanout.last_write.load(Ordering::Acquire);
                    if last != 0 && revision >= last {
                        fanout.caught_up.notify_one();
                    }
                });
            }
        }
        fanout.rewatches.fetch_add(1, Ordering::Relaxed);
    }
}

/// W watchers on the whole collection while one client patches at a rate; every delivery's
/// latency from its write request, waiting (up to a deadline) until every watcher has the last
/// write, so that a slow delivery counts as slow rather than as missing.
async fn watch_fanout(client: &Client, args: &Args) -> Result<Report, String> {
    let list = client.get(&format!("{BASE}/catalogimages?limit=1")).await?;
    let revision: Value = serde_json::from_slice(&list).map_err(|e| e.to_string())?;
    let from: u64 = revision["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or("the list has no resourceVersion")?;
    let fanout = Arc::new(Fanout {
        last_seen: (0..args.watchers).map(|_| AtomicU64::new(from)).collect(),
        received: (0..args.watchers).map(|_| Default::default()).collect(),
        ..Fanout::default()
    });
    let all_started = Arc::new(tokio::sync::Barrier::new(args.watchers + 1));
    let watchers: Vec<_> = (0..args.watchers)
        .map(|i| {
            let (c, f, s) = (client.clone(), fanout.clone(), all_started.clone());
            tokio::spawn(watcher(c, f, i, from, s))
        })
        .collect();
    all_started.wait().await;
    // Writes at the rate asked, each on its own task so that a slow answer does not slow the
    // rate; each remembers when it was sent, by the revision it made.
    let interval = Duration::from_secs_f64(1.0 / args.watch_write_rate.max(1) as f64);
    let started = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    let mut writes = tokio::task::JoinSet::new();
    let mut i = 0usize;
    // A new tag every write of every run: a patch that changes nothing makes no event.
    let run: u32 = rand::random();
    while started.elapsed() < args.duration {
        ticks.tick().await;
        let n = i % args.seed.max(1);
        i += 1;
        let path = format!(
            "{BASE}/namespaces/{}/catalogimages/{}",
            namespace_of(n, args.namespaces),
            name_of(n)
        );
        let patch = json!({"spec": {"tags": ["latest", format!("watch-{run:08x}-{i}")]}})
            .to_string()
            .into_bytes();
        let client = client.clone();
        writes.spawn(async move {
            let at = Instant::now();
            let (code, body) = client
                .send("PATCH", &path, "application/merge-patch+json", patch)
                .await?;
            if code != 200 {
                return Err(format!("PATCH {path}: {code}"));
            }
            let answered = at.elapsed();
            let object: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .map(|revision| (revision, at, answered))
                .ok_or_else(|| format!("PATCH {path}: no resourceVersion"))
        });
    }
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    // How long the writes themselves took: what of a delivery's latency is the write's.
    let mut answers = Vec::new();
    while let Some(write) = writes.join_next().await {
        let (revision, at, answered) = write.map_err(|e| e.to_string())??;
        sent.insert(revision, at);
        answers.push(answered);
    }
    let writing = started.elapsed();
    let last = sent.keys().max().copied().unwrap_or(from);
    fanout.last_write.store(last, Ordering::Release);
    let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
    while !fanout.all_caught_up() {
        if tokio::time::timeout_at(deadline, fanout.caught_up.notified())
            .await
            .is_err()
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    for watcher in &watchers {
        watcher.abort();
    }
    let received: Vec<(u64, Instant)> = fanout
        .received
        .iter()
        .flat_map(|events| std::mem::take(&mut *events.lock().unwrap()))
        .collect();
    let latencies: Vec<Duration> = received
        .iter()
        .filter_map(|(revision, at)| {
            sent.get(revision)
                .map(|sent| at.saturating_duration_since(*sent))
        })
        .collect();
    let written = report("write", answers, 0, writing);
    let expected = sent.len() as u64 * args.watchers as u64;
    let delivered = latencies.len() as u64;
    let mut report = report(
        "watch-fanout",
        latencies,
        expected.saturating_sub(delivered),
        elapsed,
    );
    report.notes.push(("write_p50_ms".into(), written.p50_ms));
    report.notes.push(("write_p99_ms".into(), written.p99_ms));
    report.notes.push(("watchers".into(), args.watchers as f64));
    report.notes.push(("writes".into(), sent.len() as f64));
    report
        .notes
        .push(("writes/s".into(), sent.len() as f64 / writing.as_secs_f64()));
    report
        .notes
        .push(("drain_s".into(), (elapsed - writing).as_secs_f64()));
    report.notes.push((
        "rewatches".into(),
        fanout.rewatches.load(Ordering::Relaxed) as f64,
    ));
    Ok(report)
}

fn wanted(args: &Args, scenario: &str) -> bool {
    args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == scenario)
}

pub async fn run(args: Args) -> Result<(), String> {
    let client = Client::connect(&args.kubeconfig).await?;
    seed(&client, &args).await?;
    let (n, namespaces, duration, concurrency) = (
        args.seed.max(1),
        args.namespaces,
        args.duration,
        args.concurrency,
    );
    let mut reports = Vec::new();
    // New names and tags every run, so that each create and each update really writes (an
    // update that changes nothing is answered without a write).
    let run: u32 = rand::random();

    if wanted(&args, "get") {
        let c = client.clone();
        let (latencies, errors, elapsed) = timed(concurrency, duration, move |i| {
            let c = c.clone();
            async move {
                let k = (i as usize).wrapping_mul(7919) % n;
                c.get(&format!(
                    "{BASE}/namespaces/{}/catalogimages/{}",
                    namespace_of(k, namespaces),
                    name_of(k)
                ))
                .await
                .map(drop)
            }
        })
        .await;
        reports.push(report("get", latencies, errors, elapsed));
    }
    let mut sample_page = Bytes::new();
    if wanted(&args, "list-page") {
        // Each client pages through everything, page after page.
        let c = client.clone();
        let tokens: Arc<std::sync::Mutex<HashMap<u64, Option<String>>>> = Arc::default();
        let bytes = Arc::new(AtomicU64::new(0));
        let (tokens_in, bytes_in) = (tokens.clone(), bytes.clone());
        let (latencies, errors, elapsed) = timed(concurrency, duration, move |i| {
            let (c, tokens, bytes) = (c.clone(), tokens_in.clone(), bytes_in.clone());
            async move {
                let worker = i % 1_000_000;
                let token = tokens.lock().unwrap().get(&worker).cloned().flatten();
                let page = c.get(&page_path("", token.as_deref())).await?;
                bytes.fetch_add(page.len() as u64, Ordering::Relaxed);
                tokens.lock().unwrap().insert(worker, continue_token(&page));
                Ok(())
            }
        })
        .await;
        let mut r = report("list-page", latencies, errors, elapsed);
        r.notes.push((
            "MB/s".into(),
            bytes.load(Ordering::Relaxed) as f64 / 1e6 / elapsed.as_secs_f64(),
        ));
        reports.push(r);
        sample_page = client.get(&page_path("", None)).await?;
    }
    for (scenario, queries) in [
        (
            "list-indexed",
            vec![
                "&fieldSelector=spec.metadata.distro%3Dautosd10-sig",
                "&fieldSelector=status.phase%3DPending",
            ],
        ),
        (
            "list-label",
            vec![
                "&labelSelector=tier%3Dgold",
                "&labelSelector=pipeline%3Dnightly-7",
            ],
        ),
    ] {
        if !wanted(&args, scenario) {
            continue;
        }
        let c = client.clone();
        let queries = Arc::new(queries);
        let (latencies, errors, elapsed) = timed(concurrency, duration, move |i| {
            let (c, queries) = (c.clone(), queries.clone());
            async move {
                c.get(&page_path(queries[i as usize % queries.len()], None))
                    .await
                    .map(drop)
            }
        })
        .await;
        reports.push(report(scenario, latencies, errors, elapsed));
    }
    if wanted(&args, "list-table") {
        let c = client.clone();
        let (latencies, errors, elapsed) = timed(concurrency, duration, move |_| {
            let c = c.clone();
            async move { c.get_table(&page_path("", None)).await }
        })
        .await;
        reports.push(report("list-table", latencies, errors, elapsed));
    }
    let mut full_list_rate = 0.0;
    if wanted(&args, "list-full") {
        let c = client.clone();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let (latencies, errors, elapsed) = timed(1, duration, move |_| {
            let (c, counted) = (c.clone(), counted.clone());
            async move {
                let length = c.get_length(&format!("{BASE}/catalogimages")).await?;
                counted.fetch_add(length, Ordering::Relaxed);
                Ok(())
            }
        })
        .await;
        full_list_rate = bytes.load(Ordering::Relaxed) as f64 / 1e6 / elapsed.as_secs_f64();
        let mut r = report("list-full", latencies, errors, elapsed);
        r.notes.push(("MB/s".into(), full_list_rate));
        reports.push(r);
    }
    if wanted(&args, "whole-readers") {
        reports.push(whole::whole_readers(&client, args.whole_readers).await?);
    }
    if wanted(&args, "watch-fanout") {
        reports.push(watch_fanout(&client, &args).await?);
    }
    let created = Arc::new(AtomicU64::new(0));
    if wanted(&args, "create") {
        let (c, created_in) = (client.clone(), created.clone());
        let (latencies, errors, elapsed) = timed(concurrency, duration, move |_| {
            let (c, created) = (c.clone(), created_in.clone());
            async move {
                let k = created.fetch_add(1, Ordering::Relaxed) as usize;
                let mut object = entry(k, namespaces);
                object["metadata"]["name"] = format!("created-{run:08x}-{k}").into();
                let path = format!(
                    "{BASE}/namespaces/{}/catalogimages",
                    namespace_of(k, namespaces)
                );
                match c
                    .send(
                        "POST",
                        &path,
                        "application/json",
                        object.to_string().into_bytes(),
                    )
                    .await?
                {
                    (201, _) => Ok(()),
                    (code, body) => {
                        Err(format!("create: {code} {}", String::from_utf8_lossy(&body)))
                    }
                }
            }
        })
        .await;
        reports.push(report("create", latencies, errors, elapsed));
    }
    if wanted(&args, "update") || wanted(&args, "mixed") {
        for scenario in ["update", "mixed"] {
            if !wanted(&args, scenario) {
                continue;
            }
            let c = client.clone();
            let mixed = scenario == "mixed";
            let (latencies, errors, elapsed) = timed(concurrency, duration, move |i| {
                let c = c.clone();
                async move {
                    let k = (i as usize).wrapping_mul(104_729) % n;
                    let path = format!(
                        "{BASE}/namespaces/{}/catalogimages/{}",
                        namespace_of(k, namespaces),
                        name_of(k)
                    );
                    match (mixed, i % 10) {
                        (true, 0..=7) => c.get(&path).await.map(drop),
                        (true, 8) => c
                            .get(&page_path(
                                "&fieldSelector=spec.metadata.distro%3Dcs9",
                                None,
                            ))
                            .await
                            .map(drop),
                        _ => {
                            let patch =
                                json!({"spec": {"tags": ["latest", format!("u{run:08x}-{i}")]}})
                                    .to_string()
                                    .into_bytes();
                            match c
                                .send("PATCH", &path, "application/merge-patch+json", patch)
                                .await?
                            {
                                (200, _) => Ok(()),
                                (code, body) => Err(format!(
                                    "update: {code} {}",
                                    String::from_utf8_lossy(&body)
                                )),
                            }
                        }
                    }
                }
            })
            .await;
            reports.push(report(scenario, latencies, errors, elapsed));
        }
    }

    // Floors measured in this run, and the server's own figures.
    let mut floor_notes = Vec::new();
    if !sample_page.is_empty() {
        let serialise = floors::serialise_page(&sample_page)?;
        floor_notes.push((
            "serde_page_ms".to_string(),
            serialise.as_secs_f64() * 1000.0,
        ));
    }
    if full_list_rate > 0.0 {
        let copy = floors::tls_copy_rate(64 << 20).await?;
        floor_notes.push(("tls_copy_MB/s".to_string(), copy));
        floor_notes.push((
            "list_full_of_floor_%".to_string(),
            full_list_rate / copy * 100.0,
        ));
    }
    let metrics = String::from_utf8_lossy(&client.get("/metrics").await?).to_string();
    for name in [
        "catalog_process_resident_memory_bytes",
        "catalog_store_size_bytes",
        "catalog_watches",
        "catalog_store_revision",
    ] {
        if let Some(value) = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            floor_notes.push((name.to_string(), value));
        }
    }
    let mut floors_report = report("server", Vec::new(), 0, Duration::ZERO);
    floors_report.notes = floor_notes;
    reports.push(floors_report);

    print!("{}", table(&reports));
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cut_anywhere_between_frames_come_whole_with_their_revisions() {
        let events = concat!(
            r#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"7"}}}"#,
            "\n",
            r#"{"type":"MODIFIED","object":{"metadata":{"resourceVersion":"12","name":"b"}}}"#,
            "\n",
            r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"13"}}}"#,
            "\n",
        )
        .as_bytes();
        for cut in 0..events.len() {
            for second_cut in cut..events.len() {
                let mut lines = Lines::default();
                let mut revisions = Vec::new();
                for frame in [
                    &events[..cut],
                    &events[cut..second_cut],
                    &events[second_cut..],
                ] {
                    lines.feed(frame, |line| revisions.push(event_revision(line)));
                }
                assert_eq!(
                    revisions,
                    [Some(7), Some(12), Some(13)],
                    "cut at {cut}, {second_cut}"
                );
            }
        }
        assert_eq!(
            event_revision(br#"{"type":"ERROR","object":{"code":410}}"#),
            None
        );
    }
}
