//! Service renderer: Service + EndpointSlice + Pod + Node → NAT44 mappings (SYSTEM.md section 6).
//!
//! [`render_services`] is a pure function of the cluster's object model and this node's
//! addresses ([`ServiceNode`]). It follows kube-proxy in nftables mode (D5):
//!
//! * **Addresses** (6.1): every IPv4 ClusterIP, every `spec.externalIPs` entry, every
//!   `status.loadBalancer.ingress[].ip` (except `ipMode: Proxy`, which kube-proxy leaves to the
//!   load balancer) and, for a port with a `nodePort`, every NodePort address of this node and
//!   of the other nodes. Headless, ExternalName and IPv6 single-stack services render nothing;
//!   so does a service without an allocated ClusterIP (as kube-proxy), with an event.
//!   `loadBalancerSourceRanges` cannot be expressed in the NAT configuration: such a service is
//!   rendered without it and reported (`SourceRangesNotEnforced`).
//! * **Protocols**: TCP and UDP. Any other protocol (SCTP included) is not rendered and yields an
//!   `UnsupportedProtocol` event; the service's other ports still work (D5.4).
//! * **Endpoints** (6.1, 6.2): EndpointSlices labelled `kubernetes.io/service-name` with
//!   `addressType: IPv4`; a service port takes the slice ports with the same name and protocol
//!   (the slice already carries the resolved target port, so a named `targetPort` works per
//!   endpoint). Only the first address of an endpoint counts, as in kube-proxy. Conditions:
//!   `ready`/`serving` unset mean true, `terminating` unset means false.
//! * **Sets** (6.2): `usable(S)` = ready endpoints of S, else serving-and-terminating ones
//!   (KEP-1669); `clusterSet = usable(all)`, `localSet = usable(local)`. A port "has endpoints"
//!   when `clusterSet` is non-empty (kube-proxy's `hasAnyEndpoints`: an endpoint that is neither
//!   ready nor serving-and-terminating does not count). Empty chosen set → `Drop` if the port has
//!   endpoints, else `Reject`.
//! * **Mappings** (6.3, 6.6): one per (address, port, protocol), sorted by that key; see
//!   [`AddressKind`] for the per-kind rules.
//!
//! Invalid objects (unparsable addresses, out-of-range ports, unknown enum values, missing
//! `spec`) never panic: the object is skipped and an event names it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use vecnet_nat::{Backend, BackendSet, IdentityMapping, NatConfig, Proto, StaticMapping};

use crate::ipam::{fnv1a32, Cidr, NodeIpam};
use crate::model::ClusterState;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (D5.7).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The API server's upper bound for the affinity timeout.
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;
/// VXLAN's UDP port: the node IP gets an identity mapping for it (6.5).
pub const VXLAN_PORT: u16 = 4789;

/// Event reasons (`ServiceEvent::reason`).
pub mod reason {
    /// A port with a protocol other than TCP or UDP (SCTP included) was not rendered.
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    /// The Service is malformed (bad address, port, enum value or missing spec); skipped.
    pub const INVALID_SERVICE: &str = "InvalidService";
    /// An EndpointSlice of the Service is malformed; its endpoints are ignored.
    pub const INVALID_ENDPOINT_SLICE: &str = "InvalidEndpointSlice";
    /// The Service has no ClusterIP (not headless, not ExternalName): nothing rendered.
    pub const MISSING_CLUSTER_IP: &str = "MissingClusterIP";
    /// The ClusterIP already belongs to a Service earlier in key order; not rendered here.
    pub const DUPLICATE_CLUSTER_IP: &str = "DuplicateClusterIP";
    /// Another Service port (earlier in key order) already owns this address:port/protocol.
    pub const MAPPING_CONFLICT: &str = "MappingConflict";
    /// `spec.loadBalancerSourceRanges` is set but cannot be enforced (no field for it in the
    /// NAT configuration); the service is rendered without it.
    pub const SOURCE_RANGES_NOT_ENFORCED: &str = "SourceRangesNotEnforced";
    /// The Service has EndpointSlices but none lists a port of this Service port's name and
    /// protocol (a named `targetPort` no endpoint resolves, a renamed port): connections to it
    /// are rejected as for a port without endpoints.
    pub const UNKNOWN_PORT_NAME: &str = "UnknownPortName";
}

// ---------------------------------------------------------------------------
// Inputs and outputs
// ---------------------------------------------------------------------------

/// What the renderer needs to know about this node and the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNode {
    pub node_name: String,
    /// Pod slice, NAT loopback, service CIDR, …
    pub ipam: NodeIpam,
    /// This node's addresses that serve NodePorts: host IPs, the host-link Linux side
    /// (172.30.N.2), node IP when present.
    pub nodeport_ips: Vec<Ipv4Addr>,
    /// Other nodes' node/management IPs (NodePorts on them are intercepted here too).
    pub other_node_ips: Vec<Ipv4Addr>,
    /// Addresses of internal origin besides the pod CIDR (host IPs, host-link IPs, node IPs).
    pub internal_ips: Vec<Ipv4Addr>,
    /// The host stack's own addresses: the host link's Linux side and the host IPs.
    pub host_stack_ips: Vec<Ipv4Addr>,
    /// Weight of a node-local endpoint (remote ones weigh 1). 0 is treated as 1.
    pub local_endpoint_weight: u32,
}

impl ServiceNode {
    /// A node known from IPAM alone: NodePorts on the host-link Linux side and the node IP;
    /// internal origin = those plus the data-plane side of the host link; no other nodes;
    /// local endpoint weight 1.
    pub fn new(node_name: impl Into<String>, ipam: NodeIpam) -> Self {
        let own = vec![ipam.host_linux_ip, ipam.node_ip.addr];
        Self {
            node_name: node_name.into(),
            ipam,
            nodeport_ips: own.clone(),
            other_node_ips: Vec::new(),
            internal_ips: [own, vec![ipam.host_vpp_ip]].concat(),
            host_stack_ips: vec![ipam.host_linux_ip],
            local_endpoint_weight: 1,
        }
    }

    /// Adds host-stack addresses (every IPv4 address of the host netns except loopback and
    /// `vpp1`'s own, 2.2): they serve NodePorts and are of internal origin.
    pub fn with_host_ips(mut self, ips: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        for ip in ips {
            push_unique(&mut self.nodeport_ips, ip);
            push_unique(&mut self.internal_ips, ip);
            push_unique(&mut self.host_stack_ips, ip);
        }
        self
    }

    /// Learns addresses from Node objects (`status.addresses` of type `InternalIP` or
    /// `ExternalIP`, IPv4 only): this node's become NodePort and internal addresses, the other
    /// nodes' become [`ServiceNode::other_node_ips`]. Unparsable entries are ignored.
    pub fn with_cluster_nodes(mut self, state: &ClusterState) -> Self {
        for (name, node) in &state.nodes {
            let addrs = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.trim().parse::<Ipv4Addr>().ok());
            for ip in addrs {
                if *name == self.node_name {
                    push_unique(&mut self.nodeport_ips, ip);
                    push_unique(&mut self.internal_ips, ip);
                } else {
                    push_unique(&mut self.other_node_ips, ip);
                }
            }
        }
        self
    }

    /// Whether this node has a node (uplink) IP: the IPAM node IP is one of its NodePort
    /// addresses.
    pub fn has_node_ip(&self) -> bool {
        self.nodeport_ips.contains(&self.ipam.node_ip.addr)
    }

    fn weight_local(&self) -> u32 {
        self.local_endpoint_weight.max(1)
    }
}

fn push_unique(v: &mut Vec<Ipv4Addr>, ip: Ipv4Addr) {
    if !v.contains(&ip) {
        v.push(ip);
    }
}

/// Something the operator should know about a Service (a Kubernetes Event in kube mode; log,
/// event history and a counter everywhere).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceEvent {
    /// `"Service ns/name"` or `"EndpointSlice ns/name"`.
    pub object: String,
    /// One of [`reason`].
    pub reason: String,
    pub message: String,
}

/// The result of rendering every Service for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRender {
    /// Sorted by (external IP, external port, protocol); keys are unique.
    pub mappings: Vec<StaticMapping>,
    /// Local pod IPs that back at least one service: their TAPs get the NAT `inside` role.
    /// Every endpoint of a rendered service port counts, whatever its conditions, so that
    /// replies of sessions to a terminating or unready backend are still translated back.
    pub backend_pod_ips: BTreeSet<Ipv4Addr>,
    /// ClusterIPs that got at least one mapping. Traffic to one of them on a port or protocol
    /// without a mapping is rejected (6.7); those outside `serviceCIDR` are not covered by the
    /// serviceCIDR reject route, so the data plane needs them explicitly.
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    /// In render order: services by key, then their ports.
    pub events: Vec<ServiceEvent>,
}

/// Which address of a service a mapping is for; decides its endpoint sets (6.2) and twice-NAT
/// (6.6).
///
/// | kind | internal origin | external origin | `twice_nat_external` |
/// |---|---|---|---|
/// | ClusterIP | ITP=Local ? local : cluster | same as internal | false |
/// | NodePort on this node, external IP, LB IP | cluster (short-circuit) | ETP=Local ? local : cluster | ETP=Cluster |
/// | NodePort on another node's IP | cluster | cluster | true |
///
/// A NodePort on another node's IP is reached from outside only through that node, so its
/// external column never applies; it is made "cluster + twice-NAT" so that, if such traffic did
/// arrive, the reply would still come back through this node's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressKind {
    ClusterIp,
    NodePort,
    OtherNodePort,
    ExternalIp,
    LoadBalancer,
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Renders every Service of `state` for `node`. Deterministic: the output depends only on the
/// objects and the node, never on arrival order.
pub fn render_services(state: &ClusterState, node: &ServiceNode) -> ServiceRender {
    render_services_cached(state, node, None)
}

/// What each Service contributed at the last render, with the objects it was computed from
/// (SYSTEM.md 1.5: a change re-renders only what it touches). Owned by the agent across renders.
#[derive(Debug, Default)]
pub struct ServiceCache {
    node: Option<ServiceNode>,
    entries: HashMap<String, CacheEntry, FoldState>,
    /// Services computed anew at the last render (the others came from the cache).
    pub last_computed: usize,
    /// Render count: an entry not seen by the last render belongs to a deleted Service.
    generation: u64,
}

/// A Service's contribution and the stamps of the objects it came from
/// ([`ClusterState::service_stamps`]): equal stamps, same objects.
#[derive(Debug)]
struct CacheEntry {
    service: u64,
    slices: Vec<u64>,
    output: ServiceOutput,
    /// The last render that found the Service.
    seen: u64,
}

/// [`render_services`] with a cache: a Service whose object, EndpointSlices and node are
/// unchanged since the last render reuses what it contributed then; only the checks between
/// Services (ClusterIP owners, mapping conflicts, affinity groups) run for all. The output is
/// the same as without a cache (tests/service.rs checks it).
pub fn render_services_cached(
    state: &ClusterState,
    node: &ServiceNode,
    mut cache: Option<&mut ServiceCache>,
) -> ServiceRender {
    let slices = index_slices(state);
    if let Some(c) = cache.as_deref_mut() {
        if c.node.as_ref() != Some(node) {
            c.entries.clear();
            c.node = Some(node.clone());
        }
        c.last_computed = 0;
        c.generation = c.generation.wrapping_add(1);
    }
    let none: Vec<(&str, &EndpointSlice)> = Vec::new();
    // Phase 1: bring every Service's output up to date (from the cache when its objects did
    // not change). Outputs that cannot be cached are kept here for this render only.
    let mut uncached: HashMap<&str, ServiceOutput, FoldState> = HashMap::default();
    for (key, svc) in &state.services {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key.as_str()));
        let own = slices.get(&(ns, name)).unwrap_or(&none);
        let svc_stamp = state.service_stamps.get(key).copied();
        let slice_stamp = |k: &str| state.slice_stamps.get(k).copied();
        if let (Some(c), Some(svc_stamp)) = (cache.as_deref_mut(), svc_stamp) {
            if let Some(e) = c.entries.get_mut(key.as_str()) {
                let same = e.service == svc_stamp
                    && e.slices.len() == own.len()
                    && e.slices
                        .iter()
                        .zip(own.iter())
                        .all(|(s, (k, _))| slice_stamp(k) == Some(*s));
                if same {
                    e.seen = c.generation;
                    continue;
                }
            }
        }
        if let Some(c) = cache.as_deref_mut() {
            c.last_computed += 1;
        }
        let mut cm = Compute {
            state,
            node,
            slices: own,
            out: ServiceOutput::default(),
            used_pods: Cell::new(false),
        };
        cm.service(key, svc);
        let output = cm.out;
        // Stamps of the Service and its slices; `None` if any has none (inserted without
        // `apply`). Endpoint locality read from Pod objects (no nodeName in the slice) depends
        // on more than the Service and its slices. Either way the output is not cached.
        let stamps = svc_stamp.zip(
            own.iter()
                .map(|(k, _)| slice_stamp(k))
                .collect::<Option<Vec<u64>>>(),
        );
        match (cache.as_deref_mut(), stamps) {
            (Some(c), Some((service, slices))) if !cm.used_pods.get() => {
                c.entries.insert(
                    key.clone(),
                    CacheEntry {
                        service,
                        slices,
                        output,
                        seen: c.generation,
                    },
                );
            }
            (c, _) => {
                if let Some(c) = c {
                    c.entries.remove(key.as_str());
                }
                uncached.insert(key.as_str(), output);
            }
        }
    }
    // Services that went away.
    if let Some(c) = cache.as_deref_mut() {
        let g = c.generation;
        c.entries.retain(|_, e| e.seen == g);
    }
    // Phase 2: merge every output in key order; the checks between Services run for all.
    let entries = cache.as_deref().map(|c| &c.entries);
    let mut r = Renderer {
        out: BTreeMap::new(),
        cluster_ip_owner: BTreeMap::new(),
        groups: BTreeMap::new(),
        backend_pod_ips: BTreeSet::new(),
        cluster_ips: BTreeSet::new(),
        events: Vec::new(),
    };
    for key in state.services.keys() {
        let output = match uncached.get(key.as_str()) {
            Some(o) => Some(o),
            None => entries.and_then(|e| e.get(key.as_str())).map(|e| &e.output),
        };
        if let Some(o) = output {
            r.replay(o);
        }
    }
    ServiceRender {
        mappings: r.out.into_values().map(|(_, m)| m).collect(),
        backend_pod_ips: r.backend_pod_ips,
        cluster_ips: r.cluster_ips,
        events: r.events,
    }
}

/// NAT config pieces that follow from the node (not from Services), plus the render's mappings:
///
/// * twice-NAT pool = the NAT loopback;
/// * internal prefixes = the cluster pod CIDR, then every `internal_ips` and `nodeport_ips`
///   address as a /32 (sorted, deduplicated; NodePort addresses are this node's own, hence
///   internal by 6.2);
/// * forwarding on;
/// * when the node has a node IP ([`ServiceNode::has_node_ip`]): main pool = the node IP, and
///   the identity mappings of 6.5 (node IP UDP 4789, node IP address-only).
///
/// Timeouts, table size and the control reserve keep [`NatConfig::default`]'s values (they come
/// from the config file, not from the node).
pub fn nat_config(render: &ServiceRender, node: &ServiceNode) -> NatConfig {
    let ipam = &node.ipam;
    let pod = ipam.pod_cidr.normalized();
    let mut hosts: BTreeSet<Ipv4Addr> = node.internal_ips.iter().copied().collect();
    hosts.extend(node.nodeport_ips.iter().copied());
    let mut internal_prefixes = vec![(pod.addr, pod.len)];
    internal_prefixes.extend(
        hosts
            .into_iter()
            .filter(|ip| !pod.contains(*ip))
            .map(|ip| (ip, 32)),
    );
    let (pool, identity) = if node.has_node_ip() {
        let ip = ipam.node_ip.addr;
        (
            vec![ip],
            vec![
                IdentityMapping {
                    ip,
                    port: Some((Proto::Udp, VXLAN_PORT)),
                    vrf: 0,
                },
                IdentityMapping {
                    ip,
                    port: None,
                    vrf: 0,
                },
            ],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    NatConfig {
        mappings: render.mappings.clone(),
        identity,
        pool,
        twice_nat_pool: vec![ipam.nat_loopback],
        internal_prefixes,
        host_addresses: node
            .host_stack_ips
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        forwarding: true,
        ..NatConfig::default()
    }
}

type MappingKey = (Ipv4Addr, u16, Proto);

/// What one Service contributes, in render order, before the checks that involve other
/// Services: a function of the Service, its EndpointSlices and the node alone, hence cacheable.
#[derive(Debug, Clone, Default)]
struct ServiceOutput {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Event(ServiceEvent),
    /// The Service's ClusterIPs: the first Service in key order to claim one keeps it.
    ClusterIps {
        object: String,
        key: String,
        ips: Vec<Ipv4Addr>,
    },
    Port(PortOutput),
}

/// One Service port's mappings for every address it has (ClusterIPs not yet filtered by
/// ownership, affinity group not yet assigned).
#[derive(Debug, Clone)]
struct PortOutput {
    object: String,
    tag: String,
    wanted: Vec<(AddressKind, StaticMapping)>,
    /// Local pod endpoints: they get the NAT `inside` role if a mapping is rendered.
    local_pod_ips: Vec<Ipv4Addr>,
}

/// Computes one Service's [`ServiceOutput`].
struct Compute<'a> {
    state: &'a ClusterState,
    node: &'a ServiceNode,
    /// The Service's slices, in slice key order.
    slices: &'a [(&'a str, &'a EndpointSlice)],
    out: ServiceOutput,
    /// Whether endpoint locality was read from a Pod object.
    used_pods: Cell<bool>,
}

/// Merges the Services' outputs in key order (borrowing their strings: nothing is copied per
/// Service but the mappings themselves).
struct Renderer<'a> {
    /// Mapping key → (owner tag, mapping).
    out: BTreeMap<MappingKey, (&'a str, StaticMapping)>,
    cluster_ip_owner: BTreeMap<Ipv4Addr, &'a str>,
    /// Affinity group → tag that holds it.
    groups: BTreeMap<u32, &'a str>,
    backend_pod_ips: BTreeSet<Ipv4Addr>,
    cluster_ips: BTreeSet<Ipv4Addr>,
    events: Vec<ServiceEvent>,
}

/// (namespace, service name) → its slices in key order (borrowed: no copy per render).
type SliceIndex<'a> = HashMap<(&'a str, &'a str), Vec<(&'a str, &'a EndpointSlice)>, FoldState>;

/// A fast, seeded-once hasher: the keys are object names from our own source, and these maps
/// are rebuilt or probed once per Service on every render.
type FoldState = foldhash::fast::FixedState;

fn index_slices(state: &ClusterState) -> SliceIndex<'_> {
    let mut m: SliceIndex<'_> =
        HashMap::with_capacity_and_hasher(state.endpoint_slices.len(), FoldState::default());
    for (key, slice) in &state.endpoint_slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        m.entry((ns, svc.as_str()))
            .or_default()
            .push((key.as_str(), slice));
    }
    m
}

/// A validated service port.
struct PortSpec {
    /// `""` when unnamed.
    name: String,
    /// Upper-case API spelling, for matching slice ports and for events.
    proto_name: String,
    /// `None` for a protocol vecnet does not render (SCTP, anything but TCP and UDP).
    proto: Option<Proto>,
    port: u16,
    node_port: Option<u16>,
}

/// A validated service.
struct SvcSpec {
    namespace: String,
    name: String,
    cluster_ips: Vec<Ipv4Addr>,
    external_ips: Vec<Ipv4Addr>,
    lb_ips: Vec<Ipv4Addr>,
    etp_local: bool,
    itp_local: bool,
    affinity_timeout: u32,
    /// `spec.loadBalancerSourceRanges` is non-empty on a service with LB addresses.
    source_ranges: bool,
    ports: Vec<PortSpec>,
}

/// One endpoint of one service port.
#[derive(Debug, Clone, Copy)]
struct Ep {
    ip: Ipv4Addr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// One parsed slice port: (name, protocol, port).
type SlicePort = (String, String, u16);

struct ParsedSlice {
    ports: Vec<SlicePort>,
    /// (ip, ready, serving, terminating, local)
    endpoints: Vec<(Ipv4Addr, bool, bool, bool, bool)>,
}

/// Outcome of parsing an address string that may be IPv6 (silently not ours) or garbage.
enum Addr {
    V4(Ipv4Addr),
    V6,
    Bad,
}

fn parse_addr(s: &str) -> Addr {
    let s = s.trim();
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        Addr::V4(ip)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        Addr::V6
    } else {
        Addr::Bad
    }
}

/// An IPv4 address list where IPv6 entries are skipped and anything else is an error.
fn parse_v4_list<'s>(
    what: &str,
    list: impl IntoIterator<Item = &'s String>,
) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for s in list {
        match parse_addr(s) {
            Addr::V4(ip) => {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            Addr::V6 => {}
            Addr::Bad => return Err(format!("{what}: {s:?} is not an IP address")),
        }
    }
    Ok(out)
}

fn port_u16(what: &str, v: i32) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("{what}: {v} is out of range 0-65535"))
}

/// What a Service amounts to before endpoints are considered.
enum Validated {
    /// Headless, ExternalName or no ClusterIP: renders nothing (with an optional event).
    Nothing(Option<(&'static str, String)>),
    Render(SvcSpec),
}

fn validate_service(key: &str, svc: &Service) -> Result<Validated, String> {
    let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
    let spec = svc.spec.as_ref().ok_or("spec: missing")?;
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    match type_ {
        "ExternalName" => return Ok(Validated::Nothing(None)),
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        other => return Err(format!("spec.type: unknown type {other:?}")),
    }
    // clusterIPs is authoritative when set; clusterIP is its first entry.
    let raw_ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => Vec::new(),
    };
    if raw_ips.iter().any(|s| s.trim() == "None") {
        return Ok(Validated::Nothing(None));
    }
    if raw_ips.is_empty() {
        return Ok(Validated::Nothing(Some((
            reason::MISSING_CLUSTER_IP,
            "spec.clusterIP is not set (no address allocated): nothing rendered".into(),
        ))));
    }
    let cluster_ips = parse_v4_list("spec.clusterIPs", &raw_ips)?;
    if cluster_ips.is_empty() {
        // IPv6 single-stack: the IPv6 proxy's business, NodePorts and external IPs included.
        return Ok(Validated::Nothing(None));
    }
    let external_ips = parse_v4_list("spec.externalIPs", spec.external_ips.iter().flatten())?;
    // status.loadBalancer.ingress[].ip; `ipMode: Proxy` means the load balancer delivers to
    // the nodes itself, so kube-proxy does not intercept the address (KEP-1860).
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let lb_raw: Vec<String> = ingress
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    let lb_ips = parse_v4_list("status.loadBalancer.ingress[].ip", &lb_raw)?;
    let source_ranges = !lb_ips.is_empty()
        && spec
            .load_balancer_source_ranges
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| !r.trim().is_empty()));
    let policy = |field: &str, v: Option<&str>| -> Result<bool, String> {
        match v {
            None | Some("Cluster") => Ok(false),
            Some("Local") => Ok(true),
            Some(o) => Err(format!("spec.{field}: unknown policy {o:?}")),
        }
    };
    let etp_local = policy(
        "externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    )?;
    let itp_local = policy(
        "internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    )?;
    let affinity_timeout = match spec.session_affinity.as_deref() {
        None | Some("None") => 0,
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match t {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t) => u32::try_from(t)
                    .ok()
                    .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
                    .ok_or_else(|| {
                        format!(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: {t} is out of \
                             range 1-{MAX_AFFINITY_TIMEOUT}"
                        )
                    })?,
            }
        }
        Some(o) => return Err(format!("spec.sessionAffinity: unknown value {o:?}")),
    };
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        ports.push(validate_port(i, p)?);
    }
    Ok(Validated::Render(SvcSpec {
        namespace: namespace.to_string(),
        name: name.to_string(),
        cluster_ips,
        external_ips,
        lb_ips,
        etp_local,
        itp_local,
        affinity_timeout,
        source_ranges,
        ports,
    }))
}

fn validate_port(i: usize, p: &ServicePort) -> Result<PortSpec, String> {
    let port = port_u16(&format!("spec.ports[{i}].port"), p.port)?;
    let node_port = match p.node_port {
        None | Some(0) => None,
        Some(n) => Some(port_u16(&format!("spec.ports[{i}].nodePort"), n)?),
    };
    let proto_name = p.protocol.clone().unwrap_or_else(|| "TCP".into());
    let proto = match proto_name.as_str() {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        _ => None,
    };
    Ok(PortSpec {
        name: p.name.clone().unwrap_or_default(),
        proto_name,
        proto,
        port,
        node_port,
    })
}

impl<'a> Renderer<'a> {
    fn replay(&mut self, o: &'a ServiceOutput) {
        let mut allowed: Vec<Ipv4Addr> = Vec::new();
        for step in &o.steps {
            match step {
                Step::Event(e) => self.events.push(e.clone()),
                Step::ClusterIps { object, key, ips } => {
                    for ip in ips {
                        match self.cluster_ip_owner.get(ip) {
                            Some(owner) if owner != key => {
                                let msg = format!(
                                    "ClusterIP {ip} is already used by Service {owner}; not \
                                     rendered for this service"
                                );
                                self.events.push(ServiceEvent {
                                    object: object.clone(),
                                    reason: reason::DUPLICATE_CLUSTER_IP.to_string(),
                                    message: msg,
                                });
                            }
                            _ => {
                                self.cluster_ip_owner.insert(*ip, key);
                                allowed.push(*ip);
                            }
                        }
                    }
                }
                Step::Port(p) => self.port(p, &allowed),
            }
        }
    }

    fn port(&mut self, p: &'a PortOutput, allowed: &[Ipv4Addr]) {
        let group = self.affinity_group(&p.tag);
        let tag: &'a str = &p.tag;
        let mut rendered = false;
        for (kind, m) in &p.wanted {
            if *kind == AddressKind::ClusterIp && !allowed.contains(&m.external_ip) {
                continue;
            }
            let m = StaticMapping {
                affinity_group: group,
                ..m.clone()
            };
            let k = (m.external_ip, m.external_port, m.proto);
            match self.out.get(&k) {
                None => {
                    if *kind == AddressKind::ClusterIp {
                        self.cluster_ips.insert(m.external_ip);
                    }
                    self.out.insert(k, (tag, m));
                    rendered = true;
                }
                // The same service port listing one address twice (say an external IP that is
                // also its LB IP): identical mapping, nothing to report.
                Some((owner, old)) if *owner == tag && *old == m => {}
                Some((owner, _)) => {
                    let msg = format!(
                        "{} {}:{} is already mapped by {owner}; not rendered for {tag}",
                        m.proto.as_str().to_uppercase(),
                        m.external_ip,
                        m.external_port
                    );
                    self.events.push(ServiceEvent {
                        object: p.object.clone(),
                        reason: reason::MAPPING_CONFLICT.to_string(),
                        message: msg,
                    });
                }
            }
        }
        if rendered {
            self.backend_pod_ips.extend(p.local_pod_ips.iter().copied());
        }
    }
}

impl<'a> Compute<'a> {
    fn event(&mut self, object: String, reason: &str, message: String) {
        self.out.steps.push(Step::Event(ServiceEvent {
            object,
            reason: reason.to_string(),
            message,
        }));
    }

    fn service(&mut self, key: &str, svc: &Service) {
        let object = format!("Service {key}");
        let spec = match validate_service(key, svc) {
            Ok(Validated::Nothing(None)) => return,
            Ok(Validated::Nothing(Some((reason, msg)))) => {
                self.event(object, reason, msg);
                return;
            }
            Ok(Validated::Render(s)) => s,
            Err(msg) => {
                self.event(
                    object,
                    reason::INVALID_SERVICE,
                    format!("{msg}; not rendered"),
                );
                return;
            }
        };

        // ClusterIPs: the first service (in key order) to claim one keeps it; decided when
        // the outputs are merged.
        self.out.steps.push(Step::ClusterIps {
            object: object.clone(),
            key: key.to_string(),
            ips: spec.cluster_ips.clone(),
        });
        let cluster_ips = spec.cluster_ips.clone();

        let slices = self.parse_slices();
        if spec.source_ranges {
            let msg = "spec.loadBalancerSourceRanges is not enforced by vecnet (the NAT \
                       configuration has no source filter): the load balancer IPs accept \
                       every source"
                .to_string();
            self.event(object.clone(), reason::SOURCE_RANGES_NOT_ENFORCED, msg);
        }
        for p in &spec.ports {
            let Some(proto) = p.proto else {
                let msg = format!(
                    "port {} ({}/{}): protocol {} is not supported (TCP and UDP only); this port \
                     is not rendered, the others are",
                    port_label(p),
                    p.port,
                    p.proto_name,
                    p.proto_name
                );
                self.event(object.clone(), reason::UNSUPPORTED_PROTOCOL, msg);
                continue;
            };
            if p.port == 0 {
                continue;
            }
            self.service_port(&object, &spec, &cluster_ips, p, proto, &slices);
        }
    }

    /// The service's slices, parsed once; malformed ones are reported and ignored.
    fn parse_slices(&mut self) -> Vec<ParsedSlice> {
        let mut out = Vec::new();
        for &(key, slice) in self.slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            match self.parse_slice(slice) {
                Ok(p) => out.push(p),
                Err(msg) => {
                    let msg = format!("{msg}; its endpoints are ignored");
                    self.event(
                        format!("EndpointSlice {key}"),
                        reason::INVALID_ENDPOINT_SLICE,
                        msg,
                    );
                }
            }
        }
        out
    }

    fn parse_slice(&self, slice: &EndpointSlice) -> Result<ParsedSlice, String> {
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            // A port without a number means "all ports"; kube-proxy ignores it.
            let Some(n) = p.port else { continue };
            let n = port_u16(&format!("ports[{i}].port"), n)?;
            if n == 0 {
                return Err(format!("ports[{i}].port: 0 is not a valid port"));
            }
            ports.push((
                p.name.clone().unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                n,
            ));
        }
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        let mut endpoints = Vec::new();
        for (i, e) in slice.endpoints.iter().enumerate() {
            let Some(first) = e.addresses.first() else {
                return Err(format!("endpoints[{i}].addresses: empty"));
            };
            let ip = match first.trim().parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                Err(_) => {
                    return Err(format!(
                        "endpoints[{i}].addresses[0]: {first:?} is not an IPv4 address"
                    ))
                }
            };
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = self.is_local(ns, e, ip);
            endpoints.push((ip, ready, serving, terminating, local));
        }
        Ok(ParsedSlice { ports, endpoints })
    }

    /// Endpoint locality (6.1): `nodeName` when set; else the node of the Pod in `targetRef`
    /// when that Pod is known and scheduled; else the address (this node's pod slice, NodePort
    /// or internal addresses — a host-network endpoint such as the seed's 10.20.0.2).
    fn is_local(
        &self,
        ns: &str,
        e: &k8s_openapi::api::discovery::v1::Endpoint,
        ip: Ipv4Addr,
    ) -> bool {
        if let Some(n) = e.node_name.as_deref().filter(|n| !n.is_empty()) {
            return n == self.node.node_name;
        }
        let pod_node = e
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| {
                self.used_pods.set(true);
                let name = r.name.as_deref()?;
                let pns = r.namespace.as_deref().unwrap_or(ns);
                self.state.pods.get(&format!("{pns}/{name}"))
            })
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(n) = pod_node {
            return n == self.node.node_name;
        }
        self.node.ipam.pod_subnet.contains(ip)
            || self.node.nodeport_ips.contains(&ip)
            || self.node.internal_ips.contains(&ip)
    }

    fn service_port(
        &mut self,
        object: &str,
        spec: &SvcSpec,
        cluster_ips: &[Ipv4Addr],
        p: &PortSpec,
        proto: Proto,
        slices: &[ParsedSlice],
    ) {
        // Endpoints of this port, deduplicated by ip:port (a ready duplicate wins, as in
        // kube-proxy's slice cache), in ip:port order.
        let mut eps: BTreeMap<(Ipv4Addr, u16), Ep> = BTreeMap::new();
        let named_in_a_slice = slices.iter().any(|s| {
            s.ports
                .iter()
                .any(|(n, pr, _)| *n == p.name && *pr == p.proto_name)
        });
        if !named_in_a_slice && slices.iter().any(|s| !s.endpoints.is_empty()) {
            let name = if p.name.is_empty() {
                "(unnamed)"
            } else {
                p.name.as_str()
            };
            self.event(
                object.to_string(),
                reason::UNKNOWN_PORT_NAME,
                format!(
                    "port {name}/{} {}: no EndpointSlice of the Service has a port of that name and protocol; connections are rejected",
                    p.proto_name, p.port
                ),
            );
        }
        for s in slices {
            let Some(&(_, _, port)) = s
                .ports
                .iter()
                .find(|(n, pr, _)| *n == p.name && *pr == p.proto_name)
            else {
                continue;
            };
            for &(ip, ready, serving, terminating, local) in &s.endpoints {
                let ep = Ep {
                    ip,
                    port,
                    ready,
                    serving,
                    terminating,
                    local,
                };
                eps.entry((ip, port))
                    .and_modify(|old| {
                        if ready && !old.ready {
                            *old = ep;
                        }
                    })
                    .or_insert(ep);
            }
        }
        let all: Vec<Ep> = eps.into_values().collect();
        let local: Vec<Ep> = all.iter().filter(|e| e.local).copied().collect();
        let cluster_set = usable(&all);
        let local_set = usable(&local);
        let has_endpoints = !cluster_set.is_empty();
        let weight_local = self.node.weight_local();
        let set = |eps: &[Ep]| -> BackendSet {
            if eps.is_empty() {
                return if has_endpoints {
                    BackendSet::Drop
                } else {
                    BackendSet::Reject
                };
            }
            BackendSet::Backends(
                eps.iter()
                    .map(|e| Backend {
                        ip: e.ip,
                        port: e.port,
                        weight: if e.local { weight_local } else { 1 },
                        vrf: 0,
                    })
                    .collect(),
            )
        };
        let cluster = set(&cluster_set);
        let local_bs = set(&local_set);

        let tag = format!("{}/{}:{}", spec.namespace, spec.name, port_label(p));
        // Assigned when the outputs are merged (it depends on the other Services' tags).
        let group = 0;
        let base = StaticMapping {
            external_ip: Ipv4Addr::UNSPECIFIED,
            external_port: p.port,
            proto,
            vrf: 0,
            internal: cluster.clone(),
            external: cluster.clone(),
            twice_nat_external: false,
            self_twice_nat: true,
            out2in_only: true,
            affinity_timeout: spec.affinity_timeout,
            affinity_group: group,
            tag: tag.clone(),
        };

        let mut wanted: Vec<(AddressKind, StaticMapping)> = Vec::new();
        let itp = if spec.itp_local {
            local_bs.clone()
        } else {
            cluster.clone()
        };
        for ip in cluster_ips {
            wanted.push((
                AddressKind::ClusterIp,
                StaticMapping {
                    external_ip: *ip,
                    internal: itp.clone(),
                    external: itp.clone(),
                    ..base.clone()
                },
            ));
        }
        let etp = if spec.etp_local {
            local_bs.clone()
        } else {
            cluster.clone()
        };
        let external_kind = |ip: Ipv4Addr, port: u16| StaticMapping {
            external_ip: ip,
            external_port: port,
            external: etp.clone(),
            twice_nat_external: !spec.etp_local,
            ..base.clone()
        };
        if let Some(np) = p.node_port {
            for ip in &self.node.nodeport_ips {
                wanted.push((AddressKind::NodePort, external_kind(*ip, np)));
            }
            for ip in &self.node.other_node_ips {
                if self.node.nodeport_ips.contains(ip) {
                    continue;
                }
                let m = StaticMapping {
                    external_ip: *ip,
                    external_port: np,
                    twice_nat_external: true,
                    ..base.clone()
                };
                wanted.push((AddressKind::OtherNodePort, m));
            }
        }
        for ip in &spec.external_ips {
            wanted.push((AddressKind::ExternalIp, external_kind(*ip, p.port)));
        }
        for ip in &spec.lb_ips {
            wanted.push((AddressKind::LoadBalancer, external_kind(*ip, p.port)));
        }

        let pod_subnet = self.node.ipam.pod_subnet;
        let local_pod_ips = all
            .iter()
            .filter(|e| e.local && pod_subnet.contains(e.ip))
            .map(|e| e.ip)
            .collect();
        self.out.steps.push(Step::Port(PortOutput {
            object: object.to_string(),
            tag,
            wanted,
            local_pod_ips,
        }));
    }
}

impl<'a> Renderer<'a> {
    /// A stable affinity group per service port: FNV-1a of the tag, probed linearly past
    /// groups already taken by other tags in this render (and past 0).
    fn affinity_group(&mut self, tag: &'a str) -> u32 {
        let mut g = fnv1a32(tag.as_bytes());
        loop {
            if g != 0 {
                match self.groups.get(&g) {
                    None => {
                        self.groups.insert(g, tag);
                        return g;
                    }
                    Some(t) if *t == tag => return g,
                    Some(_) => {}
                }
            }
            g = g.wrapping_add(1);
        }
    }
}

fn port_label(p: &PortSpec) -> String {
    if p.name.is_empty() {
        p.port.to_string()
    } else {
        p.name.clone()
    }
}

/// Ready endpoints, else serving-and-terminating ones (KEP-1669), else none.
fn usable(eps: &[Ep]) -> Vec<Ep> {
    let ready: Vec<Ep> = eps.iter().filter(|e| e.ready).copied().collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.iter()
        .filter(|e| e.serving && e.terminating)
        .copied()
        .collect()
}

// ---------------------------------------------------------------------------
// Enumerate mode (6.11, 13.2)
// ---------------------------------------------------------------------------

/// What happens to a new connection, without choosing a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Load-balanced over `set`. `source_translated`: the client's source is (or may be)
    /// rewritten to the twice-NAT pool — always for external-origin clients of a twice-NAT
    /// mapping; for hairpin, when the client's own IP is one of the candidates (the source is
    /// translated exactly when that candidate is drawn).
    Backends {
        set: BTreeSet<(Ipv4Addr, u16)>,
        source_translated: bool,
    },
    /// The port has endpoints but none for this origin: dropped silently.
    Drop,
    /// No endpoints (or, via [`enumerate_node`], an unknown port of a ClusterIP or an
    /// unallocated serviceCIDR address): ICMP port unreachable.
    Reject,
    /// No mapping: the packet is not translated and follows the FIB.
    NotAService,
}

/// Resolves a new connection against the mappings of `cfg`: the mapping for
/// (`dst`, `dport`, `proto`), the origin (internal iff `src` lies in `cfg.internal_prefixes`),
/// and that origin's backend set. Knows nothing of the service CIDR: see [`enumerate_node`].
pub fn enumerate(
    cfg: &NatConfig,
    src: Ipv4Addr,
    proto: Proto,
    dst: Ipv4Addr,
    dport: u16,
) -> Resolution {
    let Some(m) = cfg
        .mappings
        .iter()
        .find(|m| m.external_ip == dst && m.external_port == dport && m.proto == proto)
    else {
        return Resolution::NotAService;
    };
    let internal = cfg
        .internal_prefixes
        .iter()
        .any(|(net, len)| Cidr::new(*net, *len).contains(src));
    let bs = if internal { &m.internal } else { &m.external };
    match bs {
        BackendSet::Drop => Resolution::Drop,
        BackendSet::Reject => Resolution::Reject,
        BackendSet::Backends(b) => {
            let set: BTreeSet<(Ipv4Addr, u16)> = b.iter().map(|b| (b.ip, b.port)).collect();
            let twice = !internal && m.twice_nat_external;
            let hairpin = m.self_twice_nat && set.iter().any(|(ip, _)| *ip == src);
            Resolution::Backends {
                set,
                source_translated: twice || hairpin,
            }
        }
    }
}

/// [`enumerate`] with the node's rules for traffic that is not a service (6.7): a packet to a
/// rendered ClusterIP on a port or protocol without a mapping (ICMP included), or to any other
/// address of the service CIDR, is rejected rather than forwarded.
pub fn enumerate_node(
    render: &ServiceRender,
    node: &ServiceNode,
    src: Ipv4Addr,
    proto: Proto,
    dst: Ipv4Addr,
    dport: u16,
) -> Resolution {
    match enumerate(&nat_config(render, node), src, proto, dst, dport) {
        Resolution::NotAService
            if node.ipam.service_cidr.contains(dst) || render.cluster_ips.contains(&dst) =>
        {
            Resolution::Reject
        }
        r => r,
    }
}
