//! Recall quality on a fixture the project owns (`fixtures/recall.json`):
//! multi-session conversations and developer-project memories, one stored
//! memory per turn, and questions of six kinds (single-hop, multi-hop,
//! temporal, open-domain, paraphrase, negative), plus a knowledge graph with
//! questions for `search_nodes`.
//!
//! Each corpus goes into a server of its own over stdio with
//! `episodic_remember_batch`; every question is asked with `episodic_recall`
//! twice: with the records still only in the index's overlay (the server is
//! told not to commit for an hour) and again once `meta_reindex` has
//! committed them. Scores per kind: R@5 and R@10
//! (the share of a question's answers in the first 5 / 10 hits, averaged),
//! MRR (1 / rank of the first answer), and for negative questions how often
//! nothing came back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::Ctx;
use crate::driver::{Client, must, progress, stdio_session};

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str =
    "recall quality: R@5, R@10 and MRR per kind of question on the project's own fixture";

const FIXTURE: &str = include_str!("../../fixtures/recall.json");
/// Hits read per question.
const DEPTH: usize = 10;
/// Longest wait for the index to commit what was loaded.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// A server that commits its index only when told to (or after an hour), and
/// keeps no answers (the second asking must rank again, not repeat the first).
const SERVER: [&str; 6] = [
    "--index-commit-ms",
    "3600000",
    "--index-commit-docs",
    "1000000",
    "--cache-capacity",
    "0",
];

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let fixture: Value = serde_json::from_str(FIXTURE).context("fixtures/recall.json")?;
    let mut fresh = Scores::default();
    let mut committed = Scores::default();
    let corpora = fixture["corpora"].as_array().cloned().unwrap_or_default();
    let questions = fixture["questions"].as_array().cloned().unwrap_or_default();
    for corpus in &corpora {
        let id = corpus["id"].as_str().unwrap_or("corpus");
        progress(format!("recall: {id}"));
        let dir = cx.dir(&format!("recall-{id}"));
        let (client, _) = stdio_session(&cx.engram, &dir, &SERVER).await?;
        load(&client, corpus).await?;
        let asked: Vec<&Value> = questions.iter().filter(|q| q["corpus"] == id).collect();
        for q in &asked {
            fresh.add(q, &recall(&client, q).await?);
        }
        must(&client, "meta_reindex", json!({})).await?;
        wait_for_commit(&client).await?;
        for q in &asked {
            committed.add(q, &recall(&client, q).await?);
        }
        let _ = client.cancel().await;
    }
    let graph = graph(cx, &fixture["graph"]).await?;
    Ok(json!({
        "memories": corpora.iter().map(|c| c["memories"].as_array().map_or(0, Vec::len)).sum::<usize>(),
        "questions": questions.len(),
        "depth": DEPTH,
        "committed": committed.report(),
        "fresh": fresh.report(),
        "graph": graph.report(),
    }))
}

/// Stores a corpus's memories, each with its fixture id in `metadata`.
async fn load(client: &Client, corpus: &Value) -> anyhow::Result<()> {
    let memories = corpus["memories"].as_array().cloned().unwrap_or_default();
    for chunk in memories.chunks(500) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|m| {
                json!({
                    "content": m["text"], "occurred_at": m["at"],
                    "metadata": {"fixture_id": m["id"]},
                })
            })
            .collect();
        must(
            client,
            "episodic_remember_batch",
            json!({ "events": events }),
        )
        .await?;
    }
    Ok(())
}

/// The fixture ids of the first `DEPTH` hits `episodic_recall` gives.
async fn recall(client: &Client, q: &Value) -> anyhow::Result<Vec<String>> {
    let answer = must(
        client,
        "episodic_recall",
        json!({"query": q["question"], "limit": DEPTH}),
    )
    .await?;
    Ok(answer["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["event"]["metadata"]["fixture_id"].as_str())
        .map(str::to_string)
        .collect())
}

/// Waits until the search index holds everything stored (no overlay left).
async fn wait_for_commit(client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < COMMIT_WAIT {
        let health = must(client, "meta_health", json!({})).await?;
        if health["search_index"]["overlay_records"].as_u64() == Some(0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the index did not commit within {} s",
        COMMIT_WAIT.as_secs()
    )
}

/// The graph's questions through `search_nodes`, with the graph committed.
async fn graph(cx: &Ctx, graph: &Value) -> anyhow::Result<Scores> {
    progress("recall: graph");
    let (client, _) = stdio_session(&cx.engram, &cx.dir("recall-graph"), &[]).await?;
    must(
        &client,
        "create_entities",
        json!({"entities": graph["entities"]}),
    )
    .await?;
    must(
        &client,
        "create_relations",
        json!({"relations": graph["relations"]}),
    )
    .await?;
    wait_for_commit(&client).await?;
    let mut scores = Scores::default();
    for q in graph["questions"].as_array().into_iter().flatten() {
        let answer = must(
            &client,
            "search_nodes",
            json!({"query": q["question"], "limit": DEPTH, "include_observations": false}),
        )
        .await?;
        let names: Vec<String> = answer["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .map(str::to_string)
            .collect();
        let mut q = q.clone();
        q["kind"] = json!("search_nodes");
        scores.add(&q, &names);
    }
    let _ = client.cancel().await;
    Ok(scores)
}

/// Sums per kind of question.
#[derive(Default)]
struct Scores {
    kinds: BTreeMap<String, Kind>,
}

#[derive(Default)]
struct Kind {
    questions: usize,
    recall_5: f64,
    recall_10: f64,
    reciprocal_rank: f64,
    /// Negative questions answered with no hits.
    empty: usize,
    /// Hits returned, in all.
    returned: usize,
}

impl Scores {
    fn add(&mut self, q: &Value, hits: &[String]) {
        let kind = q["kind"].as_str().unwrap_or("unknown").to_string();
        let answers: Vec<&str> = q["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let k = self.kinds.entry(kind).or_default();
        k.questions += 1;
        k.returned += hits.len();
        if answers.is_empty() {
            k.empty += usize::from(hits.is_empty());
            return;
        }
        let found = |n: usize| {
            let top = &hits[..hits.len().min(n)];
            answers
                .iter()
                .filter(|a| top.iter().any(|h| h == *a))
                .count() as f64
                / answers.len() as f64
        };
        k.recall_5 += found(5);
        k.recall_10 += found(10);
        if let Some(rank) = hits.iter().position(|h| answers.contains(&h.as_str())) {
            k.reciprocal_rank += 1.0 / (rank + 1) as f64;
        }
    }

    /// Per kind and over every answerable question: the averages.
    fn report(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut all = Kind::default();
        for (name, k) in &self.kinds {
            out.insert(name.clone(), k.report());
            if name != "negative" {
                all.questions += k.questions;
                all.recall_5 += k.recall_5;
                all.recall_10 += k.recall_10;
                all.reciprocal_rank += k.reciprocal_rank;
                all.returned += k.returned;
            }
        }
        out.insert("all answerable".into(), all.report());
        Value::Object(out)
    }
}

impl Kind {
    fn report(&self) -> Value {
        let n = self.questions.max(1) as f64;
        json!({
            "questions": self.questions,
            "recall_at_5": self.recall_5 / n,
            "recall_at_10": self.recall_10 / n,
            "mrr": self.reciprocal_rank / n,
            "empty_answers": self.empty,
            "hits_per_question": self.returned as f64 / n,
        })
    }
}
