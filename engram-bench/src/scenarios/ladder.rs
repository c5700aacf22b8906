//! The load ladder: rungs of N concurrent Streamable HTTP sessions, each a real
//! MCP session running the mixed workload against one preloaded server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{HttpServer, Sessions, cpu_seconds, drive, mb, preload, progress};
use crate::recorder::Recorder;
use crate::workload::Mix;

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "load ladder: concurrent HTTP sessions on a mixed workload (failure rate, p95 per rung)";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let rungs = cx.pick(&cx.opts.sessions, vec![10, 100, 1000, 5000], vec![2, 8]);
    let seconds = cx.pick(&cx.opts.seconds, 10.0, 1.0);
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let mix = cx.mix()?;
    // Every rung's sessions are let in (the server's default turns away
    // sessions past 2,000): the ladder measures how they are served.
    let most = rungs.iter().max().copied().unwrap_or(0).max(1).to_string();
    let serve = ["--max-sessions", most.as_str()];
    let server = HttpServer::start_serving(&cx.engram, &cx.dir("ladder"), &[], &serve).await?;
    let setup = server.session().await?;
    progress(format!("ladder: preloading {records} events and facts"));
    preload(&setup, records, cx.opts.seed).await?;
    let _ = setup.cancel().await;
    let mut out = Vec::new();
    for &n in &rungs {
        out.push(rung(cx, &[&server], n, seconds, mix).await);
    }
    server.stop().await;
    Ok(
        json!({ "mix": mix, "seconds_per_rung": seconds, "records": records, "rate": cx.opts.rate, "rungs": out }),
    )
}

/// `n` sessions for `seconds` (or `--ops` calls in all), spread evenly over
/// `servers` (nodes sharing one store, as a load balancer would spread them).
pub(super) async fn rung(
    cx: &Ctx,
    servers: &[&HttpServer],
    n: usize,
    seconds: f64,
    mix: Mix,
) -> Value {
    progress(format!("ladder: {n} sessions, {seconds} s"));
    let mut parts = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        // The first nodes take one more when n does not divide evenly.
        let share = n / servers.len() + usize::from(i < n % servers.len());
        parts.push(server.sessions(share).await);
    }
    let sessions = Sessions::merge(parts);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let per_session_rate = cx.opts.rate.map(|r| r / sessions.len().max(1) as f64);
    let budget = cx.opts.ops.map(|total| total.div_ceil(n.max(1) as u64));
    let seed = cx.opts.seed;
    let cpu = || -> Option<f64> { servers.iter().map(|s| s.cpu_seconds()).sum() };
    let cpu_before = cpu();
    let driver_cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let tasks = sessions.spawn(|i, c| async move {
        let seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9);
        drive(&c, mix, seed, until, per_session_rate, budget).await
    });
    let mut rec = Recorder::merged(tasks.join_all().await);
    let elapsed = started.elapsed().as_secs_f64();
    // All nodes' CPU over the rung: what serving its calls cost the server side.
    let cpu_s = cpu().zip(cpu_before).map(|(after, before)| after - before);
    // And the load driver's (this process): on one machine, what it takes is
    // not the server's to use.
    let driver_cpu_s = cpu_seconds(std::process::id())
        .zip(driver_cpu_before)
        .map(|(after, before)| after - before);
    let connected = n - sessions.failed_to_open;
    rec.add_failures("connect", sessions.failed_to_open);
    // With several nodes: the largest of them.
    let (rss, peak) = servers
        .iter()
        .map(|s| s.rss_kb())
        .fold((None, None), |(r, p), (r2, p2)| (r.max(r2), p.max(p2)));
    sessions.close().await;
    let mut rung = rec.to_json(elapsed);
    rung["sessions"] = json!(n);
    rung["nodes"] = json!(servers.len());
    rung["connected"] = json!(connected);
    rung["server_rss_mb"] = json!(mb(rss));
    rung["server_peak_rss_mb"] = json!(mb(peak));
    rung["server_cpu_s"] = json!(cpu_s);
    rung["server_cores"] = json!(cpu_s.map(|c| c / elapsed));
    let calls = rung["calls"].as_u64().filter(|&c| c > 0);
    let per_call = |cpu: Option<f64>| cpu.zip(calls).map(|(c, n)| c * 1000.0 / n as f64);
    rung["server_cpu_ms_per_call"] = json!(per_call(cpu_s));
    rung["driver_cores"] = json!(driver_cpu_s.map(|c| c / elapsed));
    rung["driver_cpu_ms_per_call"] = json!(per_call(driver_cpu_s));
    progress(format!(
        "ladder: {n} sessions: {:.0} calls/s, failure rate {:.2} %",
        rung["throughput_per_s"].as_f64().unwrap_or(0.0),
        rung["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
    ));
    rung
}
