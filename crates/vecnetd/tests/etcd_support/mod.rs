//! Helpers of the etcd end-to-end tests (`tests/etcd.rs`; the etcd itself is
//! `vecnet_testsupport::etcd_server`): `vecnetd
//! run` agents in etcd mode as processes — each with its own host network namespace, directory
//! and socket — and the reflector (`vecnetd reflect`) as a process.
//!
//! Naming follows `e2e_support` (`vn-e2e-<pid>-etcd<n>-…`), so its start-up reaper also removes
//! what a killed run of these tests left behind.

#![allow(dead_code)] // each test uses a different subset

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vecnet_agent::control;
use vecnet_io::netns;

use crate::e2e_support::{netns_exec, poll, sibling_bin, HOST_IP};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "vn-e2e-{}-etcd{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child that gets SIGTERM when the test process dies.
fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    // SAFETY: the closure only makes one async-signal-safe system call (prctl).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// SIGTERM, then up to 5 s for an orderly exit, then SIGKILL. Returns a problem, if any.
fn terminate(child: &mut Child, what: &str) -> Option<String> {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    );
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return (!st.success()).then(|| format!("{what} exited with {st} on SIGTERM"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(format!("{what} did not stop within 5 s of SIGTERM; killed"))
}

/// One `vecnetd run` in etcd mode (`ipam.nodeID: 0`: the ID comes from etcd).
pub struct Agent {
    pub name: String,
    pub prefix: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub host_ns: String,
    daemon: Option<Child>,
}

impl Agent {
    /// Creates the agent's host namespace, directory and configuration; does not start it.
    pub fn new(name: &str, etcd_endpoint: &str, etcd_prefix: &str) -> Agent {
        let prefix = unique_prefix();
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the agent directory");
        let host_ns = format!("{prefix}-host");
        netns::create(&host_ns).unwrap_or_else(|e| panic!("create netns {host_ns}: {e}"));
        // The host stack's own address (published as the node's management IP).
        for args in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "addr", "add", "10.20.0.2/32", "dev", "lo"],
        ] {
            let out = netns_exec(&host_ns, &args);
            assert!(out.status.success(), "{args:?} in {host_ns}: {out:?}");
        }
        debug_assert_eq!(HOST_IP.to_string(), "10.20.0.2");
        let a = Agent {
            name: name.to_string(),
            socket: dir.join("vecnetd.sock"),
            config: dir.join("vecnet.yaml"),
            prefix,
            dir,
            host_ns,
            daemon: None,
        };
        let config = format!(
            "nodeName: {name}\n\
             socket: {sock}\n\
             dataDir: {data}\n\
             httpListen: \"\"\n\
             source: {{kind: etcd, etcd: {{endpoints: [\"{etcd_endpoint}\"], prefix: \"{etcd_prefix}\"}}}}\n\
             ipam: {{nodeID: 0}}\n\
             interfaces:\n  host: {{netns: {host}}}\n",
            sock = a.socket.display(),
            data = a.dir.join("data").display(),
            host = a.host_ns,
        );
        std::fs::write(&a.config, config).expect("write the config");
        eprintln!(
            "[agent {name}] namespace {}, files {}",
            a.host_ns,
            a.dir.display()
        );
        a
    }

    /// Starts `vecnetd run` and waits until `/healthz` says `ok` (within `deadline`).
    pub fn start_within(&mut self, deadline: Duration) {
        assert!(self.daemon.is_none(), "agent {} already runs", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vecnetd.log"))
            .expect("log file");
        let child = command(Path::new(env!("CARGO_BIN_EXE_vecnetd")))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vecnetd run");
        self.daemon = Some(child);
        let what = format!("agent {} ready (GET /healthz = ok)", self.name);
        poll(&what, deadline, || {
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(st)) = d.try_wait() {
                    panic!("vecnetd exited at start ({st}):\n{}", self.log());
                }
            }
            match control::call(&self.socket, "GET", "/healthz", "", Duration::from_secs(2)) {
                Ok((200, b)) if b.trim() == "ok" => Ok(()),
                Ok((s, b)) => Err(format!("{s} {}", b.trim())),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    pub fn start(&mut self) {
        self.start_within(Duration::from_secs(20));
    }

    /// An orderly stop (SIGTERM); fails the test if the daemon does not exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            if let Some(p) = terminate(&mut c, "vecnetd") {
                panic!("agent {}: {p}\n{}", self.name, self.log());
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vecnetd.log")).unwrap_or_default()
    }

    /// `vecnetctl --socket … ARGS`: stdout, or the failure.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(sibling_bin("vecnetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run vecnetctl");
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(format!(
                "vecnetctl {args:?}: {}: {}",
                out.status,
                text(&out.stderr)
            ))
        }
    }

    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("agent {}: {e}\n{}", self.name, self.log()))
    }

    /// The node ID `vecnetctl ipam` reports.
    pub fn node_id(&self) -> u32 {
        let ipam = self.ctl(&["ipam"]);
        ipam.lines()
            .find_map(|l| l.strip_prefix("Node ID:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no node ID in:\n{ipam}"))
    }

    /// `vecnetd leave --config …` (the agent should be stopped first).
    pub fn leave(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vecnetd"))
            .args(["leave", "--config"])
            .arg(&self.config)
            .output()
            .expect("run vecnetd leave")
    }

    /// Polls until `vecnetctl ARGS` output satisfies `f`.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        args: &[&str],
        f: impl Fn(&str) -> bool,
    ) -> String {
        let what = format!("agent {}: {what}", self.name);
        poll(&what, deadline, || {
            let out = self.try_ctl(args)?;
            if f(&out) {
                Ok(out)
            } else {
                Err(out)
            }
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if let Some(mut c) = self.daemon.take() {
            problems.extend(terminate(&mut c, "vecnetd"));
        }
        if std::thread::panicking() {
            eprintln!(
                "---- vecnetd log of {} ({}) ----\n{}",
                self.name,
                self.prefix,
                self.log()
            );
        }
        if let Err(e) = netns::delete(&self.host_ns) {
            problems.push(format!("deleting netns {}: {e}", self.host_ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !problems.is_empty() {
            eprintln!("cleanup of agent {}: {problems:#?}", self.name);
        }
    }
}

/// `vecnetd reflect` on a manifests directory of its own.
pub struct ReflectorProc {
    pub dir: PathBuf,
    pub manifests: PathBuf,
    child: Option<Child>,
}

impl ReflectorProc {
    /// Creates the manifests directory; [`ReflectorProc::start`] starts the process.
    pub fn new() -> ReflectorProc {
        let dir = std::env::temp_dir().join(unique_prefix());
        let _ = std::fs::remove_dir_all(&dir);
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifests directory");
        ReflectorProc {
            dir,
            manifests,
            child: None,
        }
    }

    pub fn start(&mut self, etcd_endpoint: &str, prefix: &str) {
        let manifests = self.manifests.clone();
        self.spawn(
            &[std::ffi::OsStr::new("--manifests"), manifests.as_os_str()],
            etcd_endpoint,
            prefix,
        );
    }

    /// Starts the reflector on the Kubernetes API that `kubeconfig` names instead of the
    /// manifests directory.
    pub fn start_kube(&mut self, kubeconfig: &Path, etcd_endpoint: &str, prefix: &str) {
        self.spawn(
            &[std::ffi::OsStr::new("--kubeconfig"), kubeconfig.as_os_str()],
            etcd_endpoint,
            prefix,
        );
    }

    fn spawn(&mut self, input: &[&std::ffi::OsStr], etcd_endpoint: &str, prefix: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("reflect.log"))
            .expect("log");
        let child = command(Path::new(env!("CARGO_BIN_EXE_vecnetd")))
            .arg("reflect")
            .args(input)
            .args(["--etcd", etcd_endpoint, "--prefix", prefix])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vecnetd reflect");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("reflect.log")).unwrap_or_default()
    }

    /// Writes a manifest file atomically (temporary name, then rename).
    pub fn write(&self, file: &str, objects: &[serde_json::Value]) {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(&list).expect("json"))
            .expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).expect("remove manifest");
    }
}

impl Drop for ReflectorProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(p) = terminate(&mut c, "vecnetd reflect") {
                eprintln!("{p}");
            }
        }
        if std::thread::panicking() {
            eprintln!("---- reflector log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
