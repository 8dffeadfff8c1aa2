//! `fwc import`: an `iptables-save` dump (or an `iptables-restore` script) as an fw program.
//!
//! Tables become `table` blocks, built-in chains base chains with their policies, user
//! chains subchains (`-j` a `jump`, `-g` a `goto`). Consecutive rules that iptables made
//! from one address list (`-s a,b` is saved as one rule per address) are joined back into a
//! set when that cannot change what happens (the rule ends the chain, or the addresses do
//! not overlap); an address list used more than once becomes a `define`. Every option is
//! translated or refused: anything without an exact fw meaning is an [`ImportError`] naming
//! the input line, and nothing is dropped silently.

use crate::export::quote;
use crate::ir::{tcpflags, LOG_LEVELS};
use crate::types::icmp_type_name;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// An input line that has no translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// 1-based input line
    pub line: usize,
    pub message: String,
}

/// The comment of the rule `fwc export` adds to keep conntrack on (skipped on import).
const TRACK_NOTE: &str = "fwc: keeps connection tracking on, which the nat table needs";

const TABLES: [&str; 5] = ["raw", "mangle", "nat", "filter", "security"];
const BUILTINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Translates `text` (named `source` in the header comment) into fw source.
pub fn import(text: &str, source: &str) -> Result<String, Vec<ImportError>> {
    let mut p = Parser::default();
    for (i, raw) in text.lines().enumerate() {
        p.line(i + 1, raw);
    }
    if p.table.is_some() {
        p.err(text.lines().count(), "the last table has no COMMIT");
    }
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    p.finish(source)
}

// ------------------------------------------------------------------------------------------
// input

/// Splits a line as iptables-restore does: whitespace, double quotes (with `\"`), single
/// quotes.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                have = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => cur.push(e),
                            None => return Err("unterminated quote".into()),
                        },
                        Some(o) => cur.push(o),
                    }
                }
            }
            '\'' => {
                have = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('\'') => break,
                        Some(o) => cur.push(o),
                    }
                }
            }
            c if c.is_whitespace() => {
                if have || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => cur.push(c),
        }
    }
    if have || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// One address match as fw writes it, and whether it is negated.
type Addrs = (bool, Vec<String>);

#[derive(Debug, Clone, Default)]
struct Rule {
    line: usize,
    comment: Option<String>,
    iif: Option<(bool, String)>,
    oif: Option<(bool, String)>,
    saddr: Option<Addrs>,
    daddr: Option<Addrs>,
    /// the fw protocol word (`tcp`, `udp`, `icmp`) or number
    proto: Option<(bool, String)>,
    sport: Option<(bool, Vec<String>)>,
    dport: Option<(bool, Vec<String>)>,
    /// multiport's `--ports`: either port
    either: Option<(bool, Vec<String>)>,
    /// `ip protocol` from u32 (a set)
    proto_set: Option<Vec<String>>,
    icmp: Option<(bool, Vec<String>)>,
    flags: Vec<(bool, u8, u8)>,
    ct: Vec<(bool, Vec<String>)>,
    mark: Vec<(bool, String)>,
    limits: Vec<(bool, String, u32)>,
    stats: Vec<String>,
    /// hashlimit's table name: rules naming the same one share a bucket
    bucket: Option<String>,
    /// the statement(s), as fw text; empty for a rule that only counts
    stmt: String,
    /// the user chain it calls, for checking that it exists
    calls: Option<String>,
    /// whether the statement ends the chain for a packet that matches
    terminal: bool,
}

#[derive(Default)]
struct Parser {
    table: Option<String>,
    /// per table: chains in order of declaration, policy for built-ins
    chains: Vec<(String, String, Option<String>)>,
    rules: HashMap<(String, String), Vec<Rule>>,
    /// `interface` declarations carried by `fwc export`'s comments
    interfaces: Vec<String>,
    errors: Vec<ImportError>,
}

impl Parser {
    fn err(&mut self, line: usize, m: impl Into<String>) {
        self.errors.push(ImportError {
            line,
            message: m.into(),
        });
    }

    fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chains.iter().any(|(t, c, _)| t == table && c == chain)
    }

    fn line(&mut self, n: usize, raw: &str) {
        let s = raw.trim();
        if let Some(decl) = s.strip_prefix("# fwc: interface ") {
            // written by `fwc export`: the interface addresses the program assumed
            self.interfaces.push(format!("interface {decl}"));
            return;
        }
        if s.is_empty() || s.starts_with('#') {
            return;
        }
        if let Some(t) = s.strip_prefix('*') {
            if self.table.is_some() {
                self.err(n, "a table starts before the previous one's COMMIT");
            }
            if !TABLES.contains(&t) {
                self.err(n, format!("unknown table `{t}`"));
            }
            self.table = Some(t.to_string());
            return;
        }
        let Some(table) = self.table.clone() else {
            self.err(n, "a rule outside a table (no `*filter` line before it)");
            return;
        };
        if s == "COMMIT" {
            self.table = None;
            return;
        }
        if let Some(rest) = s.strip_prefix(':') {
            let w: Vec<&str> = rest.split_whitespace().collect();
            match w.as_slice() {
                [name, policy, ..] => {
                    let builtin = BUILTINS.contains(name);
                    let policy = match (*policy, builtin) {
                        ("-", false) => None,
                        ("ACCEPT" | "DROP", true) => Some(policy.to_string()),
                        (p, true) => {
                            self.err(
                                n,
                                format!("policy `{p}` of `{name}`: fw has accept and drop"),
                            );
                            return;
                        }
                        (_, false) => {
                            self.err(n, format!("user chain `{name}` with a policy"));
                            return;
                        }
                    };
                    self.declare(n, &table, name, policy);
                }
                _ => self.err(n, "a chain line needs a name and a policy"),
            }
            return;
        }
        // counters from `iptables-save -c`
        let s = if s.starts_with('[') {
            s.split_once(']').map(|x| x.1.trim()).unwrap_or(s)
        } else {
            s
        };
        let w = match words(s) {
            Ok(w) => w,
            Err(e) => {
                self.err(n, e);
                return;
            }
        };
        match w.first().map(String::as_str) {
            Some("-A" | "--append") if w.len() >= 2 => {
                let chain = w[1].clone();
                if !self.has_chain(&table, &chain) {
                    self.err(
                        n,
                        format!("chain `{chain}` is not declared in table {table}"),
                    );
                    return;
                }
                match parse_rule(n, &w[2..], &table) {
                    Ok(Some(r)) => self.rules.entry((table, chain)).or_default().push(r),
                    Ok(None) => {}
                    Err(e) => self.err(n, e),
                }
            }
            Some("-N" | "--new-chain") if w.len() == 2 => {
                let name = w[1].clone();
                self.declare(n, &table, &name, None);
            }
            Some("-P" | "--policy") if w.len() == 3 => {
                if !BUILTINS.contains(&w[1].as_str()) || !matches!(w[2].as_str(), "ACCEPT" | "DROP")
                {
                    self.err(n, "`-P` takes a built-in chain and ACCEPT or DROP");
                    return;
                }
                match self
                    .chains
                    .iter_mut()
                    .find(|(t, c, _)| *t == table && *c == w[1])
                {
                    Some(c) => c.2 = Some(w[2].clone()),
                    None => self.chains.push((table, w[1].clone(), Some(w[2].clone()))),
                }
            }
            _ => self.err(
                n,
                format!(
                    "`{}`: only -A, -N, -P, chain lines and COMMIT belong in a saved rule set",
                    w.first().map(String::as_str).unwrap_or("")
                ),
            ),
        }
    }

    fn declare(&mut self, n: usize, table: &str, name: &str, policy: Option<String>) {
        if self.has_chain(table, name) {
            self.err(n, format!("chain `{name}` declared twice in table {table}"));
            return;
        }
        if BUILTINS.contains(&name)
            && !crate::ir::Table::from_name(table)
                .is_some_and(|t| t.hooks().iter().any(|h| builtin_of(*h) == name))
        {
            self.err(n, format!("table {table} has no built-in chain {name}"));
            return;
        }
        self.chains
            .push((table.to_string(), name.to_string(), policy));
    }
}

fn builtin_of(h: crate::ir::Hook) -> &'static str {
    crate::export::builtin_chain(h)
}

// ------------------------------------------------------------------------------------------
// one rule

fn port(s: &str) -> Result<String, String> {
    let num = |x: &str| -> Result<u16, String> {
        x.parse::<u16>()
            .map_err(|_| format!("port `{x}`: fw takes port numbers here"))
    };
    match s.split_once(':') {
        None => Ok(num(s)?.to_string()),
        Some((a, b)) => {
            let a = if a.is_empty() { 0 } else { num(a)? };
            let b = if b.is_empty() { 65535 } else { num(b)? };
            if a > b {
                return Err(format!("port range `{s}` runs backwards"));
            }
            Ok(if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            })
        }
    }
}

fn addr(s: &str) -> Result<String, String> {
    let bad = || format!("address `{s}`: fw takes IPv4 addresses and prefixes (no host names)");
    match s.split_once('/') {
        None => s
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| bad()),
        Some((a, l)) => {
            let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
            let len: u8 = match l.parse() {
                Ok(x) if x <= 32 => x,
                _ => {
                    // a dotted mask (`/255.255.255.0`) that is a prefix
                    let m: Ipv4Addr = l.parse().map_err(|_| bad())?;
                    let m = u32::from(m);
                    if m.leading_ones() + m.trailing_zeros() != 32 {
                        return Err(format!("address `{s}`: a mask that is not a prefix"));
                    }
                    m.leading_ones() as u8
                }
            };
            let net = u32::from(a) & crate::ir::prefix_mask(len);
            Ok(if len == 32 {
                Ipv4Addr::from(net).to_string()
            } else {
                format!("{}/{len}", Ipv4Addr::from(net))
            })
        }
    }
}

fn iface(s: &str) -> Result<String, String> {
    let (name, wild) = match s.strip_suffix('+') {
        Some(n) => (n, true),
        None => (s, false),
    };
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !name.ends_with('-')
        && !name.contains("--");
    if !plain {
        return Err(format!(
            "interface `{s}`: fw names interfaces with letters, digits, `_` and `-`"
        ));
    }
    Ok(format!("{name}{}", if wild { "*" } else { "" }))
}

fn rate(s: &str) -> Result<String, String> {
    let (n, unit) = s.split_once('/').unwrap_or((s, "sec"));
    let n: u64 = n.parse().map_err(|_| format!("rate `{s}`"))?;
    let unit = match unit {
        "s" | "sec" | "second" => "second",
        "m" | "min" | "minute" => "minute",
        "h" | "hour" => "hour",
        "d" | "day" => "day",
        _ => return Err(format!("rate `{s}`: unknown unit")),
    };
    Ok(format!("{n}/{unit}"))
}

fn flags(s: &str) -> Result<u8, String> {
    let mut v = 0u8;
    for f in s.split(',') {
        let f = f.to_ascii_lowercase();
        v |= tcpflags::from_name(&f).ok_or(format!("TCP flag `{f}`"))?;
    }
    Ok(v)
}

fn states(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(|x| {
            let l = x.to_ascii_lowercase();
            if crate::ir::ct::from_name(&l).is_some() {
                Ok(l)
            } else {
                Err(format!(
                    "connection state `{x}` (fw has new, established, related, invalid, untracked)"
                ))
            }
        })
        .collect()
}

fn icmp_type(s: &str) -> Result<String, String> {
    if let Some((t, _)) = s.split_once('/') {
        return Err(format!(
            "ICMP type `{s}` with a code: fw matches ICMP types, not codes (type {t})"
        ));
    }
    let t: u8 = match s.parse() {
        Ok(t) => t,
        Err(_) => match crate::types::ICMP_TYPES.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => *t,
            None => {
                return Err(format!(
                    "ICMP type `{s}`: not a type fw knows (codes such as port-unreachable \
                     cannot be matched)"
                ))
            }
        },
    };
    if t == 255 {
        return Err("ICMP type `any`: leave the type out".into());
    }
    Ok(icmp_type_name(t)
        .map(str::to_string)
        .unwrap_or(t.to_string()))
}

fn mark(s: &str) -> Result<String, String> {
    let num = |x: &str| -> Result<u32, String> {
        match x.strip_prefix("0x").or_else(|| x.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16),
            None => x.parse(),
        }
        .map_err(|_| format!("mark `{x}`"))
    };
    match s.split_once('/') {
        None => Ok(format!("{:#x}", num(s)?)),
        Some((v, m)) => {
            let (v, m) = (num(v)?, num(m)?);
            if m == u32::MAX {
                return Ok(format!("{v:#x}"));
            }
            if m.leading_ones() + m.trailing_zeros() != 32 || v & !m != 0 {
                return Err(format!(
                    "mark `{s}`: fw matches marks by value or range; this mask tests scattered bits"
                ));
            }
            Ok(format!("{v:#x}-{:#x}", v | !m))
        }
    }
}

fn nat_to(s: &str) -> Result<String, String> {
    let (a, p) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let mut out = String::new();
    if !a.is_empty() {
        match a.split_once('-') {
            Some((x, y)) => {
                let _ = write!(out, "{}-{}", addr(x)?, addr(y)?);
            }
            None => out.push_str(&addr(a)?),
        }
    }
    if let Some(p) = p {
        out.push(':');
        out.push_str(&port(&p.replace('-', ":"))?);
    }
    Ok(out)
}

fn reject_with(s: &str) -> Result<String, String> {
    Ok(match s {
        "tcp-reset" | "tcp-rst" => "reject with tcp-reset".into(),
        "icmp-port-unreachable" | "port-unreach" => "reject".into(),
        _ => {
            let code = crate::types::reject_code(s.trim_end_matches("-unreach"))
                .or_else(|| crate::types::reject_code(s))
                .ok_or(format!("`--reject-with {s}`"))?;
            let name = crate::types::REJECT_CODES
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(n, _)| *n)
                .unwrap_or("port-unreachable");
            format!("reject with icmp {name}")
        }
    })
}

fn log_level(s: &str) -> Result<String, String> {
    if let Ok(n) = s.parse::<usize>() {
        return LOG_LEVELS
            .get(n)
            .map(|l| l.to_string())
            .ok_or(format!("log level `{s}`"));
    }
    crate::types::log_level(s)
        .map(|l| LOG_LEVELS[usize::from(l)].to_string())
        .ok_or(format!("log level `{s}`"))
}

/// The u32 tests `fwc export` writes (protocol sets, ICMP type sets) back as value lists.
fn u32_pattern(s: &str) -> Option<(&'static str, Vec<String>)> {
    let list = |v: &str| -> Option<Vec<String>> {
        v.split(',')
            .map(|r| {
                let r = r.trim();
                let num = |x: &str| -> Option<u32> {
                    match x.strip_prefix("0x") {
                        Some(h) => u32::from_str_radix(h, 16).ok(),
                        None => x.parse().ok(),
                    }
                };
                match r.split_once(':') {
                    Some((a, b)) => Some(format!("{}-{}", num(a)?, num(b)?)),
                    None => Some(num(r)?.to_string()),
                }
            })
            .collect()
    };
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.to_ascii_lowercase();
    for (pre, what) in [
        ("0x6&0xff=", "proto"),
        ("6&0xff=", "proto"),
        ("0x4&0x1fff=0x0&&0x0>>0x16&0x3c@0x0>>0x18=", "icmp"),
        ("4&0x1fff=0&&0>>22&0x3c@0>>24=", "icmp"),
    ] {
        if let Some(v) = s.strip_prefix(pre) {
            return Some((what, list(v)?));
        }
    }
    None
}

/// Parses the options of one `-A` line; `None` for the rule `fwc export` adds to keep
/// conntrack on.
fn parse_rule(line: usize, w: &[String], table: &str) -> Result<Option<Rule>, String> {
    // the old `--opt ! value` spelling, as `! --opt value`
    let mut w = w.to_vec();
    for i in 0..w.len().saturating_sub(1) {
        if w[i].starts_with('-') && w[i + 1] == "!" {
            w.swap(i, i + 1);
        }
    }
    let w = &w[..];
    let mut r = Rule {
        line,
        ..Rule::default()
    };
    let mut i = 0;
    let mut neg = false;
    let mut module = String::new();
    let mut target: Option<(bool, String)> = None; // (goto, name)
    let mut topts: Vec<(String, Option<String>)> = Vec::new();
    let mut comment_fwc = false;
    let take = |i: &mut usize, opt: &str| -> Result<String, String> {
        *i += 1;
        w.get(*i)
            .cloned()
            .ok_or_else(|| format!("`{opt}` needs a value"))
    };
    while i < w.len() {
        let o = w[i].as_str();
        if o == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let n = std::mem::take(&mut neg);
        if target.is_some() {
            // target options
            if !o.starts_with("--") {
                return Err(format!("`{o}` after the target"));
            }
            // a flag, or an option with its value
            let flag_only = w.get(i + 1).is_none_or(|n| n.starts_with("--"));
            let v = if flag_only {
                None
            } else {
                Some(take(&mut i, o)?)
            };
            topts.push((o.to_string(), v));
            i += 1;
            continue;
        }
        let val = |i: &mut usize| -> Result<String, String> { take(i, o) };
        match o {
            "-s" | "--source" | "--src" => {
                let v = val(&mut i)?;
                let a: Result<Vec<String>, String> = v.split(',').map(addr).collect();
                r.saddr = Some((n, a?));
            }
            "-d" | "--destination" | "--dst" => {
                let v = val(&mut i)?;
                let a: Result<Vec<String>, String> = v.split(',').map(addr).collect();
                r.daddr = Some((n, a?));
            }
            "-i" | "--in-interface" => r.iif = Some((n, iface(&val(&mut i)?)?)),
            "-o" | "--out-interface" => r.oif = Some((n, iface(&val(&mut i)?)?)),
            "-p" | "--protocol" => {
                let v = val(&mut i)?.to_ascii_lowercase();
                let p = match v.as_str() {
                    "all" | "0" if !n => None,
                    "tcp" | "6" => Some("tcp".to_string()),
                    "udp" | "17" => Some("udp".to_string()),
                    "icmp" | "1" => Some("icmp".to_string()),
                    x => match x.parse::<u8>() {
                        Ok(p) if p != 0 => Some(p.to_string()),
                        _ => match crate::types::proto_number(x) {
                            Some(p) => Some(p.to_string()),
                            None => return Err(format!("protocol `{v}`")),
                        },
                    },
                };
                r.proto = p.map(|p| (n, p));
            }
            "-f" | "--fragment" => {
                return Err("`-f` (fragments): fw has no fragment match".into());
            }
            "-m" | "--match" => {
                module = val(&mut i)?;
                if !matches!(
                    module.as_str(),
                    "tcp"
                        | "udp"
                        | "icmp"
                        | "multiport"
                        | "state"
                        | "conntrack"
                        | "mark"
                        | "limit"
                        | "hashlimit"
                        | "statistic"
                        | "comment"
                        | "iprange"
                        | "u32"
                ) {
                    return Err(format!("`-m {module}` has no fw translation"));
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                target = Some((o.starts_with("-g") || o == "--goto", val(&mut i)?));
            }
            "-c" | "--set-counters" => {
                i += 2;
                continue;
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                let v = val(&mut i)?;
                let ports: Result<Vec<String>, String> = v.split(',').map(port).collect();
                r.sport = Some((n, ports?));
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                let v = val(&mut i)?;
                let ports: Result<Vec<String>, String> = v.split(',').map(port).collect();
                r.dport = Some((n, ports?));
            }
            "--ports" => {
                let v = val(&mut i)?;
                let ports: Result<Vec<String>, String> = v.split(',').map(port).collect();
                r.either = Some((n, ports?));
            }
            "--tcp-flags" => {
                let m = flags(&val(&mut i)?)?;
                let c = flags(&take(&mut i, o)?)?;
                r.flags.push((n, m, c));
            }
            "--syn" => r.flags.push((n, 0x17, 0x02)),
            "--icmp-type" => {
                let t = icmp_type(&val(&mut i)?)?;
                r.icmp = Some((n, vec![t]));
            }
            "--state" | "--ctstate" => r.ct.push((n, states(&val(&mut i)?)?)),
            "--mark" => r.mark.push((n, mark(&val(&mut i)?)?)),
            "--limit" => {
                let v = rate(&val(&mut i)?)?;
                r.limits.push((n, v, 5));
            }
            "--limit-burst" | "--hashlimit-burst" => {
                let b: u32 = val(&mut i)?
                    .parse()
                    .map_err(|_| format!("`{o}` needs a number"))?;
                match r.limits.last_mut() {
                    Some(l) => l.2 = b,
                    None => return Err(format!("`{o}` before its rate")),
                }
            }
            "--hashlimit-upto" | "--hashlimit" | "--hashlimit-above" => {
                let v = rate(&val(&mut i)?)?;
                r.limits.push((o == "--hashlimit-above", v, 5));
            }
            "--hashlimit-name" => r.bucket = Some(val(&mut i)?),
            "--mode" => {
                let m = val(&mut i)?;
                if m != "random" {
                    return Err(format!("`--mode {m}`: fw's statistic is random only"));
                }
            }
            "--probability" => {
                let p: f64 = val(&mut i)?
                    .parse()
                    .map_err(|_| "`--probability` needs a number".to_string())?;
                let text = format!("{}", (p * 1e9).round() / 1e9);
                r.stats.push(if n {
                    format!("{}", ((1.0 - p) * 1e9).round() / 1e9)
                } else {
                    text
                });
            }
            "--comment" => {
                let c = val(&mut i)?;
                comment_fwc = c == TRACK_NOTE;
                r.comment = Some(c);
            }
            "--src-range" | "--dst-range" => {
                let v = val(&mut i)?;
                let (a, b) = v.split_once('-').ok_or(format!("`{o}` takes FROM-TO"))?;
                let range = format!("{}-{}", addr(a)?, addr(b)?);
                if o == "--src-range" {
                    r.saddr = Some((n, vec![range]));
                } else {
                    r.daddr = Some((n, vec![range]));
                }
            }
            "--u32" => {
                let v = val(&mut i)?;
                match u32_pattern(&v) {
                    Some(("proto", list)) if !n => r.proto_set = Some(list),
                    Some((_, list)) if !n => r.icmp = Some((false, list)),
                    _ => {
                        return Err(format!(
                            "`--u32 {v}`: only the protocol and ICMP-type tests fwc writes \
                             translate"
                        ))
                    }
                }
            }
            _ => {
                let ctx = if module.is_empty() {
                    String::new()
                } else {
                    format!(" (in -m {module})")
                };
                return Err(format!("option `{o}`{ctx} has no fw translation"));
            }
        }
        if n && matches!(o, "--hashlimit-name" | "--mode") {
            return Err(format!("`! {o}`"));
        }
        i += 1;
    }
    if comment_fwc && target.is_none() {
        return Ok(None);
    }
    // the statement
    let opt = |name: &str| -> Option<String> {
        topts
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone().unwrap_or_default())
    };
    let known = |allowed: &[&str]| -> Result<(), String> {
        match topts.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(format!("target option `{k}` has no fw translation")),
            None => Ok(()),
        }
    };
    let nat_flags = |s: &mut String| {
        if opt("--random").is_some() {
            s.push_str(" random");
        }
        if opt("--persistent").is_some() {
            s.push_str(" persistent");
        }
    };
    let Some((goto, t)) = target else {
        r.stmt = "counter".into();
        return Ok(Some(r));
    };
    r.terminal = true;
    r.stmt = match t.as_str() {
        "ACCEPT" | "DROP" | "RETURN" => {
            known(&[])?;
            if goto {
                return Err(format!("`-g {t}`: goto takes a user chain"));
            }
            t.to_ascii_lowercase()
        }
        "REJECT" => {
            known(&["--reject-with"])?;
            match opt("--reject-with") {
                None => "reject".into(),
                Some(w) => reject_with(&w)?,
            }
        }
        "LOG" => {
            known(&["--log-prefix", "--log-level"])?;
            r.terminal = false;
            let level = match opt("--log-level") {
                Some(l) => log_level(&l)?,
                None => "warn".into(),
            };
            let mut s = format!("log level {level}");
            if let Some(p) = opt("--log-prefix") {
                let _ = write!(s, " prefix {}", quote(&p));
            }
            s
        }
        "AUDIT" => {
            known(&["--type"])?;
            r.terminal = false;
            "audit".into()
        }
        "MARK" => {
            known(&["--set-mark", "--set-xmark"])?;
            r.terminal = false;
            let v = opt("--set-xmark")
                .or_else(|| opt("--set-mark"))
                .ok_or("MARK without --set-mark")?;
            let m = match v.split_once('/') {
                None => mark(&v)?,
                Some((x, m)) => {
                    let full = m.eq_ignore_ascii_case("0xffffffff") || m == "4294967295";
                    if !full {
                        return Err(format!(
                            "`MARK {v}`: fw sets the whole mark (mask 0xffffffff)"
                        ));
                    }
                    mark(x)?
                }
            };
            format!("mark set {m}")
        }
        "TTL" => {
            known(&["--ttl-set"])?;
            r.terminal = false;
            format!(
                "ip ttl set {}",
                opt("--ttl-set").ok_or("TTL without --ttl-set")?
            )
        }
        "NOTRACK" => {
            known(&[])?;
            r.terminal = false;
            "notrack".into()
        }
        "CT" => {
            known(&["--notrack"])?;
            if opt("--notrack").is_none() {
                return Err("CT without --notrack has no fw translation".into());
            }
            r.terminal = false;
            "notrack".into()
        }
        "SNAT" | "DNAT" => {
            let key = if t == "SNAT" {
                "--to-source"
            } else {
                "--to-destination"
            };
            known(&[key, "--to", "--random", "--persistent"])?;
            let to = opt(key)
                .or_else(|| opt("--to"))
                .ok_or(format!("{t} without {key}"))?;
            let mut s = format!("{} to {}", t.to_ascii_lowercase(), nat_to(&to)?);
            nat_flags(&mut s);
            s
        }
        "MASQUERADE" | "REDIRECT" => {
            known(&["--to-ports", "--random"])?;
            let mut s = t.to_ascii_lowercase();
            if let Some(p) = opt("--to-ports") {
                let _ = write!(s, " to :{}", port(&p.replace('-', ":"))?);
            } else if t == "REDIRECT" {
                return Err("REDIRECT without --to-ports has no fw translation".into());
            }
            nat_flags(&mut s);
            s
        }
        "NFQUEUE" => {
            known(&["--queue-num", "--queue-bypass"])?;
            let mut s = format!("queue num {}", opt("--queue-num").unwrap_or("0".into()));
            if opt("--queue-bypass").is_some() {
                s.push_str(" bypass");
            }
            s
        }
        user => {
            if !topts.is_empty() {
                return Err(format!("target `{user}` has no fw translation"));
            }
            r.calls = Some(user.to_string());
            r.terminal = goto;
            format!("{} {}", if goto { "goto" } else { "jump" }, "\u{0}")
        }
    };
    let _ = table;
    Ok(Some(r))
}

// ------------------------------------------------------------------------------------------
// output

/// Addresses of two lists that may overlap (by prefix/range bounds).
fn bounds(a: &str) -> Option<(u32, u32)> {
    if let Some((x, y)) = a.split_once('-') {
        let x: Ipv4Addr = x.parse().ok()?;
        let y: Ipv4Addr = y.parse().ok()?;
        return Some((x.into(), y.into()));
    }
    match a.split_once('/') {
        None => {
            let x: Ipv4Addr = a.parse().ok()?;
            Some((x.into(), x.into()))
        }
        Some((x, l)) => {
            let x: u32 = x.parse::<Ipv4Addr>().ok()?.into();
            let m = crate::ir::prefix_mask(l.parse().ok()?);
            Some((x & m, (x & m) | !m))
        }
    }
}

fn disjoint(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| {
        b.iter().all(|y| match (bounds(x), bounds(y)) {
            (Some((a0, a1)), Some((b0, b1))) => a1 < b0 || b1 < a0,
            _ => false,
        })
    })
}

/// A fw identifier for an iptables chain name (letters, digits, `_`, single `-`), not a
/// keyword, not taken.
fn fw_name(name: &str, taken: &[String]) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let mut s = s.trim_matches('-').to_string();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s = format!("c-{s}");
    }
    if fwc_grammar::lexer::KEYWORDS.contains(&s.as_str()) {
        s.push_str("-chain");
    }
    let base = s.clone();
    let mut k = 1;
    while taken.contains(&s) {
        k += 1;
        s = format!("{base}-{k}");
    }
    s
}

/// One rule for a group that is the cross product of per-match values, if it is one.
fn rectangle(g: &[Rule]) -> Option<Rule> {
    if g.len() == 1 {
        return Some(g[0].clone());
    }
    // the varying matches, each as (negated?, values) of the rule
    type Parts = [Option<(bool, Vec<String>)>; 8];
    let parts = |r: &Rule| -> Option<Parts> {
        let one = |v: &Option<(bool, String)>| v.clone().map(|(n, x)| (n, vec![x]));
        let mark = match r.mark.as_slice() {
            [] => None,
            [(n, m)] => Some((*n, vec![m.clone()])),
            _ => return None,
        };
        Some([
            r.saddr.clone(),
            r.daddr.clone(),
            r.sport.clone(),
            r.dport.clone(),
            one(&r.iif),
            one(&r.oif),
            r.icmp.clone(),
            mark,
        ])
    };
    let rest = |r: &Rule| {
        let mut x = r.clone();
        (x.saddr, x.daddr, x.sport, x.dport) = (None, None, None, None);
        (x.iif, x.oif, x.icmp) = (None, None, None);
        x.mark.clear();
        x.line = 0;
        format!("{x:?}")
    };
    let first = rest(&g[0]);
    let all: Vec<Parts> = g.iter().map(parts).collect::<Option<_>>()?;
    if g.iter().any(|r| rest(r) != first) {
        return None;
    }
    let mut merged: Vec<Option<(bool, Vec<String>)>> = Vec::new();
    let mut product = 1usize;
    for k in 0..8 {
        let mut distinct: Vec<&Option<(bool, Vec<String>)>> = Vec::new();
        for p in &all {
            if !distinct.contains(&&p[k]) {
                distinct.push(&p[k]);
            }
        }
        product = product.saturating_mul(distinct.len());
        if distinct.len() == 1 {
            merged.push(distinct[0].clone());
            continue;
        }
        // a varying match: positive in every rule, its values joined
        let mut vals = Vec::new();
        for d in distinct {
            match d {
                Some((false, v)) => vals.extend(v.iter().cloned()),
                _ => return None,
            }
        }
        merged.push(Some((false, vals)));
    }
    let mut seen: Vec<&Parts> = Vec::new();
    for p in &all {
        if seen.contains(&p) {
            return None;
        }
        seen.push(p);
    }
    if product != g.len() {
        return None;
    }
    let mut r = g[0].clone();
    let join1 = |v: &Option<(bool, Vec<String>)>| -> Option<(bool, String)> {
        v.clone().map(|(n, x)| (n, set_text(&x)))
    };
    r.saddr = merged[0].clone();
    r.daddr = merged[1].clone();
    r.sport = merged[2].clone();
    r.dport = merged[3].clone();
    r.iif = join1(&merged[4]);
    r.oif = join1(&merged[5]);
    r.icmp = merged[6].clone();
    r.mark = join1(&merged[7]).into_iter().collect();
    Some(r)
}

/// One rule with a verdict map for a group that was one (`fwc export` writes a map's arms
/// as rules sharing the rule's `limit` bucket): runs of one verdict, each a cross product,
/// alike but for one match (the key) and the verdict.
fn verdict_map(g: &[Rule]) -> Option<Rule> {
    let mut arms: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < g.len() {
        let mut j = i + 1;
        while j < g.len() && g[j].stmt == g[i].stmt {
            j += 1;
        }
        arms.push(rectangle(&g[i..j])?);
        i = j;
    }
    let verdict = |s: &str| {
        [
            "accept", "drop", "return", "jump ", "goto ", "reject", "queue",
        ]
        .iter()
        .any(|v| s == *v || s.starts_with(v))
    };
    if arms.len() < 2 || !arms.iter().all(|a| verdict(&a.stmt)) {
        return None;
    }
    let l4 = match &arms[0].proto {
        Some((false, p)) if p == "tcp" || p == "udp" => p.clone(),
        _ => "tcp".into(),
    };
    type Get = fn(&Rule) -> Option<(bool, Vec<String>)>;
    type Clear = fn(&mut Rule);
    let keys: [(String, Get, Clear); 6] = [
        (
            format!("{l4} dport"),
            |r| r.dport.clone(),
            |r| r.dport = None,
        ),
        (
            format!("{l4} sport"),
            |r| r.sport.clone(),
            |r| r.sport = None,
        ),
        ("ip daddr".into(), |r| r.daddr.clone(), |r| r.daddr = None),
        ("ip saddr".into(), |r| r.saddr.clone(), |r| r.saddr = None),
        ("icmp type".into(), |r| r.icmp.clone(), |r| r.icmp = None),
        (
            "iif".into(),
            |r| r.iif.clone().map(|(n, x)| (n, vec![x])),
            |r| r.iif = None,
        ),
    ];
    'keys: for (sel, get, clear) in keys {
        let rest = |r: &Rule| {
            let mut x = r.clone();
            clear(&mut x);
            x.stmt.clear();
            x.calls = None;
            x.terminal = false;
            x.line = 0;
            format!("{x:?}")
        };
        let first = rest(&arms[0]);
        let mut text = Vec::new();
        for a in &arms {
            if rest(a) != first {
                continue 'keys;
            }
            let Some((false, vals)) = get(a) else {
                continue 'keys;
            };
            for v in vals {
                // a set from a rectangle is written `{ a, b }`: one arm per element
                for e in v.trim_matches(|c| c == '{' || c == '}').split(',') {
                    text.push(format!("{} : {}", e.trim(), a.stmt));
                }
            }
        }
        let mut r = arms[0].clone();
        clear(&mut r);
        r.stmt = format!("{sel} vmap {{ {} }}", text.join(", "));
        r.terminal = false;
        r.calls = None;
        return Some(r);
    }
    None
}

fn set_text(v: &[String]) -> String {
    if v.len() == 1 {
        v[0].clone()
    } else {
        format!("{{ {} }}", v.join(", "))
    }
}

impl Parser {
    /// Joins consecutive rules that differ only in one address match (iptables saves
    /// `-s a,b` as one rule per address) when a packet cannot meet both.
    fn join(rules: Vec<Rule>) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        'rules: for r in rules {
            if let Some(last) = out.last_mut() {
                for which in [0, 1] {
                    let (la, ra) = if which == 0 {
                        (&last.saddr, &r.saddr)
                    } else {
                        (&last.daddr, &r.daddr)
                    };
                    let (Some((false, la)), Some((false, ra))) = (la, ra) else {
                        continue;
                    };
                    let (mut a, mut b) = (last.clone(), r.clone());
                    if which == 0 {
                        (a.saddr, b.saddr) = (None, None);
                    } else {
                        (a.daddr, b.daddr) = (None, None);
                    }
                    (a.line, b.line) = (0, 0);
                    let same = format!("{a:?}") == format!("{b:?}");
                    if same && (r.terminal || disjoint(la, ra)) {
                        let mut joined = la.clone();
                        joined.extend(ra.iter().cloned());
                        if which == 0 {
                            last.saddr = Some((false, joined));
                        } else {
                            last.daddr = Some((false, joined));
                        }
                        continue 'rules;
                    }
                }
            }
            out.push(r);
        }
        out
    }

    /// Rejoins the rules `fwc export` made of one rule with a `limit` (one named hashlimit
    /// bucket for all of them): consecutive rules sharing a bucket, alike but for some
    /// matches whose values form every combination (a cross product), become one rule with
    /// a set per match. Other sharing is left for `finish` to refuse.
    fn buckets(rules: Vec<Rule>) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        let mut i = 0;
        while i < rules.len() {
            let Some(b) = rules[i].bucket.clone() else {
                out.push(rules[i].clone());
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < rules.len() && rules[j].bucket.as_deref() == Some(b.as_str()) {
                j += 1;
            }
            match rectangle(&rules[i..j]).or_else(|| verdict_map(&rules[i..j])) {
                Some(r) => out.push(r),
                None => out.extend(rules[i..j].iter().cloned()),
            }
            i = j;
        }
        out
    }

    fn finish(mut self, source: &str) -> Result<String, Vec<ImportError>> {
        // subchain names (one per table and user chain)
        let mut taken: Vec<String> = Vec::new();
        let mut sub_names: HashMap<(String, String), String> = HashMap::new();
        let user: Vec<(String, String)> = self
            .chains
            .iter()
            .filter(|(_, c, _)| !BUILTINS.contains(&c.as_str()))
            .map(|(t, c, _)| (t.clone(), c.clone()))
            .collect();
        for (t, c) in &user {
            let clash = user.iter().filter(|(_, c2)| c2 == c).count() > 1;
            let want = if clash { format!("{t}-{c}") } else { c.clone() };
            let n = fw_name(&want, &taken);
            taken.push(n.clone());
            sub_names.insert((t.clone(), c.clone()), n);
        }
        // joined rules, and calls resolved
        let mut errors = Vec::new();
        let keys: Vec<(String, String)> = self.rules.keys().cloned().collect();
        for k in keys {
            let mut rules = self.rules.remove(&k).unwrap_or_default();
            for r in &mut rules {
                if let Some(c) = &r.calls {
                    match sub_names.get(&(k.0.clone(), c.clone())) {
                        Some(n) => r.stmt = r.stmt.replace('\u{0}', n),
                        None => errors.push(ImportError {
                            line: r.line,
                            message: format!(
                                "target `{c}`: neither a user chain of table {} nor one fw has",
                                k.0
                            ),
                        }),
                    }
                }
            }
            let rules = Self::join(Self::buckets(rules));
            self.rules.insert(k, rules);
        }
        // a hashlimit bucket shared by rules that stay apart: fw's limits are per rule
        let mut buckets: HashMap<&str, usize> = HashMap::new();
        for (t, c, _) in &self.chains {
            for r in self
                .rules
                .get(&(t.clone(), c.clone()))
                .into_iter()
                .flatten()
            {
                if let Some(b) = &r.bucket {
                    if let Some(first) = buckets.insert(b, r.line) {
                        errors.push(ImportError {
                            line: r.line,
                            message: format!(
                                "hashlimit bucket `{b}` is shared with line {first}: fw's \
                                 limits are one bucket per rule"
                            ),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(errors);
        }
        // address lists used more than once become defines
        let mut uses: HashMap<Vec<String>, (usize, String)> = HashMap::new();
        for (t, c, _) in &self.chains {
            for r in self
                .rules
                .get(&(t.clone(), c.clone()))
                .into_iter()
                .flatten()
            {
                for (field, a) in [("sources", &r.saddr), ("destinations", &r.daddr)] {
                    if let Some((_, v)) = a {
                        if v.len() > 1 {
                            let name = sub_names
                                .get(&(t.clone(), c.clone()))
                                .cloned()
                                .unwrap_or_else(|| c.to_ascii_lowercase());
                            uses.entry(v.clone())
                                .or_insert((0, format!("{name}-{field}")))
                                .0 += 1;
                        }
                    }
                }
            }
        }
        let mut defines: Vec<(String, Vec<String>)> = Vec::new();
        let mut define_of: HashMap<Vec<String>, String> = HashMap::new();
        let mut lists: Vec<(&Vec<String>, &(usize, String))> =
            uses.iter().filter(|(_, (n, _))| *n > 1).collect();
        lists.sort_by(|a, b| a.1 .1.cmp(&b.1 .1).then(a.0.cmp(b.0)));
        for (v, (_, want)) in lists {
            let name = fw_name(want, &taken);
            taken.push(name.clone());
            defines.push((name.clone(), v.clone()));
            define_of.insert(v.clone(), name);
        }
        let addr_text = |v: &[String]| -> String {
            match define_of.get(v) {
                Some(n) => format!("${n}"),
                None => set_text(v),
            }
        };
        let rule_text = |r: &Rule| -> Vec<String> {
            let mut m: Vec<String> = Vec::new();
            let ne = |n: bool| if n { "!= " } else { "" };
            if let Some((n, i)) = &r.iif {
                m.push(format!("iif {}{i}", ne(*n)));
            }
            if let Some((n, o)) = &r.oif {
                m.push(format!("oif {}{o}", ne(*n)));
            }
            if let Some((n, a)) = &r.saddr {
                m.push(format!("ip saddr {}{}", ne(*n), addr_text(a)));
            }
            if let Some((n, a)) = &r.daddr {
                m.push(format!("ip daddr {}{}", ne(*n), addr_text(a)));
            }
            let l4 = match &r.proto {
                Some((false, p)) if matches!(p.as_str(), "tcp" | "udp" | "icmp") => {
                    Some(p.as_str())
                }
                _ => None,
            };
            match &r.proto {
                Some((n, p)) if *n || l4.is_none() => m.push(format!("ip protocol {}{p}", ne(*n))),
                _ => {}
            }
            if let Some(v) = &r.proto_set {
                m.push(format!("ip protocol {}", set_text(v)));
            }
            let mut used_l4 = false;
            let l4w = l4.unwrap_or("tcp");
            if let Some((n, v)) = &r.sport {
                m.push(format!("{l4w} sport {}{}", ne(*n), set_text(v)));
                used_l4 = true;
            }
            if let Some((n, v)) = &r.dport {
                m.push(format!("{l4w} dport {}{}", ne(*n), set_text(v)));
                used_l4 = true;
            }
            for (n, mask, c) in &r.flags {
                m.push(format!(
                    "tcp flags {}{} / {}",
                    ne(*n),
                    tcpflags::list(*c),
                    tcpflags::list(*mask)
                ));
                used_l4 = used_l4 || l4 == Some("tcp");
            }
            if let Some((n, v)) = &r.icmp {
                m.push(format!("icmp type {}{}", ne(*n), set_text(v)));
                used_l4 = used_l4 || l4 == Some("icmp");
            }
            if let (Some(p), false) = (l4, used_l4) {
                m.insert(
                    m.iter()
                        .position(|x| {
                            !x.starts_with("iif") && !x.starts_with("oif") && !x.starts_with("ip ")
                        })
                        .unwrap_or(m.len()),
                    p.to_string(),
                );
            }
            for (n, v) in &r.ct {
                m.push(format!("ct state {}{}", ne(*n), set_text(v)));
            }
            for (n, v) in &r.mark {
                m.push(format!("mark {}{v}", ne(*n)));
            }
            for (n, v, b) in &r.limits {
                m.push(format!("limit {}{v} burst {b}", ne(*n)));
            }
            for p in &r.stats {
                m.push(format!("statistic probability {p}"));
            }
            let mut lines = Vec::new();
            if let Some((n, v)) = &r.either {
                // either port in the list: the destination port, or else the source port
                let l4w = l4.unwrap_or("tcp");
                let list = set_text(v);
                if *n {
                    let mut a = m.clone();
                    a.push(format!("{l4w} dport != {list} {l4w} sport != {list}"));
                    lines.push(a.join(" "));
                } else {
                    let mut a = m.clone();
                    a.push(format!("{l4w} dport {list}"));
                    lines.push(a.join(" "));
                    let mut b = m.clone();
                    b.push(format!("{l4w} dport != {list} {l4w} sport {list}"));
                    lines.push(b.join(" "));
                }
            } else {
                lines.push(m.join(" "));
            }
            lines
                .into_iter()
                .map(|l| {
                    if l.is_empty() {
                        format!("{};", r.stmt)
                    } else {
                        format!("{l} {};", r.stmt)
                    }
                })
                .collect()
        };
        let mut out = format!("# imported by fwc import from {source}\n");
        if !self.interfaces.is_empty() {
            out.push('\n');
            for i in &self.interfaces {
                let _ = writeln!(out, "{i}");
            }
        }
        if !defines.is_empty() {
            out.push('\n');
            for (n, v) in &defines {
                let _ = writeln!(out, "define {n} = {{ {} }};", v.join(", "));
            }
        }
        let write_rules = |out: &mut String, rules: &[Rule], indent: &str| {
            for r in rules {
                if let Some(c) = &r.comment {
                    let _ = writeln!(out, "{indent}# {}", c.replace('\n', " "));
                }
                for l in rule_text(r) {
                    let _ = writeln!(out, "{indent}{l}");
                }
            }
        };
        for (t, c) in &user {
            let name = &sub_names[&(t.clone(), c.clone())];
            let _ = writeln!(out, "\n# {t} chain {c}\nchain {name} {{");
            if let Some(rs) = self.rules.get(&(t.clone(), c.clone())) {
                write_rules(&mut out, rs, "    ");
            }
            let _ = writeln!(out, "}}");
        }
        for t in TABLES {
            let bases: Vec<(&String, &Option<String>)> = self
                .chains
                .iter()
                .filter(|(tt, c, _)| tt == t && BUILTINS.contains(&c.as_str()))
                .map(|(_, c, p)| (c, p))
                .collect();
            let used: Vec<_> = bases
                .into_iter()
                .filter(|(c, p)| {
                    p.as_deref() == Some("DROP")
                        || self
                            .rules
                            .get(&(t.to_string(), c.to_string()))
                            .is_some_and(|r| !r.is_empty())
                })
                .collect();
            if used.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\ntable {t} {{");
            for (c, p) in used {
                let pol = if p.as_deref() == Some("DROP") {
                    " policy drop"
                } else {
                    ""
                };
                let _ = writeln!(out, "    chain {}{pol} {{", c.to_ascii_lowercase());
                if let Some(rs) = self.rules.get(&(t.to_string(), c.clone())) {
                    write_rules(&mut out, rs, "        ");
                }
                let _ = writeln!(out, "    }}");
            }
            let _ = writeln!(out, "}}");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_iptables_quoting() {
        assert_eq!(
            words(r#"-A INPUT -j LOG --log-prefix "in: \"x\" " -m comment --comment 'a b'"#)
                .unwrap(),
            vec![
                "-A",
                "INPUT",
                "-j",
                "LOG",
                "--log-prefix",
                "in: \"x\" ",
                "-m",
                "comment",
                "--comment",
                "a b"
            ]
        );
        assert!(words("\"open").is_err());
    }

    #[test]
    fn values_translate_or_are_refused() {
        assert_eq!(port("1000:2000").unwrap(), "1000-2000");
        assert_eq!(port(":1023").unwrap(), "0-1023");
        assert_eq!(port("1024:").unwrap(), "1024-65535");
        assert!(port("ssh").is_err());
        assert_eq!(addr("10.0.0.1/32").unwrap(), "10.0.0.1");
        assert_eq!(addr("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(addr("10.0.0.0/255.255.0.0").unwrap(), "10.0.0.0/16");
        assert!(addr("example.com").is_err());
        assert_eq!(iface("eth+").unwrap(), "eth*");
        assert!(iface("eth0.100").is_err());
        assert_eq!(mark("0x10/0xfffffff0").unwrap(), "0x10-0x1f");
        assert!(mark("0x1/0x1").is_err());
        assert_eq!(rate("5/min").unwrap(), "5/minute");
        assert_eq!(icmp_type("8").unwrap(), "echo-request");
        assert!(icmp_type("3/3").is_err());
        assert_eq!(
            u32_pattern("0x6&0xff=0x0:0x5,0x7:0x10"),
            Some(("proto", vec!["0-5".to_string(), "7-16".to_string()]))
        );
    }
}
