//! 100 000 routes of mixed lengths: correctness on samples, and the memory
//! footprint (printed; run with `--nocapture` to see it).

use std::collections::{HashMap, HashSet};
use vecnet_fib::Ip4Mtrie;

const DEFAULT: u32 = 0x7fff_0000;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.u32()) * u64::from(n)) >> 32) as u32
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// Reference LPM: probe each length's exact-match map, longest first.
struct Reference(Vec<HashMap<u32, u32>>);
impl Reference {
    fn lookup(&self, addr: u32) -> u32 {
        (0..=32u8)
            .rev()
            .find_map(|l| self.0[usize::from(l)].get(&(addr & mask(l))).copied())
            .unwrap_or(DEFAULT)
    }
}

fn route_set(rng: &mut Rng) -> Vec<(u32, u8, u32)> {
    let mut seen = HashSet::new();
    let mut routes = Vec::with_capacity(100_000);
    let mut push = |p: u32, l: u8, rng: &mut Rng| {
        let p = p & mask(l);
        if seen.insert((p, l)) {
            routes.push((p, l, rng.below(1 << 20)));
            true
        } else {
            false
        }
    };
    let slash16s = [0x0a00_0000u32, 0x0a01_0000, 0xac10_0000, 0xc0a8_0000];
    let mut n = 0;
    while n < 50_000 {
        let base = slash16s[rng.below(4) as usize];
        n += usize::from(push(base | (rng.u32() & 0xffff), 32, rng));
    }
    n = 0;
    while n < 30_000 {
        n += usize::from(push(rng.u32(), 24, rng));
    }
    n = 0;
    while n < 20_000 {
        let len = rng.below(33) as u8;
        n += usize::from(push(rng.u32(), len, rng));
    }
    routes
}

#[test]
fn hundred_thousand_routes() {
    let mut rng = Rng(0x5eed);
    let mut routes = route_set(&mut rng);
    // Shuffle so short routes land both before and after the plies they cover.
    for i in (1..routes.len()).rev() {
        routes.swap(i, rng.below(i as u32 + 1) as usize);
    }

    let mut t = Ip4Mtrie::new(DEFAULT);
    let mut reference = Reference(vec![HashMap::new(); 33]);
    for &(p, l, v) in &routes {
        t.insert(p, l, v).unwrap();
        reference.0[usize::from(l)].insert(p, v);
    }
    assert_eq!(t.route_count(), 100_000);
    println!(
        "100k routes: memory_bytes = {} ({:.1} MiB), plies = {}",
        t.memory_bytes(),
        t.memory_bytes() as f64 / (1 << 20) as f64,
        t.ply_count()
    );

    let check = |t: &Ip4Mtrie, reference: &Reference, rng: &mut Rng, routes: &[(u32, u8, u32)]| {
        let mut addrs: Vec<u32> = (0..100_000).map(|_| rng.u32()).collect();
        // Addresses inside the dense /16s, where all three levels are used.
        addrs.extend((0..50_000).map(|_| 0x0a00_0000 | (rng.u32() & 0x1ffff)));
        for _ in 0..10_000 {
            let (p, l, _) = routes[rng.below(routes.len() as u32) as usize];
            let last = p | !mask(l);
            addrs.extend([p, last, p.wrapping_sub(1), last.wrapping_add(1)]);
        }
        for &a in &addrs {
            assert_eq!(t.lookup(a), reference.lookup(a), "addr {a:#x}");
        }
        for c in addrs.chunks_exact(4) {
            let q = [c[0], c[1], c[2], c[3]];
            assert_eq!(t.lookup_x4(q), q.map(|a| reference.lookup(a)));
        }
    };
    check(&t, &reference, &mut rng, &routes);

    // Remove a fifth of the routes and check again, including their edges.
    let removed: Vec<_> = routes
        .iter()
        .copied()
        .filter(|_| rng.below(5) == 0)
        .collect();
    for &(p, l, _) in &removed {
        assert!(t.remove(p, l).unwrap());
        reference.0[usize::from(l)].remove(&p);
    }
    assert_eq!(t.route_count(), 100_000 - removed.len());
    check(&t, &reference, &mut rng, &removed);
    println!(
        "after removing {}: memory_bytes = {}, plies = {}",
        removed.len(),
        t.memory_bytes(),
        t.ply_count()
    );
}
