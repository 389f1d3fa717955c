//! End-to-end tests of the ACL data plane (`acl-plugin-in-ip4-fa`, `acl-plugin-out-ip4-fa`):
//! real frames through the real graph on a [`MemIo`] device with a virtual clock. The seed's ACL
//! records, stateful (reflective) sessions with their timeouts and limits, ports of VPP's
//! `test_acl_plugin` stateless cases, the `show acl-plugin` commands, and a steady-state
//! allocation check.

mod common;

use std::cell::Cell;
use std::net::Ipv4Addr;

use common::*;
use vecnet_acl::{Acl, AclBinding, AclRule, AclTimeouts, Action};
use vecnet_graph::Clock;
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::pg::{routed_config, routed_generator};
use vecnet_vswitch::{
    DataplaneConfig, DataplaneOptions, InterfaceConfig, NeighbourConfig, Path, RouteConfig,
};
use vecnet_wire::MacAddr;

const SEC: u64 = 1_000_000_000;
const ACL_IN: &str = "acl-plugin-in-ip4-fa";
const ACL_OUT: &str = "acl-plugin-out-ip4-fa";
const DENY: &str = "ACL deny packets";
const TOO_MANY: &str = "too many sessions to add new";

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

// ---------------------------------------------------------------------------------------------
// Configuration helpers
// ---------------------------------------------------------------------------------------------

fn prefix(s: &str) -> (Ipv4Addr, u8) {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    (a.parse().unwrap(), l.parse().unwrap())
}

/// A rule: `src`/`dst` as `a.b.c.d/len`, protocol (0 = any), inclusive port ranges.
fn rule(
    action: Action,
    src: &str,
    dst: &str,
    proto: u8,
    sports: (u16, u16),
    dports: (u16, u16),
) -> AclRule {
    AclRule {
        action,
        src: prefix(src),
        dst: prefix(dst),
        proto,
        src_ports: sports,
        dst_ports: dports,
        tcp_flags: (0, 0),
    }
}

const ALL: (u16, u16) = (0, 65535);

fn acl(tag: &str, rules: Vec<AclRule>) -> Acl {
    Acl {
        tag: tag.into(),
        rules,
    }
}

fn bind(sw_if_index: u32, input: &[u32], output: &[u32]) -> AclBinding {
    AclBinding {
        sw_if_index,
        input: input.to_vec(),
        output: output.to_vec(),
    }
}

/// The seed-like policy layout (SYSTEM.md 7.6):
/// * acl 0 — the pod's local table on `tap2` output: from the host link, TCP to port 80, else deny;
/// * acl 1 — another table, bound nowhere;
/// * acl 2 — the global table on `tap0` output, whose rule 3 permits the seed's SYN;
/// * acl 3 — the reflective ACL on input of `tap2` and `tap0`.
fn policy_config() -> DataplaneConfig {
    let mut cfg = seeded_config();
    cfg.acl.acls = vec![
        acl(
            "vecnet-policy-1a2b3c4d5e6f7081",
            vec![
                rule(Action::Permit, "172.30.1.2/32", "0.0.0.0/0", 0, ALL, ALL),
                rule(Action::Permit, "0.0.0.0/0", "10.1.1.3/32", 6, ALL, (80, 80)),
                AclRule::any(Action::Deny),
            ],
        ),
        acl("vecnet-policy-unused", vec![AclRule::any(Action::Deny)]),
        acl(
            "vecnet-policy-NODE-GLOBAL",
            vec![
                rule(Action::Deny, "10.1.1.3/32", "10.30.0.0/16", 0, ALL, ALL),
                rule(Action::Permit, "10.1.1.4/32", "0.0.0.0/0", 0, ALL, ALL),
                rule(
                    Action::Deny,
                    "10.1.1.3/32",
                    "0.0.0.0/0",
                    17,
                    ALL,
                    (5353, 5353),
                ),
                rule(
                    Action::Permit,
                    "10.1.1.3/32",
                    "0.0.0.0/0",
                    6,
                    ALL,
                    (8080, 8080),
                ),
                AclRule::any(Action::Permit),
            ],
        ),
        acl(
            "vecnet-policy-REFLECTION",
            vec![AclRule::any(Action::PermitReflect)],
        ),
    ];
    cfg.acl.bindings = vec![bind(TAP2, &[3], &[0]), bind(TAP0, &[3], &[2])];
    cfg
}

/// `acls` bound on input of `tap2` (the pod's egress), nothing else: stateless tests.
fn stateless_config(rules: Vec<AclRule>) -> DataplaneConfig {
    let mut cfg = seeded_config();
    cfg.acl.acls = vec![acl("stateless", rules)];
    cfg.acl.bindings = vec![bind(TAP2, &[0], &[])];
    cfg
}

pub const TAP3: u32 = 7;
pub const TAP3_MAC: MacAddr = MacAddr([0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x10]);
pub const POD2_MAC: MacAddr = MacAddr([0, 0, 0, 0, 0, 3]);
pub const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 4);

/// [`seeded_config`] plus a second pod 10.1.1.4 on `tap3`.
fn two_pods_config() -> DataplaneConfig {
    let mut cfg = seeded_config();
    let mut tap3 = InterfaceConfig::new("tap3", TAP3, InterfaceKind::Pod, TAP3_MAC);
    tap3.ip4 = vec![(POD_GW, 32)];
    cfg.interfaces.push(tap3);
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: TAP3,
        ip: POD2_IP,
        mac: POD2_MAC,
    });
    cfg.routes.push(RouteConfig::new(
        POD2_IP,
        32,
        Path::Attached {
            next_hop: POD2_IP,
            sw_if_index: TAP3,
        },
    ));
    cfg
}

fn virtual_harness(cfg: &DataplaneConfig, start_ns: u64) -> Harness {
    let mut h = Harness::new(cfg);
    h.dp.graph.clock.set_ns(start_ns);
    h
}

// ---------------------------------------------------------------------------------------------
// Frame helpers
// ---------------------------------------------------------------------------------------------

/// A TCP header (20 bytes + `options`) with the given fields; the checksum field is set as
/// given (nothing on the routed path verifies it).
#[allow(clippy::too_many_arguments)]
fn tcp_header(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    checksum: u16,
    options: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut t = Vec::with_capacity(20 + options.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((((20 + options.len()) / 4) << 4) as u8);
    t.push(flags);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&checksum.to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(options);
    t
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Ip4::new(
        src,
        dst,
        6,
        tcp_header(sport, dport, 1, 1, flags, 1000, 0, &[]),
    )
    .bytes()
}

fn udp_pkt(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    Ip4::udp(src, dst, sport, dport, b"data").bytes()
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16) -> Vec<u8> {
    Ip4::new(src, dst, 1, icmp_echo(request, id, 1, b"ping")).bytes()
}

/// Recomputes the IPv4 header checksum of a raw packet.
fn fix_ip_checksum(p: &mut [u8]) {
    let ihl = ((p[0] & 0x0f) as usize) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = inet_checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// `pkt` as a fragment: offset in 8-byte units, more-fragments flag.
fn fragment(mut pkt: Vec<u8>, offset8: u16, more: bool) -> Vec<u8> {
    let v = offset8 | if more { 0x2000 } else { 0 };
    pkt[6..8].copy_from_slice(&v.to_be_bytes());
    fix_ip_checksum(&mut pkt);
    pkt
}

/// The seed's SYN (POD_TO_SERVICE_HOST.md), addressed to the endpoint 10.20.0.2:8080 directly
/// (NAT is not in this test), so its TCP checksum is the seed's post-NAT value.
fn seed_syn() -> Vec<u8> {
    let options = [
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07,
    ];
    let mut p = Ip4::new(
        POD_IP,
        REMOTE_IP,
        6,
        tcp_header(
            46310,
            8080,
            0xba5b_f36d,
            0,
            TCP_SYN,
            29200,
            0x9095,
            &options,
        ),
    );
    p.id = 0x5eb4;
    p.bytes()
}

/// The seed's SYN-ACK from the endpoint in the host stack.
fn seed_syn_ack() -> Vec<u8> {
    let options = [
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x04, 0x05, 0x06, 0x00, 0x01, 0x02,
        0x03, 0x01, 0x03, 0x03, 0x07,
    ];
    let mut p = Ip4::new(
        REMOTE_IP,
        POD_IP,
        6,
        tcp_header(
            8080,
            46310,
            0x57f7_b0c7,
            0xba5b_f36e,
            TCP_SYN | TCP_ACK,
            28960,
            0xdab4,
            &options,
        ),
    );
    p.id = 0;
    p.bytes()
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

impl Harness {
    /// Sends one frame and expects it forwarded (one frame sent on `tx`, no drop).
    fn pass(&mut self, rx: u32, frame: Vec<u8>, tx: u32) {
        let s = self.send_one(rx, frame);
        assert_eq!(s.sw_if_index, tx, "forwarded on the wrong interface");
    }

    /// `show errors` count of one of an ACL node's reasons.
    fn acl_count(&self, node: &str, reason: &str) -> u64 {
        self.errors_of(node, reason)
    }

    fn arc(&self, from: &str, to: &str) -> u16 {
        let g = &self.dp.graph;
        g.arc(g.node_index(from).unwrap(), g.node_index(to).unwrap())
            .unwrap_or_else(|| panic!("no arc {from} -> {to}"))
    }

    /// The ACL records (three lines each) in `show trace`, in order.
    fn acl_records(&mut self) -> Vec<String> {
        let t = self.exec("show trace max 1000");
        let lines: Vec<&str> = t.lines().collect();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if l.ends_with(ACL_IN) || l.ends_with(ACL_OUT) {
                out.push(lines[i + 1..i + 4].join("\n"));
            }
        }
        out
    }
}

/// `show trace` with the timestamps and `dpo-idx` numbers normalised (run-time artefacts).
fn normalise(trace: &str) -> String {
    let mut out = String::new();
    for l in trace.lines() {
        let l = match l.get(..17) {
            Some(ts) if ts.len() == 17 && ts.as_bytes()[2] == b':' && ts.ends_with(": ") => {
                &l[17..]
            }
            _ => l,
        };
        let mut words: Vec<String> = l.split(' ').map(String::from).collect();
        for k in 1..words.len() {
            if words[k - 1] == "dpo-idx" {
                words[k] = "*".into();
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. The seed's ACL records
// ---------------------------------------------------------------------------------------------

/// The seed's SYN and SYN-ACK through the seed's ACL layout: reflection on both inputs, the
/// global table on `tap0` output (rule 3 permits the SYN), the pod's local table on `tap2` output
/// (the SYN-ACK passes by the session the SYN created). Without NAT the packet keeps the
/// endpoint address, so the in-record on `tap2` and the out-record on `tap2` carry 10.20.0.2:8080
/// where the seed has the VIP; the `tap0` records equal the seed's byte for byte.
#[test]
fn seed_trace_with_the_four_acl_records() {
    let mut h = Harness::new(&policy_config());
    h.exec("trace add virtio-input 10");
    h.pass(TAP2, from_pod(&seed_syn()), TAP0);
    h.pass(TAP0, from_host(&seed_syn_ack()), TAP2);
    let in_lookup = h.arc(ACL_IN, "ip4-lookup");
    let out_tap0 = h.arc(ACL_OUT, "tap0-output");
    let out_tap2 = h.arc(ACL_OUT, "tap2-output");
    let expect = format!(
        "------------------- Start of thread 0 vpp_main -------------------
Packet 1

virtio-input
  virtio: hw_if_index 6 next-index 4 vring 0 len 74
    hdr: flags 0x00 gso_type 0x00 hdr_len 0 gso_size 0 csum_start 0 csum_offset 0 num_buffers 1
ethernet-input
  IP4: 00:00:00:00:00:02 -> 02:fe:16:3f:5f:0f
ip4-input
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 64, length 60, checksum 0xc6ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095
acl-plugin-in-ip4-fa
  acl-plugin: sw_if_index 6, next index {in_lookup}, action: 2, match: acl 3 rule 0 trace_bits 00000000
  pkt info 0000000000000000 0301010a00000000 0000000000000000 0200140a00000000 000600061f90b4e6 0702ffff00000006
   input sw_if_index 6 (lsb16 6) l3 ip4 10.1.1.3 -> 10.20.0.2 l4 proto 6 l4_valid 1 port 46310 -> 8080 tcp flags (valid) 02 rsvd 0
ip4-lookup
  fib 0 dpo-idx * flow hash: 0x00000000
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 64, length 60, checksum 0xc6ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095
ip4-rewrite
  tx_sw_if_index 2 dpo-idx * : ipv4 via 172.30.1.2 tap0: 3e1b702d4d510123456789420800 flow hash: 0x00000000
  00000000: 3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a14
  00000020: 0002b4e61f90ba5bf36d00000000a002721090950000020405b40402
acl-plugin-out-ip4-fa
  acl-plugin: sw_if_index 2, next index {out_tap0}, action: 1, match: acl 2 rule 3 trace_bits 00000000
  pkt info 0000000000000000 0301010a00000000 0000000000000000 0200140a00000000 000200061f90b4e6 0502ffff00000002
   output sw_if_index 2 (lsb16 2) l3 ip4 10.1.1.3 -> 10.20.0.2 l4 proto 6 l4_valid 1 port 46310 -> 8080 tcp flags (valid) 02 rsvd 0
tap0-output
  tap0
  IP4: 01:23:45:67:89:42 -> 3e:1b:70:2d:4d:51
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 63, length 60, checksum 0xc7ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095

Packet 2

virtio-input
  virtio: hw_if_index 2 next-index 4 vring 0 len 74
    hdr: flags 0x00 gso_type 0x00 hdr_len 0 gso_size 0 csum_start 0 csum_offset 0 num_buffers 1
ethernet-input
  IP4: 3e:1b:70:2d:4d:51 -> 01:23:45:67:89:42
ip4-input
  TCP: 10.20.0.2 -> 10.1.1.3
    tos 0x00, ttl 64, length 60, checksum 0x25a3
    fragment id 0x0000, flags DONT_FRAGMENT
  TCP: 8080 -> 46310
    seq. 0x57f7b0c7 ack 0xba5bf36e
    flags 0x12 SYN ACK, tcp header: 40 bytes
    window 28960, checksum 0xdab4
acl-plugin-in-ip4-fa
  acl-plugin: sw_if_index 2, next index {in_lookup}, action: 2, match: acl 3 rule 0 trace_bits 00000000
  pkt info 0000000000000000 0200140a00000000 0000000000000000 0301010a00000000 00020006b4e61f90 0712ffff00000002
   input sw_if_index 2 (lsb16 2) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 8080 -> 46310 tcp flags (valid) 12 rsvd 0
ip4-lookup
  fib 0 dpo-idx * flow hash: 0x00000000
  TCP: 10.20.0.2 -> 10.1.1.3
    tos 0x00, ttl 64, length 60, checksum 0x25a3
    fragment id 0x0000, flags DONT_FRAGMENT
  TCP: 8080 -> 46310
    seq. 0x57f7b0c7 ack 0xba5bf36e
    flags 0x12 SYN ACK, tcp header: 40 bytes
    window 28960, checksum 0xdab4
ip4-rewrite
  tx_sw_if_index 6 dpo-idx * : ipv4 via 10.1.1.3 tap2: 00000000000202fe163f5f0f0800 flow hash: 0x00000000
  00000000: 00000000000202fe163f5f0f08004500003c000040003f0626a30a1400020a01
  00000020: 01031f90b4e657f7b0c7ba5bf36ea0127120dab40000020405b40402
acl-plugin-out-ip4-fa
  acl-plugin: sw_if_index 6, next index {out_tap2}, action: 3, match: acl -1 rule 0 trace_bits 80000000
  pkt info 0000000000000000 0200140a00000000 0000000000000000 0301010a00000000 00060006b4e61f90 0512ffff00000006
   output sw_if_index 6 (lsb16 6) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 8080 -> 46310 tcp flags (valid) 12 rsvd 0
tap2-output
  tap2
  IP4: 02:fe:16:3f:5f:0f -> 00:00:00:00:00:02
  TCP: 10.20.0.2 -> 10.1.1.3
    tos 0x00, ttl 63, length 60, checksum 0x26a3
    fragment id 0x0000, flags DONT_FRAGMENT
  TCP: 8080 -> 46310
    seq. 0x57f7b0c7 ack 0xba5bf36e
    flags 0x12 SYN ACK, tcp header: 40 bytes
    window 28960, checksum 0xdab4

"
    );
    let got = normalise(&h.exec("show trace"));
    assert_eq!(got, expect, "\n--- got ---\n{got}");
    // The two tap0 records are the seed's own lines (only `next index` is a run-time number).
    let recs = h.acl_records();
    assert_eq!(recs.len(), 4);
    assert!(recs[1].ends_with(
        "pkt info 0000000000000000 0301010a00000000 0000000000000000 0200140a00000000 000200061f90b4e6 0502ffff00000002\n   \
         output sw_if_index 2 (lsb16 2) l3 ip4 10.1.1.3 -> 10.20.0.2 l4 proto 6 l4_valid 1 port 46310 -> 8080 tcp flags (valid) 02 rsvd 0"
    ));
    assert!(recs[2].ends_with(
        "pkt info 0000000000000000 0200140a00000000 0000000000000000 0301010a00000000 00020006b4e61f90 0712ffff00000002\n   \
         input sw_if_index 2 (lsb16 2) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 8080 -> 46310 tcp flags (valid) 12 rsvd 0"
    ));
    // Counters: two checks per node, two sessions, one permit, one session hit.
    assert_eq!(h.acl_count(ACL_IN, "checked packets"), 2);
    assert_eq!(h.acl_count(ACL_IN, "new sessions added"), 2);
    assert_eq!(h.acl_count(ACL_OUT, "checked packets"), 2);
    assert_eq!(h.acl_count(ACL_OUT, "ACL permit packets"), 1);
    assert_eq!(h.acl_count(ACL_OUT, "existing session packets"), 1);
    assert_eq!(h.total_drops(), 0);
}

/// The seed's Service flow with NAT44 in the arcs (`tap2` outside, `tap0` inside and outside,
/// 10.104.221.85:80 → 10.20.0.2:8080) and the seed's own frames: all four ACL records carry the
/// seed's addresses, ports, actions, ACL and rule numbers, trace bits and `pkt info` words. Only
/// the run-time numbers differ: `next index` (checked against the graph's arcs) and the session
/// index of the last record.
#[test]
fn seed_service_flow_with_nat_gives_the_seed_acl_records() {
    let mut cfg = policy_config();
    for i in &mut cfg.interfaces {
        match i.sw_if_index {
            TAP0 => (i.nat_inside, i.nat_outside) = (true, true),
            TAP2 => i.nat_outside = true,
            _ => {}
        }
    }
    let endpoint = vecnet_nat::Backend {
        ip: REMOTE_IP,
        port: 8080,
        weight: 1,
        vrf: 0,
    };
    let set = vecnet_nat::BackendSet::Backends(vec![endpoint]);
    cfg.nat = vecnet_nat::NatConfig {
        mappings: vec![vecnet_nat::StaticMapping {
            external_ip: ip("10.104.221.85"),
            external_port: 80,
            proto: vecnet_nat::Proto::Tcp,
            vrf: 0,
            internal: set.clone(),
            external: set,
            twice_nat_external: false,
            self_twice_nat: true,
            out2in_only: true,
            affinity_timeout: 0,
            affinity_group: 0,
            tag: "default/web".into(),
        }],
        twice_nat_pool: vec![ip("10.1.1.254")],
        internal_prefixes: vec![
            (ip("10.1.0.0"), 16),
            (REMOTE_IP, 32),
            (ip("172.30.1.0"), 24),
        ],
        max_sessions: 1024,
        ..vecnet_nat::NatConfig::default()
    };
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut h = Harness::new(&cfg);
    h.exec("trace add virtio-input 10");
    // The seed's frames, as printed (the SYN to the Service address).
    h.pass(TAP2, hex("02fe163f5f0f00000000000208004500003c5eb440004006e9460a0101030a68dd55b4e60050ba5bf36d00000000a0027210d22d0000020405b40402080a3b8e0f220000000001030307"), TAP0);
    h.pass(TAP0, hex("0123456789423e1b702d4d5108004500003c00004000400625a30a1400020a0101031f90b4e657f7b0c7ba5bf36ea0127120dab40000020405b40402080a3b8e0f220000000001030307"), TAP2);
    let trace = normalise(&h.exec("show trace"));
    let lines: Vec<&str> = trace.lines().collect();
    let mut records = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if *l == ACL_IN || *l == ACL_OUT {
            // The node the record's next index leads to is the next record's node.
            let next = lines[i + 4];
            // On an interface that is NAT inside and outside, the ACL hands over to the
            // classifier, which prints no record (era A) and picks `nat44-in2out`.
            let target = if next == "nat44-in2out" {
                "nat44-classify"
            } else {
                next
            };
            let arc = h.arc(l, target);
            records.push((lines[i + 1..i + 4].join("\n"), arc, next.to_string()));
        }
    }
    let nexts: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        nexts,
        ["nat44-out2in", "tap0-output", "nat44-in2out", "tap2-output"],
        "{trace}"
    );
    let seed = [
        "  acl-plugin: sw_if_index 6, next index {}, action: 2, match: acl 3 rule 0 trace_bits 00000000
  pkt info 0000000000000000 0301010a00000000 0000000000000000 55dd680a00000000 000600060050b4e6 0702ffff00000006
   input sw_if_index 6 (lsb16 6) l3 ip4 10.1.1.3 -> 10.104.221.85 l4 proto 6 l4_valid 1 port 46310 -> 80 tcp flags (valid) 02 rsvd 0",
        "  acl-plugin: sw_if_index 2, next index {}, action: 1, match: acl 2 rule 3 trace_bits 00000000
  pkt info 0000000000000000 0301010a00000000 0000000000000000 0200140a00000000 000200061f90b4e6 0502ffff00000002
   output sw_if_index 2 (lsb16 2) l3 ip4 10.1.1.3 -> 10.20.0.2 l4 proto 6 l4_valid 1 port 46310 -> 8080 tcp flags (valid) 02 rsvd 0",
        "  acl-plugin: sw_if_index 2, next index {}, action: 2, match: acl 3 rule 0 trace_bits 00000000
  pkt info 0000000000000000 0200140a00000000 0000000000000000 0301010a00000000 00020006b4e61f90 0712ffff00000002
   input sw_if_index 2 (lsb16 2) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 8080 -> 46310 tcp flags (valid) 12 rsvd 0",
        // The seed prints `rule 32`: its session index; ours is the first slot.
        "  acl-plugin: sw_if_index 6, next index {}, action: 3, match: acl -1 rule 0 trace_bits 80000000
  pkt info 0000000000000000 55dd680a00000000 0000000000000000 0301010a00000000 00060006b4e60050 0512ffff00000006
   output sw_if_index 6 (lsb16 6) l3 ip4 10.104.221.85 -> 10.1.1.3 l4 proto 6 l4_valid 1 port 80 -> 46310 tcp flags (valid) 12 rsvd 0",
    ];
    for ((got, arc, _), want) in records.iter().zip(seed) {
        assert_eq!(*got, want.replace("{}", &arc.to_string()));
    }
    // The NAT records between them are the seed's too.
    assert!(
        trace.contains(
            "nat44-out2in\n  NAT44_OUT2IN: sw_if_index 6, next index 1, session index 0\n"
        ),
        "{trace}"
    );
    assert!(
        trace.contains("  NAT44_IN2OUT_SLOW_PATH: sw_if_index 2, next index 0, session 0\n"),
        "{trace}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Stateful behaviour
// ---------------------------------------------------------------------------------------------

#[test]
fn deny_drops_counts_and_traces_the_drop() {
    let mut h = Harness::new(&policy_config());
    h.exec("trace add virtio-input 5");
    // Host → pod UDP without any session: the pod's local table denies it (rule 2).
    let pkt = udp_pkt(REMOTE_IP, POD_IP, 53, 40000);
    h.expect_drop(TAP0, from_host(&pkt), ACL_OUT, DENY);
    let recs = h.acl_records();
    assert_eq!(recs.len(), 2);
    let to_lookup = h.arc(ACL_IN, "ip4-lookup");
    assert!(recs[0].starts_with(&format!(
        "  acl-plugin: sw_if_index 2, next index {to_lookup}, action: 2, match: acl 3 rule 0"
    )));
    assert!(
        recs[1].starts_with(
            "  acl-plugin: sw_if_index 6, next index 0, action: 0, match: acl 0 rule 2 trace_bits 00000000\n  pkt info "
        ),
        "{}",
        recs[1]
    );
    let trace = h.exec("show trace");
    assert!(trace.contains("error-drop\n  acl-plugin-out-ip4-fa: ACL deny packets\n"));
    let errors = h.exec("show errors");
    assert!(errors
        .lines()
        .any(|l| l.contains(ACL_OUT) && l.ends_with(DENY) && l.trim_start().starts_with("1 ")));
    // The same from the host link address is permitted by rule 0; TCP to port 80 by rule 1.
    h.pass(TAP0, from_host(&udp_pkt(HOST_IP, POD_IP, 53, 40000)), TAP2);
    h.pass(
        TAP0,
        from_host(&tcp(REMOTE_IP, POD_IP, 5555, 80, TCP_SYN)),
        TAP2,
    );
    h.expect_drop(
        TAP0,
        from_host(&tcp(REMOTE_IP, POD_IP, 5555, 81, TCP_SYN)),
        ACL_OUT,
        DENY,
    );
}

#[test]
fn reflect_then_return_traffic_passes_with_the_session_index() {
    let mut h = Harness::new(&policy_config());
    // Three flows from the pod; each creates a session on tap2 (slots 0, 1, 2).
    for p in 0..3u16 {
        h.pass(
            TAP2,
            from_pod(&udp_pkt(POD_IP, REMOTE_IP, 40000 + p, 53)),
            TAP0,
        );
    }
    h.exec("trace add virtio-input 10");
    for p in (0..3u16).rev() {
        h.pass(
            TAP0,
            from_host(&udp_pkt(REMOTE_IP, POD_IP, 53, 40000 + p)),
            TAP2,
        );
    }
    let recs = h.acl_records();
    // Per reply: the tap0 input record (a new tap0 session) and the tap2 output session hit.
    let hits: Vec<&String> = recs
        .iter()
        .filter(|r| r.contains("sw_if_index 6,"))
        .collect();
    assert_eq!(hits.len(), 3);
    for (r, idx) in hits.iter().zip([2, 1, 0]) {
        assert!(
            r.contains(&format!(
                "action: 3, match: acl -1 rule {idx} trace_bits 80000000"
            )),
            "{r}"
        );
        assert!(r.contains(" 0412ffff00000006\n") || r.contains(" 0400ffff00000006\n"));
    }
    // More packets of the same flows on tap2 input hit the sessions too.
    h.exec("clear trace");
    h.exec("trace add virtio-input 1");
    h.pass(TAP2, from_pod(&udp_pkt(POD_IP, REMOTE_IP, 40001, 53)), TAP0);
    let recs = h.acl_records();
    assert!(recs[0].contains(
        "sw_if_index 6, next index 1, action: 3, match: acl -1 rule 1 trace_bits 80000000"
    ));
    assert_eq!(h.acl_count(ACL_IN, "existing session packets"), 1);
    // 3 replies on tap2 output, and the last request on tap0 output: the tap0 session its
    // reply created on tap0 input covers it.
    assert_eq!(h.acl_count(ACL_OUT, "existing session packets"), 4);
    assert_eq!(h.dp.worker.acl.len(), 6, "3 on tap2, 3 on tap0");
}

#[test]
fn return_traffic_without_a_session_is_denied_by_the_local_table() {
    let mut h = Harness::new(&policy_config());
    let reply = || from_host(&tcp(REMOTE_IP, POD_IP, 8080, 46310, TCP_SYN | TCP_ACK));
    h.expect_drop(TAP0, reply(), ACL_OUT, DENY);
    h.pass(
        TAP2,
        from_pod(&tcp(POD_IP, REMOTE_IP, 46310, 8080, TCP_SYN)),
        TAP0,
    );
    h.pass(TAP0, reply(), TAP2);
    // The session is per 5-tuple: another port, another source, or the reverse flow on the
    // other interface are judged by the rules.
    h.expect_drop(
        TAP0,
        from_host(&tcp(REMOTE_IP, POD_IP, 8081, 46310, TCP_ACK)),
        ACL_OUT,
        DENY,
    );
    h.expect_drop(
        TAP0,
        from_host(&tcp(ip("10.20.0.3"), POD_IP, 8080, 46310, TCP_ACK)),
        ACL_OUT,
        DENY,
    );
    h.expect_drop(
        TAP0,
        from_host(&udp_pkt(REMOTE_IP, POD_IP, 8080, 46310)),
        ACL_OUT,
        DENY,
    );
}

#[test]
fn icmp_echo_is_reflected_by_request_type_and_identifier() {
    let mut h = Harness::new(&policy_config());
    // Unsolicited echo request from the host: denied by the pod's table.
    h.expect_drop(
        TAP0,
        from_host(&echo(REMOTE_IP, POD_IP, true, 9)),
        ACL_OUT,
        DENY,
    );
    // The pod pings; the reply with the same identifier passes, another identifier does not.
    h.pass(TAP2, from_pod(&echo(POD_IP, REMOTE_IP, true, 0x77)), TAP0);
    h.exec("trace add virtio-input 1");
    h.pass(TAP0, from_host(&echo(REMOTE_IP, POD_IP, false, 0x77)), TAP2);
    let recs = h.acl_records();
    // Slot 0 is the tap0 session the unsolicited request made.
    assert!(recs[1].contains("action: 3, match: acl -1 rule 1 trace_bits 80000000"));
    assert!(recs[1].ends_with(
        "output sw_if_index 6 (lsb16 6) l3 ip4 10.20.0.2 -> 10.1.1.3 l4 proto 1 l4_valid 1 port 0 -> 0 tcp flags (invalid) 00 rsvd 0"
    ));
    h.expect_drop(
        TAP0,
        from_host(&echo(REMOTE_IP, POD_IP, false, 0x78)),
        ACL_OUT,
        DENY,
    );
    // An echo request from the host with the pod's identifier is not a reply.
    h.expect_drop(
        TAP0,
        from_host(&echo(REMOTE_IP, POD_IP, true, 0x77)),
        ACL_OUT,
        DENY,
    );
    // Other ICMP (destination unreachable) never creates or uses sessions.
    let unreach = Ip4::new(POD_IP, REMOTE_IP, 1, icmp_raw(3, 3, [0; 4], &[0; 28])).bytes();
    h.exec("clear trace");
    h.exec("trace add virtio-input 1");
    h.pass(TAP2, from_pod(&unreach), TAP0);
    let recs = h.acl_records();
    assert!(
        recs[0].contains("action: 1, match: acl 3 rule 0"),
        "{}",
        recs[0]
    );
}

fn udp_timeouts(udp_idle: u32) -> DataplaneConfig {
    let mut cfg = policy_config();
    cfg.acl.timeouts = AclTimeouts {
        udp_idle,
        ..AclTimeouts::default()
    };
    cfg
}

/// VPP's stateful UDP test with a 1 s idle timeout: request and reply pass, keep-alives keep
/// the session, an idle reply is dropped.
#[test]
fn udp_idle_timeout_keepalive_and_expiry() {
    let mut h = virtual_harness(&udp_timeouts(1), 10 * SEC);
    let out = || from_pod(&udp_pkt(POD_IP, REMOTE_IP, 40000, 53));
    let back = || from_host(&udp_pkt(REMOTE_IP, POD_IP, 53, 40000));
    h.pass(TAP2, out(), TAP0);
    h.dp.graph.clock.set_ns(10 * SEC + SEC / 2);
    h.pass(TAP0, back(), TAP2);
    h.dp.graph.clock.set_ns(11 * SEC + SEC / 2 - 1000);
    h.pass(TAP2, out(), TAP0); // keep-alive, 0.99 s after the reply
    h.dp.graph.clock.set_ns(12 * SEC + SEC / 3);
    h.pass(TAP0, back(), TAP2); // 0.83 s after the keep-alive
    h.dp.graph.clock.set_ns(13 * SEC + SEC / 2);
    h.expect_drop(TAP0, back(), ACL_OUT, DENY); // idle for 1.17 s
    assert!(h.dp.worker.acl.counters.expired >= 1);
    // A new request opens a new session and replies pass again.
    h.pass(TAP2, out(), TAP0);
    h.pass(TAP0, back(), TAP2);
}

#[test]
fn an_idle_flow_expires_behind_an_active_one_without_traffic() {
    let mut h = virtual_harness(&udp_timeouts(1), 10 * SEC);
    let flow = |p: u16| from_pod(&udp_pkt(POD_IP, REMOTE_IP, p, 53));
    h.pass(TAP2, flow(1000), TAP0); // A, first in the FIFO
    h.pass(TAP2, flow(2000), TAP0); // B
    h.dp.graph.clock.set_ns(10 * SEC + SEC / 2);
    h.pass(TAP2, flow(1000), TAP0); // A is active, B is not
    assert_eq!(h.dp.worker.acl.len(), 2);
    // No traffic: once the FIFO heads are due, the per-loop sweep requeues A (active since it
    // was queued) and deletes B behind it.
    h.dp.graph.clock.set_ns(11 * SEC + SEC / 5);
    h.dp.run_once();
    let left: Vec<u16> = h.dp.worker.acl.sessions().map(|s| s.sport).collect();
    assert_eq!(left, vec![1000]);
    assert_eq!(h.dp.worker.acl.counters.requeued, 1);
    let show = h.exec("show acl-plugin sessions");
    assert!(
        show.contains("Sessions total: add 2 - del 1 = 1\n"),
        "{show}"
    );
    assert!(
        show.contains("sw_if_index 6: add 2 - del 1 = 1 (tap2)"),
        "{show}"
    );
    // And A goes too once idle.
    h.dp.graph.clock.set_ns(11 * SEC + SEC * 3 / 5);
    h.dp.run_once();
    assert!(h.dp.worker.acl.is_empty());
}

#[test]
fn clear_sessions_makes_replies_judged_by_rules_again() {
    let mut h = Harness::new(&policy_config());
    h.pass(TAP2, from_pod(&udp_pkt(POD_IP, REMOTE_IP, 40000, 53)), TAP0);
    h.pass(
        TAP0,
        from_host(&udp_pkt(REMOTE_IP, POD_IP, 53, 40000)),
        TAP2,
    );
    // `clear acl-plugin sessions` (the CLI verb is vswitch glue; the state call is this).
    h.dp.worker.acl.clear_sessions();
    h.expect_drop(
        TAP0,
        from_host(&udp_pkt(REMOTE_IP, POD_IP, 53, 40000)),
        ACL_OUT,
        DENY,
    );
}

/// SYN + SYN-ACK only: transient (120 s). A full handshake: established, survives the transient
/// timeout, expires after the TCP idle timeout. FIN moves it back to transient.
#[test]
fn tcp_transient_and_established_timeouts() {
    let mut h = virtual_harness(&policy_config(), 10 * SEC);
    let from_pod_tcp =
        |sport: u16, flags: u8| from_pod(&tcp(POD_IP, REMOTE_IP, sport, 8080, flags));
    let from_srv = |dport: u16, flags: u8| from_host(&tcp(REMOTE_IP, POD_IP, 8080, dport, flags));

    // Half-open: SYN, SYN-ACK.
    h.pass(TAP2, from_pod_tcp(1111, TCP_SYN), TAP0);
    h.pass(TAP0, from_srv(1111, TCP_SYN | TCP_ACK), TAP2);
    // Full handshake on another flow.
    h.pass(TAP2, from_pod_tcp(2222, TCP_SYN), TAP0);
    h.pass(TAP0, from_srv(2222, TCP_SYN | TCP_ACK), TAP2);
    h.exec("trace add virtio-input 1");
    h.pass(TAP2, from_pod_tcp(2222, TCP_ACK), TAP0);
    let recs = h.acl_records();
    assert!(
        recs[0].contains("action: 3, match: acl -1 rule 2 trace_bits 80010302"),
        "transient (3) -> tcp idle (2): {}",
        recs[0]
    );
    assert_eq!(h.acl_count(ACL_IN, "restart session timer"), 1);

    h.dp.graph.clock.set_ns(10 * SEC + 121 * SEC);
    h.expect_drop(TAP0, from_srv(1111, TCP_ACK), ACL_OUT, DENY);
    h.pass(TAP0, from_srv(2222, TCP_ACK | TCP_PSH), TAP2);

    // Established idle timeout: 24 h.
    let t = 10 * SEC + 121 * SEC;
    h.dp.graph.clock.set_ns(t + 86_000 * SEC);
    h.pass(TAP0, from_srv(2222, TCP_ACK), TAP2);
    h.dp.graph.clock.set_ns(t + 86_000 * SEC + 86_401 * SEC);
    h.expect_drop(TAP0, from_srv(2222, TCP_ACK), ACL_OUT, DENY);

    // FIN: established → transient, 120 s.
    let t = 200_000 * SEC;
    h.dp.graph.clock.set_ns(t);
    h.pass(TAP2, from_pod_tcp(3333, TCP_SYN), TAP0);
    h.pass(TAP0, from_srv(3333, TCP_SYN | TCP_ACK), TAP2);
    h.pass(TAP2, from_pod_tcp(3333, TCP_ACK), TAP0);
    h.exec("clear trace");
    h.exec("trace add virtio-input 1");
    h.pass(TAP2, from_pod_tcp(3333, TCP_FIN | TCP_ACK), TAP0);
    assert!(h.acl_records()[0].contains("trace_bits 80010203"));
    h.dp.graph.clock.set_ns(t + 100 * SEC);
    h.pass(TAP0, from_srv(3333, TCP_FIN | TCP_ACK), TAP2);
    h.dp.graph.clock.set_ns(t + 221 * SEC);
    h.expect_drop(TAP0, from_srv(3333, TCP_ACK), ACL_OUT, DENY);

    // RST, too.
    h.pass(TAP2, from_pod_tcp(4444, TCP_SYN), TAP0);
    h.pass(TAP0, from_srv(4444, TCP_SYN | TCP_ACK), TAP2);
    h.pass(TAP2, from_pod_tcp(4444, TCP_ACK), TAP0);
    h.pass(TAP0, from_srv(4444, TCP_RST), TAP2);
    let s =
        h.dp.worker
            .acl
            .sessions()
            .find(|s| s.sport == 4444)
            .unwrap();
    assert_eq!(s.class.name(), "tcp transient");
}

/// A full table refuses new reflective flows (counted), keeps established ones, and keeps its
/// last `reserved_for_control` % for control traffic (flows with `tap0`).
#[test]
fn full_table_refuses_new_flows_but_not_established_or_control_ones() {
    let mut cfg = two_pods_config();
    cfg.acl.acls = vec![
        acl("reflect", vec![AclRule::any(Action::PermitReflect)]),
        acl("deny", vec![AclRule::any(Action::Deny)]),
    ];
    cfg.acl.bindings = vec![bind(TAP2, &[0], &[1])];
    cfg.acl.max_sessions = 10;
    cfg.acl.reserved_for_control = 20;
    let mut h = Harness::new(&cfg);
    let to_pod2 = |p: u16| from_pod(&udp_pkt(POD_IP, POD2_IP, p, 53));
    let to_host = |p: u16| from_pod(&udp_pkt(POD_IP, REMOTE_IP, p, 53));
    for p in 0..8 {
        h.pass(TAP2, to_pod2(1000 + p), TAP3);
    }
    h.exec("trace add virtio-input 1");
    h.expect_drop(TAP2, to_pod2(2000), ACL_IN, TOO_MANY);
    let recs = h.acl_records();
    assert!(
        recs[0].contains("next index 0, action: 0, match: acl 0 rule 0"),
        "{}",
        recs[0]
    );
    assert!(h
        .exec("show trace")
        .contains("  acl-plugin-in-ip4-fa: too many sessions to add new\n"));
    // Established flows are unaffected, both ways.
    h.pass(TAP2, to_pod2(1003), TAP3);
    let reply = from_eth_pod2(&udp_pkt(POD2_IP, POD_IP, 53, 1003));
    h.pass(TAP3, reply, TAP2);
    // Control traffic (to the host through tap0) still gets the reserved 2 sessions.
    h.pass(TAP2, to_host(3000), TAP0);
    h.pass(TAP2, to_host(3001), TAP0);
    h.expect_drop(TAP2, to_host(3002), ACL_IN, TOO_MANY);
    let show = h.exec("show acl-plugin sessions");
    assert!(
        show.contains("Session table: 10 of 10 in use, 2 reserved for control traffic, 2 refused (table full)"),
        "{show}"
    );
    assert!(show.contains(", control\n"));
    assert_eq!(h.drops_of(ACL_IN, TOO_MANY), 2);
}

fn from_eth_pod2(ip_packet: &[u8]) -> Vec<u8> {
    eth(TAP3_MAC, POD2_MAC, 0x0800, ip_packet)
}

#[test]
fn full_table_recycles_the_oldest_transient_tcp_session() {
    let mut cfg = two_pods_config();
    cfg.acl.acls = vec![
        acl("reflect", vec![AclRule::any(Action::PermitReflect)]),
        acl("deny", vec![AclRule::any(Action::Deny)]),
    ];
    cfg.acl.bindings = vec![bind(TAP2, &[0], &[1])];
    cfg.acl.max_sessions = 4;
    cfg.acl.reserved_for_control = 0;
    let mut h = Harness::new(&cfg);
    let syn = |p: u16| from_pod(&tcp(POD_IP, POD2_IP, p, 80, TCP_SYN));
    let syn_ack = |p: u16| {
        eth(
            TAP3_MAC,
            POD2_MAC,
            0x0800,
            &tcp(POD2_IP, POD_IP, 80, p, TCP_SYN | TCP_ACK),
        )
    };
    for p in 0..4 {
        h.pass(TAP2, syn(1000 + p), TAP3);
    }
    h.pass(TAP2, syn(2000), TAP3);
    assert_eq!(h.dp.worker.acl.counters.recycled, 1);
    h.expect_drop(TAP3, syn_ack(1000), ACL_OUT, DENY);
    h.pass(TAP3, syn_ack(1001), TAP2);
    h.pass(TAP3, syn_ack(2000), TAP2);
    assert!(h.exec("show acl-plugin sessions").contains("recycled 1"));
}

#[test]
fn policy_changes_keep_sessions_unless_the_interface_loses_its_acls() {
    let mut cfg = policy_config();
    let mut h = Harness::new(&cfg);
    let out = || from_pod(&udp_pkt(POD_IP, REMOTE_IP, 40000, 53));
    let back = || from_host(&udp_pkt(REMOTE_IP, POD_IP, 53, 40000));
    h.pass(TAP2, out(), TAP0);
    // New rules in the local table: the existing connection survives.
    cfg.acl.acls[0].rules.insert(
        0,
        rule(Action::Deny, "10.20.0.0/16", "0.0.0.0/0", 0, ALL, ALL),
    );
    h.dp.apply(&cfg).unwrap();
    h.pass(TAP0, back(), TAP2);
    assert_eq!(
        h.dp.worker
            .acl
            .sessions()
            .filter(|s| s.sw_if_index == TAP2)
            .count(),
        1
    );
    // tap2 loses all its ACLs: its sessions go.
    let mut unbound = cfg.clone();
    unbound.acl.bindings.retain(|b| b.sw_if_index != TAP2);
    h.dp.apply(&unbound).unwrap();
    assert_eq!(
        h.dp.worker
            .acl
            .sessions()
            .filter(|s| s.sw_if_index == TAP2)
            .count(),
        0
    );
    assert_eq!(h.dp.worker.acl.counters.stale_removed, 1);
    h.pass(TAP0, back(), TAP2); // no ACL on tap2 at all now
                                // Bound again: nothing was resurrected, replies need a new request.
    h.dp.apply(&cfg).unwrap();
    h.expect_drop(TAP0, back(), ACL_OUT, DENY);
}

// ---------------------------------------------------------------------------------------------
// 3. Stateless cases (VPP test_acl_plugin)
// ---------------------------------------------------------------------------------------------

/// Sends `frame` from the pod and checks it passes (`true`) or is denied by the input ACL.
fn check(h: &mut Harness, pkt: &[u8], pass: bool, what: &str) {
    if pass {
        let sent = h.send(TAP2, from_pod(pkt));
        assert_eq!(
            sent.len(),
            1,
            "{what}: expected to pass; drops {:?}",
            h.drop_reasons()
        );
    } else {
        h.expect_drop(TAP2, from_pod(pkt), ACL_IN, DENY);
    }
}

fn tcp_to(sport: u16, dport: u16) -> Vec<u8> {
    tcp(POD_IP, REMOTE_IP, sport, dport, TCP_SYN)
}

fn udp_to(sport: u16, dport: u16) -> Vec<u8> {
    udp_pkt(POD_IP, REMOTE_IP, sport, dport)
}

fn icmp_to(t: u8, code: u8) -> Vec<u8> {
    Ip4::new(POD_IP, REMOTE_IP, 1, icmp_raw(t, code, [0, 1, 0, 1], b"xx")).bytes()
}

#[test]
fn stateless_permit_and_deny_by_protocol() {
    // 0002: permit UDP, permit TCP; nothing else (no match = deny).
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 17, ALL, ALL),
        rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 6, ALL, ALL),
    ]));
    check(&mut h, &udp_to(1, 2), true, "udp");
    check(&mut h, &tcp_to(1, 2), true, "tcp");
    check(&mut h, &icmp_to(8, 0), false, "icmp");
    // 0003 / 0013: deny UDP, permit all.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Deny, "0.0.0.0/0", "0.0.0.0/0", 17, ALL, ALL),
        AclRule::any(Action::Permit),
    ]));
    check(&mut h, &udp_to(1, 2), false, "udp");
    check(&mut h, &tcp_to(1, 2), true, "tcp");
    // 0012: deny TCP, permit all.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Deny, "0.0.0.0/0", "0.0.0.0/0", 6, ALL, ALL),
        AclRule::any(Action::Permit),
    ]));
    check(&mut h, &tcp_to(1, 2), false, "tcp");
    check(&mut h, &udp_to(1, 2), true, "udp");
}

#[test]
fn stateless_icmp_type_and_code() {
    // 0004: permit ICMP echo request (type 8 in the source range, code 0 in the destination
    // range), deny the rest.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 1, (8, 8), (0, 0)),
        AclRule::any(Action::Deny),
    ]));
    check(&mut h, &icmp_to(8, 0), true, "echo");
    check(&mut h, &icmp_to(8, 1), false, "echo code 1");
    check(&mut h, &icmp_to(13, 0), false, "timestamp");
    // 0006: deny ICMP types 3..5 any code, permit all.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Deny, "0.0.0.0/0", "0.0.0.0/0", 1, (3, 5), ALL),
        AclRule::any(Action::Permit),
    ]));
    check(&mut h, &icmp_to(3, 3), false, "unreachable");
    check(&mut h, &icmp_to(5, 1), false, "redirect");
    check(&mut h, &icmp_to(8, 0), true, "echo");
}

#[test]
fn stateless_ports_and_ranges() {
    // 0008/0015: TCP source range and destination range, deny all.
    let mut h = Harness::new(&stateless_config(vec![
        rule(
            Action::Permit,
            "0.0.0.0/0",
            "0.0.0.0/0",
            6,
            (1024, 65535),
            (80, 90),
        ),
        // A range pair too wide to expand (checked as ranges).
        rule(
            Action::Permit,
            "0.0.0.0/0",
            "0.0.0.0/0",
            17,
            (1000, 2000),
            (3001, 4099),
        ),
        rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 17, ALL, (53, 53)),
        AclRule::any(Action::Deny),
    ]));
    check(&mut h, &tcp_to(40000, 85), true, "tcp in ranges");
    check(&mut h, &tcp_to(40000, 80), true, "tcp low edge");
    check(&mut h, &tcp_to(1024, 90), true, "tcp high edge");
    check(&mut h, &tcp_to(40000, 91), false, "tcp dport above");
    check(&mut h, &tcp_to(1023, 85), false, "tcp sport below");
    check(&mut h, &udp_to(40000, 85), false, "udp on the tcp rule");
    check(&mut h, &udp_to(1500, 3500), true, "udp in wide ranges");
    check(&mut h, &udp_to(999, 3500), false, "udp sport below");
    check(&mut h, &udp_to(2000, 4100), false, "udp dport above");
    check(&mut h, &udp_to(7, 53), true, "udp 53");
    // 0018/0019: deny one port, permit the rest.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Deny, "0.0.0.0/0", "0.0.0.0/0", 6, ALL, (22, 22)),
        rule(
            Action::Deny,
            "0.0.0.0/0",
            "0.0.0.0/0",
            17,
            (5000, 5000),
            ALL,
        ),
        AclRule::any(Action::Permit),
    ]));
    check(&mut h, &tcp_to(40000, 22), false, "tcp 22");
    check(&mut h, &tcp_to(40000, 23), true, "tcp 23");
    check(&mut h, &udp_to(5000, 1), false, "udp from 5000");
    check(&mut h, &udp_to(5001, 1), true, "udp from 5001");
    // Prefixes: source and destination (host bits of the rule address are ignored).
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Permit, "10.1.1.77/24", "10.20.0.0/30", 0, ALL, ALL),
        AclRule::any(Action::Deny),
    ]));
    check(&mut h, &udp_to(1, 2), true, "in both prefixes");
    check(
        &mut h,
        &udp_pkt(POD_IP, ip("10.20.0.4"), 1, 2),
        false,
        "dst outside /30",
    );
}

#[test]
fn stateless_zero_length_udp_and_ip_options() {
    // 0022: a UDP datagram with no payload is classified on its ports.
    let mut h = Harness::new(&stateless_config(vec![
        rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 17, ALL, (53, 53)),
        AclRule::any(Action::Deny),
    ]));
    let empty = Ip4::udp(POD_IP, REMOTE_IP, 1234, 53, b"").bytes();
    assert_eq!(empty.len(), 28);
    check(&mut h, &empty, true, "zero-length udp");
    let empty_other = Ip4::udp(POD_IP, REMOTE_IP, 1234, 54, b"").bytes();
    check(&mut h, &empty_other, false, "zero-length udp, other port");
    // The ports are found after IP options.
    let with_options = Ip4::udp(POD_IP, REMOTE_IP, 1234, 53, b"x")
        .options(options_for_ihl(8))
        .bytes();
    check(&mut h, &with_options, true, "udp after options");
    // A UDP header cut short: no ports, so only protocol-any rules can match (deny).
    let mut short = Ip4::new(POD_IP, REMOTE_IP, 17, vec![0, 1, 0, 53]).bytes();
    fix_ip_checksum(&mut short);
    check(&mut h, &short, false, "truncated udp");
}

#[test]
fn stateless_tcp_flags() {
    // Permit only SYN without ACK (value 0x02, mask 0x12).
    let mut r = rule(Action::Permit, "0.0.0.0/0", "0.0.0.0/0", 6, ALL, ALL);
    r.tcp_flags = (TCP_SYN, TCP_SYN | TCP_ACK);
    let mut h = Harness::new(&stateless_config(vec![r, AclRule::any(Action::Deny)]));
    check(&mut h, &tcp(POD_IP, REMOTE_IP, 1, 2, TCP_SYN), true, "syn");
    check(
        &mut h,
        &tcp(POD_IP, REMOTE_IP, 1, 2, TCP_SYN | TCP_ACK),
        false,
        "syn-ack",
    );
    check(&mut h, &tcp(POD_IP, REMOTE_IP, 1, 2, TCP_ACK), false, "ack");
}

/// 0020/0021: non-first fragments carry no ports; a UDP deny blocks them even though a later
/// rule permits everything, while the first fragment is judged on its ports.
#[test]
fn stateless_non_first_fragments_blocked_by_a_udp_deny() {
    let mut h = Harness::new(&stateless_config(vec![
        rule(
            Action::Deny,
            "0.0.0.0/0",
            "0.0.0.0/0",
            17,
            ALL,
            (5000, 6000),
        ),
        AclRule::any(Action::Permit),
    ]));
    let first = fragment(udp_pkt(POD_IP, REMOTE_IP, 1234, 53), 0, true);
    check(&mut h, &first, true, "first fragment, port 53");
    let first_denied = fragment(udp_pkt(POD_IP, REMOTE_IP, 1234, 5001), 0, true);
    check(&mut h, &first_denied, false, "first fragment, port 5001");
    h.exec("trace add virtio-input 1");
    let later = fragment(udp_pkt(POD_IP, REMOTE_IP, 1234, 53), 185, false);
    check(&mut h, &later, false, "non-first udp fragment");
    let recs = h.acl_records();
    assert!(
        recs[0].contains("action: 0, match: acl 0 rule 0"),
        "{}",
        recs[0]
    );
    assert!(
        recs[0].ends_with(
            "input sw_if_index 6 (lsb16 6) l3 ip4 non-initial fragment 10.1.1.3 -> 10.20.0.2 l4 proto 17 l4_valid 0 port 0 -> 0 tcp flags (invalid) 00 rsvd 0"
        ),
        "{}",
        recs[0]
    );
    assert!(
        recs[0].contains(" 0006001100000000 0a00ffff00000006\n"),
        "{}",
        recs[0]
    );
    let tcp_later = fragment(tcp_to(1234, 5001), 185, false);
    check(&mut h, &tcp_later, true, "non-first tcp fragment");
}

// ---------------------------------------------------------------------------------------------
// 4. show acl-plugin
// ---------------------------------------------------------------------------------------------

#[test]
fn show_acl_plugin_commands() {
    let mut h = virtual_harness(&policy_config(), 5 * SEC);
    h.pass(TAP2, from_pod(&seed_syn()), TAP0);
    h.pass(TAP0, from_host(&seed_syn_ack()), TAP2);
    let acls = h.exec("show acl-plugin acl");
    assert!(acls.starts_with(
        "acl-index 0 count 3 tag {vecnet-policy-1a2b3c4d5e6f7081}\n\
         \x20    0: ipv4 permit src 172.30.1.2/32 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\
         \x20    1: ipv4 permit src 0.0.0.0/0 dst 10.1.1.3/32 proto 6 sport 0-65535 dport 80\n\
         \x20    2: ipv4 deny src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\
         \x20 applied outbound on sw_if_index: 6\n\
         acl-index 1 count 1 tag {vecnet-policy-unused}\n"
    ), "{acls}");
    assert!(acls.ends_with(
        "acl-index 3 count 1 tag {vecnet-policy-REFLECTION}\n\
         \x20    0: ipv4 permit+reflect src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\
         \x20 applied inbound on sw_if_index: 2, 6\n"
    ), "{acls}");
    assert_eq!(
        h.exec("show acl-plugin interface"),
        "sw_if_index 0:\nsw_if_index 2:\n  input acl(s): 3\n  output acl(s): 2\nsw_if_index 6:\n  input acl(s): 3\n  output acl(s): 0\n"
    );
    assert!(h
        .exec("show acl-plugin acl index 2")
        .starts_with("acl-index 2 count 5 tag {vecnet-policy-NODE-GLOBAL}\n"));
    h.dp.graph.clock.set_ns(7 * SEC);
    h.dp.run_once();
    let s = h.exec("show acl-plugin sessions");
    for want in [
        "Sessions total: add 2 - del 0 = 2\n",
        "Session table: 2 of 1048576 in use, 52428 reserved for control traffic, 0 refused (table full)\n",
        "Timeouts: udp idle 600 s, tcp idle 86400 s, tcp transient 120 s\n",
        "    sw_if_index 2: add 1 - del 0 = 1 (tap0)\n",
        "    sw_if_index 6: add 1 - del 0 = 1 (tap2)\n",
        "  connection timeout type lists: udp idle 0, tcp idle 0, tcp transient 2\n",
        "    0: sw_if_index 6 input tcp 10.1.1.3:46310 -> 10.20.0.2:8080 flags seen in 0x02 out 0x12, tcp transient 120 s, last active 2.000s ago, age 2.000s, control\n",
        "    1: sw_if_index 2 input tcp 10.20.0.2:8080 -> 10.1.1.3:46310 flags seen in 0x12 out 0x00, tcp transient 120 s, last active 2.000s ago, age 2.000s, control\n",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert!(h
        .exec("show acl-plugin sessions max 1")
        .contains("  (1 more sessions not shown)\n"));
    assert!(h.dp.exec("show acl-plugin bogus").is_err());
    for out in [acls, s] {
        for l in out.lines() {
            assert!(!l.ends_with(' '), "trailing space: {l:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. No allocation per packet
// ---------------------------------------------------------------------------------------------

/// Counts this thread's allocations only, so that the other tests of this binary running
/// concurrently do not disturb the count.
struct ThreadCounting;

thread_local! {
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: delegates every call to the system allocator unchanged; only counts (in a
// thread-local `Cell` with a const initialiser and no destructor, which never allocates).
unsafe impl std::alloc::GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

/// 1000 flows through a reflective ACL (a 512-slot table, so sessions are recycled all the
/// time) and a 1000-rule output table whose matching rule is the last: nothing allocates.
#[test]
fn steady_state_with_sessions_and_a_large_table_allocates_nothing() {
    const PACKETS: u64 = 100_000;
    let mut cfg = routed_config(1000);
    let mut global: Vec<AclRule> = (0..999u32)
        .map(|i| {
            let mut r = rule(
                Action::Deny,
                &format!("10.{}.{}.0/24", 100 + i % 50, i / 50),
                "0.0.0.0/0",
                [6u8, 17][i as usize % 2],
                ALL,
                ((i % 1000) as u16 + 1, (i % 1000) as u16 + 1),
            );
            if i % 7 == 0 {
                r.dst = prefix(&format!("192.168.{}.0/24", i % 256));
            }
            r
        })
        .collect();
    global.push(AclRule::any(Action::Permit));
    cfg.acl.acls = vec![
        acl("reflect", vec![AclRule::any(Action::PermitReflect)]),
        acl("global", global),
    ];
    cfg.acl.bindings = vec![bind(6, &[0], &[]), bind(2, &[], &[1])];
    cfg.acl.max_sessions = 512;
    let at_start = THREAD_ALLOCS.with(|c| c.get());
    let mut pg = routed_generator(1000);
    pg.remaining = PACKETS + 20 * 256;
    let opts = DataplaneOptions {
        buffers: 2048,
        trace_capacity: 64,
        clock: Clock::real(),
    };
    let mut dp = vecnet_vswitch::Dataplane::new(opts, Box::new(pg)).unwrap();
    dp.apply(&cfg).unwrap();
    for _ in 0..20 {
        dp.run_once();
    }
    let before = THREAD_ALLOCS.with(|c| c.get());
    assert!(before > at_start, "the counting allocator does not count");
    let mut n = 0;
    while n < PACKETS {
        let got = dp.run_once() as u64;
        assert!(got > 0, "generator ran dry at {n}");
        n += got;
    }
    let allocs = THREAD_ALLOCS.with(|c| c.get()) - before;
    assert_eq!(allocs, 0, "{allocs} allocations for {n} packets");
    assert_eq!(
        dp.graph.error_count(ACL_OUT, "ACL permit packets"),
        n + 20 * 256
    );
    let st = &dp.worker.acl;
    assert_eq!(st.len(), 512);
    assert!(st.counters.recycled > 90_000, "{:?}", st.counters);
    assert_eq!(dp.pool.free_count(), dp.pool.capacity());
}
