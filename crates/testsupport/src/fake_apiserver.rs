//! A fake Kubernetes API server for the kube source's tests: plain HTTP/1.1 on 127.0.0.1, the
//! cluster-wide list and watch endpoints of the six kinds vecnet reads, and controls a real API
//! server does not have (forget history, break watches) so tests can force the paths a client
//! must survive: `410 Gone` → relist, dropped connections → re-watch.
//!
//! Semantics kept from the real server, because the client depends on them:
//! * one global, increasing `resourceVersion`; every write stamps the object with it;
//! * a list answers every object with the current version (no paging: `limit` is ignored and no
//!   `continue` token is returned);
//! * a watch from version N first replays the recorded events after N, then streams new ones
//!   (chunked, one JSON event per line), so nothing written between list and watch is lost;
//! * a watch from a version older than the last [`FakeApiServer::expire`] is answered `200` with
//!   a single `ERROR` event carrying a `410 Expired` Status, as the API server does once etcd has
//!   compacted that version.
//!
//! Each connection is served by its own thread and closed after one request
//! (`Connection: close`), which keeps the server small; the client simply reconnects.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The six kinds vecnet reads: `(kind, list kind, cluster-wide path, apiVersion, namespaced)`.
const KINDS: [(&str, &str, &str, &str, bool); 6] = [
    (
        "Namespace",
        "NamespaceList",
        "/api/v1/namespaces",
        "v1",
        false,
    ),
    ("Pod", "PodList", "/api/v1/pods", "v1", true),
    ("Service", "ServiceList", "/api/v1/services", "v1", true),
    ("Node", "NodeList", "/api/v1/nodes", "v1", false),
    (
        "EndpointSlice",
        "EndpointSliceList",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        true,
    ),
    (
        "NetworkPolicy",
        "NetworkPolicyList",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        true,
    ),
];

fn kind_info(kind: &str) -> Option<(&'static str, &'static str, &'static str, bool)> {
    KINDS
        .iter()
        .find(|k| k.0 == kind)
        .map(|k| (k.1, k.2, k.3, k.4))
}

/// One recorded watch event.
#[derive(Clone)]
struct Recorded {
    rv: u64,
    path: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// path → `namespace/name` (or `name`) → object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    history: Vec<Recorded>,
    /// Watches from a version below this are answered `410 Expired`.
    min_rv: u64,
    /// Bumped by [`FakeApiServer::expire`]: open watches end with `410`.
    expire_gen: u64,
    /// Bumped by [`FakeApiServer::drop_watches`]: open watches are cut.
    drop_gen: u64,
    /// Request targets (`path?query`) in arrival order.
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    open_watches: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test thread that panicked while holding the lock must not hide the real failure
        // behind a poison error in every other thread.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server; stops (and closes its watches) when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on(0)
    }

    /// Listens on a given port of 127.0.0.1 (0 = ephemeral): a test can point a client at a
    /// port first and start the server later.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            open_watches: AtomicUsize::new(0),
        });
        let sh = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || accept_loop(&listener, &sh))?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig whose current context points at this server.
    pub fn kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig_text(&self.url()))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Creates or replaces an object (by its `kind`, `metadata.namespace`, `metadata.name`);
    /// open watches see `ADDED` or `MODIFIED`. Returns the object's new resourceVersion.
    ///
    /// # Panics
    /// On an object without a known kind or a name: a broken test fixture.
    pub fn apply(&self, mut object: Value) -> u64 {
        let (kind, path, key) = locate(&object);
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        stamp(&mut object, kind, rv);
        let old = st
            .objects
            .entry(path)
            .or_default()
            .insert(key, object.clone());
        st.history.push(Recorded {
            rv,
            path,
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object,
        });
        drop(st);
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes an object; open watches see `DELETED`. Returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.remove(kind, namespace, name, true)
    }

    /// Deletes an object without recording the event, as if the watch history had been
    /// compacted past it: only a relist can tell a client it is gone.
    pub fn delete_silently(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.remove(kind, namespace, name, false)
    }

    fn remove(&self, kind: &str, namespace: Option<&str>, name: &str, record: bool) -> bool {
        let Some((_, path, _, namespaced)) = kind_info(kind) else {
            return false;
        };
        let key = object_key(namespaced, namespace, name);
        let mut st = self.shared.lock();
        let Some(mut object) = st.objects.entry(path).or_default().remove(&key) else {
            return false;
        };
        st.rv += 1;
        if record {
            let rv = st.rv;
            if let Some(m) = object.get_mut("metadata") {
                m["resourceVersion"] = json!(rv.to_string());
            }
            st.history.push(Recorded {
                rv,
                path,
                kind: "DELETED",
                object,
            });
        }
        drop(st);
        self.shared.changed.notify_all();
        true
    }

    /// Forgets the history: open watches end with `410 Expired` and watches from any version
    /// older than the current one are refused the same way, so clients must relist.
    pub fn expire(&self) {
        let mut st = self.shared.lock();
        st.min_rv = st.rv;
        st.history.clear();
        st.expire_gen += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Cuts every open watch connection without a final chunk (a network break).
    pub fn drop_watches(&self) {
        self.shared.lock().drop_gen += 1;
        self.shared.changed.notify_all();
    }

    /// Request targets (`path?query`) seen so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Number of list (non-watch) requests seen for a path such as `/api/v1/pods`.
    pub fn list_count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                let (p, q) = r.split_once('?').unwrap_or((r, ""));
                p == path && !is_watch(&parse_query(q))
            })
            .count()
    }

    /// Number of watch requests currently streaming.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::Relaxed)
    }

    /// Waits until `f` holds, at most `timeout`; returns whether it did.
    pub fn wait_for(&self, timeout: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A kubeconfig for `server` with no credentials (the fake server checks none).
pub fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

fn object_key(namespaced: bool, namespace: Option<&str>, name: &str) -> String {
    if namespaced {
        format!("{}/{name}", namespace.unwrap_or("default"))
    } else {
        name.to_string()
    }
}

/// Kind, path and store key of a fixture object.
fn locate(object: &Value) -> (&'static str, &'static str, String) {
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(info) = KINDS.iter().find(|k| k.0 == kind) else {
        panic!("fake apiserver: unsupported kind {kind:?}");
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("fake apiserver: {kind} without metadata.name"));
    let ns = object["metadata"]["namespace"].as_str();
    (info.0, info.2, object_key(info.4, ns, name))
}

/// What the API server fills in on a write.
fn stamp(object: &mut Value, kind: &'static str, rv: u64) {
    if let Some((_, _, api_version, namespaced)) = kind_info(kind) {
        object["apiVersion"] = json!(api_version);
        let m = &mut object["metadata"];
        m["resourceVersion"] = json!(rv.to_string());
        if m.get("uid").is_none() {
            m["uid"] = json!(format!("uid-{rv}"));
        }
        if namespaced && m.get("namespace").is_none() {
            m["namespace"] = json!("default");
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut conns = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let sh = Arc::clone(shared);
                if let Ok(t) = std::thread::Builder::new()
                    .name("fake-apiserver-conn".into())
                    .spawn(move || serve(s, &sh))
                {
                    conns.push(t);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        conns.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    // Handler threads see `stop` within their wait slice; joining them makes a dropped server
    // really gone (its port refuses and its watches are closed) when `drop` returns.
    for t in conns {
        let _ = t.join();
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn is_watch(q: &BTreeMap<String, String>) -> bool {
    matches!(q.get("watch").map(String::as_str), Some("true" | "1"))
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    // Headers are read and ignored: the server checks no credentials and the client sends no
    // body on GET.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    shared.lock().requests.push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = parse_query(query);
    let mut stream = stream;
    let Some(info) = KINDS.iter().find(|k| k.2 == path) else {
        // GET of one cluster-scoped object by name (`/api/v1/nodes/<name>`).
        let one = path
            .rsplit_once('/')
            .and_then(|(dir, name)| KINDS.iter().find(|k| k.2 == dir).map(|k| (k.2, name)));
        if let Some((dir, name)) = one {
            let found = shared
                .lock()
                .objects
                .get(dir)
                .and_then(|m| m.get(name))
                .cloned();
            let _ = match found {
                Some(o) => respond(&mut stream, "200 OK", &o.to_string()),
                None => respond(
                    &mut stream,
                    "404 Not Found",
                    &status_json(404, "NotFound", &format!("{name} not found")),
                ),
            };
            return;
        }
        let body = status_json(404, "NotFound", &format!("no route {path}"));
        let _ = respond(&mut stream, "404 Not Found", &body);
        return;
    };
    if is_watch(&query) {
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok());
        watch(stream, shared, info.2, from);
    } else {
        let st = shared.lock();
        let items: Vec<Value> = st
            .objects
            .get(info.2)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let body = json!({
            "kind": info.1,
            "apiVersion": info.3,
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        })
        .to_string();
        drop(st);
        let _ = respond(&mut stream, "200 OK", &body);
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": message,
    })
    .to_string()
}

fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn chunk(s: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    write!(s, "{:x}\r\n{data}\r\n", data.len())?;
    s.flush()
}

fn expired_event() -> String {
    format!(
        "{{\"type\":\"ERROR\",\"object\":{}}}",
        status_json(410, "Expired", "too old resource version")
    )
}

/// Counts a streaming watch for as long as it lives.
struct OpenWatch<'a>(&'a AtomicUsize);

impl<'a> OpenWatch<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Streams the events of `path` after version `from` (`None` or 0: from now on).
fn watch(mut s: TcpStream, shared: &Shared, path: &'static str, from: Option<u64>) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _open = OpenWatch::new(&shared.open_watches);
    let mut st = shared.lock();
    let mut sent_rv = match from {
        Some(v) if v > 0 => v,
        _ => st.rv,
    };
    if sent_rv < st.min_rv {
        drop(st);
        let _ = chunk(&mut s, &expired_event());
        let _ = s.write_all(b"0\r\n\r\n");
        return;
    }
    let (expire_gen, drop_gen) = (st.expire_gen, st.drop_gen);
    loop {
        if shared.stop.load(Ordering::Relaxed) || st.drop_gen != drop_gen {
            drop(st);
            // Cut mid-stream, without the last chunk: the client sees a broken body.
            let _ = s.shutdown(Shutdown::Both);
            return;
        }
        if st.expire_gen != expire_gen {
            drop(st);
            let _ = chunk(&mut s, &expired_event());
            let _ = s.write_all(b"0\r\n\r\n");
            return;
        }
        let pending: Vec<Recorded> = st
            .history
            .iter()
            .filter(|e| e.rv > sent_rv && e.path == path)
            .cloned()
            .collect();
        if let Some(last) = st.history.last() {
            sent_rv = sent_rv.max(last.rv);
        }
        if pending.is_empty() {
            // Bounded wait so `stop` and a vanished client are noticed.
            st = match shared.changed.wait_timeout(st, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            continue;
        }
        drop(st);
        for e in pending {
            let line = json!({"type": e.kind, "object": e.object}).to_string();
            if chunk(&mut s, &line).is_err() {
                return;
            }
        }
        st = shared.lock();
    }
}
