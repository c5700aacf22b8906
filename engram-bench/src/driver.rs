//! The pieces every scenario uses: the real `engram` server as a child process
//! (stdio or Streamable HTTP), real MCP client sessions (rmcp), calls timed into a
//! `Recorder`, and the mixed workload driven over a session. Nothing here knows
//! engram's internals: it speaks MCP.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::rawrpc::LineSession;
use crate::recorder::{Outcome, Recorder};
use crate::workload::{self, GRAPH_ENTITIES, Mix, Rng, entity};

pub type Client = RunningService<RoleClient, ()>;

/// A call slower than this counts as a timeout failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Session handshakes in flight at once when opening many sessions.
const MAX_OPENING_SESSIONS: usize = 64;

// ---------- the machine and the build ----------

pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// The commit the results belong to (`git describe`), if run inside the repo.
pub fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------- the server under test ----------

/// The engram binary next to this one (the same `target/<profile>/`), unless
/// told otherwise.
pub fn default_engram() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("engram")))
        .unwrap_or_else(|| PathBuf::from("engram"))
}

/// Resident and peak resident memory of a process, in KiB (Linux /proc).
pub fn rss_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    (status_kb(pid, "VmRSS:"), status_kb(pid, "VmHWM:"))
}

/// Resident memory split: (anonymous = heap and stacks, file-backed = mapped
/// files such as the search index, which the kernel can drop and re-read), KiB.
pub fn rss_split_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    (status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:"))
}

/// CPU time (user and system) a process has used so far, in seconds (Linux /proc).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold
    // spaces: the process state is field 3, utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((ticks(14)? + ticks(15)?) / per_second)
}

/// KiB as MB, for the results.
pub fn mb(kb: Option<u64>) -> Option<f64> {
    kb.map(|k| k as f64 / 1024.0)
}

fn status_kb(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// SIGKILL, as a crash would.
pub fn kill_9(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "could not kill the server (pid {pid})");
    Ok(())
}

/// Flags every server under test gets: quiet logs, no rate limit (the harness is
/// the load), and every tool unless the scenario picks its own.
fn base_args(extra: &[&str]) -> Vec<&'static str> {
    let mut args = vec!["--log", "warn", "--rate-limit", "0"];
    if !extra.contains(&"--tools") {
        args.extend(["--tools", "all"]);
    }
    args
}

/// `engram serve --http 127.0.0.1:0`, killed on drop.
pub struct HttpServer {
    child: tokio::process::Child,
    pub url: String,
    pub pid: u32,
    /// The bearer token sessions present, when the server has tokens.
    token: Option<String>,
}

impl HttpServer {
    pub async fn start(engram: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_serving(engram, data_dir, extra, &[]).await
    }

    /// [`HttpServer::start`] with options of `serve` itself (`--max-sessions N`).
    pub async fn start_serving(
        engram: &Path,
        data_dir: &Path,
        extra: &[&str],
        serve: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new(engram);
        cmd.args(base_args(extra))
            .args(extra)
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(serve)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", engram.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut said = Vec::new();
        let url = loop {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!("engram exited before listening: {}", said.join("\n"));
            };
            if let Some(u) = line.split("listening on ").nth(1) {
                break u.trim().to_string();
            }
            said.push(line);
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(HttpServer {
            child,
            url,
            pid,
            token: None,
        })
    }

    /// A server whose data dir has a write token, which every session
    /// presents: each request is authenticated.
    pub async fn start_with_token(engram: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let out = tokio::process::Command::new(engram)
            .args(["--log", "warn", "--namespace", "bench", "--data-dir"])
            .arg(data_dir)
            .args(["token", "create", "--scope", "write", "--label", "bench"])
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "engram token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = HttpServer::start(engram, data_dir, &[]).await?;
        server.token = Some(String::from_utf8(out.stdout)?.trim().to_string());
        Ok(server)
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The server's `/metrics` endpoint.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url.trim_end_matches("/mcp"))
    }

    /// GETs and parses `/metrics` (with the server's token, if it has one).
    pub async fn metrics(
        &self,
        http: &reqwest::Client,
    ) -> anyhow::Result<prometheus_parse::Scrape> {
        let mut get = http.get(self.metrics_url());
        if let Some(token) = &self.token {
            get = get.bearer_auth(token);
        }
        let text = get.send().await?.error_for_status()?.text().await?;
        Ok(prometheus_parse::Scrape::parse(
            text.lines().map(|l| Ok(l.to_string())),
        )?)
    }

    fn transport(&self) -> StreamableHttpClientTransport<reqwest::Client> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        if let Some(token) = &self.token {
            config = config.auth_header(token.clone());
        }
        StreamableHttpClientTransport::from_config(config)
    }

    pub async fn session(&self) -> anyhow::Result<Client> {
        Ok(().serve(self.transport()).await?)
    }

    /// Opens `n` sessions, at most `MAX_OPENING_SESSIONS` handshakes at a time.
    pub async fn sessions(&self, n: usize) -> Sessions {
        let gate = Arc::new(tokio::sync::Semaphore::new(MAX_OPENING_SESSIONS));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (transport, gate) = (self.transport(), gate.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                ().serve(transport).await.ok()
            });
        }
        let opened: Vec<Arc<Client>> = tasks
            .join_all()
            .await
            .into_iter()
            .flatten()
            .map(Arc::new)
            .collect();
        Sessions {
            failed_to_open: n - opened.len(),
            clients: opened,
        }
    }

    pub fn rss_kb(&self) -> (Option<u64>, Option<u64>) {
        rss_kb(self.pid)
    }

    /// CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Many sessions (with one server, or merged from several), open until `close`.
pub struct Sessions {
    clients: Vec<Arc<Client>>,
    /// Sessions whose handshake failed.
    pub failed_to_open: usize,
}

impl Sessions {
    /// The sessions of several servers as one set.
    pub fn merge(parts: Vec<Sessions>) -> Sessions {
        let mut all = Sessions {
            clients: Vec::new(),
            failed_to_open: 0,
        };
        for part in parts {
            all.clients.extend(part.clients);
            all.failed_to_open += part.failed_to_open;
        }
        all
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Starts `work(i, session)` on every session at once; each task's
    /// recorder is its result.
    pub fn spawn<F, Fut>(&self, work: F) -> tokio::task::JoinSet<Recorder>
    where
        F: Fn(usize, Arc<Client>) -> Fut,
        Fut: Future<Output = Recorder> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            tasks.spawn(work(i, c.clone()));
        }
        tasks
    }

    /// Ends every session no task holds any more.
    pub async fn close(self) {
        for c in self.clients {
            if let Ok(c) = Arc::try_unwrap(c) {
                let _ = c.cancel().await;
            }
        }
    }
}

/// One MCP session over stdio with its own `engram serve`, through rmcp's
/// client. Returns the client and the server's pid.
pub async fn stdio_session(
    engram: &Path,
    data_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(Client, u32)> {
    child_session(serve_stdio(engram, data_dir, extra), Stdio::inherit())
        .await
        .with_context(|| format!("cannot run {}", engram.display()))
}

/// One MCP session over stdio with its own `engram serve`, through the bare
/// line client: for timing a server's round trip (see `rawrpc`).
pub async fn line_session(
    engram: &Path,
    data_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<LineSession> {
    LineSession::start(serve_stdio(engram, data_dir, extra), Stdio::inherit())
        .await
        .with_context(|| format!("cannot run {}", engram.display()))
}

fn serve_stdio(engram: &Path, data_dir: &Path, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(engram);
    cmd.args(base_args(extra))
        .args(extra)
        .args(["serve", "--data-dir"])
        .arg(data_dir);
    cmd
}

/// One MCP session over the stdio of the child `cmd` starts. Returns the client
/// and the child's pid.
pub async fn child_session(
    cmd: tokio::process::Command,
    stderr: Stdio,
) -> anyhow::Result<(Client, u32)> {
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(stderr).spawn()?;
    let pid = transport
        .id()
        .ok_or_else(|| anyhow!("server exited at once"))?;
    let client = ().serve(transport).await?;
    Ok((client, pid))
}

// ---------- calls ----------

/// A session that scenarios call tools through: rmcp's client, or the bare
/// line client (`rawrpc`) where a client's own cost would blur a timing.
pub trait Caller: Sync {
    fn call_tool(&self, name: &str, args: Value) -> impl Future<Output = Outcome> + Send;
}

impl Caller for Client {
    async fn call_tool(&self, name: &str, args: Value) -> Outcome {
        let mut params = CallToolRequestParams::new(name.to_string());
        if let Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        // rmcp's own `call_tool` (it drives any follow-up rounds the server asks
        // for), not this trait's.
        match tokio::time::timeout(CALL_TIMEOUT, RunningService::call_tool(self, params)).await {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => Outcome::Transport(e.to_string()),
            Ok(Ok(r)) if r.is_error == Some(true) => Outcome::ToolError(
                r.content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Ok(Ok(r)) => Outcome::Ok(r.structured_content.unwrap_or(Value::Null)),
        }
    }
}

impl Caller for LineSession {
    async fn call_tool(&self, name: &str, args: Value) -> Outcome {
        self.call(name, args).await
    }
}

pub async fn call(client: &impl Caller, name: &str, args: Value) -> Outcome {
    client.call_tool(name, args).await
}

/// Calls `name` and records what it cost in `rec` under `class`.
pub async fn timed(
    rec: &mut Recorder,
    client: &impl Caller,
    name: &str,
    class: &'static str,
    args: Value,
) -> Outcome {
    let started = Instant::now();
    let outcome = call(client, name, args).await;
    rec.record(name, class, started.elapsed(), &outcome);
    outcome
}

/// A call that must succeed (setup steps).
pub async fn must(client: &impl Caller, name: &str, args: Value) -> anyhow::Result<Value> {
    call(client, name, args)
        .await
        .value()
        .with_context(|| format!("{name} failed"))
}

// ---------- loading data ----------

/// Writes `records` generated events in batches, reporting progress under
/// `label` every 100,000.
pub async fn load_events(
    client: &impl Caller,
    rng: &mut Rng,
    records: usize,
    label: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut written = 0;
    for n in workload::batch_sizes(records) {
        let events = workload::records(rng, n);
        must(
            client,
            "episodic_remember_batch",
            json!({ "events": events }),
        )
        .await?;
        written += n;
        if written.is_multiple_of(100_000) {
            progress(format!(
                "{label}: {written} / {records} ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// Loads the data the mixed workload reads: events, facts, and a graph of
/// `GRAPH_ENTITIES` entities in a ring with chords.
pub async fn preload(client: &impl Caller, records: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed);
    for n in workload::batch_sizes(records) {
        let events = workload::records(&mut rng, n);
        must(
            client,
            "episodic_remember_batch",
            json!({ "events": events }),
        )
        .await?;
        let facts = workload::records(&mut rng, n);
        must(client, "semantic_store_batch", json!({ "facts": facts })).await?;
    }
    let entities: Vec<Value> = (0..GRAPH_ENTITIES)
        .map(|i| json!({ "name": entity(i), "entityType": "component", "observations": [rng.words(8)] }))
        .collect();
    must(client, "create_entities", json!({ "entities": entities })).await?;
    let relations: Vec<Value> = (0..GRAPH_ENTITIES)
        .flat_map(|i| {
            [
                json!({ "from": entity(i), "to": entity((i + 1) % GRAPH_ENTITIES), "relationType": "calls" }),
                json!({ "from": entity(i), "to": entity((i * 7 + 3) % GRAPH_ENTITIES), "relationType": "depends_on" }),
            ]
        })
        .collect();
    must(
        client,
        "create_relations",
        json!({ "relations": relations }),
    )
    .await?;
    Ok(())
}

// ---------- the mixed workload ----------

/// Runs the mixed workload on `client` until `until` or `max_calls` calls:
/// closed loop (next call when the last answers) or open loop at `rate` calls/s
/// (latency measured from when each call was due, so a stalled server is not
/// hidden).
pub async fn drive(
    client: &Client,
    mix: Mix,
    seed: u64,
    until: Instant,
    rate: Option<f64>,
    max_calls: Option<u64>,
) -> Recorder {
    let mut rng = Rng(seed);
    let mut rec = Recorder::default();
    let start = Instant::now();
    let mut k: u64 = 0;
    while Instant::now() < until && max_calls.is_none_or(|m| k < m) {
        let due = match rate {
            Some(r) => {
                let due = start + Duration::from_secs_f64(k as f64 / r);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        k += 1;
        let (op, args, class) = workload::next_call(&mut rng, mix);
        let outcome = call(client, op, args).await;
        rec.record(op, class, due.elapsed(), &outcome);
    }
    rec
}

/// Progress for long runs, on stderr.
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("engram-bench: {}", msg.as_ref());
}
