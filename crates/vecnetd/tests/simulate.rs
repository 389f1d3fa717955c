//! `vecnetd simulate` as a user runs it: golden traces of the L3 flows, the seed's L3 lines, and
//! error handling of bad scenarios.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vecnetd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vecnetd"))
        .args(args)
        .output()
        .expect("run vecnetd")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "vecnetd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Golden files are re-written with `VECNET_BLESS=1 cargo test -p vecnetd --test simulate`;
/// review the diff before committing them.
fn check_golden(name: &str) {
    let out = vecnetd(&["simulate", "--scenario", name]);
    let got = json(&out);
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("VECNET_BLESS").is_some() {
        std::fs::write(&path, String::from_utf8_lossy(&out.stdout).as_bytes()).unwrap();
        return;
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        got["trace"].as_str().unwrap(),
        want["trace"].as_str().unwrap(),
        "{name}: trace"
    );
    assert_eq!(got["tx"], want["tx"], "{name}: tx");
    assert_eq!(got["drops"], want["drops"], "{name}: drops");
}

#[test]
fn golden_pod_to_host() {
    check_golden("pod-to-host");
}

#[test]
fn golden_host_to_pod() {
    check_golden("host-to-pod");
}

#[test]
fn golden_pod_to_pod() {
    check_golden("pod-to-pod");
}

#[test]
fn golden_ping_gateway() {
    check_golden("ping-gateway");
}

/// The request of POD_TO_SERVICE_HOST.md without its Service: `virtio-input`, `ethernet-input`
/// and every line from `ip4-lookup` on are the seed's verbatim (the seed's packet is translated to
/// 10.20.0.2:8080 before `ip4-lookup`); `ip4-input` shows 10.20.0.2:8080 where the seed, before
/// NAT, shows the Service. `dpo-idx` is a run-time number and is normalised; the timestamp origin
/// is fixed by `--clock`.
const SEED_REQUEST_L3: &str = "\
02:54:30:091783: virtio-input
  virtio: hw_if_index 6 next-index 4 vring 0 len 74
    hdr: flags 0x00 gso_type 0x00 hdr_len 0 gso_size 0 csum_start 0 csum_offset 0 num_buffers 1
02:54:30:091784: ethernet-input
  IP4: 00:00:00:00:00:02 -> 02:fe:16:3f:5f:0f
02:54:30:091785: ip4-input
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 64, length 60, checksum 0xc6ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095
02:54:30:091786: nat44-out2in
  NAT44_OUT2IN: sw_if_index 6, next index 1, session index -1
02:54:30:091787: ip4-lookup
  fib 0 dpo-idx 3 flow hash: 0x00000000
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 64, length 60, checksum 0xc6ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095
02:54:30:091788: ip4-rewrite
  tx_sw_if_index 2 dpo-idx 3 : ipv4 via 172.30.1.2 tap0: 3e1b702d4d510123456789420800 flow hash: 0x00000000
  00000000: 3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a14
  00000020: 0002b4e61f90ba5bf36d00000000a002721090950000020405b40402
02:54:30:091789: tap0-output
  tap0
  IP4: 01:23:45:67:89:42 -> 3e:1b:70:2d:4d:51
  TCP: 10.1.1.3 -> 10.20.0.2
    tos 0x00, ttl 63, length 60, checksum 0xc7ee
    fragment id 0x5eb4, flags DONT_FRAGMENT
  TCP: 46310 -> 8080
    seq. 0xba5bf36d ack 0x00000000
    flags 0x02 SYN, tcp header: 40 bytes
    window 29200, checksum 0x9095
";

fn normalise_dpo(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("dpo-idx ") {
            Some(i) => {
                let rest = &l[i + 8..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                format!("{}dpo-idx N{}", &l[..i], &rest[end..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn seed_lines_for_l3_nodes_match_byte_for_byte() {
    let out = vecnetd(&[
        "simulate",
        "--scenario",
        "pod-to-host",
        "--clock",
        "02:54:30.091783",
    ]);
    let v = json(&out);
    let trace = v["trace"].as_str().unwrap();
    let packet1 = trace
        .split("Packet 1\n\n")
        .nth(1)
        .and_then(|t| t.split("\n\nPacket 2").next())
        .unwrap();
    assert_eq!(
        normalise_dpo(packet1),
        normalise_dpo(SEED_REQUEST_L3.trim_end())
    );
    // The header line, as VPP prints it.
    assert!(trace.starts_with(
        "------------------- Start of thread 0 vpp_main -------------------\nPacket 1\n\n"
    ));
    assert!(
        trace.lines().all(|l| !l.ends_with(' ')),
        "no trailing spaces"
    );
    // What left on tap0 is the seed's rewritten frame (its first 60 bytes are the hex dump).
    let tx0 = v["tx"][0]["frame"].as_str().unwrap();
    assert!(tx0.starts_with("3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a140002b4e61f90ba5bf36d00000000a002721090950000020405b40402"));
    assert_eq!(v["tx"][0]["interface"], "tap0");
    assert_eq!(v["tx"][1]["interface"], "tap2");
}

#[test]
fn simulate_is_deterministic() {
    let a = vecnetd(&["simulate", "--scenario", "ping-gateway"]);
    let b = vecnetd(&["simulate", "--scenario", "ping-gateway"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
}

fn scenario_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vecnet-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A scenario error: non-zero exit (not a panic), a message naming the file, the key path and
/// the reason.
fn expect_error(name: &str, text: &str, needles: &[&str]) {
    let p = scenario_file(name, text);
    let out = vecnetd(&["simulate", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: exit code; stderr: {err}"
    );
    assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    assert!(!err.contains("panicked"), "{name}: panicked: {err}");
    assert!(err.contains(name), "{name}: file not named: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: {n:?} missing from: {err}");
    }
}

const TAP0: &str = "  - {name: tap0, kind: host, mac: \"01:23:45:67:89:42\", sw_if_index: 2}\n";

#[test]
fn unknown_key_is_named_with_its_path() {
    expect_error(
        "unknown-key.yaml",
        &format!("interfaces:\n{TAP0}  - {{name: tap2, kind: pod, ip: 10.1.1.3, colour: red}}\n"),
        &["interfaces[1]", "colour"],
    );
    expect_error(
        "unknown-top.yaml",
        &format!("interfaces:\n{TAP0}pakets: []\n"),
        &["pakets"],
    );
}

#[test]
fn bad_mac_is_named() {
    expect_error(
        "bad-mac.yaml",
        "interfaces:\n  - {name: tap0, kind: host, mac: \"01:23:45:67:89\"}\n",
        &["interfaces[0].mac", "invalid MAC address"],
    );
}

#[test]
fn bad_hex_is_named() {
    expect_error(
        "bad-hex.yaml",
        &format!("interfaces:\n{TAP0}packets:\n  - {{rx: tap0, frame: \"0g12\"}}\n"),
        &["packets[0].frame", "not hex"],
    );
    expect_error(
        "odd-hex.yaml",
        &format!("interfaces:\n{TAP0}packets:\n  - {{rx: tap0, frame: \"abc\"}}\n"),
        &["packets[0].frame", "odd number"],
    );
}

#[test]
fn unknown_interface_is_named() {
    expect_error(
        "unknown-if.yaml",
        &format!("interfaces:\n{TAP0}packets:\n  - {{rx: tap9, frame: \"00\"}}\n"),
        &["packets[0].rx", "tap9"],
    );
}

#[test]
fn other_scenario_errors() {
    expect_error(
        "bad-kind.yaml",
        "interfaces:\n  - {name: tap0, kind: router}\n",
        &["interfaces[0].kind", "router"],
    );
    expect_error("no-interfaces.yaml", "node: {id: 1}\n", &["interfaces"]);
    expect_error(
        "dup-index.yaml",
        &format!(
            "interfaces:\n{TAP0}  - {{name: tap2, kind: pod, ip: 10.1.1.3, sw_if_index: 2}}\n"
        ),
        &["interfaces[1].sw_if_index", "used twice"],
    );
    expect_error(
        "pod-no-ip.yaml",
        "interfaces:\n  - {name: tap2, kind: pod}\n",
        &["interfaces[0].ip", "pod IP"],
    );
    expect_error(
        "pod-bad-ip.yaml",
        "interfaces:\n  - {name: tap2, kind: pod, ip: 10.1.2.3}\n",
        &["interfaces[0].ip", "not a pod address"],
    );
    expect_error(
        "bad-node.yaml",
        "node: {id: 0}\ninterfaces: []\n",
        &["node.id"],
    );
    expect_error(
        "bad-object.yaml",
        &format!("interfaces:\n{TAP0}objects:\n  - {{kind: Deployment, metadata: {{name: x}}}}\n"),
        &["objects[0]: kind: unsupported kind", "Deployment"],
    );
    expect_error("not-yaml.yaml", "interfaces: [\n", &["not-yaml.yaml"]);
    let out = vecnetd(&["simulate", "/nonexistent/scenario.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/scenario.yaml"));
    let out = vecnetd(&["simulate", "--scenario", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pod-to-host"),
        "lists the built-ins"
    );
}

#[test]
fn services_render_and_bad_ports_are_warned_about() {
    let p = scenario_file(
        "objects.yaml",
        &format!(
            "interfaces:\n{TAP0}  - {{name: tap2, kind: pod, pod: default/client, ip: 10.1.1.3, mac: \"02:fe:16:3f:5f:0f\", sw_if_index: 6}}\n\
objects:\n\
  - {{apiVersion: v1, kind: Service, metadata: {{name: web, namespace: default}}, spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, protocol: TCP}}, {{name: sig, port: 9, protocol: SCTP}}]}}}}\n\
packets:\n  - {{rx: tap2, frame: \"{SYN_TO_SVC}\"}}\n"
        ),
    );
    let out = vecnetd(&["simulate", p.to_str().unwrap()]);
    let v = json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("Service default/web") && err.contains("SCTP"),
        "{err}"
    );
    // No endpoints: the SYN to the ClusterIP is rejected with ICMP port unreachable.
    assert_eq!(v["tx"][0]["interface"], "tap2");
    let trace = v["trace"].as_str().unwrap();
    assert!(
        trace.contains("NAT44_OUT2IN: sw_if_index 6, next index 2, session index -1"),
        "{trace}"
    );
    assert!(
        trace.contains("ICMP destination_unreachable port_unreachable"),
        "{trace}"
    );
}

/// SYN 10.1.1.3:46310 -> 10.96.0.10:80 (TCP checksum not verified on this path).
const SYN_TO_SVC: &str = "02fe163f5f0f00000000000208004500003c5eb440004006c69a0a0101030a60000ab4e60050ba5bf36d00000000a0027210d22d0000020405b40402080a3b8e0f220000000001030307";

#[test]
fn malformed_frames_are_dropped_and_reported() {
    let p = scenario_file(
        "drops.yaml",
        &format!(
            "interfaces:\n{TAP0}packets:\n  - {{rx: tap0, frame: \"0123456789423e1b702d4d51\"}}\n  - {{rx: tap0, frame: \"0123456789423e1b702d4d5186dd6000\"}}\n  - {{rx: tap0, frame: \"0123456789423e1b702d4d5108004500001400004000400600000a1400020a010103\"}}\n"
        ),
    );
    let v = json(&vecnetd(&["simulate", p.to_str().unwrap()]));
    let drops: Vec<(String, String)> = v["drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["node"].as_str().unwrap().to_string(),
                d["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        drops,
        vec![
            (
                "ethernet-input".to_string(),
                "ethernet frame too short".to_string()
            ),
            ("ethernet-input".to_string(), "ip6 not enabled".to_string()),
            ("ip4-input".to_string(), "bad ip4 checksum".to_string()),
        ]
    );
    assert!(v["trace"]
        .as_str()
        .unwrap()
        .contains("error-drop\n  ip4-input: bad ip4 checksum"));
}

/// Replaces run-time numbers (SYSTEM.md 13.1, gotcha 11) and timestamps, keeping `-1`
/// distinguishable from a real index.
fn normalise_runtime(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut l = line.to_string();
        // Timestamps: HH:MM:SS:uuuuuu at line start.
        if l.len() > 16
            && l.as_bytes()[2] == b':'
            && l.as_bytes()[5] == b':'
            && l.as_bytes()[8] == b':'
        {
            l = format!("T{}", &l[15..]);
        }
        for word in [
            "dpo-idx ",
            "next index ",
            "acl ",
            "rule ",
            "session index ",
            "session ",
        ] {
            let mut res = String::new();
            let mut rest = l.as_str();
            while let Some(i) = rest.find(word) {
                res.push_str(&rest[..i + word.len()]);
                rest = &rest[i + word.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if end > 0 {
                    res.push('N');
                }
                rest = &rest[end..];
            }
            res.push_str(rest);
            l = res;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn seed_trace_line_for_line() {
    let out = vecnetd(&[
        "simulate",
        "--scenario",
        "seed",
        "--clock",
        "02:54:30.091783",
    ]);
    let v = json(&out);
    let got = v["trace"].as_str().unwrap();
    let want = std::fs::read_to_string(golden_dir().join("seed.trace")).unwrap();
    assert_eq!(
        normalise_runtime(got.trim_end()),
        normalise_runtime(want.trim_end())
    );
    // The frames that leave are the seed's, byte for byte (first 60 bytes = its hex dumps).
    assert_eq!(v["tx"][0]["interface"], "tap0");
    assert!(v["tx"][0]["frame"].as_str().unwrap().starts_with(
        "3e1b702d4d5101234567894208004500003c5eb440003f06c7ee0a0101030a140002b4e61f90ba5bf36d00000000a002721090950000020405b40402"
    ));
    assert_eq!(v["tx"][1]["interface"], "tap2");
    assert!(v["tx"][1]["frame"].as_str().unwrap().starts_with(
        "00000000000202fe163f5f0f08004500003c000040003f0648fb0a68dd550a0101030050b4e657f7b0c7ba5bf36ea01271201c4d0000020405b40402"
    ));
    assert_eq!(v["drops"], serde_json::json!([]));
    // The values the scenario fixes match exactly: interface indices, -1 vs a session.
    assert!(got.contains("NAT44_OUT2IN: sw_if_index 6, next index 1, session index 0"));
    assert!(got.contains("NAT44_IN2OUT_FAST_PATH: sw_if_index 2, next index 3, session -1"));
    assert!(got.contains("NAT44_IN2OUT_SLOW_PATH: sw_if_index 2, next index 0, session 0"));
    assert!(got.contains("action: 3, match: acl -1 rule "));
}
