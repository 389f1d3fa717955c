//! IPv4 forwarding information base: a 16-8-8 multibit trie ("mtrie") in the
//! style of FD.io VPP's `ip4_mtrie_16`.
//!
//! The data plane is a 65 536-slot root ply indexed by the top 16 bits of the
//! destination, plus 256-slot plies for the third and fourth bytes that exist
//! only below root slots that need them. Every slot is one `u32` that is
//! either a leaf (odd: `value << 1 | 1`) or a reference to a child ply (even:
//! `index << 1`), so a lookup is at most three dependent loads and never loops.
//!
//! Each slot also records the length of the route that wrote it. That is what
//! lets a less-specific insert leave more-specific slots alone, and lets a
//! delete put back exactly the covering route, without rebuilding anything.
//! The configured routes themselves are kept separately (the control-plane
//! record) because the trie alone cannot answer "what covers this prefix?".

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

/// Largest leaf value a route may carry.
///
/// One bit of each 32-bit slot is the leaf/ply tag, and the all-ones pattern is
/// reserved for "no route here" so that the default leaf itself can be any
/// `u32` (e.g. a `u32::MAX` drop sentinel chosen by the caller).
pub const MAX_LEAF: u32 = (u32::MAX >> 1) - 1;

const ROOT_BITS: u8 = 16;
const ROOT_SLOTS: usize = 1 << ROOT_BITS;
const PLY_SLOTS: usize = 1 << 8;
const MAX_PREFIX_LEN: u8 = 32;

/// Slot pattern meaning "no configured route covers this slot".
const EMPTY: u32 = u32::MAX;

#[inline(always)]
fn is_ply(slot: u32) -> bool {
    slot & 1 == 0
}

#[inline(always)]
fn ply_ref(index: u32) -> u32 {
    index << 1
}

#[inline(always)]
fn ply_index(slot: u32) -> usize {
    (slot >> 1) as usize
}

#[inline(always)]
fn leaf_slot(value: u32) -> u32 {
    (value << 1) | 1
}

/// Network mask for `len` (must be ≤ 32; `checked_shl` covers `len == 0`).
#[inline]
fn mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(u32::from(MAX_PREFIX_LEN - len))
        .unwrap_or(0)
}

/// Errors from route updates.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum FibError {
    #[error("prefix length {0} is greater than 32")]
    BadPrefixLen(u8),
    /// The slot encoding leaves 31 bits for the value; see [`MAX_LEAF`].
    #[error("leaf value {0} is greater than the maximum {MAX_LEAF}")]
    LeafTooLarge(u32),
}

fn check_len(len: u8) -> Result<(), FibError> {
    if len > MAX_PREFIX_LEN {
        Err(FibError::BadPrefixLen(len))
    } else {
        Ok(())
    }
}

/// Which ply a slot index refers to.
#[derive(Clone, Copy, Debug)]
enum Ply {
    Root,
    /// An 8-bit ply in the pool. A `Node` that has children is always a
    /// second-level ply, because third-level plies are the last.
    Node(usize),
}

impl Ply {
    /// Prefix length that one slot of this ply spans. Only meaningful for plies
    /// that can have children (root and second level), which is the only place
    /// it is asked: a leaf in such a slot must not be more specific than this.
    fn slot_span_len(self) -> u8 {
        match self {
            Ply::Root => ROOT_BITS,
            Ply::Node(_) => ROOT_BITS + 8,
        }
    }
}

/// IPv4 longest-prefix-match table (one VRF).
#[derive(Clone)]
pub struct Ip4Mtrie {
    root: Box<[u32; ROOT_SLOTS]>,
    root_lens: Box<[u8; ROOT_SLOTS]>,
    // Slots and lengths are kept apart so the lookup touches only the dense
    // slot arrays; lengths are control-plane data.
    plies: Vec<[u32; PLY_SLOTS]>,
    ply_lens: Vec<[u8; PLY_SLOTS]>,
    free_plies: Vec<u32>,
    /// Configured routes, indexed by prefix length, keyed by masked prefix.
    routes: Box<[HashMap<u32, u32>; 33]>,
    route_count: usize,
    default_leaf: u32,
}

fn boxed_array<T: Copy, const N: usize>(fill: T) -> Box<[T; N]> {
    // Built through a Vec so the 256 KiB root never lives on the stack.
    match vec![fill; N].into_boxed_slice().try_into() {
        Ok(array) => array,
        Err(_) => unreachable!("vec![_; N] has length N"),
    }
}

impl Ip4Mtrie {
    /// `default_leaf` is what lookup returns where no route covers the address
    /// (the 0.0.0.0/0 "no route" value).
    pub fn new(default_leaf: u32) -> Self {
        Self {
            root: boxed_array(EMPTY),
            root_lens: boxed_array(0),
            plies: Vec::new(),
            ply_lens: Vec::new(),
            free_plies: Vec::new(),
            routes: Box::new(std::array::from_fn(|_| HashMap::new())),
            route_count: 0,
            default_leaf,
        }
    }

    /// The value returned for addresses no route covers.
    pub fn default_leaf(&self) -> u32 {
        self.default_leaf
    }

    /// Add or replace the route `prefix/len` → `leaf`. `prefix` is a
    /// host-order u32; bits beyond `len` are ignored (masked).
    pub fn insert(&mut self, prefix: u32, len: u8, leaf: u32) -> Result<(), FibError> {
        check_len(len)?;
        if leaf > MAX_LEAF {
            return Err(FibError::LeafTooLarge(leaf));
        }
        let prefix = prefix & mask(len);
        if self.routes[usize::from(len)].insert(prefix, leaf).is_none() {
            self.route_count += 1;
        }
        if let Some((ply, range)) = self.target(prefix, len, true) {
            self.set_range(ply, range, leaf_slot(leaf), len);
        }
        Ok(())
    }

    /// Remove `prefix/len`; addresses it covered fall back to the longest
    /// remaining covering route (or the default leaf). Removing a route that
    /// does not exist is `Ok(false)`; `Ok(true)` when removed.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Result<bool, FibError> {
        check_len(len)?;
        let prefix = prefix & mask(len);
        if self.routes[usize::from(len)].remove(&prefix).is_none() {
            return Ok(false);
        }
        self.route_count -= 1;
        let (cover, cover_len) = self.cover(prefix, len);
        if let Some((ply, range)) = self.target(prefix, len, false) {
            self.unset_range(ply, range, len, cover, cover_len);
            self.collapse_path(prefix, len);
        }
        Ok(true)
    }

    /// Longest-prefix match.
    #[inline]
    pub fn lookup(&self, addr: u32) -> u32 {
        let s = self.root[(addr >> 16) as usize];
        let s = self.step(s, addr >> 8);
        let s = self.step(s, addr);
        self.decode(s)
    }

    /// Look up 4 addresses at once. The four walks are independent, so issuing
    /// each level's loads together lets their cache misses overlap.
    #[inline]
    pub fn lookup_x4(&self, addrs: [u32; 4]) -> [u32; 4] {
        let [a0, a1, a2, a3] = addrs;
        let s0 = self.root[(a0 >> 16) as usize];
        let s1 = self.root[(a1 >> 16) as usize];
        let s2 = self.root[(a2 >> 16) as usize];
        let s3 = self.root[(a3 >> 16) as usize];

        let s0 = self.step(s0, a0 >> 8);
        let s1 = self.step(s1, a1 >> 8);
        let s2 = self.step(s2, a2 >> 8);
        let s3 = self.step(s3, a3 >> 8);

        let s0 = self.step(s0, a0);
        let s1 = self.step(s1, a1);
        let s2 = self.step(s2, a2);
        let s3 = self.step(s3, a3);

        [
            self.decode(s0),
            self.decode(s1),
            self.decode(s2),
            self.decode(s3),
        ]
    }

    /// Follow `slot` one level down using the low byte of `byte`, or keep it if
    /// it is already a leaf.
    #[inline(always)]
    fn step(&self, slot: u32, byte: u32) -> u32 {
        if is_ply(slot) {
            self.plies[ply_index(slot)][(byte & 0xff) as usize]
        } else {
            slot
        }
    }

    #[inline(always)]
    fn decode(&self, leaf: u32) -> u32 {
        if leaf == EMPTY {
            self.default_leaf
        } else {
            leaf >> 1
        }
    }

    /// Number of configured routes.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Exact-match get of a configured route.
    pub fn get(&self, prefix: u32, len: u8) -> Option<u32> {
        check_len(len).ok()?;
        self.routes[usize::from(len)]
            .get(&(prefix & mask(len)))
            .copied()
    }

    /// All configured routes as `(prefix, len, leaf)`, sorted by (prefix, len).
    pub fn routes(&self) -> Vec<(u32, u8, u32)> {
        let mut out = Vec::with_capacity(self.route_count);
        for (len, by_prefix) in (0u8..).zip(self.routes.iter()) {
            out.extend(by_prefix.iter().map(|(&p, &leaf)| (p, len, leaf)));
        }
        out.sort_unstable();
        out
    }

    /// Number of 8-bit plies currently in use (excluding the free list).
    pub fn ply_count(&self) -> usize {
        self.plies.len() - self.free_plies.len()
    }

    /// Heap plus inline size: trie arrays (including allocated-but-free plies
    /// and spare vector capacity) and an estimate of the route record.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let trie = ROOT_SLOTS * (size_of::<u32>() + size_of::<u8>())
            + self.plies.capacity() * size_of::<[u32; PLY_SLOTS]>()
            + self.ply_lens.capacity() * size_of::<[u8; PLY_SLOTS]>()
            + self.free_plies.capacity() * size_of::<u32>();
        // std's SwissTable: one (key, value) bucket plus one control byte per
        // slot of capacity; exact internals are not exposed.
        let record: usize = self
            .routes
            .iter()
            .map(|m| m.capacity() * (size_of::<(u32, u32)>() + 1))
            .sum::<usize>()
            + size_of::<[HashMap<u32, u32>; 33]>();
        size_of::<Self>() + trie + record
    }

    // ---- control-plane internals -------------------------------------------

    /// Longest configured route strictly shorter than `len` that contains
    /// `prefix`, as (slot, length); `(EMPTY, 0)` when only the default covers.
    fn cover(&self, prefix: u32, len: u8) -> (u32, u8) {
        for l in (0..len).rev() {
            if let Some(&leaf) = self.routes[usize::from(l)].get(&(prefix & mask(l))) {
                return (leaf_slot(leaf), l);
            }
        }
        (EMPTY, 0)
    }

    /// The ply and slot range a route of `len` occupies. With `create`, plies
    /// missing on the way are allocated; without, `None` means the path does
    /// not exist (so there is nothing of this route in the trie).
    fn target(&mut self, prefix: u32, len: u8, create: bool) -> Option<(Ply, Range<usize>)> {
        let span = |bits_left: u8| 1usize << bits_left;
        let i1 = (prefix >> 16) as usize;
        if len <= ROOT_BITS {
            return Some((Ply::Root, i1..i1 + span(ROOT_BITS - len)));
        }
        let p2 = self.child(Ply::Root, i1, create)?;
        let i2 = ((prefix >> 8) & 0xff) as usize;
        if len <= 24 {
            return Some((Ply::Node(p2), i2..i2 + span(24 - len)));
        }
        let p3 = self.child(Ply::Node(p2), i2, create)?;
        let i3 = (prefix & 0xff) as usize;
        Some((Ply::Node(p3), i3..i3 + span(32 - len)))
    }

    /// Child ply under `ply[i]`, splitting a leaf into a fresh ply (filled with
    /// that leaf and its length, so lookups are unchanged) when `create`.
    fn child(&mut self, ply: Ply, i: usize, create: bool) -> Option<usize> {
        let (slot, len) = self.slot(ply, i);
        if is_ply(slot) {
            return Some(ply_index(slot));
        }
        if !create {
            return None;
        }
        let child = self.alloc_ply(slot, len);
        self.set_slot(ply, i, ply_ref(child), 0);
        Some(child as usize)
    }

    /// Write a route of `len` into `range` of `ply`: every leaf no more specific
    /// than `len` takes it (equal length is a replace), and child plies are
    /// descended so their less-specific leaves take it too.
    fn set_range(&mut self, ply: Ply, range: Range<usize>, leaf: u32, len: u8) {
        for i in range {
            let (slot, slot_len) = self.slot(ply, i);
            if is_ply(slot) {
                self.set_range(Ply::Node(ply_index(slot)), 0..PLY_SLOTS, leaf, len);
                self.try_collapse(ply, i);
            } else if slot_len <= len {
                self.set_slot(ply, i, leaf, len);
            }
        }
    }

    /// Undo a route of `len` over `range` of `ply`: exactly the leaves it wrote
    /// (those of length `len`; no other route of that length can overlap it)
    /// revert to the cover.
    fn unset_range(&mut self, ply: Ply, range: Range<usize>, len: u8, cover: u32, cover_len: u8) {
        for i in range {
            let (slot, slot_len) = self.slot(ply, i);
            if is_ply(slot) {
                let child = Ply::Node(ply_index(slot));
                self.unset_range(child, 0..PLY_SLOTS, len, cover, cover_len);
                self.try_collapse(ply, i);
            } else if slot_len == len {
                self.set_slot(ply, i, cover, cover_len);
            }
        }
    }

    /// After a remove below the root, the plies on the route's path may have
    /// become uniform; fold them bottom-up.
    fn collapse_path(&mut self, prefix: u32, len: u8) {
        let i1 = (prefix >> 16) as usize;
        if len > 24 {
            let s = self.root[i1];
            if is_ply(s) {
                self.try_collapse(Ply::Node(ply_index(s)), ((prefix >> 8) & 0xff) as usize);
            }
        }
        if len > ROOT_BITS {
            self.try_collapse(Ply::Root, i1);
        }
    }

    /// Replace the child ply under `ply[i]` by a single leaf if all its slots
    /// hold the same leaf with the same length, and that length fits the
    /// parent slot. The length limit keeps the invariant that a leaf never
    /// stands for routes more specific than its slot, so every route longer
    /// than a slot's span is always found below a ply.
    fn try_collapse(&mut self, ply: Ply, i: usize) {
        let (slot, _) = self.slot(ply, i);
        if !is_ply(slot) {
            return;
        }
        let child = ply_index(slot);
        let leaves = &self.plies[child];
        let lens = &self.ply_lens[child];
        let (first, first_len) = (leaves[0], lens[0]);
        if is_ply(first) || first_len > ply.slot_span_len() {
            return;
        }
        if leaves.iter().all(|&s| s == first) && lens.iter().all(|&l| l == first_len) {
            self.set_slot(ply, i, first, first_len);
            // Index came from a slot, which was built from a u32.
            self.free_plies.push(child as u32);
        }
    }

    fn alloc_ply(&mut self, leaf: u32, len: u8) -> u32 {
        if let Some(p) = self.free_plies.pop() {
            self.plies[p as usize] = [leaf; PLY_SLOTS];
            self.ply_lens[p as usize] = [len; PLY_SLOTS];
            return p;
        }
        if self.plies.len() == self.plies.capacity() {
            // Plies are 1.25 KiB each and tables can hold tens of thousands, so
            // grow by a quarter instead of doubling: at most 25% slack, still
            // amortised O(1).
            let more = (self.plies.len() / 4).max(16);
            self.plies.reserve_exact(more);
            self.ply_lens.reserve_exact(more);
        }
        self.plies.push([leaf; PLY_SLOTS]);
        self.ply_lens.push([len; PLY_SLOTS]);
        // At most 2^16 second-level + 2^24 third-level plies ever exist, so the
        // index always fits in 31 bits.
        (self.plies.len() - 1) as u32
    }

    fn slot(&self, ply: Ply, i: usize) -> (u32, u8) {
        match ply {
            Ply::Root => (self.root[i], self.root_lens[i]),
            Ply::Node(p) => (self.plies[p][i], self.ply_lens[p][i]),
        }
    }

    fn set_slot(&mut self, ply: Ply, i: usize, slot: u32, len: u8) {
        match ply {
            Ply::Root => {
                self.root[i] = slot;
                self.root_lens[i] = len;
            }
            Ply::Node(p) => {
                self.plies[p][i] = slot;
                self.ply_lens[p][i] = len;
            }
        }
    }
}

impl fmt::Debug for Ip4Mtrie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ip4Mtrie")
            .field("routes", &self.route_count)
            .field("plies", &self.ply_count())
            .field("free_plies", &self.free_plies.len())
            .field("default_leaf", &self.default_leaf)
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// Table ids below this are held in a directly indexed vector (the common,
/// small VRF ids); larger ids go to a map so a huge id cannot force a huge
/// allocation.
const DENSE_TABLE_IDS: u32 = 1024;

/// Several tables (VRFs) by id. Table 0 always exists.
#[derive(Clone, Debug)]
pub struct Ip4Fib {
    default_leaf: u32,
    dense: Vec<Option<Ip4Mtrie>>,
    sparse: BTreeMap<u32, Ip4Mtrie>,
}

impl Ip4Fib {
    /// `default_leaf` is the "no route" value of every table created here.
    pub fn new(default_leaf: u32) -> Self {
        Self {
            default_leaf,
            dense: vec![Some(Ip4Mtrie::new(default_leaf))],
            sparse: BTreeMap::new(),
        }
    }

    pub fn table(&self, id: u32) -> Option<&Ip4Mtrie> {
        if id < DENSE_TABLE_IDS {
            self.dense.get(id as usize)?.as_ref()
        } else {
            self.sparse.get(&id)
        }
    }

    pub fn table_mut(&mut self, id: u32) -> Option<&mut Ip4Mtrie> {
        if id < DENSE_TABLE_IDS {
            self.dense.get_mut(id as usize)?.as_mut()
        } else {
            self.sparse.get_mut(&id)
        }
    }

    pub fn table_mut_or_create(&mut self, id: u32) -> &mut Ip4Mtrie {
        let default_leaf = self.default_leaf;
        if id < DENSE_TABLE_IDS {
            let idx = id as usize;
            if self.dense.len() <= idx {
                self.dense.resize_with(idx + 1, || None);
            }
            self.dense[idx].get_or_insert_with(|| Ip4Mtrie::new(default_leaf))
        } else {
            self.sparse
                .entry(id)
                .or_insert_with(|| Ip4Mtrie::new(default_leaf))
        }
    }

    /// Ids of existing tables, ascending.
    pub fn table_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..)
            .zip(self.dense.iter())
            .filter_map(|(id, t)| t.as_ref().map(|_| id))
            .chain(self.sparse.keys().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Ip4Mtrie {
        /// Structural invariants that the public API cannot observe.
        fn check_invariants(&self) {
            let mut seen = vec![0u32; self.plies.len()];
            for (i1, (&s, &l)) in self.root.iter().zip(self.root_lens.iter()).enumerate() {
                if is_ply(s) {
                    let p2 = ply_index(s);
                    seen[p2] += 1;
                    for (i2, (&s2, &l2)) in self.plies[p2]
                        .iter()
                        .zip(self.ply_lens[p2].iter())
                        .enumerate()
                    {
                        if is_ply(s2) {
                            let p3 = ply_index(s2);
                            seen[p3] += 1;
                            for &s3 in &self.plies[p3] {
                                assert!(!is_ply(s3), "fourth level at {i1}.{i2}");
                            }
                            for &l3 in &self.ply_lens[p3] {
                                assert!(l3 <= 32);
                            }
                        } else {
                            assert!(l2 <= 24, "L2 leaf too specific at {i1}.{i2}: {l2}");
                        }
                    }
                } else {
                    assert!(l <= 16, "root leaf too specific at {i1}: {l}");
                }
            }
            for &f in &self.free_plies {
                seen[f as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n == 1), "ply referenced != once");
            let n: usize = self.routes.iter().map(HashMap::len).sum();
            assert_eq!(n, self.route_count);
        }
    }

    #[test]
    fn mask_bounds() {
        assert_eq!(mask(0), 0);
        assert_eq!(mask(1), 0x8000_0000);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
    }

    #[test]
    fn plies_collapse_back_after_removal() {
        let mut t = Ip4Mtrie::new(7);
        t.insert(0x0a00_0000, 8, 1).unwrap();
        t.insert(0x0a01_0200, 24, 2).unwrap();
        t.insert(0x0a01_0203, 32, 3).unwrap();
        assert_eq!(t.ply_count(), 2);
        t.check_invariants();
        assert!(t.remove(0x0a01_0203, 32).unwrap());
        assert_eq!(t.ply_count(), 1);
        assert!(t.remove(0x0a01_0200, 24).unwrap());
        assert_eq!(t.ply_count(), 0);
        assert_eq!(t.free_plies.len(), 2);
        t.check_invariants();
        // Freed plies are reused rather than growing the pool.
        t.insert(0x0b01_0203, 32, 4).unwrap();
        assert_eq!(t.plies.len(), 2);
        assert_eq!(t.lookup(0x0b01_0203), 4);
        t.check_invariants();
    }

    #[test]
    fn covering_insert_collapses_fully_shadowed_ply() {
        let mut t = Ip4Mtrie::new(0);
        t.insert(0x0a01_0200, 24, 2).unwrap();
        assert_eq!(t.ply_count(), 1);
        // A /16 does not shadow the /24, so the ply must stay.
        t.insert(0x0a01_0000, 16, 3).unwrap();
        assert_eq!(t.ply_count(), 1);
        t.remove(0x0a01_0200, 24).unwrap();
        assert_eq!(t.ply_count(), 0);
        assert_eq!(t.lookup(0x0a01_0203), 3);
        t.check_invariants();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8, u32),
        Remove(u32, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let addr = prop_oneof![
            any::<u32>(),
            (0u32..4, any::<u32>()).prop_map(|(hi, lo)| 0x0a00_0000 | (hi << 16) | (lo & 0x3ff)),
        ];
        prop_oneof![
            3 => (addr.clone(), 0u8..=32, 0u32..3).prop_map(|(a, l, v)| Op::Insert(a, l, v)),
            2 => (addr, 0u8..=32).prop_map(|(a, l)| Op::Remove(a, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn invariants_hold_and_everything_collapses(ops in prop::collection::vec(op(), 1..60)) {
            let mut t = Ip4Mtrie::new(99);
            for op in &ops {
                match *op {
                    Op::Insert(a, l, v) => t.insert(a, l, v).unwrap(),
                    Op::Remove(a, l) => { t.remove(a, l).unwrap(); }
                }
            }
            t.check_invariants();
            for (p, l, _) in t.routes() {
                prop_assert!(t.remove(p, l).unwrap());
            }
            t.check_invariants();
            prop_assert_eq!(t.ply_count(), 0);
            prop_assert!(t.root.iter().all(|&s| s == EMPTY));
            prop_assert!(t.root_lens.iter().all(|&l| l == 0));
        }
    }
}
