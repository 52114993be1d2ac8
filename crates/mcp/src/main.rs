//! `mcp`: the operator's command-line interface. Each subcommand lives in `cmd/`;
//! everything printed as data goes through `output`; exit codes come from `error`.

mod client;
mod cmd;
mod config;
mod error;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "mcp",
    version,
    about = "Metacircular Control Plane: deploy and run services across a fleet"
)]
struct Cli {
    /// The master's address (host:port or https://host:port); else MCP_MASTER; else
    /// the config's `master`.
    #[arg(long, global = true, env = "MCP_MASTER")]
    master: Option<String>,
    /// The CLI config file [default: ~/.config/mcp/mcp.toml].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get a token from the master (kept in the config's token_file, mode 0600).
    Login {
        #[arg(long)]
        user: Option<String>,
        /// Read the password from stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke the token at the master and drop the local copy.
    Logout,
    /// Deploy or update services from definition files, directories or names.
    Deploy {
        #[arg(required = true, value_name = "FILE|DIR|NAME")]
        targets: Vec<String>,
    },
    /// Stop a service wherever it runs.
    Stop { service: String },
    /// Start a stopped service.
    Start { service: String },
    /// Restart a service.
    Restart { service: String },
    /// Remove a service: its containers or processes, internal certificate, edge routes
    /// and DNS records.
    Remove { service: String },
    /// Services: node, tier, components running/desired, routes.
    List,
    /// Containers and processes fleet-wide.
    Ps,
    /// Fleet summary, or one service in detail: drift, each component's memory and CPU
    /// limits (and whether they are enforced), OOM kills and recent events.
    Status { service: Option<String> },
    /// A service's logs.
    Logs {
        service: String,
        /// Only this component.
        #[arg(short = 'c', long)]
        component: Option<String>,
        /// Keep following.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Edge routes: hostname, service, edge, backend, certificate.
    #[command(subcommand)]
    Route(RouteCommand),
    /// The nodes' agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// A whole local fleet on this machine, until interrupted.
    Dev {
        /// Where configs, data, logs and pid files go.
        #[arg(long, default_value = ".mcp-dev")]
        dir: PathBuf,
        /// docker, podman or exec [default: whichever answers first, in that order].
        #[arg(long)]
        runtime: Option<String>,
        /// Definitions to deploy once the fleet is up.
        #[arg(long, num_args = 1..)]
        deploy: Vec<PathBuf>,
        /// e.g. 250ms, 2s.
        #[arg(long)]
        heartbeat_interval: Option<String>,
        #[arg(long)]
        probe_timeout: Option<String>,
    },
    /// Check definitions offline.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Shell completions on stdout, e.g. `mcp completions bash > /etc/bash_completion.d/mcp`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Writes the man pages (mcp.1, mcp-deploy.1, ...) into DIR (the repository's man/).
    #[command(hide = true)]
    Man {
        #[arg(default_value = "man")]
        dir: PathBuf,
    },
}

/// The shells `mcp completions` writes for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Rolling upgrade over ssh, one node at a time (every registered node when none
    /// is named): copy, check the SHA-256 on the node, keep `<agent_path>.prev`,
    /// restart, wait for the new binary to register; roll back and stop otherwise.
    Upgrade {
        /// In rollout order.
        nodes: Vec<String>,
        /// The agent binary for every node [default: built with cargo per arch].
        #[arg(long, conflicts_with_all = ["binary_amd64", "binary_arm64"])]
        binary: Option<PathBuf>,
        /// The binary for amd64 nodes.
        #[arg(long)]
        binary_amd64: Option<PathBuf>,
        /// The binary for arm64 nodes.
        #[arg(long)]
        binary_arm64: Option<PathBuf>,
        /// How long a restarted agent has to register with the new binary.
        #[arg(long, default_value = "60s", value_parser = mcp_types::parse_duration)]
        wait: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Every public route and where it stands.
    List,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Every node: role, arch, version, health, heartbeat, resources, pools.
    List,
    /// One node in detail.
    Show { node: String },
}

/// What every command needs: output mode, the master's address, the config.
pub struct Ctx {
    pub json: bool,
    pub quiet: bool,
    pub master: Option<String>,
    pub config: config::Config,
    /// Directory of the CLI config (where `services/NAME.toml` are looked up).
    pub config_dir: Option<PathBuf>,
}

impl Ctx {
    /// A path from the CLI config, relative to the config file's directory.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        match &self.config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Prints a `--json` value.
    pub fn print_json(&self, value: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
        );
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", e.to_json());
            } else {
                eprintln!("mcp: {}", e.message);
            }
            ExitCode::from(e.code())
        }
    }
}

/// A command line clap refused (or `--help`, `--version`): with `--json` anywhere on
/// it, the SPEC §10 error object on stdout, exit 2; else clap's own text.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !json {
        let _ = e.print();
        return ExitCode::from(2);
    }
    let text = e.render().to_string();
    // clap's first line, without its "error: " prefix; the usage hint follows.
    let message = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .to_string();
    println!("{}", CliError::usage(message).to_json());
    ExitCode::from(2)
}

/// Writes the man page of `command` and of each of its subcommands into `dir`.
fn write_man_pages(command: &clap::Command, dir: &std::path::Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::failed(format!("create {}: {e}", dir.display())))?;
    for (name, page) in man_pages(command)? {
        let path = dir.join(name);
        std::fs::write(&path, page)
            .map_err(|e| CliError::failed(format!("write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// (file name, roff text) of `mcp.1` and of one page per visible subcommand
/// (`mcp-node-list.1`, ...), as `clap_mangen::generate_to` names them.
fn man_pages(command: &clap::Command) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    fn walk(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let man = clap_mangen::Man::new(command.clone());
        let mut page = Vec::new();
        man.render(&mut page)?;
        pages.push((man.get_filename(), page));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, pages)?;
        }
        Ok(())
    }
    let mut command = command.clone().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    walk(&command, &mut pages).map_err(|e| CliError::failed(format!("render man pages: {e}")))?;
    Ok(pages)
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = &cli.command {
        let shell = match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        };
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "mcp", &mut script);
        use std::io::Write as _;
        // A reader that went away (`| head`) is not a failure.
        let _ = std::io::stdout().write_all(&script);
        return Ok(());
    }
    if let Command::Man { dir } = &cli.command {
        return write_man_pages(&Cli::command(), dir);
    }
    let (config, config_dir) = config::Config::load(cli.config.as_deref())?;
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
        master: cli.master.or_else(|| config.master.clone()),
        config,
        config_dir,
    };
    if let Command::Validate { files } = &cli.command {
        return cmd::validate::run(&ctx, files);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("start runtime: {e}")))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Login {
                user,
                password_stdin,
            } => cmd::login::login(&ctx, user, password_stdin).await,
            Command::Logout => cmd::login::logout(&ctx).await,
            Command::Deploy { targets } => cmd::deploy::run(&ctx, &targets).await,
            Command::Stop { service } => cmd::lifecycle::run(&ctx, "stop", &service).await,
            Command::Start { service } => cmd::lifecycle::run(&ctx, "start", &service).await,
            Command::Restart { service } => cmd::lifecycle::run(&ctx, "restart", &service).await,
            Command::Remove { service } => cmd::lifecycle::run(&ctx, "remove", &service).await,
            Command::List => cmd::list::run(&ctx).await,
            Command::Ps => cmd::ps::run(&ctx).await,
            Command::Status { service } => cmd::status::run(&ctx, service).await,
            Command::Logs {
                service,
                component,
                follow,
                tail,
            } => cmd::logs::run(&ctx, &service, component, follow, tail).await,
            Command::Node(NodeCommand::List) => cmd::node::list(&ctx).await,
            Command::Node(NodeCommand::Show { node }) => cmd::node::show(&ctx, &node).await,
            Command::Route(RouteCommand::List) => cmd::route::list(&ctx).await,
            Command::Agent(AgentCommand::Upgrade {
                nodes,
                binary,
                binary_amd64,
                binary_arm64,
                wait,
            }) => {
                let options = cmd::agent::UpgradeOptions {
                    nodes,
                    binary,
                    binary_amd64,
                    binary_arm64,
                    wait,
                };
                cmd::agent::upgrade(&ctx, options).await
            }
            Command::Dev {
                dir,
                runtime,
                deploy,
                heartbeat_interval,
                probe_timeout,
            } => {
                let options = cmd::dev::DevOptions {
                    dir,
                    runtime,
                    deploy,
                    heartbeat_interval,
                    probe_timeout,
                };
                cmd::dev::run(&ctx, options).await
            }
            Command::Validate { .. } | Command::Completions { .. } | Command::Man { .. } => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// man/ holds exactly the pages the clap definitions give (`mcp man man`).
    #[test]
    fn man_pages_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../man");
        let pages = man_pages(&Cli::command()).unwrap();
        let fix = "run `cargo run -p mcp -- man man` from the repository root";
        for (name, page) in &pages {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(on_disk == *page, "man/{name} is missing or stale: {fix}");
        }
        let mut want: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        want.sort_unstable();
        let mut have: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".1"))
            .collect();
        have.sort_unstable();
        assert_eq!(have, want, "man/ has pages of no command: {fix}");
    }
}
