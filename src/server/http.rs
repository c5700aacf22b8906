//! MCP over Streamable HTTP at `/mcp`, one session per `initialize`, plus
//! `/health`, `/metrics` and the RFC 9728 resource metadata.
//!
//! Edges: binds loopback by default, and a non-loopback address only once a
//! token exists (or with `--insecure-no-auth`); `/mcp` and `/metrics` check
//! the bearer token (`auth.rs`) and that a session is used with the token that
//! opened it; every route checks `Host` (DNS rebinding)
//! and browsers' `Origin` (loopback origins only unless `--allowed-origin`);
//! bodies are bounded and read before rmcp sees them, so a message rmcp cannot
//! parse gets its JSON-RPC error (`jsonrpc.rs`) instead of a bare 415; sessions
//! are capped (`--max-sessions`) and expire when idle (`--session-idle-secs`);
//! a connection that does not finish sending its request headers in time, or
//! sits idle between requests, is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::{self, AuthMode, Gate};
use super::jsonrpc::{self, Incoming};
use super::{EngramHandler, shutdown_signal};
use crate::auth::Grant;
use crate::pipeline::Engine;

/// Largest request body read (one JSON-RPC message), as on stdio.
pub const MAX_BODY_BYTES: usize = super::stdio::MAX_LINE_BYTES;
/// A client must send a request's headers within this long; an idle keep-alive
/// connection is closed after it too.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish when the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Extra `Host` values to accept besides loopback (for non-local binds).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed besides loopback ones (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Most MCP sessions open at once; an `initialize` over it is refused (503).
    pub max_sessions: usize,
    /// A session with no request for this long is closed.
    pub session_idle: Duration,
    /// When requests need a token.
    pub auth: AuthMode,
    /// Count calls per namespace in `/metrics` (needs an admin token to read).
    pub metrics_namespaces: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle: Duration::from_secs(DEFAULT_SESSION_IDLE_SECS),
            auth: AuthMode::Auto,
            metrics_namespaces: false,
        }
    }
}

pub const DEFAULT_MAX_SESSIONS: usize = 2_000;
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 300;

/// Origins a browser on this machine sends.
const LOOPBACK_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// What the edge checks need.
#[derive(Clone)]
struct Edge {
    hosts: Arc<[String]>,
    sessions: Arc<LocalSessionManager>,
    max_sessions: usize,
    gate: Gate,
    /// Which token opened each MCP session: a session is used with that
    /// token only.
    owners: Arc<Mutex<HashMap<String, String>>>,
}

pub async fn serve(app: Engine, addr: SocketAddr, opts: HttpOptions) -> anyhow::Result<()> {
    check_bind(&app, addr, opts.auth).await?;
    // Off loopback, tokens are needed whatever the store holds.
    let auth = match opts.auth {
        AuthMode::Auto if !addr.ip().is_loopback() => AuthMode::Required,
        mode => mode,
    };
    crate::metrics::metrics().count_namespaces(opts.metrics_namespaces);
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    // stdio hosts started on this data dir forward their sessions here.
    let listener = super::local::spawn_listener(app.clone())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot serve the local socket; other processes cannot share this data dir"))
        .ok();
    let local = tcp.local_addr()?;
    let ct = CancellationToken::new();
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    hosts.extend(opts.allowed_hosts);
    let mut origins: Vec<String> = LOOPBACK_ORIGINS.iter().map(|o| o.to_string()).collect();
    origins.extend(opts.allowed_origins);
    let config = StreamableHttpServerConfig::default()
        // A stateless (2026-07-28) answer that is one message goes out as plain
        // JSON rather than a one-event SSE stream.
        .with_json_response(true)
        .with_allowed_hosts(hosts.clone())
        .with_allowed_origins(origins)
        .with_cancellation_token(ct.child_token());
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(opts.session_idle);
    let sessions = Arc::new(sessions);
    let factory_app = app.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(EngramHandler::new(factory_app.clone())),
        sessions.clone(),
        config,
    );
    let edge = Edge {
        hosts: hosts.into(),
        sessions,
        max_sessions: opts.max_sessions,
        gate: Gate::new(app.app().store().clone(), auth),
        owners: Arc::default(),
    };
    let router = axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(auth::METADATA_PATH, get(resource_metadata))
        .route(
            &format!("{}/mcp", auth::METADATA_PATH),
            get(resource_metadata),
        )
        .with_state(app.clone())
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(edge, guard));
    // Tests and scripts read this line to find the port when binding :0.
    tracing::info!("engram listening on http://{local}/mcp");
    eprintln!("engram listening on http://{local}/mcp");
    accept(tcp, router, ct).await;
    // Forwarded sessions move to the next owner before the store closes.
    if let Some(listener) = listener {
        listener.close().await;
    }
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    Ok(())
}

/// Serves connections until a shutdown signal, each with a header timeout.
async fn accept(listener: tokio::net::TcpListener, router: axum::Router, ct: CancellationToken) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let connections = tokio_util::task::TaskTracker::new();
    let stop = CancellationToken::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        // Answers go out in several writes (headers, SSE events): without
        // TCP_NODELAY each waits on the client's delayed ACK (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = service.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracing::info!("signal received, stopping");
    ct.cancel();
    stop.cancel();
    connections.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await;
}

/// The checks in front of every route, in order: the `Host`, then for a POST
/// to `/mcp` the body's size, the message, and the session cap.
async fn guard(State(edge): State<Edge>, mut request: Request, next: Next) -> Response {
    if !host_allowed(request.headers(), &edge.hosts) {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: Host not allowed (engram accepts loopback hosts unless started with --allowed-host)",
        )
            .into_response();
    }
    let path = request.uri().path();
    let mcp = path.starts_with("/mcp");
    if mcp || path == "/metrics" {
        let grant = match edge.gate.check(request.headers()).await {
            Ok(grant) => grant,
            Err(refusal) => return refusal.into_response(request.headers()),
        };
        if !edge.owns_session(request.headers(), grant.as_ref()) {
            return (
                StatusCode::FORBIDDEN,
                "Forbidden: this MCP session was opened with another token; open a session \
                 with yours",
            )
                .into_response();
        }
        if let Some(grant) = grant {
            request.extensions_mut().insert(grant);
        }
    }
    if request.method() == axum::http::Method::DELETE {
        return close_session(request, next).await;
    }
    if request.method() != axum::http::Method::POST || !mcp {
        return next.run(request).await;
    }
    let grant = request.extensions().get::<Grant>().cloned();
    let response = match check_message(&edge, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => return refused,
    };
    edge.note_owner(&response, grant.as_ref());
    response
}

impl Edge {
    /// Whether a request may use the MCP session it names: not one another
    /// token opened.
    fn owns_session(&self, headers: &HeaderMap, grant: Option<&Grant>) -> bool {
        let Some(session) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return true;
        };
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        match (owners.get(session), grant) {
            (Some(owner), Some(grant)) => *owner == grant.token_id,
            (owner, _) => owner.is_none(),
        }
    }

    /// Remembers which token opened the session an `initialize` answer names.
    fn note_owner(&self, response: &Response, grant: Option<&Grant>) {
        let (Some(grant), Some(session)) = (
            grant,
            response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok()),
        ) else {
            return;
        };
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.insert(session.to_string(), grant.token_id.clone());
        if owners.len() > 2 * self.max_sessions {
            // Forget sessions that have ended.
            if let Ok(live) = self.sessions.sessions.try_read() {
                owners.retain(|id, _| live.keys().any(|k| k.as_ref() == id));
            }
        }
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

/// Refuses to serve a non-loopback address no token protects.
async fn check_bind(app: &Engine, addr: SocketAddr, mode: AuthMode) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if mode == AuthMode::Off {
        tracing::warn!(%addr, "serving without authentication (--insecure-no-auth): anyone who reaches this address reads and writes every namespace");
        return Ok(());
    }
    let tokens = app
        .app()
        .store()
        .tokens_in_use(crate::model::now_micros())
        .await?;
    if tokens {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve {addr} without tokens: anyone who reaches it could read, change or \
         delete every namespace. Create a token first (engram token create --namespace NAME \
         --scope write), bind a loopback address (127.0.0.1), or pass --insecure-no-auth to \
         insist"
    )
}

/// `/metrics`: any valid token when tokens are on; an admin one when calls
/// are counted per namespace.
async fn metrics(State(app): State<Engine>, request: Request) -> Response {
    let grant = request.extensions().get::<Grant>();
    if let Some(grant) = grant
        && crate::metrics::metrics().counts_namespaces()
        && grant.scope != crate::auth::Scope::Admin
    {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: with --metrics-namespaces, /metrics needs an admin token",
        )
            .into_response();
    }
    let app = app.app();
    let health = app.health();
    let (database, index_dir) = (
        app.config().data_dir.join(crate::store::DB_FILE_NAME),
        app.config().data_dir.join(crate::search::INDEX_DIR_NAME),
    );
    let state = crate::metrics::EngineState {
        cache: app.cache_stats(),
        breakers: health.breakers,
        handles_open: app.handles().open_count(),
        index_pending: health.search_index.overlay_records,
        index_commits: health.search_index.commits,
        database: &database,
        index_dir: &index_dir,
    };
    let text = crate::metrics::metrics().render(state);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn resource_metadata(headers: HeaderMap) -> Json<Value> {
    Json(auth::resource_metadata(&headers))
}

/// Closing a session: rmcp answers 202, which clients (the Python SDK) read as
/// a failed close; the session is closed, so say 200.
async fn close_session(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

/// Reads a posted message before rmcp does: a body over the limit, a message
/// rmcp cannot take, or an `initialize` over the session cap is answered here.
/// Otherwise the request goes on with its body as read (without a BOM).
async fn check_message(edge: &Edge, request: Request) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return Err(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::error(
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                format!("Invalid Request: the body is over {MAX_BODY_BYTES} bytes"),
            ),
        ));
    };
    let message = match jsonrpc::read(&bytes) {
        Incoming::Reply(answer) => return Err(rpc_error(StatusCode::BAD_REQUEST, answer)),
        Incoming::Drop(why) => {
            return Err((StatusCode::BAD_REQUEST, format!("Bad Request: {why}")).into_response());
        }
        Incoming::Message(message) => message,
    };
    check_session_cap(edge, &parts.headers, &message).await?;
    // rmcp reads the body again: without the BOM the guard accepted it without.
    let bytes = match bytes.strip_prefix(jsonrpc::UTF8_BOM) {
        Some(_) => bytes.slice(jsonrpc::UTF8_BOM.len()..),
        None => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Refuses (503, `Retry-After`) an `initialize` that would open a session past
/// `--max-sessions`.
async fn check_session_cap(
    edge: &Edge,
    headers: &HeaderMap,
    message: &ClientJsonRpcMessage,
) -> Result<(), Response> {
    let ClientJsonRpcMessage::Request(r) = message else {
        return Ok(());
    };
    let opens_session = !headers.contains_key("mcp-session-id")
        && matches!(r.request, ClientRequest::InitializeRequest(_));
    if !opens_session || edge.sessions.sessions.read().await.len() < edge.max_sessions {
        return Ok(());
    }
    let id = serde_json::to_value(&r.id).unwrap_or(Value::Null);
    let mut response = rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::error(
            id,
            -32000,
            format!(
                "engram is serving its maximum of {} sessions (--max-sessions): close sessions \
                 you no longer use (HTTP DELETE) or retry later",
                edge.max_sessions
            ),
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    Err(response)
}

fn rpc_error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The `Host` header names an allowed host (any port).
fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(host))
}

async fn health(State(app): State<Engine>) -> (StatusCode, Json<serde_json::Value>) {
    let health = app.app().health();
    // Degraded still answers correctly (from the store), so it is not a 503.
    let body = serde_json::to_value(&health).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    (StatusCode::OK, Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_with_any_port() {
        let allowed = ["localhost".to_string(), "::1".to_string()];
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            host_allowed(&m, &allowed)
        };
        assert!(with("localhost:8765"));
        assert!(with("LOCALHOST"));
        assert!(with("[::1]:80"));
        assert!(!with("evil.com"));
        assert!(!with("localhost.evil.com:80"));
        assert!(!host_allowed(&HeaderMap::new(), &allowed));
    }
}
