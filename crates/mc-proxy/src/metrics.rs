//! The proxy's counters and their Prometheus text (served on `metrics_listen`
//! at `/metrics` by `plain`): connections open and accepted, bytes each way,
//! handshake failures by reason, and per route the requests by status class
//! and the backend dial errors. Counters are atomics bumped on the connection
//! path; a route's counters live as long as the process, so a removed and
//! re-added route keeps counting from where it was.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::routes::Pattern;

/// Why a client's connection ended before it was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No whole ClientHello within `handshake_timeout`.
    HandshakeTimeout,
    /// The ClientHello named no server.
    NoSni,
    /// No route for the name.
    UnknownName,
    /// Not a TLS ClientHello we can read.
    BadHello,
    /// The L7 TLS handshake failed (or timed out).
    Tls,
    /// An L7 route whose certificate could not be loaded.
    NotServed,
    /// The backend of an L4 route could not be reached.
    BackendUnreachable,
    /// An L4 route marked unavailable (its service is stopped).
    Unavailable,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::HandshakeTimeout,
        Refusal::NoSni,
        Refusal::UnknownName,
        Refusal::BadHello,
        Refusal::Tls,
        Refusal::NotServed,
        Refusal::BackendUnreachable,
        Refusal::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::NoSni => "no_sni",
            Refusal::UnknownName => "unknown_name",
            Refusal::BadHello => "bad_hello",
            Refusal::Tls => "tls",
            Refusal::NotServed => "not_served",
            Refusal::BackendUnreachable => "backend_unreachable",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// One route's counters.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Responses by class: 1xx to 5xx.
    status: [AtomicU64; 5],
    dial_errors: AtomicU64,
}

impl RouteCounters {
    pub fn status(&self, code: u16) {
        if let Some(c) = (code / 100)
            .checked_sub(1)
            .and_then(|i| self.status.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dial_error(&self) {
        self.dial_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses of class `class` (1 to 5) so far.
    pub fn responses(&self, class: usize) -> u64 {
        class
            .checked_sub(1)
            .and_then(|i| self.status.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn dial_errors(&self) -> u64 {
        self.dial_errors.load(Ordering::Relaxed)
    }
}

/// Every counter of the proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    dials: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    routes: Mutex<BTreeMap<String, Arc<RouteCounters>>>,
}

/// Keeps the open-connections gauge up while it lives.
pub struct OpenGuard(Arc<Metrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A connection was accepted; it counts as open until the guard drops.
    pub fn accepted(self: &Arc<Self>) -> OpenGuard {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(Arc::clone(self))
    }

    pub fn refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dialled(&self) {
        self.dials.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes read from clients.
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to clients.
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters of the route for `pattern`, made on first use.
    pub fn route(&self, pattern: &Pattern) -> Arc<RouteCounters> {
        let mut routes = match self.routes.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(routes.entry(pattern.to_string()).or_default())
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn open_now(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
    pub fn refused_total(&self, why: Refusal) -> u64 {
        Refusal::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }
    pub fn refused_all(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    pub fn dials_total(&self) -> u64 {
        self.dials.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        metric(
            "mc_proxy_connections_accepted_total",
            "counter",
            "Client connections accepted.",
        );
        metric(
            "mc_proxy_connections_open",
            "gauge",
            "Client connections open now.",
        );
        metric(
            "mc_proxy_handshake_failures_total",
            "counter",
            "Client connections ended before forwarding, by reason.",
        );
        metric(
            "mc_proxy_backend_connections_total",
            "counter",
            "L4 backend connections attempted.",
        );
        metric(
            "mc_proxy_client_received_bytes_total",
            "counter",
            "Bytes read from clients.",
        );
        metric(
            "mc_proxy_client_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
        );
        metric(
            "mc_proxy_requests_total",
            "counter",
            "L7 responses by route and status class.",
        );
        metric(
            "mc_proxy_backend_dial_errors_total",
            "counter",
            "Failed backend dials by route.",
        );
        // Samples after the descriptions keep the text short; Prometheus
        // accepts HELP/TYPE anywhere before a family's first sample.
        let _ = writeln!(
            out,
            "mc_proxy_connections_accepted_total {}",
            self.accepted_total()
        );
        let _ = writeln!(out, "mc_proxy_connections_open {}", self.open_now());
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "mc_proxy_handshake_failures_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.refused_total(r)
            );
        }
        let _ = writeln!(
            out,
            "mc_proxy_backend_connections_total {}",
            self.dials_total()
        );
        let _ = writeln!(
            out,
            "mc_proxy_client_received_bytes_total {}",
            self.received.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "mc_proxy_client_sent_bytes_total {}",
            self.sent.load(Ordering::Relaxed)
        );
        let routes: Vec<(String, Arc<RouteCounters>)> = {
            let g = match self.routes.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            g.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
        };
        for (route, c) in &routes {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "mc_proxy_requests_total{{route=\"{route}\",class=\"{class}xx\"}} {}",
                    c.responses(class)
                );
            }
        }
        for (route, c) in &routes {
            let _ = writeln!(
                out,
                "mc_proxy_backend_dial_errors_total{{route=\"{route}\"}} {}",
                c.dial_errors()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Arc::new(Metrics::default());
        let open = m.accepted();
        m.refused(Refusal::UnknownName);
        m.received(10);
        m.sent(20);
        let r = m.route(&Pattern::parse("*.example.com").expect("pattern"));
        r.status(200);
        r.status(204);
        r.status(502);
        r.status(99); // not a class: ignored
        r.dial_error();
        let text = m.render();
        for want in [
            "mc_proxy_connections_accepted_total 1\n",
            "mc_proxy_connections_open 1\n",
            "mc_proxy_handshake_failures_total{reason=\"unknown_name\"} 1\n",
            "mc_proxy_handshake_failures_total{reason=\"handshake_timeout\"} 0\n",
            "mc_proxy_client_received_bytes_total 10\n",
            "mc_proxy_client_sent_bytes_total 20\n",
            "mc_proxy_requests_total{route=\"*.example.com\",class=\"2xx\"} 2\n",
            "mc_proxy_requests_total{route=\"*.example.com\",class=\"5xx\"} 1\n",
            "mc_proxy_requests_total{route=\"*.example.com\",class=\"1xx\"} 0\n",
            "mc_proxy_backend_dial_errors_total{route=\"*.example.com\"} 1\n",
            "# TYPE mc_proxy_connections_open gauge\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        drop(open);
        assert!(m.render().contains("mc_proxy_connections_open 0\n"));
    }
}
