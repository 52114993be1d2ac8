//! The `mcp-master` binary: `mcp-master --config master.toml`, and the one-off
//! `init`, `join-token` and `hash-password`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mcp-master", version, about = "MCP master")]
struct Cli {
    /// The master's configuration file.
    #[arg(long, default_value = "/srv/mcp/master.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the fleet CA and print a join token.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print the join token again, to add a node.
    JoinToken {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Read a password on stdin and print its argon2 hash for master.toml.
    HashPassword,
}

fn one_off(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { data_dir } => {
            let token = mcp_master::security::init(&data_dir)?;
            eprintln!(
                "mcp-master: fleet CA created in {}; give agents this join token:",
                data_dir.display()
            );
            println!("{}", token.expose());
        }
        Command::JoinToken { data_dir } => {
            println!("{}", mcp_master::security::join_token(&data_dir)?.expose());
        }
        Command::HashPassword => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let password = text.strip_suffix('\n').unwrap_or(&text);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                anyhow::bail!("no password on stdin");
            }
            let hash =
                mcp_pki::password::hash_password(&mcp_pki::Secret::new(password.to_string()))?;
            println!("{hash}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return match one_off(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcp-master: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
            eprintln!("mcp-master: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let config = mcp_master::config::Config::load(&cli.config)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = tx.send(true);
            }
        });
        mcp_master::run(config, rx).await
    });
    // Blocking tasks (a log file followed, a SQLite call) must not hold the exit
    // past SIGTERM: they get a second, then the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mcp-master: {e:#}");
            ExitCode::FAILURE
        }
    }
}
