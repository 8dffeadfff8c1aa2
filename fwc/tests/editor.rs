//! The VS Code package (`editors/vscode`) built as its README says: `npm ci`, `npm test`
//! (the TextMate grammar through VS Code's own tokenizer, and the extension's activation
//! with a stand-in editor), `npm run package` (vsce) — and the `.vsix` holds what VS Code
//! needs.

use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str]) {
    let o = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("npm runs (Node.js 20 or later)");
    assert!(
        o.status.success(),
        "npm {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_vscode_package_builds_tests_and_packages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../editors/vscode");
    npm(&dir, &["ci", "--no-audit", "--no-fund"]);
    npm(&dir, &["test"]);
    let vsix = dir.join("fwc.vsix");
    let _ = std::fs::remove_file(&vsix);
    npm(&dir, &["run", "package"]);
    let list = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
        ])
        .arg(&vsix)
        .output()
        .expect("python3 runs");
    let names = String::from_utf8_lossy(&list.stdout);
    for want in [
        "extension/package.json",
        "extension/extension.js",
        "extension/syntaxes/fw.tmLanguage.json",
        "extension/language-configuration.json",
        "extension/node_modules/vscode-languageclient/package.json",
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from the .vsix:\n{names}"
        );
    }
    assert!(
        !names.lines().any(|l| l.starts_with("extension/test/")),
        "tests are not shipped"
    );
}
