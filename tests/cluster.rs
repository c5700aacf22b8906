//! Several engram nodes on one PostgreSQL database, as a load balancer would
//! spread agents over them: the real binary over Streamable HTTP, each node with
//! a data dir (search index) of its own, the database a real PostgreSQL
//! (tests/common/pg.rs). What one node acknowledges, the others read, search and
//! page; a node killed mid-write loses nothing it acknowledged, and one that
//! missed changes catches up when it comes back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Client, HttpServer, Tools, call, pg, strings};
use serde_json::{Value, json};

/// A node on `url`'s database with a data dir of its own.
async fn node(url: &str) -> HttpServer {
    HttpServer::fresh(&["--store", url, "--tools", "all"]).await
}

async fn nodes(url: &str, n: usize) -> Vec<HttpServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(node(url).await);
    }
    out
}

async fn remember(client: &Client, content: &str) -> String {
    client.remember(content).await["event"]["id"]
        .as_str()
        .expect("an event id")
        .to_string()
}

/// The string at `pointer` in every item of the array `items`, as a set.
fn ids(items: &Value, pointer: &str) -> BTreeSet<String> {
    strings(items, pointer)
        .into_iter()
        .map(String::from)
        .collect()
}

/// The ids of the events an `episodic_recall` answer found, best first.
fn found(answer: &Value) -> Vec<&str> {
    strings(&answer["hits"], "/event/id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_writes_the_others_read_search_and_page() {
    let url = pg::fresh_database();
    let cluster = nodes(&url, 3).await;
    let mut clients = Vec::new();
    for n in &cluster {
        clients.push(n.client(Some("team")).await);
    }
    let (a, b, c) = (&clients[0], &clients[1], &clients[2]);

    // Search on another node right after the write was acknowledged.
    let id = remember(a, "the staging database runs PostgreSQL 15 on port 5433").await;
    let hits = b.recall("which port does staging's database use").await;
    assert_eq!(
        found(&hits).first().copied(),
        Some(id.as_str()),
        "node B did not find node A's write: {hits}"
    );

    // A cached answer on one node goes stale when another node writes.
    let before = c.ok("episodic_count", json!({})).await["count"].clone();
    let again = c.ok("episodic_count", json!({})).await["count"].clone();
    assert_eq!(before, again);
    remember(b, "the deploy freeze starts on Friday").await;
    let after = c.ok("episodic_count", json!({})).await["count"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after,
        before.as_u64().unwrap() + 1,
        "node C answered from a stale cache"
    );

    // The graph tools, across nodes.
    a.ok(
        "create_entities",
        json!({ "entities": [{ "name": "Priya", "entityType": "person",
                               "observations": ["runs the payments team"] }] }),
    )
    .await;
    b.ok(
        "add_observations",
        json!({ "observations": [{ "entityName": "Priya",
                                   "contents": ["unwinds by climbing"] }] }),
    )
    .await;
    let opened = c.ok("open_nodes", json!({ "names": ["Priya"] })).await;
    let observations: Vec<&str> = opened["entities"][0]["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        observations,
        ["runs the payments team", "unwinds by climbing"],
        "{opened}"
    );
    let searched = a.ok("search_nodes", json!({ "query": "climbing" })).await;
    assert_eq!(
        strings(&searched["entities"], "/name"),
        ["Priya"],
        "{searched}"
    );

    // A session handle opened on one node works on the others: its working
    // memory lives in the database, and each node writes back only the keys
    // it changed.
    let handle = a.ok("session_open", json!({})).await["session"]
        .as_str()
        .expect("a handle")
        .to_string();
    a.ok(
        "session_scratch_set",
        json!({ "session": handle, "key": "plan", "value": ["migrate", "verify"] }),
    )
    .await;
    let got = b
        .ok(
            "session_scratch_get",
            json!({ "session": handle, "key": "plan" }),
        )
        .await;
    assert_eq!(got["value"], json!(["migrate", "verify"]), "{got}");
    b.ok(
        "session_scratch_set",
        json!({ "session": handle, "key": "owner", "value": "priya" }),
    )
    .await;
    let listed = c
        .ok("session_scratch_list", json!({ "session": handle }))
        .await;
    assert_eq!(
        strings(&listed["entries"], "/key"),
        ["owner", "plan"],
        "{listed}"
    );
    let info = c.ok("session_info", json!({ "session": handle })).await;
    assert_eq!(info["handle"].as_str(), Some(handle.as_str()), "{info}");
    assert_eq!(info["scratch_keys"], json!(2), "{info}");
    let cleared = c
        .ok(
            "session_scratch_clear",
            json!({ "session": handle, "keys": ["plan"] }),
        )
        .await;
    assert_eq!(cleared["cleared"], json!(1));
    let gone = a
        .ok(
            "session_scratch_get",
            json!({ "session": handle, "key": "plan" }),
        )
        .await;
    assert_eq!(gone["found"], json!(false), "{gone}");
    let unknown = call(
        b,
        "session_scratch_get",
        json!({ "session": "sh_not-a-handle", "key": "plan" }),
    )
    .await;
    assert!(
        unknown.is_err_and(|e| e.contains("session_open")),
        "an unknown handle resolved"
    );
    let elsewhere = cluster[1].client(Some("other")).await;
    let foreign = call(
        &elsewhere,
        "session_scratch_get",
        json!({ "session": handle, "key": "owner" }),
    )
    .await;
    assert!(
        foreign.is_err_and(|e| e.contains("another namespace")),
        "another namespace read this handle's memory"
    );

    // A cursor made on one node pages on another.
    for i in 0..5 {
        remember(c, &format!("standup note {i}")).await;
    }
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        // Each page from the next node, with the cursor the last one made.
        let mut args = json!({ "limit": 3 });
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let answer = clients[page % 3].ok("episodic_list", args).await;
        let page_ids = ids(&answer["events"], "/id");
        assert!(seen.is_disjoint(&page_ids), "a page repeated events");
        seen.extend(page_ids);
        match answer["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every event, once, paged across three nodes");

    // Tokens live in the database: one made for the shared store is honoured
    // by every node (and from then on required by each).
    let dir = tempfile::tempdir().unwrap();
    let token = common::make_token(
        dir.path(),
        "team",
        "read",
        "reader",
        &["--store", url.as_str()],
    );
    let as_reader = cluster[2]
        .try_client_as(Some(&token), None)
        .await
        .expect("node C accepts a token made against the shared store");
    let listed = as_reader.ok("episodic_count", json!({})).await;
    assert_eq!(listed["count"].as_u64(), Some(after + 5));
    let refused = call(&as_reader, "episodic_remember", json!({ "content": "x" })).await;
    assert!(
        refused.is_err_and(|e| e.contains("scope")),
        "a read token wrote"
    );
}

/// Writers on two nodes; one node is killed with SIGKILL in the middle. Every
/// write either node acknowledged is in the database, the other node never
/// stops serving, and the killed node, restarted on its data dir after
/// missing writes, finds them with its search index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_write_loses_nothing_acknowledged_and_catches_up() {
    let url = pg::fresh_database();
    let dir_a = tempfile::tempdir().unwrap();
    let mut a = HttpServer::start(dir_a.path(), &["--store", &url, "--tools", "all"]).await;
    let b = node(&url).await;

    let mut writers = Vec::new();
    for (w, server) in [&a, &b, &a, &b].into_iter().enumerate() {
        let client = server.client(Some("team")).await;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let content = format!("writer {w} note {i} about quokkas");
                let write =
                    common::try_call(&client, "episodic_remember", json!({ "content": content }));
                match tokio::time::timeout(Duration::from_secs(10), write).await {
                    Ok(Ok(v)) => acked.push(v["event"]["id"].as_str().unwrap().to_string()),
                    // The killed node's writers stop: its transport is gone
                    // (or retries a server that is no more).
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill();
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }

    // B kept serving: its writers finished, and it holds every acknowledged write.
    let on_b = b.client(Some("team")).await;
    let stored = on_b.ok("episodic_count", json!({})).await["count"]
        .as_u64()
        .unwrap();
    assert!(
        acked.len() >= 120,
        "B's two writers finished: {} acked",
        acked.len()
    );
    let mut missing = Vec::new();
    for id in &acked {
        if call(&on_b, "episodic_get", json!({ "id": id }))
            .await
            .is_err()
        {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged writes are missing: {missing:?}"
    );
    assert!(stored >= acked.len() as u64);

    // Writes A missed while it was down, then A back on its old data dir.
    let missed = remember(&on_b, "the wombat migration finished while A was down").await;
    let a = HttpServer::start(dir_a.path(), &["--store", &url, "--tools", "all"]).await;
    let on_a = a.client(Some("team")).await;
    let hits = on_a.recall("wombat migration").await;
    assert_eq!(
        found(&hits).first().copied(),
        Some(missed.as_str()),
        "the restarted node's index did not catch up: {hits}"
    );
    let count = on_a.ok("episodic_count", json!({})).await["count"]
        .as_u64()
        .unwrap();
    assert_eq!(count, stored + 1);
}
