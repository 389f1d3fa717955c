//! TLS and authentication towards a real etcd (issue 6): certificates made by the `openssl` CLI
//! for each test, etcd started with `--client-cert-auth` or with `auth enable`. Node IDs, plain
//! requests, the reflector and the source thread work over TLS; a client without a client
//! certificate, trusting another CA, or expecting another server name fails fast with the
//! reason; a wrong password is an authentication error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vecnet_agent::etcd::reflector::{desired, Reflector};
use vecnet_agent::etcd::source::{self, SourceConfig, SourceEvent};
use vecnet_agent::etcd::{self, EtcdAuth, EtcdConnection, EtcdError, EtcdTls, Layout, NodeInfo};
use vecnet_agent::model::parse_manifests;
use vecnet_testsupport::etcd_server::{EtcdServer, TestPki};

fn ready(test: &str) -> bool {
    EtcdServer::available(test) && TestPki::available(test)
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
                       spec: {clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}\n";

#[test]
fn client_certificates_node_ids_and_requests() {
    if !ready("client_certificates") {
        return;
    }
    let pki = TestPki::generate("mtls");
    let srv = EtcdServer::start_tls("mtls", &pki, true);
    let conn = srv.connection();
    assert!(conn.endpoints[0].starts_with("https://"), "{conn:?}");
    let rt = etcd::runtime().unwrap();
    let layout = Layout::new("/tls/");
    rt.block_on(async {
        let mut c = etcd::connect(&conn).await.expect("connect over TLS");
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "a").await.unwrap(),
            1
        );
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "b").await.unwrap(),
            2
        );
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "a").await.unwrap(),
            1
        );
        c.put("/tls/probe", "over-tls", None).await.unwrap();
        let got = c.get("/tls/probe", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"over-tls");
    });
    // The reflector writes through the same connection settings.
    let objs = parse_manifests(SERVICE).unwrap();
    let mut refl = rt
        .block_on(Reflector::connect(&conn, layout.clone()))
        .unwrap();
    let st = rt.block_on(refl.sync(&desired(&layout, &objs))).unwrap();
    assert_eq!(st.put, 1);

    // The same server refuses plain HTTP: the listener speaks TLS only.
    let plain = EtcdConnection::new(&[format!("127.0.0.1:{}", srv.client_port)]);
    let r = rt.block_on(async {
        let mut c = etcd::connect(&plain).await?;
        c.get("/tls/probe", None).await.map_err(EtcdError::from)
    });
    assert!(r.is_err(), "plain HTTP to a TLS listener: {r:?}");
}

/// Runs one request with `tls` against the server; returns the error text and how long it took.
fn failing_request(srv: &EtcdServer, tls: EtcdTls) -> (String, Duration) {
    let conn = EtcdConnection {
        tls: Some(tls),
        ..EtcdConnection::new(&srv.endpoints())
    };
    let rt = etcd::runtime().unwrap();
    let t0 = Instant::now();
    let r = rt.block_on(async {
        let mut c = etcd::connect(&conn).await?;
        etcd::list_claims(&mut c, &Layout::default()).await
    });
    let took = t0.elapsed();
    match r {
        Ok(v) => panic!("request succeeded with {conn:?}: {v:?}"),
        Err(e) => (e.to_string(), took),
    }
}

#[test]
fn rejected_clients_fail_fast_with_the_reason() {
    if !ready("rejected_clients") {
        return;
    }
    let pki = TestPki::generate("reject");
    let srv = EtcdServer::start_tls("reject", &pki, true);
    let good = pki.client_tls();
    // Bounded by the request timeout, not a hang.
    let limit = etcd::REQUEST_TIMEOUT + Duration::from_secs(1);

    let (e, took) = failing_request(
        &srv,
        EtcdTls {
            cert_file: None,
            key_file: None,
            ..good.clone()
        },
    );
    eprintln!("no client certificate: {e}");
    assert!(took < limit, "no client certificate: took {took:?}: {e}");
    assert!(
        NO_CERT.iter().any(|x| e.contains(x)),
        "no client certificate: {e}"
    );

    let (e, took) = failing_request(
        &srv,
        EtcdTls {
            ca_file: Some(pki.other_ca.clone()),
            ..good.clone()
        },
    );
    eprintln!("wrong CA: {e}");
    assert!(took < limit, "wrong CA: took {took:?}: {e}");
    assert!(e.contains("UnknownIssuer"), "wrong CA: {e}");

    let (e, took) = failing_request(
        &srv,
        EtcdTls {
            server_name: Some("etcd.example".into()),
            ..good.clone()
        },
    );
    eprintln!("wrong server name: {e}");
    assert!(took < limit, "wrong server name: took {took:?}: {e}");
    assert!(e.contains("CertNotValidForName"), "wrong server name: {e}");

    // The well-configured client works against the same server.
    let rt = etcd::runtime().unwrap();
    rt.block_on(async {
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        etcd::list_claims(&mut c, &Layout::default()).await.unwrap();
    });
}

/// What a client without a certificate sees when etcd demands one. With TLS 1.3 the client
/// finishes its side of the handshake before etcd checks the certificate, so it reads either
/// etcd's alert or, when etcd has already closed, a broken connection; etcd logs the reason
/// ("client didn't provide a certificate").
const NO_CERT: [&str; 3] = [
    "received fatal alert: BadCertificate",
    "broken pipe",
    "connection reset",
];

#[test]
fn user_and_password() {
    if !EtcdServer::available("user_and_password") {
        return;
    }
    let srv = EtcdServer::start("auth");
    let rt = etcd::runtime().unwrap();
    let pw_file = srv.dir.join("password");
    std::fs::write(&pw_file, "s3cret\n").unwrap();
    let auth = EtcdAuth::from_password_file("root", &pw_file).unwrap();
    assert_eq!(auth.password, "s3cret", "without the trailing line break");
    assert!(!format!("{auth:?}").contains("s3cret"), "{auth:?}");
    let right = EtcdConnection {
        auth: Some(auth),
        ..srv.connection()
    };
    let wrong = EtcdConnection {
        auth: Some(EtcdAuth {
            user: "root".into(),
            password: "guess".into(),
        }),
        ..srv.connection()
    };
    let layout = Layout::new("/auth/");
    rt.block_on(async {
        // A user configured while etcd has authentication off: refused, and said so.
        match etcd::connect(&right).await {
            Err(e @ EtcdError::Auth { .. }) => {
                assert!(e.to_string().contains("not enabled"), "{e}")
            }
            Err(e) => panic!("authentication off: not an authentication error: {e}"),
            Ok(_) => panic!("a user was accepted while etcd has authentication off"),
        }

        // etcd enables authentication only once user root holds role root.
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        c.user_add("root", "s3cret", None).await.unwrap();
        c.role_add("root").await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();

        let mut c = etcd::connect(&right).await.expect("right password");
        assert_eq!(
            etcd::allocate_node_id(&mut c, &layout, "a").await.unwrap(),
            1
        );

        let t0 = Instant::now();
        match etcd::connect(&wrong).await {
            Err(e @ EtcdError::Auth { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("\"root\"") && text.contains("authentication failed"),
                    "{text}"
                );
            }
            Err(e) => panic!("wrong password: not an authentication error: {e}"),
            Ok(_) => panic!("wrong password accepted"),
        }
        assert!(t0.elapsed() < Duration::from_secs(5));

        // Without credentials etcd answers but refuses.
        let mut anon = etcd::connect(&srv.connection()).await.unwrap();
        match etcd::list_claims(&mut anon, &layout).await {
            Err(e) => assert!(e.to_string().contains("user name is empty"), "{e}"),
            Ok(v) => panic!("anonymous read with authentication on: {v:?}"),
        }
    });
}

#[test]
fn source_resyncs_over_tls() {
    if !ready("source_over_tls") {
        return;
    }
    let pki = TestPki::generate("src");
    let srv = EtcdServer::start_tls("src", &pki, true);
    let rt = etcd::runtime().unwrap();
    let layout = Layout::new("/s/");
    let mut refl = rt
        .block_on(Reflector::connect(&srv.connection(), layout.clone()))
        .unwrap();
    let objs = parse_manifests(SERVICE).unwrap();
    rt.block_on(refl.sync(&desired(&layout, &objs))).unwrap();

    let me = NodeInfo {
        id: 1,
        name: "me".into(),
        ip_addresses: vec!["192.168.16.1/24".into()],
        management_ip_addresses: vec![],
        vxlan_ip: "192.168.30.1/24".into(),
    };
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
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
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left).expect("a resync over TLS") {
            SourceEvent::Resync { objects, nodes, .. } => {
                assert_eq!(objects.len(), 1);
                assert_eq!(objects[0].key(), "default/web");
                assert_eq!(nodes, vec![me.clone()]);
                break;
            }
            SourceEvent::Disconnected { error, .. } => panic!("source over TLS: {error}"),
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    th.join().unwrap();
}

/// A server that accepts connections and never answers (a hung etcd, a black-holing proxy):
/// authenticating gives up after the dial timeout instead of hanging the caller.
#[test]
fn authentication_against_a_silent_server_is_bounded() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let conn = EtcdConnection {
        auth: Some(EtcdAuth {
            user: "root".into(),
            password: "pw".into(),
        }),
        dial_timeout: Duration::from_millis(500),
        ..EtcdConnection::new(&[addr.to_string()])
    };
    let rt = etcd::runtime().unwrap();
    let t0 = Instant::now();
    let r = rt.block_on(etcd::connect(&conn));
    let took = t0.elapsed();
    match r {
        Err(e @ EtcdError::ConnectTimeout(_)) => {
            assert!(e.to_string().contains("timed out after 500ms"), "{e}")
        }
        Err(e) => panic!("expected the dial timeout, got {e}"),
        Ok(_) => panic!("connected to a server that never answers"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(silent);
}
