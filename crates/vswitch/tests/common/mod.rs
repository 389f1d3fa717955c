//! Shared harness for the data-plane integration tests: the standard two-interface node (host
//! link `tap0` + one pod TAP), frame builders and an independent (etherparse + RFC 1071) oracle
//! for what the data plane sends.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, Ethernet2Header, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Type, IpNumber, Ipv4Header, Ipv4Options,
};
use vecnet_graph::{Clock, VirtioNetHdr};
use vecnet_nat::{BackendSet, Proto, StaticMapping};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::memio::SentFrame;
use vecnet_vswitch::{
    Dataplane, DataplaneConfig, DataplaneOptions, InterfaceConfig, MemIo, NeighbourConfig, Path,
    RouteConfig,
};
use vecnet_wire::MacAddr;

pub const TAP0: u32 = 2;
pub const TAP2: u32 = 6;

pub const TAP0_MAC: MacAddr = MacAddr([0x01, 0x23, 0x45, 0x67, 0x89, 0x42]);
pub const TAP2_MAC: MacAddr = MacAddr([0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f]);
pub const POD_MAC: MacAddr = MacAddr([0, 0, 0, 0, 0, 2]);
/// The host side of `tap0` (`vpp1`), as in the seed's learned rewrite.
pub const HOST_MAC: MacAddr = MacAddr([0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51]);

pub const TAP0_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 1);
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 2);
pub const POD_GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);
pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 3);
/// Routed via 172.30.1.2 on `tap0` (the host's node IP in the seed).
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
/// An address in the serviceCIDR reject route.
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A Service mapping as the renderer makes one for internal and external origins alike
/// (hairpin on, `out2in_only`, no affinity).
pub fn service_mapping(
    external_ip: Ipv4Addr,
    external_port: u16,
    proto: Proto,
    set: BackendSet,
    tag: String,
) -> StaticMapping {
    StaticMapping {
        external_ip,
        external_port,
        proto,
        vrf: 0,
        internal: set.clone(),
        external: set,
        twice_nat_external: false,
        self_twice_nat: true,
        out2in_only: true,
        affinity_timeout: 0,
        affinity_group: 0,
        tag,
    }
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The standard node: `tap0` (host link, 172.30.1.1/24, dynamic ARP) and `tap2` (pod TAP with the
/// pod gateway 10.1.1.1/32), the pod 10.1.1.3 as a static neighbour, routes to the pod, to the
/// host and to 10.20.0.2 via the host, and the serviceCIDR reject route.
pub fn base_config() -> DataplaneConfig {
    let mut cfg = DataplaneConfig::default();
    let mut tap0 = InterfaceConfig::new("tap0", TAP0, InterfaceKind::Host, TAP0_MAC);
    tap0.ip4 = vec![(TAP0_IP, 24)];
    let mut tap2 = InterfaceConfig::new("tap2", TAP2, InterfaceKind::Pod, TAP2_MAC);
    tap2.ip4 = vec![(POD_GW, 32)];
    cfg.interfaces = vec![tap0, tap2];
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: TAP2,
        ip: POD_IP,
        mac: POD_MAC,
    });
    cfg.routes.push(RouteConfig::new(
        POD_IP,
        32,
        Path::Attached {
            next_hop: POD_IP,
            sw_if_index: TAP2,
        },
    ));
    cfg.routes.push(RouteConfig::new(
        HOST_IP,
        32,
        Path::Attached {
            next_hop: HOST_IP,
            sw_if_index: TAP0,
        },
    ));
    cfg.routes.push(RouteConfig::new(
        REMOTE_IP,
        32,
        Path::Attached {
            next_hop: HOST_IP,
            sw_if_index: TAP0,
        },
    ));
    cfg.routes
        .push(RouteConfig::new(ip("10.96.0.0"), 12, Path::Reject));
    cfg
}

/// [`base_config`] with the host's MAC known from the start (as if learned by ARP).
pub fn seeded_config() -> DataplaneConfig {
    let mut cfg = base_config();
    cfg.seeded_neighbours.push(NeighbourConfig {
        sw_if_index: TAP0,
        ip: HOST_IP,
        mac: HOST_MAC,
    });
    cfg
}

pub const BUFFERS: u32 = 1024;

/// A data plane on a [`MemIo`] device with a virtual clock.
pub struct Harness {
    pub dp: Dataplane,
}

impl Harness {
    pub fn new(cfg: &DataplaneConfig) -> Self {
        let opts = DataplaneOptions {
            buffers: BUFFERS,
            trace_capacity: 10_000,
            clock: Clock::virtual_at(0, 1_000),
        };
        let mut dp = Dataplane::new(opts, Box::new(MemIo::new())).unwrap();
        dp.apply(cfg).unwrap();
        Self { dp }
    }

    pub fn mem(&mut self) -> &mut MemIo {
        self.dp
            .device_mut()
            .as_any_mut()
            .downcast_mut::<MemIo>()
            .unwrap()
    }

    pub fn push(&mut self, sw_if_index: u32, frame: Vec<u8>) {
        self.push_hdr(
            sw_if_index,
            frame,
            VirtioNetHdr {
                num_buffers: 1,
                ..Default::default()
            },
        );
    }

    pub fn push_hdr(&mut self, sw_if_index: u32, frame: Vec<u8>, hdr: VirtioNetHdr) {
        self.mem().push(sw_if_index, frame, hdr);
    }

    /// Runs main loops until every queued frame was received; checks that every buffer came back
    /// to the pool and returns what was sent.
    pub fn run(&mut self) -> Vec<SentFrame> {
        let mut loops = 0;
        loop {
            self.dp.run_once();
            loops += 1;
            if self.mem().pending() == 0 {
                break;
            }
            assert!(loops < 10_000, "the data plane stopped receiving");
        }
        assert_eq!(
            self.mem().rx_no_buffer,
            0,
            "frames lost for want of buffers"
        );
        assert_eq!(
            self.dp.pool.free_count(),
            BUFFERS as usize,
            "buffers leaked"
        );
        self.mem().take_sent()
    }

    /// Pushes one frame, runs, and returns what was sent.
    pub fn send(&mut self, sw_if_index: u32, frame: Vec<u8>) -> Vec<SentFrame> {
        self.push(sw_if_index, frame);
        self.run()
    }

    /// Pushes one frame and expects exactly one reply/forwarded frame, which it returns.
    pub fn send_one(&mut self, sw_if_index: u32, frame: Vec<u8>) -> SentFrame {
        let before = self.total_drops();
        let mut sent = self.send(sw_if_index, frame);
        assert_eq!(
            sent.len(),
            1,
            "expected exactly one frame sent, got {sent:?}; drops: {:?}",
            self.drop_reasons()
        );
        assert_eq!(self.total_drops(), before, "unexpected drop");
        sent.pop().unwrap()
    }

    pub fn total_drops(&self) -> u64 {
        self.dp.graph.drop_counters().iter().sum()
    }

    /// Non-zero drop counters as (node, reason, count).
    pub fn drop_reasons(&self) -> Vec<(String, String, u64)> {
        self.dp
            .graph
            .drop_counters()
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| {
                let (n, r) = self.dp.graph.error_name(i as u32).unwrap();
                (n.to_string(), r.to_string(), c)
            })
            .collect()
    }

    /// The drop counter of (`node`, `reason`); panics if the node has no such reason, so that a
    /// misspelt reason cannot make a test pass vacuously.
    pub fn drops_of(&self, node: &str, reason: &str) -> u64 {
        let n = self
            .dp
            .graph
            .node_index(node)
            .unwrap_or_else(|| panic!("no node {node:?}"));
        let e = self
            .dp
            .graph
            .error_index(n, reason)
            .unwrap_or_else(|| panic!("node {node:?} has no error {reason:?}"));
        self.dp.graph.drop_counters()[e as usize]
    }

    /// The `show errors` count (drops + events) of (`node`, `reason`), checked to exist.
    pub fn errors_of(&self, node: &str, reason: &str) -> u64 {
        let _ = self.drops_of(node, reason);
        self.dp.graph.error_count(node, reason)
    }

    /// Sends one frame and checks it was dropped exactly once, under (`node`, `reason`), with
    /// nothing sent and every buffer back in the pool.
    pub fn expect_drop(&mut self, sw_if_index: u32, frame: Vec<u8>, node: &str, reason: &str) {
        let (total, this) = (self.total_drops(), self.drops_of(node, reason));
        let sent = self.send(sw_if_index, frame);
        assert!(sent.is_empty(), "{node}: {reason}: frame sent: {sent:?}");
        assert_eq!(
            self.drops_of(node, reason),
            this + 1,
            "not dropped as {node}: {reason}; drops: {:?}",
            self.drop_reasons()
        );
        assert_eq!(self.total_drops(), total + 1, "{:?}", self.drop_reasons());
    }

    pub fn exec(&mut self, cmd: &str) -> String {
        self.dp.exec(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Frame builders
// ---------------------------------------------------------------------------------------------

pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let h = Ethernet2Header {
        destination: dst.0,
        source: src.0,
        ether_type: ethertype.into(),
    };
    let mut f = h.to_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A frame from the pod to its gateway's MAC.
pub fn from_pod(ip_packet: &[u8]) -> Vec<u8> {
    eth(TAP2_MAC, POD_MAC, 0x0800, ip_packet)
}

/// A frame from the host to `tap0`'s MAC.
pub fn from_host(ip_packet: &[u8]) -> Vec<u8> {
    eth(TAP0_MAC, HOST_MAC, 0x0800, ip_packet)
}

/// The fields of an IPv4 packet to build; the header is serialised by etherparse.
#[derive(Debug, Clone)]
pub struct Ip4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub df: bool,
    pub id: u16,
    pub tos: u8,
    /// Raw option bytes, a multiple of 4, at most 40.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Ip4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            proto,
            df: true,
            id: 0x5eb4,
            tos: 0,
            options: Vec::new(),
            payload,
        }
    }

    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Self {
        Self::new(src, dst, 17, udp(sport, dport, data))
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn df(mut self, df: bool) -> Self {
        self.df = df;
        self
    }

    pub fn options(mut self, options: Vec<u8>) -> Self {
        self.options = options;
        self
    }

    pub fn header(&self) -> Ipv4Header {
        let mut h = Ipv4Header {
            dscp: etherparse::IpDscp::try_new(self.tos >> 2).unwrap(),
            ecn: etherparse::IpEcn::try_new(self.tos & 3).unwrap(),
            identification: self.id,
            dont_fragment: self.df,
            time_to_live: self.ttl,
            protocol: IpNumber(self.proto),
            source: self.src.octets(),
            destination: self.dst.octets(),
            options: Ipv4Options::try_from(self.options.as_slice()).unwrap(),
            ..Default::default()
        };
        h.set_payload_len(self.payload.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        h
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut v = self.header().to_bytes().to_vec();
        v.extend_from_slice(&self.payload);
        v
    }
}

/// Option bytes for an IHL of `ihl` (5..=15): a record-route option of the right size when room
/// allows, padded with NOPs, so the options are well-formed and non-trivial.
pub fn options_for_ihl(ihl: u8) -> Vec<u8> {
    let n = (ihl as usize - 5) * 4;
    let mut o = Vec::with_capacity(n);
    if n >= 8 {
        // Record route: type 7, length 3 + 4k, pointer 4, then k zeroed slots.
        let k = (n - 4) / 4;
        o.push(7);
        o.push((3 + 4 * k) as u8);
        o.push(4);
        o.extend(std::iter::repeat_n(0, 4 * k));
    }
    while o.len() < n {
        o.push(1);
    }
    o
}

pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    // No checksum (legal for UDP over IPv4); the routed path does not look at it.
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// An ICMP echo request (`request` = true) or reply with a correct checksum.
pub fn icmp_echo(request: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let echo = IcmpEchoHeader { id, seq };
    let t = if request {
        Icmpv4Type::EchoRequest(echo)
    } else {
        Icmpv4Type::EchoReply(echo)
    };
    let mut v = Icmpv4Header::with_checksum(t, data).to_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// An ICMP message of any type/code with a correct checksum.
pub fn icmp_raw(icmp_type: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = vec![icmp_type, code, 0, 0];
    v.extend_from_slice(&rest);
    v.extend_from_slice(data);
    let c = inet_checksum(&v);
    v[2..4].copy_from_slice(&c.to_be_bytes());
    v
}

/// The 28-byte ARP body for Ethernet/IPv4, serialised by etherparse.
pub fn arp(op: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Vec<u8> {
    ArpEthIpv4Packet {
        operation: ArpOperation(op),
        sender_mac: sha.0,
        sender_ipv4: spa.octets(),
        target_mac: tha.0,
        target_ipv4: tpa.octets(),
    }
    .to_bytes()
    .to_vec()
}

/// A broadcast ARP request frame from (`sha`, `spa`) for `tpa`.
pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    eth(
        MacAddr::BROADCAST,
        sha,
        0x0806,
        &arp(1, sha, spa, MacAddr::ZERO, tpa),
    )
}

// ---------------------------------------------------------------------------------------------
// Oracle
// ---------------------------------------------------------------------------------------------

/// RFC 1071 Internet checksum, written independently of `vecnet_wire`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            (c[0] as u64) << 8 | c[1] as u64
        } else {
            (c[0] as u64) << 8
        };
        sum += w;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A sent IPv4 frame, taken apart by etherparse.
#[derive(Debug, Clone)]
pub struct Sent {
    pub sw_if_index: u32,
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    pub ip: Ipv4Header,
    /// The whole IP packet (header + payload).
    pub ip_bytes: Vec<u8>,
    /// The IP payload.
    pub payload: Vec<u8>,
}

impl Sent {
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip.source)
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip.destination)
    }
}

/// Parses a sent frame as Ethernet + IPv4 and checks what every sent IPv4 frame must satisfy: the
/// frame is exactly 14 + total length bytes and the header checksum verifies.
pub fn parse_ip4(s: &SentFrame) -> Sent {
    let (eth, rest) = Ethernet2Header::from_slice(&s.frame).expect("ethernet header");
    assert_eq!(eth.ether_type.0, 0x0800, "not IPv4: {:02x?}", s.frame);
    let (h, _) = Ipv4Header::from_slice(rest).expect("IPv4 header");
    assert_eq!(
        s.frame.len(),
        14 + h.total_len as usize,
        "frame length != 14 + IP total length"
    );
    let hl = h.header_len();
    assert_eq!(
        inet_checksum(&rest[..hl]),
        0,
        "IP header checksum does not verify"
    );
    let mut zeroed = rest[..hl].to_vec();
    zeroed[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(
        h.header_checksum,
        inet_checksum(&zeroed),
        "IP header checksum differs from a full recomputation"
    );
    // etherparse drops the reserved flag bit when it re-serialises; compare only without it.
    if rest[6] & 0x80 == 0 {
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
    Sent {
        sw_if_index: s.sw_if_index,
        dst_mac: MacAddr(eth.destination),
        src_mac: MacAddr(eth.source),
        payload: rest[hl..].to_vec(),
        ip_bytes: rest.to_vec(),
        ip: h,
    }
}

/// A sent ICMP message: type, code, bytes 4..8, data; checks the ICMP checksum.
#[derive(Debug, Clone)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub data: Vec<u8>,
}

pub fn parse_icmp(s: &Sent) -> Icmp {
    assert_eq!(s.ip.protocol, IpNumber::ICMP, "not ICMP");
    let p = &s.payload;
    assert!(p.len() >= 8, "ICMP shorter than 8 bytes");
    assert_eq!(inet_checksum(p), 0, "ICMP checksum does not verify");
    let sl = etherparse::Icmpv4Slice::from_slice(p).expect("etherparse ICMP");
    Icmp {
        icmp_type: sl.type_u8(),
        code: sl.code_u8(),
        rest: sl.bytes5to8(),
        data: p[8..].to_vec(),
    }
}

/// A sent ARP frame: the Ethernet header and the Ethernet/IPv4 ARP body (etherparse).
pub fn parse_arp(s: &SentFrame) -> (Ethernet2Header, ArpEthIpv4Packet) {
    let (eth, rest) = Ethernet2Header::from_slice(&s.frame).expect("ethernet header");
    assert_eq!(eth.ether_type.0, 0x0806, "not ARP");
    let a = ArpPacket::from_slice(rest)
        .expect("ARP")
        .try_eth_ipv4()
        .expect("Ethernet/IPv4 ARP");
    (eth, a)
}

/// Checks `s` is an ICMP error of (`icmp_type`, `code`) from `src` to the sender of `original`,
/// quoting `original`'s IP header and the first 8 bytes of its payload; returns it.
pub fn check_icmp_error(s: &Sent, src: Ipv4Addr, original: &[u8], icmp_type: u8, code: u8) -> Icmp {
    let (oh, _) = Ipv4Header::from_slice(original).unwrap();
    assert_eq!(s.src(), src, "ICMP error source");
    assert_eq!(s.dst(), Ipv4Addr::from(oh.source), "ICMP error destination");
    assert!(s.ip.time_to_live > 0);
    let icmp = parse_icmp(s);
    assert_eq!((icmp.icmp_type, icmp.code), (icmp_type, code));
    let quote = (oh.header_len() + 8).min(original.len());
    assert_eq!(
        icmp.data,
        &original[..quote],
        "ICMP error must quote the original header + 8 bytes"
    );
    icmp
}
