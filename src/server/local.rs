//! The owner's local socket: MCP sessions forwarded from other engram processes
//! started on the same data dir (each MCP host spawns its own).
//!
//! A forwarded connection opens with one preamble line naming the forwarding
//! process's session options, then carries MCP (newline-delimited JSON-RPC)
//! exactly as stdio does. Each connection is one isolated session.

use std::path::{Path, PathBuf};

use rmcp::ServiceExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;

use super::EngramHandler;
use crate::app::AppState;
use crate::catalog::catalog;
use crate::config::NamespaceMode;
use crate::session::ToolSelection;

pub const SOCKET_NAME: &str = "engram.sock";

/// The first line a forwarding process sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Preamble {
    /// Always 1: the version of this little protocol.
    pub engram_forward: u32,
    /// A namespace name, or "auto".
    pub namespace: String,
    /// The forwarding process's `--tools`.
    pub tools: String,
}

impl Preamble {
    pub fn namespace_mode(&self) -> NamespaceMode {
        match self.namespace.as_str() {
            "auto" => NamespaceMode::Auto,
            ns => NamespaceMode::Fixed(ns.to_string()),
        }
    }

    pub fn from_mode(namespace: &NamespaceMode, tools: &str) -> Preamble {
        Preamble {
            engram_forward: 1,
            namespace: match namespace {
                NamespaceMode::Auto => "auto".to_string(),
                NamespaceMode::Fixed(ns) => ns.clone(),
            },
            tools: tools.to_string(),
        }
    }
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Serves forwarded sessions until the process ends. Only the data dir's owner
/// (the lock holder) calls this, so any socket file already there is stale.
pub fn spawn_listener(app: AppState) -> std::io::Result<()> {
    let path = socket_path(&app.config().data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_forwarded(app, stream).await {
                            tracing::debug!(error = %e, "forwarded session ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "local socket accept failed");
                    break;
                }
            }
        }
    });
    Ok(())
}

async fn serve_forwarded(app: AppState, stream: tokio::net::UnixStream) -> anyhow::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut first = String::new();
    reader.read_line(&mut first).await?;
    let preamble: Preamble = serde_json::from_str(first.trim())?;
    anyhow::ensure!(
        preamble.engram_forward == 1,
        "unknown forward protocol version"
    );
    let tools = ToolSelection::parse(&preamble.tools, catalog()).map_err(anyhow::Error::msg)?;
    let handler = EngramHandler::with_options(app, preamble.namespace_mode(), tools);
    // The BufReader hands over anything it read past the preamble.
    let service = handler.serve((reader, write)).await?;
    service.waiting().await?;
    Ok(())
}
