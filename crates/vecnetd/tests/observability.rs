//! The operator's view of a running node (issue: cluster state, items 1, 5, 6): Prometheus
//! `/metrics` on `httpListen` with the network-programming latency and the data plane's
//! counters, warning events for objects that cannot be rendered (logs, `vecnetctl events`, a
//! metric) that never block the other objects, and a resync that changes nothing for the data
//! plane, so an established TCP connection through a Service goes on across it.
//!
//! Real `vecnetd run` on namespaces the test creates (root), a real TCP connection from a pod
//! to a Service whose endpoint is in the host namespace.

mod e2e_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use e2e_support::*;
use serde_json::json;
use vecnet_io::netns;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One HTTP/1.1 request to the metrics listener; (status, body).
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to httpListen");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first sample line that starts with `name` (labels included), if any.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sends `msg` on the connection and reads the echo back.
fn echo(c: &mut TcpStream, msg: &str) -> String {
    c.write_all(msg.as_bytes())
        .expect("send on the established connection");
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf)
        .expect("the echo comes back on the same connection");
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn metrics_events_and_a_resync_that_keeps_established_flows() {
    if !preflight(&[]) {
        return;
    }
    let port = free_port();
    let mut node = Node::start_with(
        "observability",
        shared_slot(),
        &format!("127.0.0.1:{port}"),
        "",
    );
    let client = node.add_pod("client");
    let host = node.host_ns.clone();
    node.serve_tcp_echo(&host, SocketAddrV4::new(HOST_IP, 9000));
    let vip = Ipv4Addr::new(10, 96, 0, 60);
    node.write_manifest(
        "echo.json",
        &service_objects(&ServiceSpec {
            name: "echo",
            cluster_ip: vip,
            protocol: "TCP",
            port: 90,
            target_port: 9000,
            node_port: None,
            endpoints: &[HOST_IP],
        }),
    );
    // Broken objects beside it: a second Service on the same ClusterIP (after `echo` in key
    // order, so `echo` keeps it) and a policy with an impossible ipBlock.
    let mut broken = service_objects(&ServiceSpec {
        name: "zz-dup",
        cluster_ip: vip,
        protocol: "TCP",
        port: 91,
        target_port: 9000,
        node_port: None,
        endpoints: &[HOST_IP],
    });
    broken.push(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad-cidr", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
    }));
    broken.push(pod_object(&client, &[("app", "client")]));
    node.write_manifest("broken.json", &broken);

    let maps = ["show", "nat44", "static", "mappings"];
    poll("echo mapped", DEADLINE, || {
        let out = node.ctl(&maps);
        if out.contains(&format!("external {vip}:90")) {
            Ok(out)
        } else {
            Err(out)
        }
    });

    // An established connection from the pod through the Service to the host.
    let mut conn = netns::run_in(&netns::path(&client.netns), move || {
        TcpStream::connect_timeout(&SocketAddrV4::new(vip, 90).into(), Duration::from_secs(5))
    })
    .expect("enter the pod namespace")
    .expect("connect to the Service from the pod");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(echo(&mut conn, "one"), "one");

    // Warning events: named object and reason, in `vecnetctl events`, the log and a metric;
    // the valid Service is unaffected.
    let events = poll("warning events", DEADLINE, || {
        let out = node.ctl(&["events"]);
        if out.contains("DuplicateClusterIP") && out.contains("InvalidIPBlock") {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert!(events.contains("Service default/zz-dup"), "{events}");
    assert!(events.contains("bad-cidr"), "{events}");
    assert!(node.log().contains("DuplicateClusterIP"), "{}", node.log());
    assert!(
        !node.ctl(&maps).contains(&format!("external {vip}:91")),
        "the duplicate is not rendered"
    );

    // /metrics on httpListen.
    let (status, m) = http(port, "GET", "/metrics");
    assert_eq!(status, 200, "{m}");
    let programmed = sample(&m, "vecnet_network_programming_duration_seconds_count")
        .expect("programming latency histogram");
    assert!(programmed >= 1.0, "{m}");
    assert_eq!(
        sample(&m, "vecnet_object_warnings{reason=\"DuplicateClusterIP\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vecnet_warning_events_total{reason=\"InvalidIPBlock\"}")
            .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "vecnet_interface_rx_packets_total{interface=\"tap1\"}")
            .is_some_and(|v| v >= 3.0),
        "the pod's packets are counted on its TAP: {m}"
    );
    assert!(
        sample(&m, "vecnet_nat44_sessions").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "vecnet_nat44_static_mappings"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "vecnet_pods"), Some(1.0), "{m}");
    assert!(m.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    // The listener is read-only.
    assert_eq!(http(port, "POST", "/v1/cli").0, 404);
    assert_eq!(http(port, "POST", "/metrics").0, 405);
    assert_eq!(http(port, "GET", "/readyz").0, 200);

    // A resync reads everything again and finds nothing new: no new snapshot, same session,
    // the connection goes on.
    let applies = sample(&m, "vecnet_dataplane_applies_total").expect("applies");
    let sessions_before = node.ctl(&["show", "nat44", "sessions"]);
    assert!(node.ctl(&["resync"]).contains("resync done"));
    let m2 = http(port, "GET", "/metrics").1;
    assert_eq!(
        sample(&m2, "vecnet_dataplane_applies_total"),
        Some(applies),
        "an unchanged render is not applied: {m2}"
    );
    assert_eq!(echo(&mut conn, "two"), "two");
    assert_eq!(
        sessions_before
            .lines()
            .filter(|l| l.contains("o2i"))
            .count(),
        node.ctl(&["show", "nat44", "sessions"])
            .lines()
            .filter(|l| l.contains("o2i"))
            .count()
    );

    // Fixing the broken objects: the warnings resolve, the data plane gets one new snapshot,
    // the connection still goes on.
    std::fs::remove_file(node.dir.join("manifests/broken.json")).expect("remove broken.json");
    let m3 = poll("warnings resolved", DEADLINE, || {
        let m = http(port, "GET", "/metrics").1;
        if sample(&m, "vecnet_object_warnings{reason=\"DuplicateClusterIP\"}").is_none() {
            Ok(m)
        } else {
            Err(m)
        }
    });
    assert!(
        sample(&m3, "vecnet_dataplane_applies_total").is_some_and(|v| v > applies),
        "{m3}"
    );
    assert_eq!(echo(&mut conn, "three"), "three");
    let stats = node.ctl(&["stats"]);
    assert!(stats.contains("p50") && stats.contains("p99"), "{stats}");
    assert!(
        node.ctl(&["events"])
            .contains("0 object warning(s) in force now"),
        "{}",
        node.ctl(&["events"])
    );
    drop(conn);
    node.finish();
}
