//! Prometheus metrics of `vecnetd` (SYSTEM.md 1.7, 10.2), served on `httpListen` at `/metrics`
//! in the OpenMetrics text format (`prometheus-client`).
//!
//! * `vecnet_network_programming_duration_seconds`: from the moment the agent saw an object
//!   change (a source event, a manifests file change) to the data plane running the snapshot
//!   that includes it — kube-proxy's `network_programming_duration_seconds` for vecnet. kube-proxy
//!   starts the clock at the EndpointSlice's `last-change-trigger-time` annotation (set by the
//!   controller, so it includes the API server and watch delays); vecnet starts it when the
//!   change reaches the agent, so the figure is vecnet's own share and works for every kind.
//! * Agent: render time, source state, warning events of objects that cannot be rendered.
//! * Data plane: interface packets and bytes, `show errors` counters, NAT and ACL sessions —
//!   copied from the data-plane thread at scrape time, between vectors.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use vecnet_vswitch::DataplaneStats;

/// Latencies kept raw for `vecnetctl stats` (percentiles without histogram interpolation).
const RECENT: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub node: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric; handles are cheap clones sharing the same atomics.
pub struct Metrics {
    registry: Registry,
    pub programming: Histogram,
    recent: Mutex<VecDeque<f64>>,
    programmed_total: AtomicU64,
    pub render_duration: Histogram,
    pub apply_duration: Histogram,
    pub source_connected: Gauge,
    pub source_resyncs: Counter,
    pub source_events: Family<KindLabels, Counter>,
    pub object_warnings: Family<ReasonLabels, Gauge>,
    pub warning_events: Family<ReasonLabels, Counter>,
    pub pods: Gauge,
    pub ipam_allocated: Gauge,
    pub ipam_capacity: Gauge,
    if_rx_packets: Family<InterfaceLabels, Counter>,
    if_rx_bytes: Family<InterfaceLabels, Counter>,
    if_tx_packets: Family<InterfaceLabels, Counter>,
    if_tx_bytes: Family<InterfaceLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    nat_sessions: Gauge,
    nat_static_mappings: Gauge,
    acl_sessions: Gauge,
    dataplane_applies: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut r = Registry::default();
        // 0.25 ms … 65 s: vecnet programs in milliseconds, a 10 k-object resync in seconds.
        let programming = Histogram::new(exponential_buckets(0.000_25, 2.0, 19));
        r.register(
            "vecnet_network_programming_duration_seconds",
            "Time from an object change seen by the agent to the data plane running it",
            programming.clone(),
        );
        let render_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        r.register(
            "vecnet_render_duration_seconds",
            "Time the agent takes to render the desired data-plane configuration",
            render_duration.clone(),
        );
        let apply_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        r.register(
            "vecnet_dataplane_apply_duration_seconds",
            "Time the data-plane thread takes to compile and switch to a new snapshot",
            apply_duration.clone(),
        );
        let source_connected = Gauge::default();
        r.register(
            "vecnet_source_connected",
            "1 when the state source (etcd, Kubernetes API) is reachable; always 1 for manifests",
            source_connected.clone(),
        );
        let source_resyncs = Counter::default();
        r.register(
            "vecnet_source_resyncs",
            "Full snapshots received from the state source",
            source_resyncs.clone(),
        );
        let source_events = Family::<KindLabels, Counter>::default();
        r.register(
            "vecnet_source_events",
            "Single-object changes received from the state source, by kind",
            source_events.clone(),
        );
        let object_warnings = Family::<ReasonLabels, Gauge>::default();
        r.register(
            "vecnet_object_warnings",
            "Objects (or parts of them) that cannot be rendered now, by reason",
            object_warnings.clone(),
        );
        let warning_events = Family::<ReasonLabels, Counter>::default();
        r.register(
            "vecnet_warning_events",
            "Warning events raised (an object became unrenderable), by reason",
            warning_events.clone(),
        );
        let pods = Gauge::default();
        r.register("vecnet_pods", "Pods attached through CNI", pods.clone());
        let ipam_allocated = Gauge::default();
        r.register(
            "vecnet_ipam_allocated_addresses",
            "Pod addresses allocated on this node",
            ipam_allocated.clone(),
        );
        let ipam_capacity = Gauge::default();
        r.register(
            "vecnet_ipam_capacity_addresses",
            "Pod addresses this node can allocate",
            ipam_capacity.clone(),
        );
        let if_rx_packets = Family::<InterfaceLabels, Counter>::default();
        r.register(
            "vecnet_interface_rx_packets",
            "Packets received on a data-plane interface",
            if_rx_packets.clone(),
        );
        let if_rx_bytes = Family::<InterfaceLabels, Counter>::default();
        r.register(
            "vecnet_interface_rx_bytes",
            "Bytes received on a data-plane interface",
            if_rx_bytes.clone(),
        );
        let if_tx_packets = Family::<InterfaceLabels, Counter>::default();
        r.register(
            "vecnet_interface_tx_packets",
            "Packets sent on a data-plane interface",
            if_tx_packets.clone(),
        );
        let if_tx_bytes = Family::<InterfaceLabels, Counter>::default();
        r.register(
            "vecnet_interface_tx_bytes",
            "Bytes sent on a data-plane interface",
            if_tx_bytes.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        r.register(
            "vecnet_node_errors",
            "Graph node error counters (`show errors`), drops and events",
            errors.clone(),
        );
        let nat_sessions = Gauge::default();
        r.register(
            "vecnet_nat44_sessions",
            "NAT44 sessions in the session table",
            nat_sessions.clone(),
        );
        let nat_static_mappings = Gauge::default();
        r.register(
            "vecnet_nat44_static_mappings",
            "NAT44 static mappings (Service ports) programmed",
            nat_static_mappings.clone(),
        );
        let acl_sessions = Gauge::default();
        r.register(
            "vecnet_acl_sessions",
            "Reflective ACL sessions in the session table",
            acl_sessions.clone(),
        );
        let dataplane_applies = Counter::default();
        r.register(
            "vecnet_dataplane_applies",
            "Configurations the data plane switched to (unchanged renders are not applied)",
            dataplane_applies.clone(),
        );
        Arc::new(Self {
            registry: r,
            programming,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            programmed_total: AtomicU64::new(0),
            render_duration,
            apply_duration,
            source_connected,
            source_resyncs,
            source_events,
            object_warnings,
            warning_events,
            pods,
            ipam_allocated,
            ipam_capacity,
            if_rx_packets,
            if_rx_bytes,
            if_tx_packets,
            if_tx_bytes,
            errors,
            nat_sessions,
            nat_static_mappings,
            acl_sessions,
            dataplane_applies,
        })
    }

    /// Records that the changes seen at `seen` are live now.
    pub fn programmed(&self, seen: &[Instant]) {
        if seen.is_empty() {
            return;
        }
        let now = Instant::now();
        self.programmed_total
            .fetch_add(seen.len() as u64, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for s in seen {
            let d = now.saturating_duration_since(*s).as_secs_f64();
            self.programming.observe(d);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(d);
        }
    }

    /// Copies the data plane's counters (absolute values) into the families.
    pub fn set_dataplane(&self, st: &DataplaneStats) {
        for fam in [
            &self.if_rx_packets,
            &self.if_rx_bytes,
            &self.if_tx_packets,
            &self.if_tx_bytes,
        ] {
            fam.clear();
        }
        for i in &st.interfaces {
            let l = InterfaceLabels {
                interface: i.name.clone(),
            };
            let set = |f: &Family<InterfaceLabels, Counter>, v: u64| {
                f.get_or_create(&l).inner().store(v, Ordering::Relaxed);
            };
            set(&self.if_rx_packets, i.rx_packets);
            set(&self.if_rx_bytes, i.rx_bytes);
            set(&self.if_tx_packets, i.tx_packets);
            set(&self.if_tx_bytes, i.tx_bytes);
        }
        self.errors.clear();
        for e in &st.errors {
            self.errors
                .get_or_create(&ErrorLabels {
                    node: e.node.clone(),
                    reason: e.reason.to_string(),
                })
                .inner()
                .store(e.count, Ordering::Relaxed);
        }
        self.nat_sessions.set(gauge(st.nat_sessions));
        self.nat_static_mappings.set(gauge(st.nat_static_mappings));
        self.acl_sessions.set(gauge(st.acl_sessions));
        self.dataplane_applies
            .inner()
            .store(st.applies, Ordering::Relaxed);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            return format!("# encoding failed: {e}\n# EOF\n");
        }
        out
    }

    /// `vecnetctl stats`: programming-latency percentiles over the recent changes (the last
    /// `last` of them, at most the 4096 kept).
    pub fn programming_summary(&self, last: Option<usize>) -> String {
        let mut v: Vec<f64> = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let skip = recent.len().saturating_sub(last.unwrap_or(RECENT));
            recent.iter().skip(skip).copied().collect()
        };
        let total = self.programmed_total.load(Ordering::Relaxed);
        if v.is_empty() {
            return format!(
                "Network programming latency: no change programmed yet ({total} total)\n"
            );
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] * 1e3
        };
        format!(
            "Network programming latency over the last {} changes ({} total):\n  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
            v.len(),
            total,
            q(0.50),
            q(0.90),
            q(0.99),
            q(1.0)
        )
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vecnet_vswitch::{ErrorStats, InterfaceStats};

    #[test]
    fn exposes_programming_latency_and_dataplane_counters() {
        let m = Metrics::new();
        let t = Instant::now() - Duration::from_millis(3);
        m.programmed(&[t, t]);
        m.set_dataplane(&DataplaneStats {
            interfaces: vec![InterfaceStats {
                name: "tap0".into(),
                sw_if_index: 2,
                rx_packets: 7,
                rx_bytes: 700,
                tx_packets: 5,
                tx_bytes: 500,
            }],
            errors: vec![ErrorStats {
                node: "ip4-input".into(),
                reason: "ip4 ttl <= 1",
                count: 3,
            }],
            nat_sessions: 4,
            nat_static_mappings: 2,
            acl_sessions: 1,
            applies: 9,
        });
        let out = m.encode();
        assert!(
            out.contains("vecnet_network_programming_duration_seconds_count 2"),
            "{out}"
        );
        assert!(
            out.contains("vecnet_interface_rx_packets_total{interface=\"tap0\"} 7"),
            "{out}"
        );
        assert!(
            out.contains("vecnet_node_errors_total{node=\"ip4-input\",reason=\"ip4 ttl <= 1\"} 3"),
            "{out}"
        );
        assert!(out.contains("vecnet_nat44_sessions 4"), "{out}");
        assert!(out.contains("vecnet_dataplane_applies_total 9"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
        let s = m.programming_summary(None);
        assert!(m.programming_summary(Some(1)).contains("last 1 changes"));
        assert!(s.contains("last 2 changes"), "{s}");
        // 3 ms ago, measured now: p50 at least 3 ms.
        let p50: f64 = s
            .split("p50 ")
            .nth(1)
            .and_then(|x| x.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0);
        assert!(p50 >= 3.0, "{s}");
    }

    #[test]
    fn interfaces_that_went_away_are_not_exported() {
        let m = Metrics::new();
        let one = |name: &str| InterfaceStats {
            name: name.into(),
            sw_if_index: 4,
            rx_packets: 1,
            rx_bytes: 1,
            tx_packets: 1,
            tx_bytes: 1,
        };
        m.set_dataplane(&DataplaneStats {
            interfaces: vec![one("tap0"), one("tap1")],
            ..Default::default()
        });
        m.set_dataplane(&DataplaneStats {
            interfaces: vec![one("tap0")],
            ..Default::default()
        });
        let out = m.encode();
        assert!(out.contains("interface=\"tap0\""), "{out}");
        assert!(!out.contains("interface=\"tap1\""), "{out}");
    }
}
