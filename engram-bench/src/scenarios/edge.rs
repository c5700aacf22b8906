//! What authentication and metrics cost: the ladder's first rung (10 sessions,
//! the mixed workload) against a server without tokens, and against one whose
//! every request carries a token it looks up and checks while `/metrics` is
//! scraped every second. The two alternate for `--samples` rounds, so drift on
//! a noisy machine falls on both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use super::ladder::rung;
use crate::driver::{HttpServer, preload, progress};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "tokens and /metrics: the ladder's first rung with and without them (calls/s, p95)";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let sessions = cx.pick(&cx.opts.sessions, vec![10], vec![2])[0];
    let seconds = cx.pick(&cx.opts.seconds, 10.0, 1.0);
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let rounds = cx.pick(&cx.opts.samples, 3, 1);
    let mix = cx.mix()?;
    let plain = HttpServer::start(&cx.engram, &cx.dir("edge-plain"), &[]).await?;
    let guarded = HttpServer::start_with_token(&cx.engram, &cx.dir("edge-auth")).await?;
    for server in [&plain, &guarded] {
        let setup = server.session().await?;
        progress(format!("edge: preloading {records} events and facts"));
        preload(&setup, records, cx.opts.seed).await?;
        let _ = setup.cancel().await;
    }
    let scrapes = Scrapes::default();
    let scraper = tokio::spawn(scrape(&guarded, scrapes.clone()));
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        progress(format!("edge: round {round} of {rounds}"));
        without.push(rung(cx, &[&plain], sessions, seconds, mix).await);
        with.push(rung(cx, &[&guarded], sessions, seconds, mix).await);
    }
    scraper.abort();
    plain.stop().await;
    guarded.stop().await;
    Ok(json!({
        "mix": mix, "sessions": sessions, "seconds_per_rung": seconds, "records": records,
        "rounds": rounds, "without": without, "with": with,
        "scrapes": scrapes.ok.load(Ordering::Relaxed),
        "scrape_failures": scrapes.failed.load(Ordering::Relaxed),
    }))
}

#[derive(Clone, Default)]
struct Scrapes {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

/// GETs `/metrics` with the server's token every second, as Prometheus would.
fn scrape(server: &HttpServer, scrapes: Scrapes) -> impl Future<Output = ()> + use<> {
    let url = server.metrics_url();
    let token = server.token().unwrap_or_default().to_string();
    async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let ok = match http.get(&url).bearer_auth(&token).send().await {
                Ok(r) if r.status().is_success() => r.text().await.is_ok(),
                _ => false,
            };
            let counter = if ok { &scrapes.ok } else { &scrapes.failed };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
