//! The optimizer: semantics-preserving passes over the IR, run by `fwc build`.
//!
//! 1. **dead rules** (`analysis::dead_rules`: shadowed or unreachable, FW0100/FW0101) are
//!    removed: they never match, so no packet can tell.
//! 2. **redundant rules** (`analysis::redundant_rules`, FW0102) are removed: each packet they
//!    would decide gets the same verdict without them.
//! 3. **ordering**: adjacent rules swap so that rules hit more often come first, but only when
//!    the swap cannot be observed: no packet matches both (their boxes are disjoint), or both
//!    end the chain with the same verdict and do nothing else (pf's `pfctl -o` and Fulp's
//!    condition). Rules with `limit` or `statistic` never move (their state is consumed in
//!    order). Weights come from a profile of per-rule hit counts or, without one, from a static
//!    estimate.
//!
//! Every pass keeps rule ids, so counters and traces still name source lines.

use crate::analysis::{self, RuleBox};
use crate::ir::*;
use serde::Deserialize;
use std::collections::HashMap;

/// Per-rule hit counts, as the datapath writes them (`fwc counters --json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Profile {
    pub rules: Vec<ProfileEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProfileEntry {
    /// `file:line` of the rule (stable across builds of the same source)
    pub location: String,
    #[serde(default)]
    pub packets: u64,
}

impl Profile {
    pub fn parse(json: &str) -> Result<Profile, String> {
        serde_json::from_str(json).map_err(|e| format!("not a counters profile: {e}"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub dead_removed: usize,
    pub redundant_removed: usize,
    pub swaps: usize,
}

/// Longest chain the ordering pass sorts (it is quadratic in the worst case).
const ORDER_LIMIT: usize = 4096;

/// Runs every pass.
pub fn optimize(p: &mut Program, profile: Option<&Profile>) -> Report {
    let mut report = Report::default();
    for c in &mut p.chains {
        let dead: Vec<usize> = analysis::dead_rules(c).iter().map(|d| d.rule).collect();
        report.dead_removed += dead.len();
        remove(c, &dead);
        let redundant = analysis::redundant_rules(c);
        report.redundant_removed += redundant.len();
        remove(c, &redundant);
    }
    let weights = weights(p, profile);
    for c in &mut p.chains {
        report.swaps += order(c, &weights);
    }
    report
}

fn remove(c: &mut Chain, positions: &[usize]) {
    if positions.is_empty() {
        return;
    }
    let mut i = 0;
    c.rules.retain(|_| {
        let keep = !positions.contains(&i);
        i += 1;
        keep
    });
}

/// Weight of each rule id: profiled packets, or a static estimate.
fn weights(p: &Program, profile: Option<&Profile>) -> HashMap<RuleId, f64> {
    let mut w = HashMap::new();
    match profile {
        Some(prof) => {
            let by_loc: HashMap<&str, u64> = prof
                .rules
                .iter()
                .map(|e| (e.location.as_str(), e.packets))
                .collect();
            for c in &p.chains {
                for r in &c.rules {
                    let hits = by_loc
                        .get(p.rule_location(r.id).as_str())
                        .copied()
                        .unwrap_or(0);
                    w.insert(r.id, hits as f64);
                }
            }
        }
        None => {
            for c in &p.chains {
                for r in &c.rules {
                    w.insert(r.id, static_weight(r));
                }
            }
        }
    }
    w
}

/// Without a profile: connections already allowed carry most packets (conntrack's
/// `established`), and otherwise a rule covering more of the header space is likelier to be
/// hit. The unit is log2 of the box's volume.
fn static_weight(r: &Rule) -> f64 {
    let mut bits = 0.0;
    let mut established = false;
    let mut constrained = [false; 7];
    for p in &r.preds {
        match p {
            Pred::Field { field, neg, op } => {
                let set = analysis::IntervalSet::from_elems(op.elems());
                let size: f64 = set.0.iter().map(|(a, b)| f64::from(b - a) + 1.0).sum();
                let full = f64::from(field.max_value()) + 1.0;
                let size = if *neg { full - size } else { size };
                let i = *field as usize;
                if !constrained[i] {
                    constrained[i] = true;
                    bits += size.max(1.0).log2() - full.log2();
                }
            }
            Pred::CtState { neg: false, mask } => {
                established = mask & !(ct::ESTABLISHED | ct::RELATED) == 0;
            }
            _ => {}
        }
    }
    bits + if established { 64.0 } else { 0.0 }
}

/// Does the rule change what later rules see (mark, conntrack state, TTL), directly or
/// through a call that returns? Such a rule is a barrier: a packet it changes may match a
/// later rule it would not have matched before.
fn changes_packet(r: &Rule) -> bool {
    r.stmts.iter().any(|s| {
        matches!(
            s,
            Stmt::MarkSet(_) | Stmt::Notrack | Stmt::TtlSet(_) | Stmt::Jump(_) | Stmt::Vmap { .. }
        )
    })
}

/// Can adjacent rules `a` then `b` be swapped without any packet noticing?
fn can_swap(a: &Rule, ab: &RuleBox, b: &Rule, bb: &RuleBox) -> bool {
    if ab.is_stateful() || bb.is_stateful() || changes_packet(a) || changes_packet(b) {
        return false;
    }
    if !ab.may_intersect(bb) {
        return true;
    }
    // overlapping: both must end the chain alike and do nothing else
    a.stmts.len() == 1
        && b.stmts.len() == 1
        && a.stmts[0] == b.stmts[0]
        && a.stmts[0].is_terminal()
        && !a.stmts[0].is_nat()
}

/// Moves heavier rules up past lighter ones where allowed (a stable insertion sort whose
/// every step is a permitted swap). Returns the number of swaps.
fn order(c: &mut Chain, w: &HashMap<RuleId, f64>) -> usize {
    if c.rules.len() > ORDER_LIMIT {
        return 0;
    }
    let mut boxes: Vec<RuleBox> = c.rules.iter().map(RuleBox::of).collect();
    let weight = |r: &Rule| w.get(&r.id).copied().unwrap_or(0.0);
    let mut swaps = 0;
    for i in 1..c.rules.len() {
        let mut j = i;
        while j > 0
            && weight(&c.rules[j]) > weight(&c.rules[j - 1])
            && can_swap(&c.rules[j - 1], &boxes[j - 1], &c.rules[j], &boxes[j])
        {
            c.rules.swap(j - 1, j);
            boxes.swap(j - 1, j);
            swaps += 1;
            j -= 1;
        }
    }
    swaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{self, FreshOracle, Packet, PathKind};

    fn program(src: &str) -> Program {
        let c = crate::compile_source("t.fw", src, &crate::loader::MemFiles::default());
        assert!(!c.has_errors(), "{:?}", c.diags);
        c.checked.unwrap().program
    }

    #[test]
    fn dead_and_redundant_rules_are_removed() {
        let mut p = program(
            "table filter { chain input policy drop {
                tcp dport { 22, 80 } accept;
                tcp dport 22 accept;
                ip saddr 10.0.0.0/8 accept;
                udp dport 53 drop;
            } }",
        );
        let r = optimize(&mut p, None);
        assert_eq!(r.dead_removed, 1, "dport 22 is shadowed");
        assert_eq!(r.redundant_removed, 1, "udp 53 drop before a drop policy");
        assert_eq!(p.chains[0].rules.len(), 2);
        assert!(verify(&p).is_empty());
    }

    #[test]
    fn ordering_follows_the_profile_but_never_crosses_an_overlap() {
        let src = "table filter { chain input policy drop {
                tcp dport 22 accept;
                tcp dport 80 accept;
                ip saddr 10.0.0.0/8 drop;
                tcp dport 443 accept;
            } }";
        let p0 = program(src);
        let loc = |i: usize| p0.rule_location(p0.chains[0].rules[i].id);
        let prof = Profile {
            rules: vec![
                ProfileEntry {
                    location: loc(3),
                    packets: 1000,
                },
                ProfileEntry {
                    location: loc(1),
                    packets: 10,
                },
            ],
        };
        let mut p = p0.clone();
        let r = optimize(&mut p, Some(&prof));
        let order: Vec<u32> = p.chains[0].rules.iter().map(|r| r.id.0).collect();
        // 443 may not pass the 10/8 drop (a packet from 10/8 to 443 sees both); 80 moves up
        assert_eq!(order, vec![1, 0, 2, 3], "{r:?}");
        for (path, pkt) in [
            (
                PathKind::Input,
                Packet {
                    saddr: 0x0a00_0001,
                    dport: 443,
                    ..Packet::default()
                },
            ),
            (
                PathKind::Input,
                Packet {
                    saddr: 0x0b00_0001,
                    dport: 443,
                    ..Packet::default()
                },
            ),
            (
                PathKind::Input,
                Packet {
                    saddr: 0x0a00_0001,
                    dport: 80,
                    ..Packet::default()
                },
            ),
        ] {
            let a = interp::run(&p0, path, &pkt, &mut FreshOracle).unwrap();
            let b = interp::run(&p, path, &pkt, &mut FreshOracle).unwrap();
            assert_eq!(a.fate, b.fate);
        }
    }

    #[test]
    fn a_rule_that_changes_the_packet_is_a_barrier() {
        // `mark 1 mark set 2` and `mark 2 drop` are disjoint, yet the first feeds the second
        let mut p = program(
            "table filter { chain input policy accept {
                mark 1 mark set 2;
                mark 2 drop;
            } }",
        );
        let before = p.clone();
        let loc = |i: usize| p.rule_location(p.chains[0].rules[i].id);
        let prof = Profile {
            rules: vec![ProfileEntry {
                location: loc(1),
                packets: 99,
            }],
        };
        assert_eq!(optimize(&mut p, Some(&prof)).swaps, 0);
        assert_eq!(p, before);
    }

    #[test]
    fn established_traffic_moves_first_without_a_profile() {
        let mut p = program(
            "table filter { chain input policy drop {
                tcp dport 22 ip saddr 192.0.2.0/24 accept;
                ct state established,related accept;
            } }",
        );
        // same verdict, no other effect: they may swap although they overlap
        let r = optimize(&mut p, None);
        assert_eq!(r.swaps, 1);
        assert!(matches!(
            p.chains[0].rules[0].preds[0],
            Pred::CtState { .. }
        ));
    }
}
