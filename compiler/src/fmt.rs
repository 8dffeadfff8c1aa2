//! `fwc fmt`: one canonical layout for `.fw` source, comments kept.
//!
//! The layout is decided from the tokens (the file must parse first): items and the rules,
//! entries and lines of a block one per line, indented by four spaces per block; blocks open
//! with ` {` at the end of their header line and close with `}` on a line of its own; tokens
//! separated by one space, except where the language writes them together (`a:b` for an
//! address and port, `a-b` for a range, `name(args)`, `set<ip>`, `,` and `;` after their
//! token, `( ` and ` )` never); a verdict map's arms `KEY : VERDICT`; a set `{ a, b }`.
//! What the author decided is kept: where a statement continues on another line (the line
//! is indented one level deeper, a closing `}` back at the statement's level), and single
//! blank lines between items and between statements (several become one). A comment on a
//! line of its own stays on a line of its own, at the indentation of what follows it; a
//! comment after code stays after that code, two spaces away. Formatting twice changes
//! nothing more.

use fwc_grammar::ast::FileId;
use fwc_grammar::lexer::{Lexer, Tok};

/// A comment: its byte range, and whether code comes before it on its line.
#[derive(Debug, Clone)]
struct Comment {
    start: usize,
    end: usize,
    trailing: bool,
}

/// The comments in a gap between tokens (none can be inside a token: strings are tokens).
fn comments_in(src: &str, from: usize, to: usize, out: &mut Vec<Comment>) {
    let gap = &src[from..to];
    let mut at = 0;
    while let Some(i) = gap[at..].find('#') {
        let start = from + at + i;
        let end = src[start..]
            .find('\n')
            .map(|n| start + n)
            .unwrap_or(src.len())
            .min(to);
        let line_start = src[..start].rfind('\n').map(|n| n + 1).unwrap_or(0);
        let trailing = !src[line_start..start].trim().is_empty();
        out.push(Comment {
            start,
            end,
            trailing,
        });
        at = end - from;
    }
}

/// Number of line breaks between two byte offsets.
fn breaks(src: &str, from: usize, to: usize) -> usize {
    src[from..to].matches('\n').count()
}

/// Formats a program's text; `Err` with nothing changed when it does not parse.
pub fn format(src: &str) -> Result<String, String> {
    let (_, errors) = fwc_grammar::parse_file(src, FileId(0));
    if let Some(e) = errors.first() {
        return Err(format!(
            "the file does not parse ({} syntax error{}; the first at byte {}): fix it first",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            e.start
        ));
    }
    let mut toks: Vec<(usize, Tok<'_>, usize)> = Vec::new();
    for t in Lexer::new(src) {
        match t {
            Ok(t) => toks.push(t),
            Err(_) => return Err("the file does not lex".into()),
        }
    }
    let mut comments: Vec<Comment> = Vec::new();
    let mut prev_end = 0;
    for (s, _, e) in &toks {
        comments_in(src, prev_end, *s, &mut comments);
        prev_end = *e;
    }
    comments_in(src, prev_end, src.len(), &mut comments);
    Ok(Printer::new(src).run(&toks, &comments))
}

/// What an open brace or parenthesis is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    /// a block: `table`, `chain`, `service`, `test`, `assert`
    Block,
    /// a set, a verdict map, `ct state { ... }`
    Set {
        vmap: bool,
    },
    Paren,
}

struct Printer<'s> {
    src: &'s str,
    out: String,
    /// block depth (indentation of statements)
    depth: usize,
    /// the open braces and parentheses
    stack: Vec<Open>,
    /// open expression braces/parentheses when the current statement started
    stmt_base: usize,
    /// tokens of the current statement so far (0: at a statement start)
    in_stmt: usize,
    /// the first token of the current statement, for deciding what its `{` opens
    stmt_head: Option<String>,
}

impl<'s> Printer<'s> {
    fn new(src: &'s str) -> Printer<'s> {
        Printer {
            src,
            out: String::new(),
            depth: 0,
            stack: Vec::new(),
            stmt_base: 0,
            in_stmt: 0,
            stmt_head: None,
        }
    }

    fn indent(&mut self, extra: usize) {
        for _ in 0..(self.depth + extra) {
            self.out.push_str("    ");
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    fn newline(&mut self) {
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if !self.at_line_start() {
            self.out.push('\n');
        }
    }

    fn blank_line(&mut self) {
        self.newline();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") && !self.out.ends_with("{\n") {
            self.out.push('\n');
        }
    }

    /// Open expression braces/parentheses inside the current statement.
    fn expr_depth(&self) -> usize {
        self.stack
            .iter()
            .filter(|o| !matches!(o, Open::Block))
            .count()
            .saturating_sub(self.stmt_base)
    }

    fn comment(&mut self, c: &Comment, next_line_extra: usize) {
        let text = self.src[c.start..c.end].trim_end();
        if c.trailing && !self.at_line_start() {
            while self.out.ends_with(' ') {
                self.out.pop();
            }
            self.out.push_str("  ");
            self.out.push_str(text);
            self.out.push('\n');
        } else {
            self.newline();
            self.indent(next_line_extra);
            self.out.push_str(text);
            self.out.push('\n');
        }
    }

    fn run(mut self, toks: &[(usize, Tok<'_>, usize)], comments: &[Comment]) -> String {
        let mut ci = 0;
        let mut prev: Option<&Tok<'_>> = None;
        // the token before `prev` (a rate is `N/unit`: no spaces after a number's slash)
        let mut prev2: Option<&Tok<'_>> = None;
        let mut prev_end = 0usize;
        for (k, (start, tok, end)) in toks.iter().enumerate() {
            let text = &self.src[*start..*end];
            // comments before this token
            let mut saw_comment = false;
            while ci < comments.len() && comments[ci].start < *start {
                let c = &comments[ci];
                // a blank line before an own-line comment is kept
                if !c.trailing && breaks(self.src, prev_end, c.start) > 1 && self.in_stmt == 0 {
                    self.blank_line();
                }
                let extra = if self.in_stmt > 0 {
                    self.expr_depth().max(1)
                } else {
                    0
                };
                let extra = if matches!(tok, Tok::RBrace) && self.in_stmt == 0 {
                    0
                } else {
                    extra
                };
                self.comment(c, extra);
                prev_end = c.end;
                ci += 1;
                saw_comment = true;
            }
            let gap_breaks = breaks(self.src, prev_end, *start);
            let closing = matches!(tok, Tok::RBrace | Tok::RParen);
            let block_close = matches!(tok, Tok::RBrace) && self.stack.last() == Some(&Open::Block);
            if self.in_stmt == 0 && !block_close {
                // a statement or item starts: on a line of its own
                if gap_breaks > 1 && !self.out.is_empty() {
                    self.blank_line();
                } else {
                    self.newline();
                }
                if self.at_line_start() {
                    self.indent(0);
                }
                self.stmt_base = self
                    .stack
                    .iter()
                    .filter(|o| !matches!(o, Open::Block))
                    .count();
                self.stmt_head = Some(text.to_string());
            } else if block_close {
                self.newline();
                self.depth = self.depth.saturating_sub(1);
                self.indent(0);
                self.out.push('}');
                self.stack.pop();
                self.out.push('\n');
                self.in_stmt = 0;
                prev2 = prev;
                prev = Some(tok);
                prev_end = *end;
                continue;
            } else if gap_breaks > 0 || saw_comment {
                // the author continued the statement on another line
                self.newline();
                // inside braces opened on the statement's lines: one level per brace; a
                // closing one back at its opener's level; otherwise one level deeper
                let depth = self.expr_depth();
                let extra = if closing {
                    depth.saturating_sub(1)
                } else {
                    depth.max(1)
                };
                self.indent(extra);
            } else if let Some(p) = prev {
                let rate = matches!((prev2, p), (Some(Tok::Int(_)), Tok::Slash));
                if !rate && space_between(p, tok, self.stack.last().copied()) {
                    self.out.push(' ');
                }
            }
            // the token itself
            match tok {
                Tok::LBrace => {
                    let head = self.stmt_head.as_deref().unwrap_or("");
                    let block = self.expr_depth() == 0
                        && matches!(head, "table" | "chain" | "service" | "test" | "assert");
                    if block {
                        if !self.at_line_start() && !self.out.ends_with(' ') {
                            self.out.push(' ');
                        }
                        self.out.push('{');
                        self.stack.push(Open::Block);
                        self.depth += 1;
                        self.in_stmt = 0;
                        // a trailing comment after `{` stays there
                        if !(ci < comments.len()
                            && comments[ci].trailing
                            && toks.get(k + 1).is_none_or(|n| comments[ci].start < n.0))
                        {
                            self.out.push('\n');
                        }
                        prev2 = prev;
                        prev = Some(tok);
                        prev_end = *end;
                        continue;
                    }
                    let vmap = matches!(prev, Some(Tok::Vmap));
                    self.stack.push(Open::Set { vmap });
                    self.out.push('{');
                }
                Tok::LParen => {
                    self.stack.push(Open::Paren);
                    self.out.push('(');
                }
                Tok::RBrace | Tok::RParen => {
                    self.stack.pop();
                    self.out.push_str(text);
                }
                _ => self.out.push_str(text),
            }
            self.in_stmt += 1;
            if matches!(tok, Tok::Semi) && self.expr_depth() == 0 {
                self.in_stmt = 0;
                self.stmt_head = None;
                // a trailing comment on this line stays on it
                if !(ci < comments.len()
                    && comments[ci].trailing
                    && breaks(self.src, *end, comments[ci].start) == 0)
                {
                    self.out.push('\n');
                }
            }
            prev2 = prev;
            prev = Some(tok);
            prev_end = *end;
        }
        while ci < comments.len() {
            let c = comments[ci].clone();
            if !c.trailing && breaks(self.src, prev_end, c.start) > 1 {
                self.blank_line();
            }
            self.comment(&c, 0);
            prev_end = c.end;
            ci += 1;
        }
        self.newline();
        self.out
    }
}

/// Whether one space separates two tokens on a line.
fn space_between(a: &Tok<'_>, b: &Tok<'_>, open: Option<Open>) -> bool {
    use Tok::*;
    let value = |t: &Tok<'_>| matches!(t, Ipv4(_) | Int(_) | Var(_) | Ident(_) | Prefix(_));
    match (a, b) {
        // `a-b`, `a:b` (address and port), `set<ip>`, `name(`, `(x`, `x)`, `x,` `x;`
        (_, Comma | Semi | RParen) => false,
        (LParen, _) => false,
        (Lt, _) | (_, Gt) | (_, Lt) => false,
        (Int(_), Slash) => false,
        (Ident(_), LParen) => false,
        // a list in braces or parentheses is `a, b`; a bare one (`ct state a,b`, TCP
        // flags) is `a,b`
        (Comma, _) => matches!(open, Some(Open::Set { .. }) | Some(Open::Paren)),
        (_, Minus) | (Minus, _) => !(value(a) || value(b)),
        // `KEY : VERDICT` in a verdict map, `name: type` in parameters, `addr:port`
        (_, Colon) | (Colon, _) => {
            matches!(open, Some(Open::Set { vmap: true }))
                || matches!((a, open), (Colon, Some(Open::Paren)))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_layout_with_comments_kept() {
        let src = "# gateway\ndefine  web={80,443};   # the web\n\n\n\ntable filter{chain input policy drop{\n# ssh\ntcp dport 22   accept;  # admins\nip saddr 10.0.0.0/8 tcp dport vmap {\n22 : accept,\n80:drop\n};\n}}\nchain sub(p: port) { tcp dport $p accept; }\n";
        let want = "# gateway\ndefine web = { 80, 443 };  # the web\n\ntable filter {\n    chain input policy drop {\n        # ssh\n        tcp dport 22 accept;  # admins\n        ip saddr 10.0.0.0/8 tcp dport vmap {\n            22 : accept,\n            80 : drop\n        };\n    }\n}\nchain sub(p: port) {\n    tcp dport $p accept;\n}\n";
        let got = format(src).unwrap();
        assert_eq!(got, want, "\n{got}");
        assert_eq!(format(&got).unwrap(), got, "idempotent");
        assert!(format("table {").is_err());
    }
}
