//! Time for traces and timeouts, and CPU clocks for `show runtime`.

use std::time::Instant;

/// Wall time since start, or virtual time for `simulate` (deterministic output).
#[derive(Debug, Clone)]
pub enum Clock {
    Real {
        start: Instant,
    },
    /// Advances by `step_ns` each time a node is dispatched.
    Virtual {
        now_ns: u64,
        step_ns: u64,
    },
}

impl Clock {
    pub fn real() -> Self {
        Clock::Real {
            start: Instant::now(),
        }
    }

    pub fn virtual_at(origin_ns: u64, step_ns: u64) -> Self {
        Clock::Virtual {
            now_ns: origin_ns,
            step_ns,
        }
    }

    /// Current time in ns since start.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Real { start } => start.elapsed().as_nanos() as u64,
            Clock::Virtual { now_ns, .. } => *now_ns,
        }
    }

    /// Called once per node dispatch; moves virtual time on.
    #[inline]
    pub fn tick(&mut self) -> u64 {
        match self {
            Clock::Real { start } => start.elapsed().as_nanos() as u64,
            Clock::Virtual { now_ns, step_ns } => {
                let t = *now_ns;
                *now_ns += *step_ns;
                t
            }
        }
    }

    /// Moves time forward by `ns` (a real clock by moving its start back); false if a real
    /// clock's start cannot go that far back.
    pub fn advance(&mut self, ns: u64) -> bool {
        match self {
            Clock::Real { start } => match start.checked_sub(std::time::Duration::from_nanos(ns)) {
                Some(s) => {
                    *start = s;
                    true
                }
                None => false,
            },
            Clock::Virtual { now_ns, .. } => {
                *now_ns = now_ns.saturating_add(ns);
                true
            }
        }
    }

    /// Sets virtual time (ignored for a real clock).
    pub fn set_ns(&mut self, t: u64) {
        if let Clock::Virtual { now_ns, .. } = self {
            *now_ns = t;
        }
    }
}

/// CPU time stamp counter, for per-node clocks.
#[inline]
pub fn cpu_clocks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86_64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_both_kinds_forward() {
        let mut v = Clock::virtual_at(5, 1);
        assert!(v.advance(10));
        assert_eq!(v.now_ns(), 15);
        let mut r = Clock::real();
        let before = r.now_ns();
        assert!(r.advance(3_600_000_000_000));
        assert!(r.now_ns() >= before + 3_600_000_000_000);
    }
}
