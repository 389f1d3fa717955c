//! Cluster state in etcd (SYSTEM.md 1.2–1.4; reference: docs/etcd.md).
//!
//! * [`Layout`] — the key layout under a configurable prefix (default `/vecnet/`):
//!   `k8s/<kind>/<name>[/namespace/<ns>]` for objects, `allocatedIDs/<id>` for node-ID claims,
//!   `nodeinfo/<nodeName>` for what each node publishes about itself.
//! * Node-ID allocation ([`allocate_node_id`], [`release_node`]): the smallest free positive
//!   integer, claimed with the transaction "create `allocatedIDs/<id>` if its create-revision is
//!   0"; an ID already holding this node's name is reused.
//! * [`NodeInfo`] publishing and listing.
//! * [`reflector`] — the KSR role: writes objects under `k8s/` with mark-and-sweep.
//! * [`source`] — the agent's state source: resync from a snapshot, then a watch.
//!
//! The functions are async (tokio, the `etcd-client` crate); [`runtime`] gives a small
//! current-thread runtime for the synchronous daemon.

pub mod reflector;
pub mod source;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};

use crate::model::{parse_object, Key, Object};

/// Time allowed for one unary etcd request (get, put, txn, delete).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Client(Box<etcd_client::Error>),
    #[error("etcd: request timed out after {0:?}")]
    Timeout(Duration),
    #[error("etcd: {0}")]
    Invalid(String),
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Client(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, EtcdError>;

/// A current-thread tokio runtime with I/O and timers, for callers that are not async.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs one etcd request with [`REQUEST_TIMEOUT`].
pub(crate) async fn timed<T>(
    f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(EtcdError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// Connects lazily to `endpoints` (`host:port` or `http://host:port`): the connection is made by
/// the first request, so this succeeds while etcd is down. HTTP/2 keep-alives detect a dead
/// server on an idle watch within a few seconds.
pub async fn connect(endpoints: &[String]) -> Result<Client> {
    if endpoints.is_empty() {
        return Err(EtcdError::Invalid("no endpoints".into()));
    }
    let opts =
        ConnectOptions::new().with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    Ok(Client::connect(endpoints, Some(opts)).await?)
}

/// The key layout under one prefix (SYSTEM.md 1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// etcd key segment of each object kind.
const KINDS: [(&str, &str); 6] = [
    ("Pod", "pod"),
    ("Service", "service"),
    ("EndpointSlice", "endpointslice"),
    ("NetworkPolicy", "policy"),
    ("Namespace", "namespace"),
    ("Node", "node"),
];

impl Default for Layout {
    fn default() -> Self {
        Self::new("/vecnet/")
    }
}

impl Layout {
    /// `prefix` gets a trailing `/` if it has none (`/vecnet` = `/vecnet/`).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>k8s/`: every object.
    pub fn k8s_prefix(&self) -> String {
        format!("{}k8s/", self.prefix)
    }

    /// `<prefix>allocatedIDs/`.
    pub fn allocated_ids_prefix(&self) -> String {
        format!("{}allocatedIDs/", self.prefix)
    }

    pub fn allocated_id_key(&self, id: u32) -> String {
        format!("{}allocatedIDs/{id}", self.prefix)
    }

    /// `<prefix>nodeinfo/`.
    pub fn nodeinfo_prefix(&self) -> String {
        format!("{}nodeinfo/", self.prefix)
    }

    pub fn nodeinfo_key(&self, node: &str) -> String {
        format!("{}nodeinfo/{node}", self.prefix)
    }

    /// `k8s/<kind>/<name>/namespace/<ns>` (namespaced kinds; no namespace = `default`) or
    /// `k8s/<kind>/<name>` (Node, Namespace).
    pub fn object_key(&self, obj: &Object) -> String {
        let seg = kind_segment(obj.kind()).unwrap_or("unknown");
        let m = obj.meta();
        let name = m.name.as_deref().unwrap_or_default();
        match obj {
            Object::Namespace(_) | Object::Node(_) => format!("{}k8s/{seg}/{name}", self.prefix),
            _ => format!(
                "{}k8s/{seg}/{name}/namespace/{}",
                self.prefix,
                m.namespace.as_deref().unwrap_or("default")
            ),
        }
    }

    /// The inverse of [`Layout::object_key`]: (kind as [`Object::kind`] names it, model key
    /// `namespace/name` or `name`), or `None` for a key of another shape.
    pub fn parse_object_key(&self, key: &str) -> Option<(&'static str, Key)> {
        let rest = key.strip_prefix(&self.k8s_prefix())?;
        let parts: Vec<&str> = rest.split('/').collect();
        let first = *parts.first()?;
        let (kind, cluster_scoped) = KINDS
            .iter()
            .find(|(_, seg)| *seg == first)
            .map(|(k, _)| (*k, *k == "Node" || *k == "Namespace"))?;
        match (cluster_scoped, parts.as_slice()) {
            (true, [_, name]) if !name.is_empty() => Some((kind, name.to_string())),
            (false, [_, name, "namespace", ns]) if !name.is_empty() && !ns.is_empty() => {
                Some((kind, format!("{ns}/{name}")))
            }
            _ => None,
        }
    }
}

/// The key segment of a kind (`Service` → `service`, `NetworkPolicy` → `policy`).
pub fn kind_segment(kind: &str) -> Option<&'static str> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, s)| *s)
}

/// The value stored for an object: its JSON with `apiVersion`/`kind`, `metadata.managedFields`
/// dropped, and namespaced objects without a namespace put in `default`.
pub fn encode_object(obj: &Object) -> String {
    let mut obj = obj.clone();
    let namespaced = !matches!(obj, Object::Namespace(_) | Object::Node(_));
    let m = match &mut obj {
        Object::Namespace(o) => &mut o.metadata,
        Object::Pod(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::NetworkPolicy(o) => &mut o.metadata,
        Object::Node(o) => &mut o.metadata,
    };
    m.managed_fields = None;
    if namespaced && m.namespace.is_none() {
        m.namespace = Some("default".into());
    }
    let v = match &obj {
        Object::Namespace(o) => serde_json::to_string(o),
        Object::Pod(o) => serde_json::to_string(o),
        Object::Service(o) => serde_json::to_string(o),
        Object::EndpointSlice(o) => serde_json::to_string(o),
        Object::NetworkPolicy(o) => serde_json::to_string(o),
        Object::Node(o) => serde_json::to_string(o),
    };
    v.unwrap_or_default()
}

/// Parses a stored object.
pub fn decode_object(value: &[u8]) -> Result<Object> {
    let v: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| EtcdError::Invalid(format!("JSON: {e}")))?;
    parse_object(0, v).map_err(|e| EtcdError::Invalid(e.to_string()))
}

/// What a node publishes about itself under `nodeinfo/<name>` (SYSTEM.md 1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: u32,
    pub name: String,
    /// Node (uplink) addresses with their prefix length, `192.168.16.N/24`.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Addresses of the host network stack (management IPs).
    #[serde(default)]
    pub management_ip_addresses: Vec<String>,
    /// The VXLAN BVI address with its prefix length, `192.168.30.N/24`.
    #[serde(rename = "vxlanIP", default)]
    pub vxlan_ip: String,
}

/// The value of `allocatedIDs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaim {
    pub id: u32,
    pub name: String,
}

/// Every node-ID claim, by ID.
pub async fn list_claims(client: &mut Client, layout: &Layout) -> Result<Vec<IdClaim>> {
    let resp = timed(client.get(
        layout.allocated_ids_prefix(),
        Some(GetOptions::new().with_prefix()),
    ))
    .await?;
    let mut v: Vec<IdClaim> = resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    v.sort_by_key(|c| c.id);
    Ok(v)
}

/// Largest node ID tried before giving up (IPAM rejects far smaller IDs anyway).
pub const MAX_NODE_ID: u32 = 65_535;

/// The node ID of `name` (SYSTEM.md 1.4): the ID whose claim already holds this name (a
/// restart), else the smallest free positive integer, claimed atomically with "create
/// `allocatedIDs/<id>` if its create-revision is 0". Concurrent claimants of one ID: exactly
/// one transaction succeeds; the others move on to the next ID.
pub async fn allocate_node_id(client: &mut Client, layout: &Layout, name: &str) -> Result<u32> {
    let claims = list_claims(client, layout).await?;
    if let Some(c) = claims.iter().find(|c| c.name == name) {
        return Ok(c.id);
    }
    let mut id = 1;
    while id <= MAX_NODE_ID {
        if claims.iter().any(|c| c.id == id) {
            id += 1;
            continue;
        }
        if claim_id(client, layout, id, name).await? {
            return Ok(id);
        }
        // Lost a race: someone else created the key; it may be us under another process only
        // if the names match.
        if let Some(c) = get_claim(client, layout, id).await? {
            if c.name == name {
                return Ok(id);
            }
        }
        id += 1;
    }
    Err(EtcdError::Invalid(format!(
        "no free node ID up to {MAX_NODE_ID}"
    )))
}

/// The claim on one ID, if any.
pub async fn get_claim(client: &mut Client, layout: &Layout, id: u32) -> Result<Option<IdClaim>> {
    let resp = timed(client.get(layout.allocated_id_key(id), None)).await?;
    Ok(resp
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// "Create `allocatedIDs/<id>` = {id, name} if its create-revision is 0"; whether it succeeded.
pub async fn claim_id(client: &mut Client, layout: &Layout, id: u32, name: &str) -> Result<bool> {
    let key = layout.allocated_id_key(id);
    let value = serde_json::to_string(&IdClaim {
        id,
        name: name.to_string(),
    })
    .unwrap_or_default();
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(key, value, None)]);
    Ok(timed(client.txn(txn)).await?.succeeded())
}

/// Makes sure `id` is claimed by `name` (a configured or remembered ID, or a claim lost with
/// etcd's data): creates the claim if the key is free. Errors if another node holds it.
pub async fn ensure_claim(client: &mut Client, layout: &Layout, id: u32, name: &str) -> Result<()> {
    if claim_id(client, layout, id, name).await? {
        return Ok(());
    }
    match get_claim(client, layout, id).await? {
        Some(c) if c.name == name => Ok(()),
        Some(c) => Err(EtcdError::Invalid(format!(
            "node ID {id} is claimed by node {:?}, not by {name:?}",
            c.name
        ))),
        // Deleted between the two requests: try once more.
        None if claim_id(client, layout, id, name).await? => Ok(()),
        None => Err(EtcdError::Invalid(format!("could not claim node ID {id}"))),
    }
}

/// An orderly leave: deletes this node's ID claims (each only if it still holds this node's
/// claim) and its `nodeinfo`. Returns the released IDs.
pub async fn release_node(client: &mut Client, layout: &Layout, name: &str) -> Result<Vec<u32>> {
    let resp = timed(client.get(
        layout.allocated_ids_prefix(),
        Some(GetOptions::new().with_prefix()),
    ))
    .await?;
    let mut released = Vec::new();
    for kv in resp.kvs() {
        let Ok(c) = serde_json::from_slice::<IdClaim>(kv.value()) else {
            continue;
        };
        if c.name != name {
            continue;
        }
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                kv.key().to_vec(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then(vec![TxnOp::delete(kv.key().to_vec(), None)]);
        if timed(client.txn(txn)).await?.succeeded() {
            released.push(c.id);
        }
    }
    timed(client.delete(layout.nodeinfo_key(name), None::<DeleteOptions>)).await?;
    released.sort_unstable();
    Ok(released)
}

/// Writes `nodeinfo/<name>` unless it already holds exactly this value.
pub async fn publish_nodeinfo(client: &mut Client, layout: &Layout, info: &NodeInfo) -> Result<()> {
    let key = layout.nodeinfo_key(&info.name);
    let value = serde_json::to_string(info).unwrap_or_default();
    let cur = timed(client.get(key.clone(), None)).await?;
    if cur.kvs().first().map(|kv| kv.value()) == Some(value.as_bytes()) {
        return Ok(());
    }
    timed(client.put(key, value, None)).await?;
    Ok(())
}

/// Every node's `nodeinfo`, by ID then name.
pub async fn list_nodeinfo(client: &mut Client, layout: &Layout) -> Result<Vec<NodeInfo>> {
    let resp = timed(client.get(
        layout.nodeinfo_prefix(),
        Some(GetOptions::new().with_prefix()),
    ))
    .await?;
    let mut v: Vec<NodeInfo> = resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    v.sort_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_manifests;

    #[test]
    fn key_layout_round_trips() {
        let l = Layout::new("/vecnet");
        assert_eq!(l.prefix(), "/vecnet/");
        let objs = parse_manifests(
            "kind: Service\napiVersion: v1\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.10}\n---\n\
             kind: Namespace\napiVersion: v1\nmetadata: {name: prod}\n---\n\
             kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: deny, namespace: prod}\nspec: {podSelector: {}}\n",
        )
        .unwrap();
        let keys: Vec<String> = objs.iter().map(|o| l.object_key(o)).collect();
        assert_eq!(
            keys,
            [
                "/vecnet/k8s/service/web/namespace/default",
                "/vecnet/k8s/namespace/prod",
                "/vecnet/k8s/policy/deny/namespace/prod",
            ]
        );
        assert_eq!(
            l.parse_object_key(&keys[0]),
            Some(("Service", "default/web".to_string()))
        );
        assert_eq!(
            l.parse_object_key(&keys[1]),
            Some(("Namespace", "prod".to_string()))
        );
        assert_eq!(
            l.parse_object_key(&keys[2]),
            Some(("NetworkPolicy", "prod/deny".to_string()))
        );
        assert_eq!(l.parse_object_key("/vecnet/k8s/service/web"), None);
        assert_eq!(l.parse_object_key("/vecnet/k8s/gadget/x"), None);
        assert_eq!(l.parse_object_key("/other/k8s/namespace/x"), None);
        assert_eq!(l.allocated_id_key(3), "/vecnet/allocatedIDs/3");
        assert_eq!(l.nodeinfo_key("n1"), "/vecnet/nodeinfo/n1");
    }

    #[test]
    fn values_drop_managed_fields_and_keep_kind() {
        let objs = parse_manifests(
            "kind: Service\napiVersion: v1\nmetadata:\n  name: web\n  managedFields: [{manager: kubectl}]\nspec: {clusterIP: 10.96.0.10}\n",
        )
        .unwrap();
        let v = encode_object(&objs[0]);
        let j: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(j["kind"], "Service");
        assert_eq!(j["apiVersion"], "v1");
        assert_eq!(j["metadata"]["namespace"], "default");
        assert!(j["metadata"].get("managedFields").is_none(), "{v}");
        let back = decode_object(v.as_bytes()).unwrap();
        assert_eq!(back.key(), "default/web");
        assert_eq!(encode_object(&back), v, "encoding is stable");
    }

    #[test]
    fn nodeinfo_field_names() {
        let n = NodeInfo {
            id: 2,
            name: "n2".into(),
            ip_addresses: vec!["192.168.16.2/24".into()],
            management_ip_addresses: vec!["10.20.0.2".into()],
            vxlan_ip: "192.168.30.2/24".into(),
        };
        let j = serde_json::to_value(&n).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"id": 2, "name": "n2", "ipAddresses": ["192.168.16.2/24"],
                "managementIpAddresses": ["10.20.0.2"], "vxlanIP": "192.168.30.2/24"})
        );
    }
}
