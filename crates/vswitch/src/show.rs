//! `show interface`, `show interface address`, `show ip fib`, `show ip arp` in VPP's shapes.

use std::fmt::Write;
use std::net::Ipv4Addr;

use vecnet_nodes::config::{Dpo, L3Config};
use vecnet_nodes::L3State;

use crate::dataplane::Dataplane;

/// VPP centres with the extra space on the right, as Rust's `{:^}` does.
fn center(s: &str, w: usize) -> String {
    format!("{s:^w$}")
}

impl Dataplane {
    pub fn show_interface(&self) -> String {
        let snap = self.snapshot();
        let st = &self.worker.l3;
        let mut out = String::new();
        let header = format!(
            "{}{}{}{}{}",
            center("Name", 32),
            center("Idx", 5),
            center("State", 10),
            center("Counter", 21),
            center("Count", 16)
        );
        let _ = writeln!(out, "{}", header.trim_end());
        let mut ifs: Vec<_> = snap.l3.interfaces.iter().flatten().collect();
        ifs.sort_by(|a, b| a.name.cmp(&b.name));
        for i in ifs {
            let state = if i.admin_up { "up" } else { "down" };
            let mut line = format!(
                "{:<32}{}{}",
                i.name,
                center(&i.sw_if_index.to_string(), 5),
                center(state, 10)
            );
            let c = st
                .if_counters
                .get(i.sw_if_index as usize)
                .copied()
                .unwrap_or_default();
            let indent = line.len();
            let mut first = true;
            for (name, v) in [
                ("rx packets", c.rx_packets),
                ("rx bytes", c.rx_bytes),
                ("tx packets", c.tx_packets),
                ("tx bytes", c.tx_bytes),
            ] {
                if v == 0 {
                    continue;
                }
                if !first {
                    line.push('\n');
                    line.push_str(&" ".repeat(indent));
                }
                first = false;
                let _ = write!(line, "{name:<16}{v:>16}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    pub fn show_interface_address(&self) -> String {
        let mut out = String::new();
        let mut ifs: Vec<_> = self.snapshot().l3.interfaces.iter().flatten().collect();
        ifs.sort_by(|a, b| a.name.cmp(&b.name));
        for i in ifs {
            let _ = writeln!(
                out,
                "{} ({}):",
                i.name,
                if i.admin_up { "up" } else { "dn" }
            );
            for (a, l) in &i.ip4 {
                let _ = writeln!(out, "  {a}/{l}");
            }
        }
        out
    }

    /// `show ip fib [table N] [prefix]`.
    pub fn show_ip_fib(&self, table: Option<u32>, filter: Option<(Ipv4Addr, u8, bool)>) -> String {
        let cfg = &self.snapshot().l3;
        let st = &self.worker.l3;
        let mut out = String::new();
        let ids: Vec<u32> = cfg.fib.tables.table_ids().collect();
        for id in ids {
            if table.is_some_and(|t| t != id) {
                continue;
            }
            let Some(t) = cfg.fib.tables.table(id) else {
                continue;
            };
            let _ = writeln!(
                out,
                "ipv4-VRF:{id}, fib_index:{id}, flow hash:[src dst sport dport proto ] locks:[src:default-route:1, ]"
            );
            for (prefix, len, lb) in t.routes() {
                let p = Ipv4Addr::from(prefix);
                if let Some((fp, fl, exact)) = filter {
                    let m = vecnet_nodes::config::prefix_mask(len);
                    let covers = fl >= len && u32::from(fp) & m == prefix;
                    // `a.b.c.d/len` shows that entry; a bare address shows the entry that
                    // forwards it (the longest match).
                    let shown = if exact {
                        len == fl && covers
                    } else {
                        covers && t.lookup(u32::from(fp)) == lb
                    };
                    if !shown {
                        continue;
                    }
                }
                let _ = writeln!(out, "{p}/{len}");
                format_lb_chain(&mut out, cfg, st, lb);
            }
        }
        out
    }

    pub fn show_ip_arp(&self) -> String {
        let cfg = &self.snapshot().l3;
        let st = &self.worker.l3;
        let now = self.graph.clock.now_ns();
        let mut out = String::new();
        let header = format!(
            "{}{}{}{}{}",
            center("Time", 12),
            center("IP4", 16),
            center("Flags", 6),
            center("Ethernet", 20),
            center("Interface", 24)
        );
        let _ = writeln!(out, "{}", header.trim_end());
        let mut rows: Vec<(u32, Ipv4Addr, f64, &str, vecnet_wire::MacAddr)> = Vec::new();
        for (&(sw, ip), &mac) in &cfg.static_neighbours {
            rows.push((sw, ip, 0.0, "S", mac));
        }
        for (&(sw, ip), n) in &st.neighbours {
            let age = now.saturating_sub(n.updated_ns) as f64 / 1e9;
            rows.push((sw, ip, age, "D", n.mac));
        }
        rows.sort_by_key(|r| (r.0, r.1));
        for (sw, ip, t, flags, mac) in rows {
            let ifname = cfg.interface(sw).map(|i| i.name.as_str()).unwrap_or("?");
            let _ = writeln!(
                out,
                "{}{}{}{}{}",
                center(&format!("{t:.4}"), 12),
                center(&ip.to_string(), 16),
                center(flags, 6),
                center(&mac.to_string(), 20),
                ifname
            );
        }
        out
    }
}

fn format_lb_chain(out: &mut String, cfg: &L3Config, st: &L3State, lb: u32) {
    let Some(l) = cfg.fib.load_balances.get(lb as usize) else {
        return;
    };
    let (pkts, bytes) = st.lb_counters.get(lb as usize).copied().unwrap_or((0, 0));
    out.push_str("  unicast-ip4-chain\n");
    let _ = writeln!(
        out,
        "  [@0]: dpo-load-balance: [proto:ip4 index:{lb} buckets:{} uRPF:{lb} to:[{pkts}:{bytes}]]",
        l.buckets.len()
    );
    for (k, dpo) in l.buckets.iter().enumerate() {
        let _ = write!(out, "    [{k}] ");
        format_dpo(out, cfg, st, *dpo);
        out.push('\n');
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn format_dpo(out: &mut String, cfg: &L3Config, st: &L3State, dpo: Dpo) {
    let ifname = |sw: u32| {
        cfg.interface(sw)
            .map(|i| i.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    match dpo {
        Dpo::Drop => out.push_str("[@0]: dpo-drop ip4"),
        Dpo::Reject => out.push_str("[@0]: dpo-reject ip4 (icmp port-unreachable)"),
        Dpo::Receive { sw_if_index, addr } => {
            let _ = write!(out, "[@2]: dpo-receive: {addr} on {}", ifname(sw_if_index));
        }
        Dpo::Glean { sw_if_index } => {
            let mac = cfg
                .interface(sw_if_index)
                .map(|i| i.mac.0)
                .unwrap_or([0; 6]);
            let _ = write!(
                out,
                "[@3]: ipv4-glean: {}: ffffffffffff{}0806",
                ifname(sw_if_index),
                hex(&mac)
            );
        }
        Dpo::Adjacency(a) => {
            let Some(adj) = cfg.fib.adjacencies.get(a as usize) else {
                out.push_str("[@0]: invalid adjacency");
                return;
            };
            match st.rewrites.get(a as usize) {
                Some(rw) if rw.valid => {
                    let _ = write!(
                        out,
                        "[@5]: ipv4 via {} {}: {}",
                        adj.next_hop,
                        ifname(adj.sw_if_index),
                        hex(&rw.bytes)
                    );
                }
                _ => {
                    let _ = write!(
                        out,
                        "[@6]: arp-ipv4: via {} {}",
                        adj.next_hop,
                        ifname(adj.sw_if_index)
                    );
                }
            }
        }
        Dpo::LoadBalance(l) => {
            let n = cfg
                .fib
                .load_balances
                .get(l as usize)
                .map(|x| x.buckets.len())
                .unwrap_or(0);
            let _ = write!(
                out,
                "[@4]: dpo-load-balance: [proto:ip4 index:{l} buckets:{n} uRPF:{l}]"
            );
        }
    }
}
