//! `detect`: failure-detection time of a frozen agent against its bound.

use super::*;

/// A TCP listener that accepts and never answers: a frozen agent's probe address.
fn frozen_listener(address: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("bind {address}"))?;
    Ok(listener)
}

pub(crate) async fn detect(
    cpu: Option<u32>,
    runs: usize,
    interval_ms: u64,
    missed: u32,
    probe_ms: u64,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-detect-{}", std::process::id()));
    let _master = Master::start(
        &dir,
        &format!("{interval_ms}ms"),
        missed,
        &format!("{probe_ms}ms"),
        cpu,
    )?;
    let interval = Duration::from_millis(interval_ms);
    let bound = interval * missed + Duration::from_millis(probe_ms);
    let mut keep = Vec::new();
    for (kind, frozen) in [
        ("frozen (SIGSTOP-like: probe times out)", true),
        ("dead (stream closed, connection refused)", false),
    ] {
        let mut took = Vec::new();
        for run in 0..runs {
            let i = 50_000 + run + if frozen { 0 } else { 1000 };
            let address = format!("127.0.0.62:{}", 21000 + i % 10000);
            let listener = if frozen {
                Some(frozen_listener(&address)?)
            } else {
                None
            };
            let mut client = NodesClient::new(node_channel(i).await?);
            client
                .register(register_request(i, address.clone()))
                .await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut replies = client
                .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            for _ in 0..5 {
                tokio::time::sleep(interval).await;
                tx.send(heartbeat(i)).await?;
                replies.next().await;
            }
            let last_ms = unix_ms();
            if !frozen {
                drop(tx);
                drop(replies);
            } else {
                // A frozen agent keeps its stream open and sends nothing.
                keep.push((tx, replies));
            }
            let name = node_name(i);
            // The master's own record of the transition is the measurement; polling
            // only waits for it.
            let mut poller = operator()?;
            let unhealthy_at = loop {
                let status = poller
                    .status(wire::StatusRequest { service: None })
                    .await?
                    .into_inner();
                if let Some(e) = status
                    .events
                    .iter()
                    .rev()
                    .find(|e| e.node == name && e.message.contains("-> unhealthy"))
                {
                    break e.at_ms;
                }
                if unix_ms() - last_ms > (bound * 10).as_millis() as i64 {
                    bail!("{name} never became unhealthy");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            took.push(Duration::from_millis((unhealthy_at - last_ms).max(0) as u64));
            drop(listener);
        }
        let mean = took.iter().sum::<Duration>() / took.len().max(1) as u32;
        let max = took.iter().max().copied().unwrap_or_default();
        if frozen {
            println!(
                "detect: {kind}: mean {:.0}ms max {:.0}ms vs bound {:.0}ms (missed {missed} x {interval_ms}ms + probe {probe_ms}ms): {:+.1}%",
                mean.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0,
                bound.as_secs_f64() * 1000.0,
                100.0 * (mean.as_secs_f64() / bound.as_secs_f64() - 1.0)
            );
        } else {
            println!(
                "detect: {kind}: mean {:.1}ms max {:.1}ms after the agent died (probe timeout {probe_ms}ms)",
                mean.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}
