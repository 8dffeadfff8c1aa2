//! iptables-style commands on a rule set kept as fw source (`fwc rules`, `fwc save`).
//!
//! The running rule set is a [`Document`]: the root file's text. A command (`-A`, `-I`, `-D`,
//! `-R`, `-F`, `-N`, `-X`, `-E`, `-P`) edits that text at the places the parser's spans give,
//! with the rule spec written in fw syntax (`fwc rules -A input 'tcp dport 22 accept'`); the
//! caller compiles the new text and swaps it in only when it checks, so a failed command
//! changes nothing. `-S` shows chains as source, `-C` says whether a rule is there.
//! Chains are named as in iptables: `-t TABLE` (default `filter`) with a hook name
//! (`INPUT` or `input`) for a base chain, or a subchain's name.

use fwc_grammar::ast::{self, Item};
use std::path::PathBuf;

/// A parsed `fwc rules` command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Append(ChainRef, String),
    Insert(ChainRef, usize, String),
    DeleteNum(ChainRef, usize),
    DeleteSpec(ChainRef, String),
    Replace(ChainRef, usize, String),
    Check(ChainRef, String),
    Flush(Option<ChainRef>, String),
    NewChain(String),
    DeleteChain(String),
    Rename(String, String),
    Policy(ChainRef, String),
    /// `-L [CHAIN] [--line-numbers] [-v]`: answered from the running program
    List {
        chain: Option<ChainRef>,
        line_numbers: bool,
        verbose: bool,
    },
    /// `-S [CHAIN]`: the chains as fw source
    Show(Option<ChainRef>, String),
}

/// A chain as iptables names it: a table's base chain by hook, or a subchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainRef {
    Base { table: String, hook: String },
    Sub(String),
}

impl ChainRef {
    fn new(table: &str, name: &str) -> ChainRef {
        let lower = name.to_ascii_lowercase();
        if crate::ir::Hook::from_name(&lower).is_some() {
            ChainRef::Base {
                table: table.to_string(),
                hook: lower,
            }
        } else {
            ChainRef::Sub(name.to_string())
        }
    }
    /// The name `fwc list` gives the chain (`filter/input`, or the subchain's).
    pub fn display(&self) -> String {
        match self {
            ChainRef::Base { table, hook } => format!("{table}/{hook}"),
            ChainRef::Sub(n) => n.clone(),
        }
    }
}

/// Parses `fwc rules` arguments: `[-t TABLE] COMMAND ...`.
pub fn parse_command(args: &[String]) -> Result<Command, String> {
    let mut table = "filter".to_string();
    let mut rest: Vec<&str> = Vec::new();
    let mut line_numbers = false;
    let mut verbose = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-t" | "--table" => {
                i += 1;
                table = args.get(i).ok_or("`-t` needs a table")?.clone();
                if crate::ir::Table::from_name(&table).is_none() {
                    return Err(format!("unknown table `{table}`"));
                }
            }
            "--line-numbers" | "-n" => line_numbers = line_numbers || args[i] != "-n",
            "-v" | "--verbose" => verbose = true,
            a => rest.push(a),
        }
        i += 1;
    }
    let (cmd, rest) = rest
        .split_first()
        .ok_or("no command (-A, -I, -D, -L, ...)")?;
    let chain = |k: usize| -> Result<ChainRef, String> {
        rest.get(k)
            .map(|c| ChainRef::new(&table, c))
            .ok_or_else(|| format!("`{cmd}` needs a chain"))
    };
    let spec = |from: usize| -> Result<String, String> {
        let s = rest.get(from..).unwrap_or(&[]).join(" ");
        let s = s.trim().trim_end_matches(';').trim().to_string();
        if s.is_empty() {
            Err(format!(
                "`{cmd}` needs a rule (in fw syntax, e.g. 'tcp dport 22 accept')"
            ))
        } else {
            Ok(s)
        }
    };
    let num = |k: usize| -> Result<usize, String> {
        match rest.get(k).map(|s| s.parse::<usize>()) {
            Some(Ok(n)) if n >= 1 => Ok(n),
            _ => Err(format!("`{cmd}` needs a rule number (from 1)")),
        }
    };
    Ok(match *cmd {
        "-A" | "--append" => Command::Append(chain(0)?, spec(1)?),
        "-I" | "--insert" => match rest.get(1).map(|s| s.parse::<usize>()) {
            Some(Ok(n)) if n >= 1 => Command::Insert(chain(0)?, n, spec(2)?),
            _ => Command::Insert(chain(0)?, 1, spec(1)?),
        },
        "-D" | "--delete" => match rest.get(1).map(|s| s.parse::<usize>()) {
            Some(Ok(n)) if rest.len() == 2 => Command::DeleteNum(chain(0)?, n.max(1)),
            _ => Command::DeleteSpec(chain(0)?, spec(1)?),
        },
        "-R" | "--replace" => Command::Replace(chain(0)?, num(1)?, spec(2)?),
        "-C" | "--check" => Command::Check(chain(0)?, spec(1)?),
        "-F" | "--flush" => Command::Flush(rest.first().map(|c| ChainRef::new(&table, c)), table),
        "-N" | "--new-chain" => {
            Command::NewChain(rest.first().ok_or("`-N` needs a name")?.to_string())
        }
        "-X" | "--delete-chain" => {
            Command::DeleteChain(rest.first().ok_or("`-X` needs a name")?.to_string())
        }
        "-E" | "--rename-chain" => match rest {
            [a, b] => Command::Rename(a.to_string(), b.to_string()),
            _ => return Err("`-E` takes the old and the new name".into()),
        },
        "-P" | "--policy" => {
            let c = chain(0)?;
            let p = rest
                .get(1)
                .ok_or("`-P` needs a policy")?
                .to_ascii_lowercase();
            if p != "accept" && p != "drop" {
                return Err(format!("policy `{p}`: accept or drop"));
            }
            if !matches!(c, ChainRef::Base { .. }) {
                return Err("`-P` is for base chains".into());
            }
            Command::Policy(c, p)
        }
        "-L" | "--list" => Command::List {
            chain: rest.first().map(|c| ChainRef::new(&table, c)),
            line_numbers,
            verbose,
        },
        "-S" | "--list-rules" => {
            Command::Show(rest.first().map(|c| ChainRef::new(&table, c)), table)
        }
        o => return Err(format!("unknown command `{o}`")),
    })
}

/// The running rule set's source.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    pub text: String,
}

/// A chain as `-L` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainView {
    /// `filter/input` or the subchain's name
    pub name: String,
    pub base: bool,
    /// a base chain's policy when written (accept when not)
    pub policy: Option<String>,
    /// each rule's line in the file, and its text
    pub rules: Vec<(u32, String)>,
}

/// A chain found in the text.
struct Found<'a> {
    decl: &'a ast::ChainDecl,
}

fn tokens(s: &str) -> Vec<String> {
    fwc_grammar::lexer::Lexer::new(s)
        .filter_map(|t| t.ok())
        .map(|(a, _, b)| s[a..b].to_string())
        .filter(|t| t != ";")
        .collect()
}

impl Document {
    fn parse(&self) -> Result<ast::File, String> {
        let (f, errs) = fwc_grammar::parse_file(&self.text, ast::FileId(0));
        if errs.is_empty() {
            Ok(f)
        } else {
            Err("the rule set does not parse".into())
        }
    }

    fn find<'a>(f: &'a ast::File, c: &ChainRef) -> Option<Found<'a>> {
        for it in &f.items {
            match (it, c) {
                (Item::Table(t), ChainRef::Base { table, hook }) if t.name.name == *table => {
                    if let Some(d) = t.chains.iter().find(|d| d.name.name == *hook) {
                        return Some(Found { decl: d });
                    }
                }
                (Item::Chain(d), ChainRef::Sub(n)) if d.name.name == *n => {
                    return Some(Found { decl: d })
                }
                _ => {}
            }
        }
        None
    }

    fn rule_text(&self, r: &ast::Rule) -> String {
        self.text[r.span.start as usize..r.span.end as usize]
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_string()
    }

    /// The end of a rule's text including its `;`.
    fn rule_end(&self, r: &ast::Rule) -> usize {
        let end = r.span.end as usize;
        let after = &self.text[end..];
        match after.find(|c: char| !c.is_whitespace()) {
            Some(k) if after[k..].starts_with(';') => end + k + 1,
            _ => end,
        }
    }

    /// The rules of a chain, as written.
    pub fn rules(&self, c: &ChainRef) -> Result<Vec<String>, String> {
        let f = self.parse()?;
        let found = Self::find(&f, c).ok_or_else(|| no_chain(c))?;
        Ok(found.decl.rules.iter().map(|r| self.rule_text(r)).collect())
    }

    /// The chains `-L` lists (one, or the table's base chains and every subchain), each
    /// with its policy and its rules as written, with their line numbers in the file.
    pub fn chains(&self, c: Option<&ChainRef>, table: &str) -> Result<Vec<ChainView>, String> {
        let f = self.parse()?;
        let line = |at: u32| self.text[..at as usize].matches('\n').count() as u32 + 1;
        let view = |name: String, d: &ast::ChainDecl| ChainView {
            name,
            policy: d.policy.map(|(p, _)| match p {
                ast::PolicyKind::Accept => "accept".to_string(),
                ast::PolicyKind::Drop => "drop".to_string(),
            }),
            base: false,
            rules: d
                .rules
                .iter()
                .map(|r| (line(r.span.start), self.rule_text(r)))
                .collect(),
        };
        let mut out = Vec::new();
        match c {
            Some(c) => {
                let d = Self::find(&f, c).ok_or_else(|| no_chain(c))?.decl;
                let mut v = view(c.display(), d);
                v.base = matches!(c, ChainRef::Base { .. });
                out.push(v);
            }
            None => {
                for it in &f.items {
                    match it {
                        Item::Table(t) if t.name.name == table => {
                            for d in &t.chains {
                                let mut v = view(format!("{table}/{}", d.name.name), d);
                                v.base = true;
                                out.push(v);
                            }
                        }
                        Item::Chain(d) => out.push(view(d.name.name.clone(), d)),
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether `spec` is a rule of the chain (compared token by token).
    pub fn contains(&self, c: &ChainRef, spec: &str) -> Result<bool, String> {
        let want = tokens(spec);
        Ok(self.rules(c)?.iter().any(|r| tokens(r) == want))
    }

    /// `-S`: the chain (or the table's chains and every subchain) as source.
    pub fn show(&self, c: Option<&ChainRef>, table: &str) -> Result<String, String> {
        let f = self.parse()?;
        let mut out = String::new();
        // a chain's text, its inner lines shifted left by the chain's own indentation
        let slice = |d: &ast::ChainDecl| {
            let start = d.span.start as usize;
            let col = start - self.text[..start].rfind('\n').map_or(0, |i| i + 1);
            let s = &self.text[start..d.span.end as usize];
            let mut out = String::new();
            for (i, l) in s.lines().enumerate() {
                let lead = l.len() - l.trim_start().len();
                out.push_str(if i == 0 { l } else { &l[lead.min(col)..] });
                out.push('\n');
            }
            out
        };
        match c {
            Some(c) => out.push_str(&slice(Self::find(&f, c).ok_or_else(|| no_chain(c))?.decl)),
            None => {
                for it in &f.items {
                    match it {
                        Item::Table(t) if t.name.name == table => {
                            for d in &t.chains {
                                out.push_str(&slice(d));
                            }
                        }
                        Item::Chain(d) => out.push_str(&slice(d)),
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies an editing command; the new text (formatted), or why not.
    pub fn apply(&self, cmd: &Command) -> Result<String, String> {
        let f = self.parse()?;
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        let nth = |d: &'_ ast::ChainDecl, n: usize| -> Result<usize, String> {
            if n == 0 || n > d.rules.len() {
                Err(format!(
                    "rule {n} does not exist: the chain has {} rules",
                    d.rules.len()
                ))
            } else {
                Ok(n - 1)
            }
        };
        match cmd {
            Command::Append(c, spec) | Command::Insert(c, _, spec) => {
                let pos = if let Command::Insert(_, n, _) = cmd {
                    Some(*n)
                } else {
                    None
                };
                match Self::find(&f, c) {
                    Some(found) => {
                        let d = found.decl;
                        let at = match pos {
                            Some(n) if n <= d.rules.len() => d.rules[n - 1].span.start as usize,
                            Some(n) if n > d.rules.len() + 1 => {
                                return Err(format!(
                                    "position {n}: the chain has {} rules",
                                    d.rules.len()
                                ))
                            }
                            _ => d.span.end as usize - 1, // before the closing brace
                        };
                        edits.push((at, at, format!("{spec};\n")));
                    }
                    None => match c {
                        ChainRef::Sub(_) => return Err(no_chain(c)),
                        ChainRef::Base { table, hook } => {
                            // a base chain the program does not have yet: in its table's
                            // block, or in a new one
                            let block = f.items.iter().find_map(|it| match it {
                                Item::Table(t) if t.name.name == *table => Some(t),
                                _ => None,
                            });
                            let chain = format!("chain {hook} {{\n{spec};\n}}\n");
                            match block {
                                Some(t) => {
                                    let at = t.span.end as usize - 1;
                                    edits.push((at, at, chain));
                                }
                                None => {
                                    let at = self.text.len();
                                    edits.push((
                                        at,
                                        at,
                                        format!("\ntable {table} {{\n{chain}}}\n"),
                                    ));
                                }
                            }
                        }
                    },
                }
            }
            Command::DeleteNum(c, n) | Command::Replace(c, n, _) => {
                let d = Self::find(&f, c).ok_or_else(|| no_chain(c))?.decl;
                let r = &d.rules[nth(d, *n)?];
                let (a, b) = (r.span.start as usize, self.rule_end(r));
                match cmd {
                    Command::Replace(_, _, spec) => edits.push((a, b, format!("{spec};"))),
                    _ => edits.push((a, b, String::new())),
                }
            }
            Command::DeleteSpec(c, spec) => {
                let d = Self::find(&f, c).ok_or_else(|| no_chain(c))?.decl;
                let want = tokens(spec);
                let r = d
                    .rules
                    .iter()
                    .find(|r| tokens(&self.rule_text(r)) == want)
                    .ok_or("no such rule in the chain (Bad rule: does a matching rule exist in that chain?)")?;
                edits.push((r.span.start as usize, self.rule_end(r), String::new()));
            }
            Command::Flush(c, table) => {
                let decls: Vec<&ast::ChainDecl> = match c {
                    Some(c) => vec![Self::find(&f, c).ok_or_else(|| no_chain(c))?.decl],
                    None => f
                        .items
                        .iter()
                        .filter_map(|it| match it {
                            Item::Table(t) if t.name.name == *table => Some(t.chains.iter()),
                            _ => None,
                        })
                        .flatten()
                        .collect(),
                };
                for d in decls {
                    for r in &d.rules {
                        edits.push((r.span.start as usize, self.rule_end(r), String::new()));
                    }
                }
            }
            Command::NewChain(name) => {
                if Self::find(&f, &ChainRef::Sub(name.clone())).is_some() {
                    return Err(format!("chain `{name}` already exists"));
                }
                let at = self.text.len();
                edits.push((at, at, format!("\nchain {name} {{\n}}\n")));
            }
            Command::DeleteChain(name) => {
                let c = ChainRef::Sub(name.clone());
                let d = Self::find(&f, &c).ok_or_else(|| no_chain(&c))?.decl;
                if !d.rules.is_empty() {
                    return Err(format!("chain `{name}` is not empty (flush it first)"));
                }
                if !calls(&f, name).is_empty() {
                    return Err(format!("chain `{name}` is still jumped to"));
                }
                edits.push((d.span.start as usize, d.span.end as usize, String::new()));
            }
            Command::Rename(old, new) => {
                let c = ChainRef::Sub(old.clone());
                let d = Self::find(&f, &c).ok_or_else(|| no_chain(&c))?.decl;
                if Self::find(&f, &ChainRef::Sub(new.clone())).is_some() {
                    return Err(format!("chain `{new}` already exists"));
                }
                edits.push((
                    d.name.span.start as usize,
                    d.name.span.end as usize,
                    new.clone(),
                ));
                for sp in calls(&f, old) {
                    edits.push((sp.start as usize, sp.end as usize, new.clone()));
                }
            }
            Command::Policy(c, p) => match Self::find(&f, c) {
                Some(found) => {
                    let d = found.decl;
                    match d.policy {
                        // the span is the policy's word
                        Some((_, sp)) => {
                            edits.push((sp.start as usize, sp.end as usize, p.clone()))
                        }
                        None => {
                            let at = d.head_span.end as usize;
                            edits.push((at, at, format!(" policy {p}")));
                        }
                    }
                }
                None => {
                    // a policy for a base chain the program does not have yet
                    let ChainRef::Base { table, hook } = c else {
                        return Err(no_chain(c));
                    };
                    let at = self.text.len();
                    edits.push((
                        at,
                        at,
                        format!("\ntable {table} {{\nchain {hook} policy {p} {{\n}}\n}}\n"),
                    ));
                }
            },
            Command::Check(..) | Command::List { .. } | Command::Show(..) => {
                return Err("not an editing command".into())
            }
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut text = self.text.clone();
        for (a, b, s) in edits {
            text.replace_range(a..b, &s);
        }
        Ok(crate::fmt::format(&text).unwrap_or(text))
    }
}

fn no_chain(c: &ChainRef) -> String {
    match c {
        ChainRef::Base { table, hook } => format!("no chain {hook} in table {table}"),
        ChainRef::Sub(n) => format!("no chain `{n}` (a subchain defined in this file)"),
    }
}

/// The spans of every `jump NAME` / `goto NAME` to `name`.
fn calls(f: &ast::File, name: &str) -> Vec<ast::Span> {
    let mut out = Vec::new();
    let stmt = |s: &ast::Stmt, out: &mut Vec<ast::Span>| {
        let one = |k: &ast::StmtKind, out: &mut Vec<ast::Span>| {
            if let ast::StmtKind::Jump(c) | ast::StmtKind::Goto(c) = k {
                if c.name.name == name {
                    out.push(c.name.span);
                }
            }
        };
        one(&s.kind, out);
        if let ast::StmtKind::Vmap { arms, .. } = &s.kind {
            for a in arms {
                one(&a.verdict.kind, out);
            }
        }
    };
    for it in &f.items {
        let decls: Vec<&ast::ChainDecl> = match it {
            Item::Table(t) => t.chains.iter().collect(),
            Item::Chain(d) => vec![d],
            _ => vec![],
        };
        for d in decls {
            for r in &d.rules {
                for s in &r.stmts {
                    stmt(s, &mut out);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(t: &str) -> Document {
        Document {
            path: "t.fw".into(),
            text: t.to_string(),
        }
    }

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    const SRC: &str = "table filter {\n    chain input policy drop {\n        iif lo accept;\n        tcp dport 22 jump ssh;\n    }\n}\n\nchain ssh {\n    ip saddr 10.0.0.0/8 accept;\n}\n";

    #[test]
    fn commands_edit_the_source() {
        let d = doc(SRC);
        let run = |a: &[&str]| d.apply(&parse_command(&args(a)).unwrap()).unwrap();
        let t = run(&["-A", "INPUT", "tcp dport 80 accept"]);
        assert!(
            t.contains("jump ssh;\n        tcp dport 80 accept;\n    }"),
            "{t}"
        );
        let t = run(&["-I", "input", "icmp accept"]);
        assert!(
            t.contains("policy drop {\n        icmp accept;\n        iif lo accept;"),
            "{t}"
        );
        let t = run(&["-I", "input", "2", "icmp accept"]);
        assert!(
            t.contains("iif lo accept;\n        icmp accept;\n        tcp dport 22"),
            "{t}"
        );
        let t = run(&["-D", "input", "1"]);
        assert!(!t.contains("iif lo"), "{t}");
        let t = run(&["-D", "input", "iif   lo accept"]);
        assert!(!t.contains("iif lo"), "{t}");
        let t = run(&["-R", "ssh", "1", "ip saddr 10.1.0.0/16 accept"]);
        assert!(t.contains("ip saddr 10.1.0.0/16 accept;"), "{t}");
        let t = run(&["-P", "input", "ACCEPT"]);
        assert!(t.contains("chain input policy accept {"), "{t}");
        let t = run(&["-E", "ssh", "ssh-in"]);
        assert!(
            t.contains("jump ssh-in;") && t.contains("chain ssh-in {"),
            "{t}"
        );
        let t = run(&["-F", "ssh"]);
        assert!(
            t.contains("chain ssh {\n}") || t.contains("chain ssh {}"),
            "{t}"
        );
        let t = run(&["-N", "web"]);
        assert!(t.contains("chain web {"), "{t}");
        let t = run(&["-t", "nat", "-A", "POSTROUTING", "oif eth0 masquerade"]);
        assert!(
            t.contains("table nat {\n    chain postrouting {\n        oif eth0 masquerade;"),
            "{t}"
        );
        assert!(d
            .contains(&ChainRef::new("filter", "INPUT"), "tcp dport 22  jump ssh")
            .unwrap());
        assert!(!d
            .contains(&ChainRef::new("filter", "INPUT"), "tcp dport 23 jump ssh")
            .unwrap());
    }

    #[test]
    fn refusals_say_why() {
        let d = doc(SRC);
        let err = |a: &[&str]| d.apply(&parse_command(&args(a)).unwrap()).unwrap_err();
        assert!(err(&["-D", "input", "7"]).contains("the chain has 2 rules"));
        assert!(err(&["-X", "ssh"]).contains("not empty"));
        assert!(err(&["-A", "nope", "accept"]).contains("no chain `nope`"));
        assert!(err(&["-D", "input", "tcp dport 23 accept"]).contains("no such rule"));
        assert!(parse_command(&args(&["-P", "input", "reject"])).is_err());
        assert!(parse_command(&args(&["-A", "input"])).is_err());
    }
}
