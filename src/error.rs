//! The one error type operations return. (How backend errors map onto it is
//! said where the backends meet: `app/errors.rs`.)
//!
//! Every variant's message is written for the agent that made the call: it says
//! what was wrong and what to do instead. The MCP layer turns any `OpError` into a
//! tool error (`isError: true`) in one place.

use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum OpError {
    /// The arguments were malformed or out of bounds. Nothing was changed.
    #[error("invalid arguments: {0}")]
    InvalidInput(String),
    /// The named record does not exist in this session's namespace.
    #[error("{0}")]
    NotFound(String),
    /// The write contradicts the record's current state. Nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// Too many calls from this session: retry after the time the message names.
    #[error("{0}")]
    RateLimited(String),
    /// A backend is failing and its circuit breaker is open: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The call ran past its time limit and was stopped (a read: nothing
    /// changed). Counts against the store's breaker.
    #[error("{0}")]
    Timeout(String),
    /// The operation exists but this session may not call it as a tool yet.
    #[error("{0}")]
    NotEnabled(String),
    /// No such operation.
    #[error("{0}")]
    UnknownOperation(String),
    /// The caller's token does not allow this call (its scope, or another
    /// namespace). Nothing was changed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A backend failed; the write (if any) did not happen.
    #[error("storage error: {0}")]
    Storage(String),
    /// The search index failed.
    #[error("search error: {0}")]
    Search(String),
    /// A bug in engram (a panic, an answer that cannot be encoded). Nothing the
    /// caller did wrong; the call may or may not have written (writes that were
    /// queued commit or fail as a whole).
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpError {
    /// The error's kind as metrics and logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::InvalidInput(_) => "invalid_input",
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::RateLimited(_) => "rate_limited",
            OpError::Unavailable(_) => "unavailable",
            OpError::Timeout(_) => "timeout",
            OpError::NotEnabled(_) => "not_enabled",
            OpError::UnknownOperation(_) => "unknown_operation",
            OpError::Forbidden(_) => "forbidden",
            OpError::Storage(_) => "storage",
            OpError::Search(_) => "search",
            OpError::Internal(_) => "internal",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        OpError::InvalidInput(msg.into())
    }

    /// A panic caught while running `op`: logged once here, reported to the caller.
    pub fn from_panic(op: &str, panic: Box<dyn std::any::Any + Send>) -> Self {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        tracing::error!(op, panic = %what, "operation panicked");
        OpError::Internal(format!(
            "{op} failed inside engram ({}); this has been reported in the server log. \
             Nothing you sent was wrong: retry, or try different arguments",
            truncate_chars(&what, 200)
        ))
    }
}

impl OpError {
    /// Work handed to the blocking pool (`what`) that did not finish: a panic
    /// there is a bug in engram, reported like any other panic.
    pub fn from_join(what: &str, e: tokio::task::JoinError) -> Self {
        match e.try_into_panic() {
            Ok(panic) => OpError::from_panic(what, panic),
            Err(e) => OpError::Internal(format!("{what} was cancelled: {e}")),
        }
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut: how messages
/// quote what they were sent.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut head: String = s.chars().take(max).collect();
    head.push('…');
    head
}
