//! NAT44 for Kubernetes Services (SYSTEM.md section 6).

pub mod config;

pub use config::{Backend, BackendSet, IdentityMapping, NatConfig, NatTimeouts, Proto, StaticMapping};
