//! The hook registry: functions registered at hooks with priorities, their verdicts, and
//! IPVS (itself a hook function) forwarding by direct routing and tunnelling.

use fwc_compiler::interp::Fate;
use fwc_compiler::ir::{rule_text, Hook};
use fwc_compiler::loader::MemFiles;
use fwc_jit::{HookVerdict, JitProgram, Options, MAX_REPEATS};
use fwc_runtime::conntrack::{Config, Table};
use fwc_runtime::datapath::{Datapath, Link};
use fwc_runtime::ipvs::TcpState;
use fwc_runtime::wire::{ipv4, tcp};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tcp::flags::*;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

fn datapath(src: &str, host: Vec<Ipv4Addr>) -> Datapath {
    let c = fwc_compiler::compile_source("t.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    Datapath::new(jit, Table::new(Config::default()), host)
}

fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let r = tcp::Repr {
        src_port: sport,
        dst_port: dport,
        seq: 1,
        ack: u32::from(flags & ACK != 0),
        flags,
        window: 64000,
        payload_len: 0,
    };
    ipv4::Repr::packet(src, dst, ipv4::PROTO_TCP, 20, |b, s, d| r.emit(b, s, d)).unwrap()
}

fn forward(dp: &mut Datapath, now: u64, frame: &[u8]) -> fwc_runtime::datapath::Decision {
    dp.process(now, Link::RawIp, frame, Some("eth0"), Some("eth1"))
}

/// Forwarding needs mark 7; a registered function is the only thing that sets it.
const MARKED: &str = "
table mangle { chain prerouting { mark 7 counter; } }
table filter { chain forward policy drop { mark 7 accept; } }
";

#[test]
fn functions_run_in_priority_order_among_the_tables() {
    let mut dp = datapath(MARKED, vec![]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = |tag: &'static str, set: Option<u32>| {
        let seen = seen.clone();
        Box::new(move |_: Hook, p: &mut fwc_compiler::interp::Packet| {
            seen.lock().unwrap().push((tag, p.mark, p.ct));
            if let Some(m) = set {
                p.mark = m;
            }
            HookVerdict::Accept
        })
    };
    // registered out of order; equal priorities keep registration order
    dp.register_hook(Hook::Prerouting, -140, log("after mangle", None));
    dp.register_hook(Hook::Prerouting, -250, log("before conntrack", Some(7)));
    dp.register_hook(Hook::Prerouting, -140, log("after mangle, second", None));
    assert_eq!(
        dp.hook_order(Hook::Prerouting),
        [
            "fn 1",
            "conntrack",
            "mangle",
            "fn 0",
            "fn 2",
            "nat (translation)"
        ]
    );
    assert_eq!(dp.hook_order(Hook::Forward), ["ip_forward (TTL)", "filter"]);
    assert_eq!(
        dp.hook_order(Hook::Postrouting),
        ["nat (translation)", "conntrack confirm"]
    );
    let d = forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    let seen = seen.lock().unwrap().clone();
    // before conntrack: the state is not known yet (NEW is the placeholder), mark 0;
    // after mangle both see the mark the first one set, in registration order
    let ct_new = fwc_compiler::ir::ct::NEW;
    assert_eq!(
        seen,
        [
            ("before conntrack", 0, ct_new),
            ("after mangle", 7, ct_new),
            ("after mangle, second", 7, ct_new),
        ]
    );
}

/// A function with a counter and a fixed answer (after `repeats` Repeats).
fn answering(
    calls: &Arc<Mutex<u32>>,
    repeats: u32,
    v: HookVerdict,
) -> fwc_runtime::datapath::HookHandler {
    let calls = calls.clone();
    Box::new(move |_, _| {
        let mut n = calls.lock().unwrap();
        *n += 1;
        if *n <= repeats {
            HookVerdict::Repeat
        } else {
            v
        }
    })
}

const OPEN: &str = "table filter { chain forward policy accept { } }";

#[test]
fn drop_queue_and_stolen_end_the_packet_and_leave_no_connection() {
    for (v, fate) in [
        (HookVerdict::Drop, Fate::Drop),
        (
            HookVerdict::Queue {
                num: 3,
                bypass: false,
            },
            Fate::Queue {
                num: 3,
                bypass: false,
            },
        ),
        (HookVerdict::Stolen, Fate::Stolen),
    ] {
        let mut dp = datapath(OPEN, vec![]);
        // queues are the kernel's (as under NFQUEUE): the packet leaves to be queued
        dp.queues_outside = true;
        let calls = Arc::new(Mutex::new(0));
        // after the filter table accepted it
        dp.register_hook(Hook::Forward, 10, answering(&calls, 0, v));
        let d = forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
        assert_eq!(d.fate, fate, "{v:?}");
        assert_eq!(d.deciding_rule, None, "a function decided, not a rule");
        assert!(d.frame.is_none());
        // its new connection was never confirmed
        assert_eq!(dp.ct.len(), 0, "{v:?}");
        assert_eq!(*calls.lock().unwrap(), 1);
    }
    let mut dp = datapath(OPEN, vec![]);
    let calls = Arc::new(Mutex::new(0));
    dp.register_hook(Hook::Forward, 10, answering(&calls, 0, HookVerdict::Stolen));
    forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
    assert_eq!(dp.stats.stolen, 1);
}

#[test]
fn repeat_calls_the_same_function_again_up_to_the_bound() {
    let mut dp = datapath(OPEN, vec![]);
    let calls = Arc::new(Mutex::new(0));
    dp.register_hook(Hook::Forward, 10, answering(&calls, 3, HookVerdict::Accept));
    let d = forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
    assert_eq!(d.fate, Fate::Accept);
    assert_eq!(*calls.lock().unwrap(), 4, "three repeats, then the accept");
    assert_eq!(dp.ct.len(), 1, "confirmed at postrouting");

    // a function that always repeats is bounded: the packet is dropped
    let mut dp = datapath(OPEN, vec![]);
    let calls = Arc::new(Mutex::new(0));
    dp.register_hook(
        Hook::Forward,
        10,
        answering(&calls, u32::MAX, HookVerdict::Accept),
    );
    let d = forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
    assert_eq!(d.fate, Fate::Drop);
    assert_eq!(*calls.lock().unwrap(), MAX_REPEATS + 1);
    assert_eq!(dp.ct.len(), 0);
}

#[test]
fn stop_skips_the_rest_of_the_hook_only() {
    let closed = "table filter { chain forward policy drop { } }";
    let mut dp = datapath(closed, vec![]);
    let calls = Arc::new(Mutex::new(0));
    // before the filter table: its drop policy is skipped
    dp.register_hook(Hook::Forward, -10, answering(&calls, 0, HookVerdict::Stop));
    let d = forward(&mut dp, 1, &syn(CLIENT, 1000, SERVER, 80, SYN));
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(d.deciding_rule, None);
    // the later hook still ran: postrouting confirmed the connection
    assert_eq!(dp.ct.len(), 1);
    // and it stays registered through a reload
    let c = fwc_compiler::compile_source("t.fw", closed, &MemFiles::default());
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    dp.replace_program(jit);
    let d = forward(&mut dp, 2, &syn(CLIENT, 1001, SERVER, 80, SYN));
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(*calls.lock().unwrap(), 2);
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn lb(forward: &str) -> String {
    format!(
        "
table filter {{
    chain input policy drop {{ ip daddr 198.51.100.100 tcp dport 80 accept; }}
    chain forward policy drop {{ }}
}}
service web {{
    virtual tcp 198.51.100.100:80;
    scheduler rr;
    real 198.51.100.11:80 weight 1 {forward};
    real 198.51.100.12:80 weight 1 {forward};
}}
"
    )
}

#[test]
fn direct_routing_sends_the_unchanged_packet_to_the_real_server_and_tracks_it_itself() {
    let mut dp = datapath(&lb("dr"), vec![DIRECTOR]);
    assert_eq!(
        dp.hook_order(Hook::Input),
        ["filter", "ipvs", "nat (translation)", "conntrack confirm"]
    );
    let reals = [
        Ipv4Addr::new(198, 51, 100, 11),
        Ipv4Addr::new(198, 51, 100, 12),
    ];
    for (k, port) in [40000u16, 40001, 40002].into_iter().enumerate() {
        let pkt = syn(CLIENT, port, VIP, 80, SYN);
        let d = forward(&mut dp, 10 * k as u64, &pkt);
        assert_eq!(d.fate, Fate::Accept, "{d:?}");
        let real = reals[k % 2];
        assert_eq!(d.next_hop, Some(real), "round robin");
        // the packet itself is the same but for its TTL
        let out = d.frame.unwrap();
        let ip = ipv4::Packet::new_checked(&out[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst(), ip.ttl()), (CLIENT, VIP, 63));
        assert_eq!(
            ip.payload(),
            ipv4::Packet::new_checked(&pkt[..]).unwrap().payload()
        );
        // the director sees no reply: the client's ACK keeps going to the same server
        let d = forward(&mut dp, 10 * k as u64 + 1, &syn(CLIENT, port, VIP, 80, ACK));
        assert_eq!((d.fate, d.next_hop), (Fate::Accept, Some(real)), "{d:?}");
    }
    // untracked by conntrack; IPVS's own table has the connections, established
    assert_eq!(dp.ct.len(), 0);
    let conns = dp.ipvs_connections();
    assert_eq!(conns.len(), 3);
    assert!(conns
        .iter()
        .all(|(_, c, _)| c.state == TcpState::Established));
    let l = dp.ipvs_listing();
    assert!(
        l.contains("  -> 198.51.100.11:80             Route   1      2          0         "),
        "{l}"
    );
    assert!(
        l.contains("  -> 198.51.100.12:80             Route   1      1          0         "),
        "{l}"
    );
    // `ipvsadm -L -c -n`: each connection's state and time left at 21 ms
    assert_eq!(
        dp.ipvs_connections_listing(),
        concat!(
            "IPVS connection entries\n",
            "pro expire state       source             virtual            destination\n",
            "TCP 14:59  ESTABLISHED 192.0.2.10:40000   198.51.100.100:80  198.51.100.11:80\n",
            "TCP 14:59  ESTABLISHED 192.0.2.10:40001   198.51.100.100:80  198.51.100.12:80\n",
            "TCP 15:00  ESTABLISHED 192.0.2.10:40002   198.51.100.100:80  198.51.100.11:80\n",
        )
    );
    // a FIN moves one to FIN_WAIT: inactive
    forward(&mut dp, 100, &syn(CLIENT, 40000, VIP, 80, FIN | ACK));
    let l = dp.ipvs_listing();
    assert!(
        l.contains("  -> 198.51.100.11:80             Route   1      1          1         "),
        "{l}"
    );
    // an ACK with no connection opens nothing: it goes on to this host's input
    let d = forward(&mut dp, 101, &syn(CLIENT, 50000, VIP, 80, ACK));
    assert_eq!((d.fate, d.next_hop), (Fate::Accept, None));
    // connections expire on IPVS's timers: FIN_WAIT after 2 minutes, ESTABLISHED after 15
    dp.process(100 + 120_001, Link::RawIp, &[0u8; 4], None, None);
    assert_eq!(dp.ipvs_connections().len(), 2);
    dp.process(100 + 900_001, Link::RawIp, &[0u8; 4], None, None);
    assert_eq!(dp.ipvs_connections().len(), 0);
    let l = dp.ipvs_listing();
    assert!(
        l.contains("  -> 198.51.100.11:80             Route   1      0          0         "),
        "{l}"
    );
}

#[test]
fn tunnelling_wraps_the_packet_in_ip_in_ip_to_the_real_server() {
    let mut dp = datapath(&lb("tunnel"), vec![DIRECTOR]);
    let pkt = syn(CLIENT, 40000, VIP, 80, SYN);
    let d = forward(&mut dp, 1, &pkt);
    assert_eq!((d.fate, d.next_hop), (Fate::Accept, None), "{d:?}");
    let out = d.frame.unwrap();
    let outer = ipv4::Packet::new_checked(&out[..]).unwrap();
    assert!(outer.verify_checksum());
    assert_eq!(
        (outer.src(), outer.dst(), outer.protocol(), outer.ttl()),
        (DIRECTOR, Ipv4Addr::new(198, 51, 100, 11), 4, 63)
    );
    assert_eq!(usize::from(outer.total_len()), pkt.len() + 20);
    let inner = ipv4::Packet::new_checked(outer.payload()).unwrap();
    assert!(inner.verify_checksum());
    assert_eq!((inner.src(), inner.dst(), inner.ttl()), (CLIENT, VIP, 63));
    assert_eq!(
        inner.payload(),
        ipv4::Packet::new_checked(&pkt[..]).unwrap().payload()
    );
    let st = dp.ipvs_stats_listing();
    assert!(st.contains("  -> 198.51.100.11:80"), "{st}");
    let l = dp.ipvs_listing();
    assert!(l.contains("Tunnel  1      0          1"), "{l}");
}

/// `ipvsadm --rate` as the kernel estimates it: ten new connections a second (a SYN and an
/// ACK each, 40 bytes) for 10 s, five 2-second steps of the estimator. By hand, per step
/// the service gets 20 connections and 40 packets (1600 bytes): averages 7810 / 1024 -> 8
/// connections/s, 15620 / 1024 -> 15 packets/s, 19525 / 32 -> 610 bytes/s; each of the two
/// servers half of it: 4, 8, 305.
#[test]
fn ipvs_rates_are_estimated_every_two_seconds() {
    let mut dp = datapath(&lb("dr"), vec![DIRECTOR]);
    for k in 0..100u64 {
        let port = 20000 + k as u16;
        forward(&mut dp, 100 * k, &syn(CLIENT, port, VIP, 80, SYN));
        forward(&mut dp, 100 * k + 1, &syn(CLIENT, port, VIP, 80, ACK));
    }
    dp.advance(10_000);
    let l = dp.ipvs_rates_listing();
    let line = |name: &str, v: [u64; 5]| {
        format!(
            "{name:<33}{:>9}{:>9}{:>9}{:>9}{:>9}\n",
            v[0], v[1], v[2], v[3], v[4]
        )
    };
    assert!(
        l.contains(&line("TCP  198.51.100.100:80", [8, 15, 0, 610, 0])),
        "{l}"
    );
    for real in ["198.51.100.11:80", "198.51.100.12:80"] {
        assert!(
            l.contains(&line(&format!("  -> {real}"), [4, 8, 0, 305, 0])),
            "{l}"
        );
    }
}

const QUEUEING: &str = "
table filter {
    chain forward policy drop {
        tcp dport 80 queue num 3;
        tcp dport 81 queue num 4 bypass;
        tcp dport 82 queue num 5;
    }
}
table mangle { chain postrouting { mark 9 counter; } }
";

/// A queue's handler reinjects the packet: accept goes on after the queueing rule's table
/// (here: the rest of the path, confirmed), repeat runs the table again, drop drops. A
/// queue nobody handles drops its packets, unless `bypass`.
#[test]
fn queued_packets_go_to_their_handler_and_on_as_it_says() {
    let mut dp = datapath(QUEUEING, vec![]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        let mut first = true;
        dp.register_queue(
            3,
            Box::new(move |hook, p, bytes| {
                seen.lock().unwrap().push((hook, p.dport, bytes.len()));
                p.mark = 9;
                // the first packet: once more through the table, then on
                if std::mem::take(&mut first) {
                    HookVerdict::Repeat
                } else {
                    HookVerdict::Accept
                }
            }),
        );
    }
    dp.register_queue(5, Box::new(|_, _, _| HookVerdict::Drop));
    let pkt = syn(CLIENT, 1000, SERVER, 80, SYN);
    let d = forward(&mut dp, 1, &pkt);
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Hook::Forward, 80, pkt.len()),
            (Hook::Forward, 80, pkt.len())
        ]
    );
    assert_eq!(dp.ct.len(), 1, "accepted: confirmed at postrouting");
    // the mark the handler set was seen after it: mangle/postrouting's counter rule
    let p = dp.program();
    let rule = |text: &str| {
        let r = p.chains.iter().flat_map(|c| &c.rules);
        let r = r.clone().find(|r| rule_text(p, r).contains(text)).unwrap();
        dp.rule_counters()[r.id.0 as usize].0
    };
    assert_eq!(rule("mark 0x9"), 1);
    // the queueing rule ran twice (the repeat)
    assert_eq!(rule("queue num 3"), 2);

    // a handler that drops
    let d = forward(&mut dp, 2, &syn(CLIENT, 1001, SERVER, 82, SYN));
    assert_eq!(d.fate, Fate::Drop);
    assert_eq!(dp.ct.len(), 1);
    // queue 4 has no handler: bypass lets the packet go on
    let d = forward(&mut dp, 3, &syn(CLIENT, 1002, SERVER, 81, SYN));
    assert_eq!(d.fate, Fate::Accept, "{d:?}");
    // no handler and no bypass: nothing listens, dropped
    let mut dp = datapath(QUEUEING, vec![]);
    let d = forward(&mut dp, 1, &pkt);
    assert_eq!(
        (d.fate, d.reason),
        (Fate::Drop, Some("nothing listens on the queue"))
    );
    // unless queues are someone else's (NFQUEUE): then the packet leaves queued
    dp.queues_outside = true;
    let d = forward(&mut dp, 2, &pkt);
    assert_eq!(
        d.fate,
        Fate::Queue {
            num: 3,
            bypass: false
        }
    );
    assert_eq!(dp.stats.queued, 1);
}

/// A connection keeps the forwarding method it opened with: a reload that turns its real
/// server from direct routing to tunnelling changes new connections, not it.
#[test]
fn a_reload_keeps_each_ipvs_connection_on_its_forwarding_method() {
    let mut dp = datapath(&lb("dr"), vec![DIRECTOR]);
    let d = forward(&mut dp, 1, &syn(CLIENT, 40000, VIP, 80, SYN));
    assert_eq!(d.next_hop, Some(Ipv4Addr::new(198, 51, 100, 11)));
    let c = fwc_compiler::compile_source("t.fw", &lb("tunnel"), &MemFiles::default());
    dp.replace_program(
        JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap(),
    );
    // the open connection: still direct routing (the packet unchanged, a next hop)
    let pkt = syn(CLIENT, 40000, VIP, 80, ACK);
    let d = forward(&mut dp, 2, &pkt);
    assert_eq!(d.next_hop, Some(Ipv4Addr::new(198, 51, 100, 11)), "{d:?}");
    assert_eq!(d.frame.as_ref().unwrap().len(), pkt.len());
    // a new one: tunnelled
    let d = forward(&mut dp, 3, &syn(CLIENT, 40001, VIP, 80, SYN));
    assert_eq!(d.next_hop, None);
    assert_eq!(
        ipv4::Packet::new_checked(&d.frame.unwrap()[..])
            .unwrap()
            .protocol(),
        4
    );
}
