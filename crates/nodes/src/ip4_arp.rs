//! `ip4-arp` (incomplete adjacency: ARP for the next hop) and `ip4-glean` (connected subnet:
//! ARP for the destination). The packet is turned into the ARP request in place (no allocation)
//! and sent straight to the interface's output node; requests are throttled to one per address
//! per second.

use std::net::Ipv4Addr;

use vecnet_graph::{buffer::flags, FormatContext, Node, NodeCtx, TX};

use crate::arp_input::build_request;
use crate::common::drop_with;
use crate::ip4_lookup::{format_lookup_trace, LookupTrace};
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;

const ERR_SENT: u16 = 0;
const ERR_THROTTLED: u16 = 1;
const ERR_NO_INTERFACE: u16 = 2;
const ERR_NO_SOURCE: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpMode {
    /// `ip4-arp`: the buffer's adjacency names the next hop.
    Incomplete,
    /// `ip4-glean`: the buffer's adjacency slot holds the interface; ARP for the destination.
    Glean,
}

pub struct Ip4Arp(pub ArpMode);

impl<R: L3Runtime> Node<R> for Ip4Arp {
    fn name(&self) -> &str {
        match self.0 {
            ArpMode::Incomplete => "ip4-arp",
            ArpMode::Glean => "ip4-glean",
        }
    }

    fn next_nodes(&self) -> Vec<String> {
        vec!["error-drop".into()]
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "ARP requests sent",
            "ARP requests throttled",
            "no interface for ARP request",
            "no source address for ARP request",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, st) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let m = *ctx.pool.meta(bi);
            let ip = ctx.pool.data(bi);
            let dst = match ip.get(16..20) {
                Some(d) => Ipv4Addr::new(d[0], d[1], d[2], d[3]),
                None => Ipv4Addr::UNSPECIFIED,
            };
            let (sw_if_index, target) = match self.0 {
                ArpMode::Incomplete => match cfg.fib.adjacencies.get(m.adj_index as usize) {
                    Some(a) => (a.sw_if_index, a.next_hop),
                    None => {
                        *next = drop_with(ctx, bi, ERR_NO_INTERFACE, NEXT_DROP);
                        continue;
                    }
                },
                ArpMode::Glean => (m.adj_index, dst),
            };
            if m.is_traced() {
                let rec = LookupTrace::new(m.fib_index, m.adj_index, m.flow_hash, ip);
                ctx.trace(bi, &rec);
            }
            let Some(iface) = cfg.interface(sw_if_index) else {
                *next = drop_with(ctx, bi, ERR_NO_INTERFACE, NEXT_DROP);
                continue;
            };
            let Some(src) = iface
                .ip4
                .iter()
                .find(|&&(a, l)| crate::config::same_subnet(a, target, l))
                .map(|&(a, _)| a)
                .or_else(|| iface.primary_ip4())
            else {
                *next = drop_with(ctx, bi, ERR_NO_SOURCE, NEXT_DROP);
                continue;
            };
            let out = ctx.arc_to_node(iface.output_node);
            if !st.arp_throttle.allow(target, ctx.now_ns) || out.is_none() {
                *next = drop_with(ctx, bi, ERR_THROTTLED, NEXT_DROP);
                continue;
            }
            // The packet that triggered the request is dropped; its buffer carries the request.
            ctx.pool.free_tail(bi);
            let ok = ctx.pool.retreat(bi, 14) && ctx.pool.set_length(bi, 42);
            if !ok || !build_request(ctx.pool.data_mut(bi), iface.mac, src, target) {
                *next = drop_with(ctx, bi, ERR_NO_SOURCE, NEXT_DROP);
                continue;
            }
            let mm = ctx.pool.meta_mut(bi);
            mm.sw_if_index[TX] = sw_if_index;
            mm.flags = (mm.flags | flags::LOCALLY_ORIGINATED) & !(flags::OFFLOAD_CSUM | flags::GSO);
            ctx.count(ERR_SENT, 1);
            *next = out.unwrap_or(NEXT_DROP);
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_lookup_trace(data, out);
    }
}
