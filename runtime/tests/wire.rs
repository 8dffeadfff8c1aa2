//! Properties of the packet formats: nothing panics on any bytes, emit/parse round-trips, and
//! incremental checksum updates agree with recomputation.

use fwc_runtime::wire::{ethernet, icmp, ipv4, tcp, udp};
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// Reads every accessor of every view that accepts the bytes.
fn poke(b: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(b) {
        let _ = (f.src(), f.dst(), f.ethertype(), f.payload().len());
    }
    if let Ok(p) = ipv4::Packet::new_header_checked(b) {
        let _ = (
            p.header_len(),
            p.total_len(),
            p.is_fragment(),
            p.src(),
            p.dst(),
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(),
        );
        let _ = ipv4::Repr::parse(&p, true);
    }
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        assert!(p.payload().len() + p.header_len() <= b.len());
    }
    if let Ok(s) = tcp::Segment::new_checked(b) {
        let _ = (
            s.src_port(),
            s.dst_port(),
            s.seq(),
            s.ack(),
            s.flags(),
            s.window(),
            s.options().len(),
            s.payload().len(),
        );
        let _ = tcp::Repr::parse(&s, Some((Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST)));
    }
    if let Ok(d) = udp::Datagram::new_checked(b) {
        let _ = (d.src_port(), d.dst_port(), d.payload().len());
        let _ = udp::Repr::parse(&d, Some((Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST)));
    }
    if let Ok(m) = icmp::Message::new_checked(b) {
        let _ = icmp::Repr::parse(&m, true);
        if let Some(Ok(q)) = m.quoted() {
            let _ = (q.src(), q.dst(), q.payload().len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn no_bytes_make_a_view_panic(b in prop::collection::vec(any::<u8>(), 0..80)) {
        poke(&b);
    }

    #[test]
    fn plausible_headers_never_panic(mut b in prop::collection::vec(any::<u8>(), 0..80), hl in 0u8..16, total in 0u16..100) {
        if b.len() >= 4 {
            b[0] = 0x40 | hl;
            b[2..4].copy_from_slice(&total.to_be_bytes());
        }
        poke(&b);
        if b.len() > 8 {
            let cut = b.len() / 2;
            poke(&b[..cut]);
        }
    }

    #[test]
    fn a_nated_tcp_segment_still_verifies(
        s in any::<u32>(), d in any::<u32>(), ns in any::<u32>(),
        sp in any::<u16>(), dp in any::<u16>(), nsp in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..30),
    ) {
        let (s, d, ns) = (Ipv4Addr::from(s), Ipv4Addr::from(d), Ipv4Addr::from(ns));
        let tr = tcp::Repr { src_port: sp, dst_port: dp, seq: 1, ack: 2, flags: tcp::flags::ACK, window: 100, payload_len: payload.len() };
        let ir = ipv4::Repr { src: s, dst: d, protocol: ipv4::PROTO_TCP, ttl: 64, ident: 0, dont_frag: true, payload_len: 20 + payload.len() };
        let mut pkt = vec![0u8; ir.total_len()];
        ir.emit(&mut pkt).unwrap();
        pkt[40..].copy_from_slice(&payload);
        tr.emit(&mut pkt[20..], s, d).unwrap();
        // source NAT, incrementally, as the datapath does it
        {
            let mut ip = ipv4::Packet::new_checked(&mut pkt[..]).unwrap();
            ip.set_src(ns);
            let mut seg = tcp::Segment::new_checked(ip.payload_mut()).unwrap();
            seg.set_src_port(nsp);
            seg.update_for_addr(s, ns);
        }
        let ip = ipv4::Packet::new_checked(&pkt[..]).unwrap();
        prop_assert!(ip.verify_checksum());
        let seg = tcp::Segment::new_checked(ip.payload()).unwrap();
        prop_assert!(seg.verify_checksum(ns, d));
        prop_assert_eq!(seg.src_port(), nsp);
        prop_assert_eq!(tcp::Repr::parse(&seg, Some((ns, d))).unwrap().payload_len, payload.len());
    }
}
