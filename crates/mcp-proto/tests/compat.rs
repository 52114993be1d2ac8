//! Compatibility across one version (SPEC §9): a new master with old agents, and a new
//! agent with an old master, each understand everything the older side knows.
//!
//! - The wire only grows: `tests/data/wire.lock` lists every field (message, number,
//!   name, type) and RPC that was ever released; none may be renumbered, renamed,
//!   retyped or removed, and a new one is appended to the lock on purpose.
//! - A message from a newer peer decodes here: its unknown fields (of any wire type,
//!   at any depth, an unknown `oneof` member included) are skipped and the known ones
//!   kept. Shown with test-only "newer" encodings of RegisterRequest, ServiceStatus,
//!   DeployRequest and EdgeRoute.
//! - A message from an older peer decodes with the newest fields at their defaults,
//!   and each default means "not known" (see `an_old_agents_registration`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use mcp_proto::agent::v1 as agent;
use mcp_proto::master::v1 as wire;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

const LOCK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wire.lock");

/// The wire as this build has it, one line per field and per RPC.
fn wire_now() -> BTreeSet<String> {
    let fields = mcp_proto::FIELDS
        .iter()
        .map(|(message, number, name, kind)| format!("field {message} {number} {name} {kind}"));
    let rpcs = mcp_proto::RPCS
        .iter()
        .map(|(service, method)| format!("rpc {service} {method}"));
    fields.chain(rpcs).collect()
}

/// Fields and RPCs are only ever added. With `MCP_WIRE_LOCK=append`, new ones are
/// appended to the lock (never a removal: that stays a failure).
#[test]
fn the_wire_only_grows() {
    let text = std::fs::read_to_string(LOCK).unwrap_or_default();
    let locked: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let now = wire_now();
    let gone: Vec<&String> = locked.difference(&now).collect();
    assert!(
        gone.is_empty(),
        "released fields or RPCs changed or vanished (renumbered, renamed, retyped or \
         removed), which breaks agents and masters one version apart; add a new field \
         instead:\n{}",
        gone.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let added: Vec<&String> = now.difference(&locked).collect();
    if added.is_empty() {
        return;
    }
    let lines: String = added.iter().map(|l| format!("{l}\n")).collect();
    if std::env::var("MCP_WIRE_LOCK").as_deref() == Ok("append") {
        let mut text = text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&lines);
        std::fs::write(LOCK, text).unwrap();
        return;
    }
    panic!(
        "new fields or RPCs: once they are final, append them to {LOCK} \
         (MCP_WIRE_LOCK=append cargo test -p mcp-proto --test compat):\n{lines}"
    );
}

/// Appends fields no version of this crate knows, one of each wire type, numbered
/// far above any real field.
fn with_unknown_fields(mut bytes: Vec<u8>) -> Vec<u8> {
    encode_key(900, WireType::Varint, &mut bytes);
    encode_varint(7, &mut bytes);
    encode_key(901, WireType::LengthDelimited, &mut bytes);
    encode_varint(5, &mut bytes);
    bytes.extend_from_slice(b"later");
    encode_key(902, WireType::SixtyFourBit, &mut bytes);
    bytes.extend_from_slice(&42u64.to_le_bytes());
    encode_key(903, WireType::ThirtyTwoBit, &mut bytes);
    bytes.extend_from_slice(&42u32.to_le_bytes());
    // A nested message of a newer kind, itself with a field.
    let mut nested = Vec::new();
    encode_key(1, WireType::LengthDelimited, &mut nested);
    encode_varint(2, &mut nested);
    nested.extend_from_slice(b"ok");
    encode_key(904, WireType::LengthDelimited, &mut bytes);
    encode_varint(nested.len() as u64, &mut bytes);
    bytes.extend_from_slice(&nested);
    bytes
}

/// `bytes` as field `tag` (a message) of an enclosing message.
fn as_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn spec() -> agent::ServiceSpec {
    agent::ServiceSpec {
        name: "web".into(),
        tier: "worker".into(),
        node: Some("orion".into()),
        depends_on: vec!["db".into()],
        resources: Some(agent::Resources {
            memory: Some(64 << 20),
            arch: vec!["amd64".into()],
            ..Default::default()
        }),
        components: vec![component()],
    }
}

fn component() -> agent::ComponentSpec {
    agent::ComponentSpec {
        name: "site".into(),
        driver: "exec".into(),
        command: vec!["/bin/hello".into()],
        env: [("A".to_string(), "1".to_string())].into(),
        restart: "unless-stopped".into(),
        routes: vec![agent::RouteSpec {
            name: "http".into(),
            port: 8080,
            mode: "l7".into(),
            public: true,
            hostname: Some("web.metacircular.net".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn status() -> agent::ServiceStatus {
    agent::ServiceStatus {
        name: "web".into(),
        node: "orion".into(),
        desired: "running".into(),
        spec: Some(spec()),
        components: vec![agent::ComponentStatus {
            name: "site".into(),
            driver: "exec".into(),
            observed: "running".into(),
            started_at: 1_700_000_000,
            routes: vec![agent::PublishedRoute {
                name: "http".into(),
                port: 8080,
                address: "127.0.0.12:40001".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        generation: 7 << 16,
    }
}

fn edge_route() -> agent::EdgeRoute {
    agent::EdgeRoute {
        hostname: "web.metacircular.net".into(),
        service: "web".into(),
        component: "site".into(),
        route: "http".into(),
        backend: "127.0.0.12:40001".into(),
        mode: "l7".into(),
        unavailable: true,
        cert_not_after: 1_800_000_000,
        ..Default::default()
    }
}

/// A newer peer's messages, with fields this build does not know at the top and
/// inside nested messages, decode to exactly what this build knows of them.
#[test]
fn unknown_fields_from_a_newer_peer_are_skipped() {
    fn round<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
        let got = M::decode(with_unknown_fields(m.encode_to_vec()).as_slice()).unwrap();
        assert_eq!(&got, m);
    }
    round(&status());
    round(&edge_route());
    round(&agent::DeployRequest {
        service: Some(spec()),
        generation: 9,
    });
    round(&wire::RegisterRequest {
        name: "orion".into(),
        services: vec![status()],
        edge_routes: vec![edge_route()],
        rpcs: vec!["Deploy".into()],
        ..Default::default()
    });

    // Deeper: a newer master's DeployRequest whose ServiceSpec and ComponentSpec
    // carry new fields (DeployRequest.service = 1, ServiceSpec.components = 6).
    let mut spec_bytes = spec().encode_to_vec();
    let component_newer = with_unknown_fields(component().encode_to_vec());
    spec_bytes.extend(as_field(6, &component_newer));
    let mut request = as_field(1, &with_unknown_fields(spec_bytes));
    request.extend(with_unknown_fields(Vec::new()));
    encode_key(2, WireType::Varint, &mut request);
    encode_varint(9, &mut request);
    let got = agent::DeployRequest::decode(request.as_slice()).unwrap();
    let mut want = spec();
    want.components.push(component());
    assert_eq!(
        got,
        agent::DeployRequest {
            service: Some(want),
            generation: 9
        }
    );

    // A deploy event of a kind added later (an unknown `oneof` member): no event, and
    // the master, which acts only on `done`, passes it on; the CLI shows nothing.
    let event = as_field(10, b"");
    let got = agent::DeployEvent::decode(event.as_slice()).unwrap();
    assert_eq!(got.event, None);
}

/// RegisterRequest as the first agents sent it: fields 1 to 11, before state_unknown
/// (12), state_error (13), edge_routes (14), public_address (15), acme (16) and
/// binary_sha256 (17). Also what an old master decodes of a new agent's.
#[derive(Clone, PartialEq, Message)]
struct OldRegisterRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    role: String,
    #[prost(string, tag = "3")]
    address: String,
    #[prost(string, tag = "4")]
    arch: String,
    #[prost(string, tag = "5")]
    version: String,
    #[prost(string, repeated, tag = "6")]
    rpcs: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pools: Vec<String>,
    #[prost(message, optional, tag = "8")]
    resources: Option<wire::NodeResources>,
    #[prost(message, repeated, tag = "9")]
    services: Vec<OldServiceStatus>,
    #[prost(string, tag = "10")]
    state_digest: String,
    #[prost(uint32, tag = "11")]
    containers: u32,
}

/// ServiceStatus before generations (6).
#[derive(Clone, PartialEq, Message)]
struct OldServiceStatus {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    node: String,
    #[prost(string, tag = "3")]
    desired: String,
    #[prost(message, optional, tag = "4")]
    spec: Option<agent::ServiceSpec>,
    #[prost(message, repeated, tag = "5")]
    components: Vec<agent::ComponentStatus>,
}

fn old_registration() -> OldRegisterRequest {
    let s = status();
    OldRegisterRequest {
        name: "hyperborea".into(),
        role: "edge".into(),
        address: "127.0.0.13:9444".into(),
        arch: "arm64".into(),
        version: "0.0.9".into(),
        rpcs: vec!["Deploy".into(), "Stop".into()],
        pools: vec!["pi-pool".into()],
        resources: Some(wire::NodeResources {
            memory_total: 1 << 30,
            ..Default::default()
        }),
        services: vec![OldServiceStatus {
            name: s.name,
            node: s.node,
            desired: s.desired,
            spec: s.spec,
            components: s.components,
        }],
        state_digest: "d1".into(),
        containers: 1,
    }
}

/// A new master reads an old agent's registration: everything it sent, and the newer
/// fields at defaults that each mean "not known", which the master treats as the old
/// agent's truth. state_unknown false: the services it sent are its state (as an
/// agent before the field meant them). edge_routes empty: the edge holds nothing the master
/// knows of, so the loop sets up every route it should hold (SetupEdgeRoute is
/// idempotent, `replaced`). public_address empty: not configured, public URLs without
/// a port. acme false: the master issues the certificates. binary_sha256 empty: the
/// binary is unknown (it matches no binary `mcp agent upgrade` brings). generation 0:
/// deployed before generations, older than any new deploy. The RPC list is what the
/// old agent serves, and the master sends nothing else (capability negotiation).
#[test]
fn an_old_agents_registration_reads_on_a_new_master() {
    let old = old_registration();
    let got = wire::RegisterRequest::decode(old.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        (
            got.name.as_str(),
            got.role.as_str(),
            got.address.as_str(),
            got.arch.as_str(),
            got.version.as_str(),
            got.rpcs.as_slice(),
            got.pools.as_slice(),
            got.state_digest.as_str(),
            got.containers,
        ),
        (
            "hyperborea",
            "edge",
            "127.0.0.13:9444",
            "arm64",
            "0.0.9",
            ["Deploy".to_string(), "Stop".to_string()].as_slice(),
            ["pi-pool".to_string()].as_slice(),
            "d1",
            1,
        )
    );
    assert_eq!(got.resources, old.resources);
    assert_eq!(got.services.len(), 1);
    let mut want = status();
    want.generation = 0;
    assert_eq!(got.services[0], want);
    assert!(!got.state_unknown);
    assert!(got.state_error.is_empty());
    assert!(got.edge_routes.is_empty());
    assert!(got.public_address.is_empty());
    assert!(!got.acme);
    assert!(got.binary_sha256.is_empty());
}

/// An old master reads a new agent's registration: every field it knows, the newer
/// ones skipped.
#[test]
fn a_new_agents_registration_reads_on_an_old_master() {
    let old = old_registration();
    let new = wire::RegisterRequest {
        name: old.name.clone(),
        role: old.role.clone(),
        address: old.address.clone(),
        arch: old.arch.clone(),
        version: old.version.clone(),
        rpcs: old.rpcs.clone(),
        pools: old.pools.clone(),
        resources: old.resources,
        services: vec![status()],
        state_digest: old.state_digest.clone(),
        containers: old.containers,
        state_unknown: true,
        state_error: "docker: connection refused".into(),
        edge_routes: vec![edge_route()],
        public_address: "203.0.113.7:443".into(),
        acme: true,
        binary_sha256: "ab".repeat(32),
    };
    let got = OldRegisterRequest::decode(new.encode_to_vec().as_slice()).unwrap();
    assert_eq!(got, old);
}
