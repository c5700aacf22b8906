//! Renders PHASE4_PERFORMANCE_REPORT.md from the JSON results: the machine,
//! every figure against the plan's targets, a section per scenario, SVG plots
//! (latency vs concurrency, latency vs data size, engram vs the reference), and
//! the command that produced each file. A scenario without results is listed
//! as not run; a failed run shows its error. Nothing is rounded away: tables show
//! three decimals of milliseconds, and failures are counted, not hidden.
//!
//! One function per section (`sections.rs`, `targets.rs`), all writing to one
//! `Page` through its table helpers. Reads only the results; runs nothing.

mod sections;
mod targets;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Writes the report to `out_path` and its plots into `plots`, from the
/// results in `results`.
pub fn render(results: &Path, out_path: &Path, plots: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(plots).with_context(|| format!("cannot create {}", plots.display()))?;
    let mut page = Page {
        out: String::new(),
        results: Results {
            dir: results.to_path_buf(),
        },
        out_path,
        plots,
    };
    sections::intro(&mut page);
    targets::section(&mut page);
    sections::ladder(&mut page)?;
    sections::edge(&mut page);
    sections::workflows(&mut page);
    sections::discovery(&mut page);
    sections::writes(&mut page);
    sections::cluster(&mut page);
    sections::recovery(&mut page);
    sections::memory(&mut page);
    sections::cache(&mut page);
    sections::recall(&mut page);
    sections::reference(&mut page)?;
    sections::peer(&mut page);
    sections::semantic(&mut page)?;
    sections::layers(&mut page);
    sections::reproduce(&mut page);
    std::fs::write(out_path, page.out)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    Ok(())
}

/// Where the results are.
struct Results {
    dir: PathBuf,
}

impl Results {
    /// The full-size result of a scenario, else the quick one (flagged).
    fn get(&self, scenario: &str) -> Option<Value> {
        for sub in ["", "quick"] {
            let p = self.dir.join(sub).join(format!("{scenario}.json"));
            if let Ok(text) = std::fs::read_to_string(&p)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                return Some(v);
            }
        }
        None
    }

    /// The read-only soak, if one was run (`run memory --mix 100/0/0 --out
    /// <results>/readonly`): it separates leaks from the growth of data a
    /// writing soak adds.
    fn readonly_memory(&self) -> Option<Value> {
        Results {
            dir: self.dir.join("readonly"),
        }
        .get("memory")
    }

    /// The runs of `cargo bench --bench semantic` (`semantic-*.json`).
    fn semantic(&self) -> Option<Value> {
        self.bench_runs("semantic-", "facts")
    }

    /// The runs of `cargo bench --bench memory` (`memory-*.json`).
    fn layers(&self) -> Option<Value> {
        self.bench_runs("memory-", "records")
    }

    /// Every run of the in-process bench whose files start with `prefix`, one
    /// per size (`size` names it; a later file's run of a size replaces an
    /// earlier one), smallest first, with the commands that produced them.
    fn bench_runs(&self, prefix: &str, size: &str) -> Option<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        let mut runs = Vec::new();
        let mut command = Vec::new();
        for f in files {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).ok()?).ok()?;
            command.push(v["command"].as_str().unwrap_or("").to_string());
            for r in v["runs"].as_array().into_iter().flatten() {
                runs.retain(|x: &Value| x[size] != r[size]);
                runs.push(r.clone());
            }
        }
        runs.sort_by_key(|r| r[size].as_u64());
        (!runs.is_empty()).then(|| serde_json::json!({ "runs": runs, "commands": command }))
    }
}

/// The report being written, and where its plots go.
struct Page<'a> {
    out: String,
    results: Results,
    out_path: &'a Path,
    plots: &'a Path,
}

impl Page<'_> {
    /// Appends `text` and a newline.
    fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{text}");
    }

    /// A table's header row and its separator.
    fn header(&mut self, columns: &[&str]) {
        self.row(columns);
        self.out.push('|');
        for _ in columns {
            self.out.push_str("---|");
        }
        self.out.push('\n');
    }

    /// One table row; an empty cell is left blank.
    fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        self.out.push('|');
        for cell in cells {
            match cell.as_ref() {
                "" => self.out.push_str(" |"),
                c => {
                    let _ = write!(self.out, " {c} |");
                }
            }
        }
        self.out.push('\n');
    }

    /// Opens the section `title` on the results of `scenario`: what ran (from
    /// `about`, given the results), where it came from, and the header of its
    /// table (if it has `columns`). Returns the results, or says the scenario
    /// was not run and gives nothing to write.
    fn section(
        &mut self,
        title: &str,
        scenario: &str,
        about: impl FnOnce(&Value) -> Option<String>,
        columns: &[&str],
    ) -> Option<Value> {
        self.line(format_args!("## {title}\n"));
        let Some(mut doc) = self.results.get(scenario) else {
            self.not_run(scenario);
            return None;
        };
        if let Some(text) = about(&doc["results"]) {
            self.line(text);
        }
        self.provenance(&doc);
        if !columns.is_empty() {
            self.header(columns);
        }
        Some(doc["results"].take())
    }

    /// The line a section shows when its scenario has no results.
    fn not_run(&mut self, scenario: &str) {
        self.line(format_args!("Not run (`engram-bench run {scenario}`).\n"));
    }

    /// Where a result came from: commit, time, duration, command line, and its
    /// error if it failed.
    fn provenance(&mut self, doc: &Value) {
        let quick = if doc["quick"].as_bool() == Some(true) {
            " **Quick (smoke-test) sizes: not representative.**"
        } else {
            ""
        };
        self.line(format_args!(
            "Commit `{}`, {}, {:.0} s.{quick}\n\n```\n{}\n```\n",
            doc["commit"].as_str().unwrap_or("unknown"),
            doc["started_at"].as_str().unwrap_or("?"),
            doc["seconds"].as_f64().unwrap_or(0.0),
            doc["command"].as_str().unwrap_or("?")
        ));
        if let Some(e) = doc["error"].as_str() {
            self.line(format_args!("**This run failed:** {e}\n"));
        }
    }

    /// Writes the plot `file` and links it from the report.
    fn plot(&mut self, file: &str, alt: &str, svg: String) -> anyhow::Result<()> {
        std::fs::write(self.plots.join(file), svg)?;
        let base = self.out_path.parent().unwrap_or(Path::new("."));
        let p = self.plots.join(file);
        let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
        self.line(format_args!("\n![{alt}]({rel})\n"));
        Ok(())
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Milliseconds (or seconds) with three decimals.
fn ms(v: &Value) -> String {
    f(v).map_or("-".into(), |x| format!("{x:.3}"))
}

/// A fraction as a percentage.
fn pct(v: &Value) -> String {
    f(v).map_or("-".into(), |x| format!("{:.2} %", x * 100.0))
}

/// A whole number.
fn n0(v: &Value) -> String {
    f(v).map_or("-".into(), |x| format!("{x:.0}"))
}

/// Two decimals.
fn n2(v: &Value) -> String {
    f(v).map_or("-".into(), |x| format!("{x:.2}"))
}

/// p50 / p95 / p99.9 of a latency summary.
fn p50_p95_p999(x: &Value) -> String {
    format!(
        "{} / {} / {}",
        ms(&x["p50_ms"]),
        ms(&x["p95_ms"]),
        ms(&x["p999_ms"])
    )
}
