//! A restart of `vecnetd` never cuts established flows (issue: cluster state, item 1).
//!
//! Real `vecnetd run` on namespaces the test creates (root). Two pods; a Service in front of
//! the server pod; a NetworkPolicy that denies all ingress to the client pod, so that replies
//! reach it only through the reflective ACL session its own packets made. Two TCP connections
//! are established before the restart: client → Service → server (NAT + ACL sessions), and the
//! host network stack → server (over tap0). After a SIGTERM and a fresh start, the *server*
//! speaks first on both: its packet is a reply-direction packet, which passes only if the new
//! process restored the NAT session (un-DNAT to the ClusterIP) and the ACL session (the policy
//! denies it otherwise), and reaches the pod only if its TAP was re-attached.

mod e2e_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use e2e_support::*;
use serde_json::json;
use vecnet_io::netns;

const SERVER_PORT: u16 = 8080;

fn say(from: &mut TcpStream, to: &mut TcpStream, msg: &str) {
    from.write_all(msg.as_bytes())
        .unwrap_or_else(|e| panic!("send {msg:?}: {e}"));
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("receive {msg:?} on the same connection: {e}"));
    assert_eq!(String::from_utf8_lossy(&buf), msg);
}

fn try_connect(ns: &str, to: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
    netns::run_in(&netns::path(ns), move || {
        TcpStream::connect_timeout(&to.into(), timeout)
    })
    .expect("enter the namespace")
}

fn connect_from(ns: &str, to: SocketAddrV4) -> TcpStream {
    let s = try_connect(ns, to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {to} from {ns}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Kills a child that a failed assertion leaves running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number after `label` in the daemon's "sessions of the last run restored" log line.
fn restored(log: &str, label: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("sessions of the last run restored"))?;
    let at = line.find(&format!("{label}="))? + label.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn established_flows_survive_a_restart_and_pods_a_crash() {
    if !preflight(&[]) {
        return;
    }
    let mut node = Node::start("restart", shared_slot());
    let client = node.add_pod("client");
    let server = node.add_pod("server");
    let vip = Ipv4Addr::new(10, 96, 0, 70);
    let mut objects = service_objects(&ServiceSpec {
        name: "srv",
        cluster_ip: vip,
        protocol: "TCP",
        port: 80,
        target_port: SERVER_PORT,
        node_port: None,
        endpoints: &[server.ip],
    });
    objects.push(pod_object(&client, &[("app", "client")]));
    objects.push(pod_object(&server, &[("app", "server")]));
    objects.push(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "client-no-ingress", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                 "policyTypes": ["Ingress"], "ingress": []}
    }));
    node.write_manifest("srv.json", &objects);
    poll("Service and policy rendered", DEADLINE, || {
        let maps = node.ctl(&["show", "nat44", "static", "mappings"]);
        let acls = node.ctl(&["show", "acl-plugin", "acl"]);
        if maps.contains(&format!("external {vip}:80")) && acls.contains("deny") {
            Ok(())
        } else {
            Err(format!("{maps}\n{acls}"))
        }
    });

    let bind = SocketAddrV4::new(server.ip, SERVER_PORT);
    let listener = netns::run_in(&netns::path(&server.netns), move || TcpListener::bind(bind))
        .expect("enter the server pod")
        .expect("listen in the server pod");

    // client pod → ClusterIP → server pod, and host → server pod.
    let mut c_client = connect_from(&client.netns, SocketAddrV4::new(vip, 80));
    let mut c_server = accept(&listener);
    say(&mut c_client, &mut c_server, "hello through the Service");
    say(&mut c_server, &mut c_client, "hello back");
    let host = node.host_ns.clone();
    let mut h_client = connect_from(&host, bind);
    let mut h_server = accept(&listener);
    say(&mut h_client, &mut h_server, "hello from the host");
    say(&mut h_server, &mut h_client, "hello host");
    // The policy holds: the server cannot open a connection to the client.
    let denied = try_connect(
        &server.netns,
        SocketAddrV4::new(client.ip, 9),
        Duration::from_secs(1),
    );
    assert!(denied.is_err(), "ingress to the client is denied");

    node.restart_daemon();
    let log = node.log();
    assert!(
        log.contains("pod of the last run re-attached"),
        "the pods' TAPs are attached again:\n{log}"
    );
    assert!(
        restored(&log, "nat").is_some_and(|n| n >= 1)
            && restored(&log, "acl").is_some_and(|n| n >= 1),
        "NAT and ACL sessions restored:\n{log}"
    );
    let pods = node.ctl(&["pods"]);
    assert!(
        pods.contains(&client.ip.to_string()) && pods.contains(&server.ip.to_string()),
        "{pods}"
    );

    // The server speaks first after the restart (reply direction on both connections).
    say(&mut c_server, &mut c_client, "still here after the restart");
    say(&mut c_client, &mut c_server, "so am I");
    say(&mut h_server, &mut h_client, "and the host link too");
    say(&mut h_client, &mut h_server, "yes");
    // The policy still holds for new connections.
    let denied = try_connect(
        &server.netns,
        SocketAddrV4::new(client.ip, 9),
        Duration::from_secs(1),
    );
    assert!(denied.is_err(), "ingress to the client is still denied");

    // A second vecnetd on the same dataDir refuses to start and disturbs nothing.
    let mut second = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_vecnetd"))
            .args(["run", "--config"])
            .arg(node.dir.join("vecnet.yaml"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a second vecnetd"),
    );
    let status = poll("the second vecnetd exits", DEADLINE, || {
        second
            .0
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_string())
    });
    let mut err = String::new();
    if let Some(mut e) = second.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "{err}");
    assert!(err.contains("in use by another vecnetd"), "{err}");
    say(&mut c_client, &mut c_server, "the first one still serves");
    assert!(node.ctl(&["pods"]).contains(&client.ip.to_string()));

    // A crash (SIGKILL) saves no sessions, but the pods come back from pods.json: new
    // connections work at once.
    drop((c_client, c_server, h_client, h_server));
    node.crash_daemon();
    let mut c2 = connect_from(&client.netns, SocketAddrV4::new(vip, 80));
    let mut s2 = accept(&listener);
    say(&mut c2, &mut s2, "after the crash");
    say(&mut s2, &mut c2, "welcome back");

    // CNI DEL after the restarts removes the pod's interface for good (it was persistent).
    let del = node.del_pod(&client);
    assert!(del.status.success(), "{del:?}");
    poll("the client's eth0 is gone", DEADLINE, || {
        let out = netns_exec(&client.netns, &["ip", "link", "show", "eth0"]);
        if out.status.success() {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Ok(())
        }
    });
    let pods = node.ctl(&["pods"]);
    assert!(!pods.contains(&client.ip.to_string()), "{pods}");
    node.finish();
}
