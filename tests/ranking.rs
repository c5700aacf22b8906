//! How natural-language searches rank, in process against real sqlite and
//! tantivy: question words do not outrank content, a record ranks the same
//! before and after the index commits it (even right after a bulk load into a
//! fresh store), hyphenated and whole words find each other, irregular verbs
//! find their base form, the reply to a matching question comes back with it,
//! and search_nodes answers a question that does not use every word of the
//! entity it is about, without flooding.
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

/// Stores `(occurred_at, content, tags)` events in one batch: their ids, in order.
async fn remember_at(h: &Mem, events: &[(&str, &str, &[&str])]) -> Vec<String> {
    let events: Vec<Value> = events
        .iter()
        .map(|(at, c, tags)| json!({"content": c, "occurred_at": at, "tags": tags}))
        .collect();
    let r = h
        .ok("episodic_remember_batch", json!({"events": events}))
        .await;
    strings(&r["events"], "/id")
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// `(id, follows)` of each hit of a recall.
fn hit_ids(r: &Value) -> Vec<(String, Option<String>)> {
    r["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            let follows = h.get("follows").and_then(Value::as_str).map(String::from);
            (h["event"]["id"].as_str().expect("id").to_string(), follows)
        })
        .collect()
}

/// A question echoes the words of a query about its subject; its reply holds
/// the answer and often shares none of them. The reply (the session's next
/// event, within minutes) comes back right after the question, saying which
/// event it follows; not a later event, not another session's, not what
/// follows a statement, not one the filters exclude (nor, then, the next one
/// they admit). Pages of any size cut the same ranking.
#[tokio::test]
async fn the_reply_to_a_matching_question_comes_back_with_it() {
    let h = Mem::new().await;
    let ids = remember_at(
        &h,
        &[
            (
                "2026-03-01T10:00:00Z",
                "Priya: how's the knee after the marathon?",
                &["knee"],
            ),
            (
                "2026-03-01T10:03:00Z",
                "Sam: much better, the physio has me cycling twice a week",
                &[],
            ),
            (
                "2026-03-01T10:06:00Z",
                "Priya: good, see you at the lido on Sunday",
                &["knee"],
            ),
            (
                "2026-03-01T11:00:00Z",
                "Priya: did the marathon medal ever arrive?",
                &[],
            ),
            (
                "2026-03-01T11:20:00Z",
                "Sam: yes, it is framed in the hall",
                &[],
            ),
            (
                "2026-03-01T12:00:00Z",
                "Sam: the marathon was hard on my knee.",
                &[],
            ),
            (
                "2026-03-01T12:01:00Z",
                "Priya: the weather is lovely today",
                &[],
            ),
        ],
    )
    .await;
    let other = h.session_in("alpha");
    let printer = remember_at(
        &other,
        &[(
            "2026-03-01T11:01:00Z",
            "Ben: the printer is jammed again",
            &[],
        )],
    )
    .await;
    let (question, reply) = (&ids[0], &ids[1]);
    for committed in [false, true] {
        if committed {
            h.flush().await;
        }
        let r = h
            .ok(
                "episodic_recall",
                json!({"query": "knee after the marathon", "limit": 50}),
            )
            .await;
        let hits = hit_ids(&r);
        let place = |id: &String| hits.iter().position(|(h, _)| h == id);
        let (Some(q), Some(a)) = (place(question), place(reply)) else {
            panic!("the question and its reply both come back (committed: {committed}): {r}");
        };
        assert!(q < a, "the reply ranks below its question: {r}");
        assert_eq!(hits[a].1.as_ref(), Some(question), "{r}");
        assert_eq!(hits.iter().filter(|(_, f)| f.is_some()).count(), 1, "{r}");
        for absent in [&ids[2], &ids[4], &ids[6], &printer[0]] {
            assert_eq!(place(absent), None, "{absent} is nobody's reply: {r}");
        }
        // Only events with the tag: not the untagged reply, and not the
        // tagged event after it either, which is no reply.
        let r = h
            .ok(
                "episodic_recall",
                json!({"query": "knee after the marathon", "tags": ["knee"]}),
            )
            .await;
        assert_eq!(hit_ids(&r), [(question.clone(), None)], "{r}");
        let whole: Vec<Value> = r_hits(&h, 50).await;
        for limit in [1, 2, 3] {
            let pages = h
                .pages(
                    "episodic_recall",
                    json!({"query": "knee after the marathon", "limit": limit}),
                )
                .await;
            let paged: Vec<Value> = pages
                .iter()
                .flat_map(|p| p["hits"].as_array().cloned().unwrap_or_default())
                .collect();
            assert_eq!(paged, whole, "pages of {limit}");
        }
    }
}

async fn r_hits(h: &Mem, limit: usize) -> Vec<Value> {
    let r = h
        .ok(
            "episodic_recall",
            json!({"query": "knee after the marathon", "limit": limit}),
        )
        .await;
    r["hits"].as_array().cloned().unwrap_or_default()
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
