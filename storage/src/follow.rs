//! A replica's follower: tails the shared log into the local store in revision order. A
//! commit's notification (LISTEN on a connection of its own) carries its changes when they fit,
//! and those are applied as they come; the log is read when one did not, when they do not
//! follow the copy's revision (a notification missed), when the listener starts again, and
//! every [`POLL`] without a notification (the listener down, or nothing written).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::notification::Inbox;
use crate::shared::{Listener, SharedLog};
use crate::store::{Store, WeakStore};
use crate::{ReadError, Replicated, WriteError};

/// Changes read from the log at once.
const BATCH: u32 = 1_000;
/// How often the log is read when no notification comes.
const POLL: Duration = Duration::from_secs(1);

/// Follows `log` until the store is dropped, compacting the log's history as the store does
/// its own.
pub(crate) async fn run(store: WeakStore, log: SharedLog) {
    let inbox = Arc::new(Inbox::default());
    let mut listener: Option<Listener> = None;
    let mut next_compaction = Instant::now();
    let mut must_read = true;
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
            // What was committed while no one listened is only in the log.
            must_read = true;
            listener = match log.listen(inbox.clone()).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "shared log: cannot listen; polling");
                    None
                }
            };
        }
        let (announced, unannounced) = inbox.take();
        must_read |= unannounced;
        if !must_read && !announced.is_empty() {
            must_read = !apply_announced(&live, announced).await;
        }
        if must_read && read_log(&live, &log).await == Read::More {
            continue;
        }
        must_read = false;
        drop(live);
        tokio::select! {
            _ = inbox.notified() => {}
            _ = tokio::time::sleep(POLL) => must_read = true,
        }
    }
}

/// Applies changes a notification announced; false when they do not follow the copy's
/// revision (one was missed) and the log must be read.
async fn apply_announced(live: &Store, announced: Vec<Replicated>) -> bool {
    match live.replicate(announced).await {
        Ok(_) => {
            live.mark_followed();
            true
        }
        Err(WriteError::OutOfOrder { .. }) => false,
        Err(e) => {
            tracing::error!(error = %e, "shared log: change not applied");
            false
        }
    }
}

#[derive(PartialEq)]
enum Read {
    /// A full batch: there may be more to read at once.
    More,
    /// Everything committed before the read, or nothing (the log unreachable).
    Done,
}

/// Reads the log from the copy's revision on and applies what it finds.
async fn read_log(live: &Store, log: &SharedLog) -> Read {
    let read = log.changes(live.revision(), BATCH).await;
    if read.is_ok() {
        live.mark_followed();
    }
    match read {
        Ok(changes) if !changes.is_empty() => {
            // A short batch read everything committed before it; a commit since then has
            // notified, and that notification is kept for the follower's wait.
            let full = changes.len() >= BATCH as usize;
            match live.replicate(changes).await {
                Ok(_) if full => return Read::More,
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
    Read::Done
}
