//! The JIT classifier: a fw program compiled by Cranelift to native code.
//!
//! * `parse` reads the raw IPv4 packet into the [`Ctx`] with a length check before every
//!   load; it accepts and rejects exactly the packets [`Packet::from_raw`] does.
//! * each chain (base chain or subchain instance) becomes one function `fn(*mut Ctx) -> u32`
//!   returning a [`verdict`] code; `jump` is a call, `goto` a call whose result is returned.
//! * sets and verdict maps become comparisons (a few intervals) or an inline binary search
//!   over a sorted interval array; a verdict map is one lookup then one branch.
//! * long runs of plain 5-tuple rules are looked up in a decision tree ([`dtree`]) instead of
//!   rule by rule (`Options::decision_trees`).
//! * state and randomness (`limit`, `statistic`), `log`, and NAT call back into Rust through
//!   the [`Env`] the driver passes in the context.
//!
//! The reference interpreter (`fwc_compiler::interp`) is the specification: for every packet
//! the JIT gives the same fate, deciding rule and rewritten headers (tested differentially).

pub mod dtree;

use cranelift_codegen::ir::{
    self, condcodes::IntCC, types, AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature,
    UserFuncName, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Switch, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use fwc_compiler::analysis::IntervalSet;
use fwc_compiler::interp::{self, Fate, InterpError, Meta, Oracle, Packet, PathKind};
use fwc_compiler::ir::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::offset_of;

/// Codes a chain function returns.
pub mod verdict {
    /// fell off the end of a subchain, or `return`
    pub const CONT: u32 = 0;
    /// accepted by this table
    pub const ACCEPT: u32 = 1;
    pub const DROP: u32 = 2;
    /// `Ctx::aux` holds the ICMP code, or 256 for a TCP reset
    pub const REJECT: u32 = 3;
    /// `Ctx::aux` holds the queue number, plus 1 << 16 for bypass
    pub const QUEUE: u32 = 4;
    /// a callback failed; the reason is in the `Env`
    pub const ERROR: u32 = 5;
    /// from a piece of a long chain: leave the chain (`return`, or a `goto` that came back)
    pub const LEAVE: u32 = 6;
    /// from a path's passive entry: the packet is not IPv4 (no chain ran)
    pub const NOT_IPV4: u32 = 7;
}

/// Chains longer than this (counting a decision-tree run as one rule per 16) are compiled as
/// several functions: Cranelift's cost grows faster than linearly with a function's size.
pub const PIECE: usize = 1024;

/// `Ctx::rule` when no rule decided (a policy did).
pub const NO_RULE: u32 = u32::MAX;

/// What the generated code reads and writes. The driver fills the packet pointer and the
/// metadata, `parse` the header fields; chain code updates mark, ct state, ttl and, through
/// the NAT callback, addresses and ports.
#[repr(C)]
pub struct Ctx {
    pub data: *const u8,
    pub len: u32,
    pub proto: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u32,
    pub dport: u32,
    pub icmp_type: u32,
    pub icmp_code: u32,
    pub tcp_flags: u32,
    /// 1 when the transport header is there in full
    pub l4: u32,
    pub ttl: u32,
    pub mark: u32,
    pub ct: u32,
    /// the deciding rule of the last chain run, or [`NO_RULE`]
    pub rule: u32,
    pub aux: u32,
    /// the rule whose counters the driver bumps after the chain returns, or [`NO_RULE`]: a
    /// tree run ending in a bare verdict leaves its deciding rule here instead of bumping
    /// the counters itself (see `run_base`)
    pub deferred: u32,
    /// interface-pattern bit sets of the packet's input and output interfaces
    pub iif_bits: *const u64,
    pub oif_bits: *const u64,
    /// per-rule counters, indexed by rule id: (packets, bytes) side by side, one cache line
    /// touched per bump
    pub counters: *mut [u64; 2],
    /// per-chain (packets, bytes) decided by the chain's policy, indexed by chain id (a
    /// path's passive entry counts them)
    pub policy_counts: *mut (u64, u64),
    /// the callbacks' environment (an `Env`), valid during one classification; null when
    /// the program has no callback (`JitProgram::callbacks`), whose code then never reads it
    pub env: *mut std::ffi::c_void,
}

/// What a datapath plugs in around the compiled tables. The defaults give the reference
/// interpreter's behaviour (the packet's given conntrack state; NAT as `interp::apply_nat`).
pub trait Hooks {
    /// True when every method is its default below (`nat` aside): conntrack, the NAT points,
    /// routing and registered functions change nothing and no handler takes a queued packet
    /// back. The driver then runs the base chains alone, without the header copies the
    /// other steps need.
    fn passive(&self) -> bool {
        false
    }

    /// Connection tracking, between the raw table (-300) and mangle (-150) at prerouting and
    /// output: the `ct state` bit the rules will see. `ct` is the state so far (UNTRACKED
    /// after a `notrack`).
    fn conntrack(&mut self, hook: Hook, hdr: &Packet, ct: u8) -> u8 {
        let _ = (hook, hdr);
        ct
    }

    /// A NAT statement fired on a connection's first packet: rewrite the headers.
    fn nat(
        &mut self,
        program: &Program,
        rule: RuleId,
        stmt: &Stmt,
        hdr: &mut Packet,
        path: PathKind,
    ) -> Result<(), InterpError> {
        interp::apply_nat(program, stmt, hdr, rule, path)
    }

    /// Routing, after prerouting: the path the packet goes on with (a destination NAT may
    /// have made a packet for this host one to forward, or the reverse) and its output
    /// interface from then on (`hdr.oif` is the one it came with).
    fn route(&mut self, path: PathKind, hdr: &Packet) -> (PathKind, Option<String>) {
        (path, hdr.oif.clone())
    }

    /// A NAT point (the nat table's place at `hook`) that the nat chain does not run for
    /// (not a first packet, or no nat chain there): translate as the connection says.
    fn nat_point(&mut self, hook: Hook, hdr: &mut Packet) {
        let _ = (hook, hdr);
    }

    /// A function registered with [`JitProgram::register`] (by its `id`), reached at its
    /// hook and priority. It may change the addresses, ports and mark in `hdr`.
    fn call(&mut self, id: u32, hook: Hook, hdr: &mut Packet) -> HookVerdict {
        let _ = (id, hook, hdr);
        HookVerdict::Accept
    }

    /// A packet queued to `num` at `hook` (`NF_QUEUE`, by a rule or a function). `None`
    /// hands it out of the classification (`Fate::Queue`: the interpreter's answer, and a
    /// datapath's whose queues are the kernel's); `Some(verdict)` reinjects it as a queue
    /// handler decided: accept goes on after the step that queued it, repeat runs that step
    /// again, stop ends the hook, drop, stolen and another queue as they say.
    fn queue(
        &mut self,
        num: u16,
        bypass: bool,
        hook: Hook,
        hdr: &mut Packet,
    ) -> Option<HookVerdict> {
        let _ = (num, bypass, hook, hdr);
        None
    }
}

/// A hook function's verdict: netfilter's `NF_*` (SEMANTICS.md 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// on to the next function at this hook (`NF_ACCEPT`)
    Accept,
    /// the packet ends here (`NF_DROP`)
    Drop,
    /// handed to queue `num`; `bypass`: on when nobody listens (`NF_QUEUE`)
    Queue { num: u16, bypass: bool },
    /// the function took the packet: nothing more happens to it (`NF_STOLEN`)
    Stolen,
    /// the same function again (`NF_REPEAT`), at most [`MAX_REPEATS`] times in a row;
    /// one more and the packet is dropped
    Repeat,
    /// accepted, skipping the functions left at this hook (`NF_STOP`)
    Stop,
}

/// How many `Repeat`s in a row a hook function may answer before the packet is dropped.
pub const MAX_REPEATS: u32 = 16;

/// A function registered at a hook with a priority (lower runs first; at equal priority the
/// compiled tables and the built-in points come first, then functions in registration
/// order, as `nf_register_net_hook` inserts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookFn {
    pub hook: Hook,
    pub priority: i32,
    pub id: u32,
}

/// One step of a hook: what runs there, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOp {
    /// a base chain of the program (index into `Program::hooks[hook]`)
    Table(usize),
    /// connection tracking (-200, prerouting and output): [`Hooks::conntrack`]
    Conntrack,
    /// the nat table's place when its chain does not run: [`Hooks::nat_point`]
    NatPoint,
    /// a registered function: [`Hooks::call`]
    Fn(u32),
}

/// The steps of every hook for `program` with the functions `registered`, in order.
fn hook_ops(program: &Program, registered: &[HookFn]) -> [Vec<HookOp>; 5] {
    Hook::ALL.map(|hook| {
        let mut ops: Vec<(i32, u8, HookOp)> = program.hooks[hook.index()]
            .iter()
            .enumerate()
            .map(|(k, e)| (e.priority, 0, HookOp::Table(k)))
            .collect();
        if matches!(hook, Hook::Prerouting | Hook::Output) {
            ops.push((fwc_compiler::ir::CONNTRACK_PRIORITY, 1, HookOp::Conntrack));
        }
        // netfilter's NAT has no place at `forward`
        if hook != Hook::Forward {
            ops.push((Table::Nat.priority(hook), 1, HookOp::NatPoint));
        }
        ops.extend(
            registered
                .iter()
                .filter(|f| f.hook == hook)
                .map(|f| (f.priority, 2, HookOp::Fn(f.id))),
        );
        // stable: functions of equal priority keep their registration order
        ops.sort_by_key(|&(prio, rank, _)| (prio, rank));
        ops.into_iter().map(|(_, _, op)| op).collect()
    })
}

/// The interpreter's behaviour.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn passive(&self) -> bool {
        true
    }
}

/// What callbacks need during one classification.
///
/// The driver and the callbacks (reached from generated code through `Ctx::env`) both hold
/// it by shared reference, never `&mut`: what either changes sits in a `Cell`/`RefCell`,
/// and the driver borrows those only between calls into generated code.
pub struct Env<'a> {
    program: &'a Program,
    oracle: RefCell<&'a mut dyn Oracle>,
    hooks: RefCell<&'a mut dyn Hooks>,
    path: Cell<PathKind>,
    stateful: &'a [(RuleId, Pred)],
    nat: &'a [(RuleId, Stmt)],
    /// (rule, index of the statement in it) of each `log`/`audit` call site
    log_sites: &'a [(RuleId, u32)],
    meta: &'a Meta,
    /// the output interface once routing after prerouting set it (`meta.oif` until then)
    routed_oif: &'a RefCell<Option<Option<String>>>,
    error: &'a RefCell<Option<InterpError>>,
    /// the `log` and `audit` statements that ran, in order: (rule, statement index)
    logs: &'a RefCell<Vec<(RuleId, u32)>>,
}

/// What a classification changes besides its context, kept by the program from packet to
/// packet ([`Env`] borrows it): building an `Env` is then a few pointer stores, with
/// nothing to allocate or drop per packet. Cleared at the start of each classification.
#[derive(Default)]
struct Cells {
    routed_oif: RefCell<Option<Option<String>>>,
    error: RefCell<Option<InterpError>>,
    logs: RefCell<Vec<(RuleId, u32)>>,
}

/// Compilation options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// look long runs of plain 5-tuple rules up in a decision tree
    pub decision_trees: bool,
    /// smallest run that gets a tree: below it, inline compares are faster (measured with
    /// `classify_loop`'s `FWC_MIN_RUN`, compares against the compiled walk, acl / fw / ipc:
    /// 96 rules 37 / 39 / 40 ns against 41 / 60 / 47; 128 rules 44 / 52 / 49 against
    /// 37 / 43 / 43; 256 rules 70 / 81 / 80 against 41 / 70 / 42)
    pub min_run: usize,
    /// keep the Cranelift IR text of every function (`fwc build --emit clif`)
    pub keep_clif: bool,
    /// longest piece of a chain compiled as one function (see [`PIECE`])
    pub piece: usize,
    /// inline subchains by the cost rule ([`INLINE_RULES`]); otherwise every `jump` and
    /// `goto` is a call
    pub inline: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            decision_trees: true,
            min_run: 128,
            keep_clif: false,
            piece: PIECE,
            inline: true,
        }
    }
}

#[derive(Debug)]
pub enum JitError {
    /// the host is not supported by Cranelift, or code generation failed
    Codegen(String),
    /// calls nest deeper than the interpreter allows
    TooDeep(usize),
}

impl std::fmt::Display for JitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JitError::Codegen(e) => write!(f, "code generation failed: {e}"),
            JitError::TooDeep(d) => {
                write!(f, "subchain calls nest {d} deep; at most 64 are allowed")
            }
        }
    }
}

impl std::error::Error for JitError {}

/// The result of classifying one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct JitOutcome {
    pub fate: Fate,
    /// the path the packet took (routing may change it after prerouting)
    pub path: PathKind,
    pub deciding_rule: Option<RuleId>,
    /// the headers as the packet leaves (or where it stopped)
    pub packet: Packet,
    /// the rules whose `log` or `audit` ran, in order
    pub logs: Vec<RuleId>,
    /// for each of them, which statement of the rule it was
    pub log_stmts: Vec<u32>,
}

impl Default for JitOutcome {
    /// An empty outcome to classify into ([`JitProgram::classify_into`]).
    fn default() -> JitOutcome {
        JitOutcome {
            fate: Fate::Accept,
            path: PathKind::Input,
            deciding_rule: None,
            packet: Packet::default(),
            logs: Vec::new(),
            log_stmts: Vec::new(),
        }
    }
}

type ChainFn = unsafe extern "C" fn(*mut Ctx) -> u32;

/// The parser and the paths' passive entries: the context, the packet and its length in;
/// the parser answers 1 when the packet is IPv4 (else 0), an entry a verdict code.
type ParseFn = unsafe extern "C" fn(*mut Ctx, *const u8, u32) -> u32;

/// A compiled program, ready to classify packets.
pub struct JitProgram {
    program: Program,
    // the module owns the code; it is freed when the program is dropped
    _module: ModuleGuard,
    parse: ParseFn,
    chains: Vec<ChainFn>,
    patterns: Vec<IfName>,
    /// sorted interval arrays and decision trees the code points into (must not move)
    _data: Vec<Box<[u32]>>,
    // boxed: the code holds pointers to the trees, which must not move with the Vec
    #[allow(clippy::vec_box)]
    _trees: Vec<Box<dtree::Forest>>,
    stateful: Vec<(RuleId, Pred)>,
    nat: Vec<(RuleId, Stmt)>,
    log_sites: Vec<(RuleId, u32)>,
    /// (packets, bytes) by rule id
    counts: Vec<[u64; 2]>,
    /// the rule and packet length of the last deferred bump (`Ctx::deferred`), not yet in
    /// `counts`; ([`NO_RULE`], 0) for none
    pending: (u32, u32),
    /// (packets, bytes) that each chain's policy decided, by chain id (base chains only)
    policy_counts: Vec<(u64, u64)>,
    scratch: (Vec<u64>, Vec<u64>),
    cells: Cells,
    clif: Option<String>,
    /// functions registered at the hooks, and every hook's steps in order
    registered: Vec<HookFn>,
    ops: [Vec<HookOp>; 5],
    /// per path ([`path_index`]), the passive entry: parser and base chains in one call
    entries: [ParseFn; 3],
    /// how many rules the decision trees cover
    pub tree_rules: usize,
    /// machine code size in bytes
    pub code_size: usize,
}

// ------------------------------------------------------------------------------------------
// callbacks (the JIT boundary)

/// # Safety
/// `ctx` must point to the live `Ctx` of a classification whose `env` points to its `Env`.
unsafe fn env<'e>(ctx: *mut Ctx) -> &'e Env<'e> {
    // SAFETY: guaranteed by the caller (only generated code calls the callbacks, with the
    // ctx the driver passed it, whose env outlives the call); shared, as the driver's is.
    // The env is null only for a program without callback sites, whose code calls none
    // (every site registers in `stateful`, `log_sites` or `nat`, which `callbacks` reads).
    let env = unsafe { (*ctx).env };
    debug_assert!(
        !env.is_null(),
        "a callback from a program built without any"
    );
    unsafe { &*(env as *const Env<'e>) }
}

extern "C" fn cb_stateful(ctx: *mut Ctx, idx: u32) -> u32 {
    // SAFETY: called by generated code with the classification's ctx.
    let e = unsafe { env(ctx) };
    let Some((rule, pred)) = e.stateful.get(idx as usize) else {
        return 0;
    };
    let hit = match pred {
        Pred::Statistic { p } => e.oracle.borrow_mut().statistic(*rule, *p),
        other => e.oracle.borrow_mut().limit(*rule, other),
    };
    u32::from(hit)
}

extern "C" fn cb_log(ctx: *mut Ctx, site: u32) -> u32 {
    // SAFETY: called by generated code with the classification's ctx.
    let e = unsafe { env(ctx) };
    if let Some(&s) = e.log_sites.get(site as usize) {
        e.logs.borrow_mut().push(s);
    }
    0
}

/// Sets the header fields of `p` from the context (its interfaces stay as they are).
fn fill_packet(p: &mut Packet, c: &Ctx) {
    p.proto = c.proto as u8;
    p.saddr = c.saddr;
    p.daddr = c.daddr;
    p.sport = c.sport as u16;
    p.dport = c.dport as u16;
    p.icmp_type = c.icmp_type as u8;
    p.icmp_code = c.icmp_code as u8;
    p.tcp_flags = c.tcp_flags as u8;
    p.mark = c.mark;
    p.ct = c.ct as u8;
    p.ttl = c.ttl as u8;
    p.l4 = c.l4 != 0;
}

fn ctx_packet(c: &Ctx) -> Packet {
    let mut p = Packet::default();
    fill_packet(&mut p, c);
    p
}

/// Copies the headers a hook may change back into the context.
fn write_back(c: &mut Ctx, p: &Packet) {
    c.saddr = p.saddr;
    c.daddr = p.daddr;
    c.sport = p.sport.into();
    c.dport = p.dport.into();
}

extern "C" fn cb_nat(ctx: *mut Ctx, idx: u32) -> u32 {
    // SAFETY: called by generated code with the classification's ctx.
    let (e, c) = unsafe { (env(ctx), &mut *ctx) };
    let Some((rule, stmt)) = e.nat.get(idx as usize) else {
        return 0;
    };
    let mut p = ctx_packet(c);
    p.iif = e.meta.iif.clone();
    p.oif = e
        .routed_oif
        .borrow()
        .as_ref()
        .unwrap_or(&e.meta.oif)
        .clone();
    let done = e
        .hooks
        .borrow_mut()
        .nat(e.program, *rule, stmt, &mut p, e.path.get());
    match done {
        Ok(()) => {
            write_back(c, &p);
            1
        }
        Err(err) => {
            *e.error.borrow_mut() = Some(err);
            0
        }
    }
}

// ------------------------------------------------------------------------------------------
// code generation

struct Gen<'a> {
    program: &'a Program,
    ptr: ir::Type,
    chain_ids: Vec<FuncId>,
    /// per chain: the rule ranges of its pieces, and their function ids (empty when whole)
    pieces: Vec<Vec<(std::ops::Range<usize>, FuncId)>>,
    patterns: &'a HashMap<IfName, usize>,
    data: &'a mut Vec<Box<[u32]>>,
    #[allow(clippy::vec_box)]
    trees: &'a mut Vec<Box<dtree::Forest>>,
    stateful: &'a mut Vec<(RuleId, Pred)>,
    nat: &'a mut Vec<(RuleId, Stmt)>,
    log_sites: &'a mut Vec<(RuleId, u32)>,
    opts: Options,
    tree_rules: usize,
    /// how many `jump`/`goto`s name each chain (the inlining cost rule)
    call_sites: Vec<u32>,
    /// subchain bodies being inlined around the code emitted now
    inline_depth: u32,
    /// while emitting an action block shared by several rules of a decision-tree run: the
    /// deciding rule's id, from the forest's answer or the run's table (see [`shareable`]);
    /// counters and `Ctx::rule` use it instead of the rule's own
    dyn_rule: Option<Value>,
    /// while emitting a passive entry: the header fields kept in variables (context offset,
    /// variable) — a load of one reads its variable, a store defines it too, and a call out
    /// of the generated code (which may rewrite headers) reloads them all
    fields: Vec<(i32, Variable)>,
    /// while emitting a chain's body inside a passive entry: the block its verdict goes to
    /// (as the block's parameter) instead of a return
    ret_to: Option<ir::Block>,
    /// per chain: whether the passive entries emit its body in place (whole, and at most
    /// [`ENTRY_WEIGHT`]) rather than call it
    in_entry: Vec<bool>,
    /// the forests built so far, by (chain, run start in the chain), as indices into `trees`
    forests: Vec<((usize, usize), usize)>,
}

/// Subchains with at most this many rules are inlined at every call site; a subchain called
/// from one place only is inlined up to [`INLINE_ONCE_RULES`]; deeper than
/// [`INLINE_DEPTH`] nested inlinings, calls stay calls.
pub const INLINE_RULES: usize = 8;
pub const INLINE_ONCE_RULES: usize = 64;
pub const INLINE_DEPTH: u32 = 3;

/// Whether a rule's statements can run in an action block shared with other rules of a
/// decision-tree run: they use no constant but the rule id (which the shared block loads),
/// so no log site, NAT request, call or verdict map.
fn shareable(stmts: &[Stmt]) -> bool {
    let Some((last, init)) = stmts.split_last() else {
        return false;
    };
    init.iter().all(|s| {
        matches!(
            s,
            Stmt::Counter | Stmt::MarkSet(_) | Stmt::TtlSet(_) | Stmt::Notrack
        )
    }) && matches!(
        last,
        Stmt::Accept | Stmt::Drop | Stmt::Reject(_) | Stmt::Queue { .. } | Stmt::Return
    )
}

/// How many `jump`/`goto` statements name each chain.
fn call_sites(program: &Program) -> Vec<u32> {
    let mut n = vec![0u32; program.chains.len()];
    for r in program.chains.iter().flat_map(|c| &c.rules) {
        for s in &r.stmts {
            if let Stmt::Jump(t) | Stmt::Goto(t) = s {
                n[t.0 as usize] += 1;
            }
            if let Stmt::Vmap { arms, .. } = s {
                for a in arms {
                    if let Stmt::Jump(t) | Stmt::Goto(t) = &a.verdict {
                        n[t.0 as usize] += 1;
                    }
                }
            }
        }
    }
    n
}

macro_rules! off {
    ($f:ident) => {
        offset_of!(Ctx, $f) as i32
    };
}

/// Base chains of at most this weight (rules, a decision-tree run counting one per 16, as
/// for pieces) are emitted inside the passive entries that run them: a 1-rule program
/// classifies in 16.3 ns instead of 17.7, but the code is emitted twice (in the chain's
/// function too, for the general loop), and at 10K rules the gain was within the noise.
pub const ENTRY_WEIGHT: usize = 64;

/// The header fields the parser writes: what a passive entry keeps in variables for the
/// chain bodies it holds.
const PARSED_FIELDS: [i32; 10] = [
    off!(proto),
    off!(saddr),
    off!(daddr),
    off!(sport),
    off!(dport),
    off!(icmp_type),
    off!(icmp_code),
    off!(tcp_flags),
    off!(l4),
    off!(ttl),
];

fn trusted() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The field of the context a `Field` lives in.
fn field_offset(f: Field) -> i32 {
    match f {
        Field::Saddr => off!(saddr),
        Field::Daddr => off!(daddr),
        Field::Proto => off!(proto),
        Field::Sport => off!(sport),
        Field::Dport => off!(dport),
        Field::IcmpType => off!(icmp_type),
        Field::Mark => off!(mark),
    }
}

/// Sets with at most this many intervals are compared inline; larger ones are searched.
const INLINE_INTERVALS: usize = 4;

/// Sets of at least this many single values (no ranges) are looked up in a hash table (one
/// or two probes) rather than binary-searched (log2 n dependent loads).
pub const HASH_MIN_VALUES: usize = 32;

/// The multiplier of the sets' hash (Fibonacci hashing: the top bits of `v * K`).
const HASH_K: u32 = 0x9E37_79B1;

/// An open-addressing table (linear probing) of `values`, none equal to `empty`: a power of
/// two of at least twice their number, so every probe sequence reaches an empty slot. Returns
/// the table and its number of index bits.
fn hash_table(values: &[u32], empty: u32) -> (Box<[u32]>, u32) {
    let bits = (values.len() * 2)
        .next_power_of_two()
        .trailing_zeros()
        .max(1);
    let mask = (1usize << bits) - 1;
    let mut t = vec![empty; 1 << bits];
    for &v in values {
        let mut h = (v.wrapping_mul(HASH_K) >> (32 - bits)) as usize;
        while t[h] != empty && t[h] != v {
            h = (h + 1) & mask;
        }
        t[h] = v;
    }
    (t.into_boxed_slice(), bits)
}

/// A value outside the sorted set `values` (which cannot hold all 2^32).
fn missing_value(values: &[u32]) -> u32 {
    let mut want = 0u32;
    for &v in values {
        if v != want {
            break;
        }
        want += 1;
    }
    want
}

impl Gen<'_> {
    fn load32(&self, b: &mut FunctionBuilder, ctx: Value, off: i32) -> Value {
        match self.field_var(off) {
            Some(var) => b.use_var(var),
            None => b.ins().load(types::I32, trusted(), ctx, off),
        }
    }

    fn store32(&self, b: &mut FunctionBuilder, ctx: Value, off: i32, v: Value) {
        b.ins().store(trusted(), v, ctx, off);
        if let Some(var) = self.field_var(off) {
            b.def_var(var, v);
        }
    }

    /// The variable a header field is kept in, inside a passive entry.
    fn field_var(&self, off: i32) -> Option<Variable> {
        self.fields
            .iter()
            .find(|&&(o, _)| o == off)
            .map(|&(_, var)| var)
    }

    /// After a call out of the generated code: the header fields as the callee left them.
    fn reload_fields(&self, b: &mut FunctionBuilder, ctx: Value) {
        for &(o, var) in &self.fields {
            let v = b.ins().load(types::I32, trusted(), ctx, o);
            b.def_var(var, v);
        }
    }

    /// `ctx.rule = id`, or the id of the rule a shared action block runs for.
    fn store_rule(&self, b: &mut FunctionBuilder, ctx: Value, id: u32) {
        match self.dyn_rule {
            Some(v) => self.store32(b, ctx, off!(rule), v),
            None => self.store_imm32(b, ctx, off!(rule), id),
        }
    }

    fn store_imm32(&self, b: &mut FunctionBuilder, ctx: Value, off: i32, v: u32) {
        let c = b.ins().iconst(types::I32, i64::from(v));
        self.store32(b, ctx, off, c);
    }

    /// Whether the packet has the field (ports need TCP/UDP with a full header, the ICMP type
    /// ICMP with a full header): an i8 boolean, or `None` when always present.
    fn availability(&self, b: &mut FunctionBuilder, ctx: Value, f: Field) -> Option<Value> {
        match f {
            Field::Sport | Field::Dport => {
                let l4 = self.load32(b, ctx, off!(l4));
                let proto = self.load32(b, ctx, off!(proto));
                let t = icmp_u(b, IntCC::Equal, proto, 6);
                let u = icmp_u(b, IntCC::Equal, proto, 17);
                let tu = b.ins().bor(t, u);
                let has = icmp_u(b, IntCC::NotEqual, l4, 0);
                Some(b.ins().band(tu, has))
            }
            Field::IcmpType => {
                let l4 = self.load32(b, ctx, off!(l4));
                let proto = self.load32(b, ctx, off!(proto));
                let i = icmp_u(b, IntCC::Equal, proto, 1);
                let has = icmp_u(b, IntCC::NotEqual, l4, 0);
                Some(b.ins().band(i, has))
            }
            _ => None,
        }
    }

    /// `v` in the interval set (i8 boolean).
    fn contains(&mut self, b: &mut FunctionBuilder, v: Value, set: &IntervalSet) -> Value {
        if set.0.len() <= INLINE_INTERVALS {
            let mut acc: Option<Value> = None;
            for &(lo, hi) in &set.0 {
                let t = if lo == hi {
                    icmp_u(b, IntCC::Equal, v, i64::from(lo))
                } else {
                    // lo <= v <= hi  as one unsigned compare: v - lo <= hi - lo
                    let d = {
                        let c = c32(b, lo);
                        b.ins().isub(v, c)
                    };
                    icmp_u(b, IntCC::UnsignedLessThanOrEqual, d, i64::from(hi - lo))
                };
                acc = Some(match acc {
                    None => t,
                    Some(a) => b.ins().bor(a, t),
                });
            }
            return acc.unwrap_or_else(|| b.ins().iconst(types::I8, 0));
        }
        if set.0.len() >= HASH_MIN_VALUES && set.0.iter().all(|&(lo, hi)| lo == hi) {
            let values: Vec<u32> = set.0.iter().map(|&(v, _)| v).collect();
            return self.hash_contains(b, v, &values);
        }
        // binary search over [lo0, hi0, lo1, hi1, ...]: 1 on a hit, 0 on a miss
        let flat: Box<[u32]> = set.0.iter().flat_map(|&(l, h)| [l, h]).collect();
        let hit = self.interval_search(b, v, flat, 2, 0);
        b.ins().ireduce(types::I8, hit)
    }

    /// `v` in a set of single values (sorted, distinct), by a probe of a hash table the
    /// `JitProgram` owns (i8 boolean). Every index is masked to the table's size.
    fn hash_contains(&mut self, b: &mut FunctionBuilder, v: Value, values: &[u32]) -> Value {
        let empty = missing_value(values);
        let (table, bits) = hash_table(values, empty);
        let base = table.as_ptr() as i64;
        self.data.push(table);
        let mask = (1i64 << bits) - 1;
        let [probe, next, step, done] = std::array::from_fn(|_| b.create_block());
        b.append_block_param(probe, types::I32);
        b.append_block_param(done, types::I8);
        let k = c32(b, HASH_K);
        let hv = b.ins().imul(v, k);
        let h0 = b.ins().ushr_imm_u(hv, i64::from(32 - bits));
        b.ins().jump(probe, &[BlockArg::Value(h0)]);
        b.switch_to_block(probe);
        let h = b.block_params(probe)[0];
        let h64 = b.ins().uextend(self.ptr, h);
        let off = b.ins().ishl_imm_u(h64, 2);
        let tb = b.ins().iconst(self.ptr, base);
        let at = b.ins().iadd(tb, off);
        // in bounds: h <= mask, the table has mask + 1 words
        let slot = b.ins().load(types::I32, trusted(), at, 0);
        // an empty slot ends the probe (checked first: `v` may equal the empty marker)
        let is_empty = icmp_u(b, IntCC::Equal, slot, i64::from(empty));
        let no = b.ins().iconst(types::I8, 0);
        b.ins()
            .brif(is_empty, done, &[BlockArg::Value(no)], next, &[]);
        b.switch_to_block(next);
        let is_v = b.ins().icmp(IntCC::Equal, slot, v);
        let yes = b.ins().iconst(types::I8, 1);
        b.ins().brif(is_v, done, &[BlockArg::Value(yes)], step, &[]);
        b.switch_to_block(step);
        let h1 = b.ins().iadd_imm_u(h, 1);
        let h2 = b.ins().band_imm_u(h1, mask);
        b.ins().jump(probe, &[BlockArg::Value(h2)]);
        b.switch_to_block(done);
        b.block_params(done)[0]
    }

    fn iface_bit(&self, b: &mut FunctionBuilder, ctx: Value, dir: IfDir, name: &IfName) -> Value {
        let idx = self.patterns[name];
        let bits = match dir {
            IfDir::In => b.ins().load(self.ptr, trusted(), ctx, off!(iif_bits)),
            IfDir::Out => b.ins().load(self.ptr, trusted(), ctx, off!(oif_bits)),
        };
        let word = b
            .ins()
            .load(types::I64, trusted(), bits, ((idx / 64) * 8) as i32);
        let sh = b.ins().ushr_imm_u(word, (idx % 64) as i64);
        let bit = b.ins().band_imm_u(sh, 1);
        icmp_u(b, IntCC::NotEqual, bit, 0)
    }

    fn xor_neg(&self, b: &mut FunctionBuilder, v: Value, neg: bool) -> Value {
        if neg {
            b.ins().bxor_imm_u(v, 1)
        } else {
            v
        }
    }

    /// Calls an `extern "C" fn(*mut Ctx, u32) -> u32` callback.
    fn call_cb(&self, b: &mut FunctionBuilder, f: usize, args: &[Value]) -> Value {
        let mut sig = Signature::new(b.func.signature.call_conv);
        sig.params.push(AbiParam::new(self.ptr));
        sig.params.push(AbiParam::new(types::I32));
        sig.returns.push(AbiParam::new(types::I32));
        let sref = b.import_signature(sig);
        let callee = b.ins().iconst(self.ptr, f as i64);
        let call = b.ins().call_indirect(sref, callee, args);
        let r = b.inst_results(call)[0];
        // (every callback takes the context first)
        self.reload_fields(b, args[0]);
        r
    }

    /// The predicate's truth (i8 boolean).
    fn pred(&mut self, b: &mut FunctionBuilder, ctx: Value, rule: RuleId, p: &Pred) -> Value {
        match p {
            Pred::Field { field, neg, op } => {
                let v = self.load32(b, ctx, field_offset(*field));
                let set = IntervalSet::from_elems(op.elems());
                let hit = self.contains(b, v, &set);
                let r = self.xor_neg(b, hit, *neg);
                match self.availability(b, ctx, *field) {
                    Some(a) => b.ins().band(a, r),
                    None => r,
                }
            }
            Pred::Iface { dir, neg, names } => {
                let mut acc: Option<Value> = None;
                for n in names {
                    let bit = self.iface_bit(b, ctx, *dir, n);
                    acc = Some(match acc {
                        None => bit,
                        Some(a) => b.ins().bor(a, bit),
                    });
                }
                let any = acc.unwrap_or_else(|| b.ins().iconst(types::I8, 0));
                self.xor_neg(b, any, *neg)
            }
            Pred::CtState { neg, mask } => {
                let c = self.load32(b, ctx, off!(ct));
                let m = b.ins().band_imm_u(c, i64::from(*mask));
                let hit = icmp_u(b, IntCC::NotEqual, m, 0);
                self.xor_neg(b, hit, *neg)
            }
            Pred::TcpFlags { neg, mask, value } => {
                let proto = self.load32(b, ctx, off!(proto));
                let l4 = self.load32(b, ctx, off!(l4));
                let is_tcp = icmp_u(b, IntCC::Equal, proto, 6);
                let has = icmp_u(b, IntCC::NotEqual, l4, 0);
                let avail = b.ins().band(is_tcp, has);
                let f = self.load32(b, ctx, off!(tcp_flags));
                let m = b.ins().band_imm_u(f, i64::from(*mask));
                let eq = icmp_u(b, IntCC::Equal, m, i64::from(*value));
                let r = self.xor_neg(b, eq, *neg);
                b.ins().band(avail, r)
            }
            Pred::Statistic { .. } | Pred::Limit { .. } => {
                let idx = self.stateful.len() as i64;
                self.stateful.push((rule, p.clone()));
                let i = b.ins().iconst(types::I32, idx);
                let r = self.call_cb(b, cb_stateful as *const () as usize, &[ctx, i]);
                icmp_u(b, IntCC::NotEqual, r, 0)
            }
        }
    }

    /// The inlining cost rule: a small subchain, or a mid-sized one called from one place
    /// only, not nested too deep, and never a chain compiled in pieces.
    fn inlines(&self, t: ChainId) -> bool {
        let n = self.program.chains[t.0 as usize].rules.len();
        self.opts.inline
            && self.inline_depth < INLINE_DEPTH
            && self.pieces[t.0 as usize].is_empty()
            && (n <= INLINE_RULES || (n <= INLINE_ONCE_RULES && self.call_sites[t.0 as usize] <= 1))
    }

    fn ret(&self, b: &mut FunctionBuilder, code: u32) {
        let v = b.ins().iconst(types::I32, i64::from(code));
        self.ret_value(b, v);
    }

    /// Ends the chain with verdict code `v`: a return, or inside a passive entry a jump to
    /// where the chain's verdict goes.
    fn ret_value(&self, b: &mut FunctionBuilder, v: Value) {
        match self.ret_to {
            Some(k) => b.ins().jump(k, &[BlockArg::Value(v)]),
            None => b.ins().return_(&[v]),
        };
    }

    /// Emits a rule's statements at the current block. `next` is where control goes when the
    /// rule does not end the chain; `policy` is the base chain's policy block (for `return`).
    fn stmts(
        &mut self,
        b: &mut FunctionBuilder,
        ctx: Value,
        rule: &Rule,
        stmts: &[Stmt],
        next: ir::Block,
        policy: Option<ir::Block>,
    ) {
        let id = rule.id.0;
        for (i, s) in stmts.iter().enumerate() {
            match s {
                Stmt::Accept => {
                    self.store_rule(b, ctx, id);
                    self.ret(b, verdict::ACCEPT);
                    return;
                }
                Stmt::Drop => {
                    self.store_rule(b, ctx, id);
                    self.ret(b, verdict::DROP);
                    return;
                }
                Stmt::Reject(k) => {
                    self.store_rule(b, ctx, id);
                    let aux = match k {
                        RejectKind::TcpReset => 256,
                        RejectKind::IcmpUnreach(c) => u32::from(*c),
                    };
                    self.store_imm32(b, ctx, off!(aux), aux);
                    self.ret(b, verdict::REJECT);
                    return;
                }
                Stmt::Queue { num, bypass } => {
                    self.store_rule(b, ctx, id);
                    self.store_imm32(
                        b,
                        ctx,
                        off!(aux),
                        u32::from(*num) | (u32::from(*bypass) << 16),
                    );
                    self.ret(b, verdict::QUEUE);
                    return;
                }
                Stmt::Return => {
                    match policy {
                        Some(p) => {
                            b.ins().jump(p, &[]);
                        }
                        None => self.ret(b, verdict::CONT),
                    }
                    return;
                }
                Stmt::Jump(t) | Stmt::Goto(t) if self.inlines(*t) => {
                    // the callee's rules here, as if called: its terminal verdicts return
                    // from this function as a call's result would, and its `return` and its
                    // end go where the call's CONT would
                    let (after, fill) = match (s, policy) {
                        (Stmt::Jump(_), _) => (next, false),
                        (_, Some(p)) => (p, false),
                        (_, None) => (b.create_block(), true),
                    };
                    let rules = self.program.chains[t.0 as usize].rules.clone();
                    let blocks: Vec<ir::Block> =
                        (0..=rules.len()).map(|_| b.create_block()).collect();
                    b.ins().jump(blocks[0], &[]);
                    self.inline_depth += 1;
                    for (k, r) in rules.iter().enumerate() {
                        b.switch_to_block(blocks[k]);
                        for p in &r.preds {
                            let m = self.pred(b, ctx, r.id, p);
                            let cont = b.create_block();
                            b.ins().brif(m, cont, &[], blocks[k + 1], &[]);
                            b.switch_to_block(cont);
                        }
                        self.bump_counters(b, ctx, r.id.0);
                        self.stmts(b, ctx, r, &r.stmts, blocks[k + 1], Some(after));
                    }
                    self.inline_depth -= 1;
                    b.switch_to_block(blocks[rules.len()]);
                    b.ins().jump(after, &[]);
                    if fill {
                        b.switch_to_block(after);
                        self.ret(b, verdict::CONT);
                    }
                    return;
                }
                Stmt::Jump(t) | Stmt::Goto(t) => {
                    let callee = self.chain_ref(b, *t);
                    let call = b.ins().call(callee, &[ctx]);
                    let r = b.inst_results(call)[0];
                    self.reload_fields(b, ctx);
                    let is_cont = icmp_u(b, IntCC::Equal, r, i64::from(verdict::CONT));
                    let pass = b.create_block();
                    // where a callee that returned (CONT) leads: the next rule after a jump; after
                    // a goto, the end of this chain (its policy, or back to our caller)
                    let (after, fill) = match (s, policy) {
                        (Stmt::Jump(_), _) => (next, false),
                        (_, Some(p)) => (p, false),
                        (_, None) => (b.create_block(), true),
                    };
                    b.ins().brif(is_cont, after, &[], pass, &[]);
                    if fill {
                        b.switch_to_block(after);
                        self.ret(b, verdict::CONT);
                    }
                    b.switch_to_block(pass);
                    self.ret_value(b, r);
                    return;
                }
                Stmt::Counter => {}
                Stmt::Log { .. } | Stmt::Audit => {
                    // `stmts` is the rule's statements from some point on
                    let at = rule.stmts.len().saturating_sub(stmts.len()) + i;
                    let site = self.log_sites.len() as i64;
                    self.log_sites.push((rule.id, at as u32));
                    let k = b.ins().iconst(types::I32, site);
                    self.call_cb(b, cb_log as *const () as usize, &[ctx, k]);
                }
                Stmt::MarkSet(m) => self.store_imm32(b, ctx, off!(mark), *m),
                Stmt::TtlSet(t) => self.store_imm32(b, ctx, off!(ttl), u32::from(*t)),
                Stmt::Notrack => self.store_imm32(b, ctx, off!(ct), u32::from(ct::UNTRACKED)),
                Stmt::Snat(_) | Stmt::Dnat(_) | Stmt::Masquerade(_) | Stmt::Redirect(_) => {
                    let idx = self.nat.len() as i64;
                    self.nat.push((rule.id, s.clone()));
                    let i = b.ins().iconst(types::I32, idx);
                    let r = self.call_cb(b, cb_nat as *const () as usize, &[ctx, i]);
                    let ok = b.create_block();
                    let fail = b.create_block();
                    b.ins().brif(r, ok, &[], fail, &[]);
                    b.switch_to_block(fail);
                    self.ret(b, verdict::ERROR);
                    b.switch_to_block(ok);
                    self.store_rule(b, ctx, id);
                    self.ret(b, verdict::ACCEPT);
                    return;
                }
                Stmt::Vmap { key, arms } => {
                    let rest = b.create_block();
                    let arm_blocks: Vec<ir::Block> =
                        arms.iter().map(|_| b.create_block()).collect();
                    match key {
                        VmapKey::Field(f) => {
                            let v = self.load32(b, ctx, field_offset(*f));
                            // (lo, hi, arm) sorted by lo; keys are disjoint (checked)
                            let mut iv: Vec<(u32, u32, u32)> = arms
                                .iter()
                                .enumerate()
                                .filter_map(|(k, a)| match &a.key {
                                    VmapArmKey::Num(e) => {
                                        let (lo, hi) = e.bounds();
                                        Some((lo, hi, k as u32))
                                    }
                                    VmapArmKey::Iface(_) => None,
                                })
                                .collect();
                            iv.sort_unstable();
                            let lookup = b.create_block();
                            match self.availability(b, ctx, *f) {
                                Some(a) => {
                                    b.ins().brif(a, lookup, &[], rest, &[]);
                                }
                                None => {
                                    b.ins().jump(lookup, &[]);
                                }
                            }
                            b.switch_to_block(lookup);
                            let arm = self.vmap_lookup(b, v, &iv);
                            let mut sw = Switch::new();
                            for (k, blk) in arm_blocks.iter().enumerate() {
                                sw.set_entry(k as u128, *blk);
                            }
                            sw.emit(b, arm, rest);
                        }
                        VmapKey::Iface(dir) => {
                            for (k, a) in arms.iter().enumerate() {
                                if let VmapArmKey::Iface(n) = &a.key {
                                    let bit = self.iface_bit(b, ctx, *dir, n);
                                    let miss = b.create_block();
                                    b.ins().brif(bit, arm_blocks[k], &[], miss, &[]);
                                    b.switch_to_block(miss);
                                }
                            }
                            b.ins().jump(rest, &[]);
                        }
                    }
                    for (k, a) in arms.iter().enumerate() {
                        b.switch_to_block(arm_blocks[k]);
                        // an arm is one verdict; a jump that returns goes on to the next rule
                        self.stmts(b, ctx, rule, std::slice::from_ref(&a.verdict), next, policy);
                    }
                    b.switch_to_block(rest);
                    // a miss: the rule's remaining statements run
                    self.stmts(b, ctx, rule, &stmts[i + 1..], next, policy);
                    return;
                }
            }
        }
        b.ins().jump(next, &[]);
    }

    /// Binary search over sorted disjoint (lo, hi, arm): the arm index, or u32::MAX on a miss.
    fn vmap_lookup(&mut self, b: &mut FunctionBuilder, v: Value, iv: &[(u32, u32, u32)]) -> Value {
        let flat: Box<[u32]> = iv.iter().flat_map(|&(l, h, a)| [l, h, a]).collect();
        self.interval_search(b, v, flat, 3, i64::from(u32::MAX))
    }

    /// Emits a binary search of `v` over sorted disjoint intervals laid out in `flat` as
    /// records of `words` u32s (lo, hi[, arm]); `flat` is kept alive with the code. The I32
    /// result is `miss` when no interval holds `v`, else the record's arm (3-word records)
    /// or 1 (2-word records).
    fn interval_search(
        &mut self,
        b: &mut FunctionBuilder,
        v: Value,
        flat: Box<[u32]>,
        words: i64,
        miss: i64,
    ) -> Value {
        let base = flat.as_ptr() as i64;
        let n = flat.len() as i64 / words;
        self.data.push(flat);
        let [head, body, right, found, done] = std::array::from_fn(|_| b.create_block());
        b.append_block_param(head, types::I32);
        b.append_block_param(head, types::I32);
        b.append_block_param(done, types::I32);
        let zero = b.ins().iconst(types::I32, 0);
        let nn = b.ins().iconst(types::I32, n);
        b.ins()
            .jump(head, &[BlockArg::Value(zero), BlockArg::Value(nn)]);
        b.switch_to_block(head);
        let lo = b.block_params(head)[0];
        let hi = b.block_params(head)[1];
        let empty = b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, lo, hi);
        let missv = b.ins().iconst(types::I32, miss);
        b.ins()
            .brif(empty, done, &[BlockArg::Value(missv)], body, &[]);
        b.switch_to_block(body);
        let sum = b.ins().iadd(lo, hi);
        let mid = b.ins().ushr_imm_u(sum, 1);
        let mid64 = b.ins().uextend(self.ptr, mid);
        let off = b.ins().imul_imm_u(mid64, words * 4);
        let basev = b.ins().iconst(self.ptr, base);
        let addr = b.ins().iadd(basev, off);
        let l = b.ins().load(types::I32, trusted(), addr, 0);
        let below = b.ins().icmp(IntCC::UnsignedLessThan, v, l);
        b.ins().brif(
            below,
            head,
            &[BlockArg::Value(lo), BlockArg::Value(mid)],
            right,
            &[],
        );
        b.switch_to_block(right);
        let h = b.ins().load(types::I32, trusted(), addr, 4);
        let above = b.ins().icmp(IntCC::UnsignedGreaterThan, v, h);
        let mid1 = {
            let one = c32(b, 1);
            b.ins().iadd(mid, one)
        };
        b.ins().brif(
            above,
            head,
            &[BlockArg::Value(mid1), BlockArg::Value(hi)],
            found,
            &[],
        );
        b.switch_to_block(found);
        let hit = if words >= 3 {
            b.ins().load(types::I32, trusted(), addr, 8)
        } else {
            b.ins().iconst(types::I32, 1)
        };
        b.ins().jump(done, &[BlockArg::Value(hit)]);
        b.switch_to_block(done);
        b.block_params(done)[0]
    }

    fn chain_ref(&self, b: &mut FunctionBuilder, t: ChainId) -> ir::FuncRef {
        self.func_ref(b, self.chain_ids[t.0 as usize])
    }

    /// A reference to one of the module's functions (`fn(*mut Ctx) -> u32`).
    fn func_ref(&self, b: &mut FunctionBuilder, id: FuncId) -> ir::FuncRef {
        let mut sig = Signature::new(b.func.signature.call_conv);
        sig.params.push(AbiParam::new(self.ptr));
        sig.returns.push(AbiParam::new(types::I32));
        let sref = b.import_signature(sig);
        let name = b
            .func
            .declare_imported_user_function(ir::UserExternalName::new(0, id.as_u32()));
        b.import_function(ir::ExtFuncData {
            name: ir::ExternalName::user(name),
            signature: sref,
            colocated: true,
            patchable: false,
        })
    }

    /// Counts the packet for rule `id` (or, in a shared action block, for the rule whose id
    /// the block loaded).
    fn bump_counters(&self, b: &mut FunctionBuilder, ctx: Value, id: u32) {
        match self.dyn_rule {
            Some(v) => self.bump_rule(b, ctx, v),
            None => {
                // (packets, bytes) of one rule: 16 bytes at `id * 16`
                let counters = b.ins().load(self.ptr, trusted(), ctx, off!(counters));
                self.bump_at(b, ctx, counters, (id as i32) * 16);
            }
        }
    }

    /// Counts the packet for the rule whose id is the value `id`.
    fn bump_rule(&self, b: &mut FunctionBuilder, ctx: Value, id: Value) {
        let counters = b.ins().load(self.ptr, trusted(), ctx, off!(counters));
        let id64 = b.ins().uextend(self.ptr, id);
        let off = b.ins().ishl_imm_u(id64, 4);
        let at = b.ins().iadd(counters, off);
        self.bump_at(b, ctx, at, 0);
    }

    /// Adds one packet of the context's length to the (packets, bytes) pair at `base + o`.
    fn bump_at(&self, b: &mut FunctionBuilder, ctx: Value, base: Value, o: i32) {
        let len = self.load32(b, ctx, off!(len));
        let len64 = b.ins().uextend(types::I64, len);
        for (o, add) in [(o, None), (o + 8, Some(len64))] {
            let cur = b.ins().load(types::I64, trusted(), base, o);
            let new = match add {
                None => b.ins().iadd_imm_u(cur, 1),
                Some(l) => b.ins().iadd(cur, l),
            };
            b.ins().store(trusted(), new, base, o);
        }
    }

    /// A long chain's main function: its pieces called in order.
    fn chain_main(&mut self, b: &mut FunctionBuilder, idx: usize) {
        let chain = &self.program.chains[idx];
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let ctx = b.block_params(entry)[0];
        let leave = b.create_block();
        let pieces = self.pieces[idx].clone();
        for (_, id) in &pieces {
            let callee = self.func_ref(b, *id);
            let call = b.ins().call(callee, &[ctx]);
            let r = b.inst_results(call)[0];
            let is_cont = icmp_u(b, IntCC::Equal, r, verdict::CONT);
            let (next, other) = (b.create_block(), b.create_block());
            b.ins().brif(is_cont, next, &[], other, &[]);
            b.switch_to_block(other);
            let is_leave = icmp_u(b, IntCC::Equal, r, verdict::LEAVE);
            let pass = b.create_block();
            b.ins().brif(is_leave, leave, &[], pass, &[]);
            b.switch_to_block(pass);
            b.ins().return_(&[r]);
            b.switch_to_block(next);
        }
        b.ins().jump(leave, &[]);
        b.switch_to_block(leave);
        self.chain_end(b, ctx, chain);
        b.seal_all_blocks();
    }

    /// What falling off (or leaving) a chain does: its policy, or back to the caller.
    fn chain_end(&self, b: &mut FunctionBuilder, ctx: Value, chain: &Chain) {
        match &chain.kind {
            ChainKind::Base { policy: pol, .. } => {
                self.store_imm32(b, ctx, off!(rule), NO_RULE);
                self.ret(
                    b,
                    match pol {
                        Policy::Accept => verdict::ACCEPT,
                        Policy::Drop => verdict::DROP,
                    },
                );
            }
            ChainKind::Sub { .. } => self.ret(b, verdict::CONT),
        }
    }

    /// One chain function, or one piece of a long chain (`range`): a piece returns CONT at
    /// its end and LEAVE where the chain would be left.
    fn chain(
        &mut self,
        b: &mut FunctionBuilder,
        idx: usize,
        range: Option<std::ops::Range<usize>>,
    ) {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let ctx = b.block_params(entry)[0];
        self.chain_body(b, ctx, idx, range);
        b.seal_all_blocks();
    }

    /// A chain's (or a piece's) code from the current block on, ending in its verdict
    /// ([`Gen::ret_value`]).
    fn chain_body(
        &mut self,
        b: &mut FunctionBuilder,
        ctx: Value,
        idx: usize,
        range: Option<std::ops::Range<usize>>,
    ) {
        let chain = &self.program.chains[idx];
        let piece = range.is_some();
        let policy = match (&chain.kind, piece) {
            (_, true) | (ChainKind::Base { .. }, false) => Some(b.create_block()),
            (ChainKind::Sub { .. }, false) => None,
        };
        let rules: Vec<Rule> = match &range {
            Some(r) => chain.rules[r.clone()].to_vec(),
            None => chain.rules.clone(),
        };
        let runs = if self.opts.decision_trees {
            dtree::find_runs(&rules, self.opts.min_run)
        } else {
            vec![]
        };
        let n = rules.len();
        let blocks: Vec<ir::Block> = (0..=n).map(|_| b.create_block()).collect();
        b.ins().jump(blocks[0], &[]);
        let mut i = 0;
        while i < n {
            if let Some(run) = runs.iter().find(|r| r.start == i) {
                // a decision tree finds the first matching rule of the run in one lookup
                b.switch_to_block(blocks[i]);
                // (a chain emitted twice, in its function and in a passive entry, walks one
                // forest)
                let key = (idx, range.as_ref().map_or(0, |r| r.start) + run.start);
                let built = self
                    .forests
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|&(_, t)| t);
                let mut tree = built
                    .is_none()
                    .then(|| Box::new(dtree::Forest::build(&rules[run.start..run.end])));
                // the run's rules by action: rules with the same plain statements share one
                // block (a few blocks in all, not one per rule: the code stays small); the
                // others get a block each
                let run_rules = &rules[run.start..run.end];
                let mut classes: Vec<(usize, bool)> = Vec::new(); // (rule k, shared)
                let mut table: Vec<u32> = Vec::with_capacity(2 * run_rules.len());
                for (k, r) in run_rules.iter().enumerate() {
                    let c = if shareable(&r.stmts) {
                        match classes
                            .iter()
                            .position(|&(j, sh)| sh && run_rules[j].stmts == r.stmts)
                        {
                            Some(c) => c,
                            None => {
                                classes.push((k, true));
                                classes.len() - 1
                            }
                        }
                    } else {
                        classes.push((k, false));
                        classes.len() - 1
                    };
                    table.push(r.id.0);
                    table.push(c as u32);
                }
                // consecutive rule ids and few classes: the forest answers with the class
                // as the rule's tag and the id is the run's first plus the position (no
                // table load after the lookup); else a table of (id, class) by position
                let first_id = run_rules[0].id.0;
                let tagged = classes.len() <= dtree::MAX_TAG + 1
                    && run_rules
                        .iter()
                        .enumerate()
                        .all(|(k, r)| u64::from(r.id.0) == u64::from(first_id) + k as u64);
                if let (true, Some(tree)) = (tagged, tree.as_mut()) {
                    // (before the code embeds the addresses of the forest's words and
                    // boxes, which must not change after)
                    let tags: Vec<u8> = table.chunks(2).map(|e| e[1] as u8).collect();
                    tree.set_tags(&tags);
                }
                // the walk compiled in place, over the forest's words and boxes (which
                // live, unchanged, as long as the code)
                let l = |f: i32, b: &mut FunctionBuilder| self.load32(b, ctx, f);
                let (saddr, daddr) = (l(off!(saddr), b), l(off!(daddr), b));
                let (proto, l4) = (l(off!(proto), b), l(off!(l4), b));
                let (sport, dport) = (l(off!(sport), b), l(off!(dport), b));
                let tcp = icmp_u(b, IntCC::Equal, proto, 6);
                let udp = icmp_u(b, IntCC::Equal, proto, 17);
                let tcp_udp = b.ins().bor(tcp, udp);
                let whole = icmp_u(b, IntCC::NotEqual, l4, 0);
                let has_ports = b.ins().band(tcp_udp, whole);
                // (a forest is boxed: its words and boxes stay where they are when `trees`
                // grows)
                if let Some(tree) = tree {
                    self.forests.push((key, self.trees.len()));
                    self.trees.push(tree);
                    self.tree_rules += run.end - run.start;
                }
                let forest = &self.trees[built.unwrap_or(self.trees.len() - 1)];
                let hit =
                    forest.emit_lookup(b, self.ptr, [saddr, daddr, proto, sport, dport], has_ports);
                let dispatch = b.create_block();
                let (id, class) = if tagged {
                    // a miss (u32::MAX) goes on after the run
                    let miss = icmp_u(b, IntCC::Equal, hit, u32::MAX);
                    b.ins().brif(miss, blocks[run.end], &[], dispatch, &[]);
                    b.switch_to_block(dispatch);
                    let pos = b.ins().band_imm_u(hit, (1 << dtree::TAG_SHIFT) - 1);
                    let first = c32(b, first_id);
                    let id = b.ins().iadd(pos, first);
                    let class = b.ins().ushr_imm_u(hit, i64::from(dtree::TAG_SHIFT));
                    (id, class)
                } else {
                    let table: Box<[u32]> = table.into_boxed_slice();
                    let table_ptr = table.as_ptr() as i64;
                    self.data.push(table);
                    // a miss (u32::MAX) goes on after the run; a hit (untagged: its
                    // position) indexes the table
                    let in_run = icmp_u(b, IntCC::UnsignedLessThan, hit, run_rules.len() as i64);
                    b.ins().brif(in_run, dispatch, &[], blocks[run.end], &[]);
                    b.switch_to_block(dispatch);
                    let base = b.ins().iconst(self.ptr, table_ptr);
                    let hit64 = b.ins().uextend(self.ptr, hit);
                    let o = b.ins().ishl_imm_u(hit64, 3);
                    let at = b.ins().iadd(base, o);
                    // in bounds: hit < the run's length, and the table has two words per
                    // rule
                    let id = b.ins().load(types::I32, trusted(), at, 0);
                    let class = b.ins().load(types::I32, trusted(), at, 4);
                    (id, class)
                };
                // every class a bare accept or drop (shared: no other statement): one block,
                // the verdict taken from the class without a branch, which a mix of accepted
                // and dropped packets would mispredict (10K rules in place, acl / fw / ipc:
                // 55 / 66-71 / 59-60 -> 51-54 / 64 / 57 ns)
                let bare = |k: usize| match run_rules[k].stmts.as_slice() {
                    [Stmt::Accept] => Some(false),
                    [Stmt::Drop] => Some(true),
                    _ => None,
                };
                if classes.len() <= 64 && classes.iter().all(|&(k, sh)| sh && bare(k).is_some()) {
                    // bit c: class c drops
                    let drops = classes
                        .iter()
                        .enumerate()
                        .filter(|&(_, &(k, _))| bare(k) == Some(true))
                        .fold(0u64, |m, (c, _)| m | 1 << c);
                    // the driver bumps the rule's counters (`run_base`: after a prefetch,
                    // one classification later)
                    self.store32(b, ctx, off!(deferred), id);
                    self.store32(b, ctx, off!(rule), id);
                    let mask = b.ins().iconst(types::I64, drops as i64);
                    let c64 = b.ins().uextend(types::I64, class);
                    let bit = b.ins().ushr(mask, c64);
                    let bit = b.ins().band_imm_u(bit, 1);
                    let bit = b.ins().ireduce(types::I32, bit);
                    const _: () = assert!(verdict::DROP == verdict::ACCEPT + 1);
                    let v = b.ins().iadd_imm_u(bit, i64::from(verdict::ACCEPT));
                    self.ret_value(b, v);
                    i = run.end;
                    continue;
                }
                let class_blocks: Vec<ir::Block> =
                    classes.iter().map(|_| b.create_block()).collect();
                let mut sw = Switch::new();
                for (c, &blk) in class_blocks.iter().enumerate() {
                    sw.set_entry(c as u128, blk);
                }
                sw.emit(b, class, blocks[run.end]);
                for (&(k, shared), &blk) in classes.iter().zip(&class_blocks) {
                    let r = &run_rules[k];
                    b.switch_to_block(blk);
                    if shared {
                        self.dyn_rule = Some(id);
                    }
                    self.bump_counters(b, ctx, r.id.0);
                    // rules of a run end the chain: `next` is never reached
                    self.stmts(b, ctx, r, &r.stmts, blocks[run.end], policy);
                    self.dyn_rule = None;
                }
                i = run.end;
                continue;
            }
            let r = &rules[i];
            b.switch_to_block(blocks[i]);
            for p in &r.preds {
                let t = self.pred(b, ctx, r.id, p);
                let cont = b.create_block();
                b.ins().brif(t, cont, &[], blocks[i + 1], &[]);
                b.switch_to_block(cont);
            }
            self.bump_counters(b, ctx, r.id.0);
            self.stmts(b, ctx, r, &r.stmts, blocks[i + 1], policy);
            i += 1;
        }
        b.switch_to_block(blocks[n]);
        if piece {
            // end of a piece: the next piece goes on; the policy block means "leave"
            self.ret(b, verdict::CONT);
            if let Some(p) = policy {
                b.switch_to_block(p);
                self.ret(b, verdict::LEAVE);
            }
            return;
        }
        match (policy, &chain.kind) {
            (Some(p), ChainKind::Base { policy: pol, .. }) => {
                b.ins().jump(p, &[]);
                b.switch_to_block(p);
                self.store_imm32(b, ctx, off!(rule), NO_RULE);
                self.ret(
                    b,
                    match pol {
                        Policy::Accept => verdict::ACCEPT,
                        Policy::Drop => verdict::DROP,
                    },
                );
            }
            _ => self.ret(b, verdict::CONT),
        }
    }

    /// The packet parser (`fn(ctx, data, len) -> 1 when IPv4, else 0`).
    fn parse(&self, b: &mut FunctionBuilder) {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let [ctx, data, len] = b.block_params(entry)[..] else {
            unreachable!("parse takes the context, the packet and its length")
        };
        let (ok, fail) = (b.create_block(), b.create_block());
        self.parse_body(b, [ctx, data, len], ok, fail);
        b.switch_to_block(ok);
        let one = b.ins().iconst(types::I32, 1);
        b.ins().return_(&[one]);
        b.switch_to_block(fail);
        let z = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[z]);
        b.seal_all_blocks();
    }

    /// Reads the packet (`data`, `len` bytes) into the context's header fields, each load
    /// preceded by a length check; goes on at `done` when it is IPv4 (whatever its
    /// transport header), at `fail` when not. The fields a packet may not have (ports,
    /// ICMP type and code, TCP flags, `l4`) are left alone then: the context comes with
    /// them zero ([`Ctx::new`]).
    fn parse_body(
        &self,
        b: &mut FunctionBuilder,
        [ctx, data, len]: [Value; 3],
        done: ir::Block,
        fail: ir::Block,
    ) {
        let raw = MemFlagsData::new().with_notrap();
        let byte =
            |b: &mut FunctionBuilder, base: Value, o: i32| b.ins().uload8(types::I32, raw, base, o);
        // network byte order: one (unaligned) load, then a byte swap on a little-endian host
        let swap = |b: &mut FunctionBuilder, x: Value| {
            if cfg!(target_endian = "little") {
                b.ins().bswap(x)
            } else {
                x
            }
        };
        let be16 = |b: &mut FunctionBuilder, base: Value, o: i32| {
            let x = b.ins().uload16(types::I32, raw, base, o);
            if cfg!(target_endian = "little") {
                let s = b.ins().bswap(x);
                b.ins().ushr_imm_u(s, 16)
            } else {
                x
            }
        };
        let be32 = |b: &mut FunctionBuilder, base: Value, o: i32| {
            let x = b.ins().load(types::I32, raw, base, o);
            swap(b, x)
        };
        let check = |b: &mut FunctionBuilder, ok: Value| {
            let next = b.create_block();
            b.ins().brif(ok, next, &[], fail, &[]);
            b.switch_to_block(next);
        };
        // the fixed IPv4 header
        let ok = icmp_u(
            b,
            IntCC::UnsignedGreaterThanOrEqual,
            len,
            interp::wire::IPV4_MIN as i64,
        );
        check(b, ok);
        let b0 = byte(b, data, 0);
        let ver = b.ins().ushr_imm_u(b0, 4);
        let ok = icmp_u(b, IntCC::Equal, ver, 4);
        check(b, ok);
        let ihl0 = b.ins().band_imm_u(b0, 0x0f);
        let ihl = b.ins().ishl_imm_u(ihl0, 2);
        let ok = icmp_u(
            b,
            IntCC::UnsignedGreaterThanOrEqual,
            ihl,
            interp::wire::IPV4_MIN as i64,
        );
        check(b, ok);
        let total = be16(b, data, 2);
        let ok1 = b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, total, ihl);
        let ok2 = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, total, len);
        let ok = b.ins().band(ok1, ok2);
        check(b, ok);
        let ttl = byte(b, data, 8);
        self.store32(b, ctx, off!(ttl), ttl);
        let proto = byte(b, data, 9);
        self.store32(b, ctx, off!(proto), proto);
        let s = be32(b, data, 12);
        self.store32(b, ctx, off!(saddr), s);
        let d = be32(b, data, 16);
        self.store32(b, ctx, off!(daddr), d);
        let one = b.ins().iconst(types::I32, 1);
        // the transport header: not in a non-first fragment
        let frag = be16(b, data, 6);
        let frag_off = b.ins().band_imm_u(frag, 0x1fff);
        let first = icmp_u(b, IntCC::Equal, frag_off, 0);
        check_to(b, first, done);
        let l4len = b.ins().isub(total, ihl);
        let ihl64 = b.ins().uextend(self.ptr, ihl);
        let l4p = b.ins().iadd(data, ihl64);
        let (tcp, not_tcp, udp, not_udp, icmp) = (
            b.create_block(),
            b.create_block(),
            b.create_block(),
            b.create_block(),
            b.create_block(),
        );
        let is = icmp_u(b, IntCC::Equal, proto, 6);
        b.ins().brif(is, tcp, &[], not_tcp, &[]);
        // TCP: the whole 20-byte header
        b.switch_to_block(tcp);
        let ok = icmp_u(
            b,
            IntCC::UnsignedGreaterThanOrEqual,
            l4len,
            interp::wire::TCP_MIN as i64,
        );
        check_to(b, ok, done);
        let sp = be16(b, l4p, 0);
        self.store32(b, ctx, off!(sport), sp);
        let dp = be16(b, l4p, 2);
        self.store32(b, ctx, off!(dport), dp);
        let fl = byte(b, l4p, 13);
        let fl = b.ins().band_imm_u(fl, 0x3f);
        self.store32(b, ctx, off!(tcp_flags), fl);
        self.store32(b, ctx, off!(l4), one);
        b.ins().jump(done, &[]);
        b.switch_to_block(not_tcp);
        let is = icmp_u(b, IntCC::Equal, proto, 17);
        b.ins().brif(is, udp, &[], not_udp, &[]);
        b.switch_to_block(udp);
        let ok = icmp_u(
            b,
            IntCC::UnsignedGreaterThanOrEqual,
            l4len,
            interp::wire::UDP_MIN as i64,
        );
        check_to(b, ok, done);
        let sp = be16(b, l4p, 0);
        self.store32(b, ctx, off!(sport), sp);
        let dp = be16(b, l4p, 2);
        self.store32(b, ctx, off!(dport), dp);
        self.store32(b, ctx, off!(l4), one);
        b.ins().jump(done, &[]);
        b.switch_to_block(not_udp);
        let is = icmp_u(b, IntCC::Equal, proto, 1);
        check_to(b, is, done);
        b.ins().jump(icmp, &[]);
        b.switch_to_block(icmp);
        let ok = icmp_u(
            b,
            IntCC::UnsignedGreaterThanOrEqual,
            l4len,
            interp::wire::ICMP_MIN as i64,
        );
        check_to(b, ok, done);
        let t = byte(b, l4p, 0);
        self.store32(b, ctx, off!(icmp_type), t);
        let c = byte(b, l4p, 1);
        self.store32(b, ctx, off!(icmp_code), c);
        self.store32(b, ctx, off!(l4), one);
        b.ins().jump(done, &[]);
    }

    /// A path's passive entry (`fn(ctx, data, len) -> verdict code`): the parser inline,
    /// then the path's base chains in `steps` order, as `run_base` runs them (the nat
    /// chains for a connection's first packet only, `ct state` hidden from the raw
    /// table's, `Ctx::rule` cleared before each, policy decisions counted in
    /// `Ctx::policy_counts`), stopping at the first verdict other than `accept`.
    /// [`verdict::NOT_IPV4`] when the packet is not IPv4. A rule the last chain run left in
    /// `Ctx::deferred` stays there for the driver; one an earlier chain left is counted
    /// at once. Chains marked `in_entry` are emitted here, reading the parsed fields from
    /// variables ([`Gen::fields`]); the others are called.
    fn passive_entry(&mut self, b: &mut FunctionBuilder, steps: &[PassiveStep]) {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let [ctx, data, len] = b.block_params(entry)[..] else {
            unreachable!("an entry takes the context, the packet and its length")
        };
        // the parsed fields stay in variables for the chains emitted here (zero until the
        // parser sets them, as in `Ctx::new`)
        let zero = c32(b, 0);
        self.fields = PARSED_FIELDS
            .iter()
            .map(|&o| {
                let var = b.declare_var(types::I32);
                b.def_var(var, zero);
                (o, var)
            })
            .collect();
        let (ok, fail) = (b.create_block(), b.create_block());
        self.parse_body(b, [ctx, data, len], ok, fail);
        b.switch_to_block(fail);
        let not_ip = c32(b, verdict::NOT_IPV4);
        b.ins().return_(&[not_ip]);
        b.switch_to_block(ok);
        for (k, s) in steps.iter().enumerate() {
            let next = b.create_block();
            if s.nat {
                let run = b.create_block();
                let ct = self.load32(b, ctx, off!(ct));
                let first = b.ins().band_imm_u(ct, i64::from(ct::NEW | ct::RELATED));
                b.ins().brif(first, run, &[], next, &[]);
                b.switch_to_block(run);
            }
            let none = c32(b, NO_RULE);
            self.store32(b, ctx, off!(rule), none);
            let untracked = u32::from(ct::UNTRACKED);
            let saved = s.raw.then(|| {
                // before conntrack there is no connection: invalid, or untracked once
                // `notrack` ran
                let ct = self.load32(b, ctx, off!(ct));
                let is = icmp_u(b, IntCC::Equal, ct, untracked);
                let invalid = c32(b, u32::from(ct::INVALID));
                let v = b.ins().select(is, ct, invalid);
                self.store32(b, ctx, off!(ct), v);
                ct
            });
            let r = if self.in_entry[s.chain as usize] {
                // a light chain is emitted here (as well as in its own function, for the
                // general loop), reading the parsed fields from their variables; its
                // verdict comes to `done`
                let done = b.create_block();
                let r = b.append_block_param(done, types::I32);
                let outer = self.ret_to.replace(done);
                self.chain_body(b, ctx, s.chain as usize, None);
                self.ret_to = outer;
                b.switch_to_block(done);
                r
            } else {
                let callee = self.chain_ref(b, ChainId(s.chain));
                let call = b.ins().call(callee, &[ctx]);
                let r = b.inst_results(call)[0];
                self.reload_fields(b, ctx);
                r
            };
            if let Some(saved) = saved {
                let ct = self.load32(b, ctx, off!(ct));
                let is = icmp_u(b, IntCC::Equal, ct, untracked);
                let v = b.ins().select(is, ct, saved);
                self.store32(b, ctx, off!(ct), v);
            }
            // no rule decided: the chain's policy did
            let rule = self.load32(b, ctx, off!(rule));
            let by_policy = icmp_u(b, IntCC::Equal, rule, NO_RULE);
            let accepted = icmp_u(b, IntCC::Equal, r, verdict::ACCEPT);
            let dropped = icmp_u(b, IntCC::Equal, r, verdict::DROP);
            let fate = b.ins().bor(accepted, dropped);
            let count = b.ins().band(by_policy, fate);
            let (policy, after) = (b.create_block(), b.create_block());
            b.ins().brif(count, policy, &[], after, &[]);
            b.switch_to_block(policy);
            let base = b.ins().load(self.ptr, trusted(), ctx, off!(policy_counts));
            self.bump_at(b, ctx, base, (s.chain as i32) * 16);
            b.ins().jump(after, &[]);
            b.switch_to_block(after);
            let (go_on, leave) = (b.create_block(), b.create_block());
            b.ins().brif(accepted, go_on, &[], leave, &[]);
            b.switch_to_block(leave);
            b.ins().return_(&[r]);
            b.switch_to_block(go_on);
            if k + 1 < steps.len() {
                // only the last chain's deferred bump is left to the driver
                let d = self.load32(b, ctx, off!(deferred));
                let some = icmp_u(b, IntCC::NotEqual, d, NO_RULE);
                let bump = b.create_block();
                b.ins().brif(some, bump, &[], next, &[]);
                b.switch_to_block(bump);
                self.bump_rule(b, ctx, d);
                self.store32(b, ctx, off!(deferred), none);
            }
            b.ins().jump(next, &[]);
            b.switch_to_block(next);
        }
        let accept = c32(b, verdict::ACCEPT);
        b.ins().return_(&[accept]);
        b.seal_all_blocks();
        self.fields.clear();
    }
}

/// Continues at a new block when `ok`, else jumps to `otherwise`.
fn check_to(b: &mut FunctionBuilder, ok: Value, otherwise: ir::Block) {
    let next = b.create_block();
    b.ins().brif(ok, next, &[], otherwise, &[]);
    b.switch_to_block(next);
}

fn collect_patterns(p: &Program) -> Vec<IfName> {
    let mut out: Vec<IfName> = Vec::new();
    let mut add = |n: &IfName| {
        if !out.contains(n) {
            out.push(n.clone());
        }
    };
    for c in &p.chains {
        for r in &c.rules {
            for pr in &r.preds {
                if let Pred::Iface { names, .. } = pr {
                    names.iter().for_each(&mut add);
                }
            }
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
    }
    out
}

/// Longest chain of calls from any base chain.
fn call_depth(p: &Program) -> usize {
    fn depth(p: &Program, c: usize, memo: &mut Vec<Option<usize>>) -> usize {
        if let Some(d) = memo[c] {
            return d;
        }
        memo[c] = Some(0);
        let mut d = 0;
        for r in &p.chains[c].rules {
            for s in &r.stmts {
                let mut ts = vec![];
                match s {
                    Stmt::Jump(t) | Stmt::Goto(t) => ts.push(*t),
                    Stmt::Vmap { arms, .. } => {
                        for a in arms {
                            if let Stmt::Jump(t) | Stmt::Goto(t) = a.verdict {
                                ts.push(t);
                            }
                        }
                    }
                    _ => {}
                }
                for t in ts {
                    d = d.max(1 + depth(p, t.0 as usize, memo));
                }
            }
        }
        memo[c] = Some(d);
        d
    }
    let mut memo = vec![None; p.chains.len()];
    (0..p.chains.len())
        .map(|c| depth(p, c, &mut memo))
        .max()
        .unwrap_or(0)
}

/// A JIT module for the host, and its pointer type.
fn jit_module() -> Result<(JITModule, ir::Type), JitError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| JitError::Codegen(e.to_string()))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| JitError::Codegen(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| JitError::Codegen(e.to_string()))?;
    let ptr = isa.pointer_type();
    Ok((
        JITModule::new(JITBuilder::with_isa(isa, default_libcall_names())),
        ptr,
    ))
}

/// A JIT module and the code it owns, freed when the guard is dropped: by its owner (a
/// `JitProgram` or `CompiledLookup`, whose function pointers go with it), or half-way
/// through a compilation that failed.
struct ModuleGuard(Option<JITModule>);

impl std::ops::Deref for ModuleGuard {
    type Target = JITModule;
    fn deref(&self) -> &JITModule {
        self.0.as_ref().expect("a module until dropped")
    }
}

impl std::ops::DerefMut for ModuleGuard {
    fn deref_mut(&mut self) -> &mut JITModule {
        self.0.as_mut().expect("a module until dropped")
    }
}

impl Drop for ModuleGuard {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the only pointers into its code are its owner's, dropped with it and
            // never called again (or, on a failed compilation, never handed out).
            unsafe { m.free_memory() };
        }
    }
}

type ForestLookupFn = unsafe extern "C" fn(u32, u32, u32, u32, u32, u32) -> u32;

/// A forest's lookup compiled alone ([`dtree::Forest::emit_lookup`] in a function of its
/// own): what the classifier's code runs for a tree run, callable for tests and profiles.
pub struct CompiledLookup {
    forest: Box<dtree::Forest>,
    _module: ModuleGuard,
    f: ForestLookupFn,
}

impl CompiledLookup {
    pub fn new(forest: dtree::Forest) -> Result<CompiledLookup, JitError> {
        let forest = Box::new(forest);
        let (module, ptr) = jit_module()?;
        let mut module = ModuleGuard(Some(module));
        let mut sig = module.make_signature();
        for _ in 0..6 {
            sig.params.push(AbiParam::new(types::I32));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let codegen = |e: cranelift_module::ModuleError| JitError::Codegen(format!("{e:?}"));
        let id = module
            .declare_function("lookup", Linkage::Local, &sig)
            .map_err(codegen)?;
        let target = module.target_config();
        let mut cctx = module.make_context();
        cctx.func.signature = sig;
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut cctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let hit = forest.emit_lookup(&mut b, ptr, [p[0], p[1], p[2], p[3], p[4]], p[5]);
            b.ins().return_(&[hit]);
            b.seal_all_blocks();
            b.finalize(target);
        }
        module.define_function(id, &mut cctx).map_err(codegen)?;
        module.finalize_definitions().map_err(codegen)?;
        // SAFETY: defined above with this signature in the host's C calling convention; the
        // module is kept alive as long as `self`.
        let f = unsafe {
            std::mem::transmute::<*const u8, ForestLookupFn>(module.get_finalized_function(id))
        };
        Ok(CompiledLookup {
            forest,
            _module: module,
            f,
        })
    }

    /// [`dtree::Forest::lookup_tagged`]'s answer, from the compiled code.
    pub fn lookup(&self, v: &[u32; 5], has_ports: bool) -> u32 {
        if !dtree::in_widths(v, has_ports) {
            return u32::MAX; // (the compiled walk takes the context's fields, always within)
        }
        // SAFETY: the code reads only the arguments and the forest's words and boxes, owned
        // by `self` and unchanged since the code was compiled.
        unsafe { (self.f)(v[0], v[1], v[2], v[3], v[4], u32::from(has_ports)) }
    }

    pub fn forest(&self) -> &dtree::Forest {
        &self.forest
    }
}

impl JitProgram {
    /// Compiles the program. The program must have passed `ir::verify`.
    pub fn compile(program: &Program, opts: Options) -> Result<JitProgram, JitError> {
        let d = call_depth(program);
        if d > 63 {
            return Err(JitError::TooDeep(d));
        }
        let (module, ptr) = jit_module()?;
        let mut module = ModuleGuard(Some(module));
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.returns.push(AbiParam::new(types::I32));
        let codegen = |e: cranelift_module::ModuleError| JitError::Codegen(e.to_string());
        let mut parse_sig = sig.clone();
        parse_sig.params.push(AbiParam::new(ptr));
        parse_sig.params.push(AbiParam::new(types::I32));
        let parse_id = module
            .declare_function("parse", Linkage::Local, &parse_sig)
            .map_err(codegen)?;
        let plans = passive_plans(program);
        let entry_ids: Vec<FuncId> = PATH_NAMES
            .iter()
            .map(|p| {
                module
                    .declare_function(&format!("entry_{p}"), Linkage::Local, &parse_sig)
                    .map_err(codegen)
            })
            .collect::<Result<_, _>>()?;
        let chain_ids: Vec<FuncId> = (0..program.chains.len())
            .map(|i| {
                module
                    .declare_function(&format!("c{i}"), Linkage::Local, &sig)
                    .map_err(codegen)
            })
            .collect::<Result<_, _>>()?;
        // long chains are split into pieces, never inside a decision-tree run
        let mut pieces: Vec<Vec<(std::ops::Range<usize>, FuncId)>> = Vec::new();
        // base chains light enough to be emitted inside the passive entries too
        let mut in_entry: Vec<bool> = Vec::new();
        for (i, c) in program.chains.iter().enumerate() {
            let mut total = 0usize;
            let mut ranges = Vec::new();
            let runs = if opts.decision_trees {
                dtree::find_runs(&c.rules, opts.min_run)
            } else {
                vec![]
            };
            let (mut start, mut weight, mut k) = (0usize, 0usize, 0usize);
            while k < c.rules.len() {
                let (end, w) = match runs.iter().find(|r| r.start == k) {
                    Some(r) => (r.end, 1 + (r.end - r.start) / 16),
                    None => (k + 1, 1),
                };
                if weight + w > opts.piece.max(1) && weight > 0 {
                    ranges.push(start..k);
                    start = k;
                    weight = 0;
                }
                weight += w;
                total += w;
                k = end;
            }
            in_entry.push(ranges.is_empty() && total <= ENTRY_WEIGHT);
            if !ranges.is_empty() {
                ranges.push(start..c.rules.len());
            }
            let ids = ranges
                .into_iter()
                .enumerate()
                .map(|(j, r)| {
                    module
                        .declare_function(&format!("c{i}_{j}"), Linkage::Local, &sig)
                        .map(|id| (r, id))
                        .map_err(codegen)
                })
                .collect::<Result<Vec<_>, _>>()?;
            pieces.push(ids);
        }
        let patterns = collect_patterns(program);
        let pattern_idx: HashMap<IfName, usize> = patterns
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut data = Vec::new();
        let mut trees = Vec::new();
        let mut stateful = Vec::new();
        let mut log_sites = Vec::new();
        let mut nat = Vec::new();
        let mut clif = opts.keep_clif.then(String::new);
        let mut fctx = FunctionBuilderContext::new();
        let mut cctx: Context = module.make_context();
        let mut gen = Gen {
            program,
            ptr,
            chain_ids: chain_ids.clone(),
            pieces: pieces.clone(),
            patterns: &pattern_idx,
            data: &mut data,
            trees: &mut trees,
            stateful: &mut stateful,
            log_sites: &mut log_sites,
            nat: &mut nat,
            opts,
            tree_rules: 0,
            call_sites: call_sites(program),
            inline_depth: 0,
            dyn_rule: None,
            fields: Vec::new(),
            ret_to: None,
            in_entry,
            forests: Vec::new(),
        };
        let mut code_size = 0;
        let target = module.target_config();
        // what each function is: the parser, a whole chain, a long chain's main, or a piece
        enum Job {
            Parse,
            Entry(usize),
            Chain(usize),
            Main(usize),
            Piece(usize, std::ops::Range<usize>),
        }
        let mut jobs: Vec<(FuncId, Job)> = vec![(parse_id, Job::Parse)];
        jobs.extend(
            entry_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, Job::Entry(i))),
        );
        for (i, id) in chain_ids.iter().enumerate() {
            if pieces[i].is_empty() {
                jobs.push((*id, Job::Chain(i)));
            } else {
                jobs.push((*id, Job::Main(i)));
                for (r, pid) in &pieces[i] {
                    jobs.push((*pid, Job::Piece(i, r.clone())));
                }
            }
        }
        for (id, job) in jobs {
            cctx.func.signature = match job {
                Job::Parse | Job::Entry(_) => parse_sig.clone(),
                _ => sig.clone(),
            };
            cctx.func.name = UserFuncName::user(0, id.as_u32());
            {
                let mut b = FunctionBuilder::new(&mut cctx.func, &mut fctx);
                match &job {
                    Job::Parse => gen.parse(&mut b),
                    Job::Entry(i) => gen.passive_entry(&mut b, &plans[*i]),
                    Job::Chain(i) => gen.chain(&mut b, *i, None),
                    Job::Main(i) => gen.chain_main(&mut b, *i),
                    Job::Piece(i, r) => gen.chain(&mut b, *i, Some(r.clone())),
                }
                b.finalize(target);
            }
            if let Some(c) = clif.as_mut() {
                let name = match &job {
                    Job::Parse => "parse".to_string(),
                    Job::Entry(i) => {
                        format!("entry of the {} path", PATH_NAMES[*i])
                    }
                    Job::Chain(i) | Job::Main(i) => {
                        format!("chain c{i} ({})", program.chains[*i].display_name())
                    }
                    Job::Piece(i, r) => format!("chain c{i}, rules {}..{}", r.start, r.end),
                };
                c.push_str(&format!("; {name}\n{}\n", cctx.func.display()));
            }
            module
                .define_function(id, &mut cctx)
                .map_err(|e| JitError::Codegen(format!("{e:?}")))?;
            code_size += cctx
                .compiled_code()
                .map(|c| c.code_buffer().len())
                .unwrap_or(0);
            module.clear_context(&mut cctx);
        }
        let tree_rules = gen.tree_rules;
        module.finalize_definitions().map_err(codegen)?;
        // SAFETY: each id was defined above in the C calling convention of the host, the
        // parser's with the signature `fn(*mut Ctx, *const u8, u32) -> u32`, each chain's
        // with `fn(*mut Ctx) -> u32`, and the module is kept alive as long as `self`.
        let parse: ParseFn =
            unsafe { std::mem::transmute(module.get_finalized_function(parse_id)) };
        let chains: Vec<ChainFn> = chain_ids
            .iter()
            // SAFETY: as above.
            .map(|id| unsafe {
                std::mem::transmute::<*const u8, ChainFn>(module.get_finalized_function(*id))
            })
            .collect();
        let n = program.rule_count();
        let ops = hook_ops(program, &[]);
        // SAFETY: as above, with the signature `fn(*mut Ctx, *const u8, u32) -> u32`.
        let entries: [ParseFn; 3] = std::array::from_fn(|i| unsafe {
            std::mem::transmute::<*const u8, ParseFn>(module.get_finalized_function(entry_ids[i]))
        });
        Ok(JitProgram {
            program: program.clone(),
            _module: module,
            parse,
            chains,
            patterns,
            _data: data,
            _trees: trees,
            stateful,
            nat,
            log_sites,
            counts: vec![[0; 2]; n],
            policy_counts: vec![(0, 0); program.chains.len()],
            scratch: (Vec::new(), Vec::new()),
            cells: Cells::default(),
            clif,
            registered: Vec::new(),
            ops,
            entries,
            tree_rules,
            pending: (NO_RULE, 0),
            code_size,
        })
    }

    /// Registers a function at a hook: from the next packet on, [`Hooks::call`] runs it
    /// there with `f.id`, in priority order among the tables and the other functions.
    pub fn register(&mut self, f: HookFn) {
        self.registered.push(f);
        self.ops = hook_ops(&self.program, &self.registered);
    }

    /// The steps of `hook`, in the order a packet meets them.
    pub fn hook_ops(&self, hook: Hook) -> &[HookOp] {
        &self.ops[hook.index()]
    }

    /// Bytes the decision trees use.
    pub fn tree_memory(&self) -> usize {
        self._trees.iter().map(|t| t.memory()).sum()
    }

    /// The Cranelift IR of every function, when compiled with `keep_clif`.
    pub fn clif(&self) -> Option<&str> {
        self.clif.as_deref()
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Per-rule (packets, bytes) counters, indexed by rule id (the last deferred bump
    /// included).
    pub fn counters(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (rule, len) = self.pending;
        self.counts.iter().enumerate().map(move |(i, &[p, b])| {
            if i as u32 == rule {
                (p + 1, b + u64::from(len))
            } else {
                (p, b)
            }
        })
    }

    /// The (packets, bytes) each base chain's policy decided (`iptables -L -v`'s "policy
    /// DROP 3 packets, 180 bytes"), indexed by chain id; (0, 0) for subchains.
    pub fn policy_counters(&self) -> &[(u64, u64)] {
        &self.policy_counts
    }

    fn iface_bits(&self, name: Option<&str>, out: &mut Vec<u64>) {
        let words = self.patterns.len().div_ceil(64).max(1);
        if out.len() == words {
            out.fill(0);
        } else {
            out.clear();
            out.resize(words, 0);
        }
        for (i, p) in self.patterns.iter().enumerate() {
            if p.matches(name) {
                out[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Classifies raw IPv4 bytes along `path`, with the interpreter's conntrack and NAT
    /// behaviour.
    pub fn classify(
        &mut self,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
    ) -> Result<JitOutcome, InterpError> {
        self.classify_with(path, bytes, meta, oracle, &mut NoHooks)
    }

    /// Classifies with a datapath's conntrack and NAT plugged in.
    pub fn classify_with(
        &mut self,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
        hooks: &mut dyn Hooks,
    ) -> Result<JitOutcome, InterpError> {
        let mut out = JitOutcome::default();
        self.classify_into(path, bytes, meta, oracle, hooks, &mut out)?;
        Ok(out)
    }

    /// Whether generated code may call back into the runtime (for `limit`, `statistic`,
    /// `log`/`audit` or a NAT statement), and so needs an [`Env`].
    #[inline(always)]
    fn callbacks(&self) -> bool {
        !(self.stateful.is_empty() && self.log_sites.is_empty() && self.nat.is_empty())
    }

    /// [`JitProgram::classify_with`] writing into an outcome the caller keeps from packet to
    /// packet (its buffers are reused: no allocation, no copy of the outcome per packet).
    /// On an error the outcome's contents are unspecified.
    pub fn classify_into(
        &mut self,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
        hooks: &mut dyn Hooks,
        out: &mut JitOutcome,
    ) -> Result<(), InterpError> {
        let passive = hooks.passive();
        if self.patterns.is_empty() {
            // no interface pattern: no rule reads the bit sets
            const NONE: &[u64] = &[0];
            let bits = (NONE, NONE);
            return self.run_any(passive, path, bytes, meta, oracle, hooks, bits, out);
        }
        // interface bit sets: reused buffers, no allocation per packet
        let mut iif_bits = std::mem::take(&mut self.scratch.0);
        let mut oif_bits = std::mem::take(&mut self.scratch.1);
        self.iface_bits(meta.iif.as_deref(), &mut iif_bits);
        self.iface_bits(meta.oif.as_deref(), &mut oif_bits);
        let bits = (&iif_bits[..], &oif_bits[..]);
        let r = self.run_any(passive, path, bytes, meta, oracle, hooks, bits, out);
        self.scratch = (iif_bits, oif_bits);
        r
    }

    /// The passive path (with or without an `Env`) or the general loop.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_any(
        &mut self,
        passive: bool,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
        hooks: &mut dyn Hooks,
        bits: (&[u64], &[u64]),
        out: &mut JitOutcome,
    ) -> Result<(), InterpError> {
        if passive && self.callbacks() {
            self.run_passive::<true>(path, bytes, meta, oracle, hooks, bits, out)
        } else if passive {
            self.run_passive::<false>(path, bytes, meta, oracle, hooks, bits, out)
        } else {
            self.run(path, bytes, meta, oracle, hooks, bits, out)
        }
    }

    /// The hooks' steps in full: conntrack, NAT points, routing, registered functions and
    /// queue handlers around the base chains (the pieces of one classification borrowed
    /// separately from `self`'s scratch buffers). Inlined into `classify_into`, as the
    /// passive path is: out of line it cost the datapath's pipeline bench about 15 ns per
    /// packet (386–390 against 368–375 ns).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
        hooks: &mut dyn Hooks,
        (iif_bits, oif_bits): (&[u64], &[u64]),
        out: &mut JitOutcome,
    ) -> Result<(), InterpError> {
        self.cells.clear();
        let counters = self.counts.as_mut_ptr();
        let env = Env::new(
            (&self.program, &self.stateful, &self.log_sites, &self.nat),
            &self.cells,
            path,
            meta,
            oracle,
            hooks,
        );
        // (the general loop counts policy decisions itself: it runs no passive entry)
        let counts = (counters, std::ptr::null_mut());
        let mut ctx = Ctx::new(bytes, meta, (iif_bits, oif_bits), counts, env.as_ptr());
        // SAFETY: `parse` is generated code of signature `fn(*mut Ctx, *const u8, u32) ->
        // u32`; it reads at most `len` bytes from `data`, which are `bytes`, and writes the
        // ctx's header fields.
        if unsafe { (self.parse)(&mut ctx, bytes.as_ptr(), ctx.len) } == 0 {
            not_ipv4(out, path);
            return Ok(());
        }
        // (the output interface: `env.routed_oif` once routing set it, `meta.oif` until then)
        let mut routed_oif_bits: Vec<u64> = Vec::new();
        let mut last = NO_RULE;
        let mut path = path;
        // the headers the hooks see: one packet for the whole run, its fields refreshed
        // from the context before each call (no allocation per step)
        let mut scratch = ctx_packet(&ctx);
        scratch.iif = meta.iif.clone();
        scratch.oif = meta.oif.clone();
        let refresh = |p: &mut Packet, ctx: &Ctx| fill_packet(p, ctx);
        let mut hi = 0;
        while let Some(&hook) = path.hooks().get(hi) {
            hi += 1;
            // translated already at this hook (by the nat chain or its place)
            let mut nat_done = false;
            let mut repeats = 0;
            let mut i = 0;
            let ops = &self.ops[hook.index()];
            while let Some(&op) = ops.get(i) {
                i += 1;
                let v = match op {
                    HookOp::Conntrack => {
                        refresh(&mut scratch, &ctx);
                        ctx.ct = u32::from(env.hooks.borrow_mut().conntrack(
                            hook,
                            &scratch,
                            ctx.ct as u8,
                        ));
                        continue;
                    }
                    HookOp::NatPoint => {
                        if !nat_done {
                            nat_done = true;
                            refresh(&mut scratch, &ctx);
                            env.hooks.borrow_mut().nat_point(hook, &mut scratch);
                            write_back(&mut ctx, &scratch);
                        }
                        continue;
                    }
                    HookOp::Fn(id) => {
                        ctx.rule = NO_RULE;
                        refresh(&mut scratch, &ctx);
                        let v = env.hooks.borrow_mut().call(id, hook, &mut scratch);
                        write_back(&mut ctx, &scratch);
                        ctx.mark = scratch.mark;
                        v
                    }
                    HookOp::Table(k) => {
                        let e = &self.program.hooks[hook.index()][k];
                        if e.table == Table::Nat {
                            // the nat chain sees a connection's first packet only; the
                            // others are translated here as their connection says
                            let translated = nat_done;
                            nat_done = true;
                            if !first_packet(&ctx) {
                                if !translated {
                                    refresh(&mut scratch, &ctx);
                                    env.hooks.borrow_mut().nat_point(hook, &mut scratch);
                                    write_back(&mut ctx, &scratch);
                                }
                                continue;
                            }
                        }
                        let f = self.chains[e.chain.0 as usize];
                        let policy = &mut self.policy_counts[e.chain.0 as usize];
                        let pending = &mut self.pending;
                        // SAFETY: as `run_base` requires: `ctx.env` points to `env`, alive
                        // until the end of this function, and no borrow of its cells is
                        // held across the call; `ctx.counters` is `self.counts`, which
                        // nothing borrows.
                        let r =
                            unsafe { run_base(before_conntrack(e), f, &mut ctx, policy, pending) };
                        last = ctx.rule;
                        match chain_end(r, &ctx, env.error)? {
                            ChainEnd::Next => continue,
                            ChainEnd::Hook(v) => v,
                            ChainEnd::Reject(kind) => {
                                out.fate = Fate::Reject(kind);
                                finish(
                                    out,
                                    &ctx,
                                    &mut env.logs.borrow_mut(),
                                    path,
                                    &meta.iif,
                                    env.routed_oif.borrow().as_ref().unwrap_or(&meta.oif),
                                );
                                return Ok(());
                            }
                        }
                    }
                };
                // a queued packet goes to its queue's handler, which may give it back
                let mut v = v;
                let mut hops = 0;
                while let HookVerdict::Queue { num, bypass } = v {
                    refresh(&mut scratch, &ctx);
                    let queued = env
                        .hooks
                        .borrow_mut()
                        .queue(num, bypass, hook, &mut scratch);
                    let Some(r) = queued else {
                        break;
                    };
                    write_back(&mut ctx, &scratch);
                    ctx.mark = scratch.mark;
                    hops += 1;
                    v = if hops > MAX_REPEATS {
                        HookVerdict::Drop
                    } else {
                        r
                    };
                }
                let fate = match v {
                    HookVerdict::Accept => {
                        repeats = 0;
                        continue;
                    }
                    HookVerdict::Stop => break,
                    HookVerdict::Repeat if repeats < MAX_REPEATS => {
                        repeats += 1;
                        i -= 1;
                        continue;
                    }
                    HookVerdict::Repeat | HookVerdict::Drop => Fate::Drop,
                    HookVerdict::Queue { num, bypass } => Fate::Queue { num, bypass },
                    HookVerdict::Stolen => Fate::Stolen,
                };
                out.fate = fate;
                let oif = env.routed_oif.borrow();
                let oif = oif.as_ref().unwrap_or(&meta.oif);
                finish(out, &ctx, &mut env.logs.borrow_mut(), path, &meta.iif, oif);
                return Ok(());
            }
            if hook == Hook::Prerouting {
                // routing: a destination NAT decides where the packet goes on
                refresh(&mut scratch, &ctx);
                let (routed, routed_oif) = env.hooks.borrow_mut().route(path, &scratch);
                if routed != path && routed.hooks().first() == Some(&Hook::Prerouting) {
                    path = routed;
                    env.path.set(routed);
                }
                let changed = &routed_oif != env.routed_oif.borrow().as_ref().unwrap_or(&meta.oif);
                if changed {
                    self.iface_bits(routed_oif.as_deref(), &mut routed_oif_bits);
                    // the buffer lives until the end of this function, past every use of
                    // `ctx`
                    ctx.oif_bits = routed_oif_bits.as_ptr();
                    scratch.oif = routed_oif.clone();
                    *env.routed_oif.borrow_mut() = Some(routed_oif);
                }
            }
        }
        ctx.rule = last;
        out.fate = Fate::Accept;
        let oif = env.routed_oif.borrow();
        let oif = oif.as_ref().unwrap_or(&meta.oif);
        finish(out, &ctx, &mut env.logs.borrow_mut(), path, &meta.iif, oif);
        Ok(())
    }

    /// The hooks' steps when the hooks are passive ([`Hooks::passive`]): only the base chains
    /// run. Conntrack, the NAT points, routing and registered functions change nothing, and a
    /// queued packet leaves the classification (no handler gives it back), so they are
    /// skipped; what remains is the general loop's answer without its header copies. One
    /// call does it: the path's passive entry ([`Gen::passive_entry`]) parses the packet
    /// and runs the path's base chains from a flat plan ([`passive_plans`]); the driver
    /// settles the deferred counter bump and writes the outcome. `CALLBACKS`: the program
    /// may call back ([`JitProgram::callbacks`]); without, no [`Env`] is built and
    /// `Ctx::env` is null (measured: 2.5 ns of the 19 a 1-rule program takes per packet).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_passive<const CALLBACKS: bool>(
        &mut self,
        path: PathKind,
        bytes: &[u8],
        meta: &Meta,
        oracle: &mut dyn Oracle,
        hooks: &mut dyn Hooks,
        bits: (&[u64], &[u64]),
        out: &mut JitOutcome,
    ) -> Result<(), InterpError> {
        self.cells.clear();
        let counters = self.counts.as_mut_ptr();
        // only callbacks use the environment: a program without any needs none built
        let env = CALLBACKS.then(|| {
            Env::new(
                (&self.program, &self.stateful, &self.log_sites, &self.nat),
                &self.cells,
                path,
                meta,
                oracle,
                hooks,
            )
        });
        let env_ptr = env.as_ref().map_or(std::ptr::null_mut(), Env::as_ptr);
        let counts = (counters, self.policy_counts.as_mut_ptr());
        let mut ctx = Ctx::new(bytes, meta, bits, counts, env_ptr);
        let ctx = &mut ctx;
        // SAFETY: the path's passive entry, generated code of signature `fn(*mut Ctx, *const
        // u8, u32) -> u32`: it reads at most `len` bytes from `data`, which are `bytes`;
        // the chains it calls read the ctx, the counters (sized for every rule id) and the
        // interface bit sets (sized for every pattern); it adds to `ctx.policy_counts`
        // (`self.policy_counts`, one pair per chain) at the index of a base chain. None of
        // these is borrowed: the pointers were taken just above. `ctx.env` points to `env`
        // (set above), alive for the whole call, and no borrow of its cells is held across
        // the call; or, without callbacks in the program, it is null and never read.
        let r = unsafe { (self.entries[path_index(path)])(ctx, bytes.as_ptr(), ctx.len) };
        if r == verdict::NOT_IPV4 {
            not_ipv4(out, path);
            return Ok(());
        }
        // SAFETY: `ctx.counters` is `self.counts`, which nothing borrows, and
        // `self.pending` holds no rule or one of this program
        unsafe { settle_deferred(ctx, &mut self.pending) };
        out.fate = match chain_end(r, ctx, &self.cells.error)? {
            ChainEnd::Next => Fate::Accept,
            ChainEnd::Hook(HookVerdict::Queue { num, bypass }) => Fate::Queue { num, bypass },
            ChainEnd::Hook(_) => Fate::Drop,
            ChainEnd::Reject(kind) => Fate::Reject(kind),
        };
        finish(
            out,
            ctx,
            self.cells.logs.get_mut(),
            path,
            &meta.iif,
            &meta.oif,
        );
        Ok(())
    }
}

impl Cells {
    /// Empties what the last classification left (logs and an error when it ended in one,
    /// the routed output interface when routing set one).
    #[inline(always)]
    fn clear(&mut self) {
        self.logs.get_mut().clear();
        // (tested first: an assignment calls the drop glue on every packet)
        if self.error.get_mut().is_some() {
            *self.error.get_mut() = None;
        }
        if self.routed_oif.get_mut().is_some() {
            *self.routed_oif.get_mut() = None;
        }
    }
}

impl<'a> Env<'a> {
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn new(
        (program, stateful, log_sites, nat): (
            &'a Program,
            &'a [(RuleId, Pred)],
            &'a [(RuleId, u32)],
            &'a [(RuleId, Stmt)],
        ),
        cells: &'a Cells,
        path: PathKind,
        meta: &'a Meta,
        oracle: &'a mut dyn Oracle,
        hooks: &'a mut dyn Hooks,
    ) -> Env<'a> {
        Env {
            program,
            oracle: RefCell::new(oracle),
            hooks: RefCell::new(hooks),
            path: Cell::new(path),
            stateful,
            log_sites,
            nat,
            meta,
            routed_oif: &cells.routed_oif,
            error: &cells.error,
            logs: &cells.logs,
        }
    }

    /// What `Ctx::env` holds: shared, the callbacks take it back as `&Env`.
    fn as_ptr(&self) -> *mut std::ffi::c_void {
        self as *const Env<'_> as *mut std::ffi::c_void
    }
}

impl Ctx {
    /// A classification's context before `parse`: the packet and its metadata, the
    /// interface bit sets, the counters and the callbacks' environment.
    #[inline(always)]
    fn new(
        bytes: &[u8],
        meta: &Meta,
        (iif_bits, oif_bits): (&[u64], &[u64]),
        (counters, policy_counts): (*mut [u64; 2], *mut (u64, u64)),
        env: *mut std::ffi::c_void,
    ) -> Ctx {
        Ctx {
            data: bytes.as_ptr(),
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            proto: 0,
            saddr: 0,
            daddr: 0,
            sport: 0,
            dport: 0,
            icmp_type: 0,
            icmp_code: 0,
            tcp_flags: 0,
            l4: 0,
            ttl: 0,
            mark: meta.mark,
            ct: u32::from(meta.ct),
            rule: NO_RULE,
            aux: 0,
            deferred: NO_RULE,
            iif_bits: iif_bits.as_ptr(),
            oif_bits: oif_bits.as_ptr(),
            counters,
            policy_counts,
            env,
        }
    }
}

/// The outcome for a packet that is not IPv4 (or whose IPv4 header is cut short): dropped
/// before any chain, no header fields.
fn not_ipv4(out: &mut JitOutcome, path: PathKind) {
    out.fate = Fate::Drop;
    out.path = path;
    out.deciding_rule = None;
    out.packet = Packet {
        l4: false,
        ..Packet::default()
    };
    out.logs.clear();
    out.log_stmts.clear();
}

/// Whether a base chain runs before conntrack (the raw table's place): no connection yet.
fn before_conntrack(e: &HookEntry) -> bool {
    e.priority < fwc_compiler::ir::CONNTRACK_PRIORITY
}

/// The paths' names, by [`path_index`] (the passive entries' function names and headings).
const PATH_NAMES: [&str; 3] = ["input", "forward", "output"];

/// Where a path's passive entry is in `JitProgram::entries` (and its plan in
/// [`passive_plans`]'s answer).
fn path_index(path: PathKind) -> usize {
    match path {
        PathKind::Input => 0,
        PathKind::Forward => 1,
        PathKind::Output => 2,
    }
}

/// A base chain as passive hooks run it.
#[derive(Clone, Copy)]
struct PassiveStep {
    chain: u32,
    /// the nat table's chain (a connection's first packet only)
    nat: bool,
    /// runs before conntrack (the raw table's place)
    raw: bool,
}

/// Per path, the base chains of its hooks in the order a packet meets them: what the path's
/// passive entry runs ([`Gen::passive_entry`]).
fn passive_plans(program: &Program) -> [Vec<PassiveStep>; 3] {
    const PATHS: [PathKind; 3] = [PathKind::Input, PathKind::Forward, PathKind::Output];
    debug_assert!(PATHS.iter().enumerate().all(|(i, &p)| path_index(p) == i));
    PATHS.map(|path| {
        path.hooks()
            .iter()
            .flat_map(|h| &program.hooks[h.index()])
            .map(|e| PassiveStep {
                chain: e.chain.0,
                nat: e.table == Table::Nat,
                raw: before_conntrack(e),
            })
            .collect()
    })
}

/// Whether the packet opens a connection (NEW or RELATED): the nat chains see those only.
fn first_packet(ctx: &Ctx) -> bool {
    ctx.ct as u8 & (ct::NEW | ct::RELATED) != 0
}

/// How a base chain's run ends for its hook.
enum ChainEnd {
    /// accepted: on to the hook's next step
    Next,
    /// dropped or queued
    Hook(HookVerdict),
    Reject(RejectKind),
}

/// Runs base chain `f` (`raw`: attached before conntrack) on the packet: `ctx.rule` is the
/// deciding rule after it, or [`NO_RULE`] when the policy decided (then counted in
/// `policy`). Returns the chain's verdict code.
///
/// A rule the chain left in `ctx.deferred` has its counters bumped one classification
/// later: `pending` takes it, and the bump `pending` held before is made now, its counter
/// line prefetched since. The line of a decision tree's hit is rarely cached, and a
/// read-modify-write on it holds up the classification until the line comes in (10K rules
/// in place, acl / fw / ipc: 47.5 / 56.5 / 56 -> 44.5 / 53.5 / 54 ns; without any bump
/// 40 / 50 / 50).
///
/// # Safety
/// `f` is generated chain code of this program; `ctx` is the classification's context with
/// `ctx.env` pointing to its live `Env`, none of whose `RefCell`s is borrowed (the
/// callbacks borrow them) — or null when the program has no callbacks (generated code reads
/// `ctx.env` only to pass it to one); `ctx.counters` points to the program's counters,
/// sized for every rule id, which no reference aliases; `pending` holds ([`NO_RULE`], 0) or
/// a rule id of this program.
unsafe fn run_base(
    raw: bool,
    f: ChainFn,
    ctx: &mut Ctx,
    policy: &mut (u64, u64),
    pending: &mut (u32, u32),
) -> u32 {
    ctx.rule = NO_RULE;
    // before conntrack (raw) there is no connection: `ct state` is invalid, or untracked
    // once `notrack` ran (the interpreter's rule)
    let before_ct = raw.then_some(ctx.ct);
    if before_ct.is_some() && ctx.ct != u32::from(ct::UNTRACKED) {
        ctx.ct = u32::from(ct::INVALID);
    }
    // SAFETY: generated chain code of signature `fn(*mut Ctx) -> u32`; it reads the ctx, the
    // counters (sized for every rule id) and the interface bit sets (sized for every
    // pattern), and calls back with `ctx.env`, live as the caller promises.
    let r = unsafe { f(ctx) };
    // SAFETY: as the caller promises
    unsafe { settle_deferred(ctx, pending) };
    if let Some(b) = before_ct {
        if ctx.ct != u32::from(ct::UNTRACKED) {
            ctx.ct = b;
        }
    }
    // no rule decided: the chain's policy did
    if ctx.rule == NO_RULE && matches!(r, verdict::ACCEPT | verdict::DROP) {
        policy.0 += 1;
        policy.1 += u64::from(ctx.len);
    }
    r
}

/// Takes the rule a chain left in `ctx.deferred` into `pending`, after making the bump
/// `pending` held (see [`run_base`]).
///
/// # Safety
/// `ctx.counters` points to the program's counters, sized for every rule id, which no
/// reference aliases; `pending` holds ([`NO_RULE`], 0) or a rule id of this program.
#[inline(always)]
unsafe fn settle_deferred(ctx: &mut Ctx, pending: &mut (u32, u32)) {
    if ctx.deferred == NO_RULE {
        return;
    }
    let counters = ctx.counters;
    let (rule, len) = *pending;
    if rule != NO_RULE {
        // SAFETY: a rule id of this program, as the caller promises, into the counters,
        // sized for every rule id and aliased by no reference (generated code, which
        // also writes them, is not running)
        let c = unsafe { &mut *counters.add(rule as usize) };
        c[0] += 1;
        c[1] += u64::from(len);
    }
    *pending = (ctx.deferred, ctx.len);
    // (generated code leaves only rule ids of the program there; the prefetch reads
    // nothing in any case)
    prefetch(counters.wrapping_add(ctx.deferred as usize));
    ctx.deferred = NO_RULE;
}

/// Asks for the cache line at `p` ahead of a write (a hint: nothing is read, and no
/// address faults).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    // SAFETY: the intrinsic needs SSE, which every x86_64 processor has (the target's
    // baseline); a prefetch dereferences nothing.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// What a base chain's verdict code means for its hook; an error a callback left (or the
/// one a chain can only end with for lack of an interface address).
#[inline(always)]
fn chain_end(
    r: u32,
    ctx: &Ctx,
    error: &RefCell<Option<InterpError>>,
) -> Result<ChainEnd, InterpError> {
    Ok(match r {
        verdict::ACCEPT => ChainEnd::Next,
        verdict::DROP => ChainEnd::Hook(HookVerdict::Drop),
        verdict::QUEUE => ChainEnd::Hook(HookVerdict::Queue {
            num: ctx.aux as u16,
            bypass: ctx.aux >> 16 != 0,
        }),
        verdict::REJECT => ChainEnd::Reject(if ctx.aux == 256 {
            RejectKind::TcpReset
        } else {
            RejectKind::IcmpUnreach(ctx.aux as u8)
        }),
        _ => {
            return Err(error.take().unwrap_or(InterpError::NoIfaceAddr {
                rule: RuleId(ctx.rule),
                iface: None,
            }))
        }
    })
}

/// Writes the end of a classification into the caller's outcome (its strings and vectors
/// reused); the fate is set by the caller (an enum built on the stack and passed in costs a
/// store-forwarding stall on every packet).
#[inline(always)]
fn finish(
    out: &mut JitOutcome,
    ctx: &Ctx,
    logs: &mut Vec<(RuleId, u32)>,
    path: PathKind,
    iif: &Option<String>,
    oif: &Option<String>,
) {
    out.path = path;
    out.deciding_rule = (ctx.rule != NO_RULE).then_some(RuleId(ctx.rule));
    fill_packet(&mut out.packet, ctx);
    // (tests first: most packets have no interface names and log nothing, and the general
    // `clone_from` and `drain` cost several ns per packet even then)
    if iif.is_some() || out.packet.iif.is_some() {
        out.packet.iif.clone_from(iif);
    }
    if oif.is_some() || out.packet.oif.is_some() {
        out.packet.oif.clone_from(oif);
    }
    out.logs.clear();
    out.log_stmts.clear();
    if !logs.is_empty() {
        for &(r, k) in logs.iter() {
            out.logs.push(r);
            out.log_stmts.push(k);
        }
        logs.clear();
    }
}

/// A 32-bit constant with the given bit pattern.
fn c32(b: &mut FunctionBuilder, v: u32) -> Value {
    b.ins().iconst(types::I32, i64::from(v as i32))
}

/// Compares an integer value with a constant (given as its unsigned 32-bit pattern).
fn icmp_u(b: &mut FunctionBuilder, cc: IntCC, x: Value, imm: impl TryInto<u32>) -> Value {
    let v = imm.try_into().unwrap_or(u32::MAX);
    let ty = b.func.dfg.value_type(x);
    let k = if ty == types::I32 {
        c32(b, v)
    } else {
        b.ins().iconst(ty, i64::from(v))
    };
    b.ins().icmp(cc, x, k)
}
