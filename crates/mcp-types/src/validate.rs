//! The rules a service definition must satisfy, checked on the domain types so
//! the CLI (`mcp validate`), the master and the agents apply the same ones.

use std::collections::{BTreeMap, BTreeSet};

use crate::name::{check_dns_label, check_hostname};
use crate::service::{
    Component, Driver, FieldError, Route, RouteMode, ServiceDef, Volume, MAX_COMPONENTS, MAX_ROUTES,
};
use crate::size::ByteSize;

/// How far floating-point sums of cores may stray before they count as more.
const CPU_EPSILON: f64 = 1e-9;

/// Collects problems in the order the rules find them.
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(key, message));
    }
}

impl ServiceDef {
    /// Checks every rule and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors(Vec::new());
        self.check_names(&mut errors);
        self.check_resources(&mut errors);
        self.check_components(&mut errors);
        self.check_limits(&mut errors);
        if errors.0.is_empty() {
            Ok(())
        } else {
            Err(errors.0)
        }
    }

    fn check_names(&self, errors: &mut Errors) {
        if self.name.is_empty() {
            errors.push(
                "name",
                "name is required: the service's DNS label, e.g. name = \"metacrypt\"",
            );
        } else if let Err(why) = check_dns_label(&self.name) {
            errors.push("name", format!("service name {why}"));
        }
        if let Some(node) = &self.node {
            if let Err(why) = check_dns_label(node) {
                errors.push("node", format!("node (a node or pool name) {why}"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, dep) in self.depends_on.iter().enumerate() {
            let key = format!("depends_on[{i}]");
            if let Err(why) = check_dns_label(dep) {
                errors.push(key, format!("dependency {why}"));
            } else if *dep == self.name {
                errors.push(key, format!("service {dep:?} cannot depend on itself"));
            } else if !seen.insert(dep.as_str()) {
                errors.push(key, format!("{dep:?} is listed twice in depends_on"));
            }
        }
    }

    fn check_resources(&self, errors: &mut Errors) {
        let r = &self.resources;
        if let Some(cpu) = r.cpu {
            if !cpu.is_finite() || cpu <= 0.0 {
                errors.push(
                    "resources.cpu",
                    format!("cpu {cpu} is not a positive number of cores, e.g. 0.5"),
                );
            }
        }
        for (field, size) in [("memory", r.memory), ("disk", r.disk)] {
            if size.is_some_and(|s| s.0 == 0) {
                errors.push(
                    format!("resources.{field}"),
                    format!("{field} must be more than 0 bytes; leave it out to request none"),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, arch) in r.arch.iter().enumerate() {
            if !seen.insert(*arch) {
                errors.push(
                    format!("resources.arch[{i}]"),
                    format!("arch {:?} is listed twice", arch.as_str()),
                );
            }
        }
    }

    /// Components' own `memory`/`cpu`: positive, within the service's `[resources]`
    /// value when it has one, and leaving something for the components without their
    /// own (a share of 0 would mean "unlimited" to a container runtime).
    fn check_limits(&self, errors: &mut Errors) {
        for (i, c) in self.components.iter().enumerate() {
            if c.memory.is_some_and(|m| m.0 == 0) {
                errors.push(
                    format!("components[{i}].memory"),
                    "memory must be more than 0 bytes; leave it out to take a share of [resources] memory",
                );
            }
            if let Some(cpu) = c.cpu {
                if !cpu.is_finite() || cpu <= 0.0 {
                    errors.push(
                        format!("components[{i}].cpu"),
                        format!("cpu {cpu} is not a positive number of cores, e.g. 0.25"),
                    );
                }
            }
        }
        let unset = |has: &dyn Fn(&Component) -> bool| -> Vec<&str> {
            self.components
                .iter()
                .filter(|c| !has(c))
                .map(|c| c.name.as_str())
                .collect()
        };
        if let Some(total) = self.resources.memory.filter(|t| t.0 > 0) {
            let mut sum = 0u64;
            let mut over = false;
            for (i, c) in self.components.iter().enumerate() {
                let Some(own) = c.memory.filter(|m| m.0 > 0) else {
                    continue;
                };
                sum = sum.saturating_add(own.0);
                if sum > total.0 && !over {
                    over = true;
                    errors.push(
                        format!("components[{i}].memory"),
                        format!(
                            "the components' own memory adds up to {} here, more than the service's [resources] memory {total}",
                            ByteSize(sum)
                        ),
                    );
                }
            }
            let others = unset(&|c| c.memory.is_some());
            let left = total.0.saturating_sub(sum);
            if !over && !others.is_empty() && left / (others.len() as u64) == 0 {
                errors.push(
                    "resources.memory",
                    format!(
                        "memory {total} leaves nothing for {} after the components' own memory",
                        others.join(", ")
                    ),
                );
            }
        }
        if let Some(total) = self.resources.cpu.filter(|t| t.is_finite() && *t > 0.0) {
            let mut sum = 0.0;
            let mut over = false;
            for (i, c) in self.components.iter().enumerate() {
                let Some(own) = c.cpu.filter(|c| c.is_finite() && *c > 0.0) else {
                    continue;
                };
                sum += own;
                if sum > total + CPU_EPSILON && !over {
                    over = true;
                    errors.push(
                        format!("components[{i}].cpu"),
                        format!(
                            "the components' own cpu adds up to {sum} here, more than the service's [resources] cpu {total}"
                        ),
                    );
                }
            }
            let others = unset(&|c| c.cpu.is_some());
            if !over && !others.is_empty() && total - sum <= CPU_EPSILON {
                errors.push(
                    "resources.cpu",
                    format!(
                        "cpu {total} leaves nothing for {} after the components' own cpu",
                        others.join(", ")
                    ),
                );
            }
        }
    }

    fn check_components(&self, errors: &mut Errors) {
        if self.components.is_empty() {
            errors.push(
                "components",
                "a service needs at least one component ([[components]] with a name and an image)",
            );
        }
        if self.components.len() > MAX_COMPONENTS {
            errors.push(
                "components",
                format!(
                    "{} components is more than the limit of {MAX_COMPONENTS} per service",
                    self.components.len()
                ),
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in self.components.iter().enumerate() {
            let at = format!("components[{i}]");
            if !c.name.is_empty() {
                if let Some(first) = names.get(c.name.as_str()) {
                    errors.push(
                        format!("{at}.name"),
                        format!(
                            "component name {:?} is already used by components[{first}]; names are unique in a service",
                            c.name
                        ),
                    );
                } else {
                    names.insert(&c.name, i);
                }
            }
            check_component(&self.name, c, &at, errors);
        }
    }
}

fn check_component(service: &str, c: &Component, at: &str, errors: &mut Errors) {
    if c.name.is_empty() {
        errors.push(
            format!("{at}.name"),
            "component name is required: a DNS label unique in the service",
        );
    } else if let Err(why) = check_dns_label(&c.name) {
        errors.push(format!("{at}.name"), format!("component name {why}"));
    }
    match c.driver {
        Driver::Container => match &c.image {
            None => errors.push(
                format!("{at}.image"),
                "image is required by the container driver (or set driver = \"exec\" with a command)",
            ),
            Some(image) if image.is_empty() => {
                errors.push(format!("{at}.image"), "image is empty; name a container image")
            }
            Some(image) if image.chars().any(char::is_whitespace) => errors.push(
                format!("{at}.image"),
                format!("image {image:?} contains whitespace, which no image reference has"),
            ),
            Some(_) => {}
        },
        Driver::Exec => {
            if c.image.is_some() {
                errors.push(
                    format!("{at}.image"),
                    "the exec driver runs `command` directly and takes no image",
                );
            }
            if c.command.first().is_none_or(|p| p.is_empty()) {
                errors.push(
                    format!("{at}.command"),
                    "the exec driver needs a command whose first word is the program to run",
                );
            }
        }
    }
    for (i, word) in c.command.iter().enumerate() {
        if word.contains('\0') {
            errors.push(format!("{at}.command[{i}]"), "command contains a NUL byte");
        }
    }
    for (key, value) in &c.env {
        let path = format!("{at}.env.{}", crate::definition::key_segment(key));
        if let Err(why) = check_env_key(key) {
            errors.push(path, why);
        } else if value.contains('\0') {
            errors.push(path, format!("value of {key} contains a NUL byte"));
        }
    }
    for (i, volume) in c.volumes.iter().enumerate() {
        if let Err(why) = check_volume(service, volume) {
            errors.push(format!("{at}.volumes[{i}]"), why);
        }
    }
    check_routes(c, at, errors);
}

fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "environment variable name {key:?} is not [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    if key.starts_with("MCP_") {
        return Err(format!(
            "environment variable {key} starts with MCP_, which is reserved for MCP's own variables"
        ));
    }
    Ok(())
}

fn check_volume(service: &str, v: &Volume) -> Result<(), String> {
    let srv = format!("/srv/{service}");
    if v.host.contains('\0') || v.container.contains('\0') {
        return Err("volume contains a NUL byte".to_string());
    }
    if !v.host.starts_with('/') {
        return Err(format!(
            "volume host path {:?} is relative; it must be {srv} or a path below it",
            v.host
        ));
    }
    let parts: Vec<&str> = v.host[1..].split('/').collect();
    if parts.contains(&"..") {
        return Err(format!(
            "volume host path {:?} contains '..', which escapes {srv}",
            v.host
        ));
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err(format!(
            "volume host path {:?} has an empty or '.' component; write it plainly, e.g. {srv}/data",
            v.host
        ));
    }
    // With an invalid service name the directory is unknown; the name's own
    // error says so, and a second one here would only repeat it.
    if check_dns_label(service).is_ok() && v.host_relative(service).is_none() {
        return Err(format!(
            "volume host path {:?} is outside {srv}; a service mounts only its own directory or paths below it",
            v.host
        ));
    }
    if !v.container.starts_with('/') {
        return Err(format!(
            "volume container path {:?} is relative; it must be absolute",
            v.container
        ));
    }
    if v.container.split('/').any(|p| p == "..") {
        return Err(format!(
            "volume container path {:?} contains '..'; write the absolute path plainly",
            v.container
        ));
    }
    Ok(())
}

fn check_routes(c: &Component, at: &str, errors: &mut Errors) {
    if c.routes.len() > MAX_ROUTES {
        errors.push(
            format!("{at}.routes"),
            format!(
                "{} routes is more than the limit of {MAX_ROUTES} per component",
                c.routes.len()
            ),
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, r) in c.routes.iter().enumerate() {
        let at = format!("{at}.routes[{i}]");
        if !r.name.is_empty() {
            if let Some(first) = names.get(r.name.as_str()) {
                errors.push(
                    format!("{at}.name"),
                    format!(
                        "route name {:?} is already used by routes[{first}]; names are unique in a component",
                        r.name
                    ),
                );
            } else {
                names.insert(&r.name, i);
            }
        }
        if r.port != 0 {
            if let Some(first) = ports.get(&r.port) {
                errors.push(
                    format!("{at}.port"),
                    format!(
                        "port {} is already used by routes[{first}]; two routes of a component cannot share a port",
                        r.port
                    ),
                );
            } else {
                ports.insert(r.port, i);
            }
        }
        check_route(r, &at, errors);
    }
}

fn check_route(r: &Route, at: &str, errors: &mut Errors) {
    if r.name.is_empty() {
        errors.push(
            format!("{at}.name"),
            "route name is required: a DNS label unique in the component",
        );
    } else if let Err(why) = check_dns_label(&r.name) {
        errors.push(format!("{at}.name"), format!("route name {why}"));
    }
    if r.port == 0 {
        errors.push(format!("{at}.port"), "port 0 is out of range 1-65535");
    }
    match (&r.hostname, r.public) {
        (None, true) => errors.push(
            format!("{at}.hostname"),
            "a public route needs a hostname: the name the internet reaches it by",
        ),
        (Some(h), true) => {
            if let Err(why) = check_hostname(h) {
                errors.push(format!("{at}.hostname"), why);
            }
        }
        (Some(h), false) => errors.push(
            format!("{at}.hostname"),
            format!("hostname {h:?} is only used by public routes; set public = true or remove it"),
        ),
        (None, false) => {}
    }
    if r.mode == RouteMode::L4 && !r.backend_tls {
        errors.push(
            format!("{at}.backend_tls"),
            "backend_tls is only used by l7 routes; an l4 route passes TLS through to the component",
        );
    }
    if r.proxy_protocol && !r.public {
        errors.push(
            format!("{at}.proxy_protocol"),
            "proxy_protocol is only used by public routes: the edge sends the header",
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::service::{Arch, Resources, RestartPolicy, Tier};
    use crate::size::ByteSize;

    fn valid() -> ServiceDef {
        ServiceDef {
            name: "metacrypt".into(),
            tier: Tier::Worker,
            node: None,
            depends_on: vec!["mcias".into()],
            resources: Resources::default(),
            components: vec![Component {
                name: "api".into(),
                driver: Driver::Container,
                image: Some("mcr.example.net/metacrypt:v1".into()),
                command: vec![],
                env: BTreeMap::new(),
                volumes: vec!["/srv/metacrypt:/srv/metacrypt".parse().unwrap()],
                restart: RestartPolicy::UnlessStopped,
                routes: vec![Route {
                    name: "https".into(),
                    port: 8443,
                    mode: RouteMode::L7,
                    public: true,
                    hostname: Some("metacrypt.metacircular.net".into()),
                    backend_tls: true,
                    proxy_protocol: false,
                }],
                memory: None,
                cpu: None,
            }],
        }
    }

    /// Applies `edit` to a valid definition and returns the errors as
    /// `key: message` lines.
    fn errors_of(edit: impl FnOnce(&mut ServiceDef)) -> Vec<String> {
        let mut def = valid();
        edit(&mut def);
        match def.validate() {
            Ok(()) => vec![],
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_base_definition_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    type Edit = fn(&mut ServiceDef);

    #[test]
    fn each_rule_reports_its_key() {
        let cases: Vec<(&str, Edit, &str, &str)> = vec![
            (
                "missing name",
                |d| d.name.clear(),
                "name",
                "name is required",
            ),
            (
                "bad name",
                |d| d.name = "Meta_Crypt".into(),
                "name",
                "uppercase",
            ),
            (
                "bad node",
                |d| d.node = Some("orion.lan".into()),
                "node",
                "contains '.'",
            ),
            (
                "bad dependency",
                |d| d.depends_on = vec!["-x".into()],
                "depends_on[0]",
                "starts or ends",
            ),
            (
                "self dependency",
                |d| d.depends_on = vec!["metacrypt".into()],
                "depends_on[0]",
                "depend on itself",
            ),
            (
                "dup dependency",
                |d| d.depends_on = vec!["a".into(), "a".into()],
                "depends_on[1]",
                "listed twice",
            ),
            (
                "cpu zero",
                |d| d.resources.cpu = Some(0.0),
                "resources.cpu",
                "cpu 0 is not a positive",
            ),
            (
                "cpu nan",
                |d| d.resources.cpu = Some(f64::NAN),
                "resources.cpu",
                "cpu NaN",
            ),
            (
                "cpu inf",
                |d| d.resources.cpu = Some(f64::INFINITY),
                "resources.cpu",
                "cpu inf",
            ),
            (
                "memory zero",
                |d| d.resources.memory = Some(ByteSize(0)),
                "resources.memory",
                "more than 0",
            ),
            (
                "disk zero",
                |d| d.resources.disk = Some(ByteSize(0)),
                "resources.disk",
                "more than 0",
            ),
            (
                "dup arch",
                |d| d.resources.arch = vec![Arch::Arm64, Arch::Arm64],
                "resources.arch[1]",
                "\"arm64\" is listed twice",
            ),
            (
                "component memory zero",
                |d| d.components[0].memory = Some(ByteSize(0)),
                "components[0].memory",
                "more than 0 bytes",
            ),
            (
                "component cpu negative",
                |d| d.components[0].cpu = Some(-1.0),
                "components[0].cpu",
                "cpu -1 is not a positive",
            ),
            (
                "component memory over the service's",
                |d| {
                    d.resources.memory = Some(ByteSize::mib(64));
                    d.components[0].memory = Some(ByteSize::mib(65));
                },
                "components[0].memory",
                "adds up to 65MiB here, more than the service's [resources] memory 64MiB",
            ),
            (
                "component cpu over the service's",
                |d| {
                    d.resources.cpu = Some(0.5);
                    d.components[0].cpu = Some(0.75);
                },
                "components[0].cpu",
                "adds up to 0.75 here, more than the service's [resources] cpu 0.5",
            ),
            (
                "nothing left for the others",
                |d| {
                    d.resources.memory = Some(ByteSize::mib(64));
                    d.components[0].memory = Some(ByteSize::mib(64));
                    let mut other = d.components[0].clone();
                    other.name = "worker".into();
                    other.routes.clear();
                    other.memory = None;
                    d.components.push(other);
                },
                "resources.memory",
                "memory 64MiB leaves nothing for worker",
            ),
            (
                "no cpu left for the others",
                |d| {
                    d.resources.cpu = Some(1.0);
                    d.components[0].cpu = Some(1.0);
                    let mut other = d.components[0].clone();
                    other.name = "worker".into();
                    other.routes.clear();
                    other.cpu = None;
                    d.components.push(other);
                },
                "resources.cpu",
                "cpu 1 leaves nothing for worker",
            ),
            (
                "no components",
                |d| d.components.clear(),
                "components",
                "at least one component",
            ),
            (
                "too many components",
                |d| {
                    let c = d.components[0].clone();
                    d.components = (0..=MAX_COMPONENTS)
                        .map(|i| Component {
                            name: format!("c{i}"),
                            ..c.clone()
                        })
                        .collect();
                },
                "components",
                "33 components is more than the limit of 32",
            ),
            (
                "dup component",
                |d| d.components.push(d.components[0].clone()),
                "components[1].name",
                "already used by components[0]",
            ),
            (
                "component no name",
                |d| d.components[0].name.clear(),
                "components[0].name",
                "component name is required",
            ),
            (
                "component bad name",
                |d| d.components[0].name = "API".into(),
                "components[0].name",
                "uppercase",
            ),
            (
                "no image",
                |d| d.components[0].image = None,
                "components[0].image",
                "required by the container driver",
            ),
            (
                "empty image",
                |d| d.components[0].image = Some(String::new()),
                "components[0].image",
                "image is empty",
            ),
            (
                "spacey image",
                |d| d.components[0].image = Some("a b".into()),
                "components[0].image",
                "whitespace",
            ),
            (
                "exec with image",
                |d| {
                    d.components[0].driver = Driver::Exec;
                    d.components[0].command = vec!["/bin/x".into()];
                },
                "components[0].image",
                "takes no image",
            ),
            (
                "exec without command",
                |d| {
                    d.components[0].driver = Driver::Exec;
                    d.components[0].image = None;
                },
                "components[0].command",
                "needs a command",
            ),
            (
                "exec empty program",
                |d| {
                    d.components[0].driver = Driver::Exec;
                    d.components[0].image = None;
                    d.components[0].command = vec![String::new()];
                },
                "components[0].command",
                "needs a command",
            ),
            (
                "nul in command",
                |d| d.components[0].command = vec!["a\0".into()],
                "components[0].command[0]",
                "NUL",
            ),
            (
                "bad env key",
                |d| {
                    d.components[0].env.insert("1X".into(), "v".into());
                },
                "components[0].env.1X",
                "[A-Za-z_]",
            ),
            (
                "dashed env key",
                |d| {
                    d.components[0].env.insert("A-B".into(), "v".into());
                },
                "components[0].env.A-B",
                "not [A-Za-z_]",
            ),
            (
                "dotted env key",
                |d| {
                    d.components[0].env.insert("A.B".into(), "v".into());
                },
                "components[0].env.\"A.B\"",
                "not [A-Za-z_]",
            ),
            (
                "reserved env key",
                |d| {
                    d.components[0].env.insert("MCP_NODE".into(), "v".into());
                },
                "components[0].env.MCP_NODE",
                "reserved",
            ),
            (
                "nul env value",
                |d| {
                    d.components[0].env.insert("X".into(), "a\0".into());
                },
                "components[0].env.X",
                "NUL",
            ),
            (
                "volume escapes",
                |d| d.components[0].volumes[0].host = "/srv/metacrypt/../mcias".into(),
                "components[0].volumes[0]",
                "escapes /srv/metacrypt",
            ),
            (
                "volume elsewhere",
                |d| d.components[0].volumes[0].host = "/etc".into(),
                "components[0].volumes[0]",
                "outside /srv/metacrypt",
            ),
            (
                "volume prefix trick",
                |d| d.components[0].volumes[0].host = "/srv/metacrypt-other".into(),
                "components[0].volumes[0]",
                "outside",
            ),
            (
                "volume relative",
                |d| d.components[0].volumes[0].host = "srv/metacrypt".into(),
                "components[0].volumes[0]",
                "relative",
            ),
            (
                "volume double slash",
                |d| d.components[0].volumes[0].host = "/srv//metacrypt".into(),
                "components[0].volumes[0]",
                "empty or '.'",
            ),
            (
                "volume trailing slash",
                |d| d.components[0].volumes[0].host = "/srv/metacrypt/".into(),
                "components[0].volumes[0]",
                "empty or '.'",
            ),
            (
                "volume dot",
                |d| d.components[0].volumes[0].host = "/srv/metacrypt/./x".into(),
                "components[0].volumes[0]",
                "empty or '.'",
            ),
            (
                "volume container relative",
                |d| d.components[0].volumes[0].container = "data".into(),
                "components[0].volumes[0]",
                "container path \"data\" is relative",
            ),
            (
                "volume container dotdot",
                |d| d.components[0].volumes[0].container = "/a/../b".into(),
                "components[0].volumes[0]",
                "contains '..'",
            ),
            (
                "volume nul",
                |d| d.components[0].volumes[0].container = "/a\0".into(),
                "components[0].volumes[0]",
                "NUL",
            ),
            (
                "too many routes",
                |d| {
                    let r = d.components[0].routes[0].clone();
                    d.components[0].routes = (0..=MAX_ROUTES)
                        .map(|i| Route {
                            name: format!("r{i}"),
                            port: 1000 + i as u16,
                            ..r.clone()
                        })
                        .collect();
                },
                "components[0].routes",
                "33 routes is more than the limit of 32",
            ),
            (
                "dup route name",
                |d| {
                    let mut r = d.components[0].routes[0].clone();
                    r.port = 9000;
                    d.components[0].routes.push(r);
                },
                "components[0].routes[1].name",
                "already used by routes[0]",
            ),
            (
                "dup route port",
                |d| {
                    let mut r = d.components[0].routes[0].clone();
                    r.name = "other".into();
                    d.components[0].routes.push(r);
                },
                "components[0].routes[1].port",
                "port 8443 is already used by routes[0]",
            ),
            (
                "route no name",
                |d| d.components[0].routes[0].name.clear(),
                "components[0].routes[0].name",
                "route name is required",
            ),
            (
                "route bad name",
                |d| d.components[0].routes[0].name = "h_s".into(),
                "components[0].routes[0].name",
                "contains '_'",
            ),
            (
                "port zero",
                |d| d.components[0].routes[0].port = 0,
                "components[0].routes[0].port",
                "out of range",
            ),
            (
                "public without hostname",
                |d| d.components[0].routes[0].hostname = None,
                "components[0].routes[0].hostname",
                "needs a hostname",
            ),
            (
                "bad hostname",
                |d| d.components[0].routes[0].hostname = Some("metacrypt".into()),
                "components[0].routes[0].hostname",
                "one label",
            ),
            (
                "private with hostname",
                |d| d.components[0].routes[0].public = false,
                "components[0].routes[0].hostname",
                "only used by public routes",
            ),
            (
                "l4 backend_tls",
                |d| {
                    d.components[0].routes[0].mode = RouteMode::L4;
                    d.components[0].routes[0].backend_tls = false;
                },
                "components[0].routes[0].backend_tls",
                "only used by l7",
            ),
        ];
        for (what, edit, key, want) in cases {
            let errs = errors_of(edit);
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&format!("{key}: ")) && e.contains(want)),
                "{what}: expected {key}: ...{want}..., got {errs:#?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let errs = errors_of(|d| {
            d.name = "X".into();
            d.components[0].image = None;
            d.components[0].routes[0].port = 0;
        });
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn valid_variants_pass() {
        let ok: Vec<Edit> = vec![
            |d| d.components[0].volumes[0].host = "/srv/metacrypt/data/x".into(),
            |d| d.components[0].volumes[0].container = "/".into(),
            |d| {
                d.components[0].driver = Driver::Exec;
                d.components[0].image = None;
                d.components[0].command = vec!["/usr/bin/metacrypt".into(), "serve".into()];
            },
            |d| {
                d.components[0].routes[0].mode = RouteMode::L4;
            },
            |d| {
                d.components[0].routes[0].public = false;
                d.components[0].routes[0].hostname = None;
                d.components[0].routes[0].backend_tls = false;
            },
            |d| {
                d.components[0]
                    .env
                    .insert("_RUST_LOG2".into(), "info\nx".into());
            },
            |d| {
                d.components[0].env.insert("MCPX".into(), "".into());
            },
            |d| d.resources.cpu = Some(0.01),
            |d| d.resources.arch = vec![Arch::Amd64, Arch::Arm64],
            |d| d.node = Some("pi-pool".into()),
        ];
        for (i, edit) in ok.into_iter().enumerate() {
            assert_eq!(errors_of(edit), Vec::<String>::new(), "variant {i}");
        }
    }
}
