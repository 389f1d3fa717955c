//! `<ifname>-output`: hands a frame of packets to the device driver of one interface.

use std::fmt::Write;

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, CONSUMED, TX};
use vecnet_wire::{pretty, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::arp_input::format_arp;
use crate::runtime::L3Runtime;

const CAPTURE: usize = 76;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct OutputTrace {
    sw_if_index: u32,
    len: u8,
    frame: [u8; CAPTURE],
    pad: [u8; 3],
}

/// The output node of one interface name; packets carry their `sw_if_index[TX]`, so an
/// interface re-created under the same name with another index reuses the node.
pub struct InterfaceOutput {
    node_name: String,
}

impl InterfaceOutput {
    pub fn new(ifname: &str) -> Self {
        Self {
            node_name: format!("{ifname}-output"),
        }
    }
}

impl<R: L3Runtime> Node<R> for InterfaceOutput {
    fn name(&self) -> &str {
        &self.node_name
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (_, st) = rt.l3();
        for &bi in frame {
            let m = ctx.pool.meta(bi);
            let tx = m.sw_if_index[TX];
            if let Some(c) = st.if_counters.get_mut(tx as usize) {
                c.tx_packets += 1;
                c.tx_bytes += m.current_length as u64;
            }
            if m.is_traced() {
                let d = ctx.pool.data(bi);
                let n = d.len().min(CAPTURE);
                let mut rec = OutputTrace {
                    sw_if_index: tx,
                    len: n as u8,
                    frame: [0; CAPTURE],
                    pad: [0; 3],
                };
                rec.frame[..n].copy_from_slice(&d[..n]);
                ctx.trace(bi, &rec);
            }
        }
        nexts.iter_mut().for_each(|n| *n = CONSUMED);
        // Hand over runs of packets for the same interface in one call.
        let mut start = 0;
        while start < frame.len() {
            let tx = ctx.pool.meta(frame[start]).sw_if_index[TX];
            let mut end = start + 1;
            while end < frame.len() && ctx.pool.meta(frame[end]).sw_if_index[TX] == tx {
                end += 1;
            }
            st.device.tx_burst(tx, ctx.pool, &frame[start..end]);
            start = end;
        }
    }

    fn format_trace(&self, data: &[u8], fctx: &dyn FormatContext, out: &mut String) {
        let t: OutputTrace = read_record(data);
        let f = &t.frame[..(t.len as usize).min(CAPTURE)];
        let _ = writeln!(
            out,
            "  {}",
            fctx.interface_name(t.sw_if_index).unwrap_or("unknown")
        );
        out.push_str("  ");
        pretty::ethernet_line(out, f);
        out.push('\n');
        if f.len() > 14 {
            match u16::from_be_bytes([f[12], f[13]]) {
                ETHERTYPE_IPV4 => pretty::ip4_block(out, &f[14..], 2),
                ETHERTYPE_ARP => format_arp(out, &f[14..]),
                _ => {}
            }
        }
    }
}
