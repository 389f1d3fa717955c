//! How the ACL feature plugs into a worker: compiled tables in the snapshot, per-worker session
//! state, and the runtime trait its nodes need.

use vecnet_nodes::{L3Config, L3Runtime};

use crate::config::AclConfig;

/// ACL tables compiled for lookup, part of the immutable snapshot (built by the control plane).
#[derive(Debug, Clone, Default)]
pub struct AclTables {
    pub config: AclConfig,
}

impl AclTables {
    pub fn build(config: &AclConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// Whether any ACL is bound on input of `sw_if_index`.
    pub fn has_input(&self, sw_if_index: u32) -> bool {
        self.config
            .bindings
            .iter()
            .any(|b| b.sw_if_index == sw_if_index && !b.input.is_empty())
    }

    /// Whether any ACL is bound on output of `sw_if_index`.
    pub fn has_output(&self, sw_if_index: u32) -> bool {
        self.config
            .bindings
            .iter()
            .any(|b| b.sw_if_index == sw_if_index && !b.output.is_empty())
    }
}

/// Per-worker ACL state: the reflective session table and its counters.
#[derive(Debug, Default)]
pub struct AclState {}

impl AclState {
    pub fn new(_config: &AclConfig) -> Self {
        Self {}
    }

    /// Called once per main loop with the current tables (resize, re-evaluate after a change).
    pub fn sync(&mut self, _tables: &AclTables, _now_ns: u64) {}
}

/// The worker runtime as seen by the ACL nodes.
pub trait AclRuntime: L3Runtime {
    fn acl(&mut self) -> (&L3Config, &AclTables, &mut AclState);
}
