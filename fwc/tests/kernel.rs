//! fwc's semantics against the kernel's, packet by packet (needs root; CI runs as root).
//!
//! Random programs (filter, nat, raw and mangle tables, subchains with arguments, sets,
//! ranges, ports, ct states, marks, verdict maps) are exported with `fwc export --target
//! iptables` and loaded with `iptables-restore` into a firewall namespace:
//!
//!   peer ns (192.0.2.2) -- veth pi/fi -- firewall ns -- veth fo/so -- sink ns
//!
//! Crafted packets (valid checksums, a fresh flow each) are sent from the peer through the
//! kernel's path: to one of the firewall's addresses (prerouting, input) or to
//! 198.51.100.0/24, routed out of `fo` to a neighbour that never answers (prerouting,
//! forward, postrouting). After each packet the test reads the kernel's per-rule and policy
//! counters (`iptables-save -c`) and whether the packet was delivered (`/proc/net/snmp`
//! InDelivers for input, `fo`'s transmit count for forward), and compares them with the
//! reference interpreter: the same rules matched, the same policies applied, the same fate.
//!
//! The firewall's own answers (TCP resets, ICMP errors) are dropped at raw OUTPUT, added by
//! the test after the program; programs never use the output hook.
//!
//! `FWC_KERNEL_SETS` sets the number of programs (default 50, 200 packets each).
//! A custom harness: without root it prints why it skips and counts nothing as passed.

#[path = "support/root_harness.rs"]
mod harness;

use fwc_compiler::export::Target;
use fwc_compiler::gen::Rng;
use fwc_compiler::interp::{self, Fate, Packet, PathKind};
use fwc_compiler::ir::{ct, Hook, Program, RuleId, Table};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------
// programs

use fwc_compiler::gen::random::kernel_program as program;

// ------------------------------------------------------------------------------------------
// packets

const LOCAL: [u32; 2] = [0xc000_0201, 0xcb00_7101]; // 192.0.2.1, 203.0.113.1

fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The packet with every checksum right, and an ICMP id (unused by rules) to keep flows apart.
fn bytes(p: &Packet, icmp_id: u16) -> Vec<u8> {
    let mut b = p.to_raw();
    b[4..6].copy_from_slice(&icmp_id.to_be_bytes()); // IP id
    let c = csum(&b[..20], 0);
    b[10..12].copy_from_slice(&c.to_be_bytes());
    let l4len = b.len() - 20;
    let pseudo = |b: &[u8]| -> u32 {
        let mut s = 0u32;
        for i in (12..20).step_by(2) {
            s += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        }
        s + u32::from(b[9]) + l4len as u32
    };
    match p.proto {
        6 => {
            b[34..36].copy_from_slice(&0xffffu16.to_be_bytes()); // window
            let c = csum(&b[20..], pseudo(&b));
            b[36..38].copy_from_slice(&c.to_be_bytes());
        }
        17 => {
            let c = csum(&b[20..], pseudo(&b));
            b[26..28].copy_from_slice(&c.to_be_bytes());
        }
        1 => {
            b[24..26].copy_from_slice(&icmp_id.to_be_bytes());
            let c = csum(&b[20..], 0);
            b[22..24].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    b
}

/// The ct state the kernel gives a flow's first packet (Linux's TCP table from NONE with
/// loose pickup, ICMP's `valid_new`, UDP and other protocols always new).
fn kernel_ct(p: &Packet) -> u8 {
    match p.proto {
        6 => {
            let f = p.tcp_flags & !0x08; // PSH does not count
            if f == 0x02 || f == 0x10 {
                ct::NEW
            } else {
                ct::INVALID
            }
        }
        1 if [8u8, 13, 15, 17].contains(&p.icmp_type) => ct::NEW,
        1 => ct::INVALID,
        _ => ct::NEW,
    }
}

fn packet(r: &mut Rng) -> Packet {
    let saddrs = [
        0xc000_0202u32,
        0xc000_0207,
        0xc000_0232,
        0xcb00_7109,
        0xc633_644d,
    ];
    let daddrs = [LOCAL[0], LOCAL[1], 0xc633_6402, 0xc633_6409, 0xc633_64c8];
    let ports = [22u16, 53, 80, 85, 443, 1500, 1999, 8080];
    Packet {
        proto: *r.pick(&[6u8, 6, 17, 17, 1, 50]),
        saddr: *r.pick(&saddrs),
        daddr: *r.pick(&daddrs),
        sport: if r.chance(50) {
            *r.pick(&ports)
        } else {
            1024 + r.index(60000) as u16
        },
        dport: *r.pick(&ports),
        icmp_type: *r.pick(&[8u8, 8, 0, 3, 11, 13]),
        icmp_code: 0,
        tcp_flags: *r.pick(&[0x02u8, 0x02, 0x10, 0x18, 0x12, 0x04, 0x11, 0x03]),
        ttl: 64,
        iif: Some("fi".into()),
        ..Packet::default()
    }
}

// ------------------------------------------------------------------------------------------
// namespaces

fn ok(ns: Option<&str>, args: &[&str]) -> Result<(), String> {
    let o = harness::sh(ns, args);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{ns:?} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// The three namespaces of one program (made afresh for each: no conntrack or hashlimit
/// state carries over).
struct Net {
    p: String,
    f: String,
    s: String,
}

impl Net {
    fn new(k: usize) -> Result<Net, String> {
        let id = std::process::id();
        let n = Net {
            p: format!("fwk-p-{id}-{k}"),
            f: format!("fwk-f-{id}-{k}"),
            s: format!("fwk-s-{id}-{k}"),
        };
        for x in [&n.p, &n.f, &n.s] {
            ok(None, &["ip", "netns", "add", x])?;
        }
        let (p, f, s) = (n.p.as_str(), n.f.as_str(), n.s.as_str());
        for x in [p, f, s] {
            ok(
                Some(x),
                &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            )?;
            ok(
                Some(x),
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            )?;
        }
        ok(
            Some(f),
            &[
                "ip", "link", "add", "fi", "type", "veth", "peer", "name", "pi", "netns", p,
            ],
        )?;
        ok(
            Some(f),
            &[
                "ip", "link", "add", "fo", "type", "veth", "peer", "name", "so", "netns", s,
            ],
        )?;
        for (ns, ifc, addr) in [
            (p, "pi", "192.0.2.2/24"),
            (f, "fi", "192.0.2.1/24"),
            (f, "fo", "203.0.113.1/24"),
        ] {
            ok(Some(ns), &["ip", "addr", "add", addr, "dev", ifc])?;
        }
        for (ns, ifc) in [(p, "pi"), (f, "fi"), (f, "fo"), (s, "so"), (f, "lo")] {
            ok(Some(ns), &["ip", "link", "set", ifc, "up"])?;
        }
        ok(Some(f), &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for i in ["all", "default", "fi", "fo"] {
            ok(
                Some(f),
                &["sysctl", "-qw", &format!("net.ipv4.conf.{i}.rp_filter=0")],
            )?;
        }
        // forwarded packets go to a neighbour whose address nobody has: the sink's veth
        // sees frames for another host and drops them before IP, so nothing comes back
        ok(
            Some(f),
            &[
                "ip",
                "neigh",
                "add",
                "203.0.113.2",
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "fo",
                "nud",
                "permanent",
            ],
        )?;
        ok(
            Some(f),
            &[
                "ip",
                "route",
                "add",
                "198.51.100.0/24",
                "via",
                "203.0.113.2",
                "dev",
                "fo",
            ],
        )?;
        Ok(n)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for x in [&self.p, &self.f, &self.s] {
            let _ = harness::sh(None, &["ip", "netns", "del", x]);
        }
    }
}

/// Sends frames from the peer's veth: one hex line in, `ok` out once sent.
const SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("pi", 0))
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    print("ok", flush=True)
"#;

struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Sender {
    fn new(ns: &str) -> Result<Sender, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", SENDER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Sender {
            child,
            stdin,
            stdout,
        })
    }
    fn send(&mut self, frame: &[u8]) -> Result<(), String> {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(self.stdin, "{hex}").map_err(|e| e.to_string())?;
        let mut l = String::new();
        self.stdout.read_line(&mut l).map_err(|e| e.to_string())?;
        if l.trim() == "ok" {
            Ok(())
        } else {
            Err(format!("sender: {l:?}"))
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mac(ns: &str, ifc: &str) -> Result<[u8; 6], String> {
    let o = harness::sh(Some(ns), &["cat", &format!("/sys/class/net/{ifc}/address")]);
    let s = String::from_utf8_lossy(&o.stdout);
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect();
    v.try_into().map_err(|_| format!("no MAC for {ifc}: {s:?}"))
}

// ------------------------------------------------------------------------------------------
// the kernel's counters

/// Packet counts: per (table, chain) the policy's and each rule's; plus delivery counters.
#[derive(Debug, Clone, PartialEq, Default)]
struct Counts {
    policies: HashMap<(String, String), u64>,
    rules: HashMap<(String, String), Vec<u64>>,
    delivered: u64,
    sent_out: u64,
    /// packets that reached the firewall (a counter before every table): so that a packet
    /// no rule counts, under nft (which keeps no policy counters), still shows it arrived
    arrived: u64,
}

fn counts(ns: &str, target: Target) -> Result<Counts, String> {
    let rules = match target {
        Target::Iptables => "iptables-save -c",
        Target::Nft => "echo '#nft' && nft list ruleset",
    };
    let o = harness::sh(
        Some(ns),
        &[
            "sh",
            "-c",
            &format!(
                "{rules} && echo '#snmp' && cat /proc/net/snmp && echo '#tx' && \
                 cat /sys/class/net/fo/statistics/tx_packets && echo '#witness' && \
                 nft list table ip witness"
            ),
        ],
    );
    if !o.status.success() {
        return Err(format!("counters: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut c = Counts::default();
    let mut table = String::new();
    let mut part = "save";
    let mut snmp_head: Vec<String> = Vec::new();
    let num = |s: &str| -> u64 {
        s.trim_matches(|c| c == '[' || c == ']')
            .split(':')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    let mut chain = String::new();
    for l in text.lines() {
        match l {
            "#nft" => {
                part = "nft";
                continue;
            }
            "#snmp" => {
                part = "snmp";
                continue;
            }
            "#tx" => {
                part = "tx";
                continue;
            }
            "#witness" => {
                part = "witness";
                continue;
            }
            _ => {}
        }
        match part {
            "save" => {
                if let Some(t) = l.strip_prefix('*') {
                    table = t.to_string();
                } else if let Some(rest) = l.strip_prefix(':') {
                    let w: Vec<&str> = rest.split_whitespace().collect();
                    if w.len() >= 3 && w[1] != "-" {
                        c.policies
                            .insert((table.clone(), w[0].to_string()), num(w[2]));
                    }
                } else if l.starts_with('[') {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    if w.len() >= 3 && w[1] == "-A" {
                        c.rules
                            .entry((table.clone(), w[2].to_string()))
                            .or_default()
                            .push(num(w[0]));
                    }
                }
            }
            // nft: the rules of fwc's tables with their counters, in order (no policy
            // counters: nft has none)
            "nft" => {
                let l = l.trim();
                if let Some(t) = l.strip_prefix("table ip ") {
                    table = t
                        .trim_end_matches(" {")
                        .strip_prefix("fwc_")
                        .unwrap_or("")
                        .to_string();
                } else if let Some(c) = l.strip_prefix("chain ") {
                    chain = c.trim_end_matches(" {").trim_matches('"').to_string();
                } else if let Some(i) = l.find("counter packets ") {
                    if !table.is_empty() {
                        let n = l[i + "counter packets ".len()..]
                            .split_whitespace()
                            .next()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(0);
                        c.rules
                            .entry((table.clone(), chain.clone()))
                            .or_default()
                            .push(n);
                    }
                }
            }
            "snmp" if l.starts_with("Ip:") => {
                let w: Vec<String> = l.split_whitespace().map(String::from).collect();
                if snmp_head.is_empty() {
                    snmp_head = w;
                } else {
                    for (k, v) in snmp_head.iter().zip(&w) {
                        if k == "InDelivers" || k == "InUnknownProtos" {
                            c.delivered += v.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
            "tx" => c.sent_out = l.trim().parse().unwrap_or(0),
            "witness" => {
                if let Some(i) = l.find("counter packets ") {
                    c.arrived = l[i + "counter packets ".len()..]
                        .split_whitespace()
                        .next()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Ok(c)
}

/// What one packet did in the kernel: the IR rules whose kernel rules counted it, the base
/// chains whose policy applied, and whether it got through.
#[derive(Debug)]
struct Seen {
    rules: BTreeSet<u32>,
    policies: BTreeSet<String>,
    through: bool,
    /// the kernel rules that counted the packet (chain:position), for the report
    lines: Vec<String>,
}

impl PartialEq for Seen {
    fn eq(&self, o: &Seen) -> bool {
        self.rules == o.rules && self.policies == o.policies && self.through == o.through
    }
}

fn seen_kernel(
    before: &Counts,
    after: &Counts,
    map: &HashMap<(String, String), Vec<Option<RuleId>>>,
    bases: &BTreeSet<(String, String)>,
    path: PathKind,
) -> Seen {
    let mut rules = BTreeSet::new();
    let mut lines = Vec::new();
    for (k, v) in &after.rules {
        let old = before.rules.get(k);
        for (i, n) in v.iter().enumerate() {
            let was = old.and_then(|o| o.get(i)).copied().unwrap_or(0);
            if *n > was {
                lines.push(format!("{}/{}:{}", k.0, k.1, i + 1));
            }
        }
        let Some(ids) = map.get(k) else { continue };
        for (i, n) in v.iter().enumerate() {
            let was = old.and_then(|o| o.get(i)).copied().unwrap_or(0);
            if *n > was {
                if let Some(Some(id)) = ids.get(i) {
                    rules.insert(id.0);
                }
            }
        }
    }
    let mut policies = BTreeSet::new();
    for (k, n) in &after.policies {
        if bases.contains(k) && *n > before.policies.get(k).copied().unwrap_or(0) {
            policies.insert(format!("{}/{}", k.0, k.1));
        }
    }
    let through = match path {
        PathKind::Input => after.delivered > before.delivered,
        _ => after.sent_out > before.sent_out,
    };
    lines.sort();
    Seen {
        rules,
        policies,
        through,
        lines,
    }
}

fn seen_interp(p: &Program, o: &interp::Outcome) -> Seen {
    let mut rules = BTreeSet::new();
    let mut policies = BTreeSet::new();
    for s in &o.trace {
        match s.rule {
            Some(r) => {
                rules.insert(r.0);
            }
            None => {
                policies.insert(format!(
                    "{}/{}",
                    s.table.name(),
                    fwc_compiler::export::builtin_chain(s.hook)
                ));
            }
        }
    }
    let _ = p;
    Seen {
        rules,
        policies,
        through: o.fate == Fate::Accept,
        lines: Vec::new(),
    }
}

// ------------------------------------------------------------------------------------------
// the run

fn compile(src: &str) -> Option<Program> {
    let c = fwc_compiler::compile_source("kernel.fw", src, &fwc_compiler::loader::DiskFiles);
    if c.has_errors() {
        return None;
    }
    c.checked.map(|k| k.program)
}

struct Tally {
    sets: usize,
    packets: usize,
    /// packets through, packets that met at least one rule, forwarded packets
    through: usize,
    ruled: usize,
    forwarded: usize,
    mismatches: Vec<String>,
}

fn one_program(
    k: usize,
    seed: u64,
    packets: usize,
    t: &mut Tally,
    target: Target,
) -> Result<(), String> {
    let mut r = Rng::new(seed);
    let (src, program) = loop {
        let s = program(&mut r);
        if let Some(p) = compile(&s) {
            break (s, p);
        }
    };
    let x = fwc_compiler::export::export_with(&program, target, true)
        .map_err(|e| format!("program {k} (seed {seed}) did not export: {e:?}\n{src}"))?;
    let net = Net::new(k)?;
    let f = net.f.as_str();
    let path = std::env::temp_dir().join(format!("fwc-kernel-{}-{k}.rules", std::process::id()));
    std::fs::write(&path, &x.text).map_err(|e| e.to_string())?;
    let file = path.to_string_lossy().to_string();
    let load: Vec<&str> = match target {
        Target::Iptables => vec!["iptables-restore", &file],
        Target::Nft => vec!["nft", "-f", &file],
    };
    let o = harness::sh(Some(f), &load);
    let _ = std::fs::remove_file(&path);
    if !o.status.success() {
        return Err(format!(
            "program {k} (seed {seed}): {} refused the export: {}\n{}\nfrom:\n{src}",
            load[0],
            String::from_utf8_lossy(&o.stderr),
            x.text
        ));
    }
    // the firewall's own answers (resets, ICMP errors) must not touch the counters
    ok(
        Some(f),
        &["iptables", "-t", "raw", "-A", "OUTPUT", "-j", "DROP"],
    )?;
    // a counter before every table, so that each packet's arrival shows
    for cmd in [
        "add table ip witness",
        "add chain ip witness pre { type filter hook prerouting priority -400; }",
        "add rule ip witness pre counter",
    ] {
        ok(Some(f), &["nft", cmd])?;
    }
    // each kernel rule by position in its chain, and the IR rule whose matches it counts
    // (`None` for those that count packets the rule may not match: jumps into helpers)
    let mut map: HashMap<(String, String), Vec<Option<RuleId>>> = HashMap::new();
    for kr in &x.rules {
        map.entry((kr.table.name().to_string(), kr.chain.clone()))
            .or_default()
            .push(kr.exact.then_some(kr.rule));
    }
    let mut bases = BTreeSet::new();
    for h in Hook::ALL {
        for e in &program.hooks[h.index()] {
            bases.insert((
                e.table.name().to_string(),
                fwc_compiler::export::builtin_chain(h).to_string(),
            ));
        }
    }
    let _ = Table::ALL;
    let dst_mac = mac(f, "fi")?;
    let src_mac = mac(&net.p, "pi")?;
    let mut sender = Sender::new(&net.p)?;
    let mut flows = BTreeSet::new();
    let mut generic = BTreeSet::new();
    let mut before = counts(f, target)?;
    let mut sent = 0;
    for i in 0..packets * 20 {
        if sent == packets {
            break;
        }
        let mut p = packet(&mut r);
        let icmp_id = (k * packets * 20 + i) as u16;
        // a flow's later packets skip the nat table: keep flows apart (conntrack's generic
        // tracker knows no ports, ICMP flows differ by id)
        let key = match p.proto {
            6 | 17 => (p.proto, p.saddr, p.daddr, p.sport, p.dport),
            _ => (p.proto, p.saddr, p.daddr, 0, 0),
        };
        if p.proto != 1 && flows.contains(&key) {
            continue;
        }
        flows.insert(key);
        p.ct = kernel_ct(&p);
        let path = if LOCAL.contains(&p.daddr) {
            PathKind::Input
        } else {
            p.oif = Some("fo".into());
            PathKind::Forward
        };
        let o = interp::run(&program, path, &p, &mut interp::FreshOracle)
            .map_err(|e| format!("interpreter: {e}"))?;
        // conntrack's generic tracker cannot move a clashing NAT tuple (no ports): the
        // kernel drops such a packet at confirmation; the interpreter, which sees one
        // packet, does not know the earlier flows. Keep flows apart after NAT too.
        if !matches!(p.proto, 1 | 6 | 17) {
            let after = (o.packet.saddr, o.packet.daddr);
            let before = (p.saddr, p.daddr);
            if generic.contains(&after) || generic.contains(&before) {
                continue;
            }
            generic.insert(after);
            generic.insert(before);
        }
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&dst_mac);
        frame.extend_from_slice(&src_mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&bytes(&p, icmp_id));
        sender.send(&frame)?;
        sent += 1;
        // wait for the counters to move, then to settle
        let start = Instant::now();
        let mut after = counts(f, target)?;
        while after == before && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
            after = counts(f, target)?;
        }
        loop {
            std::thread::sleep(Duration::from_millis(3));
            let again = counts(f, target)?;
            if again == after {
                break;
            }
            after = again;
        }
        let kernel = seen_kernel(&before, &after, &map, &bases, path);
        let mut ours = seen_interp(&program, &o);
        if target == Target::Nft {
            ours.policies.clear(); // nft does not count policies
        }
        t.packets += 1;
        t.through += usize::from(kernel.through);
        t.ruled += usize::from(!kernel.rules.is_empty());
        t.forwarded += usize::from(path == PathKind::Forward);
        if kernel != ours {
            t.mismatches.push(format!(
                "program {k} (seed {seed}), {} packet {p} (ct {:?}):\n  kernel      {kernel:?}\n  interpreter {ours:?}\n  kernel rules that counted it: {}\n  trace {:?}\n--- program\n{src}--- export\n{}",
                path.name(),
                ct::names(p.ct),
                kernel.lines.join(" "),
                o.trace.iter().map(|s| s.action.clone()).collect::<Vec<_>>(),
                x.text
            ));
        }
        before = after;
    }
    t.sets += 1;
    drop(sender);
    drop(net);
    Ok(())
}

fn kernel_vs_interpreter() -> Result<(), String> {
    let sets: usize = std::env::var("FWC_KERNEL_SETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    differential(Target::Iptables, sets)
}

/// The same through `nft -f` (every rule with a counter; nft counts no policies), on fewer
/// programs: `FWC_KERNEL_NFT_SETS` (default 15).
fn kernel_vs_interpreter_nft() -> Result<(), String> {
    let sets: usize = std::env::var("FWC_KERNEL_NFT_SETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    differential(Target::Nft, sets)
}

fn differential(target: Target, sets: usize) -> Result<(), String> {
    let packets = 200;
    let mut t = Tally {
        sets: 0,
        packets: 0,
        through: 0,
        ruled: 0,
        forwarded: 0,
        mismatches: Vec::new(),
    };
    let start = Instant::now();
    // FWC_KERNEL_FROM: start at this program (to replay one reported by its number)
    let from: usize = std::env::var("FWC_KERNEL_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for k in from..from + sets {
        let seed = 0x9e37_79b9_7f4a_7c15u64 ^ (k as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        one_program(k, seed, packets, &mut t, target)?;
        if t.mismatches.len() >= 3 {
            break;
        }
    }
    println!(
        "kernel ({}) vs interpreter: {} programs, {} packets ({} forwarded, {} through, {} met a rule), {} mismatches, {:.0} s",
        match target {
            Target::Iptables => "iptables",
            Target::Nft => "nft",
        },
        t.sets,
        t.packets,
        t.forwarded,
        t.through,
        t.ruled,
        t.mismatches.len(),
        start.elapsed().as_secs_f64()
    );
    if t.packets == 0 {
        return Err("no packet was compared (a count of 0 programs?)".into());
    }
    if t.mismatches.is_empty() {
        Ok(())
    } else {
        Err(t.mismatches.join("\n\n"))
    }
}

/// A real-world style `iptables-save` (examples/iptables/gateway.rules, 319 rules: ufw,
/// docker and fail2ban chains, a block list, port forwards) imports, checks, and exports
/// back to rule sets that `iptables-restore` and `nft -f` load.
fn saved_gateway_round_trips_into_the_kernel() -> Result<(), String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/iptables/gateway.rules"
    );
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let fw = fwc_compiler::import::import(&text, "gateway.rules")
        .map_err(|e| format!("import: {e:?}"))?;
    let program = compile(&fw).ok_or("the import does not check")?;
    let id = std::process::id();
    let ns = format!("fwk-g-{id}");
    ok(None, &["ip", "netns", "add", &ns])?;
    let result = (|| -> Result<(), String> {
        for (target, cmd) in [(Target::Iptables, "iptables-restore"), (Target::Nft, "nft")] {
            let x = fwc_compiler::export::export(&program, target)
                .map_err(|e| format!("export: {e:?}"))?;
            let f = std::env::temp_dir().join(format!("fwc-gateway-{id}.{cmd}"));
            std::fs::write(&f, &x.text).map_err(|e| e.to_string())?;
            let f = f.to_string_lossy().to_string();
            let args: Vec<&str> = if cmd == "nft" {
                vec!["nft", "-f", &f]
            } else {
                vec!["iptables-restore", &f]
            };
            let r = ok(Some(&ns), &args);
            let _ = std::fs::remove_file(&f);
            r?;
        }
        // the iptables rule set is there, rule for rule
        let o = harness::sh(Some(&ns), &["iptables-save"]);
        let saved = String::from_utf8_lossy(&o.stdout);
        let n = saved.lines().filter(|l| l.starts_with("-A")).count();
        if n < 250 {
            return Err(format!("only {n} rules loaded:\n{saved}"));
        }
        let o = harness::sh(Some(&ns), &["nft", "list", "table", "ip", "fwc_filter"]);
        let listed = String::from_utf8_lossy(&o.stdout);
        if !listed.contains("chain f2b-sshd") {
            return Err(format!("nft lacks the subchains:\n{listed}"));
        }
        println!("gateway: 319 saved rules -> {n} kernel rules after import and export");
        Ok(())
    })();
    let _ = harness::sh(None, &["ip", "netns", "del", &ns]);
    result
}

fn main() {
    let tests: &[(&str, harness::Test)] = &[
        ("kernel_vs_interpreter", kernel_vs_interpreter),
        ("kernel_vs_interpreter_nft", kernel_vs_interpreter_nft),
        (
            "saved_gateway_round_trips_into_the_kernel",
            saved_gateway_round_trips_into_the_kernel,
        ),
    ];
    harness::run("kernel", "network namespaces, iptables", tests);
}
