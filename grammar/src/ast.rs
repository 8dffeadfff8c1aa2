//! The abstract syntax tree. Every node that a diagnostic may point at carries a [`Span`].

use std::fmt;
use std::net::Ipv4Addr;

/// Index of a source file in the compiler's source map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }
    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Include(IncludeItem),
    Define(DefineItem),
    Chain(ChainDecl),
    Table(TableDecl),
    Service(ServiceDecl),
    Interface(InterfaceDecl),
    Test(TestBlock),
    Assert(AssertBlock),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncludeItem {
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DefineItem {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: TypeExpr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeExpr {
    Named(Ident),
    Set(Box<TypeExpr>, Span),
}

impl TypeExpr {
    pub fn span(&self) -> Span {
        match self {
            TypeExpr::Named(i) => i.span,
            TypeExpr::Set(_, s) => *s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainDecl {
    pub name: Ident,
    /// `None` when the chain has no parentheses at all.
    pub params: Option<Vec<Param>>,
    pub policy: Option<(PolicyKind, Span)>,
    pub rules: Vec<Rule>,
    /// The `chain NAME(...)` header.
    pub head_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableDecl {
    pub name: Ident,
    pub chains: Vec<ChainDecl>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
}

impl L4 {
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Icmp => "icmp",
        }
    }
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Icmp => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortDir {
    Sport,
    Dport,
}

/// What a comparison match (or a verdict map) looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selector {
    Iif,
    Oif,
    IpSaddr,
    IpDaddr,
    IpProtocol,
    Port(L4, PortDir),
    IcmpType,
    Mark,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Iif => f.write_str("iif"),
            Selector::Oif => f.write_str("oif"),
            Selector::IpSaddr => f.write_str("ip saddr"),
            Selector::IpDaddr => f.write_str("ip daddr"),
            Selector::IpProtocol => f.write_str("ip protocol"),
            Selector::Port(l4, PortDir::Sport) => write!(f, "{} sport", l4.name()),
            Selector::Port(l4, PortDir::Dport) => write!(f, "{} dport", l4.name()),
            Selector::IcmpType => f.write_str("icmp type"),
            Selector::Mark => f.write_str("mark"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub kind: MatchKind,
    pub negated: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchKind {
    Cmp {
        sel: Selector,
        sel_span: Span,
        value: Expr,
    },
    /// `tcp`, `udp` or `icmp` alone.
    Proto(L4),
    TcpFlags {
        flags: Vec<Ident>,
        mask: Option<Vec<Ident>>,
    },
    CtState(Vec<Ident>),
    Statistic(Expr),
    Limit {
        rate: Expr,
        burst: Option<Expr>,
    },
    /// `ip6 ...`: parsed so that it can be rejected with a clear diagnostic.
    Ip6,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Ipv4(Ipv4Addr),
    Ipv6(String),
    Prefix(Ipv4Addr, u32),
    IpRange(Ipv4Addr, Ipv4Addr),
    Int(u64),
    IntRange(u64, u64),
    Float(f64),
    Str(String),
    Rate(u64, Ident),
    Set(Vec<Expr>),
    Var(String),
    Ident(String),
    /// where the parser recovered from a syntax error (already reported)
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Expr>,
    /// Span of the argument list including parentheses, when present.
    pub args_span: Option<Span>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RejectWith {
    /// `with tcp-reset` (or any other bare name, checked later).
    Named(Ident),
    /// `with icmp NAME`
    Icmp(Ident),
}

/// `to ADDR[:PORTS]`, `to :PORTS` or `to PORTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct NatTo {
    pub addr: Option<Expr>,
    pub ports: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    Accept,
    Drop,
    Reject(Option<RejectWith>),
    Return,
    Jump(Call),
    Goto(Call),
    Queue {
        num: Option<Expr>,
        bypass: bool,
    },
    Counter,
    Log {
        level: Option<Ident>,
        prefix: Option<Expr>,
    },
    Audit,
    MarkSet(Expr),
    TtlSet(Expr),
    Notrack,
    Snat {
        to: NatTo,
        random: bool,
        persistent: bool,
    },
    Dnat {
        to: NatTo,
        random: bool,
        persistent: bool,
    },
    Masquerade {
        to: Option<NatTo>,
        random: bool,
    },
    Redirect {
        to: Option<NatTo>,
    },
    Vmap {
        sel: Selector,
        sel_span: Span,
        arms: Vec<VmapArm>,
    },
}

impl StmtKind {
    /// The keyword a user would recognise the statement by.
    pub fn keyword(&self) -> &'static str {
        match self {
            StmtKind::Accept => "accept",
            StmtKind::Drop => "drop",
            StmtKind::Reject(_) => "reject",
            StmtKind::Return => "return",
            StmtKind::Jump(_) => "jump",
            StmtKind::Goto(_) => "goto",
            StmtKind::Queue { .. } => "queue",
            StmtKind::Counter => "counter",
            StmtKind::Log { .. } => "log",
            StmtKind::Audit => "audit",
            StmtKind::MarkSet(_) => "mark set",
            StmtKind::TtlSet(_) => "ip ttl set",
            StmtKind::Notrack => "notrack",
            StmtKind::Snat { .. } => "snat",
            StmtKind::Dnat { .. } => "dnat",
            StmtKind::Masquerade { .. } => "masquerade",
            StmtKind::Redirect { .. } => "redirect",
            StmtKind::Vmap { .. } => "vmap",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmapArm {
    pub key: Expr,
    pub verdict: Stmt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDecl {
    pub name: Ident,
    pub entries: Vec<ServiceEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServiceEntry {
    Virtual {
        proto: L4,
        addr: Expr,
        port: Expr,
        span: Span,
    },
    Scheduler(Ident),
    Real {
        addr: Expr,
        port: Expr,
        weight: Option<Expr>,
        method: Option<Ident>,
        span: Span,
    },
    Persistent {
        timeout: Option<Expr>,
        span: Span,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceDecl {
    pub name: Ident,
    pub addrs: Vec<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Input,
    Forward,
    Output,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Input => "input",
            PathKind::Forward => "forward",
            PathKind::Output => "output",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKw {
    Accept,
    Drop,
    Reject,
    Queue,
}

impl VerdictKw {
    pub fn name(self) -> &'static str {
        match self {
            VerdictKw::Accept => "accept",
            VerdictKw::Drop => "drop",
            VerdictKw::Reject => "reject",
            VerdictKw::Queue => "queue",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub addr: Expr,
    pub port: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PacketOpt {
    Iif(Ident),
    Oif(Ident),
    CtState(Ident),
    Mark(Expr),
    Type(Expr),
    Flags(Vec<Ident>),
}

/// `tcp 10.0.0.1:40000 -> 192.0.2.1:22 iif eth0 ...`
#[derive(Debug, Clone, PartialEq)]
pub struct PacketSpec {
    pub proto: (L4, Span),
    pub src: Endpoint,
    pub dst: Endpoint,
    pub opts: Vec<(PacketOpt, Span)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestLine {
    pub path: (PathKind, Span),
    pub packet: PacketSpec,
    pub expect: (VerdictKw, Span),
    pub expect_as: Option<(Endpoint, Endpoint)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestBlock {
    pub name: String,
    pub lines: Vec<TestLine>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    Never,
    Always,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssertLine {
    pub quant: Quantifier,
    pub path: (PathKind, Span),
    pub verdict: (VerdictKw, Span),
    pub matches: Vec<Match>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssertBlock {
    pub name: String,
    pub lines: Vec<AssertLine>,
    pub span: Span,
}

/// A packet query, as `fwc explain` takes it: `PATH PACKET`.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketQuery {
    pub path: (PathKind, Span),
    pub packet: PacketSpec,
}
