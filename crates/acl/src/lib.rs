//! Stateful, reflective ACLs for NetworkPolicies (SYSTEM.md section 7).

pub mod config;

pub use config::{Acl, AclBinding, AclConfig, AclRule, AclTimeouts, Action};
pub mod runtime;
pub use runtime::{AclRuntime, AclState, AclTables};
pub mod acl_plugin_fa;
pub mod show;
