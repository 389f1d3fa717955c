//! etcd-backed cluster state against a real etcd (started by the test on loopback): node-ID
//! allocation (smallest free, atomic under concurrency, reuse by name, release), nodeinfo, the
//! reflector's mark-and-sweep and idempotence, and the agent source's resync + watch.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use vecnet_agent::etcd::reflector::{desired, Reflector, SyncStats};
use vecnet_agent::etcd::source::{self, SourceConfig, SourceEvent};
use vecnet_agent::etcd::{self, EtcdConnection, Layout, NodeInfo};
use vecnet_agent::model::parse_manifests;
use vecnet_testsupport::etcd_server::EtcdServer;

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, ports: [{{port: 80, protocol: TCP}}]}}\n---\n"
    )
}

#[test]
fn node_ids_smallest_free_atomic_reused_and_released() {
    if !EtcdServer::available("node_ids") {
        return;
    }
    let srv = EtcdServer::start("ids");
    let rt = etcd::runtime().unwrap();
    let layout = Layout::new("/t1/");
    // Eight nodes join at once (one thread and client each): distinct IDs 1..=8.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let eps = srv.endpoints();
            let layout = layout.clone();
            std::thread::spawn(move || {
                let rt = etcd::runtime().unwrap();
                rt.block_on(async {
                    let mut c = etcd::connect(&EtcdConnection::new(&eps)).await.unwrap();
                    etcd::allocate_node_id(&mut c, &layout, &format!("node-{i}"))
                        .await
                        .unwrap()
                })
            })
        })
        .collect();
    let mut ids: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<u32>>(),
        "distinct, smallest free"
    );

    rt.block_on(async {
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        let claims = etcd::list_claims(&mut c, &layout).await.unwrap();
        assert_eq!(claims.len(), 8);
        let id3 = claims.iter().find(|c| c.id == 3).unwrap().name.clone();
        // A restart reuses the ID that holds the name.
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, &id3).await.unwrap(),
            3
        );
        // Release: the key and nodeinfo go; the next newcomer gets the smallest free ID, 3.
        etcd::publish_nodeinfo(
            &mut c,
            &layout,
            &NodeInfo {
                id: 3,
                name: id3.clone(),
                ip_addresses: vec!["192.168.16.3/24".into()],
                management_ip_addresses: vec![],
                vxlan_ip: "192.168.30.3/24".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(etcd::list_nodeinfo(&mut c, &layout).await.unwrap().len(), 1);
        assert_eq!(
            etcd::release_node(&mut c, &layout, &id3).await.unwrap(),
            vec![3]
        );
        assert!(etcd::list_nodeinfo(&mut c, &layout)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "newcomer")
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "another")
                .await
                .unwrap(),
            9
        );
        // A configured ID held by someone else is refused; a free one is claimed.
        assert!(etcd::ensure_claim(&mut c, &layout, 1, "intruder")
            .await
            .is_err());
        etcd::ensure_claim(&mut c, &layout, 20, "static")
            .await
            .unwrap();
        etcd::ensure_claim(&mut c, &layout, 20, "static")
            .await
            .unwrap();
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "static")
                .await
                .unwrap(),
            20
        );
        // Another prefix is another cluster.
        assert_eq!(
            etcd::allocate_node_id(&mut c, &Layout::new("/t2"), "node-0")
                .await
                .unwrap(),
            1
        );
    });
}

#[test]
fn reflector_marks_and_sweeps_and_is_idempotent() {
    if !EtcdServer::available("reflector") {
        return;
    }
    let srv = EtcdServer::start("refl");
    let rt = etcd::runtime().unwrap();
    let layout = Layout::new("/r/");
    rt.block_on(async {
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        // Left over from an earlier reflector: an object that no longer exists, and keys outside
        // k8s/ that the reflector must not touch.
        c.put("/r/k8s/service/gone/namespace/default", "{}", None)
            .await
            .unwrap();
        c.put("/r/allocatedIDs/1", r#"{"id":1,"name":"x"}"#, None)
            .await
            .unwrap();

        let objs =
            parse_manifests(&(service("a", "10.96.0.10") + &service("b", "10.96.0.11"))).unwrap();
        let want = desired(&layout, &objs);
        let mut r = Reflector::connect(&srv.connection(), layout.clone())
            .await
            .unwrap();
        let st = r.sync(&want).await.unwrap();
        assert_eq!(
            st,
            SyncStats {
                put: 2,
                deleted: 1,
                unchanged: 0
            }
        );
        assert_eq!(r.sync(&want).await.unwrap().put, 0, "nothing changed");
        assert!(!r.check().await.unwrap(), "in sync");

        // A fresh reflector (a restart) writes nothing: values are compared, not rewritten.
        let mut r2 = Reflector::connect(&srv.connection(), layout.clone())
            .await
            .unwrap();
        assert_eq!(
            r2.sync(&want).await.unwrap(),
            SyncStats {
                put: 0,
                deleted: 0,
                unchanged: 2
            }
        );
        let rev_before = c
            .get("/r/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        r2.sync(&want).await.unwrap();
        let rev_after = c
            .get("/r/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert_eq!(rev_before, rev_after, "an idempotent sync writes nothing");

        // Someone deletes a key behind the reflector's back: check() notices, a full sync heals.
        c.delete("/r/k8s/service/a/namespace/default", None)
            .await
            .unwrap();
        assert!(r.check().await.unwrap());
        assert_eq!(r.sync(&want).await.unwrap().put, 1);

        // Changes: b removed, c added, a changed.
        let objs =
            parse_manifests(&(service("a", "10.96.0.20") + &service("c", "10.96.0.12"))).unwrap();
        let st = r.sync(&desired(&layout, &objs)).await.unwrap();
        assert_eq!(
            st,
            SyncStats {
                put: 2,
                deleted: 1,
                unchanged: 0
            }
        );
        let keys: Vec<String> = c
            .get("/r/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap()
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "/r/allocatedIDs/1",
                "/r/k8s/service/a/namespace/default",
                "/r/k8s/service/c/namespace/default",
            ]
        );
    });
}

fn recv(rx: &mpsc::Receiver<SourceEvent>, what: &str, mut f: impl FnMut(&SourceEvent) -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if f(&ev) => return,
            Ok(_) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

#[test]
fn source_resyncs_watches_and_survives_an_etcd_restart() {
    if !EtcdServer::available("source") {
        return;
    }
    let mut srv = EtcdServer::start("src");
    let rt = etcd::runtime().unwrap();
    let layout = Layout::new("/s/");
    let mut refl = rt
        .block_on(Reflector::connect(&srv.connection(), layout.clone()))
        .unwrap();
    let objs = parse_manifests(&service("a", "10.96.0.10")).unwrap();
    rt.block_on(refl.sync(&desired(&layout, &objs))).unwrap();

    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let me = NodeInfo {
        id: 1,
        name: "me".into(),
        ip_addresses: vec!["192.168.16.1/24".into()],
        management_ip_addresses: vec!["10.20.0.2".into()],
        vxlan_ip: "192.168.30.1/24".into(),
    };
    let th = source::spawn(
        SourceConfig {
            connection: srv.connection(),
            layout: layout.clone(),
            node: me.clone(),
        },
        Arc::clone(&stop),
        move |ev| tx.send(ev).is_ok(),
    )
    .unwrap();
    recv(&rx, "the first resync", |ev| match ev {
        SourceEvent::Resync { objects, nodes, .. } => {
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].key(), "default/a");
            assert_eq!(nodes, &vec![me.clone()], "own nodeinfo published first");
            true
        }
        _ => false,
    });
    // Changes arrive in order.
    let objs = parse_manifests(&service("b", "10.96.0.11")).unwrap();
    rt.block_on(refl.sync(&desired(&layout, &objs))).unwrap();
    let mut seen = Vec::new();
    recv(&rx, "delete a and put b", |ev| {
        match ev {
            SourceEvent::Put { object, .. } => seen.push(format!("put {}", object.key())),
            SourceEvent::Delete { kind, key, .. } => seen.push(format!("delete {kind} {key}")),
            _ => {}
        }
        seen.len() == 2
    });
    assert_eq!(seen, ["delete Service default/a", "put default/b"]);
    // The claim exists.
    rt.block_on(async {
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        let claims = etcd::list_claims(&mut c, &layout).await.unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].name, "me");
    });

    // etcd goes away: the source says so; comes back: a resync.
    srv.stop();
    recv(&rx, "disconnected", |ev| {
        matches!(ev, SourceEvent::Disconnected { .. })
    });
    srv.restart();
    recv(&rx, "resync after the restart", |ev| match ev {
        SourceEvent::Resync { objects, .. } => {
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].key(), "default/b");
            true
        }
        _ => false,
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(rx);
    th.join().unwrap();
}
