//! The reference interpreter's semantics, one rule at a time.

use fwc_compiler::interp::{self, Fate, PathKind};
use fwc_compiler::ir::{ct, RejectKind};
use fwc_tests::{fate, program, query};
use std::net::Ipv4Addr;

const IN_SSH: &str = "input tcp 198.51.100.7:40000 -> 192.0.2.1:22 iif eth0";

#[test]
fn accept_ends_only_the_current_table() {
    // filter accepts, but security (later at the same hook) still sees and drops the packet
    let c = program(
        "table filter { chain input { accept; } }
         table security { chain input { tcp dport 22 drop; } }",
    );
    let o = query(&c, IN_SSH);
    assert_eq!(o.fate, Fate::Drop);
    assert_eq!(o.trace.len(), 2, "{:?}", o.trace);
}

#[test]
fn accept_continues_to_later_hooks() {
    // accepted at prerouting (mangle), dropped at input (filter)
    let c = program(
        "table mangle { chain prerouting { accept; } }
         table filter { chain input { drop; } }",
    );
    assert_eq!(fate(&c, IN_SSH), "drop");
}

#[test]
fn drop_and_reject_end_the_packet() {
    let c = program(
        "table filter { chain input { tcp dport 22 reject with tcp-reset; udp drop; } }
         table security { chain input { accept; } }",
    );
    let o = query(&c, IN_SSH);
    assert_eq!(o.fate, Fate::Reject(RejectKind::TcpReset));
    assert_eq!(o.trace.len(), 1, "security never runs");
    assert_eq!(fate(&c, "input udp 198.51.100.7:5 -> 192.0.2.1:53"), "drop");
    let c = program("table filter { chain input { reject; } }");
    assert_eq!(
        query(&c, IN_SSH).fate,
        Fate::Reject(RejectKind::IcmpUnreach(3))
    );
}

#[test]
fn policies_apply_when_the_base_chain_ends() {
    let c = program("table filter { chain input policy drop { tcp dport 80 accept; } }");
    assert_eq!(fate(&c, IN_SSH), "drop");
    assert_eq!(
        fate(&c, "input tcp 198.51.100.7:40000 -> 192.0.2.1:80"),
        "accept"
    );
    let c = program("table filter { chain input { tcp dport 80 drop; } }");
    assert_eq!(fate(&c, IN_SSH), "accept", "the default policy is accept");
}

#[test]
fn jump_returns_and_goto_does_not() {
    let src = "
        chain j { tcp dport 22 mark set 1; }
        chain g { tcp dport 22 mark set 2; }
        table filter {
            chain input policy drop {
                jump j;
                mark 1 accept;
            }
            chain forward policy drop {
                goto g;
                accept;
            }
        }";
    let c = program(src);
    // falling off `j` returns to the rule after the jump
    assert_eq!(fate(&c, IN_SSH), "accept");
    // falling off `g` (reached by goto) ends the base chain: its policy
    let o = query(
        &c,
        "forward tcp 198.51.100.7:1 -> 203.0.113.5:22 iif eth0 oif eth1",
    );
    assert_eq!(o.fate, Fate::Drop);
    assert_eq!(o.packet.mark, 2);
    assert_eq!(o.trace.last().unwrap().action, "policy drop");
}

#[test]
fn return_goes_back_to_the_caller_and_in_a_base_chain_applies_the_policy() {
    let c = program(
        "chain inner { tcp dport 22 return; drop; }
         chain outer { jump inner; mark set 7; }
         table filter {
            chain input policy accept { jump outer; mark 7 drop; }
            chain forward policy drop { return; accept; }
         }",
    );
    // inner returns to outer, which sets the mark, then input drops on it
    let o = query(&c, IN_SSH);
    assert_eq!(o.fate, Fate::Drop);
    assert_eq!(o.packet.mark, 7);
    // non-ssh: inner drops
    assert_eq!(fate(&c, "input tcp 198.51.100.7:1 -> 192.0.2.1:80"), "drop");
    // return in a base chain: the policy
    assert_eq!(
        fate(&c, "forward udp 198.51.100.7:1 -> 203.0.113.5:53"),
        "drop"
    );
}

#[test]
fn goto_then_return_goes_to_the_last_jump() {
    let c = program(
        "chain b { return; }
         chain a { goto b; mark set 9; }
         table filter { chain input policy drop { jump a; mark set 5; accept; } }",
    );
    let o = query(&c, IN_SSH);
    assert_eq!(o.fate, Fate::Accept);
    assert_eq!(
        o.packet.mark, 5,
        "b returns past a's remaining rules, to input"
    );
}

#[test]
fn marks_are_seen_downstream() {
    let c = program(
        "table mangle { chain prerouting { iif eth0 mark set 0x42; } }
         table filter { chain forward policy drop { mark 0x42 accept; } }",
    );
    assert_eq!(
        fate(
            &c,
            "forward tcp 198.51.100.7:1 -> 203.0.113.5:80 iif eth0 oif eth1"
        ),
        "accept"
    );
    assert_eq!(
        fate(
            &c,
            "forward tcp 198.51.100.7:1 -> 203.0.113.5:80 iif eth1 oif eth0"
        ),
        "drop"
    );
}

#[test]
fn dnat_is_seen_by_filter_and_snat_rewrites_on_the_way_out() {
    let c = program(
        "interface eth0 address 203.0.113.2;
         table nat {
            chain prerouting { iif eth0 tcp dport 8080 dnat to 10.0.0.5:80; }
            chain postrouting { oif eth0 ip saddr 10.0.0.0/8 masquerade; }
         }
         table filter {
            chain forward policy drop {
                ip daddr 10.0.0.5 tcp dport 80 accept;
                iif eth1 oif eth0 accept;
            }
         }",
    );
    let o = query(
        &c,
        "forward tcp 198.51.100.7:40000 -> 203.0.113.2:8080 iif eth0 oif eth1",
    );
    assert_eq!(o.fate, Fate::Accept);
    assert_eq!(
        (o.packet.daddr, o.packet.dport),
        (u32::from(Ipv4Addr::new(10, 0, 0, 5)), 80)
    );
    let o = query(
        &c,
        "forward udp 10.0.0.9:5353 -> 198.51.100.53:53 iif eth1 oif eth0",
    );
    assert_eq!(o.fate, Fate::Accept);
    assert_eq!(o.packet.saddr, u32::from(Ipv4Addr::new(203, 0, 113, 2)));
    assert_eq!(
        o.packet.sport, 5353,
        "the port is kept when no range is asked"
    );
}

#[test]
fn snat_port_range_and_redirect() {
    let c = program(
        "interface eth1 address 10.0.0.1;
         table nat {
            chain prerouting { iif eth1 tcp dport 80 redirect to :3128; }
            chain postrouting { udp snat to 192.0.2.10:1024-2047; }
         }",
    );
    let o = query(
        &c,
        "forward udp 10.0.0.9:53 -> 198.51.100.53:53 iif eth1 oif eth0",
    );
    assert_eq!(o.packet.saddr, u32::from(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(
        o.packet.sport, 1024,
        "a port outside the range is mapped into it"
    );
    let o = query(&c, "input tcp 10.0.0.9:5000 -> 198.51.100.80:80 iif eth1");
    assert_eq!(
        (o.packet.daddr, o.packet.dport),
        (u32::from(Ipv4Addr::new(10, 0, 0, 1)), 3128)
    );
}

#[test]
fn masquerade_without_an_interface_address_is_an_error_not_a_guess() {
    let c = program("table nat { chain postrouting { oif eth0 masquerade; } }");
    let p = &c.checked.as_ref().unwrap().program;
    let pkt = interp::Packet {
        proto: 17,
        saddr: 1,
        daddr: 2,
        sport: 1,
        dport: 2,
        oif: Some("eth0".into()),
        ..Default::default()
    };
    let e = interp::run(p, PathKind::Output, &pkt, &mut interp::FreshOracle).unwrap_err();
    assert!(e.to_string().contains("interface eth0 address"), "{e}");
}

#[test]
fn nat_table_only_sees_new_connections() {
    let c = program(
        "table nat { chain prerouting { tcp dport 8080 dnat to 10.0.0.5:80; } }
         table filter { chain input policy accept { tcp dport 80 drop; } }",
    );
    assert_eq!(
        fate(&c, "input tcp 198.51.100.7:1 -> 192.0.2.1:8080"),
        "drop"
    );
    let o = query(
        &c,
        "input tcp 198.51.100.7:1 -> 192.0.2.1:8080 ct state established",
    );
    assert_eq!(
        o.fate,
        Fate::Accept,
        "established packets skip the nat chains"
    );
    assert_eq!(o.packet.dport, 8080);
}

#[test]
fn notrack_makes_the_packet_untracked_downstream() {
    let c = program(
        "table raw { chain prerouting { udp dport 53 notrack; } }
         table nat { chain prerouting { udp dport 53 dnat to 10.0.0.53; } }
         table filter { chain input policy drop { ct state untracked accept; } }",
    );
    let o = query(&c, "input udp 198.51.100.7:1 -> 192.0.2.1:53");
    assert_eq!(o.fate, Fate::Accept);
    assert_eq!(o.packet.ct, ct::UNTRACKED);
    assert_eq!(
        o.packet.daddr,
        u32::from(Ipv4Addr::new(192, 0, 2, 1)),
        "untracked packets are not NATed"
    );
}

#[test]
fn queue_ends_the_packet() {
    let c = program("table filter { chain input { tcp dport 22 queue num 4 bypass; accept; } }");
    assert_eq!(
        query(&c, IN_SSH).fate,
        Fate::Queue {
            num: 4,
            bypass: true
        }
    );
}

#[test]
fn verdict_maps_dispatch_and_a_miss_continues() {
    let c = program(
        "chain ssh { accept; }
         table filter {
            chain input policy drop {
                tcp dport vmap { 22 : jump ssh, 80 : accept, 8000-8999 : reject };
                tcp dport 9999 accept;
            }
         }",
    );
    assert_eq!(fate(&c, IN_SSH), "accept");
    assert_eq!(fate(&c, "input tcp 1.2.3.4:1 -> 192.0.2.1:8500"), "reject");
    assert_eq!(fate(&c, "input tcp 1.2.3.4:1 -> 192.0.2.1:9999"), "accept");
    assert_eq!(fate(&c, "input tcp 1.2.3.4:1 -> 192.0.2.1:7"), "drop");
}

#[test]
fn negations_and_absent_fields() {
    let c = program(
        "table filter { chain input policy drop {
            iif != lo tcp dport != 22 accept;
            ip saddr != 10.0.0.0/8 icmp accept;
        } }",
    );
    assert_eq!(fate(&c, IN_SSH), "drop");
    assert_eq!(
        fate(&c, "input tcp 1.2.3.4:1 -> 192.0.2.1:80 iif eth0"),
        "accept"
    );
    assert_eq!(
        fate(&c, "input tcp 1.2.3.4:1 -> 192.0.2.1:80 iif lo"),
        "drop"
    );
    assert_eq!(fate(&c, "input icmp 1.2.3.4 -> 192.0.2.1"), "accept");
    assert_eq!(fate(&c, "input icmp 10.2.3.4 -> 192.0.2.1"), "drop");
}

#[test]
fn interface_wildcards_and_sets() {
    let c = program("table filter { chain input policy drop { iif { eth*, wg0 } accept; } }");
    assert_eq!(
        fate(&c, "input udp 1.2.3.4:1 -> 5.6.7.8:2 iif eth3"),
        "accept"
    );
    assert_eq!(
        fate(&c, "input udp 1.2.3.4:1 -> 5.6.7.8:2 iif wg0"),
        "accept"
    );
    assert_eq!(fate(&c, "input udp 1.2.3.4:1 -> 5.6.7.8:2 iif wg1"), "drop");
    assert_eq!(
        fate(&c, "input udp 1.2.3.4:1 -> 5.6.7.8:2"),
        "drop",
        "no interface matches no name"
    );
}

#[test]
fn tcp_flags_and_ct_state() {
    let c = program(
        "table filter { chain input policy accept {
            tcp flags syn / syn,ack ct state new tcp dport 22 drop;
            ct state invalid drop;
        } }",
    );
    assert_eq!(fate(&c, IN_SSH), "drop", "a new connection's SYN");
    assert_eq!(
        fate(&c, &format!("{IN_SSH} ct state established")),
        "accept"
    );
    assert_eq!(fate(&c, &format!("{IN_SSH} flags syn,ack")), "accept");
    assert_eq!(fate(&c, &format!("{IN_SSH} ct state invalid")), "drop");
}

#[test]
fn the_trace_names_each_rule_and_the_deciding_one() {
    let c = program(
        "chain log-it { log prefix \"x \"; }
         table filter { chain input policy drop { counter; jump log-it; tcp dport 22 accept; } }",
    );
    let o = query(&c, IN_SSH);
    let actions: Vec<&str> = o.trace.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "counter",
            "jump log-it",
            "log level warn prefix \"x \"",
            "accept"
        ]
    );
    assert_eq!(o.deciding_rule, o.trace.last().unwrap().rule);
}

#[test]
fn statistic_outcomes_are_all_explored() {
    let c = program("table filter { chain input { statistic probability 0.3 drop; accept; } }");
    let p = &c.checked.as_ref().unwrap().program;
    let pkt = interp::Packet {
        proto: 6,
        dport: 22,
        ..Default::default()
    };
    let all = interp::run_all_outcomes(p, PathKind::Input, &pkt, 12).unwrap();
    let mut fates: Vec<&str> = all.iter().map(|(_, o)| o.fate.name()).collect();
    fates.sort();
    assert_eq!(fates, vec!["accept", "drop"]);
}

#[test]
fn limit_matches_on_a_fresh_bucket_and_over_does_not() {
    let c = program(
        "table filter { chain input policy drop {
            tcp dport 22 limit != 1/minute drop;
            tcp dport 22 limit 1/minute accept;
        } }",
    );
    assert_eq!(fate(&c, IN_SSH), "accept");
}

#[test]
fn too_many_random_matches_is_an_error_never_a_pass() {
    let mut src = String::from("table filter { chain input { statistic probability 0.5 drop;");
    for _ in 0..12 {
        src.push_str(" statistic probability 0.5 counter;");
    }
    src.push_str(" } }");
    let c = program(&src);
    let p = &c.checked.as_ref().unwrap().program;
    let pkt = interp::Packet::default();
    let e = interp::run_all_outcomes(p, PathKind::Input, &pkt, 12).unwrap_err();
    assert!(e.to_string().contains("more than 12"), "{e}");
    // with 11 more it is enumerated, and the drop outcome is found
    let src = src.replacen(" statistic probability 0.5 counter;", "", 1);
    let c = program(&src);
    let all = interp::run_all_outcomes(
        &c.checked.as_ref().unwrap().program,
        PathKind::Input,
        &pkt,
        12,
    )
    .unwrap();
    assert!(all.iter().any(|(_, o)| o.fate == Fate::Drop));
    assert!(all.iter().any(|(_, o)| o.fate == Fate::Accept));
    // certain coins (p = 0 or 1) are not random and cost nothing
    let c = program("table filter { chain input { statistic probability 1 drop; accept; } }");
    let all = interp::run_all_outcomes(
        &c.checked.as_ref().unwrap().program,
        PathKind::Input,
        &pkt,
        0,
    )
    .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.fate, Fate::Drop);
}

#[test]
fn the_sketchs_verdict_map_line_compiles_as_written() {
    // LANGUAGE.md, "Matches": the verdict map example, verbatim
    let c = program(
        "define admins = { 10.0.0.1, 10.0.0.2 };
         chain incoming-ssh(allowed: set<ip>) { ip saddr $allowed accept; drop; }
         table filter { chain input policy drop {
            tcp dport vmap { 22 : jump incoming-ssh($admins), 80 : accept, 443 : accept, 8000-8999 : drop };
         } }",
    );
    assert_eq!(fate(&c, "input tcp 10.0.0.2:1 -> 192.0.2.1:22"), "accept");
    assert_eq!(fate(&c, "input tcp 10.0.0.9:1 -> 192.0.2.1:22"), "drop");
    assert_eq!(fate(&c, "input tcp 10.0.0.9:1 -> 192.0.2.1:443"), "accept");
    assert_eq!(fate(&c, "input tcp 10.0.0.9:1 -> 192.0.2.1:8080"), "drop");
    assert_eq!(
        fate(&c, "input udp 10.0.0.9:1 -> 192.0.2.1:443"),
        "drop",
        "policy"
    );
}
