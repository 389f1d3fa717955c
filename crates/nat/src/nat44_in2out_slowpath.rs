//! `nat44-in2out-slowpath`: finds load-balanced, twice-NAT and hairpin sessions and reverses
//! their translation (source back to the VIP); with no session the packet passes untranslated
//! (`session -1`) — no dynamic SNAT on the input side (forwarding mode), and the outbound packets
//! of a dynamic SNAT flow pass as well: the uplink's output feature translates them.

use vecnet_graph::{FormatContext, Node, NodeCtx, RX};

use crate::common::{format_nat_trace, hit_input, FrameScratch, NatTrace};
use crate::nat44_in2out::{IN2OUT_NEXTS, NEXT_LOOKUP};
use crate::runtime::NatRuntime;

const ERR_PROCESSED: u16 = 0;

#[derive(Default)]
pub struct Nat44In2OutSlowPath {
    scratch: FrameScratch,
}

impl Nat44In2OutSlowPath {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<R: NatRuntime> Node<R> for Nat44In2OutSlowPath {
    fn name(&self) -> &str {
        "nat44-in2out-slowpath"
    }

    fn next_nodes(&self) -> Vec<String> {
        IN2OUT_NEXTS.map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &["good in2out packets processed"]
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
            if let Some((p, h, cand)) = sc.get(k) {
                if let Some((i, dir)) = st.sessions.lookup_hashed(&p.key, h, cand, now, &timeouts) {
                    // The outbound packets of a dynamic SNAT flow pass: the output feature
                    // translates them.
                    if st.sessions.get(i).is_some_and(|s| s.on_input(dir)) {
                        hit_input(st, i, dir, ip, p, m, now);
                        session = i;
                        processed += 1;
                    }
                }
            }
            *next = NEXT_LOOKUP;
            ctx.trace_with(bi, |_| NatTrace {
                sw_if_index: rx,
                next_index: *next as u32,
                session,
            });
        }
        ctx.count(ERR_PROCESSED, processed);
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_nat_trace(data, "NAT44_IN2OUT_SLOW_PATH", "session", out);
    }
}
