//! The NAT44 session table of one worker: both directions of every flow in one hash table, a
//! pre-sized session pool, per-class LRU lists for expiry inside the data plane (SYSTEM.md 6.9),
//! a TCP state machine, bounded size with a reserve for control traffic.

use std::net::Ipv4Addr;

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use vecnet_wire::checksum::Delta;

use crate::config::{NatTimeouts, Proto};

/// A 5-tuple as seen on the wire (host-order addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Load-balanced static mapping (a Service); found only in the slow path on the inside.
    LoadBalanced,
    /// Identity mapping: a session, no rewrite.
    Identity,
    /// Dynamic source NAT to a pool address (output feature).
    Dynamic,
}

/// Expiry class; one LRU list each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    TcpTransitory = 0,
    Udp = 1,
    Other = 2,
    Icmp = 3,
    TcpEstablished = 4,
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
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Precomputed rewrite of one direction: the addresses and ports to write and checksum deltas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 header checksum delta (addresses).
    pub ip: Delta,
    /// L4 checksum delta (pseudo-header addresses and ports).
    pub l4: Delta,
    /// Partial-checksum delta (addresses only: ports are inside the summed range).
    pub partial: Delta,
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
            partial: ip,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The flow as its first packet arrived (client → external address).
    pub outer: FlowKey,
    /// The same packet after translation (client' → backend).
    pub inner: FlowKey,
    pub kind: SessionKind,
    /// Source translated too (twice-NAT, hairpin).
    pub twice_nat: bool,
    pub fwd: Rewrite,
    pub rev: Rewrite,
    /// Index of the static mapping that made it, `u32::MAX` if none.
    pub mapping: u32,
    pub vrf: u32,
    /// Counts against the control reserve.
    pub control: bool,
    pub last_heard_ns: u64,
    /// When the session was last moved to its LRU tail (at most once per second).
    pub lru_touch_ns: u64,
    pub class: Class,
    /// TCP flags seen since the last (re)open, per direction.
    pub tcp_seen: [u8; 2],
    pub tcp_established: bool,
    pub packets: u64,
    pub bytes: u64,
    prev: u32,
    next: u32,
    in_use: bool,
}

impl Session {
    pub fn timeout_s(&self, t: &NatTimeouts) -> u32 {
        match self.class {
            Class::TcpTransitory => t.tcp_transitory,
            Class::TcpEstablished => t.tcp_established,
            Class::Udp | Class::Other => t.udp,
            Class::Icmp => t.icmp,
        }
    }

    pub fn expired(&self, now_ns: u64, t: &NatTimeouts) -> bool {
        now_ns.saturating_sub(self.last_heard_ns) >= self.timeout_s(t) as u64 * 1_000_000_000
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

pub struct SessionTable {
    sessions: Vec<Session>,
    free: Vec<u32>,
    index: HashMap<FlowKey, (u32, Dir), FixedState>,
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

impl SessionTable {
    /// A table for `max` sessions; `reserved_pct` percent are kept for control traffic.
    /// Capacity is reserved now so that creating sessions never reallocates.
    pub fn new(max: u32, reserved_pct: u8, seed: u64) -> Self {
        let max = max.max(1);
        Self {
            // Address space only: pages are touched as sessions are created.
            sessions: Vec::with_capacity(max as usize),
            free: Vec::with_capacity(max as usize),
            index: HashMap::with_capacity_and_hasher(2 * max as usize, FixedState::with_seed(seed)),
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

    /// Finds the session of a packet's 5-tuple; an expired one is deleted and not returned.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now_ns: u64, t: &NatTimeouts) -> Option<(u32, Dir)> {
        let &(i, dir) = self.index.get(key)?;
        let expired = self
            .sessions
            .get(i as usize)
            .is_some_and(|s| s.expired(now_ns, t));
        if expired {
            self.delete(i);
            self.counters.expired += 1;
            return None;
        }
        Some((i, dir))
    }

    /// Whether `key` is in use by any live session direction.
    pub fn key_in_use(&self, key: &FlowKey) -> bool {
        self.index.contains_key(key)
    }

    /// Creates a session for `outer` translated to `inner`.
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
        if self.index.contains_key(&outer) || self.index.contains_key(&rev_key) {
            return Err(CreateError::Collision);
        }
        self.make_room(control, now_ns, t)?;
        let class = match Proto::from_ip_proto(outer.proto) {
            Some(Proto::Tcp) => Class::TcpTransitory,
            Some(Proto::Udp) => Class::Udp,
            Some(Proto::Icmp) => Class::Icmp,
            None => Class::Other,
        };
        let s = Session {
            outer,
            inner,
            kind,
            twice_nat,
            fwd: Rewrite::between(outer, inner),
            rev: Rewrite::between(rev_key, outer.reversed()),
            mapping,
            vrf: 0,
            control,
            last_heard_ns: now_ns,
            lru_touch_ns: now_ns,
            class,
            tcp_seen: [0; 2],
            tcp_established: false,
            packets: 0,
            bytes: 0,
            prev: NONE,
            next: NONE,
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
        self.index.insert(outer, (i, Dir::Forward));
        self.index.insert(rev_key, (i, Dir::Reverse));
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
        let Some(s) = self.sessions.get(i as usize).copied() else {
            return;
        };
        if !s.in_use {
            return;
        }
        self.lru_unlink(i);
        self.index.remove(&s.outer);
        self.index.remove(&s.inner.reversed());
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
