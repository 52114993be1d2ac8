//! Wire <-> domain conversions. Everything that arrives over the wire becomes a domain
//! type here, through `TryFrom`, and is validated with the same rules as a definition
//! file, so no other crate handles an unchecked wire value.

use mcp_types::{
    Arch, ByteSize, Component, Driver, Resources, RestartPolicy, Route, RouteMode, ServiceDef,
    Tier, Volume,
};

use crate::agent::v1 as wire;

/// A wire value that is not a valid domain value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid service spec: {0}")]
pub struct SpecError(pub String);

impl From<&ServiceDef> for wire::ServiceSpec {
    fn from(def: &ServiceDef) -> Self {
        wire::ServiceSpec {
            name: def.name.clone(),
            tier: tier_str(def.tier).to_string(),
            node: def.node.clone(),
            depends_on: def.depends_on.clone(),
            resources: Some(wire::Resources {
                cpu: def.resources.cpu,
                memory: def.resources.memory.map(|s| s.0),
                disk: def.resources.disk.map(|s| s.0),
                arch: def
                    .resources
                    .arch
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect(),
            }),
            components: def.components.iter().map(component_to_wire).collect(),
        }
    }
}

fn tier_str(tier: Tier) -> &'static str {
    match tier {
        Tier::Worker => "worker",
        Tier::Core => "core",
    }
}

fn component_to_wire(c: &Component) -> wire::ComponentSpec {
    wire::ComponentSpec {
        name: c.name.clone(),
        driver: match c.driver {
            Driver::Container => "container",
            Driver::Exec => "exec",
        }
        .to_string(),
        image: c.image.clone(),
        command: c.command.clone(),
        env: c.env.clone().into_iter().collect(),
        volumes: c.volumes.iter().map(|v| v.to_string()).collect(),
        restart: c.restart.as_str().to_string(),
        routes: c
            .routes
            .iter()
            .map(|r| wire::RouteSpec {
                name: r.name.clone(),
                port: u32::from(r.port),
                mode: route_mode_str(r.mode).to_string(),
                public: r.public,
                hostname: r.hostname.clone(),
                backend_tls: r.backend_tls,
                proxy_protocol: r.proxy_protocol,
            })
            .collect(),
        memory: c.memory.map(|m| m.0),
        cpu: c.cpu,
    }
}

/// `l7` or `l4`.
pub fn route_mode_str(mode: RouteMode) -> &'static str {
    match mode {
        RouteMode::L7 => "l7",
        RouteMode::L4 => "l4",
    }
}

impl TryFrom<wire::ServiceSpec> for ServiceDef {
    type Error = SpecError;

    fn try_from(spec: wire::ServiceSpec) -> Result<Self, SpecError> {
        let tier = match spec.tier.as_str() {
            "" | "worker" => Tier::Worker,
            "core" => Tier::Core,
            other => return Err(SpecError(format!("tier: unknown tier {other:?}"))),
        };
        let resources = match spec.resources {
            None => Resources::default(),
            Some(r) => Resources {
                cpu: r.cpu,
                memory: r.memory.map(ByteSize),
                disk: r.disk.map(ByteSize),
                arch: r
                    .arch
                    .iter()
                    .map(|a| {
                        a.parse::<Arch>()
                            .map_err(|_| SpecError(format!("resources.arch: unknown arch {a:?}")))
                    })
                    .collect::<Result<_, _>>()?,
            },
        };
        let components = spec
            .components
            .into_iter()
            .enumerate()
            .map(|(i, c)| component_from_wire(i, c))
            .collect::<Result<_, _>>()?;
        let def = ServiceDef {
            name: spec.name,
            tier,
            node: spec.node,
            depends_on: spec.depends_on,
            resources,
            components,
        };
        def.validate().map_err(|errors| {
            SpecError(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(def)
    }
}

fn component_from_wire(i: usize, c: wire::ComponentSpec) -> Result<Component, SpecError> {
    let at = |key: &str, msg: String| SpecError(format!("components[{i}].{key}: {msg}"));
    let driver = match c.driver.as_str() {
        "" | "container" => Driver::Container,
        "exec" => Driver::Exec,
        other => return Err(at("driver", format!("unknown driver {other:?}"))),
    };
    let restart = match c.restart.as_str() {
        "" | "unless-stopped" => RestartPolicy::UnlessStopped,
        "no" => RestartPolicy::No,
        "on-failure" => RestartPolicy::OnFailure,
        "always" => RestartPolicy::Always,
        other => return Err(at("restart", format!("unknown restart policy {other:?}"))),
    };
    let volumes = c
        .volumes
        .iter()
        .map(|v| {
            v.parse::<Volume>()
                .map_err(|e| at("volumes", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let routes = c
        .routes
        .into_iter()
        .enumerate()
        .map(|(j, r)| {
            let port = u16::try_from(r.port).map_err(|_| {
                at(
                    &format!("routes[{j}].port"),
                    format!("port {} is out of range 1-65535", r.port),
                )
            })?;
            let mode = match r.mode.as_str() {
                "" | "l7" => RouteMode::L7,
                "l4" => RouteMode::L4,
                other => {
                    return Err(at(
                        &format!("routes[{j}].mode"),
                        format!("unknown mode {other:?}"),
                    ))
                }
            };
            Ok(Route {
                name: r.name,
                port,
                mode,
                public: r.public,
                hostname: r.hostname,
                backend_tls: r.backend_tls,
                proxy_protocol: r.proxy_protocol,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Component {
        name: c.name,
        driver,
        image: c.image,
        command: c.command,
        env: c.env.into_iter().collect(),
        volumes,
        restart,
        routes,
        memory: c.memory.map(mcp_types::ByteSize),
        cpu: c.cpu,
    })
}

/// A service name from a request: a DNS label, or InvalidArgument.
pub fn check_service_name(service: &str) -> Result<(), tonic::Status> {
    mcp_types::name::check_dns_label(service)
        .map_err(|e| tonic::Status::invalid_argument(format!("service: {e}")))
}
