//! Acknowledged writes survive SIGKILL, and search finds them after restart
//! (the index is caught up from the change log).

mod common;

use common::process::{kill9, owner_pid};
use common::{Tools, stdio_client, strings};
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
        let out = client
            .ok(
                "episodic_remember",
                json!({"content": format!("durable marker number {i} zebra")}),
            )
            .await;
        ids.push(out["event"]["id"].as_str().unwrap().to_string());
    }
    // Kill -9 the server right after the last acknowledgement.
    kill9(owner_pid(dir.path()));
    drop(client);

    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    let count = client.ok("episodic_count", json!({})).await;
    assert_eq!(
        count["count"], N as u64,
        "every acknowledged write survived"
    );
    let found = client
        .ok(
            "episodic_recall",
            json!({"query": "zebra marker", "limit": 100}),
        )
        .await;
    let mut got = strings(&found["hits"], "/event/id");
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "search finds every event after replay");
    client.cancel().await.unwrap();
}
