//! How natural-language searches rank, in process against real sqlite and
//! tantivy: question words do not outrank content, a record ranks the same
//! before and after the index commits it (even right after a bulk load into a
//! fresh store), hyphenated and whole words find each other, irregular verbs
//! find their base form, and search_nodes answers a question that does not use
//! every word of the entity it is about, without flooding.
//! (`engram-bench run recall` measures the same on a larger fixture.)

mod common;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

async fn remember(h: &Mem, contents: &[&str]) {
    let events: Vec<Value> = contents.iter().map(|c| json!({"content": c})).collect();
    h.ok("episodic_remember_batch", json!({"events": events}))
        .await;
}

async fn recalled(h: &Mem, query: &str) -> Vec<String> {
    let r = h
        .ok("episodic_recall", json!({"query": query, "limit": 10}))
        .await;
    strings(&r["hits"], "/event/content")
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn question_words_do_not_outrank_the_answer() {
    let h = Mem::new().await;
    remember(
        &h,
        &[
            "Sam: when did you get back?",
            "Sam: what did you do this weekend?",
            "Sam: did you see it?",
            "Priya: we went hiking at Mount Tam with friends on Saturday",
            "Priya: the weather was lovely",
        ],
    )
    .await;
    h.flush().await;
    let hits = recalled(&h, "When did Sam go hiking with his friends?").await;
    assert_eq!(
        hits.first().map(String::as_str),
        Some("Priya: we went hiking at Mount Tam with friends on Saturday"),
        "{hits:?}"
    );
}

/// Bulk-loaded into a fresh store, nothing is committed yet: the overlay's own
/// statistics weigh rare words above common ones, as the committed index does
/// after the flush, so the order is the same both times.
#[tokio::test]
async fn a_record_ranks_the_same_before_and_after_the_commit() {
    let h = Mem::new().await;
    let mut contents: Vec<String> = (0..40)
        .map(|i| format!("standup notes {i}: the deploy went fine"))
        .collect();
    contents.push("the deploy of the sunrise dashboard failed on Tuesday".into());
    contents.push("sunrise photos from the hike".into());
    let refs: Vec<&str> = contents.iter().map(String::as_str).collect();
    remember(&h, &refs).await;
    let before = recalled(&h, "sunrise deploy").await;
    h.flush().await;
    let after = recalled(&h, "sunrise deploy").await;
    let mut top: Vec<&str> = before[..2].iter().map(String::as_str).collect();
    top.sort();
    assert_eq!(
        top,
        [
            "sunrise photos from the hike",
            "the deploy of the sunrise dashboard failed on Tuesday"
        ],
        "the rare word outweighs the common one before the commit: {before:?}"
    );
    assert_eq!(before, after);
}

#[tokio::test]
async fn hyphenated_and_whole_words_and_irregular_verbs_find_each_other() {
    let h = Mem::new().await;
    remember(
        &h,
        &[
            "Ana: yoga is the only way I destress",
            "Ben: I check-in at the front desk",
            "Tom: we go climbing every Sunday",
        ],
    )
    .await;
    for committed in [false, true] {
        if committed {
            h.flush().await;
        }
        let first = |q: &'static str| {
            let h = h.clone();
            async move { recalled(&h, q).await.into_iter().next() }
        };
        assert_eq!(
            first("how does Ana de-stress?").await.as_deref(),
            Some("Ana: yoga is the only way I destress")
        );
        assert_eq!(
            first("checkin").await.as_deref(),
            Some("Ben: I check-in at the front desk")
        );
        assert_eq!(
            first("where did Tom went climbing").await.as_deref(),
            Some("Tom: we go climbing every Sunday")
        );
    }
}

#[tokio::test]
async fn search_nodes_answers_questions_without_flooding() {
    let h = Mem::new().await;
    h.ok(
        "create_entities",
        json!({"entities": [
            {"name": "test-env", "entityType": "environment",
             "observations": ["runs PostgreSQL 16 on port 5433", "reset every Monday"]},
            {"name": "prod-env", "entityType": "environment",
             "observations": ["runs on three nodes in Sydney"]},
            {"name": "payments-team", "entityType": "team",
             "observations": ["on call at weekends for payments"]},
            {"name": "billing-service", "entityType": "service",
             "observations": ["owned by the billing team", "written in Rust"]},
        ]}),
    )
    .await;
    h.flush().await;
    let names = |r: &Value| -> Vec<String> {
        strings(&r["entities"], "/name")
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let r = h
        .ok(
            "search_nodes",
            json!({"query": "which database does the test environment run"}),
        )
        .await;
    assert_eq!(
        names(&r).first().map(String::as_str),
        Some("test-env"),
        "{r}"
    );
    assert!(names(&r).len() <= 2, "no flood: {r}");
    let r = h
        .ok(
            "search_nodes",
            json!({"query": "who handles payments at weekends"}),
        )
        .await;
    assert_eq!(names(&r), ["payments-team"], "{r}");
    // Only question words: nothing to rank by, nothing returned.
    let r = h
        .ok("search_nodes", json!({"query": "what do you know"}))
        .await;
    assert_eq!(names(&r), Vec::<String>::new(), "{r}");
}
