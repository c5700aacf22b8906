//! A later `engram serve` on a data dir someone else owns: forward this process's
//! stdio session to the owner's local socket, and take over if the owner exits.
//!
//! Takeover: when the owner's socket closes, this process waits for the data-dir
//! lock, opens the store itself, starts its own local socket for others, and
//! replays the client's `initialize` handshake (recorded while forwarding) into
//! an in-process session, discarding the second answer, so the host's MCP session
//! goes on. Requests the owner had not answered when it died are sent again to
//! the new server (at least once: a write the owner committed but never
//! acknowledged may run twice); acknowledged writes are durable either way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;

use super::EngramHandler;
use super::local::{Preamble, socket_path, spawn_listener};
use crate::app::{AppState, OpenError};
use crate::catalog::catalog;
use crate::config::Config;
use crate::session::ToolSelection;

/// How long to wait for the owner's socket to appear, or for its lock to free.
const OWNER_WAIT: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(50);

type Stdin = Lines<BufReader<tokio::io::Stdin>>;

/// Serves the host on stdio through the data dir's owner.
pub async fn forward_stdio(config: Config) -> anyhow::Result<()> {
    let tools = ToolSelection::parse(&config.tools, catalog()).map_err(anyhow::Error::msg)?;
    let path = socket_path(&config.data_dir);
    let stream = connect(&path).await.with_context(|| {
        format!(
            "data dir {} is owned by another engram process, but its socket {} does not answer",
            config.data_dir.display(),
            path.display()
        )
    })?;
    tracing::info!(socket = %path.display(), "data dir owned by another engram: forwarding this session");
    let preamble = Preamble::from_mode(&config.namespace, &config.tools);
    let (sock_read, mut sock_write) = stream.into_split();
    sock_write
        .write_all(format!("{}\n", serde_json::to_string(&preamble)?).as_bytes())
        .await?;

    // Requests sent to the owner and not yet answered, by JSON-RPC id: re-sent
    // to the new server if the owner dies before answering them.
    let unanswered: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let answered = unanswered.clone();
    let mut to_stdout = tokio::spawn(async move {
        let mut lines = BufReader::new(sock_read).lines();
        let mut out = tokio::io::stdout();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(id) = response_id(&line) {
                answered.lock().expect("poisoned").retain(|(i, _)| *i != id);
            }
            if out.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
            let _ = out.flush().await;
        }
    });
    let mut stdin: Stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut handshake: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) => {
                    if is_handshake(&line) {
                        handshake.push(line.clone());
                    } else if let Some(id) = request_id(&line) {
                        unanswered.lock().expect("poisoned").push((id, line.clone()));
                    }
                    if sock_write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The host closed the session: let the owner answer what it has.
                    let _ = sock_write.shutdown().await;
                    let _ = tokio::time::timeout(OWNER_WAIT, &mut to_stdout).await;
                    return Ok(());
                }
            },
            _ = &mut to_stdout => break,
        }
    }
    let pending: Vec<String> = unanswered
        .lock()
        .expect("poisoned")
        .drain(..)
        .map(|(_, line)| line)
        .collect();
    tracing::warn!("the owner of the data dir went away: taking over");
    take_over(config, tools, handshake, stdin, pending).await
}

async fn connect(path: &std::path::Path) -> std::io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

fn parse(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// The id of a client request (has `method` and `id`).
fn request_id(line: &str) -> Option<String> {
    let v = parse(line)?;
    v.get("method")?;
    v.get("id").map(|id| id.to_string())
}

/// The id of a response to the client (has `id`, no `method`).
fn response_id(line: &str) -> Option<String> {
    let v = parse(line)?;
    if v.get("method").is_some() {
        return None;
    }
    v.get("id").map(|id| id.to_string())
}

/// The client's `initialize` request and `notifications/initialized`.
fn is_handshake(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("method").and_then(|m| m.as_str()).map(str::to_string))
        .is_some_and(|m| m == "initialize" || m == "notifications/initialized")
}

/// Opens the data dir once its lock is free.
pub async fn open_when_free(config: Config) -> anyhow::Result<AppState> {
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    loop {
        match AppState::open(config.clone()).await {
            Ok(app) => return Ok(app),
            Err(OpenError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn take_over(
    config: Config,
    tools: ToolSelection,
    handshake: Vec<String>,
    mut stdin: Stdin,
    pending: Vec<String>,
) -> anyhow::Result<()> {
    let namespace = config.namespace.clone();
    let app = open_when_free(config).await?;
    if let Err(e) = spawn_listener(app.clone()) {
        tracing::warn!(error = %e, "cannot serve the local socket; later processes will not share this one");
    }
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let handler = EngramHandler::with_options(app.clone(), namespace, tools);
    let server = tokio::spawn(async move {
        let running = handler.serve(server_end).await?;
        running.waiting().await?;
        anyhow::Ok(())
    });
    let (from_server, mut to_server) = tokio::io::split(client_end);
    let mut from_server = BufReader::new(from_server).lines();

    // Replay the handshake; the host already has the owner's answer to it.
    for line in &handshake {
        to_server.write_all(format!("{line}\n").as_bytes()).await?;
    }
    if handshake.iter().any(|l| l.contains("\"initialize\"")) {
        from_server.next_line().await?;
    }
    // At least once: a request the old owner ran but never answered runs again.
    for line in pending {
        to_server.write_all(format!("{line}\n").as_bytes()).await?;
    }
    pump(&mut stdin, to_server, from_server).await?;
    let _ = server.await;
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    Ok(())
}

/// stdin → server, server → stdout, until the host closes stdin.
async fn pump<W, R>(
    stdin: &mut Stdin,
    mut to_server: W,
    mut from_server: Lines<R>,
) -> anyhow::Result<()>
where
    W: AsyncWrite + Unpin,
    R: tokio::io::AsyncBufRead + Unpin + AsyncRead,
{
    let mut stdout = tokio::io::stdout();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) => to_server.write_all(format!("{line}\n").as_bytes()).await?,
                None => {
                    to_server.shutdown().await?;
                    while let Some(out) = from_server.next_line().await? {
                        stdout.write_all(format!("{out}\n").as_bytes()).await?;
                    }
                    stdout.flush().await?;
                    return Ok(());
                }
            },
            out = from_server.next_line() => match out? {
                Some(out) => {
                    stdout.write_all(format!("{out}\n").as_bytes()).await?;
                    stdout.flush().await?;
                }
                None => return Ok(()),
            },
        }
    }
}
