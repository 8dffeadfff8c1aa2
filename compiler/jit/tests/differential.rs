//! Differential testing: random programs using every construct and random packets (including
//! truncated and malformed ones) through the interpreter and the JIT (with and without
//! decision trees). They must agree on the fate, the deciding rule, the rewritten headers and
//! the logs, or fail in the same way.
//!
//! `FWC_DIFF_CASES=N` sets the number of programs (default 48; each gets 150 packets).

use fwc_compiler::interp::{self, Meta, Oracle, Packet, PathKind};
use fwc_compiler::ir::{ct, Pred, RuleId};
use fwc_compiler::loader::MemFiles;
use fwc_jit::{Hooks, JitOutcome, JitProgram, NoHooks, Options};
use proptest::prelude::*;

use fwc_compiler::gen::random::{self, Pools, L4};
use fwc_compiler::gen::Rng;

const ADDRS: &[&str] = &[
    "10.0.0.1", "10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "192.0.2.7", "198.51.100.0/25",
    "10.0.0.1-10.0.0.9", "{ 10.0.0.2, 192.0.2.0/28, 198.51.100.64-198.51.100.127 }",
    "{ 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 }",
    // 42 single addresses: a hash-table set in the JIT (its empty marker is not 0)
    "{ 0.0.0.0, 0.0.0.2, 10.0.0.1, 192.0.2.7, 203.0.113.1, 10.0.0.100, 10.0.0.102, 10.0.0.104, 10.0.0.106, 10.0.0.108, 10.0.0.110, 10.0.0.112, 10.0.0.114, 10.0.0.116, 10.0.0.118, 10.0.0.120, 10.0.0.122, 10.0.0.124, 10.0.0.126, 10.0.0.128, 10.0.0.130, 10.0.0.132, 10.0.0.134, 10.0.0.136, 10.0.0.138, 10.0.0.140, 10.0.0.142, 10.0.0.144, 10.0.0.146, 10.0.0.148, 10.0.0.150, 10.0.0.152, 10.0.0.154, 10.0.0.156, 10.0.0.158, 10.0.0.160, 10.0.0.162, 10.0.0.164, 10.0.0.166, 10.0.0.168, 10.0.0.170, 10.0.0.172 }",
];
const PORTS: &[&str] = &[
    "22",
    "53",
    "80",
    "443",
    "1000-2000",
    "{ 22, 80, 443 }",
    "{ 1-3, 7, 9, 11, 20-25, 53, 100-200, 8080 }",
    // 40 single ports: a hash-table set
    "{ 0, 7, 22, 80, 150, 3000, 3002, 3004, 3006, 3008, 3010, 3012, 3014, 3016, 3018, 3020, 3022, 3024, 3026, 3028, 3030, 3032, 3034, 3036, 3038, 3040, 3042, 3044, 3046, 3048, 3050, 3052, 3054, 3056, 3058, 3060, 3062, 3064, 3066 }",
];
const IFACES: &[&str] = &["eth0", "eth1", "eth*", "lo", "{ eth0, wg0 }"];
const STATES: &[&str] = &[
    "new",
    "established",
    "related",
    "invalid",
    "untracked",
    "established,related",
];

const POOLS: Pools = Pools {
    addrs: ADDRS,
    ports: PORTS,
    ifaces: IFACES,
    states: STATES,
    limits: &["1/second", "10/minute"],
    probabilities: &["0.5", "0.1", "0", "1"],
    protos: &["tcp", "{ tcp, udp }", "47"],
};

fn matches(r: &mut Rng, l4: L4) -> Vec<String> {
    random::matches(r, l4, &POOLS, true, true)
}

/// A random but always valid program: `subs` subchains with parameters (a chain only calls
/// later ones), every table on random hooks.
fn program(r: &mut Rng) -> String {
    let mut s =
        String::from("interface eth0 address 203.0.113.1;\ninterface eth1 address 10.0.0.1;\n");
    let subs = 1 + r.index(4);
    s.push_str(&random::subchains(
        r,
        subs,
        &POOLS,
        &["counter", "log prefix \"s \"", "mark set 0x7", "audit"],
        &|r: &mut Rng| format!("queue num {}", r.index(3)),
        "10.0.0.1",
    ));
    let tables: &[(&str, &[&str])] = &[
        ("raw", &["prerouting", "output"]),
        (
            "mangle",
            &["prerouting", "input", "forward", "output", "postrouting"],
        ),
        ("nat", &["prerouting", "input", "output", "postrouting"]),
        ("filter", &["input", "forward", "output"]),
        ("security", &["input", "forward", "output"]),
    ];
    for (t, hooks) in tables {
        s.push_str(&format!("table {t} {{\n"));
        for h in *hooks {
            if r.chance(35) && *t != "filter" {
                continue;
            }
            let pol = if r.chance(25) { " policy drop" } else { "" };
            s.push_str(&format!("  chain {h}{pol} {{\n"));
            // a long run of plain 5-tuple rules now and then, for the decision trees
            if *t == "filter" && r.chance(40) {
                for _ in 0..20 + r.index(40) {
                    let l4 = *r.pick(&[L4::Tcp, L4::Udp, L4::Any]);
                    let mut m = Vec::new();
                    if r.chance(60) {
                        m.push(format!(
                            "ip saddr {}",
                            r.pick(&[
                                "10.0.0.0/8",
                                "10.0.0.1",
                                "192.0.2.0/24",
                                "198.51.100.0/25",
                                "10.1.0.0/16"
                            ])
                        ));
                    }
                    if r.chance(60) {
                        m.push(format!(
                            "ip daddr {}",
                            r.pick(&["192.0.2.7", "192.0.2.0/24", "10.0.0.0/8", "198.51.100.0/25"])
                        ));
                    }
                    match l4 {
                        L4::Tcp => m.push(format!(
                            "tcp dport {}",
                            r.pick(&["22", "80", "443", "1000-2000"])
                        )),
                        L4::Udp => m.push(format!("udp sport {}", r.pick(&["53", "1000-2000"]))),
                        _ => {}
                    }
                    let v = r.pick(&["accept", "drop", "reject", "counter accept", "log drop"]);
                    s.push_str(&format!("    {} {v};\n", m.join(" ")));
                }
            }
            for _ in 0..r.index(7) {
                let l4 = *r.pick(&[L4::Tcp, L4::Udp, L4::Icmp, L4::Any]);
                let m = matches(r, l4);
                let mut st: Vec<String> = Vec::new();
                if r.chance(25) {
                    st.push(
                        r.pick(&["counter", "log level info", "mark set 0x1"])
                            .to_string(),
                    );
                }
                if *t == "raw" && r.chance(30) {
                    st.push("notrack".into());
                }
                if *t == "mangle" && r.chance(20) {
                    st.push("ip ttl set 9".into());
                }
                let ports = matches!(l4, L4::Tcp | L4::Udp);
                let term: String = match (*t, *h) {
                    ("nat", "postrouting") => r.pick(&["masquerade", "snat to 192.0.2.99", "accept", ""]).to_string(),
                    ("nat", "input") => r.pick(&["snat to 192.0.2.98", "accept", ""]).to_string(),
                    ("nat", _) => {
                        if ports && r.chance(50) {
                            r.pick(&["dnat to 10.9.9.9:8080", "redirect to :3128"]).to_string()
                        } else {
                            r.pick(&["dnat to 10.9.9.9", "accept", ""]).to_string()
                        }
                    }
                    (_, "input" | "forward" | "output") if r.chance(20) => {
                        if l4 == L4::Tcp && r.chance(50) {
                            "reject with tcp-reset".into()
                        } else {
                            "reject with icmp host-prohibited".into()
                        }
                    }
                    _ => match r.index(8) {
                        0 | 6 => "accept".into(),
                        7 => format!("queue num {}{}", r.index(4), if r.chance(50) { " bypass" } else { "" }),
                        1 => "drop".into(),
                        2 => format!("jump s{}({}, {})", r.index(subs), r.pick(&["{ 10.0.0.1 }", "{ 192.0.2.0/24, 10.0.0.9 }"]), r.pick(&["22", "80"])),
                        3 => format!("goto s{}({{ 198.51.100.1 }}, 443)", r.index(subs)),
                        4 if l4 == L4::Tcp => "tcp dport vmap { 22 : accept, 80 : drop, 1000-2000 : jump s0({ 10.0.0.1 }, 22) }".replace("tcp dport vmap", "__VMAP__"),
                        _ => "return".into(),
                    },
                };
                let mut m = m;
                if term.starts_with("__VMAP__") {
                    st.push(term.replace("__VMAP__", "tcp dport vmap"));
                } else if !term.is_empty() {
                    st.push(term);
                }
                if st.is_empty() {
                    st.push("counter".into());
                }
                if m.is_empty() && r.chance(50) {
                    m.push("iif != lo".into());
                }
                s.push_str(&format!("    {} {};\n", m.join(" "), st.join(" ")));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
    }
    s
}

/// A packet from small pools (so that rules hit), sometimes damaged.
fn packet(r: &mut Rng) -> (PathKind, Vec<u8>, Meta) {
    let addrs = [
        0x0a00_0001u32,
        0x0a00_0005,
        0x0a01_0203,
        0xc000_0207,
        0xc000_0201,
        0xc633_6405,
        0xc633_6490,
        0x0808_0808,
        0xcb00_7101,
    ];
    let proto = *r.pick(&[6u8, 6, 17, 17, 1, 47]);
    let ports = [22u16, 53, 80, 443, 1500, 3128, 8080, 40000, 7, 150];
    let p = Packet {
        proto,
        saddr: *r.pick(&addrs),
        daddr: *r.pick(&addrs),
        sport: *r.pick(&ports),
        dport: *r.pick(&ports),
        icmp_type: *r.pick(&[8u8, 0, 3, 11, 13]),
        icmp_code: 0,
        tcp_flags: *r.pick(&[0x02u8, 0x12, 0x10, 0x11, 0x04]),
        ttl: 64,
        ..Packet::default()
    };
    let mut raw = p.to_raw();
    match r.index(12) {
        0 => raw.truncate(r.index(raw.len() + 1)), // truncated anywhere
        1 => raw[0] = 0x65,                        // IPv6 version nibble
        2 => raw[0] = 0x44,                        // header length below 20
        3 => raw[3] = raw[3].wrapping_add(9),      // total length beyond the data
        4 => raw[6] = 0x20 | (r.index(2) as u8),   // a fragment (MF, maybe offset)
        5 => {
            let l = raw.len() as u16 - 3; // total length cuts the transport header
            raw[2..4].copy_from_slice(&l.to_be_bytes());
        }
        6 => raw.extend_from_slice(&[0xde, 0xad]), // trailing bytes beyond total length
        _ => {}
    }
    let ifs = [
        None,
        Some("eth0"),
        Some("eth1"),
        Some("lo"),
        Some("wg0"),
        Some("eth7"),
    ];
    let meta = Meta {
        iif: r.pick(&ifs).map(str::to_string),
        oif: r.pick(&ifs).map(str::to_string),
        mark: *r.pick(&[0u32, 1, 7, 0x10]),
        ct: *r.pick(&[
            ct::NEW,
            ct::NEW,
            ct::ESTABLISHED,
            ct::RELATED,
            ct::INVALID,
            ct::UNTRACKED,
        ]),
    };
    let path = *r.pick(&[PathKind::Input, PathKind::Forward, PathKind::Output]);
    (path, raw, meta)
}

/// Deterministic coins: the same for both sides as long as they ask in the same order.
struct Coins(Rng);
impl Oracle for Coins {
    fn limit(&mut self, _r: RuleId, p: &Pred) -> bool {
        let hit = self.0.chance(70);
        if matches!(p, Pred::Limit { neg: true, .. }) {
            !hit
        } else {
            hit
        }
    }
    fn statistic(&mut self, _r: RuleId, p: f64) -> bool {
        (self.0.below(1000) as f64) < p * 1000.0
    }
}

fn interp_logs(o: &interp::Outcome) -> Vec<RuleId> {
    o.trace
        .iter()
        .filter(|s| s.action.starts_with("log ") || s.action == "audit")
        .filter_map(|s| s.rule)
        .collect()
}

/// Default hooks that do not declare themselves passive.
struct Active;

impl Hooks for Active {}

fn check_program(seed: u64, packets: usize) {
    let mut r = Rng::new(seed);
    let src = program(&mut r);
    let c = fwc_compiler::compile_source("diff.fw", &src, &MemFiles::default());
    assert!(
        !c.has_errors(),
        "generator made an invalid program: {:?}\n{src}",
        c.diags
            .iter()
            .find(|d| d.severity == fwc_compiler::diag::Severity::Error)
    );
    let p = &c.checked.as_ref().unwrap().program;
    let mut plain = JitProgram::compile(
        p,
        Options {
            decision_trees: false,
            // every subchain a real call here; inlined (where the cost rule says) below
            inline: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut trees = JitProgram::compile(
        p,
        Options {
            decision_trees: true,
            min_run: 2,
            keep_clif: false,
            // chains cut into pieces of a few rules
            piece: 3,
            inline: true,
        },
    )
    .unwrap();
    // the tree-compiled program classifies into one outcome kept across packets (as a
    // datapath does): nothing of an earlier packet may show in a later one's
    let mut reused = JitOutcome::default();
    let mut reused_plain = JitOutcome::default();
    for k in 0..packets {
        let (path, raw, meta) = packet(&mut r);
        let coin_seed = r.next_u64() | 1;
        let want = interp::run_raw(p, path, &raw, &meta, &mut Coins(Rng::new(coin_seed)));
        for (name, jit) in [("jit", &mut plain), ("jit+trees", &mut trees)] {
            let mut coins = Coins(Rng::new(coin_seed));
            let got = if name == "jit" && k % 3 == 0 {
                // hooks that change nothing but do not say so: the driver's general loop
                // (every step, header copies, routing), where `NoHooks` takes the passive one
                jit.classify_with(path, &raw, &meta, &mut coins, &mut Active)
            } else if name == "jit" && k % 3 == 2 {
                // the passive entries of whole chains (not cut into pieces here) with their
                // subchains called: the light ones emitted inside the entry
                jit.classify_into(
                    path,
                    &raw,
                    &meta,
                    &mut coins,
                    &mut NoHooks,
                    &mut reused_plain,
                )
                .map(|()| reused_plain.clone())
            } else if name == "jit" {
                // the rest into an outcome kept across them (and across modes), as the datapath's
                // general loop does
                jit.classify_into(
                    path,
                    &raw,
                    &meta,
                    &mut coins,
                    &mut Active,
                    &mut reused_plain,
                )
                .map(|()| reused_plain.clone())
            } else {
                jit.classify_into(path, &raw, &meta, &mut coins, &mut NoHooks, &mut reused)
                    .map(|()| reused.clone())
            };
            match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    let ctx = || {
                        format!("{name}: seed {seed:#x} packet {k} {path:?} {meta:?} {raw:02x?}\n{src}\ntrace: {:#?}", w.trace)
                    };
                    assert_eq!(w.fate, g.fate, "fate; {}", ctx());
                    assert_eq!(w.deciding_rule, g.deciding_rule, "deciding rule; {}", ctx());
                    let (wp, gp) = (&w.packet, &g.packet);
                    assert_eq!(
                        (
                            wp.saddr, wp.daddr, wp.sport, wp.dport, wp.mark, wp.ct, wp.ttl,
                            wp.proto, wp.l4
                        ),
                        (
                            gp.saddr, gp.daddr, gp.sport, gp.dport, gp.mark, gp.ct, gp.ttl,
                            gp.proto, gp.l4
                        ),
                        "headers; {}",
                        ctx()
                    );
                    // (the interfaces too: a reused outcome keeps none of an earlier packet's)
                    assert_eq!(
                        (&wp.iif, &wp.oif),
                        (&gp.iif, &gp.oif),
                        "interfaces; {}",
                        ctx()
                    );
                    assert_eq!(interp_logs(w), g.logs, "logs; {}", ctx());
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "{name}: seed {seed:#x}")
                }
                _ => panic!(
                    "{name}: seed {seed:#x} packet {k}: interpreter {want:?} vs jit {got:?}\n{src}"
                ),
            }
        }
    }
    // per-rule and policy counters: a decision tree's shared action block bumps the
    // deciding rule's (its id loaded at run time) as that rule's own compares would
    let (a, b): (Vec<_>, Vec<_>) = (plain.counters().collect(), trees.counters().collect());
    assert_eq!(
        a, b,
        "rule counters, jit vs jit+trees; seed {seed:#x}\n{src}"
    );
    assert_eq!(
        plain.policy_counters(),
        trees.policy_counters(),
        "policy counters; seed {seed:#x}\n{src}"
    );
}

fn cases() -> u32 {
    std::env::var("FWC_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), rng_seed: proptest::test_runner::RngSeed::Fixed(0xf3c0_2026), ..ProptestConfig::default() })]

    #[test]
    fn jit_and_interpreter_agree(seed in any::<u64>()) {
        check_program(seed, 150);
    }
}

#[test]
fn malformed_packets_are_dropped_before_the_hooks() {
    let c = fwc_compiler::compile_source(
        "m.fw",
        "table filter { chain input policy accept { accept; } }",
        &MemFiles::default(),
    );
    let p = &c.checked.as_ref().unwrap().program;
    let mut jit = JitProgram::compile(p, Options::default()).unwrap();
    let good = Packet::default().to_raw();
    for len in 0..good.len() {
        let o = jit
            .classify(
                PathKind::Input,
                &good[..len],
                &Meta::default(),
                &mut interp::FreshOracle,
            )
            .unwrap();
        let i = interp::run_raw(
            p,
            PathKind::Input,
            &good[..len],
            &Meta::default(),
            &mut interp::FreshOracle,
        )
        .unwrap();
        assert_eq!(o.fate, i.fate, "length {len}");
    }
    let o = jit
        .classify(
            PathKind::Input,
            &good,
            &Meta::default(),
            &mut interp::FreshOracle,
        )
        .unwrap();
    assert_eq!(o.fate, interp::Fate::Accept);
}

#[test]
fn large_sets_of_single_values_are_hashed_and_exact() {
    // 0.0.0.0 and 0.0.0.2 are members, so the table's empty marker is 0.0.0.1: a packet
    // from it must miss; every member hits, every neighbour of a member misses
    let members: Vec<u32> = [0u32, 2]
        .into_iter()
        .chain((0..100u32).map(|i| 0xc000_0200 + 2 * i))
        .collect();
    let list: Vec<String> = members
        .iter()
        .map(|a| std::net::Ipv4Addr::from(*a).to_string())
        .collect();
    let src = format!(
        "table filter {{ chain input policy accept {{ ip saddr {{ {} }} drop; }} }}",
        list.join(", ")
    );
    let c = fwc_compiler::compile_source("h.fw", &src, &MemFiles::default());
    let p = &c.checked.as_ref().unwrap().program;
    let mut jit = JitProgram::compile(p, Options::default()).unwrap();
    let mut tried = 0;
    for a in members.iter().flat_map(|&m| [m, m + 1, m.wrapping_sub(1)]) {
        let raw = Packet {
            proto: 6,
            saddr: a,
            daddr: 0xc633_6401,
            ..Packet::default()
        }
        .to_raw();
        let o = jit
            .classify(
                PathKind::Input,
                &raw,
                &Meta::default(),
                &mut interp::FreshOracle,
            )
            .unwrap();
        let want = if members.contains(&a) {
            interp::Fate::Drop
        } else {
            interp::Fate::Accept
        };
        assert_eq!(o.fate, want, "saddr {}", std::net::Ipv4Addr::from(a));
        tried += 1;
    }
    assert_eq!(tried, 3 * members.len());
}

#[test]
fn a_run_with_many_action_classes_dispatches_through_its_table() {
    // 300 rules, each with its own mark: 300 action classes, more than a forest's tags
    // hold, so the run's hit indexes the (rule id, class) table; every rule must decide
    // its own packets, with its own mark and counters
    let n = 300u32;
    let rules: String = (0..n)
        .map(|i| {
            format!(
                "ip saddr 10.{}.{}.0/24 mark set {} accept;\n",
                i / 256,
                i % 256,
                i + 1
            )
        })
        .collect();
    let src = format!("table filter {{ chain input policy drop {{ {rules} }} }}");
    let c = fwc_compiler::compile_source("t.fw", &src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let p = &c.checked.as_ref().unwrap().program;
    let mut jit = JitProgram::compile(p, Options::default()).unwrap();
    assert_eq!(jit.tree_rules, n as usize, "one decision-tree run");
    for i in (0..n).chain([n + 7]) {
        let raw = Packet {
            proto: 17,
            saddr: 0x0a00_0005 | (i / 256) << 16 | (i % 256) << 8,
            daddr: 0xc633_6401,
            ..Packet::default()
        }
        .to_raw();
        let meta = Meta::default();
        let want =
            interp::run_raw(p, PathKind::Input, &raw, &meta, &mut interp::FreshOracle).unwrap();
        let got = jit
            .classify(PathKind::Input, &raw, &meta, &mut interp::FreshOracle)
            .unwrap();
        assert_eq!(
            (got.fate, got.deciding_rule, got.packet.mark),
            (want.fate, want.deciding_rule, want.packet.mark),
            "packet from rule {i}"
        );
        if i < n {
            assert_eq!(got.packet.mark, i + 1);
        }
    }
    let hits: Vec<u64> = jit.counters().map(|(packets, _)| packets).collect();
    assert_eq!(hits, vec![1; n as usize], "one packet counted by each rule");
}

#[test]
fn the_generator_reaches_every_outcome() {
    // guards the differential test against a generator that stopped exercising things
    let mut fates = std::collections::BTreeMap::new();
    let (mut errors, mut malformed, mut tree_rules, mut logs, mut nat) = (0, 0, 0, 0, 0);
    for seed in 1..=24u64 {
        let mut r = Rng::new(seed);
        let src = program(&mut r);
        let c = fwc_compiler::compile_source("diff.fw", &src, &MemFiles::default());
        let p = &c.checked.as_ref().expect("valid program").program;
        let mut jit = JitProgram::compile(
            p,
            Options {
                decision_trees: true,
                min_run: 2,
                keep_clif: false,
                piece: 3,
                inline: true,
            },
        )
        .unwrap();
        tree_rules += jit.tree_rules;
        for _ in 0..150 {
            let (path, raw, meta) = packet(&mut r);
            if Packet::from_raw(&raw, &meta).is_none() {
                malformed += 1;
            }
            match jit.classify(path, &raw, &meta, &mut Coins(Rng::new(r.next_u64()))) {
                Ok(o) => {
                    *fates.entry(o.fate.name()).or_insert(0) += 1;
                    logs += o.logs.len();
                    if o.packet.saddr
                        != Packet::from_raw(&raw, &meta)
                            .map(|p| p.saddr)
                            .unwrap_or(o.packet.saddr)
                        || o.packet.daddr
                            != Packet::from_raw(&raw, &meta)
                                .map(|p| p.daddr)
                                .unwrap_or(o.packet.daddr)
                    {
                        nat += 1;
                    }
                }
                Err(_) => errors += 1,
            }
        }
    }
    for f in ["accept", "drop", "reject", "queue"] {
        assert!(fates.get(f).copied().unwrap_or(0) > 20, "{f}: {fates:?}");
    }
    let _ = errors; // callback errors have their own test below
    assert!(
        malformed > 100 && tree_rules > 100 && logs > 20 && nat > 20,
        "errors {errors} malformed {malformed} tree rules {tree_rules} logs {logs} nat {nat}"
    );
}

#[test]
fn a_failing_callback_fails_both_alike() {
    let c = fwc_compiler::compile_source(
        "e.fw",
        "table nat { chain postrouting { oif wg0 masquerade; } }",
        &MemFiles::default(),
    );
    let p = &c.checked.as_ref().unwrap().program;
    let mut jit = JitProgram::compile(p, Options::default()).unwrap();
    let raw = Packet {
        proto: 17,
        sport: 1,
        dport: 2,
        ..Packet::default()
    }
    .to_raw();
    let meta = Meta {
        oif: Some("wg0".into()),
        ct: ct::NEW,
        ..Meta::default()
    };
    let a =
        interp::run_raw(p, PathKind::Output, &raw, &meta, &mut interp::FreshOracle).unwrap_err();
    let b = jit
        .classify(PathKind::Output, &raw, &meta, &mut interp::FreshOracle)
        .unwrap_err();
    assert_eq!(a, b);
    assert!(a.to_string().contains("interface wg0 address"));
}

/// The long run: `FWC_DIFF_SECONDS=600 cargo test --release -p fwc-jit --test differential
/// -- --ignored --nocapture`. Seeds follow from a fixed start, so a failure is reproducible.
#[test]
#[ignore = "long run: set FWC_DIFF_SECONDS and pass --ignored"]
fn long_differential_run() {
    let secs: u64 = std::env::var("FWC_DIFF_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let start = std::time::Instant::now();
    let mut seed = 0x5eed_0000_0000_0001u64;
    let mut programs = 0u64;
    while start.elapsed().as_secs() < secs {
        check_program(seed, 150);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        programs += 1;
    }
    println!(
        "long differential run: {programs} programs x 150 packets x 2 JIT modes, 0 mismatches, {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

/// The optimizer changes no packet's fate or headers (the deciding rule may change: a removed
/// redundant rule's packets are decided by a later rule or the policy). Checked with the
/// optimized program run by the JIT against the original run by the interpreter.
fn check_optimizer(seed: u64, packets: usize) {
    let mut r = Rng::new(seed);
    let src = program(&mut r);
    let c = fwc_compiler::compile_source("opt.fw", &src, &MemFiles::default());
    let p = &c.checked.as_ref().expect("valid program").program;
    let mut opt = p.clone();
    // profile weights from a pseudo-random hit count per rule, to exercise many reorders
    let profile = fwc_compiler::opt::Profile {
        rules: (0..p.rule_count())
            .map(|i| fwc_compiler::opt::ProfileEntry {
                location: p.rule_location(RuleId(i as u32)),
                packets: r.next_u64() % 1000,
            })
            .collect(),
    };
    fwc_compiler::opt::optimize(&mut opt, Some(&profile));
    assert!(fwc_compiler::ir::verify(&opt).is_empty());
    let mut jit = JitProgram::compile(&opt, Options::default()).unwrap();
    for k in 0..packets {
        let (path, raw, meta) = packet(&mut r);
        // no random matches here: reordering may legally change the order coins are asked in
        let want = interp::run_raw(p, path, &raw, &meta, &mut interp::FreshOracle);
        let got = jit.classify(path, &raw, &meta, &mut interp::FreshOracle);
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(w.fate, g.fate, "seed {seed:#x} packet {k}\n{src}");
                let (a, b) = (&w.packet, &g.packet);
                assert_eq!(
                    (a.saddr, a.daddr, a.sport, a.dport, a.mark, a.ct, a.ttl),
                    (b.saddr, b.daddr, b.sport, b.dport, b.mark, b.ct, b.ttl),
                    "seed {seed:#x} packet {k}\n{src}"
                );
            }
            (Err(_), Err(_)) => {}
            _ => panic!("seed {seed:#x} packet {k}: {want:?} vs {got:?}\n{src}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 2, rng_seed: proptest::test_runner::RngSeed::Fixed(0x0971_2026), ..ProptestConfig::default() })]

    #[test]
    fn optimized_programs_behave_like_their_source(seed in any::<u64>()) {
        check_optimizer(seed, 150);
    }
}

#[test]
fn headers_a_called_subchain_rewrites_reach_the_later_chains() {
    // the passive entry keeps the parsed fields in variables for the chains it holds: after
    // a call out (here to a subchain that is not inlined, and whose NAT rewrites the
    // destination) they must be read again, or the filter chain sees the old address
    let src = "
        chain to-web() { tcp dport 80 dnat to 192.0.2.80; }
        table nat { chain prerouting { ip daddr 198.51.100.1 jump to-web(); } }
        table filter { chain forward policy drop {
            ip daddr 192.0.2.80 tcp dport 80 accept;
        } }";
    let c = fwc_compiler::compile_source("n.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let p = &c.checked.as_ref().unwrap().program;
    let pkt = Packet {
        proto: 6,
        saddr: 0xcb00_7105,
        daddr: 0xc633_6401,
        sport: 40000,
        dport: 80,
        ct: ct::NEW,
        l4: true,
        ..Packet::default()
    };
    let raw = pkt.to_raw();
    let meta = Meta {
        ct: ct::NEW,
        ..Meta::default()
    };
    let want =
        interp::run_raw(p, PathKind::Forward, &raw, &meta, &mut interp::FreshOracle).unwrap();
    assert_eq!(want.fate, interp::Fate::Accept, "the interpreter's answer");
    for inline in [false, true] {
        let mut jit = JitProgram::compile(
            p,
            Options {
                inline,
                ..Options::default()
            },
        )
        .unwrap();
        let got = jit
            .classify(PathKind::Forward, &raw, &meta, &mut interp::FreshOracle)
            .unwrap();
        assert_eq!(got.fate, want.fate, "inline {inline}");
        assert_eq!(got.deciding_rule, want.deciding_rule, "inline {inline}");
        assert_eq!(got.packet.daddr, 0xc000_0250, "inline {inline}");
    }
}
