//! Helpers shared by the end-to-end tests: the real binary, a real MCP client.
#![allow(dead_code)]

pub mod mem;
pub mod process;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_engram");

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

pub fn engram(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir).arg("--log").arg("warn");
    cmd.args(args);
    cmd
}

/// Starts `engram serve` over stdio and connects a real MCP client to it.
pub async fn stdio_client(data_dir: &Path, args: &[&str]) -> Client {
    stdio_client_with(TestClient::default(), data_dir, args).await
}

pub async fn stdio_client_with(client: TestClient, data_dir: &Path, args: &[&str]) -> Client {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let transport = TokioChildProcess::builder(engram(data_dir, &all))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn engram")
        .0;
    client
        .serve(transport)
        .await
        .expect("initialize over stdio")
}

/// Calls a tool; Ok(structured content) or Err(error text) for tool errors.
pub async fn call(client: &Client, name: &str, args: Value) -> Result<Value, String> {
    let mut params = CallToolRequestParams::new(name.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result = client
        .call_tool(params)
        .await
        .expect("tools/call transport");
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    if result.is_error == Some(true) {
        Err(text)
    } else {
        Ok(result
            .structured_content
            .expect("successful calls carry structured content"))
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

/// `engram serve --http 127.0.0.1:0`, killed on drop.
pub struct HttpServer {
    pub child: Child,
    pub url: String,
}

impl HttpServer {
    pub async fn start(data_dir: &Path, args: &[&str]) -> HttpServer {
        let mut all = vec!["serve", "--http", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = engram(data_dir, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn engram --http");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next_line()
                .await
                .expect("read stderr")
                .expect("engram exited before listening");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        HttpServer { child, url }
    }

    pub fn base(&self) -> String {
        self.url.trim_end_matches("/mcp").to_string()
    }

    /// A new MCP session, optionally choosing its namespace by header.
    pub async fn client(&self, namespace: Option<&str>) -> Client {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let mut headers = std::collections::HashMap::new();
        if let Some(ns) = namespace {
            headers.insert(
                http::HeaderName::from_static("x-engram-namespace"),
                http::HeaderValue::from_str(ns).unwrap(),
            );
        }
        let config =
            StreamableHttpClientTransportConfig::with_uri(self.url.clone()).custom_headers(headers);
        let transport = StreamableHttpClientTransport::from_config(config);
        TestClient::default()
            .serve(transport)
            .await
            .expect("initialize over HTTP")
    }
}
