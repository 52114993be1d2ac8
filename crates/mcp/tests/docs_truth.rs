//! The docs agree with the code (in the style of rust-analyzer's tidy tests: plain
//! `#[test]`s that read the files):
//! - every key in `examples/config/*.toml` is a field of the config structs of the
//!   program it configures, and every field they accept is in the example (keys an
//!   example does not set are there as `# key = value` lines);
//! - every `mcp` command README names exists in `mcp --help`;
//! - every figure quoted in README or ARCHITECTURE also appears in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The fields of every `#[serde(deny_unknown_fields)]` struct in `source` (one
/// `name: Type,` per line, as rustfmt writes them).
fn struct_fields(source: &str) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    let mut armed = false;
    let mut inside = false;
    for line in source.lines() {
        let t = line.trim();
        if t.contains("deny_unknown_fields") {
            armed = true;
        } else if armed && t.starts_with("pub struct ") && t.ends_with('{') {
            inside = true;
            armed = false;
        } else if inside && line.starts_with('}') {
            inside = false;
        } else if inside {
            let t = t.strip_prefix("pub ").unwrap_or(t);
            if let Some((name, _)) = t.split_once(':') {
                if is_ident(name) && !t.starts_with("//") && !t.starts_with('#') {
                    fields.insert(name.to_string());
                }
            }
        } else if armed && (t.starts_with("pub enum ") || t.starts_with("enum ")) {
            armed = false;
        }
    }
    fields
}

/// The keys of a TOML example: `key = ...` lines, keys of inline tables, and the
/// first segment of table headers (`[users.kyle]` names `users`; `kyle` is a map
/// key). Commented `# key = ...` and `# [table]` lines count: they document a key the
/// example does not set.
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let mut t = line.trim();
        if let Some(rest) = t.strip_prefix('#') {
            t = rest.trim();
        }
        if let Some(header) = t.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            let name = name.split([']', '.']).next().unwrap_or_default();
            if is_ident(name) {
                keys.insert(name.to_string());
            }
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !is_ident(key) {
            continue;
        }
        keys.insert(key.to_string());
        // Inline tables: `[{ name = "svc", address = "..." }]`.
        if let Some(inner) = value.split_once('{').map(|(_, r)| r) {
            for part in inner.split(',') {
                if let Some((k, _)) = part.split_once('=') {
                    let k = k.trim().trim_start_matches('{').trim();
                    if is_ident(k) {
                        keys.insert(k.to_string());
                    }
                }
            }
        }
    }
    keys
}

#[test]
fn every_example_config_key_is_accepted_and_every_accepted_key_is_in_the_example() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "examples/config/master.toml",
            &["crates/mcp-master/src/config.rs"],
        ),
        (
            "examples/config/agent.toml",
            &[
                "crates/mcp-agent/src/config.rs",
                "crates/mcp-agent/src/acme.rs",
            ],
        ),
        (
            "examples/config/proxy.toml",
            &["crates/mc-proxy/src/config.rs"],
        ),
        ("examples/config/mcp.toml", &["crates/mcp/src/config.rs"]),
    ];
    let mut problems = Vec::new();
    for (example, sources) in cases {
        let fields: BTreeSet<String> = sources
            .iter()
            .flat_map(|s| struct_fields(&read(s)))
            .collect();
        assert!(
            fields.len() > 3,
            "no fields found in {sources:?}: {fields:?}"
        );
        let keys = example_keys(&read(example));
        for key in keys.difference(&fields) {
            problems.push(format!("{example}: `{key}` is no field of {sources:?}"));
        }
        for field in fields.difference(&keys) {
            problems.push(format!(
                "{example}: `{field}` ({sources:?}) is missing (add it, or `# {field} = ...`)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Subcommand names in a clap `--help`'s Commands section.
fn subcommands(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The command words after `mcp` (at most two), skipping options.
fn command_words(after: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut tokens = after.split_whitespace();
    while let Some(token) = tokens.next() {
        let token = token.trim_matches(|c: char| "`,.;:()".contains(c));
        if token == "--config" || token == "--master" {
            tokens.next();
            continue;
        }
        if token.starts_with('-') {
            continue;
        }
        if !token.is_empty() && token.chars().all(|c| c.is_ascii_lowercase()) && words.len() < 2 {
            words.push(token.to_string());
            continue;
        }
        break;
    }
    (!words.is_empty()).then_some(words)
}

/// Every `mcp WORD [WORD]` in README: in backticks, in code blocks, and the words of
/// the "`mcp` CLI: `deploy stop ...`" list.
fn readme_commands(readme: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let mut in_code = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("mcp ") {
            let before = rest[..at].chars().last();
            let after = &rest[at + 4..];
            // `mcp ...` in backticks, or a command in a code block (./target/release/mcp too).
            let starts = match before {
                Some('`') => true,
                Some('/') | Some(' ') | None if in_code => true,
                None => in_code,
                _ => false,
            };
            if starts {
                let end = if in_code {
                    after.len()
                } else {
                    after.find('`').unwrap_or(after.len())
                };
                if let Some(words) = command_words(&after[..end]) {
                    found.insert(words);
                }
            }
            rest = after;
        }
        if let Some(list) = line.split("`mcp` CLI: `").nth(1) {
            let list = list.split('`').next().unwrap_or_default();
            for word in list.split_whitespace() {
                found.insert(vec![word.to_string()]);
            }
        }
    }
    found
}

#[test]
fn every_command_readme_names_exists() {
    let readme = read("README.md");
    let top = subcommands(&[]);
    assert!(top.contains("deploy"), "{top:?}");
    let commands = readme_commands(&readme);
    assert!(commands.len() > 10, "{commands:?}");
    let mut problems = Vec::new();
    for words in &commands {
        let first = &words[0];
        if !top.contains(first) {
            // A word after `mcp` that is no command at all (prose) is skipped only if
            // it is not in backticks as a command: every found word must exist.
            problems.push(format!(
                "README names `mcp {}`, not in `mcp --help`",
                words.join(" ")
            ));
            continue;
        }
        if let Some(second) = words.get(1) {
            let subs = subcommands(&[first]);
            if !subs.is_empty() && !subs.contains(second) {
                problems.push(format!(
                    "README names `mcp {first} {second}`, not in `mcp {first} --help`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Measured figures in `text`: a number with a unit of time, size, rate, share or
/// ratio, written as measurements are (a decimal point, a thousands comma, a range,
/// `~`, or a unit only measurements use here: ms, µs, %, ×, /s). Round settings such
/// as "2 s" or "16 KiB" are bounds, not figures.
fn figures(text: &str) -> Vec<String> {
    const UNITS: [&str; 9] = ["ms", "µs", "s", "MiB", "KiB", "GiB", "/s", "%", "×"];
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            && (i == 0
                || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '.' || chars[i - 1] == ','));
        if !starts {
            i += 1;
            continue;
        }
        let tilde = i > 0 && chars[i - 1] == '~';
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || ((chars[j] == '.' || chars[j] == ',' || chars[j] == '–')
                    && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())))
        {
            j += 1;
        }
        let number: String = chars[i..j].iter().collect();
        let mut k = j;
        if chars.get(k) == Some(&' ') {
            k += 1;
        }
        let rest: String = chars[k..chars.len().min(k + 4)].iter().collect();
        let unit = UNITS.iter().find(|u| {
            rest.starts_with(**u)
                && !rest[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric())
        });
        if let Some(unit) = unit {
            let measured = number.contains(['.', ',', '–'])
                || tilde
                || ["ms", "µs", "%", "×", "/s"].contains(unit);
            if measured {
                let spaced = chars.get(j) == Some(&' ');
                out.push(format!(
                    "{}{number}{}{unit}",
                    if tilde { "~" } else { "" },
                    if spaced { " " } else { "" }
                ));
            }
        }
        i = j.max(i + 1);
    }
    out
}

#[test]
fn every_figure_in_readme_and_architecture_is_in_benchmarks() {
    let benchmarks = read("BENCHMARKS.md");
    assert!(!figures(&benchmarks).is_empty());
    let mut problems = Vec::new();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        for figure in figures(&read(doc)) {
            if !benchmarks.contains(&figure) {
                problems.push(format!("{doc}: {figure:?} is not in BENCHMARKS.md"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn figures_are_found_as_written() {
    assert_eq!(
        figures("back 1,027–1,343 ms, ~20 ms to exit, +0.8% of it, 2 s bound, 16 KiB, 3.5× and 19,998/s; TLS 1.3"),
        ["1,027–1,343 ms", "~20 ms", "0.8%", "3.5×", "19,998/s"]
    );
}
