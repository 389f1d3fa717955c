//! Shared by the NAT44 nodes: the trace record, session creation for static mappings (load
//! balancing, affinity, twice-NAT, hairpin, key collisions), port allocation and hit handling.

use std::fmt::Write;

use vecnet_graph::{read_record, BufferMeta};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::runtime::{Choice, NatState, NatTables};
use crate::session::{CreateError, Dir, FlowKey, SessionKind};
use crate::translate::{apply, Parsed, L4};

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
    // Hairpin (the client reaches itself) and external-origin ETP=Cluster traffic are
    // source-translated to the NAT loopback so that replies come back through this node.
    let mut twice =
        (!internal && cm.m.twice_nat_external) || (cm.m.self_twice_nat && backend == p.key.src);
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
    _now: u64,
) -> Option<(u32, u16)> {
    let ip = *t.twice_pool.first()?;
    let free = |st: &NatState, port: u16| {
        !st.sessions.key_in_use(&FlowKey {
            src: backend,
            dst: ip,
            sport: bport,
            dport: port,
            proto: key.proto,
        })
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

/// Translates a packet of session `i` travelling in `dir` and accounts it.
#[inline]
pub fn hit(
    st: &mut NatState,
    i: u32,
    dir: Dir,
    ip: &mut [u8],
    p: &Parsed,
    m: &BufferMeta,
    now_ns: u64,
) {
    let Some(s) = st.sessions.get(i) else {
        return;
    };
    let rw = *s.rewrite(dir);
    let partial = m.flags & vecnet_graph::buffer::flags::OFFLOAD_CSUM != 0;
    if s.kind != SessionKind::Identity {
        apply(ip, p, &rw, partial);
    }
    let flags = match p.l4 {
        L4::Tcp { flags } => flags,
        _ => 0,
    };
    st.sessions.touch(i, dir, flags, p.total_len, now_ns);
}
