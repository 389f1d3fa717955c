//! Service renderer against SYSTEM.md 6.1-6.7 and D5, with manifests written as a Kubernetes
//! user would write them and parsed through `model::parse_manifests`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use vecnet_agent::ipam::IpamConfig;
use vecnet_agent::model::{parse_manifests, parse_object, ClusterState, Object};
use vecnet_agent::service::{
    enumerate, enumerate_node, nat_config, reason, render_services, render_services_cached,
    Resolution, ServiceCache, ServiceNode, ServiceRender, DEFAULT_AFFINITY_TIMEOUT,
};
use vecnet_nat::{Backend, BackendSet, IdentityMapping, Proto, StaticMapping};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Node 1 of the default plan: pods 10.1.1.0/24, host link 172.30.1.2, node IP 192.168.16.1,
/// host IP 10.20.0.2 (the seed's host-stack address); node 2 at 192.168.16.2.
fn node1() -> ServiceNode {
    let ipam = IpamConfig::default().for_node(1).unwrap();
    let mut n = ServiceNode::new("node-1", ipam).with_host_ips([ip("10.20.0.2")]);
    n.other_node_ips = vec![ip("192.168.16.2")];
    n
}

fn objects(yaml: &str) -> Vec<Object> {
    parse_manifests(yaml).expect("test manifests parse")
}

fn state(yaml: &str) -> ClusterState {
    let mut s = ClusterState::default();
    for o in objects(yaml) {
        s.apply(o);
    }
    s
}

fn render(yaml: &str) -> ServiceRender {
    render_services(&state(yaml), &node1())
}

fn find<'a>(r: &'a ServiceRender, addr: &str, port: u16, proto: Proto) -> &'a StaticMapping {
    r.mappings
        .iter()
        .find(|m| m.external_ip == ip(addr) && m.external_port == port && m.proto == proto)
        .unwrap_or_else(|| panic!("no mapping {addr}:{port}/{proto:?} in {:#?}", r.mappings))
}

fn has(r: &ServiceRender, addr: &str, port: u16, proto: Proto) -> bool {
    r.mappings
        .iter()
        .any(|m| m.external_ip == ip(addr) && m.external_port == port && m.proto == proto)
}

/// `"ip:port*weight"` strings of a set, or `DROP` / `REJECT`.
fn set(bs: &BackendSet) -> Vec<String> {
    match bs {
        BackendSet::Backends(b) => b
            .iter()
            .map(|b| format!("{}:{}*{}", b.ip, b.port, b.weight))
            .collect(),
        BackendSet::Drop => vec!["DROP".into()],
        BackendSet::Reject => vec!["REJECT".into()],
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn reasons(r: &ServiceRender) -> Vec<(String, String)> {
    r.events
        .iter()
        .map(|e| (e.object.clone(), e.reason.clone()))
        .collect()
}

fn keys(r: &ServiceRender) -> Vec<String> {
    r.mappings
        .iter()
        .map(|m| format!("{}:{}/{}", m.external_ip, m.external_port, m.proto.as_str()))
        .collect()
}

const SEED: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: default
spec:
  clusterIP: 10.104.221.85
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nginx-x7k2p
  namespace: default
  labels:
    kubernetes.io/service-name: nginx
addressType: IPv4
ports:
- port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.20.0.2"]
  conditions:
    ready: true
"#;

// ------------------------------------------------------------------ 6.3: the seed

#[test]
fn seed_service_renders_the_seed_mapping() {
    let r = render(SEED);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(r.mappings.len(), 1);
    let m = &r.mappings[0];
    let affinity_group = m.affinity_group;
    assert_eq!(
        *m,
        StaticMapping {
            external_ip: ip("10.104.221.85"),
            external_port: 80,
            proto: Proto::Tcp,
            vrf: 0,
            internal: BackendSet::Backends(vec![Backend {
                ip: ip("10.20.0.2"),
                port: 8080,
                weight: 1,
                vrf: 0
            }]),
            external: BackendSet::Backends(vec![Backend {
                ip: ip("10.20.0.2"),
                port: 8080,
                weight: 1,
                vrf: 0
            }]),
            twice_nat_external: false,
            self_twice_nat: true,
            out2in_only: true,
            affinity_timeout: 0,
            affinity_group,
            tag: "default/nginx:80".into(),
        }
    );
    // A host-stack endpoint is not a pod: its TAP is tap0, which is always `in`.
    assert!(r.backend_pod_ips.is_empty());
    assert_eq!(r.cluster_ips, BTreeSet::from([ip("10.104.221.85")]));
}

#[test]
fn host_network_endpoint_without_node_name_is_local() {
    // Weight shows locality: local endpoints weigh localEndpointWeight.
    let mut n = node1();
    n.local_endpoint_weight = 3;
    let r = render_services(&state(SEED), &n);
    assert_eq!(set(&r.mappings[0].internal), strs(&["10.20.0.2:8080*3"]));
}

// ------------------------------------------------------------------ 6.1: addresses

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  externalIPs: [198.51.100.10]
  ports:
  - name: http
    port: 80
    targetPort: web
    nodePort: 30080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.1.1.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-1
- addresses: [10.1.2.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-2
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-2
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv6
ports:
- name: http
  port: 8080
endpoints:
- addresses: ["fd00::1:5"]
"#;

#[test]
fn nodeport_service_maps_every_address() {
    let r = render(WEB);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(
        keys(&r),
        strs(&[
            "10.20.0.2:30080/tcp",
            "10.96.0.10:80/tcp",
            "172.30.1.2:30080/tcp",
            "192.168.16.1:30080/tcp",
            "192.168.16.2:30080/tcp",
            "198.51.100.10:80/tcp",
        ])
    );
    let both = strs(&["10.1.1.5:8080*1", "10.1.2.5:8080*1"]);
    for m in &r.mappings {
        assert_eq!(set(&m.internal), both, "{}", m.external_ip);
        assert_eq!(set(&m.external), both, "{}", m.external_ip);
        assert!(m.self_twice_nat && m.out2in_only);
        assert_eq!(m.tag, "shop/web:http");
        // ETP=Cluster: twice-NAT for external origin everywhere except the ClusterIP.
        assert_eq!(m.twice_nat_external, m.external_ip != ip("10.96.0.10"));
    }
    assert_eq!(r.backend_pod_ips, BTreeSet::from([ip("10.1.1.5")]));
}

#[test]
fn etp_local_restricts_external_origin_only() {
    let yaml = WEB.replace(
        "type: NodePort",
        "type: NodePort\n  externalTrafficPolicy: Local",
    );
    let r = render(&yaml);
    let both = strs(&["10.1.1.5:8080*1", "10.1.2.5:8080*1"]);
    let local = strs(&["10.1.1.5:8080*1"]);
    // ClusterIP keeps all endpoints (D5.1).
    let c = find(&r, "10.96.0.10", 80, Proto::Tcp);
    assert_eq!(
        (set(&c.internal), set(&c.external)),
        (both.clone(), both.clone())
    );
    for (a, p) in [
        ("192.168.16.1", 30080),
        ("172.30.1.2", 30080),
        ("10.20.0.2", 30080),
        ("198.51.100.10", 80),
    ] {
        let m = find(&r, a, p, Proto::Tcp);
        assert_eq!(
            set(&m.internal),
            both,
            "{a}: internal origin is short-circuited"
        );
        assert_eq!(set(&m.external), local, "{a}");
        assert!(
            !m.twice_nat_external,
            "{a}: ETP=Local keeps the client source"
        );
    }
    // Another node's NodePort: cluster-wide, twice-NAT (replies must come back here).
    let o = find(&r, "192.168.16.2", 30080, Proto::Tcp);
    assert_eq!((set(&o.internal), set(&o.external)), (both.clone(), both));
    assert!(o.twice_nat_external);
}

#[test]
fn itp_local_restricts_clusterip_only() {
    let yaml = WEB.replace(
        "type: NodePort",
        "type: NodePort\n  internalTrafficPolicy: Local",
    );
    let r = render(&yaml);
    let local = strs(&["10.1.1.5:8080*1"]);
    let both = strs(&["10.1.1.5:8080*1", "10.1.2.5:8080*1"]);
    let c = find(&r, "10.96.0.10", 80, Proto::Tcp);
    assert_eq!((set(&c.internal), set(&c.external)), (local.clone(), local));
    let n = find(&r, "192.168.16.1", 30080, Proto::Tcp);
    assert_eq!((set(&n.internal), set(&n.external)), (both.clone(), both));
}

#[test]
fn itp_local_without_local_endpoints_drops() {
    let yaml = WEB
        .replace(
            "type: NodePort",
            "type: NodePort\n  internalTrafficPolicy: Local",
        )
        .replace("nodeName: node-1", "nodeName: node-3");
    let r = render(&yaml);
    let c = find(&r, "10.96.0.10", 80, Proto::Tcp);
    assert_eq!(c.internal, BackendSet::Drop);
    assert_eq!(c.external, BackendSet::Drop);
    assert!(r.backend_pod_ips.is_empty());
}

#[test]
fn load_balancer_ingress_ips_are_mapped() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.30
  externalTrafficPolicy: Local
  ports:
  - {name: https, port: 443, targetPort: 8443, nodePort: 31443, protocol: TCP}
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.20
    - ip: 198.51.100.21
      ipMode: Proxy
    - hostname: lb.example.com
    - ip: 198.51.100.22
      ipMode: VIP
"#;
    let r = render(yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert!(has(&r, "198.51.100.20", 443, Proto::Tcp));
    assert!(has(&r, "198.51.100.22", 443, Proto::Tcp));
    assert!(
        !has(&r, "198.51.100.21", 443, Proto::Tcp),
        "ipMode Proxy is left to the LB"
    );
    assert!(has(&r, "192.168.16.1", 31443, Proto::Tcp));
    // No endpoints at all: every address rejects, for both origins.
    for m in &r.mappings {
        assert_eq!(
            (&m.internal, &m.external),
            (&BackendSet::Reject, &BackendSet::Reject)
        );
    }
}

#[test]
fn port_zero_and_node_port_zero_are_skipped() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: z}
spec:
  type: NodePort
  clusterIP: 10.96.0.31
  ports:
  - {name: a, port: 0, nodePort: 30001}
  - {name: b, port: 81, nodePort: 0}
"#;
    let r = render(yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(keys(&r), strs(&["10.96.0.31:81/tcp"]));
}

// ------------------------------------------------------------------ headless, ExternalName

#[test]
fn headless_external_name_and_unallocated_render_nothing() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{port: 5432}]
endpoints:
- addresses: [10.1.1.40]
  nodeName: node-1
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: fresh, namespace: default}
spec:
  ports: [{port: 80}]
"#;
    let r = render(yaml);
    assert!(r.mappings.is_empty());
    assert!(r.backend_pod_ips.is_empty());
    assert_eq!(
        reasons(&r),
        vec![(
            "Service default/fresh".into(),
            reason::MISSING_CLUSTER_IP.into()
        )]
    );
}

#[test]
fn ipv6_single_stack_service_renders_nothing() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: v6}
spec:
  type: NodePort
  clusterIP: "fd00::96:1"
  clusterIPs: ["fd00::96:1"]
  ipFamilies: [IPv6]
  externalIPs: ["2001:db8::1"]
  ports: [{port: 80, nodePort: 30096}]
"#;
    let r = render(yaml);
    assert!(r.mappings.is_empty() && r.events.is_empty(), "{r:?}");
}

#[test]
fn load_balancer_source_ranges_are_reported_as_not_enforced() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.35
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{port: 443, nodePort: 31444}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.35}]
"#;
    let r = render(yaml);
    assert!(has(&r, "198.51.100.35", 443, Proto::Tcp));
    assert_eq!(
        reasons(&r),
        vec![(
            "Service default/lb".into(),
            reason::SOURCE_RANGES_NOT_ENFORCED.into()
        )]
    );
    // Without LB addresses (not provisioned yet) there is nothing to enforce.
    let r = render(&yaml.replace("ingress: [{ip: 198.51.100.35}]", "ingress: []"));
    assert!(r.events.is_empty(), "{:?}", r.events);
}

#[test]
fn a_port_name_no_slice_lists_is_reported_and_rejected_while_other_ports_work() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.36
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: metrics, port: 9090, targetPort: 9090}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: metrics, port: 9090, protocol: TCP}
endpoints:
- addresses: [10.1.1.60]
  nodeName: node-1
"#;
    let r = render(yaml);
    assert_eq!(
        set(&find(&r, "10.96.0.36", 9090, Proto::Tcp).internal),
        vec!["10.1.1.60:9090*1"]
    );
    assert_eq!(
        find(&r, "10.96.0.36", 80, Proto::Tcp).internal,
        BackendSet::Reject,
        "no endpoints for that name: rejected as kube-proxy does"
    );
    assert_eq!(
        reasons(&r),
        vec![(
            "Service default/web".into(),
            reason::UNKNOWN_PORT_NAME.into()
        )]
    );
    assert!(
        r.events[0].message.contains("port http/TCP 80"),
        "{}",
        r.events[0].message
    );
    // No slices at all (or only empty ones) is the ordinary "no endpoints yet": no event.
    let no_slice = &yaml[..yaml.find("---").unwrap_or(yaml.len())];
    assert!(render(no_slice).events.is_empty());
}

// ------------------------------------------------------------------ protocols (D5.4)

#[test]
fn sctp_port_is_rejected_with_an_event_and_other_ports_work() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: sig, namespace: telco}
spec:
  clusterIP: 10.96.0.40
  ports:
  - {name: sig, port: 9000, protocol: SCTP}
  - {name: odd, port: 9001, protocol: ICMP}
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sig-1
  namespace: telco
  labels: {kubernetes.io/service-name: sig}
addressType: IPv4
ports:
- {name: sig, port: 9000, protocol: SCTP}
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.1.1.50]
  nodeName: node-1
"#;
    let r = render(yaml);
    assert_eq!(keys(&r), strs(&["10.96.0.40:53/udp", "10.96.0.40:80/tcp"]));
    assert_eq!(
        reasons(&r),
        vec![
            (
                "Service telco/sig".into(),
                reason::UNSUPPORTED_PROTOCOL.into()
            ),
            (
                "Service telco/sig".into(),
                reason::UNSUPPORTED_PROTOCOL.into()
            ),
        ]
    );
    assert!(
        r.events[0].message.contains("SCTP"),
        "{}",
        r.events[0].message
    );
    assert!(
        r.events[1].message.contains("ICMP"),
        "{}",
        r.events[1].message
    );
    // Never rendered as UDP.
    assert!(!has(&r, "10.96.0.40", 9000, Proto::Udp));
}

// ------------------------------------------------------------------ ports and names

#[test]
fn named_target_port_resolves_per_endpoint_through_the_slice() {
    // Two slices with different numbers for the same named port (pods of two versions).
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  clusterIP: 10.96.0.50
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: metrics, port: 9090, targetPort: 9100}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-v1
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: metrics, port: 9100}
endpoints:
- addresses: [10.1.1.60]
  nodeName: node-1
  targetRef: {kind: Pod, name: api-v1-abc, namespace: default}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-v2
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports:
- {name: http, port: 8081}
- {name: metrics, port: 9100}
endpoints:
- addresses: [10.1.2.60]
  nodeName: node-2
"#;
    let r = render(yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    let http = find(&r, "10.96.0.50", 80, Proto::Tcp);
    assert_eq!(
        set(&http.internal),
        strs(&["10.1.1.60:8080*1", "10.1.2.60:8081*1"])
    );
    assert_eq!(http.tag, "default/api:http");
    let metrics = find(&r, "10.96.0.50", 9090, Proto::Tcp);
    assert_eq!(
        set(&metrics.internal),
        strs(&["10.1.1.60:9100*1", "10.1.2.60:9100*1"])
    );
    assert_eq!(metrics.tag, "default/api:metrics");
    assert_ne!(http.affinity_group, metrics.affinity_group);
}

#[test]
fn slice_ports_match_by_name_and_protocol() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-1
  namespace: kube-system
  labels: {kubernetes.io/service-name: dns}
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 5353, protocol: TCP}
- {name: dns, port: 1053, protocol: TCP}
endpoints:
- addresses: [10.1.1.70]
  nodeName: node-1
"#;
    let r = render(yaml);
    assert_eq!(
        set(&find(&r, "10.96.0.53", 53, Proto::Udp).internal),
        strs(&["10.1.1.70:53*1"])
    );
    assert_eq!(
        set(&find(&r, "10.96.0.53", 53, Proto::Tcp).internal),
        strs(&["10.1.1.70:5353*1"])
    );
}

#[test]
fn v1_endpoints_objects_are_accepted() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec:
  clusterIP: 10.96.0.80
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets:
- addresses: [{ip: 10.1.1.80, nodeName: node-1}]
  notReadyAddresses: [{ip: 10.1.1.81, nodeName: node-1}]
  ports: [{name: http, port: 8080}]
"#;
    let r = render(yaml);
    let m = find(&r, "10.96.0.80", 80, Proto::Tcp);
    assert_eq!(set(&m.internal), strs(&["10.1.1.80:8080*1"]));
    // The not-ready pod still backs the service (its TAP is `in` for its old sessions).
    assert_eq!(
        r.backend_pod_ips,
        BTreeSet::from([ip("10.1.1.80"), ip("10.1.1.81")])
    );
}

// ------------------------------------------------------------------ locality

#[test]
fn endpoint_locality_rules() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: p-here, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: p-there, namespace: default}
spec:
  nodeName: node-2
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: loc}
spec:
  clusterIP: 10.96.0.90
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: loc-1
  labels: {kubernetes.io/service-name: loc}
addressType: IPv4
ports: [{port: 80}]
endpoints:
# nodeName wins over the address
- addresses: [10.1.2.91]
  nodeName: node-1
- addresses: [10.1.1.92]
  nodeName: node-2
# no nodeName: the Pod in targetRef
- addresses: [10.9.0.93]
  targetRef: {kind: Pod, name: p-here, namespace: default}
- addresses: [10.1.1.94]
  targetRef: {kind: Pod, name: p-there}
# no nodeName, unknown pod: by address
- addresses: [10.1.1.95]
  targetRef: {kind: Pod, name: gone}
- addresses: [172.30.1.2]
- addresses: [192.168.16.1]
- addresses: [10.20.0.2]
- addresses: [10.1.2.96]
- addresses: [192.168.16.2]
"#;
    let mut n = node1();
    n.local_endpoint_weight = 7;
    let r = render_services(&state(yaml), &n);
    assert_eq!(
        set(&r.mappings[0].internal),
        strs(&[
            "10.1.1.92:80*1",
            "10.1.1.94:80*1",
            "10.1.1.95:80*7",
            "10.1.2.91:80*7",
            "10.1.2.96:80*1",
            "10.9.0.93:80*7",
            "10.20.0.2:80*7",
            "172.30.1.2:80*7",
            "192.168.16.1:80*7",
            "192.168.16.2:80*1",
        ])
    );
    // Only local endpoints inside this node's pod slice are pod TAPs.
    assert_eq!(r.backend_pod_ips, BTreeSet::from([ip("10.1.1.95")]));
}

#[test]
fn local_endpoint_weight_zero_is_treated_as_one() {
    let mut n = node1();
    n.local_endpoint_weight = 0;
    let r = render_services(&state(SEED), &n);
    assert_eq!(set(&r.mappings[0].internal), strs(&["10.20.0.2:8080*1"]));
}

// ------------------------------------------------------------------ usable sets (KEP-1669)

fn conditions_service(endpoints: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: t}}
spec:
  type: NodePort
  clusterIP: 10.96.0.100
  externalTrafficPolicy: Local
  ports: [{{port: 80, nodePort: 30100}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: t-1
  labels: {{kubernetes.io/service-name: t}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
{endpoints}
"#
    )
}

/// (ClusterIP internal set, NodePort external set).
fn cond_sets(endpoints: &str) -> (Vec<String>, Vec<String>) {
    let r = render(&conditions_service(endpoints));
    assert!(r.events.is_empty(), "{:?}", r.events);
    (
        set(&find(&r, "10.96.0.100", 80, Proto::Tcp).internal),
        set(&find(&r, "192.168.16.1", 30100, Proto::Tcp).external),
    )
}

#[test]
fn ready_endpoints_win_over_terminating_ones() {
    let (c, l) = cond_sets(
        r#"
- addresses: [10.1.1.101]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
- addresses: [10.1.2.102]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-2
"#,
    );
    assert_eq!(c, strs(&["10.1.2.102:8080*1"]));
    // Local set on its own: no ready local endpoint → the serving-terminating local one.
    assert_eq!(l, strs(&["10.1.1.101:8080*1"]));
}

#[test]
fn terminating_fallback_when_nothing_is_ready() {
    let (c, l) = cond_sets(
        r#"
- addresses: [10.1.1.101]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
- addresses: [10.1.2.102]
  conditions: {ready: false, serving: false, terminating: true}
  nodeName: node-2
- addresses: [10.1.2.103]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-2
"#,
    );
    assert_eq!(c, strs(&["10.1.1.101:8080*1", "10.1.2.103:8080*1"]));
    assert_eq!(l, strs(&["10.1.1.101:8080*1"]));
}

#[test]
fn missing_conditions_mean_ready() {
    let (c, _) = cond_sets(
        r#"
- addresses: [10.1.2.104]
  nodeName: node-2
- addresses: [10.1.2.105]
  conditions: {}
  nodeName: node-2
"#,
    );
    assert_eq!(c, strs(&["10.1.2.104:8080*1", "10.1.2.105:8080*1"]));
}

#[test]
fn filtered_drops_but_no_endpoints_rejects() {
    // Only a remote endpoint: ETP=Local filters it for external origin → DROP.
    let (c, l) = cond_sets(
        r#"
- addresses: [10.1.2.106]
  conditions: {ready: true}
  nodeName: node-2
"#,
    );
    assert_eq!(c, strs(&["10.1.2.106:8080*1"]));
    assert_eq!(l, strs(&["DROP"]));
    // Only endpoints that are neither ready nor serving-terminating: no endpoints → REJECT.
    let (c, l) = cond_sets(
        r#"
- addresses: [10.1.1.107]
  conditions: {ready: false, serving: false, terminating: false}
  nodeName: node-1
- addresses: [10.1.2.108]
  conditions: {ready: false}
  nodeName: node-2
"#,
    );
    assert_eq!((c, l), (strs(&["REJECT"]), strs(&["REJECT"])));
    // Empty slice.
    let (c, l) = cond_sets("  []");
    assert_eq!((c, l), (strs(&["REJECT"]), strs(&["REJECT"])));
}

#[test]
fn duplicate_endpoints_across_slices_are_merged_ready_first() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: d}
spec:
  clusterIP: 10.96.0.110
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: d-a
  labels: {kubernetes.io/service-name: d}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.1.2.111]
  conditions: {ready: false, serving: false}
  nodeName: node-2
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: d-b
  labels: {kubernetes.io/service-name: d}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.1.2.111]
  conditions: {ready: true}
  nodeName: node-2
"#;
    let r = render(yaml);
    assert_eq!(set(&r.mappings[0].internal), strs(&["10.1.2.111:80*1"]));
}

// ------------------------------------------------------------------ affinity (D5.3, D5.7)

#[test]
fn client_ip_affinity_default_timeout_shared_group_single_endpoint() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  type: NodePort
  clusterIP: 10.96.0.120
  externalIPs: [198.51.100.120]
  sessionAffinity: ClientIP
  ports:
  - {name: a, port: 80, nodePort: 30120}
  - {name: b, port: 81, nodePort: 30121}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  labels: {kubernetes.io/service-name: sticky}
addressType: IPv4
ports: [{name: a, port: 8080}, {name: b, port: 8081}]
endpoints:
- addresses: [10.1.1.121]
  nodeName: node-1
"#;
    let r = render(yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    let a: Vec<&StaticMapping> = r
        .mappings
        .iter()
        .filter(|m| m.tag == "default/sticky:a")
        .collect();
    let b: Vec<&StaticMapping> = r
        .mappings
        .iter()
        .filter(|m| m.tag == "default/sticky:b")
        .collect();
    assert_eq!(a.len(), 6); // ClusterIP, 4 NodePort addresses, external IP
    assert_eq!(b.len(), 6);
    for m in a.iter().chain(&b) {
        assert_eq!(m.affinity_timeout, DEFAULT_AFFINITY_TIMEOUT);
        // Single endpoint: still a load-balancing mapping with affinity (D5.3).
        assert!(matches!(&m.internal, BackendSet::Backends(v) if v.len() == 1));
    }
    assert!(a.iter().all(|m| m.affinity_group == a[0].affinity_group));
    assert!(b.iter().all(|m| m.affinity_group == b[0].affinity_group));
    assert_ne!(a[0].affinity_group, b[0].affinity_group);
    assert_ne!(a[0].affinity_group, 0);
}

#[test]
fn client_ip_affinity_custom_timeout_and_off() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: s1}
spec:
  clusterIP: 10.96.0.121
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: s2}
spec:
  clusterIP: 10.96.0.122
  sessionAffinity: None
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: s3}
spec:
  clusterIP: 10.96.0.123
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}
  ports: [{port: 80}]
"#;
    let r = render(yaml);
    assert_eq!(find(&r, "10.96.0.121", 80, Proto::Tcp).affinity_timeout, 60);
    assert_eq!(find(&r, "10.96.0.122", 80, Proto::Tcp).affinity_timeout, 0);
    assert!(!has(&r, "10.96.0.123", 80, Proto::Tcp));
    assert_eq!(
        reasons(&r),
        vec![("Service default/s3".into(), reason::INVALID_SERVICE.into())]
    );
}

#[test]
fn affinity_groups_are_stable_across_renders() {
    // A service added in front (in key order) does not renumber the others.
    let before = render(SEED);
    let yaml = format!(
        "{SEED}\n---\n{}",
        r#"
apiVersion: v1
kind: Service
metadata: {name: aaa, namespace: aaa}
spec:
  clusterIP: 10.96.0.124
  ports: [{port: 80}]
"#
    );
    let after = render(&yaml);
    assert_eq!(
        before.mappings[0].affinity_group,
        find(&after, "10.104.221.85", 80, Proto::Tcp).affinity_group
    );
}

// ------------------------------------------------------------------ conflicts, invalid input

#[test]
fn duplicate_cluster_ip_first_service_wins() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: b-second, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.130
  ports: [{port: 81, nodePort: 30131}]
---
apiVersion: v1
kind: Service
metadata: {name: a-first, namespace: default}
spec:
  clusterIP: 10.96.0.130
  ports: [{port: 80}]
"#;
    let r = render(yaml);
    assert_eq!(
        find(&r, "10.96.0.130", 80, Proto::Tcp).tag,
        "default/a-first:80"
    );
    assert!(!has(&r, "10.96.0.130", 81, Proto::Tcp));
    // The later service's NodePort still works.
    assert_eq!(
        find(&r, "192.168.16.1", 30131, Proto::Tcp).tag,
        "default/b-second:81"
    );
    assert_eq!(
        reasons(&r),
        vec![(
            "Service default/b-second".into(),
            reason::DUPLICATE_CLUSTER_IP.into()
        )]
    );
}

#[test]
fn shared_external_ip_same_port_conflicts_different_port_shares() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: one}
spec:
  clusterIP: 10.96.0.140
  externalIPs: [198.51.100.140]
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: two}
spec:
  clusterIP: 10.96.0.141
  externalIPs: [198.51.100.140]
  ports: [{name: web, port: 80}, {name: alt, port: 8080}]
"#;
    let r = render(yaml);
    assert_eq!(
        find(&r, "198.51.100.140", 80, Proto::Tcp).tag,
        "default/one:80"
    );
    assert_eq!(
        find(&r, "198.51.100.140", 8080, Proto::Tcp).tag,
        "default/two:alt"
    );
    assert_eq!(
        reasons(&r),
        vec![(
            "Service default/two".into(),
            reason::MAPPING_CONFLICT.into()
        )]
    );
}

#[test]
fn same_address_twice_in_one_service_is_not_a_conflict() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.150
  externalIPs: [198.51.100.150, 198.51.100.150]
  ports: [{port: 80, nodePort: 30150}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.150}]
"#;
    let r = render(yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(
        r.mappings
            .iter()
            .filter(|m| m.external_ip == ip("198.51.100.150"))
            .count(),
        1
    );
}

#[test]
fn invalid_objects_are_reported_and_skipped() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: bad-ip}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-ext}
spec:
  clusterIP: 10.96.0.161
  externalIPs: [not-an-ip]
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-port}
spec:
  clusterIP: 10.96.0.162
  ports: [{port: 70000}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-nodeport}
spec:
  type: NodePort
  clusterIP: 10.96.0.163
  ports: [{port: 80, nodePort: -1}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-type}
spec:
  type: Magic
  clusterIP: 10.96.0.164
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-etp}
spec:
  type: NodePort
  clusterIP: 10.96.0.165
  externalTrafficPolicy: Sometimes
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-affinity}
spec:
  clusterIP: 10.96.0.166
  sessionAffinity: Sticky
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: no-spec}
---
apiVersion: v1
kind: Service
metadata: {name: bad-lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.167
  ports: [{port: 80}]
status:
  loadBalancer: {ingress: [{ip: "198.51.100.300"}]}
---
apiVersion: v1
kind: Service
metadata: {name: good}
spec:
  clusterIP: 10.96.0.168
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-bad
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["10.1.1.999"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-badport
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 65536}]
endpoints:
- addresses: ["10.1.1.170"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-noaddr
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: good-ok
  labels: {kubernetes.io/service-name: good}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["10.1.1.171"]
  nodeName: node-1
"#;
    let r = render(yaml);
    assert_eq!(keys(&r), strs(&["10.96.0.168:80/tcp"]));
    assert_eq!(set(&r.mappings[0].internal), strs(&["10.1.1.171:8080*1"]));
    let invalid = |name: &str| {
        (
            format!("Service default/{name}"),
            reason::INVALID_SERVICE.to_string(),
        )
    };
    let bad_slice = |name: &str| {
        (
            format!("EndpointSlice default/{name}"),
            reason::INVALID_ENDPOINT_SLICE.to_string(),
        )
    };
    assert_eq!(
        reasons(&r),
        vec![
            invalid("bad-affinity"),
            invalid("bad-etp"),
            invalid("bad-ext"),
            invalid("bad-ip"),
            invalid("bad-lb"),
            invalid("bad-nodeport"),
            invalid("bad-port"),
            invalid("bad-type"),
            bad_slice("good-bad"),
            bad_slice("good-badport"),
            bad_slice("good-noaddr"),
            invalid("no-spec"),
        ]
    );
    for e in &r.events {
        assert!(!e.message.is_empty());
    }
    assert!(
        r.events[2].message.contains("not-an-ip"),
        "{}",
        r.events[2].message
    );
}

#[test]
fn slices_of_other_namespaces_or_services_are_ignored() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec:
  clusterIP: 10.96.0.180
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: b
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.1.1.181]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-unlabelled
  namespace: a
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.1.1.182]}]
"#;
    let r = render(yaml);
    assert_eq!(r.mappings[0].internal, BackendSet::Reject);
}

// ------------------------------------------------------------------ ServiceNode and NAT config

#[test]
fn service_node_from_node_objects() {
    let yaml = r#"
apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
  - {type: InternalIP, address: 192.168.16.1}
  - {type: ExternalIP, address: 203.0.113.1}
  - {type: Hostname, address: node-1}
  - {type: InternalIP, address: "fd00::1"}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status:
  addresses:
  - {type: InternalIP, address: 192.168.16.2}
  - {type: InternalIP, address: 10.0.0.2}
  - {type: InternalIP, address: bogus}
"#;
    let ipam = IpamConfig::default().for_node(1).unwrap();
    let n = ServiceNode::new("node-1", ipam).with_cluster_nodes(&state(yaml));
    assert_eq!(
        n.nodeport_ips,
        vec![ip("172.30.1.2"), ip("192.168.16.1"), ip("203.0.113.1")]
    );
    assert_eq!(
        n.internal_ips,
        vec![
            ip("172.30.1.2"),
            ip("192.168.16.1"),
            ip("172.30.1.1"),
            ip("203.0.113.1")
        ]
    );
    assert_eq!(n.other_node_ips, vec![ip("192.168.16.2"), ip("10.0.0.2")]);
    assert_eq!(n.local_endpoint_weight, 1);
    assert!(n.has_node_ip());
}

#[test]
fn nat_config_follows_the_node() {
    let r = render(SEED);
    let n = node1();
    let cfg = nat_config(&r, &n);
    assert_eq!(cfg.mappings, r.mappings);
    assert_eq!(cfg.twice_nat_pool, vec![ip("10.1.1.254")]);
    assert_eq!(cfg.pool, vec![ip("192.168.16.1")]);
    assert_eq!(
        cfg.identity,
        vec![
            IdentityMapping {
                ip: ip("192.168.16.1"),
                port: Some((Proto::Udp, 4789)),
                vrf: 0
            },
            IdentityMapping {
                ip: ip("192.168.16.1"),
                port: None,
                vrf: 0
            },
        ]
    );
    assert_eq!(
        cfg.internal_prefixes,
        vec![
            (ip("10.1.0.0"), 16),
            (ip("10.20.0.2"), 32),
            (ip("172.30.1.1"), 32),
            (ip("172.30.1.2"), 32),
            (ip("192.168.16.1"), 32),
        ]
    );
    assert!(cfg.forwarding);

    // A node without an uplink address: no main pool, no identity mappings.
    let mut bare = n.clone();
    bare.nodeport_ips.retain(|a| *a != ip("192.168.16.1"));
    bare.internal_ips.retain(|a| *a != ip("192.168.16.1"));
    let cfg = nat_config(&r, &bare);
    assert!(cfg.pool.is_empty() && cfg.identity.is_empty());
    assert!(!cfg.internal_prefixes.contains(&(ip("192.168.16.1"), 32)));
}

#[test]
fn enumerate_basics() {
    let r = render(WEB);
    let n = node1();
    let cfg = nat_config(&r, &n);
    let both = BTreeSet::from([(ip("10.1.1.5"), 8080), (ip("10.1.2.5"), 8080)]);
    assert_eq!(
        enumerate(&cfg, ip("10.1.1.3"), Proto::Tcp, ip("10.96.0.10"), 80),
        Resolution::Backends {
            set: both.clone(),
            source_translated: false
        }
    );
    assert_eq!(
        enumerate(
            &cfg,
            ip("203.0.113.9"),
            Proto::Tcp,
            ip("192.168.16.1"),
            30080
        ),
        Resolution::Backends {
            set: both.clone(),
            source_translated: true
        }
    );
    // Hairpin: a backend reaching its own service.
    assert_eq!(
        enumerate(&cfg, ip("10.1.1.5"), Proto::Tcp, ip("10.96.0.10"), 80),
        Resolution::Backends {
            set: both,
            source_translated: true
        }
    );
    // Unknown port on the VIP: plain enumerate knows no serviceCIDR; enumerate_node rejects.
    assert_eq!(
        enumerate(&cfg, ip("10.1.1.3"), Proto::Tcp, ip("10.96.0.10"), 81),
        Resolution::NotAService
    );
    assert_eq!(
        enumerate_node(&r, &n, ip("10.1.1.3"), Proto::Tcp, ip("10.96.0.10"), 81),
        Resolution::Reject
    );
    assert_eq!(
        enumerate_node(&r, &n, ip("10.1.1.3"), Proto::Tcp, ip("192.168.16.1"), 22),
        Resolution::NotAService
    );
}

#[test]
fn enumerate_rejects_unknown_ports_of_cluster_ips_outside_the_service_cidr() {
    let yaml = SEED.replace("10.104.221.85", "10.200.0.5");
    let r = render(&yaml);
    let n = node1();
    assert_eq!(
        enumerate_node(&r, &n, ip("10.1.1.3"), Proto::Udp, ip("10.200.0.5"), 80),
        Resolution::Reject
    );
    assert_eq!(r.cluster_ips, BTreeSet::from([ip("10.200.0.5")]));
}

// ------------------------------------------------------------------ determinism

/// Every fixture above together.
fn all_fixtures() -> String {
    [
        SEED,
        WEB,
        &conditions_service(
            "- addresses: [10.1.1.101]\n  conditions: {ready: false, serving: true, terminating: true}\n  nodeName: node-1",
        ),
    ]
    .join("\n---\n")
}

fn state_in_order(objs: &[Object], order: &[usize]) -> ClusterState {
    let mut s = ClusterState::default();
    for &i in order {
        s.apply(objs[i].clone());
    }
    s
}

#[test]
fn render_does_not_depend_on_object_order() {
    let objs = objects(&all_fixtures());
    let n = node1();
    let forward: Vec<usize> = (0..objs.len()).collect();
    let reference = render_services(&state_in_order(&objs, &forward), &n);
    assert!(!reference.mappings.is_empty());
    let reversed: Vec<usize> = forward.iter().rev().copied().collect();
    assert_eq!(
        render_services(&state_in_order(&objs, &reversed), &n),
        reference
    );
    // A few fixed rotations and interleavings.
    for k in 1..objs.len() {
        let rot: Vec<usize> = (0..objs.len()).map(|i| (i + k) % objs.len()).collect();
        assert_eq!(render_services(&state_in_order(&objs, &rot), &n), reference);
    }
    // Mappings are sorted by key and keys are unique.
    let ks: Vec<_> = reference
        .mappings
        .iter()
        .map(|m| (m.external_ip, m.external_port, m.proto))
        .collect();
    let mut sorted = ks.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ks, sorted);
}

fn fixture_len() -> usize {
    objects(&all_fixtures()).len()
}

proptest! {
    #[test]
    fn shuffled_object_order_renders_the_same(
        perm in Just((0..fixture_len()).collect::<Vec<_>>()).prop_shuffle()
    ) {
        let objs = objects(&all_fixtures());
        let n = node1();
        let forward: Vec<usize> = (0..objs.len()).collect();
        prop_assert_eq!(
            render_services(&state_in_order(&objs, &perm), &n),
            render_services(&state_in_order(&objs, &forward), &n)
        );
    }
}

// ------------------------------------------------------------------ random clusters

fn addr_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (1u8..4, 1u8..8).prop_map(|(n, h)| format!("10.1.{n}.{h}")),
        2 => Just("10.20.0.2".to_string()),
        2 => Just("172.30.1.2".to_string()),
        2 => Just("192.168.16.1".to_string()),
        2 => Just("192.168.16.2".to_string()),
        2 => (0u8..4).prop_map(|h| format!("198.51.100.{h}")),
        1 => Just("fd00::1".to_string()),
        1 => Just("bogus".to_string()),
        1 => Just("10.1.1.256".to_string()),
    ]
}

fn cluster_ip_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => (0u8..6).prop_map(|h| Some(format!("10.96.0.{h}"))),
        1 => Just(Some("None".to_string())),
        1 => Just(None),
        1 => Just(Some("nope".to_string())),
    ]
}

fn port_json() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(prop_oneof![Just("a"), Just("b"), Just("")]),
        prop_oneof![8 => Just(80i32), 8 => Just(81), 1 => Just(0), 1 => Just(70000)],
        prop::option::of(prop_oneof![
            8 => Just(30000i32),
            8 => Just(30001),
            2 => Just(0),
            1 => Just(-5)
        ]),
        prop::option::of(prop_oneof![
            4 => Just("TCP"),
            2 => Just("UDP"),
            1 => Just("SCTP")
        ]),
    )
        .prop_map(|(name, port, node_port, proto)| {
            let mut p = serde_json::json!({ "port": port });
            if let Some(n) = name {
                p["name"] = n.into();
            }
            if let Some(n) = node_port {
                p["nodePort"] = n.into();
            }
            if let Some(pr) = proto {
                p["protocol"] = pr.into();
            }
            p
        })
}

fn service_json(i: usize) -> impl Strategy<Value = serde_json::Value> {
    (
        prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer"), Just("ExternalName")],
        cluster_ip_strategy(),
        prop::collection::vec(addr_strategy(), 0..2),
        prop::collection::vec(addr_strategy(), 0..2),
        prop::option::of(prop_oneof![Just("Local"), Just("Cluster"), Just("Odd")]),
        prop::option::of(prop_oneof![Just("Local"), Just("Cluster")]),
        prop::option::of((prop_oneof![Just("ClientIP"), Just("None")], prop::option::of(-1i32..90000))),
        prop::collection::vec(port_json(), 0..3),
    )
        .prop_map(move |(ty, cip, ext, lb, etp, itp, aff, ports)| {
            let mut spec = serde_json::json!({ "type": ty, "ports": ports, "externalIPs": ext });
            if let Some(c) = cip {
                spec["clusterIP"] = c.into();
            }
            if let Some(e) = etp {
                spec["externalTrafficPolicy"] = e.into();
            }
            if let Some(t) = itp {
                spec["internalTrafficPolicy"] = t.into();
            }
            if let Some((a, t)) = aff {
                spec["sessionAffinity"] = a.into();
                if let Some(t) = t {
                    spec["sessionAffinityConfig"] = serde_json::json!({"clientIP": {"timeoutSeconds": t}});
                }
            }
            let ingress: Vec<_> = lb.into_iter().map(|ip| serde_json::json!({"ip": ip})).collect();
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("s{}", i % 3), "namespace": if i < 3 { "a" } else { "b" }},
                "spec": spec,
                "status": {"loadBalancer": {"ingress": ingress}},
            })
        })
}

fn endpoint_json() -> impl Strategy<Value = serde_json::Value> {
    (
        addr_strategy(),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(prop_oneof![Just("node-1"), Just("node-2")]),
    )
        .prop_map(|(a, ready, serving, term, node)| {
            let mut c = serde_json::Map::new();
            if let Some(v) = ready {
                c.insert("ready".into(), v.into());
            }
            if let Some(v) = serving {
                c.insert("serving".into(), v.into());
            }
            if let Some(v) = term {
                c.insert("terminating".into(), v.into());
            }
            let mut e = serde_json::json!({"addresses": [a], "conditions": c});
            if let Some(n) = node {
                e["nodeName"] = n.into();
            }
            e
        })
}

fn slice_json(i: usize) -> impl Strategy<Value = serde_json::Value> {
    (
        0usize..6,
        prop::collection::vec(port_json(), 0..3),
        prop::collection::vec(endpoint_json(), 0..4),
        prop_oneof![4 => Just("IPv4"), 1 => Just("IPv6")],
    )
        .prop_map(move |(svc, ports, eps, at)| {
            let ports: Vec<_> = ports
                .into_iter()
                .map(|mut p| {
                    p.as_object_mut().unwrap().remove("nodePort");
                    p
                })
                .collect();
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("sl{i}"),
                    "namespace": if svc < 3 { "a" } else { "b" },
                    "labels": {"kubernetes.io/service-name": format!("s{}", svc % 3)},
                },
                "addressType": at,
                "ports": ports,
                "endpoints": eps,
            })
        })
}

fn cluster_strategy() -> impl Strategy<Value = Vec<Object>> {
    let services = (0..6).map(service_json).collect::<Vec<_>>();
    let slices = (0..5).map(slice_json).collect::<Vec<_>>();
    let keep = prop::collection::vec(prop::bool::weighted(0.8), 11);
    (services, slices, keep).prop_map(|(s, e, keep)| {
        s.into_iter()
            .chain(e)
            .zip(keep)
            .filter(|(_, k)| *k)
            .filter_map(|(v, _)| parse_object(0, v).ok())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_clusters_render_without_panics_and_deterministically(
        objs in cluster_strategy(),
        seed in any::<u64>(),
    ) {
        let n = node1();
        let forward: Vec<usize> = (0..objs.len()).collect();
        let mut shuffled = forward.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let a = render_services(&state_in_order(&objs, &forward), &n);
        let b = render_services(&state_in_order(&objs, &shuffled), &n);
        prop_assert_eq!(&a, &b);

        // Invariants of the output.
        let ks: Vec<_> = a.mappings.iter().map(|m| (m.external_ip, m.external_port, m.proto)).collect();
        let mut sorted = ks.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&ks, &sorted);
        let cfg = nat_config(&a, &n);
        for m in &a.mappings {
            prop_assert!(m.out2in_only && m.self_twice_nat);
            prop_assert!(m.proto != Proto::Icmp);
            prop_assert!(m.external_port != 0);
            prop_assert!(m.affinity_timeout <= 86400);
            for bs in [&m.internal, &m.external] {
                if let BackendSet::Backends(b) = bs {
                    prop_assert!(!b.is_empty());
                    prop_assert!(b.iter().all(|b| b.weight >= 1 && b.port != 0));
                }
            }
            for src in ["10.1.1.3", "203.0.113.9", "10.20.0.2"] {
                let res = enumerate(&cfg, ip(src), m.proto, m.external_ip, m.external_port);
                prop_assert!(res != Resolution::NotAService);
            }
        }
        for p in &a.backend_pod_ips {
            prop_assert!(n.ipam.pod_subnet.contains(*p));
        }
    }
}

/// The random clusters above are not degenerate: over a few hundred samples they exercise every
/// outcome.
#[test]
fn random_clusters_cover_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let n = node1();
    let strategy = cluster_strategy();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..400 {
        let objs = strategy.new_tree(&mut runner).unwrap().current();
        let r = render_services(
            &state_in_order(&objs, &(0..objs.len()).collect::<Vec<_>>()),
            &n,
        );
        for m in &r.mappings {
            for bs in [&m.internal, &m.external] {
                seen.insert(set(bs)[0].chars().take(4).collect());
            }
            if m.affinity_timeout > 0 {
                seen.insert("affinity".into());
            }
        }
        for e in &r.events {
            seen.insert(e.reason.clone());
        }
        if !r.backend_pod_ips.is_empty() {
            seen.insert("backend pods".into());
        }
    }
    for want in [
        "10.1",
        "DROP",
        "REJE",
        "affinity",
        "backend pods",
        reason::INVALID_SERVICE,
        reason::INVALID_ENDPOINT_SLICE,
        reason::UNSUPPORTED_PROTOCOL,
        reason::MISSING_CLUSTER_IP,
        reason::DUPLICATE_CLUSTER_IP,
        reason::MAPPING_CONFLICT,
    ] {
        assert!(seen.contains(want), "never saw {want}: {seen:?}");
    }
}

// ------------------------------------------------------------------ render cache

/// A Service of the cache test: ClusterIP from a small pool (so duplicates happen), a NodePort
/// sometimes, affinity sometimes, a second port sometimes.
fn cache_service(k: u32, rnd: u64) -> serde_json::Value {
    let mut ports = vec![
        serde_json::json!({"name": "http", "port": 80 + (rnd % 3) as u16, "targetPort": 8080}),
    ];
    if rnd & 8 != 0 {
        ports.push(
            serde_json::json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}),
        );
    }
    let mut spec = serde_json::json!({
        "clusterIP": format!("10.96.7.{}", 1 + (rnd >> 4) % 12),
        "ports": ports,
    });
    if rnd & 16 != 0 {
        spec["type"] = "NodePort".into();
        spec["ports"][0]["nodePort"] = (30000 + (rnd >> 8) % 5).into();
    }
    if rnd & 32 != 0 {
        spec["sessionAffinity"] = "ClientIP".into();
    }
    if rnd & 64 != 0 {
        spec["internalTrafficPolicy"] = "Local".into();
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{k}"), "namespace": "default"}, "spec": spec})
}

/// Its slice: endpoints on this node (nodeName), on another, or known only by a Pod reference
/// (locality from the Pod object).
fn cache_slice(k: u32, rnd: u64) -> serde_json::Value {
    let eps: Vec<serde_json::Value> = (0..(rnd % 4))
        .map(|e| {
            let ip = format!("10.1.{}.{}", 1 + (rnd >> 3) % 2, 10 + e + u64::from(k));
            match (rnd >> (6 + e)) % 3 {
                0 => serde_json::json!({"addresses": [ip], "nodeName": "node-1"}),
                1 => serde_json::json!({"addresses": [ip], "nodeName": "node-2", "conditions": {"ready": (rnd >> 9) & 1 == 0}}),
                _ => serde_json::json!({"addresses": [ip], "targetRef": {"kind": "Pod", "name": format!("p{k}")}}),
            }
        })
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{k}-a"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("s{k}")}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]})
}

#[test]
fn the_render_cache_gives_what_a_full_render_gives_through_a_history_of_changes() {
    let mut rnd: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        rnd
    };
    let mut st = ClusterState::default();
    for k in 0..24 {
        let r = next();
        st.apply(parse_object(0, cache_service(k, r)).unwrap());
        st.apply(parse_object(0, cache_slice(k, next())).unwrap());
    }
    let mut node = node1();
    let mut cache = ServiceCache::default();
    let mut reused = 0;
    for step in 0..400 {
        let r = next();
        let k = (r % 24) as u32;
        match (r >> 8) % 10 {
            0..=3 => st.apply(parse_object(0, cache_slice(k, next())).unwrap()),
            4 | 5 => st.apply(parse_object(0, cache_service(k, next())).unwrap()),
            6 => {
                st.remove("Service", &format!("default/s{k}"));
            }
            7 => {
                st.remove("EndpointSlice", &format!("default/s{k}-a"));
            }
            8 => {
                // A Pod appears or moves: locality read from Pod objects changes.
                let node_name = if next() & 1 == 0 { "node-1" } else { "node-2" };
                st.apply(
                    parse_object(
                        0,
                        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("p{k}"), "namespace": "default"},
                        "spec": {"nodeName": node_name, "containers": []}}),
                    )
                    .unwrap(),
                );
            }
            _ => {
                // The node changes (a host address comes or goes).
                node = if next() & 1 == 0 {
                    node1().with_host_ips([ip("10.20.0.3")])
                } else {
                    node1()
                };
            }
        }
        let full = render_services(&st, &node);
        let cached = render_services_cached(&st, &node, Some(&mut cache));
        assert_eq!(cached, full, "step {step}");
        reused += st.services.len() - cache.last_computed;
    }
    assert!(
        reused > 4000,
        "the cache was used: {reused} Services reused"
    );
}

/// Locality read from the Pod object (no nodeName in the slice) follows the Pod: the render
/// cache must not keep such a Service (the history test above relies on this being visible).
#[test]
fn endpoint_locality_follows_the_pod_object_when_the_slice_has_no_node_name() {
    let mut st = ClusterState::default();
    let mut svc = cache_service(1, 64);
    svc["spec"]["internalTrafficPolicy"] = "Local".into();
    st.apply(parse_object(0, svc).unwrap());
    st.apply(parse_object(0, serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s1-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "s1"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.1.10"], "targetRef": {"kind": "Pod", "name": "p1"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})).unwrap());
    let pod = |n: &str| {
        parse_object(0, serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "default"}, "spec": {"nodeName": n, "containers": []}})).unwrap()
    };
    st.apply(pod("node-1"));
    let a = render_services(&st, &node1());
    st.apply(pod("node-2"));
    let b = render_services(&st, &node1());
    assert_eq!(
        set(&a.mappings[0].internal),
        vec!["10.1.1.10:8080*1"],
        "ITP=Local, pod here"
    );
    assert_eq!(a.mappings[0].internal, a.mappings[0].external);
    assert_eq!(
        b.mappings[0].internal,
        BackendSet::Drop,
        "ITP=Local, pod elsewhere"
    );
    let mut cache = ServiceCache::default();
    st.apply(pod("node-1"));
    assert_eq!(render_services_cached(&st, &node1(), Some(&mut cache)), a);
    st.apply(pod("node-2"));
    assert_eq!(render_services_cached(&st, &node1(), Some(&mut cache)), b);
}
