//! End-to-end tests: real kernel TCP and UDP through vecnet. Each test starts `vecnetd run` on a
//! host namespace of its own, attaches pods through the real `vecnet-cni` binary, talks with real
//! clients (`curl`, `ping`, `iperf3` under `ip netns exec`, std sockets bound inside a namespace)
//! and inspects the data plane with `vecnetctl`. Everything a test creates is removed when it
//! ends, also when it fails, and [`Node::finish`] checks that nothing is left.
//!
//! Needs root and iproute2, curl, iputils-ping and iperf3 (`scripts/test.sh` installs them), and
//! the workspace's binaries (`cargo build --workspace`). A missing piece fails the test with the
//! reason; `VECNET_E2E=skip` skips them explicitly.

mod e2e_support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use e2e_support::*;
use serde_json::Value;
use vecnet_io::netns;

const SEED_MANIFESTS: &str = include_str!("../scenarios/demo-manifests.yaml");

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(v4(ip, port))
}

/// One packet of `show trace`: the node names in order and the full text.
struct TracedPacket {
    nodes: Vec<String>,
    text: String,
}

fn parse_trace(trace: &str) -> Vec<TracedPacket> {
    trace
        .split("\nPacket ")
        .skip(1)
        .map(|p| {
            let nodes = p
                .lines()
                .filter_map(|l| {
                    // "00:00:01:234567: virtio-input"
                    let (stamp, node) = l.rsplit_once(": ")?;
                    let digits = stamp.chars().filter(|c| c.is_ascii_digit()).count();
                    (digits >= 7
                        && stamp.chars().all(|c| c.is_ascii_digit() || c == ':')
                        && !node.contains(' '))
                    .then(|| node.to_string())
                })
                .collect();
            TracedPacket {
                nodes,
                text: p.to_string(),
            }
        })
        .collect()
}

/// Test 1: The seed's flow with curl: the client pod 10.1.1.3 (`tap2`) reaches Service
/// 10.104.221.85:80 whose endpoint 10.20.0.2:8080 is in the host network stack, with the seed's
/// policies; the trace shows the seed's node sequences and the NAT session.
#[test]
fn seed_flow_pod_to_service_with_host_endpoint() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("seed", shared_slot());
    let host = node.host_ns.clone();
    node.serve_http(&host, v4(HOST_IP, 8080), "host");
    // A first pod takes tap1 / 10.1.1.2, so the client gets tap2 / 10.1.1.3 as in the seed.
    let _pod1 = node.add_pod("pod1");
    let client = node.add_pod("client");
    assert_eq!(
        client.ip,
        Ipv4Addr::new(10, 1, 1, 3),
        "the seed's client address"
    );
    std::fs::write(node.dir.join("manifests/seed.yaml"), SEED_MANIFESTS)
        .expect("write the seed's manifests");

    let url = format!("http://{SEED_VIP}/");
    let first = curl_ok(&client.netns, &url);
    assert_eq!(first.remote, sa(SEED_VIP, 80), "curl talks to the VIP");

    // One traced exchange.
    node.ctl(&["clear", "trace"]);
    node.ctl(&["trace", "add", "virtio-input", "20"]);
    let r = curl(&client.netns, &url).expect("curl through the Service");
    assert_eq!(r.code, 200);
    assert_eq!(
        r.remote.ip().to_string(),
        "10.104.221.85",
        "the answer comes from the VIP"
    );
    assert!(r.body.starts_with("host here"), "{}", r.body);
    assert_eq!(
        r.seen_as(),
        r.local,
        "the endpoint sees the client pod's own address and port"
    );
    assert_eq!(r.seen_as().ip(), client.ip);

    let trace = node.ctl(&["show", "trace", "max", "20"]);
    let packets = parse_trace(&trace);
    let syn = format!("TCP: {} -> {SEED_VIP}", client.ip);
    let request = packets
        .iter()
        .find(|p| p.text.contains(&syn) && p.text.contains("flags 0x02 SYN,"))
        .unwrap_or_else(|| panic!("no traced SYN from the client to the VIP:\n{trace}"));
    assert_eq!(
        request.nodes,
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "acl-plugin-in-ip4-fa",
            "nat44-out2in",
            "ip4-lookup",
            "ip4-rewrite",
            "acl-plugin-out-ip4-fa",
            "tap0-output"
        ],
        "the seed's request path:\n{}",
        request.text
    );
    assert!(
        request.text.contains("virtio: hw_if_index 6 next-index 4"),
        "{}",
        request.text
    );
    assert!(
        request.text.contains("TCP: 10.1.1.3 -> 10.20.0.2"),
        "translated to the endpoint:\n{}",
        request.text
    );
    let session: u32 = request
        .text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("NAT44_OUT2IN: sw_if_index 6, next index 1, session index ")
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("nat44-out2in without a session index:\n{}", request.text));
    let reply = packets
        .iter()
        .find(|p| {
            p.text.contains("TCP: 10.20.0.2 -> 10.1.1.3") && p.text.contains("flags 0x12 SYN ACK")
        })
        .unwrap_or_else(|| panic!("no traced SYN-ACK from the endpoint:\n{trace}"));
    assert_eq!(
        reply.nodes,
        [
            "virtio-input",
            "ethernet-input",
            "ip4-input",
            "acl-plugin-in-ip4-fa",
            "nat44-in2out",
            "nat44-in2out-slowpath",
            "ip4-lookup",
            "ip4-rewrite",
            "acl-plugin-out-ip4-fa",
            "tap2-output"
        ],
        "the seed's response path:\n{}",
        reply.text
    );
    assert!(
        reply.text.contains(&format!(
            "NAT44_IN2OUT_SLOW_PATH: sw_if_index 2, next index 0, session {session}"
        )),
        "the reply uses the request's session {session}:\n{}",
        reply.text
    );
    assert!(
        reply.text.contains("TCP: 10.104.221.85 -> 10.1.1.3"),
        "source back to the VIP:\n{}",
        reply.text
    );

    let summary = node.ctl(&["show", "nat44", "sessions"]);
    assert!(
        summary
            .lines()
            .any(|l| l.trim().starts_with("10.1.1.3: ") && !l.contains(" 0 static translations")),
        "show nat44 sessions lists the client's sessions:\n{summary}"
    );
    let sessions = node.ctl(&["show", "nat44", "sessions", "detail"]);
    let block = sessions
        .split("o2i 10.104.221.85 proto 6 port 80")
        .skip(1)
        .find(|b| b.contains(&format!("external host {}", r.local)))
        .unwrap_or_else(|| {
            panic!(
                "show nat44 sessions lacks the traced session of {}:\n{sessions}",
                r.local
            )
        });
    assert!(
        block.contains(&format!("session index {session}")),
        "{sessions}"
    );
    assert!(
        sessions.contains("i2o 10.20.0.2 proto 6 port 8080"),
        "{sessions}"
    );
    node.finish();
}

/// Test 2: Pod to pod on the node: TCP (curl to an HTTP server in the other pod) and UDP echo.
#[test]
fn pod_to_pod_tcp_and_udp() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("pod-to-pod", shared_slot());
    let a = node.add_pod("a");
    let b = node.add_pod("b");
    node.serve_http(&a.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "a");
    node.serve_udp_echo(&a.netns, v4(Ipv4Addr::UNSPECIFIED, 7777));

    let r = curl_ok(&b.netns, &format!("http://{}:8080/", a.ip));
    assert_eq!(r.remote, sa(a.ip, 8080));
    assert_eq!(r.seen_as(), r.local);
    assert_eq!(r.seen_as().ip(), b.ip, "no translation between pods");

    let (answer, from) = udp_request(&b.netns, v4(a.ip, 7777), "ping-udp");
    assert_eq!(
        from,
        sa(a.ip, 7777),
        "the answer comes from the server's address"
    );
    assert!(
        answer.starts_with(&format!("echo ping-udp from {}:", b.ip)),
        "{answer}"
    );
    node.finish();
}

/// Test 3: Pod to the host network stack and host to pod, by their own addresses (no Service).
#[test]
fn pod_to_host_and_host_to_pod() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("pod-host", shared_slot());
    let host = node.host_ns.clone();
    node.serve_http(&host, v4(HOST_IP, 8080), "host");
    node.serve_udp_echo(&host, v4(HOST_IP, 7777));
    let p = node.add_pod("p");
    node.serve_http(&p.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "pod");

    let r = curl_ok(&p.netns, &format!("http://{HOST_IP}:8080/"));
    assert_eq!(r.remote, sa(HOST_IP, 8080));
    assert_eq!(r.seen_as().ip(), p.ip, "the host sees the pod's address");
    let (answer, from) = udp_request(&p.netns, v4(HOST_IP, 7777), "to-host");
    assert_eq!(from, sa(HOST_IP, 7777));
    assert!(
        answer.starts_with(&format!("echo to-host from {}:", p.ip)),
        "{answer}"
    );

    // The host reaches the pod subnet through vpp1 -> tap0 (route 10.1.0.0/16 via 172.30.1.1).
    let r = curl_ok(&host, &format!("http://{}:8080/", p.ip));
    assert_eq!(r.remote, sa(p.ip, 8080));
    assert_eq!(r.seen_as(), r.local);
    assert_eq!(
        r.seen_as().ip(),
        VPP1_IP,
        "the pod sees the host's vpp1 address"
    );
    node.finish();
}

/// The host stack reaches a Service whose endpoint is the host stack itself (kube-proxy handles
/// this in the host's OUTPUT chain): the source is translated to the NAT loopback, otherwise the
/// host would answer itself directly and the connection would never complete.
#[test]
fn host_to_a_service_with_a_host_endpoint() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("host-svc-host", shared_slot());
    let host = node.host_ns.clone();
    node.serve_http(&host, v4(HOST_IP, 8080), "host");
    let vip = Ipv4Addr::new(10, 96, 0, 70);
    node.write_manifest(
        "hostsvc.json",
        &service_objects(&ServiceSpec {
            name: "hostsvc",
            cluster_ip: vip,
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: None,
            endpoints: &[HOST_IP],
        }),
    );
    let r = curl_ok(&host, &format!("http://{vip}/"));
    assert_eq!(r.remote, sa(vip, 80), "the answer comes from the VIP");
    assert_eq!(
        r.seen_as().ip(),
        Ipv4Addr::new(10, 1, 1, 254),
        "the host endpoint sees the NAT loopback"
    );
    let sessions = node.ctl(&["show", "nat44", "sessions", "detail"]);
    assert!(
        sessions.contains(&format!("twice-nat source {}", r.seen_as())),
        "{sessions}"
    );
    node.finish();
}

/// Test 4: Hairpin: a pod reaches its own Service; the source is translated to the NAT loopback so
/// the answer comes back through vecnet.
#[test]
fn hairpin_pod_reaches_its_own_service() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("hairpin", shared_slot());
    let web = node.add_pod("web");
    node.serve_http(&web.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "web");
    let vip = Ipv4Addr::new(10, 96, 0, 50);
    let mut objects = vec![pod_object(&web, &[("app", "web")])];
    objects.extend(service_objects(&ServiceSpec {
        name: "web",
        cluster_ip: vip,
        protocol: "TCP",
        port: 80,
        target_port: 8080,
        node_port: None,
        endpoints: &[web.ip],
    }));
    node.write_manifest("web.json", &objects);

    let r = curl_ok(&web.netns, &format!("http://{vip}/"));
    assert_eq!(r.remote, sa(vip, 80), "the answer comes from the VIP");
    assert_eq!(r.local.ip(), web.ip);
    let nat_loopback: Ipv4Addr = node
        .ctl(&["ipam"])
        .lines()
        .find_map(|l| l.strip_prefix("NAT loopback:"))
        .and_then(|s| s.trim().parse().ok())
        .expect("vecnetctl ipam names the NAT loopback");
    assert_eq!(nat_loopback, Ipv4Addr::new(10, 1, 1, 254));
    assert_eq!(
        r.seen_as().ip(),
        nat_loopback,
        "self-twice-NAT: the pod sees the NAT loopback, not itself"
    );
    let sessions = node.ctl(&["show", "nat44", "sessions", "detail"]);
    assert!(
        sessions.contains(&format!("external host {}", r.local))
            && sessions.contains(&format!("twice-nat source {}", r.seen_as())),
        "the hairpin session and its twice-NAT source:\n{sessions}"
    );
    node.finish();
}

/// Test 5: UDP through a Service: a DNS-like echo server in a pod behind 10.96.0.10:53/UDP;
/// the answer comes from the VIP and port.
#[test]
fn udp_through_a_service() {
    if !preflight(&[]) {
        return;
    }
    let mut node = Node::start("udp-svc", shared_slot());
    let dns = node.add_pod("dns");
    let client = node.add_pod("client");
    node.serve_udp_echo(&dns.netns, v4(Ipv4Addr::UNSPECIFIED, 5353));
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut objects = vec![
        pod_object(&dns, &[("app", "dns")]),
        pod_object(&client, &[("app", "client")]),
    ];
    objects.extend(service_objects(&ServiceSpec {
        name: "dns",
        cluster_ip: vip,
        protocol: "UDP",
        port: 53,
        target_port: 5353,
        node_port: None,
        endpoints: &[dns.ip],
    }));
    node.write_manifest("dns.json", &objects);

    let (answer, from) = udp_request(&client.netns, v4(vip, 53), "query example.org A");
    assert_eq!(from, sa(vip, 53), "the answer comes from the VIP:port");
    assert!(
        answer.starts_with(&format!("echo query example.org A from {}:", client.ip)),
        "the server sees the client pod's address: {answer}"
    );
    let sessions = node.ctl(&["show", "nat44", "sessions", "detail"]);
    assert!(
        sessions.contains("o2i 10.96.0.10 proto 17 port 53"),
        "{sessions}"
    );
    node.finish();
}

/// Test 6: NodePort from the host namespace. The renderer serves NodePorts on the node's NodePort
/// addresses (`ServiceNode`: the host-link Linux side 172.30.1.2, the IPAM node IP
/// 192.168.16.1 and the host's own addresses). Those on the host itself (172.30.1.2, 10.20.0.2)
/// are delivered locally by the host kernel and never reach vecnet, so the host reaches the
/// NodePort on the node IP, which on a real node is the data plane's uplink address and is
/// routed to vecnet: here the test adds `192.168.16.1/32 via 172.30.1.1` in its host namespace.
/// A pod reaches the NodePort on the host-link address 172.30.1.2 (through its default route).
#[test]
fn nodeport_from_the_host_and_a_pod() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("nodeport", shared_slot());
    let host = node.host_ns.clone();
    let web = node.add_pod("web");
    let client = node.add_pod("client");
    node.serve_http(&web.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "web");
    let mut objects = vec![
        pod_object(&web, &[("app", "web")]),
        pod_object(&client, &[("app", "client")]),
    ];
    objects.extend(service_objects(&ServiceSpec {
        name: "web",
        cluster_ip: Ipv4Addr::new(10, 96, 0, 80),
        protocol: "TCP",
        port: 80,
        target_port: 8080,
        node_port: Some(30080),
        endpoints: &[web.ip],
    }));
    node.write_manifest("web.json", &objects);
    node.sh(
        &host,
        &[
            "ip",
            "route",
            "add",
            &format!("{NODE_IP}/32"),
            "via",
            &TAP0_IP.to_string(),
            "dev",
            "vpp1",
        ],
    );

    let r = curl_ok(&host, &format!("http://{NODE_IP}:30080/"));
    assert_eq!(
        r.remote,
        sa(NODE_IP, 30080),
        "the answer comes from the NodePort address"
    );
    assert_eq!(
        r.seen_as(),
        r.local,
        "host traffic is of internal origin: its source is kept"
    );
    assert_eq!(r.seen_as().ip(), VPP1_IP);

    let r = curl_ok(&client.netns, &format!("http://{VPP1_IP}:30080/"));
    assert_eq!(r.remote, sa(VPP1_IP, 30080));
    assert_eq!(r.seen_as().ip(), client.ip);

    // The same Service by its ClusterIP from the host (the host routes 10.96.0.0/12 to vecnet).
    let r = curl_ok(&host, "http://10.96.0.80/");
    assert_eq!(r.remote, sa(Ipv4Addr::new(10, 96, 0, 80), 80));
    assert_eq!(r.seen_as().ip(), VPP1_IP);
    node.finish();
}

/// Test 7: A NetworkPolicy that denies, then allows after an update (the daemon rescans its
/// manifests directory every second).
#[test]
fn network_policy_denies_then_allows_after_update() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let mut node = Node::start("policy", shared_slot());
    let web = node.add_pod("web");
    let client = node.add_pod("client");
    let other = node.add_pod("other");
    node.serve_http(&web.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "web");
    node.write_manifest(
        "pods.json",
        &[
            pod_object(&web, &[("app", "web")]),
            pod_object(&client, &[("app", "client")]),
            pod_object(&other, &[("app", "other")]),
        ],
    );
    let url = format!("http://{}:8080/", web.ip);
    curl_ok(&client.netns, &url);

    let policy = |from_app: &str| {
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-ingress", "namespace": "default"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"app": from_app}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}]
                }]
            }
        })
    };
    // Only app=monitor may reach web: the client's SYNs are dropped (curl times out).
    node.write_manifest("policy.json", &[policy("monitor")]);
    let denied = poll("the policy denies client -> web", DEADLINE, || {
        match curl(&client.netns, &url) {
            Ok(r) => Err(format!("still allowed (HTTP {})", r.code)),
            Err(e) => Ok(e),
        }
    });
    assert!(
        denied.contains("(28)"),
        "denied traffic times out (dropped, not refused): {denied}"
    );
    let again = curl(&client.netns, &url).expect_err("the policy keeps denying");
    assert!(again.contains("(28)"), "{again}");
    let acls = node.ctl(&["show", "acl-plugin", "acl"]);
    assert!(acls.contains("vecnet-policy"), "{acls}");
    // The node's host stack may always reach an isolated pod (kubelet probes).
    let host = node.host_ns.clone();
    curl_ok(&host, &url);

    // Allow app=client: the client gets through, the other pod still does not.
    node.write_manifest("policy.json", &[policy("client")]);
    let r = curl_ok(&client.netns, &url);
    assert_eq!(r.seen_as().ip(), client.ip);
    let still = curl(&other.netns, &url).expect_err("app=other is still denied");
    assert!(still.contains("(28)"), "{still}");
    node.finish();
}

/// Test 8: Ping of the pod gateway 10.1.1.1 (answered by vecnet itself).
#[test]
fn ping_the_pod_gateway() {
    if !preflight(&[("ping", "iputils-ping")]) {
        return;
    }
    let mut node = Node::start("ping", shared_slot());
    let p = node.add_pod("p");
    let (got, out) = ping(&p.netns, POD_GW, 3);
    assert_eq!(got, 3, "ping 10.1.1.1 from the pod:\n{out}");
    assert!(
        out.contains(&format!("from {POD_GW}: icmp_seq=1 ttl=64")),
        "{out}"
    );
    let errors = node.ctl(&["show", "errors"]);
    assert!(errors.contains("echo replies sent"), "{errors}");
    node.finish();
}

/// Test 9: CNI ADD / CHECK / DEL through the real `vecnet-cni` binary; DEL twice; CHECK after DEL;
/// a missing variable; VERSION without a daemon.
#[test]
fn cni_add_check_del_round_trip() {
    if !preflight(&[]) {
        return;
    }
    // VERSION needs no daemon.
    let v = cni_exec(
        std::path::Path::new("/nonexistent/vecnetd.sock"),
        &CniEnv {
            command: "VERSION",
            ..Default::default()
        },
    );
    assert!(v.status.success(), "{v:?}");
    let j = v.json();
    assert_eq!(j["cniVersion"], "1.1.0", "{j}");
    assert!(
        j["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&Value::from("1.1.0"))),
        "{j}"
    );

    // STATUS without a daemon: "plugin not available" (50).
    let st = cni_exec(
        std::path::Path::new("/nonexistent/vecnetd.sock"),
        &CniEnv {
            command: "STATUS",
            ..Default::default()
        },
    );
    assert!(!st.status.success(), "{st:?}");
    assert_eq!(st.json()["code"], 50, "{st:?}");

    let mut node = Node::start("cni", shared_slot());
    let st = node.cni(&CniEnv {
        command: "STATUS",
        ..Default::default()
    });
    assert!(
        st.status.success() && st.stdout.trim().is_empty(),
        "STATUS with the daemon: {st:?}"
    );
    let ns = node.create_ns("pod");
    let netns_path = netns::path(&ns).display().to_string();
    let env = |command| CniEnv {
        command,
        container_id: Some("c0ffee"),
        netns: Some(&netns_path),
        ifname: Some("eth0"),
        args: Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod"),
    };

    // A call with a missing variable gets error 4 in the spec's shape and changes nothing.
    let bad = node.cni(&CniEnv {
        ifname: None,
        ..env("ADD")
    });
    assert!(!bad.status.success(), "{bad:?}");
    let j = bad.json();
    assert_eq!(j["code"], 4, "{j}");
    assert_eq!(j["cniVersion"], "1.1.0", "{j}");
    assert!(j["msg"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    assert!(
        j["details"]
            .as_str()
            .is_some_and(|d| d.contains("CNI_IFNAME")),
        "{j}"
    );
    assert!(!node.ctl(&["pods"]).contains("default/pod"));

    // An incompatible cniVersion: error 1, nothing changes.
    let mut conf = cni_conf(&node.socket);
    conf["cniVersion"] = "0.1.0".into();
    let bad = cni_exec_conf(&conf, &env("ADD"));
    assert!(!bad.status.success(), "{bad:?}");
    assert_eq!(bad.json()["code"], 1, "{bad:?}");
    assert!(!node.ctl(&["pods"]).contains("default/pod"));

    let add = node.cni(&env("ADD"));
    assert!(add.status.success(), "{add:?}");
    let r = add.json();
    assert_eq!(r["cniVersion"], "1.1.0", "{r}");
    assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
    assert_eq!(r["interfaces"][0]["sandbox"], netns_path.as_str(), "{r}");
    assert_eq!(r["ips"][0]["address"], "10.1.1.2/32", "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.1.1.1", "{r}");
    let mac = r["interfaces"][0]["mac"].as_str().expect("mac").to_string();
    // The pod side as SYSTEM.md 3.5 lays it out.
    let addr = node.sh(&ns, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.1.1.2/32"), "{addr}");
    let link = node.sh(&ns, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains(&format!("link/ether {mac}")) && link.contains("UP"),
        "{link}"
    );
    let routes = node.sh(&ns, &["ip", "-4", "route", "show"]);
    assert!(routes.contains("default via 10.1.1.1 dev eth0"), "{routes}");
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("10.1.1.1 dev eth0 ") && l.contains("scope link")),
        "{routes}"
    );
    let neigh = node.sh(
        &ns,
        &["ip", "-4", "neigh", "show", "10.1.1.1", "dev", "eth0"],
    );
    assert!(neigh.contains("PERMANENT"), "{neigh}");
    let pods = node.ctl(&["pods"]);
    assert!(
        pods.contains("default/pod") && pods.contains("10.1.1.2"),
        "{pods}"
    );

    assert!(
        node.ctl(&["ipam"]).contains("10.1.1.2 "),
        "the address is allocated"
    );

    let check = node.cni(&env("CHECK"));
    assert!(
        check.status.success() && check.stdout.trim().is_empty(),
        "{check:?}"
    );

    for round in 1..=2 {
        let del = node.cni(&env("DEL"));
        assert!(del.status.success(), "DEL #{round}: {del:?}");
        assert!(del.stdout.trim().is_empty(), "DEL #{round}: {del:?}");
    }
    let gone = netns_exec(&ns, &["ip", "link", "show", "dev", "eth0"]);
    assert!(
        !gone.status.success(),
        "eth0 is removed from the pod namespace by DEL"
    );
    assert!(!node.ctl(&["pods"]).contains("default/pod"));
    let ipam = node.ctl(&["ipam"]);
    assert!(
        !ipam.contains("10.1.1.2 "),
        "the address is released:\n{ipam}"
    );

    let check = node.cni(&env("CHECK"));
    assert!(!check.status.success(), "CHECK after DEL fails: {check:?}");
    let j = check.json();
    assert_eq!(j["code"], 3, "unknown container: {j}");
    assert_eq!(j["cniVersion"], "1.1.0", "{j}");
    node.finish();
}

/// Test 10: A bulk TCP transfer pod to pod with `iperf3` (checksum offload on the TAPs): it
/// completes and both ends count the same bytes. A sanity check, not a timed benchmark.
#[test]
fn iperf3_transfer_pod_to_pod() {
    if !preflight(&[("iperf3", "iperf3"), ("ss", "iproute2")]) {
        return;
    }
    const BYTES: u64 = 32 << 20;
    let mut node = Node::start("iperf3", exclusive_slot());
    let server = node.add_pod("server");
    let client = node.add_pod("client");
    let srv = node.spawn_in(&server.netns, &["iperf3", "-s", "-1", "-J", "-p", "5201"]);
    poll("iperf3 server listening", DEADLINE, || {
        let out = netns_exec(&server.netns, &["ss", "-Hltn", "sport", "=", ":5201"]);
        if String::from_utf8_lossy(&out.stdout).contains("5201") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    // Trace the first frames of the transfer: the kernel hands them over checksum-partial
    // (virtio-net NEEDS_CSUM), i.e. the offload is on.
    node.ctl(&["clear", "trace"]);
    node.ctl(&["trace", "add", "virtio-input", "20"]);
    let started = Instant::now();
    let cli = netns_exec(
        &client.netns,
        &[
            "iperf3",
            "-c",
            &server.ip.to_string(),
            "-p",
            "5201",
            "-n",
            &BYTES.to_string(),
            "-w",
            "256K",
            "-J",
            "--connect-timeout",
            "5000",
        ],
    );
    let elapsed = started.elapsed();
    let srv_out = node.wait_child(srv, Duration::from_secs(20));
    let parse = |what: &str, o: &std::process::Output| -> Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 {what}: no JSON ({e}); status {}:\n{}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    };
    let c = parse("client", &cli);
    let s = parse("server", &srv_out);
    assert!(
        cli.status.success() && c.get("error").is_none(),
        "iperf3 client: {c}"
    );
    assert!(
        srv_out.status.success() && s.get("error").is_none(),
        "iperf3 server: {s}"
    );
    let bytes = |v: &Value, sum: &str| -> u64 {
        v["end"][sum]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("iperf3 JSON without end.{sum}.bytes: {v}"))
    };
    let (sent, received) = (bytes(&c, "sum_sent"), bytes(&s, "sum_received"));
    assert_eq!(sent, BYTES, "the client sent exactly what it was asked to");
    // The client's report carries the receiver's count too: both ends agree on it.
    assert_eq!(
        bytes(&c, "sum_received"),
        received,
        "the client's copy of the receiver's count"
    );
    // iperf3 stops counting at the receiver when the sender's TEST_END arrives on the control
    // connection, so what is still in flight at that moment is not counted (esnet/iperf#382).
    // With fixed socket buffers (-w), that is at most the sender's send buffer plus the
    // receiver's receive buffer; anything more would be data lost in the data plane.
    let buf = |v: &Value, k: &str| {
        v["start"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("iperf3 JSON without start.{k}: {v}"))
    };
    let in_flight_max = buf(&c, "sndbuf_actual") + buf(&s, "rcvbuf_actual");
    assert!(
        received <= sent && sent - received <= in_flight_max,
        "the receiver counted {received} of {sent} bytes; at most {in_flight_max} may be uncounted"
    );
    let trace = node.ctl(&["show", "trace", "max", "20"]);
    assert!(
        trace.contains("hdr: flags 0x01 "),
        "TCP frames from the pods arrive with a partial checksum (NEEDS_CSUM: offload on):\n{trace}"
    );
    let gso = trace.contains("gso_type 0x01");
    eprintln!(
        "iperf3: {sent} bytes sent, {received} counted by the receiver, in {elapsed:?} \
         ({:.0} Mbit/s; TCPv4 GSO frames among the traced: {gso})",
        c["end"]["sum_sent"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    );
    node.finish();
}

/// Test 11: A test that fails half-way leaves nothing behind either: the guard stops the daemon,
/// kills the processes and server threads it started and deletes its namespaces and files while
/// the panic unwinds.
#[test]
fn a_failing_test_leaves_nothing_behind() {
    if !preflight(&[("curl", "curl")]) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let mut node = Node::start("failing", shared_slot());
        let p = node.add_pod("p");
        node.serve_http(&p.netns, v4(Ipv4Addr::UNSPECIFIED, 8080), "p");
        node.spawn_in(&p.netns, &["sleep", "30"]);
        curl_ok(&node.host_ns, &format!("http://{}:8080/", p.ip));
        tx.send(node.leftovers()).expect("send");
        panic!("deliberate failure with a daemon, a pod, a server and a process running");
    })
    .join();
    assert!(failed.is_err(), "the inner test panicked");
    let probe = rx
        .recv()
        .expect("the inner test got as far as its deliberate panic");
    let problems = probe.check();
    assert!(problems.is_empty(), "after a failed test: {problems:#?}");
}
