//! The internal zone's backends (SPEC §8). The control loop derives the zone
//! (`reconcile::plan::dns`) and publishes it in `MasterState.zone`; a backend makes
//! a server hold it: `embedded` answers it itself, `rfc2136` keeps a real server's
//! copy with signed dynamic updates. Neither reads the registry.

pub mod embedded;
pub mod rfc2136;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DnsBackend;
use crate::state::MasterState;

/// Starts the configured backend (None when `[dns]` is absent). Errors that stop the
/// master from starting (a listen address in use, an unreadable TSIG secret) come
/// back here, before the master serves anything.
pub async fn start(
    state: Arc<MasterState>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(dns) = state.config.dns.clone() else {
        return Ok(None);
    };
    match dns.backend {
        DnsBackend::Embedded => embedded::start(state, &dns, shutdown).await.map(Some),
        DnsBackend::Rfc2136 => rfc2136::start(state, &dns, shutdown).await.map(Some),
    }
}
