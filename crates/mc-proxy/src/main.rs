//! The mc-proxy binary: `mc-proxy --config proxy.toml` serves until SIGTERM or
//! Ctrl-C; `mc-proxy route add|remove|list --socket PATH` is the admin API's
//! command-line client (SPEC §7). Exit codes (SPEC §10): 0 done, 1 failed, 2 bad
//! usage or invalid input, 3 the socket could not be reached or refused us.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use mc_proxy::wire::route_from_wire;
use mcp_proto::mcproxy::admin::v1::{self as wire, admin_client::AdminClient};
use mcp_proto::tonic::{transport::Channel, Code, Status};

#[derive(Parser)]
#[command(
    name = "mc-proxy",
    about = "Routes TLS connections by SNI",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// proxy.toml: run the proxy
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the routes of a running mc-proxy through its admin socket
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Add a route, replacing the route of the same hostname
    Add(AddArgs),
    /// Remove the route of a hostname
    Remove {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        hostname: String,
    },
    /// List the routes
    List {
        #[arg(long)]
        socket: PathBuf,
        /// An array of {"hostname", "backend", "mode", "backend_tls", "unavailable"}
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct AddArgs {
    /// The admin socket
    #[arg(long)]
    socket: PathBuf,
    /// a.example.com or *.example.com
    #[arg(long)]
    hostname: String,
    /// HOST:PORT
    #[arg(long)]
    backend: String,
    #[arg(long, value_parser = ["l4", "l7"], default_value = "l4")]
    mode: String,
    /// l7: the public certificate chain (PEM)
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// l7: its private key (PEM)
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// l7: plain HTTP to the backend
    #[arg(long)]
    backend_plain: bool,
    /// l7: roots for the backend's certificate (PEM)
    #[arg(long)]
    backend_ca: Option<PathBuf>,
    /// l7: the name the backend's certificate is verified for (default: the
    /// host of --backend)
    #[arg(long)]
    backend_name: Option<String>,
    /// Send a PROXY protocol v2 header to the backend
    #[arg(long)]
    proxy_protocol: bool,
    /// The service is stopped: l7 answers 503, l4 closes; no backend dialled
    #[arg(long)]
    unavailable: bool,
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

const FAILED: u8 = 1;
const USAGE: u8 = 2;
const UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One CPU (a small VPS, or pinned with taskset): a single-threaded runtime
    // spends nothing on work stealing; more: one worker per CPU.
    let runtime = match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mc-proxy: start the runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    runtime.block_on(run_cli(cli))
}

async fn run_cli(cli: Cli) -> ExitCode {
    let result = match (cli.command, cli.config) {
        (Some(Command::Route(cmd)), _) => route(cmd).await,
        (None, Some(config)) => serve(&config)
            .await
            .map_err(|e| fail(FAILED, format!("{e:#}"))),
        (None, None) => Err(fail(
            USAGE,
            "either --config FILE (run the proxy) or a subcommand (see --help)",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mc-proxy: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn serve(config: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = mc_proxy::Config::load(config)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watch SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    mc_proxy::run(config, stop_rx).await
}

async fn connect(socket: &Path) -> Result<AdminClient<Channel>, Failure> {
    let channel = mcp_proto::transport::unix::connect(socket)
        .await
        .map_err(|e| fail(UNREACHABLE, e.to_string()))?;
    Ok(AdminClient::new(channel))
}

/// The exit code of a refused call.
fn status(s: Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument => USAGE,
        Code::PermissionDenied | Code::Unauthenticated | Code::Unavailable => UNREACHABLE,
        _ => FAILED,
    };
    fail(code, s.message().to_string())
}

fn read_pem(flag: &str, path: &Option<PathBuf>) -> Result<String, Failure> {
    match path {
        None => Ok(String::new()),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| fail(USAGE, format!("--{flag} {}: {e}", p.display()))),
    }
}

async fn route(cmd: RouteCommand) -> Result<(), Failure> {
    match cmd {
        RouteCommand::Add(a) => {
            let route = wire::Route {
                hostname: a.hostname,
                backend: a.backend,
                mode: a.mode,
                backend_tls: !a.backend_plain,
                backend_name: a.backend_name.unwrap_or_default(),
                proxy_protocol: a.proxy_protocol,
                cert_pem: read_pem("cert", &a.cert)?,
                key_pem: read_pem("key", &a.key)?,
                backend_ca_pem: read_pem("backend-ca", &a.backend_ca)?,
                unavailable: a.unavailable,
            };
            if a.backend_plain && route.mode == "l4" {
                return Err(fail(USAGE, "--backend-plain: only for --mode l7"));
            }
            // Checked here too, so bad input is exit 2 without a running proxy.
            let (pattern, checked) = route_from_wire(&route).map_err(|e| fail(USAGE, e))?;
            let mut client = connect(&a.socket).await?;
            let reply = client
                .add_route(wire::AddRouteRequest { route: Some(route) })
                .await
                .map_err(status)?
                .into_inner();
            let verb = if reply.replaced { "replaced" } else { "added" };
            let state = if checked.unavailable {
                ", unavailable"
            } else {
                ""
            };
            println!(
                "route {pattern} -> {} ({}{state}) {verb}",
                checked.backend,
                checked.mode.as_str()
            );
        }
        RouteCommand::Remove { socket, hostname } => {
            let pattern = mc_proxy::routes::Pattern::parse(&hostname)
                .map_err(|e| fail(USAGE, e.to_string()))?;
            let mut client = connect(&socket).await?;
            let reply = client
                .remove_route(wire::RemoveRouteRequest { hostname })
                .await
                .map_err(status)?
                .into_inner();
            if reply.removed {
                println!("route {pattern} removed");
            } else {
                println!("no route for {pattern}");
            }
        }
        RouteCommand::List { socket, json } => {
            let mut client = connect(&socket).await?;
            let routes = client
                .list_routes(wire::ListRoutesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .routes;
            if json {
                let list: Vec<serde_json::Value> = routes
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "hostname": r.hostname,
                            "backend": r.backend,
                            "mode": r.mode,
                            "backend_tls": r.backend_tls,
                            "unavailable": r.unavailable,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                print_table(&routes);
            }
        }
    }
    Ok(())
}

fn print_table(routes: &[wire::Route]) {
    let header = [
        "HOSTNAME",
        "BACKEND",
        "MODE",
        "BACKEND_TLS",
        "PROXY_PROTOCOL",
        "UNAVAILABLE",
    ];
    let rows: Vec<[String; 6]> = routes
        .iter()
        .map(|r| {
            [
                r.hostname.clone(),
                r.backend.clone(),
                r.mode.clone(),
                r.backend_tls.to_string(),
                r.proxy_protocol.to_string(),
                r.unavailable.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}
