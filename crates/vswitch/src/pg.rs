//! Packet generator and null sink (VPP's `pg`): a device that fills buffers from frame templates,
//! varying the flow per packet, and frees what is sent. Used by the benchmark and by the
//! zero-allocation test; it allocates nothing per packet.

use vecnet_graph::{BufferPool, RX};
use vecnet_nodes::DeviceIo;

pub struct PacketGenerator {
    /// (rx sw_if_index, Ethernet frame) templates, used round robin.
    templates: Vec<(u32, Vec<u8>)>,
    /// Offset of the TCP/UDP source port to vary (L2 + IP header length), if any.
    port_offset: Option<usize>,
    /// Number of distinct flows (source ports) to cycle through.
    flows: u32,
    next: u64,
    /// Packets to generate in total; `u64::MAX` = unlimited.
    pub remaining: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
}

impl PacketGenerator {
    pub fn new(templates: Vec<(u32, Vec<u8>)>, port_offset: Option<usize>, flows: u32) -> Self {
        Self {
            templates,
            port_offset,
            flows: flows.max(1),
            next: 0,
            remaining: u64::MAX,
            sent_packets: 0,
            sent_bytes: 0,
        }
    }
}

impl DeviceIo for PacketGenerator {
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut [u32]) -> usize {
        if self.templates.is_empty() {
            return 0;
        }
        let want = (out.len() as u64).min(self.remaining) as usize;
        let mut n = 0;
        while n < want {
            let Some(bi) = pool.alloc() else { break };
            let k = (self.next % self.templates.len() as u64) as usize;
            let (sw, ref frame) = self.templates[k];
            pool.write_packet(bi, frame);
            if let Some(off) = self.port_offset {
                let port = 1024 + (self.next % self.flows as u64) as u16;
                if let Some(p) = pool.data_mut(bi).get_mut(off..off + 2) {
                    // The L4 checksum is not verified on the routed path; the IP one is intact.
                    p.copy_from_slice(&port.to_be_bytes());
                }
            }
            pool.meta_mut(bi).sw_if_index[RX] = sw;
            out[n] = bi;
            n += 1;
            self.next += 1;
        }
        self.remaining -= n as u64;
        n
    }

    fn tx_burst(&mut self, _sw_if_index: u32, pool: &mut BufferPool, bufs: &[u32]) {
        for &bi in bufs {
            self.sent_packets += 1;
            self.sent_bytes += pool.meta(bi).current_length as u64;
            pool.free(bi);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
