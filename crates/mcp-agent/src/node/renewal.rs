//! The renewal loop of the node's internal service certificates: each is renewed at
//! two thirds of its lifetime, without restarting anything.

use std::sync::Arc;
use std::time::Duration;

use super::{now_s, Node};

/// Renews certificates as they come due, until `shutdown`.
pub async fn renew_loop(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let now = now_s();
        let mut next = now + 60;
        match node.cert_schedule() {
            Ok(certs) => {
                for (service, not_before, not_after) in certs {
                    let due = crate::certs::renew_at(not_before, not_after);
                    if due <= now {
                        match node.renew_cert(&service).await {
                            Ok(()) => {
                                tracing::info!(node = %node.name, service = %service, "renewed the internal certificate")
                            }
                            Err(e) => {
                                tracing::warn!(node = %node.name, service = %service, "renew the internal certificate: {e:#}")
                            }
                        }
                    } else {
                        next = next.min(due);
                    }
                }
            }
            Err(e) => tracing::warn!("read certificate schedule: {e:#}"),
        }
        let wait = Duration::from_secs((next - now_s()).clamp(1, 60) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.certs_changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
