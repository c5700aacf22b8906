//! Raw JSON-RPC, for tests that must send what a client library would not:
//! newline-delimited lines over `engram serve`'s stdio, and bare HTTP posts.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{engram, serve};

/// Longest a test waits for one line from the server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// An `initialize` request at protocol 2025-11-25.
pub fn initialize_request(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "0"}}})
}

/// The text of a tool error (`isError: true`); fails on anything else.
pub fn tool_error(result: &Value) -> String {
    assert_eq!(result["isError"], true, "expected a tool error: {result}");
    result["content"][0]["text"].as_str().unwrap().to_string()
}

/// A raw newline-delimited JSON-RPC conversation with `engram serve` on stdio.
pub struct RawStdio {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl RawStdio {
    /// `engram serve ARGS` with nothing said yet.
    pub fn spawn(dir: &Path, args: &[&str]) -> RawStdio {
        let mut child = engram(dir, &serve(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn engram");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        RawStdio {
            child,
            stdin,
            stdout,
        }
    }

    /// `engram serve ARGS` after the `initialize` handshake (2025-11-25).
    pub async fn start(dir: &Path, args: &[&str]) -> RawStdio {
        let mut raw = RawStdio::spawn(dir, args);
        let init = raw.request(initialize_request(0)).await;
        assert!(init.get("result").is_some(), "{init}");
        raw.send_line(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        raw
    }

    pub async fn send_line(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next line the server writes, as JSON.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(ANSWER_TIMEOUT, self.stdout.next_line())
            .await
            .expect("no answer within 20 s")
            .expect("read stdout")
            .expect("engram closed stdout");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {line}"))
    }

    /// Sends a message and reads the next line.
    pub async fn request(&mut self, msg: Value) -> Value {
        self.send_line(msg.to_string().as_bytes()).await;
        self.next().await
    }

    /// `tools/call`: the result of the answer with this `id`.
    pub async fn tool(&mut self, id: i64, name: &str, arguments: Value) -> Value {
        let answer = self
            .request(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                            "params": {"name": name, "arguments": arguments}}))
            .await;
        assert_eq!(answer["id"], id, "{answer}");
        answer["result"].clone()
    }

    /// Closes stdin and waits for the server to exit.
    pub async fn close(mut self) {
        drop(self.stdin);
        let _ = self.child.wait().await;
    }
}

/// POSTs `body` as JSON-RPC (with `headers` besides the usual two): the status and body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}
