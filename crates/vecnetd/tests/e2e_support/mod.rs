//! Helpers of the end-to-end tests (`tests/e2e.rs`): one [`Node`] per test — a `vecnetd run`
//! daemon on network namespaces the test creates — pods attached through the real `vecnet-cni`
//! binary, small servers inside namespaces, real clients (`curl`, `ping`, `iperf3` through
//! `ip netns exec`), and a cleanup that removes everything, also on panic.
//!
//! Naming: every namespace of a test is `vn-e2e-<pid>-<n>-<role>` (`n` counts the tests of this
//! process), every file lives in `$TMPDIR/vn-e2e-<pid>-<n>/`. The daemon's `vpp1` lives in the
//! test's own host namespace, so parallel tests never share an interface name; pod TAPs are
//! created by the daemon as `vnt<daemon pid % 10000>-<k>` and moved into the pod namespace.

#![allow(dead_code)] // each test uses a different subset

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use vecnet_agent::control;
use vecnet_io::netns;

/// The seed's Service address.
pub const SEED_VIP: Ipv4Addr = Ipv4Addr::new(10, 104, 221, 85);
/// The address that plays the host network stack's own (on `lo` of the host namespace).
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
/// Node 1's addressing (IPAM defaults).
pub const POD_GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);
pub const TAP0_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 1);
pub const VPP1_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 2);
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 1);

/// How long a condition that depends on the daemon (start, manifest rescan, first packets held
/// for ARP) may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// Heavy tests (iperf3) take this lock exclusively; the others share it, so a bulk transfer never
/// competes with the timeouts of another test for the two cores.
static HEAVY: RwLock<()> = RwLock::new(());

pub enum Slot {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

pub fn shared_slot() -> Slot {
    Slot::Shared(HEAVY.read().unwrap_or_else(|p| p.into_inner()))
}

pub fn exclusive_slot() -> Slot {
    Slot::Exclusive(HEAVY.write().unwrap_or_else(|p| p.into_inner()))
}

/// Whether the e2e tests should run. They need root (namespaces, TAPs, mounts) and the tools a
/// user would use; anything missing fails the test with the reason, unless the run explicitly
/// opts out with `VECNET_E2E=skip`.
pub fn preflight(tools: &[(&str, &str)]) -> bool {
    if std::env::var("VECNET_E2E").as_deref() == Ok("skip") {
        eprintln!("SKIPPED: VECNET_E2E=skip");
        return false;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the end-to-end tests need root (network namespaces, TAP devices); run them as root, \
         or set VECNET_E2E=skip to skip them explicitly"
    );
    for (tool, package) in [("ip", "iproute2")].iter().chain(tools) {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "`{tool}` is not installed: apt-get install {package} (scripts/test.sh installs it)"
        );
    }
    sibling_bin("vecnet-cni");
    sibling_bin("vecnetctl");
    reap_stale();
    true
}

/// A binary of the workspace next to `vecnetd` (`vecnet-cni`, `vecnetctl`).
pub fn sibling_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_vecnetd")).with_file_name(name);
    assert!(
        p.exists(),
        "{} does not exist: the e2e tests run the workspace's binaries; run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Removes namespaces and directories of earlier runs that were killed before their cleanup ran
/// (`vn-e2e-<pid>-…` whose process is gone). Only this prefix is ever touched.
fn reap_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dead = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix("vn-e2e-") else {
                return false;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                return false;
            };
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        };
        for name in netns::list().unwrap_or_default() {
            if dead(&name) {
                let _ = netns::delete(&name);
            }
        }
        if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(dead) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
}

/// Names of the links in the namespace this process runs in (the root namespace).
pub fn root_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

/// Runs `ip netns exec NS ARGS…` and returns its output.
pub fn netns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns `Some` or `deadline` passes; panics with `what` and the last
/// failure otherwise.
pub fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    let mut last;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= end {
            panic!("{what}: not within {deadline:?}; last attempt: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// One successful HTTP exchange seen by `curl`.
#[derive(Debug, Clone)]
pub struct CurlOk {
    pub code: u16,
    /// `%{remote_ip}:%{remote_port}`: whom curl talked to.
    pub remote: SocketAddr,
    /// `%{local_ip}:%{local_port}`: curl's own socket.
    pub local: SocketAddr,
    pub body: String,
}

impl CurlOk {
    /// The client address the server reported (`you are IP:PORT`).
    pub fn seen_as(&self) -> SocketAddr {
        self.body
            .split("you are ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the server's answer names no client address: {:?}",
                    self.body
                )
            })
    }
}

/// `curl` once from namespace `ns` (connect timeout 1 s, total 3 s).
pub fn curl(ns: &str, url: &str) -> Result<CurlOk, String> {
    curl_with(ns, url, 1, 3)
}

pub fn curl_with(
    ns: &str,
    url: &str,
    connect_timeout: u32,
    max_time: u32,
) -> Result<CurlOk, String> {
    let out = netns_exec(
        ns,
        &[
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--connect-timeout",
            &connect_timeout.to_string(),
            "-m",
            &max_time.to_string(),
            "-w",
            "\n%{http_code} %{remote_ip} %{remote_port} %{local_ip} %{local_port}",
            url,
        ],
    );
    if !out.status.success() {
        return Err(format!(
            "curl {url} in {ns}: {} {}",
            out.status,
            text(&out.stderr).trim()
        ));
    }
    let stdout = text(&out.stdout);
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let f: Vec<&str> = last.split_whitespace().collect();
    let parse = || -> Option<CurlOk> {
        Some(CurlOk {
            code: f.first()?.parse().ok()?,
            remote: SocketAddr::new(f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?),
            local: SocketAddr::new(f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?),
            body: body.to_string(),
        })
    };
    parse().ok_or_else(|| format!("curl {url} in {ns}: cannot read its output {stdout:?}"))
}

/// `curl` until it gets HTTP 200 (the first packets towards the host side may be held for ARP,
/// manifests are picked up within a second or two).
pub fn curl_ok(ns: &str, url: &str) -> CurlOk {
    poll(&format!("HTTP 200 from {url} in {ns}"), DEADLINE, || {
        let r = curl(ns, url)?;
        if r.code == 200 {
            Ok(r)
        } else {
            Err(format!("HTTP {}", r.code))
        }
    })
}

/// A UDP socket bound inside `ns`.
pub fn udp_socket_in(ns: &str, bind: SocketAddrV4) -> UdpSocket {
    netns::run_in(&netns::path(ns), move || UdpSocket::bind(bind))
        .unwrap_or_else(|e| panic!("entering {ns}: {e}"))
        .unwrap_or_else(|e| panic!("binding UDP {bind} in {ns}: {e}"))
}

/// Sends `payload` from a socket in `ns` to `to` until an answer arrives; returns it and the
/// address it came from.
pub fn udp_request(ns: &str, to: SocketAddrV4, payload: &str) -> (String, SocketAddr) {
    let s = udp_socket_in(ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    poll(&format!("UDP answer from {to} in {ns}"), DEADLINE, || {
        s.send_to(payload.as_bytes(), to)
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok((text(&buf[..n]), from))
    })
}

/// `ping -c COUNT` from `ns`; returns the number of replies received.
pub fn ping(ns: &str, to: Ipv4Addr, count: u32) -> (u32, String) {
    let out = netns_exec(
        ns,
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &to.to_string(),
        ],
    );
    let s = text(&out.stdout);
    let received = s
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (received, format!("{s}{}", text(&out.stderr)))
}

// ---------------------------------------------------------------------------------------------
// Pods and CNI
// ---------------------------------------------------------------------------------------------

/// A pod attached through `vecnet-cni ADD`.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Kubernetes name (namespace `default`).
    pub name: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub result: Value,
}

/// What one `vecnet-cni` run printed.
#[derive(Debug)]
pub struct CniRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CniRun {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("vecnet-cni printed no JSON ({e}): {self:?}"))
    }
}

/// The CNI environment of one call; `None` leaves a variable unset.
#[derive(Debug, Clone, Default)]
pub struct CniEnv<'a> {
    pub command: &'a str,
    pub container_id: Option<&'a str>,
    pub netns: Option<&'a str>,
    pub ifname: Option<&'a str>,
    pub args: Option<&'a str>,
}

/// The network configuration a runtime hands to `vecnet-cni` on stdin.
pub fn cni_conf(socket: &Path) -> Value {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "vecnet",
        "type": "vecnet-cni",
        "socket": socket,
    })
}

/// Runs the `vecnet-cni` binary as a container runtime would.
pub fn cni_exec(socket: &Path, env: &CniEnv<'_>) -> CniRun {
    cni_exec_conf(&cni_conf(socket), env)
}

/// Runs the `vecnet-cni` binary with the network configuration `conf`.
pub fn cni_exec_conf(conf: &Value, env: &CniEnv<'_>) -> CniRun {
    let mut cmd = Command::new(sibling_bin("vecnet-cni"));
    for v in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("CNI_COMMAND", env.command)
        .env("CNI_PATH", "/opt/cni/bin");
    for (k, v) in [
        ("CNI_CONTAINERID", env.container_id),
        ("CNI_NETNS", env.netns),
        ("CNI_IFNAME", env.ifname),
        ("CNI_ARGS", env.args),
    ] {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vecnet-cni");
    // VERSION does not read its stdin: a closed pipe is fine.
    if let Err(e) = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
    {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing vecnet-cni's stdin: {e}"
        );
    }
    let out = child.wait_with_output().expect("vecnet-cni");
    CniRun {
        status: out.status,
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

// ---------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------

/// One test's node: namespaces, the daemon, pods, servers. Dropping it removes everything;
/// [`Node::finish`] does the same and then checks that nothing is left.
pub struct Node {
    pub prefix: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The namespace that plays the host network stack (`vpp1`, 10.20.0.2 on `lo`).
    pub host_ns: String,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    daemon_pid: u32,
    children: Vec<Child>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pods: Vec<Pod>,
    root_links_before: Vec<String>,
    cleaned: bool,
    _slot: Slot,
}

impl Node {
    /// Creates the host namespace (with [`HOST_IP`] on `lo`), starts `vecnetd run` on it and waits
    /// until it is ready and has learned `vpp1`'s MAC.
    pub fn start(test: &str, slot: Slot) -> Node {
        Self::start_with(test, slot, "", "")
    }

    /// [`Node::start`] with the metrics listener on `http_listen` (`host:port`; "" = off) and
    /// `extra` top-level configuration lines (YAML, each ending in a newline).
    pub fn start_with(test: &str, slot: Slot, http_listen: &str, extra: &str) -> Node {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("vn-e2e-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).expect("create the test directory");
        let mut node = Node {
            socket: dir.join("vecnetd.sock"),
            host_ns: format!("{prefix}-host"),
            prefix,
            dir,
            namespaces: Vec::new(),
            daemon: None,
            daemon_pid: 0,
            children: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            pods: Vec::new(),
            root_links_before: root_links(),
            cleaned: false,
            _slot: slot,
        };
        eprintln!(
            "[{test}] namespaces {}-*, files {}",
            node.prefix,
            node.dir.display()
        );
        let host = node.create_ns("host");
        node.sh(&host, &["ip", "link", "set", "lo", "up"]);
        node.sh(
            &host,
            &["ip", "addr", "add", &format!("{HOST_IP}/32"), "dev", "lo"],
        );

        let config = format!(
            "nodeName: node1\n\
             socket: {sock}\n\
             dataDir: {data}\n\
             httpListen: \"{http_listen}\"\n\
             source: {{kind: manifests, manifests: {{dir: {manifests}}}}}\n\
             interfaces:\n  host: {{netns: {host}}}\n{extra}",
            sock = node.socket.display(),
            data = node.dir.join("data").display(),
            manifests = node.dir.join("manifests").display(),
        );
        std::fs::write(node.dir.join("vecnet.yaml"), config).expect("write the config");
        node.spawn_daemon();
        // The host resolves 172.30.1.1 first, so vecnet learns vpp1's MAC and no later test
        // packet waits for ARP on tap0.
        let (got, out) = ping(&host, TAP0_IP, 1);
        assert_eq!(
            got, 1,
            "ping 172.30.1.1 (tap0) from the host namespace:\n{out}"
        );
        node
    }

    /// Starts `vecnetd run` on the test's configuration and waits until it is ready.
    fn spawn_daemon(&mut self) {
        let node = self;
        let config_path = node.dir.join("vecnet.yaml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("vecnetd.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vecnetd"));
        // If the test process dies without cleaning up (killed, Ctrl-C), the daemon still stops
        // in order (the signal comes when the spawning thread — this test's — ends; the test
        // stops the daemon before that anyway).
        // SAFETY: the closure only makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vecnetd run");
        node.daemon_pid = child.id();
        node.daemon = Some(child);
        poll("vecnetd ready (GET /healthz = ok)", DEADLINE, || {
            if let Some(d) = node.daemon.as_mut() {
                if let Ok(Some(st)) = d.try_wait() {
                    panic!("vecnetd exited at start ({st}):\n{}", node.log());
                }
            }
            match control::call(&node.socket, "GET", "/healthz", "", Duration::from_secs(2)) {
                Ok((200, b)) if b.trim() == "ok" => Ok(()),
                Ok((s, b)) => Err(format!("{s} {}", b.trim())),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    /// Stops the daemon (SIGTERM, as systemd would) and starts it again on the same
    /// configuration and `dataDir`. The TAPs are persistent: the new process attaches to them.
    pub fn restart_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            );
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn_daemon();
    }

    /// Kills the daemon without warning (SIGKILL: a crash, the OOM killer) and starts it again.
    pub fn crash_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn_daemon();
    }

    pub fn ns_name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Creates namespace `<prefix>-<role>` and records it for cleanup.
    pub fn create_ns(&mut self, role: &str) -> String {
        let name = self.ns_name(role);
        netns::create(&name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        self.namespaces.push(name.clone());
        name
    }

    /// Runs a command inside `ns` and fails the test if it fails.
    pub fn sh(&self, ns: &str, args: &[&str]) -> String {
        let out = netns_exec(ns, args);
        assert!(
            out.status.success(),
            "{args:?} in {ns}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vecnetd.log")).unwrap_or_default()
    }

    /// `vecnetctl --socket … ARGS`; fails the test on a non-zero exit.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(sibling_bin("vecnetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run vecnetctl");
        assert!(
            out.status.success(),
            "vecnetctl {args:?}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn cni(&self, env: &CniEnv<'_>) -> CniRun {
        cni_exec(&self.socket, env)
    }

    /// Creates namespace `<prefix>-<name>` and attaches it as pod `default/<name>` with
    /// `vecnet-cni ADD`.
    pub fn add_pod(&mut self, name: &str) -> Pod {
        let netns = self.create_ns(name);
        let container_id = format!("{}-{name}", self.prefix);
        let netns_path = netns::path(&netns).display().to_string();
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
        let run = self.cni(&CniEnv {
            command: "ADD",
            container_id: Some(&container_id),
            netns: Some(&netns_path),
            ifname: Some("eth0"),
            args: Some(&args),
        });
        assert!(
            run.status.success(),
            "CNI ADD {name}: {run:?}\n{}",
            self.log()
        );
        let result = run.json();
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.strip_suffix("/32"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("CNI ADD {name}: no /32 address in {result}"));
        let pod = Pod {
            name: name.to_string(),
            netns,
            container_id,
            ip,
            result,
        };
        self.pods.push(pod.clone());
        pod
    }

    /// `vecnet-cni DEL` for a pod added with [`Node::add_pod`].
    pub fn del_pod(&mut self, pod: &Pod) -> CniRun {
        self.pods.retain(|p| p.container_id != pod.container_id);
        let netns_path = netns::path(&pod.netns).display().to_string();
        self.cni(&CniEnv {
            command: "DEL",
            container_id: Some(&pod.container_id),
            netns: Some(&netns_path),
            ifname: Some("eth0"),
            args: None,
        })
    }

    /// Writes a manifest file atomically (a temporary name the daemon ignores, then a rename).
    pub fn write_manifest(&self, file: &str, objects: &[Value]) {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let dir = self.dir.join("manifests");
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(&list).expect("json"))
            .expect("write manifest");
        std::fs::rename(&tmp, dir.join(file)).expect("rename manifest");
    }

    /// Serves HTTP on `addr` inside `ns` from a thread of the test; every answer is
    /// `HTTP/1.1 200` with the body `<name> here; you are <client ip:port>`.
    pub fn serve_http(&mut self, ns: &str, addr: SocketAddrV4, name: &str) {
        let l = netns::run_in(&netns::path(ns), move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("entering {ns}: {e}"))
            .unwrap_or_else(|e| panic!("binding TCP {addr} in {ns}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::clone(&self.stop);
        let name = name.to_string();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut req = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let body = format!("{name} here; you are {peer}\n");
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// Echoes TCP on `addr` inside `ns`: every read is written back, connections stay open
    /// until the client closes them.
    pub fn serve_tcp_echo(&mut self, ns: &str, addr: SocketAddrV4) {
        let l = netns::run_in(&netns::path(ns), move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("entering {ns}: {e}"))
            .unwrap_or_else(|e| panic!("binding TCP {addr} in {ns}: {e}"));
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            let mut conns: Vec<std::net::TcpStream> = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((s, _)) = l.accept() {
                    let _ = s.set_nonblocking(true);
                    conns.push(s);
                }
                conns.retain_mut(|s| match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => s.write_all(&buf[..n]).is_ok(),
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    /// Echoes UDP on `addr` inside `ns`: the answer is `echo <payload> from <client ip:port>`.
    pub fn serve_udp_echo(&mut self, ns: &str, addr: SocketAddrV4) {
        let s = udp_socket_in(ns, addr);
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    let answer = format!("echo {} from {peer}", String::from_utf8_lossy(&buf[..n]));
                    let _ = s.send_to(answer.as_bytes(), peer);
                }
            }
        }));
    }

    /// Starts `ip netns exec NS ARGS…` in the background; it is killed at cleanup if still
    /// running.
    pub fn spawn_in(&mut self, ns: &str, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits for a background process started with [`Node::spawn_in`] (at most `timeout`).
    pub fn wait_child(&mut self, i: usize, timeout: Duration) -> Output {
        let end = Instant::now() + timeout;
        loop {
            match self.children[i].try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.children[i].kill();
                    break;
                }
            }
        }
        let c = &mut self.children[i];
        let status = c.wait().expect("wait");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut o) = c.stdout.take() {
            let _ = o.read_to_end(&mut stdout);
        }
        if let Some(mut e) = c.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Removes everything; returns what went wrong (nothing panics here: it also runs while a
    /// failed test unwinds).
    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cleaned {
            return problems;
        }
        self.cleaned = true;
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Detach the pods the way the runtime would before the sandbox goes.
        for pod in std::mem::take(&mut self.pods) {
            if self.daemon.is_some() {
                let run = self.del_pod(&pod);
                if !run.status.success() {
                    problems.push(format!("CNI DEL {}: {run:?}", pod.name));
                }
            }
        }
        if let Some(mut child) = self.daemon.take() {
            // SIGTERM: the daemon's orderly stop closes its TAPs (and with them the host link).
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            );
            let end = Instant::now() + Duration::from_secs(5);
            let mut status = None;
            while Instant::now() < end {
                if let Ok(Some(st)) = child.try_wait() {
                    status = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match status {
                Some(st) if st.success() => {}
                Some(st) => problems.push(format!("vecnetd exited with {st} on SIGTERM")),
                None => {
                    problems.push("vecnetd did not stop within 5 s of SIGTERM; killed".into());
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        for n in self.namespaces.drain(..) {
            if let Err(e) = netns::delete(&n) {
                problems.push(format!("deleting netns {n}: {e}"));
            }
        }
        if std::thread::panicking() {
            eprintln!("---- vecnetd log ({}) ----\n{}", self.prefix, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        problems
    }

    /// Cleans up and asserts that nothing of this test remains: no namespace with its prefix,
    /// no link in the root namespace it created (the daemon's temporary TAP names, `vpp1`), no
    /// file, no daemon.
    pub fn finish(mut self) {
        let mut problems = self.cleanup();
        problems.extend(self.leftovers().check());
        assert!(
            problems.is_empty(),
            "cleanup of {}: {problems:#?}",
            self.prefix
        );
    }

    /// What [`Leftovers::check`] needs to find anything of this test after it is gone.
    pub fn leftovers(&self) -> Leftovers {
        Leftovers {
            prefix: self.prefix.clone(),
            dir: self.dir.clone(),
            daemon_pid: self.daemon_pid,
            root_links_before: self.root_links_before.clone(),
        }
    }
}

/// The traces a test could leave: namespaces named with its prefix, links and routes in the
/// root namespace (the daemon's temporary TAP names `vnt<pid % 10000>-*`, a `vpp*` link that was
/// not there before), its directory, its daemon.
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub prefix: String,
    pub dir: PathBuf,
    pub daemon_pid: u32,
    pub root_links_before: Vec<String>,
}

impl Leftovers {
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ns_prefix = format!("{}-", self.prefix);
        let left: Vec<String> = netns::list()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with(&ns_prefix))
            .collect();
        if !left.is_empty() {
            problems.push(format!("namespaces left behind: {left:?}"));
        }
        let taps = format!("vnt{}-", self.daemon_pid % 10000);
        let before = &self.root_links_before;
        let stray: Vec<String> = root_links()
            .into_iter()
            .filter(|l| l.starts_with(&taps) || (l.starts_with("vpp") && !before.contains(l)))
            .collect();
        if !stray.is_empty() {
            problems.push(format!("links left in the root namespace: {stray:?}"));
        }
        let routes = Command::new("ip")
            .args(["-4", "route", "show"])
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default();
        let stray_routes: Vec<&str> = routes
            .lines()
            .filter(|l| l.contains(" dev vpp") || l.contains(&format!(" dev {taps}")))
            .collect();
        if !stray_routes.is_empty() {
            problems.push(format!(
                "routes left in the root namespace: {stray_routes:?}"
            ));
        }
        if self.dir.exists() {
            problems.push(format!("{} left behind", self.dir.display()));
        }
        let pid = self.daemon_pid;
        if pid != 0
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains("(vecnetd)") && !s.contains(") Z "))
        {
            problems.push(format!("vecnetd (pid {pid}) still runs"));
        }
        problems
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let problems = self.cleanup();
        if !problems.is_empty() {
            eprintln!("cleanup of {}: {problems:#?}", self.prefix);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// A running Pod object on node1 with its IP and labels.
pub fn pod_object(pod: &Pod, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "e2e"}]},
        "status": {"phase": "Running", "podIP": pod.ip.to_string(), "podIPs": [{"ip": pod.ip.to_string()}]}
    })
}

/// A Service with one port and its EndpointSlice.
pub struct ServiceSpec<'a> {
    pub name: &'a str,
    pub cluster_ip: Ipv4Addr,
    pub protocol: &'a str,
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
    pub endpoints: &'a [Ipv4Addr],
}

pub fn service_objects(s: &ServiceSpec<'_>) -> Vec<Value> {
    let mut port = serde_json::json!({
        "name": "p", "port": s.port, "targetPort": s.target_port, "protocol": s.protocol
    });
    if let Some(np) = s.node_port {
        port["nodePort"] = np.into();
    }
    let ty = if s.node_port.is_some() {
        "NodePort"
    } else {
        "ClusterIP"
    };
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    vec![
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": s.name, "namespace": "default"},
            "spec": {"type": ty, "clusterIP": s.cluster_ip.to_string(), "ports": [port]}
        }),
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-1", s.name),
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": s.name}
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "p", "port": s.target_port, "protocol": s.protocol}]
        }),
    ]
}
