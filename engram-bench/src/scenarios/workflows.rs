//! Workflows as agents chain them, over one stdio session: learn from
//! experience (what happened, the lesson, the graph, ending in a procedure and
//! its recorded run), knowledge discovery (search, open, look around), task
//! management (a task, the work on it, what is due, done, the audit trail) and
//! an operator's health checks. A workflow's time is all its calls in sequence.

use std::time::Instant;

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{Client, preload, stdio_session, timed};
use crate::recorder::{Outcome, Recorder};
use crate::workload::{GRAPH_ENTITIES, Rng, entity};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "learn-from-experience, knowledge discovery, task management and health checks as agents chain them";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let iterations = cx.pick(&cx.opts.samples, 300, 10);
    let records = cx.pick(&cx.opts.records, 2_000, 100);
    let (client, _) = stdio_session(&cx.engram, &cx.dir("workflows"), &[]).await?;
    preload(&client, records, cx.opts.seed).await?;
    let mut rng = Rng(cx.opts.seed ^ 0x77);
    let mut learn = Recorder::default();
    let mut discover = Recorder::default();
    let mut tasks = Recorder::default();
    let mut health = Recorder::default();
    for k in 0..iterations {
        let steps = learn_from_experience(&mut rng, k);
        workflow(&mut learn, &client, "learn_from_experience", steps).await;
        let steps = knowledge_discovery(&mut rng);
        workflow(&mut discover, &client, "knowledge_discovery", steps).await;
        let steps = task_management(&mut rng, k);
        workflow(&mut tasks, &client, "task_management", steps).await;
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
        "task_management": tasks.to_json(0.0),
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
        (
            "procedural_store",
            json!({ "name": format!("fix-{k}"), "goal": format!("fix {}", rng.words(3)), "steps": [rng.words(4), rng.words(4), rng.words(4)] }),
        ),
        (
            "procedural_record_execution",
            json!({ "id": format!("fix-{k}"), "outcome": "success", "duration_ms": 1000 + rng.below(5000) }),
        ),
    ]
}

/// Plan a task, work on it, see what is due, finish it, check the trail.
fn task_management(rng: &mut Rng, k: usize) -> Vec<(&'static str, Value)> {
    vec![
        (
            "prospective_create",
            json!({ "title": format!("task {k}: {}", rng.words(4)), "due_at": "in 2h", "priority": "high" }),
        ),
        (
            "episodic_remember",
            json!({ "content": format!("worked on task {k}: {}", rng.words(6)) }),
        ),
        ("prospective_due", json!({ "before": "in 1d", "limit": 10 })),
        (
            "prospective_complete",
            json!({ "id": TASK, "note": "done" }),
        ),
        ("meta_audit", json!({ "limit": 5 })),
    ]
}

/// Stands for the id of the task an earlier step of the workflow created.
const TASK: &str = "$TASK";

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
    let mut task: Option<Value> = None;
    for (op, mut args) in steps {
        if let (Some(id), Some(fields)) = (&task, args.as_object_mut()) {
            for v in fields.values_mut().filter(|v| *v == TASK) {
                *v = id.clone();
            }
        }
        let outcome = timed(rec, client, op, "step", args).await;
        ok &= outcome.kind().is_none();
        if let Ok(answer) = outcome.value()
            && let Some(id) = answer.pointer("/task/id")
        {
            task = Some(id.clone());
        }
    }
    rec.record(name, "complex", started.elapsed(), &Outcome::all_steps(ok));
}
