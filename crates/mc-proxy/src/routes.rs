//! The pure route table: which backend serves a hostname, and how. An exact
//! hostname beats a `*.` wildcard, and a wildcard stands for exactly one label
//! (`*.example.com` matches `a.example.com`, not `example.com` nor
//! `a.b.example.com`). No I/O: the proxy swaps whole tables in and out.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::hostname;

/// How a route carries a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes copied unchanged both ways; the backend holds its own TLS.
    L4,
    /// TLS terminated here, HTTP/1.1 and HTTP/2 forwarded to the backend.
    L7,
}

/// Where a route's connections go: an address, or a host name and port
/// resolved at dial time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Addr(a) => write!(f, "{a}"),
            Backend::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Backend {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Backend, RouteError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Backend::Addr(addr));
        }
        let bad = |reason: &'static str| RouteError::Backend {
            backend: s.to_string(),
            reason,
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no :port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port is not a number from 1 to 65535"));
        }
        let host = hostname::normalize(host).map_err(bad)?;
        Ok(Backend::Name { host, port })
    }
}

/// One route (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub backend: Backend,
    pub mode: Mode,
    /// L7: speak TLS to the backend (else plain HTTP).
    pub backend_tls: bool,
    /// L7: the name the backend's certificate is verified for (default: the
    /// backend's host).
    pub backend_name: Option<String>,
    /// Send a PROXY protocol v2 header to the backend first.
    pub proxy_protocol: bool,
    /// L7: the public certificate and key, and the backend's roots.
    pub tls: Option<L7Tls>,
    /// The service behind the route is stopped: L7 answers 503 (after the
    /// handshake, with the route's certificate), L4 closes after the
    /// ClientHello; no backend is dialled.
    pub unavailable: bool,
}

/// An L7 route's PEM material. Debug leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct L7Tls {
    /// The public certificate chain.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// Roots for the backend's certificate (default: the fleet CA).
    pub backend_ca_pem: Option<String>,
}

impl fmt::Debug for L7Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L7Tls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .field(
                "backend_ca_pem",
                &self.backend_ca_pem.as_ref().map(String::len),
            )
            .finish()
    }
}

impl Route {
    /// An L4 route to `backend` with no PROXY header.
    pub fn l4(backend: Backend) -> Route {
        Route {
            backend,
            mode: Mode::L4,
            backend_tls: true,
            backend_name: None,
            proxy_protocol: false,
            tls: None,
            unavailable: false,
        }
    }
}

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route hostname {hostname:?}: {reason}")]
    Hostname {
        hostname: String,
        reason: &'static str,
    },
    #[error("route backend {backend:?}: {reason}")]
    Backend {
        backend: String,
        reason: &'static str,
    },
}

/// A route table (or any value kept per hostname pattern, as the L7 state is).
/// Insert replaces the entry of the same pattern.
#[derive(Clone, Debug)]
pub struct Table<T = Route> {
    exact: HashMap<String, T>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

/// A hostname pattern, validated: an exact name, or `*.` and a name of at least
/// two labels (`*.com` is refused: one route would take a whole TLD).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    Exact(String),
    Wildcard(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, RouteError> {
        let bad = |reason: &'static str| RouteError::Hostname {
            hostname: text.to_string(),
            reason,
        };
        match text.strip_prefix("*.") {
            Some(suffix) => {
                let suffix = hostname::normalize(suffix).map_err(bad)?;
                Ok(Pattern::Wildcard(suffix))
            }
            None if text.contains('*') => Err(bad("a wildcard is only `*.` before a name")),
            None => Ok(Pattern::Exact(hostname::normalize(text).map_err(bad)?)),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(h) => f.write_str(h),
            Pattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

impl<T> Table<T> {
    pub fn new() -> Table<T> {
        Table::default()
    }

    /// Adds or replaces the route for `pattern` (`a.example.com` or
    /// `*.example.com`).
    pub fn insert(&mut self, pattern: &str, route: T) -> Result<(), RouteError> {
        self.insert_pattern(Pattern::parse(pattern)?, route);
        Ok(())
    }

    /// Adds or replaces the entry for a parsed pattern.
    pub fn insert_pattern(&mut self, pattern: Pattern, route: T) {
        match pattern {
            Pattern::Exact(h) => self.exact.insert(h, route),
            Pattern::Wildcard(s) => self.wildcard.insert(s, route),
        };
    }

    /// Removes the route for `pattern`; whether there was one.
    pub fn remove(&mut self, pattern: &str) -> Result<bool, RouteError> {
        Ok(match Pattern::parse(pattern)? {
            Pattern::Exact(h) => self.exact.remove(&h).is_some(),
            Pattern::Wildcard(s) => self.wildcard.remove(&s).is_some(),
        })
    }

    /// The route for `host` (as the SNI parser returns it: lowercase).
    pub fn lookup(&self, host: &str) -> Option<&T> {
        if let Some(r) = self.exact.get(host) {
            return Some(r);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// The entry stored for exactly `pattern` (no wildcard matching).
    pub fn get(&self, pattern: &Pattern) -> Option<&T> {
        match pattern {
            Pattern::Exact(h) => self.exact.get(h),
            Pattern::Wildcard(s) => self.wildcard.get(s),
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route with its pattern, sorted by pattern.
    pub fn routes(&self) -> Vec<(Pattern, &T)> {
        let mut all: Vec<(Pattern, &T)> = self
            .exact
            .iter()
            .map(|(h, r)| (Pattern::Exact(h.clone()), r))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(s, r)| (Pattern::Wildcard(s.clone()), r)),
            )
            .collect();
        all.sort_by_key(|(p, _)| p.to_string());
        all
    }
}

impl Pattern {
    /// Whether `host` (lowercase, no port) is this pattern's name or, for a
    /// wildcard, one label under it.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Pattern::Exact(h) => h == host,
            Pattern::Wildcard(s) => host
                .split_once('.')
                .is_some_and(|(label, parent)| !label.is_empty() && parent == s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(port: u16) -> Route {
        Route::l4(Backend::Addr(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    #[test]
    fn lookup_table() {
        let mut t = Table::new();
        t.insert("a.example.com", route(1)).expect("insert");
        t.insert("*.example.com", route(2)).expect("insert");
        t.insert("example.com", route(3)).expect("insert");
        t.insert("*.b.example.com", route(4)).expect("insert");
        t.insert("Upper.Example.Org", route(5)).expect("insert");
        let cases = [
            ("a.example.com", Some(1)),
            ("z.example.com", Some(2)),
            ("example.com", Some(3)),
            ("b.example.com", Some(2)),
            ("c.b.example.com", Some(4)),
            ("a.b.c.example.com", None),
            ("x.a.example.com", None),
            ("upper.example.org", Some(5)),
            ("example.org", None),
            ("com", None),
            ("", None),
        ];
        for (host, want) in cases {
            let got = t.lookup(host).map(|r| match r.backend {
                Backend::Addr(a) => a.port(),
                Backend::Name { port, .. } => port,
            });
            assert_eq!(got, want, "{host}");
        }
        assert_eq!(t.len(), 5);
        assert!(t.remove("*.example.com").expect("remove"));
        assert!(!t.remove("*.example.com").expect("remove"));
        assert_eq!(t.lookup("z.example.com"), None);
    }

    #[test]
    fn insert_replaces() {
        let mut t = Table::new();
        t.insert("a.example.com", route(1)).expect("insert");
        t.insert("A.example.com", route(2)).expect("insert");
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup("a.example.com"), Some(&route(2)));
    }

    #[test]
    fn pattern_validation() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("a.example.com", Ok("a.example.com")),
            ("*.example.com", Ok("*.example.com")),
            ("*.EXAMPLE.com", Ok("*.example.com")),
            ("*.com", Err("hostname has a single label")),
            ("*", Err("a wildcard is only `*.` before a name")),
            (
                "a.*.example.com",
                Err("a wildcard is only `*.` before a name"),
            ),
            (
                "*a.example.com",
                Err("a wildcard is only `*.` before a name"),
            ),
            (
                "*.*.example.com",
                Err("hostname has a character outside a-z, 0-9 and -"),
            ),
            ("", Err("empty hostname")),
            ("a..com", Err("empty label in hostname")),
        ];
        for (text, want) in cases {
            let got = Pattern::parse(text).map(|p| p.to_string());
            let want = want
                .map(str::to_string)
                .map_err(|reason| RouteError::Hostname {
                    hostname: text.to_string(),
                    reason,
                });
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn backend_parse() {
        assert_eq!(
            "127.0.0.1:443".parse(),
            Ok(Backend::Addr(SocketAddr::from(([127, 0, 0, 1], 443))))
        );
        assert_eq!(
            "[::1]:8443".parse::<Backend>().map(|b| b.to_string()),
            Ok("[::1]:8443".to_string())
        );
        assert_eq!(
            "Svc.Example:8443".parse(),
            Ok(Backend::Name {
                host: "svc.example".into(),
                port: 8443
            })
        );
        for bad in [
            "svc.example",
            "svc.example:0",
            "svc.example:x",
            ":443",
            "svc_x.example:1",
        ] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
    }

    /// The reference: try each pattern the naive way.
    fn naive(patterns: &[(String, u16)], host: &str) -> Option<u16> {
        let mut exact = None;
        let mut wild = None;
        for (p, port) in patterns {
            if p == host {
                exact = Some(*port);
            } else if let Some(suffix) = p.strip_prefix("*.") {
                let labels: Vec<&str> = host.split('.').collect();
                if labels.len() >= 2 && labels[1..].join(".") == suffix {
                    wild = Some(*port);
                }
            }
        }
        exact.or(wild)
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string())
        ]
    }

    fn name(min: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), min..5).prop_map(|l| format!("{}.ex", l.join(".")))
    }

    proptest! {
        #[test]
        fn lookup_matches_naive(
            specs in proptest::collection::vec((any::<bool>(), name(1)), 0..12),
            host in name(0),
        ) {
            let mut t = Table::new();
            let mut patterns = Vec::new();
            for (i, (wild, n)) in specs.into_iter().enumerate() {
                let p = if wild { format!("*.{n}") } else { n };
                let port = i as u16 + 1;
                t.insert(&p, route(port)).expect("insert");
                patterns.retain(|(q, _)| *q != p);
                patterns.push((p, port));
            }
            let got = t.lookup(&host).map(|r| match r.backend {
                Backend::Addr(a) => a.port(),
                Backend::Name { port, .. } => port,
            });
            prop_assert_eq!(got, naive(&patterns, &host));
        }
    }
}
