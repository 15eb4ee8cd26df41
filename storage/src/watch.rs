//! A watch: the retained history after a revision, then the live stream, with no gap and no
//! duplicate between the two.
//!
//! The live receiver is subscribed before the current revision is read, so every change after
//! that revision is in the receiver; history is replayed up to it from disk, and live changes at
//! or below it are skipped. The live buffer is shared and bounded: a watcher that falls further
//! behind than it holds is ended with [`WatchError::FellBehind`], never allowed to grow memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::codec::{self, Change};
use crate::store::Core;
use crate::{StorageError, WatchError};

/// History records read from disk at a time while replaying.
const REPLAY_CHUNK: usize = 512;

pub struct Watch {
    core: Arc<Core>,
    live: broadcast::Receiver<Arc<Change>>,
    /// The next revision this watch delivers.
    next: u64,
    /// Replay from history while `next` is at or below this.
    replay_until: u64,
    replayed: VecDeque<Arc<Change>>,
}

impl Watch {
    pub(crate) fn start(core: Arc<Core>, after: u64) -> Result<Watch, WatchError> {
        let live = core.events.subscribe();
        let replay_until = core.revision.load(Ordering::Acquire);
        let compacted = core.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(WatchError::Gone {
                requested: after,
                compacted,
            });
        }
        Ok(Watch {
            core,
            live,
            next: after.saturating_add(1),
            replay_until,
            replayed: VecDeque::new(),
        })
    }

    /// The next change, in revision order. After an error the watch is over.
    pub async fn next(&mut self) -> Result<Arc<Change>, WatchError> {
        loop {
            if let Some(change) = self.replayed.pop_front() {
                return Ok(change);
            }
            if self.next <= self.replay_until {
                self.replay_chunk()?;
                continue;
            }
            match self.live.recv().await {
                Ok(change) if change.revision < self.next => continue,
                Ok(change) => {
                    self.next = change.revision + 1;
                    return Ok(change);
                }
                Err(RecvError::Lagged(_)) => {
                    return Err(WatchError::FellBehind {
                        buffered: self.core.watch_buffer,
                    });
                }
                Err(RecvError::Closed) => return Err(StorageError::Closed.into()),
            }
        }
    }

    fn replay_chunk(&mut self) -> Result<(), WatchError> {
        let view = self.core.engine.view()?;
        let records =
            codec::read_history(view.as_ref(), self.next, self.replay_until, REPLAY_CHUNK)?;
        self.replayed.extend(records.into_iter().map(Arc::new));
        // History is contiguous above the compacted revision: a gap means compaction overtook us.
        match self.replayed.front() {
            Some(first) if first.revision == self.next => {
                self.next = self.replayed.back().map_or(self.next, |c| c.revision + 1);
                Ok(())
            }
            _ => Err(WatchError::Gone {
                requested: self.next - 1,
                compacted: self.core.compacted.load(Ordering::Acquire),
            }),
        }
    }
}
