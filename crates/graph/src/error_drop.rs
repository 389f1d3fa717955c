//! `error-drop`: counts each packet against the error its sender recorded, then frees it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::graph::CONSUMED;
use crate::node::{FormatContext, Node, NodeCtx};
use crate::trace::read_record;

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ErrorDropTrace {
    error: u32,
}

pub struct ErrorDrop;

impl<R> Node<R> for ErrorDrop {
    fn name(&self) -> &str {
        "error-drop"
    }

    fn process(&mut self, _rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let error = ctx.pool.meta(bi).error;
            if let Some(c) = ctx.drop_counters.get_mut(error as usize) {
                *c += 1;
            }
            ctx.trace(bi, &ErrorDropTrace { error });
            ctx.pool.free(bi);
            *next = CONSUMED;
        }
    }

    fn format_trace(&self, data: &[u8], fctx: &dyn FormatContext, out: &mut String) {
        let t: ErrorDropTrace = read_record(data);
        match fctx.error_name(t.error) {
            Some((node, reason)) => {
                out.push_str("  ");
                out.push_str(node);
                out.push_str(": ");
                out.push_str(reason);
                out.push('\n');
            }
            None => out.push_str("  unknown error\n"),
        }
    }
}
