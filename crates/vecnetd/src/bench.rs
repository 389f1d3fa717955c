//! `vecnetd bench`: the routed path (ethernet-input → ip4-input → ip4-lookup → ip4-rewrite →
//! output) at full vectors on one core, fed by the packet generator, with a generator-only
//! baseline measured in the same run. Figures go to BENCHMARKS.md.

use std::time::Instant;

use anyhow::{anyhow, Result};
use vecnet_graph::{clock::cpu_clocks, Clock};
use vecnet_nodes::DeviceIo;
use vecnet_vswitch::pg::{routed_config as config, routed_generator as generator};
use vecnet_vswitch::{Dataplane, DataplaneOptions, PacketGenerator};

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
