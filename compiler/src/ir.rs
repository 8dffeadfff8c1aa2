//! The typed IR: what every back end (interpreter, JIT, kernel exporters) consumes.
//!
//! * Chains live in one arena (`Program::chains`), referred to by [`ChainId`]. A subchain with
//!   parameters is *instantiated* once per distinct argument list, so the IR holds constants
//!   only: every predicate compares a packet field with a literal.
//! * A rule is a conjunction of [`Pred`]s and a list of [`Stmt`]s; at most the last statement
//!   terminates. Every rule has a program-wide [`RuleId`] (its index in `Program::rule_locs`).
//! * Base chains are listed per hook in kernel priority order (`Program::hooks`).
//!
//! [`verify`] checks these invariants; [`print`] is the stable text form (`--emit ir`).

use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
    pub fn from_name(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == s)
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    Raw,
    Mangle,
    Nat,
    Filter,
    Security,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Raw,
        Table::Mangle,
        Table::Nat,
        Table::Filter,
        Table::Security,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Filter => "filter",
            Table::Security => "security",
        }
    }
    pub fn from_name(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == s)
    }
    /// The hooks this table may be attached to.
    pub fn hooks(self) -> &'static [Hook] {
        use Hook::*;
        match self {
            Table::Raw => &[Prerouting, Output],
            Table::Mangle => &[Prerouting, Input, Forward, Output, Postrouting],
            Table::Nat => &[Prerouting, Input, Output, Postrouting],
            Table::Filter | Table::Security => &[Input, Forward, Output],
        }
    }
    /// Netfilter priority of this table at `hook` (lower runs first).
    pub fn priority(self, hook: Hook) -> i32 {
        match self {
            Table::Raw => -300,
            Table::Mangle => -150,
            Table::Nat => match hook {
                Hook::Prerouting | Hook::Output => -100,
                _ => 100,
            },
            Table::Filter => 0,
            Table::Security => 50,
        }
    }
}

/// Priority of connection tracking's lookup at prerouting and output.
pub const CONNTRACK_PRIORITY: i32 = -200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Accept,
    Drop,
}

/// Where a rule or chain came from, resolved to a line for traces without the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Loc {
    pub file: u32,
    pub start: u32,
    pub end: u32,
    pub line: u32,
}

/// Numeric packet fields (all compared as `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Field {
    Saddr,
    Daddr,
    Proto,
    Sport,
    Dport,
    IcmpType,
    Mark,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Saddr => "ip saddr",
            Field::Daddr => "ip daddr",
            Field::Proto => "ip protocol",
            Field::Sport => "th sport",
            Field::Dport => "th dport",
            Field::IcmpType => "icmp type",
            Field::Mark => "mark",
        }
    }
    /// Largest value of the field.
    pub fn max_value(self) -> u32 {
        match self {
            Field::Saddr | Field::Daddr | Field::Mark => u32::MAX,
            Field::Proto | Field::IcmpType => 255,
            Field::Sport | Field::Dport => 65535,
        }
    }
    pub fn is_addr(self) -> bool {
        matches!(self, Field::Saddr | Field::Daddr)
    }
}

/// A constant a field is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Elem {
    Exact(u32),
    /// address and prefix length; host bits are zero
    Prefix(u32, u8),
    /// inclusive
    Range(u32, u32),
}

impl Elem {
    /// Inclusive bounds.
    pub fn bounds(&self) -> (u32, u32) {
        match *self {
            Elem::Exact(v) => (v, v),
            Elem::Prefix(a, l) => {
                let mask = prefix_mask(l);
                (a & mask, (a & mask) | !mask)
            }
            Elem::Range(a, b) => (a, b),
        }
    }
    pub fn contains(&self, v: u32) -> bool {
        let (lo, hi) = self.bounds();
        lo <= v && v <= hi
    }
}

pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operand {
    One(Elem),
    /// a non-empty set, elements in source order
    Set(Vec<Elem>),
}

impl Operand {
    pub fn elems(&self) -> &[Elem] {
        match self {
            Operand::One(e) => std::slice::from_ref(e),
            Operand::Set(v) => v,
        }
    }
    pub fn contains(&self, v: u32) -> bool {
        self.elems().iter().any(|e| e.contains(v))
    }
}

/// An interface name; `eth*` matches every name starting with `eth`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IfName {
    pub name: String,
    pub wildcard: bool,
}

impl IfName {
    pub fn parse(s: &str) -> IfName {
        match s.strip_suffix('*') {
            Some(p) => IfName {
                name: p.to_string(),
                wildcard: true,
            },
            None => IfName {
                name: s.to_string(),
                wildcard: false,
            },
        }
    }
    pub fn matches(&self, iface: Option<&str>) -> bool {
        match iface {
            None => false,
            Some(i) => {
                if self.wildcard {
                    i.starts_with(&self.name)
                } else {
                    i == self.name
                }
            }
        }
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "{}*", self.name)
        } else if self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            && !self.name.is_empty()
        {
            f.write_str(&self.name)
        } else {
            write!(f, "{:?}", self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IfDir {
    In,
    Out,
}

/// Conntrack states as bits (`ct state` masks).
pub mod ct {
    pub const NEW: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    pub const INVALID: u8 = 8;
    pub const UNTRACKED: u8 = 16;
    pub const ALL: u8 = 31;
    pub const NAMES: [(&str, u8); 5] = [
        ("new", NEW),
        ("established", ESTABLISHED),
        ("related", RELATED),
        ("invalid", INVALID),
        ("untracked", UNTRACKED),
    ];
    pub fn from_name(s: &str) -> Option<u8> {
        NAMES.iter().find(|(n, _)| *n == s).map(|(_, b)| *b)
    }
    pub fn names(mask: u8) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(_, b)| mask & b != 0)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// TCP flag bits, as in the TCP header's flags byte.
pub mod tcpflags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const NAMES: [(&str, u8); 6] = [
        ("fin", FIN),
        ("syn", SYN),
        ("rst", RST),
        ("psh", PSH),
        ("ack", ACK),
        ("urg", URG),
    ];
    /// A flag's bit; also `none` (no bit, iptables' NONE) and `all` (every bit, ALL).
    pub fn from_name(s: &str) -> Option<u8> {
        match s {
            "none" => Some(0),
            "all" => Some(0x3f),
            _ => NAMES.iter().find(|(n, _)| *n == s).map(|(_, b)| *b),
        }
    }
    pub fn names(mask: u8) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(_, b)| mask & b != 0)
            .map(|(n, _)| *n)
            .collect()
    }
    /// The flags as fw writes them: `syn,ack`, or `none`.
    pub fn list(mask: u8) -> String {
        if mask == 0 {
            "none".into()
        } else {
            names(mask).join(",")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pred {
    /// `field [!=] operand`
    Field {
        field: Field,
        neg: bool,
        op: Operand,
    },
    Iface {
        dir: IfDir,
        neg: bool,
        names: Vec<IfName>,
    },
    /// packet's ct state bit in `mask` (xor `neg`)
    CtState { neg: bool, mask: u8 },
    /// `flags & mask == value` (xor `neg`); the rule also has `ip protocol 6`
    TcpFlags { neg: bool, mask: u8, value: u8 },
    /// matches with probability `p` (`-m statistic --mode random`)
    Statistic { p: f64 },
    /// token bucket: `rate` packets per `per_secs`, burst `burst`; `neg` = over the limit
    Limit {
        neg: bool,
        rate: u64,
        per_secs: u64,
        burst: u32,
    },
}

impl Pred {
    /// Whether the outcome depends on state or chance rather than on the packet alone.
    pub fn is_stateful(&self) -> bool {
        matches!(self, Pred::Statistic { .. } | Pred::Limit { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectKind {
    /// ICMP destination unreachable with this code (port-unreachable = 3, the default)
    IcmpUnreach(u8),
    TcpReset,
}

/// The address and port part of a NAT statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRange {
    /// inclusive address range; `None` keeps the address
    pub addr: Option<(u32, u32)>,
    /// inclusive port range; `None` keeps the port
    pub ports: Option<(u16, u16)>,
    pub random: bool,
    pub persistent: bool,
}

/// Which packet a verdict-map arm matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VmapKey {
    Field(Field),
    Iface(IfDir),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VmapArmKey {
    Num(Elem),
    Iface(IfName),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmapArm {
    pub key: VmapArmKey,
    pub verdict: Stmt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    Accept,
    Drop,
    Reject(RejectKind),
    Return,
    Jump(ChainId),
    Goto(ChainId),
    Queue {
        num: u16,
        bypass: bool,
    },
    Counter,
    Log {
        level: u8,
        prefix: String,
    },
    Audit,
    MarkSet(u32),
    TtlSet(u8),
    Notrack,
    Snat(NatRange),
    Dnat(NatRange),
    Masquerade(NatRange),
    Redirect(NatRange),
    /// one lookup on `key`; a miss goes on to the next rule
    Vmap {
        key: VmapKey,
        arms: Vec<VmapArm>,
    },
}

impl Stmt {
    /// Ends the rule list of the current chain when reached (a vmap only when it hits).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Stmt::Accept
                | Stmt::Drop
                | Stmt::Reject(_)
                | Stmt::Return
                | Stmt::Goto(_)
                | Stmt::Queue { .. }
                | Stmt::Snat(_)
                | Stmt::Dnat(_)
                | Stmt::Masquerade(_)
                | Stmt::Redirect(_)
        )
    }
    pub fn is_nat(&self) -> bool {
        matches!(
            self,
            Stmt::Snat(_) | Stmt::Dnat(_) | Stmt::Masquerade(_) | Stmt::Redirect(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: RuleId,
    pub preds: Vec<Pred>,
    pub stmts: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChainKind {
    Base {
        table: Table,
        hook: Hook,
        policy: Policy,
    },
    /// An instance of a subchain; `args` is the printed argument list.
    Sub { args: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub kind: ChainKind,
    pub rules: Vec<Rule>,
    pub loc: Loc,
}

impl Chain {
    /// `filter/input` for base chains, `name(args)` for subchain instances.
    pub fn display_name(&self) -> String {
        match &self.kind {
            ChainKind::Base { table, hook, .. } => format!("{}/{}", table.name(), hook.name()),
            ChainKind::Sub { args } if args.is_empty() => self.name.clone(),
            ChainKind::Sub { args } => format!("{}({})", self.name, args.join(", ")),
        }
    }
}

/// An IPVS virtual service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub proto: u8,
    pub vip: u32,
    pub port: u16,
    pub scheduler: String,
    pub persistent: Option<u32>,
    pub reals: Vec<RealServer>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarding {
    Nat,
    Dr,
    Tunnel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealServer {
    pub addr: u32,
    pub port: u16,
    pub weight: u32,
    pub forward: Forwarding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub addrs: Vec<u32>,
}

/// A base chain's place at a hook.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HookEntry {
    pub priority: i32,
    pub table: Table,
    pub chain: ChainId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub chains: Vec<Chain>,
    /// per hook (indexed by `Hook::index`), sorted by priority
    pub hooks: [Vec<HookEntry>; 5],
    /// location of each rule, indexed by `RuleId`
    pub rule_locs: Vec<Loc>,
    /// source file names, indexed by `Loc::file`
    pub files: Vec<String>,
    pub services: Vec<Service>,
    pub interfaces: Vec<Interface>,
}

impl Program {
    pub fn chain(&self, id: ChainId) -> &Chain {
        &self.chains[id.0 as usize]
    }
    pub fn rule_count(&self) -> usize {
        self.rule_locs.len()
    }
    pub fn interface_addr(&self, name: &str) -> Option<u32> {
        self.interfaces
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.addrs.first().copied())
    }
    /// `file:line` of a rule.
    pub fn rule_location(&self, id: RuleId) -> String {
        let l = self.rule_locs[id.0 as usize];
        format!(
            "{}:{}",
            self.files
                .get(l.file as usize)
                .map(String::as_str)
                .unwrap_or("?"),
            l.line
        )
    }
}

// ------------------------------------------------------------------------------------------
// verifier

/// Checks the IR's invariants; returns every violation found.
pub fn verify(p: &Program) -> Vec<String> {
    let mut errs = Vec::new();
    let n = p.chains.len() as u32;
    let mut seen_rules = vec![false; p.rule_locs.len()];
    for (ci, c) in p.chains.iter().enumerate() {
        for (ri, r) in c.rules.iter().enumerate() {
            let where_ = format!("chain {} rule {}", c.display_name(), ri);
            match seen_rules.get_mut(r.id.0 as usize) {
                Some(s) if !*s => *s = true,
                Some(_) => errs.push(format!("{where_}: rule id {} used twice", r.id.0)),
                None => errs.push(format!("{where_}: rule id {} has no location", r.id.0)),
            }
            if r.stmts.is_empty() {
                errs.push(format!("{where_}: no statement"));
            }
            for (si, s) in r.stmts.iter().enumerate() {
                if s.is_terminal() && si + 1 != r.stmts.len() {
                    errs.push(format!("{where_}: terminal statement not last"));
                }
                let mut targets: Vec<ChainId> = Vec::new();
                match s {
                    Stmt::Jump(t) | Stmt::Goto(t) => targets.push(*t),
                    Stmt::Vmap { arms, .. } => {
                        for a in arms {
                            if let Stmt::Jump(t) | Stmt::Goto(t) = a.verdict {
                                targets.push(t);
                            }
                            if !a.verdict.is_terminal() && !matches!(a.verdict, Stmt::Jump(_)) {
                                errs.push(format!("{where_}: vmap arm is not a verdict"));
                            }
                        }
                    }
                    _ => {}
                }
                for t in targets {
                    if t.0 >= n {
                        errs.push(format!("{where_}: call to missing chain {}", t.0));
                    } else if matches!(p.chains[t.0 as usize].kind, ChainKind::Base { .. }) {
                        errs.push(format!("{where_}: call to a base chain"));
                    } else if t.0 as usize == ci {
                        errs.push(format!("{where_}: chain calls itself"));
                    }
                }
            }
            let has_ports = r.preds.iter().any(|pr| {
                matches!(
                    pr,
                    Pred::Field {
                        field: Field::Sport | Field::Dport,
                        ..
                    }
                )
            });
            if has_ports {
                let proto_ok = r.preds.iter().any(|pr| match pr {
                    Pred::Field {
                        field: Field::Proto,
                        neg: false,
                        op,
                    } => op.elems().iter().all(|e| {
                        let (lo, hi) = e.bounds();
                        (lo == 6 || lo == 17) && (hi == 6 || hi == 17)
                    }),
                    _ => false,
                });
                if !proto_ok {
                    errs.push(format!("{where_}: port predicate without tcp/udp protocol"));
                }
            }
            for pr in &r.preds {
                if let Pred::Field { field, op, .. } = pr {
                    if let Operand::Set(v) = op {
                        if v.is_empty() {
                            errs.push(format!("{where_}: empty set"));
                        }
                    }
                    for e in op.elems() {
                        let (lo, hi) = e.bounds();
                        if lo > hi || hi > field.max_value() {
                            errs.push(format!("{where_}: {} constant out of range", field.name()));
                        }
                    }
                }
            }
        }
    }
    for (hi, entries) in p.hooks.iter().enumerate() {
        let hook = Hook::ALL[hi];
        for w in entries.windows(2) {
            if w[0].priority > w[1].priority {
                errs.push(format!(
                    "hook {}: tables out of priority order",
                    hook.name()
                ));
            }
        }
        for e in entries {
            match p.chains.get(e.chain.0 as usize).map(|c| &c.kind) {
                Some(ChainKind::Base { table, hook: h, .. }) if *table == e.table && *h == hook => {
                    if !table.hooks().contains(&hook) {
                        errs.push(format!("table {} on hook {}", table.name(), hook.name()));
                    }
                }
                _ => errs.push(format!("hook {}: entry is not its base chain", hook.name())),
            }
        }
    }
    // no call cycles (instances form a DAG)
    let mut state = vec![0u8; p.chains.len()];
    fn dfs(p: &Program, c: usize, state: &mut [u8], errs: &mut Vec<String>) {
        state[c] = 1;
        for r in &p.chains[c].rules {
            for s in &r.stmts {
                let mut targets = vec![];
                match s {
                    Stmt::Jump(t) | Stmt::Goto(t) => targets.push(*t),
                    Stmt::Vmap { arms, .. } => {
                        for a in arms {
                            if let Stmt::Jump(t) | Stmt::Goto(t) = a.verdict {
                                targets.push(t);
                            }
                        }
                    }
                    _ => {}
                }
                for t in targets {
                    let t = t.0 as usize;
                    if t >= state.len() {
                        continue;
                    }
                    if state[t] == 1 {
                        errs.push(format!("call cycle through {}", p.chains[t].display_name()));
                    } else if state[t] == 0 {
                        dfs(p, t, state, errs);
                    }
                }
            }
        }
        state[c] = 2;
    }
    for c in 0..p.chains.len() {
        if state[c] == 0 {
            dfs(p, c, &mut state, &mut errs);
        }
    }
    errs
}

// ------------------------------------------------------------------------------------------
// printer

fn ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v)
}

pub fn fmt_elem(field: Field, e: &Elem) -> String {
    match (field.is_addr(), e) {
        (true, Elem::Exact(v)) => ip(*v).to_string(),
        (true, Elem::Prefix(a, l)) => format!("{}/{}", ip(*a), l),
        (true, Elem::Range(a, b)) => format!("{}-{}", ip(*a), ip(*b)),
        (false, Elem::Exact(v)) if field == Field::Mark => format!("{v:#x}"),
        (false, Elem::Exact(v)) => v.to_string(),
        (false, Elem::Prefix(a, l)) => format!("{a}/{l}"),
        (false, Elem::Range(a, b)) if field == Field::Mark => format!("{a:#x}-{b:#x}"),
        (false, Elem::Range(a, b)) => format!("{a}-{b}"),
    }
}

pub fn fmt_operand(field: Field, op: &Operand) -> String {
    match op {
        Operand::One(e) => fmt_elem(field, e),
        Operand::Set(v) => format!(
            "{{ {} }}",
            v.iter()
                .map(|e| fmt_elem(field, e))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn fmt_pred(p: &Pred) -> String {
    let ne = |n: bool| if n { "!= " } else { "" };
    match p {
        Pred::Field { field, neg, op } => {
            format!("{} {}{}", field.name(), ne(*neg), fmt_operand(*field, op))
        }
        Pred::Iface { dir, neg, names } => {
            let kw = match dir {
                IfDir::In => "iif",
                IfDir::Out => "oif",
            };
            let v = if names.len() == 1 {
                names[0].to_string()
            } else {
                format!(
                    "{{ {} }}",
                    names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!("{kw} {}{v}", ne(*neg))
        }
        Pred::CtState { neg, mask } => {
            format!("ct state {}{}", ne(*neg), ct::names(*mask).join(","))
        }
        Pred::TcpFlags { neg, mask, value } => format!(
            "tcp flags {}{} / {}",
            ne(*neg),
            tcpflags::list(*value),
            tcpflags::list(*mask)
        ),
        Pred::Statistic { p } => format!("statistic probability {p}"),
        Pred::Limit {
            neg,
            rate,
            per_secs,
            burst,
        } => {
            let unit = match per_secs {
                1 => "second",
                60 => "minute",
                3600 => "hour",
                86400 => "day",
                _ => "?",
            };
            format!(
                "limit {}{rate}/{unit} burst {burst}",
                if *neg { "over " } else { "" }
            )
        }
    }
}

/// A NAT statement's addresses and ports: `ADDR[-ADDR][:PORT[-PORT]]` (either may be absent).
pub fn fmt_nat_range(r: &NatRange) -> String {
    let mut s = String::new();
    if let Some((a, b)) = r.addr {
        if a == b {
            s.push_str(&ip(a).to_string());
        } else {
            let _ = write!(s, "{}-{}", ip(a), ip(b));
        }
    }
    if let Some((a, b)) = r.ports {
        if a == b {
            let _ = write!(s, ":{a}");
        } else {
            let _ = write!(s, ":{a}-{b}");
        }
    }
    s
}

fn fmt_nat(r: &NatRange) -> String {
    let mut s = fmt_nat_range(r);
    if r.random {
        s.push_str(" random");
    }
    if r.persistent {
        s.push_str(" persistent");
    }
    s
}

pub fn fmt_stmt(p: &Program, s: &Stmt) -> String {
    let chain = |c: &ChainId| {
        p.chains
            .get(c.0 as usize)
            .map(|c| c.display_name())
            .unwrap_or_else(|| format!("<chain {}>", c.0))
    };
    match s {
        Stmt::Accept => "accept".into(),
        Stmt::Drop => "drop".into(),
        Stmt::Reject(RejectKind::TcpReset) => "reject with tcp-reset".into(),
        Stmt::Reject(RejectKind::IcmpUnreach(c)) => {
            match crate::types::REJECT_CODES.iter().find(|(_, x)| x == c) {
                Some((n, _)) => format!("reject with icmp {n}"),
                None => format!("reject with icmp code {c}"),
            }
        }
        Stmt::Return => "return".into(),
        Stmt::Jump(c) => format!("jump {}", chain(c)),
        Stmt::Goto(c) => format!("goto {}", chain(c)),
        Stmt::Queue { num, bypass } => {
            format!("queue num {num}{}", if *bypass { " bypass" } else { "" })
        }
        Stmt::Counter => "counter".into(),
        Stmt::Log { level, prefix } => {
            format!("log level {} prefix {:?}", log_level_name(*level), prefix)
        }
        Stmt::Audit => "audit".into(),
        Stmt::MarkSet(m) => format!("mark set {m:#x}"),
        Stmt::TtlSet(t) => format!("ip ttl set {t}"),
        Stmt::Notrack => "notrack".into(),
        Stmt::Snat(r) => format!("snat to {}", fmt_nat(r)),
        Stmt::Dnat(r) => format!("dnat to {}", fmt_nat(r)),
        Stmt::Masquerade(r) => {
            let t = fmt_nat(r);
            if t.is_empty() {
                "masquerade".into()
            } else {
                format!("masquerade to {}", t.trim_start())
            }
        }
        Stmt::Redirect(r) => format!("redirect to {}", fmt_nat(r)),
        Stmt::Vmap { key, arms } => {
            let (kname, field) = match key {
                VmapKey::Field(f) => (f.name().to_string(), Some(*f)),
                VmapKey::Iface(IfDir::In) => ("iif".into(), None),
                VmapKey::Iface(IfDir::Out) => ("oif".into(), None),
            };
            let arms: Vec<String> = arms
                .iter()
                .map(|a| {
                    let k = match (&a.key, field) {
                        (VmapArmKey::Num(e), Some(f)) => fmt_elem(f, e),
                        (VmapArmKey::Num(e), None) => format!("{e:?}"),
                        (VmapArmKey::Iface(i), _) => i.to_string(),
                    };
                    format!("{k} : {}", fmt_stmt(p, &a.verdict))
                })
                .collect();
            format!("{kname} vmap {{ {} }}", arms.join(", "))
        }
    }
}

pub const LOG_LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
];

pub fn log_level_name(l: u8) -> &'static str {
    LOG_LEVELS.get(l as usize).copied().unwrap_or("?")
}

/// The stable text form of a program.
/// A rule's matches and statements in the IR's text form (as `print` shows them).
pub fn rule_text(p: &Program, r: &Rule) -> String {
    let mut parts: Vec<String> = r.preds.iter().map(fmt_pred).collect();
    parts.extend(r.stmts.iter().map(|s| fmt_stmt(p, s)));
    parts.join(" ")
}

pub fn print(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "; fwc ir v{}", crate::artefact::IR_VERSION);
    for h in Hook::ALL {
        let entries = &p.hooks[h.index()];
        if entries.is_empty() {
            continue;
        }
        let list: Vec<String> = entries
            .iter()
            .map(|e| format!("{}({}) -> c{}", e.table.name(), e.priority, e.chain.0))
            .collect();
        let _ = writeln!(out, "hook {}: {}", h.name(), list.join(", "));
    }
    for (i, c) in p.chains.iter().enumerate() {
        let _ = write!(out, "\nc{i} ");
        match &c.kind {
            ChainKind::Base {
                table,
                hook,
                policy,
            } => {
                let _ = writeln!(
                    out,
                    "base {}/{} policy {} {{",
                    table.name(),
                    hook.name(),
                    match policy {
                        Policy::Accept => "accept",
                        Policy::Drop => "drop",
                    }
                );
            }
            ChainKind::Sub { .. } => {
                let _ = writeln!(out, "sub {} {{", c.display_name());
            }
        }
        for r in &c.rules {
            let _ = writeln!(
                out,
                "  r{}: {};  # line {}",
                r.id.0,
                rule_text(p, r),
                p.rule_locs[r.id.0 as usize].line
            );
        }
        out.push_str("}\n");
    }
    for s in &p.services {
        let _ = writeln!(
            out,
            "\nservice {} {} {}:{} scheduler {}{} {{",
            s.name,
            match s.proto {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                n => n.to_string(),
            },
            ip(s.vip),
            s.port,
            s.scheduler,
            s.persistent
                .map(|t| format!(" persistent {t}"))
                .unwrap_or_default()
        );
        for r in &s.reals {
            let _ = writeln!(
                out,
                "  real {}:{} weight {} {}",
                ip(r.addr),
                r.port,
                r.weight,
                match r.forward {
                    Forwarding::Nat => "nat",
                    Forwarding::Dr => "dr",
                    Forwarding::Tunnel => "tunnel",
                }
            );
        }
        out.push_str("}\n");
    }
    for i in &p.interfaces {
        let addrs: Vec<String> = i.addrs.iter().map(|a| ip(*a).to_string()).collect();
        let _ = writeln!(out, "interface {} address {}", i.name, addrs.join(" "));
    }
    out
}
