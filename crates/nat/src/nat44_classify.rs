//! NAT classification on interfaces that are both `in` and `out` (SYSTEM.md 4.5.11, 5.2):
//! `nat44-out2in` when the destination is a main-pool address or the external side of a static
//! mapping, else `nat44-in2out`. Era A prints no trace record for it, and neither does vecnet.

use vecnet_graph::{FormatContext, Node, NodeCtx};

use crate::runtime::NatRuntime;
use crate::translate::parse;

const NEXT_OUT2IN: u16 = 0;
const NEXT_IN2OUT: u16 = 1;

pub struct Nat44Classify;

impl<R: NatRuntime> Node<R> for Nat44Classify {
    fn name(&self) -> &str {
        "nat44-classify"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["nat44-out2in", "nat44-in2out"].map(String::from).to_vec()
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (_, t, _) = rt.nat();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            *next = match parse(ctx.pool.data(bi)) {
                Some(p) if t.wants_out2in(p.key.dst, p.key.dport, p.key.proto) => NEXT_OUT2IN,
                _ => NEXT_IN2OUT,
            };
        }
    }

    fn format_trace(&self, _: &[u8], _: &dyn FormatContext, _: &mut String) {}
}
