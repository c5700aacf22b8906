//! Every operation's answers against the output schema it publishes, checked
//! with a JSON Schema validator: empty answers (a fresh store), full ones, paged
//! ones, partial ones (some targets missing) and degraded ones (the search index
//! broken, answers from the store scan). In process, real sqlite and tantivy.
//!
//! The walk must reach every operation in the registry: a new operation without
//! a realistic call here fails the test.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::mem::Mem;
use engram::ops::registry;
use serde_json::{Value, json};

struct Walk {
    mem: Mem,
    vars: HashMap<String, String>,
    /// Operations that answered at least once (and validated).
    answered: BTreeSet<String>,
    checked: usize,
}

impl Walk {
    async fn new() -> Walk {
        let mem = Mem::open("schemas", |c| {
            c.tools = "all".into();
            c.index_commit_interval_ms = 20;
            c.breaker_threshold = 1;
            c.breaker_open_ms = 60_000;
        })
        .await;
        Walk {
            mem,
            vars: HashMap::new(),
            answered: BTreeSet::new(),
            checked: 0,
        }
    }

    /// Replaces `"$name"` strings with captured values.
    fn fill(&self, v: Value) -> Value {
        match v {
            Value::String(s) if s.starts_with('$') => {
                let key = &s[1..];
                Value::String(
                    self.vars
                        .get(key)
                        .unwrap_or_else(|| panic!("no value captured for ${key}"))
                        .clone(),
                )
            }
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.fill(x)).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, x)| (k, self.fill(x))).collect())
            }
            other => other,
        }
    }

    /// Calls `op`, expects an answer, validates it against the published
    /// output schema, and returns it.
    async fn ok(&mut self, op: &str, args: Value) -> Value {
        let args = self.fill(args);
        let answer = self
            .mem
            .call(op, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{op} {args} failed: {e}"));
        let entry = registry().get(op).expect("a registered operation");
        if let Some(problems) = entry.output_checker().check(&answer) {
            panic!("{op} answered outside its output schema: {problems}\nanswer: {answer}");
        }
        self.answered.insert(op.to_string());
        self.checked += 1;
        answer
    }

    /// Calls each `(op, args)` in order, as [`Walk::ok`] does.
    async fn steps(&mut self, steps: Vec<(&str, Value)>) {
        for (op, args) in steps {
            self.ok(op, args).await;
        }
    }

    /// Calls `op` and expects a tool error.
    async fn err(&mut self, op: &str, args: Value) -> String {
        let args = self.fill(args);
        match self.mem.call(op, args.clone()).await {
            Ok(v) => panic!("{op} {args} should have failed, answered {v}"),
            Err(e) => e,
        }
    }

    fn keep(&mut self, name: &str, value: &Value) {
        let s = value
            .as_str()
            .unwrap_or_else(|| panic!("${name}: not a string: {value}"))
            .to_string();
        self.vars.insert(name.to_string(), s);
    }
}

const SEARCHES: &[&str] = &[
    "semantic_search",
    "semantic_search_phrase",
    "semantic_search_prefix",
    "semantic_search_fuzzy",
    "semantic_search_boolean",
    "semantic_search_hybrid",
];

#[tokio::test]
async fn every_answer_matches_its_published_output_schema() {
    let mut w = Walk::new().await;

    // ---- empty: a fresh namespace ----
    w.ok("meta_health", json!({})).await;
    w.ok("meta_cache_stats", json!({})).await;
    w.ok("session_info", json!({})).await;
    w.ok("episodic_recall", json!({"query": "kubernetes upgrade"}))
        .await;
    w.ok("episodic_list", json!({})).await;
    w.ok("episodic_recent", json!({})).await;
    w.ok("episodic_count", json!({})).await;
    w.ok("episodic_timeline", json!({})).await;
    for op in SEARCHES {
        w.ok(op, json!({"query": "postgres"})).await;
    }
    w.ok("semantic_list", json!({})).await;
    w.ok("semantic_tags", json!({})).await;
    w.ok("memory_search", json!({"query": "postgres"})).await;
    w.ok("read_graph", json!({})).await;
    w.ok("search_nodes", json!({"query": "alice"})).await;
    w.ok("open_nodes", json!({"names": ["nobody"]})).await;
    w.ok("graph_stats", json!({})).await;
    w.ok("graph_centrality", json!({})).await;
    w.ok("graph_communities", json!({})).await;
    w.ok("session_scratch_list", json!({})).await;
    w.ok("session_scratch_get", json!({"key": "plan"})).await;
    w.ok("discover_tools", json!({"query": "nothing matches zzqx"}))
        .await;

    // ---- episodic ----
    let e = w
        .ok(
            "episodic_remember",
            json!({"content": "Upgraded the staging Kubernetes cluster to 1.31", "tags": ["infra"],
                   "importance": 0.8, "metadata": {"ticket": "OPS-12"}, "occurred_at": "2h ago"}),
        )
        .await;
    w.keep("event", &e["event"]["id"]);
    w.ok(
        "episodic_remember_batch",
        json!({"events": [
            {"content": "Kubernetes nodes drained before the upgrade", "tags": ["infra"]},
            {"content": "Lunch with Priya about the roadmap", "occurred_at": "yesterday"},
            {"content": "Kubernetes dashboard shows all pods healthy", "importance": 0.3}
        ]}),
    )
    .await;
    w.ok("episodic_get", json!({"id": "$event"})).await;
    let page = w
        .ok(
            "episodic_recall",
            json!({"query": "kubernetes", "limit": 1}),
        )
        .await;
    w.keep("recall_cursor", &page["next_cursor"]);
    w.ok(
        "episodic_recall",
        json!({"query": "kubernetes", "limit": 1, "cursor": "$recall_cursor"}),
    )
    .await;
    let page = w.ok("episodic_list", json!({"limit": 2})).await;
    w.keep("list_cursor", &page["next_cursor"]);
    w.ok(
        "episodic_list",
        json!({"limit": 2, "cursor": "$list_cursor"}),
    )
    .await;
    #[rustfmt::skip]
    let steps = vec![
        ("episodic_recent", json!({"limit": 2, "tags": ["infra"]})),
        ("episodic_timeline", json!({"bucket": "hour"})),
        ("episodic_around", json!({"id": "$event", "before": 2, "after": 2})),
        ("episodic_count", json!({"tags": ["infra"], "since": "1d ago"})),
        ("episodic_update", json!({"id": "$event", "content": "Upgraded staging Kubernetes to 1.31.2"})),
        ("episodic_forget_where", json!({"tags": ["infra"], "until": "1h ago", "dry_run": true})),
    ];
    w.steps(steps).await;

    // ---- semantic ----
    let f = w
        .ok(
            "semantic_store",
            json!({"content": "Staging runs Postgres 16 on two replicas", "tags": ["db"],
                   "confidence": 0.9, "source": "runbook"}),
        )
        .await;
    w.keep("fact", &f["fact"]["id"]);
    let batch = w
        .ok(
            "semantic_store_batch",
            json!({"facts": [
                {"content": "Production Postgres uses pgbouncer for pooling", "tags": ["db"]},
                {"content": "Postgres failover takes about thirty seconds", "tags": ["db", "ha"]},
                {"content": "Redis holds the session cache"}
            ]}),
        )
        .await;
    w.keep("fact2", &batch["facts"][0]["id"]);
    w.ok("semantic_get", json!({"id": "$fact"})).await;
    w.ok(
        "semantic_update",
        json!({"id": "$fact", "confidence": 0.95}),
    )
    .await;
    w.ok("semantic_reinforce", json!({"id": "$fact"})).await;
    let sup = w
        .ok(
            "semantic_supersede",
            json!({"id": "$fact", "new": {"content": "Staging runs Postgres 17 on two replicas", "tags": ["db"]}}),
        )
        .await;
    w.keep("fact_new", &sup["new"]["id"]);
    w.ok("semantic_history", json!({"id": "$fact_new"})).await;
    for (op, query) in [
        ("semantic_search", "postgres replicas"),
        ("semantic_search_phrase", "Postgres failover"),
        ("semantic_search_prefix", "postg"),
        ("semantic_search_fuzzy", "postgress"),
        (
            "semantic_search_boolean",
            "postgres AND (replicas OR pooling) -redis",
        ),
        ("semantic_search_hybrid", "postgres"),
    ] {
        let page = w
            .ok(op, json!({"query": query, "limit": 1, "tags": ["db"]}))
            .await;
        if let Some(c) = page["next_cursor"].as_str() {
            w.vars.insert("c".into(), c.into());
            w.ok(
                op,
                json!({"query": query, "limit": 1, "tags": ["db"], "cursor": "$c"}),
            )
            .await;
        }
        w.ok(op, json!({"query": query, "max_chars": 300})).await;
    }
    #[rustfmt::skip]
    let steps = vec![
        ("semantic_similar", json!({"id": "$fact2"})),
        ("semantic_list", json!({"include_superseded": true, "limit": 2})),
        ("semantic_tags", json!({"prefix": "d"})),
        ("memory_search", json!({"query": "postgres kubernetes", "limit": 2, "max_chars": 300})),
    ];
    w.steps(steps).await;

    // ---- graph: the nine reference tools, then the algorithms ----
    w.ok(
        "create_entities",
        json!({"entities": [
            {"name": "Alice", "entityType": "person", "observations": ["runs the payments team"]},
            {"name": "Bob", "entityType": "person", "observations": ["on call at weekends"]},
            {"name": "Payments", "entityType": "service", "observations": ["written in Go"]},
            {"name": "Carol", "entityType": "person", "observations": []}
        ]}),
    )
    .await;
    w.ok(
        "create_relations",
        json!({"relations": [
            {"from": "Alice", "to": "Payments", "relationType": "owns"},
            {"from": "Bob", "to": "Payments", "relationType": "supports"},
            {"from": "Alice", "to": "Bob", "relationType": "manages"}
        ]}),
    )
    .await;
    w.ok(
        "add_observations",
        json!({"observations": [{"entityName": "Bob", "contents": ["likes hiking"]}]}),
    )
    .await;
    w.ok("read_graph", json!({"limit": 2})).await;
    w.ok("search_nodes", json!({"query": "payments"})).await;
    w.ok("open_nodes", json!({"names": ["Alice", "Nobody"]}))
        .await;
    w.ok("graph_neighbors", json!({"name": "Alice", "depth": 2}))
        .await;
    w.ok(
        "graph_shortest_path",
        json!({"from": "Bob", "to": "Alice", "direction": "both"}),
    )
    .await;
    w.ok(
        "graph_all_paths",
        json!({"from": "Alice", "to": "Payments"}),
    )
    .await;
    w.ok("graph_subgraph", json!({"seeds": ["Bob"], "hops": 1}))
        .await;
    w.ok(
        "graph_centrality",
        json!({"measure": "pagerank", "top_k": 3}),
    )
    .await;
    w.ok(
        "graph_communities",
        json!({"algorithm": "label_propagation"}),
    )
    .await;
    w.ok("graph_stats", json!({})).await;
    w.ok(
        "graph_update_entity",
        json!({"name": "Payments", "entityType": "system", "properties": {"tier": 1}}),
    )
    .await;
    w.ok(
        "graph_rename_entity",
        json!({"name": "Carol", "new_name": "Caroline"}),
    )
    .await;
    w.ok(
        "create_entities",
        json!({"entities": [{"name": "Al", "entityType": "person", "observations": ["alias of Alice"]}]}),
    )
    .await;
    w.ok(
        "graph_merge_entities",
        json!({"target": "Alice", "sources": ["Al"]}),
    )
    .await;
    // Partial outcomes: some targets missing.
    w.ok(
        "delete_observations",
        json!({"deletions": [{"entityName": "Bob", "observations": ["likes hiking", "never said"]}]}),
    )
    .await;
    w.ok(
        "delete_relations",
        json!({"relations": [
            {"from": "Bob", "to": "Payments", "relationType": "supports"},
            {"from": "Bob", "to": "Payments", "relationType": "never"}
        ]}),
    )
    .await;
    w.ok(
        "delete_entities",
        json!({"entityNames": ["Caroline", "Ghost"]}),
    )
    .await;
    w.ok("delete_entities", json!({"entityNames": ["Bob"]}))
        .await;

    // ---- session and discovery ----
    let opened = w.ok("session_open", json!({})).await;
    w.keep("handle", &opened["session"]);
    #[rustfmt::skip]
    let steps = vec![
        ("session_info", json!({"session": "$handle"})),
        ("session_scratch_set", json!({"key": "held", "value": [1, 2], "session": "$handle"})),
        ("session_scratch_set", json!({"key": "plan", "value": {"step": 1, "todo": ["a", "b"]}})),
        ("session_scratch_get", json!({"key": "plan"})),
        ("session_scratch_list", json!({"prefix": "p"})),
        ("session_scratch_clear", json!({"keys": ["plan", "absent"]})),
    ];
    w.steps(steps).await;
    for detail in ["name", "summary", "full"] {
        w.ok(
            "discover_tools",
            json!({"query": "search", "detail": detail}),
        )
        .await;
    }
    w.ok("enable_toolset", json!({"layer": "graph"})).await;
    w.ok(
        "call_operation",
        json!({"name": "episodic_count", "arguments": {}}),
    )
    .await;

    // ---- procedural, prospective, meta: empty answers, then full ones ----
    #[rustfmt::skip]
    let steps = vec![
        ("procedural_list", json!({})),
        ("procedural_search", json!({"query": "deploy"})),
        ("procedural_suggest", json!({"task": "deploy the api"})),
        ("prospective_list", json!({})),
        ("prospective_due", json!({})),
        ("prospective_triggers", json!({})),
        ("meta_audit", json!({"operation": "nothing_wrote_this"})),
    ];
    w.steps(steps).await;
    let stored = w
        .ok("procedural_store", json!({"name": "deploy-api", "goal": "Deploy the api", "steps": ["build", "ship"], "metadata": {"owner": "ops"}}))
        .await;
    w.keep("procedure", &stored["procedure"]["id"]);
    let goal = w
        .ok("prospective_create", json!({"title": "Ship v2", "due_at": "2020-01-01T00:00:00Z", "priority": "urgent", "tags": ["release"]}))
        .await;
    w.keep("goal", &goal["task"]["id"]);
    let sub = w
        .ok(
            "prospective_create",
            json!({"title": "Write notes", "parent_id": "$goal", "notes": "n"}),
        )
        .await;
    w.keep("sub", &sub["task"]["id"]);
    let trigger = w
        .ok(
            "prospective_trigger_set",
            json!({"message": "deploys!", "query": "deploy api", "kinds": ["event", "procedure"]}),
        )
        .await;
    w.keep("trigger", &trigger["trigger"]["id"]);
    w.ok(
        "prospective_trigger_set",
        json!({"message": "later", "at": "in 1h", "task_id": "$goal"}),
    )
    .await;
    #[rustfmt::skip]
    let steps = vec![
        ("procedural_update", json!({"id": "$procedure", "steps": ["build", "test", "ship"], "tags": ["api"]})),
        ("procedural_record_execution", json!({"id": "$procedure", "outcome": "partial", "duration_ms": 30, "notes": "slow"})),
        ("procedural_get", json!({"id": "$procedure", "version": 1})),
        ("procedural_get", json!({"id": "deploy-api"})),
        ("procedural_versions", json!({"id": "$procedure"})),
        ("procedural_stats", json!({"id": "$procedure"})),
        ("procedural_list", json!({"tags": ["api"], "limit": 1})),
        ("procedural_search", json!({"query": "deploy", "max_chars": 500})),
        ("procedural_suggest", json!({"task": "deploy the api", "limit": 3})),
        ("prospective_get", json!({"id": "$goal"})),
        ("prospective_update", json!({"id": "$sub", "notes": null, "due_at": "tomorrow", "priority": "low"})),
        ("prospective_list", json!({"parent_id": "$goal"})),
        ("prospective_due", json!({"before": "in 3 days", "limit": 1})),
        ("episodic_remember", json!({"content": "deploy api finished"})),
        ("prospective_triggers", json!({"status": "fired"})),
        ("prospective_due", json!({})),
        ("prospective_complete", json!({"id": "$sub", "note": "done"})),
        ("prospective_cancel", json!({"id": "$goal", "note": "dropped"})),
        ("prospective_delete", json!({"ids": ["$trigger", "0190f0f0-0000-7000-8000-000000000000"]})),
        ("meta_stats", json!({})),
        ("meta_stats", json!({"all_namespaces": true})),
        ("meta_namespaces", json!({})),
        ("meta_audit", json!({"limit": 2})),
        ("meta_audit", json!({"record_id": "$procedure", "since": "1h ago"})),
        ("meta_reindex", json!({})),
        ("meta_export", json!({"limit": 2})),
        ("meta_consolidate", json!({"dry_run": true, "as_of": "in 400d", "min_repeats": 2})),
        ("meta_consolidate", json!({"half_life_days": 0, "archive_below": 0})),
    ];
    w.steps(steps).await;
    let page = w.ok("meta_export", json!({"compress": true})).await;
    w.keep("export", &page["data"]);
    w.ok(
        "meta_import",
        json!({"data": "$export", "encoding": "zstd+base64"}),
    )
    .await;
    w.ok("procedural_delete", json!({"ids": ["deploy-api", "ghost"]}))
        .await;
    #[rustfmt::skip]
    let steps = vec![
        ("procedural_store", json!({"name": "restore-db", "goal": "Restore postgres from a backup", "steps": ["fetch the backup", "load it"]})),
        ("prospective_create", json!({"title": "Test the postgres restore"})),
    ];
    w.steps(steps).await;

    // ---- deletions with missing ids ----
    #[rustfmt::skip]
    let steps = vec![
        ("episodic_forget", json!({"ids": ["$event", "0190f0f0-0000-7000-8000-000000000000"]})),
        ("semantic_delete", json!({"ids": ["$fact2", "0190f0f0-0000-7000-8000-000000000000"]})),
        ("episodic_forget_where", json!({"tags": ["never-used"]})),
    ];
    w.steps(steps).await;

    // ---- degraded: the index directory becomes a file; searches answer from the store ----
    let index = w.mem.dir().join("index");
    // The indexer may be writing files while the directory goes: retry.
    for attempt in 0.. {
        match std::fs::remove_dir_all(&index) {
            Ok(()) => break,
            Err(e) if attempt < 50 => {
                eprintln!("removing the index: {e}; again");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot remove the index: {e}"),
        }
    }
    std::fs::write(&index, b"not an index").unwrap();
    w.ok(
        "semantic_store",
        json!({"content": "Postgres backups run nightly"}),
    )
    .await;
    let mut degraded = false;
    for i in 0..200 {
        // A different limit each time: a healthy answer cached before the index
        // broke must not hide the degraded ones.
        let r = w
            .ok(
                "semantic_search",
                json!({"query": "postgres", "limit": 1 + i}),
            )
            .await;
        if r["degraded"] == true {
            degraded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(degraded, "the broken index never degraded searches");
    for op in SEARCHES {
        let r = w.ok(op, json!({"query": "postgres"})).await;
        assert_eq!(r["degraded"], true, "{op}: {r}");
    }
    let r = w
        .ok("episodic_recall", json!({"query": "kubernetes"}))
        .await;
    assert_eq!(r["degraded"], true, "{r}");
    let r = w.ok("memory_search", json!({"query": "postgres"})).await;
    assert_eq!(r["degraded"], true, "{r}");
    w.ok("semantic_similar", json!({"id": "$fact_new"})).await;
    for op in ["procedural_search", "procedural_suggest"] {
        let arg = if op == "procedural_search" {
            "query"
        } else {
            "task"
        };
        let r = w.ok(op, json!({ arg: "postgres backup" })).await;
        assert_eq!(r["degraded"], true, "{op}: {r}");
    }
    let r = w
        .ok(
            "memory_search",
            json!({"query": "postgres restore", "layers": ["procedural", "prospective"]}),
        )
        .await;
    assert_eq!(r["degraded"], true, "{r}");
    let mut layers: Vec<&str> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["layer"].as_str().unwrap())
        .collect();
    layers.sort();
    assert_eq!(
        layers,
        ["procedural", "prospective"],
        "the store scan finds both kinds: {r}"
    );
    w.ok("search_nodes", json!({"query": "payments"})).await;
    w.ok("meta_health", json!({})).await;

    // Bad input still gets tool errors, never answers outside the schema.
    w.err("episodic_get", json!({"id": "not-an-id"})).await;

    // Every write the walk made that changed a record left an audit row naming it.
    let audited: BTreeSet<String> = w
        .mem
        .pages("meta_audit", json!({"limit": 100}))
        .await
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap().clone())
        .map(|e| e["operation"].as_str().unwrap().to_string())
        .collect();
    // Writes the walk only makes with nothing to change: a filter nothing
    // matches, a consolidation with decay and archiving off and nothing
    // repeated, an import of records the namespace holds.
    const CHANGED_NOTHING: &[&str] = &["episodic_forget_where", "meta_consolidate", "meta_import"];
    let unaudited: Vec<&String> = w
        .answered
        .iter()
        .filter(|op| {
            let spec = engram::catalog::catalog().get(op).unwrap();
            spec.kind == engram::catalog::Kind::Write && !spec.writes.is_empty()
        })
        .filter(|op| !audited.contains(*op) && !CHANGED_NOTHING.contains(&op.as_str()))
        .collect();
    assert!(
        unaudited.is_empty(),
        "writes without an audit row: {unaudited:?}"
    );

    let missing: Vec<&str> = registry()
        .entries()
        .iter()
        .map(|e| e.name)
        .filter(|n| !w.answered.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "operations without a realistic call in tests/schemas.rs: {missing:?}"
    );
    assert!(w.checked > 100, "{} answers checked", w.checked);
}
