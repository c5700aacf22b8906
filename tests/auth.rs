//! Who may read what over HTTP, against the real binary: tokens made with
//! `engram token create` (while the server runs), 401s with their challenge,
//! a token's namespace whatever the header says, scopes on every operation,
//! admins across namespaces, audit rows naming tokens, `/metrics` parsed as
//! Prometheus reads it, and the refused insecure bind. stdio is unaffected.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{HttpServer, call, engram_std, stdio_client, strings};
use engram::auth::Scope;
use engram::catalog::catalog;
use serde_json::{Value, json};

const V2026: &str = "2026-07-28";

/// `engram token create`: the token it prints.
fn token(dir: &Path, namespace: &str, scope: &str, label: &str, more: &[&str]) -> String {
    common::make_token(dir, namespace, scope, label, more)
}

fn engram_ok(dir: &Path, args: &[&str]) -> String {
    let out = engram_std(dir, args).output().expect("engram");
    assert!(
        out.status.success(),
        "engram {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stateless (2026-07-28) requests with a token and maybe a namespace header.
struct Caller {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    namespace: Option<&'static str>,
}

struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

impl Caller {
    fn new(server: &HttpServer, token: Option<&str>, namespace: Option<&'static str>) -> Caller {
        Caller {
            http: reqwest::Client::new(),
            url: server.url.clone(),
            token: token.map(str::to_string),
            namespace,
        }
    }

    async fn send(&self, name: &str, args: Value) -> Answer {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": args, "_meta": {
                "io.modelcontextprotocol/protocolVersion": V2026,
                "io.modelcontextprotocol/clientCapabilities": {}
            }}
        });
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", V2026)
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(body.to_string());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(ns) = self.namespace {
            req = req.header("x-engram-namespace", ns);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap_or_default();
        let json_text = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .unwrap_or(text.trim());
        let body = serde_json::from_str(json_text).unwrap_or(Value::String(text.clone()));
        Answer {
            status,
            challenge,
            body,
        }
    }

    /// A tool call that must reach the tool: its result.
    async fn tool(&self, name: &str, args: Value) -> Value {
        let answer = self.send(name, args).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        answer.body["result"].clone()
    }

    async fn ok(&self, name: &str, args: Value) -> Value {
        let result = self.tool(name, args).await;
        assert_ne!(result["isError"], true, "{name}: {result}");
        result["structuredContent"].clone()
    }

    async fn refused(&self, name: &str, args: Value) -> String {
        let result = self.tool(name, args).await;
        assert_eq!(result["isError"], true, "{name} should fail: {result}");
        result["content"][0]["text"].as_str().unwrap().to_string()
    }
}

fn assert_challenge(answer: &Answer, error: Option<&str>) {
    assert_eq!(answer.status, 401, "{}", answer.body);
    let challenge = answer.challenge.as_deref().expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("resource_metadata=\"http://127.0.0.1:"),
        "{challenge}"
    );
    match error {
        Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{challenge}"),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
}

#[tokio::test]
async fn requests_without_a_usable_token_get_401_with_a_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(dir.path(), &[]).await;
    let anonymous = Caller::new(&server, None, None);
    // No token exists yet: a loopback server is open, as before.
    anonymous
        .ok("episodic_remember", json!({"content": "before tokens"}))
        .await;

    // The first token turns authentication on at the next request.
    let good = token(dir.path(), "alpha", "write", "good", &[]);
    assert_challenge(&anonymous.send("episodic_recall", json!({})).await, None);
    let wrong_secret = format!("{}x", &good[..good.len() - 1]);
    for bad in ["nonsense", wrong_secret.as_str()] {
        let answer = Caller::new(&server, Some(bad), None)
            .send("episodic_recall", json!({}))
            .await;
        assert_challenge(&answer, Some("invalid_token"));
    }
    Caller::new(&server, Some(&good), None)
        .ok("episodic_recall", json!({"query": "tokens"}))
        .await;

    // Revoked: refused at the next request.
    let revoked = token(dir.path(), "alpha", "write", "soon-revoked", &[]);
    let caller = Caller::new(&server, Some(&revoked), None);
    caller.ok("episodic_recall", json!({"query": "x"})).await;
    engram_ok(dir.path(), &["token", "revoke", "soon-revoked"]);
    assert_challenge(
        &caller.send("episodic_recall", json!({})).await,
        Some("invalid_token"),
    );

    // Expired.
    let brief = token(dir.path(), "alpha", "write", "brief", &["--expires", "1s"]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let answer = Caller::new(&server, Some(&brief), None)
        .send("episodic_recall", json!({}))
        .await;
    assert_challenge(&answer, Some("invalid_token"));
    assert!(answer.body["message"].as_str().unwrap().contains("expired"));

    // Where the challenge points: RFC 9728 metadata, no token needed.
    let challenge = answer.challenge.unwrap();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    let metadata: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["resource"], server.url, "{metadata}");
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));

    // The listing shows every token, never a token itself.
    let listed = engram_ok(dir.path(), &["token", "list"]);
    for label in ["good", "soon-revoked", "brief"] {
        assert!(listed.contains(label), "{listed}");
    }
    assert!(
        listed.contains("revoked") && listed.contains("expired"),
        "{listed}"
    );
    assert!(
        !listed.contains(&good) && !listed.contains("engram_"),
        "{listed}"
    );
}

#[tokio::test]
async fn a_token_fixes_its_namespace_whatever_the_header_or_session_says() {
    let dir = tempfile::tempdir().unwrap();
    let a = token(dir.path(), "alpha", "write", "agent-a", &[]);
    let b = token(dir.path(), "beta", "write", "agent-b", &[]);
    let server = HttpServer::start(dir.path(), &[]).await;

    let alpha = Caller::new(&server, Some(&a), None);
    alpha
        .ok("episodic_remember", json!({"content": "alpha secret kiwi"}))
        .await;
    // B asks for alpha by header: refused before anything runs.
    let answer = Caller::new(&server, Some(&b), Some("alpha"))
        .send("episodic_recall", json!({"query": "kiwi"}))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // B in its own namespace sees nothing of alpha's.
    let beta = Caller::new(&server, Some(&b), Some("beta"));
    let recalled = beta.ok("episodic_recall", json!({"query": "kiwi"})).await;
    assert_eq!(recalled["hits"], json!([]), "{recalled}");

    // A session-based client (rmcp, 2025-11-25) is bound the same way.
    let session = server
        .try_client_as(Some(&b), None)
        .await
        .expect("initialize with a token");
    let recalled = call(&session, "episodic_recall", json!({"query": "kiwi"}))
        .await
        .unwrap();
    assert_eq!(recalled["hits"], json!([]), "{recalled}");
    assert!(
        server.try_client_as(Some(&b), Some("alpha")).await.is_err(),
        "a header naming another namespace is refused at initialize"
    );
    assert!(
        server.try_client_as(None, None).await.is_err(),
        "no token, no session"
    );

    // Another token cannot ride on A's MCP session.
    let raw = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let resp = raw
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(&a)
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let session_id = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let hijack = raw
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session_id)
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(&b)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status().as_u16(), 403);
}

/// Every operation that writes (or is maintenance) is refused to a read
/// token before its arguments are even read, and changes nothing.
#[tokio::test]
async fn read_tokens_are_refused_on_every_write_operation() {
    let dir = tempfile::tempdir().unwrap();
    let reader = token(dir.path(), "gamma", "read", "reader", &[]);
    let admin = token(dir.path(), "gamma", "admin", "root", &[]);
    let server = HttpServer::start(dir.path(), &["--tools", "all"]).await;
    let caller = Caller::new(&server, Some(&reader), None);
    let mut refused = 0;
    for op in &catalog().operations {
        let needed = Scope::needed_by(op);
        if needed == Scope::Read {
            continue;
        }
        let message = caller.refused(&op.name, json!({})).await;
        assert!(
            message.contains("scope read") && message.contains(&format!("scope {needed}")),
            "{}: {message}",
            op.name
        );
        refused += 1;
    }
    assert!(
        refused > 30,
        "only {refused} operations need more than read"
    );
    // A read works, and nothing was written: the audit trail is empty.
    let root = Caller::new(&server, Some(&admin), None);
    let audit = root.ok("meta_audit", json!({})).await;
    assert_eq!(audit["entries"], json!([]), "{audit}");
    caller.ok("semantic_search", json!({"query": "x"})).await;
}

#[tokio::test]
async fn admins_cross_namespaces_and_audit_rows_name_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let one = token(dir.path(), "alpha", "write", "writer-one", &[]);
    let two = token(dir.path(), "alpha", "write", "writer-two", &[]);
    let other = token(dir.path(), "beta", "write", "writer-beta", &[]);
    let admin = token(dir.path(), "ops", "admin", "operator", &[]);
    let server = HttpServer::start(dir.path(), &["--tools", "all"]).await;

    Caller::new(&server, Some(&one), None)
        .ok("episodic_remember", json!({"content": "first from one"}))
        .await;
    Caller::new(&server, Some(&two), None)
        .ok("semantic_store", json!({"content": "second from two"}))
        .await;
    Caller::new(&server, Some(&other), None)
        .ok("episodic_remember", json!({"content": "in beta"}))
        .await;

    // The admin names alpha by header and reads it, audit trail included.
    let root = Caller::new(&server, Some(&admin), Some("alpha"));
    let audit = root.ok("meta_audit", json!({})).await;
    let tokens = strings(&audit["entries"], "/token");
    assert_eq!(tokens, ["writer-two", "writer-one"], "{audit}");
    let names = root.ok("meta_namespaces", json!({})).await;
    assert!(names.to_string().contains("beta"), "{names}");
    root.ok("meta_stats", json!({"all_namespaces": true})).await;

    // A write token may not.
    let writer = Caller::new(&server, Some(&one), None);
    let msg = writer.refused("meta_namespaces", json!({})).await;
    assert!(msg.contains("scope admin"), "{msg}");
    let msg = writer
        .refused("meta_stats", json!({"all_namespaces": true}))
        .await;
    assert!(msg.contains("scope admin"), "{msg}");
    writer.ok("meta_stats", json!({})).await;

    // `engram audit` reads the same rows beside the running server.
    let printed = engram_ok(dir.path(), &["audit", "--all-namespaces", "--json"]);
    let rows: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["namespace"].as_str().unwrap(),
                r["token"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("beta", "writer-beta"),
            ("alpha", "writer-two"),
            ("alpha", "writer-one")
        ]
    );
    let table = engram_ok(
        dir.path(),
        &["--namespace", "alpha", "audit", "--token", "writer-one"],
    );
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(table.contains("episodic_remember"), "{table}");
}

/// The families `/metrics` must carry, as Prometheus names their samples.
const FAMILIES: &[&str] = &[
    "engram_operation_calls_total",
    "engram_operation_errors_total",
    "engram_operation_duration_seconds",
    "engram_cache_hits_total",
    "engram_cache_misses_total",
    "engram_cache_evictions_total",
    "engram_cache_invalidations_total",
    "engram_cache_entries",
    "engram_cache_bytes",
    "engram_breaker_state",
    "engram_breaker_opened_total",
    "engram_sessions_open",
    "engram_session_handles_open",
    "engram_index_pending_changes",
    "engram_index_commits_total",
    "engram_commit_batch_size",
    "engram_commit_fsync_seconds",
    "engram_store_reads_total",
    "engram_store_bytes",
    "engram_index_bytes",
    "engram_resident_memory_bytes",
    "engram_auth_failures_total",
    "engram_build_info",
];

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let t = token(dir.path(), "alpha", "read", "scraper", &[]);
    let w = token(dir.path(), "alpha", "write", "writer", &[]);
    let server = HttpServer::start(dir.path(), &[]).await;
    let writer = Caller::new(&server, Some(&w), None);
    writer
        .ok("episodic_remember", json!({"content": "metrics kiwi"}))
        .await;
    writer.ok("episodic_recall", json!({"query": "kiwi"})).await;
    writer.ok("episodic_recall", json!({"query": "kiwi"})).await;
    writer.refused("episodic_recall", json!({})).await;
    Caller::new(&server, Some("nonsense"), None)
        .send("episodic_recall", json!({}))
        .await;

    let url = format!("{}/metrics", server.base());
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    let text = http
        .get(&url)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for family in FAMILIES {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "no {family} in:\n{text}"
        );
    }
    let value = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let recalls = [("operation", "episodic_recall"), ("kind", "read")];
    assert_eq!(
        value("engram_operation_calls_total", &recalls),
        3.0,
        "{text}"
    );
    let missing = [("operation", "episodic_recall"), ("error", "invalid_input")];
    assert_eq!(
        value("engram_operation_errors_total", &missing),
        1.0,
        "{text}"
    );
    assert!(value("engram_cache_hits_total", &[]) >= 1.0, "{text}");
    assert_eq!(
        value("engram_auth_failures_total", &[("reason", "invalid")]),
        1.0
    );
    assert_eq!(value("engram_breaker_state", &[("backend", "store")]), 0.0);
    assert!(value("engram_store_bytes", &[]) > 0.0);
    // Reads ran on the writer's connection, lent while it was idle (the
    // sum is 0 if it never is).
    assert!(
        value("engram_store_reads_total", &[("connection", "writer")]) >= 1.0,
        "{text}"
    );
    assert!(value("engram_resident_memory_bytes", &[]) > 0.0);
    // No namespace appears unless asked for.
    assert!(!text.contains("alpha"), "{text}");

    // Every metric the dashboard charts is one the server serves.
    let dashboard =
        std::fs::read_to_string(common::repo().join("deploy/grafana-dashboard.json")).unwrap();
    let mut charted: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("engram_"))
        .collect();
    charted.sort();
    charted.dedup();
    assert!(!charted.is_empty());
    for metric in charted {
        let base = metric
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            names.iter().any(|n| n.starts_with(base)),
            "the dashboard charts {metric}, which /metrics does not serve"
        );
    }
}

#[tokio::test]
async fn per_namespace_metrics_need_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let w = token(dir.path(), "alpha", "write", "writer", &[]);
    let admin = token(dir.path(), "ops", "admin", "root", &[]);
    let server = HttpServer::start(dir.path(), &["--metrics-namespaces"]).await;
    Caller::new(&server, Some(&w), None)
        .ok("episodic_remember", json!({"content": "counted"}))
        .await;
    let url = format!("{}/metrics", server.base());
    let http = reqwest::Client::new();
    let as_writer = http.get(&url).bearer_auth(&w).send().await.unwrap();
    assert_eq!(as_writer.status().as_u16(), 403);
    let text = http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("engram_namespace_calls_total{namespace=\"alpha\",kind=\"write\"} 1"),
        "{text}"
    );
}

/// The first line `engram serve ARGS` prints that says whether it serves;
/// the server is stopped after it.
fn serves(dir: &Path, args: &[&str]) -> String {
    let mut child = engram_std(dir, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("engram listening on") || l.contains("refusing"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn serving_a_public_address_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let public = ["serve", "--http", "0.0.0.0:0"];
    let out = common::process::run_with_timeout(
        &mut engram_std(dir.path(), &public),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(!out.status_ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("refusing to serve") && out.stderr.contains("engram token create"),
        "{}",
        out.stderr
    );
    // When insisting, or with a token, it serves.
    let insisting = serves(dir.path(), &[&public[..], &["--insecure-no-auth"]].concat());
    assert!(insisting.contains("engram listening on"), "{insisting}");
    token(dir.path(), "alpha", "write", "t", &[]);
    let guarded = serves(dir.path(), &public);
    assert!(guarded.contains("engram listening on"), "{guarded}");
}

#[tokio::test]
async fn stdio_is_the_owner_whatever_tokens_exist() {
    let dir = tempfile::tempdir().unwrap();
    token(dir.path(), "alpha", "read", "reader", &[]);
    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    call(&client, "episodic_remember", json!({"content": "local"}))
        .await
        .unwrap();
    call(&client, "meta_namespaces", json!({})).await.unwrap();
    client.cancel().await.unwrap();
}

/// Revoking or outliving every token does not open the server again: once a
/// token was made, requests need one.
#[tokio::test]
async fn revoking_the_last_token_does_not_open_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let only = token(dir.path(), "alpha", "write", "only", &[]);
    let server = HttpServer::start(dir.path(), &[]).await;
    Caller::new(&server, Some(&only), None)
        .ok("episodic_recall", json!({"query": "x"}))
        .await;
    engram_ok(dir.path(), &["token", "revoke", "only"]);
    let anonymous = Caller::new(&server, None, None);
    assert_challenge(
        &anonymous
            .send("episodic_recall", json!({"query": "x"}))
            .await,
        None,
    );
}

/// Nested calls and session handles keep the caller's token: a read token
/// cannot write through call_operation, and a handle opened with one token
/// is refused to another of the same namespace.
#[tokio::test]
async fn nested_calls_and_session_handles_keep_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let reader = token(dir.path(), "alpha", "read", "reader", &[]);
    let a = token(dir.path(), "alpha", "write", "writer-a", &[]);
    let b = token(dir.path(), "alpha", "write", "writer-b", &[]);
    let server = HttpServer::start(dir.path(), &[]).await;

    let msg = Caller::new(&server, Some(&reader), None)
        .refused(
            "call_operation",
            json!({"name": "episodic_remember", "arguments": {"content": "sneaky"}}),
        )
        .await;
    assert!(msg.contains("scope read"), "{msg}");

    let handle = Caller::new(&server, Some(&a), None)
        .ok(
            "call_operation",
            json!({"name": "session_open", "arguments": {}}),
        )
        .await["result"]["session"]
        .as_str()
        .unwrap()
        .to_string();
    let scratch = json!({"name": "session_scratch_set",
                         "arguments": {"session": handle, "key": "k", "value": 1}});
    Caller::new(&server, Some(&a), None)
        .ok("call_operation", scratch.clone())
        .await;
    let msg = Caller::new(&server, Some(&b), None)
        .refused("call_operation", scratch)
        .await;
    assert!(msg.contains("another token"), "{msg}");
}
