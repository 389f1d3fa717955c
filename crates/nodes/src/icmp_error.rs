//! `ip4-icmp-error`: turns the packet into an ICMP error about itself (time exceeded,
//! destination unreachable, fragmentation needed), sourced from the receiving interface's address
//! (the pod gateway on pod TAPs), quoting the original IP header + 8 bytes; rate-limited; then
//! `ip4-lookup`. Built in place in the headroom: no allocation.

use vecnet_graph::{
    buffer::flags, read_record, BufferMeta, FormatContext, Node, NodeCtx, INVALID, RX, TX,
};
use vecnet_wire::{checksum, pretty};

use crate::common::{drop_with, IpCapture};
use crate::runtime::L3Runtime;

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const CODE_PORT_UNREACH: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Asks `ip4-icmp-error` to build (`icmp_type`, `code`), with `mtu` for fragmentation-needed.
#[inline]
pub fn set_icmp_error(m: &mut BufferMeta, icmp_type: u8, code: u8, mtu: u16) {
    m.icmp_error = (icmp_type as u32) << 24 | (code as u32) << 16 | mtu as u32;
}

const NEXT_DROP: u16 = 0;
const NEXT_LOOKUP: u16 = 1;

const ERR_SENT: u16 = 0;
const ERR_SUPPRESSED: u16 = 1;
const ERR_RATE_LIMITED: u16 = 2;
const ERR_NO_SOURCE: u16 = 3;
const ERR_NO_HEADROOM: u16 = 4;

pub struct Ip4IcmpError;

impl<R: L3Runtime> Node<R> for Ip4IcmpError {
    fn name(&self) -> &str {
        "ip4-icmp-error"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-lookup"].map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "ICMP errors sent",
            "ICMP error not sent (error, fragment or non-unicast)",
            "ICMP errors rate limited",
            "no source address for ICMP error",
            "no headroom for ICMP error",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, st) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let meta = *ctx.pool.meta(bi);
            let ip = ctx.pool.data(bi);
            if !may_send_error_about(ip) {
                *next = drop_with(ctx, bi, ERR_SUPPRESSED, NEXT_DROP);
                continue;
            }
            let Some(src) = cfg
                .interface(meta.sw_if_index[RX])
                .and_then(|i| i.primary_ip4())
            else {
                *next = drop_with(ctx, bi, ERR_NO_SOURCE, NEXT_DROP);
                continue;
            };
            if !st.icmp_limiter.allow(ctx.now_ns) {
                *next = drop_with(ctx, bi, ERR_RATE_LIMITED, NEXT_DROP);
                continue;
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let quote = (ihl + 8).min(ip.len());
            let orig_src = [ip[12], ip[13], ip[14], ip[15]];
            // The error quotes only the head of the packet: the rest of a chain goes.
            ctx.pool.free_tail(bi);
            if !ctx.pool.retreat(bi, 28) {
                *next = drop_with(ctx, bi, ERR_NO_HEADROOM, NEXT_DROP);
                continue;
            }
            let total = 28 + quote;
            ctx.pool.set_length(bi, total as u16);
            let (icmp_type, code, mtu) = (
                (meta.icmp_error >> 24) as u8,
                (meta.icmp_error >> 16) as u8,
                meta.icmp_error as u16,
            );
            let p = ctx.pool.data_mut(bi);
            p[..20].copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[12..16].copy_from_slice(&src.octets());
            p[16..20].copy_from_slice(&orig_src);
            let c = checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p[20] = icmp_type;
            p[21] = code;
            p[22..24].copy_from_slice(&[0, 0]);
            p[24..26].copy_from_slice(&[0, 0]);
            p[26..28].copy_from_slice(&mtu.to_be_bytes());
            let c = checksum::checksum(&p[20..total]);
            p[22..24].copy_from_slice(&c.to_be_bytes());
            let m = ctx.pool.meta_mut(bi);
            m.sw_if_index[TX] = INVALID;
            // A new packet: nothing of the old one's offloads or NAT marks applies to it (a
            // NAT reply mark would let it leave the uplink without the output feature's SNAT).
            m.flags = (m.flags | flags::LOCALLY_ORIGINATED)
                & !(flags::OFFLOAD_CSUM | flags::GSO | flags::NAT_REPLY);
            m.icmp_error = 0;
            ctx.count(ERR_SENT, 1);
            ctx.trace_with(bi, |p| IpCapture::new(p.data(bi)));
            *next = NEXT_LOOKUP;
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: IpCapture = read_record(data);
        pretty::ip4_block(out, t.bytes(), 2);
    }
}

/// RFC 1812: no errors about ICMP errors, non-first fragments, or non-unicast packets.
fn may_send_error_about(ip: &[u8]) -> bool {
    if ip.len() < 20 {
        return false;
    }
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if frag_offset != 0 {
        return false;
    }
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let unicast = |a: u32| a != 0 && a != u32::MAX && a >> 28 != 0xe;
    if !unicast(src) || !unicast(dst) {
        return false;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[9] == 1 {
        match ip.get(ihl) {
            // Only echo request/reply and other informational types may trigger errors.
            Some(&t) if vecnet_wire::icmp::is_error_type(t) => return false,
            None => return false,
            _ => {}
        }
    }
    true
}
