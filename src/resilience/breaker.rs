//! Circuit breakers, one per backend: closed → open after `threshold`
//! consecutive failures (errors or timeouts) → after `open_for`, half-open: one
//! probe call goes through → its success closes the breaker, its failure opens it
//! again. While open, callers take their fallback (search: a store scan) or fail
//! fast with a message saying when to retry, instead of piling onto a backend
//! that is down.
//!
//! Must not: decide what counts as a failure. Callers report outcomes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::OpError;

/// Longest a half-open probe may stay out without reporting before another
/// call may probe (a read times out after 30 s by default).
const PROBE_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What health reports about one breaker.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BreakerReport {
    pub backend: &'static str,
    pub state: BreakerState,
    /// Failures in a row (resets on success).
    pub consecutive_failures: u32,
    /// Failures since start.
    pub failures: u64,
    /// Times it opened since start.
    pub opened: u64,
    /// Calls answered by a fallback or refused because it was open.
    pub short_circuited: u64,
    /// Milliseconds until an open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The answer to "may I call the backend?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Yes (closed, or this call is the half-open probe).
    Call,
    /// No: it is open; retry after this long.
    Refuse(Duration),
}

struct State {
    state: BreakerState,
    consecutive: u32,
    failures: u64,
    opened: u64,
    short_circuited: u64,
    open_until: Option<Instant>,
    /// When the half-open probe was let through, while it is out.
    probe_since: Option<Instant>,
    last_error: Option<String>,
}

pub struct Breaker {
    backend: &'static str,
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(backend: &'static str, threshold: u32, open_for: Duration) -> Self {
        Breaker {
            backend,
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State {
                state: BreakerState::Closed,
                consecutive: 0,
                failures: 0,
                opened: 0,
                short_circuited: 0,
                open_until: None,
                probe_since: None,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker poisoned")
    }

    pub fn permit(&self) -> Permit {
        let mut s = self.lock();
        match s.state {
            BreakerState::Closed => Permit::Call,
            BreakerState::Open => {
                let until = s.open_until.unwrap_or_else(Instant::now);
                let now = Instant::now();
                if now >= until {
                    s.state = BreakerState::HalfOpen;
                    s.probe_since = Some(now);
                    Permit::Call
                } else {
                    s.short_circuited += 1;
                    Permit::Refuse(until - now)
                }
            }
            // A probe that never reported (its caller was cancelled or lost)
            // stops blocking the backend once its lease is over.
            BreakerState::HalfOpen
                if s.probe_since
                    .is_none_or(|t| t.elapsed() >= self.open_for.max(PROBE_LEASE)) =>
            {
                s.probe_since = Some(Instant::now());
                Permit::Call
            }
            BreakerState::HalfOpen => {
                s.short_circuited += 1;
                Permit::Refuse(Duration::from_millis(100))
            }
        }
    }

    pub fn success(&self) {
        let mut s = self.lock();
        if s.state != BreakerState::Closed {
            tracing::info!(backend = self.backend, "circuit breaker closed");
        }
        s.state = BreakerState::Closed;
        s.consecutive = 0;
        s.open_until = None;
        s.probe_since = None;
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn failure(&self, error: &str) -> bool {
        let mut s = self.lock();
        s.consecutive = s.consecutive.saturating_add(1);
        s.failures += 1;
        s.last_error = Some(error.to_string());
        let trip = match s.state {
            BreakerState::Closed => s.consecutive >= self.threshold,
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
        };
        if trip {
            s.state = BreakerState::Open;
            s.opened += 1;
            s.open_until = Some(Instant::now() + self.open_for);
            s.probe_since = None;
            tracing::warn!(backend = self.backend, error, "circuit breaker opened");
        }
        trip
    }

    /// Records how a permitted call ended, judged by the type of its outcome:
    /// a backend failure or a timeout counts against the backend; an answer
    /// counts for it; any other error (bad input, not found, a bug) says
    /// nothing about the backend and only frees the probe.
    pub fn settle<T>(&self, outcome: &Result<T, OpError>) -> bool {
        match outcome {
            Ok(_) => {
                self.success();
                false
            }
            Err(OpError::Storage(e) | OpError::Timeout(e)) => self.failure(e),
            Err(_) => {
                self.abandon();
                false
            }
        }
    }

    /// A call that was permitted ended without telling success or failure
    /// (cancelled): let another probe through.
    pub fn abandon(&self) {
        self.lock().probe_since = None;
    }

    pub fn is_closed(&self) -> bool {
        self.lock().state == BreakerState::Closed
    }

    pub fn report(&self) -> BreakerReport {
        let s = self.lock();
        BreakerReport {
            backend: self.backend,
            state: s.state,
            consecutive_failures: s.consecutive,
            failures: s.failures,
            opened: s.opened,
            short_circuited: s.short_circuited,
            retry_in_ms: s
                .open_until
                .filter(|_| s.state == BreakerState::Open)
                .map(|u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
            last_error: s.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_and_closes() {
        let b = Breaker::new("t", 3, Duration::from_millis(0));
        assert!(!b.failure("x"));
        assert!(!b.failure("x"));
        assert!(b.failure("x"));
        assert_eq!(b.report().state, BreakerState::Open);
        // open_for = 0: the next call is the half-open probe, the one after waits.
        assert_eq!(b.permit(), Permit::Call);
        assert!(matches!(b.permit(), Permit::Refuse(_)));
        assert!(b.failure("still down"));
        assert_eq!(b.permit(), Permit::Call);
        b.success();
        assert!(b.is_closed());
        assert_eq!(b.report().opened, 2);
    }

    #[test]
    fn open_breaker_refuses_until_its_time() {
        let b = Breaker::new("t", 1, Duration::from_secs(60));
        b.failure("down");
        match b.permit() {
            Permit::Refuse(d) => assert!(d > Duration::from_secs(50)),
            Permit::Call => panic!("an open breaker let a call through"),
        }
        assert_eq!(b.report().short_circuited, 1);
    }
}
