//! `fwc fmt` on every program the project has: the examples, the stdlib, the UI test inputs
//! and the IR test inputs. Formatting is idempotent, keeps every comment, and changes no
//! program's meaning (the same IR, the same tests and asserts); a file that does not parse
//! is refused, untouched.

use fwc_compiler::fmt::format;
use fwc_compiler::loader::MemFiles;
use fwc_tests::root;
use std::path::PathBuf;

fn inputs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["examples", "stdlib", "tests/ui", "tests/ui/aux", "tests/ir"] {
        let Ok(rd) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "fw") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The IR without source locations (formatting moves lines).
fn meaning(name: &str, src: &str) -> Option<(String, usize, usize)> {
    let c = fwc_compiler::compile_source(name, src, &MemFiles::default());
    let ch = c.checked?;
    let ir = fwc_compiler::ir::print(&ch.program);
    let ir: Vec<&str> = ir
        .lines()
        .map(|l| l.split("  # ").next().unwrap_or(l))
        .collect();
    let lines: usize = ch.asserts.iter().map(|a| a.lines.len()).sum();
    Some((ir.join("\n"), ch.tests.len(), lines))
}

/// The comments of a text, in order, as written.
fn comments(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in src.lines() {
        // a `#` outside a string starts a comment
        let mut in_str = false;
        let mut prev = ' ';
        for (i, c) in line.char_indices() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '#' if !in_str => {
                    out.push(line[i..].trim_end().to_string());
                    break;
                }
                _ => {}
            }
            prev = c;
        }
    }
    out
}

#[test]
fn every_program_formats_idempotently_keeping_comments_and_meaning() {
    let files = inputs();
    assert!(files.len() > 40, "{files:?}");
    let (mut formatted, mut refused) = (0, 0);
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let parses = fwc_grammar::parse_file(&src, fwc_grammar::ast::FileId(0))
            .1
            .is_empty();
        match format(&src) {
            Err(_) => {
                assert!(!parses, "{name}: parses, but fmt refused it");
                refused += 1;
            }
            Ok(out) => {
                assert!(parses, "{name}: does not parse, but fmt formatted it");
                formatted += 1;
                assert_eq!(format(&out).unwrap(), out, "{name}: not idempotent");
                assert_eq!(comments(&out), comments(&src), "{name}: comments");
                // includes resolve relative to the file: compile only self-contained ones
                if !src.contains("include \"") || src.contains("include \"std/") {
                    assert_eq!(
                        meaning(&name, &out),
                        meaning(&name, &src),
                        "{name}: meaning changed\n{out}"
                    );
                }
                assert!(
                    !out.contains('\t') && !out.lines().any(|l| l.ends_with(' ')),
                    "{name}: layout"
                );
            }
        }
    }
    assert!(
        formatted > 20 && refused > 3,
        "{formatted} formatted, {refused} refused"
    );
}
