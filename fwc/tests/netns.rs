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

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Net {
    c: String,
    f: String,
    s: String,
}

fn sh(ns: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    cmd.output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(ns: Option<&str>, args: &[&str]) {
    let o = sh(ns, args);
    assert!(
        o.status.success(),
        "{ns:?} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Net {
    fn new() -> Net {
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
        ok(Some(f), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // every packet the firewall receives goes to fwc, untracked by the kernel
        for target in [&["CT", "--notrack"][..], &["NFQUEUE", "--queue-num", "7"]] {
            let mut args = vec!["iptables", "-t", "raw", "-A", "PREROUTING", "-j"];
            args.extend_from_slice(target);
            ok(Some(f), &args);
        }
        n
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for x in [&self.c, &self.f, &self.s] {
            let _ = sh(None, &["ip", "netns", "del", x]);
        }
    }
}

fn fwc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fwc"))
}

/// A TCP and UDP echo server in the server namespace: answers "ok" to connections on the
/// given TCP ports and echoes UDP datagrams on port 53; exits after `secs`.
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
            c, _ = s.accept(); c.sendall(b"ok"); c.close()
"#
    );
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &py])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// From the client namespace: what a TCP connection to `port` reads ("ok", or the error),
/// bounded by a 3 s timeout.
fn tcp_from_client(ns: &str, port: u16) -> String {
    let py = format!(
        r#"
import socket
s = socket.socket(); s.settimeout(3)
try:
    s.connect(("198.51.100.2", {port})); print(s.recv(10).decode())
except Exception as e:
    print("error:", type(e).__name__)
"#
    );
    let o = sh(Some(ns), &["python3", "-c", &py]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
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
    let o = sh(Some(ns), &["python3", "-c", py]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

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
    let mut fw = Command::new("ip")
        .args(["netns", "exec", &net.f])
        .arg(fwc_bin())
        .args([
            "run",
            rules.to_str().unwrap(),
            "--nfqueue",
            "7",
            "--duration",
            "25",
            "--conntrack",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut srv = server(&net.s, 20);
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    let allowed = tcp_from_client(&net.c, 80);
    let blocked = tcp_from_client(&net.c, 81);
    let dns = udp_from_client(&net.c);
    let ping = sh(
        Some(&net.c),
        &["ping", "-c", "2", "-W", "2", "198.51.100.2"],
    );
    // end fwc early and collect what it saw
    let _ = Command::new("kill")
        .args(["-TERM", &fw.id().to_string()])
        .status();
    let out = wait_bounded(&mut fw, Duration::from_secs(10));
    let _ = srv.kill();
    let _ = srv.wait();
    let _ = std::fs::remove_file(&rules);
    let log = format!("fwc stdout:\n{}\nfwc stderr:\n{}", out.0, out.1);
    if allowed != "ok" {
        return Err(format!("tcp/80 should pass, got {allowed:?}\n{log}"));
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
    if !out.0.contains("src=192.0.2.2 dst=198.51.100.2") || !out.0.contains("dport=80") {
        return Err(format!(
            "the conntrack listing should show the flows\n{log}"
        ));
    }
    if !out.1.contains("dropped") {
        return Err(format!("fwc should report its statistics\n{log}"));
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    Ok(())
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

type Test = fn() -> Result<(), String>;

fn main() {
    let tests: [(&str, Test); 1] = [("nfqueue_filters_real_traffic", nfqueue_filters_real_traffic)];
    if !is_root() {
        println!("netns tests skipped: they need root (network namespaces, iptables, NFQUEUE)");
        println!("netns: 0 passed, 0 failed, {} skipped", tests.len());
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, t) in tests {
        match std::panic::catch_unwind(t) {
            Ok(Ok(())) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Ok(Err(why)) => {
                println!("test {name} ... FAILED\n{why}");
                failed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED (panicked)");
                failed += 1;
            }
        }
    }
    println!("netns: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
