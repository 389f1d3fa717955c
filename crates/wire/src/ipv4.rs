//! IPv4 header (RFC 791).

use core::net::Ipv4Addr;

use crate::checksum;
use crate::{be16, be32, put16, Error, Result};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Bits of [`Ipv4Packet::flags_raw`].
pub const IPV4_FLAG_MF: u8 = 0b001;
pub const IPV4_FLAG_DF: u8 = 0b010;
/// The reserved ("evil"/congestion) bit; VPP calls it CONGESTION.
pub const IPV4_FLAG_RESERVED: u8 = 0b100;

/// A view of an IPv4 packet.
///
/// The buffer may extend past `total_len` (Ethernet padding, capture
/// slack); [`payload`](Self::payload) stops at `total_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Minimum header length (no options).
    pub const HEADER_LEN: usize = 20;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Validates, in order: length ≥ 20 (`Truncated`), version 4
    /// (`Malformed`), IHL ≥ 5 (`Malformed`), header fits (`Truncated`),
    /// total length ≥ header (`Malformed`), total length fits (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < Self::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        let total = usize::from(be16(b, field::LENGTH));
        if total < hl {
            return Err(Error::Malformed);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The three flag bits, right-aligned: reserved=4, DF=2, MF=1.
    #[inline]
    pub fn flags_raw(&self) -> u8 {
        self.buffer.as_ref()[field::FLG_OFF] >> 5
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_raw() & IPV4_FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_raw() & IPV4_FLAG_MF != 0
    }

    /// Fragment offset in bytes (field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// True for any fragment (MF set or non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x3fff != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_u32())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_u32())
    }

    /// Source address as a host-order integer (`u32::from(src_addr())`).
    #[inline]
    pub fn src_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_u32(&self) -> u32 {
        be32(self.buffer.as_ref(), field::DST)
    }

    /// Header bytes including options, clamped to the buffer so that an
    /// unchecked view with a bogus IHL cannot cause a panic here.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..self.header_len().min(b.len())]
    }

    #[inline]
    pub fn options(&self) -> &[u8] {
        let h = self.header();
        &h[Self::HEADER_LEN.min(h.len())..]
    }

    /// Bytes from the end of the header up to `total_len`, clamped to the
    /// buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let (start, end) = payload_range(b.len(), self.header_len(), self.total_len());
        &b[start..end]
    }

    /// True if the header checksum is correct (the one's-complement sum of
    /// the header, field included, is all ones).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }

    /// The value the checksum field should hold for the current header.
    #[inline]
    pub fn compute_checksum(&self) -> u16 {
        checksum::finish(header_sum_without_checksum(self.header()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets IHL from a length in bytes (must be a multiple of 4, ≤ 60).
    #[inline]
    pub fn set_header_len(&mut self, len_bytes: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | (((len_bytes / 4) as u8) & 0x0f);
    }

    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the three flag bits (low 3 bits of `v`), keeping the offset.
    #[inline]
    pub fn set_flags_raw(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::FLG_OFF];
        *b = (*b & 0x1f) | ((v & 0x07) << 5);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        let f = (self.flags_raw() & !IPV4_FLAG_DF) | if on { IPV4_FLAG_DF } else { 0 };
        self.set_flags_raw(f);
    }

    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        let f = (self.flags_raw() & !IPV4_FLAG_MF) | if on { IPV4_FLAG_MF } else { 0 };
        self.set_flags_raw(f);
    }

    /// Sets the fragment offset from a byte count (low 3 bits are dropped:
    /// the wire field counts 8-byte units).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let b = self.buffer.as_mut();
        let v = (be16(b, field::FLG_OFF) & 0xe000) | ((bytes >> 3) & 0x1fff);
        put16(b, field::FLG_OFF, v);
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }

    /// Decrements TTL and patches the checksum incrementally (RFC 1624
    /// eqn 3), which equals a full recompute. A TTL of 0 is left alone:
    /// forwarding code must check `ttl() <= 1` first and send Time Exceeded.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        if b[field::TTL] == 0 {
            return;
        }
        // TTL shares a 16-bit word with the protocol byte.
        let old = be16(b, field::TTL);
        let new = old - 0x0100;
        let c = checksum::update_u16(be16(b, field::CHECKSUM), old, new);
        put16(b, field::TTL, new);
        put16(b, field::CHECKSUM, c);
    }

    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        let end = hl.min(b.len());
        &mut b[..end]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        let b = self.buffer.as_mut();
        let (start, end) = payload_range(b.len(), hl, total);
        &mut b[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[inline]
fn payload_range(buf_len: usize, hl: usize, total: u16) -> (usize, usize) {
    let start = hl.min(buf_len);
    let end = usize::from(total).min(buf_len).max(start);
    (start, end)
}

/// Sum of a header with the checksum field treated as zero.
#[inline]
pub(crate) fn header_sum_without_checksum(h: &[u8]) -> u32 {
    let head = &h[..field::CHECKSUM.min(h.len())];
    let tail = h.get(field::CHECKSUM + 2..).unwrap_or(&[]);
    checksum::add(checksum::sum(head), checksum::sum(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // The seed ip4-rewrite dump: the IP header after TTL 64 -> 63.
    const REWRITE: &str = "3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a140002b4e61f90ba5bf36d00000000a002721090950000020405b40402";

    #[test]
    fn decrement_ttl_matches_seed() {
        let after = hex(REWRITE);
        let mut ip = after[14..34].to_vec();
        // Undo the rewrite: TTL 64 and its full checksum.
        ip[8] = 64;
        let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xc6ee);
        assert!(p.verify_checksum());
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.checksum(), 0xc7ee);
        assert_eq!(&ip[..], &after[14..34]);
    }

    #[test]
    fn getters() {
        // The seed dump stops 14 bytes short of the 60-byte datagram.
        let mut b = hex(REWRITE);
        b.resize(74, 0);
        assert!(Ipv4Packet::new_checked(&b[14..73]).is_err());
        let p = Ipv4Packet::new_checked(&b[14..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x5eb4);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.flags_raw(), IPV4_FLAG_DF);
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.protocol(), crate::IP_PROTO_TCP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 1, 1, 3));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 20, 0, 2));
        assert_eq!(p.src_u32(), 0x0a01_0103);
        assert_eq!(p.payload().len(), 40);
        assert!(p.options().is_empty());
        assert!(p.verify_checksum());
        assert_eq!(p.compute_checksum(), 0xc7ee);
    }

    #[test]
    fn frag_setters() {
        let mut b = hex(REWRITE)[14..34].to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_dont_frag(false);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        assert_eq!((p.flags_raw(), p.frag_offset()), (IPV4_FLAG_MF, 1480));
        p.set_flags_raw(IPV4_FLAG_RESERVED);
        assert_eq!((p.flags_raw(), p.frag_offset()), (IPV4_FLAG_RESERVED, 1480));
        assert!(p.is_fragment());
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
    }

    #[test]
    fn unchecked_short_header_does_not_panic_in_slices() {
        let mut b = [
            0x4fu8, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let p = Ipv4Packet::new_unchecked(&b[..]);
        assert_eq!(p.header().len(), 20);
        assert!(p.payload().is_empty());
        let _ = p.compute_checksum();
        b[0] = 0x41;
        let p = Ipv4Packet::new_unchecked(&b[..]);
        assert_eq!(p.header().len(), 4);
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 16);
    }
}
