//! Per-packet ACL classification cost: the tuple-space classifier with 10, 100, 1 000 and
//! 10 000 rules whose only matching rule is the last but one (then a catch-all deny), and a
//! reflective-session hit. Each iteration classifies a batch of 1024 packets, so the reported
//! time / 1024 is the cost per packet (criterion also prints elements/s).
//!
//! The rules look like rendered NetworkPolicies (SYSTEM.md 7.3): random peer addresses as pod
//! /32s, ipBlock /24s and /16s or any; destination any or a /32; TCP, UDP or any protocol;
//! destination port exact, any, or an aligned block of 16. None of them matches the benchmark's
//! packets, so every packet walks to the late rule.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vecnet_acl::key::pkt_flags;
use vecnet_acl::{
    Acl, AclBinding, AclConfig, AclRule, AclState, AclTables, Action, Direction, PacketKey,
};

const BATCH: usize = 1024;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.u32()) * u64::from(n)) >> 32) as u32
    }
}

fn random_rule(rng: &mut Rng) -> AclRule {
    let mut r = AclRule::any(if rng.below(2) == 0 {
        Action::Permit
    } else {
        Action::Deny
    });
    // Sources in 10.128.0.0/9 never cover the packets' 10.1.1.3; a source of "any" gets a
    // destination in 192.168.0.0/16, which never covers the packets' 10.20.0.2.
    let src_any = rng.below(10) < 2;
    if !src_any {
        let len = [32u8, 32, 24, 16][rng.below(4) as usize];
        r.src = (Ipv4Addr::from(0x0a80_0000 | (rng.u32() & 0x007f_ffff)), len);
    }
    if src_any || rng.below(10) < 3 {
        let base = if src_any { 0xc0a8_0000 } else { 0x0a00_0000 };
        r.dst = (Ipv4Addr::from(base | (rng.u32() & 0xffff)), 32);
    }
    r.proto = [6u8, 6, 6, 17, 17, 0][rng.below(6) as usize];
    if r.proto != 0 {
        r.dst_ports = match rng.below(20) {
            0..=15 => {
                let p = 1 + rng.below(65000) as u16;
                (p, p)
            }
            16..=18 => (0, 65535),
            _ => {
                let p = (rng.below(4000) as u16) * 16;
                (p, p + 15)
            }
        };
    }
    r
}

/// `n` rules: `n - 2` random, the matching one, a catch-all deny.
fn config(n: usize, rng: &mut Rng) -> AclConfig {
    let mut rules: Vec<AclRule> = (0..n.saturating_sub(2)).map(|_| random_rule(rng)).collect();
    let mut hit = AclRule::any(Action::Permit);
    hit.src = (Ipv4Addr::new(10, 1, 1, 3), 32);
    hit.dst = (Ipv4Addr::new(10, 20, 0, 0), 16);
    hit.proto = 6;
    hit.dst_ports = (8080, 8080);
    rules.push(hit);
    rules.push(AclRule::any(Action::Deny));
    AclConfig {
        acls: vec![
            Acl {
                tag: "bench".into(),
                rules,
            },
            Acl {
                tag: "reflect".into(),
                rules: vec![AclRule::any(Action::PermitReflect)],
            },
        ],
        bindings: vec![
            AclBinding {
                sw_if_index: 1,
                input: vec![0],
                output: vec![],
            },
            AclBinding {
                sw_if_index: 2,
                input: vec![1],
                output: vec![],
            },
        ],
        max_sessions: 1 << 16,
        ..AclConfig::default()
    }
}

fn keys(rng: &mut Rng, sw_if_index: u32) -> Vec<PacketKey> {
    (0..BATCH)
        .map(|_| PacketKey {
            src: u32::from(Ipv4Addr::new(10, 1, 1, 3)),
            dst: u32::from(Ipv4Addr::new(10, 20, 0, 2)),
            sport: 1024 + rng.below(60000) as u16,
            dport: 8080,
            proto: 6,
            tcp_flags: 0x10,
            flags: pkt_flags::INPUT | pkt_flags::L4_VALID | pkt_flags::TCP_FLAGS_VALID,
            sw_if_index,
            icmp_id: 0,
        })
        .collect()
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("acl_classify_late_match");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut rng = Rng(7);
    let ks = keys(&mut rng, 1);
    for n in [10usize, 100, 1_000, 10_000] {
        let tables = AclTables::build(&config(n, &mut rng));
        let cl = tables.classifier(1, Direction::Input).unwrap();
        for k in &ks {
            let m = cl.classify(k).unwrap();
            assert_eq!(m.rule_index as usize, n - 2, "the late rule must match");
        }
        eprintln!(
            "{n} rules: {} shapes (hash probes at most per packet)",
            cl.shape_count()
        );
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let mut acc = 0u32;
                for k in &ks {
                    acc = acc.wrapping_add(
                        tables
                            .classify(1, Direction::Input, black_box(k))
                            .map_or(0, |m| m.rule_index),
                    );
                }
                acc
            })
        });
    }
    g.finish();
}

fn bench_session_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("acl_session_hit");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut rng = Rng(11);
    let tables = AclTables::build(&config(10, &mut rng));
    let mut st = AclState::new(&tables.config);
    st.sync(&tables, 0);
    // 10 000 flows with sessions; the batch hits 1024 of them.
    let mut flows = Vec::new();
    for i in 0..10_000u32 {
        let k = PacketKey {
            src: 0x0a01_0000 | (i >> 8),
            dst: 0x0a14_0000 | (i & 0xff),
            sport: 1024 + (i % 50_000) as u16,
            dport: 80,
            proto: 17,
            tcp_flags: 0,
            flags: pkt_flags::INPUT | pkt_flags::L4_VALID,
            sw_if_index: 2,
            icmp_id: 0,
        };
        assert_eq!(
            st.decide(&tables, &k, Direction::Input, 1, || false).action,
            2
        );
        flows.push(k);
    }
    let batch: Vec<PacketKey> = (0..BATCH)
        .map(|_| flows[rng.below(flows.len() as u32) as usize])
        .collect();
    g.bench_function("10k sessions", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in &batch {
                let v = st.decide(&tables, black_box(k), Direction::Input, 2, || false);
                acc = acc.wrapping_add(u32::from(v.action));
            }
            assert_eq!(acc, 3 * BATCH as u32);
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench_classify, bench_session_hit);
criterion_main!(benches);
