//! engram and memory-mcp-rs (the Rust port of the reference memory server on
//! sqlite FTS5) side by side on the graph tools: both servers over stdio, the
//! same graph loaded into each, then every sample calls both, in alternating
//! order, so drift on a noisy machine falls on both. Both are driven through
//! the bare line client (`rawrpc`), so the times are the servers' round trips
//! with less of a client's own cost in them than through rmcp's client.
//!
//! The peer is built from crates.io (`cargo install memory-mcp-rs`) into the
//! work dir unless `--peer` names a binary; `--quick` does not build it (it
//! takes minutes) and says so in its results.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use super::Ctx;
use super::reference::{create_graph, marker};
use crate::driver::{cpu_seconds, line_session, progress, timed};
use crate::rawrpc::LineSession;
use crate::recorder::Recorder;
use crate::workload::{Rng, entity};

const PEER: &str = "memory-mcp-rs";
const PEER_VERSION: &str = "0.1.2";

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "search_nodes, open_nodes, add_observations interleaved with the Rust peer memory-mcp-rs";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    if cx.quick && cx.opts.peer.is_none() {
        return Ok(json!({
            "skipped": format!("--quick does not build {PEER} (minutes of compiling): run `engram-bench run peer`"),
        }));
    }
    let n = cx.pick(&cx.opts.sessions, vec![10_000], vec![100])[0];
    let samples = cx.pick(&cx.opts.samples, 1000, 10);
    let peer = peer_binary(cx)?;
    let dir = cx.dir("peer-engram");
    let ours = line_session(&cx.engram, &dir, &["--tools", "compat"]).await?;
    let dir = cx.dir("peer-theirs");
    std::fs::create_dir_all(&dir)?;
    let mut cmd = tokio::process::Command::new(&peer);
    cmd.arg("--db-path").arg(dir.join("graph.db"));
    let theirs = LineSession::start(cmd, Stdio::null())
        .await
        .with_context(|| format!("cannot start {}", peer.display()))?;
    progress(format!("peer: loading {n} entities into both"));
    // The same graph in both: two generators with one seed.
    let (mut load_ours, mut load_theirs) = (Recorder::default(), Recorder::default());
    create_graph(&mut load_ours, &ours, &mut Rng(cx.opts.seed), n).await;
    create_graph(&mut load_theirs, &theirs, &mut Rng(cx.opts.seed), n).await;
    progress(format!("peer: {samples} samples per tool, interleaved"));
    let (mut a, mut b) = (Recorder::default(), Recorder::default());
    let mut rng = Rng(cx.opts.seed ^ 0xBEEF);
    // Each server's own CPU over the samples (user + system, background
    // indexing included): less noisy on a shared machine than latency.
    let cpu_before = [cpu_seconds(ours.pid()), cpu_seconds(theirs.pid())];
    for k in 0..samples {
        let calls = [
            ("search_nodes", json!({ "query": marker(rng.below(n)) })),
            (
                "open_nodes",
                json!({ "names": (0..5).map(|_| entity(rng.below(n))).collect::<Vec<_>>() }),
            ),
            (
                "add_observations",
                json!({ "observations": [{ "entityName": entity(rng.below(n)), "contents": [format!("peer note {k} {}", rng.words(4))] }] }),
            ),
        ];
        for (tool, args) in calls {
            let class = if tool == "add_observations" {
                "write"
            } else {
                "read"
            };
            let pair = [(&ours, &mut a), (&theirs, &mut b)];
            let [first, second] = if k % 2 == 0 { pair } else { swap(pair) };
            timed(first.1, first.0, tool, class, args.clone()).await;
            timed(second.1, second.0, tool, class, args).await;
        }
    }
    let calls = 3.0 * samples as f64;
    let [ours_cpu, theirs_cpu] = [(ours.pid(), cpu_before[0]), (theirs.pid(), cpu_before[1])]
        .map(|(pid, before)| Some((cpu_seconds(pid)? - before?) * 1000.0 / calls));
    ours.close().await;
    theirs.close().await;
    Ok(json!({
        "engram_cpu_ms_per_call": ours_cpu,
        "peer_cpu_ms_per_call": theirs_cpu,
        "peer": format!("{PEER} {PEER_VERSION}"),
        "client": "line",
        "entities": n,
        "samples": samples,
        "engram": a.to_json(0.0),
        "peer_results": b.to_json(0.0),
        "engram_load": load_ours.to_json(0.0),
        "peer_load": load_theirs.to_json(0.0),
    }))
}

fn swap<T>([x, y]: [T; 2]) -> [T; 2] {
    [y, x]
}

/// The peer's binary: `--peer`, else built once into the work dir.
fn peer_binary(cx: &Ctx) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cx.opts.peer {
        return Ok(p.clone());
    }
    let root = cx.work.join("peer-install");
    let binary = root.join("bin").join(PEER);
    if !binary.exists() {
        progress(format!(
            "peer: cargo install {PEER} {PEER_VERSION} (minutes)"
        ));
        let ok = std::process::Command::new("cargo")
            .args([
                "install",
                "--quiet",
                "--locked",
                "--version",
                PEER_VERSION,
                PEER,
                "--root",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(anyhow!(
                "cannot build {PEER} {PEER_VERSION} with cargo install (pass --peer PATH)"
            ));
        }
    }
    Ok(binary)
}
