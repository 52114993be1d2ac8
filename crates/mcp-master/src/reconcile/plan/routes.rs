//! Edge route tables (SPEC §7): the public routes of running services, derived from
//! the registry and compared with what each edge reported. Pure, as the rest of the
//! planner.
//!
//! - A route appears for the newest copy of each service with desired state; a
//!   stopped service keeps its route, marked unavailable (the edge answers 503).
//! - A route moves to a new copy's backend once that copy runs (all its components
//!   observed running) and before the old copy goes: the old copy of a moved service
//!   is held (see [`still_routed`]) while an edge still sends its traffic there.
//! - A route is taken off an edge only when the master knows it is stale: its service
//!   was removed, or is known without that route, or its backend's node answers and
//!   does not run it. A route whose service nobody reports and whose node is away
//!   keeps serving (the master or an agent being down never stops a public route).
//! - Nothing is touched before the fleet has settled after a master start, so a
//!   fresh master converges without re-pushing routes that are already right.
//! - An l7 route gets a fresh public certificate when the edge holds none or at two
//!   thirds of its lifetime, unless the edge gets its own from ACME.

use std::collections::BTreeMap;

use super::{removed, wanted, Action, Copy, World};

/// One public route as an edge serves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicRoute {
    pub hostname: String,
    pub service: String,
    pub component: String,
    pub route: String,
    /// "l4" or "l7".
    pub mode: String,
    /// host:port: the worker's address and the route's published port.
    pub backend: String,
    /// l7: TLS to the backend, verified for `backend_name`.
    pub backend_tls: bool,
    pub backend_name: String,
    pub proxy_protocol: bool,
    /// The service is stopped: the edge answers 503.
    pub unavailable: bool,
}

/// What an edge reported of one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub route: PublicRoute,
    /// The certificate the edge holds (Unix seconds; 0: none).
    pub cert_not_before: i64,
    pub cert_not_after: i64,
    /// Why the edge has no good certificate (its own ACME), else empty.
    pub cert_error: String,
}

/// What the planner sees of an edge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeFacts {
    pub routes: Vec<Observed>,
    /// The edge obtains its public certificates itself (ACME): the master sends none.
    pub acme: bool,
}

/// Whether a route's setup carries a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertPlan {
    /// The edge keeps the certificate it holds (or has none to hold: l4, ACME).
    Keep,
    /// Issue one from the public CA and send it with the route.
    Issue,
}

/// Every public route the registry derives, by hostname.
pub fn desired(world: &World) -> BTreeMap<String, PublicRoute> {
    let mut want = BTreeMap::new();
    for (_, top) in wanted(world) {
        let service = top.service.as_str();
        // A new copy still starting (a move, an update) does not take the traffic
        // from an older copy that serves: the route switches once it runs.
        let source = if top.ready || !top.running {
            top
        } else {
            world
                .nodes
                .iter()
                .flat_map(|n| &n.copies)
                .filter(|c| c.service == service && c.desired && c.running && c.ready)
                .filter(|c| !removed(world, service, c))
                .filter(|c| !c.routes.is_empty())
                .max_by_key(|c| c.generation)
                .unwrap_or(top)
        };
        for r in &source.routes {
            let mut route = r.clone();
            route.unavailable = !source.running;
            route.backend_name = if route.mode == "l7" && route.backend_tls {
                format!("{}.{}", route.service, world.zone)
            } else {
                String::new()
            };
            // Deploys refuse a hostname claimed twice; should two copies still claim
            // one, the first service by name keeps it, the same on every pass.
            want.entry(route.hostname.clone()).or_insert(route);
        }
    }
    want
}

/// Edge route actions: what each answering edge lacks, holds wrong, or holds stale.
pub(super) fn plan_routes(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    if !world.settled {
        return actions;
    }
    let edges: Vec<(&str, &EdgeFacts)> = world
        .nodes
        .iter()
        .filter(|n| n.answers)
        .filter_map(|n| n.edge.as_ref().map(|e| (n.name.as_str(), e)))
        .collect();
    if edges.is_empty() {
        return actions;
    }
    let want = desired(world);
    for (edge, facts) in edges {
        let have: BTreeMap<&str, &Observed> = facts
            .routes
            .iter()
            .map(|o| (o.route.hostname.as_str(), o))
            .collect();
        for (host, route) in &want {
            let l7_cert = route.mode == "l7" && !facts.acme;
            let cert = match have.get(host.as_str()) {
                None => {
                    if l7_cert {
                        CertPlan::Issue
                    } else {
                        CertPlan::Keep
                    }
                }
                Some(o) => {
                    let due = l7_cert && cert_due(o, world.now);
                    if o.route == *route && !due {
                        continue;
                    }
                    if due {
                        CertPlan::Issue
                    } else {
                        CertPlan::Keep
                    }
                }
            };
            actions.push(Action::SetupRoute {
                edge: edge.to_string(),
                route: route.clone(),
                cert,
            });
        }
        for (host, o) in have {
            if !want.contains_key(host) && stale(world, &o.route) {
                actions.push(Action::RemoveRoute {
                    edge: edge.to_string(),
                    hostname: host.to_string(),
                    service: o.route.service.clone(),
                });
            }
        }
    }
    actions
}

/// Is the edge's certificate missing or past two thirds of its lifetime?
fn cert_due(o: &Observed, now: i64) -> bool {
    if o.cert_not_after <= o.cert_not_before {
        return true;
    }
    let renew_at = o.cert_not_before + (o.cert_not_after - o.cert_not_before) * 2 / 3;
    now >= renew_at
}

/// A route the registry does not derive: does the master know it is stale?
fn stale(world: &World, route: &PublicRoute) -> bool {
    if world.removed.contains_key(&route.service) {
        return true;
    }
    let known = world
        .nodes
        .iter()
        .any(|n| n.copies.iter().any(|c| c.service == route.service));
    if known {
        return true;
    }
    let host = route
        .backend
        .rsplit_once(':')
        .map_or(route.backend.as_str(), |(h, _)| h);
    world.answering_hosts.contains(host)
}

/// Does an edge still send traffic for `copy`'s service to one of `copy`'s backends?
/// Then that copy stays until the route has moved (make before break).
pub(super) fn still_routed(world: &World, copy: &Copy) -> bool {
    if copy.routes.is_empty() {
        return false;
    }
    world
        .nodes
        .iter()
        .filter_map(|n| n.edge.as_ref())
        .flat_map(|e| &e.routes)
        .any(|o| {
            o.route.service == copy.service
                && copy.routes.iter().any(|r| r.backend == o.route.backend)
        })
}

#[cfg(test)]
mod tests {
    use super::super::NodeFacts;
    use super::*;

    fn route(service: &str, host: &str, backend: &str) -> PublicRoute {
        PublicRoute {
            hostname: host.into(),
            service: service.into(),
            component: "web".into(),
            route: "https".into(),
            mode: "l7".into(),
            backend: backend.into(),
            backend_tls: true,
            backend_name: String::new(),
            proxy_protocol: false,
            unavailable: false,
        }
    }

    fn wanted(r: &PublicRoute) -> PublicRoute {
        PublicRoute {
            backend_name: format!("{}.svc.mcp.example.net", r.service),
            ..r.clone()
        }
    }

    fn worker(name: &str, copies: Vec<Copy>) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            answers: true,
            host: "10.0.0.1".into(),
            copies,
            edge: None,
        }
    }

    fn copy(service: &str, generation: u64, running: bool, routes: Vec<PublicRoute>) -> Copy {
        Copy {
            service: service.into(),
            generation,
            desired: true,
            running,
            ready: running,
            routes,
            ports: vec![],
        }
    }

    fn edge(routes: Vec<Observed>) -> NodeFacts {
        NodeFacts {
            name: "svc".into(),
            answers: true,
            host: "10.0.0.3".into(),
            copies: vec![],
            edge: Some(EdgeFacts {
                routes,
                acme: false,
            }),
        }
    }

    fn observed(r: PublicRoute, nb: i64, na: i64) -> Observed {
        Observed {
            route: r,
            cert_not_before: nb,
            cert_not_after: na,
            cert_error: String::new(),
        }
    }

    fn world(nodes: Vec<NodeFacts>) -> World {
        World {
            nodes,
            settled: true,
            now: 1_000,
            zone: "svc.mcp.example.net".into(),
            answering_hosts: ["10.0.0.1", "10.0.0.2"].map(String::from).into(),
            ..World::default()
        }
    }

    fn setup(r: &PublicRoute, cert: CertPlan) -> Action {
        Action::SetupRoute {
            edge: "svc".into(),
            route: wanted(r),
            cert,
        }
    }

    #[test]
    fn a_new_public_route_is_set_up_with_a_certificate() {
        let r = route("www", "www.example.net", "10.0.0.1:41000");
        let w = world(vec![
            worker("orion", vec![copy("www", 5, true, vec![r.clone()])]),
            edge(vec![]),
        ]);
        assert_eq!(super::super::plan(&w), vec![setup(&r, CertPlan::Issue)]);
    }

    #[test]
    fn a_route_already_right_is_left_alone_until_its_certificate_is_due() {
        let r = route("www", "www.example.net", "10.0.0.1:41000");
        let mut w = world(vec![
            worker("orion", vec![copy("www", 5, true, vec![r.clone()])]),
            edge(vec![observed(wanted(&r), 100, 1_600)]),
        ]);
        assert_eq!(super::super::plan(&w), vec![]);
        w.now = 1_100; // two thirds of 100..1600
        assert_eq!(super::super::plan(&w), vec![setup(&r, CertPlan::Issue)]);
    }

    #[test]
    fn a_stopped_service_keeps_its_route_unavailable_and_its_certificate() {
        let r = route("www", "www.example.net", "10.0.0.1:41000");
        let w = world(vec![
            worker("orion", vec![copy("www", 5, false, vec![r.clone()])]),
            edge(vec![observed(wanted(&r), 100, 9_000)]),
        ]);
        let stopped = PublicRoute {
            unavailable: true,
            ..r
        };
        assert_eq!(
            super::super::plan(&w),
            vec![setup(&stopped, CertPlan::Keep)]
        );
    }

    #[test]
    fn a_move_switches_the_route_before_the_old_copy_goes() {
        let old = route("www", "www.example.net", "10.0.0.1:41000");
        let new = route("www", "www.example.net", "10.0.0.2:42000");
        let mut w = world(vec![
            worker("orion", vec![copy("www", 5, true, vec![old.clone()])]),
            worker("rift", vec![copy("www", 9, true, vec![new.clone()])]),
            edge(vec![observed(wanted(&old), 100, 9_000)]),
        ]);
        assert_eq!(
            super::super::plan(&w),
            vec![setup(&new, CertPlan::Keep)],
            "the old copy is held while the edge routes to it"
        );
        // Still starting on rift: the route stays on orion.
        w.nodes[1].copies[0].ready = false;
        assert_eq!(super::super::plan(&w), vec![]);
        w.nodes[1].copies[0].ready = true;
        w.nodes[2] = edge(vec![observed(wanted(&new), 100, 9_000)]);
        assert_eq!(
            super::super::plan(&w),
            vec![Action::RemoveCopy {
                service: "www".into(),
                node: "orion".into(),
                generation: 5,
                why: super::super::Why::Superseded {
                    by_node: "rift".into(),
                    by_generation: 9
                },
            }]
        );
    }

    #[test]
    fn stale_routes_go_only_when_the_master_knows_they_are_stale() {
        let gone = route("old", "old.example.net", "10.0.0.1:41000");
        let away = route("far", "far.example.net", "10.0.0.9:41000");
        let mut w = world(vec![
            worker("orion", vec![]),
            edge(vec![
                observed(wanted(&gone), 100, 9_000),
                observed(wanted(&away), 100, 9_000),
            ]),
        ]);
        assert_eq!(
            super::super::plan(&w),
            vec![Action::RemoveRoute {
                edge: "svc".into(),
                hostname: "old.example.net".into(),
                service: "old".into(),
            }],
            "orion answers and runs no `old`; far's node is away and keeps its route"
        );
        w.settled = false;
        assert_eq!(
            super::super::plan(&w),
            vec![],
            "nothing before the fleet settles"
        );
        w.settled = true;
        w.removed.insert("far".into(), 7);
        let removals = super::super::plan(&w)
            .into_iter()
            .filter(|a| matches!(a, Action::RemoveRoute { .. }))
            .count();
        assert_eq!(removals, 2, "a removal is known stale");
    }

    #[test]
    fn an_acme_edge_gets_no_certificates_and_an_edge_away_gets_nothing() {
        let r = route("www", "www.example.net", "10.0.0.1:41000");
        let mut e = edge(vec![]);
        if let Some(f) = e.edge.as_mut() {
            f.acme = true;
        }
        let mut w = world(vec![
            worker("orion", vec![copy("www", 5, true, vec![r.clone()])]),
            e,
        ]);
        assert_eq!(super::super::plan(&w), vec![setup(&r, CertPlan::Keep)]);
        w.nodes[1].answers = false;
        assert_eq!(super::super::plan(&w), vec![]);
    }
}
