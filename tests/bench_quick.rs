//! The load harness's smoke test: `engram-bench run all --quick` runs every
//! named scenario against the real binary in seconds and writes its results,
//! and `engram-bench report` renders them. It asserts that every scenario ran
//! and reported, nothing about speed.

use std::path::Path;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_engram-bench");
const ENGRAM: &str = env!("CARGO_BIN_EXE_engram");

#[test]
fn every_scenario_runs_and_reports_in_quick_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let mut run = Command::new(BENCH);
    run.args(["run", "all", "--quick", "--engram", ENGRAM, "--out"])
        .arg(&out)
        .arg("--work")
        .arg(dir.path().join("work"));
    // Reuse the reference server tests/compat.rs installed, if it did.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/reference-memory-server/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if reference.exists() {
        run.arg("--reference").arg(&reference);
    }
    let npm = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let status = run.status().expect("run engram-bench");

    let scenarios = [
        "ladder",
        "workflows",
        "discovery",
        "writes",
        "recovery",
        "memory",
        "cache",
        "reference",
        "crashloop",
    ];
    for s in scenarios {
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
        assert!(status.success(), "engram-bench exited with {status}");
    }
    // Every call of the quick ladder succeeded.
    let ladder: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quick/ladder.json")).unwrap())
            .unwrap();
    for rung in ladder["results"]["rungs"].as_array().unwrap() {
        assert_eq!(rung["failed"], 0, "{rung}");
        assert!(rung["calls"].as_u64().unwrap() > 0);
    }

    let report = dir.path().join("REPORT.md");
    let plots = dir.path().join("plots");
    let status = Command::new(BENCH)
        .args(["report", "--results"])
        .arg(&out)
        .arg("--out")
        .arg(&report)
        .arg("--plots")
        .arg(&plots)
        .status()
        .unwrap();
    assert!(status.success());
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
