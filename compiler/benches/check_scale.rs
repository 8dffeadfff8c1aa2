//! How `fwc check` scales: load + parse + check + rule analysis of generated ClassBench-style
//! programs at 1K, 10K and 100K rules. Run with `cargo bench -p fwc-compiler --bench
//! check_scale` (release profile); prints one table, medians of 3 runs.
//!
//! Target (issue 2): 100K rules checked in under 3 s on the project's 2-core machine.
//! With `FWC_GEN_DIR=DIR` the generated programs are also written to DIR (as
//! `STYLE_RULES.fw`), to time the `fwc check` binary on them.

use fwc_compiler::gen::{ruleset, Style};
use fwc_compiler::loader::MemFiles;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!(
        "{:>8} {:>6} {:>10} {:>12} {:>12} {:>10}",
        "rules", "style", "source", "check", "per rule", "warnings"
    );
    for &n in sizes {
        for style in [Style::Acl, Style::Fw, Style::Ipc] {
            let src = ruleset(style, n, 42);
            if let Some(dir) = std::env::var_os("FWC_GEN_DIR") {
                // keep the inputs, to time `fwc check` on them end to end
                let name = format!("{}_{n}.fw", format!("{style:?}").to_lowercase());
                std::fs::write(std::path::Path::new(&dir).join(name), &src).expect("write");
            }
            let files = MemFiles::default();
            let mut times = Vec::new();
            let mut warnings = 0;
            for _ in 0..3 {
                let t = Instant::now();
                let c = fwc_compiler::compile_source("bench.fw", &src, &files);
                times.push(t.elapsed());
                assert!(!c.has_errors(), "generated program has errors");
                assert_eq!(c.checked.as_ref().unwrap().program.rule_count(), n);
                warnings = c.warning_count();
            }
            let m = median(times);
            println!(
                "{:>8} {:>6} {:>9}K {:>10.1}ms {:>10.2}us {:>10}",
                n,
                format!("{style:?}").to_lowercase(),
                src.len() / 1024,
                m.as_secs_f64() * 1e3,
                m.as_secs_f64() * 1e6 / n as f64,
                warnings
            );
        }
    }
}
