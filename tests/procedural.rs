//! Procedural memory through the pipeline, in process (real sqlite, real
//! tantivy): versions, the track record, suggestions ranked by relevance and
//! smoothed success, and bad input.

mod common;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

async fn store(h: &Mem, name: &str, goal: &str, steps: &[&str]) -> Value {
    let args = json!({ "name": name, "goal": goal, "steps": steps, "tags": ["ops"] });
    h.ok("procedural_store", args).await["procedure"].clone()
}

async fn run(h: &Mem, id: &str, outcome: &str, duration_ms: u64, notes: Option<&str>) -> Value {
    let mut args = json!({ "id": id, "outcome": outcome, "duration_ms": duration_ms });
    if let Some(n) = notes {
        args["notes"] = json!(n);
    }
    h.ok("procedural_record_execution", args).await
}

#[tokio::test]
async fn updates_write_new_versions_and_old_ones_stay_readable() {
    let h = Mem::new().await;
    let p = store(
        &h,
        "deploy-web",
        "Ship the web app",
        &["build", "push", "restart"],
    )
    .await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(p["version"], 1);
    assert_eq!(p["track_record"]["runs"], 0);

    let by_name = h.ok("procedural_get", json!({ "id": "deploy-web" })).await;
    assert_eq!(
        by_name["procedure"]["id"], id,
        "a name reads the same procedure"
    );

    let args = json!({ "id": id, "steps": ["build", "test", "push", "restart"] });
    let v2 = h.ok("procedural_update", args).await["procedure"].clone();
    assert_eq!(v2["version"], 2);
    assert_eq!(
        v2["goal"], "Ship the web app",
        "fields not given carry over"
    );
    assert_eq!(v2["created_at"], p["created_at"]);

    let versions = h.ok("procedural_versions", json!({ "id": id })).await;
    let numbers: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "newest first");
    let old = h
        .ok("procedural_get", json!({ "id": id, "version": 1 }))
        .await;
    assert_eq!(old["version"]["steps"], json!(["build", "push", "restart"]));
    assert_eq!(
        old["procedure"]["version"], 2,
        "the current version is still shown"
    );

    let e = h
        .err("procedural_get", json!({ "id": id, "version": 7 }))
        .await;
    assert!(e.contains("no version 7") && e.contains("1 to 2"), "{e}");

    // A run counts for the version followed.
    run(&h, id, "success", 100, None).await;
    let args = json!({ "id": id, "name": "deploy-web-v2" });
    h.ok("procedural_update", args).await;
    run(
        &h,
        "deploy-web-v2",
        "failure",
        300,
        Some("registry was down"),
    )
    .await;
    let stats = h.ok("procedural_stats", json!({ "id": id })).await;
    assert_eq!(stats["version"], 3);
    assert_eq!(
        stats["by_version"],
        json!([{"version": 2, "runs": 1, "success_rate": 1.0}, {"version": 3, "runs": 1, "success_rate": 0.0}])
    );
}

#[tokio::test]
async fn names_are_unique_and_deletes_take_ids_or_names() {
    let h = Mem::new().await;
    let p = store(
        &h,
        "rotate-keys",
        "Rotate the API keys",
        &["generate", "swap"],
    )
    .await;
    let e = h
        .err(
            "procedural_store",
            json!({"name": "rotate-keys", "goal": "again", "steps": ["x"]}),
        )
        .await;
    assert!(
        e.contains("already exists") && e.contains("procedural_update"),
        "{e}"
    );
    let other = h.session_in("beta");
    store(&other, "rotate-keys", "Same name, other namespace", &["x"]).await;

    let gone = h
        .ok(
            "procedural_delete",
            json!({ "ids": ["rotate-keys", "nothing-here"] }),
        )
        .await;
    assert_eq!(gone["deleted"], json!(["rotate-keys"]));
    assert_eq!(gone["not_found"], json!(["nothing-here"]));
    let e = h.err("procedural_get", json!({ "id": p["id"] })).await;
    assert!(e.contains("no procedure"), "{e}");
    let left = h.ok("procedural_list", json!({})).await;
    assert_eq!(left["procedures"], json!([]));
    let there = other.ok("procedural_list", json!({})).await;
    assert_eq!(strings(&there["procedures"], "/name"), ["rotate-keys"]);
}

#[tokio::test]
async fn a_long_good_record_outranks_one_lucky_run() {
    let h = Mem::new().await;
    let steps = ["drain the node", "upgrade the kernel", "reboot", "undrain"];
    let goal = "Patch a kubernetes node kernel without downtime";
    let steady = store(&h, "node-patch-steady", goal, &steps).await;
    let lucky = store(&h, "node-patch-lucky", goal, &steps).await;
    let unrelated = store(
        &h,
        "bake-bread",
        "Bake sourdough bread",
        &["mix", "proof", "bake"],
    )
    .await;
    let steady_id = steady["id"].as_str().unwrap();
    for i in 0..50 {
        let outcome = if i % 10 == 9 { "failure" } else { "success" };
        run(&h, steady_id, outcome, 1000 + i, None).await;
    }
    run(&h, lucky["id"].as_str().unwrap(), "success", 900, None).await;
    for _ in 0..3 {
        run(&h, unrelated["id"].as_str().unwrap(), "success", 10, None).await;
    }

    let args = json!({ "task": "patch the kernel on a kubernetes node" });
    let s = h.ok("procedural_suggest", args).await;
    let names = strings(&s["suggestions"], "/procedure/name");
    assert_eq!(names, ["node-patch-steady", "node-patch-lucky"], "{s}");
    let why = &s["suggestions"][0]["why"];
    assert_eq!(why["runs"], 50);
    assert_eq!(why["success_rate"], 0.9);
    assert!((why["smoothed_success"].as_f64().unwrap() - 46.0 / 52.0).abs() < 1e-9);
    assert_eq!(s["suggestions"][1]["why"]["smoothed_success"], 2.0 / 3.0);

    let stats = h.ok("procedural_stats", json!({ "id": steady_id })).await;
    assert_eq!(stats["runs"], 50);
    assert_eq!(stats["failures"], 5);
    assert_eq!(stats["median_duration_ms"], 1024, "(1024 + 1025) / 2");
    assert_eq!(stats["recent"].as_array().unwrap().len(), 5);
    assert_eq!(stats["last_failure"]["duration_ms"], 1049);
}

#[tokio::test]
async fn stats_say_what_the_last_failure_noted() {
    let h = Mem::new().await;
    let p = store(
        &h,
        "restore-db",
        "Restore the database from backup",
        &["fetch", "load"],
    )
    .await;
    let id = p["id"].as_str().unwrap();
    run(&h, id, "failure", 50, Some("backup bucket permissions")).await;
    run(&h, id, "partial", 70, Some("restored without indexes")).await;
    let recorded = run(&h, id, "success", 60, None).await;
    assert_eq!(recorded["execution"]["version"], 1);
    let t = &recorded["procedure"]["track_record"];
    assert_eq!(
        (t["runs"].as_u64(), t["partials"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(t["success_rate"], 0.5, "(1 + 0.5) / 3");
    let stats = h
        .ok("procedural_stats", json!({ "id": "restore-db" }))
        .await;
    assert_eq!(stats["last_failure"]["notes"], "backup bucket permissions");
    assert_eq!(stats["median_duration_ms"], 60);
    assert_eq!(
        strings(&stats["recent"], "/outcome"),
        ["success", "partial", "failure"]
    );
}

#[tokio::test]
async fn procedures_are_found_by_their_steps_alone_and_in_memory_search() {
    let h = Mem::new().await;
    store(
        &h,
        "renew-tls",
        "Keep the certificates valid",
        &["run certbot renew", "reload nginx"],
    )
    .await;
    h.ok(
        "episodic_remember",
        json!({"content": "nginx crashed at noon"}),
    )
    .await;
    let found = h
        .ok("procedural_search", json!({ "query": "certbot" }))
        .await;
    assert_eq!(strings(&found["hits"], "/procedure/name"), ["renew-tls"]);
    h.flush().await;
    let all = h.ok("memory_search", json!({ "query": "nginx" })).await;
    let mut layers = strings(&all["hits"], "/layer");
    layers.sort();
    assert_eq!(layers, ["episodic", "procedural"], "{all}");
    let only = h
        .ok(
            "memory_search",
            json!({ "query": "nginx", "layers": ["procedural"] }),
        )
        .await;
    assert_eq!(strings(&only["hits"], "/layer"), ["procedural"]);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let h = Mem::new().await;
    let p = store(&h, "known", "A procedure that exists", &["one"]).await;
    let id = p["id"].as_str().unwrap();
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, &str)> = vec![
        ("procedural_store", json!({"name": "x", "goal": "g"}), "missing field `steps`"),
        ("procedural_store", json!({"name": "x", "goal": "g", "steps": []}), "`steps` is empty"),
        ("procedural_store", json!({"name": " ", "goal": "g", "steps": ["a"]}), "`name` is empty"),
        ("procedural_store", json!({"name": "x", "goal": "g", "steps": ["a", ""]}), "`steps[1]` is empty"),
        ("procedural_store", json!({"name": "x", "goal": "g", "steps": vec!["s"; 101]}), "the limit is 100"),
        ("procedural_store", json!({"name": "x".repeat(300), "goal": "g", "steps": ["a"]}), "over the limit"),
        ("procedural_store", json!({"name": "x", "goal": "g", "steps": ["a"], "tags": [""]}), "`tags[0]` is empty"),
        ("procedural_get", json!({"id": ""}), "`id` is empty"),
        ("procedural_get", json!({"id": "nope"}), "no procedure with id"),
        ("procedural_get", json!({"id": id, "version": -1}), "version"),
        ("procedural_update", json!({"id": id}), "nothing to change"),
        ("procedural_update", json!({"id": id, "steps": []}), "`steps` is empty"),
        ("procedural_update", json!({"id": "nope", "goal": "g"}), "no procedure with id"),
        ("procedural_delete", json!({"ids": []}), "`ids` is empty"),
        ("procedural_list", json!({"cursor": "bad"}), "`cursor` is not valid"),
        ("procedural_search", json!({"query": "the of"}), "very common words"),
        ("procedural_record_execution", json!({"id": id, "outcome": "great"}), "outcome"),
        ("procedural_record_execution", json!({"id": id, "outcome": "success", "duration_ms": -5}), "duration_ms"),
        ("procedural_record_execution", json!({"id": "nope", "outcome": "success"}), "no procedure with id"),
        ("procedural_suggest", json!({"task": ""}), "`task` is empty"),
        ("procedural_suggest", json!({"task": "the of"}), "`task` has only very common words"),
        ("procedural_suggest", json!({"task": "deploy", "limit": 0}), "at least 1"),
        ("procedural_versions", json!({"id": "nope"}), "no procedure with id"),
        ("procedural_stats", json!({"id": "nope"}), "no procedure with id"),
        ("procedural_stats", json!({"id": id, "extra": 1}), "unknown field `extra`"),
    ];
    for (op, args, expected) in cases {
        let e = h.err(op, args).await;
        assert!(e.contains(expected), "{op}: expected {expected:?} in {e:?}");
    }
    let after = h.ok("procedural_get", json!({ "id": id })).await["procedure"].clone();
    assert_eq!(after, p, "no bad call changed the procedure");
    let all = h.ok("procedural_list", json!({})).await;
    assert_eq!(
        all["procedures"].as_array().unwrap().len(),
        1,
        "and none stored another"
    );
}
