//! `vecnetd run` configuration (SYSTEM.md 1.11): one YAML (or JSON) file, every key optional
//! with an embedded default, unknown keys rejected with their path. Reference: docs/config.md.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use vecnet_agent::etcd::{endpoint_host_is_ip, EtcdAuth, EtcdConnection, EtcdTls};
use vecnet_agent::ipam::IpamConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Config {
    /// Default: the host name.
    pub node_name: String,
    pub data_dir: PathBuf,
    /// Control socket for `vecnetctl` and `vecnet-cni` (mode 0600).
    pub socket: PathBuf,
    /// Read-only HTTP listener for metrics (issue: cluster state); "" disables.
    pub http_listen: String,
    pub source: Source,
    pub ipam: IpamConfig,
    pub interfaces: Interfaces,
    pub dataplane: DataplaneSection,
    pub nat: NatSection,
    pub acl: AclSection,
    pub services: ServicesSection,
    pub policy: PolicySection,
    pub vxlan: VxlanSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            data_dir: "/var/lib/vecnet".into(),
            socket: "/run/vecnet/vecnetd.sock".into(),
            http_listen: "127.0.0.1:9999".into(),
            source: Source::default(),
            ipam: IpamConfig::default(),
            interfaces: Interfaces::default(),
            dataplane: DataplaneSection::default(),
            nat: NatSection::default(),
            acl: AclSection::default(),
            services: ServicesSection::default(),
            policy: PolicySection::default(),
            vxlan: VxlanSection::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Source {
    /// `manifests` (a directory), `etcd` (docs/etcd.md) or `kube` (the Kubernetes API,
    /// docs/kubernetes.md).
    pub kind: String,
    pub manifests: ManifestsSource,
    pub etcd: EtcdSource,
    pub kube: KubeSource,
}

impl Default for Source {
    fn default() -> Self {
        Self {
            kind: "manifests".into(),
            manifests: ManifestsSource::default(),
            etcd: EtcdSource::default(),
            kube: KubeSource::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct ManifestsSource {
    pub dir: PathBuf,
}

impl Default for ManifestsSource {
    fn default() -> Self {
        Self {
            dir: "/etc/vecnet/manifests".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct EtcdSource {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// Bounds connecting and authenticating (milliseconds).
    pub dial_timeout_ms: u64,
    /// Present = TLS (so are `https://` endpoints).
    pub tls: Option<EtcdTlsSection>,
    /// etcd user; "" = no authentication.
    pub username: String,
    /// The password in a file (its trailing line break ignored), which keeps it out of the
    /// configuration.
    pub password_file: Option<PathBuf>,
    /// The password inline, as Contiv's etcd.conf had it; `passwordFile` is preferred.
    pub password: String,
}

impl Default for EtcdSource {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:32379".into()],
            prefix: "/vecnet/".into(),
            dial_timeout_ms: 5000,
            tls: None,
            username: String::new(),
            password_file: None,
            password: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct EtcdTlsSection {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl EtcdSource {
    /// The connection to etcd: reads the password file and checks the TLS files, so a missing
    /// file stops the start with its name instead of looking like an unreachable etcd.
    pub fn connection(&self) -> anyhow::Result<EtcdConnection> {
        let auth = match (&self.password_file, self.username.is_empty()) {
            (_, true) => None,
            (Some(f), false) => Some(
                EtcdAuth::from_password_file(&self.username, f)
                    .map_err(|e| anyhow::anyhow!("source.etcd.passwordFile: {e}"))?,
            ),
            (None, false) => Some(EtcdAuth {
                user: self.username.clone(),
                password: self.password.clone(),
            }),
        };
        let conn = EtcdConnection {
            endpoints: self.endpoints.clone(),
            tls: self.tls.as_ref().map(|t| EtcdTls {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                server_name: t.server_name.clone(),
            }),
            auth,
            dial_timeout: std::time::Duration::from_millis(self.dial_timeout_ms),
        };
        conn.check()
            .map_err(|e| anyhow::anyhow!("source.etcd: {e}"))?;
        Ok(conn)
    }

    /// The checks that need no file: pairs of settings, and what TLS needs.
    fn validate(&self) -> anyhow::Result<()> {
        if self.endpoints.is_empty() || self.endpoints.iter().any(|x| x.trim().is_empty()) {
            anyhow::bail!("source.etcd.endpoints: at least one endpoint (host:port) is needed");
        }
        if !self.prefix.starts_with('/') {
            anyhow::bail!("source.etcd.prefix: {:?} must start with '/'", self.prefix);
        }
        if self.dial_timeout_ms == 0 {
            anyhow::bail!("source.etcd.dialTimeoutMs: must be positive");
        }
        if self.username.is_empty() {
            if self.password_file.is_some() || !self.password.is_empty() {
                anyhow::bail!("source.etcd.username: needed with a password");
            }
        } else {
            match (&self.password_file, self.password.is_empty()) {
                (Some(_), false) => {
                    anyhow::bail!("source.etcd: password and passwordFile are exclusive")
                }
                (None, true) => anyhow::bail!(
                    "source.etcd.passwordFile: needed with username {:?}",
                    self.username
                ),
                _ => {}
            }
        }
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if self.tls.is_none() && !https {
            return Ok(());
        }
        let tls = self.tls.clone().unwrap_or_default();
        if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
            anyhow::bail!("source.etcd.endpoints: {e} is plain http:// but TLS is configured");
        }
        if tls.server_name.is_none() {
            if let Some(e) = self.endpoints.iter().find(|e| endpoint_host_is_ip(e)) {
                anyhow::bail!(
                    "source.etcd.tls.serverName: needed because endpoint {e} is an IP address \
                     (etcd-client 0.8's TLS verifies a DNS name of etcd's certificate)"
                );
            }
        }
        if tls.ca_file.is_none() {
            anyhow::bail!("source.etcd.tls.caFile: needed with TLS (no system roots are trusted)");
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(c), None) => anyhow::bail!(
                "source.etcd.tls.keyFile: needed with certFile {}",
                c.display()
            ),
            (None, Some(k)) => anyhow::bail!(
                "source.etcd.tls.certFile: needed with keyFile {}",
                k.display()
            ),
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct KubeSource {
    /// A kubeconfig file; "" = the in-cluster service account (`KUBERNETES_SERVICE_HOST` set),
    /// else kube's default (`$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: String,
    /// A kubeconfig context other than the current one; "" = the current one.
    pub context: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Interfaces {
    pub host: HostInterface,
    pub uplink: UplinkInterface,
    pub pods: PodInterfaces,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct HostInterface {
    /// Network namespace that plays the host: "" = the one vecnetd runs in; a name = /run/netns/NAME.
    pub netns: String,
    /// Linux side of `tap0`.
    pub linux_name: String,
    /// Data-plane MAC of `tap0` (unicast, locally administered by default).
    pub mac: String,
    pub mtu: u16,
    /// Extra host-stack addresses to route /32 via the host link, in addition to those read
    /// from the host namespace.
    pub extra_host_ips: Vec<Ipv4Addr>,
}

impl Default for HostInterface {
    fn default() -> Self {
        Self {
            netns: String::new(),
            linux_name: "vpp1".into(),
            mac: "02:23:45:67:89:42".into(),
            mtu: 1450,
            extra_host_ips: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct UplinkInterface {
    /// "" = no uplink (single node). AF_PACKET uplinks come with the VXLAN work.
    pub linux_name: String,
    pub mtu: u16,
}

impl Default for UplinkInterface {
    fn default() -> Self {
        Self {
            linux_name: String::new(),
            mtu: 1500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct PodInterfaces {
    pub mtu: u16,
    /// `fixed` (00:00:00:00:00:02 on every pod, the 2018 layout) or `hashed` (SYSTEM.md 2.4).
    pub mac_scheme: String,
    pub vnet_hdr: bool,
    pub offloads: bool,
    pub queues: u16,
    pub rx_ring_size: u32,
    pub tx_ring_size: u32,
}

impl Default for PodInterfaces {
    fn default() -> Self {
        Self {
            mtu: 1450,
            mac_scheme: "fixed".into(),
            vnet_hdr: true,
            offloads: true,
            queues: 1,
            rx_ring_size: 256,
            tx_ring_size: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct DataplaneSection {
    pub workers: u32,
    pub pin_cores: Vec<u32>,
    pub vector_size: u32,
    pub buffers: u32,
    pub trace_capacity: u32,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        Self {
            workers: 1,
            pin_cores: Vec::new(),
            vector_size: 256,
            buffers: 16384,
            trace_capacity: 50_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct NatSection {
    pub nat_external_traffic: bool,
    pub max_sessions: u32,
    pub max_sessions_per_user: u32,
    pub reserved_for_control: u8,
    pub timeouts: NatTimeoutsSection,
}

impl Default for NatSection {
    fn default() -> Self {
        Self {
            nat_external_traffic: true,
            // Issue 3: sized for 1 M sessions per worker (SYSTEM.md 1.11's example says 131072).
            max_sessions: 1 << 20,
            max_sessions_per_user: 10_000,
            reserved_for_control: 5,
            timeouts: NatTimeoutsSection::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct NatTimeoutsSection {
    pub udp: u32,
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub icmp: u32,
}

impl Default for NatTimeoutsSection {
    fn default() -> Self {
        Self {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            icmp: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct AclSection {
    pub max_sessions: u32,
    pub reserved_for_control: u8,
    pub timeouts: AclTimeoutsSection,
}

impl Default for AclSection {
    fn default() -> Self {
        Self {
            max_sessions: 131_072,
            reserved_for_control: 5,
            timeouts: AclTimeoutsSection::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct AclTimeoutsSection {
    pub udp_idle: u32,
    pub tcp_idle: u32,
    pub tcp_transient: u32,
}

impl Default for AclTimeoutsSection {
    fn default() -> Self {
        Self {
            udp_idle: 600,
            tcp_idle: 86_400,
            tcp_transient: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct ServicesSection {
    #[serde(rename = "routeServiceCIDRToVPP")]
    pub route_service_cidr_to_vpp: bool,
    pub local_endpoint_weight: u32,
    pub node_port_range: String,
}

impl Default for ServicesSection {
    fn default() -> Self {
        Self {
            route_service_cidr_to_vpp: true,
            local_endpoint_weight: 1,
            node_port_range: "30000-32767".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct PolicySection {
    pub strict_reevaluation: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VxlanSection {
    pub vni: u32,
    pub port: u16,
}

impl Default for VxlanSection {
    fn default() -> Self {
        Self {
            vni: 10,
            port: 4789,
        }
    }
}

impl Config {
    /// Loads a file (YAML or JSON); errors name the file, the key path and the reason.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(name: &str, text: &str) -> anyhow::Result<Self> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut c: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || inner.starts_with(&path) {
                anyhow::anyhow!("{name}: {inner}")
            } else {
                anyhow::anyhow!("{name}: {path}: {inner}")
            }
        })?;
        c.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if c.node_name.is_empty() {
            c.node_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node1".into());
        }
        // Node ID 0 = allocate in etcd (etcd mode), the Node's `vecnet.io/node-id` annotation
        // else 1 (kube mode, resolved at start), or 1 (manifests).
        if c.ipam.node_id == 0 && c.source.kind == "manifests" {
            c.ipam.node_id = 1;
        }
        if !c.source.etcd.prefix.ends_with('/') {
            c.source.etcd.prefix.push('/');
        }
        Ok(c)
    }

    fn validate(&self) -> anyhow::Result<()> {
        match self.source.kind.as_str() {
            "manifests" => {}
            "etcd" => self.source.etcd.validate()?,
            "kube" => {
                if self.source.kube.kubeconfig.trim() != self.source.kube.kubeconfig {
                    anyhow::bail!(
                        "source.kube.kubeconfig: {:?} has leading or trailing blanks",
                        self.source.kube.kubeconfig
                    );
                }
            }
            other => anyhow::bail!(
                "source.kind: {other:?} is not available in this build (manifests, etcd and kube are)"
            ),
        }
        self.interfaces
            .host
            .mac
            .parse::<vecnet_wire::MacAddr>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "interfaces.host.mac: invalid MAC address {:?}",
                    self.interfaces.host.mac
                )
            })?;
        if !["fixed", "hashed"].contains(&self.interfaces.pods.mac_scheme.as_str()) {
            anyhow::bail!(
                "interfaces.pods.macScheme: {:?} (expected fixed or hashed)",
                self.interfaces.pods.mac_scheme
            );
        }
        if self.dataplane.workers != 1 {
            anyhow::bail!(
                "dataplane.workers: {} (this build runs one worker)",
                self.dataplane.workers
            );
        }
        if self.dataplane.buffers < 1024 {
            anyhow::bail!(
                "dataplane.buffers: {} is too few (at least 1024)",
                self.dataplane.buffers
            );
        }
        if self.interfaces.host.linux_name.is_empty() || self.interfaces.host.linux_name.len() > 15
        {
            anyhow::bail!(
                "interfaces.host.linuxName: {:?} is not a valid interface name",
                self.interfaces.host.linux_name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::parse("x", "{}").unwrap();
        assert_eq!(c.interfaces.host.linux_name, "vpp1");
        assert_eq!(c.nat.timeouts.tcp_established, 7440);
        assert_eq!(c.ipam.node_id, 1);
    }

    #[test]
    fn etcd_source() {
        let c = Config::parse(
            "x",
            "source: {kind: etcd, etcd: {endpoints: ['127.0.0.1:2379'], prefix: /t}}",
        )
        .unwrap();
        assert_eq!(c.ipam.node_id, 0, "0 = allocate in etcd");
        assert_eq!(c.source.etcd.prefix, "/t/");
        let e = Config::parse("x", "source: {kind: etcd, etcd: {endpoints: []}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.etcd.endpoints"), "{e}");
        let e = Config::parse("x", "source: {kind: consul}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.kind") && e.contains("consul"), "{e}");
    }

    #[test]
    fn kube_source() {
        let c = Config::parse(
            "x",
            "source: {kind: kube, kube: {kubeconfig: /etc/vecnet/kubeconfig, context: prod}}",
        )
        .unwrap();
        assert_eq!(c.source.kind, "kube");
        assert_eq!(c.source.kube.kubeconfig, "/etc/vecnet/kubeconfig");
        assert_eq!(c.source.kube.context, "prod");
        assert_eq!(
            c.ipam.node_id, 0,
            "0 = the Node's vecnet.io/node-id annotation, else 1 (resolved at start)"
        );
        let c = Config::parse("x", "source: {kind: kube}\nipam: {nodeID: 3}").unwrap();
        assert_eq!(c.source.kube.kubeconfig, "", "in-cluster or inferred");
        assert_eq!(c.ipam.node_id, 3);
        let e = Config::parse("x", "source: {kind: kube, kube: {kubeconfig: ' /x'}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.kube.kubeconfig"), "{e}");
        let e = Config::parse("x", "source: {kind: kube, kube: {token: x}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.kube") && e.contains("token"), "{e}");
    }

    #[test]
    fn etcd_tls_and_auth() {
        let c = Config::parse(
            "x",
            "source:\n  kind: etcd\n  etcd:\n    endpoints: ['https://etcd.kube-system:2379']\n    \
             dialTimeoutMs: 2500\n    username: vecnet\n    passwordFile: /run/secrets/etcd-pw\n    \
             tls: {caFile: /etc/vecnet/ca.pem, certFile: /etc/vecnet/c.pem, keyFile: /etc/vecnet/c.key}\n",
        )
        .unwrap();
        let e = &c.source.etcd;
        let tls = e.tls.as_ref().expect("tls section");
        assert_eq!(tls.ca_file.as_deref(), Some("/etc/vecnet/ca.pem".as_ref()));
        assert_eq!(tls.key_file.as_deref(), Some("/etc/vecnet/c.key".as_ref()));
        assert_eq!(tls.server_name, None);
        assert_eq!(e.username, "vecnet");
        assert_eq!(
            e.password_file.as_deref(),
            Some("/run/secrets/etcd-pw".as_ref())
        );
        assert_eq!(e.dial_timeout_ms, 2500);
        // The files are read when the connection is made, with their names in the error.
        let err = e.connection().unwrap_err().to_string();
        assert!(
            err.contains("source.etcd.passwordFile") && err.contains("/run/secrets/etcd-pw"),
            "{err}"
        );

        let bad = |etcd: &str| {
            Config::parse("c.yaml", &format!("source: {{kind: etcd, etcd: {etcd}}}"))
                .unwrap_err()
                .to_string()
        };
        let err = bad("{endpoints: [etcd:2379], tls: {caFile: /ca.pem, certFile: /c.pem}}");
        assert!(
            err.contains("source.etcd.tls.keyFile") && err.contains("/c.pem"),
            "{err}"
        );
        let err = bad("{endpoints: [etcd:2379], tls: {caFile: /ca.pem, keyFile: /c.key}}");
        assert!(err.contains("source.etcd.tls.certFile"), "{err}");
        let err = bad("{endpoints: ['https://etcd:2379']}");
        assert!(
            err.contains("source.etcd.tls.caFile"),
            "https implies TLS: {err}"
        );
        let err = bad("{endpoints: ['10.0.0.5:2379'], tls: {caFile: /ca.pem}}");
        assert!(err.contains("source.etcd.tls.serverName"), "{err}");
        let err = bad("{endpoints: ['http://etcd:2379'], tls: {caFile: /ca.pem}}");
        assert!(err.contains("plain http://"), "{err}");
        let err = bad("{username: root}");
        assert!(err.contains("source.etcd.passwordFile"), "{err}");
        let err = bad("{username: root, password: x, passwordFile: /pw}");
        assert!(err.contains("exclusive"), "{err}");
        let err = bad("{passwordFile: /pw}");
        assert!(err.contains("source.etcd.username"), "{err}");
        let err = bad("{tls: {caFile: /ca.pem, insecure: true}}");
        assert!(err.contains("insecure"), "unknown keys are refused: {err}");

        // Inline password (Contiv's etcd.conf had one) and an IP endpoint with a server name.
        let c = Config::parse(
            "x",
            "source: {kind: etcd, etcd: {endpoints: ['10.0.0.5:2379'], username: root, \
             password: pw, tls: {caFile: /ca.pem, serverName: etcd.local}}}",
        )
        .unwrap();
        assert_eq!(c.source.etcd.password, "pw");
        let err = c.source.etcd.connection().unwrap_err().to_string();
        assert!(err.contains("CA file /ca.pem"), "{err}");
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = Config::parse("c.yaml", "interfaces: {host: {colour: red}}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml") && e.contains("interfaces.host") && e.contains("colour"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "interfaces: {host: {mac: nope}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("interfaces.host.mac"), "{e}");
        let e = Config::parse("c.yaml", "ipam: {podSubnetCIDR: banana}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("podSubnetCIDR"), "{e}");
    }
}
