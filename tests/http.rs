//! The real binary over Streamable HTTP: concurrent sessions stay isolated.

mod common;

use common::{HttpServer, Tools, call, tool_names};
use serde_json::json;

#[tokio::test]
async fn concurrent_sessions_see_only_their_own_namespace_scratch_and_tools() {
    let server = HttpServer::fresh(&[]).await;
    let (a, b) = tokio::join!(server.client(Some("team-a")), server.client(Some("team-b")));

    let (ra, rb) = tokio::join!(
        call(
            &a,
            "episodic_remember",
            json!({"content": "team a ships the billing service"})
        ),
        call(
            &b,
            "episodic_remember",
            json!({"content": "team b ships the search service"})
        ),
    );
    ra.unwrap();
    rb.unwrap();

    let hits_a = a.recall("ships service").await;
    let hits_b = b.recall("ships service").await;
    assert_eq!(hits_a["hits"].as_array().unwrap().len(), 1);
    assert_eq!(
        hits_a["hits"][0]["event"]["content"],
        "team a ships the billing service"
    );
    assert_eq!(hits_b["hits"].as_array().unwrap().len(), 1);
    assert_eq!(
        hits_b["hits"][0]["event"]["content"],
        "team b ships the search service"
    );

    // Scratch and tool lists are per session.
    a.ok("enable_toolset", json!({"layer": "session"})).await;
    a.ok("session_scratch_set", json!({"key": "k", "value": "a's"}))
        .await;
    let names_a = tool_names(&a).await;
    let names_b = tool_names(&b).await;
    assert!(names_a.contains(&"session_scratch_get".to_string()));
    assert!(!names_b.contains(&"session_scratch_get".to_string()));
    // Another session reads scratch through call_operation (it does not list the tool).
    let get_k = json!({"name": "session_scratch_get", "arguments": {"key": "k"}});
    let via_b = b.ok("call_operation", get_k.clone()).await;
    assert_eq!(via_b["result"]["found"], false);
    let info_a = a.ok("session_info", json!({})).await;
    assert_eq!(info_a["namespace"], "team-a");

    // A third session in team-a shares memories but not scratch.
    let a2 = server.client(Some("team-a")).await;
    let r = a2.recall("billing").await;
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    let s = a2.ok("call_operation", get_k).await;
    assert_eq!(s["result"]["found"], false);

    for c in [a, b, a2] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn health_reports_ok_and_bad_namespaces_are_refused() {
    let server = HttpServer::fresh(&[]).await;
    let body: serde_json::Value = reqwest::get(format!("{}/health", server.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok");
    let states: Vec<(&str, &str)> = body["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["backend"].as_str().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("store", "closed"),
            ("search", "closed"),
            ("graph", "closed")
        ]
    );
    assert!(body["cache"]["capacity"].as_u64().unwrap() > 0);

    assert!(server.try_client(Some("no spaces allowed")).await.is_err());
}
