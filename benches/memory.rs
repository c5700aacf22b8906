//! Procedural, prospective and meta memory, measured in process through the
//! pipeline the server uses (`Engine::call`: limiter, breaker, registry, real
//! sqlite file, real tantivy index in a temporary dir), cache off.
//!
//! `cargo bench --bench memory -- --records 10000,100000 --samples 300`
//!   for each size n: load n events (one in twenty repeated three times, for
//!   consolidation to promote), n facts (one in fifty with a near-duplicate),
//!   n procedures (a few runs each), n tasks (one in five a sub-task) and 100
//!   armed reminders (procedures and tasks 32 calls at a time); then
//!   - latency: p50/p95/p99 of each new operation (and episodic_remember with the
//!     reminders armed), `--samples` calls each;
//!   - export: the whole namespace in pages of 10,000, as JSON Lines and
//!     zstd-compressed: records/s, MB/s, compression ratio;
//!   - import: those pages into an empty namespace: records/s;
//!   - consolidation: a dry run and a real run over the n events, a year on.
//!
//! Results print as a table and go to `bench-results/memory-<unix time>.json`.
//! Nothing here asserts a speed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Bench;
use engram::session::Session;
use engram_bench::recorder::{histogram, record_since, summary};
use engram_bench::workload::{LOAD_BATCH, Rng};
use serde_json::{Value, json};

/// Records per export page.
const EXPORT_PAGE: usize = 10_000;
const ARMED_REMINDERS: usize = 100;
/// Calls in flight at once while loading procedures and tasks.
const CONCURRENT: usize = 32;

impl Bench {
    fn in_namespace(&self, namespace: &str) -> Arc<Session> {
        let session = self.app.new_session();
        session.set_namespace(namespace.into());
        session
    }

    /// Runs the calls, `CONCURRENT` at a time; their answers in order.
    async fn concurrently(&self, calls: Vec<(String, Value)>) -> Vec<Value> {
        use futures::StreamExt;
        futures::stream::iter(calls)
            .map(|(op, args)| async move { self.call(&op, args).await })
            .buffered(CONCURRENT)
            .collect()
            .await
    }

    async fn load(&self, rng: &mut Rng, n: usize) -> Duration {
        let started = Instant::now();
        self.load_texts(rng, n).await;
        self.load_plans(rng, n).await;
        for i in 0..ARMED_REMINDERS {
            let args = json!({ "message": format!("reminder {i}"), "query": format!("zzunmatched{i} {}", rng.words(1)) });
            self.call("prospective_trigger_set", args).await;
        }
        self.app.app().search_index().flush().await.expect("flush");
        started.elapsed()
    }

    /// `n` events (one in twenty repeated three times) and `n` facts (one in
    /// fifty with a near-duplicate), in batches.
    async fn load_texts(&self, rng: &mut Rng, n: usize) {
        for start in (0..n).step_by(LOAD_BATCH) {
            let k = LOAD_BATCH.min(n - start);
            let events: Vec<Value> = (start..start + k)
                .map(|i| {
                    // Every twentieth event's text comes back three times.
                    let text = if i % 20 < 3 {
                        format!("recurring problem {}: {}", i / 20, "disk full on the build host")
                    } else {
                        format!("event {i}: {}", rng.words(10))
                    };
                    json!({ "content": text, "importance": rng.unit(), "tags": [format!("t{}", i % 10)] })
                })
                .collect();
            self.call("episodic_remember_batch", json!({ "events": events }))
                .await;
            let facts: Vec<Value> = (start..start + k)
                .map(|i| {
                    let text = if i % 50 == 1 {
                        format!("fact {}: {}", i - 1, "the api listens on port 8080")
                    } else if i % 50 == 0 {
                        format!("Fact {i}: the API listens on port 8080.")
                    } else {
                        format!("fact {i}: {}", rng.words(10))
                    };
                    json!({ "content": text })
                })
                .collect();
            self.call("semantic_store_batch", json!({ "facts": facts }))
                .await;
        }
    }

    /// `n` procedures (one in ten with three runs) and `n` tasks (one in five a
    /// sub-task).
    async fn load_plans(&self, rng: &mut Rng, n: usize) {
        // Procedures and tasks have no batch operation: calls run CONCURRENT at
        // a time, as many agents would make them (the writer commits them in groups).
        let procedures: Vec<(String, Value)> = (0..n)
            .map(|i| {
                let args = json!({
                    "name": format!("procedure-{i}"),
                    "goal": rng.words(6),
                    "steps": [rng.words(5), rng.words(5), rng.words(5)],
                    "tags": [format!("t{}", i % 10)],
                });
                ("procedural_store".to_string(), args)
            })
            .collect();
        self.concurrently(procedures).await;
        let runs: Vec<(String, Value)> = (0..n)
            .step_by(10)
            .flat_map(|i| ["success", "success", "failure"].map(|o| (i, o)))
            .map(|(i, outcome)| {
                let args = json!({ "id": format!("procedure-{i}"), "outcome": outcome, "duration_ms": 100 + rng.below(900) });
                ("procedural_record_execution".to_string(), args)
            })
            .collect();
        self.concurrently(runs).await;
        // Goals first, then their sub-tasks (every fifth task).
        let task = |rng: &mut Rng, i: usize| {
            let due = if i.is_multiple_of(2) {
                format!("in {}h", rng.below(24 * 60))
            } else {
                format!("{}h ago", rng.below(24 * 60))
            };
            let priority = ["low", "normal", "high", "urgent"][i % 4];
            json!({ "title": format!("task {i}: {}", rng.words(5)), "due_at": due, "priority": priority })
        };
        let goals: Vec<(String, Value)> = (0..n)
            .filter(|i| i % 5 != 4)
            .map(|i| ("prospective_create".to_string(), task(rng, i)))
            .collect();
        let made = self.concurrently(goals).await;
        let subtasks: Vec<(String, Value)> = (0..n)
            .filter(|i| i % 5 == 4)
            .zip(made.iter().step_by(4))
            .map(|(i, parent)| {
                let mut args = task(rng, i);
                args["parent_id"] = parent["task"]["id"].clone();
                ("prospective_create".to_string(), args)
            })
            .collect();
        self.concurrently(subtasks).await;
    }
}

type Args = Box<dyn FnMut(&mut Rng, usize) -> Value>;
/// A call's arguments for a task id.
type ById = fn(&str) -> Value;

/// Calls `op` with each of `calls`' arguments; prints and returns its latency summary.
async fn measure(b: &Bench, op: &str, calls: Vec<Value>) -> Value {
    let mut h = histogram();
    for args in calls {
        let started = Instant::now();
        b.call(op, args).await;
        record_since(&mut h, started);
    }
    eprintln!(
        "  {op:<28} p50 {:>8.3} ms  p95 {:>8.3} ms  p99 {:>8.3} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.95) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    );
    summary(&h)
}

/// The operations measured with generated arguments (`n`: procedures loaded).
fn operations(n: usize) -> Vec<(&'static str, Args)> {
    let name = move |rng: &mut Rng| format!("procedure-{}", rng.below(n));
    vec![
        (
            "procedural_get",
            Box::new(move |r, _| json!({ "id": name(r) })),
        ),
        (
            "procedural_search",
            Box::new(|r, _| json!({ "query": r.words(2) })),
        ),
        (
            "procedural_suggest",
            Box::new(|r, _| json!({ "task": r.words(4) })),
        ),
        (
            "procedural_list",
            Box::new(|r, _| json!({ "tags": [format!("t{}", r.below(10))] })),
        ),
        (
            "procedural_stats",
            Box::new(move |r, _| json!({ "id": name(r) })),
        ),
        (
            "procedural_versions",
            Box::new(move |r, _| json!({ "id": name(r) })),
        ),
        (
            "procedural_update",
            Box::new(move |r, _| json!({ "id": name(r), "goal": r.words(6) })),
        ),
        (
            "procedural_record_execution",
            Box::new(
                move |r, _| json!({ "id": name(r), "outcome": "success", "duration_ms": r.below(1000) }),
            ),
        ),
        (
            "prospective_create",
            Box::new(|r, _| json!({ "title": r.words(5), "due_at": "in 3h" })),
        ),
        ("prospective_list", Box::new(|_, _| json!({ "limit": 20 }))),
        (
            "prospective_due",
            Box::new(|_, _| json!({ "before": "in 1d", "limit": 20 })),
        ),
        (
            "prospective_triggers",
            Box::new(|_, _| json!({ "limit": 20 })),
        ),
        (
            "prospective_trigger_set",
            Box::new(|r, i| json!({ "message": "m", "tag": format!("zz{i}{}", r.below(9)) })),
        ),
        (
            "episodic_remember",
            Box::new(|r, _| json!({ "content": r.words(12) })),
        ),
        ("meta_stats", Box::new(|_, _| json!({}))),
        ("meta_namespaces", Box::new(|_, _| json!({}))),
        ("meta_audit", Box::new(|_, _| json!({ "limit": 20 }))),
    ]
}

/// p50/p95/p99 of each operation, `samples` calls each (the namespace-wide
/// meta reads 30).
async fn latencies(b: &Bench, rng: &mut Rng, n: usize, samples: usize) -> Value {
    let mut out = serde_json::Map::new();
    for (op, mut args) in operations(n) {
        let calls = if op.starts_with("meta_stats") || op.starts_with("meta_namespaces") {
            samples.min(30)
        } else {
            samples
        };
        let calls: Vec<Value> = (0..calls).map(|i| args(rng, i)).collect();
        out.insert(op.to_string(), measure(b, op, calls).await);
    }
    // Task reads and writes by id, on tasks this run created.
    let listed = b.call("prospective_list", json!({ "limit": 100 })).await;
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .take(samples)
        .collect();
    let by_id = |args: ById| ids.iter().map(|id| args(id)).collect::<Vec<_>>();
    let task_ops: [(&str, ById); 3] = [
        ("prospective_get", |id| json!({ "id": id })),
        (
            "prospective_update",
            |id| json!({ "id": id, "notes": "a note" }),
        ),
        (
            "prospective_complete",
            |id| json!({ "id": id, "with_subtasks": true }),
        ),
    ];
    for (op, args) in task_ops {
        out.insert(op.to_string(), measure(b, op, by_id(args)).await);
    }
    Value::Object(out)
}

/// The whole namespace exported in pages, then imported into `copy`.
async fn transfer(b: &Bench, compress: bool, copy: &str) -> Value {
    let started = Instant::now();
    let mut pages = Vec::new();
    let (mut records, mut bytes, mut sent) = (0u64, 0u64, 0u64);
    let mut cursor: Option<Value> = None;
    loop {
        let mut args = json!({ "limit": EXPORT_PAGE, "compress": compress });
        if let Some(c) = cursor.take() {
            args["cursor"] = c;
        }
        let page = b.call("meta_export", args).await;
        records += page["records"].as_u64().unwrap();
        bytes += page["bytes"].as_u64().unwrap();
        let data = page["data"].as_str().unwrap();
        sent += if compress {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_or(0, |d| d.len() as u64)
        } else {
            data.len() as u64
        };
        pages.push((page["data"].clone(), page["encoding"].clone()));
        match page.get("next_cursor") {
            Some(c) => cursor = Some(c.clone()),
            None => break,
        }
    }
    let export_s = started.elapsed().as_secs_f64();
    let session = b.in_namespace(copy);
    let started = Instant::now();
    for (data, encoding) in pages {
        let args = json!({ "data": data, "encoding": encoding });
        b.call_as(&session, "meta_import", args).await;
    }
    let import_s = started.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "  export{} {records} records, {mb:.1} MB in {export_s:.2} s ({:.0} records/s, {:.1} MB/s), sent {:.1} MB (ratio {:.2}); import {import_s:.2} s ({:.0} records/s)",
        if compress { " (zstd)" } else { "" },
        records as f64 / export_s,
        mb / export_s,
        sent as f64 / 1e6,
        bytes as f64 / sent.max(1) as f64,
        records as f64 / import_s,
    );
    json!({
        "compress": compress,
        "records": records,
        "jsonl_bytes": bytes,
        "sent_bytes": sent,
        "compression_ratio": bytes as f64 / sent.max(1) as f64,
        "export_seconds": export_s,
        "export_records_per_second": records as f64 / export_s,
        "export_mb_per_second": mb / export_s,
        "import_seconds": import_s,
        "import_records_per_second": records as f64 / import_s,
    })
}

async fn consolidation(b: &Bench) -> Value {
    let as_of = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let mut out = serde_json::Map::new();
    for dry_run in [true, false] {
        let started = Instant::now();
        let answer = b
            .call(
                "meta_consolidate",
                json!({ "dry_run": dry_run, "as_of": as_of }),
            )
            .await;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "  consolidate{}: {seconds:.2} s, {} promoted, {} merged, {} decayed, {} archived",
            if dry_run { " (dry run)" } else { "" },
            answer["promoted"].as_array().map_or(0, Vec::len),
            answer["merged"].as_array().map_or(0, Vec::len),
            answer["decayed_count"],
            answer["archived_count"],
        );
        let key = if dry_run { "dry_run" } else { "real_run" };
        out.insert(
            key.into(),
            json!({
                "seconds": seconds,
                "promoted": answer["promoted"].as_array().map_or(0, Vec::len),
                "merged": answer["merged"].as_array().map_or(0, Vec::len),
                "decayed": answer["decayed_count"],
                "archived": answer["archived_count"],
            }),
        );
    }
    Value::Object(out)
}

async fn run(n: usize, samples: usize) -> Value {
    let b = Bench::open(0).await;
    let mut rng = Rng(0x6d65_6d6f ^ n as u64);
    let load = b.load(&mut rng, n).await;
    eprintln!("  loaded in {:.1} s", load.as_secs_f64());
    let latency = latencies(&b, &mut rng, n, samples).await;
    let plain = transfer(&b, false, "copy-plain").await;
    let zstd = transfer(&b, true, "copy-zstd").await;
    let consolidation = consolidation(&b).await;
    b.app.shutdown();
    json!({
        "records": n,
        "load_seconds": load.as_secs_f64(),
        "latency": latency,
        "export_import": [plain, zstd],
        "consolidation": consolidation,
    })
}

fn main() {
    engram_bench::inprocess::main("memory", "--records", "10000", 300, run);
}
