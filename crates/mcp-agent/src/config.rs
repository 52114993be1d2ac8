//! `agent.toml`: parsed purely from a string and validated before any socket is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use mcp_types::Arch;
use serde::Deserialize;

/// What a node does in the fleet: `worker` runs containers and processes; `edge`
/// runs none and programs the local mc-proxy.
pub use mcp_types::Role;

/// Which runtime runs `container` components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Podman,
    /// No container runtime: only `driver = "exec"` components run here.
    Exec,
}

/// The agent's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    #[serde(default = "default_role")]
    pub role: Role,
    /// The master's `host:port`.
    pub master: String,
    /// This agent's RPC address on the tailnet; its IP is the node's address, where
    /// routes are published.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default = "default_srv_root")]
    pub srv_root: PathBuf,
    #[serde(default = "default_runtime")]
    pub runtime: RuntimeKind,
    /// Docker Engine API socket; defaults by runtime.
    pub runtime_socket: Option<PathBuf>,
    /// Overrides the detected arch.
    pub arch: Option<Arch>,
    #[serde(default)]
    pub pools: Vec<String>,
    /// Needed on first start only.
    pub join_token: Option<mcp_pki::Secret>,
    /// Edge role only.
    pub proxy_admin_socket: Option<PathBuf>,
    /// Edge role only: where the public reaches mc-proxy (`host:port`); public URLs
    /// carry its port when it is not 443.
    pub public_address: Option<String>,
    /// Edge role only: public certificates from an ACME CA instead of the master's
    /// embedded public CA.
    pub acme: Option<crate::acme::AcmeConfig>,
}

fn default_role() -> Role {
    Role::Worker
}
fn default_srv_root() -> PathBuf {
    PathBuf::from("/srv")
}
fn default_runtime() -> RuntimeKind {
    RuntimeKind::Docker
}

impl Config {
    /// Parses and validates `agent.toml` text. `origin` names the file in errors.
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).with_context(|| format!("parse {origin}"))?;
        config
            .validate()
            .with_context(|| format!("check {origin}"))?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        Config::parse(&path.display().to_string(), &text)
    }

    fn validate(&self) -> anyhow::Result<()> {
        mcp_types::name::check_dns_label(&self.name).map_err(|e| anyhow::anyhow!("name: {e}"))?;
        for pool in &self.pools {
            mcp_types::name::check_dns_label(pool).map_err(|e| anyhow::anyhow!("pools: {e}"))?;
        }
        mcp_proto::transport::uri_for(&self.master).context("master")?;
        if self.listen.ip().is_unspecified() {
            bail!(
                "listen: give the node's own address, not {}",
                self.listen.ip()
            );
        }
        if let Some(token) = &self.join_token {
            mcp_pki::join::JoinToken::parse(token.expose())
                .map_err(|e| anyhow::anyhow!("join_token: {e}"))?;
        }
        if self.role == Role::Edge && self.proxy_admin_socket.is_none() {
            bail!("proxy_admin_socket: required for role = \"edge\"");
        }
        if let Some(address) = &self.public_address {
            if self.role != Role::Edge {
                bail!("public_address: only for role = \"edge\"");
            }
            let ok = address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && matches!(p.parse::<u16>(), Ok(p) if p > 0));
            if !ok {
                bail!("public_address {address:?}: not host:port");
            }
        }
        if let Some(acme) = &self.acme {
            if self.role != Role::Edge {
                bail!("acme: only for role = \"edge\"");
            }
            if !acme.directory.starts_with("https://") {
                bail!("acme.directory {:?}: not an https URL", acme.directory);
            }
        }
        Ok(())
    }

    /// The node's address: where routes are published and what `MCP_ADDR` says.
    pub fn node_ip(&self) -> IpAddr {
        self.listen.ip()
    }

    /// The arch this node reports.
    pub fn arch(&self) -> Arch {
        self.arch.unwrap_or(if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        })
    }

    /// The runtime socket, defaulted by runtime.
    pub fn socket(&self) -> Option<PathBuf> {
        match (self.runtime, &self.runtime_socket) {
            (RuntimeKind::Exec, _) => None,
            (_, Some(path)) => Some(path.clone()),
            (RuntimeKind::Docker, None) => Some(PathBuf::from("/var/run/docker.sock")),
            (RuntimeKind::Podman, None) => Some(PathBuf::from("/run/podman/podman.sock")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
name = "hyperborea"
role = "worker"
master = "127.0.0.11:9443"
listen = "127.0.0.13:9444"
data_dir = "/srv/mcp/agent"
srv_root = "/srv"
runtime = "docker"
runtime_socket = "/var/run/docker.sock"
arch = "arm64"
pools = ["pi-pool"]
join_token = "MCPJOIN-1-0000000000000000000000000000000000000000000000000000000000000000-1111111111111111111111111111111111111111111111111111111111111111"
"#;

    #[test]
    fn parses_the_spec_example() {
        let c = Config::parse("agent.toml", GOOD).unwrap();
        assert_eq!(c.name, "hyperborea");
        assert!(
            !format!("{c:?}").contains("1111111111"),
            "the join secret must not print"
        );
        assert_eq!(c.arch(), Arch::Arm64);
        assert_eq!(c.pools, vec!["pi-pool"]);
        assert_eq!(c.node_ip().to_string(), "127.0.0.13");
    }

    #[test]
    fn refuses_bad_configs() {
        let cases = [
            (GOOD.replace("pools", "poolz"), "unknown field `poolz`"),
            (GOOD.replace("\"hyperborea\"", "\"Hyper_borea\""), "name:"),
            (GOOD.replace("127.0.0.13:9444", "0.0.0.0:9444"), "listen:"),
            (
                GOOD.replace("\"127.0.0.11:9443\"", "\"ftp://x:1\""),
                "master",
            ),
            (
                GOOD.replace("role = \"worker\"", "role = \"edge\""),
                "proxy_admin_socket",
            ),
            (GOOD.replace("\"docker\"", "\"lxc\""), "unknown variant"),
            (GOOD.replace("MCPJOIN-1-", "SWMTKN-1-"), "join_token"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Config::parse("agent.toml", &text).unwrap_err());
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}

#[cfg(test)]
mod reference {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_reference_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/config/agent.toml"
        );
        let config = super::Config::load(std::path::Path::new(path)).unwrap();
        assert_eq!(config.name, "hyperborea");
        assert_eq!(config.pools, vec!["pi-pool"]);
    }
}
