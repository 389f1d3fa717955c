//! Shared by the NAT44 nodes: the trace record, session creation for static mappings (load
//! balancing, affinity, twice-NAT, hairpin, key collisions), port allocation and hit handling.

use std::fmt::Write;

use vecnet_graph::buffer::flags;
use vecnet_graph::{read_record, BufferMeta, BufferPool, FRAME_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::runtime::{Choice, NatState, NatTables};
use crate::session::{CreateError, Dir, FlowKey, SessionKind, SessionTable};
use crate::translate::{apply, parse, Parsed, L4};

/// Per-node scratch of the two-pass NAT loops (SYSTEM.md 11.1 rule 4), allocated once with the
/// node: each packet's parse, key hash and candidate session.
pub struct FrameScratch {
    parsed: Vec<Option<Parsed>>,
    hash: Vec<u64>,
    candidate: Vec<u32>,
}

impl Default for FrameScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameScratch {
    pub fn new() -> Self {
        Self {
            parsed: vec![None; FRAME_SIZE],
            hash: vec![0; FRAME_SIZE],
            candidate: vec![u32::MAX; FRAME_SIZE],
        }
    }

    /// The first passes over a frame, before any packet is handled: parse every packet (its IPv4
    /// header `l3_offset` bytes into the buffer's data), hash its key and prefetch its index
    /// bucket; then, buckets in cache, pick each key's candidate session and prefetch it. The
    /// packets are then handled in order with [`Self::get`] and
    /// [`SessionTable::lookup_hashed`], which verifies the candidates (a packet handled earlier in
    /// the frame may have created or deleted sessions). Packets with any of the buffer flags
    /// `skip` are ones the node decides without a lookup: they are neither parsed nor hashed,
    /// their buckets are not loaded, and `get` returns `None` for them.
    #[inline]
    pub fn prepare(
        &mut self,
        pool: &BufferPool,
        frame: &[u32],
        sessions: &SessionTable,
        l3_offset: usize,
        skip: u32,
    ) {
        if frame.len() > self.parsed.len() {
            // Frames are at most FRAME_SIZE packets; never taken by the dispatcher.
            self.parsed.resize(frame.len(), None);
            self.hash.resize(frame.len(), 0);
            self.candidate.resize(frame.len(), u32::MAX);
        }
        let parsed = &mut self.parsed[..frame.len()];
        let hash = &mut self.hash[..frame.len()];
        for ((&bi, p), h) in frame.iter().zip(parsed.iter_mut()).zip(hash.iter_mut()) {
            *p = if skip != 0 && pool.meta(bi).flags & skip != 0 {
                None
            } else {
                pool.data(bi).get(l3_offset..).and_then(parse)
            };
            *h = match p {
                Some(p) => sessions.hash(&p.key),
                None => 0,
            };
        }
        // A tight loop, so that many bucket loads (and their TLB walks) are in flight at once.
        for &h in hash.iter() {
            sessions.prefetch(h);
        }
        let candidate = &mut self.candidate[..frame.len()];
        for ((c, p), &h) in candidate.iter_mut().zip(parsed.iter()).zip(hash.iter()) {
            *c = match p {
                Some(_) => sessions.candidate(h),
                None => u32::MAX,
            };
        }
    }

    /// Packet `k` of the frame given to [`Self::prepare`]: its parse (`None`: truncated, not
    /// IPv4, or skipped), key hash and candidate session.
    #[inline]
    pub fn get(&self, k: usize) -> Option<(&Parsed, u64, u32)> {
        self.parsed[k]
            .as_ref()
            .map(|p| (p, self.hash[k], self.candidate[k]))
    }
}

/// The trace record of every NAT44 node.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NatTrace {
    pub sw_if_index: u32,
    pub next_index: u32,
    /// `u32::MAX` prints as -1.
    pub session: u32,
}

pub fn format_nat_trace(data: &[u8], label: &str, session_word: &str, out: &mut String) {
    let t: NatTrace = read_record(data);
    let s = if t.session == u32::MAX {
        -1
    } else {
        t.session as i64
    };
    let _ = writeln!(
        out,
        "  {label}: sw_if_index {}, next index {}, {session_word} {s}",
        t.sw_if_index, t.next_index
    );
}

/// Why no session could be made for a mapping match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingOutcome {
    Session(u32),
    /// The traffic policy filtered every endpoint: drop.
    Drop,
    /// The port has no endpoints: ICMP port unreachable.
    Reject,
    Full,
    OutOfPorts,
    Collision,
}

/// Creates the session of a new connection to static mapping `m` (SYSTEM.md 6.2, 6.6, 6.10,
/// 6.11).
pub fn create_for_mapping(
    st: &mut NatState,
    t: &NatTables,
    m: u32,
    p: &Parsed,
    control: bool,
    now_ns: u64,
) -> MappingOutcome {
    let Some(cm) = t.mappings.get(m as usize) else {
        return MappingOutcome::Drop;
    };
    let internal = t.is_internal(p.key.src);
    let choice: &Choice = if internal { &cm.internal } else { &cm.external };
    match choice {
        Choice::Drop => return MappingOutcome::Drop,
        Choice::Reject => return MappingOutcome::Reject,
        Choice::Backends { .. } => {}
    }
    let Some(b) = st.choose(cm, choice, p.key.src, now_ns) else {
        return MappingOutcome::Reject;
    };
    let backend = u32::from(b.ip);
    // Hairpin (the client reaches itself, or the host stack reaches one of its own addresses)
    // and external-origin ETP=Cluster traffic are source-translated to the NAT loopback so
    // that replies come back through this node.
    let hairpin =
        backend == p.key.src || (t.is_host_address(backend) && t.is_host_address(p.key.src));
    let mut twice = (!internal && cm.m.twice_nat_external) || (cm.m.self_twice_nat && hairpin);
    for _ in 0..2 {
        let (src, sport) = if twice {
            match twice_nat_source(st, t, p.key, backend, b.port, now_ns) {
                Some(x) => x,
                None => return MappingOutcome::OutOfPorts,
            }
        } else {
            (p.key.src, p.key.sport)
        };
        let inner = FlowKey {
            src,
            dst: backend,
            sport,
            dport: b.port,
            proto: p.key.proto,
        };
        match st.sessions.create(
            p.key,
            inner,
            SessionKind::LoadBalanced,
            twice,
            m,
            control,
            now_ns,
            &t.config.timeouts,
        ) {
            Ok(i) => return MappingOutcome::Session(i),
            // Same client port to two VIPs with one backend: make the reply key unique.
            Err(CreateError::Collision) if !twice => {
                st.counters.key_collisions += 1;
                twice = true;
            }
            Err(CreateError::Collision) => return MappingOutcome::Collision,
            Err(CreateError::Full) => return MappingOutcome::Full,
        }
    }
    MappingOutcome::Collision
}

/// A twice-NAT source: the first twice-NAT pool address and a port whose reply key is free —
/// the client's own port when it is ≥ 1024 and free, else up to 10 random ones.
fn twice_nat_source(
    st: &mut NatState,
    t: &NatTables,
    key: FlowKey,
    backend: u32,
    bport: u16,
    now: u64,
) -> Option<(u32, u16)> {
    let ip = *t.twice_pool.first()?;
    let free = |st: &mut NatState, port: u16| {
        let reply = FlowKey {
            src: backend,
            dst: ip,
            sport: bport,
            dport: port,
            proto: key.proto,
        };
        st.sessions.key_free(&reply, now, &t.config.timeouts)
    };
    if key.sport >= 1024 && free(st, key.sport) {
        return Some((ip, key.sport));
    }
    for _ in 0..10 {
        let port = 1024 + (st.random() % (65536 - 1024)) as u16;
        if free(st, port) {
            return Some((ip, port));
        }
    }
    None
}

/// Translates a packet of session `i` travelling in `dir` and accounts it; returns whether its
/// addresses or ports were rewritten (every session kind but identity).
#[inline]
pub fn hit(
    st: &mut NatState,
    i: u32,
    dir: Dir,
    ip: &mut [u8],
    p: &Parsed,
    m: &BufferMeta,
    now_ns: u64,
) -> bool {
    let Some(s) = st.sessions.get(i) else {
        return false;
    };
    let rw = *s.rewrite(dir);
    let partial = m.flags & flags::OFFLOAD_CSUM != 0;
    let rewrite = s.kind != SessionKind::Identity;
    if rewrite {
        apply(ip, p, &rw, partial);
    }
    let tcp_flags = match p.l4 {
        L4::Tcp { flags } => flags,
        _ => 0,
    };
    st.sessions.touch(i, dir, tcp_flags, p.total_len, now_ns);
    rewrite
}

/// [`hit`] for the input-side nodes (`nat44-out2in`, `nat44-in2out` and its slow path). A packet
/// translated back as its session's reply — a Service reply whose source becomes the VIP,
/// external IP or NodePort again, the Internet's reply to a pod — is marked
/// [`flags::NAT_REPLY`]: if it is routed out of the uplink (the reply to a client on the
/// Internet), the output feature passes it as it is instead of looking for a session it will
/// not find (the flow's session is keyed by the client's packets and the backend's reply, not by
/// the restored reply) and source-NATing it to the node IP (SYSTEM.md 9.4). Marking it here costs
/// one store; finding out there would cost, per reply, a miss in each output node and then a
/// lookup of the reversed key.
#[inline]
pub fn hit_input(
    st: &mut NatState,
    i: u32,
    dir: Dir,
    ip: &mut [u8],
    p: &Parsed,
    m: &mut BufferMeta,
    now_ns: u64,
) {
    if hit(st, i, dir, ip, p, m, now_ns) && dir == Dir::Reverse {
        m.flags |= flags::NAT_REPLY;
    }
}
