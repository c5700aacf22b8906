//! MCP over stdio: one session per process. stdout carries only the protocol;
//! logs go to stderr.

use rmcp::ServiceExt;

use super::{EngramHandler, shutdown_signal};
use crate::app::AppState;

/// Serves one MCP session on stdin/stdout until the client closes it or the
/// process is signalled, then commits everything and returns.
pub async fn serve(app: AppState) -> anyhow::Result<()> {
    // Other engram processes started on this data dir forward their sessions here.
    if let Err(e) = super::local::spawn_listener(app.clone()) {
        tracing::warn!(error = %e, "cannot serve the local socket; other processes cannot share this data dir");
    }
    let handler = EngramHandler::new(app.clone());
    let service = handler.serve(rmcp::transport::stdio()).await?;
    tokio::select! {
        result = service.waiting() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "stdio session ended with an error");
            }
        }
        _ = shutdown_signal() => tracing::info!("signal received, stopping"),
    }
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    Ok(())
}
