//! The knowledge graph beyond the reference tools, in process against real
//! sqlite and tantivy files: traversals and algorithms on the petgraph view,
//! edits that keep relations consistent, read_graph paging under its budget,
//! ranked search_nodes. (tests/compat.rs compares the nine tools with the
//! reference server itself.)

mod common;

use common::mem::Mem;
use common::numbers;
use serde_json::{Value, json};

trait Org {
    async fn org(&self);
}

impl Org for Mem {
    /// Two clusters joined by one bridge:
    /// alice → bob → carol → alice (a team), dave → erin → frank → dave,
    /// carol → dave (the bridge), and gina on her own.
    async fn org(&self) {
        let people = ["alice", "bob", "carol", "dave", "erin", "frank", "gina"];
        let entities: Vec<Value> = people
            .iter()
            .map(|p| json!({ "name": p, "entityType": "person", "observations": [format!("{p} works here")] }))
            .collect();
        self.ok("create_entities", json!({ "entities": entities }))
            .await;
        let rel = |a: &str, b: &str, t: &str| json!({ "from": a, "to": b, "relationType": t });
        self.ok(
            "create_relations",
            json!({ "relations": [
                rel("alice", "bob", "mentors"), rel("bob", "carol", "mentors"), rel("carol", "alice", "mentors"),
                rel("dave", "erin", "mentors"), rel("erin", "frank", "mentors"), rel("frank", "dave", "mentors"),
                rel("carol", "dave", "knows"),
            ] }),
        )
        .await;
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x.as_str()
                .map_or_else(|| x["name"].as_str().unwrap().to_string(), String::from)
        })
        .collect()
}

#[tokio::test]
async fn traversals_follow_direction_types_and_bounds() {
    let h = Mem::new().await;
    h.org().await;
    let r = h.ok("graph_neighbors", json!({ "name": "carol" })).await;
    let mut n = names(&r, "nodes");
    n.sort();
    assert_eq!(n, ["alice", "bob", "carol", "dave"]);
    let r = h
        .ok(
            "graph_neighbors",
            json!({ "name": "carol", "direction": "out", "relation_types": ["mentors"] }),
        )
        .await;
    assert_eq!(names(&r, "nodes"), ["carol", "alice"]);
    let r = h
        .ok("graph_neighbors", json!({ "name": "alice", "depth": 6 }))
        .await;
    assert_eq!(r["nodes"].as_array().unwrap().len(), 6, "everyone but gina");
    let r = h
        .ok(
            "graph_neighbors",
            json!({ "name": "alice", "depth": 6, "max_nodes": 3 }),
        )
        .await;
    assert_eq!(
        (
            r["nodes"].as_array().unwrap().len(),
            r["truncated"].as_bool()
        ),
        (3, Some(true))
    );

    let r = h
        .ok(
            "graph_shortest_path",
            json!({ "from": "alice", "to": "frank", "direction": "out" }),
        )
        .await;
    assert_eq!(
        names(&r, "path"),
        ["alice", "bob", "carol", "dave", "erin", "frank"]
    );
    let r = h
        .ok(
            "graph_shortest_path",
            json!({ "from": "alice", "to": "frank" }),
        )
        .await;
    assert_eq!(r["length"], 3, "alice-carol-dave-frank, ignoring direction");
    let r = h
        .ok(
            "graph_shortest_path",
            json!({ "from": "alice", "to": "gina" }),
        )
        .await;
    assert_eq!(r["found"], false);
    let to_nobody = json!({ "from": "alice", "to": "nobody" });
    let e = h.err("graph_shortest_path", to_nobody).await;
    assert!(e.contains("nobody"), "{e}");

    let r = h
        .ok(
            "graph_all_paths",
            json!({ "from": "alice", "to": "carol", "direction": "out" }),
        )
        .await;
    let paths: Vec<Vec<String>> = r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| names(p, "path"))
        .collect();
    assert_eq!(paths, vec![vec!["alice", "bob", "carol"]]);
    let r = h
        .ok("graph_all_paths", json!({ "from": "alice", "to": "carol" }))
        .await;
    assert_eq!(
        r["paths"].as_array().unwrap().len(),
        2,
        "direct and via bob"
    );

    let r = h
        .ok("graph_subgraph", json!({ "seeds": ["dave"], "hops": 1 }))
        .await;
    let mut n = names(&r, "entities");
    n.sort();
    assert_eq!(n, ["carol", "dave", "erin", "frank"]);
    assert_eq!(
        r["relations"].as_array().unwrap().len(),
        4,
        "dave's triangle and the bridge"
    );
}

#[tokio::test]
async fn centrality_communities_and_stats() {
    let h = Mem::new().await;
    h.org().await;
    let top_2_by_degree = json!({ "measure": "degree", "top_k": 2 });
    let r = h.ok("graph_centrality", top_2_by_degree).await;
    let top = names(&r, "top");
    assert!(
        top.contains(&"carol".to_string()) && top.contains(&"dave".to_string()),
        "{r}"
    );
    let r = h.ok("graph_centrality", json!({})).await;
    assert_eq!(r["complete"], true);
    let sum: f64 = numbers(&r["top"], "/score").iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-6,
        "pagerank sums to 1 over all 7: {sum}"
    );

    let r = h
        .ok("graph_communities", json!({ "algorithm": "components" }))
        .await;
    assert_eq!(r["count"], 1, "gina alone is below min_size");
    assert_eq!(r["communities"][0]["size"], 6);
    let r = h
        .ok(
            "graph_communities",
            json!({ "min_size": 1, "algorithm": "components" }),
        )
        .await;
    assert_eq!(r["count"], 2);
    let r = h.ok("graph_communities", json!({})).await;
    let mut groups: Vec<Vec<String>> = r["communities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| names(c, "members"))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![vec!["alice", "bob", "carol"], vec!["dave", "erin", "frank"]]
    );

    let r = h.ok("graph_stats", json!({})).await;
    assert_eq!(
        (
            r["entities"].as_u64(),
            r["relations"].as_u64(),
            r["observations"].as_u64()
        ),
        (Some(7), Some(7), Some(7))
    );
    assert_eq!(
        (r["components"].as_u64(), r["isolated"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        r["relation_types"][0],
        json!({ "name": "mentors", "count": 6 })
    );
}

#[tokio::test]
async fn rename_merge_and_update_keep_relations_consistent() {
    let h = Mem::new().await;
    h.org().await;
    h.ok(
        "graph_rename_entity",
        json!({ "name": "carol", "new_name": "caroline" }),
    )
    .await;
    let r = h.ok("open_nodes", json!({ "names": ["caroline"] })).await;
    assert_eq!(r["relations"].as_array().unwrap().len(), 3);
    assert!(
        h.ok("search_nodes", json!({ "query": "carol" })).await["entities"][0]["name"]
            == "caroline"
    );
    let to_taken_name = json!({ "name": "bob", "new_name": "alice" });
    let e = h.err("graph_rename_entity", to_taken_name).await;
    assert!(e.contains("already exists"), "{e}");

    // A duplicate "Bob" with its own relation and a shared observation.
    h.ok("create_entities", json!({ "entities": [{ "name": "Robert", "entityType": "person", "observations": ["bob works here", "plays chess"] }] })).await;
    h.ok(
        "create_relations",
        json!({ "relations": [
        { "from": "Robert", "to": "gina", "relationType": "knows" },
        { "from": "alice", "to": "Robert", "relationType": "mentors" },
        { "from": "Robert", "to": "bob", "relationType": "same_as" },
    ] }),
    )
    .await;
    let robert_into_bob = json!({ "target": "bob", "sources": ["Robert"] });
    let merged = h.ok("graph_merge_entities", robert_into_bob).await;
    assert_eq!(
        merged["entity"]["observations"],
        json!(["bob works here", "plays chess"])
    );
    let r = h.ok("open_nodes", json!({ "names": ["bob"] })).await;
    let mut rels: Vec<String> = r["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}-{}-{}",
                x["from"].as_str().unwrap(),
                x["relationType"].as_str().unwrap(),
                x["to"].as_str().unwrap()
            )
        })
        .collect();
    rels.sort();
    // alice-mentors-bob existed already (no duplicate), Robert's self-loop is gone.
    assert_eq!(
        rels,
        [
            "alice-mentors-bob",
            "bob-knows-gina",
            "bob-mentors-caroline"
        ]
    );
    assert!(
        h.ok("open_nodes", json!({ "names": ["Robert"] })).await["entities"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let r = h
        .ok("graph_update_entity", json!({ "name": "bob", "entityType": "engineer", "properties": { "team": "core", "desk": 4 } }))
        .await;
    assert_eq!(r["entity"]["entityType"], "engineer");
    let r = h
        .ok(
            "graph_update_entity",
            json!({ "name": "bob", "properties": { "desk": null } }),
        )
        .await;
    assert_eq!(r["entity"]["properties"], json!({ "team": "core" }));
    // The graph view follows every write.
    let r = h
        .ok(
            "graph_neighbors",
            json!({ "name": "bob", "relation_types": ["knows"] }),
        )
        .await;
    assert_eq!(names(&r, "nodes"), ["bob", "gina"]);
}

#[tokio::test]
async fn read_graph_pages_under_its_budget_without_loss() {
    let h = Mem::with(|c| c.limits.max_graph_answer_chars = 2_000).await;
    let entities: Vec<Value> = (0..60)
        .map(|i| json!({ "name": format!("e{i:02}"), "entityType": if i % 2 == 0 { "even" } else { "odd" }, "observations": [format!("entity number {i}")] }))
        .collect();
    h.ok("create_entities", json!({ "entities": entities }))
        .await;
    let relations: Vec<Value> = (0..59)
        .map(|i| json!({ "from": format!("e{i:02}"), "to": format!("e{:02}", i + 1), "relationType": "next" }))
        .collect();
    h.ok("create_relations", json!({ "relations": relations }))
        .await;

    let (mut seen, mut rels) = (Vec::new(), 0);
    let pages = h.pages("read_graph", json!({})).await;
    for r in &pages {
        assert!(
            serde_json::to_string(&r).unwrap().len() < 2_000 + 600,
            "page over budget"
        );
        seen.extend(names(r, "entities"));
        rels += r["relations"].as_array().unwrap().len();
        if r.get("next_cursor").is_some() {
            assert!(r["note"].as_str().unwrap().contains("cursor"));
        }
    }
    assert!(pages.len() > 1);
    let expected: Vec<String> = (0..60).map(|i| format!("e{i:02}")).collect();
    assert_eq!((seen, rels), (expected, 59));

    let r = h
        .ok(
            "read_graph",
            json!({ "entity_types": ["odd"], "include_observations": false, "limit": 500 }),
        )
        .await;
    let odd = r["entities"].as_array().unwrap();
    assert!(
        odd.iter()
            .all(|e| e["entityType"] == "odd" && e.get("observations").is_none())
    );
}

#[tokio::test]
async fn search_nodes_ranks_whole_word_matches_then_substrings() {
    let h = Mem::new().await;
    h.ok(
        "create_entities",
        json!({ "entities": [
            { "name": "Postgres", "entityType": "database", "observations": ["primary runs in Frankfurt", "replicas in Dublin"] },
            { "name": "Billing", "entityType": "service", "observations": ["stores invoices in Postgres"] },
            { "name": "Postgresql-docs", "entityType": "document", "observations": [] },
            { "name": "Search", "entityType": "service", "observations": ["indexes documents nightly"] },
        ] }),
    )
    .await;
    let r = h.ok("search_nodes", json!({ "query": "postgres" })).await;
    // Ranked word matches first (the entity named Postgres holds it twice over),
    // then substring-only matches the reference would also find.
    assert_eq!(
        names(&r, "entities"),
        ["Postgres", "Billing", "Postgresql-docs"]
    );
    let r = h
        .ok("search_nodes", json!({ "query": "invoices postgres" }))
        .await;
    assert_eq!(names(&r, "entities"), ["Billing"]);
    let r = h
        .ok(
            "search_nodes",
            json!({ "query": "service", "entity_types": ["service"], "limit": 1 }),
        )
        .await;
    assert_eq!(r["entities"].as_array().unwrap().len(), 1);
    assert!(r["next_cursor"].is_string());
    let next = h
        .ok("search_nodes", json!({ "query": "service", "entity_types": ["service"], "limit": 1, "cursor": r["next_cursor"] }))
        .await;
    assert_ne!(next["entities"][0]["name"], r["entities"][0]["name"]);
    // Substrings inside words, as the reference matches them: from the overlay,
    // then from the committed trigram index; two letters fall back to a scan.
    for committed in [false, true] {
        if committed {
            h.flush().await;
        }
        let mut found = names(
            &h.ok("search_nodes", json!({ "query": "GRE" })).await,
            "entities",
        );
        found.sort();
        assert_eq!(
            found,
            ["Billing", "Postgres", "Postgresql-docs"],
            "committed: {committed}"
        );
        let found = names(
            &h.ok("search_nodes", json!({ "query": "ll" })).await,
            "entities",
        );
        assert_eq!(found, ["Billing"]);
        let found = names(
            &h.ok("search_nodes", json!({ "query": "ghtly" })).await,
            "entities",
        );
        assert_eq!(found, ["Search"]);
    }
    // memory_search sees graph entities too, labelled with their layer.
    let r = h.ok("memory_search", json!({ "query": "frankfurt" })).await;
    assert_eq!(r["hits"][0]["layer"], "graph");
    assert_eq!(r["hits"][0]["id"], "Postgres");
}

/// The substring rule takes the query literally: LIKE's wildcards and its
/// escape are plain characters, and case folds.
#[tokio::test]
async fn search_nodes_substrings_take_wildcards_literally() {
    let h = Mem::new().await;
    h.ok(
        "create_entities",
        json!({ "entities": [
            { "name": "Uptime", "entityType": "goal", "observations": ["100% UPTIME this quarter"] },
            { "name": "snake_case", "entityType": "style", "observations": [] },
            { "name": "Paths", "entityType": "note", "observations": ["C:\\temp on windows"] },
            { "name": "Plain", "entityType": "note", "observations": ["nothing special here"] },
        ] }),
    )
    .await;
    for (query, expected) in [
        ("%", vec!["Uptime"]),
        ("0% upt", vec!["Uptime"]),
        ("_", vec!["snake_case"]),
        ("ke_ca", vec!["snake_case"]),
        ("\\", vec!["Paths"]),
        ("c:\\TEMP", vec!["Paths"]),
    ] {
        let found = names(
            &h.ok("search_nodes", json!({ "query": query })).await,
            "entities",
        );
        assert_eq!(found, expected, "query {query:?}");
    }
}

#[tokio::test]
async fn merging_several_sources_keeps_every_sources_properties() {
    let h = Mem::new().await;
    let entities: Vec<Value> = ["svc", "svc-a", "svc-b"]
        .iter()
        .map(|n| json!({ "name": n, "entityType": "service", "observations": [] }))
        .collect();
    h.ok("create_entities", json!({ "entities": entities }))
        .await;
    for (name, props) in [
        ("svc", json!({ "owner": "core" })),
        ("svc-a", json!({ "port": 80, "owner": "edge" })),
        ("svc-b", json!({ "region": "eu" })),
    ] {
        h.ok(
            "graph_update_entity",
            json!({ "name": name, "properties": props }),
        )
        .await;
    }
    let merged = h
        .ok(
            "graph_merge_entities",
            json!({ "target": "svc", "sources": ["svc-a", "svc-b"] }),
        )
        .await;
    // The target's own values win; each source adds what the target lacks.
    assert_eq!(
        merged["entity"]["properties"],
        json!({ "owner": "core", "port": 80, "region": "eu" })
    );
}

/// Entities and their observations are read many at once (in chunks of names
/// and ids): each entity still comes once, in the order asked, with exactly its
/// own observations in the order they were added (an empty list if none).
#[tokio::test]
async fn many_entities_each_get_their_own_observations_in_order() {
    let h = Mem::new().await;
    let count = 450; // more than two chunks
    // Every seventh entity has none to begin with.
    let initial = |i: usize| -> Vec<String> {
        if i.is_multiple_of(7) {
            vec![]
        } else {
            vec![format!("zeta {i}"), format!("alpha {i}")]
        }
    };
    let entities: Vec<Value> = (0..count)
        .map(|i| json!({ "name": format!("e{i}"), "entityType": "thing", "observations": initial(i) }))
        .collect();
    for batch in entities.chunks(100) {
        h.ok("create_entities", json!({ "entities": batch })).await;
    }
    let later: Vec<Value> = (0..count)
        .step_by(3)
        .map(|i| json!({ "entityName": format!("e{i}"), "contents": [format!("middle {i}")] }))
        .collect();
    h.ok("add_observations", json!({ "observations": later }))
        .await;
    let expected = |i: usize| -> Vec<String> {
        let mut o = initial(i);
        if i.is_multiple_of(3) {
            o.push(format!("middle {i}"));
        }
        o
    };
    // Asked in an order of their own, back to front, with a name asked twice
    // (it comes once) and one that does not exist (skipped).
    let mut asked: Vec<String> = (0..count).rev().map(|i| format!("e{i}")).collect();
    asked.extend(["e5".to_string(), "nobody".to_string()]);
    let opened = h.ok("open_nodes", json!({ "names": asked })).await;
    let got = opened["entities"].as_array().unwrap();
    assert_eq!(got.len(), count);
    for (k, e) in got.iter().enumerate() {
        let i = count - 1 - k;
        assert_eq!(e["name"], format!("e{i}"));
        assert_eq!(e["observations"], json!(expected(i)), "e{i}");
    }
}

/// Pages of search_nodes are the one-page answer cut in pieces, when the answer
/// mixes ranked word matches with substring-only matches and the substring
/// pass has to look past its first round of candidates: nothing twice,
/// nothing missed, before and after the index commits.
#[tokio::test]
async fn search_nodes_pages_cut_the_whole_answer_without_gaps() {
    let h = Mem::new().await;
    // Ranked matches (the word "relay"), substring-only matches (inside a
    // longer word), entities holding both, and decoys holding every 3-letter
    // piece of "relay", but apart.
    let observation = |i: usize| match i % 4 {
        0 => format!("relay {i} forwards traffic"),
        1 => format!("prerelayed batch {i}"),
        2 => format!("relay {i} and its prerelayed twin"),
        _ => format!("reload the elastic layout {i}"),
    };
    let count = 240;
    let entities: Vec<Value> = (0..count)
        .map(|i| json!({ "name": format!("node-{i}"), "entityType": "host", "observations": [observation(i)] }))
        .collect();
    for batch in entities.chunks(100) {
        h.ok("create_entities", json!({ "entities": batch })).await;
    }
    let mut expected: Vec<String> = (0..count)
        .filter(|i| i % 4 != 3)
        .map(|i| format!("node-{i}"))
        .collect();
    expected.sort();
    for committed in [false, true] {
        if committed {
            h.flush().await;
        }
        let whole = names(
            &h.ok("search_nodes", json!({ "query": "relay", "limit": 500 }))
                .await,
            "entities",
        );
        let mut found = whole.clone();
        found.sort();
        assert_eq!(found, expected, "committed: {committed}");
        for limit in [1, 7, 64] {
            let mut paged = Vec::new();
            let mut cursor = Value::Null;
            loop {
                let mut args = json!({ "query": "relay", "limit": limit });
                if !cursor.is_null() {
                    args["cursor"] = cursor;
                }
                let page = h.ok("search_nodes", args).await;
                paged.extend(names(&page, "entities"));
                cursor = page["next_cursor"].clone();
                if cursor.is_null() {
                    break;
                }
            }
            assert_eq!(paged, whole, "limit {limit}, committed: {committed}");
        }
    }
}
