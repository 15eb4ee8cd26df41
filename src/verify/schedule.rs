//! When each entry is next verified: a new generation at once, `verificationInterval` after
//! a success, exponential backoff after a failure, each spread by jitter so that entries written
//! together do not fall due together. Pure functions of the entry, the clock and the jitter the
//! caller draws, and the queue of due entries.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::api::types::{CatalogImage, Phase};
use crate::api::validate::parse_go_duration;

/// The interval for entries without one (the contract's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// The spread of every wait: ±10%.
pub const JITTER: std::ops::Range<f64> = 0.9..1.1;

/// How retries back off.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

/// The clock a decision is made at: monotonic for scheduling, wall time to compare with
/// `status.lastVerificationTime`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall: Timestamp,
}

/// A jitter factor drawn from `JITTER`.
pub fn draw_jitter() -> f64 {
    rand::random_range(JITTER)
}

/// How long after its last verification `image` is due again, before jitter; zero when it
/// is due at once (a new generation, or a check that was cut short).
pub fn wait(image: &CatalogImage, backoff: Backoff) -> Duration {
    let generation = image.metadata.generation.unwrap_or(1);
    let status = image.status.as_ref();
    let Some(status) = status.filter(|s| s.observed_generation == Some(generation)) else {
        return Duration::ZERO;
    };
    match status.phase {
        Some(Phase::Unavailable) => {
            let failures = status.verification_failures.unwrap_or(1).clamp(1, 30) as u32;
            let backoff_wait = backoff.base.saturating_mul(1 << (failures - 1).min(20));
            backoff_wait.min(backoff.cap)
        }
        Some(Phase::Available | Phase::Failed) => image
            .spec
            .verification_interval
            .as_deref()
            .and_then(parse_go_duration)
            .unwrap_or(DEFAULT_INTERVAL),
        // Pending or Verifying at this generation: a check was cut short; do it again.
        _ => Duration::ZERO,
    }
}

/// When `image` is next due, seen at `clock`, its wait spread by `jitter`.
pub fn due(image: &CatalogImage, backoff: Backoff, clock: Clock, jitter: f64) -> Instant {
    let since_last = image
        .status
        .as_ref()
        .and_then(|s| s.last_verification_time.as_ref())
        .map(|t| clock.wall.duration_since(t.0).unsigned_abs())
        .unwrap_or_default();
    let wait = wait(image, backoff).mul_f64(jitter);
    clock.now + wait.saturating_sub(since_last)
}

/// The entries waiting to be verified and those being verified: a heap of (due, sequence,
/// key), stale heap entries skipped by their sequence number.
#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64, String)>>,
    current: HashMap<String, u64>,
    sequence: u64,
    in_flight: HashSet<String>,
}

impl Queue {
    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// (Re)schedules `key`, unless it is being verified: its end schedules it.
    pub fn at(&mut self, key: String, due: Instant) {
        if self.in_flight.contains(&key) {
            return;
        }
        self.sequence += 1;
        self.current.insert(key.clone(), self.sequence);
        self.heap.push(Reverse((due, self.sequence, key)));
    }

    pub fn forget(&mut self, key: &str) {
        self.current.remove(key);
    }

    fn discard_stale(&mut self) {
        while let Some(Reverse((_, sequence, key))) = self.heap.peek() {
            if self.current.get(key) == Some(sequence) {
                break;
            }
            self.heap.pop();
        }
    }

    pub fn next_due(&mut self) -> Option<Instant> {
        self.discard_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The entry due first, now being verified.
    pub fn start_next(&mut self) -> Option<String> {
        self.discard_stale();
        let Reverse((_, _, key)) = self.heap.pop()?;
        self.current.remove(&key);
        self.in_flight.insert(key.clone());
        Some(key)
    }

    /// `key` has been verified: it may be scheduled again.
    pub fn finished(&mut self, key: &str) {
        self.in_flight.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::types::CatalogImageStatus;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(300),
    };

    fn image(phase: Option<Phase>, observed: i64, failures: i32, interval: &str) -> CatalogImage {
        let mut image = CatalogImage::default();
        image.metadata.generation = Some(2);
        image.spec.verification_interval = Some(interval.into());
        image.status = Some(CatalogImageStatus {
            phase,
            observed_generation: Some(observed),
            verification_failures: Some(failures),
            ..CatalogImageStatus::default()
        });
        image
    }

    #[test]
    fn waits_by_phase_and_failures() {
        let seconds = Duration::from_secs;
        // (phase, observed generation, failures in a row, interval, wait)
        let cases = [
            (Some(Phase::Available), 2, 0, "30m", seconds(1800)),
            (Some(Phase::Failed), 2, 5, "1h", seconds(3600)),
            (Some(Phase::Available), 1, 0, "30m", Duration::ZERO),
            (Some(Phase::Verifying), 2, 0, "30m", Duration::ZERO),
            (None, 2, 0, "30m", Duration::ZERO),
            (Some(Phase::Unavailable), 2, 1, "30m", seconds(10)),
            (Some(Phase::Unavailable), 2, 3, "30m", seconds(40)),
            (Some(Phase::Unavailable), 2, 6, "30m", seconds(300)),
            (Some(Phase::Unavailable), 2, 30, "30m", seconds(300)),
            (Some(Phase::Available), 2, 0, "nonsense", seconds(3600)),
        ];
        for (phase, observed, failures, interval, expected) in cases {
            let image = image(phase, observed, failures, interval);
            assert_eq!(
                wait(&image, BACKOFF),
                expected,
                "{phase:?} {failures} {interval}"
            );
        }
    }

    #[test]
    fn due_counts_from_the_last_verification_spread_by_jitter() {
        let wall = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = Clock {
            now: Instant::now(),
            wall,
        };
        let mut verified = image(Some(Phase::Available), 2, 0, "1h");
        let ten_minutes_ago = wall - jiff::SignedDuration::from_secs(600);
        verified.status.as_mut().unwrap().last_verification_time = Some(Time(ten_minutes_ago));
        let after = |jitter| due(&verified, BACKOFF, clock, jitter) - clock.now;
        assert_eq!(after(1.0), Duration::from_secs(3000));
        // Factors a float holds exactly, so the arithmetic is exact.
        assert_eq!(after(0.75), Duration::from_secs(2100));
        assert_eq!(after(1.25), Duration::from_secs(3900));
        let fresh = image(None, 0, 0, "1h");
        assert_eq!(due(&fresh, BACKOFF, clock, 1.1), clock.now);
        assert!(JITTER.contains(&draw_jitter()));
    }

    #[test]
    fn the_queue_hands_out_the_earliest_and_skips_what_is_in_flight() {
        let now = Instant::now();
        let mut queue = Queue::default();
        queue.at("a".into(), now + Duration::from_secs(5));
        queue.at("b".into(), now + Duration::from_secs(1));
        queue.at("a".into(), now);
        assert_eq!(queue.next_due(), Some(now));
        assert_eq!(queue.start_next().as_deref(), Some("a"));
        queue.at("a".into(), now);
        assert_eq!(queue.len(), 1, "a is in flight: its end schedules it");
        queue.forget("b");
        assert_eq!(queue.next_due(), None);
        queue.finished("a");
        queue.at("a".into(), now);
        assert_eq!(queue.start_next().as_deref(), Some("a"));
    }
}
