//! The `mc-proxy` binary as the tests run it: one command, its output.

use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mc-proxy");

/// Runs `mc-proxy ARGS` to its end, with no stdin.
pub fn mc_proxy(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mc-proxy")
}

/// A command's stdout and stderr, for messages and assertions.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
