//! Finds the operation catalog: every `operations/<layer>.toml`, in the order
//! its `[layer]` table's `position` gives, compiled into the binary. Adding a
//! layer's catalog file is all it takes for the catalog to carry it.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read when the script runs, not when it was compiled: a target dir copied
    // from another checkout must still read this checkout's catalog.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("operations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut layers = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("operations/ exists") {
        let path = entry.expect("operations/ is readable").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("catalog files are UTF-8");
        let position = text
            .lines()
            .find_map(|l| l.strip_prefix("position = "))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{}: [layer] needs `position = N`", path.display()));
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name");
        layers.push((position, name.to_string(), path.display().to_string()));
    }
    layers.sort();
    let mut out = String::from("&[\n");
    for (_, name, path) in &layers {
        writeln!(out, "    ({name:?}, include_str!({path:?})),").expect("write to string");
    }
    out.push(']');
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalog_files.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
