//! NAT44 end to end through the real graph: the seed's Service flow byte for byte, hairpin,
//! reject, drop, UDP purge on endpoint change, ICMP errors from a backend, session timeouts,
//! dynamic SNAT to the Internet through the uplink's output feature (whole TCP and UDP flows from
//! every kind of inside interface, new flows in one vector, traces and `show nat44 sessions`),
//! and clients on the Internet reaching Services through the uplink, whose replies the output
//! feature leaves alone.

mod common;

use std::net::Ipv4Addr;

use common::service_mapping;
use vecnet_graph::{Clock, VirtioNetHdr};
use vecnet_nat::{Backend, BackendSet, NatConfig, Proto, StaticMapping};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::*;
use vecnet_wire::MacAddr;

const SEED_SYN: &str = "02fe163f5f0f00000000000208004500003c5eb440004006e9460a0101030a68dd55b4e60050ba5bf36d00000000a0027210d22d0000020405b40402080a3b8e0f220000000001030307";
const SEED_SYNACK: &str = "0123456789423e1b702d4d5108004500003c00004000400625a30a1400020a0101031f90b4e657f7b0c7ba5bf36ea0127120dab40000020405b40402080a3b8e0f220000000001030307";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn backend(a: &str, port: u16) -> Backend {
    Backend {
        ip: ip(a),
        port,
        weight: 1,
        vrf: 0,
    }
}

fn mapping(vip: &str, port: u16, proto: Proto, set: BackendSet) -> StaticMapping {
    service_mapping(ip(vip), port, proto, set, format!("default/svc-{port}"))
}

/// The seed's node: tap0 (sw 2, host link, NAT in+out), tap2 (sw 6, client pod 10.1.1.3, out),
/// tap3 (sw 7, pod 10.1.1.4 that backs a service: in+out).
fn seed_config() -> DataplaneConfig {
    let mut cfg = DataplaneConfig::default();
    let mut tap0 = InterfaceConfig::new(
        "tap0",
        2,
        InterfaceKind::Host,
        "01:23:45:67:89:42".parse().unwrap(),
    );
    tap0.ip4 = vec![(ip("172.30.1.1"), 24)];
    tap0.nat_inside = true;
    tap0.nat_outside = true;
    let mut tap2 = InterfaceConfig::new(
        "tap2",
        6,
        InterfaceKind::Pod,
        "02:fe:16:3f:5f:0f".parse().unwrap(),
    );
    tap2.ip4 = vec![(ip("10.1.1.1"), 32)];
    tap2.nat_outside = true;
    let mut tap3 = InterfaceConfig::new(
        "tap3",
        7,
        InterfaceKind::Pod,
        "02:fe:00:00:00:03".parse().unwrap(),
    );
    tap3.ip4 = vec![(ip("10.1.1.1"), 32)];
    tap3.nat_inside = true;
    tap3.nat_outside = true;
    cfg.interfaces = vec![tap0, tap2, tap3];
    for (sw, pod) in [(6, "10.1.1.3"), (7, "10.1.1.4")] {
        cfg.static_neighbours.push(NeighbourConfig {
            sw_if_index: sw,
            ip: ip(pod),
            mac: MacAddr([0, 0, 0, 0, 0, 2]),
        });
        cfg.routes.push(RouteConfig::new(
            ip(pod),
            32,
            Path::Attached {
                next_hop: ip(pod),
                sw_if_index: sw,
            },
        ));
    }
    cfg.seeded_neighbours.push(NeighbourConfig {
        sw_if_index: 2,
        ip: ip("172.30.1.2"),
        mac: "3e:1b:70:2d:4d:51".parse().unwrap(),
    });
    for h in ["172.30.1.2", "10.20.0.2"] {
        cfg.routes.push(RouteConfig::new(
            ip(h),
            32,
            Path::Attached {
                next_hop: ip("172.30.1.2"),
                sw_if_index: 2,
            },
        ));
    }
    cfg.routes
        .push(RouteConfig::new(ip("10.96.0.0"), 12, Path::Reject));
    cfg.routes
        .push(RouteConfig::new(ip("10.1.0.0"), 16, Path::Drop));
    cfg.nat = NatConfig {
        mappings: vec![
            mapping(
                "10.104.221.85",
                80,
                Proto::Tcp,
                BackendSet::Backends(vec![backend("10.20.0.2", 8080)]),
            ),
            // A pod that reaches its own service (hairpin).
            mapping(
                "10.96.0.20",
                80,
                Proto::Tcp,
                BackendSet::Backends(vec![backend("10.1.1.4", 8080)]),
            ),
            mapping("10.96.0.30", 53, Proto::Udp, BackendSet::Reject),
            mapping("10.96.0.40", 53, Proto::Udp, BackendSet::Drop),
            mapping(
                "10.96.0.53",
                53,
                Proto::Udp,
                BackendSet::Backends(vec![backend("10.1.1.4", 5353)]),
            ),
        ],
        twice_nat_pool: vec![ip("10.1.1.254")],
        internal_prefixes: vec![
            (ip("10.1.0.0"), 16),
            (ip("10.20.0.2"), 32),
            (ip("172.30.1.0"), 24),
        ],
        max_sessions: 1024,
        ..NatConfig::default()
    };
    cfg
}

fn dataplane(cfg: &DataplaneConfig) -> Dataplane {
    let opts = DataplaneOptions {
        buffers: 512,
        trace_capacity: 1000,
        clock: Clock::virtual_at(0, 1_000),
    };
    let mut dp = Dataplane::new(opts, Box::new(MemIo::new())).unwrap();
    dp.apply(cfg).unwrap();
    dp.trace_add("virtio-input", 100).unwrap();
    dp
}

fn send(dp: &mut Dataplane, sw: u32, frame: Vec<u8>) -> Vec<memio::SentFrame> {
    let m = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<MemIo>()
        .unwrap();
    m.push(
        sw,
        frame,
        VirtioNetHdr {
            num_buffers: 1,
            ..Default::default()
        },
    );
    dp.run_once();
    let sent = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<MemIo>()
        .unwrap()
        .take_sent();
    assert_eq!(dp.pool.free_count(), dp.pool.capacity(), "buffers returned");
    sent
}

#[test]
fn seed_flow_byte_for_byte() {
    let mut dp = dataplane(&seed_config());
    let sent = send(&mut dp, 6, hex(SEED_SYN));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sw_if_index, 2, "to tap0");
    // The seed's ip4-rewrite dump: the translated SYN as it leaves on tap0.
    assert!(tohex(&sent[0].frame).starts_with(
        "3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a140002b4e61f90ba5bf36d00000000a002721090950000020405b40402"
    ));
    let sent = send(&mut dp, 2, hex(SEED_SYNACK));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sw_if_index, 6, "back to tap2");
    assert!(tohex(&sent[0].frame).starts_with(
        "00000000000202fe163f5f0f08004500003c000040003f0648fb0a68dd550a0101030050b4e657f7b0c7ba5bf36ea01271201c4d0000020405b40402"
    ));
    let trace = dp.show_trace(10);
    assert!(trace.contains("00:00:00:000003: nat44-out2in\n  NAT44_OUT2IN: sw_if_index 6, next index 1, session index 0\n"), "{trace}");
    assert!(
        trace.contains("  NAT44_IN2OUT_FAST_PATH: sw_if_index 2, next index 3, session -1\n"),
        "{trace}"
    );
    assert!(
        trace.contains("  NAT44_IN2OUT_SLOW_PATH: sw_if_index 2, next index 0, session 0\n"),
        "{trace}"
    );
    // The node sequences of the seed (without ACLs).
    let nodes: Vec<&str> = trace
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(t, _)| t.len() == 15 && t.as_bytes()[2] == b':')
                .map(|(_, n)| n)
        })
        .collect();
    assert_eq!(
        nodes,
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "nat44-out2in",
            "ip4-lookup",
            "ip4-rewrite",
            "tap0-output",
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "nat44-in2out",
            "nat44-in2out-slowpath",
            "ip4-lookup",
            "ip4-rewrite",
            "tap2-output",
        ]
    );
    let s = dp.exec("show nat44 sessions detail").unwrap();
    assert!(s.contains("thread 0 vpp_main: 1 sessions"), "{s}");
    assert!(s.contains("i2o 10.20.0.2 proto 6 port 8080"), "{s}");
    assert!(s.contains("o2i 10.104.221.85 proto 6 port 80"), "{s}");
    assert!(s.contains("external host 10.1.1.3:46310"), "{s}");
    let m = dp.exec("show nat44 static mappings").unwrap();
    assert!(
        m.contains(" tcp vrf 0 external 10.104.221.85:80 self-twice-nat out2in-only"),
        "{m}"
    );
    assert!(
        m.contains("  local 10.20.0.2:8080 probability 100% (all clients)"),
        "{m}"
    );
    let i = dp.exec("show nat44 interfaces").unwrap();
    assert!(
        i.contains(" tap0 in out\n") && i.contains(" tap2 out\n") && i.contains(" tap3 in out\n"),
        "{i}"
    );
    assert!(dp
        .exec("show nat44 addresses")
        .unwrap()
        .contains("NAT44 twice-nat pool addresses:\n10.1.1.254"));
}

/// A TCP segment with a correct checksum, as etherparse builds it.
fn tcp_frame(
    dst_mac: [u8; 6],
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    syn: bool,
    ack: bool,
) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2([0, 0, 0, 0, 0, 2], dst_mac)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .tcp(sp, dp, 1000, 64000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, b"hello").unwrap();
    out
}

fn udp_frame(dst_mac: [u8; 6], src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([0, 0, 0, 0, 0, 2], dst_mac)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .udp(sp, dp);
    let mut out = Vec::new();
    b.write(&mut out, b"query").unwrap();
    out
}

fn parse(frame: &[u8]) -> etherparse::SlicedPacket<'_> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    // Every translated frame must carry valid checksums.
    if let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net {
        let h = v4.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IP checksum");
        match &p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                let c = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
                assert_eq!(t.checksum(), c, "TCP checksum");
            }
            Some(etherparse::TransportSlice::Udp(u)) => {
                let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(u.checksum(), c, "UDP checksum");
            }
            _ => {}
        }
    }
    p
}

fn addrs(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let p = parse(frame);
    let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net else {
        panic!("not IPv4")
    };
    let (s, d) = (v4.header().source_addr(), v4.header().destination_addr());
    let (sp, dp) = match &p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(etherparse::TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => (0, 0),
    };
    (s, sp, d, dp)
}

const TAP3_MAC: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 3];
const TAP2_MAC: [u8; 6] = [0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f];

#[test]
fn hairpin_is_source_translated_to_the_nat_loopback_and_back() {
    let mut dp = dataplane(&seed_config());
    // Pod 10.1.1.4 reaches its own service 10.96.0.20:80.
    let sent = send(
        &mut dp,
        7,
        tcp_frame(TAP3_MAC, "10.1.1.4", "10.96.0.20", 40000, 80, true, false),
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sw_if_index, 7, "back out of its own TAP");
    let (s, sp, d, dpt) = addrs(&sent[0].frame);
    assert_eq!(
        (s, d, dpt),
        (ip("10.1.1.254"), ip("10.1.1.4"), 8080),
        "source = NAT loopback"
    );
    // The pod answers the NAT loopback; the reply is reversed: VIP -> pod.
    let reply = send(
        &mut dp,
        7,
        tcp_frame(TAP3_MAC, "10.1.1.4", "10.1.1.254", 8080, sp, true, true),
    );
    assert_eq!(reply.len(), 1);
    let (s, sp2, d, dp2) = addrs(&reply[0].frame);
    assert_eq!(
        (s, sp2, d, dp2),
        (ip("10.96.0.20"), 80, ip("10.1.1.4"), 40000)
    );
}

#[test]
fn no_endpoints_rejects_and_filtered_drops() {
    let mut dp = dataplane(&seed_config());
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.30", 5000, 53),
    );
    assert_eq!(sent.len(), 1, "ICMP port unreachable");
    let p = parse(&sent[0].frame);
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 3));
    assert_eq!(
        dp.graph
            .error_count("nat44-out2in", "service has no endpoints (rejected)"),
        1
    );
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.40", 5000, 53),
    );
    assert!(sent.is_empty(), "filtered: dropped silently");
    assert_eq!(
        dp.graph.error_count(
            "nat44-out2in",
            "service has no usable endpoint (traffic policy)"
        ),
        1
    );
    // An unknown port of a service IP is not translated and meets the serviceCIDR reject route.
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.104.221.85", 5000, 9999),
    );
    assert_eq!(sent.len(), 1);
    assert!(dp
        .exec("show nat44 sessions")
        .unwrap()
        .contains(": 0 sessions"));
}

#[test]
fn udp_sessions_to_removed_endpoints_are_purged() {
    let mut cfg = seed_config();
    let mut dp = dataplane(&cfg);
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.53", 5000, 53),
    );
    assert_eq!(addrs(&sent[0].frame).2, ip("10.1.1.4"));
    let tcp = send(
        &mut dp,
        6,
        tcp_frame(
            TAP2_MAC,
            "10.1.1.3",
            "10.104.221.85",
            40001,
            80,
            true,
            false,
        ),
    );
    assert_eq!(tcp.len(), 1);
    assert!(dp
        .exec("show nat44 sessions")
        .unwrap()
        .contains(": 2 sessions"));
    // N -> M: the endpoint moves.
    cfg.nat.mappings[4].internal = BackendSet::Backends(vec![backend("10.20.0.2", 5353)]);
    cfg.nat.mappings[4].external = cfg.nat.mappings[4].internal.clone();
    dp.apply(&cfg).unwrap();
    dp.run_once();
    assert!(
        dp.exec("show nat44 sessions")
            .unwrap()
            .contains(": 1 sessions"),
        "UDP purged, TCP kept"
    );
    // The client keeps its source port and is re-balanced to the new endpoint.
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.53", 5000, 53),
    );
    assert_eq!(addrs(&sent[0].frame).2, ip("10.20.0.2"));
    // N -> 0.
    cfg.nat.mappings[4].internal = BackendSet::Reject;
    cfg.nat.mappings[4].external = BackendSet::Reject;
    dp.apply(&cfg).unwrap();
    dp.run_once();
    assert!(dp
        .exec("show nat44 sessions")
        .unwrap()
        .contains(": 1 sessions"));
}

#[test]
fn icmp_error_from_a_backend_is_translated_back_to_the_vip() {
    let mut dp = dataplane(&seed_config());
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.53", 5000, 53),
    );
    let translated = sent[0].frame.clone();
    // The backend pod 10.1.1.4 answers port unreachable quoting what it received.
    let quoted = &translated[14..14 + 28];
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let b = etherparse::PacketBuilder::ethernet2([0, 0, 0, 0, 0, 2], TAP3_MAC)
        .ipv4(ip("10.1.1.4").octets(), ip("10.1.1.3").octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ));
    let mut frame = Vec::new();
    b.write(&mut frame, quoted).unwrap();
    let out = send(&mut dp, 7, frame);
    assert_eq!(out.len(), 1);
    let f = &out[0].frame;
    assert_eq!(&f[14 + 12..14 + 16], &[10, 96, 0, 53], "outer source = VIP");
    assert_eq!(
        &f[42 + 16..42 + 20],
        &[10, 96, 0, 53],
        "quoted destination = VIP"
    );
    assert_eq!(
        &f[42 + 22..42 + 24],
        &53u16.to_be_bytes(),
        "quoted port = service port"
    );
    let sum = vecnet_wire::checksum::checksum(&f[34..]);
    assert_eq!(sum, 0, "ICMP checksum");
}

#[test]
fn sessions_expire_in_the_data_plane() {
    let mut dp = dataplane(&seed_config());
    send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "10.96.0.53", 5000, 53),
    );
    assert!(dp
        .exec("show nat44 sessions")
        .unwrap()
        .contains(": 1 sessions"));
    dp.graph.clock.set_ns(301_000_000_000);
    dp.run_once();
    assert!(
        dp.exec("show nat44 sessions")
            .unwrap()
            .contains(": 0 sessions"),
        "UDP 300 s"
    );
}

#[test]
fn twice_nat_for_external_clients_and_origin_sets() {
    let mut cfg = seed_config();
    // A NodePort-like mapping on the host address: external clients get ETP=Cluster twice-NAT.
    let mut m = mapping(
        "10.20.0.2",
        30080,
        Proto::Tcp,
        BackendSet::Backends(vec![backend("10.1.1.4", 8080)]),
    );
    m.twice_nat_external = true;
    m.self_twice_nat = true;
    cfg.nat.mappings.push(m);
    let mut dp = dataplane(&cfg);
    // From a host address of internal origin: no source translation.
    let s = send(
        &mut dp,
        2,
        tcp_frame(
            [1, 0x23, 0x45, 0x67, 0x89, 0x42],
            "172.30.1.2",
            "10.20.0.2",
            41000,
            30080,
            true,
            false,
        ),
    );
    assert_eq!(addrs(&s[0].frame).0, ip("172.30.1.2"));
    // From outside the cluster (a documentation address): source -> NAT loopback.
    let s = send(
        &mut dp,
        2,
        tcp_frame(
            [1, 0x23, 0x45, 0x67, 0x89, 0x42],
            "203.0.113.7",
            "10.20.0.2",
            41000,
            30080,
            true,
            false,
        ),
    );
    let (src, _, dst, dport) = addrs(&s[0].frame);
    assert_eq!((src, dst, dport), (ip("10.1.1.254"), ip("10.1.1.4"), 8080));
}

const UPLINK: u32 = 3;
const UPLINK_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 0x99]);
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const POD_MAC: [u8; 6] = [0, 0, 0, 0, 0, 2];
const TAP0_MAC: [u8; 6] = [0x01, 0x23, 0x45, 0x67, 0x89, 0x42];
const HOST_MAC: [u8; 6] = [0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51];
/// The node IP on the uplink: the main pool of dynamic SNAT.
const NODE_IP: &str = "192.0.2.1";
/// A server on the Internet, behind the uplink's gateway.
const SERVER: &str = "203.0.113.10";

/// The seed's node plus an uplink (sw 3, the node IP, NAT `out` + output feature, as vecnetd
/// renders it with `natExternalTraffic`) and routes to two documentation ranges through its
/// gateway; the node IP is the main pool.
fn uplink_config() -> DataplaneConfig {
    let mut cfg = seed_config();
    let mut up = InterfaceConfig::new("host-eth0", UPLINK, InterfaceKind::Uplink, UPLINK_MAC);
    up.ip4 = vec![(ip(NODE_IP), 24)];
    (up.nat_outside, up.nat_output) = (true, true);
    cfg.interfaces.push(up);
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: UPLINK,
        ip: ip("192.0.2.254"),
        mac: MacAddr(GW_MAC),
    });
    for net in ["198.51.100.0", "203.0.113.0"] {
        cfg.routes.push(RouteConfig::new(
            ip(net),
            24,
            Path::Attached {
                next_hop: ip("192.0.2.254"),
                sw_if_index: UPLINK,
            },
        ));
    }
    cfg.nat.pool = vec![ip(NODE_IP)];
    cfg
}

#[test]
fn dynamic_snat_on_the_uplink_sends_the_first_packet_and_takes_the_reply_back() {
    let mut dp = dataplane(&uplink_config());
    // The slow path that creates the session carries the packet on along the output arc.
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "198.51.100.10", 5000, 53),
    );
    assert_eq!(sent.len(), 1, "{}", dp.show_trace(10));
    assert_eq!(sent[0].sw_if_index, UPLINK);
    assert_eq!(
        addrs(&sent[0].frame),
        (ip(NODE_IP), 5000, ip("198.51.100.10"), 53)
    );
    let back = send(
        &mut dp,
        UPLINK,
        udp_frame(UPLINK_MAC.0, "198.51.100.10", NODE_IP, 53, 5000),
    );
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].sw_if_index, 6);
    assert_eq!(
        addrs(&back[0].frame),
        (ip("198.51.100.10"), 53, ip("10.1.1.3"), 5000)
    );
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// One end of a flow to the Internet: the interface it arrives on, its MAC, the MAC of that
/// interface (the source MAC of what the data plane sends it) and its address.
#[derive(Clone, Copy)]
struct Client {
    sw: u32,
    mac: [u8; 6],
    if_mac: [u8; 6],
    ip: &'static str,
}

/// A pod whose TAP is `out` only: its packets meet `nat44-out2in`.
const PLAIN_POD: Client = Client {
    sw: 6,
    mac: POD_MAC,
    if_mac: TAP2_MAC,
    ip: "10.1.1.3",
};
/// A pod that backs a Service (`in`+`out`): its packets meet `nat44-in2out` and its slow path.
const BACKEND_POD: Client = Client {
    sw: 7,
    mac: POD_MAC,
    if_mac: TAP3_MAC,
    ip: "10.1.1.4",
};
/// The host stack behind `tap0` (`in`+`out`).
const HOST: Client = Client {
    sw: 2,
    mac: HOST_MAC,
    if_mac: TAP0_MAC,
    ip: "172.30.1.2",
};

/// A TCP segment (`proto` 6) or UDP datagram (17) with correct checksums, as etherparse builds
/// it, from `macs.0` to `macs.1`; `flags` only for TCP. Built for both the frame sent and the frame expected, so that an
/// expected frame is the sent one with other MACs, addresses, ports and TTL — byte for byte.
#[allow(clippy::too_many_arguments)]
fn l4_frame(
    macs: ([u8; 6], [u8; 6]),
    (src, sport): (&str, u16),
    (dst, dport): (&str, u16),
    ttl: u8,
    proto: u8,
    flags: u8,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let ipb = etherparse::PacketBuilder::ethernet2(macs.0, macs.1).ipv4(
        ip(src).octets(),
        ip(dst).octets(),
        ttl,
    );
    let mut out = Vec::new();
    if proto == 17 {
        ipb.udp(sport, dport).write(&mut out, payload).unwrap();
        return out;
    }
    let mut b = ipb.tcp(sport, dport, seq, 64000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if flags & ACK != 0 {
        b = b.ack(7000 + seq);
    }
    b.write(&mut out, payload).unwrap();
    out
}

/// A step of a conversation: `true` = client → server, with TCP flags and payload.
type Step = (bool, u8, &'static [u8]);

/// A whole TCP connection: handshake, data both ways, FIN exchange.
const TCP_CONVERSATION: [Step; 10] = [
    (true, SYN, b""),
    (false, SYN | ACK, b""),
    (true, ACK | PSH, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
    (true, ACK | PSH, b"more data"),
    (true, ACK | PSH, b"and more"),
    (false, ACK | PSH, b"HTTP/1.1 200 OK\r\n\r\nhello"),
    (true, ACK, b""),
    (true, FIN | ACK, b""),
    (false, FIN | ACK, b""),
    (true, ACK, b""),
];

/// Queries and answers of a DNS-like UDP flow.
const UDP_CONVERSATION: [Step; 7] = [
    (true, 0, b"query A"),
    (false, 0, b"answer A"),
    (true, 0, b"query AAAA"),
    (true, 0, b"query TXT"),
    (false, 0, b"answer AAAA"),
    (false, 0, b"answer TXT"),
    (true, 0, b"query MX"),
];

/// The frame a step's packet arrives as, and the frame it must leave as when the flow's source
/// is translated to `NODE_IP:snat_port`, with the interface it leaves on.
fn step_frames(
    c: Client,
    proto: u8,
    (sport, dport): (u16, u16),
    snat_port: u16,
    (k, &(outbound, flags, payload)): (usize, &Step),
) -> ((u32, Vec<u8>), (u32, Vec<u8>)) {
    let seq = 1000 + 100 * k as u32;
    let f = |macs, src, dst, ttl| l4_frame(macs, src, dst, ttl, proto, flags, seq, payload);
    if outbound {
        (
            (
                c.sw,
                f((c.mac, c.if_mac), (c.ip, sport), (SERVER, dport), 64),
            ),
            (
                UPLINK,
                f(
                    (UPLINK_MAC.0, GW_MAC),
                    (NODE_IP, snat_port),
                    (SERVER, dport),
                    63,
                ),
            ),
        )
    } else {
        (
            (
                UPLINK,
                f(
                    (GW_MAC, UPLINK_MAC.0),
                    (SERVER, dport),
                    (NODE_IP, snat_port),
                    64,
                ),
            ),
            (
                c.sw,
                f((c.if_mac, c.mac), (SERVER, dport), (c.ip, sport), 63),
            ),
        )
    }
}

/// Runs a conversation of `c` with `SERVER:dport`, one packet per main loop; every packet must
/// leave byte for byte as translated to the same `NODE_IP:port` (kept, as the client's port is
/// ≥ 1024 and free). Returns that port.
fn converse(dp: &mut Dataplane, c: Client, proto: u8, ports: (u16, u16), steps: &[Step]) -> u16 {
    let snat_port = ports.0;
    for step in steps.iter().enumerate() {
        let ((rx, frame), (tx, want)) = step_frames(c, proto, ports, snat_port, step);
        let sent = send(dp, rx, frame);
        assert_eq!(
            sent.len(),
            1,
            "step {} ({}) of {} from {}: drops {:?}\n{}",
            step.0,
            if step.1 .0 { "out" } else { "back" },
            proto,
            c.ip,
            dp.graph.errors(),
            dp.show_trace(100)
        );
        assert_eq!(sent[0].sw_if_index, tx, "step {}", step.0);
        parse(&sent[0].frame);
        assert_eq!(
            tohex(&sent[0].frame),
            tohex(&want),
            "step {} from {}",
            step.0,
            c.ip
        );
    }
    snat_port
}

/// No packet was dropped and no NAT node complained.
fn assert_no_drops(dp: &Dataplane) {
    let drops: u64 = dp.graph.drop_counters().iter().sum();
    assert_eq!(drops, 0, "{:?}", dp.graph.errors());
    for node in ["nat44-in2out-output", "nat44-in2out-output-slowpath"] {
        for reason in ["out of ports", "maximum sessions exceeded"] {
            assert_eq!(dp.graph.error_count(node, reason), 0, "{node}: {reason}");
        }
    }
}

/// One dynamic session of `user` with `packets` packets of both directions.
fn assert_one_dynamic_session(dp: &mut Dataplane, user: &str, packets: usize) {
    let s = dp.exec("show nat44 sessions detail").unwrap();
    assert!(s.contains("thread 0 vpp_main: 1 sessions\n"), "{s}");
    assert!(
        s.contains(&format!(
            "  {user}: 1 dynamic translations, 0 static translations\n"
        )),
        "{s}"
    );
    assert!(s.contains("dynamic translation"), "{s}");
    assert!(
        s.contains(&format!("total pkts {packets}, total bytes")),
        "{s}"
    );
    assert_eq!(dp.worker.nat.sessions.counters.created, 1, "{s}");
}

#[test]
fn dynamic_snat_translates_every_packet_of_tcp_and_udp_flows_once_on_the_uplink() {
    for c in [PLAIN_POD, BACKEND_POD, HOST] {
        for (proto, steps, dport) in [
            (6, &TCP_CONVERSATION[..], 443),
            (17, &UDP_CONVERSATION[..], 53),
        ] {
            let mut dp = dataplane(&uplink_config());
            converse(&mut dp, c, proto, (41000, dport), steps);
            assert_no_drops(&dp);
            assert_one_dynamic_session(&mut dp, c.ip, steps.len());
        }
    }
}

/// Pushes every frame, then runs one main loop: the frames are received as one vector (checked
/// by the caller with the nodes' call counts). Returns what was sent.
fn send_vector(dp: &mut Dataplane, frames: Vec<(u32, Vec<u8>)>) -> Vec<memio::SentFrame> {
    let m = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<MemIo>()
        .unwrap();
    for (sw, f) in frames {
        m.push(
            sw,
            f,
            VirtioNetHdr {
                num_buffers: 1,
                ..Default::default()
            },
        );
    }
    dp.run_once();
    let m = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<MemIo>()
        .unwrap();
    assert_eq!(m.pending(), 0, "not one vector");
    let sent = m.take_sent();
    assert_eq!(dp.pool.free_count(), dp.pool.capacity(), "buffers returned");
    sent
}

/// (calls, vectors) of `node` since the last `clear runtime`.
fn runtime(dp: &Dataplane, node: &str) -> (u64, u64) {
    let s = dp.graph.stats(dp.graph.node_index(node).unwrap());
    (s.calls, s.vectors)
}

#[test]
fn packets_of_a_new_dynamic_snat_flow_in_one_vector_make_one_session() {
    for c in [PLAIN_POD, BACKEND_POD] {
        for (proto, steps, dport) in [
            (6, &TCP_CONVERSATION[..], 443),
            (17, &UDP_CONVERSATION[..], 53),
        ] {
            let mut dp = dataplane(&uplink_config());
            let ports = (41000, dport);
            let frames = |range: std::ops::Range<usize>| {
                let (sent, want): (Vec<_>, Vec<_>) = steps[range.clone()]
                    .iter()
                    .enumerate()
                    .map(|(k, s)| step_frames(c, proto, ports, ports.0, (range.start + k, s)))
                    .unzip();
                (sent, want)
            };
            // The first vector: the flow's first packets, before any session exists, and the
            // same packets again (retransmissions, or an application that does not wait).
            let outbound: Vec<usize> = (0..steps.len()).filter(|&k| steps[k].0).collect();
            let (mut first, mut want) = frames(outbound[0]..outbound[0] + 1);
            for &k in &outbound[1..3] {
                let (s, w) = frames(k..k + 1);
                first.extend(s);
                want.extend(w);
            }
            let (again, again_want) = (first.clone(), want.clone());
            first.extend(again);
            want.extend(again_want);
            dp.exec("clear runtime").unwrap();
            let sent = send_vector(&mut dp, first.clone());
            assert_eq!(runtime(&dp, "nat44-in2out-output"), (1, first.len() as u64));
            assert_eq!(
                runtime(&dp, "nat44-in2out-output-slowpath"),
                (1, first.len() as u64),
                "all new: every packet meets the slow path"
            );
            let got: Vec<(u32, String)> = sent
                .iter()
                .map(|f| (f.sw_if_index, tohex(&f.frame)))
                .collect();
            let want: Vec<(u32, String)> =
                want.into_iter().map(|(sw, f)| (sw, tohex(&f))).collect();
            assert_eq!(got, want, "{} from {}\n{}", proto, c.ip, dp.show_trace(100));
            assert_one_dynamic_session(&mut dp, c.ip, first.len());
            // The whole conversation in one vector: replies and the client's next packets,
            // found by the output feature and out2in, not translated twice.
            let (all, want) = frames(0..steps.len());
            dp.exec("clear runtime").unwrap();
            let sent = send_vector(&mut dp, all.clone());
            assert_eq!(
                runtime(&dp, "nat44-in2out-output"),
                (1, outbound.len() as u64)
            );
            assert_eq!(runtime(&dp, "nat44-in2out-output-slowpath"), (0, 0));
            let mut got: Vec<(u32, String)> = sent
                .iter()
                .map(|f| (f.sw_if_index, tohex(&f.frame)))
                .collect();
            let mut want: Vec<(u32, String)> =
                want.into_iter().map(|(sw, f)| (sw, tohex(&f))).collect();
            // Within each direction the order is kept; the interleaving of the two is the
            // graph's.
            got.sort_by_key(|x| x.0);
            want.sort_by_key(|x| x.0);
            assert_eq!(got, want, "{} from {}\n{}", proto, c.ip, dp.show_trace(100));
            assert_no_drops(&dp);
            assert_one_dynamic_session(&mut dp, c.ip, first.len() + all.len());
        }
    }
}

#[test]
fn two_clients_with_the_same_port_in_one_vector_get_two_ports() {
    let mut dp = dataplane(&uplink_config());
    let ports = (41000, 53);
    // Each client's query names it, so that the translated queries (same source address, same
    // destination) can be told apart.
    let clients = [(PLAIN_POD, b"query 1" as &[u8]), (BACKEND_POD, b"query 2")];
    let query =
        |(c, q): (Client, &'static [u8])| step_frames(c, 17, ports, 0, (0, &(true, 0, q))).0;
    let frames: Vec<(u32, Vec<u8>)> = [0, 1, 0, 1].map(|k| query(clients[k])).to_vec();
    let sent = send_vector(&mut dp, frames);
    assert_eq!(sent.len(), 4, "{:?}", dp.graph.errors());
    assert!(sent.iter().all(|f| f.sw_if_index == UPLINK));
    let port_of = |q: &[u8]| -> Vec<u16> {
        sent.iter()
            .filter(|f| f.frame.ends_with(q))
            .map(|f| addrs(&f.frame).1)
            .collect()
    };
    let (p1, p2) = (port_of(b"query 1"), port_of(b"query 2"));
    assert_eq!(p1, [41000, 41000], "the first client keeps its port");
    assert_eq!(p2.len(), 2);
    assert_eq!(p2[0], p2[1], "the second client keeps the port it got");
    assert_ne!(p2[0], 41000, "the second client gets another port");
    assert!(dp
        .exec("show nat44 sessions")
        .unwrap()
        .contains("thread 0 vpp_main: 2 sessions"));
    // Each answer finds its client.
    let answer: Step = (false, 0, b"answer");
    for (c, port) in [(PLAIN_POD, p1[0]), (BACKEND_POD, p2[0])] {
        let ((rx, f), (tx, want)) = step_frames(c, 17, ports, port, (0, &answer));
        let back = send(&mut dp, rx, f);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].sw_if_index, tohex(&back[0].frame)),
            (tx, tohex(&want))
        );
    }
    assert_no_drops(&dp);
}

/// The records of packet `n` (1-based) of `show trace`.
fn packet_trace(trace: &str, n: usize) -> &str {
    let start = trace
        .find(&format!("Packet {n}\n"))
        .unwrap_or_else(|| panic!("no packet {n}:\n{trace}"));
    let rest = &trace[start..];
    let end = rest[1..].find("\nPacket ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

/// The nodes packet `n` went through.
fn packet_nodes(trace: &str, n: usize) -> Vec<&str> {
    packet_trace(trace, n)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(t, _)| t.len() == 15 && t.as_bytes()[2] == b':')
                .map(|(_, n)| n)
        })
        .collect()
}

#[test]
fn dynamic_snat_traces_and_shows_as_vpp() {
    let output = |dp: &Dataplane| {
        let g = &dp.graph;
        let from = g.node_index("nat44-in2out-output").unwrap();
        let to = g.node_index("host-eth0-output").unwrap();
        let fast = g.arc(from, to).expect("fast path -> host-eth0-output");
        let from = g.node_index("nat44-in2out-output-slowpath").unwrap();
        let slow = g.arc(from, to).expect("slow path -> host-eth0-output");
        (fast, slow)
    };
    // A pod that backs no Service: `nat44-out2in` on its TAP, then SYSTEM.md 5.7 (flow 5).
    let mut dp = dataplane(&uplink_config());
    converse(&mut dp, PLAIN_POD, 6, (41000, 443), &TCP_CONVERSATION[..3]);
    let (fast, slow) = output(&dp);
    let trace = dp.show_trace(10);
    let request = [
        "virtio-input",
        "ethernet-input",
        "ip4-input",
        "nat44-out2in",
        "ip4-lookup",
        "ip4-rewrite",
        "nat44-in2out-output",
        "nat44-in2out-output-slowpath",
        "host-eth0-output",
    ];
    assert_eq!(packet_nodes(&trace, 1), request, "{trace}");
    let first = packet_trace(&trace, 1);
    for record in [
        "  NAT44_OUT2IN: sw_if_index 6, next index 1, session index -1\n".to_string(),
        "  NAT44_IN2OUT_FAST_PATH: sw_if_index 6, next index 3, session -1\n".to_string(),
        format!("  NAT44_IN2OUT_SLOW_PATH: sw_if_index 6, next index {slow}, session 0\n"),
    ] {
        assert!(first.contains(&record), "{record}{first}");
    }
    let reply = packet_trace(&trace, 2);
    assert_eq!(
        packet_nodes(&trace, 2),
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "nat44-out2in",
            "ip4-lookup",
            "ip4-rewrite",
            "tap2-output"
        ]
    );
    assert!(
        reply.contains("  NAT44_OUT2IN: sw_if_index 3, next index 1, session index 0\n"),
        "{reply}"
    );
    // The next packet: passed by out2in, found by the output feature's fast path.
    let next = packet_trace(&trace, 3);
    let mut nodes = request.to_vec();
    nodes.retain(|n| *n != "nat44-in2out-output-slowpath");
    assert_eq!(packet_nodes(&trace, 3), nodes, "{next}");
    for record in [
        "  NAT44_OUT2IN: sw_if_index 6, next index 1, session index -1\n".to_string(),
        format!("  NAT44_IN2OUT_FAST_PATH: sw_if_index 6, next index {fast}, session 0\n"),
    ] {
        assert!(next.contains(&record), "{record}{next}");
    }
    let show = dp.exec("show nat44 sessions detail").unwrap();
    let heard = show
        .lines()
        .find(|l| l.contains("last heard"))
        .unwrap_or_default();
    assert_eq!(
        show,
        format!(
            "NAT44 sessions:
  thread 0 vpp_main: 1 sessions
  10.1.1.3: 1 dynamic translations, 0 static translations
    i2o 10.1.1.3 proto 6 port 41000 fib 0
    o2i 192.0.2.1 proto 6 port 41000 fib 0
       external host 203.0.113.10:443
{heard}
       total pkts 3, total bytes 153
       dynamic translation tcp established, timeout 7440 s, session index 0
"
        )
    );

    // A pod that backs a Service (`in`+`out`): `nat44-in2out` and its slow path, both `-1`, for
    // every packet of the flow, as for anything else not addressed to a VIP (SYSTEM.md 5.2).
    let mut dp = dataplane(&uplink_config());
    converse(
        &mut dp,
        BACKEND_POD,
        6,
        (41000, 443),
        &TCP_CONVERSATION[..3],
    );
    let (fast, slow) = output(&dp);
    let trace = dp.show_trace(10);
    for (n, output) in [
        (
            1,
            format!("  NAT44_IN2OUT_SLOW_PATH: sw_if_index 7, next index {slow}, session 0\n"),
        ),
        (
            3,
            format!("  NAT44_IN2OUT_FAST_PATH: sw_if_index 7, next index {fast}, session 0\n"),
        ),
    ] {
        let t = packet_trace(&trace, n);
        for record in [
            "  NAT44_IN2OUT_FAST_PATH: sw_if_index 7, next index 3, session -1\n",
            "  NAT44_IN2OUT_SLOW_PATH: sw_if_index 7, next index 0, session -1\n",
            &output,
        ] {
            assert!(t.contains(record), "packet {n}: {record}{t}");
        }
    }
    let show = dp.exec("show nat44 sessions detail").unwrap();
    assert!(
        show.contains("  10.1.1.4: 1 dynamic translations, 0 static translations\n    i2o 10.1.1.4 proto 6 port 41000 fib 0\n    o2i 192.0.2.1 proto 6 port 41000 fib 0\n       external host 203.0.113.10:443\n"),
        "{show}"
    );
}

/// A client on the Internet, behind the uplink's gateway: what it sends arrives on the uplink
/// from the gateway's MAC, what the data plane sends it leaves on the uplink to that MAC.
const INTERNET: Client = Client {
    sw: UPLINK,
    mac: GW_MAC,
    if_mac: UPLINK_MAC.0,
    ip: "198.51.100.7",
};
/// The client's port.
const CLIENT_PORT: u16 = 52904;
/// The host stack behind `tap0` as a Service backend (the seed's host-network endpoint).
const HOST_BACKEND: Client = Client {
    sw: 2,
    mac: HOST_MAC,
    if_mac: TAP0_MAC,
    ip: "10.20.0.2",
};

/// One flow through the data plane, as each end sees it: the end that opens it (`client`,
/// sending from `c.0` to `c.1`) and the end it reaches (`server`, receiving from `s.0` at
/// `s.1`). Where the two differ, NAT translated.
#[derive(Clone, Copy)]
struct Flow {
    client: Client,
    c: ((&'static str, u16), (&'static str, u16)),
    server: Client,
    s: ((&'static str, u16), (&'static str, u16)),
}

/// The frame a step's packet arrives as, and the interface and frame it must leave as: a
/// client's packet arrives on the client's interface with TTL 64 and leaves translated towards
/// the server with TTL 63, a reply the other way round.
fn flow_frames(
    f: &Flow,
    proto: u8,
    (k, &(outbound, flags, payload)): (usize, &Step),
) -> ((u32, Vec<u8>), (u32, Vec<u8>)) {
    let seq = 1000 + 100 * k as u32;
    let l4 = |macs, src, dst, ttl| l4_frame(macs, src, dst, ttl, proto, flags, seq, payload);
    let (c, s) = (f.client, f.server);
    if outbound {
        (
            (c.sw, l4((c.mac, c.if_mac), f.c.0, f.c.1, 64)),
            (s.sw, l4((s.if_mac, s.mac), f.s.0, f.s.1, 63)),
        )
    } else {
        (
            (s.sw, l4((s.mac, s.if_mac), f.s.1, f.s.0, 64)),
            (c.sw, l4((c.if_mac, c.mac), f.c.1, f.c.0, 63)),
        )
    }
}

/// Sends step `k` of flow `f` alone and checks that it leaves byte for byte as it must.
fn flow_step(dp: &mut Dataplane, f: &Flow, proto: u8, step: (usize, &Step)) {
    let ((rx, frame), (tx, want)) = flow_frames(f, proto, step);
    let sent = send(dp, rx, frame);
    assert_eq!(
        sent.len(),
        1,
        "step {} ({}) of {} from {}: drops {:?}\n{}",
        step.0,
        if step.1 .0 { "out" } else { "back" },
        proto,
        f.client.ip,
        dp.graph.errors(),
        dp.show_trace(100)
    );
    parse(&sent[0].frame);
    assert_eq!(
        (sent[0].sw_if_index, tohex(&sent[0].frame)),
        (tx, tohex(&want)),
        "step {} ({}) of {} from {}\n{}",
        step.0,
        if step.1 .0 { "out" } else { "back" },
        proto,
        f.client.ip,
        dp.show_trace(100)
    );
}

/// A Service address reached from outside the cluster: a NodePort on the node IP, an external
/// IP or a LoadBalancer IP (SYSTEM.md 6.1) with one backend, rendered as the agent renders it
/// (6.2, 6.6): ETP=Cluster twice-NATs external clients to the NAT loopback, ETP=Local keeps
/// their address.
#[derive(Clone, Copy)]
struct External {
    what: &'static str,
    addr: (&'static str, u16),
    backend: Client,
    backend_port: u16,
    etp_local: bool,
}

impl External {
    fn config(&self, proto: Proto) -> DataplaneConfig {
        let mut cfg = uplink_config();
        let mut m = mapping(
            self.addr.0,
            self.addr.1,
            proto,
            BackendSet::Backends(vec![backend(self.backend.ip, self.backend_port)]),
        );
        m.twice_nat_external = !self.etp_local;
        cfg.nat.mappings.push(m);
        cfg
    }

    /// The flow of the Internet client with the Service: with twice-NAT, the backend sees the
    /// NAT loopback and the client's port (kept: ≥ 1024 and free).
    fn flow(&self) -> Flow {
        let seen = if self.etp_local {
            (INTERNET.ip, CLIENT_PORT)
        } else {
            ("10.1.1.254", CLIENT_PORT)
        };
        Flow {
            client: INTERNET,
            c: ((INTERNET.ip, CLIENT_PORT), self.addr),
            server: self.backend,
            s: (seen, (self.backend.ip, self.backend_port)),
        }
    }
}

/// Every kind of address a client outside the cluster reaches a Service by, with ETP=Cluster
/// and ETP=Local, and a backend pod or the host stack (whose reply enters through `tap0`).
fn external_services() -> Vec<External> {
    let mut v = Vec::new();
    for etp_local in [false, true] {
        for (what, addr) in [
            ("external IP", ("192.0.2.50", 80)),
            ("LoadBalancer IP", ("192.0.2.60", 80)),
            ("NodePort", (NODE_IP, 30080)),
        ] {
            v.push(External {
                what,
                addr,
                backend: BACKEND_POD,
                backend_port: 8080,
                etp_local,
            });
        }
        v.push(External {
            what: "external IP, host-network backend",
            addr: ("192.0.2.50", 80),
            backend: HOST_BACKEND,
            backend_port: 8080,
            etp_local,
        });
    }
    v
}

/// The load-balanced session of the Service flow is the only session: the replies made none
/// (neither dynamic nor identity) on their way out of the uplink.
fn assert_only_the_service_session(dp: &mut Dataplane, what: &str) {
    let s = dp.exec("show nat44 sessions detail").unwrap();
    assert!(
        s.contains("thread 0 vpp_main: 1 sessions\n") && !s.contains("dynamic translation "),
        "{what}: {s}"
    );
    assert_eq!(dp.worker.nat.sessions.counters.created, 1, "{what}: {s}");
}

#[test]
fn replies_to_internet_clients_of_services_leave_the_uplink_from_the_service_address() {
    for svc in external_services() {
        for (proto, steps) in [(6, &TCP_CONVERSATION[..]), (17, &UDP_CONVERSATION[..])] {
            let p = if proto == 6 { Proto::Tcp } else { Proto::Udp };
            let mut dp = dataplane(&svc.config(p));
            let what = format!(
                "{} {}:{} (ETP={}) → {}, proto {proto}",
                svc.what,
                svc.addr.0,
                svc.addr.1,
                if svc.etp_local { "Local" } else { "Cluster" },
                svc.backend.ip
            );
            let flow = svc.flow();
            for step in steps.iter().enumerate() {
                flow_step(&mut dp, &flow, proto, step);
            }
            assert_no_drops(&dp);
            assert_only_the_service_session(&mut dp, &what);
        }
    }
}

/// The (node, record line) pairs of packet `n` (1-based) of `show trace` for the NAT nodes.
fn nat_records(trace: &str, n: usize) -> Vec<(String, String)> {
    let lines: Vec<&str> = packet_trace(trace, n).lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let (_, node) = w[0].split_once(": ")?;
            node.starts_with("nat44-")
                .then(|| (node.to_string(), w[1].to_string()))
        })
        .collect()
}

#[test]
fn service_replies_through_the_uplink_trace_as_vpp() {
    let svc = External {
        what: "external IP",
        addr: ("192.0.2.50", 80),
        backend: BACKEND_POD,
        backend_port: 8080,
        etp_local: false,
    };
    let mut dp = dataplane(&svc.config(Proto::Tcp));
    let flow = svc.flow();
    for step in TCP_CONVERSATION[..3].iter().enumerate() {
        flow_step(&mut dp, &flow, 6, step);
    }
    let g = &dp.graph;
    let from = g.node_index("nat44-in2out-output-slowpath").unwrap();
    let to = g.node_index("host-eth0-output").unwrap();
    let slow = g.arc(from, to).expect("slow path -> host-eth0-output");
    let trace = dp.show_trace(10);
    // The SYN: DNAT (and twice-NAT) by nat44-out2in on the uplink.
    assert_eq!(
        packet_nodes(&trace, 1),
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "nat44-out2in",
            "ip4-lookup",
            "ip4-rewrite",
            "tap3-output"
        ],
        "{trace}"
    );
    // The SYN-ACK from the backend's TAP (`in`+`out`): reversed by nat44-in2out's slow path
    // (the seed's pair), then through the uplink's output feature untranslated: its fast path
    // finds no session for it (`session -1`, on to the slow path, next index 3), the slow path
    // passes it without making one (`session -1`), as VPP's nat_not_translate_output_feature.
    // The output feature prints the receive interface (era A).
    assert_eq!(
        packet_nodes(&trace, 2),
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "nat44-in2out",
            "nat44-in2out-slowpath",
            "ip4-lookup",
            "ip4-rewrite",
            "nat44-in2out-output",
            "nat44-in2out-output-slowpath",
            "host-eth0-output"
        ],
        "{trace}"
    );
    let rec = |node: &str, text: &str| (node.to_string(), text.to_string());
    assert_eq!(
        nat_records(&trace, 2),
        [
            rec(
                "nat44-in2out",
                "  NAT44_IN2OUT_FAST_PATH: sw_if_index 7, next index 3, session -1"
            ),
            rec(
                "nat44-in2out-slowpath",
                "  NAT44_IN2OUT_SLOW_PATH: sw_if_index 7, next index 0, session 0"
            ),
            rec(
                "nat44-in2out-output",
                "  NAT44_IN2OUT_FAST_PATH: sw_if_index 7, next index 3, session -1"
            ),
            rec(
                "nat44-in2out-output-slowpath",
                &format!("  NAT44_IN2OUT_SLOW_PATH: sw_if_index 7, next index {slow}, session -1")
            ),
        ],
        "{trace}"
    );
    assert_eq!(
        nat_records(&trace, 3),
        [rec(
            "nat44-out2in",
            "  NAT44_OUT2IN: sw_if_index 3, next index 1, session index 0"
        )],
        "{trace}"
    );
    assert_only_the_service_session(&mut dp, "trace");
    // Nothing was translated by the output feature: its counter stays at zero.
    for node in ["nat44-in2out-output", "nat44-in2out-output-slowpath"] {
        assert_eq!(
            dp.graph.error_count(node, "good in2out packets processed"),
            0,
            "{node}"
        );
    }
}

#[test]
fn an_internet_host_reaching_a_service_and_a_pod_reaching_that_host_stay_two_flows() {
    for etp_local in [true, false] {
        for (what, addr) in [
            ("external IP", ("192.0.2.50", 80)),
            ("NodePort", (NODE_IP, 30080)),
        ] {
            let svc = External {
                what,
                addr,
                backend: BACKEND_POD,
                backend_port: 8080,
                etp_local,
            };
            let mut dp = dataplane(&svc.config(Proto::Tcp));
            let service = svc.flow();
            // The Service's backend pod opens a connection to the very address and port of the
            // Internet client: dynamic SNAT to the node IP, port kept.
            let pod = Flow {
                client: BACKEND_POD,
                c: ((BACKEND_POD.ip, 41000), (INTERNET.ip, CLIENT_PORT)),
                server: INTERNET,
                s: ((NODE_IP, 41000), (INTERNET.ip, CLIENT_PORT)),
            };
            // Both conversations interleaved, packet by packet, each started by the other side.
            let first = if etp_local { &service } else { &pod };
            let second = if etp_local { &pod } else { &service };
            for step in TCP_CONVERSATION.iter().enumerate() {
                for f in [first, second] {
                    flow_step(&mut dp, f, 6, step);
                }
            }
            assert_no_drops(&dp);
            let s = dp.exec("show nat44 sessions detail").unwrap();
            assert!(s.contains("thread 0 vpp_main: 2 sessions\n"), "{what}: {s}");
            // Users are the flows' sources as they arrived: the pod, and the Internet client.
            for user in [
                "  10.1.1.4: 1 dynamic translations, 0 static translations\n",
                "  198.51.100.7: 0 dynamic translations, 1 static translations\n",
            ] {
                assert!(s.contains(user), "{what}: {user}{s}");
            }
            // Every packet of each flow counted on its own session, once.
            assert_eq!(
                s.matches(&format!("total pkts {}, ", TCP_CONVERSATION.len()))
                    .count(),
                2,
                "{what}: {s}"
            );
            assert_eq!(dp.worker.nat.sessions.counters.created, 2, "{what}: {s}");
        }
    }
}
