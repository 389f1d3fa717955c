//! Pod attachments and what keeps them across a restart of `vecnetd` (SYSTEM.md 3.5).
//!
//! A pod's TAP is **persistent** (`TUNSETPERSIST`): when `vecnetd` stops, the device stays in
//! the pod's netns with its address, routes and gateway neighbour, and only loses its carrier.
//! Kubernetes never calls CNI ADD again for a running pod, so the next `vecnetd` must find its
//! pods by itself: every attachment is written to `dataDir/pods.json` when it is made or removed,
//! and at start each one is re-attached by name inside its netns (`TUNSETIFF` on an existing
//! device attaches to it). The pod's sockets never notice more than lost packets in between,
//! which TCP retransmits. CNI DEL clears the persistence, so that closing the fd removes the
//! device; a pod netns that is deleted takes its TAP with it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use vecnet_agent::ipam::NodeIpam;
use vecnet_io::netlink;
use vecnet_io::netns;
use vecnet_io::tap::{Offload, Tap, TapConfig};
use vecnet_wire::MacAddr;

/// One pod attached through CNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub pod_key: String,
    pub ifname: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub instance: u32,
    pub pod_mac: MacAddr,
    pub dp_mac: MacAddr,
}

impl Attachment {
    /// `tapK` is `4 + K` (see `TAP0_SW_IF_INDEX`).
    pub fn sw_if_index(&self) -> u32 {
        4 + self.instance
    }
}

/// An attachment as `pods.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedAttachment {
    pod: String,
    ifname: String,
    netns: String,
    ip: Ipv4Addr,
    instance: u32,
    pod_mac: [u8; 6],
    dp_mac: [u8; 6],
}

/// `pods.json`: attachments by CNI key (`<container id>/<ifname>`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedPods {
    attachments: BTreeMap<String, SavedAttachment>,
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pods.json")
}

/// Writes the attachments atomically (a temporary file, then a rename).
pub fn save(data_dir: &Path, pods: &BTreeMap<String, Attachment>) -> Result<()> {
    let saved = SavedPods {
        attachments: pods
            .iter()
            .map(|(k, a)| {
                let s = SavedAttachment {
                    pod: a.pod_key.clone(),
                    ifname: a.ifname.clone(),
                    netns: a.netns.clone(),
                    ip: a.ip,
                    instance: a.instance,
                    pod_mac: a.pod_mac.0,
                    dp_mac: a.dp_mac.0,
                };
                (k.clone(), s)
            })
            .collect(),
    };
    let path = state_path(data_dir);
    let text = serde_json::to_string_pretty(&saved).context("encoding pod attachments")?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// The attachments of the last run; an absent file is none, an unreadable one is an error
/// (the caller logs it and starts without them rather than guess).
pub fn load(data_dir: &Path) -> Result<BTreeMap<String, Attachment>> {
    let path = state_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let saved: SavedPods =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(saved
        .attachments
        .into_iter()
        .map(|(k, s)| {
            let a = Attachment {
                pod_key: s.pod,
                ifname: s.ifname,
                netns: s.netns,
                ip: s.ip,
                instance: s.instance,
                pod_mac: MacAddr(s.pod_mac),
                dp_mac: MacAddr(s.dp_mac),
            };
            (k, a)
        })
        .collect())
}

/// How the pod's side is configured.
#[derive(Debug, Clone, Copy)]
pub struct PlugParams {
    pub gateway: Ipv4Addr,
    pub mtu: u16,
    pub offload: Offload,
}

impl PlugParams {
    pub fn new(ipam: &NodeIpam, mtu: u16, offload: Offload) -> Self {
        Self {
            gateway: ipam.pod_gateway,
            mtu,
            offload,
        }
    }
}

/// Creates the pod's TAP, moves it into the pod netns as `ifname`, configures it and makes it
/// persistent. The device is persistent only once it is fully set up, so a failure (or a crash)
/// half way leaves nothing behind: closing the fd removes it.
pub fn plug(a: &Attachment, p: PlugParams) -> Result<Tap> {
    let netns_path = PathBuf::from(&a.netns);
    let tmp = format!("vnt{}-{}", std::process::id() % 10000, a.instance);
    let tap = Tap::open(&TapConfig::new(&tmp).offload(p.offload))
        .map_err(|e| anyhow!("creating TAP {tmp}: {e}"))?;
    netlink::set_netns(&tmp, &netns_path)
        .map_err(|e| anyhow!("moving {tmp} into {}: {e}", netns_path.display()))?;
    let (ifname, ip, gw, pod_mac, dp_mac, mtu) = (
        a.ifname.clone(),
        a.ip,
        p.gateway,
        a.pod_mac.0,
        a.dp_mac.0,
        p.mtu,
    );
    netns::run_in(&netns_path, move || -> Result<()> {
        let idx = netlink::link_index(&tmp)?.ok_or_else(|| anyhow!("{tmp} vanished"))?;
        netlink::rename(idx, &ifname)?;
        netlink::set_mac(&ifname, pod_mac)?;
        netlink::set_mtu(&ifname, mtu as u32)?;
        let _ = netlink::set_ipv6_disabled(&ifname, true);
        netlink::set_up(&ifname)?;
        netlink::set_up("lo")?;
        netlink::add_addr(&ifname, ip, 32)?;
        netlink::add_route(gw, 32, None, &ifname, true)?;
        netlink::add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), &ifname, false)?;
        netlink::add_neigh_permanent(&ifname, gw, dp_mac)?;
        Ok(())
    })
    .map_err(|e| anyhow!("{e}"))??;
    tap.set_persist(true)
        .map_err(|e| anyhow!("making {} persistent: {e}", a.ifname))?;
    Ok(tap)
}

/// What became of an attachment of the last run.
#[derive(Debug)]
pub enum Reattached {
    /// The pod's persistent TAP, attached again.
    Attached(Tap),
    /// The device had gone (someone deleted it); a new one was plugged with the same address.
    Replugged(Tap),
    /// The pod's netns is gone: the pod went away while vecnetd was down.
    NetnsGone,
}

/// Attaches to the persistent TAP of an attachment of the last run, inside its netns.
pub fn reattach(a: &Attachment, p: PlugParams) -> Result<Reattached> {
    let netns_path = PathBuf::from(&a.netns);
    if !netns_path.exists() {
        return Ok(Reattached::NetnsGone);
    }
    let ifname = a.ifname.clone();
    let present = netns::run_in(&netns_path, move || netlink::link_index(&ifname))
        .map_err(|e| anyhow!("entering {}: {e}", netns_path.display()))?
        .map_err(|e| anyhow!("looking up {} in {}: {e}", a.ifname, netns_path.display()))?
        .is_some();
    if !present {
        return plug(a, p).map(Reattached::Replugged);
    }
    // Attaching by name fails (rather than creating anything) if the name is taken by a device
    // that is not a TAP, or by a TAP that another process holds.
    let cfg = TapConfig::new(&a.ifname).offload(p.offload).persist(true);
    let tap = Tap::open_in(&netns_path, &cfg)
        .map_err(|e| anyhow!("attaching to {} in {}: {e}", a.ifname, a.netns))?;
    // The link lost its carrier, not its configuration; bringing it up again is harmless.
    let ifname = a.ifname.clone();
    let _ = netns::run_in(&netns_path, move || netlink::set_up(&ifname));
    Ok(Reattached::Attached(tap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("vn-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&dir).expect("no file is no attachments").is_empty());
        let mut pods = BTreeMap::new();
        pods.insert(
            "c1/eth0".to_string(),
            Attachment {
                pod_key: "default/a".into(),
                ifname: "eth0".into(),
                netns: "/run/netns/x".into(),
                ip: Ipv4Addr::new(10, 1, 1, 2),
                instance: 3,
                pod_mac: MacAddr([2, 0, 0, 0, 0, 1]),
                dp_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            },
        );
        save(&dir, &pods).expect("save");
        assert_eq!(load(&dir).expect("load"), pods);
        std::fs::write(state_path(&dir), "{not json").expect("write");
        let err = load(&dir).expect_err("garbage is an error");
        assert!(format!("{err:#}").contains("pods.json"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
