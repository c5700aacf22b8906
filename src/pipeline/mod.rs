//! The request pipeline every operation call goes through, whatever its
//! transport:
//!
//! look up → rate-limit (per session, `limiter.rs`) → store circuit breaker
//! (`breaker.rs`) → reads: query cache + coalescing (`cache.rs`) → run the typed
//! handler (decode + validate, then the backends) → writes: invalidate the cache
//! tags they declare, before the caller is answered.
//!
//! The write half of the operation batcher is the store's writer thread (group
//! commit, `store/writer.rs`). The search breaker sits in `AppState::search`,
//! where the degraded fallback (a store scan) lives.

pub mod breaker;
pub mod cache;
pub mod limiter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::AppState;
use crate::catalog::{Kind, OperationSpec, catalog};
use crate::error::OpError;
use crate::ops::{OpCtx, registry};
use crate::session::Session;
use breaker::Permit;
use cache::QueryCache;

/// The namespace placeholder in catalog cache tags.
const NS: &str = "{ns}";

/// Runs operation `name` with JSON `args` for `session`: one call of the
/// session's rate allowance.
pub async fn execute(
    app: &AppState,
    session: &Arc<Session>,
    name: &str,
    args: Value,
) -> Result<Value, OpError> {
    app.limiter_for(session).check()?;
    dispatch(app, session, name, args).await
}

/// The pipeline without the rate limiter: for an operation called from inside
/// another call (`call_operation`), which was already counted.
pub async fn dispatch(
    app: &AppState,
    session: &Arc<Session>,
    name: &str,
    args: Value,
) -> Result<Value, OpError> {
    let entry = registry()
        .get(name)
        .ok_or_else(|| unknown_operation(name))?;
    let spec = catalog()
        .get(name)
        .expect("the registry test keeps catalog and handlers in step");
    let session = &session_for(app, session, spec, &args)?;
    let started = Instant::now();
    let ns = session.namespace().to_string();
    let uses_store = touches_store(spec);
    let breaker = app.store_breaker();
    if uses_store && let Permit::Refuse(wait) = breaker.permit() {
        let why = breaker.report().last_error.unwrap_or_default();
        return Err(OpError::Unavailable(format!(
            "the store is failing ({why}); engram stopped sending it calls for a moment: retry in {} ms",
            wait.as_millis().max(1)
        )));
    }
    let cx = OpCtx {
        app: app.clone(),
        session: session.clone(),
        op: entry.name,
    };
    let read_timeout = Duration::from_millis(app.config().read_timeout_ms);
    let result = if let Some(tags) = cache_tags(spec, &ns) {
        let cache = app.cache();
        let key = QueryCache::key(&ns, entry.name, &args);
        // Generations first: a write landing while the read runs makes its answer stale.
        let seen = cache.generations(&tags);
        match cache.get(entry.name, &key, &tags) {
            Some(hit) => Ok(hit),
            None => {
                let read = async {
                    tokio::time::timeout(read_timeout, entry.call(cx, args))
                        .await
                        .unwrap_or_else(|_| Err(timed_out(name, read_timeout)))
                };
                let answer = cache.coalesce(entry.name, &key, &seen, read).await;
                // A degraded answer (index down, store scan) is correct but is
                // not kept: the next call should get the index's ranking back.
                if let Ok(value) = &answer
                    && value.get("degraded") != Some(&Value::Bool(true))
                {
                    cache.put(entry.name, key, value.clone(), tags, seen);
                }
                answer
            }
        }
    } else if spec.kind == Kind::Read {
        tokio::time::timeout(read_timeout, entry.call(cx, args))
            .await
            .unwrap_or_else(|_| Err(timed_out(name, read_timeout)))
    } else {
        // Writes are never timed out here: once queued they commit, and an
        // error would tell the agent a durable write did not happen.
        let result = entry.call(cx, args).await;
        // Invalidate even on error: a failed write changed nothing, but a partly
        // answered one (e.g. delete with some ids not found) did.
        app.cache().invalidate(&resolve(&spec.invalidates, &ns));
        if result.is_ok() && touches_store(spec) {
            app.announce_write(&ns, &spec.layer);
        }
        result
    };
    if uses_store {
        match &result {
            Ok(_) => breaker.success(),
            Err(OpError::Storage(e)) => {
                breaker.failure(e);
            }
            Err(OpError::Unavailable(e)) if e.contains("longer than") => {
                breaker.failure(e);
            }
            Err(_) => breaker.abandon(),
        }
    }
    let micros = started.elapsed().as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(op = name, micros, "ok"),
        Err(e) => tracing::debug!(op = name, micros, error = %e, "failed"),
    }
    result
}

/// The session a session-layer operation works on: the one its `session`
/// handle names (checked against the caller's namespace), else the caller's
/// own, which a stateless request (MCP 2026-07-28) does not have.
fn session_for(
    app: &AppState,
    caller: &Arc<Session>,
    spec: &OperationSpec,
    args: &Value,
) -> Result<Arc<Session>, OpError> {
    if spec.layer != SESSION_LAYER || spec.name == OPEN_SESSION {
        return Ok(caller.clone());
    }
    match args.get("session").and_then(Value::as_str) {
        Some(handle) => {
            let held = app
                .handles()
                .resolve(handle)
                .map_err(|e| OpError::NotFound(e.to_string()))?;
            if held.namespace() != caller.namespace() {
                return Err(OpError::NotFound(format!(
                    "this session handle belongs to another namespace than this request's ({}): \
                     open one here with {OPEN_SESSION}",
                    caller.namespace()
                )));
            }
            Ok(held)
        }
        None if caller.is_stateless() => Err(OpError::invalid(format!(
            "this request has no session (MCP 2026-07-28 requests stand alone): call \
             {OPEN_SESSION} once and pass its handle as `session`"
        ))),
        None => Ok(caller.clone()),
    }
}

const SESSION_LAYER: &str = "session";
const OPEN_SESSION: &str = "session_open";

/// Operations whose cache tags name a namespace read or write stored memory.
fn touches_store(spec: &OperationSpec) -> bool {
    spec.reads
        .iter()
        .chain(&spec.invalidates)
        .any(|t| t.starts_with(NS))
}

/// The resolved tags of a cacheable read: a read whose every tag is about the
/// namespace's stored memory. Session-scoped reads (tag `session`) are not
/// cached: their answers belong to one session.
fn cache_tags(spec: &OperationSpec, ns: &str) -> Option<Vec<String>> {
    let cacheable = spec.kind == Kind::Read
        && !spec.reads.is_empty()
        && spec.reads.iter().all(|t| t.starts_with(NS));
    cacheable.then(|| resolve(&spec.reads, ns))
}

fn resolve(tags: &[String], ns: &str) -> Vec<String> {
    tags.iter().map(|t| t.replace(NS, ns)).collect()
}

fn timed_out(name: &str, limit: Duration) -> OpError {
    OpError::Unavailable(format!(
        "{name} took longer than {} ms and was stopped: narrow the query (filters, a smaller limit) or retry",
        limit.as_millis()
    ))
}

pub(crate) fn unknown_operation(name: &str) -> OpError {
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
