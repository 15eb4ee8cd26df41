//! The open connections: how many there are, which are idle, and closing them — after the idle
//! timeout, to make room when the cap is reached (the longest idle first), and at shutdown.
//!
//! A connection is busy while a request is in flight on it, response body included (a watch is
//! busy until it ends); otherwise it is idle, including before its TLS handshake and while its
//! request head is still arriving. Only idle connections are closed to make room, so a flood of
//! idle connections can neither exhaust the process's descriptors nor lock out new clients
//! (the kubelet's probes among them); when every connection is busy a new one is refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until};

/// How long a new connection waits for the idle one closed to make room for it.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

pub struct Connections {
    max: usize,
    idle_timeout: Duration,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Woken whenever a connection goes.
    gone: Notify,
}

struct Connection {
    /// Requests in flight.
    busy: AtomicUsize,
    /// When the last request ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Told to close to make room for a new one.
    evicted: AtomicBool,
    close: Notify,
}

/// A connection's place among the open ones, given up when the last holder drops it.
pub struct Slot {
    id: u64,
    connection: Arc<Connection>,
    connections: Arc<Connections>,
}

/// Marks its connection busy for as long as it lives.
pub struct Busy(Arc<Slot>);

impl Connections {
    pub fn new(max: usize, idle_timeout: Duration) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            idle_timeout,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            gone: Notify::new(),
        })
    }

    /// A place for a new connection. At the cap, the longest-idle connection is told to close
    /// and is waited for (briefly): the count, and so the descriptors, never pass the cap.
    /// `None` when every connection is busy, or the one told to close did not.
    pub async fn admit(self: &Arc<Self>) -> Option<Arc<Slot>> {
        loop {
            let gone = self.gone.notified();
            {
                let mut open = self.open.lock().expect("connections lock");
                if open.len() < self.max {
                    return Some(self.insert(&mut open));
                }
                if !open.values().any(|c| c.evicted.load(Ordering::Relaxed)) {
                    let victim = open
                        .values()
                        .filter(|c| c.busy.load(Ordering::Relaxed) == 0)
                        .min_by_key(|c| *c.idle_since.lock().expect("idle lock"))?;
                    victim.evicted.store(true, Ordering::Relaxed);
                    victim.close.notify_one();
                }
            }
            if tokio::time::timeout(EVICTION_WAIT, gone).await.is_err() {
                return None;
            }
        }
    }

    fn insert(self: &Arc<Self>, open: &mut HashMap<u64, Arc<Connection>>) -> Arc<Slot> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.insert(id, connection.clone());
        Arc::new(Slot {
            id,
            connection,
            connections: self.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.open.lock().expect("connections lock").len()
    }

    /// Resolves once every connection has gone.
    pub async fn drained(&self) {
        loop {
            let gone = self.gone.notified();
            if self.len() == 0 {
                return;
            }
            gone.await;
        }
    }
}

impl Slot {
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.connection.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves when the connection should close: it was chosen to make room, the server is
    /// stopping, or it has been idle for the idle timeout.
    pub async fn should_close(&self, stop: &mut watch::Receiver<bool>) {
        let timeout = self.connections.idle_timeout;
        let idle_too_long = async {
            loop {
                let connection = &self.connection;
                let idle_since = *connection.idle_since.lock().expect("idle lock");
                let busy = connection.busy.load(Ordering::Acquire) > 0;
                if !busy && idle_since.elapsed() >= timeout {
                    return;
                }
                // Checked again at the earliest moment it could have become true.
                let from = if busy { Instant::now() } else { idle_since };
                sleep_until(from + timeout).await;
            }
        };
        tokio::select! {
            _ = idle_too_long => {}
            _ = self.connection.close.notified() => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }

    /// Drives an HTTP connection to its end, shutting it down gracefully (requests in flight
    /// finish; an idle HTTP/1 connection closes at once, HTTP/2 sends GOAWAY) when it should
    /// close.
    pub async fn drive<C>(
        &self,
        connection: C,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), C::Error>
    where
        C: GracefulConnection,
    {
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = self.should_close(&mut stop) => {}
        }
        Pin::as_mut(&mut connection).graceful_shutdown();
        connection.await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .expect("connections lock")
            .remove(&self.id);
        self.connections.gone.notify_waiters();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let connection = &self.0.connection;
        // The idle clock restarts before the count reaches zero, so an idle check never sees
        // an idle connection with an old idle time.
        *connection.idle_since.lock().expect("idle lock") = Instant::now();
        connection.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets a log line through at most once a second, counting what it held back.
#[derive(Default)]
pub struct Throttle {
    last: Mutex<Option<std::time::Instant>>,
    held_back: AtomicU64,
}

impl Throttle {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().expect("throttle lock");
        match *last {
            Some(at) if at.elapsed() < Duration::from_secs(1) => {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(std::time::Instant::now());
                Some(self.held_back.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit, as Go's runtime does for
/// kube-apiserver at start, and returns the limit in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = wanted;
            }
        }
    }
    limit.rlim_cur
}

/// The default cap on connections: the descriptor limit less an eighth (at least 64) kept for
/// the store, registry and kube-apiserver clients, and accepting one more to make room.
pub fn default_max_connections(descriptor_limit: u64) -> usize {
    let reserve = (descriptor_limit / 8).max(64);
    descriptor_limit.saturating_sub(reserve).max(16) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2, Duration::from_secs(90));
        let oldest = connections.admit().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = connections.admit().await.unwrap();
        let _request = busy.busy();
        // The oldest idle one is told to close (the busy one is not); the newcomer waits for it.
        let newcomer = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        let (_stop, mut stopped) = watch::channel(false);
        oldest.should_close(&mut stopped).await;
        drop(oldest);
        let newest = newcomer.await.unwrap().expect("room is made");
        assert_eq!(connections.len(), 2);
        let _request = newest.busy();
        assert!(
            connections.admit().await.is_none(),
            "every connection is busy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_the_idle_timeout() {
        let connections = Connections::new(10, Duration::from_secs(90));
        let slot = connections.admit().await.unwrap();
        let (_stop, mut stopped) = watch::channel(false);
        let request = slot.busy();
        tokio::time::advance(Duration::from_secs(200)).await;
        let start = Instant::now();
        let closing = slot.should_close(&mut stopped);
        tokio::pin!(closing);
        // Busy: not closed however long the request takes.
        assert!(
            tokio::time::timeout(Duration::from_secs(100), closing.as_mut())
                .await
                .is_err()
        );
        drop(request);
        let idle_from = Instant::now();
        closing.await;
        assert!(idle_from.elapsed() >= Duration::from_secs(90));
        assert!(start.elapsed() >= Duration::from_secs(190));
    }

    #[test]
    fn throttled_lines_are_counted() {
        let throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        *throttle.last.lock().unwrap() = Some(std::time::Instant::now() - Duration::from_secs(2));
        assert_eq!(throttle.allow(), Some(2));
    }

    #[test]
    fn the_default_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) - (1 << 17));
    }
}
