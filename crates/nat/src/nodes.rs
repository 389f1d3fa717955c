//! The NAT44 graph nodes, in feature-arc order.

use vecnet_graph::Node;

use crate::nat44_classify::Nat44Classify;
use crate::nat44_in2out::Nat44In2Out;
use crate::nat44_in2out_output::Nat44In2OutOutput;
use crate::nat44_in2out_slowpath::Nat44In2OutSlowPath;
use crate::nat44_out2in::Nat44Out2In;
use crate::runtime::NatRuntime;

/// Input-arc nodes (`ip4-unicast`), registered between `ip4-input` and `ip4-lookup`.
pub fn input_nodes<R: NatRuntime + 'static>() -> Vec<Box<dyn Node<R>>> {
    vec![
        Box::new(Nat44Classify),
        Box::new(Nat44Out2In::new()),
        Box::new(Nat44In2Out::new()),
        Box::new(Nat44In2OutSlowPath::new()),
    ]
}

/// Output-arc nodes (`ip4-output`), registered after `ip4-rewrite`.
pub fn output_nodes<R: NatRuntime + 'static>() -> Vec<Box<dyn Node<R>>> {
    vec![
        Box::new(Nat44In2OutOutput::new(false)),
        Box::new(Nat44In2OutOutput::new(true)),
    ]
}
