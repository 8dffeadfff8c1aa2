//! Rule-space analyses over the IR: unreachable rules (FW0100) and rules shadowed by an
//! earlier rule (FW0101).
//!
//! Each rule's match set is a box: per numeric field an interval set, per interface direction
//! a list of name constraints, a conntrack-state bit set and a TCP-flags bit set. A later rule
//! R is shadowed by an earlier rule E when E ends the chain (a terminating statement, no
//! `limit`/`statistic`) and R's box lies inside E's. Candidates E are found through an index
//! keyed by E's (source prefix, destination prefix) pair, the tuple-space idea, so large
//! chains are not compared pairwise.

use crate::diag::Diagnostic;
use crate::ir::*;
use fwc_grammar::ast::{FileId, Span};
use std::collections::{HashMap, HashSet};

/// Sorted, disjoint, inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalSet(pub Vec<(u32, u32)>);

impl IntervalSet {
    pub fn full(max: u32) -> IntervalSet {
        IntervalSet(vec![(0, max)])
    }

    pub fn from_elems(elems: &[Elem]) -> IntervalSet {
        let mut v: Vec<(u32, u32)> = elems.iter().map(|e| e.bounds()).collect();
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some((_, h)) if lo <= h.saturating_add(1) => *h = (*h).max(hi),
                _ => out.push((lo, hi)),
            }
        }
        IntervalSet(out)
    }

    pub fn complement(&self, max: u32) -> IntervalSet {
        let mut out = Vec::new();
        let mut next: u64 = 0;
        for &(lo, hi) in &self.0 {
            if u64::from(lo) > next {
                out.push((next as u32, lo - 1));
            }
            next = u64::from(hi) + 1;
        }
        if next <= u64::from(max) {
            out.push((next as u32, max));
        }
        IntervalSet(out)
    }

    pub fn intersect(&self, o: &IntervalSet) -> IntervalSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < o.0.len() {
            let (a0, a1) = self.0[i];
            let (b0, b1) = o.0[j];
            let lo = a0.max(b0);
            let hi = a1.min(b1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        IntervalSet(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is every point of `self` in `o`?
    pub fn is_subset(&self, o: &IntervalSet) -> bool {
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            while j < o.0.len() && o.0[j].1 < lo {
                j += 1;
            }
            match o.0.get(j) {
                Some(&(b0, b1)) if b0 <= lo && hi <= b1 => {}
                _ => return false,
            }
        }
        true
    }

    pub fn hull(&self) -> Option<(u32, u32)> {
        Some((self.0.first()?.0, self.0.last()?.1))
    }
}

const FIELDS: [Field; 7] = [
    Field::Saddr,
    Field::Daddr,
    Field::Proto,
    Field::Sport,
    Field::Dport,
    Field::IcmpType,
    Field::Mark,
];

fn field_index(f: Field) -> usize {
    FIELDS.iter().position(|x| *x == f).unwrap_or(0)
}

/// One interface constraint: in `names` (or not, when `neg`).
#[derive(Debug, Clone)]
struct NameCons {
    neg: bool,
    names: Vec<IfName>,
}

fn pat_covers(e: &IfName, r: &IfName) -> bool {
    match (e.wildcard, r.wildcard) {
        (false, false) => e.name == r.name,
        (true, false) => r.name.starts_with(&e.name),
        (true, true) => r.name.starts_with(&e.name),
        (false, true) => false,
    }
}

pub(crate) fn pat_overlap(a: &IfName, b: &IfName) -> bool {
    pat_covers(a, b)
        || pat_covers(b, a)
        || (a.wildcard
            && b.wildcard
            && (a.name.starts_with(&b.name) || b.name.starts_with(&a.name)))
}

/// Do two interface constraints exclude each other? (conservative: false when unsure)
fn names_disjoint(a: &NameCons, b: &NameCons) -> bool {
    match (a.neg, b.neg) {
        (false, false) => !a
            .names
            .iter()
            .any(|x| b.names.iter().any(|y| pat_overlap(x, y))),
        // every name a allows is excluded by b
        (false, true) => a
            .names
            .iter()
            .all(|x| b.names.iter().any(|y| pat_covers(y, x))),
        (true, false) => b
            .names
            .iter()
            .all(|x| a.names.iter().any(|y| pat_covers(y, x))),
        (true, true) => false,
    }
}

/// Is every interface allowed by `r` allowed by `e`? (conservative: false when unsure)
fn name_subset(r: &NameCons, e: &NameCons) -> bool {
    match (r.neg, e.neg) {
        (false, false) => r
            .names
            .iter()
            .all(|rn| e.names.iter().any(|en| pat_covers(en, rn))),
        (false, true) => r
            .names
            .iter()
            .all(|rn| !e.names.iter().any(|en| pat_overlap(en, rn))),
        (true, false) => false,
        (true, true) => e
            .names
            .iter()
            .all(|en| r.names.iter().any(|rn| pat_covers(rn, en))),
    }
}

/// The match set of a rule.
#[derive(Debug, Clone)]
pub struct RuleBox {
    num: [Option<IntervalSet>; 7],
    iif: Vec<NameCons>,
    oif: Vec<NameCons>,
    ct: u8,
    flags: [u64; 4],
    stateful: bool,
    empty: bool,
}

fn flag_bits(neg: bool, mask: u8, value: u8) -> [u64; 4] {
    let mut b = [0u64; 4];
    for f in 0..=255u8 {
        if (f & mask == value) != neg {
            b[(f >> 6) as usize] |= 1 << (f & 63);
        }
    }
    b
}

impl RuleBox {
    pub fn of(r: &Rule) -> RuleBox {
        let mut b = RuleBox {
            num: Default::default(),
            iif: vec![],
            oif: vec![],
            ct: ct::ALL,
            flags: [u64::MAX; 4],
            stateful: false,
            empty: false,
        };
        for p in &r.preds {
            match p {
                Pred::Field { field, neg, op } => {
                    let mut s = IntervalSet::from_elems(op.elems());
                    if *neg {
                        s = s.complement(field.max_value());
                    }
                    let i = field_index(*field);
                    let cur = b.num[i]
                        .take()
                        .unwrap_or_else(|| IntervalSet::full(field.max_value()));
                    let s = cur.intersect(&s);
                    if s.is_empty() {
                        b.empty = true;
                    }
                    b.num[i] = Some(s);
                }
                Pred::Iface { dir, neg, names } => {
                    let c = NameCons {
                        neg: *neg,
                        names: names.clone(),
                    };
                    match dir {
                        IfDir::In => b.iif.push(c),
                        IfDir::Out => b.oif.push(c),
                    }
                }
                Pred::CtState { neg, mask } => {
                    b.ct &= if *neg { ct::ALL & !mask } else { *mask };
                    if b.ct == 0 {
                        b.empty = true;
                    }
                }
                Pred::TcpFlags { neg, mask, value } => {
                    let f = flag_bits(*neg, *mask, *value);
                    for (x, y) in b.flags.iter_mut().zip(f) {
                        *x &= y;
                    }
                    if b.flags == [0; 4] {
                        b.empty = true;
                    }
                }
                Pred::Statistic { .. } | Pred::Limit { .. } => b.stateful = true,
            }
        }
        b
    }

    /// Does the rule use `limit` or `statistic`?
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Does the rule match every packet?
    pub fn is_universal(&self) -> bool {
        !self.stateful
            && self.num.iter().enumerate().all(|(i, s)| match s {
                None => true,
                Some(s) => *s == IntervalSet::full(FIELDS[i].max_value()),
            })
            && self.iif.is_empty()
            && self.oif.is_empty()
            && self.ct == ct::ALL
            && self.flags == [u64::MAX; 4]
    }

    /// Could a packet match both? `false` only when they are provably disjoint.
    pub fn may_intersect(&self, o: &RuleBox) -> bool {
        if self.empty || o.empty {
            return false;
        }
        for i in 0..7 {
            if let (Some(a), Some(b)) = (&self.num[i], &o.num[i]) {
                if a.intersect(b).is_empty() {
                    return false;
                }
            }
        }
        if self.ct & o.ct == 0 {
            return false;
        }
        if self
            .flags
            .iter()
            .zip(o.flags.iter())
            .all(|(a, b)| a & b == 0)
        {
            return false;
        }
        for (a, b) in [(&self.iif, &o.iif), (&self.oif, &o.oif)] {
            for x in a {
                for y in b {
                    if names_disjoint(x, y) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Is every packet `self` matches also matched by `e` (ignoring `self`'s stateful parts)?
    pub fn within(&self, e: &RuleBox) -> bool {
        if e.stateful {
            return false;
        }
        for ((field, rs), es) in FIELDS.iter().zip(&self.num).zip(&e.num) {
            if let Some(es) = es {
                let full = IntervalSet::full(field.max_value());
                if !rs.as_ref().unwrap_or(&full).is_subset(es) {
                    return false;
                }
            }
        }
        for (rc, ec) in [(&self.iif, &e.iif), (&self.oif, &e.oif)] {
            for c in ec {
                if !rc.iter().any(|r| name_subset(r, c)) {
                    return false;
                }
            }
        }
        if self.ct & !e.ct != 0 {
            return false;
        }
        self.flags
            .iter()
            .zip(e.flags.iter())
            .all(|(r, e)| r & !e == 0)
    }
}

/// The verdict a terminating rule gives, for messages.
fn verdict_word(p: &Program, r: &Rule) -> String {
    r.stmts
        .last()
        .map(|s| {
            let t = fmt_stmt(p, s);
            t.split(" (").next().unwrap_or(&t).to_string()
        })
        .unwrap_or_default()
}

pub fn ends_chain(r: &Rule) -> bool {
    r.stmts.last().map(|s| s.is_terminal()).unwrap_or(false)
}

fn span_of(l: Loc) -> Span {
    Span {
        file: FileId(l.file),
        start: l.start,
        end: l.end,
    }
}

/// A narrowing key for one dimension: the exact value, or "anything else".
type Key = Option<u32>;

/// (masked saddr, masked daddr, protocol key, dport key) -> rule positions.
type Buckets = HashMap<(u32, u32, Key, Key), Vec<usize>>;

/// The exact value of a dimension, when the rule pins it to one.
fn exact(s: Option<&IntervalSet>) -> Key {
    match s {
        Some(s) if s.0.len() == 1 && s.0[0].0 == s.0[0].1 => Some(s.0[0].0),
        _ => None,
    }
}

/// Tuple-space index over terminating rules: (saddr prefix len, daddr prefix len) ->
/// (masked saddr, masked daddr, exact protocol, exact dport) -> rule positions in the chain.
/// A rule E can contain R only if E's prefixes contain R's addresses, and E pins the
/// protocol (or dport) only to a value R is pinned to as well; so a lookup visits at most
/// four keys per prefix-length pair, and [`RuleBox::within`] decides.
#[derive(Default)]
struct Index {
    tuples: HashMap<(u8, u8), Buckets>,
    general: Vec<usize>,
}

fn as_prefix(s: Option<&IntervalSet>) -> Option<(u8, u32)> {
    let Some(s) = s else { return Some((0, 0)) };
    if s.0.len() != 1 {
        return None;
    }
    let (lo, hi) = s.0[0];
    let size = u64::from(hi) - u64::from(lo) + 1;
    if !size.is_power_of_two() {
        return None;
    }
    let len = 32 - size.trailing_zeros() as u8;
    if lo & !prefix_mask(len) != 0 {
        return None;
    }
    Some((len, lo))
}

const PROTO: usize = 2;
const DPORT: usize = 4;

impl Index {
    fn insert(&mut self, i: usize, b: &RuleBox) {
        let s = as_prefix(b.num[0].as_ref());
        let d = as_prefix(b.num[1].as_ref());
        match (s, d) {
            (Some((ls, vs)), Some((ld, vd))) => self
                .tuples
                .entry((ls, ld))
                .or_default()
                .entry((
                    vs,
                    vd,
                    exact(b.num[PROTO].as_ref()),
                    exact(b.num[DPORT].as_ref()),
                ))
                .or_default()
                .push(i),
            _ => self.general.push(i),
        }
    }

    /// Positions of rules that may contain `b`, unsorted.
    fn candidates(&self, b: &RuleBox, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.general);
        let full = IntervalSet::full(u32::MAX);
        let (Some((s0, s1)), Some((d0, d1))) = (
            b.num[0].as_ref().unwrap_or(&full).hull(),
            b.num[1].as_ref().unwrap_or(&full).hull(),
        ) else {
            return;
        };
        let protos = [None, exact(b.num[PROTO].as_ref())];
        let dports = [None, exact(b.num[DPORT].as_ref())];
        let protos = if protos[1].is_some() {
            &protos[..]
        } else {
            &protos[..1]
        };
        let dports = if dports[1].is_some() {
            &dports[..]
        } else {
            &dports[..1]
        };
        for (&(ls, ld), map) in &self.tuples {
            let (ms, md) = (prefix_mask(ls), prefix_mask(ld));
            if s0 & ms != s1 & ms || d0 & md != d1 & md {
                continue;
            }
            for &p in protos {
                for &dp in dports {
                    if let Some(v) = map.get(&(s0 & ms, d0 & md, p, dp)) {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
    }
}

/// A rule that never matches because an earlier rule of its chain decides all its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dead {
    /// positions in the chain
    pub rule: usize,
    pub by: usize,
    /// `by` matches every packet (so everything after it is dead)
    pub unreachable: bool,
}

/// The dead rules of a chain, each with the first earlier rule that decides its packets.
pub fn dead_rules(c: &Chain) -> Vec<Dead> {
    let boxes: Vec<RuleBox> = c.rules.iter().map(RuleBox::of).collect();
    let mut index = Index::default();
    let mut cands = Vec::new();
    let mut out = Vec::new();
    for (i, r) in c.rules.iter().enumerate() {
        let rb = &boxes[i];
        if !rb.empty {
            cands.clear();
            index.candidates(rb, &mut cands);
            cands.sort_unstable();
            if let Some(&j) = cands.iter().find(|&&j| rb.within(&boxes[j])) {
                out.push(Dead {
                    rule: i,
                    by: j,
                    unreachable: boxes[j].is_universal(),
                });
            }
        }
        if ends_chain(r) && !rb.stateful && !rb.empty {
            index.insert(i, rb);
        }
        // a rule that may change the packet (its mark, its conntrack state, its addresses)
        // or hand it to another chain and come back: what an earlier rule decided says
        // nothing about the rules after it (a rule that ends the chain sends none on)
        if rewrites(r) && !ends_chain(r) {
            index = Index::default();
        }
    }
    out
}

/// Whether a rule may change what later rules match: `mark set`, `notrack`, NAT, or a
/// jump or goto (the subchain may).
pub fn rewrites(r: &Rule) -> bool {
    fn one(s: &Stmt) -> bool {
        match s {
            Stmt::MarkSet(_)
            | Stmt::Notrack
            | Stmt::Snat(_)
            | Stmt::Dnat(_)
            | Stmt::Masquerade(_)
            | Stmt::Redirect(_)
            | Stmt::Jump(_)
            | Stmt::Goto(_) => true,
            Stmt::Vmap { arms, .. } => arms.iter().any(|a| one(&a.verdict)),
            _ => false,
        }
    }
    r.stmts.iter().any(one)
}

/// A rule whose removal changes no packet's fate or headers: it only accepts (or drops, or
/// returns), has no other effect, and every later rule that may see its packets does the
/// same, as does the end of the chain.
pub fn redundant_rules(c: &Chain) -> Vec<usize> {
    // quadratic in the chain's length: long chains are left to the decision trees
    if c.rules.len() > 4096 {
        return vec![];
    }
    let end = match &c.kind {
        ChainKind::Base {
            policy: Policy::Accept,
            ..
        } => Stmt::Accept,
        ChainKind::Base {
            policy: Policy::Drop,
            ..
        } => Stmt::Drop,
        ChainKind::Sub { .. } => Stmt::Return,
    };
    let boxes: Vec<RuleBox> = c.rules.iter().map(RuleBox::of).collect();
    let pure = |r: &Rule, b: &RuleBox| {
        !b.stateful
            && r.stmts.len() == 1
            && matches!(r.stmts[0], Stmt::Accept | Stmt::Drop | Stmt::Return)
    };
    let mut out = Vec::new();
    for (i, r) in c.rules.iter().enumerate() {
        if !pure(r, &boxes[i]) || boxes[i].empty || r.stmts[0] != end {
            continue;
        }
        let verdict = &r.stmts[0];
        let ok = c.rules[i + 1..]
            .iter()
            .zip(&boxes[i + 1..])
            .all(|(l, lb)| !boxes[i].may_intersect(lb) || (pure(l, lb) && &l.stmts[0] == verdict));
        if ok {
            out.push(i);
        }
    }
    out
}

/// FW0100, FW0101 and FW0102 for every chain of the program.
pub fn rule_warnings(p: &Program) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: HashSet<(Loc, Loc)> = HashSet::new();
    let mut seen_unreach: HashSet<Loc> = HashSet::new();
    let mut seen_redundant: HashSet<Loc> = HashSet::new();
    for c in &p.chains {
        let dead = dead_rules(c);
        for d in &dead {
            let (r, e) = (&c.rules[d.rule], &c.rules[d.by]);
            let rloc = p.rule_locs[r.id.0 as usize];
            let eloc = p.rule_locs[e.id.0 as usize];
            let i = d.rule;
            if d.unreachable {
                if seen_unreach.insert(eloc) {
                    let rest = c.rules.len() - i;
                    out.push(
                        Diagnostic::warning("FW0100", "unreachable rule")
                            .primary(span_of(rloc), "this rule is never reached")
                            .secondary(
                                span_of(eloc),
                                format!(
                                    "this rule matches every packet and ends the chain with `{}`",
                                    verdict_word(p, e)
                                ),
                            )
                            .note(match rest {
                                1 => "it is the last rule of the chain".to_string(),
                                2 => "nor is the rule after it".to_string(),
                                n => format!("nor are the {} rules after it", n - 1),
                            })
                            .help(
                                "remove the rules after the unconditional one, or give it matches",
                            ),
                    );
                }
            } else if seen.insert((rloc, eloc)) && !seen_unreach.contains(&eloc) {
                let (ev, rv) = (verdict_word(p, e), verdict_word(p, r));
                let mut d = Diagnostic::warning("FW0101", "rule is shadowed by an earlier rule")
                    .primary(span_of(rloc), "this rule never matches")
                    .secondary(
                        span_of(eloc),
                        format!("every packet it would match is decided here first (`{ev}`)"),
                    );
                d = if ends_chain(r) && ev == rv {
                    d.note(format!("both rules `{ev}`: the later one is redundant"))
                        .help("remove it")
                } else if ends_chain(r) {
                    d.note(format!("the later rule would `{rv}`, but those packets get `{ev}` from the earlier one"))
                        .help("if the later rule is meant as an exception, move it above the earlier one")
                } else {
                    d.help("move it above the earlier rule, or remove it")
                };
                if let ChainKind::Sub { args } = &c.kind {
                    if !args.is_empty() {
                        d = d.note(format!(
                            "this is so when `{}` is called as `{}`",
                            c.name,
                            c.display_name()
                        ));
                    }
                }
                out.push(d);
            }
        }
        for i in redundant_rules(c) {
            if dead.iter().any(|d| d.rule == i) {
                continue;
            }
            let r = &c.rules[i];
            let rloc = p.rule_locs[r.id.0 as usize];
            if !seen_redundant.insert(rloc) {
                continue;
            }
            let v = verdict_word(p, r);
            let end = match &c.kind {
                ChainKind::Base { .. } => format!("the chain's policy is `{v}` too"),
                ChainKind::Sub { .. } => {
                    "falling off the end of a subchain returns too".to_string()
                }
            };
            out.push(
                Diagnostic::warning("FW0102", "redundant rule")
                    .primary(
                        span_of(rloc),
                        format!("removing this rule changes nothing: its packets get `{v}` anyway"),
                    )
                    .note(format!(
                        "every later rule that could match its packets also says `{v}`, and {end}"
                    ))
                    .help(match &c.kind {
                        ChainKind::Base { .. } => "remove it: the policy already does this",
                        ChainKind::Sub { .. } => "remove it",
                    }),
            );
        }
    }
    out
}

/// FW0101 for rules that several earlier rules shadow together (the prover's emptiness
/// check), naming them.
pub fn union_shadowing(p: &Program) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (ci, ri, by) in crate::prove::shadowed_by_several(p, OVERLAP_PAIRS) {
        let c = &p.chains[ci];
        let r = &c.rules[ri];
        let mut d = Diagnostic::warning("FW0101", "rule is shadowed by earlier rules").primary(
            span_of(p.rule_locs[r.id.0 as usize]),
            "this rule never matches",
        );
        for j in by.iter().take(8) {
            let e = &c.rules[*j];
            d = d.secondary(
                span_of(p.rule_locs[e.id.0 as usize]),
                format!(
                    "decides some of its packets first (`{}`)",
                    verdict_word(p, e)
                ),
            );
        }
        if by.len() > 8 {
            d = d.note(format!("and {} more earlier rules", by.len() - 8));
        }
        out.push(
            d.note("together these rules decide every packet it would match; no one of them alone does")
                .help("remove it, or move it above the rules that cover it"),
        );
    }
    out
}

/// Most pairs of rules compared for FW0103 in one chain: a chain that needs more is
/// reported as not analysed (a note), never silently skipped.
pub const OVERLAP_PAIRS: u64 = 50_000_000;

/// Lints over the base chains and their rules: FW0103 (a rule overlapping an earlier one
/// with another verdict, a note), FW0104 (a filter input/forward chain that accepts every
/// packet), FW0107 (a base chain with policy accept and no rules).
pub fn chain_lints(p: &Program) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for c in &p.chains {
        let ChainKind::Base {
            table,
            hook,
            policy,
        } = c.kind
        else {
            continue;
        };
        let head = span_of(c.loc);
        if c.rules.is_empty() && policy == Policy::Accept {
            out.push(
                Diagnostic::warning("FW0107", "empty base chain with policy accept")
                    .primary(
                        head,
                        "this chain lets every packet through and does nothing else",
                    )
                    .help("remove it, or give it rules"),
            );
            continue;
        }
        if table == Table::Filter && matches!(hook, Hook::Input | Hook::Forward) {
            // an unconditional accept, or a policy accept with nothing that ends a packet
            if let Some(r) = c
                .rules
                .iter()
                .find(|r| r.preds.is_empty() && r.stmts.iter().any(|s| matches!(s, Stmt::Accept)))
            {
                out.push(
                    Diagnostic::warning("FW0104", format!("`{}` accepts every packet", c.display_name()))
                        .primary(span_of(p.rule_locs[r.id.0 as usize]), "this rule accepts whatever reaches it")
                        .secondary(head, format!("on `{}`, the host's {} traffic", hook.name(), if hook == Hook::Input { "incoming" } else { "forwarded" }))
                        .help("give the rule matches, or end the chain with `drop` and accept what you mean to"),
                );
            } else if policy == Policy::Accept
                && !c.rules.iter().flat_map(|r| &r.stmts).any(|s| {
                    matches!(
                        s,
                        Stmt::Drop
                            | Stmt::Reject(_)
                            | Stmt::Queue { .. }
                            | Stmt::Jump(_)
                            | Stmt::Goto(_)
                            | Stmt::Vmap { .. }
                    )
                })
            {
                out.push(
                    Diagnostic::warning(
                        "FW0104",
                        format!("`{}` accepts every packet", c.display_name()),
                    )
                    .primary(
                        head,
                        "policy accept, and no rule drops, rejects or hands a packet on",
                    )
                    .help("use `policy drop` and accept what you mean to"),
                );
            }
        }
        out.extend(overlaps(p, c));
    }
    out
}

/// FW0103: a rule that ends the chain with one verdict, overlapping an earlier one that
/// ends it with another (neither shadowing the other): the order decides, which is worth
/// knowing. One note per rule, naming the first such earlier rule.
fn overlaps(p: &Program, c: &Chain) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let boxes: Vec<Option<(RuleBox, String)>> = c
        .rules
        .iter()
        .map(|r| {
            let b = RuleBox::of(r);
            (ends_chain(r) && !b.is_stateful()).then(|| (b, verdict_word(p, r)))
        })
        .collect();
    let mut pairs = 0u64;
    for (i, ri) in boxes.iter().enumerate() {
        let Some((rb, rv)) = ri else { continue };
        let mut first = None;
        let mut more = 0usize;
        for (j, ej) in boxes[..i].iter().enumerate() {
            let Some((eb, ev)) = ej else { continue };
            pairs += 1;
            if ev == rv || !eb.may_intersect(rb) || rb.within(eb) || eb.within(rb) {
                continue;
            }
            if first.is_none() {
                first = Some(j);
            } else {
                more += 1;
            }
        }
        if pairs > OVERLAP_PAIRS {
            out.push(
                Diagnostic::info(
                    "FW0103",
                    format!(
                        "`{}` is too long to look for overlapping rules",
                        c.display_name()
                    ),
                )
                .primary(
                    span_of(c.loc),
                    format!("stopped after {OVERLAP_PAIRS} pairs of rules"),
                )
                .note("overlaps are only noted in chains whose rules can all be compared pairwise"),
            );
            return out;
        }
        if let Some(j) = first {
            let (e, r) = (&c.rules[j], &c.rules[i]);
            let ev = &boxes[j].as_ref().map(|b| b.1.clone()).unwrap_or_default();
            let mut d = Diagnostic::info(
                "FW0103",
                "rule overlaps an earlier rule with another verdict",
            )
            .primary(
                span_of(p.rule_locs[r.id.0 as usize]),
                format!("this rule says `{rv}` ..."),
            )
            .secondary(
                span_of(p.rule_locs[e.id.0 as usize]),
                format!("... but packets this one matches too get `{ev}` first"),
            )
            .help("if that is meant, nothing to do; if not, reorder the rules or narrow one");
            if more > 0 {
                d = d.note(format!(
                    "{more} more earlier rule{} overlap it with another verdict",
                    if more == 1 { "" } else { "s" }
                ));
            }
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_algebra() {
        let a = IntervalSet::from_elems(&[Elem::Range(10, 20), Elem::Exact(21), Elem::Exact(40)]);
        assert_eq!(a.0, vec![(10, 21), (40, 40)]);
        let c = a.complement(100);
        assert_eq!(c.0, vec![(0, 9), (22, 39), (41, 100)]);
        assert!(IntervalSet(vec![(11, 12)]).is_subset(&a));
        assert!(!IntervalSet(vec![(11, 30)]).is_subset(&a));
        assert_eq!(
            a.intersect(&IntervalSet(vec![(15, 40)])).0,
            vec![(15, 21), (40, 40)]
        );
        assert_eq!(IntervalSet::full(u32::MAX).complement(u32::MAX).0, vec![]);
    }

    #[test]
    fn prefixes_are_recognised() {
        assert_eq!(
            as_prefix(Some(&IntervalSet(vec![(0x0a00_0000, 0x0aff_ffff)]))),
            Some((8, 0x0a00_0000))
        );
        assert_eq!(as_prefix(Some(&IntervalSet(vec![(5, 5)]))), Some((32, 5)));
        assert_eq!(as_prefix(Some(&IntervalSet(vec![(5, 6)]))), None);
        assert_eq!(as_prefix(None), Some((0, 0)));
    }

    #[test]
    fn interface_subsets() {
        let c = |neg, n: &[&str]| NameCons {
            neg,
            names: n.iter().map(|s| IfName::parse(s)).collect(),
        };
        assert!(name_subset(&c(false, &["eth0"]), &c(false, &["eth*"])));
        assert!(!name_subset(&c(false, &["eth*"]), &c(false, &["eth0"])));
        assert!(name_subset(&c(false, &["eth0"]), &c(true, &["lo"])));
        assert!(!name_subset(&c(false, &["lo"]), &c(true, &["lo"])));
        assert!(name_subset(&c(true, &["lo", "eth0"]), &c(true, &["lo"])));
        assert!(!name_subset(&c(true, &["lo"]), &c(false, &["eth0"])));
    }
}
