//! IPAM against SYSTEM.md section 2 (worked examples in 2.5, contivCIDR in 2.6).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use vecnet_agent::ipam::{
    bvi_mac, fnv1a32, pod_macs, Cidr, IpamConfig, IpamError, NodeIpam, PodAllocator,
    PodAllocatorState, FIXED_POD_MAC,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn with_gateway(gw: &str) -> IpamConfig {
    IpamConfig {
        default_gateway: Some(ip(gw)),
        ..IpamConfig::default()
    }
}

fn node(n: u32) -> NodeIpam {
    IpamConfig::default().for_node(n).unwrap()
}

// ---------------------------------------------------------------- Cidr

#[test]
fn cidr_parse_display_and_helpers() {
    let c = cidr("192.168.16.7/24");
    assert_eq!(c.addr, ip("192.168.16.7"));
    assert_eq!(c.len, 24);
    assert_eq!(c.to_string(), "192.168.16.7/24");
    assert_eq!(c.network(), ip("192.168.16.0"));
    assert_eq!(c.broadcast(), ip("192.168.16.255"));
    assert_eq!(c.mask(), 0xffff_ff00);
    assert!(c.contains(ip("192.168.16.255")));
    assert!(!c.contains(ip("192.168.17.0")));
    assert_eq!(c.host(0), Some(ip("192.168.16.0")));
    assert_eq!(c.host(1), Some(ip("192.168.16.1")));
    assert_eq!(c.host(255), Some(ip("192.168.16.255")));
    assert_eq!(c.host(256), None);
    assert_eq!(c.normalized(), cidr("192.168.16.0/24"));
    assert_eq!(cidr("10.0.0.0/8").subnet(16, 5), Some(cidr("10.5.0.0/16")));
    assert_eq!(cidr("10.0.0.0/8").subnet(16, 256), None);
    assert_eq!(cidr("10.0.0.0/8").subnet(7, 0), None);
    assert_eq!(cidr(" 1.2.3.4/32 ").host(0), Some(ip("1.2.3.4")));
    assert_eq!(cidr("0.0.0.0/0").mask(), 0);
    assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
    assert!(!cidr("10.0.0.0/16").overlaps(&cidr("10.1.0.0/16")));
}

#[test]
fn cidr_parse_errors_are_specific() {
    for (s, want) in [
        ("10.1.0.0", "missing"),
        ("10.1.0/16", "bad IPv4 address"),
        ("10.1.0.0/", "bad prefix length"),
        ("10.1.0.0/+8", "bad prefix length"),
        ("10.1.0.0/x", "bad prefix length"),
        ("10.1.0.0/33", "larger than 32"),
        ("10.1.0.0/99999999999", "bad prefix length"),
    ] {
        let err = s.parse::<Cidr>().unwrap_err().to_string();
        assert!(err.contains(want), "{s}: {err}");
    }
}

#[test]
fn cidr_serde_is_a_string() {
    let c = cidr("10.1.0.0/16");
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.1.0.0/16\"");
    assert_eq!(serde_json::from_str::<Cidr>("\"10.1.0.0/16\"").unwrap(), c);
    let err = serde_json::from_str::<Cidr>("\"10.1.0.0/40\"").unwrap_err();
    assert!(err.to_string().contains("10.1.0.0/40"), "{err}");
}

// ---------------------------------------------------------------- config

#[test]
fn defaults_are_contiv_defaults() {
    let d = IpamConfig::default();
    assert_eq!(d.pod_subnet_cidr, cidr("10.1.0.0/16"));
    assert_eq!(d.pod_subnet_one_node_prefix_len, 24);
    assert_eq!(d.vpp_host_subnet_cidr, cidr("172.30.0.0/16"));
    assert_eq!(d.vpp_host_subnet_one_node_prefix_len, 24);
    assert_eq!(d.node_interconnect_cidr, cidr("192.168.16.0/24"));
    assert_eq!(d.vxlan_cidr, cidr("192.168.30.0/24"));
    assert_eq!(d.service_cidr, cidr("10.96.0.0/12"));
    assert_eq!(d.default_gateway, None);
    assert_eq!(d.contiv_cidr, None);
    assert_eq!(d.node_id, 0);
    assert!(!d.node_interconnect_dhcp);
    d.validate().unwrap();
    // An empty section is the defaults.
    assert_eq!(serde_yaml_ng::from_str::<IpamConfig>("{}").unwrap(), d);
    assert_eq!(serde_json::from_str::<IpamConfig>("{}").unwrap(), d);
}

#[test]
fn spec_config_shape_parses() {
    // The `ipam` line of the config shape in SYSTEM.md section 1.
    let yaml = "{ nodeID: 0, podSubnetCIDR: 10.1.0.0/16, podSubnetOneNodePrefixLen: 24,
        vppHostSubnetCIDR: 172.30.0.0/16, vppHostSubnetOneNodePrefixLen: 24,
        nodeInterconnectCIDR: 192.168.16.0/24, nodeInterconnectDHCP: false,
        vxlanCIDR: 192.168.30.0/24, serviceCIDR: 10.96.0.0/12, defaultGateway: \"\" }";
    let c: IpamConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(c, IpamConfig::default());

    let c: IpamConfig =
        serde_yaml_ng::from_str("defaultGateway: 192.168.16.100\nnodeID: 3\ncontivCIDR: \"\"")
            .unwrap();
    assert_eq!(c.default_gateway, Some(ip("192.168.16.100")));
    assert_eq!(c.node_id, 3);
    assert_eq!(c.contiv_cidr, None);
}

#[test]
fn config_serde_round_trip_uses_spec_names() {
    let c = IpamConfig {
        default_gateway: Some(ip("192.168.16.100")),
        contiv_cidr: Some(cidr("10.128.0.0/14")),
        node_id: 7,
        ..IpamConfig::default()
    };
    let json = serde_json::to_value(&c).unwrap();
    for key in [
        "podSubnetCIDR",
        "podSubnetOneNodePrefixLen",
        "vppHostSubnetCIDR",
        "vppHostSubnetOneNodePrefixLen",
        "nodeInterconnectCIDR",
        "nodeInterconnectDHCP",
        "vxlanCIDR",
        "serviceCIDR",
        "defaultGateway",
        "contivCIDR",
        "nodeID",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["podSubnetCIDR"], "10.1.0.0/16");
    assert_eq!(json["defaultGateway"], "192.168.16.100");
    let back: IpamConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
    let yaml = serde_yaml_ng::to_string(&IpamConfig::default()).unwrap();
    assert!(!yaml.contains("defaultGateway"), "{yaml}");
    assert_eq!(
        serde_yaml_ng::from_str::<IpamConfig>(&yaml).unwrap(),
        IpamConfig::default()
    );
}

#[test]
fn bad_values_name_the_knob() {
    for (doc, knob) in [
        ("podSubnetCIDR: 10.1.0.0/33", "podSubnetCIDR"),
        ("vppHostSubnetCIDR: 172.30.0.0", "vppHostSubnetCIDR"),
        (
            "nodeInterconnectCIDR: 192.168.16/24",
            "nodeInterconnectCIDR",
        ),
        ("vxlanCIDR: foo", "vxlanCIDR"),
        ("serviceCIDR: 10.96.0.0/abc", "serviceCIDR"),
        ("contivCIDR: 10.128.0.0/", "contivCIDR"),
        ("defaultGateway: 192.168.16", "defaultGateway"),
        ("podSubnetOneNodePrefixLen: 33", "podSubnetOneNodePrefixLen"),
        (
            "vppHostSubnetOneNodePrefixLen: 300",
            "vppHostSubnetOneNodePrefixLen",
        ),
        ("nodeID: 4294967296", "nodeID"),
    ] {
        let err = serde_yaml_ng::from_str::<IpamConfig>(doc)
            .unwrap_err()
            .to_string();
        assert!(err.contains(knob), "yaml {doc:?}: {err}");
        // JSON errors carry no path of their own; the knob must still be named.
        let (k, v) = doc.split_once(": ").unwrap();
        let json = match v.parse::<u64>() {
            Ok(n) => format!("{{\"{k}\": {n}}}"),
            Err(_) => format!("{{\"{k}\": \"{v}\"}}"),
        };
        let err = serde_json::from_str::<IpamConfig>(&json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(knob), "json {json}: {err}");
    }
}

#[test]
fn unknown_knob_is_rejected() {
    let err = serde_yaml_ng::from_str::<IpamConfig>("podSubnetCidr: 10.1.0.0/16")
        .unwrap_err()
        .to_string();
    assert!(err.contains("podSubnetCidr"), "{err}");
}

#[test]
fn validate_checks_lengths_and_overlaps() {
    let check = |c: IpamConfig, knob: &str| {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(knob), "expected {knob}: {err}");
    };
    check(
        IpamConfig {
            pod_subnet_one_node_prefix_len: 15,
            ..IpamConfig::default()
        },
        "podSubnetOneNodePrefixLen",
    );
    check(
        IpamConfig {
            pod_subnet_one_node_prefix_len: 30,
            ..IpamConfig::default()
        },
        "podSubnetOneNodePrefixLen",
    );
    check(
        IpamConfig {
            vpp_host_subnet_one_node_prefix_len: 31,
            ..IpamConfig::default()
        },
        "vppHostSubnetOneNodePrefixLen",
    );
    check(
        IpamConfig {
            node_interconnect_cidr: cidr("192.168.16.0/31"),
            ..IpamConfig::default()
        },
        "nodeInterconnectCIDR",
    );
    check(
        IpamConfig {
            vxlan_cidr: cidr("192.168.30.0/32"),
            ..IpamConfig::default()
        },
        "vxlanCIDR",
    );
    check(
        IpamConfig {
            service_cidr: cidr("10.0.0.0/8"),
            ..IpamConfig::default()
        },
        "serviceCIDR",
    );
    check(
        IpamConfig {
            vxlan_cidr: cidr("192.168.16.0/24"),
            ..IpamConfig::default()
        },
        "vxlanCIDR",
    );
    // Hand-built Cidr with an impossible length.
    check(
        IpamConfig {
            pod_subnet_cidr: Cidr {
                addr: ip("10.1.0.0"),
                len: 40,
            },
            ..IpamConfig::default()
        },
        "podSubnetCIDR",
    );
    // nodeID set: that node must be derivable.
    check(
        IpamConfig {
            node_id: 257,
            ..IpamConfig::default()
        },
        "nodeID",
    );
    IpamConfig {
        node_id: 2,
        ..IpamConfig::default()
    }
    .validate()
    .unwrap();
}

// ---------------------------------------------------------------- 2.5 worked examples

#[test]
fn two_node_table() {
    let cfg = with_gateway("192.168.16.100");
    let n1 = cfg.for_node(1).unwrap();
    let n2 = cfg.for_node(2).unwrap();
    let want = [
        (
            &n1,
            1,
            "10.1.1.0/24",
            "10.1.1.1",
            ("10.1.1.2", "10.1.1.253"),
            "10.1.1.254",
            "172.30.1.0/24",
            "172.30.1.1",
            "172.30.1.2",
            "192.168.16.1/24",
            "192.168.30.1/24",
        ),
        (
            &n2,
            2,
            "10.1.2.0/24",
            "10.1.2.1",
            ("10.1.2.2", "10.1.2.253"),
            "10.1.2.254",
            "172.30.2.0/24",
            "172.30.2.1",
            "172.30.2.2",
            "192.168.16.2/24",
            "192.168.30.2/24",
        ),
    ];
    for (n, id, pod, gw, (first, last), nat, host, tap0, vpp1, node_ip, bvi) in want {
        assert_eq!(n.node_id, id);
        assert_eq!(n.pod_subnet.to_string(), pod);
        assert_eq!(n.pod_gateway, ip(gw));
        assert_eq!(n.pod_ip_range(), Some((ip(first), ip(last))));
        assert_eq!(n.nat_loopback, ip(nat));
        assert_eq!(n.host_subnet.to_string(), host);
        assert_eq!(n.host_vpp_ip, ip(tap0));
        assert_eq!(n.host_linux_ip, ip(vpp1));
        assert_eq!(n.node_ip.to_string(), node_ip);
        assert_eq!(n.bvi_ip.to_string(), bvi);
        assert_eq!(n.service_cidr.to_string(), "10.96.0.0/12");
        assert_eq!(n.pod_cidr.to_string(), "10.1.0.0/16");
    }
    assert_eq!(bvi_mac(1), [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x01]);
    assert_eq!(bvi_mac(2), [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x02]);
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.1.2.7")), Some(2));
}

#[test]
fn node_ipam_serializes_for_the_api() {
    let json = serde_json::to_value(node(1)).unwrap();
    assert_eq!(json["podSubnet"], "10.1.1.0/24");
    assert_eq!(json["natLoopback"], "10.1.1.254");
    assert_eq!(serde_json::from_value::<NodeIpam>(json).unwrap(), node(1));
}

#[test]
fn gateway_skip_inside_subnet() {
    let cfg = with_gateway("192.168.16.100");
    let node_ip = |n| cfg.for_node(n).unwrap().node_ip;
    assert_eq!(node_ip(99), cidr("192.168.16.99/24"));
    assert_eq!(node_ip(100), cidr("192.168.16.101/24"));
    assert_eq!(node_ip(101), cidr("192.168.16.102/24"));
    assert_eq!(node_ip(253), cidr("192.168.16.254/24"));
    // .255 would be the broadcast address.
    let err = cfg.for_node(254).unwrap_err().to_string();
    assert!(
        err.contains("nodeInterconnectCIDR") && err.contains("defaultGateway"),
        "{err}"
    );
    // The BVI address has no gateway skip.
    assert_eq!(cfg.for_node(100).unwrap().bvi_ip, cidr("192.168.30.100/24"));
}

#[test]
fn gateway_outside_subnet_is_not_skipped() {
    // Numerically below every node address, but not in the node subnet:
    // Contiv would have skipped it (gotcha 9).
    for gw in ["192.168.15.1", "10.0.0.1"] {
        let cfg = with_gateway(gw);
        for n in [1, 5, 100, 254] {
            assert_eq!(
                cfg.for_node(n).unwrap().node_ip.addr,
                Ipv4Addr::new(192, 168, 16, n as u8),
                "gateway {gw}, node {n}"
            );
        }
    }
}

#[test]
fn node_256_wraps_and_257_is_rejected() {
    // Node 256 has no host address in the default /24 node subnets, so give
    // those ranges room to isolate the slice rule.
    let wide = IpamConfig {
        node_interconnect_cidr: cidr("192.168.0.0/20"),
        vxlan_cidr: cidr("192.168.32.0/20"),
        ..IpamConfig::default()
    };
    let n = wide.for_node(256).unwrap();
    assert_eq!(n.pod_subnet, cidr("10.1.0.0/24"));
    assert_eq!(n.pod_gateway, ip("10.1.0.1"));
    assert_eq!(n.nat_loopback, ip("10.1.0.254"));
    assert_eq!(n.host_subnet, cidr("172.30.0.0/24"));
    assert_eq!(n.node_ip, cidr("192.168.1.0/20"));
    assert_eq!(wide.node_id_of_pod_ip(ip("10.1.0.9")), Some(0));

    let err = wide.for_node(257).unwrap_err();
    assert!(matches!(
        err,
        IpamError::NodeIdTooLarge {
            node_id: 257,
            slices: 256,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("podSubnetCIDR") && msg.contains("podSubnetOneNodePrefixLen"),
        "{msg}"
    );

    let msg = IpamConfig::default().for_node(256).unwrap_err().to_string();
    assert!(msg.contains("nodeInterconnectCIDR"), "{msg}");
}

#[test]
fn node_zero_is_rejected() {
    let err = IpamConfig::default().for_node(0).unwrap_err();
    assert_eq!(err, IpamError::NodeIdZero);
    assert!(err.to_string().contains("nodeID"));
}

#[test]
fn node_id_of_pod_ip() {
    let cfg = IpamConfig::default();
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.1.2.7")), Some(2));
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.1.255.253")), Some(255));
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.2.2.7")), None);
    assert_eq!(cfg.node_id_of_pod_ip(ip("172.30.2.7")), None);
    for n in 1..=254 {
        let ipam = cfg.for_node(n).unwrap();
        assert_eq!(cfg.node_id_of_pod_ip(ipam.pod_gateway), Some(n));
    }
    // Node 255 would have the broadcast address of the default /24 node subnet.
    let msg = cfg.for_node(255).unwrap_err().to_string();
    assert!(msg.contains("nodeInterconnectCIDR"), "{msg}");
}

#[test]
fn host_bits_in_cluster_cidr_are_ignored() {
    let cfg = IpamConfig {
        pod_subnet_cidr: cidr("10.1.7.9/16"),
        ..IpamConfig::default()
    };
    let n = cfg.for_node(3).unwrap();
    assert_eq!(n.pod_subnet, cidr("10.1.3.0/24"));
    assert_eq!(n.pod_cidr, cidr("10.1.0.0/16"));
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.1.3.4")), Some(3));
}

#[test]
fn non_default_slice_sizes() {
    let cfg = IpamConfig {
        pod_subnet_one_node_prefix_len: 26,
        vpp_host_subnet_one_node_prefix_len: 30,
        ..IpamConfig::default()
    };
    let n = cfg.for_node(5).unwrap();
    assert_eq!(n.pod_subnet, cidr("10.1.1.64/26"));
    assert_eq!(n.pod_gateway, ip("10.1.1.65"));
    assert_eq!(n.nat_loopback, ip("10.1.1.126"));
    assert_eq!(n.pod_ip_range(), Some((ip("10.1.1.66"), ip("10.1.1.125"))));
    assert_eq!(n.host_subnet, cidr("172.30.0.20/30"));
    assert_eq!(n.host_vpp_ip, ip("172.30.0.21"));
    assert_eq!(n.host_linux_ip, ip("172.30.0.22"));
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.1.1.70")), Some(5));
}

// ---------------------------------------------------------------- 2.6 contivCIDR

#[test]
fn contiv_cidr_example() {
    let cfg = IpamConfig {
        contiv_cidr: Some(cidr("10.128.0.0/14")),
        ..IpamConfig::default()
    };
    cfg.validate().unwrap();
    let n1 = cfg.for_node(1).unwrap();
    assert_eq!(n1.pod_cidr, cidr("10.128.0.0/16"));
    assert_eq!(n1.pod_subnet, cidr("10.128.0.128/25"));
    assert_eq!(n1.pod_gateway, ip("10.128.0.129"));
    assert_eq!(n1.nat_loopback, ip("10.128.0.254"));
    assert_eq!(n1.host_subnet, cidr("10.129.0.128/25"));
    assert_eq!(n1.host_vpp_ip, ip("10.129.0.129"));
    assert_eq!(n1.host_linux_ip, ip("10.129.0.130"));
    assert_eq!(n1.node_ip, cidr("10.130.0.1/23"));
    assert_eq!(n1.bvi_ip, cidr("10.130.2.1/23"));
    // The /16 holds 512 /25 slices; the /23 node ranges hold 510 hosts.
    let n300 = cfg.for_node(300).unwrap();
    assert_eq!(n300.pod_subnet, cidr("10.128.150.0/25"));
    assert_eq!(n300.node_ip, cidr("10.130.1.44/23"));
    assert_eq!(cfg.node_id_of_pod_ip(ip("10.128.150.7")), Some(300));
    let msg = cfg.for_node(511).unwrap_err().to_string();
    assert!(msg.contains("contivCIDR"), "{msg}");
    let msg = cfg.for_node(513).unwrap_err().to_string();
    assert!(msg.contains("contivCIDR"), "{msg}");
}

#[test]
fn contiv_cidr_needs_18_host_bits() {
    let cfg = IpamConfig {
        contiv_cidr: Some(cidr("10.128.0.0/15")),
        ..IpamConfig::default()
    };
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(msg.contains("contivCIDR") && msg.contains("18"), "{msg}");
    // Only the carved-out ranges must stay clear of serviceCIDR.
    let cfg = IpamConfig {
        contiv_cidr: Some(cidr("10.64.0.0/10")),
        ..IpamConfig::default()
    };
    cfg.validate().unwrap();
    let cfg = IpamConfig {
        contiv_cidr: Some(cidr("10.128.0.0/14")),
        service_cidr: cidr("10.129.0.0/16"),
        ..IpamConfig::default()
    };
    let msg = cfg.validate().unwrap_err().to_string();
    assert!(
        msg.contains("serviceCIDR") && msg.contains("contivCIDR"),
        "{msg}"
    );
    // The configured ranges are ignored in contivCIDR mode.
    let cfg = IpamConfig {
        contiv_cidr: Some(cidr("10.128.0.0/14")),
        pod_subnet_one_node_prefix_len: 8,
        vxlan_cidr: cidr("10.1.0.0/16"),
        ..IpamConfig::default()
    };
    cfg.validate().unwrap();
}

// ---------------------------------------------------------------- 2.3 allocation

fn allocator() -> PodAllocator {
    PodAllocator::new(&node(1))
}

#[test]
fn round_robin_does_not_reuse_freed_address_first() {
    let mut a = allocator();
    assert_eq!(a.allocate("c1/eth0").unwrap(), ip("10.1.1.2"));
    assert_eq!(a.allocate("c2/eth0").unwrap(), ip("10.1.1.3"));
    assert_eq!(a.release("c1/eth0"), Some(ip("10.1.1.2")));
    assert_eq!(a.allocate("c3/eth0").unwrap(), ip("10.1.1.4"));
    assert_eq!(a.allocate("c4/eth0").unwrap(), ip("10.1.1.5"));
    assert_eq!(a.release("c1/eth0"), None);
    assert_eq!(a.get("c2/eth0"), Some(ip("10.1.1.3")));
    assert_eq!(a.get("c1/eth0"), None);
    assert_eq!(a.holder(ip("10.1.1.4")), Some("c3/eth0"));
    assert_eq!(a.len(), 3);
}

#[test]
fn same_key_returns_same_ip() {
    let mut a = allocator();
    let first = a.allocate("c1/eth0").unwrap();
    assert_eq!(a.allocate("c1/eth0").unwrap(), first);
    // A second interface of the same container is a different key.
    assert_eq!(a.allocate("c1/net1").unwrap(), ip("10.1.1.3"));
    // Repeating the ADD did not move the cursor.
    assert_eq!(a.allocate("c2/eth0").unwrap(), ip("10.1.1.4"));
    assert_eq!(a.allocate("").unwrap_err(), IpamError::EmptyKey);
}

#[test]
fn wraps_from_253_to_2_skipping_reserved() {
    let mut a = allocator();
    // Walk the cursor to .252 while keeping only .2 and .100 held.
    a.allocate("keep-2").unwrap();
    for i in 3..=252u32 {
        let key = format!("tmp{i}");
        let got = a.allocate(&key).unwrap();
        assert_eq!(got, Ipv4Addr::from(u32::from(ip("10.1.1.0")) + i));
        if i != 100 {
            a.release(&key);
        }
    }
    assert_eq!(a.allocate("x").unwrap(), ip("10.1.1.253"));
    // Next: not .254 (NAT loopback), .255, .0, .1 (gateway), nor .2 (held).
    assert_eq!(a.allocate("y").unwrap(), ip("10.1.1.3"));
    assert_eq!(a.allocate("z").unwrap(), ip("10.1.1.4"));
}

#[test]
fn exhaustion_after_252() {
    let mut a = allocator();
    assert_eq!(a.capacity(), 252);
    let mut seen = BTreeSet::new();
    for i in 0..252 {
        assert!(seen.insert(a.allocate(&format!("c{i}/eth0")).unwrap()));
    }
    assert_eq!(seen.first(), Some(&ip("10.1.1.2")));
    assert_eq!(seen.last(), Some(&ip("10.1.1.253")));
    let err = a.allocate("one-too-many/eth0").unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { capacity: 252, .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("10.1.1.0/24") && msg.contains("exhausted"),
        "{msg}"
    );
    // Existing keys still answer; a release makes room exactly there.
    assert_eq!(a.allocate("c7/eth0").unwrap(), ip("10.1.1.9"));
    a.release("c100/eth0");
    assert_eq!(a.allocate("late/eth0").unwrap(), ip("10.1.1.102"));
}

#[test]
fn allocations_sorted_by_ip() {
    let mut a = allocator();
    a.restore("b", ip("10.1.1.50")).unwrap();
    a.restore("a", ip("10.1.1.40")).unwrap();
    a.allocate("c").unwrap();
    assert_eq!(
        a.allocations(),
        vec![
            ("a".to_string(), ip("10.1.1.40")),
            ("b".to_string(), ip("10.1.1.50")),
            ("c".to_string(), ip("10.1.1.51")),
        ]
    );
}

#[test]
fn restore_conflicts() {
    let mut a = allocator();
    a.restore("c1/eth0", ip("10.1.1.10")).unwrap();
    // Idempotent.
    a.restore("c1/eth0", ip("10.1.1.10")).unwrap();
    assert_eq!(a.len(), 1);
    let err = a.restore("c2/eth0", ip("10.1.1.10")).unwrap_err();
    assert!(
        matches!(err, IpamError::InUse { ref holder, .. } if holder == "c1/eth0"),
        "{err}"
    );
    let err = a.restore("c1/eth0", ip("10.1.1.11")).unwrap_err();
    assert!(matches!(err, IpamError::KeyHasOtherIp { .. }), "{err}");
    let err = a.restore("c3/eth0", ip("10.1.2.10")).unwrap_err();
    assert!(matches!(err, IpamError::OutsideSlice { .. }), "{err}");
    for (addr, role) in [
        ("10.1.1.0", "network"),
        ("10.1.1.1", "gateway"),
        ("10.1.1.254", "NAT loopback"),
        ("10.1.1.255", "broadcast"),
    ] {
        let err = a.restore("c3/eth0", ip(addr)).unwrap_err();
        assert!(matches!(err, IpamError::Reserved { .. }), "{addr}: {err}");
        assert!(err.to_string().contains(role), "{addr}: {err}");
    }
    assert_eq!(
        a.restore("", ip("10.1.1.20")).unwrap_err(),
        IpamError::EmptyKey
    );
    assert_eq!(
        a.allocations(),
        vec![("c1/eth0".to_string(), ip("10.1.1.10"))]
    );
    // A rebuilt allocator continues after the highest restored address.
    assert_eq!(a.allocate("new").unwrap(), ip("10.1.1.11"));
}

#[test]
fn state_round_trip() {
    let mut a = allocator();
    a.allocate("c1/eth0").unwrap();
    a.allocate("c2/eth0").unwrap();
    a.release("c2/eth0");
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains("\"podSubnet\":\"10.1.1.0/24\""), "{json}");
    assert!(json.contains("\"lastAllocated\":\"10.1.1.3\""), "{json}");
    let mut b: PodAllocator = serde_json::from_str(&json).unwrap();
    assert_eq!(b, a);
    // The cursor survived: .3 is not handed out again straight away.
    assert_eq!(b.allocate("c3/eth0").unwrap(), ip("10.1.1.4"));

    let state = a.state();
    let c = PodAllocator::from_state(&node(1), state.clone()).unwrap();
    assert_eq!(c, a);
    let err = PodAllocator::from_state(&node(2), state).unwrap_err();
    assert!(
        matches!(err, IpamError::StateSubnetMismatch { .. }),
        "{err}"
    );
}

#[test]
fn bad_state_is_rejected() {
    let bad = [
        r#"{"podSubnet":"10.1.1.0/24","allocations":{"a":"10.1.1.5","b":"10.1.1.5"}}"#,
        r#"{"podSubnet":"10.1.1.0/24","allocations":{"a":"10.1.1.1"}}"#,
        r#"{"podSubnet":"10.1.1.0/24","allocations":{"a":"10.1.2.5"}}"#,
        r#"{"podSubnet":"10.1.1.0/24","lastAllocated":"10.1.1.254"}"#,
        r#"{"podSubnet":"10.1.1.0/24","bogus":1}"#,
    ];
    for doc in bad {
        assert!(serde_json::from_str::<PodAllocator>(doc).is_err(), "{doc}");
    }
    let ok: PodAllocator = serde_json::from_str(r#"{"podSubnet":"10.1.1.0/24"}"#).unwrap();
    assert!(ok.is_empty());
    assert_eq!(
        ok.state(),
        PodAllocatorState {
            pod_subnet: cidr("10.1.1.0/24"),
            last_allocated: None,
            allocations: Default::default(),
        }
    );
}

#[test]
fn tiny_slice_has_no_pod_addresses() {
    let mut ipam = node(1);
    ipam.pod_subnet = cidr("10.1.1.0/30");
    let mut a = PodAllocator::new(&ipam);
    assert_eq!(a.capacity(), 0);
    assert!(matches!(
        a.allocate("x").unwrap_err(),
        IpamError::NoPodAddresses { .. }
    ));
    assert!(a.restore("x", ip("10.1.1.2")).is_err());
}

// ---------------------------------------------------------------- 2.4 MACs

/// Independent FNV-1a-32, written from the published algorithm.
fn reference_fnv(s: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

#[test]
fn fnv_test_vectors() {
    assert_eq!(fnv1a32(b""), 0x811c_9dc5);
    assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
}

#[test]
fn pod_macs_hashed_scheme() {
    let h = reference_fnv("abc/eth0");
    assert_eq!(h, fnv1a32(b"abc/eth0"));
    let (pod, dp) = pod_macs("abc", "eth0");
    let b = |v: u32, i: u32| (v >> (8 * i)) as u8;
    assert_eq!(pod, [0x02, 0xfe, b(h, 0), b(h, 1), b(h, 2), b(h, 3)]);
    assert_eq!(dp, [0x02, 0xfe, b(!h, 0), b(!h, 1), b(!h, 2), b(!h, 3)]);
    // Unicast, locally administered, and the two ends differ.
    assert_eq!(pod[0] & 0x03, 0x02);
    assert_ne!(pod, dp);
    // The separator matters: "ab"+"c/eth0" is not the same interface.
    assert_ne!(pod_macs("ab", "c/eth0x"), pod_macs("abc", "eth0"));
    assert_ne!(pod_macs("abc", "eth1"), pod_macs("abc", "eth0"));
    assert_eq!(FIXED_POD_MAC, [0, 0, 0, 0, 0, 2]);
}

#[test]
fn bvi_macs() {
    assert_eq!(bvi_mac(0x2a), [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x2a]);
    assert_eq!(bvi_mac(255), [0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0xff]);
    let macs: BTreeSet<_> = (1..=4096).map(bvi_mac).collect();
    assert_eq!(macs.len(), 4096);
    assert!(macs.iter().all(|m| m[0] & 0x03 == 0x02));
}

// ---------------------------------------------------------------- property

#[derive(Debug, Clone)]
enum Op {
    Alloc(u8),
    Release(u8),
    Restore(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|k| Op::Alloc(k % 40)),
        3 => any::<u8>().prop_map(|k| Op::Release(k % 40)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(k, o)| Op::Restore(k % 40, o)),
    ]
}

proptest! {
    #[test]
    fn allocations_stay_unique_and_in_range(
        slice_len in prop_oneof![Just(24u8), Just(27u8), Just(28u8), Just(29u8)],
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let cfg = IpamConfig {
            pod_subnet_one_node_prefix_len: slice_len,
            ..IpamConfig::default()
        };
        let ipam = cfg.for_node(3).unwrap();
        let (first, last) = ipam.pod_ip_range().unwrap();
        let mut a = PodAllocator::new(&ipam);
        let mut model = std::collections::BTreeMap::<String, Ipv4Addr>::new();
        for op in ops {
            match op {
                Op::Alloc(k) => {
                    let key = format!("c{k}/eth0");
                    match a.allocate(&key) {
                        Ok(got) => {
                            if let Some(prev) = model.get(&key) {
                                prop_assert_eq!(*prev, got);
                            }
                            model.insert(key, got);
                        }
                        Err(IpamError::Exhausted { .. }) => {
                            prop_assert!(!model.contains_key(&key));
                            prop_assert_eq!(model.len() as u64, a.capacity());
                        }
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Release(k) => {
                    let key = format!("c{k}/eth0");
                    prop_assert_eq!(a.release(&key), model.remove(&key));
                }
                Op::Restore(k, o) => {
                    let key = format!("c{k}/eth0");
                    let addr = ipam.pod_subnet.host(u32::from(o) % ipam.pod_subnet.size() as u32)
                        .unwrap();
                    let free = !model.values().any(|v| *v == addr);
                    let usable = addr >= first && addr <= last;
                    let own = model.get(&key).copied();
                    let res = a.restore(&key, addr);
                    let ok = usable && (own == Some(addr) || (own.is_none() && free));
                    prop_assert_eq!(res.is_ok(), ok, "{:?}", res);
                    if ok {
                        model.insert(key, addr);
                    }
                }
            }
            let all = a.allocations();
            prop_assert_eq!(all.len(), model.len());
            let ips: BTreeSet<_> = all.iter().map(|(_, ip)| *ip).collect();
            prop_assert_eq!(ips.len(), all.len(), "duplicate address");
            prop_assert!(all.windows(2).all(|w| w[0].1 < w[1].1), "not sorted");
            for (key, addr) in &all {
                prop_assert!(*addr >= first && *addr <= last, "{} out of range", addr);
                prop_assert_ne!(*addr, ipam.pod_gateway);
                prop_assert_ne!(*addr, ipam.nat_loopback);
                prop_assert_eq!(model.get(key), Some(addr));
            }
        }
        // Persisted state reloads to the same allocator.
        let back: PodAllocator = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        prop_assert_eq!(back, a);
    }
}
