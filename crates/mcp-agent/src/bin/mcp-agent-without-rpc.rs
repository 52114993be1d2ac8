//! `mcp-agent-without-rpc`: the real `mcp-agent`, built with the `test-without-rpc`
//! feature, which reports fewer RPCs than it serves (see `register::reported_rpcs`).
//! For the capability negotiation test; never shipped.

#[path = "../main.rs"]
mod agent;

fn main() -> std::process::ExitCode {
    agent::main()
}
