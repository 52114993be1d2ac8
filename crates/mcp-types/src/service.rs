//! The domain types of a service definition (service, component, route,
//! resources) shared by the CLI, the master and the agents, over JSON too.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::size::ByteSize;

pub use crate::order::order_by_dependencies;

/// The most components one service may have.
pub const MAX_COMPONENTS: usize = 32;
/// The most routes one component may have.
pub const MAX_ROUTES: usize = 32;
/// The largest definition file `parse_definition` reads.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

/// One service: what an operator deploys with `mcp deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// A DNS label; the service's internal name is `<name>.svc.mcp.<domain>`.
    pub name: String,
    /// Where placement puts it when `node` is not set.
    #[serde(default)]
    pub tier: Tier,
    /// A node or pool name; overrides `tier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Services deployed and running before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// What placement must find on a node.
    #[serde(default)]
    pub resources: Resources,
    /// The processes that make up the service; at least one.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// Where a service runs when it names no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Any worker node (the default).
    #[default]
    Worker,
    /// The master node.
    Core,
}

/// What placement must find on a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Cores requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Disk requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
    /// Architectures the images run on; empty means any.
    #[serde(default)]
    pub arch: Vec<Arch>,
}

/// A CPU architecture of a node or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM (Raspberry Pi 4 and later).
    Arm64,
}

impl Arch {
    /// Every known architecture.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The name used in definitions and configs: `"amd64"` or `"arm64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown arch {s:?}; known: \"amd64\", \"arm64\""))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One process of a service: a container or a supervised program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// A DNS label, unique in the service.
    pub name: String,
    /// How the agent runs it.
    #[serde(default)]
    pub driver: Driver,
    /// The container image; required by the container driver, refused by exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The command line; required by the exec driver.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bind mounts from under `/srv/<service>`.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// When the runtime restarts it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The ports it serves.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Its own share of `[resources] memory`, its hard memory limit; else an even
    /// split of what the service's memory leaves (`ServiceDef::limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Its own share of `[resources] cpu` (cores), its CPU quota; else an even split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
}

/// How the agent runs a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A container from `image` (the default).
    #[default]
    Container,
    /// A plain supervised process running `command`.
    Exec,
}

impl Driver {
    /// The name used in definitions: `"container"` or `"exec"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Container => "container",
            Driver::Exec => "exec",
        }
    }
}

/// A bind mount: `HOST:CONTAINER`, optionally `:ro` or `:rw`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Volume {
    /// The host path, under `/srv/<service>`.
    pub host: String,
    /// The path inside the container.
    pub container: String,
    /// Mounted read-only (`:ro`).
    pub read_only: bool,
}

impl Volume {
    /// The part of `host` below `/srv/<service>`: `""` for the directory itself,
    /// `"data/x"` for `/srv/<service>/data/x`, `None` when `host` is elsewhere.
    pub fn host_relative(&self, service: &str) -> Option<&str> {
        let rest = self.host.strip_prefix("/srv/")?.strip_prefix(service)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }
}

impl FromStr for Volume {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [host, container] => (*host, *container, false),
            [host, container, "ro"] => (*host, *container, true),
            [host, container, "rw"] => (*host, *container, false),
            [_, _, mode] => {
                return Err(format!(
                    "volume {s:?} has mode {mode:?}; the mode is \"ro\" or \"rw\""
                ))
            }
            _ => {
                return Err(format!(
                    "volume {s:?} is not HOST:CONTAINER or HOST:CONTAINER:ro|rw"
                ))
            }
        };
        if host.is_empty() || container.is_empty() {
            return Err(format!(
                "volume {s:?} has an empty path; write HOST:CONTAINER"
            ));
        }
        Ok(Volume {
            host: host.to_string(),
            container: container.to_string(),
            read_only,
        })
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.container)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Serialize for Volume {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// When the runtime restarts a component that stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    No,
    /// When it exits non-zero.
    OnFailure,
    /// Whenever it stops.
    Always,
    /// Whenever it stops, unless an operator stopped it (the default).
    #[default]
    UnlessStopped,
}

impl RestartPolicy {
    /// Every policy.
    pub const ALL: [RestartPolicy; 4] = [
        RestartPolicy::No,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
        RestartPolicy::UnlessStopped,
    ];

    /// The name used in definitions and by container runtimes.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

/// A port a component serves, and how the edge reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Unique in the component.
    pub name: String,
    /// The port the component listens on.
    pub port: u16,
    /// Where TLS ends.
    #[serde(default)]
    pub mode: RouteMode,
    /// Reachable from the internet through the edge.
    #[serde(default)]
    pub public: bool,
    /// The public name; required when `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// l7 only: the component serves TLS with its internal certificate.
    #[serde(default = "default_true")]
    pub backend_tls: bool,
    /// Public routes: the edge sends a PROXY protocol v2 header to the backend.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_true() -> bool {
    true
}

/// Where TLS ends for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// TLS ends at the edge (the default).
    #[default]
    L7,
    /// TLS passes through to the component.
    L4,
}

impl RouteMode {
    /// The name used in definitions: `"l7"` or `"l4"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::L7 => "l7",
            RouteMode::L4 => "l4",
        }
    }
}

impl Tier {
    /// The name used in definitions: `"worker"` or `"core"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Worker => "worker",
            Tier::Core => "core",
        }
    }
}

/// One problem `ServiceDef::validate` found, at a key path such as
/// `components[0].routes[1].port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{key}: {message}")]
pub struct FieldError {
    /// Where, as a path of definition keys.
    pub key: String,
    /// What is wrong and why.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl ServiceDef {
    /// A stable digest of the definition (FNV-1a 64 over its canonical JSON,
    /// as 16 hex digits): equal definitions give equal digests, so a changed
    /// digest means a changed spec.
    pub fn digest(&self) -> String {
        // Serializing plain data with string keys cannot fail; an empty string
        // would still give a stable digest.
        let json = serde_json::to_string(self).unwrap_or_default();
        digest_hex(json.as_bytes())
    }
}

/// FNV-1a (64 bit) of `bytes` as 16 hex digits: stable across builds, platforms and
/// versions, so it can be stored and compared. Not a cryptographic hash.
pub fn digest_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn volume_forms() {
        let v: Volume = "/srv/a:/data".parse().unwrap();
        assert_eq!(
            v,
            Volume {
                host: "/srv/a".into(),
                container: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(v.to_string(), "/srv/a:/data");
        let ro: Volume = "/srv/a/x:/x:ro".parse().unwrap();
        assert!(ro.read_only);
        assert_eq!(ro.to_string(), "/srv/a/x:/x:ro");
        let rw: Volume = "/srv/a:/x:rw".parse().unwrap();
        assert!(!rw.read_only);
        let bad: &[(&str, &str)] = &[
            ("/srv/a", "not HOST:CONTAINER"),
            ("/srv/a:/b:ro:x", "not HOST:CONTAINER"),
            ("/srv/a:/b:rx", "mode \"rx\""),
            (":/b", "empty path"),
            ("/srv/a:", "empty path"),
        ];
        for (s, want) in bad {
            let err = s.parse::<Volume>().unwrap_err();
            assert!(err.contains(want), "{s:?}: {err}");
        }
        assert_eq!(serde_json::to_string(&ro).unwrap(), "\"/srv/a/x:/x:ro\"");
        assert_eq!(
            serde_json::from_str::<Volume>("\"/srv/a/x:/x:ro\"").unwrap(),
            ro
        );
    }

    #[test]
    fn host_relative() {
        let vol = |h: &str| Volume {
            host: h.into(),
            container: "/c".into(),
            read_only: false,
        };
        assert_eq!(vol("/srv/app").host_relative("app"), Some(""));
        assert_eq!(vol("/srv/app/data/x").host_relative("app"), Some("data/x"));
        assert_eq!(vol("/srv/apple").host_relative("app"), None);
        assert_eq!(vol("/srv/other").host_relative("app"), None);
        assert_eq!(vol("/var/app").host_relative("app"), None);
        assert_eq!(vol("srv/app").host_relative("app"), None);
    }

    #[test]
    fn enums_by_name() {
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Arm64));
        assert_eq!(Arch::Amd64.to_string(), "amd64");
        assert!("x86"
            .parse::<Arch>()
            .unwrap_err()
            .contains("unknown arch \"x86\""));
        for p in RestartPolicy::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(serde_json::to_string(&RouteMode::L4).unwrap(), "\"l4\"");
        assert_eq!(serde_json::to_string(&Tier::Core).unwrap(), "\"core\"");
        assert_eq!(serde_json::to_string(&Driver::Exec).unwrap(), "\"exec\"");
    }

    #[test]
    fn json_defaults() {
        let def: ServiceDef = serde_json::from_str(
            r#"{"name":"a","components":[{"name":"c","image":"i","routes":[{"name":"r","port":1}]}]}"#,
        )
        .unwrap();
        assert_eq!(def.tier, Tier::Worker);
        let c = &def.components[0];
        assert_eq!(c.driver, Driver::Container);
        assert_eq!(c.restart, RestartPolicy::UnlessStopped);
        assert!(c.routes[0].backend_tls);
        assert_eq!(c.routes[0].mode, RouteMode::L7);
        let back: ServiceDef = serde_json::from_str(&serde_json::to_string(&def).unwrap()).unwrap();
        assert_eq!(back, def);
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let def: ServiceDef =
            serde_json::from_str(r#"{"name":"a","components":[{"name":"c","image":"i"}]}"#)
                .unwrap();
        let d = def.digest();
        assert_eq!(d.len(), 16);
        assert_eq!(d, def.clone().digest());
        let mut changed = def.clone();
        changed.components[0].image = Some("j".into());
        assert_ne!(changed.digest(), d);
        // A changed canonical form changes every deployed service's digest
        // (and so looks like a spec change everywhere): it must be deliberate.
        assert_eq!(d, "8905559ce1eb0704");
    }
}
