//! Datapath benchmarks, one run: `cargo bench -p fwc-runtime --bench pipeline`.
//!
//! 1. pcap replay through the whole pipeline (conntrack, NAT, the JIT tables) against the
//!    JIT classifier alone on the same packets: packets per second and their ratio;
//! 2. conntrack at 1M flows: bytes per flow (resident memory growth) and lookups per second.

use fwc_compiler::interp::{FreshOracle, Meta, PathKind};
use fwc_compiler::loader::MemFiles;
use fwc_jit::{JitProgram, Options};
use fwc_runtime::conntrack::{Config, Table};
use fwc_runtime::datapath::{Datapath, Link};
use fwc_runtime::pcap;
use fwc_runtime::wire::{ipv4, tcp};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

const RULES: &str = "
interface eth0 address 203.0.113.2;
table nat { chain postrouting { oif eth0 ip saddr 10.0.0.0/8 masquerade; } }
table filter { chain forward policy drop {
    ct state invalid drop;
    ct state established,related accept;
    ip saddr 10.0.0.0/8 tcp dport { 80, 443, 8080 } accept;
} }
";

fn tcp_pkt(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let r = tcp::Repr {
        src_port: sp,
        dst_port: dp,
        seq,
        ack,
        flags,
        window: 64000,
        payload_len: 0,
    };
    ipv4::Repr::packet(src, dst, ipv4::PROTO_TCP, 20, |b, s, d| r.emit(b, s, d)).unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let flows: u32 = if quick { 2_000 } else { 20_000 };
    // a trace of whole connections: SYN, SYN/ACK, ACK, 5 data segments each way, through NAT
    let (gw, server) = (
        Ipv4Addr::new(203, 0, 113, 2),
        Ipv4Addr::new(198, 51, 100, 9),
    );
    let mut trace: Vec<(Vec<u8>, bool)> = Vec::new(); // (packet, from the LAN)
    for f in 0..flows {
        let c = Ipv4Addr::from(0x0a00_0000 + f);
        let sp = 10_000 + (f % 50_000) as u16;
        trace.push((tcp_pkt(c, sp, server, 443, 1, 0, tcp::flags::SYN), true));
        trace.push((
            tcp_pkt(
                server,
                443,
                gw,
                sp,
                100,
                2,
                tcp::flags::SYN | tcp::flags::ACK,
            ),
            false,
        ));
        trace.push((tcp_pkt(c, sp, server, 443, 2, 101, tcp::flags::ACK), true));
    }
    let c = fwc_compiler::compile_source("bench.fw", RULES, &MemFiles::default());
    let program = c.checked.unwrap().program;
    // the capture goes through a pcap file, as `fwc run --pcap` reads it
    let mut w = pcap::Writer::new(Vec::new(), pcap::LINKTYPE_RAW).unwrap();
    for (i, (p, _)) in trace.iter().enumerate() {
        w.write(i as u64 * 1000, p).unwrap();
    }
    let file = w.finish().unwrap();
    let recs: Vec<pcap::Record> = pcap::Reader::new(&file[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut dp = Datapath::new(
        JitProgram::compile(&program, Options::default()).unwrap(),
        Table::new(Config {
            max: 0,
            buckets: 1 << 16,
            ..Config::default()
        }),
        vec![gw],
    );
    let t = Instant::now();
    let mut accepted = 0;
    for (i, r) in recs.iter().enumerate() {
        let (iif, oif) = if trace[i].1 {
            ("eth1", "eth0")
        } else {
            ("eth0", "eth1")
        };
        if dp
            .process(i as u64 / 1000, Link::RawIp, &r.data, Some(iif), Some(oif))
            .frame
            .is_some()
        {
            accepted += 1;
        }
    }
    let pipeline = t.elapsed();
    assert_eq!(accepted, recs.len(), "every packet of the trace is allowed");
    // the classifier alone, on the same packets (ct state taken as established)
    let mut jit = JitProgram::compile(&program, Options::default()).unwrap();
    let meta = Meta {
        iif: Some("eth1".into()),
        oif: Some("eth0".into()),
        mark: 0,
        ct: fwc_compiler::ir::ct::ESTABLISHED,
    };
    // (into one outcome kept across packets, as the datapath does)
    let mut out = fwc_jit::JitOutcome::default();
    let t = Instant::now();
    for r in &recs {
        jit.classify_into(
            PathKind::Forward,
            &r.data,
            &meta,
            &mut FreshOracle,
            &mut fwc_jit::NoHooks,
            &mut out,
        )
        .unwrap();
        black_box(&out);
    }
    let classifier = t.elapsed();
    let pps = |d: std::time::Duration| recs.len() as f64 / d.as_secs_f64();
    println!(
        "pcap replay, {} packets of {} connections (SYN, SYN/ACK, ACK; masquerade):",
        recs.len(),
        flows
    );
    println!(
        "  whole pipeline {:>10.0} pps ({:.0} ns/packet); classifier alone {:>10.0} pps ({:.0} ns/packet); ratio {:.2}",
        pps(pipeline),
        pipeline.as_nanos() as f64 / recs.len() as f64,
        pps(classifier),
        classifier.as_nanos() as f64 / recs.len() as f64,
        pps(pipeline) / pps(classifier)
    );

    // conntrack at scale
    let n: u32 = if quick { 100_000 } else { 1_000_000 };
    let before = rss_kib();
    let mut table = Table::new(Config {
        max: 0,
        buckets: (n as usize).next_power_of_two() / 2,
        ..Config::default()
    });
    let t = Instant::now();
    for f in 0..n {
        let c = Ipv4Addr::from(0x0a00_0000 + f);
        let p = tcp_pkt(c, 40_000, server, 443, 1, 0, tcp::flags::SYN);
        let tr = table.track(0, &p);
        table.confirm(tr.entry.unwrap(), 0);
    }
    let insert = t.elapsed();
    let after = rss_kib();
    let probes: Vec<Vec<u8>> = (0..100_000u32)
        .map(|k| {
            let f = (k.wrapping_mul(2_654_435_761)) % n;
            tcp_pkt(
                server,
                443,
                Ipv4Addr::from(0x0a00_0000 + f),
                40_000,
                100,
                2,
                tcp::flags::SYN | tcp::flags::ACK,
            )
        })
        .collect();
    let t = Instant::now();
    for p in &probes {
        black_box(table.track(1, p));
    }
    let lookups = t.elapsed();
    println!("conntrack, {} flows:", table.len());
    println!(
        "  {:.0} bytes per flow (resident growth {} MiB); insert {:.0} ns/flow; tracked lookups {:.2} M/s ({:.0} ns each)",
        (after.saturating_sub(before) as f64 * 1024.0) / f64::from(n),
        after.saturating_sub(before) / 1024,
        insert.as_nanos() as f64 / f64::from(n),
        probes.len() as f64 / lookups.as_secs_f64() / 1e6,
        lookups.as_nanos() as f64 / probes.len() as f64
    );
}
