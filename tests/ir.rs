//! IR snapshots: each `ir/NAME.fw` beside `ir/NAME.snap`, the output of `--emit ir`.

use fwc_compiler::ir;
use fwc_tests::compile_rel;

#[test]
fn ir_snapshots() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("ir");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ir");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "fw"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let c = compile_rel(&format!("ir/{stem}.fw"));
        assert!(!c.has_errors(), "ir/{stem}.fw: {:?}", c.diags);
        let p = &c.checked.as_ref().unwrap().program;
        assert!(ir::verify(p).is_empty(), "{:?}", ir::verify(p));
        settings.set_input_file(&f);
        settings.bind(|| insta::assert_snapshot!(stem.clone(), ir::print(p)));
    }
}

#[test]
fn one_instance_per_argument_list() {
    let c = compile_rel("ir/instances.fw");
    let p = &c.checked.unwrap().program;
    let inst: Vec<_> = p.chains.iter().filter(|c| c.name == "allow-from").collect();
    assert_eq!(inst.len(), 3, "admins/22, ops/22, 10.0.0.0/8/443");
}

#[test]
fn hooks_in_priority_order() {
    let c = compile_rel("ir/hooks_and_nat.fw");
    let p = &c.checked.unwrap().program;
    let pre: Vec<_> = p.hooks[ir::Hook::Prerouting.index()]
        .iter()
        .map(|e| e.table)
        .collect();
    assert_eq!(pre, vec![ir::Table::Raw, ir::Table::Mangle, ir::Table::Nat]);
    let input: Vec<_> = p.hooks[ir::Hook::Input.index()]
        .iter()
        .map(|e| (e.table, e.priority))
        .collect();
    assert_eq!(
        input,
        vec![
            (ir::Table::Filter, 0),
            (ir::Table::Security, 50),
            (ir::Table::Nat, 100)
        ]
    );
}
