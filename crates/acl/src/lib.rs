//! Stateful, reflective ACLs for NetworkPolicies (SYSTEM.md section 7): the configuration
//! contract, the 18.01 packet key, the tuple-space rule classifier (with its linear reference),
//! the per-worker reflective session table, the `acl-plugin-*-ip4-fa` graph nodes and the
//! `show acl-plugin …` commands.
#![forbid(unsafe_code)]

pub mod config;

pub use config::{Acl, AclBinding, AclConfig, AclRule, AclTimeouts, Action};
pub mod classify;
pub mod key;
pub mod runtime;
pub mod session;
pub use classify::{Classifier, RuleRef};
pub use key::PacketKey;
pub use runtime::{AclRuntime, AclState, AclTables, Direction};
pub mod acl_plugin_fa;
pub mod show;
