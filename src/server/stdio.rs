//! MCP over stdio: one session per process. stdout carries only the protocol;
//! logs go to stderr.
//!
//! The framing is engram's own ([`LineTransport`]), not rmcp's: rmcp's codec
//! drops a line it cannot parse without answering, and the client then waits
//! for ever. Here every line gets an answer (see `jsonrpc.rs`), lines are
//! bounded, and answers are written by one writer task in order.

use std::io::{Cursor, Read, Write};
use std::marker::PhantomData;

use rmcp::RoleServer;
use rmcp::ServiceExt;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::StreamReader;

use super::jsonrpc::{self, Incoming};
use super::{EngramHandler, shutdown_signal};
use crate::pipeline::Engine;

/// Longest message line read (a larger one is answered with an error and
/// skipped up to its newline, never buffered whole).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Answers waiting for the writer before senders wait.
const OUTBOX: usize = 256;
/// Chunks of stdin read ahead of the parser.
const INBOX: usize = 16;

/// Serves one MCP session on stdin/stdout until the client closes it or the
/// process is signalled, then commits everything and returns.
pub async fn serve(app: Engine) -> anyhow::Result<()> {
    // Other engram processes started on this data dir forward their sessions here.
    let listener = super::local::spawn_listener(app.clone())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot serve the local socket; other processes cannot share this data dir"))
        .ok();
    let handler = EngramHandler::new(app.clone());
    let transport = LineTransport::stdio()?;
    let service = handler.serve(transport).await?;
    tokio::select! {
        result = service.waiting() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "stdio session ended with an error");
            }
        }
        _ = shutdown_signal() => tracing::info!("signal received, stopping"),
    }
    // Forwarded sessions move to the next owner before the store closes.
    if let Some(listener) = listener {
        listener.close().await;
    }
    tokio::task::spawn_blocking(move || app.shutdown()).await?;
    Ok(())
}

/// Newline-delimited JSON-RPC over a byte stream, answering what rmcp cannot
/// parse. Used for stdio and for sessions forwarded over the local socket.
pub struct LineTransport<R> {
    read: BufReader<R>,
    line: Vec<u8>,
    /// Inside an over-long line: skip to its newline.
    skipping: bool,
    /// An error answer not yet handed to the writer (kept across cancellation).
    pending: Option<Vec<u8>>,
    outbox: mpsc::Sender<Vec<u8>>,
    /// Resolves when the writer has written and flushed everything queued.
    written: Option<oneshot::Receiver<()>>,
    _role: PhantomData<fn() -> RoleServer>,
}

/// stdin as the transport reads it.
type Stdin = Box<dyn AsyncRead + Send + Unpin>;

impl LineTransport<Stdin> {
    /// The process's stdin and stdout. A pipe or a socket (what hosts spawn
    /// servers with) is read and written by the runtime itself, non-blocking:
    /// the worker that parks in epoll wakes on the client's message, and the
    /// answer leaves in a write(2) from the same runtime. Anything else (a
    /// terminal, a file, /dev/null) is served by a thread of its own that
    /// blocks in read(2) / write(2); tokio's `Stdin` and `Stdout` would run every
    /// read and write on the blocking pool instead, a hand-off there and back
    /// for each message.
    pub fn stdio() -> std::io::Result<Self> {
        let read: Stdin = match nonblocking::stdin() {
            Some(read) => read,
            None => {
                let (chunks, mut inbox) = mpsc::channel::<std::io::Result<Cursor<Vec<u8>>>>(INBOX);
                std::thread::Builder::new()
                    .name("engram-stdin".into())
                    .spawn(move || read_stdin(chunks))?;
                Box::new(StreamReader::new(futures::stream::poll_fn(move |cx| {
                    inbox.poll_recv(cx)
                })))
            }
        };
        if let Some(write) = nonblocking::stdout() {
            return Ok(LineTransport::new(read, write));
        }
        let (outbox, lines) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let (written, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("engram-stdout".into())
            .spawn(move || write_stdout(lines, written))?;
        Ok(LineTransport::with_writer(read, outbox, done))
    }
}

/// stdin and stdout as the runtime's own non-blocking pipes or sockets.
///
/// `O_NONBLOCK` is a property of the open file description, which the process
/// shares with whoever else holds it. A host's pipe or socket to its server is
/// the server's alone, so it is set there, and left set at exit. stdout is not
/// taken when stderr is the same pipe (`2>&1`): logs would then meet a
/// non-blocking pipe and could be lost when it fills.
#[cfg(unix)]
mod nonblocking {
    use std::fs::{File, Metadata};
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::UnixStream;
    use tokio::net::unix::pipe;

    /// stdin, if it is a pipe or a socket.
    pub(super) fn stdin() -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        let fd = own(std::io::stdin().as_fd())?;
        match Kind::of(&metadata(&fd)?)? {
            Kind::Pipe => Some(Box::new(pipe::Receiver::from_owned_fd(fd).ok()?)),
            Kind::Socket => Some(Box::new(socket(fd)?)),
        }
    }

    /// stdout, if it is a pipe or a socket that stderr is not also writing to.
    pub(super) fn stdout() -> Option<Box<dyn AsyncWrite + Send + Unpin>> {
        let fd = own(std::io::stdout().as_fd())?;
        let out = metadata(&fd)?;
        let kind = Kind::of(&out)?;
        let shared_with_stderr = own(std::io::stderr().as_fd())
            .and_then(|err| metadata(&err))
            .is_some_and(|err| (err.dev(), err.ino()) == (out.dev(), out.ino()));
        if shared_with_stderr {
            return None;
        }
        match kind {
            Kind::Pipe => Some(Box::new(pipe::Sender::from_owned_fd(fd).ok()?)),
            Kind::Socket => Some(Box::new(socket(fd)?)),
        }
    }

    enum Kind {
        Pipe,
        Socket,
    }

    impl Kind {
        fn of(file: &Metadata) -> Option<Kind> {
            let kind = file.file_type();
            if kind.is_fifo() {
                Some(Kind::Pipe)
            } else if kind.is_socket() {
                Some(Kind::Socket)
            } else {
                None
            }
        }
    }

    /// A descriptor of our own for the same open file (closing it leaves the
    /// standard stream open).
    fn own(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
        fd.try_clone_to_owned().ok()
    }

    fn metadata(fd: &OwnedFd) -> Option<Metadata> {
        File::from(fd.try_clone().ok()?).metadata().ok()
    }

    fn socket(fd: OwnedFd) -> Option<UnixStream> {
        let socket = std::os::unix::net::UnixStream::from(fd);
        socket.set_nonblocking(true).ok()?;
        UnixStream::from_std(socket).ok()
    }
}

#[cfg(not(unix))]
mod nonblocking {
    use tokio::io::{AsyncRead, AsyncWrite};

    pub(super) fn stdin() -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        None
    }

    pub(super) fn stdout() -> Option<Box<dyn AsyncWrite + Send + Unpin>> {
        None
    }
}

/// stdin for code that reads it on the runtime: the runtime's own pipe or
/// socket where it can be (see [`LineTransport::stdio`]), else tokio's.
pub(super) fn async_stdin() -> Stdin {
    nonblocking::stdin().unwrap_or_else(|| Box::new(tokio::io::stdin()))
}

/// stdout for code that writes it on the runtime, as [`async_stdin`].
pub(super) fn async_stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    nonblocking::stdout().unwrap_or_else(|| Box::new(tokio::io::stdout()))
}

/// Reads stdin until its end (or an error, passed on), chunk by chunk.
fn read_stdin(chunks: mpsc::Sender<std::io::Result<Cursor<Vec<u8>>>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let chunk = match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => Ok(Cursor::new(buf[..n].to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        let failed = chunk.is_err();
        if chunks.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

/// Writes each queued answer to stdout, flushing when nothing else is queued
/// (one write(2) per burst).
fn write_stdout(mut lines: mpsc::Receiver<Vec<u8>>, written: oneshot::Sender<()>) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    while let Some(line) = lines.blocking_recv() {
        if out.write_all(&line).is_err() || (lines.is_empty() && out.flush().is_err()) {
            break;
        }
    }
    let _ = out.flush();
    let _ = written.send(());
}

impl<R: AsyncRead + Send + Unpin + 'static> LineTransport<R> {
    /// Reads `read` and writes `write` (a socket, a pipe) on the runtime.
    pub fn new<W: AsyncWrite + Send + Unpin + 'static>(read: R, write: W) -> Self {
        let (outbox, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let (written, done) = oneshot::channel();
        tokio::spawn(async move {
            let mut write = write;
            while let Some(line) = rx.recv().await {
                if write.write_all(&line).await.is_err() {
                    break;
                }
                // Flush when nothing else is queued: one syscall per burst.
                if rx.is_empty() && write.flush().await.is_err() {
                    break;
                }
            }
            let _ = write.flush().await;
            let _ = written.send(());
        });
        LineTransport::with_writer(read, outbox, done)
    }

    fn with_writer(read: R, outbox: mpsc::Sender<Vec<u8>>, written: oneshot::Receiver<()>) -> Self {
        LineTransport {
            read: BufReader::new(read),
            line: Vec::new(),
            skipping: false,
            pending: None,
            outbox,
            written: Some(written),
            _role: PhantomData,
        }
    }

    /// Reads up to the next newline into `self.line`. Cancel-safe: bytes read
    /// stay in `self.line` until a whole line is there. `None` at end of input.
    /// `Some(false)`: the line was over [`MAX_LINE_BYTES`] and was skipped.
    async fn read_line(&mut self) -> Option<bool> {
        loop {
            let (used, done) = {
                let buf = match self.read.fill_buf().await {
                    Ok(buf) => buf,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the client's messages");
                        return None;
                    }
                };
                if buf.is_empty() {
                    // A last message without its newline still counts.
                    let last = !self.line.is_empty() && !self.skipping;
                    return last.then_some(true);
                }
                let newline = buf.iter().position(|&b| b == b'\n');
                let take = newline.map_or(buf.len(), |i| i + 1);
                if !self.skipping {
                    self.line.extend_from_slice(&buf[..take]);
                }
                (take, newline.is_some())
            };
            self.read.consume(used);
            if self.line.len() > MAX_LINE_BYTES {
                self.line.clear();
                if !done {
                    self.skipping = true;
                }
                return Some(false);
            }
            if done {
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                return Some(true);
            }
        }
    }
}

fn encode(value: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("JSON-RPC messages serialize");
    bytes.push(b'\n');
    bytes
}

impl<R: AsyncRead + Send + Unpin + 'static> Transport<RoleServer> for LineTransport<R> {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outbox = self.outbox.clone();
        async move {
            outbox
                .send(encode(&item))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotConnected, "closed"))
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if let Some(answer) = self.pending.take() {
                match self.outbox.reserve().await {
                    Ok(permit) => permit.send(answer),
                    Err(_) => return None,
                }
            }
            if !self.read_line().await? {
                self.pending = Some(encode(&jsonrpc::error(
                    serde_json::Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    format!("Invalid Request: the message is longer than {MAX_LINE_BYTES} bytes"),
                )));
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let mut bytes = line.as_slice();
            bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match jsonrpc::read(bytes) {
                Incoming::Message(message) => return Some(*message),
                Incoming::Reply(answer) => self.pending = Some(encode(&answer)),
                Incoming::Drop(why) => tracing::debug!(why, "dropped a malformed message"),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // Let the writer finish what is queued, then stop.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.outbox, closed));
        if let Some(written) = self.written.take() {
            let _ = written.await;
        }
        Ok(())
    }
}
