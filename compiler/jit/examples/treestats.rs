//! Prints decision-forest statistics for generated rule sets and times the forest's lookup
//! alone (no packet parsing, no driver; the Rust walk and the compiled one) over the classify
//! bench's trace: `cargo run --release -p fwc-jit --example treestats -- 10000 acl`.
//! With `FWC_CANDIDATES=1` it also prints every candidate forest `Forest::from_boxes`
//! chose from: its estimated cost, memory, compiled lookup time and work per lookup.
use fwc_compiler::gen::{ruleset, Style};
use fwc_jit::dtree::{
    trace, Forest, RuleBox, Separation, WorkCount, CUT_BITS, ESTIMATE_SAMPLE, ESTIMATE_SEED,
};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|x| x.parse().ok()).unwrap_or(10_000);
    let style = match a.get(2).map(String::as_str) {
        Some("fw") => Style::Fw,
        Some("ipc") => Style::Ipc,
        _ => Style::Acl,
    };
    // a ClassBench rule file instead, given by its path
    let file = a.get(1).filter(|f| std::path::Path::new(f).is_file());
    let src = match file {
        Some(f) => fwc_compiler::gen::from_classbench(&std::fs::read_to_string(f).unwrap()).0,
        None => ruleset(style, n, 7),
    };
    let label = file.map_or(format!("{n} {style:?}"), |f| f.to_string());
    let c = fwc_compiler::compile_source("g.fw", &src, &fwc_compiler::loader::MemFiles::default());
    let p = &c.checked.as_ref().unwrap().program;
    let chain = &p.chains[0];
    let t0 = std::time::Instant::now();
    let t = Forest::build(&chain.rules);
    println!(
        "{label}: {:?} separation, cuts of up to {} bits, {:?} in {:?}, {} KiB",
        t.separation,
        t.cut_bits,
        t.stats(),
        t0.elapsed(),
        t.memory() / 1024
    );
    // the classify bench's trace
    let boxes: Vec<RuleBox> = chain.rules.iter().filter_map(RuleBox::of).collect();
    let points = fwc_jit::dtree::trace(&boxes, 4096, 99);
    // ns per lookup over the trace, for about a second
    let time = |lookup: &dyn Fn(&[u32; 5], bool) -> u32| {
        let start = std::time::Instant::now();
        let mut count = 0u64;
        while start.elapsed().as_millis() < 1000 {
            for (v, has_ports) in &points {
                std::hint::black_box(lookup(std::hint::black_box(v), *has_ports));
            }
            count += points.len() as u64;
        }
        start.elapsed().as_nanos() as f64 / count as f64
    };
    let rust = time(&|v, p| t.lookup_tagged(v, p));
    println!("forest lookup alone: {rust:.1} ns");
    // the same walk as the classifier compiles it
    let c = fwc_jit::CompiledLookup::new(Forest::build(&chain.rules)).unwrap();
    let compiled = time(&|v, p| c.lookup(v, p));
    println!("compiled lookup alone: {compiled:.1} ns");
    let work = |f: &Forest| {
        let mut w = WorkCount::default();
        for (v, has_ports) in &points {
            f.lookup_counting(v, *has_ports, &mut w);
        }
        let k = points.len() as f64;
        format!(
            "{:.2} trees walked, {:.2} node words loaded, {:.2} leaf boxes tested",
            w.trees as f64 / k,
            w.nodes as f64 / k,
            w.leaf_boxes as f64 / k
        )
    };
    println!("per lookup: {}", work(&t));
    if std::env::var_os("FWC_CANDIDATES").is_some() {
        // the estimate's own sample (as `Forest::from_boxes` draws it)
        let sample = trace(&boxes, ESTIMATE_SAMPLE, ESTIMATE_SEED);
        for sep in [Separation::ThreeWay, Separation::Addresses] {
            for bits in CUT_BITS {
                let f = Forest::separated(&boxes, sep, bits);
                let (est, kib, per) = (f.estimated_cost(&sample), f.memory() / 1024, work(&f));
                let c = fwc_jit::CompiledLookup::new(f).unwrap();
                let ns = time(&|v, p| c.lookup(v, p));
                println!("candidate {sep:?}/{bits}: estimate {est:.1}, {kib} KiB, compiled {ns:.1} ns, {per}");
            }
        }
    }
}
