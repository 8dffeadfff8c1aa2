//! The pipeline end to end: a masquerading, port-forwarding router, frame by frame.

use fwc_compiler::interp::Fate;
use fwc_compiler::loader::MemFiles;
use fwc_jit::{JitProgram, Options};
use fwc_runtime::conntrack::{Config, CtInfo, Table, TcpState};
use fwc_runtime::datapath::{Datapath, Link};
use fwc_runtime::wire::{ipv4, tcp, udp};
use std::net::Ipv4Addr;
use tcp::flags::*;

const ROUTER: &str = "
interface eth0 address 203.0.113.2;
interface eth1 address 10.0.0.1;
table nat {
    chain prerouting { iif eth0 tcp dport 8080 dnat to 10.0.0.10:80; }
    chain postrouting { oif eth0 ip saddr 10.0.0.0/24 masquerade; }
}
table filter {
    chain forward policy drop {
        ct state established,related accept;
        iif eth1 oif eth0 ip saddr 10.0.0.0/24 accept;
        iif eth0 oif eth1 ip daddr 10.0.0.10 tcp dport 80 ct state new accept;
    }
    chain input policy drop {
        ct state established,related accept;
        iif eth1 udp dport 53 accept;
    }
}
";

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const SITE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const VISITOR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

fn datapath() -> Datapath {
    let c = fwc_compiler::compile_source("router.fw", ROUTER, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    Datapath::new(jit, Table::new(Config::default()), vec![WAN, LAN])
}

#[allow(clippy::too_many_arguments)]
fn tcp_ip(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let r = tcp::Repr {
        src_port: sp,
        dst_port: dp,
        seq,
        ack,
        flags,
        window: 64000,
        payload_len: 0,
    };
    ipv4::Repr::packet(src, dst, ipv4::PROTO_TCP, 20, |b, s, d| r.emit(b, s, d)).unwrap()
}

/// (src, sport, dst, dport, ttl) of an output frame, checking every checksum.
fn seen(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16, u8) {
    let ip = ipv4::Packet::new_checked(frame).unwrap();
    assert!(ip.verify_checksum(), "IP checksum");
    let s = tcp::Segment::new_checked(ip.payload()).unwrap();
    assert!(s.verify_checksum(ip.src(), ip.dst()), "TCP checksum");
    (ip.src(), s.src_port(), ip.dst(), s.dst_port(), ip.ttl())
}

#[test]
fn masquerade_a_connection_out_and_its_replies_back() {
    let mut dp = datapath();
    // SYN from the LAN out of eth0: masqueraded to the WAN address, TTL decremented
    let d = dp.process(
        0,
        Link::RawIp,
        &tcp_ip(PC, 40000, SITE, 443, 1, 0, SYN),
        Some("eth1"),
        Some("eth0"),
    );
    assert_eq!((d.fate, d.ct), (Fate::Accept, Some(CtInfo::New)));
    assert_eq!(seen(d.frame.as_ref().unwrap()), (WAN, 40000, SITE, 443, 63));
    assert_eq!(dp.ct.len(), 1, "confirmed once through");
    // the SYN/ACK comes back to the WAN address: de-masqueraded and forwarded, not input
    let d = dp.process(
        10,
        Link::RawIp,
        &tcp_ip(SITE, 443, WAN, 40000, 900, 2, SYN | ACK),
        Some("eth0"),
        Some("eth1"),
    );
    assert_eq!(
        (d.fate, d.ct),
        (Fate::Accept, Some(CtInfo::EstablishedReply))
    );
    assert_eq!(d.path, Some(fwc_compiler::interp::PathKind::Forward));
    assert_eq!(seen(d.frame.as_ref().unwrap()), (SITE, 443, PC, 40000, 63));
    // the third ACK: established and assured
    let d = dp.process(
        20,
        Link::RawIp,
        &tcp_ip(PC, 40000, SITE, 443, 2, 901, ACK),
        Some("eth1"),
        Some("eth0"),
    );
    assert_eq!(d.ct, Some(CtInfo::Established));
    assert_eq!(seen(d.frame.as_ref().unwrap()).0, WAN);
    let list = dp.ct.list(20);
    assert!(list.contains("ESTABLISHED src=10.0.0.2 dst=198.51.100.9 sport=40000 dport=443 src=198.51.100.9 dst=203.0.113.2 sport=443 dport=40000 [ASSURED]"), "{list}");
    // an unsolicited SYN from outside to that port: no connection, dropped by policy
    let d = dp.process(
        30,
        Link::RawIp,
        &tcp_ip(VISITOR, 5555, WAN, 40000, 1, 0, SYN),
        Some("eth0"),
        Some("eth1"),
    );
    assert_eq!(d.fate, Fate::Drop);
    assert_eq!(dp.ct.len(), 1, "a dropped NEW packet leaves no entry");
}

#[test]
fn a_port_forward_is_routed_to_the_server_and_answers_come_from_the_router() {
    let mut dp = datapath();
    // to the router's WAN address, port 8080: DNAT to the web server, then *forwarded*
    let d = dp.process(
        0,
        Link::RawIp,
        &tcp_ip(VISITOR, 5555, WAN, 8080, 1, 0, SYN),
        Some("eth0"),
        Some("eth1"),
    );
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(d.path, Some(fwc_compiler::interp::PathKind::Forward));
    assert_eq!(
        seen(d.frame.as_ref().unwrap()),
        (VISITOR, 5555, WEB, 80, 63)
    );
    let d = dp.process(
        1,
        Link::RawIp,
        &tcp_ip(WEB, 80, VISITOR, 5555, 70, 2, SYN | ACK),
        Some("eth1"),
        Some("eth0"),
    );
    assert_eq!(d.fate, Fate::Accept);
    // the server's answer leaves with the router's address and port, as the visitor expects
    assert_eq!(
        seen(d.frame.as_ref().unwrap()),
        (WAN, 8080, VISITOR, 5555, 63)
    );
    let e = dp.ct.list(1);
    assert!(e.contains("SYN_RECV src=192.0.2.77 dst=203.0.113.2 sport=5555 dport=8080 src=10.0.0.10 dst=192.0.2.77 sport=80 dport=5555"), "{e}");
}

/// With a routing table (as under NFQUEUE, where a packet queued at prerouting has no
/// output interface yet), routing after the DNAT gives the forwarded packet its interface,
/// which the `forward` rule's `oif eth1` and the masquerade's `oif eth0` match.
#[test]
fn routing_after_prerouting_sets_the_output_interface() {
    let mut dp = datapath();
    dp.routes = Some(fwc_runtime::live::Routes::parse(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100710B\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth1\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
    ));
    let d = dp.process(
        0,
        Link::RawIp,
        &tcp_ip(VISITOR, 5555, WAN, 8080, 1, 0, SYN),
        Some("eth0"),
        None,
    );
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(
        seen(d.frame.as_ref().unwrap()),
        (VISITOR, 5555, WEB, 80, 63)
    );
    // from the LAN out: routed to eth0, so masqueraded
    let d = dp.process(
        1,
        Link::RawIp,
        &tcp_ip(PC, 40000, SITE, 443, 1, 0, SYN),
        Some("eth1"),
        None,
    );
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(seen(d.frame.as_ref().unwrap()).0, WAN);
    // without routes and without an output interface, neither rule matches
    let mut bare = datapath();
    let d = bare.process(
        0,
        Link::RawIp,
        &tcp_ip(VISITOR, 5555, WAN, 8080, 1, 0, SYN),
        Some("eth0"),
        None,
    );
    assert_eq!(d.fate, Fate::Drop);
}

#[test]
fn local_traffic_malformed_frames_and_ttl() {
    let mut dp = datapath();
    // DNS to the router itself from the LAN: the input path, TTL untouched
    let ir = ipv4::Repr {
        src: PC,
        dst: LAN,
        protocol: ipv4::PROTO_UDP,
        ttl: 64,
        ident: 0,
        dont_frag: false,
        payload_len: 12,
    };
    let mut q = vec![0u8; ir.total_len()];
    ir.emit(&mut q).unwrap();
    udp::Repr {
        src_port: 3333,
        dst_port: 53,
        payload_len: 4,
    }
    .emit(&mut q[20..], PC, LAN)
    .unwrap();
    let d = dp.process(0, Link::RawIp, &q, Some("eth1"), None);
    assert_eq!(
        (d.fate, d.path),
        (Fate::Accept, Some(fwc_compiler::interp::PathKind::Input))
    );
    assert_eq!(
        ipv4::Packet::new_checked(&d.frame.unwrap()[..])
            .unwrap()
            .ttl(),
        64
    );
    // a truncated packet is dropped with a reason, never read past its end
    let syn = tcp_ip(PC, 1, SITE, 2, 1, 0, SYN);
    for n in [0, 5, 19, 30] {
        let d = dp.process(1, Link::RawIp, &syn[..n], Some("eth1"), Some("eth0"));
        assert_eq!(d.fate, Fate::Drop);
    }
    // TTL 1 cannot be forwarded, and the connection it would have opened is not kept
    let mut dying = tcp_ip(PC, 2, SITE, 443, 1, 0, SYN);
    let mut p = ipv4::Packet::new_checked(&mut dying[..]).unwrap();
    p.set_ttl(1);
    let before = dp.ct.len();
    let d = dp.process(2, Link::RawIp, &dying, Some("eth1"), Some("eth0"));
    assert_eq!(
        (d.fate, d.reason),
        (Fate::Drop, Some("TTL expired in transit"))
    );
    assert_eq!(dp.ct.len(), before, "{}", dp.ct.list(2));
    // when the kernel forwards (NFQUEUE), the datapath leaves the TTL to it
    dp.forwards = false;
    let d = dp.process(2, Link::RawIp, &dying, Some("eth1"), Some("eth0"));
    assert_eq!(d.fate, Fate::Accept);
    assert_eq!(
        ipv4::Packet::new_checked(&d.frame.unwrap()[..])
            .unwrap()
            .ttl(),
        1
    );
    dp.forwards = true;
    // an Ethernet frame that is not IPv4 passes untouched
    let arp = [
        vec![0xff; 6],
        vec![2, 0, 0, 0, 0, 1],
        vec![0x08, 0x06],
        vec![0; 28],
    ]
    .concat();
    let d = dp.process(3, Link::Ethernet, &arp, Some("eth1"), None);
    assert_eq!(d.frame.as_deref(), Some(&arp[..]));
    assert_eq!(dp.stats.not_ip, 1);
    let _ = TcpState::Established;
}

const LB: &str = "
table filter {
    chain input policy drop { tcp dport 80 ip daddr 198.51.100.10 accept; }
    chain forward policy drop { ct state established,related accept; }
}
service web {
    virtual tcp 198.51.100.10:80;
    scheduler rr;
    real 10.0.1.1:8080 weight 1 nat;
    real 10.0.1.2:8080 weight 1 nat;
    real 10.0.1.3:8080 weight 1 nat;
}
";

#[test]
fn an_ipvs_service_spreads_connections_and_keeps_each_on_its_server() {
    let c = fwc_compiler::compile_source("lb.fw", LB, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let vip = Ipv4Addr::new(198, 51, 100, 10);
    let mut chosen = Vec::new();
    for k in 0..6u8 {
        let client = Ipv4Addr::new(192, 0, 2, 100 + k);
        let d = dp.process(
            u64::from(k),
            Link::RawIp,
            &tcp_ip(client, 40000, vip, 80, 1, 0, SYN),
            Some("eth0"),
            Some("eth1"),
        );
        assert_eq!(d.fate, Fate::Accept, "{d:?}");
        let (_, _, real, port, _) = seen(d.frame.as_ref().unwrap());
        assert_eq!(port, 8080);
        chosen.push(real);
        // the server answers the client: the source becomes the virtual address again
        let r = dp.process(
            10 + u64::from(k),
            Link::RawIp,
            &tcp_ip(real, 8080, client, 40000, 5, 2, SYN | ACK),
            Some("eth1"),
            Some("eth0"),
        );
        assert_eq!(r.fate, Fate::Accept, "{r:?}");
        assert_eq!(
            seen(r.frame.as_ref().unwrap()),
            (vip, 80, client, 40000, 63)
        );
        // the client's next segment sticks to the same server
        let n = dp.process(
            20 + u64::from(k),
            Link::RawIp,
            &tcp_ip(client, 40000, vip, 80, 2, 6, ACK),
            Some("eth0"),
            Some("eth1"),
        );
        assert_eq!(n.fate, Fate::Accept, "{n:?}");
        assert_eq!(seen(n.frame.as_ref().unwrap()).2, real);
    }
    // round robin over the three real servers
    let reals: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
    assert_eq!(chosen, [reals.clone(), reals].concat());
    // each server has two established connections
    let l = dp.ipvs_listing();
    assert!(l.contains("TCP  198.51.100.10:80 rr"), "{l}");
    for r in 1..=3 {
        let line =
            format!("  -> 10.0.1.{r}:8080                Masq    1      2          0         ");
        assert!(l.contains(&line), "{l}");
    }
    // and its traffic: per connection a SYN and an ACK in, a SYN/ACK out, 40 bytes each
    let st = dp.ipvs_stats_listing();
    assert!(
        st.contains(
            "\nTCP  198.51.100.10:80                    6       12        6      480      240\n"
        ),
        "{st}"
    );
    for r in 1..=3 {
        let line = format!(
            "  -> 10.0.1.{r}:8080                       2        4        2      160       80\n"
        );
        assert!(st.contains(&line), "{st}");
    }
}

/// The control socket, in process: a client thread asks while the datapath's loop polls.
#[test]
fn the_control_socket_lists_counts_flushes_and_reloads() {
    use fwc_runtime::control::{request, Control, Request};
    let mut dp = datapath();
    // one connection out, masqueraded
    let syn = tcp_ip(PC, 40000, SITE, 443, 1, 0, SYN);
    assert_eq!(
        dp.process(0, Link::RawIp, &syn, Some("eth1"), Some("eth0"))
            .fate,
        Fate::Accept
    );
    // two from outside to the LAN that no forward rule accepts: the policy drops them
    for port in [23, 24] {
        let d = dp.process(
            0,
            Link::RawIp,
            &tcp_ip(VISITOR, 1000, PC, port, 1, 0, SYN),
            Some("eth0"),
            Some("eth1"),
        );
        assert_eq!((d.fate, d.deciding_rule), (Fate::Drop, None));
    }
    let sock = std::env::temp_dir().join(format!("fwc-ctl-test-{}.sock", std::process::id()));
    let mut ctl = Control::bind(&sock).unwrap();
    // a second datapath cannot take the same socket while this one answers
    assert!(Control::bind(&sock).is_err());
    let client = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let ask = |r: Request| request(&sock, &r).unwrap();
            let list = ask(Request::ConntrackList).unwrap();
            let count = ask(Request::ConntrackCount).unwrap();
            let rules = ask(Request::List { line_numbers: true }).unwrap();
            let counters = ask(Request::Counters).unwrap();
            let bad = ask(Request::Reload("/nonexistent/x.fw".into()));
            let reload = ask(Request::Reload("/ok.fw".into()));
            let flushed = ask(Request::ConntrackFlush).unwrap();
            let after = ask(Request::ConntrackCount).unwrap();
            (list, count, bad, reload, flushed, after, rules, counters)
        })
    };
    let mut reloads = 0;
    let mut reload = |p: &std::path::Path| {
        if p.to_str() == Some("/ok.fw") {
            reloads += 1;
            let c = fwc_compiler::compile_source(
                "new.fw",
                "table filter { chain forward policy drop { } }",
                &MemFiles::default(),
            );
            Ok(JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap())
        } else {
            Err(format!("`{}` did not compile", p.display()))
        }
    };
    let start = std::time::Instant::now();
    while !client.is_finished() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        ctl.poll(&mut dp, 1000, &mut reload);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (list, count, bad, reload_reply, flushed, after, rules, counters) = client.join().unwrap();
    // the forward rule that let the SYN out counted it, in `fwc list` and in the profile
    let line = rules
        .lines()
        .find(|l| l.contains("ip saddr 10.0.0.0/24") && l.contains("accept"))
        .unwrap_or_else(|| panic!("{rules}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (f[0], f[1], f[2]),
        ("2", "1", syn.len().to_string().as_str()),
        "{rules}"
    );
    assert!(line.ends_with("# router.fw:11"), "{line}");
    // the policies count what they decided, as `iptables -L -v` does: every packet went
    // through nat/prerouting's policy; filter/forward's dropped the two from outside
    assert!(
        rules.starts_with(&format!(
            "Chain nat/prerouting (policy accept 3 packets, {} bytes)\n",
            3 * syn.len()
        )),
        "{rules}"
    );
    assert!(
        rules.contains(&format!(
            "Chain filter/forward (policy drop 2 packets, {} bytes)\n",
            2 * syn.len()
        )),
        "{rules}"
    );
    let profile = fwc_compiler::opt::Profile::parse(&counters).unwrap();
    assert_eq!(
        profile
            .rules
            .iter()
            .find(|r| r.location == "router.fw:11")
            .map(|r| r.packets),
        Some(1),
        "{counters}"
    );
    assert!(
        list.starts_with("tcp      6 119 SYN_SENT src=10.0.0.2 dst=198.51.100.9 sport=40000 dport=443 [UNREPLIED] src=198.51.100.9 dst=203.0.113.2 sport=443 dport=40000"),
        "{list}"
    );
    assert!(
        list.ends_with("1 flow entries have been shown.\n"),
        "{list}"
    );
    assert_eq!(count, "1\n");
    assert_eq!(bad, Err("`/nonexistent/x.fw` did not compile".into()));
    assert_eq!(reload_reply, Ok(String::new()));
    assert_eq!(reloads, 1);
    assert!(flushed.contains("has been emptied"));
    assert_eq!(after, "0\n");
    // the new program is in force: the LAN may no longer go out
    let d = dp.process(2000, Link::RawIp, &syn, Some("eth1"), Some("eth0"));
    assert_eq!(d.fate, Fate::Drop);
    drop(ctl);
    assert!(
        !sock.exists(),
        "the socket file is removed with its listener"
    );
}

/// ActiveConn / InActConn follow the connections' TCP states and lifetimes, and `lc`
/// schedules by them (overhead = active × 256 + inactive), across a reload too.
#[test]
fn ipvs_connection_counts_follow_conntrack_and_steer_lc() {
    let src = LB
        .replace("scheduler rr;", "scheduler lc;")
        .replace("    real 10.0.1.3:8080 weight 1 nat;\n", "");
    let compile = |src: &str| {
        let c = fwc_compiler::compile_source("lb.fw", src, &MemFiles::default());
        assert!(!c.has_errors(), "{:?}", c.diags);
        JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap()
    };
    let mut dp = Datapath::new(compile(&src), Table::new(Config::default()), vec![]);
    let vip = Ipv4Addr::new(198, 51, 100, 10);
    let (r1, r2) = (Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2));
    let a = Ipv4Addr::new(192, 0, 2, 1);
    let syn = |dp: &mut Datapath, t: u64, client: Ipv4Addr| {
        let d = dp.process(
            t,
            Link::RawIp,
            &tcp_ip(client, 40000, vip, 80, 1, 0, SYN),
            Some("eth0"),
            Some("eth1"),
        );
        assert_eq!(d.fate, Fate::Accept, "{d:?}");
        seen(d.frame.as_ref().unwrap()).2
    };
    let counts = |dp: &mut Datapath| -> Vec<(String, String)> {
        dp.ipvs_listing()
            .lines()
            .filter(|l| l.starts_with("  -> 10."))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[4].to_string(), f[5].to_string())
            })
            .collect()
    };
    // A: scheduled to r1, then established both ways: active on r1
    assert_eq!(syn(&mut dp, 0, a), r1);
    for (t, p) in [
        (1, tcp_ip(r1, 8080, a, 40000, 5, 2, SYN | ACK)),
        (2, tcp_ip(a, 40000, vip, 80, 2, 6, ACK)),
    ] {
        let l = if t == 1 { "eth1" } else { "eth0" };
        assert_eq!(
            dp.process(t, Link::RawIp, &p, Some(l), None).fate,
            Fate::Accept
        );
    }
    assert_eq!(
        counts(&mut dp),
        [("1".into(), "0".into()), ("0".into(), "0".into())]
    );
    // B and C: r1's overhead is 256, r2's 0 and then 1: both go to r2, inactive (SYN_SENT)
    assert_eq!(syn(&mut dp, 3, Ipv4Addr::new(192, 0, 2, 2)), r2);
    assert_eq!(syn(&mut dp, 4, Ipv4Addr::new(192, 0, 2, 3)), r2);
    assert_eq!(
        counts(&mut dp),
        [("1".into(), "0".into()), ("0".into(), "2".into())]
    );
    // a reload keeps them
    dp.replace_program(compile(&src));
    assert_eq!(
        counts(&mut dp),
        [("1".into(), "0".into()), ("0".into(), "2".into())]
    );
    // A is reset: it leaves ESTABLISHED, so r1 counts it as inactive
    let rst = tcp_ip(a, 40000, vip, 80, 2, 6, RST);
    assert_eq!(
        dp.process(5, Link::RawIp, &rst, Some("eth0"), None).fate,
        Fate::Accept
    );
    assert_eq!(
        counts(&mut dp),
        [("0".into(), "1".into()), ("0".into(), "2".into())]
    );
    // five minutes later every entry has expired, and the counts are back to zero
    assert_eq!(syn(&mut dp, 300_000, Ipv4Addr::new(192, 0, 2, 4)), r1);
    assert_eq!(
        counts(&mut dp),
        [("0".into(), "1".into()), ("0".into(), "0".into())]
    );
}

/// A retransmitted SYN to a virtual service is still a new connection to the rules: as in
/// Linux, it meets the input rules with its virtual destination (IPVS runs at LOCAL_IN) and
/// goes to the real server already chosen, never through the forward rules.
#[test]
fn later_packets_to_a_virtual_service_take_the_input_rules_then_their_real_server() {
    let c = fwc_compiler::compile_source("lb.fw", LB, &MemFiles::default());
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let vip = Ipv4Addr::new(198, 51, 100, 10);
    let client = Ipv4Addr::new(192, 0, 2, 9);
    let syn = tcp_ip(client, 40000, vip, 80, 1, 0, SYN);
    let first = dp.process(0, Link::RawIp, &syn, Some("eth0"), None);
    assert_eq!(first.fate, Fate::Accept, "{first:?}");
    let real = seen(first.frame.as_ref().unwrap()).2;
    let again = dp.process(1000, Link::RawIp, &syn, Some("eth0"), None);
    assert_eq!(again.fate, Fate::Accept, "{again:?}");
    assert_eq!(again.ct, Some(CtInfo::New));
    assert_eq!(again.path, Some(fwc_compiler::interp::PathKind::Forward));
    assert_eq!(
        seen(again.frame.as_ref().unwrap()),
        (client, 40000, real, 8080, 63)
    );
    // the input rule that accepted both counted them
    let rules = fwc_runtime::control::list_rules(&dp, false);
    let input = rules
        .lines()
        .find(|l| l.contains("dport 80"))
        .unwrap_or_else(|| panic!("{rules}"));
    assert_eq!(input.split_whitespace().next(), Some("2"), "{rules}");
}

/// A persistent service keeps a client on its real server for the template's time, then
/// schedules it afresh.
#[test]
fn a_persistent_service_keeps_each_client_on_its_server_while_the_template_lives() {
    let src = LB
        .replace("scheduler rr;", "scheduler rr;\n    persistent 300;")
        .replace("    real 10.0.1.3:8080 weight 1 nat;\n", "");
    let c = fwc_compiler::compile_source("lb.fw", &src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let vip = Ipv4Addr::new(198, 51, 100, 10);
    let (r1, r2) = (Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2));
    let (a, b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    let mut conn = |t: u64, client: Ipv4Addr, sport: u16| {
        let d = dp.process(
            t,
            Link::RawIp,
            &tcp_ip(client, sport, vip, 80, 1, 0, SYN),
            Some("eth0"),
            None,
        );
        assert_eq!(d.fate, Fate::Accept, "{d:?}");
        seen(d.frame.as_ref().unwrap()).2
    };
    assert_eq!(conn(0, a, 1000), r1);
    // round robin alone would now pick r2: the template keeps a on r1
    assert_eq!(conn(1_000, a, 1001), r1);
    assert_eq!(conn(2_000, b, 2000), r2);
    assert_eq!(conn(250_000, b, 2001), r2);
    // 300 s after b's last connection its template has expired: round robin again (r1)
    assert_eq!(conn(551_000, b, 2002), r1);
}

/// NAT has no place at `forward`: a port forward's reply still has the server's source
/// address in `postrouting`'s mangle chain (-150), and is translated back at the nat
/// priority (100), as in Linux.
#[test]
fn postrouting_mangle_sees_a_port_forward_reply_before_its_source_is_translated() {
    let src = format!(
        "{ROUTER}\ntable mangle {{ chain postrouting {{ ip saddr 10.0.0.10 tcp sport 80 accept; }} }}\n"
    );
    let c = fwc_compiler::compile_source("router.fw", &src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![WAN, LAN]);
    let syn = tcp_ip(VISITOR, 5555, WAN, 8080, 1, 0, SYN);
    assert_eq!(
        dp.process(0, Link::RawIp, &syn, Some("eth0"), Some("eth1"))
            .fate,
        Fate::Accept
    );
    let reply = tcp_ip(WEB, 80, VISITOR, 5555, 70, 2, SYN | ACK);
    let d = dp.process(1, Link::RawIp, &reply, Some("eth1"), Some("eth0"));
    assert_eq!(
        seen(d.frame.as_ref().unwrap()),
        (WAN, 8080, VISITOR, 5555, 63)
    );
    let rules = fwc_runtime::control::list_rules(&dp, false);
    let mangle = rules
        .lines()
        .find(|l| l.contains("ip saddr 10.0.0.10"))
        .unwrap_or_else(|| panic!("{rules}"));
    assert_eq!(mangle.split_whitespace().next(), Some("1"), "{rules}");
}

/// `limit` is a token bucket on the datapath's clock (nft's: `burst` packets at once, then
/// one per `1/rate`), per rule; `limit != RATE` (nft's `limit over`) is its complement; a reload starts the buckets
/// full again.
#[test]
fn limit_is_a_token_bucket_on_the_datapath_clock() {
    let src = "
table filter {
    chain forward policy drop {
        tcp dport 80 limit 2/second burst 3 accept;
        tcp dport 81 limit != 2/second burst 3 drop;
        tcp dport 81 accept;
    }
}";
    let c = fwc_compiler::compile_source("l.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let program = c.checked.unwrap().program;
    let jit = JitProgram::compile(&program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let send = |dp: &mut Datapath, now: u64, port: u16, sport: u16| {
        let f = tcp_ip(VISITOR, sport, SITE, port, 1, 0, SYN);
        dp.process(now, Link::RawIp, &f, Some("eth0"), Some("eth1"))
            .fate
            == Fate::Accept
    };
    for port in [80, 81] {
        // a burst of 3 at once, then nothing until a token comes back (every 500 ms)
        let got: Vec<bool> = (0..5)
            .map(|k| send(&mut dp, 1000, port, 1000 + k))
            .collect();
        assert_eq!(got, [true, true, true, false, false], "port {port}");
        assert!(!send(&mut dp, 1499, port, 2000), "port {port}");
        assert!(send(&mut dp, 1500, port, 2001), "port {port}");
        assert!(!send(&mut dp, 1500, port, 2002), "port {port}");
        // a long pause refills the bucket to its burst, no more
        let got: Vec<bool> = (0..4)
            .map(|k| send(&mut dp, 60_000, port, 3000 + k))
            .collect();
        assert_eq!(got, [true, true, true, false], "port {port}");
    }
    // a reload: full buckets again
    dp.replace_program(JitProgram::compile(&program, Options::default()).unwrap());
    assert!(send(&mut dp, 60_000, 80, 4000));
}

/// `statistic probability p` draws a coin per packet: about p of them match, the same
/// sequence for the same traffic (a fixed seed), so a replay stays deterministic.
#[test]
fn statistic_draws_coins() {
    let src = "table filter { chain forward policy drop { statistic probability 0.25 accept; } }";
    let run = || {
        let c = fwc_compiler::compile_source("s.fw", src, &MemFiles::default());
        let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
        let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
        (0..4000u16)
            .map(|k| {
                let f = tcp_ip(VISITOR, 1000 + k, SITE, 80, 1, 0, SYN);
                dp.process(u64::from(k), Link::RawIp, &f, None, None).fate == Fate::Accept
            })
            .collect::<Vec<bool>>()
    };
    let a = run();
    let hits = a.iter().filter(|&&x| x).count();
    assert!((900..=1100).contains(&hits), "{hits} of 4000");
    assert_eq!(a, run(), "the same coins for the same traffic");
}

/// `log` and `audit` statements write the kernel's lines to the datapath's log, for the
/// packets whose rule ran them, whatever their fate.
#[test]
fn log_and_audit_lines_go_to_the_log() {
    let src = r#"
table filter {
    chain forward policy drop {
        tcp dport 22 log prefix "ssh: " audit drop;
        tcp dport 80 log prefix "web: " accept;
    }
}"#;
    let c = fwc_compiler::compile_source("log.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let lines = lines.clone();
        dp.set_log(Box::new(move |l| lines.lock().unwrap().push(l.to_string())));
    }
    for port in [22, 80, 443] {
        let f = tcp_ip(VISITOR, 5000, SITE, port, 1, 0, SYN);
        dp.process(0, Link::RawIp, &f, Some("eth0"), Some("eth1"));
    }
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "ssh: IN=eth0 OUT=eth1 SRC=192.0.2.77 DST=198.51.100.9 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=5000 DPT=22 WINDOW=64000 RES=0x00 SYN URGP=0 ",
            "NETFILTER_PKT mark=0x0 saddr=192.0.2.77 daddr=198.51.100.9 proto=6",
            "web: IN=eth0 OUT=eth1 SRC=192.0.2.77 DST=198.51.100.9 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=5000 DPT=80 WINDOW=64000 RES=0x00 SYN URGP=0 ",
        ]
    );
}

/// Each log line carries its own statement's prefix: two in one rule, and a subchain's
/// logging rule met twice.
#[test]
fn each_log_statement_writes_its_own_prefix() {
    let src = r#"
chain inner() { log prefix "inner: " audit; }
table filter {
    chain forward policy accept {
        tcp dport 22 log prefix "a: " log prefix "b: " jump inner();
        tcp dport 22 jump inner();
    }
}"#;
    let c = fwc_compiler::compile_source("log2.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(Config::default()), vec![]);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let lines = lines.clone();
        dp.set_log(Box::new(move |l| lines.lock().unwrap().push(l.to_string())));
    }
    let f = tcp_ip(VISITOR, 5000, SITE, 22, 1, 0, SYN);
    dp.process(0, Link::RawIp, &f, Some("eth0"), Some("eth1"));
    let prefixes: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.split("IN=").next().unwrap().to_string())
        .collect();
    assert_eq!(
        prefixes,
        [
            "a: ",
            "b: ",
            "inner: ",
            "NETFILTER_PKT mark=0x0 saddr=192.0.2.77 daddr=198.51.100.9 proto=6",
            "inner: ",
            "NETFILTER_PKT mark=0x0 saddr=192.0.2.77 daddr=198.51.100.9 proto=6"
        ]
    );
}
