//! Reads the root file and everything it includes, parses each once, and reports include
//! errors (missing file, cycle). `std/...` paths come from the stdlib embedded in the binary,
//! so an installed `fwc` works from any directory.

use crate::diag::Diagnostic;
use crate::source::SourceMap;
use fwc_grammar::ast::{self, FileId, Item, Span};
use fwc_grammar::{parse_file, SyntaxError, SyntaxErrorKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The standard library, embedded at build time.
pub const STDLIB: &[(&str, &str)] = &[
    ("std/services.fw", include_str!("../../stdlib/services.fw")),
    ("std/bogons.fw", include_str!("../../stdlib/bogons.fw")),
    ("std/chains.fw", include_str!("../../stdlib/chains.fw")),
];

/// Where source text comes from: the disk, or memory (tests, the language server).
pub trait FileProvider {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// A stable identity for cycle detection and include-once.
    fn canonical(&self, path: &Path) -> PathBuf;
}

pub struct DiskFiles;

impl FileProvider for DiskFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// In-memory files keyed by path, for tests.
#[derive(Default)]
pub struct MemFiles(pub HashMap<PathBuf, String>);

impl FileProvider for MemFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
    }
    fn canonical(&self, path: &Path) -> PathBuf {
        normalize(path)
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            o => out.push(o),
        }
    }
    out
}

pub struct Loaded {
    pub sm: SourceMap,
    pub files: Vec<(FileId, ast::File)>,
    pub diags: Vec<Diagnostic>,
    pub root: Option<FileId>,
}

/// Converts a parser error into a diagnostic.
pub fn syntax_diagnostic(e: &SyntaxError, file: FileId, sm: &SourceMap) -> Diagnostic {
    let span = Span::new(file, e.start, e.end);
    match &e.kind {
        SyntaxErrorKind::Lex(le) => {
            Diagnostic::error("FW0003", le.to_string()).primary(span, "not a valid token")
        }
        SyntaxErrorKind::MissingSemi { before } => {
            let next = Span::new(file, *before, *before);
            let _ = next;
            Diagnostic::error("FW0002", "expected `;`")
                .primary(span, "add `;` here")
                .note("every rule and every item that is not a `{ }` block ends with `;`")
        }
        SyntaxErrorKind::UnexpectedEof { expected } => {
            let d = Diagnostic::error("FW0004", "unexpected end of file")
                .primary(span, "the file ends here");
            with_expected(d, expected)
        }
        SyntaxErrorKind::Unexpected {
            found, expected, ..
        } => {
            let text = sm.snippet(span);
            let mut d = Diagnostic::error("FW0001", format!("unexpected {found}"))
                .primary(span, expected_label(expected));
            if text == "ip6" || found.starts_with("IPv6") {
                d = d.note("IPv6 is not supported yet (FW0039)");
            }
            d
        }
    }
}

fn expected_label(expected: &[String]) -> String {
    match expected.len() {
        0 => "nothing more was expected here".into(),
        1 => format!("expected {}", expected[0]),
        n if n <= 8 => format!(
            "expected {} or {}",
            expected[..n - 1].join(", "),
            expected[n - 1]
        ),
        _ => format!(
            "expected one of {}, ... ({} possibilities)",
            expected[..6].join(", "),
            expected.len()
        ),
    }
}

fn with_expected(d: Diagnostic, expected: &[String]) -> Diagnostic {
    if expected.is_empty() {
        d
    } else {
        d.note(expected_label(expected))
    }
}

struct Ctx<'p> {
    provider: &'p dyn FileProvider,
    sm: SourceMap,
    files: Vec<(FileId, ast::File)>,
    diags: Vec<Diagnostic>,
    /// canonical path (or `std/...`) -> file id, for include-once
    seen: HashMap<PathBuf, FileId>,
    /// the include stack, for cycle detection: (key, display name, the include that led here)
    stack: Vec<(PathBuf, String, Option<Span>)>,
}

impl Ctx<'_> {
    fn load(
        &mut self,
        key: PathBuf,
        name: String,
        disk: Option<PathBuf>,
        text: String,
        via: Option<Span>,
    ) -> FileId {
        let id = self.sm.add(name, disk.clone(), text);
        self.seen.insert(key.clone(), id);
        let src = self.sm.get(id).text.clone();
        let (file, errors) = parse_file(&src, id);
        for e in &errors {
            let d = syntax_diagnostic(e, id, &self.sm);
            self.diags.push(d);
        }
        let shown = self.sm.get(id).name.clone();
        self.stack.push((key, shown, via));
        for item in &file.items {
            if let Item::Include(inc) = item {
                self.include(inc, disk.as_deref());
            }
        }
        self.stack.pop();
        self.files.push((id, file));
        id
    }

    fn include(&mut self, inc: &ast::IncludeItem, from: Option<&Path>) {
        let (key, name, disk, text) = if let Some(rest) = inc.path.strip_prefix("std/") {
            let _ = rest;
            match STDLIB.iter().find(|(n, _)| *n == inc.path) {
                Some((n, t)) => (PathBuf::from(n), n.to_string(), None, Some(t.to_string())),
                None => {
                    let avail: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
                    self.diags.push(
                        Diagnostic::error("FW0010", format!("no stdlib file `{}`", inc.path))
                            .primary(inc.path_span, "not in the standard library")
                            .note(format!("the stdlib has: {}", avail.join(", "))),
                    );
                    return;
                }
            }
        } else {
            let base = from
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let path = base.join(&inc.path);
            let key = self.provider.canonical(&path);
            (key, path.display().to_string(), Some(path), None)
        };
        if let Some(pos) = self.stack.iter().position(|(k, _, _)| *k == key) {
            let mut d =
                Diagnostic::error("FW0011", format!("include cycle through `{}`", inc.path))
                    .primary(inc.path_span, "this include closes the cycle");
            for (_, _, via) in self.stack[pos + 1..].iter() {
                if let Some(s) = via {
                    d = d.secondary(*s, "included from here");
                }
            }
            let chain: Vec<String> = self.stack[pos..]
                .iter()
                .map(|(_, n, _)| n.clone())
                .chain(std::iter::once(self.stack[pos].1.clone()))
                .collect();
            d = d.note(format!("cycle: {}", chain.join(" -> ")));
            self.diags.push(d);
            return;
        }
        if self.seen.contains_key(&key) {
            return; // included once already
        }
        let text = match text {
            Some(t) => t,
            None => match self.provider.read(disk.as_deref().unwrap_or(Path::new(""))) {
                Ok(t) => t,
                Err(e) => {
                    self.diags.push(
                        Diagnostic::error("FW0010", format!("cannot read included file `{}`", inc.path))
                            .primary(inc.path_span, format!("{name}: {}", io_reason(&e)))
                            .note("include paths are relative to the including file; `std/...` names the standard library"),
                    );
                    return;
                }
            },
        };
        self.load(key, name, disk, text, Some(inc.span));
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Loads `root` and its includes. An unreadable root is reported as an `Err` message.
pub fn load(root: &Path, provider: &dyn FileProvider) -> Result<Loaded, String> {
    let text = provider
        .read(root)
        .map_err(|e| format!("cannot read `{}`: {}", root.display(), io_reason(&e)))?;
    Ok(load_text(root, text, provider))
}

/// Loads a root file whose text is already in hand (the language server, tests).
pub fn load_text(root: &Path, text: String, provider: &dyn FileProvider) -> Loaded {
    let mut ctx = Ctx {
        provider,
        sm: SourceMap::new(),
        files: vec![],
        diags: vec![],
        seen: HashMap::new(),
        stack: vec![],
    };
    let key = provider.canonical(root);
    let id = ctx.load(
        key,
        root.display().to_string(),
        Some(root.to_path_buf()),
        text,
        None,
    );
    Loaded {
        sm: ctx.sm,
        files: ctx.files,
        diags: ctx.diags,
        root: Some(id),
    }
}
