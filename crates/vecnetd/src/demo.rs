//! `vecnetd demo`: the seed's flow for real (SYSTEM.md 1.12). As root, it builds its own network
//! namespaces (prefix `vn-demo-`), starts `vecnetd run` on them, attaches two pods through the CNI
//! path, serves HTTP on 10.20.0.2:8080 in the namespace that plays the host network stack, runs
//! `curl` from the client pod to the Service 10.104.221.85:80, prints the answer and the trace of
//! the SYN and SYN-ACK, and removes everything it created — also on error or Ctrl-C. It never
//! touches an interface or route it did not create.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use vecnet_agent::cni::{CniReply, CniRequest};
use vecnet_agent::control;
use vecnet_io::netlink;
use vecnet_io::netns;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the namespaces and the daemon running until Ctrl-C (to explore with vecnetctl).
    #[arg(long)]
    keep: bool,
}

const MANIFESTS: &str = include_str!("../scenarios/demo-manifests.yaml");
const VIP: &str = "10.104.221.85";

/// Everything the demo created, removed on drop whatever happened.
struct Demo {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    socket: PathBuf,
    pods: Vec<(String, String)>,
}

impl Demo {
    fn ns(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn cni(&self, command: &str, container: &str, netns_name: &str, pod: &str) -> Result<CniReply> {
        let mut args = std::collections::BTreeMap::new();
        args.insert("K8S_POD_NAMESPACE".to_string(), "default".to_string());
        args.insert("K8S_POD_NAME".to_string(), pod.to_string());
        let req = CniRequest {
            command: command.into(),
            cni_version: "1.1.0".into(),
            container_id: container.into(),
            netns: netns::path(netns_name).display().to_string(),
            ifname: "eth0".into(),
            args,
            valid_attachments: Vec::new(),
        };
        let (status, body) = control::call(
            &self.socket,
            "POST",
            "/v1/cni",
            &serde_json::to_string(&req)?,
            Duration::from_secs(30),
        )?;
        if status != 200 {
            bail!("CNI {command}: vecnetd answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    fn cli(&self, line: &str) -> Result<String> {
        let (status, body) = control::call(
            &self.socket,
            "POST",
            "/v1/cli",
            line,
            Duration::from_secs(30),
        )?;
        if status != 200 {
            bail!("{line}: {body}");
        }
        Ok(body)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for (container, _) in std::mem::take(&mut self.pods) {
            let _ = self.cni("DEL", &container, "", "");
        }
        if let Some(mut child) = self.daemon.take() {
            // SIGTERM: an orderly stop removes tap0 (and with it the host routes).
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in self.namespaces.drain(..) {
            let _ = netns::delete(&n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tiny HTTP server in the host-stack namespace, as the seed's endpoint 10.20.0.2:8080.
fn serve_http(host_ns: &str, stop: Arc<AtomicBool>) -> Result<()> {
    let l = netns::run_in(&netns::path(host_ns), || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 2), 8080))
    })
    .map_err(|e| anyhow!("{e}"))?
    .context("binding 10.20.0.2:8080 in the host namespace")?;
    l.set_nonblocking(true)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf);
                    let body = format!(
                        "hello from the host network stack (10.20.0.2:8080); you are {peer}\n"
                    );
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(())
}

fn wait_ready(socket: &Path, daemon: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.try_wait() {
            bail!(
                "vecnetd exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok((200, body)) =
            control::call(socket, "GET", "/healthz", "", Duration::from_secs(2))
        {
            if body.trim() == "ok" {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "vecnetd did not become ready:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

pub fn run(args: Args) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "vecnetd demo needs root: it creates network namespaces and TAP devices (its own only)"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let prefix = format!("vn-demo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(dir.join("manifests"))?;
    let mut demo = Demo {
        socket: dir.join("vecnetd.sock"),
        prefix,
        dir,
        namespaces: Vec::new(),
        daemon: None,
        pods: Vec::new(),
    };
    let (host, pod1, client) = (demo.ns("host"), demo.ns("pod1"), demo.ns("client"));
    println!(
        "== vecnet demo: the seed's flow, pod -> Service -> endpoint in the host network stack"
    );
    for n in [&host, &pod1, &client] {
        netns::create(n).map_err(|e| anyhow!("creating netns {n}: {e}"))?;
        demo.namespaces.push(n.clone());
    }
    netns::run_in(&netns::path(&host), || -> Result<()> {
        netlink::set_up("lo")?;
        netlink::add_addr("lo", Ipv4Addr::new(10, 20, 0, 2), 32)?;
        Ok(())
    })
    .map_err(|e| anyhow!("{e}"))??;
    serve_http(&host, Arc::clone(&stop))?;
    println!("   namespace {host} plays the host network stack: 10.20.0.2, HTTP server on :8080");

    std::fs::write(demo.dir.join("manifests/seed.yaml"), MANIFESTS)?;
    let config = format!(
        "nodeName: node1\nsocket: {}\ndataDir: {}\nsource: {{kind: manifests, manifests: {{dir: {}}}}}\ninterfaces:\n  host: {{netns: {host}, mac: \"01:23:45:67:89:42\"}}\n",
        demo.socket.display(),
        demo.dir.join("data").display(),
        demo.dir.join("manifests").display()
    );
    let config_path = demo.dir.join("vecnet.yaml");
    std::fs::write(&config_path, config)?;
    let log = demo.dir.join("vecnetd.log");
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting vecnetd run")?;
    demo.daemon = Some(child);
    if let Some(d) = demo.daemon.as_mut() {
        wait_ready(&demo.socket, d, &log)?;
    }
    println!("   vecnetd runs: tap0 172.30.1.1 <-> vpp1 172.30.1.2 in {host}; manifests: Service {VIP}:80 -> 10.20.0.2:8080, client isolated by NetworkPolicies");

    // A first pod takes tap1 / 10.1.1.2, so the client gets tap2 / 10.1.1.3 as in the seed.
    for (container, ns, pod) in [
        ("demo-pod1", &pod1, "pod1"),
        ("demo-client", &client, "client"),
    ] {
        match demo.cni("ADD", container, ns, pod)? {
            CniReply::Ok(Some(r)) => {
                demo.pods.push((container.to_string(), ns.clone()));
                println!(
                    "   CNI ADD {pod}: {} on {} in {ns}",
                    r.ips.first().map(|i| i.address.as_str()).unwrap_or("?"),
                    r.interfaces.first().map(|i| i.name.as_str()).unwrap_or("?")
                );
            }
            other => bail!("CNI ADD {pod}: {other:?}"),
        }
    }
    // Let vecnet learn the host side's MAC first, so the SYN is not held for ARP.
    netns::run_in(&netns::path(&host), || {
        if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
            let _ = s.send_to(b"arp", "172.30.1.1:9");
        }
    })
    .map_err(|e| anyhow!("{e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    demo.cli("clear trace")?;
    demo.cli("trace add virtio-input 10")?;

    println!("\n== curl http://{VIP}/ from the client pod ({client})");
    let curl_ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let answer = netns::run_in(&netns::path(&client), move || -> Result<String> {
        if curl_ok {
            let out = Command::new("curl")
                .args(["-s", "-i", "-m", "5", &format!("http://{VIP}/")])
                .output()
                .context("running curl")?;
            if !out.status.success() {
                bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut s =
                TcpStream::connect_timeout(&format!("{VIP}:80").parse()?, Duration::from_secs(5))?;
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: {VIP}\r\nConnection: close\r\n\r\n"
            )?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        }
    })
    .map_err(|e| anyhow!("{e}"))??;
    print!("{answer}");
    if !answer.starts_with("HTTP/1.1 200") {
        bail!("the Service did not answer 200");
    }
    println!("\n== vecnetctl show trace max 2   (the SYN and the SYN-ACK, as in the seed)");
    print!("{}", demo.cli("show trace max 2")?);
    println!("== vecnetctl show nat44 sessions detail");
    print!("{}", demo.cli("show nat44 sessions detail")?);
    println!("\n== vecnetctl show acl-plugin sessions");
    print!("{}", demo.cli("show acl-plugin sessions")?);
    if args.keep {
        println!(
            "\n== kept running; try: vecnetctl --socket {} show interface   (Ctrl-C to clean up)",
            demo.socket.display()
        );
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "\n== cleaning up: CNI DEL, vecnetd stop, namespaces {} removed",
        demo.prefix
    );
    drop(demo);
    Ok(())
}
