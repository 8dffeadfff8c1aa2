//! Kernel back ends: the IR as an `iptables-restore` script or an `nft -f` script with the
//! same semantics (`fwc export --target iptables|nft`).
//!
//! Both work from the instantiated IR, so a subchain with arguments is already one chain per
//! distinct argument list. A rule becomes one or more *lines* (kernel rules): matches
//! iptables cannot say in one rule (address and mark sets, port sets beyond multiport's 15
//! slots, protocol sets, positive interface sets) are made disjoint and multiplied out, so a
//! packet matches at most one line of a rule and the rule's statements run at most once.
//! A rule with several statements calls a helper chain holding them (entered by goto when the
//! rule ends in `return` or `goto`, so that these keep their meaning); a negated set of
//! several interfaces is a helper chain that returns for each of them. `limit` becomes
//! `hashlimit` with one named bucket when a rule has several lines, and stateful matches come
//! last on a line so that they are evaluated only when everything else matched.
//! What has no exact translation is an [`ExportError`] naming the rule, never dropped.

use crate::ir::*;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Which kernel front end to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Iptables,
    Nft,
}

/// A rule that has no exact translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError {
    pub rule: Option<RuleId>,
    pub message: String,
}

/// One kernel rule of an iptables export and the IR rule it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    pub table: Table,
    /// the kernel chain (`INPUT`, or a user chain's name)
    pub chain: String,
    pub rule: RuleId,
    /// whether the kernel rule counts exactly the packets the IR rule matched (false for
    /// the jumps into a helper chain that tests part of the rule, and its `RETURN`s)
    pub exact: bool,
}

#[derive(Debug, Clone)]
pub struct Export {
    pub text: String,
    /// every kernel rule in the order of the script (which is the order of each chain's
    /// rules), for reading kernel counters back; the one rule fwc adds of its own, last in
    /// a nat chain to keep conntrack on, is not listed
    pub rules: Vec<KernelRule>,
}

/// Writes `p` for `target`.
pub fn export(p: &Program, target: Target) -> Result<Export, Vec<ExportError>> {
    export_with(p, target, false)
}

/// As [`export`]; with `counters`, every nft rule gets a `counter` (iptables rules always
/// count).
pub fn export_with(
    p: &Program,
    target: Target,
    counters: bool,
) -> Result<Export, Vec<ExportError>> {
    let mut x = Exporter {
        p,
        target,
        counters,
        out: String::new(),
        rules: Vec::new(),
        errors: Vec::new(),
        helper_names: Default::default(),
    };
    x.run();
    if x.errors.is_empty() {
        Ok(Export {
            text: x.out,
            rules: x.rules,
        })
    } else {
        Err(x.errors)
    }
}

/// The iptables name of a built-in chain.
pub fn builtin_chain(hook: Hook) -> &'static str {
    match hook {
        Hook::Prerouting => "PREROUTING",
        Hook::Input => "INPUT",
        Hook::Forward => "FORWARD",
        Hook::Output => "OUTPUT",
        Hook::Postrouting => "POSTROUTING",
    }
}

// ------------------------------------------------------------------------------------------
// interval sets (sorted, disjoint, inclusive)

type Ivs = Vec<(u32, u32)>;

fn union(mut v: Ivs) -> Ivs {
    v.sort_unstable();
    let mut out: Ivs = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn complement(v: &Ivs, max: u32) -> Ivs {
    let mut out = Vec::new();
    let mut next: Option<u32> = Some(0);
    for &(a, b) in v {
        if let Some(n) = next {
            if a > n {
                out.push((n, a - 1));
            }
        }
        next = b.checked_add(1);
    }
    if let Some(n) = next {
        if n <= max {
            out.push((n, max));
        }
    }
    out
}

fn intersect(a: &Ivs, b: &Ivs) -> Ivs {
    let mut out = Vec::new();
    for &(x0, x1) in a {
        for &(y0, y1) in b {
            let (lo, hi) = (x0.max(y0), x1.min(y1));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    union(out)
}

/// `[lo, hi]` as the fewest aligned prefix blocks (address, length).
fn prefixes(lo: u32, hi: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let mut a = u64::from(lo);
    let hi = u64::from(hi);
    while a <= hi {
        let mut len = 32u8;
        while len > 0 {
            let size = 1u64 << (33 - u32::from(len));
            if a % size != 0 || a + size - 1 > hi {
                break;
            }
            len -= 1;
        }
        out.push((a as u32, len));
        a += 1u64 << (32 - u32::from(len));
    }
    out
}

fn as_prefix(lo: u32, hi: u32) -> Option<(u32, u8)> {
    match prefixes(lo, hi).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v)
}

// ------------------------------------------------------------------------------------------
// a rule's matches, normalised

/// One field's constraint: the values it may take (positive), or a single negated element
/// kept as written (`! -s 10.0.0.0/8` rather than its 24-interval complement).
#[derive(Debug, Clone)]
enum FieldCon {
    In(Ivs),
    NotOne((u32, u32)),
}

impl FieldCon {
    fn positive(&self, max: u32) -> Ivs {
        match self {
            FieldCon::In(v) => v.clone(),
            FieldCon::NotOne(e) => complement(&vec![*e], max),
        }
    }
}

/// A rule's interface matches on one side: the names it must have (when it says so) and
/// the names it must not have; each list pairwise disjoint.
#[derive(Debug, Clone, Default)]
struct IfaceCon {
    pos: Option<Vec<IfName>>,
    neg: Vec<IfName>,
}

/// The conjunction of a rule's predicates, per field.
#[derive(Debug, Clone, Default)]
struct Norm {
    fields: BTreeMap<Field, FieldCon>,
    ifaces: [Option<IfaceCon>; 2],
    ct: Vec<(bool, u8)>,
    flags: Vec<(bool, u8, u8)>,
    stats: Vec<f64>,
    limits: Vec<(bool, u64, u64, u32)>,
    /// some field can take no value: the rule never matches
    empty: bool,
}

fn field_ivs(op: &Operand) -> Ivs {
    union(op.elems().iter().map(Elem::bounds).collect())
}

/// Drops names another name of the set already covers (`eth0` beside `eth*`): what is left
/// is pairwise disjoint.
fn disjoint_names(names: &[IfName]) -> Vec<IfName> {
    let covers = |a: &IfName, b: &IfName| a.wildcard && b.name.starts_with(&a.name);
    let mut out: Vec<IfName> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let covered = names.iter().enumerate().any(|(j, m)| {
            j != i && covers(m, n) && (!covers(n, m) || j < i) // equal patterns: keep the first
        }) || out.contains(n);
        if !covered {
            out.push(n.clone());
        }
    }
    out
}

fn ifname_disjoint(a: &IfName, b: &IfName) -> bool {
    match (a.wildcard, b.wildcard) {
        (false, false) => a.name != b.name,
        (true, false) => !b.name.starts_with(&a.name),
        (false, true) => !a.name.starts_with(&b.name),
        (true, true) => !a.name.starts_with(&b.name) && !b.name.starts_with(&a.name),
    }
}

/// The names both patterns match, as one pattern (one always covers the other when they
/// meet).
fn ifname_meet(a: &IfName, b: &IfName) -> Option<IfName> {
    let covers = |x: &IfName, y: &IfName| {
        if x.wildcard {
            y.name.starts_with(&x.name)
        } else {
            !y.wildcard && x.name == y.name
        }
    };
    if covers(a, b) {
        Some(b.clone())
    } else if covers(b, a) {
        Some(a.clone())
    } else {
        None
    }
}

impl Norm {
    fn of(preds: &[Pred]) -> Norm {
        let mut n = Norm::default();
        for pr in preds {
            match pr {
                Pred::Field { field, neg, op } => {
                    let iv = field_ivs(op);
                    let con = if *neg {
                        if iv.len() == 1 {
                            FieldCon::NotOne(iv[0])
                        } else {
                            FieldCon::In(complement(&iv, field.max_value()))
                        }
                    } else {
                        FieldCon::In(iv)
                    };
                    n.add_field(*field, con);
                }
                Pred::Iface { dir, neg, names } => {
                    let slot = n.ifaces[usize::from(*dir == IfDir::Out)]
                        .get_or_insert_with(IfaceCon::default);
                    if *neg {
                        slot.neg.extend(names.iter().cloned());
                        slot.neg = disjoint_names(&slot.neg);
                    } else {
                        let names = disjoint_names(names);
                        slot.pos = Some(match slot.pos.take() {
                            None => names,
                            Some(prev) => {
                                // pairwise intersections: the narrower of two patterns that
                                // meet (`eth*` and `eth0` meet in `eth0`)
                                let mut both: Vec<IfName> = Vec::new();
                                for a in &prev {
                                    for b in &names {
                                        if let Some(x) = ifname_meet(a, b) {
                                            both.push(x);
                                        }
                                    }
                                }
                                disjoint_names(&both)
                            }
                        });
                    }
                }
                Pred::CtState { neg, mask } => n.ct.push((*neg, *mask)),
                Pred::TcpFlags { neg, mask, value } => n.flags.push((*neg, *mask, *value)),
                Pred::Statistic { p } => n.stats.push(*p),
                Pred::Limit {
                    neg,
                    rate,
                    per_secs,
                    burst,
                } => n.limits.push((*neg, *rate, *per_secs, *burst)),
            }
        }
        for c in n.ifaces.iter_mut().flatten() {
            if let Some(pos) = &mut c.pos {
                // a name a negated pattern covers cannot match; a negated name no wanted
                // name can meet says nothing
                pos.retain(|a| !c.neg.iter().any(|b| ifname_meet(a, b).as_ref() == Some(a)));
                let pos = &*pos;
                c.neg.retain(|b| pos.iter().any(|a| !ifname_disjoint(a, b)));
                if pos.is_empty() {
                    n.empty = true;
                }
            }
        }
        // what the transport matches imply about the protocol
        let mut need: Option<Ivs> = None;
        let mut narrow = |v: Ivs| {
            need = Some(match &need {
                Some(o) => intersect(o, &v),
                None => v,
            })
        };
        if n.fields.contains_key(&Field::Sport) || n.fields.contains_key(&Field::Dport) {
            narrow(vec![(6, 6), (17, 17)]);
        }
        if n.fields.contains_key(&Field::IcmpType) {
            narrow(vec![(1, 1)]);
        }
        if !n.flags.is_empty() {
            narrow(vec![(6, 6)]);
        }
        if let Some(v) = need {
            n.add_field(Field::Proto, FieldCon::In(v));
        }
        n
    }

    fn add_field(&mut self, f: Field, con: FieldCon) {
        let merged = match self.fields.remove(&f) {
            None => con,
            Some(prev) => FieldCon::In(intersect(
                &prev.positive(f.max_value()),
                &con.positive(f.max_value()),
            )),
        };
        if matches!(&merged, FieldCon::In(v) if v.is_empty()) {
            self.empty = true;
        }
        self.fields.insert(f, merged);
    }

    fn protos(&self) -> Option<Ivs> {
        self.fields.get(&Field::Proto).map(|c| c.positive(255))
    }
}

// ------------------------------------------------------------------------------------------
// the exporter

struct Exporter<'a> {
    p: &'a Program,
    target: Target,
    /// nft: a `counter` on every rule
    counters: bool,
    out: String,
    rules: Vec<KernelRule>,
    errors: Vec<ExportError>,
    helper_names: std::collections::HashSet<String>,
}

/// A chain being written: its name, its hook when it is a base chain, and its lines (text,
/// the IR rule, whether the line counts exactly that rule's matches).
struct ChainOut {
    name: String,
    hook: Option<Hook>,
    lines: Vec<(String, RuleId, bool)>,
}

impl ChainOut {
    fn helper(name: String) -> ChainOut {
        ChainOut {
            name,
            hook: None,
            lines: Vec::new(),
        }
    }
}

impl Exporter<'_> {
    /// A helper chain name not used yet: `fwc-r<rule>`, then `fwc-r<rule>-2`...
    fn fresh(&mut self, id: RuleId) -> String {
        let mut name = format!("fwc-r{}", id.0);
        let mut k = 1;
        while self.helper_names.contains(&name) {
            k += 1;
            name = format!("fwc-r{}-{k}", id.0);
        }
        self.helper_names.insert(name.clone());
        name
    }

    fn err(&mut self, rule: Option<RuleId>, message: impl Into<String>) {
        self.errors.push(ExportError {
            rule,
            message: message.into(),
        });
    }

    /// Base chains of `table` by hook (an error when a hook has two).
    fn bases(&mut self, table: Table) -> Vec<(Hook, ChainId, Policy)> {
        let mut out = Vec::new();
        for h in Hook::ALL {
            let es: Vec<&HookEntry> = self.p.hooks[h.index()]
                .iter()
                .filter(|e| e.table == table)
                .collect();
            if es.len() > 1 {
                self.err(
                    None,
                    format!(
                        "table {} has {} base chains at hook {}; iptables and nft tables have one",
                        table.name(),
                        es.len(),
                        h.name()
                    ),
                );
            }
            if let Some(e) = es.first() {
                let policy = match self.p.chain(e.chain).kind {
                    ChainKind::Base { policy, .. } => policy,
                    ChainKind::Sub { .. } => Policy::Accept,
                };
                out.push((h, e.chain, policy));
            }
        }
        out
    }

    /// Subchain instances reachable from `roots`, in first-call order.
    fn reachable(&self, roots: &[ChainId]) -> Vec<ChainId> {
        let mut seen: Vec<ChainId> = Vec::new();
        let mut stack: Vec<ChainId> = roots.iter().rev().copied().collect();
        let mut order = Vec::new();
        while let Some(c) = stack.pop() {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            if matches!(self.p.chain(c).kind, ChainKind::Sub { .. }) {
                order.push(c);
            }
            let mut next = Vec::new();
            for r in &self.p.chain(c).rules {
                for s in &r.stmts {
                    call_targets(s, &mut next);
                }
            }
            stack.extend(next.into_iter().rev());
        }
        order
    }

    /// Kernel names for the subchain instances: the subchain's name, numbered when it has
    /// several instances, cut to what the kernel allows.
    fn names(&self, subs: &[ChainId]) -> HashMap<ChainId, String> {
        let max = match self.target {
            Target::Iptables => 28,
            Target::Nft => 64,
        };
        let mut count: HashMap<&str, usize> = HashMap::new();
        for c in subs {
            *count.entry(self.p.chain(*c).name.as_str()).or_default() += 1;
        }
        let mut used: Vec<String> = Hook::ALL
            .iter()
            .map(|h| builtin_chain(*h).to_string())
            .collect();
        let mut out = HashMap::new();
        let mut nth: HashMap<&str, usize> = HashMap::new();
        for c in subs {
            let base = &self.p.chain(*c).name;
            let clean: String = base
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let k = nth.entry(base.as_str()).or_default();
            *k += 1;
            let mut name = if count[base.as_str()] > 1 {
                format!("{clean}-{k}")
            } else {
                clean.clone()
            };
            let mut extra = 1;
            while name.len() > max || used.contains(&name) || name.starts_with("fwc-r") {
                extra += 1;
                let suffix = format!("-{k}-{extra}");
                let keep = clean.len().min(max.saturating_sub(suffix.len()));
                name = format!("{}{suffix}", &clean[..keep]);
            }
            used.push(name.clone());
            out.insert(*c, name);
        }
        out
    }

    fn run(&mut self) {
        let _ = writeln!(
            self.out,
            "# generated by fwc export --target {} from {}",
            match self.target {
                Target::Iptables => "iptables",
                Target::Nft => "nft",
            },
            self.p.files.first().map(String::as_str).unwrap_or("?")
        );
        // the addresses the program assumed (masquerade's, the interpreter's): the kernel
        // knows its own, `fwc import` reads these back
        for i in &self.p.interfaces {
            let _ = write!(self.out, "# fwc: interface {}", i.name);
            for a in &i.addrs {
                let _ = write!(self.out, " address {}", ip(*a));
            }
            let _ = writeln!(self.out, ";");
        }
        for table in Table::ALL {
            let bases = self.bases(table);
            if bases.is_empty() {
                continue;
            }
            let roots: Vec<ChainId> = bases.iter().map(|b| b.1).collect();
            let subs = self.reachable(&roots);
            let names = self.names(&subs);
            let mut chains: Vec<ChainOut> = Vec::new();
            let mut helpers: Vec<ChainOut> = Vec::new();
            for &(hook, id, _) in &bases {
                let name = match self.target {
                    Target::Iptables => builtin_chain(hook).to_string(),
                    Target::Nft => hook.name().to_string(),
                };
                let c = self.chain(table, id, name, Some(hook), &names, &mut helpers);
                chains.push(c);
            }
            for id in &subs {
                let c = self.chain(table, *id, names[id].clone(), None, &names, &mut helpers);
                chains.push(c);
            }
            match self.target {
                Target::Iptables => self.write_iptables(table, &bases, chains, helpers),
                Target::Nft => self.write_nft(table, &bases, chains, helpers),
            }
        }
    }

    fn write_iptables(
        &mut self,
        table: Table,
        bases: &[(Hook, ChainId, Policy)],
        chains: Vec<ChainOut>,
        helpers: Vec<ChainOut>,
    ) {
        let _ = writeln!(self.out, "*{}", table.name());
        for &h in table.hooks() {
            let policy = bases
                .iter()
                .find(|b| b.0 == h)
                .map(|b| b.2)
                .unwrap_or(Policy::Accept);
            let _ = writeln!(
                self.out,
                ":{} {} [0:0]",
                builtin_chain(h),
                match policy {
                    Policy::Accept => "ACCEPT",
                    Policy::Drop => "DROP",
                }
            );
        }
        for c in chains.iter().skip(bases.len()).chain(helpers.iter()) {
            let _ = writeln!(self.out, ":{} - [0:0]", c.name);
        }
        for c in chains.iter().chain(helpers.iter()) {
            for (line, rule, exact) in &c.lines {
                let _ = writeln!(self.out, "-A {} {line}", c.name);
                self.rules.push(KernelRule {
                    table,
                    chain: c.name.clone(),
                    rule: *rule,
                    exact: *exact,
                });
            }
        }
        if table == Table::Nat && !tracks(self.p) {
            // last in the first base chain, where it changes nothing
            let _ = writeln!(
                self.out,
                "-A {} -m conntrack --ctstate INVALID,NEW,ESTABLISHED,RELATED,UNTRACKED \
                 -m comment --comment {}",
                chains[0].name,
                quote(TRACK_NOTE)
            );
        }
        let _ = writeln!(self.out, "COMMIT");
    }

    fn write_nft(
        &mut self,
        table: Table,
        bases: &[(Hook, ChainId, Policy)],
        chains: Vec<ChainOut>,
        helpers: Vec<ChainOut>,
    ) {
        let t = format!("fwc_{}", table.name());
        let _ = writeln!(
            self.out,
            "table ip {t}\ndelete table ip {t}\ntable ip {t} {{"
        );
        for (i, c) in chains.iter().chain(helpers.iter()).enumerate() {
            let _ = writeln!(self.out, "    chain {} {{", c.name);
            if let Some(&(hook, _, policy)) = bases.get(i) {
                let kind = match (table, hook) {
                    (Table::Nat, _) => "nat",
                    (Table::Mangle, Hook::Output) => "route",
                    _ => "filter",
                };
                let _ = writeln!(
                    self.out,
                    "        type {kind} hook {} priority {}; policy {};",
                    hook.name(),
                    table.priority(hook),
                    match policy {
                        Policy::Accept => "accept",
                        Policy::Drop => "drop",
                    }
                );
            }
            for (line, rule, exact) in &c.lines {
                let _ = writeln!(self.out, "        {line}");
                self.rules.push(KernelRule {
                    table,
                    chain: c.name.clone(),
                    rule: *rule,
                    exact: *exact,
                });
            }
            if i == 0 && table == Table::Nat && !tracks(self.p) {
                let _ = writeln!(
                    self.out,
                    "        ct state {{ invalid, new, established, related, untracked }} \
                     comment {}",
                    quote(TRACK_NOTE)
                );
            }
            let _ = writeln!(self.out, "    }}");
        }
        let _ = writeln!(self.out, "}}");
    }

    fn chain(
        &mut self,
        table: Table,
        id: ChainId,
        name: String,
        hook: Option<Hook>,
        names: &HashMap<ChainId, String>,
        helpers: &mut Vec<ChainOut>,
    ) -> ChainOut {
        let mut out = ChainOut {
            name,
            hook,
            lines: Vec::new(),
        };
        let chain = self.p.chain(id);
        // a rule may end the chain's kernel text and continue it in another chain (see
        // `emit_iptables`): the later rules go there
        let mut segs: Vec<ChainOut> = Vec::new();
        for r in &chain.rules {
            if let Err(m) = self.rule(table, r, names, &mut out, &mut segs, helpers) {
                let loc = self.p.rule_location(r.id);
                self.err(Some(r.id), format!("{loc}: {m}"));
            }
        }
        if segs.is_empty() {
            return out;
        }
        segs.insert(0, out);
        let first = segs.remove(0);
        helpers.extend(segs);
        first
    }

    fn rule(
        &mut self,
        table: Table,
        r: &Rule,
        names: &HashMap<ChainId, String>,
        first: &mut ChainOut,
        segs: &mut Vec<ChainOut>,
        helpers: &mut Vec<ChainOut>,
    ) -> Result<(), String> {
        let norm = Norm::of(&r.preds);
        // `counter` adds nothing to a kernel rule, which counts anyway
        let mut stmts: Vec<&Stmt> = r.stmts.iter().collect();
        if stmts.len() > 1 {
            stmts.retain(|s| !matches!(s, Stmt::Counter));
        }
        if let Some(Stmt::Vmap { key, arms }) = stmts.last() {
            if stmts.len() > 1 {
                // statements before the map run whenever the rule matches, hit or miss: the
                // rule runs them and jumps to a helper chain holding the map's arms
                if arms
                    .iter()
                    .any(|a| matches!(a.verdict, Stmt::Return | Stmt::Goto(_)))
                {
                    return Err("a verdict map with return or goto arms after other \
                                statements has no kernel translation; put the statements \
                                in a rule of their own"
                        .into());
                }
                let h = self.fresh(r.id);
                let mut hc = ChainOut::helper(h.clone());
                let only_key = Rule {
                    id: r.id,
                    preds: r
                        .preds
                        .iter()
                        .filter(|p| {
                            matches!(
                                p,
                                Pred::Field {
                                    field: Field::Proto,
                                    ..
                                }
                            )
                        })
                        .cloned()
                        .collect(),
                    stmts: vec![stmts[stmts.len() - 1].clone()],
                };
                let mut none = Vec::new();
                self.rule(table, &only_key, names, &mut hc, &mut none, helpers)?;
                helpers.push(hc);
                helpers.extend(none);
                let fake = ChainId(u32::MAX - self.helper_names.len() as u32);
                let mut names2 = names.clone();
                names2.insert(fake, h);
                let mut with_jump: Vec<&Stmt> = stmts[..stmts.len() - 1].to_vec();
                let jump = Stmt::Jump(fake);
                with_jump.push(&jump);
                return self.emit(
                    table, r.id, &norm, &with_jump, &names2, first, segs, helpers,
                );
            }
            // one rule per arm, each key minus the arms before it (keys do not overlap)
            for a in arms {
                let mut n = norm.clone();
                match (&key, &a.key) {
                    (VmapKey::Field(f), VmapArmKey::Num(e)) => {
                        n.add_field(*f, FieldCon::In(vec![e.bounds()]));
                        if *f == Field::Sport || *f == Field::Dport {
                            n.add_field(Field::Proto, FieldCon::In(vec![(6, 6), (17, 17)]));
                        }
                    }
                    (VmapKey::Iface(d), VmapArmKey::Iface(name)) => {
                        let pred = Pred::Iface {
                            dir: *d,
                            neg: false,
                            names: vec![name.clone()],
                        };
                        let mut preds = r.preds.clone();
                        preds.push(pred);
                        n = Norm::of(&preds);
                        // an interface arm after a wildcard arm that covers it never hits
                        let earlier = arms.iter().take_while(|b| !std::ptr::eq(*b, a)).filter_map(
                            |b| match &b.key {
                                VmapArmKey::Iface(m) => Some(m),
                                _ => None,
                            },
                        );
                        for m in earlier {
                            if !ifname_disjoint(m, name) {
                                if m.wildcard && name.name.starts_with(&m.name) {
                                    n.empty = true;
                                } else {
                                    return Err(format!(
                                        "verdict-map arms `{m}` and `{name}` overlap; \
                                         split the map"
                                    ));
                                }
                            }
                        }
                    }
                    _ => return Err("verdict-map arm of another type than its key".into()),
                }
                self.emit(table, r.id, &n, &[&a.verdict], names, first, segs, helpers)?;
            }
            return Ok(());
        }
        self.emit(table, r.id, &norm, &stmts, names, first, segs, helpers)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        table: Table,
        id: RuleId,
        n: &Norm,
        stmts: &[&Stmt],
        names: &HashMap<ChainId, String>,
        first: &mut ChainOut,
        segs: &mut Vec<ChainOut>,
        helpers: &mut Vec<ChainOut>,
    ) -> Result<(), String> {
        if n.empty {
            return Ok(()); // no packet matches it: nothing to write
        }
        let out = match segs.last_mut() {
            Some(s) => s,
            None => first,
        };
        match self.target {
            Target::Iptables => {
                if let Some(rest) = self.emit_iptables(table, id, n, stmts, names, out, helpers)? {
                    segs.push(ChainOut::helper(rest));
                }
                Ok(())
            }
            Target::Nft => self.emit_nft(id, n, stmts, names, out),
        }
    }
}

/// Whether some rule makes the kernel track connections in the namespace (a `ct state`
/// match or a NAT statement): Linux turns conntrack on only for such users, and without it
/// the nat chains never run. fw always tracks.
fn tracks(p: &Program) -> bool {
    p.chains.iter().flat_map(|c| &c.rules).any(|r| {
        r.preds.iter().any(|p| matches!(p, Pred::CtState { .. })) || r.stmts.iter().any(|s| {
            s.is_nat()
                || matches!(s, Stmt::Vmap { arms, .. } if arms.iter().any(|a| a.verdict.is_nat()))
        })
    })
}

/// The comment on the rule that keeps conntrack on.
const TRACK_NOTE: &str = "fwc: keeps connection tracking on, which the nat table needs";

fn call_targets(s: &Stmt, out: &mut Vec<ChainId>) {
    match s {
        Stmt::Jump(t) | Stmt::Goto(t) => out.push(*t),
        Stmt::Vmap { arms, .. } => {
            for a in arms {
                call_targets(&a.verdict, out);
            }
        }
        _ => {}
    }
}

/// The cross product of alternatives: every way of picking one fragment from each list.
fn product(alts: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut lines: Vec<Vec<String>> = vec![vec![]];
    for a in alts {
        let mut next = Vec::with_capacity(lines.len() * a.len());
        for l in &lines {
            for f in a {
                let mut l2 = l.clone();
                if !f.is_empty() {
                    l2.push(f.clone());
                }
                next.push(l2);
            }
        }
        lines = next;
    }
    lines
}

/// Lines one rule may become before the exporter gives up on it.
const MAX_LINES: usize = 4096;

fn proto_name(p: u32) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        o => o.to_string(),
    }
}

fn values(v: &Ivs) -> Vec<u32> {
    v.iter().flat_map(|&(a, b)| a..=b).collect()
}

/// A double-quoted string as iptables-restore and nft read it.
pub(crate) fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Interface exclusions an iptables rule cannot say on its own line (one `-i` per rule):
/// tested first, by lines that leave for the excluded names.
struct Gate {
    /// `-i` or `-o`
    opt: &'static str,
    excluded: Vec<IfName>,
    /// the wanted names on that side, and where their alternatives are in the rule's
    /// interface alternatives
    wanted: Option<(usize, Vec<IfName>)>,
}

fn iface_ipt(n: &IfName) -> String {
    if n.wildcard {
        format!("{}+", n.name)
    } else {
        n.name.clone()
    }
}

fn ct_names(mask: u8) -> String {
    ct::names(mask)
        .iter()
        .map(|n| n.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(",")
}

fn flag_names(mask: u8) -> String {
    if mask == 0 {
        return "NONE".into();
    }
    tcpflags::names(mask)
        .iter()
        .map(|n| n.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(",")
}

fn rate_unit(per_secs: u64) -> Option<&'static str> {
    Some(match per_secs {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        86400 => "day",
        _ => return None,
    })
}

fn reject_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "net-unreachable",
        1 => "host-unreachable",
        2 => "proto-unreachable",
        3 => "port-unreachable",
        9 => "net-prohibited",
        10 => "host-prohibited",
        13 => "admin-prohibited",
        _ => return None,
    })
}

// ------------------------------------------------------------------------------------------
// iptables

/// multiport takes 15 slots; a range takes two.
fn multiport_chunks(v: &Ivs) -> Vec<Ivs> {
    let mut out: Vec<Ivs> = Vec::new();
    let mut cur: Ivs = Vec::new();
    let mut used = 0;
    for &(a, b) in v {
        let cost = if a == b { 1 } else { 2 };
        if used + cost > 15 {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        cur.push((a, b));
        used += cost;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `a,b:c,...`: multiport's and u32's list of values and ranges.
fn port_list(v: &Ivs) -> String {
    v.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Exporter<'_> {
    /// The fragments one field may take on a line (alternatives), iptables spelling.
    fn ipt_field(f: Field, con: &FieldCon, proto: u32) -> Vec<String> {
        let (opt, multi) = match f {
            Field::Sport => ("--sport", "--sports"),
            Field::Dport => ("--dport", "--dports"),
            _ => ("", ""),
        };
        match (f, con) {
            (Field::Saddr | Field::Daddr, FieldCon::NotOne((a, b))) => {
                let (s, r) = if f == Field::Saddr {
                    ("-s", "--src-range")
                } else {
                    ("-d", "--dst-range")
                };
                vec![match as_prefix(*a, *b) {
                    Some((x, l)) => format!("! {s} {}/{l}", ip(x)),
                    None => format!("-m iprange ! {r} {}-{}", ip(*a), ip(*b)),
                }]
            }
            (Field::Saddr | Field::Daddr, FieldCon::In(v)) => {
                let (s, r) = if f == Field::Saddr {
                    ("-s", "--src-range")
                } else {
                    ("-d", "--dst-range")
                };
                if v == &vec![(0, u32::MAX)] {
                    return vec![String::new()];
                }
                v.iter()
                    .map(|&(a, b)| match as_prefix(a, b) {
                        Some((x, l)) => format!("{s} {}/{l}", ip(x)),
                        None => format!("-m iprange {r} {}-{}", ip(a), ip(b)),
                    })
                    .collect()
            }
            (Field::Sport | Field::Dport, FieldCon::NotOne((a, b))) => {
                let pn = proto_name(proto);
                if a == b {
                    vec![format!("-m {pn} ! {opt} {a}")]
                } else {
                    vec![format!("-m {pn} ! {opt} {a}:{b}")]
                }
            }
            (Field::Sport | Field::Dport, FieldCon::In(v)) => {
                let pn = proto_name(proto);
                if v == &vec![(0, 65535)] {
                    return vec![String::new()];
                }
                if v.len() == 1 {
                    let (a, b) = v[0];
                    return vec![if a == b {
                        format!("-m {pn} {opt} {a}")
                    } else {
                        format!("-m {pn} {opt} {a}:{b}")
                    }];
                }
                multiport_chunks(v)
                    .iter()
                    .map(|c| format!("-m multiport {multi} {}", port_list(c)))
                    .collect()
            }
            (Field::IcmpType, con) => {
                let v = con.positive(255);
                if v == vec![(0, 255)] {
                    return vec![String::new()];
                }
                // the kernel's icmp match takes type 255 for "any type": that type, and
                // sets of types, go through u32 on the ICMP header's first byte (in a
                // packet that is not a later fragment, as fw's icmp type)
                match con {
                    FieldCon::NotOne((a, b)) if a == b && *a != 255 => {
                        vec![format!("-m icmp ! --icmp-type {a}")]
                    }
                    FieldCon::In(v) if v.len() == 1 && v[0].0 == v[0].1 && v[0].0 != 255 => {
                        vec![format!("-m icmp --icmp-type {}", v[0].0)]
                    }
                    _ => vec![format!(
                        "-m u32 --u32 \"4&0x1FFF=0&&0>>22&0x3C@0>>24={}\"",
                        port_list(&v)
                    )],
                }
            }
            (Field::Mark, FieldCon::NotOne((a, b))) if as_prefix(*a, *b).is_some() => {
                let (x, l) = as_prefix(*a, *b).unwrap_or((0, 0));
                vec![format!("-m mark ! --mark {x:#x}/{:#x}", prefix_mask(l))]
            }
            (Field::Mark, con) => {
                let v = con.positive(u32::MAX);
                if v == vec![(0, u32::MAX)] {
                    return vec![String::new()];
                }
                v.iter()
                    .flat_map(|&(a, b)| prefixes(a, b))
                    .map(|(x, l)| {
                        if l == 32 {
                            format!("-m mark --mark {x:#x}")
                        } else {
                            format!("-m mark --mark {x:#x}/{:#x}", prefix_mask(l))
                        }
                    })
                    .collect()
            }
            (Field::Proto, _) => unreachable!("protocols are picked per line"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_iptables(
        &mut self,
        table: Table,
        id: RuleId,
        n: &Norm,
        stmts: &[&Stmt],
        names: &HashMap<ChainId, String>,
        out: &mut ChainOut,
        helpers: &mut Vec<ChainOut>,
    ) -> Result<Option<String>, String> {
        // the protocol first: transport matches hang off it
        let transport = [Field::Sport, Field::Dport, Field::IcmpType]
            .iter()
            .any(|f| n.fields.contains_key(f))
            || !n.flags.is_empty();
        let proto_alts: Vec<(String, u32)> = match n.fields.get(&Field::Proto) {
            None => vec![(String::new(), 0)],
            Some(FieldCon::NotOne((a, b))) if a == b && *a != 0 && !transport => {
                vec![(format!("! -p {}", proto_name(*a)), 0)]
            }
            Some(c) => {
                let v = c.positive(255);
                if v == vec![(0, 255)] && !transport {
                    vec![(String::new(), 0)]
                } else if !transport && (v.len() > 1 || v[0].0 != v[0].1 || v[0].0 == 0) {
                    // several protocols in one match (and protocol 0, which `-p 0` would
                    // take for "any"): u32 on the header's protocol byte
                    vec![(format!("-m u32 --u32 \"6&0xFF={}\"", port_list(&v)), 0)]
                } else {
                    values(&v)
                        .into_iter()
                        .map(|p| (format!("-p {}", proto_name(p)), p))
                        .collect()
                }
            }
        };
        // interfaces
        let mut iface_alts: Vec<Vec<String>> = Vec::new();
        let mut gate: Option<Gate> = None;
        for (i, opt) in [(0usize, "-i"), (1, "-o")] {
            if let Some(c) = &n.ifaces[i] {
                for nm in c.pos.iter().flatten().chain(&c.neg) {
                    if nm.name.len() + usize::from(nm.wildcard) > 15 {
                        return Err(format!(
                            "interface name `{nm}` is longer than the kernel's 15 characters"
                        ));
                    }
                }
                if let Some(pos) = &c.pos {
                    iface_alts.push(
                        pos.iter()
                            .map(|nm| format!("{opt} {}", iface_ipt(nm)))
                            .collect(),
                    );
                }
                // one `-i` per rule: a negated name beside wanted ones, or several negated
                // names, are tested in a helper chain that returns for them
                if c.neg.len() > 1 || !c.neg.is_empty() && c.pos.is_some() {
                    if gate.is_some() {
                        return Err("interface exclusions on both sides have no iptables \
                                    translation (use --target nft)"
                            .into());
                    }
                    gate = Some(Gate {
                        opt,
                        excluded: c.neg.clone(),
                        wanted: c.pos.clone().map(|p| (iface_alts.len() - 1, p)),
                    });
                } else if let [one] = c.neg.as_slice() {
                    iface_alts.push(vec![format!("! {opt} {}", iface_ipt(one))]);
                }
            }
        }
        // the rule's lines for given interface alternatives (every other match multiplied in)
        let lines_for = |iface_alts: &[Vec<String>]| -> Result<Vec<String>, String> {
            let mut lines: Vec<String> = Vec::new();
            for (pfrag, proto) in &proto_alts {
                let mut alts: Vec<Vec<String>> = iface_alts.to_vec();
                for f in [Field::Saddr, Field::Daddr] {
                    if let Some(c) = n.fields.get(&f) {
                        alts.push(Self::ipt_field(f, c, *proto));
                    }
                }
                alts.push(vec![pfrag.clone()]);
                for f in [Field::Sport, Field::Dport, Field::IcmpType, Field::Mark] {
                    if let Some(c) = n.fields.get(&f) {
                        alts.push(Self::ipt_field(f, c, *proto));
                    }
                }
                for &(neg, mask, value) in &n.flags {
                    alts.push(vec![format!(
                        "-m tcp {}--tcp-flags {} {}",
                        if neg { "! " } else { "" },
                        flag_names(mask),
                        flag_names(value)
                    )]);
                }
                for &(neg, mask) in &n.ct {
                    alts.push(vec![format!(
                        "-m conntrack {}--ctstate {}",
                        if neg { "! " } else { "" },
                        ct_names(mask)
                    )]);
                }
                let count: usize = alts.iter().map(Vec::len).product();
                if count.saturating_mul(proto_alts.len()) > MAX_LINES {
                    return Err(format!(
                        "this rule would be {count} iptables rules (over {MAX_LINES}); \
                         use --target nft, which has sets"
                    ));
                }
                for l in product(&alts) {
                    lines.push(l.join(" "));
                }
            }
            Ok(lines)
        };
        let lines = lines_for(&iface_alts)?;
        // stateful matches last, so that they are consulted only when the rest matched
        let several = lines.len() > 1;
        let mut tail = String::new();
        for p in &n.stats {
            let _ = write!(tail, " -m statistic --mode random --probability {p:.11}");
        }
        for &(neg, rate, per, burst) in &n.limits {
            let unit = rate_unit(per).ok_or("a limit per this period has no iptables unit")?;
            if neg || several {
                // one bucket shared by every line of the rule (hashlimit's named table)
                let _ = write!(
                    tail,
                    " -m hashlimit --hashlimit-{} {rate}/{unit} --hashlimit-burst {burst} \
                     --hashlimit-name fwc{}",
                    if neg { "above" } else { "upto" },
                    id.0
                );
            } else {
                let _ = write!(
                    tail,
                    " -m limit --limit {rate}/{unit} --limit-burst {burst}"
                );
            }
        }
        // statements: one target on the line, or a helper chain for several
        let targets: Vec<String> = stmts
            .iter()
            .map(|s| self.ipt_target(s, table, names, stmts))
            .collect::<Result<_, _>>()?;
        let needs_tcp = stmts
            .iter()
            .any(|s| matches!(s, Stmt::Reject(RejectKind::TcpReset)));
        if needs_tcp && proto_alts.iter().any(|p| p.1 != 6) {
            return Err("`reject with tcp-reset` needs the rule to match TCP only".into());
        }
        let ends_elsewhere = matches!(stmts.last(), Some(Stmt::Return | Stmt::Goto(_)));
        let jump_kind = if ends_elsewhere { "-g" } else { "-j" };
        let mut entry_exact = true;
        let entry = if targets.len() == 1 && (gate.is_none() || ends_elsewhere) {
            targets[0].clone()
        } else {
            let name = self.fresh(id);
            let mut h = ChainOut::helper(name.clone());
            if let (Some(Gate { opt, excluded, .. }), false) = (&gate, ends_elsewhere) {
                entry_exact = false;
                for nm in excluded {
                    h.lines
                        .push((format!("{opt} {} -j RETURN", iface_ipt(nm)), id, false));
                }
            }
            for (t, s) in targets.iter().zip(stmts) {
                // targets with ports (and tcp-reset) want the protocol on their own rule:
                // one line per protocol the rule matches (a packet meets one of them)
                if needs_proto(s) {
                    for (_, p) in &proto_alts {
                        if !matches!(p, 6 | 17) {
                            return Err("a NAT statement with ports needs the rule to match \
                                        TCP or UDP"
                                .into());
                        }
                        h.lines
                            .push((format!("-p {} {t}", proto_name(*p)), id, true));
                    }
                } else {
                    h.lines.push((t.trim_start().to_string(), id, true));
                }
            }
            helpers.push(h);
            format!("{jump_kind} {name}")
        };
        let join = |l: &str, with_tail: bool, target: &str| -> String {
            let mut s = l.to_string();
            if with_tail {
                s.push_str(&tail);
            }
            if !target.is_empty() {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(target);
            }
            s.trim().to_string()
        };
        // iptables refuses `-i` in OUTPUT and POSTROUTING and `-o` in PREROUTING and INPUT
        // (the kernel knows both there, and fw matches them): such a rule moves into a chain
        // of its own
        let refused = match out.hook {
            Some(Hook::Output | Hook::Postrouting) => n.ifaces[0].is_some(),
            Some(Hook::Prerouting | Hook::Input) => n.ifaces[1].is_some(),
            _ => false,
        };
        if ends_elsewhere && (gate.is_some() || refused) {
            // a rule that returns or goes elsewhere cannot sit in a helper chain entered by
            // a jump (its RETURN would come back here): the chain is split instead. Packets
            // the rule does not match go on, by goto, to a chain holding the rest of this
            // one; as a goto leaves this chain's frame, the rest returns where this chain
            // would have (and a base chain's policy applies when it ends).
            let rest = self.fresh(id);
            let mut k = if refused {
                let name = self.fresh(id);
                out.lines.push((format!("-g {name}"), id, false));
                Some(ChainOut::helper(name))
            } else {
                None
            };
            let t = match k.as_mut() {
                Some(k) => k,
                None => &mut *out,
            };
            // gates first: a packet with an excluded interface goes on to the rest (the
            // rule's lines are disjoint, so their order among themselves does not matter)
            if let Some(Gate {
                opt,
                excluded,
                wanted,
            }) = &gate
            {
                for nm in excluded {
                    let mut alts = iface_alts.clone();
                    match wanted {
                        // iptables takes one `-i`: the wanted names narrowed to where they
                        // meet the excluded one
                        Some((k, pos)) => {
                            alts[*k] = pos
                                .iter()
                                .filter_map(|p| ifname_meet(p, nm))
                                .map(|m| format!("{opt} {}", iface_ipt(&m)))
                                .collect();
                        }
                        None => alts.push(vec![format!("{opt} {}", iface_ipt(nm))]),
                    }
                    for g in lines_for(&alts)? {
                        t.lines
                            .push((join(&g, false, &format!("-g {rest}")), id, false));
                    }
                }
            }
            for l in &lines {
                t.lines.push((join(l, true, &entry), id, true));
            }
            t.lines.push((format!("-g {rest}"), id, false));
            if let Some(k) = k {
                helpers.push(k);
            }
            return Ok(Some(rest));
        }
        let full: Vec<String> = lines.iter().map(|l| join(l, true, &entry)).collect();
        if refused {
            let name = self.fresh(id);
            let mut h = ChainOut::helper(name.clone());
            for l in full {
                h.lines.push((l, id, entry_exact));
            }
            helpers.push(h);
            out.lines.push((format!("-j {name}"), id, false));
        } else {
            for l in full {
                out.lines.push((l, id, entry_exact));
            }
        }
        Ok(None)
    }

    fn ipt_target(
        &self,
        s: &Stmt,
        table: Table,
        names: &HashMap<ChainId, String>,
        all: &[&Stmt],
    ) -> Result<String, String> {
        let chain = |c: &ChainId| names.get(c).cloned().unwrap_or_default();
        Ok(match s {
            Stmt::Accept => "-j ACCEPT".into(),
            Stmt::Drop => "-j DROP".into(),
            Stmt::Reject(RejectKind::TcpReset) => "-j REJECT --reject-with tcp-reset".into(),
            Stmt::Reject(RejectKind::IcmpUnreach(c)) => format!(
                "-j REJECT --reject-with icmp-{}",
                reject_name(*c).ok_or("this ICMP code has no REJECT name")?
            ),
            Stmt::Return => "-j RETURN".into(),
            Stmt::Jump(c) => format!("-j {}", chain(c)),
            Stmt::Goto(c) => format!("-g {}", chain(c)),
            Stmt::Queue { num, bypass } => format!(
                "-j NFQUEUE --queue-num {num}{}",
                if *bypass { " --queue-bypass" } else { "" }
            ),
            Stmt::Counter => String::new(),
            Stmt::Log { level, prefix } => {
                let mut t = format!("-j LOG --log-level {level}");
                if !prefix.is_empty() {
                    if prefix.len() > 29 {
                        return Err("a log prefix longer than LOG's 29 characters".into());
                    }
                    let _ = write!(t, " --log-prefix {}", quote(prefix));
                }
                t
            }
            Stmt::Audit => {
                let ty = match all.last() {
                    Some(Stmt::Drop) => "drop",
                    Some(Stmt::Reject(_)) => "reject",
                    _ => "accept",
                };
                format!("-j AUDIT --type {ty}")
            }
            Stmt::MarkSet(m) => format!("-j MARK --set-xmark {m:#x}/0xffffffff"),
            Stmt::TtlSet(t) => {
                if table != Table::Mangle {
                    return Err("iptables sets the TTL in the mangle table only".into());
                }
                format!("-j TTL --ttl-set {t}")
            }
            Stmt::Notrack => "-j CT --notrack".into(),
            Stmt::Snat(r) => {
                if r.addr.is_none() {
                    return Err("snat without an address has no iptables translation".into());
                }
                format!("-j SNAT --to-source {}{}", fmt_nat_range(r), nat_flags(r))
            }
            Stmt::Dnat(r) => format!(
                "-j DNAT --to-destination {}{}",
                fmt_nat_range(r),
                nat_flags(r)
            ),
            Stmt::Masquerade(r) | Stmt::Redirect(r) => {
                let t = if matches!(s, Stmt::Masquerade(_)) {
                    "MASQUERADE"
                } else {
                    "REDIRECT"
                };
                let mut o = format!("-j {t}");
                if let Some((a, b)) = r.ports {
                    if a == b {
                        let _ = write!(o, " --to-ports {a}");
                    } else {
                        let _ = write!(o, " --to-ports {a}-{b}");
                    }
                }
                if r.random {
                    o.push_str(" --random");
                }
                o
            }
            Stmt::Vmap { .. } => return Err("a verdict map inside a verdict map".into()),
        })
    }
}

/// Whether iptables wants `-p tcp|udp` on the rule of this target.
fn needs_proto(s: &Stmt) -> bool {
    match s {
        Stmt::Reject(RejectKind::TcpReset) => true,
        Stmt::Snat(r) | Stmt::Dnat(r) | Stmt::Masquerade(r) | Stmt::Redirect(r) => {
            r.ports.is_some()
        }
        _ => false,
    }
}

fn nat_flags(r: &NatRange) -> String {
    let mut s = String::new();
    if r.random {
        s.push_str(" --random");
    }
    if r.persistent {
        s.push_str(" --persistent");
    }
    s
}

// ------------------------------------------------------------------------------------------
// nft

fn nft_ivs(f: Field, v: &Ivs) -> String {
    let one = |&(a, b): &(u32, u32)| -> String {
        let show = |x: u32| match f {
            Field::Saddr | Field::Daddr => ip(x).to_string(),
            Field::Mark => format!("{x:#x}"),
            _ => x.to_string(),
        };
        if a == b {
            return show(a);
        }
        if f.is_addr() {
            if let Some((x, l)) = as_prefix(a, b) {
                return format!("{}/{l}", ip(x));
            }
        }
        format!("{}-{}", show(a), show(b))
    };
    if v.len() == 1 {
        one(&v[0])
    } else {
        format!("{{ {} }}", v.iter().map(one).collect::<Vec<_>>().join(", "))
    }
}

impl Exporter<'_> {
    fn emit_nft(
        &mut self,
        id: RuleId,
        n: &Norm,
        stmts: &[&Stmt],
        names: &HashMap<ChainId, String>,
        out: &mut ChainOut,
    ) -> Result<(), String> {
        let mut m: Vec<String> = Vec::new();
        let mut iface_alts: Vec<Vec<String>> = Vec::new();
        for (i, kw) in [(0usize, "iifname"), (1, "oifname")] {
            if let Some(c) = &n.ifaces[i] {
                let q = |nm: &IfName| {
                    if nm.wildcard {
                        quote(&format!("{}*", nm.name))
                    } else {
                        quote(&nm.name)
                    }
                };
                for nm in &c.neg {
                    m.push(format!("{kw} != {}", q(nm)));
                }
                match &c.pos {
                    None => {}
                    Some(pos) if pos.len() == 1 || pos.iter().all(|x| !x.wildcard) => {
                        let v: Vec<String> = pos.iter().map(q).collect();
                        m.push(if v.len() == 1 {
                            format!("{kw} {}", v[0])
                        } else {
                            format!("{kw} {{ {} }}", v.join(", "))
                        });
                    }
                    Some(pos) => {
                        iface_alts.push(pos.iter().map(|nm| format!("{kw} {}", q(nm))).collect())
                    }
                }
            }
        }
        if !iface_alts.is_empty() && !n.limits.is_empty() {
            return Err(
                "`limit` with a set of interface patterns has no nft translation \
                        (one bucket per rule)"
                    .into(),
            );
        }
        let fld = |f: Field, kw: &str, m: &mut Vec<String>| {
            if let Some(c) = n.fields.get(&f) {
                match c {
                    FieldCon::NotOne(e) => m.push(format!("{kw} != {}", nft_ivs(f, &vec![*e]))),
                    FieldCon::In(v) if v == &vec![(0, f.max_value())] => {}
                    FieldCon::In(v) => m.push(format!("{kw} {}", nft_ivs(f, v))),
                }
            }
        };
        fld(Field::Saddr, "ip saddr", &mut m);
        fld(Field::Daddr, "ip daddr", &mut m);
        let protos = n.protos();
        match n.fields.get(&Field::Proto) {
            Some(FieldCon::NotOne(e)) => m.push(format!("ip protocol != {}", e.0)),
            Some(FieldCon::In(v)) if v != &vec![(0, 255)] => {
                m.push(format!("ip protocol {}", nft_ivs(Field::Proto, v)))
            }
            _ => {}
        }
        let th = match protos.as_deref() {
            Some([(6, 6)]) => "tcp",
            Some([(17, 17)]) => "udp",
            _ => "th",
        };
        fld(Field::Sport, &format!("{th} sport"), &mut m);
        fld(Field::Dport, &format!("{th} dport"), &mut m);
        fld(Field::IcmpType, "icmp type", &mut m);
        fld(Field::Mark, "meta mark", &mut m);
        for &(neg, mask, value) in &n.flags {
            m.push(format!(
                "tcp flags & {mask:#x} {} {value:#x}",
                if neg { "!=" } else { "==" }
            ));
        }
        for &(neg, mask) in &n.ct {
            m.push(format!(
                "ct state {}{{ {} }}",
                if neg { "!= " } else { "" },
                ct::names(mask).join(", ")
            ));
        }
        for p in &n.stats {
            // a sure match needs no test (and nft refuses a bound beyond the modulus)
            let k = (p * 1_000_000.0).round() as u64;
            if k < 1_000_000 {
                m.push(format!("numgen random mod 1000000 < {k}"));
            }
        }
        for &(neg, rate, per, burst) in &n.limits {
            let unit = rate_unit(per).ok_or("a limit per this period has no nft unit")?;
            m.push(format!(
                "limit rate {}{rate}/{unit} burst {burst} packets",
                if neg { "over " } else { "" }
            ));
        }
        let mut st: Vec<String> = Vec::new();
        for s in stmts {
            st.push(self.nft_stmt(s, names, stmts)?);
        }
        st.retain(|s| !s.is_empty());
        if self.counters {
            st.retain(|s| s != "counter");
            st.insert(0, "counter".into());
        }
        let mut body = m.join(" ");
        for s in st {
            if !body.is_empty() {
                body.push(' ');
            }
            body.push_str(&s);
        }
        if iface_alts.is_empty() {
            out.lines.push((body, id, true));
        } else {
            for l in product(&iface_alts) {
                out.lines
                    .push((format!("{} {body}", l.join(" ")), id, true));
            }
        }
        Ok(())
    }

    fn nft_stmt(
        &self,
        s: &Stmt,
        names: &HashMap<ChainId, String>,
        all: &[&Stmt],
    ) -> Result<String, String> {
        let chain = |c: &ChainId| names.get(c).cloned().unwrap_or_default();
        let flags = |r: &NatRange| {
            let mut f: Vec<&str> = Vec::new();
            if r.random {
                f.push("random");
            }
            if r.persistent {
                f.push("persistent");
            }
            if f.is_empty() {
                String::new()
            } else {
                format!(" {}", f.join(","))
            }
        };
        let _ = all;
        Ok(match s {
            Stmt::Accept => "accept".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Reject(RejectKind::TcpReset) => "reject with tcp reset".into(),
            Stmt::Reject(RejectKind::IcmpUnreach(c)) => format!(
                "reject with icmp type {}",
                match *c {
                    2 => "prot-unreachable",
                    c => reject_name(c).ok_or("this ICMP code has no reject name")?,
                }
            ),
            Stmt::Return => "return".into(),
            Stmt::Jump(c) => format!("jump {}", chain(c)),
            Stmt::Goto(c) => format!("goto {}", chain(c)),
            Stmt::Queue { num, bypass } => {
                format!("queue num {num}{}", if *bypass { " bypass" } else { "" })
            }
            Stmt::Counter => "counter".into(),
            Stmt::Log { level, prefix } => {
                let lv = LOG_LEVELS
                    .get(usize::from(*level))
                    .copied()
                    .unwrap_or("warn");
                let mut t = String::from("log");
                if !prefix.is_empty() {
                    let _ = write!(t, " prefix {}", quote(prefix));
                }
                let _ = write!(t, " level {lv}");
                t
            }
            Stmt::Audit => "log level audit".into(),
            Stmt::MarkSet(m) => format!("meta mark set {m:#x}"),
            Stmt::TtlSet(t) => format!("ip ttl set {t}"),
            Stmt::Notrack => "notrack".into(),
            Stmt::Snat(r) => {
                if r.addr.is_none() {
                    return Err("snat without an address has no nft translation".into());
                }
                format!("snat to {}{}", fmt_nat_range(r), flags(r))
            }
            Stmt::Dnat(r) => {
                if r.addr.is_none() {
                    return Err("dnat without an address has no nft translation".into());
                }
                format!("dnat to {}{}", fmt_nat_range(r), flags(r))
            }
            Stmt::Masquerade(r) | Stmt::Redirect(r) => {
                let mut o = String::from(if matches!(s, Stmt::Masquerade(_)) {
                    "masquerade"
                } else {
                    "redirect"
                });
                if let Some((a, b)) = r.ports {
                    if a == b {
                        let _ = write!(o, " to :{a}");
                    } else {
                        let _ = write!(o, " to :{a}-{b}");
                    }
                }
                o.push_str(&flags(r));
                o
            }
            Stmt::Vmap { .. } => return Err("a verdict map inside a verdict map".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_blocks_cover_ranges_exactly() {
        assert_eq!(prefixes(0, u32::MAX), vec![(0, 0)]);
        assert_eq!(prefixes(10, 10), vec![(10, 32)]);
        assert_eq!(prefixes(8, 15), vec![(8, 29)]);
        assert_eq!(prefixes(7, 16), vec![(7, 32), (8, 29), (16, 32)]);
        for (lo, hi) in [(3u32, 1000u32), (0, 77), (u32::MAX - 5, u32::MAX)] {
            let ps = prefixes(lo, hi);
            let mut next = u64::from(lo);
            for (a, l) in ps {
                assert_eq!(u64::from(a), next);
                next += 1u64 << (32 - u32::from(l));
            }
            assert_eq!(next, u64::from(hi) + 1);
        }
    }

    #[test]
    fn complements_and_intersections() {
        assert_eq!(complement(&vec![(0, 9), (20, 255)], 255), vec![(10, 19)]);
        assert_eq!(complement(&vec![], 65535), vec![(0, 65535)]);
        assert_eq!(complement(&vec![(0, u32::MAX)], u32::MAX), vec![]);
        assert_eq!(
            intersect(&vec![(0, 10), (20, 30)], &vec![(5, 25)]),
            vec![(5, 10), (20, 25)]
        );
        assert_eq!(
            union(vec![(5, 9), (0, 4), (20, 21)]),
            vec![(0, 9), (20, 21)]
        );
    }

    #[test]
    fn covered_interface_names_go() {
        let n = |s: &str| IfName::parse(s);
        assert_eq!(
            disjoint_names(&[n("eth0"), n("eth*"), n("lo"), n("eth*")]),
            vec![n("eth*"), n("lo")]
        );
        assert!(ifname_disjoint(&n("eth0"), &n("wlan*")));
        assert!(!ifname_disjoint(&n("eth0"), &n("eth*")));
        assert!(!ifname_disjoint(&n("e*"), &n("eth*")));
        assert!(ifname_disjoint(&n("a*"), &n("b*")));
    }

    #[test]
    fn a_gate_narrows_the_wanted_interface_instead_of_naming_two() {
        // found by the long kernel run: `iif f* iif != fo ... return` split the chain with a
        // gate line `-i f+ ... -i fo -g REST`, which iptables refuses (one -i per rule)
        let src = "table filter { chain input {\n  iif != fo udp dport 22 iif f* return;\n  \
                   tcp sport 22 return;\n} }\n";
        let c = crate::compile_source("t.fw", src, &crate::loader::MemFiles::default());
        assert!(!c.has_errors(), "{:?}", c.diags);
        let p = c.checked.unwrap().program;
        let x = export(&p, Target::Iptables).unwrap().text;
        for l in x.lines().filter(|l| l.starts_with("-A")) {
            assert!(l.matches(" -i ").count() <= 1, "two -i in `{l}`:\n{x}");
        }
        assert!(
            x.lines()
                .any(|l| l.contains("-i fo -p udp -m udp --dport 22 -g")),
            "{x}"
        );
        // several excluded names and no wanted one: a gate line per name
        let src = "table filter { chain input {\n  iif != { fo, fi } udp dport 22 return;\n  \
                   tcp sport 22 return;\n} }\n";
        let c = crate::compile_source("t.fw", src, &crate::loader::MemFiles::default());
        let x = export(&c.checked.unwrap().program, Target::Iptables)
            .unwrap()
            .text;
        for nm in ["fo", "fi"] {
            assert!(
                x.lines()
                    .any(|l| l.contains(&format!("-i {nm} -p udp -m udp --dport 22 -g"))),
                "{x}"
            );
        }
    }
}
