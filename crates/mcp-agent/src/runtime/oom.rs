//! OOM kills of containers, from the engine's `oom` events (Docker and Podman emit
//! one each time the kernel kills a process of a container at its memory limit):
//! counted per container ID, so `list` reports them and the master shows them
//! (SPEC §3: an OOM kill is an event, not a silent restart). The engine keeps recent
//! events, so a watcher subscribing from the oldest, then resubscribing from the last
//! it saw, also counts kills that happened while it was not listening.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;

use super::LABEL_NODE;

/// OOM kills per container ID: (count, last kill in Unix seconds).
#[derive(Debug, Default, Clone)]
pub struct OomLog {
    kills: Arc<Mutex<HashMap<String, (u32, i64)>>>,
}

impl OomLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, i64)>> {
        self.kills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one kill of container `id` at `at` (Unix seconds).
    pub fn record(&self, id: &str, at: i64) {
        let mut kills = self.lock();
        let entry = kills.entry(id.to_string()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
    }

    /// (count, last) for container `id`; (0, 0) when never killed.
    pub fn of(&self, id: &str) -> (u32, i64) {
        self.lock().get(id).copied().unwrap_or((0, 0))
    }

    /// Forgets containers that no longer exist.
    pub fn keep_only(&self, ids: &[&str]) {
        self.lock().retain(|id, _| ids.contains(&id.as_str()));
    }
}

/// Ends the watcher when its runtime is dropped.
pub struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches `docker`'s `oom` events of containers labelled for `node` into `log`,
/// resubscribing with backoff when the stream ends (an engine restart). Events are
/// replayed from the oldest the engine holds, then from the last one seen, so none is
/// counted twice or lost between subscriptions.
pub fn watch(docker: Docker, node: &str, log: OomLog) -> Watcher {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["oom".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_NODE}={node}")]),
    ]);
    let node = node.to_string();
    Watcher(tokio::spawn(async move {
        // Nanoseconds of the newest event counted; the engine's `since` takes
        // seconds.nanoseconds. At first, everything the engine still holds: kills
        // while no agent listened count too (for containers that still exist).
        let mut since_ns: i64 = 1_000_000_000;
        let mut backoff = Duration::from_millis(200);
        loop {
            let options = EventsOptions {
                since: Some(format!(
                    "{}.{:09}",
                    since_ns / 1_000_000_000,
                    since_ns % 1_000_000_000
                )),
                until: None,
                filters: Some(filters.clone()),
            };
            let mut events = docker.events(Some(options));
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::debug!(node = %node, "oom events: {e}");
                        break;
                    }
                };
                backoff = Duration::from_millis(200);
                let at_ns = event
                    .time_nano
                    .or(event.time.map(|s| s.saturating_mul(1_000_000_000)))
                    .unwrap_or(0);
                // A replayed event already counted.
                if at_ns != 0 && at_ns <= since_ns {
                    continue;
                }
                since_ns = since_ns.max(at_ns);
                if let Some(id) = event.actor.and_then(|a| a.id) {
                    let at = at_ns / 1_000_000_000;
                    tracing::warn!(node = %node, container = %id, "container killed at its memory limit");
                    log.record(&id, at);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_are_counted_per_container() {
        let log = OomLog::default();
        assert_eq!(log.of("a"), (0, 0));
        log.record("a", 10);
        log.record("a", 12);
        log.record("b", 11);
        assert_eq!(log.of("a"), (2, 12));
        assert_eq!(log.of("b"), (1, 11));
        log.keep_only(&["b"]);
        assert_eq!(log.of("a"), (0, 0));
        assert_eq!(log.of("b"), (1, 11));
    }
}
