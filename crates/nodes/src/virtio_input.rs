//! `virtio-input`: receives frames from every TAP (pods and `tap0`) through the worker's
//! device I/O; the virtio-net header is already parsed into buffer metadata.

use std::fmt::Write;

use vecnet_graph::{
    buffer::flags, read_record, FormatContext, Node, NodeCtx, NodeKind, VirtioNetHdr,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::runtime::L3Runtime;

/// Next index of `ethernet-input`, in VPP's device-input order.
pub const NEXT_ETHERNET_INPUT: u16 = 4;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct VirtioInputTrace {
    hw_if_index: u32,
    next_index: u32,
    vring: u32,
    len: u32,
    hdr: [u8; 12],
}

pub struct VirtioInput;

impl<R: L3Runtime> Node<R> for VirtioInput {
    fn name(&self) -> &str {
        "virtio-input"
    }

    fn kind(&self) -> NodeKind {
        NodeKind::Input
    }

    fn next_nodes(&self) -> Vec<String> {
        // VPP's device-input next order; nodes vecnet does not have resolve to error-drop.
        [
            "ip4-input-no-checksum",
            "ip4-input",
            "ip6-input",
            "mpls-input",
            "ethernet-input",
            "error-drop",
        ]
        .map(String::from)
        .to_vec()
    }

    fn process(&mut self, _: &mut R, _: &mut NodeCtx<'_>, _: &[u32], _: &mut [u16]) {}

    fn poll(
        &mut self,
        rt: &mut R,
        ctx: &mut NodeCtx<'_>,
        frame: &mut [u32],
        nexts: &mut [u16],
    ) -> usize {
        let (_, st) = rt.l3();
        let n = st.device.rx_burst(ctx.pool, frame);
        let tracing = ctx.trace.any_quota();
        for (&bi, next) in frame[..n].iter().zip(nexts.iter_mut()) {
            *next = NEXT_ETHERNET_INPUT;
            let m = ctx.pool.meta_mut(bi);
            if let Some(c) = st
                .if_counters
                .get_mut(m.sw_if_index[vecnet_graph::RX] as usize)
            {
                c.rx_packets += 1;
                c.rx_bytes += m.current_length as u64;
            }
            if m.vnet_hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
                m.flags |= flags::OFFLOAD_CSUM;
            }
            if m.vnet_hdr.gso_type != 0 {
                m.flags |= flags::GSO;
            }
            if tracing && ctx.trace.maybe_start(ctx.node_index, m) {
                let mut hdr = [0u8; 12];
                m.vnet_hdr.write(&mut hdr);
                let rec = VirtioInputTrace {
                    hw_if_index: m.sw_if_index[vecnet_graph::RX],
                    next_index: NEXT_ETHERNET_INPUT as u32,
                    vring: m.rx_queue as u32,
                    len: m.current_length as u32,
                    hdr,
                };
                ctx.trace(bi, &rec);
            }
        }
        n
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: VirtioInputTrace = read_record(data);
        let h = VirtioNetHdr::parse(&t.hdr).unwrap_or_default();
        let _ = writeln!(
            out,
            "  virtio: hw_if_index {} next-index {} vring {} len {}",
            t.hw_if_index, t.next_index, t.vring, t.len
        );
        let _ = writeln!(
            out,
            "    hdr: flags 0x{:02x} gso_type 0x{:02x} hdr_len {} gso_size {} csum_start {} csum_offset {} num_buffers {}",
            h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start, h.csum_offset, h.num_buffers
        );
    }
}
