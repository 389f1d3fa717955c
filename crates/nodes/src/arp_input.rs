//! `arp-input`: answers requests for addresses the data plane owns on the receiving interface
//! (pod gateway on pod TAPs, `172.30.N.1` on `tap0`) and learns dynamic neighbours on links that
//! use ARP (host link, uplink). Replies go straight to the interface's output node.

use std::fmt::Write;

use vecnet_graph::{read_record, FormatContext, Node, NodeCtx, RX, TX};
use vecnet_wire::{ArpPacket, EthernetFrame, MacAddr, ETHERTYPE_ARP};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::common::drop_with;
use crate::runtime::L3Runtime;

const NEXT_DROP: u16 = 0;

const ERR_REPLIES_SENT: u16 = 0;
const ERR_REPLIES_RECEIVED: u16 = 1;
const ERR_NOT_LOCAL: u16 = 2;
const ERR_MALFORMED: u16 = 3;
const ERR_LEARNED: u16 = 4;
const ERR_NO_INTERFACE: u16 = 5;
const ERR_NO_OUTPUT: u16 = 6;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ArpInputTrace {
    len: u8,
    arp: [u8; 28],
}

pub struct ArpInput;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

impl<R: L3Runtime> Node<R> for ArpInput {
    fn name(&self) -> &str {
        "arp-input"
    }

    fn next_nodes(&self) -> Vec<String> {
        vec!["error-drop".into()]
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "ARP replies sent",
            "ARP replies received",
            "ARP target address not local",
            "bad ARP packet",
            "ARP sender address learned",
            "unknown interface",
            "no output arc for interface",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (cfg, st) = rt.l3();
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.trace_with(bi, |p| {
                let data = p.data(bi);
                let n = data.len().min(28);
                let mut rec = ArpInputTrace {
                    len: n as u8,
                    arp: [0; 28],
                };
                rec.arp[..n].copy_from_slice(&data[..n]);
                rec
            });

            let rx = ctx.pool.meta(bi).sw_if_index[RX];
            let Some(iface) = cfg.interface(rx) else {
                *next = drop_with(ctx, bi, ERR_NO_INTERFACE, NEXT_DROP);
                continue;
            };
            let Ok(arp) = ArpPacket::new_checked(ctx.pool.data(bi)) else {
                *next = drop_with(ctx, bi, ERR_MALFORMED, NEXT_DROP);
                continue;
            };
            let (op, sha, spa, tpa) = (
                arp.operation(),
                arp.sender_hw_addr(),
                arp.sender_proto_addr(),
                arp.target_proto_addr(),
            );
            let for_us = iface.owns(tpa);
            // Learn only what is on the link and aimed at us (or a reply), as VPP does.
            if iface.dynamic_arp
                && iface.on_link(spa)
                && sha.is_unicast()
                && (for_us || op == OP_REPLY)
            {
                st.learn(cfg, rx, spa, sha, ctx.now_ns);
                ctx.count(ERR_LEARNED, 1);
            }
            if op == OP_REPLY {
                *next = drop_with(ctx, bi, ERR_REPLIES_RECEIVED, NEXT_DROP);
                continue;
            }
            if op != OP_REQUEST || !for_us {
                *next = drop_with(ctx, bi, ERR_NOT_LOCAL, NEXT_DROP);
                continue;
            }
            let Some(out_next) = ctx.arc_to_node(iface.output_node) else {
                *next = drop_with(ctx, bi, ERR_NO_OUTPUT, NEXT_DROP);
                continue;
            };
            let my_mac = iface.mac;
            {
                let mut reply = ArpPacket::new_unchecked(ctx.pool.data_mut(bi));
                reply.set_operation(OP_REPLY);
                reply.set_target_hw_addr(sha);
                reply.set_target_proto_addr(spa);
                reply.set_sender_hw_addr(my_mac);
                reply.set_sender_proto_addr(tpa);
            }
            // The reply is exactly the ARP body; drop any Ethernet padding after it.
            ctx.pool.set_length(bi, ArpPacket::<&[u8]>::LEN as u16);
            if !ctx.pool.retreat(bi, 14) {
                *next = drop_with(ctx, bi, ERR_MALFORMED, NEXT_DROP);
                continue;
            }
            let mut eth = EthernetFrame::new_unchecked(ctx.pool.data_mut(bi));
            eth.set_dst_addr(sha);
            eth.set_src_addr(my_mac);
            eth.set_ethertype(ETHERTYPE_ARP);
            ctx.pool.meta_mut(bi).sw_if_index[TX] = rx;
            ctx.count(ERR_REPLIES_SENT, 1);
            *next = out_next;
        }
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let t: ArpInputTrace = read_record(data);
        format_arp(out, &t.arp[..(t.len as usize).min(28)]);
    }
}

/// VPP's `format_ethernet_arp_header` at indent 2.
pub fn format_arp(out: &mut String, bytes: &[u8]) {
    if bytes.len() < 28 {
        let _ = writeln!(out, "  ARP packet too short ({} bytes)", bytes.len());
        return;
    }
    let a = ArpPacket::new_unchecked(bytes);
    let op = match a.operation() {
        OP_REQUEST => "request".to_string(),
        OP_REPLY => "reply".to_string(),
        o => format!("unknown 0x{o:x}"),
    };
    let hw = match a.hardware_type() {
        1 => "ethernet".to_string(),
        h => format!("0x{h:04x}"),
    };
    let proto = match a.protocol_type() {
        0x0800 => "IP4".to_string(),
        p => format!("0x{p:04x}"),
    };
    let _ = writeln!(
        out,
        "  {op}, type {hw}/{proto}, address size {}/{}",
        a.hw_len(),
        a.proto_len()
    );
    let _ = writeln!(
        out,
        "  {}/{} -> {}/{}",
        a.sender_hw_addr(),
        a.sender_proto_addr(),
        a.target_hw_addr(),
        a.target_proto_addr()
    );
}

/// Writes an ARP request for `target` from (`mac`, `ip`) into `frame` (42 bytes).
pub fn build_request(
    frame: &mut [u8],
    mac: MacAddr,
    ip: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
) -> bool {
    if frame.len() < 42 {
        return false;
    }
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(MacAddr::BROADCAST);
    eth.set_src_addr(mac);
    eth.set_ethertype(ETHERTYPE_ARP);
    let mut arp = ArpPacket::new_unchecked(&mut frame[14..42]);
    arp.fill_ethernet_ipv4_header();
    arp.set_operation(OP_REQUEST);
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(ip);
    arp.set_target_hw_addr(MacAddr([0; 6]));
    arp.set_target_proto_addr(target);
    true
}
