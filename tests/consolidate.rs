//! meta_consolidate through the pipeline, in process (real sqlite, real
//! tantivy): a dry run shows exactly what the real run does, repeated events
//! become one fact with provenance, duplicate facts merge with history,
//! importance decays by its half-life, and archived events are never lost.

mod common;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

/// Drops what only a real run can know (the ids of the facts it made).
fn without_fact_ids(mut answer: Value) -> Value {
    for p in answer["promoted"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("fact_id");
    }
    answer.as_object_mut().unwrap().remove("dry_run");
    answer
}

async fn remember(h: &Mem, content: &str, importance: f64, tags: &[&str]) -> String {
    let args = json!({"content": content, "importance": importance, "tags": tags});
    h.ok("episodic_remember", args).await["event"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_dry_run_shows_exactly_what_the_real_run_does() {
    let h = Mem::new().await;
    let repeated = [
        "Deploy failed: disk full on build-7",
        "deploy failed:  disk full on BUILD-7.",
        "Deploy failed: disk full on build-7!",
    ];
    let mut repeat_ids = Vec::new();
    for (i, text) in repeated.iter().enumerate() {
        repeat_ids.push(remember(&h, text, 0.9, &[["ci", "deploy", "ci"][i]]).await);
    }
    remember(&h, "Deploy failed: disk full on build-8", 0.9, &[]).await;
    let trivia = remember(&h, "The coffee machine beeped", 0.15, &[]).await;
    let old = h
        .ok(
            "semantic_store",
            json!({"content": "The API listens on port 8080", "tags": ["api"], "confidence": 0.6}),
        )
        .await;
    let newer = h
        .ok(
            "semantic_store",
            json!({"content": "the api listens on port 8080.", "tags": ["net"], "confidence": 0.8}),
        )
        .await;
    h.ok(
        "semantic_store",
        json!({"content": "The database listens on port 5432"}),
    )
    .await;

    // A year on: importance 0.15 halves about 12 times (half-life 30 days).
    let year_on = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let args = |dry_run: bool| json!({"dry_run": dry_run, "as_of": year_on});
    let dry = h.ok("meta_consolidate", args(true)).await;
    assert_eq!(dry["promoted"].as_array().unwrap().len(), 1, "{dry}");
    assert!(dry["promoted"][0].get("fact_id").is_none());
    assert_eq!(dry["promoted"][0]["tags"], json!(["ci", "deploy"]));
    let mut promoted_from = strings(&dry["promoted"][0]["event_ids"], "")
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    promoted_from.sort();
    repeat_ids.sort();
    assert_eq!(promoted_from, repeat_ids);
    assert_eq!(dry["merged"][0]["into"], newer["fact"]["id"]);
    assert_eq!(dry["merged"][0]["merged"], json!([old["fact"]["id"]]));
    assert_eq!(dry["decayed_count"], 5, "every event");
    assert_eq!(
        dry["archived_count"], 5,
        "all are old and unimportant by then"
    );
    let before = h.ok("meta_stats", json!({})).await;
    assert_eq!(before["archived_events"], 0, "a dry run changes nothing");

    let real = h.ok("meta_consolidate", args(false)).await;
    assert_eq!(without_fact_ids(real.clone()), without_fact_ids(dry));

    // Provenance and history.
    let fact_id = real["promoted"][0]["fact_id"].clone();
    let fact = h.ok("semantic_get", json!({"id": fact_id})).await;
    assert_eq!(fact["fact"]["source"], "consolidation");
    assert_eq!(
        fact["fact"]["metadata"]["consolidated_from"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let kept = h
        .ok("semantic_get", json!({"id": newer["fact"]["id"]}))
        .await;
    assert_eq!(kept["fact"]["tags"], json!(["api", "net"]));
    assert_eq!(kept["fact"]["confidence"], 0.8);
    let history = h
        .ok("semantic_history", json!({"id": newer["fact"]["id"]}))
        .await;
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    let listed = h.ok("semantic_list", json!({})).await;
    assert_eq!(
        listed["facts"].as_array().unwrap().len(),
        3,
        "two merged into one, one promoted"
    );

    // Archived: out of events and searches, counted, exported.
    assert_eq!(h.ok("episodic_count", json!({})).await["count"], 0);
    h.flush().await;
    let found = h
        .ok("episodic_recall", json!({"query": "coffee machine"}))
        .await;
    assert_eq!(found["hits"], json!([]));
    let stats = h.ok("meta_stats", json!({})).await;
    assert_eq!(stats["archived_events"], 5);
    let export = h.ok("meta_export", json!({})).await;
    let archived: Vec<Value> = export["data"]
        .as_str()
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["kind"] == "archived_event")
        .collect();
    assert_eq!(archived.len(), 5);
    assert!(
        archived
            .iter()
            .any(|a| a["record"]["id"] == trivia.as_str())
    );
    let elsewhere = Mem::new().await;
    let imported = elsewhere
        .ok("meta_import", json!({"data": export["data"]}))
        .await;
    assert_eq!(imported["created"]["archived_event"], 5);
    assert_eq!(
        elsewhere.ok("meta_stats", json!({})).await["archived_events"],
        5
    );

    // Nothing is left to do as of the same time.
    let again = h.ok("meta_consolidate", args(true)).await;
    assert_eq!(again["promoted"], json!([]));
    assert_eq!(again["merged"], json!([]));
    assert_eq!(again["decayed_count"], 0);
    assert_eq!(again["archived_count"], 0);
}

#[tokio::test]
async fn importance_halves_every_half_life_counted_from_the_last_decay() {
    let h = Mem::new().await;
    let id = remember(&h, "Migrated the ledger to v2", 0.8, &[]).await;
    let run = |as_of: &str| json!({"as_of": as_of, "half_life_days": 10, "archive_below": 0, "min_repeats": 2});
    let first = h.ok("meta_consolidate", run("in 10d")).await;
    assert_eq!(
        first["decayed"],
        json!([{"id": id, "from": 0.8, "to": 0.4}])
    );
    let second = h.ok("meta_consolidate", run("in 20d")).await;
    assert_eq!(
        second["decayed"],
        json!([{"id": id, "from": 0.4, "to": 0.2}])
    );
    let event = h.ok("episodic_get", json!({"id": id})).await;
    assert_eq!(event["event"]["importance"], 0.2);
    let none = h
        .ok(
            "meta_consolidate",
            json!({"as_of": "in 20d", "half_life_days": 0, "archive_below": 0}),
        )
        .await;
    assert_eq!(none["decayed_count"], 0, "half-life 0: no decay");
    let audit = h
        .ok("meta_audit", json!({"operation": "meta_consolidate"}))
        .await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        2,
        "two runs changed records"
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let h = Mem::new().await;
    remember(&h, "kept", 0.01, &[]).await;
    #[rustfmt::skip]
    let cases: Vec<(Value, &str)> = vec![
        (json!({"min_repeats": 1}), "at least 2"),
        (json!({"similarity": 0.2}), "between 0.5 and 1.0"),
        (json!({"half_life_days": -1}), "`half_life_days`"),
        (json!({"archive_after_days": 1e9}), "`archive_after_days`"),
        (json!({"archive_below": 2}), "between 0.0 and 1.0"),
        (json!({"as_of": "whenever"}), "cannot read time"),
        (json!({"dry_run": "yes"}), "dry_run"),
        (json!({"surprise": true}), "unknown field"),
    ];
    for (args, expected) in cases {
        let e = h.err("meta_consolidate", args).await;
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
    assert_eq!(h.ok("episodic_count", json!({})).await["count"], 1);
}
