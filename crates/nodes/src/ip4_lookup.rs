//! `ip4-lookup`: longest-prefix match in the packet's FIB; picks the load-balance bucket and
//! sends the packet to `ip4-rewrite`, `ip4-load-balance` (recursive routes), `ip4-local`,
//! `ip4-glean`, the reject path or drop.

use std::fmt::Write;

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, TX};
use vecnet_wire::pretty;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::common::{drop_with, has_tx, IpCapture, IP_CAPTURE};
use crate::config::{Dpo, L3Config};
use crate::icmp_error::{set_icmp_error, CODE_PORT_UNREACH, ICMP_DEST_UNREACH};
use crate::runtime::{L3Runtime, L3State};

pub(crate) const NEXT_DROP: u16 = 0;
pub(crate) const NEXT_REWRITE: u16 = 1;
pub(crate) const NEXT_LOAD_BALANCE: u16 = 2;
pub(crate) const NEXT_LOCAL: u16 = 3;
pub(crate) const NEXT_ICMP_ERROR: u16 = 4;
pub(crate) const NEXT_GLEAN: u16 = 5;
pub(crate) const NEXT_ARP: u16 = 6;

pub(crate) const LOOKUP_NEXTS: [&str; 7] = [
    "error-drop",
    "ip4-rewrite",
    "ip4-load-balance",
    "ip4-local",
    "ip4-icmp-error",
    "ip4-glean",
    "ip4-arp",
];

const ERR_DROP_ROUTE: u16 = 0;
const ERR_REJECT: u16 = 1;
const ERR_TOO_DEEP: u16 = 2;

pub(crate) const LOOKUP_ERRORS: [&str; 3] = [
    "ip4 route drop",
    "ip4 route reject (ICMP unreachable)",
    "recursive route too deep",
];

/// Trace record shared by `ip4-lookup`, `ip4-load-balance`, `ip4-arp` and `ip4-glean`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct LookupTrace {
    pub fib_index: u32,
    pub dpo_index: u32,
    pub flow_hash: u32,
    pub cap_len: u8,
    pub cap: [u8; IP_CAPTURE],
    pub pad: [u8; 3],
}

impl LookupTrace {
    pub fn new(fib_index: u32, dpo_index: u32, flow_hash: u32, ip: &[u8]) -> Self {
        let c = IpCapture::new(ip);
        Self {
            fib_index,
            dpo_index,
            flow_hash,
            cap_len: c.len,
            cap: c.bytes,
            pad: [0; 3],
        }
    }
}

pub(crate) fn format_lookup_trace(data: &[u8], out: &mut String) {
    let t: LookupTrace = read_record(data);
    let _ = writeln!(
        out,
        "  fib {} dpo-idx {} flow hash: 0x{:08x}",
        t.fib_index, t.dpo_index, t.flow_hash
    );
    pretty::ip4_block(out, &t.cap[..(t.cap_len as usize).min(IP_CAPTURE)], 2);
}

/// VPP-style 5-tuple flow hash; computed only for multi-bucket load-balances.
#[inline]
pub fn flow_hash(ip: &[u8]) -> u32 {
    if ip.len() < 20 {
        return 0;
    }
    let w = |i: usize| u32::from_be_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
    let (src, dst, proto) = (w(12), w(16), ip[9] as u32);
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let ports = if (proto == 6 || proto == 17) && ip.len() >= ihl + 4 {
        w(ihl)
    } else {
        0
    };
    // A 32-bit mix of the tuple (murmur3 finaliser): cheap and well spread.
    let mut h = src ^ dst.rotate_left(16) ^ ports.rotate_left(8) ^ proto;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Resolves a load-balance to a final DPO (following recursive load-balances) and the next
/// index for it. Returns (next, dpo index to print, adj index for the buffer, flow hash).
#[inline]
pub(crate) fn resolve(
    cfg: &L3Config,
    lb_index: u32,
    ip: &[u8],
    mut hash: u32,
    follow_recursive: bool,
) -> Result<(u16, u32, u32, u32, Dpo), u16> {
    let mut lb_i = lb_index;
    for _ in 0..8 {
        let Some(lb) = cfg.fib.load_balances.get(lb_i as usize) else {
            return Err(ERR_DROP_ROUTE);
        };
        if lb.buckets.len() > 1 && hash == 0 {
            hash = flow_hash(ip);
        }
        let dpo = lb.pick(hash);
        let r = match dpo {
            Dpo::Adjacency(a) => (NEXT_REWRITE, a, a),
            Dpo::LoadBalance(l) if follow_recursive => {
                lb_i = l;
                continue;
            }
            Dpo::LoadBalance(l) => (NEXT_LOAD_BALANCE, l, l),
            Dpo::Receive { .. } => (NEXT_LOCAL, lb_i, lb_i),
            Dpo::Glean { sw_if_index } => (NEXT_GLEAN, lb_i, sw_if_index),
            Dpo::Reject => (NEXT_ICMP_ERROR, lb_i, lb_i),
            Dpo::Drop => return Err(ERR_DROP_ROUTE),
        };
        return Ok((r.0, r.1, r.2, hash, dpo));
    }
    Err(ERR_TOO_DEEP)
}

pub struct Ip4Lookup;

impl<R: L3Runtime> Node<R> for Ip4Lookup {
    fn name(&self) -> &str {
        "ip4-lookup"
    }

    fn next_nodes(&self) -> Vec<String> {
        LOOKUP_NEXTS.map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &LOOKUP_ERRORS
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, st) = rt.l3();
        let mut chunks = frame.chunks_exact(4);
        let mut k = 0;
        // Quad loop: four independent trie walks overlap their memory loads.
        for quad in chunks.by_ref() {
            let mut dsts = [0u32; 4];
            let mut fibs = [0u32; 4];
            for j in 0..4 {
                let (m, ip) = ctx.pool.get(quad[j]);
                fibs[j] = if has_tx(m.sw_if_index[TX]) {
                    m.sw_if_index[TX]
                } else {
                    m.fib_index
                };
                dsts[j] = dst_of(ip);
            }
            let lbs = if fibs.iter().all(|&f| f == fibs[0]) {
                match cfg.fib.tables.table(fibs[0]) {
                    Some(t) => t.lookup_x4(dsts),
                    None => [cfg.fib.drop_lb; 4],
                }
            } else {
                let one = |j: usize| {
                    cfg.fib
                        .tables
                        .table(fibs[j])
                        .map(|t| t.lookup(dsts[j]))
                        .unwrap_or(cfg.fib.drop_lb)
                };
                [one(0), one(1), one(2), one(3)]
            };
            for j in 0..4 {
                nexts[k] = finish(cfg, st, ctx, quad[j], fibs[j], lbs[j]);
                k += 1;
            }
        }
        for &bi in chunks.remainder() {
            let m = ctx.pool.meta(bi);
            let fib = if has_tx(m.sw_if_index[TX]) {
                m.sw_if_index[TX]
            } else {
                m.fib_index
            };
            let dst = dst_of(ctx.pool.data(bi));
            let lb = cfg
                .fib
                .tables
                .table(fib)
                .map(|t| t.lookup(dst))
                .unwrap_or(cfg.fib.drop_lb);
            nexts[k] = finish(cfg, st, ctx, bi, fib, lb);
            k += 1;
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_lookup_trace(data, out);
    }
}

#[inline]
fn dst_of(ip: &[u8]) -> u32 {
    match ip.get(16..20) {
        Some(d) => u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        None => 0,
    }
}

#[inline]
fn finish(
    cfg: &L3Config,
    st: &mut L3State,
    ctx: &mut NodeCtx<'_>,
    bi: u32,
    fib: u32,
    lb: u32,
) -> u16 {
    let (m, ip) = ctx.pool.get_mut(bi);
    if let Some(c) = st.lb_counters.get_mut(lb as usize) {
        c.0 += 1;
        c.1 += ip.len() as u64;
    }
    let traced = m.is_traced();
    // Single-path entries (nearly all) were resolved when the snapshot was built.
    if let Some(f) = cfg.fib.load_balances.get(lb as usize).and_then(|l| l.fast) {
        m.adj_index = f.adj;
        m.flow_hash = 0;
        let next = if f.next == NEXT_REWRITE
            && !st.rewrites.get(f.adj as usize).is_some_and(|r| r.valid)
        {
            NEXT_ARP
        } else {
            f.next
        };
        if traced {
            ctx.trace_with(bi, |p| LookupTrace::new(fib, f.dpo_index, 0, p.data(bi)));
        }
        return next;
    }
    match resolve(cfg, lb, ip, 0, false) {
        Ok((next, dpo_idx, adj, hash, dpo)) => {
            m.adj_index = adj;
            m.flow_hash = hash;
            // An adjacency whose neighbour is not resolved yet leads to ip4-arp, as VPP's
            // incomplete adjacencies do.
            let next = match dpo {
                Dpo::Adjacency(a) if !st.rewrites.get(a as usize).is_some_and(|r| r.valid) => {
                    NEXT_ARP
                }
                Dpo::Reject => {
                    set_icmp_error(m, ICMP_DEST_UNREACH, CODE_PORT_UNREACH, 0);
                    ctx.count(ERR_REJECT, 1);
                    next
                }
                _ => next,
            };
            if traced {
                ctx.trace_with(bi, |p| LookupTrace::new(fib, dpo_idx, hash, p.data(bi)));
            }
            next
        }
        Err(e) => {
            if traced {
                ctx.trace_with(bi, |p| LookupTrace::new(fib, lb, 0, p.data(bi)));
            }
            drop_with(ctx, bi, e, NEXT_DROP)
        }
    }
}

/// The outcome of a single-bucket load-balance, precomputed when the snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastDpo {
    pub next: u16,
    pub dpo_index: u32,
    pub adj: u32,
}

/// `Some` for single-bucket load-balances whose DPO needs no per-packet work.
pub fn fast_dpo(lb_index: u32, buckets: &[Dpo]) -> Option<FastDpo> {
    let [dpo] = buckets else { return None };
    let (next, dpo_index, adj) = match *dpo {
        Dpo::Adjacency(a) => (NEXT_REWRITE, a, a),
        Dpo::LoadBalance(l) => (NEXT_LOAD_BALANCE, l, l),
        Dpo::Receive { .. } => (NEXT_LOCAL, lb_index, lb_index),
        Dpo::Glean { sw_if_index } => (NEXT_GLEAN, lb_index, sw_if_index),
        Dpo::Drop | Dpo::Reject => return None,
    };
    Some(FastDpo {
        next,
        dpo_index,
        adj,
    })
}
