//! ARP for Ethernet/IPv4 (RFC 826).

use core::net::Ipv4Addr;

use crate::ethernet::{mac_at, MacAddr};
use crate::{be16, be32, put16, Error, Result};

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const ARP_HTYPE_ETHERNET: u16 = 1;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// A view of an Ethernet/IPv4 ARP packet; other hardware/protocol
/// combinations are rejected by `new_checked` because the fixed field
/// offsets below only hold for hlen 6 / plen 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const LEN: usize = 28;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// `Truncated` if shorter than 28 bytes; `Malformed` unless htype 1,
    /// ptype 0x0800, hlen 6, plen 4.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != ARP_HTYPE_ETHERNET
            || be16(b, field::PTYPE) != crate::ETHERTYPE_IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Malformed);
        }
        Ok(Self::new_unchecked(buffer))
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE)
    }

    #[inline]
    pub fn hw_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn proto_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// 1 = request, 2 = reply.
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA)
    }

    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), field::SPA))
    }

    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA)
    }

    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::HTYPE, v);
    }

    #[inline]
    pub fn set_protocol_type(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::PTYPE, v);
    }

    #[inline]
    pub fn set_hw_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    #[inline]
    pub fn set_proto_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Writes htype 1, ptype 0x0800, hlen 6, plen 4.
    #[inline]
    pub fn fill_ethernet_ipv4_header(&mut self) {
        self.set_hardware_type(ARP_HTYPE_ETHERNET);
        self.set_protocol_type(crate::ETHERTYPE_IPV4);
        self.set_hw_len(6);
        self.set_proto_len(4);
    }

    #[inline]
    pub fn set_operation(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::OPER, v);
    }

    #[inline]
    pub fn set_sender_hw_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_sender_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_target_hw_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_target_proto_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&a.octets());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for ArpPacket<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let mut buf = [0u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.fill_ethernet_ipv4_header();
        p.set_operation(ARP_REQUEST);
        p.set_sender_hw_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_sender_proto_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_target_hw_addr(MacAddr::ZERO);
        p.set_target_proto_addr(Ipv4Addr::new(10, 0, 0, 2));
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!((p.hw_len(), p.proto_len()), (6, 4));
        assert_eq!(p.operation(), ARP_REQUEST);
        assert_eq!(p.sender_hw_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn rejects() {
        let mut good = [0u8; 28];
        ArpPacket::new_unchecked(&mut good[..]).fill_ethernet_ipv4_header();
        assert!(ArpPacket::new_checked(&good[..]).is_ok());
        assert_eq!(
            ArpPacket::new_checked(&good[..27]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            ArpPacket::new_checked(&[][..]).err(),
            Some(Error::Truncated)
        );
        for (at, v) in [(1usize, 6u8), (2, 0x86), (3, 0x01), (4, 8), (5, 16)] {
            let mut b = good;
            b[at] = v;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "{at}"
            );
        }
    }
}
