//! The packet key the ACL nodes classify on: VPP 18.01's `fa_5tuple_t` (SYSTEM.md 4.5.6), kept as
//! plain fields for matching and turned into the six 64-bit words of the trace's `pkt info` only
//! when a traced packet needs them.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// Packet flags, bits 56–63 of word 5 of the 18.01 key.
pub mod pkt_flags {
    /// The TCP flags byte was read from a TCP header.
    pub const TCP_FLAGS_VALID: u8 = 0x01;
    /// The packet was classified on input (vswitch-ingress).
    pub const INPUT: u8 = 0x02;
    /// Ports (or ICMP type/code) were read from at least 8 bytes of L4 header.
    pub const L4_VALID: u8 = 0x04;
    /// A fragment with a non-zero offset: no L4 header.
    pub const NONFIRST_FRAGMENT: u8 = 0x08;
    /// IPv6 (never set by vecnet, which classifies IPv4 only).
    pub const IP6: u8 = 0x10;
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The mask-type index of the 18.01 key: always "none", as the seed's traces print it.
const MASK_TYPE_NONE: u64 = 0xffff;

/// What the ACL nodes know about one packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PacketKey {
    /// Source and destination addresses, host byte order.
    pub src: u32,
    pub dst: u32,
    /// Ports; ICMP type and code for ICMP (as VPP).
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags byte (0 unless [`pkt_flags::TCP_FLAGS_VALID`]).
    pub tcp_flags: u8,
    /// [`pkt_flags`] bits.
    pub flags: u8,
    /// The interface whose ACLs are applied (rx on input, tx on output).
    pub sw_if_index: u32,
    /// Identifier of an ICMP query (echo, timestamp, information, address mask); part of the
    /// session key only, not of the 18.01 key words.
    pub icmp_id: u16,
}

impl PacketKey {
    /// Builds the key from the bytes starting at the IPv4 header. Never panics: what cannot be
    /// read stays zero and the matching flag stays clear (a header too short for ports leaves
    /// `l4_valid` 0, so only protocol-any rules can match it, as in VPP).
    #[inline]
    pub fn parse(ip: &[u8], sw_if_index: u32, input: bool) -> Self {
        let mut k = Self {
            sw_if_index,
            flags: if input { pkt_flags::INPUT } else { 0 },
            ..Self::default()
        };
        // Fixed-size views of the IPv4 header and of the first 8 bytes of L4: one length check
        // each instead of one per field.
        let Some(h) = ip.first_chunk::<20>() else {
            return k;
        };
        k.src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        k.dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let proto = h[9];
        k.proto = proto;
        let frag = u16::from_be_bytes([h[6], h[7]]);
        // The whole 13-bit offset (18.01 masked 0x0fff and missed offsets of 32 KiB and up).
        if frag & 0x1fff != 0 {
            // No L4 header in this fragment: rules with a protocol match it on addresses and
            // protocol alone (`l4_match_nonfirst_fragment`), so a UDP deny blocks it.
            k.flags |= pkt_flags::NONFIRST_FRAGMENT;
            return k;
        }
        // Unlike 18.01 (which assumed 20 bytes) the L4 header is found after the real IHL, so
        // packets with IP options are classified on their ports too.
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let end = if total >= ihl && total <= ip.len() {
            total
        } else {
            ip.len()
        };
        let Some(l4) = ip.get(ihl.max(20)..end) else {
            return k;
        };
        let Some(l4h) = l4.first_chunk::<8>() else {
            return k;
        };
        k.flags |= pkt_flags::L4_VALID;
        match proto {
            PROTO_ICMP => {
                k.sport = u16::from(l4h[0]);
                k.dport = u16::from(l4h[1]);
                k.icmp_id = u16::from_be_bytes([l4h[4], l4h[5]]);
            }
            PROTO_TCP | PROTO_UDP => {
                k.sport = u16::from_be_bytes([l4h[0], l4h[1]]);
                k.dport = u16::from_be_bytes([l4h[2], l4h[3]]);
                if proto == PROTO_TCP {
                    if let Some(&f) = l4.get(13) {
                        k.tcp_flags = f;
                        k.flags |= pkt_flags::TCP_FLAGS_VALID;
                    }
                }
            }
            _ => {}
        }
        k
    }

    #[inline]
    pub fn is_input(&self) -> bool {
        self.flags & pkt_flags::INPUT != 0
    }

    #[inline]
    pub fn l4_valid(&self) -> bool {
        self.flags & pkt_flags::L4_VALID != 0
    }

    #[inline]
    pub fn nonfirst_fragment(&self) -> bool {
        self.flags & pkt_flags::NONFIRST_FRAGMENT != 0
    }

    #[inline]
    pub fn tcp_flags_valid(&self) -> bool {
        self.flags & pkt_flags::TCP_FLAGS_VALID != 0
    }

    /// The six words of the 18.01 key as the trace prints them (`pkt info`), each the
    /// little-endian reading of 8 bytes of `fa_5tuple_t`.
    pub fn words(&self) -> [u64; 6] {
        // An ip46 address keeps IPv4 in bytes 12..16: the high half of the second word, bytes in
        // network order, so read little-endian they come out reversed.
        let addr = |a: u32| u64::from(u32::from_le_bytes(a.to_be_bytes())) << 32;
        [
            0,
            addr(self.src),
            0,
            addr(self.dst),
            u64::from(self.sport)
                | u64::from(self.dport) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.sw_if_index & 0xffff) << 48,
            u64::from(self.sw_if_index)
                | MASK_TYPE_NONE << 32
                | u64::from(self.tcp_flags) << 48
                | u64::from(self.flags) << 56,
        ]
    }

    /// The inverse of [`PacketKey::words`] (the ICMP identifier is not in the words).
    pub fn from_words(w: &[u64; 6]) -> Self {
        let addr = |x: u64| u32::from_be_bytes(((x >> 32) as u32).to_le_bytes());
        Self {
            src: addr(w[1]),
            dst: addr(w[3]),
            sport: w[4] as u16,
            dport: (w[4] >> 16) as u16,
            proto: (w[4] >> 32) as u8,
            tcp_flags: (w[5] >> 48) as u8,
            flags: (w[5] >> 56) as u8,
            sw_if_index: w[5] as u32,
            icmp_id: 0,
        }
    }
}

/// The human-readable third line of the ACL trace (18.01 `format_fa_5tuple`), decoded from the
/// key words, without indentation or newline.
pub fn format_key_words(out: &mut String, w: &[u64; 6]) {
    let k = PacketKey::from_words(w);
    let lsb16 = (w[4] >> 48) as u16;
    let _ = write!(
        out,
        "{} sw_if_index {} (lsb16 {}) l3 {}{} {} -> {} l4 proto {} l4_valid {} port {} -> {} tcp flags ({}) {:02x} rsvd 0",
        if k.is_input() { "input" } else { "output" },
        k.sw_if_index,
        lsb16,
        if k.flags & pkt_flags::IP6 != 0 { "ip6" } else { "ip4" },
        if k.nonfirst_fragment() {
            " non-initial fragment"
        } else {
            ""
        },
        Ipv4Addr::from(k.src),
        Ipv4Addr::from(k.dst),
        k.proto,
        u8::from(k.l4_valid()),
        k.sport,
        k.dport,
        if k.tcp_flags_valid() {
            "valid"
        } else {
            "invalid"
        },
        k.tcp_flags,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    #[test]
    fn seed_syn_words() {
        let p = ip4(
            [10, 1, 1, 3],
            [10, 104, 221, 85],
            6,
            0x4000,
            &tcp(46310, 80, 0x02),
        );
        let k = PacketKey::parse(&p, 6, true);
        let w: Vec<String> = k.words().iter().map(|w| format!("{w:016x}")).collect();
        assert_eq!(
            w.join(" "),
            "0000000000000000 0301010a00000000 0000000000000000 55dd680a00000000 000600060050b4e6 0702ffff00000006"
        );
        assert_eq!(
            PacketKey::from_words(&k.words()),
            PacketKey { icmp_id: 0, ..k }
        );
    }

    #[test]
    fn udp_icmp_fragment_and_short() {
        let u = ip4(
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            17,
            0,
            &[0, 53, 0, 54, 0, 8, 0, 0],
        );
        let k = PacketKey::parse(&u, 2, false);
        assert_eq!((k.sport, k.dport, k.flags), (53, 54, pkt_flags::L4_VALID));
        assert_eq!(k.words()[5] >> 56, 0x04);

        let i = ip4(
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            1,
            0,
            &[8, 0, 0, 0, 0x12, 0x34, 0, 1],
        );
        let k = PacketKey::parse(&i, 2, true);
        assert_eq!((k.sport, k.dport, k.icmp_id), (8, 0, 0x1234));

        let f = ip4([1, 2, 3, 4], [5, 6, 7, 8], 17, 0x0010, &[1; 16]);
        let k = PacketKey::parse(&f, 2, true);
        assert!(k.nonfirst_fragment() && !k.l4_valid());
        assert_eq!((k.sport, k.dport), (0, 0));
        let mut s = String::new();
        format_key_words(&mut s, &k.words());
        assert_eq!(
            s,
            "input sw_if_index 2 (lsb16 2) l3 ip4 non-initial fragment 1.2.3.4 -> 5.6.7.8 l4 proto 17 l4_valid 0 port 0 -> 0 tcp flags (invalid) 00 rsvd 0"
        );

        let short = ip4([1, 2, 3, 4], [5, 6, 7, 8], 6, 0, &[0, 1, 0, 2]);
        let k = PacketKey::parse(&short, 2, true);
        assert!(!k.l4_valid());
        // Garbage never panics.
        for n in 0..30 {
            let _ = PacketKey::parse(&u[..n.min(u.len())], 1, true);
        }
        let mut bad = u.clone();
        bad[0] = 0x4f;
        let _ = PacketKey::parse(&bad, 1, true);
    }
}
