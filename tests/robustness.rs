//! Bad input gives diagnostics, never a panic: random token soups, truncated programs,
//! arbitrary bytes, and malformed packet queries.

use fwc_compiler::loader::MemFiles;
use fwc_tests::root;
use proptest::prelude::*;

/// Words besides the keywords (`fwc_grammar::lexer::KEYWORDS`): names, punctuation,
/// literals good and bad.
const VOCAB: &[&str] = &[
    "filter",
    "nat",
    "raw",
    "mangle",
    "tcp-reset",
    "echo-request",
    "new",
    "established",
    "lo",
    "eth0",
    "eth*",
    "x",
    "{",
    "}",
    "(",
    ")",
    "<",
    ">",
    ";",
    ",",
    ":",
    "/",
    "-",
    "->",
    "=>",
    "=",
    "!=",
    "$x",
    "$y",
    "10.0.0.1",
    "10.0.0.0/8",
    "10.0.0.0/40",
    "999.1.1.1",
    "fe80::1",
    "22",
    "0x10",
    "70000",
    "0.5",
    "\"s\"",
    "\"unterminated",
    "10/second",
    "#c\n",
    "@",
    "std/services.fw",
];

fn soup() -> impl Strategy<Value = String> {
    let vocab: Vec<&'static str> = fwc_grammar::lexer::KEYWORDS
        .iter()
        .chain(VOCAB)
        .copied()
        .collect();
    prop::collection::vec(prop::sample::select(vocab), 0..60).prop_map(|v| v.join(" "))
}

fn compile(text: &str) {
    let files = MemFiles::default();
    let c = fwc_compiler::compile_source("soup.fw", text, &files);
    // render every diagnostic both ways: rendering must not panic either
    for d in &c.diags {
        let _ = fwc_compiler::diag::render_human(d, &c.loaded.sm, false);
        let _ = fwc_compiler::diag::render_json(d, &c.loaded.sm);
    }
    let _ = fwc_compiler::diag::render_sarif(&c.diags, &c.loaded.sm, "0");
    // `fwc fmt` neither panics nor changes its own output
    if let Ok(f) = fwc_compiler::fmt::format(text) {
        assert_eq!(
            fwc_compiler::fmt::format(&f).as_deref(),
            Ok(f.as_str()),
            "{text:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn token_soups_never_panic(s in soup()) {
        compile(&s);
    }

    #[test]
    fn soups_inside_a_chain_never_panic(s in soup()) {
        compile(&format!("table filter {{ chain input policy drop {{ {s} ; }} }}"));
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        compile(&s);
    }

    #[test]
    fn packet_queries_never_panic(s in soup()) {
        let _ = fwc_grammar::parse_packet_query(&s, fwc_grammar::ast::FileId(0));
    }
}

fn sources() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["examples", "tests/ui", "tests/ir", "stdlib"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "fw") {
                out.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn every_truncation_of_the_examples_never_panics() {
    let srcs = sources();
    assert!(srcs.len() > 30);
    let mut n = 0;
    for s in &srcs {
        // every cut point in the first 400 bytes, then every 7th
        let cuts = (0..s.len())
            .filter(|i| *i < 400 || i % 7 == 0)
            .filter(|i| s.is_char_boundary(*i));
        for i in cuts {
            compile(&s[..i]);
            n += 1;
        }
    }
    assert!(n > 1000);
}

#[test]
fn spliced_programs_never_panic() {
    // the first half of one file followed by the second half of another
    let srcs = sources();
    for (i, a) in srcs.iter().enumerate() {
        let b = &srcs[(i * 7 + 3) % srcs.len()];
        let (ca, cb) = (a.len() / 2, b.len() / 3);
        if a.is_char_boundary(ca) && b.is_char_boundary(cb) {
            compile(&format!("{}{}", &a[..ca], &b[cb..]));
        }
    }
}

#[test]
fn deeply_nested_sets_are_an_error_not_a_stack_overflow() {
    let src = format!("define x = {}1{};", "{".repeat(2000), "}".repeat(2000));
    let files = MemFiles::default();
    let c = fwc_compiler::compile_source("deep.fw", &src, &files);
    assert_eq!(fwc_tests::codes(&c), vec!["FW0063"]);
}
