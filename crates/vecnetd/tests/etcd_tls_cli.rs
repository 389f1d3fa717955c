//! The TLS and authentication settings of the commands (issue 6; docs/etcd.md): `vecnetd
//! reflect` with its `--etcd-*` flags against etcd with `--client-cert-auth`, and `vecnetd
//! leave` with `source.etcd.tls` and `passwordFile` against etcd with TLS and `auth enable`.
//! No root needed; skipped without the `etcd` or `openssl` binaries.

use std::path::Path;
use std::process::{Command, Output};

use vecnet_agent::etcd::{self, EtcdAuth, EtcdConnection};
use vecnet_testsupport::etcd_server::{EtcdServer, TestPki};

fn ready(test: &str) -> bool {
    EtcdServer::available(test) && TestPki::available(test)
}

fn vecnetd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vecnetd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vecnetd")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_manifests(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("web.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec: {clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}\n",
    )
    .unwrap();
}

const WEB_KEY: &str = "/vecnet/k8s/service/web/namespace/default";

/// Whether etcd holds `key`.
fn has_key(conn: &EtcdConnection, key: &str) -> bool {
    let rt = etcd::runtime().unwrap();
    rt.block_on(async {
        let mut c = etcd::connect(conn).await.unwrap();
        !c.get(key, None).await.unwrap().kvs().is_empty()
    })
}

#[test]
fn reflect_with_client_certificates() {
    if !ready("reflect_with_client_certificates") {
        return;
    }
    let pki = TestPki::generate("cli-mtls");
    let srv = EtcdServer::start_tls("cli-mtls", &pki, true);
    let manifests = srv.dir.join("manifests");
    write_manifests(&manifests);
    let ep = srv.endpoint();
    let path = |p: &Path| p.display().to_string();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let m = path(&manifests);

    let base = [
        "reflect",
        "--once",
        "--manifests",
        &m,
        "--etcd",
        &ep,
        "--etcd-cacert",
        &ca,
    ];
    let o = vecnetd(
        &[
            &base[..],
            &[
                "--etcd-cert",
                &cert,
                "--etcd-key",
                &key,
                "--etcd-server-name",
                "localhost",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(has_key(&srv.connection(), WEB_KEY));

    // An IP endpoint without a server name: refused before connecting, with the reason.
    let o = vecnetd(&[&base[..], &["--etcd-cert", &cert, "--etcd-key", &key]].concat());
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is an IP address"), "{}", text(&o));

    // A certificate without its key: the flag parser says which flag is missing.
    let o = vecnetd(&[&base[..], &["--etcd-cert", &cert]].concat());
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--etcd-key"), "{}", text(&o));

    // A missing CA file is named.
    let missing = path(&srv.dir.join("no-ca.pem"));
    let o = vecnetd(&[
        "reflect",
        "--once",
        "--manifests",
        &m,
        "--etcd",
        &ep,
        "--etcd-cacert",
        &missing,
        "--etcd-server-name",
        "localhost",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("CA file {missing}: cannot read")),
        "{}",
        text(&o)
    );

    // No client certificate: etcd refuses, `--once` reports it and fails.
    let o = vecnetd(&[&base[..], &["--etcd-server-name", "localhost"]].concat());
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("writing to etcd"), "{}", text(&o));
}

#[test]
fn leave_and_reflect_with_a_password_over_tls() {
    if !ready("leave_and_reflect_with_a_password_over_tls") {
        return;
    }
    let pki = TestPki::generate("cli-auth");
    let srv = EtcdServer::start_tls("cli-auth", &pki, false);
    let pw = srv.dir.join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let authed = EtcdConnection {
        auth: Some(EtcdAuth::from_password_file("root", &pw).unwrap()),
        ..srv.connection()
    };
    let rt = etcd::runtime().unwrap();
    rt.block_on(async {
        let mut c = etcd::connect(&srv.connection()).await.unwrap();
        c.user_add("root", "s3cret", None).await.unwrap();
        c.role_add("root").await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();
        let mut c = etcd::connect(&authed).await.unwrap();
        let id = etcd::allocate_node_id(&mut c, &etcd::Layout::default(), "n1")
            .await
            .unwrap();
        assert_eq!(id, 1);
    });

    let config = srv.dir.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "nodeName: n1\ndataDir: {}\nsource:\n  kind: etcd\n  etcd:\n    endpoints: ['{}']\n    \
             username: root\n    passwordFile: {}\n    tls: {{caFile: {}, serverName: localhost}}\n",
            srv.dir.join("state").display(),
            srv.endpoint(),
            pw.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let o = vecnetd(&["leave", "--config", &config.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("node n1 released node ID [1]"),
        "{}",
        text(&o)
    );
    let claims = rt.block_on(async {
        let mut c = etcd::connect(&authed).await.unwrap();
        etcd::list_claims(&mut c, &etcd::Layout::default())
            .await
            .unwrap()
    });
    assert!(claims.is_empty(), "{claims:?}");

    // The reflector with a wrong password: an authentication error, not "unreachable".
    let manifests = srv.dir.join("manifests");
    write_manifests(&manifests);
    let bad = srv.dir.join("bad-password");
    std::fs::write(&bad, "guess\n").unwrap();
    let ca = pki.ca.display().to_string();
    let m = manifests.display().to_string();
    let ep = srv.endpoint();
    let reflect = |pw_file: &Path| {
        vecnetd(&[
            "reflect",
            "--once",
            "--manifests",
            &m,
            "--etcd",
            &ep,
            "--etcd-cacert",
            &ca,
            "--etcd-server-name",
            "localhost",
            "--etcd-user",
            "root",
            "--etcd-password-file",
            &pw_file.display().to_string(),
        ])
    };
    assert!(!has_key(&authed, WEB_KEY));
    let o = reflect(&bad);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("authenticating as user \"root\"")
            && text(&o).contains("authentication failed"),
        "{}",
        text(&o)
    );
    let o = reflect(&pw);
    assert!(o.status.success(), "{}", text(&o));
    assert!(has_key(&authed, WEB_KEY));
}
