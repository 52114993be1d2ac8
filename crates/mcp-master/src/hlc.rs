//! Generations: a hybrid logical clock. Each deploy of a service takes the next value,
//! which only grows: wall-clock milliseconds in the high 48 bits, a counter in the low
//! 16, and never below anything observed from an agent. So a restarted master, or one
//! whose clock stepped back, still issues generations newer than every copy it can see.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the logical counter under the physical milliseconds.
const COUNTER_BITS: u32 = 16;

/// The master's generation clock.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// The next generation at wall-clock `now_ms`: above every value issued or observed.
    pub fn next_at(&self, now_ms: u64) -> u64 {
        let physical = now_ms << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The next generation now.
    pub fn next(&self) -> u64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.next_at(now_ms)
    }

    /// Takes in a generation an agent reported, so later ones are newer.
    pub fn observe(&self, generation: u64) {
        self.last.fetch_max(generation, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_clock_that_steps_back_still_grows() {
        let hlc = Hlc::default();
        let a = hlc.next_at(10_000);
        let b = hlc.next_at(5_000);
        let c = hlc.next_at(5_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(hlc.next_at(20_000), 20_000 << COUNTER_BITS);
    }

    #[test]
    fn observed_generations_are_overtaken() {
        let hlc = Hlc::default();
        let far = 99_999 << COUNTER_BITS;
        hlc.observe(far);
        assert!(hlc.next_at(1_000) > far);
    }

    proptest! {
        #[test]
        fn strictly_increasing(steps in proptest::collection::vec((0u64..1 << 40, any::<bool>(), 0u64..u64::MAX >> 2), 1..64)) {
            let hlc = Hlc::default();
            let mut prev = 0;
            for (now, observe, seen) in steps {
                if observe { hlc.observe(seen); prev = prev.max(seen); }
                let g = hlc.next_at(now);
                prop_assert!(g > prev);
                prev = g;
            }
        }
    }
}
