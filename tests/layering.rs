//! The modules keep their layering: leaves (model, config, errors, the
//! resilience pieces) → backends (store, then search and graph, then `app`,
//! which holds them behind their breakers) → operations → the pipeline that
//! dispatches them → the MCP server → the command line. A module may name only
//! modules of its own rank or below; test code inside a file is not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its rank: lower ranks never name higher ones.
const RANKS: &[(&str, u32)] = &[
    ("model", 0),
    ("config", 0),
    ("error", 0),
    ("heap", 0),
    ("metrics", 1),
    ("timespec", 1),
    ("resilience", 1),
    ("catalog", 1),
    ("auth", 1),
    ("session", 2),
    ("store", 3),
    ("search", 4),
    ("graph", 4),
    ("app", 5),
    ("ops", 6),
    ("interop", 6),
    ("pipeline", 7),
    ("server", 8),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The Rust files under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's non-test code names as `crate::<module>`.
fn named_modules(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        assert!(
            !rest.starts_with('{'),
            "write one `crate::<module>::…` path per module (the layering test reads them): {}",
            rest.lines().next().unwrap_or_default()
        );
        let module: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !module.is_empty() && !named.contains(&module) {
            named.push(module);
        }
    }
    named
}

#[test]
fn no_module_names_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = BTreeMap::new();
    let mut ranked_files = 0;
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
            .expect("a file name");
        // main.rs and lib.rs sit on top; the load harness is its own program.
        let Some(own) = rank(&top) else { continue };
        ranked_files += 1;
        let text = std::fs::read_to_string(&file).expect("readable source");
        for module in named_modules(&text) {
            match rank(&module) {
                Some(r) if r > own => {
                    violations.insert(
                        format!("{} names crate::{module}", relative.display()),
                        format!("{top} (rank {own}) may not depend on {module} (rank {r})"),
                    );
                }
                Some(_) => {}
                None => panic!(
                    "{} names crate::{module}, which has no rank: add it to RANKS",
                    relative.display()
                ),
            }
        }
    }
    assert!(ranked_files > 40, "found only {ranked_files} source files");
    assert!(
        violations.is_empty(),
        "the layering is broken:\n{:#?}",
        violations
    );
}

#[test]
fn the_checker_sees_crate_paths_and_skips_test_code() {
    let text = "use crate::store::Store;\nfn f() { crate::app::x(); }\n#[cfg(test)]\nuse crate::server::y;";
    assert_eq!(named_modules(text), vec!["store", "app"]);
}
