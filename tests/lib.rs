//! Helpers shared by fwc's integration tests.

use fwc_compiler::diag::{self, Severity};
use fwc_compiler::loader::DiskFiles;
use fwc_compiler::Compilation;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compiles a file given relative to the tests directory (so names in output are stable).
pub fn compile_rel(rel: &str) -> Compilation {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join(rel)).unwrap();
    // name the root by its path relative to tests/, and resolve includes from there
    let _cwd = CwdGuard::enter(dir);
    fwc_compiler::compile_source(rel, &text, &DiskFiles)
}

/// Compiles source text held in memory (includes resolve from the current directory).
pub fn compile_str(text: &str) -> Compilation {
    fwc_compiler::compile_source("input.fw", text, &DiskFiles)
}

/// All diagnostics rendered for a terminal without colour, as a UI snapshot holds them.
pub fn render_all(c: &Compilation) -> String {
    let mut out = String::new();
    let mut r = diag::HumanRenderer::new(&c.loaded.sm, false);
    for d in &c.diags {
        out.push_str(&r.render(d));
    }
    let errors = c
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = c.warning_count();
    out.push_str(&format!("= {errors} error(s), {warnings} warning(s)\n"));
    out
}

/// The codes of the diagnostics, in order.
pub fn codes(c: &Compilation) -> Vec<&'static str> {
    c.diags.iter().map(|d| d.code).collect()
}

/// Changes the working directory for the life of the guard (tests in one binary that use it
/// are serialised by the mutex).
pub struct CwdGuard {
    old: PathBuf,
    _lock: std::sync::MutexGuard<'static, ()>,
}

static CWD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl CwdGuard {
    pub fn enter(dir: &Path) -> CwdGuard {
        let lock = CWD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir).unwrap();
        CwdGuard { old, _lock: lock }
    }
}

impl Drop for CwdGuard {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.old);
    }
}

/// Runs a packet query (`fwc explain` syntax) through a compiled program.
pub fn query(c: &Compilation, q: &str) -> fwc_compiler::interp::Outcome {
    let mut loaded = fwc_compiler::loader::Loaded {
        sm: c.loaded.sm.clone(),
        files: c.loaded.files.clone(),
        diags: vec![],
        root: c.loaded.root,
    };
    let id = loaded.sm.add("<query>".into(), None, q.to_string());
    let pq = fwc_grammar::parse_packet_query(q, id).expect("query parses");
    let (path, pkt) = fwc_compiler::check::lower_query(&loaded, &pq).expect("query lowers");
    let p = &c.checked.as_ref().expect("program checks").program;
    fwc_compiler::interp::run(p, path, &pkt, &mut fwc_compiler::interp::FreshOracle).expect("runs")
}

/// Compiles text that must be free of errors.
pub fn program(text: &str) -> Compilation {
    let c = compile_str(text);
    assert!(!c.has_errors(), "unexpected errors: {:#?}", c.diags);
    c
}

/// The fate of a query, as a word.
pub fn fate(c: &Compilation, q: &str) -> &'static str {
    query(c, q).fate.name()
}
