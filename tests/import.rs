//! `engram import --format server-memory`: a file imports whole or not at all,
//! and every line meets the limits the graph tools apply.

mod common;

use std::path::Path;

use serde_json::json;

/// A reference-server file (its field order): `n` entities, a chain of
/// relations between them, and one relation to an entity the file never defines.
fn graph_lines(n: usize) -> Vec<String> {
    let entity = |name: String, observations: Vec<String>| {
        format!(
            r#"{{"type":"entity","name":{},"entityType":"thing","observations":{}}}"#,
            json!(name),
            json!(observations)
        )
    };
    let relation = |from: String, to: &str, kind: &str| {
        format!(
            r#"{{"type":"relation","from":{},"to":{},"relationType":{}}}"#,
            json!(from),
            json!(to),
            json!(kind)
        )
    };
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            entity(
                format!("Entity {i}"),
                vec![format!("fact number {i}"), "shared fact".into()],
            )
        })
        .collect();
    lines.extend((0..n - 1).map(|i| {
        relation(
            format!("Entity {i}"),
            &format!("Entity {}", i + 1),
            "precedes",
        )
    }));
    lines.push(relation("Entity 0".into(), "Nowhere", "mentions"));
    lines
}

async fn import(data: &Path, file: &Path) -> (bool, String) {
    let out = common::engram(data, &["import", "--format", "server-memory"])
        .arg(file)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn export(data: &Path) -> String {
    let file = data.with_extension("export.jsonl");
    let status = common::engram(data, &["export", "--format", "server-memory", "--out"])
        .arg(&file)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test]
async fn a_file_imports_whole_or_not_at_all() {
    const N: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = graph_lines(N);

    // A line that is not JSON, past the first thousand entities.
    let mut lines = good.clone();
    lines[1200] = r#"{"type":"entity","name":"broken""#.to_string();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (ok, stderr) = import(&data, &file).await;
    assert!(!ok, "a file with a bad line imported");
    assert_eq!(
        export(&data).await,
        "",
        "a failed import left part of the graph"
    );
    assert!(stderr.contains("line 1201"), "{stderr}");
    assert!(stderr.contains("Nothing was imported"), "{stderr}");

    // A relation line without its type.
    let mut lines = good.clone();
    lines[N + 10] = json!({"type": "relation", "from": "Entity 1", "to": "Entity 2"}).to_string();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (ok, stderr) = import(&data, &file).await;
    assert!(!ok);
    assert!(stderr.contains(&format!("line {}", N + 11)), "{stderr}");
    assert!(stderr.contains("relationType"), "{stderr}");
    assert_eq!(export(&data).await, "");

    // The good file imports everything, dangling relation included: exporting
    // it gives the same bytes.
    let file = dir.path().join("good.jsonl");
    std::fs::write(&file, good.join("\n")).unwrap();
    let (ok, stderr) = import(&data, &file).await;
    assert!(ok, "{stderr}");
    let exported = export(&data).await;
    assert!(
        exported == good.join("\n"),
        "the export differs from the imported file: {} lines instead of {}",
        exported.lines().count(),
        good.len()
    );

    // And it is searchable like anything written through the tools.
    let out = common::engram(
        &data,
        &["call", "search_nodes", r#"{"query": "fact number 1234"}"#],
    )
    .output()
    .await
    .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["entities"][0]["name"], "Entity 1234", "{found}");
}

#[tokio::test]
async fn a_line_over_a_tool_limit_is_named_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("big.jsonl");
    let cases = [
        // An observation one byte over the content limit (64 KiB).
        (
            json!({"type": "entity", "name": "Big", "entityType": "thing",
                   "observations": ["fine", "x".repeat(64 * 1024 + 1)]}),
            vec![
                "`observations[1]`",
                "65537 bytes",
                "over the limit of 65536",
            ],
        ),
        // A name over 512 bytes.
        (
            json!({"type": "entity", "name": "n".repeat(513), "entityType": "thing",
                   "observations": []}),
            vec!["`name`", "513 bytes"],
        ),
        // More observations than one call may carry.
        (
            json!({"type": "entity", "name": "Many", "entityType": "thing",
                   "observations": (0..1001).map(|i| format!("o{i}")).collect::<Vec<_>>()}),
            vec!["`observations` has 1001 items", "several lines"],
        ),
        // An empty relation type.
        (
            json!({"type": "relation", "from": "Entity 1", "to": "Entity 2", "relationType": " "}),
            vec!["`relationType` is empty"],
        ),
    ];
    for (bad, expected) in cases {
        let mut lines = graph_lines(50);
        lines.insert(30, bad.to_string());
        std::fs::write(&file, lines.join("\n")).unwrap();
        let (ok, stderr) = import(&data, &file).await;
        let shown: String = bad.to_string().chars().take(120).collect();
        assert!(!ok, "an over-limit line imported: {shown}");
        assert!(stderr.contains("line 31"), "{stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{e:?} not in {stderr}");
        }
        assert_eq!(export(&data).await, "", "nothing is written");
    }
}
