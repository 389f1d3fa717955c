//! What L2/L3 nodes need from the worker: the configuration snapshot, per-worker mutable state
//! (learned neighbours, rewrite cache, rate limiters) and the device I/O.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use vecnet_graph::BufferPool;
use vecnet_wire::MacAddr;

use crate::config::L3Config;

/// Packet I/O of a worker: every TAP / AF_PACKET queue it polls.
pub trait DeviceIo: Send {
    /// Receives up to `out.len()` frames into fresh buffers; sets `sw_if_index[RX]`, `vnet_hdr`
    /// and `rx_queue` in their metadata. Returns the count.
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut [u32]) -> usize;
    /// Sends the buffers (Ethernet frames) on `sw_if_index` and frees them.
    fn tx_burst(&mut self, sw_if_index: u32, pool: &mut BufferPool, bufs: &[u32]);
    /// For tests and `simulate`, which reach their concrete device through this.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// A dynamic neighbour learned from ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: MacAddr,
    /// When it was learned or last refreshed (ns since start).
    pub updated_ns: u64,
}

/// A 14-byte Ethernet rewrite, or none while the neighbour is unresolved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite {
    pub bytes: [u8; 14],
    pub valid: bool,
}

/// Bounded table of "last ARP request sent" times, to send at most one per address per second.
#[derive(Debug, Clone)]
pub struct ArpThrottle {
    slots: [(u32, u64); 256],
}

impl Default for ArpThrottle {
    fn default() -> Self {
        Self {
            slots: [(0, 0); 256],
        }
    }
}

impl ArpThrottle {
    /// True if a request for `ip` may be sent now (and records it).
    pub fn allow(&mut self, ip: Ipv4Addr, now_ns: u64) -> bool {
        let key = u32::from(ip);
        let h = (key.wrapping_mul(0x9e37_79b9) >> 24) as usize;
        let slot = &mut self.slots[h];
        if slot.0 == key && slot.1 != 0 && now_ns.saturating_sub(slot.1) < 1_000_000_000 {
            return false;
        }
        *slot = (key, now_ns.max(1));
        true
    }
}

/// Token bucket for ICMP errors (per worker).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    pub per_second: u32,
    tokens: f64,
    last_ns: u64,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            tokens: per_second as f64,
            last_ns: 0,
        }
    }

    pub fn allow(&mut self, now_ns: u64) -> bool {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = now_ns;
        let cap = self.per_second as f64;
        self.tokens = (self.tokens + dt * cap).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-interface packet counters (`show interface`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Per-worker mutable L2/L3 state.
pub struct L3State {
    /// By `sw_if_index`.
    pub if_counters: Vec<IfCounters>,
    /// Packets and bytes through each load-balance (`show ip fib` `to:[p:b]`).
    pub lb_counters: Vec<(u64, u64)>,
    /// Rewrite cache by adjacency index, rebuilt when the configuration epoch changes.
    pub rewrites: Vec<Rewrite>,
    /// Dynamic neighbours: (sw_if_index, ip) → MAC.
    pub neighbours: HashMap<(u32, Ipv4Addr), Neighbour>,
    pub device: Box<dyn DeviceIo>,
    pub arp_throttle: ArpThrottle,
    pub icmp_limiter: RateLimiter,
    epoch: u64,
}

impl L3State {
    pub fn new(device: Box<dyn DeviceIo>) -> Self {
        Self {
            if_counters: Vec::new(),
            lb_counters: Vec::new(),
            rewrites: Vec::new(),
            neighbours: HashMap::new(),
            device,
            arp_throttle: ArpThrottle::default(),
            icmp_limiter: RateLimiter::new(1000),
            epoch: u64::MAX,
        }
    }

    /// Rebuilds the rewrite cache if `cfg` is a new configuration (once per main loop, not per
    /// packet).
    pub fn sync(&mut self, cfg: &L3Config, now_ns: u64) {
        if self.epoch == cfg.epoch {
            return;
        }
        self.epoch = cfg.epoch;
        // Counters survive reconfiguration; only grow them.
        if self.if_counters.len() < cfg.interfaces.len() {
            self.if_counters
                .resize(cfg.interfaces.len(), IfCounters::default());
        }
        if self.lb_counters.len() < cfg.fib.load_balances.len() {
            self.lb_counters.resize(cfg.fib.load_balances.len(), (0, 0));
        }
        for (&k, &mac) in &cfg.seeded_neighbours {
            self.neighbours.entry(k).or_insert(Neighbour {
                mac,
                updated_ns: now_ns,
            });
        }
        self.rewrites.clear();
        self.rewrites
            .resize(cfg.fib.adjacencies.len(), Rewrite::default());
        for (i, adj) in cfg.fib.adjacencies.iter().enumerate() {
            let mac = adj.static_mac.or_else(|| {
                self.neighbours
                    .get(&(adj.sw_if_index, adj.next_hop))
                    .map(|n| n.mac)
            });
            if let Some(mac) = mac {
                self.rewrites[i] = Rewrite {
                    bytes: adj.rewrite_with(mac),
                    valid: true,
                };
            }
        }
    }

    /// Records a learned neighbour and completes the adjacencies that wait for it.
    pub fn learn(
        &mut self,
        cfg: &L3Config,
        sw_if_index: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
        now_ns: u64,
    ) {
        self.neighbours.insert(
            (sw_if_index, ip),
            Neighbour {
                mac,
                updated_ns: now_ns,
            },
        );
        if let Some(&a) = cfg.fib.adj_by_neighbour.get(&(sw_if_index, ip)) {
            if let (Some(adj), Some(rw)) = (
                cfg.fib.adjacencies.get(a as usize),
                self.rewrites.get_mut(a as usize),
            ) {
                if adj.static_mac.is_none() {
                    *rw = Rewrite {
                        bytes: adj.rewrite_with(mac),
                        valid: true,
                    };
                }
            }
        }
    }
}

/// The worker runtime as seen by L2/L3 nodes.
pub trait L3Runtime {
    /// The current configuration and this worker's mutable L3 state.
    fn l3(&mut self) -> (&L3Config, &mut L3State);
}
