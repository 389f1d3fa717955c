//! NAT44 for Kubernetes Services (SYSTEM.md section 6): static load-balancing mappings with
//! per-origin endpoint sets, sessions that expire inside the data plane, and the era-A node set
//! `nat44-out2in`, `nat44-in2out` → `nat44-in2out-slowpath`, `nat44-in2out-output` (+ slow path).

pub mod common;
pub mod config;
pub mod nat44_classify;
pub mod nat44_in2out;
pub mod nat44_in2out_output;
pub mod nat44_in2out_slowpath;
pub mod nat44_out2in;
pub mod nodes;
pub mod runtime;
pub mod session;
pub mod show;
pub mod translate;

pub use config::{
    Backend, BackendSet, IdentityMapping, NatConfig, NatTimeouts, Proto, StaticMapping,
};
pub use runtime::{NatRuntime, NatState, NatTables};
