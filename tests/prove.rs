//! The assert prover: properties that hold are proven, ones that do not get a counterexample
//! that is true (replayed through the interpreter, and pasted back as a `test` line that
//! passes), and on random programs a proof is never contradicted by a sampled packet.

use fwc_compiler::check::{AssertCase, Checked};
use fwc_compiler::interp::{self, Meta, Packet, PathKind};
use fwc_compiler::ir::ct;
use fwc_compiler::loader::MemFiles;
use fwc_compiler::prove::{prove, Proof};
use fwc_compiler::testrun;

fn checked(src: &str) -> Checked {
    let c = fwc_compiler::compile_source("p.fw", src, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}\n{src}", c.diags);
    c.checked.unwrap()
}

/// Every assert line of the program, proven or refuted.
fn proofs(src: &str) -> Vec<Proof> {
    let c = checked(src);
    c.asserts
        .iter()
        .flat_map(|a| &a.lines)
        .map(|l| prove(&c.program, l))
        .collect()
}

/// The counterexample's test line, pasted into the program as a `test`: it must pass.
fn check_counterexample(src: &str, proof: &Proof) -> String {
    let Proof::Fails(cx) = proof else {
        panic!("expected a counterexample, got {proof:?}");
    };
    let line = cx.test_line.clone().expect("a test line");
    let with_test = format!("{src}\ntest \"counterexample\" {{\n    {line}\n}}\n");
    let c = checked(&with_test);
    let results = testrun::run_tests(&c);
    let r = results.last().unwrap();
    assert!(r.passed, "{line}: {:?}", r.failure);
    line
}

const SSH: &str = r#"
define admins = { 10.0.0.1, 10.0.0.2 };
table filter {
    chain input policy drop {
        ct state established,related accept;
        iif lo accept;
        ip saddr $admins tcp dport 22 accept;
        tcp dport 80 accept;
    }
}
"#;

#[test]
fn a_property_that_holds_is_proven() {
    let src = format!(
        "{SSH}
assert \"ssh\" {{
    never input accept tcp dport 22 iif != lo ip saddr != $admins ct state new;
    always input drop udp ct state new iif != lo;
    always input accept tcp dport 80;
    never input drop ct state established;
}}"
    );
    for p in proofs(&src) {
        assert!(matches!(p, Proof::Holds { .. }), "{p:?}");
    }
}

#[test]
fn a_property_that_fails_gets_a_true_counterexample() {
    // 10.0.0.0/24 may reach ssh too: the assert is wrong about this program
    let src = SSH.replace(
        "tcp dport 80 accept;",
        "tcp dport 80 accept; ip saddr 10.0.0.0/24 tcp dport { 22, 443 } accept;",
    );
    let src = format!(
        "{src}
assert \"ssh\" {{
    never input accept tcp dport 22 iif != lo ip saddr != $admins ct state new;
}}"
    );
    let p = proofs(&src);
    let line = check_counterexample(&src, &p[0]);
    assert!(line.starts_with("input tcp 10.0.0."), "{line}");
    assert!(
        line.contains(":22 ") && line.ends_with("=> accept;"),
        "{line}"
    );
}

#[test]
fn rewrites_marks_notrack_and_nat_are_followed() {
    let src = r#"
interface eth0 address 203.0.113.1;
table raw { chain prerouting { udp dport 53 notrack; } }
table mangle { chain prerouting { iif eth1 mark set 7; } }
table nat {
    chain prerouting { tcp dport 8080 dnat to 10.0.0.5:80; }
    chain postrouting { oif eth0 masquerade; }
}
table filter {
    chain forward policy drop {
        mark 7 accept;
        ip daddr 10.0.0.5 tcp dport 80 ct state new accept;
    }
}
assert "rewrites" {
    always forward accept iif eth1;
    always forward accept tcp dport 8080 ct state new;
    never forward accept tcp dport 8080 ct state established iif != eth1 mark != 7;
    never forward accept udp dport 53 iif != eth1 mark != 7;
}"#;
    for p in proofs(src) {
        assert!(matches!(p, Proof::Holds { .. }), "{p:?}");
    }
    // a port forward's later packets skip the nat table: they are not translated, so the
    // forward rule does not let them through; an untracked DNS packet is not new
    let wrong = src.replace(
        "never forward accept tcp dport 8080 ct state established iif != eth1 mark != 7;",
        "always forward accept tcp dport 8080 iif != eth1 mark != 7;",
    );
    let p = proofs(&wrong);
    let line = check_counterexample(&wrong, &p[2]);
    assert!(
        line.contains(":8080") && line.ends_with("=> drop;"),
        "{line}"
    );
    assert!(!line.contains("ct state new"), "{line}");
}

#[test]
fn subchains_vmaps_and_interfaces() {
    let src = r#"
chain web(p: port) {
    tcp dport $p accept;
    return;
}
chain admin() { ip saddr 10.0.0.0/8 accept; drop; }
table filter {
    chain input policy drop {
        jump web(443);
        tcp dport vmap { 22 : goto admin(), 25 : drop, 80 : jump web(80) };
        iif eth* icmp type echo-request accept;
    }
}
assert "dispatch" {
    always input accept tcp dport 443;
    always input accept tcp dport 22 ip saddr 10.0.0.0/8;
    never input accept tcp dport 22 ip saddr != 10.0.0.0/8;
    always input accept icmp type echo-request iif eth9;
    never input accept icmp iif != eth*;
}"#;
    for p in proofs(src) {
        assert!(matches!(p, Proof::Holds { .. }), "{p:?}");
    }
    let wrong = src.replace(
        "always input accept icmp type echo-request iif eth9;",
        "always input accept icmp type echo-request;",
    );
    let p = proofs(&wrong);
    let line = check_counterexample(&wrong, &p[3]);
    assert!(
        line.starts_with("input icmp") && line.ends_with("=> drop;"),
        "{line}"
    );
    assert!(!line.contains("iif eth"), "{line}");
}

#[test]
fn statistic_and_limit_go_either_way() {
    let src = r#"
table filter {
    chain input policy drop {
        tcp dport 22 limit 10/second accept;
        statistic probability 0.5 tcp dport 80 accept;
    }
}
assert "chance" {
    never input drop tcp dport 22;
    always input accept tcp dport 80;
    never input accept tcp dport 23;
}"#;
    let p = proofs(src);
    for k in [0, 1] {
        let Proof::Fails(cx) = &p[k] else {
            panic!("{:?}", p[k])
        };
        // the way the coins must land is part of the counterexample
        assert!(cx.coins.iter().any(|(_, hit)| !hit), "{cx:?}");
        assert_eq!(cx.outcome.fate, interp::Fate::Drop);
    }
    assert!(matches!(p[2], Proof::Holds { .. }), "{:?}", p[2]);
}

#[test]
fn packets_without_a_transport_header_are_covered() {
    // a TCP fragment has no ports: `tcp dport != 22` does not match it, so it is accepted
    let src = r#"
table filter { chain input policy accept { tcp dport != 22 drop; } }
assert "only ssh" {
    never input accept tcp;
}"#;
    let p = proofs(src);
    let Proof::Fails(cx) = &p[0] else {
        panic!("{:?}", p[0])
    };
    assert!(!cx.packet.l4 || cx.packet.dport == 22, "{cx:?}");
}

// -------------------------------------------------------------------------------------
// random programs: a proof is never contradicted by a sampled packet

/// The generator's random numbers, with the picks this file needs.
struct Rng(fwc_compiler::gen::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
    /// one time in `n`
    fn chance(&mut self, n: u64) -> bool {
        self.0.below(n) == 0
    }
}

const ADDRS: [&str; 6] = [
    "10.0.0.0/8",
    "10.0.0.1",
    "192.0.2.0/24",
    "192.0.2.7",
    "{ 10.0.0.1, 192.0.2.0/25 }",
    "198.51.100.1-198.51.100.9",
];
const PORTS: [&str; 5] = ["22", "80", "1000-2000", "{ 22, 80, 443 }", "53"];
const IFACES: [&str; 4] = ["eth0", "eth*", "lo", "{ eth1, lo }"];

fn a_match(r: &mut Rng) -> String {
    let neg = if r.chance(4) { "!= " } else { "" };
    match r.below(9) {
        0 => format!("ip saddr {neg}{}", r.pick(&ADDRS)),
        1 => format!("ip daddr {neg}{}", r.pick(&ADDRS)),
        2 => format!("{} dport {neg}{}", r.pick(&["tcp", "udp"]), r.pick(&PORTS)),
        3 => format!("tcp sport {neg}{}", r.pick(&PORTS)),
        4 => format!("iif {neg}{}", r.pick(&IFACES)),
        5 => format!(
            "ct state {neg}{}",
            r.pick(&[
                "new",
                "established,related",
                "invalid",
                "untracked",
                "new,invalid"
            ])
        ),
        6 => format!("mark {neg}{}", r.pick(&["1", "2"])),
        7 => r
            .pick(&[
                "tcp",
                "udp",
                "icmp",
                "icmp type echo-request",
                "tcp flags syn / syn,ack",
            ])
            .to_string(),
        _ => format!("oif {neg}{}", r.pick(&IFACES)),
    }
}

/// The protocol a match names, if one.
fn proto_of(m: &str) -> Option<&'static str> {
    ["tcp", "udp", "icmp"]
        .into_iter()
        .find(|p| m.split_whitespace().next() == Some(*p))
}

/// Up to `n` matches that agree on their protocol.
fn matches(r: &mut Rng, n: usize) -> (Vec<String>, Option<&'static str>) {
    let mut proto = None;
    let mut out = Vec::new();
    for _ in 0..n {
        let m = a_match(r);
        match (proto_of(&m), proto) {
            (Some(p), Some(q)) if p != q => continue,
            (Some(p), None) => proto = Some(p),
            _ => {}
        }
        out.push(m);
    }
    (out, proto)
}

fn a_rule(r: &mut Rng, table: &str, in_sub: bool) -> String {
    let n = r.below(3);
    let (mut ms, proto) = matches(r, n);
    let ported = matches!(proto, Some("tcp") | Some("udp"));
    let stmt = match (table, r.below(10)) {
        ("nat", 0..=3) if ported => "dnat to 10.9.9.9:8080".to_string(),
        ("nat", 0..=3) => "dnat to 10.9.9.9".to_string(),
        ("nat", 4..=5) => "masquerade".to_string(),
        ("raw", 0..=2) => "notrack".to_string(),
        ("mangle", 0..=3) => format!("mark set {}", r.pick(&["1", "2"])),
        (_, 0) => "drop".into(),
        (_, 1) => "reject".into(),
        (_, 2) if !in_sub => "jump sub()".into(),
        (_, 3) if !in_sub => "goto sub()".into(),
        (_, 4) if in_sub => "return".into(),
        (_, 5) if proto.is_none() || proto == Some("tcp") => {
            if proto.is_none() {
                ms.push("tcp".into());
            }
            if in_sub {
                "tcp dport vmap { 22 : accept, 80 : drop }".into()
            } else {
                "tcp dport vmap { 22 : accept, 80 : drop, 1000-2000 : jump sub() }".into()
            }
        }
        (_, 6) => "statistic probability 0.5 accept".into(),
        (_, 7) => "mark set 2 accept".into(),
        _ => "accept".into(),
    };
    format!("{} {stmt};", ms.join(" "))
}

fn a_program(r: &mut Rng) -> String {
    let mut s = String::from("interface eth0 address 203.0.113.1;\n");
    s.push_str("chain sub() {\n");
    for _ in 0..r.below(3) {
        s.push_str(&format!("    {}\n", a_rule(r, "filter", true)));
    }
    s.push_str("}\n");
    let tables: [(&str, &[&str]); 4] = [
        ("raw", &["prerouting", "output"]),
        ("mangle", &["prerouting", "forward", "postrouting"]),
        ("nat", &["prerouting", "postrouting"]),
        ("filter", &["input", "forward", "output"]),
    ];
    for (t, hooks) in tables {
        s.push_str(&format!("table {t} {{\n"));
        for h in hooks {
            if r.chance(3) {
                continue;
            }
            let policy = if t == "filter" && r.chance(2) {
                " policy drop"
            } else {
                ""
            };
            s.push_str(&format!("    chain {h}{policy} {{\n"));
            for _ in 0..r.below(5) {
                let rule = a_rule(r, t, false);
                // nat and raw statements only where they may be
                if (t == "nat" && h == &"prerouting" && rule.contains("masquerade"))
                    || (t == "nat" && h == &"postrouting" && rule.contains("dnat"))
                    || (t != "filter" && (rule.contains("sub()") || rule.contains("reject")))
                {
                    continue;
                }
                s.push_str(&format!("        {rule}\n"));
            }
            s.push_str("    }\n");
        }
        s.push_str("}\n");
    }
    s
}

/// Random packets on `path`, values drawn near the generator's constants.
fn a_packet(r: &mut Rng) -> Packet {
    let addr = |r: &mut Rng| -> u32 {
        match r.below(6) {
            0 => 0x0a00_0001,
            1 => 0x0a00_0000 | r.below(256) as u32,
            2 => 0xc000_0200 | r.below(256) as u32,
            3 => 0xc633_6400 | r.below(12) as u32,
            4 => 0x0a09_0909,
            _ => r.next() as u32,
        }
    };
    let port = |r: &mut Rng| -> u16 {
        *[22u16, 80, 443, 53, 999, 1000, 1500, 2000, 2001, 8080]
            .get(r.below(11))
            .unwrap_or(&(r.next() as u16))
    };
    let iface = |r: &mut Rng| -> Option<String> {
        match r.below(6) {
            0 => None,
            1 => Some("eth0".into()),
            2 => Some("eth1".into()),
            3 => Some("lo".into()),
            4 => Some("ethx".into()),
            _ => Some("wg0".into()),
        }
    };
    let proto = [6u8, 17, 1, 47][r.below(4)];
    Packet {
        proto,
        saddr: addr(r),
        daddr: addr(r),
        sport: port(r),
        dport: port(r),
        icmp_type: [8u8, 0, 3][r.below(3)],
        icmp_code: 0,
        tcp_flags: [0x02u8, 0x10, 0x12, 0x11][r.below(4)],
        iif: iface(r),
        oif: iface(r),
        mark: [0u32, 1, 2, 7][r.below(4)],
        ct: [
            ct::NEW,
            ct::ESTABLISHED,
            ct::RELATED,
            ct::INVALID,
            ct::UNTRACKED,
        ][r.below(5)],
        ttl: 64,
        l4: proto != 47 && !r.chance(8),
    }
}

/// Whether `pkt` is in the assert line's region: a one-rule program of its matches accepts it.
fn in_region(region: &fwc_compiler::ir::Program, path: PathKind, pkt: &Packet) -> bool {
    interp::run(region, path, pkt, &mut interp::FreshOracle)
        .map(|o| o.fate == interp::Fate::Accept)
        .unwrap_or(false)
}

#[test]
fn random_programs_proofs_hold_on_sampled_packets_and_counterexamples_replay() {
    let cases: u64 = std::env::var("FWC_PROVE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let (mut proven, mut refuted, mut skipped) = (0, 0, 0);
    for seed in 1..=cases {
        let mut r = Rng(fwc_compiler::gen::Rng::new(seed));
        let prog = a_program(&mut r);
        let mut lines = Vec::new();
        let mut regions = Vec::new();
        for _ in 0..3 {
            let path = r.pick(&["input", "forward", "output"]);
            let n = r.below(3);
            let (ms, _) = matches(&mut r, n);
            let line = format!(
                "{} {path} {} {};",
                r.pick(&["never", "always"]),
                r.pick(&["accept", "drop"]),
                ms.join(" ")
            );
            let hook = match path {
                "input" => "input",
                "forward" => "forward",
                _ => "output",
            };
            regions.push(format!(
                "table filter {{ chain {hook} policy drop {{ {} accept; }} }}",
                ms.join(" ")
            ));
            lines.push(line);
        }
        let src = format!(
            "{prog}assert \"random\" {{\n{}\n}}\n",
            lines
                .iter()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let c = fwc_compiler::compile_source("r.fw", &src, &MemFiles::default());
        if c.has_errors() {
            if std::env::var("FWC_PROVE_DEBUG").is_ok() {
                let d = c
                    .diags
                    .iter()
                    .find(|d| d.severity == fwc_compiler::diag::Severity::Error);
                eprintln!("skipped: {:?}", d.map(|d| (d.code, &d.message)));
            }
            skipped += 1;
            continue;
        }
        let ch = c.checked.unwrap();
        // rules shadowed by several earlier ones never match a sampled packet
        let never: Vec<fwc_compiler::ir::RuleId> =
            fwc_compiler::prove::shadowed_by_several(&ch.program, u64::MAX)
                .into_iter()
                .map(|(c, r, _)| ch.program.chains[c].rules[r].id)
                .collect();
        if !never.is_empty() {
            for _ in 0..100 {
                let pkt = a_packet(&mut r);
                for path in [PathKind::Input, PathKind::Forward, PathKind::Output] {
                    for (_, o) in interp::run_all_outcomes(&ch.program, path, &pkt, 8)
                        .into_iter()
                        .flatten()
                    {
                        assert!(
                            !o.trace
                                .iter()
                                .any(|t| t.rule.is_some_and(|id| never.contains(&id))),
                            "a rule reported shadowed matched {pkt}\n{src}"
                        );
                    }
                }
            }
        }
        let cases: Vec<&AssertCase> = ch.asserts.iter().flat_map(|a| &a.lines).collect();
        for (k, case) in cases.iter().enumerate() {
            let rc = fwc_compiler::compile_source("region.fw", &regions[k], &MemFiles::default());
            let Some(region) = rc.checked.map(|c| c.program) else {
                skipped += 1;
                continue;
            };
            let want = |f: &interp::Fate| f.name() == lines[k].split_whitespace().nth(2).unwrap();
            match prove(&ch.program, case) {
                Proof::Holds { .. } => {
                    proven += 1;
                    for _ in 0..300 {
                        let pkt = a_packet(&mut r);
                        if !in_region(&region, case.path, &pkt) {
                            continue;
                        }
                        let outs = interp::run_all_outcomes(&ch.program, case.path, &pkt, 8);
                        for (coins, o) in outs.into_iter().flatten() {
                            // limit may also go either way: only statistic is enumerated here
                            let _ = coins;
                            assert!(
                                want(&o.fate) == case.always,
                                "proven, but {pkt} ends {:?}\n{src}\nline {k}",
                                o.fate
                            );
                        }
                    }
                }
                Proof::Fails(cx) => {
                    refuted += 1;
                    assert!(
                        in_region(&region, case.path, &cx.packet),
                        "the counterexample {} is outside the line's region\n{src}\nline {k}",
                        cx.packet
                    );
                    assert!(want(&cx.outcome.fate) != case.always, "{cx:?}\n{src}");
                }
                Proof::Unknown(why) => panic!("{why}\n{src}"),
            }
        }
    }
    eprintln!("{proven} proven, {refuted} refuted, {skipped} skipped");
    assert!(
        proven > cases as usize / 4 && refuted > cases as usize / 4,
        "{proven} / {refuted}"
    );
    assert!(
        skipped < cases as usize / 4,
        "too many generated programs did not compile: {skipped}"
    );
}

// a sanity check of the helper: a packet in no region is never sampled as one
#[test]
fn region_programs_select_their_packets() {
    let c = fwc_compiler::compile_source(
        "r.fw",
        "table filter { chain input policy drop { tcp dport 22 accept; } }",
        &MemFiles::default(),
    );
    let p = c.checked.unwrap().program;
    let mut pkt = Packet {
        proto: 6,
        dport: 22,
        l4: true,
        ..Packet::default()
    };
    assert!(in_region(&p, PathKind::Input, &pkt));
    pkt.dport = 23;
    assert!(!in_region(&p, PathKind::Input, &pkt));
    let _ = Meta::default();
}

// -------------------------------------------------------------------------------------
// semantic diff

fn program_of(src: &str) -> fwc_compiler::ir::Program {
    checked(src).program
}

#[test]
fn diff_finds_the_regions_that_change_and_nothing_else() {
    let old = r#"
table filter {
    chain input policy drop {
        ct state established,related accept;
        tcp dport 22 ip saddr 10.0.0.0/8 accept;
        tcp dport 80 accept;
    }
}"#;
    let same = old.replace("tcp dport 80 accept;", "tcp dport { 80 } accept;");
    let d = fwc_compiler::prove::diff(&program_of(old), &program_of(&same), 50).unwrap();
    assert!(d.is_empty(), "{d:?}");
    let new = old.replace("tcp dport 80 accept;", "tcp dport { 80, 443 } accept;");
    let d = fwc_compiler::prove::diff(&program_of(old), &program_of(&new), 50).unwrap();
    assert!(!d.is_empty());
    for c in &d {
        assert_eq!(c.path, PathKind::Input, "{c:?}");
        assert!(c.region.contains("tcp dport 443"), "{}", c.region);
        assert_eq!(
            (c.old.fate, c.new.fate),
            (interp::Fate::Drop, interp::Fate::Accept)
        );
        assert_eq!(c.example.dport, 443);
    }
    // a rewrite that changes is a change too
    let nat = "interface eth0 address 203.0.113.1;
table nat { chain postrouting { oif eth0 masquerade; } }";
    let nat2 = nat.replace("masquerade;", "snat to 203.0.113.9;");
    let d = fwc_compiler::prove::diff(&program_of(nat), &program_of(&nat2), 50).unwrap();
    assert!(!d.is_empty());
    assert!(d.iter().all(|c| c.old.fate == c.new.fate
        && c.old.packet.saddr == 0xcb00_7101
        && c.new.packet.saddr == 0xcb00_7109));
}

#[test]
fn random_diffs_miss_no_sampled_change() {
    let cases: u64 = std::env::var("FWC_PROVE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let (mut with, mut without) = (0, 0);
    for seed in 1..=cases {
        let mut r = Rng(fwc_compiler::gen::Rng::new(seed ^ 0xd1ff));
        // no `statistic` here: outcomes must be one per packet to compare them
        let a = a_program(&mut r).replace("statistic probability 0.5 ", "");
        let lines: Vec<&str> = a.lines().collect();
        // the same program with one rule line dropped or one verdict flipped
        let k = r.below(lines.len());
        let b: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i != k || !l.trim_end().ends_with(';') {
                    l.to_string()
                } else if r.chance(2) {
                    String::new()
                } else {
                    l.replace(" accept;", " drop;")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (ca, cb) = (
            fwc_compiler::compile_source("a.fw", &a, &MemFiles::default()),
            fwc_compiler::compile_source("b.fw", &b, &MemFiles::default()),
        );
        let (Some(pa), Some(pb)) = (ca.checked, cb.checked) else {
            continue;
        };
        let d = fwc_compiler::prove::diff(&pa.program, &pb.program, 10_000).unwrap();
        if !d.is_empty() {
            with += 1;
            continue;
        }
        without += 1;
        // no change reported: no packet may be treated differently
        for _ in 0..300 {
            let pkt = a_packet(&mut r);
            for path in [PathKind::Input, PathKind::Forward, PathKind::Output] {
                let run = |p| interp::run(p, path, &pkt, &mut interp::FreshOracle);
                // what leaves: the fate, and for an accepted packet what it leaves as
                let leaves = |o: Result<interp::Outcome, interp::InterpError>| {
                    o.map(|o| {
                        let p = o.packet;
                        if o.fate == interp::Fate::Accept {
                            (o.fate, p.saddr, p.daddr, p.sport, p.dport, p.mark)
                        } else {
                            (o.fate, 0, 0, 0, 0, 0)
                        }
                    })
                    .unwrap_or((interp::Fate::Drop, 0, 0, 0, 0, 0))
                };
                assert_eq!(
                    leaves(run(&pa.program)),
                    leaves(run(&pb.program)),
                    "no change reported, but {pkt} on {path:?} differs\n--- a\n{a}\n--- b\n{b}"
                );
            }
        }
    }
    assert!(
        with > 0 && without > 0,
        "{with} with changes, {without} without"
    );
}
