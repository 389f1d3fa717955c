//! Sessions across a restart, end to end: flows start in one data plane, its NAT44 and ACL
//! sessions go through the session file into a new data plane with the same configuration, and
//! the flows' next packets leave the new data plane byte for byte as they leave the old one —
//! same Service backend, same hairpin twice-NAT source, same dynamic SNAT port, replies let in
//! by the reflective ACL.

mod common;

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use vecnet_acl::{Acl, AclBinding, AclRule, Action};
use vecnet_nat::{Backend, BackendSet, NatConfig, Proto, StaticMapping};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::memio::SentFrame;
use vecnet_vswitch::{
    DataplaneConfig, InterfaceConfig, NeighbourConfig, Path, RestoreReport, RouteConfig,
    SavedSessions, SessionFileError,
};
use vecnet_wire::MacAddr;

const SEC: u64 = 1_000_000_000;
const ACL_OUT: &str = "acl-plugin-out-ip4-fa";
const DENY: &str = "ACL deny packets";

const TAP3: u32 = 7;
const TAP3_MAC: MacAddr = MacAddr([0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x10]);
const POD2_MAC: MacAddr = MacAddr([0, 0, 0, 0, 0, 3]);
/// A pod that backs the hairpin Service and is its own client.
const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 4);

const UPLINK: u32 = 3;
const UPLINK_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 0x99]);
const GW_MAC: MacAddr = MacAddr([0x02, 0x00, 0, 0, 0, 0xfe]);
/// The node IP on the uplink: the dynamic SNAT pool.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Somewhere on the Internet, behind the uplink.
const DNS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

/// A Service with two endpoints in the host stack.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 104, 221, 85);
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 20, 0, 2), Ipv4Addr::new(10, 20, 0, 3)];
/// A Service whose only endpoint is POD2 (hairpin when POD2 calls it).
const HAIRPIN_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const NAT_LOOPBACK: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 254);

fn mapping(vip: Ipv4Addr, backends: &[Ipv4Addr]) -> StaticMapping {
    let set = BackendSet::Backends(
        backends
            .iter()
            .map(|&ip| Backend {
                ip,
                port: 8080,
                weight: 1,
                vrf: 0,
            })
            .collect(),
    );
    service_mapping(vip, 80, Proto::Tcp, set, format!("default/svc-{vip}"))
}

/// The standard node plus a second pod on `tap3` and an uplink; NAT roles as vecnetd renders
/// them; the pod on `tap2` behind a reflective ACL whose local table on output admits only the
/// host and TCP to port 80, so replies pass only as session hits.
fn config() -> DataplaneConfig {
    let mut cfg = seeded_config();
    let mut tap3 = InterfaceConfig::new("tap3", TAP3, InterfaceKind::Pod, TAP3_MAC);
    tap3.ip4 = vec![(POD_GW, 32)];
    let mut uplink = InterfaceConfig::new("host-eth0", UPLINK, InterfaceKind::Uplink, UPLINK_MAC);
    uplink.ip4 = vec![(NODE_IP, 24)];
    cfg.interfaces.push(tap3);
    cfg.interfaces.push(uplink);
    for i in &mut cfg.interfaces {
        match i.kind {
            InterfaceKind::Host => (i.nat_inside, i.nat_outside) = (true, true),
            InterfaceKind::Pod => {
                i.nat_outside = true;
                i.nat_inside = i.sw_if_index == TAP3;
            }
            InterfaceKind::Uplink => (i.nat_outside, i.nat_output) = (true, true),
            _ => {}
        }
    }
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: TAP3,
        ip: POD2_IP,
        mac: POD2_MAC,
    });
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: UPLINK,
        ip: GW_IP,
        mac: GW_MAC,
    });
    cfg.routes.push(RouteConfig::new(
        POD2_IP,
        32,
        Path::Attached {
            next_hop: POD2_IP,
            sw_if_index: TAP3,
        },
    ));
    cfg.routes.push(RouteConfig::new(
        BACKENDS[1],
        32,
        Path::Attached {
            next_hop: HOST_IP,
            sw_if_index: TAP0,
        },
    ));
    cfg.routes.push(RouteConfig::new(
        ip("198.51.100.0"),
        24,
        Path::Attached {
            next_hop: GW_IP,
            sw_if_index: UPLINK,
        },
    ));
    cfg.nat = NatConfig {
        mappings: vec![mapping(VIP, &BACKENDS), mapping(HAIRPIN_VIP, &[POD2_IP])],
        pool: vec![NODE_IP],
        twice_nat_pool: vec![NAT_LOOPBACK],
        internal_prefixes: vec![
            (ip("10.1.0.0"), 16),
            (ip("10.20.0.0"), 24),
            (ip("172.30.1.0"), 24),
        ],
        max_sessions: 1024,
        ..NatConfig::default()
    };
    let any = |action| AclRule::any(action);
    let mut to_port_80 = any(Action::Permit);
    (to_port_80.proto, to_port_80.dst_ports) = (6, (80, 80));
    let mut from_host = any(Action::Permit);
    from_host.src = (HOST_IP, 32);
    cfg.acl.acls = vec![
        Acl {
            tag: "local-table default/client".into(),
            rules: vec![from_host, to_port_80, any(Action::Deny)],
        },
        Acl {
            tag: "reflection".into(),
            rules: vec![any(Action::PermitReflect)],
        },
    ];
    cfg.acl.bindings = vec![
        AclBinding {
            sw_if_index: TAP2,
            input: vec![1],
            output: vec![0],
        },
        AclBinding {
            sw_if_index: TAP0,
            input: vec![1],
            output: vec![],
        },
    ];
    cfg.acl.max_sessions = 1024;
    cfg
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = SYN | ACK;

/// A TCP segment with correct checksums (etherparse), with a payload once established.
#[allow(clippy::too_many_arguments)]
fn tcp(
    to: MacAddr,
    from: MacAddr,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ethernet2(from.0, to.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(2000);
    }
    let payload: &[u8] = if flags == ACK {
        b"GET / HTTP/1.1\r\n\r\n"
    } else {
        b""
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(
    to: MacAddr,
    from: MacAddr,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(from.0, to.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, b"query").unwrap();
    out
}

/// Source and destination (address, port) of a sent TCP or UDP frame; checks its checksums.
fn ends(f: &SentFrame) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let p = etherparse::SlicedPacket::from_ethernet(&f.frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net else {
        panic!("not IPv4: {f:?}")
    };
    let h = v4.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IP checksum");
    let (s, d) = (v4.header().source_addr(), v4.header().destination_addr());
    match &p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => {
            let c = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum");
            ((s, t.source_port()), (d, t.destination_port()))
        }
        Some(etherparse::TransportSlice::Udp(u)) => {
            let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), c, "UDP checksum");
            ((s, u.source_port()), (d, u.destination_port()))
        }
        t => panic!("not TCP or UDP: {t:?}"),
    }
}

/// Client ports of the flows to the two-backend Service.
const CLIENT_PORTS: std::ops::Range<u16> = 40000..40008;
/// Below 1024: the hairpin source and the dynamic SNAT port are drawn at random.
const POD2_PORT: u16 = 700;
const DNS_CLIENT_PORT: u16 = 900;

/// What the flows started in the first data plane look like after translation.
struct Flows {
    /// Backend of each Service flow, by client port.
    backend: Vec<(u16, Ipv4Addr)>,
    /// Source port of the hairpin flow towards POD2 (on the NAT loopback).
    hairpin_port: u16,
    /// Source port of the DNS flow on the node IP.
    snat_port: u16,
}

/// Starts every flow: SYN and SYN-ACK of the Service and hairpin flows, a query and its answer
/// for the dynamic SNAT flow.
fn start_flows(h: &mut Harness) -> Flows {
    let mut backend = Vec::new();
    for port in CLIENT_PORTS {
        let out = h.send_one(TAP2, tcp(TAP2_MAC, POD_MAC, POD_IP, port, VIP, 80, SYN));
        assert_eq!(out.sw_if_index, TAP0);
        let (src, (b, bport)) = ends(&out);
        assert_eq!((src, bport), ((POD_IP, port), 8080));
        assert!(BACKENDS.contains(&b));
        let back = h.send_one(
            TAP0,
            tcp(TAP0_MAC, HOST_MAC, b, 8080, POD_IP, port, SYN_ACK),
        );
        assert_eq!(
            (back.sw_if_index, ends(&back)),
            (TAP2, ((VIP, 80), (POD_IP, port)))
        );
        backend.push((port, b));
    }
    assert!(
        BACKENDS.iter().all(|b| backend.iter().any(|x| x.1 == *b)),
        "both backends in use: {:?}",
        backend
    );
    let out = h.send_one(
        TAP3,
        tcp(TAP3_MAC, POD2_MAC, POD2_IP, POD2_PORT, HAIRPIN_VIP, 80, SYN),
    );
    let ((src, hairpin_port), dst) = ends(&out);
    assert_eq!(
        (out.sw_if_index, src, dst),
        (TAP3, NAT_LOOPBACK, (POD2_IP, 8080))
    );
    let back = h.send_one(
        TAP3,
        tcp(
            TAP3_MAC,
            POD2_MAC,
            POD2_IP,
            8080,
            NAT_LOOPBACK,
            hairpin_port,
            SYN_ACK,
        ),
    );
    assert_eq!(ends(&back), ((HAIRPIN_VIP, 80), (POD2_IP, POD2_PORT)));
    let out = h.send_one(
        TAP2,
        udp(TAP2_MAC, POD_MAC, POD_IP, DNS_CLIENT_PORT, DNS_IP, 53),
    );
    let ((src, snat_port), dst) = ends(&out);
    assert_eq!((out.sw_if_index, src, dst), (UPLINK, NODE_IP, (DNS_IP, 53)));
    let back = h.send_one(
        UPLINK,
        udp(UPLINK_MAC, GW_MAC, DNS_IP, 53, NODE_IP, snat_port),
    );
    assert_eq!(
        (back.sw_if_index, ends(&back)),
        (TAP2, ((DNS_IP, 53), (POD_IP, DNS_CLIENT_PORT)))
    );
    Flows {
        backend,
        hairpin_port,
        snat_port,
    }
}

/// The flows' next packets, each with the interface it arrives on: the client's ACK with data
/// and the server's answer per TCP flow, the pod's next DNS query (translated by the uplink's
/// output feature to the same port on the node IP) and the server's answer.
fn mid_flow(f: &Flows) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    for &(port, b) in &f.backend {
        v.push((TAP2, tcp(TAP2_MAC, POD_MAC, POD_IP, port, VIP, 80, ACK)));
        v.push((TAP0, tcp(TAP0_MAC, HOST_MAC, b, 8080, POD_IP, port, ACK)));
    }
    let p = f.hairpin_port;
    v.push((
        TAP3,
        tcp(TAP3_MAC, POD2_MAC, POD2_IP, POD2_PORT, HAIRPIN_VIP, 80, ACK),
    ));
    v.push((
        TAP3,
        tcp(TAP3_MAC, POD2_MAC, POD2_IP, 8080, NAT_LOOPBACK, p, ACK),
    ));
    v.push((
        TAP2,
        udp(TAP2_MAC, POD_MAC, POD_IP, DNS_CLIENT_PORT, DNS_IP, 53),
    ));
    v.push((
        UPLINK,
        udp(UPLINK_MAC, GW_MAC, DNS_IP, 53, NODE_IP, f.snat_port),
    ));
    v
}

/// NAT sessions the flows make: one per Service flow, the hairpin one, the SNAT one.
const NAT_SESSIONS: u32 = CLIENT_PORTS.end as u32 - CLIENT_PORTS.start as u32 + 2;
/// ACL sessions: per Service flow one on `tap2` (the SYN) and one on `tap0` (the SYN-ACK, which
/// the reflective ACL on `tap0` input sees first), and the DNS query's on `tap2`.
const ACL_SESSIONS: u32 = 2 * (CLIENT_PORTS.end as u32 - CLIENT_PORTS.start as u32) + 1;

/// Through the file format, as vecnetd stores them.
fn through_file(s: &SavedSessions) -> SavedSessions {
    let bytes = s.to_bytes();
    assert_eq!(&bytes[..9], b"VNSESS\0\x01\x00");
    let back = SavedSessions::from_bytes(&bytes).unwrap();
    assert_eq!(&back, s);
    back
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn restored_sessions_translate_and_admit_mid_flow_packets_as_before() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    let flows = start_flows(&mut old);
    let saved = old.dp.save_sessions();
    assert_eq!(saved.nat.len() as u32, NAT_SESSIONS);
    assert_eq!(saved.acl.len() as u32, ACL_SESSIONS);
    let saved = through_file(&saved);

    let mut new = Harness::new(&cfg);
    let report = new.dp.restore_sessions(&saved);
    assert_eq!(
        report,
        RestoreReport {
            nat: NAT_SESSIONS,
            acl: ACL_SESSIONS,
            expired: 0,
            refused: 0
        }
    );
    assert_eq!(new.dp.worker.nat.sessions.len(), NAT_SESSIONS);
    assert_eq!(new.dp.worker.acl.len(), ACL_SESSIONS);

    let mut sent = Vec::new();
    for (rx, frame) in mid_flow(&flows) {
        let want = old.send_one(rx, frame.clone());
        let got = new.send_one(rx, frame);
        assert_eq!(got, want, "arriving on {rx}");
        sent.push(got);
    }
    // The second DNS query left through the uplink as the first one did, and was translated
    // once, by the output feature.
    let query = &sent[sent.len() - 2];
    assert_eq!(
        (query.sw_if_index, ends(query)),
        (UPLINK, ((NODE_IP, flows.snat_port), (DNS_IP, 53)))
    );
    assert_eq!(
        new.errors_of("nat44-in2out-output", "good in2out packets processed"),
        1
    );
    // Every reply to the pod on tap2 was admitted as a session hit: 8 Service answers, 1 DNS;
    // no packet needed a new session.
    assert_eq!(new.errors_of(ACL_OUT, "existing session packets"), 9);
    assert_eq!(new.errors_of(ACL_OUT, "new sessions added"), 0);
    assert_eq!(
        new.dp.worker.nat.sessions.counters.created,
        NAT_SESSIONS as u64
    );
    assert_eq!(new.dp.worker.acl.counters.adds, ACL_SESSIONS as u64);
    // Without the restore the same answer would not get in.
    let mut cold = Harness::new(&cfg);
    let (port, b) = flows.backend[0];
    cold.expect_drop(
        TAP0,
        tcp(TAP0_MAC, HOST_MAC, b, 8080, POD_IP, port, ACK),
        ACL_OUT,
        DENY,
    );
    let first = flows.backend[0];
    let s = new.exec("show nat44 sessions detail");
    assert!(
        s.contains(&format!("i2o {} proto 6 port 8080", first.1)),
        "{s}"
    );
}

#[test]
fn without_its_acl_sessions_the_reply_is_denied() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    let flows = start_flows(&mut old);
    let mut saved = through_file(&old.dp.save_sessions());
    saved.acl.clear();
    let mut new = Harness::new(&cfg);
    let report = new.dp.restore_sessions(&saved);
    assert_eq!((report.nat, report.acl), (NAT_SESSIONS, 0));
    let (port, b) = flows.backend[0];
    let reply = tcp(TAP0_MAC, HOST_MAC, b, 8080, POD_IP, port, ACK);
    // Translated back to the VIP, then denied by the pod's local table.
    new.expect_drop(TAP0, reply.clone(), ACL_OUT, DENY);
    assert_eq!(old.send_one(TAP0, reply).sw_if_index, TAP2);
}

#[test]
fn sessions_that_timed_out_while_down_are_not_restored() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    let flows = start_flows(&mut old);
    let saved = old.dp.save_sessions();
    let all = NAT_SESSIONS + ACL_SESSIONS;

    // Down since the epoch: everything is gone.
    let mut long_ago = saved.clone();
    long_ago.saved_unix_ns = 1;
    let mut new = Harness::new(&cfg);
    let report = new.dp.restore_sessions(&through_file(&long_ago));
    assert_eq!(
        report,
        RestoreReport {
            expired: all,
            ..RestoreReport::default()
        }
    );
    assert!(new.dp.worker.nat.sessions.is_empty() && new.dp.worker.acl.is_empty());
    let (port, b) = flows.backend[0];
    new.expect_drop(
        TAP0,
        tcp(TAP0_MAC, HOST_MAC, b, 8080, POD_IP, port, ACK),
        ACL_OUT,
        DENY,
    );

    // Down 250 s: TCP flows that never completed their handshake are gone (NAT transitory
    // 240 s, ACL transient 120 s), the DNS flow lives on (NAT UDP 300 s, ACL UDP 600 s).
    let mut recent = saved.clone();
    recent.saved_unix_ns = unix_now_ns() - 250 * SEC;
    let mut new = Harness::new(&cfg);
    let report = new.dp.restore_sessions(&through_file(&recent));
    assert_eq!(
        report,
        RestoreReport {
            nat: 1,
            acl: 1,
            expired: all - 2,
            refused: 0
        }
    );
    // The clock moved on so that the DNS sessions keep their 250 s of idleness.
    let now = new.dp.graph.clock.now_ns();
    assert!(now >= 250 * SEC, "clock at {now}");
    let answer = udp(UPLINK_MAC, GW_MAC, DNS_IP, 53, NODE_IP, flows.snat_port);
    let want = old.send_one(UPLINK, answer.clone());
    assert_eq!(new.send_one(UPLINK, answer.clone()), want);
    // That answer came 250 s after the one before: the NAT session expires 300 s after it,
    // the ACL session 600 s after it, as without the restart.
    let answered = new.dp.graph.clock.now_ns();
    new.dp.graph.clock.set_ns(answered + 299 * SEC);
    new.run();
    assert_eq!(new.dp.worker.nat.sessions.len(), 1);
    new.dp.graph.clock.set_ns(answered + 300 * SEC);
    new.run();
    assert!(new.dp.worker.nat.sessions.is_empty());
    assert_eq!(new.dp.worker.acl.len(), 1);
    new.dp.graph.clock.set_ns(answered + 600 * SEC);
    new.run();
    assert!(new.dp.worker.acl.is_empty());
}

/// A session restored idle for longer than the new data plane's clock has run keeps its age:
/// it expires when it would have without the restart, not a full timeout after the restore.
#[test]
fn restored_sessions_expire_on_time() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    start_flows(&mut old);
    let mut saved = old.dp.save_sessions();
    saved.saved_unix_ns = unix_now_ns() - 250 * SEC;
    let mut new = Harness::new(&cfg);
    let report = new.dp.restore_sessions(&saved);
    assert_eq!((report.nat, report.acl), (1, 1));
    let restored = new.dp.graph.clock.now_ns();
    // 250 s idle of 300: gone within 50 s of the restore.
    new.dp.graph.clock.set_ns(restored + 50 * SEC);
    new.run();
    assert!(new.dp.worker.nat.sessions.is_empty());
    // 250 s idle of 600 for the ACL session: 350 s more.
    new.dp.graph.clock.set_ns(restored + 349 * SEC);
    new.run();
    assert_eq!(new.dp.worker.acl.len(), 1);
    new.dp.graph.clock.set_ns(restored + 350 * SEC);
    new.run();
    assert!(new.dp.worker.acl.is_empty());
}

/// Restored into a configuration that changed while vecnetd was down: Service sessions are
/// reattached to their mapping by its external address; a TCP connection outlives its endpoint
/// (as in a running data plane), a UDP flow to a removed endpoint is not restored (a running
/// data plane purges it on the change).
#[test]
fn a_changed_configuration_reattaches_or_drops_as_a_live_change_would() {
    let dns_vip = ip("10.96.0.53");
    let udp_service = |backend: Ipv4Addr| {
        let set = BackendSet::Backends(vec![Backend {
            ip: backend,
            port: 5353,
            weight: 1,
            vrf: 0,
        }]);
        StaticMapping {
            external_ip: dns_vip,
            external_port: 53,
            proto: Proto::Udp,
            internal: set.clone(),
            external: set,
            tag: "kube-system/dns".into(),
            ..mapping(dns_vip, &[])
        }
    };
    let mut cfg = config();
    cfg.nat.mappings.push(udp_service(POD2_IP));
    let mut old = Harness::new(&cfg);
    let flows = start_flows(&mut old);
    let out = old.send_one(TAP2, udp(TAP2_MAC, POD_MAC, POD_IP, 5000, dns_vip, 53));
    assert_eq!(ends(&out).1, (POD2_IP, 5353));
    let saved = old.dp.save_sessions();

    let mut changed = cfg.clone();
    changed.nat.mappings.reverse();
    changed.nat.mappings[0] = udp_service(ip("10.1.1.5"));
    changed.nat.mappings[2] = mapping(VIP, &BACKENDS[..1]);
    let mut new = Harness::new(&changed);
    let r = new.dp.restore_sessions(&saved);
    assert_eq!(
        r,
        RestoreReport {
            nat: NAT_SESSIONS,
            acl: ACL_SESSIONS + 1,
            expired: 0,
            refused: 1
        }
    );
    for (_, x) in new.dp.worker.nat.sessions.iter() {
        let want = match x.outer.dst {
            d if d == u32::from(VIP) => 2,
            d if d == u32::from(HAIRPIN_VIP) => 1,
            _ => u32::MAX,
        };
        assert_eq!(x.mapping, want, "{x:?}");
    }
    // A connection to the endpoint that left goes on.
    let (port, b) = *flows.backend.iter().find(|x| x.1 == BACKENDS[1]).unwrap();
    let out = new.send_one(TAP2, tcp(TAP2_MAC, POD_MAC, POD_IP, port, VIP, 80, ACK));
    assert_eq!(ends(&out).1, (b, 8080));
}

/// A wall clock that went backwards between save and restore counts as no time at all.
#[test]
fn a_save_from_the_future_loses_no_time() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    start_flows(&mut old);
    let mut saved = old.dp.save_sessions();
    saved.saved_unix_ns = u64::MAX;
    let mut new = Harness::new(&cfg);
    assert_eq!(
        new.dp.restore_sessions(&saved),
        RestoreReport {
            nat: NAT_SESSIONS,
            acl: ACL_SESSIONS,
            expired: 0,
            refused: 0
        }
    );
}

#[test]
fn restoring_twice_adds_nothing() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    start_flows(&mut old);
    let saved = through_file(&old.dp.save_sessions());
    let mut new = Harness::new(&cfg);
    let first = new.dp.restore_sessions(&saved);
    assert_eq!((first.nat, first.acl), (NAT_SESSIONS, ACL_SESSIONS));
    let clock = new.dp.graph.clock.now_ns();
    let again = new.dp.restore_sessions(&saved);
    assert_eq!(
        again,
        RestoreReport {
            refused: NAT_SESSIONS + ACL_SESSIONS,
            ..RestoreReport::default()
        },
        "every key is taken"
    );
    assert_eq!(
        new.dp.graph.clock.now_ns(),
        clock,
        "a live clock is left alone"
    );
    assert_eq!(new.dp.worker.nat.sessions.len(), NAT_SESSIONS);
    assert_eq!(new.dp.worker.acl.len(), ACL_SESSIONS);
}

#[test]
fn a_smaller_table_refuses_what_does_not_fit() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    start_flows(&mut old);
    let saved = through_file(&old.dp.save_sessions());
    let mut small = cfg.clone();
    small.nat.max_sessions = 4;
    small.nat.reserved_for_control = 0;
    small.acl.max_sessions = 5;
    small.acl.reserved_for_control = 0;
    let mut new = Harness::new(&small);
    let r = new.dp.restore_sessions(&saved);
    // Transitory TCP sessions are recycled to make room, as for new flows: the tables end full
    // of the sessions imported last (the least idle), the others counted as refused.
    assert_eq!(
        r,
        RestoreReport {
            nat: 4,
            acl: 5,
            expired: 0,
            refused: NAT_SESSIONS + ACL_SESSIONS - 9
        }
    );
    assert_eq!(new.dp.worker.nat.sessions.len(), 4);
    assert_eq!(new.dp.worker.acl.len(), 5);
    // The DNS flow, the least idle, is among the NAT sessions kept. (Not among the ACL ones:
    // the sessions on the host link are control traffic, which others never push out.)
    let nat = &new.dp.worker.nat.sessions;
    assert!(nat.iter().any(|(_, x)| x.outer.proto == 17), "{nat:?}");
}

#[test]
fn session_files_from_elsewhere_are_errors_not_panics() {
    let cfg = config();
    let mut old = Harness::new(&cfg);
    start_flows(&mut old);
    let bytes = old.dp.save_sessions().to_bytes();

    assert!(matches!(
        SavedSessions::from_bytes(b"GIF89a garbage, not sessions"),
        Err(SessionFileError::NotASessionFile)
    ));
    assert!(matches!(
        SavedSessions::from_bytes(b""),
        Err(SessionFileError::NotASessionFile)
    ));
    let mut v9 = bytes.clone();
    v9[7..9].copy_from_slice(&9u16.to_le_bytes());
    let e = SavedSessions::from_bytes(&v9).unwrap_err();
    assert!(matches!(
        e,
        SessionFileError::Version {
            found: 9,
            expected: 1
        }
    ));
    assert_eq!(
        e.to_string(),
        "session file format version 9; this vecnetd reads version 1 only"
    );
    for n in 0..bytes.len() {
        assert!(SavedSessions::from_bytes(&bytes[..n]).is_err(), "{n} bytes");
    }
    let mut header_then_junk = bytes[..9].to_vec();
    header_then_junk.extend_from_slice(&[0xff; 64]);
    assert!(matches!(
        SavedSessions::from_bytes(&header_then_junk),
        Err(SessionFileError::Corrupt(_))
    ));
    // Damage anywhere in the body: an error, or sessions that restore without a panic.
    let mut new = Harness::new(&cfg);
    for i in 9..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            if let Ok(s) = SavedSessions::from_bytes(&b) {
                new.dp.restore_sessions(&s);
            }
        }
    }
}
