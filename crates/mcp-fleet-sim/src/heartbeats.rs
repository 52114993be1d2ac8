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
    let own0 = cpu_seconds(std::process::id());
    let cores0 = core_times();
    stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let lag = tokio::spawn(runtime_lag(Duration::from_secs(seconds)));
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
    let own_used = cpu_seconds(std::process::id()) - own0;
    let busy: Vec<String> = core_times()
        .iter()
        .zip(&cores0)
        .enumerate()
        .map(|(i, ((b1, t1), (b0, t0)))| {
            let total = t1.saturating_sub(*t0).max(1) as f64;
            format!(
                "cpu{i}={:.0}%",
                100.0 * b1.saturating_sub(*b0) as f64 / total
            )
        })
        .collect();
    let mut lag = lag.await.unwrap_or_default();
    lag.sort_unstable();
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
        "heartbeats: nodes={nodes} offered={rate}/s achieved={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms master_cpu={:.0}% of one core ({:.1}us per heartbeat) master_rss={:.1}MiB sim_cpu={:.0}% sim_lag_p99={:.2}ms sim_lag_max={:.2}ms busy {}",
        replies as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        100.0 * cpu_used / elapsed,
        1e6 * cpu_used / (replies.max(1) as f64),
        mib(rss(master.pid())),
        100.0 * own_used / elapsed,
        percentile(&lag, 0.99),
        percentile(&lag, 1.0),
        busy.join(" "),
    );
    Ok(())
}

/// The simulator's own scheduling delay over `span`: a task that asks to wake every
/// millisecond records how late each wake-up is (µs). A heartbeat reply that arrives
/// while the simulator's runtime is this late is timed this much later than the
/// master sent it, so a p99 here close to the heartbeats' p99 says the tail is the
/// simulator's, not the master's.
async fn runtime_lag(span: Duration) -> Vec<u32> {
    let mut late = Vec::with_capacity(span.as_millis() as usize);
    let end = Instant::now() + span;
    while Instant::now() < end {
        let asked = Instant::now() + Duration::from_millis(1);
        tokio::time::sleep_until(asked.into()).await;
        late.push(asked.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    late
}

/// Each CPU's (busy, total) time in clock ticks from `/proc/stat`: how busy every
/// core of the machine was over the measurement, whoever used it.
fn core_times() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle and iowait are the 4th and 5th.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
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
