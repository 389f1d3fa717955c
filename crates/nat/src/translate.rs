//! Packet parsing into session keys and in-place translation with incremental checksums,
//! including ICMP errors whose quoted packet belongs to a translated flow.

use vecnet_wire::checksum::{self, Delta};

use crate::session::{FlowKey, Rewrite};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// What kind of L4 the packet carries, as far as NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        flags: u8,
    },
    Udp,
    /// Echo request or reply; the identifier plays both ports.
    IcmpEcho,
    /// An ICMP error; the key is the reversed flow of the quoted packet at `inner`.
    IcmpError {
        inner: usize,
    },
    /// Other ICMP types and other protocols: addresses only.
    Other,
    /// A non-first fragment: no L4 header to read.
    Fragment,
}

/// A packet's session key and where its parts are.
#[derive(Debug, Clone, Copy)]
pub struct Parsed {
    pub key: FlowKey,
    pub ihl: usize,
    pub l4: L4,
    pub ttl: u8,
    pub total_len: u16,
}

#[inline]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Parses an IPv4 packet (validated by `ip4-input`: version, IHL, total length, checksum).
/// `None` if the L4 header it needs is truncated.
#[inline(always)]
pub fn parse(ip: &[u8]) -> Option<Parsed> {
    if ip.len() < 20 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let proto = ip[9];
    let mut key = FlowKey {
        src: be32(ip, 12),
        dst: be32(ip, 16),
        sport: 0,
        dport: 0,
        proto,
    };
    let non_first = be16(ip, 6) & 0x1fff != 0;
    let l4 = if non_first {
        L4::Fragment
    } else {
        match proto {
            TCP => {
                let t = ip.get(ihl..ihl + 20)?;
                key.sport = be16(t, 0);
                key.dport = be16(t, 2);
                L4::Tcp { flags: t[13] }
            }
            UDP => {
                let u = ip.get(ihl..ihl + 8)?;
                key.sport = be16(u, 0);
                key.dport = be16(u, 2);
                L4::Udp
            }
            ICMP => {
                let c = ip.get(ihl..ihl + 8)?;
                match c[0] {
                    0 | 8 => {
                        key.sport = be16(c, 4);
                        key.dport = key.sport;
                        L4::IcmpEcho
                    }
                    3 | 4 | 5 | 11 | 12 => {
                        let inner = ihl + 8;
                        let q = ip.get(inner..)?;
                        if q.len() < 20 || q[0] >> 4 != 4 {
                            return None;
                        }
                        let qihl = ((q[0] & 0x0f) as usize) * 4;
                        let qp = q[9];
                        let (sp, dp) = match qp {
                            TCP | UDP => {
                                let l = q.get(qihl..qihl + 4)?;
                                (be16(l, 0), be16(l, 2))
                            }
                            ICMP => {
                                let l = q.get(qihl..qihl + 8)?;
                                (be16(l, 4), be16(l, 4))
                            }
                            _ => (0, 0),
                        };
                        key = FlowKey {
                            src: be32(q, 16),
                            dst: be32(q, 12),
                            sport: dp,
                            dport: sp,
                            proto: qp,
                        };
                        L4::IcmpError { inner }
                    }
                    _ => L4::Other,
                }
            }
            _ => L4::Other,
        }
    };
    Some(Parsed {
        key,
        ihl,
        l4,
        ttl: ip[8],
        total_len: be16(ip, 2),
    })
}

/// Applies `rw` to the packet in place. `partial` = the L4 checksum field holds a
/// NEEDS_CSUM pseudo-header seed (offloaded checksum) rather than a full checksum.
#[inline]
pub fn apply(ip: &mut [u8], p: &Parsed, rw: &Rewrite, partial: bool) {
    let ihl = p.ihl;
    ip[12..16].copy_from_slice(&rw.src.to_be_bytes());
    ip[16..20].copy_from_slice(&rw.dst.to_be_bytes());
    let c = rw.ip.apply(be16(ip, 10));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    match p.l4 {
        L4::Tcp { .. } => {
            ip[ihl..ihl + 2].copy_from_slice(&rw.sport.to_be_bytes());
            ip[ihl + 2..ihl + 4].copy_from_slice(&rw.dport.to_be_bytes());
            let old = be16(ip, ihl + 16);
            let c = if partial {
                rw.partial().apply_partial(old)
            } else {
                rw.l4.apply(old)
            };
            ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
        }
        L4::Udp => {
            ip[ihl..ihl + 2].copy_from_slice(&rw.sport.to_be_bytes());
            ip[ihl + 2..ihl + 4].copy_from_slice(&rw.dport.to_be_bytes());
            let old = be16(ip, ihl + 6);
            let c = if partial {
                rw.partial().apply_partial(old)
            } else {
                rw.l4.apply_udp(old)
            };
            ip[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
        }
        L4::IcmpEcho => {
            // ICMP has no pseudo-header: only the identifier enters its checksum.
            let old_id = be16(ip, ihl + 4);
            ip[ihl + 4..ihl + 6].copy_from_slice(&rw.sport.to_be_bytes());
            let c = Delta::from_u16(old_id, rw.sport).apply(be16(ip, ihl + 2));
            ip[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
        }
        L4::IcmpError { inner } => translate_icmp_error(ip, ihl, inner, rw),
        L4::Other | L4::Fragment => {}
    }
}

/// The quoted packet travelled the other way: mirror the rewrite onto it. Rare path, so
/// checksums are recomputed rather than patched.
fn translate_icmp_error(ip: &mut [u8], ihl: usize, inner: usize, rw: &Rewrite) {
    let total = ip.len();
    if inner + 20 > total {
        return;
    }
    let qihl = ((ip[inner] & 0x0f) as usize) * 4;
    let qproto = ip[inner + 9];
    let (old_qsrc, old_qdst) = (be32(ip, inner + 12), be32(ip, inner + 16));
    ip[inner + 12..inner + 16].copy_from_slice(&rw.dst.to_be_bytes());
    ip[inner + 16..inner + 20].copy_from_slice(&rw.src.to_be_bytes());
    if inner + qihl <= total {
        ip[inner + 10..inner + 12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&ip[inner..inner + qihl]);
        ip[inner + 10..inner + 12].copy_from_slice(&c.to_be_bytes());
    }
    let l = inner + qihl;
    match qproto {
        TCP | UDP if l + 4 <= total => {
            let (old_sp, old_dp) = (be16(ip, l), be16(ip, l + 2));
            ip[l..l + 2].copy_from_slice(&rw.dport.to_be_bytes());
            ip[l + 2..l + 4].copy_from_slice(&rw.sport.to_be_bytes());
            // The quoted UDP checksum is within the 8 bytes; patch it so the quote stays
            // consistent (a zero UDP checksum stays zero).
            if qproto == UDP && l + 8 <= total {
                let d = Delta::from_u32(old_qsrc, rw.dst)
                    .combine(Delta::from_u32(old_qdst, rw.src))
                    .combine(Delta::from_u16(old_sp, rw.dport))
                    .combine(Delta::from_u16(old_dp, rw.sport));
                let c = d.apply_udp(be16(ip, l + 6));
                ip[l + 6..l + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        ICMP if l + 8 <= total => {
            ip[l + 4..l + 6].copy_from_slice(&rw.dport.to_be_bytes());
        }
        _ => {}
    }
    // Outer ICMP checksum covers the quote.
    ip[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[ihl..total]);
    ip[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Rewrite;

    fn udp_packet(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sp.to_be_bytes());
        p.extend_from_slice(&dp.to_be_bytes());
        p.extend_from_slice(&[0, 12, 0, 0]);
        p.extend_from_slice(b"abcd");
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let mut ph = Vec::new();
        ph.extend_from_slice(&src);
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&[0, 17, 0, 12]);
        ph.extend_from_slice(&p[20..]);
        let c = checksum::checksum(&ph);
        p[26..28].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn udp_ok(p: &[u8]) -> bool {
        let mut ph = Vec::new();
        ph.extend_from_slice(&p[12..20]);
        ph.extend_from_slice(&[0, 17, 0, 12]);
        ph.extend_from_slice(&p[20..32]);
        checksum::checksum(&ph) == 0 && checksum::checksum(&p[..20]) == 0
    }

    #[test]
    fn udp_translation_keeps_checksums_valid() {
        let mut p = udp_packet([10, 1, 1, 3], [10, 96, 0, 10], 5000, 53);
        let parsed = parse(&p).unwrap();
        let to = FlowKey {
            src: 0x0a01_0103,
            dst: 0x0a01_0102,
            sport: 5000,
            dport: 5353,
            proto: 17,
        };
        let rw = Rewrite::between(parsed.key, to);
        apply(&mut p, &parsed, &rw, false);
        assert_eq!(&p[16..20], &[10, 1, 1, 2]);
        assert_eq!(&p[22..24], &5353u16.to_be_bytes());
        assert!(udp_ok(&p));
    }

    #[test]
    fn icmp_error_quoting_a_translated_flow_is_mirrored() {
        // Client 10.1.1.3:5000 -> VIP 10.96.0.10:53 was DNATed to backend 10.1.1.2:5353; the
        // backend answers port unreachable about 10.1.1.3:5000 -> 10.1.1.2:5353.
        let quoted = udp_packet([10, 1, 1, 3], [10, 1, 1, 2], 5000, 5353);
        let mut e = vec![
            0x45, 0, 0, 0, 0, 2, 0, 0, 64, 1, 0, 0, 10, 1, 1, 2, 10, 1, 1, 3,
        ];
        e.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        e.extend_from_slice(&quoted[..28]);
        let len = e.len() as u16;
        e[2..4].copy_from_slice(&len.to_be_bytes());
        let c = checksum::checksum(&e[..20]);
        e[10..12].copy_from_slice(&c.to_be_bytes());
        let c = checksum::checksum(&e[20..]);
        e[22..24].copy_from_slice(&c.to_be_bytes());
        let parsed = parse(&e).unwrap();
        // The key is the reply direction of the session: backend -> client.
        assert_eq!(
            parsed.key,
            FlowKey {
                src: 0x0a01_0102,
                dst: 0x0a01_0103,
                sport: 5353,
                dport: 5000,
                proto: 17
            }
        );
        let vip = FlowKey {
            src: 0x0a60_000a,
            dst: 0x0a01_0103,
            sport: 53,
            dport: 5000,
            proto: 17,
        };
        let rw = Rewrite::between(parsed.key, vip);
        apply(&mut e, &parsed, &rw, false);
        assert_eq!(&e[12..16], &[10, 96, 0, 10], "outer source is the VIP");
        assert_eq!(
            &e[28 + 16..28 + 20],
            &[10, 96, 0, 10],
            "quoted destination is the VIP"
        );
        assert_eq!(
            &e[28 + 22..28 + 24],
            &53u16.to_be_bytes(),
            "quoted destination port"
        );
        assert_eq!(checksum::checksum(&e[..20]), 0);
        assert_eq!(checksum::checksum(&e[20..]), 0);
        assert_eq!(
            checksum::checksum(&e[28..48]),
            0,
            "quoted IP header checksum"
        );
        assert!(udp_ok(&{
            let mut q = e[28..].to_vec();
            q.extend_from_slice(b"abcd");
            q
        }));
    }
}
