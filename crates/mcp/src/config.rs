//! The CLI's configuration (`~/.config/mcp/mcp.toml`) and how the master address is
//! chosen: `--master`, else `MCP_MASTER`, else the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// Per-node settings for `mcp agent upgrade`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub ssh: Option<String>,
    pub arch: Option<String>,
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
