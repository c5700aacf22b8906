//! Recovery: N changes the search index has not seen, the server killed with
//! SIGKILL, then the time a new server takes to answer `initialize` (the index
//! has replayed the change log) and to answer a search.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{kill_9, load_events, must, progress, stdio_session};
use crate::workload::Rng;

/// A word every generated text may hold.
const WORD_PROBE: &str = "deploy";

/// Flags that keep the index from ever committing during the load (a commit a
/// day, or after 10^8 changes).
const HOLD_INDEX: [&str; 4] = [
    "--index-commit-ms",
    "86400000",
    "--index-commit-docs",
    "100000000",
];

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "time to start with N changes the search index has not seen";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 100_000, 2_000);
    let dir = cx.dir("recovery");
    // Write with the index never committing, then kill -9: every change is in
    // the store and the change log, none in the index.
    let (client, pid) = stdio_session(&cx.engram, &dir, &HOLD_INDEX).await?;
    progress(format!(
        "recovery: writing {records} events the index will not see"
    ));
    load_events(&client, &mut Rng(cx.opts.seed), records, "recovery").await?;
    kill_9(pid)?;
    drop(client);
    // Wait for the lock to be released by the dead process.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (client, _) = stdio_session(&cx.engram, &dir, &[]).await?;
    let ready = started.elapsed();
    let count = must(&client, "episodic_count", json!({})).await?;
    let found = must(
        &client,
        "episodic_recall",
        json!({ "query": WORD_PROBE, "limit": 1 }),
    )
    .await?;
    let first_answer = started.elapsed();
    let _ = client.cancel().await;
    let counted = count["count"].as_u64().unwrap_or(0);
    if counted != records as u64 {
        return Err(anyhow!(
            "after recovery the store holds {counted} events, expected {records}"
        ));
    }
    Ok(json!({
        "records": records,
        "start_to_ready_s": ready.as_secs_f64(),
        "start_to_first_search_s": first_answer.as_secs_f64(),
        "search_found": found["hits"].as_array().map_or(0, Vec::len),
    }))
}
