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
    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.index(v.len())]
    }
}

/// Random matches for the random programs of the differential tests (JIT against the
/// interpreter, the kernel against the interpreter): every kind of match, from pools of
/// values the caller chooses so that its packets hit them.
pub mod random {
    use super::Rng;

    /// The values a match may take, as fw source.
    pub struct Pools<'a> {
        pub addrs: &'a [&'a str],
        pub ports: &'a [&'a str],
        pub ifaces: &'a [&'a str],
        pub states: &'a [&'a str],
        pub limits: &'a [&'a str],
        pub probabilities: &'a [&'a str],
        /// `ip protocol` operands
        pub protos: &'a [&'a str],
    }

    /// The transport a rule is about.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum L4 {
        Tcp,
        Udp,
        Icmp,
        Any,
    }

    impl L4 {
        pub fn random(r: &mut Rng) -> L4 {
            *r.pick(&[L4::Tcp, L4::Udp, L4::Icmp, L4::Any])
        }
    }

    /// `count` subchains `s0`..`s{count-1}` with parameters `(a: set<ip>, p: port)`, each
    /// calling only later ones (so there is no cycle): random matches (some on the
    /// parameters), now and then one of `extras`, then a terminal statement: accept, drop,
    /// return, `third(r)`, none, or a jump (with `jump_set` as the set) / goto to a later one.
    pub fn subchains(
        r: &mut Rng,
        count: usize,
        p: &Pools,
        extras: &[&str],
        third: &dyn Fn(&mut Rng) -> String,
        jump_set: &str,
    ) -> String {
        let mut s = String::new();
        for i in 0..count {
            s.push_str(&format!("chain s{i}(a: set<ip>, p: port) {{\n"));
            for _ in 0..1 + r.index(5) {
                let l4 = L4::random(r);
                let mut m = matches(r, l4, p, true, true);
                if r.chance(40) {
                    m.push("ip saddr $a".into());
                }
                if r.chance(30) && l4 == L4::Tcp {
                    m.push("tcp dport $p".into());
                }
                let mut st: Vec<String> = Vec::new();
                if r.chance(30) {
                    st.push(r.pick(extras).to_string());
                }
                let later = i + 1 < count;
                let t = match r.index(if later { 7 } else { 5 }) {
                    0 => "accept".to_string(),
                    1 => "drop".to_string(),
                    2 => "return".to_string(),
                    3 => third(r),
                    4 => String::new(),
                    5 => format!(
                        "jump s{}({{ {jump_set} }}, 22)",
                        i + 1 + r.index(count - i - 1)
                    ),
                    _ => format!("goto s{}($a, $p)", i + 1 + r.index(count - i - 1)),
                };
                if !t.is_empty() {
                    st.push(t);
                }
                if st.is_empty() {
                    st.push("counter".into());
                }
                s.push_str(&format!("    {} {};\n", m.join(" "), st.join(" ")));
            }
            s.push_str("}\n");
        }
        s
    }

    /// Up to three matches for a rule about `l4`; `ct` and `oif` say whether `ct state` and
    /// `oif` may appear (not before conntrack, not where there is no output interface).
    pub fn matches(r: &mut Rng, l4: L4, p: &Pools, ct: bool, oif: bool) -> Vec<String> {
        let mut m = Vec::new();
        let neg = |r: &mut Rng| if r.chance(25) { "!= " } else { "" };
        for _ in 0..r.index(4) {
            let s = match r.index(11) {
                0 => format!("ip saddr {}{}", neg(r), r.pick(p.addrs)),
                1 => format!("ip daddr {}{}", neg(r), r.pick(p.addrs)),
                2 => format!("iif {}{}", neg(r), r.pick(p.ifaces)),
                3 if oif => format!("oif {}{}", neg(r), r.pick(p.ifaces)),
                4 if ct => format!("ct state {}{}", neg(r), r.pick(p.states)),
                5 => format!(
                    "mark {}{}",
                    neg(r),
                    r.pick(&["0x1", "0x2-0x10", "{ 0x1, 0x7 }"])
                ),
                6 if r.chance(30) => format!("limit {}{}", neg(r), r.pick(p.limits)),
                7 if r.chance(30) => format!("statistic probability {}", r.pick(p.probabilities)),
                8 => match l4 {
                    L4::Tcp => format!("tcp dport {}{}", neg(r), r.pick(p.ports)),
                    L4::Udp => format!("udp sport {}{}", neg(r), r.pick(p.ports)),
                    L4::Icmp => format!(
                        "icmp type {}{}",
                        neg(r),
                        r.pick(&["echo-request", "{ 0, 3, 11 }", "8"])
                    ),
                    L4::Any if m.iter().any(|x: &String| x.starts_with("ip protocol")) => continue,
                    L4::Any => format!("ip protocol {}{}", neg(r), r.pick(p.protos)),
                },
                9 if l4 == L4::Tcp => format!(
                    "tcp flags {}{}",
                    neg(r),
                    r.pick(&["syn / syn,ack", "ack", "fin,ack / fin,ack,rst"])
                ),
                _ => match l4 {
                    L4::Tcp => format!("tcp sport {}", r.pick(p.ports)),
                    L4::Udp => format!("udp dport {}", r.pick(p.ports)),
                    L4::Icmp => "icmp".to_string(),
                    L4::Any => continue,
                },
            };
            m.push(s);
        }
        let lead = match l4 {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Icmp => "icmp",
            L4::Any => "",
        };
        if !lead.is_empty() && !m.iter().any(|x| x.starts_with(lead)) {
            m.insert(0, lead.into());
        }
        m
    }

    const K_ADDRS: &[&str] = &[
        "192.0.2.0/24",
        "192.0.2.7",
        "{ 192.0.2.2, 203.0.113.0/24 }",
        "198.51.100.0/25",
        "198.51.100.9",
        "192.0.2.0-192.0.2.40",
        "{ 192.0.2.50, 198.51.100.128/25, 203.0.113.1 }",
    ];
    const K_PORTS: &[&str] = &[
        "22",
        "80",
        "1000-2000",
        "{ 53, 443, 1500 }",
        "{ 22, 80-90 }",
    ];
    const K_IFACES: &[&str] = &["fi", "fo", "f*", "x0", "{ fi, x0 }", "{ fo, f* }"];
    const K_STATES: &[&str] = &["new", "invalid", "{ new, established }", "untracked"];

    const K_POOLS: Pools = Pools {
        addrs: K_ADDRS,
        ports: K_PORTS,
        ifaces: K_IFACES,
        states: K_STATES,
        // far above the test's packet rate: the bucket never runs dry, as in the interpreter's
        // first packet
        limits: &["1000/second"],
        // the kernel's coins are its own: only the sure ones
        probabilities: &["0", "1"],
        protos: &["tcp", "{ tcp, udp }", "50"],
    };

    fn k_matches(r: &mut Rng, l4: L4, ct_ok: bool, oif_ok: bool) -> Vec<String> {
        matches(r, l4, &K_POOLS, ct_ok, oif_ok)
    }

    /// A random program the kernel can run (for the kernel differential test and the
    /// import/export round trip): interfaces `fi` (192.0.2.1) and `fo` (203.0.113.1); no
    /// output hook; subchains for the filter table only (they may reject), nat rules that
    /// keep each packet on its path.
    pub fn kernel_program(r: &mut Rng) -> String {
        let mut s =
            String::from("interface fi address 192.0.2.1;\ninterface fo address 203.0.113.1;\n");
        let subs = 1 + r.index(3);
        s.push_str(&subchains(
            r,
            subs,
            &K_POOLS,
            &["counter", "mark set 0x7", "log prefix \"s \""],
            &|_: &mut Rng| "reject".to_string(),
            "192.0.2.7",
        ));
        let tables: &[(&str, &[&str])] = &[
            ("raw", &["prerouting"]),
            ("mangle", &["prerouting", "forward", "postrouting"]),
            ("nat", &["prerouting", "input", "postrouting"]),
            ("filter", &["input", "forward"]),
        ];
        for (t, hooks) in tables {
            if *t != "filter" && r.chance(40) {
                continue;
            }
            s.push_str(&format!("table {t} {{\n"));
            for h in *hooks {
                if r.chance(30) && *t != "filter" {
                    continue;
                }
                let pol = if *t == "filter" && r.chance(25) || *t == "mangle" && r.chance(5) {
                    " policy drop"
                } else {
                    ""
                };
                s.push_str(&format!("  chain {h}{pol} {{\n"));
                for _ in 0..r.index(8) {
                    let l = L4::random(r);
                    let oif_ok = matches!(*h, "forward" | "postrouting");
                    let mut m = k_matches(r, l, true, oif_ok);
                    let mut st: Vec<String> = Vec::new();
                    if r.chance(25) {
                        st.push(
                            r.pick(&["counter", "mark set 0x1", "log level info"])
                                .to_string(),
                        );
                    }
                    if *t == "raw" && r.chance(30) {
                        st.push("notrack".into());
                    }
                    let ports = matches!(l, L4::Tcp | L4::Udp);
                    let term: String = match (*t, *h) {
                        ("nat", "postrouting") => r
                            .pick(&["masquerade", "snat to 203.0.113.99", "accept", ""])
                            .to_string(),
                        ("nat", "input") => r.pick(&["snat to 192.0.2.98", "accept", ""]).to_string(),
                        ("nat", _) => {
                            // destination NAT only for forwarded packets, and to where they were
                            // going anyway: the packet keeps its path
                            m.push("ip daddr 198.51.100.0/24".into());
                            if ports && r.chance(50) {
                                "dnat to 198.51.100.50:8080".into()
                            } else {
                                r.pick(&["dnat to 198.51.100.51", "accept", ""]).to_string()
                            }
                        }
                        ("raw" | "mangle", _) => r.pick(&["accept", "accept", "drop", "", ""]).to_string(),
                        _ => match r.index(10) {
                            0 | 6 | 8 => "accept".into(),
                            1 => "drop".into(),
                            2 => format!(
                                "jump s{}({}, {})",
                                r.index(subs),
                                r.pick(&["{ 192.0.2.7 }", "{ 192.0.2.0/28, 203.0.113.9 }"]),
                                r.pick(&["22", "80"])
                            ),
                            3 => format!("goto s{}({{ 198.51.100.1 }}, 443)", r.index(subs)),
                            4 if l == L4::Tcp => {
                                "tcp dport vmap { 22 : accept, 80 : drop, 1000-2000 : jump s0({ 192.0.2.7 }, 22) }"
                                    .into()
                            }
                            5 if l == L4::Tcp => "reject with tcp-reset".into(),
                            7 => "reject with icmp host-prohibited".into(),
                            _ => "return".into(),
                        },
                    };
                    if !term.is_empty() {
                        st.push(term);
                    }
                    if st.is_empty() {
                        st.push("counter".into());
                    }
                    s.push_str(&format!("    {} {};\n", m.join(" "), st.join(" ")));
                }
                s.push_str("  }\n");
            }
            s.push_str("}\n");
        }
        s
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

/// A ClassBench rule file as a `.fw` program of the bench's shape (one `filter/forward`
/// chain, policy drop; every rule `accept`, first match wins), and its number of rules. The
/// flags column is dropped, as classifiers do.
pub fn from_classbench(text: &str) -> (String, usize) {
    use std::fmt::Write as _;
    let mut s = String::from("table filter {\n    chain forward policy drop {\n");
    let mut n = 0;
    let prefix = |f: &str| -> Option<String> {
        let (a, l) = f.split_once('/')?;
        let a: std::net::Ipv4Addr = a.parse().ok()?;
        let l: u32 = l.parse().ok()?;
        let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        (l > 0).then(|| format!("{}/{l}", std::net::Ipv4Addr::from(u32::from(a) & mask)))
    };
    let range = |f: &str| -> Option<(u32, u32)> {
        let (lo, hi) = f.split_once(':')?;
        Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
    };
    for line in text.lines() {
        let cols: Vec<&str> = line.trim_start_matches('@').split('\t').collect();
        if cols.len() < 5 {
            continue;
        }
        let mut parts = Vec::new();
        if let Some(p) = prefix(cols[0]) {
            parts.push(format!("ip saddr {p}"));
        }
        if let Some(p) = prefix(cols[1]) {
            parts.push(format!("ip daddr {p}"));
        }
        let (Some(sp), Some(dp)) = (range(cols[2]), range(cols[3])) else {
            continue;
        };
        let (v, m) = cols[4].split_once('/').unwrap_or(("0", "0"));
        let hex = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).unwrap_or(0);
        let proto = (hex(m) == 0xFF).then(|| hex(v));
        let ports = |(lo, hi): (u32, u32)| (lo, hi) != (0, 65535);
        match proto {
            Some(p @ (6 | 17)) => {
                let l4 = if p == 6 { "tcp" } else { "udp" };
                if !ports(sp) && !ports(dp) {
                    parts.push(l4.to_string());
                }
                for (dir, (lo, hi)) in [("sport", sp), ("dport", dp)] {
                    if ports((lo, hi)) {
                        parts.push(if lo == hi {
                            format!("{l4} {dir} {lo}")
                        } else {
                            format!("{l4} {dir} {lo}-{hi}")
                        });
                    }
                }
            }
            // ports on another protocol (or on any) have no meaning a 5-tuple classifier
            // agrees on: such rules are left out (there are none in the seed sets)
            _ if ports(sp) || ports(dp) => continue,
            Some(p) => parts.push(format!("ip protocol {p}")),
            None => {}
        }
        parts.push("accept".into());
        let _ = writeln!(s, "        {};", parts.join(" "));
        n += 1;
    }
    s.push_str("    }\n}\n");
    (s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classbench_rules_become_fw_rules_in_order() {
        let text = "@186.11.101.36/32\t20.69.109.0/24\t0 : 65535\t1521 : 1521\t0x06/0xFF\t0x1000/0x1000\t\n\
                    @10.1.2.3/8\t0.0.0.0/0\t1024 : 65535\t0 : 65535\t0x11/0xFF\t0x0000/0x0000\t\n\
                    @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0000/0x0000\t\n\
                    @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n\
                    @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x00/0x00\t0x0000/0x0000\t\n";
        let (src, n) = from_classbench(text);
        // the last rule (ports on any protocol) is left out
        assert_eq!(n, 4, "{src}");
        let rules: Vec<&str> = src
            .lines()
            .filter(|l| l.ends_with(';'))
            .map(str::trim)
            .collect();
        assert_eq!(
            rules,
            [
                "ip saddr 186.11.101.36/32 ip daddr 20.69.109.0/24 tcp dport 1521 accept;",
                "ip saddr 10.0.0.0/8 udp sport 1024-65535 accept;",
                "ip protocol 1 accept;",
                "accept;",
            ]
        );
        let c = crate::compile_source("cb.fw", &src, &crate::loader::MemFiles::default());
        assert!(!c.has_errors());
    }

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
