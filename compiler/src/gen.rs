//! Synthetic rule sets for benchmarks, shaped like ClassBench's filter sets: 5-tuple rules with
//! a mix of prefix lengths, exact ports, port ranges, wildcards and protocols, written as `.fw`
//! source so that benchmarks exercise the whole toolchain. Deterministic for a given seed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The style of a generated set, after ClassBench's seed families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// access-control lists: specific destinations, exact service ports
    Acl,
    /// firewalls: more wildcards and port ranges
    Fw,
    /// IP chains: mostly source/destination prefixes
    Ipc,
}

/// xorshift64*: small, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Picks from `(value, weight)` pairs.
fn weighted<T: Copy>(rng: &mut Rng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for &(v, w) in table {
        if x < w {
            return v;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

/// The shape of one style: prefix-length, port and protocol mixes. The weights are the
/// distributions measured on ClassBench's acl1, fw1 and ipc1 seed sets (10K rules each).
struct Shape {
    src_len: &'static [(u8, u32)],
    dst_len: &'static [(u8, u32)],
    /// (wildcard, exact, range) weights
    sport: [u32; 3],
    dport: [u32; 3],
    /// (protocol number or 0 for any, weight)
    proto: &'static [(u8, u32)],
}

const ACL: Shape = Shape {
    src_len: &[
        (32, 54),
        (31, 25),
        (23, 7),
        (30, 5),
        (24, 5),
        (22, 2),
        (29, 1),
        (0, 1),
    ],
    dst_len: &[
        (32, 51),
        (31, 20),
        (22, 7),
        (30, 5),
        (23, 4),
        (24, 2),
        (21, 2),
        (25, 2),
        (0, 7),
    ],
    sport: [100, 0, 0],
    dport: [28, 60, 12],
    proto: &[(6, 87), (0, 8), (1, 3), (17, 2)],
};

const FW: Shape = Shape {
    src_len: &[
        (0, 41),
        (1, 19),
        (32, 13),
        (31, 9),
        (30, 3),
        (2, 3),
        (28, 2),
        (29, 2),
        (24, 8),
    ],
    dst_len: &[
        (32, 33),
        (31, 28),
        (0, 18),
        (1, 9),
        (30, 6),
        (2, 1),
        (28, 1),
        (22, 1),
        (24, 3),
    ],
    sport: [77, 15, 8],
    dport: [29, 63, 8],
    proto: &[(6, 57), (17, 33), (47, 5), (1, 4), (0, 1)],
};

const IPC: Shape = Shape {
    src_len: &[
        (32, 17),
        (24, 14),
        (23, 14),
        (25, 9),
        (31, 8),
        (0, 8),
        (22, 5),
        (1, 5),
        (16, 20),
    ],
    dst_len: &[
        (32, 25),
        (24, 12),
        (31, 11),
        (25, 10),
        (23, 7),
        (0, 6),
        (26, 6),
        (16, 4),
        (20, 19),
    ],
    sport: [81, 17, 2],
    dport: [56, 36, 8],
    proto: &[(17, 38), (0, 33), (6, 27), (1, 2)],
};

/// Addresses come from a pool of /16 networks, so that prefixes nest and overlap as in real
/// sets rather than being scattered over the whole space.
fn address(rng: &mut Rng, pool: &[u32]) -> u32 {
    pool[rng.below(pool.len() as u64) as usize] | (rng.next_u64() as u32 & 0xffff)
}

fn prefix(rng: &mut Rng, pool: &[u32], lens: &[(u8, u32)]) -> Option<(u32, u8)> {
    let len = weighted(rng, lens);
    if len == 0 {
        return None;
    }
    Some((address(rng, pool) & crate::ir::prefix_mask(len), len))
}

const WELL_KNOWN: [u16; 16] = [
    20, 21, 22, 23, 25, 53, 80, 110, 123, 143, 161, 443, 993, 1521, 3306, 8080,
];

fn port(rng: &mut Rng, w: [u32; 3]) -> Option<String> {
    match weighted(rng, &[(0u8, w[0]), (1, w[1]), (2, w[2])]) {
        0 => None,
        1 => Some(if rng.chance(70) {
            WELL_KNOWN[rng.below(16) as usize].to_string()
        } else {
            (1 + rng.below(65534)).to_string()
        }),
        _ => Some(
            weighted(
                rng,
                &[
                    ("0-1023", 20),
                    ("1024-65535", 50),
                    ("1024-5000", 5),
                    ("6000-6063", 5),
                    ("10000-20000", 5),
                    ("49152-65535", 15),
                ],
            )
            .to_string(),
        ),
    }
}

/// A program with `n` rules in `filter/forward`, policy drop.
pub fn ruleset(style: Style, n: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed ^ (n as u64) ^ ((style as u64) << 32));
    let shape = match style {
        Style::Acl => &ACL,
        Style::Fw => &FW,
        Style::Ipc => &IPC,
    };
    let pool: Vec<u32> = (0..(n / 50).clamp(16, 4096))
        .map(|_| {
            let hi = [10u32, 172, 192, 198, 203, 100, 44, 130][rng.below(8) as usize];
            (hi << 24) | ((rng.next_u64() as u32 & 0xff) << 16)
        })
        .collect();
    let mut s = String::with_capacity(n * 64);
    let _ = writeln!(s, "# generated: {style:?} style, {n} rules, seed {seed}");
    s.push_str("table filter {\n    chain forward policy drop {\n");
    // (specificity, rule text): like real policies (and ClassBench's output), specific rules
    // come first and broad ones last, so that few rules are shadowed
    let mut rules: Vec<(u32, String)> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut parts: Vec<String> = Vec::with_capacity(6);
        let mut score = rng.below(4) as u32;
        if let Some((a, l)) = prefix(&mut rng, &pool, shape.src_len) {
            parts.push(format!("ip saddr {}/{l}", Ipv4Addr::from(a)));
            score += u32::from(l);
        }
        if let Some((a, l)) = prefix(&mut rng, &pool, shape.dst_len) {
            parts.push(format!("ip daddr {}/{l}", Ipv4Addr::from(a)));
            score += u32::from(l);
        }
        match weighted(&mut rng, shape.proto) {
            p @ (6 | 17) => {
                let l4 = if p == 6 { "tcp" } else { "udp" };
                let sp = port(&mut rng, shape.sport);
                let dp = port(&mut rng, shape.dport);
                if sp.is_none() && dp.is_none() {
                    parts.push(l4.to_string());
                }
                score += 8;
                for p in [&sp, &dp].into_iter().flatten() {
                    score += if p.contains('-') { 8 } else { 16 };
                }
                if let Some(p) = sp {
                    parts.push(format!("{l4} sport {p}"));
                }
                if let Some(p) = dp {
                    parts.push(format!("{l4} dport {p}"));
                }
            }
            1 => {
                parts.push("icmp".into());
                score += 8;
            }
            0 => {}
            p => {
                parts.push(format!("ip protocol {p}"));
                score += 8;
            }
        }
        parts.push(if rng.chance(70) {
            "accept".into()
        } else {
            "drop".into()
        });
        rules.push((score, parts.join(" ")));
    }
    rules.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    for (_, r) in rules {
        let _ = writeln!(s, "        {r};");
    }
    s.push_str("    }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sets_compile_cleanly_apart_from_dead_rule_warnings() {
        for style in [Style::Acl, Style::Fw, Style::Ipc] {
            let src = ruleset(style, 500, 7);
            let c = crate::compile_source("gen.fw", &src, &crate::loader::MemFiles::default());
            assert!(!c.has_errors(), "{style:?}: {:?}", c.diags.first());
            let p = &c.checked.as_ref().unwrap().program;
            assert_eq!(p.rule_count(), 500);
            // rule-space lints only (overlaps are notes: ClassBench sets have many)
            assert!(c
                .diags
                .iter()
                .all(|d| ["FW0100", "FW0101", "FW0102", "FW0103"].contains(&d.code)));
            // like the ClassBench seeds, few rules are dead
            let dead = c
                .diags
                .iter()
                .filter(|d| ["FW0100", "FW0101"].contains(&d.code))
                .count();
            assert!(dead < 25, "{style:?}: {dead} dead rules");
        }
        assert_eq!(
            ruleset(Style::Fw, 50, 1),
            ruleset(Style::Fw, 50, 1),
            "deterministic"
        );
    }
}
