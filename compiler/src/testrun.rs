//! Runs `test` blocks through the interpreter.

use crate::check::{Checked, TestCase};
use crate::interp::{self, Fate, Outcome};
use crate::ir::Program;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// At most this many `statistic` matches per packet are explored (2^n runs).
pub const MAX_COINS: usize = 12;

#[derive(Debug, Clone)]
pub struct TestResult {
    pub case: TestCase,
    pub passed: bool,
    /// why it failed: expected vs actual, in words
    pub failure: Option<String>,
    /// the outcome shown with the result (the failing one when it failed)
    pub outcome: Option<Outcome>,
}

fn endpoint(a: u32, p: Option<u16>) -> String {
    match p {
        Some(p) => format!("{}:{p}", Ipv4Addr::from(a)),
        None => Ipv4Addr::from(a).to_string(),
    }
}

fn check_one(p: &Program, tc: &TestCase) -> TestResult {
    let outcomes = match interp::run_all_outcomes(p, tc.path, &tc.packet, MAX_COINS) {
        Ok(o) => o,
        Err(e) => {
            return TestResult {
                case: tc.clone(),
                passed: false,
                failure: Some(e.to_string()),
                outcome: None,
            }
        }
    };
    let several = outcomes.len() > 1;
    for (coins, o) in &outcomes {
        let mut why = String::new();
        if o.fate.name() != tc.expect.name() {
            let _ = write!(why, "expected {}, got {}", tc.expect.name(), o.fate.name());
        } else if let Some((sa, sp, da, dp)) = tc.expect_as {
            let pk = &o.packet;
            let ok = pk.saddr == sa
                && sp.is_none_or(|x| x == pk.sport)
                && pk.daddr == da
                && dp.is_none_or(|x| x == pk.dport);
            if !ok {
                let _ = write!(
                    why,
                    "expected it to leave as {} -> {}, but it left as {} -> {}",
                    endpoint(sa, sp),
                    endpoint(da, dp),
                    endpoint(pk.saddr, sp.map(|_| pk.sport)),
                    endpoint(pk.daddr, dp.map(|_| pk.dport)),
                );
            }
        }
        if !why.is_empty() {
            if several {
                let desc: Vec<String> = coins
                    .iter()
                    .map(|(r, hit)| {
                        format!(
                            "`statistic` at {} {}",
                            p.rule_location(*r),
                            if *hit { "matches" } else { "does not match" }
                        )
                    })
                    .collect();
                let _ = write!(why, " (when {})", desc.join(" and "));
            }
            return TestResult {
                case: tc.clone(),
                passed: false,
                failure: Some(why),
                outcome: Some(o.clone()),
            };
        }
    }
    TestResult {
        case: tc.clone(),
        passed: true,
        failure: None,
        outcome: outcomes.into_iter().next().map(|(_, o)| o),
    }
}

pub fn run_tests(c: &Checked) -> Vec<TestResult> {
    c.tests.iter().map(|tc| check_one(&c.program, tc)).collect()
}

/// Fate names as test lines spell them.
pub fn fate_word(f: &Fate) -> &'static str {
    f.name()
}
