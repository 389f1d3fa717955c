//! Counters for export (Prometheus `/metrics` in `vecnetd`): a copy taken between vectors, so
//! the exporter never reads worker state while packets move.

use crate::dataplane::Dataplane;

/// One interface's packet and byte counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub sw_if_index: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// One `show errors` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStats {
    pub node: String,
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneStats {
    pub interfaces: Vec<InterfaceStats>,
    pub errors: Vec<ErrorStats>,
    pub nat_sessions: u64,
    pub nat_static_mappings: u64,
    pub acl_sessions: u64,
    /// Configurations applied since start (each one a new snapshot).
    pub applies: u64,
}

impl Dataplane {
    pub fn stats(&self) -> DataplaneStats {
        let snap = self.snapshot();
        let interfaces = snap
            .l3
            .interfaces
            .iter()
            .flatten()
            .map(|i| {
                let c = self
                    .worker
                    .l3
                    .if_counters
                    .get(i.sw_if_index as usize)
                    .copied()
                    .unwrap_or_default();
                InterfaceStats {
                    name: i.name.clone(),
                    sw_if_index: i.sw_if_index,
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                }
            })
            .collect();
        let errors = self
            .graph
            .errors()
            .into_iter()
            .map(|(node, reason, count)| ErrorStats {
                node: node.to_string(),
                reason,
                count,
            })
            .collect();
        DataplaneStats {
            interfaces,
            errors,
            nat_sessions: u64::from(self.worker.nat.sessions.len()),
            nat_static_mappings: snap.nat.mappings.len() as u64,
            acl_sessions: u64::from(self.worker.acl.len()),
            applies: self.epoch(),
        }
    }
}
