//! MCP over Streamable HTTP at `/mcp`, one session per `initialize`, plus
//! `/health`. Binds loopback by default; the Host allow-list guards against DNS
//! rebinding and the Origin allow-list against browsers.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{EngramHandler, shutdown_signal};
use crate::app::AppState;

#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Extra `Host` values to accept besides loopback (for non-local binds).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call (`http://localhost:*`); empty: none checked.
    pub allowed_origins: Vec<String>,
}

pub async fn serve(app: AppState, addr: SocketAddr, opts: HttpOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // stdio hosts started on this data dir forward their sessions here.
    if let Err(e) = super::local::spawn_listener(app.clone()) {
        tracing::warn!(error = %e, "cannot serve the local socket; other processes cannot share this data dir");
    }
    let local = listener.local_addr()?;
    let ct = CancellationToken::new();
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    hosts.extend(opts.allowed_hosts);
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_cancellation_token(ct.child_token());
    if !opts.allowed_origins.is_empty() {
        config = config.with_allowed_origins(opts.allowed_origins);
    }
    let factory_app = app.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(EngramHandler::new(factory_app.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    let router = axum::Router::new()
        .route("/health", get(health))
        .with_state(app.clone())
        .nest_service("/mcp", mcp);
    // Tests and scripts read this line to find the port when binding :0.
    tracing::info!("engram listening on http://{local}/mcp");
    eprintln!("engram listening on http://{local}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            ct.cancel();
        })
        .await?;
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    Ok(())
}

async fn health(State(app): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let health = app.health();
    // Degraded still answers correctly (from the store), so it is not a 503.
    let body = serde_json::to_value(&health).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    (StatusCode::OK, Json(body))
}
