//! Property-based fuzzing (proptest) of everything that reads client input:
//! the arguments of every operation, time specs, cursors, the boolean query
//! parser and the JSON-RPC framing. Bounded so CI runs it in seconds; raise
//! `ENGRAM_FUZZ_CASES` for a longer run. A failure proptest finds is shrunk and
//! printed; it becomes a regression case in the list at the end of this file.
//!
//! Properties: nothing panics (a panic would surface as an internal error),
//! every answer validates against the published output schema (checked on
//! every call in debug builds), and every refusal is a clear tool error.

mod common;

use common::mem::Mem;
use engram::config::Durability;
use engram::error::OpError;
use engram::ops::registry;
use engram::server::jsonrpc::{self, Incoming};
use engram::timespec::TimeSpec;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};
use serde_json::{Map, Value, json};

fn cases(default: u32) -> u32 {
    std::env::var("ENGRAM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Strings that reach the interesting corners: times, ids, cursors, queries.
const CORNERS: &[&str] = &[
    "20000000000000d",
    "9223372036854775807s",
    "-9223372036854775808 weeks ago",
    "+275760-09-13T00:00:00Z",
    "2026-11-24",
    "1h ago",
    "0190f0f0-0000-7000-8000-000000000000",
    "eyJvIjoxMDAwMDAwMDAwMDAwMCwiZiI6IngifQ",
    "eyJvIjoxfQ.AAAAAAAAAAAAAAAAAAAAAA",
    "(a AND (b OR -c)) \"d e\" tag:x NOT",
    "((((((((((",
    "\u{0}\u{feff}\u{10ffff}",
];

/// Random text, or one of the corners (each corner as likely as each pattern).
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "[a-z ]{0,12}",
        1 => "\\PC{0,16}",
        CORNERS.len() as u32 => prop::sample::select(CORNERS).prop_map(String::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        prop_oneof![Just(0.5), Just(-0.0), Just(1.5), Just(1e300)].prop_map(|f: f64| json!(f)),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a property, shaped by its schema most of the time (so calls get
/// past the schema check and into the handlers), anything at all otherwise.
fn value_for(schema: &Value, defs: &Value, depth: u32) -> BoxedStrategy<Value> {
    let schema = resolve(schema, defs);
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => schema["anyOf"]
            .as_array()
            .map(|alts| {
                alts.iter()
                    .flat_map(|a| resolve(a, defs)["type"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let enumerated: Option<Vec<Value>> = schema["enum"].as_array().cloned().or_else(|| {
        schema["oneOf"].as_array().map(|alts| {
            alts.iter()
                .filter_map(|a| {
                    a.get("const")
                        .or_else(|| a.get("enum").and_then(|e| e.get(0)))
                        .cloned()
                })
                .collect()
        })
    });
    let shaped: BoxedStrategy<Value> = if let Some(values) = enumerated.filter(|v| !v.is_empty()) {
        prop::sample::select(values).boxed()
    } else if types.iter().any(|t| t == "string") {
        tricky_string().prop_map(Value::String).boxed()
    } else if types.iter().any(|t| t == "integer") {
        prop_oneof![0i64..30, Just(i64::MAX), Just(-1)]
            .prop_map(|n| json!(n))
            .boxed()
    } else if types.iter().any(|t| t == "number") {
        prop_oneof![0.0f64..1.0, Just(-0.5), Just(7.0)]
            .prop_map(|f| json!(f))
            .boxed()
    } else if types.iter().any(|t| t == "boolean") {
        any::<bool>().prop_map(Value::Bool).boxed()
    } else if types.iter().any(|t| t == "array") && depth < 2 {
        let item = value_for(&schema["items"], defs, depth + 1);
        prop::collection::vec(item, 0..4)
            .prop_map(Value::Array)
            .boxed()
    } else if types.iter().any(|t| t == "object") && depth < 2 && schema.get("properties").is_some()
    {
        object_for(schema, defs, depth + 1)
    } else {
        json_value().boxed()
    };
    prop_oneof![8 => shaped, 1 => json_value()].boxed()
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => &defs[name],
        None => schema,
    }
}

/// An object with some of the schema's properties (required ones usually
/// present), sometimes one unknown field.
fn object_for(schema: &Value, defs: &Value, depth: u32) -> BoxedStrategy<Value> {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let fields: Vec<(String, BoxedStrategy<Value>, bool)> = schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| (k.clone(), value_for(v, defs, depth), required.contains(k)))
                .collect()
        })
        .unwrap_or_default();
    let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, strat, req)| {
            let keep = if req { 0.95 } else { 0.4 };
            prop::option::weighted(keep, strat)
                .prop_map(move |v| v.map(|v| (k.clone(), v)))
                .boxed()
        })
        .collect();
    (
        parts,
        prop::option::weighted(0.05, ("[a-z]{1,8}", json_value())),
    )
        .prop_map(|(pairs, extra)| {
            let mut m: Map<String, Value> = pairs.into_iter().flatten().collect();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

#[test]
fn operation_arguments() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mem = rt.block_on(async {
        let mem = Mem::open("fuzz", |c| {
            c.tools = "all".into();
            c.durability = Durability::Normal;
            c.rate_limit_per_second = 0;
        })
        .await;
        // Something to find, so reads reach their paging and snippet code.
        for (op, args) in [
            (
                "episodic_remember",
                json!({"content": "alpha beta gamma", "tags": ["x"]}),
            ),
            (
                "semantic_store",
                json!({"content": "alpha delta", "tags": ["x"]}),
            ),
            (
                "create_entities",
                json!({"entities": [{"name": "alpha", "entityType": "t", "observations": ["beta"]},
                                     {"name": "beta", "entityType": "t", "observations": []}]}),
            ),
            (
                "create_relations",
                json!({"relations": [{"from": "alpha", "to": "beta", "relationType": "r"}]}),
            ),
        ] {
            mem.call(op, args).await.unwrap();
        }
        mem
    });
    let ops: Vec<(&'static str, Value)> = registry()
        .entries()
        .iter()
        .map(|e| (e.name, (e.input_schema)()))
        .collect();
    let strategy =
        prop::sample::select((0..ops.len()).collect::<Vec<_>>()).prop_flat_map(move |i| {
            let (name, schema) = ops[i].clone();
            let defs = schema["$defs"].clone();
            (Just(name), object_for(&schema, &defs, 0))
        });
    let mut runner = TestRunner::new(RunConfig {
        cases: cases(3_000),
        failure_persistence: None,
        ..RunConfig::default()
    });
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let refused = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(op, args)| {
            let result = rt.block_on(mem.call_typed(op, args.clone()));
            match result {
                Ok(_) => {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(OpError::Internal(e)) => {
                    return Err(TestCaseError::fail(format!(
                        "{op} {args}: internal error: {e}"
                    )));
                }
                Err(e) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let text = e.to_string();
                    prop_assert!(text.len() < 4_000, "{op}: a {} byte error", text.len());
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzzed operations: {} answered, {} refused",
        answered.into_inner(),
        refused.into_inner()
    );
    let health = rt.block_on(mem.call("meta_health", json!({}))).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    rt.block_on(async { tokio::task::spawn_blocking(move || mem.shutdown()).await })
        .unwrap();
}

proptest! {
    #![proptest_config(RunConfig { cases: cases(2_000), failure_persistence: None, ..RunConfig::default() })]

    #[test]
    fn time_specs_never_panic(
        s in "\\PC{0,40}",
        n in any::<i64>(),
        unit in prop_oneof![
            prop::sample::select(vec!["s", "m", "h", "d", "w", "weeks"]).prop_map(String::from),
            "[a-z]{0,8}",
        ],
        ago in any::<bool>(),
    ) {
        let _ = TimeSpec::parse(&s);
        let rel = format!("{n}{unit}{}", if ago { " ago" } else { "" });
        if let Ok(t) = TimeSpec::parse(&rel) {
            let year = chrono::Datelike::year(&t.0);
            prop_assert!((-9999..=9999).contains(&year), "{rel} → {year}");
        }
    }

    #[test]
    fn boolean_queries_never_panic(s in "[a-z()\" :\\-]{0,60}|\\PC{0,60}") {
        let _ = engram::search::parse_boolean(&s);
    }

    #[test]
    fn framing_never_panics_and_drops_only_what_has_no_id(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        match jsonrpc::read(&bytes) {
            Incoming::Message(_) => {}
            Incoming::Reply(v) => prop_assert!(v["error"]["code"].is_i64()),
            // Only a notification or a response (no `id` + `method`) may go unanswered.
            Incoming::Drop(_) => {
                let v: Value = serde_json::from_slice(&bytes).expect("dropped messages are JSON");
                prop_assert!(v.get("id").is_none() || v.get("method").is_none(), "{}", v);
            }
        }
    }

    #[test]
    fn requests_with_an_id_are_answered_with_it(id in any::<i64>(), method in "[a-z/]{1,20}", params in json_value()) {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        match jsonrpc::read(msg.to_string().as_bytes()) {
            Incoming::Message(_) => {}
            Incoming::Reply(v) => prop_assert_eq!(&v["id"], &json!(id)),
            Incoming::Drop(why) => prop_assert!(false, "a request was dropped: {}", why),
        }
    }
}

/// Inputs a fuzz run found, kept as regressions.
#[test]
fn regressions() {
    for s in [
        "20000000000000d",
        "9223372036854775807s",
        "10000000000000000s",
    ] {
        assert!(TimeSpec::parse(s).is_err(), "{s}");
    }
}
