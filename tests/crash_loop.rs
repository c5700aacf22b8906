//! Crash loop: the HTTP server is killed with SIGKILL at random moments while
//! eight sessions write; after each restart every acknowledged write is there
//! and found by recall. (The bench harness runs more rounds.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Failure, HttpServer, Tools, call, try_call};
use serde_json::json;

const WRITERS: usize = 8;
/// (round, writer, n, id) of an acknowledged write.
type Acked = (usize, usize, usize, String);
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut next_random = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for round in 0..ROUNDS {
        let mut server = HttpServer::start(dir.path(), &["--tools", "all"]).await;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let client = server.client(Some("crash")).await;
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let content = format!("crashloop r{round}w{w}n{n} token{round}x{w}x{n}");
                    let args = json!({"content": content});
                    let out = match try_call(&client, "episodic_remember", args).await {
                        Ok(out) => out,
                        // The server is gone: this write was never acknowledged.
                        Err(Failure::Transport(_)) => break,
                        Err(e) => panic!("{e}"),
                    };
                    let id = out["event"]["id"].as_str().unwrap().to_string();
                    acked.lock().unwrap().push((round, w, n, id));
                }
            }));
        }
        // Let the writers run a random while, then kill -9 mid-write.
        let wait = 300 + next_random() % 700;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        // Calls in flight when the server died were never acknowledged: stop
        // the writers (the client may keep retrying a dead server).
        for w in writers {
            w.abort();
            let _ = w.await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > ROUNDS * WRITERS,
        "only {} writes acknowledged",
        acked.len()
    );

    // Restart once more and check every acknowledged write.
    let server = HttpServer::start(dir.path(), &["--tools", "all"]).await;
    let client = server.client(Some("crash")).await;
    let count = client.ok("episodic_count", json!({})).await;
    assert!(
        count["count"].as_u64().unwrap() as usize >= acked.len(),
        "{count} < {} acknowledged",
        acked.len()
    );
    let mut lost = Vec::new();
    for (round, w, n, id) in &acked {
        if call(&client, "episodic_get", json!({"id": id}))
            .await
            .is_err()
        {
            lost.push(id.clone());
            continue;
        }
        // Found by search too (the index caught up with the store's change log).
        if n % 7 == 0 {
            let token = format!("token{round}x{w}x{n}");
            let r = client.recall(&token).await;
            assert!(
                r["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["event"]["id"] == *id),
                "recall does not find {token}: {r}"
            );
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "crash loop: {ROUNDS} rounds, {} acknowledged, 0 lost",
        acked.len()
    );
}
