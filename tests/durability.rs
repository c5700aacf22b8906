//! Acknowledged writes survive SIGKILL, and search finds them after restart
//! (the index is caught up from the change log).

mod common;

use common::{call, stdio_client};
use serde_json::json;

#[tokio::test]
async fn acknowledged_remembers_survive_sigkill_and_are_found_after_replay() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    // An index commit interval of an hour: nothing reaches the index before the
    // kill, so finding the events afterwards proves the change-log replay.
    let client = stdio_client(dir.path(), &["--index-commit-ms", "3600000"]).await;
    let mut ids = Vec::new();
    for i in 0..N {
        let out = call(
            &client,
            "episodic_remember",
            json!({"content": format!("durable marker number {i} zebra")}),
        )
        .await
        .unwrap();
        ids.push(out["event"]["id"].as_str().unwrap().to_string());
    }
    // Kill -9 the server right after the last acknowledgement.
    let pid = std::fs::read_to_string(dir.path().join("engram.lock")).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(client);

    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    let count = call(&client, "episodic_count", json!({})).await.unwrap();
    assert_eq!(
        count["count"], N as u64,
        "every acknowledged write survived"
    );
    let found = call(
        &client,
        "episodic_recall",
        json!({"query": "zebra marker", "limit": 100}),
    )
    .await
    .unwrap();
    let mut got: Vec<String> = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"]["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "search finds every event after replay");
    client.cancel().await.unwrap();
}
