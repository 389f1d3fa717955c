//! Lookup throughput of the 16-8-8 mtrie: 1 M addresses per iteration, so the
//! reported time / 1 M is the per-lookup cost (criterion also prints elem/s).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;
use vecnet_fib::Ip4Mtrie;

const N_ADDRS: usize = 1 << 20;
const CLUSTER_16S: [u32; 4] = [0x0a00_0000, 0x0a01_0000, 0xac10_0000, 0xc0a8_0000];

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.u32()) * u64::from(n)) >> 32) as u32
    }
}

/// Same shape as the scale test: half host routes in a few /16s, 30% /24s,
/// 20% random lengths.
fn table(n: usize, rng: &mut Rng) -> Ip4Mtrie {
    let mut t = Ip4Mtrie::new(0);
    let mut seen = HashSet::new();
    let mut add = |p: u32, l: u8, rng: &mut Rng, t: &mut Ip4Mtrie| {
        let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        if seen.insert((p & m, l)) {
            t.insert(p, l, rng.below(1 << 16) + 1).unwrap();
        }
    };
    while t.route_count() < n / 2 {
        let base = CLUSTER_16S[rng.below(4) as usize];
        add(base | (rng.u32() & 0xffff), 32, rng, &mut t);
    }
    while t.route_count() < n * 8 / 10 {
        add(rng.u32(), 24, rng, &mut t);
    }
    while t.route_count() < n {
        let len = rng.below(33) as u8;
        add(rng.u32(), len, rng, &mut t);
    }
    t
}

fn bench_lookup(c: &mut Criterion) {
    let mut rng = Rng(42);
    // Uniform addresses mostly stop at the root; "cluster" addresses fall in the
    // /16s holding the host routes, so most walks take all three loads.
    let random: Vec<u32> = (0..N_ADDRS).map(|_| rng.u32()).collect();
    let cluster: Vec<u32> = (0..N_ADDRS)
        .map(|_| CLUSTER_16S[rng.below(4) as usize] | (rng.u32() & 0xffff))
        .collect();

    for n_routes in [10, 10_000, 100_000] {
        let t = table(n_routes, &mut rng);
        let mut g = c.benchmark_group(format!("lookup/{n_routes}_routes"));
        g.throughput(Throughput::Elements(N_ADDRS as u64));
        for (name, addrs) in [("random", &random), ("cluster", &cluster)] {
            g.bench_with_input(BenchmarkId::new("x1", name), addrs, |b, addrs| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for &a in addrs.iter() {
                        acc = acc.wrapping_add(t.lookup(a));
                    }
                    black_box(acc)
                })
            });
            g.bench_with_input(BenchmarkId::new("x4", name), addrs, |b, addrs| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for q in addrs.chunks_exact(4) {
                        let r = t.lookup_x4([q[0], q[1], q[2], q[3]]);
                        acc = acc.wrapping_add(r[0] ^ r[1] ^ r[2] ^ r[3]);
                    }
                    black_box(acc)
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_lookup
}
criterion_main!(benches);
