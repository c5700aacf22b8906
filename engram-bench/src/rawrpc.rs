//! An MCP session over a child's stdio with no client library in between: a
//! request is one line out, its answer the line that comes back with its id.
//!
//! For the scenarios that time one server's round trip over stdio (the query
//! cache, the Rust peer). rmcp's client routes every call through tasks and
//! channels of its own, which on this machine cost about 0.13 ms a cache hit
//! (0.30 ms p50 through it, 0.17 ms through this client) and 0.05 to 0.10 ms a
//! graph call (medians of four alternating runs). The answers are checked as
//! rmcp's client checks them: a JSON-RPC error or a tool error is a failure,
//! not a result.
//!
//! Calls go one at a time: a session shared by several tasks makes them queue
//! for it, and the queueing is in their times. Give each timed task a session
//! of its own.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::driver::CALL_TIMEOUT;
use crate::recorder::Outcome;

/// How long the server may take to answer `initialize`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct LineSession {
    child: Child,
    pipes: Mutex<Pipes>,
    pid: u32,
}

struct Pipes {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// A request was cut off (its call timed out) while being written: what
    /// follows it on the pipe would be read as the rest of its line.
    broken: bool,
}

impl LineSession {
    /// Starts `cmd` with piped stdin and stdout and opens the MCP session
    /// (`initialize`, then `notifications/initialized`).
    pub async fn start(mut cmd: Command, stderr: Stdio) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let session = LineSession {
            child,
            pipes: Mutex::new(Pipes {
                stdin,
                stdout: BufReader::new(stdout).lines(),
                next_id: 0,
                broken: false,
            }),
            pid,
        };
        let params = json!({
            "protocolVersion": ProtocolVersion::LATEST_WITH_INITIALIZE,
            "capabilities": {},
            "clientInfo": { "name": "engram-bench", "version": env!("CARGO_PKG_VERSION") },
        });
        tokio::time::timeout(START_TIMEOUT, session.request("initialize", params))
            .await
            .context("no answer to initialize")??;
        let mut pipes = session.pipes.lock().await;
        send(
            &mut pipes.stdin,
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        )
        .await?;
        drop(pipes);
        Ok(session)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one request and waits for its answer's `result`. Lines that are
    /// not its answer (notifications, requests from the server) are passed
    /// over: nothing this client does invites them.
    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let mut pipes = self.pipes.lock().await;
        if pipes.broken {
            return Err(anyhow!(
                "an earlier request was cut off while being written"
            ));
        }
        pipes.next_id += 1;
        let id = pipes.next_id;
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        // Cleared only if the whole line went out: a call that times out
        // mid-write leaves it set.
        pipes.broken = true;
        send(&mut pipes.stdin, &message).await?;
        pipes.broken = false;
        loop {
            let line = pipes
                .stdout
                .next_line()
                .await?
                .ok_or_else(|| anyhow!("the server closed its stdout"))?;
            let mut answer: Value = serde_json::from_str(&line)
                .with_context(|| format!("not JSON on the server's stdout: {line}"))?;
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(anyhow!("{method}: JSON-RPC error {error}"));
            }
            return answer
                .get_mut("result")
                .map(Value::take)
                .ok_or_else(|| anyhow!("{method}: an answer with neither result nor error"));
        }
    }

    /// Calls the tool `name`, as `driver::call` does through rmcp's client.
    pub async fn call(&self, name: &str, args: Value) -> Outcome {
        let params = json!({ "name": name, "arguments": args });
        match tokio::time::timeout(CALL_TIMEOUT, self.request("tools/call", params)).await {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => Outcome::Transport(e.to_string()),
            Ok(Ok(result)) if result["isError"] == true => Outcome::ToolError(
                result["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Ok(Ok(mut result)) => Outcome::Ok(
                result
                    .get_mut("structuredContent")
                    .map(Value::take)
                    .unwrap_or(Value::Null),
            ),
        }
    }

    /// Closes the server's stdin (an MCP server's cue to exit) and waits for it.
    pub async fn close(self) {
        drop(self.pipes.into_inner());
        let mut child = self.child;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

async fn send(stdin: &mut ChildStdin, message: &Value) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    stdin.write_all(&line).await?;
    stdin.flush().await?;
    Ok(())
}
