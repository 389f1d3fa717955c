//! NetworkPolicy renderer: NetworkPolicy + Pod + Namespace → ACL tables (SYSTEM.md section 7).
//!
//! # Model (Contiv-VPP's, with upstream Kubernetes semantics)
//!
//! Every table applies on **vswitch-egress** (7.4), after DNAT, so it sees endpoint addresses:
//!
//! * the **local table** of a local pod D is bound on the output of D's TAP (traffic *to* D). It
//!   holds D's pod-ingress rules (`src = peer`) and, for every other local pod S whose pod-egress
//!   is isolated and does not allow everything towards D, a group `PERMIT S/32 → (egress ∩
//!   ingress ports)`, `DENY S/32 ANY` that replaces D's own rules for exactly `S/32` (7.4 step 2);
//!   it ends with `DENY ANY` when D's ingress is isolated, else `PERMIT ANY`;
//! * the **global table** (`vecnet-policy-NODE-GLOBAL`) holds the pod-egress rules of local pods
//!   (`src = pod/32, dst = peer`, each pod's group ending with `DENY pod/32 ANY`) and ends with
//!   `PERMIT ANY`; it is bound on the output of `tap0`, the uplink and `loop0` and is absent when
//!   empty;
//! * the **reflective ACL** (`vecnet-policy-REFLECTION`, one permit+reflect-any rule) is bound on
//!   the input of every pod TAP that has a local table (invariant of 7.6: replies to the pod's own
//!   connections must not be judged by its table) and on the input of `tap0`, the uplink and
//!   `loop0` when the global table exists. A pod whose only isolation is egress and which has no
//!   local table needs none: nothing is bound on its TAP output, and replies to connections made
//!   towards it through the global table match the sessions made on the uplink/`tap0` input.
//!
//! Each direction of a pod compiles to `(network, port set)` permits (7.3): a peer "anything"
//! gives `0.0.0.0/0`, a peer pod its `/32`, an ipBlock its CIDR minus the excepts split into
//! permitted sub-prefixes (no deny rules, so the sort cannot let an except shadow another peer).
//! An ingress-isolated pod always permits its node's host addresses and the NAT loopback (hairpin,
//! 6.6); an egress-isolated pod always may reach its node's host addresses (kubelet probes and
//! the like). A direction whose permits include "anything, all protocols" is not rendered at all.
//! Rules are sorted by specificity (7.5: source, destination, protocol TCP < UDP < SCTP < ANY,
//! port single < range < any, DENY before PERMIT); the catch-all of a local table is appended
//! after the sorted rules, so a rule never ties with it.
//!
//! Kubernetes semantics: `policyTypes` is defaulted as the API server does (D5.5: `Ingress`, plus
//! `Egress` when `spec.egress` is non-empty); a pod is isolated in a direction iff some policy
//! selecting it lists that direction; within one peer `namespaceSelector` AND `podSelector`,
//! across peers OR; an empty/missing `from`/`to` means any peer and an empty/missing `ports` any
//! port of any protocol, but a non-empty list whose entries are all unusable matches nothing
//! (fail closed). Named ports are resolved against the destination pod's container ports (name
//! and protocol); for egress rules towards ipBlocks or "anything", every known pod inside the
//! peer that has the named port gets its own `/32` rule, and a destination that is not a pod
//! never matches a named port. `endPort` makes a range. hostNetwork pods are never isolated and
//! never matched by selectors (their traffic is the node's), pods in phase Succeeded/Failed and
//! pods without an IP are ignored. A namespace's labels include `kubernetes.io/metadata.name`.
//!
//! Protocols: TCP and UDP. SCTP ports produce an `UnsupportedProtocol` event and are not rendered
//! (never as UDP); a rule whose only ports were SCTP allows nothing. Invalid ports, ipBlocks,
//! selectors, peers and policy types produce events and are dropped (again failing closed).
//!
//! Scope of one node: local tables enforce the ingress of local pods against every source and
//! the egress of local pods towards local pods; the global table enforces the egress of local
//! pods towards everything else. The egress of remote pods is enforced on their own node. Entries
//! of [`PolicyNode::local_pods`] without a Pod object (no labels known) or with `hostNetwork` get
//! no ACLs.
//!
//! # Established flows when policies change
//!
//! A new render changes the rules only; nothing here touches sessions. Flows already admitted
//! keep their reflective ACL sessions (made on the input of the pod TAP or of the uplink/`tap0`),
//! and a session hit passes the flow's packets in both directions without looking at the rules,
//! as VPP does without re-evaluation. So a policy that tightens the rules stops new connections
//! at once but does not cut established ones: they continue until their session times out (UDP
//! and other non-TCP idle 600 s, TCP transient 120 s, TCP established 24 h; D6, 7.8) or the
//! sessions are cleared (`clear acl-plugin sessions`). A policy that relaxes the rules takes
//! effect for new connections at once. `policy.strictReevaluation` (re-checking every session's
//! original tuple against the new tables and deleting the sessions now denied, 7.2) is future
//! work.
//!
//! # Determinism
//!
//! The cluster state is kept in ordered maps, policies are compiled in key order, pods visited in
//! key order, rules sorted by a total order and deduplicated; ACL indexes are positions: the local
//! tables in order of the first local pod (by key) using them, then the global table, then the
//! reflective ACL. Pods with identical tables share one ACL, tagged `vecnet-policy-<tableID>`
//! where tableID is the FNV-64a hex of the printed rule list (7.6). A persistent ACL-index pool
//! (lowest free, stable while an ACL exists) is the snapshot builder's job, not the renderer's.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vecnet_acl::{Acl, AclRule, Action};

use crate::ipam::Cidr;
use crate::model::ClusterState;

/// IP protocol numbers.
pub const PROTO_ANY: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// Tag of the global table.
pub const TAG_GLOBAL: &str = "vecnet-policy-NODE-GLOBAL";
/// Tag of the permit+reflect-all ACL.
pub const TAG_REFLECTION: &str = "vecnet-policy-REFLECTION";
/// Prefix of local table tags (`vecnet-policy-<16 hex digits>`).
pub const TAG_LOCAL_PREFIX: &str = "vecnet-policy-";

/// Event reasons.
pub const REASON_UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
pub const REASON_INVALID_PORT: &str = "InvalidPort";
pub const REASON_INVALID_IP_BLOCK: &str = "InvalidIPBlock";
pub const REASON_INVALID_SELECTOR: &str = "InvalidSelector";
pub const REASON_INVALID_PEER: &str = "InvalidPeer";
pub const REASON_INVALID_POLICY_TYPE: &str = "InvalidPolicyType";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// This node as the policy renderer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNode {
    pub node_name: String,
    /// Local pods: key "ns/name" -> pod IP (from the Pod's status.podIP or IPAM).
    pub local_pods: BTreeMap<String, Ipv4Addr>,
    /// This node's host-stack addresses (host IPs, host-link Linux side, node IP): traffic
    /// between a pod and its own node is always allowed (kubelet probes).
    pub host_ips: Vec<Ipv4Addr>,
    /// NAT loopback 10.1.N.254: hairpinned traffic arrives from it and is always permitted
    /// (7.3/6.6).
    pub nat_loopback: Ipv4Addr,
}

/// Something wrong with an input object, for the operator (a Kubernetes Event on `object`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyEvent {
    /// The NetworkPolicy's key, `namespace/name`.
    pub object: String,
    /// CamelCase reason, one of the `REASON_*` constants.
    pub reason: String,
    pub message: String,
}

/// The ACLs of one node and where they are bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRender {
    /// ACL index = position. Deterministic order.
    pub acls: Vec<Acl>,
    /// Per local pod ("ns/name"): the ACL bound on the pod TAP's OUTPUT (vswitch-egress =
    /// traffic to the pod: its local table) and whether the reflective ACL is bound on its
    /// INPUT.
    pub pods: BTreeMap<String, PodAcls>,
    /// The global table (pod-egress rules of local pods), bound on the OUTPUT of the uplinks and
    /// tap0; None when empty.
    pub global: Option<u32>,
    /// The permit+reflect-all ACL bound on INPUT of every pod TAP that has a local table (every
    /// ingress-isolated pod, and pods that receive restricted traffic from egress-isolated local
    /// pods), and of the uplinks/tap0 when `global` is Some. None when neither exists.
    pub reflective: Option<u32>,
    pub events: Vec<PolicyEvent>,
}

/// ACL bindings of one local pod's TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodAcls {
    /// Local table, bound on the TAP's output.
    pub output: Option<u32>,
    /// Whether [`PolicyRender::reflective`] is bound on the TAP's input (iff `output` is Some).
    pub input_reflective: bool,
}

/// Renders the ACLs of `node` from the cluster's NetworkPolicies.
pub fn render_policies(state: &ClusterState, node: &PolicyNode) -> PolicyRender {
    let mut events = Vec::new();
    let ctx = Ctx::new(state, Some(node), Some(&mut events));

    // Local pods that can be rendered, in key order; the first pod of an IP wins.
    let mut locals: Vec<&PodInfo> = Vec::new();
    for key in node.local_pods.keys() {
        if let Some(p) = ctx.pods.iter().find(|p| p.key == key.as_str()) {
            if p.eligible() && !locals.iter().any(|l| l.ip == p.ip) {
                locals.push(p);
            }
        }
    }
    let ingress: Vec<Option<NetPorts>> = locals.iter().map(|p| ctx.ingress_permits(p)).collect();
    let egress: Vec<Option<NetPorts>> = locals.iter().map(|p| ctx.egress_permits(p)).collect();

    let mut acls: Vec<Acl> = Vec::new();
    let mut by_rules: HashMap<Vec<AclRule>, u32> = HashMap::new();
    let mut pods: BTreeMap<String, PodAcls> = node
        .local_pods
        .keys()
        .map(|k| (k.clone(), PodAcls::default()))
        .collect();

    for (di, d) in locals.iter().enumerate() {
        let Some(d_ip) = d.ip else { continue };
        let own = ingress[di].as_ref();
        // 7.4 step 2: egress of the other local pods towards D.
        let mut groups: BTreeMap<Net, PortSet> = BTreeMap::new();
        for (si, s) in locals.iter().enumerate() {
            let (Some(eg), Some(s_ip)) = (egress[si].as_ref(), s.ip) else {
                continue;
            };
            if si == di {
                continue;
            }
            let e = union_containing(eg, d_ip);
            if e.all {
                continue;
            }
            let i = match own {
                None => PortSet::all(),
                Some(m) => union_containing(m, s_ip),
            };
            groups.insert(Net::host(s_ip), e.intersect(&i));
        }
        if own.is_none() && groups.is_empty() {
            continue;
        }
        let mut body = Vec::new();
        if let Some(m) = own {
            for (net, ps) in m {
                if !groups.contains_key(net) {
                    push_permits(&mut body, *net, Net::ANY, ps);
                }
            }
        }
        for (net, ps) in &groups {
            push_permits(&mut body, *net, Net::ANY, ps);
            body.push(Rule::deny(*net, Net::ANY));
        }
        let catch_all = if own.is_some() {
            Action::Deny
        } else {
            Action::Permit
        };
        let rules = finish(body, catch_all);
        let idx = *by_rules.entry(rules.clone()).or_insert_with(|| {
            let tag = format!(
                "{TAG_LOCAL_PREFIX}{:016x}",
                fnv64a(print_rules(&rules).as_bytes())
            );
            acls.push(Acl { tag, rules });
            (acls.len() - 1) as u32
        });
        pods.insert(
            d.key.to_string(),
            PodAcls {
                output: Some(idx),
                input_reflective: true,
            },
        );
    }

    // Global table: egress of local pods, src = pod/32.
    let mut body = Vec::new();
    for (si, s) in locals.iter().enumerate() {
        let (Some(eg), Some(s_ip)) = (egress[si].as_ref(), s.ip) else {
            continue;
        };
        let src = Net::host(s_ip);
        for (net, ps) in eg {
            push_permits(&mut body, src, *net, ps);
        }
        body.push(Rule::deny(src, Net::ANY));
    }
    let global = (!body.is_empty()).then(|| {
        acls.push(Acl {
            tag: TAG_GLOBAL.into(),
            rules: finish(body, Action::Permit),
        });
        (acls.len() - 1) as u32
    });

    let reflective = (global.is_some() || pods.values().any(|p| p.output.is_some())).then(|| {
        acls.push(Acl {
            tag: TAG_REFLECTION.into(),
            rules: vec![AclRule::any(Action::PermitReflect)],
        });
        (acls.len() - 1) as u32
    });

    PolicyRender {
        acls,
        pods,
        global,
        reflective,
        events,
    }
}

/// An evaluator straight from the NetworkPolicy semantics (no ACLs): would a connection from
/// `src` to `dst:dport/proto` be allowed? Used to cross-check the compiled tables.
///
/// Pods are found by `status.podIP`/`status.podIPs`; a pod's node addresses are the addresses of
/// its Node object (`spec.nodeName`), and traffic between a pod and its own node is always
/// allowed, as is a pod talking to itself. The NAT loopback is not known here (no node config).
pub fn evaluate(state: &ClusterState, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> bool {
    if src == dst {
        return true;
    }
    let ctx = Ctx::new(state, None, None);
    let sp = ctx.pod_by_ip(src);
    let dp = ctx.pod_by_ip(dst);
    let egress_ok = match sp {
        None => true,
        Some(s) if ctx.node_addresses(s).contains(&dst) => true,
        Some(s) => ctx.allowed_one_way(s, Dir::Egress, dst, dp, proto, dport, dp),
    };
    let ingress_ok = match dp {
        None => true,
        Some(d) if ctx.node_addresses(d).contains(&src) => true,
        Some(d) => ctx.allowed_one_way(d, Dir::Ingress, src, sp, proto, dport, dp),
    };
    egress_ok && ingress_ok
}

/// The compiled tables as the data plane would apply them to a new connection between two
/// LOCAL pods/host (linear first-match over the bound ACLs, reflect semantics ignored): used by
/// tests to check render == evaluate.
///
/// An address of `node.local_pods` is that pod's TAP, `node.host_ips` is `tap0`, anything else
/// (remote pods, the Internet, the NAT loopback) the uplink. A packet passes the input ACLs of
/// its source interface, then the output ACLs of its destination interface; first match wins and
/// no match denies (the tables always end with a catch-all). A pod talking to itself and host
/// to host never cross the switch and are allowed.
pub fn allowed_by_tables(
    render: &PolicyRender,
    node: &PolicyNode,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    dport: u16,
) -> bool {
    #[derive(PartialEq)]
    enum If<'a> {
        Pod(&'a str),
        Host,
        Uplink,
    }
    let classify = |ip: Ipv4Addr| {
        if let Some((k, _)) = node.local_pods.iter().find(|(_, v)| **v == ip) {
            If::Pod(k.as_str())
        } else if node.host_ips.contains(&ip) {
            If::Host
        } else {
            If::Uplink
        }
    };
    let (si, di) = (classify(src), classify(dst));
    if src == dst || (si == If::Host && di == If::Host) {
        return true;
    }
    let input: Vec<u32> = match si {
        If::Pod(k) => render
            .pods
            .get(k)
            .filter(|p| p.input_reflective)
            .and(render.reflective)
            .into_iter()
            .collect(),
        If::Host | If::Uplink => render.global.and(render.reflective).into_iter().collect(),
    };
    let output: Vec<u32> = match di {
        If::Pod(k) => render
            .pods
            .get(k)
            .and_then(|p| p.output)
            .into_iter()
            .collect(),
        If::Host | If::Uplink => render.global.into_iter().collect(),
    };
    let pass = |bound: &[u32]| -> bool {
        if bound.is_empty() {
            return true;
        }
        let rules = bound
            .iter()
            .filter_map(|&i| render.acls.get(i as usize))
            .flat_map(|a| &a.rules);
        for r in rules {
            if rule_matches(r, src, dst, proto, dport) {
                return r.action != Action::Deny;
            }
        }
        false
    };
    pass(&input) && pass(&output)
}

/// Whether an ACL rule matches a packet (source port ignored: rules never constrain it).
pub fn rule_matches(r: &AclRule, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> bool {
    let in_net = |(a, l): (Ipv4Addr, u8), ip: Ipv4Addr| Net::new(u32::from(a), l).contains_ip(ip);
    in_net(r.src, src)
        && in_net(r.dst, dst)
        && (r.proto == PROTO_ANY
            || (r.proto == proto
                && (!matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
                    || (r.dst_ports.0 <= dport && dport <= r.dst_ports.1))))
}

/// A rule as one line (`permit src 10.1.1.3/32 dst 0.0.0.0/0 proto 6 sport 0-65535 dport
/// 80-80`), the form hashed into a local table's tag.
pub fn format_rule(r: &AclRule) -> String {
    let action = match r.action {
        Action::Deny => "deny",
        Action::Permit => "permit",
        Action::PermitReflect => "permit+reflect",
    };
    format!(
        "{action} src {}/{} dst {}/{} proto {} sport {}-{} dport {}-{}",
        r.src.0,
        r.src.1,
        r.dst.0,
        r.dst.1,
        r.proto,
        r.src_ports.0,
        r.src_ports.1,
        r.dst_ports.0,
        r.dst_ports.1
    )
}

// ---------------------------------------------------------------------------
// Networks and port sets
// ---------------------------------------------------------------------------

/// An IPv4 prefix with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Net {
    addr: u32,
    len: u8,
}

impl Net {
    const ANY: Net = Net { addr: 0, len: 0 };

    fn mask(len: u8) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0)
    }

    fn new(addr: u32, len: u8) -> Net {
        let len = len.min(32);
        Net {
            addr: addr & Net::mask(len),
            len,
        }
    }

    fn host(ip: Ipv4Addr) -> Net {
        Net {
            addr: u32::from(ip),
            len: 32,
        }
    }

    fn contains_ip(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Net::mask(self.len) == self.addr
    }

    fn contains(self, other: Net) -> bool {
        other.len >= self.len && other.addr & Net::mask(self.len) == self.addr
    }

    /// The two halves of this prefix (`self` must be shorter than /32).
    fn halves(self) -> (Net, Net) {
        let len = self.len + 1;
        let bit = 1u32 << (32 - u32::from(len));
        (
            Net {
                addr: self.addr,
                len,
            },
            Net {
                addr: self.addr | bit,
                len,
            },
        )
    }

    fn pair(self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(self.addr), self.len)
    }

    /// 7.5: longer prefix first, any last; then by address.
    fn sort_key(self) -> (u8, u8, u32) {
        (u8::from(self.len == 0), 32 - self.len, self.addr)
    }
}

/// `cidr` minus every prefix of `except`, as a sorted list of disjoint prefixes.
fn subtract(cidr: Net, except: &[Net]) -> Vec<Net> {
    let mut nets = vec![cidr];
    for &e in except {
        let mut out = Vec::new();
        for n in nets {
            if e.contains(n) {
                continue;
            }
            if !n.contains(e) {
                out.push(n);
                continue;
            }
            // Walk from n down to e, keeping the sibling half at every level.
            let mut cur = n;
            while cur.len < e.len {
                let (lo, hi) = cur.halves();
                if lo.contains(e) {
                    out.push(hi);
                    cur = lo;
                } else {
                    out.push(lo);
                    cur = hi;
                }
            }
        }
        nets = out;
    }
    nets.sort();
    nets
}

/// Allowed (protocol, destination port) pairs: everything (all protocols, ICMP included), or
/// TCP and UDP port ranges (sorted, disjoint, non-adjacent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PortSet {
    all: bool,
    tcp: Vec<(u16, u16)>,
    udp: Vec<(u16, u16)>,
}

impl PortSet {
    fn all() -> PortSet {
        PortSet {
            all: true,
            ..PortSet::default()
        }
    }

    fn single(proto: u8, lo: u16, hi: u16) -> PortSet {
        let mut p = PortSet::default();
        match proto {
            PROTO_TCP => p.tcp.push((lo, hi)),
            PROTO_UDP => p.udp.push((lo, hi)),
            _ => {}
        }
        p
    }

    fn is_empty(&self) -> bool {
        !self.all && self.tcp.is_empty() && self.udp.is_empty()
    }

    fn add(&mut self, other: &PortSet) {
        if self.all || other.all {
            *self = PortSet::all();
            return;
        }
        self.tcp = merge_ranges(self.tcp.iter().chain(&other.tcp).copied().collect());
        self.udp = merge_ranges(self.udp.iter().chain(&other.udp).copied().collect());
    }

    fn intersect(&self, other: &PortSet) -> PortSet {
        if self.all {
            return other.clone();
        }
        if other.all {
            return self.clone();
        }
        PortSet {
            all: false,
            tcp: intersect_ranges(&self.tcp, &other.tcp),
            udp: intersect_ranges(&self.udp, &other.udp),
        }
    }

    fn contains(&self, proto: u8, port: u16) -> bool {
        let inr = |v: &[(u16, u16)]| v.iter().any(|&(a, b)| a <= port && port <= b);
        self.all
            || match proto {
                PROTO_TCP => inr(&self.tcp),
                PROTO_UDP => inr(&self.udp),
                _ => false,
            }
    }
}

fn merge_ranges(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect_ranges(x: &[(u16, u16)], y: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        let lo = x[i].0.max(y[j].0);
        let hi = x[i].1.min(y[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Permits of one direction of a pod, merged per network.
type NetPorts = BTreeMap<Net, PortSet>;

fn union_containing(m: &NetPorts, ip: Ipv4Addr) -> PortSet {
    let mut ps = PortSet::default();
    for (net, p) in m {
        if net.contains_ip(ip) {
            ps.add(p);
        }
    }
    ps
}

// ---------------------------------------------------------------------------
// Rules, order, printing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    action: Action,
    src: Net,
    dst: Net,
    proto: u8,
    ports: (u16, u16),
}

impl Rule {
    fn deny(src: Net, dst: Net) -> Rule {
        Rule {
            action: Action::Deny,
            src,
            dst,
            proto: PROTO_ANY,
            ports: (0, 65535),
        }
    }

    fn sort_key(&self) -> impl Ord {
        let proto = match self.proto {
            PROTO_TCP => (0, 0),
            PROTO_UDP => (1, 0),
            PROTO_SCTP => (2, 0),
            PROTO_ANY => (4, 0),
            p => (3, p),
        };
        let (lo, hi) = self.ports;
        let port_class = if self.proto == PROTO_ANY || (lo, hi) == (0, 65535) {
            2
        } else if lo == hi {
            0
        } else {
            1
        };
        let action = u8::from(self.action != Action::Deny);
        (
            self.src.sort_key(),
            self.dst.sort_key(),
            proto,
            (port_class, lo, hi),
            action,
        )
    }

    fn to_acl(self) -> AclRule {
        AclRule {
            action: self.action,
            src: self.src.pair(),
            dst: self.dst.pair(),
            proto: self.proto,
            src_ports: (0, 65535),
            dst_ports: if self.proto == PROTO_ANY {
                (0, 65535)
            } else {
                self.ports
            },
            tcp_flags: (0, 0),
        }
    }
}

fn push_permits(out: &mut Vec<Rule>, src: Net, dst: Net, ps: &PortSet) {
    let permit = |proto, ports| Rule {
        action: Action::Permit,
        src,
        dst,
        proto,
        ports,
    };
    if ps.all {
        out.push(permit(PROTO_ANY, (0, 65535)));
        return;
    }
    out.extend(ps.tcp.iter().map(|&r| permit(PROTO_TCP, r)));
    out.extend(ps.udp.iter().map(|&r| permit(PROTO_UDP, r)));
}

/// Sorts (7.5), deduplicates and appends the explicit catch-all.
fn finish(mut body: Vec<Rule>, catch_all: Action) -> Vec<AclRule> {
    body.sort_by_key(|r| r.sort_key());
    body.dedup();
    let mut rules: Vec<AclRule> = body.into_iter().map(Rule::to_acl).collect();
    rules.push(AclRule::any(catch_all));
    rules
}

fn print_rules(rules: &[AclRule]) -> String {
    let mut s = String::new();
    for r in rules {
        s.push_str(&format_rule(r));
        s.push('\n');
    }
    s
}

fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// Compiled policies
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A label selector; `invalid` selects nothing.
#[derive(Debug, Clone, Default)]
struct Sel {
    labels: Vec<(String, String)>,
    exprs: Vec<(String, Op)>,
    invalid: bool,
}

impl Sel {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.invalid
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| match op {
                Op::In(vals) => labels.get(k).is_some_and(|v| vals.contains(v)),
                Op::NotIn(vals) => labels.get(k).is_none_or(|v| !vals.contains(v)),
                Op::Exists => labels.contains_key(k),
                Op::DoesNotExist => !labels.contains_key(k),
            })
    }
}

#[derive(Debug, Clone)]
enum Peer {
    /// Pods: `ns` None = the policy's namespace; `pods` None = every pod of the namespaces.
    Pods { ns: Option<Sel>, pods: Option<Sel> },
    /// `cidr` None = an IPv6 block, which matches no IPv4 address.
    Block { cidr: Option<Net>, except: Vec<Net> },
}

#[derive(Debug, Clone)]
enum PortSpec {
    All,
    Range(u16, u16),
    Named(String),
}

#[derive(Debug, Clone)]
struct Port {
    proto: u8,
    spec: PortSpec,
}

/// One ingress or egress rule. `peers`/`ports` None = any; Some(empty) = nothing.
#[derive(Debug, Clone)]
struct CRule {
    peers: Option<Vec<Peer>>,
    ports: Option<Vec<Port>>,
}

#[derive(Debug, Clone)]
struct CPolicy {
    ns: String,
    select: Sel,
    /// None = the direction is not in `policyTypes`.
    ingress: Option<Vec<CRule>>,
    egress: Option<Vec<CRule>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

struct Compiler<'e> {
    key: String,
    events: Option<&'e mut Vec<PolicyEvent>>,
}

impl Compiler<'_> {
    fn event(&mut self, reason: &str, message: String) {
        if let Some(ev) = self.events.as_deref_mut() {
            ev.push(PolicyEvent {
                object: self.key.clone(),
                reason: reason.into(),
                message,
            });
        }
    }

    fn policy(&mut self, pol: &NetworkPolicy) -> CPolicy {
        let ns = pol
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let empty;
        let spec = match &pol.spec {
            Some(s) => s,
            None => {
                empty = NetworkPolicySpec::default();
                &empty
            }
        };
        let select = match &spec.pod_selector {
            None => Sel::default(),
            Some(s) => self.selector(s, "spec.podSelector"),
        };
        let (mut ing, mut eg) = (false, false);
        match spec.policy_types.as_deref() {
            None | Some([]) => {
                ing = true;
                eg = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
            Some(types) => {
                for t in types {
                    match t.as_str() {
                        "Ingress" => ing = true,
                        "Egress" => eg = true,
                        other => self.event(
                            REASON_INVALID_POLICY_TYPE,
                            format!(
                                "policyTypes: {other:?} is neither Ingress nor Egress; ignored"
                            ),
                        ),
                    }
                }
            }
        }
        let ingress = ing.then(|| {
            spec.ingress
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| {
                    self.rule(
                        &format!("ingress[{i}]"),
                        "from",
                        r.from.as_deref(),
                        r.ports.as_deref(),
                    )
                })
                .collect()
        });
        let egress = eg.then(|| {
            spec.egress
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| {
                    self.rule(
                        &format!("egress[{i}]"),
                        "to",
                        r.to.as_deref(),
                        r.ports.as_deref(),
                    )
                })
                .collect()
        });
        CPolicy {
            ns,
            select,
            ingress,
            egress,
        }
    }

    fn rule(
        &mut self,
        at: &str,
        peers_field: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> CRule {
        let peers = match peers {
            None | Some([]) => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .filter_map(|(i, p)| self.peer(&format!("{at}.{peers_field}[{i}]"), p))
                    .collect::<Vec<_>>(),
            ),
        };
        let ports = match ports {
            None | Some([]) => None,
            Some(list) => {
                let v: Vec<Port> = list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| self.port(&format!("{at}.ports[{i}]"), p))
                    .collect();
                if v.is_empty() {
                    self.event(
                        REASON_INVALID_PORT,
                        format!("{at}: no usable port left; the rule allows nothing"),
                    );
                }
                Some(v)
            }
        };
        if peers.as_ref().is_some_and(|p| p.is_empty()) {
            self.event(
                REASON_INVALID_PEER,
                format!("{at}: no usable peer left; the rule allows nothing"),
            );
        }
        CRule { peers, ports }
    }

    fn peer(&mut self, at: &str, p: &NetworkPolicyPeer) -> Option<Peer> {
        match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
            (Some(b), None, None) => self.ip_block(at, b),
            (Some(_), _, _) => {
                self.event(
                    REASON_INVALID_PEER,
                    format!("{at}: ipBlock cannot be combined with a selector; peer ignored"),
                );
                None
            }
            (None, None, None) => {
                self.event(
                    REASON_INVALID_PEER,
                    format!("{at}: a peer needs podSelector, namespaceSelector or ipBlock; peer ignored"),
                );
                None
            }
            (None, ns, pods) => Some(Peer::Pods {
                ns: ns
                    .as_ref()
                    .map(|s| self.selector(s, &format!("{at}.namespaceSelector"))),
                pods: pods
                    .as_ref()
                    .map(|s| self.selector(s, &format!("{at}.podSelector"))),
            }),
        }
    }

    fn ip_block(&mut self, at: &str, b: &IPBlock) -> Option<Peer> {
        match parse_net(&b.cidr) {
            Some(Some(cidr)) => {
                let mut except = Vec::new();
                for (i, e) in b.except.iter().flatten().enumerate() {
                    match parse_net(e) {
                        Some(Some(n)) => except.push(n),
                        Some(None) => {} // IPv6 except of an IPv4 block: cannot overlap
                        None => {
                            self.event(
                                REASON_INVALID_IP_BLOCK,
                                format!(
                                    "{at}.ipBlock.except[{i}]: {e:?} is not a CIDR; peer ignored"
                                ),
                            );
                            return None;
                        }
                    }
                }
                Some(Peer::Block {
                    cidr: Some(cidr),
                    except,
                })
            }
            Some(None) => Some(Peer::Block {
                cidr: None,
                except: Vec::new(),
            }),
            None => {
                self.event(
                    REASON_INVALID_IP_BLOCK,
                    format!(
                        "{at}.ipBlock.cidr: {:?} is not a CIDR; peer ignored",
                        b.cidr
                    ),
                );
                None
            }
        }
    }

    fn port(&mut self, at: &str, p: &NetworkPolicyPort) -> Option<Port> {
        let proto = match p.protocol.as_deref() {
            None | Some("TCP") => PROTO_TCP,
            Some("UDP") => PROTO_UDP,
            Some("SCTP") => {
                self.event(
                    REASON_UNSUPPORTED_PROTOCOL,
                    format!("{at}: SCTP is not supported by vecnet v1; this port is not rendered"),
                );
                return None;
            }
            Some(other) => {
                self.event(
                    REASON_UNSUPPORTED_PROTOCOL,
                    format!("{at}: unknown protocol {other:?}; this port is not rendered"),
                );
                return None;
            }
        };
        let bad = |this: &mut Self, what: String| {
            this.event(
                REASON_INVALID_PORT,
                format!("{at}: {what}; this port is not rendered"),
            );
            None
        };
        let spec = match (&p.port, p.end_port) {
            (None, None) => PortSpec::All,
            (None, Some(_)) => return bad(self, "endPort without port".into()),
            (Some(IntOrString::Int(n)), end) => {
                let Some(lo) = u16::try_from(*n).ok().filter(|&v| v > 0) else {
                    return bad(self, format!("port {n} is outside 1-65535"));
                };
                match end {
                    None => PortSpec::Range(lo, lo),
                    Some(e) => match u16::try_from(e).ok().filter(|&v| v >= lo) {
                        Some(hi) => PortSpec::Range(lo, hi),
                        None => return bad(self, format!("endPort {e} is not in {lo}-65535")),
                    },
                }
            }
            (Some(IntOrString::String(name)), end) => {
                if end.is_some() {
                    return bad(self, format!("endPort with the named port {name:?}"));
                }
                if name.is_empty() || name.parse::<u32>().is_ok() {
                    return bad(self, format!("{name:?} is not a port name"));
                }
                PortSpec::Named(name.clone())
            }
        };
        Some(Port { proto, spec })
    }

    fn selector(&mut self, s: &LabelSelector, at: &str) -> Sel {
        let mut sel = Sel {
            labels: s
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Sel::default()
        };
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let vals = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In(vals),
                "NotIn" => Op::NotIn(vals),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    self.event(
                        REASON_INVALID_SELECTOR,
                        format!("{at}.matchExpressions[{i}]: unknown operator {other:?}; the selector selects nothing"),
                    );
                    sel.invalid = true;
                    continue;
                }
            };
            sel.exprs.push((e.key.clone(), op));
        }
        sel
    }
}

/// Some(Some(net)) for IPv4, Some(None) for a valid IPv6 prefix, None when invalid.
fn parse_net(s: &str) -> Option<Option<Net>> {
    if s.contains(':') {
        let (a, l) = s.trim().split_once('/')?;
        let ok = Ipv6Addr::from_str(a).is_ok()
            && !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && l.parse::<u8>().is_ok_and(|l| l <= 128);
        return ok.then_some(None);
    }
    let c = Cidr::from_str(s).ok()?;
    Some(Some(Net::new(u32::from(c.addr), c.len)))
}

// ---------------------------------------------------------------------------
// Context: pods, namespaces, compiled policies
// ---------------------------------------------------------------------------

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

struct PodInfo<'a> {
    key: &'a str,
    ns: &'a str,
    pod: &'a Pod,
    ip: Option<Ipv4Addr>,
    host_network: bool,
    active: bool,
}

impl PodInfo<'_> {
    fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// Can be selected, isolated and matched as a peer.
    fn eligible(&self) -> bool {
        self.ip.is_some() && !self.host_network && self.active
    }

    /// Ports of this pod's containers named `name` with protocol `proto`.
    fn named_port(&self, name: &str, proto: u8) -> PortSet {
        let mut ps = PortSet::default();
        let Some(spec) = &self.pod.spec else {
            return ps;
        };
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let p_proto = match p.protocol.as_deref() {
                    None | Some("TCP") => PROTO_TCP,
                    Some("UDP") => PROTO_UDP,
                    _ => continue,
                };
                if p.name.as_deref() == Some(name) && p_proto == proto {
                    if let Some(n) = u16::try_from(p.container_port).ok().filter(|&n| n > 0) {
                        ps.add(&PortSet::single(proto, n, n));
                    }
                }
            }
        }
        ps
    }
}

fn pod_status_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let st = pod.status.as_ref()?;
    st.pod_ip
        .iter()
        .chain(st.pod_ips.iter().flatten().map(|p| &p.ip))
        .find_map(|s| s.parse::<Ipv4Addr>().ok())
}

struct Ctx<'a> {
    state: &'a ClusterState,
    node: Option<&'a PolicyNode>,
    pods: Vec<PodInfo<'a>>,
    policies: Vec<CPolicy>,
    ns_labels: BTreeMap<&'a str, BTreeMap<String, String>>,
}

impl<'a> Ctx<'a> {
    fn new(
        state: &'a ClusterState,
        node: Option<&'a PolicyNode>,
        events: Option<&mut Vec<PolicyEvent>>,
    ) -> Ctx<'a> {
        let mut pods = Vec::with_capacity(state.pods.len());
        let mut ns_labels = BTreeMap::new();
        for (key, pod) in &state.pods {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let ip = node
                .and_then(|n| n.local_pods.get(key).copied())
                .or_else(|| pod_status_ip(pod));
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let active = !matches!(phase, Some("Succeeded" | "Failed"));
            ns_labels
                .entry(ns)
                .or_insert_with(|| state.namespace_labels(ns));
            pods.push(PodInfo {
                key,
                ns,
                pod,
                ip,
                host_network,
                active,
            });
        }
        let mut compiler = Compiler {
            key: String::new(),
            events,
        };
        let mut policies = Vec::with_capacity(state.policies.len());
        for (key, pol) in &state.policies {
            compiler.key = key.clone();
            policies.push(compiler.policy(pol));
        }
        Ctx {
            state,
            node,
            pods,
            policies,
            ns_labels,
        }
    }

    fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&PodInfo<'a>> {
        self.pods.iter().find(|p| p.eligible() && p.ip == Some(ip))
    }

    fn node_addresses(&self, p: &PodInfo) -> Vec<Ipv4Addr> {
        let Some(name) = p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return Vec::new();
        };
        let Some(node) = self.state.nodes.get(name) else {
            return Vec::new();
        };
        node.status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.address.parse().ok())
            .collect()
    }

    fn selects(&self, pol: &CPolicy, p: &PodInfo) -> bool {
        p.eligible() && pol.ns == p.ns && pol.select.matches(p.labels())
    }

    fn rules<'p>(&self, pol: &'p CPolicy, dir: Dir) -> Option<&'p Vec<CRule>> {
        match dir {
            Dir::Ingress => pol.ingress.as_ref(),
            Dir::Egress => pol.egress.as_ref(),
        }
    }

    /// Whether the peer (of a policy in `pol_ns`) matches the pod `p` by its selectors.
    fn peer_selects(
        &self,
        pol_ns: &str,
        ns: &Option<Sel>,
        pods: &Option<Sel>,
        p: &PodInfo,
    ) -> bool {
        if !p.eligible() {
            return false;
        }
        let ns_ok = match ns {
            None => p.ns == pol_ns,
            Some(s) => s.matches(self.ns_labels.get(p.ns).unwrap_or(&NO_LABELS)),
        };
        ns_ok && pods.as_ref().is_none_or(|s| s.matches(p.labels()))
    }

    fn peer_matches_ip(
        &self,
        pol_ns: &str,
        peer: &Peer,
        ip: Ipv4Addr,
        pod: Option<&PodInfo>,
    ) -> bool {
        match peer {
            Peer::Pods { ns, pods } => pod.is_some_and(|p| self.peer_selects(pol_ns, ns, pods, p)),
            Peer::Block { cidr, except } => {
                cidr.is_some_and(|c| c.contains_ip(ip)) && !except.iter().any(|e| e.contains_ip(ip))
            }
        }
    }

    /// The evaluator's check of one side: `p` is isolated in `dir` and some rule allows the peer
    /// `peer_ip` (pod `peer_pod`) with `proto/dport` towards the destination pod `dst_pod`.
    #[allow(clippy::too_many_arguments)]
    fn allowed_one_way(
        &self,
        p: &PodInfo,
        dir: Dir,
        peer_ip: Ipv4Addr,
        peer_pod: Option<&PodInfo>,
        proto: u8,
        dport: u16,
        dst_pod: Option<&PodInfo>,
    ) -> bool {
        let mut isolated = false;
        for pol in &self.policies {
            if !self.selects(pol, p) {
                continue;
            }
            let Some(rules) = self.rules(pol, dir) else {
                continue;
            };
            isolated = true;
            for r in rules {
                let peer_ok = match &r.peers {
                    None => true,
                    Some(peers) => peers
                        .iter()
                        .any(|pe| self.peer_matches_ip(&pol.ns, pe, peer_ip, peer_pod)),
                };
                let port_ok = match &r.ports {
                    None => true,
                    Some(ports) => ports.iter().any(|pt| {
                        pt.proto == proto
                            && match &pt.spec {
                                PortSpec::All => true,
                                PortSpec::Range(lo, hi) => *lo <= dport && dport <= *hi,
                                PortSpec::Named(n) => dst_pod
                                    .is_some_and(|d| d.named_port(n, proto).contains(proto, dport)),
                            }
                    }),
                };
                if peer_ok && port_ok {
                    return true;
                }
            }
        }
        !isolated
    }

    /// Numbered ports of a rule, plus its named ports resolved against `dst` when given.
    fn rule_ports(&self, ports: &Option<Vec<Port>>, dst: Option<&PodInfo>) -> PortSet {
        let Some(list) = ports else {
            return PortSet::all();
        };
        let mut ps = PortSet::default();
        for p in list {
            match &p.spec {
                PortSpec::All => ps.add(&PortSet::single(p.proto, 0, 65535)),
                PortSpec::Range(lo, hi) => ps.add(&PortSet::single(p.proto, *lo, *hi)),
                PortSpec::Named(n) => {
                    if let Some(d) = dst {
                        ps.add(&d.named_port(n, p.proto));
                    }
                }
            }
        }
        ps
    }

    /// Networks of a peer (None = anything).
    fn peer_nets(&self, pol_ns: &str, peer: Option<&Peer>) -> Vec<Net> {
        match peer {
            None => vec![Net::ANY],
            Some(Peer::Pods { ns, pods }) => self
                .pods
                .iter()
                .filter(|p| self.peer_selects(pol_ns, ns, pods, p))
                .filter_map(|p| p.ip.map(Net::host))
                .collect(),
            Some(Peer::Block {
                cidr: Some(c),
                except,
            }) => subtract(*c, except),
            Some(Peer::Block { cidr: None, .. }) => Vec::new(),
        }
    }

    fn own_node_permits(&self, m: &mut NetPorts, with_loopback: bool) {
        if let Some(node) = self.node {
            for &h in &node.host_ips {
                m.insert(Net::host(h), PortSet::all());
            }
            if with_loopback {
                m.insert(Net::host(node.nat_loopback), PortSet::all());
            }
        }
    }

    /// Pod-ingress permits of `d` (`src` networks), or None when its ingress is not isolated or
    /// allows everything.
    fn ingress_permits(&self, d: &PodInfo) -> Option<NetPorts> {
        let mut isolated = false;
        let mut m = NetPorts::new();
        for pol in &self.policies {
            if !self.selects(pol, d) {
                continue;
            }
            let Some(rules) = &pol.ingress else { continue };
            isolated = true;
            for r in rules {
                let ps = self.rule_ports(&r.ports, Some(d));
                if ps.is_empty() {
                    continue;
                }
                let nets = match &r.peers {
                    None => vec![Net::ANY],
                    Some(peers) => peers
                        .iter()
                        .flat_map(|pe| self.peer_nets(&pol.ns, Some(pe)))
                        .collect(),
                };
                for net in nets {
                    m.entry(net).or_default().add(&ps);
                }
            }
        }
        if !isolated {
            return None;
        }
        self.own_node_permits(&mut m, true);
        finish_direction(m)
    }

    /// Pod-egress permits of `s` (`dst` networks), or None when its egress is not isolated or
    /// allows everything.
    fn egress_permits(&self, s: &PodInfo) -> Option<NetPorts> {
        let mut isolated = false;
        let mut m = NetPorts::new();
        for pol in &self.policies {
            if !self.selects(pol, s) {
                continue;
            }
            let Some(rules) = &pol.egress else { continue };
            isolated = true;
            for r in rules {
                let numbered = self.rule_ports(&r.ports, None);
                let named: Vec<&Port> = r
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| matches!(p.spec, PortSpec::Named(_)))
                    .collect();
                let peers: Vec<Option<&Peer>> = match &r.peers {
                    None => vec![None],
                    Some(list) => list.iter().map(Some).collect(),
                };
                for peer in peers {
                    if !numbered.is_empty() {
                        for net in self.peer_nets(&pol.ns, peer) {
                            m.entry(net).or_default().add(&numbered);
                        }
                    }
                    if named.is_empty() {
                        continue;
                    }
                    // Named ports: per destination pod inside the peer.
                    for p in self.pods.iter().filter(|p| p.eligible()) {
                        let Some(ip) = p.ip else { continue };
                        let inside = match peer {
                            None => true,
                            Some(pe) => self.peer_matches_ip(&pol.ns, pe, ip, Some(p)),
                        };
                        if !inside {
                            continue;
                        }
                        let mut ps = PortSet::default();
                        for pt in &named {
                            if let PortSpec::Named(n) = &pt.spec {
                                ps.add(&p.named_port(n, pt.proto));
                            }
                        }
                        if !ps.is_empty() {
                            m.entry(Net::host(ip)).or_default().add(&ps);
                        }
                    }
                }
            }
        }
        if !isolated {
            return None;
        }
        self.own_node_permits(&mut m, false);
        finish_direction(m)
    }
}

/// Drops empty entries; None when the permits include "anything, all protocols".
fn finish_direction(mut m: NetPorts) -> Option<NetPorts> {
    m.retain(|_, ps| !ps.is_empty());
    if m.get(&Net::ANY).is_some_and(|ps| ps.all) {
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net {
        parse_net(s).unwrap().unwrap()
    }

    #[test]
    fn subtract_splits_into_permitted_prefixes() {
        let got = subtract(n("10.0.0.0/8"), &[n("10.1.1.0/24")]);
        assert_eq!(got.len(), 16);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        for probe in ["10.0.0.1", "10.1.0.255", "10.1.2.0", "10.255.255.255"] {
            assert_eq!(
                got.iter().filter(|x| x.contains_ip(ip(probe))).count(),
                1,
                "{probe}"
            );
        }
        for probe in ["10.1.1.0", "10.1.1.255", "11.0.0.0"] {
            assert!(!got.iter().any(|x| x.contains_ip(ip(probe))), "{probe}");
        }
        assert!(subtract(n("10.1.0.0/16"), &[n("10.0.0.0/8")]).is_empty());
        assert_eq!(
            subtract(n("10.1.0.0/16"), &[n("10.2.0.0/16")]),
            vec![n("10.1.0.0/16")]
        );
        assert_eq!(
            subtract(n("0.0.0.0/0"), &[n("0.0.0.0/1")]),
            vec![n("128.0.0.0/1")]
        );
    }

    #[test]
    fn port_sets() {
        let mut a = PortSet::single(PROTO_TCP, 80, 81);
        a.add(&PortSet::single(PROTO_TCP, 82, 90));
        a.add(&PortSet::single(PROTO_UDP, 53, 53));
        assert_eq!(a.tcp, vec![(80, 90)]);
        let b = PortSet::single(PROTO_TCP, 85, 100);
        assert_eq!(a.intersect(&b), PortSet::single(PROTO_TCP, 85, 90));
        assert_eq!(a.intersect(&PortSet::all()), a);
        assert!(a.intersect(&PortSet::single(PROTO_UDP, 54, 60)).is_empty());
        assert!(PortSet::all().contains(PROTO_ICMP, 0));
        assert!(!a.contains(PROTO_ICMP, 80));
    }

    #[test]
    fn parse_nets() {
        assert_eq!(
            parse_net("10.1.1.7/24"),
            Some(Some(Net {
                addr: 0x0a01_0100,
                len: 24
            }))
        );
        assert_eq!(parse_net("fd00::/64"), Some(None));
        assert_eq!(parse_net("fd00::/129"), None);
        assert_eq!(parse_net("10.1.1.0"), None);
        assert_eq!(parse_net("banana/8"), None);
    }

    #[test]
    fn sort_order_puts_subsets_first() {
        let r = |src: &str, proto, ports, action| Rule {
            action,
            src: n(src),
            dst: Net::ANY,
            proto,
            ports,
        };
        let mut v = [
            r("0.0.0.0/0", PROTO_ANY, (0, 65535), Action::Permit),
            r("10.1.1.0/24", PROTO_TCP, (80, 80), Action::Permit),
            r("10.1.1.3/32", PROTO_ANY, (0, 65535), Action::Deny),
            r("10.1.1.3/32", PROTO_TCP, (0, 65535), Action::Permit),
            r("10.1.1.3/32", PROTO_UDP, (80, 90), Action::Permit),
            r("10.1.1.3/32", PROTO_TCP, (80, 80), Action::Permit),
        ];
        v.sort_by_key(|x| x.sort_key());
        assert_eq!(v[0], r("10.1.1.3/32", PROTO_TCP, (80, 80), Action::Permit));
        assert_eq!(
            v[1],
            r("10.1.1.3/32", PROTO_TCP, (0, 65535), Action::Permit)
        );
        assert_eq!(v[2], r("10.1.1.3/32", PROTO_UDP, (80, 90), Action::Permit));
        assert_eq!(v[3], r("10.1.1.3/32", PROTO_ANY, (0, 65535), Action::Deny));
        assert_eq!(v[5], r("0.0.0.0/0", PROTO_ANY, (0, 65535), Action::Permit));
    }

    #[test]
    fn fnv64a_reference() {
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
