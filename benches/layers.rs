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
use engram_bench::workload::{self, LOAD_BATCH, Rng};
use serde_json::{Value, json};

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
        for start in (0..n).step_by(LOAD_BATCH) {
            let k = LOAD_BATCH.min(n - start);
            let events = workload::records(&mut rng, k);
            fx.call("episodic_remember_batch", json!({ "events": events }));
            let facts = workload::records(&mut rng, k);
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

/// Every measured operation: (layer, operation).
const OPS: &[(&str, &str)] = &[
    ("episodic", "episodic_remember"),
    ("episodic", "episodic_recall"),
    ("episodic", "episodic_list"),
    ("semantic", "semantic_store"),
    ("semantic", "semantic_search"),
    ("semantic", "semantic_search_fuzzy"),
    ("semantic", "semantic_search_hybrid"),
    ("semantic", "memory_search"),
    ("graph", "search_nodes"),
    ("graph", "open_nodes"),
    ("graph", "graph_neighbors"),
    ("discovery", "discover_tools"),
];

/// The arguments of one call of `op` on a fixture of `n` entities; a search
/// is two random words unless said otherwise.
fn args(op: &str, r: &mut Rng, n: usize) -> Value {
    match op {
        "episodic_remember" | "semantic_store" => json!({ "content": r.words(12) }),
        "episodic_list" => json!({ "limit": 20, "order": "desc" }),
        "semantic_search_fuzzy" => json!({ "query": format!("{}x", r.words(1)), "limit": 10 }),
        "search_nodes" => json!({ "query": r.words(1), "limit": 10 }),
        "open_nodes" => json!({ "names": [format!("e{}", r.below(n))] }),
        "graph_neighbors" => json!({ "name": format!("e{}", r.below(n)), "depth": 2 }),
        "discover_tools" => json!({ "detail": "name" }),
        _ => json!({ "query": r.words(2), "limit": 10 }),
    }
}

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
        for (layer, op) in OPS {
            let mut group = c.benchmark_group(*layer);
            group.bench_with_input(BenchmarkId::new(*op, n), &n, |b, _| {
                b.iter(|| fx.call(op, args(op, &mut rng, fx.n)))
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
