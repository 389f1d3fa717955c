//! Synchronous rtnetlink requests (links, addresses, routes, neighbours) for the Linux side
//! effects of SYSTEM.md 1.8, without shelling out to `ip`.
//!
//! Every function acts in the **calling thread's current network namespace**: it opens a fresh
//! netlink socket in that thread and drives the async [`rtnetlink`] request on a tokio
//! current-thread runtime until it completes. Combine with [`crate::netns::run_in`] to act in
//! another namespace. Called from inside a tokio runtime, the request runs on a helper thread
//! (which inherits the caller's netns), so it never blocks or nests the caller's runtime.
//!
//! These are control-plane calls (one socket and one small runtime per call); they are not for
//! per-packet use.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::{Error, Result};

/// `ENODEV` / `ENOENT` as netlink reports a missing object.
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

fn nl_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let op = op.into();
    move |source| Error::Netlink { op, source }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Runs one netlink conversation in the current thread's netns.
fn run<T, F, Fut>(f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // Inside someone's runtime: `block_on` would panic there. A new thread starts in the
        // netns of the thread that spawns it, so the request still acts where the caller is.
        return std::thread::scope(|s| {
            s.spawn(|| run_here(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
    }
    run_here(f)
}

fn run_here<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("netlink socket", e))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    find_link(h, name)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| Error::NoSuchLink(name.to_string()))
}

async fn find_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    crate::tap::check_ifname(name)?;
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if matches!(errno_of(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(nl_err(format!("get link {name}"))(e)),
    }
}

async fn set_link(h: &Handle, msg: LinkMessage, op: String) -> Result<()> {
    h.link().set(msg).execute().await.map_err(nl_err(op))
}

/// The interface index of `name`, or `None` if there is no such interface.
pub fn link_index(name: &str) -> Result<Option<u32>> {
    run(|h| async move { Ok(find_link(&h, name).await?.map(|m| m.header.index)) })
}

/// The MAC address of `name`.
pub fn link_mac(name: &str) -> Result<[u8; 6]> {
    run(|h| async move {
        let m = find_link(&h, name)
            .await?
            .ok_or_else(|| Error::NoSuchLink(name.to_string()))?;
        m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(b);
                    Some(mac)
                }
                _ => None,
            })
            .ok_or_else(|| Error::io(format!("mac of {name}"), std::io::ErrorKind::NotFound))
    })
}

/// All interfaces of the netns: `(index, name)`.
pub fn links() -> Result<Vec<(u32, String)>> {
    run(|h| async move {
        let mut s = h.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl_err("dump links"))? {
            let name = m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            out.push((m.header.index, name.unwrap_or_default()));
        }
        Ok(out)
    })
}

/// Moves `ifname` into the network namespace at `netns_path` (e.g. `/run/netns/NAME` or
/// `/proc/PID/ns/net`; a bare name is taken from `/run/netns`). The link goes down and keeps
/// its name unless it clashes there.
pub fn set_netns(ifname: &str, netns_path: &Path) -> Result<()> {
    let p = crate::netns::resolve(netns_path);
    let fd = std::fs::File::open(&p).map_err(|e| Error::netns(&p, "open", e))?;
    set_netns_fd(ifname, std::os::fd::AsFd::as_fd(&fd))
}

/// Moves `ifname` into the network namespace open as `fd`.
pub fn set_netns_fd(ifname: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx).setns_by_fd(raw).build();
        set_link(&h, msg, format!("move {ifname} to netns")).await
    })
}

/// Renames the link with index `index` (the link must be down).
pub fn rename(index: u32, new_name: &str) -> Result<()> {
    crate::tap::check_ifname(new_name)?;
    run(|h| async move {
        let msg = LinkUnspec::new_with_index(index).name(new_name).build();
        set_link(&h, msg, format!("rename link {index} to {new_name}")).await
    })
}

/// Sets the MAC address of `ifname`.
pub fn set_mac(ifname: &str, mac: [u8; 6]) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx)
            .address(mac.to_vec())
            .build();
        set_link(&h, msg, format!("set mac of {ifname}")).await
    })
}

/// Sets the MTU of `ifname`.
pub fn set_mtu(ifname: &str, mtu: u32) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx).mtu(mtu).build();
        set_link(&h, msg, format!("set mtu {mtu} on {ifname}")).await
    })
}

/// Sets the transmit queue length of `ifname` (for a TAP: the ring of frames waiting for the
/// data plane to read them; default 1000).
pub fn set_txqueuelen(ifname: &str, len: u32) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx).txqueuelen(len).build();
        set_link(&h, msg, format!("set txqueuelen {len} on {ifname}")).await
    })
}

/// Sets `ifname` administratively up.
pub fn set_up(ifname: &str) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx).up().build();
        set_link(&h, msg, format!("set {ifname} up")).await
    })
}

/// Sets `ifname` administratively down.
pub fn set_down(ifname: &str) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = LinkUnspec::new_with_index(idx).down().build();
        set_link(&h, msg, format!("set {ifname} down")).await
    })
}

/// Adds `addr/prefix` to `ifname` (an existing identical address is not an error).
pub fn add_addr(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        match h
            .address()
            .add(idx, IpAddr::V4(addr), prefix)
            .execute()
            .await
        {
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
            r => r.map_err(nl_err(format!("add {addr}/{prefix} to {ifname}"))),
        }
    })
}

async fn find_addr(
    h: &Handle,
    idx: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<Option<AddressMessage>> {
    let mut s = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .set_address_filter(IpAddr::V4(addr))
        .set_prefix_length_filter(prefix)
        .execute();
    s.try_next().await.map_err(nl_err("dump addresses"))
}

/// Removes `addr/prefix` from `ifname`.
pub fn del_addr(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        let msg = find_addr(&h, idx, addr, prefix).await?.ok_or_else(|| {
            Error::io(
                format!("del {addr}/{prefix} from {ifname}"),
                std::io::ErrorKind::NotFound,
            )
        })?;
        h.address()
            .del(msg)
            .execute()
            .await
            .map_err(nl_err(format!("del {addr}/{prefix} from {ifname}")))
    })
}

/// Every IPv4 address of the netns: `(interface name, address, prefix length)`.
pub fn addrs_v4() -> Result<Vec<(String, Ipv4Addr, u8)>> {
    let names: std::collections::HashMap<u32, String> = links()?.into_iter().collect();
    run(|h| async move {
        let mut s = h.address().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl_err("dump addresses"))? {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on p2p links).
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                    _ => None,
                })
            });
            if let Some(a) = addr {
                let name = names.get(&m.header.index).cloned().unwrap_or_default();
                out.push((name, a, m.header.prefix_len));
            }
        }
        Ok(out)
    })
}

fn route_msg(
    idx: u32,
    dst: Ipv4Addr,
    len: u8,
    via: Option<Ipv4Addr>,
    scope_link: bool,
) -> rtnetlink::packet_route::route::RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, len)
        .output_interface(idx);
    if let Some(gw) = via {
        b = b.gateway(gw);
    }
    if scope_link {
        b = b.scope(RouteScope::Link);
    }
    b.build()
}

/// Adds the IPv4 route `dst/len` out of `dev`, via the gateway `via` or directly attached;
/// `scope_link` makes it a link-scope route (`ip route add 10.1.1.1 dev eth0 scope link`).
/// An identical existing route is not an error.
pub fn add_route(
    dst: Ipv4Addr,
    len: u8,
    via: Option<Ipv4Addr>,
    dev: &str,
    scope_link: bool,
) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, dev).await?;
        let msg = route_msg(idx, dst, len, via, scope_link);
        match h.route().add(msg).execute().await {
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(()),
            r => r.map_err(nl_err(format!("add route {dst}/{len} dev {dev}"))),
        }
    })
}

/// Deletes the IPv4 route `dst/len` out of `dev` (via `via`).
pub fn del_route(dst: Ipv4Addr, len: u8, via: Option<Ipv4Addr>, dev: &str) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, dev).await?;
        let mut msg = route_msg(idx, dst, len, via, false);
        // Match any scope and protocol.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = rtnetlink::packet_route::route::RouteProtocol::Unspec;
        h.route()
            .del(msg)
            .execute()
            .await
            .map_err(nl_err(format!("del route {dst}/{len} dev {dev}")))
    })
}

/// Adds (or replaces) the permanent neighbour `ip` → `mac` on `ifname`
/// (`ip neigh replace IP lladdr MAC dev IF nud permanent`).
pub fn add_neigh_permanent(ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        h.neighbours()
            .add(idx, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(nl_err(format!("add neighbour {ip} on {ifname}")))
    })
}

/// An IPv4 route of the main table, as [`routes_v4`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub via: Option<Ipv4Addr>,
    /// Output interface name (empty if the route has none).
    pub dev: String,
    pub scope_link: bool,
}

/// The unicast IPv4 routes of the main table.
pub fn routes_v4() -> Result<Vec<RouteV4>> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
    let names: std::collections::HashMap<u32, String> = links()?.into_iter().collect();
    run(|h| async move {
        let mut s = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl_err("dump routes"))? {
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(m.header.table as u32);
            if m.header.address_family != AddressFamily::Inet
                || m.header.kind != RouteType::Unicast
                || table != RouteHeader::RT_TABLE_MAIN as u32
            {
                continue;
            }
            let mut r = RouteV4 {
                dst: Ipv4Addr::UNSPECIFIED,
                len: m.header.destination_prefix_length,
                via: None,
                dev: String::new(),
                scope_link: m.header.scope == RouteScope::Link,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.via = Some(*g),
                    RouteAttribute::Oif(i) => r.dev = names.get(i).cloned().unwrap_or_default(),
                    _ => {}
                }
            }
            out.push(r);
        }
        Ok(out)
    })
}

/// An IPv4 neighbour entry, as [`neighbours_v4`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourV4 {
    pub dev: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// `nud permanent`.
    pub permanent: bool,
}

/// The IPv4 neighbour entries that have a link-layer address.
pub fn neighbours_v4() -> Result<Vec<NeighbourV4>> {
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };
    let names: std::collections::HashMap<u32, String> = links()?.into_iter().collect();
    run(|h| async move {
        let mut s = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl_err("dump neighbours"))? {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
                    NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                        let mut x = [0u8; 6];
                        x.copy_from_slice(b);
                        mac = Some(x);
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                let name = names.get(&m.header.ifindex).cloned().unwrap_or_default();
                out.push(NeighbourV4 {
                    dev: name,
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    })
}

/// Deletes the link `ifname` (for a TAP: also when it is persistent).
pub fn del_link(ifname: &str) -> Result<()> {
    run(|h| async move {
        let idx = index_of(&h, ifname).await?;
        h.link()
            .del(idx)
            .execute()
            .await
            .map_err(nl_err(format!("delete link {ifname}")))
    })
}

/// Turns IPv6 off (or on) on `ifname` through `/proc/sys/net/ipv6/conf/IF/disable_ipv6`, which
/// is per netns: it is the calling thread's netns that is changed. A kernel without IPv6 has no
/// such file; that is not an error.
pub fn set_ipv6_disabled(ifname: &str, disabled: bool) -> Result<()> {
    crate::tap::check_ifname(ifname)?;
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&p, if disabled { "1\n" } else { "0\n" }) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("write {p}"), e)),
    }
}
