//! Hostile and malformed input against the real binary: every message gets an
//! answer (stdio and HTTP), bad arguments get tool errors that name the field
//! and quote little, nothing panics or wedges the server, and the edges hold
//! (Origin, Host, session cap, scratch budget, forged cursors, file modes).

mod common;

use std::time::Duration;

use common::HttpServer;
use common::wire::{RawStdio, initialize_request, post, tool_error};
use serde_json::{Value, json};

#[tokio::test]
async fn every_malformed_line_on_stdio_gets_a_json_rpc_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawStdio::start(dir.path(), &["--tools", "all"]).await;
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (deep.into_bytes(), -32700),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"\ud800"}}"#.to_vec(),
            -32700,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":1e400}}"#.to_vec(),
            -32700,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":NaN}}"#.to_vec(),
            -32700,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"} trailing"#.to_vec(),
            -32700,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(),
            -32700,
        ),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#.to_vec(),
            -32600,
        ),
        (
            br#"{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"}"#.to_vec(),
            -32600,
        ),
        (br#"42"#.to_vec(), -32600),
    ];
    for (line, code) in cases {
        raw.send_line(&line).await;
        let answer = raw.next().await;
        assert_eq!(answer["error"]["code"], code, "{answer}");
        assert_eq!(answer["id"], Value::Null, "{answer}");
    }
    // A known method with params that do not fit: -32602 with the request's id.
    let answer = raw
        .request(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                        "params": {"name": "episodic_count", "arguments": [1, 2]}}))
        .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(answer["id"], 9);
    // A line over the limit is answered and skipped, not buffered whole.
    let mut long =
        b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{\"x\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'a', 17 * 1024 * 1024));
    long.extend_from_slice(b"\"}}");
    raw.send_line(&long).await;
    let answer = raw.next().await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    // The session still works afterwards.
    let r = raw.tool(10, "episodic_count", json!({})).await;
    assert_eq!(r["structuredContent"]["count"], 0, "{r}");
    raw.close().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_that_name_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawStdio::start(dir.path(), &["--tools", "all"]).await;
    let huge = "x".repeat(10 * 1024 * 1024);
    let cases = vec![
        (
            "episodic_remember_batch",
            json!({"events": [["text", ["tag"], 0.2]]}),
            "events[0]",
        ),
        (
            "episodic_remember",
            json!({"content": "ok", "importance": "high"}),
            "importance",
        ),
        (
            "episodic_remember",
            json!({"content": "ok", "colour": "red"}),
            "colour",
        ),
        ("episodic_list", json!({"limit": -1}), "limit"),
        ("episodic_list", json!({"limit": 1e30}), "limit"),
        (
            "delete_entities",
            json!({"entityNames": [["a"]]}),
            "entityNames[0]",
        ),
        ("episodic_remember", json!({"content": huge}), "content"),
        (
            "episodic_remember",
            json!({"content": "x", "tags": [huge]}),
            "tags[0]",
        ),
    ];
    for (i, (op, args, field)) in cases.into_iter().enumerate() {
        let r = raw.tool(100 + i as i64, op, args).await;
        let text = tool_error(&r);
        assert!(text.contains(field), "{op}: {text}");
        assert!(text.len() < 2_000, "{op} echoed {} bytes", text.len());
    }
    // Times no calendar holds: errors, not panics, and the store still answers.
    for (i, t) in [
        "20000000000000d",
        "9223372036854775807s",
        "10000000000000000s",
    ]
    .iter()
    .enumerate()
    {
        for (op, args) in [
            ("episodic_list", json!({"since": t})),
            (
                "episodic_remember",
                json!({"content": "x", "occurred_at": t}),
            ),
            ("semantic_search", json!({"query": "x", "until": t})),
            ("graph_neighbors", json!({"name": "x", "valid_at": t})),
        ] {
            let r = raw.tool(200 + i as i64, op, args).await;
            let text = tool_error(&r);
            assert!(text.contains("time"), "{op} {t}: {text}");
        }
    }
    // Forged, altered and foreign cursors.
    for i in 0..3 {
        raw.tool(
            300 + i,
            "episodic_remember",
            json!({"content": format!("cursor test {i}")}),
        )
        .await;
    }
    let page = raw
        .tool(
            310,
            "episodic_recall",
            json!({"query": "cursor test", "limit": 1}),
        )
        .await;
    let cursor = page["structuredContent"]["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    use base64::Engine;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"o":10000000000000,"f":"000000000000"}"#);
    let (payload, tag) = cursor.split_once('.').unwrap();
    let altered = format!("{payload}A.{tag}");
    let page_after = |cursor: &str| json!({"query": "cursor test", "limit": 1, "cursor": cursor});
    for (i, bad) in [
        forged.clone(),
        format!("{forged}.{tag}"),
        altered,
        "%%%".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let r = raw
            .tool(320 + i as i64, "episodic_recall", page_after(&bad))
            .await;
        assert!(tool_error(&r).contains("cursor"));
    }
    // A real cursor used by another operation is refused too.
    let r = raw.tool(330, "semantic_search", page_after(&cursor)).await;
    assert!(tool_error(&r).contains("cursor"));
    let r = raw.tool(331, "episodic_recall", page_after(&cursor)).await;
    assert_ne!(r["isError"], true, "{r}");
    // Nothing the bad calls sent was stored.
    let r = raw.tool(340, "episodic_count", json!({})).await;
    assert_eq!(r["structuredContent"]["count"], 3, "{r}");
}

#[tokio::test]
async fn scratch_is_bounded_in_bytes_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawStdio::start(dir.path(), &["--tools", "all"]).await;
    let value = "v".repeat(60 * 1024);
    let mut refused = None;
    for i in 0..10 {
        let r = raw
            .tool(
                i,
                "session_scratch_set",
                json!({"key": format!("k{i}"), "value": value}),
            )
            .await;
        if r["isError"] == true {
            refused = Some((i, tool_error(&r)));
            break;
        }
    }
    let (at, text) = refused.expect("the scratch budget was never reached");
    assert!(at >= 3, "refused too early, at key {at}: {text}");
    assert!(text.contains("limit"), "{text}");
    // Replacing a key within the budget still works.
    let r = raw
        .tool(
            50,
            "session_scratch_set",
            json!({"key": "k0", "value": "small"}),
        )
        .await;
    assert_eq!(r["structuredContent"]["replaced"], true, "{r}");
}

#[tokio::test]
async fn data_dir_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut raw = RawStdio::start(&data, &[]).await;
    raw.tool(1, "episodic_remember", json!({"content": "private"}))
        .await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let m = mode(&path);
        assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
    }
}

fn initialize_body() -> Vec<u8> {
    initialize_request(1).to_string().into_bytes()
}

#[tokio::test]
async fn http_answers_malformed_bodies_and_guards_its_edges() {
    let server = HttpServer::fresh(&["--max-sessions", "3"]).await;
    let client = reqwest::Client::new();
    // Malformed bodies: JSON-RPC errors, not bare 415s.
    for (body, code) in [
        (b"{not json".to_vec(), -32700),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_vec(),
            -32600,
        ),
        (
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.to_vec(),
            -32600,
        ),
    ] {
        let (status, text) = post(&client, &server.url, body, &[]).await;
        assert_eq!(status, 400, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    // Browsers from elsewhere are refused; loopback origins are fine.
    for origin in ["http://evil.com", "null", "file://"] {
        let (status, _) = post(
            &client,
            &server.url,
            initialize_body(),
            &[("origin", origin)],
        )
        .await;
        assert_eq!(status, 403, "Origin {origin}");
    }
    let (status, text) = post(
        &client,
        &server.url,
        initialize_body(),
        &[("origin", "http://localhost:3000")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // /health checks Host like /mcp does.
    let health = format!("{}/health", server.base());
    let resp = client
        .get(&health)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        client.get(&health).send().await.unwrap().status().as_u16(),
        200
    );
    // The session cap: one session is open (above); two more fit, the next is refused.
    for _ in 0..2 {
        let (status, text) = post(&client, &server.url, initialize_body(), &[]).await;
        assert_eq!(status, 200, "{text}");
    }
    let (status, text) = post(&client, &server.url, initialize_body(), &[]).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("--max-sessions"), "{text}");
}

#[tokio::test]
async fn idle_http_sessions_expire() {
    let server = HttpServer::fresh(&["--max-sessions", "1", "--session-idle-secs", "1"]).await;
    let client = reqwest::Client::new();
    let (status, _) = post(&client, &server.url, initialize_body(), &[]).await;
    assert_eq!(status, 200);
    let (status, _) = post(&client, &server.url, initialize_body(), &[]).await;
    assert_eq!(status, 503, "the cap holds while the first session lives");
    // After the idle time the first session is gone and a new one fits.
    let mut opened = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _) = post(&client, &server.url, initialize_body(), &[]).await;
        if status == 200 {
            opened = true;
            break;
        }
    }
    assert!(opened, "the idle session never expired");
}
