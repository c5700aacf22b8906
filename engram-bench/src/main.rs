//! The `engram-bench` command: parses the command line and hands it to the
//! library (`engram_bench::Cli`).
//!
//!   engram-bench run ladder                 # one scenario, full size
//!   engram-bench run all --quick            # every scenario in seconds (CI smoke)
//!   engram-bench report                     # tables + SVG plots from bench-results/
//!
//! Progress goes to stderr.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = engram_bench::Cli::parse_from(&args);
    match cli.run(&args.join(" ")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engram-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
