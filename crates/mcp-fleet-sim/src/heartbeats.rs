//! `heartbeats`: throughput and latency of the Heartbeats stream at a given rate.

use super::*;

pub(crate) async fn heartbeats(
    cpu: Option<u32>,
    nodes: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-{}", std::process::id()));
    let master = Master::start(&dir, "30s", 3, "5s", cpu)?;
    let channels = channels(nodes).await?;
    register_all(0..nodes, &channels).await?;
    let stats = Arc::new(Stats::default());
    let (stop, handles) = start_loops(nodes, rate, &channels, &stats);
    if let Some(dns) = MASTER_DNS.get() {
        let dns = *dns;
        let waited = Instant::now();
        tokio::task::spawn_blocking(move || zone_published(dns)).await??;
        eprintln!(
            "heartbeats: the master's DNS answers the zone {:.1} s after the fleet registered",
            waited.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_seconds(master.pid());
    stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    if MASTER_DNS.get().is_some() {
        eprintln!(
            "heartbeats: measuring {seconds} s from unix ms {}",
            unix_ms()
        );
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    if MASTER_DNS.get().is_some() {
        eprintln!("heartbeats: measured until unix ms {}", unix_ms());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(master.pid()) - cpu0;
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }
    let replies = stats.replies.load(Ordering::Relaxed);
    let mut lat = stats
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    println!(
        "heartbeats: nodes={nodes} offered={rate}/s achieved={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms master_cpu={:.0}% of one core master_rss={:.1}MiB",
        replies as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        100.0 * cpu_used / elapsed,
        mib(rss(master.pid())),
    );
    Ok(())
}

/// Waits (at most 60 s) until the embedded DNS server on `addr` answers a query in
/// the zone with something other than SERVFAIL: the zone is published once the
/// master's start-up grace is over.
fn zone_published(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut query = vec![0x5e, 0x11, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in "s00000.svc.mcp.sim.test".split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(&query, addr)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n >= 12 && buf[..2] == query[..2] && buf[3] & 0x0f != 2 {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the master's DNS server on {addr} still answers SERVFAIL after 60 s")
}
