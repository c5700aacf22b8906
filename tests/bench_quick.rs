//! The load harness's smoke test: `engram-bench run all --quick` runs every
//! named scenario against the real binary in seconds and writes its results,
//! and `engram-bench report` renders them. The harness runs in process (its
//! library entry point, with this build's `engram` binary); it asserts that every
//! scenario ran and reported, nothing about speed.

use std::path::Path;
use std::process::Command;

const ENGRAM: &str = env!("CARGO_BIN_EXE_engram");

#[test]
fn every_scenario_runs_and_reports_in_quick_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let work = dir.path().join("work");
    let mut args: Vec<String> = ["engram-bench", "run", "all", "--quick", "--engram", ENGRAM]
        .map(String::from)
        .to_vec();
    args.extend(["--out".into(), path(&out), "--work".into(), path(&work)]);
    // Reuse the reference server tests/compat.rs installed, if it did.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/reference-memory-server/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if reference.exists() {
        args.extend(["--reference".into(), path(&reference)]);
    }
    let npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ran = engram_bench::run_args(&args);

    for s in engram_bench::scenarios::names() {
        let path = out.join("quick").join(format!("{s}.json"));
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{s}: {e}")),
        )
        .unwrap();
        if s == "reference" && !npm && !reference.exists() {
            eprintln!("SKIPPED the reference comparison: npm is not available");
            continue;
        }
        assert!(doc["error"].is_null(), "{s} failed: {}", doc["error"]);
        assert!(doc["results"].is_object(), "{s} has no results");
        assert!(doc["machine"]["cores"].as_u64().unwrap_or(0) > 0);
        assert!(doc["command"].as_str().unwrap().contains("--quick"));
    }
    if npm || reference.exists() {
        ran.expect("engram-bench run all --quick");
    }
    // Every call of the quick ladder succeeded.
    let ladder: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quick/ladder.json")).unwrap())
            .unwrap();
    for rung in ladder["results"]["rungs"].as_array().unwrap() {
        assert_eq!(rung["failed"], 0, "{rung}");
        assert!(rung["calls"].as_u64().unwrap() > 0);
    }

    // The soak read the query cache's size from `/metrics`: the first and last
    // samples hold it.
    let memory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quick/memory.json")).unwrap())
            .unwrap();
    let soak = &memory["results"];
    assert!(
        soak["soak_trace_s_rss_anon_cache"][0][3].is_number(),
        "{soak}"
    );
    assert!(soak["soak_end_cache_mb"].is_number(), "{soak}");

    // Every step of every workflow succeeded.
    let workflows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quick/workflows.json")).unwrap())
            .unwrap();
    for w in [
        "learn_from_experience",
        "knowledge_discovery",
        "task_management",
        "health_checks",
    ] {
        let res = &workflows["results"][w];
        assert_eq!(res["failed"], 0, "{w}: {res}");
        assert!(
            res["operations"].as_object().is_some_and(|o| !o.is_empty()),
            "{w}: {res}"
        );
    }

    let report = dir.path().join("REPORT.md");
    let plots = dir.path().join("plots");
    engram_bench::report::render(&out, &report, &plots).expect("render the report");
    let text = std::fs::read_to_string(&report).unwrap();
    for section in [
        "## Against the plan's targets",
        "## Load ladder",
        "## Workflows",
        "## Tool discovery",
        "## Write throughput",
        "## Recovery",
        "## Memory",
        "## Query cache",
        "## engram and the reference memory server",
    ] {
        assert!(text.contains(section), "report lacks {section}");
    }
    assert!(
        !text.contains("Not run (`engram-bench run"),
        "a scenario is missing from the report"
    );
    assert!(plots.join("latency-vs-concurrency.svg").exists());
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_string()
}

/// The bare line client the cache and peer scenarios time through tells a
/// result, a tool error and a JSON-RPC error apart, as rmcp's client does.
#[test]
fn the_line_client_tells_results_from_errors() {
    use engram_bench::recorder::Outcome;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let checks = async {
        let session = engram_bench::driver::line_session(Path::new(ENGRAM), dir.path(), &[])
            .await
            .expect("start engram over stdio");
        let args = json!({ "content": "the test environment runs postgres 15" });
        let stored = session.call("semantic_store", args).await;
        assert!(
            matches!(&stored, Outcome::Ok(v) if v["fact"]["id"].is_string()),
            "{stored:?}"
        );
        let found = session
            .call("semantic_search", json!({ "query": "postgres" }))
            .await
            .value()
            .unwrap();
        assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
        let bad = session
            .call(
                "semantic_search",
                json!({ "query": "x", "no_such_field": 1 }),
            )
            .await;
        assert!(
            matches!(&bad, Outcome::ToolError(e) if e.contains("no_such_field")),
            "{bad:?}"
        );
        let unknown = session.request("no/such/method", json!({})).await;
        assert!(
            unknown
                .as_ref()
                .is_err_and(|e| e.to_string().contains("-32601")),
            "{unknown:?}"
        );
        // A JSON-RPC error answering a tool call is a failed call, not a result.
        let malformed = session
            .call("semantic_search", json!("not an object"))
            .await;
        assert!(
            matches!(&malformed, Outcome::Transport(e) if e.contains("-32602")),
            "{malformed:?}"
        );
        session.close().await;
    };
    let within = std::time::Duration::from_secs(60);
    rt.block_on(async { tokio::time::timeout(within, checks).await })
        .expect("the line client answers every call within a minute");
}
