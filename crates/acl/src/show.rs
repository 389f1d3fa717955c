//! `show acl-plugin acl|sessions|interface` in VPP's shapes (18.01 `acl_print_acl`,
//! `acl_plugin_show_interface`; the session listing is vecnet's, with VPP's totals lines).

use std::fmt::Write;
use std::net::Ipv4Addr;

use vecnet_nodes::L3Config;

use crate::config::{Acl, Action};
use crate::key::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::runtime::{AclState, AclTables, Direction};

/// Sessions listed by default by `show acl-plugin sessions`.
const DEFAULT_MAX_SESSIONS: usize = 100;

/// Runs a `show acl-plugin …` command (`args` after `show acl-plugin`); `None` if unknown.
pub fn show(args: &[&str], l3: &L3Config, tables: &AclTables, state: &AclState) -> Option<String> {
    match args {
        ["acl"] => Some(show_acls(tables, None)),
        ["acl", "index", n] => Some(show_acls(tables, Some(n.parse().ok()?))),
        ["interface", rest @ ..] => {
            let mut sw = None;
            let mut with_acls = false;
            let mut it = rest.iter();
            while let Some(w) = it.next() {
                match *w {
                    "sw_if_index" => sw = Some(it.next()?.parse().ok()?),
                    "acl" => with_acls = true,
                    _ => return None,
                }
            }
            Some(show_interfaces(l3, tables, sw, with_acls))
        }
        ["sessions"] => Some(show_sessions(l3, tables, state, DEFAULT_MAX_SESSIONS)),
        ["sessions", "max", n] => Some(show_sessions(l3, tables, state, n.parse().ok()?)),
        _ => None,
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Deny => "deny",
        Action::Permit => "permit",
        Action::PermitReflect => "permit+reflect",
    }
}

/// `acl_print_acl`: the header line and one line per rule (`%4d`, as 18.01).
pub fn print_acl(out: &mut String, index: u32, acl: &Acl) {
    let _ = writeln!(
        out,
        "acl-index {} count {} tag {{{}}}",
        index,
        acl.rules.len(),
        acl.tag
    );
    for (j, r) in acl.rules.iter().enumerate() {
        let _ = write!(
            out,
            "  {:4}: ipv4 {} src {}/{} dst {}/{} proto {} sport {}",
            j,
            action_name(r.action),
            r.src.0,
            r.src.1,
            r.dst.0,
            r.dst.1,
            r.proto,
            r.src_ports.0
        );
        if r.src_ports.0 != r.src_ports.1 {
            let _ = write!(out, "-{}", r.src_ports.1);
        }
        let _ = write!(out, " dport {}", r.dst_ports.0);
        if r.dst_ports.0 != r.dst_ports.1 {
            let _ = write!(out, "-{}", r.dst_ports.1);
        }
        if r.tcp_flags != (0, 0) {
            let _ = write!(out, " tcpflags {} mask {}", r.tcp_flags.0, r.tcp_flags.1);
        }
        out.push('\n');
    }
}

fn join(v: &[u32]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_acls(tables: &AclTables, only: Option<u32>) -> String {
    let mut out = String::new();
    let span = tables.interface_span() as u32;
    for (i, acl) in tables.config.acls.iter().enumerate() {
        let i = i as u32;
        if only.is_some_and(|o| o != i) {
            continue;
        }
        print_acl(&mut out, i, acl);
        for (dir, word) in [
            (Direction::Input, "inbound"),
            (Direction::Output, "outbound"),
        ] {
            let on: Vec<u32> = (0..span)
                .filter(|&sw| tables.acls_on(sw, dir).contains(&i))
                .collect();
            if !on.is_empty() {
                let _ = writeln!(out, "  applied {word} on sw_if_index: {}", join(&on));
            }
        }
    }
    out
}

fn show_interfaces(
    l3: &L3Config,
    tables: &AclTables,
    only: Option<u32>,
    with_acls: bool,
) -> String {
    let mut out = String::new();
    let span = l3.interfaces.len().max(tables.interface_span()) as u32;
    for sw in 0..span {
        if only.is_some_and(|o| o != sw) {
            continue;
        }
        if l3.interface(sw).is_none() && !tables.is_bound(sw) {
            continue;
        }
        let _ = writeln!(out, "sw_if_index {sw}:");
        for (dir, word) in [(Direction::Input, "input"), (Direction::Output, "output")] {
            let acls = tables.acls_on(sw, dir);
            if acls.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {word} acl(s): {}", join(acls));
            if with_acls {
                out.push('\n');
                for &a in acls {
                    if let Some(acl) = tables.config.acls.get(a as usize) {
                        print_acl(&mut out, a, acl);
                    }
                }
                out.push('\n');
            }
        }
    }
    out
}

fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn show_sessions(l3: &L3Config, tables: &AclTables, st: &AclState, max: usize) -> String {
    let mut out = String::new();
    let c = &st.counters;
    let cfg = &tables.config;
    let t = &cfg.timeouts;
    let _ = writeln!(
        out,
        "Sessions total: add {} - del {} = {}",
        c.adds,
        c.dels,
        c.adds.saturating_sub(c.dels)
    );
    let limit = cfg.max_sessions;
    let reserve = u64::from(limit) * u64::from(cfg.reserved_for_control.min(100)) / 100;
    let _ = writeln!(
        out,
        "Session table: {} of {} in use, {} reserved for control traffic, {} refused (table full)",
        st.len(),
        limit,
        reserve,
        c.refused_full
    );
    let _ = writeln!(
        out,
        "Timeouts: udp idle {} s, tcp idle {} s, tcp transient {} s",
        t.udp_idle, t.tcp_idle, t.tcp_transient
    );
    let _ = writeln!(
        out,
        "Deleted: expired {}, recycled {}, stale {}; requeued by the sweep {}",
        c.expired, c.recycled, c.stale_removed, c.requeued
    );
    out.push_str("\nPer-thread data:\nThread #0:\n  connection add/del stats:\n");
    for (sw, (&a, &d)) in c.adds_by_if.iter().zip(&c.dels_by_if).enumerate() {
        if a == 0 && d == 0 {
            continue;
        }
        let name = l3.interface(sw as u32).map_or("", |i| i.name.as_str());
        let _ = write!(
            out,
            "    sw_if_index {sw}: add {a} - del {d} = {}",
            a.saturating_sub(d)
        );
        if !name.is_empty() {
            let _ = write!(out, " ({name})");
        }
        out.push('\n');
    }
    let n = st.class_counts();
    let _ = writeln!(
        out,
        "  connection timeout type lists: udp idle {}, tcp idle {}, tcp transient {}",
        n[0], n[1], n[2]
    );
    if st.is_empty() {
        return out;
    }
    out.push_str("  sessions:\n");
    let now = st.now_ns();
    for (shown, s) in st.sessions().enumerate() {
        if shown == max {
            let _ = writeln!(
                out,
                "  ({} more sessions not shown)",
                st.len() as usize - shown
            );
            break;
        }
        let (src, dst) = (Ipv4Addr::from(s.src), Ipv4Addr::from(s.dst));
        let _ = write!(
            out,
            "    {}: sw_if_index {} {} ",
            s.index,
            s.sw_if_index,
            if s.created_on_input {
                "input"
            } else {
                "output"
            }
        );
        let _ = match s.proto {
            PROTO_TCP | PROTO_UDP => write!(
                out,
                "{} {}:{} -> {}:{}",
                if s.proto == PROTO_TCP { "tcp" } else { "udp" },
                src,
                s.sport,
                dst,
                s.dport
            ),
            PROTO_ICMP => write!(
                out,
                "icmp {} -> {} type {} code {}",
                src, dst, s.sport, s.dport
            ),
            p => write!(out, "proto {p} {src} -> {dst}"),
        };
        if s.proto == PROTO_TCP {
            let _ = write!(
                out,
                " flags seen in 0x{:02x} out 0x{:02x}",
                s.tcp_seen[1], s.tcp_seen[0]
            );
        }
        let timeout = s.class.timeout_ns(t);
        let idle = now.saturating_sub(s.last_active_ns);
        let _ = write!(
            out,
            ", {} {} s, last active {} ago, age {}",
            s.class.name(),
            timeout / 1_000_000_000,
            secs(idle),
            secs(now.saturating_sub(s.created_ns))
        );
        if s.control {
            out.push_str(", control");
        }
        if s.stale {
            out.push_str(", stale (interface lost its ACLs)");
        } else if idle >= timeout {
            out.push_str(", expired (removal pending)");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AclBinding, AclConfig, AclRule};
    use std::collections::HashMap;

    fn l3() -> L3Config {
        L3Config {
            interfaces: Vec::new(),
            fib: vecnet_nodes::Fib {
                tables: vecnet_fib::Ip4Fib::new(0),
                load_balances: Vec::new(),
                adjacencies: Vec::new(),
                adj_by_neighbour: HashMap::new(),
                drop_lb: 0,
            },
            static_neighbours: HashMap::new(),
            seeded_neighbours: HashMap::new(),
            epoch: 0,
        }
    }

    #[test]
    fn acl_and_interface_text() {
        let mut r = AclRule::any(Action::Permit);
        r.src = ("10.1.1.3".parse().unwrap(), 32);
        r.proto = 6;
        r.dst_ports = (8080, 8080);
        r.tcp_flags = (2, 18);
        let cfg = AclConfig {
            acls: vec![
                Acl {
                    tag: "vecnet-policy-REFLECTION".into(),
                    rules: vec![AclRule::any(Action::PermitReflect)],
                },
                Acl {
                    tag: "t".into(),
                    rules: vec![AclRule::any(Action::Deny), r],
                },
            ],
            bindings: vec![
                AclBinding {
                    sw_if_index: 2,
                    input: vec![0],
                    output: vec![1],
                },
                AclBinding {
                    sw_if_index: 6,
                    input: vec![0],
                    output: vec![],
                },
            ],
            ..AclConfig::default()
        };
        let t = AclTables::build(&cfg);
        let st = AclState::new(&cfg);
        let l3 = l3();
        assert_eq!(
            show(&["acl"], &l3, &t, &st).unwrap(),
            "acl-index 0 count 1 tag {vecnet-policy-REFLECTION}\n\
             \x20    0: ipv4 permit+reflect src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\
             \x20 applied inbound on sw_if_index: 2, 6\n\
             acl-index 1 count 2 tag {t}\n\
             \x20    0: ipv4 deny src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\
             \x20    1: ipv4 permit src 10.1.1.3/32 dst 0.0.0.0/0 proto 6 sport 0-65535 dport 8080 tcpflags 2 mask 18\n\
             \x20 applied outbound on sw_if_index: 2\n"
        );
        assert!(show(&["acl", "index", "1"], &l3, &t, &st)
            .unwrap()
            .starts_with("acl-index 1 "));
        assert_eq!(
            show(&["interface"], &l3, &t, &st).unwrap(),
            "sw_if_index 2:\n  input acl(s): 0\n  output acl(s): 1\nsw_if_index 6:\n  input acl(s): 0\n"
        );
        assert_eq!(
            show(&["interface", "sw_if_index", "6", "acl"], &l3, &t, &st).unwrap(),
            "sw_if_index 6:\n  input acl(s): 0\n\nacl-index 0 count 1 tag {vecnet-policy-REFLECTION}\n\
             \x20    0: ipv4 permit+reflect src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535\n\n"
        );
        assert!(show(&["sessions"], &l3, &t, &st)
            .unwrap()
            .starts_with("Sessions total: add 0 - del 0 = 0\n"));
        assert!(show(&["bogus"], &l3, &t, &st).is_none());
        assert!(show(&["acl", "index", "x"], &l3, &t, &st).is_none());
    }
}
