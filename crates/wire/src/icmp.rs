//! ICMPv4 (RFC 792).

use crate::checksum;
use crate::{be16, be32, put16, put32, Error, Result};

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAM_PROBLEM: u8 = 12;

/// Destination Unreachable codes.
pub const ICMP_NET_UNREACH: u8 = 0;
pub const ICMP_HOST_UNREACH: u8 = 1;
pub const ICMP_PROTO_UNREACH: u8 = 2;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_ADMIN_PROHIBITED: u8 = 13;

/// Time Exceeded codes.
pub const ICMP_TTL_EXCEEDED: u8 = 0;
pub const ICMP_FRAG_REASM_EXCEEDED: u8 = 1;

/// True for ICMP error messages, which quote an offending datagram and must
/// never be answered with another ICMP error (RFC 1122 3.2.2).
#[inline]
pub fn is_error_type(t: u8) -> bool {
    matches!(
        t,
        ICMP_DEST_UNREACH
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAM_PROBLEM
    )
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// A view of an ICMPv4 message. Checksum methods cover the whole buffer, so
/// slice it to the IP payload first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const HEADER_LEN: usize = 8;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// `Truncated` if shorter than 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
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
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Bytes 4..8 as one word; for Fragmentation Needed the next-hop MTU is
    /// the low 16 bits, for Redirect it is the gateway address.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Everything after the 8-byte header (echo data or the quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[Self::HEADER_LEN.min(b.len())..]
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }

    /// The value the checksum field should hold (field contents ignored).
    #[inline]
    pub fn compute_checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        let head = &b[..field::CHECKSUM.min(b.len())];
        let tail = b.get(field::CHECKSUM + 2..).unwrap_or(&[]);
        checksum::finish(checksum::add(checksum::sum(head), checksum::sum(tail)))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::REST, v);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let start = Self::HEADER_LEN.min(b.len());
        &mut b[start..]
    }

    /// Computes and writes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_roundtrip() {
        let mut b = [0u8; 12];
        assert_eq!(
            IcmpPacket::new_checked(&b[..7]).err(),
            Some(Error::Truncated)
        );
        let mut p = IcmpPacket::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(ICMP_ECHO_REQUEST);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(7);
        p.data_mut().copy_from_slice(b"ping");
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.rest_of_header(), 0x1234_0007);
        assert_eq!(p.data(), b"ping");
        p.set_rest_of_header(0x0000_05dc);
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0, 1500));
        assert!(!p.verify_checksum());
    }

    #[test]
    fn error_types() {
        assert!(is_error_type(ICMP_DEST_UNREACH));
        assert!(is_error_type(ICMP_TIME_EXCEEDED));
        assert!(is_error_type(ICMP_PARAM_PROBLEM));
        assert!(!is_error_type(ICMP_ECHO_REQUEST));
        assert!(!is_error_type(ICMP_ECHO_REPLY));
    }
}
