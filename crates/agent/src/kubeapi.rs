//! The Kubernetes API state source (SYSTEM.md 1.2 `kube`): kube-rs watchers on the six kinds
//! vecnet renders, delivered with the etcd source's contract ([`SourceEvent`] to a sink closure
//! from a thread of its own), so `vecnetd run` and `vecnetd reflect` consume either alike.
//!
//! * Nothing is delivered until every kind has been listed once; then one `Resync` carries all
//!   of them (a render never sees Services without their EndpointSlices).
//! * Then the watch events of every kind, as `Put`/`Delete`, in the order they arrive.
//! * A kind whose watcher relists (its watch was answered `410 Gone`, or it failed and was
//!   restarted) is replaced as a whole when the relist completes, and once no kind that failed
//!   is still waiting for its relist, a full `Resync` of all kinds follows: an object deleted
//!   while the watch was broken disappears. Changes of kinds that are watching go on as
//!   `Put`/`Delete` meanwhile.
//! * Errors are reported as `Disconnected` with the delay before that kind's next attempt
//!   (200 ms doubling to 3 s, as the etcd source); the consumer keeps its last state meanwhile.
//!
//! A failed watcher is restarted from scratch (list, then watch) rather than resumed: a relist
//! after an outage is cheap at node scale and leaves no doubt about what was missed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::model::{Key, Object};
use crate::source::SourceEvent;

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct KubeSourceConfig {
    /// A kubeconfig file; `None` = in-cluster config when `KUBERNETES_SERVICE_HOST` is set,
    /// else kube's inferred default (`$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {msg}")]
    Kubeconfig { path: PathBuf, msg: String },
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    #[error("no Kubernetes API configuration found (no kubeconfig, not in a cluster): {0}")]
    Infer(String),
    #[error("creating the Kubernetes API client: {0}")]
    Client(String),
    #[error("reading Node {node}: {msg}")]
    Node { node: String, msg: String },
}

/// The annotation that fixes a node's ID in `kube` mode (SYSTEM.md 1.2).
pub const NODE_ID_ANNOTATION: &str = "vecnet.io/node-id";

/// The node ID that the `vecnet.io/node-id` annotation of Node `node_name` gives: `None` when
/// the Node or the annotation does not exist, an error when the API cannot be read within
/// `timeout` or the value is not a positive integer.
pub fn node_id_annotation(
    cfg: &KubeSourceConfig,
    node_name: &str,
    timeout: Duration,
) -> Result<Option<u32>, KubeError> {
    let err = |msg: String| KubeError::Node {
        node: node_name.to_string(),
        msg,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("runtime: {e}")))?;
    let node = rt.block_on(async {
        let c = client(cfg).await?;
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c);
        match tokio::time::timeout(timeout, api.get_opt(node_name)).await {
            Err(_) => Err(err(format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => Err(err(e.to_string())),
            Ok(Ok(n)) => Ok(n),
        }
    })?;
    let Some(value) = node
        .and_then(|n| n.metadata.annotations)
        .and_then(|mut a| a.remove(NODE_ID_ANNOTATION))
    else {
        return Ok(None);
    };
    match value.trim().parse::<u32>() {
        Ok(id) if id > 0 => Ok(Some(id)),
        _ => Err(err(format!(
            "annotation {NODE_ID_ANNOTATION}: {value:?} is not a positive integer"
        ))),
    }
}

/// The six kinds, in the order snapshots list them.
const KINDS: [&str; 6] = [
    "Namespace",
    "Node",
    "Pod",
    "Service",
    "EndpointSlice",
    "NetworkPolicy",
];

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// How often the event loop looks at `stop` when nothing arrives.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Builds a client from the configuration (see [`KubeSourceConfig::kubeconfig`]).
pub async fn client(cfg: &KubeSourceConfig) -> Result<kube::Client, KubeError> {
    let options = KubeConfigOptions {
        context: cfg.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = if let Some(path) = &cfg.kubeconfig {
        let kerr = |e: &dyn std::fmt::Display| KubeError::Kubeconfig {
            path: path.clone(),
            msg: e.to_string(),
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| kerr(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| kerr(&e))?
    } else if cfg.context.is_some() {
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| KubeError::Infer(e.to_string()))?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| KubeError::Infer(e.to_string()))?
    };
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// Starts the source thread. `sink` receives the events in order and returns `false` when
/// nobody listens any more, which ends the thread; so does `stop` (within ~100 ms).
pub fn spawn(
    cfg: KubeSourceConfig,
    stop: Arc<AtomicBool>,
    mut sink: impl FnMut(SourceEvent) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kube-source".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    sink(SourceEvent::Disconnected {
                        error: format!("cannot start the Kubernetes client runtime: {e}"),
                        retry_in: Duration::MAX,
                    });
                    return;
                }
            };
            rt.block_on(run(cfg, stop, &mut sink));
        })
}

/// Sleeps `d`, waking early when `stop` is set; returns whether it was.
async fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::sleep(STOP_POLL.min(end - tokio::time::Instant::now())).await;
    }
    stop.load(Ordering::Relaxed)
}

async fn run(
    cfg: KubeSourceConfig,
    stop: Arc<AtomicBool>,
    sink: &mut (impl FnMut(SourceEvent) -> bool + Send),
) {
    let mut backoff = BACKOFF_MIN;
    let client = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match client(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                if !sink(SourceEvent::Disconnected {
                    error: e.to_string(),
                    retry_in: backoff,
                }) || pause(backoff, &stop).await
                {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };

    // Bounded: a slow consumer slows the watchers down instead of growing memory.
    let (tx, mut rx) = mpsc::channel::<(usize, Msg)>(1024);
    let tasks = vec![
        tokio::spawn(watch_kind::<Namespace>(
            client.clone(),
            0,
            Object::Namespace,
            tx.clone(),
        )),
        tokio::spawn(watch_kind::<Node>(
            client.clone(),
            1,
            Object::Node,
            tx.clone(),
        )),
        tokio::spawn(watch_kind::<Pod>(
            client.clone(),
            2,
            Object::Pod,
            tx.clone(),
        )),
        tokio::spawn(watch_kind::<Service>(
            client.clone(),
            3,
            Object::Service,
            tx.clone(),
        )),
        tokio::spawn(watch_kind::<EndpointSlice>(
            client.clone(),
            4,
            Object::EndpointSlice,
            tx.clone(),
        )),
        tokio::spawn(watch_kind::<NetworkPolicy>(
            client,
            5,
            Object::NetworkPolicy,
            tx,
        )),
    ];
    let mut state = Snapshot::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (idx, msg) = match tokio::time::timeout(STOP_POLL, rx.recv()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(m)) => m,
        };
        let out = state.on(idx, msg);
        if let Some(ev) = out {
            if !sink(ev) {
                break;
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// What a kind's watcher task reports.
enum Msg {
    /// A (re)list starts.
    Init,
    InitApply(Object),
    /// The (re)list is complete.
    InitDone,
    Apply(Object),
    Delete(Object),
    Failed {
        error: String,
        retry_in: Duration,
    },
}

/// One kind's watcher, restarted (hence relisting) after every error.
async fn watch_kind<K>(
    client: kube::Client,
    idx: usize,
    wrap: fn(K) -> Object,
    tx: mpsc::Sender<(usize, Msg)>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let api: Api<K> = Api::all(client.clone());
        // Plain list + watch (the default): streaming lists need a 1.32+ API server feature.
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        let error = loop {
            let msg = match stream.next().await {
                // The watcher restarts its own watches when they end; it never ends itself.
                None => break "watch stream ended".to_string(),
                Some(Err(e)) => break e.to_string(),
                Some(Ok(ev)) => match ev {
                    watcher::Event::Init => Msg::Init,
                    watcher::Event::InitApply(o) => Msg::InitApply(strip(wrap(o))),
                    watcher::Event::InitDone => {
                        backoff = BACKOFF_MIN;
                        Msg::InitDone
                    }
                    watcher::Event::Apply(o) => Msg::Apply(strip(wrap(o))),
                    watcher::Event::Delete(o) => Msg::Delete(strip(wrap(o))),
                },
            };
            if tx.send((idx, msg)).await.is_err() {
                return;
            }
        };
        let failed = Msg::Failed {
            error: format!("{}s: {error}", KINDS[idx]),
            retry_in: backoff,
        };
        if tx.send((idx, failed)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Drops `metadata.managedFields`: nothing reads them and they are often half an object.
fn strip(mut o: Object) -> Object {
    let m = match &mut o {
        Object::Namespace(x) => &mut x.metadata,
        Object::Pod(x) => &mut x.metadata,
        Object::Service(x) => &mut x.metadata,
        Object::EndpointSlice(x) => &mut x.metadata,
        Object::NetworkPolicy(x) => &mut x.metadata,
        Object::Node(x) => &mut x.metadata,
    };
    m.managed_fields = None;
    o
}

/// `metadata.resourceVersion` as a number (the API server's are etcd revisions); 0 otherwise.
pub fn revision(o: &Object) -> i64 {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct KindState {
    objects: BTreeMap<Key, Object>,
    /// Objects of a relist in progress; they replace `objects` when it completes.
    relist: Option<BTreeMap<Key, Object>>,
    listed: bool,
    /// Failed and not relisted since: a snapshot now would still hold what the failure hid.
    stale: bool,
}

/// The source's own store of every kind, from which snapshots are cut.
#[derive(Default)]
struct Snapshot {
    kinds: [KindState; 6],
    /// Whether the first `Resync` went out (every kind listed once).
    started: bool,
}

impl Snapshot {
    /// Applies one watcher message; returns what to tell the consumer, if anything.
    fn on(&mut self, idx: usize, msg: Msg) -> Option<SourceEvent> {
        let k = &mut self.kinds[idx];
        match msg {
            Msg::Init => {
                k.relist = Some(BTreeMap::new());
                None
            }
            Msg::InitApply(o) => {
                k.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(o.key(), o);
                None
            }
            Msg::InitDone => {
                k.objects = k.relist.take().unwrap_or_default();
                k.listed = true;
                k.stale = false;
                // After an outage every kind relists; one snapshot when the last one is done,
                // not one per kind.
                if self.kinds.iter().all(|k| k.listed && !k.stale) {
                    self.started = true;
                    Some(self.resync())
                } else {
                    None
                }
            }
            Msg::Apply(o) => {
                k.objects.insert(o.key(), o.clone());
                self.started.then(|| SourceEvent::Put {
                    revision: revision(&o),
                    object: o,
                })
            }
            Msg::Delete(o) => {
                let key = o.key();
                let existed = k.objects.remove(&key).is_some();
                (self.started && existed).then(|| SourceEvent::Delete {
                    kind: o.kind(),
                    key,
                    revision: revision(&o),
                })
            }
            Msg::Failed { error, retry_in } => {
                // The restarted watcher relists; a half-received list is worthless.
                k.relist = None;
                k.stale = true;
                Some(SourceEvent::Disconnected { error, retry_in })
            }
        }
    }

    fn resync(&self) -> SourceEvent {
        let objects: Vec<Object> = self
            .kinds
            .iter()
            .flat_map(|k| k.objects.values().cloned())
            .collect();
        let revision = objects.iter().map(revision).max().unwrap_or(0);
        SourceEvent::Resync {
            objects,
            nodes: Vec::new(),
            revision,
            errors: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, rv: &str) -> Object {
        Object::Service(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn nothing_before_every_kind_is_listed_then_relist_replaces() {
        let mut s = Snapshot::default();
        for i in 0..6 {
            assert!(s.on(i, Msg::Init).is_none());
        }
        assert!(s.on(3, Msg::InitApply(svc("a", "5"))).is_none());
        assert!(s.on(3, Msg::InitApply(svc("b", "7"))).is_none());
        for i in 0..5 {
            assert!(s.on(i, Msg::InitDone).is_none(), "kind {i}");
        }
        // A change to a listed kind before the snapshot is folded into it.
        assert!(s.on(3, Msg::Apply(svc("c", "9"))).is_none());
        match s.on(5, Msg::InitDone) {
            Some(SourceEvent::Resync {
                objects, revision, ..
            }) => {
                let keys: Vec<_> = objects.iter().map(Object::key).collect();
                assert_eq!(keys, ["default/a", "default/b", "default/c"]);
                assert_eq!(revision, 9);
            }
            other => panic!("{other:?}"),
        }
        // Two kinds fail; one snapshot once both have relisted, without Service `b`.
        for i in [2, 3] {
            let failed = Msg::Failed {
                error: "410".into(),
                retry_in: BACKOFF_MIN,
            };
            assert!(matches!(
                s.on(i, failed),
                Some(SourceEvent::Disconnected { .. })
            ));
        }
        assert!(s.on(2, Msg::Init).is_none());
        assert!(s.on(2, Msg::InitDone).is_none(), "Services still stale");
        assert!(s.on(3, Msg::Init).is_none());
        assert!(s.on(3, Msg::InitApply(svc("a", "11"))).is_none());
        match s.on(3, Msg::InitDone) {
            Some(SourceEvent::Resync { objects, .. }) => {
                let keys: Vec<_> = objects.iter().map(Object::key).collect();
                assert_eq!(keys, ["default/a"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on(3, Msg::Delete(svc("a", "12"))),
            Some(SourceEvent::Delete { kind: "Service", ref key, revision: 12 }) if key == "default/a"
        ));
        // Deleting what is not known says nothing.
        assert!(s.on(3, Msg::Delete(svc("zz", "13"))).is_none());
    }

    #[test]
    fn revision_is_numeric_or_zero() {
        assert_eq!(revision(&svc("a", "42")), 42);
        assert_eq!(revision(&svc("a", "not-a-number")), 0);
    }
}
