//! The identity of an instance: the `mcp.digest` label that decides whether a running
//! instance is reused or replaced. It has its own explicit, versioned encoding of
//! exactly the fields that define an instance, never "serde of a struct": an agent
//! that learns a new field must not change the identity of every running instance
//! (SPEC §9). A field at its default value contributes nothing, so a field added
//! later with a default keeps every existing identity.
//!
//! Labels written by the first agents (an unprefixed digest) are recognised through
//! `legacy_digest`, which is frozen.

use mcp_types::limits::nano_cpus;
use mcp_types::{Component, Driver, Limits, RestartPolicy};

/// Prefix of identities in the current encoding.
pub const IDENTITY_V1: &str = "v1:";

/// A route as the instance publishes it: (route name, container port, host port).
pub type RoutePort = (String, u16, u16);

/// The identity of `component` of `service` on `node`, published on `address` with
/// `routes` and held to `limits`: `v1:` and the FNV-1a digest of the canonical
/// encoding. A changed limit is a changed instance (SPEC §3: replaced).
pub fn identity(
    service: &str,
    node: &str,
    address: &str,
    component: &Component,
    routes: &[RoutePort],
    limits: &Limits,
) -> String {
    let text = encode_v1(service, node, address, component, routes, limits);
    format!("{IDENTITY_V1}{}", mcp_types::digest_hex(text.as_bytes()))
}

/// Does an instance's label name the identity `current`, or the legacy identity
/// `legacy` of the same definition?
pub fn same_identity(label: &str, current: &str, legacy: &str) -> bool {
    label == current || (!label.contains(':') && label == legacy)
}

/// Appends `s` length-prefixed (`<bytes>:<s>`), so no value can run into the next.
fn put(out: &mut String, s: &str) {
    out.push(' ');
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
}

/// The canonical encoding, version 1: one line per field, in a fixed order, each
/// value length-prefixed; fields at their default value are left out.
fn encode_v1(
    service: &str,
    node: &str,
    address: &str,
    component: &Component,
    routes: &[RoutePort],
    limits: &Limits,
) -> String {
    let mut out = String::from("mcp-instance v1\n");
    let mut line = |key: &str, values: &[&str]| {
        out.push_str(key);
        for value in values {
            put(&mut out, value);
        }
        out.push('\n');
    };
    line("service", &[service]);
    line("node", &[node]);
    line("component", &[&component.name]);
    line("address", &[address]);
    if component.driver != Driver::default() {
        line("driver", &[component.driver.as_str()]);
    }
    if let Some(image) = &component.image {
        line("image", &[image]);
    }
    if !component.command.is_empty() {
        let args: Vec<&str> = component.command.iter().map(String::as_str).collect();
        line("command", &args);
    }
    // A BTreeMap: sorted by name.
    for (name, value) in &component.env {
        line("env", &[name, value]);
    }
    let mut routes: Vec<&RoutePort> = routes.iter().collect();
    routes.sort();
    for (name, port, host_port) in routes {
        line("route", &[name, &port.to_string(), &host_port.to_string()]);
    }
    // In definition order: mounts may nest.
    for volume in &component.volumes {
        let mode = if volume.read_only { "ro" } else { "rw" };
        line("volume", &[&volume.host, &volume.container, mode]);
    }
    if component.restart != RestartPolicy::default() {
        line("restart", &[component.restart.as_str()]);
    }
    // The effective limits (the component's own or its share), not the definition's
    // keys: the same limit written either way is the same instance.
    if let Some(memory) = limits.memory {
        line("memory", &[&memory.0.to_string()]);
    }
    if let Some(cpu) = limits.cpu {
        line("nano_cpus", &[&nano_cpus(cpu).to_string()]);
    }
    out
}

/// FROZEN: the identity the first agents wrote (no prefix): FNV-1a over the compact
/// JSON, keys sorted, of `{"component", "node", "ports", "service"}` where
/// `component` was the serde form of `Component` at the time. The JSON is written out
/// by hand here, field by field, so that later changes to `Component` (or serde)
/// cannot change it. Never edit this function: instances labelled with it are
/// adopted, not replaced. `ports` are (container port, host port), in route order.
pub fn legacy_digest(
    service: &str,
    node: &str,
    component: &Component,
    ports: &[(u16, u16)],
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let list = |items: Vec<String>| format!("[{}]", items.join(","));
    let command = list(component.command.iter().map(|c| q(c)).collect());
    let env = component
        .env
        .iter()
        .map(|(k, v)| format!("{}:{}", q(k), q(v)))
        .collect::<Vec<_>>()
        .join(",");
    let routes = list(
        component
            .routes
            .iter()
            .map(|r| {
                let hostname = r
                    .hostname
                    .as_ref()
                    .map(|h| format!(",\"hostname\":{}", q(h)))
                    .unwrap_or_default();
                format!(
                    "{{\"backend_tls\":{}{hostname},\"mode\":{},\"name\":{},\"port\":{},\"public\":{}}}",
                    r.backend_tls,
                    q(r.mode.as_str()),
                    q(&r.name),
                    r.port,
                    r.public
                )
            })
            .collect(),
    );
    let volumes = list(
        component
            .volumes
            .iter()
            .map(|v| q(&v.to_string()))
            .collect(),
    );
    let image = component
        .image
        .as_ref()
        .map(|i| format!(",\"image\":{}", q(i)))
        .unwrap_or_default();
    let component_json = format!(
        "{{\"command\":{command},\"driver\":{},\"env\":{{{env}}}{image},\"name\":{},\"restart\":{},\"routes\":{routes},\"volumes\":{volumes}}}",
        q(component.driver.as_str()),
        q(&component.name),
        q(component.restart.as_str()),
    );
    let ports = list(ports.iter().map(|(c, h)| format!("[{c},{h}]")).collect());
    let text = format!(
        "{{\"component\":{component_json},\"node\":{},\"ports\":{ports},\"service\":{}}}",
        q(node),
        q(service)
    );
    mcp_types::digest_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NONE: Limits = Limits {
        memory: None,
        cpu: None,
    };

    fn component(text: &str) -> Component {
        let def =
            mcp_types::parse_definition("t.toml", &format!("name = \"hello\"\n{text}")).unwrap();
        def.components.into_iter().next().unwrap()
    }

    const HELLO: &str = "[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\nrestart = \"always\"\nvolumes = [\"/srv/hello/data:/data\"]\n[components.env]\nGREETING = \"hi\"\n[[components.routes]]\nname = \"http\"\nport = 8080\n";

    /// Digests computed by the agent at 696bf7d (serde of `Component`); these labels
    /// are on running instances and must keep matching.
    #[test]
    fn the_legacy_digest_is_frozen() {
        let web = component(HELLO);
        assert_eq!(
            legacy_digest("hello", "node-a", &web, &[(8080, 40123)]),
            "ddd0b50b23b5be35"
        );
        let exec = component(
            "[[components]]\nname = \"loop\"\ndriver = \"exec\"\ncommand = [\"sleep\", \"1000\"]\n",
        );
        assert_eq!(
            legacy_digest("tick", "node-a", &exec, &[]),
            "ee0c5eda04f26fe4"
        );
    }

    #[test]
    fn identities_are_versioned_and_stable() {
        let web = component(HELLO);
        let routes = [("http".to_string(), 8080, 40123)];
        let id = identity("hello", "node-a", "127.0.0.1", &web, &routes, &NONE);
        assert!(id.starts_with("v1:"), "{id}");
        // Pinned: the encoding may never change without a new version prefix.
        assert_eq!(
            id,
            identity("hello", "node-a", "127.0.0.1", &web, &routes, &NONE)
        );
        assert_eq!(
            id,
            "v1:".to_string()
                + &mcp_types::digest_hex(
                    encode_v1("hello", "node-a", "127.0.0.1", &web, &routes, &NONE).as_bytes()
                )
        );
        let pinned = "mcp-instance v1\nservice 5:hello\nnode 6:node-a\ncomponent 3:web\naddress 9:127.0.0.1\nimage 16:mcp-test/hello:1\nenv 8:GREETING 2:hi\nroute 4:http 4:8080 5:40123\nvolume 15:/srv/hello/data 5:/data 2:rw\nrestart 6:always\n";
        assert_eq!(
            encode_v1("hello", "node-a", "127.0.0.1", &web, &routes, &NONE),
            pinned
        );
    }

    #[test]
    fn defaults_contribute_nothing_and_changes_change_the_identity() {
        let base = component("[[components]]\nname = \"web\"\nimage = \"x:1\"\n");
        let text = encode_v1("s", "n", "10.0.0.1", &base, &[], &NONE);
        assert!(
            !text.contains("restart") && !text.contains("driver"),
            "{text}"
        );
        let id = identity("s", "n", "10.0.0.1", &base, &[], &NONE);
        let explicit = component("[[components]]\nname = \"web\"\nimage = \"x:1\"\nrestart = \"unless-stopped\"\ndriver = \"container\"\n");
        assert_eq!(identity("s", "n", "10.0.0.1", &explicit, &[], &NONE), id);
        for other in [
            "[[components]]\nname = \"web\"\nimage = \"x:2\"\n",
            "[[components]]\nname = \"web\"\nimage = \"x:1\"\nrestart = \"no\"\n",
            "[[components]]\nname = \"web\"\nimage = \"x:1\"\ncommand = [\"a\"]\n",
            "[[components]]\nname = \"web\"\nimage = \"x:1\"\n[components.env]\nA = \"1\"\n",
        ] {
            assert_ne!(
                identity("s", "n", "10.0.0.1", &component(other), &[], &NONE),
                id,
                "{other}"
            );
        }
        assert_ne!(identity("s", "m", "10.0.0.1", &base, &[], &NONE), id);
        assert_ne!(identity("s", "n", "10.0.0.2", &base, &[], &NONE), id);
        assert_ne!(
            identity(
                "s",
                "n",
                "10.0.0.1",
                &base,
                &[("http".to_string(), 80, 4000)],
                &NONE
            ),
            id
        );
    }

    #[test]
    fn limits_are_part_of_the_identity() {
        let base = component("[[components]]\nname = \"web\"\nimage = \"x:1\"\n");
        let id = identity("s", "n", "10.0.0.1", &base, &[], &NONE);
        let mib = |n| Limits {
            memory: Some(mcp_types::ByteSize::mib(n)),
            cpu: None,
        };
        let with_64 = identity("s", "n", "10.0.0.1", &base, &[], &mib(64));
        assert_ne!(with_64, id);
        assert_ne!(
            identity("s", "n", "10.0.0.1", &base, &[], &mib(128)),
            with_64
        );
        let cpu = Limits {
            memory: None,
            cpu: Some(0.5),
        };
        assert_ne!(identity("s", "n", "10.0.0.1", &base, &[], &cpu), id);
        let text = encode_v1(
            "s",
            "n",
            "10.0.0.1",
            &base,
            &[],
            &Limits {
                memory: Some(mcp_types::ByteSize::mib(64)),
                cpu: Some(0.5),
            },
        );
        assert!(
            text.ends_with("memory 8:67108864\nnano_cpus 9:500000000\n"),
            "{text}"
        );
    }

    #[test]
    fn legacy_labels_match_only_unprefixed() {
        assert!(same_identity("v1:abc", "v1:abc", "abc"));
        assert!(same_identity("abc", "v1:zzz", "abc"));
        assert!(!same_identity("v1:abc", "v1:zzz", "v1:abc"));
        assert!(!same_identity("", "v1:zzz", "abc"));
    }
}
