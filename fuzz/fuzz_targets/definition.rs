//! Fuzzes `parse_definition`: any UTF-8 text must give a definition or a
//! located error, never a panic, and an accepted definition must survive
//! `to_toml`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match mcp_types::parse_definition("fuzz.toml", text) {
        Ok(def) => {
            let again = mcp_types::parse_definition("again.toml", &def.to_toml());
            assert_eq!(again.as_ref().ok(), Some(&def), "to_toml did not read back");
        }
        Err(err) => {
            assert!(!err.problems.is_empty(), "an error with no problems");
            assert!(err.problems.iter().all(|p| p.line >= 1));
        }
    }
});
