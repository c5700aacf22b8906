//! Semantic memory and the pipeline stages, in process, against a real sqlite
//! file and a real tantivy index: search styles ranked on a small committed
//! fixture (tests/fixtures/facts.json), versions, the query cache across
//! sessions, the search breaker with a really broken index, the rate limiter.

mod common;

use std::time::{Duration, Instant};

use common::mem::Mem;
use common::{numbers, strings};
use serde_json::{Value, json};

/// Shorthands for what several tests here do.
trait Semantic {
    async fn load_fixture(&self) -> Vec<String>;
    async fn fact_count(&self) -> usize;
    async fn search(&self, op: &str, query: &str) -> Value;
    async fn wait_health(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value;
}

impl Semantic for Mem {
    /// Stores the fixture; returns the ids in fixture order.
    async fn load_fixture(&self) -> Vec<String> {
        let facts: Value =
            serde_json::from_str(include_str!("fixtures/facts.json")).expect("fixture parses");
        let stored = self
            .ok("semantic_store_batch", json!({ "facts": facts }))
            .await;
        stored["facts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    }

    async fn fact_count(&self) -> usize {
        self.ok("semantic_list", json!({ "limit": 500 })).await["facts"]
            .as_array()
            .unwrap()
            .len()
    }

    /// A search with nothing but its query.
    async fn search(&self, op: &str, query: &str) -> Value {
        self.ok(op, json!({ "query": query })).await
    }

    /// Polls health until `done` holds (at most 20 s).
    async fn wait_health(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let h = self.ok("meta_health", json!({})).await;
            if done(&h) {
                return h;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "health never showed {what}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn contents(v: &Value) -> Vec<&str> {
    strings(&v["hits"], "/fact/content")
}

fn breaker<'a>(health: &'a Value, backend: &str) -> &'a Value {
    health["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == backend)
        .unwrap()
}

/// Runs `check` twice: on the overlay (nothing committed) and on the committed index.
async fn on_overlay_and_index(check: impl AsyncFn(&Mem)) {
    let h = Mem::new().await;
    h.load_fixture().await;
    check(&h).await;
    h.flush().await;
    check(&h).await;
}

#[tokio::test]
async fn ranked_search_puts_the_best_match_first() {
    on_overlay_and_index(async |h| {
        let r = h
            .search("semantic_search", "postgres replica failover")
            .await;
        let c = contents(&r);
        assert!(
            c[0].starts_with("Production Postgres has one streaming replica"),
            "{c:?}"
        );
        assert!(
            c.iter()
                .all(|s| s.contains("Postgres") || s.contains("replica")),
            "{c:?}"
        );
        assert!(
            r["hits"][0]["snippet"]
                .as_str()
                .unwrap()
                .contains("**replica**")
        );
    })
    .await;
}

#[tokio::test]
async fn phrase_search_wants_the_words_in_order() {
    on_overlay_and_index(async |h| {
        let r = h.search("semantic_search_phrase", "staging database").await;
        assert_eq!(
            contents(&r),
            vec!["The staging database is PostgreSQL 16 running on db-stg-1"]
        );
        // "database for staging" holds both words, in the other order: not a match.
        let r = h
            .search("semantic_search_phrase", "connection pool size")
            .await;
        assert_eq!(contents(&r).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn prefix_search_completes_the_last_word() {
    on_overlay_and_index(async |h| {
        let r = h.search("semantic_search_prefix", "postgres repl").await;
        let mut c = contents(&r);
        c.sort();
        assert_eq!(
            c,
            vec![
                "Postgres replication lag alerts fire above 30 seconds",
                "Production Postgres has one streaming replica in another region for failover",
            ]
        );
        let r = h.search("semantic_search_prefix", "kube").await;
        assert_eq!(contents(&r).len(), 1);
        let r = h.search("semantic_search_prefix", "zzz").await;
        assert!(contents(&r).is_empty());
    })
    .await;
}

#[tokio::test]
async fn fuzzy_search_forgives_typos_and_ranks_exact_words_first() {
    on_overlay_and_index(async |h| {
        let r = h.search("semantic_search_fuzzy", "postgress").await;
        let c = contents(&r);
        assert_eq!(c.len(), 4, "every Postgres fact: {c:?}");
        let r = h
            .search("semantic_search_fuzzy", "kubernetis deploymnets")
            .await;
        assert!(contents(&r)[0].starts_with("Kubernetes deployments"), "{r}");
        // Capped at zero edits, the typo finds nothing.
        let r = h
            .ok(
                "semantic_search_fuzzy",
                json!({ "query": "postgress", "max_distance": 0 }),
            )
            .await;
        assert!(contents(&r).is_empty());
        // The exact spelling outranks the near miss.
        h.ok(
            "semantic_store",
            json!({ "content": "Grafanna is a misspelling seen in old notes" }),
        )
        .await;
        let r = h.search("semantic_search_fuzzy", "grafana").await;
        assert!(contents(&r)[0].starts_with("Grafana dashboards"), "{r}");
        assert_eq!(contents(&r).len(), 2);
        h.ok(
            "semantic_delete",
            json!({ "ids": [r["hits"][1]["fact"]["id"]] }),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn boolean_search_combines_words_phrases_and_tags() {
    on_overlay_and_index(async |h| {
        let q = |query: &str| json!({ "query": query, "limit": 50 });
        let r = h
            .ok(
                "semantic_search_boolean",
                q("postgres NOT (replica OR replication)"),
            )
            .await;
        let mut c = contents(&r);
        c.sort();
        // "PostgreSQL" is another word than "Postgres" (semantic_search_fuzzy bridges them).
        assert_eq!(
            c,
            vec!["Backups of the Postgres primary run nightly at 02:00 UTC"]
        );
        let r = h
            .ok("semantic_search_boolean", q("tag:db -postgres -postgresql"))
            .await;
        assert_eq!(
            contents(&r),
            vec!["The database for staging experiments is a throwaway MySQL instance"]
        );
        let r = h
            .ok("semantic_search_boolean", q("\"connection pool\" OR redis"))
            .await;
        assert_eq!(contents(&r).len(), 2);
        let e = h.err("semantic_search_boolean", q("(postgres OR")).await;
        assert!(e.contains("`query`"), "{e}");
        let e = h.err("semantic_search_boolean", q("NOT postgres")).await;
        assert!(e.contains("only excludes"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn filters_paging_and_the_size_budget() {
    let h = Mem::new().await;
    h.load_fixture().await;
    let r = h
        .ok(
            "semantic_search",
            json!({ "query": "postgres", "tags": ["backup"] }),
        )
        .await;
    assert_eq!(contents(&r).len(), 1);
    let r = h
        .ok(
            "semantic_search",
            json!({ "query": "postgres postgresql", "min_confidence": 0.85 }),
        )
        .await;
    assert_eq!(contents(&r).len(), 2);

    // Page through all Postgres facts two at a time: no loss, no repeat.
    let args = json!({ "query": "postgres postgresql", "limit": 2 });
    let pages = h.pages("semantic_search", args).await;
    let seen: Vec<&str> = pages.iter().flat_map(contents).collect();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (4, 4), "{seen:?}");

    // A small budget cuts the page; the cursor picks up where it stopped.
    let r = h
        .ok(
            "semantic_search",
            json!({ "query": "postgres postgresql", "max_chars": 600 }),
        )
        .await;
    assert_eq!(r["truncated"], true);
    let first = contents(&r);
    assert!(!first.is_empty() && first.len() < 4);
    assert!(serde_json::to_string(&r["hits"]).unwrap().len() <= 600 || first.len() == 1);
    let rest = h
        .ok(
            "semantic_search",
            json!({ "query": "postgres postgresql", "max_chars": 600, "cursor": r["next_cursor"] }),
        )
        .await;
    assert!(!contents(&rest).iter().any(|c| first.contains(c)));
    let e = h
        .err(
            "semantic_search",
            json!({ "query": "postgres", "max_chars": 10 }),
        )
        .await;
    assert!(e.contains("max_chars"), "{e}");
}

#[tokio::test]
async fn supersede_keeps_history_and_hides_the_old_version() {
    let h = Mem::new().await;
    let v1 = h
        .ok(
            "semantic_store",
            json!({ "content": "The API rate limit is 100 requests per minute", "tags": ["api"] }),
        )
        .await["fact"]["id"]
        .clone();
    let s = h
        .ok(
            "semantic_supersede",
            json!({ "id": v1, "new": { "content": "The API rate limit is 500 requests per minute", "tags": ["api"] } }),
        )
        .await;
    assert_eq!(s["old"]["superseded_by"], s["new"]["id"]);
    assert!(s["old"]["valid_to"].is_string());
    let v2 = s["new"]["id"].clone();

    let r = h.search("semantic_search", "API rate limit").await;
    assert_eq!(
        contents(&r),
        vec!["The API rate limit is 500 requests per minute"]
    );
    let r = h
        .ok(
            "semantic_search",
            json!({ "query": "API rate limit", "include_superseded": true }),
        )
        .await;
    assert_eq!(contents(&r).len(), 2);
    assert_eq!(h.fact_count().await, 1);
    let tags = h.ok("semantic_tags", json!({})).await;
    assert_eq!(tags["tags"], json!([{ "tag": "api", "count": 1 }]));

    let e = h
        .err(
            "semantic_supersede",
            json!({ "id": v1, "new": { "content": "again" } }),
        )
        .await;
    assert!(e.contains("already superseded"), "{e}");
    let v3 = h
        .ok("semantic_supersede", json!({ "id": v2, "new": { "content": "The API rate limit is 1000 requests per minute" } }))
        .await["new"]["id"]
        .clone();
    let hist = h.ok("semantic_history", json!({ "id": v2 })).await;
    let ids: Vec<&Value> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["id"])
        .collect();
    assert_eq!(ids, vec![&v1, &v2, &v3]);

    // Deleting the newest version makes the one before current again.
    h.ok("semantic_delete", json!({ "ids": [v3] })).await;
    let r = h.search("semantic_search", "API rate limit").await;
    assert_eq!(
        contents(&r),
        vec!["The API rate limit is 500 requests per minute"]
    );
}

#[tokio::test]
async fn reinforce_similar_hybrid_and_memory_search() {
    let h = Mem::new().await;
    let ids = h.load_fixture().await;
    let r = h.ok("semantic_reinforce", json!({ "id": ids[3] })).await;
    let c = r["fact"]["confidence"].as_f64().unwrap();
    assert!((c - (0.4 + 0.6 * 0.2)).abs() < 1e-9, "{c}");
    assert_eq!(r["fact"]["access_count"], 1);

    // More like the replica fact: other Postgres facts, never itself.
    let r = h.ok("semantic_similar", json!({ "id": ids[1] })).await;
    let c = contents(&r);
    assert!(
        !c.is_empty() && c.iter().all(|s| !s.starts_with("Production Postgres")),
        "{c:?}"
    );
    assert!(
        c[..2]
            .iter()
            .any(|s| s.contains("replication") || s.contains("Postgres")),
        "{c:?}"
    );

    // With all weight on confidence, hybrid ranks the matches by confidence.
    let r = h
        .ok(
            "semantic_search_hybrid",
            json!({ "query": "postgres", "weights": { "text": 0, "recency": 0, "confidence": 1, "access": 0 } }),
        )
        .await;
    let conf = numbers(&r["hits"], "/fact/confidence");
    assert_eq!(conf, vec![0.85, 0.8, 0.6]);
    assert!(r["hits"][0]["components"]["text"].is_number());
    let e = h
        .err(
            "semantic_search_hybrid",
            json!({ "query": "x y", "weights": { "text": -1 } }),
        )
        .await;
    assert!(e.contains("weights"), "{e}");

    // One list across layers, each hit labelled.
    h.ok(
        "episodic_remember",
        json!({ "content": "Restarted the Postgres replica after lag alerts" }),
    )
    .await;
    let r = h.search("memory_search", "postgres replica lag").await;
    let layers = strings(&r["hits"], "/layer");
    assert!(
        layers.contains(&"episodic") && layers.contains(&"semantic"),
        "{layers:?}"
    );
    let r = h
        .ok(
            "memory_search",
            json!({ "query": "postgres replica lag", "layers": ["episodic"] }),
        )
        .await;
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let h = Mem::new().await;
    let cases = [
        ("semantic_store", json!({ "content": "" })),
        (
            "semantic_store",
            json!({ "content": "x", "confidence": 1.5 }),
        ),
        ("semantic_store", json!({ "content": "x", "colour": "red" })),
        (
            "semantic_store_batch",
            json!({ "facts": [{ "content": "ok" }, { "content": "" }] }),
        ),
        ("semantic_update", json!({ "id": "nope", "content": "x" })),
        ("semantic_update", json!({ "id": "nope" })),
        (
            "semantic_supersede",
            json!({ "id": "nope", "new": { "content": "x" } }),
        ),
        ("semantic_reinforce", json!({ "id": "nope" })),
        (
            "semantic_search_fuzzy",
            json!({ "query": "x", "max_distance": 5 }),
        ),
        ("semantic_search", json!({ "query": "the of and" })),
        ("semantic_tags", json!({ "limit": 0 })),
    ];
    for (op, args) in cases {
        let e = h.err(op, args.clone()).await;
        assert!(!e.is_empty(), "{op} {args}");
    }
    assert_eq!(h.fact_count().await, 0);
}

#[tokio::test]
async fn a_write_in_one_session_invalidates_cached_reads_of_another() {
    let h = Mem::new().await;
    let other = h.session_in("alpha");
    let stranger = h.session_in("beta");
    h.load_fixture().await;
    let q = json!({ "query": "redis" });
    let before = h.ok("semantic_search", q.clone()).await;
    assert_eq!(contents(&before).len(), 1);
    assert_eq!(h.ok("semantic_search", q.clone()).await, before);
    let stats = h.ok("meta_cache_stats", json!({})).await;
    assert_eq!(stats["operations"]["semantic_search"]["hits"], 1);

    // Another namespace writing changes nothing here (different tags) ...
    stranger
        .call("semantic_store", json!({ "content": "Redis in beta" }))
        .await
        .unwrap();
    assert_eq!(h.ok("semantic_search", q.clone()).await, before);
    // ... another session of this namespace writing is seen at once.
    other
        .call(
            "semantic_store",
            json!({ "content": "Redis also stores rate limit counters" }),
        )
        .await
        .unwrap();
    let after = h.ok("semantic_search", q.clone()).await;
    assert_eq!(contents(&after).len(), 2, "{after}");
    let stats = h.ok("meta_cache_stats", json!({})).await;
    assert_eq!(stats["operations"]["semantic_search"]["hits"], 2);
    assert!(
        stats["operations"]["semantic_search"]["invalidated"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // The same through memory_search, which reads two layers.
    let m = h.search("memory_search", "deploy").await;
    other
        .call(
            "episodic_remember",
            json!({ "content": "Deploy failed on Tuesday" }),
        )
        .await
        .unwrap();
    let m2 = h.search("memory_search", "deploy").await;
    assert_eq!(
        m2["hits"].as_array().unwrap().len(),
        m["hits"].as_array().unwrap().len() + 1
    );
}

/// Rounds of identical calls in flight at once, until one was coalesced.
const COALESCE_ROUNDS: usize = 50;

// Several workers, so that calls overlap: on one thread a read that never
// yields finishes before the next call starts, and nothing can coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_reads_are_coalesced_and_agree() {
    let h = Mem::with(|c| c.cache_capacity = 0).await;
    h.load_fixture().await;
    let stats = |h: Mem| async move {
        let stats = h.ok("meta_cache_stats", json!({})).await;
        stats["operations"]["semantic_search_fuzzy"].clone()
    };
    let mut coalesced = 0;
    // Whether calls overlap is up to the scheduler: rounds until one did.
    for _ in 0..COALESCE_ROUNDS {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let h = h.clone();
            calls.spawn(async move {
                let args = json!({ "query": "postgress replca" });
                h.call("semantic_search_fuzzy", args).await.unwrap()
            });
        }
        let answers = calls.join_all().await;
        assert!(answers.windows(2).all(|w| w[0] == w[1]));
        let s = stats(h.clone()).await;
        assert_eq!(
            s["hits"].as_u64().unwrap_or(0),
            0,
            "capacity 0 caches nothing"
        );
        coalesced = s["coalesced"].as_u64().unwrap_or(0);
        if coalesced > 0 {
            break;
        }
    }
    assert!(
        coalesced >= 1,
        "no call joined another in {COALESCE_ROUNDS} rounds"
    );
}

#[tokio::test]
async fn a_broken_index_degrades_to_the_store_and_recovers_after_a_rebuild() {
    let h = Mem::with(|c| {
        c.index_commit_interval_ms = 30;
        c.breaker_threshold = 2;
        c.breaker_open_ms = 200;
    })
    .await;
    h.load_fixture().await;
    h.flush().await;
    let healthy = h.search("semantic_search", "postgres").await;
    assert!(healthy.get("degraded").is_none());

    // Break the index for real: its directory becomes a file, so commits and
    // any attempt to recreate it fail until the file goes away.
    let index = h.dir().join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::write(&index, b"not an index").unwrap();
    h.ok(
        "semantic_store",
        json!({ "content": "Postgres connection limits are 200 per node" }),
    )
    .await;
    h.ok(
        "episodic_remember",
        json!({ "content": "Raised the Postgres connection limit" }),
    )
    .await;
    let health = h
        .wait_health("the search breaker open", |h| {
            breaker(h, "search")["state"] == "open"
        })
        .await;
    assert_eq!(health["status"], "degraded");

    // Degraded answers: correct (the new fact included), flagged, never cached.
    for _ in 0..2 {
        let r = h.search("semantic_search", "postgres").await;
        assert_eq!(r["degraded"], true, "{r}");
        assert_eq!(contents(&r).len(), 4);
        assert_eq!(
            contents(&r)[0],
            "Postgres connection limits are 200 per node"
        );
    }
    let r = h
        .search("semantic_search_fuzzy", "postgress conection")
        .await;
    assert_eq!(r["degraded"], true);
    assert_eq!(
        contents(&r)[0],
        "Postgres connection limits are 200 per node"
    );
    let r = h.search("episodic_recall", "postgres connection").await;
    assert_eq!(r["degraded"], true);
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    let r = h.search("memory_search", "postgres connection limit").await;
    assert_eq!(r["degraded"], true);
    let mut top: Vec<&str> = r["hits"].as_array().unwrap()[..2]
        .iter()
        .map(|h| h["layer"].as_str().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, vec!["episodic", "semantic"], "{r}");

    // Repair the disk: the background rebuild succeeds, the breaker closes.
    std::fs::remove_file(&index).unwrap();
    let health = h
        .wait_health("the index rebuilt and the breaker closed", |h| {
            breaker(h, "search")["state"] == "closed"
                && h["rebuilding_index"] == false
                && h["search_index"]["rebuilds"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(health["status"], "ok");
    let r = h.search("semantic_search", "postgres").await;
    assert!(r.get("degraded").is_none(), "{r}");
    assert_eq!(contents(&r).len(), 4);
    assert!(index.join("meta.json").exists());
    // Writes after recovery are indexed as before.
    h.ok(
        "semantic_store",
        json!({ "content": "Postgres vacuum runs weekly" }),
    )
    .await;
    let r = h.search("semantic_search", "vacuum").await;
    assert_eq!(contents(&r), vec!["Postgres vacuum runs weekly"]);
}

#[tokio::test]
async fn the_rate_limiter_refuses_over_the_limit_and_recovers() {
    let h = Mem::with(|c| {
        c.rate_limit_per_second = 20;
        c.rate_limit_burst = 3;
    })
    .await;
    for _ in 0..3 {
        h.ok("session_info", json!({})).await;
    }
    let e = h.err("session_info", json!({})).await;
    assert!(e.contains("rate limit") && e.contains("retry in"), "{e}");
    // Refused calls change nothing, and other sessions have their own allowance.
    let other = h.session_in("alpha");
    other
        .call(
            "semantic_store",
            json!({ "content": "another session is not limited" }),
        )
        .await
        .unwrap();
    // 20/s refills one call every 50 ms.
    tokio::time::sleep(Duration::from_millis(120)).await;
    h.ok("session_info", json!({})).await;
}
