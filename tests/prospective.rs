//! Prospective memory and the audit trail through the pipeline, in process
//! (real sqlite, real tantivy): tasks and sub-tasks, what is due across time
//! zones, reminders firing once in the writing transaction, audit rows for
//! every write, and bad input.

mod common;

use common::mem::Mem;
use common::strings;
use serde_json::{Value, json};

async fn task(h: &Mem, args: Value) -> String {
    h.ok("prospective_create", args).await["task"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn due_tasks_come_most_urgent_first_whatever_their_offsets() {
    let h = Mem::new().await;
    // Upcoming: the same morning written in three zones (04:00Z, 05:00Z, 06:00Z).
    task(
        &h,
        json!({"title": "b", "due_at": "2099-01-01T10:00:00+05:00"}),
    )
    .await;
    task(
        &h,
        json!({"title": "c", "due_at": "2099-01-01T06:00:00Z", "priority": "urgent"}),
    )
    .await;
    task(
        &h,
        json!({"title": "a", "due_at": "2099-01-01T01:00:00-03:00", "priority": "low"}),
    )
    .await;
    // Overdue: by priority first, then deadline.
    task(
        &h,
        json!({"title": "late-low", "due_at": "2020-01-01T00:00:00Z", "priority": "low"}),
    )
    .await;
    task(
        &h,
        json!({"title": "late-high", "due_at": "2021-01-01T00:00:00+09:00", "priority": "high"}),
    )
    .await;
    task(&h, json!({"title": "late-high-older", "due_at": "2020-06-01T00:00:00-07:00", "priority": "high"})).await;
    task(&h, json!({"title": "no deadline"})).await;

    let now = h.ok("prospective_due", json!({})).await;
    assert_eq!(
        strings(&now["tasks"], "/task/title"),
        ["late-high-older", "late-high", "late-low"]
    );
    assert!(
        now["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["overdue"] == true)
    );

    let all = h
        .ok("prospective_due", json!({"before": "2099-01-02T00:00:00Z"}))
        .await;
    assert_eq!(
        strings(&all["tasks"], "/task/title"),
        ["late-high-older", "late-high", "late-low", "a", "b", "c"]
    );
    assert_eq!(
        all["tasks"][3]["task"]["due_at"], "2099-01-01T04:00:00Z",
        "kept in UTC"
    );
    assert_eq!(all["tasks"][3]["overdue"], false);

    let pages = h
        .pages(
            "prospective_due",
            json!({"before": "2099-01-02T00:00:00Z", "limit": 4}),
        )
        .await;
    let paged: Vec<&str> = pages
        .iter()
        .flat_map(|p| strings(&p["tasks"], "/task/title"))
        .collect();
    assert_eq!(
        paged,
        ["late-high-older", "late-high", "late-low", "a", "b", "c"]
    );
}

#[tokio::test]
async fn goals_close_with_their_sub_tasks_only_when_asked() {
    let h = Mem::new().await;
    let goal = task(&h, json!({"title": "Launch v2"})).await;
    let docs = task(&h, json!({"title": "Write docs", "parent_id": goal})).await;
    let tests = task(&h, json!({"title": "Write tests", "parent_id": goal})).await;
    let got = h.ok("prospective_get", json!({"id": goal})).await;
    assert_eq!(
        strings(&got["subtasks"], "/title"),
        ["Write docs", "Write tests"]
    );

    let e = h.err("prospective_complete", json!({"id": goal})).await;
    assert!(
        e.contains("2 open sub-task") && e.contains("with_subtasks"),
        "{e}"
    );
    h.ok(
        "prospective_cancel",
        json!({"id": docs, "note": "docs moved to wiki"}),
    )
    .await;
    let done = h
        .ok(
            "prospective_complete",
            json!({"id": goal, "with_subtasks": true, "note": "shipped"}),
        )
        .await;
    assert_eq!(
        strings(&done["closed"], "/title"),
        ["Launch v2", "Write tests"]
    );
    assert_eq!(done["closed"][0]["notes"], "shipped");
    let e = h.err("prospective_complete", json!({"id": tests})).await;
    assert!(e.contains("already done"), "{e}");

    let open = h.ok("prospective_list", json!({})).await;
    assert_eq!(open["tasks"], json!([]));
    let closed = h
        .ok(
            "prospective_list",
            json!({"status": ["done", "cancelled"], "parent_id": goal}),
        )
        .await;
    assert_eq!(strings(&closed["tasks"], "/status"), ["cancelled", "done"]);
    let top = h
        .ok(
            "prospective_list",
            json!({"status": ["done"], "top_level": true}),
        )
        .await;
    assert_eq!(strings(&top["tasks"], "/title"), ["Launch v2"]);

    let reminder = h
        .ok(
            "prospective_trigger_set",
            json!({"message": "check launch", "tag": "launch", "task_id": tests}),
        )
        .await;
    let gone = h
        .ok("prospective_delete", json!({"ids": [goal, "nope"]}))
        .await;
    let mut deleted = strings(&gone["deleted"], "")
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    deleted.sort();
    let mut expected = vec![
        goal.clone(),
        docs,
        tests,
        reminder["trigger"]["id"].as_str().unwrap().to_string(),
    ];
    expected.sort();
    assert_eq!(
        deleted, expected,
        "the goal, its sub-tasks and their reminder"
    );
    assert_eq!(gone["not_found"], json!(["nope"]));
}

#[tokio::test]
async fn a_reminder_fires_once_in_the_answer_of_the_write_that_matches_it() {
    let h = Mem::new().await;
    let set = h
        .ok(
            "prospective_trigger_set",
            json!({"message": "ask Dana about the migration", "query": "database migration"}),
        )
        .await;
    let id = set["trigger"]["id"].as_str().unwrap();
    assert_eq!(set["trigger"]["status"], "armed");
    assert_eq!(set["trigger"]["when"]["kinds"], json!(["event", "fact"]));

    let unrelated = h
        .ok("episodic_remember", json!({"content": "lunch was good"}))
        .await;
    assert!(unrelated.get("reminders").is_none(), "{unrelated}");
    let half = h
        .ok(
            "episodic_remember",
            json!({"content": "The database backup finished"}),
        )
        .await;
    assert!(
        half.get("reminders").is_none(),
        "one of the two words: {half}"
    );
    let task = h
        .ok(
            "prospective_create",
            json!({"title": "database migration plan"}),
        )
        .await;
    assert!(task.get("reminders").is_none(), "tasks are not watched");

    let hit = h
        .ok(
            "episodic_remember",
            json!({"content": "Started the database migrations for billing"}),
        )
        .await;
    let fired = &hit["reminders"];
    assert_eq!(strings(fired, "/id"), [id], "{hit}");
    assert_eq!(fired[0]["status"], "fired");
    assert_eq!(
        fired[0]["fired_by"],
        json!({"kind": "event", "id": hit["event"]["id"]})
    );

    let again = h
        .ok(
            "semantic_store",
            json!({"content": "The database migration finished"}),
        )
        .await;
    assert!(again.get("reminders").is_none(), "fired once: {again}");

    let listed = h
        .ok("prospective_triggers", json!({"status": "fired"}))
        .await;
    assert_eq!(strings(&listed["triggers"], "/id"), [id]);
    let due = h.ok("prospective_due", json!({})).await;
    assert_eq!(
        strings(&due["fired_reminders"], "/message"),
        ["ask Dana about the migration"]
    );
    let armed = h
        .ok("prospective_triggers", json!({"status": "armed"}))
        .await;
    assert_eq!(armed["triggers"], json!([]));
}

#[tokio::test]
async fn concurrent_matching_writes_fire_a_reminder_exactly_once() {
    let h = Mem::new().await;
    let args = json!({"message": "deploys are happening", "tag": "deploy", "kinds": ["fact"]});
    h.ok("prospective_trigger_set", args).await;
    let writes = (0..16).map(|i| {
        let h = h.clone();
        tokio::spawn(async move {
            let args = json!({"content": format!("deploy {i} went out"), "tags": ["deploy"]});
            h.ok("semantic_store", args).await
        })
    });
    let mut fired = 0;
    for w in futures::future::join_all(writes).await {
        fired += w
            .unwrap()
            .get("reminders")
            .map_or(0, |r| r.as_array().unwrap().len());
    }
    assert_eq!(fired, 1, "one answer carries the reminder");
    let event = h
        .ok(
            "episodic_remember",
            json!({"content": "deploy", "tags": ["deploy"]}),
        )
        .await;
    assert!(event.get("reminders").is_none(), "events were not watched");
}

#[tokio::test]
async fn time_reminders_fire_when_their_time_passes() {
    let h = Mem::new().await;
    let past = h
        .ok(
            "prospective_trigger_set",
            json!({"message": "standup", "at": "2h ago"}),
        )
        .await;
    assert_eq!(past["trigger"]["status"], "fired");
    let later = h
        .ok(
            "prospective_trigger_set",
            json!({"message": "retro", "at": "in 2 days"}),
        )
        .await;
    assert_eq!(later["trigger"]["status"], "armed");
    let due = h.ok("prospective_due", json!({})).await;
    assert_eq!(strings(&due["fired_reminders"], "/message"), ["standup"]);
    let all = h.ok("prospective_triggers", json!({})).await;
    assert_eq!(strings(&all["triggers"], "/message"), ["retro", "standup"]);
    let pages = h.pages("prospective_triggers", json!({"limit": 1})).await;
    assert_eq!(pages.len(), 2);
}

#[tokio::test]
async fn every_write_leaves_an_audit_row_naming_operation_session_and_records() {
    let h = Mem::new().await;
    let event = h
        .ok("episodic_remember", json!({"content": "audited event"}))
        .await;
    let session = event["event"]["session_id"].as_str().unwrap().to_string();
    let writes: Vec<(&str, Value)> = vec![
        ("semantic_store", json!({"content": "audited fact"})),
        (
            "create_entities",
            json!({"entities": [{"name": "Ada", "entityType": "person", "observations": []}]}),
        ),
        (
            "procedural_store",
            json!({"name": "p", "goal": "g", "steps": ["s"]}),
        ),
        ("prospective_create", json!({"title": "t"})),
        (
            "prospective_trigger_set",
            json!({"message": "m", "tag": "x"}),
        ),
        ("episodic_forget", json!({"ids": [event["event"]["id"]]})),
    ];
    for (op, args) in &writes {
        h.ok(op, args.clone()).await;
    }
    let pages = h.pages("meta_audit", json!({"limit": 3})).await;
    let entries: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap())
        .collect();
    let ops: Vec<&str> = entries
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = writes.iter().map(|(op, _)| *op).collect();
    expected.insert(0, "episodic_remember");
    expected.reverse();
    assert_eq!(ops, expected, "newest first, one row a write");
    assert!(entries.iter().all(|e| e["session_id"] == session));
    let forget = &entries[0]["records"][0];
    assert_eq!(forget["change"], "delete");
    assert_eq!(forget["id"], event["event"]["id"]);

    let of_event = h
        .ok("meta_audit", json!({"record_id": event["event"]["id"]}))
        .await;
    assert_eq!(
        strings(&of_event["entries"], "/operation"),
        ["episodic_forget", "episodic_remember"]
    );
    let by_op = h
        .ok("meta_audit", json!({"operation": "prospective_create"}))
        .await;
    assert_eq!(by_op["entries"][0]["records"][0]["kind"], "task");
    let other = h.session_in("beta").ok("meta_audit", json!({})).await;
    assert_eq!(
        other["entries"],
        json!([]),
        "namespaces see their own trail"
    );
    let failed = h
        .err("semantic_update", json!({"id": "nope", "content": "x"}))
        .await;
    assert!(failed.contains("no fact"));
    let after = h.ok("meta_audit", json!({"limit": 100})).await;
    assert_eq!(
        after["entries"].as_array().unwrap().len(),
        7,
        "a failed write leaves no row"
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let h = Mem::new().await;
    let id = task(&h, json!({"title": "exists"})).await;
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, &str)> = vec![
        ("prospective_create", json!({}), "missing field `title`"),
        ("prospective_create", json!({"title": " "}), "`title` is empty"),
        ("prospective_create", json!({"title": "t", "due_at": "whenever"}), "cannot read time"),
        ("prospective_create", json!({"title": "t", "priority": "asap"}), "priority"),
        ("prospective_create", json!({"title": "t", "parent_id": "nope"}), "no task with id"),
        ("prospective_create", json!({"title": "t", "notes": ""}), "`notes` is empty"),
        ("prospective_get", json!({"id": ""}), "`id` is empty"),
        ("prospective_get", json!({"id": "nope"}), "no task with id"),
        ("prospective_update", json!({"id": id}), "nothing to change"),
        ("prospective_update", json!({"id": "nope", "title": "x"}), "no task with id"),
        ("prospective_complete", json!({"id": "nope"}), "no task with id"),
        ("prospective_cancel", json!({"id": id, "note": ""}), "`note` is empty"),
        ("prospective_delete", json!({"ids": []}), "`ids` is empty"),
        ("prospective_list", json!({"status": ["later"]}), "status"),
        ("prospective_list", json!({"top_level": true, "parent_id": id}), "exclude each other"),
        ("prospective_list", json!({"due_after": "2030-01-02", "due_before": "2030-01-01"}), "not before"),
        ("prospective_due", json!({"before": "someday"}), "cannot read time"),
        ("prospective_due", json!({"cursor": "x"}), "`cursor` is not valid"),
        ("prospective_trigger_set", json!({"message": "m"}), "exactly one of"),
        ("prospective_trigger_set", json!({"message": "m", "tag": "a", "query": "b"}), "exactly one of"),
        ("prospective_trigger_set", json!({"message": "m", "query": "the of"}), "very common words"),
        ("prospective_trigger_set", json!({"message": "m", "at": "in 1h", "kinds": ["event"]}), "`kinds` goes with"),
        ("prospective_trigger_set", json!({"message": "m", "tag": "a", "kinds": ["task"]}), "cannot watch"),
        ("prospective_trigger_set", json!({"message": "m", "tag": "a", "kinds": []}), "`kinds` is empty"),
        ("prospective_trigger_set", json!({"message": "m", "tag": "a", "task_id": "nope"}), "no task with id"),
        ("prospective_trigger_set", json!({"message": "", "tag": "a"}), "`message` is empty"),
        ("prospective_triggers", json!({"status": "sleeping"}), "status"),
        ("meta_audit", json!({"since": "2030-01-02", "until": "2030-01-01"}), "not before"),
        ("meta_audit", json!({"cursor": "x"}), "`cursor` is not valid"),
        ("meta_audit", json!({"limit": 0}), "at least 1"),
        ("meta_stats", json!({"all_namespaces": "yes"}), "all_namespaces"),
        ("meta_namespaces", json!({"namespace": "x"}), "unknown field"),
        ("meta_reindex", json!({"now": true}), "unknown field"),
        ("meta_export", json!({"limit": 10001}), "give 1 to 10000"),
        ("meta_import", json!({}), "missing field `data`"),
    ];
    for (op, args, expected) in cases {
        let e = h.err(op, args).await;
        assert!(e.contains(expected), "{op}: expected {expected:?} in {e:?}");
    }
    let tasks = h
        .ok(
            "prospective_list",
            json!({"status": ["open", "done", "cancelled"]}),
        )
        .await;
    assert_eq!(
        strings(&tasks["tasks"], "/title"),
        ["exists"],
        "no bad call stored a task"
    );
    let triggers = h.ok("prospective_triggers", json!({})).await;
    assert_eq!(triggers["triggers"], json!([]), "nor a reminder");
    let audit = h.ok("meta_audit", json!({})).await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        1,
        "only the one good write"
    );
}
