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

use std::path::{Path, PathBuf};
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
    #[error("etcd: {}", describe(.0))]
    Client(Box<etcd_client::Error>),
    #[error("etcd: request timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting with authentication (which asks etcd for a token) took longer than the dial
    /// timeout.
    #[error("etcd: connecting and authenticating timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("etcd: {0}")]
    Invalid(String),
    /// A connection setting that cannot work (TLS files, endpoints): retrying does not help.
    #[error("etcd: {0}")]
    Config(String),
    /// etcd answered the authentication with an error: mostly a wrong user or password, or
    /// authentication not enabled; also transient server states (leader changes), which is why
    /// callers retry these like other failures.
    #[error("etcd: authenticating as user {user:?}: {detail}")]
    Auth { user: String, detail: String },
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Client(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, EtcdError>;

/// An etcd-client error with its causes: tonic's transport errors and statuses say only
/// "transport error" at the top, the reason (connection refused, unknown certificate issuer)
/// is further down the source chain.
fn describe(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut out, mut next) = match e {
        // "Unknown" is what tonic calls every transport failure: only the message says more.
        etcd_client::Error::GRpcStatus(st) if st.code() == tonic::Code::Unknown => {
            (st.message().to_string(), st.source())
        }
        etcd_client::Error::GRpcStatus(st) => {
            (format!("{:?}: {}", st.code(), st.message()), st.source())
        }
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = next {
        let text = cause.to_string();
        // Statuses repeat their cause's text as their message, and tonic's wrapper says only
        // "transport error": neither adds anything.
        let redundant = out.contains(&text) || (text == "transport error" && !out.is_empty());
        if !redundant {
            out = format!("{out}: {text}");
        }
        next = cause.source();
    }
    out
}

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

/// TLS towards etcd (the `--cacert`, `--cert`, `--key` of etcdctl). The files are PEM and are
/// read at every connection, so renewed certificates take effect at the next reconnection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA that signed etcd's server certificate. Required: this build trusts no system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for etcd's `--client-cert-auth`; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 RSA.
    pub key_file: Option<PathBuf>,
    /// Name to verify in the server certificate instead of the endpoint's host. Needed when
    /// endpoints are IP addresses: rustls 0.19 (under etcd-client 0.8) verifies DNS names only.
    pub server_name: Option<String>,
}

/// etcd user name and password (etcd's `auth enable`).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    // The password stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl EtcdAuth {
    /// The password is the file's content without its trailing line break.
    pub fn from_password_file(user: &str, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EtcdError::Config(format!(
                "password file {}: cannot read: {e}",
                path.display()
            ))
        })?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(EtcdError::Config(format!(
                "password file {} is empty",
                path.display()
            )));
        }
        Ok(Self {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

/// Default for [`EtcdConnection::dial_timeout`].
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd: what Contiv's `etcd.conf` described (endpoints, dial timeout, TLS files,
/// user and password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConnection {
    /// `host:port`, `http://host:port` or `https://host:port`; `https://` implies TLS.
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub auth: Option<EtcdAuth>,
    /// Bounds [`connect`] (which authenticates when `auth` is set; without it the connection is
    /// made by the first request, bounded by [`REQUEST_TIMEOUT`]).
    pub dial_timeout: Duration,
}

impl EtcdConnection {
    /// Plain HTTP, no authentication.
    pub fn new(endpoints: &[String]) -> Self {
        Self {
            endpoints: endpoints.to_vec(),
            tls: None,
            auth: None,
            dial_timeout: DIAL_TIMEOUT,
        }
    }

    /// Whether the connection uses TLS: a `tls` section or an `https://` endpoint.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// Checks the settings and reads the TLS files, as [`connect`] does, without connecting.
    pub fn check(&self) -> Result<()> {
        self.tls_options().map(|_| ())
    }

    /// The TLS options (`None` for plain HTTP) after checking endpoints and files.
    fn tls_options(&self) -> Result<Option<etcd_client::TlsOptions>> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoints".into()));
        }
        if !self.uses_tls() {
            return Ok(None);
        }
        let tls = self.tls.clone().unwrap_or_default();
        for e in &self.endpoints {
            if e.starts_with("http://") {
                return Err(EtcdError::Config(format!(
                    "endpoint {e} is plain http:// but TLS is configured (use https:// or host:port)"
                )));
            }
            if tls.server_name.is_none() && endpoint_host_is_ip(e) {
                return Err(EtcdError::Config(format!(
                    "endpoint {e} is an IP address: TLS needs a server name (a DNS name in etcd's \
                     certificate), since the TLS library of etcd-client 0.8 verifies DNS names only"
                )));
            }
        }
        let Some(ca_path) = &tls.ca_file else {
            return Err(EtcdError::Config(
                "TLS needs a CA file (etcd's server certificate cannot be verified otherwise: \
                 no system roots are trusted)"
                    .into(),
            ));
        };
        let ca = read_pem(ca_path, "CA file")?;
        let mut store = rustls::RootCertStore::empty();
        match store.add_pem_file(&mut std::io::Cursor::new(&ca)) {
            Ok((valid, _)) if valid > 0 => {}
            _ => {
                return Err(EtcdError::Config(format!(
                    "CA file {}: no usable PEM certificate",
                    ca_path.display()
                )))
            }
        }
        let mut opts =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        match (&tls.cert_file, &tls.key_file) {
            (None, None) => {}
            (Some(c), None) => {
                return Err(EtcdError::Config(format!(
                    "client certificate {} has no key file",
                    c.display()
                )))
            }
            (None, Some(k)) => {
                return Err(EtcdError::Config(format!(
                    "key file {} has no client certificate",
                    k.display()
                )))
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem(cert_path, "client certificate")?;
                let certs = rustls::internal::pemfile::certs(&mut std::io::Cursor::new(&cert));
                if certs.map_or(true, |c| c.is_empty()) {
                    return Err(EtcdError::Config(format!(
                        "client certificate {}: no PEM certificate",
                        cert_path.display()
                    )));
                }
                let key = read_pem(key_path, "key file")?;
                check_key(key_path, &key)?;
                opts = opts.identity(etcd_client::Identity::from_pem(cert, key));
            }
        }
        if let Some(name) = &tls.server_name {
            opts = opts.domain_name(name.clone());
        }
        Ok(Some(opts))
    }
}

/// Whether `host:port` (or a URL) names its host by IPv4 or IPv6 address.
pub fn endpoint_host_is_ip(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.starts_with('[') {
        return true;
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.parse::<std::net::IpAddr>().is_ok()
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Config(format!("{what} {}: cannot read: {e}", path.display())))
}

/// The key forms tonic 0.6 loads: PKCS#8 or PKCS#1 RSA.
fn check_key(path: &Path, pem: &[u8]) -> Result<()> {
    use rustls::internal::pemfile::{pkcs8_private_keys, rsa_private_keys};
    let found =
        |r: std::result::Result<Vec<rustls::PrivateKey>, ()>| r.is_ok_and(|k| !k.is_empty());
    if found(pkcs8_private_keys(&mut std::io::Cursor::new(pem)))
        || found(rsa_private_keys(&mut std::io::Cursor::new(pem)))
    {
        return Ok(());
    }
    let hint = if String::from_utf8_lossy(pem).contains("BEGIN EC PRIVATE KEY") {
        " (an EC key in SEC1 form: convert it with `openssl pkcs8 -topk8 -nocrypt`)"
    } else {
        ""
    };
    Err(EtcdError::Config(format!(
        "key file {}: no PKCS#8 or RSA private key{hint}",
        path.display()
    )))
}

/// Connects to etcd as `conn` describes, with HTTP/2 keep-alives that detect a dead server on
/// an idle watch within a few seconds. Without authentication the connection is lazy (made by
/// the first request), so this succeeds while etcd is down; with authentication it asks etcd
/// for a token first, bounded by `conn.dial_timeout`.
pub async fn connect(conn: &EtcdConnection) -> Result<Client> {
    let mut opts =
        ConnectOptions::new().with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(tls) = conn.tls_options()? {
        opts = opts.with_tls(tls);
    }
    if let Some(a) = &conn.auth {
        opts = opts.with_user(a.user.clone(), a.password.clone());
    }
    let r = tokio::time::timeout(
        conn.dial_timeout,
        Client::connect(&conn.endpoints, Some(opts)),
    )
    .await;
    match (r, &conn.auth) {
        (Err(_), _) => Err(EtcdError::ConnectTimeout(conn.dial_timeout)),
        (Ok(Ok(c)), _) => Ok(c),
        // etcd itself answered (its errors start with "etcdserver:") and refused: a wrong user
        // or password, or authentication disabled. Transport failures stay retryable.
        (Ok(Err(etcd_client::Error::GRpcStatus(st))), Some(a))
            if st.message().starts_with("etcdserver:") =>
        {
            Err(EtcdError::Auth {
                user: a.user.clone(),
                detail: st.message().to_string(),
            })
        }
        (Ok(Err(e)), _) => Err(e.into()),
    }
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

    /// A self-signed CA certificate (its key was thrown away); valid until 2126.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlDCCATmgAwIBAgIUJsM1tx2bDCVtTkXEgAbwoCPchpQwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTdmVjbmV0IHVuaXQtdGVzdCBDQTAgFw0yNjExMjcxODMyMjNa
GA8yMTI2MTEwMzE4MzIyM1owHjEcMBoGA1UEAwwTdmVjbmV0IHVuaXQtdGVzdCBD
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABANVFQNHZjyQORRT4QDpSDqp/efW
go2HhwnScHv3JYjtFjhUSI8uAO9/AES15SRGrFYlatt/diE7meOXpJd233ijUzBR
MB0GA1UdDgQWBBRR5u2EEeSGkwBZIYXePdt/DNMD/zAfBgNVHSMEGDAWgBRR5u2E
EeSGkwBZIYXePdt/DNMD/zAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kA
MEYCIQCky2mf+HT8KQpumLxfVMJEjr6TsLZAjOhjJj90vFpaUAIhAJbPxzAFwETc
DY3FYNuIHXdnHe1hup5smZ39YnH0GFq8
-----END CERTIFICATE-----
";

    fn tls_conn(endpoint: &str, tls: EtcdTls) -> EtcdConnection {
        EtcdConnection {
            tls: Some(tls),
            ..EtcdConnection::new(&[endpoint.to_string()])
        }
    }

    fn config_error(conn: &EtcdConnection) -> String {
        match conn.check() {
            Err(e @ EtcdError::Config(_)) => e.to_string(),
            other => panic!("expected a configuration error for {conn:?}, got {other:?}"),
        }
    }

    #[test]
    fn tls_settings_are_checked_before_connecting() {
        let dir = std::env::temp_dir().join(format!("vn-tls-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing-ca.pem");
        let e = config_error(&tls_conn(
            "etcd.local:2379",
            EtcdTls {
                ca_file: Some(missing.clone()),
                ..Default::default()
            },
        ));
        assert!(
            e.contains("CA file") && e.contains(&missing.display().to_string()),
            "{e}"
        );

        // tonic would panic on this one (it unwraps rustls' PEM reader): refused here instead.
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = config_error(&tls_conn(
            "etcd.local:2379",
            EtcdTls {
                ca_file: Some(garbage.clone()),
                ..Default::default()
            },
        ));
        assert!(e.contains("no usable PEM certificate"), "{e}");

        let e = config_error(&tls_conn(
            "etcd.local:2379",
            EtcdTls {
                ca_file: Some(garbage.clone()),
                cert_file: Some("/etc/client.pem".into()),
                ..Default::default()
            },
        ));
        assert!(e.contains("no usable PEM certificate"), "CA first: {e}");

        let e = config_error(&tls_conn("127.0.0.1:2379", EtcdTls::default()));
        assert!(e.contains("127.0.0.1:2379 is an IP address"), "{e}");
        let e = config_error(&tls_conn("http://etcd.local:2379", EtcdTls::default()));
        assert!(e.contains("plain http://"), "{e}");
        let e = config_error(&EtcdConnection::new(&["https://etcd.local:2379".into()]));
        assert!(e.contains("CA file"), "https:// implies TLS: {e}");
        let e = config_error(&EtcdConnection::new(&[]));
        assert!(e.contains("no endpoints"), "{e}");
        assert!(EtcdConnection::new(&["127.0.0.1:2379".into()])
            .check()
            .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificate_without_key_names_the_files() {
        // A CA certificate (public, throwaway) so that the check reaches the client files.
        let dir = std::env::temp_dir().join(format!("vn-tls-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        let base = EtcdTls {
            ca_file: Some(ca.clone()),
            server_name: Some("localhost".into()),
            ..Default::default()
        };
        assert!(tls_conn("127.0.0.1:2379", base.clone()).check().is_ok());
        let e = config_error(&tls_conn(
            "127.0.0.1:2379",
            EtcdTls {
                cert_file: Some("/etc/vecnet/client.pem".into()),
                ..base.clone()
            },
        ));
        assert!(e.contains("/etc/vecnet/client.pem has no key file"), "{e}");
        let e = config_error(&tls_conn(
            "127.0.0.1:2379",
            EtcdTls {
                key_file: Some("/etc/vecnet/client.key".into()),
                ..base.clone()
            },
        ));
        assert!(
            e.contains("/etc/vecnet/client.key has no client certificate"),
            "{e}"
        );
        let e = config_error(&tls_conn(
            "127.0.0.1:2379",
            EtcdTls {
                cert_file: Some(ca.clone()),
                key_file: Some(dir.join("nokey.pem")),
                ..base
            },
        ));
        assert!(e.contains("key file") && e.contains("nokey.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sec1_ec_keys_get_a_conversion_hint() {
        let pem = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        let e = check_key(Path::new("/k.pem"), pem).unwrap_err().to_string();
        assert!(
            e.contains("/k.pem") && e.contains("openssl pkcs8 -topk8"),
            "{e}"
        );
    }

    #[test]
    fn ip_endpoints() {
        for (e, ip) in [
            ("127.0.0.1:2379", true),
            ("https://10.0.0.1:2379", true),
            ("[::1]:2379", true),
            ("https://[fd00::1]:2379/", true),
            ("etcd.kube-system:2379", false),
            ("https://localhost:2379", false),
        ] {
            assert_eq!(endpoint_host_is_ip(e), ip, "{e}");
        }
    }

    #[test]
    fn password_files() {
        let dir = std::env::temp_dir().join(format!("vn-etcd-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "hunter2\r\n").unwrap();
        let a = EtcdAuth::from_password_file("root", &f).unwrap();
        assert_eq!(a.password, "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"), "redacted: {a:?}");
        std::fs::write(&f, "\n").unwrap();
        let e = EtcdAuth::from_password_file("root", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = EtcdAuth::from_password_file("root", &dir.join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("password file") && e.contains("none"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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
