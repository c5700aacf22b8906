//! The query cache: one query repeated over stdio against preloaded records,
//! calls per second with the cache on and off. Through the bare line client
//! (`rawrpc`): rmcp's client adds nearly as much to a call as the round trip
//! of a hit takes without it.

use std::time::Instant;

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{line_session, must, preload};
use crate::recorder::{histogram, record_since, summary};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "repeated-query throughput with the query cache on vs off";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let calls = cx.pick(&cx.opts.samples, 2_000, 50);
    let mut rates = serde_json::Map::new();
    for (label, extra) in [
        ("cache_on", vec![]),
        ("cache_off", vec!["--cache-capacity", "0"]),
    ] {
        let dir = cx.dir(&format!("cache-{label}"));
        rates.insert(
            label.into(),
            repeated(cx, &dir, &extra, records, calls).await?,
        );
    }
    let on = rates["cache_on"]["calls_per_s"].as_f64().unwrap_or(0.0);
    let off = rates["cache_off"]["calls_per_s"].as_f64().unwrap_or(1.0);
    Ok(
        json!({ "records": records, "calls": calls, "speedup": on / off, "runs": rates, "transport": "stdio", "client": "line" }),
    )
}

/// One server with `extra` flags: `calls` repetitions of one search after one
/// that fills the cache.
async fn repeated(
    cx: &Ctx,
    dir: &std::path::Path,
    extra: &[&str],
    records: usize,
    calls: usize,
) -> anyhow::Result<Value> {
    let client = line_session(&cx.engram, dir, extra).await?;
    preload(&client, records, cx.opts.seed).await?;
    let args = json!({ "query": "postgres replica failover", "limit": 10 });
    must(&client, "semantic_search", args.clone()).await?;
    let mut h = histogram();
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        must(&client, "semantic_search", args.clone()).await?;
        record_since(&mut h, t);
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    client.close().await;
    Ok(json!({ "calls_per_s": rate, "latency": summary(&h) }))
}
