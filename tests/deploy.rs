//! The deployment files in `deploy/` do what they say.
//!
//! This machine has the docker client but no container engine, so the image is
//! not built here. Instead the test reads `deploy/Dockerfile` with a small parser,
//! checks the shape the deployment relies on (two stages, a non-root user, the
//! data dir on a volume, the exposed port served), and runs the runtime stage's
//! steps as a script with the test build's binary standing in for the image's
//! `/usr/local/bin/engram`: `token create` with the image's environment, then
//! ENTRYPOINT + CMD (on a free port, still on 0.0.0.0, so the safe-bind rule runs
//! with a token present), the HEALTHCHECK command, and SIGTERM, which must stop it
//! cleanly. The systemd unit's `ExecStart` is started the same way. The Grafana
//! dashboard may name only the metric families the server exposes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)]
#[path = "common/process.rs"]
mod process;

const BIN: &str = env!("CARGO_BIN_EXE_engram");
/// Longest a server may take to say where it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a server may take to stop after SIGTERM (the unit's TimeoutStopSec).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a one-shot command (`token create`, `health`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The metric families `GET /metrics` exposes, and their types. A histogram is
/// read through its `_bucket`, `_sum` and `_count` series.
const METRIC_FAMILIES: &[(&str, &str)] = &[
    ("engram_operation_calls_total", "counter"),
    ("engram_operation_errors_total", "counter"),
    ("engram_operation_duration_seconds", "histogram"),
    ("engram_cache_hits_total", "counter"),
    ("engram_cache_misses_total", "counter"),
    ("engram_cache_evictions_total", "counter"),
    ("engram_cache_invalidations_total", "counter"),
    ("engram_cache_entries", "gauge"),
    ("engram_cache_bytes", "gauge"),
    ("engram_breaker_state", "gauge"),
    ("engram_breaker_opened_total", "counter"),
    ("engram_sessions_open", "gauge"),
    ("engram_session_handles_open", "gauge"),
    ("engram_index_pending_changes", "gauge"),
    ("engram_index_commits_total", "counter"),
    ("engram_commit_batch_size", "histogram"),
    ("engram_commit_fsync_seconds", "histogram"),
    ("engram_store_reads_total", "counter"),
    ("engram_store_bytes", "gauge"),
    ("engram_index_bytes", "gauge"),
    ("engram_resident_memory_bytes", "gauge"),
    ("engram_auth_failures_total", "counter"),
    ("engram_build_info", "gauge"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The Dockerfile, parsed.

/// One instruction: its keyword (upper case), its arguments with continued
/// lines joined, and the line it starts on.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

/// A build stage: its base image, its `AS` name, its instructions.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// Splits a Dockerfile into instructions: comment lines (also inside a
/// continued instruction, as docker reads them) and blank lines are dropped,
/// and a line ending in `\` continues on the next.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (part, continues) = match line.strip_suffix('\\') {
            Some(part) => (part.trim_end(), true),
            None => (line, false),
        };
        let entry = pending.get_or_insert_with(|| (n + 1, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(part);
        if !continues {
            let (start, full) = pending.take().expect("an instruction in progress");
            let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
                line: start,
            });
        }
    }
    assert!(
        pending.is_none(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("line {}: cannot read FROM {}", ins.line, ins.args),
            };
            stages.push(Stage {
                image: words[0].to_string(),
                name,
                body: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("line {}: {} before any FROM", ins.line, ins.keyword))
                .body
                .push(ins);
        }
    }
    stages
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a Instruction> + use<'a> {
        let keyword = keyword.to_string();
        self.body.iter().filter(move |i| i.keyword == keyword)
    }

    /// The instruction that counts (the last one of its keyword).
    fn last(&self, keyword: &str) -> &Instruction {
        self.all(keyword)
            .last()
            .unwrap_or_else(|| panic!("the runtime stage has no {keyword}"))
    }

    /// An instruction in JSON (exec) form: its argv.
    fn exec(&self, keyword: &str) -> Vec<String> {
        exec_form(keyword, &self.last(keyword).args)
    }

    /// Every `ENV` of the stage, in order.
    fn env(&self) -> Vec<(String, String)> {
        self.all("ENV").flat_map(|i| env_pairs(&i.args)).collect()
    }

    fn volumes(&self) -> Vec<String> {
        self.all("VOLUME")
            .flat_map(|i| {
                if i.args.starts_with('[') {
                    exec_form("VOLUME", &i.args)
                } else {
                    i.args.split_whitespace().map(String::from).collect()
                }
            })
            .collect()
    }

    fn exposed(&self) -> Vec<u16> {
        self.all("EXPOSE")
            .flat_map(|i| i.args.split_whitespace())
            .map(|p| {
                let port = p.strip_suffix("/tcp").unwrap_or(p);
                port.parse()
                    .unwrap_or_else(|_| panic!("EXPOSE {p}: not a TCP port"))
            })
            .collect()
    }

    /// The HEALTHCHECK's options (`--interval=30s`, ...) and its command's argv.
    fn healthcheck(&self) -> (Vec<String>, Vec<String>) {
        let args = &self.last("HEALTHCHECK").args;
        let (options, command) = args
            .split_once("CMD ")
            .unwrap_or_else(|| panic!("HEALTHCHECK {args}: expected [OPTIONS] CMD [...]"));
        let options: Vec<String> = options.split_whitespace().map(String::from).collect();
        assert!(
            options.iter().all(|o| o.starts_with("--")),
            "HEALTHCHECK options {options:?}"
        );
        (options, exec_form("HEALTHCHECK CMD", command))
    }
}

fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args.trim())
        .unwrap_or_else(|e| panic!("{what} must be in JSON (exec) form, got {args}: {e}"))
}

/// `ENV K=V K2=V2` (values without spaces) or the old `ENV K V`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    if let Some((key, value)) = args.split_once(char::is_whitespace)
        && !key.contains('=')
    {
        return vec![(key.to_string(), value.trim().to_string())];
    }
    args.split_whitespace()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {args}: cannot read {pair}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Processes.

/// A port nothing listens on (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The argument after `flag` in `args`, and its index.
fn value_of(args: &[String], flag: &str) -> (usize, String) {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{args:?} has no {flag}"));
    let value = args
        .get(at + 1)
        .unwrap_or_else(|| panic!("{args:?}: {flag} without a value"));
    (at + 1, value.clone())
}

/// `args` with the address after `--http` moved to `port` (same host); the
/// address it had.
fn with_http_port(args: &[String], port: u16) -> (Vec<String>, SocketAddr) {
    let (at, value) = value_of(args, "--http");
    let addr: SocketAddr = value
        .parse()
        .unwrap_or_else(|e| panic!("--http {value}: {e}"));
    let mut args = args.to_vec();
    args[at] = SocketAddr::new(addr.ip(), port).to_string();
    (args, addr)
}

/// A command running the test build's binary where the deployment runs
/// `program`, with `env` and no other `ENGRAM_*` variable of the test's own.
fn engram(program: &str, args: &[String], env: &[(String, String)]) -> Command {
    assert!(
        program.starts_with('/') && program.ends_with("/engram"),
        "the deployment should run the engram binary by absolute path, runs {program}"
    );
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ENGRAM_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs a one-shot command to its end.
fn run(mut cmd: Command) -> process::Output {
    let shown = format!("{cmd:?}");
    process::run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// A server started as the deployment starts it, killed on drop.
struct Server {
    child: Child,
    /// The URL of its `engram listening on` line.
    url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let pipe = child.stderr.take().expect("stderr piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then keeps draining stderr so the server
        // never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("engram listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
            stderr,
            reader: Some(reader),
        };
        match rx.recv_timeout(LISTEN_TIMEOUT) {
            Ok(url) => server.url = url,
            Err(_) => {
                server.kill();
                panic!(
                    "{shown} did not print `engram listening on URL` within {} s; stderr:\n{}",
                    LISTEN_TIMEOUT.as_secs(),
                    server.stderr()
                );
            }
        }
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as `docker stop` and `systemctl stop` send it; waits for the
    /// exit and the last of stderr.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for engram") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "engram did not stop within {} s of SIGTERM; stderr:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Stops it with SIGTERM and expects a clean exit.
    fn stop_cleanly(mut self) {
        let status = self.terminate();
        let stderr = self.stderr();
        assert!(
            status.success(),
            "engram should exit 0 after SIGTERM, exited {status}; stderr:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "engram panicked while stopping:\n{stderr}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one HTTP/1.1 request and reads the answer's head: its status and
/// header lines (lower-cased names).
fn http_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => panic!("reading the answer from {addr}{path}: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer from {addr}{path}: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// An MCP `initialize` over HTTP, with `authorization` if given: the status.
fn initialize(addr: SocketAddr, authorization: Option<&str>) -> (u16, Vec<(String, String)>) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"deploy-test","version":"0"}}}"#;
    let bearer = authorization.map(|token| format!("Bearer {token}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    http_head(addr, "POST", "/mcp", &headers, body)
}

// ---------------------------------------------------------------------------
// The container.

#[test]
fn the_container_file_has_the_shape_the_deployment_relies_on() {
    let stages = stages(&read("deploy/Dockerfile"));
    assert_eq!(
        stages.len(),
        2,
        "two stages, a builder and a runtime: {stages:?}"
    );
    let (builder, runtime) = (&stages[0], &stages[1]);
    assert!(
        builder.image.starts_with("rust:"),
        "the builder starts from the Rust image, not {}",
        builder.image
    );
    let build = builder
        .all("RUN")
        .find(|r| r.args.contains("cargo build"))
        .expect("the builder runs cargo build");
    for arg in ["--release", "--locked", "--bin engram"] {
        assert!(
            build.args.contains(arg),
            "cargo build without {arg}: {}",
            build.args
        );
    }

    // The runtime stage holds the builder's binary where ENTRYPOINT runs it.
    let builder_name = builder
        .name
        .as_deref()
        .expect("the builder stage is named (AS ...)");
    let entrypoint = runtime.exec("ENTRYPOINT");
    let copied = runtime
        .all("COPY")
        .find(|c| c.args.contains(&format!("--from={builder_name}")))
        .expect("the runtime stage copies the binary from the builder");
    assert!(
        copied.args.split_whitespace().next_back() == Some(entrypoint[0].as_str()),
        "COPY {} should land at ENTRYPOINT's {}",
        copied.args,
        entrypoint[0]
    );

    // Not root.
    let user = runtime.last("USER").args.clone();
    let user_name = user.split(':').next().unwrap_or_default();
    assert!(
        !user_name.is_empty() && user_name != "root" && user_name != "0",
        "the runtime stage runs as root (USER {user})"
    );

    // The data dir is on a volume.
    let env = runtime.env();
    let data_dir = env
        .iter()
        .rev()
        .find(|(k, _)| k == "ENGRAM_DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("ENV ENGRAM_DATA_DIR");
    let volumes = runtime.volumes();
    assert!(
        volumes
            .iter()
            .any(|v| Path::new(&data_dir).starts_with(Path::new(v))),
        "ENGRAM_DATA_DIR={data_dir} is not in a VOLUME ({volumes:?})"
    );

    // The port served is the one exposed, and the health check asks it.
    let cmd = runtime.exec("CMD");
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("serve"),
        "CMD {cmd:?}"
    );
    let (_, http) = value_of(&cmd, "--http");
    let http: SocketAddr = http.parse().expect("CMD's --http is an address");
    assert_eq!(
        runtime.exposed(),
        vec![http.port()],
        "EXPOSE should be CMD's --http port"
    );
    let (options, health) = runtime.healthcheck();
    assert_eq!(health[0], entrypoint[0], "HEALTHCHECK runs the binary");
    assert_eq!(
        health.get(1).map(String::as_str),
        Some("health"),
        "{health:?}"
    );
    let (_, url) = value_of(&health, "--url");
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}/health", http.port()),
        "HEALTHCHECK asks the served port on loopback"
    );
    assert!(
        options.iter().any(|o| o.starts_with("--start-period=")),
        "HEALTHCHECK gives the server a start period: {options:?}"
    );
}

#[test]
fn the_container_steps_run_as_a_script() {
    let stages = stages(&read("deploy/Dockerfile"));
    let runtime = stages.last().expect("a runtime stage");
    let entrypoint = runtime.exec("ENTRYPOINT");
    let data = tempfile::tempdir().expect("a temp data dir");
    // The image's environment, with its data dir in the temp dir.
    let env: Vec<(String, String)> = runtime
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "ENGRAM_DATA_DIR" => (k, data.path().display().to_string()),
            _ => (k, v),
        })
        .collect();
    let with_entrypoint =
        |args: &[String]| -> Vec<String> { entrypoint[1..].iter().chain(args).cloned().collect() };

    // docker run --rm -v engram-data:/data engram token create ...
    let create: Vec<String> = [
        "token",
        "create",
        "--namespace",
        "deploy",
        "--scope",
        "write",
        "--label",
        "probe",
    ]
    .map(String::from)
    .to_vec();
    let out = run(engram(&entrypoint[0], &with_entrypoint(&create), &env));
    assert!(
        out.status_ok,
        "token create: {}\nstderr:\n{}",
        out.status, out.stderr
    );
    let token = out.stdout.trim().to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "token create should print the token alone on stdout, printed {:?}",
        out.stdout
    );

    // docker run -d ... engram: ENTRYPOINT + CMD, on a free port, still binding
    // every address (allowed: a token exists).
    let port = free_port();
    let (cmd, bound) = with_http_port(&runtime.exec("CMD"), port);
    assert!(
        bound.ip().is_unspecified(),
        "the container binds every address, CMD binds {bound}"
    );
    let server = Server::start(engram(&entrypoint[0], &with_entrypoint(&cmd), &env));
    assert!(
        server.url.contains(&format!(":{port}/")),
        "listening on {} rather than port {port}",
        server.url
    );

    // The HEALTHCHECK command, on the same port.
    let (_, health) = runtime.healthcheck();
    let exposed = runtime.exposed()[0];
    let health: Vec<String> = health
        .iter()
        .map(|a| a.replace(&format!(":{exposed}/"), &format!(":{port}/")))
        .collect();
    let out = run(engram(&health[0], &health[1..], &env));
    assert!(
        out.status_ok,
        "HEALTHCHECK {health:?}: {}\nstdout:\n{}\nstderr:\n{}\nserver stderr:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        server.stderr()
    );

    // With a token in the store, requests need one.
    let local = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let (status, headers) = initialize(local, None);
    assert_eq!(status, 401, "initialize without a token");
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.to_ascii_lowercase().starts_with("bearer")),
        "a 401 carries WWW-Authenticate: Bearer ...; headers {headers:?}"
    );
    let (status, _) = initialize(local, Some(&token));
    assert_eq!(status, 200, "initialize with the token just created");

    // docker stop: SIGTERM, then a clean exit.
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------
// The systemd unit.

/// The unit's `(section, key, value)` lines, in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued lines are not read here: {line}"
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    out
}

#[test]
fn the_systemd_unit_is_hardened_and_its_command_serves() {
    let entries = unit_entries(&read("deploy/engram.service"));
    let service = |key: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    let one = |key: &str| -> String {
        service(key)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("the unit sets no {key}="))
    };
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("UMask"), "0077");

    // The data dir is the unit's state directory.
    let state = one("StateDirectory");
    let env: Vec<(String, String)> = service("Environment")
        .iter()
        .flat_map(|e| env_pairs(e.as_str()))
        .collect();
    let data_dir = env
        .iter()
        .find(|(k, _)| k == "ENGRAM_DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("Environment=ENGRAM_DATA_DIR=...");
    assert_eq!(
        data_dir,
        format!("%S/{state}"),
        "ENGRAM_DATA_DIR should be the StateDirectory"
    );

    // ExecStart's arguments are the binary's: serve them on a free port with a
    // temp data dir, see it listen and answer, stop it as systemctl would.
    let exec = one("ExecStart");
    let argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
    let (args, bound) = with_http_port(&argv[1..], free_port());
    assert!(
        bound.ip().is_loopback(),
        "the unit serves loopback behind a reverse proxy, binds {bound}"
    );
    let data = tempfile::tempdir().expect("a temp data dir");
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "ENGRAM_DATA_DIR" => (k, data.path().display().to_string()),
            _ => (k, v),
        })
        .collect();
    let server = Server::start(engram(&argv[0], &args, &env));
    let base = server.url.trim_end_matches("/mcp").to_string();
    let out = run(engram(
        &argv[0],
        &[
            "health".to_string(),
            "--url".to_string(),
            format!("{base}/health"),
        ],
        &env,
    ));
    assert!(
        out.status_ok,
        "engram health --url {base}/health: {}\nstderr:\n{}",
        out.status, out.stderr
    );
    assert!(
        data.path().join("engram.sqlite3").exists(),
        "the server keeps its store in ENGRAM_DATA_DIR"
    );
    server.stop_cleanly();
}

// ---------------------------------------------------------------------------
// Monitoring.

/// Every `engram_...` name in `text`.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("engram_") {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            into.insert(text[start..end].to_string());
        }
        i = end;
    }
}

fn strings(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => metric_names(s, into),
        Value::Array(items) => items.iter().for_each(|v| strings(v, into)),
        Value::Object(map) => map.values().for_each(|v| strings(v, into)),
        _ => {}
    }
}

/// The family a series name belongs to, if it is one the server exposes.
fn family(name: &str) -> Option<&'static str> {
    METRIC_FAMILIES.iter().find_map(|&(family, kind)| {
        let series = name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family)));
        series.then_some(family)
    })
}

#[test]
fn the_dashboard_names_only_metrics_the_server_exposes() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana-dashboard.json"))
        .expect("the dashboard is JSON");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .is_some_and(|inputs| inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "the dashboard asks for its Prometheus data source (DS_PROMETHEUS) on import"
    );

    let mut names = BTreeSet::new();
    strings(&dashboard, &mut names);
    let unknown: Vec<&String> = names.iter().filter(|n| family(n).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics the server does not expose: {unknown:?}"
    );
    let used: BTreeSet<&str> = names.iter().filter_map(|n| family(n)).collect();
    let unused: Vec<&str> = METRIC_FAMILIES
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| !used.contains(f))
        .collect();
    assert!(unused.is_empty(), "no panel shows {unused:?}");

    // Every panel queries the imported data source, and ids are unique.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {:?}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {:?} has no query",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("engram_"),
                "panel {:?}: {expr:?}",
                panel["title"]
            );
            if expr.contains("histogram_quantile") {
                assert!(
                    expr.contains("_bucket") && expr.contains("rate(") && expr.contains("le"),
                    "quantiles come from the rate of the buckets by le: {expr}"
                );
            }
        }
    }
}

#[test]
fn the_prometheus_example_scrapes_engram_with_a_token() {
    let config = read("deploy/prometheus.yml");
    for needed in [
        "metrics_path: /metrics",
        "type: Bearer",
        "credentials_file: /etc/engram/metrics.token",
        "127.0.0.1:8765",
    ] {
        assert!(
            config.contains(needed),
            "deploy/prometheus.yml should have {needed:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The guides.

/// Whether `doc` mentions `flag` as a whole word (`--rate-limit` is not
/// `--rate-limit-x`).
fn mentions(doc: &str, flag: &str) -> bool {
    doc.match_indices(flag).any(|(at, _)| {
        doc[at + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'))
    })
}

#[test]
fn the_guides_cover_every_flag_of_serve() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("engram runs");
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    let docs = read("docs/tuning.md") + &read("docs/deployment.md");
    let mut missing = Vec::new();
    for line in help.lines().map(str::trim_start) {
        let Some(flag) = line
            .split([',', ' '])
            .map(str::trim)
            .find(|w| w.starts_with("--"))
        else {
            continue;
        };
        if !line.starts_with('-') || matches!(flag, "--help" | "--version") {
            continue;
        }
        if !mentions(&docs, flag) {
            missing.push(flag.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/tuning.md and docs/deployment.md never mention {missing:?}"
    );
}
