//! Golden output of the VPP `show trace` printers, including the two seed
//! traces (SYN / SYN-ACK) and the seed `ip4-rewrite` hex dump.

use std::net::Ipv4Addr;

use vecnet_wire::icmp::{
    ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, ICMP_PORT_UNREACH, ICMP_TIME_EXCEEDED,
    ICMP_TTL_EXCEEDED,
};
use vecnet_wire::{
    pretty, EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, TcpPacket, UdpPacket,
    IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: 20 bytes.
const SYN_OPTIONS: [u8; 20] = [
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x03, 0x03, 0x07,
];

#[allow(clippy::too_many_arguments)]
fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ident: u16,
    ttl: u8,
    df: bool,
    l4: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; 20 + l4.len()];
    b[20..].copy_from_slice(l4);
    let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + l4.len()) as u16);
    ip.set_ident(ident);
    ip.set_dont_frag(df);
    ip.set_ttl(ttl);
    ip.set_protocol(proto);
    ip.set_src_addr(Ipv4Addr::from(src));
    ip.set_dst_addr(Ipv4Addr::from(dst));
    ip.fill_checksum();
    b
}

#[allow(clippy::too_many_arguments)]
fn tcp40(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, win: u16, csum: u16) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    b[20..].copy_from_slice(&SYN_OPTIONS);
    let mut t = TcpPacket::new_unchecked(&mut b[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(40);
    t.set_flags(flags);
    t.set_window_len(win);
    t.set_checksum(csum);
    b
}

fn block(ip: &[u8]) -> String {
    let mut s = String::new();
    pretty::ip4_block(&mut s, ip, 2);
    s
}

#[test]
fn seed_syn() {
    let tcp = tcp40(46310, 80, 0xba5bf36d, 0, 0x02, 29200, 0xd22d);
    let ip = ipv4(
        [10, 1, 1, 3],
        [10, 104, 221, 85],
        IP_PROTO_TCP,
        0x5eb4,
        64,
        true,
        &tcp,
    );
    assert_eq!(
        block(&ip),
        "  TCP: 10.1.1.3 -> 10.104.221.85
    tos 0x00, ttl 64, length 60, checksum 0xe946
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 80
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0xd22d
"
    );
}

#[test]
fn seed_syn_ack() {
    let tcp = tcp40(8080, 46310, 0x57f7b0c7, 0xba5bf36e, 0x12, 28960, 0xdab4);
    let ip = ipv4(
        [10, 20, 0, 2],
        [10, 1, 1, 3],
        IP_PROTO_TCP,
        0,
        64,
        true,
        &tcp,
    );
    assert_eq!(
        block(&ip),
        "  TCP: 10.20.0.2 -> 10.1.1.3
    tos 0x00, ttl 64, length 60, checksum 0x25a3
    fragment id 0x0000, flags DONT_FRAGMENT
  TCP: 8080 -> 46310
    seq. 0x57f7b0c7 ack 0xba5bf36e
    flags 0x12 SYN ACK, tcp header: 40 bytes
    window 28960, checksum 0xdab4
"
    );
}

const REWRITE: &str = "3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a140002b4e61f90ba5bf36d00000000a002721090950000020405b40402";

#[test]
fn seed_rewrite_ethernet_and_ttl() {
    let after = hex(REWRITE);
    let mut line = String::new();
    pretty::ethernet_line(&mut line, &after);
    assert_eq!(line, "IP4: 01:23:45:67:89:42 -> 3e:1b:70:2d:4d:51");

    // Rebuild the pre-rewrite bytes (TTL 64) and redo the decrement.
    let mut before = after.clone();
    let mut ip = Ipv4Packet::new_unchecked(&mut before[14..]);
    ip.set_ttl(64);
    ip.fill_checksum();
    assert_eq!(ip.checksum(), 0xc6ee);
    ip.decrement_ttl();
    assert_eq!(ip.checksum(), 0xc7ee);
    assert_eq!(before, after);

    // And it prints as a valid header.
    let s = block(&after[14..]);
    assert!(s.starts_with(
        "  TCP: 10.1.1.3 -> 10.20.0.2\n    tos 0x00, ttl 63, length 60, checksum 0xc7ee\n"
    ));
}

#[test]
fn hex_dump() {
    let mut bytes = hex(REWRITE);
    bytes.resize(64, 0);
    let mut s = String::new();
    pretty::hex_dump_lines(&mut s, &bytes, 2);
    assert_eq!(
        s,
        "  00000000: 3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a14\n  \
         00000020: 0002b4e61f90ba5bf36d00000000a002721090950000020405b4040200000000\n"
    );
    // Up to 32 bytes VPP prints the short form with no offset column.
    let mut s = String::new();
    pretty::hex_dump_lines(&mut s, &bytes[..4], 4);
    assert_eq!(s, "    3e1b702d\n");
    let mut s = String::new();
    pretty::hex_dump_lines(&mut s, &bytes[..33], 0);
    assert_eq!(
        s,
        "00000000: 3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a14\n\
         00000020: 00\n"
    );
    let mut s = String::new();
    pretty::hex_dump_lines(&mut s, &[], 2);
    assert_eq!(s, "");
}

#[test]
fn ethernet_lines() {
    let mut f = [0u8; 14];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst_addr(MacAddr::BROADCAST);
    e.set_src_addr("02:00:00:00:00:01".parse().unwrap());
    let mut check = |et: u16, want: &str| {
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_ethertype(et);
        let mut s = String::new();
        pretty::ethernet_line(&mut s, &f);
        assert_eq!(s, want);
    };
    check(
        EtherType::ARP,
        "ARP: 02:00:00:00:00:01 -> ff:ff:ff:ff:ff:ff",
    );
    check(
        EtherType::IPV6,
        "IP6: 02:00:00:00:00:01 -> ff:ff:ff:ff:ff:ff",
    );
    check(0x1234, "0x1234: 02:00:00:00:00:01 -> ff:ff:ff:ff:ff:ff");
    let mut s = String::new();
    pretty::ethernet_line(&mut s, &f[..13]);
    assert_eq!(s, "ethernet header truncated");
}

fn icmp(ty: u8, code: u8, rest: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    let mut p = IcmpPacket::new_unchecked(&mut b[..]);
    p.set_msg_type(ty);
    p.set_msg_code(code);
    p.set_rest_of_header(rest);
    p.fill_checksum();
    b
}

fn icmp_block(ty: u8, code: u8) -> (String, u16, u16) {
    let l4 = icmp(ty, code, 0x0001_0002);
    let c = IcmpPacket::new_unchecked(&l4[..]).checksum();
    let ip = ipv4(
        [192, 168, 0, 1],
        [192, 168, 0, 2],
        IP_PROTO_ICMP,
        0x1234,
        64,
        false,
        &l4,
    );
    let ipc = Ipv4Packet::new_unchecked(&ip[..]).checksum();
    (block(&ip), ipc, c)
}

#[test]
fn icmp_lines() {
    let (s, ipc, c) = icmp_block(ICMP_ECHO_REQUEST, 0);
    assert_eq!(
        s,
        format!(
            "  ICMP: 192.168.0.1 -> 192.168.0.2
    tos 0x00, ttl 64, length 36, checksum 0x{ipc:04x}
    fragment id 0x1234
  ICMP echo_request checksum 0x{c:x}
"
        )
    );

    let line = |ty, code| {
        let (s, _, c) = icmp_block(ty, code);
        (s.lines().last().unwrap().to_string(), c)
    };
    let (l, c) = line(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH);
    assert_eq!(
        l,
        format!("  ICMP destination_unreachable port_unreachable checksum 0x{c:x}")
    );
    let (l, c) = line(ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED);
    assert_eq!(
        l,
        format!("  ICMP time_exceeded ttl_exceeded_in_transit checksum 0x{c:x}")
    );
    let (l, c) = line(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED);
    assert_eq!(
        l,
        format!(
            "  ICMP destination_unreachable fragmentation_needed_and_dont_fragment_set checksum 0x{c:x}"
        )
    );
    // No name for this code: the type alone.
    let (l, c) = line(ICMP_DEST_UNREACH, 16);
    assert_eq!(
        l,
        format!("  ICMP destination_unreachable checksum 0x{c:x}")
    );
    let (l, c) = line(0, 0);
    assert_eq!(l, format!("  ICMP echo_reply checksum 0x{c:x}"));
    // VPP: format (s, "unknown 0x%x", type).
    let (l, c) = line(42, 0);
    assert_eq!(l, format!("  ICMP unknown 0x2a checksum 0x{c:x}"));

    // Checksum is not zero-padded.
    let mut s = String::new();
    pretty::icmp_line(&mut s, &[8, 0, 0x00, 0x0f], 0);
    assert_eq!(s, "ICMP echo_request checksum 0xf\n");
    let mut s = String::new();
    pretty::icmp_line(&mut s, &[8, 0, 0], 2);
    assert_eq!(s, "  ICMP header truncated\n");
}

#[test]
fn udp_block() {
    let mut l4 = vec![0u8; 12];
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(5353);
    u.set_dst_port(53);
    u.set_len(12);
    let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    u.fill_checksum(s, d);
    let c = u.checksum();
    let ip = ipv4(s.octets(), d.octets(), IP_PROTO_UDP, 0xbeef, 17, false, &l4);
    let ipc = Ipv4Packet::new_unchecked(&ip[..]).checksum();
    assert_eq!(
        block(&ip),
        format!(
            "  UDP: 10.0.0.1 -> 10.0.0.2
    tos 0x00, ttl 17, length 32, checksum 0x{ipc:04x}
    fragment id 0xbeef
  UDP: 5353 -> 53
    length 12, checksum 0x{c:04x}
"
        )
    );
}

#[test]
fn bad_checksum_shows_should_be() {
    let tcp = tcp40(46310, 80, 0xba5bf36d, 0, 0x02, 29200, 0xd22d);
    let mut ip = ipv4(
        [10, 1, 1, 3],
        [10, 104, 221, 85],
        IP_PROTO_TCP,
        0x5eb4,
        64,
        true,
        &tcp,
    );
    ip[10..12].copy_from_slice(&0x1234u16.to_be_bytes());
    let s = block(&ip);
    assert_eq!(
        s.lines().nth(1).unwrap(),
        "    tos 0x00, ttl 64, length 60, checksum 0x1234 (should be 0xe946)"
    );
}

#[test]
fn fragments() {
    let tcp = tcp40(1, 2, 3, 4, 0x10, 5, 6);
    let mut ip = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        IP_PROTO_TCP,
        0x0102,
        64,
        false,
        &tcp,
    );
    // First fragment: MF, offset 0 -> L4 block follows.
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.set_more_frags(true);
    p.fill_checksum();
    let s = block(&ip);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[2], "    fragment id 0x0102, flags MORE_FRAGMENTS");
    assert_eq!(lines[3], "  TCP: 1 -> 2");
    assert_eq!(lines[5], "    flags 0x10 ACK, tcp header: 40 bytes");

    // Middle fragment: offset printed in bytes, no L4 block.
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.set_frag_offset(1480);
    p.fill_checksum();
    let c = p.checksum();
    assert_eq!(
        block(&ip),
        format!(
            "  TCP: 10.0.0.1 -> 10.0.0.2
    tos 0x00, ttl 64, length 60, checksum 0x{c:04x}
    fragment id 0x0102 offset 1480, flags MORE_FRAGMENTS
"
        )
    );

    // Last fragment: offset, no flags.
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.set_more_frags(false);
    p.fill_checksum();
    let s = block(&ip);
    assert_eq!(
        s.lines().nth(2).unwrap(),
        "    fragment id 0x0102 offset 1480"
    );
    assert_eq!(s.lines().count(), 3);

    // All three flag bits, VPP order, no separator.
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.set_flags_raw(0b111);
    p.set_frag_offset(0);
    p.fill_checksum();
    let s = block(&ip);
    assert_eq!(
        s.lines().nth(2).unwrap(),
        "    fragment id 0x0102, flags MORE_FRAGMENTSDONT_FRAGMENTCONGESTION"
    );
}

#[test]
fn version_and_header_length_line() {
    let tcp = tcp40(1, 2, 3, 4, 0x11, 5, 6);
    let mut ip = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        IP_PROTO_TCP,
        7,
        1,
        false,
        &tcp,
    );
    let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
    p.set_version(6);
    p.fill_checksum();
    let s = block(&ip);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "  TCP: 10.0.0.1 -> 10.0.0.2");
    assert_eq!(lines[1], "    version 6, header length 20");
    assert!(lines[2].starts_with("    tos 0x00, ttl 1, length 60, checksum 0x"));
    assert!(!lines[2].contains("should be"));
    assert_eq!(lines[6], "    flags 0x11 FIN ACK, tcp header: 40 bytes");

    // Options: header length 24 is reported even with version 4.
    let mut with_opts = ip[..20].to_vec();
    with_opts.extend_from_slice(&[1, 1, 1, 0]);
    with_opts.extend_from_slice(&ip[20..]);
    let mut p = Ipv4Packet::new_unchecked(&mut with_opts[..]);
    p.set_version(4);
    p.set_header_len(24);
    p.set_total_len(64);
    p.fill_checksum();
    let s = block(&with_opts);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[1], "    version 4, header length 24");
    assert_eq!(lines[4], "  TCP: 1 -> 2");
}

#[test]
fn other_protocols_and_truncation() {
    let ip = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, 0, 64, false, &[0u8; 8]);
    let s = block(&ip);
    assert!(s.starts_with("  GRE: 1.1.1.1 -> 2.2.2.2\n"));
    assert_eq!(s.lines().count(), 3);
    let ip = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 200, 0, 64, false, &[0u8; 8]);
    assert!(block(&ip).starts_with("  unknown 200: 1.1.1.1 -> 2.2.2.2\n"));

    // Captured bytes end inside the TCP header.
    let tcp = tcp40(1, 2, 3, 4, 0x02, 5, 6);
    let ip = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        IP_PROTO_TCP,
        0,
        64,
        false,
        &tcp,
    );
    let s = block(&ip[..30]);
    assert_eq!(s.lines().last().unwrap(), "  TCP header truncated");
    // Captured bytes end exactly at the IP header: no L4 block at all.
    assert_eq!(block(&ip[..20]).lines().count(), 3);
    let ip = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        IP_PROTO_UDP,
        0,
        64,
        false,
        &[0u8; 8],
    );
    assert_eq!(
        block(&ip[..27]).lines().last().unwrap(),
        "  UDP header truncated"
    );
    assert_eq!(block(&ip[..19]), "  IP header truncated\n");
}

#[test]
fn tcp_flag_names() {
    let mut s = String::new();
    pretty::tcp_flags_names(&mut s, 0xff);
    assert_eq!(s, " FIN SYN RST PSH ACK URG ECE CWR");
    let mut s = String::new();
    pretty::tcp_flags_names(&mut s, 0);
    assert_eq!(s, "");
}
