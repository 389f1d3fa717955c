//! Per-worker reflective sessions (SYSTEM.md 7.7, 7.8): a pre-allocated pool of sessions
//! addressed by slot index (the `rule <n>` a session hit prints), a hash index from the
//! direction-normalised 5-tuple to the slot, one FIFO per timeout class for expiry, and the
//! decision the ACL nodes take per packet.
//!
//! * **Key.** A session belongs to the interface it was created on. Its key is the 5-tuple as an
//!   *input* packet of the flow's initiator would carry it: an input packet keys as
//!   `(src, dst, sport, dport)`, an output packet as `(dst, src, dport, sport)`. So a session made
//!   on input of X passes the flow's further input packets on X and its replies on output of X,
//!   and nothing on other interfaces. ICMP queries key on the request type and the identifier; a
//!   reply maps to its request type, and an orientation bit keeps a reply travelling the wrong
//!   way from matching. Other ICMP, packets without ports and non-first fragments never use
//!   sessions: rules alone judge them.
//! * **Lookup.** Built for vectors, as the NAT session table (SYSTEM.md 11.1): the index is a
//!   [`FlowIndex`] (one cache line per bucket, sized once, no rehash) and a session is one cache
//!   line. A node prepares every packet of its frame first ([`AclState::prepare_into`]: session
//!   key and hash), prefetches their index buckets in a tight loop ([`AclState::prefetch_bucket`]),
//!   then picks and prefetches each packet's candidate session
//!   ([`AclState::prefetch_candidate`]), and only then decides the packets in order
//!   ([`AclState::decide_prepared`]), which verifies the candidates (an earlier packet of the
//!   frame may have created or deleted sessions), so the cache misses of a frame overlap instead
//!   of adding up. Interfaces without sessions (a stateless table, the other side of a flow) cost
//!   no hashing or index access at all: the table counts its sessions per interface.
//! * **Expiry.** The data path only stamps `last_active` and TCP flags; a lookup that finds an
//!   idle session deletes it and treats the packet as new. [`AclState::sync`] (once per main
//!   loop) checks a bounded number of FIFO heads per class: idle ones are deleted, active ones
//!   requeued. A class change (TCP handshake completed, FIN/RST seen) moves the session to the
//!   tail of its new class's FIFO.
//! * **Bounds.** `max_sessions` slots, reserved once (no allocation per packet); the last
//!   `reserved_for_control` % only for control traffic. When full: idle list heads are expired,
//!   then the oldest transient TCP session is recycled, else the new flow is denied and counted.
//! * **Policy changes.** Existing sessions stay valid when the ACLs change (as in VPP and the
//!   Kubernetes convention: established connections survive a policy update). Sessions of an
//!   interface that lost all its ACL bindings are removed: a per-interface epoch makes them stale
//!   at once (a later lookup deletes them, trace bit `40000000`) and a bounded sweep reclaims them.
//!   The worker owns the table alone, so a freed slot can be reused at once.

use foldhash::fast::RandomState;
use std::hash::BuildHasher;
use vecnet_flow_index::{advise_huge_pages, prefetch, FlowIndex};

use crate::classify::RuleRef;
use crate::config::{AclTimeouts, Action};
use crate::key::{pkt_flags, PacketKey, PROTO_ICMP, PROTO_TCP};
use crate::runtime::{AclTables, Direction};

/// "None" for slot links and indices.
pub const NONE: u32 = u32::MAX;

/// Trace bit: the packet matched an existing session.
pub const TRACE_SESSION_HIT: u32 = 0x8000_0000;
/// Trace bit: a stale session (its interface lost its ACLs meanwhile) was removed.
pub const TRACE_STALE_REMOVED: u32 = 0x4000_0000;
/// Trace bits `0001XXYY`: the session's timeout class changed from XX to YY.
pub const TRACE_CLASS_CHANGE: u32 = 0x0001_0000;

/// FIFO heads checked per class and main loop.
const SWEEP_HEADS_PER_CLASS: usize = 32;
/// Pool slots examined per main loop after a policy change.
const PURGE_SLOTS_PER_LOOP: usize = 1024;
/// FIFO heads tried per class when a new session finds the table full.
const RECLAIM_HEADS_PER_CLASS: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Timeout classes, numbered as the trace bits print them. The variant order is part of the
/// session file format (serde numbers variants in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum TimeoutClass {
    /// UDP and every other non-TCP protocol.
    UdpIdle = 1,
    /// TCP with SYN and ACK seen in both directions and no FIN or RST.
    TcpIdle = 2,
    /// TCP before the handshake completed, or after FIN/RST.
    TcpTransient = 3,
}

impl TimeoutClass {
    const ALL: [TimeoutClass; 3] = [
        TimeoutClass::UdpIdle,
        TimeoutClass::TcpIdle,
        TimeoutClass::TcpTransient,
    ];

    fn list(self) -> usize {
        self as usize - 1
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeoutClass::UdpIdle => "udp idle",
            TimeoutClass::TcpIdle => "tcp idle",
            TimeoutClass::TcpTransient => "tcp transient",
        }
    }

    /// The class of a session of `proto` that saw `seen` = `[output, input]` TCP flags.
    fn of(proto: u8, seen: [u8; 2]) -> Self {
        if proto != PROTO_TCP {
            return TimeoutClass::UdpIdle;
        }
        let m = TCP_RST | TCP_FIN | TCP_ACK | TCP_SYN;
        let est = TCP_ACK | TCP_SYN;
        if seen[0] & m == est && seen[1] & m == est {
            TimeoutClass::TcpIdle
        } else {
            TimeoutClass::TcpTransient
        }
    }

    #[inline]
    pub fn timeout_ns(self, t: &AclTimeouts) -> u64 {
        let s = match self {
            TimeoutClass::UdpIdle => t.udp_idle,
            TimeoutClass::TcpIdle => t.tcp_idle,
            TimeoutClass::TcpTransient => t.tcp_transient,
        };
        u64::from(s) * 1_000_000_000
    }
}

/// Direction-normalised session key (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct SessionKey {
    /// Initiator-side address << 32 | responder-side address.
    addrs: u64,
    /// Ports (ICMP: request type, identifier) << 32 | `sw_if_index`.
    ports_if: u64,
    /// Protocol << 8 | orientation.
    proto: u16,
}

/// The session key of `k` seen in `dir`, and whether such a packet may create a session; `None`
/// when the packet never uses sessions.
#[inline]
fn session_key(k: &PacketKey, dir: Direction) -> Option<(SessionKey, bool)> {
    if k.nonfirst_fragment() || !k.l4_valid() {
        return None;
    }
    let input = dir == Direction::Input;
    let (a, b, pa, pb) = if input {
        (k.src, k.dst, k.sport, k.dport)
    } else {
        (k.dst, k.src, k.dport, k.sport)
    };
    let (pa, pb, orient, creates) = if k.proto == PROTO_ICMP {
        // Request types and their replies: echo, timestamp, information, address mask.
        let (request, is_reply) = match k.sport {
            8 | 13 | 15 | 17 => (k.sport, false),
            0 => (8, true),
            14 => (13, true),
            16 => (15, true),
            18 => (17, true),
            _ => return None,
        };
        // A request travelling in `dir` and its reply travelling the other way share an
        // orientation; a "reply" travelling the request's way does not.
        let orient = u16::from(!input) ^ u16::from(is_reply);
        (request, k.icmp_id, orient, !is_reply)
    } else {
        (pa, pb, 0, true)
    };
    Some((
        SessionKey {
            addrs: u64::from(a) << 32 | u64::from(b),
            ports_if: u64::from(pa) << 48 | u64::from(pb) << 32 | u64::from(k.sw_if_index),
            proto: u16::from(k.proto) << 8 | orient,
        },
        creates,
    ))
}

/// One session: one cache line, all a hit reads (key, timestamps, TCP flags, class, epoch) and
/// all the FIFOs need. The key is stored flat (a nested [`SessionKey`] would pad to 24 bytes);
/// the creating packet's addresses and source port are not stored but rebuilt from the key
/// ([`Session::origin`]): only its destination port (ICMP: the code) is not in the key.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Session {
    /// [`SessionKey::addrs`].
    addrs: u64,
    /// [`SessionKey::ports_if`].
    ports_if: u64,
    last_active_ns: u64,
    enqueue_ns: u64,
    created_ns: u64,
    prev: u32,
    next: u32,
    if_epoch: u32,
    /// [`SessionKey::proto`]: protocol << 8 | orientation.
    proto_orient: u16,
    /// The creating packet's destination port (ICMP: its code).
    dport: u16,
    /// TCP flags seen, `[output, input]`.
    tcp_seen: [u8; 2],
    class: TimeoutClass,
    control: bool,
    in_use: bool,
    created_on_input: bool,
}

const _: () = assert!(std::mem::size_of::<Session>() == 64);

impl Session {
    #[inline]
    fn key(&self) -> SessionKey {
        SessionKey {
            addrs: self.addrs,
            ports_if: self.ports_if,
            proto: self.proto_orient,
        }
    }

    #[inline]
    fn matches(&self, k: &SessionKey) -> bool {
        self.addrs == k.addrs && self.ports_if == k.ports_if && self.proto_orient == k.proto
    }

    #[inline]
    fn proto(&self) -> u8 {
        (self.proto_orient >> 8) as u8
    }

    #[inline]
    fn sw_if_index(&self) -> u32 {
        self.ports_if as u32
    }

    /// The creating packet's `(src, dst, sport, dport)`: `session_key` run backwards. Only
    /// requests create ICMP sessions, so the key's request type is the packet's type.
    fn origin(&self) -> (u32, u32, u16, u16) {
        let (a, b) = ((self.addrs >> 32) as u32, self.addrs as u32);
        let (pa, pb) = ((self.ports_if >> 48) as u16, (self.ports_if >> 32) as u16);
        let input = self.created_on_input;
        let (src, dst) = if input { (a, b) } else { (b, a) };
        let sport = if input || self.proto() == PROTO_ICMP {
            pa
        } else {
            pb
        };
        (src, dst, sport, self.dport)
    }
}

/// Counters of the session table (`show acl-plugin sessions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclCounters {
    pub adds: u64,
    pub dels: u64,
    /// By `sw_if_index`.
    pub adds_by_if: Vec<u64>,
    pub dels_by_if: Vec<u64>,
    /// New reflective flows refused because the table (or its non-control part) was full.
    pub refused_full: u64,
    /// Sessions deleted because they were idle past their timeout.
    pub expired: u64,
    /// Transient TCP sessions recycled to make room.
    pub recycled: u64,
    /// Sessions removed because their interface lost its ACLs.
    pub stale_removed: u64,
    /// Active sessions moved to the tail of their FIFO by the sweep.
    pub requeued: u64,
}

/// What the ACL node does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// 0 deny, 1 permit, 2 permit + new session, 3 existing session.
    pub action: u8,
    /// Matched ACL, or [`NONE`] (`-1`) on a session hit or no match.
    pub acl_index: u32,
    /// Matched rule, the session index on a session hit, or [`NONE`].
    pub rule_index: u32,
    pub trace_bits: u32,
    /// The session created or hit, or [`NONE`].
    pub session: u32,
    /// The session's timeout class changed (VPP's `restart session timer`).
    pub class_changed: bool,
    /// Denied only because the session table was full.
    pub refused_full: bool,
}

impl Verdict {
    const NO_MATCH: Verdict = Verdict {
        action: 0,
        acl_index: NONE,
        rule_index: NONE,
        trace_bits: 0,
        session: NONE,
        class_changed: false,
        refused_full: false,
    };
}

/// A found session after a packet's lookup.
enum Refresh {
    /// Its interface lost its ACLs meanwhile: to be deleted.
    Stale,
    /// Idle past its timeout: to be deleted.
    Idle,
    /// Refreshed by the packet; its class change, if any.
    Live(Option<(TimeoutClass, TimeoutClass)>),
}

/// What [`AclState::prepare`] found out about one packet, for the later passes over its frame.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    key: SessionKey,
    /// The key's hash (from [`Prepared::LOOKUP`] on).
    hash: u64,
    /// The session the index bucket pointed at ([`NONE`]: none): a hint, verified on use.
    candidate: u32,
    /// How far `prepare` got: [`Prepared::DEFERRED`] .. [`Prepared::CREATE`].
    state: u8,
}

impl Prepared {
    /// Nothing computed: the interface had no sessions, so the session key is worked out only
    /// if the decision needs it (a session made meanwhile, a permit+reflect rule).
    const DEFERRED: u8 = 0;
    /// The packet never uses sessions.
    const NO_KEY: u8 = 1;
    /// Key and hash computed; the packet may not create a session (an ICMP reply).
    const LOOKUP: u8 = 2;
    /// Key and hash computed; the packet may create a session.
    const CREATE: u8 = 3;

    /// Nothing prepared yet.
    pub const EMPTY: Prepared = Prepared {
        key: SessionKey {
            addrs: 0,
            ports_if: 0,
            proto: 0,
        },
        hash: 0,
        candidate: NONE,
        state: Self::DEFERRED,
    };

    /// Whether the packet has a key hash (and so a bucket and candidate to prefetch).
    #[inline]
    pub fn has_hash(&self) -> bool {
        self.state >= Self::LOOKUP
    }
}

impl Default for Prepared {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// A session as `show acl-plugin sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub index: u32,
    pub sw_if_index: u32,
    pub created_on_input: bool,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    /// `[output, input]`.
    pub tcp_seen: [u8; 2],
    pub class: TimeoutClass,
    pub control: bool,
    pub created_ns: u64,
    pub last_active_ns: u64,
    /// The session's interface lost its ACLs; it is removed on the next lookup or sweep.
    pub stale: bool,
}

/// A session as a graceful restart carries it over: the packet that created it (from which its
/// key is rebuilt exactly as `session_key` made it), its TCP state and its times, relative to
/// the export (the data-plane clock starts anew with the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedAclSession {
    pub sw_if_index: u32,
    pub created_on_input: bool,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    /// ICMP: the request's type and code.
    pub sport: u16,
    pub dport: u16,
    /// The ICMP query's identifier; 0 for other protocols.
    pub icmp_id: u16,
    /// TCP flags seen, `[output, input]`.
    pub tcp_seen: [u8; 2],
    pub class: TimeoutClass,
    pub control: bool,
    /// Time since the last packet.
    pub idle_ns: u64,
    /// Time since the session was created.
    pub age_ns: u64,
}

/// Why [`AclState::import`] could not rebuild a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the session table (or its part for non-control traffic) is full")]
    Full,
    #[error("a session with the same key exists")]
    Collision,
    #[error("not a session any packet could have created")]
    Invalid,
}

/// Per-worker ACL state: the reflective session table and its counters.
pub struct AclState {
    /// The pool: `capacity` slots reserved (address space until used, huge pages advised);
    /// `sessions.len()` is the high-water mark, slots below it are in use or on `free`.
    sessions: Vec<Session>,
    free: Vec<u32>,
    /// Key hash → slot, sized for `capacity` sessions.
    index: FlowIndex,
    hasher: RandomState,
    heads: [u32; 3],
    tails: [u32; 3],
    in_use: u32,
    /// By `sw_if_index`: sessions in use (stale ones included). A packet of an interface
    /// without sessions skips the lookup.
    live_by_if: Vec<u32>,
    /// Slots reserved (the table never grows past this on the data path).
    capacity: u32,
    generation: u64,
    /// Per `sw_if_index`: bumped when the interface loses all its ACLs.
    if_epoch: Vec<u32>,
    was_bound: Vec<bool>,
    purge_cursor: usize,
    now_ns: u64,
    pub counters: AclCounters,
}

impl std::fmt::Debug for AclState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclState")
            .field("sessions", &self.in_use)
            .field("capacity", &self.capacity)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Default for AclState {
    fn default() -> Self {
        Self::new(&crate::config::AclConfig::default())
    }
}

impl AclState {
    /// An empty table. Nothing is reserved until [`AclState::sync`] sees tables with an ACL
    /// bound somewhere, so a data plane without policies pays no memory for sessions.
    pub fn new(_config: &crate::config::AclConfig) -> Self {
        Self {
            sessions: Vec::new(),
            free: Vec::new(),
            index: FlowIndex::with_buckets(1),
            hasher: RandomState::default(),
            heads: [NONE; 3],
            tails: [NONE; 3],
            in_use: 0,
            live_by_if: Vec::new(),
            capacity: 0,
            generation: u64::MAX,
            if_epoch: Vec::new(),
            was_bound: Vec::new(),
            purge_cursor: usize::MAX,
            now_ns: 0,
            counters: AclCounters::default(),
        }
    }

    /// Called once per main loop with the current tables: follows a table change (reserves the
    /// pool, marks sessions of unbound interfaces stale), then expires a bounded number of
    /// sessions.
    pub fn sync(&mut self, tables: &AclTables, now_ns: u64) {
        self.now_ns = now_ns;
        if self.generation != tables.generation() {
            self.generation = tables.generation();
            self.follow_tables(tables);
        }
        if self.in_use > 0 {
            self.sweep(&tables.config.timeouts, now_ns);
        }
        if self.purge_cursor != usize::MAX {
            self.purge_step();
        }
    }

    fn follow_tables(&mut self, tables: &AclTables) {
        let span = tables.interface_span().max(self.was_bound.len());
        self.if_epoch.resize(span, 0);
        self.was_bound.resize(span, false);
        if self.live_by_if.len() < span {
            self.live_by_if.resize(span, 0);
        }
        let c = &mut self.counters;
        if c.adds_by_if.len() < span {
            c.adds_by_if.resize(span, 0);
            c.dels_by_if.resize(span, 0);
        }
        let mut lost = false;
        for sw in 0..span {
            let bound = tables.is_bound(sw as u32);
            if self.was_bound[sw] && !bound {
                self.if_epoch[sw] = self.if_epoch[sw].wrapping_add(1);
                lost = true;
            }
            self.was_bound[sw] = bound;
        }
        if lost && self.in_use > 0 {
            self.purge_cursor = 0;
        }
        if tables.any_bound() {
            self.reserve(tables.config.max_sessions);
        }
    }

    /// Reserves room for `max` sessions so that the data path never allocates: the pool and
    /// free list reserved (the pool's pages are touched only as sessions use them), the index
    /// built for `max` entries with its pages faulted in. Growing rebuilds the index from the
    /// sessions in use (the control path's cost, never the data path's).
    fn reserve(&mut self, max: u32) {
        if max <= self.capacity {
            return;
        }
        let max_us = max as usize;
        self.sessions
            .reserve_exact(max_us.saturating_sub(self.sessions.len()));
        advise_huge_pages(
            self.sessions.as_ptr() as usize,
            self.sessions.capacity() * std::mem::size_of::<Session>(),
        );
        self.free
            .reserve_exact(max_us.saturating_sub(self.free.len()));
        let mut index = FlowIndex::with_capacity(max_us);
        for (i, s) in self.sessions.iter().enumerate() {
            if s.in_use {
                // Cannot fail: the index holds more than `max` >= the sessions in use.
                let _ = index.insert(self.hasher.hash_one(s.key()), i as u32);
            }
        }
        self.index = index;
        self.capacity = max;
    }

    /// Sessions in use.
    pub fn len(&self) -> u32 {
        self.in_use
    }

    pub fn is_empty(&self) -> bool {
        self.in_use == 0
    }

    /// Slots reserved.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Time of the last [`AclState::sync`] (what `show` measures ages against).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Sessions per timeout class, in [`TimeoutClass`] order.
    pub fn class_counts(&self) -> [u32; 3] {
        let mut n = [0; 3];
        for s in self.sessions.iter().filter(|s| s.in_use) {
            n[s.class.list()] += 1;
        }
        n
    }

    /// `clear acl-plugin sessions`: empties the table (replies are judged by rules again).
    pub fn clear_sessions(&mut self) {
        for s in self.sessions.iter().filter(|s| s.in_use) {
            if let Some(d) = self.counters.dels_by_if.get_mut(s.sw_if_index() as usize) {
                *d += 1;
            }
        }
        self.counters.dels += u64::from(self.in_use);
        self.sessions.clear();
        self.free.clear();
        self.index.clear();
        self.live_by_if.fill(0);
        self.heads = [NONE; 3];
        self.tails = [NONE; 3];
        self.in_use = 0;
        self.purge_cursor = usize::MAX;
    }

    /// The sessions in use, by slot.
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_use)
            .map(|(i, s)| {
                let (src, dst, sport, dport) = s.origin();
                SessionInfo {
                    index: i as u32,
                    sw_if_index: s.sw_if_index(),
                    created_on_input: s.created_on_input,
                    proto: s.proto(),
                    src,
                    dst,
                    sport,
                    dport,
                    tcp_seen: s.tcp_seen,
                    class: s.class,
                    control: s.control,
                    created_ns: s.created_ns,
                    last_active_ns: s.last_active_ns,
                    stale: self.is_stale(s),
                }
            })
    }

    #[inline]
    fn is_stale(&self, s: &Session) -> bool {
        self.if_epoch
            .get(s.sw_if_index() as usize)
            .is_some_and(|&e| e != s.if_epoch)
    }

    #[inline]
    fn hash(&self, k: &SessionKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// Whether any session (stale ones included) belongs to `sw_if_index`.
    #[inline]
    fn has_sessions_on(&self, sw_if_index: u32) -> bool {
        self.live_by_if
            .get(sw_if_index as usize)
            .is_some_and(|&n| n > 0)
    }

    /// First pass over a frame: where the packet's interface has sessions, its session key and
    /// the key's hash (the other passes need nothing else).
    #[inline]
    pub fn prepare(&self, key: &PacketKey, dir: Direction) -> Prepared {
        let mut p = Prepared::EMPTY;
        self.prepare_into(key, dir, &mut p);
        p
    }

    /// [`AclState::prepare`] into the node's scratch: writes only what the state needs (the
    /// other fields are not read in that state).
    #[inline]
    pub fn prepare_into(&self, key: &PacketKey, dir: Direction, p: &mut Prepared) {
        if !self.has_sessions_on(key.sw_if_index) {
            p.state = Prepared::DEFERRED;
            return;
        }
        match session_key(key, dir) {
            None => p.state = Prepared::NO_KEY,
            Some((k, creates)) => {
                p.key = k;
                p.hash = self.hash(&k);
                p.candidate = NONE;
                p.state = if creates {
                    Prepared::CREATE
                } else {
                    Prepared::LOOKUP
                };
            }
        }
    }

    /// Starts loading the index bucket of a prepared packet.
    #[inline]
    pub fn prefetch_bucket(&self, p: &Prepared) {
        if p.has_hash() {
            self.index.prefetch(p.hash);
        }
    }

    /// Second pass over a frame (buckets in cache by now): the candidate session of a prepared
    /// packet, which starts loading.
    #[inline]
    pub fn prefetch_candidate(&self, p: &mut Prepared) {
        if !p.has_hash() {
            return;
        }
        if let Some(i) = self.index.candidate(p.hash) {
            p.candidate = i;
            // A hint only: the slot may be past the pool (a prefetch never faults).
            prefetch(self.sessions.as_ptr().wrapping_add(i as usize));
        }
    }

    /// Decides what to do with a packet of (`key.sw_if_index`, `dir`): session hit, else the
    /// first matching rule, creating a session for permit+reflect. `is_control` is asked only
    /// when a session is about to be created (it may look at the FIB).
    #[inline]
    pub fn decide(
        &mut self,
        tables: &AclTables,
        key: &PacketKey,
        dir: Direction,
        now_ns: u64,
        is_control: impl FnOnce() -> bool,
    ) -> Verdict {
        let p = self.prepare(key, dir);
        self.decide_prepared(tables, key, &p, dir, now_ns, is_control)
    }

    /// [`AclState::decide`] for a packet prepared by [`AclState::prepare`] (and
    /// [`AclState::prefetch_candidate`]) with this table, in frame order (third pass).
    #[inline]
    pub fn decide_prepared(
        &mut self,
        tables: &AclTables,
        key: &PacketKey,
        p: &Prepared,
        dir: Direction,
        now_ns: u64,
        is_control: impl FnOnce() -> bool,
    ) -> Verdict {
        let mut v = Verdict::NO_MATCH;
        // Asked now, not at `prepare`: an earlier packet of the frame may have made the first
        // session of the interface.
        if self.has_sessions_on(key.sw_if_index) {
            let found = match p.state {
                Prepared::LOOKUP | Prepared::CREATE => self.find(&p.key, p.hash, p.candidate),
                Prepared::DEFERRED => {
                    session_key(key, dir).and_then(|(k, _)| self.find(&k, self.hash(&k), NONE))
                }
                _ => None,
            };
            if let Some(i) = found {
                match self.refresh(i, key, dir, now_ns, &tables.config.timeouts) {
                    Refresh::Stale => {
                        self.delete(i);
                        self.counters.stale_removed += 1;
                        v.trace_bits |= TRACE_STALE_REMOVED;
                    }
                    Refresh::Idle => {
                        self.delete(i);
                        self.counters.expired += 1;
                    }
                    Refresh::Live(change) => {
                        v.action = 3;
                        v.rule_index = i;
                        v.session = i;
                        v.trace_bits |= TRACE_SESSION_HIT;
                        if let Some((old, new)) = change {
                            v.class_changed = true;
                            v.trace_bits |= TRACE_CLASS_CHANGE | (old as u32) << 8 | new as u32;
                        }
                        return v;
                    }
                }
            }
        }
        let Some(RuleRef {
            acl_index,
            rule_index,
            action,
        }) = tables.classify(key.sw_if_index, dir, key)
        else {
            return v;
        };
        v.acl_index = acl_index;
        v.rule_index = rule_index;
        v.action = match action {
            Action::Deny => 0,
            Action::Permit => 1,
            Action::PermitReflect => {
                let sk = match p.state {
                    Prepared::LOOKUP | Prepared::CREATE => {
                        Some((p.key, p.state == Prepared::CREATE, p.hash))
                    }
                    Prepared::DEFERRED => {
                        session_key(key, dir).map(|(k, creates)| (k, creates, self.hash(&k)))
                    }
                    _ => None,
                };
                match sk {
                    Some((k, true, h)) => {
                        // Asked here, in line, so that the nodes' closure costs nothing unless
                        // a session is made.
                        let control = is_control();
                        match self.create(tables, k, h, key, dir, now_ns, control) {
                            Some(i) => {
                                v.session = i;
                                2
                            }
                            None => {
                                v.refused_full = true;
                                0
                            }
                        }
                    }
                    // Packets that never use sessions are simply permitted.
                    _ => 1,
                }
            }
        };
        v
    }

    /// What a lookup found in slot `i` and, for a live session, the packet's refresh of it
    /// (one access to the session for the three checks).
    #[inline]
    fn refresh(
        &mut self,
        i: u32,
        key: &PacketKey,
        dir: Direction,
        now_ns: u64,
        t: &AclTimeouts,
    ) -> Refresh {
        let Some(s) = self.sessions.get_mut(i as usize) else {
            return Refresh::Idle;
        };
        if self
            .if_epoch
            .get(s.sw_if_index() as usize)
            .is_some_and(|&e| e != s.if_epoch)
        {
            return Refresh::Stale;
        }
        if now_ns >= s.last_active_ns.saturating_add(s.class.timeout_ns(t)) {
            return Refresh::Idle;
        }
        s.last_active_ns = now_ns;
        if key.tcp_flags_valid() {
            s.tcp_seen[usize::from(dir == Direction::Input)] |= key.tcp_flags;
        }
        let (old, new) = (s.class, TimeoutClass::of(s.proto(), s.tcp_seen));
        if old == new {
            return Refresh::Live(None);
        }
        self.unlink(i);
        if let Some(s) = self.sessions.get_mut(i as usize) {
            s.class = new;
        }
        self.push_tail(i, now_ns);
        Refresh::Live(Some((old, new)))
    }

    /// Whether slot `i` holds a live session of key `k`.
    #[inline]
    fn is_key(&self, i: u32, k: &SessionKey) -> bool {
        self.sessions
            .get(i as usize)
            .is_some_and(|s| s.in_use && s.matches(k))
    }

    /// The slot of key `k` (hash `h`); a verified `candidate` skips the index.
    #[inline]
    fn find(&self, k: &SessionKey, h: u64, candidate: u32) -> Option<u32> {
        if candidate != NONE && self.is_key(candidate, k) {
            return Some(candidate);
        }
        self.index.find(h, |i| self.is_key(i, k))
    }

    #[inline]
    fn is_idle(&self, i: u32, t: &AclTimeouts, now_ns: u64) -> bool {
        self.sessions
            .get(i as usize)
            .is_some_and(|s| now_ns >= s.last_active_ns.saturating_add(s.class.timeout_ns(t)))
    }

    /// Out of line: the hit path stays small (a new flow pays one call).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn create(
        &mut self,
        tables: &AclTables,
        k: SessionKey,
        hash: u64,
        key: &PacketKey,
        dir: Direction,
        now_ns: u64,
        control: bool,
    ) -> Option<u32> {
        if !self.make_room(tables, control, now_ns) {
            return None;
        }
        let epoch = self
            .if_epoch
            .get(key.sw_if_index as usize)
            .copied()
            .unwrap_or(0);
        let input = dir == Direction::Input;
        let mut tcp_seen = [0u8; 2];
        if key.tcp_flags_valid() {
            tcp_seen[usize::from(input)] = key.tcp_flags;
        }
        let s = Session {
            addrs: k.addrs,
            ports_if: k.ports_if,
            last_active_ns: now_ns,
            enqueue_ns: now_ns,
            created_ns: now_ns,
            prev: NONE,
            next: NONE,
            if_epoch: epoch,
            proto_orient: k.proto,
            dport: key.dport,
            tcp_seen,
            class: TimeoutClass::of(key.proto, tcp_seen),
            control,
            in_use: true,
            created_on_input: input,
        };
        let i = self.insert(s, hash, now_ns);
        if i.is_none() {
            self.counters.refused_full += 1;
        }
        i
    }

    /// Whether a session may be added, after freeing idle FIFO heads or recycling a transient
    /// TCP session if the table (or, for non-control traffic, its unreserved part) is full.
    #[inline]
    fn make_room(&mut self, tables: &AclTables, control: bool, now_ns: u64) -> bool {
        let limit = tables.config.max_sessions.min(self.capacity);
        let reserve = (u64::from(limit) * u64::from(tables.config.reserved_for_control.min(100))
            / 100) as u32;
        let allowed = if control { limit } else { limit - reserve };
        if self.in_use >= allowed {
            self.reclaim(&tables.config.timeouts, now_ns);
            if self.in_use >= allowed {
                self.recycle_transient(control);
            }
            if self.in_use >= allowed {
                self.counters.refused_full += 1;
                return false;
            }
        }
        true
    }

    /// Adds `s` of key hash `hash` (room made by [`Self::make_room`], key not in the index) at
    /// the tail of its class's FIFO; returns its slot. `None` only if the index refuses it, which
    /// cannot happen at the sized capacity.
    #[inline]
    fn insert(&mut self, s: Session, hash: u64, now_ns: u64) -> Option<u32> {
        let sw = s.sw_if_index() as usize;
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.sessions.get_mut(i as usize) {
                    *slot = s;
                }
                i
            }
            None => {
                // `in_use < limit <= capacity` and no free slot: the pool has room to push
                // within its reservation.
                self.sessions.push(s);
                (self.sessions.len() - 1) as u32
            }
        };
        if self.index.insert(hash, i).is_err() {
            if let Some(slot) = self.sessions.get_mut(i as usize) {
                slot.in_use = false;
            }
            self.free.push(i);
            return None;
        }
        if sw >= self.live_by_if.len() {
            // Only when sessions are made with tables `sync` never saw (tests driving `decide`
            // directly): the data plane syncs before every main loop.
            self.live_by_if.resize(sw + 1, 0);
        }
        self.live_by_if[sw] += 1;
        self.in_use += 1;
        self.push_tail(i, now_ns);
        self.counters.adds += 1;
        if let Some(a) = self.counters.adds_by_if.get_mut(sw) {
            *a += 1;
        }
        Some(i)
    }

    /// Every session in use that is not stale, most idle first: imported in this order, each
    /// FIFO comes back ordered by last activity, so the sweep finds idle sessions at the heads.
    pub fn export(&self, now_ns: u64) -> Vec<SavedAclSession> {
        let mut out: Vec<SavedAclSession> = self
            .sessions
            .iter()
            .filter(|s| s.in_use && !self.is_stale(s))
            .map(|s| {
                let (src, dst, sport, dport) = s.origin();
                SavedAclSession {
                    sw_if_index: s.sw_if_index(),
                    created_on_input: s.created_on_input,
                    proto: s.proto(),
                    src,
                    dst,
                    sport,
                    dport,
                    // The creating packet's identifier lives only in the key (see `session_key`).
                    icmp_id: if s.proto() == PROTO_ICMP {
                        (s.ports_if >> 32) as u16
                    } else {
                        0
                    },
                    tcp_seen: s.tcp_seen,
                    class: s.class,
                    control: s.control,
                    idle_ns: now_ns.saturating_sub(s.last_active_ns),
                    age_ns: now_ns.saturating_sub(s.created_ns),
                }
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.idle_ns));
        out
    }

    /// Rebuilds an exported session at the tail of its class's FIFO, under the same capacity
    /// and control-reserve rules as a new flow's. `Ok(false)`, nothing added: it expired
    /// meanwhile, or its interface has no ACL bound in `tables` (it would be stale at once).
    /// Works before the first [`AclState::sync`] with `tables`: the pool is reserved here then.
    /// A clock younger than the session's idle time (a data plane that just started) makes it
    /// look idle since the clock's origin only.
    pub fn import(
        &mut self,
        tables: &AclTables,
        s: &SavedAclSession,
        now_ns: u64,
    ) -> Result<bool, ImportError> {
        if self.generation != tables.generation() {
            self.generation = tables.generation();
            self.follow_tables(tables);
        }
        if !tables.is_bound(s.sw_if_index) {
            return Ok(false);
        }
        // The class follows from the flags seen; a file that says otherwise is not trusted.
        let class = TimeoutClass::of(s.proto, s.tcp_seen);
        if class != s.class {
            return Err(ImportError::Invalid);
        }
        if s.idle_ns >= class.timeout_ns(&tables.config.timeouts) {
            return Ok(false);
        }
        let dir = if s.created_on_input {
            Direction::Input
        } else {
            Direction::Output
        };
        let creator = PacketKey {
            src: s.src,
            dst: s.dst,
            sport: s.sport,
            dport: s.dport,
            proto: s.proto,
            tcp_flags: 0,
            flags: pkt_flags::L4_VALID
                | if s.created_on_input {
                    pkt_flags::INPUT
                } else {
                    0
                },
            sw_if_index: s.sw_if_index,
            icmp_id: s.icmp_id,
        };
        let Some((key, true)) = session_key(&creator, dir) else {
            return Err(ImportError::Invalid);
        };
        let hash = self.hash(&key);
        if self.find(&key, hash, NONE).is_some() {
            return Err(ImportError::Collision);
        }
        if !self.make_room(tables, s.control, now_ns) {
            return Err(ImportError::Full);
        }
        let epoch = self
            .if_epoch
            .get(s.sw_if_index as usize)
            .copied()
            .unwrap_or(0);
        let session = Session {
            addrs: key.addrs,
            ports_if: key.ports_if,
            last_active_ns: now_ns.saturating_sub(s.idle_ns),
            enqueue_ns: now_ns,
            created_ns: now_ns.saturating_sub(s.age_ns),
            prev: NONE,
            next: NONE,
            if_epoch: epoch,
            proto_orient: key.proto,
            dport: s.dport,
            tcp_seen: s.tcp_seen,
            class,
            control: s.control,
            in_use: true,
            created_on_input: s.created_on_input,
        };
        match self.insert(session, hash, now_ns) {
            Some(_) => Ok(true),
            None => {
                self.counters.refused_full += 1;
                Err(ImportError::Full)
            }
        }
    }

    /// Frees idle sessions at the FIFO heads (a few per class).
    fn reclaim(&mut self, t: &AclTimeouts, now_ns: u64) {
        for c in TimeoutClass::ALL {
            for _ in 0..RECLAIM_HEADS_PER_CLASS {
                let h = self.heads[c.list()];
                if h == NONE || !self.is_idle(h, t, now_ns) {
                    break;
                }
                self.delete(h);
                self.counters.expired += 1;
            }
        }
    }

    /// Recycles the oldest transient TCP session; a non-control flow never evicts a control
    /// session.
    fn recycle_transient(&mut self, control: bool) {
        let h = self.heads[TimeoutClass::TcpTransient.list()];
        let Some(s) = self.sessions.get(h as usize) else {
            return;
        };
        if s.control && !control {
            return;
        }
        self.delete(h);
        self.counters.recycled += 1;
    }

    /// Deletes session `i`: unlinks it from its FIFO and the index, frees the slot.
    fn delete(&mut self, i: u32) {
        let Some(s) = self.sessions.get(i as usize) else {
            return;
        };
        if !s.in_use {
            return;
        }
        // The hash is recomputed rather than stored: deletions are rare next to hits, and the
        // session stays one cache line.
        let (hash, sw) = (self.hash(&s.key()), s.sw_if_index() as usize);
        self.unlink(i);
        self.index.remove(hash, i);
        if let Some(s) = self.sessions.get_mut(i as usize) {
            s.in_use = false;
        }
        if let Some(n) = self.live_by_if.get_mut(sw) {
            *n -= 1;
        }
        self.free.push(i);
        self.in_use -= 1;
        self.counters.dels += 1;
        if let Some(d) = self.counters.dels_by_if.get_mut(sw) {
            *d += 1;
        }
    }

    fn push_tail(&mut self, i: u32, now_ns: u64) {
        let Some(s) = self.sessions.get_mut(i as usize) else {
            return;
        };
        let l = s.class.list();
        s.enqueue_ns = now_ns;
        s.next = NONE;
        s.prev = self.tails[l];
        let prev = self.tails[l];
        if let Some(p) = self.sessions.get_mut(prev as usize) {
            p.next = i;
        }
        self.tails[l] = i;
        if self.heads[l] == NONE {
            self.heads[l] = i;
        }
    }

    fn unlink(&mut self, i: u32) {
        let Some(s) = self.sessions.get(i as usize) else {
            return;
        };
        let (l, prev, next) = (s.class.list(), s.prev, s.next);
        match self.sessions.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.heads[l] = next,
        }
        match self.sessions.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tails[l] = prev,
        }
        if let Some(s) = self.sessions.get_mut(i as usize) {
            s.prev = NONE;
            s.next = NONE;
        }
    }

    /// Checks a bounded number of FIFO heads per class: idle sessions are deleted, sessions
    /// active since they were queued go to the tail. Heads that are not due end the class's
    /// check (the FIFO is ordered by enqueue time).
    fn sweep(&mut self, t: &AclTimeouts, now_ns: u64) {
        for c in TimeoutClass::ALL {
            let timeout = c.timeout_ns(t);
            for _ in 0..SWEEP_HEADS_PER_CLASS {
                let h = self.heads[c.list()];
                let Some(s) = self.sessions.get(h as usize) else {
                    break;
                };
                if self.is_stale(s) {
                    self.delete(h);
                    self.counters.stale_removed += 1;
                } else if now_ns >= s.last_active_ns.saturating_add(timeout) {
                    self.delete(h);
                    self.counters.expired += 1;
                } else if now_ns >= s.enqueue_ns.saturating_add(timeout) {
                    self.unlink(h);
                    self.push_tail(h, now_ns);
                    self.counters.requeued += 1;
                } else {
                    break;
                }
            }
        }
    }

    /// One bounded step of removing the sessions of interfaces that lost their ACLs.
    fn purge_step(&mut self) {
        let end = (self.purge_cursor + PURGE_SLOTS_PER_LOOP).min(self.sessions.len());
        for i in self.purge_cursor..end {
            let stale = self
                .sessions
                .get(i)
                .is_some_and(|s| s.in_use && self.is_stale(s));
            if stale {
                self.delete(i as u32);
                self.counters.stale_removed += 1;
            }
        }
        self.purge_cursor = if end >= self.sessions.len() {
            usize::MAX
        } else {
            end
        };
    }
}

#[cfg(test)]
impl AclState {
    /// The structural invariants: every session in use on exactly the FIFO of its class, links
    /// consistent, enqueue times in order along each FIFO, each found in the index under its
    /// key and slot (through the index alone, no candidate), the per-interface counts right,
    /// and the free list and sessions in use partitioning the pool.
    fn check_invariants(&self) -> Result<(), String> {
        let mut listed = vec![false; self.sessions.len()];
        for c in TimeoutClass::ALL {
            let (mut prev, mut i, mut t) = (NONE, self.heads[c.list()], 0);
            while i != NONE {
                let s = self
                    .sessions
                    .get(i as usize)
                    .ok_or(format!("{c:?}: link to {i} past the pool"))?;
                if !s.in_use || s.class != c || s.prev != prev || listed[i as usize] {
                    return Err(format!("{c:?}: session {i} misplaced: {s:?}"));
                }
                if s.enqueue_ns < t {
                    return Err(format!(
                        "{c:?}: session {i} enqueued before its predecessor"
                    ));
                }
                listed[i as usize] = true;
                (prev, i, t) = (i, s.next, s.enqueue_ns);
            }
            if self.tails[c.list()] != prev {
                return Err(format!("{c:?}: tail {} != {prev}", self.tails[c.list()]));
            }
        }
        for (i, s) in self.sessions.iter().enumerate() {
            if s.in_use != listed[i] {
                return Err(format!(
                    "session {i}: in use {} but listed {}",
                    s.in_use, listed[i]
                ));
            }
            if s.in_use && self.find(&s.key(), self.hash(&s.key()), NONE) != Some(i as u32) {
                return Err(format!("session {i}: not indexed under its key"));
            }
            if s.in_use && s.class != TimeoutClass::of(s.proto(), s.tcp_seen) {
                return Err(format!(
                    "session {i}: class {:?} for {:?}",
                    s.class, s.tcp_seen
                ));
            }
        }
        let mut by_if = vec![0u32; self.live_by_if.len()];
        for s in self.sessions.iter().filter(|s| s.in_use) {
            match by_if.get_mut(s.sw_if_index() as usize) {
                Some(n) => *n += 1,
                None => return Err(format!("session on uncounted interface: {s:?}")),
            }
        }
        if by_if != self.live_by_if {
            return Err(format!(
                "sessions per interface {by_if:?}, counted {:?}",
                self.live_by_if
            ));
        }
        let n = listed.iter().filter(|&&x| x).count();
        if n != self.in_use as usize || self.index.len() != n {
            return Err(format!(
                "{n} listed, {} in use, {} indexed",
                self.in_use,
                self.index.len()
            ));
        }
        if n + self.free.len() != self.sessions.len() {
            return Err(format!(
                "{n} + {} free != {} slots",
                self.free.len(),
                self.sessions.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Acl, AclBinding, AclConfig, AclRule};
    use crate::key::pkt_flags;

    const L4: u8 = pkt_flags::L4_VALID;
    const SEC: u64 = 1_000_000_000;

    fn tables(max: u32, reserve: u8) -> AclTables {
        AclTables::build(&AclConfig {
            acls: vec![
                Acl {
                    tag: "reflect".into(),
                    rules: vec![AclRule::any(Action::PermitReflect)],
                },
                Acl {
                    tag: "deny".into(),
                    rules: vec![AclRule::any(Action::Deny)],
                },
            ],
            bindings: vec![AclBinding {
                sw_if_index: 6,
                input: vec![0],
                output: vec![1],
            }],
            max_sessions: max,
            reserved_for_control: reserve,
            timeouts: AclTimeouts {
                udp_idle: 10,
                tcp_idle: 100,
                tcp_transient: 5,
            },
        })
    }

    fn pkt(src: u32, dst: u32, proto: u8, sport: u16, dport: u16, dir: Direction) -> PacketKey {
        PacketKey {
            src,
            dst,
            proto,
            sport,
            dport,
            flags: L4
                | if dir == Direction::Input {
                    pkt_flags::INPUT
                } else {
                    0
                },
            sw_if_index: 6,
            ..PacketKey::default()
        }
    }

    fn tcp(mut k: PacketKey, flags: u8) -> PacketKey {
        k.tcp_flags = flags;
        k.flags |= pkt_flags::TCP_FLAGS_VALID;
        k
    }

    #[test]
    fn reflect_hit_reply_expire() {
        let t = tables(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        let out = pkt(1, 2, 17, 1000, 53, Direction::Input);
        let v = st.decide(&t, &out, Direction::Input, 0, || false);
        assert_eq!(
            (v.action, v.acl_index, v.rule_index, v.session),
            (2, 0, 0, 0)
        );
        let back = pkt(2, 1, 17, 53, 1000, Direction::Output);
        let v = st.decide(&t, &back, Direction::Output, SEC, || false);
        assert_eq!(
            (v.action, v.rule_index, v.trace_bits),
            (3, 0, TRACE_SESSION_HIT)
        );
        // The reply direction on input, or another port, is not the session's.
        let v = st.decide(&t, &back, Direction::Input, SEC, || false);
        assert_eq!((v.action, v.session), (2, 1));
        let other = pkt(2, 1, 17, 53, 1001, Direction::Output);
        assert_eq!(
            st.decide(&t, &other, Direction::Output, SEC, || false)
                .action,
            0
        );
        // Idle past 10 s: the lookup deletes it and the rules deny the reply.
        let v = st.decide(&t, &back, Direction::Output, 11 * SEC + 1, || false);
        assert_eq!((v.action, v.acl_index), (0, 1));
        assert_eq!(st.counters.expired, 1);
        // The sweep removes the other idle session without traffic.
        st.sync(&t, 30 * SEC);
        assert!(st.is_empty());
    }

    #[test]
    fn tcp_classes_and_trace_bits() {
        let t = tables(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        let syn = tcp(pkt(1, 2, 6, 40000, 80, Direction::Input), TCP_SYN);
        assert_eq!(st.decide(&t, &syn, Direction::Input, 0, || false).action, 2);
        let synack = tcp(
            pkt(2, 1, 6, 80, 40000, Direction::Output),
            TCP_SYN | TCP_ACK,
        );
        let v = st.decide(&t, &synack, Direction::Output, 1, || false);
        assert_eq!((v.action, v.trace_bits), (3, TRACE_SESSION_HIT));
        let ack = tcp(pkt(1, 2, 6, 40000, 80, Direction::Input), TCP_ACK);
        let v = st.decide(&t, &ack, Direction::Input, 2, || false);
        assert_eq!(v.trace_bits, 0x8001_0302);
        assert!(v.class_changed);
        // Established: survives the transient timeout.
        let v = st.decide(&t, &ack, Direction::Input, 50 * SEC, || false);
        assert_eq!(v.action, 3);
        let fin = tcp(pkt(1, 2, 6, 40000, 80, Direction::Input), TCP_FIN | TCP_ACK);
        let v = st.decide(&t, &fin, Direction::Input, 51 * SEC, || false);
        assert_eq!(v.trace_bits, 0x8001_0203);
        let v = st.decide(&t, &synack, Direction::Output, 57 * SEC, || false);
        assert_eq!(v.action, 0, "transient after FIN: 5 s");
    }

    #[test]
    fn icmp_request_reply() {
        let t = tables(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        let mut req = pkt(1, 2, 1, 8, 0, Direction::Input);
        req.icmp_id = 7;
        assert_eq!(st.decide(&t, &req, Direction::Input, 0, || false).action, 2);
        let mut rep = pkt(2, 1, 1, 0, 0, Direction::Output);
        rep.icmp_id = 7;
        assert_eq!(
            st.decide(&t, &rep, Direction::Output, 1, || false).action,
            3
        );
        rep.icmp_id = 8;
        assert_eq!(
            st.decide(&t, &rep, Direction::Output, 1, || false).action,
            0
        );
        // A "reply" from the initiator's side does not match; it is judged (and permitted,
        // without a session) by the reflect rule.
        let mut wrong = pkt(1, 2, 1, 0, 0, Direction::Input);
        wrong.icmp_id = 7;
        let v = st.decide(&t, &wrong, Direction::Input, 1, || false);
        assert_eq!((v.action, v.session), (1, NONE));
        // Unreachable etc. never create sessions.
        let unreach = pkt(1, 2, 1, 3, 3, Direction::Input);
        assert_eq!(
            st.decide(&t, &unreach, Direction::Input, 1, || false)
                .action,
            1
        );
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn full_table_reserve_and_recycle() {
        // 10 slots, 20 % for control: 8 for everyone.
        let t = tables(10, 20);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        for p in 0..8 {
            let k = pkt(1, 2, 17, 1000 + p, 53, Direction::Input);
            assert_eq!(st.decide(&t, &k, Direction::Input, 0, || false).action, 2);
        }
        let k = pkt(1, 2, 17, 2000, 53, Direction::Input);
        let v = st.decide(&t, &k, Direction::Input, 0, || false);
        assert!(v.refused_full && v.action == 0 && v.acl_index == 0);
        assert_eq!(st.counters.refused_full, 1);
        // Control traffic uses the reserve.
        for p in 0..2 {
            let k = pkt(1, 3, 17, 1000 + p, 53, Direction::Input);
            assert_eq!(st.decide(&t, &k, Direction::Input, 0, || true).action, 2);
        }
        let k = pkt(1, 3, 17, 3000, 53, Direction::Input);
        assert_eq!(st.decide(&t, &k, Direction::Input, 0, || true).action, 0);
        // Existing flows still pass.
        let back = pkt(2, 1, 17, 53, 1000, Direction::Output);
        assert_eq!(
            st.decide(&t, &back, Direction::Output, 1, || false).action,
            3
        );
        // Once idle sessions exist, a new flow reclaims them.
        let k = pkt(1, 2, 17, 2000, 53, Direction::Input);
        assert_eq!(
            st.decide(&t, &k, Direction::Input, 11 * SEC, || false)
                .action,
            2
        );

        // Transient TCP sessions are recycled, oldest first.
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        for p in 0..8 {
            let k = tcp(pkt(1, 2, 6, 1000 + p, 80, Direction::Input), TCP_SYN);
            assert_eq!(
                st.decide(&t, &k, Direction::Input, p as u64, || false)
                    .action,
                2
            );
        }
        let k = tcp(pkt(1, 2, 6, 5000, 80, Direction::Input), TCP_SYN);
        assert_eq!(st.decide(&t, &k, Direction::Input, 10, || false).action, 2);
        assert_eq!(st.counters.recycled, 1);
        let first = tcp(pkt(2, 1, 6, 80, 1000, Direction::Output), TCP_SYN | TCP_ACK);
        assert_eq!(
            st.decide(&t, &first, Direction::Output, 11, || false)
                .action,
            0
        );
        let second = tcp(pkt(2, 1, 6, 80, 1001, Direction::Output), TCP_SYN | TCP_ACK);
        assert_eq!(
            st.decide(&t, &second, Direction::Output, 11, || false)
                .action,
            3
        );
    }

    #[test]
    fn unbinding_makes_sessions_stale() {
        let t = tables(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        for p in 0..3 {
            let k = pkt(1, 2, 17, 1000 + p, 53, Direction::Input);
            st.decide(&t, &k, Direction::Input, 0, || false);
        }
        // Same bindings, other rules: sessions stay.
        let mut cfg = t.config.clone();
        cfg.acls[1].rules[0].action = Action::Permit;
        let t2 = AclTables::build(&cfg);
        st.sync(&t2, 1);
        assert_eq!(st.len(), 3);
        // Unbound: stale, then purged.
        let mut cfg3 = cfg.clone();
        cfg3.bindings.clear();
        let t3 = AclTables::build(&cfg3);
        st.sync(&t3, 2);
        assert!(st.is_empty());
        assert_eq!(st.counters.stale_removed, 3);
        // Rebinding does not resurrect anything.
        st.sync(&t, 3);
        let back = pkt(2, 1, 17, 53, 1000, Direction::Output);
        assert_eq!(
            st.decide(&t, &back, Direction::Output, 4, || false).action,
            0
        );
    }

    #[test]
    fn a_larger_table_keeps_the_sessions_it_has() {
        let t = tables(4, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        for p in 0..4 {
            let k = pkt(1, 2, 17, 1000 + p, 53, Direction::Input);
            assert_eq!(
                st.decide(&t, &k, Direction::Input, 0, || false).session,
                u32::from(p)
            );
        }
        let k = pkt(1, 2, 17, 2000, 53, Direction::Input);
        assert!(
            st.decide(&t, &k, Direction::Input, 0, || false)
                .refused_full
        );
        // More room: the pool and the index grow, the sessions stay where they are.
        let big = tables(64, 0);
        st.sync(&big, 1);
        assert_eq!(st.capacity(), 64);
        st.check_invariants().unwrap();
        for p in 0..4 {
            let back = pkt(2, 1, 17, 53, 1000 + p, Direction::Output);
            let v = st.decide(&big, &back, Direction::Output, 1, || false);
            assert_eq!((v.action, v.session), (3, u32::from(p)));
        }
        for p in 0..60 {
            let k = pkt(1, 2, 17, 3000 + p, 53, Direction::Input);
            assert_eq!(st.decide(&big, &k, Direction::Input, 1, || false).action, 2);
        }
        assert_eq!(st.len(), 64);
        st.check_invariants().unwrap();
        // Less room later does not shrink what was reserved.
        st.sync(&t, 2);
        assert_eq!(st.capacity(), 64);
    }

    #[test]
    fn clear_sessions() {
        let t = tables(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        let k = pkt(1, 2, 17, 1000, 53, Direction::Input);
        st.decide(&t, &k, Direction::Input, 0, || false);
        st.clear_sessions();
        assert!(st.is_empty());
        assert_eq!((st.counters.adds, st.counters.dels), (1, 1));
        let back = pkt(2, 1, 17, 53, 1000, Direction::Output);
        assert_eq!(
            st.decide(&t, &back, Direction::Output, 1, || false).action,
            0
        );
        assert_eq!(st.decide(&t, &k, Direction::Input, 0, || false).session, 0);
    }

    /// [`tables`] plus `sw_if_index` 7 reflecting on output (sessions created by output
    /// packets) and denying on input.
    fn tables_two(max: u32, reserve: u8) -> AclTables {
        let mut cfg = tables(max, reserve).config;
        cfg.bindings.push(AclBinding {
            sw_if_index: 7,
            input: vec![1],
            output: vec![0],
        });
        AclTables::build(&cfg)
    }

    /// The verdict without the session slot (which differs after a restart).
    fn outcome(v: Verdict) -> (u8, u32, u32, u32, bool) {
        let rule = if v.action == 3 { NONE } else { v.rule_index };
        (v.action, v.acl_index, rule, v.trace_bits, v.refused_full)
    }

    /// Exports `st` at `now`, lets `down` pass and imports into a fresh state at `now + down`;
    /// returns it and how many sessions were skipped as expired.
    fn restart(st: &AclState, t: &AclTables, now: u64, down: u64) -> (AclState, usize) {
        let mut fresh = AclState::new(&t.config);
        let mut skipped = 0;
        for mut x in st.export(now) {
            x.idle_ns += down;
            x.age_ns += down;
            if !fresh.import(t, &x, now + down).unwrap() {
                skipped += 1;
            }
        }
        fresh.check_invariants().unwrap();
        // The data plane's next main loop (which reserves the pool if nothing was imported).
        fresh.sync(t, now + down);
        (fresh, skipped)
    }

    #[test]
    fn export_import_round_trip_hits_both_directions() {
        let t = tables_two(16, 0);
        let mut st = AclState::new(&t.config);
        st.sync(&t, 0);
        // UDP and an established TCP flow from sw 6 (input), an echo from sw 6, UDP leaving on
        // sw 7 (output).
        let udp = pkt(1, 2, 17, 1000, 53, Direction::Input);
        let udp_back = pkt(2, 1, 17, 53, 1000, Direction::Output);
        let syn = tcp(pkt(1, 2, 6, 40000, 80, Direction::Input), TCP_SYN);
        let synack = tcp(
            pkt(2, 1, 6, 80, 40000, Direction::Output),
            TCP_SYN | TCP_ACK,
        );
        let ack = tcp(pkt(1, 2, 6, 40000, 80, Direction::Input), TCP_ACK);
        let reply_ack = tcp(pkt(2, 1, 6, 80, 40000, Direction::Output), TCP_ACK);
        let mut ping = pkt(1, 2, PROTO_ICMP, 8, 0, Direction::Input);
        ping.icmp_id = 0x77;
        let mut pong = pkt(2, 1, PROTO_ICMP, 0, 0, Direction::Output);
        pong.icmp_id = 0x77;
        let mut out7 = pkt(5, 6, 17, 2000, 53, Direction::Output);
        out7.sw_if_index = 7;
        let mut in7 = pkt(6, 5, 17, 53, 2000, Direction::Input);
        in7.sw_if_index = 7;
        for (k, d, at) in [
            (&udp, Direction::Input, SEC),
            (&syn, Direction::Input, 2 * SEC),
            (&synack, Direction::Output, 2 * SEC),
            (&ack, Direction::Input, 3 * SEC),
            (&ping, Direction::Input, 4 * SEC),
            (&out7, Direction::Output, 5 * SEC),
        ] {
            assert_ne!(st.decide(&t, k, d, at, || false).action, 0);
        }
        assert_eq!(st.len(), 4);
        let now = 6 * SEC;
        let saved = st.export(now);
        assert_eq!(saved.len(), 4);
        assert_eq!(
            saved.iter().map(|s| s.idle_ns / SEC).collect::<Vec<_>>(),
            [5, 3, 2, 1]
        );
        let tcp_saved = saved.iter().find(|s| s.proto == 6).unwrap();
        assert_eq!(tcp_saved.class, TimeoutClass::TcpIdle);
        assert_eq!(tcp_saved.age_ns, 4 * SEC);
        let icmp_saved = saved.iter().find(|s| s.proto == PROTO_ICMP).unwrap();
        assert_eq!((icmp_saved.sport, icmp_saved.icmp_id), (8, 0x77));
        assert!(
            !saved
                .iter()
                .find(|s| s.sw_if_index == 7)
                .unwrap()
                .created_on_input
        );

        // Into a fresh state that never saw `sync` (its pool is reserved by the import).
        let later = 1000 * SEC;
        let mut new = AclState::new(&t.config);
        for x in &saved {
            assert_eq!(new.import(&t, x, later), Ok(true));
        }
        new.check_invariants().unwrap();
        assert_eq!(new.capacity(), 16);
        assert_eq!(new.class_counts(), st.class_counts());
        // Slots aside (imported most idle first), the same sessions with the same idle times
        // and ages.
        let relative = |x: SessionInfo, now: u64| SessionInfo {
            index: 0,
            created_ns: now - x.created_ns,
            last_active_ns: now - x.last_active_ns,
            ..x
        };
        let mut old: Vec<SessionInfo> = st.sessions().map(|x| relative(x, now)).collect();
        let mut got: Vec<SessionInfo> = new.sessions().map(|x| relative(x, later)).collect();
        old.sort_by_key(|x| (x.sw_if_index, x.proto, x.sport));
        got.sort_by_key(|x| (x.sw_if_index, x.proto, x.sport));
        assert_eq!(got, old);
        // Both directions of every flow hit, in the new state as in the old.
        for (k, d) in [
            (&udp, Direction::Input),
            (&udp_back, Direction::Output),
            (&ack, Direction::Input),
            (&reply_ack, Direction::Output),
            (&ping, Direction::Input),
            (&pong, Direction::Output),
            (&out7, Direction::Output),
            (&in7, Direction::Input),
        ] {
            let a = new.decide(&t, k, d, later, || false);
            let b = st.decide(&t, k, d, now, || false);
            assert_eq!(a.action, 3, "{k:?}");
            assert_eq!(outcome(a), outcome(b));
        }
        // What no session covers is still denied: another identifier, a wrong-way "reply".
        let mut other = pong;
        other.icmp_id = 0x78;
        assert_eq!(
            new.decide(&t, &other, Direction::Output, later, || false)
                .action,
            0
        );
        let mut wrong = pkt(1, 2, PROTO_ICMP, 0, 0, Direction::Input);
        wrong.icmp_id = 0x77;
        assert_eq!(
            new.decide(&t, &wrong, Direction::Input, later, || false)
                .session,
            NONE
        );
        // The TCP state came along: a FIN makes the session transient.
        let fin = tcp(
            pkt(2, 1, 6, 80, 40000, Direction::Output),
            TCP_FIN | TCP_ACK,
        );
        let v = new.decide(&t, &fin, Direction::Output, later, || false);
        assert_eq!(v.trace_bits, 0x8001_0203);
        new.check_invariants().unwrap();
    }

    #[test]
    fn import_skips_expired_and_unbound_refuses_duplicates_invalid_and_full() {
        let t = tables_two(10, 20);
        let mut st = AclState::new(&t.config);
        let udp = |sport: u16, idle_s: u64| SavedAclSession {
            sw_if_index: 6,
            created_on_input: true,
            proto: 17,
            src: 1,
            dst: 2,
            sport,
            dport: 53,
            icmp_id: 0,
            tcp_seen: [0; 2],
            class: TimeoutClass::UdpIdle,
            control: false,
            idle_ns: idle_s * SEC,
            age_ns: idle_s * SEC,
        };
        let now = 100 * SEC;
        assert_eq!(st.import(&t, &udp(1, 10), now), Ok(false), "udp idle 10 s");
        let mut unbound = udp(1, 1);
        unbound.sw_if_index = 9;
        assert_eq!(st.import(&t, &unbound, now), Ok(false));
        let mut liar = udp(1, 1);
        liar.class = TimeoutClass::TcpIdle;
        assert_eq!(st.import(&t, &liar, now), Err(ImportError::Invalid));
        let mut pong = udp(1, 1);
        (pong.proto, pong.sport, pong.dport) = (PROTO_ICMP, 0, 0);
        assert_eq!(
            st.import(&t, &pong, now),
            Err(ImportError::Invalid),
            "an echo reply creates no session"
        );
        assert!(st.is_empty());
        assert_eq!(st.import(&t, &udp(1, 9), now), Ok(true));
        assert_eq!(st.import(&t, &udp(1, 0), now), Err(ImportError::Collision));
        for p in 2..9 {
            assert_eq!(st.import(&t, &udp(p, 1), now), Ok(true));
        }
        assert_eq!(st.len(), 8);
        assert_eq!(st.import(&t, &udp(20, 1), now), Err(ImportError::Full));
        assert_eq!(st.counters.refused_full, 1);
        let mut ctl = udp(21, 1);
        ctl.control = true;
        assert_eq!(
            st.import(&t, &ctl, now),
            Ok(true),
            "control uses the reserve"
        );
        st.check_invariants().unwrap();
        // The session imported 9 s idle is the first to go, a second later, by the sweep.
        st.sync(&t, now + SEC - 1);
        assert_eq!(st.len(), 9);
        st.sync(&t, now + SEC);
        assert_eq!(st.len(), 8);
        assert_eq!(st.counters.expired, 1);
        let back = pkt(2, 1, 17, 53, 1, Direction::Output);
        assert_eq!(
            st.decide(&t, &back, Direction::Output, now + SEC, || false)
                .action,
            0
        );
        let back = pkt(2, 1, 17, 53, 2, Direction::Output);
        assert_eq!(
            st.decide(&t, &back, Direction::Output, now + SEC, || false)
                .action,
            3
        );
        st.check_invariants().unwrap();
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Flow `f`'s initiator (or, if true, responder) sends a packet with TCP flags.
            Packet(u8, bool, u8),
            Advance(u64),
            Sync,
            /// Export, the given seconds of downtime, import into a fresh state.
            Restart(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            let flags = prop_oneof![
                Just(TCP_SYN),
                Just(TCP_SYN | TCP_ACK),
                Just(TCP_ACK),
                Just(TCP_FIN | TCP_ACK),
                Just(TCP_RST),
            ];
            prop_oneof![
                6 => (0..12u8, any::<bool>(), flags).prop_map(|(f, r, x)| Op::Packet(f, r, x)),
                2 => (0..40u64).prop_map(Op::Advance),
                1 => Just(Op::Sync),
                1 => (0..30u64).prop_map(Op::Restart),
            ]
        }

        /// Flow `f`: TCP, UDP or ICMP echo by `f % 3`; initiated on input of sw 6 when `f` is
        /// even, on output of sw 7 when odd.
        fn packet(f: u8, reply: bool, flags: u8) -> (PacketKey, Direction) {
            let (sw, init) = if f.is_multiple_of(2) {
                (6, Direction::Input)
            } else {
                (7, Direction::Output)
            };
            let dir = match (init, reply) {
                (d, false) => d,
                (Direction::Input, true) => Direction::Output,
                (Direction::Output, true) => Direction::Input,
            };
            let (a, b) = (0x0a01_0100 + u32::from(f), 0x0a14_0002);
            let (src, dst) = if reply { (b, a) } else { (a, b) };
            let mut k = match f % 3 {
                0 => {
                    let (sp, dp) = if reply { (80, 40000) } else { (40000, 80) };
                    tcp(pkt(src, dst, 6, sp, dp, dir), flags)
                }
                1 => {
                    let (sp, dp) = if reply { (53, 5000) } else { (5000, 53) };
                    pkt(src, dst, 17, sp, dp, dir)
                }
                _ => {
                    let mut k = pkt(src, dst, PROTO_ICMP, if reply { 0 } else { 8 }, 0, dir);
                    k.icmp_id = u16::from(f);
                    k
                }
            };
            k.sw_if_index = sw;
            (k, dir)
        }

        proptest! {
            /// A state restarted any number of times (export, downtime, import) decides every
            /// packet as the state that never restarted.
            #[test]
            fn restarts_change_no_verdict(ops in proptest::collection::vec(op(), 1..200)) {
                let t = tables_two(64, 0);
                let mut reference = AclState::new(&t.config);
                reference.sync(&t, 0);
                let mut st = AclState::new(&t.config);
                st.sync(&t, 0);
                let mut now = 0;
                for op in ops {
                    match op {
                        Op::Packet(f, reply, flags) => {
                            let (k, d) = packet(f, reply, flags);
                            let want = reference.decide(&t, &k, d, now, || false);
                            let got = st.decide(&t, &k, d, now, || false);
                            prop_assert_eq!(outcome(got), outcome(want), "{:?}", k);
                        }
                        Op::Advance(s) => now += s * SEC,
                        Op::Sync => {
                            reference.sync(&t, now);
                            st.sync(&t, now);
                        }
                        Op::Restart(down) => {
                            let before = st.len() as usize;
                            let (fresh, skipped) = restart(&st, &t, now, down * SEC);
                            now += down * SEC;
                            prop_assert_eq!(fresh.len() as usize + skipped, before);
                            st = fresh;
                        }
                    }
                    if let Err(e) = st.check_invariants() {
                        prop_assert!(false, "{}", e);
                    }
                }
            }
        }
    }

    /// The index against a plain `HashMap` of the sessions in use (rebuilt from the pool after
    /// every step): under creation, expiry on lookup and by the sweep, recycling of a small full
    /// table, the control reserve, stale sessions after an unbinding, `clear` and restarts,
    /// with packets decided in frames as the nodes do (every packet prepared and its candidate
    /// picked before the first is decided, so candidates go stale within the frame).
    mod index_model {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        /// Flows: TCP, UDP or ICMP echo by `f % 3`; initiated on input of sw 6 when `f` is even,
        /// on output of sw 7 when odd; control traffic when `f % 5 == 0`.
        const FLOWS: u8 = 30;

        #[derive(Debug, Clone)]
        enum Op {
            /// A frame of packets: flow, the responder's side, TCP flags.
            Frame(Vec<(u8, bool, u8)>),
            Advance(u64),
            Sync,
            /// sw 7 loses (true) or gets back (false) its ACLs.
            Unbind7(bool),
            Clear,
            Restart(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            let flags = prop_oneof![
                Just(TCP_SYN),
                Just(TCP_SYN | TCP_ACK),
                Just(TCP_ACK),
                Just(TCP_FIN | TCP_ACK),
                Just(TCP_RST),
            ];
            let pkt = (0..FLOWS, any::<bool>(), flags);
            prop_oneof![
                12 => proptest::collection::vec(pkt, 1..12).prop_map(Op::Frame),
                3 => (0..12u64).prop_map(Op::Advance),
                2 => Just(Op::Sync),
                1 => any::<bool>().prop_map(Op::Unbind7),
                1 => Just(Op::Clear),
                1 => (0..8u64).prop_map(Op::Restart),
            ]
        }

        fn packet(f: u8, reply: bool, flags: u8) -> (PacketKey, Direction) {
            let (sw, init) = if f.is_multiple_of(2) {
                (6, Direction::Input)
            } else {
                (7, Direction::Output)
            };
            let dir = match (init, reply) {
                (d, false) => d,
                (Direction::Input, true) => Direction::Output,
                (Direction::Output, true) => Direction::Input,
            };
            // Few addresses, so that flows share address pairs and differ in ports only.
            let (a, b) = (0x0a01_0100 + u32::from(f % 4), 0x0a14_0002);
            let (src, dst) = if reply { (b, a) } else { (a, b) };
            let port = 1000 + u16::from(f);
            let mut k = match f % 3 {
                0 => {
                    let (sp, dp) = if reply { (80, port) } else { (port, 80) };
                    tcp(pkt(src, dst, 6, sp, dp, dir), flags)
                }
                1 => {
                    let (sp, dp) = if reply { (53, port) } else { (port, 53) };
                    pkt(src, dst, 17, sp, dp, dir)
                }
                _ => {
                    let mut k = pkt(src, dst, PROTO_ICMP, if reply { 0 } else { 8 }, 0, dir);
                    k.icmp_id = port;
                    k
                }
            };
            k.sw_if_index = sw;
            (k, dir)
        }

        /// The model: key → slot of every session in use, from the pool alone (each session's
        /// key rebuilt from what `show` lists, as an import does), and the sessions by slot.
        fn model(st: &AclState) -> (HashMap<SessionKey, u32>, HashMap<u32, SessionInfo>) {
            let mut keys = HashMap::new();
            let mut infos = HashMap::new();
            for x in st.sessions() {
                // `show` does not list the ICMP identifier; an export carries it.
                let icmp_id = match x.proto {
                    PROTO_ICMP => st
                        .sessions
                        .get(x.index as usize)
                        .map_or(0, |s| (s.ports_if >> 32) as u16),
                    _ => 0,
                };
                let creator = PacketKey {
                    src: x.src,
                    dst: x.dst,
                    sport: x.sport,
                    dport: x.dport,
                    proto: x.proto,
                    tcp_flags: 0,
                    flags: L4
                        | if x.created_on_input {
                            pkt_flags::INPUT
                        } else {
                            0
                        },
                    sw_if_index: x.sw_if_index,
                    icmp_id,
                };
                let dir = if x.created_on_input {
                    Direction::Input
                } else {
                    Direction::Output
                };
                let (k, creates) = session_key(&creator, dir).expect("a session's creator");
                assert!(creates);
                assert!(keys.insert(k, x.index).is_none(), "two sessions of {k:?}");
                infos.insert(x.index, x);
            }
            (keys, infos)
        }

        /// Every key of the universe (both directions of every flow) is found by the index,
        /// with or without a (possibly wrong) candidate, exactly when the model has it.
        fn agree(st: &AclState) -> Result<(), TestCaseError> {
            let (keys, _) = model(st);
            prop_assert_eq!(st.index.len(), keys.len());
            prop_assert_eq!(st.len() as usize, keys.len());
            for f in 0..FLOWS {
                for reply in [false, true] {
                    let (k, d) = packet(f, reply, TCP_ACK);
                    let Some((sk, _)) = session_key(&k, d) else {
                        continue;
                    };
                    let want = keys.get(&sk).copied();
                    let h = st.hash(&sk);
                    prop_assert_eq!(st.find(&sk, h, NONE), want, "{:?}", sk);
                    for cand in [0, u32::from(f), 1000] {
                        prop_assert_eq!(st.find(&sk, h, cand), want, "{:?} via {}", sk, cand);
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn index_agrees_with_a_hash_map(ops in proptest::collection::vec(op(), 1..120)) {
                // 8 slots, 25 % for control: full tables, recycling and refusals are common.
                let bound = tables_two(8, 25);
                let mut cfg = bound.config.clone();
                cfg.bindings.retain(|b| b.sw_if_index != 7);
                let unbound = AclTables::build(&cfg);
                let mut t = &bound;
                let mut st = AclState::new(&t.config);
                st.sync(t, 0);
                let mut now = 0;
                for op in ops {
                    match op {
                        Op::Frame(pkts) => {
                            let frame: Vec<(PacketKey, Direction, bool)> = pkts
                                .iter()
                                .map(|&(f, r, x)| {
                                    let (k, d) = packet(f, r, x);
                                    (k, d, f % 5 == 0)
                                })
                                .collect();
                            let mut prepared: Vec<Prepared> =
                                frame.iter().map(|(k, d, _)| st.prepare(k, *d)).collect();
                            for p in prepared.iter_mut() {
                                st.prefetch_candidate(p);
                            }
                            for ((k, d, control), p) in frame.iter().zip(&prepared) {
                                // What the model says before this packet.
                                let (keys, infos) = model(&st);
                                let hit = session_key(k, *d)
                                    .and_then(|(sk, _)| keys.get(&sk).copied())
                                    .and_then(|i| infos.get(&i).cloned());
                                let v = st.decide_prepared(t, k, p, *d, now, || *control);
                                match hit {
                                    Some(x) if x.stale => {
                                        prop_assert_ne!(v.action, 3);
                                        prop_assert!(v.trace_bits & TRACE_STALE_REMOVED != 0);
                                    }
                                    Some(x) if now
                                        >= x.last_active_ns
                                            .saturating_add(x.class.timeout_ns(&t.config.timeouts)) =>
                                    {
                                        prop_assert_ne!(v.action, 3, "idle session hit");
                                    }
                                    Some(x) => {
                                        prop_assert_eq!((v.action, v.session), (3, x.index));
                                    }
                                    None => prop_assert_ne!(v.action, 3, "hit without session"),
                                }
                                if v.action == 2 {
                                    prop_assert!(st.sessions().any(|x| x.index == v.session));
                                }
                                agree(&st)?;
                            }
                        }
                        Op::Advance(s) => now += s * SEC,
                        Op::Sync => st.sync(t, now),
                        Op::Unbind7(lose) => {
                            t = if lose { &unbound } else { &bound };
                            st.sync(t, now);
                        }
                        Op::Clear => st.clear_sessions(),
                        Op::Restart(down) => {
                            // As `restart`, but a full table may refuse what the old one
                            // held (the control reserve counts differently on import).
                            let saved = st.export(now);
                            now += down * SEC;
                            let mut fresh = AclState::new(&t.config);
                            for mut x in saved {
                                x.idle_ns += down * SEC;
                                x.age_ns += down * SEC;
                                let _ = fresh.import(t, &x, now);
                            }
                            fresh.sync(t, now);
                            st = fresh;
                        }
                    }
                    agree(&st)?;
                    if let Err(e) = st.check_invariants() {
                        prop_assert!(false, "{}", e);
                    }
                }
            }
        }
    }
}
