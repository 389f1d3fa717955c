//! The desired data-plane configuration, as the agent (or a `simulate` scenario) states it:
//! interfaces, routes, neighbours. [`crate::build`] compiles it into the snapshot workers read.

use std::net::Ipv4Addr;

use vecnet_acl::AclConfig;
use vecnet_nat::NatConfig;
use vecnet_nodes::InterfaceKind;
use vecnet_wire::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub sw_if_index: u32,
    pub kind: InterfaceKind,
    pub mac: MacAddr,
    /// Addresses with prefix length; a pod TAP holds the pod gateway as a /32.
    pub ip4: Vec<(Ipv4Addr, u8)>,
    pub mtu: u16,
    pub fib_index: u32,
    pub admin_up: bool,
    pub pod: Option<String>,
    /// NAT44 roles (SYSTEM.md 6.4): backends live behind an `inside` interface, clients come
    /// from an `outside` one; `nat_output` = SNAT output feature (uplink).
    pub nat_inside: bool,
    pub nat_outside: bool,
    pub nat_output: bool,
    /// Node names of extra `ip4-unicast` features, in arc order, before the ACL and NAT ones
    /// that bindings and roles add.
    pub unicast_features: Vec<String>,
    /// Node names of the enabled `ip4-output` features, in arc order.
    pub output_features: Vec<String>,
}

impl InterfaceConfig {
    pub fn new(name: &str, sw_if_index: u32, kind: InterfaceKind, mac: MacAddr) -> Self {
        Self {
            name: name.to_string(),
            sw_if_index,
            kind,
            mac,
            ip4: Vec::new(),
            mtu: 1500,
            fib_index: 0,
            admin_up: true,
            pod: None,
            nat_inside: false,
            nat_outside: false,
            nat_output: false,
            unicast_features: Vec::new(),
            output_features: Vec::new(),
        }
    }
}

/// One path of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Next hop on an interface (attached next hop): an adjacency.
    Attached {
        next_hop: Ipv4Addr,
        sw_if_index: u32,
    },
    /// Next hop resolved through the FIB (`ip4-lookup` then `ip4-load-balance`).
    Recursive {
        next_hop: Ipv4Addr,
    },
    Drop,
    /// ICMP destination unreachable (port unreachable), as for untranslated Service traffic.
    Reject,
    /// Local delivery.
    Receive {
        sw_if_index: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub table: u32,
    pub prefix: Ipv4Addr,
    pub len: u8,
    pub paths: Vec<Path>,
}

impl RouteConfig {
    pub fn new(prefix: Ipv4Addr, len: u8, path: Path) -> Self {
        Self {
            table: 0,
            prefix,
            len,
            paths: vec![path],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourConfig {
    pub sw_if_index: u32,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub interfaces: Vec<InterfaceConfig>,
    pub routes: Vec<RouteConfig>,
    /// Static neighbours (pods, remote BVIs).
    pub static_neighbours: Vec<NeighbourConfig>,
    /// Dynamic neighbours to start with, as if learned (scenarios, restored state).
    pub seeded_neighbours: Vec<NeighbourConfig>,
    pub nat: NatConfig,
    pub acl: AclConfig,
    /// Seed of the workers' random choices (load balancing, port allocation).
    pub seed: u64,
}
