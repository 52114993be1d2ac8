//! The internal zone (SPEC §8) as a projection of the registry: for the newest copy
//! of every service the operator wants running, `<service>.<zone>` A (AAAA for an
//! IPv6 node) → the node's address, and `_<route>._tcp.<service>.<zone>` SRV → that
//! name and the route's published port. Pure, as the rest of the planner: the
//! backends (the embedded server, RFC 2136 updates) only make a server hold this set.
//!
//! Names are lowercase, absolute and written without the trailing dot. A move changes
//! exactly the moved service's records; a removed or stopped service has none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{wanted, World};

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RData {
    /// A or AAAA, by the address's family.
    Addr(IpAddr),
    /// SRV with priority 0 and weight 0.
    Srv { port: u16, target: String },
}

/// One record of the zone (its TTL is the backend's, from `[dns] ttl`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsRecord {
    pub name: String,
    pub data: RData,
}

impl DnsRecord {
    /// "A", "AAAA" or "SRV".
    pub fn kind(&self) -> &'static str {
        match self.data {
            RData::Addr(IpAddr::V4(_)) => "A",
            RData::Addr(IpAddr::V6(_)) => "AAAA",
            RData::Srv { .. } => "SRV",
        }
    }
}

impl std::fmt::Display for DnsRecord {
    /// `NAME TYPE DATA`, as `mcp status SERVICE` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.data {
            RData::Addr(ip) => write!(f, "{} {} {ip}", self.name, self.kind()),
            RData::Srv { port, target } => {
                write!(f, "{} SRV 0 0 {port} {target}", self.name)
            }
        }
    }
}

/// The records of the zone at one moment.
pub type Zone = BTreeSet<DnsRecord>;

/// The service a name of the zone belongs to (`hello` for `hello.<zone>` and
/// `_http._tcp.hello.<zone>`), or None outside the zone.
pub fn service_of<'a>(name: &'a str, zone: &str) -> Option<&'a str> {
    let rest = name.strip_suffix(zone)?.strip_suffix('.')?;
    rest.rsplit('.').next().filter(|s| !s.is_empty())
}

/// Every record the registry derives, sorted.
pub fn zone_records(world: &World) -> BTreeSet<DnsRecord> {
    let mut records = BTreeSet::new();
    for (node, top) in wanted(world) {
        if !top.running {
            continue;
        }
        let service = top.service.as_str();
        let Ok(ip) = node
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            continue;
        };
        let name = format!("{}.{}", service.to_ascii_lowercase(), world.zone);
        let mut ports: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
        for (route, port) in &top.ports {
            ports.entry(route.as_str()).or_default().insert(*port);
        }
        for (route, ports) in ports {
            for port in ports {
                records.insert(DnsRecord {
                    name: format!("_{}._tcp.{name}", route.to_ascii_lowercase()),
                    data: RData::Srv {
                        port,
                        target: name.clone(),
                    },
                });
            }
        }
        records.insert(DnsRecord {
            name,
            data: RData::Addr(ip),
        });
    }
    records
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Copy, NodeFacts};
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, host: &str, copies: Vec<Copy>) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            answers: true,
            host: host.into(),
            copies,
            edge: None,
        }
    }

    fn copy(service: &str, generation: u64, running: bool, ports: &[(&str, u16)]) -> Copy {
        Copy {
            service: service.into(),
            generation,
            desired: true,
            running,
            ready: running,
            routes: vec![],
            ports: ports.iter().map(|(r, p)| (r.to_string(), *p)).collect(),
        }
    }

    fn world(nodes: Vec<NodeFacts>) -> World {
        World {
            nodes,
            zone: "svc.mcp.example.net".into(),
            ..World::default()
        }
    }

    fn a(name: &str, ip: &str) -> DnsRecord {
        DnsRecord {
            name: format!("{name}.svc.mcp.example.net"),
            data: RData::Addr(ip.parse().unwrap()),
        }
    }

    fn srv(route: &str, service: &str, port: u16) -> DnsRecord {
        let target = format!("{service}.svc.mcp.example.net");
        DnsRecord {
            name: format!("_{route}._tcp.{target}"),
            data: RData::Srv { port, target },
        }
    }

    #[test]
    fn a_service_has_its_address_and_a_srv_per_route() {
        let w = world(vec![
            node(
                "orion",
                "10.0.0.2",
                vec![copy("hello", 5, true, &[("http", 41000), ("admin", 41001)])],
            ),
            node("v6", "[fd00::7]", vec![copy("six", 1, true, &[])]),
        ]);
        let got: Vec<DnsRecord> = zone_records(&w).into_iter().collect();
        let want: BTreeSet<DnsRecord> = [
            a("hello", "10.0.0.2"),
            srv("http", "hello", 41000),
            srv("admin", "hello", 41001),
            a("six", "fd00::7"),
        ]
        .into();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        assert_eq!(a("six", "fd00::7").kind(), "AAAA");
        assert_eq!(
            service_of(
                "_http._tcp.hello.svc.mcp.example.net",
                "svc.mcp.example.net"
            ),
            Some("hello")
        );
        assert_eq!(
            service_of("hello.svc.mcp.example.net", "svc.mcp.example.net"),
            Some("hello")
        );
        assert_eq!(
            service_of("svc.mcp.example.net", "svc.mcp.example.net"),
            None
        );
        assert_eq!(service_of("hello.example.org", "svc.mcp.example.net"), None);
    }

    #[test]
    fn the_newest_copy_wins_and_stopped_or_removed_services_have_none() {
        let mut w = world(vec![
            node(
                "orion",
                "10.0.0.2",
                vec![copy("hello", 5, true, &[("http", 41000)])],
            ),
            node(
                "rift",
                "10.0.0.1",
                vec![copy("hello", 9, true, &[("http", 42000)])],
            ),
            node(
                "pi",
                "10.0.0.3",
                vec![copy("quiet", 3, false, &[("http", 43000)])],
            ),
        ]);
        let got = zone_records(&w);
        assert_eq!(
            got,
            [a("hello", "10.0.0.1"), srv("http", "hello", 42000)].into()
        );
        w.removed.insert("hello".into(), 9);
        assert!(zone_records(&w).is_empty());
    }

    proptest! {
        /// A move changes exactly the moved service's records; a removal leaves none
        /// of its records behind and touches no other.
        #[test]
        fn moves_and_removals_touch_only_their_service(
            count in 1usize..6,
            moved in 0usize..6,
            to in 0u8..3,
        ) {
            let moved = moved % count;
            let services: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
            let nodes = |placement: &dyn Fn(usize) -> (u8, u64)| {
                let mut nodes: Vec<NodeFacts> = (0..3u8)
                    .map(|n| node(&format!("n{n}"), &format!("10.0.0.{n}"), vec![]))
                    .collect();
                for (i, s) in services.iter().enumerate() {
                    let (n, generation) = placement(i);
                    nodes[usize::from(n)].copies.push(copy(s, generation, true, &[("http", 40000 + i as u16)]));
                }
                nodes
            };
            let before = zone_records(&world(nodes(&|i| ((i % 3) as u8, 1))));
            let after = zone_records(&world(nodes(&|i| if i == moved { (to, 2) } else { ((i % 3) as u8, 1) })));
            let zone = "svc.mcp.example.net";
            let changed: BTreeSet<&str> = before
                .symmetric_difference(&after)
                .filter_map(|r| service_of(&r.name, zone))
                .collect();
            prop_assert!(changed.is_empty() || changed == [services[moved].as_str()].into());
            let mut w = world(nodes(&|i| ((i % 3) as u8, 1)));
            w.removed.insert(services[moved].clone(), 1);
            let removed = zone_records(&w);
            prop_assert!(removed.iter().all(|r| service_of(&r.name, zone) != Some(services[moved].as_str())));
            prop_assert_eq!(before.len() - removed.len(), 2);
        }
    }
}
