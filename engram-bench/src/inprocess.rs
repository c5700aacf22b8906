//! What the root crate's in-process benches (`benches/semantic.rs`,
//! `benches/memory.rs`) share: reading their flags, running each size on one
//! runtime, and writing `bench-results/<bench>-<unix time>.json`, which
//! `engram-bench report` reads.

use serde_json::{Value, json};

/// The value after flag `name`, if given.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Runs `run(size, samples)` for each size of the comma-separated flag
/// `sizes_flag` (default `default_size`) with `--samples` (default
/// `default_samples`), and writes every run's result to `bench-results/`.
pub fn main<F, Fut>(
    bench: &str,
    sizes_flag: &str,
    default_size: &str,
    default_samples: usize,
    run: F,
) where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = arg(&args, sizes_flag)
        .unwrap_or_else(|| default_size.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{sizes_flag} takes numbers"))
        })
        .collect();
    let samples: usize =
        arg(&args, "--samples").map_or(default_samples, |s| s.parse().expect("--samples"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runs: Vec<Value> = sizes
        .iter()
        .map(|&n| {
            eprintln!("{bench} bench: {n}");
            rt.block_on(run(n, samples))
        })
        .collect();
    let out = json!({
        "bench": bench,
        "command": args.join(" "),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "runs": runs,
    });
    std::fs::create_dir_all("bench-results").ok();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = format!("bench-results/{bench}-{secs}.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json"))
        .expect("write results");
    eprintln!("results: {path}");
}
