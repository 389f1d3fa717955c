//! `<ifname>-output`: hands a frame of packets to the device driver of one interface.

use std::fmt::Write;

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, CONSUMED};
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

pub struct InterfaceOutput {
    node_name: String,
    pub sw_if_index: u32,
}

impl InterfaceOutput {
    pub fn new(ifname: &str, sw_if_index: u32) -> Self {
        Self {
            node_name: format!("{ifname}-output"),
            sw_if_index,
        }
    }
}

impl<R: L3Runtime> Node<R> for InterfaceOutput {
    fn name(&self) -> &str {
        &self.node_name
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for &bi in frame {
            if ctx.pool.meta(bi).is_traced() {
                let d = ctx.pool.data(bi);
                let n = d.len().min(CAPTURE);
                let mut rec = OutputTrace {
                    sw_if_index: self.sw_if_index,
                    len: n as u8,
                    frame: [0; CAPTURE],
                    pad: [0; 3],
                };
                rec.frame[..n].copy_from_slice(&d[..n]);
                ctx.trace(bi, &rec);
            }
        }
        nexts.iter_mut().for_each(|n| *n = CONSUMED);
        let (_, st) = rt.l3();
        st.device.tx_burst(self.sw_if_index, ctx.pool, frame);
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
