//! Many hosts, one data dir: a later `engram serve` forwards its session to the
//! process that owns the dir, keeps its own flags, and takes over when the owner
//! dies.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::process::{kill9, owner_pid};
use common::wire::RawStdio;
use common::{Client, Failure, TestClient, Tools, stdio_client, stdio_host, tool_names, try_call};
use serde_json::json;

/// The first host on a data dir, and the pid of the process that owns the dir
/// once it has started.
async fn first_host(dir: &std::path::Path, args: &[&str]) -> (Client, u32) {
    let client = stdio_client(dir, args).await;
    (client, owner_pid(dir))
}

#[tokio::test]
async fn a_second_host_shares_the_data_dir_with_its_own_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, pid) = first_host(dir.path(), &["--namespace", "p1"]).await;
    let second = stdio_client(dir.path(), &["--namespace", "p2", "--tools", "all"]).await;
    let third = stdio_client(dir.path(), &["--namespace", "p1"]).await;
    assert_eq!(owner_pid(dir.path()), pid, "one process owns the dir");

    // Flags are per host: the second lists every tool, the owner its core set.
    assert!(tool_names(&second).await.len() > tool_names(&owner).await.len());

    owner.remember("owner wrote about gardening").await;
    second.remember("second wrote about gardening").await;
    let info = second.ok("session_info", json!({})).await;
    assert_eq!(info["namespace"], "p2");
    let r = second.recall("gardening").await;
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["hits"][0]["event"]["content"],
        "second wrote about gardening"
    );
    // Same namespace through the owner: read-your-writes across processes.
    let r = third.recall("gardening").await;
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
    let (owner, first_owner) = first_host(dir.path(), &["--namespace", "shared"]).await;
    let second = stdio_client(dir.path(), &["--namespace", "shared", "--tools", "all"]).await;
    second.remember("written through the owner").await;

    kill9(first_owner);
    drop(owner);

    // The second host's session goes on, now served by its own process.
    let r = second.recall("written owner").await;
    assert_eq!(
        r["hits"][0]["event"]["content"],
        "written through the owner"
    );
    second.remember("written after the takeover").await;
    assert_eq!(second.ok("episodic_count", json!({})).await["count"], 2);
    assert_ne!(
        owner_pid(dir.path()),
        first_owner,
        "the lock moved to the new owner"
    );
    second.cancel().await.unwrap();
}

/// `engram serve` for one host, with the pid of its server process.
async fn host(dir: &std::path::Path, args: &[&str]) -> (Arc<Client>, u32) {
    let (client, pid) = stdio_host(TestClient::default(), dir, args).await;
    (Arc::new(client), pid)
}

#[derive(Default)]
struct Tally {
    /// (host, event id) of every acknowledged write.
    acked: Vec<(usize, String)>,
    /// (host, error) of every write that failed.
    failed: Vec<(usize, String)>,
}

impl Tally {
    fn acked_by(&self, host: usize) -> usize {
        self.acked.iter().filter(|(h, _)| *h == host).count()
    }
}

/// Waits until every host in `hosts` has acknowledged `more` writes past what
/// it had, or fails after a minute.
async fn progress(tally: &Mutex<Tally>, hosts: &[usize], more: usize) {
    let base: Vec<usize> = {
        let t = tally.lock().unwrap();
        hosts.iter().map(|&h| t.acked_by(h)).collect()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (behind, failed) = {
            let t = tally.lock().unwrap();
            let behind: Vec<usize> = hosts
                .iter()
                .zip(&base)
                .filter(|(h, b)| t.acked_by(**h) < *b + more)
                .map(|(h, _)| *h)
                .collect();
            (behind, t.failed.clone())
        };
        if behind.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hosts {behind:?} stopped answering; failures: {failed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The pid in engram.lock once it names a live owner other than `not`.
async fn new_owner(dir: &std::path::Path, not: &[u32], hosts: &[u32]) -> u32 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pid = std::fs::read_to_string(dir.join("engram.lock"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid
            && !not.contains(&pid)
            && hosts.contains(&pid)
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no host took over the data dir (lock names {pid:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Four hosts share one data dir, each writing from several tasks at once. The
/// owner is killed mid-write, then the process that took over from it: every
/// write that was acknowledged is there afterwards, and every host whose own
/// process was not killed goes on answering through whoever owns the dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_forwarding_host_survives_owner_deaths_and_no_acknowledged_write_is_lost() {
    const HOSTS: usize = 4;
    const WRITERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--namespace", "shared", "--tools", "all"];
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        hosts.push(host(dir.path(), &args).await);
    }
    let pids: Vec<u32> = hosts.iter().map(|(_, pid)| *pid).collect();
    assert_eq!(
        owner_pid(dir.path()),
        pids[0],
        "the first host owns the dir"
    );

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (h, (client, _)) in hosts.iter().enumerate() {
        for w in 0..WRITERS {
            let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let content = format!("host {h} writer {w} note {i} about platypus");
                    i += 1;
                    match try_call(&client, "episodic_remember", json!({"content": content})).await
                    {
                        Ok(out) => {
                            let id = out["event"]["id"].as_str().unwrap().to_string();
                            tally.lock().unwrap().acked.push((h, id));
                        }
                        Err(e) => {
                            let dead = matches!(e, Failure::Transport(_));
                            tally.lock().unwrap().failed.push((h, e.to_string()));
                            if dead {
                                return;
                            }
                        }
                    }
                }
            }));
        }
    }

    // Round 1: the first owner dies in the middle of the writes.
    progress(&tally, &[0, 1, 2, 3], 5).await;
    kill9(pids[0]);
    let second = new_owner(dir.path(), &[pids[0]], &pids).await;
    let survivors: Vec<usize> = (1..HOSTS).collect();
    progress(&tally, &survivors, 10).await;

    // Round 2: the process that took over dies too.
    kill9(second);
    let killed = [pids[0], second];
    let third = new_owner(dir.path(), &killed, &pids).await;
    let survivors: Vec<usize> = (1..HOSTS).filter(|&h| pids[h] != second).collect();
    assert!(survivors.iter().any(|&h| pids[h] == third));
    progress(&tally, &survivors, 10).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    // Only the hosts whose own process was killed saw failures.
    for (h, e) in &tally.failed {
        assert!(
            killed.contains(&pids[*h]),
            "host {h}, whose process lives, saw a failed write: {e}"
        );
    }

    // Every acknowledged write is there, read through each surviving host.
    let mut acked: Vec<String> = tally.acked.iter().map(|(_, id)| id.clone()).collect();
    acked.sort();
    acked.dedup();
    assert_eq!(
        acked.len(),
        tally.acked.len(),
        "an id was acknowledged twice"
    );
    for &h in &survivors {
        let client = &hosts[h].0;
        for id in &acked {
            let got = try_call(client, "episodic_get", json!({"id": id})).await;
            assert!(got.is_ok(), "acknowledged write {id} is missing: {got:?}");
        }
        let count = try_call(client, "episodic_count", json!({})).await.unwrap();
        assert!(count["count"].as_u64().unwrap() >= acked.len() as u64);
    }
    // And search finds them (replayed into the index by each new owner).
    let found = try_call(
        &hosts[survivors[0]].0,
        "episodic_recall",
        json!({"query": "platypus", "limit": 500}),
    )
    .await
    .unwrap();
    assert!(
        found["hits"].as_array().unwrap().len() >= acked.len().min(500),
        "search lost acknowledged writes"
    );
    for (client, _) in hosts {
        if let Ok(client) = Arc::try_unwrap(client) {
            let _ = client.cancel().await;
        }
    }
}

/// A forwarded session answers what the host sends, malformed or not, as the
/// owner's own stdio does: a line that is not UTF-8 gets a parse error, and the
/// session goes on.
#[tokio::test]
async fn a_forwarded_session_answers_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let owner = stdio_client(dir.path(), &[]).await;
    let mut raw = RawStdio::spawn(dir.path(), &[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let answer = raw.request(init).await;
    assert_eq!(answer["id"], 1);
    raw.send_line(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n\xff\xfe not utf-8",
    )
    .await;
    let answer = raw.next().await;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    let answer = raw
        .request(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    assert_eq!(answer["id"], 2);
    assert!(answer["result"]["tools"].as_array().is_some(), "{answer}");
    raw.close().await;
    owner.cancel().await.unwrap();
}

/// The owner's host ends its session (no crash): a host forwarding to it goes
/// on through the next owner, and none of its writes fails meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarding_host_goes_on_when_the_owners_host_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--namespace", "shared", "--tools", "all"];
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(host(dir.path(), &args).await);
    }
    let pids: Vec<u32> = hosts.iter().map(|(_, pid)| *pid).collect();
    // Make a process that took over the owner (after a crash) the one to leave.
    kill9(pids[0]);
    let owner = new_owner(dir.path(), &[pids[0]], &pids).await;
    let leaving = pids.iter().position(|&p| p == owner).unwrap();
    let staying = 3 - leaving;
    let client = hosts[staying].0.clone();
    client.ok("episodic_count", json!({})).await;

    let tally: Arc<Mutex<Tally>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let content = format!("writer {w} note {i} about wombats");
                match try_call(&client, "episodic_remember", json!({"content": content})).await {
                    Ok(out) => {
                        let id = out["event"]["id"].as_str().unwrap().to_string();
                        tally.lock().unwrap().acked.push((staying, id));
                    }
                    Err(e) => tally.lock().unwrap().failed.push((staying, e.to_string())),
                }
            }
        }));
    }
    progress(&tally, &[staying], 5).await;
    // The owner's host closes its session: its process commits and exits.
    let (leaving_client, _) = hosts.swap_remove(leaving);
    Arc::try_unwrap(leaving_client)
        .ok()
        .expect("no other handle")
        .cancel()
        .await
        .unwrap();
    let next = new_owner(dir.path(), &[pids[0], owner], &pids).await;
    assert_eq!(next, pids[staying]);
    progress(&tally, &[staying], 10).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    assert!(tally.failed.is_empty(), "writes failed: {:?}", tally.failed);
    for (_, id) in &tally.acked {
        client.ok("episodic_get", json!({"id": id})).await;
    }
}
