//! What every state source delivers to the agent (SYSTEM.md 1.2): a full snapshot
//! (`Resync`), then ordered single-object changes, plus the source's own state. The manifests
//! directory, etcd (`crate::etcd::source`) and the Kubernetes API (`crate::kubeapi`) all speak
//! it, so the agent handles them alike.

use std::time::Duration;

use crate::etcd::NodeInfo;
use crate::model::{Key, Object};

/// What a source tells the agent.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum SourceEvent {
    /// The whole state at `revision`: replaces everything known before.
    Resync {
        objects: Vec<Object>,
        nodes: Vec<NodeInfo>,
        revision: i64,
        /// Values under `k8s/` that could not be parsed: `key: reason`.
        errors: Vec<String>,
    },
    /// An object was created or changed.
    Put { object: Object, revision: i64 },
    /// An object was deleted; `kind` as [`Object::kind`] names it.
    Delete {
        kind: &'static str,
        key: Key,
        revision: i64,
    },
    /// A node published or changed its `nodeinfo`.
    NodePut(NodeInfo),
    /// A node's `nodeinfo` was deleted (the node left).
    NodeDelete(String),
    /// A value that could not be parsed (the object is ignored): `key: reason`.
    Invalid(String),
    /// etcd could not be reached or the watch broke; the next attempt is in `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}
