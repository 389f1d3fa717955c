//! In-memory device I/O: frames queued by a test or a `simulate` scenario, frames sent kept for
//! inspection. The same input and output nodes run as with real TAPs, so traces look the same.

use std::collections::VecDeque;

use vecnet_graph::{BufferPool, VirtioNetHdr, RX};
use vecnet_nodes::DeviceIo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFrame {
    pub sw_if_index: u32,
    pub frame: Vec<u8>,
    pub vnet_hdr: VirtioNetHdr,
}

#[derive(Debug, Default)]
pub struct MemIo {
    rx: VecDeque<(u32, Vec<u8>, VirtioNetHdr)>,
    pub sent: Vec<SentFrame>,
    /// Frames that could not be received for want of buffers.
    pub rx_no_buffer: u64,
}

impl MemIo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame as if it arrived on `sw_if_index` with the given virtio header.
    pub fn push(&mut self, sw_if_index: u32, frame: Vec<u8>, hdr: VirtioNetHdr) {
        self.rx.push_back((sw_if_index, frame, hdr));
    }

    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    pub fn take_sent(&mut self) -> Vec<SentFrame> {
        std::mem::take(&mut self.sent)
    }
}

impl DeviceIo for MemIo {
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut [u32]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some((sw, frame, hdr)) = self.rx.pop_front() else {
                break;
            };
            let Some(bi) = pool.alloc() else {
                self.rx_no_buffer += 1;
                break;
            };
            if !pool.write_packet(bi, &frame) {
                // Larger than one buffer: counted as lost, as a driver without chaining would.
                pool.free(bi);
                self.rx_no_buffer += 1;
                continue;
            }
            let m = pool.meta_mut(bi);
            m.sw_if_index[RX] = sw;
            m.vnet_hdr = hdr;
            out[n] = bi;
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, sw_if_index: u32, pool: &mut BufferPool, bufs: &[u32]) {
        for &bi in bufs {
            self.sent.push(SentFrame {
                sw_if_index,
                frame: pool.data(bi).to_vec(),
                vnet_hdr: pool.meta(bi).vnet_hdr,
            });
            pool.free(bi);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
