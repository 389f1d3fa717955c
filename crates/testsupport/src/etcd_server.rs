//! A real etcd for tests (SYSTEM.md 13.6): `etcd` from Debian's `etcd-server` package, started
//! on loopback with free ports and a temporary data directory, stopped and removed on drop.
//! Tests skip with a message when the binary is missing (`scripts/test.sh` installs it).
//! [`EtcdServer::start_tls`] serves clients over TLS with certificates from [`TestPki`].

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vecnet_agent::etcd::{EtcdConnection, EtcdTls};

pub struct EtcdServer {
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    /// Extra etcd arguments (TLS files).
    args: Vec<String>,
    /// How clients reach this server (`https://`, CA, client certificate when TLS is on).
    tls: Option<EtcdTls>,
}

/// Where etcd data directories go: `/dev/shm` (memory) when it is writable, else the temp dir.
/// etcd preallocates 64 MiB of WAL per server, and CI machines can be short of disk: a run
/// once failed with "create wal error: no space left on device" while memory was plentiful.
pub fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!(".vn-probe-{}", std::process::id()));
    if std::fs::create_dir_all(&probe).is_ok() {
        let _ = std::fs::remove_dir(&probe);
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Whether `tool` runs (`tool version_arg` succeeds); prints why `test` is skipped when not.
fn tool_available(test: &str, tool: &str, version_arg: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: the `{tool}` binary is missing (apt-get install {package}; scripts/test.sh installs it)"
        );
    }
    ok
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdServer {
    /// Whether the `etcd` binary is installed; prints why a test is skipped when it is not.
    pub fn available(test: &str) -> bool {
        tool_available(test, "etcd", "--version", "etcd-server")
    }

    pub fn start(tag: &str) -> EtcdServer {
        Self::start_with(tag, Vec::new(), None)
    }

    /// etcd serving clients over TLS with `pki`'s server certificate; with `client_cert_auth`
    /// it also demands a client certificate signed by `pki`'s CA. [`EtcdServer::connection`]
    /// then carries the CA and the client certificate.
    pub fn start_tls(tag: &str, pki: &TestPki, client_cert_auth: bool) -> EtcdServer {
        let mut args = vec![
            format!("--cert-file={}", pki.server_cert.display()),
            format!("--key-file={}", pki.server_key.display()),
        ];
        if client_cert_auth {
            args.push("--client-cert-auth".into());
            args.push(format!("--trusted-ca-file={}", pki.ca.display()));
        }
        Self::start_with(tag, args, Some(pki.client_tls()))
    }

    /// etcd with extra arguments; `tls` set = clients connect over `https://` with it.
    pub fn start_with(tag: &str, args: Vec<String>, tls: Option<EtcdTls>) -> EtcdServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = scratch_dir().join(format!("vn-etcd-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd test directory");
        // Two probes can return the same port once the first is released: insist on two.
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        let mut s = EtcdServer {
            dir,
            client_port,
            peer_port,
            child: None,
            args,
            tls,
        };
        s.spawn();
        s
    }

    pub fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.client_port),
            None => format!("127.0.0.1:{}", self.client_port),
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The connection a well-configured client uses (TLS files when the server has TLS).
    pub fn connection(&self) -> EtcdConnection {
        EtcdConnection {
            tls: self.tls.clone(),
            ..EtcdConnection::new(&self.endpoints())
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let mut cmd = Command::new("etcd");
        // If the test process dies without cleaning up, etcd goes with it.
        // SAFETY: the closure only makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let rt = vecnet_agent::etcd::runtime().expect("runtime");
        let conn = self.connection();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let r = rt.block_on(async {
                let mut c = vecnet_agent::etcd::connect(&conn).await?;
                c.get("/health-probe", None)
                    .await
                    .map_err(vecnet_agent::etcd::EtcdError::from)
            });
            // An answer from etcd itself (e.g. "user name is empty" once auth is enabled) also
            // shows that it serves.
            if r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.to_string().contains("etcdserver:"))
            {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited at start ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < end,
                "etcd not ready within 30 s: {r:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops etcd (SIGKILL: as abrupt as a crash); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- etcd log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway PKI made with the `openssl` CLI: a CA, a server certificate for `localhost` and
/// `127.0.0.1`, a client certificate, and a second CA that signed none of them. P-256 keys in
/// PKCS#8 form, the kind rustls 0.19 (under etcd-client 0.8) loads.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Whether `openssl` is installed; prints why a test is skipped when it is not.
    pub fn available(test: &str) -> bool {
        tool_available(test, "openssl", "version", "openssl")
    }

    pub fn generate(tag: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("vn-pki-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("PKI directory");
        let p = |name: &str| dir.join(name);
        for ca in ["ca", "other-ca"] {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=vecnet test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        // etcd also uses its server certificate as a client of its own gRPC gateway: clientAuth.
        Self::leaf(
            &dir,
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        Self::leaf(&dir, "client", "root", "extendedKeyUsage=clientAuth\n");
        TestPki {
            ca: p("ca.pem"),
            other_ca: p("other-ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            dir,
        }
    }

    /// A key and a certificate signed by `ca`.
    fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
        let ext_file = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .expect("extensions file");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext_file,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// What a client with the client certificate uses towards the server of this PKI.
    pub fn client_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            // The endpoint is 127.0.0.1; rustls 0.19 verifies the DNS name instead.
            server_name: Some("localhost".into()),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
