//! `fwc lsp`: a language server over standard input and output (JSON-RPC, `lsp-server`).
//!
//! Documents are synced whole. A document is checked on open and on every change, from the
//! editor's text (open documents shadow the disk for includes too); a change also re-checks
//! the open documents that include the changed file, and nothing else. Diagnostics are
//! published per file of the compilation (an included file's own errors appear in it).
//! Hover gives a define's type and value and a chain's signature; go to definition and
//! find references follow `$variables`, chain calls and includes; document symbols list the
//! items; completion offers keywords, `$defines` and chains in scope; formatting is
//! `fwc fmt`.

use fwc_compiler::diag::{Diagnostic, Severity};
use fwc_compiler::loader::{DiskFiles, FileProvider};
use fwc_compiler::Compilation;
use fwc_grammar::ast::{self, FileId, Item, Span};
use fwc_grammar::lexer::{Lexer, Tok};
use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types as lt;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Open documents shadow files on disk.
struct Overlay<'a> {
    docs: &'a HashMap<PathBuf, String>,
}

impl FileProvider for Overlay<'_> {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        match self.docs.get(&DiskFiles.canonical(path)) {
            Some(t) => Ok(t.clone()),
            None => DiskFiles.read(path),
        }
    }
    fn canonical(&self, path: &Path) -> PathBuf {
        DiskFiles.canonical(path)
    }
}

struct Server {
    /// open documents by canonical path
    docs: HashMap<PathBuf, String>,
    /// the last compilation of each open document
    comps: HashMap<PathBuf, Compilation>,
    /// files each open document's compilation read (itself and its includes), which are
    /// also the files its diagnostics were published for
    deps: HashMap<PathBuf, HashSet<PathBuf>>,
}

fn path_of(uri: &lt::Uri) -> PathBuf {
    let s = uri.as_str();
    let p = s.strip_prefix("file://").unwrap_or(s);
    DiskFiles.canonical(Path::new(&percent_decode(p)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uri_of(path: &Path) -> lt::Uri {
    let s = fwc_compiler::diag::uri_reference(&path.to_string_lossy());
    lt::Uri::from_str(&s).unwrap_or_else(|_| lt::Uri::from_str("file:///").unwrap())
}

/// A byte offset of `text` as an LSP position (UTF-16 columns).
fn position(text: &str, offset: usize) -> lt::Position {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map(|n| n + 1).unwrap_or(0);
    let character = text[start..offset].encode_utf16().count();
    lt::Position::new(line as u32, character as u32)
}

/// An LSP position of `text` as a byte offset.
fn offset(text: &str, pos: lt::Position) -> usize {
    let mut line_start = 0;
    for _ in 0..pos.line {
        match text[line_start..].find('\n') {
            Some(n) => line_start += n + 1,
            None => return text.len(),
        }
    }
    let mut units = 0u32;
    for (i, c) in text[line_start..].char_indices() {
        if units >= pos.character || c == '\n' {
            return line_start + i;
        }
        units += c.len_utf16() as u32;
    }
    text.len()
}

fn range(text: &str, start: usize, end: usize) -> lt::Range {
    lt::Range::new(position(text, start), position(text, end))
}

/// What the cursor is on.
enum Target {
    Var(String),
    Chain(String),
    Include(String),
}

impl Server {
    fn text_of<'c>(&self, c: &'c Compilation, f: FileId) -> &'c str {
        &c.loaded.sm.get(f).text
    }

    fn path_of_file(&self, c: &Compilation, f: FileId) -> PathBuf {
        DiskFiles.canonical(Path::new(&c.loaded.sm.get(f).name))
    }

    /// Checks an open document and publishes its diagnostics.
    fn check(&mut self, conn: &Connection, doc: &Path) {
        let Some(text) = self.docs.get(doc).cloned() else {
            return;
        };
        let c = fwc_compiler::compile_source(
            &doc.to_string_lossy(),
            &text,
            &Overlay { docs: &self.docs },
        );
        let mut per_file: HashMap<PathBuf, Vec<lt::Diagnostic>> = HashMap::new();
        let mut files = HashSet::new();
        for (id, _) in &c.loaded.files {
            let p = if *id == c.loaded.root.unwrap_or(FileId(0)) {
                doc.to_path_buf()
            } else {
                self.path_of_file(&c, *id)
            };
            files.insert(p.clone());
            per_file.entry(p).or_default();
        }
        for d in &c.diags {
            let Some(sp) = d.primary_span() else { continue };
            let p = if Some(sp.file) == c.loaded.root {
                doc.to_path_buf()
            } else {
                self.path_of_file(&c, sp.file)
            };
            let ftext = self.text_of(&c, sp.file);
            per_file.entry(p).or_default().push(lsp_diag(d, ftext));
        }
        for (p, diags) in &per_file {
            publish(conn, p, diags.clone());
        }
        // files no longer part of the compilation are cleared
        if let Some(old) = self.deps.get(doc) {
            for p in old.difference(&files) {
                publish(conn, p, vec![]);
            }
        }
        self.deps.insert(doc.to_path_buf(), files);
        self.comps.insert(doc.to_path_buf(), c);
    }

    /// After `changed` changed: it, and the open documents that include it.
    fn recheck(&mut self, conn: &Connection, changed: &Path) {
        let mut todo: Vec<PathBuf> = self
            .deps
            .iter()
            .filter(|(d, files)| d.as_path() != changed && files.contains(changed))
            .map(|(d, _)| d.clone())
            .collect();
        if self.docs.contains_key(changed) {
            todo.insert(0, changed.to_path_buf());
        }
        for d in todo {
            self.check(conn, &d);
        }
    }

    /// The compilation of an open document, and the file id of `path` in it.
    fn comp_for(&self, path: &Path) -> Option<(&Compilation, FileId)> {
        if let Some(c) = self.comps.get(path) {
            return Some((c, c.loaded.root?));
        }
        self.comps.values().find_map(|c| {
            c.loaded
                .files
                .iter()
                .find(|(id, _)| self.path_of_file(c, *id) == path)
                .map(|(id, _)| (c, *id))
        })
    }

    /// The name under the cursor.
    fn target(text: &str, at: usize) -> Option<(Target, usize, usize)> {
        let toks: Vec<(usize, Tok<'_>, usize)> = Lexer::new(text).filter_map(Result::ok).collect();
        let k = toks.iter().position(|(s, _, e)| *s <= at && at <= *e)?;
        let (s, t, e) = &toks[k];
        let prev = k.checked_sub(1).map(|j| &toks[j].1);
        match t {
            Tok::Var(n) => Some((Target::Var(n.to_string()), *s, *e)),
            Tok::Ident(n) => {
                // a chain: after `jump`/`goto`/`chain`, or called with arguments
                let called = matches!(prev, Some(Tok::Jump | Tok::Goto | Tok::Chain))
                    || matches!(toks.get(k + 1), Some((_, Tok::LParen, _)));
                called.then(|| (Target::Chain(n.to_string()), *s, *e))
            }
            Tok::Str(p) if matches!(prev, Some(Tok::Include)) => {
                Some((Target::Include(p.clone()), *s, *e))
            }
            _ => None,
        }
    }

    /// Where a define or chain is declared in a compilation.
    fn declaration(c: &Compilation, t: &Target) -> Option<(FileId, Span, String)> {
        for (id, f) in &c.loaded.files {
            for it in &f.items {
                match (it, t) {
                    (Item::Define(d), Target::Var(n)) if &d.name.name == n => {
                        let text = &c.loaded.sm.get(*id).text;
                        let v = text
                            .get(d.value.span.start as usize..d.value.span.end as usize)
                            .unwrap_or("");
                        return Some((*id, d.name.span, v.to_string()));
                    }
                    (Item::Chain(ch), Target::Chain(n)) if &ch.name.name == n => {
                        return Some((*id, ch.name.span, signature(ch)));
                    }
                    _ => {}
                }
            }
        }
        None
    }

    fn hover(&self, p: &lt::TextDocumentPositionParams) -> Option<lt::Hover> {
        let path = path_of(&p.text_document.uri);
        let text = self.docs.get(&path)?;
        let (t, s, e) = Server::target(text, offset(text, p.position))?;
        let (c, _) = self.comp_for(&path)?;
        let value = match &t {
            Target::Var(n) => {
                let (_, _, src) = Server::declaration(c, &t)?;
                let types = fwc_compiler::check::define_types(&c.loaded);
                match types.get(n) {
                    Some((ty, Some(v))) => format!("define {n}: {ty} = {v}"),
                    Some((ty, None)) => format!("define {n}: {ty} = {src}"),
                    None => format!("define {n} = {src}"),
                }
            }
            Target::Chain(_) => Server::declaration(c, &t)?.2,
            Target::Include(p) => format!("include \"{p}\""),
        };
        Some(lt::Hover {
            contents: lt::HoverContents::Markup(lt::MarkupContent {
                kind: lt::MarkupKind::Markdown,
                value: format!("```fw\n{value}\n```"),
            }),
            range: Some(range(text, s, e)),
        })
    }

    fn definition(&self, p: &lt::TextDocumentPositionParams) -> Option<lt::Location> {
        let path = path_of(&p.text_document.uri);
        let text = self.docs.get(&path)?;
        let (t, _, _) = Server::target(text, offset(text, p.position))?;
        let (c, _) = self.comp_for(&path)?;
        if let Target::Include(inc) = &t {
            let id = c
                .loaded
                .sm
                .files()
                .find(|(_, f)| f.name.ends_with(inc.as_str()))?
                .0;
            return Some(lt::Location::new(
                uri_of(&self.location_path(c, id, &path)),
                lt::Range::default(),
            ));
        }
        let (id, sp, _) = Server::declaration(c, &t)?;
        let ftext = self.text_of(c, id);
        Some(lt::Location::new(
            uri_of(&self.location_path(c, id, &path)),
            range(ftext, sp.start as usize, sp.end as usize),
        ))
    }

    fn location_path(&self, c: &Compilation, id: FileId, doc: &Path) -> PathBuf {
        if Some(id) == c.loaded.root {
            doc.to_path_buf()
        } else {
            self.path_of_file(c, id)
        }
    }

    fn references(&self, p: &lt::ReferenceParams) -> Option<Vec<lt::Location>> {
        let pos = &p.text_document_position;
        let path = path_of(&pos.text_document.uri);
        let text = self.docs.get(&path)?;
        let (t, _, _) = Server::target(text, offset(text, pos.position))?;
        let (c, _) = self.comp_for(&path)?;
        let mut out = Vec::new();
        for (id, _) in &c.loaded.files {
            let ftext = self.text_of(c, *id);
            let toks: Vec<(usize, Tok<'_>, usize)> =
                Lexer::new(ftext).filter_map(Result::ok).collect();
            for (k, (s, tok, e)) in toks.iter().enumerate() {
                let hit = match (tok, &t) {
                    (Tok::Var(n), Target::Var(m)) => n == m,
                    (Tok::Ident(n), Target::Chain(m)) => {
                        n == m
                            && (k > 0
                                && matches!(toks[k - 1].1, Tok::Jump | Tok::Goto | Tok::Chain)
                                || matches!(toks.get(k + 1), Some((_, Tok::LParen, _))))
                    }
                    _ => false,
                };
                if hit {
                    out.push(lt::Location::new(
                        uri_of(&self.location_path(c, *id, &path)),
                        range(ftext, *s, *e),
                    ));
                }
            }
            // the declaration itself
            if let (Target::Var(_), Some((did, sp, _))) = (&t, Server::declaration(c, &t)) {
                if did == *id && p.context.include_declaration {
                    out.push(lt::Location::new(
                        uri_of(&self.location_path(c, *id, &path)),
                        range(ftext, sp.start as usize, sp.end as usize),
                    ));
                }
            }
        }
        Some(out)
    }

    fn symbols(&self, p: &lt::DocumentSymbolParams) -> Option<Vec<lt::DocumentSymbol>> {
        let path = path_of(&p.text_document.uri);
        let text = self.docs.get(&path)?;
        let (file, _) = fwc_grammar::parse_file(text, FileId(0));
        let sym = |name: String,
                   detail: Option<String>,
                   kind: lt::SymbolKind,
                   sp: Span,
                   sel: Span,
                   children: Option<Vec<lt::DocumentSymbol>>| {
            #[allow(deprecated)]
            lt::DocumentSymbol {
                name,
                detail,
                kind,
                tags: None,
                deprecated: None,
                range: range(text, sp.start as usize, sp.end as usize),
                selection_range: range(text, sel.start as usize, sel.end as usize),
                children,
            }
        };
        let mut out = Vec::new();
        for it in &file.items {
            match it {
                Item::Define(d) => out.push(sym(
                    format!("${}", d.name.name),
                    None,
                    lt::SymbolKind::CONSTANT,
                    d.span,
                    d.name.span,
                    None,
                )),
                Item::Chain(c) => out.push(sym(
                    c.name.name.clone(),
                    Some(signature(c)),
                    lt::SymbolKind::FUNCTION,
                    c.span,
                    c.name.span,
                    None,
                )),
                Item::Table(t) => {
                    let kids = t
                        .chains
                        .iter()
                        .map(|c| {
                            sym(
                                c.name.name.clone(),
                                Some(format!("{} rules", c.rules.len())),
                                lt::SymbolKind::METHOD,
                                c.span,
                                c.name.span,
                                None,
                            )
                        })
                        .collect();
                    out.push(sym(
                        format!("table {}", t.name.name),
                        None,
                        lt::SymbolKind::NAMESPACE,
                        t.span,
                        t.name.span,
                        Some(kids),
                    ));
                }
                Item::Service(s) => out.push(sym(
                    s.name.name.clone(),
                    Some("service".into()),
                    lt::SymbolKind::CLASS,
                    s.span,
                    s.name.span,
                    None,
                )),
                Item::Interface(i) => out.push(sym(
                    i.name.name.clone(),
                    Some("interface".into()),
                    lt::SymbolKind::INTERFACE,
                    i.span,
                    i.name.span,
                    None,
                )),
                Item::Test(t) => out.push(sym(
                    format!("test \"{}\"", t.name),
                    None,
                    lt::SymbolKind::EVENT,
                    t.span,
                    t.span,
                    None,
                )),
                Item::Assert(a) => out.push(sym(
                    format!("assert \"{}\"", a.name),
                    None,
                    lt::SymbolKind::EVENT,
                    a.span,
                    a.span,
                    None,
                )),
                Item::Include(i) => out.push(sym(
                    format!("include \"{}\"", i.path),
                    None,
                    lt::SymbolKind::FILE,
                    i.span,
                    i.path_span,
                    None,
                )),
            }
        }
        Some(out)
    }

    fn completion(&self, p: &lt::CompletionParams) -> Option<Vec<lt::CompletionItem>> {
        let pos = &p.text_document_position;
        let path = path_of(&pos.text_document.uri);
        let text = self.docs.get(&path)?;
        let at = offset(text, pos.position);
        let after_dollar = text[..at]
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'))
            .next()
            .is_some_and(|w| w.starts_with('$'));
        let mut out = Vec::new();
        if let Some((c, _)) = self.comp_for(&path) {
            let types = fwc_compiler::check::define_types(&c.loaded);
            for (_, f) in &c.loaded.files {
                for it in &f.items {
                    match it {
                        Item::Define(d) => out.push(lt::CompletionItem {
                            label: format!("${}", d.name.name),
                            insert_text: Some(if after_dollar {
                                d.name.name.clone()
                            } else {
                                format!("${}", d.name.name)
                            }),
                            kind: Some(lt::CompletionItemKind::CONSTANT),
                            detail: types.get(&d.name.name).map(|(t, _)| t.clone()),
                            ..Default::default()
                        }),
                        Item::Chain(ch) if !after_dollar => out.push(lt::CompletionItem {
                            label: ch.name.name.clone(),
                            kind: Some(lt::CompletionItemKind::FUNCTION),
                            detail: Some(signature(ch)),
                            ..Default::default()
                        }),
                        _ => {}
                    }
                }
            }
        }
        if !after_dollar {
            for k in fwc_grammar::lexer::KEYWORDS.iter().chain(WORDS) {
                out.push(lt::CompletionItem {
                    label: k.to_string(),
                    kind: Some(lt::CompletionItemKind::KEYWORD),
                    ..Default::default()
                });
            }
        }
        Some(out)
    }

    fn formatting(&self, p: &lt::DocumentFormattingParams) -> Option<Vec<lt::TextEdit>> {
        let path = path_of(&p.text_document.uri);
        let text = self.docs.get(&path)?;
        let new = fwc_compiler::fmt::format(text).ok()?;
        if &new == text {
            return Some(vec![]);
        }
        Some(vec![lt::TextEdit::new(range(text, 0, text.len()), new)])
    }
}

/// Words an editor completes besides the keywords: tables, conntrack states.
const WORDS: &[&str] = &[
    "raw",
    "mangle",
    "nat",
    "filter",
    "security",
    "new",
    "established",
    "related",
    "invalid",
    "untracked",
];

/// `chain NAME(PARAM: TYPE, ...)` as written.
fn signature(c: &ast::ChainDecl) -> String {
    let params = match &c.params {
        None => String::new(),
        Some(ps) => format!(
            "({})",
            ps.iter()
                .map(|p| format!("{}: {}", p.name.name, type_text(&p.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("chain {}{params}", c.name.name)
}

fn type_text(t: &ast::TypeExpr) -> String {
    match t {
        ast::TypeExpr::Named(n) => n.name.clone(),
        ast::TypeExpr::Set(inner, _) => format!("set<{}>", type_text(inner)),
    }
}

fn lsp_diag(d: &Diagnostic, text: &str) -> lt::Diagnostic {
    let sp = d.primary_span().unwrap_or_default();
    let mut message = d.message.clone();
    if let Some(l) = d.labels.iter().find(|l| l.primary) {
        if !l.message.is_empty() {
            message.push_str(&format!(": {}", l.message));
        }
    }
    for n in &d.notes {
        message.push_str(&format!("\nnote: {n}"));
    }
    for h in &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    lt::Diagnostic {
        range: range(text, sp.start as usize, sp.end as usize),
        severity: Some(match d.severity {
            Severity::Error => lt::DiagnosticSeverity::ERROR,
            Severity::Warning => lt::DiagnosticSeverity::WARNING,
            Severity::Note => lt::DiagnosticSeverity::INFORMATION,
        }),
        code: Some(lt::NumberOrString::String(d.code.to_string())),
        source: Some("fwc".into()),
        message,
        ..Default::default()
    }
}

fn publish(conn: &Connection, path: &Path, diagnostics: Vec<lt::Diagnostic>) {
    let params = lt::PublishDiagnosticsParams {
        uri: uri_of(path),
        diagnostics,
        version: None,
    };
    let _ = conn.sender.send(Message::Notification(Notification::new(
        "textDocument/publishDiagnostics".into(),
        params,
    )));
}

fn reply<T: Into<serde_json::Value>>(conn: &Connection, req: &Request, result: T) {
    let _ = conn.sender.send(Message::Response(Response::new_ok(
        req.id.clone(),
        result.into(),
    )));
}

/// A result as JSON (`null` when there is none).
fn json<T: serde::Serialize>(v: Option<T>) -> serde_json::Value {
    v.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Serves one client until it says `exit`.
pub fn run() -> Result<(), String> {
    let (conn, io) = Connection::stdio();
    let caps = lt::ServerCapabilities {
        text_document_sync: Some(lt::TextDocumentSyncCapability::Kind(
            lt::TextDocumentSyncKind::FULL,
        )),
        hover_provider: Some(lt::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lt::OneOf::Left(true)),
        references_provider: Some(lt::OneOf::Left(true)),
        document_symbol_provider: Some(lt::OneOf::Left(true)),
        completion_provider: Some(lt::CompletionOptions {
            trigger_characters: Some(vec!["$".into()]),
            ..Default::default()
        }),
        document_formatting_provider: Some(lt::OneOf::Left(true)),
        ..Default::default()
    };
    let caps = serde_json::to_value(caps).map_err(|e| e.to_string())?;
    conn.initialize(caps).map_err(|e| e.to_string())?;
    let mut s = Server {
        docs: HashMap::new(),
        comps: HashMap::new(),
        deps: HashMap::new(),
    };
    for msg in &conn.receiver {
        match msg {
            Message::Request(req) => {
                if conn.handle_shutdown(&req).map_err(|e| e.to_string())? {
                    break;
                }
                let params = req.params.clone();
                match req.method.as_str() {
                    "textDocument/hover" => {
                        let p = serde_json::from_value(params).ok();
                        reply(&conn, &req, json(p.and_then(|p| s.hover(&p))));
                    }
                    "textDocument/definition" => {
                        let p: Option<lt::GotoDefinitionParams> =
                            serde_json::from_value(params).ok();
                        reply(
                            &conn,
                            &req,
                            json(p.and_then(|p| s.definition(&p.text_document_position_params))),
                        );
                    }
                    "textDocument/references" => {
                        let p = serde_json::from_value(params).ok();
                        reply(&conn, &req, json(p.and_then(|p| s.references(&p))));
                    }
                    "textDocument/documentSymbol" => {
                        let p = serde_json::from_value(params).ok();
                        reply(&conn, &req, json(p.and_then(|p| s.symbols(&p))));
                    }
                    "textDocument/completion" => {
                        let p = serde_json::from_value(params).ok();
                        reply(&conn, &req, json(p.and_then(|p| s.completion(&p))));
                    }
                    "textDocument/formatting" => {
                        let p = serde_json::from_value(params).ok();
                        reply(&conn, &req, json(p.and_then(|p| s.formatting(&p))));
                    }
                    _ => {
                        let _ = conn.sender.send(Message::Response(Response::new_err(
                            req.id.clone(),
                            lsp_server::ErrorCode::MethodNotFound as i32,
                            format!("`{}` is not supported", req.method),
                        )));
                    }
                }
            }
            Message::Notification(n) => match n.method.as_str() {
                "textDocument/didOpen" => {
                    if let Ok(p) = serde_json::from_value::<lt::DidOpenTextDocumentParams>(n.params)
                    {
                        let path = path_of(&p.text_document.uri);
                        s.docs.insert(path.clone(), p.text_document.text);
                        s.recheck(&conn, &path);
                    }
                }
                "textDocument/didChange" => {
                    if let Ok(p) =
                        serde_json::from_value::<lt::DidChangeTextDocumentParams>(n.params)
                    {
                        let path = path_of(&p.text_document.uri);
                        if let Some(c) = p.content_changes.into_iter().last() {
                            s.docs.insert(path.clone(), c.text);
                            s.recheck(&conn, &path);
                        }
                    }
                }
                "textDocument/didClose" => {
                    if let Ok(p) =
                        serde_json::from_value::<lt::DidCloseTextDocumentParams>(n.params)
                    {
                        let path = path_of(&p.text_document.uri);
                        s.docs.remove(&path);
                        s.comps.remove(&path);
                        if let Some(files) = s.deps.remove(&path) {
                            for f in files {
                                publish(&conn, &f, vec![]);
                            }
                        }
                        // documents that include it read it from disk again
                        s.recheck(&conn, &path);
                    }
                }
                _ => {}
            },
            Message::Response(_) => {}
        }
    }
    drop(conn);
    io.join().map_err(|e| e.to_string())
}
