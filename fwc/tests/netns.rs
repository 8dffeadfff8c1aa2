//! Live tests in network namespaces (they need root; CI runs as root):
//!
//! client ns (192.0.2.2) -- veth -- firewall ns -- veth -- server ns (198.51.100.2)
//!
//! The firewall namespace forwards in the kernel and queues every packet it receives to
//! `fwc run --nfqueue` from the raw table (untracked by the kernel, so fwc's own conntrack
//! decides). Real TCP connections, UDP and ping cross it; the rules allow and block as
//! written. The namespaces are created and removed by the test, bounded in time.
//!
//! A custom harness: without root it prints why it skips and counts the tests as skipped,
//! never as passed.

#[path = "support/root_harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Net {
    c: String,
    f: String,
    s: String,
}

fn ok(ns: Option<&str>, args: &[&str]) {
    let o = harness::sh(ns, args);
    assert!(
        o.status.success(),
        "{ns:?} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `iptables -t raw ARGS` in `ns`.
fn raw_table(ns: &str, args: &[&str]) {
    let mut a = vec!["iptables", "-t", "raw"];
    a.extend_from_slice(args);
    ok(Some(ns), &a);
}

impl Net {
    fn new() -> Net {
        Net::with(false)
    }

    /// The three namespaces; the firewall queues to fwc (NFQUEUE) or leaves routing to it
    /// (AF_PACKET).
    fn with(afpacket: bool) -> Net {
        let id = std::process::id();
        let n = Net {
            c: format!("fwc-c-{id}"),
            f: format!("fwc-f-{id}"),
            s: format!("fwc-s-{id}"),
        };
        for x in [&n.c, &n.f, &n.s] {
            ok(None, &["ip", "netns", "add", x]);
        }
        let (c, f, s) = (n.c.as_str(), n.f.as_str(), n.s.as_str());
        ok(
            Some(f),
            &[
                "ip", "link", "add", "f0", "type", "veth", "peer", "name", "c0", "netns", c,
            ],
        );
        ok(
            Some(f),
            &[
                "ip", "link", "add", "f1", "type", "veth", "peer", "name", "s0", "netns", s,
            ],
        );
        for (ns, ifc, addr) in [
            (c, "c0", "192.0.2.2/24"),
            (f, "f0", "192.0.2.1/24"),
            (f, "f1", "198.51.100.1/24"),
            (s, "s0", "198.51.100.2/24"),
        ] {
            ok(Some(ns), &["ip", "addr", "add", addr, "dev", ifc]);
            ok(Some(ns), &["ip", "link", "set", ifc, "up"]);
            ok(Some(ns), &["ip", "link", "set", "lo", "up"]);
        }
        ok(
            Some(c),
            &["ip", "route", "add", "default", "via", "192.0.2.1"],
        );
        ok(
            Some(s),
            &["ip", "route", "add", "default", "via", "198.51.100.1"],
        );
        if !afpacket {
            ok(Some(f), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            // fwc translates at the start of prerouting, before the kernel routes: a packet
            // it masqueraded comes back into routing with one of the firewall's own
            // addresses as its source, which the kernel drops as martian unless
            // accept_local is set
            ok(
                Some(f),
                &["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"],
            );
            // every packet the firewall receives goes to fwc, untracked by the kernel
            raw_table(f, &["-A", "PREROUTING", "-j", "CT", "--notrack"]);
            raw_table(
                f,
                &["-A", "PREROUTING", "-j", "NFQUEUE", "--queue-num", "7"],
            );
        } else {
            // fwc routes: the kernel must neither forward nor answer the IP packets it sees
            // copies of (with forwarding off it would send host-unreachable errors, and it
            // would reset connections masqueraded behind its own address); ARP stays its
            ok(Some(f), &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
            for i in ["f0", "f1"] {
                raw_table(f, &["-A", "PREROUTING", "-i", i, "-j", "DROP"]);
            }
        }
        n
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for x in [&self.c, &self.f, &self.s] {
            let _ = harness::sh(None, &["ip", "netns", "del", x]);
        }
    }
}

fn fwc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fwc"))
}

/// A TCP and UDP echo server in the server namespace: tells connections on TCP ports 80
/// and 81 the address they come from and echoes UDP datagrams on port 53; exits after `secs`.
fn server(ns: &str, secs: u32) -> Child {
    let py = format!(
        r#"
import socket, select, time
ss = []
for p in (80, 81):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", p)); s.listen(8); ss.append(s)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53)); ss.append(u)
end = time.time() + {secs}
while time.time() < end:
    r, _, _ = select.select(ss, [], [], 0.2)
    for s in r:
        if s is u:
            d, a = u.recvfrom(100); u.sendto(b"re:" + d, a)
        else:
            c, a = s.accept(); c.sendall(a[0].encode()); c.close()
"#
    );
    spawn_py(ns, &py, Stdio::null())
}

/// From the client namespace: what a TCP connection to `port` reads after sending `send`
/// (the client's address as `server` saw it, the echo from `echo_server`, or the error), bounded by a 3 s timeout.
fn tcp_from_client(ns: &str, dst: &str, port: u16, send: &str) -> String {
    let py = format!(
        r#"
import socket
s = socket.socket(); s.settimeout(3)
try:
    s.connect(("{dst}", {port})); s.sendall(b"{send}"); print(s.recv(20).decode())
except Exception as e:
    print("error:", type(e).__name__)
"#
    );
    let o = harness::sh(Some(ns), &["python3", "-c", &py]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `fwc run RULES --nfqueue 7` (or, when `extra` has `--afpacket`, that source) in `ns`
/// for at most 25 s, with its control socket at `socket`.
fn spawn_fwc(ns: &str, rules: &std::path::Path, socket: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(fwc_bin())
        .arg("run")
        .arg(rules)
        .args(
            if extra.contains(&"--afpacket") || extra.contains(&"--nfqueue") {
                &[][..]
            } else {
                &["--nfqueue", "7"][..]
            },
        )
        .args(["--duration", "25", "--socket"])
        .arg(socket)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// From the client namespace, `n` TCP connections one after the other to `dst`:80, each
/// sending the messages of the Python expression `msgs` (of the connection number `i`) and
/// reading a reply to each; one line per connection, the replies joined by spaces (or the
/// error), each bounded by a 3 s timeout.
fn connections(ns: &str, dst: &str, n: u32, msgs: &str) -> Vec<String> {
    let py = format!(
        r#"
import socket
for i in range({n}):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(("{dst}", 80)); got = []
        for m in {msgs}:
            s.sendall(m); got.append(s.recv(20).decode())
        print(" ".join(got))
    except Exception as e:
        print("error:", type(e).__name__)
    s.close()
"#
    );
    let o = harness::sh(Some(ns), &["python3", "-c", &py]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs a Python script in `ns`, in the background.
fn spawn_py(ns: &str, py: &str, stdout: Stdio) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", py])
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn udp_from_client(ns: &str) -> String {
    let py = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b"q", ("198.51.100.2", 53))
try:
    print(u.recv(100).decode())
except Exception as e:
    print("error:", type(e).__name__)
"#;
    let o = harness::sh(Some(ns), &["python3", "-c", py]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const SERVER: &str = "198.51.100.2";

const RULES: &str = "
table filter {
    chain forward policy drop {
        ct state established,related accept;
        iif f0 oif f1 tcp dport 80 accept;
        iif f0 oif f1 udp dport 53 accept;
        icmp type echo-request accept;
    }
}
";

fn nfqueue_filters_real_traffic() -> Result<(), String> {
    let net = Net::new();
    let rules = std::env::temp_dir().join(format!("fwc-netns-{}.fw", std::process::id()));
    std::fs::write(&rules, RULES).unwrap();
    let socket = std::env::temp_dir().join(format!("fwc-netns-{}.sock", std::process::id()));
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &["--conntrack"]);
    let srv = server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    let allowed = tcp_from_client(&net.c, SERVER, 80, "");
    let blocked = tcp_from_client(&net.c, SERVER, 81, "");
    let dns = udp_from_client(&net.c);
    let ping = harness::sh(
        Some(&net.c),
        &["ping", "-c", "2", "-W", "2", "198.51.100.2"],
    );
    // end fwc early and collect what it saw
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    let log = format!("fwc stdout:\n{}\nfwc stderr:\n{}", out.0, out.1);
    if allowed != "192.0.2.2" {
        return Err(format!(
            "tcp/80 should pass, untranslated, got {allowed:?}\n{log}"
        ));
    }
    if !blocked.starts_with("error:") {
        return Err(format!("tcp/81 should be dropped, got {blocked:?}\n{log}"));
    }
    if dns != "re:q" {
        return Err(format!("udp/53 should pass both ways, got {dns:?}\n{log}"));
    }
    if !ping.status.success() {
        return Err(format!(
            "ping should pass: {}\n{log}",
            String::from_utf8_lossy(&ping.stdout)
        ));
    }
    // one router between them: the reply's TTL is lowered once, by the kernel, not again by
    // fwc (which only gives verdicts)
    let ping_out = String::from_utf8_lossy(&ping.stdout);
    if !ping_out.contains("ttl=63") {
        return Err(format!(
            "the echo reply should arrive with ttl=63: {ping_out}\n{log}"
        ));
    }
    // the flows in the states they ended in: the TCP connection closed by both sides
    // (TIME_WAIT, assured), the UDP exchange answered, the ping's echo; the blocked SYN
    // left no entry
    let flow = |needle: &str| out.0.lines().find(|l| l.contains(needle)).unwrap_or("");
    let tcp80 = flow(" dport=80 ");
    let udp = flow(" dport=53 ");
    let icmp = flow("type=8 code=0");
    if !tcp80.contains(" TIME_WAIT src=192.0.2.2 dst=198.51.100.2 ")
        || !tcp80.contains("[ASSURED]")
        || !udp.starts_with("udp ")
        || udp.contains("[UNREPLIED]")
        || !icmp.starts_with("icmp ")
        || out.0.contains(" dport=81 ")
    {
        return Err(format!(
            "the conntrack listing should show the flows in their states\n{log}"
        ));
    }
    if !out.1.contains("dropped") {
        return Err(format!("fwc should report its statistics\n{log}"));
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    Ok(())
}

/// Two queues, one worker each: the firewall queues TCP to queue 7 and everything else to
/// queue 8; fwc serves both (`--nfqueue 7,8`), and both carry traffic.
fn nfqueue_two_queues_one_worker_each() -> Result<(), String> {
    let net = Net::new();
    let f = net.f.as_str();
    raw_table(
        f,
        &["-D", "PREROUTING", "-j", "NFQUEUE", "--queue-num", "7"],
    );
    for (proto, q) in [("tcp", "7"), ("all", "8")] {
        raw_table(
            f,
            &[
                "-A",
                "PREROUTING",
                "-p",
                proto,
                "-j",
                "NFQUEUE",
                "--queue-num",
                q,
            ],
        );
    }
    let id = std::process::id();
    let rules = std::env::temp_dir().join(format!("fwc-netns-2q-{id}.fw"));
    let socket = std::env::temp_dir().join(format!("fwc-netns-2q-{id}.sock"));
    std::fs::write(&rules, RULES).unwrap();
    let mut fw = spawn_fwc(f, &rules, &socket, &["--nfqueue", "7,8"]);
    let srv = server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let tcp = tcp_from_client(&net.c, SERVER, 80, "");
    let blocked = tcp_from_client(&net.c, SERVER, 81, "");
    let udp = udp_from_client(&net.c);
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    let log = format!("fwc stderr:\n{}", out.1);
    if tcp != "192.0.2.2" || !blocked.starts_with("error:") || udp != "re:q" {
        return Err(format!(
            "tcp/80 and udp/53 should pass and tcp/81 not: {tcp:?} {blocked:?} {udp:?}\n{log}"
        ));
    }
    // both workers served packets: TCP's on 7 (a handshake, data, close each way), UDP's
    // on 8 (the datagram and its answer)
    let served = |q: &str| -> Option<u64> {
        let at = out.1.find(&format!("queue {q}: "))? + 8 + q.len();
        out.1[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    match (served("7"), served("8")) {
        (Some(a), Some(b)) if a >= 4 && b >= 2 => Ok(()),
        other => Err(format!(
            "both queues should have served packets: {other:?}\n{log}"
        )),
    }
}

const RULES_NAT: &str = "
interface f1 address 198.51.100.1;
table nat {
    chain prerouting { iif f0 tcp dport 8080 dnat to 198.51.100.2:80; }
    chain postrouting { oif f1 ip saddr 192.0.2.0/24 masquerade; }
}
table filter {
    chain forward policy drop {
        ct state established,related accept;
        iif f0 oif f1 tcp dport 80 accept;
    }
}
";

/// Masquerade and a port forward under NFQUEUE: the server sees the firewall's address, the
/// client talks to the firewall's port 8080, and conntrack shows both translations.
fn nfqueue_nat_seen_from_both_sides() -> Result<(), String> {
    nat_seen_from_both_sides(&Net::new(), &[])
}

/// Masquerade, a port forward and a blocked port through fwc in the firewall namespace,
/// with `extra` arguments choosing its packet source.
fn nat_seen_from_both_sides(net: &Net, extra: &[&str]) -> Result<(), String> {
    let id = std::process::id();
    let rules = std::env::temp_dir().join(format!("fwc-netns-nat-{id}.fw"));
    let socket = std::env::temp_dir().join(format!("fwc-netns-nat-{id}.sock"));
    std::fs::write(&rules, RULES_NAT).unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, extra);
    let srv = server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let direct = tcp_from_client(&net.c, SERVER, 80, "");
    let blocked = tcp_from_client(&net.c, SERVER, 81, "");
    let forwarded = tcp_from_client(&net.c, "192.0.2.1", 8080, "");
    let (st, list, _) = fwc_ctl(&["conntrack", "-L"], &socket);
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    let log = format!(
        "conntrack -L ({st}):\n{list}fwc stdout:\n{}\nfwc stderr:\n{}",
        out.0, out.1
    );
    if direct != "198.51.100.1" {
        return Err(format!(
            "the server should see the masqueraded address, got {direct:?}\n{log}"
        ));
    }
    if !blocked.starts_with("error:") {
        return Err(format!("tcp/81 should be dropped, got {blocked:?}\n{log}"));
    }
    if forwarded != "198.51.100.1" {
        return Err(format!(
            "the port forward should reach the server, masqueraded, got {forwarded:?}\n{log}"
        ));
    }
    let dnat = list.lines().any(|l| {
        l.contains("src=192.0.2.2 dst=192.0.2.1 ")
            && l.contains(" dport=8080 src=198.51.100.2 dst=198.51.100.1 sport=80 ")
    });
    let snat = list.lines().any(|l| {
        l.contains("src=192.0.2.2 dst=198.51.100.2 ")
            && l.contains(" src=198.51.100.2 dst=198.51.100.1 sport=80 ")
    });
    if !dnat || !snat {
        return Err(format!("conntrack should list both translations\n{log}"));
    }
    Ok(())
}

const RULES_IPVS: &str = "
service web {
    virtual tcp 192.0.2.1:80;
    scheduler rr;
    real 198.51.100.2:80 weight 1 nat;
    real 198.51.100.3:80 weight 1 nat;
    real 198.51.100.4:80 weight 1 nat;
}
table filter {
    chain input policy drop { iif f0 tcp dport 80 accept; }
    chain forward policy drop { ct state established,related accept; }
}
";

/// An IPVS service over three real servers under NFQUEUE: six connections to the virtual
/// address go round robin, each stays on its server, and `fwc ipvs -L -n` lists the service.
fn nfqueue_ipvs_round_robin_over_three_servers() -> Result<(), String> {
    let net = Net::new();
    for a in ["198.51.100.3/24", "198.51.100.4/24"] {
        ok(Some(&net.s), &["ip", "addr", "add", a, "dev", "s0"]);
    }
    let id = std::process::id();
    let rules = std::env::temp_dir().join(format!("fwc-netns-ipvs-{id}.fw"));
    let socket = std::env::temp_dir().join(format!("fwc-netns-ipvs-{id}.sock"));
    std::fs::write(&rules, RULES_IPVS).unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &[]);
    // every connection is answered, message after message, with the server address it
    // reached
    let srv = spawn_py(
        &net.s,
        r#"
import socket, threading, time, select
def serve(c):
    try:
        while c.recv(100):
            c.sendall(c.getsockname()[0].encode())
    except Exception:
        pass
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen(8)
end = time.time() + 20
while time.time() < end:
    if select.select([s], [], [], 0.2)[0]:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#,
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(700));
    let lines = connections(&net.c, "192.0.2.1", 6, r#"(b"a", b"b")"#);
    let (_, listing, _) = fwc_ctl(&["ipvs", "-L", "-n"], &socket);
    let (_, stats, _) = fwc_ctl(&["ipvs", "-L", "-n", "--stats"], &socket);
    let (_, conns, _) = fwc_ctl(&["ipvs", "-L", "-c", "-n"], &socket);
    let (_, rate, _) = fwc_ctl(&["ipvs", "-L", "-n", "--rate"], &socket);
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    let log = format!(
        "client:\n{}\nipvs -L -n:\n{listing}fwc stderr:\n{}",
        lines.join("\n"),
        out.1
    );
    let mut per_server = std::collections::BTreeMap::new();
    for l in &lines {
        let v: Vec<&str> = l.split(' ').collect();
        if v.len() != 2 || v[0] != v[1] || !v[0].starts_with("198.51.100.") {
            return Err(format!(
                "each connection should reach one real server and stay there\n{log}"
            ));
        }
        *per_server.entry(v[0].to_string()).or_insert(0) += 1;
    }
    if lines.len() != 6 || per_server.len() != 3 || per_server.values().any(|&n| n != 2) {
        return Err(format!(
            "round robin should give each of the 3 servers 2 of the 6 connections: {per_server:?}\n{log}"
        ));
    }
    // consecutive connections go to different servers, in the scheduler's order
    if lines.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!(
            "round robin should never pick the same server twice in a row\n{log}"
        ));
    }
    if !listing.contains("TCP  192.0.2.1:80 rr")
        || ["198.51.100.2:80", "198.51.100.3:80", "198.51.100.4:80"]
            .iter()
            .any(|r| !listing.lines().any(|l| l.contains(r) && l.contains("Masq")))
    {
        return Err(format!(
            "ipvs -L -n should list the service and its servers\n{log}"
        ));
    }
    // `-c`: the six connections, from the client to the virtual address, each to a server
    let conn_lines: Vec<&str> = conns
        .lines()
        .filter(|l| {
            l.starts_with("TCP ") && l.contains(" 192.0.2.2:") && l.contains(" 192.0.2.1:80 ")
        })
        .collect();
    if !conns.starts_with("IPVS connection entries\npro expire state") || conn_lines.len() != 6 {
        return Err(format!("ipvs -L -c -n:\n{conns}\n{log}"));
    }
    if !rate.contains("CPS    InPPS   OutPPS    InBPS   OutBPS")
        || !rate.contains("TCP  192.0.2.1:80")
    {
        return Err(format!("ipvs -L -n --rate:\n{rate}\n{log}"));
    }
    // six connections, two per server, each with packets both ways
    let svc = stats
        .lines()
        .find(|l| l.starts_with("TCP  192.0.2.1:80"))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>());
    match svc.as_deref() {
        Some(["6", inp, outp, _, _])
            if inp.parse::<u64>().is_ok_and(|n| n >= 18)
                && outp.parse::<u64>().is_ok_and(|n| n >= 12) => {}
        _ => return Err(format!("ipvs --stats:\n{stats}\n{log}")),
    }
    Ok(())
}

const RULES_DR: &str = "
service web {
    virtual tcp 203.0.113.10:80;
    scheduler rr;
    real 198.51.100.2:80 weight 1 dr;
    real 198.51.100.3:80 weight 1 dr;
}
table filter {
    chain input policy drop { iif f0 tcp dport 80 accept; }
    chain forward policy drop { iif f1 ip saddr 203.0.113.10 tcp sport 80 accept; }
}
";

/// IPVS direct routing in AF_PACKET mode: the real servers hold the virtual address on
/// their loopback (and do not answer ARP for it); fwc sends each client packet, unchanged,
/// to a real server's MAC; the servers answer from the virtual address. Four connections
/// go round robin over the two servers, each answered from the virtual address, and
/// `fwc ipvs -L -n` counts them under `Route`.
fn afpacket_ipvs_direct_routing() -> Result<(), String> {
    let net = Net::with(true);
    let s = net.s.as_str();
    // a second real server's address, and the virtual address on the loopback
    for (addr, dev) in [("198.51.100.3/24", "s0"), ("203.0.113.10/32", "lo")] {
        ok(Some(s), &["ip", "addr", "add", addr, "dev", dev]);
    }
    for k in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
    ] {
        ok(Some(s), &["sysctl", "-qw", k]);
    }
    let id = std::process::id();
    let rules = std::env::temp_dir().join(format!("fwc-netns-dr-{id}.fw"));
    let socket = std::env::temp_dir().join(format!("fwc-netns-dr-{id}.sock"));
    std::fs::write(&rules, RULES_DR).unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &["--afpacket", "f0,f1"]);
    let srv = echo_server(s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let got = connections(&net.c, "203.0.113.10", 4, r#"(b"dr%d" % i,)"#);
    let (_, listing, _) = fwc_ctl(&["ipvs", "-L", "-n"], &socket);
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    let log = format!(
        "client: {got:?}\nipvs -L -n:\n{listing}fwc stderr:\n{}",
        out.1
    );
    if got != ["dr0", "dr1", "dr2", "dr3"] {
        return Err(format!(
            "each connection should be answered through direct routing\n{log}"
        ));
    }
    // two per server (active or, once closed, inactive)
    for r in ["198.51.100.2:80", "198.51.100.3:80"] {
        let line = listing
            .lines()
            .find(|l| l.contains(r) && l.contains("Route"));
        let conns: Option<u32> = line.map(|l| {
            l.split_whitespace()
                .skip(4)
                .filter_map(|n| n.parse::<u32>().ok())
                .sum()
        });
        if conns != Some(2) {
            return Err(format!("{r} should have 2 connections\n{log}"));
        }
    }
    Ok(())
}

/// IPVS tunnelling in AF_PACKET mode: the client's packets to the virtual address reach
/// the real server inside IP-in-IP packets from the firewall's address on that side. This
/// machine's kernel has no `ipip` module to decapsulate them, so the server reads them
/// with a raw socket for protocol 4 (which the kernel delivers without it).
fn afpacket_ipvs_tunnelling() -> Result<(), String> {
    let net = Net::with(true);
    let id = std::process::id();
    let rules = std::env::temp_dir().join(format!("fwc-netns-tun-{id}.fw"));
    let socket = std::env::temp_dir().join(format!("fwc-netns-tun-{id}.sock"));
    std::fs::write(&rules, RULES_DR.replace(" dr;", " tunnel;")).unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &["--afpacket", "f0,f1"]);
    let mut srv = spawn_py(
        &net.s,
        r#"
import socket, time
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4); r.settimeout(8)
try:
    d = r.recv(2000)
    ip = lambda b: ".".join(str(x) for x in b)
    i = d[20:]; hl = (i[0] & 15) * 4
    print(ip(d[12:16]), ip(d[16:20]), d[9], ip(i[12:16]), ip(i[16:20]), int.from_bytes(i[hl+2:hl+4], "big"), flush=True)
except Exception as e:
    print("error:", type(e).__name__, flush=True)
"#,
        Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(700));
    let client = tcp_from_client(&net.c, "203.0.113.10", 80, "x");
    let (seen, _) = wait_bounded(&mut srv, Duration::from_secs(10));
    let (_, listing, _) = fwc_ctl(&["ipvs", "-L", "-n"], &socket);
    let out = stop(&mut fw, spawn_py(&net.s, "pass", Stdio::null()));
    let _ = std::fs::remove_file(&rules);
    let log = format!(
        "server saw: {seen}client: {client}\nipvs -L -n:\n{listing}fwc stderr:\n{}",
        out.1
    );
    // outer: firewall (f1) -> first real server, IP-in-IP; inner: client -> VIP:80
    if seen.trim() != "198.51.100.1 198.51.100.2 4 192.0.2.2 203.0.113.10 80" {
        return Err(format!(
            "the real server should receive the packet tunnelled\n{log}"
        ));
    }
    if !listing
        .lines()
        .any(|l| l.contains("198.51.100.2:80") && l.contains("Tunnel"))
    {
        return Err(format!("ipvs -L -n should list the tunnel\n{log}"));
    }
    Ok(())
}

/// AF_PACKET mode: fwc routes between f0 and f1 itself, the kernel's forwarding off.
fn afpacket_routes_and_filters_real_traffic() -> Result<(), String> {
    nat_seen_from_both_sides(&Net::with(true), &["--afpacket", "f0,f1"])
}

/// A TCP echo server on ports 80 and 81 in the server namespace, one thread per connection,
/// so that a connection can stay open; exits after `secs`.
fn echo_server(ns: &str, secs: u32) -> Child {
    let py = format!(
        r#"
import socket, threading, time, select
def serve(c):
    try:
        while True:
            d = c.recv(100)
            if not d: break
            c.sendall(d)
    except Exception:
        pass
ss = []
for p in (80, 81):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", p)); s.listen(8); ss.append(s)
end = time.time() + {secs}
while time.time() < end:
    r, _, _ = select.select(ss, [], [], 0.2)
    for s in r:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#
    );
    spawn_py(ns, &py, Stdio::null())
}

/// A client that opens one TCP connection to port 80, echoes "one", waits `pause` seconds
/// (the test reloads meanwhile), echoes "two" on the same connection and prints both.
fn long_connection(ns: &str, pause: f32) -> Child {
    let py = format!(
        r#"
import socket, time
s = socket.socket(); s.settimeout(3)
out = []
try:
    s.connect(("198.51.100.2", 80))
    s.sendall(b"one"); out.append(s.recv(10).decode())
    time.sleep({pause})
    s.sendall(b"two"); out.append(s.recv(10).decode())
except Exception as e:
    out.append("error: " + type(e).__name__)
print(" ".join(out))
"#
    );
    spawn_py(ns, &py, Stdio::piped())
}

/// A child process that is killed and reaped however the test ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fwc SUBCOMMAND ... --socket SOCKET`: (status, stdout, stderr).
fn fwc_ctl(args: &[&str], socket: &std::path::Path) -> (i32, String, String) {
    let o = Command::new(fwc_bin())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const RULES_81: &str = "
table filter {
    chain forward policy drop {
        ct state established,related accept;
        iif f0 oif f1 tcp dport 81 accept;
    }
}
";

fn control_socket_and_reload_under_traffic() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let net = Net::new();
    let tmp = std::env::temp_dir();
    let id = std::process::id();
    let rules = tmp.join(format!("fwc-netns-ctl-{id}.fw"));
    let rules81 = tmp.join(format!("fwc-netns-ctl81-{id}.fw"));
    let broken = tmp.join(format!("fwc-netns-broken-{id}.fw"));
    let socket = tmp.join(format!("fwc-netns-{id}.sock"));
    std::fs::write(&rules, RULES).unwrap();
    std::fs::write(&rules81, RULES_81).unwrap();
    std::fs::write(
        &broken,
        "table filter { chain forward { tcp dport 99999 accept; } }",
    )
    .unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &[]);
    let srv = echo_server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let result = (|| -> Result<(), String> {
        let mode = std::fs::metadata(&socket)
            .map_err(|e| format!("no control socket: {e}"))?
            .permissions()
            .mode();
        if mode & 0o777 != 0o600 {
            return Err(format!(
                "the control socket's mode is {:o}, not 600",
                mode & 0o777
            ));
        }
        let mut client = Reap(long_connection(&net.c, 3.0));
        std::thread::sleep(Duration::from_millis(1200));
        // the open connection, as conntrack -L shows it
        let (st, list, err) = fwc_ctl(&["conntrack", "-L"], &socket);
        if st != 0
            || !list.lines().any(|l| {
                l.starts_with("tcp      6 ")
                    && l.contains(" ESTABLISHED src=192.0.2.2 dst=198.51.100.2 ")
                    && l.contains(" dport=80 ")
                    && l.contains("[ASSURED]")
            })
            || !err.contains("1 flow entries have been shown")
        {
            return Err(format!("conntrack -L: status {st}\n{list}{err}"));
        }
        let (st, count, _) = fwc_ctl(&["conntrack", "-C"], &socket);
        if st != 0 || count.trim() != "1" {
            return Err(format!("conntrack -C: status {st}: {count:?}"));
        }
        // the rule that let the connection's later packets through has counted them
        let (st, rules_list, err) = fwc_ctl(&["list", "--line-numbers"], &socket);
        let established = rules_list
            .lines()
            .find(|l| l.contains("ct state") && l.contains("accept"))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>());
        match established.as_deref() {
            Some(["1", pkts, _]) if st == 0 && pkts.parse::<u64>().is_ok_and(|n| n >= 2) => {}
            _ => return Err(format!("fwc list: status {st}\n{rules_list}{err}")),
        }
        let (st, json, _) = fwc_ctl(&["counters", "--json"], &socket);
        if st != 0
            || !json.starts_with("{\"rules\":[{")
            || !json.contains("\"chain\":\"filter/forward\"")
        {
            return Err(format!("fwc counters --json: status {st}\n{json}"));
        }
        // a program that does not compile is refused here, and the datapath keeps its own
        let (st, _, err) = fwc_ctl(&["reload", broken.to_str().unwrap()], &socket);
        if st != 1 || !err.contains("error") {
            return Err(format!("reloading a broken program: status {st}\n{err}"));
        }
        // the new program allows only tcp/81 for new connections, mid-connection
        let (st, _, err) = fwc_ctl(&["reload", rules81.to_str().unwrap()], &socket);
        if st != 0 {
            return Err(format!("reload: status {st}\n{err}"));
        }
        let o = wait_bounded(&mut client.0, Duration::from_secs(8));
        if o.0.trim() != "one two" {
            return Err(format!(
                "the established connection should survive the reload, got {:?}",
                o.0.trim()
            ));
        }
        let to80 = tcp_from_client(&net.c, SERVER, 80, "hi");
        let to81 = tcp_from_client(&net.c, SERVER, 81, "hi");
        if !to80.starts_with("error:") || to81 != "hi" {
            return Err(format!(
                "after the reload tcp/80 should be dropped and tcp/81 pass: {to80:?} {to81:?}"
            ));
        }
        // SIGHUP reloads the file fwc was started with: tcp/80 again
        let _ = Command::new("kill")
            .args(["-HUP", &fw.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let again = tcp_from_client(&net.c, SERVER, 80, "hi");
        if again != "hi" {
            return Err(format!("after SIGHUP tcp/80 should pass again: {again:?}"));
        }
        let (st, _, err) = fwc_ctl(&["conntrack", "-F"], &socket);
        let (_, count, _) = fwc_ctl(&["conntrack", "-C"], &socket);
        if st != 0 || !err.contains("has been emptied") || count.trim() != "0" {
            return Err(format!("conntrack -F: status {st}: {err} then {count:?}"));
        }
        Ok(())
    })();
    let out = stop(&mut fw, srv);
    for f in [&rules, &rules81, &broken] {
        let _ = std::fs::remove_file(f);
    }
    let gone = !socket.exists();
    result.map_err(|e| format!("{e}\nfwc stdout:\n{}\nfwc stderr:\n{}", out.0, out.1))?;
    if !gone {
        return Err("the control socket should be removed when fwc stops".into());
    }
    Ok(())
}

/// `fwc rules` and `fwc save` on a running datapath: iptables-style edits of its rule set,
/// each swapped in between two packets and seen by real connections.
fn iptables_style_commands_on_the_running_rule_set() -> Result<(), String> {
    let net = Net::new();
    let tmp = std::env::temp_dir();
    let id = std::process::id();
    let rules = tmp.join(format!("fwc-netns-rules-{id}.fw"));
    let socket = tmp.join(format!("fwc-netns-rules-{id}.sock"));
    std::fs::write(&rules, RULES).unwrap();
    let mut fw = spawn_fwc(&net.f, &rules, &socket, &[]);
    let srv = echo_server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    // `--socket` before the command: everything after `rules` is the command
    let ctl = |a: &[&str]| {
        let o = Command::new(fwc_bin())
            .args(["rules", "--socket"])
            .arg(&socket)
            .args(a)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let result = (|| -> Result<(), String> {
        if tcp_from_client(&net.c, SERVER, 81, "hi") == "hi" {
            return Err("tcp/81 passes before any rule allows it".into());
        }
        // append a rule: tcp/81 now passes
        let (st, _, err) = ctl(&["-A", "forward", "iif f0 oif f1 tcp dport 81 accept"]);
        if st != 0 {
            return Err(format!("-A: status {st}: {err}"));
        }
        let to81 = tcp_from_client(&net.c, SERVER, 81, "hi");
        if to81 != "hi" {
            return Err(format!("after -A tcp/81 should pass: {to81:?}"));
        }
        // -C says whether a rule is there, as iptables does (exit 1 when not)
        let (st, _, _) = ctl(&["-C", "forward", "iif f0 oif f1 tcp dport 81 accept"]);
        let (st2, _, err2) = ctl(&["-C", "forward", "tcp dport 82 accept"]);
        if st != 0 || st2 != 1 || !err2.contains("Bad rule") {
            return Err(format!("-C: {st} then {st2}: {err2}"));
        }
        // the listing numbers rules as -D counts them, with what each counted
        let (st, list, err) = ctl(&["-L", "forward", "--line-numbers", "-v"]);
        let line81 = list
            .lines()
            .find(|l| l.contains("tcp dport 81 accept"))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>());
        match line81.as_deref() {
            Some(["5", pkts]) if st == 0 && pkts.parse::<u64>().is_ok_and(|n| n >= 1) => {}
            _ => return Err(format!("-L: status {st}\n{list}{err}")),
        }
        if !list.starts_with("Chain filter/forward (policy drop ") {
            return Err(format!("-L header:\n{list}"));
        }
        // insert a drop for tcp/80 in front: new connections to 80 stop
        let (st, _, err) = ctl(&["-I", "forward", "2", "tcp dport 80 drop"]);
        if st != 0 {
            return Err(format!("-I: status {st}: {err}"));
        }
        let to80 = tcp_from_client(&net.c, SERVER, 80, "hi");
        if !to80.starts_with("error:") {
            return Err(format!("after -I tcp/80 should be dropped: {to80:?}"));
        }
        // a rule that does not check is refused, and nothing changes
        let (st, _, err) = ctl(&["-A", "forward", "tcp dport 99999 accept"]);
        if st != 1 || !err.contains("nothing changed") {
            return Err(format!("a bad rule: status {st}: {err}"));
        }
        // delete by number: tcp/80 passes again
        let (st, _, err) = ctl(&["-D", "forward", "2"]);
        let to80 = tcp_from_client(&net.c, SERVER, 80, "hi");
        if st != 0 || to80 != "hi" {
            return Err(format!("-D 2: status {st} {err}; tcp/80: {to80:?}"));
        }
        // a subchain, jumped to; renamed; the policy set
        for a in [
            &["-N", "web"][..],
            &["-A", "web", "tcp dport 8080 accept"],
            &["-I", "forward", "1", "iif f0 jump web"],
            &["-E", "web", "www"],
            &["-P", "forward", "DROP"],
        ] {
            let (st, _, err) = ctl(a);
            if st != 0 {
                return Err(format!("{a:?}: status {st}: {err}"));
            }
        }
        let (st, shown, _) = ctl(&["-S", "www"]);
        if st != 0 || !shown.contains("chain www {") || !shown.contains("tcp dport 8080 accept;") {
            return Err(format!("-S www: {st}\n{shown}"));
        }
        // save: the running rule set as fw source, which checks as it is
        let (st, saved, err) = fwc_ctl(&["save"], &socket);
        if st != 0
            || !saved.contains("iif f0 jump www;")
            || !saved.contains("tcp dport 81 accept;")
            || saved.contains("tcp dport 80 drop")
        {
            return Err(format!("save: status {st} {err}\n{saved}"));
        }
        let f = tmp.join(format!("fwc-netns-saved-{id}.fw"));
        std::fs::write(&f, &saved).unwrap();
        let o = Command::new(fwc_bin())
            .args(["check", f.to_str().unwrap()])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&f);
        if !o.status.success() {
            return Err(format!(
                "the saved rule set does not check:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        // flush: the chain is empty, the policy drops
        let (st, _, err) = ctl(&["-F", "forward"]);
        let to81 = tcp_from_client(&net.c, SERVER, 81, "hi");
        if st != 0 || !to81.starts_with("error:") {
            return Err(format!("-F: status {st} {err}; tcp/81: {to81:?}"));
        }
        Ok(())
    })();
    let out = stop(&mut fw, srv);
    let _ = std::fs::remove_file(&rules);
    result.map_err(|e| format!("{e}\nfwc stdout:\n{}\nfwc stderr:\n{}", out.0, out.1))
}

/// Stops fwc with SIGTERM (it prints its statistics and tables) and the server; fwc's
/// (stdout, stderr).
fn stop(fw: &mut Child, srv: Child) -> (String, String) {
    let _ = Command::new("kill")
        .args(["-TERM", &fw.id().to_string()])
        .status();
    let out = wait_bounded(fw, Duration::from_secs(10));
    drop(Reap(srv));
    out
}

fn wait_bounded(child: &mut Child, limit: Duration) -> (String, String) {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut so = String::new();
    let mut se = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut so);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut se);
    }
    let _ = child.wait();
    (so, se)
}

fn main() {
    let tests: &[(&str, harness::Test)] = &[
        ("nfqueue_filters_real_traffic", nfqueue_filters_real_traffic),
        (
            "nfqueue_nat_seen_from_both_sides",
            nfqueue_nat_seen_from_both_sides,
        ),
        (
            "nfqueue_ipvs_round_robin_over_three_servers",
            nfqueue_ipvs_round_robin_over_three_servers,
        ),
        (
            "afpacket_routes_and_filters_real_traffic",
            afpacket_routes_and_filters_real_traffic,
        ),
        (
            "control_socket_and_reload_under_traffic",
            control_socket_and_reload_under_traffic,
        ),
        ("afpacket_ipvs_direct_routing", afpacket_ipvs_direct_routing),
        ("afpacket_ipvs_tunnelling", afpacket_ipvs_tunnelling),
        (
            "nfqueue_two_queues_one_worker_each",
            nfqueue_two_queues_one_worker_each,
        ),
        (
            "iptables_style_commands_on_the_running_rule_set",
            iptables_style_commands_on_the_running_rule_set,
        ),
    ];
    harness::run("netns", "network namespaces, iptables, NFQUEUE", tests);
}
