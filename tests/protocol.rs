//! MCP 2026-07-28 next to 2025-11-25, raw JSON-RPC against the real binary:
//! stateless requests in any order with no handshake, `server/discover`, an
//! unsupported version, the namespace per request, session handles (isolation
//! between namespaces, expiry), and the tool list the same for every caller.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::mem::Mem;
use common::wire::{RawStdio, post, tool_error};
use common::{HttpServer, connect, engram, strings};
use serde_json::{Value, json};

const V2026: &str = "2026-07-28";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

/// A 2026-07-28 request: no handshake, the protocol version and client
/// capabilities in its `_meta`.
fn request(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = meta();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Stateless 2026-07-28 requests over HTTP, in one namespace (by header).
struct Stateless {
    http: reqwest::Client,
    url: String,
    namespace: &'static str,
}

impl Stateless {
    fn new(server: &HttpServer, namespace: &'static str) -> Stateless {
        Stateless {
            http: reqwest::Client::new(),
            url: server.url.clone(),
            namespace,
        }
    }

    /// One request; the JSON-RPC answer.
    async fn request(&self, id: i64, method: &str, params: Value) -> Value {
        let mut headers = vec![
            ("mcp-protocol-version", V2026),
            ("mcp-method", method),
            ("x-engram-namespace", self.namespace),
        ];
        let name = params["name"].as_str().map(String::from);
        if let Some(name) = &name {
            headers.push(("mcp-name", name));
        }
        let body = request(id, method, params).to_string().into_bytes();
        let (_, text) = post(&self.http, &self.url, body, &headers).await;
        // JSON, or one SSE event carrying it.
        let json_text = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .unwrap_or(text.trim());
        serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// `tools/call`: the result of the answer with this `id`.
    async fn tool(&self, id: i64, name: &str, args: Value) -> Value {
        let params = json!({"name": name, "arguments": args});
        let answer = self.request(id, "tools/call", params).await;
        assert_eq!(answer["id"], id, "{answer}");
        answer["result"].clone()
    }
}

/// `engram serve --http ARGS`, and stateless callers in namespaces alpha and beta.
async fn alpha_and_beta(args: &[&str]) -> (HttpServer, Stateless, Stateless) {
    let server = HttpServer::fresh(args).await;
    let alpha = Stateless::new(&server, "alpha");
    let beta = Stateless::new(&server, "beta");
    (server, alpha, beta)
}

#[tokio::test]
async fn stateless_requests_work_in_any_order_without_a_handshake() {
    let (_server, alpha, beta) = alpha_and_beta(&["--tools", "core"]).await;

    // A tool call first: no initialize, no discover.
    let r = alpha
        .tool(
            1,
            "episodic_remember",
            json!({"content": "stateless kiwi harvest"}),
        )
        .await;
    assert_ne!(r["isError"], true, "{r}");
    assert_eq!(r["resultType"], "complete", "{r}");
    let r = alpha
        .tool(2, "episodic_recall", json!({"query": "kiwi"}))
        .await;
    assert_eq!(
        r["structuredContent"]["hits"][0]["event"]["content"], "stateless kiwi harvest",
        "{r}"
    );
    // The namespace is per request: beta sees nothing of alpha's.
    let r = beta
        .tool(3, "episodic_recall", json!({"query": "kiwi"}))
        .await;
    assert_eq!(r["structuredContent"]["hits"], json!([]), "{r}");

    let d = alpha.request(4, "server/discover", json!({})).await;
    let versions = d["result"]["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!(V2026)), "{d}");
    assert!(versions.contains(&json!("2025-11-25")), "{d}");
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "engram",
        "{d}"
    );

    // tools/list: deterministic, the profile, cacheable.
    let a = alpha.request(5, "tools/list", json!({})).await;
    let b = beta.request(6, "tools/list", json!({})).await;
    assert_eq!(a["result"]["tools"], b["result"]["tools"]);
    assert!(a["result"]["ttlMs"].as_u64().unwrap() > 0, "{a}");
    assert!(a["result"]["cacheScope"].is_string(), "{a}");
    let names = strings(&a["result"]["tools"], "/name");
    assert!(
        names.contains(&"call_operation") && !names.contains(&"graph_stats"),
        "{names:?}"
    );

    // Lists do not change per caller: enable_toolset points at call_operation.
    let r = alpha
        .tool(7, "enable_toolset", json!({"layer": "graph"}))
        .await;
    assert!(tool_error(&r).contains("call_operation"));
    let r = alpha
        .tool(
            8,
            "call_operation",
            json!({"name": "episodic_count", "arguments": {}}),
        )
        .await;
    assert_eq!(r["structuredContent"]["result"]["count"], 1, "{r}");
}

#[tokio::test]
async fn an_unsupported_version_is_refused_with_the_supported_ones() {
    let server = HttpServer::fresh(&[]).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = [
        ("mcp-protocol-version", "2099-01-01"),
        ("mcp-method", "tools/list"),
    ];
    let body = body.to_string().into_bytes();
    let (_, text) = post(&reqwest::Client::new(), &server.url, body, &headers).await;
    assert!(text.contains("error"), "{text}");
    assert!(
        text.contains(V2026),
        "the error names the supported versions: {text}"
    );
}

#[tokio::test]
async fn session_handles_carry_scratch_and_stay_in_their_namespace() {
    let (_server, alpha, beta) = alpha_and_beta(&["--tools", "all"]).await;

    // Without a handle a stateless call says how to get one.
    let r = alpha
        .tool(1, "session_scratch_get", json!({"key": "plan"}))
        .await;
    assert!(tool_error(&r).contains("session_open"));

    let r = alpha.tool(2, "session_open", json!({})).await;
    let handle = r["structuredContent"]["session"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(handle.len() > 40, "unguessable: {handle}");
    assert_eq!(r["structuredContent"]["namespace"], "alpha");

    let r = alpha
        .tool(
            3,
            "session_scratch_set",
            json!({"key": "plan", "value": {"step": 2}, "session": handle}),
        )
        .await;
    assert_ne!(r["isError"], true, "{r}");
    // Another request, the same handle: the value is there.
    let r = alpha
        .tool(
            4,
            "session_scratch_get",
            json!({"key": "plan", "session": handle}),
        )
        .await;
    assert_eq!(r["structuredContent"]["value"], json!({"step": 2}), "{r}");
    let r = alpha
        .tool(5, "session_info", json!({"session": handle}))
        .await;
    assert_eq!(r["structuredContent"]["handle"], handle.as_str(), "{r}");
    // Through call_operation too.
    let r = alpha
        .tool(
            6,
            "call_operation",
            json!({"name": "session_scratch_list", "arguments": {"session": handle}}),
        )
        .await;
    assert_eq!(
        r["structuredContent"]["result"]["entries"][0]["key"], "plan",
        "{r}"
    );

    // The handle is refused from another namespace, and an invented one anywhere.
    let r = beta
        .tool(
            7,
            "session_scratch_get",
            json!({"key": "plan", "session": handle}),
        )
        .await;
    assert!(tool_error(&r).contains("another namespace"));
    let r = alpha
        .tool(
            8,
            "session_scratch_get",
            json!({"key": "plan", "session": "sh_guess"}),
        )
        .await;
    assert!(tool_error(&r).contains("session_open"));
}

#[tokio::test]
async fn expired_handles_are_refused_with_how_to_get_a_new_one() {
    // In process: a one-second idle expiry.
    let h = Mem::open("alpha", |c| c.handle_idle_secs = 1).await;
    let opened = h.call("session_open", json!({})).await.unwrap();
    let handle = opened["session"].as_str().unwrap();
    h.call("session_info", json!({"session": handle}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let e = h
        .call("session_info", json!({"session": handle}))
        .await
        .unwrap_err();
    assert!(e.contains("expired") && e.contains("session_open"), "{e}");
}

#[tokio::test]
async fn stdio_speaks_2026_07_28_without_initialize_and_2025_11_25_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawStdio::spawn(dir.path(), &["--tools", "core"]);
    let d = raw.request(request(1, "server/discover", json!({}))).await;
    assert!(
        d["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(V2026)),
        "{d}"
    );
    let remember = json!({"name": "episodic_remember", "arguments": {"content": "stdio plum"}});
    let r = raw.request(request(2, "tools/call", remember)).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    // Over stdio the process is the session: scratch needs no handle.
    let set_scratch = json!({"name": "call_operation",
        "arguments": {"name": "session_scratch_set", "arguments": {"key": "k", "value": 1}}});
    let r = raw.request(request(3, "tools/call", set_scratch)).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    // The list is the profile for every caller: enable_toolset cannot grow it.
    let enable = json!({"name": "enable_toolset", "arguments": {"layer": "graph"}});
    let r = raw.request(request(5, "tools/call", enable)).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    // ping is gone in 2026-07-28.
    let r = raw.request(request(4, "ping", json!({}))).await;
    assert!(r["error"].is_object(), "{r}");
}

/// A client that records `notifications/resources/updated`.
#[derive(Clone, Default)]
struct Watcher {
    updated: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    notified: std::sync::Arc<tokio::sync::Notify>,
}

impl rmcp::ClientHandler for Watcher {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::default(),
            rmcp::model::Implementation::new("watcher", "0"),
        )
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _ctx: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.updated.lock().unwrap().push(params.uri);
        self.notified.notify_one();
    }
}

#[tokio::test]
async fn memory_is_readable_as_resources_and_subscriptions_see_writes() {
    use rmcp::model::{ReadResourceRequestParams, SubscribeRequestParams};
    let dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::default();
    let server = engram(
        dir.path(),
        &["serve", "--namespace", "res", "--tools", "all"],
    );
    let (client, _) = connect(watcher.clone(), server, Stdio::null()).await;
    let listed = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    assert!(
        uris.contains(&"engram://graph") && uris.contains(&"engram://episodic/recent"),
        "{uris:?}"
    );

    // resources/subscribe: the 2025-11-25 way, which this session speaks.
    #[allow(deprecated)]
    client
        .subscribe(SubscribeRequestParams::new("engram://graph"))
        .await
        .unwrap();
    let call = async |name: &str, args: Value| {
        let params = rmcp::model::CallToolRequestParams::new(name.to_string())
            .with_arguments(args.as_object().unwrap().clone());
        let r = client.call_tool(params).await.unwrap();
        assert_ne!(r.is_error, Some(true), "{r:?}");
    };
    call(
        "create_entities",
        json!({"entities": [{"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}]}),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), watcher.notified.notified())
        .await
        .expect("a resources/updated notification");
    assert_eq!(
        watcher.updated.lock().unwrap().as_slice(),
        ["engram://graph"]
    );

    let read = client
        .read_resource(ReadResourceRequestParams::new("engram://graph"))
        .await
        .unwrap();
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    let graph: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(graph["entities"][0]["name"], "Ada", "{graph}");
    // A write to another layer does not touch the graph resource: after it, a
    // second graph write's notification is the next one (broadcast order).
    call("episodic_remember", json!({"content": "not a graph write"})).await;
    call(
        "add_observations",
        json!({"observations": [{"entityName": "Ada", "contents": ["worked with Babbage"]}]}),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while watcher.updated.lock().unwrap().len() < 2 {
            watcher.notified.notified().await;
        }
    })
    .await
    .expect("a second resources/updated notification");
    assert_eq!(
        watcher.updated.lock().unwrap().as_slice(),
        ["engram://graph", "engram://graph"]
    );
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("engram://nope"))
            .await
            .is_err()
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn stateless_requests_share_their_namespace_rate_allowance() {
    let (_server, alpha, beta) = alpha_and_beta(&["--rate-limit", "1", "--rate-burst", "2"]).await;
    // Each request is a fresh session; the allowance still holds per namespace.
    for id in 1..=2 {
        let r = alpha.tool(id, "episodic_recent", json!({})).await;
        assert_ne!(r["isError"], true, "{r}");
    }
    let r = alpha.tool(3, "episodic_recent", json!({})).await;
    assert!(tool_error(&r).contains("rate limit"));
    let r = beta.tool(4, "episodic_recent", json!({})).await;
    assert_ne!(
        r["isError"], true,
        "another namespace has its own allowance: {r}"
    );
}
