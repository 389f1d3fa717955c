//! The Kubernetes API source against a fake API server (crates/testsupport): initial snapshot,
//! ordered changes, `410 Gone` → relist, broken watches, an API server that appears late, stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecnet_agent::kubeapi::{self, KubeSourceConfig};
use vecnet_agent::model::Object;
use vecnet_agent::source::SourceEvent;
use vecnet_testsupport::fake_apiserver::FakeApiServer;

const WAIT: Duration = Duration::from_secs(10);

struct Source {
    rx: mpsc::Receiver<SourceEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl Source {
    fn start(server_url: &str) -> Self {
        let dir = TempDir::new();
        let kc = dir.0.join("kubeconfig");
        std::fs::write(
            &kc,
            vecnet_testsupport::fake_apiserver::kubeconfig_text(server_url),
        )
        .expect("write kubeconfig");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = kubeapi::spawn(
            KubeSourceConfig {
                kubeconfig: Some(kc),
                context: None,
            },
            Arc::clone(&stop),
            move |ev| tx.send(ev).is_ok(),
        )
        .expect("spawn source");
        Self {
            rx,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Events until one satisfies `f` (returned with those before it); panics after `WAIT`.
    fn until(&self, what: &str, mut f: impl FnMut(&SourceEvent) -> bool) -> Vec<SourceEvent> {
        let end = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    let done = f(&ev);
                    seen.push(ev);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; events: {seen:#?}"),
            }
        }
    }

    /// The next event that is not a `Disconnected`.
    fn next_data(&self, what: &str) -> SourceEvent {
        let mut evs = self.until(what, |e| !matches!(e, SourceEvent::Disconnected { .. }));
        evs.pop().expect("until returns the matching event")
    }

    fn quiet_for(&self, d: Duration) -> Vec<SourceEvent> {
        let end = Instant::now() + d;
        let mut seen = Vec::new();
        while let Ok(ev) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            seen.push(ev);
        }
        seen
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vecnet-kubeapi-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn namespace(name: &str) -> Value {
    json!({"kind": "Namespace", "metadata": {"name": name, "labels": {"team": "a"}}})
}

fn node(name: &str) -> Value {
    json!({"kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": "192.168.16.1"}]}})
}

fn pod(name: &str, ip: &str) -> Value {
    json!({"kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
           "spec": {"nodeName": "k8s-master", "containers": [{"name": "c", "image": "nginx"}]},
           "status": {"podIP": ip}})
}

fn service(name: &str, port: i32) -> Value {
    json!({"kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
                    "ports": [{"protocol": "TCP", "port": port, "targetPort": 8080}]}})
}

fn slice(name: &str, svc: &str, ip: &str) -> Value {
    json!({"kind": "EndpointSlice", "metadata": {"name": name, "namespace": "default",
           "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
           "ports": [{"port": 8080, "protocol": "TCP"}]})
}

fn policy(name: &str) -> Value {
    json!({"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "default"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}})
}

/// A server holding one object of every kind, and a second pod.
fn populated() -> FakeApiServer {
    let s = FakeApiServer::start().expect("fake apiserver");
    s.apply(namespace("default"));
    s.apply(node("k8s-master"));
    s.apply(pod("web-1", "10.1.1.2"));
    s.apply(pod("web-2", "10.1.1.3"));
    s.apply(service("web", 80));
    s.apply(slice("web-abc", "web", "10.1.1.2"));
    s.apply(policy("deny-all"));
    s
}

fn keys(objects: &[Object]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| format!("{} {}", o.kind(), o.key()))
        .collect();
    k.sort();
    k
}

fn resync_objects(ev: &SourceEvent) -> Option<&Vec<Object>> {
    match ev {
        SourceEvent::Resync { objects, .. } => Some(objects),
        _ => None,
    }
}

#[test]
fn initial_list_is_one_resync_of_every_kind() {
    let server = populated();
    let src = Source::start(&server.url());
    let ev = src.next_data("the first resync");
    let SourceEvent::Resync {
        objects,
        nodes,
        revision,
        errors,
    } = ev
    else {
        panic!("expected Resync first, got {ev:?}");
    };
    assert_eq!(
        keys(&objects),
        [
            "EndpointSlice default/web-abc",
            "Namespace default",
            "NetworkPolicy default/deny-all",
            "Node k8s-master",
            "Pod default/web-1",
            "Pod default/web-2",
            "Service default/web",
        ]
    );
    assert!(nodes.is_empty() && errors.is_empty());
    assert_eq!(revision, server.resource_version() as i64);
    for o in &objects {
        match o {
            Object::Pod(p) if p.metadata.name.as_deref() == Some("web-1") => {
                let st = p.status.as_ref().expect("pod status");
                assert_eq!(st.pod_ip.as_deref(), Some("10.1.1.2"));
                let spec = p.spec.as_ref().expect("pod spec");
                assert_eq!(spec.node_name.as_deref(), Some("k8s-master"));
            }
            Object::Service(s) => {
                let spec = s.spec.as_ref().expect("service spec");
                assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
                assert_eq!(spec.ports.as_ref().expect("ports")[0].port, 80);
            }
            Object::EndpointSlice(e) => {
                assert_eq!(e.endpoints[0].addresses, ["10.1.1.2"]);
                assert_eq!(
                    e.metadata.labels.as_ref().expect("labels")["kubernetes.io/service-name"],
                    "web"
                );
            }
            Object::NetworkPolicy(p) => {
                let sel = &p.spec.as_ref().expect("policy spec").pod_selector;
                assert_eq!(
                    sel.as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .expect("labels")["app"],
                    "web"
                );
            }
            Object::Namespace(n) => {
                assert_eq!(n.metadata.labels.as_ref().expect("labels")["team"], "a");
            }
            Object::Node(n) => {
                let addrs = n.status.as_ref().and_then(|s| s.addresses.as_ref());
                assert_eq!(addrs.expect("addresses")[0].address, "192.168.16.1");
            }
            Object::Pod(_) => {}
        }
    }
    // One list per kind, then watches; no second snapshot without a reason.
    let extra = src.quiet_for(Duration::from_millis(500));
    assert!(extra.is_empty(), "unexpected events: {extra:?}");
    assert_eq!(server.list_count("/api/v1/pods"), 1);
    let reqs = server.requests();
    assert!(
        reqs.iter().any(
            |r| r.starts_with("/apis/networking.k8s.io/v1/networkpolicies?")
                && r.contains("watch=true")
        ),
        "{reqs:?}"
    );
}

#[test]
fn watch_changes_arrive_in_order() {
    let server = populated();
    let src = Source::start(&server.url());
    assert!(resync_objects(&src.next_data("resync")).is_some());
    // With the watches open the changes below travel as live watch events (not as the replay
    // of a watch that starts after them), which is the path under test.
    assert!(server.wait_for(WAIT, |s| s.open_watches() == 6));

    let rv_add = server.apply(service("db", 5432));
    let rv_mod = server.apply(service("db", 5433));
    assert!(server.delete("Service", Some("default"), "db"));
    let rv_del = server.resource_version();
    let rv_pod = server.apply(pod("web-3", "10.1.1.4"));
    assert!(server.delete("Pod", Some("default"), "web-1"));

    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(src.next_data("five changes"));
    }
    let port = |o: &Object| match o {
        Object::Service(s) => s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|p| p[0].port),
        _ => None,
    };
    // Services: added, modified, deleted, in this order and with their versions.
    let svc: Vec<&SourceEvent> = got
        .iter()
        .filter(|e| match e {
            SourceEvent::Put { object, .. } => object.kind() == "Service",
            SourceEvent::Delete { kind, .. } => *kind == "Service",
            _ => false,
        })
        .collect();
    match svc.as_slice() {
        [SourceEvent::Put {
            object: a,
            revision: ra,
        }, SourceEvent::Put {
            object: m,
            revision: rm,
        }, SourceEvent::Delete {
            key, revision: rd, ..
        }] => {
            assert_eq!((port(a), *ra), (Some(5432), rv_add as i64));
            assert_eq!((port(m), *rm), (Some(5433), rv_mod as i64));
            assert_eq!((key.as_str(), *rd), ("default/db", rv_del as i64));
        }
        other => panic!("service events: {other:?}"),
    }
    let pods: Vec<String> = got
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Put { object, revision } if object.kind() == "Pod" => {
                assert_eq!(*revision, rv_pod as i64);
                Some(format!("put {}", object.key()))
            }
            SourceEvent::Delete {
                kind: "Pod", key, ..
            } => Some(format!("delete {key}")),
            _ => None,
        })
        .collect();
    assert_eq!(pods, ["put default/web-3", "delete default/web-1"]);
}

#[test]
fn expired_watch_relists_and_drops_objects_deleted_meanwhile() {
    let server = populated();
    let src = Source::start(&server.url());
    let first = src.next_data("resync");
    assert!(keys(resync_objects(&first).expect("resync")).contains(&"Pod default/web-2".into()));
    assert!(server.wait_for(WAIT, |s| s.open_watches() == 6));
    let lists_before = server.list_count("/api/v1/pods");

    // Gone without a DELETED event: the history that had it was compacted.
    assert!(server.delete_silently("Pod", Some("default"), "web-2"));
    server.expire();

    let evs = src.until("a resync after the relist", |e| resync_objects(e).is_some());
    let objects = resync_objects(evs.last().expect("event")).expect("resync");
    let k = keys(objects);
    assert!(!k.contains(&"Pod default/web-2".into()), "{k:?}");
    assert!(k.contains(&"Pod default/web-1".into()), "{k:?}");
    assert_eq!(k.len(), 6, "{k:?}");
    assert!(
        evs.iter().any(|e| matches!(e, SourceEvent::Disconnected { error, .. } if error.contains("410") || error.contains("too old"))),
        "the 410 is reported: {evs:?}"
    );
    assert!(server.list_count("/api/v1/pods") > lists_before);

    // Watching resumes after the relist.
    assert!(server.wait_for(WAIT, |s| s.open_watches() == 6));
    src.quiet_for(Duration::from_millis(300));
    let rv = server.apply(policy("allow-dns"));
    match src.next_data("a put after the relist") {
        SourceEvent::Put { object, revision } => {
            assert_eq!(object.key(), "default/allow-dns");
            assert_eq!(revision, rv as i64);
        }
        SourceEvent::Resync { objects, .. } => {
            // Another kind's relist finishing late also carries it.
            assert!(keys(&objects).contains(&"NetworkPolicy default/allow-dns".into()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropped_watches_reconnect_and_converge() {
    let server = populated();
    let src = Source::start(&server.url());
    assert!(resync_objects(&src.next_data("resync")).is_some());
    assert!(server.wait_for(WAIT, |s| s.open_watches() == 6));

    let watches_before = watch_requests(&server);
    server.drop_watches();
    // Written while the watches are being cut: a relist or a new watch must deliver them.
    server.apply(service("late", 81));
    assert!(server.delete("Pod", Some("default"), "web-1"));

    let mut have_late = false;
    let mut have_web1 = true;
    src.until("convergence after dropped watches", |e| {
        match e {
            SourceEvent::Resync { objects, .. } => {
                let k = keys(objects);
                have_late = k.contains(&"Service default/late".into());
                have_web1 = k.contains(&"Pod default/web-1".into());
            }
            SourceEvent::Put { object, .. } if object.key() == "default/late" => have_late = true,
            SourceEvent::Delete { key, .. } if key == "default/web-1" => have_web1 = false,
            _ => {}
        }
        have_late && !have_web1
    });
    assert!(server.wait_for(WAIT, |s| s.open_watches() == 6));
    assert!(watch_requests(&server) >= watches_before + 6);
}

fn watch_requests(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count()
}

#[test]
fn unreachable_api_server_reports_then_converges() {
    // A free port, closed again: nothing listens there until the server starts below.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let src = Source::start(&format!("http://127.0.0.1:{port}"));
    let evs = src.until("disconnected", |e| {
        matches!(e, SourceEvent::Disconnected { .. })
    });
    match evs.last() {
        Some(SourceEvent::Disconnected { error, retry_in }) => {
            assert!(!error.is_empty());
            assert!(*retry_in >= Duration::from_millis(200) && *retry_in <= Duration::from_secs(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        evs.len(),
        1,
        "nothing but the error before the server exists"
    );

    let server = FakeApiServer::start_on(port).expect("server on the reserved port");
    server.apply(service("web", 80));
    server.apply(namespace("default"));
    let ev = src.next_data("resync once the server is up");
    assert_eq!(
        keys(resync_objects(&ev).expect("resync")),
        ["Namespace default", "Service default/web"]
    );
}

#[test]
fn stops_promptly() {
    let server = populated();
    let mut src = Source::start(&server.url());
    assert!(resync_objects(&src.next_data("resync")).is_some());
    let t = src.thread.take().expect("thread");
    let t0 = Instant::now();
    src.stop.store(true, Ordering::Relaxed);
    while !t.is_finished() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        t.is_finished() && t0.elapsed() < Duration::from_millis(250),
        "stopped after {:?}",
        t0.elapsed()
    );
    let _ = t.join();
}

#[test]
fn bad_kubeconfig_is_reported_with_its_path() {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let t = kubeapi::spawn(
        KubeSourceConfig {
            kubeconfig: Some("/nonexistent/vecnet/kubeconfig".into()),
            context: None,
        },
        Arc::clone(&stop),
        move |ev| tx.send(ev).is_ok(),
    )
    .expect("spawn");
    match rx.recv_timeout(WAIT) {
        Ok(SourceEvent::Disconnected { error, .. }) => {
            assert!(error.contains("/nonexistent/vecnet/kubeconfig"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
}

/// `kube` mode's node ID (SYSTEM.md 1.2): the `vecnet.io/node-id` annotation of this node's
/// Node object; none when the Node or the annotation is absent; an error that says why when the
/// value is not a positive integer or the API does not answer.
#[test]
fn node_id_comes_from_the_node_annotation() {
    use vecnet_agent::kubeapi::node_id_annotation;
    let server = FakeApiServer::start().expect("fake apiserver");
    let dir = TempDir::new();
    let kc = dir.0.join("kubeconfig");
    server.kubeconfig(&kc).expect("kubeconfig");
    let cfg = KubeSourceConfig {
        kubeconfig: Some(kc),
        context: None,
    };
    let t = Duration::from_secs(5);
    server.apply(json!({"kind": "Node", "metadata": {"name": "n3",
        "annotations": {"vecnet.io/node-id": "3"}}}));
    server.apply(json!({"kind": "Node", "metadata": {"name": "plain"}}));
    server.apply(json!({"kind": "Node", "metadata": {"name": "bad",
        "annotations": {"vecnet.io/node-id": "zero"}}}));
    assert_eq!(node_id_annotation(&cfg, "n3", t).expect("n3"), Some(3));
    assert_eq!(node_id_annotation(&cfg, "plain", t).expect("plain"), None);
    assert_eq!(node_id_annotation(&cfg, "absent", t).expect("absent"), None);
    let e = node_id_annotation(&cfg, "bad", t)
        .expect_err("not a number")
        .to_string();
    assert!(
        e.contains("bad") && e.contains("vecnet.io/node-id") && e.contains("zero"),
        "{e}"
    );
    // Nobody listens any more: an error within the time allowed, not a hang.
    let kc2 = dir.0.join("kubeconfig");
    drop(server);
    let started = std::time::Instant::now();
    let e = node_id_annotation(
        &KubeSourceConfig {
            kubeconfig: Some(kc2),
            context: None,
        },
        "n3",
        Duration::from_secs(2),
    )
    .expect_err("no API server");
    assert!(started.elapsed() < Duration::from_secs(15), "{e}");
    assert!(e.to_string().contains("n3"), "{e}");
}
