//! What calls cost: the outcome of one call, latency histograms (HdrHistogram,
//! microseconds) and a recorder keeping one per operation and per class, with
//! failures counted by kind. Summaries are JSON in milliseconds. Used by the
//! harness and by the root crate's in-process benches alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// How one call ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(Value),
    /// The server answered with a tool error (isError).
    ToolError(String),
    /// The transport or protocol failed.
    Transport(String),
    Timeout,
}

impl Outcome {
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::ToolError(_) => Some("tool_error"),
            Outcome::Transport(_) => Some("transport"),
            Outcome::Timeout => Some("timeout"),
        }
    }

    pub fn value(self) -> anyhow::Result<Value> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::ToolError(e) => Err(anyhow!("tool error: {e}")),
            Outcome::Transport(e) => Err(anyhow!("transport: {e}")),
            Outcome::Timeout => Err(anyhow!("timed out")),
        }
    }

    /// A whole workflow's outcome: failed if any of its steps failed.
    pub fn all_steps(ok: bool) -> Outcome {
        if ok {
            Outcome::Ok(Value::Null)
        } else {
            Outcome::ToolError("a step failed".into())
        }
    }
}

/// A histogram of microseconds, from 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Records the time since `started` in `h`, in microseconds (at least 1).
pub fn record_since(h: &mut Histogram<u64>, started: Instant) {
    let _ = h.record(micros(started.elapsed()));
}

fn micros(elapsed: Duration) -> u64 {
    elapsed.as_micros().max(1) as u64
}

/// Latency percentiles of a histogram of microseconds, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// Latencies per operation and per class, and failures by kind.
#[derive(Default)]
pub struct Recorder {
    pub ops: BTreeMap<String, Histogram<u64>>,
    pub classes: BTreeMap<&'static str, Histogram<u64>>,
    pub failures: BTreeMap<&'static str, u64>,
    /// The first message of each failure kind, to say what went wrong.
    pub examples: BTreeMap<&'static str, String>,
    pub ok: u64,
}

impl Recorder {
    pub fn record(&mut self, op: &str, class: &'static str, elapsed: Duration, outcome: &Outcome) {
        let us = micros(elapsed);
        match outcome.kind() {
            None => {
                self.ok += 1;
                let by_op = self.ops.entry(op.to_string()).or_insert_with(histogram);
                let _ = by_op.record(us);
                let _ = self
                    .classes
                    .entry(class)
                    .or_insert_with(histogram)
                    .record(us);
            }
            Some(kind) => {
                *self.failures.entry(kind).or_default() += 1;
                if let Outcome::ToolError(m) | Outcome::Transport(m) = outcome {
                    self.examples
                        .entry(kind)
                        .or_insert_with(|| m.chars().take(200).collect());
                }
            }
        }
    }

    /// Counts `n` failures of `kind` that never became a call (e.g. `connect`).
    pub fn add_failures(&mut self, kind: &'static str, n: usize) {
        if n > 0 {
            *self.failures.entry(kind).or_default() += n as u64;
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        for (k, h) in other.ops {
            let _ = self.ops.entry(k).or_insert_with(histogram).add(h);
        }
        for (k, h) in other.classes {
            let _ = self.classes.entry(k).or_insert_with(histogram).add(h);
        }
        for (k, n) in other.failures {
            *self.failures.entry(k).or_default() += n;
        }
        for (k, m) in other.examples {
            self.examples.entry(k).or_insert(m);
        }
        self.ok += other.ok;
    }

    /// One recorder holding all of `recorders`.
    pub fn merged(recorders: impl IntoIterator<Item = Recorder>) -> Recorder {
        let mut all = Recorder::default();
        for r in recorders {
            all.merge(r);
        }
        all
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn to_json(&self, seconds: f64) -> Value {
        let total = self.ok + self.failed();
        json!({
            "calls": total,
            "ok": self.ok,
            "failed": self.failed(),
            "failure_rate": if total == 0 { 0.0 } else { self.failed() as f64 / total as f64 },
            "failures": self.failures,
            "failure_examples": self.examples,
            "seconds": seconds,
            "throughput_per_s": if seconds > 0.0 { self.ok as f64 / seconds } else { 0.0 },
            "classes": self.classes.iter().map(|(k, h)| (k.to_string(), summary(h))).collect::<BTreeMap<_, _>>(),
            "operations": self.ops.iter().map(|(k, h)| (k.clone(), summary(h))).collect::<BTreeMap<_, _>>(),
        })
    }
}
