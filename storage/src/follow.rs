//! A replica's follower: tails the shared log into the local store in revision order, woken by
//! the log's notifications (LISTEN on its own connection) and, should one be missed or the
//! connection be down, by polling.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::ReadError;
use crate::shared::{Listener, SharedLog};
use crate::store::WeakStore;

/// Changes applied at once.
const BATCH: u32 = 1_000;
/// How often the log is read when no notification comes.
const POLL: Duration = Duration::from_secs(1);

/// Follows `log` until the store is dropped, compacting the log's history as the store does
/// its own.
pub(crate) async fn run(store: WeakStore, log: SharedLog) {
    let woken = Arc::new(Notify::new());
    let mut listener: Option<Listener> = None;
    let mut next_compaction = Instant::now();
    loop {
        let Some(live) = store.upgrade() else { return };
        if Instant::now() >= next_compaction {
            let (retention, interval) = live.retention();
            let cutoff = SystemTime::now() - retention;
            let cutoff_ms = cutoff
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            if let Err(e) = log.compact(cutoff_ms as u64).await {
                tracing::warn!(error = %e, "shared log: compaction failed; will retry");
            }
            next_compaction = Instant::now() + interval;
        }
        if listener.as_ref().is_none_or(Listener::is_closed) {
            listener = match log.listen(woken.clone()).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "shared log: cannot listen; polling");
                    None
                }
            };
        }
        let read = log.changes(live.revision(), BATCH).await;
        if read.is_ok() {
            live.mark_followed();
        }
        match read {
            Ok(changes) if !changes.is_empty() => {
                // A full batch leaves more to read at once. A short one read everything
                // committed before it; a commit since then has notified, and that
                // notification is kept for the wait below (without a listener, the next poll
                // finds it): reading again at once would only find nothing, one query per
                // replica for every write.
                let full = changes.len() >= BATCH as usize;
                match live.replicate(changes).await {
                    Ok(_) if full => continue,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "shared log: change not applied"),
                }
            }
            Ok(_) => {}
            Err(ReadError::Expired { .. }) => tracing::error!(
                revision = live.revision(),
                "shared log: the local copy is older than the log's history; remove it to rebuild"
            ),
            Err(e) => tracing::warn!(error = %e, "shared log: not reachable"),
        }
        drop(live);
        tokio::select! {
            _ = woken.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
