//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`)
//! against the real binary over Streamable HTTP: each scenario that applies to
//! engram is its own test, run at the wire version of one protocol revision
//! (2025-11-25: `initialize` and sessions; 2026-07-28: stateless, per-request
//! `_meta`). A scenario that belongs to both revisions is run once under each, as
//! the suite asks: passing on one wire says nothing about the other.
//!
//! Not run (they call the suite's own fixtures, which engram does not and should
//! not have): `tools-call-*` (fixture tools such as `test_simple_text`),
//! `prompts-get-*` and `completion-complete` (fixture prompts), `resources-*` but
//! `resources-list` (fixture `test://` resources and templates),
//! `server-sse-polling` (`test_reconnection`),
//! `json-schema-2020-12` (`json_schema_2020_12_tool`), `elicitation-sep*`, and every
//! `input-required-result-*` scenario but `input-required-result-unsupported-methods`
//! (`test_input_required_result_*` tools); `http-custom-header-server-validation`
//! (needs a tool with `x-mcp-header` parameters: engram has none); `prompts-list`
//! (engram has no prompts and declares no prompts capability); and the optional
//! extensions engram does not implement: `tasks-*` (SEP-2663) and
//! `sep-2640-skills-*` (SEP-2640).
//!
//! Two scenarios that do apply mix in a few checks that only the suite's fixtures
//! can pass; those checks, and only those, are named in `NOT_APPLICABLE_*` below
//! with the reason, and their failures are not counted. Every other check of a
//! scenario must pass (warnings, for SHOULDs, are printed, not failed).
//!
//! A test passes when the CLI exits 0 (or 1 with only not-applicable failures),
//! its `checks.json` holds no other failed check, and at least one of the scenario's own
//! checks succeeded (the CLI also exits 0 when it skips a scenario or runs none).
//! A failing test prints the failed checks with their details, the suite's whole
//! output and engram's stderr.
//!
//! The suite and a Node 22 binary (npm `node`, which the suite needs: the machine's
//! node may be older) are installed on first use into `target/conformance/` (an npm
//! project, exact versions below) and reused after; an exclusive lock file makes
//! parallel test threads and processes install once. Installing needs node and npm
//! and the npm registry: when it fails the tests fail, saying so; they never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::process::{InstallLock, run_with_timeout};
use common::{HttpServer, repo};
use serde_json::Value;

/// The conformance suite, pinned. 0.1.x (npm `latest`) predates protocol 2026-07-28;
/// this release carries its scenarios and the frozen 2026-07-28 requirement set.
const SUITE: (&str, &str) = ("@modelcontextprotocol/conformance", "0.2.0-alpha.12");
/// Node 22 (the suite's minimum), as the npm package `node` ships it.
const NODE: (&str, &str) = ("node", "22.23.3");
/// The TypeScript SDK the suite drives servers with, pinned through `overrides`.
const SUITE_SDK: (&str, &str) = ("@modelcontextprotocol/sdk", "1.32.2");
/// Longest an install may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest one scenario run may take (each takes a few seconds; the CLI's own
/// per-scenario timeout is 30 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const V2025: &str = "2025-11-25";
const V2026: &str = "2026-07-28";

// ------------------------------------------------------------------ the scenarios

/// Checks of `server-stateless` that exercise the suite's diagnostic fixture tools.
const NOT_APPLICABLE_STATELESS: &[(&str, &str)] = &[
    (
        "sep-2575-server-rejects-undeclared-capability",
        "calls the suite's fixture tool `test_missing_capability` (needs `sampling`); \
         no engram tool needs a client capability",
    ),
    (
        "sep-2575-missing-capability-http-400",
        "the HTTP status of the same `test_missing_capability` call",
    ),
    (
        "sep-2575-http-server-no-independent-requests-on-stream",
        "calls the suite's fixture tool `test_streaming_elicitation`",
    ),
    (
        "sep-2575-server-no-log-without-loglevel",
        "calls the suite's fixture tool `test_logging_tool`",
    ),
];

/// The check of `caching` that lists what only the suite's fixture server has.
const NOT_APPLICABLE_CACHING: &[(&str, &str)] = &[(
    "sep-2549-prompts-list-caching-hints",
    "expects prompts/list to succeed (the suite's fixture prompts); engram has no prompts \
     and declares no prompts capability, so it answers -32601",
)];

/// One test per row: `name: (scenario, wire version, engram's flags, checks not
/// counted)`, each running [`run_scenario`].
macro_rules! scenarios {
    ($($(#[$doc:meta])* $name:ident: ($($arg:expr),+);)*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                run_scenario($($arg),+);
            }
        )*
    };
}

scenarios! {
    server_initialize_2025_11_25: ("server-initialize", V2025, &[], &[]);
    server_session_lifecycle_2025_11_25: ("server-session-lifecycle", V2025, &[], &[]);
    ping_2025_11_25: ("ping", V2025, &[], &[]);
    logging_set_level_2025_11_25: ("logging-set-level", V2025, &[], &[]);
    /// Every tool (`--tools all`), so the suite validates all of their definitions.
    tools_list_2025_11_25: ("tools-list", V2025, &["--tools", "all"], &[]);
    tools_list_2026_07_28: ("tools-list", V2026, &["--tools", "all"], &[]);
    dns_rebinding_protection_2025_11_25: ("dns-rebinding-protection", V2025, &[], &[]);
    dns_rebinding_protection_2026_07_28: ("dns-rebinding-protection", V2026, &[], &[]);
    server_sse_multiple_streams_2025_11_25: ("server-sse-multiple-streams", V2025, &[], &[]);
    server_sse_multiple_streams_2026_07_28: ("server-sse-multiple-streams", V2026, &[], &[]);
    server_stateless_2026_07_28: ("server-stateless", V2026, &[], NOT_APPLICABLE_STATELESS);
    caching_2026_07_28: ("caching", V2026, &[], NOT_APPLICABLE_CACHING);
    resources_list_2025_11_25: ("resources-list", V2025, &[], &[]);
    resources_list_2026_07_28: ("resources-list", V2026, &[], &[]);
    sep_2164_resource_not_found_2026_07_28: ("sep-2164-resource-not-found", V2026, &[], &[]);
    http_header_validation_2026_07_28: ("http-header-validation", V2026, &[], &[]);
    input_required_result_unsupported_methods_2026_07_28:
        ("input-required-result-unsupported-methods", V2026, &[], &[]);
}

// ------------------------------------------------------------------ running one

/// One check of the suite's `checks.json`.
struct Check {
    id: String,
    status: String,
    message: String,
    details: Option<Value>,
}

fn run_scenario(scenario: &str, wire: &str, engram_args: &[&str], not_applicable: &[(&str, &str)]) {
    let suite = suite();
    let server = HttpServer::start_blocking(engram_args);
    let results = tempfile::tempdir().expect("temp results dir");
    let mut cmd = Command::new(&suite.node);
    cmd.arg(&suite.cli)
        .args(["server", "--url", &server.url, "--scenario", scenario])
        .args(["--spec-version", wire, "--timeout", "30000", "-o"])
        .arg(results.path())
        .current_dir(results.path());
    let started = Instant::now();
    let out = run_with_timeout(&mut cmd, RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run the conformance CLI `{cmd:?}`: {e}"));
    let elapsed = started.elapsed();

    let checks = read_checks(results.path(), scenario);
    let tolerated = |id: &str| not_applicable.iter().any(|(n, _)| *n == id);
    let mut problems = Vec::new();
    let mut excused = Vec::new();
    let mut warnings = Vec::new();
    match &checks {
        Err(e) => problems.push(e.clone()),
        Ok(checks) => {
            for c in checks {
                match c.status.as_str() {
                    "FAILURE" if tolerated(&c.id) => excused.push(c),
                    "FAILURE" => problems.push(describe(c)),
                    "WARNING" => warnings.push(c),
                    _ => {}
                }
            }
            if !checks
                .iter()
                .any(|c| c.status == "SUCCESS" && c.id != "wire-schema-valid")
            {
                problems.push(
                    "none of the scenario's own checks succeeded (did it run at all?)".into(),
                );
            }
        }
    }
    // Exit 1 is the suite's verdict on failed checks: expected when the only failed
    // checks are not-applicable ones, otherwise already reported above, and a
    // problem of its own when checks.json shows no failure at all.
    if !out.status_ok && problems.is_empty() && excused.is_empty() {
        problems.push(format!(
            "the conformance CLI failed ({}) although no check failed",
            out.status
        ));
    }

    for w in &warnings {
        eprintln!(
            "[{scenario} @ {wire}] WARNING {}: {}",
            w.id,
            one_line(&w.message)
        );
    }
    if problems.is_empty() {
        eprintln!(
            "[{scenario} @ {wire}] passed in {:.1} s",
            elapsed.as_secs_f64()
        );
        return;
    }

    let mut report = format!(
        "MCP conformance scenario `{scenario}` at protocol {wire} failed against \
         `engram serve --http` ({}; {} {}, {:.1} s):\n",
        server.url,
        SUITE.0,
        SUITE.1,
        elapsed.as_secs_f64()
    );
    for p in &problems {
        report.push_str(&format!("\n  * {p}\n"));
    }
    for c in &excused {
        let why = not_applicable
            .iter()
            .find(|(n, _)| *n == c.id)
            .map(|(_, why)| *why)
            .unwrap_or_default();
        report.push_str(&format!(
            "\n  (not counted: {} failed, not applicable to engram: {why})\n",
            c.id
        ));
    }
    report.push_str(&format!(
        "\n--- conformance CLI ({}) stdout\n{}\n--- stderr\n{}\n--- engram stderr\n{}\n",
        out.status,
        strip_ansi(&out.stdout),
        strip_ansi(&out.stderr),
        server.stderr()
    ));
    panic!("{report}");
}

/// The checks the CLI wrote to `<results>/server-<scenario>-<time>/checks.json`.
fn read_checks(results: &Path, scenario: &str) -> Result<Vec<Check>, String> {
    let prefix = format!("server-{scenario}-");
    let dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .map_err(|e| format!("cannot read {}: {e}", results.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    let [dir] = dirs.as_slice() else {
        return Err(format!(
            "expected one results folder `{prefix}*` in {}, found {}",
            results.display(),
            dirs.len()
        ));
    };
    let path = dir.join("checks.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "the suite wrote no {} ({e}): it crashed, or skipped the scenario at this \
             protocol version",
            path.display()
        )
    })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let list = value
        .as_array()
        .ok_or_else(|| format!("{} is not a JSON array", path.display()))?;
    Ok(list
        .iter()
        .map(|c| Check {
            id: c["id"].as_str().unwrap_or("?").to_string(),
            status: c["status"].as_str().unwrap_or("?").to_string(),
            message: c["errorMessage"].as_str().unwrap_or_default().to_string(),
            details: c.get("details").cloned(),
        })
        .collect())
}

fn describe(c: &Check) -> String {
    let mut s = format!("{} FAILED: {}", c.id, one_line(&c.message));
    if let Some(d) = &c.details {
        let mut d = d.to_string();
        if d.len() > 3000 {
            let mut end = 3000;
            while !d.is_char_boundary(end) {
                end -= 1;
            }
            d.truncate(end);
            d.push_str(" ...");
        }
        s.push_str(&format!("\n      details: {d}"));
    }
    s
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The CLI colours its output whether or not it goes to a terminal.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------ installing

fn suite_dir() -> PathBuf {
    repo().join("target/conformance")
}

/// What a run needs: the Node 22 binary and the suite's CLI script.
struct Suite {
    node: PathBuf,
    cli: PathBuf,
}

/// The suite, installed once per test process (and once across processes).
fn suite() -> &'static Suite {
    static SUITE_INSTALL: OnceLock<Result<Suite, String>> = OnceLock::new();
    match SUITE_INSTALL.get_or_init(install) {
        Ok(s) => s,
        Err(e) => panic!(
            "the MCP conformance suite ({}@{}) and Node {} could not be installed into {} \
             (needs node and npm on PATH and the npm registry):\n{e}",
            SUITE.0,
            SUITE.1,
            NODE.1,
            suite_dir().display()
        ),
    }
}

/// The npm project's package.json: exact versions; the `node` package's install
/// script (which fetches its platform's binary package) is allowed explicitly.
fn manifest() -> String {
    let mut deps = serde_json::Map::new();
    deps.insert(SUITE.0.into(), SUITE.1.into());
    deps.insert(NODE.0.into(), NODE.1.into());
    let mut overrides = serde_json::Map::new();
    overrides.insert(SUITE_SDK.0.into(), SUITE_SDK.1.into());
    let mut scripts = serde_json::Map::new();
    scripts.insert(format!("{}@{}", NODE.0, NODE.1), true.into());
    let manifest = serde_json::json!({
        "name": "engram-conformance",
        "private": true,
        "description": "The MCP conformance suite tests/conformance.rs runs against engram.",
        "dependencies": deps,
        "overrides": overrides,
        "allowScripts": scripts,
    });
    serde_json::to_string_pretty(&manifest).unwrap() + "\n"
}

fn node_bin() -> PathBuf {
    suite_dir().join("node_modules/node/bin/node")
}

fn cli_script() -> PathBuf {
    suite_dir()
        .join("node_modules")
        .join(SUITE.0)
        .join("dist/index.js")
}

/// Written after a complete install: the manifest it installed.
fn stamp() -> PathBuf {
    suite_dir().join("installed.json")
}

fn package_version(name: &str) -> Option<String> {
    let path = suite_dir()
        .join("node_modules")
        .join(name)
        .join("package.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["version"].as_str().map(String::from)
}

fn installed() -> bool {
    std::fs::read_to_string(stamp()).ok().as_deref() == Some(manifest().as_str())
        && package_version(SUITE.0).as_deref() == Some(SUITE.1)
        && package_version(NODE.0).as_deref() == Some(NODE.1)
        && node_bin().is_file()
        && cli_script().is_file()
}

fn install() -> Result<Suite, String> {
    if !installed() {
        let _lock = InstallLock::take(&suite_dir().join("install.lock"))?;
        if !installed() {
            npm_install()?;
        }
    }
    // The binary must be the Node the suite needs, and must run here.
    let out = run_with_timeout(Command::new(node_bin()).arg("--version"), INSTALL_TIMEOUT)
        .map_err(|e| format!("cannot run {}: {e}", node_bin().display()))?;
    let want = format!("v{}", NODE.1);
    if !out.status_ok || out.stdout.trim() != want {
        return Err(format!(
            "{} --version: {} ({}), expected {want}\n{}",
            node_bin().display(),
            out.stdout.trim(),
            out.status,
            out.stderr
        ));
    }
    Ok(Suite {
        node: node_bin(),
        cli: cli_script(),
    })
}

fn npm_install() -> Result<(), String> {
    let dir = suite_dir();
    let _ = std::fs::remove_file(stamp());
    std::fs::write(dir.join("package.json"), manifest())
        .map_err(|e| format!("cannot write {}/package.json: {e}", dir.display()))?;
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(&mut cmd, INSTALL_TIMEOUT)
        .map_err(|e| format!("cannot run `{shown}` (is npm installed?): {e}"))?;
    if !out.status_ok {
        return Err(format!(
            "`{shown}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status, out.stdout, out.stderr
        ));
    }
    for (name, want) in [SUITE, NODE] {
        let got = package_version(name);
        if got.as_deref() != Some(want) {
            return Err(format!(
                "after `{shown}` node_modules holds {name} {got:?}, not {want}\n{}",
                out.stderr
            ));
        }
    }
    if !node_bin().is_file() {
        return Err(format!(
            "after `{shown}` there is no {}: the `node` package's install script, which \
             fetches the platform's binary package, did not run or failed\n--- stdout\n{}\n\
             --- stderr\n{}",
            node_bin().display(),
            out.stdout,
            out.stderr
        ));
    }
    if !cli_script().is_file() {
        return Err(format!(
            "after `{shown}` there is no {}",
            cli_script().display()
        ));
    }
    std::fs::write(stamp(), manifest())
        .map_err(|e| format!("cannot write {}: {e}", stamp().display()))
}
