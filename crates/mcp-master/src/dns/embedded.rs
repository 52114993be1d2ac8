//! The `embedded` DNS backend (SPEC §8). Not built yet: the zone is derived and
//! published in `MasterState.zone`, but nothing serves it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DnsConfig;
use crate::state::MasterState;

/// Starts the backend; Err when it cannot (before the master serves anything).
pub async fn start(
    state: Arc<MasterState>,
    dns: &DnsConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let _ = (state, dns);
    tracing::warn!("[dns] backend embedded: not implemented yet; the zone is not served");
    let mut shutdown = shutdown;
    Ok(tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }))
}
