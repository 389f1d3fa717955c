//! `acl-plugin-in-ip4-fa` and `acl-plugin-out-ip4-fa`: placeholder pass-through until the ACL
//! data path lands (they are bound only where ACLs are configured).

use vecnet_graph::{FormatContext, Node, NodeCtx, RX, TX};
use vecnet_nodes::common::feature_next;

use crate::runtime::AclRuntime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

pub struct AclPluginFa(pub Direction);

impl<R: AclRuntime> Node<R> for AclPluginFa {
    fn name(&self) -> &str {
        match self.0 {
            Direction::Input => "acl-plugin-in-ip4-fa",
            Direction::Output => "acl-plugin-out-ip4-fa",
        }
    }

    fn next_nodes(&self) -> Vec<String> {
        vec!["error-drop".into()]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (l3, _, _) = rt.acl();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            let m = ctx.pool.meta(bi);
            let (sw, pos) = match self.0 {
                Direction::Input => (m.sw_if_index[RX], m.feature_cursor as usize),
                Direction::Output => (m.sw_if_index[TX], m.feature_cursor as usize),
            };
            let arc = l3.interface(sw).map(|i| match self.0 {
                Direction::Input => i.ip4_unicast_arc.as_slice(),
                Direction::Output => i.ip4_output_arc.as_slice(),
            });
            *next = feature_next(ctx, bi, arc.unwrap_or(&[]), pos, 0);
        }
    }

    fn format_trace(&self, _data: &[u8], _: &dyn FormatContext, _out: &mut String) {}
}

/// The two ACL nodes, input first.
pub fn nodes<R: AclRuntime + 'static>() -> [Box<dyn Node<R>>; 2] {
    [
        Box::new(AclPluginFa(Direction::Input)),
        Box::new(AclPluginFa(Direction::Output)),
    ]
}
