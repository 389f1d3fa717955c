//! Packet trace store: fixed-size records appended by nodes to traced packets, formatted only
//! when `show trace` asks (VPP's `vlib_add_trace` / `format_vlib_trace`).

use crate::buffer::{flags, BufferMeta, INVALID};
use zerocopy::{Immutable, IntoBytes};

/// Bytes of node-specific data a record can hold.
pub const TRACE_DATA_SIZE: usize = 120;

/// One record: which node, when, and the node's own data.
#[derive(Clone, Copy)]
pub struct TraceRecord {
    /// Nanoseconds since the data plane started (virtual time in `simulate`).
    pub time_ns: u64,
    pub node: u32,
    pub packet: u32,
    pub len: u16,
    pub data: [u8; TRACE_DATA_SIZE],
}

impl TraceRecord {
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

/// Bounded per-worker trace store with per-input-node quotas.
pub struct TraceStore {
    records: Vec<TraceRecord>,
    capacity: usize,
    /// Remaining packets to trace, by input node index.
    quota: Vec<u32>,
    packets: u32,
    /// A packet could not be marked (or a record was lost) because the store was full.
    overflowed: bool,
}

impl TraceStore {
    /// `capacity` records are reserved now; no allocation happens when tracing.
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            capacity,
            quota: Vec::new(),
            packets: 0,
            overflowed: false,
        }
    }

    /// `trace add <node> <count>`: adds to the node's quota; 0 resets it.
    pub fn add_quota(&mut self, node: u32, count: u32) {
        let i = node as usize;
        if self.quota.len() <= i {
            self.quota.resize(i + 1, 0);
        }
        self.quota[i] = if count == 0 {
            0
        } else {
            self.quota[i].saturating_add(count)
        };
    }

    pub fn quota(&self, node: u32) -> u32 {
        self.quota.get(node as usize).copied().unwrap_or(0)
    }

    /// Whether any input node still has quota: input nodes test this once per frame.
    #[inline]
    pub fn any_quota(&self) -> bool {
        self.quota.iter().any(|&q| q > 0)
    }

    /// Called by an input node for each received packet: marks it traced while quota remains.
    #[inline]
    pub fn maybe_start(&mut self, input_node: u32, meta: &mut BufferMeta) -> bool {
        let Some(q) = self.quota.get_mut(input_node as usize) else {
            return false;
        };
        if *q == 0 {
            return false;
        }
        if self.records.len() >= self.capacity {
            self.overflowed = true;
            return false;
        }
        *q -= 1;
        meta.flags |= flags::TRACED;
        meta.trace_handle = self.packets;
        self.packets += 1;
        true
    }

    /// Appends `rec` for the traced packet `meta` (does nothing for untraced packets).
    #[inline]
    pub fn add<T: IntoBytes + Immutable>(
        &mut self,
        meta: &BufferMeta,
        node: u32,
        time_ns: u64,
        rec: &T,
    ) {
        if !meta.is_traced() || meta.trace_handle == INVALID {
            return;
        }
        self.add_bytes(meta.trace_handle, node, time_ns, rec.as_bytes());
    }

    pub fn add_bytes(&mut self, packet: u32, node: u32, time_ns: u64, bytes: &[u8]) {
        if self.records.len() >= self.capacity {
            self.overflowed = true;
            return;
        }
        let mut r = TraceRecord {
            time_ns,
            node,
            packet,
            len: 0,
            data: [0; TRACE_DATA_SIZE],
        };
        let n = bytes.len().min(TRACE_DATA_SIZE);
        r.data[..n].copy_from_slice(&bytes[..n]);
        r.len = n as u16;
        self.records.push(r);
    }

    /// `clear trace`: drops all records and all remaining quotas.
    pub fn clear(&mut self) {
        self.records.clear();
        self.quota.iter_mut().for_each(|q| *q = 0);
        self.packets = 0;
        self.overflowed = false;
    }

    pub fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    pub fn packet_count(&self) -> u32 {
        self.packets
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// `HH:MM:SS:uuuuuu` as VPP prints trace timestamps.
pub fn format_timestamp(out: &mut String, time_ns: u64) {
    use std::fmt::Write;
    let us = time_ns / 1_000;
    let secs = us / 1_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}:{:06}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        us % 1_000_000
    );
}

/// Reads a trace record of type `T` back from its bytes (zero-filled if short).
pub fn read_record<T: zerocopy::FromBytes + IntoBytes>(data: &[u8]) -> T {
    let mut v = T::new_zeroed();
    let dst = v.as_mut_bytes();
    let n = dst.len().min(data.len());
    dst[..n].copy_from_slice(&data[..n]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format() {
        let mut s = String::new();
        format_timestamp(
            &mut s,
            ((2 * 3600 + 54 * 60 + 30) * 1_000_000 + 91_783) * 1_000,
        );
        assert_eq!(s, "02:54:30:091783");
    }

    #[test]
    fn quota_and_capacity() {
        let mut t = TraceStore::new(2);
        let mut m = BufferMeta::default();
        assert!(!t.maybe_start(3, &mut m));
        t.add_quota(3, 2);
        assert!(t.maybe_start(3, &mut m));
        t.add(&m, 3, 0, &[1u8, 2, 3]);
        t.add(&m, 4, 0, &[4u8]);
        // Store full: no more records, no more packets marked.
        t.add(&m, 5, 0, &[5u8]);
        assert_eq!(t.records().len(), 2);
        let mut m2 = BufferMeta::default();
        assert!(!t.maybe_start(3, &mut m2));
        assert!(t.overflowed());
        t.clear();
        assert_eq!(t.quota(3), 0);
        assert!(t.records().is_empty());
    }
}
