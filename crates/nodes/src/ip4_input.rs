//! `ip4-input`: validates the IPv4 header (version, header length, total length against the
//! frame, header checksum, TTL), trims Ethernet padding, then enters the receiving interface's
//! `ip4-unicast` feature arc. TTL 0 goes to `ip4-icmp-error` (time exceeded).

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, RX};
use vecnet_wire::{checksum, pretty};

use crate::common::{drop_with, feature_next, IpCapture};
use crate::icmp_error::{set_icmp_error, ICMP_TIME_EXCEEDED};
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;
const NEXT_LOOKUP: u16 = 1;
const NEXT_ICMP_ERROR: u16 = 2;

pub const ERR_TOO_SHORT: u16 = 0;
pub const ERR_BAD_LENGTH: u16 = 1;
pub const ERR_BAD_CHECKSUM: u16 = 2;
pub const ERR_VERSION: u16 = 3;
pub const ERR_HEADER_LENGTH: u16 = 4;
pub const ERR_TTL: u16 = 5;
pub const ERR_DST_NOT_UNICAST: u16 = 6;
pub const ERR_NO_INTERFACE: u16 = 7;

pub struct Ip4Input;

impl<R: L3Runtime> Node<R> for Ip4Input {
    fn name(&self) -> &str {
        "ip4-input"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-lookup", "ip4-icmp-error"]
            .map(String::from)
            .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "ip4 length < 20 bytes",
            "ip4 length > l2 length",
            "bad ip4 checksum",
            "ip4 version != 4",
            "ip4 header length < 20 bytes",
            "ip4 ttl <= 1",
            "ip4 destination not unicast",
            "unknown interface",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, _) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.trace_with(bi, |p| IpCapture::new(p.data(bi)));
            // A GSO super-frame spans a chain of buffers: its length is the chain's.
            let chained = ctx.pool.meta(bi).next_buffer != vecnet_graph::INVALID;
            let chain_len = if chained {
                ctx.pool.chain_length(bi)
            } else {
                0
            };
            let (m, ip) = ctx.pool.get_mut(bi);
            let total_len = match check(ip, chain_len) {
                Ok(t) => t,
                Err(e) => {
                    *next = drop_with(ctx, bi, e, NEXT_DROP);
                    continue;
                }
            };
            let (ttl, dst0, dst_bcast) = (ip[8], ip[16], ip[16..20] == [255; 4]);
            // Ethernet pads short frames; the packet ends where the IP header says. (A chain
            // carries no padding and keeps its buffers' lengths.)
            if !chained {
                m.current_length = total_len;
            }
            if dst0 >> 4 == 0xe || dst_bcast {
                *next = drop_with(ctx, bi, ERR_DST_NOT_UNICAST, NEXT_DROP);
                continue;
            }
            let Some(iface) = cfg.interface(m.sw_if_index[RX]) else {
                *next = drop_with(ctx, bi, ERR_NO_INTERFACE, NEXT_DROP);
                continue;
            };
            m.fib_index = iface.fib_index;
            if ttl == 0 {
                set_icmp_error(m, ICMP_TIME_EXCEEDED, 0, 0);
                ctx.count(ERR_TTL, 1);
                *next = NEXT_ICMP_ERROR;
                continue;
            }
            *next = feature_next(ctx, bi, &iface.ip4_unicast_arc, usize::MAX, NEXT_LOOKUP);
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: IpCapture = read_record(data);
        pretty::ip4_block(out, t.bytes(), 2);
    }
}

/// Validates an IPv4 header; returns the total length or the error code. `chain_len` is the
/// length of the whole packet when it spans a buffer chain (0 otherwise).
#[inline]
pub fn check(ip: &[u8], chain_len: usize) -> Result<u16, u16> {
    if ip.len() < 20 {
        return Err(ERR_TOO_SHORT);
    }
    if ip[0] >> 4 != 4 {
        return Err(ERR_VERSION);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ERR_HEADER_LENGTH);
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]);
    if (total as usize) < ihl {
        return Err(ERR_TOO_SHORT);
    }
    if total as usize > ip.len().max(chain_len) {
        return Err(ERR_BAD_LENGTH);
    }
    if !header_checksum_ok(&ip[..ihl]) {
        return Err(ERR_BAD_CHECKSUM);
    }
    Ok(total)
}

/// One's-complement sum of the header (checksum field included) folds to 0xffff when valid.
/// Word-at-a-time over 32-bit loads: the common 20-byte header is five loads.
#[inline]
fn header_checksum_ok(h: &[u8]) -> bool {
    let mut acc: u64 = 0;
    let mut chunks = h.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    // IHL is a multiple of 4 bytes, so there is no remainder; be safe anyway.
    if !chunks.remainder().is_empty() {
        return checksum::checksum(h) == 0;
    }
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc == 0xffff
}
