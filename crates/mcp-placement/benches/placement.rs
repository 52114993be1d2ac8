//! Placement speed on a large synthetic fleet, timed with plain loops (no
//! criterion, to keep the build light): `cargo bench -p mcp-placement`.
//!
//! 5,000 nodes (a third arm64, 10% unhealthy or probing, 10% edge, ten pools
//! of 500) with 10,000 services already placed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mcp_placement::{
    place, requests_of, Capacity, Health, NodeView, PlacedService, Policy, Role, Snapshot,
};
use mcp_types::{Arch, ByteSize, Resources, ServiceDef, Tier};

const NODES: usize = 5_000;
const PLACED: usize = 10_000;
const POOLS: usize = 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A fixed-seed xorshift, so every run measures the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fleet(rng: &mut Rng) -> Vec<NodeView> {
    (0..NODES)
        .map(|i| {
            let memory = (16 + rng.below(241)) * GIB;
            let disk = (500 + rng.below(1500)) * GIB;
            NodeView {
                name: format!("node-{i:04}"),
                role: if i % 10 == 3 {
                    Role::Edge
                } else {
                    Role::Worker
                },
                arch: if i % 3 == 0 { Arch::Arm64 } else { Arch::Amd64 },
                health: match i % 20 {
                    7 => Health::Unhealthy,
                    17 => Health::Probing,
                    _ => Health::Healthy,
                },
                // Runs of ten consecutive nodes per pool, so every pool mixes
                // arches, states and roles.
                pools: vec![format!("pool-{}", (i / 10) % POOLS)],
                total: Capacity {
                    cpu: [4.0, 8.0, 16.0, 32.0, 64.0][rng.below(5) as usize],
                    memory,
                    disk,
                },
                free_memory: memory / 10 * (3 + rng.below(7)),
                free_disk: disk / 10 * (3 + rng.below(7)),
            }
        })
        .collect()
}

fn requests(rng: &mut Rng) -> Capacity {
    Capacity {
        cpu: (1 + rng.below(10)) as f64 / 10.0,
        memory: (64 + rng.below(1985)) * MIB,
        disk: (1 + rng.below(10)) * GIB,
    }
}

fn service(rng: &mut Rng, name: String, node: Option<String>) -> ServiceDef {
    let r = requests(rng);
    ServiceDef {
        name,
        tier: Tier::Worker,
        node,
        depends_on: Vec::new(),
        resources: Resources {
            cpu: Some(r.cpu),
            memory: Some(ByteSize(r.memory)),
            disk: Some(ByteSize(r.disk)),
            arch: match rng.below(3) {
                0 => vec![],
                1 => vec![Arch::Amd64],
                _ => vec![Arch::Arm64],
            },
        },
        components: Vec::new(),
    }
}

fn policy() -> Policy {
    Policy {
        reserve: Capacity {
            cpu: 0.5,
            memory: GIB,
            disk: 10 * GIB,
        },
        min_free_memory: 256 * MIB,
        min_free_disk: 5 * GIB,
        default_request: Capacity {
            cpu: 0.1,
            memory: 128 * MIB,
            disk: 0,
        },
    }
}

/// Runs `f` `n` times after a short warm-up; prints and returns the rate.
fn measure(label: &str, n: usize, mut f: impl FnMut(usize) -> bool) {
    for i in 0..n.min(1000) {
        black_box(f(i));
    }
    let mut ok = 0usize;
    let start = Instant::now();
    for i in 0..n {
        ok += usize::from(black_box(f(i)));
    }
    report(label, n, ok, start.elapsed());
}

fn report(label: &str, n: usize, ok: usize, elapsed: Duration) {
    let ns = elapsed.as_nanos() as f64 / n as f64;
    println!(
        "{label:<40} {:>12.0} placements/s {:>10.0} ns/placement  ({n} runs, {ok} placed)",
        1e9 / ns,
        ns
    );
}

fn main() {
    run(1);
}

/// The whole benchmark with every run count divided by `div` (at least one run
/// each): 1 for the figures, large for the suite's smoke run
/// (`tests/bench_smoke.rs`), which only checks that every measurement still runs.
pub(crate) fn run(div: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let nodes = fleet(&mut rng);
    let workers: Vec<&NodeView> = nodes.iter().filter(|n| n.role == Role::Worker).collect();
    let placed: Vec<PlacedService> = (0..PLACED)
        .map(|i| PlacedService {
            service: format!("placed-{i}"),
            node: workers[rng.below(workers.len() as u64) as usize]
                .name
                .clone(),
            requests: requests(&mut rng),
        })
        .collect();
    let policy = policy();
    let master = "node-0001";

    println!(
        "fleet: {NODES} nodes, {POOLS} pools of {}, {PLACED} services placed",
        NODES / POOLS
    );

    // Building the snapshot.
    let runs = (50 / div).max(1) as u32;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let copy = nodes.clone();
        let start = Instant::now();
        black_box(Snapshot::new(copy, &placed, policy.clone(), master));
        total += start.elapsed();
    }
    println!(
        "{:<40} {:>12.2} ms per snapshot ({runs} runs)",
        "Snapshot::new (5,000 nodes, 10,000 placed)",
        total.as_secs_f64() * 1e3 / f64::from(runs)
    );

    let snap = Snapshot::new(nodes.clone(), &placed, policy.clone(), master);
    let n = 1024;
    let any: Vec<ServiceDef> = (0..n)
        .map(|i| service(&mut rng, format!("new-{i}"), None))
        .collect();
    let pool: Vec<ServiceDef> = (0..n)
        .map(|i| {
            service(
                &mut rng,
                format!("new-{i}"),
                Some(format!("pool-{}", i % POOLS)),
            )
        })
        .collect();
    let pinned: Vec<ServiceDef> = (0..n)
        .map(|i| {
            let node = workers[rng.below(workers.len() as u64) as usize]
                .name
                .clone();
            service(&mut rng, format!("new-{i}"), Some(node))
        })
        .collect();
    // Redeploys of placed services, each with its current node.
    let redeploy: Vec<(ServiceDef, String)> = (0..n)
        .map(|i| {
            let p = &placed[(i * 7) % PLACED];
            (service(&mut rng, p.service.clone(), None), p.node.clone())
        })
        .collect();

    measure(
        "any worker (fixed snapshot)",
        (1_000_000 / div).max(1),
        |i| snap.place(&any[i % n], None).is_ok(),
    );
    measure(
        "pool of 500 (fixed snapshot)",
        (1_000_000 / div).max(1),
        |i| snap.place(&pool[i % n], None).is_ok(),
    );
    measure(
        "pinned node (fixed snapshot)",
        (1_000_000 / div).max(1),
        |i| snap.place(&pinned[i % n], None).is_ok(),
    );
    measure(
        "redeploy, current node given",
        (1_000_000 / div).max(1),
        |i| {
            let (def, current) = &redeploy[i % n];
            snap.place(def, Some(current)).is_ok()
        },
    );

    // A batch: place and commit 10,000 new services into one snapshot.
    let batch: Vec<ServiceDef> = (0..10_000)
        .map(|i| service(&mut rng, format!("batch-{i}"), None))
        .collect();
    for round in 0..3 {
        let mut s = snap.clone();
        let mut ok = 0;
        let start = Instant::now();
        for def in &batch {
            if let Ok(p) = s.place(def, None) {
                s.commit(&def.name, &p.node, requests_of(def, &policy));
                ok += 1;
            }
        }
        let elapsed = start.elapsed();
        report(
            &format!("batch place+commit, round {round}"),
            batch.len(),
            ok,
            elapsed,
        );
    }

    // Nothing fits: every node evaluated to build the rejection list.
    let huge = ServiceDef {
        resources: Resources {
            memory: Some(ByteSize(1 << 50)),
            ..Resources::default()
        },
        ..any[0].clone()
    };
    measure(
        "no node fits (5,000 rejections)",
        (200 / div).max(1),
        |_| snap.place(&huge, None).is_ok(),
    );

    let huge_in_pool = ServiceDef {
        node: Some("pool-0".to_string()),
        ..huge.clone()
    };
    measure(
        "no node in a pool fits (500 rejections)",
        (2_000 / div).max(1),
        |_| snap.place(&huge_in_pool, None).is_ok(),
    );

    // The one-shot function builds a snapshot per call.
    measure(
        "one-shot place() (builds a snapshot)",
        (20 / div).max(1),
        |i| place(&any[i % n], &nodes, &placed, None, master, &policy).is_ok(),
    );
}
