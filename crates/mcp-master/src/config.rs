//! `master.toml`: parsed purely from a string and validated before any socket is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mcp_types::duration::serde_duration;
use mcp_types::ByteSize;
use serde::Deserialize;

/// A node the master probes at start, before it has registered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapNode {
    pub name: String,
    pub address: String,
}

/// An operator role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Admin,
    Viewer,
}

/// An operator account.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub password_hash: String,
    pub role: UserRole,
}

impl UserRole {
    /// The token role this config role grants.
    pub fn role(self) -> mcp_pki::token::Role {
        match self {
            UserRole::Admin => mcp_pki::token::Role::Admin,
            UserRole::Viewer => mcp_pki::token::Role::Viewer,
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("password_hash", &"[redacted]")
            .field("role", &self.role)
            .finish()
    }
}

/// The master's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The master node: `tier = "core"` services go here.
    pub node: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub domain: String,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default = "default_heartbeat", with = "serde_duration")]
    pub heartbeat_interval: Duration,
    #[serde(default = "default_missed")]
    pub missed_heartbeats: u32,
    #[serde(default = "default_probe", with = "serde_duration")]
    pub probe_timeout: Duration,
    #[serde(default)]
    pub bootstrap_nodes: Vec<BootstrapNode>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub placement: PlacementConfig,
    /// How long an operator token from `mcp login` lasts.
    #[serde(default = "default_token_ttl", with = "serde_duration")]
    pub token_ttl: Duration,
    /// Lifetime of a service's internal certificate; renewed at two thirds.
    #[serde(default = "default_service_cert_ttl", with = "serde_duration")]
    pub service_cert_ttl: Duration,
    /// Lifetime of node certificates; agents renew theirs at two thirds of it.
    #[serde(default = "default_node_cert_ttl", with = "serde_duration")]
    pub node_cert_ttl: Duration,
    /// Check operator tokens with this RFC 7662-style endpoint (MCIAS) instead of
    /// signing them here, e.g. "http://127.0.0.1:8080/oauth/introspect".
    pub introspection_url: Option<String>,
    /// Trust for an `https://` introspection_url (PEM); absent: the system's CA bundle.
    pub introspection_ca_cert: Option<PathBuf>,
    /// How long an active introspection answer is reused before the endpoint is asked
    /// again (never past the token's expiry); "0s": every call asks.
    #[serde(default = "default_introspection_cache_ttl", with = "serde_duration")]
    pub introspection_cache_ttl: Duration,
    /// The internal zone's backend (SPEC §8); absent: no DNS is kept.
    pub dns: Option<DnsConfig>,
}

/// Where the internal zone is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsBackend {
    /// The master answers the zone itself on `listen` (UDP and TCP).
    #[default]
    Embedded,
    /// Dynamic updates signed with TSIG to a real server.
    Rfc2136,
}

/// `[dns]` (SPEC §12).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    #[serde(default)]
    pub backend: DnsBackend,
    /// embedded: where to answer, UDP and TCP.
    pub listen: Option<SocketAddr>,
    /// rfc2136: the primary server to update.
    pub server: Option<SocketAddr>,
    /// rfc2136: the zone as the server knows it (default `svc.mcp.<domain>.`).
    pub zone: Option<String>,
    pub tsig_key_name: Option<String>,
    /// rfc2136: the TSIG secret (base64, hmac-sha256), a file readable by its owner
    /// only; read at start and never logged.
    pub tsig_secret_file: Option<PathBuf>,
    /// TTL of every record MCP keeps.
    #[serde(default = "default_dns_ttl", with = "serde_duration")]
    pub ttl: Duration,
}

fn default_dns_ttl() -> Duration {
    Duration::from_secs(30)
}

/// The longest record TTL `[dns] ttl` may set.
pub const MAX_DNS_TTL: Duration = Duration::from_secs(86400);

impl DnsConfig {
    fn validate(&self, internal_zone: &str) -> anyhow::Result<()> {
        check_duration("dns.ttl", self.ttl, MAX_DNS_TTL)?;
        if self.ttl < Duration::from_secs(1) {
            bail!("dns.ttl: at least 1s");
        }
        if let Some(zone) = &self.zone {
            let bare = zone.strip_suffix('.').unwrap_or(zone);
            if !bare.eq_ignore_ascii_case(internal_zone) {
                bail!("dns.zone {zone:?}: must be the internal zone {internal_zone}. (svc.mcp.<domain>)");
            }
        }
        match self.backend {
            DnsBackend::Embedded => {
                if self.listen.is_none() {
                    bail!("dns.listen: required for backend = \"embedded\"");
                }
                for (key, set) in [
                    ("server", self.server.is_some()),
                    ("tsig_key_name", self.tsig_key_name.is_some()),
                    ("tsig_secret_file", self.tsig_secret_file.is_some()),
                ] {
                    if set {
                        bail!("dns.{key}: only for backend = \"rfc2136\"");
                    }
                }
            }
            DnsBackend::Rfc2136 => {
                if self.server.is_none() {
                    bail!("dns.server: required for backend = \"rfc2136\"");
                }
                match &self.tsig_key_name {
                    None => bail!("dns.tsig_key_name: required for backend = \"rfc2136\""),
                    Some(k) => {
                        for label in k.strip_suffix('.').unwrap_or(k).split('.') {
                            mcp_types::name::check_dns_label(label)
                                .map_err(|e| anyhow::anyhow!("dns.tsig_key_name {k:?}: {e}"))?;
                        }
                    }
                }
                if self.tsig_secret_file.is_none() {
                    bail!("dns.tsig_secret_file: required for backend = \"rfc2136\"");
                }
                if self.listen.is_some() {
                    bail!("dns.listen: only for backend = \"embedded\"");
                }
            }
        }
        Ok(())
    }
}

fn default_introspection_cache_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_node_cert_ttl() -> Duration {
    Duration::from_secs(90 * 86400)
}
fn default_service_cert_ttl() -> Duration {
    Duration::from_secs(30 * 86400)
}

/// `[placement]`: what every node keeps for itself, and the observed free memory
/// and disk below which a node takes no new service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Cores held back on every node.
    pub reserve_cpu: f64,
    pub reserve_memory: ByteSize,
    pub reserve_disk: ByteSize,
    pub min_free_memory: ByteSize,
    pub min_free_disk: ByteSize,
    /// Cores a component counts as requesting when neither it nor its service's
    /// `[resources]` names any (SPEC §4): Nomad's 100 MHz, about a tenth of a core.
    pub default_cpu: f64,
    /// Memory a component counts as requesting when neither it nor its service's
    /// `[resources]` names any.
    pub default_memory: ByteSize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            reserve_cpu: 0.0,
            reserve_memory: ByteSize::mib(256),
            reserve_disk: ByteSize::gib(1),
            min_free_memory: ByteSize::mib(64),
            min_free_disk: ByteSize::mib(256),
            default_cpu: 0.1,
            default_memory: ByteSize::mib(128),
        }
    }
}

impl PlacementConfig {
    /// The placement policy these settings make.
    pub fn policy(&self) -> mcp_placement::Policy {
        mcp_placement::Policy {
            reserve: mcp_placement::Capacity {
                cpu: self.reserve_cpu,
                memory: self.reserve_memory.0,
                disk: self.reserve_disk.0,
            },
            min_free_memory: self.min_free_memory.0,
            min_free_disk: self.min_free_disk.0,
            default_request: mcp_placement::Capacity {
                cpu: self.default_cpu,
                memory: self.default_memory.0,
                disk: 0,
            },
        }
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_missed() -> u32 {
    3
}
fn default_probe() -> Duration {
    Duration::from_secs(5)
}

// Upper bounds of the duration keys. Health deadlines (`Instant + interval *
// missed_heartbeats + probe_timeout`), token expiries and certificate validity
// (`SystemTime + ttl`) are computed from them, and that arithmetic panics or
// wraps on a duration such as "1000000000d"; well inside the bounds it cannot.

/// `heartbeat_interval` at most 1h.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);
/// `probe_timeout` at most 10m.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// `missed_heartbeats` at most 1000.
pub const MAX_MISSED_HEARTBEATS: u32 = 1000;
/// `token_ttl` at most 365d.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86400);
/// `introspection_cache_ttl` at most 1h: a token the identity service revoked is
/// still accepted for up to this long.
pub const MAX_INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(3600);
/// `service_cert_ttl` and `node_cert_ttl` at most 3650d (ten years).
pub const MAX_CERT_TTL: Duration = Duration::from_secs(3650 * 86400);

/// A duration key must be above zero and at most `max`; the error names the key,
/// the value and the bound.
fn check_duration(key: &str, value: Duration, max: Duration) -> anyhow::Result<()> {
    use mcp_types::duration::format_duration;
    if value.is_zero() {
        bail!("{key}: must be above zero");
    }
    if value > max {
        bail!(
            "{key}: {} is above the limit of {}",
            format_duration(value),
            format_duration(max)
        );
    }
    Ok(())
}

impl Config {
    /// Parses and validates `master.toml` text. `origin` names the file in errors.
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).with_context(|| format!("parse {origin}"))?;
        config
            .validate()
            .with_context(|| format!("check {origin}"))?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        Config::parse(&path.display().to_string(), &text)
    }

    fn validate(&self) -> anyhow::Result<()> {
        mcp_types::name::check_dns_label(&self.node).map_err(|e| anyhow::anyhow!("node: {e}"))?;
        mcp_types::name::check_hostname(&self.domain)
            .map_err(|e| anyhow::anyhow!("domain: {e}"))?;
        for d in &self.allowed_domains {
            mcp_types::name::check_hostname(d)
                .map_err(|e| anyhow::anyhow!("allowed_domains: {e}"))?;
        }
        for (key, value, max) in [
            (
                "heartbeat_interval",
                self.heartbeat_interval,
                MAX_HEARTBEAT_INTERVAL,
            ),
            ("probe_timeout", self.probe_timeout, MAX_PROBE_TIMEOUT),
            ("token_ttl", self.token_ttl, MAX_TOKEN_TTL),
            ("service_cert_ttl", self.service_cert_ttl, MAX_CERT_TTL),
            ("node_cert_ttl", self.node_cert_ttl, MAX_CERT_TTL),
        ] {
            check_duration(key, value, max)?;
        }
        if self.introspection_cache_ttl > MAX_INTROSPECTION_CACHE_TTL {
            bail!(
                "introspection_cache_ttl: {} is above the limit of {}",
                mcp_types::duration::format_duration(self.introspection_cache_ttl),
                mcp_types::duration::format_duration(MAX_INTROSPECTION_CACHE_TTL)
            );
        }
        if self.introspection_ca_cert.is_some() && self.introspection_url.is_none() {
            bail!("introspection_ca_cert: only with introspection_url");
        }
        if !self.placement.reserve_cpu.is_finite() || self.placement.reserve_cpu < 0.0 {
            bail!("placement.reserve_cpu: must be zero or more cores");
        }
        if !self.placement.default_cpu.is_finite() || self.placement.default_cpu < 0.0 {
            bail!("placement.default_cpu: must be zero or more cores");
        }
        if self.missed_heartbeats == 0 {
            bail!("missed_heartbeats: must be at least 1");
        }
        if self.missed_heartbeats > MAX_MISSED_HEARTBEATS {
            bail!(
                "missed_heartbeats: {} is above the limit of {MAX_MISSED_HEARTBEATS}",
                self.missed_heartbeats
            );
        }
        for b in &self.bootstrap_nodes {
            mcp_types::name::check_dns_label(&b.name)
                .map_err(|e| anyhow::anyhow!("bootstrap_nodes: {e}"))?;
            mcp_proto::transport::uri_for(&b.address).context("bootstrap_nodes")?;
        }
        if let Some(dns) = &self.dns {
            dns.validate(&self.internal_zone())?;
        }
        for (name, user) in &self.users {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("users.{name}: user names are 1-64 of [A-Za-z0-9-_.]");
            }
            if !user.password_hash.starts_with("$argon2") {
                bail!("users.{name}.password_hash: expected an argon2 hash (mcp-master hash-password)");
            }
        }
        Ok(())
    }

    /// The internal zone, `svc.mcp.<domain>`.
    pub fn internal_zone(&self) -> String {
        format!("svc.mcp.{}", self.domain)
    }

    /// Is `hostname` the internal zone or a name in it (never public)?
    pub fn hostname_internal(&self, hostname: &str) -> bool {
        at_or_under(hostname, &self.internal_zone())
    }

    /// Is `hostname` equal to, or a subdomain of, an allowed domain?
    pub fn hostname_allowed(&self, hostname: &str) -> bool {
        self.allowed_domains
            .iter()
            .any(|d| at_or_under(hostname, d))
    }
}

/// Is `hostname` equal to `domain`, or a name under it (by whole labels)?
fn at_or_under(hostname: &str, domain: &str) -> bool {
    hostname == domain
        || hostname
            .strip_suffix(domain)
            .is_some_and(|p| p.ends_with('.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
node = "rift"
listen = "127.0.0.11:9443"
data_dir = "/srv/mcp/master"
domain = "metacircular.net"
allowed_domains = ["metacircular.net", "wntrmute.net"]
heartbeat_interval = "30s"
missed_heartbeats = 3
probe_timeout = "5s"
bootstrap_nodes = [{ name = "svc", address = "127.0.0.14:9444" }]
[users.kyle]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$abc$def"
role = "admin"
"#;

    #[test]
    fn parses_the_spec_example() {
        let c = Config::parse("master.toml", GOOD).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.probe_timeout, Duration::from_secs(5));
        assert_eq!(c.users["kyle"].role, UserRole::Admin);
        assert!(
            !format!("{c:?}").contains("argon2id"),
            "hash must not print"
        );
        assert!(c.hostname_allowed("metacircular.net"));
        assert!(c.hostname_allowed("photos.wntrmute.net"));
        assert!(!c.hostname_allowed("evilmetacircular.net"));
        assert!(!c.hostname_allowed("example.org"));
        assert!(c.hostname_internal("photos.svc.mcp.metacircular.net"));
        assert!(c.hostname_internal("svc.mcp.metacircular.net"));
        assert!(!c.hostname_internal("svc.metacircular.net"));
        assert!(!c.hostname_internal("xsvc.mcp.metacircular.net"));
    }

    #[test]
    fn dns_sections_of_the_spec_parse_and_bad_ones_say_why() {
        let embedded = format!("{GOOD}[dns]\nbackend = \"embedded\"\nlisten = \"127.0.0.11:53\"\n");
        let c = Config::parse("master.toml", &embedded).unwrap();
        let dns = c.dns.unwrap();
        assert_eq!(dns.backend, DnsBackend::Embedded);
        assert_eq!(dns.ttl, Duration::from_secs(30));
        let rfc = format!(
            "{GOOD}[dns]\nbackend = \"rfc2136\"\nserver = \"10.0.0.2:53\"\nzone = \"svc.mcp.metacircular.net.\"\ntsig_key_name = \"mcp\"\ntsig_secret_file = \"/srv/mcp/master/tsig.key\"\n"
        );
        assert!(Config::parse("master.toml", &rfc).unwrap().dns.is_some());
        let cases = [
            ("[dns]\nbackend = \"embedded\"\n", "dns.listen: required"),
            ("[dns]\nbackend = \"rfc2136\"\n", "dns.server: required"),
            (
                "[dns]\nbackend = \"rfc2136\"\nserver = \"10.0.0.2:53\"\n",
                "dns.tsig_key_name: required",
            ),
            (
                "[dns]\nlisten = \"127.0.0.1:53\"\nzone = \"example.org.\"\n",
                "must be the internal zone",
            ),
            (
                "[dns]\nlisten = \"127.0.0.1:53\"\nserver = \"10.0.0.2:53\"\n",
                "dns.server: only for",
            ),
            ("[dns]\nbackend = \"bind\"\n", "unknown variant"),
            (
                "[dns]\nlisten = \"127.0.0.1:53\"\nttl = \"2d\"\n",
                "dns.ttl",
            ),
        ];
        for (section, want) in cases {
            let err = format!(
                "{:#}",
                Config::parse("master.toml", &format!("{GOOD}{section}")).unwrap_err()
            );
            assert!(
                err.contains(want),
                "{section}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn short_durations_parse() {
        let c = Config::parse("m", &GOOD.replace("\"30s\"", "\"250ms\"")).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
    }

    #[test]
    fn refuses_bad_configs() {
        let cases = [
            (
                GOOD.replace("probe_timeout", "probe_timeoutt"),
                "unknown field",
            ),
            (GOOD.replace("\"30s\"", "\"30\""), "heartbeat_interval"),
            (
                GOOD.replace("missed_heartbeats = 3", "missed_heartbeats = 0"),
                "missed_heartbeats",
            ),
            (GOOD.replace("\"rift\"", "\"Rift!\""), "node:"),
            (GOOD.replace("$argon2id", "plain"), "argon2"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Config::parse("master.toml", &text).unwrap_err());
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    /// Every duration key and `missed_heartbeats`: zero, the bound, just above it, and
    /// a huge value that parses but would overflow deadline arithmetic.
    #[test]
    fn bounds_every_duration_key() {
        let base = GOOD
            .replace("heartbeat_interval = \"30s\"\n", "")
            .replace("probe_timeout = \"5s\"\n", "")
            .replace("missed_heartbeats = 3\n", "");
        let node = "node = \"rift\"\n";
        // (key = value, the error wanted or None when it must be accepted)
        let cases: &[(&str, Option<&str>)] = &[
            ("heartbeat_interval = \"1h\"", None),
            (
                "heartbeat_interval = \"1h1ns\"",
                Some("heartbeat_interval: 1h1ns is above the limit of 1h"),
            ),
            (
                "heartbeat_interval = \"1000000000d\"",
                Some("heartbeat_interval: 1000000000d is above the limit of 1h"),
            ),
            (
                "heartbeat_interval = \"0s\"",
                Some("heartbeat_interval: must be above zero"),
            ),
            ("probe_timeout = \"10m\"", None),
            (
                "probe_timeout = \"11m\"",
                Some("probe_timeout: 11m is above the limit of 10m"),
            ),
            (
                "probe_timeout = \"1000000000d\"",
                Some("probe_timeout: 1000000000d is above the limit of 10m"),
            ),
            ("token_ttl = \"365d\"", None),
            (
                "token_ttl = \"366d\"",
                Some("token_ttl: 366d is above the limit of 365d"),
            ),
            (
                "token_ttl = \"1000000000d\"",
                Some("token_ttl: 1000000000d is above the limit of 365d"),
            ),
            ("token_ttl = \"0s\"", Some("token_ttl: must be above zero")),
            ("service_cert_ttl = \"3650d\"", None),
            (
                "service_cert_ttl = \"3651d\"",
                Some("service_cert_ttl: 3651d is above the limit of 3650d"),
            ),
            (
                "service_cert_ttl = \"1000000000d\"",
                Some("service_cert_ttl: 1000000000d is above the limit of 3650d"),
            ),
            ("node_cert_ttl = \"3650d\"", None),
            (
                "node_cert_ttl = \"213503982334601d\"",
                Some("node_cert_ttl: 213503982334601d is above the limit of 3650d"),
            ),
            (
                "node_cert_ttl = \"0s\"",
                Some("node_cert_ttl: must be above zero"),
            ),
            ("missed_heartbeats = 1000", None),
            (
                "missed_heartbeats = 1001",
                Some("missed_heartbeats: 1001 is above the limit of 1000"),
            ),
            (
                "missed_heartbeats = 4294967295",
                Some("missed_heartbeats: 4294967295 is above the limit of 1000"),
            ),
        ];
        for (line, want) in cases {
            let text = base.replace(node, &format!("{node}{line}\n"));
            match (Config::parse("master.toml", &text), want) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    let err = format!("{e:#}");
                    assert!(
                        err.contains(want),
                        "{line}: {err:?} should contain {want:?}"
                    );
                }
                (Ok(_), Some(want)) => panic!("{line}: accepted, wanted {want:?}"),
                (Err(e), None) => panic!("{line}: refused: {e:#}"),
            }
        }
        // At the bounds, the health deadline and certificate arithmetic hold.
        let interval = MAX_HEARTBEAT_INTERVAL * MAX_MISSED_HEARTBEATS + MAX_PROBE_TIMEOUT;
        assert!(std::time::Instant::now().checked_add(interval).is_some());
        assert!(std::time::SystemTime::now()
            .checked_add(MAX_CERT_TTL)
            .is_some());
    }
}

#[cfg(test)]
mod reference {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_reference_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/config/master.toml"
        );
        let config = super::Config::load(std::path::Path::new(path)).unwrap();
        assert_eq!(config.node, "rift");
        assert_eq!(config.bootstrap_nodes.len(), 1);
    }
}
