//! `mcp validate FILE...`: offline check of definitions, with the master's errors.

use std::path::Path;

use serde_json::json;

use crate::error::CliError;
use crate::Ctx;

/// Reads and parses one definition file; the error is the exact text to show.
pub fn load(path: &Path) -> Result<mcp_types::ServiceDef, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    mcp_types::parse_definition(&path.display().to_string(), &text).map_err(|e| e.to_string())
}

pub fn run(ctx: &Ctx, files: &[std::path::PathBuf]) -> Result<(), CliError> {
    let mut results = Vec::new();
    let mut bad = Vec::new();
    for file in files {
        match load(file) {
            Ok(def) => results.push(
                json!({"file": file.display().to_string(), "service": def.name, "valid": true}),
            ),
            Err(e) => {
                results
                    .push(json!({"file": file.display().to_string(), "valid": false, "error": e}));
                bad.push(e);
            }
        }
    }
    if ctx.json && bad.is_empty() {
        ctx.print_json(&serde_json::Value::Array(results));
    } else if !ctx.quiet && bad.is_empty() {
        for file in files {
            println!("{}: ok", file.display());
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::invalid(bad.join("\n")))
    }
}
