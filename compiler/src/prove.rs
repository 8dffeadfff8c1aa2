//! Proving `assert` lines over every packet: an exact header-space analysis of the IR.
//!
//! The packets an assert speaks of form a region of the header space: per dimension
//! (addresses, protocol, ports, ICMP type, TCP flags, mark, conntrack state, input and output
//! interface, whether the transport header is there) a set of values, as sorted intervals.
//! The region is pushed through the program exactly as the interpreter runs one packet
//! (`interp::run`: the hooks of the path, their tables in priority order, the nat tables only
//! for first packets, jump/goto/return, verdict maps, marks, notrack, NAT): at each rule it
//! splits into the part that matches (which runs the statements) and disjoint parts that do
//! not (which go on to the next rule). `statistic` and `limit` go both ways. Statements that
//! rewrite a field make its current value a constant, tracked beside the region of original
//! values. Every part ends with a fate; an `always` line holds when every part ends with its
//! verdict, a `never` line when none does. A failing line gets one concrete packet from a
//! violating part, replayed through the interpreter (with the same `statistic`/`limit`
//! outcomes) before it is reported, so a counterexample is never made up.
//!
//! Interfaces are finite: names no rule or assert can tell apart share a class (a name given
//! literally, one matching a `prefix*` pattern but nothing longer, any other name, and no
//! interface at all), each with a representative name.

use crate::analysis::IntervalSet;
use crate::check::AssertCase;
use crate::interp::{self, Fate, Oracle, Packet, PathKind};
use crate::ir::*;
use fwc_grammar::ast::VerdictKw;

const SADDR: usize = 0;
const DADDR: usize = 1;
const PROTO: usize = 2;
const SPORT: usize = 3;
const DPORT: usize = 4;
const ICMP: usize = 5;
const FLAGS: usize = 6;
const MARK: usize = 7;
const CT: usize = 8;
const IIF: usize = 9;
const OIF: usize = 10;
const L4: usize = 11;
const DIMS: usize = 12;

/// The conntrack states, by index in the `CT` dimension.
/// The ct dimension's values for invalid and untracked.
const INVALID_K: u32 = 3;
const UNTRACKED_K: u32 = 4;
const CT_BITS: [u8; 5] = [
    ct::NEW,
    ct::ESTABLISHED,
    ct::RELATED,
    ct::INVALID,
    ct::UNTRACKED,
];

/// At most this many parts are explored per assert line; beyond, the line is reported as
/// not proven (never as holding).
pub const MAX_PARTS: usize = 2_000_000;

/// Interface classes and their representative names (`None`: no interface).
#[derive(Debug, Clone)]
pub struct Ifaces {
    pub reps: Vec<Option<String>>,
}

impl Ifaces {
    /// The classes the patterns tell apart.
    pub fn of(patterns: &[IfName]) -> Ifaces {
        let literal = |n: &str| patterns.iter().any(|p| !p.wildcard && p.name == n);
        let prefix_of_other = |n: &str| patterns.iter().any(|p| p.name.starts_with(n));
        let mut cands: Vec<Option<String>> = vec![None];
        for p in patterns {
            if p.wildcard {
                // a name under this prefix that is no literal and starts no other pattern
                for k in 0..100 {
                    let n = format!("{}{k}", p.name);
                    if n.len() <= 15 && !literal(&n) && !prefix_of_other(&n) {
                        cands.push(Some(n));
                        break;
                    }
                }
            } else {
                cands.push(Some(p.name.clone()));
            }
        }
        // any other name: a familiar one if the patterns leave one free
        let free = (0..10)
            .map(|k| format!("eth{k}"))
            .chain((0..1000).map(|k| format!("if{k}")))
            .find(|n| !patterns.iter().any(|p| p.matches(Some(n))));
        // one representative per set of patterns matched (no interface always a class of
        // its own); the other names' class first among the named ones
        let mut seen: Vec<Vec<bool>> = Vec::new();
        let mut reps = vec![None];
        for c in free.into_iter().map(Some).chain(cands.into_iter().skip(1)) {
            let sig: Vec<bool> = patterns.iter().map(|p| p.matches(c.as_deref())).collect();
            if !seen.contains(&sig) {
                seen.push(sig);
                reps.push(c);
            }
        }
        Ifaces { reps }
    }

    fn classes(&self, f: impl Fn(Option<&str>) -> bool) -> IntervalSet {
        set_of((0..self.reps.len() as u32).filter(|&c| f(self.reps[c as usize].as_deref())))
    }
}

fn set_of(vals: impl Iterator<Item = u32>) -> IntervalSet {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in vals {
        match out.last_mut() {
            Some((_, h)) if *h + 1 == v => *h = v,
            _ => out.push((v, v)),
        }
    }
    IntervalSet(out)
}

fn one(v: u32) -> IntervalSet {
    IntervalSet(vec![(v, v)])
}

fn contains(s: &IntervalSet, v: u32) -> bool {
    s.0.iter().any(|&(lo, hi)| lo <= v && v <= hi)
}

/// A box of original packets: the constrained dimensions and their values (any other
/// dimension is unconstrained).
type Box_ = Vec<(usize, IntervalSet)>;

/// Boxes taken out of a part, newest first, shared between the parts that took them out
/// together (lazy subtraction: a rule that ends some packets removes its box from the part
/// that goes on instead of splitting it into pieces).
#[derive(Debug, Clone, Default)]
struct Minus(Option<std::rc::Rc<(Box_, Minus)>>);

impl Minus {
    fn push(&self, b: Box_) -> Minus {
        Minus(Some(std::rc::Rc::new((b, self.clone()))))
    }
    fn iter(&self) -> impl Iterator<Item = &Box_> {
        let mut cur = self.0.as_deref();
        std::iter::from_fn(move || {
            let (b, next) = cur?;
            cur = next.0.as_deref();
            Some(b)
        })
    }
}

/// A part of the header space: the original packets it holds (its cube less the boxes
/// taken out), and what the packet's rewritten fields are now.
#[derive(Debug, Clone)]
struct Part {
    cube: [IntervalSet; DIMS],
    minus: Minus,
    /// current value of a rewritten dimension (mark, ct, addresses, ports)
    now: [Option<u32>; DIMS],
    /// the `statistic`/`limit` outcomes taken so far, in order
    coins: Vec<(RuleId, bool)>,
    /// inside a table before conntrack (raw): the ct state to go back to after it
    /// (`ct state` reads invalid there, untracked after `notrack`)
    raw_ct: Option<Option<u32>>,
}

/// Whether a box meets a cube.
fn meets(b: &Box_, cube: &[IntervalSet; DIMS]) -> bool {
    b.iter().all(|(d, s)| !s.intersect(&cube[*d]).is_empty())
}

/// Whether a box holds all of a cube.
fn holds(b: &Box_, cube: &[IntervalSet; DIMS]) -> bool {
    b.iter().all(|(d, s)| cube[*d].is_subset(s))
}

/// A cube of points of `cube` outside every box of `minus` (none: the part is empty), found
/// by splitting around the boxes that meet it; `budget` bounds the splits.
fn witness(
    cube: &[IntervalSet; DIMS],
    minus: &Minus,
    budget: &mut usize,
) -> Result<Option<[IntervalSet; DIMS]>, ()> {
    if cube.iter().any(IntervalSet::is_empty) {
        return Ok(None);
    }
    let boxes: Vec<&Box_> = minus.iter().filter(|b| meets(b, cube)).collect();
    fn search(
        cube: [IntervalSet; DIMS],
        boxes: &[&Box_],
        budget: &mut usize,
    ) -> Result<Option<[IntervalSet; DIMS]>, ()> {
        if *budget == 0 {
            return Err(());
        }
        *budget -= 1;
        let Some(k) = boxes.iter().position(|b| meets(b, &cube)) else {
            return Ok(Some(cube));
        };
        let b = boxes[k];
        if holds(b, &cube) {
            return Ok(None);
        }
        // the points outside `b`, in disjoint pieces: outside it in its first dimension,
        // inside there and outside in its second, ...
        let rest = &boxes[k + 1..];
        let mut inside = cube;
        for (d, set) in b {
            let out = inside[*d].intersect(&set.complement(u32::MAX));
            if !out.is_empty() {
                let mut piece = inside.clone();
                piece[*d] = out;
                if let Some(w) = search(piece, rest, budget)? {
                    return Ok(Some(w));
                }
            }
            inside[*d] = inside[*d].intersect(set);
        }
        Ok(None)
    }
    search(cube.clone(), &boxes, budget)
}

impl Part {
    fn current(&self, d: usize) -> Option<u32> {
        self.now[d]
    }

    /// Meets a conjunction lazily: the part inside it (`None` if the cube misses it), and
    /// the part outside it (the cube with its box taken out; `None` if nothing is left).
    fn meet(self, cons: &[(usize, IntervalSet)]) -> (Option<Part>, Option<Part>) {
        let mut b: Box_ = Vec::new();
        for (d, set) in cons {
            match self.current(*d) {
                Some(c) if contains(set, c) => {}
                Some(_) => return (None, Some(self)),
                // two constraints on one dimension: both hold
                None => match b.iter_mut().find(|(e, _)| e == d) {
                    Some((_, s)) => *s = s.intersect(set),
                    None => b.push((*d, set.clone())),
                },
            }
        }
        if !meets(&b, &self.cube) {
            return (None, Some(self));
        }
        let mut inside = self.clone();
        for (d, set) in &b {
            inside.cube[*d] = inside.cube[*d].intersect(set);
        }
        let outside = if holds(&b, &self.cube) {
            None
        } else {
            let mut o = self;
            o.minus = o.minus.push(b);
            Some(o)
        };
        (Some(inside), outside)
    }

    /// Splits on a conjunction of (dimension, allowed values): the part that meets all of
    /// them, and disjoint parts that miss one.
    fn split(mut self, cons: &[(usize, IntervalSet)]) -> (Option<Part>, Vec<Part>) {
        let mut out = Vec::new();
        for (d, s) in cons {
            if let Some(c) = self.current(*d) {
                if contains(s, c) {
                    continue;
                }
                out.push(self);
                return (None, out);
            }
            let yes = self.cube[*d].intersect(s);
            let no = self.cube[*d].intersect(&s.complement(u32::MAX));
            if !no.is_empty() {
                let mut o = self.clone();
                o.cube[*d] = no;
                out.push(o);
            }
            if yes.is_empty() {
                return (None, out);
            }
            self.cube[*d] = yes;
        }
        (Some(self), out)
    }
}

/// A field's values as (dimension, set) constraints: the field must be there (ports for
/// TCP/UDP with their header, ICMP type for ICMP), then hold a value of `vals`.
fn field_cons(f: Field, vals: IntervalSet) -> Vec<(usize, IntervalSet)> {
    let ports = || vec![(PROTO, IntervalSet(vec![(6, 6), (17, 17)])), (L4, one(1))];
    let (d, mut v) = match f {
        Field::Saddr => (SADDR, vec![]),
        Field::Daddr => (DADDR, vec![]),
        Field::Proto => (PROTO, vec![]),
        Field::Mark => (MARK, vec![]),
        Field::Sport => (SPORT, ports()),
        Field::Dport => (DPORT, ports()),
        Field::IcmpType => (ICMP, vec![(PROTO, one(1)), (L4, one(1))]),
    };
    v.push((d, vals));
    v
}

fn field_max(f: Field) -> u32 {
    f.max_value()
}

/// What a predicate asks, as constraints; `None` for `statistic` and `limit`.
fn pred_cons(p: &Pred, ifs: &Ifaces) -> Option<Vec<(usize, IntervalSet)>> {
    Some(match p {
        Pred::Field { field, neg, op } => {
            let s = IntervalSet::from_elems(op.elems());
            let s = if *neg {
                s.complement(field_max(*field))
            } else {
                s
            };
            field_cons(*field, s)
        }
        Pred::Iface { dir, neg, names } => {
            let d = match dir {
                IfDir::In => IIF,
                IfDir::Out => OIF,
            };
            vec![(
                d,
                ifs.classes(|n| names.iter().any(|x| x.matches(n)) != *neg),
            )]
        }
        Pred::CtState { neg, mask } => vec![(
            CT,
            set_of((0..5u32).filter(|&k| (CT_BITS[k as usize] & mask != 0) != *neg)),
        )],
        Pred::TcpFlags { neg, mask, value } => vec![
            (PROTO, one(6)),
            (L4, one(1)),
            (
                FLAGS,
                set_of((0..64u32).filter(|&f| (f as u8 & mask == *value) != *neg)),
            ),
        ],
        Pred::Statistic { .. } | Pred::Limit { .. } => return None,
    })
}

/// Where a part is in the program: at a base-chain entry of a hook of the path, or inside
/// its table.
#[derive(Debug, Clone)]
struct Pos {
    /// hook index in the path, base-chain entry index at that hook
    hi: usize,
    ei: usize,
    /// inside the table: where, or `None` at the entry
    at: Option<At>,
}

/// A place inside a table: chain, rule index, statement index (`None`: the rule's matches),
/// and the return points of the jumps that led there.
#[derive(Debug, Clone)]
struct At {
    chain: ChainId,
    idx: usize,
    stmt: Option<usize>,
    stack: Vec<(ChainId, usize)>,
}

/// How a part ends.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Fate(Fate),
    /// the interpreter stops with an error (NAT without an interface address); the
    /// datapath drops such a packet, and so an assert counts it as dropped
    Error,
}

/// A part still going, or one that ended.
enum Item {
    Go(Part, Pos),
    Done(Part, End),
}

/// A line that does not hold: one packet, its path and how it ended.
#[derive(Debug, Clone)]
pub struct Counterexample {
    pub path: PathKind,
    pub packet: Packet,
    /// the `statistic`/`limit` outcomes on its way, in order
    pub coins: Vec<(RuleId, bool)>,
    /// the interpreter's outcome for it
    pub outcome: interp::Outcome,
    /// the packet as a `test` line (`None` when a test line cannot say it: no transport
    /// header, or a protocol other than TCP, UDP and ICMP)
    pub test_line: Option<String>,
}

/// The result of proving one line.
#[derive(Debug, Clone)]
pub enum Proof {
    Holds {
        parts: usize,
    },
    Fails(Box<Counterexample>),
    /// too many parts to finish, or a counterexample that did not replay (a bug)
    Unknown(String),
}

/// Replays recorded `statistic`/`limit` outcomes.
struct Replay {
    coins: Vec<(RuleId, bool)>,
    next: usize,
}

impl Oracle for Replay {
    fn limit(&mut self, _rule: RuleId, _pred: &Pred) -> bool {
        self.take()
    }
    fn statistic(&mut self, _rule: RuleId, _p: f64) -> bool {
        self.take()
    }
}

impl Replay {
    fn take(&mut self) -> bool {
        let v = self.coins.get(self.next).map(|c| c.1).unwrap_or(false);
        self.next += 1;
        v
    }
}

struct Prover<'p> {
    p: &'p Program,
    ifs: Ifaces,
    path: PathKind,
    always: bool,
    want: Fate,
    parts: usize,
    /// splits left for the emptiness checks
    budget: usize,
}

/// The interface patterns that tell interfaces apart in these programs and predicates.
fn patterns_of(programs: &[&Program], preds: &[Pred]) -> Vec<IfName> {
    let mut patterns: Vec<IfName> = Vec::new();
    let mut add = |n: &IfName| {
        if !patterns.contains(n) {
            patterns.push(n.clone());
        }
    };
    let pred = |p: &Pred, add: &mut dyn FnMut(&IfName)| {
        if let Pred::Iface { names, .. } = p {
            names.iter().for_each(&mut *add);
        }
    };
    for program in programs {
        for r in program.chains.iter().flat_map(|c| &c.rules) {
            r.preds.iter().for_each(|p| pred(p, &mut add));
            for s in &r.stmts {
                if let Stmt::Vmap { arms, .. } = s {
                    for a in arms {
                        if let VmapArmKey::Iface(n) = &a.key {
                            add(n);
                        }
                    }
                }
            }
        }
        for i in &program.interfaces {
            add(&IfName::parse(&i.name));
        }
    }
    preds.iter().for_each(|p| pred(p, &mut add));
    patterns
}

/// Every packet there is, in four parts: with a TCP, UDP or ICMP header (whose fields
/// vary), or without a transport header (whose port, type and flag fields are 0, as
/// parsing leaves them).
fn universe(ifs: &Ifaces) -> Vec<Part> {
    let full = |max: u32| IntervalSet::full(max);
    let classes = ifs.reps.len() as u32 - 1;
    let base = |proto: IntervalSet, l4: u32, sp: bool, icmp: bool, flags: bool| Part {
        cube: [
            full(u32::MAX),
            full(u32::MAX),
            proto,
            if sp { full(65535) } else { one(0) },
            if sp { full(65535) } else { one(0) },
            if icmp { full(255) } else { one(0) },
            if flags { full(63) } else { one(0) },
            full(u32::MAX),
            full(4),
            full(classes),
            full(classes),
            one(l4),
        ],
        minus: Minus::default(),
        now: [None; DIMS],
        coins: vec![],
        raw_ct: None,
    };
    vec![
        base(one(6), 1, true, false, true),
        base(one(17), 1, true, false, false),
        base(one(1), 1, false, true, false),
        base(full(255), 0, false, false, false),
    ]
}

/// Proves one assert line over `program`.
pub fn prove(program: &Program, case: &AssertCase) -> Proof {
    let ifs = Ifaces::of(&patterns_of(&[program], &case.preds));
    let want = match case.verdict {
        VerdictKw::Accept => Fate::Accept,
        VerdictKw::Drop => Fate::Drop,
        VerdictKw::Reject => Fate::Reject(RejectKind::IcmpUnreach(3)),
        VerdictKw::Queue => Fate::Queue {
            num: 0,
            bypass: false,
        },
    };
    let mut pr = Prover {
        p: program,
        ifs,
        path: case.path,
        always: case.always,
        want,
        parts: 0,
        budget: MAX_PARTS,
    };
    let starts = universe(&pr.ifs);
    // the assert's region
    let mut parts = starts;
    for p in &case.preds {
        let Some(cons) = pred_cons(p, &pr.ifs) else {
            continue; // `statistic`/`limit` in an assert: every packet either way
        };
        parts = parts
            .into_iter()
            .filter_map(|part| part.split(&cons).0)
            .collect();
    }
    // explored depth first, in order, so the first violation found is the first packet's
    let found = pr.walk(parts, |pr, mut part, end| {
        // a packet the interpreter stops on (NAT with no interface address) is one the
        // datapath drops
        let f = match &end {
            End::Fate(f) => *f,
            End::Error => Fate::Drop,
        };
        if same_verdict(&f, &pr.want) == pr.always {
            return None;
        }
        // a violation, if the part holds a packet at all
        match witness(&part.cube, &part.minus, &mut pr.budget) {
            Ok(Some(w)) => {
                part.cube = w;
                Some(pr.counterexample(part, &end))
            }
            Ok(None) => None,
            Err(()) => Some(Proof::Unknown(format!(
                "more than {MAX_PARTS} steps to tell whether a part of the header space is empty: not proven"
            ))),
        }
    });
    match found {
        Ok(Some(p)) => p,
        Ok(None) => Proof::Holds { parts: pr.parts },
        Err(e) => Proof::Unknown(format!("{e} to follow: not proven")),
    }
}

impl Prover<'_> {
    /// Follows the parts `starts` through the program, depth first and in order, handing
    /// each part that ends to `visit`; stops at the first answer `visit` gives. `Err` past
    /// the part budget.
    fn walk<R>(
        &mut self,
        starts: Vec<Part>,
        mut visit: impl FnMut(&mut Self, Part, End) -> Option<R>,
    ) -> Result<Option<R>, String> {
        let start = Pos {
            hi: 0,
            ei: 0,
            at: None,
        };
        let mut work: Vec<Item> = starts
            .into_iter()
            .rev()
            .map(|part| Item::Go(part, start.clone()))
            .collect();
        while let Some(item) = work.pop() {
            self.parts += 1;
            if self.parts > MAX_PARTS {
                return Err(format!("more than {MAX_PARTS} parts of the header space"));
            }
            match item {
                Item::Go(part, pos) => self.step(part, pos, &mut work),
                Item::Done(part, end) => {
                    if let Some(r) = visit(self, part, end) {
                        return Ok(Some(r));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every end of the parts `starts`, in order.
    fn ends(&mut self, starts: Vec<Part>) -> Result<Vec<(Part, End)>, String> {
        let mut out = Vec::new();
        self.walk(starts, |_, part, end| {
            out.push((part, end));
            None::<()>
        })?;
        Ok(out)
    }
}

/// Whether a fate is the verdict asked for (any reject kind, any queue number).
fn same_verdict(f: &Fate, want: &Fate) -> bool {
    std::mem::discriminant(f) == std::mem::discriminant(want)
}

impl Prover<'_> {
    /// The base chain of entry `ei` at the path's `hi`-th hook.
    fn base(&self, hi: usize, ei: usize) -> ChainId {
        self.p.hooks[self.path.hooks()[hi].index()][ei].chain
    }

    /// Moves a part one step, pushing what follows to `work`.
    fn step(&self, part: Part, pos: Pos, work: &mut Vec<Item>) {
        let hooks = self.path.hooks();
        let (hi, ei) = (pos.hi, pos.ei);
        let entry_done = Pos {
            hi,
            ei: ei + 1,
            at: None,
        };
        let Some(at) = pos.at else {
            let mut part = part;
            // leaving a table that ran before conntrack: the packet's ct state again
            if let Some(prev) = part.raw_ct.take() {
                if part.now[CT] != Some(UNTRACKED_K) {
                    part.now[CT] = prev;
                }
            }
            // at a base-chain entry: its table, the next hook, or the end of the path
            let Some(&hook) = hooks.get(hi) else {
                work.push(Item::Done(part, End::Fate(Fate::Accept)));
                return;
            };
            let Some(e) = self.p.hooks[hook.index()].get(ei) else {
                let next_hook = Pos {
                    hi: hi + 1,
                    ei: 0,
                    at: None,
                };
                work.push(Item::Go(part, next_hook));
                return;
            };
            let inside = Pos {
                hi,
                ei,
                at: Some(At {
                    chain: e.chain,
                    idx: 0,
                    stmt: None,
                    stack: vec![],
                }),
            };
            if e.priority < CONNTRACK_PRIORITY {
                part.raw_ct = Some(part.now[CT]);
                if part.now[CT] != Some(UNTRACKED_K) {
                    part.now[CT] = Some(INVALID_K);
                }
            }
            if e.table == Table::Nat {
                // the nat tables see first packets only (new or related)
                let (yes, no) = part.split(&[(CT, set_of([0u32, 2].into_iter()))]);
                for n in no {
                    work.push(Item::Go(n, entry_done.clone()));
                }
                if let Some(y) = yes {
                    work.push(Item::Go(y, inside));
                }
            } else {
                work.push(Item::Go(part, inside));
            }
            return;
        };
        let go = |at: At| Pos {
            hi,
            ei,
            at: Some(at),
        };
        let c = self.p.chain(at.chain);
        let Some(rule) = c.rules.get(at.idx) else {
            // end of a chain
            self.back(part, at.stack, hi, ei, work);
            return;
        };
        let next_rule = At {
            chain: at.chain,
            idx: at.idx + 1,
            stmt: None,
            stack: at.stack.clone(),
        };
        let Some(si) = at.stmt else {
            // the rule's matches, in order as the interpreter tries them: the part that
            // meets the predicates runs the statements; a part that misses one (its box
            // taken out) goes on to the next rule. `statistic` and `limit` go both ways,
            // and count as drawn only for the part that got as far as them.
            let mut inside = vec![part];
            let mut group: Vec<(usize, IntervalSet)> = Vec::new();
            let flush =
                |group: &mut Vec<(usize, IntervalSet)>, inside: Vec<Part>, work: &mut Vec<Item>| {
                    let mut kept = Vec::new();
                    for p in inside {
                        let (yes, no) = p.meet(group);
                        if let Some(n) = no {
                            work.push(Item::Go(n, go(next_rule.clone())));
                        }
                        kept.extend(yes);
                    }
                    group.clear();
                    kept
                };
            for p in &rule.preds {
                match pred_cons(p, &self.ifs) {
                    Some(c) => group.extend(c),
                    None => {
                        inside = flush(&mut group, inside, work);
                        let mut hits = Vec::new();
                        for part in inside {
                            let mut miss = part.clone();
                            miss.coins.push((rule.id, false));
                            work.push(Item::Go(miss, go(next_rule.clone())));
                            let mut hit = part;
                            hit.coins.push((rule.id, true));
                            hits.push(hit);
                        }
                        inside = hits;
                    }
                }
            }
            let mut inside = flush(&mut group, inside, work);
            // a part whose cube lies in a box taken out is empty: not worth following into
            // a subchain or through rewrites (checked only then: a plain verdict is cheaper
            // to follow than the check)
            let verdict = rule.stmts.iter().any(|s| {
                matches!(
                    s,
                    Stmt::Accept | Stmt::Drop | Stmt::Reject(_) | Stmt::Queue { .. }
                )
            });
            if !verdict {
                inside.retain(|p| !p.minus.iter().any(|b| holds(b, &p.cube)));
            }
            for part in inside.into_iter().rev() {
                let first = At {
                    stmt: Some(0),
                    ..at.clone()
                };
                work.push(Item::Go(part, go(first)));
            }
            return;
        };
        let Some(s) = rule.stmts.get(si) else {
            // the statements ran out: the next rule
            work.push(Item::Go(part, go(next_rule)));
            return;
        };
        let after = At {
            stmt: Some(si + 1),
            ..at.clone()
        };
        self.exec(s, part, &at, after, hi, ei, work);
    }

    /// Leaving a chain (its end, or `return`): back to the rule after the jump that
    /// entered it, or from the base chain, its policy.
    fn back(
        &self,
        part: Part,
        mut stack: Vec<(ChainId, usize)>,
        hi: usize,
        ei: usize,
        work: &mut Vec<Item>,
    ) {
        match stack.pop() {
            Some((chain, idx)) => work.push(Item::Go(
                part,
                Pos {
                    hi,
                    ei,
                    at: Some(At {
                        chain,
                        idx,
                        stmt: None,
                        stack,
                    }),
                },
            )),
            None => self.policy(part, hi, ei, work),
        }
    }

    /// The end of a base chain (or a `return` from it): its policy.
    fn policy(&self, part: Part, hi: usize, ei: usize, work: &mut Vec<Item>) {
        match self.p.chain(self.base(hi, ei)).kind {
            ChainKind::Base {
                policy: Policy::Drop,
                ..
            } => work.push(Item::Done(part, End::Fate(Fate::Drop))),
            _ => work.push(Item::Go(
                part,
                Pos {
                    hi,
                    ei: ei + 1,
                    at: None,
                },
            )),
        }
    }

    /// Runs one statement of the rule at `at`; `after` is the next statement.
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        s: &Stmt,
        mut part: Part,
        at: &At,
        after: At,
        hi: usize,
        ei: usize,
        work: &mut Vec<Item>,
    ) {
        let entry_done = Pos {
            hi,
            ei: ei + 1,
            at: None,
        };
        let go = |at: At| Pos {
            hi,
            ei,
            at: Some(at),
        };
        let start = |chain: ChainId, stack: Vec<(ChainId, usize)>| At {
            chain,
            idx: 0,
            stmt: None,
            stack,
        };
        match s {
            Stmt::Accept => work.push(Item::Go(part, entry_done)),
            Stmt::Drop => work.push(Item::Done(part, End::Fate(Fate::Drop))),
            Stmt::Reject(k) => work.push(Item::Done(part, End::Fate(Fate::Reject(*k)))),
            Stmt::Queue { num, bypass } => work.push(Item::Done(
                part,
                End::Fate(Fate::Queue {
                    num: *num,
                    bypass: *bypass,
                }),
            )),
            Stmt::Return => self.back(part, at.stack.clone(), hi, ei, work),
            Stmt::Jump(t) => {
                let mut stack = at.stack.clone();
                if stack.len() >= 64 {
                    // the kernel drops on a jump stack overflow
                    work.push(Item::Done(part, End::Fate(Fate::Drop)));
                    return;
                }
                stack.push((at.chain, at.idx + 1));
                work.push(Item::Go(part, go(start(*t, stack))));
            }
            Stmt::Goto(t) => work.push(Item::Go(part, go(start(*t, at.stack.clone())))),
            Stmt::Counter | Stmt::Log { .. } | Stmt::Audit | Stmt::TtlSet(_) => {
                work.push(Item::Go(part, go(after)))
            }
            Stmt::MarkSet(m) => {
                part.now[MARK] = Some(*m);
                work.push(Item::Go(part, go(after)));
            }
            Stmt::Notrack => {
                part.now[CT] = Some(UNTRACKED_K);
                work.push(Item::Go(part, go(after)));
            }
            Stmt::Snat(_) | Stmt::Dnat(_) | Stmt::Masquerade(_) | Stmt::Redirect(_) => {
                // a NAT statement ends the nat table (the next entry goes on)
                for (part, end) in self.nat(s, part).into_iter().rev() {
                    match end {
                        Some(e) => work.push(Item::Done(part, e)),
                        None => work.push(Item::Go(part, entry_done.clone())),
                    }
                }
            }
            Stmt::Vmap { key, arms } => {
                let mut rest = vec![part];
                for a in arms {
                    let cons = match (&a.key, key) {
                        (VmapArmKey::Num(e), VmapKey::Field(f)) => {
                            field_cons(*f, IntervalSet::from_elems(std::slice::from_ref(e)))
                        }
                        (VmapArmKey::Iface(n), VmapKey::Iface(d)) => vec![(
                            if *d == IfDir::In { IIF } else { OIF },
                            self.ifs.classes(|x| n.matches(x)),
                        )],
                        _ => continue,
                    };
                    let mut next = Vec::new();
                    for part in rest {
                        let (yes, no) = part.meet(&cons);
                        next.extend(no);
                        if let Some(y) = yes {
                            self.exec(&a.verdict, y, at, after.clone(), hi, ei, work);
                        }
                    }
                    rest = next;
                }
                // no arm: the rule's next statement
                for part in rest {
                    work.push(Item::Go(part, go(after.clone())));
                }
            }
        }
    }

    /// A NAT statement on a first packet, as `interp::apply_nat` does it: the parts it
    /// splits into, each translated (`None`) or ending with an error.
    fn nat(&self, s: &Stmt, part: Part) -> Vec<(Part, Option<End>)> {
        let mut out = Vec::new();
        // the interface address masquerade and redirect take: split by interface class
        let by_iface = |part: Part, d: usize| -> Vec<(Part, Option<u32>)> {
            let mut v = Vec::new();
            let classes = part.cube[d].clone();
            for &(lo, hi) in &classes.0 {
                for c in lo..=hi {
                    let a = self.ifs.reps[c as usize]
                        .as_deref()
                        .and_then(|n| self.p.interface_addr(n));
                    let mut p = part.clone();
                    p.cube[d] = one(c);
                    v.push((p, a));
                }
            }
            v
        };
        let ports = IntervalSet(vec![(6, 6), (17, 17)]);
        // the port rule: kept when inside the range, else the range's first (ports only)
        let pick = |part: Part, d: usize, r: &NatRange, out: &mut Vec<(Part, Option<End>)>| {
            let (yes, no) = part.split(&[(PROTO, ports.clone())]);
            for n in no {
                out.push((n, None));
            }
            let Some(y) = yes else { return };
            match r.ports {
                Some((lo, hi)) => {
                    let (inr, outr) =
                        y.split(&[(d, IntervalSet(vec![(u32::from(lo), u32::from(hi))]))]);
                    if let Some(i) = inr {
                        out.push((i, None));
                    }
                    for mut o in outr {
                        o.now[d] = Some(u32::from(lo));
                        out.push((o, None));
                    }
                }
                None => out.push((y, None)),
            }
        };
        match s {
            Stmt::Snat(r) => {
                let mut part = part;
                if let Some((lo, _)) = r.addr {
                    part.now[SADDR] = Some(lo);
                }
                pick(part, SPORT, r, &mut out);
            }
            Stmt::Masquerade(r) => {
                for (mut part, a) in by_iface(part, OIF) {
                    match a {
                        Some(a) => {
                            part.now[SADDR] = Some(a);
                            pick(part, SPORT, r, &mut out);
                        }
                        None => out.push((part, Some(End::Error))),
                    }
                }
            }
            Stmt::Dnat(r) | Stmt::Redirect(r) => {
                let addrs: Vec<(Part, Option<u32>)> = match s {
                    Stmt::Dnat(_) => vec![(part, Some(r.addr.map(|a| a.0).unwrap_or(u32::MAX)))],
                    _ if self.path == PathKind::Output => vec![(part, Some(0x7f00_0001))],
                    _ => by_iface(part, IIF),
                };
                for (mut part, a) in addrs {
                    match a {
                        Some(a) => {
                            if !(matches!(s, Stmt::Dnat(_)) && r.addr.is_none()) {
                                part.now[DADDR] = Some(a);
                            }
                            match r.ports {
                                Some((lo, _)) => {
                                    let (yes, no) = part.split(&[(PROTO, ports.clone())]);
                                    out.extend(no.into_iter().map(|n| (n, None)));
                                    if let Some(mut y) = yes {
                                        y.now[DPORT] = Some(u32::from(lo));
                                        out.push((y, None));
                                    }
                                }
                                None => out.push((part, None)),
                            }
                        }
                        None => out.push((part, Some(End::Error))),
                    }
                }
            }
            _ => out.push((part, None)),
        }
        out
    }

    /// A readable packet of a cube: familiar addresses and ports when the cube has them,
    /// a protocol with a header, interfaces as the path has them.
    fn pick_packet(&self, cube: &[IntervalSet; DIMS]) -> Packet {
        let pick = |d: usize, prefs: &[u32]| -> u32 {
            let s = &cube[d];
            if let Some(&v) = prefs.iter().find(|&&v| contains(s, v)) {
                return v;
            }
            if d == SADDR || d == DADDR {
                // an address that is no network or broadcast address, when there is one
                for &(lo, hi) in &s.0 {
                    let v = if lo & 0xff == 0 {
                        lo.saturating_add(1)
                    } else {
                        lo
                    };
                    if v <= hi && v & 0xff != 0xff {
                        return v;
                    }
                }
            }
            match s.0.first() {
                Some(&(0, hi)) if hi > 0 => 1,
                Some(&(lo, _)) => lo,
                None => 0,
            }
        };
        let proto = pick(PROTO, &[6, 17, 1]) as u8;
        let l4 = pick(L4, &[1]) == 1;
        // interfaces as the path has them: a packet for this host has no output interface
        // and one this host sends no input interface, when the part allows it
        let rep = |d: usize, none_first: bool| {
            let named: Vec<u32> = (0..self.ifs.reps.len() as u32)
                .filter(|&c| self.ifs.reps[c as usize].is_some())
                .collect();
            let order: Vec<u32> = if none_first {
                std::iter::once(0).chain(named).collect()
            } else {
                named.into_iter().chain(std::iter::once(0)).collect()
            };
            self.ifs.reps[pick(d, &order) as usize].clone()
        };
        let (iif_none, oif_none) = match self.path {
            PathKind::Input => (false, true),
            PathKind::Forward => (false, false),
            PathKind::Output => (true, false),
        };
        let ct_k = pick(CT, &[0]) as usize;
        Packet {
            proto,
            saddr: pick(SADDR, &[0xc000_0201, 0x0a00_0001]),
            daddr: pick(DADDR, &[0xc633_6401, 0x0a00_0002]),
            sport: pick(SPORT, &[40000, 1024]) as u16,
            dport: pick(DPORT, &[80, 443, 22, 53]) as u16,
            icmp_type: pick(ICMP, &[8]) as u8,
            icmp_code: 0,
            tcp_flags: pick(FLAGS, &[0x02, 0x10]) as u8,
            iif: rep(IIF, iif_none),
            oif: rep(OIF, oif_none),
            mark: pick(MARK, &[0]),
            ct: CT_BITS[ct_k],
            ttl: 64,
            l4,
        }
    }

    /// One packet of a violating part, replayed through the interpreter.
    fn counterexample(&self, part: Part, end: &End) -> Proof {
        let packet = self.pick_packet(&part.cube);
        let mut replay = Replay {
            coins: part.coins.clone(),
            next: 0,
        };
        let res = interp::run(self.p, self.path, &packet, &mut replay);
        let replayed = match (&res, end) {
            (Ok(o), End::Fate(f)) => same_verdict(&o.fate, f),
            (Err(_), End::Error) => true,
            _ => false,
        };
        if !replayed {
            return Proof::Unknown(format!(
                "internal error: the counterexample {packet} did not replay (expected {end:?}, got {res:?})"
            ));
        }
        let outcome = match res {
            Ok(o) => o,
            Err(e) => error_outcome(self.path, &packet, &e),
        };
        let test_line = test_line(self.path, &packet, &outcome.fate);
        Proof::Fails(Box::new(Counterexample {
            path: self.path,
            packet,
            coins: part.coins,
            outcome,
            test_line,
        }))
    }
}

/// The outcome of a packet the interpreter stops on (NAT with no interface address): the
/// datapath drops it; the error is its trace.
fn error_outcome(path: PathKind, packet: &Packet, e: &interp::InterpError) -> interp::Outcome {
    interp::Outcome {
        fate: Fate::Drop,
        packet: packet.clone(),
        trace: vec![interp::TraceStep {
            hook: path.hooks()[0],
            table: Table::Nat,
            chain: ChainId(0),
            rule: None,
            action: format!("error: {e}"),
        }],
        deciding_rule: None,
    }
}

/// The packet as a `test` line with its actual verdict.
pub fn test_line(path: PathKind, p: &Packet, fate: &Fate) -> Option<String> {
    if !p.l4 {
        return None;
    }
    let a = |x: u32| std::net::Ipv4Addr::from(x).to_string();
    let mut s = match p.proto {
        6 | 17 => format!(
            "{} {} {}:{} -> {}:{}",
            path.name(),
            if p.proto == 6 { "tcp" } else { "udp" },
            a(p.saddr),
            p.sport,
            a(p.daddr),
            p.dport
        ),
        1 => format!(
            "{} icmp {} -> {} type {}",
            path.name(),
            a(p.saddr),
            a(p.daddr),
            icmp_type_name(p.icmp_type)?
        ),
        _ => return None,
    };
    if let Some(i) = &p.iif {
        s.push_str(&format!(" iif {i}"));
    }
    if let Some(o) = &p.oif {
        s.push_str(&format!(" oif {o}"));
    }
    s.push_str(&format!(" ct state {}", ct::names(p.ct).join(",")));
    if p.mark != 0 {
        s.push_str(&format!(" mark {:#x}", p.mark));
    }
    let v = match fate {
        Fate::Accept => "accept",
        Fate::Drop => "drop",
        Fate::Reject(_) => "reject",
        Fate::Queue { .. } => "queue",
        Fate::Stolen => return None,
    };
    s.push_str(&format!(" => {v};"));
    Some(s)
}

fn icmp_type_name(t: u8) -> Option<String> {
    Some(
        crate::types::icmp_type_name(t)
            .map(str::to_string)
            .unwrap_or_else(|| t.to_string()),
    )
}

// -------------------------------------------------------------------------------------
// semantic diff

/// A region of packets two programs treat differently.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathKind,
    /// the region, written as matches (its box; earlier rules may take packets out of it)
    pub region: String,
    /// one packet of it, and how each program ends it
    pub example: Packet,
    pub old: interp::Outcome,
    pub new: interp::Outcome,
    /// the `statistic`/`limit` outcomes the difference needs, in each program
    pub coins: (Coins, Coins),
}

/// How the `statistic`/`limit` matches on a packet's way went, in order.
pub type Coins = Vec<(RuleId, bool)>;

/// The dimensions a rewrite changes, compared between the programs' outcomes.
const REWRITTEN: [usize; 5] = [SADDR, DADDR, SPORT, DPORT, MARK];

/// The regions of packets whose fate or rewrite differs between `old` and `new`, on every
/// path, at most `max` of them (in path order, then in the old program's rule order).
pub fn diff(old: &Program, new: &Program, max: usize) -> Result<Vec<Change>, String> {
    let ifs = Ifaces::of(&patterns_of(&[old, new], &[]));
    let mut out = Vec::new();
    for path in [PathKind::Input, PathKind::Forward, PathKind::Output] {
        let mut a = Prover {
            p: old,
            ifs: ifs.clone(),
            path,
            always: false,
            want: Fate::Accept,
            parts: 0,
            budget: MAX_PARTS,
        };
        let mut b = Prover {
            p: new,
            ..a.clone_for()
        };
        for (pa, ea) in a.ends(universe(&ifs))? {
            // the old program's part, as original packets, through the new program
            let start = Part {
                cube: pa.cube.clone(),
                minus: pa.minus.clone(),
                now: [None; DIMS],
                coins: vec![],
                raw_ct: None,
            };
            for (pb, eb) in b.ends(vec![start])? {
                let fate = |e: &End| match e {
                    End::Fate(f) => *f,
                    End::Error => Fate::Drop,
                };
                let mut conds: Vec<Option<(usize, IntervalSet)>> = Vec::new();
                if fate(&ea) != fate(&eb) {
                    conds.push(None);
                } else if fate(&ea) == Fate::Accept {
                    // the same fate: a change in what the packet leaves as
                    for d in REWRITTEN {
                        match (pa.now[d], pb.now[d]) {
                            (Some(a), Some(b)) if a != b => conds.push(None),
                            (Some(c), None) | (None, Some(c)) => {
                                let not_c = one(c).complement(u32::MAX);
                                conds.push(Some((d, not_c)));
                            }
                            _ => {}
                        }
                    }
                }
                for cond in conds {
                    let mut cube = pb.cube.clone();
                    if let Some((d, set)) = &cond {
                        cube[*d] = cube[*d].intersect(set);
                    }
                    let w = match witness(&cube, &pb.minus, &mut b.budget) {
                        Ok(Some(w)) => w,
                        Ok(None) => continue,
                        Err(()) => {
                            return Err(format!(
                                "more than {MAX_PARTS} steps to tell whether a region is empty"
                            ))
                        }
                    };
                    let example = b.packet_in(&w);
                    let run = |p: &Program, coins: &[(RuleId, bool)]| {
                        let mut r = Replay {
                            coins: coins.to_vec(),
                            next: 0,
                        };
                        interp::run(p, path, &example, &mut r)
                    };
                    let (ro, rn) = (run(old, &pa.coins), run(new, &pb.coins));
                    let outcome = |r: Result<interp::Outcome, interp::InterpError>| {
                        r.unwrap_or_else(|e| error_outcome(path, &example, &e))
                    };
                    let (ro, rn) = (outcome(ro), outcome(rn));
                    let leaves = |o: &interp::Outcome| {
                        let p = &o.packet;
                        (o.fate, p.saddr, p.daddr, p.sport, p.dport, p.mark)
                    };
                    if leaves(&ro) == leaves(&rn) {
                        return Err(format!(
                            "internal error: the example {example} of a change is treated alike by both programs"
                        ));
                    }
                    out.push(Change {
                        path,
                        region: describe(&pb.cube, &pb.minus, &ifs),
                        example,
                        old: ro,
                        new: rn,
                        coins: (pa.coins.clone(), pb.coins.clone()),
                    });
                    if out.len() >= max {
                        return Ok(out);
                    }
                    break;
                }
            }
        }
    }
    Ok(out)
}

impl Prover<'_> {
    /// A prover over the same space and path, for another program.
    fn clone_for(&self) -> Prover<'_> {
        Prover {
            p: self.p,
            ifs: self.ifs.clone(),
            path: self.path,
            always: self.always,
            want: self.want,
            parts: 0,
            budget: MAX_PARTS,
        }
    }

    /// One readable packet of a cube (as a counterexample picks it).
    fn packet_in(&self, cube: &[IntervalSet; DIMS]) -> Packet {
        self.pick_packet(cube)
    }
}

/// A cube as matches: the dimensions it constrains, in fw syntax. A box taken out of it
/// that cuts it in one dimension only is taken out of that dimension exactly; any other
/// is mentioned.
fn describe(cube: &[IntervalSet; DIMS], minus: &Minus, ifs: &Ifaces) -> String {
    let mut cube = cube.clone();
    let mut changed = true;
    while changed {
        changed = false;
        for b in minus.iter() {
            if !meets(b, &cube) {
                continue;
            }
            let cuts: Vec<(usize, IntervalSet)> = b
                .iter()
                .filter(|(d, s)| !cube[*d].is_subset(s))
                .cloned()
                .collect();
            if let [(d, s)] = cuts.as_slice() {
                let left = cube[*d].intersect(&s.complement(u32::MAX));
                if !left.is_empty() {
                    cube[*d] = left;
                    changed = true;
                }
            }
        }
    }
    let cube = &cube;
    let full = |d: usize, max: u32| cube[d].0 == [(0, max)];
    let addr = |s: &IntervalSet| {
        let one = |&(lo, hi): &(u32, u32)| {
            let a = std::net::Ipv4Addr::from;
            let span = u64::from(hi) - u64::from(lo) + 1;
            if lo == hi {
                a(lo).to_string()
            } else if span.is_power_of_two() && u64::from(lo) % span == 0 {
                format!("{}/{}", a(lo), 32 - span.trailing_zeros())
            } else {
                format!("{}-{}", a(lo), a(hi))
            }
        };
        list(s.0.iter().map(one).collect())
    };
    let num = |s: &IntervalSet| {
        list(
            s.0.iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect(),
        )
    };
    let mut m: Vec<String> = Vec::new();
    let proto = match cube[PROTO].0.as_slice() {
        [(6, 6)] => Some("tcp"),
        [(17, 17)] => Some("udp"),
        [(1, 1)] => Some("icmp"),
        _ => None,
    };
    match proto {
        Some(p) => m.push(p.to_string()),
        None if !full(PROTO, 255) => m.push(format!("ip protocol {}", num(&cube[PROTO]))),
        None => {}
    }
    if cube[L4].0 == [(0, 0)] {
        m.push("(no transport header)".into());
    }
    for (d, name) in [(SADDR, "ip saddr"), (DADDR, "ip daddr")] {
        if !full(d, u32::MAX) {
            m.push(format!("{name} {}", addr(&cube[d])));
        }
    }
    if let Some(p @ ("tcp" | "udp")) = proto {
        for (d, name) in [(SPORT, "sport"), (DPORT, "dport")] {
            if !full(d, 65535) {
                m.push(format!("{p} {name} {}", num(&cube[d])));
            }
        }
    }
    if proto == Some("icmp") && !full(ICMP, 255) {
        m.push(format!("icmp type {}", num(&cube[ICMP])));
    }
    if !full(MARK, u32::MAX) {
        m.push(format!("mark {}", num(&cube[MARK])));
    }
    if !full(CT, 4) {
        let states: Vec<&str> = (0..5u32)
            .filter(|&k| contains(&cube[CT], k))
            .flat_map(|k| ct::names(CT_BITS[k as usize]))
            .collect();
        m.push(format!("ct state {}", states.join(",")));
    }
    let classes = ifs.reps.len() as u32 - 1;
    for (d, name) in [(IIF, "iif"), (OIF, "oif")] {
        if !full(d, classes) {
            let names: Vec<String> = (0..=classes)
                .filter(|&c| contains(&cube[d], c))
                .map(|c| {
                    ifs.reps[c as usize]
                        .clone()
                        .unwrap_or_else(|| "(none)".into())
                })
                .collect();
            m.push(format!("{name} {}", list(names)));
        }
    }
    let mut s = if m.is_empty() {
        "every packet".to_string()
    } else {
        m.join(" ")
    };
    if minus.iter().any(|b| meets(b, cube) && !holds(b, cube)) {
        s.push_str(", less what earlier rules take");
    }
    s
}

/// One value as itself, several as a set (the first six, then `...`).
fn list(v: Vec<String>) -> String {
    match v.len() {
        1 => v.into_iter().next().unwrap_or_default(),
        n if n > 6 => format!("{{ {}, ... }}", v[..6].join(", ")),
        _ => format!("{{ {} }}", v.join(", ")),
    }
}

// -------------------------------------------------------------------------------------
// shadowing by several rules

/// The rules that no packet reaches because earlier rules of their chain, together, decide
/// every packet they would match (and no single earlier rule does: that is
/// `analysis::dead_rules`' case): (chain, rule index, the earlier rules that meet it). Only
/// rules without `statistic` or `limit`, with no rewrite between shadowers and shadowed,
/// met by 2 to 64 earlier rules, each decided within 2,000 splits; at most `max_pairs`
/// rule pairs per chain are compared. What is reported is certain; what is not may still be.
pub fn shadowed_by_several(p: &Program, max_pairs: u64) -> Vec<(usize, usize, Vec<usize>)> {
    let ifs = Ifaces::of(&patterns_of(&[p], &[]));
    let starts = universe(&ifs);
    let mut out = Vec::new();
    for (ci, c) in p.chains.iter().enumerate() {
        let mut earlier: Vec<(usize, Box_)> = Vec::new();
        let mut pairs = 0u64;
        for (ri, r) in c.rules.iter().enumerate() {
            let cons: Option<Vec<(usize, IntervalSet)>> = r
                .preds
                .iter()
                .map(|p| pred_cons(p, &ifs))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat());
            if let Some(cons) = &cons {
                let cubes: Vec<[IntervalSet; DIMS]> = starts
                    .iter()
                    .filter_map(|u| {
                        let mut cube = u.cube.clone();
                        for (d, set) in cons {
                            cube[*d] = cube[*d].intersect(set);
                        }
                        (!cube.iter().any(IntervalSet::is_empty)).then_some(cube)
                    })
                    .collect();
                pairs += earlier.len() as u64;
                if pairs > max_pairs {
                    break;
                }
                let meeting: Vec<&(usize, Box_)> = earlier
                    .iter()
                    .filter(|(_, b)| cubes.iter().any(|c| meets(b, c)))
                    .collect();
                // covered by two to 64 earlier rules, decided within 2,000 splits (beyond,
                // nothing is said)
                let mut budget = 2_000usize;
                if (2..=64).contains(&meeting.len()) && !cubes.is_empty() {
                    let mut minus = Minus::default();
                    for (_, b) in &meeting {
                        minus = minus.push(b.clone());
                    }
                    let covered = cubes
                        .iter()
                        .all(|c| matches!(witness(c, &minus, &mut budget), Ok(None)));
                    let single = meeting
                        .iter()
                        .any(|(_, b)| cubes.iter().all(|c| holds(b, c)));
                    if covered && !single {
                        out.push((ci, ri, meeting.iter().map(|(j, _)| *j).collect()));
                    }
                }
                if crate::analysis::ends_chain(r) {
                    let mut b: Box_ = Vec::new();
                    for (d, set) in cons {
                        match b.iter_mut().find(|(e, _)| e == d) {
                            Some((_, s)) => *s = s.intersect(set),
                            None => b.push((*d, set.clone())),
                        }
                    }
                    earlier.push((ri, b));
                }
            }
            if crate::analysis::rewrites(r) && !crate::analysis::ends_chain(r) {
                earlier.clear();
            }
        }
    }
    out
}
