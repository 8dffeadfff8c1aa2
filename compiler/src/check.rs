//! Name resolution, type checking and lowering to the IR.
//!
//! Three passes over the loaded files:
//! 1. **collect**: every item into its namespace (defines, subchains, base chains per table and
//!    hook, services, interfaces, tests); duplicates and misplaced chains are reported here.
//! 2. **check**: each chain body once, with parameters typed by their declarations; calls
//!    (arity, argument types, cycles) and statement legality per table and hook, followed
//!    through subchain calls.
//! 3. **lower** (only when 1 and 2 found no error): base chains, then every subchain instance
//!    reached, one instance per distinct argument list, into [`crate::ir::Program`].

use crate::diag::{Diagnostic, Severity};
use crate::interp::{Packet, PathKind as IPath};
use crate::ir::{self, *};
use crate::loader::Loaded;
use crate::source::SourceMap;
use crate::types::*;
use fwc_grammar::ast::{
    self, ChainDecl, DefineItem, Expr, ExprKind, Item, MatchKind, PortDir, Selector, Span,
    StmtKind, L4,
};
use std::collections::{HashMap, HashSet};

/// A `test` line, lowered: the packet, its path and what should become of it.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub block: String,
    pub span: Span,
    pub path: IPath,
    pub packet: Packet,
    pub expect: ast::VerdictKw,
    /// expected (saddr, sport, daddr, dport) after the path
    pub expect_as: Option<(u32, Option<u16>, u32, Option<u16>)>,
}

#[derive(Debug, Clone)]
pub struct AssertInfo {
    pub name: String,
    pub span: Span,
    /// its lines, lowered (empty when the program has errors)
    pub lines: Vec<AssertCase>,
}

/// One `never|always PATH VERDICT MATCHES;` line of an `assert`, lowered.
#[derive(Debug, Clone)]
pub struct AssertCase {
    pub span: Span,
    /// `always` (every packet in the region meets VERDICT) or `never` (none does)
    pub always: bool,
    pub path: IPath,
    pub verdict: ast::VerdictKw,
    /// the region of packets it speaks of: the conjunction of these, as a rule's matches
    pub preds: Vec<Pred>,
}

/// The result of a successful check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub program: Program,
    pub tests: Vec<TestCase>,
    pub asserts: Vec<AssertInfo>,
}

/// What a value position wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Addr,
    Port,
    Iface,
    Proto,
    IcmpType,
    Mark,
    Probability,
    Rate,
    Str,
    /// a single integer of at most `max`
    Int(u64),
    /// a single address or address range (NAT targets)
    NatAddr,
}

impl Class {
    fn describe(self) -> &'static str {
        match self {
            Class::Addr => "an address, prefix, range or set of addresses",
            Class::Port => "a port, port range or set of ports",
            Class::Iface => "an interface name or set of names",
            Class::Proto => "a protocol name or number",
            Class::IcmpType => "an ICMP type name or number",
            Class::Mark => "a mark value, range or set",
            Class::Probability => "a probability between 0 and 1",
            Class::Rate => "a rate such as `10/second`",
            Class::Str => "a string",
            Class::Int(_) => "an integer",
            Class::NatAddr => "an address or address range",
        }
    }

    fn accepts(self, t: &Ty) -> bool {
        use Ty::*;
        let scalar = |t: &Ty| match self {
            Class::Addr => matches!(t, Ip | Prefix | IpRange),
            Class::Port => matches!(t, Int | IntRange | Port | PortRange),
            Class::Iface => matches!(t, Name | Str | Iface),
            Class::Proto => matches!(t, Int | Name | Proto | NameOrInt),
            Class::IcmpType => matches!(t, Int | Name | NameOrInt),
            Class::Mark => matches!(t, Int | IntRange | Mark),
            _ => false,
        };
        match self {
            Class::Probability => matches!(t, Float | Int),
            Class::Rate => matches!(t, Rate),
            Class::Str => matches!(t, Str),
            Class::Int(_) => matches!(t, Int | Mark | Port | Proto),
            Class::NatAddr => matches!(t, Ip | IpRange),
            _ => match t {
                Set(e) => scalar(e),
                t => scalar(t),
            },
        }
    }
}

fn selector_class(sel: Selector) -> Class {
    match sel {
        Selector::Iif | Selector::Oif => Class::Iface,
        Selector::IpSaddr | Selector::IpDaddr => Class::Addr,
        Selector::IpProtocol => Class::Proto,
        Selector::Port(..) => Class::Port,
        Selector::IcmpType => Class::IcmpType,
        Selector::Mark => Class::Mark,
    }
}

fn selector_field(sel: Selector) -> Option<Field> {
    Some(match sel {
        Selector::IpSaddr => Field::Saddr,
        Selector::IpDaddr => Field::Daddr,
        Selector::IpProtocol => Field::Proto,
        Selector::Port(_, PortDir::Sport) => Field::Sport,
        Selector::Port(_, PortDir::Dport) => Field::Dport,
        Selector::IcmpType => Field::IcmpType,
        Selector::Mark => Field::Mark,
        Selector::Iif | Selector::Oif => return None,
    })
}

/// A typed expression, with its value when it is known at compile time.
#[derive(Debug, Clone)]
struct TV {
    ty: Ty,
    val: Option<Value>,
}

/// Where a subchain is being checked from: one call path from a base chain.
#[derive(Debug, Clone)]
struct CallCtx {
    table: Table,
    hook: Hook,
    /// the calls from the base chain down to here, outermost first
    calls: Vec<Span>,
}

struct BaseDecl<'a> {
    table: Table,
    hook: Hook,
    decl: &'a ChainDecl,
}

struct Checker<'a> {
    sm: &'a SourceMap,
    diags: Vec<Diagnostic>,
    defines: HashMap<&'a str, &'a DefineItem>,
    define_memo: HashMap<String, Option<TV>>,
    define_stack: Vec<&'a str>,
    subchains: HashMap<&'a str, &'a ChainDecl>,
    /// declared parameter types of each subchain (None where a type was invalid)
    sub_params: HashMap<&'a str, Vec<(String, Option<Ty>)>>,
    bases: Vec<BaseDecl<'a>>,
    /// defines named by a `$variable` somewhere (FW0105)
    used_defines: HashSet<String>,
    services: Vec<&'a ast::ServiceDecl>,
    interfaces: Vec<&'a ast::InterfaceDecl>,
    tests: Vec<&'a ast::TestBlock>,
    asserts: Vec<&'a ast::AssertBlock>,
}

type Scope = [(String, Option<Ty>)];

/// FW0038 for `name`, which is not one of `names` (what the note lists as "the {list} are
/// ..."), with the nearest name as help.
fn unknown_name(
    what: &str,
    name: &str,
    span: Span,
    label: &str,
    list: &str,
    names: &[&str],
) -> Diagnostic {
    let mut d = Diagnostic::error("FW0038", format!("unknown {what} `{name}`"))
        .primary(span, label)
        .note(format!("the {list} are {}", names.join(", ")));
    if let Some(x) = suggest(name, names.iter().copied()) {
        d = d.help(format!("did you mean `{x}`?"));
    }
    d
}

fn ip_u32(a: std::net::Ipv4Addr) -> u32 {
    u32::from(a)
}

impl<'a> Checker<'a> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    // -------------------------------------------------------------------- collect

    fn collect(&mut self, files: &'a [(ast::FileId, ast::File)]) {
        let mut first_def: HashMap<(&'static str, String), Span> = HashMap::new();
        let mut dup = |this: &mut Self, ns: &'static str, name: &str, span: Span| -> bool {
            match first_def.get(&(ns, name.to_string())) {
                Some(prev) => {
                    this.err(
                        Diagnostic::error(
                            "FW0022",
                            format!("the {ns} `{name}` is defined more than once"),
                        )
                        .primary(span, format!("`{name}` redefined here"))
                        .secondary(*prev, "first defined here"),
                    );
                    true
                }
                None => {
                    first_def.insert((ns, name.to_string()), span);
                    false
                }
            }
        };
        for (_, file) in files {
            for item in &file.items {
                match item {
                    Item::Include(_) => {}
                    Item::Define(d) => {
                        if !dup(self, "define", &d.name.name, d.name.span) {
                            self.defines.insert(&d.name.name, d);
                        }
                    }
                    Item::Chain(c) => {
                        if let Some(hook) = Hook::from_name(&c.name.name) {
                            if c.params.is_none() {
                                self.err(
                                    Diagnostic::error("FW0026", format!("base chain `{}` outside a table", c.name.name))
                                        .primary(c.name.span, format!("`{}` is a hook name: base chains live inside `table` blocks", hook.name()))
                                        .help(format!("write it as `table filter {{ chain {} {{ ... }} }}`, or give the subchain another name", hook.name())),
                                );
                                continue;
                            }
                        }
                        if let Some((_, ps)) = c.policy {
                            self.err(
                                Diagnostic::error(
                                    "FW0026",
                                    format!("subchain `{}` cannot have a policy", c.name.name),
                                )
                                .primary(ps, "only base chains (inside a table) have a policy")
                                .note("falling off the end of a subchain returns to its caller"),
                            );
                        }
                        if !dup(self, "chain", &c.name.name, c.name.span) {
                            self.subchains.insert(&c.name.name, c);
                        }
                    }
                    Item::Table(t) => {
                        let Some(table) = Table::from_name(&t.name.name) else {
                            let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                            let mut d = Diagnostic::error(
                                "FW0023",
                                format!("unknown table `{}`", t.name.name),
                            )
                            .primary(t.name.span, "not a netfilter table")
                            .note(format!("the tables are {}", names.join(", ")));
                            if let Some(s) = suggest(&t.name.name, names.iter().copied()) {
                                d = d.help(format!("did you mean `{s}`?"));
                            }
                            self.err(d);
                            continue;
                        };
                        for c in &t.chains {
                            let Some(hook) = Hook::from_name(&c.name.name) else {
                                let hooks: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
                                let mut d = Diagnostic::error("FW0025", format!("`{}` is not a hook", c.name.name))
                                    .primary(c.name.span, "a chain inside a table is a base chain and is named after its hook")
                                    .note(format!("the hooks are {}", hooks.join(", ")));
                                if let Some(s) = suggest(&c.name.name, hooks.iter().copied()) {
                                    d = d.help(format!("did you mean `{s}`?"));
                                } else {
                                    d = d.help("declare subchains at the top level, outside the table, and `jump` to them");
                                }
                                self.err(d);
                                continue;
                            };
                            if !table.hooks().contains(&hook) {
                                let allowed: Vec<&str> =
                                    table.hooks().iter().map(|h| h.name()).collect();
                                self.err(
                                    Diagnostic::error(
                                        "FW0024",
                                        format!(
                                            "table `{}` has no `{}` hook",
                                            table.name(),
                                            hook.name()
                                        ),
                                    )
                                    .primary(
                                        c.name.span,
                                        format!("`{}` cannot be attached here", hook.name()),
                                    )
                                    .secondary(t.name.span, format!("in table `{}`", table.name()))
                                    .note(format!(
                                        "table `{}` is allowed on: {}",
                                        table.name(),
                                        allowed.join(", ")
                                    )),
                                );
                                continue;
                            }
                            if let Some(ps) = &c.params {
                                let sp = ps.first().map(|p| p.name.span).unwrap_or(c.head_span);
                                self.err(
                                    Diagnostic::error("FW0026", format!("base chain `{}` cannot take parameters", hook.name()))
                                        .primary(sp, "parameters belong to subchains")
                                        .help("declare a subchain at the top level and `jump` to it with arguments"),
                                );
                            }
                            let key = format!("{}/{}", table.name(), hook.name());
                            if !dup(self, "base chain", &key, c.name.span) {
                                self.bases.push(BaseDecl {
                                    table,
                                    hook,
                                    decl: c,
                                });
                            }
                        }
                    }
                    Item::Service(s) => {
                        if !dup(self, "service", &s.name.name, s.name.span) {
                            self.services.push(s);
                        }
                    }
                    Item::Interface(i) => {
                        if !dup(self, "interface", &i.name.name, i.name.span) {
                            self.interfaces.push(i);
                        }
                    }
                    Item::Test(t) => self.tests.push(t),
                    Item::Assert(a) => self.asserts.push(a),
                }
            }
        }
        // parameter types
        let mut subs: Vec<&'a ChainDecl> = self.subchains.values().copied().collect();
        subs.sort_by_key(|c| (c.span.file, c.span.start));
        for c in subs {
            let mut params = Vec::new();
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for p in c.params.iter().flatten() {
                if let Some(prev) = seen.insert(&p.name.name, p.name.span) {
                    self.err(
                        Diagnostic::error(
                            "FW0022",
                            format!("parameter `{}` is declared twice", p.name.name),
                        )
                        .primary(p.name.span, "declared again here")
                        .secondary(prev, "first declared here"),
                    );
                }
                let ty = self.resolve_type(&p.ty);
                params.push((p.name.name.clone(), ty));
            }
            self.sub_params.insert(&c.name.name, params);
        }
    }

    fn resolve_type(&mut self, t: &ast::TypeExpr) -> Option<Ty> {
        match t {
            ast::TypeExpr::Named(n) => match Ty::from_name(&n.name) {
                Some(t) => Some(t),
                None => {
                    let names = [
                        "ip",
                        "prefix",
                        "iprange",
                        "port",
                        "portrange",
                        "proto",
                        "iface",
                        "mark",
                        "string",
                        "rate",
                    ];
                    let mut d = Diagnostic::error("FW0028", format!("unknown type `{}`", n.name))
                        .primary(n.span, "not a type")
                        .note(format!("the types are {}, and set<T>", names.join(", ")));
                    if let Some(s) = suggest(&n.name, names) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.err(d);
                    None
                }
            },
            ast::TypeExpr::Set(inner, span) => {
                let t = self.resolve_type(inner)?;
                if matches!(t, Ty::Set(_)) {
                    self.err(
                        Diagnostic::error("FW0063", "sets cannot contain sets")
                            .primary(*span, "nested set type"),
                    );
                    return None;
                }
                Some(Ty::Set(Box::new(t)))
            }
        }
    }

    // -------------------------------------------------------------------- expressions

    fn define_value(&mut self, name: &str, use_span: Span) -> Option<Option<TV>> {
        if let Some(m) = self.define_memo.get(name) {
            return Some(m.clone());
        }
        let d = *self.defines.get(name)?;
        if let Some(pos) = self.define_stack.iter().position(|n| *n == name) {
            let chain: Vec<String> = self.define_stack[pos..]
                .iter()
                .map(|n| format!("${n}"))
                .chain(std::iter::once(format!("${name}")))
                .collect();
            self.err(
                Diagnostic::error("FW0027", format!("define `{name}` refers to itself"))
                    .primary(use_span, "this use closes the loop")
                    .secondary(d.name.span, format!("`{name}` defined here"))
                    .note(format!("cycle: {}", chain.join(" -> "))),
            );
            self.define_memo.insert(name.to_string(), None);
            return Some(None);
        }
        self.define_stack.push(&d.name.name);
        let tv = self.expr(&d.value, &[]);
        self.define_stack.pop();
        self.define_memo.insert(name.to_string(), tv.clone());
        Some(tv)
    }

    fn unknown_var(&mut self, name: &str, span: Span, scope: &Scope) {
        let mut cands: Vec<&str> = self.defines.keys().copied().collect();
        cands.extend(scope.iter().map(|(n, _)| n.as_str()));
        let mut d = Diagnostic::error("FW0020", format!("unknown variable `${name}`"))
            .primary(span, "not a define or a parameter in scope");
        if let Some(s) = suggest(name, cands) {
            d = d.help(format!("did you mean `${s}`?"));
        } else {
            d = d.help(format!("declare it with `define {name} = ...;`"));
        }
        self.err(d);
    }

    /// Types an expression; reports literal errors. `None` after an error.
    fn expr(&mut self, e: &Expr, scope: &Scope) -> Option<TV> {
        let known = |ty: Ty, v: Value| Some(TV { ty, val: Some(v) });
        match &e.kind {
            ExprKind::Ipv4(a) => known(Ty::Ip, Value::Ip(ip_u32(*a))),
            ExprKind::Ipv6(_) => {
                self.err(
                    Diagnostic::error("FW0039", "IPv6 addresses are not supported yet")
                        .primary(e.span, "IPv6 literal")
                        .note("fw v0 handles IPv4 only; IPv6 support is planned"),
                );
                None
            }
            ExprKind::Prefix(a, l) => {
                if *l > 32 {
                    self.err(
                        Diagnostic::error("FW0032", format!("prefix length {l} is longer than 32"))
                            .primary(e.span, "an IPv4 prefix has at most 32 bits")
                            .help("use a length between 0 and 32"),
                    );
                    return None;
                }
                known(Ty::Prefix, Value::Prefix(ip_u32(*a), *l as u8))
            }
            ExprKind::IpRange(a, b) => {
                if ip_u32(*a) > ip_u32(*b) {
                    self.err(
                        Diagnostic::error("FW0040", "address range runs backwards")
                            .primary(e.span, format!("`{a}` is above `{b}`"))
                            .help(format!("write it as `{b}-{a}`")),
                    );
                    return None;
                }
                known(Ty::IpRange, Value::IpRange(ip_u32(*a), ip_u32(*b)))
            }
            ExprKind::Int(i) => known(Ty::Int, Value::Int(*i)),
            ExprKind::IntRange(a, b) => {
                if a > b {
                    self.err(
                        Diagnostic::error("FW0040", "range runs backwards")
                            .primary(e.span, format!("{a} is above {b}"))
                            .help(format!("write it as `{b}-{a}`")),
                    );
                    return None;
                }
                known(Ty::IntRange, Value::IntRange(*a, *b))
            }
            ExprKind::Float(f) => known(Ty::Float, Value::Float(*f)),
            ExprKind::Str(s) => known(Ty::Str, Value::Str(s.clone())),
            ExprKind::Rate(n, unit) => match rate_unit(&unit.name) {
                Some(secs) => {
                    if *n == 0 {
                        self.err(
                            Diagnostic::error(
                                "FW0041",
                                "a rate of zero never lets a packet through",
                            )
                            .primary(e.span, "rate is 0")
                            .help("to drop everything, use `drop`"),
                        );
                        return None;
                    }
                    known(Ty::Rate, Value::Rate(*n, secs))
                }
                None => {
                    let mut d =
                        Diagnostic::error("FW0038", format!("unknown rate unit `{}`", unit.name))
                            .primary(unit.span, "expected second, minute, hour or day");
                    if let Some(s) = suggest(&unit.name, ["second", "minute", "hour", "day"]) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.err(d);
                    None
                }
            },
            ExprKind::Ident(n) => known(Ty::Name, Value::Name(n.clone())),
            ExprKind::Error => None,
            ExprKind::Var(name) => {
                if let Some((_, ty)) = scope.iter().find(|(n, _)| n == name) {
                    return ty.clone().map(|ty| TV { ty, val: None });
                }
                self.used_defines.insert(name.clone());
                match self.define_value(name, e.span) {
                    Some(tv) => tv,
                    None => {
                        self.unknown_var(name, e.span, scope);
                        None
                    }
                }
            }
            ExprKind::Set(elems) => {
                if elems.is_empty() {
                    self.err(
                        Diagnostic::error("FW0034", "empty set")
                            .primary(e.span, "this set has no elements")
                            .note("a match against an empty set never matches; remove the rule or add elements"),
                    );
                    return None;
                }
                let mut fam: Option<(Family, Span, Ty)> = None;
                let mut vals = Some(Vec::new());
                let mut ok = true;
                for el in elems {
                    if matches!(el.kind, ExprKind::Set(_)) {
                        // a literal set inside a set: reported without descending into it
                        self.err(
                            Diagnostic::error("FW0063", "sets cannot contain sets")
                                .primary(el.span, "a set inside a set")
                                .help("list the elements directly"),
                        );
                        ok = false;
                        continue;
                    }
                    let Some(tv) = self.expr(el, scope) else {
                        ok = false;
                        continue;
                    };
                    let elem_ty = match &tv.ty {
                        Ty::Set(inner) => {
                            if matches!(el.kind, ExprKind::Set(_)) {
                                self.err(
                                    Diagnostic::error("FW0063", "sets cannot contain sets")
                                        .primary(el.span, "a set inside a set")
                                        .help("list the elements directly"),
                                );
                                ok = false;
                                continue;
                            }
                            (**inner).clone() // a set define spliced in
                        }
                        t => t.clone(),
                    };
                    let Some(f) = elem_ty.family() else { continue };
                    match &fam {
                        None => fam = Some((f, el.span, tv.ty.clone())),
                        Some((f0, s0, t0)) => match f0.join(f) {
                            Some(j) => {
                                let (s0, t0) = (*s0, t0.clone());
                                fam = Some((j, s0, t0));
                            }
                            None => {
                                let (s0, t0) = (*s0, t0.clone());
                                self.err(
                                    Diagnostic::error("FW0035", "set mixes elements of different types")
                                        .primary(el.span, format!("this is {}", article(&tv.ty)))
                                        .secondary(s0, format!("but this is {}", article(&t0)))
                                        .help("a set holds addresses, or numbers, or names: split it in two"),
                                );
                                ok = false;
                            }
                        },
                    }
                    match (&mut vals, tv.val) {
                        (Some(v), Some(x)) => x.flatten_into(v),
                        _ => vals = None,
                    }
                }
                if !ok {
                    return None;
                }
                let (f, _, _) = fam?;
                Some(TV {
                    ty: Ty::Set(Box::new(f.set_elem())),
                    val: vals.map(Value::Set),
                })
            }
        }
    }

    /// Checks that `tv` fits `class`; when the value is known, that it is in range too.
    fn expect(&mut self, class: Class, tv: &TV, e: &Expr, what: &str) -> bool {
        if !class.accepts(&tv.ty) {
            let mut d = Diagnostic::error("FW0030", "mismatched types")
                .primary(
                    e.span,
                    format!("expected {}, found {}", class.describe(), article(&tv.ty)),
                )
                .note(format!("{what} compares with {}", class.describe()));
            if let ExprKind::Var(v) = &e.kind {
                if let Some(def) = self.defines.get(v.as_str()) {
                    d = d.secondary(
                        def.name.span,
                        format!("`${v}` is defined as {} here", article(&tv.ty)),
                    );
                }
            }
            self.err(d);
            return false;
        }
        match &tv.val {
            Some(v) => self.check_value(class, v, e),
            None => true,
        }
    }

    fn check_value(&mut self, class: Class, v: &Value, e: &Expr) -> bool {
        let mut flat = Vec::new();
        v.flatten_into(&mut flat);
        let from_define = matches!(e.kind, ExprKind::Var(_));
        for x in flat {
            let bad: Option<Diagnostic> = match (class, &x) {
                (Class::Port, Value::Int(i)) if *i > 65535 => Some(
                    Diagnostic::error("FW0031", format!("port {i} is out of range"))
                        .primary(e.span, "ports are 0..=65535"),
                ),
                (Class::Port, Value::IntRange(_, b)) if *b > 65535 => Some(
                    Diagnostic::error("FW0031", format!("port {b} is out of range"))
                        .primary(e.span, "ports are 0..=65535"),
                ),
                (Class::Proto, Value::Int(i)) if *i > 255 => Some(
                    Diagnostic::error("FW0041", format!("protocol number {i} is out of range"))
                        .primary(e.span, "protocol numbers are 0..=255"),
                ),
                (Class::Proto, Value::Name(n)) if proto_number(n).is_none() => {
                    let mut d = Diagnostic::error("FW0038", format!("unknown protocol `{n}`"))
                        .primary(e.span, "not a protocol name")
                        .note(format!(
                            "known names: {}; any number 0..=255 works too",
                            PROTOCOLS
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    if let Some(s) = suggest(n, PROTOCOLS.iter().map(|(n, _)| *n)) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    Some(d)
                }
                (Class::Proto | Class::IcmpType, Value::Str(x)) => Some(
                    Diagnostic::error(
                        "FW0030",
                        format!("a string cannot name a protocol or ICMP type: {x:?}"),
                    )
                    .primary(
                        e.span,
                        "protocols and ICMP types are written as bare names or numbers",
                    ),
                ),
                (Class::IcmpType, Value::Int(i)) if *i > 255 => Some(
                    Diagnostic::error("FW0041", format!("ICMP type {i} is out of range"))
                        .primary(e.span, "ICMP types are 0..=255"),
                ),
                (Class::IcmpType, Value::Name(n)) if icmp_type_number(n).is_none() => {
                    let mut d = Diagnostic::error("FW0038", format!("unknown ICMP type `{n}`"))
                        .primary(e.span, "not an ICMP type name");
                    if let Some(s) = suggest(n, ICMP_TYPES.iter().map(|(n, _)| *n)) {
                        d = d.help(format!("did you mean `{s}`?"));
                    } else {
                        d = d.note("names: echo-request, echo-reply, destination-unreachable, time-exceeded, ...");
                    }
                    Some(d)
                }
                (Class::Mark, Value::Int(i)) if *i > u64::from(u32::MAX) => Some(
                    Diagnostic::error("FW0041", format!("mark {i:#x} does not fit in 32 bits"))
                        .primary(e.span, "marks are 32-bit"),
                ),
                (Class::Mark, Value::IntRange(_, b)) if *b > u64::from(u32::MAX) => Some(
                    Diagnostic::error("FW0041", format!("mark {b:#x} does not fit in 32 bits"))
                        .primary(e.span, "marks are 32-bit"),
                ),
                (Class::Int(max), Value::Int(i)) if *i > max => Some(
                    Diagnostic::error("FW0041", format!("{i} is out of range"))
                        .primary(e.span, format!("at most {max} here")),
                ),
                (Class::Probability, Value::Float(p)) if !(0.0..=1.0).contains(p) => Some(
                    Diagnostic::error("FW0033", format!("probability {p} is outside 0..1"))
                        .primary(e.span, "a probability is between 0.0 and 1.0"),
                ),
                (Class::Probability, Value::Int(i)) if *i > 1 => Some(
                    Diagnostic::error("FW0033", format!("probability {i} is outside 0..1"))
                        .primary(e.span, "a probability is between 0.0 and 1.0")
                        .help(format!("did you mean `0.{i}`?")),
                ),
                _ => None,
            };
            if let Some(mut d) = bad {
                if from_define {
                    if let ExprKind::Var(v) = &e.kind {
                        if let Some(def) = self.defines.get(v.as_str()) {
                            d = d.secondary(def.value.span, format!("value of `${v}`"));
                        }
                    }
                }
                self.err(d);
                return false;
            }
        }
        true
    }

    // -------------------------------------------------------------------- rules

    /// Checks one rule's matches and statements (context-free parts).
    fn check_rule(&mut self, r: &ast::Rule, scope: &Scope) {
        // protocol implied by each match, for conflicts and port checks
        let mut protos: Vec<(u8, Span)> = Vec::new();
        let mut l4_sets: Vec<(Vec<u8>, Span)> = Vec::new();
        for m in &r.matches {
            match &m.kind {
                MatchKind::Cmp {
                    sel,
                    sel_span,
                    value,
                } => {
                    match sel {
                        Selector::Port(l4, _) => protos.push((l4.number(), *sel_span)),
                        Selector::IcmpType => protos.push((1, *sel_span)),
                        _ => {}
                    }
                    if let Some(tv) = self.expr(value, scope) {
                        if self.expect(selector_class(*sel), &tv, value, &format!("`{sel}`"))
                            && *sel == Selector::IpProtocol
                            && !m.negated
                        {
                            if let Some(v) = &tv.val {
                                let ps: Vec<u8> = v
                                    .elems(Field::Proto)
                                    .iter()
                                    .flat_map(|e| {
                                        let (a, b) = e.bounds();
                                        (a..=b.min(255)).map(|x| x as u8)
                                    })
                                    .collect();
                                if ps.len() == 1 {
                                    protos.push((ps[0], value.span));
                                } else {
                                    l4_sets.push((ps, value.span));
                                }
                            }
                        }
                    }
                }
                MatchKind::Proto(l4) => protos.push((l4.number(), m.span)),
                MatchKind::TcpFlags { flags, mask } => {
                    protos.push((6, m.span));
                    for f in flags.iter().chain(mask.iter().flatten()) {
                        if tcpflags::from_name(&f.name).is_none() {
                            let names: Vec<&str> =
                                tcpflags::NAMES.iter().map(|(n, _)| *n).collect();
                            self.err(unknown_name(
                                "TCP flag",
                                &f.name,
                                f.span,
                                "not a TCP flag",
                                "flags",
                                &names,
                            ));
                        }
                    }
                }
                MatchKind::CtState(states) => {
                    for s in states {
                        if ct::from_name(&s.name).is_none() {
                            let names: Vec<&str> = ct::NAMES.iter().map(|(n, _)| *n).collect();
                            self.err(unknown_name(
                                "conntrack state",
                                &s.name,
                                s.span,
                                "not a ct state",
                                "states",
                                &names,
                            ));
                        }
                    }
                }
                MatchKind::Statistic(p) => {
                    if let Some(tv) = self.expr(p, scope) {
                        self.expect(Class::Probability, &tv, p, "`statistic probability`");
                    }
                }
                MatchKind::Limit { rate, burst } => {
                    if let Some(tv) = self.expr(rate, scope) {
                        self.expect(Class::Rate, &tv, rate, "`limit`");
                    }
                    if let Some(b) = burst {
                        if let Some(tv) = self.expr(b, scope) {
                            self.expect(Class::Int(u64::from(u32::MAX)), &tv, b, "`burst`");
                        }
                    }
                }
                MatchKind::Ip6 => {
                    self.err(
                        Diagnostic::error("FW0039", "`ip6` matches are not supported yet")
                            .primary(m.span, "IPv6 match")
                            .note("fw v0 handles IPv4 only; IPv6 support is planned"),
                    );
                }
            }
        }
        // statements
        let mut terminal_at: Option<Span> = None;
        for s in &r.stmts {
            if let Some(t) = terminal_at {
                self.err(
                    Diagnostic::warning("FW0061", format!("`{}` is never reached", s.kind.keyword()))
                        .primary(s.span, "this statement comes after a terminating one")
                        .secondary(t, "the rule ends here")
                        .help("put non-terminating statements (counter, log, mark set) before the verdict"),
                );
                continue;
            }
            self.check_stmt(s, scope, &mut protos);
            if stmt_terminates(&s.kind) {
                terminal_at = Some(s.span);
            }
        }
        // conflicting protocols
        if let Some((p0, s0)) = protos.first().copied() {
            if let Some((p1, s1)) = protos.iter().copied().find(|(p, _)| *p != p0) {
                self.err(
                    Diagnostic::error("FW0037", "conflicting protocols in one rule")
                        .primary(s1, format!("this needs {}", proto_label(p1)))
                        .secondary(s0, format!("but this needs {}", proto_label(p0)))
                        .note("no packet is both, so the rule can never match")
                        .help("split it into one rule per protocol"),
                );
            }
            for (set, span) in &l4_sets {
                if !set.contains(&p0) {
                    self.err(
                        Diagnostic::error("FW0037", "conflicting protocols in one rule")
                            .primary(s0, format!("this needs {}", proto_label(p0)))
                            .secondary(*span, "which this protocol set excludes"),
                    );
                }
            }
        }
        // NAT ports and tcp-reset need a protocol with ports
        let ported = protos
            .first()
            .map(|(p, _)| *p == 6 || *p == 17)
            .unwrap_or(false)
            || l4_sets
                .iter()
                .any(|(s, _)| !s.is_empty() && s.iter().all(|p| *p == 6 || *p == 17));
        for s in &r.stmts {
            let port_span = match &s.kind {
                StmtKind::Snat { to, .. } | StmtKind::Dnat { to, .. } => {
                    to.ports.as_ref().map(|p| p.span)
                }
                StmtKind::Masquerade { to: Some(to), .. } | StmtKind::Redirect { to: Some(to) } => {
                    to.ports.as_ref().map(|p| p.span)
                }
                _ => None,
            };
            if let Some(ps) = port_span {
                if !ported {
                    self.err(
                        Diagnostic::error(
                            "FW0036",
                            format!("`{}` to a port needs a TCP or UDP match", s.kind.keyword()),
                        )
                        .primary(ps, "a port is only defined for TCP and UDP")
                        .secondary(r.span, "this rule matches packets of any protocol")
                        .help("add `tcp` or `udp` (or `tcp dport ...`) to the rule's matches"),
                    );
                }
            }
            let mut verdicts = vec![s];
            if let StmtKind::Vmap { arms, .. } = &s.kind {
                verdicts.extend(arms.iter().map(|a| &a.verdict));
            }
            for v in verdicts {
                if let StmtKind::Reject(Some(ast::RejectWith::Named(n))) = &v.kind {
                    if n.name == "tcp-reset" && protos.first().map(|(p, _)| *p) != Some(6) {
                        self.err(
                            Diagnostic::error("FW0036", "`reject with tcp-reset` needs a TCP match")
                                .primary(n.span, "only TCP segments can be answered with a reset")
                                .help("add `tcp` (or `tcp dport ...`) to the rule, or reject with an ICMP error"),
                        );
                    }
                }
            }
        }
    }

    fn check_stmt(&mut self, s: &ast::Stmt, scope: &Scope, protos: &mut Vec<(u8, Span)>) {
        match &s.kind {
            StmtKind::Reject(Some(w)) => match w {
                ast::RejectWith::Named(n) if n.name == "tcp-reset" => {}
                ast::RejectWith::Named(n) => {
                    if reject_code(&n.name).is_none() {
                        self.err(
                            Diagnostic::error("FW0038", format!("unknown reject type `{}`", n.name))
                                .primary(n.span, "expected `tcp-reset` or `icmp NAME`")
                                .help("e.g. `reject with tcp-reset` or `reject with icmp port-unreachable`"),
                        );
                    }
                }
                ast::RejectWith::Icmp(n) => {
                    if reject_code(&n.name).is_none() {
                        let names: Vec<&str> = REJECT_CODES.iter().map(|(n, _)| *n).collect();
                        self.err(unknown_name(
                            "ICMP reject code",
                            &n.name,
                            n.span,
                            "not an ICMP unreachable code",
                            "codes",
                            &names,
                        ));
                    }
                }
            },
            StmtKind::Jump(c) | StmtKind::Goto(c) => self.check_call(c, scope),
            StmtKind::Queue { num: Some(n), .. } => {
                if let Some(tv) = self.expr(n, scope) {
                    self.expect(Class::Int(65535), &tv, n, "`queue num`");
                }
            }
            StmtKind::Log { level, prefix } => {
                if let Some(l) = level {
                    if log_level(&l.name).is_none() {
                        self.err(unknown_name(
                            "log level",
                            &l.name,
                            l.span,
                            "not a syslog level",
                            "levels",
                            &ir::LOG_LEVELS,
                        ));
                    }
                }
                if let Some(p) = prefix {
                    if let Some(tv) = self.expr(p, scope) {
                        self.expect(Class::Str, &tv, p, "`log prefix`");
                    }
                }
            }
            StmtKind::MarkSet(v) => {
                if let Some(tv) = self.expr(v, scope) {
                    self.expect(Class::Int(u64::from(u32::MAX)), &tv, v, "`mark set`");
                }
            }
            StmtKind::TtlSet(v) => {
                if let Some(tv) = self.expr(v, scope) {
                    self.expect(Class::Int(255), &tv, v, "`ip ttl set`");
                }
            }
            StmtKind::Snat { to, .. } | StmtKind::Dnat { to, .. } => {
                if to.addr.is_none() && matches!(s.kind, StmtKind::Snat { .. }) {
                    self.err(
                        Diagnostic::error("FW0030", "`snat` needs an address")
                            .primary(to.span, "no address given")
                            .help("write `snat to ADDR[:PORTS]`, or use `masquerade` for the outgoing interface's address"),
                    );
                }
                self.check_nat_to(to, scope);
            }
            StmtKind::Masquerade { to: Some(to), .. } | StmtKind::Redirect { to: Some(to) } => {
                if let Some(a) = &to.addr {
                    self.err(
                        Diagnostic::error(
                            "FW0030",
                            format!("`{}` takes ports only", s.kind.keyword()),
                        )
                        .primary(a.span, "the address is chosen by the kernel")
                        .help("write `to :PORT` or `to PORT-PORT`"),
                    );
                }
                self.check_nat_to(to, scope);
            }
            StmtKind::Vmap {
                sel,
                sel_span,
                arms,
            } => {
                match sel {
                    Selector::Port(l4, _) => protos.push((l4.number(), *sel_span)),
                    Selector::IcmpType => protos.push((1, *sel_span)),
                    _ => {}
                }
                let class = selector_class(*sel);
                let mut keys: Vec<(u32, u32, Span)> = Vec::new();
                let mut names: Vec<(String, Span)> = Vec::new();
                for a in arms {
                    if let Some(tv) = self.expr(&a.key, scope) {
                        if self.expect(class, &tv, &a.key, &format!("`{sel} vmap`")) {
                            if let Some(v) = &tv.val {
                                if let Some(f) = selector_field(*sel) {
                                    for el in v.elems(f) {
                                        let (lo, hi) = el.bounds();
                                        if let Some((_, _, prev)) =
                                            keys.iter().find(|(a, b, _)| lo <= *b && *a <= hi)
                                        {
                                            let prev = *prev;
                                            self.err(
                                                Diagnostic::error("FW0062", "verdict map keys overlap")
                                                    .primary(a.key.span, "this key")
                                                    .secondary(prev, "overlaps this one")
                                                    .note("a packet must select at most one verdict; make the keys disjoint"),
                                            );
                                        }
                                        keys.push((lo, hi, a.key.span));
                                    }
                                } else {
                                    let mut flat = Vec::new();
                                    v.flatten_into(&mut flat);
                                    for n in flat {
                                        let n = match n {
                                            Value::Name(x) | Value::Str(x) => x,
                                            o => o.to_string(),
                                        };
                                        let pat = IfName::parse(&n);
                                        if let Some((_, prev)) = names.iter().find(|(x, _)| {
                                            crate::analysis::pat_overlap(&IfName::parse(x), &pat)
                                        }) {
                                            let prev = *prev;
                                            self.err(
                                                Diagnostic::error("FW0062", "verdict map keys overlap")
                                                    .primary(a.key.span, "this key")
                                                    .secondary(prev, "overlaps this one")
                                                    .note("an interface must select at most one verdict; make the names disjoint"),
                                            );
                                        }
                                        names.push((n, a.key.span));
                                    }
                                }
                            }
                        }
                    }
                    self.check_stmt(&a.verdict, scope, protos);
                }
                if arms.is_empty() {
                    self.err(
                        Diagnostic::error("FW0034", "empty verdict map")
                            .primary(s.span, "no keys: this statement does nothing"),
                    );
                }
            }
            _ => {}
        }
    }

    fn check_nat_to(&mut self, to: &ast::NatTo, scope: &Scope) {
        if let Some(a) = &to.addr {
            if let Some(tv) = self.expr(a, scope) {
                self.expect(Class::NatAddr, &tv, a, "a NAT target");
            }
        }
        if let Some(p) = &to.ports {
            if let Some(tv) = self.expr(p, scope) {
                self.expect(Class::Port, &tv, p, "a NAT port");
            }
        }
    }

    fn check_call(&mut self, c: &ast::Call, scope: &Scope) {
        let Some(decl) = self.subchains.get(c.name.name.as_str()).copied() else {
            let mut d = Diagnostic::error("FW0021", format!("unknown chain `{}`", c.name.name))
                .primary(c.name.span, "no subchain of this name");
            if Hook::from_name(&c.name.name).is_some() {
                d = d.note("base chains are entered from their hook, not jumped to");
            } else if let Some(s) = suggest(&c.name.name, self.subchains.keys().copied()) {
                d = d.help(format!("did you mean `{s}`?"));
            } else {
                d = d.help(format!(
                    "declare it with `chain {}(...) {{ ... }}` at the top level",
                    c.name.name
                ));
            }
            self.err(d);
            return;
        };
        let params = self
            .sub_params
            .get(c.name.name.as_str())
            .cloned()
            .unwrap_or_default();
        if params.len() != c.args.len() {
            let sig = signature(decl, &params);
            let at = c.args_span.unwrap_or(c.span);
            self.err(
                Diagnostic::error(
                    "FW0050",
                    format!(
                        "`{}` takes {} argument{} but {} {} given",
                        c.name.name,
                        params.len(),
                        if params.len() == 1 { "" } else { "s" },
                        c.args.len(),
                        if c.args.len() == 1 { "was" } else { "were" }
                    ),
                )
                .primary(
                    at,
                    format!(
                        "{} argument{}",
                        c.args.len(),
                        if c.args.len() == 1 { "" } else { "s" }
                    ),
                )
                .secondary(decl.head_span, format!("defined here as `{sig}`")),
            );
            return;
        }
        for ((pname, pty), arg) in params.iter().zip(&c.args) {
            let Some(tv) = self.expr(arg, scope) else {
                continue;
            };
            let Some(pty) = pty else { continue };
            if !pty.accepts(&tv.ty) {
                let param_span = decl
                    .params
                    .iter()
                    .flatten()
                    .find(|p| &p.name.name == pname)
                    .map(|p| p.ty.span())
                    .unwrap_or(decl.head_span);
                self.err(
                    Diagnostic::error(
                        "FW0051",
                        format!("argument `{pname}` of `{}` has the wrong type", c.name.name),
                    )
                    .primary(
                        arg.span,
                        format!("expected {pty}, found {}", article(&tv.ty)),
                    )
                    .secondary(
                        param_span,
                        format!("parameter `{pname}` is declared as {pty}"),
                    ),
                );
                continue;
            }
            if let Some(v) = &tv.val {
                let class = match pty {
                    Ty::Port | Ty::PortRange => Some(Class::Port),
                    Ty::Set(e) if matches!(**e, Ty::Port | Ty::PortRange) => Some(Class::Port),
                    Ty::Proto => Some(Class::Proto),
                    Ty::Mark => Some(Class::Mark),
                    _ => None,
                };
                if let Some(cl) = class {
                    self.check_value(cl, v, arg);
                }
            }
        }
    }

    // -------------------------------------------------------------------- chains and calls

    fn check_bodies(&mut self) {
        let mut subs: Vec<&'a ChainDecl> = self.subchains.values().copied().collect();
        subs.sort_by_key(|c| (c.span.file, c.span.start));
        for c in &subs {
            let scope = self
                .sub_params
                .get(c.name.name.as_str())
                .cloned()
                .unwrap_or_default();
            for r in &c.rules {
                self.check_rule(r, &scope);
            }
        }
        let bases: Vec<&'a ChainDecl> = self.bases.iter().map(|b| b.decl).collect();
        for c in bases {
            for r in &c.rules {
                self.check_rule(r, &[]);
            }
        }
    }

    fn calls_of(decl: &ChainDecl) -> Vec<&ast::Call> {
        let mut out = Vec::new();
        for r in &decl.rules {
            for s in &r.stmts {
                collect_calls(&s.kind, &mut out);
            }
        }
        out
    }

    /// Defines no `$variable` names and subchains no `jump`/`goto` calls, in the program's
    /// own files (the standard library offers many that a program leaves unused).
    fn check_unused(&mut self) {
        let own =
            |sm: &crate::source::SourceMap, sp: Span| !sm.get(sp.file).name.starts_with("std/");
        let mut defs: Vec<&'a DefineItem> = self
            .defines
            .values()
            .copied()
            .filter(|d| !self.used_defines.contains(&d.name.name) && own(self.sm, d.span))
            .collect();
        defs.sort_by_key(|d| (d.span.file, d.span.start));
        for d in defs {
            self.err(
                Diagnostic::warning("FW0105", format!("unused define `{}`", d.name.name))
                    .primary(d.name.span, "never used as `$variable`")
                    .help("remove it, or use it"),
            );
        }
        let mut called: HashSet<&str> = HashSet::new();
        let all: Vec<&'a ChainDecl> = self
            .bases
            .iter()
            .map(|b| b.decl)
            .chain(self.subchains.values().copied())
            .collect();
        for c in all {
            for call in Checker::calls_of(c) {
                called.insert(call.name.name.as_str());
            }
        }
        let mut subs: Vec<&'a ChainDecl> = self
            .subchains
            .values()
            .copied()
            .filter(|c| !called.contains(c.name.name.as_str()) && own(self.sm, c.span))
            .collect();
        subs.sort_by_key(|c| (c.span.file, c.span.start));
        for c in subs {
            self.err(
                Diagnostic::warning("FW0106", format!("unused chain `{}`", c.name.name))
                    .primary(c.name.span, "no `jump` or `goto` calls it")
                    .help("remove it, or call it from a base chain"),
            );
        }
    }

    /// Reports call cycles; returns true when there are none.
    fn check_cycles(&mut self) -> bool {
        let mut subs: Vec<&'a ChainDecl> = self.subchains.values().copied().collect();
        subs.sort_by_key(|c| (c.span.file, c.span.start));
        let mut state: HashMap<&str, u8> = HashMap::new();
        let mut reported: HashSet<Vec<String>> = HashSet::new();
        let mut ok = true;
        // iterative DFS with an explicit path of (chain, call span)
        fn visit<'b>(
            this: &mut Checker<'b>,
            c: &'b ChainDecl,
            path: &mut Vec<(&'b str, Span)>,
            state: &mut HashMap<&'b str, u8>,
            reported: &mut HashSet<Vec<String>>,
            ok: &mut bool,
        ) {
            state.insert(&c.name.name, 1);
            for call in Checker::calls_of(c) {
                let Some(t) = this.subchains.get(call.name.name.as_str()).copied() else {
                    continue;
                };
                match state.get(t.name.name.as_str()).copied().unwrap_or(0) {
                    1 => {
                        *ok = false;
                        let start = path
                            .iter()
                            .position(|(n, _)| *n == t.name.name)
                            .unwrap_or(0);
                        let mut cyc: Vec<(&str, Span)> = path[start..].to_vec();
                        cyc.push((&c.name.name, call.name.span));
                        let mut key: Vec<String> = cyc.iter().map(|(n, _)| n.to_string()).collect();
                        key.sort();
                        if !reported.insert(key) {
                            continue;
                        }
                        let names: Vec<String> = cyc
                            .iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .chain(std::iter::once(format!("`{}`", t.name.name)))
                            .collect();
                        let mut d = Diagnostic::error(
                            "FW0052",
                            format!("call cycle: {}", names.join(" -> ")),
                        )
                        .primary(
                            call.name.span,
                            format!(
                                "`{}` calls `{}` here, closing the cycle",
                                c.name.name, t.name.name
                            ),
                        );
                        // each entry is a chain and its call to the next chain of the cycle
                        for i in 0..cyc.len() - 1 {
                            let (n, s) = cyc[i];
                            let next = cyc[i + 1].0;
                            d = d.secondary(s, format!("`{n}` calls `{next}` here"));
                        }
                        d = d.note("a subchain may not call itself, directly or through others: the kernel rejects such loops");
                        this.err(d);
                    }
                    0 => {
                        path.push((&c.name.name, call.name.span));
                        visit(this, t, path, state, reported, ok);
                        path.pop();
                    }
                    _ => {}
                }
            }
            state.insert(&c.name.name, 2);
        }
        for c in subs {
            if state.get(c.name.name.as_str()).copied().unwrap_or(0) == 0 {
                let mut path = vec![];
                visit(self, c, &mut path, &mut state, &mut reported, &mut ok);
            }
        }
        ok
    }

    /// Statement legality per table and hook, directly and through subchain calls.
    fn check_legality(&mut self) {
        let bases: Vec<(Table, Hook, &'a ChainDecl)> = self
            .bases
            .iter()
            .map(|b| (b.table, b.hook, b.decl))
            .collect();
        // (statement span, table, hook) already reported
        let mut reported: HashSet<(Span, Table, Hook)> = HashSet::new();
        for (table, hook, decl) in bases {
            let mut visited: HashSet<&str> = HashSet::new();
            let ctx = CallCtx {
                table,
                hook,
                calls: vec![],
            };
            self.legal_in(decl, &ctx, &mut visited, &mut reported);
        }
    }

    fn legal_in(
        &mut self,
        decl: &'a ChainDecl,
        ctx: &CallCtx,
        visited: &mut HashSet<&'a str>,
        reported: &mut HashSet<(Span, Table, Hook)>,
    ) {
        for r in &decl.rules {
            for s in &r.stmts {
                let mut stmts = vec![s];
                if let StmtKind::Vmap { arms, .. } = &s.kind {
                    stmts.extend(arms.iter().map(|a| &a.verdict));
                }
                for s in stmts {
                    if let Err(why) = stmt_allowed(&s.kind, ctx.table, ctx.hook) {
                        if reported.insert((s.span, ctx.table, ctx.hook)) {
                            let mut d = Diagnostic::error(
                                "FW0060",
                                format!(
                                    "`{}` is not allowed in {}/{}",
                                    s.kind.keyword(),
                                    ctx.table.name(),
                                    ctx.hook.name()
                                ),
                            )
                            .primary(s.span, why);
                            if ctx.calls.is_empty() {
                                d = d.note(format!(
                                    "this rule is in the base chain {} of table {}",
                                    ctx.hook.name(),
                                    ctx.table.name()
                                ));
                            } else {
                                for (i, c) in ctx.calls.iter().enumerate() {
                                    let msg = if i == 0 {
                                        format!(
                                            "called from {}/{} here",
                                            ctx.table.name(),
                                            ctx.hook.name()
                                        )
                                    } else {
                                        "and from here".to_string()
                                    };
                                    d = d.secondary(*c, msg);
                                }
                                d = d.note(format!(
                                    "`{}` runs in {}/{} because of the call{} shown",
                                    decl.name.name,
                                    ctx.table.name(),
                                    ctx.hook.name(),
                                    if ctx.calls.len() == 1 { "" } else { "s" }
                                ));
                            }
                            self.err(d);
                        }
                    }
                }
                let mut calls = Vec::new();
                collect_calls(&s.kind, &mut calls);
                for call in calls {
                    let Some(t) = self.subchains.get(call.name.name.as_str()).copied() else {
                        continue;
                    };
                    if visited.contains(t.name.name.as_str()) {
                        continue;
                    }
                    visited.insert(&t.name.name);
                    let mut inner = ctx.clone();
                    inner.calls.push(call.span);
                    self.legal_in(t, &inner, visited, reported);
                }
            }
        }
    }

    fn check_services(&mut self) {
        let services = self.services.clone();
        for s in services {
            let mut virt = None;
            let mut sched = None;
            let mut reals = 0;
            for e in &s.entries {
                match e {
                    ast::ServiceEntry::Virtual {
                        proto,
                        addr,
                        port,
                        span,
                    } => {
                        if *proto == L4::Icmp {
                            self.err(
                                Diagnostic::error("FW0080", "a virtual service is TCP or UDP")
                                    .primary(
                                        *span,
                                        "IPVS balances TCP and UDP connections, not ICMP",
                                    ),
                            );
                        }
                        if let Some(prev) = virt {
                            self.err(
                                Diagnostic::error("FW0080", "a service has one virtual address")
                                    .primary(*span, "second `virtual`")
                                    .secondary(prev, "first here"),
                            );
                        }
                        virt = Some(*span);
                        self.check_endpoint(addr, Some(port));
                    }
                    ast::ServiceEntry::Scheduler(n) => {
                        sched = Some(n.span);
                        if !SCHEDULERS.contains(&n.name.as_str()) {
                            let mut d = Diagnostic::error(
                                "FW0080",
                                format!("unknown scheduler `{}`", n.name),
                            )
                            .primary(n.span, "not an IPVS scheduler")
                            .note(format!("the schedulers are {}", SCHEDULERS.join(", ")));
                            if let Some(x) = suggest(&n.name, SCHEDULERS.iter().copied()) {
                                d = d.help(format!("did you mean `{x}`?"));
                            }
                            self.err(d);
                        }
                    }
                    ast::ServiceEntry::Real {
                        addr,
                        port,
                        weight,
                        method,
                        ..
                    } => {
                        reals += 1;
                        self.check_endpoint(addr, Some(port));
                        if let Some(w) = weight {
                            if let Some(tv) = self.expr(w, &[]) {
                                self.expect(Class::Int(65535), &tv, w, "`weight`");
                            }
                        }
                        if let Some(m) = method {
                            if !["nat", "dr", "tunnel"].contains(&m.name.as_str()) {
                                self.err(
                                    Diagnostic::error(
                                        "FW0080",
                                        format!("unknown forwarding method `{}`", m.name),
                                    )
                                    .primary(m.span, "expected `nat`, `dr` or `tunnel`"),
                                );
                            }
                        }
                    }
                    ast::ServiceEntry::Persistent { timeout, .. } => {
                        if let Some(t) = timeout {
                            if let Some(tv) = self.expr(t, &[]) {
                                self.expect(
                                    Class::Int(u64::from(u32::MAX)),
                                    &tv,
                                    t,
                                    "`persistent`",
                                );
                            }
                        }
                    }
                }
            }
            if virt.is_none() {
                self.err(
                    Diagnostic::error(
                        "FW0080",
                        format!("service `{}` has no virtual address", s.name.name),
                    )
                    .primary(s.name.span, "missing `virtual tcp ADDR:PORT;`"),
                );
            }
            if reals == 0 {
                self.err(
                    Diagnostic::error(
                        "FW0080",
                        format!("service `{}` has no real server", s.name.name),
                    )
                    .primary(s.name.span, "add at least one `real ADDR:PORT;`"),
                );
            }
            let _ = sched;
        }
        let ifaces = self.interfaces.clone();
        for i in ifaces {
            for a in &i.addrs {
                if let Some(tv) = self.expr(a, &[]) {
                    if tv.ty != Ty::Ip {
                        self.err(Diagnostic::error("FW0030", "mismatched types").primary(
                            a.span,
                            format!("expected an address, found {}", article(&tv.ty)),
                        ));
                    }
                }
            }
        }
    }

    fn check_endpoint(&mut self, addr: &Expr, port: Option<&Expr>) {
        if let Some(tv) = self.expr(addr, &[]) {
            if tv.ty != Ty::Ip {
                self.err(Diagnostic::error("FW0030", "mismatched types").primary(
                    addr.span,
                    format!("expected an address, found {}", article(&tv.ty)),
                ));
            }
        }
        if let Some(p) = port {
            if let Some(tv) = self.expr(p, &[]) {
                if tv.ty == Ty::IntRange {
                    self.err(
                        Diagnostic::error("FW0030", "mismatched types")
                            .primary(p.span, "expected a single port, found a range"),
                    );
                } else {
                    self.expect(Class::Port, &tv, p, "a port");
                }
            }
        }
    }

    // -------------------------------------------------------------------- tests

    fn lower_tests(&mut self) -> Vec<TestCase> {
        let mut out = Vec::new();
        let blocks = self.tests.clone();
        for b in blocks {
            for l in &b.lines {
                if let Some(tc) = self.lower_test_line(&b.name, l) {
                    out.push(tc);
                }
            }
        }
        out
    }

    fn lower_endpoint(
        &mut self,
        ep: &ast::Endpoint,
        proto: L4,
        which: &str,
    ) -> Option<(u32, Option<u16>)> {
        let addr = match &ep.addr.kind {
            ExprKind::Ipv4(a) => ip_u32(*a),
            ExprKind::Var(_) => match self.expr(&ep.addr, &[]) {
                Some(TV {
                    ty: Ty::Ip,
                    val: Some(Value::Ip(a)),
                }) => a,
                Some(tv) => {
                    self.err(
                        Diagnostic::error(
                            "FW0070",
                            format!("the {which} of a test packet must be an address"),
                        )
                        .primary(ep.addr.span, format!("found {}", article(&tv.ty))),
                    );
                    return None;
                }
                None => return None,
            },
            _ => {
                self.expr(&ep.addr, &[]);
                return None;
            }
        };
        let port = match (&ep.port, proto) {
            (Some(p), L4::Tcp | L4::Udp) => match &p.kind {
                ExprKind::Int(v) if *v <= 65535 => Some(*v as u16),
                ExprKind::Int(v) => {
                    self.err(
                        Diagnostic::error("FW0031", format!("port {v} is out of range"))
                            .primary(p.span, "ports are 0..=65535"),
                    );
                    return None;
                }
                _ => {
                    self.err(
                        Diagnostic::error("FW0070", "a test packet has one port, not a range")
                            .primary(p.span, "a range"),
                    );
                    return None;
                }
            },
            (None, L4::Tcp | L4::Udp) => {
                self.err(
                    Diagnostic::error(
                        "FW0070",
                        format!("a {} test packet needs a {which} port", proto.name()),
                    )
                    .primary(
                        ep.span,
                        format!("write `{}:PORT`", self.sm.snippet(ep.addr.span)),
                    ),
                );
                return None;
            }
            (Some(p), L4::Icmp) => {
                self.err(
                    Diagnostic::error("FW0070", "ICMP packets have no ports")
                        .primary(p.span, "remove the port")
                        .help("give the ICMP type with `type NAME` after the addresses"),
                );
                return None;
            }
            (None, L4::Icmp) => None,
        };
        Some((addr, port))
    }

    fn lower_test_line(&mut self, block: &str, l: &ast::TestLine) -> Option<TestCase> {
        let proto = l.packet.proto.0;
        let src = self.lower_endpoint(&l.packet.src, proto, "source");
        let dst = self.lower_endpoint(&l.packet.dst, proto, "destination");
        let (src, dst) = (src?, dst?);
        let mut pkt = Packet {
            proto: proto.number(),
            saddr: src.0,
            daddr: dst.0,
            sport: src.1.unwrap_or(0),
            dport: dst.1.unwrap_or(0),
            icmp_type: if proto == L4::Icmp { 8 } else { 0 },
            ..Packet::default()
        };
        let mut flags_given = false;
        let mut ok = true;
        for (opt, span) in &l.packet.opts {
            match opt {
                ast::PacketOpt::Iif(i) => pkt.iif = Some(i.name.clone()),
                ast::PacketOpt::Oif(i) => pkt.oif = Some(i.name.clone()),
                ast::PacketOpt::CtState(s) => match ct::from_name(&s.name) {
                    Some(b) => pkt.ct = b,
                    None => {
                        self.err(
                            Diagnostic::error(
                                "FW0038",
                                format!("unknown conntrack state `{}`", s.name),
                            )
                            .primary(
                                s.span,
                                "expected new, established, related, invalid or untracked",
                            ),
                        );
                        ok = false;
                    }
                },
                ast::PacketOpt::Mark(m) => match self.expr(m, &[]) {
                    Some(TV {
                        val: Some(Value::Int(v)),
                        ..
                    }) if v <= u64::from(u32::MAX) => pkt.mark = v as u32,
                    Some(_) => {
                        self.err(
                            Diagnostic::error(
                                "FW0070",
                                "a test packet's mark is one 32-bit number",
                            )
                            .primary(m.span, "not a 32-bit number"),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                ast::PacketOpt::Type(t) => {
                    if proto != L4::Icmp {
                        self.err(
                            Diagnostic::error("FW0070", "only ICMP packets have a type")
                                .primary(*span, "remove this, or make the packet `icmp`"),
                        );
                        ok = false;
                        continue;
                    }
                    match self.expr(t, &[]) {
                        Some(tv) => {
                            if self.expect(Class::IcmpType, &tv, t, "`type`") {
                                match tv.val.map(|v| v.elems(Field::IcmpType)) {
                                    Some(es) if es.len() == 1 => {
                                        pkt.icmp_type = es[0].bounds().0 as u8
                                    }
                                    _ => {
                                        self.err(
                                            Diagnostic::error(
                                                "FW0070",
                                                "a test packet has one ICMP type",
                                            )
                                            .primary(t.span, "not a single type"),
                                        );
                                        ok = false;
                                    }
                                }
                            } else {
                                ok = false;
                            }
                        }
                        None => ok = false,
                    }
                }
                ast::PacketOpt::Flags(fs) => {
                    if proto != L4::Tcp {
                        self.err(
                            Diagnostic::error("FW0070", "only TCP packets have flags")
                                .primary(*span, "remove this, or make the packet `tcp`"),
                        );
                        ok = false;
                        continue;
                    }
                    flags_given = true;
                    pkt.tcp_flags = 0;
                    for f in fs {
                        match tcpflags::from_name(&f.name) {
                            Some(b) => pkt.tcp_flags |= b,
                            None => {
                                self.err(
                                    Diagnostic::error(
                                        "FW0038",
                                        format!("unknown TCP flag `{}`", f.name),
                                    )
                                    .primary(f.span, "not a TCP flag"),
                                );
                                ok = false;
                            }
                        }
                    }
                }
            }
        }
        if proto == L4::Tcp && !flags_given {
            pkt.tcp_flags = if pkt.ct == ct::NEW {
                tcpflags::SYN
            } else {
                tcpflags::ACK
            };
        }
        let expect_as = match &l.expect_as {
            None => None,
            Some((s, d)) => {
                let s = self.lower_endpoint_loose(s);
                let d = self.lower_endpoint_loose(d);
                Some((s?.0, s?.1, d?.0, d?.1))
            }
        };
        if !ok {
            return None;
        }
        Some(TestCase {
            block: block.to_string(),
            span: l.span,
            path: match l.path.0 {
                ast::PathKind::Input => IPath::Input,
                ast::PathKind::Forward => IPath::Forward,
                ast::PathKind::Output => IPath::Output,
            },
            packet: pkt,
            expect: l.expect.0,
            expect_as,
        })
    }

    fn lower_endpoint_loose(&mut self, ep: &ast::Endpoint) -> Option<(u32, Option<u16>)> {
        let a = match &ep.addr.kind {
            ExprKind::Ipv4(a) => ip_u32(*a),
            _ => match self.expr(&ep.addr, &[]) {
                Some(TV {
                    val: Some(Value::Ip(a)),
                    ..
                }) => a,
                _ => {
                    self.err(
                        Diagnostic::error("FW0070", "expected an address")
                            .primary(ep.addr.span, "not an address"),
                    );
                    return None;
                }
            },
        };
        let p = match &ep.port {
            Some(Expr {
                kind: ExprKind::Int(v),
                ..
            }) if *v <= 65535 => Some(*v as u16),
            Some(p) => {
                self.err(
                    Diagnostic::error("FW0070", "expected one port")
                        .primary(p.span, "not a single port"),
                );
                return None;
            }
            None => None,
        };
        Some((a, p))
    }
}

fn collect_calls<'k>(k: &'k StmtKind, out: &mut Vec<&'k ast::Call>) {
    match k {
        StmtKind::Jump(c) | StmtKind::Goto(c) => out.push(c),
        StmtKind::Vmap { arms, .. } => {
            for a in arms {
                collect_calls(&a.verdict.kind, out);
            }
        }
        _ => {}
    }
}

fn stmt_terminates(k: &StmtKind) -> bool {
    matches!(
        k,
        StmtKind::Accept
            | StmtKind::Drop
            | StmtKind::Reject(_)
            | StmtKind::Return
            | StmtKind::Goto(_)
            | StmtKind::Queue { .. }
            | StmtKind::Snat { .. }
            | StmtKind::Dnat { .. }
            | StmtKind::Masquerade { .. }
            | StmtKind::Redirect { .. }
    )
}

/// Where a statement may appear: Ok, or why not.
fn stmt_allowed(k: &StmtKind, table: Table, hook: Hook) -> Result<(), String> {
    use Hook::*;
    let need_nat = |hooks: &[Hook], what: &str| -> Result<(), String> {
        if table != Table::Nat {
            return Err(format!("{what} only works in the `nat` table"));
        }
        if !hooks.contains(&hook) {
            let hs: Vec<&str> = hooks.iter().map(|h| h.name()).collect();
            return Err(format!("{what} only works in nat {}", hs.join(" or ")));
        }
        Ok(())
    };
    match k {
        StmtKind::Notrack => {
            if table == Table::Raw {
                Ok(())
            } else {
                Err("`notrack` must run before connection tracking, in the `raw` table".into())
            }
        }
        StmtKind::Snat { .. } => need_nat(&[Postrouting, Input], "source NAT"),
        StmtKind::Dnat { .. } => need_nat(&[Prerouting, Output], "destination NAT"),
        StmtKind::Masquerade { .. } => need_nat(&[Postrouting], "masquerading"),
        StmtKind::Redirect { .. } => need_nat(&[Prerouting, Output], "redirect"),
        StmtKind::Reject(_) => {
            if matches!(hook, Input | Forward | Output) {
                Ok(())
            } else {
                Err("`reject` is only valid on the input, forward and output hooks".into())
            }
        }
        StmtKind::TtlSet(_) => {
            if table == Table::Mangle {
                Ok(())
            } else {
                Err("changing the TTL is only allowed in the `mangle` table".into())
            }
        }
        _ => Ok(()),
    }
}

fn article(t: &Ty) -> String {
    let s = t.to_string();
    let vowel = s.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} `{s}`", if vowel { "an" } else { "a" })
}

fn proto_label(p: u8) -> String {
    match proto_name(p) {
        Some(n) => format!("`{n}`"),
        None => format!("protocol {p}"),
    }
}

fn signature(decl: &ChainDecl, params: &[(String, Option<Ty>)]) -> String {
    let ps: Vec<String> = params
        .iter()
        .map(|(n, t)| {
            format!(
                "{n}: {}",
                t.as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into())
            )
        })
        .collect();
    format!("{}({})", decl.name.name, ps.join(", "))
}

// ------------------------------------------------------------------------ lowering

/// A subchain instance waiting to be lowered: its id, declaration and argument values.
type Pending<'a> = (ChainId, &'a ChainDecl, Vec<(String, Value)>);

/// Adds `ip protocol P` to a rule's predicates unless they already fix protocol `P` (a port
/// or ICMP match implies its protocol).
fn need_proto(preds: &mut Vec<Pred>, have: &mut Option<u8>, p: u8) {
    if *have != Some(p) {
        preds.push(Pred::Field {
            field: Field::Proto,
            neg: false,
            op: Operand::One(Elem::Exact(p.into())),
        });
        *have = Some(p);
    }
}

struct Lowerer<'c, 'a> {
    ck: &'c mut Checker<'a>,
    sm: &'a SourceMap,
    chains: Vec<Chain>,
    rule_locs: Vec<Loc>,
    instances: HashMap<(String, Vec<String>), ChainId>,
    work: Vec<Pending<'a>>,
}

impl<'c, 'a> Lowerer<'c, 'a> {
    fn loc(&self, s: Span) -> Loc {
        let (line, _) = self.sm.get(s.file).line_col(s.start as usize);
        Loc {
            file: s.file.0,
            start: s.start,
            end: s.end,
            line: line as u32,
        }
    }

    fn value(&mut self, e: &Expr, args: &[(String, Value)]) -> Option<Value> {
        match &e.kind {
            ExprKind::Var(n) => {
                if let Some((_, v)) = args.iter().find(|(a, _)| a == n) {
                    return Some(v.clone());
                }
                self.ck
                    .define_value(n, e.span)
                    .flatten()
                    .and_then(|tv| tv.val)
            }
            ExprKind::Set(elems) => {
                let mut out = Vec::new();
                for el in elems {
                    self.value(el, args)?.flatten_into(&mut out);
                }
                Some(Value::Set(out))
            }
            _ => {
                let scope: Vec<(String, Option<Ty>)> = vec![];
                self.ck.expr(e, &scope).and_then(|tv| tv.val)
            }
        }
    }

    fn instance(&mut self, call: &ast::Call, args: &[(String, Value)]) -> Option<ChainId> {
        let decl = self.ck.subchains.get(call.name.name.as_str()).copied()?;
        let params = self
            .ck
            .sub_params
            .get(call.name.name.as_str())
            .cloned()
            .unwrap_or_default();
        let mut vals = Vec::new();
        for ((pname, _), a) in params.iter().zip(&call.args) {
            vals.push((pname.clone(), self.value(a, args)?));
        }
        let key = (
            decl.name.name.clone(),
            vals.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>(),
        );
        if let Some(id) = self.instances.get(&key) {
            return Some(*id);
        }
        let id = ChainId(self.chains.len() as u32);
        self.chains.push(Chain {
            name: decl.name.name.clone(),
            kind: ChainKind::Sub {
                args: key.1.clone(),
            },
            rules: vec![],
            loc: self.loc(decl.head_span),
        });
        self.instances.insert(key, id);
        self.work.push((id, decl, vals));
        Some(id)
    }

    fn lower_rules(
        &mut self,
        decl: &'a ChainDecl,
        args: &[(String, Value)],
        table: Option<Table>,
    ) -> Vec<Rule> {
        let mut out = Vec::new();
        for r in &decl.rules {
            if let Some(rule) = self.lower_rule(r, args, table) {
                out.push(rule);
            }
        }
        out
    }

    fn lower_rule(
        &mut self,
        r: &ast::Rule,
        args: &[(String, Value)],
        _table: Option<Table>,
    ) -> Option<Rule> {
        let (mut preds, mut have_proto) = self.lower_preds(&r.matches, args)?;
        let mut stmts = Vec::new();
        for s in &r.stmts {
            if let StmtKind::Vmap { sel, .. } = &s.kind {
                match sel {
                    Selector::Port(l4, _) => need_proto(&mut preds, &mut have_proto, l4.number()),
                    Selector::IcmpType => need_proto(&mut preds, &mut have_proto, 1),
                    _ => {}
                }
            }
            let st = self.lower_stmt(&s.kind, args)?;
            let term = st.is_terminal();
            stmts.push(st);
            if term {
                break; // later statements were reported as unreachable (FW0061)
            }
        }
        let id = RuleId(self.rule_locs.len() as u32);
        self.rule_locs.push(self.loc(r.span));
        Some(Rule { id, preds, stmts })
    }

    /// The predicates of a rule's matches (the protocol a port or ICMP match implies first),
    /// and the protocol they fix, if one.
    fn lower_preds(
        &mut self,
        matches: &[ast::Match],
        args: &[(String, Value)],
    ) -> Option<(Vec<Pred>, Option<u8>)> {
        let mut preds: Vec<Pred> = Vec::new();
        let mut have_proto: Option<u8> = None;
        for m in matches {
            match &m.kind {
                MatchKind::Cmp { sel, value, .. } => {
                    match sel {
                        Selector::Port(l4, _) => {
                            need_proto(&mut preds, &mut have_proto, l4.number())
                        }
                        Selector::IcmpType => need_proto(&mut preds, &mut have_proto, 1),
                        _ => {}
                    }
                    let v = self.value(value, args)?;
                    match sel {
                        Selector::Iif | Selector::Oif => {
                            let mut flat = Vec::new();
                            v.flatten_into(&mut flat);
                            let names = flat
                                .iter()
                                .map(|x| match x {
                                    Value::Name(n) | Value::Str(n) => IfName::parse(n),
                                    o => IfName::parse(&o.to_string()),
                                })
                                .collect();
                            preds.push(Pred::Iface {
                                dir: if *sel == Selector::Iif {
                                    IfDir::In
                                } else {
                                    IfDir::Out
                                },
                                neg: m.negated,
                                names,
                            });
                        }
                        _ => {
                            let field = selector_field(*sel)?;
                            let elems = v.elems(field);
                            let op = match (&v, elems.len()) {
                                (Value::Set(_), _) => Operand::Set(elems),
                                (_, 1) => Operand::One(elems.into_iter().next()?),
                                _ => Operand::Set(elems),
                            };
                            if field == Field::Proto && !m.negated {
                                if let Operand::One(Elem::Exact(p)) = op {
                                    if have_proto == Some(p as u8) {
                                        continue;
                                    }
                                    have_proto = Some(p as u8);
                                }
                            }
                            preds.push(Pred::Field {
                                field,
                                neg: m.negated,
                                op,
                            });
                        }
                    }
                }
                MatchKind::Proto(l4) => need_proto(&mut preds, &mut have_proto, l4.number()),
                MatchKind::TcpFlags { flags, mask } => {
                    need_proto(&mut preds, &mut have_proto, 6);
                    let bits = |v: &[ast::Ident]| {
                        v.iter()
                            .filter_map(|f| tcpflags::from_name(&f.name))
                            .fold(0u8, |a, b| a | b)
                    };
                    let value = bits(flags);
                    let mask = mask.as_ref().map(|m| bits(m)).unwrap_or(value);
                    preds.push(Pred::TcpFlags {
                        neg: m.negated,
                        mask,
                        value: value & mask,
                    });
                }
                MatchKind::CtState(states) => {
                    let mask = states
                        .iter()
                        .filter_map(|s| ct::from_name(&s.name))
                        .fold(0, |a, b| a | b);
                    preds.push(Pred::CtState {
                        neg: m.negated,
                        mask,
                    });
                }
                MatchKind::Statistic(p) => {
                    let p = match self.value(p, args)? {
                        Value::Float(f) => f,
                        Value::Int(i) => i as f64,
                        _ => return None,
                    };
                    preds.push(Pred::Statistic { p });
                }
                MatchKind::Limit { rate, burst } => {
                    let Value::Rate(n, secs) = self.value(rate, args)? else {
                        return None;
                    };
                    let burst = match burst {
                        Some(b) => match self.value(b, args)? {
                            Value::Int(i) => i as u32,
                            _ => return None,
                        },
                        None => 5, // iptables' and nft's default burst
                    };
                    preds.push(Pred::Limit {
                        neg: m.negated,
                        rate: n,
                        per_secs: secs,
                        burst,
                    });
                }
                MatchKind::Ip6 => return None,
            }
        }
        Some((preds, have_proto))
    }

    fn nat_range(
        &mut self,
        to: Option<&ast::NatTo>,
        args: &[(String, Value)],
        random: bool,
        persistent: bool,
    ) -> Option<NatRange> {
        let mut r = NatRange {
            addr: None,
            ports: None,
            random,
            persistent,
        };
        if let Some(to) = to {
            if let Some(a) = &to.addr {
                r.addr = match self.value(a, args)? {
                    Value::Ip(x) => Some((x, x)),
                    Value::IpRange(x, y) => Some((x, y)),
                    _ => return None,
                };
            }
            if let Some(p) = &to.ports {
                r.ports = match self.value(p, args)? {
                    Value::Int(x) => Some((x as u16, x as u16)),
                    Value::IntRange(x, y) => Some((x as u16, y as u16)),
                    _ => return None,
                };
            }
        }
        Some(r)
    }

    fn lower_stmt(&mut self, k: &StmtKind, args: &[(String, Value)]) -> Option<Stmt> {
        Some(match k {
            StmtKind::Accept => Stmt::Accept,
            StmtKind::Drop => Stmt::Drop,
            StmtKind::Reject(w) => Stmt::Reject(match w {
                None => RejectKind::IcmpUnreach(3),
                Some(ast::RejectWith::Named(n)) if n.name == "tcp-reset" => RejectKind::TcpReset,
                Some(ast::RejectWith::Named(n)) | Some(ast::RejectWith::Icmp(n)) => {
                    RejectKind::IcmpUnreach(reject_code(&n.name)?)
                }
            }),
            StmtKind::Return => Stmt::Return,
            StmtKind::Jump(c) => Stmt::Jump(self.instance(c, args)?),
            StmtKind::Goto(c) => Stmt::Goto(self.instance(c, args)?),
            StmtKind::Queue { num, bypass } => Stmt::Queue {
                num: match num {
                    Some(n) => match self.value(n, args)? {
                        Value::Int(i) => i as u16,
                        _ => return None,
                    },
                    None => 0,
                },
                bypass: *bypass,
            },
            StmtKind::Counter => Stmt::Counter,
            StmtKind::Log { level, prefix } => Stmt::Log {
                level: level.as_ref().and_then(|l| log_level(&l.name)).unwrap_or(4),
                prefix: match prefix {
                    Some(p) => match self.value(p, args)? {
                        Value::Str(s) => s,
                        _ => return None,
                    },
                    None => String::new(),
                },
            },
            StmtKind::Audit => Stmt::Audit,
            StmtKind::MarkSet(v) => match self.value(v, args)? {
                Value::Int(i) => Stmt::MarkSet(i as u32),
                _ => return None,
            },
            StmtKind::TtlSet(v) => match self.value(v, args)? {
                Value::Int(i) => Stmt::TtlSet(i as u8),
                _ => return None,
            },
            StmtKind::Notrack => Stmt::Notrack,
            StmtKind::Snat {
                to,
                random,
                persistent,
            } => Stmt::Snat(self.nat_range(Some(to), args, *random, *persistent)?),
            StmtKind::Dnat {
                to,
                random,
                persistent,
            } => Stmt::Dnat(self.nat_range(Some(to), args, *random, *persistent)?),
            StmtKind::Masquerade { to, random } => {
                Stmt::Masquerade(self.nat_range(to.as_ref(), args, *random, false)?)
            }
            StmtKind::Redirect { to } => {
                Stmt::Redirect(self.nat_range(to.as_ref(), args, false, false)?)
            }
            StmtKind::Vmap { sel, arms, .. } => {
                let key = match sel {
                    Selector::Iif => VmapKey::Iface(IfDir::In),
                    Selector::Oif => VmapKey::Iface(IfDir::Out),
                    s => VmapKey::Field(selector_field(*s)?),
                };
                let mut out = Vec::new();
                for a in arms {
                    let v = self.value(&a.key, args)?;
                    let verdict = self.lower_stmt(&a.verdict.kind, args)?;
                    match &key {
                        VmapKey::Field(f) => {
                            for e in v.elems(*f) {
                                out.push(VmapArm {
                                    key: VmapArmKey::Num(e),
                                    verdict: verdict.clone(),
                                });
                            }
                        }
                        VmapKey::Iface(_) => {
                            let mut flat = Vec::new();
                            v.flatten_into(&mut flat);
                            for x in flat {
                                let n = match x {
                                    Value::Name(n) | Value::Str(n) => n,
                                    o => o.to_string(),
                                };
                                out.push(VmapArm {
                                    key: VmapArmKey::Iface(IfName::parse(&n)),
                                    verdict: verdict.clone(),
                                });
                            }
                        }
                    }
                }
                Stmt::Vmap { key, arms: out }
            }
        })
    }

    fn run(mut self) -> Program {
        let mut hooks: [Vec<HookEntry>; 5] = Default::default();
        let bases: Vec<(Table, Hook, &'a ChainDecl)> = self
            .ck
            .bases
            .iter()
            .map(|b| (b.table, b.hook, b.decl))
            .collect();
        for (table, hook, decl) in bases {
            let id = ChainId(self.chains.len() as u32);
            self.chains.push(Chain {
                name: hook.name().to_string(),
                kind: ChainKind::Base {
                    table,
                    hook,
                    policy: match decl.policy.map(|p| p.0) {
                        Some(ast::PolicyKind::Drop) => Policy::Drop,
                        _ => Policy::Accept,
                    },
                },
                rules: vec![],
                loc: self.loc(decl.head_span),
            });
            let rules = self.lower_rules(decl, &[], Some(table));
            self.chains[id.0 as usize].rules = rules;
            hooks[hook.index()].push(HookEntry {
                priority: table.priority(hook),
                table,
                chain: id,
            });
        }
        while let Some((id, decl, args)) = self.work.pop() {
            let rules = self.lower_rules(decl, &args, None);
            self.chains[id.0 as usize].rules = rules;
        }
        for h in hooks.iter_mut() {
            h.sort_by_key(|e| e.priority);
        }
        let mut services = Vec::new();
        for s in self.ck.services.clone() {
            let mut svc = Service {
                name: s.name.name.clone(),
                proto: 6,
                vip: 0,
                port: 0,
                scheduler: "wlc".into(),
                persistent: None,
                reals: vec![],
                loc: self.loc(s.span),
            };
            for e in &s.entries {
                match e {
                    ast::ServiceEntry::Virtual {
                        proto, addr, port, ..
                    } => {
                        svc.proto = proto.number();
                        if let Some(Value::Ip(a)) = self.value(addr, &[]) {
                            svc.vip = a;
                        }
                        if let Some(Value::Int(p)) = self.value(port, &[]) {
                            svc.port = p as u16;
                        }
                    }
                    ast::ServiceEntry::Scheduler(n) => svc.scheduler = n.name.clone(),
                    ast::ServiceEntry::Real {
                        addr,
                        port,
                        weight,
                        method,
                        ..
                    } => {
                        let addr = match self.value(addr, &[]) {
                            Some(Value::Ip(a)) => a,
                            _ => continue,
                        };
                        let port = match self.value(port, &[]) {
                            Some(Value::Int(p)) => p as u16,
                            _ => continue,
                        };
                        let weight = match weight.as_ref().and_then(|w| self.value(w, &[])) {
                            Some(Value::Int(w)) => w as u32,
                            _ => 1,
                        };
                        let forward = match method.as_ref().map(|m| m.name.as_str()) {
                            Some("nat") => Forwarding::Nat,
                            Some("tunnel") => Forwarding::Tunnel,
                            _ => Forwarding::Dr, // ipvsadm's default (-g)
                        };
                        svc.reals.push(RealServer {
                            addr,
                            port,
                            weight,
                            forward,
                        });
                    }
                    ast::ServiceEntry::Persistent { timeout, .. } => {
                        svc.persistent =
                            Some(match timeout.as_ref().and_then(|t| self.value(t, &[])) {
                                Some(Value::Int(t)) => t as u32,
                                _ => 300,
                            });
                    }
                }
            }
            services.push(svc);
        }
        let mut interfaces = Vec::new();
        for i in self.ck.interfaces.clone() {
            let addrs = i
                .addrs
                .iter()
                .filter_map(|a| match self.value(a, &[]) {
                    Some(Value::Ip(x)) => Some(x),
                    _ => None,
                })
                .collect();
            interfaces.push(Interface {
                name: i.name.name.clone(),
                addrs,
            });
        }
        let files = self.sm.files().map(|(_, f)| f.name.clone()).collect();
        Program {
            chains: self.chains,
            hooks,
            rule_locs: self.rule_locs,
            files,
            services,
            interfaces,
        }
    }
}

/// Turns a packet query (`fwc explain`) into a path and a packet, with the program's defines
/// in scope for `$variables`.
pub fn lower_query(
    loaded: &Loaded,
    q: &ast::PacketQuery,
) -> Result<(IPath, Packet), Vec<Diagnostic>> {
    let mut ck = new_checker(loaded);
    ck.collect(&loaded.files);
    ck.diags.clear();
    let line = ast::TestLine {
        path: q.path,
        packet: q.packet.clone(),
        expect: (ast::VerdictKw::Accept, q.path.1),
        expect_as: None,
        span: q.packet.span,
    };
    match ck.lower_test_line("", &line) {
        Some(tc) if ck.diags.is_empty() => Ok((tc.path, tc.packet)),
        _ => Err(ck.diags),
    }
}

fn new_checker(loaded: &Loaded) -> Checker<'_> {
    Checker {
        sm: &loaded.sm,
        diags: vec![],
        defines: HashMap::new(),
        define_memo: HashMap::new(),
        define_stack: vec![],
        subchains: HashMap::new(),
        used_defines: HashSet::new(),
        sub_params: HashMap::new(),
        bases: vec![],
        services: vec![],
        interfaces: vec![],
        tests: vec![],
        asserts: vec![],
    }
}

/// Each define's type and value as the checker infers them, by name (for editors' hovers;
/// a define with errors has none).
pub fn define_types(loaded: &Loaded) -> HashMap<String, (String, Option<String>)> {
    let mut ck = new_checker(loaded);
    ck.collect(&loaded.files);
    let names: Vec<(String, Span)> = ck
        .defines
        .values()
        .map(|d| (d.name.name.clone(), d.name.span))
        .collect();
    names
        .into_iter()
        .filter_map(|(n, sp)| {
            let tv = ck.define_value(&n, sp).flatten()?;
            Some((n, (tv.ty.to_string(), tv.val.map(|v| v.to_string()))))
        })
        .collect()
}

/// Checks the loaded program; lowers it when there is no error.
pub fn check(loaded: &Loaded) -> (Option<Checked>, Vec<Diagnostic>) {
    let mut ck = new_checker(loaded);
    ck.collect(&loaded.files);
    // defines are checked where declared, even when unused
    let mut defs: Vec<&DefineItem> = ck.defines.values().copied().collect();
    defs.sort_by_key(|d| (d.span.file, d.span.start));
    for d in defs {
        ck.define_value(&d.name.name, d.name.span);
    }
    ck.check_bodies();
    // assert bodies are not proven yet, but their matches are checked like a rule's
    for a in ck.asserts.clone() {
        for l in &a.lines {
            let r = ast::Rule {
                matches: l.matches.clone(),
                stmts: vec![],
                span: l.span,
            };
            ck.check_rule(&r, &[]);
        }
    }
    // lints about the program's shape, once it is otherwise sound
    if !ck.has_errors() && !loaded.diags.iter().any(|d| d.severity == Severity::Error) {
        ck.check_unused();
    }
    let acyclic = ck.check_cycles();
    if acyclic {
        ck.check_legality();
    }
    ck.check_services();
    let tests = ck.lower_tests();
    let asserts: Vec<AssertInfo> = ck
        .asserts
        .iter()
        .map(|a| AssertInfo {
            name: a.name.clone(),
            span: a.span,
            lines: vec![],
        })
        .collect();
    if ck.has_errors() || loaded.diags.iter().any(|d| d.severity == Severity::Error) {
        let diags = std::mem::take(&mut ck.diags);
        return (None, diags);
    }
    let sm = ck.sm;
    let mut lw = Lowerer {
        ck: &mut ck,
        sm,
        chains: vec![],
        rule_locs: vec![],
        instances: HashMap::new(),
        work: vec![],
    };
    let mut asserts = asserts;
    for (info, block) in asserts.iter_mut().zip(lw.ck.asserts.clone()) {
        info.lines = block
            .lines
            .iter()
            .filter_map(|l| {
                let (preds, _) = lw.lower_preds(&l.matches, &[])?;
                Some(AssertCase {
                    span: l.span,
                    always: l.quant == ast::Quantifier::Always,
                    path: match l.path.0 {
                        ast::PathKind::Input => IPath::Input,
                        ast::PathKind::Forward => IPath::Forward,
                        ast::PathKind::Output => IPath::Output,
                    },
                    verdict: l.verdict.0,
                    preds,
                })
            })
            .collect();
    }
    let program = lw.run();
    let diags = std::mem::take(&mut ck.diags);
    (
        Some(Checked {
            program,
            tests,
            asserts,
        }),
        diags,
    )
}
