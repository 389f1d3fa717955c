//! Pieces shared by several nodes: packet captures for traces and feature-arc stepping.

use vecnet_graph::{NodeCtx, INVALID};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of IP header (and what follows) that nodes capture for their traces.
pub const IP_CAPTURE: usize = 60;

/// Up to 60 bytes starting at the IP header.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IpCapture {
    pub len: u8,
    pub bytes: [u8; IP_CAPTURE],
}

impl IpCapture {
    #[inline]
    pub fn new(ip: &[u8]) -> Self {
        let n = ip.len().min(IP_CAPTURE);
        let mut c = Self {
            len: n as u8,
            bytes: [0; IP_CAPTURE],
        };
        c.bytes[..n].copy_from_slice(&ip[..n]);
        c
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(IP_CAPTURE)]
    }
}

/// The next index towards the feature after position `pos` of `arc` (`pos` = `usize::MAX` for
/// the arc's start node), updating the buffer's feature cursor. Falls back to `fallback` when the
/// arc is empty or an arc is missing (misconfiguration must not lose the packet silently: the
/// fallback is the arc's fixed end).
#[inline]
pub fn feature_next(ctx: &mut NodeCtx<'_>, bi: u32, arc: &[u32], pos: usize, fallback: u16) -> u16 {
    let next_pos = pos.wrapping_add(1);
    match arc.get(next_pos) {
        Some(&node) => {
            ctx.pool.meta_mut(bi).feature_cursor = next_pos as u8;
            ctx.arc_to_node(node).unwrap_or(fallback)
        }
        None => fallback,
    }
}

/// Sends `bi` to `error-drop` through arc `drop_next`, recording this node's `error` code.
#[inline]
pub fn drop_with(ctx: &mut NodeCtx<'_>, bi: u32, error: u16, drop_next: u16) -> u16 {
    let e = ctx.error(error);
    ctx.pool.meta_mut(bi).error = e;
    drop_next
}

/// True if the buffer carries a valid `sw_if_index[TX]` used as a FIB override.
#[inline]
pub fn has_tx(sw: u32) -> bool {
    sw != INVALID
}
