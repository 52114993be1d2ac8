//! `proxy.toml` (SPEC §12): mc-proxy's one config, parsed purely from text and
//! validated before any socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_types::duration::{format_duration, serde_duration};
use serde::Deserialize;

/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upper bound of `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Default `handshake_timeout`: time to send a whole ClientHello.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of `handshake_timeout`.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `idle_timeout`: a connection with no byte either way is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `drain_timeout`: after SIGTERM, time for open connections to end.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of `drain_timeout`.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upper bound of `idle_timeout`.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The public TLS address.
    pub listen: SocketAddr,
    /// The admin API's Unix socket (mode 0600).
    pub admin_socket: PathBuf,
    /// Holds `routes.db`.
    pub data_dir: PathBuf,
    /// ACME HTTP-01 and redirects to HTTPS.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Prometheus text at `/metrics`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_handshake_timeout", with = "serde_duration")]
    pub handshake_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "serde_duration")]
    pub idle_timeout: Duration,
    /// After SIGTERM (or a handover to a new mc-proxy), how long open
    /// connections may go on before they are cut.
    #[serde(default = "default_drain_timeout", with = "serde_duration")]
    pub drain_timeout: Duration,
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}

/// Why a config was refused; `origin` is the file (or what stood for it).
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct ConfigError {
    pub origin: String,
    pub reason: String,
}

impl Config {
    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let err = |reason: String| ConfigError {
            origin: origin.to_string(),
            reason,
        };
        let config: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            reason: format!("read: {e}"),
        })?;
        Config::parse(&origin, &text)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections > MAX_MAX_CONNECTIONS {
            return Err(format!(
                "max_connections: {} is not from 1 to {MAX_MAX_CONNECTIONS}",
                self.max_connections
            ));
        }
        check_duration(
            "handshake_timeout",
            self.handshake_timeout,
            MAX_HANDSHAKE_TIMEOUT,
        )?;
        check_duration("idle_timeout", self.idle_timeout, MAX_IDLE_TIMEOUT)?;
        check_duration("drain_timeout", self.drain_timeout, MAX_DRAIN_TIMEOUT)?;
        let mut seen = vec![("listen", self.listen)];
        for (key, addr) in [
            ("http_listen", self.http_listen),
            ("metrics_listen", self.metrics_listen),
        ] {
            if let Some(addr) = addr {
                if let Some((other, _)) = seen.iter().find(|(_, a)| *a == addr) {
                    return Err(format!("{key}: {addr} is also {other}"));
                }
                seen.push((key, addr));
            }
        }
        if self.admin_socket.as_os_str().is_empty() {
            return Err("admin_socket: empty path".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir: empty path".into());
        }
        Ok(())
    }
}

fn check_duration(key: &str, value: Duration, max: Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err(format!("{key}: must be above zero"));
    }
    if value > max {
        return Err(format!(
            "{key}: {} is above the limit of {}",
            format_duration(value),
            format_duration(max)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.171:443"
admin_socket = "/run/mc-proxy/admin.sock"
data_dir = "/srv/mc-proxy"
"#;

    #[test]
    fn defaults() {
        let c = Config::parse("t", BASE).expect("parse");
        assert_eq!(c.listen, "127.0.0.171:443".parse().expect("addr"));
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(c.http_listen, None);
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("handshake_timeout = \"250ms\"\nidle_timeout = \"1m30s\"", Ok(())),
            ("max_connections = 5\nhttp_listen = \"127.0.0.171:80\"\nmetrics_listen = \"127.0.0.171:9100\"", Ok(())),
            ("handshake_timeout = \"0s\"", Err("t: handshake_timeout: must be above zero")),
            ("handshake_timeout = \"6m\"", Err("t: handshake_timeout: 6m is above the limit of 5m")),
            ("idle_timeout = \"2d\"", Err("t: idle_timeout: 2d is above the limit of 1d")),
            ("drain_timeout = \"0s\"", Err("t: drain_timeout: must be above zero")),
            ("drain_timeout = \"30s\"", Ok(())),
            ("max_connections = 0", Err("t: max_connections: 0 is not from 1 to 1000000")),
            ("max_connections = 2000000", Err("t: max_connections: 2000000 is not from 1 to 1000000")),
            ("metrics_listen = \"127.0.0.171:443\"", Err("t: metrics_listen: 127.0.0.171:443 is also listen")),
            ("colour = \"blue\"", Err("unknown field `colour`")),
            ("handshake_timeout = \"soon\"", Err("handshake_timeout")),
            ("max_connections = -1", Err("max_connections")),
        ];
        for (extra, want) in cases {
            let text = format!("{BASE}{extra}\n");
            let got = Config::parse("t", &text)
                .map(|_| ())
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{extra}: {e} lacks {w}"),
                (got, want) => panic!("{extra}: got {got:?}, want {want:?}"),
            }
        }
        for missing in ["listen", "admin_socket", "data_dir"] {
            let text: String = BASE
                .lines()
                .filter(|l| !l.starts_with(missing))
                .collect::<Vec<_>>()
                .join("\n");
            let e = Config::parse("t", &text).expect_err(missing).to_string();
            assert!(e.contains(&format!("missing field `{missing}`")), "{e}");
        }
    }

    #[test]
    fn reference_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/proxy.toml");
        let c = Config::load(&path).expect("examples/config/proxy.toml");
        assert_eq!(c.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    }
}
