//! What engram's tool list costs a host: a memory server is listed in every
//! conversation, so `tools/list` is paid on every turn. The real binary, a real
//! MCP client, each profile; the default profile (`core`) must stay within 9 KB
//! of compact JSON (the reference memory server's nine tools cost 11.5 KB).
//!
//! Also: every listed tool says what it is for and publishes an output schema,
//! the wire schemas compile, and answers validate against the wire output
//! schemas (the official SDK clients check that too: tests/real_clients.rs).

mod common;

use common::{Client, call, stdio_client};
use rmcp::model::Tool;
use serde_json::{Value, json};

/// The most the default profile's tool list may cost, in bytes of compact JSON.
const CORE_BUDGET: usize = 9 * 1024;

async fn listed(client: &Client) -> Vec<Tool> {
    client.list_all_tools().await.expect("tools/list")
}

/// Compact JSON bytes of the `tools` array as `tools/list` sends it.
fn bytes(tools: &[Tool]) -> usize {
    serde_json::to_vec(tools).expect("tools serialize").len()
}

fn object(map: &serde_json::Map<String, Value>) -> Value {
    Value::Object(map.clone())
}

#[tokio::test]
async fn the_default_tool_list_fits_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut core_bytes = 0;
    for profile in ["core", "compat", "all"] {
        let client = stdio_client(&dir.path().join(profile), &["--tools", profile]).await;
        let tools = listed(&client).await;
        client.cancel().await.unwrap();
        let total = bytes(&tools);
        report.push(format!("{profile}: {} tools, {total} bytes", tools.len()));
        for tool in &tools {
            let name = &tool.name;
            let description = tool.description.as_deref().unwrap_or("").trim();
            assert!(!description.is_empty(), "{profile}/{name}: no description");
            let output = tool
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{profile}/{name}: no output schema"));
            assert_eq!(output.get("type"), Some(&json!("object")), "{name}");
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&json!("object")),
                "{name}"
            );
            // Both compile as draft 2020-12 (what the Python SDK uses).
            for schema in [object(&tool.input_schema), object(output)] {
                jsonschema::draft202012::new(&schema)
                    .unwrap_or_else(|e| panic!("{name}: the wire schema does not compile: {e}"));
            }
            if profile == "core" {
                report.push(format!(
                    "  {name:<20} {:>5} (description {:>3}, input {:>4}, output {:>4})",
                    bytes(std::slice::from_ref(tool)),
                    description.len(),
                    object(&tool.input_schema).to_string().len(),
                    object(output).to_string().len(),
                ));
            }
        }
        if profile == "core" {
            core_bytes = total;
        }
    }
    println!(
        "tools/list, compact JSON of the tools array:\n{}",
        report.join("\n")
    );
    assert!(
        core_bytes <= CORE_BUDGET,
        "the default profile's tools/list costs {core_bytes} bytes, over its budget of \
         {CORE_BUDGET}: shorten summaries or input field docs of core tools, or list fewer \
         tools in core\n{}",
        report.join("\n")
    );
}

/// Answers of the core tools (and of a few graph tools) validate against the
/// output schemas the client was given, not only against the full ones.
#[tokio::test]
async fn answers_validate_against_the_wire_output_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let client = stdio_client(dir.path(), &["--tools", "all"]).await;
    let tools = listed(&client).await;
    let calls: Vec<(&str, Value)> = vec![
        (
            "episodic_remember",
            json!({"content": "staging moved to postgres 16", "tags": ["infra"], "occurred_at": "2h ago"}),
        ),
        (
            "episodic_recall",
            json!({"query": "postgres staging", "since": "yesterday"}),
        ),
        ("episodic_recent", json!({"limit": 5})),
        (
            "semantic_store",
            json!({"content": "staging runs PostgreSQL 16", "source": "user", "valid_from": "2024-01-01"}),
        ),
        ("semantic_search", json!({"query": "postgres", "tags": []})),
        ("semantic_search_hybrid", json!({"query": "postgres"})),
        (
            "memory_search",
            json!({"query": "postgres staging", "layers": ["episodic", "semantic"]}),
        ),
        (
            "discover_tools",
            json!({"query": "forget", "detail": "full"}),
        ),
        ("discover_tools", json!({"kind": "read", "detail": "name"})),
        ("enable_toolset", json!({"layer": "graph"})),
        (
            "call_operation",
            json!({"name": "episodic_count", "arguments": {}}),
        ),
        (
            "create_entities",
            json!({"entities": [{"name": "staging", "entityType": "env", "observations": ["postgres 16"]}]}),
        ),
        ("read_graph", json!({})),
        ("graph_stats", json!({})),
    ];
    for (name, args) in calls {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is listed"));
        let schema = object(tool.output_schema.as_ref().expect("an output schema"));
        let validator = jsonschema::draft202012::new(&schema).expect("compiles");
        let answer = call(&client, name, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{name} {args}: {e}"));
        let problems: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| e.to_string())
            .collect();
        assert!(
            problems.is_empty(),
            "{name}: the answer is outside the listed output schema: {problems:?}\n{answer}"
        );
    }
    client.cancel().await.unwrap();
}
