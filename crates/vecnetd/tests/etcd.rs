//! Cluster state through a real etcd (SYSTEM.md 1.2–1.4, 13.6; docs/etcd.md): `vecnetd run`
//! agents as processes, each with its own host network namespace, against an etcd the test
//! starts on loopback; the reflector (`vecnetd reflect`) fed from a manifests directory or from
//! a fake Kubernetes API server (crates/testsupport).
//!
//! Needs root (namespaces, TAPs) like the other end-to-end tests; skipped with a message when
//! the `etcd` binary is missing (`scripts/test.sh` installs `etcd-server`).

mod e2e_support;
mod etcd_support;

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use e2e_support::{preflight, service_objects, ServiceSpec, HOST_IP};
use etcd_support::{Agent, ReflectorProc};
use vecnet_testsupport::etcd_server::EtcdServer;

/// Convergence after a change or an etcd restart (back-off is at most 3 s).
const CONVERGE: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: each runs several daemons on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn ready(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !preflight(&[]) || !EtcdServer::available(test) {
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The `vecnetctl nodes` row of `name`, split into columns.
fn node_row(nodes: &str, name: &str) -> Option<Vec<String>> {
    nodes
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|c| c.get(1).map(String::as_str) == Some(name))
}

fn sees_nodes(nodes: &str, want: &[(u32, &str)]) -> bool {
    want.iter().all(|(id, name)| {
        node_row(nodes, name).is_some_and(|c| {
            c[0] == id.to_string()
                && c[2] == format!("192.168.16.{id}/24")
                && c[3] == format!("192.168.30.{id}/24")
        })
    })
}

#[test]
fn agents_get_distinct_node_ids_keep_them_and_see_each_other() {
    let Some(_serial) = ready("node_ids") else {
        return;
    };
    let mut etcd = EtcdServer::start("ids");
    let ep = etcd.endpoint();
    let mut agents: Vec<Agent> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| Agent::new(n, &ep, "/vecnet/"))
        .collect();
    for a in agents.iter_mut() {
        a.start();
    }
    let ids: Vec<u32> = agents.iter().map(Agent::node_id).collect();
    assert_eq!(ids, [1, 2, 3], "smallest free IDs in join order");
    let all = [(1, "alpha"), (2, "beta"), (3, "gamma")];
    for a in &agents {
        let nodes = a.wait_for("sees all three nodes", CONVERGE, &["nodes"], |o| {
            sees_nodes(o, &all)
        });
        let me = node_row(&nodes, &a.name).unwrap();
        assert_eq!(me.last().unwrap(), "node", "{nodes}"); // "this node"
    }
    // The host IPs each agent read from its own host namespace are published.
    let nodes = agents[0].ctl(&["nodes"]);
    assert!(
        node_row(&nodes, "beta").is_some_and(|c| c[4] == HOST_IP.to_string()),
        "beta's host IPs: {nodes}"
    );

    // A restart keeps the ID.
    agents[1].stop();
    agents[1].start();
    assert_eq!(agents[1].node_id(), 2, "beta keeps its ID across a restart");
    agents[1].wait_for("sees all three nodes again", CONVERGE, &["nodes"], |o| {
        sees_nodes(o, &all)
    });

    // gamma leaves in order: its ID is released, the others stop listing it, and the next node
    // to join gets the smallest free ID, 3.
    agents[2].stop();
    let out = agents[2].leave();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("released node ID [3]"),
        "vecnetd leave: {out:?}"
    );
    for a in &agents[..2] {
        a.wait_for("no longer lists gamma", CONVERGE, &["nodes"], |o| {
            node_row(o, "gamma").is_none()
        });
    }
    let mut delta = Agent::new("delta", &ep, "/vecnet/");
    delta.start();
    assert_eq!(delta.node_id(), 3, "the released ID goes to the next node");
    agents[0].wait_for("sees delta as node 3", CONVERGE, &["nodes"], |o| {
        sees_nodes(o, &[(1, "alpha"), (2, "beta"), (3, "delta")])
    });

    // etcd down at start-up: after 5 s beta starts with the ID remembered from its last run,
    // keeps answering, and catches up when etcd returns.
    agents[1].stop();
    etcd.stop();
    agents[1].start_within(Duration::from_secs(30));
    assert_eq!(agents[1].node_id(), 2);
    let ipam = agents[1].ctl(&["ipam"]);
    assert!(
        ipam.contains("unreachable") || ipam.contains("connecting"),
        "{ipam}"
    );
    etcd.restart();
    agents[1].wait_for("resynced after etcd returned", CONVERGE, &["ipam"], |o| {
        o.contains("(connected, revision")
    });
    agents[1].wait_for("sees the cluster again", CONVERGE, &["nodes"], |o| {
        sees_nodes(o, &[(1, "alpha"), (2, "beta"), (3, "delta")])
    });
    assert!(
        agents[1]
            .log()
            .contains("starting with the node ID of the last run"),
        "{}",
        agents[1].log()
    );
}

fn has_mapping(out: &str, vip: Ipv4Addr, port: u16) -> bool {
    // The address is followed by a space: 10.96.0.1:80 must not match 10.96.0.1:8000.
    out.contains(&format!("external {vip}:{port} "))
}

#[test]
fn reflected_services_reach_every_agent_and_survive_an_etcd_restart() {
    let Some(_serial) = ready("reflector") else {
        return;
    };
    let mut etcd = EtcdServer::start("refl");
    let ep = etcd.endpoint();
    let web = Ipv4Addr::new(10, 96, 100, 10);
    let api = Ipv4Addr::new(10, 96, 100, 11);
    let stale = Ipv4Addr::new(10, 96, 100, 99);

    // A Service left in etcd by an earlier reflector run, for an object that no longer exists.
    let rt = vecnet_agent::etcd::runtime().unwrap();
    rt.block_on(async {
        let mut c = vecnet_agent::etcd::connect(&vecnet_agent::etcd::EtcdConnection::new(
            &etcd.endpoints(),
        ))
        .await
        .unwrap();
        for v in service_objects(&ServiceSpec {
            name: "stale",
            cluster_ip: stale,
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: None,
            endpoints: &[HOST_IP],
        }) {
            let o = vecnet_agent::model::parse_object(0, v).unwrap();
            let layout = vecnet_agent::etcd::Layout::default();
            c.put(
                layout.object_key(&o),
                vecnet_agent::etcd::encode_object(&o),
                None,
            )
            .await
            .unwrap();
        }
    });

    let mut agents: Vec<Agent> = ["one", "two"]
        .iter()
        .map(|n| Agent::new(n, &ep, "/vecnet/"))
        .collect();
    for a in agents.iter_mut() {
        a.start();
    }
    let maps = ["show", "nat44", "static", "mappings"];
    for a in &agents {
        a.wait_for("the stale Service from etcd", CONVERGE, &maps, |o| {
            has_mapping(o, stale, 80)
        });
    }

    // The reflector starts: mark-and-sweep removes the stale Service, writes web.
    let mut refl = ReflectorProc::new();
    refl.write(
        "web.json",
        &service_objects(&ServiceSpec {
            name: "web",
            cluster_ip: web,
            protocol: "TCP",
            port: 80,
            target_port: 8080,
            node_port: None,
            endpoints: &[HOST_IP],
        }),
    );
    refl.start(&ep, "/vecnet/");
    for a in &agents {
        let out = a.wait_for("web mapped, stale swept", CONVERGE, &maps, |o| {
            has_mapping(o, web, 80) && !has_mapping(o, stale, 80)
        });
        assert!(out.contains("tag default/web"), "{out}");
        assert!(out.contains(&format!("local {HOST_IP}:8080")), "{out}");
    }

    // etcd goes down: the agents keep answering on the last state.
    etcd.stop();
    for a in &agents {
        a.wait_for("reports etcd unreachable", CONVERGE, &["ipam"], |o| {
            o.contains("unreachable")
        });
        let out = a.ctl(&maps);
        assert!(has_mapping(&out, web, 80), "last state kept: {out}");
    }
    // Meanwhile the cluster changes: web is deleted, api created.
    refl.remove("web.json");
    refl.write(
        "api.json",
        &service_objects(&ServiceSpec {
            name: "api",
            cluster_ip: api,
            protocol: "TCP",
            port: 8080,
            target_port: 8080,
            node_port: None,
            endpoints: &[HOST_IP],
        }),
    );
    std::thread::sleep(Duration::from_secs(1));
    for a in &agents {
        assert!(has_mapping(&a.ctl(&maps), web, 80), "still the last state");
    }
    // etcd returns: the reflector catches up, the agents resync and converge.
    etcd.restart();
    for a in &agents {
        a.wait_for(
            "api mapped, web gone after etcd returned",
            CONVERGE,
            &maps,
            |o| has_mapping(o, api, 8080) && !has_mapping(o, web, 80),
        );
        a.wait_for("reconnected", CONVERGE, &["ipam"], |o| {
            o.contains("(connected, revision")
        });
    }
    assert!(
        agents[0].log().contains("etcd reachable again"),
        "{}",
        agents[0].log()
    );

    // A deleted Service disappears everywhere.
    refl.remove("api.json");
    for a in &agents {
        a.wait_for("no mapping left", CONVERGE, &maps, |o| {
            !has_mapping(o, api, 8080) && !has_mapping(o, web, 80)
        });
    }
}

/// The whole chain of the cluster design: Kubernetes API (the fake server: no API server can
/// run here) → `vecnetd reflect --kubeconfig` → etcd → every agent's data plane, for a new
/// Service, a changed one and a deleted one.
#[test]
fn api_server_objects_reach_every_agent_through_reflector_and_etcd() {
    let Some(_serial) = ready("api-chain") else {
        return;
    };
    let etcd = EtcdServer::start("api-chain");
    let ep = etcd.endpoint();
    let api = vecnet_testsupport::fake_apiserver::FakeApiServer::start()
        .expect("start the fake API server");
    let web = Ipv4Addr::new(10, 96, 101, 10);
    let spec = |port: u16| ServiceSpec {
        name: "web",
        cluster_ip: web,
        protocol: "TCP",
        port,
        target_port: 8080,
        node_port: None,
        endpoints: &[HOST_IP],
    };
    for o in service_objects(&spec(80)) {
        api.apply(o);
    }
    let mut agents: Vec<Agent> = ["one", "two"]
        .iter()
        .map(|n| Agent::new(n, &ep, "/vecnet/"))
        .collect();
    for a in agents.iter_mut() {
        a.start();
    }
    let mut refl = ReflectorProc::new();
    let kubeconfig = refl.dir.join("kubeconfig");
    api.kubeconfig(&kubeconfig).expect("write the kubeconfig");
    refl.start_kube(&kubeconfig, &ep, "/vecnet/");
    let maps = ["show", "nat44", "static", "mappings"];
    for a in &agents {
        let out = a.wait_for("web from the API server", CONVERGE, &maps, |o| {
            has_mapping(o, web, 80)
        });
        assert!(out.contains("tag default/web"), "{out}");
        assert!(out.contains(&format!("local {HOST_IP}:8080")), "{out}");
    }
    // A change on the API server: the port moves from 80 to 8000 everywhere.
    for o in service_objects(&spec(8000)) {
        api.apply(o);
    }
    for a in &agents {
        a.wait_for("web moved to port 8000", CONVERGE, &maps, |o| {
            has_mapping(o, web, 8000) && !has_mapping(o, web, 80)
        });
    }
    // Deleted on the API server: gone from every data plane.
    assert!(api.delete("Service", Some("default"), "web"));
    for a in &agents {
        a.wait_for("web deleted", CONVERGE, &maps, |o| {
            !has_mapping(o, web, 8000)
        });
    }
}
