//! `vecnetd bench`: the routed path (ethernet-input → ip4-input → ip4-lookup → ip4-rewrite →
//! output) at full vectors on one core, fed by the packet generator, with a generator-only
//! baseline measured in the same run. Figures go to BENCHMARKS.md.

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{anyhow, Result};
use vecnet_graph::{clock::cpu_clocks, Clock};
use vecnet_nodes::{DeviceIo, InterfaceKind};
use vecnet_vswitch::{
    Dataplane, DataplaneConfig, DataplaneOptions, InterfaceConfig, NeighbourConfig,
    PacketGenerator, Path, RouteConfig,
};
use vecnet_wire::MacAddr;

#[derive(clap::Args)]
pub struct Args {
    /// Packets per measured run.
    #[arg(long, default_value_t = 20_000_000)]
    packets: u64,
    /// Distinct flows (destination addresses, one /32 route each).
    #[arg(long, default_value_t = 10_000)]
    flows: u32,
    /// Measured runs of each case; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const TAP0_MAC: MacAddr = MacAddr([0x02, 0x23, 0x45, 0x67, 0x89, 0x42]);
const TAP2_MAC: MacAddr = MacAddr([0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f]);
const POD_MAC: MacAddr = MacAddr([0, 0, 0, 0, 0, 2]);

fn dst(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// A 60-byte frame (64 bytes on the wire with the FCS): Ethernet + IPv4 + TCP + 6 bytes.
fn frame(dst_ip: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&TAP2_MAC.0);
    f.extend_from_slice(&POD_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 1, 1, 3]);
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let c = vecnet_wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 26];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x10;
    f.extend_from_slice(&tcp);
    f
}

pub fn config(flows: u32) -> DataplaneConfig {
    let mut cfg = DataplaneConfig::default();
    let mut tap0 = InterfaceConfig::new("tap0", 2, InterfaceKind::Host, TAP0_MAC);
    tap0.ip4 = vec![(Ipv4Addr::new(172, 30, 1, 1), 24)];
    let mut tap2 = InterfaceConfig::new("tap2", 6, InterfaceKind::Pod, TAP2_MAC);
    tap2.ip4 = vec![(Ipv4Addr::new(10, 1, 1, 1), 32)];
    cfg.interfaces = vec![tap0, tap2];
    let nh = Ipv4Addr::new(172, 30, 1, 2);
    cfg.seeded_neighbours.push(NeighbourConfig {
        sw_if_index: 2,
        ip: nh,
        mac: MacAddr([0x3e, 0x1b, 0x70, 0x2d, 0x4d, 0x51]),
    });
    for i in 0..flows {
        cfg.routes.push(RouteConfig::new(
            dst(i),
            32,
            Path::Attached {
                next_hop: nh,
                sw_if_index: 2,
            },
        ));
    }
    cfg
}

pub fn generator(flows: u32) -> PacketGenerator {
    let templates = (0..flows)
        .map(|i| (6u32, frame(dst(i), 1024 + (i % 50_000) as u16)))
        .collect();
    PacketGenerator::new(templates, None, 1)
}

struct Sample {
    mpps: f64,
    cycles_per_packet: f64,
    graph_clocks_per_packet: f64,
    vectors_per_call: f64,
}

fn routed(packets: u64, flows: u32) -> Result<(Sample, String)> {
    let mut pg = generator(flows);
    pg.remaining = packets;
    let opts = DataplaneOptions {
        buffers: 4096,
        trace_capacity: 16,
        clock: Clock::real(),
    };
    let mut dp = Dataplane::new(opts, Box::new(pg)).map_err(|e| anyhow!("{e}"))?;
    dp.apply(&config(flows)).map_err(|e| anyhow!("{e}"))?;
    // Warm caches and the trie before measuring.
    for _ in 0..64 {
        dp.run_once();
    }
    dp.graph.clear_counters();
    let t0 = Instant::now();
    let c0 = cpu_clocks();
    let mut n = 0u64;
    loop {
        let got = dp.run_once() as u64;
        if got == 0 {
            break;
        }
        n += got;
    }
    let cycles = cpu_clocks().wrapping_sub(c0) as f64;
    let secs = t0.elapsed().as_secs_f64();
    let sent = dp
        .device_mut()
        .as_any_mut()
        .downcast_mut::<PacketGenerator>()
        .map(|p| p.sent_packets)
        .unwrap_or(0);
    if sent < n {
        return Err(anyhow!(
            "only {sent} of {n} packets reached the output: the routed path dropped packets"
        ));
    }
    let mut graph_clocks = 0u64;
    let (mut calls, mut vectors) = (0u64, 0u64);
    for name in [
        "ethernet-input",
        "ip4-input",
        "ip4-lookup",
        "ip4-rewrite",
        "tap0-output",
    ] {
        let i = dp
            .graph
            .node_index(name)
            .ok_or_else(|| anyhow!("no node {name}"))?;
        let s = dp.graph.stats(i);
        graph_clocks += s.clocks;
        calls += s.calls;
        vectors += s.vectors;
    }
    let runtime = dp.graph.show_runtime(0, secs);
    Ok((
        Sample {
            mpps: n as f64 / secs / 1e6,
            cycles_per_packet: cycles / n as f64,
            graph_clocks_per_packet: graph_clocks as f64 / n as f64,
            vectors_per_call: vectors as f64 / calls.max(1) as f64,
        },
        runtime,
    ))
}

/// The generator and the null sink alone: what the routed figure contains besides the graph.
fn baseline(packets: u64, flows: u32) -> Sample {
    let mut pg = generator(flows);
    pg.remaining = packets;
    let mut pool = vecnet_graph::BufferPool::new(4096);
    let mut frame = vec![0u32; 256];
    let t0 = Instant::now();
    let c0 = cpu_clocks();
    let mut n = 0u64;
    loop {
        let got = pg.rx_burst(&mut pool, &mut frame);
        if got == 0 {
            break;
        }
        pg.tx_burst(6, &mut pool, &frame[..got]);
        n += got as u64;
    }
    let cycles = cpu_clocks().wrapping_sub(c0) as f64;
    let secs = t0.elapsed().as_secs_f64();
    Sample {
        mpps: n as f64 / secs / 1e6,
        cycles_per_packet: cycles / n as f64,
        graph_clocks_per_packet: 0.0,
        vectors_per_call: 256.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(a: Args) -> Result<()> {
    let runs = a.runs.max(1);
    let (mut base, mut rt) = (Vec::new(), Vec::new());
    let mut last_runtime = String::new();
    // Alternate the cases so that machine noise hits both alike.
    for _ in 0..runs {
        base.push(baseline(a.packets, a.flows));
        let (s, r) = routed(a.packets, a.flows)?;
        rt.push(s);
        last_runtime = r;
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let b_cyc = median(base.iter().map(|s| s.cycles_per_packet).collect());
    let r_cyc = median(rt.iter().map(|s| s.cycles_per_packet).collect());
    let g_clk = median(rt.iter().map(|s| s.graph_clocks_per_packet).collect());
    println!(
        "vecnetd bench: routed path, {} packets x {} runs, {} flows, 60-byte frames, 1 core",
        a.packets, runs, a.flows
    );
    println!("cpu: {cpu}");
    println!(
        "baseline (generator + null sink only): {:.2} Mpps, {:.1} cycles/packet",
        median(base.iter().map(|s| s.mpps).collect()),
        b_cyc
    );
    println!(
        "routed path: {:.2} Mpps, {:.1} cycles/packet in all, graph {:.1} clocks/packet (ethernet-input..output), {:.1} vectors/call",
        median(rt.iter().map(|s| s.mpps).collect()),
        r_cyc,
        g_clk,
        median(rt.iter().map(|s| s.vectors_per_call).collect())
    );
    println!(
        "routed minus baseline: {:.1} cycles/packet; routed / baseline = {:.2}",
        r_cyc - b_cyc,
        r_cyc / b_cyc
    );
    println!("\nshow runtime of the last run:\n{last_runtime}");
    Ok(())
}
