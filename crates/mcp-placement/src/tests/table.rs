//! Table tests, one group per rule of SPEC §4 and per rejection text.
#![allow(clippy::unwrap_used)]

use mcp_types::{Arch, ByteSize, ServiceDef, Tier};

use crate::{
    place, Capacity, Health, ImageRefusal, NodeView, PlacedService, Placement, PlacementError,
    Policy, Rejection, Role, Scope, Snapshot,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A healthy amd64 worker with 4 cores, 8GiB and 100GiB, all free.
fn node(name: &str, change: impl FnOnce(&mut NodeView)) -> NodeView {
    let mut n = NodeView {
        name: name.to_string(),
        role: Role::Worker,
        arch: Arch::Amd64,
        health: Health::Healthy,
        pools: Vec::new(),
        total: Capacity {
            cpu: 4.0,
            memory: 8 * GIB,
            disk: 100 * GIB,
        },
        free_memory: 8 * GIB,
        free_disk: 100 * GIB,
    };
    change(&mut n);
    n
}

/// A node with `memory` in all, all of it free: ranking goes by the allocatable
/// memory left (SPEC §4), so a node with more must have more in all.
fn free(name: &str, memory: u64) -> NodeView {
    node(name, |n| {
        n.total.memory = memory;
        n.free_memory = memory;
    })
}

fn svc(name: &str, change: impl FnOnce(&mut ServiceDef)) -> ServiceDef {
    let mut def = ServiceDef {
        name: name.to_string(),
        tier: Tier::Worker,
        node: None,
        depends_on: Vec::new(),
        resources: Default::default(),
        components: Vec::new(),
    };
    change(&mut def);
    def
}

fn mem(def: &mut ServiceDef, bytes: u64) {
    def.resources.memory = Some(ByteSize(bytes));
}

fn placed(service: &str, node: &str, memory: u64) -> PlacedService {
    PlacedService {
        service: service.to_string(),
        node: node.to_string(),
        requests: Capacity {
            cpu: 0.0,
            memory,
            disk: 0,
        },
    }
}

fn run(
    def: &ServiceDef,
    nodes: &[NodeView],
    placed: &[PlacedService],
) -> Result<Placement, PlacementError> {
    place(def, nodes, placed, None, "rift", &Policy::default())
}

fn ok(node: &str, reason: &str) -> Result<Placement, PlacementError> {
    Ok(Placement {
        node: node.to_string(),
        reason: reason.to_string(),
    })
}

fn err_text(result: Result<Placement, PlacementError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn any_worker_most_free_memory() {
    let nodes = [free("a", 2 * GIB), free("b", 6 * GIB), free("c", 4 * GIB)];
    assert_eq!(
        run(&svc("x", |_| {}), &nodes, &[]),
        ok("b", "most free memory")
    );
}

#[test]
fn ties_by_name() {
    let nodes = [
        free("zeta", 4 * GIB),
        free("alpha", 4 * GIB),
        free("mid", 4 * GIB),
    ];
    assert_eq!(
        run(&svc("x", |_| {}), &nodes, &[]),
        ok("alpha", "most free memory")
    );
}

#[test]
fn observed_free_memory_filters_but_does_not_rank() {
    // Equal nodes whose observed free memory differs (noise, other processes):
    // the one with the fewest services, then the first by name, and a batch
    // placed on one snapshot spreads over them.
    let nodes = [
        node("a", |n| n.free_memory = 5 * GIB),
        node("b", |n| n.free_memory = 7 * GIB),
        node("c", |n| n.free_memory = 6 * GIB),
    ];
    assert_eq!(
        run(&svc("x", |_| {}), &nodes, &[]),
        ok("a", "most free memory")
    );
    let mut snapshot = Snapshot::new(nodes.to_vec(), &[], Policy::default(), "rift");
    let mut on = Vec::new();
    for i in 0..6 {
        let def = svc(&format!("s{i}"), |_| {});
        let p = snapshot.place(&def, None).unwrap();
        snapshot.commit(
            &def.name,
            &p.node,
            crate::requests_of(&def, &Policy::default()),
        );
        on.push(p.node);
    }
    assert_eq!(on, ["a", "b", "c", "a", "b", "c"]);
    // Services without memory requests spread too: by their count.
    let mut snapshot = Snapshot::new(nodes.to_vec(), &[], Policy::default(), "rift");
    let mut on = Vec::new();
    for i in 0..3 {
        let def = svc(&format!("z{i}"), |d| mem(d, 0));
        let p = snapshot.place(&def, None).unwrap();
        snapshot.commit(
            &def.name,
            &p.node,
            crate::requests_of(&def, &Policy::default()),
        );
        on.push(p.node);
    }
    assert_eq!(on, ["a", "b", "c"]);
}

#[test]
fn ranking_counts_placed_requests() {
    // Observed free memory is equal; "a" already has 3GiB requested.
    let nodes = [free("a", 6 * GIB), free("b", 6 * GIB)];
    let result = run(&svc("x", |_| {}), &nodes, &[placed("s", "a", 3 * GIB)]);
    assert_eq!(result, ok("b", "most free memory"));
}

#[test]
fn spec_example_text() {
    let nodes = [
        node("rift", |n| n.free_memory = 210 * MIB),
        node("orion", |n| n.health = Health::Unhealthy),
        node("hyperborea", |n| n.arch = Arch::Arm64),
    ];
    let def = svc("photos", |d| {
        mem(d, 512 * MIB);
        d.resources.arch = vec![Arch::Amd64];
    });
    assert_eq!(
        err_text(run(&def, &nodes, &[])),
        "no node can run \"photos\": hyperborea: arch arm64 not in [amd64]; orion: unhealthy; \
         rift: memory 512MiB requested, 210MiB free"
    );
}

#[test]
fn each_rejection_text() {
    let policy = Policy {
        reserve: Capacity::default(),
        min_free_memory: 256 * MIB,
        min_free_disk: 2 * GIB,
        default_request: Capacity::default(),
    };
    let def = svc("x", |d| {
        d.resources.cpu = Some(2.0);
        mem(d, GIB);
        d.resources.disk = Some(ByteSize(10 * GIB));
        d.resources.arch = vec![Arch::Amd64, Arch::Arm64];
    });
    let cases: Vec<(NodeView, Rejection, &str)> = vec![
        (
            node("n", |n| n.health = Health::Probing),
            Rejection::State(Health::Probing),
            "probing",
        ),
        (
            node("n", |n| n.health = Health::Unhealthy),
            Rejection::State(Health::Unhealthy),
            "unhealthy",
        ),
        (
            node("n", |n| n.role = Role::Edge),
            Rejection::Role(Role::Edge),
            "role edge",
        ),
        (
            node("n", |n| n.total.cpu = 0.5),
            Rejection::Cpu {
                requested: 2.0,
                free: 0.5,
            },
            "cpu 2 requested, 0.5 free",
        ),
        (
            node("n", |n| n.free_memory = 210 * MIB),
            Rejection::Memory {
                requested: GIB,
                free: 210 * MIB,
            },
            "memory 1GiB requested, 210MiB free",
        ),
        (
            node("n", |n| n.free_disk = 3 * GIB),
            Rejection::Disk {
                requested: 10 * GIB,
                free: 3 * GIB,
            },
            "disk 10GiB requested, 3GiB free",
        ),
    ];
    for (n, want, text) in cases {
        let snap = Snapshot::new(vec![n], &[], policy.clone(), "rift");
        let mut pinned = def.clone();
        pinned.node = Some("n".into());
        let e = snap.place(&pinned, None);
        let Err(PlacementError::Rejected { rejections, .. }) = e else {
            panic!("{text}: {e:?}");
        };
        assert_eq!(rejections, vec![("n".to_string(), want.clone())], "{text}");
        assert_eq!(want.to_string(), text);
    }
    // The arch list is printed as the service gives it.
    let arch = Rejection::Arch {
        node: Arch::Arm64,
        allowed: vec![Arch::Amd64],
    };
    assert_eq!(arch.to_string(), "arch arm64 not in [amd64]");
    // Floors: a node may have room for the request and still sit below a floor.
    let floors = [
        (
            node("n", |n| n.free_memory = 100 * MIB),
            "free memory 100MiB below the floor of 256MiB",
        ),
        (
            node("n", |n| n.free_disk = GIB),
            "free disk 1GiB below the floor of 2GiB",
        ),
    ];
    for (n, text) in floors {
        let e = place(
            &svc("y", |d| d.node = Some("n".into())),
            &[n],
            &[],
            None,
            "rift",
            &policy,
        );
        assert_eq!(err_text(e), format!("node \"n\" cannot run \"y\": {text}"));
    }
}

#[test]
fn cpu_fractions() {
    let nodes = [node("n", |n| n.total.cpu = 1.0)];
    let placed = [PlacedService {
        service: "s".into(),
        node: "n".into(),
        requests: Capacity {
            cpu: 0.75,
            memory: 0,
            disk: 0,
        },
    }];
    let def = svc("x", |d| d.resources.cpu = Some(0.5));
    assert_eq!(
        err_text(run(&def, &nodes, &placed)),
        "no node can run \"x\": n: cpu 0.5 requested, 0.25 free"
    );
    // Three tenths fit in 0.3 cores exactly: counted in millicores.
    let nodes = [node("n", |n| n.total.cpu = 0.3)];
    let tenth = |s: &str| PlacedService {
        service: s.into(),
        node: "n".into(),
        requests: Capacity {
            cpu: 0.1,
            memory: 0,
            disk: 0,
        },
    };
    let def = svc("x", |d| d.resources.cpu = Some(0.1));
    assert!(run(&def, &nodes, &[tenth("a"), tenth("b")]).is_ok());
}

#[test]
fn pinned_node() {
    let nodes = [free("orion", GIB), free("rift", 6 * GIB)];
    let def = svc("x", |d| d.node = Some("orion".into()));
    assert_eq!(run(&def, &nodes, &[]), ok("orion", "pinned to orion"));
    // No silent fallback to the roomier node.
    let sick = [
        node("orion", |n| n.health = Health::Unhealthy),
        free("rift", 6 * GIB),
    ];
    assert_eq!(
        err_text(run(&def, &sick, &[])),
        "node \"orion\" cannot run \"x\": unhealthy"
    );
    let full = svc("x", |d| {
        d.node = Some("orion".into());
        mem(d, 2 * GIB);
    });
    assert_eq!(
        err_text(run(&full, &nodes, &[])),
        "node \"orion\" cannot run \"x\": memory 2GiB requested, 1GiB free"
    );
    let arm = svc("x", |d| {
        d.node = Some("orion".into());
        d.resources.arch = vec![Arch::Arm64];
    });
    assert_eq!(
        err_text(run(&arm, &nodes, &[])),
        "node \"orion\" cannot run \"x\": arch amd64 not in [arm64]"
    );
    let edge = [node("orion", |n| n.role = Role::Edge)];
    assert_eq!(
        err_text(run(&def, &edge, &[])),
        "node \"orion\" cannot run \"x\": role edge"
    );
    // A pinned node is pinned even on redeploy from elsewhere.
    let moved = place(&def, &nodes, &[], Some("rift"), "rift", &Policy::default());
    assert_eq!(moved, ok("orion", "pinned to orion"));
}

#[test]
fn unknown_target() {
    let def = svc("x", |d| d.node = Some("nope".into()));
    let e = run(&def, &[free("a", GIB)], &[]);
    assert_eq!(
        e,
        Err(PlacementError::UnknownTarget {
            service: "x".into(),
            target: "nope".into()
        })
    );
    assert_eq!(err_text(e), "no node or pool named \"nope\" is registered");
}

#[test]
fn pool_mixed_members() {
    let pool = |n: &mut NodeView| n.pools = vec!["pi-pool".into()];
    let nodes = [
        node("big", |n| n.free_memory = 8 * GIB), // not in the pool
        node("edge-1", |n| {
            pool(n);
            n.role = Role::Edge;
        }),
        node("pi-1", |n| {
            pool(n);
            n.total.memory = 2 * GIB;
            n.free_memory = 2 * GIB;
            n.arch = Arch::Arm64;
        }),
        node("pi-2", |n| {
            pool(n);
            n.total.memory = 3 * GIB;
            n.free_memory = 3 * GIB;
            n.arch = Arch::Arm64;
        }),
        node("pi-3", |n| {
            pool(n);
            n.health = Health::Probing;
        }),
    ];
    let def = svc("x", |d| d.node = Some("pi-pool".into()));
    assert_eq!(
        run(&def, &nodes, &[]),
        ok("pi-2", "pool pi-pool: most free memory")
    );
    let big = svc("x", |d| {
        d.node = Some("pi-pool".into());
        mem(d, 4 * GIB);
    });
    assert_eq!(
        err_text(run(&big, &nodes, &[])),
        "no node in pool \"pi-pool\" can run \"x\": edge-1: role edge; \
         pi-1: memory 4GiB requested, 2GiB free; pi-2: memory 4GiB requested, 3GiB free; \
         pi-3: probing"
    );
}

#[test]
fn edge_never_chosen_even_with_most_room() {
    let nodes = [
        node("edge", |n| {
            n.role = Role::Edge;
            n.pools = vec!["p".into()];
            n.free_memory = 64 * GIB;
            n.total.memory = 64 * GIB;
        }),
        node("w", |n| {
            n.pools = vec!["p".into()];
            n.free_memory = GIB;
        }),
    ];
    assert_eq!(
        run(&svc("x", |_| {}), &nodes, &[]),
        ok("w", "most free memory")
    );
    let in_pool = svc("x", |d| d.node = Some("p".into()));
    assert_eq!(
        run(&in_pool, &nodes, &[]),
        ok("w", "pool p: most free memory")
    );
    let only_edge = svc("x", |d| d.node = Some("p".into()));
    assert_eq!(
        err_text(run(&only_edge, &nodes[..1], &[])),
        "no node in pool \"p\" can run \"x\": edge: role edge"
    );
}

#[test]
fn node_name_wins_over_pool_name() {
    let nodes = [
        free("orion", GIB),
        node("other", |n| n.pools = vec!["orion".into()]),
    ];
    let def = svc("x", |d| d.node = Some("orion".into()));
    assert_eq!(run(&def, &nodes, &[]), ok("orion", "pinned to orion"));
}

#[test]
fn core_tier() {
    let nodes = [free("rift", GIB), free("orion", 6 * GIB)];
    let def = svc("x", |d| d.tier = Tier::Core);
    assert_eq!(
        run(&def, &nodes, &[]),
        ok("rift", "core tier: master node rift")
    );
    let e = run(&def, &nodes[1..], &[]);
    assert_eq!(
        err_text(e),
        "the master node \"rift\" has not registered; \"x\" is tier core"
    );
    let sick = [
        node("rift", |n| n.health = Health::Unhealthy),
        free("orion", GIB),
    ];
    let e = run(&def, &sick, &[]);
    assert!(matches!(
        &e,
        Err(PlacementError::Rejected {
            scope: Scope::Master(m),
            ..
        }) if m == "rift"
    ));
    assert_eq!(
        err_text(e),
        "the master node \"rift\" cannot run \"x\": unhealthy"
    );
    // `node` overrides the tier.
    let pinned = svc("x", |d| {
        d.tier = Tier::Core;
        d.node = Some("orion".into());
    });
    assert_eq!(run(&pinned, &nodes, &[]), ok("orion", "pinned to orion"));
}

#[test]
fn redeploy_stays_put_while_it_qualifies() {
    let nodes = [free("a", GIB), free("b", 6 * GIB)];
    let def = svc("x", |d| mem(d, 512 * MIB));
    let here = [placed("x", "a", 512 * MIB)];
    let p = place(&def, &nodes, &here, Some("a"), "rift", &Policy::default());
    assert_eq!(p, ok("a", "stays on a"));
    // It no longer fits on "a": it moves to the best node.
    let bigger = svc("x", |d| mem(d, 2 * GIB));
    let p = place(
        &bigger,
        &nodes,
        &here,
        Some("a"),
        "rift",
        &Policy::default(),
    );
    assert_eq!(p, ok("b", "most free memory"));
    // "a" is unhealthy now.
    let sick = [node("a", |n| n.health = Health::Unhealthy), free("b", GIB)];
    let p = place(&def, &sick, &here, Some("a"), "rift", &Policy::default());
    assert_eq!(p, ok("b", "most free memory"));
    // "a" left the pool the service names: out of scope, so it moves.
    let pooled = [
        free("a", 6 * GIB),
        node("b", |n| {
            n.pools = vec!["p".into()];
            n.free_memory = GIB;
        }),
    ];
    let def = svc("x", |d| d.node = Some("p".into()));
    let p = place(&def, &pooled, &here, Some("a"), "rift", &Policy::default());
    assert_eq!(p, ok("b", "pool p: most free memory"));
    // A current node that is not registered is ignored.
    let p = place(
        &svc("x", |_| {}),
        &nodes,
        &[],
        Some("gone"),
        "rift",
        &Policy::default(),
    );
    assert_eq!(p, ok("b", "most free memory"));
}

#[test]
fn service_excluded_from_its_own_capacity() {
    // 2GiB allocatable, 1.5GiB of it requested by "x" itself.
    let nodes = [node("a", |n| {
        n.total.memory = 2 * GIB;
        n.free_memory = 2 * GIB;
    })];
    let here = [placed("x", "a", 1536 * MIB)];
    let def = svc("x", |d| mem(d, 1536 * MIB));
    assert_eq!(run(&def, &nodes, &here), ok("a", "most free memory"));
    let other = svc("y", |d| mem(d, 1536 * MIB));
    assert_eq!(
        err_text(run(&other, &nodes, &here)),
        "no node can run \"y\": a: memory 1536MiB requested, 512MiB free"
    );
    // Its own requests also leave the ranking: "a" has 2GiB for it, "b" 1.5GiB.
    let nodes = [
        node("a", |n| {
            n.total.memory = 2 * GIB;
            n.free_memory = 2 * GIB;
        }),
        node("b", |n| {
            n.total.memory = 1536 * MIB;
            n.free_memory = 1536 * MIB;
        }),
    ];
    let def = svc("x", |d| mem(d, 256 * MIB));
    assert_eq!(run(&def, &nodes, &here), ok("a", "most free memory"));
}

#[test]
fn reserve_and_floors() {
    let policy = Policy {
        reserve: Capacity {
            cpu: 1.0,
            memory: 2 * GIB,
            disk: 10 * GIB,
        },
        min_free_memory: 512 * MIB,
        min_free_disk: 0,
        default_request: Capacity::default(),
    };
    // 8GiB total less 2GiB reserve: 6GiB allocatable, though 8GiB are free.
    let nodes = [free("a", 8 * GIB)];
    let def = svc("x", |d| {
        mem(d, 7 * GIB);
        d.resources.cpu = Some(3.5);
    });
    assert_eq!(
        err_text(place(&def, &nodes, &[], None, "rift", &policy)),
        "no node can run \"x\": a: cpu 3.5 requested, 3 free"
    );
    let def = svc("x", |d| mem(d, 7 * GIB));
    assert_eq!(
        err_text(place(&def, &nodes, &[], None, "rift", &policy)),
        "no node can run \"x\": a: memory 7GiB requested, 6GiB free"
    );
    let def = svc("x", |d| d.resources.disk = Some(ByteSize(95 * GIB)));
    assert_eq!(
        err_text(place(&def, &nodes, &[], None, "rift", &policy)),
        "no node can run \"x\": a: disk 95GiB requested, 90GiB free"
    );
    // Observed free memory under the floor: nothing goes there, even a
    // service requesting nothing.
    let low = [free("a", 256 * MIB), free("b", GIB)];
    let p = place(&svc("x", |_| {}), &low, &[], None, "rift", &policy);
    assert_eq!(p, ok("b", "most free memory"));
    let p = place(&svc("x", |_| {}), &low[..1], &[], None, "rift", &policy);
    assert_eq!(
        err_text(p),
        "no node can run \"x\": a: free memory 256MiB below the floor of 512MiB"
    );
}

#[test]
fn free_memory_is_the_smaller_of_observed_and_unrequested() {
    // "a": 8GiB observed free but 7GiB requested -> 1GiB. "b": 2GiB observed.
    let nodes = [free("a", 8 * GIB), free("b", 2 * GIB)];
    let here = [placed("s", "a", 7 * GIB)];
    assert_eq!(
        run(&svc("x", |_| {}), &nodes, &here),
        ok("b", "most free memory")
    );
    let def = svc("x", |d| mem(d, 3 * GIB));
    assert_eq!(
        err_text(run(&def, &nodes, &here)),
        "no node can run \"x\": a: memory 3GiB requested, 1GiB free; \
         b: memory 3GiB requested, 2GiB free"
    );
}

#[test]
fn empty_fleet() {
    assert_eq!(
        err_text(run(&svc("x", |_| {}), &[], &[])),
        "no node can run \"x\": no nodes registered"
    );
}

#[test]
fn commit_is_seen_by_later_placements() {
    // Committed requests count against allocatable memory; observed free
    // memory is what the last heartbeat said and does not change in a batch.
    let nodes = vec![
        node("a", |n| n.total.memory = 4 * GIB),
        node("b", |n| n.total.memory = 3 * GIB),
    ];
    let mut snap = Snapshot::new(nodes, &[], Policy::default(), "rift");
    let def = |name: &str| svc(name, |d| mem(d, 2 * GIB));
    let requests = Capacity {
        cpu: 0.0,
        memory: 2 * GIB,
        disk: 0,
    };
    let first = snap.place(&def("s1"), None).unwrap();
    assert_eq!(first.node, "a");
    snap.commit("s1", "a", requests);
    // "a" has 2GiB left, "b" 3GiB.
    assert_eq!(snap.place(&def("s2"), None).unwrap().node, "b");
    snap.commit("s2", "b", requests);
    assert_eq!(snap.place(&def("s3"), None).unwrap().node, "a");
    snap.commit("s3", "a", requests);
    assert_eq!(
        snap.place(&def("s4"), None).unwrap_err().to_string(),
        "no node can run \"s4\": a: memory 2GiB requested, 0B free; \
         b: memory 2GiB requested, 1GiB free"
    );
    // Committing s1 again elsewhere replaces its placement on "a".
    snap.commit("s1", "b", Capacity::default());
    assert_eq!(snap.place(&def("s4"), None).unwrap().node, "a");
}

#[test]
fn duplicate_names_keep_the_first() {
    let nodes = vec![free("a", GIB), free("a", 4 * GIB)];
    let snap = Snapshot::new(nodes, &[], Policy::default(), "rift");
    assert_eq!(snap.len(), 1);
    let e = snap
        .place(&svc("x", |d| mem(d, 2 * GIB)), None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no node can run \"x\": a: memory 2GiB requested, 1GiB free"
    );
}

#[test]
fn nodes_ruled_out_for_one_service() {
    let nodes = [
        node("hyperborea", |n| n.arch = Arch::Arm64),
        node("orion", |_| {}),
        node("rift", |_| {}),
    ];
    let snapshot = Snapshot::new(nodes.to_vec(), &[], Policy::default(), "rift");
    let def = svc("hello", |_| {});
    let refused = |node: &str| {
        (
            node.to_string(),
            Rejection::ImagePlatform(Box::new(ImageRefusal {
                image: "mcp-test/hello:1".to_string(),
                platforms: "linux/amd64".to_string(),
                node: Arch::Arm64,
            })),
        )
    };
    // Ties by name: hyperborea first, then the next best once it is ruled out.
    assert_eq!(
        snapshot.place(&def, None),
        ok("hyperborea", "most free memory")
    );
    let ex = [refused("hyperborea")];
    assert_eq!(
        snapshot.place_excluding(&def, None, &ex),
        ok("orion", "most free memory")
    );
    // A redeploy does not stay on a node ruled out for it.
    assert_eq!(
        snapshot.place_excluding(&def, Some("hyperborea"), &ex),
        ok("orion", "most free memory")
    );
    // Every node ruled out: each is named with its reason.
    let all = [refused("hyperborea"), refused("orion"), refused("rift")];
    assert_eq!(
        err_text(snapshot.place_excluding(&def, None, &all)),
        "no node can run \"hello\": hyperborea: image mcp-test/hello:1 is linux/amd64, node \
         arm64; orion: image mcp-test/hello:1 is linux/amd64, node arm64; rift: image \
         mcp-test/hello:1 is linux/amd64, node arm64"
    );
    // A pinned node ruled out is rejected with the reason, never replaced.
    let pinned = svc("hello", |d| d.node = Some("hyperborea".to_string()));
    assert_eq!(
        err_text(snapshot.place_excluding(&pinned, None, &ex)),
        "node \"hyperborea\" cannot run \"hello\": image mcp-test/hello:1 is linux/amd64, node arm64"
    );
    // A node that fails a filter anyway is named for that.
    let huge = svc("hello", |d| mem(d, 64 * GIB));
    let text = err_text(snapshot.place_excluding(&huge, None, &ex));
    assert!(
        text.contains("hyperborea: memory 64GiB requested"),
        "{text}"
    );
    // Unknown names are ignored.
    assert_eq!(
        snapshot.place_excluding(&def, None, &[refused("nowhere")]),
        ok("hyperborea", "most free memory")
    );
}

/// The default policy with master.toml's default requests (0.1 core, 128MiB).
fn with_defaults() -> Policy {
    Policy {
        default_request: Capacity {
            cpu: 0.1,
            memory: 128 * MIB,
            disk: 0,
        },
        ..Policy::default()
    }
}

/// A definition parsed from TOML text (its components and `[resources]`).
fn parsed(text: &str) -> ServiceDef {
    mcp_types::parse_definition("t.toml", text).unwrap()
}

#[test]
fn requests_count_defaults_for_what_nothing_names() {
    let policy = with_defaults();
    let two = "[[components]]\nname = \"a\"\nimage = \"x:1\"\n[[components]]\nname = \"b\"\nimage = \"x:1\"\n";
    let cases: &[(&str, f64, u64, u64)] = &[
        // Nothing named: the default per component.
        (two, 0.2, 256 * MIB, 0),
        // The service's values win over the defaults (and are the whole request).
        (
            "[resources]\ncpu = 1.5\nmemory = \"64MiB\"\ndisk = \"1GiB\"\n",
            1.5,
            64 * MIB,
            GIB,
        ),
        // A component's own value, the default for the other.
        (
            "[[components]]\nname = \"a\"\nimage = \"x:1\"\nmemory = \"512MiB\"\ncpu = 0.5\n[[components]]\nname = \"b\"\nimage = \"x:1\"\n",
            0.6,
            640 * MIB,
            0,
        ),
    ];
    for (i, (text, cpu, memory, disk)) in cases.iter().enumerate() {
        let text = if text.contains("[[components]]") {
            format!("name = \"s\"\n{text}")
        } else {
            format!("name = \"s\"\n{text}{two}")
        };
        let got = crate::requests_of(&parsed(&text), &policy);
        assert!((got.cpu - cpu).abs() < 1e-9, "case {i}: {got:?}");
        assert_eq!((got.memory, got.disk), (*memory, *disk), "case {i}");
    }
}

#[test]
fn request_less_services_spread_over_equal_nodes() {
    // Equal nodes whose observed free memory is the same figure (one snapshot):
    // the default requests make them unequal after each placement.
    let nodes: Vec<NodeView> = ["hyperborea", "orion", "rift"]
        .iter()
        .map(|n| free(n, 20 * GIB))
        .collect();
    let policy = with_defaults();
    let mut snapshot = Snapshot::new(nodes, &[], policy, "rift");
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..20 {
        let def = parsed(&format!(
            "name = \"s{i}\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n"
        ));
        let p = snapshot.place(&def, None).unwrap();
        let requests = crate::requests_of(&def, snapshot.policy());
        snapshot.commit(&def.name, &p.node, requests);
        *count.entry(p.node).or_default() += 1;
    }
    let (min, max) = (count.values().min(), count.values().max());
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(max.unwrap() - min.unwrap() <= 1, "{count:?}");
}
