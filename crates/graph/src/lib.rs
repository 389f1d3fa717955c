//! vecnet's vector graph engine: buffers, frames, nodes with named next arcs, feature arcs, a
//! dispatcher that never recurses per packet, per-node counters and a VPP-style packet trace.

pub mod buffer;
pub mod clock;
mod error_drop;
pub mod graph;
pub mod node;
pub mod trace;

pub use buffer::{BufferMeta, BufferPool, VirtioNetHdr, HEADROOM, INVALID, RX, TX};
pub use clock::Clock;
pub use graph::{Graph, GraphError, NodeStats, CONSUMED};
pub use node::{FormatContext, Node, NodeCtx, NodeKind, FRAME_SIZE};
pub use trace::{read_record, TraceStore};
