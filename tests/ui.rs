//! UI tests, rustc style: each `ui/NAME.fw` beside its expected diagnostics `ui/NAME.snap`.
//! Update with `INSTA_UPDATE=always cargo test -p fwc-tests --test ui` and review the diff.

use fwc_compiler::diag::CODES;
use fwc_tests::{compile_rel, render_all};
use std::collections::BTreeSet;

#[test]
fn ui() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("ui");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "fw"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "UI inputs went missing: {}", files.len());
    let mut seen = BTreeSet::new();
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let c = compile_rel(&format!("ui/{stem}.fw"));
        for d in &c.diags {
            seen.insert(d.code);
        }
        assert!(!c.diags.is_empty(), "ui/{stem}.fw produced no diagnostic");
        settings.set_input_file(&f);
        settings.bind(|| insta::assert_snapshot!(stem.clone(), render_all(&c)));
    }
    // every code a single file can show has a UI test
    let untestable = ["FW0071", "FW0072", "FW0900"];
    let missing: Vec<_> = CODES
        .iter()
        .map(|c| c.code)
        .filter(|c| !seen.contains(c) && !untestable.contains(c))
        .collect();
    assert!(missing.is_empty(), "codes without a UI test: {missing:?}");
}
