//! The real binary driven by the official MCP SDK clients that hosts are built on:
//! the Python SDK (PyPI `mcp`, 2.x) and the TypeScript SDK (npm
//! `@modelcontextprotocol/sdk`). Both validate every tool answer's
//! `structuredContent` against the tool's published `outputSchema`; rmcp's client
//! (the other tests) checks nothing.
//!
//! The scripts are `tests/clients/agent.py` and `tests/clients/agent.mjs`; the calls
//! they make are one table, `tests/clients/cases.json`. Each run here is one
//! (SDK, transport, mode, protocol generation): `profile` lists the tools of `--tools
//! core`, `compat` and `all` and calls a subset; `every-tool` calls every tool of
//! `--tools all`, with empty, paged, partial and error answers; `agent` is one agent's
//! work under `--tools all` (remember → recall finds it, store → search finds it, the
//! graph, a `session_open` handle and its scratch, discover_tools → call_operation),
//! checking that it finds what it stored. A failing run names every failing tool, its
//! case and the SDK's error message.
//!
//! Protocol generations: `legacy` is the `initialize` handshake (2025-11-25), one
//! session per connection; `2026-07-28` has no handshake (`server/discover`, protocol
//! version and client capabilities in every request's `_meta`), and over HTTP every
//! request stands alone: session state only through a `session_open` handle,
//! `tools/list` is the profile, `enable_toolset` is refused. Steps that differ between
//! them carry a `when` in cases.json. The Python SDK runs both (`mcp.Client(mode=
//! "legacy")` and `mode="2026-07-28"`; the script fails unless that generation was
//! negotiated, and under 2026-07-28 it also checks the server's own `server/discover`
//! answer). The TypeScript SDK 1.32.2 runs the legacy generation only: its
//! `Client.connect` always sends `initialize` (2025-11-25), it accepts only
//! handshake-era versions and has no `server/discover`, so it cannot speak 2026-07-28.
//!
//! The SDKs are installed on first use into `target/clients/` (a Python venv and an
//! npm project, exact versions below) and reused after. Installing needs python3
//! (with venv and pip), node and npm, and the network to PyPI and npm: when it fails
//! the tests fail, saying what to install; they never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::process::{InstallLock, run_with_timeout};
use common::{BIN, HttpServer, repo};

/// The Python SDK, pinned.
const PYTHON_SDK: &str = "mcp==2.3.0";
/// The TypeScript SDK, pinned.
const TS_SDK: (&str, &str) = ("@modelcontextprotocol/sdk", "1.32.2");
/// Longest one agent run may take (each takes a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest an install may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

fn clients_dir() -> PathBuf {
    repo().join("target/clients")
}

// ------------------------------------------------------------------ installing

/// Runs an install step; Err with the command, its status and output when it fails.
fn run_install_step(cmd: &mut Command, what: &str) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(cmd, INSTALL_TIMEOUT)
        .map_err(|e| format!("{what}: cannot run `{shown}`: {e}"))?;
    if out.status_ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: `{shown}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status, out.stdout, out.stderr
        ))
    }
}

fn venv_python() -> PathBuf {
    clients_dir().join("venv/bin/python")
}

fn installed_python_sdk() -> Option<String> {
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('mcp'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn install_python() -> Result<PathBuf, String> {
    let want = PYTHON_SDK.split("==").nth(1).unwrap();
    if installed_python_sdk().as_deref() == Some(want) {
        return Ok(venv_python());
    }
    let _lock = InstallLock::take(&clients_dir().join("python.lock"))?;
    if installed_python_sdk().as_deref() == Some(want) {
        return Ok(venv_python());
    }
    let venv = clients_dir().join("venv");
    if !venv_python().exists() {
        run_install_step(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "creating the Python venv (needs python3 >= 3.10 with the venv module)",
        )?;
    }
    run_install_step(
        Command::new(venv_python()).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            PYTHON_SDK,
        ]),
        &format!("installing the Python MCP SDK ({PYTHON_SDK}) from PyPI"),
    )?;
    match installed_python_sdk() {
        Some(v) if v == want => Ok(venv_python()),
        other => Err(format!(
            "after `pip install {PYTHON_SDK}` the venv reports mcp {other:?}"
        )),
    }
}

fn node_dir() -> PathBuf {
    clients_dir().join("node")
}

fn installed_ts_sdk() -> Option<String> {
    let manifest = node_dir()
        .join("node_modules")
        .join(TS_SDK.0)
        .join("package.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(String::from)
}

fn install_node() -> Result<PathBuf, String> {
    let (name, want) = TS_SDK;
    if installed_ts_sdk().as_deref() == Some(want) {
        return Ok(node_dir());
    }
    let _lock = InstallLock::take(&clients_dir().join("node.lock"))?;
    if installed_ts_sdk().as_deref() == Some(want) {
        return Ok(node_dir());
    }
    let dir = node_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest = serde_json::json!({
        "name": "engram-test-clients",
        "private": true,
        "description": "The official MCP SDK clients tests/real_clients.rs drives engram with.",
        "dependencies": { name: want }
    });
    std::fs::write(
        dir.join("package.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .map_err(|e| format!("cannot write {}/package.json: {e}", dir.display()))?;
    run_install_step(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--save-exact"])
            .current_dir(&dir),
        &format!("installing the TypeScript MCP SDK ({name}@{want}) from npm (needs node and npm)"),
    )?;
    match installed_ts_sdk() {
        Some(v) if v == want => Ok(dir),
        other => Err(format!(
            "after `npm install` {} holds {name} {other:?}, not {want}",
            dir.display()
        )),
    }
}

type Installed = OnceLock<Result<PathBuf, String>>;

/// What `install` made, installed once per test process (and once across processes).
fn once(
    cell: &'static Installed,
    install: fn() -> Result<PathBuf, String>,
    what: &str,
) -> &'static Path {
    match cell.get_or_init(install) {
        Ok(p) => p,
        Err(e) => panic!(
            "{what} could not be installed into {}:\n{e}",
            clients_dir().display()
        ),
    }
}

/// The venv's python.
fn python() -> &'static Path {
    static PY: Installed = OnceLock::new();
    once(&PY, install_python, "the Python MCP SDK")
}

/// The npm project holding the TypeScript SDK.
fn node_project() -> &'static Path {
    static NODE: Installed = OnceLock::new();
    once(&NODE, install_node, "the TypeScript MCP SDK")
}

// ------------------------------------------------------------------ the runs

#[derive(Clone, Copy)]
enum Sdk {
    Python,
    Node,
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Stdio,
    Http,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Profile,
    EveryTool,
    Agent,
}

/// The MCP protocol generation a run speaks (the scripts' `--protocol`).
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    /// `initialize` handshake, 2025-11-25.
    Legacy,
    /// 2026-07-28: `server/discover`, no handshake, stateless over HTTP.
    Current,
}

/// A new admin token in `data_dir` (`engram token create`).
fn admin_token(data_dir: &Path) -> String {
    common::make_token(data_dir, "ops", "admin", "sdk-host", &[])
}

fn run(sdk: Sdk, transport: Transport, mode: Mode, protocol: Protocol) {
    let scripts = repo().join("tests/clients");
    let mut cmd = match sdk {
        Sdk::Python => {
            let mut c = Command::new(python());
            c.arg(scripts.join("agent.py"));
            c
        }
        Sdk::Node => {
            assert!(
                protocol == Protocol::Legacy,
                "the TypeScript SDK {} speaks only the legacy generation",
                TS_SDK.1
            );
            let mut c = Command::new("node");
            c.arg(scripts.join("agent.mjs"))
                .env("ENGRAM_CLIENTS_NODE_DIR", node_project());
            c
        }
    };
    cmd.args([
        "--protocol",
        match protocol {
            Protocol::Legacy => "legacy",
            Protocol::Current => "2026-07-28",
        },
    ]);
    cmd.arg(match mode {
        Mode::Profile => "profile",
        Mode::EveryTool => "every-tool",
        Mode::Agent => "agent",
    });
    // Servers live until the run ends (dropped after it).
    let mut servers = Vec::new();
    match transport {
        Transport::Stdio => {
            // The agent adds `--data-dir <fresh temp dir> --tools <profile>`.
            cmd.args(["stdio", BIN, "serve"]);
        }
        Transport::Http => {
            cmd.arg("http");
            let profiles: &[&str] = match mode {
                Mode::Profile => &["core", "compat", "all"],
                Mode::EveryTool | Mode::Agent => &["all"],
            };
            for p in profiles {
                let server = HttpServer::start_blocking(&["--tools", p]);
                cmd.arg(format!("{p}={}", server.url));
                servers.push(server);
            }
            // Hosts reach shared servers with a token: these runs go through
            // authentication (an admin token, which may name each run's
            // namespace), the profile runs without.
            if mode != Mode::Profile {
                let dir = servers[0].data_dir().expect("a data dir of its own");
                cmd.env("ENGRAM_TOKEN", admin_token(dir));
            }
        }
    }
    cmd.env("ENGRAM_LOG", "warn");
    let shown = format!("{cmd:?}");
    let out = match run_with_timeout(&mut cmd, RUN_TIMEOUT) {
        Ok(out) => out,
        Err(e) => panic!("cannot run `{shown}`: {e}"),
    };
    let server_logs: String = servers
        .iter()
        .map(|s| format!("\n--- engram at {} stderr\n{}", s.url, s.stderr()))
        .collect();
    drop(servers);
    // The per-step log (shown by the harness for failing tests or with --nocapture).
    println!("{}", out.stdout);
    if !out.status_ok {
        panic!(
            "the official SDK client found failures ({})\n{}\nrerun: {shown}{server_logs}",
            out.status,
            if out.stderr.trim().is_empty() {
                "(no report on stderr; see the log above)".to_string()
            } else {
                out.stderr
            }
        );
    }
}

use Mode::{Agent, EveryTool, Profile};
use Protocol::{Current, Legacy};
use Sdk::{Node, Python};
use Transport::{Http, Stdio};

// ---- Python SDK, legacy generation (initialize)

#[test]
fn python_stdio_profile_legacy() {
    run(Python, Stdio, Profile, Legacy);
}

#[test]
fn python_stdio_every_tool_legacy() {
    run(Python, Stdio, EveryTool, Legacy);
}

#[test]
fn python_stdio_agent_legacy() {
    run(Python, Stdio, Agent, Legacy);
}

#[test]
fn python_http_profile_legacy() {
    run(Python, Http, Profile, Legacy);
}

#[test]
fn python_http_every_tool_legacy() {
    run(Python, Http, EveryTool, Legacy);
}

#[test]
fn python_http_agent_legacy() {
    run(Python, Http, Agent, Legacy);
}

// ---- Python SDK, MCP 2026-07-28 (server/discover; stateless over HTTP). The profile
// run is over HTTP only: over stdio a 2026-07-28 client keeps the process's session and
// the profile steps it runs are those of the legacy run, minus enable_toolset's re-list.

#[test]
fn python_stdio_every_tool_2026() {
    run(Python, Stdio, EveryTool, Current);
}

#[test]
fn python_stdio_agent_2026() {
    run(Python, Stdio, Agent, Current);
}

#[test]
fn python_http_profile_2026() {
    run(Python, Http, Profile, Current);
}

#[test]
fn python_http_every_tool_2026() {
    run(Python, Http, EveryTool, Current);
}

#[test]
fn python_http_agent_2026() {
    run(Python, Http, Agent, Current);
}

// ---- TypeScript SDK: the legacy generation only (see the top of this file)

#[test]
fn node_stdio_profile() {
    run(Node, Stdio, Profile, Legacy);
}

#[test]
fn node_stdio_every_tool() {
    run(Node, Stdio, EveryTool, Legacy);
}

#[test]
fn node_stdio_agent() {
    run(Node, Stdio, Agent, Legacy);
}

#[test]
fn node_http_profile() {
    run(Node, Http, Profile, Legacy);
}

#[test]
fn node_http_every_tool() {
    run(Node, Http, EveryTool, Legacy);
}

#[test]
fn node_http_agent() {
    run(Node, Http, Agent, Legacy);
}
