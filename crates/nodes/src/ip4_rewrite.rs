//! `ip4-rewrite`: TTL check and decrement (incremental checksum), MTU check, prepends the
//! adjacency's precomputed Ethernet header, sets `sw_if_index[TX]`, then the tx interface's
//! `ip4-output` feature arc.

use std::fmt::Write;
use std::net::Ipv4Addr;

use vecnet_graph::{buffer::flags, read_record, FormatContext, Node, NodeCtx, TX};
use vecnet_wire::{checksum, pretty};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::common::drop_with;
use crate::icmp_error::{set_icmp_error, CODE_FRAG_NEEDED, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED};
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;
const NEXT_ICMP_ERROR: u16 = 1;
const NEXT_ARP: u16 = 2;

const ERR_TTL: u16 = 0;
const ERR_MTU: u16 = 1;
const ERR_BAD_ADJ: u16 = 2;
const ERR_NO_HEADROOM: u16 = 3;
const ERR_NO_OUTPUT: u16 = 4;

const DUMP_LEN: usize = 60;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RewriteTrace {
    tx_sw_if_index: u32,
    adj_index: u32,
    next_hop: [u8; 4],
    flow_hash: u32,
    rewrite: [u8; 14],
    dump_len: u8,
    pad: u8,
    dump: [u8; DUMP_LEN],
}

pub struct Ip4Rewrite;

impl<R: L3Runtime> Node<R> for Ip4Rewrite {
    fn name(&self) -> &str {
        "ip4-rewrite"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-icmp-error", "ip4-arp"]
            .map(String::from)
            .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "ip4 ttl <= 1",
            "ip4 MTU exceeded and DF not set (fragmentation not supported)",
            "invalid adjacency",
            "no headroom for rewrite",
            "no output arc for interface",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, st) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let ai = ctx.pool.meta(bi).adj_index;
            let (Some(adj), Some(rw)) = (
                cfg.fib.adjacencies.get(ai as usize),
                st.rewrites.get(ai as usize),
            ) else {
                *next = drop_with(ctx, bi, ERR_BAD_ADJ, NEXT_DROP);
                continue;
            };
            if !rw.valid {
                *next = NEXT_ARP;
                continue;
            }
            // One borrow of the buffer for all per-packet work: metadata and the raw bytes,
            // headroom included, so the L2 header is written without a second lookup.
            let (m, raw) = ctx.pool.raw_mut(bi);
            let off = m.current_data as usize;
            let len = m.current_length as usize;
            let Some(ip) = raw
                .get_mut(off..off + len)
                .filter(|ip| ip.len() >= 20 && off >= 14)
            else {
                *next = drop_with(ctx, bi, ERR_NO_HEADROOM, NEXT_DROP);
                continue;
            };
            // As VPP: packets the data plane generated itself (echo replies, ICMP errors) leave
            // with the TTL they were built with.
            let local = m.flags & flags::LOCALLY_ORIGINATED != 0;
            if ip[8] <= 1 && !local {
                set_icmp_error(m, ICMP_TIME_EXCEEDED, 0, 0);
                ctx.count(ERR_TTL, 1);
                *next = NEXT_ICMP_ERROR;
                continue;
            }
            if len > adj.mtu as usize && m.flags & flags::GSO == 0 {
                if ip[6] & 0x40 != 0 {
                    set_icmp_error(m, ICMP_DEST_UNREACH, CODE_FRAG_NEEDED, adj.mtu);
                    *next = NEXT_ICMP_ERROR;
                } else {
                    *next = drop_with(ctx, bi, ERR_MTU, NEXT_DROP);
                }
                continue;
            }
            // TTL − 1: the 16-bit word (ttl, proto) drops by 0x0100 (RFC 1624, eqn. 3).
            if !local {
                let old = u16::from_be_bytes([ip[8], ip[9]]);
                ip[8] -= 1;
                let c =
                    checksum::update_u16(u16::from_be_bytes([ip[10], ip[11]]), old, old - 0x0100);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            raw[off - 14..off].copy_from_slice(&rw.bytes);
            m.current_data -= 14;
            m.current_length += 14;
            m.sw_if_index[TX] = adj.sw_if_index;
            m.feature_cursor = 0;
            let traced = m.is_traced();
            let flow_hash = m.flow_hash;
            *next = match ctx.arc_to_node(adj.output_node) {
                Some(n) => n,
                None => drop_with(ctx, bi, ERR_NO_OUTPUT, NEXT_DROP),
            };
            if traced {
                let d = ctx.pool.data(bi);
                let n = d.len().min(DUMP_LEN);
                let mut rec = RewriteTrace {
                    tx_sw_if_index: adj.sw_if_index,
                    adj_index: ai,
                    next_hop: adj.next_hop.octets(),
                    flow_hash,
                    rewrite: rw.bytes,
                    dump_len: n as u8,
                    pad: 0,
                    dump: [0; DUMP_LEN],
                };
                rec.dump[..n].copy_from_slice(&d[..n]);
                ctx.trace(bi, &rec);
            }
        }
    }

    fn format_trace(&self, data: &[u8], fctx: &dyn FormatContext, out: &mut String) {
        let t: RewriteTrace = read_record(data);
        let ifname = fctx.interface_name(t.tx_sw_if_index).unwrap_or("unknown");
        let _ = write!(
            out,
            "  tx_sw_if_index {} dpo-idx {} : ipv4 via {} {}: ",
            t.tx_sw_if_index,
            t.adj_index,
            Ipv4Addr::from(t.next_hop),
            ifname
        );
        for b in t.rewrite {
            let _ = write!(out, "{b:02x}");
        }
        let _ = writeln!(out, " flow hash: 0x{:08x}", t.flow_hash);
        pretty::hex_dump_lines(out, &t.dump[..(t.dump_len as usize).min(DUMP_LEN)], 2);
    }
}
