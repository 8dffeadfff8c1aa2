//! NFQUEUE throughput, one run: `cargo bench -p fwc-runtime --bench nfqueue` (as root).
//!
//! Two network namespaces joined by a veth pair (client 192.0.2.2, firewall 192.0.2.1);
//! in the firewall namespace every packet is untracked by the kernel and queued to queue 3.
//! A UDP flood from the client runs for a fixed time twice: once served by a no-op listener
//! (receive, accept), once by the fwc datapath (conntrack, the JIT-compiled rules). Both
//! count the packets they gave a verdict; the figure is the ratio of the two rates, measured
//! in the same run on the same machine.

use fwc_compiler::loader::MemFiles;
use fwc_jit::{JitProgram, Options};
use fwc_runtime::conntrack::{Config, Table};
use fwc_runtime::datapath::Datapath;
use fwc_runtime::live;
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const QUEUE: u16 = 3;
const SECONDS: u64 = 5;

const RULES: &str = "
table filter {
    chain input policy drop {
        ct state established,related accept;
        ip saddr 192.0.2.0/24 udp dport 9000-9100 accept;
        tcp dport { 22, 80, 443 } accept;
    }
}
";

fn sh(args: &[&str]) -> io::Result<()> {
    let st = Command::new(args[0]).args(&args[1..]).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{args:?}: {st}")))
    }
}

struct Net {
    c: String,
    f: String,
}

impl Net {
    fn new() -> io::Result<Net> {
        let id = std::process::id();
        let n = Net {
            c: format!("fwcb-c-{id}"),
            f: format!("fwcb-f-{id}"),
        };
        sh(&["ip", "netns", "add", &n.c])?;
        sh(&["ip", "netns", "add", &n.f])?;
        let (c, f) = (n.c.as_str(), n.f.as_str());
        sh(&[
            "ip", "-n", f, "link", "add", "f0", "type", "veth", "peer", "name", "c0", "netns", c,
        ])?;
        for (ns, ifc, addr) in [(c, "c0", "192.0.2.2/24"), (f, "f0", "192.0.2.1/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", ifc])?;
            sh(&["ip", "-n", ns, "link", "set", ifc, "up"])?;
        }
        for target in [&["CT", "--notrack"][..], &["NFQUEUE", "--queue-num", "3"]] {
            let mut args = vec![
                "ip",
                "netns",
                "exec",
                f,
                "iptables",
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-i",
                "f0",
                "-j",
            ];
            args.extend_from_slice(target);
            sh(&args)?;
        }
        Ok(n)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.c]);
        let _ = sh(&["ip", "netns", "del", &self.f]);
    }
}

/// Enters network namespace `ns` on this thread (a queue's netlink socket belongs to the
/// namespace of the thread that opens it).
fn enter(ns: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: `f` is an open network namespace file for the whole call; setns changes only
    // this thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Two Python senders flooding small UDP datagrams at the firewall for `secs`.
fn flood(ns: &str, secs: u64) -> io::Result<Vec<Child>> {
    let py = format!(
        r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + {secs}
while time.time() < end:
    for p in range(9000, 9064):
        try:
            s.sendto(b"x" * 18, ("192.0.2.1", p))
        except OSError:
            pass
"#
    );
    (0..2)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", ns, "python3", "-c", &py])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect()
}

/// The no-op listener: the same queue loop as the datapath's, every packet accepted as it
/// is.
fn noop(stop: &AtomicBool) -> io::Result<u64> {
    live::serve_queues(
        &[QUEUE],
        false,
        stop,
        &|batch, out| out.extend(batch.iter().map(|_| live::QueueVerdict::Accept)),
        &mut || {},
    )
    .map(|q| q.iter().map(|(_, n)| n).sum())
}

fn datapath() -> Datapath {
    let c = fwc_compiler::compile_source("bench.fw", RULES, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(
        jit,
        Table::new(Config::default()),
        vec!["192.0.2.1".parse().unwrap()],
    );
    dp.forwards = false;
    dp
}

/// Runs one listener on its own thread (in the firewall's namespace) during a flood;
/// returns packets per second.
fn measure(net: &Net, fwc: bool) -> io::Result<f64> {
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::Relaxed);
    let f = net.f.clone();
    let listener = std::thread::spawn(move || -> io::Result<u64> {
        enter(&f)?;
        if fwc {
            let mut dp = datapath();
            live::run_nfqueue(&mut dp, &[QUEUE], false, &STOP, &mut |_, _| {}).map(|s| s.packets)
        } else {
            noop(&STOP)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let senders = flood(&net.c, SECONDS + 1)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(SECONDS));
    STOP.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let n = listener.join().expect("listener thread")?;
    for mut s in senders {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(n as f64 / secs)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }) {
        println!("nfqueue bench not run: it needs root (network namespaces, NFQUEUE)");
        return;
    }
    let net = Net::new().expect("network namespaces");
    let noop_pps = measure(&net, false).expect("no-op listener");
    let fwc_pps = measure(&net, true).expect("fwc listener");
    println!("NFQUEUE, UDP flood from 2 senders, {SECONDS} s each:");
    println!("  no-op listener (receive, accept): {noop_pps:>10.0} packets/s");
    println!("  fwc datapath (conntrack + rules): {fwc_pps:>10.0} packets/s");
    println!("  ratio fwc / no-op: {:.2}", fwc_pps / noop_pps);
}
