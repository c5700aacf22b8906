//! The request pipeline every operation call goes through, whatever its
//! transport, and the front door to it ([`Engine`]):
//!
//! look up → rate-limit (per session) → store circuit breaker → reads: query
//! cache + coalescing → run the typed handler (check + decode the arguments,
//! then the backends) → answer.
//!
//! The pieces are leaves (`crate::resilience`); the backends sit below in
//! `crate::app`, which holds the breakers. Writes invalidate nothing here: the
//! store's change log tells the cache which (namespace, record kind) changed,
//! before the write's caller is answered. The write half of the operation
//! batcher is the store's writer thread (group commit, `store/writer.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::{AppState, OpenError};
use crate::catalog::{Kind, OperationSpec, catalog};
use crate::config::Config;
use crate::error::OpError;
use crate::metrics::metrics;
use crate::ops::registry::Entry;
use crate::ops::{Answer, BoxFuture, OpCtx, registry};
use crate::resilience::cache::QueryCache;
use crate::session::{HandleError, Held, Session, ToolSelection};

/// An operation's answer, and its JSON text (`value.to_string()`) if the
/// pipeline has it.
pub struct Reply {
    pub value: Value,
    pub text: Option<Arc<str>>,
}

/// engram as a library: the backends plus the pipeline that calls operations
/// on them. Cheap to clone. Servers, the command line and tests hold one.
#[derive(Clone)]
pub struct Engine {
    app: AppState,
}

impl Engine {
    /// Opens the data dir named in `config` (see [`AppState::open`]).
    pub async fn open(config: Config) -> Result<Engine, OpenError> {
        Ok(Engine {
            app: AppState::open(config).await?,
        })
    }

    /// The backends, configuration and session handles.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    pub fn new_session(&self) -> Arc<Session> {
        self.app.new_session()
    }

    pub fn new_session_with_tools(&self, tools: ToolSelection) -> Arc<Session> {
        self.app.new_session_with_tools(tools)
    }

    /// Runs operation `name` with JSON `args` for `session`: one call of the
    /// session's rate allowance.
    pub async fn call(
        &self,
        session: &Arc<Session>,
        name: &str,
        args: Value,
    ) -> Result<Value, OpError> {
        self.reply(session, name, args).await.map(|r| r.value)
    }

    /// [`call`](Self::call), with the answer's JSON text when the pipeline
    /// rendered it already (a cacheable read does, for the cache): a server
    /// sends that text beside the structured answer without rendering it again.
    pub async fn reply(
        &self,
        session: &Arc<Session>,
        name: &str,
        args: Value,
    ) -> Result<Reply, OpError> {
        self.app.limiter_for(session).check()?;
        dispatch(&self.app, session, name, args).await
    }

    /// Commits every queued write and stops the backends (see
    /// [`AppState::shutdown`]).
    pub fn shutdown(&self) {
        self.app.shutdown()
    }
}

/// The pipeline without the rate limiter: for an operation called from inside
/// another call (`call_operation`), which was already counted.
async fn dispatch(
    app: &AppState,
    session: &Arc<Session>,
    name: &str,
    args: Value,
) -> Result<Reply, OpError> {
    let entry = registry()
        .get(name)
        .ok_or_else(|| unknown_operation(name))?;
    let spec = catalog()
        .get(name)
        .expect("the registry test keeps catalog and handlers in step");
    let started = Instant::now();
    let result = run(app, session, entry, spec, args).await;
    let took = started.elapsed();
    let error = result.as_ref().err().map(OpError::kind);
    metrics().call(
        entry.name,
        spec.kind.as_str(),
        session.namespace(),
        took,
        error,
    );
    let micros = took.as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(op = name, micros, "ok"),
        Err(e) => tracing::debug!(op = name, micros, error = %e, "failed"),
    }
    result
}

/// One known operation's way through: the caller's token, the session it
/// works on, the store's breaker, the cache, the handler.
async fn run(
    app: &AppState,
    session: &Arc<Session>,
    entry: &'static Entry,
    spec: &'static OperationSpec,
    args: Value,
) -> Result<Reply, OpError> {
    if let Some(grant) = session.grant() {
        grant.permit(spec)?;
    }
    let held = session_for(app, session, spec, &args).await?;
    let session = held.session.clone();
    let ns = session.namespace().to_string();
    let mut store_call = spec.uses_store().then(|| app.store_call()).transpose()?;
    if spec.kind == Kind::Read && store_call.is_some() {
        // On a store other nodes write to, a read first hears of every write
        // acknowledged so far (read-your-writes across nodes; store::follow).
        if let Err(e) = app.store().sync().await {
            let failed = Err(OpError::from(e));
            if let Some(call) = store_call.take() {
                call.settle(&failed);
            }
            return failed;
        }
    }
    let key = spec
        .cacheable()
        .then(|| QueryCache::key(&ns, entry.name, &args));
    let cx = OpCtx {
        app: app.clone(),
        session,
        op: entry.name,
        dispatch: dispatch_boxed,
    };
    let run = async {
        let read_timeout = Duration::from_millis(app.config().read_timeout_ms);
        match spec.kind {
            // Writes are never timed out here: once queued they commit, and an
            // error would tell the agent a durable write did not happen.
            Kind::Write | Kind::Admin => entry.call(cx, args).await,
            Kind::Read => tokio::time::timeout(read_timeout, entry.call(cx, args))
                .await
                .unwrap_or_else(|_| Err(timed_out(entry.name, read_timeout))),
        }
    };
    let result = if let Some(key) = key {
        cached(app, spec, entry.name, &ns, key, run).await
    } else {
        run.await.map(|answer| Reply {
            value: answer.value,
            text: None,
        })
    };
    if let Some(call) = store_call {
        call.settle(&result);
    }
    if held.loaded.is_none() {
        return result;
    }
    // A session brought back from a shared store keeps what the call changed.
    match app.handles().settle(held).await {
        Err(e) if result.is_ok() => Err(handle_error(e)),
        _ => result,
    }
}

/// A cacheable read: the cached answer if no record kind it reads changed in
/// its namespace since, else `run` (coalesced with identical reads in flight),
/// kept unless it is degraded.
async fn cached(
    app: &AppState,
    spec: &OperationSpec,
    op: &'static str,
    ns: &str,
    key: String,
    run: impl Future<Output = Result<Answer, OpError>>,
) -> Result<Reply, OpError> {
    let cache = app.cache();
    let scopes: Vec<String> = spec.reads.iter().map(|k| k.scope(ns)).collect();
    // Generations first: a write landing while the read runs makes its answer stale.
    let seen = cache.generations(&scopes);
    if let Some((value, text)) = cache.get(op, &key, &scopes) {
        return Ok(Reply {
            value,
            text: Some(text),
        });
    }
    // A degraded answer (index down, store scan) is correct but is not kept:
    // the next call should get the index's ranking back.
    let run = async { run.await.map(|a| (a.value, !a.degraded)) };
    let answer = cache.coalesce(op, &key, &seen, run).await?;
    if answer.keep {
        cache.put(op, key, answer.text.clone(), scopes, seen);
    }
    Ok(Reply {
        value: answer.value,
        text: Some(answer.text),
    })
}

fn dispatch_boxed(
    app: AppState,
    session: Arc<Session>,
    name: String,
    args: Value,
) -> BoxFuture<Result<Value, OpError>> {
    Box::pin(async move { dispatch(&app, &session, &name, args).await.map(|r| r.value) })
}

/// The session a session-layer operation works on: the one its `session`
/// handle names (checked against the caller's namespace), else the caller's
/// own, which a stateless request (MCP 2026-07-28) does not have.
async fn session_for(
    app: &AppState,
    caller: &Arc<Session>,
    spec: &OperationSpec,
    args: &Value,
) -> Result<Held, OpError> {
    let own = || Held {
        session: caller.clone(),
        loaded: None,
    };
    if spec.layer != SESSION_LAYER || spec.name == OPEN_SESSION {
        return Ok(own());
    }
    match args.get("session").and_then(Value::as_str) {
        Some(handle) => {
            let held = app.handles().resolve(handle).await.map_err(handle_error)?;
            let token = |s: &Session| s.grant().map(|g| g.token_id.clone());
            if held.session.namespace() != caller.namespace()
                || token(&held.session) != token(caller)
            {
                return Err(OpError::NotFound(format!(
                    "this session handle belongs to another namespace than this request's ({}), \
                     or was opened with another token: open one here with {OPEN_SESSION}",
                    caller.namespace()
                )));
            }
            Ok(held)
        }
        None if caller.is_stateless() => Err(OpError::invalid(format!(
            "this request has no session (MCP 2026-07-28 requests stand alone): call \
             {OPEN_SESSION} once and pass its handle as `session`"
        ))),
        None => Ok(own()),
    }
}

fn handle_error(e: HandleError) -> OpError {
    match e {
        HandleError::Unknown { .. } => OpError::NotFound(e.to_string()),
        HandleError::Full(_) | HandleError::Unavailable(_) => OpError::Unavailable(e.to_string()),
    }
}

const SESSION_LAYER: &str = "session";
const OPEN_SESSION: &str = "session_open";

fn timed_out(name: &str, limit: Duration) -> OpError {
    OpError::Timeout(format!(
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
