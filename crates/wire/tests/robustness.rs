//! Every `new_checked` error path, and arbitrary bytes through every
//! constructor, getter and printer without panicking.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use vecnet_wire::{
    pretty, ArpPacket, Error, EthernetFrame, IcmpPacket, Ipv4Packet, TcpPacket, UdpPacket,
};

fn ipv4(total_len: u16, ihl: u8, buf_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; buf_len];
    if buf_len > 0 {
        b[0] = 0x40 | ihl;
    }
    if buf_len >= 4 {
        b[2..4].copy_from_slice(&total_len.to_be_bytes());
    }
    b
}

#[test]
fn ipv4_error_paths() {
    let ok = ipv4(20, 5, 20);
    assert!(Ipv4Packet::new_checked(&ok[..]).is_ok());
    // Truncated below the fixed header.
    for n in 0..20 {
        assert_eq!(
            Ipv4Packet::new_checked(&ok[..n]).err(),
            Some(Error::Truncated),
            "{n}"
        );
    }
    // Bad version.
    for v in [0u8, 1, 5, 6, 15] {
        let mut b = ok.clone();
        b[0] = (v << 4) | 5;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::Malformed),
            "v{v}"
        );
    }
    // IHL < 5.
    for ihl in 0..5 {
        let b = ipv4(20, ihl, 20);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::Malformed),
            "ihl{ihl}"
        );
    }
    // Header longer than the buffer.
    let b = ipv4(24, 6, 20);
    assert_eq!(
        Ipv4Packet::new_checked(&b[..]).err(),
        Some(Error::Truncated)
    );
    // Total length shorter than the header.
    let b = ipv4(19, 5, 40);
    assert_eq!(
        Ipv4Packet::new_checked(&b[..]).err(),
        Some(Error::Malformed)
    );
    let b = ipv4(20, 6, 40);
    assert_eq!(
        Ipv4Packet::new_checked(&b[..]).err(),
        Some(Error::Malformed)
    );
    // Total length longer than the buffer.
    let b = ipv4(41, 5, 40);
    assert_eq!(
        Ipv4Packet::new_checked(&b[..]).err(),
        Some(Error::Truncated)
    );
    let b = ipv4(0xffff, 5, 40);
    assert_eq!(
        Ipv4Packet::new_checked(&b[..]).err(),
        Some(Error::Truncated)
    );
    // Padding past total length is fine and excluded from the payload.
    let b = ipv4(28, 5, 60);
    let p = Ipv4Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.payload().len(), 8);
}

#[test]
fn l4_and_link_error_paths() {
    assert_eq!(
        EthernetFrame::new_checked(&[0u8; 13][..]).err(),
        Some(Error::Truncated)
    );
    assert!(EthernetFrame::new_checked(&[0u8; 14][..]).is_ok());

    let mut tcp = [0u8; 40];
    tcp[12] = 0x50;
    assert_eq!(
        TcpPacket::new_checked(&tcp[..19]).err(),
        Some(Error::Truncated)
    );
    for off in 0..5u8 {
        tcp[12] = off << 4;
        assert_eq!(
            TcpPacket::new_checked(&tcp[..]).err(),
            Some(Error::Malformed)
        );
    }
    tcp[12] = 0xf0; // 60-byte header in a 40-byte buffer
    assert_eq!(
        TcpPacket::new_checked(&tcp[..]).err(),
        Some(Error::Truncated)
    );
    tcp[12] = 0xa0;
    assert!(TcpPacket::new_checked(&tcp[..]).is_ok());
    assert_eq!(
        TcpPacket::new_checked(&tcp[..39]).err(),
        Some(Error::Truncated)
    );

    let mut udp = [0u8; 16];
    assert_eq!(
        UdpPacket::new_checked(&udp[..7]).err(),
        Some(Error::Truncated)
    );
    for len in 0..8u16 {
        udp[4..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&udp[..]).err(),
            Some(Error::Malformed)
        );
    }
    udp[4..6].copy_from_slice(&17u16.to_be_bytes());
    assert_eq!(
        UdpPacket::new_checked(&udp[..]).err(),
        Some(Error::Truncated)
    );
    udp[4..6].copy_from_slice(&12u16.to_be_bytes());
    let u = UdpPacket::new_checked(&udp[..]).unwrap();
    assert_eq!(u.payload().len(), 4);

    assert_eq!(
        IcmpPacket::new_checked(&[0u8; 7][..]).err(),
        Some(Error::Truncated)
    );
    assert!(IcmpPacket::new_checked(&[0u8; 8][..]).is_ok());

    let mut arp = [0u8; 28];
    arp[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    assert!(ArpPacket::new_checked(&arp[..]).is_ok());
    assert_eq!(
        ArpPacket::new_checked(&arp[..27]).err(),
        Some(Error::Truncated)
    );
    let bad: [(usize, u8); 6] = [(1, 6), (0, 1), (2, 0x86), (3, 6), (4, 16), (5, 16)];
    for (at, v) in bad {
        let mut b = arp;
        b[at] = v;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).err(),
            Some(Error::Malformed),
            "{at}"
        );
    }
}

fn poke_all(data: &[u8]) {
    let a = Ipv4Addr::new(1, 2, 3, 4);
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let _ = (
            f.dst_addr(),
            f.src_addr(),
            f.ethertype(),
            f.payload(),
            f.header(),
        );
    }
    if let Ok(p) = ArpPacket::new_checked(data) {
        let _ = (p.operation(), p.sender_hw_addr(), p.sender_proto_addr());
        let _ = (p.target_hw_addr(), p.target_proto_addr(), p.hardware_type());
        let _ = (p.protocol_type(), p.hw_len(), p.proto_len());
    }
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.header_len(),
            p.tos(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.flags_raw(),
            p.frag_offset(),
            p.ttl(),
        );
        let _ = (
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.src_u32(),
        );
        let _ = (
            p.dst_u32(),
            p.verify_checksum(),
            p.compute_checksum(),
            p.header(),
        );
        let _ = (p.options(), p.payload(), p.is_fragment(), p.dscp(), p.ecn());
        assert!(p.payload().len() + p.header_len() <= data.len());
        let mut m = data.to_vec();
        let mut q = Ipv4Packet::new_unchecked(&mut m[..]);
        q.decrement_ttl();
        q.fill_checksum();
        assert!(q.verify_checksum());
    }
    if let Ok(p) = TcpPacket::new_checked(data) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
        let _ = (
            p.header_len(),
            p.flags(),
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
        );
        let _ = (
            p.payload(),
            p.options(),
            p.verify_checksum(a, a),
            p.compute_checksum(a, a),
        );
    }
    if let Ok(p) = UdpPacket::new_checked(data) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.checksum(),
            p.payload(),
        );
        let _ = (p.verify_checksum(a, a), p.compute_checksum(a, a));
    }
    if let Ok(p) = IcmpPacket::new_checked(data) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident());
        let _ = (
            p.echo_seq_no(),
            p.rest_of_header(),
            p.data(),
            p.verify_checksum(),
        );
        let _ = p.compute_checksum();
    }
    // Unchecked views: the slice-returning methods clamp instead of
    // panicking whenever the fixed header is present.
    if data.len() >= 20 {
        let p = Ipv4Packet::new_unchecked(data);
        let _ = (p.header(), p.options(), p.payload(), p.compute_checksum());
        let _ = p.verify_checksum();
        let t = TcpPacket::new_unchecked(data);
        let _ = (t.options(), t.payload(), t.compute_checksum(a, a));
    }
    if data.len() >= 8 {
        let u = UdpPacket::new_unchecked(data);
        let _ = (
            u.payload(),
            u.verify_checksum(a, a),
            u.compute_checksum(a, a),
        );
    }

    let mut s = String::new();
    pretty::ethernet_line(&mut s, data);
    s.push('\n');
    pretty::ip4_block(&mut s, data, 2);
    pretty::ip4_block(&mut s, data.get(14..).unwrap_or(&[]), 4);
    pretty::tcp_block(&mut s, data, 0);
    pretty::udp_block(&mut s, data, 0);
    pretty::icmp_line(&mut s, data, 0);
    pretty::hex_dump_lines(&mut s, data, 2);
    for line in s.lines() {
        assert!(!line.ends_with(' '), "trailing space in {line:?}");
    }
}

#[test]
fn empty_and_tiny_inputs() {
    for n in 0..64 {
        poke_all(&vec![0u8; n]);
        poke_all(&vec![0xffu8; n]);
        let mut v = vec![0u8; n];
        if n > 0 {
            v[0] = 0x45;
        }
        poke_all(&v);
    }
}

/// Bytes that look like an IPv4 header often enough to reach deep paths.
fn ipv4ish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..120),
        0u8..16,
        prop::sample::select(vec![1u8, 6, 17, 47, 200]),
        any::<u16>(),
    )
        .prop_map(|(mut v, ihl, proto, len)| {
            if v.len() >= 20 {
                v[0] = 0x40 | ihl;
                v[9] = proto;
                let l = if len % 2 == 0 {
                    v.len() as u16
                } else {
                    len % 140
                };
                v[2..4].copy_from_slice(&l.to_be_bytes());
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        poke_all(&data);
    }

    #[test]
    fn ipv4ish_bytes_never_panic(data in ipv4ish()) {
        poke_all(&data);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&data);
        poke_all(&eth);
    }
}
