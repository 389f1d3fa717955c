//! The Services packet-flow table of SYSTEM.md 13.2 (kube-proxy's `packetFlowTest`): each row is
//! a new connection (source, protocol, destination, port) resolved in enumerate mode (6.11)
//! against one cluster, so nothing depends on random backend choice.
//!
//! This node is `node-1` of the default addressing plan: pods 10.1.1.0/24, NAT loopback
//! 10.1.1.254, host link 172.30.1.2, node IP 192.168.16.1, plus the seed's host-stack address
//! 10.20.0.2. `node-2` has node IP 192.168.16.2 and a management IP 198.51.100.2.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use vecnet_agent::ipam::IpamConfig;
use vecnet_agent::model::{parse_manifests, ClusterState};
use vecnet_agent::service::{
    enumerate_node, nat_config, reason, render_services, Resolution, ServiceNode, ServiceRender,
};
use vecnet_nat::{BackendSet, Proto};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
  - {type: InternalIP, address: 192.168.16.1}
  - {type: Hostname, address: node-1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status:
  addresses:
  - {type: InternalIP, address: 192.168.16.2}
  - {type: ExternalIP, address: 198.51.100.2}
---
# The seed (SYSTEM.md 5.10): a ClusterIP service whose endpoint is an address of the host
# network stack, written without a nodeName.
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec:
  clusterIP: 10.104.221.85
  ports:
  - {port: 80, targetPort: 8080, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nginx-x7k2p
  namespace: default
  labels: {kubernetes.io/service-name: nginx}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.20.0.2]
  conditions: {ready: true}
---
# NodePort + external IP, externalTrafficPolicy Cluster, named targetPort.
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: web
    image: nginx
    ports: [{name: web, containerPort: 8080}]
status: {podIP: 10.1.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-2
  containers:
  - name: web
    image: nginx
    ports: [{name: web, containerPort: 8080}]
status: {podIP: 10.1.2.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: web}
  externalIPs: [198.51.100.10]
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-8hq2n
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.1.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-1
  targetRef: {kind: Pod, name: web-a, namespace: demo}
- addresses: [10.1.2.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-2
  targetRef: {kind: Pod, name: web-b, namespace: demo}
---
# LoadBalancer, externalTrafficPolicy Local.
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalTrafficPolicy: Local
  ports:
  - {name: https, port: 443, targetPort: 8443, nodePort: 30443}
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.20}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-5fz7d
  namespace: demo
  labels: {kubernetes.io/service-name: lb}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
- addresses: [10.1.1.6]
  nodeName: node-1
- addresses: [10.1.2.6]
  nodeName: node-2
---
# ETP Local with no endpoint on this node.
apiVersion: v1
kind: Service
metadata: {name: remote-only, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.0.12
  externalTrafficPolicy: Local
  ports: [{port: 80, targetPort: 8080, nodePort: 30082}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: remote-only-1
  namespace: demo
  labels: {kubernetes.io/service-name: remote-only}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.1.2.7]
  nodeName: node-2
---
# internalTrafficPolicy Local, TCP and UDP.
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: demo}
spec:
  clusterIP: 10.96.0.13
  internalTrafficPolicy: Local
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-1
  namespace: demo
  labels: {kubernetes.io/service-name: dns}
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: [10.1.1.8]
  nodeName: node-1
- addresses: [10.1.2.8]
  nodeName: node-2
---
apiVersion: v1
kind: Service
metadata: {name: itp-remote, namespace: demo}
spec:
  clusterIP: 10.96.0.14
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: itp-remote-1
  namespace: demo
  labels: {kubernetes.io/service-name: itp-remote}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.1.2.14]
  nodeName: node-2
---
# No endpoints at all, and only unready ones.
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: demo}
spec:
  clusterIP: 10.96.0.15
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: unready, namespace: demo}
spec:
  clusterIP: 10.96.0.16
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: unready-1
  namespace: demo
  labels: {kubernetes.io/service-name: unready}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.1.1.16]
  conditions: {ready: false, serving: false, terminating: false}
  nodeName: node-1
---
# Terminating fallback (KEP-1669).
apiVersion: v1
kind: Service
metadata: {name: draining, namespace: demo}
spec:
  clusterIP: 10.96.0.17
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: draining-1
  namespace: demo
  labels: {kubernetes.io/service-name: draining}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.1.1.9]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
- addresses: [10.1.2.10]
  conditions: {ready: false, serving: false, terminating: true}
  nodeName: node-2
---
# ClientIP affinity with a single endpoint.
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: demo}
spec:
  clusterIP: 10.96.0.18
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  namespace: demo
  labels: {kubernetes.io/service-name: sticky}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.1.2.18]
  nodeName: node-2
---
# Hairpin: the client pod 10.1.1.3 backs this service itself.
apiVersion: v1
kind: Service
metadata: {name: self, namespace: demo}
spec:
  clusterIP: 10.96.0.19
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: self-1
  namespace: demo
  labels: {kubernetes.io/service-name: self}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.1.1.3]
  nodeName: node-1
- addresses: [10.1.2.19]
  nodeName: node-2
---
# SCTP is rejected with an event; the TCP port still works.
apiVersion: v1
kind: Service
metadata: {name: sig, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  ports:
  - {name: sig, port: 9000, protocol: SCTP}
  - {name: http, port: 80, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sig-1
  namespace: demo
  labels: {kubernetes.io/service-name: sig}
addressType: IPv4
ports:
- {name: sig, port: 9000, protocol: SCTP}
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [10.1.1.20]
  nodeName: node-1
---
# Several ports.
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: demo}
spec:
  clusterIP: 10.96.0.21
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, targetPort: 9100}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-1
  namespace: demo
  labels: {kubernetes.io/service-name: multi}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: metrics, port: 9100}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.1.1.21]
  nodeName: node-1
---
# Headless: nothing is rendered.
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  ports: [{port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: demo
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{port: 5432}]
endpoints:
- addresses: [10.1.1.22]
  nodeName: node-1
"#;

// Clients.
const POD: &str = "10.1.1.3"; // a pod on this node
const POD_R: &str = "10.1.2.3"; // a pod on node-2 (internal origin: pod CIDR)
const HOST: &str = "172.30.1.2"; // this node's host stack, host-link side
const HOST_IP: &str = "10.20.0.2"; // another host-stack address of this node
const NODE: &str = "192.168.16.1"; // this node's node IP
const NODE2: &str = "192.168.16.2"; // another node: external origin here
const EXT: &str = "203.0.113.7"; // outside the cluster

enum Expect {
    Set(&'static [&'static str]),
    Drop,
    Reject,
    NotAService,
}

struct Row {
    name: &'static str,
    src: &'static str,
    proto: Proto,
    dst: &'static str,
    dport: u16,
    expected: Expect,
    source_translated: bool,
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn setup() -> (ServiceRender, ServiceNode) {
    let mut state = ClusterState::default();
    for o in parse_manifests(CLUSTER).unwrap() {
        state.apply(o);
    }
    let ipam = IpamConfig::default().for_node(1).unwrap();
    let node = ServiceNode::new("node-1", ipam)
        .with_host_ips([ip(HOST_IP)])
        .with_cluster_nodes(&state);
    (render_services(&state, &node), node)
}

const TCP: Proto = Proto::Tcp;
const UDP: Proto = Proto::Udp;

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Expect::*;
    const WEB: &[&str] = &["10.1.1.5:8080", "10.1.2.5:8080"];
    const LB: &[&str] = &["10.1.1.6:8443", "10.1.2.6:8443"];
    const LB_LOCAL: &[&str] = &["10.1.1.6:8443"];
    let r = |name, src, proto, dst, dport, expected, source_translated| Row {
        name, src, proto, dst, dport, expected, source_translated,
    };
    vec![
        // The seed: pod → ClusterIP → host-network endpoint (nodeName unset).
        r("seed: pod to VIP, host-stack endpoint", POD, TCP, "10.104.221.85", 80, Set(&["10.20.0.2:8080"]), false),
        r("seed: host to VIP", HOST, TCP, "10.104.221.85", 80, Set(&["10.20.0.2:8080"]), false),
        r("seed: other port of the VIP", POD, TCP, "10.104.221.85", 8080, Reject, false),
        // ClusterIP, ETP=Cluster service.
        r("clusterIP from local pod", POD, TCP, "10.96.0.10", 80, Set(WEB), false),
        r("clusterIP from remote pod", POD_R, TCP, "10.96.0.10", 80, Set(WEB), false),
        r("clusterIP from host", HOST, TCP, "10.96.0.10", 80, Set(WEB), false),
        r("clusterIP from outside", EXT, TCP, "10.96.0.10", 80, Set(WEB), false),
        // NodePort on this node's addresses.
        r("nodePort on node IP from outside (twice-NAT)", EXT, TCP, NODE, 30080, Set(WEB), true),
        r("nodePort on node IP from another node (external)", NODE2, TCP, NODE, 30080, Set(WEB), true),
        r("nodePort on node IP from pod", POD, TCP, NODE, 30080, Set(WEB), false),
        r("nodePort on node IP from this node", NODE, TCP, NODE, 30080, Set(WEB), false),
        r("nodePort on host-link IP from host", HOST, TCP, HOST, 30080, Set(WEB), false),
        r("nodePort on host IP from outside", EXT, TCP, HOST_IP, 30080, Set(WEB), true),
        r("nodePort on host IP from host", HOST_IP, TCP, HOST_IP, 30080, Set(WEB), false),
        r("nodePort, wrong protocol", EXT, UDP, NODE, 30080, NotAService, false),
        r("nodePort, unknown port", EXT, TCP, NODE, 30999, NotAService, false),
        // NodePort on another node's addresses, intercepted here.
        r("nodePort on other node IP from pod", POD, TCP, NODE2, 30080, Set(WEB), false),
        r("nodePort on other node mgmt IP from pod", POD, TCP, "198.51.100.2", 30080, Set(WEB), false),
        r("nodePort on other node IP from host", HOST, TCP, NODE2, 30080, Set(WEB), false),
        // External IP.
        r("externalIP from outside", EXT, TCP, "198.51.100.10", 80, Set(WEB), true),
        r("externalIP from pod", POD, TCP, "198.51.100.10", 80, Set(WEB), false),
        r("externalIP, node port number is not served there", EXT, TCP, "198.51.100.10", 30080, NotAService, false),
        // LoadBalancer with ETP=Local.
        r("LB IP from outside, ETP=Local", EXT, TCP, "198.51.100.20", 443, Set(LB_LOCAL), false),
        r("LB IP from pod, short-circuit", POD, TCP, "198.51.100.20", 443, Set(LB), false),
        r("LB nodePort from outside, ETP=Local", EXT, TCP, NODE, 30443, Set(LB_LOCAL), false),
        r("LB nodePort from this node", NODE, TCP, NODE, 30443, Set(LB), false),
        r("LB nodePort on other node from outside", EXT, TCP, NODE2, 30443, Set(LB), true),
        r("LB clusterIP from pod, ETP ignored", POD, TCP, "10.96.0.11", 443, Set(LB), false),
        r("LB clusterIP from outside, ETP ignored", EXT, TCP, "10.96.0.11", 443, Set(LB), false),
        // ETP=Local with no local endpoint: filtered → DROP, internal still served.
        r("ETP=Local, no local endpoint, from outside", EXT, TCP, NODE, 30082, Drop, false),
        r("ETP=Local, no local endpoint, from pod", POD, TCP, NODE, 30082, Set(&["10.1.2.7:8080"]), false),
        r("ETP=Local, no local endpoint, clusterIP", POD, TCP, "10.96.0.12", 80, Set(&["10.1.2.7:8080"]), false),
        // ITP=Local.
        r("ITP=Local UDP from pod", POD, UDP, "10.96.0.13", 53, Set(&["10.1.1.8:53"]), false),
        r("ITP=Local TCP from remote pod", POD_R, TCP, "10.96.0.13", 53, Set(&["10.1.1.8:53"]), false),
        r("ITP=Local from host", HOST, UDP, "10.96.0.13", 53, Set(&["10.1.1.8:53"]), false),
        r("ITP=Local, no local endpoint", POD, TCP, "10.96.0.14", 80, Drop, false),
        // No endpoints vs filtered.
        r("no endpoints", POD, TCP, "10.96.0.15", 80, Reject, false),
        r("only unready endpoints", POD, TCP, "10.96.0.16", 80, Reject, false),
        // Terminating fallback.
        r("terminating fallback", POD, TCP, "10.96.0.17", 80, Set(&["10.1.1.9:8080"]), false),
        // Affinity (configuration checked below).
        r("affinity, single endpoint", POD, TCP, "10.96.0.18", 80, Set(&["10.1.2.18:8080"]), false),
        // Hairpin.
        r("hairpin: pod reaches its own service", POD, TCP, "10.96.0.19", 80, Set(&["10.1.1.3:8080", "10.1.2.19:8080"]), true),
        r("same service from another pod", POD_R, TCP, "10.96.0.19", 80, Set(&["10.1.1.3:8080", "10.1.2.19:8080"]), false),
        // SCTP: not rendered, never as UDP.
        r("SCTP port number over UDP", POD, UDP, "10.96.0.20", 9000, Reject, false),
        r("SCTP port number over TCP", POD, TCP, "10.96.0.20", 9000, Reject, false),
        r("TCP port of the SCTP service", POD, TCP, "10.96.0.20", 80, Set(&["10.1.1.20:80"]), false),
        // Multiple ports, named target ports.
        r("multi: http", POD, TCP, "10.96.0.21", 80, Set(&["10.1.1.21:8080"]), false),
        r("multi: metrics", POD, TCP, "10.96.0.21", 9090, Set(&["10.1.1.21:9100"]), false),
        r("multi: dns", POD, UDP, "10.96.0.21", 53, Set(&["10.1.1.21:5353"]), false),
        r("multi: dns over TCP is not a port", POD, TCP, "10.96.0.21", 53, Reject, false),
        // Headless: the pod IP is used directly.
        r("headless pod IP", POD, TCP, "10.1.1.22", 5432, NotAService, false),
        // Not a service.
        r("VIP, unknown port", POD, TCP, "10.96.0.10", 81, Reject, false),
        r("VIP, ICMP echo", POD, Proto::Icmp, "10.96.0.10", 0, Reject, false),
        r("unallocated serviceCIDR address", POD, TCP, "10.96.200.1", 80, Reject, false),
        r("Internet", POD, UDP, "8.8.8.8", 53, NotAService, false),
        r("pod to pod", POD, TCP, "10.1.2.5", 8080, NotAService, false),
    ]
}

#[test]
fn packet_flow_table() {
    let (render, node) = setup();
    let mut failures = Vec::new();
    for row in rows() {
        let got = enumerate_node(
            &render,
            &node,
            ip(row.src),
            row.proto,
            ip(row.dst),
            row.dport,
        );
        let want = match row.expected {
            Expect::Set(s) => Resolution::Backends {
                set: s
                    .iter()
                    .map(|e| {
                        let (a, p) = e.split_once(':').unwrap();
                        (ip(a), p.parse().unwrap())
                    })
                    .collect::<BTreeSet<_>>(),
                source_translated: row.source_translated,
            },
            Expect::Drop => Resolution::Drop,
            Expect::Reject => Resolution::Reject,
            Expect::NotAService => Resolution::NotAService,
        };
        if got != want {
            failures.push(format!(
                "{}: {} {:?} {}:{}\n    want {want:?}\n    got  {got:?}",
                row.name, row.src, row.proto, row.dst, row.dport
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn table_rows_are_unique() {
    let mut seen = BTreeSet::new();
    for r in rows() {
        assert!(seen.insert(r.name), "duplicate row name {}", r.name);
    }
}

#[test]
fn cluster_events_are_only_the_sctp_rejection() {
    let (render, _) = setup();
    assert_eq!(render.events.len(), 1, "{:?}", render.events);
    let e = &render.events[0];
    assert_eq!(e.object, "Service demo/sig");
    assert_eq!(e.reason, reason::UNSUPPORTED_PROTOCOL);
}

#[test]
fn affinity_configuration() {
    let (render, _) = setup();
    let sticky: Vec<_> = render
        .mappings
        .iter()
        .filter(|m| m.tag == "demo/sticky:80")
        .collect();
    assert_eq!(sticky.len(), 1);
    assert_eq!(sticky[0].affinity_timeout, 600);
    assert!(matches!(&sticky[0].internal, BackendSet::Backends(b) if b.len() == 1));
    // Every other service: affinity off.
    assert!(render
        .mappings
        .iter()
        .filter(|m| m.tag != "demo/sticky:80")
        .all(|m| m.affinity_timeout == 0));
    // One group per service port, shared by all of its addresses.
    let web: BTreeSet<u32> = render
        .mappings
        .iter()
        .filter(|m| m.tag == "demo/web:http")
        .map(|m| m.affinity_group)
        .collect();
    assert_eq!(web.len(), 1);
}

#[test]
fn backend_pods_get_the_inside_role() {
    let (render, _) = setup();
    let want: BTreeSet<Ipv4Addr> = [
        "10.1.1.3",
        "10.1.1.5",
        "10.1.1.6",
        "10.1.1.8",
        "10.1.1.9",
        "10.1.1.16",
        "10.1.1.20",
        "10.1.1.21",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    // 10.20.0.2 is a host-stack endpoint (tap0); 10.1.1.22 backs only a headless service.
    assert_eq!(render.backend_pod_ips, want);
}

#[test]
fn nat_config_of_the_flow_cluster() {
    let (render, node) = setup();
    let cfg = nat_config(&render, &node);
    assert_eq!(cfg.twice_nat_pool, vec![ip("10.1.1.254")]);
    assert_eq!(cfg.pool, vec![ip(NODE)]);
    assert!(cfg.internal_prefixes.contains(&(ip("10.1.0.0"), 16)));
    for a in [HOST, HOST_IP, NODE] {
        assert!(cfg.internal_prefixes.contains(&(ip(a), 32)), "{a}");
    }
    assert!(!cfg.internal_prefixes.contains(&(ip(NODE2), 32)));
    // The seed's mapping, as `show nat44 static mappings` would describe it.
    let seed = cfg
        .mappings
        .iter()
        .find(|m| m.external_ip == ip("10.104.221.85"))
        .unwrap();
    assert!(seed.self_twice_nat && seed.out2in_only && !seed.twice_nat_external);
    assert_eq!(seed.tag, "default/nginx:80");
}
