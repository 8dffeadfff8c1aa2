//! The book stays true: every diagnostic code has an error-index page whose erroneous example
//! produces that code and whose fixed example does not; every other `fw` example in the book
//! checks without errors.

use fwc_compiler::diag::{Severity, CODES};
use fwc_compiler::loader::MemFiles;
use fwc_tests::root;

/// The ```fw blocks of a Markdown file, in order.
fn fw_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```fw") => cur = Some(String::new()),
            Some(b) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn no_check(block: &str) -> bool {
    block
        .lines()
        .next()
        .is_some_and(|l| l.trim() == "# fwc-book: no-check")
}

fn compile(src: &str) -> fwc_compiler::Compilation {
    // std/ includes resolve from the embedded stdlib; other includes are missing on purpose
    fwc_compiler::compile_source("example.fw", src, &MemFiles::default())
}

#[test]
fn every_code_has_a_page_with_a_wrong_and_a_fixed_example() {
    let dir = root().join("book/src/errors");
    let index = std::fs::read_to_string(dir.join("index.md")).unwrap();
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).unwrap();
    for c in CODES {
        let page = dir.join(format!("{}.md", c.code));
        let md = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("no book page for {}", c.code));
        assert!(
            md.starts_with(&format!("# {}: {}", c.code, c.title)),
            "{} page title",
            c.code
        );
        assert!(
            index.contains(c.code),
            "{} missing from the error index",
            c.code
        );
        assert!(
            summary.contains(&format!("errors/{}.md", c.code)),
            "{} missing from SUMMARY.md",
            c.code
        );
        let blocks = fw_blocks(&md);
        assert!(
            blocks.len() >= 2,
            "{}: needs an erroneous and a fixed example",
            c.code
        );
        let (wrong, fixed) = (&blocks[0], &blocks[1]);
        if no_check(wrong) {
            assert!(
                ["FW0011", "FW0071", "FW0072", "FW0900"].contains(&c.code),
                "{} may not skip its example check",
                c.code
            );
            continue;
        }
        let w = compile(wrong);
        assert!(
            w.diags.iter().any(|d| d.code == c.code),
            "{}: the erroneous example gives {:?}",
            c.code,
            fwc_tests::codes(&w)
        );
        let f = compile(fixed);
        assert!(
            !f.diags
                .iter()
                .any(|d| d.severity == Severity::Error || d.code == c.code),
            "{}: the fixed example gives {:?}",
            c.code,
            fwc_tests::codes(&f)
        );
    }
}

#[test]
fn chapter_examples_check_without_errors() {
    let mut n = 0;
    let mut stack = vec![root().join("book/src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|f| f != "errors") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "md") {
                continue;
            }
            let md = std::fs::read_to_string(&p).unwrap();
            for b in fw_blocks(&md) {
                if no_check(&b) {
                    continue;
                }
                let c = compile(&b);
                let errors: Vec<_> = c
                    .diags
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.code)
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{}: example fails with {errors:?}:\n{b}",
                    p.display()
                );
                n += 1;
            }
        }
    }
    assert!(n >= 10, "only {n} examples found in the book");
}

#[test]
fn readme_examples_check_and_their_tests_pass() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = fw_blocks(&md);
    assert!(!blocks.is_empty());
    for b in blocks {
        let c = compile(&b);
        assert!(
            c.diags.is_empty(),
            "README example: {:?}",
            fwc_tests::codes(&c)
        );
        let results = fwc_compiler::testrun::run_tests(c.checked.as_ref().unwrap());
        assert!(!results.is_empty() && results.iter().all(|r| r.passed));
    }
}

#[test]
fn readme_starts_with_the_two_commands_and_ci_runs_the_test_command() {
    let md = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take(2)
        .collect();
    assert!(
        first[0].starts_with("cargo run -p fwc -- test examples/"),
        "{first:?}"
    );
    let test_cmd = first[1].split('#').next().unwrap().trim();
    assert_eq!(test_cmd, "cargo test --workspace");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run must run `{test_cmd}`"
    );
}
