//! `ip4-load-balance`: second step of a recursive route; picks the bucket of the load-balance
//! that `ip4-lookup` chose and continues to its adjacency.

use vecnet_graph::{FormatContext, Node, NodeCtx, TX};

use crate::common::{drop_with, has_tx};
use crate::config::Dpo;
use crate::icmp_error::{set_icmp_error, CODE_PORT_UNREACH, ICMP_DEST_UNREACH};
use crate::ip4_lookup::{
    format_lookup_trace, resolve, LookupTrace, LOOKUP_ERRORS, LOOKUP_NEXTS, NEXT_DROP,
};
use crate::runtime::L3Runtime;

pub struct Ip4LoadBalance;

impl<R: L3Runtime> Node<R> for Ip4LoadBalance {
    fn name(&self) -> &str {
        "ip4-load-balance"
    }

    fn next_nodes(&self) -> Vec<String> {
        LOOKUP_NEXTS.map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &LOOKUP_ERRORS
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, _) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let m = *ctx.pool.meta(bi);
            // VPP prints the TX slot here when set (after vxlan4-encap: the tunnel).
            let fib = if has_tx(m.sw_if_index[TX]) {
                m.sw_if_index[TX]
            } else {
                m.fib_index
            };
            let ip = ctx.pool.data(bi);
            match resolve(cfg, m.adj_index, ip, m.flow_hash, true) {
                Ok((n, dpo_idx, adj, hash, dpo)) => {
                    if m.is_traced() {
                        let rec = LookupTrace::new(fib, dpo_idx, hash, ctx.pool.data(bi));
                        ctx.trace(bi, &rec);
                    }
                    let mm = ctx.pool.meta_mut(bi);
                    mm.adj_index = adj;
                    mm.flow_hash = hash;
                    if dpo == Dpo::Reject {
                        set_icmp_error(mm, ICMP_DEST_UNREACH, CODE_PORT_UNREACH, 0);
                    }
                    *next = n;
                }
                Err(e) => *next = drop_with(ctx, bi, e, NEXT_DROP),
            }
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        format_lookup_trace(data, out);
    }
}
