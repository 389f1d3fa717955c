//! The NAT44 session table of one worker: both directions of every flow in one hash index, a
//! pre-sized session pool, per-class LRU lists for expiry inside the data plane (SYSTEM.md 6.9),
//! a TCP state machine, bounded size with a reserve for control traffic.
//!
//! Lookups are built for vectors (SYSTEM.md 11.1): a node hashes every key of its frame first
//! ([`SessionTable::hash`]) and prefetches the index bucket ([`SessionTable::prefetch`]), then asks
//! for a candidate session and prefetches it ([`SessionTable::candidate`]), and only then looks up
//! for real ([`SessionTable::lookup_hashed`]), so the cache misses of a frame overlap. The index
//! ([`FlowIndex`]) is one cache line per bucket and maps a key's hash to `session | dir << 31`;
//! the session's own keys confirm a match. A session is two cache lines: a hit reads both.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use foldhash::fast::FixedState;
use vecnet_wire::checksum::Delta;

use crate::config::{NatTimeouts, Proto};
use vecnet_flow_index::{advise_huge_pages, prefetch, FlowIndex};

/// A 5-tuple as seen on the wire (host-order addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl FlowKey {
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// Which direction of its session a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// As the first packet: translated from `outer` to `inner`.
    Forward,
    /// The reply: translated from `inner.reversed()` to `outer.reversed()`.
    Reverse,
}

/// What kind of translation made the session (for `show` and for the fast/slow path split).
/// The variant order is part of the session file format (serde numbers variants in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum SessionKind {
    /// Load-balanced static mapping (a Service); found only in the slow path on the inside.
    LoadBalanced,
    /// Identity mapping: a session, no rewrite.
    Identity,
    /// Dynamic source NAT to a pool address, made by the output feature
    /// (`nat44-in2out-output-slowpath`). Its forward direction is translated only there; see
    /// [`Session::on_input`].
    Dynamic,
}

/// Expiry class; one LRU list each. The variant order is part of the session file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Class {
    TcpTransitory = 0,
    Udp = 1,
    Other = 2,
    Icmp = 3,
    TcpEstablished = 4,
}

impl Class {
    /// Asked for every packet that finds a session.
    #[inline]
    pub fn timeout_s(self, t: &NatTimeouts) -> u32 {
        match self {
            Class::TcpTransitory => t.tcp_transitory,
            Class::TcpEstablished => t.tcp_established,
            Class::Udp | Class::Other => t.udp,
            Class::Icmp => t.icmp,
        }
    }

    pub fn timeout_ns(self, t: &NatTimeouts) -> u64 {
        u64::from(self.timeout_s(t)) * 1_000_000_000
    }

    /// The class a new session of IP protocol `proto` starts in.
    fn initial(proto: u8) -> Self {
        match Proto::from_ip_proto(proto) {
            Some(Proto::Tcp) => Class::TcpTransitory,
            Some(Proto::Udp) => Class::Udp,
            Some(Proto::Icmp) => Class::Icmp,
            None => Class::Other,
        }
    }
}

const CLASSES: usize = 5;
/// Order in which expired heads are freed before an allocation (SYSTEM.md 6.9).
const FREE_ORDER: [Class; CLASSES] = [
    Class::TcpTransitory,
    Class::Udp,
    Class::Other,
    Class::Icmp,
    Class::TcpEstablished,
];

const NONE: u32 = u32::MAX;
/// Index values are `session | DIR_REVERSE` for the reply direction.
const DIR_REVERSE: u32 = 1 << 31;
/// Largest table: session numbers must leave the direction bit free.
const MAX_SESSIONS: u32 = DIR_REVERSE - 1;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Precomputed rewrite of one direction: the addresses and ports to write and checksum deltas.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Rewrite {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 header checksum delta (addresses).
    pub ip: Delta,
    /// L4 checksum delta (pseudo-header addresses and ports).
    pub l4: Delta,
}

impl Rewrite {
    pub fn between(from: FlowKey, to: FlowKey) -> Self {
        let ip = Delta::from_u32(from.src, to.src).combine(Delta::from_u32(from.dst, to.dst));
        let ports =
            Delta::from_u16(from.sport, to.sport).combine(Delta::from_u16(from.dport, to.dport));
        Self {
            src: to.src,
            dst: to.dst,
            sport: to.sport,
            dport: to.dport,
            ip,
            l4: ip.combine(ports),
        }
    }

    /// Partial-checksum delta (a NEEDS_CSUM seed covers the pseudo-header addresses only: the
    /// ports are inside the range the device sums), i.e. the address delta.
    #[inline]
    pub fn partial(&self) -> Delta {
        self.ip
    }
}

/// One session: 128 bytes, two cache lines, both read by a hit. The first line holds what every
/// packet compares or writes (keys, timestamps, counters), the second the rewrites, the state and
/// the LRU links.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct Session {
    /// The flow as its first packet arrived (client → external address).
    pub outer: FlowKey,
    /// The same packet after translation (client' → backend).
    pub inner: FlowKey,
    pub last_heard_ns: u64,
    /// When the session was last moved to its LRU tail (at most once per second).
    pub lru_touch_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    // Second cache line.
    pub fwd: Rewrite,
    pub rev: Rewrite,
    /// Index of the static mapping that made it, `u32::MAX` if none.
    pub mapping: u32,
    pub vrf: u32,
    prev: u32,
    next: u32,
    pub kind: SessionKind,
    /// Source translated too (twice-NAT, hairpin).
    pub twice_nat: bool,
    pub class: Class,
    /// TCP flags seen since the last (re)open, per direction.
    pub tcp_seen: [u8; 2],
    pub tcp_established: bool,
    /// Counts against the control reserve.
    pub control: bool,
    in_use: bool,
}

const _: () = assert!(std::mem::size_of::<Session>() == 128);
const _: () = assert!(std::mem::offset_of!(Session, fwd) == 64);

impl Session {
    pub fn timeout_s(&self, t: &NatTimeouts) -> u32 {
        self.class.timeout_s(t)
    }

    pub fn expired(&self, now_ns: u64, t: &NatTimeouts) -> bool {
        now_ns.saturating_sub(self.last_heard_ns) >= self.timeout_s(t) as u64 * 1_000_000_000
    }

    /// Whether the input-side nodes (`nat44-out2in`, `nat44-in2out` and its slow path) translate
    /// a packet of this session travelling in `dir`. Not the forward direction of a dynamic
    /// session: that belongs to the output feature of the uplink, which made the session after
    /// the egress ACL and finds it there for every later packet (SYSTEM.md 4.5.10, 9.4), as
    /// VPP's out2in matches only outside keys and no dynamic SNAT happens on the input side
    /// (4.5.7, 4.5.9). Translating it on input as well would hand the output feature a packet
    /// from the pool address, which it must refuse, and show the uplink's egress ACL the node IP
    /// instead of the pod. The reply direction is out2in's on the uplink.
    #[inline]
    pub fn on_input(&self, dir: Dir) -> bool {
        self.kind != SessionKind::Dynamic || dir == Dir::Reverse
    }

    pub fn rewrite(&self, dir: Dir) -> &Rewrite {
        match dir {
            Dir::Forward => &self.fwd,
            Dir::Reverse => &self.rev,
        }
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// The table (or, for non-control traffic, its unreserved part) is full.
    Full,
    /// A key of the new session is already in use.
    Collision,
}

/// Counters of the table (`show nat44 …`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub created: u64,
    pub expired: u64,
    pub recycled: u64,
    pub refused_full: u64,
    pub purged: u64,
}

/// A session as a graceful restart carries it over (SYSTEM.md 1.1): what is needed to rebuild it
/// in a fresh table with the same rewrites, class, TCP state and age. Times are relative (the
/// data-plane clock starts anew with the process): `idle_ns` is how long before the export the
/// session was last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedNatSession {
    pub outer: FlowKey,
    pub inner: FlowKey,
    pub kind: SessionKind,
    pub twice_nat: bool,
    pub mapping: u32,
    pub class: Class,
    pub tcp_seen: [u8; 2],
    pub tcp_established: bool,
    pub control: bool,
    pub idle_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl SavedNatSession {
    /// The class the session gets back. A file is not trusted to be consistent: the class must
    /// fit the protocol, and for TCP it decides the established state, as [`SessionTable::touch`]
    /// keeps them in step.
    pub fn restored_class(&self) -> Class {
        match (Class::initial(self.outer.proto), self.class) {
            (Class::TcpTransitory, Class::TcpEstablished) => Class::TcpEstablished,
            (initial, _) => initial,
        }
    }

    /// Whether the session timed out `idle_ns` after it was last heard.
    pub fn expired(&self, t: &NatTimeouts) -> bool {
        self.idle_ns >= self.restored_class().timeout_ns(t)
    }
}

pub struct SessionTable {
    sessions: Vec<Session>,
    free: Vec<u32>,
    /// Both keys of every live session → `session | dir`.
    index: FlowIndex,
    hasher: FixedState,
    lru_head: [u32; CLASSES],
    lru_tail: [u32; CLASSES],
    count: u32,
    max: u32,
    reserved: u32,
    pub counters: SessionCounters,
}

impl std::fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable")
            .field("count", &self.count)
            .field("max", &self.max)
            .finish()
    }
}

#[inline]
fn index_value(i: u32, dir: Dir) -> u32 {
    match dir {
        Dir::Forward => i,
        Dir::Reverse => i | DIR_REVERSE,
    }
}

#[inline]
fn from_index_value(v: u32) -> (u32, Dir) {
    if v & DIR_REVERSE == 0 {
        (v, Dir::Forward)
    } else {
        (v & !DIR_REVERSE, Dir::Reverse)
    }
}

impl SessionTable {
    /// A table for `max` sessions; `reserved_pct` percent are kept for control traffic.
    /// Everything is sized now so that creating sessions never allocates or rehashes: the session
    /// pool (128 bytes a session) is address space until sessions use it, the index (32 bytes a
    /// session) is faulted in now.
    pub fn new(max: u32, reserved_pct: u8, seed: u64) -> Self {
        let max = max.clamp(1, MAX_SESSIONS);
        let sessions: Vec<Session> = Vec::with_capacity(max as usize);
        advise_huge_pages(
            sessions.as_ptr() as usize,
            sessions.capacity() * std::mem::size_of::<Session>(),
        );
        Self {
            sessions,
            free: Vec::with_capacity(max as usize),
            index: FlowIndex::with_capacity(2 * max as usize),
            hasher: FixedState::with_seed(seed),
            lru_head: [NONE; CLASSES],
            lru_tail: [NONE; CLASSES],
            count: 0,
            max,
            reserved: (max as u64 * reserved_pct.min(100) as u64 / 100) as u32,
            counters: SessionCounters::default(),
        }
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    #[inline]
    pub fn get(&self, index: u32) -> Option<&Session> {
        self.sessions.get(index as usize).filter(|s| s.in_use)
    }

    /// The (seeded) hash of a key, for [`Self::prefetch`], [`Self::candidate`] and
    /// [`Self::lookup_hashed`].
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        let a = (u64::from(key.src) << 32) | u64::from(key.dst);
        let b = (u64::from(key.sport) << 24) | (u64::from(key.dport) << 8) | u64::from(key.proto);
        self.hasher.hash_one((a, b))
    }

    /// Starts loading the index bucket of hash `h` (first pass over a frame).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// A candidate for the key of hash `h` from its (prefetched) index bucket, whose session is
    /// now being loaded; `u32::MAX` if there is none. Only a hint for
    /// [`Self::lookup_hashed`], which verifies it (second pass over a frame).
    #[inline]
    pub fn candidate(&self, h: u64) -> u32 {
        match self.index.candidate(h) {
            Some(v) => {
                let s = self
                    .sessions
                    .as_ptr()
                    .wrapping_add((v & !DIR_REVERSE) as usize);
                prefetch(s);
                prefetch(s.cast::<u8>().wrapping_add(64));
                v
            }
            None => NONE,
        }
    }

    /// Whether index value `v` is a live session whose key in its direction is `key`.
    #[inline]
    fn is_key(&self, v: u32, key: &FlowKey) -> bool {
        let (i, dir) = from_index_value(v);
        match self.sessions.get(i as usize) {
            Some(s) if s.in_use => match dir {
                Dir::Forward => s.outer == *key,
                Dir::Reverse => s.inner.reversed() == *key,
            },
            _ => false,
        }
    }

    #[inline]
    fn find(&self, key: &FlowKey, h: u64) -> Option<u32> {
        self.index.find(h, |v| self.is_key(v, key))
    }

    /// Finds the session of a packet's 5-tuple; an expired one is deleted and not returned.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now_ns: u64, t: &NatTimeouts) -> Option<(u32, Dir)> {
        let h = self.hash(key);
        self.lookup_hashed(key, h, NONE, now_ns, t)
    }

    /// [`Self::lookup`] with the key's hash `h` computed already and `candidate` from
    /// [`Self::candidate`] (or `u32::MAX`): a verified candidate skips the index.
    #[inline]
    pub fn lookup_hashed(
        &mut self,
        key: &FlowKey,
        h: u64,
        candidate: u32,
        now_ns: u64,
        t: &NatTimeouts,
    ) -> Option<(u32, Dir)> {
        let v = if candidate != NONE && self.is_key(candidate, key) {
            candidate
        } else {
            self.find(key, h)?
        };
        let (i, dir) = from_index_value(v);
        if self.sessions[i as usize].expired(now_ns, t) {
            self.delete(i);
            self.counters.expired += 1;
            return None;
        }
        Some((i, dir))
    }

    /// Whether `key` is in use by any live session direction.
    pub fn key_in_use(&self, key: &FlowKey) -> bool {
        self.find(key, self.hash(key)).is_some()
    }

    /// Whether `key` is free for a new session at `now_ns` (port allocation, SYSTEM.md 6.10). A
    /// session holding it that has timed out but was not reaped yet is deleted now, as a lookup
    /// would: otherwise whether a port counts as free would depend on how many main loops ran
    /// since the clock passed its timeout, and a frame would allocate other ports than the same
    /// packets one at a time.
    pub fn key_free(&mut self, key: &FlowKey, now_ns: u64, t: &NatTimeouts) -> bool {
        self.lookup(key, now_ns, t).is_none()
    }

    /// Whether `key` (of hash `h`) belongs to a live session at `now_ns`. A session holding it
    /// that has timed out but was not reaped yet is deleted now, as a lookup would: a dead
    /// session must not make a new one collide (and fall back to twice-NAT, or be refused), or
    /// whether it does would depend on how many main loops reaped since its timeout — a frame
    /// would then get other sessions than the same packets one at a time.
    fn held(&mut self, key: &FlowKey, h: u64, now_ns: u64, t: &NatTimeouts) -> bool {
        let Some(v) = self.find(key, h) else {
            return false;
        };
        let (i, _) = from_index_value(v);
        if self.sessions[i as usize].expired(now_ns, t) {
            self.delete(i);
            self.counters.expired += 1;
            return false;
        }
        true
    }

    /// Creates a session for `outer` translated to `inner`; a key held by a session that has
    /// timed out is free (the old session is deleted).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        outer: FlowKey,
        inner: FlowKey,
        kind: SessionKind,
        twice_nat: bool,
        mapping: u32,
        control: bool,
        now_ns: u64,
        t: &NatTimeouts,
    ) -> Result<u32, CreateError> {
        let rev_key = inner.reversed();
        let (h_out, h_rev) = (self.hash(&outer), self.hash(&rev_key));
        // The reply key's bucket is usually cold: start loading it while the outer key (whose
        // bucket the node prefetched) is checked.
        self.index.prefetch(h_rev);
        if self.held(&outer, h_out, now_ns, t) || self.held(&rev_key, h_rev, now_ns, t) {
            return Err(CreateError::Collision);
        }
        self.make_room(control, now_ns, t)?;
        let class = Class::initial(outer.proto);
        let s = Session {
            outer,
            inner,
            last_heard_ns: now_ns,
            lru_touch_ns: now_ns,
            packets: 0,
            bytes: 0,
            fwd: Rewrite::between(outer, inner),
            rev: Rewrite::between(rev_key, outer.reversed()),
            mapping,
            vrf: 0,
            prev: NONE,
            next: NONE,
            kind,
            twice_nat,
            class,
            tcp_seen: [0; 2],
            tcp_established: false,
            control,
            in_use: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.sessions[i as usize] = s;
                i
            }
            None => {
                if self.sessions.len() >= self.sessions.capacity() {
                    return Err(CreateError::Full);
                }
                self.sessions.push(s);
                (self.sessions.len() - 1) as u32
            }
        };
        // A flow that is its own reply (same address and port on both ends) has one key: it
        // finds the session in the reply direction.
        let fwd_ok = outer == rev_key || self.index.insert(h_out, i).is_ok();
        if !fwd_ok || self.index.insert(h_rev, i | DIR_REVERSE).is_err() {
            // Not reachable at the sized capacity; undo rather than corrupt the table.
            if fwd_ok && outer != rev_key {
                self.index.remove(h_out, i);
            }
            self.sessions[i as usize].in_use = false;
            self.free.push(i);
            self.counters.refused_full += 1;
            return Err(CreateError::Full);
        }
        self.lru_push_tail(i);
        self.count += 1;
        self.counters.created += 1;
        Ok(i)
    }

    /// Frees room for one session: expired heads first, then the oldest transitory TCP
    /// session; the last `reserved` slots only for control traffic.
    fn make_room(
        &mut self,
        control: bool,
        now_ns: u64,
        t: &NatTimeouts,
    ) -> Result<(), CreateError> {
        let limit = if control {
            self.max
        } else {
            self.max - self.reserved
        };
        if self.count < limit {
            return Ok(());
        }
        for class in FREE_ORDER {
            let h = self.lru_head[class as usize];
            if h != NONE && self.sessions[h as usize].expired(now_ns, t) {
                self.delete(h);
                self.counters.expired += 1;
                return Ok(());
            }
        }
        let h = self.lru_head[Class::TcpTransitory as usize];
        if h != NONE {
            self.delete(h);
            self.counters.recycled += 1;
            return Ok(());
        }
        self.counters.refused_full += 1;
        Err(CreateError::Full)
    }

    /// Accounts a packet of session `i` in direction `dir`: refreshes it, moves it on its LRU list
    /// at most once a second, and runs the TCP state machine.
    #[inline]
    pub fn touch(&mut self, i: u32, dir: Dir, tcp_flags: u8, len: u16, now_ns: u64) {
        let Some(s) = self.sessions.get_mut(i as usize) else {
            return;
        };
        s.last_heard_ns = now_ns;
        s.packets += 1;
        s.bytes += len as u64;
        let mut new_class = s.class;
        if s.outer.proto == 6 {
            let d = match dir {
                Dir::Forward => 0,
                Dir::Reverse => 1,
            };
            if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                // Closing: transitory until both sides open anew.
                s.tcp_established = false;
                s.tcp_seen = [0; 2];
                new_class = Class::TcpTransitory;
            } else {
                s.tcp_seen[d] |= tcp_flags & (TCP_SYN | TCP_ACK);
                let open = TCP_SYN | TCP_ACK;
                if !s.tcp_established
                    && s.tcp_seen[0] & open == open
                    && s.tcp_seen[1] & open == open
                {
                    s.tcp_established = true;
                    new_class = Class::TcpEstablished;
                }
            }
        }
        let moved = new_class != s.class;
        let stale = now_ns.saturating_sub(s.lru_touch_ns) >= 1_000_000_000;
        if moved || stale {
            self.lru_unlink(i);
            let s = &mut self.sessions[i as usize];
            s.class = new_class;
            s.lru_touch_ns = now_ns;
            self.lru_push_tail(i);
        }
    }

    /// Deletes session `i` (both directions).
    pub fn delete(&mut self, i: u32) {
        let Some(s) = self.sessions.get(i as usize) else {
            return;
        };
        if !s.in_use {
            return;
        }
        let (outer, rev_key) = (s.outer, s.inner.reversed());
        self.lru_unlink(i);
        let (h_out, h_rev) = (self.hash(&outer), self.hash(&rev_key));
        self.index.remove(h_out, index_value(i, Dir::Forward));
        self.index.remove(h_rev, index_value(i, Dir::Reverse));
        self.sessions[i as usize].in_use = false;
        self.free.push(i);
        self.count -= 1;
    }

    /// Expires up to `budget` list heads; called once per main loop so memory and `show` output
    /// follow the clock without traffic.
    pub fn expire_some(&mut self, now_ns: u64, t: &NatTimeouts, budget: usize) {
        let mut left = budget;
        for class in FREE_ORDER {
            while left > 0 {
                let h = self.lru_head[class as usize];
                if h == NONE || !self.sessions[h as usize].expired(now_ns, t) {
                    break;
                }
                self.delete(h);
                self.counters.expired += 1;
                left -= 1;
            }
        }
    }

    /// Deletes every session `pred` selects (control-plane purges: endpoint changes, pod
    /// deletion); returns how many.
    pub fn purge(&mut self, mut pred: impl FnMut(&Session) -> bool) -> u32 {
        let victims: Vec<u32> = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_use && pred(s))
            .map(|(i, _)| i as u32)
            .collect();
        for &i in &victims {
            self.delete(i);
        }
        self.counters.purged += victims.len() as u64;
        victims.len() as u32
    }

    /// Live sessions in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session)> {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_use)
            .map(|(i, s)| (i as u32, s))
    }

    /// Every live session, most idle first: imported in this order, each LRU list comes back
    /// oldest first, as expiry and recycling expect.
    pub fn export(&self, now_ns: u64) -> Vec<SavedNatSession> {
        let mut out: Vec<SavedNatSession> = self
            .iter()
            .map(|(_, s)| SavedNatSession {
                outer: s.outer,
                inner: s.inner,
                kind: s.kind,
                twice_nat: s.twice_nat,
                mapping: s.mapping,
                class: s.class,
                tcp_seen: s.tcp_seen,
                tcp_established: s.tcp_established,
                control: s.control,
                idle_ns: now_ns.saturating_sub(s.last_heard_ns),
                packets: s.packets,
                bytes: s.bytes,
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.idle_ns));
        out
    }

    /// Rebuilds an exported session: `Ok(None)` (nothing created) when it has expired meanwhile,
    /// else the new session's index. It is created as a new flow's session is (collisions, the
    /// control reserve, room made by expiry or recycling, index and counters), then given back
    /// its class, TCP state, counters and age. A clock younger than the session's idle time
    /// (a data plane that just started) makes it look idle since the clock's origin only.
    pub fn import(
        &mut self,
        s: &SavedNatSession,
        now_ns: u64,
        t: &NatTimeouts,
    ) -> Result<Option<u32>, CreateError> {
        if s.expired(t) {
            return Ok(None);
        }
        let i = self.create(
            s.outer,
            s.inner,
            s.kind,
            s.twice_nat,
            s.mapping,
            s.control,
            now_ns,
            t,
        )?;
        let class = s.restored_class();
        let last = now_ns.saturating_sub(s.idle_ns);
        // Off the list of the class `create` chose, onto the tail of its own.
        self.lru_unlink(i);
        let x = &mut self.sessions[i as usize];
        x.class = class;
        x.tcp_established = class == Class::TcpEstablished;
        x.tcp_seen = if s.outer.proto == 6 {
            s.tcp_seen
        } else {
            [0; 2]
        };
        x.packets = s.packets;
        x.bytes = s.bytes;
        x.last_heard_ns = last;
        x.lru_touch_ns = last;
        self.lru_push_tail(i);
        Ok(Some(i))
    }

    fn lru_push_tail(&mut self, i: u32) {
        let c = self.sessions[i as usize].class as usize;
        let tail = self.lru_tail[c];
        {
            let s = &mut self.sessions[i as usize];
            s.prev = tail;
            s.next = NONE;
        }
        if tail == NONE {
            self.lru_head[c] = i;
        } else {
            self.sessions[tail as usize].next = i;
        }
        self.lru_tail[c] = i;
    }

    fn lru_unlink(&mut self, i: u32) {
        let (c, prev, next) = {
            let s = &self.sessions[i as usize];
            (s.class as usize, s.prev, s.next)
        };
        if prev == NONE {
            self.lru_head[c] = next;
        } else {
            self.sessions[prev as usize].next = next;
        }
        if next == NONE {
            self.lru_tail[c] = prev;
        } else {
            self.sessions[next as usize].prev = prev;
        }
        let s = &mut self.sessions[i as usize];
        s.prev = NONE;
        s.next = NONE;
    }
}

#[cfg(test)]
impl SessionTable {
    /// The structural invariants: every live session on exactly the LRU list of its class with
    /// consistent links, no free slot on a list, both keys of every live session (one for a flow
    /// that is its own reply) and nothing else in the index, the free list and the live sessions
    /// partitioning the pool.
    fn check_invariants(&self) -> Result<(), String> {
        let mut on_list = vec![false; self.sessions.len()];
        for c in FREE_ORDER {
            let (mut prev, mut i) = (NONE, self.lru_head[c as usize]);
            while i != NONE {
                let s = self
                    .sessions
                    .get(i as usize)
                    .ok_or(format!("list {c:?}: link to {i} past the pool"))?;
                if !s.in_use || s.class != c || s.prev != prev || on_list[i as usize] {
                    return Err(format!("list {c:?}: session {i} misplaced: {s:?}"));
                }
                on_list[i as usize] = true;
                (prev, i) = (i, s.next);
            }
            if self.lru_tail[c as usize] != prev {
                return Err(format!(
                    "list {c:?}: tail {} != {prev}",
                    self.lru_tail[c as usize]
                ));
            }
        }
        let mut keys = 0;
        for (i, s) in self.sessions.iter().enumerate() {
            if s.in_use != on_list[i] {
                return Err(format!(
                    "session {i}: in use {} but listed {}",
                    s.in_use, on_list[i]
                ));
            }
            if !s.in_use {
                continue;
            }
            let (o, r) = (s.outer, s.inner.reversed());
            if self.find(&o, self.hash(&o)) != Some(index_value(i as u32, Dir::Forward)) && o != r {
                return Err(format!("session {i}: outer key not indexed"));
            }
            if self.find(&r, self.hash(&r)) != Some(index_value(i as u32, Dir::Reverse)) {
                return Err(format!("session {i}: reply key not indexed"));
            }
            keys += if o == r { 1 } else { 2 };
        }
        let live = on_list.iter().filter(|&&x| x).count();
        if live != self.count as usize || keys != self.index.len() {
            return Err(format!(
                "count {} / index {} for {live} sessions, {keys} keys",
                self.count,
                self.index.len()
            ));
        }
        if live + self.free.len() != self.sessions.len() {
            return Err(format!(
                "{live} live + {} free != {} slots",
                self.free.len(),
                self.sessions.len()
            ));
        }
        Ok(())
    }
}

/// Host-order u32 of an address.
pub fn a(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(src: u32, dst: u32, sp: u16, dp: u16, proto: u8) -> FlowKey {
        FlowKey {
            src,
            dst,
            sport: sp,
            dport: dp,
            proto,
        }
    }

    const T: NatTimeouts = NatTimeouts {
        udp: 300,
        tcp_established: 7440,
        tcp_transitory: 240,
        icmp: 60,
    };
    const S: u64 = 1_000_000_000;

    #[test]
    fn both_directions_found_and_expiry_on_lookup() {
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 2, 1000, 80, 17);
        let i = k(1, 3, 1000, 8080, 17);
        let s = t
            .create(o, i, SessionKind::LoadBalanced, false, 0, false, 0, &T)
            .unwrap();
        assert_eq!(t.lookup(&o, 0, &T), Some((s, Dir::Forward)));
        assert_eq!(t.lookup(&i.reversed(), 0, &T), Some((s, Dir::Reverse)));
        assert_eq!(t.lookup(&i, 0, &T), None);
        assert_eq!(t.lookup(&o, 300 * S, &T), None, "UDP expires after 300 s");
        assert!(t.is_empty());
    }

    #[test]
    fn tcp_state_machine() {
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 2, 1000, 80, 6);
        let s = t
            .create(o, o, SessionKind::Identity, false, 0, false, 0, &T)
            .unwrap();
        t.touch(s, Dir::Forward, TCP_SYN, 60, 0);
        t.touch(s, Dir::Reverse, TCP_SYN | TCP_ACK, 60, 0);
        assert_eq!(
            t.get(s).unwrap().class,
            Class::TcpTransitory,
            "not yet: the client's ACK"
        );
        t.touch(s, Dir::Forward, TCP_ACK, 60, 0);
        assert_eq!(t.get(s).unwrap().class, Class::TcpEstablished);
        assert!(
            t.lookup(&o, 1000 * S, &T).is_some(),
            "established lives 7440 s"
        );
        t.touch(s, Dir::Reverse, TCP_FIN | TCP_ACK, 60, 1000 * S);
        assert_eq!(t.get(s).unwrap().class, Class::TcpTransitory);
        // A SYN from one side alone does not reopen.
        t.touch(s, Dir::Forward, TCP_SYN, 60, 1000 * S);
        assert_eq!(t.get(s).unwrap().class, Class::TcpTransitory);
        t.touch(s, Dir::Reverse, TCP_SYN | TCP_ACK, 60, 1000 * S);
        t.touch(s, Dir::Forward, TCP_ACK, 60, 1000 * S);
        assert_eq!(
            t.get(s).unwrap().class,
            Class::TcpEstablished,
            "full reopen"
        );
        t.touch(s, Dir::Forward, TCP_RST, 60, 1000 * S);
        assert!(
            t.lookup(&o, 1240 * S, &T).is_none(),
            "transitory after RST: gone after 240 s"
        );
    }

    #[test]
    fn full_table_recycles_transitory_and_keeps_control_reserve() {
        let mut t = SessionTable::new(10, 20, 1);
        // 8 non-control UDP sessions fill the unreserved part.
        for p in 0..8 {
            t.create(
                k(1, 2, p, 53, 17),
                k(1, 2, p, 53, 17),
                SessionKind::Identity,
                false,
                0,
                false,
                0,
                &T,
            )
            .unwrap();
        }
        assert_eq!(
            t.create(
                k(1, 2, 100, 53, 17),
                k(1, 2, 100, 53, 17),
                SessionKind::Identity,
                false,
                0,
                false,
                0,
                &T
            ),
            Err(CreateError::Full)
        );
        // Control traffic still gets the reserve.
        for p in 200..202 {
            t.create(
                k(1, 2, p, 53, 17),
                k(1, 2, p, 53, 17),
                SessionKind::Identity,
                false,
                0,
                true,
                0,
                &T,
            )
            .unwrap();
        }
        assert_eq!(t.len(), 10);
        // Expired heads are freed on demand.
        assert!(t
            .create(
                k(1, 2, 300, 53, 17),
                k(1, 2, 300, 53, 17),
                SessionKind::Identity,
                false,
                0,
                false,
                301 * S,
                &T
            )
            .is_ok());
        assert_eq!(t.counters.refused_full, 1);
    }

    #[test]
    fn the_forward_direction_of_a_dynamic_session_is_not_for_the_input_side() {
        let mut t = SessionTable::new(8, 0, 1);
        // pod:41000 -> server:443, source-translated to node IP:41000 by the output feature.
        let o = k(1, 9, 41000, 443, 6);
        let i = k(5, 9, 41000, 443, 6);
        let dy = t
            .create(o, i, SessionKind::Dynamic, false, u32::MAX, false, 0, &T)
            .unwrap();
        let s = t.get(dy).unwrap();
        assert!(!s.on_input(Dir::Forward), "the output feature's");
        assert!(s.on_input(Dir::Reverse), "replies: out2in on the uplink");
        let lb = t
            .create(
                k(1, 2, 1000, 80, 17),
                k(1, 3, 1000, 8080, 17),
                SessionKind::LoadBalanced,
                false,
                0,
                false,
                0,
                &T,
            )
            .unwrap();
        let id = t
            .create(
                k(7, 5, 999, 4789, 17),
                k(7, 5, 999, 4789, 17),
                SessionKind::Identity,
                false,
                u32::MAX,
                true,
                0,
                &T,
            )
            .unwrap();
        for s in [lb, id] {
            let s = t.get(s).unwrap();
            assert!(s.on_input(Dir::Forward) && s.on_input(Dir::Reverse));
        }
    }

    #[test]
    fn a_key_held_by_a_session_that_timed_out_is_free() {
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 9, 41000, 53, 17);
        let i = k(5, 9, 41000, 53, 17);
        t.create(o, i, SessionKind::Dynamic, false, u32::MAX, false, 0, &T)
            .unwrap();
        let reply = i.reversed();
        assert!(!t.key_free(&reply, 299 * S, &T));
        assert_eq!(t.len(), 1, "a live session stays");
        // Timed out, not reaped yet: the port is free, and the session goes as a lookup's would.
        assert!(t.key_in_use(&reply));
        assert!(t.key_free(&reply, 600 * S, &T));
        assert!(t.is_empty());
        assert_eq!(t.counters.expired, 1);
        assert!(t.key_free(&reply, 600 * S, &T), "a key no session holds");
    }

    #[test]
    fn a_new_session_does_not_collide_with_one_that_timed_out() {
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 2, 1000, 80, 6);
        let i = k(1, 9, 1000, 8080, 6);
        t.create(o, i, SessionKind::LoadBalanced, false, 7, false, 0, &T)
            .unwrap();
        // The same client port to another VIP with the same backend: the reply key collides
        // while the first session lives (240 s, transitory TCP)…
        let o2 = k(1, 4, 1000, 80, 6);
        assert_eq!(
            t.create(
                o2,
                i,
                SessionKind::LoadBalanced,
                false,
                7,
                false,
                239 * S,
                &T
            ),
            Err(CreateError::Collision)
        );
        // …not once it has timed out, reaped or not: it goes, as a lookup's would.
        let n = t
            .create(
                o2,
                i,
                SessionKind::LoadBalanced,
                false,
                7,
                false,
                240 * S,
                &T,
            )
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.counters.expired, 1);
        assert_eq!(
            t.lookup(&i.reversed(), 240 * S, &T),
            Some((n, Dir::Reverse))
        );
        assert!(t.lookup(&o, 240 * S, &T).is_none());
        // The same for the forward key.
        let i3 = k(1, 9, 1000, 9090, 6);
        let n3 = t
            .create(
                o2,
                i3,
                SessionKind::LoadBalanced,
                false,
                7,
                false,
                480 * S,
                &T,
            )
            .unwrap();
        assert_eq!(t.lookup(&o2, 480 * S, &T), Some((n3, Dir::Forward)));
        assert_eq!(t.counters.expired, 2);
        t.check_invariants().unwrap();
    }

    #[test]
    fn collision_and_purge() {
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 2, 1000, 80, 6);
        let i = k(1, 9, 1000, 8080, 6);
        t.create(o, i, SessionKind::LoadBalanced, false, 7, false, 0, &T)
            .unwrap();
        // Same client port to another VIP with the same backend: the reply key collides.
        let o2 = k(1, 4, 1000, 80, 6);
        assert_eq!(
            t.create(o2, i, SessionKind::LoadBalanced, false, 7, false, 0, &T),
            Err(CreateError::Collision)
        );
        assert_eq!(t.purge(|s| s.mapping == 7), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn stale_candidates_are_verified() {
        let mut t = SessionTable::new(8, 0, 7);
        let k1 = k(1, 2, 1000, 80, 17);
        let s1 = t
            .create(k1, k1, SessionKind::Identity, false, 0, false, 0, &T)
            .unwrap();
        let h1 = t.hash(&k1);
        let c = t.candidate(h1);
        assert_eq!(c, s1, "the forward entry");
        assert_eq!(t.lookup_hashed(&k1, h1, c, 0, &T), Some((s1, Dir::Forward)));
        // The session goes (expired on lookup, as mid-frame): its candidate no longer matches.
        assert_eq!(t.lookup_hashed(&k1, h1, c, 300 * S, &T), None);
        assert_eq!(t.lookup_hashed(&k1, h1, c, 300 * S, &T), None);
        // Its slot is reused by another flow: the old candidate names a live session with
        // other keys, and is refused for `k1`, accepted for the new key.
        let k2 = k(5, 6, 2000, 53, 17);
        let s2 = t
            .create(k2, k2, SessionKind::Identity, false, 0, false, 300 * S, &T)
            .unwrap();
        assert_eq!(s2, s1);
        assert_eq!(t.lookup_hashed(&k1, h1, c, 300 * S, &T), None);
        let h2 = t.hash(&k2);
        assert_eq!(
            t.lookup_hashed(&k2, h2, c, 300 * S, &T),
            Some((s2, Dir::Forward))
        );
        // A wrong candidate never hides the real entry.
        assert_eq!(
            t.lookup_hashed(&k2.reversed(), t.hash(&k2.reversed()), c, 300 * S, &T),
            Some((s2, Dir::Reverse))
        );
        assert_eq!(t.candidate(t.hash(&k(9, 9, 9, 9, 6))), u32::MAX);
        // Deleted (purged, recycled) before its packet is handled, and not expired.
        let k3 = k(7, 8, 3000, 80, 6);
        let s3 = t
            .create(k3, k3, SessionKind::Identity, false, 0, false, 300 * S, &T)
            .unwrap();
        let h3 = t.hash(&k3);
        let c3 = t.candidate(h3);
        assert_eq!(c3, s3);
        t.delete(s3);
        assert_eq!(t.lookup_hashed(&k3, h3, c3, 300 * S, &T), None);
    }

    #[test]
    fn a_flow_that_is_its_own_reply_has_one_key() {
        // Same address and port on both ends: the outer key is the reply key.
        let mut t = SessionTable::new(8, 0, 1);
        let o = k(1, 1, 7, 7, 17);
        let s = t
            .create(o, o, SessionKind::Identity, false, 0, false, 0, &T)
            .unwrap();
        assert_eq!(t.index.len(), 1);
        assert_eq!(t.lookup(&o, 0, &T), Some((s, Dir::Reverse)));
        t.delete(s);
        assert!(t.index.is_empty());
        assert_eq!(t.lookup(&o, 0, &T), None);
    }

    #[test]
    fn lookups_never_allocate_or_grow_the_index() {
        let mut t = SessionTable::new(1000, 0, 3);
        let buckets = t.index.buckets();
        for round in 0..20u16 {
            for p in 0..1000u16 {
                let o = k(1, 2, p, 80 + round, 6);
                t.create(o, o, SessionKind::Identity, false, 0, false, 0, &T)
                    .unwrap();
            }
            assert_eq!(t.len(), 1000);
            assert_eq!(t.index.len(), 2000);
            t.purge(|_| true);
            assert!(t.index.is_empty());
            assert_eq!(t.index.overflow_total(), 0, "no residue after churn");
        }
        assert_eq!(t.index.buckets(), buckets);
    }

    #[test]
    fn export_import_round_trip_keeps_rewrites_state_and_age() {
        let mut t = SessionTable::new(16, 0, 1);
        // A twice-NAT'd Service flow, made established; a dynamic SNAT flow; an identity one.
        let lb_o = k(0x0a01_0103, 0x0a68_dd55, 46310, 80, 6);
        let lb_i = k(0x0a01_01fe, 0x0a14_0002, 61000, 8080, 6);
        let lb = t
            .create(lb_o, lb_i, SessionKind::LoadBalanced, true, 3, false, S, &T)
            .unwrap();
        t.touch(lb, Dir::Forward, TCP_SYN, 60, S);
        t.touch(lb, Dir::Reverse, TCP_SYN | TCP_ACK, 60, 2 * S);
        t.touch(lb, Dir::Forward, TCP_ACK, 52, 3 * S);
        let dy_o = k(0x0a01_0103, 0xc633_640a, 900, 53, 17);
        let dy_i = k(0xac1e_0101, 0xc633_640a, 31337, 53, 17);
        let dy = t
            .create(
                dy_o,
                dy_i,
                SessionKind::Dynamic,
                false,
                u32::MAX,
                false,
                4 * S,
                &T,
            )
            .unwrap();
        let id_o = k(0x0a01_0103, 0xac1e_0101, 7, 8, 1);
        t.create(
            id_o,
            id_o,
            SessionKind::Identity,
            false,
            u32::MAX,
            true,
            50 * S,
            &T,
        )
        .unwrap();
        let now = 100 * S;
        let saved = t.export(now);
        assert_eq!(saved.len(), 3);
        assert_eq!(
            saved.iter().map(|s| s.idle_ns).collect::<Vec<_>>(),
            [97 * S, 96 * S, 50 * S],
            "most idle first"
        );
        assert_eq!(saved[0].class, Class::TcpEstablished);
        assert_eq!((saved[0].packets, saved[0].bytes), (3, 172));

        // Into an empty table with another hash seed, at another clock.
        let mut u = SessionTable::new(16, 0, 99);
        let later = 5000 * S;
        for x in &saved {
            assert!(u.import(x, later, &T).unwrap().is_some());
        }
        u.check_invariants().unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u.counters.created, 3);
        for (key, dir) in [
            (lb_o, Dir::Forward),
            (lb_i.reversed(), Dir::Reverse),
            (dy_o, Dir::Forward),
            (dy_i.reversed(), Dir::Reverse),
            (id_o, Dir::Forward),
            (id_o.reversed(), Dir::Reverse),
        ] {
            let (i, d) = u.lookup(&key, later, &T).expect("found after import");
            assert_eq!(d, dir);
            let (j, _) = t.lookup(&key, now, &T).unwrap();
            let (a, b) = (u.get(i).unwrap(), t.get(j).unwrap());
            assert!(same_rewrite(a.rewrite(d), b.rewrite(d)), "{key:?}");
            assert_eq!(
                (a.outer, a.inner, a.kind, a.twice_nat, a.mapping, a.control),
                (b.outer, b.inner, b.kind, b.twice_nat, b.mapping, b.control)
            );
            assert_eq!(
                (a.class, a.tcp_seen, a.tcp_established, a.packets, a.bytes),
                (b.class, b.tcp_seen, b.tcp_established, b.packets, b.bytes)
            );
            assert_eq!(
                later - a.last_heard_ns,
                now - b.last_heard_ns,
                "same idle time"
            );
        }
        let (i, _) = u.lookup(&lb_o, later, &T).unwrap();
        assert_eq!(u.get(i).unwrap().class, Class::TcpEstablished);
        assert_eq!(
            u.lru_head[Class::TcpEstablished as usize],
            i,
            "on its class's list"
        );
        assert_eq!(u.lru_head[Class::TcpTransitory as usize], NONE);
        // A FIN still closes it: the TCP state came along.
        u.touch(i, Dir::Reverse, TCP_FIN | TCP_ACK, 52, later);
        assert_eq!(u.get(i).unwrap().class, Class::TcpTransitory);
        // The dynamic port is taken in the new table.
        assert!(u.key_in_use(&dy_i.reversed()));
        assert_eq!(dy, t.lookup(&dy_o, now, &T).unwrap().0);
    }

    #[test]
    fn import_skips_expired_refuses_collisions_and_full_tables() {
        let udp = |p: u16, idle_s: u64| SavedNatSession {
            outer: k(1, 2, p, 53, 17),
            inner: k(1, 3, p, 5353, 17),
            kind: SessionKind::LoadBalanced,
            twice_nat: false,
            mapping: 0,
            class: Class::Udp,
            tcp_seen: [0; 2],
            tcp_established: false,
            control: false,
            idle_ns: idle_s * S,
            packets: 1,
            bytes: 60,
        };
        let now = 1000 * S;
        // 10 slots, 20 % for control.
        let mut t = SessionTable::new(10, 20, 5);
        assert_eq!(
            t.import(&udp(1, 300), now, &T),
            Ok(None),
            "UDP times out at 300 s"
        );
        assert_eq!(t.import(&udp(1, 7000), now, &T), Ok(None));
        assert!(t.is_empty());
        assert_eq!(t.counters, SessionCounters::default(), "nothing created");
        // A claimed class that does not fit the protocol gets the protocol's: UDP, 300 s.
        let mut liar = udp(1, 299);
        liar.class = Class::TcpEstablished;
        let i = t.import(&liar, now, &T).unwrap().unwrap();
        assert_eq!(t.get(i).unwrap().class, Class::Udp);
        assert_eq!(t.import(&udp(1, 0), now, &T), Err(CreateError::Collision));
        for p in 2..9 {
            assert!(t.import(&udp(p, 1), now, &T).unwrap().is_some());
        }
        assert_eq!(t.len(), 8);
        assert_eq!(t.import(&udp(20, 1), now, &T), Err(CreateError::Full));
        assert_eq!(t.counters.refused_full, 1);
        // Control sessions still get the reserve.
        let mut ctl = udp(21, 1);
        ctl.control = true;
        assert!(t.import(&ctl, now, &T).unwrap().is_some());
        t.check_invariants().unwrap();
        // The one imported 299 s idle expires first, a second later.
        t.expire_some(now + S, &T, 10);
        assert_eq!(t.len(), 8);
        assert!(t.lookup(&liar.outer, now + S, &T).is_none());
        t.check_invariants().unwrap();
    }

    #[test]
    fn imported_sessions_expire_on_time_on_their_class_list() {
        let mut t = SessionTable::new(8, 0, 1);
        let tcp = SavedNatSession {
            outer: k(1, 2, 40000, 80, 6),
            inner: k(1, 3, 40000, 8080, 6),
            kind: SessionKind::LoadBalanced,
            twice_nat: false,
            mapping: 0,
            class: Class::TcpEstablished,
            tcp_seen: [TCP_SYN | TCP_ACK; 2],
            tcp_established: true,
            control: false,
            idle_ns: 7000 * S,
            packets: 10,
            bytes: 1000,
        };
        // A young clock (a data plane that just started) cannot go back 7000 s: the session
        // counts as idle since the clock's origin.
        let i = t.import(&tcp, 10 * S, &T).unwrap().unwrap();
        assert_eq!(t.get(i).unwrap().last_heard_ns, 0);
        t.delete(i);
        let now = 8000 * S;
        let i = t.import(&tcp, now, &T).unwrap().unwrap();
        assert_eq!(t.get(i).unwrap().last_heard_ns, 1000 * S);
        // Established: 7440 s after it was last heard, not 7440 s after the import.
        t.expire_some(now + 439 * S, &T, 10);
        assert_eq!(t.len(), 1);
        t.expire_some(now + 440 * S, &T, 10);
        assert!(t.is_empty());
        assert_eq!(t.counters.expired, 1);
        t.check_invariants().unwrap();
    }

    fn same_rewrite(a: &Rewrite, b: &Rewrite) -> bool {
        (a.src, a.dst, a.sport, a.dport, a.ip, a.l4) == (b.src, b.dst, b.sport, b.dport, b.ip, b.l4)
    }

    mod model {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Client port, backend port (collisions when two clients share both).
            Create(u16, u16),
            Delete(u16),
            Lookup(u16, bool),
            /// A packet of client `c`'s session (reply direction if true) with TCP flags.
            Touch(u16, bool, u8),
            Advance(u64),
            /// Export, the given seconds of downtime, import into a fresh table.
            Restart(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            // Mostly opening flags, so that many sessions get established before a restart.
            let flags = prop_oneof![
                1 => Just(TCP_SYN),
                4 => Just(TCP_SYN | TCP_ACK),
                2 => Just(TCP_ACK),
                1 => Just(TCP_FIN | TCP_ACK),
                1 => Just(TCP_RST),
            ];
            prop_oneof![
                4 => (0..40u16, 0..3u16).prop_map(|(c, b)| Op::Create(c, b)),
                1 => (0..40u16).prop_map(Op::Delete),
                3 => (0..40u16, any::<bool>()).prop_map(|(c, r)| Op::Lookup(c, r)),
                3 => (0..40u16, any::<bool>(), flags).prop_map(|(c, r, f)| Op::Touch(c, r, f)),
                1 => (0..200u64).prop_map(Op::Advance),
                1 => (0..400u64).prop_map(Op::Restart),
            ]
        }

        /// Both keys of every live session → its index and direction.
        type Model = HashMap<FlowKey, (u32, Dir)>;

        /// Even clients speak TCP, odd ones UDP (clients `c` and `c + 20` still collide).
        fn proto(c: u16) -> u8 {
            if c.is_multiple_of(2) {
                6
            } else {
                17
            }
        }

        fn outer(c: u16) -> FlowKey {
            k(0x0a01_0103, 0x0a60_0001, 40000 + c, 53, proto(c))
        }

        fn inner(c: u16, b: u16) -> FlowKey {
            k(0x0a01_0103, 0x0a14_0002, 40000 + c % 20, 5353 + b, proto(c))
        }

        /// Exports `t`, lets `down_s` seconds pass and imports into a fresh table (other hash
        /// seed), checking every session comes back identical unless it expired meanwhile;
        /// returns the new table and the model with its indices.
        fn restart(
            t: &SessionTable,
            model: &Model,
            now: u64,
            down_s: u64,
        ) -> Result<(SessionTable, Model), TestCaseError> {
            let saved = t.export(now);
            prop_assert_eq!(saved.len() as u32, t.len());
            prop_assert!(saved.windows(2).all(|w| w[0].idle_ns >= w[1].idle_ns));
            let later = now + down_s * S;
            let mut fresh = SessionTable::new(24, 0, 7 + down_s);
            let mut moved = HashMap::new();
            for x in &saved {
                let (old_i, _) = model[&x.outer];
                let old = *t.get(old_i).unwrap();
                let mut y = *x;
                y.idle_ns += down_s * S;
                match fresh.import(&y, later, &T) {
                    Ok(Some(i)) => {
                        prop_assert!(!old.expired(later, &T));
                        let s = fresh.get(i).unwrap();
                        prop_assert_eq!(
                            (s.outer, s.inner, s.kind, s.class, s.tcp_seen),
                            (old.outer, old.inner, old.kind, old.class, old.tcp_seen)
                        );
                        prop_assert_eq!(
                            (s.tcp_established, s.packets, s.bytes, s.last_heard_ns),
                            (
                                old.tcp_established,
                                old.packets,
                                old.bytes,
                                old.last_heard_ns
                            )
                        );
                        prop_assert!(same_rewrite(&s.fwd, &old.fwd));
                        prop_assert!(same_rewrite(&s.rev, &old.rev));
                        moved.insert(old_i, i);
                    }
                    Ok(None) => prop_assert!(old.expired(later, &T)),
                    Err(e) => prop_assert!(false, "import refused: {:?}", e),
                }
            }
            // Imported most idle first: every LRU list runs from the longest idle.
            for c in FREE_ORDER {
                let mut i = fresh.lru_head[c as usize];
                let mut last = 0;
                while i != NONE {
                    let s = fresh.get(i).unwrap();
                    prop_assert!(s.last_heard_ns >= last, "{:?} list out of order", c);
                    last = s.last_heard_ns;
                    i = s.next;
                }
            }
            let model = model
                .iter()
                .filter_map(|(key, &(i, dir))| moved.get(&i).map(|&n| (*key, (n, dir))))
                .collect();
            Ok((fresh, model))
        }

        proptest! {
            /// The table against a std HashMap of both keys of every live session, through
            /// creation (with key collisions), deletion, expiry on lookup and on a full table,
            /// TCP state changes and restarts (export, downtime, import into a fresh table).
            #[test]
            fn session_table_matches_a_hash_map(ops in proptest::collection::vec(op(), 1..300)) {
                let mut t = SessionTable::new(24, 0, 99);
                let mut model: HashMap<FlowKey, (u32, Dir)> = HashMap::new();
                let mut now = 0u64;
                for op in ops {
                    // Expiry the table may do on its own (lookups, room for a new session) is
                    // mirrored by dropping from the model what the table no longer has.
                    match op {
                        Op::Create(c, b) => {
                            let (o, i) = (outer(c), inner(c, b));
                            // A key held by a timed-out session is free: create deletes it.
                            let live = |key: &FlowKey| {
                                model
                                    .get(key)
                                    .is_some_and(|&(s, _)| !t.get(s).unwrap().expired(now, &T))
                            };
                            let clash = live(&o) || live(&i.reversed());
                            let r = t.create(o, i, SessionKind::LoadBalanced, false, 0, false, now, &T);
                            if clash {
                                prop_assert_eq!(r, Err(CreateError::Collision));
                            } else if let Ok(s) = r {
                                model.insert(o, (s, Dir::Forward));
                                model.insert(i.reversed(), (s, Dir::Reverse));
                            } else {
                                prop_assert_eq!(r, Err(CreateError::Full));
                                prop_assert_eq!(t.len(), 24);
                            }
                        }
                        Op::Delete(c) => {
                            if let Some(&(s, _)) = model.get(&outer(c)) {
                                t.delete(s);
                            }
                        }
                        Op::Lookup(c, reply) => {
                            let key = match (reply, model.get(&outer(c))) {
                                (true, Some(&(s, _))) => t.get(s).unwrap().inner.reversed(),
                                _ => outer(c),
                            };
                            let want = model
                                .get(&key)
                                .copied()
                                .filter(|&(s, _)| !t.get(s).unwrap().expired(now, &T));
                            let h = t.hash(&key);
                            let cand = t.candidate(h);
                            prop_assert_eq!(t.lookup_hashed(&key, h, cand, now, &T), want);
                        }
                        Op::Touch(c, reply, flags) => {
                            if let Some(&(s, _)) = model.get(&outer(c)) {
                                // The data path touches only what a lookup found alive.
                                if !t.get(s).unwrap().expired(now, &T) {
                                    let dir = if reply { Dir::Reverse } else { Dir::Forward };
                                    t.touch(s, dir, flags, 60, now);
                                }
                            }
                        }
                        Op::Advance(s) => now += s * S,
                        Op::Restart(down) => {
                            (t, model) = restart(&t, &model, now, down)?;
                            now += down * S;
                        }
                    }
                    if let Err(e) = t.check_invariants() {
                        prop_assert!(false, "{}", e);
                    }
                    model.retain(|key, &mut (s, dir)| {
                        t.get(s).is_some_and(|x| match dir {
                            Dir::Forward => x.outer == *key,
                            Dir::Reverse => x.inner.reversed() == *key,
                        })
                    });
                    // Sessions deleted to make room are gone from the model now; what is left
                    // must be exactly the table's content.
                    let live: Vec<(u32, &Session)> = t.iter().collect();
                    prop_assert_eq!(live.len() * 2, model.len());
                    prop_assert_eq!(t.index.len(), model.len());
                    for (s, sess) in live {
                        prop_assert_eq!(model.get(&sess.outer), Some(&(s, Dir::Forward)));
                        prop_assert_eq!(
                            model.get(&sess.inner.reversed()),
                            Some(&(s, Dir::Reverse))
                        );
                        prop_assert!(t.key_in_use(&sess.outer));
                    }
                }
            }
        }
    }

    #[test]
    fn rewrite_deltas_match_full_recompute() {
        let from = k(0x0a01_0103, 0x0a68_dd55, 46310, 80, 6);
        let to = k(0x0a01_0103, 0x0a14_0002, 46310, 8080, 6);
        let r = Rewrite::between(from, to);
        // The seed: IP checksum 0xe946 -> 0xc6ee, TCP 0xd22d -> 0x9095.
        assert_eq!(r.ip.apply(0xe946), 0xc6ee);
        assert_eq!(r.l4.apply(0xd22d), 0x9095);
        let back = Rewrite::between(to.reversed(), from.reversed());
        // The seed's reply: IP 0x25a3 -> 0x47fb, TCP 0xdab4 -> 0x1c4d.
        assert_eq!(back.ip.apply(0x25a3), 0x47fb);
        assert_eq!(back.l4.apply(0xdab4), 0x1c4d);
    }
}
