//! The owner's local socket: MCP sessions forwarded from other engram processes
//! started on the same data dir (each MCP host spawns its own).
//!
//! A forwarded connection opens with one preamble line naming the forwarding
//! process's session options, then carries MCP (newline-delimited JSON-RPC)
//! exactly as stdio does (same framing: `stdio::LineTransport`). Each
//! connection is one isolated session.

use std::path::{Path, PathBuf};

use rmcp::ServiceExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EngramHandler;
use super::stdio::LineTransport;
use crate::catalog::catalog;
use crate::config::NamespaceMode;
use crate::pipeline::Engine;
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

/// The owner's local socket, as spawned. Dropping it leaves it serving.
#[derive(Clone)]
pub struct Listener {
    stop: CancellationToken,
    sessions: TaskTracker,
}

impl Listener {
    /// Stops accepting and ends every forwarded session (their connections are
    /// shut, so an answer still being worked on never arrives): their processes
    /// look for the next owner and send again what was not answered, instead of
    /// getting errors from a store that is shutting down. Call it before
    /// `Engine::shutdown`.
    pub async fn close(&self) {
        self.stop.cancel();
        self.sessions.close();
        self.sessions.wait().await;
    }
}

/// Serves forwarded sessions until the process ends or `Listener::close`. Only
/// the data dir's owner (the lock holder) calls this, so any socket file
/// already there is stale.
pub fn spawn_listener(app: Engine) -> std::io::Result<Listener> {
    let path = socket_path(&app.app().config().data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let stop = CancellationToken::new();
    let sessions = TaskTracker::new();
    let handle = Listener {
        stop: stop.clone(),
        sessions: sessions.clone(),
    };
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => break,
            };
            let stream = match accepted.and_then(|(s, _)| closable(s)) {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin,
                    // and never stop serving later hosts.
                    tracing::warn!(error = %e, "local socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (app, stop) = (app.clone(), stop.clone());
            sessions.spawn(async move {
                let (stream, closer) = stream;
                tokio::select! {
                    r = serve_forwarded(app, stream) => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "forwarded session ended");
                        }
                    }
                    _ = stop.cancelled() => {
                        let _ = closer.shutdown(std::net::Shutdown::Both);
                    }
                }
            });
        }
    });
    Ok(handle)
}

/// A connection and a second handle on it that can shut it from outside.
fn closable(
    stream: tokio::net::UnixStream,
) -> std::io::Result<(tokio::net::UnixStream, std::os::unix::net::UnixStream)> {
    let std = stream.into_std()?;
    let closer = std.try_clone()?;
    Ok((tokio::net::UnixStream::from_std(std)?, closer))
}

async fn serve_forwarded(app: Engine, stream: tokio::net::UnixStream) -> anyhow::Result<()> {
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
    // The BufReader hands over anything it read past the preamble. The framing
    // is stdio's: every line the host sent gets an answer, malformed or not.
    let service = handler.serve(LineTransport::new(reader, write)).await?;
    service.waiting().await?;
    Ok(())
}
