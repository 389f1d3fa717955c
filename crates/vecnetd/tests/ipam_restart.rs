//! IPAM across restarts (issue: cluster state, item 4): pod IPs are allocated round robin,
//! relearned from the Pod objects of this node and from `dataDir` after a restart (the next pod
//! never gets an address in use; a pod the cluster knows keeps its address), and a full pod
//! subnet is a CNI error. Real `vecnetd run` and `vecnet-cni` on namespaces the test creates.

mod e2e_support;

use std::net::Ipv4Addr;

use e2e_support::*;
use serde_json::json;
use vecnet_io::netns;

fn offset(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

fn pod_subnet(node: &Node) -> Ipv4Addr {
    node.ctl(&["ipam"])
        .lines()
        .find_map(|l| l.strip_prefix("Pod subnet:"))
        .and_then(|s| s.trim().split('/').next()?.parse().ok())
        .expect("vecnetctl ipam names the pod subnet")
}

#[test]
fn pod_ips_are_relearned_after_a_restart_and_exhaustion_is_a_cni_error() {
    if !preflight(&[]) {
        return;
    }
    // A /29 per node: 4 pod addresses (.2 to .5; .1 gateway, .6 NAT loopback).
    let mut node = Node::start_with(
        "ipam",
        shared_slot(),
        "",
        "ipam: {podSubnetOneNodePrefixLen: 29}\n",
    );
    let net = pod_subnet(&node);
    assert_eq!(net.octets()[3] % 8, 0, "a /29 slice: {net}");

    let a = node.add_pod("a");
    assert_eq!(a.ip, offset(net, 2), "round robin starts at .2");

    // The cluster knows a pod of this node that vecnetd did not attach (it was attached
    // before a restart): its address is relearned and the cursor moves past it.
    let ghost_ip = offset(net, 4);
    node.write_manifest(
        "ghost.json",
        &[json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "ghost", "namespace": "default"},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"podIP": ghost_ip.to_string()}
        })],
    );
    poll("ghost relearned", DEADLINE, || {
        let out = node.ctl(&["ipam"]);
        if out.contains(&format!("{ghost_ip}")) && out.contains("k8s:default/ghost") {
            Ok(())
        } else {
            Err(out)
        }
    });
    let b = node.add_pod("b");
    assert_eq!(
        b.ip,
        offset(net, 5),
        "the next address after the highest in use"
    );

    // Restart: the allocations come back from dataDir and the Pod objects.
    node.restart_daemon();
    let ipam = node.ctl(&["ipam"]);
    for ip in [a.ip, b.ip, ghost_ip] {
        assert!(
            ipam.contains(&ip.to_string()),
            "{ip} still allocated:\n{ipam}"
        );
    }
    assert!(
        node.log().contains("allocations of the last run restored"),
        "{}",
        node.log()
    );

    // The ghost pod is attached now (kubelet re-creating its sandbox): it keeps its address.
    let ghost = node.add_pod("ghost");
    assert_eq!(ghost.ip, ghost_ip);
    let ipam = node.ctl(&["ipam"]);
    assert!(!ipam.contains("k8s:default/ghost"), "handed over:\n{ipam}");

    // .3 is the one address left; after it the slice is full and ADD fails with a CNI error.
    let c = node.add_pod("c");
    assert_eq!(c.ip, offset(net, 3));
    let full = node.create_ns("full");
    let netns_path = netns::path(&full).display().to_string();
    let container_id = format!("{}-full", node.prefix);
    let run = node.cni(&CniEnv {
        command: "ADD",
        container_id: Some(&container_id),
        netns: Some(&netns_path),
        ifname: Some("eth0"),
        args: Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=full"),
    });
    assert!(!run.status.success(), "ADD on a full slice fails: {run:?}");
    let err = run.json();
    assert_eq!(err["code"], 100, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no free pod IP")),
        "{err}"
    );
    assert!(
        err["details"].as_str().is_some_and(|d| d.contains("/29")),
        "the details name the slice: {err}"
    );
    // CNI GC from the runtime: only ghost and c are valid; a's and b's addresses (kept from
    // the first run) are released, so the next ADD succeeds again.
    let mut conf = cni_conf(&node.socket);
    conf["cni.dev/valid-attachments"] = json!([
        {"containerID": ghost.container_id, "ifname": "eth0"},
        {"containerID": c.container_id, "ifname": "eth0"},
    ]);
    let gc = cni_exec_conf(
        &conf,
        &CniEnv {
            command: "GC",
            container_id: None,
            netns: None,
            ifname: None,
            args: None,
        },
    );
    assert!(gc.status.success(), "GC: {gc:?}");
    let ipam = node.ctl(&["ipam"]);
    assert!(
        !ipam.contains(&format!(" {} ", a.ip)) && !ipam.contains(&format!(" {} ", b.ip)),
        "released by GC:\n{ipam}"
    );
    let run = node.cni(&CniEnv {
        command: "ADD",
        container_id: Some(&container_id),
        netns: Some(&netns_path),
        ifname: Some("eth0"),
        args: Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=full"),
    });
    assert!(run.status.success(), "ADD after GC: {run:?}");
    let got: Ipv4Addr = run.json()["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .and_then(|a| a.parse().ok())
        .expect("an address");
    assert_eq!(
        got, b.ip,
        "round robin: the first free address after the last one handed out (c's .3)"
    );
    let del = node.cni(&CniEnv {
        command: "DEL",
        container_id: Some(&container_id),
        netns: Some(&netns_path),
        ifname: Some("eth0"),
        args: None,
    });
    assert!(del.status.success(), "{del:?}");

    // The failed ADD changed nothing: the attached pods still answer.
    let gateway = offset(net, 1);
    let (got, out) = ping(&a.netns, gateway, 1);
    assert_eq!(got, 0, "a's TAP went with GC's DEL: {out}");
    let (got, out) = ping(&ghost.netns, gateway, 1);
    assert_eq!(got, 1, "ghost reaches its gateway: {out}");
    node.finish();
}
