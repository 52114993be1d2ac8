//! Table tests and properties of the planner.

use super::*;
use proptest::prelude::*;

fn node(name: &str, answers: bool, copies: &[(&str, u64, bool)]) -> NodeFacts {
    NodeFacts {
        name: name.to_string(),
        answers,
        copies: copies
            .iter()
            .map(|(s, g, d)| Copy {
                service: s.to_string(),
                generation: *g,
                desired: *d,
                running: *d,
                ready: *d,
                routes: vec![],
                ports: vec![],
            })
            .collect(),
        edge: None,
        host: "127.0.0.1".into(),
    }
}

fn remove(service: &str, node: &str, generation: u64, why: Why) -> Action {
    Action::RemoveCopy {
        service: service.into(),
        node: node.into(),
        generation,
        why,
    }
}

fn superseded(by: &str, generation: u64) -> Why {
    Why::Superseded {
        by_node: by.into(),
        by_generation: generation,
    }
}

#[test]
fn table() {
    struct Case {
        name: &'static str,
        world: World,
        want: Vec<Action>,
    }
    let cases = [
        Case {
            name: "one copy: nothing to do",
            world: World {
                nodes: vec![node("orion", true, &[("hello", 5, true)])],
                ..World::default()
            },
            want: vec![],
        },
        Case {
            name: "a move: the old copy goes",
            world: World {
                nodes: vec![
                    node("orion", true, &[("hello", 5, true)]),
                    node("rift", true, &[("hello", 9, true)]),
                ],
                ..World::default()
            },
            want: vec![remove("hello", "orion", 5, superseded("rift", 9))],
        },
        Case {
            name: "the old copy's node does not answer yet: wait",
            world: World {
                nodes: vec![
                    node("orion", false, &[("hello", 5, true)]),
                    node("rift", true, &[("hello", 9, true)]),
                ],
                ..World::default()
            },
            want: vec![],
        },
        Case {
            name: "the newest copy wins even on a node that does not answer",
            world: World {
                nodes: vec![
                    node("orion", false, &[("hello", 9, true)]),
                    node("rift", true, &[("hello", 5, true)]),
                ],
                ..World::default()
            },
            want: vec![remove("hello", "rift", 5, superseded("orion", 9))],
        },
        Case {
            name: "two copies without generations: left alone",
            world: World {
                nodes: vec![
                    node("orion", true, &[("hello", 0, true)]),
                    node("rift", true, &[("hello", 0, true)]),
                ],
                ..World::default()
            },
            want: vec![],
        },
        Case {
            name: "bare instances lose to a copy with desired state",
            world: World {
                nodes: vec![
                    node("orion", true, &[("hello", 0, false)]),
                    node("rift", true, &[("hello", 0, true)]),
                ],
                ..World::default()
            },
            want: vec![remove("hello", "orion", 0, superseded("rift", 0))],
        },
        Case {
            name: "bare instances alone are left alone",
            world: World {
                nodes: vec![node("orion", true, &[("hello", 0, false)])],
                ..World::default()
            },
            want: vec![],
        },
        Case {
            name: "a removed service loses every copy at or below the removal",
            world: World {
                nodes: vec![
                    node("orion", true, &[("hello", 5, true)]),
                    node("rift", true, &[("hello", 12, true)]),
                ],
                removed: [("hello".to_string(), 7)].into(),
                ..World::default()
            },
            want: vec![remove("hello", "orion", 5, Why::Removed)],
        },
        Case {
            name: "a removal is forgotten once no copy is left",
            world: World {
                nodes: vec![node("orion", true, &[("other", 5, true)])],
                removed: [("hello".to_string(), 7)].into(),
                ..World::default()
            },
            want: vec![Action::ForgetRemoval {
                service: "hello".into(),
            }],
        },
        Case {
            name: "a removal is kept while a node that does not answer holds a copy",
            world: World {
                nodes: vec![node("orion", false, &[("hello", 5, true)])],
                removed: [("hello".to_string(), 7)].into(),
                ..World::default()
            },
            want: vec![],
        },
    ];
    for case in cases {
        assert_eq!(plan(&case.world), case.want, "{}", case.name);
    }
}

/// Applies a plan as the executor would if every call succeeded.
fn apply(world: &World, actions: &[Action]) -> World {
    let mut next = world.clone();
    for action in actions {
        match action {
            Action::RemoveCopy {
                service,
                node,
                generation,
                ..
            } => {
                for n in next.nodes.iter_mut().filter(|n| &n.name == node) {
                    n.copies
                        .retain(|c| !(&c.service == service && c.generation <= *generation));
                }
            }
            Action::ForgetRemoval { service } => {
                next.removed.remove(service);
            }
            // No edges in these worlds.
            Action::SetupRoute { .. } | Action::RemoveRoute { .. } => {}
        }
    }
    next
}

fn world_strategy() -> impl Strategy<Value = World> {
    let copy = (0usize..4, 0u64..6, any::<bool>());
    let node = (any::<bool>(), proptest::collection::vec(copy, 0..4));
    (
        proptest::collection::vec(node, 1..5),
        proptest::collection::btree_map(0usize..4, 0u64..6, 0..2),
    )
        .prop_map(|(nodes, removed)| World {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (answers, copies))| {
                    let mut seen = BTreeSet::new();
                    NodeFacts {
                        name: format!("n{i}"),
                        answers,
                        // An agent reports a service at most once.
                        copies: copies
                            .into_iter()
                            .filter(|(s, _, _)| seen.insert(*s))
                            .map(|(s, g, d)| Copy {
                                service: format!("s{s}"),
                                generation: g,
                                desired: d,
                                running: d,
                                ready: d,
                                routes: vec![],
                                ports: vec![],
                            })
                            .collect(),
                        edge: None,
                        host: format!("10.0.0.{i}"),
                    }
                })
                .collect(),
            removed: removed
                .into_iter()
                .map(|(s, g)| (format!("s{s}"), g))
                .collect(),
            ..World::default()
        })
}

proptest! {
    /// The newest copy is never removed unless the service was removed above it.
    #[test]
    fn the_newest_copy_survives(world in world_strategy()) {
        for action in plan(&world) {
            if let Action::RemoveCopy { service, node, generation, why } = action {
                let (top_node, top) = newest(&world.nodes, &service).expect("a copy");
                if top_node.name == node && top.generation == generation {
                    prop_assert_eq!(why, Why::Removed);
                    prop_assert!(world.removed.get(&service).is_some_and(|at| *at >= generation));
                }
                let n = world.nodes.iter().find(|n| n.name == node).expect("node");
                prop_assert!(n.answers, "only nodes that answer are asked");
            }
        }
    }

    /// Planning is idempotent: once its actions are done, nothing is left to do, and
    /// among nodes that answer at most one orderable copy of each service remains.
    #[test]
    fn converges_in_one_step(world in world_strategy()) {
        let after = apply(&world, &plan(&world));
        let again: Vec<Action> = plan(&after)
            .into_iter()
            .filter(|a| matches!(a, Action::RemoveCopy { .. }))
            .collect();
        prop_assert_eq!(again, Vec::<Action>::new());
        let services: BTreeSet<&str> = after.nodes.iter()
            .flat_map(|n| n.copies.iter().map(|c| c.service.as_str())).collect();
        for service in services {
            let (_, top) = newest(&after.nodes, service).expect("a copy");
            for n in after.nodes.iter().filter(|n| n.answers) {
                for c in n.copies.iter().filter(|c| c.service == service) {
                    prop_assert!(c.generation == top.generation, "{service} on {} is older", n.name);
                }
            }
        }
    }
}
