//! A registry host's circuit breaker as explicit states: closed (counting failures in a row),
//! open until a cool-down has passed, then one probe out (half-open) whose result closes or
//! reopens it. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

/// A host's circuit as the circuit-state metric reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// Whether a request may go to the host now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The circuit is open (or a probe is already out): do not contact the host.
    CircuitOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down has passed and one request is out to see whether the host is back.
    Probing,
}

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    pub cool_down: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed { failures: 0 }
    }
}

impl Breaker {
    pub fn circuit(&self, now: Instant) -> Circuit {
        match *self {
            Breaker::Closed { .. } => Circuit::Closed,
            Breaker::Open { until } if now < until => Circuit::Open,
            Breaker::Open { .. } | Breaker::Probing => Circuit::HalfOpen,
        }
    }

    /// Asks to contact the host: closed, go; open, no; cooled down, one probe goes.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match *self {
            Breaker::Closed { .. } => Admission::Go,
            Breaker::Open { until } if now < until => Admission::CircuitOpen,
            Breaker::Open { .. } => {
                *self = Breaker::Probing;
                Admission::Go
            }
            Breaker::Probing => Admission::CircuitOpen,
        }
    }

    /// Records how a contact went: a success closes the circuit; a failed probe, or enough
    /// failures in a row, open it. Returns whether it opened.
    pub fn record(&mut self, reachable: bool, now: Instant, thresholds: Thresholds) -> bool {
        if reachable {
            *self = Breaker::Closed { failures: 0 };
            return false;
        }
        let open = match *self {
            Breaker::Closed { failures } if failures + 1 < thresholds.failures => {
                *self = Breaker::Closed {
                    failures: failures + 1,
                };
                false
            }
            // Enough failures, a failed probe, or a late failure of a request let through
            // before the circuit opened.
            _ => true,
        };
        if open {
            *self = Breaker::Open {
                until: now + thresholds.cool_down,
            };
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        failures: 3,
        cool_down: Duration::from_secs(30),
    };

    #[test]
    fn failures_in_a_row_open_the_circuit_and_a_probe_decides() {
        let start = Instant::now();
        let later = |seconds| start + Duration::from_secs(seconds);
        let mut breaker = Breaker::default();
        assert!(!breaker.record(false, start, THRESHOLDS));
        assert!(
            !breaker.record(true, start, THRESHOLDS),
            "a success resets the count"
        );
        assert!(!breaker.record(false, start, THRESHOLDS));
        assert!(!breaker.record(false, start, THRESHOLDS));
        assert_eq!(breaker.admit(start), Admission::Go);
        assert!(
            breaker.record(false, start, THRESHOLDS),
            "the third failure opens it"
        );
        // (moment, what admit answers, the circuit after)
        let steps = [
            (later(10), Admission::CircuitOpen, Circuit::Open),
            (later(31), Admission::Go, Circuit::HalfOpen),
            (later(32), Admission::CircuitOpen, Circuit::HalfOpen),
        ];
        for (at, admission, circuit) in steps {
            assert_eq!(breaker.admit(at), admission);
            assert_eq!(breaker.circuit(at), circuit);
        }
        assert!(
            breaker.record(false, later(33), THRESHOLDS),
            "a failed probe reopens it"
        );
        assert_eq!(breaker, Breaker::Open { until: later(63) });
        assert_eq!(breaker.admit(later(64)), Admission::Go);
        assert!(!breaker.record(true, later(64), THRESHOLDS));
        assert_eq!(breaker.circuit(later(64)), Circuit::Closed);
    }
}
