//! `acl-plugin-in-ip4-fa` and `acl-plugin-out-ip4-fa` (SYSTEM.md 4.5.6, 7.7): build the 18.01
//! 5-tuple key, look up the interface's reflective sessions, else match the ACLs bound to
//! (interface, direction) — first hit wins, no hit = deny — and continue on the feature arc or
//! drop.
//!
//! The input node sees the packet from its IP header (`ip4-input` consumed the Ethernet header)
//! on `sw_if_index[RX]`'s `ip4-unicast` arc; the output node sees it after `ip4-rewrite`, from the
//! Ethernet header it prepended, on `sw_if_index[TX]`'s `ip4-output` arc.

use std::fmt::Write;

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, FRAME_SIZE, RX, TX};
use vecnet_nodes::common::{drop_with, feature_next};
use vecnet_nodes::{Dpo, InterfaceKind, L3Config};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::key::{format_key_words, PacketKey};
use crate::runtime::AclRuntime;
pub use crate::runtime::Direction;
use crate::session::Prepared;

const NEXT_DROP: u16 = 0;
/// `feature_next`'s answer when the arc has no next node (misconfiguration).
const NO_NEXT: u16 = u16::MAX - 1;
/// Bytes `ip4-rewrite` prepends before the output feature arc runs.
const L2_HEADER: usize = 14;

pub const ERR_DENY: u16 = 0;
pub const ERR_PERMIT: u16 = 1;
pub const ERR_NEW_SESSION: u16 = 2;
pub const ERR_EXIST_SESSION: u16 = 3;
pub const ERR_CHECK: u16 = 4;
pub const ERR_RESTART_TIMER: u16 = 5;
pub const ERR_TOO_MANY_SESSIONS: u16 = 6;
pub const ERR_STALE_SESSION: u16 = 7;
pub const ERR_NO_NEXT: u16 = 8;

/// VPP 18.01's `foreach_acl_fa_error` in order, then vecnet's own.
const ERROR_STRINGS: [&str; 9] = [
    "ACL deny packets",
    "ACL permit packets",
    "new sessions added",
    "existing session packets",
    "checked packets",
    "restart session timer",
    "too many sessions to add new",
    "stale sessions removed after a policy change",
    "no next feature on the arc",
];

/// The 18.01 `acl_fa_trace_t`: what the node decided and the key it decided on.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AclTrace {
    pub packet_info: [u64; 6],
    pub sw_if_index: u32,
    pub next_index: u32,
    /// `u32::MAX` prints as -1.
    pub acl_index: u32,
    pub rule_index: u32,
    pub trace_bits: u32,
    pub action: u8,
    pub pad: [u8; 3],
}

/// Formats one record exactly as VPP 18.01's `format_acl_fa_trace` (three lines, the third
/// indented by three spaces).
pub fn format_acl_trace(t: &AclTrace, out: &mut String) {
    let _ = writeln!(
        out,
        "  acl-plugin: sw_if_index {}, next index {}, action: {}, match: acl {} rule {} trace_bits {:08x}",
        t.sw_if_index, t.next_index, t.action, t.acl_index as i32, t.rule_index as i32, t.trace_bits
    );
    out.push_str("  pkt info");
    for w in t.packet_info {
        let _ = write!(out, " {w:016x}");
    }
    out.push_str("\n   ");
    format_key_words(out, &t.packet_info);
    out.push('\n');
}

/// One of the two ACL nodes, with its per-frame scratch (allocated once, with the node).
pub struct AclPluginFa {
    dir: Direction,
    /// Each packet's key, built by the first pass.
    keys: Vec<PacketKey>,
    /// Each packet's session lookup state, between the passes.
    prepared: Vec<Prepared>,
}

impl AclPluginFa {
    pub fn new(dir: Direction) -> Self {
        Self {
            dir,
            keys: vec![PacketKey::default(); FRAME_SIZE],
            prepared: vec![Prepared::EMPTY; FRAME_SIZE],
        }
    }
}

/// Whether a new session is control traffic (SYSTEM.md 6.9): the host link `tap0` is its
/// receive or transmit interface, or (on input, before the route is known) the FIB sends the
/// destination to the host link or to the data plane itself. Asked only when a session is
/// created, so the lookup costs nothing on established flows.
fn is_control(l3: &L3Config, rx: u32, sw: u32, input: bool, fib_index: u32, dst: u32) -> bool {
    let host = |i: u32| {
        l3.interface(i)
            .is_some_and(|f| f.kind == InterfaceKind::Host)
    };
    if host(rx) || host(sw) {
        return true;
    }
    if !input {
        return false;
    }
    let Some(table) = l3.fib.tables.table(fib_index) else {
        return false;
    };
    let mut lb = table.lookup(dst);
    // Recursive routes resolve through at most a few load-balances.
    for _ in 0..4 {
        let Some(l) = l3.fib.load_balances.get(lb as usize) else {
            return false;
        };
        match l.pick(0) {
            Dpo::Adjacency(a) => {
                return l3
                    .fib
                    .adjacencies
                    .get(a as usize)
                    .is_some_and(|a| host(a.sw_if_index))
            }
            Dpo::Glean { sw_if_index } => return host(sw_if_index),
            Dpo::Receive { .. } => return true,
            Dpo::LoadBalance(i) => lb = i,
            Dpo::Drop | Dpo::Reject => return false,
        }
    }
    false
}

impl<R: AclRuntime> Node<R> for AclPluginFa {
    fn name(&self) -> &str {
        match self.dir {
            Direction::Input => "acl-plugin-in-ip4-fa",
            Direction::Output => "acl-plugin-out-ip4-fa",
        }
    }

    fn next_nodes(&self) -> Vec<String> {
        vec!["error-drop".into()]
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &ERROR_STRINGS
    }

    /// Three passes over the frame (SYSTEM.md 11.1 rule 4), as the NAT nodes: every packet's key,
    /// session key and hash first (index buckets start loading), then every candidate session
    /// (sessions start loading), then the decisions in frame order, which verify the candidates.
    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (l3, tables, st) = rt.acl();
        let dir = self.dir;
        let input = dir == Direction::Input;
        let (slot, l3_offset) = if input { (RX, 0) } else { (TX, L2_HEADER) };
        let now = ctx.now_ns;
        let (mut checked, mut permit, mut new, mut exist, mut restart, mut stale) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let n = frame.len().min(nexts.len());
        if n > self.keys.len() {
            // Frames are at most FRAME_SIZE packets; never taken by the dispatcher.
            self.keys.resize(n, PacketKey::default());
            self.prepared.resize(n, Prepared::EMPTY);
        }
        // All of length `n`: indexing below needs no bounds checks.
        let (frame, nexts) = (&frame[..n], &mut nexts[..n]);
        let keys = &mut self.keys[..n];
        let prepared = &mut self.prepared[..n];
        let mut lookups = false;
        for k in 0..n {
            let bi = frame[k];
            let sw = ctx.pool.meta(bi).sw_if_index[slot];
            keys[k] =
                PacketKey::parse(ctx.pool.data(bi).get(l3_offset..).unwrap_or(&[]), sw, input);
            st.prepare_into(&keys[k], dir, &mut prepared[k]);
            lookups |= prepared[k].has_hash();
        }
        // A frame whose interfaces have no sessions (stateless tables) skips both prefetch
        // passes.
        if lookups {
            // A tight loop, so that many bucket loads are in flight at once.
            for p in prepared.iter() {
                st.prefetch_bucket(p);
            }
            for p in prepared.iter_mut() {
                st.prefetch_candidate(p);
            }
        }
        for k in 0..n {
            let (bi, key) = (frame[k], &keys[k]);
            let m = ctx.pool.meta(bi);
            let (sw, rx, pos, fib_index, traced) = (
                m.sw_if_index[slot],
                m.sw_if_index[RX],
                m.feature_cursor as usize,
                m.fib_index,
                m.is_traced(),
            );
            let v = st.decide_prepared(tables, key, &prepared[k], dir, now, || {
                is_control(l3, rx, sw, input, fib_index, key.dst)
            });
            checked += 1;
            match v.action {
                1 => permit += 1,
                2 => new += 1,
                3 => exist += 1,
                _ => {}
            }
            restart += u64::from(v.class_changed);
            stale += u64::from(v.trace_bits & crate::session::TRACE_STALE_REMOVED != 0);
            let next = if v.action == 0 {
                let err = if v.refused_full {
                    ERR_TOO_MANY_SESSIONS
                } else {
                    ERR_DENY
                };
                drop_with(ctx, bi, err, NEXT_DROP)
            } else {
                let arc = l3.interface(sw).map_or(&[][..], |i| {
                    if input {
                        i.ip4_unicast_arc.as_slice()
                    } else {
                        i.ip4_output_arc.as_slice()
                    }
                });
                match feature_next(ctx, bi, arc, pos, NO_NEXT) {
                    NO_NEXT => drop_with(ctx, bi, ERR_NO_NEXT, NEXT_DROP),
                    n => n,
                }
            };
            nexts[k] = next;
            if traced {
                ctx.trace_with(bi, |_| AclTrace {
                    packet_info: key.words(),
                    sw_if_index: sw,
                    next_index: u32::from(next),
                    acl_index: v.acl_index,
                    rule_index: v.rule_index,
                    trace_bits: v.trace_bits,
                    action: v.action,
                    pad: [0; 3],
                });
            }
        }
        // Per frame, as VPP's `vlib_node_increment_counter`.
        for (code, n) in [
            (ERR_CHECK, checked),
            (ERR_PERMIT, permit),
            (ERR_NEW_SESSION, new),
            (ERR_EXIST_SESSION, exist),
            (ERR_RESTART_TIMER, restart),
            (ERR_STALE_SESSION, stale),
        ] {
            if n > 0 {
                ctx.count(code, n);
            }
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: AclTrace = read_record(data);
        format_acl_trace(&t, out);
    }
}

/// The two ACL nodes, input first.
pub fn nodes<R: AclRuntime + 'static>() -> [Box<dyn Node<R>>; 2] {
    [
        Box::new(AclPluginFa::new(Direction::Input)),
        Box::new(AclPluginFa::new(Direction::Output)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        words: [u64; 6],
        sw: u32,
        next: u32,
        action: u8,
        acl: i32,
        rule: i32,
        bits: u32,
    ) -> String {
        let t = AclTrace {
            packet_info: words,
            sw_if_index: sw,
            next_index: next,
            acl_index: acl as u32,
            rule_index: rule as u32,
            trace_bits: bits,
            action,
            pad: [0; 3],
        };
        // Through the record bytes, as `show trace` does.
        let back: AclTrace = read_record(t.as_bytes());
        let mut s = String::new();
        format_acl_trace(&back, &mut s);
        s
    }

    /// The four ACL records of the seed (POD_TO_SERVICE_HOST.md), byte for byte.
    #[test]
    fn seed_records() {
        assert_eq!(
            rec(
                [0, 0x0301010a00000000, 0, 0x55dd680a00000000, 0x000600060050b4e6, 0x0702ffff00000006],
                6, 2, 2, 3, 0, 0
            ),
            "  acl-plugin: sw_if_index 6, next index 2, action: 2, match: acl 3 rule 0 trace_bits 00000000\n\
             \x20 pkt info 0000000000000000 0301010a00000000 0000000000000000 55dd680a00000000 000600060050b4e6 0702ffff00000006\n\
             \x20  input sw_if_index 6 (lsb16 6) l3 ip4 10.1.1.3 -> 10.104.221.85 l4 proto 6 l4_valid 1 port 46310 -> 80 tcp flags (valid) 02 rsvd 0\n"
        );
        assert_eq!(
            rec(
                [0, 0x0301010a00000000, 0, 0x0200140a00000000, 0x000200061f90b4e6, 0x0502ffff00000002],
                2, 1, 1, 2, 3, 0
            ),
            "  acl-plugin: sw_if_index 2, next index 1, action: 1, match: acl 2 rule 3 trace_bits 00000000\n\
             \x20 pkt info 0000000000000000 0301010a00000000 0000000000000000 0200140a00000000 000200061f90b4e6 0502ffff00000002\n\
             \x20  output sw_if_index 2 (lsb16 2) l3 ip4 10.1.1.3 -> 10.20.0.2 l4 proto 6 l4_valid 1 port 46310 -> 8080 tcp flags (valid) 02 rsvd 0\n"
        );
        assert_eq!(
            rec(
                [0, 0x0200140a00000000, 0, 0x0301010a00000000, 0x00020006b4e61f90, 0x0712ffff00000002],
                2, 1, 2, 3, 0, 0
            ),
            "  acl-plugin: sw_if_index 2, next index 1, action: 2, match: acl 3 rule 0 trace_bits 00000000\n\
             \x20 pkt info 0000000000000000 0200140a00000000 0000000000000000 0301010a00000000 00020006b4e61f90 0712ffff00000002\n\
             \x20  input sw_if_index 2 (lsb16 2) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 8080 -> 46310 tcp flags (valid) 12 rsvd 0\n"
        );
        assert_eq!(
            rec(
                [0, 0x55dd680a00000000, 0, 0x0301010a00000000, 0x00060006b4e60050, 0x0512ffff00000006],
                6, 1, 3, -1, 32, 0x8000_0000
            ),
            "  acl-plugin: sw_if_index 6, next index 1, action: 3, match: acl -1 rule 32 trace_bits 80000000\n\
             \x20 pkt info 0000000000000000 55dd680a00000000 0000000000000000 0301010a00000000 00060006b4e60050 0512ffff00000006\n\
             \x20  output sw_if_index 6 (lsb16 6) l3 ip4 10.104.221.85 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 80 -> 46310 tcp flags (valid) 12 rsvd 0\n"
        );
        let none = rec([0, 0, 0, 0, 0, 0x0400ffff00000001], 1, 0, 0, -1, -1, 0);
        assert!(none.starts_with(
            "  acl-plugin: sw_if_index 1, next index 0, action: 0, match: acl -1 rule -1 trace_bits 00000000\n"
        ));
    }

    /// The keys the node builds from the seed's packets give the seed's words.
    #[test]
    fn seed_words_from_packets() {
        let syn_ack_ip = [
            0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x25, 0xa3, 0x0a, 0x14,
            0x00, 0x02, 0x0a, 0x01, 0x01, 0x03, 0x1f, 0x90, 0xb4, 0xe6, 0x57, 0xf7, 0xb0, 0xc7,
            0xba, 0x5b, 0xf3, 0x6e, 0xa0, 0x12, 0x71, 0x20, 0xda, 0xb4, 0x00, 0x00,
        ];
        let k = PacketKey::parse(&syn_ack_ip, 2, true);
        assert_eq!(
            k.words(),
            [
                0,
                0x0200140a00000000,
                0,
                0x0301010a00000000,
                0x00020006b4e61f90,
                0x0712ffff00000002
            ]
        );
    }
}
