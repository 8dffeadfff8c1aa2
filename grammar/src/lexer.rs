//! The logos lexer. Tokens borrow from the source; positions are byte offsets.

use logos::Logos;
use std::fmt;
use std::net::Ipv4Addr;

/// Why a piece of input is not a token.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LexError {
    #[default]
    UnknownChar,
    BadIpv4,
    BadInt,
    BadFloat,
    UnterminatedString,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LexError::UnknownChar => "unexpected character",
            LexError::BadIpv4 => "invalid IPv4 address (each of the four parts must be 0..=255)",
            LexError::BadInt => "integer literal too large",
            LexError::BadFloat => "invalid decimal number",
            LexError::UnterminatedString => "unterminated string literal",
        })
    }
}

fn ipv4<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> Result<Ipv4Addr, LexError> {
    lex.slice().parse().map_err(|_| LexError::BadIpv4)
}

fn prefix<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> Result<(Ipv4Addr, u32), LexError> {
    let s = lex.slice();
    let (a, l) = s.split_once('/').ok_or(LexError::BadIpv4)?;
    let addr = a.parse().map_err(|_| LexError::BadIpv4)?;
    let len = l.parse::<u32>().map_err(|_| LexError::BadInt)?;
    Ok((addr, len))
}

fn int<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> Result<u64, LexError> {
    let s = lex.slice();
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|_| LexError::BadInt)
}

fn float<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> Result<f64, LexError> {
    lex.slice().parse().map_err(|_| LexError::BadFloat)
}

fn unterminated<'a>(_: &mut logos::Lexer<'a, Tok<'a>>) -> Result<(), LexError> {
    Err(LexError::UnterminatedString)
}

fn string<'a>(lex: &mut logos::Lexer<'a, Tok<'a>>) -> String {
    let s = lex.slice();
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The language's keywords (every word the lexer makes a token of its own).
pub const KEYWORDS: &[&str] = &[
    "include",
    "define",
    "chain",
    "table",
    "service",
    "interface",
    "test",
    "assert",
    "policy",
    "prerouting",
    "input",
    "forward",
    "output",
    "postrouting",
    "iif",
    "oif",
    "ip",
    "ip6",
    "saddr",
    "daddr",
    "protocol",
    "tcp",
    "udp",
    "icmp",
    "sport",
    "dport",
    "flags",
    "type",
    "ct",
    "state",
    "mark",
    "statistic",
    "probability",
    "limit",
    "burst",
    "vmap",
    "accept",
    "drop",
    "reject",
    "with",
    "return",
    "jump",
    "goto",
    "queue",
    "num",
    "bypass",
    "counter",
    "log",
    "level",
    "prefix",
    "audit",
    "set",
    "ttl",
    "notrack",
    "snat",
    "dnat",
    "masquerade",
    "redirect",
    "to",
    "random",
    "persistent",
    "virtual",
    "scheduler",
    "real",
    "weight",
    "never",
    "always",
    "as",
    "address",
];

#[derive(Logos, Debug, Clone, PartialEq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"#[^\n]*", allow_greedy = true))]
pub enum Tok<'a> {
    // ---- punctuation
    #[token(";")]
    Semi,
    #[token(",")]
    Comma,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("<")]
    Lt,
    #[token(">")]
    Gt,
    #[token(":")]
    Colon,
    #[token("/")]
    Slash,
    #[token("-")]
    Minus,
    #[token("->")]
    Arrow,
    #[token("=>")]
    FatArrow,
    #[token("=")]
    Eq,
    #[token("!=")]
    Ne,

    // ---- literals
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", ipv4)]
    Ipv4(Ipv4Addr),
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+", prefix)]
    Prefix((Ipv4Addr, u32)),
    #[regex(r"([0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(/[0-9]+)?")]
    Ipv6(&'a str),
    #[regex(r"[0-9]+", int)]
    #[regex(r"0[xX][0-9a-fA-F]+", int)]
    Int(u64),
    #[regex(r"[0-9]+\.[0-9]+", float)]
    Float(f64),
    #[regex(r#""([^"\\\n]|\\.)*""#, string)]
    Str(String),
    #[regex(r#""([^"\\\n]|\\.)*"#, callback = unterminated)]
    BadStr,
    #[regex(r"\$[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*", |lex| &lex.slice()[1..])]
    Var(&'a str),
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*\*?")]
    Ident(&'a str),

    // ---- item keywords
    #[token("include")]
    Include,
    #[token("define")]
    Define,
    #[token("chain")]
    Chain,
    #[token("table")]
    Table,
    #[token("service")]
    Service,
    #[token("interface")]
    Interface,
    #[token("test")]
    Test,
    #[token("assert")]
    Assert,
    #[token("policy")]
    Policy,

    // ---- hooks (also test paths and base chain names)
    #[token("prerouting")]
    Prerouting,
    #[token("input")]
    Input,
    #[token("forward")]
    Forward,
    #[token("output")]
    Output,
    #[token("postrouting")]
    Postrouting,

    // ---- matches
    #[token("iif")]
    Iif,
    #[token("oif")]
    Oif,
    #[token("ip")]
    Ip,
    #[token("ip6")]
    Ip6,
    #[token("saddr")]
    Saddr,
    #[token("daddr")]
    Daddr,
    #[token("protocol")]
    Protocol,
    #[token("tcp")]
    Tcp,
    #[token("udp")]
    Udp,
    #[token("icmp")]
    Icmp,
    #[token("sport")]
    Sport,
    #[token("dport")]
    Dport,
    #[token("flags")]
    Flags,
    #[token("type")]
    Type,
    #[token("ct")]
    Ct,
    #[token("state")]
    State,
    #[token("mark")]
    Mark,
    #[token("statistic")]
    Statistic,
    #[token("probability")]
    Probability,
    #[token("limit")]
    Limit,
    #[token("burst")]
    Burst,
    #[token("vmap")]
    Vmap,

    // ---- statements
    #[token("accept")]
    Accept,
    #[token("drop")]
    Drop,
    #[token("reject")]
    Reject,
    #[token("with")]
    With,
    #[token("return")]
    Return,
    #[token("jump")]
    Jump,
    #[token("goto")]
    Goto,
    #[token("queue")]
    Queue,
    #[token("num")]
    Num,
    #[token("bypass")]
    Bypass,
    #[token("counter")]
    Counter,
    #[token("log")]
    Log,
    #[token("level")]
    Level,
    #[token("prefix")]
    PrefixKw,
    #[token("audit")]
    Audit,
    #[token("set")]
    Set,
    #[token("ttl")]
    Ttl,
    #[token("notrack")]
    Notrack,
    #[token("snat")]
    Snat,
    #[token("dnat")]
    Dnat,
    #[token("masquerade")]
    Masquerade,
    #[token("redirect")]
    Redirect,
    #[token("to")]
    To,
    #[token("random")]
    Random,
    #[token("persistent")]
    Persistent,

    // ---- services, tests, asserts
    #[token("virtual")]
    Virtual,
    #[token("scheduler")]
    Scheduler,
    #[token("real")]
    Real,
    #[token("weight")]
    Weight,
    #[token("never")]
    Never,
    #[token("always")]
    Always,
    #[token("as")]
    As,
    #[token("address")]
    Address,
}

impl Tok<'_> {
    /// How the token reads in a diagnostic: keywords and punctuation quoted, literals by kind.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ipv4(a) => format!("address `{a}`"),
            Tok::Prefix((a, l)) => format!("prefix `{a}/{l}`"),
            Tok::Ipv6(s) => format!("IPv6 literal `{s}`"),
            Tok::Int(i) => format!("integer `{i}`"),
            Tok::Float(f) => format!("number `{f}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::BadStr => "unterminated string".into(),
            Tok::Var(v) => format!("variable `${v}`"),
            Tok::Ident(i) => format!("identifier `{i}`"),
            other => format!("`{}`", other.spelling().unwrap_or("?")),
        }
    }

    /// The fixed text of a keyword or punctuation token.
    pub fn spelling(&self) -> Option<&'static str> {
        Some(match self {
            Tok::Semi => ";",
            Tok::Comma => ",",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Lt => "<",
            Tok::Gt => ">",
            Tok::Colon => ":",
            Tok::Slash => "/",
            Tok::Minus => "-",
            Tok::Arrow => "->",
            Tok::FatArrow => "=>",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Include => "include",
            Tok::Define => "define",
            Tok::Chain => "chain",
            Tok::Table => "table",
            Tok::Service => "service",
            Tok::Interface => "interface",
            Tok::Test => "test",
            Tok::Assert => "assert",
            Tok::Policy => "policy",
            Tok::Prerouting => "prerouting",
            Tok::Input => "input",
            Tok::Forward => "forward",
            Tok::Output => "output",
            Tok::Postrouting => "postrouting",
            Tok::Iif => "iif",
            Tok::Oif => "oif",
            Tok::Ip => "ip",
            Tok::Ip6 => "ip6",
            Tok::Saddr => "saddr",
            Tok::Daddr => "daddr",
            Tok::Protocol => "protocol",
            Tok::Tcp => "tcp",
            Tok::Udp => "udp",
            Tok::Icmp => "icmp",
            Tok::Sport => "sport",
            Tok::Dport => "dport",
            Tok::Flags => "flags",
            Tok::Type => "type",
            Tok::Ct => "ct",
            Tok::State => "state",
            Tok::Mark => "mark",
            Tok::Statistic => "statistic",
            Tok::Probability => "probability",
            Tok::Limit => "limit",
            Tok::Burst => "burst",
            Tok::Vmap => "vmap",
            Tok::Accept => "accept",
            Tok::Drop => "drop",
            Tok::Reject => "reject",
            Tok::With => "with",
            Tok::Return => "return",
            Tok::Jump => "jump",
            Tok::Goto => "goto",
            Tok::Queue => "queue",
            Tok::Num => "num",
            Tok::Bypass => "bypass",
            Tok::Counter => "counter",
            Tok::Log => "log",
            Tok::Level => "level",
            Tok::PrefixKw => "prefix",
            Tok::Audit => "audit",
            Tok::Set => "set",
            Tok::Ttl => "ttl",
            Tok::Notrack => "notrack",
            Tok::Snat => "snat",
            Tok::Dnat => "dnat",
            Tok::Masquerade => "masquerade",
            Tok::Redirect => "redirect",
            Tok::To => "to",
            Tok::Random => "random",
            Tok::Persistent => "persistent",
            Tok::Virtual => "virtual",
            Tok::Scheduler => "scheduler",
            Tok::Real => "real",
            Tok::Weight => "weight",
            Tok::Never => "never",
            Tok::Always => "always",
            Tok::As => "as",
            Tok::Address => "address",
            _ => return None,
        })
    }
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A spanned token stream in the shape lalrpop wants: `(start, token, end)` or a lexical error.
pub struct Lexer<'a> {
    inner: logos::SpannedIter<'a, Tok<'a>>,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            inner: Tok::lexer(src).spanned(),
        }
    }
}

/// A lexical error with its byte range.
#[derive(Debug, Clone, PartialEq)]
pub struct SpannedLexError {
    pub error: LexError,
    pub start: usize,
    pub end: usize,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<(usize, Tok<'a>, usize), SpannedLexError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (tok, span) = self.inner.next()?;
        Some(match tok {
            Ok(t) => Ok((span.start, t, span.end)),
            Err(error) => Err(SpannedLexError {
                error,
                start: span.start,
                end: span.end,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        Lexer::new(s).map(|r| r.unwrap().1).collect()
    }

    #[test]
    fn hyphenated_identifiers_and_ranges() {
        assert_eq!(
            toks("echo-request 1024-65535 tcp-reset eth*"),
            vec![
                Tok::Ident("echo-request"),
                Tok::Int(1024),
                Tok::Minus,
                Tok::Int(65535),
                Tok::Ident("tcp-reset"),
                Tok::Ident("eth*"),
            ]
        );
    }

    #[test]
    fn addresses_prefixes_and_ports() {
        assert_eq!(
            toks("10.0.0.0/8 10.0.0.5:80 10.0.0.1-10.0.0.9 0.5 0x10"),
            vec![
                Tok::Prefix(("10.0.0.0".parse().unwrap(), 8)),
                Tok::Ipv4("10.0.0.5".parse().unwrap()),
                Tok::Colon,
                Tok::Int(80),
                Tok::Ipv4("10.0.0.1".parse().unwrap()),
                Tok::Minus,
                Tok::Ipv4("10.0.0.9".parse().unwrap()),
                Tok::Float(0.5),
                Tok::Int(16),
            ]
        );
    }

    #[test]
    fn keywords_comments_strings_vars() {
        assert_eq!(
            toks("log prefix \"a\\\"b\" # comment\n$admins 10/second"),
            vec![
                Tok::Log,
                Tok::PrefixKw,
                Tok::Str("a\"b".into()),
                Tok::Var("admins"),
                Tok::Int(10),
                Tok::Slash,
                Tok::Ident("second"),
            ]
        );
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let errs: Vec<_> = Lexer::new("300.1.1.1 @ \"abc")
            .filter_map(|r| r.err())
            .map(|e| e.error)
            .collect();
        assert_eq!(
            errs,
            vec![
                LexError::BadIpv4,
                LexError::UnknownChar,
                LexError::UnterminatedString
            ]
        );
    }

    #[test]
    fn ipv6_is_a_token_of_its_own() {
        assert_eq!(toks("fe80::1"), vec![Tok::Ipv6("fe80::1")]);
    }

    #[test]
    fn every_keyword_is_a_token_of_its_own() {
        for k in KEYWORDS {
            let toks: Vec<_> = Lexer::new(k).collect();
            assert_eq!(toks.len(), 1, "{k}");
            let (_, t, _) = toks[0].as_ref().unwrap();
            assert_eq!(t.spelling(), Some(*k), "{k}");
        }
    }
}
