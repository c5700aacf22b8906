//! engram and the reference memory server (`@modelcontextprotocol/server-memory`,
//! run with node) side by side: the same graph workload through the same client
//! over stdio against `engram serve --tools compat` and the reference.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{Caller, Client, child_session, mb, progress, rss_kb, stdio_session, timed};
use crate::recorder::Recorder;
use crate::workload::{Rng, entity};

const REFERENCE: &str = "@modelcontextprotocol/server-memory@2026.8.31";

/// Entities or relations per create call.
const BATCH: usize = 100;

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "the nine graph tools side by side with @modelcontextprotocol/server-memory";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let sizes = cx.pick(&cx.opts.sessions, vec![1000, 10_000], vec![100]);
    let samples = cx.pick(&cx.opts.samples, 200, 10);
    let entry = reference_entry(cx)?;
    let mut runs = Vec::new();
    for &n in &sizes {
        progress(format!("reference: {n} entities, engram"));
        let dir = cx.dir(&format!("ref-engram-{n}"));
        let session = stdio_session(&cx.engram, &dir, &["--tools", "compat"]).await?;
        let (ours, ours_peak) = measure(session, n, samples, cx.opts.seed).await;
        progress(format!("reference: {n} entities, reference server"));
        let dir = cx.dir(&format!("ref-node-{n}"));
        std::fs::create_dir_all(&dir)?;
        let session = reference_session(&entry, &dir.join("memory.jsonl")).await?;
        let (theirs, theirs_peak) = measure(session, n, samples, cx.opts.seed).await;
        runs.push(json!({
            "entities": n,
            "samples": samples,
            "engram": ours.to_json(0.0),
            "reference": theirs.to_json(0.0),
            "p50_ratio_reference_over_engram": p50_ratios(&ours, &theirs),
            "engram_peak_rss_mb": mb(ours_peak),
            "reference_peak_rss_mb": mb(theirs_peak),
        }));
    }
    Ok(json!({ "reference": REFERENCE, "runs": runs }))
}

/// The graph workload on one session, then the server's peak RSS (KiB).
async fn measure(
    (client, pid): (Client, u32),
    n: usize,
    samples: usize,
    seed: u64,
) -> (Recorder, Option<u64>) {
    let rec = graph_workload(&client, n, samples, seed).await;
    let (_, peak) = rss_kb(pid);
    let _ = client.cancel().await;
    (rec, peak)
}

/// The reference's p50 over engram's, per operation both answered.
fn p50_ratios(ours: &Recorder, theirs: &Recorder) -> serde_json::Map<String, Value> {
    ours.ops
        .iter()
        .filter_map(|(op, h)| {
            let a = h.value_at_quantile(0.5) as f64;
            let b = theirs.ops.get(op)?.value_at_quantile(0.5) as f64;
            Some((op.clone(), json!(b / a.max(1.0))))
        })
        .collect()
}

fn reference_entry(cx: &Ctx) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cx.opts.reference {
        return Ok(p.clone());
    }
    let dir = cx.work.join("reference-memory-server");
    let entry = dir.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if !entry.exists() {
        progress(format!("reference: npm install {REFERENCE}"));
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(REFERENCE)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(anyhow!(
                "cannot install {REFERENCE} with npm (pass --reference PATH/dist/index.js)"
            ));
        }
    }
    Ok(entry)
}

async fn reference_session(entry: &Path, file: &Path) -> anyhow::Result<(Client, u32)> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(entry).env("MEMORY_FILE_PATH", file);
    child_session(cmd, Stdio::null())
        .await
        .context("cannot start node")
}

/// A word only entity `i` holds.
pub(super) fn marker(i: usize) -> String {
    format!("q{i}z")
}

/// The nine-tool workload: N entities in batches of 100 (3 observations each),
/// one relation each in batches of 100, then `samples` search_nodes (a word one
/// entity holds), open_nodes (5 names) and add_observations.
async fn graph_workload(client: &Client, n: usize, samples: usize, seed: u64) -> Recorder {
    let mut rng = Rng(seed ^ n as u64);
    let mut rec = Recorder::default();
    create_graph(&mut rec, client, &mut rng, n).await;
    for _ in 0..samples {
        let args = json!({ "query": marker(rng.below(n)) });
        timed(&mut rec, client, "search_nodes", "read", args).await;
    }
    for _ in 0..samples {
        let names: Vec<String> = (0..5).map(|_| entity(rng.below(n))).collect();
        let args = json!({ "names": names });
        timed(&mut rec, client, "open_nodes", "read", args).await;
    }
    for k in 0..samples {
        let args = json!({ "observations": [{ "entityName": entity(rng.below(n)), "contents": [format!("note {k} {}", rng.words(4))] }] });
        timed(&mut rec, client, "add_observations", "write", args).await;
    }
    rec
}

/// `n` entities, then one relation each, `BATCH` per call.
pub(super) async fn create_graph(
    rec: &mut Recorder,
    client: &impl Caller,
    rng: &mut Rng,
    n: usize,
) {
    for start in (0..n).step_by(BATCH) {
        let entities: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| {
                let kind = ["person", "service", "project"][i % 3];
                json!({ "name": entity(i), "entityType": kind,
                        "observations": [format!("{} {}", marker(i), rng.words(6)), rng.words(8), rng.words(8)] })
            })
            .collect();
        let args = json!({ "entities": entities });
        timed(rec, client, "create_entities", "write", args).await;
    }
    for start in (0..n).step_by(BATCH) {
        let relations: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| json!({ "from": entity(i), "to": entity((i * 7 + 1) % n), "relationType": "depends_on" }))
            .collect();
        let args = json!({ "relations": relations });
        timed(rec, client, "create_relations", "write", args).await;
    }
}
