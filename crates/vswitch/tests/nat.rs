//! NAT44 end to end through the real graph: the seed's Service flow byte for byte, hairpin,
//! reject, drop, UDP purge on endpoint change, ICMP errors from a backend, session timeouts.

use std::net::Ipv4Addr;

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
    StaticMapping {
        external_ip: ip(vip),
        external_port: port,
        proto,
        vrf: 0,
        internal: set.clone(),
        external: set,
        twice_nat_external: false,
        self_twice_nat: true,
        out2in_only: true,
        affinity_timeout: 0,
        affinity_group: 0,
        tag: format!("default/svc-{port}"),
    }
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

#[test]
fn dynamic_snat_on_the_uplink_sends_the_first_packet_and_takes_the_reply_back() {
    let mut cfg = seed_config();
    let uplink_mac = MacAddr([0x02, 0xfe, 0, 0, 0, 0x99]);
    let mut up = InterfaceConfig::new("host-eth0", 3, InterfaceKind::Uplink, uplink_mac);
    up.ip4 = vec![(ip("192.0.2.1"), 24)];
    (up.nat_outside, up.nat_output) = (true, true);
    cfg.interfaces.push(up);
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: 3,
        ip: ip("192.0.2.254"),
        mac: MacAddr([0x02, 0, 0, 0, 0, 0xfe]),
    });
    cfg.routes.push(RouteConfig::new(
        ip("198.51.100.0"),
        24,
        Path::Attached {
            next_hop: ip("192.0.2.254"),
            sw_if_index: 3,
        },
    ));
    cfg.nat.pool = vec![ip("192.0.2.1")];
    let mut dp = dataplane(&cfg);
    // The slow path that creates the session carries the packet on along the output arc.
    let sent = send(
        &mut dp,
        6,
        udp_frame(TAP2_MAC, "10.1.1.3", "198.51.100.10", 5000, 53),
    );
    assert_eq!(sent.len(), 1, "{}", dp.show_trace(10));
    assert_eq!(sent[0].sw_if_index, 3);
    assert_eq!(
        addrs(&sent[0].frame),
        (ip("192.0.2.1"), 5000, ip("198.51.100.10"), 53)
    );
    let back = send(
        &mut dp,
        3,
        udp_frame(uplink_mac.0, "198.51.100.10", "192.0.2.1", 53, 5000),
    );
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].sw_if_index, 6);
    assert_eq!(
        addrs(&back[0].frame),
        (ip("198.51.100.10"), 53, ip("10.1.1.3"), 5000)
    );
}
