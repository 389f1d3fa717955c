//! `vecnetd reflect`: the reflector (Contiv's KSR role, SYSTEM.md 1.3; docs/etcd.md,
//! docs/kubernetes.md). It keeps `<prefix>k8s/` in etcd equal to the objects of its input: a
//! manifests directory, or the Kubernetes API (watchers of `vecnet_agent::kubeapi`). A full sync
//! with mark-and-sweep at start and after every resync of the input (keys of objects that no
//! longer exist are deleted), then the changes as they come. A manifest file that fails to parse
//! keeps its previous objects (a typo never deletes a Service cluster-wide); nothing is written
//! from the Kubernetes API before its first complete snapshot (a half-listed cluster would sweep
//! live objects). etcd down: it retries with back-off and does a full sync when etcd answers
//! again; the Kubernetes API down: etcd keeps the last state until the watchers relist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use vecnet_agent::etcd::reflector::{desired, Reflector};
use vecnet_agent::etcd::{self, EtcdAuth, EtcdConnection, EtcdTls, Layout};
use vecnet_agent::kubeapi::{self, KubeSourceConfig};
use vecnet_agent::model::{parse_manifests, Key, Object};
use vecnet_agent::source::SourceEvent;

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("input")
        .required(true)
        .args(["manifests", "kubeconfig", "in_cluster"])
))]
pub struct Args {
    /// Directory of `*.yaml`, `*.yml`, `*.json` manifests (multi-document YAML, `kind: List`).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Watch the Kubernetes API described by this kubeconfig file.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API with the in-cluster service account (or, outside a cluster,
    /// kube's default: `$KUBECONFIG`, `~/.kube/config`).
    #[arg(long)]
    pub in_cluster: bool,
    /// kubeconfig context to use instead of the current one.
    #[arg(long, conflicts_with = "manifests")]
    pub context: Option<String>,
    /// etcd endpoints, `host:port`, `http://host:port` or `https://host:port`, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// CA (PEM) that signed etcd's certificate; turns on TLS (etcdctl's --cacert).
    #[arg(long)]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth (etcdctl's --cert).
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key: PKCS#8 or RSA PEM (etcdctl's --key).
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// DNS name to verify in etcd's certificate; needed when endpoints are IP addresses.
    #[arg(long)]
    pub etcd_server_name: Option<String>,
    /// etcd user name (etcdctl's --user, without the password).
    #[arg(long, requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (a trailing line break is ignored).
    #[arg(long, requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// Key prefix.
    #[arg(long, default_value = "/vecnet/")]
    pub prefix: String,
    /// Sync once and exit (non-zero if etcd could not be written).
    #[arg(long)]
    pub once: bool,
}

impl Args {
    /// The etcd connection the flags describe; TLS when any TLS flag is given or an endpoint is
    /// `https://`.
    fn connection(&self) -> Result<EtcdConnection> {
        let tls_flags = self.etcd_cacert.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
            || self.etcd_server_name.is_some();
        let tls = tls_flags.then(|| EtcdTls {
            ca_file: self.etcd_cacert.clone(),
            cert_file: self.etcd_cert.clone(),
            key_file: self.etcd_key.clone(),
            server_name: self.etcd_server_name.clone(),
        });
        let auth = match (&self.etcd_user, &self.etcd_password_file) {
            (Some(user), Some(file)) => Some(
                EtcdAuth::from_password_file(user, file)
                    .map_err(|e| anyhow::anyhow!("--etcd-password-file: {e}"))?,
            ),
            _ => None,
        };
        let conn = EtcdConnection {
            tls,
            auth,
            ..EtcdConnection::new(&self.etcd)
        };
        conn.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(conn)
    }
}

/// The objects of a manifests directory, re-read when a file changes.
pub(crate) struct ManifestDir {
    dir: PathBuf,
    stamp: Vec<(PathBuf, SystemTime, u64)>,
    objects: BTreeMap<PathBuf, Vec<Object>>,
    /// Files that failed to parse at the last rescan, with the reason.
    errors: Vec<(PathBuf, String)>,
}

impl ManifestDir {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            stamp: Vec::new(),
            objects: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Re-reads the directory if a file was added, changed or removed; returns whether it did.
    pub(crate) fn rescan(&mut self) -> bool {
        let mut stamp = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
                if !["yaml", "yml", "json"].contains(&ext) {
                    continue;
                }
                if let Ok(m) = e.metadata() {
                    stamp.push((p, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                }
            }
        }
        stamp.sort();
        if stamp == self.stamp {
            return false;
        }
        let mut objects = BTreeMap::new();
        let mut errors = Vec::new();
        for (p, _, _) in &stamp {
            match std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_manifests(&t).map_err(|e| e.to_string()))
            {
                Ok(objs) => {
                    objects.insert(p.clone(), objs);
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), "manifest not loaded, keeping its previous objects: {e}");
                    if let Some(prev) = self.objects.get(p) {
                        objects.insert(p.clone(), prev.clone());
                    }
                    errors.push((p.clone(), e));
                }
            }
        }
        self.stamp = stamp;
        self.objects = objects;
        self.errors = errors;
        true
    }

    /// Makes the next [`ManifestDir::rescan`] read every file again (`vecnetctl resync`).
    pub(crate) fn invalidate(&mut self) {
        self.stamp.clear();
        self.stamp
            .push((PathBuf::new(), SystemTime::UNIX_EPOCH, u64::MAX));
    }

    /// Files that failed to parse at the last rescan (their previous objects stay in force).
    pub(crate) fn errors(&self) -> &[(PathBuf, String)] {
        &self.errors
    }

    pub(crate) fn all(&self) -> Vec<Object> {
        self.objects.values().flatten().cloned().collect()
    }
}

/// The Kubernetes API as seen through the kube source thread.
struct KubeInput {
    rx: mpsc::Receiver<SourceEvent>,
    objects: BTreeMap<(&'static str, Key), Object>,
    /// Whether the first complete snapshot arrived (nothing is written before).
    snapshot: bool,
    /// Whether the last event said the API was unreachable (logged once per outage).
    down: bool,
}

/// What the reflector mirrors.
enum Input {
    Dir(ManifestDir),
    Kube(KubeInput),
}

/// What the input asks of the next sync.
#[derive(Default)]
struct Changes {
    changed: bool,
    /// The input was resynced: sweep etcd against it.
    full: bool,
}

impl Input {
    /// Picks up what changed, waiting up to `wait` for the Kubernetes API to say something.
    fn poll(&mut self, wait: Duration) -> Result<Changes> {
        let k = match self {
            Input::Dir(dir) => {
                std::thread::sleep(wait);
                return Ok(Changes {
                    changed: dir.rescan(),
                    full: false,
                });
            }
            Input::Kube(k) => k,
        };
        let mut out = Changes::default();
        let mut next = match k.rx.recv_timeout(wait) {
            Ok(ev) => Some(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the Kubernetes API source stopped")
            }
        };
        while let Some(ev) = next {
            k.on(ev, &mut out);
            next = k.rx.try_recv().ok();
        }
        Ok(out)
    }

    /// Whether the input is complete enough to be written.
    fn ready(&self) -> bool {
        match self {
            Input::Dir(_) => true,
            Input::Kube(k) => k.snapshot,
        }
    }

    fn all(&self) -> Vec<Object> {
        match self {
            Input::Dir(d) => d.all(),
            Input::Kube(k) => k.objects.values().cloned().collect(),
        }
    }
}

impl KubeInput {
    fn on(&mut self, ev: SourceEvent, out: &mut Changes) {
        match ev {
            SourceEvent::Resync {
                objects, revision, ..
            } => {
                self.objects = objects
                    .into_iter()
                    .map(|o| ((o.kind(), o.key()), o))
                    .collect();
                if self.down || !self.snapshot {
                    tracing::info!(
                        objects = self.objects.len(),
                        revision,
                        "Kubernetes API listed: full sync"
                    );
                }
                self.snapshot = true;
                self.down = false;
                out.changed = true;
                out.full = true;
            }
            SourceEvent::Put { object, .. } => {
                self.objects.insert((object.kind(), object.key()), object);
                out.changed = true;
            }
            SourceEvent::Delete { kind, key, .. } => {
                out.changed |= self.objects.remove(&(kind, key)).is_some();
            }
            SourceEvent::Disconnected { error, retry_in } => {
                if self.down {
                    tracing::debug!("Kubernetes API: {error} (next attempt in {retry_in:?})");
                } else {
                    tracing::warn!(
                        "Kubernetes API: {error}; etcd keeps the last state, retrying (next in {retry_in:?})"
                    );
                    self.down = true;
                }
            }
            SourceEvent::Invalid(e) => tracing::warn!("Kubernetes API: {e}"),
            SourceEvent::NodePut(_) | SourceEvent::NodeDelete(_) => {}
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    crate::init_logging();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    if !args.prefix.starts_with('/') {
        anyhow::bail!("--prefix {:?} must start with '/'", args.prefix);
    }
    let layout = Layout::new(&args.prefix);
    let rt = etcd::runtime().context("etcd client runtime")?;
    let conn = args.connection()?;
    let mut refl = rt
        .block_on(Reflector::connect(&conn, layout.clone()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut input = match &args.manifests {
        Some(dir) => {
            tracing::info!(manifests = %dir.display(), etcd = ?args.etcd, prefix = %layout.prefix(), "reflector started");
            Input::Dir(ManifestDir::new(dir))
        }
        None => {
            if let Some(p) = &args.kubeconfig {
                // A mistyped path is an operator error, not an outage to wait out.
                std::fs::metadata(p).with_context(|| format!("--kubeconfig {}", p.display()))?;
            }
            let cfg = KubeSourceConfig {
                kubeconfig: args.kubeconfig.clone(),
                context: args.context.clone(),
            };
            let (tx, rx) = mpsc::channel();
            // Not joined: it sees `stop` within 250 ms, and the process exits anyway.
            kubeapi::spawn(cfg, Arc::clone(&stop), move |ev| tx.send(ev).is_ok())
                .context("starting the Kubernetes API source thread")?;
            tracing::info!(kubeconfig = ?args.kubeconfig, context = ?args.context, etcd = ?args.etcd, prefix = %layout.prefix(), "reflector started on the Kubernetes API");
            Input::Kube(KubeInput {
                rx,
                objects: BTreeMap::new(),
                snapshot: false,
                down: false,
            })
        }
    };

    let mut pending = true;
    let mut failing = false;
    let mut backoff = Duration::from_millis(200);
    let mut next_try = Instant::now();
    let mut next_check = Instant::now() + Duration::from_secs(3);
    let mut wait = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let ch = match input.poll(wait) {
            // The source thread ends on `stop` too: that is no failure.
            Err(_) if stop.load(Ordering::Relaxed) => break,
            r => r?,
        };
        wait = Duration::from_millis(200);
        if ch.full {
            refl.invalidate();
        }
        pending |= ch.changed;
        if !input.ready() {
            continue;
        }
        let now = Instant::now();
        if !pending && now >= next_check {
            next_check = now + Duration::from_secs(3);
            match rt.block_on(refl.check()) {
                Ok(true) => {
                    tracing::info!("etcd content differs from the last sync: full sync");
                    pending = true;
                }
                Ok(false) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!("etcd unreachable ({e}): retrying; a full sync follows");
                        failing = true;
                    }
                    pending = true;
                }
            }
        }
        if pending && now >= next_try {
            let objects = input.all();
            let want = desired(&layout, &objects);
            match rt.block_on(refl.sync(&want)) {
                Ok(st) => {
                    if failing {
                        tracing::info!("etcd reachable again");
                        failing = false;
                    }
                    if st.put + st.deleted > 0 || args.once {
                        tracing::info!(
                            objects = want.len(),
                            put = st.put,
                            deleted = st.deleted,
                            unchanged = st.unchanged,
                            "synced to etcd"
                        );
                    }
                    pending = false;
                    backoff = Duration::from_millis(200);
                    next_check = Instant::now() + Duration::from_secs(3);
                }
                Err(e) => {
                    if args.once {
                        anyhow::bail!("writing to etcd: {e}");
                    }
                    if !failing {
                        tracing::warn!(
                            "etcd unreachable ({e}): retrying with back-off; a full sync follows"
                        );
                        failing = true;
                    }
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(3));
                }
            }
        }
        if args.once && !pending {
            break;
        }
    }
    Ok(())
}
