//! Ethernet II frames and MAC addresses.

use core::fmt;
use core::str::FromStr;

use crate::{be16, put16, Error, Result};

/// A 48-bit IEEE 802 MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// I/G bit set; broadcast counts as multicast.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// U/L bit set (locally administered).
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    #[inline]
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    #[inline]
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Accepts exactly `xx:xx:xx:xx:xx:xx` (hex digits of either case).
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(Error::Malformed);
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != b':' {
                return Err(Error::Malformed);
            }
            let hi = hex_val(b[at]).ok_or(Error::Malformed)?;
            let lo = hex_val(b[at + 1]).ok_or(Error::Malformed)?;
            *o = (hi << 4) | lo;
        }
        Ok(MacAddr(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// EtherType values, usable directly in `match` on
/// [`EthernetFrame::ethertype`]. Uninhabited: a namespace for constants.
pub enum EtherType {}

impl EtherType {
    pub const IPV4: u16 = crate::ETHERTYPE_IPV4;
    pub const ARP: u16 = crate::ETHERTYPE_ARP;
    pub const IPV6: u16 = crate::ETHERTYPE_IPV6;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// A view of an Ethernet II frame (no 802.1Q parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Fails with `Truncated` if shorter than 14 bytes.
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
    pub fn dst_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST.start)
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC.start)
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..Self::HEADER_LEN]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[inline(always)]
pub(crate) fn mac_at(b: &[u8], at: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_parse() {
        let m = MacAddr([0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51]);
        assert_eq!(m.to_string(), "3e:1b:70:2d:4d:51");
        assert_eq!("3e:1b:70:2d:4d:51".parse::<MacAddr>().unwrap(), m);
        assert_eq!("3E:1B:70:2D:4D:51".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "3e:1b:70:2d:4d",
            "3e:1b:70:2d:4d:51:",
            "3e-1b-70-2d-4d-51",
            "3e:1b:70:2d:4d:5g",
            "3e:1b:70:2d:4d:5",
            "3e:1b:70:2d:4d:511",
            " 3e:1b:70:2d:4d:51",
            "3e1b.702d.4d51",
            "3e:1b:70:2d:4d:é",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mc = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert!(mc.is_multicast() && !mc.is_broadcast() && !mc.is_unicast());
        let uc = MacAddr([0x02, 0, 0, 0, 0, 1]);
        assert!(uc.is_unicast() && !uc.is_multicast() && uc.is_local());
        assert_eq!(MacAddr::default(), MacAddr::ZERO);
    }

    #[test]
    fn frame_roundtrip() {
        let mut buf = [0u8; 20];
        assert_eq!(
            EthernetFrame::new_checked(&buf[..13]),
            Err(Error::Truncated)
        );
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr(MacAddr::BROADCAST);
        f.set_src_addr(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_ethertype(EtherType::ARP);
        f.payload_mut()[0] = 0xaa;
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload().len(), 6);
        assert_eq!(f.payload()[0], 0xaa);
        assert_eq!(f.into_inner()[12..14], [0x08, 0x06]);
    }
}
