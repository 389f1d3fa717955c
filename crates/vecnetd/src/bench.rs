//! `vecnetd bench`: graph benchmarks on one core, fed by the packet generator, each case measured
//! alternately with a generator-only baseline and the routed path in the same run (ratios, not
//! absolute numbers across days: these machines are noisy). Figures go to BENCHMARKS.md.
//!
//! Cases: `routed` (ethernet-input → ip4-input → ip4-lookup → ip4-rewrite → output), `nat`
//! (established flows through nat44-out2in DNAT), `seed` (the same with the reflective ACL on the
//! pod's input and a global table on tap0's output: the seed's path), `nat-new` (every
//! packet a new connection: session creation and load balancing), `nat-10k` and `nat-100k`
//! (established flows spread over 10 000 / 100 000 Services × 10 endpoints).

use std::time::Instant;

use anyhow::{anyhow, Result};
use vecnet_graph::{clock::cpu_clocks, BufferPool, Clock};
use vecnet_nodes::DeviceIo;
use vecnet_vswitch::pg::{nat_config, nat_generator, routed_config, routed_generator, seed_config};
use vecnet_vswitch::{Dataplane, DataplaneConfig, DataplaneOptions, PacketGenerator};

#[derive(clap::Args)]
pub struct Args {
    /// Packets per measured run (established cases).
    #[arg(long, default_value_t = 10_000_000)]
    packets: u64,
    /// Distinct flows of the established cases.
    #[arg(long, default_value_t = 10_000)]
    flows: u32,
    /// Measured runs of each case; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cases to run (comma-separated): routed, nat, seed, nat-new, seed-new, nat-10k, nat-100k,
    /// all; `render` times the control plane (10 k Services, 1 k policies) instead; `etcd`
    /// (root, etcd installed) times network programming through etcd on a running vecnetd.
    #[arg(long, default_value = "all")]
    cases: String,
    /// Services of the `etcd` case.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Single changes of the `etcd` case.
    #[arg(long, default_value_t = 200)]
    changes: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    mpps: f64,
    cycles_per_packet: f64,
    graph_clocks_per_packet: f64,
    vectors_per_call: f64,
}

/// Runs `packets` packets through a fresh data plane after `warm` packets of warm-up.
fn measure(
    cfg: &DataplaneConfig,
    mut pg: PacketGenerator,
    warm: u64,
    packets: u64,
) -> Result<(Sample, String)> {
    pg.remaining = warm + packets;
    let opts = DataplaneOptions {
        buffers: 4096,
        trace_capacity: 16,
        clock: Clock::real(),
    };
    let mut dp = Dataplane::new(opts, Box::new(pg)).map_err(|e| anyhow!("{e}"))?;
    dp.apply(cfg).map_err(|e| anyhow!("{e}"))?;
    let mut w = 0;
    while w < warm {
        let got = dp.run_once() as u64;
        if got == 0 {
            break;
        }
        w += got;
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
    let dropped: u64 = dp.graph.drop_counters().iter().sum();
    if dropped > 0 {
        return Err(anyhow!(
            "{dropped} packets dropped:\n{}",
            dp.graph.show_errors()
        ));
    }
    let (mut clocks, mut calls, mut vectors) = (0u64, 0u64, 0u64);
    let input = dp.nodes.virtio_input;
    for i in 0..dp.graph.node_count() as u32 {
        let s = dp.graph.stats(i);
        if i != input {
            clocks += s.clocks;
        }
        calls += s.calls;
        vectors += s.vectors;
    }
    let n = n.max(1);
    Ok((
        Sample {
            mpps: n as f64 / secs / 1e6,
            cycles_per_packet: cycles / n as f64,
            graph_clocks_per_packet: clocks as f64 / n as f64,
            vectors_per_call: vectors as f64 / calls.max(1) as f64,
        },
        dp.graph.show_runtime(0, secs),
    ))
}

/// The generator and the null sink alone: what every figure contains besides the graph.
fn baseline(packets: u64) -> Sample {
    let mut pg = routed_generator(1000);
    pg.remaining = packets;
    let mut pool = BufferPool::new(4096);
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
    Sample {
        mpps: n as f64 / t0.elapsed().as_secs_f64() / 1e6,
        cycles_per_packet: cycles / n.max(1) as f64,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Case {
    name: &'static str,
    what: String,
    run: Box<dyn Fn() -> Result<(Sample, String)>>,
}

pub fn run(a: Args) -> Result<()> {
    let runs = a.runs.max(1);
    let (packets, flows) = (a.packets, a.flows.max(1));
    let wanted: Vec<&str> = a.cases.split(',').map(str::trim).collect();
    let all = wanted.contains(&"all");
    let mut cases: Vec<Case> = Vec::new();
    let want = |n: &str| all || wanted.contains(&n);
    if want("routed")
        || want("nat")
        || want("seed")
        || want("nat-new")
        || want("nat-10k")
        || want("nat-100k")
    {
        // The routed path is the in-run reference of every other case.
        cases.push(Case {
            name: "routed",
            what: format!("{flows} flows over {flows} /32 routes"),
            run: Box::new(move || {
                measure(
                    &routed_config(flows),
                    routed_generator(flows),
                    64 * 256,
                    packets,
                )
            }),
        });
    }
    if want("nat") {
        cases.push(Case {
            name: "nat",
            what: format!("{flows} established flows to 1 Service x 10 endpoints"),
            run: Box::new(move || {
                measure(
                    &nat_config(1, 10, 1 << 20),
                    nat_generator(1, flows),
                    flows as u64,
                    packets,
                )
            }),
        });
    }
    if want("seed") {
        cases.push(Case {
            name: "seed",
            what: format!("{flows} established flows, seed path: ACL in (reflect) + NAT + ACL out, 1 M-session tables"),
            run: Box::new(move || measure(&seed_config(1, 10, 1 << 20), nat_generator(1, flows), flows as u64, packets)),
        });
    }
    if want("nat-new") {
        let n = 60_000u32;
        cases.push(Case {
            name: "nat-new",
            what: format!(
                "{n} new connections (each packet creates a session) to 1 Service x 10 endpoints"
            ),
            run: Box::new(move || {
                measure(
                    &nat_config(1, 10, 1 << 20),
                    nat_generator(1, n),
                    0,
                    n as u64,
                )
            }),
        });
    }
    for (name, services) in [("nat-10k", 10_000u32), ("nat-100k", 100_000u32)] {
        if want(name) {
            let f = flows.max(services);
            cases.push(Case {
                name,
                what: format!(
                    "{f} established flows spread over {services} Services x 10 endpoints"
                ),
                run: Box::new(move || {
                    measure(
                        &nat_config(services, 10, 1 << 20),
                        nat_generator(services, f),
                        f as u64,
                        packets,
                    )
                }),
            });
        }
    }
    if wanted.contains(&"etcd") {
        print!("{}", crate::bench_etcd::run(a.services, a.changes)?);
        if wanted.len() == 1 {
            return Ok(());
        }
    }
    if wanted.contains(&"render") {
        print!("{}", render_timings()?);
        if wanted.len() == 1 {
            return Ok(());
        }
    }
    if want("seed-new") {
        let n = 60_000u32;
        cases.push(Case {
            name: "seed-new",
            what: format!("{n} new connections on the seed path (ACL reflect + NAT sessions created per packet)"),
            run: Box::new(move || measure(&seed_config(1, 10, 1 << 20), nat_generator(1, n), 0, n as u64)),
        });
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("vecnetd bench: {runs} runs per case, medians; 60-byte frames; one core; cpu: {cpu}");
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    let mut base = Vec::new();
    let mut runtimes = vec![String::new(); cases.len()];
    // Alternate the cases so that machine noise hits all alike.
    for _ in 0..runs {
        base.push(baseline(packets.min(5_000_000)));
        for (k, c) in cases.iter().enumerate() {
            let (s, r) = (c.run)()?;
            samples[k].push(s);
            runtimes[k] = r;
        }
    }
    let b = median(base.iter().map(|s| s.cycles_per_packet).collect());
    println!("baseline (generator + null sink only): {b:.1} cycles/packet");
    let routed_graph = samples
        .first()
        .map(|s| median(s.iter().map(|x| x.graph_clocks_per_packet).collect()))
        .unwrap_or(0.0);
    println!(
        "{:<10} {:>8} {:>14} {:>14} {:>12} {:>10}  what",
        "case", "Mpps", "cycles/pkt", "graph clk/pkt", "vs routed", "vec/call"
    );
    for (k, c) in cases.iter().enumerate() {
        let s = &samples[k];
        let g = median(s.iter().map(|x| x.graph_clocks_per_packet).collect());
        println!(
            "{:<10} {:>8.2} {:>14.1} {:>14.1} {:>11.2}x {:>10.1}  {}",
            c.name,
            median(s.iter().map(|x| x.mpps).collect()),
            median(s.iter().map(|x| x.cycles_per_packet).collect()),
            g,
            if routed_graph > 0.0 {
                g / routed_graph
            } else {
                0.0
            },
            median(s.iter().map(|x| x.vectors_per_call).collect()),
            c.what
        );
    }
    for (k, c) in cases.iter().enumerate() {
        println!("\nshow runtime, last run of {}:\n{}", c.name, runtimes[k]);
    }
    Ok(())
}

/// Control-plane timings (`--cases render`): objects → rendered configuration → live snapshot,
/// for 10 000 Services × 10 endpoints, and 1 000 NetworkPolicies over 1 000 local pods.
pub fn render_timings() -> Result<String> {
    use crate::simulate::{plan, InterfaceSpec, KindSpec, NodeSpec, Scenario};
    use serde_json::json;
    let mut out = String::new();
    let host = InterfaceSpec {
        name: "tap0".into(),
        kind: KindSpec::Host,
        mac: None,
        peer_mac: None,
        host_ips: vec!["10.20.0.2".parse()?],
        pod: None,
        ip: None,
        sw_if_index: Some(2),
        mtu: None,
    };
    // 10 000 Services x 10 endpoints (host-network endpoints: no pod interfaces needed).
    let objects = crate::bench_etcd::service_objects(10_000);
    let sc = Scenario {
        node: NodeSpec {
            id: 1,
            name: "node1".into(),
        },
        ipam: None,
        interfaces: vec![host.clone()],
        objects,
        packets: Vec::new(),
        seed: 0,
    };
    let t0 = Instant::now();
    let p = plan(&sc)?;
    let render = t0.elapsed();
    // What the daemon does per change: its objects are parsed already.
    let mut state = vecnet_agent::model::ClusterState::default();
    for (k, v) in sc.objects.iter().enumerate() {
        state.apply(vecnet_agent::model::parse_object(k, v.clone()).map_err(|e| anyhow!("{e}"))?);
    }
    let mut cache = vecnet_agent::render::RenderCache::default();
    let t_state = Instant::now();
    let p2 = crate::simulate::plan_with_state(&sc, Some(&mut state), Some(&mut cache))?;
    let rerender = t_state.elapsed();
    // One EndpointSlice changes (a rollout step): the cache keeps the other 9 999 Services.
    let one = crate::bench_etcd::slice(17, 1);
    state.apply(vecnet_agent::model::parse_object(0, one).map_err(|e| anyhow!("{e}"))?);
    let t_one = Instant::now();
    let p3 = crate::simulate::plan_with_state(&sc, Some(&mut state), Some(&mut cache))?;
    let one_change = t_one.elapsed();
    if p3.config == p2.config {
        anyhow::bail!("the changed EndpointSlice did not change the configuration");
    }
    if p2.config != p.config {
        anyhow::bail!("rendering from parsed objects differs from rendering from JSON");
    }
    let mut dp = Dataplane::new(
        DataplaneOptions {
            buffers: 1024,
            trace_capacity: 16,
            clock: Clock::real(),
        },
        Box::new(PacketGenerator::new(Vec::new(), None, 1)),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let t1 = Instant::now();
    dp.apply(&p.config).map_err(|e| anyhow!("{e}"))?;
    let apply = t1.elapsed();
    out.push_str(&format!(
        "10000 Services x 10 endpoints ({} mappings): objects -> configuration {:.0} ms, configuration -> live snapshot {:.0} ms, total {:.0} ms\n",
        p.config.nat.mappings.len(),
        render.as_secs_f64() * 1e3,
        apply.as_secs_f64() * 1e3,
        (render + apply).as_secs_f64() * 1e3
    ));
    out.push_str(&format!(
        "  per change in the daemon (objects parsed already): first render {:.0} ms, one EndpointSlice changed {:.1} ms (render cache), snapshot {:.0} ms\n",
        rerender.as_secs_f64() * 1e3,
        one_change.as_secs_f64() * 1e3,
        apply.as_secs_f64() * 1e3
    ));
    // 1 000 local pods, 1 000 NetworkPolicies (each selects 10 pods, allows from another 10).
    let mut interfaces = vec![host];
    let mut objects = Vec::new();
    for k in 0..1000u32 {
        interfaces.push(InterfaceSpec {
            name: format!("tap{}", k + 1),
            kind: KindSpec::Pod,
            mac: None,
            peer_mac: None,
            host_ips: Vec::new(),
            pod: Some(format!("ns{}/pod{k}", k % 10)),
            ip: None,
            sw_if_index: Some(5 + k),
            mtu: None,
        });
        objects.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod{k}"), "namespace": format!("ns{}", k % 10), "labels": {"app": format!("a{}", k / 10), "tier": format!("t{}", k % 7)}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}}));
        objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("pol{k}"), "namespace": format!("ns{}", k % 10)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("a{}", k / 10)}}, "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": format!("t{}", k % 7)}}}], "ports": [{"protocol": "TCP", "port": "http"}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8080}]}]}}));
    }
    // The pod slice of node 1 holds 252 pods: spread the 1000 over addresses of a /16 pod slice.
    let ipam = vecnet_agent::ipam::IpamConfig {
        pod_subnet_one_node_prefix_len: 20,
        ..Default::default()
    };
    for (k, i) in interfaces.iter_mut().skip(1).enumerate() {
        i.ip = Some(std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(10, 1, 16, 2)) + k as u32,
        ));
    }
    let sc = Scenario {
        node: NodeSpec {
            id: 1,
            name: "node1".into(),
        },
        ipam: Some(ipam),
        interfaces,
        objects,
        packets: Vec::new(),
        seed: 0,
    };
    let t0 = Instant::now();
    let p = plan(&sc)?;
    let render = t0.elapsed();
    let t1 = Instant::now();
    dp.apply(&p.config).map_err(|e| anyhow!("{e}"))?;
    let apply = t1.elapsed();
    let rules: usize = p.config.acl.acls.iter().map(|a| a.rules.len()).sum();
    out.push_str(&format!(
        "1000 NetworkPolicies over 1000 local pods ({} ACLs, {} rules): objects -> configuration {:.0} ms, configuration -> live snapshot {:.0} ms\n",
        p.config.acl.acls.len(),
        rules,
        render.as_secs_f64() * 1e3,
        apply.as_secs_f64() * 1e3
    ));
    Ok(out)
}
