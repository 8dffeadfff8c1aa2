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

use crate::Ctx;
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
/// most bits one cut takes (2^6 = 64 children)
const MAX_K: u8 = 6;
/// the children of a node hold at most this many times its rules
const SPFAC: usize = 4;
const MAX_DEPTH: usize = 40;

/// One rule of a run as a box: an inclusive interval per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleBox {
    pub lo: [u32; 5],
    pub hi: [u32; 5],
    /// the rule matches on a port, so it needs a packet that has ports
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
}

/// Is a rule "large" in a dimension (so that cutting there would copy it into many
/// children)? Addresses wider than a /16, destination ports spanning more than 1024 values.
fn large(b: &RuleBox, d: usize) -> bool {
    // an empty box (a rule that can never match) counts as small everywhere
    let size = (u64::from(b.hi[d]) + 1).saturating_sub(u64::from(b.lo[d]));
    match d {
        0 | 1 => size > 1 << 16,
        4 => size > 1024,
        _ => true,
    }
}

/// The rules of a run split by where they are large (EffiCuts' separation), one tree per
/// group, each cutting only where all its rules are small; a lookup asks every tree that may
/// still beat the best match found so far.
#[derive(Debug)]
pub struct Forest {
    /// (tree, run position of each of its rules, the smallest of them)
    trees: Vec<(Tree, Vec<u32>, u32)>,
    /// per tree, the bounding box of its rules: a packet outside it skips the tree
    hulls: Vec<RuleBox>,
}

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

    pub fn from_boxes(boxes: &[RuleBox]) -> Forest {
        let mut groups: std::collections::BTreeMap<u8, Vec<u32>> = Default::default();
        for (i, b) in boxes.iter().enumerate() {
            let key =
                u8::from(large(b, 0)) | u8::from(large(b, 1)) << 1 | u8::from(large(b, 4)) << 2;
            groups.entry(key).or_default().push(i as u32);
        }
        let mut trees: Vec<(Tree, Vec<u32>, u32)> = groups
            .into_iter()
            .map(|(key, pos)| {
                // rules wide in every address and port dimension can still be told apart by
                // protocol and source port (the space budget bounds any copying)
                let dims = if key == 7 {
                    [false, false, true, true, false]
                } else {
                    [key & 1 == 0, key & 2 == 0, false, false, key & 4 == 0]
                };
                let sub: Vec<RuleBox> = pos.iter().map(|&i| boxes[i as usize]).collect();
                let min = pos[0];
                (Tree::with_dims(sub, dims), pos, min)
            })
            .collect();
        trees.sort_by_key(|t| t.2);
        let hulls = trees
            .iter()
            .map(|(t, _, _)| {
                let mut h = RuleBox {
                    lo: [u32::MAX; 5],
                    hi: [0; 5],
                    needs_ports: false,
                };
                for b in t.boxes.iter().filter(|b| !b.is_empty()) {
                    for d in 0..5 {
                        h.lo[d] = h.lo[d].min(b.lo[d]);
                        h.hi[d] = h.hi[d].max(b.hi[d]);
                    }
                }
                // a port-less packet is routed with ports 0: keep the hull open to it
                h.lo[3] = 0;
                h.lo[4] = 0;
                h
            })
            .collect();
        Forest { trees, hulls }
    }

    /// The run position of the first rule matching these field values, if any.
    #[inline]
    pub fn lookup(&self, v: &[u32; 5], has_ports: bool) -> Option<u32> {
        let mut best: Option<u32> = None;
        for ((t, pos, min), hull) in self.trees.iter().zip(&self.hulls) {
            if best.is_some_and(|b| b < *min) {
                break; // sorted by their first rule: no later tree can do better
            }
            if !hull.matches(v, false) {
                continue; // the packet lies outside every rule of this tree
            }
            if let Some(i) = t.lookup(v, has_ports) {
                let p = pos[i as usize];
                if best.is_none_or(|b| p < b) {
                    best = Some(p);
                }
            }
        }
        best
    }

    pub fn memory(&self) -> usize {
        self.trees
            .iter()
            .map(|(t, p, _)| t.memory() + p.len() * 4)
            .sum()
    }

    pub fn stats(&self) -> Vec<TreeStats> {
        self.trees.iter().map(|(t, _, _)| t.stats()).collect()
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
    /// Builds the tree over `rules`, which must all be plain 5-tuple rules (see
    /// [`RuleBox::of`]); others are treated as never matching.
    pub fn build(rules: &[Rule]) -> Tree {
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
        Tree::from_boxes(boxes)
    }

    pub fn from_boxes(boxes: Vec<RuleBox>) -> Tree {
        Tree::with_dims(boxes, [true, true, true, true, true])
    }

    /// A tree that cuts only the dimensions marked in `dims`.
    pub fn with_dims(boxes: Vec<RuleBox>, dims: [bool; 5]) -> Tree {
        let n = boxes.len();
        let mut t = Tree {
            boxes,
            nodes: Vec::new(),
            children: Vec::new(),
            leaf_rules: Vec::new(),
            dims,
            budget: 16 * n + 4096,
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
            for k in 1..=MAX_K.min(reg.bits[d]) {
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

/// The lookup as the generated code calls it: the run position of the first match, or
/// `u32::MAX`.
///
/// # Safety
/// `tree` must point to a live `Forest` and `ctx` to a live `Ctx` whose header fields were
/// filled by `parse`.
pub unsafe extern "C" fn lookup_ctx(tree: *const Forest, ctx: *const Ctx) -> u32 {
    // SAFETY: generated code passes a tree owned by its `JitProgram` and the ctx of the
    // classification in progress; both outlive the call.
    let (t, c) = unsafe { (&*tree, &*ctx) };
    let has_ports = c.l4 != 0 && (c.proto == 6 || c.proto == 17);
    let (sp, dp) = if has_ports {
        (c.sport, c.dport)
    } else {
        (0, 0)
    };
    let v = [c.saddr, c.daddr, c.proto, sp, dp];
    t.lookup(&v, has_ports).unwrap_or(u32::MAX)
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
            }
            let st = t.stats();
            assert!(st.max_leaf <= n.max(BINTH), "{st:?}");
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
