//! Addressing plan and pod IP allocation (SYSTEM.md section 2).
//!
//! Everything a node needs is a pure function of the `ipam` config section and
//! the node ID ([`IpamConfig::for_node`]); the only state is the per-node pod
//! address pool ([`PodAllocator`]), which is persisted in `dataDir`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{AddrParseError, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MAC address as raw bytes, most significant first.
pub type MacAddrBytes = [u8; 6];

// ---------------------------------------------------------------------------
// Cidr
// ---------------------------------------------------------------------------

/// An IPv4 prefix. `addr` is kept exactly as written (host bits may be set, as
/// in an interface address like `192.168.16.1/24`); [`Cidr::network`] gives the
/// masked form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// Why a string is not a valid `a.b.c.d/len`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrParseError {
    #[error("missing \"/<prefix length>\"")]
    MissingPrefixLen,
    #[error("bad IPv4 address {0:?}")]
    BadAddress(String),
    #[error("bad prefix length {0:?} (expected a number 0-32)")]
    BadPrefixLen(String),
    #[error("prefix length {0} is larger than 32")]
    PrefixLenTooLarge(u32),
}

impl Cidr {
    pub const fn new(addr: Ipv4Addr, len: u8) -> Self {
        Self { addr, len }
    }

    /// Netmask as a host-order integer. A `len` above 32 (only possible by
    /// building the struct by hand) is treated as 32 so that no method panics.
    pub fn mask(&self) -> u32 {
        let len = u32::from(self.len.min(32));
        // A shift by 32 is not defined for u32; /0 has an all-zero mask.
        u32::MAX.checked_shl(32 - len).unwrap_or(0)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Host #n: network + n, or `None` when that falls outside the prefix.
    /// Host #0 is the network address and the last one the broadcast address.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n <= !self.mask()).then(|| Ipv4Addr::from(u32::from(self.network()) | n))
    }

    /// Number of addresses covered (2^(32 − len)).
    pub fn size(&self) -> u64 {
        u64::from(!self.mask()) + 1
    }

    /// The same prefix with the host bits cleared.
    pub fn normalized(&self) -> Cidr {
        Cidr::new(self.network(), self.len.min(32))
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Subnet `index` of the split of this prefix into prefixes of length
    /// `new_len`; `None` if `new_len` is shorter than `len` or above 32, or the
    /// index is past the last subnet.
    pub fn subnet(&self, new_len: u8, index: u64) -> Option<Cidr> {
        if new_len < self.len || new_len > 32 {
            return None;
        }
        let count = 1u64 << (new_len - self.len);
        if index >= count {
            return None;
        }
        let offset = index << (32 - u32::from(new_len));
        let net = u64::from(u32::from(self.network())) + offset;
        let net = u32::try_from(net).ok()?;
        Some(Cidr::new(Ipv4Addr::from(net), new_len))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, len) = s.split_once('/').ok_or(CidrParseError::MissingPrefixLen)?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrParseError::BadAddress(addr.to_string()))?;
        // u32::from_str accepts a leading '+', which is not CIDR notation.
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrParseError::BadPrefixLen(len.to_string()));
        }
        let len: u32 = len
            .parse()
            .map_err(|_| CidrParseError::BadPrefixLen(len.to_string()))?;
        let len = u8::try_from(len)
            .ok()
            .filter(|l| *l <= 32)
            .ok_or(CidrParseError::PrefixLenTooLarge(len))?;
        Ok(Cidr::new(addr, len))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid CIDR {s:?}: {e}")))
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// IPAM configuration and allocation errors. Configuration errors name the
/// knob (as spelled in the config file) so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("ipam.{knob}: invalid CIDR {value:?}: {source}")]
    InvalidCidr {
        knob: &'static str,
        value: String,
        source: CidrParseError,
    },
    #[error("ipam.{knob}: invalid IPv4 address {value:?}: {source}")]
    InvalidAddress {
        knob: &'static str,
        value: String,
        source: AddrParseError,
    },
    #[error("ipam.{knob}: {value} is out of range {min}..={max} ({why})")]
    OutOfRange {
        knob: &'static str,
        value: u64,
        min: u64,
        max: u64,
        why: &'static str,
    },
    #[error(
        "ipam.contivCIDR: {cidr} is too small: it must have at least 18 host bits \
         (prefix length 14 or shorter)"
    )]
    ContivCidrTooSmall { cidr: Cidr },
    #[error("ipam.{knob_a} ({cidr_a}) overlaps ipam.{knob_b} ({cidr_b})")]
    Overlap {
        knob_a: &'static str,
        cidr_a: Cidr,
        knob_b: &'static str,
        cidr_b: Cidr,
    },
    #[error("ipam.nodeID: node ID 0 is not valid (node IDs start at 1)")]
    NodeIdZero,
    #[error(
        "ipam.nodeID: node ID {node_id} does not fit ipam.{knob} {cidr} split into /{slice_len} \
         slices (ipam.{len_knob}): there are {slices} slices, so the largest usable node ID is \
         {slices} (which wraps to slice 0)"
    )]
    NodeIdTooLarge {
        node_id: u32,
        knob: &'static str,
        len_knob: &'static str,
        cidr: Cidr,
        slice_len: u8,
        slices: u64,
    },
    #[error(
        "ipam.nodeID: node ID {node_id} has no address in ipam.{knob} {cidr}: it would be \
         host #{host}{skip}, but the usable hosts are #1..=#{max_host}"
    )]
    NoNodeAddress {
        node_id: u32,
        knob: &'static str,
        cidr: Cidr,
        host: u64,
        max_host: u64,
        /// Explains the defaultGateway skip when it moved the address.
        skip: &'static str,
    },
    #[error(
        "pod subnet {subnet} is exhausted: all {capacity} pod addresses ({first}-{last}) are in use"
    )]
    Exhausted {
        subnet: Cidr,
        capacity: u64,
        first: Ipv4Addr,
        last: Ipv4Addr,
    },
    #[error("pod subnet {subnet} has no assignable pod addresses (prefix longer than /29)")]
    NoPodAddresses { subnet: Cidr },
    #[error("pod allocation key is empty (expected \"<containerID>/<ifname>\")")]
    EmptyKey,
    #[error("pod IP {ip} (for {key:?}) is outside this node's pod subnet {subnet}")]
    OutsideSlice {
        key: String,
        ip: Ipv4Addr,
        subnet: Cidr,
    },
    #[error("pod IP {ip} (for {key:?}) is reserved as the {role} of pod subnet {subnet}")]
    Reserved {
        key: String,
        ip: Ipv4Addr,
        role: &'static str,
        subnet: Cidr,
    },
    #[error("pod IP {ip} (for {key:?}) is already allocated to {holder:?}")]
    InUse {
        key: String,
        ip: Ipv4Addr,
        holder: String,
    },
    #[error("{key:?} already holds pod IP {existing}; refusing to also give it {requested}")]
    KeyHasOtherIp {
        key: String,
        existing: Ipv4Addr,
        requested: Ipv4Addr,
    },
    #[error(
        "saved IPAM state is for pod subnet {stored}, but this node's pod subnet is {expected}"
    )]
    StateSubnetMismatch { stored: Cidr, expected: Cidr },
    #[error("saved IPAM state: lastAllocated {ip} is not a pod address of {subnet}")]
    StateBadCursor { ip: Ipv4Addr, subnet: Cidr },
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

const K_POD: &str = "podSubnetCIDR";
const K_POD_LEN: &str = "podSubnetOneNodePrefixLen";
const K_HOST: &str = "vppHostSubnetCIDR";
const K_HOST_LEN: &str = "vppHostSubnetOneNodePrefixLen";
const K_NODE: &str = "nodeInterconnectCIDR";
const K_VXLAN: &str = "vxlanCIDR";
const K_SERVICE: &str = "serviceCIDR";
const K_GW: &str = "defaultGateway";
const K_CONTIV: &str = "contivCIDR";
const K_NODE_ID: &str = "nodeID";

/// The `ipam` section of the config (SYSTEM.md 2.1). Field names on the wire
/// are exactly the spec's knob names.
///
/// Deserialization goes through a private raw form so that a malformed value
/// reports the knob it came from in every format (serde_json alone would only
/// report a line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIpamConfig")]
pub struct IpamConfig {
    #[serde(rename = "podSubnetCIDR")]
    pub pod_subnet_cidr: Cidr,
    #[serde(rename = "podSubnetOneNodePrefixLen")]
    pub pod_subnet_one_node_prefix_len: u8,
    #[serde(rename = "vppHostSubnetCIDR")]
    pub vpp_host_subnet_cidr: Cidr,
    #[serde(rename = "vppHostSubnetOneNodePrefixLen")]
    pub vpp_host_subnet_one_node_prefix_len: u8,
    #[serde(rename = "nodeInterconnectCIDR")]
    pub node_interconnect_cidr: Cidr,
    /// Spec MAY (config shape in section 1): accepted so that configs written
    /// against the spec load; IPAM still derives the static node IP, and the
    /// component that implements DHCP decides whether to use it.
    #[serde(rename = "nodeInterconnectDHCP")]
    pub node_interconnect_dhcp: bool,
    #[serde(rename = "vxlanCIDR")]
    pub vxlan_cidr: Cidr,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Cidr,
    #[serde(rename = "defaultGateway", skip_serializing_if = "Option::is_none")]
    pub default_gateway: Option<Ipv4Addr>,
    /// When set, replaces the pod, host-link, node-interconnect and VXLAN
    /// ranges (SYSTEM.md 2.6).
    #[serde(rename = "contivCIDR", skip_serializing_if = "Option::is_none")]
    pub contiv_cidr: Option<Cidr>,
    /// 0 = allocate (etcd/kube mode) or 1 (manifests); resolved by the caller.
    #[serde(rename = "nodeID")]
    pub node_id: u32,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            pod_subnet_cidr: Cidr::new(Ipv4Addr::new(10, 1, 0, 0), 16),
            pod_subnet_one_node_prefix_len: 24,
            vpp_host_subnet_cidr: Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 16),
            vpp_host_subnet_one_node_prefix_len: 24,
            node_interconnect_cidr: Cidr::new(Ipv4Addr::new(192, 168, 16, 0), 24),
            node_interconnect_dhcp: false,
            vxlan_cidr: Cidr::new(Ipv4Addr::new(192, 168, 30, 0), 24),
            service_cidr: Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12),
            default_gateway: None,
            contiv_cidr: None,
            node_id: 0,
        }
    }
}

/// Wire form of [`IpamConfig`]: strings and wide integers, so that parsing
/// errors can be attributed to a knob in [`TryFrom`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIpamConfig {
    #[serde(rename = "podSubnetCIDR")]
    pod_subnet_cidr: String,
    #[serde(rename = "podSubnetOneNodePrefixLen")]
    pod_subnet_one_node_prefix_len: u64,
    #[serde(rename = "vppHostSubnetCIDR")]
    vpp_host_subnet_cidr: String,
    #[serde(rename = "vppHostSubnetOneNodePrefixLen")]
    vpp_host_subnet_one_node_prefix_len: u64,
    #[serde(rename = "nodeInterconnectCIDR")]
    node_interconnect_cidr: String,
    #[serde(rename = "nodeInterconnectDHCP")]
    node_interconnect_dhcp: bool,
    #[serde(rename = "vxlanCIDR")]
    vxlan_cidr: String,
    #[serde(rename = "serviceCIDR")]
    service_cidr: String,
    #[serde(rename = "defaultGateway")]
    default_gateway: Option<String>,
    #[serde(rename = "contivCIDR")]
    contiv_cidr: Option<String>,
    #[serde(rename = "nodeID")]
    node_id: u64,
}

impl Default for RawIpamConfig {
    fn default() -> Self {
        let d = IpamConfig::default();
        Self {
            pod_subnet_cidr: d.pod_subnet_cidr.to_string(),
            pod_subnet_one_node_prefix_len: d.pod_subnet_one_node_prefix_len.into(),
            vpp_host_subnet_cidr: d.vpp_host_subnet_cidr.to_string(),
            vpp_host_subnet_one_node_prefix_len: d.vpp_host_subnet_one_node_prefix_len.into(),
            node_interconnect_cidr: d.node_interconnect_cidr.to_string(),
            node_interconnect_dhcp: d.node_interconnect_dhcp,
            vxlan_cidr: d.vxlan_cidr.to_string(),
            service_cidr: d.service_cidr.to_string(),
            default_gateway: None,
            contiv_cidr: None,
            node_id: d.node_id.into(),
        }
    }
}

fn parse_cidr(knob: &'static str, value: &str) -> Result<Cidr, IpamError> {
    value.parse().map_err(|source| IpamError::InvalidCidr {
        knob,
        value: value.to_string(),
        source,
    })
}

/// The spec's own config shape writes "not set" as `""`.
fn blank_to_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn prefix_len(knob: &'static str, value: u64) -> Result<u8, IpamError> {
    u8::try_from(value)
        .ok()
        .filter(|l| *l <= 32)
        .ok_or(IpamError::OutOfRange {
            knob,
            value,
            min: 0,
            max: 32,
            why: "an IPv4 prefix length",
        })
}

impl TryFrom<RawIpamConfig> for IpamConfig {
    type Error = IpamError;

    fn try_from(raw: RawIpamConfig) -> Result<Self, Self::Error> {
        let default_gateway = blank_to_none(raw.default_gateway)
            .map(|v| {
                v.trim()
                    .parse::<Ipv4Addr>()
                    .map_err(|source| IpamError::InvalidAddress {
                        knob: K_GW,
                        value: v.clone(),
                        source,
                    })
            })
            .transpose()?;
        let contiv_cidr = blank_to_none(raw.contiv_cidr)
            .map(|v| parse_cidr(K_CONTIV, &v))
            .transpose()?;
        let node_id = u32::try_from(raw.node_id).map_err(|_| IpamError::OutOfRange {
            knob: K_NODE_ID,
            value: raw.node_id,
            min: 0,
            max: u32::MAX.into(),
            why: "a 32-bit node ID",
        })?;
        Ok(Self {
            pod_subnet_cidr: parse_cidr(K_POD, &raw.pod_subnet_cidr)?,
            pod_subnet_one_node_prefix_len: prefix_len(
                K_POD_LEN,
                raw.pod_subnet_one_node_prefix_len,
            )?,
            vpp_host_subnet_cidr: parse_cidr(K_HOST, &raw.vpp_host_subnet_cidr)?,
            vpp_host_subnet_one_node_prefix_len: prefix_len(
                K_HOST_LEN,
                raw.vpp_host_subnet_one_node_prefix_len,
            )?,
            node_interconnect_cidr: parse_cidr(K_NODE, &raw.node_interconnect_cidr)?,
            node_interconnect_dhcp: raw.node_interconnect_dhcp,
            vxlan_cidr: parse_cidr(K_VXLAN, &raw.vxlan_cidr)?,
            service_cidr: parse_cidr(K_SERVICE, &raw.service_cidr)?,
            default_gateway,
            contiv_cidr,
            node_id,
        })
    }
}

/// The cluster-wide ranges actually in force, with the knob each came from,
/// after applying contivCIDR mode.
struct Ranges {
    pod: Cidr,
    pod_len: u8,
    pod_knob: &'static str,
    pod_len_knob: &'static str,
    host: Cidr,
    host_len: u8,
    host_knob: &'static str,
    host_len_knob: &'static str,
    node: Cidr,
    node_knob: &'static str,
    vxlan: Cidr,
    vxlan_knob: &'static str,
    service: Cidr,
}

/// Contiv's per-node slice in contivCIDR mode (both pods and host links).
const CONTIV_ONE_NODE_PREFIX_LEN: u8 = 25;
/// A pod slice needs network, gateway, one pod, NAT loopback and broadcast.
const MAX_POD_SLICE_LEN: u8 = 29;
/// Host links and node subnets need two hosts besides network and broadcast.
const MAX_LINK_LEN: u8 = 30;

impl IpamConfig {
    fn ranges(&self) -> Result<Ranges, IpamError> {
        let service = self.service_cidr.normalized();
        let Some(contiv) = self.contiv_cidr else {
            return Ok(Ranges {
                pod: self.pod_subnet_cidr.normalized(),
                pod_len: self.pod_subnet_one_node_prefix_len,
                pod_knob: K_POD,
                pod_len_knob: K_POD_LEN,
                host: self.vpp_host_subnet_cidr.normalized(),
                host_len: self.vpp_host_subnet_one_node_prefix_len,
                host_knob: K_HOST,
                host_len_knob: K_HOST_LEN,
                node: self.node_interconnect_cidr.normalized(),
                node_knob: K_NODE,
                vxlan: self.vxlan_cidr.normalized(),
                vxlan_knob: K_VXLAN,
                service,
            });
        };
        let too_small = IpamError::ContivCidrTooSmall { cidr: contiv };
        if contiv.len > 14 {
            return Err(too_small);
        }
        // Split sizes follow Contiv: /16 blocks give each role 65536 addresses
        // (512 nodes × /25), /23 blocks give 510 node and VXLAN addresses.
        let pick = |len: u8, index: u64| contiv.subnet(len, index).ok_or(too_small.clone());
        Ok(Ranges {
            pod: pick(16, 0)?,
            pod_len: CONTIV_ONE_NODE_PREFIX_LEN,
            pod_knob: K_CONTIV,
            pod_len_knob: K_CONTIV,
            host: pick(16, 1)?,
            host_len: CONTIV_ONE_NODE_PREFIX_LEN,
            host_knob: K_CONTIV,
            host_len_knob: K_CONTIV,
            node: pick(23, 256)?,
            node_knob: K_CONTIV,
            vxlan: pick(23, 257)?,
            vxlan_knob: K_CONTIV,
            service,
        })
    }

    fn checked_ranges(&self) -> Result<Ranges, IpamError> {
        for (knob, c) in [
            (K_POD, self.pod_subnet_cidr),
            (K_HOST, self.vpp_host_subnet_cidr),
            (K_NODE, self.node_interconnect_cidr),
            (K_VXLAN, self.vxlan_cidr),
            (K_SERVICE, self.service_cidr),
        ]
        .into_iter()
        .chain(self.contiv_cidr.map(|c| (K_CONTIV, c)))
        {
            prefix_len(knob, c.len.into())?;
        }
        let r = self.ranges()?;
        let len_check = |knob, value: u8, min: u8, max: u8, why| {
            if value < min || value > max {
                Err(IpamError::OutOfRange {
                    knob,
                    value: value.into(),
                    min: min.into(),
                    max: max.into(),
                    why,
                })
            } else {
                Ok(())
            }
        };
        len_check(
            r.pod_len_knob,
            r.pod_len,
            r.pod.len,
            MAX_POD_SLICE_LEN,
            "not shorter than the pod CIDR, and room for gateway, a pod and NAT loopback",
        )?;
        len_check(
            r.host_len_knob,
            r.host_len,
            r.host.len,
            MAX_LINK_LEN,
            "not shorter than the host-link CIDR, and room for both link ends",
        )?;
        len_check(
            r.node_knob,
            r.node.len,
            0,
            MAX_LINK_LEN,
            "room for at least two node addresses",
        )?;
        len_check(
            r.vxlan_knob,
            r.vxlan.len,
            0,
            MAX_LINK_LEN,
            "room for at least two BVI addresses",
        )?;
        // Overlapping ranges would make routes ambiguous (a pod IP also being
        // a ClusterIP, say), which only shows up later as lost traffic.
        let named = [
            (r.pod_knob, r.pod),
            (r.host_knob, r.host),
            (r.node_knob, r.node),
            (r.vxlan_knob, r.vxlan),
            (K_SERVICE, r.service),
        ];
        for (i, (knob_a, a)) in named.iter().enumerate() {
            for (knob_b, b) in &named[i + 1..] {
                if a.overlaps(b) {
                    return Err(IpamError::Overlap {
                        knob_a,
                        cidr_a: *a,
                        knob_b,
                        cidr_b: *b,
                    });
                }
            }
        }
        Ok(r)
    }

    /// Start-up validation: every range is well-formed and disjoint, and, if
    /// `nodeID` is set (non-zero), that node's addresses can be derived.
    pub fn validate(&self) -> Result<(), IpamError> {
        let r = self.checked_ranges()?;
        if self.node_id != 0 {
            self.derive(&r, self.node_id)?;
        }
        Ok(())
    }

    /// Everything derived for node `node_id` (SYSTEM.md 2.2). Validates the
    /// config first, so this is the only call a caller needs.
    pub fn for_node(&self, node_id: u32) -> Result<NodeIpam, IpamError> {
        let r = self.checked_ranges()?;
        self.derive(&r, node_id)
    }

    /// `(podIP XOR podSubnet network) >> (32 − oneNodePrefixLen)`, or `None`
    /// if `ip` is not in the pod CIDR. Slice 0 yields 0, which belongs to the
    /// node whose ID equals the number of slices (the wrap rule).
    pub fn node_id_of_pod_ip(&self, ip: Ipv4Addr) -> Option<u32> {
        let r = self.ranges().ok()?;
        if r.pod_len > 32 || r.pod_len < r.pod.len || !r.pod.contains(ip) {
            return None;
        }
        let offset = u32::from(ip) ^ u32::from(r.pod.network());
        // Shifting by 32 (a /0 slice) is undefined for u32; everything is slice 0.
        Some(offset.checked_shr(32 - u32::from(r.pod_len)).unwrap_or(0))
    }

    fn derive(&self, r: &Ranges, node_id: u32) -> Result<NodeIpam, IpamError> {
        if node_id == 0 {
            return Err(IpamError::NodeIdZero);
        }
        let pod_subnet = node_slice(r.pod, r.pod_len, node_id, r.pod_knob, r.pod_len_knob)?;
        let host_subnet = node_slice(r.host, r.host_len, node_id, r.host_knob, r.host_len_knob)?;
        // Slice lengths were validated (≤ /29 and ≤ /30), so these hosts exist;
        // the fallbacks only guard against a future change of those limits.
        let pod_gateway = slice_host(pod_subnet, 1, r.pod_len_knob)?;
        let nat_loopback = Ipv4Addr::from(u32::from(pod_subnet.broadcast()).wrapping_sub(1));
        let host_vpp_ip = slice_host(host_subnet, 1, r.host_len_knob)?;
        let host_linux_ip = slice_host(host_subnet, 2, r.host_len_knob)?;
        // The spec checks the subnet on purpose (gotcha 9): a gateway outside
        // the node subnet must not shift node addresses.
        let gateway = self.default_gateway.filter(|gw| r.node.contains(*gw));
        let node_ip = node_address(r.node, node_id, gateway, r.node_knob)?;
        let bvi_ip = node_address(r.vxlan, node_id, None, r.vxlan_knob)?;
        Ok(NodeIpam {
            node_id,
            pod_subnet,
            pod_gateway,
            nat_loopback,
            host_subnet,
            host_vpp_ip,
            host_linux_ip,
            node_ip,
            bvi_ip,
            service_cidr: r.service,
            pod_cidr: r.pod,
        })
    }
}

/// Slice `node_id` of `cluster` split into `/slice_len`, with the spec's wrap
/// rule: ID == number of slices means slice 0.
fn node_slice(
    cluster: Cidr,
    slice_len: u8,
    node_id: u32,
    knob: &'static str,
    len_knob: &'static str,
) -> Result<Cidr, IpamError> {
    let slices = 1u64 << slice_len.saturating_sub(cluster.len).min(32);
    let index = match u64::from(node_id) {
        n if n == slices => 0,
        n => n,
    };
    cluster
        .subnet(slice_len, index)
        .ok_or(IpamError::NodeIdTooLarge {
            node_id,
            knob,
            len_knob,
            cidr: cluster,
            slice_len,
            slices,
        })
}

fn slice_host(slice: Cidr, n: u32, len_knob: &'static str) -> Result<Ipv4Addr, IpamError> {
    slice.host(n).ok_or(IpamError::OutOfRange {
        knob: len_knob,
        value: slice.len.into(),
        min: 0,
        max: MAX_LINK_LEN.into(),
        why: "the per-node slice is too small",
    })
}

/// Host #N of `cidr` (with its mask), moved up by one when `gateway` is at or
/// below it. `gateway` must already be filtered to addresses inside `cidr`.
fn node_address(
    cidr: Cidr,
    node_id: u32,
    gateway: Option<Ipv4Addr>,
    knob: &'static str,
) -> Result<Cidr, IpamError> {
    let max_host = cidr.size().saturating_sub(2);
    let mut host = u64::from(node_id);
    let mut skip = "";
    if let Some(gw) = gateway {
        let gw_host = u64::from(u32::from(gw) & !cidr.mask());
        if gw_host <= host {
            host += 1;
            skip = " (moved up one to skip ipam.defaultGateway)";
        }
    }
    let err = IpamError::NoNodeAddress {
        node_id,
        knob,
        cidr,
        host,
        max_host,
        skip,
    };
    if host > max_host {
        return Err(err);
    }
    let addr = u32::try_from(host)
        .ok()
        .and_then(|h| cidr.host(h))
        .ok_or(err)?;
    Ok(Cidr::new(addr, cidr.len))
}

// ---------------------------------------------------------------------------
// Per-node result
// ---------------------------------------------------------------------------

/// Everything derived for one node (SYSTEM.md 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeIpam {
    pub node_id: u32,
    /// This node's pod slice, e.g. `10.1.N.0/24`.
    pub pod_subnet: Cidr,
    /// Host #1 of the pod slice; a local address of the data plane.
    pub pod_gateway: Ipv4Addr,
    /// Broadcast − 1 of the pod slice: the twice-NAT pool address.
    pub nat_loopback: Ipv4Addr,
    /// This node's host-link slice, e.g. `172.30.N.0/24`.
    pub host_subnet: Cidr,
    /// Data-plane side of the host link (`tap0`).
    pub host_vpp_ip: Ipv4Addr,
    /// Linux side of the host link (`vpp1`).
    pub host_linux_ip: Ipv4Addr,
    /// Uplink address with the node-interconnect mask.
    pub node_ip: Cidr,
    /// `loop0` address with the VXLAN CIDR's mask.
    pub bvi_ip: Cidr,
    pub service_cidr: Cidr,
    /// The whole cluster pod CIDR (all nodes).
    pub pod_cidr: Cidr,
}

impl NodeIpam {
    /// First and last address that may be given to a pod (host #2 and
    /// host #(2^hostbits − 3)), or `None` if the slice is too small.
    pub fn pod_ip_range(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        usable_range(self.pod_subnet).map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
    }
}

fn usable_range(slice: Cidr) -> Option<(u32, u32)> {
    let net = u32::from(slice.network());
    let bcast = u32::from(slice.broadcast());
    let first = net.checked_add(2)?;
    let last = bcast.checked_sub(2)?;
    (slice.size() >= 8 && first <= last).then_some((first, last))
}

// ---------------------------------------------------------------------------
// Pod IP allocation
// ---------------------------------------------------------------------------

/// Persisted form of a [`PodAllocator`] (kept in `dataDir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodAllocatorState {
    /// The slice the allocations belong to; a config change between runs is
    /// detected by comparing it with the freshly derived slice.
    pub pod_subnet: Cidr,
    /// The round-robin cursor: the last address handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_allocated: Option<Ipv4Addr>,
    /// `"<containerID>/<ifname>"` → IP.
    #[serde(default)]
    pub allocations: BTreeMap<String, Ipv4Addr>,
}

/// Round-robin pod IP allocator for one node's pod slice (SYSTEM.md 2.3).
///
/// Round robin rather than lowest-free so that a freed address is reused as
/// late as possible, which limits surprises from stale NAT/ACL sessions and
/// ARP entries that still name the old pod.
///
/// Reserved addresses (network, gateway, NAT loopback, broadcast) are derived
/// from the slice with the same rule as [`IpamConfig::for_node`], so the
/// persisted state is self-describing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PodAllocatorState", into = "PodAllocatorState")]
pub struct PodAllocator {
    slice: Cidr,
    usable: Option<(u32, u32)>,
    cursor: Option<u32>,
    by_key: BTreeMap<String, u32>,
    by_ip: BTreeMap<u32, String>,
}

impl PodAllocator {
    pub fn new(ipam: &NodeIpam) -> Self {
        Self::for_slice(ipam.pod_subnet)
    }

    fn for_slice(slice: Cidr) -> Self {
        let slice = slice.normalized();
        Self {
            slice,
            usable: usable_range(slice),
            cursor: None,
            by_key: BTreeMap::new(),
            by_ip: BTreeMap::new(),
        }
    }

    /// Rebuild from persisted state, checking it belongs to this node's slice.
    pub fn from_state(ipam: &NodeIpam, state: PodAllocatorState) -> Result<Self, IpamError> {
        let expected = ipam.pod_subnet.normalized();
        if state.pod_subnet.normalized() != expected {
            return Err(IpamError::StateSubnetMismatch {
                stored: state.pod_subnet,
                expected,
            });
        }
        Self::try_from(state)
    }

    pub fn state(&self) -> PodAllocatorState {
        PodAllocatorState {
            pod_subnet: self.slice,
            last_allocated: self.cursor.map(Ipv4Addr::from),
            allocations: self
                .by_key
                .iter()
                .map(|(k, ip)| (k.clone(), Ipv4Addr::from(*ip)))
                .collect(),
        }
    }

    pub fn pod_subnet(&self) -> Cidr {
        self.slice
    }

    /// Number of assignable pod addresses in the slice.
    pub fn capacity(&self) -> u64 {
        self.usable
            .map_or(0, |(a, b)| u64::from(b) - u64::from(a) + 1)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Round robin: the search starts just after the last address handed out
    /// and wraps from the last usable host (.253 for a /24) to .2, skipping
    /// gateway and NAT loopback. An ADD for a key that already has an IP
    /// returns the same IP (and does not move the cursor).
    pub fn allocate(&mut self, key: &str) -> Result<Ipv4Addr, IpamError> {
        if key.is_empty() {
            return Err(IpamError::EmptyKey);
        }
        if let Some(ip) = self.by_key.get(key) {
            return Ok(Ipv4Addr::from(*ip));
        }
        let Some((lo, hi)) = self.usable else {
            return Err(IpamError::NoPodAddresses { subnet: self.slice });
        };
        let start = match self.cursor {
            Some(c) if (lo..hi).contains(&c) => c + 1,
            _ => lo,
        };
        let found = self.first_free(start, hi).or_else(|| {
            (start > lo)
                .then(|| self.first_free(lo, start - 1))
                .flatten()
        });
        let Some(ip) = found else {
            return Err(IpamError::Exhausted {
                subnet: self.slice,
                capacity: self.capacity(),
                first: Ipv4Addr::from(lo),
                last: Ipv4Addr::from(hi),
            });
        };
        self.insert(key, ip);
        self.cursor = Some(ip);
        Ok(Ipv4Addr::from(ip))
    }

    /// First address in `from..=to` not held by anyone. Walks the occupied
    /// addresses in order, so the cost is the length of the occupied run
    /// rather than the size of the slice.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        let mut candidate = u64::from(from);
        for ip in self.by_ip.range(from..=to).map(|(ip, _)| u64::from(*ip)) {
            if ip != candidate {
                break;
            }
            candidate += 1;
        }
        u32::try_from(candidate).ok().filter(|c| *c <= to)
    }

    fn insert(&mut self, key: &str, ip: u32) {
        self.by_key.insert(key.to_string(), ip);
        self.by_ip.insert(ip, key.to_string());
    }

    /// Free the key's address. The cursor is not moved back: the freed address
    /// is reused only after the search wraps around.
    pub fn release(&mut self, key: &str) -> Option<Ipv4Addr> {
        let ip = self.by_key.remove(key)?;
        self.by_ip.remove(&ip);
        Some(Ipv4Addr::from(ip))
    }

    /// Re-learn an allocation (restart/resync). Restoring the same pair again
    /// is a no-op. A new entry above the cursor moves the cursor to it, as
    /// Contiv did, so that a rebuilt allocator continues after the highest
    /// address known in use.
    pub fn restore(&mut self, key: &str, ip: Ipv4Addr) -> Result<(), IpamError> {
        if self.check_restore(key, ip)? {
            let ip = u32::from(ip);
            self.insert(key, ip);
            if self.cursor.is_none_or(|c| c < ip) {
                self.cursor = Some(ip);
            }
        }
        Ok(())
    }

    /// `Ok(false)` if the pair is already known.
    fn check_restore(&self, key: &str, ip: Ipv4Addr) -> Result<bool, IpamError> {
        if key.is_empty() {
            return Err(IpamError::EmptyKey);
        }
        if !self.slice.contains(ip) {
            return Err(IpamError::OutsideSlice {
                key: key.to_string(),
                ip,
                subnet: self.slice,
            });
        }
        let x = u32::from(ip);
        let usable = self.usable.is_some_and(|(lo, hi)| (lo..=hi).contains(&x));
        if !usable {
            let net = u32::from(self.slice.network());
            let bcast = u32::from(self.slice.broadcast());
            let role = match x {
                _ if x == net => "network address",
                _ if x == bcast => "broadcast address",
                _ if x == net.wrapping_add(1) => "pod gateway",
                _ => "NAT loopback",
            };
            return Err(IpamError::Reserved {
                key: key.to_string(),
                ip,
                role,
                subnet: self.slice,
            });
        }
        if let Some(holder) = self.by_ip.get(&x) {
            if holder == key {
                return Ok(false);
            }
            return Err(IpamError::InUse {
                key: key.to_string(),
                ip,
                holder: holder.clone(),
            });
        }
        if let Some(existing) = self.by_key.get(key) {
            return Err(IpamError::KeyHasOtherIp {
                key: key.to_string(),
                existing: Ipv4Addr::from(*existing),
                requested: ip,
            });
        }
        Ok(true)
    }

    /// All allocations, sorted by IP.
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.by_ip
            .iter()
            .map(|(ip, key)| (key.clone(), Ipv4Addr::from(*ip)))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<Ipv4Addr> {
        self.by_key.get(key).map(|ip| Ipv4Addr::from(*ip))
    }

    /// Which key holds `ip`, if any.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&u32::from(ip)).map(String::as_str)
    }
}

impl TryFrom<PodAllocatorState> for PodAllocator {
    type Error = IpamError;

    fn try_from(state: PodAllocatorState) -> Result<Self, Self::Error> {
        let mut a = Self::for_slice(state.pod_subnet);
        for (key, ip) in &state.allocations {
            if a.check_restore(key, *ip)? {
                a.insert(key, u32::from(*ip));
            }
        }
        if let Some(last) = state.last_allocated {
            let x = u32::from(last);
            if !a.usable.is_some_and(|(lo, hi)| (lo..=hi).contains(&x)) {
                return Err(IpamError::StateBadCursor {
                    ip: last,
                    subnet: a.slice,
                });
            }
            a.cursor = Some(x);
        }
        Ok(a)
    }
}

impl From<PodAllocator> for PodAllocatorState {
    fn from(a: PodAllocator) -> Self {
        a.state()
    }
}

// ---------------------------------------------------------------------------
// MAC addresses (SYSTEM.md 2.4)
// ---------------------------------------------------------------------------

/// Pod-side MAC of every pod in the `fixed` scheme (2018 layout, seen in the
/// seed capture).
pub const FIXED_POD_MAC: MacAddrBytes = [0, 0, 0, 0, 0, 2];

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

fn fnv1a32_update(mut h: u32, data: &[u8]) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(FNV32_PRIME);
    }
    h
}

/// FNV-1a, 32 bit.
pub fn fnv1a32(data: &[u8]) -> u32 {
    fnv1a32_update(FNV32_OFFSET, data)
}

/// `hashed` scheme MACs for a pod interface: (pod side, data-plane side).
/// Both are `02:fe:` (unicast, locally administered) plus the four bytes of
/// h = FNV-1a-32 of `"<containerID>/<ifname>"`, low byte first; the
/// data-plane side uses !h so the two ends never collide.
pub fn pod_macs(container_id: &str, ifname: &str) -> (MacAddrBytes, MacAddrBytes) {
    let h = fnv1a32_update(fnv1a32(container_id.as_bytes()), b"/");
    let h = fnv1a32_update(h, ifname.as_bytes());
    let mac = |v: u32| {
        let [b0, b1, b2, b3] = v.to_le_bytes();
        [0x02, 0xfe, b0, b1, b2, b3]
    };
    (mac(h), mac(!h))
}

/// `loop0` MAC: `1a:2b:3c:4d:5e:NN`, NN = node ID. IDs above 255 (possible
/// with larger slices or contivCIDR mode) fold their upper bytes into octets
/// 2-4 by XOR, so BVI MACs stay distinct across the bridge domain while IDs
/// ≤ 255 keep the spec's exact value.
pub fn bvi_mac(node_id: u32) -> MacAddrBytes {
    let [b3, b2, b1, b0] = node_id.to_be_bytes();
    [0x1a, 0x2b, 0x3c ^ b3, 0x4d ^ b2, 0x5e ^ b1, b0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_edges() {
        let c = |len| Cidr::new(Ipv4Addr::new(10, 1, 2, 3), len);
        assert_eq!(c(0).mask(), 0);
        assert_eq!(c(32).mask(), u32::MAX);
        assert_eq!(c(40).mask(), u32::MAX);
        assert_eq!(c(0).size(), 1 << 32);
        assert_eq!(c(0).broadcast(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn usable_range_needs_a_slash_29() {
        let r = |s: &str| usable_range(s.parse().unwrap());
        assert_eq!(
            r("10.1.1.0/29"),
            Some((
                u32::from(Ipv4Addr::new(10, 1, 1, 2)),
                u32::from(Ipv4Addr::new(10, 1, 1, 5))
            ))
        );
        assert_eq!(r("10.1.1.0/30"), None);
        assert_eq!(r("255.255.255.255/32"), None);
        assert_eq!(r("0.0.0.0/31"), None);
    }

    #[test]
    fn node_slice_wrap_and_limit() {
        let cluster: Cidr = "10.1.0.0/16".parse().unwrap();
        let s = |n| node_slice(cluster, 24, n, K_POD, K_POD_LEN);
        assert_eq!(s(1).unwrap().to_string(), "10.1.1.0/24");
        assert_eq!(s(255).unwrap().to_string(), "10.1.255.0/24");
        assert_eq!(s(256).unwrap().to_string(), "10.1.0.0/24");
        assert!(matches!(
            s(257),
            Err(IpamError::NodeIdTooLarge { slices: 256, .. })
        ));
        // /0 split into /32: 2^32 slices, larger than any u32 ID.
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(
            node_slice(all, 32, u32::MAX, K_POD, K_POD_LEN)
                .unwrap()
                .addr,
            Ipv4Addr::new(255, 255, 255, 255)
        );
    }
}
