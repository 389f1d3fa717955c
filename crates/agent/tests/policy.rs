//! NetworkPolicy renderer: unit tests per rule (Kubernetes YAML through `parse_manifests`) and a
//! property test on random small clusters (SYSTEM.md 7, 13.5).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::{json, Value};
use vecnet_acl::{Acl, AclRule, Action};
use vecnet_agent::model::{parse_manifests, parse_object, ClusterState};
use vecnet_agent::policy::{
    allowed_by_tables, evaluate, format_rule, render_policies, PodAcls, PolicyNode, PolicyRender,
    PROTO_ANY, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TAG_GLOBAL, TAG_LOCAL_PREFIX,
    TAG_REFLECTION,
};

const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 1);
const HOST_LINK: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 2);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 254);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn state(yaml: &str) -> ClusterState {
    let mut s = ClusterState::default();
    for o in parse_manifests(yaml).expect("valid manifests") {
        s.apply(o);
    }
    s
}

/// A Node object carrying the host addresses, so that `evaluate` knows them too.
const NODE: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  addresses:
  - {type: InternalIP, address: 192.168.16.1}
  - {type: InternalIP, address: 172.30.1.2}
";

/// A running pod on n1: `ns/name`, IP, labels as a YAML flow map, optional container ports.
fn pod(key: &str, ip: &str, labels: &str, ports: &str) -> String {
    let (ns, name) = key.split_once('/').unwrap();
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!("\n    ports: {ports}")
    };
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {labels}\nspec:\n  nodeName: n1\n  containers:\n  - name: main{ports}\n\
         status:\n  podIP: {ip}\n  phase: Running\n"
    )
}

fn node_for(state: &ClusterState) -> PolicyNode {
    let local_pods = state
        .pods
        .iter()
        .filter(|(_, p)| {
            !p.spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false)
        })
        .filter_map(|(k, p)| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((k.clone(), ip))
        })
        .collect();
    PolicyNode {
        node_name: "n1".into(),
        local_pods,
        host_ips: vec![HOST, HOST_LINK],
        nat_loopback: LOOPBACK,
    }
}

fn permit(src: &str, dst: &str, proto: u8, ports: (u16, u16)) -> AclRule {
    rule(Action::Permit, src, dst, proto, ports)
}

fn rule(action: Action, src: &str, dst: &str, proto: u8, ports: (u16, u16)) -> AclRule {
    let net = |s: &str| {
        let (a, l) = s.split_once('/').unwrap();
        (ip(a), l.parse().unwrap())
    };
    AclRule {
        action,
        src: net(src),
        dst: net(dst),
        proto,
        src_ports: (0, 65535),
        dst_ports: ports,
        tcp_flags: (0, 0),
    }
}

const ALL: (u16, u16) = (0, 65535);
const ANY: &str = "0.0.0.0/0";

fn table<'r>(r: &'r PolicyRender, pod: &str) -> &'r Acl {
    let idx = r.pods[pod]
        .output
        .unwrap_or_else(|| panic!("{pod} has no local table"));
    &r.acls[idx as usize]
}

fn print(acl: &Acl) -> String {
    let mut s = format!("{}\n", acl.tag);
    for r in &acl.rules {
        s += &format!("  {}\n", format_rule(r));
    }
    s
}

/// Structural invariants of every render (7.5, 7.6, gotcha 6).
fn check_invariants(r: &PolicyRender) {
    let n = r.acls.len() as u32;
    for acl in &r.acls {
        let last = acl.rules.last().expect("no empty ACL");
        assert!(
            last.src.1 == 0 && last.dst.1 == 0 && last.proto == PROTO_ANY,
            "explicit catch-all last:\n{}",
            print(acl)
        );
        for rule in &acl.rules {
            assert!(
                matches!(rule.proto, PROTO_ANY | PROTO_TCP | PROTO_UDP),
                "only TCP, UDP or any (SCTP never rendered, never as UDP):\n{}",
                print(acl)
            );
            assert_eq!(rule.src_ports, ALL);
            assert!(rule.dst_ports.0 <= rule.dst_ports.1);
            assert_eq!(rule.tcp_flags, (0, 0));
        }
        // Sorted so that a rule matching a subset of another comes first.
        let body = &acl.rules[..acl.rules.len() - 1];
        for (i, a) in body.iter().enumerate() {
            for b in &body[i + 1..] {
                assert!(
                    !strict_subset(b, a),
                    "{b:?} after its superset {a:?}:\n{}",
                    print(acl)
                );
            }
        }
        if acl.tag == TAG_REFLECTION {
            assert_eq!(acl.rules, vec![AclRule::any(Action::PermitReflect)]);
        } else {
            assert!(acl.rules.iter().all(|r| r.action != Action::PermitReflect));
        }
    }
    for (i, a) in r.acls.iter().enumerate() {
        for b in &r.acls[i + 1..] {
            assert_ne!(a.rules, b.rules, "identical tables are shared");
            assert_ne!(a.tag, b.tag);
        }
    }
    for (k, p) in &r.pods {
        assert_eq!(
            p.input_reflective,
            p.output.is_some(),
            "{k}: reflective iff local table"
        );
        if let Some(o) = p.output {
            assert!(o < n && r.acls[o as usize].tag.starts_with(TAG_LOCAL_PREFIX));
            assert!(r.reflective.is_some());
        }
    }
    if let Some(g) = r.global {
        assert!(g < n && r.acls[g as usize].tag == TAG_GLOBAL);
        assert_eq!(
            r.acls[g as usize].rules.last(),
            Some(&AclRule::any(Action::Permit))
        );
        assert!(
            r.reflective.is_some(),
            "reflective on the uplinks with a global table"
        );
    }
    assert_eq!(
        r.reflective.is_some(),
        r.global.is_some() || r.pods.values().any(|p| p.output.is_some())
    );
    if let Some(x) = r.reflective {
        assert!(x < n && r.acls[x as usize].tag == TAG_REFLECTION);
    }
}

fn net_subset(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let mask = |l: u8| u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
    a.1 >= b.1 && u32::from(a.0) & mask(b.1) == u32::from(b.0) & mask(b.1)
}

fn strict_subset(a: &AclRule, b: &AclRule) -> bool {
    let ports = |r: &AclRule| {
        if r.proto == PROTO_ANY {
            ALL
        } else {
            r.dst_ports
        }
    };
    let (pa, pb) = (ports(a), ports(b));
    let subset = net_subset(a.src, b.src)
        && net_subset(a.dst, b.dst)
        && (b.proto == PROTO_ANY || a.proto == b.proto)
        && pb.0 <= pa.0
        && pa.1 <= pb.1;
    subset && (a.src, a.dst, a.proto, pa) != (b.src, b.dst, b.proto, pb)
}

/// Three pods: x/a 10.1.1.3, x/b 10.1.1.4, y/a 10.1.1.5.
fn three_pods() -> String {
    format!(
        "{NODE}{}{}{}",
        pod("x/a", "10.1.1.3", "{app: web}", ""),
        pod("x/b", "10.1.1.4", "{app: db}", ""),
        pod("y/a", "10.1.1.5", "{app: web}", "")
    )
}

fn render(yaml: &str) -> (ClusterState, PolicyNode, PolicyRender) {
    let s = state(yaml);
    let node = node_for(&s);
    let r = render_policies(&s, &node);
    check_invariants(&r);
    (s, node, r)
}

#[test]
fn no_policies_render_nothing() {
    let (_, node, r) = render(&three_pods());
    assert!(r.acls.is_empty() && r.global.is_none() && r.reflective.is_none());
    assert!(r.events.is_empty());
    assert_eq!(r.pods.len(), 3);
    assert!(r.pods.values().all(|p| *p == PodAcls::default()));
    assert!(allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.3"),
        ip("10.1.1.4"),
        PROTO_TCP,
        80
    ));
}

#[test]
fn deny_all_ingress_layout() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny, namespace: x}}
spec:
  podSelector: {{}}
",
        three_pods()
    );
    let (_, node, r) = render(&yaml);
    // One shared local table, then the reflective ACL; no global table (no egress).
    assert_eq!(r.acls.len(), 2, "{:?}", r.acls);
    assert_eq!(r.global, None);
    assert_eq!(r.reflective, Some(1));
    assert_eq!(
        r.pods["x/a"],
        PodAcls {
            output: Some(0),
            input_reflective: true
        }
    );
    assert_eq!(
        r.pods["x/b"],
        PodAcls {
            output: Some(0),
            input_reflective: true
        }
    );
    assert_eq!(r.pods["y/a"], PodAcls::default());
    let t = &r.acls[0];
    let hex = t.tag.strip_prefix(TAG_LOCAL_PREFIX).unwrap();
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        t.tag
    );
    assert_eq!(
        t.rules,
        vec![
            permit("10.1.1.254/32", ANY, PROTO_ANY, ALL),
            permit("172.30.1.2/32", ANY, PROTO_ANY, ALL),
            permit("192.168.16.1/32", ANY, PROTO_ANY, ALL),
            AclRule::any(Action::Deny),
        ],
        "{}",
        print(t)
    );
    assert_eq!(r.acls[1].tag, TAG_REFLECTION);
    assert_eq!(r.acls[1].rules, vec![AclRule::any(Action::PermitReflect)]);
    // Kubelet and hairpin still pass; pods do not.
    for src in [HOST, HOST_LINK, LOOPBACK] {
        assert!(allowed_by_tables(
            &r,
            &node,
            src,
            ip("10.1.1.3"),
            PROTO_TCP,
            80
        ));
    }
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.4"),
        ip("10.1.1.3"),
        PROTO_TCP,
        80
    ));
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.5"),
        ip("10.1.1.3"),
        PROTO_ICMP,
        0
    ));
    assert!(!allowed_by_tables(
        &r,
        &node,
        EXTERNAL,
        ip("10.1.1.3"),
        PROTO_UDP,
        53
    ));
    assert!(allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.3"),
        ip("10.1.1.5"),
        PROTO_TCP,
        80
    ));
}

#[test]
fn ingress_rules_become_sorted_source_rules() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from:
    - ipBlock: {{cidr: 192.0.2.0/24}}
    ports:
    - {{protocol: UDP, port: 53, endPort: 60}}
  - from:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}
    ports:
    - {{port: 80}}
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    assert_eq!(
        table(&r, "x/a").rules,
        vec![
            permit("10.1.1.5/32", ANY, PROTO_TCP, (80, 80)),
            permit("10.1.1.254/32", ANY, PROTO_ANY, ALL),
            permit("172.30.1.2/32", ANY, PROTO_ANY, ALL),
            permit("192.168.16.1/32", ANY, PROTO_ANY, ALL),
            permit("192.0.2.0/24", ANY, PROTO_UDP, (53, 60)),
            AclRule::any(Action::Deny),
        ],
        "{}",
        print(table(&r, "x/a"))
    );
    assert_eq!(r.pods["x/b"].output, None);
    for (src, proto, port, ok) in [
        ("10.1.1.5", PROTO_TCP, 80, true),
        ("10.1.1.5", PROTO_TCP, 81, false),
        ("10.1.1.5", PROTO_UDP, 80, false),
        ("10.1.1.4", PROTO_TCP, 80, false),
        ("192.0.2.9", PROTO_UDP, 60, true),
        ("192.0.2.9", PROTO_UDP, 61, false),
        ("192.0.3.9", PROTO_UDP, 53, false),
    ] {
        let dst = ip("10.1.1.3");
        assert_eq!(
            allowed_by_tables(&r, &node, ip(src), dst, proto, port),
            ok,
            "{src} {port}"
        );
        assert_eq!(evaluate(&s, ip(src), dst, proto, port), ok, "{src} {port}");
    }
}

#[test]
fn egress_rules_go_to_the_global_table_and_into_local_tables() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: out, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}
    ports:
    - {{port: 80}}
    - {{protocol: UDP}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: in, namespace: y}}
spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: x}}}}
    ports:
    - {{port: 80, endPort: 81}}
    - {{protocol: UDP, port: 53}}
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    // Index order: local tables by first pod key (x/b, y/a), global, reflective.
    assert_eq!(
        r.pods["x/a"],
        PodAcls::default(),
        "egress-only pod: no local table"
    );
    assert_eq!(r.pods["x/b"].output, Some(0));
    assert_eq!(r.pods["y/a"].output, Some(1));
    assert_eq!(r.global, Some(2));
    assert_eq!(r.reflective, Some(3));
    // x/b: x/a may send it nothing.
    assert_eq!(
        table(&r, "x/b").rules,
        vec![
            rule(Action::Deny, "10.1.1.3/32", ANY, PROTO_ANY, ALL),
            AclRule::any(Action::Permit)
        ]
    );
    // y/a: x/a gets egress ∩ ingress and a trailing per-source deny; x/b keeps y/a's rules.
    assert_eq!(
        table(&r, "y/a").rules,
        vec![
            permit("10.1.1.3/32", ANY, PROTO_TCP, (80, 80)),
            permit("10.1.1.3/32", ANY, PROTO_UDP, (53, 53)),
            rule(Action::Deny, "10.1.1.3/32", ANY, PROTO_ANY, ALL),
            permit("10.1.1.4/32", ANY, PROTO_TCP, (80, 81)),
            permit("10.1.1.4/32", ANY, PROTO_UDP, (53, 53)),
            permit("10.1.1.254/32", ANY, PROTO_ANY, ALL),
            permit("172.30.1.2/32", ANY, PROTO_ANY, ALL),
            permit("192.168.16.1/32", ANY, PROTO_ANY, ALL),
            AclRule::any(Action::Deny),
        ],
        "{}",
        print(table(&r, "y/a"))
    );
    assert_eq!(
        r.acls[2].rules,
        vec![
            permit("10.1.1.3/32", "10.1.1.5/32", PROTO_TCP, (80, 80)),
            permit("10.1.1.3/32", "10.1.1.5/32", PROTO_UDP, ALL),
            permit("10.1.1.3/32", "172.30.1.2/32", PROTO_ANY, ALL),
            permit("10.1.1.3/32", "192.168.16.1/32", PROTO_ANY, ALL),
            rule(Action::Deny, "10.1.1.3/32", ANY, PROTO_ANY, ALL),
            AclRule::any(Action::Permit),
        ],
        "{}",
        print(&r.acls[2])
    );
    let (a, b, ya) = (ip("10.1.1.3"), ip("10.1.1.4"), ip("10.1.1.5"));
    for (src, dst, proto, port, ok) in [
        (a, ya, PROTO_TCP, 80, true),
        (a, ya, PROTO_TCP, 81, false),
        (a, ya, PROTO_UDP, 53, true),
        (a, ya, PROTO_UDP, 54, false),
        (b, ya, PROTO_TCP, 81, true),
        (a, b, PROTO_TCP, 80, false),
        (a, EXTERNAL, PROTO_TCP, 80, false),
        (a, HOST, PROTO_TCP, 10250, true),
        (b, EXTERNAL, PROTO_TCP, 80, true),
        (EXTERNAL, a, PROTO_TCP, 80, true),
    ] {
        assert_eq!(
            allowed_by_tables(&r, &node, src, dst, proto, port),
            ok,
            "{src}->{dst}:{port}"
        );
        assert_eq!(
            evaluate(&s, src, dst, proto, port),
            ok,
            "{src}->{dst}:{port}"
        );
    }
}

#[test]
fn policy_types_default_as_the_api_server() {
    let pol = |extra: &str| {
        format!(
            "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
{extra}",
            three_pods()
        )
    };
    // Ingress rules only: Ingress.
    let (_, _, r) = render(&pol("  ingress:\n  - from: [{podSelector: {}}]\n"));
    assert!(r.global.is_none() && r.pods["x/a"].output.is_some());
    // Egress rules, no policyTypes: Ingress + Egress (gotcha 5), so also deny-all ingress.
    let (s, node, r) = render(&pol("  egress:\n  - to: [{podSelector: {}}]\n"));
    assert!(r.global.is_some());
    let t = table(&r, "x/a");
    assert_eq!(t.rules.last(), Some(&AclRule::any(Action::Deny)));
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.4"),
        ip("10.1.1.3"),
        PROTO_TCP,
        80
    ));
    assert!(!evaluate(&s, ip("10.1.1.4"), ip("10.1.1.3"), PROTO_TCP, 80));
    assert!(!evaluate(&s, ip("10.1.1.3"), ip("10.1.1.5"), PROTO_TCP, 80));
    assert!(evaluate(&s, ip("10.1.1.3"), ip("10.1.1.4"), PROTO_TCP, 80));
    // An empty egress list does not add Egress; an empty policyTypes list is "omitted".
    for extra in ["  egress: []\n", "  policyTypes: []\n  egress: []\n"] {
        let (_, _, r) = render(&pol(extra));
        assert!(r.global.is_none(), "{extra}");
        assert_eq!(
            table(&r, "x/a").rules.last(),
            Some(&AclRule::any(Action::Deny))
        );
    }
    // Explicit Egress without rules: deny-all egress only.
    let (s, node, r) = render(&pol("  policyTypes: [Egress]\n"));
    assert!(r.global.is_some());
    assert_eq!(r.pods["x/a"].output, None);
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.3"),
        EXTERNAL,
        PROTO_UDP,
        53
    ));
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.3"),
        ip("10.1.1.4"),
        PROTO_UDP,
        53
    ));
    assert!(allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.4"),
        ip("10.1.1.3"),
        PROTO_UDP,
        53
    ));
    assert!(!evaluate(&s, ip("10.1.1.3"), ip("10.1.1.4"), PROTO_UDP, 53));
}

#[test]
fn ip_block_except_is_split_into_permitted_prefixes() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: block, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.0.0.0/8
        except: [10.1.1.0/24, 10.200.0.0/16]
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    let t = table(&r, "x/a");
    let body = &t.rules[..t.rules.len() - 1];
    assert!(
        body.iter().all(|r| r.action == Action::Permit),
        "{}",
        print(t)
    );
    assert!(body.contains(&permit("10.1.0.0/24", ANY, PROTO_ANY, ALL)));
    assert!(body.contains(&permit("10.0.0.0/16", ANY, PROTO_ANY, ALL)));
    assert!(body.contains(&permit("10.128.0.0/10", ANY, PROTO_ANY, ALL)));
    assert!(body.contains(&permit("10.201.0.0/16", ANY, PROTO_ANY, ALL)));
    for (src, ok) in [
        ("10.1.0.1", true),
        ("10.0.0.1", true),
        ("10.255.255.255", true),
        ("10.1.1.4", false),
        ("10.1.1.77", false),
        ("10.200.3.4", false),
        ("11.0.0.1", false),
    ] {
        let dst = ip("10.1.1.3");
        assert_eq!(
            allowed_by_tables(&r, &node, ip(src), dst, PROTO_TCP, 80),
            ok,
            "{src}"
        );
        assert_eq!(evaluate(&s, ip(src), dst, PROTO_TCP, 80), ok, "{src}");
    }
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    let yaml = format!(
        "{NODE}{}{}{}{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: http-in, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - ports: [{{port: http}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: http-out, namespace: y}}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 10.1.1.0/24}}}}]
    ports: [{{port: http}}, {{port: dns, protocol: UDP}}]
",
        pod(
            "x/a",
            "10.1.1.3",
            "{app: a}",
            "[{name: http, containerPort: 8080}]"
        ),
        pod(
            "x/b",
            "10.1.1.4",
            "{app: b}",
            "[{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]"
        ),
        pod(
            "x/c",
            "10.1.1.6",
            "{app: c}",
            "[{name: http, containerPort: 80, protocol: UDP}]"
        ),
        pod("y/a", "10.1.1.5", "{app: a}", "")
    );
    let (s, node, r) = render(&yaml);
    // Each x pod accepts its own http port; x/c names a UDP port, which TCP `http` ignores.
    assert!(table(&r, "x/a")
        .rules
        .contains(&permit(ANY, ANY, PROTO_TCP, (8080, 8080))));
    assert!(table(&r, "x/b")
        .rules
        .contains(&permit(ANY, ANY, PROTO_TCP, (80, 80))));
    assert!(table(&r, "x/c")
        .rules
        .iter()
        .all(|r| r.src.1 == 32 || r.action == Action::Deny));
    // y/a's egress enumerates the pods of the block that have the names.
    let g = &r.acls[r.global.unwrap() as usize];
    assert!(g.rules.contains(&permit(
        "10.1.1.5/32",
        "10.1.1.3/32",
        PROTO_TCP,
        (8080, 8080)
    )));
    assert!(g
        .rules
        .contains(&permit("10.1.1.5/32", "10.1.1.4/32", PROTO_TCP, (80, 80))));
    assert!(g
        .rules
        .contains(&permit("10.1.1.5/32", "10.1.1.4/32", PROTO_UDP, (53, 53))));
    let y = ip("10.1.1.5");
    for (dst, proto, port, ok) in [
        ("10.1.1.3", PROTO_TCP, 8080, true),
        ("10.1.1.3", PROTO_TCP, 80, false),
        ("10.1.1.4", PROTO_TCP, 80, true),
        ("10.1.1.4", PROTO_UDP, 53, false), // x/b's ingress only admits http
        ("10.1.1.6", PROTO_UDP, 80, false),
        ("10.1.1.6", PROTO_TCP, 80, false),
        ("10.1.1.99", PROTO_TCP, 80, false), // not a pod: a named port never matches
    ] {
        assert_eq!(
            allowed_by_tables(&r, &node, y, ip(dst), proto, port),
            ok,
            "{dst}:{port}"
        );
        assert_eq!(evaluate(&s, y, ip(dst), proto, port), ok, "{dst}:{port}");
    }
}

#[test]
fn end_port_makes_a_range() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: range, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - ports: [{{port: 8000, endPort: 8080}}, {{port: 8081, endPort: 8081}}]
",
        three_pods()
    );
    let (_, node, r) = render(&yaml);
    assert!(table(&r, "x/a")
        .rules
        .contains(&permit(ANY, ANY, PROTO_TCP, (8000, 8081))));
    let (src, dst) = (ip("10.1.1.5"), ip("10.1.1.3"));
    assert!(allowed_by_tables(&r, &node, src, dst, PROTO_TCP, 8000));
    assert!(allowed_by_tables(&r, &node, src, dst, PROTO_TCP, 8081));
    assert!(!allowed_by_tables(&r, &node, src, dst, PROTO_TCP, 8082));
    assert!(!allowed_by_tables(&r, &node, src, dst, PROTO_UDP, 8000));
}

#[test]
fn sctp_gives_an_event_and_is_never_rendered_as_udp() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: sctp, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - ports: [{{protocol: SCTP, port: 5000}}, {{protocol: TCP, port: 5001}}]
  - from: [{{podSelector: {{}}}}]
    ports: [{{protocol: SCTP, port: 5002}}]
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    let sctp: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.reason == "UnsupportedProtocol")
        .collect();
    assert_eq!(sctp.len(), 2, "{:?}", r.events);
    assert!(sctp
        .iter()
        .all(|e| e.object == "x/sctp" && e.message.contains("SCTP")));
    let t = table(&r, "x/a");
    assert!(t.rules.contains(&permit(ANY, ANY, PROTO_TCP, (5001, 5001))));
    assert!(t
        .rules
        .iter()
        .all(|r| r.proto != PROTO_UDP && r.proto != PROTO_SCTP));
    // The second rule allows nothing (its only port was SCTP), not "all ports".
    let (src, dst) = (ip("10.1.1.4"), ip("10.1.1.3"));
    for (proto, port, ok) in [
        (PROTO_TCP, 5001, true),
        (PROTO_TCP, 5002, false),
        (PROTO_UDP, 5000, false),
        (PROTO_UDP, 5002, false),
        (PROTO_SCTP, 5000, false),
    ] {
        assert_eq!(
            allowed_by_tables(&r, &node, src, dst, proto, port),
            ok,
            "{proto}/{port}"
        );
        assert_eq!(evaluate(&s, src, dst, proto, port), ok, "{proto}/{port}");
    }
}

#[test]
fn invalid_inputs_give_events_and_fail_closed() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bad, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress, Sideways]
  ingress:
  - from:
    - ipBlock: {{cidr: 10.1.1.0/33}}
    - ipBlock: {{cidr: 10.0.0.0/8, except: [banana]}}
    - {{}}
    - ipBlock: {{cidr: 10.0.0.0/8}}
      podSelector: {{}}
    - podSelector:
        matchExpressions: [{{key: app, operator: Near}}]
  - ports:
    - {{port: 0}}
    - {{port: 90, endPort: 80}}
    - {{port: http, endPort: 90}}
    - {{endPort: 90}}
    - {{protocol: ICMP}}
    - {{port: \"80\"}}
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    let reasons: std::collections::BTreeSet<&str> =
        r.events.iter().map(|e| e.reason.as_str()).collect();
    for want in [
        "InvalidPolicyType",
        "InvalidIPBlock",
        "InvalidPeer",
        "InvalidSelector",
        "InvalidPort",
        "UnsupportedProtocol",
    ] {
        assert!(
            reasons.contains(want),
            "{want} missing from {:#?}",
            r.events
        );
    }
    assert!(r.events.iter().all(|e| e.object == "x/bad"));
    // Nothing was widened: x/a only admits its node and the hairpin.
    for src in ["10.1.1.4", "10.1.1.5", "10.9.9.9"] {
        assert!(!allowed_by_tables(
            &r,
            &node,
            ip(src),
            ip("10.1.1.3"),
            PROTO_TCP,
            80
        ));
        assert!(!evaluate(&s, ip(src), ip("10.1.1.3"), PROTO_TCP, 80));
    }
    // The events are deterministic.
    assert_eq!(render_policies(&s, &node).events, r.events);
}

#[test]
fn ipv6_blocks_match_no_ipv4_address_silently() {
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: v6, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: 'fd00::/8', except: ['fd00::/16']}}}}]
",
        three_pods()
    );
    let (_, node, r) = render(&yaml);
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.5"),
        ip("10.1.1.3"),
        PROTO_TCP,
        80
    ));
}

#[test]
fn host_network_and_terminated_pods_are_neither_isolated_nor_peers() {
    let yaml = format!(
        "{NODE}{}{}---
apiVersion: v1
kind: Pod
metadata: {{name: hn, namespace: x, labels: {{app: web}}}}
spec:
  hostNetwork: true
  nodeName: n1
  containers: [{{name: main}}]
status: {{podIP: 192.168.16.1, phase: Running}}
---
apiVersion: v1
kind: Pod
metadata: {{name: done, namespace: x, labels: {{app: web}}}}
spec:
  nodeName: n1
  containers: [{{name: main}}]
status: {{podIP: 10.1.1.9, phase: Succeeded}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
",
        pod("x/a", "10.1.1.3", "{app: web}", ""),
        pod("x/b", "10.1.1.4", "{app: db}", "")
    );
    let s = state(&yaml);
    let mut node = node_for(&s);
    node.local_pods.insert("x/hn".into(), HOST);
    node.local_pods.insert("x/done".into(), ip("10.1.1.9"));
    let r = render_policies(&s, &node);
    check_invariants(&r);
    assert_eq!(r.pods["x/hn"], PodAcls::default());
    assert_eq!(r.pods["x/done"], PodAcls::default());
    // Only the pod's own IP (and node/hairpin) is admitted; not the terminated pod's IP.
    let t = table(&r, "x/a");
    assert!(t
        .rules
        .contains(&permit("10.1.1.3/32", ANY, PROTO_ANY, ALL)));
    assert!(!t.rules.iter().any(|r| r.src.0 == ip("10.1.1.9")));
    assert!(!evaluate(&s, ip("10.1.1.9"), ip("10.1.1.3"), PROTO_TCP, 80));
}

#[test]
fn namespaces_without_objects_still_have_the_name_label() {
    // No Namespace objects at all: kubernetes.io/metadata.name is still matched.
    let yaml = format!(
        "{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-y, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {{key: kubernetes.io/metadata.name, operator: In, values: [y]}}
",
        three_pods()
    );
    let (_, node, r) = render(&yaml);
    assert!(allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.5"),
        ip("10.1.1.3"),
        PROTO_TCP,
        80
    ));
    assert!(!allowed_by_tables(
        &r,
        &node,
        ip("10.1.1.4"),
        ip("10.1.1.3"),
        PROTO_TCP,
        80
    ));
}

#[test]
fn local_pod_ips_come_from_the_node_and_unknown_pods_get_nothing() {
    // y/a has no status.podIP (IPAM gave it one); "x/ghost" has no Pod object.
    let yaml = format!(
        "{NODE}{}---
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: y, labels: {{app: web}}}}
spec: {{nodeName: n1, containers: [{{name: main}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-y, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: web}}}}}}]
",
        pod("x/a", "10.1.1.3", "{app: db}", "")
    );
    let s = state(&yaml);
    let mut node = node_for(&s);
    node.local_pods.insert("y/a".into(), ip("10.1.1.7"));
    node.local_pods.insert("x/ghost".into(), ip("10.1.1.8"));
    let r = render_policies(&s, &node);
    check_invariants(&r);
    assert!(table(&r, "x/a")
        .rules
        .contains(&permit("10.1.1.7/32", ANY, PROTO_ANY, ALL)));
    assert_eq!(r.pods["x/ghost"], PodAcls::default());
    assert_eq!(r.pods.len(), 3);
}

#[test]
fn identical_tables_share_one_acl_with_a_stable_tag() {
    let pol = "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
";
    let (_, _, r1) = render(&format!("{}{pol}", three_pods()));
    let more = format!(
        "{}{}{pol}",
        three_pods(),
        pod("x/c", "10.1.1.6", "{app: c}", "")
    );
    let (_, _, r2) = render(&more);
    assert_eq!(r2.acls.len(), 2);
    assert_eq!(r2.pods["x/c"].output, r2.pods["x/a"].output);
    assert_eq!(r1.acls[0], r2.acls[0], "same rules, same tag");
}

#[test]
fn cross_namespace_ingress_and_egress() {
    let yaml = format!(
        "{}---
apiVersion: v1
kind: Namespace
metadata: {{name: y, labels: {{team: blue}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: blue-only, namespace: x}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: blue}}}}}}]
  egress:
  - to: [{{namespaceSelector: {{matchLabels: {{team: blue}}}}, podSelector: {{matchLabels: {{app: web}}}}}}]
",
        three_pods()
    );
    let (s, node, r) = render(&yaml);
    let (xa, xb, ya) = (ip("10.1.1.3"), ip("10.1.1.4"), ip("10.1.1.5"));
    for (src, dst, ok) in [
        (ya, xa, true),
        (ya, xb, true),
        (xa, xb, false),
        (xa, ya, true),
        (xb, ya, true),
        (xa, EXTERNAL, false),
        (EXTERNAL, xa, false),
    ] {
        assert_eq!(
            allowed_by_tables(&r, &node, src, dst, PROTO_TCP, 443),
            ok,
            "{src}->{dst}"
        );
        assert_eq!(evaluate(&s, src, dst, PROTO_TCP, 443), ok, "{src}->{dst}");
    }
}

#[test]
fn format_rule_is_vpp_like() {
    assert_eq!(
        format_rule(&permit("10.1.1.3/32", ANY, PROTO_TCP, (80, 80))),
        "permit src 10.1.1.3/32 dst 0.0.0.0/0 proto 6 sport 0-65535 dport 80-80"
    );
    assert_eq!(
        format_rule(&AclRule::any(Action::PermitReflect)),
        "permit+reflect src 0.0.0.0/0 dst 0.0.0.0/0 proto 0 sport 0-65535 dport 0-65535"
    );
}

// ---------------------------------------------------------------------------
// Property test: random small clusters
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SelSpec {
    kind: u8,
    key: u8,
    vals: Vec<u8>,
}

#[derive(Debug, Clone)]
enum PeerSpec {
    Pod(SelSpec),
    Ns(SelSpec),
    Both(SelSpec, SelSpec),
    Block(u8, Vec<u8>),
    Invalid(u8),
}

#[derive(Debug, Clone)]
struct PortSpec {
    proto: u8,
    port: u8,
    end: Option<u8>,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    peers: Option<Vec<PeerSpec>>,
    ports: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone)]
struct PolSpec {
    ns: u8,
    select: SelSpec,
    types: u8,
    ingress: Option<Vec<RuleSpec>>,
    egress: Option<Vec<RuleSpec>>,
}

#[derive(Debug, Clone)]
struct PodSpec {
    ns: u8,
    app: Option<u8>,
    tier: Option<u8>,
    ports: Vec<(u8, u8, bool)>,
    special: u8,
}

#[derive(Debug, Clone)]
struct ClusterSpec {
    ns_team: Vec<Option<u8>>,
    pods: Vec<PodSpec>,
    policies: Vec<PolSpec>,
}

const APPS: [&str; 3] = ["web", "db", "cache"];
const TIERS: [&str; 2] = ["1", "2"];
const TEAMS: [&str; 2] = ["red", "blue"];
const NAMES: [&str; 4] = ["http", "dns", "metrics", "nope"];
const PORTS: [u16; 4] = [53, 80, 81, 8080];
const CIDRS: [&str; 11] = [
    "10.1.1.0/24",
    "10.1.1.8/29",
    "10.1.1.12/30",
    "10.1.1.16/28",
    "0.0.0.0/0",
    "198.51.100.0/24",
    "10.1.1.11/32",
    "10.0.0.0/8",
    "192.168.16.0/24",
    "fd00::/64",
    "bogus",
];
const EXCEPTS: [&str; 7] = [
    "10.1.1.12/31",
    "10.1.1.10/32",
    "10.1.1.0/28",
    "198.51.100.7/32",
    "192.168.16.1/32",
    "fd00::1/128",
    "10.1.1.0/255",
];

fn sel_strategy() -> impl Strategy<Value = SelSpec> {
    (0u8..11, 0u8..2, prop::collection::vec(0u8..3, 0..3)).prop_map(|(kind, key, vals)| SelSpec {
        kind,
        key,
        vals,
    })
}

fn peer_strategy() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        3 => sel_strategy().prop_map(PeerSpec::Pod),
        3 => sel_strategy().prop_map(PeerSpec::Ns),
        2 => (sel_strategy(), sel_strategy()).prop_map(|(a, b)| PeerSpec::Both(a, b)),
        3 => (0u8..CIDRS.len() as u8, prop::collection::vec(0u8..EXCEPTS.len() as u8, 0..3))
            .prop_map(|(c, e)| PeerSpec::Block(c, e)),
        1 => (0u8..2).prop_map(PeerSpec::Invalid),
    ]
}

fn port_strategy() -> impl Strategy<Value = PortSpec> {
    (0u8..10, 0u8..12, prop::option::of(0u8..4)).prop_map(|(proto, port, end)| PortSpec {
        proto,
        port,
        end,
    })
}

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    (
        prop::option::of(prop::collection::vec(peer_strategy(), 0..3)),
        prop::option::of(prop::collection::vec(port_strategy(), 0..3)),
    )
        .prop_map(|(peers, ports)| RuleSpec { peers, ports })
}

fn policy_strategy() -> impl Strategy<Value = PolSpec> {
    (
        0u8..3,
        sel_strategy(),
        0u8..5,
        prop::option::of(prop::collection::vec(rule_strategy(), 0..3)),
        prop::option::of(prop::collection::vec(rule_strategy(), 0..3)),
    )
        .prop_map(|(ns, select, types, ingress, egress)| PolSpec {
            ns,
            select,
            types,
            ingress,
            egress,
        })
}

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0u8..3,
        prop::option::of(0u8..3),
        prop::option::of(0u8..2),
        prop::collection::vec((0u8..4, 0u8..4, any::<bool>()), 0..3),
        0u8..16,
    )
        .prop_map(|(ns, app, tier, ports, special)| PodSpec {
            ns,
            app,
            tier,
            ports,
            special,
        })
}

fn cluster_strategy() -> impl Strategy<Value = ClusterSpec> {
    (
        prop::collection::vec(prop::option::of(0u8..2), 3),
        prop::collection::vec(pod_strategy(), 1..8),
        prop::collection::vec(policy_strategy(), 0..5),
    )
        .prop_map(|(ns_team, pods, policies)| ClusterSpec {
            ns_team,
            pods,
            policies,
        })
}

fn ns_name(i: u8) -> String {
    format!("n{}", i % 3)
}

/// `pod`: a pod selector (keys app/tier); else a namespace selector (keys team/name).
fn sel_json(s: &SelSpec, pod: bool) -> Value {
    let (key, vals): (&str, Vec<String>) = match (pod, s.key) {
        (true, 0) => (
            "app",
            s.vals
                .iter()
                .map(|&v| APPS[v as usize % 3].into())
                .collect(),
        ),
        (true, _) => (
            "tier",
            s.vals
                .iter()
                .map(|&v| TIERS[v as usize % 2].into())
                .collect(),
        ),
        (false, 0) => (
            "team",
            s.vals
                .iter()
                .map(|&v| TEAMS[v as usize % 2].into())
                .collect(),
        ),
        (false, _) => (
            "kubernetes.io/metadata.name",
            s.vals.iter().map(|&v| ns_name(v)).collect(),
        ),
    };
    let first = vals.first().cloned().unwrap_or_else(|| "none".into());
    let expr =
        |op: &str| json!({"matchExpressions": [{"key": key, "operator": op, "values": vals}]});
    // Kind 1 leaves a policy's podSelector out; 10 (rare) is invalid.
    match s.kind {
        0..=3 => json!({}),
        4 | 5 => json!({"matchLabels": {key: first}}),
        6 => expr("In"),
        7 => expr("NotIn"),
        8 => json!({"matchExpressions": [{"key": key, "operator": "Exists"}]}),
        9 => json!({"matchExpressions": [{"key": key, "operator": "DoesNotExist"}]}),
        _ => json!({"matchExpressions": [{"key": key, "operator": "Near"}]}),
    }
}

fn peer_json(p: &PeerSpec) -> Value {
    match p {
        PeerSpec::Pod(s) => json!({"podSelector": sel_json(s, true)}),
        PeerSpec::Ns(s) => json!({"namespaceSelector": sel_json(s, false)}),
        PeerSpec::Both(n, s) => {
            json!({"namespaceSelector": sel_json(n, false), "podSelector": sel_json(s, true)})
        }
        PeerSpec::Block(c, e) => {
            let except: Vec<&str> = e.iter().map(|&i| EXCEPTS[i as usize]).collect();
            if except.is_empty() {
                json!({"ipBlock": {"cidr": CIDRS[*c as usize]}})
            } else {
                json!({"ipBlock": {"cidr": CIDRS[*c as usize], "except": except}})
            }
        }
        PeerSpec::Invalid(0) => json!({}),
        PeerSpec::Invalid(_) => json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
    }
}

fn port_json(p: &PortSpec) -> Value {
    let mut v = serde_json::Map::new();
    match p.proto {
        0..=2 => {}
        3..=4 => {
            v.insert("protocol".into(), json!("TCP"));
        }
        5..=7 => {
            v.insert("protocol".into(), json!("UDP"));
        }
        8 => {
            v.insert("protocol".into(), json!("SCTP"));
        }
        _ => {
            v.insert("protocol".into(), json!("ICMP"));
        }
    }
    match p.port {
        0..=5 => {
            v.insert("port".into(), json!(PORTS[p.port as usize % 4]));
        }
        6..=8 => {
            v.insert("port".into(), json!(NAMES[(p.port - 6) as usize]));
        }
        9 => {
            v.insert("port".into(), json!(0));
        }
        10 => {}
        _ => {
            v.insert("port".into(), json!(NAMES[3]));
        }
    }
    if let Some(e) = p.end {
        v.insert("endPort".into(), json!([81, 90, 8080, 10][e as usize]));
    }
    Value::Object(v)
}

fn rules_json(rules: &[RuleSpec], peers_field: &str) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|r| {
                let mut v = serde_json::Map::new();
                if let Some(p) = &r.peers {
                    v.insert(peers_field.into(), p.iter().map(peer_json).collect());
                }
                if let Some(p) = &r.ports {
                    v.insert("ports".into(), p.iter().map(port_json).collect());
                }
                Value::Object(v)
            })
            .collect(),
    )
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 1, 10 + i as u8)
}

/// The cluster's objects (Node, namespaces, pods, policies) and this node.
fn build(c: &ClusterSpec) -> (Vec<Value>, PolicyNode) {
    let mut objs = vec![json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [
            {"type": "InternalIP", "address": HOST.to_string()},
            {"type": "InternalIP", "address": HOST_LINK.to_string()}]}
    })];
    for (i, team) in c.ns_team.iter().enumerate() {
        let mut meta = json!({"name": ns_name(i as u8)});
        if let Some(t) = team {
            meta["labels"] = json!({"team": TEAMS[*t as usize]});
        }
        objs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}));
    }
    let mut local_pods = BTreeMap::new();
    for (i, p) in c.pods.iter().enumerate() {
        let mut labels = serde_json::Map::new();
        if let Some(a) = p.app {
            labels.insert("app".into(), json!(APPS[a as usize]));
        }
        if let Some(t) = p.tier {
            labels.insert("tier".into(), json!(TIERS[t as usize]));
        }
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|&(n, port, udp)| {
                json!({"name": NAMES[n as usize], "containerPort": PORTS[port as usize],
                       "protocol": if udp { "UDP" } else { "TCP" }})
            })
            .collect();
        // special: 0 hostNetwork, 1 Succeeded, 2 no status IP, 3 Pending, else Running.
        let host_network = p.special == 0;
        let ip = if host_network { HOST } else { pod_ip(i) };
        let mut status =
            json!({"phase": match p.special { 1 => "Succeeded", 3 => "Pending", _ => "Running" }});
        if p.special != 2 {
            status["podIP"] = json!(ip.to_string());
        }
        let key = format!("{}/p{i}", ns_name(p.ns));
        if p.special != 0 && p.special != 1 {
            local_pods.insert(key, ip);
        }
        objs.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": ns_name(p.ns), "labels": labels},
            "spec": {"nodeName": "n1", "hostNetwork": host_network,
                     "containers": [{"name": "main", "ports": ports}]},
            "status": status,
        }));
    }
    for (i, p) in c.policies.iter().enumerate() {
        let mut spec = serde_json::Map::new();
        if p.select.kind != 1 {
            spec.insert("podSelector".into(), sel_json(&p.select, true));
        }
        match p.types {
            0 => {}
            1 => {
                spec.insert("policyTypes".into(), json!(["Ingress"]));
            }
            2 => {
                spec.insert("policyTypes".into(), json!(["Egress"]));
            }
            3 => {
                spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]));
            }
            _ => {
                spec.insert("policyTypes".into(), json!(["Egress", "Ingress", "Bogus"]));
            }
        }
        if let Some(r) = &p.ingress {
            spec.insert("ingress".into(), rules_json(r, "from"));
        }
        if let Some(r) = &p.egress {
            spec.insert("egress".into(), rules_json(r, "to"));
        }
        objs.push(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("pol{i}"), "namespace": ns_name(p.ns)},
            "spec": spec,
        }));
    }
    let node = PolicyNode {
        node_name: "n1".into(),
        local_pods,
        host_ips: vec![HOST, HOST_LINK],
        nat_loopback: LOOPBACK,
    };
    (objs, node)
}

fn state_of(objs: impl IntoIterator<Item = Value>) -> ClusterState {
    let mut s = ClusterState::default();
    for (i, v) in objs.into_iter().enumerate() {
        s.apply(parse_object(i, v).expect("generated objects are valid"));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_clusters_render_deterministically_and_match_the_evaluator(c in cluster_strategy()) {
        let (objs, node) = build(&c);
        let s = state_of(objs.clone());
        let r = render_policies(&s, &node);
        check_invariants(&r);
        // Deterministic: again, and with the objects applied in reverse order.
        prop_assert_eq!(&render_policies(&s, &node), &r);
        let reversed = state_of(objs.into_iter().rev());
        prop_assert_eq!(&render_policies(&reversed, &node), &r);

        // A pod without status.podIP is known to the node (IPAM) but not to the evaluator.
        let mut ips: Vec<Ipv4Addr> =
            (0..c.pods.len()).filter(|&i| c.pods[i].special != 2).map(pod_ip).collect();
        ips.extend([HOST, HOST_LINK, EXTERNAL, Ipv4Addr::new(10, 1, 1, 200)]);
        for &src in &ips {
            for &dst in &ips {
                for proto in [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_SCTP] {
                    for port in PORTS {
                        let e = evaluate(&s, src, dst, proto, port);
                        let t = allowed_by_tables(&r, &node, src, dst, proto, port);
                        prop_assert_eq!(
                            e, t,
                            "{} -> {} proto {} port {}: evaluate {}, tables {}\n{}",
                            src, dst, proto, port, e, t,
                            r.acls.iter().map(print).collect::<String>()
                        );
                    }
                }
            }
        }
        // Hairpin from the NAT loopback always reaches local pods.
        for &dst in node.local_pods.values() {
            prop_assert!(allowed_by_tables(&r, &node, LOOPBACK, dst, PROTO_TCP, 80));
        }
    }
}
