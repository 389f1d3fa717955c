//! How NAT44 plugs into a worker: compiled tables in the snapshot, per-worker session state, and
//! the runtime trait its nodes need.

use vecnet_nodes::{L3Config, L3Runtime};

use crate::config::NatConfig;

/// NAT44 tables compiled for lookup, part of the immutable snapshot.
#[derive(Debug, Clone, Default)]
pub struct NatTables {
    pub config: NatConfig,
}

impl NatTables {
    pub fn build(config: &NatConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

/// Per-worker NAT44 state: sessions, affinity records, port allocation, RNG.
#[derive(Debug, Default)]
pub struct NatState {}

impl NatState {
    pub fn new(_config: &NatConfig, _seed: u64) -> Self {
        Self {}
    }

    pub fn sync(&mut self, _tables: &NatTables, _now_ns: u64) {}
}

/// The worker runtime as seen by the NAT nodes.
pub trait NatRuntime: L3Runtime {
    fn nat(&mut self) -> (&L3Config, &NatTables, &mut NatState);
}
