//! fw's lexer, grammar and AST.
//!
//! [`parse_file`] turns source text into an [`ast::File`] plus every syntax error found on the
//! way: the grammar recovers at `;` and `}` so one run reports several errors. Nothing here
//! panics on any input.

pub mod ast;
pub mod lexer;

use lalrpop_util::lalrpop_mod;

lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused)]
    grammar,
    "/fw.rs"
);

use ast::{FileId, PacketQuery};
use lalrpop_util::ParseError;
use lexer::{LexError, Lexer, SpannedLexError, Tok};

/// A syntax error: where, and what was expected there, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub start: usize,
    pub end: usize,
    pub kind: SyntaxErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyntaxErrorKind {
    Lex(LexError),
    /// `found` is the described token, `expected` the described alternatives.
    Unexpected {
        found: String,
        expected: Vec<String>,
        /// Where the previous token ended: a missing `;` is reported there.
        prev_end: Option<usize>,
    },
    UnexpectedEof {
        expected: Vec<String>,
    },
    /// A rule or item ended at a line break without its `;`.
    MissingSemi {
        /// Start of the token on the next line.
        before: usize,
    },
}

/// How an expected terminal reads in a message.
pub fn describe_terminal(t: &str) -> String {
    match t {
        "IPV4" => "an address".into(),
        "PREFIX" => "a prefix".into(),
        "IPV6" => "an IPv6 address".into(),
        "INT" => "a number".into(),
        "FLOAT" => "a decimal number".into(),
        "STR" => "a string".into(),
        "VAR" => "a `$variable`".into(),
        "IDENT" => "a name".into(),
        quoted => {
            let inner = quoted.trim_matches('"');
            format!("`{}`", inner.replace("\\\"", "\""))
        }
    }
}

const VALUE_TERMINALS: &[&str] = &[
    "IPV4", "PREFIX", "IPV6", "INT", "FLOAT", "STR", "VAR", "IDENT", "\"{\"",
];
const RULE_TERMINALS: &[&str] = &[
    "\"iif\"",
    "\"oif\"",
    "\"ip\"",
    "\"ip6\"",
    "\"tcp\"",
    "\"udp\"",
    "\"icmp\"",
    "\"ct\"",
    "\"mark\"",
    "\"statistic\"",
    "\"limit\"",
    "\"accept\"",
    "\"drop\"",
    "\"reject\"",
    "\"return\"",
    "\"jump\"",
    "\"goto\"",
    "\"queue\"",
    "\"counter\"",
    "\"log\"",
    "\"audit\"",
    "\"notrack\"",
    "\"snat\"",
    "\"dnat\"",
    "\"masquerade\"",
    "\"redirect\"",
];
const ITEM_TERMINALS: &[&str] = &[
    "\"include\"",
    "\"define\"",
    "\"chain\"",
    "\"table\"",
    "\"service\"",
    "\"interface\"",
    "\"test\"",
    "\"assert\"",
];

/// Describes the expected terminals in words, folding the big families (any value, any
/// match or statement, any item) into one phrase each.
fn describe_expected(expected: &[String]) -> Vec<String> {
    let has = |group: &[&str]| {
        expected
            .iter()
            .filter(|e| group.contains(&e.as_str()))
            .count()
    };
    let mut out = Vec::new();
    let mut skip: Vec<&str> = Vec::new();
    if has(RULE_TERMINALS) >= 6 {
        out.push("a rule".to_string());
        skip.extend(RULE_TERMINALS);
    }
    if has(ITEM_TERMINALS) >= 4 {
        out.push("an item (`table`, `chain`, `define`, `include`, ...)".to_string());
        skip.extend(ITEM_TERMINALS);
    }
    if has(VALUE_TERMINALS) >= 4 {
        out.push("a value (address, prefix, number, name, set or `$variable`)".to_string());
        skip.extend(VALUE_TERMINALS);
    }
    for e in expected {
        if !skip.contains(&e.as_str()) {
            let d = describe_terminal(e);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

type LalrError<'a> = ParseError<usize, Tok<'a>, SpannedLexError>;

fn convert(e: LalrError<'_>, src: &str, prev_end: Option<usize>) -> SyntaxError {
    match e {
        ParseError::InvalidToken { location } => SyntaxError {
            start: location,
            end: (location + 1).min(src.len()),
            kind: SyntaxErrorKind::Lex(LexError::UnknownChar),
        },
        ParseError::UnrecognizedEof { location, expected } => SyntaxError {
            start: location,
            end: location,
            kind: SyntaxErrorKind::UnexpectedEof {
                expected: describe_expected(&expected),
            },
        },
        ParseError::UnrecognizedToken {
            token: (l, t, r),
            expected,
        } => SyntaxError {
            start: l,
            end: r,
            kind: SyntaxErrorKind::Unexpected {
                found: t.describe(),
                expected: describe_expected(&expected),
                prev_end,
            },
        },
        ParseError::ExtraToken { token: (l, t, r) } => SyntaxError {
            start: l,
            end: r,
            kind: SyntaxErrorKind::Unexpected {
                found: t.describe(),
                expected: vec![],
                prev_end,
            },
        },
        ParseError::User { error } => SyntaxError {
            start: error.start,
            end: error.end,
            kind: SyntaxErrorKind::Lex(error.error),
        },
    }
}

/// The end of the last token before `pos`: a missing `;` belongs there.
fn prev_token_end(src: &str, pos: usize) -> Option<usize> {
    let mut last = None;
    for t in Lexer::new(src) {
        let (s, e) = match &t {
            Ok((s, _, e)) => (*s, *e),
            Err(err) => (err.start, err.end),
        };
        if s >= pos {
            break;
        }
        last = Some(e);
    }
    last
}

fn collect_errors(
    src: &str,
    recovered: Vec<lalrpop_util::ErrorRecovery<usize, Tok<'_>, SpannedLexError>>,
    fatal: Option<LalrError<'_>>,
) -> Vec<SyntaxError> {
    let mut out = Vec::new();
    let all = recovered
        .into_iter()
        .map(|r| r.error)
        .chain(fatal)
        .collect::<Vec<_>>();
    for e in all {
        let pos = match &e {
            ParseError::UnrecognizedToken {
                token: (l, _, _), ..
            } => Some(*l),
            _ => None,
        };
        let prev = pos.and_then(|p| prev_token_end(src, p));
        out.push(convert(e, src, prev));
    }
    out.sort_by_key(|e| (e.start, e.end));
    out.dedup_by(|a, b| a.start == b.start && a.end == b.end);
    out
}

type TokResult<'a> = Result<(usize, Tok<'a>, usize), SpannedLexError>;

fn run_file_parser<'a>(
    src: &str,
    file: FileId,
    toks: &[TokResult<'a>],
    semis: &[usize],
) -> (ast::File, Vec<SyntaxError>) {
    let mut stream = Vec::with_capacity(toks.len() + semis.len());
    for (i, t) in toks.iter().enumerate() {
        if semis.contains(&i) {
            let at = match &toks[i - 1] {
                Ok((_, _, e)) => *e,
                Err(e) => e.end,
            };
            stream.push(Ok((at, Tok::Semi, at)));
        }
        stream.push(t.clone());
    }
    let mut recovered = Vec::new();
    let result = grammar::FileParser::new().parse(file, &mut recovered, stream);
    let (ast, fatal) = match result {
        Ok(f) => (f, None),
        Err(e) => (ast::File { items: vec![] }, Some(e)),
    };
    let errors = collect_errors(src, recovered, fatal);
    (ast, errors)
}

fn tok_start(t: &TokResult<'_>) -> usize {
    match t {
        Ok((s, _, _)) => *s,
        Err(e) => e.start,
    }
}

fn tok_end(t: &TokResult<'_>) -> usize {
    match t {
        Ok((_, _, e)) => *e,
        Err(e) => e.end,
    }
}

/// Parses a whole `.fw` file. Always returns a (possibly partial) AST.
///
/// A rule that lacks its `;` at the end of a line is the most common slip; LR parsing alone
/// reports it one token late and with odd expectations (`udp dport` may begin a verdict map).
/// So when a syntax error follows a line break, the parser retries with a `;` at that break;
/// if that removes the error, the diagnostic becomes "expected `;`" at the end of the line and
/// the rule before it is kept.
pub fn parse_file(src: &str, file: FileId) -> (ast::File, Vec<SyntaxError>) {
    let toks: Vec<TokResult<'_>> = Lexer::new(src).collect();
    let mut semis: Vec<usize> = Vec::new();
    let mut missing: Vec<SyntaxError> = Vec::new();
    let (mut ast, mut errors) = run_file_parser(src, file, &toks, &semis);
    for _ in 0..64 {
        let floor = semis.last().map(|&i| tok_start(&toks[i])).unwrap_or(0);
        let Some(first) = errors
            .iter()
            .find(|e| e.start >= floor && !matches!(e.kind, SyntaxErrorKind::Lex(_)))
        else {
            break;
        };
        // the last line break between two tokens at or before the error token
        let mut cand = None;
        for i in 1..toks.len() {
            if tok_start(&toks[i]) > first.start {
                break;
            }
            let gap =
                &src[tok_end(&toks[i - 1]).min(src.len())..tok_start(&toks[i]).min(src.len())];
            let prev_is_closer = matches!(
                &toks[i - 1],
                Ok((_, Tok::Semi | Tok::LBrace | Tok::Comma, _))
            );
            // a `;` may be missing at a line break, or right before a `}` that closes a chain
            let before_brace =
                matches!(&toks[i], Ok((_, Tok::RBrace, _))) && tok_start(&toks[i]) == first.start;
            if (gap.contains('\n') || before_brace)
                && !prev_is_closer
                && tok_start(&toks[i]) >= floor
            {
                cand = Some(i);
            }
        }
        let Some(b) = cand else { break };
        if semis.contains(&b) {
            break;
        }
        let mut trial = semis.clone();
        trial.push(b);
        trial.sort_unstable();
        let (t_ast, t_errors) = run_file_parser(src, file, &toks, &trial);
        let still = t_errors
            .iter()
            .any(|e| e.start <= first.start && e.start >= floor);
        if still {
            break;
        }
        let at = tok_end(&toks[b - 1]);
        missing.push(SyntaxError {
            start: at,
            end: at,
            kind: SyntaxErrorKind::MissingSemi {
                before: tok_start(&toks[b]),
            },
        });
        semis = trial;
        ast = t_ast;
        errors = t_errors;
    }
    errors.extend(missing);
    errors.sort_by_key(|e| (e.start, e.end));
    (ast, errors)
}

/// Parses a packet query (`forward tcp 10.0.0.7:5555 -> 198.51.100.9:443 iif eth1`).
pub fn parse_packet_query(src: &str, file: FileId) -> Result<PacketQuery, Vec<SyntaxError>> {
    let mut recovered = Vec::new();
    let result = grammar::PacketQueryParser::new().parse(file, &mut recovered, Lexer::new(src));
    match result {
        Ok(q) if recovered.is_empty() => Ok(q),
        Ok(_) => Err(collect_errors(src, recovered, None)),
        Err(e) => Err(collect_errors(src, recovered, Some(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ast::*;

    fn parse_ok(src: &str) -> File {
        let (f, errs) = parse_file(src, FileId(0));
        assert!(errs.is_empty(), "unexpected errors: {errs:?}");
        f
    }

    #[test]
    fn rules_with_matches_and_statements() {
        let f = parse_ok(
            "table filter { chain input policy drop {
                ct state established,related accept;
                tcp dport 22 jump incoming-ssh($admins);
                ip saddr != 10.0.0.0/8 log level info prefix \"x \" drop;
                tcp dport vmap { 22 : accept, 8000-8999 : drop };
                mark set 0x1;
            } }",
        );
        let Item::Table(t) = &f.items[0] else {
            panic!()
        };
        let c = &t.chains[0];
        assert_eq!(c.name.name, "input");
        assert_eq!(c.policy.unwrap().0, PolicyKind::Drop);
        assert_eq!(c.rules.len(), 5);
        assert!(c.rules[2].matches[0].negated);
        assert_eq!(c.rules[2].stmts.len(), 2);
        let StmtKind::Vmap { arms, .. } = &c.rules[3].stmts[0].kind else {
            panic!()
        };
        assert_eq!(arms.len(), 2);
        assert!(matches!(c.rules[4].stmts[0].kind, StmtKind::MarkSet(_)));
    }

    #[test]
    fn several_errors_in_one_run() {
        let (f, errs) = parse_file(
            "table filter { chain input {\n tcp dport 22 accept\n udp dport 53 accept;\n ip saddr accept;\n iif lo accept;\n} }",
            FileId(0),
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        let Item::Table(t) = &f.items[0] else {
            panic!()
        };
        // the rule missing its `;` is kept, the broken one is skipped
        assert_eq!(t.chains[0].rules.len(), 3, "{:?}", t.chains[0].rules);
        assert_eq!(errs[0].kind, SyntaxErrorKind::MissingSemi { before: 51 });
        assert_eq!(errs[0].start, 49);
        match &errs[1].kind {
            SyntaxErrorKind::Unexpected {
                found, expected, ..
            } => {
                assert_eq!(found, "`accept`");
                assert!(expected[0].starts_with("a value"), "{expected:?}");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn packet_query() {
        let q = parse_packet_query(
            "forward tcp 10.0.0.7:5555 -> 198.51.100.9:443 iif eth1 oif eth0",
            FileId(0),
        )
        .unwrap();
        assert_eq!(q.path.0, PathKind::Forward);
        assert_eq!(q.packet.opts.len(), 2);
        assert!(parse_packet_query("forward tcp 10.0.0.7:5555 ->", FileId(0)).is_err());
    }
}
