//! The nine graph tools, engram side by side with the reference memory server
//! (`@modelcontextprotocol/server-memory`), through the same MCP client over
//! stdio, on the same workload, in one run.
//!
//! `cargo bench --bench graph -- --entities 1000,10000 --samples 200`
//!   for each size and each server: create the entities in batches of 100 (3
//!   observations each), one relation per entity in batches of 100, then time
//!   `--samples` calls each of search_nodes (a word only one entity holds),
//!   open_nodes (5 names), add_observations (one new observation).
//! `--engram-only 100000,1000000` runs the same workload on engram alone.
//! `--no-reference` skips the reference (it is installed from npm into
//! target/reference-memory-server on first use, as tests/compat.rs does).
//!
//! Percentiles from HdrHistogram; results as a table and in
//! `bench-results/graph-<unix time>.json`. Nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_engram");
const REFERENCE: &str = "@modelcontextprotocol/server-memory@2026.8.31";
const BATCH: usize = 100;
const OPS: [&str; 5] = [
    "create_entities",
    "create_relations",
    "search_nodes",
    "open_nodes",
    "add_observations",
];
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
    "memory",
];

type Client = RunningService<RoleClient, ()>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn call(client: &Client, name: &str, args: Value) -> Value {
    let Value::Object(map) = args else {
        unreachable!("arguments are objects")
    };
    let r = client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(map))
        .await
        .expect("transport");
    assert_ne!(r.is_error, Some(true), "{name} failed: {:?}", r.content);
    r.structured_content.unwrap_or(Value::Null)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Entity `i`'s name and the one word only it holds.
fn name(i: usize) -> String {
    format!("entity-{i}")
}
fn marker(i: usize) -> String {
    format!("q{i}z")
}

/// The workload on one server; returns a histogram per operation.
async fn workload(
    client: &Client,
    n: usize,
    samples: usize,
) -> Vec<(&'static str, Histogram<u64>)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let mut h: Vec<Histogram<u64>> = (0..OPS.len()).map(|_| hist()).collect();
    let started = Instant::now();
    for start in (0..n).step_by(BATCH) {
        let entities: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| {
                let entity_type = ["person", "service", "project"][i % 3];
                json!({
                    "name": name(i),
                    "entityType": entity_type,
                    "observations": [
                        format!("{} {}", marker(i), rng.sentence(6)),
                        rng.sentence(8),
                        rng.sentence(8),
                    ],
                })
            })
            .collect();
        let t = Instant::now();
        call(client, "create_entities", json!({ "entities": entities })).await;
        h[0].record(t.elapsed().as_micros().max(1) as u64).ok();
        if start % (n / 10).max(BATCH) == 0 && n >= 100_000 {
            eprintln!(
                "    entities {start}/{n} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    for start in (0..n).step_by(BATCH) {
        let relations: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| {
                json!({ "from": name(i), "to": name((i * 7 + 1) % n), "relationType": "depends_on" })
            })
            .collect();
        let t = Instant::now();
        call(
            client,
            "create_relations",
            json!({ "relations": relations }),
        )
        .await;
        h[1].record(t.elapsed().as_micros().max(1) as u64).ok();
    }
    for _ in 0..samples {
        let i = rng.below(n);
        let t = Instant::now();
        let r = call(client, "search_nodes", json!({ "query": marker(i) })).await;
        h[2].record(t.elapsed().as_micros().max(1) as u64).ok();
        debug_assert_eq!(r["entities"].as_array().map(Vec::len), Some(1));
    }
    for _ in 0..samples {
        let names: Vec<String> = (0..5).map(|_| name(rng.below(n))).collect();
        let t = Instant::now();
        call(client, "open_nodes", json!({ "names": names })).await;
        h[3].record(t.elapsed().as_micros().max(1) as u64).ok();
    }
    for k in 0..samples {
        let i = rng.below(n);
        let args = json!({ "observations": [{ "entityName": name(i), "contents": [format!("note {k} {}", rng.sentence(4))] }] });
        let t = Instant::now();
        call(client, "add_observations", args).await;
        h[4].record(t.elapsed().as_micros().max(1) as u64).ok();
    }
    OPS.into_iter().zip(h).collect()
}

async fn engram_client(dir: &Path) -> Client {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "--log",
        "warn",
        "--tools",
        "compat",
        "--rate-limit",
        "0",
        "serve",
        "--data-dir",
    ])
    .arg(dir);
    let transport = TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn engram")
        .0;
    ().serve(transport).await.expect("initialize engram")
}

fn reference_entry() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reference-memory-server");
    let entry = dir.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if !entry.exists() {
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(REFERENCE)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("reference server not installed (npm failed): engram only");
            return None;
        }
    }
    Some(entry)
}

async fn reference_client(entry: &Path, file: &Path) -> Client {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(entry).env("MEMORY_FILE_PATH", file);
    let transport = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the reference server")
        .0;
    ().serve(transport)
        .await
        .expect("initialize the reference server")
}

fn report(h: &[(&'static str, Histogram<u64>)]) -> Value {
    Value::Object(
        h.iter()
            .map(|(op, h)| {
                (
                    op.to_string(),
                    json!({
                        "calls": h.len(),
                        "p50_ms": ms(h.value_at_quantile(0.5)),
                        "p95_ms": ms(h.value_at_quantile(0.95)),
                        "p99_ms": ms(h.value_at_quantile(0.99)),
                        "max_ms": ms(h.max()),
                    }),
                )
            })
            .collect(),
    )
}

fn list(args: &[String], flag: &str) -> Vec<usize> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().parse().expect("sizes are numbers"))
                .collect()
        })
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut sizes = list(&args, "--entities");
    if sizes.is_empty() && !args.iter().any(|a| a == "--engram-only") {
        sizes = vec![1000, 10_000];
    }
    let alone = list(&args, "--engram-only");
    let samples = list(&args, "--samples").first().copied().unwrap_or(200);
    let with_reference = !args.iter().any(|a| a == "--no-reference");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let entry = if with_reference && !sizes.is_empty() {
        reference_entry()
    } else {
        None
    };
    let mut runs = Vec::new();
    rt.block_on(async {
        let plan = sizes
            .iter()
            .map(|&n| (n, true))
            .chain(alone.iter().map(|&n| (n, false)));
        for (n, compare) in plan {
            let dir = tempfile::tempdir().expect("temp dir");
            eprintln!("graph bench: {n} entities, engram");
            let client = engram_client(&dir.path().join("engram")).await;
            let ours = workload(&client, n, samples).await;
            client.cancel().await.ok();
            let theirs = match (&entry, compare) {
                (Some(entry), true) => {
                    eprintln!("graph bench: {n} entities, reference server");
                    let client = reference_client(entry, &dir.path().join("memory.jsonl")).await;
                    let h = workload(&client, n, samples).await;
                    client.cancel().await.ok();
                    Some(h)
                }
                _ => None,
            };
            println!("\n{n} entities, {samples} samples (ms)\n");
            println!("| operation | engram p50 | engram p95 | reference p50 | reference p95 | p50 ratio |");
            println!("|---|---|---|---|---|---|");
            for (i, (op, h)) in ours.iter().enumerate() {
                let (p50, p95) = (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.95)));
                match &theirs {
                    Some(t) => {
                        let (r50, r95) = (ms(t[i].1.value_at_quantile(0.5)), ms(t[i].1.value_at_quantile(0.95)));
                        println!("| {op} | {p50:.3} | {p95:.3} | {r50:.3} | {r95:.3} | {:.1}x |", r50 / p50);
                    }
                    None => println!("| {op} | {p50:.3} | {p95:.3} | - | - | - |"),
                }
            }
            runs.push(json!({
                "entities": n,
                "samples": samples,
                "engram": report(&ours),
                "reference": theirs.as_deref().map(report),
            }));
        }
    });
    let out = json!({
        "bench": "graph",
        "command": args.join(" "),
        "reference": REFERENCE,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "runs": runs,
    });
    std::fs::create_dir_all("bench-results").ok();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = format!("bench-results/graph-{secs}.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json"))
        .expect("write results");
    eprintln!("results: {path}");
}
