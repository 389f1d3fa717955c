//! Byte-exact re-implementations of VPP 18.01's `show trace` formatters
//! (`format_ethernet_header`, `format_ip4_header`, `format_tcp_header`,
//! `format_udp_header`, `format_ip4_icmp_header`, `format_hex_bytes`).
//!
//! VPP's formatters nest using the column the output is currently at; here
//! the caller passes `indent` explicitly instead. Every function tolerates
//! arbitrarily short or malformed input: where VPP prints
//! `<X> header truncated` so do we, and otherwise only available bytes are
//! read.
//!
//! Deliberate differences from VPP: the fragment line masks the flag bits
//! properly (VPP computes them as `f ^= 8 * offset`, which invents flags for
//! some offsets and can print a bare `, flags `), and 802.1Q tags are not
//! decoded by [`ethernet_line`].

use core::fmt::Write;
use core::net::Ipv4Addr;

use crate::ethernet::MacAddr;

// Writing into a String cannot fail, so `fmt::Result`s are discarded.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

#[inline]
fn pad(out: &mut String, n: usize) {
    out.extend(core::iter::repeat_n(' ', n));
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(b, at))
}

fn mac_at(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

/// `<ETYPE>: <src-mac> -> <dst-mac>` (no indent, no newline), or
/// `ethernet header truncated` for fewer than 14 bytes. 802.1Q tags are not
/// decoded.
pub fn ethernet_line(out: &mut String, frame: &[u8]) {
    if frame.len() < 14 {
        out.push_str("ethernet header truncated");
        return;
    }
    let et = be16(frame, 12);
    match ethertype_name(et) {
        Some(n) => out.push_str(n),
        None => w!(out, "0x{et:04x}"),
    }
    w!(out, ": {} -> {}", mac_at(frame, 6), mac_at(frame, 0));
}

/// The IPv4 header block followed by the TCP/UDP/ICMP block, one
/// `\n`-terminated line each. `ip` is whatever was captured from the start
/// of the IP header; it may be shorter or longer than the packet.
pub fn ip4_block(out: &mut String, ip: &[u8], indent: usize) {
    if ip.len() < 20 {
        pad(out, indent);
        out.push_str("IP header truncated\n");
        return;
    }
    let version = ip[0] >> 4;
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];

    pad(out, indent);
    write_ip_protocol(out, proto);
    w!(out, ": {} -> {}\n", ipv4_at(ip, 12), ipv4_at(ip, 16));

    if version != 4 || hl != 20 {
        pad(out, indent + 2);
        w!(out, "version {version}, header length {hl}\n");
    }

    let stored = be16(ip, 10);
    pad(out, indent + 2);
    w!(
        out,
        "tos 0x{:02x}, ttl {}, length {}, checksum 0x{:04x}",
        ip[1],
        ip[8],
        be16(ip, 2),
        stored
    );
    let mut should = crate::checksum::finish(crate::ipv4::header_sum_without_checksum(
        &ip[..hl.min(ip.len())],
    ));
    // 0 and 0xffff are the same one's-complement value; VPP accepts either.
    if should == 0 && stored == 0xffff {
        should = stored;
    }
    if should != stored {
        w!(out, " (should be 0x{should:04x})");
    }
    out.push('\n');

    let fo = be16(ip, 6);
    let offset = u32::from(fo & 0x1fff) * 8;
    pad(out, indent + 2);
    w!(out, "fragment id 0x{:04x}", be16(ip, 4));
    if offset != 0 {
        w!(out, " offset {offset}");
    }
    let flags = fo & 0xe000;
    if flags != 0 {
        out.push_str(", flags ");
        if flags & 0x2000 != 0 {
            out.push_str("MORE_FRAGMENTS");
        }
        if flags & 0x4000 != 0 {
            out.push_str("DONT_FRAGMENT");
        }
        if flags & 0x8000 != 0 {
            out.push_str("CONGESTION");
        }
    }
    out.push('\n');

    // Later fragments carry no L4 header.
    if offset != 0 {
        return;
    }
    // VPP trusts IHL here even when it is below 5, so do we.
    if hl < ip.len() {
        let l4 = &ip[hl..];
        match proto {
            crate::IP_PROTO_TCP => tcp_block(out, l4, indent),
            crate::IP_PROTO_UDP => udp_block(out, l4, indent),
            crate::IP_PROTO_ICMP => icmp_line(out, l4, indent),
            _ => {}
        }
    }
}

/// The TCP block of [`ip4_block`].
pub fn tcp_block(out: &mut String, tcp: &[u8], indent: usize) {
    pad(out, indent);
    if tcp.len() < 20 {
        out.push_str("TCP header truncated\n");
        return;
    }
    w!(out, "TCP: {} -> {}\n", be16(tcp, 0), be16(tcp, 2));
    pad(out, indent + 2);
    w!(
        out,
        "seq. 0x{:08x} ack 0x{:08x}\n",
        be32(tcp, 4),
        be32(tcp, 8)
    );
    pad(out, indent + 2);
    w!(out, "flags 0x{:02x}", tcp[13]);
    tcp_flags_names(out, tcp[13]);
    w!(
        out,
        ", tcp header: {} bytes\n",
        usize::from(tcp[12] >> 4) * 4
    );
    pad(out, indent + 2);
    w!(
        out,
        "window {}, checksum 0x{:04x}\n",
        be16(tcp, 14),
        be16(tcp, 16)
    );
}

/// Appends ` FIN`, ` SYN`, … for each set flag, in bit order.
pub fn tcp_flags_names(out: &mut String, flags: u8) {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    for (bit, name) in NAMES.iter().enumerate() {
        if flags & (1 << bit) != 0 {
            out.push(' ');
            out.push_str(name);
        }
    }
}

/// The UDP block of [`ip4_block`].
pub fn udp_block(out: &mut String, udp: &[u8], indent: usize) {
    pad(out, indent);
    if udp.len() < 8 {
        out.push_str("UDP header truncated\n");
        return;
    }
    w!(out, "UDP: {} -> {}\n", be16(udp, 0), be16(udp, 2));
    pad(out, indent + 2);
    w!(
        out,
        "length {}, checksum 0x{:04x}\n",
        be16(udp, 4),
        be16(udp, 6)
    );
}

/// The one-line ICMP block of [`ip4_block`].
pub fn icmp_line(out: &mut String, icmp: &[u8], indent: usize) {
    pad(out, indent);
    if icmp.len() < 4 {
        out.push_str("ICMP header truncated\n");
        return;
    }
    let (t, c) = (icmp[0], icmp[1]);
    out.push_str("ICMP ");
    match icmp_type_name(t) {
        Some(n) => {
            out.push_str(n);
            if let Some(cn) = icmp_code_name(t, c) {
                out.push(' ');
                out.push_str(cn);
            }
        }
        None => w!(out, "unknown 0x{t:x}"),
    }
    w!(out, " checksum 0x{:x}\n", be16(icmp, 2));
}

/// VPP's `format_hex_bytes`: up to 32 bytes print as one bare hex run;
/// longer inputs print 32 bytes per line, each prefixed by its `%08x: `
/// offset. Each line is indented and `\n`-terminated; nothing is written for
/// an empty slice.
pub fn hex_dump_lines(out: &mut String, bytes: &[u8], indent: usize) {
    if bytes.is_empty() {
        return;
    }
    let short = bytes.len() <= 32;
    for (i, chunk) in bytes.chunks(32).enumerate() {
        pad(out, indent);
        if !short {
            w!(out, "{:08x}: ", i * 32);
        }
        for b in chunk {
            w!(out, "{b:02x}");
        }
        out.push('\n');
    }
}

/// VPP's name for an IP protocol number (`vnet/ip/protocols.def`).
pub fn ip_protocol_name(p: u8) -> Option<&'static str> {
    Some(match p {
        0 => "IP6_HOP_BY_HOP_OPTIONS",
        1 => "ICMP",
        2 => "IGMP",
        3 => "GGP",
        4 => "IP_IN_IP",
        5 => "ST",
        6 => "TCP",
        7 => "CBT",
        8 => "EGP",
        9 => "IGP",
        10 => "BBN_RCC_MON",
        11 => "NVP_II",
        12 => "PUP",
        13 => "ARGUS",
        14 => "EMCON",
        15 => "XNET",
        16 => "CHAOS",
        17 => "UDP",
        18 => "MUX",
        19 => "DCN_MEAS",
        20 => "HMP",
        21 => "PRM",
        22 => "XNS_IDP",
        23 => "TRUNK_1",
        24 => "TRUNK_2",
        25 => "LEAF_1",
        26 => "LEAF_2",
        27 => "RDP",
        28 => "IRTP",
        29 => "ISO_TP4",
        30 => "NETBLT",
        31 => "MFE_NSP",
        32 => "MERIT_INP",
        33 => "SEP",
        34 => "3PC",
        35 => "IDPR",
        36 => "XTP",
        37 => "DDP",
        38 => "IDPR_CMTP",
        39 => "TP",
        40 => "IL",
        41 => "IPV6",
        42 => "SDRP",
        43 => "IPV6_ROUTE",
        44 => "IPV6_FRAGMENTATION",
        45 => "IDRP",
        46 => "RSVP",
        47 => "GRE",
        48 => "MHRP",
        49 => "BNA",
        50 => "IPSEC_ESP",
        51 => "IPSEC_AH",
        52 => "I_NLSP",
        53 => "SWIPE",
        54 => "NARP",
        55 => "MOBILE",
        56 => "TLSP",
        57 => "SKIP",
        58 => "ICMP6",
        59 => "IP6_NONXT",
        60 => "IP6_DESTINATION_OPTIONS",
        62 => "CFTP",
        64 => "SAT_EXPAK",
        65 => "KRYPTOLAN",
        66 => "RVD",
        67 => "IPPC",
        69 => "SAT_MON",
        70 => "VISA",
        71 => "IPCV",
        72 => "CPNX",
        73 => "CPHB",
        74 => "WSN",
        75 => "PVP",
        76 => "BR_SAT_MON",
        77 => "SUN_ND",
        78 => "WB_MON",
        79 => "WB_EXPAK",
        80 => "ISO_IP",
        81 => "VMTP",
        82 => "SECURE_VMTP",
        83 => "VINES",
        84 => "TTP",
        85 => "NSFNET_IGP",
        86 => "DGP",
        87 => "TCF",
        88 => "EIGRP",
        89 => "OSPF",
        90 => "SPRITE_RPC",
        91 => "LARP",
        92 => "MTP",
        93 => "AX",
        94 => "IPIP",
        95 => "MICP",
        96 => "SCC_SP",
        97 => "ETHERIP",
        98 => "ENCAP",
        100 => "GMTP",
        101 => "IFMP",
        102 => "PNNI",
        103 => "PIM",
        104 => "ARIS",
        105 => "SCPS",
        106 => "QNX",
        107 => "A",
        108 => "IPCOMP",
        109 => "SNP",
        110 => "COMPAQ_PEER",
        111 => "IPX_IN_IP",
        112 => "VRRP",
        113 => "PGM",
        115 => "L2TP",
        116 => "DDX",
        117 => "IATP",
        118 => "STP",
        119 => "SRP",
        120 => "UTI",
        121 => "SMP",
        122 => "SM",
        123 => "PTP",
        124 => "ISIS",
        125 => "FIRE",
        126 => "CRTP",
        127 => "CRUDP",
        128 => "SSCOPMCE",
        129 => "IPLT",
        130 => "SPS",
        131 => "PIPE",
        132 => "SCTP",
        133 => "FC",
        134 => "RSVP_E2E_IGNORE",
        135 => "MOBILITY",
        136 => "UDP_LITE",
        137 => "MPLS_IN_IP",
        138 => "MANET",
        139 => "HIP",
        140 => "SHIM6",
        141 => "WESP",
        142 => "ROHC",
        253 => "EXP1",
        254 => "EXP2",
        255 => "RESERVED",
        _ => return None,
    })
}

fn write_ip_protocol(out: &mut String, p: u8) {
    match ip_protocol_name(p) {
        Some(n) => out.push_str(n),
        None => w!(out, "unknown {p}"),
    }
}

/// VPP's name for an EtherType (`vnet/ethernet/types.def`).
pub fn ethertype_name(t: u16) -> Option<&'static str> {
    Some(match t {
        // types.def lists 0x600 twice; the later registration wins.
        0x0600 => "XNS_IDP",
        0x0800 => "IP4",
        0x0806 => "ARP",
        0x0bad => "VINES_IP",
        0x0bae => "VINES_LOOPBACK",
        0x0baf => "VINES_ECHO",
        0x1984 => "TRAIN",
        0x2000 => "CDP",
        0x2001 => "CGMP",
        0x2007 => "SRP_CONTROL",
        0x2452 => "CENTRINO_PROMISC",
        0x6000 => "DECNET",
        0x6001 => "DECNET_DUMP_LOAD",
        0x6002 => "DECNET_REMOTE_CONSOLE",
        0x6003 => "DECNET_ROUTE",
        0x6004 => "DEC_LAT",
        0x6005 => "DEC_DIAGNOSTIC",
        0x6006 => "DEC_CUSTOMER",
        0x6007 => "DEC_SCA",
        0x6558 => "TRANSPARENT_BRIDGING",
        0x6559 => "RAW_FRAME_RELAY",
        0x8035 => "REVERSE_ARP",
        0x8038 => "DEC_LAN_BRIDGE",
        0x803d => "DEC_ETHERNET_ENCRYPTION",
        0x803f => "DEC_LAN_TRAFFIC_MONITOR",
        0x8041 => "DEC_LAST",
        0x809b => "APPLETALK",
        0x80d5 => "IBM_SNA",
        0x80f3 => "APPLETALK_AARP",
        0x80ff => "WELLFLEET_COMPRESSION",
        0x8100 => "VLAN",
        0x8137 => "IPX",
        0x814c => "SNMP",
        0x81fd => "CABLETRON_ISMP",
        0x81ff => "CABLETRON_ISMP_TBFLOOD",
        0x86dd => "IP6",
        0x86df => "ATOMIC",
        0x876b => "TCP_IP_COMPRESSION",
        0x876c => "IP_AUTONOMOUS_SYSTEMS",
        0x876d => "SECURE_DATA",
        0x8808 => "MAC_CONTROL",
        0x8809 => "SLOW_PROTOCOLS",
        0x880b => "PPP",
        0x8847 => "MPLS",
        0x8848 => "MPLS_UPSTREAM_ASSIGNED",
        0x8863 => "PPPOE_DISCOVERY",
        0x8864 => "PPPOE_SESSION",
        0x886d => "INTEL_ANS",
        0x886f => "MICROSOFT_NLB_HEARTBEAT",
        0x8870 => "LLC_ENCAP",
        0x8881 => "CDMA_2000",
        0x888e => "802_1X_AUTHENTICATION",
        0x8892 => "PROFINET",
        0x889a => "HYPERSCSI",
        0x88a2 => "AOE",
        0x88a8 => "DOT1AD",
        0x88ae => "BRDWALK",
        0x88b7 => "802_OUI_EXTENDED",
        0x88c7 => "802_11I_PRE_AUTHENTICATION",
        0x88cc => "802_1_LLDP",
        0x88e5 => "802_1_AE_MACSEC",
        0x88e7 => "DOT1AH",
        0x894f => "NSH",
        0x9000 => "LOOPBACK",
        0x9021 => "RTNET_MAC",
        0x9022 => "RTNET_CONFIG",
        0x9100 => "VLAN_9100",
        0x9200 => "VLAN_9200",
        0x9999 => "PGLAN",
        0xe23b => "802_1_AEDK_PRIVACY_PROTECTION",
        0xfefe => "SRP_ISIS",
        0xffff => "RESERVED",
        _ => return None,
    })
}

/// VPP's name for an ICMPv4 type (`foreach_icmp4_type`).
pub fn icmp_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0 => "echo_reply",
        3 => "destination_unreachable",
        4 => "source_quench",
        5 => "redirect",
        6 => "alternate_host_address",
        8 => "echo_request",
        9 => "router_advertisement",
        10 => "router_solicitation",
        11 => "time_exceeded",
        12 => "parameter_problem",
        13 => "timestamp_request",
        14 => "timestamp_reply",
        15 => "information_request",
        16 => "information_reply",
        17 => "address_mask_request",
        18 => "address_mask_reply",
        30 => "traceroute",
        31 => "datagram_conversion_error",
        32 => "mobile_host_redirect",
        33 => "ip6_where_are_you",
        34 => "ip6_i_am_here",
        35 => "mobile_registration_request",
        36 => "mobile_registration_reply",
        37 => "domain_name_request",
        38 => "domain_name_reply",
        39 => "skip",
        40 => "photuris",
        _ => return None,
    })
}

/// VPP's name for an ICMPv4 (type, code) pair (`foreach_icmp4_code`).
pub fn icmp_code_name(t: u8, c: u8) -> Option<&'static str> {
    Some(match (t, c) {
        (3, 0) => "destination_unreachable_net",
        (3, 1) => "destination_unreachable_host",
        (3, 2) => "protocol_unreachable",
        (3, 3) => "port_unreachable",
        (3, 4) => "fragmentation_needed_and_dont_fragment_set",
        (3, 5) => "source_route_failed",
        (3, 6) => "destination_network_unknown",
        (3, 7) => "destination_host_unknown",
        (3, 8) => "source_host_isolated",
        (3, 9) => "network_administratively_prohibited",
        (3, 10) => "host_administratively_prohibited",
        (3, 11) => "network_unreachable_for_type_of_service",
        (3, 12) => "host_unreachable_for_type_of_service",
        (3, 13) => "communication_administratively_prohibited",
        (3, 14) => "host_precedence_violation",
        (3, 15) => "precedence_cutoff_in_effect",
        (5, 0) => "network_redirect",
        (5, 1) => "host_redirect",
        (5, 2) => "type_of_service_and_network_redirect",
        (5, 3) => "type_of_service_and_host_redirect",
        (9, 0) => "normal_router_advertisement",
        (9, 16) => "does_not_route_common_traffic",
        (11, 0) => "ttl_exceeded_in_transit",
        (11, 1) => "fragment_reassembly_time_exceeded",
        (12, 0) => "pointer_indicates_error",
        (12, 1) => "missing_required_option",
        (12, 2) => "bad_length",
        _ => return None,
    })
}
