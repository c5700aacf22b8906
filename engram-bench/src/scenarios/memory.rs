//! Memory: RSS idle, with N records loaded (anonymous and file-backed), and its
//! slope over a soak of the mixed workload at a steady rate (the leak check).
//! The soak also reads the query cache's size from `/metrics` every second: the
//! cache holds up to `--cache-mb` of answers and fills during a soak of
//! distinct questions, so anonymous memory less the cache's bytes is the growth
//! that is not the cache filling up to its bound.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{HttpServer, drive, load_events, mb, must, preload, progress, rss_split_kb};
use crate::recorder::Recorder;
use crate::workload::Rng;

/// Sessions of the soak, each at `SOAK_RATE` calls per second.
const SOAK_SESSIONS: usize = 4;
const SOAK_RATE: f64 = 50.0;
/// Every how many RSS samples (one a second) the trace keeps one.
const TRACE_EVERY: usize = 30;

/// RSS during the soak: seconds since its start, total MB, anonymous MB, and
/// the query cache's counted bytes (answers and keys) in MB, when `/metrics`
/// answered.
type Sample = (f64, f64, f64, Option<f64>);

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "RSS with N records loaded, and RSS slope over a soak (leak check)";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let records = cx.pick(&cx.opts.records, 1_000_000, 2_000);
    let soak_seconds = cx.pick(&cx.opts.seconds, 600.0, 3.0);
    let server = HttpServer::start(&cx.engram, &cx.dir("memory"), &[]).await?;
    let (idle, _) = server.rss_kb();
    let mut out = load(cx, &server, records).await?;
    out["idle_rss_mb"] = json!(mb(idle));
    let (samples, rec) = soak(cx, &server, soak_seconds).await?;
    let (_, peak) = server.rss_kb();
    server.stop().await;
    // Least-squares slopes over the second half of the soak (after warm-up:
    // caches filling, the index's pages being read in), in MB per hour.
    let warm = &samples[samples.len() / 2..];
    let total: Vec<(f64, f64)> = warm.iter().map(|s| (s.0, s.1)).collect();
    let anon: Vec<(f64, f64)> = warm.iter().map(|s| (s.0, s.2)).collect();
    // The samples whose scrape answered (a missing point does not bias a
    // least-squares slope); none at all when too few answered.
    let less_cache: Vec<(f64, f64)> = warm
        .iter()
        .filter_map(|s| Some((s.0, s.2 - s.3?)))
        .collect();
    let less_cache = (less_cache.len() * 10 >= warm.len() * 9).then_some(less_cache);
    let scrapes_failed = samples.iter().filter(|s| s.3.is_none()).count();
    let per_hour = |points: &[(f64, f64)]| least_squares_slope(points).map(|s| s * 3600.0);
    let trace: Vec<[Option<f64>; 4]> = samples
        .iter()
        .step_by(TRACE_EVERY)
        .map(|s| [Some(s.0.round()), Some(s.1), Some(s.2), s.3])
        .collect();
    let soak = json!({
        "soak_seconds": soak_seconds,
        "soak_rss_samples": samples.len(),
        "soak_start_rss_mb": samples.first().map(|s| s.1),
        "soak_end_rss_mb": samples.last().map(|s| s.1),
        "soak_start_anon_rss_mb": samples.first().map(|s| s.2),
        "soak_end_anon_rss_mb": samples.last().map(|s| s.2),
        "rss_slope_mb_per_hour": per_hour(&total),
        "anon_rss_slope_mb_per_hour": per_hour(&anon),
        "soak_end_cache_mb": samples.last().and_then(|s| s.3),
        "soak_cache_scrapes_failed": scrapes_failed,
        "anon_less_cache_slope_mb_per_hour": less_cache.as_deref().and_then(per_hour),
        "soak_trace_s_rss_anon_cache": trace,
        "peak_rss_mb": mb(peak),
        "soak_asked_calls_per_s": SOAK_SESSIONS as f64 * SOAK_RATE,
        "soak_workload": rec.to_json(soak_seconds),
    });
    for (k, v) in soak.as_object().into_iter().flatten() {
        out[k] = v.clone();
    }
    Ok(out)
}

/// Loads `records` events, warms the index with searches, and measures RSS.
async fn load(cx: &Ctx, server: &HttpServer, records: usize) -> anyhow::Result<Value> {
    let c = server.session().await?;
    progress(format!("memory: loading {records} events"));
    let mut rng = Rng(cx.opts.seed);
    load_events(&c, &mut rng, records, "memory").await?;
    // A pass of searches, so the index's caches are warm as in use.
    for _ in 0..100 {
        let args = json!({ "query": rng.words(2), "limit": 10 });
        must(&c, "episodic_recall", args).await?;
    }
    let (loaded, loaded_peak) = server.rss_kb();
    let (loaded_anon, loaded_file) = rss_split_kb(server.pid);
    let _ = c.cancel().await;
    Ok(json!({
        "records": records,
        "loaded_rss_mb": mb(loaded),
        "loaded_anon_rss_mb": mb(loaded_anon),
        "loaded_file_rss_mb": mb(loaded_file),
        "loaded_peak_rss_mb": mb(loaded_peak),
    }))
}

/// The mixed workload at a steady rate for `seconds`, RSS sampled every second.
async fn soak(
    cx: &Ctx,
    server: &HttpServer,
    seconds: f64,
) -> anyhow::Result<(Vec<Sample>, Recorder)> {
    let setup = server.session().await?;
    preload(&setup, 0, cx.opts.seed).await?;
    let _ = setup.cancel().await;
    progress(format!("memory: soak for {seconds} s"));
    let sessions = server.sessions(SOAK_SESSIONS).await;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (mix, seed) = (cx.mix()?, cx.opts.seed);
    let tasks = sessions.spawn(|i, c| async move {
        drive(
            &c,
            mix,
            seed ^ (i as u64 + 99),
            until,
            Some(SOAK_RATE),
            None,
        )
        .await
    });
    let started = Instant::now();
    // A scrape that hangs must not stall the RSS samples.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let mut samples: Vec<Sample> = Vec::new();
    // One sample a second on the clock, however long each scrape takes.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= until {
            break;
        }
        let cache = cache_mb(server, &http).await;
        if let ((Some(kb), _), (Some(anon), _)) = (server.rss_kb(), rss_split_kb(server.pid)) {
            let elapsed = started.elapsed().as_secs_f64();
            samples.push((elapsed, kb as f64 / 1024.0, anon as f64 / 1024.0, cache));
        }
    }
    let rec = Recorder::merged(tasks.join_all().await);
    sessions.close().await;
    Ok((samples, rec))
}

/// `engram_cache_bytes` from the server's `/metrics`, in MB; `None` when the
/// scrape fails (it is a figure beside the RSS, not a reason to stop the soak).
async fn cache_mb(server: &HttpServer, http: &reqwest::Client) -> Option<f64> {
    use prometheus_parse::Value as Metric;
    let scrape = server.metrics(http).await.ok()?;
    scrape
        .samples
        .into_iter()
        .find_map(|s| match (s.metric.as_str(), s.value) {
            ("engram_cache_bytes", Metric::Gauge(b) | Metric::Untyped(b)) => {
                Some(b / 1024.0 / 1024.0)
            }
            _ => None,
        })
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
