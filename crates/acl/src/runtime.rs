//! How the ACL feature plugs into a worker: compiled tables in the snapshot, per-worker session
//! state, and the runtime trait its nodes need.

use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use vecnet_nodes::{L3Config, L3Runtime};

use crate::classify::{Classifier, RuleRef};
use crate::config::{AclConfig, AclRule};
use crate::key::PacketKey;

pub use crate::session::{
    AclCounters, AclState, ImportError, SavedAclSession, SessionInfo, TimeoutClass, Verdict,
};

/// Which side of the interface the ACLs apply to (vswitch direction, SYSTEM.md conventions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets entering the data plane from the interface (`acl-plugin-in-ip4-fa`).
    Input,
    /// Packets leaving the data plane into the interface (`acl-plugin-out-ip4-fa`).
    Output,
}

impl Direction {
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Direction::Input => 0,
            Direction::Output => 1,
        }
    }
}

/// Context slot meaning "no ACL bound".
const UNBOUND: u32 = u32::MAX;

/// Every snapshot's tables get a new generation, so that workers notice a change in one compare.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One distinct ordered list of ACLs and its compiled classifier. Interfaces bound to the same
/// list share it (every pod TAP carries the same reflective ACL on input).
#[derive(Debug, Clone)]
struct Context {
    acls: Vec<u32>,
    classifier: Classifier,
}

/// ACL tables compiled for lookup, part of the immutable snapshot (built by the control plane).
#[derive(Debug, Clone, Default)]
pub struct AclTables {
    pub config: AclConfig,
    generation: u64,
    /// By `sw_if_index`: the context of `[input, output]`, or [`UNBOUND`].
    by_if: Vec<[u32; 2]>,
    contexts: Vec<Context>,
}

impl AclTables {
    /// Compiles `config`: merges the bindings per (interface, direction) in order and builds
    /// one classifier per distinct ACL list. An ACL index that does not exist is skipped when
    /// matching (VPP: a missing ACL matches nothing), so such traffic falls to the final deny.
    pub fn build(config: &AclConfig) -> Self {
        let mut lists: HashMap<u32, [Vec<u32>; 2]> = HashMap::new();
        for b in &config.bindings {
            let e = lists.entry(b.sw_if_index).or_default();
            e[0].extend_from_slice(&b.input);
            e[1].extend_from_slice(&b.output);
        }
        let max_if = lists.keys().copied().max().map_or(0, |m| m as usize + 1);
        let mut by_if = vec![[UNBOUND; 2]; max_if];
        let mut contexts: Vec<Context> = Vec::new();
        let mut by_list: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut ifs: Vec<_> = lists.into_iter().collect();
        // Deterministic context numbering (by interface), whatever the map order.
        ifs.sort_by_key(|(sw, _)| *sw);
        for (sw, dirs) in ifs {
            for (d, acls) in dirs.into_iter().enumerate() {
                if acls.is_empty() {
                    continue;
                }
                let ctx = *by_list.entry(acls.clone()).or_insert_with(|| {
                    let parts: Vec<(u32, &[AclRule])> = acls
                        .iter()
                        .filter_map(|&a| {
                            config
                                .acls
                                .get(a as usize)
                                .map(|acl| (a, acl.rules.as_slice()))
                        })
                        .collect();
                    contexts.push(Context {
                        classifier: Classifier::build(&parts),
                        acls: acls.clone(),
                    });
                    (contexts.len() - 1) as u32
                });
                if let Some(slot) = by_if.get_mut(sw as usize) {
                    slot[d] = ctx;
                }
            }
        }
        Self {
            config: config.clone(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            by_if,
            contexts,
        }
    }

    /// Changes whenever a new table set is built (0 for the empty default).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    #[inline]
    fn context(&self, sw_if_index: u32, dir: Direction) -> Option<&Context> {
        let c = self.by_if.get(sw_if_index as usize)?[dir.index()];
        self.contexts.get(c as usize)
    }

    /// Whether any ACL is bound on input of `sw_if_index`.
    pub fn has_input(&self, sw_if_index: u32) -> bool {
        self.context(sw_if_index, Direction::Input).is_some()
    }

    /// Whether any ACL is bound on output of `sw_if_index`.
    pub fn has_output(&self, sw_if_index: u32) -> bool {
        self.context(sw_if_index, Direction::Output).is_some()
    }

    /// Whether any ACL is bound to `sw_if_index` in either direction.
    pub fn is_bound(&self, sw_if_index: u32) -> bool {
        self.has_input(sw_if_index) || self.has_output(sw_if_index)
    }

    /// Whether any ACL is bound anywhere (sessions are possible at all).
    pub fn any_bound(&self) -> bool {
        !self.contexts.is_empty()
    }

    /// Highest bound `sw_if_index` + 1.
    pub fn interface_span(&self) -> usize {
        self.by_if.len()
    }

    /// The ACL indices bound to (`sw_if_index`, `dir`), in evaluation order.
    pub fn acls_on(&self, sw_if_index: u32, dir: Direction) -> &[u32] {
        self.context(sw_if_index, dir)
            .map_or(&[][..], |c| c.acls.as_slice())
    }

    /// The classifier of (`sw_if_index`, `dir`), if ACLs are bound there.
    pub fn classifier(&self, sw_if_index: u32, dir: Direction) -> Option<&Classifier> {
        self.context(sw_if_index, dir).map(|c| &c.classifier)
    }

    /// The first rule of the ACLs bound to (`sw_if_index`, `dir`) matching `key`; `None` = no
    /// match (deny), also when nothing is bound.
    #[inline]
    pub fn classify(&self, sw_if_index: u32, dir: Direction, key: &PacketKey) -> Option<RuleRef> {
        self.context(sw_if_index, dir)?.classifier.classify(key)
    }
}

/// The worker runtime as seen by the ACL nodes.
pub trait AclRuntime: L3Runtime {
    fn acl(&mut self) -> (&L3Config, &AclTables, &mut AclState);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Acl, AclBinding, Action};

    #[test]
    fn bindings_merge_and_share_contexts() {
        let cfg = AclConfig {
            acls: vec![
                Acl {
                    tag: "a".into(),
                    rules: vec![AclRule::any(Action::Deny)],
                },
                Acl {
                    tag: "b".into(),
                    rules: vec![AclRule::any(Action::PermitReflect)],
                },
            ],
            bindings: vec![
                AclBinding {
                    sw_if_index: 6,
                    input: vec![1],
                    output: vec![0],
                },
                AclBinding {
                    sw_if_index: 7,
                    input: vec![1],
                    output: vec![],
                },
                AclBinding {
                    sw_if_index: 6,
                    input: vec![9],
                    output: vec![],
                },
            ],
            ..AclConfig::default()
        };
        let t = AclTables::build(&cfg);
        assert!(t.has_input(6) && t.has_output(6) && t.has_input(7) && !t.has_output(7));
        assert!(!t.is_bound(2) && !t.is_bound(100));
        assert_eq!(t.acls_on(6, Direction::Input), &[1, 9]);
        assert_eq!(t.acls_on(7, Direction::Input), &[1]);
        assert_eq!(t.contexts.len(), 3);
        let k = PacketKey::default();
        assert_eq!(
            t.classify(6, Direction::Output, &k).map(|r| r.action),
            Some(Action::Deny)
        );
        assert_eq!(t.classify(2, Direction::Output, &k), None);
        assert!(AclTables::build(&cfg).generation() != t.generation());
        assert_eq!(AclTables::default().generation(), 0);
    }
}
