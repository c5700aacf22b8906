//! engram's own export format, every layer: meta_export pages → meta_import
//! reproduce a namespace (in another engram with the same ids; in another
//! namespace of the same engram with ids of its own), imports are atomic and
//! idempotent, and the command line moves the same format, compressed or not.

mod common;

use std::collections::BTreeMap;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

/// A namespace with records of every kind: events, a superseded fact, entities
/// with observations and a relation, a procedure with two versions and runs, a
/// goal with a sub-task, a fired and an armed reminder.
async fn populate(h: &Mem) {
    h.ok(
        "prospective_trigger_set",
        json!({"message": "mention the outage", "query": "outage"}),
    )
    .await;
    for (content, tags) in [
        ("The payments outage started at 09:12", vec!["incident"]),
        ("Rolled back payments to v41", vec!["incident", "deploy"]),
        ("Lunch with the platform team", vec![]),
    ] {
        h.ok(
            "episodic_remember",
            json!({"content": content, "tags": tags, "metadata": {"src": "test"}}),
        )
        .await;
    }
    let fact = h
        .ok(
            "semantic_store",
            json!({"content": "Payments run on 3 nodes", "tags": ["infra"], "source": "runbook"}),
        )
        .await;
    let id = fact["fact"]["id"].clone();
    h.ok(
        "semantic_supersede",
        json!({"id": id, "new": {"content": "Payments run on 5 nodes"}}),
    )
    .await;
    h.ok(
        "create_entities",
        json!({"entities": [
            {"name": "Payments", "entityType": "service", "observations": ["handles card charges"]},
            {"name": "Dana", "entityType": "person", "observations": ["on call this week"]}
        ]}),
    )
    .await;
    h.ok(
        "create_relations",
        json!({"relations": [{"from": "Dana", "to": "Payments", "relationType": "owns"}]}),
    )
    .await;
    let p = h
        .ok("procedural_store", json!({"name": "rollback", "goal": "Roll a service back", "steps": ["pick version", "deploy it"]}))
        .await;
    let pid = p["procedure"]["id"].clone();
    h.ok(
        "procedural_update",
        json!({"id": pid, "preconditions": ["a known good version"]}),
    )
    .await;
    h.ok(
        "procedural_record_execution",
        json!({"id": pid, "outcome": "success", "duration_ms": 90}),
    )
    .await;
    h.ok(
        "procedural_record_execution",
        json!({"id": pid, "outcome": "failure", "notes": "no image"}),
    )
    .await;
    let goal = h
        .ok("prospective_create", json!({"title": "Write the postmortem", "due_at": "2030-01-01T12:00:00+01:00", "priority": "high"}))
        .await;
    h.ok(
        "prospective_create",
        json!({"title": "Collect the timeline", "parent_id": goal["task"]["id"]}),
    )
    .await;
    h.ok(
        "prospective_trigger_set",
        json!({"message": "follow up", "tag": "followup", "task_id": goal["task"]["id"]}),
    )
    .await;
}

/// Every page of meta_export, in order.
async fn export_pages(h: &Mem, args: Value) -> Vec<Value> {
    h.pages("meta_export", args).await
}

/// The records of export pages (JSON Lines data, uncompressed), without headers.
fn records(pages: &[Value]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| p["data"].as_str().unwrap().lines().skip(1))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Records per kind, in this namespace, as meta_stats counts them.
async fn counts(h: &Mem) -> BTreeMap<String, u64> {
    let stats = h.ok("meta_stats", json!({})).await;
    stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_string(),
                k["records"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_export_imported_into_a_fresh_engram_reproduces_every_record() {
    let source = Mem::new().await;
    populate(&source).await;
    let pages = export_pages(&source, json!({"limit": 4})).await;
    assert!(pages.len() > 3, "paged: {}", pages.len());
    let exported = records(&pages);
    assert_eq!(
        exported
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "entity",
            "entity",
            "relation",
            "event",
            "event",
            "event",
            "fact",
            "fact",
            "procedure",
            "task",
            "task",
            "trigger",
            "trigger"
        ],
        "every kind, in export order"
    );

    let target = Mem::new().await;
    for page in &pages {
        let args = json!({"data": page["data"]});
        target.ok("meta_import", args).await;
    }
    let again = records(&export_pages(&target, json!({"limit": 4})).await);
    assert_eq!(again, exported, "same ids, same contents, same order");
    assert_eq!(counts(&target).await, counts(&source).await);

    // Imported records are live: searchable, and their history readable.
    let found = target
        .ok("memory_search", json!({"query": "rollback payments"}))
        .await;
    let mut layers = strings(&found["hits"], "/layer");
    layers.sort();
    layers.dedup();
    assert_eq!(
        layers,
        ["episodic", "graph", "procedural", "semantic"],
        "{found}"
    );
    let versions = target
        .ok("procedural_versions", json!({"id": "rollback"}))
        .await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let stats = target
        .ok("procedural_stats", json!({"id": "rollback"}))
        .await;
    assert_eq!(stats["last_failure"]["notes"], "no image");
    let graph = target.ok("read_graph", json!({})).await;
    assert_eq!(graph["relations"][0]["relationType"], "owns");
    let fired = target
        .ok("prospective_triggers", json!({"status": "fired"}))
        .await;
    assert_eq!(
        strings(&fired["triggers"], "/message"),
        ["mention the outage"]
    );
}

#[tokio::test]
async fn importing_into_another_namespace_gives_new_ids_once_and_keeps_references() {
    let alpha = Mem::new().await;
    populate(&alpha).await;
    let page = alpha
        .ok("meta_export", json!({"compress": true, "limit": 10000}))
        .await;
    assert_eq!(page["encoding"], "zstd+base64");
    assert!(page.get("next_cursor").is_none());
    let compressed = page["data"].as_str().unwrap().len();
    assert!(
        compressed < page["bytes"].as_u64().unwrap() as usize,
        "it compresses"
    );

    let beta = alpha.session_in("beta");
    let args = json!({"data": page["data"], "encoding": "zstd+base64"});
    let first = beta.ok("meta_import", args.clone()).await;
    assert_eq!(first["records"], 13);
    assert_eq!(first["unchanged"], json!({}));
    let second = beta.ok("meta_import", args).await;
    assert_eq!(second["created"], json!({}), "idempotent: {second}");
    assert_eq!(second["unchanged"]["event"], 3);
    assert_eq!(counts(&beta).await, counts(&alpha).await);

    // New ids, references following them.
    let goal = beta
        .ok("prospective_list", json!({"top_level": true}))
        .await["tasks"][0]
        .clone();
    let alpha_goal = alpha
        .ok("prospective_list", json!({"top_level": true}))
        .await["tasks"][0]
        .clone();
    assert_ne!(goal["id"], alpha_goal["id"]);
    let with_sub = beta.ok("prospective_get", json!({"id": goal["id"]})).await;
    assert_eq!(
        strings(&with_sub["subtasks"], "/title"),
        ["Collect the timeline"]
    );
    let facts = beta
        .ok("semantic_list", json!({"include_superseded": true}))
        .await;
    let old = facts["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["content"] == "Payments run on 3 nodes")
        .unwrap()
        .clone();
    let newer = beta
        .ok("semantic_get", json!({"id": old["superseded_by"]}))
        .await;
    assert_eq!(newer["fact"]["content"], "Payments run on 5 nodes");
    // Alpha is untouched.
    let mine = alpha
        .ok("prospective_get", json!({"id": alpha_goal["id"]}))
        .await;
    assert_eq!(mine["task"]["title"], "Write the postmortem");
}

#[tokio::test]
async fn a_bad_line_fails_the_whole_import_naming_it() {
    let source = Mem::new().await;
    populate(&source).await;
    let data = source.ok("meta_export", json!({})).await["data"]
        .as_str()
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = data.lines().map(String::from).collect();
    lines[3] = r#"{"kind": "event", "record": {"id": "x"}}"#.into();
    let target = Mem::new().await;
    let e = target
        .err("meta_import", json!({"data": lines.join("\n")}))
        .await;
    assert!(
        e.contains("line 4") && e.contains("nothing was imported"),
        "{e}"
    );
    let big = "x".repeat(70_000);
    lines[3] = json!({"kind": "fact", "record": {"id": "f", "content": big}}).to_string();
    let e = target
        .err("meta_import", json!({"data": lines.join("\n")}))
        .await;
    assert!(e.contains("line 4"), "{e}");
    #[rustfmt::skip]
    let cases: Vec<(Value, &str)> = vec![
        (json!({"data": "AAAA", "encoding": "zstd+base64"}), "`data`"),
        (json!({"data": "%%%", "encoding": "zstd+base64"}), "not base64"),
        (json!({"data": "{\"format\": \"other/9\", \"namespace\": \"a\", \"exported_at\": \"2026-01-01T00:00:00Z\"}"}), "is not \"engram-jsonl/1\""),
        (json!({"data": "x", "encoding": "gzip"}), "encoding"),
    ];
    for (args, expected) in cases {
        let e = target.err("meta_import", args).await;
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
    for (args, expected) in [
        (json!({"limit": 0}), "give 1 to 10000"),
        (json!({"cursor": "nope"}), "`cursor` is not valid"),
    ] {
        let e = target.err("meta_export", args).await;
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
    assert_eq!(counts(&target).await, BTreeMap::new(), "nothing was stored");
}

#[tokio::test]
async fn the_command_line_moves_the_same_format_compressed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    let call = |data: &std::path::Path, op: &str, args: Value| {
        let out = common::engram_std(data, &["call", op, &args.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    call(
        &from,
        "episodic_remember",
        json!({"content": "exported by the command line"}),
    );
    call(
        &from,
        "procedural_store",
        json!({"name": "p", "goal": "g", "steps": ["s"]}),
    );
    for file in ["all.jsonl", "all.jsonl.zst"] {
        let path = dir.path().join(file);
        let out = common::engram_std(&from, &["export", "--format", "engram", "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = std::fs::read(&path).unwrap();
        assert_eq!(
            head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            file.ends_with(".zst")
        );
        let out = common::engram_std(&to, &["import", "--format", "engram"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        let stored = if file.ends_with(".zst") { 0 } else { 2 };
        assert!(said.contains(&format!("{stored} stored")), "{said}");
    }
    let recent = call(&to, "episodic_recent", json!({}));
    assert_eq!(
        strings(&recent["events"], "/content"),
        ["exported by the command line"]
    );
    let audit = call(&to, "meta_audit", json!({"operation": "engram import"}));
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
}

/// `engram export` / `import` with `--store`: a namespace of every kind moves
/// from sqlite to PostgreSQL and back whole (same ids, same contents, same
/// order), through the same format in process and on the command line.
#[tokio::test]
async fn a_namespace_moves_between_sqlite_and_postgresql_both_ways() {
    let on = |url: Option<String>| {
        move |c: &mut engram::config::Config| {
            common::mem::commit_on_flush(c);
            c.store_url = url;
        }
    };
    let sqlite = Mem::open("alpha", on(None)).await;
    populate(&sqlite).await;
    let exported = records(&export_pages(&sqlite, json!({"limit": 5})).await);

    let url = common::pg::fresh_database();
    let postgres = Mem::open("alpha", on(Some(url.clone()))).await;
    for page in export_pages(&sqlite, json!({"limit": 5})).await {
        postgres
            .ok("meta_import", json!({"data": page["data"]}))
            .await;
    }
    let pages = export_pages(&postgres, json!({"limit": 5})).await;
    assert_eq!(records(&pages), exported, "sqlite → PostgreSQL");
    assert_eq!(counts(&postgres).await, counts(&sqlite).await);
    let found = postgres
        .ok("memory_search", json!({"query": "rollback payments"}))
        .await;
    assert!(!found["hits"].as_array().unwrap().is_empty(), "{found}");

    let back = Mem::open("alpha", on(None)).await;
    for page in &pages {
        back.ok("meta_import", json!({"data": page["data"]})).await;
    }
    let again = records(&export_pages(&back, json!({"limit": 5})).await);
    assert_eq!(again, exported, "PostgreSQL → sqlite");
    drop(postgres);

    // The command line: PostgreSQL's namespace to a file, into a new sqlite
    // data dir, and that dir's export is the same file's records.
    let dir = tempfile::tempdir().unwrap();
    let run = |data: &str, args: &[&str]| {
        let out = common::engram_std(&dir.path().join(data), args)
            .args(["--namespace", "alpha"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {said}");
        said
    };
    let from_pg = dir.path().join("from-postgres.jsonl");
    let from_pg_arg = from_pg.to_str().unwrap();
    run(
        "node",
        &[
            "--store",
            &url,
            "export",
            "--format",
            "engram",
            "--out",
            from_pg_arg,
        ],
    );
    let said = run("sqlite", &["import", "--format", "engram", from_pg_arg]);
    assert!(
        said.contains(&format!("{} stored", exported.len())),
        "{said}"
    );
    let from_sqlite = dir.path().join("from-sqlite.jsonl");
    run(
        "sqlite",
        &[
            "export",
            "--format",
            "engram",
            "--out",
            from_sqlite.to_str().unwrap(),
        ],
    );
    let file_records = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(file_records(&from_pg), exported);
    assert_eq!(file_records(&from_sqlite), exported);
}
