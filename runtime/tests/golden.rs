//! Golden scenarios: packet sequences through the datapath, each packet's decision and the
//! final connection table snapshotted (`tests/golden/NAME.snap`). The packets are written to
//! a pcap file and read back first, as `fwc run --pcap` does.

use fwc_compiler::loader::MemFiles;
use fwc_jit::{JitProgram, Options};
use fwc_runtime::conntrack::{Config, Table};
use fwc_runtime::datapath::{Datapath, Link};
use fwc_runtime::pcap;
use fwc_runtime::wire::{icmp, ipv4, tcp, udp};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use tcp::flags::*;

const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

const RULES: &str = "
interface eth0 address 203.0.113.2;
table nat { chain postrouting { ip saddr 10.0.0.0/24 ip protocol { tcp, udp } snat to 203.0.113.2:40000-40001; } }
table filter {
    chain forward policy drop {
        ct state invalid drop;
        ct state established,related accept;
        ip saddr 10.0.0.0/24 accept;
    }
    chain input policy accept { ct state invalid drop; }
}
";

fn ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv4::Repr::packet(src, dst, proto, l4.len(), |b, _, _| {
        b.copy_from_slice(l4);
        Ok(())
    })
    .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn t(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    len: usize,
) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + len];
    tcp::Repr {
        src_port: sp,
        dst_port: dp,
        seq,
        ack,
        flags,
        window: 64000,
        payload_len: len,
    }
    .emit(&mut l4, src, dst)
    .unwrap();
    ip(src, dst, 6, &l4)
}

fn u(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
    let mut l4 = vec![0u8; 10];
    udp::Repr {
        src_port: sp,
        dst_port: dp,
        payload_len: 2,
    }
    .emit(&mut l4, src, dst)
    .unwrap();
    ip(src, dst, 17, &l4)
}

fn describe(b: &[u8]) -> String {
    let Ok(p) = ipv4::Packet::new_checked(b) else {
        return "?".into();
    };
    let l4 = p.payload();
    match p.protocol() {
        6 => {
            let s = tcp::Segment::new_checked(l4).unwrap();
            let f: Vec<&str> = [(SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P")]
                .iter()
                .filter(|(b, _)| s.flags() & b != 0)
                .map(|(_, n)| *n)
                .collect();
            format!(
                "tcp {}:{} > {}:{} [{}] seq {} ack {} len {}",
                p.src(),
                s.src_port(),
                p.dst(),
                s.dst_port(),
                f.concat(),
                s.seq(),
                s.ack(),
                s.payload().len()
            )
        }
        17 => {
            let d = udp::Datagram::new_checked(l4).unwrap();
            format!(
                "udp {}:{} > {}:{}",
                p.src(),
                d.src_port(),
                p.dst(),
                d.dst_port()
            )
        }
        1 => {
            let m = icmp::Message::new_checked(l4).unwrap();
            let sum = if m.verify_checksum() {
                ""
            } else {
                " BAD CHECKSUM"
            };
            let mut d = format!(
                "icmp {} > {} type {} code {}{sum}",
                p.src(),
                p.dst(),
                m.msg_type(),
                m.code()
            );
            if let Some(Ok(q)) = m.quoted() {
                let ports = q.payload();
                let sum = if q.verify_checksum() {
                    ""
                } else {
                    " BAD IP CHECKSUM"
                };
                d += &format!(
                    " quoting proto {} {}:{} > {}:{}{sum}",
                    q.protocol(),
                    q.src(),
                    u16::from_be_bytes([ports[0], ports[1]]),
                    q.dst(),
                    u16::from_be_bytes([ports[2], ports[3]])
                );
            }
            d
        }
        n => format!("proto {n} {} > {}", p.src(), p.dst()),
    }
}

/// Runs the packets (time in ms, iif, oif, bytes) through a datapath via a pcap file.
fn scenario(rules: &str, cfg: Config, packets: &[(u64, &str, &str, Vec<u8>)]) -> String {
    let c = fwc_compiler::compile_source("golden.fw", rules, &MemFiles::default());
    assert!(!c.has_errors(), "{:?}", c.diags);
    let jit = JitProgram::compile(&c.checked.unwrap().program, Options::default()).unwrap();
    let mut dp = Datapath::new(jit, Table::new(cfg), vec![GW]);
    let mut w = pcap::Writer::new(Vec::new(), pcap::LINKTYPE_RAW).unwrap();
    for (ms, _, _, b) in packets {
        w.write(ms * 1_000_000, b).unwrap();
    }
    let file = w.finish().unwrap();
    let mut out = String::new();
    let mut last = 0;
    for (k, rec) in pcap::Reader::new(&file[..]).unwrap().enumerate() {
        let rec = rec.unwrap();
        let (ms, iif, oif, _) = &packets[k];
        last = *ms;
        let d = dp.process(*ms, Link::RawIp, &rec.data, Some(iif), Some(oif));
        let _ = writeln!(out, "{:>6}ms  in: {}", ms, describe(&rec.data));
        let ct = d.ct.map(|c| format!("{c:?}")).unwrap_or_else(|| "-".into());
        match d.frame {
            Some(f) => {
                let _ = writeln!(out, "          {:?} ({ct}) out: {}", d.fate, describe(&f));
            }
            None => {
                let _ = writeln!(
                    out,
                    "          {:?} ({ct}){}",
                    d.fate,
                    d.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(out, "\nconntrack -L at {last} ms:\n{}", dp.ct.list(last));
    let _ = writeln!(out, "{:?}", dp.ct.stats);
    out
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("golden");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

#[test]
fn tcp_handshake_data_fin_and_time_wait() {
    let p = vec![
        (0, "eth1", "eth0", t(C, 40000, S, 443, 100, 0, SYN, 0)),
        (
            5,
            "eth0",
            "eth1",
            t(S, 443, GW, 40000, 900, 101, SYN | ACK, 0),
        ),
        (6, "eth1", "eth0", t(C, 40000, S, 443, 101, 901, ACK, 0)),
        (
            7,
            "eth1",
            "eth0",
            t(C, 40000, S, 443, 101, 901, ACK | PSH, 200),
        ),
        (
            9,
            "eth0",
            "eth1",
            t(S, 443, GW, 40000, 901, 301, ACK | PSH, 1000),
        ),
        (
            20,
            "eth1",
            "eth0",
            t(C, 40000, S, 443, 301, 1901, FIN | ACK, 0),
        ),
        (25, "eth0", "eth1", t(S, 443, GW, 40000, 1901, 302, ACK, 0)),
        (
            26,
            "eth0",
            "eth1",
            t(S, 443, GW, 40000, 1901, 302, FIN | ACK, 0),
        ),
        (27, "eth1", "eth0", t(C, 40000, S, 443, 302, 1902, ACK, 0)),
    ];
    settings().bind(|| {
        insta::assert_snapshot!(
            "tcp_handshake_data_fin",
            scenario(RULES, Config::default(), &p)
        )
    });
}

#[test]
fn tcp_rst_and_out_of_window() {
    let p = vec![
        (0, "eth1", "eth0", t(C, 40000, S, 80, 1000, 0, SYN, 0)),
        (
            1,
            "eth0",
            "eth1",
            t(S, 80, GW, 40000, 7000, 1001, SYN | ACK, 0),
        ),
        (2, "eth1", "eth0", t(C, 40000, S, 80, 1001, 7001, ACK, 0)),
        // far beyond the window the server advertised: INVALID, dropped by the rules
        (
            3,
            "eth1",
            "eth0",
            t(C, 40000, S, 80, 1001 + 50_000_000, 7001, ACK, 10),
        ),
        // acknowledging data the server never sent
        (
            4,
            "eth1",
            "eth0",
            t(C, 40000, S, 80, 1001, 7001 + 9_000_000, ACK, 0),
        ),
        (
            5,
            "eth0",
            "eth1",
            t(S, 80, GW, 40000, 7001, 1001, RST | ACK, 0),
        ),
        // a segment after the reset, and a new SYN that reopens
        (6, "eth1", "eth0", t(C, 40000, S, 80, 1001, 7001, ACK, 0)),
        (7, "eth1", "eth0", t(C, 40000, S, 80, 5555, 0, SYN, 0)),
    ];
    settings().bind(|| {
        insta::assert_snapshot!(
            "tcp_rst_out_of_window",
            scenario(RULES, Config::default(), &p)
        )
    });
}

#[test]
fn icmp_error_related_to_a_nated_flow() {
    // a UDP flow out, then the server's port unreachable quoting the translated datagram
    let flow_out = u(C, 5353, S, 53);
    // the first free port of the rule's range: 5353 is outside it
    let translated = u(GW, 40001, S, 53);
    let mut l4 = vec![0u8; 8 + 28];
    l4[0] = icmp::DEST_UNREACHABLE;
    l4[1] = 3;
    l4[8..].copy_from_slice(&translated[..28]);
    icmp::Message::new_checked(&mut l4[..])
        .unwrap()
        .fill_checksum();
    let err = ip(S, GW, 1, &l4);
    // the same error about a flow nobody opened (another quoted source port)
    let mut bogus = l4.clone();
    bogus[8 + 20] ^= 0x55;
    icmp::Message::new_checked(&mut bogus[..])
        .unwrap()
        .fill_checksum();
    let p = vec![
        (0, "eth1", "eth0", flow_out),
        (1, "eth0", "eth1", err),
        (2, "eth0", "eth1", ip(S, GW, 1, &bogus)),
    ];
    settings().bind(|| {
        insta::assert_snapshot!("icmp_error_related", scenario(RULES, Config::default(), &p))
    });
}

#[test]
fn nat_port_clash_and_exhaustion() {
    // the rule allows two source ports only: 40000 and 40001
    let p = vec![
        (0, "eth1", "eth0", u(C, 40000, S, 53)),
        (1, "eth1", "eth0", u(C2, 40000, S, 53)),
        (
            2,
            "eth1",
            "eth0",
            u(Ipv4Addr::new(10, 0, 0, 4), 40000, S, 53),
        ),
        (3, "eth0", "eth1", u(S, 53, GW, 40001)),
    ];
    settings()
        .bind(|| insta::assert_snapshot!("nat_port_clash", scenario(RULES, Config::default(), &p)));
}

#[test]
fn a_full_table_early_drops() {
    let cfg = Config {
        max: 2,
        buckets: 1,
        ..Config::default()
    };
    let p = vec![
        // an assured TCP connection
        (0, "eth1", "eth0", t(C, 1000, S, 80, 1, 0, SYN, 0)),
        (1, "eth0", "eth1", t(S, 80, C, 1000, 50, 2, SYN | ACK, 0)),
        (2, "eth1", "eth0", t(C, 1000, S, 80, 2, 51, ACK, 0)),
        // an unreplied UDP flow fills the table
        (3, "eth1", "eth0", u(C2, 7, S, 53)),
        // a new flow evicts the unreplied one, not the assured connection
        (
            4,
            "eth1",
            "eth0",
            u(C2, 8, Ipv4Addr::new(198, 51, 100, 10), 53),
        ),
    ];
    let rules = "table filter { chain forward policy accept { } }";
    settings().bind(|| insta::assert_snapshot!("table_full_early_drop", scenario(rules, cfg, &p)));
}
