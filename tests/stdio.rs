//! The real binary over stdio, driven by rmcp's MCP client.

mod common;

use common::{Tools, stdio_client, tool_names};
use serde_json::json;

#[tokio::test]
async fn initialize_and_list_tools_under_each_profile() {
    let dir = tempfile::tempdir().unwrap();

    let client = stdio_client(dir.path(), &[]).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("engram")
    );
    let core = tool_names(&client).await;
    assert!(core.contains(&"episodic_remember".to_string()));
    assert!(core.contains(&"discover_tools".to_string()));
    assert!(!core.contains(&"episodic_forget_where".to_string()));
    client.cancel().await.unwrap();

    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    let all = tool_names(&client).await;
    assert_eq!(all.len(), engram::catalog::catalog().operations.len());
    let tool = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "episodic_forget")
        .unwrap();
    assert!(tool.output_schema.is_some());
    assert_eq!(tool.annotations.unwrap().destructive_hint, Some(true));
    client.cancel().await.unwrap();

    let client = stdio_client(dir.path(), &["--tools", "session,episodic"]).await;
    let listed = tool_names(&client).await;
    assert!(
        listed
            .iter()
            .all(|n| n.starts_with("session_") || n.starts_with("episodic_"))
    );
    assert_eq!(listed.len(), 18, "12 episodic + 6 session");
    client.cancel().await.unwrap();

    // compat lists exactly the reference memory server's nine tools.
    let client = stdio_client(dir.path(), &["--tools", "compat"]).await;
    assert_eq!(
        tool_names(&client).await,
        vec![
            "add_observations",
            "create_entities",
            "create_relations",
            "delete_entities",
            "delete_observations",
            "delete_relations",
            "open_nodes",
            "read_graph",
            "search_nodes",
        ]
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn discovery_and_enable_toolset_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let client = stdio_client(dir.path(), &[]).await;

    for detail in ["name", "summary", "full"] {
        let out = client.ok("discover_tools", json!({"detail": detail})).await;
        let tools = out["tools"].as_array().unwrap();
        assert_eq!(tools.len(), engram::catalog::catalog().operations.len());
        assert_eq!(tools[0].get("summary").is_some(), detail != "name");
        assert_eq!(tools[0].get("input_schema").is_some(), detail == "full");
    }

    // A tool this session does not list is refused with the way to enable it.
    let e = client.err("episodic_count", json!({})).await;
    assert!(e.contains("enable_toolset"), "{e}");

    let changed = client.service().list_changed.clone();
    let notified = client.service().notified.clone();
    let wait = notified.notified();
    let out = client
        .ok("enable_toolset", json!({"layer": "episodic"}))
        .await;
    assert!(out["added"].as_array().unwrap().len() >= 8);
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("tools/list_changed arrives");
    assert_eq!(changed.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        tool_names(&client)
            .await
            .contains(&"episodic_count".to_string())
    );
    assert_eq!(client.ok("episodic_count", json!({})).await["count"], 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn remember_in_one_process_recall_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let client = stdio_client(dir.path(), &["--namespace", "proj"]).await;
    let out = client.ok("episodic_remember", json!({"content": "The flaky test was caused by a race in the cache warmer", "tags": ["ci"]})).await;
    let id = out["event"]["id"].as_str().unwrap().to_string();
    client.cancel().await.unwrap();

    let client = stdio_client(dir.path(), &["--namespace", "proj"]).await;
    let r = client.recall("why was the test flaky").await;
    assert_eq!(r["hits"][0]["event"]["id"], id.as_str());
    client.cancel().await.unwrap();

    // Another namespace on the same data dir sees nothing.
    let client = stdio_client(dir.path(), &["--namespace", "other"]).await;
    let r = client.recall("flaky test").await;
    assert_eq!(r["hits"], json!([]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_input_comes_back_as_tool_errors() {
    let dir = tempfile::tempdir().unwrap();
    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    let cases = [
        ("no_such_tool", json!({}), "no operation"),
        (
            "episodic_remember",
            json!({"content": 42}),
            "expected a string",
        ),
        ("episodic_remember", json!({}), "missing field `content`"),
        (
            "episodic_remember",
            json!({"content": "x", "extra": true}),
            "unknown field `extra`",
        ),
        ("episodic_get", json!({"id": "missing"}), "no event with id"),
        (
            "episodic_list",
            json!({"cursor": "%%%"}),
            "`cursor` is not valid",
        ),
    ];
    for (tool, args, expected) in cases {
        let e = client.err(tool, args).await;
        assert!(e.contains(expected), "{tool}: {e}");
    }
    assert_eq!(client.ok("episodic_count", json!({})).await["count"], 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_second_process_on_a_busy_data_dir_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let client = stdio_client(dir.path(), &[]).await;
    let out = common::engram(dir.path(), &["call", "episodic_count"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another engram process"), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn namespace_auto_takes_the_first_root_folder() {
    let dir = tempfile::tempdir().unwrap();
    let client = common::TestClient {
        roots: vec![
            "file:///home/dev/my-project/".into(),
            "file:///tmp/other".into(),
        ],
        ..Default::default()
    };
    let client = common::stdio_client_with(
        client,
        dir.path(),
        &["--namespace", "auto", "--tools", "all"],
    )
    .await;
    let info = client.ok("session_info", json!({})).await;
    assert_eq!(info["namespace"], "my-project");
    client.cancel().await.unwrap();

    // A client without roots falls back to `default`.
    let client = stdio_client(dir.path(), &["--namespace", "auto", "--tools", "all"]).await;
    let info = client.ok("session_info", json!({})).await;
    assert_eq!(info["namespace"], "default");
    client.cancel().await.unwrap();
}

/// A script of requests: the handshake, a write, a read.
fn script() -> Vec<u8> {
    let lines = [
        common::wire::initialize_request(0),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "episodic_remember", "arguments": {"content": "the kettle whistles at dawn"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "episodic_recall", "arguments": {"query": "kettle"}}}),
    ];
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// The ids of the answers in `out`, sorted (calls run concurrently, answers
/// come in the order they finish).
fn answered(out: &[u8]) -> Vec<i64> {
    let mut ids: Vec<i64> = String::from_utf8_lossy(out)
        .lines()
        .map(|l| {
            let msg: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(
                msg.get("error").is_none() && msg["result"]["isError"] != true,
                "{msg}"
            );
            msg["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// stdin and stdout may be pipes (Python's and Rust's hosts), sockets (Node's),
/// files or a terminal: pipes and sockets are read by the runtime itself, the
/// rest by threads. Each kind gets every answer, and the server exits at the
/// end of its input.
#[test]
fn every_kind_of_stdin_and_stdout_is_served() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;

    // Pipes both ways.
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::engram_std(dir.path(), &["serve"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&script()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(answered(&out.stdout), [0, 1, 2], "pipes");

    // stderr on stdout's pipe (`2>&1`): answers and logs share it.
    let dir = tempfile::tempdir().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = common::engram_std(dir.path(), &["serve"])
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&script()).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    let answers: Vec<u8> = String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert_eq!(answered(&answers), [0, 1, 2], "2>&1");

    // Sockets both ways.
    let dir = tempfile::tempdir().unwrap();
    let (mut input, server_in) = UnixStream::pair().unwrap();
    let (server_out, mut output) = UnixStream::pair().unwrap();
    let mut child = common::engram_std(dir.path(), &["serve"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(server_in)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(server_out)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    input.write_all(&script()).unwrap();
    input.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    output.read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(answered(&out), [0, 1, 2], "sockets");

    // Files both ways.
    let dir = tempfile::tempdir().unwrap();
    let requests = dir.path().join("requests.jsonl");
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(&requests, script()).unwrap();
    let status = common::engram_std(&dir.path().join("data"), &["serve"])
        .stdin(std::fs::File::open(&requests).unwrap())
        .stdout(std::fs::File::create(&answers).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        answered(&std::fs::read(&answers).unwrap()),
        [0, 1, 2],
        "files"
    );
}
