//! The graph node interface.

use crate::buffer::BufferPool;
use crate::trace::TraceStore;

/// Maximum packets in one frame (VPP's `VLIB_FRAME_SIZE`).
pub const FRAME_SIZE: usize = 256;

/// Role of a node in the dispatch loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Polled once per main-loop iteration; produces packets.
    Input,
    /// Runs when a frame is pending for it.
    Internal,
}

/// What a formatter may need to know that the record does not carry (interface names).
pub trait FormatContext {
    fn interface_name(&self, sw_if_index: u32) -> Option<&str>;
    /// (node name, reason) of a global error index; the graph answers this.
    fn error_name(&self, _error: u32) -> Option<(&str, &str)> {
        None
    }
}

/// Everything a node may touch while it handles one frame, besides the worker runtime `R`.
pub struct NodeCtx<'a> {
    pub pool: &'a mut BufferPool,
    pub trace: &'a mut TraceStore,
    /// Time the node started on this frame (ns since data-plane start).
    pub now_ns: u64,
    /// This node's index in the graph.
    pub node_index: u32,
    /// Index of this node's first error counter in the graph's counter arrays.
    pub error_base: u32,
    /// Drops by global error index, counted by `error-drop` only.
    pub drop_counters: &'a mut [u64],
    /// Events by global error index that nodes count without dropping (`ARP replies sent`).
    pub event_counters: &'a mut [u64],
    /// Arc index of this node towards a node index, `u16::MAX` where there is no arc.
    pub arc_to: &'a [u16],
}

impl NodeCtx<'_> {
    /// The global error index of this node's error `code`, for `BufferMeta::error`.
    #[inline]
    pub fn error(&self, code: u16) -> u32 {
        self.error_base + code as u32
    }

    /// Counts `n` events of this node's error `code` without dropping anything.
    #[inline]
    pub fn count(&mut self, code: u16, n: u64) {
        if let Some(c) = self
            .event_counters
            .get_mut((self.error_base + code as u32) as usize)
        {
            *c += n;
        }
    }

    /// The next index leading to graph node `node`, if the arc exists.
    #[inline]
    pub fn arc_to_node(&self, node: u32) -> Option<u16> {
        match self.arc_to.get(node as usize) {
            Some(&a) if a != u16::MAX => Some(a),
            _ => None,
        }
    }

    /// Appends the record `make` builds, only if `bi` is traced (so untraced packets pay nothing
    /// for building it).
    #[inline]
    pub fn trace_with<T, F>(&mut self, bi: u32, make: F)
    where
        T: zerocopy::IntoBytes + zerocopy::Immutable,
        F: FnOnce(&BufferPool) -> T,
    {
        let meta = self.pool.meta(bi);
        if meta.is_traced() {
            let (h, node, now) = (meta.trace_handle, self.node_index, self.now_ns);
            let rec = make(self.pool);
            self.trace.add_bytes(h, node, now, rec.as_bytes());
        }
    }

    /// Appends a trace record for `bi` if it is traced.
    #[inline]
    pub fn trace<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, bi: u32, rec: &T) {
        let meta = self.pool.meta(bi);
        if meta.is_traced() {
            let (h, node, now) = (meta.trace_handle, self.node_index, self.now_ns);
            self.trace.add_bytes(h, node, now, rec.as_bytes());
        }
    }
}

/// A graph node: a function over a frame of buffer indices that writes one next index per packet.
///
/// `R` is the worker runtime (configuration snapshot, per-worker tables, device I/O); each node
/// family states what it needs from it through its own trait bound.
pub trait Node<R>: Send {
    /// The VPP name (`ip4-lookup`, `tap0-output`, …).
    fn name(&self) -> &str;

    fn kind(&self) -> NodeKind {
        NodeKind::Internal
    }

    /// Next nodes by name, in next-index order. A name that is not registered when the graph is
    /// finalised resolves to `error-drop` (VPP's input nodes list next nodes vecnet lacks).
    fn next_nodes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Error (counter) reasons, indexed by the node's error codes.
    fn error_strings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Handles `frame`, writing `nexts[i]` for `frame[i]`. Not called for input nodes.
    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]);

    /// Input nodes: receive up to `frame.len()` packets into `frame`, set their nexts, return the
    /// count.
    fn poll(
        &mut self,
        _rt: &mut R,
        _ctx: &mut NodeCtx<'_>,
        _frame: &mut [u32],
        _nexts: &mut [u16],
    ) -> usize {
        0
    }

    /// Formats one of this node's trace records: the lines after the timestamp line, each
    /// starting with two spaces and ending with a newline.
    fn format_trace(&self, data: &[u8], fctx: &dyn FormatContext, out: &mut String);
}
