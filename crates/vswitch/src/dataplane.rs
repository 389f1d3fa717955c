//! One data-plane worker: the graph with every node registered, the worker runtime (snapshot +
//! per-worker state + device I/O), the buffer pool and the trace store.

use std::sync::Arc;
use std::time::Instant;

use vecnet_graph::{BufferPool, Clock, FormatContext, Graph, TraceStore};
use vecnet_nodes::arp_input::ArpInput;
use vecnet_nodes::ethernet_input::EthernetInput;
use vecnet_nodes::icmp_error::Ip4IcmpError;
use vecnet_nodes::interface_output::InterfaceOutput;
use vecnet_nodes::ip4_arp::{ArpMode, Ip4Arp};
use vecnet_nodes::ip4_icmp_echo_request::Ip4IcmpEchoRequest;
use vecnet_nodes::ip4_icmp_input::Ip4IcmpInput;
use vecnet_nodes::ip4_input::Ip4Input;
use vecnet_nodes::ip4_load_balance::Ip4LoadBalance;
use vecnet_nodes::ip4_local::Ip4Local;
use vecnet_nodes::ip4_lookup::Ip4Lookup;
use vecnet_nodes::ip4_rewrite::Ip4Rewrite;
use vecnet_nodes::virtio_input::VirtioInput;
use vecnet_nodes::{DeviceIo, L3Config, L3Runtime, L3State};

use vecnet_acl::{AclConfig, AclRuntime, AclState, AclTables};
use vecnet_nat::{NatConfig, NatRuntime, NatState, NatTables};

use crate::build::{build_l3, BuildError, NodeResolver};
use crate::config::DataplaneConfig;

/// Everything a worker reads; replaced as a whole, never modified in place.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub l3: L3Config,
    pub nat: NatTables,
    pub acl: AclTables,
}

impl FormatContext for Snapshot {
    fn interface_name(&self, sw_if_index: u32) -> Option<&str> {
        self.l3.interface(sw_if_index).map(|i| i.name.as_str())
    }
}

/// The worker runtime `R` of the graph.
pub struct Worker {
    pub snap: Arc<Snapshot>,
    pub l3: L3State,
    pub nat: NatState,
    pub acl: AclState,
}

impl L3Runtime for Worker {
    #[inline]
    fn l3(&mut self) -> (&L3Config, &mut L3State) {
        (&self.snap.l3, &mut self.l3)
    }
}

impl NatRuntime for Worker {
    #[inline]
    fn nat(&mut self) -> (&L3Config, &NatTables, &mut NatState) {
        (&self.snap.l3, &self.snap.nat, &mut self.nat)
    }
}

impl AclRuntime for Worker {
    #[inline]
    fn acl(&mut self) -> (&L3Config, &AclTables, &mut AclState) {
        (&self.snap.l3, &self.snap.acl, &mut self.acl)
    }
}

#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    pub buffers: u32,
    pub trace_capacity: usize,
    pub clock: Clock,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        Self {
            buffers: 16384,
            trace_capacity: 50_000,
            clock: Clock::real(),
        }
    }
}

/// Graph indices of the fixed nodes.
#[derive(Debug, Clone, Copy)]
pub struct FixedNodes {
    pub virtio_input: u32,
    pub ethernet_input: u32,
    pub arp_input: u32,
    pub ip4_input: u32,
    pub ip4_lookup: u32,
    pub ip4_rewrite: u32,
    pub ip4_arp: u32,
    pub ip4_glean: u32,
}

pub struct Dataplane {
    pub graph: Graph<Worker>,
    pub worker: Worker,
    pub pool: BufferPool,
    pub trace: TraceStore,
    /// Seed of the configuration applied last (a new seed restarts the workers' random
    /// choices); the configuration itself lives compiled in the snapshot.
    seed: u64,
    pub nodes: FixedNodes,
    epoch: u64,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("graph: {0}")]
    Graph(#[from] vecnet_graph::GraphError),
}

impl Dataplane {
    pub fn new(opts: DataplaneOptions, device: Box<dyn DeviceIo>) -> Result<Self, DataplaneError> {
        let mut g: Graph<Worker> = Graph::new(opts.clock);
        let virtio_input = g.add_node(Box::new(VirtioInput))?;
        let ethernet_input = g.add_node(Box::new(EthernetInput))?;
        let arp_input = g.add_node(Box::new(ArpInput))?;
        let ip4_input = g.add_node(Box::new(Ip4Input))?;
        // Feature nodes sit between their arc's ends in index order, so that one dispatch pass
        // carries a packet through the whole arc.
        let [acl_in, acl_out] = vecnet_acl::acl_plugin_fa::nodes::<Worker>();
        g.add_node(acl_in)?;
        for n in vecnet_nat::nodes::input_nodes::<Worker>() {
            g.add_node(n)?;
        }
        let ip4_lookup = g.add_node(Box::new(Ip4Lookup))?;
        g.add_node(Box::new(Ip4LoadBalance))?;
        let ip4_rewrite = g.add_node(Box::new(Ip4Rewrite))?;
        g.add_node(acl_out)?;
        for n in vecnet_nat::nodes::output_nodes::<Worker>() {
            g.add_node(n)?;
        }
        let ip4_arp = g.add_node(Box::new(Ip4Arp(ArpMode::Incomplete)))?;
        let ip4_glean = g.add_node(Box::new(Ip4Arp(ArpMode::Glean)))?;
        g.add_node(Box::new(Ip4Local { udp_lookup: false }))?;
        g.add_node(Box::new(Ip4IcmpInput))?;
        g.add_node(Box::new(Ip4IcmpEchoRequest))?;
        g.add_node(Box::new(Ip4IcmpError))?;
        let nodes = FixedNodes {
            virtio_input,
            ethernet_input,
            arp_input,
            ip4_input,
            ip4_lookup,
            ip4_rewrite,
            ip4_arp,
            ip4_glean,
        };
        let mut dp = Self {
            graph: g,
            worker: Worker {
                snap: Arc::new(Snapshot {
                    l3: L3Config {
                        interfaces: Vec::new(),
                        fib: empty_fib(),
                        static_neighbours: Default::default(),
                        seeded_neighbours: Default::default(),
                        epoch: 0,
                    },
                    nat: NatTables::default(),
                    acl: AclTables::default(),
                }),
                l3: L3State::new(device),
                nat: NatState::new(&NatConfig::default(), 0),
                acl: AclState::new(&AclConfig::default()),
            },
            pool: BufferPool::new(opts.buffers),
            trace: TraceStore::new(opts.trace_capacity),
            seed: 0,
            nodes,
            epoch: 0,
            started: Instant::now(),
        };
        dp.apply(&DataplaneConfig::default())?;
        Ok(dp)
    }

    /// Compiles `cfg` and makes it the live snapshot (atomically for the graph: between vectors).
    pub fn apply(&mut self, cfg: &DataplaneConfig) -> Result<(), DataplaneError> {
        self.epoch += 1;
        let mut nat = NatTables::build(&cfg.nat);
        nat.roles = cfg
            .interfaces
            .iter()
            .map(|i| vecnet_nat::runtime::NatInterfaceRole {
                sw_if_index: i.sw_if_index,
                inside: i.nat_inside,
                outside: i.nat_outside,
                output: i.nat_output,
            })
            .collect();
        let acl = AclTables::build(&cfg.acl);
        let with_features = with_features(cfg, &acl);
        let l3 = {
            let mut r = Resolver {
                dp_graph: &mut self.graph,
                nodes: self.nodes,
            };
            build_l3(&with_features, &mut r, self.epoch)?
        };
        if cfg.seed != self.seed || self.epoch == 1 {
            self.worker.nat = NatState::new(&cfg.nat, cfg.seed);
        }
        let output_nat = (
            self.graph.node_index("nat44-in2out-output"),
            self.graph.node_index("nat44-in2out-output-slowpath"),
        );
        for iface in l3.interfaces.iter().flatten() {
            if let Some((end, features)) = iface.ip4_unicast_arc.split_last() {
                self.graph
                    .connect_feature_arc(self.nodes.ip4_input, features, *end)?;
            }
            if let Some((end, features)) = iface.ip4_output_arc.split_last() {
                self.graph
                    .connect_feature_arc(self.nodes.ip4_rewrite, features, *end)?;
            }
            // The output NAT's slow path is off the arc but carries on along it where the fast
            // path would have (the packets that create dynamic SNAT sessions).
            if let (Some(fast), Some(slow)) = output_nat {
                let arc = &iface.ip4_output_arc;
                if let Some(k) = arc.iter().position(|&n| n == fast) {
                    for &next in &arc[k + 1..] {
                        self.graph.add_arc(slow, next)?;
                    }
                }
            }
        }
        self.worker.snap = Arc::new(Snapshot { l3, nat, acl });
        self.seed = cfg.seed;
        self.sync_worker();
        Ok(())
    }

    /// Lets per-worker state follow the snapshot (once per main loop, never per packet).
    pub(crate) fn sync_worker(&mut self) {
        let now = self.graph.clock.now_ns();
        let snap = Arc::clone(&self.worker.snap);
        self.worker.l3.sync(&snap.l3, now);
        self.worker.nat.sync(&snap.nat, now);
        self.worker.acl.sync(&snap.acl, now);
    }

    /// One main-loop iteration; returns the packets received.
    pub fn run_once(&mut self) -> usize {
        self.sync_worker();
        self.graph
            .run_once(&mut self.worker, &mut self.pool, &mut self.trace)
    }

    /// Configurations applied so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.worker.snap
    }

    pub fn device_mut(&mut self) -> &mut dyn DeviceIo {
        self.worker.l3.device.as_mut()
    }

    /// Seconds since the data plane was created.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// The interface list with the feature nodes that ACL bindings and NAT roles enable, in the
/// era-A order: ingress ACL → NAT (SYSTEM.md D1); egress ACL → output NAT.
fn with_features(cfg: &DataplaneConfig, acl: &AclTables) -> DataplaneConfig {
    let mut out = cfg.clone();
    for i in &mut out.interfaces {
        if acl.has_input(i.sw_if_index) {
            i.unicast_features.push("acl-plugin-in-ip4-fa".into());
        }
        match (i.nat_inside, i.nat_outside) {
            (true, true) => i.unicast_features.push("nat44-classify".into()),
            (false, true) => i.unicast_features.push("nat44-out2in".into()),
            (true, false) => i.unicast_features.push("nat44-in2out".into()),
            (false, false) => {}
        }
        if acl.has_output(i.sw_if_index) {
            i.output_features.push("acl-plugin-out-ip4-fa".into());
        }
        if i.nat_output {
            i.output_features.push("nat44-in2out-output".into());
        }
    }
    out
}

struct Resolver<'a> {
    dp_graph: &'a mut Graph<Worker>,
    nodes: FixedNodes,
}

impl NodeResolver for Resolver<'_> {
    fn ip4_lookup(&self) -> u32 {
        self.nodes.ip4_lookup
    }

    fn output_node(&mut self, ifname: &str) -> u32 {
        let name = format!("{ifname}-output");
        let idx = match self.dp_graph.node_index(&name) {
            Some(i) => i,
            None => match self
                .dp_graph
                .add_node(Box::new(InterfaceOutput::new(ifname)))
            {
                Ok(i) => i,
                Err(_) => self.dp_graph.drop_node(),
            },
        };
        // Nodes that send straight to an interface, bypassing the output feature arc.
        for from in [
            self.nodes.arp_input,
            self.nodes.ip4_arp,
            self.nodes.ip4_glean,
        ] {
            let _ = self.dp_graph.add_arc(from, idx);
        }
        idx
    }

    fn feature(&self, name: &str) -> Option<u32> {
        self.dp_graph.node_index(name)
    }
}

fn empty_fib() -> vecnet_nodes::Fib {
    vecnet_nodes::Fib {
        tables: vecnet_fib::Ip4Fib::new(0),
        load_balances: vec![vecnet_nodes::LoadBalance::single(vecnet_nodes::Dpo::Drop)],
        adjacencies: Vec::new(),
        adj_by_neighbour: Default::default(),
        drop_lb: 0,
    }
}
