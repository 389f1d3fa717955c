//! `vecnetd simulate SCENARIO`: the offline data plane. The scenario file contract is documented
//! in docs/simulate.md; keep its key names stable.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use vecnet_agent::ipam::IpamConfig;
use vecnet_agent::render::Warning;
use vecnet_graph::{Clock, VirtioNetHdr};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::{
    DataplaneConfig, DataplaneOptions, InterfaceConfig, MemIo, NeighbourConfig, Path, RouteConfig,
};
use vecnet_wire::MacAddr;

#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (YAML or JSON).
    #[arg(required_unless_present = "scenario")]
    file: Option<PathBuf>,
    /// A built-in scenario instead of a file: seed (= pod-to-service-host), pod-to-host, host-to-pod,
    /// pod-to-pod, ping-gateway.
    #[arg(long, conflicts_with = "file")]
    scenario: Option<String>,
    /// Seed for random choices (overrides the scenario's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Virtual time origin of the trace, HH:MM:SS or HH:MM:SS.uuuuuu.
    #[arg(long, default_value = "00:00:00")]
    clock: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub node: NodeSpec,
    /// IPAM knobs (SYSTEM.md 2.1); defaults are Contiv's.
    #[serde(default)]
    pub ipam: Option<IpamConfig>,
    pub interfaces: Vec<InterfaceSpec>,
    #[serde(default)]
    pub objects: Vec<serde_json::Value>,
    #[serde(default)]
    pub packets: Vec<PacketSpec>,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSpec {
    pub id: u32,
    pub name: String,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self {
            id: 1,
            name: "node1".into(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KindSpec {
    Host,
    Pod,
    Uplink,
    VxlanBvi,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    pub name: String,
    pub kind: KindSpec,
    #[serde(default, deserialize_with = "de_mac_opt")]
    pub mac: Option<MacAddr>,
    #[serde(default, deserialize_with = "de_mac_opt")]
    pub peer_mac: Option<MacAddr>,
    #[serde(default)]
    pub host_ips: Vec<Ipv4Addr>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub sw_if_index: Option<u32>,
    #[serde(default)]
    pub mtu: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSpec {
    pub rx: String,
    pub frame: String,
}

fn de_mac_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| {
        s.parse::<MacAddr>().map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid MAC address {s:?}: expected six hex bytes separated by colons"
            ))
        })
    })
    .transpose()
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TxOut {
    pub interface: String,
    pub frame: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DropOut {
    pub node: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub tx: Vec<TxOut>,
    pub drops: Vec<DropOut>,
    pub trace: String,
}

pub fn run(a: Args) -> Result<()> {
    let (name, text) = match (&a.file, &a.scenario) {
        (Some(f), _) => (
            f.display().to_string(),
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?,
        ),
        (None, Some(s)) => (
            format!("builtin:{s}"),
            builtin(s)
                .ok_or_else(|| {
                    anyhow!(
                        "no built-in scenario {s:?} (have: {})",
                        BUILTINS.iter().map(|b| b.0).collect::<Vec<_>>().join(", ")
                    )
                })?
                .to_string(),
        ),
        (None, None) => bail!("give a scenario file or --scenario NAME"),
    };
    let origin = parse_clock(&a.clock).with_context(|| format!("--clock {:?}", a.clock))?;
    let out = simulate_text(&name, &text, a.seed, origin, &mut |w| eprintln!("{w}"))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Parses and runs a scenario; `warn` receives warnings (stderr in the binary).
pub fn simulate_text(
    name: &str,
    text: &str,
    seed: Option<u64>,
    origin_ns: u64,
    warn: &mut dyn FnMut(String),
) -> Result<Output> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let sc: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml_ng already names the path in some messages; say it once.
        if path == "." || inner.starts_with(&path) {
            anyhow!("{name}: {inner}")
        } else {
            anyhow!("{name}: {path}: {inner}")
        }
    })?;
    let mut plan = plan(&sc).map_err(|e| anyhow!("{name}: {e}"))?;
    plan.config.seed = seed.unwrap_or(sc.seed);
    for w in &plan.warnings {
        warn(format!("{name}: warning: {w}"));
    }

    let opts = DataplaneOptions {
        buffers: 4096,
        trace_capacity: 100_000,
        clock: Clock::virtual_at(origin_ns, 1_000),
    };
    let mut dp = vecnet_vswitch::Dataplane::new(opts, Box::new(MemIo::new()))
        .map_err(|e| anyhow!("{name}: {e}"))?;
    dp.apply(&plan.config).map_err(|e| anyhow!("{name}: {e}"))?;
    dp.trace_add("virtio-input", plan.frames.len().max(1) as u32)
        .map_err(|e| anyhow!("{e}"))?;
    let names: HashMap<u32, String> = plan
        .config
        .interfaces
        .iter()
        .map(|i| (i.sw_if_index, i.name.clone()))
        .collect();
    let mut out = Output {
        tx: Vec::new(),
        drops: Vec::new(),
        trace: String::new(),
    };
    for (sw, frame) in &plan.frames {
        let before = dp.graph.drop_counters().to_vec();
        mem(&mut dp).push(
            *sw,
            frame.clone(),
            VirtioNetHdr {
                num_buffers: 1,
                ..Default::default()
            },
        );
        dp.run_once();
        for s in mem(&mut dp).take_sent() {
            out.tx.push(TxOut {
                interface: names.get(&s.sw_if_index).cloned().unwrap_or_default(),
                frame: hex(&s.frame),
            });
        }
        for (k, (&after, &b)) in dp
            .graph
            .drop_counters()
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .enumerate()
        {
            for _ in b..after {
                let (node, reason) = dp
                    .graph
                    .error_name(k as u32)
                    .unwrap_or(("unknown", "unknown"));
                out.drops.push(DropOut {
                    node: node.to_string(),
                    error: reason.to_string(),
                });
            }
        }
    }
    out.trace = dp.show_trace(plan.frames.len().max(1));
    Ok(out)
}

fn mem(dp: &mut vecnet_vswitch::Dataplane) -> &mut MemIo {
    // simulate always builds its data plane on a MemIo.
    match dp.device_mut().as_any_mut().downcast_mut::<MemIo>() {
        Some(m) => m,
        None => unreachable!("simulate's device is a MemIo"),
    }
}

/// The data-plane configuration and the frames of a scenario.
pub struct Plan {
    pub config: DataplaneConfig,
    pub frames: Vec<(u32, Vec<u8>)>,
    /// Objects that were rejected or only partly rendered.
    pub warnings: Vec<Warning>,
}

/// Renders the scenario's node and interfaces as SYSTEM.md section 3 lays out node N.
pub fn plan(sc: &Scenario) -> Result<Plan> {
    plan_with_state(sc, None, None)
}

/// [`plan`] with the cluster's objects already parsed (the daemon's state): `sc.objects` is
/// then ignored, which spares a JSON round trip and a copy of every object on each render.
/// The state is lent, not changed: the local pods' overlay (their interface IPs) is undone
/// before this returns.
pub fn plan_with_state(
    sc: &Scenario,
    state: Option<&mut vecnet_agent::model::ClusterState>,
    cache: Option<&mut vecnet_agent::render::RenderCache>,
) -> Result<Plan> {
    let ipam_cfg = sc.ipam.clone().unwrap_or_default();
    let ipam = ipam_cfg
        .for_node(sc.node.id)
        .map_err(|e| anyhow!("node.id: {e}"))?;
    let mut cfg = DataplaneConfig::default();
    let mut used: HashSet<u32> = sc.interfaces.iter().filter_map(|i| i.sw_if_index).collect();
    let mut next_index = 1u32;
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut seen_ips: HashSet<Ipv4Addr> = HashSet::new();
    for (k, spec) in sc.interfaces.iter().enumerate() {
        let at = |field: &str| format!("interfaces[{k}].{field}");
        if spec.name.is_empty() || spec.name.len() > 60 || spec.name.contains(char::is_whitespace) {
            bail!("{}: invalid interface name {:?}", at("name"), spec.name);
        }
        if by_name.contains_key(&spec.name) {
            bail!("{}: interface {:?} is defined twice", at("name"), spec.name);
        }
        let sw = match spec.sw_if_index {
            Some(0) => bail!("{}: 0 is local0's index", at("sw_if_index")),
            Some(i) => i,
            None => {
                while used.contains(&next_index) {
                    next_index += 1;
                }
                used.insert(next_index);
                next_index
            }
        };
        if by_name.values().any(|&v| v == sw) {
            bail!("{}: sw_if_index {sw} is used twice", at("sw_if_index"));
        }
        by_name.insert(spec.name.clone(), sw);
        let (kind, mtu) = match spec.kind {
            KindSpec::Host => (InterfaceKind::Host, 1450),
            KindSpec::Pod => (InterfaceKind::Pod, 1450),
            KindSpec::Uplink => (InterfaceKind::Uplink, 1500),
            KindSpec::VxlanBvi => (InterfaceKind::VxlanBvi, 1450),
        };
        let mac = spec.mac.unwrap_or(match spec.kind {
            KindSpec::Host => MacAddr([0x02, 0x23, 0x45, 0x67, 0x89, 0x42]),
            KindSpec::VxlanBvi => MacAddr(vecnet_agent::ipam::bvi_mac(sc.node.id)),
            _ => {
                let (_, dp_side) =
                    vecnet_agent::ipam::pod_macs(spec.pod.as_deref().unwrap_or(&spec.name), "eth0");
                MacAddr(dp_side)
            }
        });
        let mut ic = InterfaceConfig::new(&spec.name, sw, kind, mac);
        ic.mtu = spec.mtu.unwrap_or(mtu);
        ic.pod = spec.pod.clone();
        let only = |field: &str, present: bool, kinds: &str| -> Result<()> {
            if present {
                bail!("{}: only valid for kind {kinds}", at(field));
            }
            Ok(())
        };
        match spec.kind {
            KindSpec::Host => {
                only("ip", spec.ip.is_some(), "pod")?;
                only("pod", spec.pod.is_some(), "pod")?;
                ic.ip4 = vec![(ipam.host_vpp_ip, ipam.host_subnet.len)];
                if let Some(peer) = spec.peer_mac {
                    // The host side is a dynamic neighbour; the scenario starts with it learned.
                    cfg.seeded_neighbours.push(NeighbourConfig {
                        sw_if_index: sw,
                        ip: ipam.host_linux_ip,
                        mac: peer,
                    });
                }
                // The host side's own /32, as VPP's attached-host entry once ARP resolves it.
                cfg.routes.push(RouteConfig::new(
                    ipam.host_linux_ip,
                    32,
                    Path::Attached {
                        next_hop: ipam.host_linux_ip,
                        sw_if_index: sw,
                    },
                ));
                for &h in &spec.host_ips {
                    cfg.routes.push(RouteConfig::new(
                        h,
                        32,
                        Path::Attached {
                            next_hop: ipam.host_linux_ip,
                            sw_if_index: sw,
                        },
                    ));
                }
            }
            KindSpec::Pod => {
                only("host_ips", !spec.host_ips.is_empty(), "host")?;
                let ip = spec
                    .ip
                    .ok_or_else(|| anyhow!("{}: a pod interface needs its pod IP", at("ip")))?;
                if !ipam.pod_subnet.contains(ip)
                    || ip == ipam.pod_gateway
                    || ip == ipam.nat_loopback
                    || ip == ipam.pod_subnet.network()
                    || ip == ipam.pod_subnet.broadcast()
                {
                    bail!(
                        "{}: {ip} is not a pod address of node {} ({})",
                        at("ip"),
                        sc.node.id,
                        ipam.pod_subnet
                    );
                }
                if !seen_ips.insert(ip) {
                    bail!("{}: pod IP {ip} is used twice", at("ip"));
                }
                ic.ip4 = vec![(ipam.pod_gateway, 32)];
                let peer = spec
                    .peer_mac
                    .unwrap_or(MacAddr(vecnet_agent::ipam::FIXED_POD_MAC));
                cfg.static_neighbours.push(NeighbourConfig {
                    sw_if_index: sw,
                    ip,
                    mac: peer,
                });
                cfg.routes.push(RouteConfig::new(
                    ip,
                    32,
                    Path::Attached {
                        next_hop: ip,
                        sw_if_index: sw,
                    },
                ));
            }
            KindSpec::Uplink => {
                only("ip", spec.ip.is_some(), "pod")?;
                ic.ip4 = vec![(ipam.node_ip.addr, ipam.node_ip.len)];
                if let Some(peer) = spec.peer_mac {
                    bail!(
                        "{}: {peer}: uplink neighbours are learned by ARP",
                        at("peer_mac")
                    );
                }
            }
            KindSpec::VxlanBvi => {
                only("ip", spec.ip.is_some(), "pod")?;
                ic.ip4 = vec![(ipam.bvi_ip.addr, ipam.bvi_ip.len)];
            }
        }
        cfg.interfaces.push(ic);
    }
    // Unknown pod IPs and Service VIPs never leak to the default route (SYSTEM.md 3.2).
    cfg.routes.push(RouteConfig::new(
        ipam.pod_cidr.network(),
        ipam.pod_cidr.len,
        Path::Drop,
    ));
    cfg.routes.push(RouteConfig::new(
        ipam.pod_subnet.network(),
        ipam.pod_subnet.len,
        Path::Drop,
    ));
    cfg.routes.push(RouteConfig::new(
        ipam.service_cidr.network(),
        ipam.service_cidr.len,
        Path::Reject,
    ));

    let warnings = render_objects(sc, state, cache, &ipam, &mut cfg)?;

    let mut frames = Vec::new();
    for (k, p) in sc.packets.iter().enumerate() {
        let sw = *by_name
            .get(&p.rx)
            .ok_or_else(|| anyhow!("packets[{k}].rx: unknown interface {:?}", p.rx))?;
        let bytes = parse_hex(&p.frame).map_err(|e| anyhow!("packets[{k}].frame: {e}"))?;
        if bytes.len() > vecnet_graph::buffer::DATA_SIZE {
            bail!(
                "packets[{k}].frame: {} bytes is more than a buffer holds ({})",
                bytes.len(),
                vecnet_graph::buffer::DATA_SIZE
            );
        }
        frames.push((sw, bytes));
    }
    Ok(Plan {
        config: cfg,
        frames,
        warnings,
    })
}

/// Parses the scenario's objects and renders Services (NAT44) and NetworkPolicies (ACLs) for
/// this node into `cfg`: mappings, NAT roles, ACL bindings. Pods of the scenario's interfaces
/// exist as Pod objects even when the scenario does not list them.
fn render_objects(
    sc: &Scenario,
    state: Option<&mut vecnet_agent::model::ClusterState>,
    cache: Option<&mut vecnet_agent::render::RenderCache>,
    ipam: &vecnet_agent::ipam::NodeIpam,
    cfg: &mut DataplaneConfig,
) -> Result<Vec<Warning>> {
    use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use vecnet_agent::model::{parse_object, ClusterState, Object};
    use vecnet_agent::render::{render_with, LocalPod, NodeView};

    let mut parsed;
    let state = match state {
        Some(s) => s,
        None => {
            parsed = ClusterState::default();
            let state = &mut parsed;
            for (k, o) in sc.objects.iter().enumerate() {
                let obj = parse_object(k, o.clone()).map_err(|e| match e {
                    vecnet_agent::model::ModelError::Invalid { msg, .. } => {
                        anyhow!("objects[{k}]: {msg}")
                    }
                    other => anyhow!("objects[{k}]: {other}"),
                })?;
                state.apply(obj);
            }
            state
        }
    };
    // Pods as they were before the local overlay, restored after the render.
    let mut saved: Vec<(String, Option<Pod>)> = Vec::new();
    let mut pods = Vec::new();
    let mut warnings = Vec::new();
    for (ic, spec) in cfg.interfaces.iter().zip(&sc.interfaces) {
        let (Some(key), Some(ip)) = (&spec.pod, spec.ip) else {
            continue;
        };
        let (ns, name) = key.split_once('/').unwrap_or(("default", key.as_str()));
        let key = format!("{ns}/{name}");
        saved.push((key.clone(), state.pods.get(&key).cloned()));
        let pod = state.pods.entry(key.clone()).or_insert_with(|| Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        });
        let status = pod.status.get_or_insert_with(PodStatus::default);
        match status.pod_ip.as_deref() {
            Some(p) if p != ip.to_string() => warnings.push(Warning::new(
                format!("Pod {key}"),
                "PodIPMismatch",
                format!("status.podIP {p} differs from its interface's {ip}; using {ip}"),
            )),
            _ => {}
        }
        status.pod_ip = Some(ip.to_string());
        let spec_ = pod.spec.get_or_insert_with(PodSpec::default);
        spec_.node_name = Some(sc.node.name.clone());
        pods.push(LocalPod {
            key,
            ip,
            sw_if_index: ic.sw_if_index,
        });
    }
    let _ = Object::kind;
    let host_ips: Vec<Ipv4Addr> = sc
        .interfaces
        .iter()
        .flat_map(|i| i.host_ips.iter().copied())
        .collect();
    let uplinks: Vec<u32> = cfg
        .interfaces
        .iter()
        .filter(|i| i.kind != InterfaceKind::Pod)
        .map(|i| i.sw_if_index)
        .collect();
    let view = NodeView {
        node_name: sc.node.name.clone(),
        ipam: *ipam,
        host_ips,
        pods,
        uplinks,
    };
    let r = render_with(state, &view, cache);
    for (key, old) in saved.into_iter().rev() {
        match old {
            Some(p) => {
                state.pods.insert(key, p);
            }
            None => {
                state.pods.remove(&key);
            }
        }
    }
    for i in &mut cfg.interfaces {
        match i.kind {
            InterfaceKind::Pod => {
                i.nat_outside = true;
                i.nat_inside = sc
                    .interfaces
                    .iter()
                    .find(|s| s.name == i.name)
                    .and_then(|s| s.ip)
                    .is_some_and(|ip| r.inside_pod_ips.contains(&ip));
            }
            InterfaceKind::Host | InterfaceKind::VxlanBvi => {
                i.nat_inside = true;
                i.nat_outside = true;
            }
            InterfaceKind::Uplink => {
                i.nat_outside = true;
                i.nat_output = true;
            }
            InterfaceKind::Local => {}
        }
    }
    for ip in &r.cluster_ips {
        if !ipam.service_cidr.contains(*ip) {
            cfg.routes.push(RouteConfig::new(*ip, 32, Path::Reject));
        }
    }
    let mut nat = r.nat;
    // simulate needs a small table; the daemon sizes it from its configuration.
    nat.max_sessions = 65_536;
    cfg.nat = nat;
    cfg.acl = r.acl;
    warnings.extend(r.warnings);
    Ok(warnings)
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if digits.is_empty() {
        bail!("empty frame");
    }
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!("not hex: {c:?} at digit {i}");
    }
    if !digits.len().is_multiple_of(2) {
        bail!("odd number of hex digits ({})", digits.len());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| anyhow!("{e}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `HH:MM:SS[.uuuuuu]` → ns.
fn parse_clock(s: &str) -> Result<u64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3 {
        bail!("expected HH:MM:SS[.uuuuuu]");
    }
    let n = |p: &str, max: u64| -> Result<u64> {
        let v: u64 = p.parse().map_err(|_| anyhow!("{p:?} is not a number"))?;
        if v > max {
            bail!("{v} is out of range");
        }
        Ok(v)
    };
    let (h, m, sec) = (n(parts[0], 99)?, n(parts[1], 59)?, n(parts[2], 59)?);
    if frac.len() > 6 {
        bail!("at most 6 fractional digits");
    }
    let us = n(&format!("{frac:0<6}"), 999_999)?;
    Ok((((h * 60 + m) * 60 + sec) * 1_000_000 + us) * 1_000)
}

const BUILTINS: &[(&str, &str)] = &[
    ("pod-to-host", include_str!("../scenarios/pod-to-host.yaml")),
    ("host-to-pod", include_str!("../scenarios/host-to-pod.yaml")),
    ("pod-to-pod", include_str!("../scenarios/pod-to-pod.yaml")),
    (
        "ping-gateway",
        include_str!("../scenarios/ping-gateway.yaml"),
    ),
    (
        "seed",
        include_str!("../scenarios/pod-to-service-host.yaml"),
    ),
    (
        "pod-to-service-host",
        include_str!("../scenarios/pod-to-service-host.yaml"),
    ),
];

fn builtin(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|b| b.0 == name).map(|b| b.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_parsing() {
        assert_eq!(parse_clock("00:00:00").unwrap(), 0);
        assert_eq!(
            parse_clock("02:54:30.091783").unwrap(),
            ((2 * 3600 + 54 * 60 + 30) * 1_000_000 + 91_783) * 1000
        );
        assert!(parse_clock("1:2").is_err());
        assert!(parse_clock("00:61:00").is_err());
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("0a 0B:ff").unwrap(), vec![0x0a, 0x0b, 0xff]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
    }
}
