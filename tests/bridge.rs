//! The iptables bridge without a kernel: `import(export(p))` means what `p` means, checked by
//! the interpreter over random packets on every path (and by the prover's semantic diff over
//! all packets); imports of saved rule sets translate as written or fail naming the line.
//!
//! `FWC_ROUNDTRIP_CASES=N` sets the number of random programs (default 150, 200 packets each).

use fwc_compiler::export::{self, Target};
use fwc_compiler::gen::random::kernel_program;
use fwc_compiler::gen::Rng;
use fwc_compiler::import::import;
use fwc_compiler::interp::{self, FreshOracle, Packet, PathKind};
use fwc_compiler::ir::{ct, Program};
use fwc_compiler::loader::DiskFiles;

fn compile(name: &str, src: &str) -> Result<Program, String> {
    let c = fwc_compiler::compile_source(name, src, &DiskFiles);
    if c.has_errors() {
        let msgs: Vec<String> = c.diags.iter().map(|d| d.message.clone()).collect();
        return Err(format!("{name} does not check: {msgs:?}\n{src}"));
    }
    Ok(c.checked.expect("checked").program)
}

fn packet(r: &mut Rng) -> (PathKind, Packet) {
    let addrs = [
        0xc000_0202u32,
        0xc000_0207,
        0xc000_0232,
        0xc000_0201,
        0xcb00_7101,
        0xcb00_7109,
        0xc633_6402,
        0xc633_644d,
        0xc633_64c8,
        0x0a00_0001,
    ];
    let ports = [22u16, 53, 80, 85, 443, 1500, 1999, 8080, 40000];
    let ifs = [None, Some("fi"), Some("fo"), Some("x0"), Some("lo")];
    let p = Packet {
        proto: *r.pick(&[6u8, 6, 17, 17, 1, 50]),
        saddr: *r.pick(&addrs),
        daddr: *r.pick(&addrs),
        sport: *r.pick(&ports),
        dport: *r.pick(&ports),
        icmp_type: *r.pick(&[8u8, 0, 3, 11, 13, 255]),
        tcp_flags: *r.pick(&[0x02u8, 0x10, 0x12, 0x04, 0x11, 0x00, 0x3f]),
        iif: r.pick(&ifs).map(str::to_string),
        oif: r.pick(&ifs).map(str::to_string),
        mark: *r.pick(&[0u32, 1, 7, 0x10, 0xffff_ffff]),
        ct: *r.pick(&[
            ct::NEW,
            ct::NEW,
            ct::ESTABLISHED,
            ct::RELATED,
            ct::INVALID,
            ct::UNTRACKED,
        ]),
        l4: !r.chance(5),
        ..Packet::default()
    };
    let path = *r.pick(&[PathKind::Input, PathKind::Forward, PathKind::Output]);
    (path, p)
}

/// What must survive the round trip: the fate and the packet as it leaves (addresses, ports
/// after NAT, mark).
fn effect(p: &Program, path: PathKind, pkt: &Packet) -> String {
    match interp::run(p, path, pkt, &mut FreshOracle) {
        Ok(o) => format!("{:?} {}", o.fate, o.packet),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn import_of_export_means_the_same() {
    let cases: u64 = std::env::var("FWC_ROUNDTRIP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let (mut programs, mut packets, mut proven, mut deterministic) = (0, 0, 0, 0);
    for seed in 0..cases {
        let mut r = Rng::new(seed + 1);
        let (src, p) = loop {
            let s = kernel_program(&mut r);
            if let Ok(p) = compile("orig.fw", &s) {
                break (s, p);
            }
        };
        let x = export::export(&p, Target::Iptables)
            .unwrap_or_else(|e| panic!("seed {seed}: export failed: {e:?}\n{src}"));
        let fw = import(&x.text, "exported.rules")
            .unwrap_or_else(|e| panic!("seed {seed}: import failed: {e:?}\n{}", x.text));
        let q = compile("imported.fw", &fw).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for _ in 0..200 {
            let (path, pkt) = packet(&mut r);
            let (a, b) = (effect(&p, path, &pkt), effect(&q, path, &pkt));
            assert_eq!(
                a,
                b,
                "seed {seed}: {} packet {pkt} (ct {:?}, l4 {}) differs\n--- program\n{src}\n--- export\n{}\n--- import\n{fw}",
                path.name(),
                ct::names(pkt.ct),
                pkt.l4,
                x.text
            );
            packets += 1;
        }
        // over every packet at once, where the prover can decide it (it pairs the random
        // matches of the two programs by rule, and the import numbers rules anew: only
        // programs without them)
        let random = p
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .any(|r| r.preds.iter().any(|x| x.is_stateful()));
        if random {
            programs += 1;
            continue;
        }
        deterministic += 1;
        if let Ok(changes) = fwc_compiler::prove::diff(&p, &q, 1) {
            assert!(
                changes.is_empty(),
                "seed {seed}: the prover finds packets that differ: {:?}\n--- program\n{src}\n--- import\n{fw}",
                changes.first().map(|c| format!("{c:?}"))
            );
            proven += 1;
        }
        programs += 1;
    }
    println!(
        "round trip: {programs} programs, {packets} packets; of {deterministic} without \
         random matches, {proven} proven equal over every packet"
    );
    assert!(
        proven * 10 >= deterministic * 9 && proven >= 20,
        "the prover decided too few: {proven} of {deterministic}"
    );
}

#[test]
fn a_saved_gateway_imports_checks_and_exports() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/iptables/gateway.rules"),
    )
    .expect("the example");
    let rules = text.lines().filter(|l| l.starts_with("-A")).count();
    assert!(rules >= 300, "a few hundred rules: {rules}");
    let fw = import(&text, "gateway.rules").expect("imports");
    // idiomatic: user chains as subchains, address lists as sets and defines
    assert!(fw.contains("chain f2b-sshd {"), "{fw}");
    assert!(
        fw.contains("define services-in-sources = { 10.0.0.0/24, 10.8.0.0/24, 192.0.2.64/27 };"),
        "{fw}"
    );
    assert!(
        fw.contains("ip saddr $services-in-sources tcp dport 22 jump ufw-user-limit;"),
        "{fw}"
    );
    assert!(
        fw.contains("tcp flags none / fin,syn,rst,psh,ack,urg jump port-scan;"),
        "{fw}"
    );
    assert!(
        fw.contains("iif eth0 ip daddr 203.0.113.10 tcp dport 8080 dnat to 10.0.0.20:80;"),
        "{fw}"
    );
    let p = compile("gateway.fw", &fw).expect("checks");
    for t in [Target::Iptables, Target::Nft] {
        export::export(&p, t).expect("exports");
    }
    // and once more: the import of the export is the same program again
    let again = import(&export::export(&p, Target::Iptables).unwrap().text, "again").unwrap();
    let q = compile("again.fw", &again).expect("checks");
    let mut r = Rng::new(99);
    for _ in 0..2000 {
        let (path, pkt) = packet(&mut r);
        assert_eq!(effect(&p, path, &pkt), effect(&q, path, &pkt), "{pkt}");
    }
}

#[test]
fn what_has_no_translation_is_an_error_naming_its_line() {
    let cases = [
        (
            "-A INPUT -m recent --name x --set -j DROP",
            4,
            "`-m recent` has no fw translation",
        ),
        ("-A INPUT -p tcp --dport ssh -j ACCEPT", 4, "port `ssh`"),
        (
            "-A INPUT -m mark --mark 0x1/0x1 -j ACCEPT",
            4,
            "scattered bits",
        ),
        ("-A INPUT -p icmp --icmp-type 3/3 -j ACCEPT", 4, "not codes"),
        ("-A INPUT -j TPROXY --on-port 1", 4, "target `TPROXY`"),
        (
            "-A INPUT -j LOG --log-uid",
            4,
            "`--log-uid` has no fw translation",
        ),
        ("-A NOPE -j ACCEPT", 4, "chain `NOPE` is not declared"),
        ("-A INPUT -f -j DROP", 4, "fragment"),
    ];
    for (line, at, msg) in cases {
        let text = format!("*filter\n:INPUT ACCEPT [0:0]\n# a comment\n{line}\nCOMMIT\n");
        let errs = import(&text, "t.rules").expect_err(line);
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        assert_eq!(errs[0].line, at, "{line}");
        assert!(errs[0].message.contains(msg), "{line}: {}", errs[0].message);
    }
    // two rules sharing one hashlimit bucket cannot become two fw limits
    let text = "*filter\n:INPUT ACCEPT [0:0]\n\
        -A INPUT -p tcp -m hashlimit --hashlimit-upto 5/sec --hashlimit-name b -j ACCEPT\n\
        -A INPUT -p udp -m hashlimit --hashlimit-upto 5/sec --hashlimit-name b -j ACCEPT\nCOMMIT\n";
    let errs = import(text, "t.rules").unwrap_err();
    assert_eq!(errs[0].line, 4);
    assert!(errs[0].message.contains("shared with line 3"), "{errs:?}");
    // a table without its COMMIT
    let errs = import("*filter\n:INPUT ACCEPT [0:0]\n", "t.rules").unwrap_err();
    assert!(errs[0].message.contains("COMMIT"), "{errs:?}");
}

#[test]
fn address_lists_join_only_where_nothing_can_tell() {
    // iptables saved `-s a,b -j LOG` as two rules: overlapping addresses would log twice,
    // so those stay apart; disjoint ones, or rules that end the chain, become one set
    let text = "*filter\n:INPUT ACCEPT [0:0]\n\
        -A INPUT -s 10.0.0.0/8 -j LOG\n-A INPUT -s 10.1.0.0/16 -j LOG\n\
        -A INPUT -s 192.0.2.1/32 -j LOG\n-A INPUT -s 192.0.2.2/32 -j LOG\n\
        -A INPUT -s 10.0.0.0/8 -j DROP\n-A INPUT -s 10.1.0.0/16 -j DROP\nCOMMIT\n";
    let fw = import(text, "t.rules").unwrap();
    assert!(fw.contains("ip saddr 10.0.0.0/8 log level warn;"), "{fw}");
    // (10.1.0.0/16 and the next two do not overlap: one set)
    assert!(
        fw.contains("ip saddr { 10.1.0.0/16, 192.0.2.1, 192.0.2.2 } log level warn;"),
        "{fw}"
    );
    assert!(
        fw.contains("ip saddr { 10.0.0.0/8, 10.1.0.0/16 } drop;"),
        "{fw}"
    );
}
