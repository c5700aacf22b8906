//! The named scenarios. Each drives the real `engram` binary the way hosts do
//! and returns its results as JSON; `--quick` shrinks every size and duration
//! so all of them run in seconds (the CI smoke test), asserting nothing about
//! speed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::driver::{
    Client, HttpServer, Mix, Recorder, Rng, call, drive, entity, histogram, must, preload,
    progress, rss_kb, rss_split_kb, stdio_session, summary,
};

pub const ALL: &[(&str, &str)] = &[
    (
        "ladder",
        "load ladder: concurrent HTTP sessions on a mixed workload (failure rate, p95 per rung)",
    ),
    (
        "workflows",
        "learn-from-experience, knowledge discovery and health checks as agents chain them",
    ),
    (
        "discovery",
        "tool discovery at name / summary / full detail: latency and bytes",
    ),
    (
        "writes",
        "write throughput: one session vs many (group commit), durable vs normal, batched",
    ),
    (
        "recovery",
        "time to start with N changes the search index has not seen",
    ),
    (
        "memory",
        "RSS with N records loaded, and RSS slope over a soak (leak check)",
    ),
    (
        "cache",
        "repeated-query throughput with the query cache on vs off",
    ),
    (
        "reference",
        "the nine graph tools side by side with @modelcontextprotocol/server-memory",
    ),
    (
        "crashloop",
        "kill -9 under 8 concurrent HTTP writers, restart, every acknowledged write present",
    ),
];

/// What every scenario gets.
pub struct Ctx {
    pub engram: PathBuf,
    pub quick: bool,
    pub work: PathBuf,
    pub opts: Opts,
}

/// Overrides from the command line; `None` takes the scenario's default (or its
/// quick default).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Opts {
    pub sessions: Option<Vec<usize>>,
    pub seconds: Option<f64>,
    pub records: Option<usize>,
    pub mix: Option<String>,
    pub rate: Option<f64>,
    pub samples: Option<usize>,
    /// Ladder: stop each rung after this many calls in all (or at `seconds`).
    pub ops: Option<u64>,
    pub seed: u64,
    pub reference: Option<PathBuf>,
}

impl Ctx {
    fn pick<T: Clone>(&self, given: &Option<T>, full: T, quick: T) -> T {
        given
            .clone()
            .unwrap_or(if self.quick { quick } else { full })
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mix(&self) -> anyhow::Result<Mix> {
        Mix::parse(self.opts.mix.as_deref().unwrap_or("70/20/10"))
    }
}

pub async fn run(name: &str, cx: &Ctx) -> anyhow::Result<Value> {
    match name {
        "ladder" => ladder(cx).await,
        "workflows" => workflows(cx).await,
        "discovery" => discovery(cx).await,
        "writes" => writes(cx).await,
        "recovery" => recovery(cx).await,
        "memory" => memory(cx).await,
        "cache" => cache(cx).await,
        "reference" => reference(cx).await,
        "crashloop" => crashloop(cx).await,
        other => Err(anyhow!(
            "no scenario {other:?}: choose from {}",
            ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Opens `n` sessions, at most 64 handshakes at a time. Returns the sessions
/// and how many failed to open.
async fn open_sessions(server: &HttpServer, n: usize) -> (Vec<Client>, usize) {
    use rmcp::ServiceExt;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (url, gate) = (server.url.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            ().serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
                url,
            ))
            .await
            .ok()
        });
    }
    let opened: Vec<Client> = tasks.join_all().await.into_iter().flatten().collect();
    let failed = n - opened.len();
    (opened, failed)
}

// ---------- ladder ----------

async fn ladder(cx: &Ctx) -> anyhow::Result<Value> {
    let rungs = cx.pick(&cx.opts.sessions, vec![10, 100, 1000, 5000], vec![2, 8]);
    let seconds = cx.pick(&cx.opts.seconds, 10.0, 1.0);
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let mix = cx.mix()?;
    let server = HttpServer::start(&cx.engram, &cx.dir("ladder"), &[]).await?;
    let setup = server.session().await?;
    progress(format!("ladder: preloading {records} events and facts"));
    preload(&setup, records, cx.opts.seed).await?;
    let _ = setup.cancel().await;
    let mut out = Vec::new();
    for &n in &rungs {
        progress(format!("ladder: {n} sessions, {seconds} s"));
        let (clients, connect_failures) = open_sessions(&server, n).await;
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let per_session_rate = cx.opts.rate.map(|r| r / clients.len().max(1) as f64);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let clients: Vec<std::sync::Arc<Client>> =
            clients.into_iter().map(std::sync::Arc::new).collect();
        for (i, c) in clients.iter().enumerate() {
            let c = c.clone();
            let seed = cx.opts.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9);
            let budget = cx.opts.ops.map(|total| total.div_ceil(n.max(1) as u64));
            tasks.spawn(async move { drive(&c, mix, seed, until, per_session_rate, budget).await });
        }
        let mut rec = Recorder::default();
        for r in tasks.join_all().await {
            rec.merge(r);
        }
        let elapsed = started.elapsed().as_secs_f64();
        if connect_failures > 0 {
            *rec.failures.entry("connect").or_default() += connect_failures as u64;
        }
        let (rss, peak) = server.rss_kb();
        for c in clients {
            if let Ok(c) = std::sync::Arc::try_unwrap(c) {
                let _ = c.cancel().await;
            }
        }
        let mut rung = rec.to_json(elapsed);
        rung["sessions"] = json!(n);
        rung["connected"] = json!(n - connect_failures);
        rung["server_rss_mb"] = json!(rss.map(|k| k as f64 / 1024.0));
        rung["server_peak_rss_mb"] = json!(peak.map(|k| k as f64 / 1024.0));
        progress(format!(
            "ladder: {n} sessions: {:.0} calls/s, failure rate {:.2} %",
            rung["throughput_per_s"].as_f64().unwrap_or(0.0),
            rung["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
        ));
        out.push(rung);
    }
    server.stop().await;
    Ok(
        json!({ "mix": mix, "seconds_per_rung": seconds, "records": records, "rate": cx.opts.rate, "rungs": out }),
    )
}

// ---------- workflows ----------

async fn workflows(cx: &Ctx) -> anyhow::Result<Value> {
    let iterations = cx.pick(&cx.opts.samples, 300, 10);
    let records = cx.pick(&cx.opts.records, 2_000, 100);
    let (client, _) = stdio_session(&cx.engram, &cx.dir("workflows"), &[]).await?;
    preload(&client, records, cx.opts.seed).await?;
    let mut rng = Rng(cx.opts.seed ^ 0x77);
    let mut learn = Recorder::default();
    let mut discover = Recorder::default();
    let mut health = Recorder::default();
    for k in 0..iterations {
        // Learn from experience: what happened, what it taught, who it concerns.
        let started = Instant::now();
        let mut ok = true;
        let steps: Vec<(&str, Value)> = vec![
            (
                "episodic_remember",
                json!({ "content": format!("fixed {} by {}", rng.words(3), rng.words(3)) }),
            ),
            (
                "semantic_store",
                json!({ "content": format!("lesson {k}: {}", rng.words(10)), "confidence": 0.8 }),
            ),
            (
                "create_entities",
                json!({ "entities": [{ "name": format!("lesson-{k}"), "entityType": "lesson", "observations": [rng.words(6)] }] }),
            ),
            (
                "create_relations",
                json!({ "relations": [{ "from": format!("lesson-{k}"), "to": entity(rng.below(crate::driver::GRAPH_ENTITIES)), "relationType": "concerns" }] }),
            ),
        ];
        for (op, args) in steps {
            let t = Instant::now();
            let o = call(&client, op, args).await;
            ok &= o.kind().is_none();
            learn.record(op, "step", t.elapsed(), &o);
        }
        let whole = if ok {
            crate::driver::Outcome::Ok(Value::Null)
        } else {
            crate::driver::Outcome::ToolError("a step failed".into())
        };
        learn.record(
            "learn_from_experience",
            "complex",
            started.elapsed(),
            &whole,
        );

        // Knowledge discovery: search everything, open what was found, look around it.
        let started = Instant::now();
        let t = Instant::now();
        let found = call(
            &client,
            "memory_search",
            json!({ "query": rng.words(2), "limit": 10 }),
        )
        .await;
        let failed = found.kind().is_some();
        discover.record("memory_search", "step", t.elapsed(), &found);
        let name = entity(rng.below(crate::driver::GRAPH_ENTITIES));
        let t = Instant::now();
        let o = call(&client, "open_nodes", json!({ "names": [name] })).await;
        let failed = failed || o.kind().is_some();
        discover.record("open_nodes", "step", t.elapsed(), &o);
        let t = Instant::now();
        let o = call(
            &client,
            "graph_neighbors",
            json!({ "name": name, "depth": 2 }),
        )
        .await;
        let failed = failed || o.kind().is_some();
        discover.record("graph_neighbors", "step", t.elapsed(), &o);
        let whole = if failed {
            crate::driver::Outcome::ToolError("a step failed".into())
        } else {
            crate::driver::Outcome::Ok(Value::Null)
        };
        discover.record("knowledge_discovery", "complex", started.elapsed(), &whole);

        // Health checks, as an operator's probe makes them.
        for op in ["meta_health", "meta_cache_stats"] {
            let t = Instant::now();
            let o = call(&client, op, json!({})).await;
            health.record(op, "read", t.elapsed(), &o);
        }
    }
    let _ = client.cancel().await;
    Ok(json!({
        "iterations": iterations,
        "records": records,
        "learn_from_experience": learn.to_json(0.0),
        "knowledge_discovery": discover.to_json(0.0),
        "health_checks": health.to_json(0.0),
    }))
}

// ---------- discovery ----------

async fn discovery(cx: &Ctx) -> anyhow::Result<Value> {
    let samples = cx.pick(&cx.opts.samples, 200, 10);
    let mut out = serde_json::Map::new();
    for detail in ["name", "summary", "full"] {
        let (client, _) = stdio_session(&cx.engram, &cx.dir("discovery"), &[]).await?;
        let mut h = histogram();
        let mut bytes = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let v = must(&client, "discover_tools", json!({ "detail": detail })).await?;
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            bytes = serde_json::to_string(&v)?.len();
        }
        let _ = client.cancel().await;
        out.insert(
            format!("discover_tools_{detail}"),
            json!({ "latency": summary(&h), "bytes": bytes }),
        );
    }
    for profile in ["core", "all"] {
        let (client, _) =
            stdio_session(&cx.engram, &cx.dir("discovery"), &["--tools", profile]).await?;
        let mut h = histogram();
        let mut bytes = 0;
        let mut count = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let tools = client.list_all_tools().await?;
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            bytes = serde_json::to_string(&tools)?.len();
            count = tools.len();
        }
        let _ = client.cancel().await;
        out.insert(
            format!("tools_list_{profile}"),
            json!({ "latency": summary(&h), "bytes": bytes, "tools": count }),
        );
    }
    Ok(Value::Object(out))
}

// ---------- writes ----------

async fn writes(cx: &Ctx) -> anyhow::Result<Value> {
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
            let (clients, connect_failures) = open_sessions(&server, n).await;
            let until = Instant::now() + Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (i, c) in clients.into_iter().enumerate() {
                let seed = cx.opts.seed ^ (i as u64 + 7);
                tasks.spawn(async move {
                    let mut rng = Rng(seed);
                    let mut rec = Recorder::default();
                    while Instant::now() < until {
                        let t = Instant::now();
                        let o = call(&c, "episodic_remember", json!({ "content": rng.words(12) }))
                            .await;
                        rec.record("episodic_remember", "write", t.elapsed(), &o);
                    }
                    let _ = c.cancel().await;
                    rec
                });
            }
            let mut rec = Recorder::default();
            for r in tasks.join_all().await {
                rec.merge(r);
            }
            if connect_failures > 0 {
                *rec.failures.entry("connect").or_default() += connect_failures as u64;
            }
            let mut row = rec.to_json(started.elapsed().as_secs_f64());
            row["durability"] = json!(durability);
            row["sessions"] = json!(n);
            row["server_peak_rss_mb"] = json!(server.rss_kb().1.map(|k| k as f64 / 1024.0));
            out.push(row);
        }
        // Batched: one session, 1000 events per call.
        let c = server.session().await?;
        let mut rng = Rng(cx.opts.seed);
        let mut rec = Recorder::default();
        let started = Instant::now();
        for _ in 0..batches {
            let events: Vec<Value> = (0..1000)
                .map(|_| json!({ "content": rng.words(12) }))
                .collect();
            let t = Instant::now();
            let o = call(&c, "episodic_remember_batch", json!({ "events": events })).await;
            rec.record("episodic_remember_batch", "write", t.elapsed(), &o);
        }
        let secs = started.elapsed().as_secs_f64();
        let _ = c.cancel().await;
        let mut row = rec.to_json(secs);
        row["durability"] = json!(durability);
        row["sessions"] = json!(1);
        row["batch"] = json!(1000);
        row["events_per_s"] = json!(rec.ok as f64 * 1000.0 / secs);
        out.push(row);
        server.stop().await;
    }
    Ok(json!({ "seconds": seconds, "rows": out }))
}

// ---------- recovery ----------

async fn recovery(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 100_000, 2_000);
    let dir = cx.dir("recovery");
    // Write with the index never committing, then kill -9: every change is in
    // the store and the change log, none in the index.
    let hold = [
        "--index-commit-ms",
        "86400000",
        "--index-commit-docs",
        "100000000",
    ];
    let (client, pid) = stdio_session(&cx.engram, &dir, &hold).await?;
    progress(format!(
        "recovery: writing {records} events the index will not see"
    ));
    let mut rng = Rng(cx.opts.seed);
    let mut left = records;
    while left > 0 {
        let n = left.min(1000);
        let events: Vec<Value> = (0..n)
            .map(|_| json!({ "content": rng.words(12) }))
            .collect();
        must(
            &client,
            "episodic_remember_batch",
            json!({ "events": events }),
        )
        .await?;
        left -= n;
    }
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(anyhow!("could not kill the server (pid {pid})"));
    }
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

/// A word every generated text may hold.
const WORD_PROBE: &str = "deploy";

// ---------- crashloop ----------

/// Writers per round of the crash loop.
const CRASH_WRITERS: usize = 8;

/// Rounds of: 8 sessions writing as fast as they can, the server killed with
/// SIGKILL after a random while, restarted; then every write that was
/// acknowledged must be in the store (`--samples` rounds; 20, quick 2).
async fn crashloop(cx: &Ctx) -> anyhow::Result<Value> {
    let rounds = cx.pick(&cx.opts.samples, 20, 2);
    let dir = cx.dir("crashloop");
    let mut rng = Rng(cx.opts.seed);
    let mut acked: Vec<String> = Vec::new();
    for round in 0..rounds {
        let server = HttpServer::start(&cx.engram, &dir, &["--tools", "all"]).await?;
        let round_acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut writers = Vec::new();
        for w in 0..CRASH_WRITERS {
            let client = server.session().await?;
            let round_acked = round_acked.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let content = format!("crashloop round {round} writer {w} write {n}");
                    match call(&client, "episodic_remember", json!({ "content": content })).await {
                        crate::driver::Outcome::Ok(v) => {
                            if let Some(id) = v["event"]["id"].as_str() {
                                round_acked.lock().expect("poisoned").push(id.to_string());
                            }
                        }
                        // The server is gone: this write was never acknowledged.
                        _ => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.next() % 800)).await;
        let status = std::process::Command::new("kill")
            .args(["-9", &server.pid.to_string()])
            .status()?;
        if !status.success() {
            return Err(anyhow!("could not kill the server (pid {})", server.pid));
        }
        for w in writers {
            w.abort();
            let _ = w.await;
        }
        server.stop().await;
        let this_round = round_acked.lock().expect("poisoned").len();
        progress(format!(
            "crashloop: round {round}: {this_round} acknowledged"
        ));
        acked.extend(round_acked.lock().expect("poisoned").drain(..));
    }
    let server = HttpServer::start(&cx.engram, &dir, &["--tools", "all"]).await?;
    let client = server.session().await?;
    let mut lost = 0usize;
    for id in &acked {
        if !matches!(
            call(&client, "episodic_get", json!({ "id": id })).await,
            crate::driver::Outcome::Ok(_)
        ) {
            lost += 1;
        }
    }
    let _ = client.cancel().await;
    server.stop().await;
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

// ---------- memory ----------

async fn memory(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 1_000_000, 2_000);
    let soak = cx.pick(&cx.opts.seconds, 600.0, 3.0);
    let server = HttpServer::start(&cx.engram, &cx.dir("memory"), &[]).await?;
    let (idle, _) = server.rss_kb();
    let c = server.session().await?;
    progress(format!("memory: loading {records} events"));
    let mut rng = Rng(cx.opts.seed);
    let mut left = records;
    let started = Instant::now();
    while left > 0 {
        let n = left.min(1000);
        let events: Vec<Value> = (0..n)
            .map(|_| json!({ "content": rng.words(12) }))
            .collect();
        must(&c, "episodic_remember_batch", json!({ "events": events })).await?;
        left -= n;
        if (records - left).is_multiple_of(100_000) {
            progress(format!(
                "memory: {} / {records} ({:.0} s)",
                records - left,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    // A pass of searches, so the index's caches are warm as in use.
    for _ in 0..100 {
        must(
            &c,
            "episodic_recall",
            json!({ "query": rng.words(2), "limit": 10 }),
        )
        .await?;
    }
    let (loaded, loaded_peak) = server.rss_kb();
    let (loaded_anon, loaded_file) = rss_split_kb(server.pid);
    let _ = c.cancel().await;

    // Soak: a mixed workload at a steady rate, RSS sampled every second.
    let setup = server.session().await?;
    preload(&setup, 0, cx.opts.seed).await?;
    let _ = setup.cancel().await;
    progress(format!("memory: soak for {soak} s"));
    let (clients, _) = open_sessions(&server, 4).await;
    let until = Instant::now() + Duration::from_secs_f64(soak);
    let mix = cx.mix()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        let seed = cx.opts.seed ^ (i as u64 + 99);
        tasks.spawn(async move {
            let r = drive(&c, mix, seed, until, Some(50.0), None).await;
            let _ = c.cancel().await;
            r
        });
    }
    let soak_started = Instant::now();
    // (seconds, total RSS MB, anonymous RSS MB)
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    while Instant::now() < until {
        if let ((Some(kb), _), (Some(anon), _)) = (server.rss_kb(), rss_split_kb(server.pid)) {
            samples.push((
                soak_started.elapsed().as_secs_f64(),
                kb as f64 / 1024.0,
                anon as f64 / 1024.0,
            ));
        }
        tokio::time::sleep(
            Duration::from_secs(1).min(
                until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            ),
        )
        .await;
    }
    let mut rec = Recorder::default();
    for r in tasks.join_all().await {
        rec.merge(r);
    }
    let (_, peak) = server.rss_kb();
    server.stop().await;
    // Least-squares slopes over the second half of the soak (after warm-up:
    // caches filling, the index's pages being read in), in MB per hour.
    let warm = &samples[samples.len() / 2..];
    let total: Vec<(f64, f64)> = warm.iter().map(|s| (s.0, s.1)).collect();
    let anon: Vec<(f64, f64)> = warm.iter().map(|s| (s.0, s.2)).collect();
    let slope = least_squares_slope(&total).map(|per_s| per_s * 3600.0);
    let anon_slope = least_squares_slope(&anon).map(|per_s| per_s * 3600.0);
    let mb = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    // Every 30th sample, for the record.
    let trace: Vec<[f64; 3]> = samples
        .iter()
        .step_by(30)
        .map(|s| [s.0.round(), s.1, s.2])
        .collect();
    Ok(json!({
        "records": records,
        "idle_rss_mb": mb(idle),
        "loaded_rss_mb": mb(loaded),
        "loaded_anon_rss_mb": mb(loaded_anon),
        "loaded_file_rss_mb": mb(loaded_file),
        "loaded_peak_rss_mb": mb(loaded_peak),
        "soak_seconds": soak,
        "soak_rss_samples": samples.len(),
        "soak_start_rss_mb": samples.first().map(|s| s.1),
        "soak_end_rss_mb": samples.last().map(|s| s.1),
        "soak_start_anon_rss_mb": samples.first().map(|s| s.2),
        "soak_end_anon_rss_mb": samples.last().map(|s| s.2),
        "rss_slope_mb_per_hour": slope,
        "anon_rss_slope_mb_per_hour": anon_slope,
        "soak_trace_s_rss_anon": trace,
        "peak_rss_mb": mb(peak),
        "soak_workload": rec.to_json(soak),
    }))
}

fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |a, p| {
        (a.0 + (p.0 - mx) * (p.1 - my), a.1 + (p.0 - mx).powi(2))
    });
    (den > 0.0).then(|| num / den)
}

// ---------- cache ----------

async fn cache(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let calls = cx.pick(&cx.opts.samples, 2_000, 50);
    let mut rates = serde_json::Map::new();
    for (label, extra) in [
        ("cache_on", vec![]),
        ("cache_off", vec!["--cache-capacity", "0"]),
    ] {
        let (client, _) =
            stdio_session(&cx.engram, &cx.dir(&format!("cache-{label}")), &extra).await?;
        preload(&client, records, cx.opts.seed).await?;
        let args = json!({ "query": "postgres replica failover", "limit": 10 });
        must(&client, "semantic_search", args.clone()).await?;
        let mut h = histogram();
        let started = Instant::now();
        for _ in 0..calls {
            let t = Instant::now();
            must(&client, "semantic_search", args.clone()).await?;
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
        }
        let rate = calls as f64 / started.elapsed().as_secs_f64();
        let _ = client.cancel().await;
        rates.insert(
            label.into(),
            json!({ "calls_per_s": rate, "latency": summary(&h) }),
        );
    }
    let on = rates["cache_on"]["calls_per_s"].as_f64().unwrap_or(0.0);
    let off = rates["cache_off"]["calls_per_s"].as_f64().unwrap_or(1.0);
    Ok(
        json!({ "records": records, "calls": calls, "speedup": on / off, "runs": rates, "transport": "stdio" }),
    )
}

// ---------- reference ----------

const REFERENCE: &str = "@modelcontextprotocol/server-memory@2026.8.31";
const GRAPH_OPS: [&str; 5] = [
    "create_entities",
    "create_relations",
    "search_nodes",
    "open_nodes",
    "add_observations",
];

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
            .stdout(std::process::Stdio::null())
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
    use rmcp::ServiceExt;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(entry).env("MEMORY_FILE_PATH", file);
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start node")?;
    let pid = transport.id().unwrap_or(0);
    let client = ().serve(transport).await?;
    Ok((client, pid))
}

/// The nine-tool workload: N entities in batches of 100 (3 observations each),
/// one relation each in batches of 100, then `samples` search_nodes (a word one
/// entity holds), open_nodes (5 names) and add_observations.
async fn graph_workload(
    client: &Client,
    n: usize,
    samples: usize,
    seed: u64,
) -> anyhow::Result<Recorder> {
    const BATCH: usize = 100;
    let mut rng = Rng(seed ^ n as u64);
    let mut rec = Recorder::default();
    let marker = |i: usize| format!("q{i}z");
    for start in (0..n).step_by(BATCH) {
        let entities: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| {
                let kind = ["person", "service", "project"][i % 3];
                json!({ "name": entity(i), "entityType": kind,
                        "observations": [format!("{} {}", marker(i), rng.words(6)), rng.words(8), rng.words(8)] })
            })
            .collect();
        let t = Instant::now();
        let o = call(client, "create_entities", json!({ "entities": entities })).await;
        rec.record("create_entities", "write", t.elapsed(), &o);
    }
    for start in (0..n).step_by(BATCH) {
        let relations: Vec<Value> = (start..(start + BATCH).min(n))
            .map(|i| json!({ "from": entity(i), "to": entity((i * 7 + 1) % n), "relationType": "depends_on" }))
            .collect();
        let t = Instant::now();
        let o = call(
            client,
            "create_relations",
            json!({ "relations": relations }),
        )
        .await;
        rec.record("create_relations", "write", t.elapsed(), &o);
    }
    for _ in 0..samples {
        let t = Instant::now();
        let o = call(
            client,
            "search_nodes",
            json!({ "query": marker(rng.below(n)) }),
        )
        .await;
        rec.record("search_nodes", "read", t.elapsed(), &o);
    }
    for _ in 0..samples {
        let names: Vec<String> = (0..5).map(|_| entity(rng.below(n))).collect();
        let t = Instant::now();
        let o = call(client, "open_nodes", json!({ "names": names })).await;
        rec.record("open_nodes", "read", t.elapsed(), &o);
    }
    for k in 0..samples {
        let args = json!({ "observations": [{ "entityName": entity(rng.below(n)), "contents": [format!("note {k} {}", rng.words(4))] }] });
        let t = Instant::now();
        let o = call(client, "add_observations", args).await;
        rec.record("add_observations", "write", t.elapsed(), &o);
    }
    Ok(rec)
}

async fn reference(cx: &Ctx) -> anyhow::Result<Value> {
    let sizes = cx.pick(&cx.opts.sessions, vec![1000, 10_000], vec![100]);
    let samples = cx.pick(&cx.opts.samples, 200, 10);
    let entry = reference_entry(cx)?;
    let mut runs = Vec::new();
    for &n in &sizes {
        progress(format!("reference: {n} entities, engram"));
        let (client, pid) = stdio_session(
            &cx.engram,
            &cx.dir(&format!("ref-engram-{n}")),
            &["--tools", "compat"],
        )
        .await?;
        let ours = graph_workload(&client, n, samples, cx.opts.seed).await?;
        let (_, ours_peak) = rss_kb(pid);
        let _ = client.cancel().await;
        progress(format!("reference: {n} entities, reference server"));
        let dir = cx.dir(&format!("ref-node-{n}"));
        std::fs::create_dir_all(&dir)?;
        let (client, pid) = reference_session(&entry, &dir.join("memory.jsonl")).await?;
        let theirs = graph_workload(&client, n, samples, cx.opts.seed).await?;
        let (_, theirs_peak) = rss_kb(pid);
        let _ = client.cancel().await;
        let ratios: serde_json::Map<String, Value> = GRAPH_OPS
            .iter()
            .filter_map(|op| {
                let a = ours.ops.get(*op)?.value_at_quantile(0.5) as f64;
                let b = theirs.ops.get(*op)?.value_at_quantile(0.5) as f64;
                Some((op.to_string(), json!(b / a.max(1.0))))
            })
            .collect();
        runs.push(json!({
            "entities": n,
            "samples": samples,
            "engram": ours.to_json(0.0),
            "reference": theirs.to_json(0.0),
            "p50_ratio_reference_over_engram": ratios,
            "engram_peak_rss_mb": ours_peak.map(|k| k as f64 / 1024.0),
            "reference_peak_rss_mb": theirs_peak.map(|k| k as f64 / 1024.0),
        }));
    }
    Ok(json!({ "reference": REFERENCE, "runs": runs }))
}
