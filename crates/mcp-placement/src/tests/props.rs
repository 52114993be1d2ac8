//! Property tests: the snapshot agrees with the reference on random fleets,
//! never breaks a filter, is deterministic, and sees what a batch committed.
#![allow(clippy::unwrap_used)]

use mcp_types::{Arch, ByteSize, Resources, ServiceDef, Tier};
use proptest::prelude::*;

use super::reference;
use crate::fleet::millicores;
use crate::{
    requests_of, Capacity, Health, NodeView, PlacedService, PlacementError, Policy, Role, Snapshot,
};

const MIB: u64 = 1 << 20;
/// Small units so that ties and exact fits are common.
const STEP: u64 = 256 * MIB;

fn arch() -> impl Strategy<Value = Arch> {
    prop_oneof![Just(Arch::Amd64), Just(Arch::Arm64)]
}

fn node(name: String) -> impl Strategy<Value = NodeView> {
    (
        prop_oneof![4 => Just(Role::Worker), 1 => Just(Role::Edge)],
        arch(),
        prop_oneof![
            5 => Just(Health::Healthy),
            1 => Just(Health::Probing),
            1 => Just(Health::Unhealthy)
        ],
        proptest::sample::subsequence(vec!["p1", "p2", "n3"], 0..=3),
        (
            prop::sample::select(vec![0.5, 1.0, 2.0, 4.0]),
            0..=16u64,
            0..=16u64,
        ),
        (0..=16u64, 0..=16u64),
    )
        .prop_map(
            move |(role, arch, health, pools, (cpu, memory, disk), (fm, fd))| NodeView {
                name: name.clone(),
                role,
                arch,
                health,
                pools: pools.into_iter().map(String::from).collect(),
                total: Capacity {
                    cpu,
                    memory: memory * STEP,
                    disk: disk * STEP,
                },
                free_memory: fm * STEP,
                free_disk: fd * STEP,
            },
        )
}

/// Up to ten nodes with unique names n0..n9.
fn fleet() -> impl Strategy<Value = Vec<NodeView>> {
    (0..=10usize).prop_flat_map(|k| (0..k).map(|i| node(format!("n{i}"))).collect::<Vec<_>>())
}

fn node_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..10u32).prop_map(|i| format!("n{i}")),
        1 => Just("ghost".to_string()),
    ]
}

fn requests() -> impl Strategy<Value = Capacity> {
    (
        prop::sample::select(vec![0.0, 0.25, 0.5, 1.0]),
        0..=4u64,
        0..=4u64,
    )
        .prop_map(|(cpu, m, d)| Capacity {
            cpu,
            memory: m * STEP,
            disk: d * STEP,
        })
}

fn placed() -> impl Strategy<Value = Vec<PlacedService>> {
    prop::collection::vec(
        (
            (0..6u32).prop_map(|i| format!("s{i}")),
            node_name(),
            requests(),
        ),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(service, node, requests)| PlacedService {
                service,
                node,
                requests,
            })
            .collect()
    })
}

fn service() -> impl Strategy<Value = ServiceDef> {
    let target = prop_oneof![
        6 => Just(None),
        2 => (0..10u32).prop_map(|i| Some(format!("n{i}"))),
        3 => prop::sample::select(vec!["p1", "p2", "n3"]).prop_map(|p| Some(p.to_string())),
        1 => Just(Some("nope".to_string())),
    ];
    let archs = prop::sample::select(vec![
        vec![],
        vec![Arch::Amd64],
        vec![Arch::Arm64],
        vec![Arch::Arm64, Arch::Amd64],
    ]);
    (
        (0..7u32).prop_map(|i| format!("s{i}")),
        prop_oneof![3 => Just(Tier::Worker), 1 => Just(Tier::Core)],
        target,
        archs,
        prop::option::of(prop::sample::select(vec![0.0, 0.25, 0.5, 1.0, 2.0])),
        prop::option::of(0..=6u64),
        prop::option::of(0..=6u64),
    )
        .prop_map(|(name, tier, node, arch, cpu, memory, disk)| ServiceDef {
            name,
            tier,
            node,
            depends_on: Vec::new(),
            resources: Resources {
                cpu,
                memory: memory.map(|m| ByteSize(m * STEP)),
                disk: disk.map(|d| ByteSize(d * STEP)),
                arch,
            },
            components: Vec::new(),
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0..=1u64,
        0..=2u64,
        0..=2u64,
        0..=2u64,
        0..=2u64,
        0..=1u64,
        0..=1u64,
    )
        .prop_map(|(cpu, m, d, fm, fd, dc, dm)| Policy {
            reserve: Capacity {
                cpu: cpu as f64 * 0.5,
                memory: m * STEP,
                disk: d * STEP,
            },
            min_free_memory: fm * STEP,
            min_free_disk: fd * STEP,
            default_request: Capacity {
                cpu: dc as f64 * 0.25,
                memory: dm * STEP,
                disk: 0,
            },
        })
}

fn master() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..10u32).prop_map(|i| format!("n{i}")),
        1 => Just("missing".to_string()),
    ]
}

fn current() -> impl Strategy<Value = Option<String>> {
    prop::option::of(node_name())
}

/// Everything one placement takes.
#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<NodeView>,
    placed: Vec<PlacedService>,
    def: ServiceDef,
    current: Option<String>,
    master: String,
    policy: Policy,
}

fn case() -> impl Strategy<Value = Case> {
    (fleet(), placed(), service(), current(), master(), policy()).prop_map(
        |(nodes, placed, def, current, master, policy)| Case {
            nodes,
            placed,
            def,
            current,
            master,
            policy,
        },
    )
}

impl Case {
    fn snapshot(&self) -> Snapshot {
        Snapshot::new(
            self.nodes.clone(),
            &self.placed,
            self.policy.clone(),
            &self.master,
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn equals_the_reference(c in case()) {
        let fast = c.snapshot().place(&c.def, c.current.as_deref());
        let slow = reference::place(&c.def, &c.nodes, &c.placed, c.current.as_deref(), &c.master, &c.policy);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn never_breaks_a_filter(c in case()) {
        let Ok(p) = c.snapshot().place(&c.def, c.current.as_deref()) else {
            return Ok(());
        };
        let node = c.nodes.iter().find(|n| n.name == p.node).unwrap();
        prop_assert_eq!(node.health, Health::Healthy);
        prop_assert_eq!(node.role, Role::Worker);
        let allowed = &c.def.resources.arch;
        prop_assert!(allowed.is_empty() || allowed.contains(&node.arch));
        // In scope.
        match (&c.def.node, c.def.tier) {
            (Some(t), _) if c.nodes.iter().any(|n| &n.name == t) => prop_assert_eq!(&p.node, t),
            (Some(t), _) => prop_assert!(node.pools.contains(t)),
            (None, Tier::Core) => prop_assert_eq!(&p.node, &c.master),
            (None, Tier::Worker) => {}
        }
        // Never over capacity: placed requests (less its own) + its request
        // fit in the allocatable figures, and observed free is enough.
        let want = requests_of(&c.def, &c.policy);
        let others = c.placed.iter().filter(|s| s.node == node.name && s.service != c.def.name);
        let (mut cpu, mut memory, mut disk) = (millicores(want.cpu), want.memory, want.disk);
        for s in others {
            cpu += millicores(s.requests.cpu);
            memory += s.requests.memory;
            disk += s.requests.disk;
        }
        let r = &c.policy.reserve;
        prop_assert!(cpu <= millicores(node.total.cpu).saturating_sub(millicores(r.cpu)));
        prop_assert!(memory <= node.total.memory.saturating_sub(r.memory));
        prop_assert!(disk <= node.total.disk.saturating_sub(r.disk));
        prop_assert!(node.free_memory >= want.memory && node.free_memory >= c.policy.min_free_memory);
        prop_assert!(node.free_disk >= want.disk && node.free_disk >= c.policy.min_free_disk);
    }

    #[test]
    fn deterministic_whatever_the_input_order(
        (c, shuffled_nodes, shuffled_placed) in case().prop_flat_map(|c| {
            let nodes = Just(c.nodes.clone()).prop_shuffle();
            let placed = Just(c.placed.clone()).prop_shuffle();
            (Just(c), nodes, placed)
        })
    ) {
        let first = c.snapshot().place(&c.def, c.current.as_deref());
        let again = c.snapshot().place(&c.def, c.current.as_deref());
        let shuffled = Snapshot::new(shuffled_nodes, &shuffled_placed, c.policy.clone(), &c.master)
            .place(&c.def, c.current.as_deref());
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &shuffled);
        let one_shot = crate::place(&c.def, &c.nodes, &c.placed, c.current.as_deref(), &c.master, &c.policy);
        prop_assert_eq!(&first, &one_shot);
    }

    /// A batch: each placement is committed before the next, and every answer
    /// equals the reference given the placed list so far.
    #[test]
    fn commit_then_place_sees_the_commit(
        c in case(),
        batch in prop::collection::vec((service(), current()), 1..10),
    ) {
        let mut snap = c.snapshot();
        let mut placed = c.placed.clone();
        for (def, current) in &batch {
            let fast = snap.place(def, current.as_deref());
            let slow = reference::place(def, &c.nodes, &placed, current.as_deref(), &c.master, &c.policy);
            prop_assert_eq!(&fast, &slow);
            // Commit wherever it went, or sometimes to an arbitrary node
            // (the master may record a placement it made by other means).
            let node = match (&fast, &current) {
                (Ok(p), _) => p.node.clone(),
                (Err(PlacementError::Rejected { .. }), Some(cur)) => cur.clone(),
                (Err(_), _) => continue,
            };
            let requests = requests_of(def, &c.policy);
            snap.commit(&def.name, &node, requests);
            placed.retain(|p| p.service != def.name);
            placed.push(PlacedService { service: def.name.clone(), node, requests });
        }
    }
}
