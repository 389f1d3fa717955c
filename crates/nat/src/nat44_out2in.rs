//! `nat44-out2in`: on `out` interfaces. Finds the session by the packet's 5-tuple, else matches
//! a static (load-balancing) or identity mapping and creates one, else passes the packet
//! untranslated (forwarding mode: `session index -1`). The outbound packets of a dynamic SNAT
//! flow pass untranslated too, although their 5-tuple finds the session: the uplink's output
//! feature translates them.

use vecnet_graph::{FormatContext, Node, NodeCtx, RX};
use vecnet_nodes::common::drop_with;
use vecnet_nodes::icmp_error::{set_icmp_error, CODE_PORT_UNREACH, ICMP_DEST_UNREACH};
use vecnet_nodes::InterfaceKind;

use crate::common::{
    create_for_mapping, format_nat_trace, hit_input, FrameScratch, MappingOutcome, NatTrace,
};
use crate::runtime::NatRuntime;
use crate::session::{Dir, SessionKind};
use crate::translate::L4;

const NEXT_DROP: u16 = 0;
const NEXT_LOOKUP: u16 = 1;
const NEXT_ICMP_ERROR: u16 = 2;

const ERR_PROCESSED: u16 = 0;
const ERR_NO_ENDPOINT: u16 = 1;
const ERR_REJECTED: u16 = 2;
const ERR_MAX_SESSIONS: u16 = 3;
const ERR_OUT_OF_PORTS: u16 = 4;
const ERR_COLLISION: u16 = 5;
const ERR_TRUNCATED: u16 = 6;

#[derive(Default)]
pub struct Nat44Out2In {
    scratch: FrameScratch,
}

impl Nat44Out2In {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: NatRuntime> Node<R> for Nat44Out2In {
    fn name(&self) -> &str {
        "nat44-out2in"
    }

    fn next_nodes(&self) -> Vec<String> {
        [
            "error-drop",
            "ip4-lookup",
            "ip4-icmp-error",
            "nat44-out2in-reass",
        ]
        .map(String::from)
        .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "good out2in packets processed",
            "service has no usable endpoint (traffic policy)",
            "service has no endpoints (rejected)",
            "maximum sessions exceeded",
            "out of ports",
            "session key collision",
            "truncated L4 header",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (l3, t, st) = rt.nat();
        let timeouts = t.config.timeouts;
        let sc = &mut self.scratch;
        sc.prepare(ctx.pool, frame, &st.sessions, 0, 0);
        // Counted once per frame.
        let mut processed = 0u64;
        for (k, (&bi, next)) in frame.iter().zip(nexts.iter_mut()).enumerate() {
            let now = ctx.now_ns;
            let (m, ip) = ctx.pool.get_mut(bi);
            let rx = m.sw_if_index[RX];
            let mut session = u32::MAX;
            let Some((p, h, cand)) = sc.get(k) else {
                *next = drop_with(ctx, bi, ERR_TRUNCATED, NEXT_DROP);
                trace(ctx, bi, rx, *next, session);
                continue;
            };
            *next = NEXT_LOOKUP;
            if let Some((i, dir)) = st.sessions.lookup_hashed(&p.key, h, cand, now, &timeouts) {
                // A pod's next packet to the Internet finds its dynamic session by the inside
                // key: not out2in's (it matches outside keys only), it passes untranslated to
                // the uplink's output feature.
                if st.sessions.get(i).is_some_and(|s| s.on_input(dir)) {
                    hit_input(st, i, dir, ip, p, m, now);
                    session = i;
                    processed += 1;
                }
            } else if p.l4 == L4::Fragment || matches!(p.l4, L4::IcmpError { .. }) {
                // Nothing to create for these: forwarded untranslated.
            } else if let Some(mi) = t.mapping_for(p.key.dst, p.key.dport, p.key.proto) {
                let control = l3
                    .interface(rx)
                    .is_some_and(|i| i.kind == InterfaceKind::Host);
                match create_for_mapping(st, t, mi, p, control, now) {
                    MappingOutcome::Session(i) => {
                        hit_input(st, i, Dir::Forward, ip, p, m, now);
                        session = i;
                        processed += 1;
                    }
                    MappingOutcome::Reject => {
                        set_icmp_error(m, ICMP_DEST_UNREACH, CODE_PORT_UNREACH, 0);
                        ctx.count(ERR_REJECTED, 1);
                        *next = NEXT_ICMP_ERROR;
                    }
                    MappingOutcome::Drop => *next = drop_with(ctx, bi, ERR_NO_ENDPOINT, NEXT_DROP),
                    MappingOutcome::Full => *next = drop_with(ctx, bi, ERR_MAX_SESSIONS, NEXT_DROP),
                    MappingOutcome::OutOfPorts => {
                        *next = drop_with(ctx, bi, ERR_OUT_OF_PORTS, NEXT_DROP)
                    }
                    MappingOutcome::Collision => {
                        *next = drop_with(ctx, bi, ERR_COLLISION, NEXT_DROP)
                    }
                }
            } else if t
                .identity_for(p.key.dst, p.key.dport, p.key.proto)
                .is_some()
            {
                // Identity mapping (VXLAN to the node IP): a session, no rewrite.
                match st.sessions.create(
                    p.key,
                    p.key,
                    SessionKind::Identity,
                    false,
                    u32::MAX,
                    true,
                    now,
                    &timeouts,
                ) {
                    Ok(i) => {
                        hit_input(st, i, Dir::Forward, ip, p, m, now);
                        session = i;
                    }
                    Err(_) => *next = drop_with(ctx, bi, ERR_MAX_SESSIONS, NEXT_DROP),
                }
            }
            trace(ctx, bi, rx, *next, session);
        }
        ctx.count(ERR_PROCESSED, processed);
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_nat_trace(data, "NAT44_OUT2IN", "session index", out);
    }
}

#[inline]
fn trace(ctx: &mut NodeCtx<'_>, bi: u32, rx: u32, next: u16, session: u32) {
    ctx.trace_with(bi, |_| NatTrace {
        sw_if_index: rx,
        next_index: next as u32,
        session,
    });
}
