//! `memory`: the master's RSS with N registered, heartbeating nodes.

use super::*;

pub(crate) async fn memory(cpu: Option<u32>, sizes: Vec<usize>) -> anyhow::Result<()> {
    for nodes in sizes {
        let dir = std::env::temp_dir().join(format!("mcp-sim-mem-{}-{nodes}", std::process::id()));
        let master = Master::start(&dir, "30s", 3, "5s", cpu)?;
        let idle = rss(master.pid());
        let channels = channels(nodes).await?;
        register_all(0..nodes, &channels).await?;
        let stats = Arc::new(Stats::default());
        // Every node heartbeats every 30 s, spread out; memory settles after a few.
        let (stop, handles) = start_loops(nodes, (nodes as u64 / 30).max(1), &channels, &stats);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut client = operator()?;
        let listed = client
            .list_nodes(wire::ListNodesRequest {})
            .await?
            .into_inner()
            .nodes
            .len();
        println!(
            "memory: nodes={nodes} registered={listed} master_rss={:.1}MiB (idle {:.1}MiB, {:.1}KiB per node)",
            mib(rss(master.pid())),
            mib(idle),
            (rss(master.pid()).saturating_sub(idle)) as f64 / 1024.0 / nodes as f64
        );
        let _ = stop.send(true);
        for h in handles {
            let _ = h.await;
        }
        drop(master);
    }
    Ok(())
}
