//! `vecnetd run` with `source.kind: kube` (SYSTEM.md 1.2; docs/kubernetes.md): the agent as a
//! process, in a host network namespace of its own, watching a fake Kubernetes API server
//! (crates/testsupport). Services appear in the data plane, deletions remove them, and a relist
//! after `410 Gone` removes a Service deleted while the watch history was lost.
//!
//! Needs root (namespaces, TAPs) like the other end-to-end tests; `VECNET_E2E=skip` skips it.

mod e2e_support;
mod etcd_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use e2e_support::{preflight, service_objects, ServiceSpec, HOST_IP};
use etcd_support::Agent;
use vecnet_testsupport::fake_apiserver::FakeApiServer;

const CONVERGE: Duration = Duration::from_secs(20);

fn web(name: &'static str, ip: Ipv4Addr) -> Vec<serde_json::Value> {
    service_objects(&ServiceSpec {
        name,
        cluster_ip: ip,
        protocol: "TCP",
        port: 80,
        target_port: 8080,
        node_port: None,
        endpoints: &[HOST_IP],
    })
}

fn has_mapping(out: &str, vip: Ipv4Addr) -> bool {
    out.contains(&format!("external {vip}:80"))
}

#[test]
fn agent_renders_services_from_the_kubernetes_api() {
    if !preflight(&[]) {
        return;
    }
    let api = FakeApiServer::start().expect("fake apiserver");
    let web_ip = Ipv4Addr::new(10, 96, 100, 10);
    let db_ip = Ipv4Addr::new(10, 96, 100, 11);
    let late_ip = Ipv4Addr::new(10, 96, 100, 12);
    for o in web("web", web_ip).into_iter().chain(web("db", db_ip)) {
        api.apply(o);
    }
    // This node's Node object fixes its ID (SYSTEM.md 1.2).
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "kube-one", "annotations": {"vecnet.io/node-id": "5"}}}));

    // The etcd helper's agent, with the configuration switched to the Kubernetes API.
    let mut a = Agent::new("kube-one", "127.0.0.1:1", "/vecnet/");
    let kubeconfig = a.dir.join("kubeconfig");
    api.kubeconfig(&kubeconfig).expect("write kubeconfig");
    let config = std::fs::read_to_string(&a.config).expect("read config");
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("source:") {
                format!(
                    "source: {{kind: kube, kube: {{kubeconfig: \"{}\"}}}}",
                    kubeconfig.display()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        config.contains("kind: kube") && config.contains("nodeID: 0"),
        "{config}"
    );
    std::fs::write(&a.config, config + "\n").expect("write config");
    a.start();

    let maps = ["show", "nat44", "static", "mappings"];
    let out = a.wait_for("both Services mapped", CONVERGE, &maps, |o| {
        has_mapping(o, web_ip) && has_mapping(o, db_ip)
    });
    assert!(out.contains(&format!("local {HOST_IP}:8080")), "{out}");
    let ipam = a.ctl(&["ipam"]);
    assert!(
        ipam.contains(&format!("kube {} (synced", kubeconfig.display())),
        "{ipam}"
    );
    assert_eq!(
        a.node_id(),
        5,
        "nodeID 0: the Node's vecnet.io/node-id annotation"
    );

    // A watched deletion.
    assert!(api.delete("Service", Some("default"), "db"));
    a.wait_for("db unmapped", CONVERGE, &maps, |o| {
        has_mapping(o, web_ip) && !has_mapping(o, db_ip)
    });

    // Deleted without a watch event, then the history expires: the relist must drop it.
    assert!(api.delete_silently("Service", Some("default"), "web"));
    api.expire();
    for o in web("late", late_ip) {
        api.apply(o);
    }
    a.wait_for(
        "web gone and late mapped after the relist",
        CONVERGE,
        &maps,
        |o| !has_mapping(o, web_ip) && has_mapping(o, late_ip),
    );
    a.stop();
}
