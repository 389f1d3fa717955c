//! Everything the agent renders for one node from the cluster's objects: the NAT44 mappings and
//! roles from Services (section 6), the ACLs and their bindings from NetworkPolicies (section 7).
//! A pure function of (objects, node), so `simulate`, `run` and tests share it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use vecnet_acl::{AclBinding, AclConfig};
use vecnet_nat::NatConfig;

use crate::ipam::NodeIpam;
use crate::model::ClusterState;
use crate::policy::{render_policies, PolicyNode};
use crate::service::{nat_config, render_services_cached, ServiceCache, ServiceNode};

/// One local pod attached to the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    /// `namespace/name`.
    pub key: String,
    pub ip: Ipv4Addr,
    pub sw_if_index: u32,
}

/// This node as the renderers need it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node_name: String,
    pub ipam: NodeIpam,
    /// Addresses of the host network stack (reached through tap0).
    pub host_ips: Vec<Ipv4Addr>,
    pub pods: Vec<LocalPod>,
    /// Interfaces towards the host and the outside (tap0, uplinks): they carry the global ACL
    /// table on output and the reflective ACL on input when it is non-empty.
    pub uplinks: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub nat: NatConfig,
    /// Local pod IPs that back a Service: their TAPs are NAT `inside` too.
    pub inside_pod_ips: BTreeSet<Ipv4Addr>,
    pub acl: AclConfig,
    /// ClusterIPs with mappings (those outside serviceCIDR need a reject route of their own).
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    /// Objects that could not be rendered (whole or in part), as warning events.
    pub warnings: Vec<Warning>,
}

/// A warning about one object, like a Kubernetes Event of type Warning: the object
/// (`"<Kind> <namespace>/<name>"`), a CamelCase reason and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    pub object: String,
    pub reason: String,
    pub message: String,
}

impl Warning {
    pub fn new(object: impl Into<String>, reason: &str, message: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.reason, self.message)
    }
}

/// What the renderers keep between renders (the agent owns one; `None` renders from scratch).
#[derive(Debug, Default)]
pub struct RenderCache {
    pub services: ServiceCache,
}

pub fn render(state: &ClusterState, n: &NodeView) -> Rendered {
    render_with(state, n, None)
}

/// [`render`] with the agent's cache: the result is the same, only faster when few objects
/// changed since the last render.
pub fn render_with(
    state: &ClusterState,
    n: &NodeView,
    cache: Option<&mut RenderCache>,
) -> Rendered {
    let snode = ServiceNode::new(n.node_name.clone(), n.ipam)
        .with_host_ips(n.host_ips.iter().copied())
        .with_cluster_nodes(state);
    let mut services = render_services_cached(state, &snode, cache.map(|c| &mut c.services));
    // Moved, not copied: a render at 10 k Services would otherwise clone every mapping.
    let mappings = std::mem::take(&mut services.mappings);
    let mut nat = nat_config(&services, &snode);
    nat.mappings = mappings;

    let pnode = PolicyNode {
        node_name: n.node_name.clone(),
        local_pods: n.pods.iter().map(|p| (p.key.clone(), p.ip)).collect(),
        host_ips: [
            n.host_ips.clone(),
            vec![n.ipam.host_linux_ip, n.ipam.host_vpp_ip],
        ]
        .concat(),
        nat_loopback: n.ipam.nat_loopback,
    };
    let policies = render_policies(state, &pnode);
    let mut bindings: BTreeMap<u32, AclBinding> = BTreeMap::new();
    fn bind(b: &mut BTreeMap<u32, AclBinding>, sw: u32) -> &mut AclBinding {
        b.entry(sw).or_insert_with(|| AclBinding {
            sw_if_index: sw,
            ..Default::default()
        })
    }
    for pod in &n.pods {
        if let Some(acls) = policies.pods.get(&pod.key) {
            if let Some(out) = acls.output {
                bind(&mut bindings, pod.sw_if_index).output.push(out);
            }
            if acls.input_reflective {
                if let Some(r) = policies.reflective {
                    bind(&mut bindings, pod.sw_if_index).input.push(r);
                }
            }
        }
    }
    if let Some(g) = policies.global {
        for &sw in &n.uplinks {
            bind(&mut bindings, sw).output.push(g);
            if let Some(r) = policies.reflective {
                bind(&mut bindings, sw).input.push(r);
            }
        }
    }
    let mut warnings: Vec<Warning> = services
        .events
        .iter()
        .map(|e| Warning::new(e.object.clone(), &e.reason, e.message.clone()))
        .collect();
    warnings.extend(policies.events.iter().map(|e| {
        Warning::new(
            format!("NetworkPolicy {}", e.object),
            &e.reason,
            e.message.clone(),
        )
    }));
    Rendered {
        nat,
        inside_pod_ips: services.backend_pod_ips.clone(),
        acl: AclConfig {
            acls: policies.acls,
            bindings: bindings.into_values().collect(),
            ..AclConfig::default()
        },
        cluster_ips: services.cluster_ips.clone(),
        warnings,
    }
}
