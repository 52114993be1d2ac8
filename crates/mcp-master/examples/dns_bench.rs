//! The embedded DNS server's benchmark harness (bench/dns-vs-bind.sh): builds a zone
//! of N services (each an A record and an `_http._tcp` SRV record, as the control
//! loop derives them), writes the same zone as a BIND zone file and a dnsperf query
//! file, then serves the zone with the master's own server code
//! (`mcp_master::dns::embedded::serve`) until SIGINT or SIGTERM.
//!
//! `cargo run --release -p mcp-master --example dns_bench -- --listen 127.0.0.116:5300
//!  --services 10000 --zone-file zone.db --queries queries.txt`

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mcp_master::dns::embedded::{serve, Settings};
use mcp_master::reconcile::plan::dns::{DnsRecord, RData, Zone};
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    /// UDP and TCP.
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value = "svc.mcp.metacircular.net")]
    origin: String,
    /// Record TTL in seconds.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    /// Where to write the same zone in BIND's master file format.
    #[arg(long)]
    zone_file: Option<PathBuf>,
    /// Where to write dnsperf's queries: each service's A and SRV, and one unknown
    /// name (NXDOMAIN) in ten, shuffled.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// The SOA serial of the zone file (the embedded server picks its own).
    #[arg(long, default_value_t = 1)]
    serial: u32,
}

fn service(i: u32) -> String {
    format!("s{i:05}")
}

fn addr(i: u32) -> std::net::Ipv4Addr {
    let [_, a, b, c] = i.to_be_bytes();
    std::net::Ipv4Addr::new(10, a, b, c.max(1))
}

fn zone(args: &Args) -> Zone {
    let mut zone = Zone::new();
    for i in 0..args.services {
        let name = format!("{}.{}", service(i), args.origin);
        zone.insert(DnsRecord {
            name: format!("_http._tcp.{name}"),
            data: RData::Srv {
                port: 40000 + (i % 20000) as u16,
                target: name.clone(),
            },
        });
        zone.insert(DnsRecord {
            name,
            data: RData::Addr(addr(i).into()),
        });
    }
    zone
}

fn zone_file(args: &Args, zone: &Zone) -> String {
    let o = &args.origin;
    let mut out = format!(
        "$ORIGIN {o}.\n$TTL {ttl}\n@ IN SOA {o}. hostmaster.{o}. {serial} 3600 600 86400 {ttl}\n@ IN NS {o}.\n@ IN A {ns}\n",
        ttl = args.ttl,
        serial = args.serial,
        ns = args.listen.ip(),
    );
    for r in zone {
        match &r.data {
            RData::Addr(std::net::IpAddr::V4(ip)) => writeln!(out, "{}. IN A {ip}", r.name),
            RData::Addr(std::net::IpAddr::V6(ip)) => writeln!(out, "{}. IN AAAA {ip}", r.name),
            RData::Srv { port, target } => {
                writeln!(out, "{}. IN SRV 0 0 {port} {target}.", r.name)
            }
        }
        .unwrap_or_default();
    }
    out
}

fn queries(args: &Args) -> String {
    let mut lines = Vec::new();
    for i in 0..args.services {
        let name = format!("{}.{}", service(i), args.origin);
        lines.push(format!("{name} A"));
        lines.push(format!("_http._tcp.{name} SRV"));
        if i % 5 == 0 {
            lines.push(format!("missing-{i}.{} A", args.origin));
        }
    }
    // A fixed shuffle (xorshift): every run asks the same queries in the same order.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..lines.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lines.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let zone = zone(&args);
    if let Some(path) = &args.zone_file {
        std::fs::write(path, zone_file(&args, &zone))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.queries {
        std::fs::write(path, queries(&args))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let records = zone.len();
    let (_zone_tx, zone_rx) = watch::channel(Some(Arc::new(zone)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = Settings {
        listen: args.listen,
        origin: args.origin.clone(),
        ttl: Duration::from_secs(u64::from(args.ttl)),
        serial_file: None,
    };
    let (addr, server) = serve(settings, zone_rx, stop_rx).await?;
    println!(
        "dns_bench: {records} records of {} services on {addr} (UDP and TCP)",
        args.services
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop_tx.send_replace(true);
    let _ = server.await;
    Ok(())
}
