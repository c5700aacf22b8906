//! Per-session rate limiting (governor's GCRA): a steady requests-per-second
//! rate with a burst allowance. Over the limit, a call fails at once with a tool
//! error saying how long to wait; it never queues.
//!
//! Must not: be shared between sessions. Each session owns its limiter, so one
//! busy agent never slows another.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::OpError;

pub struct SessionLimiter {
    limiter: Option<DefaultDirectRateLimiter>,
    per_second: u32,
    burst: u32,
}

impl SessionLimiter {
    /// `per_second == 0` turns limiting off. `burst` is raised to at least 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        SessionLimiter {
            limiter,
            per_second,
            burst,
        }
    }

    /// Takes one call's worth of allowance, or says when there will be some.
    pub fn check(&self) -> Result<(), OpError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let ms = wait.as_millis().max(1);
            OpError::RateLimited(format!(
                "rate limit reached: this session may make {} calls per second (bursts of {}); \
                 retry in {ms} ms. Batch operations (e.g. *_batch) do more per call",
                self.per_second, self.burst
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_when_rate_is_zero() {
        let l = SessionLimiter::new(0, 0);
        for _ in 0..10_000 {
            l.check().unwrap();
        }
    }

    #[test]
    fn burst_then_refusal_naming_the_wait() {
        let l = SessionLimiter::new(1, 3);
        for _ in 0..3 {
            l.check().unwrap();
        }
        let err = l.check().unwrap_err().to_string();
        assert!(err.contains("retry in"), "{err}");
    }
}
