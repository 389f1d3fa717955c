//! `vecnetd reflect --kubeconfig` (SYSTEM.md 1.3; docs/kubernetes.md): a fake Kubernetes API
//! server (crates/testsupport) → the reflector as a process → a real etcd on loopback. Objects
//! appear under `<prefix>k8s/`, deletions remove their keys, a relist after `410 Gone` sweeps an
//! object deleted while the watch was expired, and a restarted reflector sweeps what was deleted
//! while it was down.
//!
//! Needs `etcd` and `etcdctl` (Debian `etcd-server`, `etcd-client`); skipped with a message when
//! they are missing. No root needed.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecnet_testsupport::etcd_server::EtcdServer;
use vecnet_testsupport::fake_apiserver::FakeApiServer;

const CONVERGE: Duration = Duration::from_secs(15);
const PREFIX: &str = "/vecnet/";

fn available(test: &str) -> bool {
    let ctl = Command::new("etcdctl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ctl {
        eprintln!("SKIPPED {test}: the `etcdctl` binary is missing (apt-get install etcd-client)");
    }
    ctl && EtcdServer::available(test)
}

struct Reflect {
    dir: PathBuf,
    child: Option<Child>,
}

impl Reflect {
    fn start(api: &FakeApiServer, etcd: &EtcdServer, tag: &str) -> Reflect {
        let dir =
            std::env::temp_dir().join(format!("vn-kube-reflect-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut r = Reflect { dir, child: None };
        api.kubeconfig(&r.dir.join("kubeconfig"))
            .expect("write kubeconfig");
        r.spawn(etcd);
        r
    }

    fn spawn(&mut self, etcd: &EtcdServer) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("reflect.log"))
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vecnetd"));
        // SAFETY: the closure only makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .arg("reflect")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(["--etcd", &etcd.endpoint(), "--prefix", PREFIX])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vecnetd reflect");
        self.child = Some(child);
    }

    /// SIGTERM and wait; panics if it does not exit cleanly within 2 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&c),
            rustix::process::Signal::TERM,
        );
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                assert!(st.success(), "reflect exited with {st}:\n{}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!(
            "reflect did not stop within 2 s of SIGTERM:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("reflect.log")).unwrap_or_default()
    }
}

impl Drop for Reflect {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- reflect log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The keys under `<prefix>k8s/`, sorted.
fn etcd_keys(etcd: &EtcdServer) -> Vec<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}", etcd.endpoint()))
        .args(["get", "--prefix", "--keys-only", &format!("{PREFIX}k8s/")])
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "etcdctl: {out:?}");
    let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

fn etcd_value(etcd: &EtcdServer, key: &str) -> Value {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}", etcd.endpoint()))
        .args(["get", "--print-value-only", key])
        .output()
        .expect("run etcdctl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_keys(etcd: &EtcdServer, r: &Reflect, want: &[&str]) {
    let end = Instant::now() + CONVERGE;
    let mut want: Vec<String> = want.iter().map(|k| format!("{PREFIX}k8s/{k}")).collect();
    want.sort();
    loop {
        let got = etcd_keys(etcd);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "etcd keys {got:#?}\nwanted {want:#?}\nreflect log:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn service(name: &str, port: i32) -> Value {
    json!({"kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "ports": [{"protocol": "TCP", "port": port}]}})
}

fn populate(api: &FakeApiServer) {
    api.apply(json!({"kind": "Namespace", "metadata": {"name": "default"}}));
    api.apply(json!({"kind": "Node", "metadata": {"name": "k8s-master"}}));
    api.apply(
        json!({"kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"},
                     "status": {"podIP": "10.1.1.2"}}),
    );
    api.apply(service("web", 80));
    api.apply(
        json!({"kind": "EndpointSlice", "metadata": {"name": "web-abc", "namespace": "default"},
                     "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.1.2"]}]}),
    );
    api.apply(
        json!({"kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "default"},
                     "spec": {"podSelector": {}}}),
    );
}

const ALL: [&str; 6] = [
    "endpointslice/web-abc/namespace/default",
    "namespace/default",
    "node/k8s-master",
    "pod/web-1/namespace/default",
    "policy/deny/namespace/default",
    "service/web/namespace/default",
];

#[test]
fn kube_api_objects_reach_etcd_and_deletions_are_swept() {
    if !available("kube_api_objects_reach_etcd_and_deletions_are_swept") {
        return;
    }
    let etcd = EtcdServer::start("kube-reflect");
    let api = FakeApiServer::start().expect("fake apiserver");
    populate(&api);
    // A key no object backs: the first full sync must sweep it.
    let stale = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}", etcd.endpoint()))
        .args([
            "put",
            &format!("{PREFIX}k8s/service/gone/namespace/default"),
            "{}",
        ])
        .status()
        .expect("etcdctl put");
    assert!(stale.success());

    let mut r = Reflect::start(&api, &etcd, "a");
    wait_keys(&etcd, &r, &ALL);
    let v = etcd_value(&etcd, &format!("{PREFIX}k8s/service/web/namespace/default"));
    assert_eq!(v["spec"]["ports"][0]["port"], 80, "{v}");
    assert_eq!(v["kind"], "Service", "{v}");

    // Changes: a new Service, a changed one, a deleted one.
    api.apply(service("db", 5432));
    api.apply(service("web", 8080));
    let mut want: Vec<&str> = ALL.to_vec();
    want.push("service/db/namespace/default");
    wait_keys(&etcd, &r, &want);
    let end = Instant::now() + CONVERGE;
    while etcd_value(&etcd, &format!("{PREFIX}k8s/service/web/namespace/default"))["spec"]["ports"]
        [0]["port"]
        != 8080
    {
        assert!(
            Instant::now() < end,
            "web's port change not reflected:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(api.delete("Service", Some("default"), "db"));
    wait_keys(&etcd, &r, &ALL);

    // Deleted while the watch history is lost: only the relist after 410 reveals it.
    assert!(api.delete_silently("Pod", Some("default"), "web-1"));
    api.expire();
    let no_pod: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|k| !k.starts_with("pod/"))
        .collect();
    wait_keys(&etcd, &r, &no_pod);
    assert!(api.list_count("/api/v1/pods") >= 2, "{:?}", api.requests());

    // Deleted while the reflector is down: swept when it starts again.
    r.stop();
    assert!(api.delete("NetworkPolicy", Some("default"), "deny"));
    r.spawn(&etcd);
    let fewer: Vec<&str> = no_pod
        .iter()
        .copied()
        .filter(|k| !k.starts_with("policy/"))
        .collect();
    wait_keys(&etcd, &r, &fewer);
    r.stop();
}
