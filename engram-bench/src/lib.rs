//! engram-bench: the load harness. It drives the real `engram` binary the way
//! hosts do (stdio, or many Streamable HTTP sessions, each a real MCP session),
//! runs the named scenarios, writes one JSON file of results per scenario (with
//! the machine, the commit and the command line), and renders
//! PHASE4_PERFORMANCE_REPORT.md from those files.
//!
//! A library with a thin binary, so that the smoke test (`tests/bench_quick.rs`
//! in the root crate) runs the harness in process with `run_args`, and the root
//! crate's criterion benches share its workload generators and histograms.
//! It knows engram only as a binary speaking MCP: it does not depend on the
//! `engram` crate. Nothing here asserts a speed.

mod cli;
pub mod driver;
pub mod inprocess;
mod plot;
pub mod postgres;
pub mod rawrpc;
pub mod recorder;
pub mod report;
pub mod scenarios;
pub mod workload;

pub use cli::{Cli, run_args};
