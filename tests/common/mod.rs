//! The test harness, shared by every file in `tests/`.
//!
//! - [`mem`]: engram in process (`Mem`), the only door the tests use into the
//!   library's front end.
//! - this module: the real binary (`engram`, `BIN`), MCP clients of it over stdio
//!   and Streamable HTTP (rmcp's client, `TestClient`), tool calls that answer JSON
//!   (`call`, `Tools::ok` / `err` / `remember` / `recall`, `try_call`), `HttpServer`,
//!   and reading answers (`strings`, `numbers`).
//! - [`wire`]: raw JSON-RPC for tests that must send what a client library would
//!   not: lines over stdio (`RawStdio`), HTTP posts (`post`).
//! - [`pg`]: a throwaway PostgreSQL cluster (`fresh_database`), and whether the
//!   in-process suites run on it (`ENGRAM_TEST_STORE=postgres`).
//! - [`process`]: processes and their ends (`run_with_timeout`, `kill9`,
//!   `owner_pid`, `InstallLock`).
#![allow(dead_code)]

pub mod mem;
pub mod pg;
pub mod process;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ContentBlock, Implementation,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_engram");
/// Longest a server may take to say where it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
pub struct TestClient {
    pub list_changed: Arc<AtomicUsize>,
    pub notified: Arc<tokio::sync::Notify>,
    /// Root folder URIs this client offers (empty: no roots capability).
    pub roots: Vec<String>,
}

// Roots are deprecated by SEP-2577, but every current host still sends them and
// `--namespace auto` is built on them.
#[allow(deprecated)]
impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let caps = if self.roots.is_empty() {
            ClientCapabilities::default()
        } else {
            ClientCapabilities::builder().enable_roots().build()
        };
        ClientConfig::new(caps, Implementation::new("engram-tests", "0"))
    }

    async fn list_roots(
        &self,
        _ctx: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        Ok(rmcp::model::ListRootsResult::new(
            self.roots.iter().map(rmcp::model::Root::new).collect(),
        ))
    }

    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        self.list_changed.fetch_add(1, Ordering::SeqCst);
        self.notified.notify_waiters();
        self.notified.notify_one();
    }
}

pub type Client = RunningService<RoleClient, TestClient>;

/// `engram --data-dir DIR --log LEVEL ARGS`: the log level is `ENGRAM_TEST_LOG`
/// (`debug` shows what the servers do), else `warn`.
pub fn engram_std(data_dir: &Path, args: &[&str]) -> std::process::Command {
    let log = std::env::var("ENGRAM_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).arg("--log").arg(log);
    cmd.args(args);
    cmd
}

/// `engram --namespace NS token create --scope SCOPE --label LABEL MORE`: the
/// token it prints.
pub fn make_token(dir: &Path, namespace: &str, scope: &str, label: &str, more: &[&str]) -> String {
    let mut args = vec![
        "--namespace",
        namespace,
        "token",
        "create",
        "--scope",
        scope,
        "--label",
        label,
    ];
    args.extend_from_slice(more);
    let out = engram_std(dir, &args)
        .output()
        .expect("engram token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("engram_"), "{token}");
    token
}

/// [`engram_std`] for async tests.
pub fn engram(data_dir: &Path, args: &[&str]) -> Command {
    Command::from(engram_std(data_dir, args))
}

fn serve<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all
}

/// Starts `engram serve` over stdio and connects a real MCP client to it.
pub async fn stdio_client(data_dir: &Path, args: &[&str]) -> Client {
    stdio_client_with(TestClient::default(), data_dir, args).await
}

pub async fn stdio_client_with(client: TestClient, data_dir: &Path, args: &[&str]) -> Client {
    stdio_host(client, data_dir, args).await.0
}

/// `engram serve` for one host: the client and the pid of its server process.
pub async fn stdio_host(client: TestClient, data_dir: &Path, args: &[&str]) -> (Client, u32) {
    connect(client, engram(data_dir, &serve(args)), Stdio::inherit()).await
}

/// Connects `client` to the MCP server `cmd` starts (speaking stdio); its pid too.
pub async fn connect<C: ClientHandler>(
    client: C,
    cmd: Command,
    stderr: Stdio,
) -> (RunningService<RoleClient, C>, u32) {
    let shown = format!("{cmd:?}");
    let transport = TokioChildProcess::builder(cmd)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"))
        .0;
    let pid = transport.id().expect("server pid");
    let client = client
        .serve(transport)
        .await
        .unwrap_or_else(|e| panic!("initialize over stdio with {shown}: {e}"));
    (client, pid)
}

/// How a tool call failed.
#[derive(Debug)]
pub enum Failure {
    /// The transport broke (the server is gone): nothing was acknowledged.
    Transport(String),
    /// A tool error (`isError: true`): its text.
    Tool(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "transport: {e}"),
            Failure::Tool(e) => write!(f, "tool error: {e}"),
        }
    }
}

/// Calls a tool: its structured content, or how it failed.
pub async fn try_call(client: &Client, name: &str, args: Value) -> Result<Value, Failure> {
    let mut params = CallToolRequestParams::new(name.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result = client
        .call_tool(params)
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    if result.is_error == Some(true) {
        let text = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Failure::Tool(text));
    }
    let structured = result
        .structured_content
        .expect("successful calls carry structured content");
    if client
        .peer_info()
        .and_then(|s| s.server_info.clone())
        .is_some_and(|i| i.name == "engram")
    {
        same_text(name, &result.content, &structured);
    }
    Ok(structured)
}

/// engram's text block says what its structuredContent says (hosts that read
/// only text see the same answer). The reference server's does not, so only
/// engram's answers are held to it.
fn same_text(name: &str, content: &[ContentBlock], structured: &Value) {
    let texts: Vec<&str> = content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let [text] = texts[..] else {
        panic!("{name}: a successful call carries one text block, not {texts:?}");
    };
    let said: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: the text block is not JSON ({e}): {text}"));
    assert_eq!(
        &said, structured,
        "{name}: the text block and structuredContent disagree"
    );
}

/// Calls a tool; Ok(structured content) or Err(error text) for tool errors.
pub async fn call(client: &Client, name: &str, args: Value) -> Result<Value, String> {
    match try_call(client, name, args).await {
        Ok(v) => Ok(v),
        Err(Failure::Tool(text)) => Err(text),
        Err(Failure::Transport(e)) => panic!("tools/call transport: {e}"),
    }
}

/// Tool calls as methods of a client.
pub trait Tools {
    /// Calls a tool that must answer: its structured content.
    async fn ok(&self, name: &str, args: Value) -> Value;
    /// Calls a tool that must fail: its error text.
    async fn err(&self, name: &str, args: Value) -> String;

    /// `episodic_remember` with nothing but its content.
    async fn remember(&self, content: &str) -> Value {
        self.ok("episodic_remember", json!({ "content": content }))
            .await
    }

    /// `episodic_recall` with nothing but its query.
    async fn recall(&self, query: &str) -> Value {
        self.ok("episodic_recall", json!({ "query": query })).await
    }
}

impl Tools for Client {
    async fn ok(&self, name: &str, args: Value) -> Value {
        call(self, name, args)
            .await
            .unwrap_or_else(|e| panic!("{name} failed: {e}"))
    }

    async fn err(&self, name: &str, args: Value) -> String {
        match call(self, name, args).await {
            Ok(v) => panic!("{name} should have failed, answered {v}"),
            Err(e) => e,
        }
    }
}

pub async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

/// `engram serve --http 127.0.0.1:0`, killed on drop. Its stderr is kept for a
/// failure's report.
pub struct HttpServer {
    child: std::process::Child,
    pub url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The data dir, when the server has one of its own.
    _dir: Option<tempfile::TempDir>,
}

impl HttpServer {
    /// A server on `data_dir`.
    pub async fn start(data_dir: &Path, args: &[&str]) -> HttpServer {
        let data_dir = data_dir.to_path_buf();
        off_runtime(args, move |args| HttpServer::launch(&data_dir, args)).await
    }

    /// A server on a data dir of its own.
    pub async fn fresh(args: &[&str]) -> HttpServer {
        off_runtime(args, HttpServer::start_blocking).await
    }

    /// A server on a data dir of its own, for tests without a runtime.
    pub fn start_blocking(args: &[&str]) -> HttpServer {
        let dir = tempfile::tempdir().expect("temp data dir");
        let mut server = HttpServer::launch(dir.path(), args);
        server._dir = Some(dir);
        server
    }

    fn launch(data_dir: &Path, args: &[&str]) -> HttpServer {
        let mut all = vec!["serve", "--http", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = engram_std(data_dir, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn engram serve --http");
        let lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stderr.take().expect("stderr piped"),
        ));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = stderr.clone();
        // Read the listening line, then keep draining stderr so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in lines {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("engram listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                    continue;
                }
                kept.lock().unwrap().push(line);
            }
        });
        let Ok(url) = rx.recv_timeout(LISTEN_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "engram serve --http did not print `engram listening on URL` within {} s; \
                 stderr:\n{}",
                LISTEN_TIMEOUT.as_secs(),
                stderr.lock().unwrap().join("\n")
            );
        };
        HttpServer {
            child,
            url,
            stderr,
            _dir: None,
        }
    }

    /// The data dir, when the server has one of its own.
    pub fn data_dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    pub fn base(&self) -> String {
        self.url.trim_end_matches("/mcp").to_string()
    }

    /// What the server wrote to stderr so far (but the listening line).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new MCP session, optionally choosing its namespace by header.
    pub async fn client(&self, namespace: Option<&str>) -> Client {
        self.try_client(namespace)
            .await
            .expect("initialize over HTTP")
    }

    /// The same, or why the server refused it.
    pub async fn try_client(
        &self,
        namespace: Option<&str>,
    ) -> Result<Client, rmcp::service::ClientInitializeError> {
        self.try_client_as(None, namespace).await
    }

    /// A new MCP session that sends `Authorization: Bearer <token>` with every
    /// request, or why the server refused it.
    pub async fn try_client_as(
        &self,
        token: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Client, rmcp::service::ClientInitializeError> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let mut headers = std::collections::HashMap::new();
        if let Some(ns) = namespace {
            headers.insert(
                http::HeaderName::from_static("x-engram-namespace"),
                http::HeaderValue::from_str(ns).unwrap(),
            );
        }
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(self.url.clone()).custom_headers(headers);
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        TestClient::default().serve(transport).await
    }
}

/// Starts a server on the blocking pool: starting waits for its first lines.
async fn off_runtime(
    args: &[&str],
    start: impl FnOnce(&[&str]) -> HttpServer + Send + 'static,
) -> HttpServer {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || start(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("start engram --http")
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The string at `pointer` (a JSON pointer; `""`: the item itself) in every
/// item of a JSON array, e.g. `strings(&answer["hits"], "/event/id")`.
pub fn strings<'a>(items: &'a Value, pointer: &str) -> Vec<&'a str> {
    each(items, pointer, Value::as_str)
}

/// The number at `pointer` in every item of a JSON array.
pub fn numbers(items: &Value, pointer: &str) -> Vec<f64> {
    each(items, pointer, Value::as_f64)
}

fn each<'a, T>(items: &'a Value, pointer: &str, read: fn(&'a Value) -> Option<T>) -> Vec<T> {
    let values = items.as_array().and_then(|xs| {
        xs.iter()
            .map(|x| x.pointer(pointer).and_then(read))
            .collect::<Option<Vec<T>>>()
    });
    values.unwrap_or_else(|| panic!("not an array of items with {pointer:?}: {items}"))
}
