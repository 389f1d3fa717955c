//! The TAP fast path allocates nothing: a data plane on real TAPs forwards UDP and a TCP
//! transfer between two pods while a counting global allocator watches its thread (root
//! required; skipped with a notice otherwise). Its own test binary, so that the allocator
//! counts nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vecnet_io::netns::{self, NetnsGuard};
use vecnet_io::{netlink, Offload, Tap, TapConfig, TapIo};
use vecnet_nodes::InterfaceKind;
use vecnet_vswitch::{
    Dataplane, DataplaneConfig, DataplaneOptions, InterfaceConfig, NeighbourConfig, Path,
    RouteConfig,
};
use vecnet_wire::MacAddr;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the data-plane thread while it is measured. A const-initialised `Cell` needs no
    /// lazy registration, so reading it inside the allocator cannot recurse.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if WATCHED.try_with(|w| w.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

fn new_ns(role: &str) -> NetnsGuard {
    let name = format!("vn-io-{}-alloc-{role}", std::process::id());
    let _ = netns::delete(&name);
    netns::create(&name).unwrap().delete_on_drop()
}

fn pod(
    node: &NetnsGuard,
    tap: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
    gw_mac: [u8; 6],
) -> (NetnsGuard, Tap) {
    let ns = new_ns(&format!("pod{}", ip.octets()[3]));
    let t = Tap::open_in(node.path(), &TapConfig::new(tap).offload(Offload::Csum)).unwrap();
    let p = ns.path().to_path_buf();
    node.run(|| netlink::set_netns(tap, &p)).unwrap().unwrap();
    ns.run(|| -> vecnet_io::Result<()> {
        let idx = netlink::link_index(tap)?.unwrap();
        netlink::rename(idx, "eth0")?;
        netlink::set_mac("eth0", mac)?;
        netlink::set_ipv6_disabled("eth0", true)?;
        netlink::set_up("lo")?;
        netlink::set_up("eth0")?;
        netlink::add_addr("eth0", ip, 32)?;
        netlink::add_route(GW, 32, None, "eth0", true)?;
        netlink::add_route(Ipv4Addr::UNSPECIFIED, 0, Some(GW), "eth0", false)?;
        netlink::add_neigh_permanent("eth0", GW, gw_mac)
    })
    .unwrap()
    .unwrap();
    (ns, t)
}

fn iface(
    cfg: &mut DataplaneConfig,
    name: &str,
    sw: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    pod_mac: [u8; 6],
) {
    let mut i = InterfaceConfig::new(name, sw, InterfaceKind::Pod, MacAddr(mac));
    i.ip4 = vec![(GW, 32)];
    cfg.interfaces.push(i);
    cfg.routes.push(RouteConfig::new(
        ip,
        32,
        Path::Attached {
            next_hop: ip,
            sw_if_index: sw,
        },
    ));
    cfg.static_neighbours.push(NeighbourConfig {
        sw_if_index: sw,
        ip,
        mac: MacAddr(pod_mac),
    });
}

#[test]
fn tap_forwarding_allocates_nothing() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the TAP/netns tests need root");
        return;
    }
    let a_ip = Ipv4Addr::new(10, 1, 1, 3);
    let b_ip = Ipv4Addr::new(10, 1, 1, 4);
    let (a_mac, b_mac) = ([2, 0, 10, 1, 1, 3], [2, 0, 10, 1, 1, 4]);
    let (ta_mac, tb_mac) = ([2, 0xfe, 0, 0, 0, 6], [2, 0xfe, 0, 0, 0, 7]);
    let node = new_ns("node");
    let (ns_a, tap_a) = pod(&node, "vnz6", a_ip, a_mac, ta_mac);
    let (ns_b, tap_b) = pod(&node, "vnz7", b_ip, b_mac, tb_mac);
    let mut io = TapIo::new().unwrap();
    io.add(6, tap_a).unwrap();
    io.add(7, tap_b).unwrap();
    let mut cfg = DataplaneConfig::default();
    iface(&mut cfg, "tap6", 6, ta_mac, a_ip, a_mac);
    iface(&mut cfg, "tap7", 7, tb_mac, b_ip, b_mac);

    let waiter = io.waiter();
    let notifier = waiter.notifier();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let dp = std::thread::spawn(move || {
        let opts = DataplaneOptions {
            buffers: 2048,
            trace_capacity: 64,
            ..DataplaneOptions::default()
        };
        let mut dp = Dataplane::new(opts, Box::new(io)).unwrap();
        dp.apply(&cfg).unwrap();
        for _ in 0..4 {
            dp.run_once();
        }
        let mut packets = 0u64;
        WATCHED.with(|w| w.set(true));
        while !stop2.load(Ordering::Relaxed) {
            let n = dp.run_once();
            packets += n as u64;
            if n == 0 {
                let _ = waiter.wait(Some(Duration::from_millis(100)));
            }
        }
        WATCHED.with(|w| w.set(false));
        packets
    });

    // Warm the path with one UDP exchange (not measured separately: the data plane was already
    // counting, and must not allocate for the first packets either).
    let ua = ns_a.run(|| UdpSocket::bind((a_ip, 0))).unwrap().unwrap();
    let ub = ns_b.run(|| UdpSocket::bind((b_ip, 6000))).unwrap().unwrap();
    ub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..100u32 {
        ua.send_to(&i.to_be_bytes(), (b_ip, 6000)).unwrap();
        let mut b = [0u8; 16];
        let (n, _) = ub.recv_from(&mut b).expect("udp through the data plane");
        assert_eq!(&b[..n], &i.to_be_bytes());
    }
    let l = ns_b
        .run(|| TcpListener::bind((b_ip, 7000)))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let dst = SocketAddr::from((b_ip, 7000));
    let mut c = ns_a
        .run(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    c.write_all(&data).unwrap();
    drop(c);
    let got = server.join().unwrap();
    assert!(got == data, "tcp bytes differ");

    stop.store(true, Ordering::Relaxed);
    notifier.notify();
    let packets = dp.join().unwrap();
    let allocs = ALLOCS.load(Ordering::Relaxed);
    assert!(packets > 1000, "only {packets} packets");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations on the data-plane thread for {packets} packets"
    );
    drop((ns_a, ns_b, node));
}
