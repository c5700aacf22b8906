//! Semantic search and the query cache, measured in process through the same
//! pipeline the server uses (`Engine::call`: limiter, cache, breaker, registry,
//! real sqlite file, real tantivy index in a temporary dir).
//!
//! `cargo bench --bench semantic -- --facts 10000,100000,1000000`
//!   for each size: generate that many facts (seeded, Zipf-distributed words from
//!   a synthetic 3000-word vocabulary, 12 words each), load them in batches of
//!   1000, commit the index, then
//!   - search: p50/p95/p99 of every search style on random 2-word queries, with the
//!     cache off (each call really searches);
//!   - cache: one query repeated, calls per second with the cache on vs off;
//!   - mixed: 90 % searches over 200 Zipf-popular queries, 10 % stores; the
//!     cache's hit rate and the latency of the mix.
//!
//! Results print as a table and go to `bench-results/semantic-<unix time>.json`.
//! Nothing here asserts a speed.

mod common;

use std::time::{Duration, Instant};

use common::Bench;
use engram_bench::recorder::{histogram, record_since, summary};
use engram_bench::workload::{self, Rng, Zipf};
use serde_json::{Value, json};

const VOCABULARY: usize = 3000;
const WORDS_PER_FACT: usize = 12;

/// Zipf-distributed sentences and queries over a made-up vocabulary.
struct Fixture {
    words: Vec<String>,
    zipf: Zipf,
    rng: Rng,
}

impl Fixture {
    /// The fixture every run of size `n` starts from (the same for cache off and on).
    fn seeded(n: usize) -> Fixture {
        Fixture {
            words: workload::made_up_words(VOCABULARY),
            zipf: Zipf::new(VOCABULARY),
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64),
        }
    }

    fn sentence(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| self.words[self.zipf.sample(&mut self.rng)].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Two words from the middle of the distribution: common enough to match,
    /// rare enough to rank.
    fn query(&mut self) -> String {
        let pick = |f: &mut Fixture| {
            let r = 10 + (f.rng.next_u64() % 500) as usize;
            f.words[r].clone()
        };
        format!("{} {}", pick(self), pick(self))
    }
}

impl Bench {
    async fn load(&self, fixture: &mut Fixture, n: usize) -> Duration {
        let started = Instant::now();
        let mut loaded = 0;
        for batch in workload::batch_sizes(n) {
            let facts: Vec<Value> = (0..batch)
                .map(|i| {
                    json!({
                        "content": fixture.sentence(WORDS_PER_FACT),
                        "tags": [format!("t{}", i % 20)],
                        "confidence": (i % 10) as f64 / 10.0,
                    })
                })
                .collect();
            self.call("semantic_store_batch", json!({ "facts": facts }))
                .await;
            loaded += batch;
            if loaded.is_multiple_of(100_000) {
                eprintln!("  loaded {loaded} / {n}");
            }
        }
        self.app.app().search_index().flush().await.expect("flush");
        started.elapsed()
    }
}

async fn search_latencies(b: &Bench, fixture: &mut Fixture, samples: usize) -> Value {
    type Args = fn(&str) -> Value;
    let styles: &[(&str, Args)] = &[
        ("semantic_search", |q| json!({ "query": q })),
        ("semantic_search_phrase", |q| json!({ "query": q })),
        (
            "semantic_search_prefix",
            |q| json!({ "query": &q[..q.len() - 2] }),
        ),
        ("semantic_search_fuzzy", |q| json!({ "query": q })),
        ("semantic_search_boolean", |q| {
            let mut w = q.split(' ');
            json!({ "query": format!("{} OR {}", w.next().unwrap(), w.next().unwrap()) })
        }),
        ("semantic_search_hybrid", |q| json!({ "query": q })),
        ("memory_search", |q| json!({ "query": q })),
    ];
    let mut out = serde_json::Map::new();
    for (op, args) in styles {
        let mut h = histogram();
        for _ in 0..samples {
            let q = fixture.query();
            let started = Instant::now();
            b.call(op, args(&q)).await;
            record_since(&mut h, started);
        }
        eprintln!(
            "  {op:<26} p50 {:>8.3} ms  p95 {:>8.3} ms  p99 {:>8.3} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.95) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        );
        out.insert(op.to_string(), summary(&h));
    }
    Value::Object(out)
}

/// Calls per second of one query repeated `n` times.
async fn repeated(b: &Bench, query: &str, n: usize) -> f64 {
    let args = json!({ "query": query });
    let started = Instant::now();
    for _ in 0..n {
        b.call("semantic_search", args.clone()).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn mixed(b: &Bench, fixture: &mut Fixture, calls: usize) -> Value {
    let popular: Vec<String> = (0..200).map(|_| fixture.query()).collect();
    let pick = Zipf::new(popular.len());
    let (mut reads, mut writes) = (histogram(), histogram());
    for i in 0..calls {
        let started = Instant::now();
        if i % 10 == 9 {
            let content = fixture.sentence(WORDS_PER_FACT);
            b.call("semantic_store", json!({ "content": content }))
                .await;
            record_since(&mut writes, started);
        } else {
            let q = &popular[pick.sample(&mut fixture.rng)];
            b.call("semantic_search", json!({ "query": q })).await;
            record_since(&mut reads, started);
        }
    }
    let stats = b.call("meta_cache_stats", json!({})).await;
    let s = &stats["operations"]["semantic_search"];
    let (hits, misses) = (
        s["hits"].as_u64().unwrap_or(0),
        s["misses"].as_u64().unwrap_or(0),
    );
    json!({
        "calls": calls,
        "search": summary(&reads),
        "store": summary(&writes),
        "search_hit_rate": hits as f64 / (hits + misses).max(1) as f64,
        "cache": stats,
    })
}

fn main() {
    engram_bench::inprocess::main("semantic", "--facts", "10000", 500, run);
}

/// One size: search latencies and the repeated query with the cache off, then
/// the same data with the cache on for the repeated query and the mix.
async fn run(n: usize, samples: usize) -> Value {
    let mut fixture = Fixture::seeded(n);
    // Cache off: every search is a real search.
    let off = Bench::open(0).await;
    let load = off.load(&mut fixture, n).await;
    eprintln!("  loaded in {:.1} s", load.as_secs_f64());
    let search = search_latencies(&off, &mut fixture, samples).await;
    let q = fixture.query();
    let rate_off = repeated(&off, &q, samples).await;
    off.app.shutdown();
    drop(off);
    // The same data with the cache on.
    let mut fixture_on = Fixture::seeded(n);
    let on = Bench::open(10_000).await;
    on.load(&mut fixture_on, n).await;
    let rate_on = repeated(&on, &q, samples * 10).await;
    eprintln!(
        "  repeated query: {rate_off:.0}/s cache off, {rate_on:.0}/s cache on ({:.1}x)",
        rate_on / rate_off
    );
    let mix = mixed(&on, &mut fixture_on, samples * 10).await;
    eprintln!(
        "  mixed 90/10: search hit rate {:.1} %, search p50 {} ms p95 {} ms",
        mix["search_hit_rate"].as_f64().unwrap_or(0.0) * 100.0,
        mix["search"]["p50_ms"],
        mix["search"]["p95_ms"],
    );
    on.app.shutdown();
    json!({
        "facts": n,
        "load_seconds": load.as_secs_f64(),
        "search": search,
        "repeated_query_per_second": { "cache_off": rate_off, "cache_on": rate_on, "speedup": rate_on / rate_off },
        "mixed": mix,
    })
}
