//! Tool discovery: `discover_tools` at each detail level and `tools/list` per
//! profile, over stdio: latency and the size of the answer.

use std::time::Instant;

use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{must, stdio_session};
use crate::recorder::{histogram, record_since, summary};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "tool discovery at name / summary / full detail: latency and bytes";

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let samples = cx.pick(&cx.opts.samples, 200, 10);
    let mut out = serde_json::Map::new();
    for detail in ["name", "summary", "full"] {
        out.insert(
            format!("discover_tools_{detail}"),
            discover_tools(cx, detail, samples).await?,
        );
    }
    for profile in ["core", "all"] {
        out.insert(
            format!("tools_list_{profile}"),
            tools_list(cx, profile, samples).await?,
        );
    }
    Ok(Value::Object(out))
}

async fn discover_tools(cx: &Ctx, detail: &str, samples: usize) -> anyhow::Result<Value> {
    let (client, _) = stdio_session(&cx.engram, &cx.dir("discovery"), &[]).await?;
    let mut h = histogram();
    let mut bytes = 0;
    for _ in 0..samples {
        let started = Instant::now();
        let v = must(&client, "discover_tools", json!({ "detail": detail })).await?;
        record_since(&mut h, started);
        bytes = serde_json::to_string(&v)?.len();
    }
    let _ = client.cancel().await;
    Ok(json!({ "latency": summary(&h), "bytes": bytes }))
}

async fn tools_list(cx: &Ctx, profile: &str, samples: usize) -> anyhow::Result<Value> {
    let dir = cx.dir("discovery");
    let (client, _) = stdio_session(&cx.engram, &dir, &["--tools", profile]).await?;
    let mut h = histogram();
    let mut bytes = 0;
    let mut count = 0;
    for _ in 0..samples {
        let started = Instant::now();
        let tools = client.list_all_tools().await?;
        record_since(&mut h, started);
        bytes = serde_json::to_string(&tools)?.len();
        count = tools.len();
    }
    let _ = client.cancel().await;
    Ok(json!({ "latency": summary(&h), "bytes": bytes, "tools": count }))
}
