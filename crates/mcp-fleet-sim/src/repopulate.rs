//! `repopulate`: how fast a restarted master learns its fleet again.

use super::*;

/// A simulated agent that re-registers (with the agent's backoff) whenever its
/// heartbeat stream breaks, as a real agent does.
async fn resilient_node(
    i: usize,
    channel: Channel,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut stop = stop;
    loop {
        let mut client = NodesClient::new(channel.clone());
        if client
            .register(register_request(i, node_address(i)))
            .await
            .is_ok()
        {
            backoff = BACKOFF_MIN;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let _ = tx.send(heartbeat(i)).await;
            if let Ok(response) = client
                .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                let mut replies = response.into_inner();
                let mut ticker = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => { if tx.send(heartbeat(i)).await.is_err() { break } }
                        reply = replies.next() => match reply { Some(Ok(_)) => {}, _ => break },
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        let wait = backoff + jitter(backoff, &node_name(i));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn count_nodes() -> usize {
    let Ok(mut client) = operator() else { return 0 };
    client
        .list_nodes(wire::ListNodesRequest {})
        .await
        .map_or(0, |r| r.into_inner().nodes.len())
}

pub(crate) async fn repopulate(cpu: Option<u32>, nodes: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-repop-{}", std::process::id()));
    let mut master = Master::start(&dir, "5s", 3, "2s", cpu)?;
    let channels = channels(nodes).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = (0..nodes)
        .map(|i| {
            tokio::spawn(resilient_node(
                i,
                channels[i].clone(),
                Duration::from_secs(5),
                stop_rx.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_nodes().await < nodes {
        if Instant::now() > deadline {
            bail!("the first master never saw all {nodes} nodes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        master.kill();
        // The restarted master reuses this data dir (its CA signed the nodes'
        // certificates): the old handle must not delete it when replaced.
        master.keep_dir = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        master = Master::start(&dir, "5s", 3, "2s", cpu)?;
        let listening = t0.elapsed();
        loop {
            if count_nodes().await >= nodes {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("not repopulated within 30s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        println!("repopulate: nodes={nodes} full view after {:.0}ms from master start ({:.0}ms of which to listen)", took.as_secs_f64() * 1000.0, listening.as_secs_f64() * 1000.0);
        times.push(took);
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    drop(master);
    Ok(())
}
