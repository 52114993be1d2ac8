//! The `mcp-agent` binary: `mcp-agent --config agent.toml`, and the exec driver's
//! `mcp-agent supervise DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `mcp-agent --version`: the version and the target triple it was built for.
const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MCP_AGENT_TARGET"),
    ")"
);

#[derive(Parser)]
#[command(name = "mcp-agent", version = VERSION_LINE, about = "MCP node agent")]
struct Cli {
    /// The agent's configuration file.
    #[arg(long, default_value = "/srv/mcp/agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Supervise one exec instance (started by the agent itself).
    #[command(hide = true)]
    Supervise { dir: PathBuf },
}

/// `pub`: the `mcp-agent-without-rpc` test binary runs this same `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-agent: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Supervise { dir }) => mcp_agent::runtime::exec::supervise(&dir).await,
            None => {
                let config = mcp_agent::config::Config::load(&cli.config)?;
                // Now, before anyone replaces the file (SPEC §9).
                let sha = mcp_agent::binary_sha256();
                tracing::info!(
                    version = mcp_agent::VERSION,
                    target = mcp_agent::TARGET,
                    binary_sha256 = sha,
                    "mcp-agent"
                );
                let exe = std::env::current_exe()?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                mcp_agent::run(config, exe, rx).await
            }
        }
    });
    // Blocking tasks (a log file followed, a SQLite call) must not hold the exit
    // past SIGTERM: they get a second, then the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mcp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
