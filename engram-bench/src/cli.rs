//! The command line: `run`, `report`, `scenarios`. Parsed by clap, then run;
//! `run_args` does both for callers in process (the smoke test).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::driver::{self, progress};
use crate::report;
use crate::scenarios::{self, Ctx, Opts};

#[derive(Parser)]
#[command(
    name = "engram-bench",
    version,
    about = "Load harness and report for engram"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a scenario (or `all`) and write its results as JSON.
    Run {
        /// A scenario's name (`engram-bench scenarios` lists them), or all.
        scenario: String,
        /// Small sizes and short durations: every scenario in seconds (a smoke test).
        #[arg(long)]
        quick: bool,
        /// The engram binary to drive [default: the one next to engram-bench].
        #[arg(long)]
        engram: Option<PathBuf>,
        /// Where results go.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Where data dirs go [default: a temporary dir].
        #[arg(long)]
        work: Option<PathBuf>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Render the report (Markdown + SVG plots) from the JSON results.
    Report {
        #[arg(long, default_value = "bench-results")]
        results: PathBuf,
        #[arg(long, default_value = "PHASE4_PERFORMANCE_REPORT.md")]
        out: PathBuf,
        /// Where the SVG plots go (linked from the report).
        #[arg(long, default_value = "docs/bench")]
        plots: PathBuf,
    },
    /// List the scenarios.
    Scenarios,
}

/// Parses `args` (the program name first) and runs the command, recording
/// `args` as its command line.
pub fn run_args<S: AsRef<str>>(args: &[S]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    Cli::try_parse_from(&args)?.run(&args.join(" "))
}

impl Cli {
    /// Runs the command; `command_line` is what the result files record.
    pub fn run(self, command_line: &str) -> anyhow::Result<()> {
        match self.command {
            Command::Scenarios => {
                for s in scenarios::ALL {
                    println!("{:<10} {}", s.name, s.about);
                }
                Ok(())
            }
            Command::Report {
                results,
                out,
                plots,
            } => {
                report::render(&results, &out, &plots)?;
                progress(format!(
                    "wrote {} and plots in {}",
                    out.display(),
                    plots.display()
                ));
                Ok(())
            }
            Command::Run {
                scenario,
                quick,
                engram,
                out,
                work,
                opts,
            } => {
                let engram = engram.unwrap_or_else(driver::default_engram);
                anyhow::ensure!(
                    engram.exists(),
                    "no engram binary at {} (build it with `cargo build`, or pass --engram PATH)",
                    engram.display()
                );
                let temp = tempfile::tempdir()?;
                let work = work.unwrap_or_else(|| temp.path().to_path_buf());
                std::fs::create_dir_all(&work)?;
                let names: Vec<&str> = if scenario == "all" {
                    scenarios::names().collect()
                } else {
                    vec![scenario.as_str()]
                };
                let cx = Ctx {
                    engram,
                    quick,
                    work,
                    opts,
                };
                let dir = if quick { out.join("quick") } else { out };
                run_scenarios(&names, &cx, &dir, command_line)
            }
        }
    }
}

/// Runs each of `names`, writing `<dir>/<name>.json` whether it ran or failed.
fn run_scenarios(names: &[&str], cx: &Ctx, dir: &Path, command_line: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut failed = Vec::new();
    for &name in names {
        progress(format!(
            "running {name}{}",
            if cx.quick { " (quick)" } else { "" }
        ));
        let started = Instant::now();
        let result = rt.block_on(scenarios::run(name, cx));
        let doc = json!({
            "scenario": name,
            "quick": cx.quick,
            "machine": driver::machine(),
            "commit": driver::commit(),
            "command": command_line,
            "started_at": chrono::Utc::now().to_rfc3339(),
            "seconds": started.elapsed().as_secs_f64(),
            "options": &cx.opts,
            "results": result.as_ref().ok(),
            "error": result.as_ref().err().map(|e| format!("{e:#}")),
        });
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        match result {
            Ok(_) => progress(format!(
                "{name}: done in {:.1} s -> {}",
                started.elapsed().as_secs_f64(),
                path.display()
            )),
            Err(e) => {
                progress(format!("{name}: FAILED: {e:#}"));
                failed.push(name);
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "failed scenarios: {}", failed.join(", "));
    Ok(())
}
