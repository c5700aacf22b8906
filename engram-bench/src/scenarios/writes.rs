//! Write throughput: `episodic_remember` in a closed loop from N HTTP sessions
//! (group commit at work), durable and `normal`; then one session storing
//! batches of 1,000 events.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{HttpServer, mb, progress, timed};
use crate::recorder::Recorder;
use crate::workload::{self, LOAD_BATCH, Rng};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "write throughput: one session vs many (group commit), durable vs normal, batched";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let rungs = cx.pick(&cx.opts.sessions, vec![1, 16, 64], vec![1, 4]);
    let seconds = cx.pick(&cx.opts.seconds, 10.0, 1.0);
    let batches = cx.pick(&cx.opts.samples, 100, 3);
    let mut out = Vec::new();
    for durability in ["full", "normal"] {
        let server = HttpServer::start(
            &cx.engram,
            &cx.dir(&format!("writes-{durability}")),
            &["--durability", durability],
        )
        .await?;
        for &n in &rungs {
            progress(format!("writes: {durability}, {n} sessions, {seconds} s"));
            let mut row = concurrent(cx, &server, n, seconds).await;
            row["durability"] = json!(durability);
            row["sessions"] = json!(n);
            row["server_peak_rss_mb"] = json!(mb(server.rss_kb().1));
            out.push(row);
        }
        out.push(batched(cx, &server, durability, batches).await?);
        server.stop().await;
    }
    Ok(json!({ "seconds": seconds, "rows": out }))
}

/// `n` sessions writing one event per call for `seconds`.
async fn concurrent(cx: &Ctx, server: &HttpServer, n: usize, seconds: f64) -> Value {
    let sessions = server.sessions(n).await;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let seed = cx.opts.seed;
    let started = Instant::now();
    let tasks = sessions.spawn(|i, c| async move {
        let mut rng = Rng(seed ^ (i as u64 + 7));
        let mut rec = Recorder::default();
        while Instant::now() < until {
            let args = json!({ "content": rng.words(12) });
            timed(&mut rec, &*c, "episodic_remember", "write", args).await;
        }
        rec
    });
    let mut rec = Recorder::merged(tasks.join_all().await);
    rec.add_failures("connect", sessions.failed_to_open);
    sessions.close().await;
    rec.to_json(started.elapsed().as_secs_f64())
}

/// One session storing `batches` batches of `LOAD_BATCH` events.
async fn batched(
    cx: &Ctx,
    server: &HttpServer,
    durability: &str,
    batches: usize,
) -> anyhow::Result<Value> {
    let c = server.session().await?;
    let mut rng = Rng(cx.opts.seed);
    let mut rec = Recorder::default();
    let started = Instant::now();
    for _ in 0..batches {
        let events = workload::records(&mut rng, LOAD_BATCH);
        let args = json!({ "events": events });
        timed(&mut rec, &c, "episodic_remember_batch", "write", args).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = c.cancel().await;
    let mut row = rec.to_json(secs);
    row["durability"] = json!(durability);
    row["sessions"] = json!(1);
    row["batch"] = json!(LOAD_BATCH);
    row["events_per_s"] = json!(rec.ok as f64 * LOAD_BATCH as f64 / secs);
    Ok(row)
}
