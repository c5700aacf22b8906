//! Resilience: the pieces every request may pass through, knowing nothing of
//! what operations do. A leaf module: it depends only on `error`.
//!
//! - `breaker`: a circuit breaker per backend (closed → open → half-open probe).
//! - `limiter`: a session's rate allowance.
//! - `cache`: the query cache and read coalescing, invalidated by tag generations.

pub mod breaker;
pub mod cache;
pub mod limiter;
