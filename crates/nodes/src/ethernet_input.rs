//! `ethernet-input`: IPv4 to `ip4-input`, ARP to `arp-input`, everything else dropped; a unicast
//! frame for another MAC is dropped (`l3 mac mismatch`).

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, RX};
use vecnet_wire::{pretty, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::common::drop_with;
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;
const NEXT_IP4_INPUT: u16 = 1;
const NEXT_ARP_INPUT: u16 = 2;

const ERR_UNKNOWN_TYPE: u16 = 0;
const ERR_MAC_MISMATCH: u16 = 1;
const ERR_TOO_SHORT: u16 = 2;
const ERR_NO_INTERFACE: u16 = 3;
const ERR_IP6: u16 = 4;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct EthernetInputTrace {
    len: u8,
    header: [u8; 14],
}

pub struct EthernetInput;

impl<R: L3Runtime> Node<R> for EthernetInput {
    fn name(&self) -> &str {
        "ethernet-input"
    }

    fn next_nodes(&self) -> Vec<String> {
        ["error-drop", "ip4-input", "arp-input"]
            .map(String::from)
            .to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "unknown ethernet type",
            "l3 mac mismatch",
            "ethernet frame too short",
            "unknown interface",
            "ip6 not enabled",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, _) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let rx = ctx.pool.meta(bi).sw_if_index[RX];
            ctx.trace_with(bi, |p| {
                let data = p.data(bi);
                let n = data.len().min(14);
                let mut rec = EthernetInputTrace {
                    len: n as u8,
                    header: [0; 14],
                };
                rec.header[..n].copy_from_slice(&data[..n]);
                rec
            });
            let data = ctx.pool.data(bi);
            let Ok(eth) = EthernetFrame::new_checked(data) else {
                *next = drop_with(ctx, bi, ERR_TOO_SHORT, NEXT_DROP);
                continue;
            };
            let Some(iface) = cfg.interface(rx) else {
                *next = drop_with(ctx, bi, ERR_NO_INTERFACE, NEXT_DROP);
                continue;
            };
            let dst = eth.dst_addr();
            if dst.is_unicast() && dst != iface.mac {
                *next = drop_with(ctx, bi, ERR_MAC_MISMATCH, NEXT_DROP);
                continue;
            }
            *next = match eth.ethertype() {
                ETHERTYPE_IPV4 => NEXT_IP4_INPUT,
                ETHERTYPE_ARP => NEXT_ARP_INPUT,
                vecnet_wire::ETHERTYPE_IPV6 => {
                    *next = drop_with(ctx, bi, ERR_IP6, NEXT_DROP);
                    continue;
                }
                _ => {
                    *next = drop_with(ctx, bi, ERR_UNKNOWN_TYPE, NEXT_DROP);
                    continue;
                }
            };
            ctx.pool.advance(bi, 14);
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: EthernetInputTrace = read_record(data);
        out.push_str("  ");
        pretty::ethernet_line(out, &t.header[..(t.len as usize).min(14)]);
        out.push('\n');
    }
}
