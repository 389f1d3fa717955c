//! The NAT44 graph nodes, in feature-arc order.

use vecnet_graph::Node;

use crate::runtime::NatRuntime;

/// Input-arc nodes (`ip4-unicast`), registered between `ip4-input` and `ip4-lookup`.
pub fn input_nodes<R: NatRuntime + 'static>() -> Vec<Box<dyn Node<R>>> {
    Vec::new()
}

/// Output-arc nodes (`ip4-output`), registered after `ip4-rewrite`.
pub fn output_nodes<R: NatRuntime + 'static>() -> Vec<Box<dyn Node<R>>> {
    Vec::new()
}
