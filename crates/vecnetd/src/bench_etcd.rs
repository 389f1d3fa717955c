//! `vecnetd bench --cases etcd`: network programming through etcd (issue: cluster state,
//! benchmarks). Root and the `etcd` binary are needed; everything runs on loopback and in a
//! network namespace of its own, removed at the end.
//!
//! 1. A real etcd and a real `vecnetd run` (this binary) with `source.kind: etcd`.
//! 2. Bulk: N Services + N EndpointSlices (10 endpoints each) written to etcd in transactions
//!    of 100 puts; the time until the data plane runs all N mappings.
//! 3. Single changes under that load: one EndpointSlice changed at a time, the next once the
//!    previous is live. For each: etcd's own delivery (put → a watcher of the bench receives the
//!    event: the baseline, measured in the same run) and end to end (put → the agent reports it
//!    programmed); the agent's own `vecnet_network_programming_duration_seconds` share from
//!    `vecnetctl stats`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, Txn, TxnOp, WatchOptions};
use serde_json::{json, Value};
use vecnet_agent::control;
use vecnet_agent::etcd::{encode_object, Layout};
use vecnet_agent::model::parse_object;
use vecnet_io::netns;

/// The Services of the render and etcd benchmarks: `n` ClusterIP Services, one port each, with
/// one EndpointSlice of 10 host-network endpoints (no pod interfaces needed).
pub fn service_objects(n: u32) -> Vec<Value> {
    let mut objects = Vec::with_capacity(2 * n as usize);
    for s in 0..n {
        objects.push(service(s));
        objects.push(slice(s, 0));
    }
    objects
}

fn service(s: u32) -> Value {
    let vip = vecnet_vswitch::pg::vip(s + 1);
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{s}"), "namespace": "default"},
        "spec": {"clusterIP": vip.to_string(), "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

/// Service `s`'s slice; `generation` shifts its endpoints (a rollout).
pub fn slice(s: u32, generation: u32) -> Value {
    let eps: Vec<_> = (0..10u32)
        .map(|e| {
            let k = s * 10 + e + generation;
            json!({"addresses": [format!("10.20.{}.{}", k / 250 % 250, k % 250 + 1)], "conditions": {"ready": true}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{s}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What the benchmark starts; stopped and removed on drop.
struct Rig {
    dir: PathBuf,
    netns: String,
    etcd: Option<Child>,
    daemon: Option<Child>,
    socket: PathBuf,
    /// `127.0.0.1:<client port>` of the etcd it started.
    etcd_endpoint: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&d),
                rustix::process::Signal::TERM,
            );
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && !matches!(d.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        let _ = netns::delete(&self.netns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn call(&self, method: &str, path: &str) -> Result<String> {
        match control::call(&self.socket, method, path, "", Duration::from_secs(30))? {
            (200, body) => Ok(body),
            (s, body) => bail!("{method} {path}: {s} {body}"),
        }
    }

    /// Changes programmed so far (the agent's count).
    fn programmed(&self) -> Result<u64> {
        let s = self.call("GET", "/v1/stats")?;
        s.split('(')
            .nth(1)
            .and_then(|x| x.split(' ').next())
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| anyhow!("unexpected stats: {s}"))
    }

    /// (sum, count) of a histogram in `/metrics`.
    fn histogram(&self, name: &str) -> Result<(f64, f64)> {
        let m = self.call("GET", "/metrics")?;
        let get = |suffix: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| anyhow!("no {name}_{suffix} in /metrics"))
        };
        Ok((get("sum")?, get("count")?))
    }

    fn mappings(&self) -> Result<u64> {
        let m = self.call("GET", "/metrics")?;
        m.lines()
            .find_map(|l| l.strip_prefix("vecnet_nat44_static_mappings "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no vecnet_nat44_static_mappings in /metrics"))
    }
}

fn start(dir: &Path) -> Result<Rig> {
    let netns_name = format!("vnbench-{}", std::process::id());
    let mut rig = Rig {
        dir: dir.to_path_buf(),
        netns: netns_name.clone(),
        etcd: None,
        daemon: None,
        socket: dir.join("vecnetd.sock"),
        etcd_endpoint: String::new(),
    };
    std::fs::create_dir_all(dir)?;
    let (cp, mut pp) = (free_port()?, free_port()?);
    while pp == cp {
        pp = free_port()?;
    }
    rig.etcd_endpoint = format!("127.0.0.1:{cp}");
    let client = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    rig.etcd = Some(
        Command::new("etcd")
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (apt-get install etcd-server)")?,
    );
    netns::create(&netns_name).map_err(|e| anyhow!("creating netns {netns_name}: {e}"))?;
    let config = format!(
        "nodeName: bench\nsocket: {}\ndataDir: {}\nhttpListen: \"\"\n\
         source: {{kind: etcd, etcd: {{endpoints: ['127.0.0.1:{cp}'], prefix: /vecnet/}}}}\n\
         ipam: {{nodeID: 1}}\n\
         interfaces:\n  host: {{netns: {netns_name}}}\n",
        rig.socket.display(),
        dir.join("data").display(),
    );
    std::fs::write(dir.join("vecnet.yaml"), config)?;
    let log = std::fs::File::create(dir.join("vecnetd.log"))?;
    rig.daemon = Some(
        Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(dir.join("vecnet.yaml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting vecnetd run")?,
    );
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, b)) =
            control::call(&rig.socket, "GET", "/healthz", "", Duration::from_secs(2))
        {
            if b.trim() == "ok" && rig.programmed().is_ok() {
                break;
            }
        }
        if Instant::now() > end {
            bail!(
                "vecnetd not ready within 30 s: {}",
                std::fs::read_to_string(dir.join("vecnetd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(rig)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn kv(layout: &Layout, v: Value) -> Result<(String, String)> {
    let o = parse_object(0, v).map_err(|e| anyhow!("{e}"))?;
    Ok((layout.object_key(&o), encode_object(&o)))
}

/// Runs the benchmark; returns the lines for BENCHMARKS.md.
pub fn run(services: u32, changes: u32) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("vecnet-bench-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rig = start(&dir)?;
    let layout = Layout::default();
    let rt = vecnet_agent::etcd::runtime()?;
    let endpoint = rig.etcd_endpoint.clone();
    let mut client: Client = rt
        .block_on(vecnet_agent::etcd::connect(
            &vecnet_agent::etcd::EtcdConnection::new(std::slice::from_ref(&endpoint)),
        ))
        .map_err(|e| anyhow!("{e}"))?;

    // Bulk.
    let objects = service_objects(services);
    let kvs: Vec<(String, String)> = objects
        .into_iter()
        .map(|v| kv(&layout, v))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    for chunk in kvs.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
            .collect();
        rt.block_on(client.txn(Txn::new().and_then(ops)))
            .context("etcd txn")?;
    }
    let written = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if rig.mappings()? >= u64::from(services) {
            break;
        }
        if Instant::now() > deadline {
            bail!("{services} mappings not applied within 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let applied = t0.elapsed();

    // Single changes.
    let (_watcher, mut stream) = rt
        .block_on(client.watch(layout.k8s_prefix(), Some(WatchOptions::new().with_prefix())))
        .context("etcd watch")?;
    let mut baseline = Vec::new();
    let mut end_to_end = Vec::new();
    let render0 = rig.histogram("vecnet_render_duration_seconds")?;
    let apply0 = rig.histogram("vecnet_dataplane_apply_duration_seconds")?;
    for i in 0..changes {
        let s = (i * 7919) % services;
        let (k, v) = kv(&layout, slice(s, i + 1))?;
        let before = rig.programmed()?;
        let t = Instant::now();
        rt.block_on(client.put(k, v, None)).context("etcd put")?;
        // etcd's own share: the same watch the agent has, here in the bench.
        loop {
            let m = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), stream.message()).await
                })
                .map_err(|_| anyhow!("no watch event within 10 s"))??;
            if m.is_some_and(|r| !r.events().is_empty()) {
                break;
            }
        }
        baseline.push(t.elapsed().as_secs_f64() * 1e3);
        let end = Instant::now() + Duration::from_secs(30);
        while rig.programmed()? <= before {
            if Instant::now() > end {
                bail!("change {i} not programmed within 30 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        end_to_end.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let agent = rig.call("GET", &format!("/v1/stats?last={changes}"))?;
    let mean_ms = |a: (f64, f64), b: (f64, f64)| {
        if b.1 > a.1 {
            (b.0 - a.0) / (b.1 - a.1) * 1e3
        } else {
            0.0
        }
    };
    let render_ms = mean_ms(render0, rig.histogram("vecnet_render_duration_seconds")?);
    let apply_ms = mean_ms(
        apply0,
        rig.histogram("vecnet_dataplane_apply_duration_seconds")?,
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let (b50, b99) = (
        percentile(&mut baseline, 0.5),
        percentile(&mut baseline, 0.99),
    );
    let (e50, e99) = (
        percentile(&mut end_to_end, 0.5),
        percentile(&mut end_to_end, 0.99),
    );
    let mut out = format!(
        "vecnetd bench --cases etcd: {services} Services, {changes} single changes; cpu: {cpu}\n"
    );
    out.push_str(&format!(
        "bulk: {} Services + {} EndpointSlices written to etcd in {:.2} s; all applied on the agent after {:.2} s\n",
        services,
        services,
        written.as_secs_f64(),
        applied.as_secs_f64()
    ));
    out.push_str(&format!(
        "single change, etcd put -> watch event (baseline): p50 {b50:.2} ms, p99 {b99:.2} ms\n"
    ));
    out.push_str(&format!(
        "single change, etcd put -> data plane running it:  p50 {e50:.2} ms ({:.1}x baseline), p99 {e99:.2} ms ({:.1}x)\n",
        e50 / b50.max(1e-9),
        e99 / b99.max(1e-9)
    ));
    out.push_str(&format!(
        "agent's own share (vecnetctl stats): {}",
        agent.trim_start()
    ));
    out.push_str(&format!(
        "per change, mean: agent render {render_ms:.1} ms, data-plane snapshot {apply_ms:.1} ms\n"
    ));
    drop(rig);
    Ok(out)
}
