//! Zero-copy typed views over packet bytes, in the style of smoltcp's `wire`
//! module, plus Internet checksum helpers and VPP-compatible trace printers.
//!
//! Every view is `Packet<T: AsRef<[u8]>>`: `new_checked` validates lengths
//! (and the structural fields listed on each type) so that all getters are
//! then infallible; `new_unchecked` skips validation, and getters on a buffer
//! shorter than the fixed header will panic. Setters need `T: AsMut<[u8]>`.
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod pretty;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// Why a buffer was rejected by a `new_checked` constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header or a length field claims.
    #[error("truncated")]
    Truncated,
    /// A structural field holds a value this view cannot interpret.
    #[error("malformed")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, Error>;

pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
