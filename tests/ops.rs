//! Operations through the pipeline, in process, against a real sqlite file and a
//! real tantivy index in a temporary data dir. One helper (`Mem`, tests/common)
//! calls an operation by name with JSON and returns its JSON answer or its error
//! message. The index commits only when a test flushes it, so searches before
//! that are answered from the overlay.

mod common;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

/// Shorthands for the episodic calls most tests here make.
trait Episodic {
    async fn remember(&self, content: &str, extra: Value) -> String;
    async fn count(&self) -> u64;
    async fn recall(&self, query: &str) -> Value;
}

impl Episodic for Mem {
    async fn remember(&self, content: &str, extra: Value) -> String {
        let mut args = json!({ "content": content });
        if let Value::Object(m) = extra {
            args.as_object_mut().unwrap().extend(m);
        }
        self.ok("episodic_remember", args).await["event"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn recall(&self, query: &str) -> Value {
        self.ok("episodic_recall", json!({ "query": query })).await
    }

    async fn count(&self) -> u64 {
        self.ok("episodic_count", json!({})).await["count"]
            .as_u64()
            .unwrap()
    }
}

fn hit_contents(v: &Value) -> Vec<&str> {
    strings(&v["hits"], "/event/content")
}

#[tokio::test]
async fn recall_ranks_natural_language_and_sees_uncommitted_writes() {
    let h = Mem::new().await;
    h.remember(
        "Staging database upgraded: it runs Postgres version 16.2",
        json!({}),
    )
    .await;
    h.remember("Lunch with the design team about the new logo", json!({}))
        .await;
    h.remember(
        "Production postgres still runs version 14",
        json!({"tags": ["prod"]}),
    )
    .await;

    // Nothing is committed to the index yet: these come from the overlay.
    let r = h.recall("which postgres version does staging use").await;
    let hits = hit_contents(&r);
    assert_eq!(hits.len(), 2, "{r}");
    assert!(hits[0].contains("Staging"), "best match first: {hits:?}");

    // Same ranking after the index commits.
    h.flush().await;
    let r2 = h.recall("which postgres version does staging use").await;
    assert_eq!(hit_contents(&r2), hits);

    // Stemming: "upgrading" finds "upgraded"; filters narrow.
    let r = h.recall("upgrading").await;
    assert_eq!(hit_contents(&r).len(), 1);
    let tagged_prod = json!({"query": "postgres", "tags": ["PROD"]});
    let r = h.ok("episodic_recall", tagged_prod).await;
    assert_eq!(
        hit_contents(&r),
        vec!["Production postgres still runs version 14"]
    );
}

#[tokio::test]
async fn updates_and_deletes_are_searchable_at_once_even_after_a_commit() {
    let h = Mem::new().await;
    let id = h.remember("the cache uses redis", json!({})).await;
    h.flush().await;

    h.ok(
        "episodic_update",
        json!({"id": id, "content": "the cache uses memcached"}),
    )
    .await;
    assert!(hit_contents(&h.recall("redis").await).is_empty());
    assert_eq!(hit_contents(&h.recall("memcached").await).len(), 1);
    h.flush().await;
    assert!(hit_contents(&h.recall("redis").await).is_empty());

    let out = h.ok("episodic_forget", json!({"ids": [id, "nope"]})).await;
    assert_eq!(out["deleted"], json!([id]));
    assert_eq!(out["not_found"], json!(["nope"]));
    assert!(hit_contents(&h.recall("memcached").await).is_empty());
}

/// Every delete by ids reads its ids the same way: a repeated id is deleted
/// once and not reported missing, a blank one is refused with nothing deleted.
#[tokio::test]
async fn deletes_by_id_take_each_id_once_and_refuse_blank_ones() {
    let h = Mem::new().await;
    let event = h.remember("the build uses nix", json!({})).await;
    let fact = h
        .ok("semantic_store", json!({"content": "the build uses nix"}))
        .await["fact"]["id"]
        .clone();
    let task = h
        .ok("prospective_create", json!({"title": "pin nix"}))
        .await["task"]["id"]
        .clone();
    h.ok(
        "procedural_store",
        json!({"name": "nix-build", "goal": "build with nix", "steps": ["nix build"]}),
    )
    .await;
    let deletes = [
        ("episodic_forget", json!(event)),
        ("semantic_delete", fact),
        ("prospective_delete", task),
        ("procedural_delete", json!("nix-build")),
    ];
    for (op, id) in deletes {
        let err = h.err(op, json!({"ids": [id, " "]})).await;
        assert!(err.contains("`ids[1]` is empty"), "{op}: {err}");
        let out = h.ok(op, json!({"ids": [id, "nope", id]})).await;
        assert_eq!(out["deleted"], json!([id]), "{op}");
        assert_eq!(out["not_found"], json!(["nope"]), "{op}");
    }
}

#[tokio::test]
async fn list_pages_with_cursors_in_time_order() {
    let h = Mem::new().await;
    for i in 0..7 {
        h.remember(
            &format!("event {i}"),
            json!({"occurred_at": format!("2026-01-0{}T00:00:00Z", i + 1)}),
        )
        .await;
    }
    let pages = h.pages("episodic_list", json!({"limit": 3})).await;
    let seen: Vec<&str> = pages
        .iter()
        .flat_map(|page| strings(&page["events"], "/content"))
        .collect();
    let expected: Vec<String> = (0..7).map(|i| format!("event {i}")).collect();
    assert_eq!(seen, expected);

    let desc = h
        .ok("episodic_list", json!({"order": "desc", "limit": 2}))
        .await;
    assert_eq!(desc["events"][0]["content"], "event 6");

    let recent = h.ok("episodic_recent", json!({"limit": 1})).await;
    assert_eq!(recent["events"][0]["content"], "event 6");

    let ranged = h
        .ok(
            "episodic_count",
            json!({"since": "2026-01-03", "until": "2026-01-05"}),
        )
        .await;
    assert_eq!(ranged["count"], 2);

    let tl = h
        .ok(
            "episodic_timeline",
            json!({"since": "2026-01-01", "until": "2026-01-04", "bucket": "day"}),
        )
        .await;
    assert_eq!(tl["total"], 3);
    assert_eq!(tl["buckets"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn around_returns_neighbours_in_time_order() {
    let h = Mem::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            h.remember(
                &format!("step {i}"),
                json!({"occurred_at": format!("2026-02-01T0{i}:00:00Z")}),
            )
            .await,
        );
    }
    let out = h
        .ok(
            "episodic_around",
            json!({"id": ids[2], "before": 1, "after": 5}),
        )
        .await;
    assert_eq!(out["event"]["content"], "step 2");
    assert_eq!(out["before"].as_array().unwrap().len(), 1);
    assert_eq!(out["before"][0]["content"], "step 1");
    assert_eq!(strings(&out["after"], "/content"), vec!["step 3", "step 4"]);
}

#[tokio::test]
async fn forget_where_needs_a_filter_and_honours_dry_run() {
    let h = Mem::new().await;
    h.remember("trivia one", json!({"importance": 0.1, "tags": ["noise"]}))
        .await;
    h.remember("trivia two", json!({"importance": 0.2, "tags": ["noise"]}))
        .await;
    h.remember("critical", json!({"importance": 0.9, "tags": ["noise"]}))
        .await;

    let e = h.err("episodic_forget_where", json!({})).await;
    assert!(e.contains("at least one"), "{e}");

    let dry = h
        .ok(
            "episodic_forget_where",
            json!({"tags": ["noise"], "max_importance": 0.5, "dry_run": true}),
        )
        .await;
    assert_eq!(dry["matched"], 2);
    assert_eq!(dry["deleted"], false);
    assert_eq!(h.count().await, 3);

    let done = h
        .ok(
            "episodic_forget_where",
            json!({"tags": ["noise"], "max_importance": 0.5}),
        )
        .await;
    assert_eq!(done["matched"], 2);
    assert_eq!(h.count().await, 1);
    assert!(hit_contents(&h.recall("trivia").await).is_empty());
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let h = Mem::new().await;
    // One case a line: the operation, its arguments, what the error must say.
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, &str)> = vec![
        ("episodic_remembr", json!({"content": "x"}), "similar: episodic_remember"),
        ("episodic_remember", json!({}), "missing field `content`"),
        ("episodic_remember", json!({"content": 5}), "expected a string"),
        ("episodic_remember", json!({"content": "x", "colour": "red"}), "unknown field `colour`"),
        ("episodic_remember", json!({"content": "   "}), "`content` is empty"),
        ("episodic_remember", json!({"content": "x", "importance": 3}), "between 0.0 and 1.0"),
        ("episodic_remember", json!({"content": "x", "occurred_at": "someday"}), "cannot read time"),
        ("episodic_remember", json!({"content": "x".repeat(70_000)}), "over the limit"),
        ("episodic_remember_batch", json!({"events": [{"content": "fine"}, {"content": ""}]}), "events[1]"),
        ("episodic_remember_batch", json!({"events": vec![json!({"content": "x"}); 1001]}), "the limit is 1000"),
        ("episodic_list", json!({"cursor": "garbage!"}), "`cursor` is not valid"),
        ("episodic_list", json!({"limit": 100000}), "page with `cursor`"),
        ("episodic_get", json!({"id": "0000"}), "no event with id"),
        ("episodic_update", json!({"id": "0000", "content": "y"}), "no event with id"),
        ("episodic_update", json!({"id": "0000"}), "nothing to change"),
        ("episodic_recall", json!({"query": "the of and"}), "very common words"),
        ("episodic_count", json!({"since": "2026-02-01", "until": "2026-01-01"}), "not before"),
        ("enable_toolset", json!({"layer": "astrology"}), "no layer"),
        ("call_operation", json!({"name": "call_operation"}), "cannot call itself"),
        ("episodic_remember", json!([1, 2]), "JSON object"),
        ("episodic_remember", json!({"content": "a\u{0}b"}), "content holds a NUL"),
        ("semantic_store", json!({"content": "x", "tags": ["ok", "n\u{0}"]}), "tags[1] holds a NUL"),
        ("episodic_recall", json!({"query": "\u{0}"}), "query holds a NUL"),
        ("episodic_get", json!({"id": "\u{0}"}), "id holds a NUL"),
    ];
    for (op, args, expected) in cases {
        let e = h.err(op, args).await;
        assert!(e.contains(expected), "{op}: expected {expected:?} in {e:?}");
    }
    assert_eq!(h.count().await, 0, "no bad call wrote anything");
}

#[tokio::test]
async fn a_cursor_from_another_query_is_refused() {
    let h = Mem::new().await;
    for i in 0..3 {
        h.remember(&format!("alpha note {i}"), json!({})).await;
    }
    let page = h
        .ok(
            "episodic_recall",
            json!({"query": "alpha note", "limit": 1}),
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let e = h
        .err(
            "episodic_recall",
            json!({"query": "different", "cursor": cursor}),
        )
        .await;
    assert!(e.contains("different arguments"), "{e}");
    let next = h
        .ok(
            "episodic_recall",
            json!({"query": "alpha note", "limit": 1, "cursor": cursor}),
        )
        .await;
    assert_eq!(next["hits"].as_array().unwrap().len(), 1);
    assert_ne!(
        next["hits"][0]["event"]["id"],
        page["hits"][0]["event"]["id"]
    );
}

#[tokio::test]
async fn namespaces_and_scratch_are_isolated() {
    let h = Mem::new().await;
    let beta = h.session_in("beta");
    h.remember("alpha's secret plan", json!({})).await;
    beta.call(
        "episodic_remember",
        json!({"content": "beta's secret plan"}),
    )
    .await
    .unwrap();

    let mine = h.recall("secret plan").await;
    assert_eq!(hit_contents(&mine), vec!["alpha's secret plan"]);
    let theirs = beta.call("episodic_list", json!({})).await.unwrap();
    assert_eq!(theirs["events"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["events"][0]["content"], "beta's secret plan");

    let alpha_id = mine["hits"][0]["event"]["id"].clone();
    let e = beta
        .call("episodic_get", json!({"id": alpha_id}))
        .await
        .unwrap_err();
    assert!(e.contains("no event"), "{e}");

    h.ok(
        "session_scratch_set",
        json!({"key": "plan", "value": {"step": 1}}),
    )
    .await;
    let other = beta
        .call("session_scratch_get", json!({"key": "plan"}))
        .await
        .unwrap();
    assert_eq!(other["found"], false);
    let mine = h.ok("session_scratch_get", json!({"key": "plan"})).await;
    assert_eq!(mine["value"], json!({"step": 1}));

    // A second session in the same namespace shares memories but not scratch.
    let alpha2 = h.session_in("alpha");
    let list = alpha2
        .call("session_scratch_list", json!({}))
        .await
        .unwrap();
    assert_eq!(list["entries"], json!([]));
    assert_eq!(
        alpha2.call("episodic_count", json!({})).await.unwrap()["count"],
        1
    );
}

#[tokio::test]
async fn discovery_answers_at_three_levels_and_call_operation_runs_anything() {
    let h = Mem::new().await;
    let names = h.ok("discover_tools", json!({"detail": "name"})).await;
    let first = &names["tools"][0];
    assert!(first.get("summary").is_none() && first.get("input_schema").is_none());

    let summary = h
        .ok(
            "discover_tools",
            json!({"query": "delete old events", "detail": "summary"}),
        )
        .await;
    let tools = summary["tools"].as_array().unwrap();
    assert!(
        tools
            .iter()
            .take(3)
            .any(|t| t["name"] == "episodic_forget_where"),
        "{summary}"
    );
    assert!(tools[0].get("summary").is_some() && tools[0].get("listed").is_some());

    let full = h
        .ok(
            "discover_tools",
            json!({"layer": "session", "detail": "full"}),
        )
        .await;
    assert_eq!(full["tools"].as_array().unwrap().len(), 6);
    assert!(full["tools"][0]["input_schema"].is_object());

    let out = h
        .ok(
            "call_operation",
            json!({"name": "episodic_remember", "arguments": {"content": "via call_operation"}}),
        )
        .await;
    assert_eq!(out["result"]["event"]["content"], "via call_operation");
    assert_eq!(h.count().await, 1);

    let enabled = h.ok("enable_toolset", json!({"layer": "session"})).await;
    assert_eq!(enabled["added"].as_array().unwrap().len(), 6);
    let again = h.ok("enable_toolset", json!({"layer": "session"})).await;
    assert_eq!(again["added"], json!([]));
}

#[tokio::test]
async fn paging_merges_index_and_overlay_without_losing_or_repeating_hits() {
    let h = Mem::new().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(h.remember(&format!("widget report {i}"), json!({})).await);
    }
    h.flush().await;
    // Most records now have a stale committed copy and a newer overlay version.
    for id in ids.iter().take(25) {
        h.ok(
            "episodic_update",
            json!({"id": id, "content": "widget report revised"}),
        )
        .await;
    }
    let pages = h
        .pages("episodic_recall", json!({"query": "widget", "limit": 4}))
        .await;
    let mut got = Vec::new();
    for page in &pages {
        let hits = page["hits"].as_array().unwrap();
        assert!(!hits.is_empty() || page.get("next_cursor").is_none());
        got.extend(strings(&page["hits"], "/event/id"));
    }
    let mut expected = ids.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every event exactly once");
}
