//! The CLI's configuration (`~/.config/mcp/mcp.toml`) and how the master address is
//! chosen: `--master`, else `MCP_MASTER`, else the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// Per-node settings for `mcp agent upgrade` (SPEC §9, §12).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// `user@host` (or a `~/.ssh/config` alias) [default: the node's name].
    pub ssh: Option<String>,
    /// [default: 22]
    pub ssh_port: Option<u16>,
    /// Extra arguments for both `ssh` and `scp`, e.g. `["-i", "~/.ssh/mcp"]` (a
    /// string is split at whitespace).
    pub ssh_options: Option<Words>,
    /// `amd64` or `arm64` [default: what the node reported].
    pub arch: Option<String>,
    /// [default: `/srv/mcp/mcp-agent`]
    pub agent_path: Option<String>,
    /// Run on the node to restart its agent [default: `systemctl restart
    /// mcp-agent.service`].
    pub restart: Option<String>,
    /// Run on the node to print the end of the agent's log when an upgrade fails
    /// [default: `journalctl -u mcp-agent.service -n 20 --no-pager`].
    pub logs: Option<String>,
}

/// A list of arguments, written as an array or as one string split at whitespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Words {
    List(Vec<String>),
    Line(String),
}

impl Words {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Words::List(words) => words.clone(),
            Words::Line(line) => line.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// The CLI config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub master: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeSettings>,
}

/// `~/.config/mcp`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("mcp"))
}

impl Config {
    /// Loads `path`, or the default file when `path` is None (missing default = empty).
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), CliError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_dir() {
                Some(dir) => (dir.join("mcp.toml"), false),
                None => return Ok((Config::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok((Config::default(), path.parent().map(Path::to_path_buf)))
            }
            Err(e) => {
                return Err(CliError::usage(format!(
                    "read config {}: {e}",
                    path.display()
                )))
            }
        };
        let config: Config = toml::from_str(&text)
            .map_err(|e| CliError::usage(format!("config {}: {e}", path.display())))?;
        Ok((config, path.parent().map(Path::to_path_buf)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_settings_for_agent_upgrade() {
        let config: Config = toml::from_str(
            r#"
            [nodes.hyperborea]
            ssh = "root@hyperborea"
            ssh_port = 2222
            ssh_options = ["-i", "/k", "-o", "LogLevel=ERROR"]
            arch = "arm64"
            agent_path = "/opt/mcp-agent"
            restart = "systemctl restart mcp-agent"
            logs = "tail -n 5 /var/log/agent.log"
            [nodes.orion]
            ssh_options = "-i /k  -o LogLevel=ERROR"
            "#,
        )
        .unwrap();
        let h = &config.nodes["hyperborea"];
        assert_eq!(h.ssh_port, Some(2222));
        assert_eq!(
            h.ssh_options.as_ref().unwrap().to_vec(),
            ["-i", "/k", "-o", "LogLevel=ERROR"]
        );
        assert_eq!(
            config.nodes["orion"].ssh_options.as_ref().unwrap().to_vec(),
            ["-i", "/k", "-o", "LogLevel=ERROR"]
        );
        assert!(toml::from_str::<Config>("[nodes.x]\nsh = \"a\"\n").is_err());
    }
}
