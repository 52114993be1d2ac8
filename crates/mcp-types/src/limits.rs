//! The limits each component runs under (SPEC §3): `[resources]` `memory` and `cpu`
//! are the service's, split evenly between its components unless a component sets
//! its own. One pure function decides it, for validation, the agent's runtimes and
//! status alike.

use crate::service::ServiceDef;
use crate::size::ByteSize;

/// One component's hard limits; `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// The most memory it may use (no swap beyond it).
    pub memory: Option<ByteSize>,
    /// Its CPU quota, in cores.
    pub cpu: Option<f64>,
}

impl Limits {
    /// No limit of either kind.
    pub fn is_none(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none()
    }
}

/// Cores as the billionths a container runtime's quota counts (Docker's NanoCPUs).
pub fn nano_cpus(cpu: f64) -> i64 {
    (cpu * 1e9).round() as i64
}

/// Shares of `total` for components whose own values are `own`: a component's own
/// value, else an even split of what `total` leaves after the components with their
/// own (rounded down to whole bytes). Without a total, a component's own value is its
/// limit and the others have none. A share may come out 0 (nothing left):
/// validation refuses that definition.
pub fn split_memory(total: Option<u64>, own: &[Option<u64>]) -> Vec<Option<u64>> {
    let set: u64 = own.iter().flatten().fold(0u64, |a, b| a.saturating_add(*b));
    let unset = own.iter().filter(|o| o.is_none()).count() as u64;
    let share = total.map(|t| t.saturating_sub(set).checked_div(unset).unwrap_or(0));
    own.iter().map(|o| o.or(share)).collect()
}

/// As `split_memory`, for cores. A share is never negative.
pub fn split_cpu(total: Option<f64>, own: &[Option<f64>]) -> Vec<Option<f64>> {
    let set: f64 = own.iter().flatten().sum();
    let unset = own.iter().filter(|o| o.is_none()).count();
    let share = total.map(|t| {
        if unset == 0 {
            0.0
        } else {
            ((t - set) / unset as f64).max(0.0)
        }
    });
    own.iter().map(|o| o.or(share)).collect()
}

impl ServiceDef {
    /// Each component's effective limits, in component order.
    pub fn limits(&self) -> Vec<Limits> {
        let memory: Vec<Option<u64>> = self
            .components
            .iter()
            .map(|c| c.memory.map(ByteSize::bytes))
            .collect();
        let cpu: Vec<Option<f64>> = self.components.iter().map(|c| c.cpu).collect();
        let memory = split_memory(self.resources.memory.map(ByteSize::bytes), &memory);
        let cpu = split_cpu(self.resources.cpu, &cpu);
        memory
            .into_iter()
            .zip(cpu)
            .map(|(memory, cpu)| Limits {
                memory: memory.map(ByteSize),
                cpu,
            })
            .collect()
    }

    /// The effective limits of the component called `component`.
    pub fn limits_of(&self, component: &str) -> Limits {
        self.components
            .iter()
            .position(|c| c.name == component)
            .and_then(|i| self.limits().get(i).copied())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// (the service's value, the components' own, the shares).
    type Case<'a, T> = (Option<T>, &'a [Option<T>], &'a [Option<T>]);

    #[test]
    fn memory_shares() {
        const M: u64 = 1 << 20;
        let cases: &[Case<u64>] = &[
            // No service value: own values only.
            (None, &[None], &[None]),
            (None, &[Some(M), None], &[Some(M), None]),
            // One component takes it all.
            (Some(64 * M), &[None], &[Some(64 * M)]),
            // An even split.
            (Some(64 * M), &[None, None], &[Some(32 * M), Some(32 * M)]),
            // Rounded down to whole bytes.
            (Some(10), &[None, None, None], &[Some(3), Some(3), Some(3)]),
            // Own values first, the rest split.
            (
                Some(512 * M),
                &[Some(256 * M), None, None],
                &[Some(256 * M), Some(128 * M), Some(128 * M)],
            ),
            // Everyone sets their own: the rest is unused.
            (
                Some(512 * M),
                &[Some(100 * M), Some(100 * M)],
                &[Some(100 * M), Some(100 * M)],
            ),
            // Nothing left (validation refuses it).
            (Some(M), &[Some(M), None], &[Some(M), Some(0)]),
            (Some(M), &[Some(2 * M), None], &[Some(2 * M), Some(0)]),
        ];
        for (total, own, want) in cases {
            assert_eq!(split_memory(*total, own), *want, "{total:?} {own:?}");
        }
    }

    #[test]
    fn cpu_shares() {
        let cases: &[Case<f64>] = &[
            (None, &[None, Some(0.5)], &[None, Some(0.5)]),
            (Some(0.5), &[None], &[Some(0.5)]),
            (Some(1.0), &[None, None], &[Some(0.5), Some(0.5)]),
            (Some(1.0), &[Some(0.25), None], &[Some(0.25), Some(0.75)]),
            (Some(1.0), &[Some(2.0), None], &[Some(2.0), Some(0.0)]),
        ];
        for (total, own, want) in cases {
            assert_eq!(split_cpu(*total, own), *want, "{total:?} {own:?}");
        }
    }

    proptest! {
        /// Shares never add up to more than the total when the own values fit in it,
        /// and every component without its own value gets the same share.
        #[test]
        fn memory_shares_fit(total in 1u64..1 << 40, own in prop::collection::vec(prop::option::of(1u64..1 << 36), 1..8)) {
            let shares = split_memory(Some(total), &own);
            let set: u64 = own.iter().flatten().sum();
            prop_assert_eq!(shares.len(), own.len());
            if set <= total {
                let sum: u64 = shares.iter().flatten().sum();
                prop_assert!(sum <= total);
            }
            let unset: Vec<u64> = own.iter().zip(&shares).filter(|(o, _)| o.is_none()).filter_map(|(_, s)| *s).collect();
            prop_assert!(unset.windows(2).all(|w| w[0] == w[1]));
            for (o, s) in own.iter().zip(&shares) {
                if let Some(o) = o {
                    prop_assert_eq!(Some(*o), *s);
                }
            }
        }

        #[test]
        fn cpu_shares_fit(total in 0.01f64..64.0, own in prop::collection::vec(prop::option::of(0.01f64..8.0), 1..8)) {
            let shares = split_cpu(Some(total), &own);
            let set: f64 = own.iter().flatten().sum();
            if set <= total {
                let sum: f64 = shares.iter().flatten().sum();
                prop_assert!(sum <= total + 1e-9, "{} > {}", sum, total);
            }
            prop_assert!(shares.iter().flatten().all(|s| *s >= 0.0));
        }
    }
}
