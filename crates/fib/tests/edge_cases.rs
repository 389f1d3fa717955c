//! Boundary and ordering cases for the mtrie.

use vecnet_fib::{FibError, Ip4Fib, Ip4Mtrie, MAX_LEAF};

const NONE: u32 = 0xdead;

fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

#[test]
fn empty_table_returns_default_everywhere() {
    let t = Ip4Mtrie::new(NONE);
    for a in [0, 1, ip(10, 0, 0, 1), u32::MAX] {
        assert_eq!(t.lookup(a), NONE);
    }
    assert_eq!(t.lookup_x4([0, 1, 2, u32::MAX]), [NONE; 4]);
    assert_eq!(t.route_count(), 0);
    assert!(t.routes().is_empty());
}

#[test]
fn default_leaf_may_be_any_u32() {
    let mut t = Ip4Mtrie::new(u32::MAX);
    assert_eq!(t.lookup(ip(1, 2, 3, 4)), u32::MAX);
    t.insert(ip(1, 2, 3, 0), 24, MAX_LEAF).unwrap();
    assert_eq!(t.lookup(ip(1, 2, 3, 4)), MAX_LEAF);
    assert_eq!(t.lookup(ip(1, 2, 4, 4)), u32::MAX);
}

#[test]
fn bad_prefix_len_and_leaf_are_errors() {
    let mut t = Ip4Mtrie::new(NONE);
    assert_eq!(t.insert(0, 33, 1), Err(FibError::BadPrefixLen(33)));
    assert_eq!(t.insert(0, 255, 1), Err(FibError::BadPrefixLen(255)));
    assert_eq!(t.remove(0, 33), Err(FibError::BadPrefixLen(33)));
    assert_eq!(
        t.insert(0, 8, MAX_LEAF + 1),
        Err(FibError::LeafTooLarge(MAX_LEAF + 1))
    );
    assert_eq!(
        t.insert(0, 8, u32::MAX),
        Err(FibError::LeafTooLarge(u32::MAX))
    );
    assert_eq!(t.get(0, 33), None);
    assert_eq!(t.route_count(), 0);
    assert_eq!(t.lookup(0), NONE);
    assert_eq!(
        FibError::BadPrefixLen(33).to_string(),
        "prefix length 33 is greater than 32"
    );
}

#[test]
fn default_route() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
    t.insert(ip(1, 2, 3, 4), 0, 5).unwrap(); // host bits ignored
    assert_eq!(t.get(0, 0), Some(5));
    assert_eq!(t.lookup(0), 5);
    assert_eq!(t.lookup(u32::MAX), 5);
    assert_eq!(t.lookup(ip(10, 9, 9, 9)), 1);
    t.insert(0, 0, 6).unwrap();
    assert_eq!(t.lookup(ip(99, 0, 0, 0)), 6);
    assert_eq!(t.lookup(ip(10, 9, 9, 9)), 1);
    assert!(t.remove(0, 0).unwrap());
    assert_eq!(t.lookup(ip(99, 0, 0, 0)), NONE);
    assert_eq!(t.lookup(ip(10, 9, 9, 9)), 1);
}

#[test]
fn host_routes_at_address_space_ends() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(0, 32, 1).unwrap();
    t.insert(u32::MAX, 32, 2).unwrap();
    assert_eq!(t.lookup(0), 1);
    assert_eq!(t.lookup(1), NONE);
    assert_eq!(t.lookup(u32::MAX), 2);
    assert_eq!(t.lookup(u32::MAX - 1), NONE);
    t.insert(0, 1, 3).unwrap();
    t.insert(0x8000_0000, 1, 4).unwrap();
    assert_eq!(t.lookup_x4([0, 1, u32::MAX - 1, u32::MAX]), [1, 3, 4, 2]);
    assert_eq!(t.lookup(0x7fff_ffff), 3);
    assert_eq!(t.lookup(0x8000_0000), 4);
}

#[test]
fn level_boundaries() {
    let mut t = Ip4Mtrie::new(NONE);
    // /16 is a single root slot; /17 the first level below.
    t.insert(ip(10, 1, 0, 0), 16, 16).unwrap();
    t.insert(ip(10, 1, 128, 0), 17, 17).unwrap();
    // /24 is a single second-level slot; /25 the first third-level split.
    t.insert(ip(10, 1, 200, 0), 24, 24).unwrap();
    t.insert(ip(10, 1, 200, 128), 25, 25).unwrap();
    t.insert(ip(10, 1, 200, 255), 32, 32).unwrap();
    t.insert(ip(10, 1, 200, 254), 31, 31).unwrap();

    let cases = [
        (ip(10, 0, 255, 255), NONE),
        (ip(10, 1, 0, 0), 16),
        (ip(10, 1, 127, 255), 16),
        (ip(10, 1, 128, 0), 17),
        (ip(10, 1, 199, 255), 17),
        (ip(10, 1, 200, 0), 24),
        (ip(10, 1, 200, 127), 24),
        (ip(10, 1, 200, 128), 25),
        (ip(10, 1, 200, 253), 25),
        (ip(10, 1, 200, 254), 31),
        (ip(10, 1, 200, 255), 32),
        (ip(10, 1, 201, 0), 17),
        (ip(10, 1, 255, 255), 17),
        (ip(10, 2, 0, 0), NONE),
    ];
    for (a, want) in cases {
        assert_eq!(t.lookup(a), want, "{a:#x}");
    }
}

#[test]
fn less_specific_insert_keeps_more_specific() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(ip(10, 1, 2, 3), 32, 32).unwrap();
    t.insert(ip(10, 1, 2, 0), 24, 24).unwrap();
    t.insert(ip(10, 1, 0, 0), 16, 16).unwrap();
    t.insert(ip(10, 0, 0, 0), 8, 8).unwrap();
    t.insert(0, 0, 0).unwrap();
    assert_eq!(t.lookup(ip(10, 1, 2, 3)), 32);
    assert_eq!(t.lookup(ip(10, 1, 2, 4)), 24);
    assert_eq!(t.lookup(ip(10, 1, 3, 3)), 16);
    assert_eq!(t.lookup(ip(10, 2, 2, 3)), 8);
    assert_eq!(t.lookup(ip(11, 1, 2, 3)), 0);
}

#[test]
fn replace_same_prefix() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(ip(10, 1, 2, 0), 24, 1).unwrap();
    t.insert(ip(10, 1, 2, 7), 32, 9).unwrap();
    t.insert(ip(10, 1, 2, 99), 24, 2).unwrap(); // same prefix after masking
    assert_eq!(t.route_count(), 2);
    assert_eq!(t.get(ip(10, 1, 2, 0), 24), Some(2));
    assert_eq!(t.lookup(ip(10, 1, 2, 0)), 2);
    assert_eq!(t.lookup(ip(10, 1, 2, 7)), 9);
    // Replace of a short prefix must also reach inside existing plies.
    t.insert(ip(10, 0, 0, 0), 8, 3).unwrap();
    t.insert(ip(10, 0, 0, 0), 8, 4).unwrap();
    assert_eq!(t.lookup(ip(10, 1, 3, 0)), 4);
    assert_eq!(t.lookup(ip(10, 1, 2, 0)), 2);
    assert!(t.remove(ip(10, 1, 2, 0), 24).unwrap());
    assert_eq!(t.lookup(ip(10, 1, 2, 0)), 4);
    assert_eq!(
        t.routes(),
        vec![(ip(10, 0, 0, 0), 8, 4), (ip(10, 1, 2, 7), 32, 9)]
    );
}

#[test]
fn remove_nonexistent() {
    let mut t = Ip4Mtrie::new(NONE);
    assert_eq!(t.remove(ip(10, 0, 0, 0), 8), Ok(false));
    t.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
    assert_eq!(t.remove(ip(10, 0, 0, 0), 9), Ok(false));
    assert_eq!(t.remove(ip(10, 0, 0, 0), 7), Ok(false));
    assert_eq!(t.remove(ip(10, 0, 0, 0), 32), Ok(false));
    assert_eq!(t.remove(ip(10, 1, 2, 3), 24), Ok(false));
    assert_eq!(t.lookup(ip(10, 1, 2, 3)), 1);
    assert_eq!(t.route_count(), 1);
    assert_eq!(t.remove(ip(10, 255, 0, 0), 8), Ok(true)); // host bits ignored
    assert_eq!(t.remove(ip(10, 0, 0, 0), 8), Ok(false));
    assert_eq!(t.route_count(), 0);
}

#[test]
fn remove_then_readd() {
    let mut t = Ip4Mtrie::new(NONE);
    for round in 0..3 {
        t.insert(ip(10, 1, 2, 3), 32, round).unwrap();
        t.insert(ip(10, 1, 2, 0), 24, 100 + round).unwrap();
        assert_eq!(t.lookup(ip(10, 1, 2, 3)), round);
        assert_eq!(t.lookup(ip(10, 1, 2, 4)), 100 + round);
        assert!(t.remove(ip(10, 1, 2, 3), 32).unwrap());
        assert_eq!(t.lookup(ip(10, 1, 2, 3)), 100 + round);
        assert!(t.remove(ip(10, 1, 2, 0), 24).unwrap());
        assert_eq!(t.lookup(ip(10, 1, 2, 3)), NONE);
        assert_eq!(t.ply_count(), 0);
    }
}

/// Heap's algorithm: every permutation of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn go<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut a = items.to_vec();
    let mut out = Vec::new();
    go(a.len(), &mut a, &mut out);
    out
}

fn naive(routes: &[(u32, u8, u32)], addr: u32) -> u32 {
    let m = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    routes
        .iter()
        .filter(|&&(p, l, _)| addr & m(l) == p)
        .max_by_key(|r| r.1)
        .map_or(NONE, |r| r.2)
}

#[test]
fn nested_routes_removed_in_every_order() {
    // One route on each side of each level boundary, all nested. (Six routes
    // keep the 2 x 720 orders fast in debug builds.)
    let nested = [
        (0, 0, 1),
        (ip(10, 1, 0, 0), 16, 3),
        (ip(10, 1, 128, 0), 17, 4),
        (ip(10, 1, 130, 0), 24, 5),
        (ip(10, 1, 130, 128), 25, 6),
        (ip(10, 1, 130, 131), 32, 7),
    ];
    let probes: Vec<u32> = nested
        .iter()
        .flat_map(|&(p, l, _)| {
            let last = p | !(if l == 0 { 0 } else { u32::MAX << (32 - l) });
            [p, last, p.wrapping_sub(1), last.wrapping_add(1)]
        })
        .collect();
    let insert_orders = [nested.to_vec(), nested.iter().rev().copied().collect()];
    for order in insert_orders {
        for removal in permutations(&nested) {
            let mut t = Ip4Mtrie::new(NONE);
            for &(p, l, v) in &order {
                t.insert(p, l, v).unwrap();
            }
            let mut live = nested.to_vec();
            for &(p, l, _) in &removal {
                assert!(t.remove(p, l).unwrap());
                live.retain(|r| (r.0, r.1) != (p, l));
                for &a in &probes {
                    assert_eq!(
                        t.lookup(a),
                        naive(&live, a),
                        "removal {removal:?} addr {a:#x}"
                    );
                }
            }
            assert_eq!(t.ply_count(), 0);
        }
    }
}

#[test]
fn sibling_routes_with_equal_leaves() {
    // Siblings with the same value fill a ply with one leaf; removing one of
    // them must still only uncover its own half.
    for (a, b, len) in [
        (ip(10, 1, 0, 0), ip(10, 1, 128, 0), 17),
        (ip(10, 1, 2, 0), ip(10, 1, 2, 128), 25),
        (ip(10, 1, 2, 0), ip(10, 1, 2, 1), 32),
    ] {
        let mut t = Ip4Mtrie::new(NONE);
        t.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
        t.insert(a, len, 7).unwrap();
        t.insert(b, len, 7).unwrap();
        assert_eq!(t.lookup(a), 7);
        assert_eq!(t.lookup(b), 7);
        assert!(t.remove(a, len).unwrap());
        assert_eq!(t.lookup(a), 1, "/{len}");
        assert_eq!(t.lookup(b), 7, "/{len}");
        assert!(t.remove(b, len).unwrap());
        assert_eq!(t.lookup(b), 1);
        assert_eq!(t.ply_count(), 0);
    }
    // Whole /16 covered by 256 /24s with one leaf.
    let mut t = Ip4Mtrie::new(NONE);
    for c in 0..=255 {
        t.insert(ip(10, 1, c, 0), 24, 7).unwrap();
    }
    assert!(t.remove(ip(10, 1, 9, 0), 24).unwrap());
    assert_eq!(t.lookup(ip(10, 1, 9, 1)), NONE);
    assert_eq!(t.lookup(ip(10, 1, 10, 1)), 7);
}

#[test]
fn clone_is_an_independent_snapshot() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(ip(10, 1, 2, 3), 32, 1).unwrap();
    let snap = t.clone();
    t.remove(ip(10, 1, 2, 3), 32).unwrap();
    t.insert(ip(10, 1, 2, 0), 24, 2).unwrap();
    assert_eq!(snap.lookup(ip(10, 1, 2, 3)), 1);
    assert_eq!(snap.lookup(ip(10, 1, 2, 4)), NONE);
    assert_eq!(t.lookup(ip(10, 1, 2, 3)), 2);
    let dbg = format!("{snap:?}");
    assert!(dbg.contains("routes: 1"), "{dbg}");
}

#[test]
fn routes_sorted_by_prefix_then_len() {
    let mut t = Ip4Mtrie::new(NONE);
    t.insert(ip(10, 1, 0, 0), 16, 3).unwrap();
    t.insert(ip(10, 0, 0, 0), 8, 2).unwrap();
    t.insert(ip(10, 0, 0, 0), 16, 4).unwrap();
    t.insert(0, 0, 1).unwrap();
    assert_eq!(
        t.routes(),
        vec![
            (0, 0, 1),
            (ip(10, 0, 0, 0), 8, 2),
            (ip(10, 0, 0, 0), 16, 4),
            (ip(10, 1, 0, 0), 16, 3)
        ]
    );
}

#[test]
fn fib_tables() {
    let mut fib = Ip4Fib::new(NONE);
    assert_eq!(fib.table_ids().collect::<Vec<_>>(), vec![0]);
    assert!(fib.table(1).is_none());
    fib.table_mut_or_create(7)
        .insert(ip(10, 0, 0, 0), 8, 70)
        .unwrap();
    fib.table_mut_or_create(u32::MAX)
        .insert(ip(10, 0, 0, 0), 8, 99)
        .unwrap();
    fib.table_mut_or_create(0)
        .insert(ip(10, 0, 0, 0), 8, 1)
        .unwrap();
    assert_eq!(fib.table_ids().collect::<Vec<_>>(), vec![0, 7, u32::MAX]);
    assert_eq!(fib.table(0).unwrap().lookup(ip(10, 1, 1, 1)), 1);
    assert_eq!(fib.table(7).unwrap().lookup(ip(10, 1, 1, 1)), 70);
    assert_eq!(fib.table(u32::MAX).unwrap().lookup(ip(10, 1, 1, 1)), 99);
    assert_eq!(fib.table(7).unwrap().lookup(ip(11, 1, 1, 1)), NONE);
    assert!(fib.table(3).is_none());
    // Creating an existing table returns it unchanged.
    assert_eq!(fib.table_mut_or_create(7).route_count(), 1);
    assert!(fib
        .table_mut(7)
        .unwrap()
        .remove(ip(10, 0, 0, 0), 8)
        .unwrap());
    assert_eq!(fib.table(7).unwrap().route_count(), 0);
}
