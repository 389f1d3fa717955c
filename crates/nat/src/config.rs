//! NAT44 configuration as the Service renderer produces it (SYSTEM.md section 6): static
//! load-balancing mappings with per-origin endpoint sets, identity mappings, pools, timeouts.

use std::net::Ipv4Addr;

/// L4 protocol of a mapping or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn from_ip_proto(p: u8) -> Option<Self> {
        match p {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            1 => Some(Proto::Icmp),
            _ => None,
        }
    }

    pub fn ip_proto(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }

    /// VPP's lower-case names (`show nat44 …`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// One backend of a load-balancing mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Relative probability (`localEndpointWeight` for node-local backends, 1 otherwise).
    pub weight: u32,
    /// FIB table of the backend (0 in the single-VRF layout).
    pub vrf: u32,
}

/// What a mapping does for one traffic origin (SYSTEM.md 6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSet {
    /// Load-balance over these (non-empty).
    Backends(Vec<Backend>),
    /// The port has endpoints but the traffic policy filtered them all: drop silently.
    Drop,
    /// The port has no endpoints at all: ICMP destination unreachable (port unreachable).
    Reject,
}

/// One static (load-balancing) mapping: external `ip:port/proto` → backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMapping {
    pub external_ip: Ipv4Addr,
    pub external_port: u16,
    pub proto: Proto,
    pub vrf: u32,
    /// Backends for clients of internal origin (pods, this node's host stack).
    pub internal: BackendSet,
    /// Backends for clients of external origin.
    pub external: BackendSet,
    /// Source-translate external-origin clients to the twice-NAT pool (ETP=Cluster on
    /// NodePort, external IPs, LB IPs), so that replies return through this node.
    pub twice_nat_external: bool,
    /// Hairpin: when the chosen backend is the client itself, translate the source to the
    /// twice-NAT pool.
    pub self_twice_nat: bool,
    /// The mapping only translates connections to the external address (always true for
    /// Services).
    pub out2in_only: bool,
    /// ClientIP affinity timeout in seconds; 0 = off.
    pub affinity_timeout: u32,
    /// Affinity records are shared by every address of one service port.
    pub affinity_group: u32,
    /// `<namespace>/<name>` plus the port name, for `show` output and events.
    pub tag: String,
}

/// An identity mapping: traffic to (ip[, port/proto]) gets a session but no translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityMapping {
    pub ip: Ipv4Addr,
    /// `None` = every port and protocol of the address.
    pub port: Option<(Proto, u16)>,
    pub vrf: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTimeouts {
    pub udp: u32,
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub icmp: u32,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        Self {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            icmp: 60,
        }
    }
}

/// The NAT part of a data-plane snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    pub mappings: Vec<StaticMapping>,
    pub identity: Vec<IdentityMapping>,
    /// Main pool: addresses for dynamic SNAT to the Internet (the node IP).
    pub pool: Vec<Ipv4Addr>,
    /// Twice-NAT pool: the NAT loopback `10.1.N.254`.
    pub twice_nat_pool: Vec<Ipv4Addr>,
    /// Sources of internal origin: the pod CIDR, this node's host, host-link and node IPs.
    pub internal_prefixes: Vec<(Ipv4Addr, u8)>,
    /// The host stack's own addresses (host IPs, the host link's Linux side). A connection
    /// from one of them to a backend that is one of them is a hairpin too: the host would
    /// answer itself directly, so the source is translated to the twice-NAT pool.
    pub host_addresses: Vec<Ipv4Addr>,
    pub timeouts: NatTimeouts,
    /// Session table size per worker.
    pub max_sessions: u32,
    /// Percent of the table usable only by control traffic (SYSTEM.md 6.9).
    pub reserved_for_control: u8,
    /// Traffic that matches no session and no mapping passes untranslated.
    pub forwarding: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            mappings: Vec::new(),
            identity: Vec::new(),
            pool: Vec::new(),
            twice_nat_pool: Vec::new(),
            internal_prefixes: Vec::new(),
            host_addresses: Vec::new(),
            timeouts: NatTimeouts::default(),
            max_sessions: 1 << 20,
            reserved_for_control: 5,
            forwarding: true,
        }
    }
}
