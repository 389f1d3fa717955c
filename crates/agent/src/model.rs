//! The Kubernetes object model the renderers read: the objects of one cluster as the state
//! source delivers them, keyed and ordered deterministically (a render never depends on the order
//! in which objects arrived).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("document {doc}: {msg}")]
    Invalid { doc: usize, msg: String },
    #[error("YAML: {0}")]
    Yaml(String),
}

/// `namespace/name`, or `name` for cluster-scoped objects.
pub type Key = String;

/// One Kubernetes object of a kind vecnet renders. (Variants differ much in size; objects are
/// parsed once per change, never per packet, so boxing buys nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    Node(Node),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Node(_) => "Node",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }

    /// `namespace/name` (namespaced kinds default to namespace `default`) or `name`.
    pub fn key(&self) -> Key {
        let m = self.meta();
        let name = m.name.clone().unwrap_or_default();
        match self {
            Object::Namespace(_) | Object::Node(_) => name,
            _ => format!("{}/{}", m.namespace.as_deref().unwrap_or("default"), name),
        }
    }
}

/// Every object of the kinds vecnet renders.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub namespaces: BTreeMap<Key, Namespace>,
    pub pods: BTreeMap<Key, Pod>,
    pub services: BTreeMap<Key, Service>,
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    pub policies: BTreeMap<Key, NetworkPolicy>,
    pub nodes: BTreeMap<Key, Node>,
    /// A stamp per Service (and below, per EndpointSlice), new at every
    /// [`ClusterState::apply`] (unique
    /// across states): the render cache knows an object is unchanged without comparing it.
    /// Objects inserted into the maps directly have none and are always rendered anew.
    pub service_stamps: HashMap<Key, u64, foldhash::fast::FixedState>,
    pub slice_stamps: HashMap<Key, u64, foldhash::fast::FixedState>,
}

static STAMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ClusterState {
    /// Adds or replaces an object. Namespaced objects without a namespace go to `default`, as
    /// `kubectl apply` would put them.
    pub fn apply(&mut self, obj: Object) {
        let key = obj.key();
        match obj {
            Object::Namespace(o) => {
                self.namespaces.insert(key, o);
            }
            Object::Pod(mut o) => {
                default_ns(&mut o.metadata);
                self.pods.insert(key, o);
            }
            Object::Service(mut o) => {
                default_ns(&mut o.metadata);
                self.service_stamps.insert(key.clone(), next_stamp());
                self.services.insert(key, o);
            }
            Object::EndpointSlice(mut o) => {
                default_ns(&mut o.metadata);
                self.slice_stamps.insert(key.clone(), next_stamp());
                self.endpoint_slices.insert(key, o);
            }
            Object::NetworkPolicy(mut o) => {
                default_ns(&mut o.metadata);
                self.policies.insert(key, o);
            }
            Object::Node(o) => {
                self.nodes.insert(key, o);
            }
        }
    }

    /// Removes an object by kind and key; returns whether it existed.
    pub fn remove(&mut self, kind: &str, key: &str) -> bool {
        match kind {
            "Namespace" => self.namespaces.remove(key).is_some(),
            "Pod" => self.pods.remove(key).is_some(),
            "Service" => {
                self.service_stamps.remove(key);
                self.services.remove(key).is_some()
            }
            "EndpointSlice" => {
                self.slice_stamps.remove(key);
                self.endpoint_slices.remove(key).is_some()
            }
            "NetworkPolicy" => self.policies.remove(key).is_some(),
            "Node" => self.nodes.remove(key).is_some(),
            _ => false,
        }
    }

    /// Labels of a namespace; a namespace without an object still has the automatic
    /// `kubernetes.io/metadata.name` label, as the API server sets it.
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut l = self
            .namespaces
            .get(ns)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        l.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        l
    }
}

fn default_ns(m: &mut ObjectMeta) {
    if m.namespace.is_none() {
        m.namespace = Some("default".into());
    }
}

/// Parses one object from its JSON form. `v1 Endpoints` become an EndpointSlice, as the spec's
/// manifests source does (SYSTEM.md 1.2).
pub fn parse_object(doc: usize, v: serde_json::Value) -> Result<Object, ModelError> {
    let invalid = |msg: String| ModelError::Invalid { doc, msg };
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| invalid("kind: missing".into()))?
        .to_string();
    let name_ok = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .is_some_and(|n| !n.is_empty());
    if !name_ok {
        return Err(invalid(format!("{kind}: metadata.name: missing")));
    }
    fn de<T: serde::de::DeserializeOwned>(
        v: serde_json::Value,
        kind: &str,
        doc: usize,
    ) -> Result<T, ModelError> {
        serde_path_to_error::deserialize(v).map_err(|e| ModelError::Invalid {
            doc,
            msg: format!("{kind}: {}: {}", e.path(), e.inner()),
        })
    }
    Ok(match kind.as_str() {
        "Namespace" => Object::Namespace(de(v, &kind, doc)?),
        "Pod" => Object::Pod(de(v, &kind, doc)?),
        "Service" => Object::Service(de(v, &kind, doc)?),
        "EndpointSlice" => Object::EndpointSlice(de(v, &kind, doc)?),
        "NetworkPolicy" => Object::NetworkPolicy(de(v, &kind, doc)?),
        "Node" => Object::Node(de(v, &kind, doc)?),
        "Endpoints" => Object::EndpointSlice(endpoints_to_slice(de(v, &kind, doc)?)),
        other => {
            return Err(invalid(format!(
                "kind: unsupported kind {other:?} (expected Namespace, Pod, Service, EndpointSlice, Endpoints, NetworkPolicy or Node)"
            )))
        }
    })
}

/// Parses a manifest file: one or more YAML (or JSON) documents; `kind: List` is expanded.
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ModelError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (doc, d) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(d).map_err(|e| ModelError::Yaml(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        if v.get("kind").and_then(|k| k.as_str()) == Some("List") {
            let items = v
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_default();
            for item in items {
                out.push(parse_object(doc, item)?);
            }
        } else {
            out.push(parse_object(doc, v)?);
        }
    }
    Ok(out)
}

/// A v1 Endpoints object as the EndpointSlice the endpoints controller would have written:
/// ready addresses are ready, not-ready addresses are neither ready nor serving.
pub fn endpoints_to_slice(ep: Endpoints) -> EndpointSlice {
    let name = ep.metadata.name.clone().unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut ports: Vec<EndpointPort> = Vec::new();
    for subset in ep.subsets.unwrap_or_default() {
        for p in subset.ports.unwrap_or_default() {
            let ep_port = EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            };
            if !ports.contains(&ep_port) {
                ports.push(ep_port);
            }
        }
        for (ready, addrs) in [
            (true, subset.addresses.unwrap_or_default()),
            (false, subset.not_ready_addresses.unwrap_or_default()),
        ] {
            for a in addrs {
                endpoints.push(Endpoint {
                    addresses: vec![a.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(ready),
                        terminating: Some(false),
                    }),
                    node_name: a.node_name.clone(),
                    target_ref: a.target_ref.clone(),
                    ..Default::default()
                });
            }
        }
    }
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert("kubernetes.io/service-name".into(), name.clone());
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
        metadata: ObjectMeta {
            name: Some(format!("{name}-endpoints")),
            namespace: ep.metadata.namespace.clone(),
            labels: Some(labels),
            ..Default::default()
        },
    }
}
