//! `show nat44 sessions [detail]`, `show nat44 static mappings`, `show nat44 interfaces`,
//! `show nat44 addresses`, in the shapes of VPP 18.01's NAT plugin.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use vecnet_nodes::L3Config;

use crate::config::{BackendSet, Proto};
use crate::runtime::{NatState, NatTables};
use crate::session::{Session, SessionKind};

/// Runs a `show nat44 …` command (`args` after `show nat44`); `None` if unknown.
pub fn show(args: &[&str], l3: &L3Config, tables: &NatTables, state: &NatState) -> Option<String> {
    match args {
        ["sessions"] => Some(sessions(tables, state, false, 0)),
        ["sessions", "detail"] => Some(sessions(tables, state, true, 0)),
        ["static", "mappings"] => Some(static_mappings(tables)),
        ["interfaces"] => Some(interfaces(l3, tables)),
        ["addresses"] => Some(addresses(tables, state)),
        _ => None,
    }
}

fn ip(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// Sessions grouped by user (the inside address of the flow), VPP's `show nat44 sessions`.
/// `now_ns` = 0 prints "last heard" as the session's own timestamp in seconds.
pub fn sessions(tables: &NatTables, state: &NatState, detail: bool, now_ns: u64) -> String {
    let mut out = String::from("NAT44 sessions:\n");
    let _ = writeln!(
        out,
        "  thread 0 vpp_main: {} sessions",
        state.sessions.len()
    );
    let mut users: BTreeMap<u32, Vec<(u32, &Session)>> = BTreeMap::new();
    for (i, s) in state.sessions.iter() {
        users.entry(s.outer.src).or_default().push((i, s));
    }
    for (user, list) in users {
        let dynamic = list
            .iter()
            .filter(|(_, s)| s.kind == SessionKind::Dynamic)
            .count();
        let _ = writeln!(
            out,
            "  {}: {} dynamic translations, {} static translations",
            ip(user),
            dynamic,
            list.len() - dynamic
        );
        if !detail {
            continue;
        }
        for (i, s) in list {
            let proto = s.outer.proto;
            // i2o = the inside side, o2i = the outside side, external host = the other end, as
            // VPP prints its in2out and out2in keys: for a Service session the backend, the
            // external address and the client; for dynamic SNAT the pod's address and port,
            // the pool address and port it is translated to, and the server.
            let (inside, outside, external) = match s.kind {
                SessionKind::Dynamic => (
                    (s.outer.src, s.outer.sport),
                    (s.inner.src, s.inner.sport),
                    (s.outer.dst, s.outer.dport),
                ),
                SessionKind::LoadBalanced | SessionKind::Identity => (
                    (s.inner.dst, s.inner.dport),
                    (s.outer.dst, s.outer.dport),
                    (s.outer.src, s.outer.sport),
                ),
            };
            let _ = writeln!(
                out,
                "    i2o {} proto {} port {} fib {}",
                ip(inside.0),
                proto,
                inside.1,
                s.vrf
            );
            let _ = writeln!(
                out,
                "    o2i {} proto {} port {} fib {}",
                ip(outside.0),
                proto,
                outside.1,
                s.vrf
            );
            let _ = writeln!(
                out,
                "       external host {}:{}",
                ip(external.0),
                external.1
            );
            if s.twice_nat {
                let _ = writeln!(
                    out,
                    "       twice-nat source {}:{}",
                    ip(s.inner.src),
                    s.inner.sport
                );
            }
            let heard = if now_ns == 0 {
                s.last_heard_ns as f64 / 1e9
            } else {
                now_ns.saturating_sub(s.last_heard_ns) as f64 / 1e9
            };
            let _ = writeln!(out, "       last heard {heard:.2}");
            let _ = writeln!(
                out,
                "       total pkts {}, total bytes {}",
                s.packets, s.bytes
            );
            let state_text = match (s.outer.proto, s.tcp_established) {
                (6, true) => " tcp established",
                (6, false) => " tcp transitory",
                _ => "",
            };
            let kind = match s.kind {
                SessionKind::LoadBalanced => "load-balancing",
                SessionKind::Identity => "identity mapping",
                SessionKind::Dynamic => "dynamic translation",
            };
            let _ = writeln!(
                out,
                "       {kind}{state_text}, timeout {} s, session index {i}",
                s.timeout_s(&tables.config.timeouts)
            );
        }
    }
    out
}

fn set_text(out: &mut String, origin: &str, set: &BackendSet) {
    match set {
        BackendSet::Drop => {
            let _ = writeln!(out, "  {origin}: drop (no usable endpoint)");
        }
        BackendSet::Reject => {
            let _ = writeln!(out, "  {origin}: reject (no endpoints)");
        }
        BackendSet::Backends(b) => {
            let total: u64 = b.iter().map(|x| x.weight.max(1) as u64).sum();
            for x in b {
                let _ = writeln!(
                    out,
                    "  local {}:{} probability {}% ({origin})",
                    x.ip,
                    x.port,
                    x.weight.max(1) as u64 * 100 / total.max(1)
                );
            }
        }
    }
}

pub fn static_mappings(tables: &NatTables) -> String {
    let mut out = String::from("NAT44 static mappings:\n");
    for cm in &tables.mappings {
        let m = &cm.m;
        let mut flags = Vec::new();
        if m.twice_nat_external {
            flags.push("twice-nat (external clients)");
        }
        if m.self_twice_nat {
            flags.push("self-twice-nat");
        }
        if m.out2in_only {
            flags.push("out2in-only");
        }
        let _ = write!(
            out,
            " {} vrf {} external {}:{}",
            m.proto.as_str(),
            m.vrf,
            m.external_ip,
            m.external_port
        );
        for f in flags {
            let _ = write!(out, " {f}");
        }
        if m.affinity_timeout > 0 {
            let _ = write!(out, " affinity {}", m.affinity_timeout);
        }
        let _ = writeln!(out, " tag {}", m.tag);
        if m.internal == m.external {
            set_text(&mut out, "all clients", &m.internal);
        } else {
            set_text(&mut out, "internal clients", &m.internal);
            set_text(&mut out, "external clients", &m.external);
        }
    }
    for id in &tables.config.identity {
        match id.port {
            Some((p, port)) => {
                let _ = writeln!(
                    out,
                    " identity mapping {} {}:{} vrf {}",
                    p.as_str(),
                    id.ip,
                    port,
                    id.vrf
                );
            }
            None => {
                let _ = writeln!(out, " identity mapping {} vrf {}", id.ip, id.vrf);
            }
        }
    }
    out
}

/// NAT roles of the interfaces (VPP: ` tap0 in out`).
pub fn interfaces(l3: &L3Config, tables: &NatTables) -> String {
    let mut out = String::from("NAT44 interfaces:\n");
    for r in &tables.roles {
        let name = l3
            .interface(r.sw_if_index)
            .map(|i| i.name.as_str())
            .unwrap_or("?");
        let role = match (r.output, r.inside, r.outside) {
            (true, _, _) => "output-feature out",
            (false, true, true) => "in out",
            (false, true, false) => "in",
            (false, false, true) => "out",
            (false, false, false) => continue,
        };
        let _ = writeln!(out, " {name} {role}");
    }
    out
}

fn addresses(tables: &NatTables, state: &NatState) -> String {
    let mut out = String::from("NAT44 pool addresses:\n");
    let busy = |addr: Ipv4Addr, proto: Proto| {
        state
            .sessions
            .iter()
            .filter(|(_, s)| s.outer.proto == proto.ip_proto() && (s.inner.src == u32::from(addr)))
            .count()
    };
    let one = |out: &mut String, a: Ipv4Addr| {
        let _ = writeln!(out, "{a}");
        let _ = writeln!(out, "  tenant VRF independent");
        for p in [Proto::Udp, Proto::Tcp, Proto::Icmp] {
            let _ = writeln!(out, "  {} busy {} ports", busy(a, p), p.as_str());
        }
    };
    for &a in &tables.config.pool {
        one(&mut out, a);
    }
    out.push_str("NAT44 twice-nat pool addresses:\n");
    for &a in &tables.config.twice_nat_pool {
        one(&mut out, a);
    }
    out
}
