//! The request pipeline every operation call goes through, whatever its
//! transport: look up → validate (typed decode + limits, in the handler) → run
//! against the backends.
//!
//! The write half of the operation batcher is the store's writer thread (group
//! commit, `store/writer.rs`). The query cache, read coalescing, circuit breakers
//! and rate limiter slot in here, around `entry.call`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::app::AppState;
use crate::catalog::catalog;
use crate::error::OpError;
use crate::ops::{OpCtx, registry};
use crate::session::Session;

/// Runs operation `name` with JSON `args` for `session`.
pub async fn execute(
    app: &AppState,
    session: &Arc<Session>,
    name: &str,
    args: Value,
) -> Result<Value, OpError> {
    let entry = registry()
        .get(name)
        .ok_or_else(|| unknown_operation(name))?;
    let started = Instant::now();
    let cx = OpCtx {
        app: app.clone(),
        session: session.clone(),
    };
    let result = entry.call(cx, args).await;
    let micros = started.elapsed().as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(op = name, micros, "ok"),
        Err(e) => tracing::debug!(op = name, micros, error = %e, "failed"),
    }
    result
}

fn unknown_operation(name: &str) -> OpError {
    let parts: Vec<&str> = name.split('_').filter(|p| p.len() > 2).collect();
    let similar: Vec<&str> = catalog()
        .operations
        .iter()
        .map(|o| o.name.as_str())
        .filter(|n| parts.iter().any(|p| n.contains(p)))
        .take(6)
        .collect();
    let hint = if similar.is_empty() {
        "call discover_tools to see what exists".to_string()
    } else {
        format!("similar: {}", similar.join(", "))
    };
    OpError::UnknownOperation(format!("there is no operation {name:?}; {hint}"))
}
