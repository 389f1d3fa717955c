//! NAT44 for Kubernetes Services (SYSTEM.md section 6).

pub mod config;

pub use config::{
    Backend, BackendSet, IdentityMapping, NatConfig, NatTimeouts, Proto, StaticMapping,
};
pub mod runtime;
pub use runtime::{NatRuntime, NatState, NatTables};
pub mod nodes;
pub mod show;
