//! `vecnetd run`: the node daemon. One process, three parts (SYSTEM.md 1.1):
//! * the data-plane thread owns the graph (`Dataplane` on `TapIo`) and takes commands between
//!   vectors (new snapshot, TAP added or removed, CLI); it sleeps in epoll when idle;
//! * the agent (this thread) owns the Kubernetes state, IPAM and pod attachments, renders the
//!   desired data-plane configuration and performs the Linux side effects through netlink;
//! * the control socket (one thread per connection) relays `vecnetctl` and `vecnet-cni`
//!   requests to the agent;
//! * with `source.kind: etcd`, the etcd source thread (`vecnet_agent::etcd::source`) feeds the
//!   agent a snapshot and then watch events; the node ID is allocated in etcd first when
//!   `ipam.nodeID` is 0 (docs/etcd.md).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use vecnet_agent::cni::{
    code, CniError, CniInterface, CniIp, CniReply, CniRequest, CniResult, CniRoute, CNI_VERSION,
};
use vecnet_agent::control;
use vecnet_agent::etcd::source::{SourceConfig, SourceEvent};
use vecnet_agent::etcd::{self, IdClaim, Layout, NodeInfo};
use vecnet_agent::ipam::{pod_macs, IpamError, NodeIpam, PodAllocator, FIXED_POD_MAC};
use vecnet_agent::model::ClusterState;
use vecnet_agent::render::Warning;
use vecnet_graph::Clock;
use vecnet_io::netlink;
use vecnet_io::netns;
use vecnet_io::tap::{Offload, Tap, TapConfig};
use vecnet_io::tapio::{Notifier, TapIo};
use vecnet_vswitch::{
    Dataplane, DataplaneConfig, DataplaneOptions, DataplaneStats, RestoreReport, SavedSessions,
};
use vecnet_wire::MacAddr;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pods::{self, Attachment, PlugParams, Reattached};
use crate::simulate::{InterfaceSpec, KindSpec, NodeSpec, Scenario};

#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (YAML or JSON); every key has a default.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `sw_if_index` of `tap0`; 1 is kept for the uplink, 3 for `loop0`, 4 for the first tunnel, so
/// pod TAP `tapK` is `4 + K` (the seed's `tap2` is 6).
pub const TAP0_SW_IF_INDEX: u32 = 2;

enum DpCmd {
    /// A new configuration, and when the changes it carries were seen (programming latency).
    Apply(Arc<DataplaneConfig>, Vec<Instant>),
    Stats(mpsc::Sender<DataplaneStats>),
    AddTap(u32, Tap),
    RemoveTap(u32),
    /// Deletes every NAT session with this address as client or backend (a pod went away).
    PurgeAddress(Ipv4Addr),
    Cli(String, mpsc::Sender<Result<String, String>>),
    /// The NAT and ACL sessions, to be kept across a restart.
    SaveSessions(mpsc::Sender<SavedSessions>),
    /// Sessions of the last run (after the first configuration, before the TAPs).
    RestoreSessions(Box<SavedSessions>, mpsc::Sender<RestoreReport>),
    Stop,
}

/// The handle the agent holds on the data-plane thread.
struct DataplaneHandle {
    tx: mpsc::Sender<DpCmd>,
    notifier: Notifier,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DataplaneHandle {
    fn send(&self, c: DpCmd) {
        if self.tx.send(c).is_ok() {
            self.notifier.notify();
        }
    }

    fn cli(&self, line: &str) -> Result<String, String> {
        let (tx, rx) = mpsc::channel();
        self.send(DpCmd::Cli(line.to_string(), tx));
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err("data plane did not answer".into()))
    }
}

fn start_dataplane(cfg: &Config, metrics: Arc<Metrics>) -> Result<DataplaneHandle> {
    let io = TapIo::new().context("TAP I/O")?;
    let waiter = io.waiter();
    let notifier = waiter.notifier();
    let opts = DataplaneOptions {
        buffers: cfg.dataplane.buffers,
        trace_capacity: cfg.dataplane.trace_capacity as usize,
        clock: Clock::real(),
    };
    let mut dp = Dataplane::new(opts, Box::new(io)).map_err(|e| anyhow!("data plane: {e}"))?;
    let (tx, rx) = mpsc::channel::<DpCmd>();
    let thread = std::thread::Builder::new()
        .name("vpp_main".into())
        .spawn(move || loop {
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    DpCmd::Apply(c, seen) => {
                        let t = Instant::now();
                        match dp.apply(&c) {
                            Ok(()) => {
                                metrics.apply_duration.observe(t.elapsed().as_secs_f64());
                                metrics.programmed(&seen);
                            }
                            Err(e) => {
                                tracing::error!("data plane rejected the configuration: {e}")
                            }
                        }
                    }
                    DpCmd::Stats(reply) => {
                        let _ = reply.send(dp.stats());
                    }
                    DpCmd::AddTap(sw, tap) => {
                        if let Some(io) = dp.device_mut().as_any_mut().downcast_mut::<TapIo>() {
                            if let Err(e) = io.add(sw, tap) {
                                tracing::error!("adding TAP {sw}: {e}");
                            }
                        }
                    }
                    DpCmd::RemoveTap(sw) => {
                        if let Some(io) = dp.device_mut().as_any_mut().downcast_mut::<TapIo>() {
                            // The pod is gone for good: without persistence, closing the fd
                            // removes the device.
                            if let Some(tap) = io.remove(sw) {
                                if let Err(e) = tap.set_persist(false) {
                                    tracing::warn!("TAP {sw}: {e}");
                                }
                            }
                        }
                    }
                    DpCmd::PurgeAddress(ip) => {
                        let a = u32::from(ip);
                        dp.worker.nat.sessions.purge(|s| {
                            [s.outer.src, s.outer.dst, s.inner.src, s.inner.dst].contains(&a)
                        });
                    }
                    DpCmd::Cli(line, reply) => {
                        let _ = reply.send(dp.exec(&line).map_err(|e| e.to_string()));
                    }
                    DpCmd::SaveSessions(reply) => {
                        let _ = reply.send(dp.save_sessions());
                    }
                    DpCmd::RestoreSessions(saved, reply) => {
                        let _ = reply.send(dp.restore_sessions(&saved));
                    }
                    DpCmd::Stop => return,
                }
            }
            if dp.run_once() == 0 {
                let _ = waiter.wait(Some(Duration::from_millis(50)));
            }
        })
        .context("spawning the data-plane thread")?;
    Ok(DataplaneHandle {
        tx,
        notifier,
        thread: Some(thread),
    })
}

struct Agent {
    cfg: Config,
    ipam: NodeIpam,
    host_netns: Option<PathBuf>,
    host_ips: Vec<Ipv4Addr>,
    alloc: PodAllocator,
    pods: BTreeMap<String, Attachment>,
    state: ClusterState,
    manifests: crate::reflect::ManifestDir,
    dp: DataplaneHandle,
    metrics: Arc<Metrics>,
    /// When each change not yet programmed was seen (programming latency).
    pending: Vec<Instant>,
    /// What the data plane runs: an unchanged render is not applied again, so a resync that
    /// finds nothing new costs the data plane nothing.
    applied: Option<Arc<DataplaneConfig>>,
    /// What the renderers keep between renders (per-Service results).
    render_cache: vecnet_agent::render::RenderCache,
    /// Warnings of the last render.
    warnings: BTreeSet<Warning>,
    /// Warning events, newest last (`vecnetctl events`).
    events: VecDeque<EventRecord>,
    ready: bool,
    /// Every node known from etcd `nodeinfo` (this one included), by name.
    nodes: BTreeMap<String, NodeInfo>,
    /// etcd source state (`None` in manifests mode).
    etcd: Option<EtcdStatus>,
    /// TAPs opened at start (tap0, pods of the last run) that the data plane gets only once it
    /// runs the cluster's configuration, so that no packet of a flow established before a
    /// restart meets an empty data plane.
    pending_taps: Vec<(u32, Tap)>,
    /// The pending TAPs have been handed over.
    attached: bool,
    /// The source has delivered its state (always, for the manifests directory).
    synced: bool,
    started: Instant,
}

/// How long a start waits for the source's state before it attaches the TAPs anyway (etcd or
/// the API server down: the pods get the local configuration rather than nothing).
const SOURCE_WAIT: Duration = Duration::from_secs(10);

/// Most warning events kept for `vecnetctl events`.
const MAX_EVENTS: usize = 512;

/// A warning about an object that cannot be rendered (or a source value that cannot be read),
/// like a Kubernetes Event of type Warning.
#[derive(Debug, Clone)]
struct EventRecord {
    time: SystemTime,
    object: String,
    reason: String,
    message: String,
}

/// The allocator key of an address relearned from a Pod object (not attached through CNI by
/// this vecnetd run).
fn relearned_key(pod_key: &str) -> String {
    format!("k8s:{pod_key}")
}

/// Where the pod allocator's state is kept across restarts.
fn ipam_state_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("ipam-pods.json")
}

/// The allocator of an earlier run from `dataDir`, if it is there and fits this node's slice.
fn load_allocator(cfg: &Config, ipam: &NodeIpam) -> PodAllocator {
    let path = ipam_state_path(cfg);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PodAllocator::new(ipam),
        Err(e) => {
            tracing::warn!("ipam: cannot read {}: {e}; starting empty", path.display());
            return PodAllocator::new(ipam);
        }
    };
    let loaded = serde_json::from_str(&text)
        .map_err(|e| e.to_string())
        .and_then(|st| PodAllocator::from_state(ipam, st).map_err(|e| e.to_string()));
    match loaded {
        Ok(a) => {
            tracing::info!(
                allocations = a.len(),
                "ipam: allocations of the last run restored from {}",
                path.display()
            );
            a
        }
        Err(e) => {
            tracing::warn!("ipam: {} not used: {e}; starting empty", path.display());
            PodAllocator::new(ipam)
        }
    }
}

/// Takes `dataDir/vecnetd.lock` (flock, released when the process ends, however it ends). A
/// second vecnetd on the same `dataDir` would take over the first one's socket, fail to attach
/// its pods' TAPs (the first holds them) and then forget those pods and free their addresses.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir).with_context(|| format!("dataDir: creating {}", dir.display()))?;
    let path = dir.join("vecnetd.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("dataDir: opening {}", path.display()))?;
    if let Err(e) = rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        if e == rustix::io::Errno::WOULDBLOCK {
            bail!(
                "dataDir {} is in use by another vecnetd (pid {})",
                dir.display(),
                holder.trim()
            );
        }
        bail!("dataDir: locking {}: {e}", path.display());
    }
    let pid = std::process::id().to_string();
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(pid.as_bytes()))
        .with_context(|| format!("dataDir: writing {}", path.display()))?;
    Ok(f)
}

/// Where an orderly stop leaves the data plane's sessions for the next start.
fn sessions_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("sessions.bin")
}

/// What the agent knows about its etcd connection.
#[derive(Debug, Clone, Default)]
struct EtcdStatus {
    connected: bool,
    /// Revision of the last resync or change applied.
    revision: i64,
    resyncs: u64,
    last_error: Option<String>,
}

fn in_host<T: Send>(host: &Option<PathBuf>, f: impl FnOnce() -> T + Send) -> Result<T> {
    match host {
        None => Ok(f()),
        Some(p) => netns::run_in(p, f).map_err(|e| anyhow!("in host netns {}: {e}", p.display())),
    }
}

impl Agent {
    fn new(cfg: Config) -> Result<Self> {
        let ipam = cfg
            .ipam
            .for_node(cfg.ipam.node_id)
            .map_err(|e| anyhow!("ipam: {e}"))?;
        let host_netns = if cfg.interfaces.host.netns.is_empty() {
            None
        } else {
            Some(netns::path(&cfg.interfaces.host.netns))
        };
        if let Some(p) = &host_netns {
            if !p.exists() {
                bail!("interfaces.host.netns: {} does not exist", p.display());
            }
        }
        let metrics = Metrics::new();
        let dp = start_dataplane(&cfg, Arc::clone(&metrics))?;
        Ok(Self {
            alloc: load_allocator(&cfg, &ipam),
            ipam,
            host_netns,
            host_ips: Vec::new(),
            pods: BTreeMap::new(),
            state: ClusterState::default(),
            manifests: crate::reflect::ManifestDir::new(&cfg.source.manifests.dir),
            dp,
            metrics,
            pending: Vec::new(),
            applied: None,
            render_cache: Default::default(),
            warnings: BTreeSet::new(),
            events: VecDeque::new(),
            ready: false,
            nodes: BTreeMap::new(),
            etcd: (cfg.source.kind == "etcd").then(EtcdStatus::default),
            pending_taps: Vec::new(),
            attached: false,
            synced: false,
            started: Instant::now(),
            cfg,
        })
    }

    /// Creates `tap0` with its Linux side in the host namespace (SYSTEM.md 3.4).
    fn setup_host_link(&mut self) -> Result<()> {
        let h = &self.cfg.interfaces.host;
        let name = h.linux_name.clone();
        // Persistent, like the pods' TAPs: a restart of vecnetd keeps the host's link, its
        // addresses and routes, and attaches to it again.
        let cfg = TapConfig::new(&name)
            .offload(offload(&self.cfg))
            .persist(true);
        let tap = match &self.host_netns {
            None => Tap::open(&cfg),
            Some(p) => Tap::open_in(p, &cfg),
        }
        .map_err(|e| anyhow!("creating {name}: {e}"))?;
        let (ipam, mtu) = (self.ipam, h.mtu);
        let route_svc = self.cfg.services.route_service_cidr_to_vpp;
        let name2 = name.clone();
        let host_ips = in_host(&self.host_netns, move || -> Result<Vec<Ipv4Addr>> {
            netlink::set_mtu(&name2, mtu as u32)?;
            // v1 is IPv4-only: no neighbour discovery noise on the host link.
            let _ = netlink::set_ipv6_disabled(&name2, true);
            netlink::add_addr(&name2, ipam.host_linux_ip, ipam.host_subnet.len)?;
            netlink::set_up(&name2)?;
            netlink::add_route(
                ipam.pod_cidr.network(),
                ipam.pod_cidr.len,
                Some(ipam.host_vpp_ip),
                &name2,
                false,
            )?;
            if route_svc {
                netlink::add_route(
                    ipam.service_cidr.network(),
                    ipam.service_cidr.len,
                    Some(ipam.host_vpp_ip),
                    &name2,
                    false,
                )?;
            }
            let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name2}/rp_filter"), "2");
            Ok(netlink::addrs_v4()?
                .into_iter()
                .filter(|(dev, a, _)| *dev != name2 && !a.is_loopback())
                .map(|(_, a, _)| a)
                .collect())
        })??;
        self.host_ips = host_ips;
        for ip in &self.cfg.interfaces.host.extra_host_ips {
            if !self.host_ips.contains(ip) {
                self.host_ips.push(*ip);
            }
        }
        tracing::info!(link = %name, host_ips = ?self.host_ips, "host link up: tap0 {} / {} {}", ipam.host_vpp_ip, name, ipam.host_linux_ip);
        self.pending_taps.push((TAP0_SW_IF_INDEX, tap));
        Ok(())
    }

    fn plug_params(&self) -> PlugParams {
        PlugParams::new(&self.ipam, self.cfg.interfaces.pods.mtu, offload(&self.cfg))
    }

    /// Writes the attachments to `dataDir/pods.json`.
    fn save_pods(&self) {
        if let Err(e) = pods::save(&self.cfg.data_dir, &self.pods) {
            tracing::warn!("pods: {e:#}");
        }
    }

    /// Re-attaches the pods of the last run (their TAPs are persistent, see `pods`). A pod whose
    /// netns is gone is forgotten and its address released; one whose TAP cannot be attached is
    /// forgotten with an error that says why.
    fn restore_pods(&mut self) {
        let saved = match pods::load(&self.cfg.data_dir) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("pods of the last run not restored: {e:#}");
                return;
            }
        };
        if saved.is_empty() {
            return;
        }
        let params = self.plug_params();
        let mut changed = false;
        for (key, a) in saved {
            // The allocator is the authority on addresses: an attachment it does not back
            // (a lost ipam file) is taken into it, one that conflicts is dropped.
            let ip_ok = match self.alloc.get(&key) {
                Some(ip) => ip == a.ip,
                None => self.alloc.restore(&key, a.ip).is_ok(),
            };
            if !ip_ok || self.pods.values().any(|p| p.instance == a.instance) {
                tracing::error!(pod = %a.pod_key, ip = %a.ip, "pod of the last run not restored: its address or TAP number is taken");
                changed = true;
                continue;
            }
            match pods::reattach(&a, params) {
                Ok(Reattached::Attached(tap)) | Ok(Reattached::Replugged(tap)) => {
                    tracing::info!(pod = %a.pod_key, ip = %a.ip, tap = %format!("tap{}", a.instance), "pod of the last run re-attached");
                    self.pending_taps.push((a.sw_if_index(), tap));
                    self.pods.insert(key, a);
                }
                Ok(Reattached::NetnsGone) => {
                    tracing::info!(pod = %a.pod_key, netns = %a.netns, "pod of the last run is gone (no netns): address released");
                    self.alloc.release(&key);
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(pod = %a.pod_key, "pod of the last run not restored: {e:#}");
                    self.alloc.release(&key);
                    changed = true;
                }
            }
        }
        if changed {
            self.save_ipam();
            self.save_pods();
        }
    }

    /// Gives the data plane the sessions the last run saved when it stopped, then removes the
    /// file: sessions are saved only by an orderly stop, and a file must not outlive the flows
    /// it describes (a later crash would restore them again).
    fn restore_sessions(&mut self) {
        let path = sessions_path(&self.cfg);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(
                    "sessions of the last run not restored: {}: {e}",
                    path.display()
                );
                return;
            }
        };
        let _ = std::fs::remove_file(&path);
        let saved = match SavedSessions::from_bytes(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    "sessions of the last run not restored: {}: {e}",
                    path.display()
                );
                return;
            }
        };
        let (tx, rx) = mpsc::channel();
        self.dp.send(DpCmd::RestoreSessions(Box::new(saved), tx));
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => tracing::info!(
                nat = r.nat,
                acl = r.acl,
                expired = r.expired,
                refused = r.refused,
                "sessions of the last run restored: nat={} acl={} expired={} refused={}",
                r.nat,
                r.acl,
                r.expired,
                r.refused
            ),
            Err(_) => tracing::error!("sessions of the last run: the data plane did not answer"),
        }
    }

    /// Asks the data plane for its sessions and writes them to `dataDir` (orderly stop).
    fn save_sessions(&self) {
        let (tx, rx) = mpsc::channel();
        self.dp.send(DpCmd::SaveSessions(tx));
        let Ok(saved) = rx.recv_timeout(Duration::from_secs(30)) else {
            tracing::error!("sessions not saved: the data plane did not answer");
            return;
        };
        let (nat, acl) = (saved.nat.len(), saved.acl.len());
        let path = sessions_path(&self.cfg);
        let tmp = path.with_extension("bin.tmp");
        let r = std::fs::create_dir_all(&self.cfg.data_dir)
            .and_then(|()| std::fs::write(&tmp, saved.to_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match r {
            Ok(()) => tracing::info!(nat, acl, "sessions saved to {}", path.display()),
            Err(e) => tracing::error!("sessions not saved to {}: {e}", path.display()),
        }
    }

    /// Hands the TAPs opened at start to the data plane once it runs the cluster's
    /// configuration (or the source has kept it waiting too long).
    fn attach_pending(&mut self) {
        if self.attached || !(self.synced || self.started.elapsed() >= SOURCE_WAIT) {
            return;
        }
        if !self.synced {
            tracing::warn!(
                "no state from the source after {} s: attaching the TAPs with the local configuration",
                SOURCE_WAIT.as_secs()
            );
        }
        self.attached = true;
        self.restore_sessions();
        for (sw, tap) in std::mem::take(&mut self.pending_taps) {
            self.dp.send(DpCmd::AddTap(sw, tap));
        }
    }

    /// Re-reads the manifests directory when a file changed; a file that fails to parse keeps
    /// its previous objects.
    fn rescan_manifests(&mut self) -> bool {
        if !self.manifests.rescan() {
            return false;
        }
        self.pending.push(Instant::now());
        let errors = self.manifests.errors().to_vec();
        for (file, e) in errors {
            self.event(
                format!("file {}", file.display()),
                "ManifestNotLoaded",
                format!("{e} (its previous objects stay in force)"),
            );
        }
        let mut state = ClusterState::default();
        for o in self.manifests.all() {
            state.apply(o);
        }
        self.state = state;
        true
    }

    /// What this node publishes in etcd (`nodeinfo/<name>`).
    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.ipam.node_id,
            name: self.cfg.node_name.clone(),
            ip_addresses: vec![self.ipam.node_ip.to_string()],
            management_ip_addresses: self.host_ips.iter().map(|ip| ip.to_string()).collect(),
            vxlan_ip: self.ipam.bvi_ip.to_string(),
        }
    }

    /// Writes the allocator's state to `dataDir` (atomically: a temporary file, then a rename).
    fn save_ipam(&self) {
        let path = ipam_state_path(&self.cfg);
        let r = serde_json::to_string_pretty(&self.alloc.state())
            .map_err(std::io::Error::other)
            .and_then(|text| {
                std::fs::create_dir_all(&self.cfg.data_dir)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = r {
            tracing::warn!("ipam: cannot save {}: {e}", path.display());
        }
    }

    /// Relearns the addresses of this node's pods from their Pod objects (`status.podIP`,
    /// SYSTEM.md 2.3): after a restart the allocator continues after the highest address in
    /// use and never hands out one that a pod still has. Entries of pods that went away or
    /// changed address are dropped.
    fn relearn_pod_ips(&mut self) {
        let slice = self.alloc.pod_subnet();
        let mut want: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for (key, pod) in &self.state.pods {
            let Some(spec) = &pod.spec else { continue };
            if spec.node_name.as_deref() != Some(self.cfg.node_name.as_str())
                || spec.host_network == Some(true)
            {
                continue;
            }
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            if let Some(ip) = ip.filter(|ip| slice.contains(*ip)) {
                want.insert(relearned_key(key), ip);
            }
        }
        let mut changed = false;
        for (k, ip) in self.alloc.allocations() {
            if k.starts_with("k8s:") && want.get(&k) != Some(&ip) {
                self.alloc.release(&k);
                changed = true;
            }
        }
        for (k, ip) in want {
            if self.alloc.get(&k) == Some(ip) {
                continue;
            }
            match self.alloc.holder(ip) {
                // Attached through CNI (the normal case) or already relearned.
                Some(_) => continue,
                None => match self.alloc.restore(&k, ip) {
                    Ok(()) => changed = true,
                    Err(e) => tracing::debug!("ipam: not relearned: {e}"),
                },
            }
        }
        if changed {
            self.save_ipam();
        }
    }

    /// Records a warning event: log, event history, metric.
    fn event(&mut self, object: String, reason: &str, message: String) {
        tracing::warn!(object = %object, reason, "{message}");
        self.metrics
            .warning_events
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventRecord {
            time: SystemTime::now(),
            object,
            reason: reason.to_string(),
            message,
        });
    }

    /// A source value that could not be read (`<key>: <reason>`): an event naming the key.
    fn invalid_source_value(&mut self, e: &str) {
        let (object, message) = match e.split_once(": ") {
            Some((k, m)) => (format!("key {k}"), m.to_string()),
            None => ("-".to_string(), e.to_string()),
        };
        self.event(object, "InvalidSourceValue", message);
    }

    /// Applies one event of the etcd source; returns whether the objects changed (a render is
    /// due).
    fn on_source(&mut self, ev: SourceEvent) -> bool {
        let src = if self.cfg.source.kind == "kube" {
            "Kubernetes API"
        } else {
            "etcd"
        };
        match &ev {
            SourceEvent::Resync { .. } => {
                self.synced = true;
                self.metrics.source_resyncs.inc();
                self.metrics.source_connected.set(1);
                self.pending.push(Instant::now());
            }
            SourceEvent::Put { object, .. } => {
                self.metrics
                    .source_events
                    .get_or_create(&crate::metrics::KindLabels {
                        kind: object.kind().to_string(),
                    })
                    .inc();
                self.pending.push(Instant::now());
            }
            SourceEvent::Delete { kind, .. } => {
                self.metrics
                    .source_events
                    .get_or_create(&crate::metrics::KindLabels {
                        kind: kind.to_string(),
                    })
                    .inc();
                self.pending.push(Instant::now());
            }
            SourceEvent::Invalid(e) => self.invalid_source_value(e),
            SourceEvent::Disconnected { .. } => {
                self.metrics.source_connected.set(0);
            }
            SourceEvent::NodePut(_) | SourceEvent::NodeDelete(_) => {}
        }
        let st = self.etcd.get_or_insert_with(EtcdStatus::default);
        match ev {
            SourceEvent::Resync {
                objects,
                nodes,
                revision,
                errors,
            } => {
                let was_down = st.resyncs > 0 && !st.connected;
                st.connected = true;
                st.revision = revision;
                st.resyncs += 1;
                st.last_error = None;
                let mut state = ClusterState::default();
                let n = objects.len();
                for o in objects {
                    state.apply(o);
                }
                self.state = state;
                self.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
                for e in &errors {
                    self.invalid_source_value(e);
                }
                if was_down {
                    tracing::info!(
                        revision,
                        objects = n,
                        nodes = self.nodes.len(),
                        "{src} reachable again: resynced"
                    );
                } else {
                    tracing::info!(
                        revision,
                        objects = n,
                        nodes = self.nodes.len(),
                        "{src} resync"
                    );
                }
                true
            }
            SourceEvent::Put { object, revision } => {
                st.revision = st.revision.max(revision);
                tracing::debug!(kind = object.kind(), key = %object.key(), revision, "{src}: put");
                self.state.apply(object);
                true
            }
            SourceEvent::Delete {
                kind,
                key,
                revision,
            } => {
                st.revision = st.revision.max(revision);
                tracing::debug!(kind, key = %key, revision, "{src}: delete");
                self.state.remove(kind, &key)
            }
            SourceEvent::NodePut(n) => {
                if self.nodes.get(&n.name) != Some(&n) {
                    tracing::info!(node = %n.name, id = n.id, ips = ?n.ip_addresses, "node joined or changed");
                    self.nodes.insert(n.name.clone(), n);
                }
                false
            }
            SourceEvent::NodeDelete(name) => {
                if self.nodes.remove(&name).is_some() {
                    tracing::info!(node = %name, "node left");
                }
                false
            }
            SourceEvent::Invalid(_) => false,
            SourceEvent::Disconnected { error, retry_in } => {
                if st.connected || (st.resyncs == 0 && st.last_error.is_none()) {
                    tracing::warn!(
                        "{src} unreachable ({error}): the data plane keeps forwarding on the last state; retrying (next in {retry_in:?}, then every <= 3 s)"
                    );
                } else {
                    tracing::debug!(
                        "{src} still unreachable ({error}); next attempt in {retry_in:?}"
                    );
                }
                st.connected = false;
                st.last_error = Some(error);
                false
            }
        }
    }

    /// Renders the desired data-plane configuration and hands it to the data plane.
    fn render_and_apply(&mut self) -> Result<()> {
        let started = Instant::now();
        self.relearn_pod_ips();
        let h = &self.cfg.interfaces.host;
        let mut interfaces = vec![InterfaceSpec {
            name: "tap0".into(),
            kind: KindSpec::Host,
            mac: Some(h.mac.parse().map_err(|_| anyhow!("interfaces.host.mac"))?),
            peer_mac: None,
            host_ips: self.host_ips.clone(),
            pod: None,
            ip: None,
            sw_if_index: Some(TAP0_SW_IF_INDEX),
            mtu: Some(h.mtu),
        }];
        for a in self.pods.values() {
            interfaces.push(InterfaceSpec {
                name: format!("tap{}", a.instance),
                kind: KindSpec::Pod,
                mac: Some(a.dp_mac),
                peer_mac: Some(a.pod_mac),
                host_ips: Vec::new(),
                pod: Some(a.pod_key.clone()),
                ip: Some(a.ip),
                sw_if_index: Some(a.sw_if_index()),
                mtu: Some(self.cfg.interfaces.pods.mtu),
            });
        }
        let sc = Scenario {
            node: NodeSpec {
                id: self.cfg.ipam.node_id,
                name: self.cfg.node_name.clone(),
            },
            ipam: Some(self.cfg.ipam.clone()),
            interfaces,
            objects: Vec::new(),
            packets: Vec::new(),
            seed: 0,
        };
        let mut plan = crate::simulate::plan_with_state(
            &sc,
            Some(&mut self.state),
            Some(&mut self.render_cache),
        )?;
        let n = &self.cfg.nat;
        plan.config.nat.max_sessions = n.max_sessions;
        plan.config.nat.reserved_for_control = n.reserved_for_control;
        plan.config.nat.timeouts = vecnet_nat::NatTimeouts {
            udp: n.timeouts.udp,
            tcp_established: n.timeouts.tcp_established,
            tcp_transitory: n.timeouts.tcp_transitory,
            icmp: n.timeouts.icmp,
        };
        let a = &self.cfg.acl;
        plan.config.acl.max_sessions = a.max_sessions;
        plan.config.acl.reserved_for_control = a.reserved_for_control;
        plan.config.acl.timeouts = vecnet_acl::AclTimeouts {
            udp_idle: a.timeouts.udp_idle,
            tcp_idle: a.timeouts.tcp_idle,
            tcp_transient: a.timeouts.tcp_transient,
        };
        self.metrics
            .render_duration
            .observe(started.elapsed().as_secs_f64());
        self.note_warnings(plan.warnings);
        let seen = std::mem::take(&mut self.pending);
        if self.applied.as_deref() == Some(&plan.config) {
            // Nothing new for the data plane (a resync that found the same state, a change to
            // an object no renderer reads): what it runs already includes these changes.
            tracing::debug!(changes = seen.len(), "render unchanged: nothing to apply");
            self.metrics.programmed(&seen);
            return Ok(());
        }
        let config = Arc::new(plan.config);
        self.applied = Some(Arc::clone(&config));
        self.dp.send(DpCmd::Apply(config, seen));
        Ok(())
    }

    /// `POST /v1/resync`: reads the whole state again (manifests mode: every file; etcd mode:
    /// the watch already holds it) and renders; the data plane gets only a configuration that
    /// differs from what it runs, and never loses its sessions, so established flows go on.
    fn resync(&mut self) {
        if self.etcd.is_none() {
            self.manifests.invalidate();
            self.rescan_manifests();
        }
        self.pending.push(Instant::now());
        if let Err(e) = self.render_and_apply() {
            tracing::error!("render: {e:#}");
        }
        tracing::info!("resync requested: done");
    }

    /// Turns the render's warnings into events: a warning that appears is logged, counted and
    /// kept in the history; one that goes away is logged as resolved. The gauge counts the
    /// current ones by reason.
    fn note_warnings(&mut self, warnings: Vec<Warning>) {
        let now: BTreeSet<Warning> = warnings.into_iter().collect();
        let new: Vec<Warning> = now.difference(&self.warnings).cloned().collect();
        for w in &self.warnings {
            if !now.contains(w) {
                tracing::info!("resolved: {w}");
            }
        }
        for w in new {
            self.event(w.object, &w.reason, w.message);
        }
        self.metrics.object_warnings.clear();
        for w in &now {
            self.metrics
                .object_warnings
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: w.reason.clone(),
                })
                .inc();
        }
        self.warnings = now;
    }

    /// `GET /metrics`: agent gauges plus the data plane's counters, copied between vectors.
    fn scrape(&mut self) -> String {
        let (tx, rx) = mpsc::channel();
        self.dp.send(DpCmd::Stats(tx));
        if let Ok(st) = rx.recv_timeout(Duration::from_secs(5)) {
            self.metrics.set_dataplane(&st);
        }
        self.metrics.pods.set(self.pods.len() as i64);
        self.metrics.ipam_allocated.set(self.alloc.len() as i64);
        self.metrics
            .ipam_capacity
            .set(i64::try_from(self.alloc.capacity()).unwrap_or(i64::MAX));
        if self.etcd.is_none() {
            self.metrics.source_connected.set(1);
        }
        self.metrics.encode()
    }

    /// `vecnetctl events`: the warning history, oldest first, and what is wrong now.
    fn show_events(&self) -> String {
        let now = SystemTime::now();
        let mut out = format!(
            "{:<8} {:<8} {:<26} {:<40} {}\n",
            "AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"
        );
        for e in &self.events {
            let age = now.duration_since(e.time).unwrap_or_default().as_secs();
            let age = match age {
                0..=119 => format!("{age}s"),
                120..=7199 => format!("{}m", age / 60),
                _ => format!("{}h", age / 3600),
            };
            out.push_str(&format!(
                "{:<8} {:<8} {:<26} {:<40} {}\n",
                age, "Warning", e.reason, e.object, e.message
            ));
        }
        out.push_str(&format!(
            "\n{} object warning(s) in force now{}\n",
            self.warnings.len(),
            if self.warnings.is_empty() { "" } else { ":" }
        ));
        for w in &self.warnings {
            out.push_str(&format!("  {w}\n"));
        }
        out
    }

    fn handle(&mut self, req: &control::Request) -> Response {
        let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
        match (req.method.as_str(), path) {
            ("GET", "/healthz") => (
                200,
                "text/plain",
                if self.ready { "ok\n" } else { "starting\n" }.into(),
            ),
            ("POST", "/v1/cli") => match self.dp.cli(req.body.trim()) {
                Ok(out) => (200, "text/plain", out),
                Err(e) => (400, "text/plain", format!("{e}\n")),
            },
            ("POST", "/v1/cni") => {
                let reply = match serde_json::from_str::<CniRequest>(&req.body) {
                    Ok(r) => self.cni(&r),
                    Err(e) => CniReply::Error(CniError::new(
                        code::DECODE_FAILURE,
                        "cannot decode the CNI request",
                        e.to_string(),
                    )),
                };
                (
                    200,
                    "application/json",
                    serde_json::to_string(&reply).unwrap_or_default(),
                )
            }
            ("GET", "/v1/pods") => (200, "text/plain", self.show_pods()),
            ("GET", "/v1/ipam") => (200, "text/plain", self.show_ipam()),
            ("GET", "/v1/nodes") => (200, "text/plain", self.show_nodes()),
            ("GET", "/v1/events") => (200, "text/plain", self.show_events()),
            ("GET", "/v1/stats") => {
                let last = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("last="))
                    .and_then(|n| n.parse().ok());
                let mut out = self.metrics.programming_summary(last);
                out.push_str(&format!(
                    "Last render: {} of {} Services computed anew (the others from the render cache)\n",
                    self.render_cache.services.last_computed,
                    self.state.services.len()
                ));
                (200, "text/plain", out)
            }
            ("GET", "/metrics") => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.scrape(),
            ),
            ("GET", "/readyz") => {
                if self.ready {
                    (200, "text/plain", "ok\n".into())
                } else {
                    (503, "text/plain", "starting\n".into())
                }
            }
            ("POST", "/v1/resync") => {
                self.resync();
                (200, "text/plain", "resync done\n".into())
            }
            _ => (
                404,
                "text/plain",
                format!("no route {} {}\n", req.method, req.path),
            ),
        }
    }

    fn show_pods(&self) -> String {
        let mut out = format!(
            "{:<30} {:<16} {:<8} {:<10} {:<18} {}\n",
            "POD", "IP", "IF", "SW_IF", "MAC", "NETNS"
        );
        for a in self.pods.values() {
            out.push_str(&format!(
                "{:<30} {:<16} {:<8} {:<10} {:<18} {}\n",
                a.pod_key,
                a.ip,
                format!("tap{}", a.instance),
                a.sw_if_index(),
                a.pod_mac,
                a.netns
            ));
        }
        out
    }

    /// `vecnetctl nodes` (SYSTEM.md 10.1): every known node; in manifests mode only this one.
    fn show_nodes(&self) -> String {
        let mut nodes = self.nodes.clone();
        nodes
            .entry(self.cfg.node_name.clone())
            .or_insert_with(|| self.node_info());
        let mut rows: Vec<&NodeInfo> = nodes.values().collect();
        rows.sort_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
        let mut out = format!(
            "{:<4} {:<20} {:<18} {:<18} {:<24} {}\n",
            "ID", "NAME", "NODE-IP", "BVI-IP", "HOST-IPS", "STATE"
        );
        for n in rows {
            let state = if n.name == self.cfg.node_name {
                "this node"
            } else {
                "joined"
            };
            let host_ips = if n.management_ip_addresses.is_empty() {
                "-".to_string()
            } else {
                n.management_ip_addresses.join(",")
            };
            out.push_str(&format!(
                "{:<4} {:<20} {:<18} {:<18} {:<24} {}\n",
                n.id,
                n.name,
                n.ip_addresses.first().map(String::as_str).unwrap_or("-"),
                if n.vxlan_ip.is_empty() {
                    "-"
                } else {
                    &n.vxlan_ip
                },
                host_ips,
                state
            ));
        }
        out
    }

    fn source_line(&self) -> String {
        let kube = &self.cfg.source.kube;
        let kube_at = || {
            let at = if kube.kubeconfig.is_empty() {
                "in-cluster".to_string()
            } else {
                kube.kubeconfig.clone()
            };
            if kube.context.is_empty() {
                format!("kube {at}")
            } else {
                format!("kube {at} context {}", kube.context)
            }
        };
        match &self.etcd {
            None if self.cfg.source.kind == "kube" => format!("{} (connecting)", kube_at()),
            None => format!("manifests {}", self.cfg.source.manifests.dir.display()),
            // The kube source reports through the same status as etcd (events and states).
            Some(st) if self.cfg.source.kind == "kube" => {
                let state = if st.connected {
                    format!("synced, resourceVersion {}", st.revision)
                } else if let Some(err) = &st.last_error {
                    format!("unreachable, keeping the last state: {err}")
                } else {
                    "connecting".to_string()
                };
                format!("{} ({state})", kube_at())
            }
            Some(st) => {
                let e = &self.cfg.source.etcd;
                let state = if st.connected {
                    format!("connected, revision {}", st.revision)
                } else if let Some(err) = &st.last_error {
                    format!("unreachable, keeping the last state: {err}")
                } else {
                    "connecting".to_string()
                };
                format!(
                    "etcd {} prefix {} ({state})",
                    e.endpoints.join(","),
                    e.prefix
                )
            }
        }
    }

    fn show_ipam(&self) -> String {
        let i = &self.ipam;
        let mut out = String::new();
        out.push_str(&format!("Node ID:            {}\n", i.node_id));
        out.push_str(&format!("Node name:          {}\n", self.cfg.node_name));
        out.push_str(&format!("State source:       {}\n", self.source_line()));
        out.push_str(&format!("Pod subnet:         {}\n", i.pod_subnet));
        out.push_str(&format!("Pod gateway:        {}\n", i.pod_gateway));
        out.push_str(&format!("NAT loopback:       {}\n", i.nat_loopback));
        out.push_str(&format!(
            "Host link:          tap0 {} / {} {}\n",
            i.host_vpp_ip, self.cfg.interfaces.host.linux_name, i.host_linux_ip
        ));
        out.push_str(&format!("Node IP:            {}\n", i.node_ip));
        out.push_str(&format!("VXLAN BVI IP:       {}\n", i.bvi_ip));
        out.push_str(&format!("Service CIDR:       {}\n", i.service_cidr));
        out.push_str(&format!("Host IPs:           {:?}\n", self.host_ips));
        out.push_str("Allocated pod IPs:\n");
        for (k, ip) in self.alloc.allocations() {
            out.push_str(&format!("  {ip:<16} {k}\n"));
        }
        out
    }

    fn cni(&mut self, r: &CniRequest) -> CniReply {
        let err = |c: u32, m: &str, d: String| CniReply::Error(CniError::new(c, m, d));
        match r.command.as_str() {
            "VERSION" | "STATUS" => CniReply::Ok(None),
            "ADD" | "DEL" | "CHECK" => {
                if r.container_id.is_empty() || r.ifname.is_empty() {
                    return err(
                        code::INVALID_ENVIRONMENT,
                        "missing CNI_CONTAINERID or CNI_IFNAME",
                        String::new(),
                    );
                }
                let key = format!("{}/{}", r.container_id, r.ifname);
                if r.command == "ADD" && (r.netns.is_empty() || !Path::new(&r.netns).exists()) {
                    return err(
                        code::INVALID_ENVIRONMENT,
                        "CNI_NETNS does not exist",
                        r.netns.clone(),
                    );
                }
                match r.command.as_str() {
                    "ADD" => match self.cni_add(&key, r) {
                        Ok(res) => CniReply::Ok(Some(res)),
                        Err(e)
                            if e.downcast_ref::<IpamError>()
                                .is_some_and(|e| matches!(e, IpamError::Exhausted { .. })) =>
                        {
                            err(
                                code::IPAM_EXHAUSTED,
                                "no free pod IP on this node",
                                format!("{e:#}"),
                            )
                        }
                        Err(e) => err(
                            code::TRY_AGAIN_LATER,
                            "vecnetd could not attach the pod",
                            format!("{e:#}"),
                        ),
                    },
                    "DEL" => {
                        self.cni_del(&key);
                        CniReply::Ok(None)
                    }
                    _ => match self.pods.get(&key) {
                        Some(a) if a.netns == r.netns => CniReply::Ok(None),
                        Some(_) => err(
                            code::INVALID_NETWORK_CONFIG,
                            "attachment exists in another netns",
                            String::new(),
                        ),
                        None => err(code::UNKNOWN_CONTAINER, "unknown container", key),
                    },
                }
            }
            "GC" => {
                let valid: std::collections::BTreeSet<String> = r
                    .valid_attachments
                    .iter()
                    .map(|(c, i)| format!("{c}/{i}"))
                    .collect();
                let stale: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|k| !valid.contains(*k))
                    .cloned()
                    .collect();
                for k in stale {
                    self.cni_del(&k);
                }
                // Addresses kept from an earlier run whose attachment the runtime no longer
                // has (the relearned `k8s:` entries follow the Pod objects instead).
                let orphans: Vec<String> = self
                    .alloc
                    .allocations()
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| !k.starts_with("k8s:") && !valid.contains(k))
                    .collect();
                if !orphans.is_empty() {
                    for k in &orphans {
                        self.alloc.release(k);
                    }
                    self.save_ipam();
                    tracing::info!(
                        released = orphans.len(),
                        "CNI GC: stale pod addresses released"
                    );
                }
                CniReply::Ok(None)
            }
            other => err(
                code::INVALID_ENVIRONMENT,
                "unknown CNI_COMMAND",
                other.to_string(),
            ),
        }
    }

    fn result_of(&self, a: &Attachment) -> CniResult {
        let gw = self.ipam.pod_gateway.to_string();
        CniResult {
            cni_version: CNI_VERSION.into(),
            interfaces: vec![CniInterface {
                name: a.ifname.clone(),
                mac: a.pod_mac.to_string(),
                sandbox: a.netns.clone(),
            }],
            ips: vec![CniIp {
                address: format!("{}/32", a.ip),
                gateway: gw.clone(),
                interface: 0,
            }],
            routes: vec![CniRoute {
                dst: "0.0.0.0/0".into(),
                gw,
            }],
            dns: serde_json::json!({}),
        }
    }

    fn cni_add(&mut self, key: &str, r: &CniRequest) -> Result<CniResult> {
        if let Some(a) = self.pods.get(key) {
            return Ok(self.result_of(a));
        }
        let netns_path = PathBuf::from(&r.netns);
        if r.netns.is_empty() || !netns_path.exists() {
            bail!("CNI_NETNS {:?} does not exist", r.netns);
        }
        let ns = r
            .args
            .get("K8S_POD_NAMESPACE")
            .cloned()
            .unwrap_or_else(|| "default".into());
        let name = r
            .args
            .get("K8S_POD_NAME")
            .cloned()
            .unwrap_or_else(|| r.container_id.chars().take(12).collect());
        // A pod that the cluster already knows on this node (its Pod object, after a restart of
        // vecnetd) keeps its address: the relearned entry is handed to the attachment.
        let pod_key = format!("{ns}/{name}");
        let relearned = relearned_key(&pod_key);
        let ip = match self.alloc.release(&relearned) {
            Some(ip) => {
                self.alloc
                    .restore(key, ip)
                    .map_err(|e| anyhow!("ipam: {e}"))?;
                ip
            }
            None => self.alloc.allocate(key)?,
        };
        self.save_ipam();
        let instance = (1..)
            .find(|i| !self.pods.values().any(|a| a.instance == *i))
            .unwrap_or(1);
        let (pod_hashed, dp_mac) = pod_macs(&r.container_id, &r.ifname);
        let pod_mac = if self.cfg.interfaces.pods.mac_scheme == "hashed" {
            pod_hashed
        } else {
            FIXED_POD_MAC
        };
        let a = Attachment {
            pod_key: format!("{ns}/{name}"),
            ifname: r.ifname.clone(),
            netns: r.netns.clone(),
            ip,
            instance,
            pod_mac: MacAddr(pod_mac),
            dp_mac: MacAddr(dp_mac),
        };
        match pods::plug(&a, self.plug_params()) {
            Ok(tap) => {
                self.dp.send(DpCmd::AddTap(a.sw_if_index(), tap));
                self.pods.insert(key.to_string(), a.clone());
                self.save_pods();
                self.render_and_apply()?;
                tracing::info!(pod = %a.pod_key, ip = %a.ip, tap = %format!("tap{}", a.instance), "pod attached");
                Ok(self.result_of(&a))
            }
            Err(e) => {
                self.alloc.release(key);
                self.save_ipam();
                Err(e)
            }
        }
    }

    fn cni_del(&mut self, key: &str) {
        let Some(a) = self.pods.remove(key) else {
            if self.alloc.release(key).is_some() {
                self.save_ipam();
            }
            return;
        };
        let sw = a.sw_if_index();
        match self.pending_taps.iter().position(|(s, _)| *s == sw) {
            Some(i) => {
                let (_, tap) = self.pending_taps.swap_remove(i);
                let _ = tap.set_persist(false);
            }
            None => self.dp.send(DpCmd::RemoveTap(sw)),
        }
        self.alloc.release(key);
        self.save_ipam();
        self.save_pods();
        // SYSTEM.md 6.8: a deleted pod's sessions, as client or backend, go with it.
        self.dp.send(DpCmd::PurgeAddress(a.ip));
        if let Err(e) = self.render_and_apply() {
            tracing::error!("re-render after DEL: {e:#}");
        }
        tracing::info!(pod = %a.pod_key, "pod detached");
    }
}

impl Agent {
    /// Handles one message of the agent loop; returns whether a render is due.
    fn dispatch(&mut self, msg: AgentMsg) -> bool {
        match msg {
            AgentMsg::Control(req, reply) => {
                let r = self.handle(&req);
                let _ = reply.send(r);
                false
            }
            AgentMsg::Source(ev) => self.on_source(*ev),
        }
    }
}

/// `kube` mode with `ipam.nodeID` 0 (SYSTEM.md 1.2): the `vecnet.io/node-id` annotation of this
/// node's Node object, else 1. An API that does not answer or an annotation that is not a
/// positive integer stops the start with the reason (the ID fixes every per-node address, so a
/// guess would be worse).
fn kube_node_id(cfg: &Config) -> Result<u32> {
    let k = &cfg.source.kube;
    let kcfg = vecnet_agent::kubeapi::KubeSourceConfig {
        kubeconfig: (!k.kubeconfig.is_empty()).then(|| PathBuf::from(&k.kubeconfig)),
        context: (!k.context.is_empty()).then(|| k.context.clone()),
    };
    match vecnet_agent::kubeapi::node_id_annotation(&kcfg, &cfg.node_name, Duration::from_secs(10))
        .context("node ID from the Kubernetes API")?
    {
        Some(id) => {
            tracing::info!(node = %cfg.node_name, id, "node ID from the Node's vecnet.io/node-id annotation");
            Ok(id)
        }
        None => {
            tracing::info!(node = %cfg.node_name, "no vecnet.io/node-id annotation on the Node: node ID 1 (set ipam.nodeID or the annotation on every node of a cluster)");
            Ok(1)
        }
    }
}

/// Where the node ID allocated in etcd is remembered, for a start while etcd is down.
fn saved_node_id_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("etcd-node-id.json")
}

/// The node ID from etcd (SYSTEM.md 1.4): this node's existing claim or the smallest free ID.
/// While etcd cannot be reached it retries with back-off; after 5 s it starts with the ID
/// remembered in `dataDir` from an earlier run, if any (the source re-checks the claim when
/// etcd answers).
fn etcd_node_id(cfg: &Config, stop: &AtomicBool) -> Result<u32> {
    let e = &cfg.source.etcd;
    let conn = e.connection()?;
    let layout = Layout::new(&e.prefix);
    let path = saved_node_id_path(cfg);
    let saved = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<IdClaim>(&b).ok())
        .filter(|c| c.name == cfg.node_name && c.id > 0);
    let rt = etcd::runtime().context("etcd client runtime")?;
    let start = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut warned = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            bail!("stopped while waiting for etcd to allocate the node ID");
        }
        let r = rt.block_on(async {
            let mut c = etcd::connect(&conn).await?;
            etcd::allocate_node_id(&mut c, &layout, &cfg.node_name).await
        });
        match r {
            Ok(id) => {
                tracing::info!(node = %cfg.node_name, id, "node ID allocated in etcd");
                let claim = IdClaim {
                    id,
                    name: cfg.node_name.clone(),
                };
                let _ = std::fs::create_dir_all(&cfg.data_dir);
                if let Err(err) = std::fs::write(&path, serde_json::to_vec(&claim)?) {
                    tracing::warn!(file = %path.display(), "cannot remember the node ID: {err}");
                }
                return Ok(id);
            }
            Err(etcd::EtcdError::Invalid(m)) => bail!("node ID allocation in etcd: {m}"),
            Err(err @ etcd::EtcdError::Config(_)) => bail!("{err}"),
            Err(err) => {
                if let Some(c) = &saved {
                    if start.elapsed() >= Duration::from_secs(5) {
                        tracing::warn!(id = c.id, file = %path.display(), "etcd unreachable ({err}): starting with the node ID of the last run");
                        return Ok(c.id);
                    }
                }
                if !warned {
                    tracing::warn!(endpoints = ?e.endpoints, "etcd unreachable, waiting to allocate the node ID: {err}");
                    warned = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(3));
            }
        }
    }
}

#[derive(clap::Args)]
pub struct LeaveArgs {
    /// Configuration file of the node (its `nodeName` and `source.etcd`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `vecnetd leave`: an orderly leave of the cluster (SYSTEM.md 1.4): releases this node's ID
/// claim and deletes its `nodeinfo`, so the ID can go to the next node that joins.
pub fn leave(args: LeaveArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::parse("(embedded defaults)", "{}")?,
    };
    if cfg.source.kind != "etcd" {
        bail!(
            "source.kind is {:?}: node IDs are only allocated in etcd mode",
            cfg.source.kind
        );
    }
    let e = &cfg.source.etcd;
    let conn = e.connection()?;
    let layout = Layout::new(&e.prefix);
    let rt = etcd::runtime().context("etcd client runtime")?;
    let released = rt
        .block_on(async {
            let mut c = etcd::connect(&conn).await?;
            etcd::release_node(&mut c, &layout, &cfg.node_name).await
        })
        .map_err(|err| anyhow!("{err}"))?;
    let _ = std::fs::remove_file(saved_node_id_path(&cfg));
    if released.is_empty() {
        println!("node {} held no node ID", cfg.node_name);
    } else {
        println!("node {} released node ID {:?}", cfg.node_name, released);
    }
    Ok(())
}

/// TAP offloads: checksum offload and TSO (GSO super-frames travel the graph as buffer chains)
/// unless `interfaces.pods.offloads` is off.
fn offload(cfg: &Config) -> Offload {
    if cfg.interfaces.pods.offloads && cfg.interfaces.pods.vnet_hdr {
        Offload::Tso
    } else {
        Offload::Csum
    }
}

/// A response: status, content type, body.
type Response = (u16, &'static str, String);
/// What the agent loop receives: a control request and where to send its response, or an
/// event of the etcd source.
enum AgentMsg {
    Control(control::Request, mpsc::Sender<Response>),
    Source(Box<SourceEvent>),
}

/// Waits until a listening socket has a connection to accept, or 100 ms (then the caller looks
/// at its stop flag). A connection is taken at once — a fixed sleep between `accept` calls
/// added up to its length to every CNI call and `vecnetctl` command.
fn wait_readable(fd: &impl std::os::fd::AsFd) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    if poll(&mut fds, Some(&timeout)).is_err() {
        // EINTR and the like: the caller retries; a short pause keeps an error from spinning.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A listening socket whose connections carry one control request each (the control socket,
/// the HTTP listener).
trait Acceptor: std::os::fd::AsFd + Send + 'static {
    type Conn: std::io::Read + std::io::Write + Send + 'static;
    fn set_nonblocking(&self) -> std::io::Result<()>;
    /// The next connection, blocking and with `read_timeout`.
    fn accept_conn(&self, read_timeout: Duration) -> std::io::Result<Self::Conn>;
}

impl Acceptor for UnixListener {
    type Conn = std::os::unix::net::UnixStream;
    fn set_nonblocking(&self) -> std::io::Result<()> {
        UnixListener::set_nonblocking(self, true)
    }
    fn accept_conn(&self, read_timeout: Duration) -> std::io::Result<Self::Conn> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(read_timeout))?;
        Ok(s)
    }
}

impl Acceptor for std::net::TcpListener {
    type Conn = std::net::TcpStream;
    fn set_nonblocking(&self) -> std::io::Result<()> {
        std::net::TcpListener::set_nonblocking(self, true)
    }
    fn accept_conn(&self, read_timeout: Duration) -> std::io::Result<Self::Conn> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(read_timeout))?;
        Ok(s)
    }
}

/// Accepts connections on `l` until `stop`, each served on a thread of its own; the thread
/// waits in poll(2) between connections and checks `stop` at least every 100 ms.
fn spawn_acceptor<L: Acceptor>(
    name: &str,
    l: L,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<AgentMsg>,
    read_only: bool,
    read_timeout: Duration,
) -> Result<std::thread::JoinHandle<()>> {
    l.set_nonblocking()
        .with_context(|| format!("{name} listener: non-blocking mode"))?;
    let conn_name = format!("{name}-conn");
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept_conn(read_timeout) {
                    Ok(s) => {
                        let tx = tx.clone();
                        let _ = std::thread::Builder::new()
                            .name(conn_name.clone())
                            .spawn(move || serve_connection(s, &tx, read_only));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(&l),
                    Err(e) => {
                        tracing::warn!("{conn_name}: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .with_context(|| format!("spawning the {name} listener thread"))
}

/// What the HTTP listener (`httpListen`) serves: read-only, no CNI, no CLI.
const HTTP_ROUTES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Serves one request of the control socket (every route) or of the HTTP listener
/// (`read_only`: GET on [`HTTP_ROUTES`]).
fn serve_connection<S: std::io::Read + std::io::Write>(
    mut s: S,
    tx: &mpsc::Sender<AgentMsg>,
    read_only: bool,
) {
    let req = match control::read_request(&mut s) {
        Ok(r) => r,
        Err(e) => {
            let _ = control::write_response(&mut s, 400, "text/plain", &format!("{e}\n"));
            return;
        }
    };
    if read_only {
        let path = req.path.split('?').next().unwrap_or("");
        if !HTTP_ROUTES.contains(&path) {
            let _ = control::write_response(&mut s, 404, "text/plain", "not found\n");
            return;
        }
        if req.method != "GET" {
            let _ = control::write_response(&mut s, 405, "text/plain", "GET only\n");
            return;
        }
    }
    let (rtx, rrx) = mpsc::channel();
    if tx.send(AgentMsg::Control(req, rtx)).is_err() {
        let _ = control::write_response(&mut s, 503, "text/plain", "vecnetd is shutting down\n");
        return;
    }
    match rrx.recv_timeout(Duration::from_secs(60)) {
        Ok((status, ct, body)) => {
            let _ = control::write_response(&mut s, status, ct, &body);
        }
        Err(_) => {
            let _ = control::write_response(&mut s, 503, "text/plain", "vecnetd is busy\n");
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    crate::init_logging();
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::parse("(embedded defaults)", "{}")?,
    };
    // Before anything that touches shared state (the socket, etcd, the TAPs, `dataDir`).
    let _data_dir_lock = lock_data_dir(&cfg.data_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let etcd_mode = cfg.source.kind == "etcd";
    let kube_mode = cfg.source.kind == "kube";
    if etcd_mode && cfg.ipam.node_id == 0 {
        cfg.ipam.node_id = etcd_node_id(&cfg, &stop)?;
    }
    if kube_mode && cfg.ipam.node_id == 0 {
        cfg.ipam.node_id = kube_node_id(&cfg)?;
    }
    let socket = cfg.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("socket: creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("socket: binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let mut agent = Agent::new(cfg)?;
    agent.setup_host_link()?;
    agent.restore_pods();
    let (tx, rx) = mpsc::channel();
    let mut source_thread = None;
    if etcd_mode {
        let e = &agent.cfg.source.etcd;
        let scfg = SourceConfig {
            connection: e.connection()?,
            layout: Layout::new(&e.prefix),
            node: agent.node_info(),
        };
        let stx = tx.clone();
        source_thread = Some(
            vecnet_agent::etcd::source::spawn(scfg, Arc::clone(&stop), move |ev| {
                stx.send(AgentMsg::Source(Box::new(ev))).is_ok()
            })
            .context("starting the etcd source thread")?,
        );
    } else if kube_mode {
        // Same channel and events as the etcd source; the node ID comes from the config.
        let k = &agent.cfg.source.kube;
        let kcfg = vecnet_agent::kubeapi::KubeSourceConfig {
            kubeconfig: (!k.kubeconfig.is_empty()).then(|| PathBuf::from(&k.kubeconfig)),
            context: (!k.context.is_empty()).then(|| k.context.clone()),
        };
        let stx = tx.clone();
        source_thread = Some(
            vecnet_agent::kubeapi::spawn(kcfg, Arc::clone(&stop), move |ev| {
                stx.send(AgentMsg::Source(Box::new(ev))).is_ok()
            })
            .context("starting the Kubernetes API source thread")?,
        );
    } else {
        agent.rescan_manifests();
        agent.synced = true;
    }
    agent.render_and_apply()?;
    agent.attach_pending();
    agent.ready = true;
    tracing::info!(socket = %socket.display(), node = %agent.cfg.node_name, node_id = agent.ipam.node_id, source = %agent.source_line(), "vecnetd ready");
    let http = match agent.cfg.http_listen.as_str() {
        "" => None,
        addr => match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                tracing::info!(listen = addr, "metrics on http://{addr}/metrics");
                Some(l)
            }
            // The node keeps working without its metrics; `vecnetctl metrics` still answers.
            Err(e) => {
                tracing::error!("httpListen {addr}: {e}: metrics listener disabled");
                None
            }
        },
    };
    let http_thread = match http {
        None => None,
        Some(l) => Some(spawn_acceptor(
            "http",
            l,
            Arc::clone(&stop),
            tx.clone(),
            true,
            Duration::from_secs(10),
        )?),
    };
    let acceptor = spawn_acceptor(
        "control",
        listener,
        Arc::clone(&stop),
        tx,
        false,
        Duration::from_secs(30),
    )?;

    let mut last_scan = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut dirty = false;
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(msg) => {
                dirty |= agent.dispatch(msg);
                // Coalesce a burst of source events into one render; control requests in
                // between are answered in order.
                while let Ok(msg) = rx.try_recv() {
                    dirty |= agent.dispatch(msg);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if dirty {
            if let Err(e) = agent.render_and_apply() {
                tracing::error!("render: {e:#}");
            }
        }
        agent.attach_pending();
        if !etcd_mode && !kube_mode && last_scan.elapsed() >= Duration::from_secs(1) {
            last_scan = Instant::now();
            if agent.rescan_manifests() {
                tracing::info!("manifests changed: re-rendering");
                if let Err(e) = agent.render_and_apply() {
                    tracing::error!("render: {e:#}");
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = acceptor.join();
    if let Some(t) = http_thread {
        let _ = t.join();
    }
    // The etcd source thread sees `stop` within 250 ms; it is not joined, so a request hanging
    // on an unresponsive etcd never delays the orderly stop.
    drop(rx);
    drop(source_thread);
    let _ = std::fs::remove_file(&socket);
    // The TAPs are persistent: closing their fds leaves tap0 and the pods' interfaces in place
    // (without carrier) for the next vecnetd to attach to, and the sessions saved now let it
    // carry on the flows that cross them.
    if agent.attached {
        agent.save_sessions();
    }
    agent.dp.send(DpCmd::Stop);
    if let Some(t) = agent.dp.thread.take() {
        let _ = t.join();
    }
    Ok(())
}
