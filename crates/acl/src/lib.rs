//! Stateful, reflective ACLs for NetworkPolicies (SYSTEM.md section 7).

pub mod config;

pub use config::{Acl, AclBinding, AclConfig, AclRule, AclTimeouts, Action};
