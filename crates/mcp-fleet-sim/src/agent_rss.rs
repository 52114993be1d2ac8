//! `agent-rss`: the idle RSS of a real `mcp-agent`.

use super::*;

pub(crate) async fn agent_rss(cpu: Option<u32>) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-agent-{}", std::process::id()));
    let _master = Master::start(&dir, "1s", 3, "1s", cpu)?;
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let config = agent_dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"idle\"\nmaster = \"{MASTER}\"\nlisten = \"127.0.0.62:9444\"\ndata_dir = \"{}\"\nsrv_root = \"{}\"\nruntime = \"exec\"\n",
            agent_dir.join("data").display(),
            agent_dir.join("srv").display()
        ),
    )?;
    let bin = mcp_local_fleet::Binaries::find()?.path("mcp-agent");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let registered = state_of("idle").await;
    println!("agent-rss: idle mcp-agent (exec runtime, {registered}, heartbeating every 1s) RSS {:.1}MiB", mib(rss(child.id())));
    mcp_local_fleet::send_signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    Ok(())
}
