//! UDP header (RFC 768).

use core::net::Ipv4Addr;

use crate::checksum;
use crate::tcp::l4_checksum;
use crate::{be16, put16, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
///
/// Unlike TCP, UDP carries its own length, so payload and checksum methods
/// cover the first `len()` bytes (clamped to the buffer) and ignore any
/// trailing padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = 8;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// `Truncated` if shorter than 8 bytes or than the length field;
    /// `Malformed` if the length field is below 8.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < Self::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
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
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field (header + payload).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The datagram as delimited by the length field, clamped to the buffer.
    #[inline]
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).min(b.len())]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.datagram();
        &d[Self::HEADER_LEN.min(d.len())..]
    }

    /// True if the checksum is 0 (not computed) or correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let s = checksum::add(
            checksum::pseudo_header(src, dst, crate::IP_PROTO_UDP, self.len()),
            checksum::sum(self.datagram()),
        );
        checksum::fold(s) == 0xffff
    }

    /// The checksum the field should hold, with a computed 0 mapped to
    /// 0xffff because 0 on the wire means "no checksum".
    #[inline]
    pub fn compute_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let c = l4_checksum(
            self.datagram(),
            field::CHECKSUM,
            src,
            dst,
            crate::IP_PROTO_UDP,
            usize::from(self.len()),
        );
        if c == 0 {
            0xffff
        } else {
            c
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and writes the checksum (a computed 0 is sent as 0xffff).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let c = self.compute_checksum(src, dst);
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        let b = self.buffer.as_mut();
        let end = len.min(b.len());
        let start = Self::HEADER_LEN.min(end);
        &mut b[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects() {
        let mut b = [0u8; 12];
        b[5] = 12;
        assert!(UdpPacket::new_checked(&b[..]).is_ok());
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            UdpPacket::new_checked(&b[..11]).err(),
            Some(Error::Truncated)
        );
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn zero_checksum_means_none_and_computed_zero_is_ffff() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut b = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        p.set_len(10);
        assert!(p.verify_checksum(s, d));
        // A payload word equal to !fold(rest) makes the full sum 0xffff, so
        // the computed checksum is 0 and must go out as 0xffff.
        let base = {
            let mut q = UdpPacket::new_unchecked([0u8; 10]);
            q.set_len(10);
            checksum::add(
                checksum::pseudo_header(s, d, crate::IP_PROTO_UDP, 10),
                checksum::sum(q.as_bytes()),
            )
        };
        let w = !checksum::fold(base);
        let mut q = UdpPacket::new_unchecked([0u8; 10]);
        q.set_len(10);
        q.payload_mut().copy_from_slice(&w.to_be_bytes());
        q.fill_checksum(s, d);
        assert_eq!(q.checksum(), 0xffff);
        assert!(q.verify_checksum(s, d));
    }
}
