//! Load driver: measures engram through the real transports, as hosts use it.
//!
//! `cargo bench --bench load -- stdio --events 10000` preloads N events over
//! stdio, then times sequential `episodic_remember` and `episodic_recall` calls.
//! `cargo bench --bench load -- http --sessions 1,8,64 --seconds 5` runs that many
//! concurrent MCP sessions over Streamable HTTP, each remembering in a closed
//! loop, and reports throughput (group commit at work) and latency.
//! Percentiles come from HdrHistogram (microseconds). Results also go to
//! `bench-results/<mode>-<unix time>.json`. Nothing here asserts a speed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_engram");
const WORDS: &[&str] = &[
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
    "bug",
    "fix",
    "test",
    "flaky",
    "build",
    "pipeline",
    "docker",
    "kernel",
    "network",
    "dns",
    "certificate",
    "password",
    "user",
];

/// xorshift64*: deterministic, dependency-free text generation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

type Client = RunningService<RoleClient, ()>;

async fn call(client: &Client, name: &str, args: Value) -> Value {
    let Value::Object(map) = args else {
        unreachable!()
    };
    let r = client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(map))
        .await
        .expect("transport");
    assert_ne!(r.is_error, Some(true), "{name} failed: {:?}", r.content);
    r.structured_content.unwrap_or(Value::Null)
}

fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p95_us": h.value_at_quantile(0.95),
        "p99_us": h.value_at_quantile(0.99),
        "max_us": h.max(),
    })
}

fn row(label: &str, h: &Histogram<u64>) -> String {
    format!(
        "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.95) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn stdio(dir: &Path, args: &[String]) -> Value {
    let events: usize = arg(args, "--events", 10_000);
    let samples: usize = arg(args, "--samples", 1000);
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["--log", "warn", "--tools", "all", "serve", "--data-dir"])
        .arg(dir);
    let transport = TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
        .0;
    let client = ().serve(transport).await.unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let started = Instant::now();
    let mut loaded = 0;
    while loaded < events {
        let n = (events - loaded).min(1000);
        let batch: Vec<Value> = (0..n)
            .map(|_| json!({"content": rng.sentence(12)}))
            .collect();
        call(&client, "episodic_remember_batch", json!({"events": batch})).await;
        loaded += n;
    }
    eprintln!(
        "preloaded {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut remember = hist();
    let mut recall = hist();
    for _ in 0..samples {
        let content = rng.sentence(12);
        let t = Instant::now();
        call(&client, "episodic_remember", json!({"content": content})).await;
        remember.record(t.elapsed().as_micros() as u64).unwrap();
    }
    for _ in 0..samples {
        let query = rng.sentence(3);
        let t = Instant::now();
        call(
            &client,
            "episodic_recall",
            json!({"query": query, "limit": 10}),
        )
        .await;
        recall.record(t.elapsed().as_micros() as u64).unwrap();
    }
    client.cancel().await.unwrap();
    println!("\nstdio, {events} events preloaded (latency in ms)\n");
    println!("| operation | calls | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|");
    println!("{}", row("episodic_remember", &remember));
    println!("{}", row("episodic_recall", &recall));
    json!({"events": events, "remember": summary(&remember), "recall": summary(&recall)})
}

async fn http(dir: &Path, args: &[String]) -> Value {
    let sessions: String = arg(args, "--sessions", "1,8,64".to_string());
    let seconds: u64 = arg(args, "--seconds", 5);
    let durability: String = arg(args, "--durability", "full".to_string());
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--log",
            "warn",
            "--durability",
            &durability,
            "serve",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next_line().await.unwrap().expect("server exited");
        if let Some(u) = line.split("listening on ").nth(1) {
            break u.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut results = Vec::new();
    println!(
        "\nHTTP, episodic_remember in a closed loop for {seconds}s per rung, durability {durability} (latency in ms)\n"
    );
    println!(
        "| sessions | remembers | ops/s | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|---|"
    );
    for n in sessions
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(
                ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
                    .await
                    .unwrap(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, client) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x1234_5678 + i as u64);
                let mut h = hist();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    call(
                        &client,
                        "episodic_remember",
                        json!({"content": rng.sentence(12)}),
                    )
                    .await;
                    h.record(t.elapsed().as_micros() as u64).unwrap();
                }
                let _ = client.cancel().await;
                h
            }));
        }
        let mut all = hist();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = all.len() as f64 / elapsed;
        println!(
            "| {n} | {} | {rate:.0} | {:.3} | {:.3} | {:.3} | {:.3} |",
            all.len(),
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.95) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            all.max() as f64 / 1000.0
        );
        results.push(json!({"sessions": n, "ops_per_s": rate, "remember": summary(&all)}));
    }
    let _ = child.kill().await;
    json!({"durability": durability, "seconds": seconds, "rungs": results})
}

#[tokio::main]
async fn main() {
    // cargo bench passes `--bench`; ignore flags we do not know.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().cloned().unwrap_or_default();
    if !matches!(mode.as_str(), "stdio" | "http") {
        eprintln!(
            "usage: cargo bench --bench load -- stdio [--events N] [--samples N]\n       \
             cargo bench --bench load -- http [--sessions 1,8,64] [--seconds S] [--durability full|normal]"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let result = match mode.as_str() {
        "stdio" => stdio(dir.path(), &args).await,
        _ => http(dir.path(), &args).await,
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = json!({
        "mode": mode,
        "args": args,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "result": result,
    });
    std::fs::create_dir_all("bench-results").unwrap();
    let path = format!("bench-results/{mode}-{stamp}.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {path}");
}
