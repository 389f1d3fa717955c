//! The reflector (Contiv's KSR role, SYSTEM.md 1.3): keeps `<prefix>k8s/` equal to a set of
//! objects. A full sync lists the prefix and writes what differs, deleting keys of objects that
//! no longer exist (mark-and-sweep); later syncs write only what changed since the last one.
//! Writes are idempotent: a key that already holds the value is not written again.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions};

use super::{encode_object, timed, EtcdConnection, Layout, Result};
use crate::model::Object;

/// The desired content of `<prefix>k8s/`: key → value.
pub fn desired(layout: &Layout, objects: &[Object]) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|o| (layout.object_key(o), encode_object(o)))
        .collect()
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub put: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

pub struct Reflector {
    conn: EtcdConnection,
    /// Made at the first request and dropped after an error, so that a new one re-authenticates
    /// (etcd forgets its simple auth tokens when it restarts).
    client: Option<Client>,
    layout: Layout,
    /// What `<prefix>k8s/` holds, as far as this reflector knows (after its last sync).
    known: BTreeMap<String, String>,
    /// Whether `known` reflects etcd (false before the first full sync and after an error).
    in_sync: bool,
}

impl Reflector {
    /// Checks the connection settings (TLS files); the connection itself is made by the first
    /// sync, so this succeeds while etcd is down.
    pub async fn connect(conn: &EtcdConnection, layout: Layout) -> Result<Self> {
        conn.check()?;
        Ok(Self {
            conn: conn.clone(),
            client: None,
            layout,
            known: BTreeMap::new(),
            in_sync: false,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Brings etcd to `want`. After an error (or at first) this is a full sync: the prefix is
    /// listed and every key not in `want` is deleted; otherwise only the difference against the
    /// last sync is written.
    pub async fn sync(&mut self, want: &BTreeMap<String, String>) -> Result<SyncStats> {
        let r = self.sync_inner(want).await;
        if r.is_err() {
            self.in_sync = false;
            self.client = None;
        }
        r
    }

    /// A cheap consistency probe: counts the keys under the prefix and forces a full sync when
    /// the count is not what the last sync left (etcd restarted without its data, someone else
    /// wrote or deleted keys). Returns whether the next sync is a full one; errors (etcd down)
    /// force one too.
    pub async fn check(&mut self) -> Result<bool> {
        if !self.in_sync {
            return Ok(true);
        }
        let r = match self.client().await {
            Ok(mut c) => {
                timed(c.get(
                    self.layout.k8s_prefix(),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ))
                .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(resp) => {
                if usize::try_from(resp.count()).ok() != Some(self.known.len()) {
                    self.in_sync = false;
                }
                Ok(!self.in_sync)
            }
            Err(e) => {
                self.in_sync = false;
                self.client = None;
                Err(e)
            }
        }
    }

    /// The client, connecting (and authenticating) first if there is none. Clones share one
    /// connection.
    async fn client(&mut self) -> Result<Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = super::connect(&self.conn).await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Forces the next [`Reflector::sync`] to be a full one.
    pub fn invalidate(&mut self) {
        self.in_sync = false;
    }

    async fn sync_inner(&mut self, want: &BTreeMap<String, String>) -> Result<SyncStats> {
        let mut client = self.client().await?;
        if !self.in_sync {
            let resp = timed(client.get(
                self.layout.k8s_prefix(),
                Some(GetOptions::new().with_prefix()),
            ))
            .await?;
            self.known = resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    )
                })
                .collect();
            self.in_sync = true;
        }
        let mut st = SyncStats::default();
        // Sweep first: keys of objects that no longer exist.
        let stale: Vec<String> = self
            .known
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in stale {
            timed(client.delete(k.clone(), None)).await?;
            self.known.remove(&k);
            st.deleted += 1;
        }
        for (k, v) in want {
            if self.known.get(k) == Some(v) {
                st.unchanged += 1;
                continue;
            }
            timed(client.put(k.clone(), v.clone(), None)).await?;
            self.known.insert(k.clone(), v.clone());
            st.put += 1;
        }
        Ok(st)
    }
}
