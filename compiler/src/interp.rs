//! The reference interpreter: the semantic ground truth for the JIT, the runtime and the
//! kernel back ends.
//!
//! Given a packet and its path, it runs every hook's tables in priority order with iptables
//! semantics: `accept` ends the table's traversal for this hook, `drop` / `reject` / `queue`
//! end the packet, `jump` pushes a return point and `goto` does not, `return` or falling off
//! a subchain goes back to the caller, and falling off a base chain applies its policy. Marks,
//! `notrack` and NAT done in an earlier hook are seen by later ones. The tables that run before
//! connection tracking (raw) see every packet's `ct state` as invalid (untracked after
//! `notrack`): the packet has no connection yet. The nat tables run only
//! for a connection's first packet (ct state new), as in the kernel.

use crate::ir::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The headers and metadata a rule can look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub proto: u8,
    pub saddr: u32,
    pub daddr: u32,
    /// TCP/UDP only
    pub sport: u16,
    pub dport: u16,
    /// ICMP only
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TCP only
    pub tcp_flags: u8,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub mark: u32,
    /// one of the `ct::*` bits
    pub ct: u8,
    pub ttl: u8,
    /// whether the transport header is there in full (false for a truncated one, and for a
    /// fragment other than the first): without it, port, ICMP-type and TCP-flag matches
    /// never match, negated or not
    pub l4: bool,
}

impl Default for Packet {
    fn default() -> Packet {
        Packet {
            proto: 6,
            saddr: 0,
            daddr: 0,
            sport: 0,
            dport: 0,
            icmp_type: 0,
            icmp_code: 0,
            tcp_flags: 0,
            iif: None,
            oif: None,
            mark: 0,
            ct: ct::NEW,
            ttl: 64,
            l4: true,
        }
    }
}

/// Metadata that does not come from the packet's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub mark: u32,
    pub ct: u8,
}

/// IPv4 header facts shared by every parser of raw packets (the interpreter's and the JIT's):
/// what counts as a valid header and where the transport header is.
pub mod wire {
    /// smallest IPv4 header
    pub const IPV4_MIN: usize = 20;
    /// transport header bytes needed before its fields are read
    pub const TCP_MIN: usize = 20;
    pub const UDP_MIN: usize = 8;
    pub const ICMP_MIN: usize = 8;
}

impl Packet {
    /// Parses an IPv4 packet. `None` when it is not a valid IPv4 header (too short, another
    /// version, a header length below 20 bytes or beyond the data, a total length outside
    /// the data): such packets never reach the hooks, as in the kernel's `ip_rcv`. A
    /// transport header that is truncated (or absent from a non-first fragment) leaves
    /// `l4` false.
    pub fn from_raw(b: &[u8], meta: &Meta) -> Option<Packet> {
        if b.len() < wire::IPV4_MIN || b[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if ihl < wire::IPV4_MIN || total < ihl || total > b.len() {
            return None;
        }
        let b = &b[..total];
        let frag_off = u16::from_be_bytes([b[6], b[7]]) & 0x1fff;
        let proto = b[9];
        let l4 = &b[ihl..];
        let mut p = Packet {
            proto,
            saddr: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            daddr: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
            ttl: b[8],
            iif: meta.iif.clone(),
            oif: meta.oif.clone(),
            mark: meta.mark,
            ct: meta.ct,
            l4: false,
            ..Packet::default()
        };
        if frag_off != 0 {
            return Some(p);
        }
        match proto {
            6 if l4.len() >= wire::TCP_MIN => {
                p.sport = u16::from_be_bytes([l4[0], l4[1]]);
                p.dport = u16::from_be_bytes([l4[2], l4[3]]);
                p.tcp_flags = l4[13] & 0x3f;
                p.l4 = true;
            }
            17 if l4.len() >= wire::UDP_MIN => {
                p.sport = u16::from_be_bytes([l4[0], l4[1]]);
                p.dport = u16::from_be_bytes([l4[2], l4[3]]);
                p.l4 = true;
            }
            1 if l4.len() >= wire::ICMP_MIN => {
                p.icmp_type = l4[0];
                p.icmp_code = l4[1];
                p.l4 = true;
            }
            _ => {}
        }
        Some(p)
    }

    /// A minimal well-formed IPv4 packet with these headers (checksums not computed): for
    /// tests and benchmarks.
    pub fn to_raw(&self) -> Vec<u8> {
        let l4len = match self.proto {
            6 => wire::TCP_MIN,
            17 => wire::UDP_MIN,
            1 => wire::ICMP_MIN,
            _ => 0,
        };
        let total = 20 + l4len;
        let mut b = vec![0u8; total];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        b[8] = self.ttl;
        b[9] = self.proto;
        b[12..16].copy_from_slice(&self.saddr.to_be_bytes());
        b[16..20].copy_from_slice(&self.daddr.to_be_bytes());
        match self.proto {
            6 => {
                b[20..22].copy_from_slice(&self.sport.to_be_bytes());
                b[22..24].copy_from_slice(&self.dport.to_be_bytes());
                b[32] = 0x50;
                b[33] = self.tcp_flags;
            }
            17 => {
                b[20..22].copy_from_slice(&self.sport.to_be_bytes());
                b[22..24].copy_from_slice(&self.dport.to_be_bytes());
                b[24..26].copy_from_slice(&8u16.to_be_bytes());
            }
            1 => {
                b[20] = self.icmp_type;
                b[21] = self.icmp_code;
            }
            _ => {}
        }
        b
    }

    pub fn meta(&self) -> Meta {
        Meta {
            iif: self.iif.clone(),
            oif: self.oif.clone(),
            mark: self.mark,
            ct: self.ct,
        }
    }
}

impl Packet {
    pub fn has_ports(&self) -> bool {
        self.proto == 6 || self.proto == 17
    }

    pub fn field(&self, f: Field) -> Option<u32> {
        Some(match f {
            Field::Saddr => self.saddr,
            Field::Daddr => self.daddr,
            Field::Proto => self.proto.into(),
            Field::Sport if self.has_ports() && self.l4 => self.sport.into(),
            Field::Dport if self.has_ports() && self.l4 => self.dport.into(),
            Field::IcmpType if self.proto == 1 && self.l4 => self.icmp_type.into(),
            Field::Mark => self.mark,
            _ => return None,
        })
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, d) = (Ipv4Addr::from(self.saddr), Ipv4Addr::from(self.daddr));
        match self.proto {
            6 | 17 => write!(
                f,
                "{} {s}:{} -> {d}:{}",
                if self.proto == 6 { "tcp" } else { "udp" },
                self.sport,
                self.dport
            )?,
            1 => {
                write!(f, "icmp {s} -> {d} type ")?;
                match crate::types::icmp_type_name(self.icmp_type) {
                    Some(n) => f.write_str(n)?,
                    None => write!(f, "{}", self.icmp_type)?,
                }
            }
            p => write!(f, "proto {p} {s} -> {d}")?,
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        if self.ct != ct::NEW {
            write!(f, " ct state {}", ct::names(self.ct).join(","))?;
        }
        if self.mark != 0 {
            write!(f, " mark {:#x}", self.mark)?;
        }
        Ok(())
    }
}

/// A packet's way through the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    /// prerouting, input: a packet for this host
    Input,
    /// prerouting, forward, postrouting
    Forward,
    /// output, postrouting: a packet from this host
    Output,
}

impl PathKind {
    pub fn hooks(self) -> &'static [Hook] {
        match self {
            PathKind::Input => &[Hook::Prerouting, Hook::Input],
            PathKind::Forward => &[Hook::Prerouting, Hook::Forward, Hook::Postrouting],
            PathKind::Output => &[Hook::Output, Hook::Postrouting],
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Input => "input",
            PathKind::Forward => "forward",
            PathKind::Output => "output",
        }
    }
}

/// What finally happens to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fate {
    Accept,
    Drop,
    Reject(RejectKind),
    Queue {
        num: u16,
        bypass: bool,
    },
    /// a hook function took the packet (netfilter's `NF_STOLEN`): the runtime's registered
    /// functions only, never a rule
    Stolen,
}

impl Fate {
    pub fn name(&self) -> &'static str {
        match self {
            Fate::Accept => "accept",
            Fate::Drop => "drop",
            Fate::Reject(_) => "reject",
            Fate::Queue { .. } => "queue",
            Fate::Stolen => "stolen",
        }
    }
}

/// One step of a trace: a rule that matched, or a policy that applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub hook: Hook,
    pub table: Table,
    pub chain: ChainId,
    /// `None` for a policy
    pub rule: Option<RuleId>,
    /// what happened, in words (`accept`, `jump x`, `mark set 0x1`, `policy drop`...)
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub fate: Fate,
    /// the packet as it leaves (or where it stopped), after marks and NAT
    pub packet: Packet,
    pub trace: Vec<TraceStep>,
    /// the rule that decided the fate: the one that dropped, rejected or queued it, or, for
    /// an accepted packet, the one that accepted it (or NATed it) in the last table it
    /// passed; `None` when a policy decided (or no table ran)
    pub deciding_rule: Option<RuleId>,
}

/// Decides the stateful and random matches.
pub trait Oracle {
    /// Does this `limit` match (is the packet within the rate)?
    fn limit(&mut self, rule: RuleId, pred: &Pred) -> bool;
    /// Does this `statistic probability p` match?
    fn statistic(&mut self, rule: RuleId, p: f64) -> bool;
}

/// Every bucket full and every coin landing on "match": the first packet of a fresh datapath.
pub struct FreshOracle;

impl Oracle for FreshOracle {
    fn limit(&mut self, _rule: RuleId, pred: &Pred) -> bool {
        // a full bucket lets `burst` packets through: `limit` matches, `limit over` does not
        !matches!(pred, Pred::Limit { neg: true, .. })
    }
    fn statistic(&mut self, _rule: RuleId, p: f64) -> bool {
        p > 0.0
    }
}

/// Replays a fixed sequence of `statistic` outcomes (then `false`), recording how many were
/// asked for (only coins with 0 < p < 1 count): used to enumerate every outcome of a packet's random matches.
pub struct ScriptedOracle {
    pub script: Vec<bool>,
    /// the rule of each coin asked for, and how it landed
    pub coins: Vec<(RuleId, bool)>,
}

impl Oracle for ScriptedOracle {
    fn limit(&mut self, r: RuleId, pred: &Pred) -> bool {
        FreshOracle.limit(r, pred)
    }
    fn statistic(&mut self, rule: RuleId, p: f64) -> bool {
        let i = self.coins.len();
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let hit = self.script.get(i).copied().unwrap_or(false);
        self.coins.push((rule, hit));
        hit
    }
}

fn pred_matches(p: &Pred, pkt: &Packet, rule: RuleId, oracle: &mut dyn Oracle) -> bool {
    match p {
        Pred::Field { field, neg, op } => match pkt.field(*field) {
            Some(v) => op.contains(v) != *neg,
            // a field the packet does not have never matches, negated or not (nft semantics)
            None => false,
        },
        Pred::Iface { dir, neg, names } => {
            let i = match dir {
                IfDir::In => pkt.iif.as_deref(),
                IfDir::Out => pkt.oif.as_deref(),
            };
            names.iter().any(|n| n.matches(i)) != *neg
        }
        Pred::CtState { neg, mask } => (pkt.ct & mask != 0) != *neg,
        Pred::TcpFlags { neg, mask, value } => {
            pkt.proto == 6 && pkt.l4 && ((pkt.tcp_flags & mask == *value) != *neg)
        }
        Pred::Statistic { p } => oracle.statistic(rule, *p),
        Pred::Limit { .. } => oracle.limit(rule, p),
    }
}

/// Environment the NAT statements need: interface addresses (masquerade, redirect).
pub trait NatEnv {
    fn iface_addr(&self, name: &str) -> Option<u32>;
}

impl NatEnv for Program {
    fn iface_addr(&self, name: &str) -> Option<u32> {
        self.interface_addr(name)
    }
}

enum Step {
    Next,
    /// ends this table at this hook
    TableAccept,
    End(Fate),
    Jump(ChainId),
    Goto(ChainId),
    Return,
}

/// Chain traversal of one table at one hook.
struct Traversal<'p> {
    p: &'p Program,
    hook: Hook,
    table: Table,
}

const MAX_JUMP_DEPTH: usize = 64;

/// An error that stops interpretation (never a panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpError {
    /// masquerade or redirect needs the address of an interface the program does not declare
    NoIfaceAddr { rule: RuleId, iface: Option<String> },
    /// more `statistic` matches on the packet's way than can be enumerated
    TooManyCoins { max: usize },
    /// every translated tuple the NAT statement allows is already in use (the kernel drops
    /// such a packet)
    NatExhausted { rule: RuleId },
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::NoIfaceAddr { iface: Some(i), .. } => write!(
                f,
                "the rule needs the address of `{i}`: declare it with `interface {i} address ADDR;`"
            ),
            InterpError::NatExhausted { rule } => write!(
                f,
                "rule {} found no free address and port to translate to",
                rule.0
            ),
            InterpError::TooManyCoins { max } => write!(
                f,
                "the packet meets more than {max} `statistic` matches: too many outcomes to check them all"
            ),
            InterpError::NoIfaceAddr { iface: None, .. } => write!(
                f,
                "the rule needs an interface address, but the packet has no interface (give it `iif` / `oif`)"
            ),
        }
    }
}

/// Applies a NAT statement to the packet's headers, as the first packet of a connection sees
/// it: the address is the first of the range (or the interface's, for masquerade and
/// redirect) and the port is kept when it lies in the requested range, else the range's first
/// port. The datapath chooses among free tuples instead (issue 4); this is the deterministic
/// reference every back end reproduces.
pub fn apply_nat(
    p: &Program,
    s: &Stmt,
    pkt: &mut Packet,
    rule: RuleId,
    path: PathKind,
) -> Result<(), InterpError> {
    Traversal {
        p,
        hook: Hook::Prerouting,
        table: Table::Nat,
    }
    .apply_nat(s, pkt, rule, path)
}

impl Traversal<'_> {
    fn apply_nat(
        &self,
        s: &Stmt,
        pkt: &mut Packet,
        rule: RuleId,
        path: PathKind,
    ) -> Result<(), InterpError> {
        let pick_port = |cur: u16, r: &NatRange| -> u16 {
            match r.ports {
                // deterministic stand-in for the kernel's choice: keep the port when it fits
                Some((lo, hi)) if cur < lo || cur > hi => lo,
                _ => cur,
            }
        };
        let pick_addr = |r: &NatRange| r.addr.map(|(lo, _)| lo);
        match s {
            Stmt::Snat(r) => {
                if let Some(a) = pick_addr(r) {
                    pkt.saddr = a;
                }
                if pkt.has_ports() {
                    pkt.sport = pick_port(pkt.sport, r);
                }
            }
            Stmt::Masquerade(r) => {
                let oif = pkt.oif.clone();
                let a = oif
                    .as_deref()
                    .and_then(|o| self.p.iface_addr(o))
                    .ok_or(InterpError::NoIfaceAddr { rule, iface: oif })?;
                pkt.saddr = a;
                if pkt.has_ports() {
                    pkt.sport = pick_port(pkt.sport, r);
                }
            }
            Stmt::Dnat(r) => {
                if let Some(a) = pick_addr(r) {
                    pkt.daddr = a;
                }
                if pkt.has_ports() {
                    if let Some((lo, _)) = r.ports {
                        pkt.dport = lo;
                    }
                }
            }
            Stmt::Redirect(r) => {
                let a = if path == PathKind::Output {
                    u32::from(Ipv4Addr::LOCALHOST)
                } else {
                    let iif = pkt.iif.clone();
                    iif.as_deref()
                        .and_then(|i| self.p.iface_addr(i))
                        .ok_or(InterpError::NoIfaceAddr { rule, iface: iif })?
                };
                pkt.daddr = a;
                if pkt.has_ports() {
                    if let Some((lo, _)) = r.ports {
                        pkt.dport = lo;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn exec(
        &self,
        s: &Stmt,
        pkt: &mut Packet,
        rule: RuleId,
        path: PathKind,
        trace: &mut Vec<TraceStep>,
        chain: ChainId,
    ) -> Result<Step, InterpError> {
        let mut log = |action: String| {
            trace.push(TraceStep {
                hook: self.hook,
                table: self.table,
                chain,
                rule: Some(rule),
                action,
            })
        };
        Ok(match s {
            Stmt::Accept => {
                log("accept".into());
                Step::TableAccept
            }
            Stmt::Drop => {
                log("drop".into());
                Step::End(Fate::Drop)
            }
            Stmt::Reject(k) => {
                log(fmt_stmt(self.p, s));
                Step::End(Fate::Reject(*k))
            }
            Stmt::Queue { num, bypass } => {
                log(fmt_stmt(self.p, s));
                Step::End(Fate::Queue {
                    num: *num,
                    bypass: *bypass,
                })
            }
            Stmt::Return => {
                log("return".into());
                Step::Return
            }
            Stmt::Jump(c) => {
                log(fmt_stmt(self.p, s));
                Step::Jump(*c)
            }
            Stmt::Goto(c) => {
                log(fmt_stmt(self.p, s));
                Step::Goto(*c)
            }
            Stmt::Counter | Stmt::Log { .. } | Stmt::Audit => {
                log(fmt_stmt(self.p, s));
                Step::Next
            }
            Stmt::MarkSet(m) => {
                pkt.mark = *m;
                log(fmt_stmt(self.p, s));
                Step::Next
            }
            Stmt::TtlSet(t) => {
                pkt.ttl = *t;
                log(fmt_stmt(self.p, s));
                Step::Next
            }
            Stmt::Notrack => {
                pkt.ct = ct::UNTRACKED;
                log("notrack".into());
                Step::Next
            }
            Stmt::Snat(_) | Stmt::Dnat(_) | Stmt::Masquerade(_) | Stmt::Redirect(_) => {
                self.apply_nat(s, pkt, rule, path)?;
                log(format!(
                    "{} (now {}:{} -> {}:{})",
                    fmt_stmt(self.p, s),
                    Ipv4Addr::from(pkt.saddr),
                    pkt.sport,
                    Ipv4Addr::from(pkt.daddr),
                    pkt.dport
                ));
                Step::TableAccept
            }
            Stmt::Vmap { key, arms } => {
                let hit = arms.iter().find(|a| match (&a.key, key) {
                    (VmapArmKey::Num(e), VmapKey::Field(f)) => {
                        pkt.field(*f).map(|v| e.contains(v)).unwrap_or(false)
                    }
                    (VmapArmKey::Iface(n), VmapKey::Iface(d)) => n.matches(match d {
                        IfDir::In => pkt.iif.as_deref(),
                        IfDir::Out => pkt.oif.as_deref(),
                    }),
                    _ => false,
                });
                match hit {
                    Some(a) => self.exec(&a.verdict, pkt, rule, path, trace, chain)?,
                    None => Step::Next,
                }
            }
        })
    }

    /// Runs the base chain; `Ok(None)` = accepted by this table, `Some(fate)` = packet ends.
    fn run(
        &self,
        base: ChainId,
        pkt: &mut Packet,
        path: PathKind,
        oracle: &mut dyn Oracle,
        trace: &mut Vec<TraceStep>,
        deciding: &mut Option<RuleId>,
    ) -> Result<Option<Fate>, InterpError> {
        // (chain, next rule index) return points pushed by `jump`
        let mut stack: Vec<(ChainId, usize)> = Vec::new();
        let mut chain = base;
        let mut idx = 0usize;
        loop {
            let c = self.p.chain(chain);
            let Some(rule) = c.rules.get(idx) else {
                // end of chain: return to the caller, or the base chain's policy
                match stack.pop() {
                    Some((ch, i)) => {
                        chain = ch;
                        idx = i;
                        continue;
                    }
                    None => return Ok(self.policy(base, trace)),
                }
            };
            idx += 1;
            if !rule
                .preds
                .iter()
                .all(|p| pred_matches(p, pkt, rule.id, oracle))
            {
                continue;
            }
            let mut step = Step::Next;
            for s in &rule.stmts {
                step = self.exec(s, pkt, rule.id, path, trace, chain)?;
                if !matches!(step, Step::Next) {
                    break;
                }
            }
            match step {
                Step::Next => {}
                Step::TableAccept => {
                    *deciding = Some(rule.id);
                    return Ok(None);
                }
                Step::End(f) => {
                    *deciding = Some(rule.id);
                    return Ok(Some(f));
                }
                Step::Jump(t) => {
                    if stack.len() >= MAX_JUMP_DEPTH {
                        // the kernel drops on jump stack overflow
                        *deciding = Some(rule.id);
                        return Ok(Some(Fate::Drop));
                    }
                    stack.push((chain, idx));
                    chain = t;
                    idx = 0;
                }
                Step::Goto(t) => {
                    chain = t;
                    idx = 0;
                }
                Step::Return => match stack.pop() {
                    Some((ch, i)) => {
                        chain = ch;
                        idx = i;
                    }
                    None => return Ok(self.policy(base, trace)),
                },
            }
        }
    }

    fn policy(&self, base: ChainId, trace: &mut Vec<TraceStep>) -> Option<Fate> {
        let policy = match self.p.chain(base).kind {
            ChainKind::Base { policy, .. } => policy,
            ChainKind::Sub { .. } => Policy::Accept,
        };
        trace.push(TraceStep {
            hook: self.hook,
            table: self.table,
            chain: base,
            rule: None,
            action: match policy {
                Policy::Accept => "policy accept".into(),
                Policy::Drop => "policy drop".into(),
            },
        });
        match policy {
            Policy::Accept => None,
            Policy::Drop => Some(Fate::Drop),
        }
    }
}

/// Runs `pkt` along `path` through the program.
pub fn run(
    p: &Program,
    path: PathKind,
    pkt: &Packet,
    oracle: &mut dyn Oracle,
) -> Result<Outcome, InterpError> {
    let mut pkt = pkt.clone();
    let mut trace = Vec::new();
    let mut deciding: Option<RuleId> = None;
    // whether the nat tables see this packet is decided by conntrack, i.e. before raw's
    // notrack can only make it untracked (which also skips nat)
    for &hook in path.hooks() {
        for e in &p.hooks[hook.index()] {
            if e.table == Table::Nat && pkt.ct & (ct::NEW | ct::RELATED) == 0 {
                // NAT rules only see a connection's first packet (new, or related to another
                // connection); established, untracked and invalid packets skip the nat table
                continue;
            }
            let t = Traversal {
                p,
                hook,
                table: e.table,
            };
            deciding = None;
            // before conntrack's hook (the raw table) the packet has no connection yet: its
            // `ct state` is invalid, or untracked once `notrack` ran, as in the kernel
            let before_ct = (e.priority < CONNTRACK_PRIORITY).then_some(pkt.ct);
            if before_ct.is_some() && pkt.ct != ct::UNTRACKED {
                pkt.ct = ct::INVALID;
            }
            let r = t.run(e.chain, &mut pkt, path, oracle, &mut trace, &mut deciding);
            if let Some(b) = before_ct {
                if pkt.ct != ct::UNTRACKED {
                    pkt.ct = b;
                }
            }
            if let Some(fate) = r? {
                return Ok(Outcome {
                    fate,
                    packet: pkt,
                    trace,
                    deciding_rule: deciding,
                });
            }
        }
    }
    // accepted by every table: the rule that accepted it in the last table it passed (none
    // when that table's policy did)
    Ok(Outcome {
        fate: Fate::Accept,
        packet: pkt,
        trace,
        deciding_rule: deciding,
    })
}

/// How the random matches of one run landed: each `statistic` rule met, and whether it matched.
pub type Coins = Vec<(RuleId, bool)>;

/// Every outcome of a packet over all results of its `statistic` matches (at most
/// `2^max_coins` runs), each with how its coins landed (the rule of each, and whether it
/// matched).
pub fn run_all_outcomes(
    p: &Program,
    path: PathKind,
    pkt: &Packet,
    max_coins: usize,
) -> Result<Vec<(Coins, Outcome)>, InterpError> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<bool>> = vec![vec![]];
    while let Some(script) = pending.pop() {
        let mut o = ScriptedOracle {
            script: script.clone(),
            coins: vec![],
        };
        let res = run(p, path, pkt, &mut o)?;
        // coins beyond the script defaulted to false; branch on each of them as true
        // only coins that can go either way count against the budget
        let random = o.coins.len();
        if random > max_coins {
            return Err(InterpError::TooManyCoins { max: max_coins });
        }
        if random > script.len() {
            for k in script.len()..random {
                let mut s = script.clone();
                s.resize(k, false);
                s.push(true);
                pending.push(s);
            }
        }
        out.push((o.coins, res));
    }
    Ok(out)
}

/// Classifies raw bytes: parses them ([`Packet::from_raw`]) and runs them along `path`. A
/// packet that is not valid IPv4 is dropped before the hooks, with no deciding rule.
pub fn run_raw(
    p: &Program,
    path: PathKind,
    bytes: &[u8],
    meta: &Meta,
    oracle: &mut dyn Oracle,
) -> Result<Outcome, InterpError> {
    match Packet::from_raw(bytes, meta) {
        Some(pkt) => run(p, path, &pkt, oracle),
        None => Ok(Outcome {
            fate: Fate::Drop,
            packet: Packet {
                l4: false,
                ..Packet::default()
            },
            trace: vec![],
            deciding_rule: None,
        }),
    }
}
