//! The vecnet data plane assembled: desired configuration, its compilation into snapshots, the
//! worker with its graph, in-memory and generator devices, and the VPP-style CLI.

pub mod build;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod memio;
pub mod pg;
pub mod sessions;
pub mod show;
pub mod stats;

pub use config::{DataplaneConfig, InterfaceConfig, NeighbourConfig, Path, RouteConfig};
pub use dataplane::{Dataplane, DataplaneError, DataplaneOptions, Snapshot, Worker};
pub use memio::MemIo;
pub use pg::PacketGenerator;
pub use sessions::{RestoreReport, SavedSessions, SessionFileError};
pub use stats::{DataplaneStats, ErrorStats, InterfaceStats};
