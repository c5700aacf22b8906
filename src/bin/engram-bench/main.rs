//! engram-bench: the load harness. It drives the real `engram` binary the way
//! hosts do (stdio, or many Streamable HTTP sessions, each a real MCP session),
//! runs the named scenarios, writes one JSON file of results per scenario (with
//! the machine, the commit and the command line), and renders
//! PHASE4_PERFORMANCE_REPORT.md from those files.
//!
//!   engram-bench run ladder                 # one scenario, full size
//!   engram-bench run all --quick            # every scenario in seconds (CI smoke)
//!   engram-bench report                     # tables + SVG plots from bench-results/
//!
//! Progress goes to stderr. Nothing here asserts a speed.

mod driver;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "engram-bench",
    version,
    about = "Load harness and report for engram"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (or `all`) and write its results as JSON.
    Run {
        /// ladder, workflows, discovery, writes, recovery, memory, cache, reference, or all.
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
        /// Sessions per rung (ladder, writes) or entity counts (reference), comma-separated.
        #[arg(long, value_delimiter = ',')]
        sessions: Option<Vec<usize>>,
        /// Seconds per rung (ladder, writes) or soak length (memory).
        #[arg(long)]
        seconds: Option<f64>,
        /// Records to preload (ladder, workflows, cache) or load (recovery, memory).
        #[arg(long)]
        records: Option<usize>,
        /// read/write/complex percentages of the mixed workload.
        #[arg(long)]
        mix: Option<String>,
        /// Open loop: total calls per second across sessions (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Calls per measured operation (workflows, discovery, cache, reference) or batches (writes).
        #[arg(long)]
        samples: Option<usize>,
        /// Ladder: end each rung after this many calls in all (or at --seconds, whichever first).
        #[arg(long)]
        ops: Option<u64>,
        #[arg(long, default_value_t = 0x5EED)]
        seed: u64,
        /// The reference server's dist/index.js [default: npm install into the work dir].
        #[arg(long)]
        reference: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("engram-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scenarios => {
            for (name, what) in scenarios::ALL {
                println!("{name:<10} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            results,
            out,
            plots,
        } => {
            report::render(&results, &out, &plots)?;
            eprintln!(
                "engram-bench: wrote {} and plots in {}",
                out.display(),
                plots.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            scenario,
            quick,
            engram,
            out,
            work,
            sessions,
            seconds,
            records,
            mix,
            rate,
            samples,
            ops,
            seed,
            reference,
        } => {
            let engram = engram.unwrap_or_else(driver::default_engram);
            anyhow::ensure!(
                engram.exists(),
                "no engram binary at {} (build it, or pass --engram PATH)",
                engram.display()
            );
            let temp = tempfile::tempdir()?;
            let work = work.unwrap_or_else(|| temp.path().to_path_buf());
            std::fs::create_dir_all(&work)?;
            let names: Vec<&str> = if scenario == "all" {
                scenarios::ALL.iter().map(|(n, _)| *n).collect()
            } else {
                vec![scenario.as_str()]
            };
            let cx = scenarios::Ctx {
                engram,
                quick,
                work,
                opts: scenarios::Opts {
                    sessions,
                    seconds,
                    records,
                    mix,
                    rate,
                    samples,
                    ops,
                    seed,
                    reference,
                },
            };
            let dir = if quick { out.join("quick") } else { out };
            std::fs::create_dir_all(&dir)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let mut failed = Vec::new();
            for name in names {
                driver::progress(format!(
                    "running {name}{}",
                    if quick { " (quick)" } else { "" }
                ));
                let started = std::time::Instant::now();
                let result = rt.block_on(scenarios::run(name, &cx));
                let doc = json!({
                    "scenario": name,
                    "quick": quick,
                    "machine": driver::machine(),
                    "commit": driver::commit(),
                    "command": std::env::args().collect::<Vec<_>>().join(" "),
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
                    Ok(_) => driver::progress(format!(
                        "{name}: done in {:.1} s -> {}",
                        started.elapsed().as_secs_f64(),
                        path.display()
                    )),
                    Err(e) => {
                        driver::progress(format!("{name}: FAILED: {e:#}"));
                        failed.push(name);
                    }
                }
            }
            if failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("engram-bench: failed scenarios: {}", failed.join(", "));
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
