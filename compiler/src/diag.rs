//! Diagnostics as data, and their renderers.
//!
//! A [`Diagnostic`] is a code, a severity, a message, labelled spans, notes and help. It knows
//! nothing about terminals: [`render_human`] draws it with ariadne, [`render_json`] writes one
//! JSON object per diagnostic. Every code is listed in [`CODES`] and documented in the book's
//! error index (`book/src/errors/FWxxxx.md`); a test keeps the two in step.

use crate::source::SourceMap;
use fwc_grammar::ast::Span;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Vec<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        debug_assert!(code_info(code).is_some(), "undocumented code {code}");
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: vec![],
            notes: vec![],
            help: vec![],
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    /// A note-level diagnostic: worth knowing, not a problem (a lint that never fails a
    /// build unless denied).
    pub fn info(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(code, message)
        }
    }

    /// The primary label: where the problem is.
    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// A secondary label: context that explains the problem.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    /// The span of the first primary label, if any.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels
            .iter()
            .find(|l| l.primary)
            .or(self.labels.first())
            .map(|l| l.span)
    }
}

/// One entry of the error index.
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    pub code: &'static str,
    pub severity: Severity,
    pub title: &'static str,
}

macro_rules! codes {
    ($($code:literal $sev:ident $title:literal;)*) => {
        /// Every diagnostic code fwc can emit, with its default severity and a one-line title.
        pub const CODES: &[CodeInfo] = &[
            $(CodeInfo { code: $code, severity: Severity::$sev, title: $title },)*
        ];
    };
}

codes! {
    "FW0001" Error "syntax error";
    "FW0002" Error "missing `;`";
    "FW0003" Error "invalid token";
    "FW0004" Error "unexpected end of file";
    "FW0010" Error "included file not found";
    "FW0011" Error "include cycle";
    "FW0020" Error "unknown variable";
    "FW0021" Error "unknown chain";
    "FW0022" Error "duplicate definition";
    "FW0023" Error "unknown table";
    "FW0024" Error "table not allowed on this hook";
    "FW0025" Error "unknown hook";
    "FW0026" Error "base chain and subchain forms mixed";
    "FW0027" Error "define refers to itself";
    "FW0028" Error "unknown type";
    "FW0030" Error "mismatched types";
    "FW0031" Error "port out of range";
    "FW0032" Error "prefix length out of range";
    "FW0033" Error "probability outside 0..1";
    "FW0034" Error "empty set";
    "FW0035" Error "set mixes element types";
    "FW0036" Error "port without a TCP/UDP protocol";
    "FW0037" Error "conflicting protocols in one rule";
    "FW0038" Error "unknown value";
    "FW0039" Error "IPv6 is not supported yet";
    "FW0040" Error "range bounds reversed";
    "FW0041" Error "integer out of range";
    "FW0050" Error "wrong number of arguments";
    "FW0051" Error "argument of the wrong type";
    "FW0052" Error "call cycle between subchains";
    "FW0060" Error "statement not allowed here";
    "FW0061" Warning "statement after a terminating statement";
    "FW0062" Error "overlapping verdict map keys";
    "FW0063" Error "nested set";
    "FW0070" Error "invalid test line";
    "FW0071" Error "assert does not hold";
    "FW0072" Error "assert could not be proven";
    "FW0080" Error "invalid service";
    "FW0100" Warning "unreachable rule";
    "FW0101" Warning "shadowed rule";
    "FW0102" Warning "redundant rule";
    "FW0103" Note "overlapping rules with different verdicts";
    "FW0104" Warning "chain accepts every packet";
    "FW0105" Warning "unused define";
    "FW0106" Warning "unused chain";
    "FW0107" Warning "empty base chain with policy accept";
    "FW0900" Error "internal compiler error";
}

/// Lint levels from the command line: `--deny CODE` makes a lint an error, `--allow CODE`
/// silences it, `--deny warnings` makes every warning an error.
#[derive(Debug, Clone, Default)]
pub struct Levels {
    pub deny: Vec<String>,
    pub allow: Vec<String>,
}

impl Levels {
    /// Every code named must be a lint (a warning or a note); `warnings` may be denied.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, codes) in [("--deny", &self.deny), ("--allow", &self.allow)] {
            for c in codes {
                if flag == "--deny" && c == "warnings" {
                    continue;
                }
                match code_info(c) {
                    None => return Err(format!("{flag} {c}: no such code (see `fwc explain --help` and the book's error index)")),
                    Some(i) if i.severity == Severity::Error => {
                        return Err(format!(
                            "{flag} {c}: {c} ({}) is an error, not a lint; only warnings and notes can be denied or allowed",
                            i.title
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Applies the levels: allowed lints go, denied ones become errors (with a note
    /// saying why).
    pub fn apply(&self, diags: &mut Vec<Diagnostic>) {
        diags.retain(|d| d.severity == Severity::Error || !self.allow.iter().any(|a| a == d.code));
        let all = self.deny.iter().any(|d| d == "warnings");
        for d in diags.iter_mut() {
            if d.severity == Severity::Error {
                continue;
            }
            let named = self.deny.iter().any(|c| c == d.code);
            if named || (all && d.severity == Severity::Warning) {
                d.severity = Severity::Error;
                let why = if named {
                    d.code.to_string()
                } else {
                    "warnings".into()
                };
                d.notes.push(format!("`--deny {why}` makes this an error"));
            }
        }
    }
}

/// Removes the lints (warnings and notes) that a `# fwc: allow(CODE, ...)` comment on the
/// line before their primary location allows.
pub fn apply_allow_comments(diags: &mut Vec<Diagnostic>, sm: &SourceMap) {
    diags.retain(|d| {
        if d.severity == Severity::Error {
            return true;
        }
        let Some(sp) = d.primary_span() else {
            return true;
        };
        let f = sm.get(sp.file);
        let (line, _) = f.line_col(sp.start as usize);
        if line < 2 {
            return true;
        }
        !allowed_by(f.line_text(line - 1)).any(|c| c == d.code)
    });
}

/// The codes a `# fwc: allow(CODE, ...)` comment line allows.
fn allowed_by(line: &str) -> impl Iterator<Item = &str> {
    let codes = line
        .trim()
        .strip_prefix('#')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("fwc:"))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("allow("))
        .and_then(|r| r.split_once(')'))
        .map(|(list, _)| list)
        .unwrap_or("");
    codes.split(',').map(str::trim).filter(|c| !c.is_empty())
}

pub fn code_info(code: &str) -> Option<&'static CodeInfo> {
    CODES.iter().find(|c| c.code == code)
}

/// The source texts ariadne draws from, indexed once per file rather than per diagnostic
/// (a 100K-rule file with thousands of warnings would otherwise be re-indexed each time).
struct SmCache<'s> {
    sm: &'s SourceMap,
    sources: std::collections::HashMap<String, ariadne::Source<&'s str>>,
}

impl<'s> ariadne::Cache<String> for SmCache<'s> {
    type Storage = &'s str;

    fn fetch(&mut self, id: &String) -> Result<&ariadne::Source<&'s str>, impl std::fmt::Debug> {
        if !self.sources.contains_key(id) {
            let Some((_, f)) = self.sm.files().find(|(_, f)| &f.name == id) else {
                return Err(format!("no source named {id}"));
            };
            self.sources
                .insert(id.clone(), ariadne::Source::from(f.text.as_str()));
        }
        self.sources
            .get(id)
            .ok_or_else(|| format!("no source named {id}"))
    }

    fn display<'a>(&self, id: &'a String) -> Option<impl std::fmt::Display + 'a> {
        Some(id.clone())
    }
}

/// Renders diagnostics for a terminal with ariadne. `color` should be true only when writing
/// to a tty. Keep one renderer for a batch of diagnostics.
pub struct HumanRenderer<'s> {
    cache: SmCache<'s>,
    color: bool,
}

impl<'s> HumanRenderer<'s> {
    pub fn new(sm: &'s SourceMap, color: bool) -> HumanRenderer<'s> {
        HumanRenderer {
            cache: SmCache {
                sm,
                sources: Default::default(),
            },
            color,
        }
    }

    pub fn render(&mut self, d: &Diagnostic) -> String {
        use ariadne::{Color, Config, IndexType, Label as ALabel, Report, ReportKind};
        let sm = self.cache.sm;
        let color = self.color;
        let plain = || {
            let mut out = format!("{}[{}]: {}\n", d.severity.name(), d.code, d.message);
            for n in &d.notes {
                let _ = writeln!(out, "  = note: {n}");
            }
            for h in &d.help {
                let _ = writeln!(out, "  = help: {h}");
            }
            out
        };
        let Some(main) = d.primary_span() else {
            // no source location: plain lines, rustc style
            return plain();
        };
        let kind = match d.severity {
            Severity::Error => ReportKind::Error,
            Severity::Warning => ReportKind::Warning,
            Severity::Note => ReportKind::Custom("Note", Color::Cyan),
        };
        let config = Config::default()
            .with_color(color)
            .with_index_type(IndexType::Byte);
        let name = |s: Span| sm.get(s.file).name.clone();
        let mut b = Report::build(kind, (name(main), main.range()))
            .with_config(config)
            .with_code(d.code)
            .with_message(&d.message);
        // ariadne starts a new snippet whenever a label lies above the previous one: give it
        // the labels in file order so that one file reads as one snippet
        let mut labels: Vec<&Label> = d.labels.iter().collect();
        labels.sort_by_key(|l| (l.span.file, l.span.start));
        for l in labels {
            let mut lab = ALabel::new((name(l.span), l.span.range()));
            if !l.message.is_empty() {
                lab = lab.with_message(&l.message);
            }
            if color {
                lab = lab.with_color(if l.primary {
                    match d.severity {
                        Severity::Error => Color::Red,
                        Severity::Warning => Color::Yellow,
                        Severity::Note => Color::Cyan,
                    }
                } else {
                    Color::Blue
                });
            }
            b = b.with_label(lab);
        }
        for n in &d.notes {
            b = b.with_note(n);
        }
        for h in &d.help {
            b = b.with_help(h);
        }
        let mut buf = Vec::new();
        if b.finish().write(&mut self.cache, &mut buf).is_err() {
            return plain();
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        if color {
            text
        } else {
            // ariadne paints a custom kind's name (`Note`) whatever the config says
            strip_ansi(&text)
        }
    }
}

/// `text` without its ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders one diagnostic for a terminal (see [`HumanRenderer`] for batches).
pub fn render_human(d: &Diagnostic, sm: &SourceMap, color: bool) -> String {
    HumanRenderer::new(sm, color).render(d)
}

#[derive(Serialize)]
struct JsonPos {
    line: usize,
    column: usize,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    file: &'a str,
    byte_start: u32,
    byte_end: u32,
    start: JsonPos,
    end: JsonPos,
    message: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct JsonDiag<'a> {
    code: &'a str,
    severity: Severity,
    message: &'a str,
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    byte_start: Option<u32>,
    byte_end: Option<u32>,
    labels: Vec<JsonLabel<'a>>,
    notes: &'a [String],
    help: &'a [String],
}

/// One JSON object (a single line) for the diagnostic.
pub fn render_json(d: &Diagnostic, sm: &SourceMap) -> String {
    let labels: Vec<JsonLabel<'_>> = d
        .labels
        .iter()
        .map(|l| {
            let f = sm.get(l.span.file);
            let (sl, sc) = f.line_col(l.span.start as usize);
            let (el, ec) = f.line_col(l.span.end as usize);
            JsonLabel {
                file: &f.name,
                byte_start: l.span.start,
                byte_end: l.span.end,
                start: JsonPos {
                    line: sl,
                    column: sc,
                },
                end: JsonPos {
                    line: el,
                    column: ec,
                },
                message: &l.message,
                primary: l.primary,
            }
        })
        .collect();
    let main = d.primary_span();
    let (file, line, column) = match main {
        Some(s) => {
            let f = sm.get(s.file);
            let (l, c) = f.line_col(s.start as usize);
            (Some(f.name.as_str()), Some(l), Some(c))
        }
        None => (None, None, None),
    };
    let j = JsonDiag {
        code: d.code,
        severity: d.severity,
        message: &d.message,
        file,
        line,
        column,
        byte_start: main.map(|s| s.start),
        byte_end: main.map(|s| s.end),
        labels,
        notes: &d.notes,
        help: &d.help,
    };
    serde_json::to_string(&j).unwrap_or_else(|_| "{}".into())
}

/// Orders diagnostics by file and position, errors first at the same place.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| {
        let s = d.primary_span().unwrap_or_default();
        (s.file, s.start, std::cmp::Reverse(d.severity))
    });
}

/// A SARIF 2.1.0 log of one run of `fwc` over the diagnostics: `rules` lists every code
/// (with its title and default level), each result points at its rule, its primary
/// location and its secondary labels (`relatedLocations`), its notes and help folded into
/// the message text.
pub fn render_sarif(diags: &[Diagnostic], sm: &SourceMap, version: &str) -> String {
    use serde_json::json;
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    };
    let rules: Vec<serde_json::Value> = CODES
        .iter()
        .map(|c| {
            json!({
                "id": c.code,
                "name": pascal(c.title),
                "shortDescription": { "text": c.title },
                "fullDescription": { "text": format!("{}: {} (the fwc book, error index, {}.md)", c.code, c.title, c.code) },
                "defaultConfiguration": { "level": level(c.severity) },
            })
        })
        .collect();
    let location = |sp: Span| {
        let f = sm.get(sp.file);
        let (sl, sc) = f.line_col(sp.start as usize);
        let (el, ec) = f.line_col(sp.end.max(sp.start) as usize);
        json!({
            "physicalLocation": {
                "artifactLocation": { "uri": uri_reference(&f.name) },
                "region": {
                    "startLine": sl,
                    "startColumn": sc,
                    "endLine": el,
                    "endColumn": ec.max(if el == sl { sc } else { 1 }),
                    "charOffset": sp.start,
                    "charLength": sp.end.saturating_sub(sp.start),
                },
            }
        })
    };
    let results: Vec<serde_json::Value> = diags
        .iter()
        .map(|d| {
            let mut text = d.message.clone();
            for n in &d.notes {
                text.push_str(&format!("\nnote: {n}"));
            }
            for h in &d.help {
                text.push_str(&format!("\nhelp: {h}"));
            }
            let mut r = json!({
                "ruleId": d.code,
                "level": level(d.severity),
                "message": { "text": text },
            });
            if let Some(i) = CODES.iter().position(|c| c.code == d.code) {
                r["ruleIndex"] = json!(i);
            }
            let primary = d.labels.iter().find(|l| l.primary).or(d.labels.first());
            if let Some(p) = primary {
                let mut loc = location(p.span);
                if !p.message.is_empty() {
                    loc["message"] = json!({ "text": p.message });
                }
                r["locations"] = json!([loc]);
            }
            let related: Vec<serde_json::Value> = d
                .labels
                .iter()
                .filter(|l| !primary.is_some_and(|p| std::ptr::eq(p, *l)))
                .enumerate()
                .map(|(k, l)| {
                    let mut loc = location(l.span);
                    loc["id"] = json!(k);
                    loc["message"] = json!({ "text": l.message });
                    loc
                })
                .collect();
            if !related.is_empty() {
                r["relatedLocations"] = json!(related);
            }
            r
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "fwc",
                "version": version,
                "semanticVersion": version,
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&log).unwrap_or_default()
}

/// `shadowed rule` -> `ShadowedRule`: a rule's `name` in SARIF.
fn pascal(title: &str) -> String {
    title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A file name as a URI reference: unreserved characters and `/` kept, others
/// percent-encoded; an absolute path becomes a `file://` URI (a relative reference must not
/// begin with a slash).
pub fn uri_reference(name: &str) -> String {
    let mut out = String::new();
    if name.starts_with('/') {
        out.push_str("file://");
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwc_grammar::ast::FileId;

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in CODES {
            assert!(seen.insert(c.code), "duplicate {}", c.code);
        }
    }

    #[test]
    fn json_has_positions() {
        let mut sm = SourceMap::new();
        let f = sm.add("a.fw".into(), None, "line one\nbad here;\n".into());
        let d = Diagnostic::error("FW0001", "syntax error").primary(
            Span {
                file: f,
                start: 9,
                end: 12,
            },
            "here",
        );
        let j: serde_json::Value = serde_json::from_str(&render_json(&d, &sm)).unwrap();
        assert_eq!(j["line"], 2);
        assert_eq!(j["column"], 1);
        assert_eq!(j["labels"][0]["end"]["column"], 4);
        assert_eq!(j["file"], "a.fw");
        let _ = FileId(0);
    }
}
