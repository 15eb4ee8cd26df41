//! A watch as the API sees it: optional initial ADDED events for the current state (read
//! lazily, page by page, at one revision), an optional end-of-initial-events bookmark, then
//! every later change filtered by namespace and selector — an object that stops matching is
//! sent as DELETED, one that starts matching as ADDED — as kube-apiserver's cacher does.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use catalog_storage::{Change, Item, Watch, WatchError};
use serde_json::Value;

use super::list::{ListCursor, ListQuery};
use super::{Registry, key};
use crate::api::selector::Selector;
use crate::api::status::ApiError;

/// Items read at a time for the initial events.
const INITIAL_PAGE: usize = 500;

#[derive(Debug)]
pub enum WatchEvent {
    /// An object's bytes, carrying the revision of the event in their resourceVersion.
    Added(Bytes),
    Modified(Bytes),
    Deleted(Bytes),
    /// Progress up to this revision; `initial_events_end` marks the end of the initial events.
    Bookmark {
        revision: u64,
        initial_events_end: bool,
    },
}

/// Where the stream is.
enum State {
    /// Sending the state at `revision`: `cursor` is where the next page starts.
    Initial {
        cursor: Option<ListCursor>,
        buffered: VecDeque<Item>,
    },
    /// Initial events are out; the end bookmark is due.
    InitialEnd,
    Live,
}

pub struct WatchStream {
    registry: Registry,
    changes: Watch,
    query: ListQuery,
    state: State,
    send_end_bookmark: bool,
    /// The revision of the last change consumed (whether or not it was sent).
    progress: u64,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// The changes after this revision.
    Revision(u64),
    /// The current state first, as ADDED events at one revision, then the changes.
    CurrentState,
    /// The same, with a bookmark marking the end of the initial events (sendInitialEvents).
    InitialEvents,
}

impl Registry {
    pub fn watch(&self, query: ListQuery, from: WatchFrom) -> Result<WatchStream, ApiError> {
        let (start, state) = match from {
            WatchFrom::Revision(revision) => (revision, State::Live),
            WatchFrom::CurrentState | WatchFrom::InitialEvents => {
                let revision = self.store.revision();
                let cursor = ListCursor {
                    revision,
                    ..ListCursor::default()
                };
                (
                    revision,
                    State::Initial {
                        cursor: Some(cursor),
                        buffered: VecDeque::new(),
                    },
                )
            }
        };
        let changes = self.store.watch(start).map_err(watch_error)?;
        Ok(WatchStream {
            registry: self.clone(),
            changes,
            query,
            state,
            send_end_bookmark: from == WatchFrom::InitialEvents,
            progress: start,
        })
    }
}

/// How long a watch from a revision the store has not reached waits for it, as the watch
/// cache's `waitUntilFreshAndBlock` does (`blockTimeout` in k8s.io/apiserver's cacher).
const FUTURE_REVISION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Registry {
    /// Makes a read at `resource_version` consistent: none (the most recent) waits until the
    /// store has every acknowledged write, of any replica; `0` (any) waits for nothing; another
    /// waits for that revision.
    pub async fn fresh(&self, resource_version: Option<u64>) -> Result<(), ApiError> {
        match resource_version {
            None => Ok(self.store.catch_up().await?),
            Some(0) => Ok(()),
            Some(revision) => self.wait_for_revision(revision).await,
        }
    }

    /// Waits (briefly) until the store has reached `revision`; 504 "Too large resource
    /// version" if it does not.
    pub async fn wait_for_revision(&self, revision: u64) -> Result<(), ApiError> {
        let current = self.store.revision();
        if revision <= current {
            return Ok(());
        }
        let mut changes = self.store.watch(current).map_err(watch_error)?;
        let reached = async {
            loop {
                if changes.next().await.map_err(watch_error)?.revision >= revision {
                    return Ok::<_, ApiError>(());
                }
            }
        };
        match tokio::time::timeout(FUTURE_REVISION_WAIT, reached).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::too_large_resource_version(
                revision,
                self.store.revision(),
            )),
        }
    }
}

pub fn watch_error(e: WatchError) -> ApiError {
    match e {
        WatchError::Gone {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        WatchError::FellBehind { .. } => ApiError::gone(format!("{e}; start a new watch")),
        WatchError::Storage(e) => e.into(),
    }
}

impl WatchStream {
    /// The revision everything up to which has been considered: what a bookmark may claim.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// The next event to send. An error ends the watch.
    pub async fn next(&mut self) -> Result<WatchEvent, ApiError> {
        loop {
            match &mut self.state {
                State::Initial { cursor, buffered } => {
                    if let Some(item) = buffered.pop_front() {
                        return Ok(WatchEvent::Added(item.value));
                    }
                    match cursor.take() {
                        Some(at) => {
                            let page = self.registry.page(&self.query, &at, INITIAL_PAGE)?;
                            buffered.extend(page.items);
                            *cursor = page.next;
                        }
                        None => self.state = State::InitialEnd,
                    }
                }
                State::InitialEnd => {
                    self.state = State::Live;
                    if self.send_end_bookmark {
                        return Ok(WatchEvent::Bookmark {
                            revision: self.progress,
                            initial_events_end: true,
                        });
                    }
                }
                State::Live => {
                    let change = self.changes.next().await.map_err(watch_error)?;
                    self.progress = change.revision;
                    if let Some(event) = self.filter(&change)? {
                        return Ok(event);
                    }
                }
            }
        }
    }

    /// The event a change makes for this watcher, if any.
    fn filter(&self, change: &Arc<Change>) -> Result<Option<WatchEvent>, ApiError> {
        if let Some(namespace) = &self.query.namespace
            && !change.key.starts_with(&key(namespace, ""))
        {
            return Ok(None);
        }
        let selector: &Selector = &self.query.selector;
        let now = change.value.is_some() && selector.matches(&change.indexes);
        let before = change.prev_value.is_some() && selector.matches(&change.prev_indexes);
        Ok(match (before, now, &change.value, &change.prev_value) {
            (false, true, Some(value), _) => Some(WatchEvent::Added(value.clone())),
            (true, true, Some(value), _) => Some(WatchEvent::Modified(value.clone())),
            (true, false, _, Some(prev)) => {
                Some(WatchEvent::Deleted(at_revision(prev, change.revision)?))
            }
            _ => None,
        })
    }
}

/// An object's last state carrying the revision of the change that removed it from view.
fn at_revision(bytes: &Bytes, revision: u64) -> Result<Bytes, ApiError> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))?;
    value["metadata"]["resourceVersion"] = revision.to_string().into();
    Ok(Bytes::from(value.to_string()))
}
