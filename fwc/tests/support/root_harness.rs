//! The custom harness of the tests that need root (network namespaces, iptables): without
//! root they print why they skip and count nothing as passed; with it, each test runs once,
//! a failure or panic fails the run.

use std::process::{Command, Output};

pub type Test = fn() -> Result<(), String>;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `tests` as suite `suite`; `needs` says what root is for, in the skip message.
pub fn run(suite: &str, needs: &str, tests: &[(&str, Test)]) {
    if !is_root() {
        println!("{suite} tests skipped: they need root ({needs})");
        println!("{suite}: 0 passed, 0 failed, {} skipped", tests.len());
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, t) in tests {
        match std::panic::catch_unwind(t) {
            Ok(Ok(())) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Ok(Err(why)) => {
                println!("test {name} ... FAILED\n{why}");
                failed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED (panicked)");
                failed += 1;
            }
        }
    }
    println!("{suite}: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Runs `args` in namespace `ns` (through `ip netns exec`), or in this one.
pub fn sh(ns: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    cmd.output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}
