//! `show acl-plugin acl|sessions|interface` in VPP's shapes.

use vecnet_nodes::L3Config;

use crate::runtime::{AclState, AclTables};

/// Runs a `show acl-plugin …` command (`args` after `show acl-plugin`); `None` if unknown.
pub fn show(
    args: &[&str],
    _l3: &L3Config,
    _tables: &AclTables,
    _state: &AclState,
) -> Option<String> {
    match args {
        ["acl", ..] | ["sessions", ..] | ["interface", ..] => Some(String::new()),
        _ => None,
    }
}
