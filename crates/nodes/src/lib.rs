//! vecnet's L2/L3 graph nodes, one file per node as in VPP, each with its trace record and
//! formatter, plus the configuration model they read and the runtime trait they need.

pub mod common;
pub mod config;
pub mod runtime;

pub mod arp_input;
pub mod ethernet_input;
pub mod icmp_error;
pub mod interface_output;
pub mod ip4_arp;
pub mod ip4_icmp_echo_request;
pub mod ip4_icmp_input;
pub mod ip4_input;
pub mod ip4_load_balance;
pub mod ip4_local;
pub mod ip4_lookup;
pub mod ip4_rewrite;
pub mod virtio_input;

pub use config::{Adjacency, Dpo, Fib, Interface, InterfaceKind, L3Config, LoadBalance};
pub use runtime::{DeviceIo, L3Runtime, L3State};
