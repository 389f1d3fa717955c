//! `ip4-icmp-input`: ICMP to a local address. Echo requests go to `ip4-icmp-echo-request`; other
//! types are counted and dropped.

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx};
use vecnet_wire::{checksum, pretty};

use crate::common::{drop_with, IpCapture};
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;
const NEXT_ECHO_REQUEST: u16 = 1;

const ERR_UNKNOWN_TYPE: u16 = 0;
const ERR_BAD_CHECKSUM: u16 = 1;
const ERR_TOO_SHORT: u16 = 2;

pub struct Ip4IcmpInput;

impl<R: L3Runtime> Node<R> for Ip4IcmpInput {
    fn name(&self) -> &str {
        "ip4-icmp-input"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-icmp-echo-request"]
            .map(String::from)
            .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &["unknown type", "bad ICMP checksum", "ICMP packet too short"]
    }

    fn process(&mut self, _rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.trace_with(bi, |p| IpCapture::new(p.data(bi)));
            let ip = ctx.pool.data(bi);
            let ihl = ((ip.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
            let Some(icmp) = ip.get(ihl..).filter(|i| i.len() >= 8) else {
                *next = drop_with(ctx, bi, ERR_TOO_SHORT, NEXT_DROP);
                continue;
            };
            if checksum::checksum(icmp) != 0 {
                *next = drop_with(ctx, bi, ERR_BAD_CHECKSUM, NEXT_DROP);
                continue;
            }
            *next = match (icmp[0], icmp[1]) {
                (8, 0) => NEXT_ECHO_REQUEST,
                _ => drop_with(ctx, bi, ERR_UNKNOWN_TYPE, NEXT_DROP),
            };
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: IpCapture = read_record(data);
        pretty::ip4_block(out, t.bytes(), 2);
    }
}
