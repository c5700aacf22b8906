//! engram against the reference memory server itself
//! (`@modelcontextprotocol/server-memory`, installed from npm into `target/`
//! on first run): the same script of calls through the same MCP client, answers
//! compared. Where the reference is unsound (a relation to an entity that does
//! not exist), engram refuses and the script says so. Then the files: a file the
//! reference wrote imports into engram without loss, and engram's export is the
//! file the reference would write, which the reference then reads.
//!
//! Skipped, with the reason printed, only when node/npm cannot install the
//! reference.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Client, TestClient, Tools, call, connect, stdio_client, strings, tool_names};
use serde_json::{Value, json};

/// The reference version the comparison was written against.
const REFERENCE: &str = "@modelcontextprotocol/server-memory@2026.8.31";

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reference-memory-server")
}

/// The reference's entry point, installing it first if needed; None (with the
/// reason printed) when it cannot be installed.
fn reference_entry() -> Option<PathBuf> {
    let dir = reference_dir();
    let entry = dir.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if entry.exists() {
        return Some(entry);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .arg(REFERENCE)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && entry.exists() => Some(entry),
        Ok(s) => {
            eprintln!("SKIPPED: `npm install {REFERENCE}` failed ({s}): npm registry unreachable?");
            None
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot run npm ({e}): install Node.js and npm to run this comparison"
            );
            None
        }
    }
}

async fn reference_client(entry: &Path, memory_file: &Path) -> Client {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(entry).env("MEMORY_FILE_PATH", memory_file);
    connect(TestClient::default(), cmd, Stdio::null()).await.0
}

/// What a step expects of the two answers.
enum Expect {
    /// The same structured answer.
    Same,
    /// The same entities and relations, in any order (ranked search orders by relevance).
    SameSets,
    /// Both fail.
    BothFail,
    /// The reference accepts it but it is unsound; engram refuses it.
    EngramRefuses,
}

fn sorted(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|x| x.to_string())
        .collect()
}

/// Every `required` list in a schema, by JSON pointer, to compare input contracts.
fn required_fields(schema: &Value, at: &str, out: &mut Requirements) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(req)) = map.get("required") {
                let names = req
                    .iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect();
                out.push((at.to_string(), names));
            }
            for (k, v) in map {
                if k != "required" && k != "$defs" {
                    required_fields(v, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                required_fields(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Resolves `$ref: #/$defs/X` in place so two schemas compare by shape.
fn inline_refs(schema: &Value, defs: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                return inline_refs(&defs[name], defs);
            }
            Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "$defs")
                    .map(|(k, v)| (k.clone(), inline_refs(v, defs)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline_refs(v, defs)).collect()),
        other => other.clone(),
    }
}

/// (JSON pointer, required field names) of one schema.
type Requirements = Vec<(String, BTreeSet<String>)>;

async fn input_requirements(client: &Client) -> Vec<(String, Requirements)> {
    let mut tools: Vec<(String, Requirements)> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| {
            let schema = Value::Object((*t.input_schema).clone());
            let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
            let inlined = inline_refs(&schema, &defs);
            let mut req = Requirements::new();
            required_fields(&inlined, "", &mut req);
            // Keep only the paths that name fields (drop wrapper noise like anyOf indices).
            req.retain(|(_, names)| !names.is_empty());
            req.sort();
            (t.name.to_string(), req)
        })
        .collect();
    tools.sort();
    tools
}

#[tokio::test]
async fn engram_answers_like_the_reference_memory_server() {
    let Some(entry) = reference_entry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference_file = dir.path().join("memory.jsonl");
    let reference = reference_client(&entry, &reference_file).await;
    let engram_dir = dir.path().join("engram");
    let engram = stdio_client(&engram_dir, &["--tools", "compat"]).await;

    // The same nine tools, each requiring the same fields.
    assert_eq!(tool_names(&engram).await, tool_names(&reference).await);
    assert_eq!(
        input_requirements(&engram).await,
        input_requirements(&reference).await
    );

    use Expect::*;
    let script: Vec<(&str, Value, Expect)> = vec![
        (
            "create_entities",
            json!({ "entities": [
                { "name": "Alice", "entityType": "person", "observations": ["likes tea", "works remotely"] },
                { "name": "Acme", "entityType": "company", "observations": ["makes anvils"] },
                { "name": "Bob", "entityType": "person", "observations": ["plays chess", "likes green tea"] },
            ] }),
            Same,
        ),
        (
            "create_entities",
            json!({ "entities": [
                { "name": "Alice", "entityType": "robot", "observations": ["ignored: exists"] },
                { "name": "Carol", "entityType": "person", "observations": [] },
            ] }),
            Same,
        ),
        (
            "create_relations",
            json!({ "relations": [
                { "from": "Alice", "to": "Acme", "relationType": "works_at" },
                { "from": "Bob", "to": "Acme", "relationType": "works_at" },
                { "from": "Alice", "to": "Bob", "relationType": "knows" },
                { "from": "Carol", "to": "Alice", "relationType": "manages" },
            ] }),
            Same,
        ),
        (
            "create_relations",
            json!({ "relations": [{ "from": "Alice", "to": "Acme", "relationType": "works_at" }] }),
            Same,
        ),
        (
            "add_observations",
            json!({ "observations": [
                { "entityName": "Alice", "contents": ["likes tea", "speaks French"] },
                { "entityName": "Acme", "contents": ["founded 1949"] },
            ] }),
            Same,
        ),
        (
            "add_observations",
            json!({ "observations": [{ "entityName": "Nobody", "contents": ["x"] }] }),
            BothFail,
        ),
        ("search_nodes", json!({ "query": "tea" }), SameSets),
        ("search_nodes", json!({ "query": "PERSON" }), SameSets),
        ("search_nodes", json!({ "query": "anvils" }), SameSets),
        ("search_nodes", json!({ "query": "zebra" }), Same),
        ("open_nodes", json!({ "names": ["Alice", "Ghost"] }), Same),
        ("open_nodes", json!({ "names": ["Carol"] }), Same),
        (
            "delete_observations",
            json!({ "deletions": [{ "entityName": "Alice", "observations": ["likes tea"] }] }),
            Same,
        ),
        (
            "delete_relations",
            json!({ "relations": [{ "from": "Alice", "to": "Bob", "relationType": "knows" }] }),
            Same,
        ),
        ("delete_entities", json!({ "entityNames": ["Bob"] }), Same),
        ("read_graph", json!({}), Same),
        (
            "create_relations",
            json!({ "relations": [{ "from": "Alice", "to": "Ghost", "relationType": "haunts" }] }),
            EngramRefuses,
        ),
    ];

    for (i, (tool, args, expect)) in script.into_iter().enumerate() {
        let theirs = call(&reference, tool, args.clone()).await;
        let ours = call(&engram, tool, args.clone()).await;
        let step = format!("step {i}: {tool} {args}");
        match expect {
            Same => assert_eq!(ours, theirs, "{step}"),
            SameSets => {
                let (ours, theirs) = (ours.expect(&step), theirs.expect(&step));
                assert_eq!(
                    sorted(&ours, "entities"),
                    sorted(&theirs, "entities"),
                    "{step}"
                );
                assert_eq!(
                    sorted(&ours, "relations"),
                    sorted(&theirs, "relations"),
                    "{step}"
                );
            }
            BothFail => {
                assert!(theirs.is_err(), "{step}: the reference accepted it");
                let e = ours.expect_err(&step);
                assert!(e.contains("Nobody"), "{step}: {e}");
            }
            EngramRefuses => {
                assert!(theirs.is_ok(), "{step}: the reference refused it");
                let e = ours.expect_err(&step);
                assert!(
                    e.contains("Ghost") && e.contains("Nothing was written"),
                    "{step}: {e}"
                );
            }
        }
    }

    // engram's search is ranked and word-based: every word, in any order.
    let r = engram
        .ok("search_nodes", json!({ "query": "speaks remotely" }))
        .await;
    assert_eq!(strings(&r["entities"], "/name"), vec!["Alice"]);
    let r = reference
        .ok("search_nodes", json!({ "query": "speaks remotely" }))
        .await;
    assert!(
        r["entities"].as_array().unwrap().is_empty(),
        "the reference matches one substring"
    );

    reference.cancel().await.ok();
    engram.cancel().await.ok();

    // The reference's file (with its dangling relation) imports without loss:
    // exporting it again gives the same bytes.
    let imported = dir.path().join("imported");
    let status = common::engram(&imported, &["import", "--format", "server-memory"])
        .arg(&reference_file)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let out = dir.path().join("roundtrip.jsonl");
    let status = common::engram(&imported, &["export", "--format", "server-memory", "--out"])
        .arg(&out)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&reference_file).unwrap()
    );

    // engram's own export opens in the reference, which reads the same graph.
    let exported = dir.path().join("engram-export.jsonl");
    let status = common::engram(&engram_dir, &["export", "--out"])
        .arg(&exported)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let engram = stdio_client(&engram_dir, &["--tools", "compat"]).await;
    let ours = engram.ok("read_graph", json!({})).await;
    engram.cancel().await.ok();
    let reference = reference_client(&entry, &exported).await;
    let theirs = reference.ok("read_graph", json!({})).await;
    reference.cancel().await.ok();
    assert_eq!(ours, theirs);
}
