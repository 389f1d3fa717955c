//! The NAT path allocates nothing per packet, for established flows and for new ones (session
//! creation only takes pre-sized room): packets through `nat44-out2in` with a counting global
//! allocator. Its own test binary, so that no other test allocates under the same counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use vecnet_graph::Clock;
use vecnet_vswitch::pg::{nat_config, nat_generator};
use vecnet_vswitch::{Dataplane, DataplaneOptions, PacketGenerator};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `packets` packets after `warm` packets of warm-up; returns the allocations and the
/// packets that reached the output.
fn run(services: u32, flows: u32, warm: u64, packets: u64) -> (u64, u64) {
    let mut pg = nat_generator(services, flows);
    pg.remaining = warm + packets;
    let opts = DataplaneOptions {
        buffers: 2048,
        trace_capacity: 64,
        clock: Clock::real(),
    };
    let mut dp = Dataplane::new(opts, Box::new(pg)).unwrap();
    dp.apply(&nat_config(services, 10, 1 << 20)).unwrap();
    let mut warmed = 0;
    while warmed < warm {
        warmed += dp.run_once() as u64;
    }
    dp.trace_add("virtio-input", 8).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut n = 0u64;
    loop {
        let got = dp.run_once() as u64;
        if got == 0 {
            break;
        }
        n += got;
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(warmed + n, warm + packets);
    assert!(n + 256 > packets, "measured {n} packets");
    let sent = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<PacketGenerator>()
        .unwrap()
        .sent_packets;
    assert_eq!(dp.pool.free_count(), dp.pool.capacity(), "buffers leaked");
    (allocs, sent)
}

#[test]
fn nat_packets_allocate_nothing() {
    // Established flows: 10 000 sessions made during the warm-up, then hits only.
    let (allocs, sent) = run(1, 10_000, 10_000, 500_000);
    assert_eq!(sent, 510_000, "every packet translated and sent");
    assert_eq!(allocs, 0, "{allocs} allocations for established flows");
    // New flows: every packet creates a session (load balancing, both index keys, LRU).
    let (allocs, sent) = run(1, 60_000, 256, 59_744);
    assert_eq!(sent, 60_000);
    assert_eq!(allocs, 0, "{allocs} allocations for new flows");
    // Many Services: flows spread over 10 000 VIPs.
    let (allocs, _) = run(10_000, 10_000, 10_000, 200_000);
    assert_eq!(allocs, 0, "{allocs} allocations with 10 000 Services");
}
