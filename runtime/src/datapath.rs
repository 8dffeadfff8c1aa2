//! The packet pipeline: one frame in, its fate and (when it passes) the rewritten frame out.
//!
//! Each hook is a list of functions in priority order, as netfilter's: the program's
//! tables at their kernel priorities, connection tracking at -200 of prerouting/output
//! (after the raw table), NAT at the nat table's place (first packets choose a binding with
//! [`nat::unique_tuple`], later packets are translated as their connection says), and the
//! functions registered here ([`Datapath::register_hook`]) with their verdicts accept /
//! drop / queue / stolen / repeat / stop. The datapath registers its own: the router's TTL
//! check first at `forward` (a forwarded packet arriving with TTL 1 or 0 is dropped, as
//! `ip_forward` does), IPVS at `input` 98 (`ip_vs_remote_request4`, NF_IP_PRI_NAT_SRC - 2;
//! it steals the packets of virtual services and sends them to their real servers), and
//! conntrack's confirm last at `input` and `postrouting`. Forwarded packets lose one TTL.
//! Frames that are not IPv4 pass untouched.

use crate::conntrack::{CtInfo, Dir, EntryId, Table, Tuple};
use crate::ipvs;
use crate::nat::{self, Manip, Range};
use crate::wire::{ethernet, ipv4};
use fwc_compiler::interp::{Fate, InterpError, Meta, Oracle, Packet, PathKind};
use fwc_compiler::ir::{ct, Hook, Pred, Program, RuleId, Stmt};
use fwc_jit::{HookFn, HookVerdict, Hooks, JitOutcome, JitProgram};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A function registered at a hook: it sees the packet's headers (and may change its
/// addresses, ports and mark) and answers with a netfilter verdict.
pub type HookHandler = Box<dyn FnMut(Hook, &mut Packet) -> HookVerdict + Send>;

/// A queue's handler (`Datapath::register_queue`): it gets a queued packet's headers (and
/// may change its addresses, ports and mark) and bytes, and reinjects it with a verdict.
pub type QueueHandler = Box<dyn FnMut(Hook, &mut Packet, &[u8]) -> HookVerdict + Send>;

/// Where `log` and `audit` lines go (`Datapath::set_log`).
pub type LogSink = Box<dyn FnMut(&str) + Send>;

/// The datapath's own hook functions (registered ones count up from 0).
const FN_FORWARD_TTL: u32 = u32::MAX - 2;
const FN_IPVS: u32 = u32::MAX - 1;
const FN_CONFIRM: u32 = u32::MAX;

/// `NF_IP_PRI_NAT_SRC - 2`: where IPVS takes the packets of its virtual services at
/// `input`, after the filter table and before source NAT.
pub const IPVS_PRIORITY: i32 = 98;

/// The datapath's own functions (IPVS only when the program has virtual services).
fn builtins(ipvs: bool) -> Vec<HookFn> {
    let mut v = vec![HookFn {
        hook: Hook::Forward,
        priority: i32::MIN,
        id: FN_FORWARD_TTL,
    }];
    if ipvs {
        v.push(HookFn {
            hook: Hook::Input,
            priority: IPVS_PRIORITY,
            id: FN_IPVS,
        });
    }
    for hook in [Hook::Input, Hook::Postrouting] {
        v.push(HookFn {
            hook,
            priority: i32::MAX,
            id: FN_CONFIRM,
        });
    }
    v
}

/// How frames arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    RawIp,
}

/// What happened to a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub fate: Fate,
    pub path: Option<PathKind>,
    pub deciding_rule: Option<RuleId>,
    pub ct: Option<CtInfo>,
    /// the frame to send on, for an accepted packet
    pub frame: Option<Vec<u8>>,
    /// why the datapath itself dropped it (not a rule)
    pub reason: Option<&'static str>,
    /// where to send the frame on its link when that is not its destination address: the
    /// real server of an IPVS direct-routing connection (the packet keeps the virtual
    /// address; only the Ethernet destination changes)
    pub next_hop: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathStats {
    pub frames: u64,
    pub accepted: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub queued: u64,
    /// taken by a registered hook function
    pub stolen: u64,
    pub not_ip: u64,
    pub malformed: u64,
}

pub struct Datapath {
    jit: JitProgram,
    pub ct: Table,
    /// IPVS: the program's virtual services and their connections
    ipvs: IpvsState,
    /// this host's own addresses
    host: Vec<Ipv4Addr>,
    /// `host` and the virtual services' addresses
    locals: Vec<Ipv4Addr>,
    rng: u64,
    pub stats: DatapathStats,
    /// Whether this datapath forwards packets itself: a forwarded packet has its TTL
    /// decremented, and one that arrives with TTL 1 or 0 is dropped (as `ip_forward` does,
    /// before the `forward` hook's rules: its new connection is not confirmed).
    /// `true` for a replay; `false` under NFQUEUE, where the kernel routes and decrements.
    pub forwards: bool,
    /// The routing table that gives a forwarded packet its output interface after
    /// `prerouting` (live sources: the kernel's). Without one, a forwarded packet keeps the
    /// output interface it was given.
    pub routes: Option<crate::live::Routes>,
    /// functions registered with [`Datapath::register_hook`], by id
    handlers: Vec<(HookFn, HookHandler)>,
    /// queue handlers (`Datapath::register_queue`), by queue number
    queue_handlers: HashMap<u16, QueueHandler>,
    /// `limit` buckets of the program running (a reload starts them full again)
    limits: Limits,
    /// the `statistic` coins' generator
    coins: u64,
    /// the `log` prefixes (`Some`) and `audit`s (`None`), by (rule, statement index)
    log_rules: HashMap<(u32, u32), Option<String>>,
    log_sink: Option<LogSink>,
    /// Whether a queue with no handler here is someone else's: under NFQUEUE a packet
    /// queued to it goes back to the kernel with a verdict naming that queue
    /// (`Fate::Queue`). Otherwise nothing listens on it: its packets are dropped, or with
    /// `bypass` go on, as the kernel does with a queue nobody bound.
    pub queues_outside: bool,
    /// the time of the latest packet (ms)
    now: u64,
    /// the classifier's metadata and outcome, kept from packet to packet: their strings and
    /// vectors are reused (no allocation per packet for interface names or logs)
    meta: Meta,
    outcome: JitOutcome,
}

/// The state of IPVS: services, the bindings (service and real server) connections are
/// made to, their counts and traffic, persistence templates, and the connections it
/// forwards by direct routing or tunnelling (the NAT ones live in conntrack).
#[derive(Default)]
struct IpvsState {
    services: Vec<ipvs::Service>,
    /// IPVS bindings (service protocol, virtual address and port, real address and port),
    /// interned: a connection's binding is an index here, stable across reloads
    bindings: Vec<Binding>,
    binding_ids: HashMap<Binding, u32>,
    /// (ActiveConn, InActConn) per binding
    binding_counts: Vec<(u32, u32)>,
    /// traffic per binding (`ipvsadm --stats`)
    binding_stats: Vec<ipvs::Stats>,
    /// persistence templates: (protocol, virtual address, port, client address) -> (real
    /// address, port, until when in ms)
    persistence: HashMap<Template, (Ipv4Addr, u16, u64)>,
    persistence_sweep: usize,
    /// direct-routing and tunnelled connections
    conns: ipvs::Conns,
    /// rate estimators per binding, and per service (protocol, address, port)
    estimators: Vec<ipvs::Estimator>,
    service_estimators: HashMap<(u8, Ipv4Addr, u16), ipvs::Estimator>,
    /// when the estimators move on next (ms)
    next_estimate: u64,
    /// count changes from `conns`, applied after each use (a reused buffer)
    changes: Vec<ipvs::CountChange>,
}

/// What IPVS does with a packet it took.
#[derive(Debug, Clone, Copy)]
struct IpvsAction {
    binding: u32,
    forward: ipvs::Forward,
    real: Ipv4Addr,
}

type Binding = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

/// A persistence template's key: service protocol, virtual address and port, client address.
type Template = (u8, Ipv4Addr, u16, Ipv4Addr);

impl IpvsState {
    fn binding(&mut self, key: Binding) -> u32 {
        if let Some(&b) = self.binding_ids.get(&key) {
            return b;
        }
        let b = self.bindings.len() as u32;
        self.bindings.push(key);
        self.binding_ids.insert(key, b);
        self.binding_counts.push((0, 0));
        self.binding_stats.push(ipvs::Stats::default());
        self.estimators.push(ipvs::Estimator::default());
        b
    }

    /// Moves the rate estimators on by every 2-second period up to `now` (at most 64: after
    /// that long without a step every rate has decayed to its last value's 1/10^8).
    fn estimate(&mut self, now: u64) {
        if self.next_estimate == 0 {
            self.next_estimate = now + ipvs::ESTIMATOR_PERIOD;
            return;
        }
        let mut steps = 0;
        while now >= self.next_estimate {
            if steps < 64 {
                let mut per_service: HashMap<(u8, Ipv4Addr, u16), ipvs::Stats> = HashMap::new();
                for (b, st) in self.binding_stats.iter().enumerate() {
                    self.estimators[b].tick(st);
                    let (p, vip, vport, _, _) = self.bindings[b];
                    per_service.entry((p, vip, vport)).or_default().add(st);
                }
                for s in &self.services {
                    let key = (s.proto, s.vip, s.port);
                    let total = per_service.get(&key).copied().unwrap_or_default();
                    self.service_estimators.entry(key).or_default().tick(&total);
                }
            }
            steps += 1;
            self.next_estimate += ipvs::ESTIMATOR_PERIOD;
        }
    }

    /// Adds to a binding's (active, inactive) counts and its real server's.
    fn adjust(&mut self, binding: u32, active: i32, inactive: i32) {
        let Some(c) = self.binding_counts.get_mut(binding as usize) else {
            return;
        };
        c.0 = c.0.saturating_add_signed(active);
        c.1 = c.1.saturating_add_signed(inactive);
        let counts = *c;
        let (p, vip, vport, rip, rport) = self.bindings[binding as usize];
        let dest = self
            .services
            .iter_mut()
            .filter(|s| (s.proto, s.vip, s.port) == (p, vip, vport))
            .flat_map(|s| s.dests.iter_mut())
            .find(|d| (d.addr, d.port) == (rip, rport));
        if let Some(d) = dest {
            (d.active, d.inactive) = counts;
        }
    }

    /// Applies conntrack's count changes (NAT connections) and the IPVS table's.
    fn sync(&mut self, ct: &mut Table) {
        for ev in ct.take_ipvs_events() {
            if ev.opened {
                if let Some(st) = self.binding_stats.get_mut(ev.binding as usize) {
                    st.conns += 1;
                }
            }
            self.adjust(ev.binding, ev.active, ev.inactive);
        }
        self.apply_changes();
    }

    fn apply_changes(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        for &(b, a, i) in &changes {
            self.adjust(b, a, i);
        }
        self.changes = changes;
        self.changes.clear();
    }

    /// Schedules a new connection of `client` to service `si`: its real server's index,
    /// by the persistence template when one lives, else by the scheduler.
    fn schedule(&mut self, si: usize, client: Ipv4Addr, cport: u16, now: u64) -> Option<usize> {
        let svc = &mut self.services[si];
        // a persistent service sends a client back to the server it had, as long as its
        // template lives (IPVS persistence templates: client address -> real server,
        // refreshed by every packet of the client's connections)
        let tkey = (svc.proto, svc.vip, svc.port, client);
        let kept = svc.persistent.and_then(|_| {
            let &(addr, port, until) = self.persistence.get(&tkey)?;
            (until > now)
                .then(|| {
                    svc.dests
                        .iter()
                        .position(|d| (d.addr, d.port) == (addr, port) && d.weight > 0)
                })
                .flatten()
        });
        let k = kept.or_else(|| svc.pick(client, cport))?;
        if let Some(secs) = svc.persistent {
            let d = &svc.dests[k];
            self.persistence
                .insert(tkey, (d.addr, d.port, now + u64::from(secs) * 1000));
            // expired templates go when the map has doubled since the last sweep
            if self.persistence.len() > self.persistence_sweep {
                self.persistence.retain(|_, v| v.2 > now);
                self.persistence_sweep = (2 * self.persistence.len()).max(1024);
            }
        }
        Some(k)
    }

    /// Counts a packet of a connection on `binding` and refreshes the client's template.
    fn account(&mut self, binding: u32, client: Option<Ipv4Addr>, dir: Dir, len: u64, now: u64) {
        let (p, vip, vport, _, _) = self.bindings[binding as usize];
        if let Some(client) = client {
            if let Some(tpl) = self.persistence.get_mut(&(p, vip, vport, client)) {
                let secs = self
                    .services
                    .iter()
                    .find(|s| (s.proto, s.vip, s.port) == (p, vip, vport))
                    .and_then(|s| s.persistent)
                    .unwrap_or(0);
                tpl.2 = tpl.2.max(now + u64::from(secs) * 1000);
            }
        }
        let st = &mut self.binding_stats[binding as usize];
        if dir == Dir::Original {
            st.inpkts += 1;
            st.inbytes += len;
        } else {
            st.outpkts += 1;
            st.outbytes += len;
        }
    }
}

/// `limit` token buckets, one per rule, as nft's `nft_limit` keeps them: tokens are
/// nanoseconds of credit, a packet costs `per / rate`, a bucket holds `burst` packets'
/// worth and starts full; a packet within the rate takes its cost. `limit over` matches
/// what `limit` does not.
#[derive(Debug, Default)]
struct Limits {
    /// rule id -> (tokens in ns, last refill in ns)
    buckets: HashMap<u32, (u64, u64)>,
}

/// The datapath's answers to the stateful matches: token buckets on the datapath's clock
/// and `statistic` coins from a xorshift generator (as `xt_statistic`: the low 31 bits of
/// a random word below `p` × 2^31).
struct LiveOracle<'a> {
    now_ns: u64,
    limits: &'a mut Limits,
    rng: &'a mut u64,
}

impl Oracle for LiveOracle<'_> {
    fn limit(&mut self, rule: RuleId, pred: &Pred) -> bool {
        let Pred::Limit {
            neg,
            rate,
            per_secs,
            burst,
        } = *pred
        else {
            return false;
        };
        let cost = (per_secs.saturating_mul(1_000_000_000) / rate.max(1)).max(1);
        let max = cost.saturating_mul(u64::from(burst.max(1)));
        let now = self.now_ns;
        let (tokens, last) = self.limits.buckets.entry(rule.0).or_insert((max, now));
        let credit = tokens.saturating_add(now.saturating_sub(*last)).min(max);
        *last = now;
        let within = credit >= cost;
        *tokens = if within { credit - cost } else { credit };
        within != neg
    }

    fn statistic(&mut self, _rule: RuleId, p: f64) -> bool {
        let threshold = (p.clamp(0.0, 1.0) * 2_147_483_648.0) as u64;
        (xorshift(self.rng) & 0x7fff_ffff) < threshold
    }
}

/// One step of a xorshift64 generator (the NAT port draws and the `statistic` coins).
fn xorshift(r: &mut u64) -> u64 {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    *r
}

/// The datapath's side of the JIT's hooks for one packet.
struct PacketHooks<'a> {
    ct: &'a mut Table,
    now: u64,
    ip: &'a [u8],
    track: Option<(EntryId, Dir, CtInfo)>,
    /// what conntrack said, with or without an entry (INVALID has none)
    info: Option<CtInfo>,
    rng: &'a mut u64,
    locals: &'a [Ipv4Addr],
    routes: Option<&'a crate::live::Routes>,
    ipvs: &'a mut IpvsState,
    handlers: &'a mut [(HookFn, HookHandler)],
    queue_handlers: &'a mut HashMap<u16, QueueHandler>,
    queues_outside: bool,
    forwards: bool,
    /// the NEW entry went into the table (confirm)
    confirmed: bool,
    /// why a built-in function dropped the packet
    reason: Option<&'static str>,
    /// what IPVS does with the packet it stole
    ipvs_action: Option<IpvsAction>,
}

impl PacketHooks<'_> {
    /// IPVS at `input`: a packet to a virtual service is stolen and sent to its real server
    /// (`IpvsAction`): by the connection it belongs to (IPVS's own table for direct routing
    /// and tunnelling, conntrack's binding for NAT) or, for the first packet of a new one
    /// (a TCP SYN, any UDP datagram), by the service's scheduler. Other packets go on.
    fn ipvs_in(&mut self, hdr: &Packet) -> HookVerdict {
        let vip = Ipv4Addr::from(hdr.daddr);
        let Some(si) = self
            .ipvs
            .services
            .iter()
            .position(|s| s.proto == hdr.proto && s.vip == vip && s.port == hdr.dport)
        else {
            return HookVerdict::Accept;
        };
        let client = Ipv4Addr::from(hdr.saddr);
        let flags = if hdr.proto == 6 { hdr.tcp_flags } else { 0 };
        let key = (hdr.proto, client, hdr.sport, vip, hdr.dport);
        let ipvs = &mut *self.ipvs;
        ipvs.conns.sweep(self.now, false, &mut ipvs.changes);
        let conn = ipvs.conns.touch(key, self.now, flags, &mut ipvs.changes);
        ipvs.apply_changes();
        // the real server of a binding
        let real = |ipvs: &IpvsState, b: u32| ipvs.bindings[b as usize].3;
        if let Some(c) = conn {
            self.ipvs_action = Some(IpvsAction {
                binding: c.binding,
                forward: c.forward,
                real: real(ipvs, c.binding),
            });
            return HookVerdict::Stolen;
        }
        if let Some((id, Dir::Original, _)) = self.track {
            if let Some(b) = self.ct.ipvs_binding(id) {
                self.ipvs_action = Some(IpvsAction {
                    binding: b,
                    forward: ipvs::Forward::Nat,
                    real: real(ipvs, b),
                });
                return HookVerdict::Stolen;
            }
        }
        // only a SYN opens a TCP connection (`tcp_conn_schedule`); another segment with no
        // connection goes on to this host
        use crate::wire::tcp::flags::{ACK, RST, SYN};
        if hdr.proto == 6 && (flags & SYN == 0 || flags & (ACK | RST) != 0) {
            return HookVerdict::Accept;
        }
        // the counts the schedulers read, up to date (expiry ran in this packet's track)
        ipvs.sync(self.ct);
        let Some(k) = ipvs.schedule(si, client, hdr.sport, self.now) else {
            self.reason = Some("no real server available");
            return HookVerdict::Drop;
        };
        let svc = &ipvs.services[si];
        let d = &svc.dests[k];
        let (forward, real, rport) = (d.forward, d.addr, d.port);
        let b = ipvs.binding((svc.proto, svc.vip, svc.port, real, rport));
        match forward {
            ipvs::Forward::Nat => {
                // masquerading: a destination NAT of the conntrack entry, so that later
                // packets and the replies are translated like any NAT
                let Some((id, Dir::Original, CtInfo::New)) = self.track else {
                    self.reason = Some("IPVS masquerading needs a tracked new connection");
                    return HookVerdict::Drop;
                };
                let Some(mut after) = self.ct.get(id).map(|e| e.tuple[0]) else {
                    return HookVerdict::Drop;
                };
                after.dst = real;
                after.dport = rport;
                self.ct.set_nat(id, after, Manip::Dst);
                self.ct.bind_ipvs(id, b);
            }
            ipvs::Forward::Dr | ipvs::Forward::Tunnel => {
                ipvs.conns
                    .open(key, b, forward, self.now, flags, &mut ipvs.changes);
                ipvs.apply_changes();
                ipvs.binding_stats[b as usize].conns += 1;
            }
        }
        self.ipvs_action = Some(IpvsAction {
            binding: b,
            forward,
            real,
        });
        HookVerdict::Stolen
    }
}

fn tuple_of(h: &Packet) -> Tuple {
    Tuple {
        src: Ipv4Addr::from(h.saddr),
        dst: Ipv4Addr::from(h.daddr),
        proto: h.proto,
        sport: h.sport,
        dport: h.dport,
    }
}

impl Hooks for PacketHooks<'_> {
    fn conntrack(&mut self, _hook: Hook, _hdr: &Packet, state: u8) -> u8 {
        if state == ct::UNTRACKED {
            return state;
        }
        let t = self.ct.track(self.now, self.ip);
        self.info = Some(t.info);
        let dir = match t.info {
            CtInfo::EstablishedReply | CtInfo::RelatedReply => Dir::Reply,
            _ => Dir::Original,
        };
        if let Some(id) = t.entry {
            self.track = Some((id, dir, t.info));
        }
        t.info.state_bit()
    }

    fn nat(
        &mut self,
        program: &Program,
        rule: RuleId,
        stmt: &Stmt,
        hdr: &mut Packet,
        path: PathKind,
    ) -> Result<(), InterpError> {
        let Some((id, Dir::Original, _)) = self.track else {
            return Ok(()); // no connection to bind (untracked): nothing to translate
        };
        let iface_addr = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| program.interface_addr(n))
                .map(|a| (Ipv4Addr::from(a), Ipv4Addr::from(a)))
                .ok_or(InterpError::NoIfaceAddr {
                    rule,
                    iface: name.clone(),
                })
        };
        let (manip, range) = match stmt {
            Stmt::Snat(r) => (Manip::Src, Range::from_ir(r)),
            Stmt::Dnat(r) => (Manip::Dst, Range::from_ir(r)),
            Stmt::Masquerade(r) => (
                Manip::Src,
                Range {
                    addr: Some(iface_addr(&hdr.oif)?),
                    ..Range::from_ir(r)
                },
            ),
            Stmt::Redirect(r) => {
                let a = if path == PathKind::Output {
                    (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
                } else {
                    iface_addr(&hdr.iif)?
                };
                (
                    Manip::Dst,
                    Range {
                        addr: Some(a),
                        ..Range::from_ir(r)
                    },
                )
            }
            _ => return Ok(()),
        };
        // ICMP: the tuple's ports are the echo id and the type/code
        let cur = match self.ct.get(id) {
            Some(e) if hdr.proto == 1 => {
                let mut t = tuple_of(hdr);
                t.sport = e.tuple[0].sport;
                t.dport = e.tuple[0].dport;
                t
            }
            _ => tuple_of(hdr),
        };
        let rng = &mut *self.rng;
        let mut random = || xorshift(rng) as u32;
        let after = nat::unique_tuple(&cur, &range, manip, self.ct, &mut random)
            .ok_or(InterpError::NatExhausted { rule })?;
        self.ct.set_nat(id, after, manip);
        hdr.saddr = u32::from(after.src);
        hdr.daddr = u32::from(after.dst);
        if hdr.proto != 1 {
            hdr.sport = after.sport;
            hdr.dport = after.dport;
        }
        Ok(())
    }

    fn route(&mut self, _path: PathKind, hdr: &Packet) -> (PathKind, Option<String>) {
        let dst = Ipv4Addr::from(hdr.daddr);
        if self.locals.contains(&dst) {
            // delivered here: no output interface
            (PathKind::Input, None)
        } else {
            let oif = self
                .routes
                .and_then(|r| r.lookup(dst))
                .map(str::to_string)
                .or_else(|| hdr.oif.clone());
            (PathKind::Forward, oif)
        }
    }

    fn call(&mut self, id: u32, hook: Hook, hdr: &mut Packet) -> HookVerdict {
        match id {
            FN_FORWARD_TTL => {
                if self.forwards && hdr.ttl <= 1 {
                    self.reason = Some("TTL expired in transit");
                    return HookVerdict::Drop;
                }
                HookVerdict::Accept
            }
            FN_IPVS => self.ipvs_in(hdr),
            FN_CONFIRM => {
                if let Some((entry, _, CtInfo::New)) = self.track {
                    if !self.confirmed {
                        if !self.ct.confirm(entry, self.now) {
                            self.reason = Some("conntrack table full");
                            return HookVerdict::Drop;
                        }
                        self.confirmed = true;
                    }
                }
                HookVerdict::Accept
            }
            _ => match self.handlers.get_mut(id as usize) {
                Some((_, f)) => f(hook, hdr),
                None => HookVerdict::Accept,
            },
        }
    }

    fn queue(
        &mut self,
        num: u16,
        bypass: bool,
        hook: Hook,
        hdr: &mut Packet,
    ) -> Option<HookVerdict> {
        if let Some(h) = self.queue_handlers.get_mut(&num) {
            return Some(h(hook, hdr, self.ip));
        }
        if self.queues_outside {
            return None;
        }
        if bypass {
            Some(HookVerdict::Accept)
        } else {
            self.reason = Some("nothing listens on the queue");
            Some(HookVerdict::Drop)
        }
    }

    fn nat_point(&mut self, hook: Hook, hdr: &mut Packet) {
        let Some((id, dir, _)) = self.track else {
            return;
        };
        let manip = match hook {
            Hook::Prerouting | Hook::Output => Manip::Dst,
            _ => Manip::Src,
        };
        // a connection to a virtual service keeps its virtual destination through
        // prerouting and the input rules, as IPVS sees it at LOCAL_IN; it is sent to its real
        // server after them (`Datapath::process`)
        if manip == Manip::Dst && dir == Dir::Original && self.ct.ipvs_binding(id).is_some() {
            return;
        }
        let Some(e) = self.ct.get(id) else { return };
        if let Some((addr, port)) = nat::target(e, dir, manip) {
            match manip {
                Manip::Src => {
                    hdr.saddr = u32::from(addr);
                    if hdr.proto != 1 {
                        hdr.sport = port;
                    }
                }
                Manip::Dst => {
                    hdr.daddr = u32::from(addr);
                    if hdr.proto != 1 {
                        hdr.dport = port;
                    }
                }
            }
        }
    }
}

impl Datapath {
    /// A datapath for the compiled program; its `service` blocks become IPVS services, and
    /// their virtual addresses count as this host's.
    pub fn new(jit: JitProgram, ct: Table, host: Vec<Ipv4Addr>) -> Datapath {
        let mut dp = Datapath {
            jit,
            ct,
            ipvs: IpvsState {
                persistence_sweep: 1024,
                ..IpvsState::default()
            },
            host,
            locals: Vec::new(),
            rng: 0x2545_f491_4f6c_dd1d,
            stats: DatapathStats::default(),
            forwards: true,
            routes: None,
            handlers: Vec::new(),
            queue_handlers: HashMap::new(),
            limits: Limits::default(),
            coins: 0x9e37_79b9_7f4a_7c15,
            log_rules: HashMap::new(),
            log_sink: None,
            queues_outside: false,
            now: 0,
            meta: Meta::default(),
            outcome: JitOutcome::default(),
        };
        dp.install();
        dp
    }

    /// Takes the program's services and registers the hook functions with it.
    fn install(&mut self) {
        self.log_rules = self
            .jit
            .program()
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| {
                r.stmts
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, s)| match s {
                        Stmt::Log { prefix, .. } => {
                            Some(((r.id.0, i as u32), Some(prefix.clone())))
                        }
                        Stmt::Audit => Some(((r.id.0, i as u32), None)),
                        _ => None,
                    })
            })
            .collect();
        let (services, locals) = services_of(&self.jit, &self.host);
        for f in builtins(!services.is_empty()) {
            self.jit.register(f);
        }
        for &(f, _) in &self.handlers {
            self.jit.register(f);
        }
        self.ipvs.services = services;
        self.locals = locals;
    }

    /// Registers `f` at `hook` with `priority` (lower runs first; after the tables and the
    /// other functions of equal priority): it runs for every packet that reaches it, from
    /// the next one on, and survives reloads. Returns its id.
    pub fn register_hook(&mut self, hook: Hook, priority: i32, f: HookHandler) -> u32 {
        let id = self.handlers.len() as u32;
        let hf = HookFn { hook, priority, id };
        self.handlers.push((hf, f));
        self.jit.register(hf);
        id
    }

    /// Sends the lines of `log` (as the kernel's `LOG` target writes them, with the rule's
    /// prefix) and `audit` (`NETFILTER_PKT ...`) statements to `sink`, one call per line.
    /// Without a sink nothing is formatted.
    pub fn set_log(&mut self, sink: LogSink) {
        self.log_sink = Some(sink);
    }

    /// Registers the handler of queue `num`: a packet a rule or a function queues there is
    /// handed to it, and goes on as it answers (accept: after the step that queued it;
    /// repeat: that step again; drop, stolen, stop, or another queue). Replaces the
    /// queue's previous handler; survives reloads.
    pub fn register_queue(&mut self, num: u16, handler: QueueHandler) {
        self.queue_handlers.insert(num, handler);
    }

    /// Every function at `hook` in the order a packet meets them, by name: tables as
    /// `TABLE`, the built-in points, registered functions as `fn ID`.
    pub fn hook_order(&self, hook: Hook) -> Vec<String> {
        self.jit
            .hook_ops(hook)
            .iter()
            .map(|op| match *op {
                fwc_jit::HookOp::Table(k) => self.jit.program().hooks[hook.index()][k]
                    .table
                    .name()
                    .to_string(),
                fwc_jit::HookOp::Conntrack => "conntrack".into(),
                fwc_jit::HookOp::NatPoint => "nat (translation)".into(),
                fwc_jit::HookOp::Fn(FN_FORWARD_TTL) => "ip_forward (TTL)".into(),
                fwc_jit::HookOp::Fn(FN_IPVS) => "ipvs".into(),
                fwc_jit::HookOp::Fn(FN_CONFIRM) => "conntrack confirm".into(),
                fwc_jit::HookOp::Fn(id) => format!("fn {id}"),
            })
            .collect()
    }

    /// Swaps in a new program (`fwc reload`): the connection table, and with it every
    /// connection's NAT and its real server, is kept; the virtual services are rebuilt from
    /// the new program (a service that is in both keeps its scheduler's state only through
    /// the connections already made); registered functions stay registered.
    pub fn replace_program(&mut self, jit: JitProgram) {
        self.jit = jit;
        self.limits = Limits::default();
        self.install();
        // the connections made go on counting on their servers, if still there
        self.ipvs.sync(&mut self.ct);
        let ipvs = &mut self.ipvs;
        for s in &mut ipvs.services {
            for d in &mut s.dests {
                let key = (s.proto, s.vip, s.port, d.addr, d.port);
                if let Some(&b) = ipvs.binding_ids.get(&key) {
                    (d.active, d.inactive) = ipvs.binding_counts[b as usize];
                }
            }
        }
    }

    /// Moves the datapath's clock to `now` (ms): the IPVS rate estimators step every 2 s.
    /// Every packet does it; a live loop also calls it while no packet comes.
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        if !self.ipvs.services.is_empty() {
            self.ipvs.estimate(self.now);
        }
    }

    /// Brings the IPVS counts up to date: conntrack's changes, expired connections.
    fn sync_ipvs(&mut self) {
        self.ipvs.sync(&mut self.ct);
        let ipvs = &mut self.ipvs;
        ipvs.conns.sweep(self.now, true, &mut ipvs.changes);
        ipvs.apply_changes();
    }

    /// The virtual services as `ipvsadm -L -n` prints them, with their current counts.
    pub fn ipvs_listing(&mut self) -> String {
        self.sync_ipvs();
        ipvs::list(&self.ipvs.services, 4096)
    }

    /// The virtual services with their traffic, as `ipvsadm -L -n --stats` prints them.
    pub fn ipvs_stats_listing(&mut self) -> String {
        self.sync_ipvs();
        let (ids, stats) = (&self.ipvs.binding_ids, &self.ipvs.binding_stats);
        ipvs::list_stats(&self.ipvs.services, 4096, |s, d| {
            ids.get(&(s.proto, s.vip, s.port, d.addr, d.port))
                .map(|&b| stats[b as usize])
                .unwrap_or_default()
        })
    }

    /// The virtual services with their rates, as `ipvsadm -L -n --rate` prints them.
    pub fn ipvs_rates_listing(&mut self) -> String {
        self.sync_ipvs();
        let ipvs = &self.ipvs;
        ipvs::list_rates(&ipvs.services, 4096, |s, d| match d {
            None => ipvs
                .service_estimators
                .get(&(s.proto, s.vip, s.port))
                .map(|e| e.rates())
                .unwrap_or_default(),
            Some(d) => ipvs
                .binding_ids
                .get(&(s.proto, s.vip, s.port, d.addr, d.port))
                .map(|&b| ipvs.estimators[b as usize].rates())
                .unwrap_or_default(),
        })
    }

    /// IPVS's connections as `ipvsadm -L -c -n` prints them: the direct-routing and
    /// tunnelled ones from IPVS's table (its states and timers), the masqueraded ones from
    /// conntrack (conntrack's TCP state and timer, which keep them).
    pub fn ipvs_connections_listing(&mut self) -> String {
        self.sync_ipvs();
        let now = self.now;
        let secs = |expires: u64| expires.saturating_sub(now) / 1000;
        let ipvs = &self.ipvs;
        let mut lines: Vec<(ipvs::ConnKey, String)> = Vec::new();
        for (k, c) in ipvs.conns.entries() {
            let (_, _, _, rip, rport) = ipvs.bindings[c.binding as usize];
            let state = if k.0 == 6 { c.state.name() } else { "UDP" };
            let line = ipvs::conn_line(
                k.0,
                secs(c.expires),
                state,
                (k.1, k.2),
                (k.3, k.4),
                (rip, rport),
            );
            lines.push((k, line));
        }
        for (e, b) in self.ct.ipvs_entries() {
            let Some(&(p, vip, vport, rip, rport)) = ipvs.bindings.get(b as usize) else {
                continue;
            };
            let t = e.tuple[0];
            let state = if p == 6 { e.tcp.name() } else { "UDP" };
            let key = (p, t.src, t.sport, vip, vport);
            let line = ipvs::conn_line(
                p,
                secs(e.expires),
                state,
                (t.src, t.sport),
                (vip, vport),
                (rip, rport),
            );
            lines.push((key, line));
        }
        lines.sort();
        let mut out = ipvs::CONN_HEADER.to_string();
        for (_, l) in lines {
            out.push_str(&l);
        }
        out
    }

    /// The connections IPVS forwards by direct routing or tunnelling, with their states.
    pub fn ipvs_connections(&mut self) -> Vec<(ipvs::ConnKey, ipvs::Conn, Ipv4Addr)> {
        self.sync_ipvs();
        let ipvs = &self.ipvs;
        ipvs.conns
            .entries()
            .into_iter()
            .map(|(k, c)| (k, c, ipvs.bindings[c.binding as usize].3))
            .collect()
    }

    /// Whether `addr` is one of this host's addresses (or a virtual service's).
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.locals.contains(&addr)
    }

    /// Per-rule (packets, bytes) counters of the program running, indexed by rule id.
    pub fn rule_counters(&self) -> Vec<(u64, u64)> {
        self.jit.counters().collect()
    }

    pub fn program(&self) -> &Program {
        self.jit.program()
    }

    /// Per-chain (packets, bytes) decided by the chain's policy, indexed by chain id.
    pub fn policy_counters(&self) -> &[(u64, u64)] {
        self.jit.policy_counters()
    }

    /// Per-rule (packets, bytes), by rule id.
    pub fn counters(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.jit.counters()
    }

    /// The address a tunnelled packet to `real` leaves from: the output interface's (as the
    /// host has it, or as the program declares it), else this host's first that is not a
    /// virtual address.
    fn tunnel_source(&self, real: Ipv4Addr) -> Ipv4Addr {
        let program = self.jit.program();
        let routes = self.routes.as_ref();
        routes
            .and_then(|r| r.source(real))
            .or_else(|| {
                routes
                    .and_then(|r| r.lookup(real))
                    .and_then(|oif| program.interface_addr(oif))
                    .map(Ipv4Addr::from)
            })
            .or_else(|| {
                self.host
                    .iter()
                    .copied()
                    .find(|a| !self.ipvs.services.iter().any(|s| s.vip == *a))
            })
            .or_else(|| self.host.first().copied())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Runs one frame through the pipeline at `now` (ms).
    pub fn process(
        &mut self,
        now: u64,
        link: Link,
        frame: &[u8],
        iif: Option<&str>,
        oif: Option<&str>,
    ) -> Decision {
        self.stats.frames += 1;
        self.advance(now);
        let pass = |frame: &[u8]| Decision {
            fate: Fate::Accept,
            path: None,
            deciding_rule: None,
            ct: None,
            frame: Some(frame.to_vec()),
            reason: None,
            next_hop: None,
        };
        let l3_at = match link {
            Link::RawIp => 0,
            Link::Ethernet => match ethernet::Frame::new_checked(frame) {
                Ok(f) if f.ethertype() == ethernet::ETHERTYPE_IPV4 => ethernet::HEADER_LEN,
                Ok(_) => {
                    self.stats.not_ip += 1;
                    self.stats.accepted += 1;
                    return pass(frame);
                }
                Err(_) => {
                    self.stats.malformed += 1;
                    self.stats.dropped += 1;
                    return dropped(None, None, None, "truncated Ethernet frame");
                }
            },
        };
        let ip_bytes = &frame[l3_at..];
        let Ok(ip) = ipv4::Packet::new_checked(ip_bytes) else {
            self.stats.malformed += 1;
            self.stats.dropped += 1;
            return dropped(None, None, None, "not a valid IPv4 packet");
        };
        let path = if self.locals.contains(&ip.dst()) {
            PathKind::Input
        } else {
            PathKind::Forward
        };
        let ttl = ip.ttl();
        let ip_len = ip.total_len();
        // (every field written: the names into the last packet's strings)
        let (mut iif_name, mut oif_name) = (self.meta.iif.take(), self.meta.oif.take());
        set_name(&mut iif_name, iif);
        set_name(&mut oif_name, oif);
        self.meta = Meta {
            iif: iif_name,
            oif: oif_name,
            mark: 0,
            ct: ct::NEW, // replaced by conntrack at -200
        };
        let mut hooks = PacketHooks {
            ct: &mut self.ct,
            now,
            ip: ip_bytes,
            track: None,
            info: None,
            rng: &mut self.rng,
            locals: &self.locals,
            routes: self.routes.as_ref(),
            ipvs: &mut self.ipvs,
            handlers: &mut self.handlers,
            queue_handlers: &mut self.queue_handlers,
            queues_outside: self.queues_outside,
            forwards: self.forwards,
            confirmed: false,
            reason: None,
            ipvs_action: None,
        };
        let mut oracle = LiveOracle {
            now_ns: now.saturating_mul(1_000_000),
            limits: &mut self.limits,
            rng: &mut self.coins,
        };
        let outcome = self.jit.classify_into(
            path,
            ip_bytes,
            &self.meta,
            &mut oracle,
            &mut hooks,
            &mut self.outcome,
        );
        let o = &self.outcome;
        let PacketHooks {
            track,
            info,
            confirmed,
            reason,
            ipvs_action,
            ..
        } = hooks;
        // the NEW entry this packet made, not yet in the table
        let new_entry = track
            .filter(|(_, _, i)| *i == CtInfo::New && !confirmed)
            .map(|(id, _, _)| id);
        if let (Ok(()), Some(sink)) = (&outcome, self.log_sink.as_mut()) {
            let mac = (l3_at > 0).then(|| &frame[..l3_at]);
            for (r, k) in o.logs.iter().zip(&o.log_stmts) {
                let entry = self.log_rules.get(&(r.0, *k));
                if let Some(entry) = entry {
                    let line = match entry {
                        Some(prefix) => crate::log::log_line(
                            prefix,
                            iif,
                            o.packet.oif.as_deref(),
                            mac,
                            ip_bytes,
                            o.packet.mark,
                        ),
                        None => crate::log::audit_line(ip_bytes, o.packet.mark),
                    };
                    sink(&line);
                }
            }
        }
        // (what the rest needs of the outcome, copied out of `self`)
        let (fate, o_path, deciding_rule, o_ttl) = (o.fate, o.path, o.deciding_rule, o.packet.ttl);
        match outcome {
            Ok(()) => {}
            Err(_) => {
                if let Some(id) = new_entry {
                    self.ct.discard(id);
                }
                self.stats.dropped += 1;
                return dropped(Some(path), None, info, "NAT could not translate the packet");
            }
        };
        match (fate, ipvs_action) {
            (Fate::Accept, _) | (Fate::Stolen, Some(_)) => {}
            (other, _) => {
                if let Some(id) = new_entry {
                    self.ct.discard(id);
                }
                match other {
                    Fate::Reject(_) => self.stats.rejected += 1,
                    Fate::Queue { .. } => self.stats.queued += 1,
                    Fate::Stolen => self.stats.stolen += 1,
                    _ => self.stats.dropped += 1,
                }
                return Decision {
                    fate: other,
                    path: Some(o_path),
                    deciding_rule,
                    ct: info,
                    frame: None,
                    reason: reason.filter(|_| other == Fate::Drop),
                    next_hop: None,
                };
            }
        }
        let mut path = o_path;
        // IPVS took the packet at `input`: it goes to its real server, without the
        // forward rules
        let mut track = track;
        let mut new_entry = new_entry;
        if let Some(a) = ipvs_action {
            path = PathKind::Forward;
            if a.forward != ipvs::Forward::Nat {
                // IPVS's own connection carries it: untracked (`net.ipv4.vs.conntrack=0`)
                if let Some(id) = new_entry.take() {
                    self.ct.discard(id);
                }
                track = None;
            }
            // IPVS forwards it itself: a packet that arrived with TTL 1 or 0 goes no
            // further (the `forward` hook's check, which it skipped)
            if self.forwards && ttl <= 1 {
                if let Some(id) = new_entry {
                    self.ct.discard(id);
                }
                self.stats.dropped += 1;
                return dropped(Some(path), deciding_rule, info, "TTL expired in transit");
            }
            // an IPVS NAT connection's entry, stolen before conntrack's confirm, goes in as
            // the packet is sent on
            if let Some(id) = new_entry {
                if !self.ct.confirm(id, now) {
                    self.stats.dropped += 1;
                    return dropped(Some(path), deciding_rule, info, "conntrack table full");
                }
            }
        }
        let forwarding = path == PathKind::Forward && self.forwards;
        // the packet passed: write its translation and TTL into the frame
        let mut out = frame.to_vec();
        let ipb = &mut out[l3_at..];
        if let Some((id, dir, _)) = track {
            let _ = nat::apply(&self.ct, id, dir, Manip::Dst, ipb);
            let _ = nat::apply(&self.ct, id, dir, Manip::Src, ipb);
        }
        if let Ok(mut p) = ipv4::Packet::new_checked(&mut *ipb) {
            let mut t = o_ttl;
            if forwarding {
                t = t.saturating_sub(1);
            }
            if t != ttl {
                p.set_ttl(t);
            }
        }
        // IPVS traffic counters: in towards the real server, out from it
        let binding = match (ipvs_action, track) {
            (Some(a), _) => Some((a.binding, Dir::Original)),
            (None, Some((id, dir, _))) => self.ct.ipvs_binding(id).map(|b| (b, dir)),
            (None, None) => None,
        };
        if let Some((b, dir)) = binding {
            let client = match track {
                Some((id, _, _)) => self.ct.get(id).map(|e| e.tuple[0].src),
                None => Some(ip_src(&out[l3_at..])),
            };
            self.ipvs.account(b, client, dir, u64::from(ip_len), now);
        }
        let mut next_hop = None;
        match ipvs_action.map(|a| (a.forward, a.real)) {
            Some((ipvs::Forward::Dr, real)) => next_hop = Some(real),
            Some((ipvs::Forward::Tunnel, real)) => {
                let src = self.tunnel_source(real);
                out = encapsulate(&out, l3_at, src, real);
            }
            _ => {}
        }
        self.stats.accepted += 1;
        Decision {
            fate: Fate::Accept,
            path: Some(path),
            deciding_rule,
            ct: info,
            frame: Some(out),
            reason: None,
            next_hop,
        }
    }
}

/// Sets an interface name slot, reusing its string's buffer (no allocation once a name as
/// long has been seen).
fn set_name(slot: &mut Option<String>, name: Option<&str>) {
    match (slot.as_mut(), name) {
        (Some(s), Some(n)) => {
            if s != n {
                s.clear();
                s.push_str(n);
            }
        }
        (_, n) => *slot = n.map(str::to_string),
    }
}

fn dropped(
    path: Option<PathKind>,
    rule: Option<RuleId>,
    ct: Option<CtInfo>,
    why: &'static str,
) -> Decision {
    Decision {
        fate: Fate::Drop,
        path,
        deciding_rule: rule,
        ct,
        frame: None,
        reason: Some(why),
        next_hop: None,
    }
}

fn ip_src(ip: &[u8]) -> Ipv4Addr {
    ipv4::Packet::new_checked(ip)
        .map(|p| p.src())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The frame with its IPv4 packet (at `l3_at`) inside an IP-in-IP packet from `src` to
/// `dst`, as IPVS tunnelling sends it (`ip_vs_tunnel_xmit`): the outer header takes the
/// inner one's TTL, TOS and don't-fragment bit.
fn encapsulate(frame: &[u8], l3_at: usize, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let inner = &frame[l3_at..];
    let Ok(p) = ipv4::Packet::new_checked(inner) else {
        return frame.to_vec();
    };
    let r = ipv4::Repr {
        src,
        dst,
        protocol: 4,
        ttl: p.ttl(),
        ident: p.ident(),
        dont_frag: p.dont_frag(),
        payload_len: inner.len(),
    };
    let mut out = Vec::with_capacity(frame.len() + 20);
    out.extend_from_slice(&frame[..l3_at]);
    out.resize(l3_at + 20, 0);
    out.extend_from_slice(inner);
    if r.emit(&mut out[l3_at..]).is_ok() {
        out[l3_at + 1] = p.dscp_ecn();
        if let Ok(mut outer) = ipv4::Packet::new_checked(&mut out[l3_at..]) {
            outer.fill_checksum();
        }
    }
    out
}

/// The program's virtual services, and this host's addresses with their virtual addresses.
fn services_of(jit: &JitProgram, host: &[Ipv4Addr]) -> (Vec<ipvs::Service>, Vec<Ipv4Addr>) {
    let services: Vec<ipvs::Service> = jit
        .program()
        .services
        .iter()
        .filter_map(|s| {
            let dests = s
                .reals
                .iter()
                .map(|r| ipvs::Dest {
                    forward: match r.forward {
                        fwc_compiler::ir::Forwarding::Nat => ipvs::Forward::Nat,
                        fwc_compiler::ir::Forwarding::Dr => ipvs::Forward::Dr,
                        fwc_compiler::ir::Forwarding::Tunnel => ipvs::Forward::Tunnel,
                    },
                    ..ipvs::Dest::new(Ipv4Addr::from(r.addr), r.port, r.weight)
                })
                .collect();
            let mut svc =
                ipvs::Service::new(s.proto, Ipv4Addr::from(s.vip), s.port, &s.scheduler, dests)?;
            svc.persistent = s.persistent;
            Some(svc)
        })
        .collect();
    let mut locals = host.to_vec();
    for s in &services {
        if !locals.contains(&s.vip) {
            locals.push(s.vip);
        }
    }
    (services, locals)
}
