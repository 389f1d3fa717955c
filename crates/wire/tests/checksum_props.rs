//! Incremental checksum updates must agree with full recomputation.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use vecnet_wire::checksum::{self, Delta};
use vecnet_wire::{Ipv4Packet, TcpPacket, UdpPacket, IP_PROTO_TCP, IP_PROTO_UDP};

/// Words biased towards the one's-complement edge values.
fn word() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => any::<u16>(),
        1 => Just(0x0000u16),
        1 => Just(0xffffu16),
        1 => Just(0x0001u16),
        1 => Just(0xfffeu16),
    ]
}

fn words_to_bytes(w: &[u16]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// A block of words whose first word is never zero, mirroring every real
/// header (IPv4 version nibble, pseudo-header protocol): RFC 1624 eqn 3 only
/// equals recomputation when the data is not all-zero.
fn block() -> impl Strategy<Value = Vec<u16>> {
    (1u16..=0xffff, prop::collection::vec(word(), 1..40)).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        rest
    })
}

/// The word that, added to `words` (whose checksum slot is zero), makes
/// the full checksum equal `target`.
fn filler_for(words: &[u16], target: u16) -> u16 {
    let s = checksum::sum(&words_to_bytes(words));
    checksum::fold(u32::from(!target) + u32::from(!checksum::fold(s)))
}

/// Checksum field value over `words` with word `at` holding the checksum.
fn full(words: &[u16], at: usize) -> u16 {
    let mut w = words.to_vec();
    w[at] = 0;
    checksum::checksum(&words_to_bytes(&w))
}

#[test]
fn reference_values() {
    // RFC 1071 section 3 example.
    let data = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(checksum::fold(checksum::sum(&data)), 0xddf2);
    assert_eq!(checksum::checksum(&data), !0xddf2);
    assert_eq!(checksum::finish(0), 0xffff);
    assert_eq!(checksum::fold(0), 0);
    assert_eq!(checksum::fold(0xffff), 0xffff);
    assert_eq!(checksum::fold(0x1_fffe), 0xffff);
    assert_eq!(checksum::fold(0xffff_ffff), 0xffff);
    // Odd trailing byte is padded with zero.
    assert_eq!(checksum::sum(&[0x12]), 0x1200);
    assert_eq!(checksum::sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    // RFC 1624 section 4 example: HC 0xdd2f, m 0x5555 -> 0x3285 gives 0x0000.
    assert_eq!(checksum::update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    // Pseudo-header sums the four address words, protocol and length.
    let ph = checksum::pseudo_header(
        Ipv4Addr::new(10, 1, 1, 3),
        Ipv4Addr::new(10, 104, 221, 85),
        IP_PROTO_TCP,
        40,
    );
    assert_eq!(ph, 0x0a01 + 0x0103 + 0x0a68 + 0xdd55 + 6 + 40);
}

#[test]
fn sum_is_safe_for_large_buffers() {
    let big = vec![0xffu8; 1 << 20];
    assert_eq!(checksum::fold(checksum::sum(&big)), 0xffff);
    let big = vec![0x01u8; (1 << 20) + 1];
    let naive: u64 = big
        .chunks(2)
        .map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0)))
        .sum();
    assert_eq!(u64::from(checksum::sum(&big)) % 0xffff, naive % 0xffff);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn sum_matches_naive_word_sum(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let naive: u64 = data
            .chunks(2)
            .map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0)))
            .sum();
        let ours = checksum::sum(&data);
        prop_assert_eq!(u64::from(ours) % 0xffff, naive % 0xffff);
        prop_assert_eq!(checksum::fold(ours) == 0, naive == 0);
        prop_assert_eq!(checksum::checksum(&data), checksum::finish(ours));
    }

    #[test]
    fn update_u16_equals_recompute(
        mut words in block(), at_csum in any::<prop::sample::Index>(),
        at_m in any::<prop::sample::Index>(), new in word(),
    ) {
        let c = at_csum.index(words.len());
        words[c] = 0;
        words[c] = full(&words, c);
        let m = at_m.index(words.len());
        prop_assume!(c != 0 && m != c && m != 0);
        let old = words[m];
        words[m] = new;
        let expect = full(&words, c);
        prop_assert_eq!(checksum::update_u16(words[c], old, new), expect);
        prop_assert_eq!(Delta::from_u16(old, new).apply(words[c]), expect);
        prop_assert_eq!(Delta::new(&[old], &[new]).apply(words[c]), expect);
    }

    #[test]
    fn update_u32_and_delta_equal_recompute(
        mut words in block(), hi in word(), lo in word(), nhi in word(), nlo in word(),
        more_old in word(), more_new in word(),
    ) {
        // Layout: [.. block .., csum, hi, lo, extra]
        words.extend_from_slice(&[0, hi, lo, more_old]);
        let c = words.len() - 4;
        words[c] = full(&words, c);
        let hc = words[c];
        let old32 = u32::from(hi) << 16 | u32::from(lo);
        let new32 = u32::from(nhi) << 16 | u32::from(nlo);
        let n = words.len();
        words[n - 3] = nhi;
        words[n - 2] = nlo;
        let expect32 = full(&words, c);
        prop_assert_eq!(checksum::update_u32(hc, old32, new32), expect32);
        prop_assert_eq!(Delta::from_u32(old32, new32).apply(hc), expect32);
        prop_assert_eq!(
            Delta::from_addrs(Ipv4Addr::from(old32), Ipv4Addr::from(new32)).apply(hc),
            expect32
        );

        // A multi-word rewrite via Delta::new and via combine.
        words[n - 1] = more_new;
        let expect = full(&words, c);
        let d = Delta::new(&[hi, lo, more_old], &[nhi, nlo, more_new]);
        prop_assert_eq!(d.apply(hc), expect);
        let d2 = Delta::from_u32(old32, new32).combine(Delta::from_u16(more_old, more_new));
        prop_assert_eq!(d2.apply(hc), expect);
        let raw = checksum::delta(&[hi, lo, more_old], &[nhi, nlo, more_new]);
        prop_assert_eq!(!checksum::fold(u32::from(!hc) + raw), expect);
    }

    #[test]
    fn edge_checksums(first in 1u16..=0xffff, old in word(), new in word()) {
        // A full checksum is never 0xffff for non-zero data, so the reachable
        // edges of the stored value are 0x0000, 0x0001 and 0xfffe.
        for target in [0x0000u16, 0x0001, 0xfffe] {
            // words: [first, filler, csum, m]; pick filler so csum == target.
            let mut w = vec![first, 0, 0, old];
            w[1] = filler_for(&w, target);
            w[2] = full(&w, 2);
            prop_assert_eq!(w[2], target);
            w[3] = new;
            prop_assert_eq!(checksum::update_u16(target, old, new), full(&w, 2));
            prop_assert_eq!(Delta::from_u16(old, new).apply(target), full(&w, 2));
        }
    }

    #[test]
    fn decrement_ttl_equals_recompute(
        hdr in prop::collection::vec(any::<u8>(), 20), ttl in 1u8..=255,
    ) {
        let mut h = hdr.clone();
        h[0] = 0x45;
        h[8] = ttl;
        let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
        p.fill_checksum();
        p.decrement_ttl();
        prop_assert_eq!(p.ttl(), ttl - 1);
        prop_assert_eq!(p.checksum(), p.compute_checksum());
        prop_assert!(p.verify_checksum());
    }

    #[test]
    fn decrement_ttl_edge_checksums(
        hdr in prop::collection::vec(any::<u8>(), 20), ttl in 1u8..=255,
        target in prop_oneof![Just(0x0000u16), Just(0x0001u16), Just(0xfffeu16)],
        before in any::<bool>(),
    ) {
        // Steer the identification field so that the checksum before (or
        // after) the decrement is exactly an edge value.
        let mut h = hdr.clone();
        h[0] = 0x45;
        h[8] = if before { ttl } else { ttl - 1 };
        let mut words: Vec<u16> =
            h.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        words[2] = 0;
        words[5] = 0;
        words[2] = filler_for(&words, target);
        h = words_to_bytes(&words);
        h[8] = ttl;
        let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
        p.fill_checksum();
        if before {
            prop_assert_eq!(p.checksum(), target);
        }
        p.decrement_ttl();
        prop_assert_eq!(p.checksum(), p.compute_checksum());
        if !before {
            prop_assert_eq!(p.checksum(), target);
        }
    }

    /// NAT on a NEEDS_CSUM packet: the L4 field holds fold(pseudo-header),
    /// uncomplemented. After translating an address and adjusting the field
    /// with `apply_partial`, finishing the checksum the way a NIC would must
    /// equal a full checksum of the translated packet.
    #[test]
    fn partial_checksum_adjust(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), nsrc in any::<[u8; 4]>(),
        ndst in any::<[u8; 4]>(), udp in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 20..80),
        sport in word(), nsport in word(),
    ) {
        let (src, dst, nsrc, ndst) =
            (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(nsrc), Ipv4Addr::from(ndst));
        let mut seg = body.clone();
        let (proto, csum_at) = if udp {
            let len = seg.len() as u16;
            seg[4..6].copy_from_slice(&len.to_be_bytes());
            (IP_PROTO_UDP, 6)
        } else {
            seg[12] = 0x50;
            (IP_PROTO_TCP, 16)
        };
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        let len = seg.len() as u16;
        let seed = checksum::fold(checksum::pseudo_header(src, dst, proto, len));
        seg[csum_at..csum_at + 2].copy_from_slice(&seed.to_be_bytes());

        // Translate src, dst and source port; adjust the seed. The port is
        // inside the segment, so the NIC's sum picks it up by itself; only
        // pseudo-header fields go into the partial delta.
        seg[0..2].copy_from_slice(&nsport.to_be_bytes());
        let d = Delta::from_addrs(src, nsrc).combine(Delta::from_addrs(dst, ndst));
        let seed2 = d.apply_partial(seed);
        seg[csum_at..csum_at + 2].copy_from_slice(&seed2.to_be_bytes());
        prop_assert_eq!(seed2, checksum::fold(checksum::pseudo_header(nsrc, ndst, proto, len)));

        // NIC completion: checksum over the segment with the seed in place.
        let mut finished = seg.clone();
        let c = checksum::checksum(&finished);
        finished[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());

        let mut reference = seg.clone();
        if udp {
            let mut u = UdpPacket::new_unchecked(&mut reference[..]);
            u.fill_checksum(nsrc, ndst);
            // UDP transmits a computed 0 as 0xffff; a NIC does the same.
            let nic = if c == 0 { 0xffff } else { c };
            prop_assert_eq!(nic, u.checksum());
            finished[csum_at..csum_at + 2].copy_from_slice(&nic.to_be_bytes());
            prop_assert!(UdpPacket::new_unchecked(&finished[..]).verify_checksum(nsrc, ndst));
        } else {
            let mut t = TcpPacket::new_unchecked(&mut reference[..]);
            t.fill_checksum(nsrc, ndst);
            prop_assert_eq!(c, t.checksum());
            prop_assert!(TcpPacket::new_unchecked(&finished[..]).verify_checksum(nsrc, ndst));
        }
    }

    /// NAT on a fully checksummed TCP/UDP packet: apply one precomputed
    /// Delta (addresses + port) to the L4 field and compare with refilling.
    #[test]
    fn nat_delta_on_full_checksum(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), nsrc in any::<[u8; 4]>(),
        body in prop::collection::vec(any::<u8>(), 20..80),
        sport in word(), nsport in word(), udp in any::<bool>(),
    ) {
        let (src, dst, nsrc) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(nsrc));
        let mut seg = body.clone();
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        let d = Delta::from_addrs(src, nsrc).combine(Delta::from_u16(sport, nsport));
        if udp {
            let len = seg.len() as u16;
            let mut u = UdpPacket::new_unchecked(&mut seg[..]);
            u.set_len(len);
            u.fill_checksum(src, dst);
            let c = d.apply_udp(u.checksum());
            u.set_src_port(nsport);
            u.fill_checksum(nsrc, dst);
            prop_assert_eq!(c, u.checksum());
        } else {
            let mut t = TcpPacket::new_unchecked(&mut seg[..]);
            t.set_header_len(20);
            t.fill_checksum(src, dst);
            let c = d.apply(t.checksum());
            t.set_src_port(nsport);
            t.fill_checksum(nsrc, dst);
            prop_assert_eq!(c, t.checksum());
        }
    }
}
