//! Compiles a [`DataplaneConfig`] into the L3 snapshot: interfaces with their feature arcs, FIB
//! tables (mtrie leaves = load-balances), load-balances, adjacencies.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use vecnet_fib::Ip4Fib;
use vecnet_nodes::config::{
    prefix_mask, Adjacency, Dpo, Fib, Interface, InterfaceKind, L3Config, LoadBalance,
};
use vecnet_wire::MacAddr;

use crate::config::{DataplaneConfig, Path};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("interface {name:?}: sw_if_index {index} is already used by {other:?}")]
    DuplicateIndex {
        name: String,
        index: u32,
        other: String,
    },
    #[error("interface name {0:?} is used twice")]
    DuplicateName(String),
    #[error("route {prefix}/{len}: {reason}")]
    BadRoute {
        prefix: Ipv4Addr,
        len: u8,
        reason: String,
    },
    #[error("interface {0:?}: feature node {1:?} is not in the graph")]
    UnknownFeature(String, String),
}

/// Graph node indices the snapshot refers to.
pub trait NodeResolver {
    fn ip4_lookup(&self) -> u32;
    /// The `<name>-output` node, registering it if needed.
    fn output_node(&mut self, ifname: &str) -> u32;
    fn feature(&self, name: &str) -> Option<u32>;
}

/// Fixed prefixes every table drops (SYSTEM.md 3.2).
const ALWAYS_DROP: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(0, 0, 0, 0), 32),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
    (Ipv4Addr::new(255, 255, 255, 255), 32),
];

struct Builder {
    fib: Fib,
    statics: HashMap<(u32, Ipv4Addr), MacAddr>,
    interfaces: Vec<Option<Interface>>,
}

impl Builder {
    fn add_lb(&mut self, buckets: Vec<Dpo>) -> u32 {
        // Power-of-two buckets, paths repeated round robin, so selection is a mask.
        let n = buckets.len().max(1).next_power_of_two();
        let b = (0..n)
            .map(|i| {
                buckets
                    .get(i % buckets.len().max(1))
                    .copied()
                    .unwrap_or(Dpo::Drop)
            })
            .collect();
        let index = self.fib.load_balances.len() as u32;
        self.fib.load_balances.push(LoadBalance::new(index, b));
        (self.fib.load_balances.len() - 1) as u32
    }

    fn adjacency(&mut self, sw_if_index: u32, next_hop: Ipv4Addr) -> Option<u32> {
        if let Some(&a) = self.fib.adj_by_neighbour.get(&(sw_if_index, next_hop)) {
            return Some(a);
        }
        let iface = self.interfaces.get(sw_if_index as usize)?.as_ref()?;
        self.fib.adjacencies.push(Adjacency {
            sw_if_index,
            next_hop,
            static_mac: self.statics.get(&(sw_if_index, next_hop)).copied(),
            src_mac: iface.mac,
            mtu: iface.mtu,
            output_node: iface
                .ip4_output_arc
                .first()
                .copied()
                .unwrap_or(iface.output_node),
        });
        let a = (self.fib.adjacencies.len() - 1) as u32;
        self.fib.adj_by_neighbour.insert((sw_if_index, next_hop), a);
        Some(a)
    }

    fn insert(&mut self, table: u32, prefix: Ipv4Addr, len: u8, lb: u32) -> Result<(), BuildError> {
        let p = u32::from(prefix) & prefix_mask(len);
        self.fib
            .tables
            .table_mut_or_create(table)
            .insert(p, len, lb)
            .map_err(|e| BuildError::BadRoute {
                prefix,
                len,
                reason: e.to_string(),
            })
    }
}

/// Builds the L3 snapshot. `epoch` distinguishes it from the previous one.
pub fn build_l3(
    cfg: &DataplaneConfig,
    nodes: &mut dyn NodeResolver,
    epoch: u64,
) -> Result<L3Config, BuildError> {
    let mut interfaces: Vec<Option<Interface>> = Vec::new();
    let mut names: HashMap<&str, u32> = HashMap::new();
    let lookup = nodes.ip4_lookup();
    for ic in &cfg.interfaces {
        if names.insert(ic.name.as_str(), ic.sw_if_index).is_some() {
            return Err(BuildError::DuplicateName(ic.name.clone()));
        }
        let i = ic.sw_if_index as usize;
        if interfaces.len() <= i {
            interfaces.resize(i + 1, None);
        }
        if let Some(other) = &interfaces[i] {
            return Err(BuildError::DuplicateIndex {
                name: ic.name.clone(),
                index: ic.sw_if_index,
                other: other.name.clone(),
            });
        }
        let resolve = |list: &[String]| -> Result<Vec<u32>, BuildError> {
            list.iter()
                .map(|f| {
                    nodes
                        .feature(f)
                        .ok_or_else(|| BuildError::UnknownFeature(ic.name.clone(), f.clone()))
                })
                .collect()
        };
        let mut unicast = resolve(&ic.unicast_features)?;
        unicast.push(lookup);
        let mut output = resolve(&ic.output_features)?;
        let output_node = nodes.output_node(&ic.name);
        output.push(output_node);
        interfaces[i] = Some(Interface {
            sw_if_index: ic.sw_if_index,
            name: ic.name.clone(),
            kind: ic.kind,
            mac: ic.mac,
            ip4: ic.ip4.clone(),
            fib_index: ic.fib_index,
            mtu: ic.mtu,
            admin_up: ic.admin_up,
            dynamic_arp: matches!(ic.kind, InterfaceKind::Host | InterfaceKind::Uplink),
            output_node,
            ip4_unicast_arc: unicast,
            ip4_output_arc: output,
            pod: ic.pod.clone(),
        });
    }
    // local0 always exists, down, as in VPP.
    if interfaces.is_empty() {
        interfaces.push(None);
    }
    if interfaces[0].is_none() && !names.contains_key("local0") {
        let output_node = nodes.output_node("local0");
        interfaces[0] = Some(Interface {
            sw_if_index: 0,
            name: "local0".into(),
            kind: InterfaceKind::Local,
            mac: MacAddr([0; 6]),
            ip4: Vec::new(),
            fib_index: 0,
            mtu: 0,
            admin_up: false,
            dynamic_arp: false,
            output_node,
            ip4_unicast_arc: vec![lookup],
            ip4_output_arc: vec![output_node],
            pod: None,
        });
    }

    let mut b = Builder {
        fib: Fib {
            tables: Ip4Fib::new(0),
            load_balances: Vec::new(),
            adjacencies: Vec::new(),
            adj_by_neighbour: HashMap::new(),
            drop_lb: 0,
        },
        statics: cfg
            .static_neighbours
            .iter()
            .map(|n| ((n.sw_if_index, n.ip), n.mac))
            .collect(),
        interfaces,
    };
    let drop_lb = b.add_lb(vec![Dpo::Drop]);
    b.fib.drop_lb = drop_lb;

    let mut tables: Vec<u32> = b.interfaces.iter().flatten().map(|i| i.fib_index).collect();
    tables.extend(cfg.routes.iter().map(|r| r.table));
    tables.push(0);
    tables.sort_unstable();
    tables.dedup();
    for &t in &tables {
        let default_configured = cfg.routes.iter().any(|r| r.table == t && r.len == 0);
        if !default_configured {
            let lb = b.add_lb(vec![Dpo::Drop]);
            b.insert(t, Ipv4Addr::UNSPECIFIED, 0, lb)?;
        }
        for (p, l) in ALWAYS_DROP {
            let lb = b.add_lb(vec![Dpo::Drop]);
            b.insert(t, p, l, lb)?;
        }
    }

    // Connected and local routes follow interface addresses.
    let connected: Vec<(u32, u32, Ipv4Addr, u8, MacAddr)> = b
        .interfaces
        .iter()
        .flatten()
        .flat_map(|i| {
            i.ip4
                .iter()
                .map(move |&(a, l)| (i.fib_index, i.sw_if_index, a, l, i.mac))
        })
        .collect();
    for (t, sw, addr, len, _) in connected {
        if len > 32 {
            return Err(BuildError::BadRoute {
                prefix: addr,
                len,
                reason: "prefix length > 32".into(),
            });
        }
        if len < 31 {
            let net = u32::from(addr) & prefix_mask(len);
            let lb = b.add_lb(vec![Dpo::Glean { sw_if_index: sw }]);
            b.insert(t, Ipv4Addr::from(net), len, lb)?;
            for host in [net, net | !prefix_mask(len)] {
                let lb = b.add_lb(vec![Dpo::Drop]);
                b.insert(t, Ipv4Addr::from(host), 32, lb)?;
            }
        }
        let lb = b.add_lb(vec![Dpo::Receive {
            sw_if_index: sw,
            addr,
        }]);
        b.insert(t, addr, 32, lb)?;
    }

    // Explicit routes: attached ones first, so recursive ones can resolve through them.
    let mut recursive = Vec::new();
    for r in &cfg.routes {
        if r.len > 32 {
            return Err(BuildError::BadRoute {
                prefix: r.prefix,
                len: r.len,
                reason: "prefix length > 32".into(),
            });
        }
        if r.paths.iter().any(|p| matches!(p, Path::Recursive { .. })) {
            recursive.push(r);
            continue;
        }
        let mut dpos = Vec::new();
        for p in &r.paths {
            dpos.push(match *p {
                Path::Attached {
                    next_hop,
                    sw_if_index,
                } => {
                    let a =
                        b.adjacency(sw_if_index, next_hop)
                            .ok_or_else(|| BuildError::BadRoute {
                                prefix: r.prefix,
                                len: r.len,
                                reason: format!("no interface with sw_if_index {sw_if_index}"),
                            })?;
                    Dpo::Adjacency(a)
                }
                Path::Drop => Dpo::Drop,
                Path::Reject => Dpo::Reject,
                Path::Receive { sw_if_index } => Dpo::Receive {
                    sw_if_index,
                    addr: r.prefix,
                },
                Path::Recursive { .. } => Dpo::Drop,
            });
        }
        let lb = b.add_lb(dpos);
        b.insert(r.table, r.prefix, r.len, lb)?;
    }
    for r in recursive {
        let mut dpos = Vec::new();
        for p in &r.paths {
            let Path::Recursive { next_hop } = *p else {
                return Err(BuildError::BadRoute {
                    prefix: r.prefix,
                    len: r.len,
                    reason: "recursive and non-recursive paths cannot be mixed".into(),
                });
            };
            let via = b
                .fib
                .tables
                .table(r.table)
                .map(|t| t.lookup(u32::from(next_hop)))
                .unwrap_or(drop_lb);
            // A next hop on a connected subnet resolves to an adjacency of its own, as VPP's
            // attached-host entries do.
            let dpo = match b
                .fib
                .load_balances
                .get(via as usize)
                .map(|lb| lb.buckets[0])
            {
                Some(Dpo::Glean { sw_if_index }) => {
                    let a = b.adjacency(sw_if_index, next_hop).unwrap_or(0);
                    let lb = b.add_lb(vec![Dpo::Adjacency(a)]);
                    b.insert(r.table, next_hop, 32, lb)?;
                    Dpo::LoadBalance(lb)
                }
                _ => Dpo::LoadBalance(via),
            };
            dpos.push(dpo);
        }
        let lb = b.add_lb(dpos);
        b.insert(r.table, r.prefix, r.len, lb)?;
    }

    Ok(L3Config {
        interfaces: b.interfaces,
        fib: b.fib,
        static_neighbours: b.statics,
        seeded_neighbours: cfg
            .seeded_neighbours
            .iter()
            .map(|n| ((n.sw_if_index, n.ip), n.mac))
            .collect(),
        epoch,
    })
}
