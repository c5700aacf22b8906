//! Workflows as agents chain them, over one stdio session: learn from
//! experience (four writes), knowledge discovery (search, open, look around) and
//! an operator's health checks. A workflow's time is all its calls in sequence.

use std::time::Instant;

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{Client, preload, stdio_session, timed};
use crate::recorder::{Outcome, Recorder};
use crate::workload::{GRAPH_ENTITIES, Rng, entity};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "learn-from-experience, knowledge discovery and health checks as agents chain them";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let iterations = cx.pick(&cx.opts.samples, 300, 10);
    let records = cx.pick(&cx.opts.records, 2_000, 100);
    let (client, _) = stdio_session(&cx.engram, &cx.dir("workflows"), &[]).await?;
    preload(&client, records, cx.opts.seed).await?;
    let mut rng = Rng(cx.opts.seed ^ 0x77);
    let mut learn = Recorder::default();
    let mut discover = Recorder::default();
    let mut health = Recorder::default();
    for k in 0..iterations {
        let steps = learn_from_experience(&mut rng, k);
        workflow(&mut learn, &client, "learn_from_experience", steps).await;
        let steps = knowledge_discovery(&mut rng);
        workflow(&mut discover, &client, "knowledge_discovery", steps).await;
        // Health checks, as an operator's probe makes them.
        for op in ["meta_health", "meta_cache_stats"] {
            timed(&mut health, &client, op, "read", json!({})).await;
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

/// What happened, what it taught, who it concerns.
fn learn_from_experience(rng: &mut Rng, k: usize) -> Vec<(&'static str, Value)> {
    vec![
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
            json!({ "relations": [{ "from": format!("lesson-{k}"), "to": entity(rng.below(GRAPH_ENTITIES)), "relationType": "concerns" }] }),
        ),
    ]
}

/// Search everything, open what was found, look around it.
fn knowledge_discovery(rng: &mut Rng) -> Vec<(&'static str, Value)> {
    let query = rng.words(2);
    let name = entity(rng.below(GRAPH_ENTITIES));
    vec![
        ("memory_search", json!({ "query": query, "limit": 10 })),
        ("open_nodes", json!({ "names": [name] })),
        ("graph_neighbors", json!({ "name": name, "depth": 2 })),
    ]
}

/// Runs `steps` in sequence, each recorded as a `step`, and the whole as the
/// `complex` operation `name` (failed if any step failed).
async fn workflow(
    rec: &mut Recorder,
    client: &Client,
    name: &str,
    steps: Vec<(&'static str, Value)>,
) {
    let started = Instant::now();
    let mut ok = true;
    for (op, args) in steps {
        ok &= timed(rec, client, op, "step", args).await.kind().is_none();
    }
    rec.record(name, "complex", started.elapsed(), &Outcome::all_steps(ok));
}
