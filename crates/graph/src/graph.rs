//! Node registry, arcs and the dispatch loop.

use std::collections::HashMap;
use std::fmt::Write;

use crate::buffer::BufferPool;
use crate::clock::{cpu_clocks, Clock};
use crate::error_drop::ErrorDrop;
use crate::node::{FormatContext, Node, NodeCtx, NodeKind, FRAME_SIZE};
use crate::trace::{format_timestamp, TraceStore};

/// Next index meaning "the node consumed the packet" (sent it out, freed it, or queued it).
pub const CONSUMED: u16 = u16::MAX;

/// Pending-frame capacity reserved per node, so scattering never allocates in steady state.
const PENDING_CAPACITY: usize = 4 * FRAME_SIZE;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("a node named {0:?} is already registered")]
    DuplicateNode(String),
    #[error("no node named {0:?}")]
    UnknownNode(String),
    #[error("node {0:?} already has {1} next arcs, the limit")]
    TooManyArcs(String, usize),
}

/// Per-node runtime counters (`show runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub calls: u64,
    pub vectors: u64,
    pub clocks: u64,
}

struct Slot<R> {
    node: Box<dyn Node<R>>,
    name: String,
    kind: NodeKind,
    next_names: Vec<String>,
    next_nodes: Vec<u32>,
    /// Names that were not registered when resolved; they point at `error-drop` until they are.
    next_placeholder: Vec<bool>,
    arc_to: Vec<u16>,
    error_base: u32,
    error_strings: &'static [&'static str],
    pending: Vec<u32>,
    stats: NodeStats,
}

/// A graph of nodes with its dispatcher. One per worker.
pub struct Graph<R> {
    slots: Vec<Slot<R>>,
    by_name: HashMap<String, u32>,
    drop_counters: Vec<u64>,
    event_counters: Vec<u64>,
    /// Global error index → (node index, reason).
    error_names: Vec<(u32, &'static str)>,
    inputs: Vec<u32>,
    work: Vec<u32>,
    nexts: Vec<u16>,
    input_frame: Vec<u32>,
    drop_node: u32,
    pub clock: Clock,
    main_loops: u64,
}

impl<R: 'static> Graph<R> {
    /// A graph holding only `error-drop` (node 0).
    pub fn new(clock: Clock) -> Self {
        let mut g = Self {
            slots: Vec::new(),
            by_name: HashMap::new(),
            drop_counters: Vec::new(),
            event_counters: Vec::new(),
            error_names: Vec::new(),
            inputs: Vec::new(),
            work: Vec::with_capacity(PENDING_CAPACITY),
            nexts: vec![0; FRAME_SIZE],
            input_frame: vec![0; FRAME_SIZE],
            drop_node: 0,
            clock,
            main_loops: 0,
        };
        // Error index 0 means "no error recorded"; give it a reason so a drop without one is
        // still counted and named.
        g.drop_counters.push(0);
        g.event_counters.push(0);
        g.error_names.push((0, "no error"));
        if let Ok(i) = g.add_node(Box::new(ErrorDrop)) {
            g.drop_node = i;
        }
        g
    }
}

impl<R> Graph<R> {
    /// Registers a node and resolves its next arcs (and others' arcs that named it).
    pub fn add_node(&mut self, node: Box<dyn Node<R>>) -> Result<u32, GraphError> {
        let name = node.name().to_string();
        if self.by_name.contains_key(&name) {
            return Err(GraphError::DuplicateNode(name));
        }
        let index = self.slots.len() as u32;
        let error_strings = node.error_strings();
        let error_base = self.drop_counters.len() as u32;
        for reason in error_strings {
            self.drop_counters.push(0);
            self.event_counters.push(0);
            self.error_names.push((index, reason));
        }
        let kind = node.kind();
        let next_names = node.next_nodes();
        for s in &mut self.slots {
            s.arc_to.push(u16::MAX);
        }
        self.slots.push(Slot {
            node,
            name: name.clone(),
            kind,
            next_nodes: Vec::new(),
            next_placeholder: Vec::new(),
            next_names: Vec::new(),
            arc_to: vec![u16::MAX; index as usize + 1],
            error_base,
            error_strings,
            pending: Vec::with_capacity(PENDING_CAPACITY),
            stats: NodeStats::default(),
        });
        self.by_name.insert(name.clone(), index);
        if kind == NodeKind::Input {
            self.inputs.push(index);
        }
        for n in next_names {
            self.push_next_name(index, n)?;
        }
        // Earlier nodes that named this one before it existed now reach it.
        for s in &mut self.slots {
            for (k, nm) in s.next_names.iter().enumerate() {
                if s.next_placeholder[k] && *nm == name {
                    s.next_placeholder[k] = false;
                    s.next_nodes[k] = index;
                    s.arc_to[index as usize] = k as u16;
                }
            }
        }
        Ok(index)
    }

    fn push_next_name(&mut self, from: u32, name: String) -> Result<u16, GraphError> {
        let target = self.by_name.get(&name).copied();
        let drop = self.drop_node;
        let slot = &mut self.slots[from as usize];
        let k = slot.next_nodes.len();
        if k >= CONSUMED as usize {
            return Err(GraphError::TooManyArcs(slot.name.clone(), k));
        }
        slot.next_names.push(name);
        slot.next_nodes.push(target.unwrap_or(drop));
        slot.next_placeholder.push(target.is_none());
        if let Some(t) = target {
            if slot.arc_to[t as usize] == u16::MAX {
                slot.arc_to[t as usize] = k as u16;
            }
        }
        Ok(k as u16)
    }

    /// Adds (or finds) the arc `from → to` and returns its next index.
    pub fn add_arc(&mut self, from: u32, to: u32) -> Result<u16, GraphError> {
        let to_name = self
            .slots
            .get(to as usize)
            .map(|s| s.name.clone())
            .ok_or_else(|| GraphError::UnknownNode(format!("#{to}")))?;
        let slot = self
            .slots
            .get(from as usize)
            .ok_or_else(|| GraphError::UnknownNode(format!("#{from}")))?;
        if let Some(&a) = slot.arc_to.get(to as usize) {
            if a != u16::MAX {
                return Ok(a);
            }
        }
        self.push_next_name(from, to_name)
    }

    /// Connects a feature arc: `start` and every feature reach every later feature and `end`.
    pub fn connect_feature_arc(
        &mut self,
        start: u32,
        features: &[u32],
        end: u32,
    ) -> Result<(), GraphError> {
        let mut chain = Vec::with_capacity(features.len() + 2);
        chain.push(start);
        chain.extend_from_slice(features);
        chain.push(end);
        for (i, &from) in chain.iter().enumerate() {
            for &to in &chain[i + 1..] {
                self.add_arc(from, to)?;
            }
        }
        Ok(())
    }

    pub fn node_index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn node_name(&self, index: u32) -> Option<&str> {
        self.slots.get(index as usize).map(|s| s.name.as_str())
    }

    pub fn node_count(&self) -> usize {
        self.slots.len()
    }

    pub fn drop_node(&self) -> u32 {
        self.drop_node
    }

    /// The next index of `from` towards `to`, if the arc exists.
    pub fn arc(&self, from: u32, to: u32) -> Option<u16> {
        let a = *self.slots.get(from as usize)?.arc_to.get(to as usize)?;
        (a != u16::MAX).then_some(a)
    }

    /// The node names of `from`'s next arcs, in order.
    pub fn next_names(&self, from: u32) -> &[String] {
        self.slots
            .get(from as usize)
            .map(|s| s.next_names.as_slice())
            .unwrap_or(&[])
    }

    pub fn stats(&self, node: u32) -> NodeStats {
        self.slots
            .get(node as usize)
            .map(|s| s.stats)
            .unwrap_or_default()
    }

    /// Count of one error of one node.
    pub fn error_count(&self, node: &str, reason: &str) -> u64 {
        let Some(&n) = self.by_name.get(node) else {
            return 0;
        };
        self.error_names
            .iter()
            .position(|&(i, r)| i == n && r == reason)
            .map(|k| self.drop_counters[k] + self.event_counters[k])
            .unwrap_or(0)
    }

    /// Every non-zero error counter as (node, reason, count).
    pub fn errors(&self) -> Vec<(&str, &'static str, u64)> {
        self.error_names
            .iter()
            .enumerate()
            .map(|(k, &(n, r))| (n, r, self.drop_counters[k] + self.event_counters[k]))
            .filter(|&(_, _, c)| c > 0)
            .map(|(n, r, c)| (self.slots[n as usize].name.as_str(), r, c))
            .collect()
    }

    /// `clear errors` and `clear runtime` together.
    pub fn clear_counters(&mut self) {
        self.clear_errors();
        self.clear_runtime();
    }

    /// `clear errors`.
    pub fn clear_errors(&mut self) {
        self.drop_counters.iter_mut().for_each(|c| *c = 0);
        self.event_counters.iter_mut().for_each(|c| *c = 0);
    }

    /// `clear runtime`.
    pub fn clear_runtime(&mut self) {
        for s in &mut self.slots {
            s.stats = NodeStats::default();
        }
    }

    /// Queues buffers for `node` as if a predecessor had sent them (simulate, benches, handoff).
    pub fn enqueue(&mut self, node: u32, bis: &[u32]) {
        if let Some(s) = self.slots.get_mut(node as usize) {
            s.pending.extend_from_slice(bis);
        }
    }

    /// One main-loop iteration: poll every input node once, then dispatch until nothing is
    /// pending. Returns the number of packets received.
    pub fn run_once(&mut self, rt: &mut R, pool: &mut BufferPool, trace: &mut TraceStore) -> usize {
        self.main_loops += 1;
        let mut received = 0;
        for k in 0..self.inputs.len() {
            let i = self.inputs[k] as usize;
            let now = self.clock.tick();
            let t0 = cpu_clocks();
            let slot = &mut self.slots[i];
            let mut ctx = NodeCtx {
                pool,
                trace,
                now_ns: now,
                node_index: i as u32,
                error_base: slot.error_base,
                drop_counters: &mut self.drop_counters,
                event_counters: &mut self.event_counters,
                arc_to: &slot.arc_to,
            };
            let n = slot
                .node
                .poll(rt, &mut ctx, &mut self.input_frame, &mut self.nexts)
                .min(FRAME_SIZE);
            if n == 0 {
                continue;
            }
            slot.stats.calls += 1;
            slot.stats.vectors += n as u64;
            slot.stats.clocks += cpu_clocks().wrapping_sub(t0);
            received += n;
            Self::scatter(
                &mut self.slots,
                self.drop_node,
                i,
                &self.input_frame[..n],
                &self.nexts[..n],
            );
        }
        self.drain(rt, pool, trace);
        received
    }

    /// Dispatches pending frames, lowest node index first, until none remain.
    pub fn drain(&mut self, rt: &mut R, pool: &mut BufferPool, trace: &mut TraceStore) {
        loop {
            let mut progressed = false;
            for i in 0..self.slots.len() {
                if !self.slots[i].pending.is_empty() {
                    progressed = true;
                    self.dispatch(i, rt, pool, trace);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn dispatch(&mut self, i: usize, rt: &mut R, pool: &mut BufferPool, trace: &mut TraceStore) {
        let Graph {
            slots,
            work,
            nexts,
            drop_counters,
            event_counters,
            clock,
            drop_node,
            ..
        } = self;
        std::mem::swap(&mut slots[i].pending, work);
        let mut off = 0;
        while off < work.len() {
            let end = (off + FRAME_SIZE).min(work.len());
            let chunk = &work[off..end];
            let n = chunk.len();
            let now = clock.tick();
            let t0 = cpu_clocks();
            let slot = &mut slots[i];
            let mut ctx = NodeCtx {
                pool,
                trace,
                now_ns: now,
                node_index: i as u32,
                error_base: slot.error_base,
                drop_counters,
                event_counters,
                arc_to: &slot.arc_to,
            };
            slot.node.process(rt, &mut ctx, chunk, &mut nexts[..n]);
            slot.stats.calls += 1;
            slot.stats.vectors += n as u64;
            slot.stats.clocks += cpu_clocks().wrapping_sub(t0);
            Self::scatter(slots, *drop_node, i, chunk, &nexts[..n]);
            off = end;
        }
        work.clear();
    }

    #[inline]
    fn scatter(slots: &mut [Slot<R>], drop_node: u32, from: usize, frame: &[u32], nexts: &[u16]) {
        // Most frames go to one next node as a whole: move them in one copy.
        if let Some(&first) = nexts.first() {
            if nexts.iter().all(|&n| n == first) {
                if first != CONSUMED {
                    let to = slots[from]
                        .next_nodes
                        .get(first as usize)
                        .copied()
                        .unwrap_or(drop_node);
                    slots[to as usize].pending.extend_from_slice(frame);
                }
                return;
            }
        }
        for (&bi, &next) in frame.iter().zip(nexts) {
            if next == CONSUMED {
                continue;
            }
            let to = slots[from]
                .next_nodes
                .get(next as usize)
                .copied()
                .unwrap_or(drop_node);
            slots[to as usize].pending.push(bi);
        }
    }

    /// `show runtime` in VPP's shape.
    pub fn show_runtime(&self, thread: usize, elapsed_s: f64) -> String {
        let mut out = String::new();
        let total_vectors: u64 = self.slots.iter().map(|s| s.stats.vectors).sum();
        let total_calls: u64 = self.slots.iter().map(|s| s.stats.calls).sum();
        let in_vectors: u64 = self
            .inputs
            .iter()
            .map(|&i| self.slots[i as usize].stats.vectors)
            .sum();
        let drops = self.slots[self.drop_node as usize].stats.vectors;
        let rate = |v: u64| {
            if elapsed_s > 0.0 {
                v as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let _ = writeln!(
            out,
            "Thread {} {} (lcore {})",
            thread,
            thread_name(thread),
            thread
        );
        let _ = writeln!(
            out,
            "Time {:.1}, average vectors/node {:.2}, last {} main loops {:.2} per node {:.2}",
            elapsed_s,
            if total_calls > 0 {
                total_vectors as f64 / total_calls as f64
            } else {
                0.0
            },
            self.main_loops.min(128),
            0.0,
            0.0
        );
        let _ = writeln!(
            out,
            "  vector rates in {}, out {}, drop {}, punt {}",
            sci(rate(in_vectors)),
            sci(rate(total_out(self, in_vectors, drops))),
            sci(rate(drops)),
            sci(0.0)
        );
        let _ = writeln!(
            out,
            "{:<30}{:^17}{:>16}{:>16}{:>16}{:>16}{:>16}",
            "             Name", "State", "Calls", "Vectors", "Suspends", "Clocks", "Vectors/Call"
        );
        let mut rows: Vec<&Slot<R>> = self.slots.iter().filter(|s| s.stats.calls > 0).collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        for s in rows {
            let st = s.stats;
            let state = if s.kind == NodeKind::Input {
                "polling"
            } else {
                "active"
            };
            let _ = writeln!(
                out,
                "{:<30}{:^17}{:>16}{:>16}{:>16}{:>16}{:>16.2}",
                s.name,
                state,
                st.calls,
                st.vectors,
                0,
                sci(if st.vectors > 0 {
                    st.clocks as f64 / st.vectors as f64
                } else {
                    0.0
                }),
                if st.calls > 0 {
                    st.vectors as f64 / st.calls as f64
                } else {
                    0.0
                }
            );
        }
        out
    }

    /// `show errors` in VPP's shape.
    pub fn show_errors(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:>10}{:^40}Reason", "Count", "Node");
        for (node, reason, count) in self.errors() {
            let _ = writeln!(out, "{:>10}{:^40}{}", count, node, reason);
        }
        out
    }

    /// `show trace [max N]` for this worker's store, in VPP 18.01's layout.
    pub fn show_trace(
        &self,
        thread: usize,
        trace: &TraceStore,
        fctx: &dyn FormatContext,
        max: usize,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "------------------- Start of thread {} {} -------------------",
            thread,
            thread_name(thread)
        );
        let n_packets = trace.packet_count() as usize;
        if n_packets == 0 {
            out.push_str("No packets in trace buffer\n");
            return out;
        }
        // Records are appended in time order; group them by packet without reordering.
        let mut by_packet: Vec<Vec<usize>> = vec![Vec::new(); n_packets];
        for (k, r) in trace.records().iter().enumerate() {
            if let Some(v) = by_packet.get_mut(r.packet as usize) {
                v.push(k);
            }
        }
        let ctx = GraphFormatContext {
            graph: self,
            inner: fctx,
        };
        let shown = n_packets.min(max);
        for (p, recs) in by_packet.iter().take(shown).enumerate() {
            let _ = write!(out, "Packet {}\n\n", p + 1);
            for &k in recs {
                let r = &trace.records()[k];
                format_timestamp(&mut out, r.time_ns);
                let name = self.node_name(r.node).unwrap_or("unknown-node");
                let _ = writeln!(out, ": {name}");
                if let Some(s) = self.slots.get(r.node as usize) {
                    s.node.format_trace(r.data(), &ctx, &mut out);
                }
            }
            out.push('\n');
        }
        if n_packets > shown {
            let _ = writeln!(
                out,
                "Limiting display to {shown} packets. To display more specify max."
            );
        }
        if trace.overflowed() {
            out.push_str("Trace buffer full: later packets were not traced.\n");
        }
        out
    }

    /// Drops counted by `error-drop`, by global error index (see [`Graph::error_name`]).
    pub fn drop_counters(&self) -> &[u64] {
        &self.drop_counters
    }

    /// (node, reason) of a global error index.
    pub fn error_name(&self, error: u32) -> Option<(&str, &'static str)> {
        let &(n, r) = self.error_names.get(error as usize)?;
        Some((self.slots.get(n as usize)?.name.as_str(), r))
    }

    /// The global error index of `reason` of node `node`.
    pub fn error_index(&self, node: u32, reason: &str) -> Option<u32> {
        let s = self.slots.get(node as usize)?;
        s.error_strings
            .iter()
            .position(|r| *r == reason)
            .map(|k| s.error_base + k as u32)
    }
}

fn total_out<R>(g: &Graph<R>, inputs: u64, drops: u64) -> u64 {
    let _ = g;
    inputs.saturating_sub(drops)
}

fn sci(v: f64) -> String {
    if v == 0.0 {
        return "0.0000e0".to_string();
    }
    format!("{v:.4e}")
}

/// VPP thread names: `vpp_main` for thread 0, `vpp_wk_<n>` for workers.
pub fn thread_name(thread: usize) -> String {
    if thread == 0 {
        "vpp_main".to_string()
    } else {
        format!("vpp_wk_{}", thread - 1)
    }
}

struct GraphFormatContext<'a, R> {
    graph: &'a Graph<R>,
    inner: &'a dyn FormatContext,
}

impl<R> FormatContext for GraphFormatContext<'_, R> {
    fn interface_name(&self, sw_if_index: u32) -> Option<&str> {
        self.inner.interface_name(sw_if_index)
    }
    fn error_name(&self, error: u32) -> Option<(&str, &str)> {
        self.graph.error_name(error)
    }
}
