//! Prints decision-tree statistics for generated rule sets: `cargo run --release -p fwc-jit
//! --example treestats -- 10000 acl`.
use fwc_compiler::gen::{ruleset, Style};
use fwc_jit::dtree::Forest;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|x| x.parse().ok()).unwrap_or(10_000);
    let style = match a.get(2).map(String::as_str) {
        Some("fw") => Style::Fw,
        Some("ipc") => Style::Ipc,
        _ => Style::Acl,
    };
    let src = ruleset(style, n, 7);
    let c = fwc_compiler::compile_source("g.fw", &src, &fwc_compiler::loader::MemFiles::default());
    let p = &c.checked.as_ref().unwrap().program;
    let chain = &p.chains[0];
    let t0 = std::time::Instant::now();
    let t = Forest::build(&chain.rules);
    println!(
        "{n} {style:?}: {:?} in {:?}, {} KiB",
        t.stats(),
        t0.elapsed(),
        t.memory() / 1024
    );
}
