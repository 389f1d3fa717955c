//! `ip4-local`: packets for an address of the data plane. ICMP goes to `ip4-icmp-input`, UDP to
//! `ip4-udp-lookup` (VXLAN termination, once it exists), anything else is dropped and counted.

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx};
use vecnet_wire::{pretty, IP_PROTO_ICMP, IP_PROTO_UDP};

use crate::common::{drop_with, IpCapture};
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;
const NEXT_ICMP: u16 = 1;
const NEXT_UDP: u16 = 2;

const ERR_UNKNOWN_PROTOCOL: u16 = 0;
const ERR_NO_LISTENER: u16 = 1;

pub struct Ip4Local {
    /// Whether `ip4-udp-lookup` exists in this graph (it comes with VXLAN).
    pub udp_lookup: bool,
}

impl<R: L3Runtime> Node<R> for Ip4Local {
    fn name(&self) -> &str {
        "ip4-local"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-icmp-input", "ip4-udp-lookup"]
            .map(String::from)
            .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &["unknown ip protocol", "no listener for local UDP port"]
    }

    fn process(&mut self, _rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.trace_with(bi, |p| IpCapture::new(p.data(bi)));
            let proto = ctx.pool.data(bi).get(9).copied().unwrap_or(0);
            *next = match proto {
                IP_PROTO_ICMP => NEXT_ICMP,
                IP_PROTO_UDP if self.udp_lookup => NEXT_UDP,
                IP_PROTO_UDP => drop_with(ctx, bi, ERR_NO_LISTENER, NEXT_DROP),
                _ => drop_with(ctx, bi, ERR_UNKNOWN_PROTOCOL, NEXT_DROP),
            };
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: IpCapture = read_record(data);
        pretty::ip4_block(out, t.bytes(), 4);
    }
}
