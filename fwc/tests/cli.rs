//! The `fwc` binary as a user runs it: exit codes, output formats, files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fwc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwc"))
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .output()
        .expect("fwc runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmp(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fwc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn check_exit_codes() {
    let o = fwc(&["check", "examples/language.fw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let bad = tmp(
        "bad.fw",
        "table filter { chain input { tcp dport $nope accept; } }\n",
    );
    let o = fwc(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("FW0020") && err.contains("unknown variable `$nope`"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "no colour when not on a terminal");
    let o = fwc(&["check", "/nonexistent/file.fw"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cannot read"));
    let o = fwc(&["check"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    let o = fwc(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
}

#[test]
fn warnings_pass_unless_denied() {
    let w = tmp(
        "warn.fw",
        "table filter { chain input { accept; drop; } }\n",
    );
    let o = fwc(&["check", w.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("FW0100"));
    let o = fwc(&["check", "--deny-warnings", w.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

/// `--deny CODE`, `--allow CODE`, `--deny warnings`, and `# fwc: allow(CODE)` comments.
#[test]
fn lint_levels_from_the_command_line_and_comments() {
    let f = tmp(
        "levels.fw",
        "define unused = 1;
table filter {
    chain input policy drop {
        ip saddr 203.0.113.0/24 drop;
        # fwc: allow(FW0103)
        tcp dport 22 accept;
        tcp dport 80 accept;
    }
}
",
    );
    let p = f.to_str().unwrap();
    let o = fwc(&["check", p]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[FW0105] Warning: unused define `unused`"),
        "{err}"
    );
    // the comment silences the note on the rule below it, not the one after
    assert!(!err.contains("levels.fw:6:9"), "{err}");
    assert!(
        err.contains("[FW0103] Note") && err.contains("levels.fw:7:9"),
        "{err}"
    );
    let o = fwc(&["check", "--allow", "FW0105,FW0103", p]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!text(&o.stderr).contains("FW01"), "{}", text(&o.stderr));
    for deny in [&["--deny", "FW0105"][..], &["--deny", "warnings"]] {
        let mut args = vec!["check"];
        args.extend_from_slice(deny);
        args.push(p);
        let o = fwc(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{deny:?}: {err}");
        assert!(err.contains("[FW0105] Error: unused define"), "{err}");
        assert!(err.contains("makes this an error"), "{err}");
    }
    // errors are not lints; unknown codes are usage errors
    for bad in ["FW0030", "FW9999"] {
        let o = fwc(&["check", "--allow", bad, p]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn json_diagnostics_are_one_object_per_line() {
    let bad = tmp(
        "json.fw",
        "define a = 10.0.0.0/99;\ntable filter { chain input { tcp dport 1-2-3 accept; } }\n",
    );
    let o = fwc(&["--format", "json", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = text(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines.len() >= 2);
    let first = &lines[0];
    assert_eq!(first["code"], "FW0032");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 1);
    assert_eq!(first["column"], 12);
    assert!(first["file"].as_str().unwrap().ends_with("json.fw"));
    assert_eq!(first["labels"][0]["primary"], true);
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let bad = tmp(
        "colour.fw",
        "table filter { chain input { tcp dport $nope accept; } }\n",
    );
    let o = fwc(&["--color", "always", "check", bad.to_str().unwrap()]);
    assert!(text(&o.stderr).contains('\x1b'));
}

#[test]
fn build_writes_a_versioned_artefact_and_rejects_foreign_or_stale_ones() {
    let out = std::env::temp_dir().join(format!("fwc-cli-{}-lang.fwo", std::process::id()));
    let o = fwc(&["build", "examples/language.fw", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"fwc-artefact 1 "));
    // the artefact explains like the source
    let q = "input tcp 203.0.113.9:40000 -> 192.0.2.1:22 iif eth0";
    let o = fwc(&["explain", out.to_str().unwrap(), q]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("verdict: drop"));
    // stale: another format version
    let stale =
        String::from_utf8(bytes.clone())
            .unwrap()
            .replacen("fwc-artefact 1 ", "fwc-artefact 0 ", 1);
    let sp = tmp("stale.fwo", &stale);
    let o = fwc(&["explain", sp.to_str().unwrap(), q]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("stale artefact"),
        "{}",
        text(&o.stderr)
    );
    // damaged body
    let cut = String::from_utf8(bytes[..bytes.len() / 2].to_vec()).unwrap_or_default();
    let cp = tmp("cut.fwo", &cut);
    let o = fwc(&["explain", cp.to_str().unwrap(), q]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("damaged artefact"),
        "{}",
        text(&o.stderr)
    );
    // a foreign file where an artefact is expected
    let fp = tmp("foreign.fwo", "{\"not\": \"ours\"}\n");
    let o = fwc(&["explain", fp.to_str().unwrap(), q]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not an fwc artefact"),
        "{}",
        text(&o.stderr)
    );
    let bin = std::env::temp_dir().join(format!("fwc-cli-{}-binary", std::process::id()));
    std::fs::write(&bin, [0u8, 159, 146, 150, 255, 1, 2]).unwrap();
    let o = fwc(&["explain", bin.to_str().unwrap(), q]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not an fwc artefact"),
        "{}",
        text(&o.stderr)
    );
    let o = fwc(&["check", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("takes a `.fw` file"),
        "{}",
        text(&o.stderr)
    );
    // building an artefact again is refused
    let o = fwc(&["build", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn build_emit_ir_prints_the_ir() {
    let o = fwc(&["build", "--emit", "ir", "examples/language.fw"]);
    assert_eq!(o.status.code(), Some(0));
    let ir = text(&o.stdout);
    assert!(ir.starts_with("; fwc ir v1"));
    assert!(ir.contains("base filter/input policy drop"));
    assert!(ir.contains("sub incoming-ssh({ 10.0.0.1, 10.0.0.2 })"));
}

#[test]
fn test_reports_passes_failures_and_asserts() {
    let o = fwc(&["test", "examples/language.fw"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("4 passed, 0 failed"), "{out}");
    assert!(
        out.contains(
            "assert \"no ssh from outside the admins\" examples/language.fw:65 ... ok (proven)"
        ),
        "{out}"
    );
    // a false assert: FAILED, a counterexample with its trace, FW0071, exit 1
    let wrong = tmp(
        "wrong.fw",
        "table filter { chain input policy drop { tcp dport { 22, 80 } accept; } }
assert \"ssh\" {
    never input accept tcp dport 22 iif eth0;
    always input drop udp;
}
",
    );
    let o = fwc(&["test", wrong.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    assert!(
        out.contains("counterexample: input tcp 192.0.2.1:40000 -> 198.51.100.1:22 iif eth0 ct state new => accept;"),
        "{out}"
    );
    assert!(
        out.contains("tcp dport { 22, 80 } accept;  => accept"),
        "the trace: {out}"
    );
    assert!(text(&o.stderr).contains("[FW0071] Error: assert \"ssh\" does not hold"));

    let src = "table filter { chain input policy drop { tcp dport 22 accept; } }
test \"ssh\" {
    input tcp 198.51.100.1:4000 -> 192.0.2.1:22 => accept;
    input tcp 198.51.100.1:4000 -> 192.0.2.1:23 => accept;
}
";
    let f = tmp("t.fw", src);
    let o = fwc(&["test", f.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    assert!(out.contains("expected accept, got drop"), "{out}");
    assert!(out.contains("policy drop"), "the trace is shown: {out}");
    let ok = tmp(
        "ok.fw",
        &src.replace("192.0.2.1:23 => accept", "192.0.2.1:23 => drop"),
    );
    let o = fwc(&["test", ok.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("2 passed, 0 failed"));
}

#[test]
fn explain_shows_each_rule_hit_with_its_line() {
    let o = fwc(&[
        "explain",
        "examples/language.fw",
        "forward udp 10.1.2.3:5353 -> 198.51.100.9:53 iif eth1 oif eth0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("examples/language.fw:26"), "{out}");
    assert!(
        out.contains("iif eth1 oif eth0 ip saddr $lan accept;"),
        "{out}"
    );
    assert!(out.contains("verdict: accept"), "{out}");
    let o = fwc(&[
        "explain",
        "examples/language.fw",
        "sideways tcp 1.2.3.4:1 -> 5.6.7.8:2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("<query>"), "{}", text(&o.stderr));
}

#[test]
fn build_optimizes_and_emits_clif() {
    let src = "table filter { chain input policy drop {
    tcp dport { 22, 80 } accept;
    tcp dport 22 accept;
    tcp dport 443 accept;
} }
";
    let f = tmp("opt.fw", src);
    let out = std::env::temp_dir().join(format!("fwc-cli-{}-opt.fwo", std::process::id()));
    let o = fwc(&["build", f.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("1 removed as dead"),
        "{}",
        text(&o.stderr)
    );
    // a profile that makes 443 the hottest rule moves it first (disjoint from the others)
    let prof = tmp(
        "counts.json",
        &format!(
            "{{\"rules\": [{{\"location\": \"{}:4\", \"packets\": 500}}]}}",
            f.display()
        ),
    );
    let o = fwc(&[
        "build",
        "--emit",
        "ir",
        "--profile",
        prof.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ir = text(&o.stdout);
    let first = ir
        .lines()
        .find(|l| l.trim_start().starts_with('r'))
        .unwrap();
    assert!(first.contains("th dport 443"), "{ir}");
    assert!(text(&o.stderr).contains("by the profile"));
    let o = fwc(&["build", "--emit", "ir", "--no-opt", f.to_str().unwrap()]);
    assert_eq!(text(&o.stdout).matches("accept;").count(), 3);
    let bad = tmp("bad-profile.json", "{\"rules\": 7}");
    let o = fwc(&[
        "build",
        "--profile",
        bad.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not a counters profile"));
    let o = fwc(&["build", "--emit", "clif", "examples/language.fw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let clif = text(&o.stdout);
    // the parser and each path's entry take the context, the packet and its length; a
    // chain, the context
    assert!(
        clif.contains("; parse\nfunction u0:0(i64, i64, i32) -> i32")
            && clif.contains("; entry of the forward path\nfunction u0:2(i64, i64, i32) -> i32")
            && clif.contains("function u0:4(i64) -> i32"),
        "{clif}"
    );
    assert!(clif.contains("uload8"), "the parser reads bytes");
}

#[test]
fn run_replays_a_capture_through_conntrack_and_nat() {
    use fwc_runtime::pcap;
    use fwc_runtime::wire::{ipv4, tcp};
    use std::net::Ipv4Addr;
    let rules = tmp(
        "gw.fw",
        "interface eth0 address 203.0.113.2;
table nat { chain postrouting { oif eth0 ip saddr 10.0.0.0/24 masquerade; } }
table filter { chain forward policy drop {
    ct state established,related accept;
    ip saddr 10.0.0.0/24 accept;
} }
",
    );
    let pkt = |src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8| {
        let r = tcp::Repr {
            src_port: sp,
            dst_port: dp,
            seq: 1,
            ack: 0,
            flags,
            window: 1000,
            payload_len: 0,
        };
        ipv4::Repr::packet(src, dst, ipv4::PROTO_TCP, 20, |b, s, d| r.emit(b, s, d)).unwrap()
    };
    let (pc, site, wan) = (
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(198, 51, 100, 9),
        Ipv4Addr::new(203, 0, 113, 2),
    );
    let input = std::env::temp_dir().join(format!("fwc-cli-{}-in.pcap", std::process::id()));
    let output = std::env::temp_dir().join(format!("fwc-cli-{}-out.pcap", std::process::id()));
    let mut w =
        pcap::Writer::new(std::fs::File::create(&input).unwrap(), pcap::LINKTYPE_RAW).unwrap();
    w.write(1_000_000_000, &pkt(pc, 40000, site, 443, tcp::flags::SYN))
        .unwrap();
    w.write(
        1_010_000_000,
        &pkt(Ipv4Addr::new(192, 0, 2, 9), 1, pc, 22, tcp::flags::SYN),
    )
    .unwrap();
    w.finish().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            rules.to_str().unwrap(),
            "--pcap",
            input.to_str().unwrap(),
            "--out",
            output.to_str().unwrap(),
            "--local",
            "203.0.113.2",
            "--oif",
            "eth0",
            "--conntrack",
        ];
        args.extend_from_slice(extra);
        fwc(&args)
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("2 frames: 1 accepted, 1 dropped"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stdout).contains("SYN_SENT src=10.0.0.2 dst=198.51.100.9 sport=40000 dport=443 [UNREPLIED] src=198.51.100.9 dst=203.0.113.2"), "{}", text(&o.stdout));
    // the entry's timer: the third field of its `conntrack -L` line (seconds left)
    let timer = |stdout: &str| -> u64 {
        let l = stdout.lines().find(|l| l.contains("SYN_SENT")).unwrap();
        l.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert!(
        (119..=120).contains(&timer(&text(&o.stdout))),
        "Linux's default, 120 s"
    );
    // conntrack's settings by their sysctl names
    let run = |sysctl: &str| run(&["--sysctl", sysctl]);
    let o = run("net.netfilter.nf_conntrack_tcp_timeout_syn_sent=30");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!((29..=30).contains(&timer(&text(&o.stdout))));
    let o = run("nf_conntrack_tcp_timeout_synsent=30");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("unknown conntrack setting `nf_conntrack_tcp_timeout_synsent`"),
        "{}",
        text(&o.stderr)
    );
    let o = run("nf_conntrack_tcp_loose=2");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is 0 or 1"), "{}", text(&o.stderr));
    let recs: Vec<pcap::Record> = pcap::Reader::new(std::fs::File::open(&output).unwrap())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(recs.len(), 1);
    let ip = ipv4::Packet::new_checked(&recs[0].data[..]).unwrap();
    assert_eq!((ip.src(), ip.dst(), ip.ttl()), (wan, site, 63));
    assert!(ip.verify_checksum());
    assert_eq!(recs[0].ts_ns, 1_000_000_000);
    // a file that is not a capture is a usage error
    let o = fwc(&[
        "run",
        rules.to_str().unwrap(),
        "--pcap",
        rules.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not a pcap file"));
}

/// The SARIF validator: Microsoft's SARIF Multitool (its `validate` checks the log against
/// the SARIF 2.1.0 schema and the specification's rules). `FWC_SARIF_MULTITOOL` names the
/// binary (`.ci/run` installs it); otherwise it is installed from the npm registry into
/// `target/ci-tools` the first time.
fn sarif_multitool() -> PathBuf {
    if let Some(p) = std::env::var_os("FWC_SARIF_MULTITOOL") {
        return PathBuf::from(p);
    }
    let dir = root().join("target/ci-tools/sarif");
    let bin = dir.join("node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool");
    if !bin.exists() {
        let st = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@microsoft/sarif-multitool-linux@5.7.0")
            .status()
            .expect("npm runs (the SARIF validator comes from the npm registry)");
        assert!(st.success(), "installing the SARIF Multitool failed");
    }
    // its postinstall script (`chmod u+x`) may not have run
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(&bin)
        .expect("the SARIF Multitool")
        .permissions();
    if perm.mode() & 0o100 == 0 {
        perm.set_mode(perm.mode() | 0o755);
        std::fs::set_permissions(&bin, perm).unwrap();
    }
    bin
}

#[test]
fn sarif_output_validates_and_carries_every_diagnostic() {
    let f = tmp(
        "sarif.fw",
        "define unused = 1;
table filter {
    chain input policy drop {
        ip saddr 203.0.113.0/24 drop;
        tcp dport 22 accept;
        tcp dport 22 accept;
    }
}
",
    );
    let o = fwc(&["check", "--format", "sarif", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    let run = &log["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "FW0101"
        && r["shortDescription"]["text"] == "shadowed rule"
        && r["defaultConfiguration"]["level"] == "warning"));
    let results = run["results"].as_array().unwrap();
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"FW0105") && ids.contains(&"FW0101") && ids.contains(&"FW0103"),
        "{ids:?}"
    );
    let shadowed = results.iter().find(|r| r["ruleId"] == "FW0101").unwrap();
    let region = &shadowed["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        (region["startLine"].as_u64(), region["startColumn"].as_u64()),
        (Some(6), Some(9))
    );
    assert_eq!(
        shadowed["relatedLocations"][0]["physicalLocation"]["region"]["startLine"],
        5
    );
    let idx = shadowed["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[idx]["id"], "FW0101");
    // an error, denied lints, and the validator's verdict on both logs
    let bad = tmp(
        "sarif-bad.fw",
        "table filter { chain input { tcp dport $nope accept; } }\n",
    );
    let ob = fwc(&["check", "--format", "sarif", bad.to_str().unwrap()]);
    assert_eq!(ob.status.code(), Some(1));
    for (name, out) in [("warnings", &o.stdout), ("errors", &ob.stdout)] {
        let path = std::env::temp_dir().join(format!("fwc-{}-{name}.sarif", std::process::id()));
        std::fs::write(&path, out).unwrap();
        let report = path.with_extension("validation.sarif");
        let _ = std::fs::remove_file(&report);
        let v = Command::new(sarif_multitool())
            .arg("validate")
            .arg(&path)
            .arg("-o")
            .arg(&report)
            .output()
            .expect("the SARIF Multitool runs");
        let findings: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).expect("a validation report")).unwrap();
        let errors: Vec<_> = findings["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["level"].as_str().unwrap_or("warning") == "error")
            .collect();
        assert!(
            errors.is_empty(),
            "{name}: {errors:#?}\n{}",
            text(&v.stdout)
        );
    }
}

#[test]
fn junit_report_is_xml_with_a_case_per_line() {
    let f = tmp(
        "junit.fw",
        "table filter { chain input policy drop { tcp dport 22 accept; } }
test \"ssh <& friends>\" {
    input tcp 198.51.100.1:4000 -> 192.0.2.1:22 => accept;
    input tcp 198.51.100.1:4000 -> 192.0.2.1:23 => accept;
}
assert \"no telnet\" {
    never input accept tcp dport 23;
    always input drop udp;
}
",
    );
    let o = fwc(&["test", "--format", "junit", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let xml = text(&o.stdout);
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fwc test\" tests=\"4\" failures=\"1\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(
        xml.contains("classname=\"test.ssh &lt;&amp; friends&gt;\""),
        "{xml}"
    );
    assert!(xml.contains("classname=\"assert.no telnet\""), "{xml}");
    assert!(
        xml.contains("message=\"expected accept, got drop\""),
        "{xml}"
    );
    // well-formed, as a CI server's parser reads it
    let py = Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; print(len(E.fromstring(sys.stdin.read()).findall('.//testcase')))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(xml.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 runs");
    assert!(py.status.success(), "{}", text(&py.stderr));
    assert_eq!(text(&py.stdout).trim(), "4");
    // other commands refuse the format
    let o = fwc(&["check", "--format", "junit", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn diff_reports_changed_regions_and_exits_1() {
    let old = tmp(
        "d_old.fw",
        "table filter { chain input policy drop { tcp dport 80 accept; } }\n",
    );
    let new = tmp(
        "d_new.fw",
        "table filter { chain input policy drop { tcp dport { 80, 443 } accept; } }\n",
    );
    let (o, n) = (old.to_str().unwrap(), new.to_str().unwrap());
    let r = fwc(&["diff", o, n]);
    let out = text(&r.stdout);
    assert_eq!(r.status.code(), Some(1), "{out}");
    assert!(out.starts_with("input tcp tcp dport 443"), "{out}");
    assert!(out.contains(": drop -> accept as "), "{out}");
    assert!(
        out.contains("    e.g. input tcp 192.0.2.1:40000 -> 198.51.100.1:443"),
        "{out}"
    );
    assert!(out.ends_with("1 change\n"), "{out}");
    let r = fwc(&["diff", o, o]);
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(text(&r.stdout), "no packet changes fate or rewrite\n");
    let r = fwc(&["diff", "--format", "json", o, n]);
    let line: serde_json::Value =
        serde_json::from_str(text(&r.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["path"], "input");
    assert_eq!(
        (line["old"]["fate"].as_str(), line["new"]["fate"].as_str()),
        (Some("drop"), Some("accept"))
    );
    // a program with errors cannot be compared
    let bad = tmp(
        "d_bad.fw",
        "table filter { chain input { tcp dport $x accept; } }\n",
    );
    assert_eq!(
        fwc(&["diff", o, bad.to_str().unwrap()]).status.code(),
        Some(2)
    );
}

#[test]
fn fmt_rewrites_in_place_and_check_reports() {
    let messy = "table filter{chain input policy drop{tcp dport {22,80}   accept;# web\n}}\n";
    let f = tmp("messy.fw", messy);
    let p = f.to_str().unwrap();
    let o = fwc(&["fmt", "--check", p]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), format!("would reformat {p}\n"));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        messy,
        "--check writes nothing"
    );
    assert_eq!(fwc(&["fmt", p]).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "table filter {\n    chain input policy drop {\n        tcp dport { 22, 80 } accept;  # web\n    }\n}\n"
    );
    assert_eq!(fwc(&["fmt", "--check", p]).status.code(), Some(0));
    // a file that does not parse: its syntax errors, and it stays as it was
    let broken = tmp(
        "broken.fw",
        "table filter { chain input { tcp dport 22 accept }\n",
    );
    let o = fwc(&["fmt", broken.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("FW0"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not formatted"));
    assert_eq!(
        std::fs::read_to_string(&broken).unwrap(),
        "table filter { chain input { tcp dport 22 accept }\n"
    );
}

#[test]
fn export_writes_kernel_scripts_and_refuses_what_it_cannot_say() {
    let o = fwc(&["export", "examples/home-router.fw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ipt = text(&o.stdout);
    // built-in chains with their policies, subchains as user chains, a set multiplied out
    assert!(
        ipt.contains("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]"),
        "{ipt}"
    );
    assert!(ipt.contains(":drop-bogons - [0:0]"), "{ipt}");
    assert!(
        ipt.contains("-A drop-bogons -i eth0 -s 10.0.0.0/8 -j DROP"),
        "{ipt}"
    );
    assert!(
        ipt.contains(
            "-A PREROUTING -i eth0 -d 203.0.113.2/32 -p tcp -m tcp --dport 8080 \
             -j DNAT --to-destination 10.0.0.10:80"
        ),
        "{ipt}"
    );
    assert_eq!(ipt.matches("COMMIT").count(), 2, "{ipt}");
    let o = fwc(&["export", "--target", "nft", "examples/home-router.fw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let nft = text(&o.stdout);
    assert!(nft.contains("table ip fwc_filter {"), "{nft}");
    assert!(
        nft.contains("type filter hook input priority 0; policy drop;"),
        "{nft}"
    );
    assert!(nft.contains("jump drop-bogons"), "{nft}");
    // an interface name the kernel cannot hold: a clear error naming the rule, exit 1
    let f = tmp(
        "longname.fw",
        "table filter {\n    chain input {\n        iif averyveryverylongname accept;\n    }\n}\n",
    );
    let o = fwc(&["export", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("longname.fw:3"), "{e}");
    assert!(e.contains("longer than the kernel's 15 characters"), "{e}");
    assert!(o.stdout.is_empty());
}
