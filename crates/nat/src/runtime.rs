//! How NAT44 plugs into a worker: tables compiled into the snapshot, per-worker state (sessions,
//! affinity, random numbers), and the runtime trait its nodes need.

use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use vecnet_nodes::{L3Config, L3Runtime};

use crate::config::{Backend, BackendSet, NatConfig, Proto, StaticMapping};
use crate::session::{FlowKey, SessionTable};

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One origin's backends with cumulative weights for the draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Backends {
        cumulative: Vec<u32>,
        backends: Vec<Backend>,
    },
    Drop,
    Reject,
}

impl Choice {
    fn from_set(set: &BackendSet) -> Self {
        match set {
            BackendSet::Drop => Choice::Drop,
            BackendSet::Reject => Choice::Reject,
            BackendSet::Backends(b) if b.is_empty() => Choice::Reject,
            BackendSet::Backends(b) => {
                let mut acc = 0u32;
                let cumulative = b
                    .iter()
                    .map(|x| {
                        acc = acc.saturating_add(x.weight.max(1));
                        acc
                    })
                    .collect();
                Choice::Backends {
                    cumulative,
                    backends: b.clone(),
                }
            }
        }
    }

    /// The backend for a draw `r` in `1..=total` (binary search on cumulative weights).
    pub fn pick(&self, r: u32) -> Option<Backend> {
        let Choice::Backends {
            cumulative,
            backends,
        } = self
        else {
            return None;
        };
        let total = *cumulative.last()?;
        let r = 1 + r % total;
        let i = cumulative.partition_point(|&c| c < r);
        backends.get(i).copied()
    }

    pub fn contains(&self, ip: u32, port: u16) -> bool {
        match self {
            Choice::Backends { backends, .. } => backends
                .iter()
                .any(|b| u32::from(b.ip) == ip && b.port == port),
            _ => false,
        }
    }
}

/// A mapping ready for lookups.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    pub m: StaticMapping,
    pub internal: Choice,
    pub external: Choice,
}

/// The NAT roles of one interface (SYSTEM.md 6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatInterfaceRole {
    pub sw_if_index: u32,
    pub inside: bool,
    pub outside: bool,
    pub output: bool,
}

/// NAT44 tables compiled for lookup, part of the immutable snapshot.
#[derive(Debug, Clone)]
pub struct NatTables {
    /// The configuration without its mappings (they live compiled in `mappings`; a second
    /// copy would cost a clone of every mapping per snapshot).
    pub config: NatConfig,
    /// Interface roles, for `show nat44 interfaces` (the roles themselves act through the
    /// interfaces' feature arcs).
    pub roles: Vec<NatInterfaceRole>,
    pub mappings: Vec<CompiledMapping>,
    by_external: HashMap<(u32, u16, u8), u32, FixedState>,
    identity_addr: HashMap<u32, u32, FixedState>,
    identity_port: HashMap<(u32, u16, u8), u32, FixedState>,
    internal: Vec<(u32, u32)>,
    pool: Vec<u32>,
    pub twice_pool: Vec<u32>,
    host: Vec<u32>,
    /// Distinguishes one build from the next (workers purge UDP sessions on change).
    pub generation: u64,
}

impl Default for NatTables {
    fn default() -> Self {
        Self::build(&NatConfig::default())
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl NatTables {
    pub fn build(config: &NatConfig) -> Self {
        let h = || FixedState::with_seed(0x5eed);
        let mut by_external = HashMap::with_hasher(h());
        let mut mappings = Vec::with_capacity(config.mappings.len());
        for m in &config.mappings {
            let key = (
                u32::from(m.external_ip),
                m.external_port,
                m.proto.ip_proto(),
            );
            // The first mapping of a key wins; the renderer reports duplicates.
            if by_external.contains_key(&key) {
                continue;
            }
            by_external.insert(key, mappings.len() as u32);
            mappings.push(CompiledMapping {
                m: m.clone(),
                internal: Choice::from_set(&m.internal),
                external: Choice::from_set(&m.external),
            });
        }
        let mut identity_addr = HashMap::with_hasher(h());
        let mut identity_port = HashMap::with_hasher(h());
        for (i, id) in config.identity.iter().enumerate() {
            match id.port {
                None => {
                    identity_addr.insert(u32::from(id.ip), i as u32);
                }
                Some((p, port)) => {
                    identity_port.insert((u32::from(id.ip), port, p.ip_proto()), i as u32);
                }
            }
        }
        Self {
            config: NatConfig {
                mappings: Vec::new(),
                identity: config.identity.clone(),
                pool: config.pool.clone(),
                twice_nat_pool: config.twice_nat_pool.clone(),
                internal_prefixes: config.internal_prefixes.clone(),
                host_addresses: config.host_addresses.clone(),
                timeouts: config.timeouts,
                max_sessions: config.max_sessions,
                reserved_for_control: config.reserved_for_control,
                forwarding: config.forwarding,
            },
            roles: Vec::new(),
            mappings,
            by_external,
            identity_addr,
            identity_port,
            internal: config
                .internal_prefixes
                .iter()
                .map(|&(a, l)| (u32::from(a) & mask(l), mask(l)))
                .collect(),
            pool: config.pool.iter().map(|&a| u32::from(a)).collect(),
            twice_pool: config
                .twice_nat_pool
                .iter()
                .map(|&a| u32::from(a))
                .collect(),
            host: config
                .host_addresses
                .iter()
                .map(|&a| u32::from(a))
                .collect(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The static mapping whose external side is `dst:dport/proto`.
    #[inline]
    pub fn mapping_for(&self, dst: u32, dport: u16, proto: u8) -> Option<u32> {
        if self.mappings.is_empty() {
            return None;
        }
        self.by_external.get(&(dst, dport, proto)).copied()
    }

    /// The mapping a load-balanced session (`outer` translated to `inner`) belongs to, if it
    /// still lists the session's backend for either origin.
    pub fn mapping_serving(&self, outer: &FlowKey, inner: &FlowKey) -> Option<u32> {
        let m = self.mapping_for(outer.dst, outer.dport, outer.proto)?;
        let cm = self.mappings.get(m as usize)?;
        (cm.internal.contains(inner.dst, inner.dport)
            || cm.external.contains(inner.dst, inner.dport))
        .then_some(m)
    }

    /// The identity mapping covering `dst[:dport/proto]`.
    #[inline]
    pub fn identity_for(&self, dst: u32, dport: u16, proto: u8) -> Option<u32> {
        self.identity_port
            .get(&(dst, dport, proto))
            .or_else(|| self.identity_addr.get(&dst))
            .copied()
    }

    /// Main-pool address (node IP): replies to dynamic SNAT arrive there.
    #[inline]
    pub fn is_pool_address(&self, ip: u32) -> bool {
        self.pool.contains(&ip)
    }

    /// One of the host stack's own addresses (a handful: a scan is cheapest).
    #[inline]
    pub fn is_host_address(&self, ip: u32) -> bool {
        self.host.contains(&ip)
    }

    /// Internal origin: pods, this node's host stack (SYSTEM.md 6.2).
    #[inline]
    pub fn is_internal(&self, src: u32) -> bool {
        self.internal.iter().any(|&(net, m)| src & m == net)
    }

    /// The classifier of `in`+`out` interfaces (SYSTEM.md 5.2): `nat44-out2in` for the main pool
    /// and the external side of non-identity static mappings, `nat44-in2out` otherwise.
    #[inline]
    pub fn wants_out2in(&self, dst: u32, dport: u16, proto: u8) -> bool {
        self.is_pool_address(dst) || self.mapping_for(dst, dport, proto).is_some()
    }
}

/// Counters of one worker's NAT (`show nat44 …`, metrics, error counters live in the graph).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatCounters {
    pub key_collisions: u64,
    pub affinity_hits: u64,
    pub udp_purged: u64,
}

/// An affinity record: client → backend for one service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affinity {
    pub backend: Backend,
    pub expires_ns: u64,
}

/// Per-worker NAT44 state.
pub struct NatState {
    pub sessions: SessionTable,
    /// (client IP, affinity group) → backend.
    pub affinity: HashMap<(u32, u32), Affinity, FixedState>,
    affinity_cap: usize,
    rng: u64,
    generation: u64,
    seed: u64,
    pub counters: NatCounters,
}

impl std::fmt::Debug for NatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatState")
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl Default for NatState {
    fn default() -> Self {
        Self::new(&NatConfig::default(), 0)
    }
}

impl NatState {
    pub fn new(config: &NatConfig, seed: u64) -> Self {
        let cap = (config.max_sessions as usize / 4).max(64);
        Self {
            sessions: SessionTable::new(
                config.max_sessions,
                config.reserved_for_control,
                seed ^ 0x9e37_79b9_7f4a_7c15,
            ),
            affinity: HashMap::with_capacity_and_hasher(cap, FixedState::with_seed(seed ^ 0xaff1)),
            affinity_cap: cap,
            rng: seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1,
            generation: 0,
            seed,
            counters: NatCounters::default(),
        }
    }

    /// Once per main loop: follow a new configuration (purge UDP sessions towards backends that
    /// are no longer usable, SYSTEM.md 6.8) and expire a bounded number of sessions.
    pub fn sync(&mut self, tables: &NatTables, now_ns: u64) {
        if tables.generation != self.generation {
            let first = self.generation == 0;
            self.generation = tables.generation;
            if tables.config.max_sessions != self.sessions.max() && self.sessions.is_empty() {
                *self = Self::new(&tables.config, self.seed);
                self.generation = tables.generation;
            }
            if !first {
                self.purge_unusable_udp(tables);
            }
        }
        self.sessions
            .expire_some(now_ns, &tables.config.timeouts, 32);
    }

    fn purge_unusable_udp(&mut self, tables: &NatTables) {
        let n = self.sessions.purge(|s| {
            s.outer.proto == 17
                && s.kind == crate::session::SessionKind::LoadBalanced
                && tables.mapping_serving(&s.outer, &s.inner).is_none()
        });
        self.counters.udp_purged += n as u64;
        self.affinity.retain(|&(_, group), a| {
            tables.mappings.iter().any(|cm| {
                cm.m.affinity_group == group
                    && (cm
                        .internal
                        .contains(u32::from(a.backend.ip), a.backend.port)
                        || cm
                            .external
                            .contains(u32::from(a.backend.ip), a.backend.port))
            })
        });
    }

    /// xorshift64*: per-worker, seeded, so `--seed` makes runs deterministic.
    #[inline]
    pub fn random(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// The backend for a new session: the client's affinity record if it still points into the
    /// set, else a weighted draw (recorded when the mapping has affinity).
    pub fn choose(
        &mut self,
        cm: &CompiledMapping,
        choice: &Choice,
        client: u32,
        now_ns: u64,
    ) -> Option<Backend> {
        let timeout = cm.m.affinity_timeout;
        if timeout > 0 {
            let key = (client, cm.m.affinity_group);
            if let Some(a) = self.affinity.get(&key).copied() {
                if a.expires_ns > now_ns && choice.contains(u32::from(a.backend.ip), a.backend.port)
                {
                    self.counters.affinity_hits += 1;
                    self.affinity.insert(
                        key,
                        Affinity {
                            backend: a.backend,
                            expires_ns: now_ns + timeout as u64 * 1_000_000_000,
                        },
                    );
                    return Some(a.backend);
                }
            }
            let r = self.random();
            let b = choice.pick(r)?;
            // A full record table means "no affinity" for new clients, never a drop.
            if self.affinity.len() < self.affinity_cap || self.affinity.contains_key(&key) {
                self.affinity.insert(
                    key,
                    Affinity {
                        backend: b,
                        expires_ns: now_ns + timeout as u64 * 1_000_000_000,
                    },
                );
            }
            return Some(b);
        }
        let r = self.random();
        choice.pick(r)
    }
}

/// The worker runtime as seen by the NAT nodes.
pub trait NatRuntime: L3Runtime {
    fn nat(&mut self) -> (&L3Config, &NatTables, &mut NatState);
}

/// Protocol of a parsed packet as a mapping protocol.
pub fn proto_of(p: u8) -> Option<Proto> {
    Proto::from_ip_proto(p)
}
