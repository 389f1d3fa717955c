//! `nat44-in2out` (fast path): on `in` interfaces, translates packets of plain (identity, and
//! the replies of dynamic) sessions with one lookup; everything else — misses, load-balanced and
//! twice-NAT sessions — goes to `nat44-in2out-slowpath` (era A: the seed's `FAST_PATH … session
//! -1`), and so do the outbound packets of a dynamic SNAT flow, which the slow path passes
//! untranslated: the uplink's output feature translates them. TTL ≤ 1 packets go to
//! `ip4-icmp-error` before any translation.

use vecnet_graph::{FormatContext, Node, NodeCtx, RX};
use vecnet_nodes::icmp_error::{set_icmp_error, ICMP_TIME_EXCEEDED};

use crate::common::{format_nat_trace, hit_input, FrameScratch, NatTrace};
use crate::runtime::NatRuntime;
use crate::session::SessionKind;

pub(crate) const NEXT_LOOKUP: u16 = 0;
pub(crate) const NEXT_ICMP_ERROR: u16 = 2;
pub(crate) const NEXT_SLOW_PATH: u16 = 3;

pub(crate) const IN2OUT_NEXTS: [&str; 5] = [
    "ip4-lookup",
    "error-drop",
    "ip4-icmp-error",
    "nat44-in2out-slowpath",
    "nat44-in2out-reass",
];

const ERR_PROCESSED: u16 = 0;
const ERR_TTL: u16 = 1;

#[derive(Default)]
pub struct Nat44In2Out {
    scratch: FrameScratch,
}

impl Nat44In2Out {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: NatRuntime> Node<R> for Nat44In2Out {
    fn name(&self) -> &str {
        "nat44-in2out"
    }

    fn next_nodes(&self) -> Vec<String> {
        IN2OUT_NEXTS.map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "good in2out packets processed",
            "ip4 ttl <= 1 before translation",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (_, t, st) = rt.nat();
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
            *next = NEXT_SLOW_PATH;
            if ip.get(8).is_some_and(|&ttl| ttl <= 1) {
                set_icmp_error(m, ICMP_TIME_EXCEEDED, 0, 0);
                ctx.count(ERR_TTL, 1);
                *next = NEXT_ICMP_ERROR;
            } else if let Some((p, h, cand)) = sc.get(k) {
                if let Some((i, dir)) = st.sessions.lookup_hashed(&p.key, h, cand, now, &timeouts) {
                    // Not the outbound packets of a dynamic SNAT flow: the uplink's output
                    // feature translates them. They go on through the slow path like any other
                    // packet with nothing to translate here (`session -1` in both records, as
                    // the flow's first packet and as SYSTEM.md 5.2 shows them).
                    let plain = st.sessions.get(i).is_some_and(|s| {
                        s.kind != SessionKind::LoadBalanced && !s.twice_nat && s.on_input(dir)
                    });
                    if plain {
                        hit_input(st, i, dir, ip, p, m, now);
                        session = i;
                        *next = NEXT_LOOKUP;
                        processed += 1;
                    }
                }
            }
            ctx.trace_with(bi, |_| NatTrace {
                sw_if_index: rx,
                next_index: *next as u32,
                session,
            });
        }
        ctx.count(ERR_PROCESSED, processed);
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_nat_trace(data, "NAT44_IN2OUT_FAST_PATH", "session", out);
    }
}
