//! Packet generator and null sink (VPP's `pg`): a device that fills buffers from frame templates,
//! varying the flow per packet, and frees what is sent. Used by the benchmark and by the
//! zero-allocation test; it allocates nothing per packet.

use std::net::Ipv4Addr;

use vecnet_graph::{BufferPool, RX};
use vecnet_nodes::{DeviceIo, InterfaceKind};
use vecnet_wire::MacAddr;

use crate::config::{DataplaneConfig, InterfaceConfig, NeighbourConfig, Path, RouteConfig};

pub struct PacketGenerator {
    /// (rx sw_if_index, Ethernet frame) templates, used round robin.
    templates: Vec<(u32, Vec<u8>)>,
    /// Offset of the TCP/UDP source port to vary (L2 + IP header length), if any.
    port_offset: Option<usize>,
    /// Number of distinct flows (source ports) to cycle through.
    flows: u32,
    next: u64,
    /// Packets to generate in total; `u64::MAX` = unlimited.
    pub remaining: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
}

impl PacketGenerator {
    pub fn new(templates: Vec<(u32, Vec<u8>)>, port_offset: Option<usize>, flows: u32) -> Self {
        Self {
            templates,
            port_offset,
            flows: flows.max(1),
            next: 0,
            remaining: u64::MAX,
            sent_packets: 0,
            sent_bytes: 0,
        }
    }
}

impl DeviceIo for PacketGenerator {
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut [u32]) -> usize {
        if self.templates.is_empty() {
            return 0;
        }
        let want = (out.len() as u64).min(self.remaining) as usize;
        let mut n = 0;
        while n < want {
            let Some(bi) = pool.alloc() else { break };
            let k = (self.next % self.templates.len() as u64) as usize;
            let (sw, ref frame) = self.templates[k];
            pool.write_packet(bi, frame);
            if let Some(off) = self.port_offset {
                let port = 1024 + (self.next % self.flows as u64) as u16;
                if let Some(p) = pool.data_mut(bi).get_mut(off..off + 2) {
                    // The L4 checksum is not verified on the routed path; the IP one is intact.
                    p.copy_from_slice(&port.to_be_bytes());
                }
            }
            pool.meta_mut(bi).sw_if_index[RX] = sw;
            out[n] = bi;
            n += 1;
            self.next += 1;
        }
        self.remaining -= n as u64;
        n
    }

    fn tx_burst(&mut self, _sw_if_index: u32, pool: &mut BufferPool, bufs: &[u32]) {
        for &bi in bufs {
            self.sent_packets += 1;
            self.sent_bytes += pool.meta(bi).current_length as u64;
            pool.free(bi);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

const TAP0_MAC: MacAddr = MacAddr([0x02, 0x23, 0x45, 0x67, 0x89, 0x42]);
const TAP2_MAC: MacAddr = MacAddr([0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f]);
const POD_MAC: MacAddr = MacAddr([0, 0, 0, 0, 0, 2]);

fn dst(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// A 60-byte frame (64 bytes on the wire with the FCS): Ethernet + IPv4 + TCP + 6 bytes.
fn frame(dst_ip: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&TAP2_MAC.0);
    f.extend_from_slice(&POD_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 1, 1, 3]);
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let c = vecnet_wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 26];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x10;
    f.extend_from_slice(&tcp);
    f
}

/// The routed-path benchmark topology: tap0 (host link) and tap2 (a pod), `flows` host /32
/// routes via the host side of tap0.
pub fn routed_config(flows: u32) -> DataplaneConfig {
    let mut cfg = DataplaneConfig::default();
    let mut tap0 = InterfaceConfig::new("tap0", 2, InterfaceKind::Host, TAP0_MAC);
    tap0.ip4 = vec![(Ipv4Addr::new(172, 30, 1, 1), 24)];
    let mut tap2 = InterfaceConfig::new("tap2", 6, InterfaceKind::Pod, TAP2_MAC);
    tap2.ip4 = vec![(Ipv4Addr::new(10, 1, 1, 1), 32)];
    cfg.interfaces = vec![tap0, tap2];
    let nh = Ipv4Addr::new(172, 30, 1, 2);
    cfg.seeded_neighbours.push(NeighbourConfig {
        sw_if_index: 2,
        ip: nh,
        mac: MacAddr([0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51]),
    });
    for i in 0..flows {
        cfg.routes.push(RouteConfig::new(
            dst(i),
            32,
            Path::Attached {
                next_hop: nh,
                sw_if_index: 2,
            },
        ));
    }
    cfg
}

/// 60-byte TCP frames from the pod on tap2 to each of the `flows` destinations in turn.
pub fn routed_generator(flows: u32) -> PacketGenerator {
    let templates = (0..flows)
        .map(|i| (6u32, frame(dst(i), 1024 + (i % 50_000) as u16)))
        .collect();
    PacketGenerator::new(templates, None, 1)
}

/// The Service benchmark topology: the routed one plus `services` TCP mappings
/// `10.96.x.y:80` → `endpoints` backends each (host addresses behind tap0), tap2 `out`, tap0
/// `in`+`out`, a session table for `max_sessions`.
pub fn nat_config(services: u32, endpoints: u32, max_sessions: u32) -> DataplaneConfig {
    use vecnet_nat::{Backend, BackendSet, NatConfig, Proto, StaticMapping};
    let backends_total = (services * endpoints).clamp(1, 10_000);
    let mut cfg = routed_config(backends_total);
    cfg.interfaces[0].nat_inside = true;
    cfg.interfaces[0].nat_outside = true;
    cfg.interfaces[1].nat_outside = true;
    let mappings = (0..services)
        .map(|s| {
            let backends = (0..endpoints)
                .map(|e| Backend {
                    ip: dst((s * endpoints + e) % backends_total),
                    port: 8080,
                    weight: 1,
                    vrf: 0,
                })
                .collect();
            let set = BackendSet::Backends(backends);
            StaticMapping {
                external_ip: vip(s),
                external_port: 80,
                proto: Proto::Tcp,
                vrf: 0,
                internal: set.clone(),
                external: set,
                twice_nat_external: false,
                self_twice_nat: true,
                out2in_only: true,
                affinity_timeout: 0,
                affinity_group: s,
                tag: format!("bench/svc-{s}"),
            }
        })
        .collect();
    cfg.nat = NatConfig {
        mappings,
        twice_nat_pool: vec![Ipv4Addr::new(10, 1, 1, 254)],
        internal_prefixes: vec![(Ipv4Addr::new(10, 1, 0, 0), 16)],
        max_sessions,
        ..NatConfig::default()
    };
    cfg
}

/// Service VIP number `s` in 10.96.0.0/12.
pub fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 96 + ((s >> 16) & 0x0f) as u8, (s >> 8) as u8, s as u8)
}

/// `flows` distinct connections from the pod on tap2, spread over `services` VIPs.
pub fn nat_generator(services: u32, flows: u32) -> PacketGenerator {
    let services = services.max(1);
    let templates = (0..flows)
        .map(|f| {
            (
                6u32,
                frame(vip(f % services), 1024 + ((f / services) % 60_000) as u16),
            )
        })
        .collect();
    PacketGenerator::new(templates, None, 1)
}

/// The seed path of ANCHORS.md: `nat_config` plus the client's reflective ACL on tap2's input
/// and a permitting global table on tap0's output (both ACL nodes in the path).
pub fn seed_config(services: u32, endpoints: u32, max_sessions: u32) -> DataplaneConfig {
    use vecnet_acl::{Acl, AclBinding, AclConfig, AclRule, Action};
    let mut cfg = nat_config(services, endpoints, max_sessions);
    cfg.acl = AclConfig {
        acls: vec![
            Acl {
                tag: "bench-reflect".into(),
                rules: vec![AclRule::any(Action::PermitReflect)],
            },
            Acl {
                tag: "bench-global".into(),
                rules: vec![AclRule::any(Action::Permit)],
            },
        ],
        bindings: vec![
            AclBinding {
                sw_if_index: 6,
                input: vec![0],
                output: Vec::new(),
            },
            AclBinding {
                sw_if_index: 2,
                input: Vec::new(),
                output: vec![1],
            },
        ],
        max_sessions,
        ..AclConfig::default()
    };
    cfg
}
