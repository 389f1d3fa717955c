//! `show nat44 …` in VPP's shapes.

use vecnet_nodes::L3Config;

use crate::runtime::{NatState, NatTables};

/// Runs a `show nat44 …` command (`args` after `show nat44`); `None` if unknown.
pub fn show(
    args: &[&str],
    _l3: &L3Config,
    _tables: &NatTables,
    _state: &NatState,
) -> Option<String> {
    match args {
        ["sessions", ..] | ["static", "mappings"] | ["interfaces"] | ["addresses"] => {
            Some(String::new())
        }
        _ => None,
    }
}
