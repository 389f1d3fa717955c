//! Rule matching for one (interface, direction): the ordered rules of the bound ACLs compiled
//! into a tuple-space classifier, plus the linear matcher it must agree with (SYSTEM.md 7.7).
//!
//! Tuple-space search on addresses: every rule has a *shape*, its (source, destination) prefix
//! lengths. Rules of one shape are found with one hash probe on the packet's addresses masked to
//! that shape, so a packet costs one probe per shape, not one comparison per rule; rendered
//! NetworkPolicies have a handful of shapes (pod /32s, ipBlock CIDRs, any). Shapes are visited in
//! order of their best priority (priority = position in the concatenated rule list; first match
//! wins), and the search stops as soon as no remaining shape can beat the best match found.
//!
//! A probe yields a *node*: the rules of that shape and masked address pair. Inside it,
//! protocol-any rules need no further check, so only the best one is kept. Rules naming a
//! protocol are kept per protocol, with their destination-port ranges cut into elementary
//! intervals (a sweep over the range ends): a binary search on the packet's destination port
//! gives the candidates covering it, in priority order, cut after the first one that needs no
//! residual check (source-port range, TCP flags). Ports and protocols thus never multiply the
//! number of probes, and ranges need no expansion. Non-first fragments have no ports: they match
//! a protocol's best rule whatever its ports (VPP's `l4_match_nonfirst_fragment`).

use std::collections::BTreeSet;

use foldhash::fast::RandomState;
use hashbrown::HashMap;

use crate::config::{AclRule, Action};
use crate::key::PacketKey;

/// A matched rule: which ACL, which rule in it, and its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    pub acl_index: u32,
    pub rule_index: u32,
    pub action: Action,
}

const NONE: u32 = u32::MAX;

const CHECK_SPORT: u8 = 1;
const CHECK_TCP: u8 = 2;

#[inline]
pub fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - u32::from(l)),
    }
}

/// Whether `rule` matches `k`, with VPP's semantics (`single_acl_match_5tuple`): addresses by
/// prefix (the rule's host bits ignored), protocol 0 = any and then no port checks, non-first
/// fragments match on protocol alone, packets without a readable L4 header never match a rule
/// that names a protocol, inclusive port (ICMP type/code) ranges, TCP flags `(flags & mask) ==
/// value` when the packet's flags are valid.
pub fn rule_matches(rule: &AclRule, k: &PacketKey) -> bool {
    let dm = prefix_mask(rule.dst.1);
    if k.dst & dm != u32::from(rule.dst.0) & dm {
        return false;
    }
    let sm = prefix_mask(rule.src.1);
    if k.src & sm != u32::from(rule.src.0) & sm {
        return false;
    }
    if rule.proto == 0 {
        return true;
    }
    if k.proto != rule.proto {
        return false;
    }
    if k.nonfirst_fragment() {
        return true;
    }
    if !k.l4_valid() {
        return false;
    }
    let in_range = |p: u16, (lo, hi): (u16, u16)| lo <= p && p <= hi;
    if !in_range(k.sport, rule.src_ports) || !in_range(k.dport, rule.dst_ports) {
        return false;
    }
    let (value, mask) = rule.tcp_flags;
    !(k.tcp_flags_valid() && k.tcp_flags & mask != value)
}

/// The reference matcher: the ACLs in order, their rules in order, first match wins.
pub fn linear_match(acls: &[(u32, &[AclRule])], k: &PacketKey) -> Option<RuleRef> {
    for &(acl_index, rules) in acls {
        for (i, r) in rules.iter().enumerate() {
            if rule_matches(r, k) {
                return Some(RuleRef {
                    acl_index,
                    rule_index: i as u32,
                    action: r.action,
                });
            }
        }
    }
    None
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    id: u32,
    src_mask: u32,
    dst_mask: u32,
    /// Best (lowest) priority of any rule of this shape.
    min_prio: u32,
    /// The shape's only node when it has no address bits (`0.0.0.0/0` both ways: every packet
    /// masks to the same key), found without hashing; [`NONE`] for other shapes.
    direct: u32,
}

/// Shape id and masked addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NodeKey {
    addrs: u64,
    shape: u32,
}

impl NodeKey {
    #[inline]
    fn new(s: &Shape, src: u32, dst: u32) -> Self {
        Self {
            addrs: u64::from(src & s.src_mask) << 32 | u64::from(dst & s.dst_mask),
            shape: s.id,
        }
    }
}

/// A rule naming a protocol, with what the destination-port interval could not check.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    prio: u32,
    checks: u8,
    tcp_value: u8,
    tcp_mask: u8,
    sport: (u16, u16),
}

impl Candidate {
    #[inline]
    fn passes(&self, k: &PacketKey) -> bool {
        self.checks == 0
            || ((self.checks & CHECK_SPORT == 0
                || (self.sport.0 <= k.sport && k.sport <= self.sport.1))
                && (self.checks & CHECK_TCP == 0
                    || !k.tcp_flags_valid()
                    || k.tcp_flags & self.tcp_mask == self.tcp_value))
    }
}

/// The rules of one protocol in one node.
#[derive(Debug, Clone)]
struct ProtoTable {
    proto: u8,
    /// Best priority whatever the ports (what a non-first fragment matches).
    min_prio: u32,
    /// Start of each elementary destination-port interval; the first is 0.
    bounds: Vec<u16>,
    /// Per interval: `(start, len)` in the classifier's candidates, in priority order.
    lists: Vec<(u32, u32)>,
}

#[derive(Debug, Clone)]
struct Node {
    min_prio: u32,
    /// Best protocol-any rule ([`NONE`] if none): it matches every packet reaching the node.
    any_proto: u32,
    /// Sorted by protocol.
    protos: Vec<ProtoTable>,
}

impl Node {
    #[inline]
    fn lookup(&self, k: &PacketKey, cands: &[Candidate], mut best: u32) -> u32 {
        best = best.min(self.any_proto);
        let Some(pt) = self.protos.iter().find(|p| p.proto == k.proto) else {
            return best;
        };
        if pt.min_prio >= best {
            return best;
        }
        if k.nonfirst_fragment() {
            return pt.min_prio;
        }
        if !k.l4_valid() {
            return best;
        }
        let i = pt
            .bounds
            .partition_point(|&b| b <= k.dport)
            .saturating_sub(1);
        let Some(&(start, len)) = pt.lists.get(i) else {
            return best;
        };
        let Some(list) = cands.get(start as usize..start as usize + len as usize) else {
            return best;
        };
        for c in list {
            if c.prio >= best {
                break;
            }
            if c.passes(k) {
                return c.prio;
            }
        }
        best
    }
}

/// Rules of one node of one protocol, before the sweep: `(candidate, dport range)`.
type ProtoRules = Vec<(Candidate, (u16, u16))>;

#[derive(Default)]
struct NodeBuilder {
    any_proto: u32,
    protos: std::collections::BTreeMap<u8, ProtoRules>,
}

/// Cuts `rules` (in priority order) into elementary destination-port intervals; each
/// interval's list holds the candidates covering it up to the first one without residual
/// checks. Identical neighbouring lists are merged.
fn sweep(proto: u8, rules: &ProtoRules, cands: &mut Vec<Candidate>) -> ProtoTable {
    let min_prio = rules.iter().map(|(c, _)| c.prio).min().unwrap_or(NONE);
    // (position, is_start, rule): ends sort before starts at the same position.
    let mut events: Vec<(u32, bool, usize)> = Vec::with_capacity(2 * rules.len());
    for (i, &(_, (lo, hi))) in rules.iter().enumerate() {
        if lo > hi {
            continue; // never matches a packet with ports
        }
        events.push((u32::from(lo), true, i));
        events.push((u32::from(hi) + 1, false, i));
    }
    events.sort_unstable();
    let mut active: BTreeSet<(u32, usize)> = BTreeSet::new();
    let mut bounds: Vec<u16> = vec![0];
    let mut lists: Vec<(u32, u32)> = vec![(0, 0)];
    let mut prev: Vec<u32> = Vec::new();
    let mut e = 0;
    while e < events.len() {
        let pos = events[e].0;
        while e < events.len() && events[e].0 == pos {
            let (_, start, i) = events[e];
            let key = (rules[i].0.prio, i);
            if start {
                active.insert(key);
            } else {
                active.remove(&key);
            }
            e += 1;
        }
        if pos > u32::from(u16::MAX) {
            break;
        }
        let mut list = Vec::new();
        for &(_, i) in &active {
            list.push(i as u32);
            if rules[i].0.checks == 0 {
                break;
            }
        }
        if list == prev {
            continue;
        }
        let entry = (cands.len() as u32, list.len() as u32);
        cands.extend(list.iter().map(|&i| rules[i as usize].0));
        if bounds.last() == Some(&(pos as u16)) {
            if let Some(l) = lists.last_mut() {
                *l = entry;
            }
        } else {
            bounds.push(pos as u16);
            lists.push(entry);
        }
        prev = list;
    }
    ProtoTable {
        proto,
        min_prio,
        bounds,
        lists,
    }
}

/// The compiled rules of one ordered ACL list.
#[derive(Clone)]
pub struct Classifier {
    /// By priority.
    rules: Vec<RuleRef>,
    /// Sorted by `min_prio`.
    shapes: Vec<Shape>,
    table: HashMap<NodeKey, u32, RandomState>,
    nodes: Vec<Node>,
    candidates: Vec<Candidate>,
    /// The first rule when it matches every packet (protocol any, `0.0.0.0/0` both ways: the
    /// reflective ACL, a permit-all table): the answer for every packet, without a search.
    always: Option<RuleRef>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("rules", &self.rules.len())
            .field("shapes", &self.shapes.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Classifier {
    /// Compiles the ACLs `(index, rules)` in evaluation order.
    pub fn build(acls: &[(u32, &[AclRule])]) -> Self {
        let mut rules = Vec::new();
        let mut shapes: HashMap<(u32, u32), Shape, RandomState> = HashMap::default();
        let mut builders: HashMap<NodeKey, NodeBuilder, RandomState> = HashMap::default();
        for &(acl_index, list) in acls {
            for (i, r) in list.iter().enumerate() {
                let prio = rules.len() as u32;
                rules.push(RuleRef {
                    acl_index,
                    rule_index: i as u32,
                    action: r.action,
                });
                let (sm, dm) = (prefix_mask(r.src.1), prefix_mask(r.dst.1));
                let next_id = shapes.len() as u32;
                let shape = shapes.entry((sm, dm)).or_insert(Shape {
                    id: next_id,
                    src_mask: sm,
                    dst_mask: dm,
                    min_prio: NONE,
                    direct: NONE,
                });
                shape.min_prio = shape.min_prio.min(prio);
                let key = NodeKey::new(shape, u32::from(r.src.0), u32::from(r.dst.0));
                let b = builders.entry(key).or_insert_with(|| NodeBuilder {
                    any_proto: NONE,
                    ..NodeBuilder::default()
                });
                if b.any_proto != NONE {
                    continue; // shadowed: an earlier protocol-any rule takes every packet here
                }
                if r.proto == 0 {
                    b.any_proto = prio;
                    continue;
                }
                let mut c = Candidate {
                    prio,
                    checks: 0,
                    tcp_value: r.tcp_flags.0,
                    tcp_mask: r.tcp_flags.1,
                    sport: r.src_ports,
                };
                if r.src_ports != (0, u16::MAX) {
                    c.checks |= CHECK_SPORT;
                }
                if r.tcp_flags != (0, 0) {
                    c.checks |= CHECK_TCP;
                }
                b.protos.entry(r.proto).or_default().push((c, r.dst_ports));
            }
        }
        let mut candidates = Vec::new();
        let mut nodes = Vec::with_capacity(builders.len());
        let mut table = HashMap::with_capacity_and_hasher(builders.len(), RandomState::default());
        for (key, b) in builders {
            let protos: Vec<ProtoTable> = b
                .protos
                .iter()
                .map(|(&p, rules)| sweep(p, rules, &mut candidates))
                .collect();
            let min_prio = protos
                .iter()
                .map(|p| p.min_prio)
                .fold(b.any_proto, u32::min);
            table.insert(key, nodes.len() as u32);
            nodes.push(Node {
                min_prio,
                any_proto: b.any_proto,
                protos,
            });
        }
        let mut shapes: Vec<Shape> = shapes.into_values().collect();
        for s in shapes
            .iter_mut()
            .filter(|s| s.src_mask == 0 && s.dst_mask == 0)
        {
            s.direct = table.get(&NodeKey::new(s, 0, 0)).copied().unwrap_or(NONE);
        }
        shapes.sort_by_key(|s| (s.min_prio, s.id));
        let first = acls.iter().find_map(|&(_, list)| list.first());
        let always = first
            .filter(|r| r.proto == 0 && r.src.1 == 0 && r.dst.1 == 0)
            .and(rules.first().copied());
        Self {
            rules,
            shapes,
            table,
            nodes,
            candidates,
            always,
        }
    }

    /// The first rule matching `k`, or `None` (then the packet is denied).
    #[inline]
    pub fn classify(&self, k: &PacketKey) -> Option<RuleRef> {
        if self.always.is_some() {
            return self.always;
        }
        let mut best = NONE;
        for s in &self.shapes {
            if s.min_prio >= best {
                break;
            }
            // The match-everything shape (`any` rules, the reflective ACL) skips the hash.
            let n = if s.direct != NONE {
                s.direct
            } else {
                match self.probe(s, k) {
                    Some(n) => n,
                    None => continue,
                }
            };
            let Some(node) = self.nodes.get(n as usize) else {
                continue;
            };
            if node.min_prio < best {
                best = node.lookup(k, &self.candidates, best);
            }
        }
        self.rules.get(best as usize).copied()
    }

    /// The node of shape `s` for `k`'s addresses. Out of line, so that a lookup that needs no
    /// hash (the match-everything shape) does not carry the hash table's state in registers.
    #[inline(never)]
    fn probe(&self, s: &Shape, k: &PacketKey) -> Option<u32> {
        self.table.get(&NodeKey::new(s, k.src, k.dst)).copied()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of distinct address shapes: the most hash probes a packet costs.
    pub fn shape_count(&self) -> usize {
        self.shapes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::pkt_flags;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn sweep_cuts_overlapping_ranges() {
        let c = |prio, checks| Candidate {
            prio,
            checks,
            tcp_value: 0,
            tcp_mask: 0,
            sport: (0, 10),
        };
        let rules: ProtoRules = vec![
            (c(0, CHECK_SPORT), (80, 80)),
            (c(1, 0), (70, 90)),
            (c(2, 0), (0, 65535)),
            (c(3, 0), (100, 99)),
            (c(4, 0), (65535, 65535)),
        ];
        let mut cands = Vec::new();
        let t = sweep(6, &rules, &mut cands);
        assert_eq!(t.min_prio, 0);
        assert_eq!(t.bounds, vec![0, 70, 80, 81, 91]);
        let prios = |i: usize| {
            let (s, l) = t.lists[i];
            cands[s as usize..(s + l) as usize]
                .iter()
                .map(|c| c.prio)
                .collect::<Vec<_>>()
        };
        assert_eq!(prios(0), vec![2]);
        assert_eq!(prios(1), vec![1]);
        assert_eq!(prios(2), vec![0, 1]);
        assert_eq!(prios(3), vec![1]);
        // 65535: rule 2 still first; nothing new is emitted for rule 4 behind it.
        assert_eq!(prios(4), vec![2]);
    }

    fn rule(action: Action, src: (u32, u8), dst: (u32, u8), proto: u8) -> AclRule {
        AclRule {
            action,
            src: (Ipv4Addr::from(src.0), src.1),
            dst: (Ipv4Addr::from(dst.0), dst.1),
            proto,
            src_ports: (0, 65535),
            dst_ports: (0, 65535),
            tcp_flags: (0, 0),
        }
    }

    fn key(src: u32, dst: u32, proto: u8, sport: u16, dport: u16, flags: u8) -> PacketKey {
        PacketKey {
            src,
            dst,
            proto,
            sport,
            dport,
            flags,
            ..PacketKey::default()
        }
    }

    #[test]
    fn first_match_across_acls_and_fragments() {
        let mut deny_udp = rule(Action::Deny, (0, 0), (0, 0), 17);
        deny_udp.dst_ports = (53, 53);
        let a0 = vec![deny_udp];
        let a1 = vec![rule(Action::Permit, (0, 0), (0, 0), 0)];
        let c = Classifier::build(&[(4, &a0), (7, &a1)]);
        let l4 = pkt_flags::L4_VALID;
        let hit = |k: PacketKey| c.classify(&k).map(|r| (r.acl_index, r.rule_index));
        assert_eq!(hit(key(1, 2, 17, 9, 53, l4)), Some((4, 0)));
        assert_eq!(hit(key(1, 2, 17, 9, 54, l4)), Some((7, 0)));
        // A non-first fragment of UDP hits the UDP deny despite its (absent) ports.
        assert_eq!(
            hit(key(1, 2, 17, 0, 0, pkt_flags::NONFIRST_FRAGMENT)),
            Some((4, 0))
        );
        // No L4 header: only the protocol-any rule can match.
        assert_eq!(hit(key(1, 2, 17, 0, 0, 0)), Some((7, 0)));
    }

    fn arb_prefix() -> impl Strategy<Value = (u32, u8)> {
        // Few distinct addresses and lengths so that rules and packets collide often.
        (
            prop::sample::select(vec![0x0a01_0103u32, 0x0a01_0200, 0x0a14_0002, 0xc0a8_0001]),
            prop::sample::select(vec![0u8, 8, 16, 24, 30, 32]),
        )
    }

    fn arb_range() -> impl Strategy<Value = (u16, u16)> {
        prop_oneof![
            Just((0u16, 65535u16)),
            (0u16..8).prop_map(|p| (p * 10, p * 10)),
            (0u16..80, 0u16..80).prop_map(|(a, b)| (a.min(b), a.max(b))),
            (0u16..65535, 0u16..65535).prop_map(|(a, b)| (a.min(b), a.max(b))),
            (0u16..80, 0u16..80).prop_map(|(a, b)| (a.max(b), a.min(b))),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = AclRule> {
        (
            prop::sample::select(vec![Action::Deny, Action::Permit, Action::PermitReflect]),
            arb_prefix(),
            arb_prefix(),
            prop::sample::select(vec![0u8, 1, 6, 17]),
            arb_range(),
            arb_range(),
            prop_oneof![
                4 => Just((0u8, 0u8)),
                1 => (any::<u8>(), any::<u8>()).prop_map(|(v, m)| (v & m, m)),
                1 => (any::<u8>(), any::<u8>()),
            ],
        )
            .prop_map(|(action, s, d, proto, sp, dp, tcp)| AclRule {
                action,
                src: (Ipv4Addr::from(s.0), s.1),
                dst: (Ipv4Addr::from(d.0), d.1),
                proto,
                src_ports: sp,
                dst_ports: dp,
                tcp_flags: tcp,
            })
    }

    fn arb_key() -> impl Strategy<Value = PacketKey> {
        (
            prop::sample::select(vec![
                0x0a01_0103u32,
                0x0a01_0104,
                0x0a01_02ff,
                0x0a14_0002,
                0x0102_0304,
            ]),
            prop::sample::select(vec![
                0x0a01_0103u32,
                0x0a01_0200,
                0x0a14_0002,
                0xc0a8_0001,
                0xc0a8_0101,
            ]),
            prop::sample::select(vec![1u8, 6, 17, 47]),
            prop_oneof![(0u16..100).prop_map(|p| p), any::<u16>()],
            prop_oneof![(0u16..100).prop_map(|p| p), any::<u16>()],
            any::<u8>(),
            prop::sample::select(vec![
                pkt_flags::L4_VALID,
                pkt_flags::L4_VALID | pkt_flags::TCP_FLAGS_VALID,
                0,
                pkt_flags::NONFIRST_FRAGMENT,
            ]),
        )
            .prop_map(|(src, dst, proto, sport, dport, tcp, flags)| {
                let valid = proto == 6 && flags & pkt_flags::TCP_FLAGS_VALID != 0;
                let flags = if valid {
                    flags
                } else {
                    flags & !pkt_flags::TCP_FLAGS_VALID
                };
                let l4 = flags & pkt_flags::L4_VALID != 0;
                PacketKey {
                    src,
                    dst,
                    proto,
                    sport: if l4 { sport } else { 0 },
                    dport: if l4 { dport } else { 0 },
                    tcp_flags: if valid { tcp } else { 0 },
                    flags,
                    sw_if_index: 1,
                    icmp_id: 0,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The tuple-space classifier and the linear matcher agree on the first matching rule.
        #[test]
        fn tuple_space_equals_linear(
            acls in prop::collection::vec(prop::collection::vec(arb_rule(), 0..24), 1..4),
            keys in prop::collection::vec(arb_key(), 1..64),
        ) {
            let list: Vec<(u32, &[AclRule])> = acls
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u32 * 3 + 1, r.as_slice()))
                .collect();
            let c = Classifier::build(&list);
            for k in &keys {
                prop_assert_eq!(c.classify(k), linear_match(&list, k), "key {:?}", k);
            }
            // Keys made to hit each rule exactly (its own addresses and first ports).
            for (_, rules) in &list {
                for r in rules.iter() {
                    let k = PacketKey {
                        src: u32::from(r.src.0),
                        dst: u32::from(r.dst.0),
                        proto: if r.proto == 0 { 17 } else { r.proto },
                        sport: r.src_ports.0,
                        dport: r.dst_ports.1,
                        tcp_flags: r.tcp_flags.0,
                        flags: pkt_flags::L4_VALID
                            | if r.proto == 6 { pkt_flags::TCP_FLAGS_VALID } else { 0 },
                        sw_if_index: 1,
                        icmp_id: 0,
                    };
                    prop_assert_eq!(c.classify(&k), linear_match(&list, &k), "key {:?}", k);
                }
            }
        }

        /// Rules that match every address (`0.0.0.0/0` both ways) anywhere in the lists, first
        /// included (the shape found without hashing, the first rule that answers every packet):
        /// still the linear matcher's answer.
        #[test]
        fn any_address_rules_equal_linear(
            acls in prop::collection::vec(prop::collection::vec(arb_rule(), 0..12), 1..3),
            any in prop::collection::vec((0usize..16, 0usize..3, prop::sample::select(vec![0u8, 6, 17])), 1..4),
            keys in prop::collection::vec(arb_key(), 1..64),
        ) {
            let mut acls = acls;
            for (at, list, proto) in any {
                let n = acls.len();
                let l = &mut acls[list % n];
                let mut r = AclRule::any(Action::Permit);
                r.proto = proto;
                l.insert(at.min(l.len()), r);
            }
            let list: Vec<(u32, &[AclRule])> = acls
                .iter()
                .enumerate()
                .map(|(i, r)| (i as u32, r.as_slice()))
                .collect();
            let c = Classifier::build(&list);
            for k in &keys {
                prop_assert_eq!(c.classify(k), linear_match(&list, k), "key {:?}", k);
            }
        }
    }

    #[test]
    fn a_first_rule_matching_everything_answers_every_packet() {
        let mut r = AclRule::any(Action::PermitReflect);
        let rules = [r.clone(), AclRule::any(Action::Deny)];
        let c = Classifier::build(&[(0, &[]), (4, &rules)]);
        let want = Some(RuleRef {
            acl_index: 4,
            rule_index: 0,
            action: Action::PermitReflect,
        });
        assert_eq!(c.always, want);
        for k in [
            PacketKey::default(),
            PacketKey {
                proto: 6,
                src: 1,
                ..PacketKey::default()
            },
        ] {
            assert_eq!(c.classify(&k), want);
        }
        // Any protocol but not any address, or a protocol: searched.
        r.src.1 = 8;
        assert_eq!(Classifier::build(&[(0, &[r.clone()])]).always, None);
        r.src.1 = 0;
        r.proto = 6;
        assert_eq!(Classifier::build(&[(0, &[r])]).always, None);
    }
}
