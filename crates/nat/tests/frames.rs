//! The NAT nodes handle a frame in passes (parse and hash everything, prefetch, then look up and
//! translate in order). Whatever is in a frame, the result must be what the packets would get one
//! at a time: sessions created by an earlier packet of the frame are hit by later ones, sessions
//! that expire, are recycled or refused mid-frame behave the same — Service flows, hairpin,
//! dynamic SNAT to the Internet through the uplink's output feature, and clients on the Internet
//! reaching Services through the uplink, whose replies pass the output feature untranslated. This
//! drives random traffic through the real graph twice — as full frames, and one packet per frame
//! — and compares the output frames, the trace, the error counters and the session table.

use std::net::Ipv4Addr;

use vecnet_graph::{Clock, VirtioNetHdr};
use vecnet_nat::{Backend, BackendSet, NatConfig, Proto, StaticMapping};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::*;
use vecnet_wire::checksum::checksum;
use vecnet_wire::MacAddr;

const TAP0: u32 = 2;
const TAP2: u32 = 6;
const TAP3: u32 = 7;
const TAP0_MAC: [u8; 6] = [0x01, 0x23, 0x45, 0x67, 0x89, 0x42];
const TAP2_MAC: [u8; 6] = [0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f];
const TAP3_MAC: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 3];
const UPLINK: u32 = 3;
const UPLINK_MAC: [u8; 6] = [0x02, 0xfe, 0, 0, 0, 0x99];
/// The node IP on the uplink: the main pool of dynamic SNAT.
const NODE_IP: &str = "192.0.2.1";
/// A server on the Internet, behind the uplink's gateway.
const SERVER: &str = "203.0.113.10";
/// An external IP of a Service, reached from the Internet through the uplink.
const EXTERNAL_IP: &str = "192.0.2.50";
/// Clients on the Internet, behind the uplink's gateway.
const CLIENTS: [&str; 2] = ["198.51.100.7", "198.51.100.8"];

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
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
        tag: format!("default/svc-{vip}"),
    }
}

fn twice_nat(m: StaticMapping) -> StaticMapping {
    StaticMapping {
        twice_nat_external: true,
        ..m
    }
}

/// The seed node: tap0 (host link, in+out), tap2 (client pod 10.1.1.3, out), tap3 (pod 10.1.1.4
/// backing services, in+out), an uplink with the node IP (out + output feature: dynamic SNAT to
/// the Internet); a small session table so that it fills up mid-frame.
fn config(max_sessions: u32) -> DataplaneConfig {
    let mut cfg = DataplaneConfig::default();
    let mut tap0 = InterfaceConfig::new("tap0", TAP0, InterfaceKind::Host, MacAddr(TAP0_MAC));
    tap0.ip4 = vec![(ip("172.30.1.1"), 24)];
    tap0.nat_inside = true;
    tap0.nat_outside = true;
    let mut tap2 = InterfaceConfig::new("tap2", TAP2, InterfaceKind::Pod, MacAddr(TAP2_MAC));
    tap2.ip4 = vec![(ip("10.1.1.1"), 32)];
    tap2.nat_outside = true;
    let mut tap3 = InterfaceConfig::new("tap3", TAP3, InterfaceKind::Pod, MacAddr(TAP3_MAC));
    tap3.ip4 = vec![(ip("10.1.1.1"), 32)];
    tap3.nat_inside = true;
    tap3.nat_outside = true;
    let mut uplink = InterfaceConfig::new(
        "host-eth0",
        UPLINK,
        InterfaceKind::Uplink,
        MacAddr(UPLINK_MAC),
    );
    uplink.ip4 = vec![(ip(NODE_IP), 24)];
    (uplink.nat_outside, uplink.nat_output) = (true, true);
    cfg.interfaces = vec![tap0, tap2, tap3, uplink];
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: UPLINK,
        ip: ip("192.0.2.254"),
        mac: MacAddr([0x02, 0, 0, 0, 0, 0xfe]),
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
    for (sw, pod) in [(TAP2, "10.1.1.3"), (TAP3, "10.1.1.4")] {
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
        sw_if_index: TAP0,
        ip: ip("172.30.1.2"),
        mac: MacAddr([0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51]),
    });
    cfg.routes.push(RouteConfig::new(
        ip("10.20.0.0"),
        24,
        Path::Attached {
            next_hop: ip("172.30.1.2"),
            sw_if_index: TAP0,
        },
    ));
    cfg.routes
        .push(RouteConfig::new(ip("10.96.0.0"), 12, Path::Reject));
    let backends = ["10.20.0.2", "10.20.0.3", "10.20.0.4"]
        .map(|b| backend(b, 8080))
        .to_vec();
    cfg.nat = NatConfig {
        mappings: vec![
            mapping(
                "10.104.221.85",
                80,
                Proto::Tcp,
                BackendSet::Backends(backends),
            ),
            mapping(
                "10.96.0.20",
                80,
                Proto::Tcp,
                BackendSet::Backends(vec![backend("10.1.1.4", 8080)]),
            ),
            mapping(
                "10.96.0.53",
                53,
                Proto::Udp,
                BackendSet::Backends(vec![backend("10.1.1.4", 5353)]),
            ),
            mapping("10.96.0.30", 53, Proto::Udp, BackendSet::Reject),
            // Reached from the Internet: an external IP and a NodePort on the node IP, served
            // by the pod on tap3, with ETP=Cluster (twice-NAT to the NAT loopback). (Not
            // ETP=Local here: a reply straight to a client that misses its session, say
            // recycled in a full table, is a new flow to the Internet, whose session made by the
            // output feature recycles the session of a later reply in the frame: all of a frame
            // meets nat44-in2out before any of it meets the output feature — the graph's order.
            // A reply to the NAT loopback that misses is dropped by the route instead.)
            twice_nat(mapping(
                EXTERNAL_IP,
                80,
                Proto::Tcp,
                BackendSet::Backends(vec![backend("10.1.1.4", 8080)]),
            )),
            twice_nat(mapping(
                NODE_IP,
                30080,
                Proto::Tcp,
                BackendSet::Backends(vec![backend("10.1.1.4", 8080)]),
            )),
        ],
        pool: vec![ip(NODE_IP)],
        twice_nat_pool: vec![ip("10.1.1.254")],
        internal_prefixes: vec![(ip("10.1.0.0"), 16)],
        max_sessions,
        ..NatConfig::default()
    };
    cfg
}

fn dataplane(cfg: &DataplaneConfig) -> Dataplane {
    let opts = DataplaneOptions {
        buffers: 1024,
        trace_capacity: 100_000,
        // Time moves only when the test moves it: both runs see the same timestamps.
        clock: Clock::virtual_at(1_000_000_000, 0),
    };
    let mut dp = Dataplane::new(opts, Box::new(MemIo::new())).unwrap();
    dp.apply(cfg).unwrap();
    dp.trace_add("virtio-input", 5000).unwrap();
    dp
}

/// Ethernet + IPv4 + TCP (`Some(flags)`) or UDP, valid IPv4 checksum; `l4_len` cuts the L4
/// header short when smaller than the header.
#[allow(clippy::too_many_arguments)]
fn frame(
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    tcp: Option<u8>,
    ttl: u8,
    truncated: bool,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let proto = match tcp {
        Some(flags) => {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0x72, 0x10, 0, 0, 0, 0]);
            l4.extend_from_slice(b"data");
            6
        }
        None => {
            l4.extend_from_slice(&[0, 12, 0, 0]);
            l4.extend_from_slice(b"dnsq");
            17
        }
    };
    if truncated {
        l4.truncate(3);
    }
    let total = (20 + l4.len()) as u16;
    let mut ip4 = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, proto, 0, 0];
    ip4[2..4].copy_from_slice(&total.to_be_bytes());
    ip4.extend_from_slice(&src.octets());
    ip4.extend_from_slice(&dst.octets());
    // L4 checksum over the pseudo-header, so translations can be checked for consistency.
    if !truncated {
        let mut ph = Vec::new();
        ph.extend_from_slice(&src.octets());
        ph.extend_from_slice(&dst.octets());
        ph.extend_from_slice(&[0, proto]);
        ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        ph.extend_from_slice(&l4);
        let c = checksum(&ph);
        let at = if proto == 6 { 16 } else { 6 };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let c = checksum(&ip4);
    ip4[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip4);
    f.extend_from_slice(&l4);
    f
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.next() as usize % v.len()]
    }
}

/// One random packet from the client pod on tap2 towards the Services (`nat44-out2in` creates
/// sessions): new and repeated flows, DNS, a rejected port, FIN and RST, TTL 1, truncated headers.
fn client(r: &mut Rng) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    if r.next().is_multiple_of(3) {
        let vip = if r.next().is_multiple_of(4) {
            "10.96.0.30"
        } else {
            "10.96.0.53"
        };
        return (
            TAP2,
            frame(
                TAP2_MAC,
                ip("10.1.1.3"),
                ip(vip),
                port,
                53,
                None,
                ttl,
                truncated,
            ),
        );
    }
    (
        TAP2,
        frame(
            TAP2_MAC,
            ip("10.1.1.3"),
            ip("10.104.221.85"),
            port,
            80,
            fl,
            ttl,
            truncated,
        ),
    )
}

/// One random packet from the pod on tap3 to its own Service (hairpin: `nat44-classify`, then
/// `nat44-out2in` creates twice-NAT sessions).
fn hairpin(r: &mut Rng) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    (
        TAP3,
        frame(
            TAP3_MAC,
            ip("10.1.1.4"),
            ip("10.96.0.20"),
            port,
            80,
            fl,
            ttl,
            truncated,
        ),
    )
}

/// One random reply from a backend (handled by `nat44-in2out` and its slow path), matching a
/// session or not.
fn reply(r: &mut Rng) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    match r.next() % 3 {
        0 => {
            let b = r.pick(&["10.20.0.2", "10.20.0.3", "10.20.0.4"]);
            (
                TAP0,
                frame(
                    TAP0_MAC,
                    ip(b),
                    ip("10.1.1.3"),
                    8080,
                    port,
                    fl,
                    ttl,
                    truncated,
                ),
            )
        }
        1 => (
            TAP3,
            frame(
                TAP3_MAC,
                ip("10.1.1.4"),
                ip("10.1.1.254"),
                8080,
                port,
                fl,
                ttl,
                truncated,
            ),
        ),
        _ => (
            TAP3,
            frame(
                TAP3_MAC,
                ip("10.1.1.4"),
                ip("10.1.1.3"),
                5353,
                port,
                None,
                ttl,
                truncated,
            ),
        ),
    }
}

/// One random packet from a pod to the Internet: the uplink's output feature makes a dynamic
/// session for a new flow and translates every packet of it; the input side (`nat44-out2in` on
/// `tap2`, `nat44-in2out` and its slow path on `tap3`) must leave them alone. TCP to port 80 or
/// DNS; both pods use the same ports, so the second client of a port gets another one.
fn internet(r: &mut Rng, (sw, mac, pod): (u32, [u8; 6], &str)) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    let (dport, fl) = if r.next().is_multiple_of(3) {
        (53, None)
    } else {
        (80, fl)
    };
    (
        sw,
        frame(mac, ip(pod), ip(SERVER), port, dport, fl, ttl, truncated),
    )
}

fn internet_from_tap2(r: &mut Rng) -> (u32, Vec<u8>) {
    internet(r, (TAP2, TAP2_MAC, "10.1.1.3"))
}

fn internet_from_tap3(r: &mut Rng) -> (u32, Vec<u8>) {
    internet(r, (TAP3, TAP3_MAC, "10.1.1.4"))
}

/// One random packet from the Internet to the node IP (`nat44-out2in` on the uplink), a reply
/// of a dynamic session or not.
fn internet_reply(r: &mut Rng) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    let (sport, fl) = if r.next().is_multiple_of(3) {
        (53, None)
    } else {
        (80, fl)
    };
    (
        UPLINK,
        frame(
            UPLINK_MAC,
            ip(SERVER),
            ip(NODE_IP),
            sport,
            port,
            fl,
            ttl,
            truncated,
        ),
    )
}

/// One random packet from a client on the Internet to a Service (`nat44-out2in` on the uplink
/// creates the twice-NAT sessions), and the backend's reply to it on tap3, to the NAT loopback
/// and the client's port (kept by twice-NAT unless two clients use it): translated back by
/// `nat44-in2out`'s slow path, then passed by the uplink's output feature untranslated.
fn internet_client(r: &mut Rng) -> ((u32, Vec<u8>), (u32, Vec<u8>)) {
    // TTL 64 only: a request that expires after DNAT becomes an ICMP error to the client, which
    // meets the output feature on another path than the requests (after all of them in a
    // frame, between two of them one by one) — with a full table, the order in which it and
    // the requests' sessions come and go is the graph's, not a difference to find here.
    let (port, fl, _, truncated) = variety(r);
    let ttl = 64;
    let client = r.pick(&CLIENTS);
    let (dst, dport) = if r.next().is_multiple_of(2) {
        (EXTERNAL_IP, 80)
    } else {
        (NODE_IP, 30080)
    };
    let request = frame(
        UPLINK_MAC,
        ip(client),
        ip(dst),
        port,
        dport,
        fl,
        ttl,
        truncated,
    );
    let (_, fl, ttl, truncated) = variety(r);
    let reply = frame(
        TAP3_MAC,
        ip("10.1.1.4"),
        ip("10.1.1.254"),
        8080,
        port,
        fl,
        ttl,
        truncated,
    );
    ((UPLINK, request), (TAP3, reply))
}

/// One random reply of the Service's backend on tap3 to a client on the Internet through the
/// NAT loopback, matching a session or not: translated back by `nat44-in2out`'s slow path and
/// passed by the uplink's output feature, or dropped by the route (nothing else answers the NAT
/// loopback).
fn internet_client_reply(r: &mut Rng) -> (u32, Vec<u8>) {
    let (port, fl, ttl, truncated) = variety(r);
    (
        TAP3,
        frame(
            TAP3_MAC,
            ip("10.1.1.4"),
            ip("10.1.1.254"),
            8080,
            port,
            fl,
            ttl,
            truncated,
        ),
    )
}

/// Port (few, so that flows repeat), TCP flags, TTL, truncation.
fn variety(r: &mut Rng) -> (u16, Option<u8>, u8, bool) {
    let port = 40000 + (r.next() % 24) as u16;
    let flags = r.pick(&[0x02, 0x10, 0x18, 0x12, 0x11, 0x04, 0x10, 0x10]);
    let ttl = if r.next().is_multiple_of(40) { 1 } else { 64 };
    (port, Some(flags), ttl, r.next().is_multiple_of(50))
}

/// A receive time and the frames received then, with their interface.
type Batch = (u64, Vec<(u32, Vec<u8>)>);

struct Outcome {
    per_batch: Vec<String>,
    sent: Vec<(u32, Vec<u8>)>,
    trace: String,
    errors: String,
    sessions: String,
    addresses: String,
}

fn memio(dp: &mut Dataplane) -> &mut MemIo {
    dp.device_mut()
        .as_any_mut()
        .downcast_mut::<MemIo>()
        .unwrap()
}

/// Runs `batches` (each sent at its time) either as whole frames or one packet per frame.
fn run(max_sessions: u32, batches: &[Batch], whole: bool) -> Outcome {
    let mut dp = dataplane(&config(max_sessions));
    let mut sent = Vec::new();
    let mut per_batch = Vec::new();
    for (t, packets) in batches {
        dp.graph.clock.set_ns(*t);
        if whole {
            for (sw, f) in packets {
                memio(&mut dp).push(*sw, f.clone(), VirtioNetHdr::default());
            }
            while memio(&mut dp).pending() > 0 {
                dp.run_once();
            }
        } else {
            for (sw, f) in packets {
                memio(&mut dp).push(*sw, f.clone(), VirtioNetHdr::default());
                dp.run_once();
            }
        }
        // Idle main loops reap what expired and was not looked up (32 sessions per loop).
        for _ in 0..50 {
            dp.run_once();
        }
        sent.extend(
            memio(&mut dp)
                .take_sent()
                .into_iter()
                .map(|s| (s.sw_if_index, s.frame)),
        );
        assert_eq!(dp.pool.free_count(), dp.pool.capacity(), "buffers returned");
        per_batch.push(format!(
            "{}{}",
            errors(&mut dp),
            normalize(&dp.exec("show nat44 sessions detail").unwrap(), true)
        ));
    }
    // Frames leave per output node: compare them as a set (with repetitions).
    sent.sort();
    Outcome {
        per_batch,
        sent,
        trace: output_nat_as_one(&normalize(
            &dp.exec("show trace max 100000").unwrap(),
            false,
        )),
        errors: errors(&mut dp),
        sessions: normalize(&dp.exec("show nat44 sessions detail").unwrap(), true),
        addresses: dp.exec("show nat44 addresses").unwrap(),
    }
}

/// `show errors`, except that the packets the output feature translated are counted once for
/// both of its nodes. A new flow's first packets in one frame all miss in `nat44-in2out-output`
/// (the session is made after the fast path has seen the whole frame) and are translated by the
/// slow path; one by one, only the first is. That split is how the two nodes work (era A's as
/// well), not a difference in what happens to the packets.
fn errors(dp: &mut Dataplane) -> String {
    let text = dp.exec("show errors").unwrap();
    let good = "good in2out packets processed";
    let mut merged = 0u64;
    let mut lines = Vec::new();
    for l in text.lines() {
        let output =
            l.contains(" nat44-in2out-output ") || l.contains(" nat44-in2out-output-slowpath ");
        match l
            .split_whitespace()
            .next()
            .and_then(|c| c.parse::<u64>().ok())
        {
            Some(count) if output && l.ends_with(good) => merged += count,
            _ => lines.push(l.to_string()),
        }
    }
    if merged > 0 {
        lines.push(format!("{merged} nat44-in2out-output(-slowpath) {good}"));
    }
    lines.join("\n")
}

/// The trace with each packet's output-feature NAT records as one: `nat44-in2out-output`'s
/// `session` is the one that translated the packet, in the fast path or in the slow path, and
/// the slow path's record is left out (see [`errors`]); the next node's record shows where the
/// packet went.
fn output_nat_as_one(trace: &str) -> String {
    let lines: Vec<&str> = trace.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        let l = lines[k];
        if l.ends_with(": nat44-in2out-output-slowpath") {
            let session = lines
                .get(k + 1)
                .and_then(|r| r.rsplit_once(", session "))
                .map(|x| x.1);
            if let (Some(s), Some(fast)) = (session, out.last_mut()) {
                if let Some((head, _)) = fast.rsplit_once(", session ") {
                    *fast = format!("{head}, session {s}");
                }
            }
            k += 2;
            continue;
        }
        match l.split_once(", next index ") {
            Some((head, tail))
                if l.contains("NAT44_IN2OUT_FAST_PATH")
                    && out
                        .last()
                        .is_some_and(|h| h.ends_with(": nat44-in2out-output")) =>
            {
                let session = tail.rsplit_once(", session ").map_or("", |x| x.1);
                out.push(format!("{head}, session {session}"));
            }
            _ => out.push(l.to_string()),
        }
        k += 1;
    }
    out.join("\n")
}

/// Session numbers blanked out (`session #`, `session index #`), and the sessions of `show nat44
/// sessions detail` sorted. Where expired sessions are deleted depends on how often the main loop
/// runs (each run expires up to 32 sessions), so the free list, hence session numbers, can differ
/// between the two runs; nothing else may.
fn normalize(text: &str, sort_blocks: bool) -> String {
    let blank = |line: &str| {
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find("session ") {
            let (head, tail) = rest.split_at(at + "session ".len());
            out.push_str(head);
            let (word, tail) = match tail.strip_prefix("index ") {
                Some(t) => {
                    out.push_str("index ");
                    (t, t)
                }
                None => (tail, tail),
            };
            let digits = word.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                out.push('#');
            }
            rest = &tail[digits..];
        }
        out.push_str(rest);
        out
    };
    let lines: Vec<String> = text.lines().map(blank).collect();
    if !sort_blocks {
        return lines.join("\n");
    }
    // Sessions are blocks starting at `    i2o`, grouped under per-user header lines.
    let mut out: Vec<String> = Vec::new();
    let mut group: Vec<String> = Vec::new();
    for l in lines {
        if l.starts_with("    i2o") {
            group.push(l);
        } else if l.starts_with("    ") && !group.is_empty() {
            let b = group.last_mut().unwrap();
            b.push('\n');
            b.push_str(&l);
        } else {
            group.sort();
            out.append(&mut group);
            out.push(l);
        }
    }
    group.sort();
    out.append(&mut group);
    out.join("\n")
}

/// Runs random traffic both ways and compares; returns how many Service replies left the uplink
/// (from the external IP or the NodePort) in it.
fn compare(max_sessions: u32, seed: u64, batches: usize, per_batch: usize) -> usize {
    let mut r = Rng(seed);
    let mut t = 1_000_000_000u64;
    let n = batches;
    let mut batches: Vec<Batch> = Vec::new();
    while batches.len() < n {
        // Now and then jump past the transitory TCP (240 s) and UDP (300 s) timeouts, so that
        // lookups find expired sessions in the middle of frames.
        t += match r.next() % 4 {
            0 => 250_000_000_000,
            1 => 301_000_000_000,
            _ => 1_000_000,
        };
        // One kind of traffic per frame, all on one path through the graph: within a frame,
        // each NAT node must behave as if its packets came one by one. (Across paths a vector
        // graph reorders: every packet of a frame passes nat44-out2in before any passes
        // nat44-in2out, and packets through nat44-classify reach nat44-out2in after those
        // sent to it directly.)
        let make = match r.next() % 9 {
            0 => client,
            1 => hairpin,
            2 => reply,
            3 => internet_from_tap2,
            4 => internet_from_tap3,
            5 => internet_client_reply,
            6 => internet_reply,
            _ => {
                // Clients on the Internet, then (1 ms later, in a frame of their own) the
                // backend's replies to them.
                let (requests, replies) = (0..per_batch).map(|_| internet_client(&mut r)).unzip();
                batches.push((t, requests));
                t += 1_000_000;
                batches.push((t, replies));
                continue;
            }
        };
        batches.push((t, (0..per_batch).map(|_| make(&mut r)).collect()));
    }
    let a = run(max_sessions, &batches, true);
    let b = run(max_sessions, &batches, false);
    assert!(a.sent.len() > per_batch, "traffic flows");
    for (k, (x, y)) in a.per_batch.iter().zip(&b.per_batch).enumerate() {
        assert_eq!(x, y, "errors and sessions after batch {k}");
    }
    assert_eq!(a.errors, b.errors, "error counters");
    assert_eq!(a.sessions, b.sessions, "session table");
    assert_eq!(a.addresses, b.addresses, "NAT addresses");
    assert_eq!(a.sent.len(), b.sent.len(), "frames sent");
    for (x, y) in a.sent.iter().zip(&b.sent) {
        assert_eq!(x, y, "frame sent");
    }
    assert_eq!(a.trace, b.trace, "trace");
    a.sent
        .iter()
        .filter(|(sw, f)| {
            let (src, sport) = (f.get(26..30), f.get(34..36));
            *sw == UPLINK
                && (src == Some(&[192, 0, 2, 50])
                    || (src == Some(&[192, 0, 2, 1]) && sport == Some(&30080u16.to_be_bytes())))
        })
        .count()
}

#[test]
fn whole_frames_match_packet_by_packet() {
    let mut service_replies = 0;
    for seed in 1..=4u64 {
        service_replies += compare(1 << 16, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 6, 250);
    }
    assert!(service_replies > 0, "Service replies through the uplink");
}

#[test]
fn whole_frames_match_packet_by_packet_with_a_full_table() {
    // 20 sessions for ~100 flows: refusals, and transitory TCP sessions recycled mid-frame.
    let mut service_replies = 0;
    for seed in 1..=4u64 {
        service_replies += compare(20, seed.wrapping_mul(0x2545_f491_4f6c_dd1d), 6, 250);
    }
    assert!(service_replies > 0, "Service replies through the uplink");
}
