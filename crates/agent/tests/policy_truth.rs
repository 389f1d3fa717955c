//! NetworkPolicy truth table (SYSTEM.md 13.3), run against the compiler plus the in-crate
//! evaluator, without packets.
//!
//! Namespaces `x`, `y`, `z`, pods `a`, `b`, `c` in each (label `pod=<name>`), servers on TCP and
//! UDP ports 80 and 81 (named `serve-<port>-<proto>`, except z/c whose UDP 81 is named
//! `dns-81-udp`), all nine pods local to one node. For every case and every (protocol, port), the
//! 81 ordered pairs are judged three ways: the hand-written expectation (built with `expect`,
//! `expect_all_ingress`, `expect_all_egress` and wildcards), [`evaluate`] (the semantics) and
//! [`allowed_by_tables`] (the compiled ACLs). All three must agree cell by cell; loopback cells
//! are asserted allowed. On failure the expected, observed and difference matrices are printed
//! (`.` allowed, `X` blocked). Every case also checks host, NAT-loopback, external and ICMP
//! probes.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use vecnet_agent::model::{parse_manifests, ClusterState};
use vecnet_agent::policy::{
    allowed_by_tables, evaluate, render_policies, PolicyNode, PolicyRender, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const N: usize = 9;
const HOST_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 168, 16, 1), Ipv4Addr::new(172, 30, 1, 2)];
const NAT_LOOPBACK: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 254);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    proto: u8,
    port: u16,
}

const TCP80: Probe = Probe {
    proto: PROTO_TCP,
    port: 80,
};
const TCP81: Probe = Probe {
    proto: PROTO_TCP,
    port: 81,
};
const UDP80: Probe = Probe {
    proto: PROTO_UDP,
    port: 80,
};
const UDP81: Probe = Probe {
    proto: PROTO_UDP,
    port: 81,
};
const PROBES: [Probe; 4] = [TCP80, TCP81, UDP80, UDP81];

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.proto == PROTO_TCP {
            "TCP"
        } else {
            "UDP"
        };
        write!(f, "{p}/{}", self.port)
    }
}

fn name(i: usize) -> String {
    format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])
}

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 1, 10 + i as u8)
}

fn index(ns: &str, pod: &str) -> usize {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap();
    n * 3 + PODS.iter().position(|x| *x == pod).unwrap()
}

/// Pods matching `ns/pod`, either side may be `*`.
fn select(pattern: &str) -> Vec<usize> {
    let (ns, pod) = pattern.split_once('/').expect("pattern ns/pod");
    (0..N)
        .filter(|&i| (ns == "*" || NAMESPACES[i / 3] == ns) && (pod == "*" || PODS[i % 3] == pod))
        .collect()
}

/// The expected table: per probe, `[from][to]`.
#[derive(Debug, Clone, PartialEq)]
struct Truth {
    m: Vec<[[bool; N]; N]>,
}

impl Truth {
    fn allow_all() -> Self {
        Truth {
            m: vec![[[true; N]; N]; PROBES.len()],
        }
    }

    fn expect_on(&mut self, probes: &[Probe], from: &str, to: &str, ok: bool) -> &mut Self {
        for (pi, p) in PROBES.iter().enumerate() {
            if !probes.contains(p) {
                continue;
            }
            for f in select(from) {
                for t in select(to) {
                    self.m[pi][f][t] = ok;
                }
            }
        }
        self
    }

    fn expect(&mut self, from: &str, to: &str, ok: bool) -> &mut Self {
        self.expect_on(&PROBES, from, to, ok)
    }

    fn expect_all_ingress(&mut self, to: &str, ok: bool) -> &mut Self {
        self.expect("*/*", to, ok)
    }

    fn expect_all_egress(&mut self, from: &str, ok: bool) -> &mut Self {
        self.expect(from, "*/*", ok)
    }
}

fn base_objects() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus:\n  addresses:\n  \
         - {type: InternalIP, address: 192.168.16.1}\n  - {type: InternalIP, address: 172.30.1.2}\n",
    );
    for ns in NAMESPACES {
        write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{ns: {ns}}}\n"
        )
        .unwrap();
    }
    for i in 0..N {
        let (ns, pod) = (NAMESPACES[i / 3], PODS[i % 3]);
        let udp81 = if i == index("z", "c") {
            "dns-81-udp"
        } else {
            "serve-81-udp"
        };
        write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  \
             labels: {{pod: {pod}}}\nspec:\n  nodeName: n1\n  containers:\n  - name: cont-80\n    \
             ports:\n    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n    \
             - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}\n  - name: cont-81\n    \
             ports:\n    - {{name: serve-81-tcp, containerPort: 81}}\n    \
             - {{name: {udp81}, containerPort: 81, protocol: UDP}}\nstatus:\n  podIP: {}\n  \
             phase: Running\n",
            ip(i)
        )
        .unwrap();
    }
    y
}

fn cluster(policies: &str) -> ClusterState {
    let mut s = ClusterState::default();
    for o in parse_manifests(&base_objects()).expect("base objects") {
        s.apply(o);
    }
    apply(&mut s, policies);
    s
}

fn apply(s: &mut ClusterState, yaml: &str) {
    for o in parse_manifests(yaml).expect("policies") {
        s.apply(o);
    }
}

fn node() -> PolicyNode {
    PolicyNode {
        node_name: "n1".into(),
        local_pods: (0..N).map(|i| (name(i), ip(i))).collect(),
        host_ips: HOST_IPS.to_vec(),
        nat_loopback: NAT_LOOPBACK,
    }
}

fn matrix(title: &str, mark: impl Fn(usize, usize) -> char) -> String {
    let mut s = format!("{title} (rows: from, columns: to)\n    ");
    for t in 0..N {
        write!(s, " {}", name(t)).unwrap();
    }
    s.push('\n');
    for f in 0..N {
        let mut row = name(f);
        for t in 0..N {
            write!(row, "  {} ", mark(f, t)).unwrap();
        }
        s.push_str(row.trim_end());
        s.push('\n');
    }
    s
}

fn dot(b: bool) -> char {
    if b {
        '.'
    } else {
        'X'
    }
}

/// Checks one state against the expectation; returns the failure report.
fn check_state(case: &str, state: &ClusterState, expected: &Truth) -> Result<PolicyRender, String> {
    let node = node();
    let render = render_policies(state, &node);
    let mut report = String::new();
    for (pi, probe) in PROBES.iter().enumerate() {
        let mut exp = expected.m[pi];
        for (i, row) in exp.iter_mut().enumerate() {
            row[i] = true; // loopback cells: asserted allowed
        }
        let mut eval = [[false; N]; N];
        let mut tables = [[false; N]; N];
        for f in 0..N {
            for t in 0..N {
                eval[f][t] = evaluate(state, ip(f), ip(t), probe.proto, probe.port);
                tables[f][t] =
                    allowed_by_tables(&render, &node, ip(f), ip(t), probe.proto, probe.port);
            }
        }
        for (what, obs) in [("evaluate", &eval), ("tables", &tables)] {
            if *obs != exp {
                report += &format!("--- {case}: {probe}: expected vs {what}\n");
                report += &matrix("expected: . allowed, X blocked", |f, t| dot(exp[f][t]));
                report += &matrix(
                    &format!("observed by {what}: . allowed, X blocked"),
                    |f, t| dot(obs[f][t]),
                );
                report += &matrix("difference: X = differs", |f, t| {
                    if obs[f][t] == exp[f][t] {
                        '.'
                    } else {
                        'X'
                    }
                });
            }
        }
    }
    // Probes outside the matrix: ICMP between pods, host, NAT loopback, the Internet.
    for f in 0..N {
        for t in 0..N {
            let (e, o) = (
                evaluate(state, ip(f), ip(t), PROTO_ICMP, 0),
                allowed_by_tables(&render, &node, ip(f), ip(t), PROTO_ICMP, 0),
            );
            if e != o {
                writeln!(
                    report,
                    "{case}: ICMP {} -> {}: evaluate {e}, tables {o}",
                    name(f),
                    name(t)
                )
                .unwrap();
            }
        }
        for probe in PROBES {
            let (p, port) = (probe.proto, probe.port);
            for h in HOST_IPS {
                for (src, dst) in [(h, ip(f)), (ip(f), h)] {
                    let (e, o) = (
                        evaluate(state, src, dst, p, port),
                        allowed_by_tables(&render, &node, src, dst, p, port),
                    );
                    if !(e && o) {
                        writeln!(
                            report,
                            "{case}: {probe} {src} -> {dst} (own node): evaluate {e}, tables {o}"
                        )
                        .unwrap();
                    }
                }
            }
            if !allowed_by_tables(&render, &node, NAT_LOOPBACK, ip(f), p, port) {
                writeln!(
                    report,
                    "{case}: {probe} hairpin from the NAT loopback to {} denied",
                    name(f)
                )
                .unwrap();
            }
            for (src, dst) in [(EXTERNAL, ip(f)), (ip(f), EXTERNAL)] {
                let (e, o) = (
                    evaluate(state, src, dst, p, port),
                    allowed_by_tables(&render, &node, src, dst, p, port),
                );
                if e != o {
                    writeln!(
                        report,
                        "{case}: {probe} {src} -> {dst}: evaluate {e}, tables {o}"
                    )
                    .unwrap();
                }
            }
        }
    }
    if report.is_empty() {
        Ok(render)
    } else {
        Err(report)
    }
}

fn check(case: &str, state: &ClusterState, expected: &Truth) -> PolicyRender {
    match check_state(case, state, expected) {
        Ok(r) => r,
        Err(report) => panic!("truth table mismatch\n{report}"),
    }
}

fn no_events(case: &str, r: &PolicyRender) {
    assert!(
        r.events.is_empty(),
        "{case}: unexpected events {:?}",
        r.events
    );
}

const DENY_ALL_INGRESS_X: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

#[test]
fn no_policy_allows_everything() {
    let r = check("no policy", &cluster(""), &Truth::allow_all());
    assert!(r.acls.is_empty());
    no_events("no policy", &r);
}

#[test]
fn deny_all_ingress() {
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/*", false);
    let r = check("deny-all ingress", &cluster(DENY_ALL_INGRESS_X), &t);
    no_events("deny-all", &r);
    // The three pods of x share one table.
    let outs: Vec<_> = (0..3).map(|i| r.pods[&name(i)].output).collect();
    assert!(outs[0].is_some() && outs.iter().all(|o| *o == outs[0]));
}

#[test]
fn allow_all_ingress_overrides_deny_all() {
    let p = format!(
        "{DENY_ALL_INGRESS_X}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-all, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - {{}}
"
    );
    let r = check("allow-all", &cluster(&p), &Truth::allow_all());
    assert!(
        r.acls.is_empty(),
        "an allow-all direction renders nothing: {:?}",
        r.acls
    );
}

#[test]
fn allow_from_same_namespace() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/*", false)
        .expect("x/*", "x/*", true);
    check("same namespace", &cluster(p), &t);
}

#[test]
fn namespace_selector() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: y}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    check("namespaceSelector", &cluster(p), &t);
}

#[test]
fn pod_selector() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    check("podSelector", &cluster(p), &t);
}

#[test]
fn namespace_and_pod_selector_in_one_peer() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y, z]}
      podSelector:
        matchLabels: {pod: c}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect("y/c", "x/a", true)
        .expect("z/c", "x/a", true);
    check("ns AND pod", &cluster(p), &t);
}

#[test]
fn or_across_peers() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns: y}
    - podSelector:
        matchLabels: {pod: c}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true)
        .expect("x/c", "x/a", true);
    check("ns OR pod", &cluster(p), &t);
}

#[test]
fn selector_expressions() {
    // y/* selected by NotIn; ingress from pods whose label pod exists outside namespace x.
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: exprs, namespace: y}
spec:
  podSelector:
    matchExpressions:
    - {key: pod, operator: NotIn, values: [a]}
    - {key: missing, operator: DoesNotExist}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: NotIn, values: [x]}
      podSelector:
        matchExpressions:
        - {key: pod, operator: Exists}
";
    let mut t = Truth::allow_all();
    for to in ["y/b", "y/c"] {
        t.expect_all_ingress(to, false)
            .expect("y/*", to, true)
            .expect("z/*", to, true);
    }
    check("matchExpressions", &cluster(p), &t);
}

#[test]
fn policies_across_namespaces() {
    // A policy in y admits pod=a from every namespace.
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-any-a, namespace: y}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector:
        matchLabels: {pod: a}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("y/*", false)
        .expect("*/a", "y/*", true);
    check("across namespaces", &cluster(p), &t);
}

#[test]
fn ip_block_with_except() {
    // 10.1.1.0/28 = .0-.15 minus .12/31: allows x/a (.10), x/b (.11), y/b (.14), y/c (.15).
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.1.1.0/28
        except: [10.1.1.12/31]
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false);
    for from in ["x/b", "y/b", "y/c"] {
        t.expect(from, "x/a", true);
    }
    let r = check("ipBlock except", &cluster(p), &t);
    let table = &r.acls[r.pods["x/a"].output.unwrap() as usize];
    assert!(
        table.rules[..table.rules.len() - 1]
            .iter()
            .all(|r| r.action != vecnet_acl::Action::Deny),
        "excepts are split into permits, not denies: {table:?}"
    );
}

#[test]
fn ip_block_without_except_egress() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: z}
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.1.1.8/29}
    ports:
    - {protocol: UDP}
";
    // .8-.15: x/* (.10-.12) and y/* (.13-.15), any UDP port.
    let mut t = Truth::allow_all();
    t.expect_all_egress("z/b", false)
        .expect_on(&[UDP80, UDP81], "z/b", "x/*", true)
        .expect_on(&[UDP80, UDP81], "z/b", "y/*", true);
    check("ipBlock egress", &cluster(p), &t);
}

#[test]
fn named_ports() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-in, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - ports:
    - port: serve-80-tcp
    - {port: serve-80-tcp, protocol: UDP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-out, namespace: y}
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Egress]
  egress:
  - ports:
    - {port: serve-81-udp, protocol: UDP}
";
    let mut t = Truth::allow_all();
    // x/a: TCP 80 only (serve-80-tcp is not a UDP port name).
    t.expect_all_ingress("x/a", false)
        .expect_on(&[TCP80], "*/*", "x/a", true);
    // y/b: UDP 81 to pods naming it serve-81-udp (z/c calls it dns-81-udp).
    t.expect_all_egress("y/b", false)
        .expect_on(&[UDP81], "y/b", "*/*", true)
        .expect_on(&[UDP81], "y/b", "z/c", false);
    t.expect("y/b", "x/a", false);
    check("named ports", &cluster(p), &t);
}

#[test]
fn end_port_ranges() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range-udp, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - ports:
    - {protocol: UDP, port: 79, endPort: 80}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range-tcp, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: b}
  ingress:
  - ports:
    - {port: 80, endPort: 81}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect_on(&[UDP80], "*/*", "x/a", true);
    t.expect_all_ingress("x/b", false)
        .expect_on(&[TCP80, TCP81], "*/*", "x/b", true);
    check("endPort", &cluster(p), &t);
}

#[test]
fn egress_deny_all() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
";
    let mut t = Truth::allow_all();
    t.expect_all_egress("x/*", false);
    let r = check("egress deny-all", &cluster(p), &t);
    assert!(r.global.is_some() && r.reflective.is_some());
}

#[test]
fn egress_to_a_namespace() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {ns: y}
";
    let mut t = Truth::allow_all();
    t.expect_all_egress("x/a", false).expect("x/a", "y/*", true);
    check("egress to namespace", &cluster(p), &t);
}

#[test]
fn policy_types_defaulted_like_the_api_server() {
    // No policyTypes and egress rules: Ingress + Egress (D5.5, gotcha 5), so x/a is also
    // ingress-isolated with no ingress rule.
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-types, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {ns: y}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress-only, namespace: y}
spec:
  podSelector:
    matchLabels: {pod: c}
  ingress:
  - from:
    - podSelector: {}
";
    let mut t = Truth::allow_all();
    t.expect_all_egress("x/a", false).expect("x/a", "y/*", true);
    t.expect_all_ingress("x/a", false);
    t.expect_all_ingress("y/c", false)
        .expect("y/*", "y/c", true);
    check("policyTypes defaulting", &cluster(p), &t);
}

#[test]
fn egress_and_ingress_intersect() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - {port: 80}
    - {protocol: UDP, port: 80, endPort: 81}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in, namespace: y}
spec:
  podSelector:
    matchLabels: {pod: b}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns: x}
    ports:
    - {port: 80, endPort: 81}
    - {protocol: UDP, port: 81}
";
    let mut t = Truth::allow_all();
    t.expect_all_egress("x/a", false)
        .expect_on(&[TCP80, UDP80, UDP81], "x/a", "*/*", true);
    t.expect_all_ingress("y/b", false)
        .expect_on(&[TCP80, TCP81, UDP81], "x/*", "y/b", true);
    t.expect_on(&[TCP81, UDP80], "x/a", "y/b", false);
    check("egress ∩ ingress", &cluster(p), &t);
}

#[test]
fn policies_add_up() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tcp-from-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-from-z, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
    ports: [{port: 81, protocol: UDP}]
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false);
    t.expect_on(&[TCP80], "y/*", "x/a", true)
        .expect_on(&[UDP81], "z/*", "x/a", true);
    check("union", &cluster(p), &t);
}

#[test]
fn sctp_is_rejected_not_rendered_as_udp() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sctp, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - ports:
    - {protocol: SCTP, port: 80}
  - from:
    - podSelector: {matchLabels: {pod: b}}
    ports:
    - {protocol: SCTP, port: 81}
    - {protocol: TCP, port: 81}
";
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/a", false)
        .expect_on(&[TCP81], "x/b", "x/a", true);
    let r = check("SCTP", &cluster(p), &t);
    assert_eq!(
        r.events
            .iter()
            .filter(|e| e.reason == "UnsupportedProtocol")
            .count(),
        2
    );
    assert!(
        r.events.iter().all(|e| e.object == "x/sctp"),
        "{:?}",
        r.events
    );
}

#[test]
fn policy_changes() {
    let mut s = cluster(DENY_ALL_INGRESS_X);
    let mut t = Truth::allow_all();
    t.expect_all_ingress("x/*", false);
    check("step 1: deny-all in x", &s, &t);

    // Step 2: allow x/a from namespaces labelled team=friend (none yet).
    apply(
        &mut s,
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: friends, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: friend}}
",
    );
    check("step 2: friends policy, no friends", &s, &t);

    // Step 3: label namespace z team=friend.
    apply(
        &mut s,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: z\n  labels: {ns: z, team: friend}\n",
    );
    t.expect("z/*", "x/a", true);
    check("step 3: z becomes a friend", &s, &t);

    // Step 4: update the policy to the pods pod=b of friendly namespaces only.
    apply(
        &mut s,
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: friends, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: friend}}
      podSelector: {matchLabels: {pod: b}}
",
    );
    t.expect("z/*", "x/a", false).expect("z/b", "x/a", true);
    check("step 4: policy updated", &s, &t);

    // Step 5: relabel pod z/c to pod=b: it is now admitted.
    let zc = s.pods.get_mut("z/c").unwrap();
    zc.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pod".into(), "b".into());
    t.expect("z/c", "x/a", true);
    check("step 5: z/c relabelled", &s, &t);

    // Step 6: delete the deny-all policy: x/b and x/c open again, x/a still isolated.
    assert!(s.remove("NetworkPolicy", "x/deny-all"));
    t.expect_all_ingress("x/b", true)
        .expect_all_ingress("x/c", true);
    check("step 6: deny-all deleted", &s, &t);

    // Step 7: delete the pod z/b: its IP is no longer a peer.
    assert!(s.remove("Pod", "z/b"));
    let node = {
        let mut n = node();
        n.local_pods.remove("z/b");
        n
    };
    let r = render_policies(&s, &node);
    let zb = ip(index("z", "b"));
    for probe in PROBES {
        assert!(!allowed_by_tables(
            &r,
            &node,
            zb,
            ip(0),
            probe.proto,
            probe.port
        ));
        assert!(!evaluate(&s, zb, ip(0), probe.proto, probe.port));
        assert!(allowed_by_tables(
            &r,
            &node,
            ip(index("z", "c")),
            ip(0),
            probe.proto,
            probe.port
        ));
    }

    // Step 8: delete the last policy: everything allowed, nothing rendered.
    assert!(s.remove("NetworkPolicy", "x/friends"));
    let r = render_policies(&s, &node);
    assert!(r.acls.is_empty() && r.global.is_none() && r.reflective.is_none());
}

#[test]
fn mixed_ingress_and_egress_everywhere() {
    // Several interacting policies in all namespaces; the expectation is built by hand.
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-egress, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {}
  - to:
    - namespaceSelector: {matchLabels: {ns: z}}
    ports: [{port: 81}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-ingress, namespace: z}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
    ports: [{port: 81, endPort: 90}, {protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-both, namespace: x}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {}
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: z}}
      podSelector: {matchLabels: {pod: a}}
";
    let mut t = Truth::allow_all();
    // y pods: only to y/*, and TCP 81 to z/*.
    t.expect_all_egress("y/*", false)
        .expect("y/*", "y/*", true)
        .expect_on(&[TCP81], "y/*", "z/*", true);
    // z pods: TCP 81 and any UDP from anywhere.
    t.expect_all_ingress("z/*", false)
        .expect_on(&[TCP81, UDP80, UDP81], "*/*", "z/*", true);
    // ... but y's egress still applies to y -> z.
    t.expect_on(&[UDP80, UDP81], "y/*", "z/*", false);
    // x/c: ingress from x only; egress to z/a only (where z's ingress admits TCP 81 and UDP).
    t.expect_all_ingress("x/c", false)
        .expect("x/*", "x/c", true);
    t.expect_all_egress("x/c", false)
        .expect_on(&[TCP81, UDP80, UDP81], "x/c", "z/a", true);
    // y -> x/c is blocked by x/c's ingress anyway.
    check("mixed", &cluster(p), &t);
}

#[test]
fn object_order_does_not_matter() {
    let p = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: one, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
  egress:
  - to: [{ipBlock: {cidr: 10.1.1.0/29}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: two, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - ports: [{port: serve-81-tcp}]
";
    let forward = cluster(p);
    let mut objects = parse_manifests(&base_objects()).unwrap();
    objects.extend(parse_manifests(p).unwrap());
    objects.reverse();
    let mut backward = ClusterState::default();
    for o in objects {
        backward.apply(o);
    }
    let node = node();
    assert_eq!(
        render_policies(&forward, &node),
        render_policies(&backward, &node)
    );
}
