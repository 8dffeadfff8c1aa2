//! The fw compiler: front end, typed IR, analyses and the reference interpreter.
//!
//! Pipeline (see ARCHITECTURE.md): [`loader`] (files, includes, parsing) -> [`check`] (names,
//! types, legality, lowering) -> [`ir`] (verified) -> [`analysis`] (warnings) -> back ends:
//! [`interp`] here, the artefact ([`artefact`]) for the runtime.

pub mod analysis;
pub mod artefact;
pub mod check;
pub mod diag;
pub mod edit;
pub mod export;
pub mod fmt;
pub mod gen;
pub mod import;
pub mod interp;
pub mod ir;
pub mod loader;
pub mod opt;
pub mod prove;
pub mod source;
pub mod testrun;
pub mod types;

use diag::{Diagnostic, Severity};
use loader::{FileProvider, Loaded};
use std::path::Path;

/// Everything one compilation produced.
pub struct Compilation {
    pub loaded: Loaded,
    pub diags: Vec<Diagnostic>,
    pub checked: Option<check::Checked>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
    pub fn warning_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }
}

/// Checks an already loaded program: types, IR, verification, rule warnings.
pub fn compile_loaded(mut loaded: Loaded) -> Compilation {
    // the checker sees the loader's errors (it lowers nothing and lints nothing after one)
    let (checked, more) = check::check(&loaded);
    let mut diags = std::mem::take(&mut loaded.diags);
    diags.extend(more);
    if let Some(c) = &checked {
        let errs = ir::verify(&c.program);
        if !errs.is_empty() {
            diags.push(
                Diagnostic::error(
                    "FW0900",
                    "internal compiler error: the IR failed verification",
                )
                .note(errs.join("\n"))
                .help("please report this with the input that caused it"),
            );
        }
        diags.extend(analysis::rule_warnings(&c.program));
        let several = analysis::union_shadowing(&c.program);
        // a rule no packet reaches is not also redundant, nor does its order matter
        let dead: Vec<_> = several.iter().filter_map(|d| d.primary_span()).collect();
        diags
            .retain(|d| d.code != "FW0102" || !d.primary_span().is_some_and(|s| dead.contains(&s)));
        diags.extend(several);
        diags.extend(analysis::chain_lints(&c.program).into_iter().filter(|d| {
            d.code != "FW0103" || !d.primary_span().is_some_and(|s| dead.contains(&s))
        }));
    }
    diag::apply_allow_comments(&mut diags, &loaded.sm);
    diag::sort(&mut diags);
    let failed = diags.iter().any(|d| d.severity == Severity::Error);
    Compilation {
        loaded,
        diags,
        checked: if failed { None } else { checked },
    }
}

/// Loads and checks a file from disk.
pub fn compile_path(path: &Path) -> Result<Compilation, String> {
    compile_with(path, &loader::DiskFiles)
}

pub fn compile_with(path: &Path, provider: &dyn FileProvider) -> Result<Compilation, String> {
    Ok(compile_loaded(loader::load(path, provider)?))
}

/// Checks source text held in memory (includes resolved against `provider`).
pub fn compile_source(name: &str, text: &str, provider: &dyn FileProvider) -> Compilation {
    compile_loaded(loader::load_text(
        Path::new(name),
        text.to_string(),
        provider,
    ))
}
