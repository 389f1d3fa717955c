//! The fast path allocates nothing per packet: one million packets through the routed path with a
//! counting global allocator. This file is its own test binary so that no other test allocates
//! concurrently under the same counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use vecnet_graph::Clock;
use vecnet_vswitch::pg::{routed_config, routed_generator};
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

#[test]
fn one_million_packets_allocate_nothing() {
    const PACKETS: u64 = 1_000_000;
    let mut pg = routed_generator(1000);
    pg.remaining = PACKETS + 10 * 256;
    let opts = DataplaneOptions {
        buffers: 2048,
        trace_capacity: 64,
        clock: Clock::real(),
    };
    let mut dp = Dataplane::new(opts, Box::new(pg)).unwrap();
    dp.apply(&routed_config(1000)).unwrap();
    // Warm-up: first vectors may size lazily-grown state.
    for _ in 0..10 {
        dp.run_once();
    }
    // Trace a few packets too: tracing must not allocate either.
    dp.trace_add("virtio-input", 8).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut n = 0u64;
    while n < PACKETS {
        let got = dp.run_once() as u64;
        assert!(got > 0, "generator ran dry at {n}");
        n += got;
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let sent = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<PacketGenerator>()
        .unwrap()
        .sent_packets;
    assert!(sent >= PACKETS, "only {sent} packets reached the output");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations while forwarding {n} packets"
    );
    assert_eq!(dp.pool.free_count(), dp.pool.capacity(), "buffers leaked");
    assert_eq!(dp.trace.packet_count(), 8, "the trace quota was used");
}
