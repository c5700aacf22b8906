//! The catalog, the handlers and `schemas/` name exactly the same operations,
//! and every entry is well formed.

use std::collections::BTreeSet;

use engram::catalog::catalog;
use engram::ops::registry::{REGENERATE_SCHEMAS, registry, schema_document};

#[test]
fn catalog_handlers_and_schemas_agree() {
    let cat: BTreeSet<String> = catalog()
        .operations
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let handlers: BTreeSet<String> = registry()
        .entries()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    let files: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("schemas/ exists")
        .filter_map(|f| {
            let p = f.ok()?.path();
            (p.extension()? == "json").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    assert_eq!(cat, handlers, "operations/*.toml and the registry differ");
    assert_eq!(
        handlers, files,
        "schemas/ differs from the registry; run: {REGENERATE_SCHEMAS}"
    );
    assert_eq!(
        cat.len(),
        catalog().operations.len(),
        "duplicate names in the catalog"
    );
}

#[test]
fn schemas_are_current() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    for entry in registry().entries() {
        let path = format!("{dir}/{}.json", entry.name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema_document(entry),
            "{path} is stale; run: {REGENERATE_SCHEMAS}"
        );
    }
}

#[test]
fn every_entry_is_well_formed() {
    let layers: BTreeSet<&str> = catalog().layers.iter().map(|l| l.name.as_str()).collect();
    for op in &catalog().operations {
        let n = &op.name;
        assert!(n.len() <= 64, "{n}: longer than 64 characters");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !n.starts_with('_')
                && !n.ends_with('_'),
            "{n}: not snake_case"
        );
        assert!(layers.contains(op.layer.as_str()), "{n}: unknown layer");
        // Discovery tools, the one cross-layer search, and the reference memory
        // server's tools (names fixed by compatibility) stand outside the rule.
        let compat = op.profiles.iter().any(|p| p == "compat");
        if op.layer != "discovery" && n != "memory_search" && !compat {
            assert!(
                n.starts_with(&format!("{}_", op.layer)),
                "{n}: not named <layer>_<verb>"
            );
        }
        assert!(
            op.summary.len() >= 10 && op.summary.len() <= 120,
            "{n}: summary length"
        );
        assert!(
            op.description.trim().len() >= 40,
            "{n}: description too thin"
        );
        let a = &op.annotations;
        assert!(
            !(a.read_only && a.destructive),
            "{n}: read-only and destructive"
        );
        match op.kind {
            engram::catalog::Kind::Read => assert!(a.read_only, "{n}: a read must be read-only"),
            _ => assert!(!a.read_only, "{n}: a write is not read-only"),
        }
        for p in &op.profiles {
            assert!(p == "core" || p == "compat", "{n}: unknown profile {p}");
        }
        let entry = registry().get(n).expect("handler");
        let input = (entry.input_schema)();
        assert_eq!(
            input["type"], "object",
            "{n}: input schema must be an object"
        );
        let output = (entry.output_schema)();
        assert_eq!(
            output["type"], "object",
            "{n}: output must be an object (lists lose structure otherwise)"
        );
    }
}

#[test]
fn core_profile_stays_small() {
    let core = catalog()
        .operations
        .iter()
        .filter(|o| o.profiles.iter().any(|p| p == "core"))
        .count();
    assert!((3..=16).contains(&core), "core lists {core} tools");
}
