//! The report's first table: every figure the plan sets a target for, measured,
//! met or missed, and by what margin.

use super::{Page, Results, f};

/// One row of the targets table.
struct Target {
    what: &'static str,
    goal: &'static str,
    measured: Option<f64>,
    unit: &'static str,
    /// The target's number, and whether the figure must stay below it.
    limit: f64,
    below: bool,
    source: &'static str,
}

impl Target {
    /// A figure that must stay below `limit`.
    fn below(what: &'static str, goal: &'static str, limit: f64, unit: &'static str) -> Target {
        Target {
            what,
            goal,
            measured: None,
            unit,
            limit,
            below: true,
            source: "",
        }
    }

    /// A figure that must reach `limit`.
    fn above(what: &'static str, goal: &'static str, limit: f64, unit: &'static str) -> Target {
        Target {
            below: false,
            ..Target::below(what, goal, limit, unit)
        }
    }

    /// The figure, as the scenario `source` measured it.
    fn from(self, source: &'static str, measured: Option<f64>) -> Target {
        Target {
            source,
            measured,
            ..self
        }
    }

    fn ok(&self, x: f64) -> bool {
        if self.below {
            x < self.limit
        } else {
            x >= self.limit
        }
    }

    /// How far past (> 1) or short of (< 1) the target a figure is.
    fn margin(&self, x: f64) -> f64 {
        if self.below {
            self.limit / x.max(f64::EPSILON)
        } else {
            x / self.limit
        }
    }

    /// The measured, verdict and margin cells; `quick` results get no verdict.
    fn cells(&self, quick: bool) -> [String; 3] {
        let Some(x) = self.measured else {
            return ["not measured".into(), "-".into(), "-".into()];
        };
        let verdict = if quick {
            "quick sizes only"
        } else if self.ok(x) {
            "met"
        } else {
            "**missed**"
        };
        let margin = match self.margin(x) {
            _ if self.below && x <= 0.0 => "none to compare".to_string(),
            m if m < 0.1 => format!("{m:.3}x"),
            m => format!("{m:.1}x"),
        };
        [format!("{x:.3} {}", self.unit), verdict.to_string(), margin]
    }
}

/// Every target with its figure from the results.
fn targets(r: &Results) -> Vec<Target> {
    let figure =
        |scenario: &str, pointer: &str| r.get(scenario).and_then(|d| f(d.pointer(pointer)?));
    let rungs = r
        .get("ladder")
        .and_then(|l| l["results"]["rungs"].as_array().cloned())
        .unwrap_or_default();
    let failure_pct = |n: u64| {
        let rung = rungs.iter().find(|x| x["sessions"].as_u64() == Some(n))?;
        f(&rung["failure_rate"]).map(|x| x * 100.0)
    };
    let class_p95 = |c: &str| f(&rungs.first()?["classes"][c]["p95_ms"]);
    let first_rung = |field: &str| f(&rungs.first()?[field]);
    let best_write = r.get("writes").and_then(|w| {
        w["results"]["rows"]
            .as_array()?
            .iter()
            .filter(|x| x.get("batch").is_none())
            .filter_map(|x| f(&x["throughput_per_s"]))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))
    });
    let readonly_slope = r
        .readonly_memory()
        .and_then(|d| f(&d["results"]["rss_slope_mb_per_hour"]));
    let slope = "/results/rss_slope_mb_per_hour";
    vec![
        Target::below("read p95 (ladder, first rung)", "< 100 ms", 100.0, "ms")
            .from("ladder", class_p95("read")),
        Target::below("write p95 (ladder, first rung)", "< 300 ms", 300.0, "ms")
            .from("ladder", class_p95("write")),
        Target::below("complex p95 (ladder, first rung)", "< 1 s", 1000.0, "ms")
            .from("ladder", class_p95("complex")),
        Target::above(
            "throughput (ladder, first rung)",
            ">= 5,000 calls/s",
            5_000.0,
            "calls/s",
        )
        .from("ladder", first_rung("throughput_per_s")),
        Target::below(
            "server CPU per mixed call (ladder, first rung)",
            "<= 0.3 ms",
            0.3,
            "ms",
        )
        .from("ladder", first_rung("server_cpu_ms_per_call")),
        Target::below("discovery (name) p95", "< 100 ms", 100.0, "ms").from(
            "discovery",
            figure("discovery", "/results/discover_tools_name/latency/p95_ms"),
        ),
        Target::below("failures at 1000 sessions", "< 5 %", 5.0, "%")
            .from("ladder", failure_pct(1000)),
        Target::below("failures at 5000 sessions", "< 10 %", 10.0, "%")
            .from("ladder", failure_pct(5000)),
        Target::above(
            "write throughput (one write per call)",
            "> 10,000 ops/s",
            10_000.0,
            "ops/s",
        )
        .from("writes", best_write),
        Target::below(
            "recovery, start to first search",
            "< 5 s for 100k",
            5.0,
            "s",
        )
        .from(
            "recovery",
            figure("recovery", "/results/start_to_first_search_s"),
        ),
        Target::below(
            "RSS with the records loaded",
            "< 100 MB for 1M",
            100.0,
            "MB",
        )
        .from("memory", figure("memory", "/results/loaded_rss_mb")),
        Target::below(
            "RSS slope, soak with 20 % writes (data grows)",
            "< 1 MB/hour",
            1.0,
            "MB/h",
        )
        .from("memory", figure("memory", slope)),
        Target::below("RSS slope, read-only soak", "< 1 MB/hour", 1.0, "MB/h")
            .from("memory", readonly_slope),
        Target::above("repeated-query cache speed-up", ">= 5x", 5.0, "x")
            .from("cache", figure("cache", "/results/speedup")),
    ]
}

pub(super) fn section(page: &mut Page) {
    let targets = targets(&page.results);
    page.line("## Against the plan's targets\n");
    page.header(&[
        "figure", "target", "measured", "verdict", "margin", "scenario",
    ]);
    for t in &targets {
        let doc = page.results.get(t.source);
        let quick = doc.is_some_and(|d| d["quick"].as_bool() == Some(true));
        let [m, verdict, margin] = t.cells(quick);
        page.row(&[
            t.what,
            t.goal,
            m.as_str(),
            verdict.as_str(),
            margin.as_str(),
            t.source,
        ]);
    }
    page.line(
        "\nMargin: how many times better than the target a figure is (below 1.0x: short of it). The rung \
         targets use the sizes in the scenario's file; each section below says which sizes ran.\n",
    );
}
