//! whole-readers: concurrent clients that each read the whole collection at once — unpaged
//! JSON LISTs, unpaged Tables (`kubectl get --chunk-size=0`) and WatchLists
//! (`sendInitialEvents=true`) — some as fast as they can, some slowly (then hanging up), while
//! the server's resident memory is sampled before, during and after (it should come back
//! within a minute).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use super::scenarios::{BASE, Client, TABLE_ACCEPT};
use super::stats::{Report, report};

/// A slow reader waits this long after every chunk...
const SLOW_CHUNK_PAUSE: Duration = Duration::from_millis(20);
/// ...and hangs up after this long: what matters is what the server holds meanwhile.
const SLOW_READ_FOR: Duration = Duration::from_secs(20);
/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long memory is followed after the readers are done.
const AFTER: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Kind {
    List,
    Table,
    WatchList,
}

async fn resident_bytes(client: &Client) -> Result<f64, String> {
    let metrics = client.get("/metrics").await?;
    String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|l| l.strip_prefix("catalog_process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no catalog_process_resident_memory_bytes in /metrics".to_string())
}

/// Reads one whole collection; `slow` pauses after every chunk and hangs up after
/// [`SLOW_READ_FOR`]. Returns the bytes read.
async fn read_whole(client: &Client, kind: Kind, slow: bool) -> Result<u64, String> {
    let started = Instant::now();
    let (path, accept) = match kind {
        Kind::List => (format!("{BASE}/catalogimages"), "application/json"),
        Kind::Table => (format!("{BASE}/catalogimages"), TABLE_ACCEPT),
        Kind::WatchList => (
            format!(
                "{BASE}/catalogimages?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=600"
            ),
            "application/json",
        ),
    };
    let request = http::Request::get(&path)
        .header("Accept", accept)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = client
        .replica()
        .send(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("GET {path}: {}", response.status()));
    }
    let mut body = response.into_body();
    let mut length = 0;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        length += data.len() as u64;
        if let Kind::WatchList = kind {
            // Done at the bookmark that ends the initial events.
            tail.extend_from_slice(data);
            if let Some(end) = tail.iter().rposition(|b| *b == b'\n') {
                let lines = &tail[..end];
                const END: &[u8] = b"k8s.io/initial-events-end";
                if lines.windows(END.len()).any(|w| w == END) {
                    return Ok(length);
                }
                tail.drain(..=end);
            }
        }
        if slow {
            if started.elapsed() > SLOW_READ_FOR {
                return Ok(length);
            }
            tokio::time::sleep(SLOW_CHUNK_PAUSE).await;
        }
    }
    match kind {
        Kind::WatchList => Err(format!("GET {path}: ended before the initial events did")),
        _ => Ok(length),
    }
}

pub async fn whole_readers(client: &Client, readers: usize) -> Result<Report, String> {
    let before = resident_bytes(client).await?;
    let peak = Arc::new(AtomicU64::new(before as u64));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, peak, done) = (client.clone(), peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(now) = resident_bytes(&client).await {
                    peak.fetch_max(now as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };
    let started = Instant::now();
    let kinds = [Kind::List, Kind::Table, Kind::WatchList];
    let tasks: Vec<_> = (0..readers)
        .map(|i| {
            let client = client.clone();
            let (kind, slow) = (kinds[i % kinds.len()], (i / kinds.len()) % 2 == 1);
            tokio::spawn(async move {
                let start = Instant::now();
                read_whole(&client, kind, slow)
                    .await
                    .map(|bytes| (start.elapsed(), bytes))
            })
        })
        .collect();
    let (mut latencies, mut errors, mut bytes) = (Vec::new(), 0, 0);
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok((took, read)) => {
                latencies.push(took);
                bytes += read;
            }
            Err(e) => {
                eprintln!("whole-readers: {e}");
                errors += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await.map_err(|e| e.to_string())?;
    let at_end = resident_bytes(client).await?;
    // Followed until it is back within 64 MiB of where it started, or a minute has passed.
    let after_start = Instant::now();
    let mut after = at_end;
    while after_start.elapsed() < AFTER && after > before + (64 << 20) as f64 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = resident_bytes(client).await?;
    }
    let mib = |b: f64| b / (1 << 20) as f64;
    let peak = peak.load(Ordering::Relaxed) as f64;
    let mut r = report("whole-readers", latencies, errors, elapsed);
    r.notes.extend([
        ("readers".to_string(), readers as f64),
        ("MB_read".to_string(), bytes as f64 / 1e6),
        ("rss_before_MiB".to_string(), mib(before)),
        ("rss_peak_MiB".to_string(), mib(peak)),
        ("rss_end_MiB".to_string(), mib(at_end)),
        ("rss_after_MiB".to_string(), mib(after)),
        ("after_s".to_string(), after_start.elapsed().as_secs_f64()),
        (
            "peak_per_reader_MiB".to_string(),
            mib(peak - before) / readers.max(1) as f64,
        ),
    ]);
    Ok(r)
}
