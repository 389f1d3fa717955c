//! `ip4-icmp-echo-request`: answers echo requests to local addresses in place — addresses
//! swapped, type echo_reply, ICMP checksum patched, TTL 64 — then routes the reply normally.

use vecnet_graph::{buffer::flags, read_record, FormatContext, Node, NodeCtx, INVALID, TX};
use vecnet_wire::{checksum, pretty};

use crate::common::IpCapture;
use crate::runtime::L3Runtime;

const NEXT_LOOKUP: u16 = 0;
const ERR_REPLIES: u16 = 0;

pub struct Ip4IcmpEchoRequest;

impl<R: L3Runtime> Node<R> for Ip4IcmpEchoRequest {
    fn name(&self) -> &str {
        "ip4-icmp-echo-request"
    }

    fn next_nodes(&self) -> Vec<String> {
        vec!["ip4-lookup".into()]
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &["echo replies sent"]
    }

    fn process(&mut self, _rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.trace_with(bi, |p| IpCapture::new(p.data(bi)));
            // ip4-icmp-input checked the lengths and the ICMP checksum.
            let p = ctx.pool.data_mut(bi);
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            let (src, dst) = ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]]);
            p[12..16].copy_from_slice(&dst);
            p[16..20].copy_from_slice(&src);
            p[8] = 64;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&p[..ihl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
            p[ihl] = 0;
            let mut c = checksum::update_u16(u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]), old, 0);
            // Eqn. 3 gives 0x0000 where a full recomputation gives 0xffff only when the rest of
            // the reply is all zero (id 0, seq 0, zero payload); receivers reject the former.
            if c == 0
                && p[ihl..]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == 0 || i == 2 || i == 3)
            {
                c = 0xffff;
            }
            p[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
            let m = ctx.pool.meta_mut(bi);
            m.sw_if_index[TX] = INVALID;
            // A new packet: the request's NAT reply mark does not carry over to it.
            m.flags = (m.flags | flags::LOCALLY_ORIGINATED) & !flags::NAT_REPLY;
            ctx.count(ERR_REPLIES, 1);
            *next = NEXT_LOOKUP;
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: IpCapture = read_record(data);
        pretty::ip4_block(out, t.bytes(), 2);
    }
}
