//! A watch's events: one JSON event per line, bookmarks on a timer when asked for, an exact
//! timeout, and a clean end on shutdown; served as a streamed body here, or over WebSocket.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::negotiate::Output;
use super::render::{self, Columns};
use super::response::{Body, body_from};
use crate::api::types::{API_VERSION, KIND};
use crate::observe::OpenWatch;
use crate::registry::{WatchEvent, WatchStream};

pub struct WatchOptions {
    /// Counted as open until the watch's task ends.
    pub open: OpenWatch,
    pub format: Output,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Duration,
}

fn bookmark(revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": KIND, "apiVersion": API_VERSION, "metadata": metadata});
    line("BOOKMARK", object.to_string().as_bytes())
}

/// Encodes events in the watch's format; Table events carry column definitions only once.
struct Encoder {
    format: Output,
    /// Whether the next Table event defines its columns: only the first does.
    columns: Columns,
}

impl Encoder {
    fn event(&mut self, kind: &str, object: &Bytes) -> Result<Bytes, String> {
        let rendered = match self.format {
            Output::Json => None,
            format => {
                let rendered =
                    render::object(format, object, self.columns).map_err(|e| e.message)?;
                self.columns = Columns::Omitted;
                rendered
            }
        };
        Ok(line(kind, rendered.as_ref().unwrap_or(object)))
    }
}

/// One event line, `type` first as kube-apiserver writes it (clients may read the type off
/// the start of the line), around the object's JSON.
fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = format!(r#"{{"type":"{kind}","object":"#).into_bytes();
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// A watch served as a streamed response body (HTTP/1.1 chunked or HTTP/2 data frames).
pub fn serve_watch(
    stream: WatchStream,
    options: WatchOptions,
    shutdown: watch::Receiver<bool>,
) -> Response<Body> {
    body_from(
        StatusCode::OK,
        "application/json",
        events(stream, options, shutdown),
    )
}

/// The watch's events, one encoded line each, produced by a task until the watch ends (its
/// timeout, shutdown, an error event) or the receiver is dropped (the client went away).
pub fn events(
    mut stream: WatchStream,
    options: WatchOptions,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Bytes> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let _counted = options.open;
        let deadline = Instant::now() + options.timeout;
        let mut next_bookmark = Instant::now() + options.bookmark_interval;
        let mut encoder = Encoder {
            format: options.format,
            columns: Columns::Defined,
        };
        loop {
            let chunk = tokio::select! {
                event = stream.next() => match event {
                    Ok(WatchEvent::Added(o)) => encoder.event("ADDED", &o),
                    Ok(WatchEvent::Modified(o)) => encoder.event("MODIFIED", &o),
                    Ok(WatchEvent::Deleted(o)) => encoder.event("DELETED", &o),
                    Ok(WatchEvent::Bookmark { revision, initial_events_end }) => Ok(bookmark(revision, initial_events_end)),
                    Err(e) => {
                        // The watch cannot go on (history compacted, watcher too slow): say why, then end.
                        let _ = sender.send(line("ERROR", e.to_status().to_string().as_bytes())).await;
                        return;
                    }
                },
                _ = sleep_until(next_bookmark), if options.bookmarks => {
                    next_bookmark = Instant::now() + options.bookmark_interval;
                    Ok(bookmark(stream.progress(), false))
                }
                _ = sleep_until(deadline) => break,
                _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
            };
            match chunk {
                Ok(chunk) => {
                    if sender.send(chunk).await.is_err() {
                        return; // the client went away
                    }
                }
                Err(message) => {
                    tracing::error!(%message, "watch event could not be encoded");
                    return;
                }
            }
        }
        if options.bookmarks {
            let _ = sender.send(bookmark(stream.progress(), false)).await;
        }
    });
    receiver
}
