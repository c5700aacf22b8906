//! The MCP surface: the only module that knows rmcp, MCP and JSON-RPC.
//!
//! `handler.rs` adapts one MCP session to the pipeline; `stdio.rs` and `http.rs`
//! are the two transports. `local.rs` (the owner of a data dir) and `forward.rs`
//! (a later process on the same dir) let many hosts share one data dir: the later
//! process forwards its stdio session to the owner, and takes over if the owner
//! exits. Operations never see any of it.

pub mod auth;
pub mod forward;
pub mod handler;
pub mod http;
pub mod jsonrpc;
pub mod local;
pub mod resources;
pub mod stdio;
pub mod tools;

pub use handler::EngramHandler;
pub use tools::ToolTable;

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
