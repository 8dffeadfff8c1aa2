//! NAT: choosing a connection's translated tuple on its first packet (SEMANTICS §2.3,
//! `get_unique_tuple`), and rewriting every later packet of both directions (§2.2) with
//! incremental checksum updates (§2.4).
//!
//! The choice is recorded in conntrack: the entry's REPLY tuple becomes the inverse of the
//! translated tuple, so replies find the entry and are translated back.

use crate::conntrack::{Dir, Entry, Table, Tuple};
use crate::wire::{icmp, ipv4, tcp, udp, Error};
use std::net::Ipv4Addr;

/// Which half of the tuple a NAT statement changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manip {
    /// snat, masquerade (postrouting, input)
    Src,
    /// dnat, redirect (prerouting, output)
    Dst,
}

/// A NAT target, as `snat to A-B:P-Q random persistent` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub addr: Option<(Ipv4Addr, Ipv4Addr)>,
    pub ports: Option<(u16, u16)>,
    pub random: bool,
    pub persistent: bool,
}

impl Range {
    pub fn from_ir(r: &fwc_compiler::ir::NatRange) -> Range {
        Range {
            addr: r.addr.map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b))),
            ports: r.ports,
            random: r.random,
            persistent: r.persistent,
        }
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP | ipv4::PROTO_ICMP)
}

/// The tuple the original direction's packets will have after `manip` with `range`, unique
/// in `table` (its inverse is no entry's tuple); `None` when every candidate is taken.
/// `random` supplies the random start offsets (the kernel's `get_random_u32`).
pub fn unique_tuple(
    orig: &Tuple,
    range: &Range,
    manip: Manip,
    table: &Table,
    random: &mut dyn FnMut() -> u32,
) -> Option<Tuple> {
    let used = |t: &Tuple| t.invert().is_none_or(|inv| table.in_use(&inv));
    let (cur_addr, cur_port) = match manip {
        Manip::Src => (orig.src, orig.sport),
        Manip::Dst => (orig.dst, orig.dport),
    };
    let with = |addr: Ipv4Addr, port: u16| {
        let mut t = *orig;
        match manip {
            Manip::Src => {
                t.src = addr;
                t.sport = port;
            }
            Manip::Dst => {
                t.dst = addr;
                t.dport = port;
            }
        }
        t
    };
    let in_addr_range = |a: Ipv4Addr| range.addr.is_none_or(|(lo, hi)| lo <= a && a <= hi);
    let in_port_range = |p: u16| range.ports.is_none_or(|(lo, hi)| lo <= p && p <= hi);
    let icmp = orig.proto == ipv4::PROTO_ICMP;
    // 1. source NAT keeps the tuple when it already fits and is free
    if manip == Manip::Src
        && !range.random
        && in_addr_range(cur_addr)
        && in_port_range(cur_port)
        && !used(orig)
    {
        return Some(*orig);
    }
    // 2. the address: the one given, or a hash of the source into the range (the
    //    destination joins the seed unless `persistent`)
    let addr = match range.addr {
        None => cur_addr,
        Some((lo, hi)) if lo == hi => lo,
        Some((lo, hi)) => {
            let size = u64::from(u32::from(hi) - u32::from(lo)) + 1;
            let seed = if range.persistent {
                0
            } else {
                u64::from(u32::from(orig.dst))
            };
            let h = mix(u64::from(u32::from(orig.src)) ^ (seed << 32));
            Ipv4Addr::from(u32::from(lo) + (h % size) as u32)
        }
    };
    if !has_ports(orig.proto) {
        let t = with(addr, cur_port);
        return (!used(&t)).then_some(t);
    }
    // 3. keep the port when it fits and the tuple is free
    if !range.random && in_port_range(cur_port) {
        let t = with(addr, cur_port);
        if !used(&t) {
            return Some(t);
        }
    }
    // destination NAT without a port range never changes the port, and ICMP's destination
    // half is its type and code, not an id
    if manip == Manip::Dst && (range.ports.is_none() || icmp) {
        return None;
    }
    // 4. search the range (or the implicit class-preserving one)
    let (min, max) = match range.ports {
        Some(r) => r,
        None if icmp => (0, 65535),
        None if cur_port < 512 => (1, 511),
        None if cur_port < 1024 => (600, 1023),
        None => (1024, 65535),
    };
    let size = u32::from(max) - u32::from(min) + 1;
    let mut offset = if manip == Manip::Src || range.random {
        random()
    } else {
        0
    };
    let mut attempts = size.min(128);
    loop {
        for i in 0..attempts {
            let p = (u32::from(min) + (offset.wrapping_add(i)) % size) as u16;
            let t = with(addr, p);
            if !used(&t) {
                return Some(t);
            }
        }
        if attempts >= size {
            return None;
        }
        attempts /= 2;
        if attempts < 16 {
            return None;
        }
        offset = random();
    }
}

/// What a packet of `dir` must become at a hook doing `manip`: `Some((addr, port))` for the
/// half to rewrite, `None` when nothing changes.
pub fn target(e: &Entry, dir: Dir, manip: Manip) -> Option<(Ipv4Addr, u16)> {
    // original packets should look like the inverse of the reply tuple, and replies like the
    // inverse of the original
    let want = match dir {
        Dir::Original => e.tuple[1].invert()?,
        Dir::Reply => e.tuple[0].invert()?,
    };
    let have = e.tuple[dir as usize];
    if have.proto == ipv4::PROTO_ICMP {
        // the echo id sits in the tuples' source half in both directions, and is restored
        // by whichever manipulation the packet meets (as nf_nat's ICMP handler does)
        return match manip {
            Manip::Src if (want.src, want.sport) != (have.src, have.sport) => {
                Some((want.src, want.sport))
            }
            Manip::Dst if (want.dst, want.sport) != (have.dst, have.sport) => {
                Some((want.dst, want.sport))
            }
            _ => None,
        };
    }
    match manip {
        Manip::Src if (want.src, want.sport) != (have.src, have.sport) => {
            Some((want.src, want.sport))
        }
        Manip::Dst if (want.dst, want.dport) != (have.dst, have.dport) => {
            Some((want.dst, want.dport))
        }
        _ => None,
    }
}

/// Rewrites the source or destination address and port (ICMP echo: the id, which lives in
/// the tuple's source port for both halves) of an IPv4 packet in place, updating every
/// checksum incrementally.
pub fn rewrite(bytes: &mut [u8], manip: Manip, addr: Ipv4Addr, port: u16) -> Result<(), Error> {
    let mut ip = ipv4::Packet::new_checked(&mut *bytes)?;
    let (old_addr, proto, first) = (
        match manip {
            Manip::Src => ip.src(),
            Manip::Dst => ip.dst(),
        },
        ip.protocol(),
        ip.frag_offset() == 0,
    );
    match manip {
        Manip::Src => ip.set_src(addr),
        Manip::Dst => ip.set_dst(addr),
    }
    if !first {
        return Ok(()); // later fragments carry no transport header
    }
    match proto {
        ipv4::PROTO_TCP => {
            let mut s = tcp::Segment::new_checked(ip.payload_mut())?;
            s.update_for_addr(old_addr, addr);
            match manip {
                Manip::Src => s.set_src_port(port),
                Manip::Dst => s.set_dst_port(port),
            }
        }
        ipv4::PROTO_UDP => {
            let mut d = udp::Datagram::new_checked(ip.payload_mut())?;
            d.update_for_addr(old_addr, addr);
            match manip {
                Manip::Src => d.set_src_port(port),
                Manip::Dst => d.set_dst_port(port),
            }
        }
        ipv4::PROTO_ICMP => {
            let mut m = icmp::Message::new_checked(ip.payload_mut())?;
            // echo: `port` is the id, whichever half is rewritten
            if !icmp::is_error(m.msg_type()) && m.echo_ident() != port {
                m.set_echo_ident(port);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Translates a tracked packet at a hook: looks up what its connection's NAT asks for this
/// direction and half, and rewrites it. An ICMP error RELATED to the connection has the
/// datagram it quotes translated too (that datagram travelled the other way, so it gets the
/// other half), and its checksum recomputed, as `nf_nat_icmp_reply_translation` does.
/// Returns whether the packet changed.
pub fn apply(
    table: &Table,
    id: crate::conntrack::EntryId,
    dir: Dir,
    manip: Manip,
    bytes: &mut [u8],
) -> Result<bool, Error> {
    let Some(e) = table.get(id) else {
        return Ok(false);
    };
    let Some((addr, port)) = target(e, dir, manip) else {
        return Ok(false);
    };
    let is_error = {
        let ip = ipv4::Packet::new_checked(&*bytes)?;
        ip.protocol() == ipv4::PROTO_ICMP
            && ip.frag_offset() == 0
            && icmp::Message::new_checked(ip.payload()).is_ok_and(|m| icmp::is_error(m.msg_type()))
    };
    if !is_error {
        rewrite(bytes, manip, addr, port)?;
        return Ok(true);
    }
    // the outer header: addresses only
    let mut ip = ipv4::Packet::new_checked(&mut *bytes)?;
    match manip {
        Manip::Src => ip.set_src(addr),
        Manip::Dst => ip.set_dst(addr),
    }
    // the quoted datagram went the other way: it gets the other half, address and port
    let other_dir = match dir {
        Dir::Original => Dir::Reply,
        Dir::Reply => Dir::Original,
    };
    let other = match manip {
        Manip::Src => Manip::Dst,
        Manip::Dst => Manip::Src,
    };
    let msg = ip.payload_mut();
    if target(e, other_dir, other).is_some() {
        // it left translated; the host it goes back to knows it untranslated
        let before = e.tuple[other_dir as usize];
        let (qa, qp) = match other {
            Manip::Src => (before.src, before.sport),
            Manip::Dst => (before.dst, before.dport),
        };
        if msg.len() > icmp::HEADER_LEN {
            let quoted = &mut msg[icmp::HEADER_LEN..];
            let mut q = ipv4::Packet::new_header_checked(&mut *quoted)?;
            match other {
                Manip::Src => q.set_src(qa),
                Manip::Dst => q.set_dst(qa),
            }
            let (hl, proto) = (q.header_len(), q.protocol());
            // the first 8 bytes of the quoted transport header hold its ports (a quote's
            // transport checksum is not maintained, as in the kernel)
            if matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) && quoted.len() >= hl + 4 {
                let at = hl + if other == Manip::Src { 0 } else { 2 };
                quoted[at..at + 2].copy_from_slice(&qp.to_be_bytes());
            }
        }
    }
    icmp::Message::new_checked(msg)?.fill_checksum();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, CtInfo};

    fn udp_pkt(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
        let ir = ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            payload_len: 12,
        };
        let mut b = vec![0u8; ir.total_len()];
        ir.emit(&mut b).unwrap();
        udp::Repr {
            src_port: sp,
            dst_port: dp,
            payload_len: 4,
        }
        .emit(&mut b[20..], src, dst)
        .unwrap();
        b
    }

    fn fields(b: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let ip = ipv4::Packet::new_checked(b).unwrap();
        assert!(ip.verify_checksum());
        let d = udp::Datagram::new_checked(ip.payload()).unwrap();
        assert!(
            d.verify_checksum(ip.src(), ip.dst()),
            "L4 checksum after rewrite"
        );
        (ip.src(), d.src_port(), ip.dst(), d.dst_port())
    }

    const LAN1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const LAN2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const PUB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);

    /// A first packet through conntrack and SNAT; returns the entry.
    fn snat_flow(
        t: &mut Table,
        src: Ipv4Addr,
        sp: u16,
        range: &Range,
        rnd: &mut dyn FnMut() -> u32,
    ) -> (crate::conntrack::EntryId, Vec<u8>) {
        let mut p = udp_pkt(src, sp, DNS, 53);
        let tr = t.track(0, &p);
        assert_eq!(tr.info, CtInfo::New);
        let id = tr.entry.unwrap();
        let orig = t.get(id).unwrap().tuple[0];
        let after = unique_tuple(&orig, range, Manip::Src, t, rnd).expect("a free tuple");
        assert!(t.set_nat(id, after, Manip::Src));
        assert!(apply(t, id, Dir::Original, Manip::Src, &mut p).unwrap());
        assert!(t.confirm(id, 0));
        (id, p)
    }

    #[test]
    fn snat_keeps_the_port_then_avoids_the_clash_and_replies_come_back() {
        let mut t = Table::new(Config::default());
        let range = Range {
            addr: Some((PUB, PUB)),
            ports: Some((1024, 65535)),
            random: false,
            persistent: false,
        };
        let mut rnd = {
            let mut x = 7u32;
            move || {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                x
            }
        };
        let (_, p1) = snat_flow(&mut t, LAN1, 5000, &range, &mut rnd);
        assert_eq!(
            fields(&p1),
            (PUB, 5000, DNS, 53),
            "the client's port is kept when free"
        );
        // a second client with the same port to the same server: 192.0.2.10:5000 is taken
        let (id2, p2) = snat_flow(&mut t, LAN2, 5000, &range, &mut rnd);
        let (s, sp, _, _) = fields(&p2);
        assert_eq!(s, PUB);
        assert_ne!(sp, 5000, "the clash moves the port");
        assert!((1024..=65535).contains(&sp));
        // the server's reply finds the second connection and goes back to 10.0.0.3:5000
        let mut reply = udp_pkt(DNS, 53, PUB, sp);
        let tr = t.track(1, &reply);
        assert_eq!((tr.info, tr.entry), (CtInfo::EstablishedReply, Some(id2)));
        assert!(apply(&t, id2, Dir::Reply, Manip::Dst, &mut reply).unwrap());
        assert_eq!(fields(&reply), (DNS, 53, LAN2, 5000));
        // nothing to do at the source half for a reply of an SNATed flow
        assert!(!apply(&t, id2, Dir::Reply, Manip::Src, &mut reply).unwrap());
    }

    #[test]
    fn dnat_port_forward_and_the_reply_source_is_restored() {
        let mut t = Table::new(Config::default());
        let web = Ipv4Addr::new(10, 0, 0, 10);
        let client = Ipv4Addr::new(203, 0, 113, 7);
        let mut p = udp_pkt(client, 40000, PUB, 8080);
        let id = t.track(0, &p).entry.unwrap();
        let range = Range {
            addr: Some((web, web)),
            ports: Some((80, 80)),
            random: false,
            persistent: false,
        };
        let orig = t.get(id).unwrap().tuple[0];
        let after = unique_tuple(&orig, &range, Manip::Dst, &t, &mut || 0).unwrap();
        assert_eq!((after.dst, after.dport), (web, 80));
        t.set_nat(id, after, Manip::Dst);
        apply(&t, id, Dir::Original, Manip::Dst, &mut p).unwrap();
        assert!(t.confirm(id, 0));
        assert_eq!(fields(&p), (client, 40000, web, 80));
        let mut reply = udp_pkt(web, 80, client, 40000);
        let tr = t.track(1, &reply);
        assert_eq!(tr.info, CtInfo::EstablishedReply);
        apply(&t, id, Dir::Reply, Manip::Src, &mut reply).unwrap();
        assert_eq!(fields(&reply), (PUB, 8080, client, 40000));
    }

    #[test]
    fn implicit_port_classes_and_exhaustion() {
        let mut t = Table::new(Config::default());
        // a privileged source port stays below 512 when it must move
        let one = Range {
            addr: Some((PUB, PUB)),
            ports: None,
            random: false,
            persistent: false,
        };
        snat_flow(&mut t, LAN1, 123, &one, &mut || 0);
        let (_, p) = snat_flow(&mut t, LAN2, 123, &one, &mut || 5);
        let (_, sp, _, _) = fields(&p);
        assert!((1..=511).contains(&sp) && sp != 123, "{sp}");
        // a one-port range taken: no tuple (the packet will be dropped)
        let tiny = Range {
            addr: Some((PUB, PUB)),
            ports: Some((2000, 2000)),
            random: false,
            persistent: false,
        };
        let mut t = Table::new(Config::default());
        snat_flow(&mut t, LAN1, 2000, &tiny, &mut || 0);
        let p = udp_pkt(LAN2, 2000, DNS, 53);
        let id = t.track(0, &p).entry.unwrap();
        let orig = t.get(id).unwrap().tuple[0];
        assert_eq!(unique_tuple(&orig, &tiny, Manip::Src, &t, &mut || 0), None);
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, ident: u16) -> Vec<u8> {
        let ir = ipv4::Repr {
            src,
            dst,
            protocol: ipv4::PROTO_ICMP,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            payload_len: 8,
        };
        let mut b = vec![0u8; ir.total_len()];
        ir.emit(&mut b).unwrap();
        let r = if request {
            icmp::Repr::EchoRequest {
                ident,
                seq: 1,
                data_len: 0,
            }
        } else {
            icmp::Repr::EchoReply {
                ident,
                seq: 1,
                data_len: 0,
            }
        };
        r.emit(&mut b[20..]).unwrap();
        b
    }

    fn echo_fields(b: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16) {
        let ip = ipv4::Packet::new_checked(b).unwrap();
        assert!(ip.verify_checksum());
        let m = icmp::Message::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum());
        (ip.src(), ip.dst(), m.echo_ident())
    }

    #[test]
    fn ping_snat_with_an_id_clash_and_its_reply() {
        let mut t = Table::new(Config::default());
        let range = Range {
            addr: Some((PUB, PUB)),
            ports: None,
            random: false,
            persistent: false,
        };
        let mut ids = Vec::new();
        for src in [LAN1, LAN2] {
            let mut p = echo(src, DNS, true, 42);
            let id = t.track(0, &p).entry.unwrap();
            let orig = t.get(id).unwrap().tuple[0];
            let after = unique_tuple(&orig, &range, Manip::Src, &t, &mut || 1000).unwrap();
            t.set_nat(id, after, Manip::Src);
            apply(&t, id, Dir::Original, Manip::Src, &mut p).unwrap();
            assert!(t.confirm(id, 0));
            ids.push((id, echo_fields(&p).2));
        }
        assert_eq!(ids[0].1, 42);
        assert_ne!(ids[1].1, 42, "the second ping's id moves");
        let mut reply = echo(DNS, PUB, false, ids[1].1);
        let tr = t.track(1, &reply);
        assert_eq!(
            (tr.info, tr.entry),
            (CtInfo::EstablishedReply, Some(ids[1].0))
        );
        apply(&t, ids[1].0, Dir::Reply, Manip::Dst, &mut reply).unwrap();
        assert_eq!(echo_fields(&reply), (DNS, LAN2, 42));
    }

    #[test]
    fn persistent_address_choice_ignores_the_destination() {
        let t = Table::new(Config::default());
        let r = Range {
            addr: Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 199))),
            ports: None,
            random: false,
            persistent: true,
        };
        let pick = |dst: Ipv4Addr| {
            let o = Tuple {
                src: LAN1,
                dst,
                proto: 17,
                sport: 40000,
                dport: 53,
            };
            unique_tuple(&o, &r, Manip::Src, &t, &mut || 0).unwrap().src
        };
        let a = pick(DNS);
        for d in 1..20u8 {
            assert_eq!(pick(Ipv4Addr::new(198, 51, 100, d)), a);
        }
        assert!((100..=199).contains(&a.octets()[3]));
    }
}
