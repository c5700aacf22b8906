//! Many nodes on one PostgreSQL: the ladder's mixed workload on one node with
//! sqlite (the embedded default), then on 1, 2 and 3 nodes sharing a
//! PostgreSQL database, the sessions spread evenly over the nodes as a load
//! balancer would. Each node is the real binary with a data dir (search
//! index) of its own; PostgreSQL is a throwaway cluster on this machine
//! (`postgres.rs`), commits durable. From each node's `/metrics`, how many
//! writes each group commit carried during the rung.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::Ctx;
use super::ladder::rung;
use crate::driver::{HttpServer, preload, progress};
use crate::postgres::Cluster;

/// What `engram-bench scenarios` says of it.
pub const ABOUT: &str = "many nodes: the mixed workload on 1, 2 and 3 nodes sharing PostgreSQL, \
                         and on one node with sqlite (calls/s, p95, writes per group commit)";

/// The setups measured: (store, nodes).
const SETUPS: [(&str, usize); 4] = [
    ("sqlite", 1),
    ("postgres", 1),
    ("postgres", 2),
    ("postgres", 3),
];

pub async fn run(cx: &Ctx) -> anyhow::Result<Value> {
    let rungs = cx.pick(&cx.opts.sessions, vec![10, 100], vec![3]);
    let seconds = cx.pick(&cx.opts.seconds, 10.0, 1.0);
    let records = cx.pick(&cx.opts.records, 10_000, 200);
    let mix = cx.mix()?;
    // Under the system's temp dir: the `postgres` user (when running as root)
    // must be able to reach the cluster's dir, which a private work dir denies.
    let root = cluster_root();
    progress("cluster: starting PostgreSQL");
    let pg = tokio::task::spawn_blocking(move || Cluster::start(&root)).await?;
    let version = pg.sql("postgres", "SHOW server_version");
    let mut setups = Vec::new();
    for (store, nodes) in SETUPS {
        let url = (store == "postgres").then(|| pg.create_database(&format!("bench_{nodes}")));
        let extra: Vec<&str> = url.iter().flat_map(|u| ["--store", u.as_str()]).collect();
        let mut servers = Vec::new();
        for i in 0..nodes {
            let dir = cx.dir(&format!("cluster-{store}-{nodes}-{i}"));
            servers.push(HttpServer::start(&cx.engram, &dir, &extra).await?);
        }
        let setup = servers[0].session().await?;
        progress(format!(
            "cluster: {store}, {nodes} node(s): preloading {records} events and facts"
        ));
        preload(&setup, records, cx.opts.seed).await?;
        let _ = setup.cancel().await;
        if store == "postgres" {
            // The planner's statistics, which autovacuum gathers within its
            // first minute: without them PostgreSQL guesses `namespace = ?`
            // as selective as `id = ?` and may scan a namespace for an id.
            pg.sql(&format!("bench_{nodes}"), "ANALYZE");
        }
        let refs: Vec<&HttpServer> = servers.iter().collect();
        let mut measured = Vec::new();
        for &n in &rungs {
            let before = commits(&refs).await?;
            let mut r = rung(cx, &refs, n, seconds, mix).await;
            let after = commits(&refs).await?;
            r["commits"] = json!(after.since(&before));
            measured.push(r);
        }
        for s in servers {
            s.stop().await;
        }
        setups.push(json!({ "store": store, "nodes": nodes, "rungs": measured }));
    }
    let dir = pg.dir.clone();
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(json!({
        "mix": mix, "seconds_per_rung": seconds, "records": records, "rate": cx.opts.rate,
        "postgres_version": version, "setups": setups,
    }))
}

fn cluster_root() -> PathBuf {
    std::env::temp_dir().join("engram-bench-pg")
}

/// Group commits so far, summed over nodes: how many, how many writes they
/// carried, and how many carried one write only.
#[derive(Debug, Default, Clone, Copy)]
struct Commits {
    commits: f64,
    writes: f64,
    single: f64,
}

impl Commits {
    fn since(&self, before: &Commits) -> Value {
        let commits = self.commits - before.commits;
        let writes = self.writes - before.writes;
        let single = self.single - before.single;
        json!({
            "commits": commits,
            "writes": writes,
            "writes_per_commit": (commits > 0.0).then(|| writes / commits),
            "single_write_share": (commits > 0.0).then(|| single / commits),
        })
    }
}

/// Reads `engram_commit_batch_size` from every node's `/metrics`.
async fn commits(servers: &[&HttpServer]) -> anyhow::Result<Commits> {
    use prometheus_parse::Value as Metric;
    let http = reqwest::Client::new();
    let mut total = Commits::default();
    for s in servers {
        for sample in s.metrics(&http).await?.samples {
            match (sample.metric.as_str(), sample.value) {
                ("engram_commit_batch_size_count", Metric::Untyped(n) | Metric::Counter(n)) => {
                    total.commits += n
                }
                ("engram_commit_batch_size_sum", Metric::Untyped(n) | Metric::Counter(n)) => {
                    total.writes += n
                }
                ("engram_commit_batch_size", Metric::Histogram(buckets)) => {
                    let single = buckets.iter().find(|b| b.less_than == 1.0);
                    total.single += single.map_or(0.0, |b| b.count);
                }
                _ => {}
            }
        }
    }
    Ok(total)
}
