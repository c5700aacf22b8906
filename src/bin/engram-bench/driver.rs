//! The pieces every scenario uses: the real `engram` server as a child process
//! (stdio or Streamable HTTP), real MCP client sessions (rmcp), a workload
//! generator, and a recorder with one HdrHistogram per operation and failures
//! counted by kind. Nothing here knows engram's internals: it speaks MCP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

pub type Client = RunningService<RoleClient, ()>;

/// A call slower than this counts as a timeout failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The engram binary next to this one (same build), unless told otherwise.
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

fn status_kb(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
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
}

impl HttpServer {
    pub async fn start(engram: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new(engram);
        cmd.args(base_args(extra))
            .args(extra)
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
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
        let url = loop {
            let line = lines
                .next_line()
                .await?
                .ok_or_else(|| anyhow!("engram exited before listening"))?;
            if let Some(u) = line.split("listening on ").nth(1) {
                break u.trim().to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(HttpServer { child, url, pid })
    }

    pub async fn session(&self) -> anyhow::Result<Client> {
        Ok(
            ().serve(StreamableHttpClientTransport::from_uri(self.url.clone()))
                .await?,
        )
    }

    pub fn rss_kb(&self) -> (Option<u64>, Option<u64>) {
        rss_kb(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One MCP session over stdio with its own `engram serve`. Returns the client
/// and the server's pid.
pub async fn stdio_session(
    engram: &Path,
    data_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(Client, u32)> {
    let mut cmd = tokio::process::Command::new(engram);
    cmd.args(base_args(extra))
        .args(extra)
        .args(["serve", "--data-dir"])
        .arg(data_dir);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", engram.display()))?;
    let pid = transport
        .id()
        .ok_or_else(|| anyhow!("server exited at once"))?;
    let client = ().serve(transport).await?;
    Ok((client, pid))
}

// ---------- calls and what they cost ----------

pub enum Outcome {
    Ok(Value),
    /// The server answered with a tool error (isError).
    ToolError(String),
    /// The transport or protocol failed.
    Transport(String),
    Timeout,
}

impl Outcome {
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::ToolError(_) => Some("tool_error"),
            Outcome::Transport(_) => Some("transport"),
            Outcome::Timeout => Some("timeout"),
        }
    }

    pub fn value(self) -> anyhow::Result<Value> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::ToolError(e) => Err(anyhow!("tool error: {e}")),
            Outcome::Transport(e) => Err(anyhow!("transport: {e}")),
            Outcome::Timeout => Err(anyhow!("timed out")),
        }
    }
}

pub async fn call(client: &Client, name: &str, args: Value) -> Outcome {
    let mut params = CallToolRequestParams::new(name.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    match tokio::time::timeout(CALL_TIMEOUT, client.call_tool(params)).await {
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

/// A call that must succeed (setup steps).
pub async fn must(client: &Client, name: &str, args: Value) -> anyhow::Result<Value> {
    call(client, name, args)
        .await
        .value()
        .with_context(|| format!("{name} failed"))
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Latency percentiles of a histogram of microseconds, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// Latencies per operation and per class, and failures by kind.
#[derive(Default)]
pub struct Recorder {
    pub ops: BTreeMap<String, Histogram<u64>>,
    pub classes: BTreeMap<&'static str, Histogram<u64>>,
    pub failures: BTreeMap<&'static str, u64>,
    /// The first message of each failure kind, to say what went wrong.
    pub examples: BTreeMap<&'static str, String>,
    pub ok: u64,
}

impl Recorder {
    pub fn record(&mut self, op: &str, class: &'static str, elapsed: Duration, outcome: &Outcome) {
        let us = elapsed.as_micros().max(1) as u64;
        match outcome.kind() {
            None => {
                self.ok += 1;
                let _ = self
                    .ops
                    .entry(op.to_string())
                    .or_insert_with(histogram)
                    .record(us);
                let _ = self
                    .classes
                    .entry(class)
                    .or_insert_with(histogram)
                    .record(us);
            }
            Some(kind) => {
                *self.failures.entry(kind).or_default() += 1;
                if let Outcome::ToolError(m) | Outcome::Transport(m) = outcome {
                    self.examples
                        .entry(kind)
                        .or_insert_with(|| m.chars().take(200).collect());
                }
            }
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        for (k, h) in other.ops {
            let _ = self.ops.entry(k).or_insert_with(histogram).add(h);
        }
        for (k, h) in other.classes {
            let _ = self.classes.entry(k).or_insert_with(histogram).add(h);
        }
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
        for (k, m) in other.examples {
            self.examples.entry(k).or_insert(m);
        }
        self.ok += other.ok;
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn to_json(&self, seconds: f64) -> Value {
        let total = self.ok + self.failed();
        json!({
            "calls": total,
            "ok": self.ok,
            "failed": self.failed(),
            "failure_rate": if total == 0 { 0.0 } else { self.failed() as f64 / total as f64 },
            "failures": self.failures,
            "failure_examples": self.examples,
            "seconds": seconds,
            "throughput_per_s": if seconds > 0.0 { self.ok as f64 / seconds } else { 0.0 },
            "classes": self.classes.iter().map(|(k, h)| (k.to_string(), summary(h))).collect::<BTreeMap<_, _>>(),
            "operations": self.ops.iter().map(|(k, h)| (k.clone(), summary(h))).collect::<BTreeMap<_, _>>(),
        })
    }
}

// ---------- generated data and workloads ----------

/// xorshift64*: a seeded generator is all a workload needs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub const WORDS: &[&str] = &[
    "deploy",
    "staging",
    "postgres",
    "redis",
    "cache",
    "latency",
    "customer",
    "invoice",
    "billing",
    "search",
    "index",
    "migration",
    "rollback",
    "incident",
    "alert",
    "kafka",
    "schema",
    "backup",
    "token",
    "session",
    "timeout",
    "retry",
    "queue",
    "worker",
    "cluster",
    "node",
    "memory",
    "leak",
    "profile",
    "release",
    "feature",
    "flag",
    "review",
    "design",
    "meeting",
    "budget",
    "roadmap",
    "kernel",
    "network",
    "certificate",
    "password",
    "dashboard",
    "replica",
    "failover",
    "quota",
    "tenant",
    "webhook",
    "scheduler",
    "pipeline",
    "artifact",
];

/// Entities the workload's graph operations refer to.
pub const GRAPH_ENTITIES: usize = 200;

pub fn entity(i: usize) -> String {
    format!("entity-{i}")
}

/// Loads the data the mixed workload reads: events, facts, and a graph of
/// `GRAPH_ENTITIES` entities in a ring with chords.
pub async fn preload(client: &Client, records: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed);
    let mut left = records;
    while left > 0 {
        let n = left.min(1000);
        let events: Vec<Value> = (0..n)
            .map(|_| json!({ "content": rng.words(12) }))
            .collect();
        must(
            client,
            "episodic_remember_batch",
            json!({ "events": events }),
        )
        .await?;
        let facts: Vec<Value> = (0..n)
            .map(|_| json!({ "content": rng.words(12) }))
            .collect();
        must(client, "semantic_store_batch", json!({ "facts": facts })).await?;
        left -= n;
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

/// How a mixed workload splits its calls, in percent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    pub read: u32,
    pub write: u32,
    pub complex: u32,
}

impl Mix {
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let parts: Vec<u32> = s
            .split(['/', ','])
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()
            .context("--mix takes read/write/complex percentages, e.g. 70/20/10")?;
        match parts[..] {
            [read, write, complex] if read + write + complex == 100 => Ok(Mix {
                read,
                write,
                complex,
            }),
            _ => Err(anyhow!(
                "--mix must be three percentages adding up to 100, e.g. 70/20/10"
            )),
        }
    }
}

/// The next call of a mixed workload: (operation, arguments, class).
pub fn next_call(rng: &mut Rng, mix: Mix) -> (&'static str, Value, &'static str) {
    let roll = rng.below(100) as u32;
    if roll < mix.read {
        match rng.below(4) {
            0 => (
                "episodic_recall",
                json!({ "query": rng.words(2), "limit": 10 }),
                "read",
            ),
            1 => (
                "semantic_search",
                json!({ "query": rng.words(2), "limit": 10 }),
                "read",
            ),
            2 => (
                "open_nodes",
                json!({ "names": [entity(rng.below(GRAPH_ENTITIES))] }),
                "read",
            ),
            _ => (
                "search_nodes",
                json!({ "query": rng.words(1), "limit": 10 }),
                "read",
            ),
        }
    } else if roll < mix.read + mix.write {
        match rng.below(3) {
            0 => (
                "episodic_remember",
                json!({ "content": rng.words(12) }),
                "write",
            ),
            1 => (
                "semantic_store",
                json!({ "content": rng.words(12) }),
                "write",
            ),
            _ => (
                "add_observations",
                json!({ "observations": [{ "entityName": entity(rng.below(GRAPH_ENTITIES)), "contents": [rng.words(6)] }] }),
                "write",
            ),
        }
    } else {
        match rng.below(2) {
            0 => (
                "memory_search",
                json!({ "query": rng.words(3), "limit": 50 }),
                "complex",
            ),
            _ => (
                "graph_neighbors",
                json!({ "name": entity(rng.below(GRAPH_ENTITIES)), "depth": 3 }),
                "complex",
            ),
        }
    }
}

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
        let (op, args, class) = next_call(&mut rng, mix);
        let outcome = call(client, op, args).await;
        rec.record(op, class, due.elapsed(), &outcome);
    }
    rec
}

/// Progress for long runs, on stderr.
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("engram-bench: {}", msg.as_ref());
}
