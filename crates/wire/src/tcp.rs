//! TCP header (RFC 9293).

use core::net::Ipv4Addr;

use crate::checksum;
use crate::{be16, be32, put16, put32, Error, Result};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// A view of a TCP segment. Checksum methods treat the *whole buffer* as
/// the segment, so slice it to the IP payload first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const HEADER_LEN: usize = 20;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// `Truncated` if shorter than 20 bytes or than the data offset;
    /// `Malformed` if the data offset is below 5.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFF] >> 4) * 4;
        if hl < Self::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
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

    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The low 8 flag bits (`TCP_FIN` … `TCP_CWR`); the NS bit is not
    /// included.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn has_flags(&self, mask: u8) -> bool {
        self.flags() & mask == mask
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Option bytes, clamped to the buffer.
    #[inline]
    pub fn options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.header_len().min(b.len());
        &b[Self::HEADER_LEN.min(end)..end]
    }

    /// Bytes after the header, clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len().min(b.len())..]
    }

    /// Verifies the checksum over the pseudo-header and the whole buffer.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let Ok(len) = u16::try_from(b.len()) else {
            return false;
        };
        let s = checksum::add(
            checksum::pseudo_header(src, dst, crate::IP_PROTO_TCP, len),
            checksum::sum(b),
        );
        checksum::fold(s) == 0xffff
    }

    /// The checksum the field should hold (field contents ignored).
    #[inline]
    pub fn compute_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let b = self.buffer.as_ref();
        l4_checksum(b, field::CHECKSUM, src, dst, crate::IP_PROTO_TCP, b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the data offset from a length in bytes (multiple of 4, ≤ 60),
    /// preserving the reserved/NS bits.
    #[inline]
    pub fn set_header_len(&mut self, len_bytes: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | ((((len_bytes / 4) as u8) & 0x0f) << 4);
    }

    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and writes the checksum over the pseudo-header and the whole
    /// buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let c = self.compute_checksum(src, dst);
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        let start = hl.min(b.len());
        &mut b[start..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Full L4 checksum of `seg` with the 16-bit field at `csum_at` treated as
/// zero. `pseudo_len` is summed as a 32-bit quantity so oversize buffers
/// cannot wrap silently into a plausible value.
#[inline]
pub(crate) fn l4_checksum(
    seg: &[u8],
    csum_at: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    pseudo_len: usize,
) -> u16 {
    let len = pseudo_len as u32;
    let ph = checksum::add(
        checksum::pseudo_header(src, dst, proto, 0),
        (len >> 16) + (len & 0xffff),
    );
    let head = &seg[..csum_at.min(seg.len())];
    let tail = seg.get(csum_at + 2..).unwrap_or(&[]);
    let s = checksum::add(ph, checksum::add(checksum::sum(head), checksum::sum(tail)));
    checksum::finish(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects() {
        let mut b = [0u8; 24];
        b[12] = 0x50;
        assert!(TcpPacket::new_checked(&b[..]).is_ok());
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).err(),
            Some(Error::Truncated)
        );
        b[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&b[..]).err(), Some(Error::Malformed));
        b[12] = 0x70;
        assert_eq!(TcpPacket::new_checked(&b[..]).err(), Some(Error::Truncated));
        b[12] = 0x60;
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().len(), 4);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 24];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(24);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_flags(TCP_SYN | TCP_ACK);
        p.set_window_len(5);
        p.set_urgent_at(6);
        let (s, d) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
        p.fill_checksum(s, d);
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(d, Ipv4Addr::new(5, 6, 7, 9)));
        assert_eq!(p.header_len(), 24);
        assert!(p.has_flags(TCP_SYN | TCP_ACK) && !p.has_flags(TCP_FIN));
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
            (1, 2, 3, 4)
        );
        assert_eq!((p.window_len(), p.urgent_at()), (5, 6));
    }
}
