//! The crash loop: rounds of `CRASH_WRITERS` sessions writing as fast as they
//! can, the server killed with SIGKILL after a random while and restarted; then
//! every write that was acknowledged must be in the store (`--samples` rounds;
//! 20, quick 2).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{HttpServer, call, kill_9, progress};
use crate::recorder::Outcome;
use crate::workload::Rng;

/// Writers per round of the crash loop.
const CRASH_WRITERS: usize = 8;

/// Every round's server serves every tool.
const TOOLS: [&str; 2] = ["--tools", "all"];

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "kill -9 under 8 concurrent HTTP writers, restart, every acknowledged write present";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let rounds = cx.pick(&cx.opts.samples, 20, 2);
    let dir = cx.dir("crashloop");
    let mut rng = Rng(cx.opts.seed);
    let mut acked: Vec<String> = Vec::new();
    for round in 0..rounds {
        let wait = Duration::from_millis(200 + rng.next_u64() % 800);
        let this_round = crash_round(cx, &dir, round, wait).await?;
        progress(format!(
            "crashloop: round {round}: {} acknowledged",
            this_round.len()
        ));
        acked.extend(this_round);
    }
    let lost = missing(cx, &dir, &acked).await?;
    if lost > 0 {
        return Err(anyhow!(
            "{lost} of {} acknowledged writes lost after {rounds} crashes",
            acked.len()
        ));
    }
    Ok(
        json!({ "rounds": rounds, "writers": CRASH_WRITERS, "acknowledged": acked.len(), "lost": lost }),
    )
}

/// One round: writers until the server is killed after `wait`. Returns the ids
/// of the writes it acknowledged.
async fn crash_round(
    cx: &Ctx,
    dir: &Path,
    round: usize,
    wait: Duration,
) -> anyhow::Result<Vec<String>> {
    let server = HttpServer::start(&cx.engram, dir, &TOOLS).await?;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..CRASH_WRITERS {
        let client = server.session().await?;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let content = format!("crashloop round {round} writer {w} write {n}");
                match call(&client, "episodic_remember", json!({ "content": content })).await {
                    Outcome::Ok(v) => {
                        if let Some(id) = v["event"]["id"].as_str() {
                            acked.lock().expect("poisoned").push(id.to_string());
                        }
                    }
                    // The server is gone: this write was never acknowledged.
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(wait).await;
    kill_9(server.pid)?;
    for w in writers {
        w.abort();
        let _ = w.await;
    }
    server.stop().await;
    let ids = std::mem::take(&mut *acked.lock().expect("poisoned"));
    Ok(ids)
}

/// How many of `acked` a restarted server does not have.
async fn missing(cx: &Ctx, dir: &Path, acked: &[String]) -> anyhow::Result<usize> {
    let server = HttpServer::start(&cx.engram, dir, &TOOLS).await?;
    let client = server.session().await?;
    let mut lost = 0usize;
    for id in acked {
        let found = call(&client, "episodic_get", json!({ "id": id })).await;
        if !matches!(found, Outcome::Ok(_)) {
            lost += 1;
        }
    }
    let _ = client.cancel().await;
    server.stop().await;
    Ok(lost)
}
