//! Generated data and workloads, shared by the load harness and the root crate's
//! criterion benches: one seeded RNG, one word list, a Zipf vocabulary, batches of
//! records, and the mixed workload's next call. Plain data in, JSON arguments out:
//! nothing here knows how a call reaches the server (MCP client or in process).

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

/// xorshift64*: a seeded generator is all a workload needs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` words of `WORDS`, space-separated.
    pub fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The words generated texts are made of: an operator's vocabulary, so searches
/// match often and rank.
pub const WORDS: &[&str] = &[
    "deploy",
    "staging",
    "postgres",
    "redis",
    "cache",
    "latency",
    "customer",
    "invoice",
    "billing",
    "search",
    "index",
    "migration",
    "rollback",
    "incident",
    "alert",
    "kafka",
    "schema",
    "backup",
    "token",
    "session",
    "timeout",
    "retry",
    "queue",
    "worker",
    "cluster",
    "node",
    "memory",
    "leak",
    "profile",
    "release",
    "feature",
    "flag",
    "review",
    "design",
    "meeting",
    "budget",
    "roadmap",
    "kernel",
    "network",
    "certificate",
    "password",
    "dashboard",
    "replica",
    "failover",
    "quota",
    "tenant",
    "webhook",
    "scheduler",
    "pipeline",
    "artifact",
];

/// Records per batch call when loading data.
pub const LOAD_BATCH: usize = 1000;

/// Words in a generated event or fact.
pub const WORDS_PER_RECORD: usize = 12;

/// The sizes of the batches that load `total` records, `LOAD_BATCH` at a time.
pub fn batch_sizes(total: usize) -> impl Iterator<Item = usize> {
    (0..total)
        .step_by(LOAD_BATCH)
        .map(move |start| LOAD_BATCH.min(total - start))
}

/// `n` records of `WORDS_PER_RECORD` random words each (`{"content": ...}`), the
/// shape both `events` and `facts` batches take.
pub fn records(rng: &mut Rng, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| json!({ "content": rng.words(WORDS_PER_RECORD) }))
        .collect()
}

/// Entities the workload's graph operations refer to.
pub const GRAPH_ENTITIES: usize = 200;

pub fn entity(i: usize) -> String {
    format!("entity-{i}")
}

/// Samples ranks with probability proportional to 1/rank (Zipf, s = 1).
pub struct Zipf(Vec<f64>);

impl Zipf {
    pub fn new(n: usize) -> Self {
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|r| {
                    acc += 1.0 / r as f64;
                    acc
                })
                .collect(),
        )
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.unit() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|&c| c < x).min(self.0.len() - 1)
    }
}

/// `n` (at most 8000) pronounceable made-up words ("kalomi"), so stemming leaves
/// them alone.
pub fn made_up_words(n: usize) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ren", "tu", "sa", "vo", "ni", "bel", "qua", "dor", "fi", "gra", "hu",
        "jet", "pol", "zan", "cre", "wy", "xo",
    ];
    SYLLABLES
        .iter()
        .flat_map(|a| SYLLABLES.iter().map(move |b| (a, b)))
        .flat_map(|(a, b)| SYLLABLES.iter().map(move |c| format!("{a}{b}{c}")))
        .take(n)
        .collect()
}

/// How a mixed workload splits its calls, in percent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    pub read: u32,
    pub write: u32,
    pub complex: u32,
}

impl Mix {
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let parts: Vec<u32> = s
            .split(['/', ','])
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()
            .context("--mix takes read/write/complex percentages, e.g. 70/20/10")?;
        match parts[..] {
            [read, write, complex] if read + write + complex == 100 => Ok(Mix {
                read,
                write,
                complex,
            }),
            _ => Err(anyhow!(
                "--mix must be three percentages adding up to 100, e.g. 70/20/10"
            )),
        }
    }
}

/// One call of a workload: the operation, its arguments, and its class
/// (`read`, `write` or `complex`).
pub type Call = (&'static str, Value, &'static str);

/// The next call of a mixed workload.
pub fn next_call(rng: &mut Rng, mix: Mix) -> Call {
    let roll = rng.below(100) as u32;
    if roll < mix.read {
        read_call(rng)
    } else if roll < mix.read + mix.write {
        write_call(rng)
    } else {
        complex_call(rng)
    }
}

fn read_call(rng: &mut Rng) -> Call {
    let (op, args) = match rng.below(4) {
        0 => (
            "episodic_recall",
            json!({ "query": rng.words(2), "limit": 10 }),
        ),
        1 => (
            "semantic_search",
            json!({ "query": rng.words(2), "limit": 10 }),
        ),
        2 => (
            "open_nodes",
            json!({ "names": [entity(rng.below(GRAPH_ENTITIES))] }),
        ),
        _ => (
            "search_nodes",
            json!({ "query": rng.words(1), "limit": 10 }),
        ),
    };
    (op, args, "read")
}

fn write_call(rng: &mut Rng) -> Call {
    let (op, args) = match rng.below(3) {
        0 => ("episodic_remember", json!({ "content": rng.words(12) })),
        1 => ("semantic_store", json!({ "content": rng.words(12) })),
        _ => (
            "add_observations",
            json!({ "observations": [{ "entityName": entity(rng.below(GRAPH_ENTITIES)), "contents": [rng.words(6)] }] }),
        ),
    };
    (op, args, "write")
}

fn complex_call(rng: &mut Rng) -> Call {
    let (op, args) = match rng.below(2) {
        0 => (
            "memory_search",
            json!({ "query": rng.words(3), "limit": 50 }),
        ),
        _ => (
            "graph_neighbors",
            json!({ "name": entity(rng.below(GRAPH_ENTITIES)), "depth": 3 }),
        ),
    };
    (op, args, "complex")
}
