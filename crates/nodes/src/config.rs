//! The L2/L3 part of a data-plane configuration snapshot: interfaces, FIB objects, adjacencies,
//! feature arcs. Built by the control plane, read by workers.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use vecnet_fib::Ip4Fib;
use vecnet_wire::MacAddr;

/// What an interface connects to; decides ARP learning, NAT and ACL roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceKind {
    /// `local0`, always down.
    Local,
    /// `tap0`, the TAP into the host network stack.
    Host,
    /// `tapN`, a pod's TAP.
    Pod,
    /// `host-<ifname>`, an AF_PACKET uplink.
    Uplink,
    /// `loop0`, the VXLAN bridge virtual interface.
    VxlanBvi,
}

impl InterfaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Local => "local",
            InterfaceKind::Host => "host",
            InterfaceKind::Pod => "pod",
            InterfaceKind::Uplink => "uplink",
            InterfaceKind::VxlanBvi => "vxlan-bvi",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub sw_if_index: u32,
    pub name: String,
    pub kind: InterfaceKind,
    pub mac: MacAddr,
    /// Addresses with prefix length. A pod TAP carries the pod gateway as a /32 local address.
    pub ip4: Vec<(Ipv4Addr, u8)>,
    pub fib_index: u32,
    pub mtu: u16,
    pub admin_up: bool,
    /// Neighbours on this link are learned from ARP (host link, uplink).
    pub dynamic_arp: bool,
    /// Graph node `<name>-output`.
    pub output_node: u32,
    /// Arc `ip4-unicast` as graph node indices: the enabled features in order, then
    /// `ip4-lookup`.
    pub ip4_unicast_arc: Vec<u32>,
    /// Arc `ip4-output`: the enabled features in order, then `<name>-output`.
    pub ip4_output_arc: Vec<u32>,
    /// The pod this TAP belongs to (`namespace/name`), for pod TAPs.
    pub pod: Option<String>,
}

impl Interface {
    /// The address used as source of ICMP errors and ARP replies on this interface.
    pub fn primary_ip4(&self) -> Option<Ipv4Addr> {
        self.ip4.first().map(|&(a, _)| a)
    }

    /// Whether `ip` is on a connected subnet of this interface.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.ip4.iter().any(|&(a, len)| same_subnet(a, ip, len))
    }

    /// Whether this interface owns `ip` (answers ARP for it).
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.ip4.iter().any(|&(a, _)| a == ip)
    }
}

pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

pub fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let m = prefix_mask(len);
    u32::from(a) & m == u32::from(b) & m
}

/// A data-plane forwarding object, as VPP's DPOs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dpo {
    /// Silently discard (`dpo-drop ip4`).
    Drop,
    /// Local delivery to `ip4-local` for an address of `sw_if_index`.
    Receive { sw_if_index: u32, addr: Ipv4Addr },
    /// Discard with ICMP destination unreachable / port unreachable.
    Reject,
    /// Send through adjacency `index`.
    Adjacency(u32),
    /// Connected subnet without a resolved neighbour: ARP for the destination.
    Glean { sw_if_index: u32 },
    /// Recursive route: resolve through load-balance `index` (`ip4-load-balance`).
    LoadBalance(u32),
}

/// A set of paths; buckets are a power of two so selection is a mask of the flow hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalance {
    pub buckets: Vec<Dpo>,
    /// Precomputed outcome for single-bucket entries (see [`crate::ip4_lookup::fast_dpo`]).
    pub fast: Option<crate::ip4_lookup::FastDpo>,
}

impl LoadBalance {
    /// A load-balance at `index` in the FIB's pool.
    pub fn new(index: u32, buckets: Vec<Dpo>) -> Self {
        let fast = crate::ip4_lookup::fast_dpo(index, &buckets);
        Self { buckets, fast }
    }

    pub fn single(dpo: Dpo) -> Self {
        Self {
            buckets: vec![dpo],
            fast: None,
        }
    }

    #[inline]
    pub fn pick(&self, flow_hash: u32) -> Dpo {
        let n = self.buckets.len();
        if n == 0 {
            return Dpo::Drop;
        }
        self.buckets[(flow_hash as usize) & (n - 1)]
    }
}

/// An adjacency: a next hop on an interface with its precomputed L2 rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjacency {
    pub sw_if_index: u32,
    pub next_hop: Ipv4Addr,
    /// Destination MAC when the neighbour is static; `None` = resolved by ARP on the worker.
    pub static_mac: Option<MacAddr>,
    pub src_mac: MacAddr,
    pub mtu: u16,
    /// First node of the tx interface's `ip4-output` arc (a feature, or `<if>-output`).
    pub output_node: u32,
}

impl Adjacency {
    pub fn rewrite_with(&self, dst: MacAddr) -> [u8; 14] {
        let mut r = [0u8; 14];
        r[..6].copy_from_slice(&dst.0);
        r[6..12].copy_from_slice(&self.src_mac.0);
        r[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        r
    }
}

/// All FIB tables and the objects their leaves point to.
#[derive(Debug, Clone)]
pub struct Fib {
    /// Leaves are load-balance indices.
    pub tables: Ip4Fib,
    pub load_balances: Vec<LoadBalance>,
    pub adjacencies: Vec<Adjacency>,
    /// (sw_if_index, next hop) → adjacency, for ARP learning.
    pub adj_by_neighbour: HashMap<(u32, Ipv4Addr), u32>,
    /// The load-balance that drops, returned where no route matches.
    pub drop_lb: u32,
}

/// The L2/L3 configuration shared by all workers.
#[derive(Debug, Clone)]
pub struct L3Config {
    /// By `sw_if_index`.
    pub interfaces: Vec<Option<Interface>>,
    pub fib: Fib,
    /// Static neighbours (pods, remote BVIs): (sw_if_index, ip) → MAC.
    pub static_neighbours: HashMap<(u32, Ipv4Addr), MacAddr>,
    /// Neighbours a worker starts with as if learned (simulate scenarios, restored state).
    pub seeded_neighbours: HashMap<(u32, Ipv4Addr), MacAddr>,
    /// Changes whenever the configuration changes; workers rebuild caches when it does.
    pub epoch: u64,
}

impl L3Config {
    #[inline]
    pub fn interface(&self, sw_if_index: u32) -> Option<&Interface> {
        self.interfaces.get(sw_if_index as usize)?.as_ref()
    }
}
