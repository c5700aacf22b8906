//! The README's options table says what the binary does: every flag it lists
//! exists, with the same environment variable and default as `engram serve
//! --help` prints, and every flag an environment variable sets is listed (which come from `engram::config::defaults`, shared with
//! `Config::new`).

use std::process::Command;

/// One row of the README's options table: flag, env var, default.
struct Row {
    flag: String,
    env: String,
    default: String,
}

fn readme_rows() -> Vec<Row> {
    let readme = include_str!("../README.md");
    let table = readme
        .split("## Options")
        .nth(1)
        .expect("the README has an Options section");
    table
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line
                .split(" | ")
                .map(|c| c.trim_matches('|').trim())
                .collect();
            let code = |c: &str| c.trim_matches('`').to_string();
            Row {
                flag: code(cells[0])
                    .split([' ', '`'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                env: code(cells[1]),
                default: code(cells[2]),
            }
        })
        .collect()
}

/// The help text of one option of `engram serve`, with its bracketed facts.
fn help_of<'h>(help: &'h str, flag: &str) -> &'h str {
    let start = help
        .find(&format!("{flag} <"))
        .or_else(|| help.find(&format!("{flag}\n")))
        .unwrap_or_else(|| panic!("`engram serve --help` has no {flag}"));
    let rest = &help[start..];
    let end = rest[1..].find("\n      --").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

#[test]
fn the_readme_options_table_matches_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["serve", "--help"])
        .output()
        .expect("engram runs");
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    let rows = readme_rows();
    assert!(rows.len() >= 10, "found only {} option rows", rows.len());
    // And the other way: every option set by an environment variable is listed.
    let listed: Vec<&str> = rows.iter().map(|r| r.flag.as_str()).collect();
    for option in help.split("\n      --").skip(1) {
        let flag = format!("--{}", option.split([' ', '\n']).next().unwrap_or_default());
        if option.contains("[env: ") {
            assert!(
                listed.contains(&flag.as_str()),
                "the README's options table lacks {flag}"
            );
        }
    }
    for row in rows {
        let text = help_of(&help, &row.flag);
        assert!(
            text.contains(&format!("[env: {}=", row.env)),
            "README says {} is set by {}; --help says: {text}",
            row.flag,
            row.env
        );
        if row.default.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !row.default.contains(' ')
        {
            assert!(
                text.contains(&format!("[default: {}]", row.default)),
                "README says {} defaults to {}; --help says: {text}",
                row.flag,
                row.default
            );
        }
    }
}
