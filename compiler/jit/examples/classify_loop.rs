//! Classifies a trace in a loop, for profilers: `cargo run --release -p fwc-jit --example
//! classify_loop -- 10000 acl 5` (rules, style, seconds), then e.g.
//! `perf record -e cpu-clock -g target/release/examples/classify_loop 10000 acl 5`.
//!
//! `FWC_DISTINCT=K` cycles through the trace's first K packets only (K = 1: caches hot and
//! branches learnt, the cost of the instructions alone); `FWC_PASSES=P` classifies the trace
//! P times instead of for some seconds, so that instruction counts (`valgrind
//! --tool=cachegrind --branch-sim=yes`) can be taken as the difference of two runs;
//! `FWC_MIN_RUN=R` sets the shortest run that gets a decision forest.
use fwc_compiler::gen::{ruleset, Style};
use fwc_compiler::interp::{FreshOracle, Meta, Packet, PathKind};
use fwc_jit::{dtree::RuleBox, JitOutcome, JitProgram, NoHooks, Options};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|x| x.parse().ok()).unwrap_or(10_000);
    let style = match a.get(2).map(String::as_str) {
        Some("fw") => Style::Fw,
        Some("ipc") => Style::Ipc,
        _ => Style::Acl,
    };
    let secs: u64 = a.get(3).and_then(|x| x.parse().ok()).unwrap_or(5);
    // a ClassBench rule file instead, given by its path
    let src = match a.get(1).filter(|f| std::path::Path::new(f).is_file()) {
        Some(f) => fwc_compiler::gen::from_classbench(&std::fs::read_to_string(f).unwrap()).0,
        None => ruleset(style, n, 7),
    };
    let c = fwc_compiler::compile_source("g.fw", &src, &fwc_compiler::loader::MemFiles::default());
    let p = &c.checked.as_ref().unwrap().program;
    let boxes: Vec<RuleBox> = p.chains[0].rules.iter().filter_map(RuleBox::of).collect();
    // the classify bench's trace
    let raws: Vec<Vec<u8>> = fwc_jit::dtree::trace_packets(&boxes, 4096, 99)
        .iter()
        .map(Packet::to_raw)
        .collect();
    let env = |k: &str| std::env::var(k).ok().and_then(|d| d.parse::<u64>().ok());
    let raws: Vec<Vec<u8>> = match env("FWC_DISTINCT") {
        Some(d) => raws
            .iter()
            .take(d as usize)
            .cycle()
            .take(4096)
            .cloned()
            .collect(),
        None => raws,
    };
    let passes = env("FWC_PASSES");
    let defaults = Options::default();
    let opts = Options {
        min_run: env("FWC_MIN_RUN").map_or(defaults.min_run, |m| m as usize),
        ..defaults
    };
    let mut jit = JitProgram::compile(p, opts).unwrap();
    eprintln!(
        "{} rules, {} in decision trees, {} KiB of code",
        p.chains[0].rules.len(),
        jit.tree_rules,
        jit.code_size / 1024
    );
    let meta = Meta {
        ct: 1,
        ..Meta::default()
    };
    let start = std::time::Instant::now();
    let mut count = 0u64;
    let mut out = JitOutcome::default();
    while passes.map_or(start.elapsed().as_secs() < secs, |p| {
        count < p * raws.len() as u64
    }) {
        for raw in &raws {
            jit.classify_into(
                PathKind::Forward,
                raw,
                &meta,
                &mut FreshOracle,
                &mut NoHooks,
                &mut out,
            )
            .unwrap();
            std::hint::black_box(&out);
        }
        count += raws.len() as u64;
    }
    println!(
        "{:.1} ns/packet",
        start.elapsed().as_nanos() as f64 / count.max(1) as f64
    );
}
