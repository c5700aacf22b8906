//! A later `engram serve` on a data dir someone else owns: forward this process's
//! stdio session to the owner's local socket, and go on when the owner exits.
//!
//! Many hosts may forward to one owner. When the owner's socket closes, every
//! forwarder loops: it tries to take the data dir's lock. The one that gets it
//! opens the store, starts its own local socket, and from then on serves its
//! host in-process; the others connect to the new owner's socket once it
//! answers. Either way the host's MCP session goes on: the client's `initialize`
//! handshake (recorded while forwarding) is replayed to the new server, whose
//! second answer to it is swallowed, and the requests the dead owner had not
//! answered are sent again with their original JSON-RPC ids. This repeats for as
//! many owner deaths as happen.
//!
//! Re-sent requests run at least once: a write the owner committed but never
//! acknowledged may run twice. Acknowledged writes are durable either way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::local::{Preamble, socket_path, spawn_listener};
use super::stdio::{self, LineTransport};
use super::{EngramHandler, shutdown_signal};
use crate::app::OpenError;
use crate::catalog::catalog;
use crate::config::Config;
use crate::pipeline::Engine;
use crate::session::ToolSelection;

/// How long a forwarder looks for a data dir owner (or waits for the lock)
/// before it gives up on its host's session.
const OWNER_WAIT: Duration = Duration::from_secs(60);
/// How long a closing host's last answers may take through a socket.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The host's messages, one line each, as bytes: a line that is not UTF-8 or
/// not JSON goes through untouched, and the server answers it.
struct HostInput {
    read: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    /// A line read in part (kept when a `select!` drops the read).
    partial: Vec<u8>,
}

impl HostInput {
    fn stdin() -> Self {
        HostInput {
            read: BufReader::new(stdio::async_stdin()),
            partial: Vec::new(),
        }
    }

    /// The next line, without its newline; `None` at end of input. Cancel-safe.
    async fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let n = self.read.read_until(b'\n', &mut self.partial).await?;
        if n == 0 && self.partial.is_empty() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(line))
    }
}

/// A line with its newline, ready to write.
fn framed(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 1);
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// What this process has seen of its host's session: enough to open it again
/// on another server.
#[derive(Default)]
struct Recorded {
    /// `initialize` and `notifications/initialized`, as the host sent them.
    handshake: Vec<Vec<u8>>,
    /// The id of the host's `initialize` request.
    init_id: Option<String>,
    /// The host has its answer to `initialize`: a replay must swallow the next.
    init_answered: bool,
    /// Requests sent and not yet answered, in the order sent: (id, line).
    unanswered: Vec<(String, Vec<u8>)>,
}

impl Recorded {
    /// Notes a line the host sent, before it goes to the server.
    fn sent(&mut self, line: &[u8]) {
        let Some(v) = parse(line) else {
            return;
        };
        let id = v.get("id").map(|id| id.to_string());
        match v.get("method").and_then(|m| m.as_str()) {
            Some("initialize") => {
                self.handshake = vec![line.to_vec()];
                self.init_id = id;
                self.init_answered = false;
            }
            Some("notifications/initialized") => self.handshake.push(line.to_vec()),
            Some("notifications/cancelled") => {
                // A cancelled request may never be answered: do not send it again.
                if let Some(gone) = v.pointer("/params/requestId").map(|i| i.to_string()) {
                    self.unanswered.retain(|(i, _)| *i != gone);
                }
            }
            Some(_) => {
                if let Some(id) = id {
                    self.unanswered.push((id, line.to_vec()));
                }
            }
            // The host's answers to the server's own requests (roots/list, ...).
            None => {}
        }
    }

    /// Notes an answer on its way to the host.
    fn answered(&mut self, id: &str) {
        if self.init_id.as_deref() == Some(id) {
            self.init_answered = true;
        }
        if let Some(at) = self.unanswered.iter().position(|(i, _)| i == id) {
            self.unanswered.remove(at);
        }
    }

    /// What a new server must be sent before the host's next line: the
    /// handshake, then every request not yet answered. Also the id of the
    /// `initialize` answer to swallow (the host already has one).
    fn replay(&self) -> (Vec<Vec<u8>>, Option<String>) {
        let mut lines = self.handshake.clone();
        lines.extend(self.unanswered.iter().map(|(_, l)| l.clone()));
        let swallow = self.init_answered.then(|| self.init_id.clone()).flatten();
        (lines, swallow)
    }
}

type Shared = Arc<Mutex<Recorded>>;

fn lock(rec: &Shared) -> std::sync::MutexGuard<'_, Recorded> {
    rec.lock().expect("forward state poisoned")
}

/// Serves the host on stdio through the data dir's owner, whoever it is.
pub async fn forward_stdio(config: Config) -> anyhow::Result<()> {
    let tools = ToolSelection::parse(&config.tools, catalog()).map_err(anyhow::Error::msg)?;
    let rec: Shared = Arc::default();
    let mut stdin = HostInput::stdin();
    let path = socket_path(&config.data_dir);
    let preamble = format!(
        "{}\n",
        serde_json::to_string(&Preamble::from_mode(&config.namespace, &config.tools))?
    );
    let mut owners = 0usize;
    loop {
        match find_owner(&config).await? {
            Owner::Me(app) => {
                if owners > 0 {
                    tracing::warn!("the owner of the data dir went away: this process owns it now");
                }
                return serve_here(app, &config, tools, &rec, stdin).await;
            }
            Owner::Other(stream) => {
                let owner = stream.peer_cred().ok().and_then(|c| c.pid());
                if owners == 0 {
                    tracing::info!(socket = %path.display(), owner, "data dir owned by another engram: forwarding this session");
                } else {
                    tracing::warn!(socket = %path.display(), owner, "the owner of the data dir went away: forwarding to the new owner");
                }
                owners += 1;
                let (from_server, mut to_server) = stream.into_split();
                if to_server.write_all(preamble.as_bytes()).await.is_err() {
                    continue;
                }
                match relay(&mut stdin, from_server, to_server, &rec, Some(DRAIN_WAIT)).await? {
                    Relay::HostDone => return Ok(()),
                    Relay::ServerGone => continue,
                }
            }
        }
    }
}

enum Owner {
    /// This process took the lock and opened the data dir.
    Me(Engine),
    /// Another process holds the lock, and this is its socket.
    Other(UnixStream),
}

/// Takes the data dir's lock, or connects to the socket of whoever holds it;
/// tries both again until one works or `OWNER_WAIT` has passed. The lock is
/// tried every time: a dying owner may hold it (or answer on its socket) for a
/// moment, and a holder that serves no socket (`engram import`) may let go.
async fn find_owner(config: &Config) -> anyhow::Result<Owner> {
    let path = socket_path(&config.data_dir);
    let deadline = Instant::now() + OWNER_WAIT;
    loop {
        match Engine::open(config.clone()).await {
            Ok(app) => return Ok(Owner::Me(app)),
            Err(OpenError::Locked { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Someone else holds the lock: its socket answers once it has opened
        // the store (a socket file left by a dead owner refuses connections).
        let error = match UnixStream::connect(&path).await {
            Ok(stream) => return Ok(Owner::Other(stream)),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "data dir {} is held by another engram process, but its socket {} has not answered \
                 for {} s: {error}",
                config.data_dir.display(),
                path.display(),
                OWNER_WAIT.as_secs()
            );
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// This process owns the data dir: serves the host's session in-process (after
/// replaying what the host already sent elsewhere) and other processes' on the
/// local socket, until the host closes stdin or the process is signalled.
async fn serve_here(
    app: Engine,
    config: &Config,
    tools: ToolSelection,
    rec: &Shared,
    mut stdin: HostInput,
) -> anyhow::Result<()> {
    let listener = spawn_listener(app.clone())
        .map_err(|e| tracing::warn!(error = %e, "cannot serve the local socket; later processes will not share this one"))
        .ok();
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let handler = EngramHandler::with_options(app.clone(), config.namespace.clone(), tools);
    let server = tokio::spawn(async move {
        // The same framing as stdio: every line gets an answer.
        let (read, write) = tokio::io::split(server_end);
        let running = handler.serve(LineTransport::new(read, write)).await?;
        running.waiting().await?;
        anyhow::Ok(())
    });
    let (from_server, to_server) = tokio::io::split(client_end);
    let outcome = tokio::select! {
        r = relay(&mut stdin, from_server, to_server, rec, None) => r.map(|_| ()),
        _ = shutdown_signal() => {
            tracing::info!("signal received, stopping");
            Ok(())
        }
    };
    server.abort();
    let _ = server.await;
    // Hosts forwarding here move on to the next owner before the store closes.
    if let Some(listener) = listener {
        listener.close().await;
    }
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    outcome
}

enum Relay {
    /// The host closed stdin (and got the answers the server still gave).
    HostDone,
    /// The server closed the session: find another.
    ServerGone,
}

/// Carries the host's session to one server: replays what the server must see
/// first, then stdin → server and server → stdout, recording as it goes.
/// `drain`: how long to wait for the server's last answers once the host
/// closes stdin (`None`: until the server ends the session).
async fn relay<R, W>(
    stdin: &mut HostInput,
    from_server: R,
    mut to_server: W,
    rec: &Shared,
    drain: Option<Duration>,
) -> anyhow::Result<Relay>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (replay, swallow) = lock(rec).replay();
    // Read answers before replaying: a long replay could otherwise fill the
    // answer direction and stall both ends.
    let mut to_stdout = tokio::spawn(answers_to_stdout(from_server, rec.clone(), swallow));
    for line in replay {
        if to_server.write_all(&framed(&line)).await.is_err() {
            to_stdout.abort();
            return Ok(Relay::ServerGone);
        }
    }
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) => {
                    // Recorded before it is sent, so an answer always finds it.
                    lock(rec).sent(&line);
                    if to_server.write_all(&framed(&line)).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The host closed the session: let the server answer what it has.
                    let _ = to_server.shutdown().await;
                    match drain {
                        Some(wait) => {
                            let _ = tokio::time::timeout(wait, &mut to_stdout).await;
                        }
                        None => {
                            let _ = (&mut to_stdout).await;
                        }
                    }
                    to_stdout.abort();
                    return Ok(Relay::HostDone);
                }
            },
            _ = &mut to_stdout => return Ok(Relay::ServerGone),
        }
    }
    // Writing failed: the server is going; take the answers it still sent.
    if tokio::time::timeout(DRAIN_WAIT, &mut to_stdout)
        .await
        .is_err()
    {
        to_stdout.abort();
    }
    Ok(Relay::ServerGone)
}

/// Server → stdout, until the server closes. Swallows the answer to a replayed
/// `initialize` the host already has.
async fn answers_to_stdout<R: AsyncRead + Unpin>(
    from_server: R,
    rec: Shared,
    mut swallow: Option<String>,
) {
    let mut lines = BufReader::new(from_server).lines();
    let mut out = stdio::async_stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = response_id(line.as_bytes()) {
            if swallow.as_deref() == Some(id.as_str()) {
                swallow = None;
                continue;
            }
            lock(&rec).answered(&id);
        }
        if out.write_all(format!("{line}\n").as_bytes()).await.is_err() {
            break;
        }
        let _ = out.flush().await;
    }
}

fn parse(line: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(line).ok()
}

/// The id of a response to the client (has `id`, no `method`).
fn response_id(line: &[u8]) -> Option<String> {
    let v = parse(line)?;
    if v.get("method").is_some() {
        return None;
    }
    v.get("id").map(|id| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::Recorded;

    #[test]
    fn a_replay_resends_the_handshake_and_what_was_not_answered() {
        let mut r = Recorded::default();
        r.sent(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#);
        let (lines, swallow) = r.replay();
        assert_eq!(lines.len(), 1);
        assert_eq!(swallow, None, "the host has no answer to initialize yet");
        r.answered("0");
        r.sent(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        r.sent(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#);
        r.sent(br#"{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{}}"#);
        r.sent(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        r.sent(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#);
        r.sent(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#);
        r.answered("1");
        let (lines, swallow) = r.replay();
        assert_eq!(swallow.as_deref(), Some("0"));
        assert_eq!(lines.len(), 3, "{lines:?}");
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert!(text[0].contains("initialize"));
        assert!(text[1].contains("notifications/initialized"));
        assert!(text[2].contains(r#""id":"b""#));
        // Not UTF-8, not JSON: goes through, is not recorded.
        r.sent(b"\xff\xfe{");
        assert_eq!(r.replay().0.len(), 3);
    }
}
