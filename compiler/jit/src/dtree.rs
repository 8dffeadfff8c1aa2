//! A decision tree for long runs of plain 5-tuple rules (HiCuts-style equal-size cuts).
//!
//! A *run* is a sequence of consecutive rules that each (a) match only on source and
//! destination address, protocol and ports, each with one interval (no negation, no
//! multi-interval sets), and (b) end the chain (their last statement is terminal, with no
//! `jump` or verdict map before it). For such a run "the first rule that matches" decides, so
//! the run can be searched by any structure that finds the first match.
//!
//! The tree cuts the 5-dimensional header space: each internal node splits one dimension's
//! current aligned range into 2^k equal parts, picking the dimension and `k` that minimise the
//! largest child (HiCuts' heuristic) under a space bound (children hold at most `SPFAC` times
//! the parent's rules). A node stops at `BINTH` rules, when no cut separates its rules, or when
//! a rule covers the node's whole region — every rule after it is then unreachable there and
//! is dropped from the node. A leaf keeps its rules in run order, so its linear scan returns
//! the first match. Lookup cost is the depth (a shift and mask per level) plus at most
//! `BINTH` box checks, independent of the run's length.

use cranelift_codegen::ir::Value;
use cranelift_codegen::ir::{self, condcodes::IntCC, types, BlockArg, InstBuilder, MemFlagsData};
use cranelift_frontend::FunctionBuilder;
use fwc_compiler::analysis::IntervalSet;
use fwc_compiler::ir::{Field, Pred, Rule, Stmt};

/// Dimensions, in the order boxes store them.
const DIMS: [Field; 5] = [
    Field::Saddr,
    Field::Daddr,
    Field::Proto,
    Field::Sport,
    Field::Dport,
];
const WIDTH: [u8; 5] = [32, 32, 8, 16, 16];
/// most rules a leaf holds before the builder tries to cut it
const BINTH: usize = 8;
/// most bits one cut may take, the choices [`Forest::from_boxes`] builds (2^6 = 64
/// children, 2^8 = 256)
pub const CUT_BITS: [u8; 2] = [6, 8];
/// most bits a tree's root may cut (4,096 children), for a tree of enough rules
/// (`root_bits`)
pub const ROOT_BITS: u8 = 12;

/// Most bits the root of a tree of `n` rules may cut, where the tree's other cuts take
/// `max_k`: up to [`ROOT_BITS`], at most 4 children per rule (a small tree's root no wider
/// than its other cuts). The root's step is taken with constants and ahead of the tree's
/// walk (`Forest::emit_lookup`), so a wide root spares a level of dependent loads.
/// Measured at 10K rules in place (roots of at most `max_k` against 12 bits): generated
/// acl 45 -> 41.6 ns, fw 51.5 -> 50, ipc 54.7 -> 50.5, fw1_10k 44.8 -> 38.8, ipc1_10k 68
/// -> 65, acl1_10k 50 either way; 14 bits did no better, 16 worse; at most one child per
/// two rules lost most of fw1_10k's gain (its small trees' roots).
fn root_bits(n: usize, max_k: u8) -> u8 {
    let log2 = (usize::BITS - n.leading_zeros()).saturating_sub(1) as u8;
    (log2 + 2).clamp(max_k, ROOT_BITS.max(max_k))
}
/// the children of a node hold at most this many times its rules
const SPFAC: usize = 4;
const MAX_DEPTH: usize = 40;

/// One rule of a run as a box: an inclusive interval per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleBox {
    pub lo: [u32; 5],
    pub hi: [u32; 5],
    /// the rule matches on a port, so it needs a packet that has ports (a box without
    /// it has full port ranges, as [`RuleBox::of`] makes them; a forest relies on that)
    pub needs_ports: bool,
}

impl RuleBox {
    /// The box of a plain 5-tuple rule, or `None` when the rule is not one.
    pub fn of(r: &Rule) -> Option<RuleBox> {
        let mut b = RuleBox {
            lo: [0; 5],
            hi: [u32::MAX, u32::MAX, 255, 65535, 65535],
            needs_ports: false,
        };
        for p in &r.preds {
            let Pred::Field {
                field,
                neg: false,
                op,
            } = p
            else {
                return None;
            };
            let d = DIMS.iter().position(|f| f == field)?;
            let s = IntervalSet::from_elems(op.elems());
            if s.0.len() != 1 {
                return None;
            }
            let (lo, hi) = s.0[0];
            b.lo[d] = b.lo[d].max(lo);
            b.hi[d] = b.hi[d].min(hi);
            if matches!(field, Field::Sport | Field::Dport) {
                b.needs_ports = true;
            }
        }
        Some(b)
    }

    /// Does the packet (as field values) match?
    #[inline]
    pub fn matches(&self, v: &[u32; 5], has_ports: bool) -> bool {
        if self.needs_ports && !has_ports {
            return false;
        }
        (0..5).all(|d| self.lo[d] <= v[d] && v[d] <= self.hi[d])
    }

    fn is_empty(&self) -> bool {
        (0..5).any(|d| self.lo[d] > self.hi[d])
    }
}

/// Does the rule end the chain whenever it matches, with nothing in between that could
/// continue (a `jump` or verdict map)?
fn ends_chain(r: &Rule) -> bool {
    r.stmts.last().is_some_and(Stmt::is_terminal)
        && !r
            .stmts
            .iter()
            .any(|s| matches!(s, Stmt::Jump(_) | Stmt::Vmap { .. }))
}

/// A range of rule positions `[start, end)` in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub end: usize,
}

/// Maximal runs of at least `min` plain, chain-ending 5-tuple rules.
pub fn find_runs(rules: &[Rule], min: usize) -> Vec<Run> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, r) in rules.iter().enumerate() {
        // a run longer than MAX_RUN ends there, and the next one begins
        let full = start.is_some_and(|s| i - s == MAX_RUN);
        if full {
            if let Some(s) = start.take() {
                out.push(Run { start: s, end: i });
            }
        }
        let ok = ends_chain(r) && RuleBox::of(r).is_some();
        match (ok, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= min.max(2) {
                    out.push(Run { start: s, end: i });
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if rules.len() - s >= min.max(2) {
            out.push(Run {
                start: s,
                end: rules.len(),
            });
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Node {
    /// child = children[first + ((v[dim] >> shift) & mask)]
    Cut {
        dim: u8,
        shift: u8,
        mask: u32,
        first: u32,
    },
    /// rules leaf_rules[start .. start + len], in run order
    Leaf { start: u32, len: u32 },
}

/// What a lookup did, for profiles ([`Forest::lookup_counting`]).
pub trait Work {
    /// a tree was walked
    fn tree(&mut self);
    /// a node word below a root was loaded
    fn node(&mut self);
    /// a leaf box was tested
    fn leaf_box(&mut self);
}

impl Work for () {
    #[inline(always)]
    fn tree(&mut self) {}
    #[inline(always)]
    fn node(&mut self) {}
    #[inline(always)]
    fn leaf_box(&mut self) {}
}

/// Totals of [`Work`]: trees walked, node words loaded, leaf boxes tested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkCount {
    pub trees: u64,
    pub nodes: u64,
    pub leaf_boxes: u64,
}

impl Work for WorkCount {
    fn tree(&mut self) {
        self.trees += 1;
    }
    fn node(&mut self) {
        self.nodes += 1;
    }
    fn leaf_box(&mut self) {
        self.leaf_boxes += 1;
    }
}

/// One tree: it cuts only the dimensions in `dims`.
#[derive(Debug)]
pub struct Tree {
    boxes: Vec<RuleBox>,
    nodes: Vec<Node>,
    children: Vec<u32>,
    leaf_rules: Vec<u32>,
    dims: [bool; 5],
    /// most leaf entries the builder may create before it stops cutting
    budget: usize,
    /// most bits one cut takes
    max_k: u8,
    /// most bits the root's cut takes (`root_bits`)
    root_k: u8,
}

/// Is a rule "large" in a dimension (so that cutting there would copy it into many
/// children)? Addresses wider than a /8, destination ports spanning more than 1024 values.
///
/// (Addresses wider than a /16 until 2026-11-28: the seed sets' /9-/16 prefixes then went
/// to trees that could not cut addresses. Forest alone at 10K rules, the bench's trace:
/// acl1_10k 33 → 31 ns, fw1_10k 29 → 23, ipc1_10k 67 → 50; the generated sets, whose
/// prefixes are /16 or longer or /0, unchanged.)
fn large(b: &RuleBox, d: usize) -> bool {
    // an empty box (a rule that can never match) counts as small everywhere
    let size = (u64::from(b.hi[d]) + 1).saturating_sub(u64::from(b.lo[d]));
    match d {
        0 | 1 => size > 1 << 24,
        4 => size > 1024,
        _ => true,
    }
}

/// The rules of a run split by where they are large (EffiCuts' separation), one tree per
/// group, each cutting only where all its rules are small; a lookup asks every tree that may
/// still beat the best match found so far.
///
/// The trees are built as [`Tree`]s and then frozen into one flat layout for lookups: every
/// node is one 64-bit word (a cut's children are consecutive words, so a level costs one
/// load), and every leaf holds copies of its rules' boxes, 32 bytes each with the rule's run
/// position, in run order (a leaf is one sequential scan, stopped at the best match so far).
#[derive(Debug)]
pub struct Forest {
    /// how the run's rules were split into trees
    pub separation: Separation,
    /// most bits one cut takes (one of [`CUT_BITS`])
    pub cut_bits: u8,
    /// per tree, sorted by the first rule each holds
    trees: Vec<FlatTree>,
    /// node words (see [`cut_word`] and [`leaf_word`])
    words: Vec<u64>,
    leaves: Vec<LeafBox>,
    /// [start, len] of the leaves too long for a leaf word's length field (an array:
    /// generated code reads its two halves at known offsets)
    long_leaves: Vec<[u32; 2]>,
    stats: Vec<TreeStats>,
}

#[derive(Debug, Clone, Copy)]
struct FlatTree {
    root: u64,
    /// the run position of its first rule: once a match before it is found, this tree and
    /// every later one can be skipped
    min: u32,
}

/// A rule's box as a leaf stores it (32 bytes: two to a cache line): per [`Key`] word, the
/// low ends of its lanes and their widths (high end minus low end) with the guard bits set,
/// so that a box test is two subtractions per word for all five dimensions (SWAR).
///
/// The run position and the tag ride in the bits above the lanes, which the test ignores:
/// position bits 7-19 in `lo[1]` bits 51-63 (a shift gives a lower bound of the position to
/// stop a leaf's scan by), bits 0-6 in `width[1]` bits 51-57, the tag in `width[1]` bits
/// 58-63.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct LeafBox {
    lo: [u64; 2],
    width: [u64; 2],
}

/// Where each dimension's lane starts in a [`Key`] (bit 64 and on: the second word): saddr,
/// sport and proto in the first word, daddr and dport in the second. Each lane has a guard
/// bit above it ([`GUARD`]); dport's lane is 17 bits wide: a packet without ports has dport
/// 0x10000 there, which no rule matching ports covers.
const KEY_AT: [u8; 5] = [0, 64, 50, 33, 97];

/// The guard bit above every lane, per word.
const GUARD: [u64; 2] = [1 << 32 | 1 << 49 | 1 << 58, 1 << 32 | 1 << 50];

/// Where the bits above the lanes start in the second word.
const SPARE_AT: u32 = 51;

/// A lookup's dport for a packet without ports.
const NO_PORTS: u32 = 0x10000;

impl LeafBox {
    fn of(b: &RuleBox, pos: u32) -> LeafBox {
        debug_assert!(pos <= MAX_RUN as u32);
        // (a rule that matches no port covers every port: the dport lane's top value,
        // a packet without ports, is added to its range)
        debug_assert!(
            b.needs_ports
                || b.is_empty()
                || (b.lo[3], b.hi[3], b.lo[4], b.hi[4]) == (0, 65535, 0, 65535),
            "a box without port matches has full port ranges"
        );
        // boxes in leaves are never empty and within each dimension's width; a rule that
        // matches no port also covers a packet without ports
        let hi = |d: usize, max: u32| u64::from(b.hi[d].min(max));
        let dport_hi = if b.needs_ports {
            hi(4, 65535)
        } else {
            u64::from(NO_PORTS)
        };
        let lo = b.lo.map(u64::from);
        let w = [
            hi(0, u32::MAX) - lo[0],
            hi(1, u32::MAX) - lo[1],
            hi(2, 255) - lo[2],
            hi(3, 65535) - lo[3],
            dport_hi - lo[4],
        ];
        let word = |v: [u64; 5], k: usize| {
            (0..5)
                .filter(|&d| usize::from(KEY_AT[d] >= 64) == k)
                .fold(0u64, |acc, d| acc | v[d] << (KEY_AT[d] & 63))
        };
        let pos = u64::from(pos);
        LeafBox {
            lo: [word(lo, 0), word(lo, 1) | (pos >> 7) << SPARE_AT],
            width: [
                word(w, 0) | GUARD[0],
                word(w, 1) | GUARD[1] | (pos & 0x7f) << SPARE_AT,
            ],
        }
    }

    /// The rule's position in the run.
    #[inline(always)]
    fn pos(&self) -> u32 {
        self.pos_high() << 7 | ((self.width[1] >> SPARE_AT) & 0x7f) as u32
    }

    /// The rule's position in the run, over 128.
    #[inline(always)]
    fn pos_high(&self) -> u32 {
        (self.lo[1] >> SPARE_AT) as u32
    }

    /// What [`Forest::set_tags`] gave the rule (0 until then).
    #[inline(always)]
    fn tag(&self) -> u8 {
        (self.width[1] >> (SPARE_AT + 7)) as u8
    }

    fn set_tag(&mut self, tag: u8) {
        assert!(usize::from(tag) <= MAX_TAG, "a tag fits 6 bits");
        let at = SPARE_AT + 7;
        self.width[1] = self.width[1] & !(0x3f << at) | u64::from(tag) << at;
    }

    /// Does the key's point lie in the box? Per lane, with the key's guard bit set,
    /// `(x | guard) - lo` cannot borrow from the next lane; without the guard bit it is
    /// `x - lo` (wrapping in the lane), and `(width | guard)` minus that keeps the guard bit
    /// exactly when `x - lo <= width`. The bits above the lanes take no part.
    #[inline(always)]
    fn matches(&self, k: &Key) -> bool {
        let u0 = self.width[0].wrapping_sub(k.0[0].wrapping_sub(self.lo[0]) & !GUARD[0]);
        let u1 = self.width[1].wrapping_sub(k.0[1].wrapping_sub(self.lo[1]) & !GUARD[1]);
        ((u0 & GUARD[0]) ^ GUARD[0]) | ((u1 & GUARD[1]) ^ GUARD[1]) == 0
    }
}

/// A group of fewer than 1/`MERGE_SHARE` of a run's rules joins a larger group (EffiCuts'
/// group merging): a lookup walks one tree less, for a few more rules in that tree's
/// leaves. Measured at 10K rules (forest alone, the bench's trace): ipc-style 5.0 -> 3.8
/// trees walked, 74 -> 52 ns; fw1_10k 4.8 -> 3.6 trees, 72 -> 42 ns; acl unchanged (1/8 or
/// 1/16 made fw-style leaves balloon).
const MERGE_SHARE: usize = 32;

/// How a run's rules are split into trees (EffiCuts' separation): by the dimensions in
/// which each rule is large (`large`), one tree per combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separation {
    /// by source address, destination address and destination port (up to 8 trees), each
    /// tree cutting only where all its rules are small
    ThreeWay,
    /// by the two addresses (up to 5 trees): fewer trees to walk, each free to cut the
    /// destination port (copying the rules large there into several children) — but the
    /// rules large in both addresses split again by destination port, as in `ThreeWay`
    /// (copies of those would balloon: they can be told apart by ports and protocol alone)
    Addresses,
}

impl Separation {
    /// The group of a rule: a bit per dimension it is large in.
    fn key(self, b: &RuleBox) -> u8 {
        let addresses = u8::from(large(b, 0)) | u8::from(large(b, 1)) << 1;
        let dport = u8::from(large(b, 4)) << 2;
        match self {
            Separation::ThreeWay => addresses | dport,
            Separation::Addresses if addresses == 3 => addresses | dport,
            Separation::Addresses => addresses,
        }
    }
}

/// The group of the rules large in every dimension the separations look at (both
/// addresses and the destination port).
const EVERYWHERE: u8 = 7;

/// The dimensions a group's tree may cut, the same in both separations: a group split off
/// by its large destination ports does not cut them, every other group may.
fn group_dims(key: u8) -> [bool; 5] {
    if key == EVERYWHERE {
        // rules wide in both addresses and the destination port can still be told apart
        // by protocol and source port (the space budget bounds any copying)
        [false, false, true, true, false]
    } else {
        [key & 1 == 0, key & 2 == 0, false, false, key & 4 == 0]
    }
}

/// Merges each small group (by [`MERGE_SHARE`], smallest first) into the largest group
/// that is large wherever it is and more — its tree cuts only where the small group's
/// rules are small too — but never into the group large everywhere, whose tree cannot cut
/// addresses (or destination ports).
fn merge_small_groups(groups: &mut std::collections::BTreeMap<u8, Vec<u32>>, total: usize) {
    let mut keys: Vec<u8> = groups.keys().copied().collect();
    keys.sort_by_key(|k| groups[k].len());
    for key in keys {
        let n = groups[&key].len();
        if n * MERGE_SHARE >= total {
            continue;
        }
        let target = groups
            .iter()
            .filter(|(t, _)| **t != key && **t != EVERYWHERE && **t & key == key)
            .max_by_key(|(_, p)| p.len())
            .map(|(t, _)| *t);
        let Some(t) = target.filter(|t| groups[t].len() > n) else {
            continue;
        };
        let moved = groups.remove(&key).unwrap_or_default();
        let g = groups.entry(t).or_default();
        g.extend(moved);
        // run order within a group (leaves keep it)
        g.sort_unstable();
    }
}

/// Points [`Forest::from_boxes`] estimates each separation's cost on, and their seed.
pub const ESTIMATE_SAMPLE: usize = 1024;
pub const ESTIMATE_SEED: u64 = 0x5eed_f0e5;

/// A leaf word with no rules (the root of a tree none of whose rules can match).
const EMPTY_LEAF: u64 = 1;

/// Where a tag starts in [`Forest::lookup_tagged`]'s answer (run positions fit below it).
pub const TAG_SHIFT: u32 = 24;

/// The largest tag [`Forest::set_tags`] takes (6 bits in a leaf box).
pub const MAX_TAG: usize = 63;

/// Most rules a run may have (leaf lengths and positions must fit their bits in a word).
pub const MAX_RUN: usize = (1 << 20) - 1;

/// The field values of a lookup in [`LeafBox`]'s lanes, their guard bits set: a cut takes
/// its bits from one of the two words with a shift, a box test subtracts word from word.
#[derive(Clone, Copy)]
struct Key([u64; 2]);

/// Whether the field values lie within their dimensions' widths (proto below 256, ports
/// below 65536; a packet without ports has no dport to check). No rule matches others.
#[inline(always)]
pub fn in_widths(v: &[u32; 5], has_ports: bool) -> bool {
    v[2] <= 255 && v[3] <= 65535 && (!has_ports || v[4] <= 65535)
}

impl Key {
    /// `None` for a value past its dimension's width (which no rule matches).
    #[inline(always)]
    fn of(v: &[u32; 5], has_ports: bool) -> Option<Key> {
        if !in_widths(v, has_ports) {
            return None;
        }
        let dport = if has_ports { v[4] } else { NO_PORTS };
        let x = [v[0], v[1], v[2], v[3], dport].map(u64::from);
        let mut k = GUARD;
        for d in 0..5 {
            k[usize::from(KEY_AT[d] >> 6)] |= x[d] << (KEY_AT[d] & 63);
        }
        Some(Key(k))
    }
}

/// A cut node: child = words[first + ((key >> at) & mask)], where `at` is the cut's
/// dimension's place in the [`Key`] plus its shift (the cut's bits never reach past its
/// dimension's width). Bit 0 is 0; bit 1 the key word (`at` / 64); bits 2-7 the shift
/// within it (`at` % 64); bits 8-31 mask; bits 32-63 first. (A shift of the word by 2 is
/// the shift within the key word, as a shift's amount is taken modulo 64: a step's chain of
/// dependent operations is two shorter than with `at` whole in bits 1-7.)
fn cut_word(dim: u8, shift: u8, mask: u32, first: usize) -> u64 {
    debug_assert!(dim < 5 && shift < 32 && mask < 1 << 24 && first < 1 << 32);
    let at = KEY_AT[dim as usize] + shift;
    u64::from(at >> 6) << 1 | u64::from(at & 63) << 2 | u64::from(mask) << 8 | (first as u64) << 32
}

/// A leaf: leaves[start .. start + len], whose first rule is at run position `first` (so
/// that a lookup that already has a better match skips the leaf without loading a box).
/// Bit 0 is 1; bits 1-12 len, or [`LONG_LEAF`] when the leaf is `long_leaves[start]`;
/// bits 13-32 first; bits 33-63 start.
fn leaf_word(start: usize, len: usize, first: u32) -> u64 {
    assert!(start < 1 << 31, "leaf boxes of a forest");
    debug_assert!(len <= LONG_LEAF && first <= MAX_RUN as u32);
    1 | (len as u64) << 1 | u64::from(first) << 13 | (start as u64) << 33
}

/// A leaf word's length field for a leaf of at least this many rules: its start and length
/// are in `Forest::long_leaves`.
const LONG_LEAF: usize = (1 << 12) - 1;

impl Forest {
    pub fn build(rules: &[Rule]) -> Forest {
        let boxes: Vec<RuleBox> = rules
            .iter()
            .map(|r| {
                RuleBox::of(r).unwrap_or(RuleBox {
                    lo: [1; 5],
                    hi: [0; 5],
                    needs_ports: true,
                })
            })
            .collect();
        Forest::from_boxes(&boxes)
    }

    /// The forest that [`Forest::estimated_cost`] prefers of four candidates: both
    /// [`Separation`]s, each with cuts of up to 6 and of up to 8 bits ([`CUT_BITS`]).
    ///
    /// Measured at 10K rules (the compiled walk alone, the classify bench's trace, cuts of
    /// up to 6 bits; three-way against addresses): generated acl 31 / 22 ns, fw 40 / 29,
    /// ipc 40 / 29; seed sets acl1_10k 31 / 41, fw1_10k 25 / 23, ipc1_10k 56 / 49. The
    /// estimate picks the faster one in each. (Until 2026-11-28 the addresses split left
    /// the rules wide in both addresses in one group, whose tree cut destination ports:
    /// fw 54 ns there, and three-way kept for it; splitting that group by destination port
    /// made fw-style classifications in place 65 -> 54 ns, ipc 57 -> 56.)
    ///
    /// Cuts of up to 8 bits (256 children; until 2026-11-28 only up to 6) make shallower
    /// trees for more memory. Measured at 10K rules, 6 against 8 bits, the compiled walk
    /// alone: generated acl 22 / 18 ns, fw 40 / 39, ipc 30 / 30, acl1_10k 31 / 26,
    /// fw1_10k 23 / 24, ipc1_10k 49 / 43; classifications in place: acl 52 -> 49 ns,
    /// acl1_10k 56 -> 52, fw1_10k 47 either way; generated fw (split by the addresses) 53
    /// -> 50.5. The estimate (its memory weight a quarter of what it was: at a whole weight
    /// it kept 6 bits for acl1_10k and ipc1_10k, at half for generated fw). With roots of up
    /// to 12 bits (`root_bits`) it picks 8 bits for every generated set at 1K, for
    /// generated acl and fw and ipc1_10k at 10K and for fw at 100K; 6 for the others.
    ///
    /// Panics when there are more than [`MAX_RUN`] boxes (`find_runs` caps runs there).
    pub fn from_boxes(boxes: &[RuleBox]) -> Forest {
        let sample = trace(boxes, ESTIMATE_SAMPLE, ESTIMATE_SEED);
        let mut best: Option<(f64, Forest)> = None;
        for sep in [Separation::ThreeWay, Separation::Addresses] {
            for bits in CUT_BITS {
                let f = Forest::separated(boxes, sep, bits);
                let cost = f.estimated_cost(&sample);
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, f));
                }
            }
        }
        best.map(|(_, f)| f).expect("at least one candidate")
    }

    /// A static estimate of a lookup's cost: the work a sample of points drawn from the
    /// run's own boxes (as ClassBench traces are, with another seed) takes per lookup — 2 per
    /// tree walked, 1 per node word, 1 per leaf box — times 1 plus the forest's memory in
    /// units of 4 MiB (an L2 cache's size is 1 MiB here: a bigger forest's words and boxes
    /// miss more, but its upper levels stay cached and a lookup touches few of them).
    pub fn estimated_cost(&self, sample: &[([u32; 5], bool)]) -> f64 {
        let mut w = WorkCount::default();
        for (v, has_ports) in sample {
            self.lookup_counting(v, *has_ports, &mut w);
        }
        let work = (2 * w.trees + w.nodes + w.leaf_boxes) as f64 / sample.len().max(1) as f64;
        work * (1.0 + self.memory() as f64 / f64::from(4 << 20))
    }

    /// The forest of one separation. Panics when there are more than [`MAX_RUN`] boxes.
    pub fn separated(boxes: &[RuleBox], sep: Separation, cut_bits: u8) -> Forest {
        // run positions must fit a leaf word's field
        assert!(boxes.len() <= MAX_RUN, "a run of at most MAX_RUN rules");
        let mut groups: std::collections::BTreeMap<u8, Vec<u32>> = Default::default();
        for (i, b) in boxes.iter().enumerate() {
            groups.entry(sep.key(b)).or_default().push(i as u32);
        }
        merge_small_groups(&mut groups, boxes.len());
        let mut trees: Vec<(Tree, Vec<u32>)> = groups
            .into_iter()
            .map(|(key, pos)| {
                let sub: Vec<RuleBox> = pos.iter().map(|&i| boxes[i as usize]).collect();
                (Tree::with_cuts(sub, group_dims(key), cut_bits), pos)
            })
            .collect();
        trees.sort_by_key(|t| t.1[0]);
        let mut f = Forest {
            separation: sep,
            cut_bits,
            trees: Vec::with_capacity(trees.len()),
            words: Vec::new(),
            leaves: Vec::new(),
            long_leaves: Vec::new(),
            stats: trees.iter().map(|(t, _)| t.stats()).collect(),
        };
        for (t, pos) in &trees {
            let mut memo = std::collections::HashMap::new();
            let mut root = f.flatten(t, pos, 0, &mut memo);
            if t.boxes.iter().all(RuleBox::is_empty) {
                // no rule of the tree can match: nothing to walk
                root = EMPTY_LEAF;
            }
            f.trees.push(FlatTree { root, min: pos[0] });
        }
        f
    }

    /// The word of node `n` of `t`, its children and leaves appended (a node shared by
    /// several parents is laid out once).
    fn flatten(
        &mut self,
        t: &Tree,
        pos: &[u32],
        n: u32,
        memo: &mut std::collections::HashMap<u32, u64>,
    ) -> u64 {
        if let Some(&w) = memo.get(&n) {
            return w;
        }
        let w = match t.nodes[n as usize] {
            Node::Leaf { start, len } => {
                let at = self.leaves.len();
                let rules = &t.leaf_rules[start as usize..(start + len) as usize];
                for &r in rules {
                    self.leaves
                        .push(LeafBox::of(&t.boxes[r as usize], pos[r as usize]));
                }
                // in run order: the first is the earliest (none: never earlier than a match)
                let first = rules.first().map_or(MAX_RUN as u32, |&r| pos[r as usize]);
                if len as usize >= LONG_LEAF {
                    self.long_leaves.push([at as u32, len]);
                    leaf_word(self.long_leaves.len() - 1, LONG_LEAF, first)
                } else {
                    leaf_word(at, len as usize, first)
                }
            }
            Node::Cut {
                dim,
                shift,
                mask,
                first,
            } => {
                let at = self.words.len();
                self.words.resize(at + mask as usize + 1, 0);
                for c in 0..=mask {
                    let child = t.children[(first + c) as usize];
                    let cw = self.flatten(t, pos, child, memo);
                    self.words[at + c as usize] = cw;
                }
                cut_word(dim, shift, mask, at)
            }
        };
        memo.insert(n, w);
        w
    }

    /// The run position of the first rule matching these field values, if any.
    ///
    /// The next tree's first step is taken while a tree is walked (one tree ahead: their
    /// cache misses overlap, and at most one step is wasted on a tree the best match so far
    /// then skips), and rule boxes are tested without a branch per dimension.
    ///
    /// (Measured and dropped: walking the trees in lockstep, a level of every tree at a time
    /// — a branch per tree and level, no pruning; every tree's first step up front — steps
    /// wasted on pruned trees made acl's lookups slower; and a lower bound of the run
    /// positions in every node word, to leave a tree early — it spared under 10% of the node
    /// loads and made the loop slower.)
    #[inline]
    pub fn lookup(&self, v: &[u32; 5], has_ports: bool) -> Option<u32> {
        self.lookup_counting(v, has_ports, &mut ())
    }

    /// [`Forest::lookup`] with the matching rule's tag ([`Forest::set_tags`]): its run
    /// position in the low [`TAG_SHIFT`] bits, its tag above; `u32::MAX` when none matches.
    #[inline]
    pub fn lookup_tagged(&self, v: &[u32; 5], has_ports: bool) -> u32 {
        let (best, tag) = self.search(v, has_ports, &mut ());
        if best == u32::MAX {
            u32::MAX
        } else {
            best | u32::from(tag) << TAG_SHIFT
        }
    }

    /// Gives every rule of the run a tag (indexed by run position) that
    /// [`Forest::lookup_tagged`] returns with it: the classifier's action class, so that
    /// a hit needs no table.
    pub fn set_tags(&mut self, tags: &[u8]) {
        for e in &mut self.leaves {
            e.set_tag(tags[e.pos() as usize]);
        }
    }

    /// [`Forest::lookup`], counting its work in `work` (for profiles: `()` counts nothing
    /// and compiles away).
    #[inline]
    pub fn lookup_counting<W: Work>(
        &self,
        v: &[u32; 5],
        has_ports: bool,
        work: &mut W,
    ) -> Option<u32> {
        let (best, _) = self.search(v, has_ports, work);
        (best != u32::MAX).then_some(best)
    }

    /// The run position and tag of the first matching rule (`u32::MAX` for none).
    #[inline(always)]
    fn search<W: Work>(&self, v: &[u32; 5], has_ports: bool, work: &mut W) -> (u32, u8) {
        let Some(key) = Key::of(v, has_ports) else {
            return (u32::MAX, 0);
        };
        let mut best = u32::MAX;
        let mut tag = 0;
        // a tree's first step is taken while the tree before it is walked: the two walks'
        // cache misses overlap instead of coming one after the other (every tree's root
        // covers the whole space: a packet outside its rules' hull ends in a leaf whose boxes
        // it misses; testing hulls first cost more in mispredicted branches than the walks
        // it spared)
        let start = |t: &FlatTree, work: &mut W| {
            if t.root & 1 == 0 {
                work.node();
            }
            self.step(t.root, key)
        };
        let mut next = self.trees.first().map_or(EMPTY_LEAF, |t| start(t, work));
        for (i, t) in self.trees.iter().enumerate() {
            if t.min >= best {
                break; // sorted by their first rule: no later tree can do better
            }
            let w = next;
            if let Some(u) = self.trees.get(i + 1) {
                next = start(u, work);
            }
            if w == EMPTY_LEAF {
                continue; // no rule of this tree can match
            }
            work.tree();
            let mut w = w;
            while w & 1 == 0 {
                w = self.step(w, key);
                work.node();
            }
            if ((w >> 13) & MAX_RUN as u64) as u32 >= best {
                continue; // the leaf's first rule comes after the best match so far
            }
            let (mut start, mut len) = ((w >> 33) as usize, ((w >> 1) & 0xfff) as usize);
            if len == LONG_LEAF {
                let [s, l] = self.long_leaves[start];
                (start, len) = (s as usize, l as usize);
            }
            // (a box past this comes after the best match: its position over 128 is more)
            let stop = best >> 7;
            for e in &self.leaves[start..start + len] {
                if e.pos_high() > stop {
                    break; // in run order: the rest come later still
                }
                work.leaf_box();
                if e.matches(&key) {
                    // the first match of the leaf: the rest come later still
                    let pos = e.pos();
                    if pos < best {
                        best = pos;
                        tag = e.tag();
                    }
                    break;
                }
            }
        }
        (best, tag)
    }

    /// The word one step down from node word `w` for these field values (a leaf's word is
    /// its own).
    #[inline(always)]
    fn step(&self, w: u64, key: Key) -> u64 {
        if w & 1 != 0 {
            return w;
        }
        let x = if w & 2 != 0 { key.0[1] } else { key.0[0] };
        let c = (x >> ((w >> 2) & 63)) & ((w >> 8) & 0xff_ffff);
        self.words[(w >> 32) as usize + c as usize]
    }

    /// Checks what generated code walking the forest relies on, its loads being unchecked:
    /// every cut's children are words of the forest and every leaf's boxes are boxes of it
    /// (a long leaf's through `long_leaves`). Panics when not.
    pub fn verify(&self) {
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<u64> = self.trees.iter().map(|t| t.root).collect();
        while let Some(w) = todo.pop() {
            if !seen.insert(w) {
                continue;
            }
            if w & 1 != 0 {
                let (start, len) = ((w >> 33) as usize, ((w >> 1) & 0xfff) as usize);
                let (start, len) = if len == LONG_LEAF {
                    let [s, l] = self.long_leaves[start];
                    (s as usize, l as usize)
                } else {
                    (start, len)
                };
                assert!(
                    start + len <= self.leaves.len(),
                    "a leaf's boxes in the forest"
                );
                continue;
            }
            let (at, mask, first) = ((w >> 2) & 63, (w >> 8) & 0xff_ffff, (w >> 32) as usize);
            assert!(
                at + u64::from(64 - mask.leading_zeros()) <= 64,
                "a cut's bits within its key word"
            );
            assert!(
                (first + mask as usize) < self.words.len(),
                "a cut's children in the forest"
            );
            todo.extend(&self.words[first..=first + mask as usize]);
        }
    }

    /// Emits the lookup into generated code, where `b` is positioned: the same answer as
    /// [`Forest::lookup_tagged`] as an I32 value, for the packet's fields given as I32
    /// values within their widths ([`in_widths`]; others are masked to them, as a context's
    /// fields never need) and `has_ports` as a 0/1 value of any integer type; the answer is
    /// in the block the builder is left in. For a packet without ports its sport may be
    /// anything: a rule that matches no port covers every sport, one that matches a port
    /// misses on the dport lane.
    ///
    /// Compiled per forest, the walk needs no call, no loop over the trees and no loads of
    /// their roots: each tree's first step is a shift, a mask and one load with constants
    /// (taken, as in [`Forest::lookup_tagged`], while the tree before it is walked); the
    /// rest walks the same words and boxes the same way. Its loads into the forest are
    /// unchecked: [`Forest::verify`] runs first. The forest must outlive the code and not
    /// change.
    pub fn emit_lookup(
        &self,
        b: &mut FunctionBuilder,
        ptr: ir::Type,
        fields: [Value; 5],
        has_ports: Value,
    ) -> Value {
        self.verify();
        let flags = MemFlagsData::trusted().with_readonly();
        let i64c = |b: &mut FunctionBuilder, v: u64| b.ins().iconst(types::I64, v as i64);
        let base = |b: &mut FunctionBuilder, p: *const u8| b.ins().iconst(ptr, p as usize as i64);
        // the key's two words, as `Key::of` (values from the context are within their
        // widths; masked all the same)
        let [saddr, daddr, proto, sport, dport] = fields;
        let widen = |b: &mut FunctionBuilder, v: Value, mask: u64| {
            let x = b.ins().uextend(types::I64, v);
            if mask == u64::from(u32::MAX) {
                x
            } else {
                b.ins().band_imm_u(x, mask as i64)
            }
        };
        let x = [
            widen(b, saddr, u64::from(u32::MAX)),
            widen(b, daddr, u64::from(u32::MAX)),
            widen(b, proto, 0xff),
            widen(b, sport, 0xffff),
            widen(b, dport, 0xffff),
        ];
        let no_ports = i64c(b, u64::from(NO_PORTS));
        let x4 = b.ins().select(has_ports, x[4], no_ports);
        let x = [x[0], x[1], x[2], x[3], x4];
        let mut key = [i64c(b, GUARD[0]), i64c(b, GUARD[1])];
        for d in 0..5 {
            let k = usize::from(KEY_AT[d] >> 6);
            let sh = b.ins().ishl_imm_u(x[d], i64::from(KEY_AT[d] & 63));
            key[k] = b.ins().bor(key[k], sh);
        }
        let words = base(b, self.words.as_ptr().cast());
        let leaves = base(b, self.leaves.as_ptr().cast());
        let best = b.declare_var(types::I32);
        let tag = b.declare_var(types::I32);
        let next = b.declare_var(types::I64);
        let none = b.ins().iconst(types::I32, i64::from(u32::MAX as i32));
        b.def_var(best, none);
        let zero = b.ins().iconst(types::I32, 0);
        b.def_var(tag, zero);
        // a tree's first step: from its root word, with constants
        let first_step = |b: &mut FunctionBuilder, root: u64| -> Value {
            if root & 1 != 0 {
                return i64c(b, root);
            }
            let x = b
                .ins()
                .ushr_imm_u(key[((root >> 1) & 1) as usize], ((root >> 2) & 63) as i64);
            let c = b.ins().band_imm_u(x, ((root >> 8) & 0xff_ffff) as i64);
            let i = b.ins().iadd_imm_u(c, (root >> 32) as i64);
            let o = b.ins().ishl_imm_u(i, 3);
            let a = b.ins().iadd(words, o);
            b.ins().load(types::I64, flags, a, 0)
        };
        let done = b.create_block();
        if let Some(t) = self.trees.first() {
            let w = first_step(b, t.root);
            b.def_var(next, w);
        }
        let mut here = b.create_block();
        b.ins().jump(here, &[]);
        for (i, t) in self.trees.iter().enumerate() {
            let after = if i + 1 < self.trees.len() {
                b.create_block()
            } else {
                done
            };
            b.switch_to_block(here);
            // sorted by their first rule: once the best match comes before this tree's
            // first, no later tree can do better
            let cur = b.use_var(best);
            let beaten = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, cur, i64::from(t.min));
            let go = b.create_block();
            b.ins().brif(beaten, done, &[], go, &[]);
            b.switch_to_block(go);
            let w = b.use_var(next);
            if let Some(u) = self.trees.get(i + 1) {
                let nw = first_step(b, u.root);
                b.def_var(next, nw);
            }
            if t.root == EMPTY_LEAF {
                // no rule of this tree can match
                b.ins().jump(after, &[]);
                here = after;
                continue;
            }
            // down to a leaf
            let walk = b.create_block();
            b.append_block_param(walk, types::I64);
            let step = b.create_block();
            let leaf = b.create_block();
            b.ins().jump(walk, &[BlockArg::Value(w)]);
            b.switch_to_block(walk);
            let w = b.block_params(walk)[0];
            let bit = b.ins().band_imm_u(w, 1);
            b.ins().brif(bit, leaf, &[], step, &[]);
            b.switch_to_block(step);
            // (the shift's amount is taken modulo 64: bits 2-7 of the word)
            let hi = b.ins().band_imm_u(w, 2);
            let kx = b.ins().select(hi, key[1], key[0]);
            let at = b.ins().ushr_imm_u(w, 2);
            let x = b.ins().ushr(kx, at);
            let m = b.ins().ushr_imm_u(w, 8);
            let m = b.ins().band_imm_u(m, 0xff_ffff);
            let c = b.ins().band(x, m);
            let first = b.ins().ushr_imm_u(w, 32);
            let idx = b.ins().iadd(first, c);
            let o = b.ins().ishl_imm_u(idx, 3);
            let a = b.ins().iadd(words, o);
            let child = b.ins().load(types::I64, flags, a, 0);
            b.ins().jump(walk, &[BlockArg::Value(child)]);
            // a leaf whose first rule comes after the best match so far is skipped unread
            b.switch_to_block(leaf);
            let cur = b.use_var(best);
            let cur64 = b.ins().uextend(types::I64, cur);
            let lead = b.ins().ushr_imm_u(w, 13);
            let lead = b.ins().band_imm_u(lead, MAX_RUN as i64);
            let late = b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, lead, cur64);
            let open = b.create_block();
            b.ins().brif(late, after, &[], open, &[]);
            b.switch_to_block(open);
            let start = b.ins().ushr_imm_u(w, 33);
            let len = b.ins().ushr_imm_u(w, 1);
            let len = b.ins().band_imm_u(len, 0xfff);
            let scan = b.create_block();
            b.append_block_param(scan, types::I64);
            b.append_block_param(scan, types::I64);
            let long = b.create_block();
            let is_long = b.ins().icmp_imm_u(IntCC::Equal, len, LONG_LEAF as i64);
            b.ins().brif(
                is_long,
                long,
                &[],
                scan,
                &[BlockArg::Value(start), BlockArg::Value(len)],
            );
            b.switch_to_block(long);
            let table = base(b, self.long_leaves.as_ptr().cast());
            let o = b.ins().ishl_imm_u(start, 3);
            let a = b.ins().iadd(table, o);
            let ls = b.ins().uload32(flags, a, 0);
            let ll = b.ins().uload32(flags, a, 4);
            b.ins()
                .jump(scan, &[BlockArg::Value(ls), BlockArg::Value(ll)]);
            // the boxes in run order, stopped at the first match or past the best match
            b.switch_to_block(scan);
            let (start, len) = (b.block_params(scan)[0], b.block_params(scan)[1]);
            let o = b.ins().ishl_imm_u(start, 5);
            let p0 = b.ins().iadd(leaves, o);
            let n = b.ins().ishl_imm_u(len, 5);
            let end = b.ins().iadd(p0, n);
            let stop = b.ins().ushr_imm_u(cur64, 7);
            let head = b.create_block();
            b.append_block_param(head, ptr);
            let body = b.create_block();
            let hit = b.create_block();
            b.ins().jump(head, &[BlockArg::Value(p0)]);
            b.switch_to_block(head);
            let p = b.block_params(head)[0];
            let more = b.ins().icmp(IntCC::UnsignedLessThan, p, end);
            b.ins().brif(more, body, &[], after, &[]);
            b.switch_to_block(body);
            let lo1 = b.ins().load(types::I64, flags, p, 8);
            let pos_high = b.ins().ushr_imm_u(lo1, i64::from(SPARE_AT));
            let past = b.ins().icmp(IntCC::UnsignedGreaterThan, pos_high, stop);
            let test = b.create_block();
            b.ins().brif(past, after, &[], test, &[]);
            b.switch_to_block(test);
            let lo0 = b.ins().load(types::I64, flags, p, 0);
            let w0 = b.ins().load(types::I64, flags, p, 16);
            let w1 = b.ins().load(types::I64, flags, p, 24);
            let lane = |b: &mut FunctionBuilder, k: Value, lo: Value, width: Value, g: u64| {
                let t = b.ins().isub(k, lo);
                let t = b.ins().band_imm_u(t, !g as i64);
                let u = b.ins().isub(width, t);
                let u = b.ins().band_imm_u(u, g as i64);
                b.ins().bxor_imm_u(u, g as i64)
            };
            let m0 = lane(b, key[0], lo0, w0, GUARD[0]);
            let m1 = lane(b, key[1], lo1, w1, GUARD[1]);
            let miss = b.ins().bor(m0, m1);
            let p_next = b.ins().iadd_imm_u(p, 32);
            b.ins()
                .brif(miss, head, &[BlockArg::Value(p_next)], hit, &[]);
            // the leaf's first match: the rest come later still
            b.switch_to_block(hit);
            let low = b.ins().ushr_imm_u(w1, i64::from(SPARE_AT));
            let low = b.ins().band_imm_u(low, 0x7f);
            let high = b.ins().ishl_imm_u(pos_high, 7);
            let pos = b.ins().bor(high, low);
            let pos = b.ins().ireduce(types::I32, pos);
            let tg = b.ins().ushr_imm_u(w1, i64::from(SPARE_AT + 7));
            let tg = b.ins().ireduce(types::I32, tg);
            let better = b.ins().icmp(IntCC::UnsignedLessThan, pos, cur);
            let nb = b.ins().select(better, pos, cur);
            let old = b.use_var(tag);
            let nt = b.ins().select(better, tg, old);
            b.def_var(best, nb);
            b.def_var(tag, nt);
            b.ins().jump(after, &[]);
            here = after;
        }
        if self.trees.is_empty() {
            b.switch_to_block(here);
            b.ins().jump(done, &[]);
        }
        b.switch_to_block(done);
        let bst = b.use_var(best);
        let tg = b.use_var(tag);
        let tg = b.ins().ishl_imm_u(tg, i64::from(TAG_SHIFT));
        let tagged = b.ins().bor(bst, tg);
        let missed = b.ins().icmp_imm_u(IntCC::Equal, bst, i64::from(u32::MAX));
        b.ins().select(missed, bst, tagged)
    }

    pub fn memory(&self) -> usize {
        self.words.len() * 8
            + self.leaves.len() * std::mem::size_of::<LeafBox>()
            + self.trees.len() * std::mem::size_of::<FlatTree>()
            + self.long_leaves.len() * 8
    }

    pub fn stats(&self) -> Vec<TreeStats> {
        self.stats.clone()
    }
}

/// An aligned region: per dimension, the base and the number of free low bits.
#[derive(Clone, Copy)]
struct Region {
    base: [u32; 5],
    bits: [u8; 5],
}

impl Region {
    fn top(&self, d: usize) -> u32 {
        if self.bits[d] >= 32 {
            u32::MAX
        } else {
            self.base[d] | ((1u32 << self.bits[d]) - 1)
        }
    }
}

/// Statistics of a built tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub rules: usize,
    pub nodes: usize,
    pub leaf_entries: usize,
    pub max_depth: usize,
    pub max_leaf: usize,
}

impl Tree {
    /// A tree that may cut every dimension (the forest's trees cut some: [`Tree::with_cuts`]),
    /// at most 6 bits at a time.
    pub fn from_boxes(boxes: Vec<RuleBox>) -> Tree {
        Tree::with_cuts(boxes, [true, true, true, true, true], CUT_BITS[0])
    }

    /// A tree that cuts only the dimensions marked in `dims`, at most `max_k` bits (one of
    /// [`CUT_BITS`]) at a time.
    pub fn with_cuts(boxes: Vec<RuleBox>, dims: [bool; 5], max_k: u8) -> Tree {
        debug_assert!(CUT_BITS.contains(&max_k));
        let n = boxes.len();
        let mut t = Tree {
            boxes,
            nodes: Vec::new(),
            children: Vec::new(),
            leaf_rules: Vec::new(),
            dims,
            budget: 16 * n + 4096,
            max_k,
            root_k: root_bits(n, max_k),
        };
        let all: Vec<u32> = (0..t.boxes.len() as u32)
            .filter(|&i| !t.boxes[i as usize].is_empty())
            .collect();
        let root = Region {
            base: [0; 5],
            bits: WIDTH,
        };
        t.build_node(all, root, 0);
        t
    }

    fn covers(&self, r: u32, reg: &Region) -> bool {
        let b = &self.boxes[r as usize];
        !b.needs_ports && (0..5).all(|d| b.lo[d] <= reg.base[d] && reg.top(d) <= b.hi[d])
    }

    /// Child index range `[a, b]` of a rule for a cut of `k` bits on dimension `d`, or `None`
    /// when the rule misses the region on that dimension.
    fn child_range(&self, r: u32, reg: &Region, d: usize, k: u8) -> Option<(u32, u32)> {
        let b = &self.boxes[r as usize];
        let (lo, hi) = (b.lo[d].max(reg.base[d]), b.hi[d].min(reg.top(d)));
        if lo > hi {
            return None;
        }
        let shift = reg.bits[d] - k; // < 32 since k >= 1
        Some(((lo - reg.base[d]) >> shift, (hi - reg.base[d]) >> shift))
    }

    fn build_node(&mut self, mut rules: Vec<u32>, reg: Region, depth: usize) -> u32 {
        if let Some(p) = rules.iter().position(|&r| self.covers(r, &reg)) {
            rules.truncate(p + 1);
        }
        let id = self.nodes.len() as u32;
        if rules.len() <= BINTH || depth >= MAX_DEPTH || self.leaf_rules.len() > self.budget {
            return self.leaf(rules);
        }
        // choose the cut
        let n = rules.len();
        let mut best: Option<(usize, usize, usize, u8)> = None; // (max child, total, dim, k)
        let mut diff = Vec::new();
        for d in (0..5).filter(|&d| self.dims[d]) {
            let max_k = if depth == 0 { self.root_k } else { self.max_k };
            for k in 1..=max_k.min(reg.bits[d]) {
                let m = 1usize << k;
                diff.clear();
                diff.resize(m + 1, 0i64);
                for &r in &rules {
                    if let Some((a, b)) = self.child_range(r, &reg, d, k) {
                        diff[a as usize] += 1;
                        diff[b as usize + 1] -= 1;
                    }
                }
                let (mut run, mut total, mut maxc) = (0i64, 0usize, 0usize);
                for v in diff.iter().take(m) {
                    run += v;
                    total += run as usize;
                    maxc = maxc.max(run as usize);
                }
                if total > SPFAC * n + m {
                    break; // finer cuts of this dimension only replicate more
                }
                let cand = (maxc, total, d, k);
                if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                    best = Some(cand);
                }
            }
        }
        let Some((maxc, _, d, k)) = best else {
            return self.leaf(rules);
        };
        if maxc >= n {
            return self.leaf(rules); // no cut separates these rules
        }
        let m = 1usize << k;
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); m];
        for &r in &rules {
            if let Some((a, b)) = self.child_range(r, &reg, d, k) {
                for list in &mut lists[a as usize..=b as usize] {
                    list.push(r);
                }
            }
        }
        drop(rules);
        self.nodes.push(Node::Cut {
            dim: d as u8,
            shift: reg.bits[d] - k,
            mask: (m - 1) as u32,
            first: 0,
        });
        let mut kids = Vec::with_capacity(m);
        let mut prev: Option<(usize, u32)> = None;
        for (c, list) in lists.into_iter().enumerate() {
            // a child with the same rules as its left neighbour shares its subtree: the
            // rules cover both parts alike only if they are identical lists
            if let Some((pc, pid)) = prev {
                if pc + 1 == c && self.same_as_prev(&kids, pid, &list) {
                    kids.push(pid);
                    prev = Some((c, pid));
                    continue;
                }
            }
            let mut sub = reg;
            // k >= 1, so fewer than 32 bits remain free
            sub.bits[d] = reg.bits[d] - k;
            sub.base[d] = reg.base[d] + ((c as u32) << sub.bits[d]);
            let child = if list.is_empty() {
                self.leaf(list)
            } else {
                self.build_node(list, sub, depth + 1)
            };
            kids.push(child);
            prev = Some((c, child));
        }
        let first = self.children.len() as u32;
        self.children.extend(kids);
        if let Node::Cut { first: f, .. } = &mut self.nodes[id as usize] {
            *f = first;
        }
        id
    }

    /// Whether `list` equals the rules of leaf `node` (only leaves are compared: sharing a
    /// subtree built for another region would be wrong in general).
    fn same_as_prev(&self, _kids: &[u32], node: u32, list: &[u32]) -> bool {
        match self.nodes[node as usize] {
            Node::Leaf { start, len } => {
                self.leaf_rules[start as usize..(start + len) as usize] == *list
            }
            Node::Cut { .. } => false,
        }
    }

    fn leaf(&mut self, rules: Vec<u32>) -> u32 {
        let id = self.nodes.len() as u32;
        let start = self.leaf_rules.len() as u32;
        self.nodes.push(Node::Leaf {
            start,
            len: rules.len() as u32,
        });
        self.leaf_rules.extend(rules);
        id
    }

    /// The position (in the run) of the first rule matching these field values, if any.
    #[inline]
    pub fn lookup(&self, v: &[u32; 5], has_ports: bool) -> Option<u32> {
        let mut node = 0usize;
        loop {
            match self.nodes[node] {
                Node::Cut {
                    dim,
                    shift,
                    mask,
                    first,
                } => {
                    let x = v[dim as usize];
                    let c = if shift >= 32 { 0 } else { (x >> shift) & mask };
                    node = self.children[(first + c) as usize] as usize;
                }
                Node::Leaf { start, len } => {
                    for &r in &self.leaf_rules[start as usize..(start + len) as usize] {
                        if self.boxes[r as usize].matches(v, has_ports) {
                            return Some(r);
                        }
                    }
                    return None;
                }
            }
        }
    }

    pub fn stats(&self) -> TreeStats {
        fn depth(t: &Tree, n: usize) -> usize {
            match t.nodes[n] {
                Node::Leaf { .. } => 0,
                Node::Cut { mask, first, .. } => {
                    let mut seen = Vec::new();
                    let mut d = 0;
                    for c in 0..=mask {
                        let k = t.children[(first + c) as usize] as usize;
                        if !seen.contains(&k) {
                            seen.push(k);
                            d = d.max(1 + depth(t, k));
                        }
                    }
                    d
                }
            }
        }
        TreeStats {
            rules: self.boxes.len(),
            nodes: self.nodes.len(),
            leaf_entries: self.leaf_rules.len(),
            max_depth: if self.nodes.is_empty() {
                0
            } else {
                depth(self, 0)
            },
            max_leaf: self
                .nodes
                .iter()
                .map(|n| match n {
                    Node::Leaf { len, .. } => *len as usize,
                    _ => 0,
                })
                .max()
                .unwrap_or(0),
        }
    }

    /// Bytes of memory the tree uses.
    pub fn memory(&self) -> usize {
        self.boxes.len() * std::mem::size_of::<RuleBox>()
            + self.nodes.len() * std::mem::size_of::<Node>()
            + (self.children.len() + self.leaf_rules.len()) * 4
    }
}

/// Packet fields drawn like ClassBench's trace generator, for benchmarks and profiles: a
/// random rule, a random point in its box; one in twenty fully random. The protocol is kept
/// when it is TCP, UDP, ICMP or GRE, else it becomes TCP (always for a rule that matches
/// ports) or UDP; `has_ports` is whether the packet is TCP or UDP.
/// Rules that can never match are not drawn from (none left: no packets); a packet that is
/// not TCP or UDP has ports 0, as the classifier looks it up.
pub fn trace(boxes: &[RuleBox], n: usize, seed: u64) -> Vec<([u32; 5], bool)> {
    let boxes: Vec<&RuleBox> = boxes.iter().filter(|b| !b.is_empty()).collect();
    if boxes.is_empty() {
        return Vec::new();
    }
    let mut r = fwc_compiler::gen::Rng::new(seed);
    (0..n)
        .map(|_| {
            let pick = |r: &mut fwc_compiler::gen::Rng, lo: u32, hi: u32| {
                lo + (r.next_u64() % (u64::from(hi - lo) + 1)) as u32
            };
            let b = &boxes[r.below(boxes.len() as u64) as usize];
            let random = r.chance(5);
            let mut v = [0u32; 5];
            for (d, x) in v.iter_mut().enumerate() {
                *x = if random {
                    pick(&mut r, 0, [u32::MAX, u32::MAX, 255, 65535, 65535][d])
                } else {
                    pick(&mut r, b.lo[d], b.hi[d])
                };
            }
            v[2] = match v[2] {
                p @ (6 | 17 | 1 | 47) => p,
                _ if b.needs_ports || r.chance(50) => 6,
                _ => 17,
            };
            let has_ports = v[2] == 6 || v[2] == 17;
            if !has_ports {
                (v[3], v[4]) = (0, 0);
            }
            (v, has_ports)
        })
        .collect()
}

/// [`trace`] as packets (TCP ACKs, UDP datagrams, ICMP and GRE packets).
pub fn trace_packets(boxes: &[RuleBox], n: usize, seed: u64) -> Vec<fwc_compiler::interp::Packet> {
    trace(boxes, n, seed)
        .into_iter()
        .map(|(v, _)| fwc_compiler::interp::Packet {
            proto: v[2] as u8,
            saddr: v[0],
            daddr: v[1],
            sport: v[3] as u16,
            dport: v[4] as u16,
            tcp_flags: 0x10,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed as u32
    }

    fn random_box(s: &mut u64) -> RuleBox {
        let mut b = RuleBox {
            lo: [0; 5],
            hi: [u32::MAX, u32::MAX, 255, 65535, 65535],
            needs_ports: false,
        };
        for d in 0..2 {
            let len = [0u32, 8, 16, 24, 32][(rng(s) % 5) as usize];
            if len > 0 {
                let mask = if len == 32 {
                    u32::MAX
                } else {
                    !(u32::MAX >> len)
                };
                let base = (rng(s) & 0x0f0f_ffff) & mask;
                b.lo[d] = base;
                b.hi[d] = base | !mask;
            }
        }
        if rng(s) % 2 == 0 {
            b.lo[2] = 6;
            b.hi[2] = 6;
            if rng(s) % 2 == 0 {
                let p = rng(s) % 1024;
                b.lo[4] = p;
                b.hi[4] = p + rng(s) % 4;
                b.needs_ports = true;
            }
        }
        b
    }

    #[test]
    fn the_tree_finds_the_first_match_like_a_linear_scan() {
        let mut s = 0x1234_5678_9abc_def0u64;
        for n in [1usize, 9, 50, 400, 3000] {
            let boxes: Vec<RuleBox> = (0..n).map(|_| random_box(&mut s)).collect();
            let t = Tree::from_boxes(boxes.clone());
            let f = Forest::from_boxes(&boxes);
            // (both separations, whichever the estimate picks; the wider cuts in one)
            let three = Forest::separated(&boxes, Separation::ThreeWay, CUT_BITS[0]);
            let two = Forest::separated(&boxes, Separation::Addresses, CUT_BITS[1]);
            for _ in 0..3000 {
                // packets near rules, so that many match something
                let r = &boxes[(rng(&mut s) as usize) % n];
                let mut v = [0u32; 5];
                for (d, x) in v.iter_mut().enumerate() {
                    let span = r.hi[d] - r.lo[d];
                    *x = r.lo[d] + rng(&mut s) % span.saturating_add(1).max(1);
                    if rng(&mut s) % 8 == 0 {
                        *x = rng(&mut s) & [u32::MAX, u32::MAX, 255, 65535, 65535][d];
                    }
                }
                let has_ports = rng(&mut s) % 4 != 0;
                let linear = boxes
                    .iter()
                    .position(|b| b.matches(&v, has_ports))
                    .map(|p| p as u32);
                assert_eq!(t.lookup(&v, has_ports), linear, "n={n} v={v:?}");
                assert_eq!(f.lookup(&v, has_ports), linear, "forest n={n} v={v:?}");
                assert_eq!(
                    three.lookup(&v, has_ports),
                    linear,
                    "three-way n={n} v={v:?}"
                );
                assert_eq!(two.lookup(&v, has_ports), linear, "addresses n={n} v={v:?}");
            }
            let st = t.stats();
            assert!(st.max_leaf <= n.max(BINTH), "{st:?}");
        }
    }

    #[test]
    fn the_forest_is_the_candidate_estimated_cheapest() {
        let mut s = 0x0bad_cafe_u64;
        let (mut picked, mut bits) = ([false; 2], [false; 2]);
        for n in [300usize, 1000, 2000] {
            for wide_ports in [0u32, 4, 8] {
                // rules with and without wide destination port ranges (of many ends); with
                // 8, every address any (rules a tree tells apart by ports alone)
                let boxes: Vec<RuleBox> = (0..n)
                    .map(|_| {
                        let mut b = random_box(&mut s);
                        if wide_ports == 8 {
                            // every address any; an exact destination port, or a wide range
                            // of them and an exact source port: a tree that cut destination
                            // ports would copy the wide rules into its children, so both
                            // separations split these rules by destination port first
                            (b.lo[0], b.hi[0], b.lo[1], b.hi[1]) = (0, u32::MAX, 0, u32::MAX);
                            (b.lo[2], b.hi[2]) = (6, 6);
                            let p = rng(&mut s) % 30000;
                            if rng(&mut s) % 2 == 0 {
                                (b.lo[4], b.hi[4]) = (p, p);
                                (b.lo[3], b.hi[3]) = (0, 65535);
                            } else {
                                (b.lo[4], b.hi[4]) = (p, p + 20000 + rng(&mut s) % 10000);
                                let q = rng(&mut s) % 65536;
                                (b.lo[3], b.hi[3]) = (q, q);
                            }
                            b.needs_ports = true;
                        }
                        if wide_ports < 8 && rng(&mut s) % 8 < wide_ports {
                            let lo = rng(&mut s) % 4096;
                            (b.lo[4], b.hi[4]) = (lo, lo + 2048 + rng(&mut s) % 30000);
                            b.needs_ports = true;
                        }
                        b
                    })
                    .collect();
                let sample = trace(&boxes, ESTIMATE_SAMPLE, ESTIMATE_SEED);
                // every candidate, in the order `from_boxes` builds them (the first of equals
                // is kept)
                let costs: Vec<(Separation, u8, f64)> =
                    [Separation::ThreeWay, Separation::Addresses]
                        .into_iter()
                        .flat_map(|sep| CUT_BITS.map(|bits| (sep, bits)))
                        .map(|(sep, bits)| {
                            let f = Forest::separated(&boxes, sep, bits);
                            (sep, bits, f.estimated_cost(&sample))
                        })
                        .collect();
                let least = costs.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
                let want = costs.iter().find(|c| c.2 == least).unwrap();
                let f = Forest::from_boxes(&boxes);
                assert_eq!(
                    (f.separation, f.cut_bits),
                    (want.0, want.1),
                    "n={n}: {costs:?}"
                );
                assert_eq!(f.estimated_cost(&sample), least);
                // which separation, which cut width is strictly cheaper here
                let best = |keep: &dyn Fn(&(Separation, u8, f64)) -> bool| {
                    costs
                        .iter()
                        .filter(|c| keep(c))
                        .map(|c| c.2)
                        .fold(f64::INFINITY, f64::min)
                };
                let (three, two) = (
                    best(&|c| c.0 == Separation::ThreeWay),
                    best(&|c| c.0 == Separation::Addresses),
                );
                if three != two {
                    picked[usize::from(two < three)] = true;
                }
                let (six, eight) = (best(&|c| c.1 == CUT_BITS[0]), best(&|c| c.1 == CUT_BITS[1]));
                if six != eight {
                    bits[usize::from(eight < six)] = true;
                }
                // every address any: the separations' groups are the same (a tree of all
                // of them cutting destination ports, the addresses-only split before
                // 2026-11-28, cost several times as much here)
                if wide_ports == 8 {
                    assert_eq!(three, two, "n={n}");
                }
            }
        }
        // each is strictly cheapest somewhere (else the test shows nothing of the choice)
        assert_eq!(picked, [true, true], "separations");
        assert_eq!(bits, [true, true], "cut widths");
    }

    #[test]
    fn a_leaf_box_matches_its_bounds_exactly() {
        let b = RuleBox {
            lo: [10, 0, 6, 1000, 0],
            hi: [20, u32::MAX, 17, 1000, 65535],
            needs_ports: true,
        };
        let mut e = LeafBox::of(&b, MAX_RUN as u32);
        e.set_tag(MAX_TAG as u8);
        // the position and tag bits above the lanes take no part in the test
        assert_eq!((e.pos(), e.tag()), (MAX_RUN as u32, MAX_TAG as u8));
        let key = |v: [u32; 5], ports: bool| Key::of(&v, ports).unwrap();
        let inside = [10u32, 5, 6, 1000, 80];
        assert!(e.matches(&key(inside, true)));
        assert!(!e.matches(&key(inside, false)), "needs ports");
        // each dimension at both ends, and one past them
        for (d, lo, hi) in [(0, 10u32, 20u32), (2, 6, 17), (3, 1000, 1000)] {
            for (x, want) in [(lo, true), (hi, true), (lo - 1, false), (hi + 1, false)] {
                let mut v = inside;
                v[d] = x;
                assert_eq!(e.matches(&key(v, true)), want, "dimension {d} at {x}");
            }
        }
        // the full ranges match everything, the extremes included
        for x in [0, u32::MAX] {
            let mut v = inside;
            v[1] = x;
            assert!(e.matches(&key(v, true)));
        }
        for x in [0, 65535] {
            let mut v = inside;
            v[4] = x;
            assert!(e.matches(&key(v, true)));
        }
        // a position and tag of their own do not change the answers
        let mut f = LeafBox::of(&b, 0x5_5555);
        f.set_tag(0x2a);
        assert_eq!((f.pos(), f.tag()), (0x5_5555, 0x2a));
        assert!(f.matches(&key(inside, true)) && !f.matches(&key(inside, false)));
        // a rule without ports matches a packet without them, whatever its ports say
        let any = RuleBox {
            lo: [0, 0, 1, 0, 0],
            hi: [u32::MAX, u32::MAX, 1, 65535, 65535],
            needs_ports: false,
        };
        let g = LeafBox::of(&any, 3);
        assert!(g.matches(&key([1, 2, 1, 0, 0], false)));
        assert!(g.matches(&key([1, 2, 1, 7, 65535], false)));
        assert!(g.matches(&key([1, 2, 1, 7, 65535], true)));
        assert!(!g.matches(&key([1, 2, 2, 0, 0], false)));
        // values past their width match nothing
        assert!(Key::of(&[0, 0, 256, 0, 0], true).is_none());
        assert!(Key::of(&[0, 0, 6, 65536, 0], true).is_none());
        assert!(Key::of(&[0, 0, 6, 0, 65536], true).is_none());
        // (without ports the dport is not looked at)
        assert!(g.matches(&key([1, 2, 1, 0, 65536], false)));
    }

    /// The compiled walk's answers against the Rust walk's, over points near the boxes
    /// and anywhere, with and without ports: the chosen forest and every candidate.
    fn compiled_agrees(boxes: &[RuleBox], tags: Option<&[u8]>, s: &mut u64, points: usize) {
        let candidates = [Separation::ThreeWay, Separation::Addresses]
            .into_iter()
            .flat_map(|sep| CUT_BITS.map(|bits| Forest::separated(boxes, sep, bits)));
        for mut f in std::iter::once(Forest::from_boxes(boxes)).chain(candidates) {
            if let Some(t) = tags {
                f.set_tags(t);
            }
            compiled_agrees_in(f, boxes, s, points);
        }
    }

    fn compiled_agrees_in(f: Forest, boxes: &[RuleBox], s: &mut u64, points: usize) {
        let c = crate::CompiledLookup::new(f).expect("compiles");
        let f = c.forest();
        for _ in 0..points {
            let r = &boxes[(rng(s) as usize) % boxes.len()];
            let mut v = [0u32; 5];
            for (d, x) in v.iter_mut().enumerate() {
                let span = r.hi[d].wrapping_sub(r.lo[d]);
                *x = r.lo[d].wrapping_add(rng(s) % span.saturating_add(1).max(1));
                if rng(s) % 8 == 0 {
                    *x = rng(s) & [u32::MAX, u32::MAX, 255, 65535, 65535][d];
                }
            }
            let has_ports = rng(s) % 4 != 0;
            if !has_ports {
                (v[3], v[4]) = (0, 0);
            }
            assert_eq!(
                c.lookup(&v, has_ports),
                f.lookup_tagged(&v, has_ports),
                "v={v:?} ports={has_ports}"
            );
        }
    }

    #[test]
    fn the_compiled_walk_answers_as_the_rust_walk() {
        let mut s = 0x0dd_ba11_u64;
        for n in [1usize, 9, 50, 400, 3000] {
            let boxes: Vec<RuleBox> = (0..n).map(|_| random_box(&mut s)).collect();
            compiled_agrees(&boxes, None, &mut s, 3000);
            let tags: Vec<u8> = (0..n).map(|p| (p * 5 % (MAX_TAG + 1)) as u8).collect();
            compiled_agrees(&boxes, Some(&tags), &mut s, 3000);
        }
        // rules spread over 256 values of the source address's top byte and, among each
        // of them, over the destination address's top byte: the roots cut 8 bits (12 would
        // separate no more), and below them the wider candidates cut 8 bits, the narrower
        // ones at most 6; rules spread over the source address's top 12 bits: the roots
        // cut 12
        let spread = |top: u32, s: &mut u64| -> Vec<RuleBox> {
            (0..12_000u32)
                .map(|i| {
                    let mut b = random_box(s);
                    let a = (i % top) << (32 - top.trailing_zeros());
                    // one value per 256-way child, pairs of them sharing a 128-way child,
                    // over the whole byte
                    let j = i / top;
                    let d = ((j / 2) * 10 + j % 2) << 24 | 1;
                    (b.lo[0], b.hi[0], b.lo[1], b.hi[1]) = (a, a, d, d);
                    b
                })
                .collect()
        };
        for (top, root_mask) in [(256, 255), (4096, 4095)] {
            let boxes = spread(top, &mut s);
            for (bits, mask) in [(CUT_BITS[0], 63), (CUT_BITS[1], 255)] {
                let f = Forest::separated(&boxes, Separation::ThreeWay, bits);
                let root = f.trees[0].root;
                assert_eq!(
                    (root & 1, (root >> 8) & 0xff_ffff),
                    (0, root_mask),
                    "{bits} bits"
                );
                // (and below the root: node words that are cuts, their widest mask)
                let below = f
                    .words
                    .iter()
                    .filter(|w| *w & 1 == 0)
                    .map(|w| (w >> 8) & 0xff_ffff);
                let widest = below.max().unwrap_or(0);
                if top == 256 && bits == CUT_BITS[1] {
                    assert_eq!(widest, mask, "{bits} bits");
                }
                assert!(widest <= mask, "{bits} bits");
                // the Rust walk through them: the first match, as a linear scan finds it
                for r in boxes.iter().step_by(7) {
                    let v = r.lo;
                    let linear = boxes.iter().position(|b| b.matches(&v, true));
                    assert_eq!(f.lookup(&v, true), linear.map(|p| p as u32), "{v:?}");
                }
            }
            compiled_agrees(&boxes, None, &mut s, 3000);
        }
        // a leaf too long for its word
        let long = one_long_leaf(5000);
        compiled_agrees(&long, None, &mut s, 3000);
        let c = crate::CompiledLookup::new(Forest::from_boxes(&long)).unwrap();
        assert_eq!(c.forest().long_leaves.len(), 1);
        for i in [0, 4094, 4095, 4999] {
            assert_eq!(c.lookup(&[(i << 17) + 5, 1, 6, 2, 3], true), i);
        }
        // values past their widths match nothing, compiled or not
        for v in [[5, 1, 256, 2, 3], [5, 1, 6, 65536, 3], [5, 1, 6, 2, 65536]] {
            assert_eq!(c.lookup(&v, true), u32::MAX, "{v:?}");
            assert_eq!(c.forest().lookup_tagged(&v, true), u32::MAX, "{v:?}");
        }
        // rules that never match, and no rules at all
        let never = RuleBox {
            lo: [5, 0, 0, 0, 0],
            hi: [4, 0, 0, 0, 0],
            needs_ports: false,
        };
        let c = crate::CompiledLookup::new(Forest::from_boxes(&[never; 3])).unwrap();
        assert_eq!(c.lookup(&[4, 0, 0, 0, 0], true), u32::MAX);
        let c = crate::CompiledLookup::new(Forest::from_boxes(&[])).unwrap();
        assert_eq!(c.lookup(&[4, 0, 0, 0, 0], true), u32::MAX);
    }

    #[test]
    fn rules_that_never_match_make_no_tree_walk() {
        let never = RuleBox {
            lo: [5, 0, 0, 0, 0],
            hi: [4, 0, 0, 0, 0],
            needs_ports: false,
        };
        let f = Forest::from_boxes(&[never; 3]);
        assert_eq!(f.lookup(&[0; 5], false), None);
        assert_eq!(f.lookup(&[4, 0, 0, 0, 0], true), None);
        let mut w = WorkCount::default();
        f.lookup_counting(&[5, 0, 0, 0, 0], true, &mut w);
        assert_eq!((w.trees, w.nodes, w.leaf_boxes), (0, 0, 0));
    }

    #[test]
    fn a_tagged_lookup_answers_with_the_matching_rules_tag() {
        let mut s = 0x0bad_cafe_u64;
        let boxes: Vec<RuleBox> = (0..500).map(|_| random_box(&mut s)).collect();
        let mut f = Forest::from_boxes(&boxes);
        let tags: Vec<u8> = (0..boxes.len()).map(|p| (p * 7 % 61) as u8).collect();
        f.set_tags(&tags);
        for _ in 0..2000 {
            let r = &boxes[(rng(&mut s) as usize) % boxes.len()];
            let v: [u32; 5] = std::array::from_fn(|d| {
                r.lo[d] + rng(&mut s) % (r.hi[d] - r.lo[d]).saturating_add(1).max(1)
            });
            let want = match f.lookup(&v, true) {
                Some(p) => p | u32::from(tags[p as usize]) << TAG_SHIFT,
                None => u32::MAX,
            };
            assert_eq!(f.lookup_tagged(&v, true), want, "{v:?}");
        }
    }

    /// `n` source ranges from 0 up to the end of the `i`th /15 (rule `i` the first match
    /// in that /15), every other field any: all but the first 128 are large in every
    /// dimension a tree could cut, so no cut separates them and they share one leaf.
    fn one_long_leaf(n: u32) -> Vec<RuleBox> {
        (0..n)
            .map(|i| RuleBox {
                lo: [0, 0, 0, 0, 0],
                hi: [(i << 17) | 0x1_ffff, u32::MAX, 255, 65535, 65535],
                needs_ports: false,
            })
            .collect()
    }

    #[test]
    fn a_leaf_too_long_for_its_word_is_found_through_the_side_table() {
        let n = 5000u32;
        let boxes = one_long_leaf(n);
        let f = Forest::from_boxes(&boxes);
        assert_eq!(f.long_leaves.len(), 1, "{:?}", f.stats());
        for i in [0, 1, 4094, 4095, 4096, n - 1] {
            let v = [(i << 17) + 5, 1, 6, 2, 3];
            assert_eq!(f.lookup(&v, true), Some(i));
        }
        assert_eq!(f.lookup(&[n << 17, 1, 6, 2, 3], true), None);
    }

    #[test]
    fn a_small_group_joins_a_larger_one_wide_where_it_is() {
        // 1,000 rules narrow everywhere, 500 wide in both addresses, 10 wide in the source
        // only: the 10 (under 1/32 of the run) join the 500, whose tree cuts neither
        // address; the answers stay a linear scan's
        let mut s = 0x5eed_u64;
        let mut boxes = Vec::new();
        for i in 0..1510u32 {
            let (src_wide, dst_wide) = match i % 151 {
                0 => (true, false),
                k if k % 3 == 0 => (true, true),
                _ => (false, false),
            };
            // addresses in four /8s, wide ones /7s: the groups' boxes overlap, so a merged
            // rule must keep its place in run order among the larger group's
            let a = (rng(&mut s) % 4) << 24 | rng(&mut s) & 0x00ff_ffff;
            let d = (rng(&mut s) % 4) << 24 | rng(&mut s) & 0x00ff_ffff;
            boxes.push(RuleBox {
                lo: [
                    if src_wide { a & 0xfe00_0000 } else { a & !0xff },
                    if dst_wide { d & 0xfe00_0000 } else { d & !0xff },
                    6,
                    0,
                    80 + i % 7,
                ],
                hi: [
                    if src_wide { a | 0x01ff_ffff } else { a | 0xff },
                    if dst_wide { d | 0x01ff_ffff } else { d | 0xff },
                    6,
                    65535,
                    80 + i % 7,
                ],
                needs_ports: true,
            });
        }
        let groups = |bs: &[RuleBox]| {
            let mut keys: Vec<u8> = bs.iter().map(|b| Separation::ThreeWay.key(b)).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len()
        };
        assert_eq!(groups(&boxes), 3);
        let f = Forest::separated(&boxes, Separation::ThreeWay, CUT_BITS[0]);
        assert_eq!(f.trees.len(), 2, "{:?}", f.stats());
        for _ in 0..3000 {
            let r = &boxes[(rng(&mut s) as usize) % boxes.len()];
            let v: [u32; 5] = std::array::from_fn(|d| {
                r.lo[d] + rng(&mut s) % (r.hi[d] - r.lo[d]).saturating_add(1).max(1)
            });
            let linear = boxes
                .iter()
                .position(|b| b.matches(&v, true))
                .map(|p| p as u32);
            assert_eq!(f.lookup(&v, true), linear, "{v:?}");
        }
    }

    #[test]
    fn a_covering_rule_truncates_the_leaf() {
        let any = RuleBox {
            lo: [0; 5],
            hi: [u32::MAX, u32::MAX, 255, 65535, 65535],
            needs_ports: false,
        };
        let t = Tree::from_boxes(vec![any; 100]);
        assert_eq!(t.stats().leaf_entries, 1);
        assert_eq!(t.lookup(&[1, 2, 3, 4, 5], true), Some(0));
    }
}
