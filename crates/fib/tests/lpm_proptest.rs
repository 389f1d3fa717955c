//! Longest-prefix match checked against a naive reference under random
//! interleaved inserts and removes.

use proptest::prelude::*;
use std::collections::BTreeMap;
use vecnet_fib::Ip4Mtrie;

const DEFAULT: u32 = 0x7777;

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// The obviously-correct model: scan every route for the longest match.
#[derive(Default)]
struct Naive {
    routes: BTreeMap<(u32, u8), u32>,
}

impl Naive {
    fn lookup(&self, addr: u32) -> u32 {
        self.routes
            .iter()
            .filter(|(&(p, l), _)| addr & mask(l) == p)
            .max_by_key(|(&(_, l), _)| l)
            .map_or(DEFAULT, |(_, &v)| v)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u8, u32),
    Remove(u32, u8),
    /// Remove the n-th existing route (mod count), so removes mostly hit.
    RemoveExisting(usize),
}

/// Addresses that pile into a handful of /16s and /24s, so plies are shared
/// and routes overlap at every level; plus fully random and the extremes.
fn addr() -> impl Strategy<Value = u32> {
    let hi16 = prop::sample::select(vec![0x0a00u32, 0x0a01, 0xc0a8, 0x0000, 0xffff]);
    let clustered = (hi16, 0u32..4, any::<u8>())
        .prop_map(|(hi, b3, b4)| (hi << 16) | (b3 << 8) | u32::from(b4));
    prop_oneof![
        4 => clustered,
        2 => any::<u32>(),
        1 => prop::sample::select(vec![0u32, 1, u32::MAX, u32::MAX - 1, 0x8000_0000, 0x7fff_ffff]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (addr(), 0u8..=32, 0u32..8).prop_map(|(a, l, v)| Op::Insert(a, l, v)),
        1 => (addr(), 0u8..=32).prop_map(|(a, l)| Op::Remove(a, l)),
        3 => any::<usize>().prop_map(Op::RemoveExisting),
    ]
}

/// First and last address of the prefix and their outside neighbours.
fn edges(p: u32, l: u8) -> [u32; 4] {
    let last = p | !mask(l);
    [p, last, p.wrapping_sub(1), last.wrapping_add(1)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_naive_reference(
        ops in prop::collection::vec(op(), 1..150),
        probes in prop::collection::vec(addr(), 200),
    ) {
        let mut t = Ip4Mtrie::new(DEFAULT);
        let mut n = Naive::default();
        let mut touched = Vec::new();

        for op in &ops {
            let (p, l) = match *op {
                Op::Insert(a, l, v) => {
                    t.insert(a, l, v).unwrap();
                    n.routes.insert((a & mask(l), l), v);
                    (a, l)
                }
                Op::Remove(a, l) => {
                    let had = n.routes.remove(&(a & mask(l), l)).is_some();
                    prop_assert_eq!(t.remove(a, l).unwrap(), had);
                    (a, l)
                }
                Op::RemoveExisting(k) => {
                    if n.routes.is_empty() {
                        continue;
                    }
                    let key = *n.routes.keys().nth(k % n.routes.len()).unwrap();
                    n.routes.remove(&key);
                    prop_assert!(t.remove(key.0, key.1).unwrap());
                    key
                }
            };
            touched.push((p & mask(l), l));
            // Cheap check of the region just changed, every step.
            for a in edges(p & mask(l), l) {
                prop_assert_eq!(t.lookup(a), n.lookup(a), "after {:?}, addr {:#x}", op, a);
            }
        }

        prop_assert_eq!(t.route_count(), n.routes.len());
        let expect: Vec<_> = n.routes.iter().map(|(&(p, l), &v)| (p, l, v)).collect();
        prop_assert_eq!(t.routes(), expect);
        for (&(p, l), &v) in &n.routes {
            prop_assert_eq!(t.get(p, l), Some(v));
            // Host bits are ignored by get as well.
            prop_assert_eq!(t.get(p | !mask(l), l), Some(v));
        }

        let mut addrs = probes.clone();
        for &(p, l) in &touched {
            addrs.extend(edges(p, l));
        }
        for &a in &addrs {
            prop_assert_eq!(t.lookup(a), n.lookup(a), "addr {:#x}", a);
        }
        for c in addrs.chunks_exact(4) {
            let q = [c[0], c[1], c[2], c[3]];
            prop_assert_eq!(t.lookup_x4(q), q.map(|a| n.lookup(a)));
        }

        // A snapshot is independent of later changes.
        let snap = t.clone();
        for (p, l, _) in t.routes() {
            prop_assert!(t.remove(p, l).unwrap());
        }
        prop_assert_eq!(t.route_count(), 0);
        prop_assert_eq!(t.ply_count(), 0);
        for &a in &addrs {
            prop_assert_eq!(t.lookup(a), DEFAULT);
            prop_assert_eq!(snap.lookup(a), n.lookup(a));
        }
    }
}
