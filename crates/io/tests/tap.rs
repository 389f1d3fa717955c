//! Real TAP I/O through network namespaces (root required; skipped with a notice otherwise).
//!
//! Every test makes its own namespaces, named `vn-io-<pid>-<test>-<role>`, and removes them
//! also on failure (drop guards). Nothing is created in, or changed in, the namespace the test
//! runs in: TAPs are created inside a per-test "node" namespace and moved into "pod" namespaces,
//! laid out as SYSTEM.md 3.5 describes (eth0 /32, link route to the gateway, default route,
//! permanent neighbour for the gateway).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vecnet_graph::BufferPool;
use vecnet_io::netns::{self, NetnsGuard};
use vecnet_io::{netlink, Notifier, Offload, Tap, TapConfig, TapIo, TapStats};
use vecnet_nodes::{DeviceIo, InterfaceKind};
use vecnet_vswitch::{
    Dataplane, DataplaneConfig, DataplaneOptions, InterfaceConfig, NeighbourConfig,
    Path as RoutePath, RouteConfig,
};
use vecnet_wire::MacAddr;

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: the TAP/netns tests need root (CAP_NET_ADMIN, mount)");
    false
}

fn ns_name(test: &str, role: &str) -> String {
    format!("vn-io-{}-{test}-{role}", std::process::id())
}

/// Removes namespaces of earlier runs of these tests that were killed before their guards ran
/// (`vn-io-<pid>-…` whose process is gone). Only this prefix is ever touched.
fn reap_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for name in netns::list().unwrap_or_default() {
            let Some(rest) = name.strip_prefix("vn-io-") else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = netns::delete(&name);
            }
        }
    });
}

fn new_ns(test: &str, role: &str) -> NetnsGuard {
    reap_stale_namespaces();
    let name = ns_name(test, role);
    // A leftover of an earlier run with the same pid (not possible in practice, but cheap).
    let _ = netns::delete(&name);
    netns::create(&name)
        .unwrap_or_else(|e| panic!("create netns {name}: {e}"))
        .delete_on_drop()
}

/// One pod: its namespace, addresses, and the MACs on both sides of its TAP.
struct Pod {
    ns: NetnsGuard,
    ip: Ipv4Addr,
    /// MAC of the pod's eth0 (the kernel side of the TAP).
    mac: [u8; 6],
    /// The MAC the pod resolves its gateway to (the data plane's TAP MAC).
    gw_mac: [u8; 6],
}

/// Creates a persistent TAP `tap_name` in the node namespace, moves it into a new pod namespace
/// and plumbs it as the pod's `eth0` (SYSTEM.md 3.5). Returns the pod and the data plane's fd.
fn make_pod(
    test: &str,
    node: &NetnsGuard,
    tap_name: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
    gw_mac: [u8; 6],
    offload: Offload,
) -> (Pod, Tap) {
    let cfg = TapConfig::new(tap_name).persist(true).offload(offload);
    make_pod_cfg(test, node, &cfg, ip, mac, gw_mac)
}

/// [`make_pod`] with any TAP configuration.
fn make_pod_cfg(
    test: &str,
    node: &NetnsGuard,
    cfg: &TapConfig,
    ip: Ipv4Addr,
    mac: [u8; 6],
    gw_mac: [u8; 6],
) -> (Pod, Tap) {
    let tap_name = cfg.name.as_str();
    let ns = new_ns(test, &format!("pod{}", ip.octets()[3]));
    let tap = Tap::open_in(node.path(), cfg).expect("open tap in node netns");
    assert_eq!(tap.name(), tap_name);
    let flags = tap.kernel_flags().unwrap();
    assert_eq!(
        flags & vecnet_io::tap::IFF_VNET_HDR != 0,
        cfg.vnet_hdr,
        "IFF_VNET_HDR as configured"
    );
    let pod_path = ns.path().to_path_buf();
    node.run(|| netlink::set_netns(tap_name, &pod_path))
        .unwrap()
        .expect("move tap into pod netns");
    ns.run(|| -> vecnet_io::Result<()> {
        let idx = netlink::link_index(tap_name)?.expect("tap visible in the pod netns");
        netlink::rename(idx, "eth0")?;
        netlink::set_mac("eth0", mac)?;
        netlink::set_mtu("eth0", 1450)?;
        netlink::set_ipv6_disabled("eth0", true)?;
        netlink::set_up("lo")?;
        netlink::set_up("eth0")?;
        netlink::add_addr("eth0", ip, 32)?;
        netlink::add_route(GW, 32, None, "eth0", true)?;
        netlink::add_route(Ipv4Addr::UNSPECIFIED, 0, Some(GW), "eth0", false)?;
        netlink::add_neigh_permanent("eth0", GW, gw_mac)?;
        assert_eq!(netlink::link_mac("eth0")?, mac);
        // Read the layout back (SYSTEM.md 3.5).
        let routes = netlink::routes_v4()?;
        let link_route = netlink::RouteV4 {
            dst: GW,
            len: 32,
            via: None,
            dev: "eth0".into(),
            scope_link: true,
        };
        let default = netlink::RouteV4 {
            dst: Ipv4Addr::UNSPECIFIED,
            len: 0,
            via: Some(GW),
            dev: "eth0".into(),
            scope_link: false,
        };
        assert!(routes.contains(&link_route), "{routes:?}");
        assert!(routes.contains(&default), "{routes:?}");
        let neigh = netlink::neighbours_v4()?;
        let gw_entry = netlink::NeighbourV4 {
            dev: "eth0".into(),
            ip: GW,
            mac: gw_mac,
            permanent: true,
        };
        assert!(neigh.contains(&gw_entry), "{neigh:?}");
        assert!(netlink::addrs_v4()?.contains(&("eth0".into(), ip, 32)));
        Ok(())
    })
    .unwrap()
    .expect("plumb pod eth0");
    (
        Pod {
            ns,
            ip,
            mac,
            gw_mac,
        },
        tap,
    )
}

/// The data-plane side of one pod: interface `name` = `sw_if_index`, holding the pod gateway
/// /32, a /32 route to the pod and its static neighbour.
fn add_pod_to_config(cfg: &mut DataplaneConfig, name: &str, sw_if_index: u32, pod: &Pod) {
    let mut i = InterfaceConfig::new(name, sw_if_index, InterfaceKind::Pod, MacAddr(pod.gw_mac));
    i.ip4 = vec![(GW, 32)];
    i.mtu = 1450;
    cfg.interfaces.push(i);
    cfg.routes.push(RouteConfig::new(
        pod.ip,
        32,
        RoutePath::Attached {
            next_hop: pod.ip,
            sw_if_index,
        },
    ));
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index,
        ip: pod.ip,
        mac: MacAddr(pod.mac),
    });
}

/// What the data-plane thread reports when it stops.
struct DpReport {
    trace: String,
    errors: String,
    stats: Vec<(u32, TapStats)>,
}

/// A `Dataplane` on a `TapIo`, run on its own thread: `run_once` while packets come, `wait` in
/// epoll when idle.
struct RunningDp {
    stop: Arc<AtomicBool>,
    notifier: Notifier,
    handle: Option<JoinHandle<DpReport>>,
}

impl RunningDp {
    fn start(cfg: DataplaneConfig, io: TapIo, trace: u32) -> Self {
        let waiter = io.waiter();
        let notifier = waiter.notifier();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::spawn(move || {
            let opts = DataplaneOptions {
                buffers: 4096,
                ..DataplaneOptions::default()
            };
            let mut dp = Dataplane::new(opts, Box::new(io)).expect("dataplane");
            dp.apply(&cfg).expect("apply config");
            if trace > 0 {
                dp.exec(&format!("trace add virtio-input {trace}")).unwrap();
            }
            let _ = ready_tx.send(());
            while !stop2.load(Ordering::Relaxed) {
                if dp.run_once() == 0 {
                    waiter.wait(Some(Duration::from_millis(100))).unwrap();
                }
            }
            let trace = dp.exec("show trace max 1000").unwrap();
            let errors = dp.exec("show errors").unwrap();
            let tio = dp
                .device_mut()
                .as_any_mut()
                .downcast_mut::<TapIo>()
                .expect("TapIo device");
            let stats = tio
                .sw_if_indices()
                .collect::<Vec<_>>()
                .into_iter()
                .map(|sw| (sw, tio.stats(sw).unwrap()))
                .collect();
            // No buffer may be lost: only the spares are out of the pool.
            let spares = tio.spare_buffers();
            assert_eq!(
                dp.pool.free_count() + spares,
                dp.pool.capacity(),
                "buffer leak"
            );
            DpReport {
                trace,
                errors,
                stats,
            }
        });
        // Traffic starts only once the data plane polls (a failed start shows at `stop`).
        let _ = ready.recv_timeout(Duration::from_secs(30));
        Self {
            stop,
            notifier,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> DpReport {
        self.stop.store(true, Ordering::Relaxed);
        self.notifier.notify();
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("dataplane thread")
    }
}

impl Drop for RunningDp {
    fn drop(&mut self) {
        // On a test failure: stop the thread before the namespaces go.
        self.stop.store(true, Ordering::Relaxed);
        self.notifier.notify();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Echo request to `dst` from inside `ns`: `ip netns exec NS ping -c 3 -W 1 DST` when `ping`
/// is installed, else the same three echoes over a raw ICMP socket opened in the netns.
fn ping_in(ns: &NetnsGuard, dst: Ipv4Addr) -> Result<String, String> {
    // VECNET_IO_RAW_PING=1 forces the raw-socket path (to test it where ping exists).
    let have_ping = std::env::var_os("VECNET_IO_RAW_PING").is_none()
        && Command::new("ping").arg("-V").output().is_ok()
        && Command::new("ip").arg("-V").output().is_ok();
    if have_ping {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "ping", "-c", "3", "-W", "1"])
            .arg(dst.to_string())
            .output()
            .map_err(|e| format!("ip netns exec: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        return if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        };
    }
    eprintln!("note: no `ping`/`ip` (or VECNET_IO_RAW_PING set): echoes from a raw ICMP socket");
    ns.run(|| raw_ping(dst, 3)).map_err(|e| e.to_string())?
}

fn raw_ping(dst: Ipv4Addr, count: u16) -> Result<String, String> {
    use rustix::net::{
        ipproto, recv, sendto, socket, AddressFamily, RecvFlags, SendFlags, SocketType,
    };
    let s = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP))
        .map_err(|e| format!("raw socket: {e}"))?;
    rustix::net::sockopt::set_socket_timeout(
        &s,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(1)),
    )
    .map_err(|e| e.to_string())?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut replies = 0;
    for seq in 1..=count {
        let mut pkt = [0u8; 64];
        pkt[0] = 8;
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        let c = vecnet_wire::checksum::checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        sendto(&s, &pkt, SendFlags::empty(), &SocketAddr::from((dst, 0)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut b = [0u8; 1500];
            let Ok((n, _)) = recv(&s, &mut b, RecvFlags::empty()) else {
                break;
            };
            let ihl = (b[0] & 0xf) as usize * 4;
            let icmp = &b[ihl..n];
            if icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                replies += 1;
                break;
            }
        }
    }
    if replies == count {
        Ok(format!("{count} packets transmitted, {replies} received"))
    } else {
        Err(format!("{count} packets transmitted, {replies} received"))
    }
}

/// A deterministic byte pattern that is not periodic at any small stride.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` from pod `a` to a TCP server in pod `b` that echoes it back; returns the echo.
fn tcp_echo(a: &Pod, b: &Pod, port: u16, data: &[u8]) -> Vec<u8> {
    let listener =
        b.ns.run(|| TcpListener::bind((b.ip, port)))
            .unwrap()
            .expect("listen in pod b");
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("server read");
        s.write_all(&got).expect("server write");
        (peer, got.len())
    });
    let dst = SocketAddr::from((b.ip, port));
    let mut c =
        a.ns.run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))
            .unwrap()
            .expect("connect from pod a");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Write and read concurrently: the server echoes only after the whole upload, but large
    // uploads must not deadlock on full buffers either way.
    let mut w = c.try_clone().unwrap();
    let up = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&up).expect("client write");
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echo = Vec::new();
    c.read_to_end(&mut echo).expect("client read");
    writer.join().unwrap();
    let (peer, n) = server.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(a.ip),
        "server sees the client's pod IP"
    );
    assert_eq!(n, data.len());
    echo
}

const TAP2_MAC: [u8; 6] = [0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x0f];
const TAP3_MAC: [u8; 6] = [0x02, 0xfe, 0x16, 0x3f, 0x5f, 0x10];
const POD3_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x01, 0x01, 0x03];
const POD4_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x01, 0x01, 0x04];

/// Nothing of this test is left: no namespace with its prefix, no link of its in this netns.
fn assert_cleaned_up(test: &str, tap_names: &[&str]) {
    let prefix = format!("vn-io-{}-{test}-", std::process::id());
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let out = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(&prefix),
            "ip netns list still shows {prefix}*: {text}"
        );
    }
    let links = netlink::links().unwrap();
    for t in tap_names {
        assert!(
            !links.iter().any(|(_, n)| n == t),
            "link {t} appeared in the test's own netns"
        );
    }
}

/// (a) The pod layout of SYSTEM.md 3.5 on a real TAP, the data plane answering the pod's pings
/// to its gateway; the trace shows the TAP's `virtio-input` and the echo node.
#[test]
fn pod_pings_gateway_through_dataplane() {
    if !is_root() {
        return;
    }
    const T: &str = "ping";
    {
        let node = new_ns(T, "node");
        let (pod, tap) = make_pod(
            T,
            &node,
            "vnt2",
            Ipv4Addr::new(10, 1, 1, 3),
            POD3_MAC,
            TAP2_MAC,
            Offload::Csum,
        );
        // The pod's MAC as the kernel has it (read back, not assumed).
        let pod_mac = pod.ns.run(|| netlink::link_mac("eth0")).unwrap().unwrap();
        assert_eq!(pod_mac, POD3_MAC);
        let mut io = TapIo::new().unwrap();
        io.add(6, tap).unwrap();
        let mut cfg = DataplaneConfig::default();
        add_pod_to_config(&mut cfg, "tap2", 6, &pod);
        let dp = RunningDp::start(cfg, io, 20);
        let r = ping_in(&pod.ns, GW);
        let report = dp.stop();
        let out = r.unwrap_or_else(|e| {
            panic!(
                "ping failed: {e}\ntrace:\n{}\nerrors:\n{}",
                report.trace, report.errors
            )
        });
        assert!(
            out.contains("3 received") || out.contains("3 packets received"),
            "{out}"
        );
        let t = &report.trace;
        // The first traced packet, for the log (`--nocapture`).
        eprintln!("{}", t.split("\nPacket 2").next().unwrap_or(t));
        assert!(t.contains("virtio-input"), "{t}");
        assert!(t.contains("hw_if_index 6"), "{t}");
        assert!(t.contains("ip4-icmp-echo-request"), "{t}");
        assert!(t.contains("tap2-output"), "{t}");
        let s = report.stats.iter().find(|(sw, _)| *sw == 6).unwrap().1;
        assert!(s.rx_packets >= 3 && s.tx_packets >= 3, "{s:?}");
        assert_eq!(s.rx_errors + s.tx_errors + s.tx_eagain, 0, "{s:?}");
    }
    assert_cleaned_up(T, &["vnt2"]);
}

/// Two pods on one node: (b) UDP and TCP between them through the data plane, bytes equal.
#[test]
fn pod_to_pod_udp_and_tcp() {
    if !is_root() {
        return;
    }
    const T: &str = "p2p";
    {
        let node = new_ns(T, "node");
        let (a, tap_a) = make_pod(
            T,
            &node,
            "vnt2",
            Ipv4Addr::new(10, 1, 1, 3),
            POD3_MAC,
            TAP2_MAC,
            Offload::None,
        );
        let (b, tap_b) = make_pod(
            T,
            &node,
            "vnt3",
            Ipv4Addr::new(10, 1, 1, 4),
            POD4_MAC,
            TAP3_MAC,
            Offload::None,
        );
        let mut io = TapIo::new().unwrap();
        io.add(6, tap_a).unwrap();
        io.add(7, tap_b).unwrap();
        let mut cfg = DataplaneConfig::default();
        add_pod_to_config(&mut cfg, "tap2", 6, &a);
        add_pod_to_config(&mut cfg, "tap3", 7, &b);
        let dp = RunningDp::start(cfg, io, 0);

        // UDP request and answer.
        let ua = a.ns.run(|| UdpSocket::bind((a.ip, 0))).unwrap().unwrap();
        let ub = b.ns.run(|| UdpSocket::bind((b.ip, 5353))).unwrap().unwrap();
        ua.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let query = pattern(900, 7);
        ua.send_to(&query, (b.ip, 5353)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = ub.recv_from(&mut buf).expect("udp to pod b");
        assert_eq!(&buf[..n], &query[..]);
        assert_eq!(from.ip(), std::net::IpAddr::V4(a.ip));
        let answer = pattern(1400, 9);
        ub.send_to(&answer, from).unwrap();
        let (n, from) = ua.recv_from(&mut buf).expect("udp answer to pod a");
        assert_eq!(&buf[..n], &answer[..]);
        assert_eq!(from, SocketAddr::from((b.ip, 5353)));

        // TCP, both directions.
        let data = pattern(300_000, 11);
        let echo = tcp_echo(&a, &b, 8080, &data);
        assert!(
            echo == data,
            "tcp echo differs ({} vs {} bytes)",
            echo.len(),
            data.len()
        );

        let report = dp.stop();
        for (sw, s) in &report.stats {
            assert!(s.rx_packets > 0 && s.tx_packets > 0, "tap {sw}: {s:?}");
            assert_eq!(
                s.rx_errors + s.tx_errors + s.tx_eagain + s.rx_oversize,
                0,
                "tap {sw}: {s:?}"
            );
        }
    }
    assert_cleaned_up(T, &["vnt2", "vnt3"]);
}

/// (c) A few MB over TCP with checksum offload on: the pods' kernels send partial checksums
/// (`NEEDS_CSUM`), the data plane routes them (TTL and IP checksum rewritten) and hands them on
/// with `NEEDS_CSUM`, and the receiving kernel accepts every segment. TSO stays off here: the
/// graph does not handle buffer chains yet (see `tap_gso_superframes_forwarded_as_chains`).
#[test]
fn tcp_bulk_with_checksum_offload_through_dataplane() {
    if !is_root() {
        return;
    }
    const T: &str = "csum";
    {
        let node = new_ns(T, "node");
        let (a, tap_a) = make_pod(
            T,
            &node,
            "vnt2",
            Ipv4Addr::new(10, 1, 1, 3),
            POD3_MAC,
            TAP2_MAC,
            Offload::Csum,
        );
        let (b, tap_b) = make_pod(
            T,
            &node,
            "vnt3",
            Ipv4Addr::new(10, 1, 1, 4),
            POD4_MAC,
            TAP3_MAC,
            Offload::Csum,
        );
        let mut io = TapIo::new().unwrap();
        io.add(6, tap_a).unwrap();
        io.add(7, tap_b).unwrap();
        let mut cfg = DataplaneConfig::default();
        add_pod_to_config(&mut cfg, "tap2", 6, &a);
        add_pod_to_config(&mut cfg, "tap3", 7, &b);
        // Trace the start of the connection: SYN, SYN-ACK and the first data segments.
        let dp = RunningDp::start(cfg, io, 30);
        let data = pattern(4 << 20, 3);
        let t0 = Instant::now();
        let echo = tcp_echo(&a, &b, 9000, &data);
        let secs = t0.elapsed().as_secs_f64();
        assert!(
            echo == data,
            "tcp echo differs ({} vs {} bytes)",
            echo.len(),
            data.len()
        );
        let report = dp.stop();
        eprintln!(
            "csum offload: 2 x {} MiB in {secs:.2} s ({:.0} Mbit/s)",
            data.len() >> 20,
            (2 * data.len()) as f64 * 8.0 / secs / 1e6
        );
        // The traced data segments carried a partial checksum.
        assert!(
            report.trace.contains("hdr: flags 0x01"),
            "no NEEDS_CSUM frame traced:\n{}",
            report.trace
        );
        for (sw, s) in &report.stats {
            assert_eq!(
                s.rx_chained + s.rx_oversize,
                0,
                "no GSO without TSO: tap {sw}: {s:?}"
            );
            assert_eq!(
                s.rx_errors + s.tx_errors + s.tx_eagain,
                0,
                "tap {sw}: {s:?}"
            );
            assert!(s.rx_bytes > (4 << 20), "tap {sw}: {s:?}");
        }
    }
    assert_cleaned_up(T, &["vnt2", "vnt3"]);
}

/// GSO: with TSO on, the pods' kernels hand over TCP super-frames (up to 64 KiB) that `TapIo`
/// receives as buffer chains and writes whole to the other TAP, virtio-net header included.
/// This is `TapIo` alone (a frame swapper, as the bench's `tapfwd --vnet`): each pod's gateway
/// neighbour is the other pod's MAC, so frames are accepted without an L3 rewrite.
#[test]
fn tap_gso_superframes_forwarded_as_chains() {
    if !is_root() {
        return;
    }
    const T: &str = "gso";
    {
        let node = new_ns(T, "node");
        let (a, tap_a) = make_pod(
            T,
            &node,
            "vnt2",
            Ipv4Addr::new(10, 1, 1, 3),
            POD3_MAC,
            POD4_MAC,
            Offload::Tso,
        );
        let (b, tap_b) = make_pod(
            T,
            &node,
            "vnt3",
            Ipv4Addr::new(10, 1, 1, 4),
            POD4_MAC,
            POD3_MAC,
            Offload::Tso,
        );
        let mut io = TapIo::new().unwrap();
        io.add(1, tap_a).unwrap();
        io.add(2, tap_b).unwrap();
        let waiter = io.waiter();
        let notifier = waiter.notifier();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let fwd = std::thread::spawn(move || {
            let mut pool = BufferPool::new(2048);
            let mut frame = [0u32; 256];
            let mut max_segs = 0usize;
            let mut gso_frames = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let n = io.rx_burst(&mut pool, &mut frame);
                if n == 0 {
                    waiter.wait(Some(Duration::from_millis(100))).unwrap();
                    continue;
                }
                for &bi in &frame[..n] {
                    let m = pool.meta_mut(bi);
                    let h = m.vnet_hdr;
                    max_segs = max_segs.max(h.num_buffers as usize);
                    // What virtio-input does: flags from the header.
                    if h.flags & vecnet_graph::VirtioNetHdr::F_NEEDS_CSUM != 0 {
                        m.flags |= vecnet_graph::buffer::flags::OFFLOAD_CSUM;
                    }
                    if h.gso_type != 0 {
                        m.flags |= vecnet_graph::buffer::flags::GSO;
                        gso_frames += 1;
                    }
                    let rx = m.sw_if_index[vecnet_graph::RX];
                    io.tx_burst(3 - rx, &mut pool, &[bi]);
                }
            }
            io.release_spares(&mut pool);
            assert_eq!(pool.free_count(), pool.capacity(), "buffer leak");
            (
                io.stats(1).unwrap(),
                io.stats(2).unwrap(),
                max_segs,
                gso_frames,
            )
        });
        let data = pattern(16 << 20, 5);
        let echo = tcp_echo(&a, &b, 9100, &data);
        stop.store(true, Ordering::Relaxed);
        notifier.notify();
        let (sa, sb, max_segs, gso_frames) = fwd.join().unwrap();
        assert!(
            echo == data,
            "tcp echo differs ({} vs {} bytes)",
            echo.len(),
            data.len()
        );
        eprintln!(
            "gso: max {max_segs} buffers per frame, {gso_frames} GSO frames; a {sa:?}; b {sb:?}"
        );
        assert!(gso_frames > 0 && max_segs > 1, "no super-frame seen");
        assert!(sa.rx_chained + sb.rx_chained > 0);
        for s in [sa, sb] {
            assert_eq!(
                s.rx_oversize + s.rx_errors + s.tx_errors + s.tx_eagain,
                0,
                "{s:?}"
            );
        }
    }
    assert_cleaned_up(T, &["vnt2", "vnt3"]);
}

/// TAP lifecycle: persistent TAPs survive their fd and are re-attached by name with the same
/// flags; non-persistent ones vanish with it; `TapIo::remove` hands the TAP back; frames larger
/// than a buffer are dropped and counted when chaining is off.
#[test]
fn tap_persist_attach_and_remove() {
    if !is_root() {
        return;
    }
    const T: &str = "life";
    {
        let node = new_ns(T, "node");
        let path = node.path().to_path_buf();
        node.run(|| -> vecnet_io::Result<()> {
            // Persistent: survives close, attach again (flags must match: single queue).
            let t = Tap::open(&TapConfig::new("vnp0").persist(true))?;
            drop(t);
            assert!(
                netlink::link_index("vnp0")?.is_some(),
                "persistent tap kept"
            );
            let t = Tap::open(&TapConfig::new("vnp0").offload(Offload::Tso))?;
            assert_eq!(t.offload(), Offload::Tso);
            t.set_persist(false)?;
            drop(t);
            assert!(
                netlink::link_index("vnp0")?.is_none(),
                "tap gone with its last fd"
            );
            // Kernel-chosen name, no virtio-net header (offload forced off).
            let t = Tap::open(&TapConfig::default().vnet_hdr(false).offload(Offload::Tso))?;
            assert!(t.name().starts_with("vtap"), "{}", t.name());
            assert_eq!(t.offload(), Offload::None);
            assert_eq!(t.kernel_flags()? & vecnet_io::tap::IFF_VNET_HDR, 0);
            // Multi-queue: two queues on one device.
            let q0 = Tap::open(&TapConfig::new("vnq0").multi_queue(true, 0))?;
            let q1 = Tap::open(&TapConfig::new("vnq0").multi_queue(true, 1))?;
            assert_ne!(q0.kernel_flags()? & vecnet_io::tap::IFF_MULTI_QUEUE, 0);
            assert_eq!(q1.queue(), 1);
            // Addresses, routes, txqueuelen, up/down on a TAP of this netns.
            let _r = Tap::open(&TapConfig::new("vnp2"))?;
            netlink::set_txqueuelen("vnp2", 4096)?;
            netlink::set_up("vnp2")?;
            let a = Ipv4Addr::new(172, 30, 9, 1);
            netlink::add_addr("vnp2", a, 24)?;
            netlink::add_addr("vnp2", a, 24)?; // idempotent
            assert!(netlink::addrs_v4()?.contains(&("vnp2".into(), a, 24)));
            let dst = Ipv4Addr::new(10, 20, 0, 0);
            let via = Some(Ipv4Addr::new(172, 30, 9, 2));
            netlink::add_route(dst, 16, via, "vnp2", false)?;
            let has = |r: &[netlink::RouteV4]| r.iter().any(|r| r.dst == dst && r.len == 16);
            assert!(has(&netlink::routes_v4()?));
            netlink::del_route(dst, 16, via, "vnp2")?;
            assert!(!has(&netlink::routes_v4()?));
            netlink::del_addr("vnp2", a, 24)?;
            assert!(!netlink::addrs_v4()?.iter().any(|(n, _, _)| n == "vnp2"));
            netlink::set_down("vnp2")?;
            let e = netlink::set_up("vnp-none").unwrap_err();
            assert!(matches!(e, vecnet_io::Error::NoSuchLink(_)), "{e}");
            assert_eq!(netlink::link_index("vnp-none")?, None);
            // Persistent TAP deleted by netlink.
            let _p = Tap::open(&TapConfig::new("vnp1").persist(true))?;
            netlink::del_link("vnp1")?;
            assert!(netlink::link_index("vnp1")?.is_none());
            Ok(())
        })
        .unwrap()
        .unwrap();

        // TapIo bookkeeping.
        let mut io = TapIo::new().unwrap();
        io.add(3, Tap::open_in(&path, &TapConfig::new("vnr3")).unwrap())
            .unwrap();
        io.add(9, Tap::open_in(&path, &TapConfig::new("vnr9")).unwrap())
            .unwrap();
        assert!(io
            .add(3, Tap::open_in(&path, &TapConfig::new("vnr4")).unwrap())
            .is_err());
        assert_eq!(io.len(), 2);
        let t = io.remove(3).unwrap();
        assert_eq!(t.name(), "vnr3");
        assert!(io.remove(3).is_none());
        assert_eq!(io.tap(9).unwrap().name(), "vnr9");
        assert_eq!(io.sw_if_indices().collect::<Vec<_>>(), vec![9]);
        // An idle TapIo: nothing to read, wait times out, notify wakes it.
        let mut pool = BufferPool::new(64);
        let mut out = [0u32; 8];
        assert_eq!(io.rx_burst(&mut pool, &mut out), 0);
        let t0 = Instant::now();
        assert_eq!(io.wait(Some(Duration::from_millis(50))).unwrap(), 0);
        assert!(t0.elapsed() >= Duration::from_millis(40));
        io.waiter().notifier().notify();
        let t0 = Instant::now();
        io.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "notify wakes the waiter"
        );
        io.release_spares(&mut pool);
        assert_eq!(pool.free_count(), 64);
        // Sending on an unknown interface frees the buffers.
        let bi = pool.alloc().unwrap();
        io.tx_burst(42, &mut pool, &[bi]);
        assert_eq!(io.tx_no_device, 1);
        assert_eq!(pool.free_count(), 64);
    }
    assert_cleaned_up(T, &["vnp0", "vnp1", "vnp2", "vnq0", "vnr3", "vnr9"]);
}

/// (d) Everything a pod setup creates is gone after teardown, also when the test body panics
/// half-way (the guards run during unwinding).
#[test]
fn teardown_removes_namespaces_and_links() {
    if !is_root() {
        return;
    }
    const T: &str = "clean";
    let r = std::panic::catch_unwind(|| {
        let node = new_ns(T, "node");
        let (pod, tap) = make_pod(
            T,
            &node,
            "vnt5",
            Ipv4Addr::new(10, 1, 1, 5),
            POD3_MAC,
            TAP2_MAC,
            Offload::Csum,
        );
        let names = netns::list().unwrap();
        assert!(names.contains(&pod.ns.name().to_string()));
        assert!(names.contains(&node.name().to_string()));
        // The pod's view: eth0 with its address, nothing of ours in the node netns any more.
        let addrs = pod.ns.run(netlink::addrs_v4).unwrap().unwrap();
        assert!(
            addrs.contains(&("eth0".to_string(), Ipv4Addr::new(10, 1, 1, 5), 32)),
            "{addrs:?}"
        );
        assert!(node
            .run(|| netlink::link_index("vnt5"))
            .unwrap()
            .unwrap()
            .is_none());
        drop(tap);
        panic!("deliberate failure after setup");
    });
    assert!(r.is_err());
    assert_cleaned_up(T, &["vnt5"]);
}

/// A pod whose TAP has checksum offload talks to a pod whose TAP has no virtio-net header at
/// all: frames from the first carry partial checksums, which the data plane must complete in
/// software before writing them to the second (which cannot carry `NEEDS_CSUM`).
#[test]
fn partial_checksums_completed_for_tap_without_vnet_hdr() {
    if !is_root() {
        return;
    }
    const T: &str = "swcsum";
    {
        let node = new_ns(T, "node");
        let (a, tap_a) = make_pod(
            T,
            &node,
            "vnt2",
            Ipv4Addr::new(10, 1, 1, 3),
            POD3_MAC,
            TAP2_MAC,
            Offload::Csum,
        );
        let plain = TapConfig::new("vnt3").persist(true).vnet_hdr(false);
        let (b, tap_b) = make_pod_cfg(
            T,
            &node,
            &plain,
            Ipv4Addr::new(10, 1, 1, 4),
            POD4_MAC,
            TAP3_MAC,
        );
        assert!(!tap_b.has_vnet_hdr());
        let mut io = TapIo::new().unwrap();
        io.add(6, tap_a).unwrap();
        io.add(7, tap_b).unwrap();
        let mut cfg = DataplaneConfig::default();
        add_pod_to_config(&mut cfg, "tap2", 6, &a);
        add_pod_to_config(&mut cfg, "tap3", 7, &b);
        let dp = RunningDp::start(cfg, io, 0);
        // UDP (checksum offset 6) and TCP (16) from the offloading pod.
        let ua = a.ns.run(|| UdpSocket::bind((a.ip, 0))).unwrap().unwrap();
        let ub = b.ns.run(|| UdpSocket::bind((b.ip, 5353))).unwrap().unwrap();
        ub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = pattern(1200, 21);
        ua.send_to(&msg, (b.ip, 5353)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = ub.recv_from(&mut buf).expect("udp with completed checksum");
        assert_eq!(&buf[..n], &msg[..]);
        let data = pattern(1 << 20, 13);
        let echo = tcp_echo(&a, &b, 8081, &data);
        assert!(echo == data, "tcp echo differs");
        let report = dp.stop();
        let sb = report.stats.iter().find(|(sw, _)| *sw == 7).unwrap().1;
        assert!(sb.tx_sw_csum > 0, "{sb:?}");
        assert_eq!(sb.tx_errors + sb.tx_gso_dropped, 0, "{sb:?}");
    }
    assert_cleaned_up(T, &["vnt2", "vnt3"]);
}

/// Not a pass/fail test: small-packet rate through the data plane on TAPs. Run with
/// `cargo test --release -p vecnet-io --test tap -- --ignored --nocapture udp_rate`.
#[test]
#[ignore]
fn udp_rate_through_dataplane() {
    if !is_root() {
        return;
    }
    const T: &str = "rate";
    let node = new_ns(T, "node");
    let (a, tap_a) = make_pod(
        T,
        &node,
        "vnt2",
        Ipv4Addr::new(10, 1, 1, 3),
        POD3_MAC,
        TAP2_MAC,
        Offload::Csum,
    );
    let (b, tap_b) = make_pod(
        T,
        &node,
        "vnt3",
        Ipv4Addr::new(10, 1, 1, 4),
        POD4_MAC,
        TAP3_MAC,
        Offload::Csum,
    );
    let mut io = TapIo::new().unwrap();
    io.add(6, tap_a).unwrap();
    io.add(7, tap_b).unwrap();
    let mut cfg = DataplaneConfig::default();
    add_pod_to_config(&mut cfg, "tap2", 6, &a);
    add_pod_to_config(&mut cfg, "tap3", 7, &b);
    let dp = RunningDp::start(cfg, io, 0);
    let ua = a.ns.run(|| UdpSocket::bind((a.ip, 0))).unwrap().unwrap();
    let ub = b.ns.run(|| UdpSocket::bind((b.ip, 5001))).unwrap().unwrap();
    ub.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let rx = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = [0u8; 64];
        while ub.recv_from(&mut buf).is_ok() || !stop2.load(Ordering::Relaxed) {
            n += 1;
        }
        n
    });
    let t0 = Instant::now();
    let mut sent = 0u64;
    let dst = SocketAddr::from((b.ip, 5001));
    while t0.elapsed() < Duration::from_secs(3) {
        if ua.send_to(&[0u8; 18], dst).is_ok() {
            sent += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let got = rx.join().unwrap();
    let report = dp.stop();
    eprintln!(
        "udp 64-byte frames: sent {:.0} pps, received {:.0} pps ({got}/{sent})",
        sent as f64 / secs,
        got as f64 / secs
    );
    for (sw, s) in &report.stats {
        eprintln!("tap {sw}: {s:?}");
    }
}
