//! Classification benchmark: ns/packet for a naive linear scan, the interpreter, the JIT
//! without and with decision trees, at 100, 1K, 10K and 100K ClassBench-shaped rules; plus
//! check and JIT compile times and memory. One run, one table.
//!
//! `cargo bench -p fwc-jit --bench classify` (all sizes, about a minute per style), or with
//! `-- --quick` for 100 and 1K only. `FWC_BENCH_STYLES=acl,fw,ipc` picks the styles (default
//! acl). Every method's answer is checked against the linear scan on every packet.
//! `FWC_CLASSBENCH=DIR` adds rows for the real ClassBench seed sets found in DIR (acl1_1k,
//! acl1_10k, fw1_1k, fw1_10k, ipc1_1k, ipc1_10k; not shipped with fwc).

use fwc_compiler::gen::{ruleset, Style};
use fwc_compiler::interp::{self, FreshOracle, Meta, Packet, PathKind};
use fwc_compiler::loader::MemFiles;
use fwc_jit::dtree::RuleBox;
use fwc_jit::{JitOutcome, JitProgram, NoHooks, Options};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `f` over the packets until at least `budget` has passed (at least once); ns/packet.
fn time_per_packet(n: usize, budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    loop {
        for i in 0..n {
            f(i);
        }
        done += n;
        if start.elapsed() >= budget {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / done as f64
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick") || !bench;
    let sizes: &[usize] = if quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000, 100_000]
    };
    let styles: Vec<Style> = std::env::var("FWC_BENCH_STYLES")
        .unwrap_or_else(|_| "acl".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "acl" => Some(Style::Acl),
            "fw" => Some(Style::Fw),
            "ipc" => Some(Style::Ipc),
            _ => None,
        })
        .collect();
    let budget = Duration::from_millis(if bench { 400 } else { 20 });
    println!(
        "{:>7} {:>8} | {:>9} {:>11} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "rules", "style", "linear", "interp", "jit", "jit+tree", "check", "jit", "jit+tree", "code", "tree", "maxRSS", "x lin", "x int"
    );
    for style in styles {
        for &n in sizes {
            let src = ruleset(style, n, 7);
            measure(&format!("{style:?}").to_lowercase(), n, &src, budget);
        }
    }
    // the real ClassBench seed sets, when a directory of them is given (they are not shipped
    // with fwc): the same measurement on the rule sets the literature's figures use
    if let Ok(dir) = std::env::var("FWC_CLASSBENCH") {
        for name in [
            "acl1_1k", "acl1_10k", "fw1_1k", "fw1_10k", "ipc1_1k", "ipc1_10k",
        ] {
            let Ok(text) = std::fs::read_to_string(std::path::Path::new(&dir).join(name)) else {
                continue;
            };
            let (src, n) = fwc_compiler::gen::from_classbench(&text);
            measure(name, n, &src, budget);
        }
    }
}

/// Measures one program (the `filter/forward` chain of `src`, every rule a 5-tuple rule) four
/// ways on a trace drawn from its rules, and prints a row.
fn measure(label: &str, n: usize, src: &str, budget: Duration) {
    let t0 = Instant::now();
    let c = fwc_compiler::compile_source("bench.fw", src, &MemFiles::default());
    let check = t0.elapsed();
    assert!(!c.has_errors());
    let p = &c.checked.as_ref().unwrap().program;
    let chain = &p.chains[p.hooks[fwc_compiler::ir::Hook::Forward.index()][0].chain.0 as usize];
    let boxes: Vec<RuleBox> = chain
        .rules
        .iter()
        .map(|r| RuleBox::of(r).expect("5-tuple rule"))
        .collect();
    let pkts = fwc_jit::dtree::trace_packets(&boxes, 4096, 99);
    let raws: Vec<Vec<u8>> = pkts.iter().map(Packet::to_raw).collect();
    let tuples: Vec<([u32; 5], bool)> = pkts
        .iter()
        .map(|p| {
            (
                [
                    p.saddr,
                    p.daddr,
                    p.proto.into(),
                    p.sport.into(),
                    p.dport.into(),
                ],
                p.has_ports(),
            )
        })
        .collect();
    let meta = Meta {
        ct: fwc_compiler::ir::ct::NEW,
        ..Meta::default()
    };
    // the answers, by linear scan: the rule position that decides, if any
    let linear_answer = |i: usize| {
        boxes
            .iter()
            .position(|b| b.matches(&tuples[i].0, tuples[i].1))
    };
    let want: Vec<Option<usize>> = (0..pkts.len()).map(linear_answer).collect();
    let rule_pos = |id: Option<fwc_compiler::ir::RuleId>| {
        id.and_then(|id| chain.rules.iter().position(|r| r.id == id))
    };

    let lin = time_per_packet(pkts.len(), budget, |i| {
        black_box(linear_answer(black_box(i)));
    });
    // the interpreter is slow on big sets: a slice of the trace
    let ni = if n >= 10_000 { 256 } else { pkts.len() };
    for (i, raw) in raws.iter().take(ni).enumerate() {
        let o = interp::run_raw(p, PathKind::Forward, raw, &meta, &mut FreshOracle).unwrap();
        assert_eq!(
            rule_pos(o.deciding_rule),
            want[i],
            "interpreter, packet {i}"
        );
    }
    let int = time_per_packet(ni, budget, |i| {
        black_box(
            interp::run_raw(p, PathKind::Forward, &raws[i], &meta, &mut FreshOracle).unwrap(),
        );
    });
    let mut results = Vec::new();
    for trees in [false, true] {
        let t0 = Instant::now();
        let mut jit = JitProgram::compile(
            p,
            Options {
                decision_trees: trees,
                ..Options::default()
            },
        )
        .unwrap();
        let compile = t0.elapsed();
        for (i, raw) in raws.iter().enumerate() {
            let o = jit
                .classify(PathKind::Forward, raw, &meta, &mut FreshOracle)
                .unwrap();
            assert_eq!(
                rule_pos(o.deciding_rule),
                want[i],
                "jit (trees {trees}), packet {i}"
            );
        }
        // the outcome buffer is reused, as a datapath does (`classify_into`)
        let mut out = JitOutcome::default();
        let ns = time_per_packet(pkts.len(), budget, |i| {
            jit.classify_into(
                PathKind::Forward,
                &raws[i],
                &meta,
                &mut FreshOracle,
                &mut NoHooks,
                &mut out,
            )
            .unwrap();
            black_box(&out);
        });
        results.push((ns, compile, jit.code_size, jit.tree_memory()));
    }
    let (jit_ns, jit_t, code, _) = results[0];
    let (tree_ns, tree_t, _, tree_mem) = results[1];
    println!(
        "{:>7} {:>8} | {:>7.0}ns {:>9.0}ns {:>7.0}ns {:>7.0}ns | {:>7.0}ms {:>7.0}ms {:>7.0}ms | {:>6}K {:>6}K {:>6}M | {:>6.1} {:>6.0}",
        n,
        label,
        lin,
        int,
        jit_ns,
        tree_ns,
        check.as_secs_f64() * 1e3,
        jit_t.as_secs_f64() * 1e3,
        tree_t.as_secs_f64() * 1e3,
        code / 1024,
        tree_mem / 1024,
        rss_kib() / 1024,
        lin / tree_ns,
        int / tree_ns,
    );
}
