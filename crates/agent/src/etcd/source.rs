//! The agent's etcd state source (SYSTEM.md 1.2): a thread that delivers a full snapshot of the
//! prefix (`Resync`) and then the ordered changes of a watch that starts right after the
//! snapshot's revision. When etcd cannot be reached it says so once, retries with back-off
//! (200 ms doubling to 3 s, the spec's probe interval) and resyncs when etcd answers again; the
//! agent keeps its last state (and the data plane keeps forwarding) meanwhile.
//!
//! On every (re)connection it also makes sure this node's ID claim exists and republishes its
//! `nodeinfo`, so a node survives etcd losing its data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};

use super::{
    connect, decode_object, ensure_claim, publish_nodeinfo, timed, EtcdConnection, EtcdError,
    Layout, NodeInfo, Result,
};
use crate::model::Object;

pub use crate::source::SourceEvent;

/// What the source needs.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Endpoints, TLS and authentication; every session connects (and authenticates) anew, so
    /// an etcd restart that forgot the auth token, or renewed TLS files, are picked up.
    pub connection: EtcdConnection,
    pub layout: Layout,
    /// This node: its claim is ensured and its `nodeinfo` published on every connection.
    pub node: NodeInfo,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Starts the source thread. `sink` receives the events in order and returns `false` when
/// nobody listens any more, which ends the thread; so does `stop`.
pub fn spawn(
    cfg: SourceConfig,
    stop: Arc<AtomicBool>,
    mut sink: impl FnMut(SourceEvent) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("etcd-source".into())
        .spawn(move || {
            let rt = match super::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    sink(SourceEvent::Disconnected {
                        error: format!("cannot start the etcd client runtime: {e}"),
                        retry_in: Duration::MAX,
                    });
                    return;
                }
            };
            rt.block_on(run(cfg, stop, &mut sink));
        })
}

async fn run(
    cfg: SourceConfig,
    stop: Arc<AtomicBool>,
    sink: &mut (impl FnMut(SourceEvent) -> bool + Send),
) {
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Relaxed) {
        match session(&cfg, &stop, sink, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                if !sink(SourceEvent::Disconnected {
                    error: e.to_string(),
                    retry_in: backoff,
                }) {
                    return;
                }
                let end = tokio::time::Instant::now() + backoff;
                while tokio::time::Instant::now() < end && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One connection: claim + nodeinfo, snapshot, watch. Returns `Ok` only when told to stop.
async fn session(
    cfg: &SourceConfig,
    stop: &AtomicBool,
    sink: &mut (impl FnMut(SourceEvent) -> bool + Send),
    backoff: &mut Duration,
) -> Result<()> {
    let mut client: Client = connect(&cfg.connection).await?;
    let layout = &cfg.layout;
    match ensure_claim(&mut client, layout, cfg.node.id, &cfg.node.name).await {
        Ok(()) => {}
        // Another node holds our ID: report it and go on (the data plane keeps its addressing).
        Err(EtcdError::Invalid(msg)) => {
            if !sink(SourceEvent::Invalid(format!("node ID claim: {msg}"))) {
                return Ok(());
            }
        }
        Err(e) => return Err(e),
    }
    publish_nodeinfo(&mut client, layout, &cfg.node).await?;

    let resp = timed(client.get(layout.prefix(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let mut objects = Vec::new();
    let mut nodes = Vec::new();
    let mut errors = Vec::new();
    let k8s = layout.k8s_prefix();
    let nodeinfo = layout.nodeinfo_prefix();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if key.starts_with(&k8s) {
            match decode_checked(layout, &key, kv.value()) {
                Ok(o) => objects.push(o),
                Err(e) => errors.push(format!("{key}: {e}")),
            }
        } else if key.starts_with(&nodeinfo) {
            match serde_json::from_slice::<NodeInfo>(kv.value()) {
                Ok(n) => nodes.push(n),
                Err(e) => errors.push(format!("{key}: {e}")),
            }
        }
    }
    if !sink(SourceEvent::Resync {
        objects,
        nodes,
        revision,
        errors,
    }) {
        return Ok(());
    }
    *backoff = BACKOFF_MIN;

    let (_watcher, mut stream) = client
        .watch(
            layout.prefix(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let msg = match tokio::time::timeout(Duration::from_millis(250), stream.message()).await {
            Err(_) => continue,
            Ok(m) => m?,
        };
        let Some(resp) = msg else {
            return Err(EtcdError::Invalid("watch stream closed".into()));
        };
        if resp.canceled() {
            return Err(EtcdError::Invalid(format!(
                "watch canceled (compacted at revision {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            )));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let rev = kv.mod_revision();
            let out = if let Some(name) = key.strip_prefix(&nodeinfo) {
                match ev.event_type() {
                    EventType::Delete => SourceEvent::NodeDelete(name.to_string()),
                    EventType::Put => match serde_json::from_slice::<NodeInfo>(kv.value()) {
                        Ok(n) => SourceEvent::NodePut(n),
                        Err(e) => SourceEvent::Invalid(format!("{key}: {e}")),
                    },
                }
            } else if key.starts_with(&k8s) {
                match ev.event_type() {
                    EventType::Delete => match layout.parse_object_key(&key) {
                        Some((kind, key)) => SourceEvent::Delete {
                            kind,
                            key,
                            revision: rev,
                        },
                        None => continue,
                    },
                    EventType::Put => match decode_checked(layout, &key, kv.value()) {
                        Ok(object) => SourceEvent::Put {
                            object,
                            revision: rev,
                        },
                        Err(e) => SourceEvent::Invalid(format!("{key}: {e}")),
                    },
                }
            } else {
                continue;
            };
            if !sink(out) {
                return Ok(());
            }
        }
    }
}

/// Decodes a value and checks that it sits under the key its kind, name and namespace give.
fn decode_checked(layout: &Layout, key: &str, value: &[u8]) -> Result<Object> {
    let o = decode_object(value)?;
    let want = layout.object_key(&o);
    if want != key {
        return Err(EtcdError::Invalid(format!(
            "object {} {} belongs under {want}",
            o.kind(),
            o.key()
        )));
    }
    Ok(o)
}
