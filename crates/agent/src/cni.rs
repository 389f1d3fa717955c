//! CNI 1.1.0 between `vecnet-cni` and `vecnetd`: the request the plugin relays, the result and
//! error shapes of the spec (SYSTEM.md 1.9).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const CNI_VERSION: &str = "1.1.0";
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes used by vecnet.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const PLUGIN_DEGRADED: u32 = 51;
    /// Plugin-specific (the spec leaves 100+ to plugins): the node's pod subnet is full.
    pub const IPAM_EXHAUSTED: u32 = 100;
}

/// What `vecnet-cni` sends to `vecnetd` (the content of Contiv's `CNIRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRequest {
    pub command: String,
    pub cni_version: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// Parsed `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, …).
    pub args: BTreeMap<String, String>,
    /// `cni.dev/valid-attachments` of a GC call: (container ID, ifname).
    pub valid_attachments: Vec<(String, String)>,
}

/// The CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: CNI_VERSION.into(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInterface {
    pub name: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniIp {
    pub address: String,
    pub gateway: String,
    pub interface: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    pub dst: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gw: String,
}

/// The CNI success result (ADD; CHECK/DEL/STATUS/GC print nothing on success).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<CniInterface>,
    pub ips: Vec<CniIp>,
    pub routes: Vec<CniRoute>,
    pub dns: serde_json::Value,
}

/// `vecnetd`'s answer: a result (ADD), nothing (other verbs), or a CNI error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniReply {
    Ok(Option<CniResult>),
    Error(CniError),
}
