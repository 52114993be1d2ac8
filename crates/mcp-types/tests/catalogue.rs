//! The data-driven catalogue of definition files: every file in `invalid/`
//! must fail with exactly the errors in its sibling `.err` file, and every
//! file in `valid/` must parse and survive a `to_toml` round trip.
//!
//! `UPDATE_EXPECT=1 cargo test -p mcp-types --test catalogue` rewrites the
//! `.err` files from the current output; review the diff before committing.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use mcp_types::parse_definition;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn base_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn invalid_definitions_fail_with_the_expected_errors() {
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let files = files_with_ext(&dir("invalid"), "toml");
    assert!(
        files.len() >= 24,
        "the catalogue has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for toml_path in &files {
        let name = base_name(toml_path);
        let text = fs::read_to_string(toml_path).unwrap();
        let actual = match parse_definition(&name, &text) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without error"));
                continue;
            }
            Err(err) => {
                assert_eq!(err.file, name);
                assert!(
                    !err.problems.is_empty(),
                    "{name}: an error with no problems"
                );
                let lines: Vec<usize> = err.problems.iter().map(|p| p.line).collect();
                let mut sorted = lines.clone();
                sorted.sort();
                assert_eq!(lines, sorted, "{name}: problems not sorted by line");
                format!("{err}\n")
            }
        };
        let err_path = toml_path.with_extension("err");
        if update {
            fs::write(&err_path, &actual).unwrap();
            continue;
        }
        match fs::read_to_string(&err_path) {
            Err(_) => failures.push(format!(
                "{name}: no {}; run with UPDATE_EXPECT=1 to create it\n  actual:\n{actual}",
                base_name(&err_path)
            )),
            Ok(expected) if expected != actual => failures.push(format!(
                "{name}:\n  expected:\n{expected}  actual:\n{actual}"
            )),
            Ok(_) => {}
        }
    }
    for err_path in files_with_ext(&dir("invalid"), "err") {
        if !err_path.with_extension("toml").exists() {
            failures.push(format!("{}: has no .toml beside it", base_name(&err_path)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} catalogue mismatches (UPDATE_EXPECT=1 rewrites the .err files):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_definitions_parse_and_round_trip() {
    let files = files_with_ext(&dir("valid"), "toml");
    assert!(files.len() >= 4, "only {} valid files", files.len());
    for path in files {
        let name = base_name(&path);
        let text = fs::read_to_string(&path).unwrap();
        let def = parse_definition(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(def.validate(), Ok(()), "{name}");
        let again = parse_definition(&name, &def.to_toml())
            .unwrap_or_else(|e| panic!("{name} written back:\n{}\n{e}", def.to_toml()));
        assert_eq!(again, def, "{name}");
        assert_eq!(again.digest(), def.digest(), "{name}");
    }
}
