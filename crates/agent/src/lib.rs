//! vecnet agent: the control-plane side of a vecnet node (Contiv-VPP model).
//!
//! It turns the cluster's object model and this node's configuration into the
//! desired state of the data plane. Module [`ipam`] holds the addressing plan
//! (per-node subnets, gateway, NAT loopback, node and BVI addresses), pod IP
//! allocation and interface MAC derivation.

pub mod cni;
pub mod control;
pub mod etcd;
pub mod ipam;
pub mod kubeapi;
pub mod model;
pub mod policy;
pub mod render;
pub mod service;
pub mod source;
