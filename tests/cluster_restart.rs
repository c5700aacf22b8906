//! PostgreSQL restarted under a node's feet, with writers and readers going:
//! while it is down calls fail at once with a storage error (the store's
//! breaker opens) instead of hanging; once it is back they succeed again; and
//! nothing acknowledged before, during or after is lost.
//!
//! In a file of its own: it stops this test process's cluster
//! (tests/common/pg.rs), which other tests would share.

mod common;

use std::time::{Duration, Instant};

use common::{HttpServer, Tools, pg, try_call};
use serde_json::json;

/// How long one call may take, down or up: failing fast means well under this.
const CALL_LIMIT: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_the_database_is_down_and_resume_after() {
    let url = pg::fresh_database();
    let node = HttpServer::fresh(&["--store", &url, "--tools", "all"]).await;
    let client = node.client(Some("team")).await;

    let mut acked = Vec::new();
    let write = async |i: usize, acked: &mut Vec<String>| {
        let content = format!("note {i} on the numbat survey");
        let started = Instant::now();
        let call = try_call(&client, "episodic_remember", json!({ "content": content }));
        let answer = tokio::time::timeout(CALL_LIMIT, call)
            .await
            .unwrap_or_else(|_| panic!("write {i} went unanswered for {CALL_LIMIT:?}"));
        let took = started.elapsed();
        if std::env::var("ENGRAM_TEST_VERBOSE").is_ok() {
            eprintln!("write {i}: {took:?} {answer:?}");
        }
        if let Ok(v) = &answer {
            acked.push(v["event"]["id"].as_str().unwrap().to_string());
        }
        (answer.is_ok(), took)
    };
    for i in 0..20 {
        assert!(
            write(i, &mut acked).await.0,
            "write {i} failed with the database up"
        );
    }

    pg::cluster().stop();
    let mut failed_at_once = 0;
    for i in 20..40 {
        let (ok, took) = write(i, &mut acked).await;
        assert!(!ok, "write {i} succeeded with the database down");
        if took < Duration::from_millis(200) {
            failed_at_once += 1;
        }
    }
    assert!(
        failed_at_once >= 10,
        "the breaker did not make calls fail at once: {failed_at_once} of 20 did"
    );
    let read = tokio::time::timeout(CALL_LIMIT, try_call(&client, "episodic_count", json!({})))
        .await
        .expect("a read went unanswered with the database down");
    assert!(read.is_err(), "a read answered with the database down");

    pg::cluster().restart();
    let back = Instant::now();
    let mut i = 40;
    loop {
        let (ok, _) = write(i, &mut acked).await;
        i += 1;
        if ok {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "writes did not resume within 30 s of the database coming back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for j in i..i + 10 {
        assert!(
            write(j, &mut acked).await.0,
            "write {j} failed after the recovery"
        );
    }

    // Every acknowledged write, before, during and after, is stored.
    let count = client.ok("episodic_count", json!({})).await["count"]
        .as_u64()
        .unwrap();
    assert_eq!(count, acked.len() as u64);
    for id in &acked {
        client.ok("episodic_get", json!({ "id": id })).await;
    }
}
