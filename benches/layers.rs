//! Criterion benchmarks per layer: operations called in process through the
//! registry and the whole pipeline (`Engine::call`, the path the server takes
//! after the transport), on fixtures generated at bench time, never committed.
//!
//! `cargo bench --bench layers` runs on 10,000 records per layer;
//! `ENGRAM_BENCH_RECORDS=10000,100000,1000000 cargo bench --bench layers` runs each size
//! (the 1M fixture takes a few minutes to build). Criterion's reports land in
//! target/criterion/. The query cache is off so reads do their work every time.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use engram::Engine;
use engram::config::Config;
use engram::session::Session;
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "deploy",
    "staging",
    "postgres",
    "redis",
    "cache",
    "latency",
    "customer",
    "invoice",
    "billing",
    "search",
    "index",
    "migration",
    "rollback",
    "incident",
    "alert",
    "kafka",
    "schema",
    "backup",
    "token",
    "session",
    "timeout",
    "retry",
    "queue",
    "worker",
    "cluster",
    "node",
    "memory",
    "leak",
    "profile",
    "release",
    "feature",
    "flag",
    "review",
    "design",
    "meeting",
    "budget",
    "roadmap",
    "kernel",
    "network",
    "certificate",
    "password",
    "dashboard",
    "replica",
    "failover",
    "quota",
    "tenant",
    "webhook",
    "scheduler",
    "pipeline",
    "artifact",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One opened data dir holding `n` events, `n` facts and `n` entities.
struct Fixture {
    rt: tokio::runtime::Runtime,
    app: Engine,
    session: Arc<Session>,
    n: usize,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn build(n: usize) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path());
        config.cache_capacity = 0;
        config.rate_limit_per_second = 0;
        let app = rt.block_on(Engine::open(config)).expect("open");
        let session = app.new_session();
        let fx = Fixture {
            rt,
            app,
            session,
            n,
            _dir: dir,
        };
        let mut rng = Rng(0x5EED ^ n as u64);
        for start in (0..n).step_by(1000) {
            let k = 1000.min(n - start);
            let events: Vec<Value> = (0..k)
                .map(|_| json!({ "content": rng.words(12) }))
                .collect();
            fx.call("episodic_remember_batch", json!({ "events": events }));
            let facts: Vec<Value> = (0..k)
                .map(|_| json!({ "content": rng.words(12) }))
                .collect();
            fx.call("semantic_store_batch", json!({ "facts": facts }));
            let entities: Vec<Value> = (start..start + k)
                .map(|i| json!({ "name": format!("e{i}"), "entityType": "component", "observations": [rng.words(8), rng.words(8)] }))
                .collect();
            fx.call("create_entities", json!({ "entities": entities }));
            // Each entity relates to one created at or before this batch.
            let relations: Vec<Value> = (start..start + k)
                .map(|i| (i, (i * 7 + 1) % (start + k)))
                .map(|(i, j)| json!({ "from": format!("e{i}"), "to": format!("e{j}"), "relationType": "calls" }))
                .collect();
            if !relations.is_empty() {
                fx.call("create_relations", json!({ "relations": relations }));
            }
        }
        fx.rt
            .block_on(fx.app.app().search_index().flush())
            .expect("flush");
        fx
    }

    fn call(&self, op: &str, args: Value) -> Value {
        self.rt
            .block_on(self.app.call(&self.session, op, args))
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }
}

/// Makes the arguments of one call.
type ArgsFn = Box<dyn Fn(&mut Rng) -> Value>;

fn sizes() -> Vec<usize> {
    std::env::var("ENGRAM_BENCH_RECORDS")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn layers(c: &mut Criterion) {
    for n in sizes() {
        let fx = Fixture::build(n);
        let mut rng = Rng(42);
        let ops: Vec<(&str, &str, ArgsFn)> = vec![
            (
                "episodic",
                "episodic_remember",
                Box::new(|r| json!({ "content": r.words(12) })),
            ),
            (
                "episodic",
                "episodic_recall",
                Box::new(|r| json!({ "query": r.words(2), "limit": 10 })),
            ),
            (
                "episodic",
                "episodic_list",
                Box::new(|_| json!({ "limit": 20, "order": "desc" })),
            ),
            (
                "semantic",
                "semantic_store",
                Box::new(|r| json!({ "content": r.words(12) })),
            ),
            (
                "semantic",
                "semantic_search",
                Box::new(|r| json!({ "query": r.words(2), "limit": 10 })),
            ),
            (
                "semantic",
                "semantic_search_fuzzy",
                Box::new(|r| json!({ "query": format!("{}x", r.words(1)), "limit": 10 })),
            ),
            (
                "semantic",
                "semantic_search_hybrid",
                Box::new(|r| json!({ "query": r.words(2), "limit": 10 })),
            ),
            (
                "semantic",
                "memory_search",
                Box::new(|r| json!({ "query": r.words(2), "limit": 10 })),
            ),
            (
                "graph",
                "search_nodes",
                Box::new(|r| json!({ "query": r.words(1), "limit": 10 })),
            ),
            ("graph", "open_nodes", {
                let n = fx.n;
                Box::new(move |r: &mut Rng| json!({ "names": [format!("e{}", r.below(n))] }))
            }),
            ("graph", "graph_neighbors", {
                let n = fx.n;
                Box::new(
                    move |r: &mut Rng| json!({ "name": format!("e{}", r.below(n)), "depth": 2 }),
                )
            }),
            (
                "discovery",
                "discover_tools",
                Box::new(|_| json!({ "detail": "name" })),
            ),
        ];
        for (layer, op, args) in &ops {
            let mut group = c.benchmark_group(*layer);
            group.bench_with_input(BenchmarkId::new(*op, n), &n, |b, _| {
                b.iter(|| fx.call(op, args(&mut rng)))
            });
            group.finish();
        }
        fx.app.shutdown();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = layers
}
criterion_main!(benches);
