//! The named scenarios, one file each, listed in one table (`ALL`). Each drives
//! the real `engram` binary the way hosts do and returns its results as JSON;
//! `--quick` shrinks every size and duration so all of them run in seconds (the
//! CI smoke test), asserting nothing about speed.

mod cache;
mod cluster;
mod crashloop;
mod discovery;
mod edge;
mod ladder;
mod memory;
mod peer;
mod recall;
mod recovery;
mod reference;
mod workflows;
mod writes;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::anyhow;
use serde_json::Value;

use crate::workload::Mix;

type Run = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = anyhow::Result<Value>> + 'a>>;

/// One named scenario: what it measures and how it runs.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    run: Run,
}

/// The table entry of each scenario module: its name is the module's, its
/// description the module's `ABOUT`, and it runs the module's `run`.
macro_rules! scenarios {
    ($($module:ident),* $(,)?) => {
        &[$(Scenario {
            name: stringify!($module),
            about: $module::ABOUT,
            run: |cx| Box::pin($module::run(cx)),
        }),*]
    };
}

/// Every scenario, in the order `run all` takes them.
pub const ALL: &[Scenario] = scenarios![
    ladder, edge, workflows, discovery, writes, recovery, memory, cache, recall, reference, peer,
    crashloop, cluster,
];

/// The names of every scenario, in `ALL`'s order.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|s| s.name)
}

/// What every scenario gets.
pub struct Ctx {
    pub engram: PathBuf,
    pub quick: bool,
    pub work: PathBuf,
    pub opts: Opts,
}

/// Overrides from the command line; `None` takes the scenario's default (or its
/// quick default). Recorded in every result file as `options`; read only by the
/// scenarios.
#[derive(Debug, Default, Clone, serde::Serialize, clap::Args)]
pub struct Opts {
    /// Sessions per rung (ladder, writes) or entity counts (reference), comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    sessions: Option<Vec<usize>>,
    /// Seconds per rung (ladder, writes) or soak length (memory).
    #[arg(long)]
    seconds: Option<f64>,
    /// Records to preload (ladder, workflows, cache) or load (recovery, memory).
    #[arg(long)]
    records: Option<usize>,
    /// read/write/complex percentages of the mixed workload.
    #[arg(long, value_name = "R/W/C")]
    mix: Option<String>,
    /// Open loop: total calls per second across sessions (default: closed loop).
    #[arg(long, value_name = "CALLS_PER_S")]
    rate: Option<f64>,
    /// Calls per measured operation (workflows, discovery, cache, reference),
    /// batches (writes) or rounds (crashloop).
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Ladder: end each rung after this many calls in all (or at --seconds, whichever first).
    #[arg(long)]
    ops: Option<u64>,
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// The reference server's dist/index.js [default: npm install into the work dir].
    #[arg(long, value_name = "INDEX_JS")]
    reference: Option<PathBuf>,
    /// The memory-mcp-rs binary (peer) [default: cargo install into the work dir].
    #[arg(long, value_name = "BINARY")]
    peer: Option<PathBuf>,
}

impl Ctx {
    fn pick<T: Clone>(&self, given: &Option<T>, full: T, quick: T) -> T {
        given
            .clone()
            .unwrap_or(if self.quick { quick } else { full })
    }

    /// A fresh data dir for `name` under the work dir.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mix(&self) -> anyhow::Result<Mix> {
        Mix::parse(self.opts.mix.as_deref().unwrap_or("70/20/10"))
    }
}

/// Runs the scenario called `name`.
pub async fn run(name: &str, cx: &Ctx) -> anyhow::Result<Value> {
    let Some(scenario) = ALL.iter().find(|s| s.name == name) else {
        let all: Vec<&str> = names().collect();
        return Err(anyhow!(
            "no scenario {name:?}: choose from {}",
            all.join(", ")
        ));
    };
    (scenario.run)(cx).await
}
