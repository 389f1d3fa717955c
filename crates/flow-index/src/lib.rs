//! A cache-friendly hash index from 64-bit key hashes to `u32` values, shared by the session
//! tables of the data plane (NAT44: both keys of every session; ACL: the one key of every
//! reflective session). It lives in its own crate so that the feature crates can share it
//! without depending on each other.
//!
//! * Buckets are one 64-byte cache line each: seven `(tag, value)` slots and an overflow counter.
//!   Tags are the high 32 bits of the hash (never 0: 0 marks a free slot); the bucket is chosen by
//!   the low bits. A lookup usually reads one cache line, which [`FlowIndex::prefetch`] can fetch
//!   ahead of time.
//! * A full bucket sends inserts on to the next bucket (linear probing between buckets) and counts
//!   them in its overflow counter, so a lookup stops at the first bucket that has no match and an
//!   overflow counter of 0. Deleting an entry decrements the counters it incremented: no
//!   tombstones, no degradation after churn, no rehash ever.
//! * The table is sized once, for the largest number of entries it will hold, at about 60 % load
//!   at most (16 bytes per entry of capacity: 32 MiB for 2 M entries, the two keys of 1 M NAT
//!   sessions), and its pages are faulted in at creation (huge pages asked for on Linux): no
//!   allocation, rehash or page fault on the packet path.
//!
//! The index stores no keys: callers verify a candidate value against the key they keep (a
//! session holds its keys), so a tag collision costs one extra comparison.

/// Slots per bucket.
pub const SLOTS: usize = 7;
/// `u32` words per bucket: 7 tags, the overflow counter, 7 values, 1 spare.
const WORDS: usize = 16;
const OVERFLOW: usize = SLOTS;
const VALUES: usize = 8;

/// The index is full: no free slot on any bucket (cannot happen below the sized capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull;

pub struct FlowIndex {
    /// Zeroed words; bucket `b` is `mem[base + 16 b .. base + 16 b + 16]`, 64-byte aligned.
    mem: Vec<u32>,
    base: usize,
    /// Buckets − 1 (a power of two minus one).
    mask: usize,
    len: usize,
}

impl std::fmt::Debug for FlowIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowIndex")
            .field("buckets", &self.buckets())
            .field("len", &self.len)
            .finish()
    }
}

#[inline]
fn tag_of(h: u64) -> u32 {
    ((h >> 32) as u32).max(1)
}

impl FlowIndex {
    /// An index for up to `capacity` entries (at most ~60 % of the slots are ever used).
    pub fn with_capacity(capacity: usize) -> Self {
        let want = (capacity.max(1) * 10).div_ceil(SLOTS * 6);
        Self::with_buckets(want.next_power_of_two())
    }

    /// An index of exactly `buckets` buckets (rounded up to a power of two).
    pub fn with_buckets(buckets: usize) -> Self {
        let buckets = buckets.max(1).next_power_of_two();
        // `vec![0; n]` comes from `calloc`: large tables are fresh, lazily zeroed pages. One
        // spare bucket leaves room to align the first bucket to a cache line.
        let mut mem = vec![0u32; (buckets + 1) * WORDS];
        let addr = mem.as_ptr() as usize;
        let base = (addr.next_multiple_of(64) - addr) / 4;
        advise_huge_pages(addr, mem.len() * 4);
        // Fault every page in now (huge pages where granted): inserts at random places must not
        // take page faults on the packet path.
        for w in mem.iter_mut().step_by(4096 / 4) {
            *std::hint::black_box(w) = 0;
        }
        Self {
            mem,
            base,
            mask: buckets - 1,
            len: 0,
        }
    }

    pub fn buckets(&self) -> usize {
        self.mask + 1
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    #[inline]
    fn bucket(&self, b: usize) -> &[u32; WORDS] {
        let s = self.base + b * WORDS;
        self.mem[s..s + WORDS].try_into().unwrap()
    }

    #[inline]
    fn bucket_mut(&mut self, b: usize) -> &mut [u32; WORDS] {
        let s = self.base + b * WORDS;
        (&mut self.mem[s..s + WORDS]).try_into().unwrap()
    }

    /// Bit `k` set when slot `k` of the bucket carries `tag`.
    #[inline]
    fn matches(bk: &[u32; WORDS], tag: u32) -> u32 {
        let mut m = 0u32;
        for (k, &t) in bk[..SLOTS].iter().enumerate() {
            m |= u32::from(t == tag) << k;
        }
        m
    }

    /// Starts fetching the home bucket of hash `h` into the cache.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        prefetch(self.bucket(self.home(h)).as_ptr());
    }

    /// The value of the first slot of `h`'s home bucket whose tag matches, if any: a candidate
    /// only (the caller verifies it, [`FlowIndex::find`] searches for real).
    #[inline]
    pub fn candidate(&self, h: u64) -> Option<u32> {
        let bk = self.bucket(self.home(h));
        let m = Self::matches(bk, tag_of(h));
        (m != 0).then(|| bk[VALUES + m.trailing_zeros() as usize])
    }

    /// The value of the entry of hash `h` that `is_key` accepts.
    #[inline]
    pub fn find(&self, h: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(h);
        let mut b = self.home(h);
        for _ in 0..=self.mask {
            let bk = self.bucket(b);
            let mut m = Self::matches(bk, tag);
            while m != 0 {
                let v = bk[VALUES + m.trailing_zeros() as usize];
                if is_key(v) {
                    return Some(v);
                }
                m &= m - 1;
            }
            if bk[OVERFLOW] == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Adds an entry (the caller made sure its key is not in the index yet).
    pub fn insert(&mut self, h: u64, value: u32) -> Result<(), IndexFull> {
        let home = self.home(h);
        let mut b = home;
        for _ in 0..=self.mask {
            let bk = self.bucket_mut(b);
            if let Some(k) = bk[..SLOTS].iter().position(|&t| t == 0) {
                bk[k] = tag_of(h);
                bk[VALUES + k] = value;
                // Count the entry in every full bucket it passed.
                let mut p = home;
                while p != b {
                    self.bucket_mut(p)[OVERFLOW] += 1;
                    p = (p + 1) & self.mask;
                }
                self.len += 1;
                return Ok(());
            }
            b = (b + 1) & self.mask;
        }
        Err(IndexFull)
    }

    /// Removes the entry of hash `h` with exactly `value`; false if there is none.
    pub fn remove(&mut self, h: u64, value: u32) -> bool {
        let tag = tag_of(h);
        let home = self.home(h);
        let mut b = home;
        for _ in 0..=self.mask {
            let bk = self.bucket_mut(b);
            let mut m = Self::matches(bk, tag);
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                if bk[VALUES + k] == value {
                    bk[k] = 0;
                    bk[VALUES + k] = 0;
                    let mut p = home;
                    while p != b {
                        self.bucket_mut(p)[OVERFLOW] -= 1;
                        p = (p + 1) & self.mask;
                    }
                    self.len -= 1;
                    return true;
                }
                m &= m - 1;
            }
            if bk[OVERFLOW] == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Removes every entry (keeps the memory, already faulted in).
    pub fn clear(&mut self) {
        self.mem.fill(0);
        self.len = 0;
    }

    /// Sum of the overflow counters (entries stored past a full bucket, counted per bucket
    /// passed); for tests and diagnostics.
    pub fn overflow_total(&self) -> u64 {
        (0..self.buckets())
            .map(|b| u64::from(self.bucket(b)[OVERFLOW]))
            .sum()
    }
}

/// Starts loading the cache line at `p` (a no-op where there is no prefetch instruction).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline; a prefetch never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the kernel to back `[addr, addr + len)` with transparent huge pages where it can (fewer
/// TLB misses on random access); only the page-aligned interior is advised. Best effort.
pub fn advise_huge_pages(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if len < HUGE {
            return;
        }
        let start = addr.next_multiple_of(4096);
        let end = (addr + len) & !4095;
        if end > start {
            // SAFETY: the range lies inside one live allocation owned by the caller; MADV_HUGEPAGE
            // only changes how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A hash with a chosen home bucket and tag.
    fn h(home: usize, tag: u32) -> u64 {
        (u64::from(tag) << 32) | home as u64
    }

    #[test]
    fn insert_find_remove() {
        let mut ix = FlowIndex::with_buckets(8);
        assert_eq!(ix.buckets(), 8);
        assert_eq!(ix.find(h(3, 77), |_| true), None);
        ix.insert(h(3, 77), 10).unwrap();
        ix.insert(h(3, 78), 11).unwrap();
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.find(h(3, 77), |_| true), Some(10));
        assert_eq!(ix.find(h(3, 78), |_| true), Some(11));
        assert_eq!(ix.candidate(h(3, 78)), Some(11));
        assert_eq!(ix.candidate(h(3, 79)), None);
        // Same tag, other bucket: not found.
        assert_eq!(ix.find(h(4, 77), |_| true), None);
        // Verification rejects a tag match that is not the key.
        assert_eq!(ix.find(h(3, 77), |v| v == 99), None);
        assert!(!ix.remove(h(3, 77), 99));
        assert!(ix.remove(h(3, 77), 10));
        assert!(!ix.remove(h(3, 77), 10));
        assert_eq!(ix.find(h(3, 77), |_| true), None);
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn tag_zero_is_never_stored() {
        let mut ix = FlowIndex::with_buckets(2);
        ix.insert(h(0, 0), 5).unwrap();
        assert_eq!(ix.find(h(0, 0), |_| true), Some(5));
        assert!(ix.remove(h(0, 0), 5));
        assert!(ix.is_empty());
    }

    #[test]
    fn same_tag_entries_are_told_apart_by_verification() {
        let mut ix = FlowIndex::with_buckets(4);
        for v in 0..5 {
            ix.insert(h(1, 42), v).unwrap();
        }
        for v in 0..5 {
            assert_eq!(ix.find(h(1, 42), |x| x == v), Some(v));
        }
    }

    #[test]
    fn overflow_chains_and_deletes_in_the_middle() {
        let mut ix = FlowIndex::with_buckets(4);
        // 3 buckets' worth of entries all homed in bucket 1: they spill into 2 and 3.
        let n = 3 * SLOTS as u32;
        for v in 0..n {
            ix.insert(h(1, 100 + v), v).unwrap();
        }
        // Entries 7..14 passed bucket 1; entries 14..21 passed buckets 1 and 2.
        assert_eq!(ix.overflow_total(), 7 + 2 * 7);
        for v in 0..n {
            assert_eq!(ix.find(h(1, 100 + v), |_| true), Some(v), "entry {v}");
        }
        // An entry homed in bucket 2 goes past the full buckets 2 and 3 into 0.
        ix.insert(h(2, 5), 500).unwrap();
        assert_eq!(ix.find(h(2, 5), |_| true), Some(500));
        // Delete in the middle of the chain: the rest stays reachable.
        for v in (SLOTS as u32..2 * SLOTS as u32).step_by(2) {
            assert!(ix.remove(h(1, 100 + v), v));
        }
        let removed = |v: u32| {
            (SLOTS as u32..2 * SLOTS as u32).contains(&v) && (v - SLOTS as u32).is_multiple_of(2)
        };
        for v in 0..n {
            let want = (!removed(v)).then_some(v);
            assert_eq!(ix.find(h(1, 100 + v), |_| true), want, "entry {v}");
        }
        assert_eq!(ix.find(h(2, 5), |_| true), Some(500));
        // Free slots in bucket 2 now take new entries homed there, without new overflow.
        let before = ix.overflow_total();
        ix.insert(h(2, 6), 501).unwrap();
        assert_eq!(ix.overflow_total(), before);
        // Removing everything brings every counter back to 0.
        for v in (0..n).filter(|&v| !removed(v)) {
            assert!(ix.remove(h(1, 100 + v), v));
        }
        ix.remove(h(2, 5), 500);
        ix.remove(h(2, 6), 501);
        assert!(ix.is_empty());
        assert_eq!(ix.overflow_total(), 0);
    }

    #[test]
    fn wraps_around_the_last_bucket() {
        let mut ix = FlowIndex::with_buckets(2);
        for v in 0..SLOTS as u32 + 3 {
            ix.insert(h(1, 1000 + v), v).unwrap();
        }
        for v in 0..SLOTS as u32 + 3 {
            assert_eq!(ix.find(h(1, 1000 + v), |_| true), Some(v));
        }
        assert!(ix.remove(h(1, 1000), 0));
        assert_eq!(
            ix.find(h(1, 1000 + SLOTS as u32 + 2), |_| true),
            Some(SLOTS as u32 + 2)
        );
    }

    #[test]
    fn clear_empties_everything() {
        let mut ix = FlowIndex::with_buckets(2);
        for v in 0..SLOTS as u32 + 3 {
            ix.insert(h(1, 1000 + v), v).unwrap();
        }
        assert!(ix.overflow_total() > 0);
        ix.clear();
        assert!(ix.is_empty());
        assert_eq!(ix.overflow_total(), 0);
        assert_eq!(ix.find(h(1, 1000), |_| true), None);
        assert_eq!(ix.candidate(h(1, 1000)), None);
        ix.insert(h(1, 1000), 5).unwrap();
        assert_eq!(ix.find(h(1, 1000), |_| true), Some(5));
    }

    #[test]
    fn full_table_refuses_and_recovers() {
        let mut ix = FlowIndex::with_buckets(2);
        let cap = 2 * SLOTS as u32;
        for v in 0..cap {
            ix.insert(h(v as usize, 1 + v), v).unwrap();
        }
        assert_eq!(ix.insert(h(0, 9999), 9999), Err(IndexFull));
        assert_eq!(ix.len(), cap as usize);
        // Lookups of absent keys still terminate on a full table.
        assert_eq!(ix.find(h(0, 9999), |_| true), None);
        assert!(!ix.remove(h(1, 9999), 9999));
        assert!(ix.remove(h(3, 4), 3));
        ix.insert(h(0, 9999), 9999).unwrap();
        assert_eq!(ix.find(h(0, 9999), |_| true), Some(9999));
    }

    #[test]
    fn sized_for_capacity_below_sixty_percent_load() {
        for cap in [1usize, 2, 7, 100, 1 << 21] {
            let ix = FlowIndex::with_capacity(cap);
            assert!(cap * 10 <= ix.buckets() * SLOTS * 6, "cap {cap}");
        }
        let ix = FlowIndex::with_capacity(2 << 20);
        assert_eq!(ix.buckets(), 1 << 19, "32 MiB for 2 M entries");
        assert_eq!(
            ix.bucket(0).as_ptr() as usize % 64,
            0,
            "buckets are cache lines"
        );
    }

    const KEYS: u16 = 400;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..KEYS).prop_map(Op::Insert),
            2 => (0..KEYS).prop_map(Op::Remove),
        ]
    }

    /// Keys hash into few buckets (and often one tag) so that chains, overflow and tag
    /// collisions are the common case.
    fn hash(k: u16, buckets: usize) -> u64 {
        let home = (u64::from(k) * 7) % (buckets as u64 / 2).max(1);
        let tag = u64::from(k % 5);
        (tag << 32) | home
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..600)) {
            let buckets = 64;
            let mut ix = FlowIndex::with_buckets(buckets);
            let mut model: HashMap<u16, u32> = HashMap::new();
            let mut next_value = 0u32;
            for (n, op) in ops.into_iter().enumerate() {
                let key = match op {
                    Op::Insert(k) | Op::Remove(k) => k,
                };
                match op {
                    Op::Insert(k) => {
                        if model.contains_key(&k) {
                            continue;
                        }
                        let v = next_value;
                        next_value += 1;
                        ix.insert(hash(k, buckets), v).unwrap();
                        model.insert(k, v);
                    }
                    Op::Remove(k) => {
                        let want = model.remove(&k);
                        let h = hash(k, buckets);
                        match want {
                            Some(v) => prop_assert!(ix.remove(h, v)),
                            None => prop_assert!(!ix.remove(h, u32::MAX)),
                        }
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
                // The key touched is found with its value or absent; every 25 operations, all
                // keys are checked. The value identifies the key, as a session does.
                let keys = if n % 25 == 0 { 0..KEYS } else { key..key + 1 };
                for k in keys {
                    let want = model.get(&k).copied();
                    let got = ix.find(hash(k, buckets), |v| want == Some(v));
                    prop_assert_eq!(got, want, "key {}", k);
                }
            }
            for (k, v) in model.drain() {
                prop_assert!(ix.remove(hash(k, buckets), v));
            }
            prop_assert!(ix.is_empty());
            prop_assert_eq!(ix.overflow_total(), 0);
        }
    }
}
