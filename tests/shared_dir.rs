//! Many hosts, one data dir: a later `engram serve` forwards its session to the
//! process that owns the dir, keeps its own flags, and takes over when the owner
//! dies.

mod common;

use common::{call, stdio_client, tool_names};
use serde_json::json;

fn owner_pid(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("engram.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_second_host_shares_the_data_dir_with_its_own_flags() {
    let dir = tempfile::tempdir().unwrap();
    let owner = stdio_client(dir.path(), &["--namespace", "p1"]).await;
    let pid = owner_pid(dir.path());
    let second = stdio_client(dir.path(), &["--namespace", "p2", "--tools", "all"]).await;
    let third = stdio_client(dir.path(), &["--namespace", "p1"]).await;
    assert_eq!(owner_pid(dir.path()), pid, "one process owns the dir");

    // Flags are per host: the second lists every tool, the owner its core set.
    assert!(tool_names(&second).await.len() > tool_names(&owner).await.len());

    call(
        &owner,
        "episodic_remember",
        json!({"content": "owner wrote about gardening"}),
    )
    .await
    .unwrap();
    call(
        &second,
        "episodic_remember",
        json!({"content": "second wrote about gardening"}),
    )
    .await
    .unwrap();
    let info = call(&second, "session_info", json!({})).await.unwrap();
    assert_eq!(info["namespace"], "p2");
    let r = call(&second, "episodic_recall", json!({"query": "gardening"}))
        .await
        .unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["hits"][0]["event"]["content"],
        "second wrote about gardening"
    );
    // Same namespace through the owner: read-your-writes across processes.
    let r = call(&third, "episodic_recall", json!({"query": "gardening"}))
        .await
        .unwrap();
    assert_eq!(
        r["hits"][0]["event"]["content"],
        "owner wrote about gardening"
    );

    for c in [second, third, owner] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn the_forwarding_host_takes_over_when_the_owner_dies() {
    let dir = tempfile::tempdir().unwrap();
    let owner = stdio_client(dir.path(), &["--namespace", "shared"]).await;
    let first_owner = owner_pid(dir.path());
    let second = stdio_client(dir.path(), &["--namespace", "shared", "--tools", "all"]).await;
    call(
        &second,
        "episodic_remember",
        json!({"content": "written through the owner"}),
    )
    .await
    .unwrap();

    let status = std::process::Command::new("kill")
        .args(["-9", &first_owner.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(owner);

    // The second host's session goes on, now served by its own process.
    let r = call(
        &second,
        "episodic_recall",
        json!({"query": "written owner"}),
    )
    .await
    .unwrap();
    assert_eq!(
        r["hits"][0]["event"]["content"],
        "written through the owner"
    );
    call(
        &second,
        "episodic_remember",
        json!({"content": "written after the takeover"}),
    )
    .await
    .unwrap();
    assert_eq!(
        call(&second, "episodic_count", json!({})).await.unwrap()["count"],
        2
    );
    assert_ne!(
        owner_pid(dir.path()),
        first_owner,
        "the lock moved to the new owner"
    );
    second.cancel().await.unwrap();
}
