//! Internet checksum (RFC 1071) and incremental update (RFC 1624).
//!
//! Terminology used throughout:
//! * a *sum* is an unfolded `u32` one's-complement accumulator; sums can be
//!   added together freely (with [`add`]) before folding;
//! * [`fold`] reduces a sum to 16 bits by end-around carry, *without*
//!   complementing — this is the form a NEEDS_CSUM / CHECKSUM_PARTIAL
//!   pseudo-header seed is stored in;
//! * [`finish`] is `!fold(sum)` — the value that goes in a header's
//!   checksum field.
//!
//! All 16-bit words are network-order (big-endian) values.

use core::net::Ipv4Addr;

/// Adds two sums with end-around carry, so the result stays congruent
/// modulo 0xffff even if the 32-bit addition would overflow.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u32::from(carry))
}

/// Unfolded one's-complement sum of `data` as big-endian 16-bit words; an odd
/// trailing byte is padded with a zero low byte.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Loading 32 bits at a time halves the loop count; splitting each load
    // into its two 16-bit words keeps the result equal to the plain word sum
    // (not merely congruent), which callers may add to other sums. A u64
    // cannot overflow for any slice that fits in memory.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        acc += u64::from(w >> 16) + u64::from(w & 0xffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [b] = rest {
        acc += u64::from(*b) << 8;
    }
    // Only inputs over ~256 KiB can exceed u32; fold with end-around carry
    // so the value stays congruent modulo 0xffff.
    while acc > u64::from(u32::MAX) {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds carries of a sum into 16 bits. Not complemented.
///
/// The result is 0 only if the sum is 0; any non-zero sum that is a multiple
/// of 0xffff folds to 0xffff ("negative zero").
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a sum: `!fold(sum)`.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Internet checksum of `data` (the field value, complemented).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Unfolded sum of the IPv4 TCP/UDP pseudo-header.
#[inline]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(proto) + u32::from(len)
}

/// RFC 1624 eqn 3 for one changed 16-bit word: `HC' = ~(~HC + ~m + m')`.
///
/// Equals a full recomputation whenever the covered data is not entirely
/// zero after the change (always true for IPv4 headers, whose version nibble
/// is non-zero, and for TCP/UDP, whose pseudo-header carries the protocol).
/// Do not use on a UDP checksum of 0 ("no checksum"), and map a result of 0
/// to 0xffff for UDP (see [`Delta::apply_udp`]).
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn 3 for a changed 32-bit field (e.g. an IPv4 address).
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    Delta::from_u32(old, new).apply(csum)
}

/// Unfolded sum `Σ~old + Σnew`, the precomputable part of RFC 1624 eqn 3.
///
/// `old` and `new` may differ in length; each is summed on its own.
#[inline]
pub fn delta(old: &[u16], new: &[u16]) -> u32 {
    let mut s: u32 = 0;
    for &w in old {
        s = add(s, u32::from(!w));
    }
    for &w in new {
        s = add(s, u32::from(w));
    }
    s
}

/// A precomputed checksum adjustment for a fixed rewrite (e.g. one NAT
/// session's address/port translation), so the per-packet cost is one add
/// and fold.
///
/// The stored value is folded (`fold(Σ~old + Σnew)`), so deltas compose with
/// [`Delta::combine`] without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Delta(pub u32);

impl Delta {
    /// Delta for replacing the 16-bit words `old` with `new`.
    #[inline]
    pub fn new(old_words: &[u16], new_words: &[u16]) -> Self {
        Delta(u32::from(fold(delta(old_words, new_words))))
    }

    /// Delta for replacing one 16-bit field.
    #[inline]
    pub fn from_u16(old: u16, new: u16) -> Self {
        Delta(u32::from(fold(u32::from(!old) + u32::from(new))))
    }

    /// Delta for replacing one 32-bit field (host-order value of the
    /// big-endian field, e.g. `u32::from(Ipv4Addr)`).
    #[inline]
    pub fn from_u32(old: u32, new: u32) -> Self {
        let (oh, ol) = ((old >> 16) as u16, old as u16);
        let (nh, nl) = ((new >> 16) as u16, new as u16);
        Delta(u32::from(fold(
            u32::from(!oh) + u32::from(!ol) + u32::from(nh) + u32::from(nl),
        )))
    }

    /// Delta for an IPv4 address change.
    #[inline]
    pub fn from_addrs(old: Ipv4Addr, new: Ipv4Addr) -> Self {
        Self::from_u32(u32::from(old), u32::from(new))
    }

    /// Both rewrites applied together.
    #[inline]
    #[must_use]
    pub fn combine(self, other: Delta) -> Delta {
        Delta(u32::from(fold(self.0 + other.0)))
    }

    /// Adjusts a *complemented* checksum field (IPv4 header, TCP, UDP with a
    /// non-zero checksum, ICMP): `~(~HC + delta)`.
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        !fold(u32::from(!csum) + self.0)
    }

    /// Like [`apply`](Self::apply) for a UDP checksum field: 0 means "not
    /// computed" and stays 0, and a result of 0 is sent as 0xffff (RFC 768).
    #[inline]
    pub fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }

    /// Adjusts a NEEDS_CSUM / CHECKSUM_PARTIAL seed: the L4 checksum field
    /// holds `fold(pseudo-header sum)`, *uncomplemented*, and the NIC (or
    /// software fallback) later writes `finish(sum(segment))`. Because the
    /// seed is a plain sum rather than its complement, the delta is added
    /// directly: `fold(partial + delta)` — the opposite sign convention to
    /// [`apply`](Self::apply).
    #[inline]
    pub fn apply_partial(self, partial: u16) -> u16 {
        fold(u32::from(partial) + self.0)
    }
}
