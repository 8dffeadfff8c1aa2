//! The packet pipeline: one frame in, its fate and (when it passes) the rewritten frame out.
//!
//! The compiled program runs hook by hook in the JIT; connection tracking plugs in at
//! priority -200 of prerouting/output (after the raw table), NAT at the nat table's place
//! (first packets choose a binding with [`nat::unique_tuple`], later packets are translated
//! as their connection says), and the NEW entry is confirmed once the packet is through.
//! Forwarded packets have their TTL decremented (and are dropped at TTL 1, as a router
//! does). Frames that are not IPv4 pass untouched.

use crate::conntrack::{CtInfo, Dir, EntryId, Table, Tuple};
use crate::ipvs;
use crate::nat::{self, Manip, Range};
use crate::wire::{ethernet, ipv4};
use fwc_compiler::interp::{Fate, FreshOracle, InterpError, Meta, Packet, PathKind};
use fwc_compiler::ir::{ct, Hook, Program, RuleId, Stmt};
use fwc_jit::{Hooks, JitProgram};
use std::net::Ipv4Addr;

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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathStats {
    pub frames: u64,
    pub accepted: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub queued: u64,
    pub not_ip: u64,
    pub malformed: u64,
}

pub struct Datapath {
    jit: JitProgram,
    pub ct: Table,
    /// the program's virtual services (IPVS), NAT forwarding
    pub services: Vec<ipvs::Service>,
    /// this host's own addresses
    host: Vec<Ipv4Addr>,
    /// `host` and the virtual services' addresses
    locals: Vec<Ipv4Addr>,
    rng: u64,
    pub stats: DatapathStats,
    /// Whether this datapath forwards packets itself: a forwarded packet has its TTL
    /// decremented, and one that arrives with TTL 1 or 0 is dropped (as `ip_forward` does,
    /// before the `forward` hook's verdict counts: its new connection is not confirmed).
    /// `true` for a replay; `false` under NFQUEUE, where the kernel routes and decrements.
    pub forwards: bool,
    /// The routing table that gives a forwarded packet its output interface after
    /// `prerouting` (live sources: the kernel's). Without one, a forwarded packet keeps the
    /// output interface it was given.
    pub routes: Option<crate::live::Routes>,
    /// IPVS bindings (service protocol, virtual address and port, real address and port),
    /// interned: a connection's `Entry::ipvs` is an index here, stable across reloads
    bindings: Vec<Binding>,
    binding_ids: std::collections::HashMap<Binding, u32>,
    /// (ActiveConn, InActConn) per binding
    binding_counts: Vec<(u32, u32)>,
    /// traffic per binding (`ipvsadm --stats`)
    binding_stats: Vec<ipvs::Stats>,
    /// persistence templates: (protocol, virtual address, port, client address) -> (real
    /// address, port, until when in ms)
    persistence: std::collections::HashMap<Template, (Ipv4Addr, u16, u64)>,
    persistence_sweep: usize,
}

type Binding = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

/// A persistence template's key: service protocol, virtual address and port, client address.
type Template = (u8, Ipv4Addr, u16, Ipv4Addr);

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
        let mut random = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng as u32
        };
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
        let (services, locals) = services_of(&jit, &host);
        Datapath {
            jit,
            ct,
            services,
            host,
            locals,
            rng: 0x2545_f491_4f6c_dd1d,
            stats: DatapathStats::default(),
            forwards: true,
            routes: None,
            bindings: Vec::new(),
            binding_ids: std::collections::HashMap::new(),
            binding_counts: Vec::new(),
            binding_stats: Vec::new(),
            persistence: std::collections::HashMap::new(),
            persistence_sweep: 1024,
        }
    }

    /// Swaps in a new program (`fwc reload`): the connection table, and with it every
    /// connection's NAT and its real server, is kept; the virtual services are rebuilt from
    /// the new program (a service that is in both keeps its scheduler's state only through
    /// the connections already made).
    pub fn replace_program(&mut self, jit: JitProgram) {
        let (services, locals) = services_of(&jit, &self.host);
        self.jit = jit;
        self.services = services;
        self.locals = locals;
        // the connections made go on counting on their servers, if still there
        self.sync_ipvs();
        for s in &mut self.services {
            for d in &mut s.dests {
                let key = (s.proto, s.vip, s.port, d.addr, d.port);
                if let Some(&b) = self.binding_ids.get(&key) {
                    (d.active, d.inactive) = self.binding_counts[b as usize];
                }
            }
        }
    }

    /// Applies conntrack's IPVS count changes to the real servers.
    fn sync_ipvs(&mut self) {
        for ev in self.ct.take_ipvs_events() {
            let Some(c) = self.binding_counts.get_mut(ev.binding as usize) else {
                continue;
            };
            c.0 = c.0.saturating_add_signed(ev.active);
            c.1 = c.1.saturating_add_signed(ev.inactive);
            if ev.opened {
                self.binding_stats[ev.binding as usize].conns += 1;
            }
            let (p, vip, vport, rip, rport) = self.bindings[ev.binding as usize];
            let dest = self
                .services
                .iter_mut()
                .filter(|s| (s.proto, s.vip, s.port) == (p, vip, vport))
                .flat_map(|s| s.dests.iter_mut())
                .find(|d| (d.addr, d.port) == (rip, rport));
            if let Some(d) = dest {
                (d.active, d.inactive) = *c;
            }
        }
    }

    /// The virtual services as `ipvsadm -L -n` prints them, with their current counts.
    pub fn ipvs_listing(&mut self) -> String {
        self.sync_ipvs();
        ipvs::list(&self.services, 4096)
    }

    /// The virtual services with their traffic, as `ipvsadm -L -n --stats` prints them.
    pub fn ipvs_stats_listing(&mut self) -> String {
        self.sync_ipvs();
        let (ids, stats) = (&self.binding_ids, &self.binding_stats);
        ipvs::list_stats(&self.services, 4096, |s, d| {
            ids.get(&(s.proto, s.vip, s.port, d.addr, d.port))
                .map(|&b| stats[b as usize])
                .unwrap_or_default()
        })
    }

    fn binding(&mut self, key: Binding) -> u32 {
        if let Some(&b) = self.binding_ids.get(&key) {
            return b;
        }
        let b = self.bindings.len() as u32;
        self.bindings.push(key);
        self.binding_ids.insert(key, b);
        self.binding_counts.push((0, 0));
        self.binding_stats.push(ipvs::Stats::default());
        b
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

    /// Per-rule (packets, bytes), by rule id.
    pub fn counters(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.jit.counters()
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
        let pass = |frame: &[u8]| Decision {
            fate: Fate::Accept,
            path: None,
            deciding_rule: None,
            ct: None,
            frame: Some(frame.to_vec()),
            reason: None,
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
                    return self.dropped(None, None, None, "truncated Ethernet frame");
                }
            },
        };
        let ip_bytes = &frame[l3_at..];
        let Ok(ip) = ipv4::Packet::new_checked(ip_bytes) else {
            self.stats.malformed += 1;
            self.stats.dropped += 1;
            return self.dropped(None, None, None, "not a valid IPv4 packet");
        };
        let path = if self.locals.contains(&ip.dst()) {
            PathKind::Input
        } else {
            PathKind::Forward
        };
        let ttl = ip.ttl();
        let ip_len = ip.total_len();
        let meta = Meta {
            iif: iif.map(str::to_string),
            oif: oif.map(str::to_string),
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
        };
        let outcome = self
            .jit
            .classify_with(path, ip_bytes, &meta, &mut FreshOracle, &mut hooks);
        let track = hooks.track;
        let new_entry = track
            .filter(|(_, _, i)| *i == CtInfo::New)
            .map(|(id, _, _)| id);
        let info = hooks.info;
        let o = match outcome {
            Ok(o) => o,
            Err(_) => {
                if let Some(id) = new_entry {
                    self.ct.discard(id);
                }
                self.stats.dropped += 1;
                return self.dropped(Some(path), None, info, "NAT could not translate the packet");
            }
        };
        let path = o.path;
        match o.fate {
            Fate::Accept => {}
            other => {
                if let Some(id) = new_entry {
                    self.ct.discard(id);
                }
                match other {
                    Fate::Reject(_) => self.stats.rejected += 1,
                    Fate::Queue { .. } => self.stats.queued += 1,
                    _ => self.stats.dropped += 1,
                }
                return Decision {
                    fate: other,
                    path: Some(path),
                    deciding_rule: o.deciding_rule,
                    ct: info,
                    frame: None,
                    reason: None,
                };
            }
        }
        // IPVS, after input filtering: a new connection to a virtual service is scheduled to a
        // real server and, for NAT forwarding, becomes a destination NAT of its conntrack
        // entry, so that later packets and the replies are translated like any NAT
        let mut path = path;
        if let (Some(id), PathKind::Input) = (new_entry, path) {
            // the counts the schedulers read, up to date (expiry ran in this packet's track)
            self.sync_ipvs();
            let t = self.ct.get(id).map(|e| e.tuple[0]);
            if let Some(t) = t {
                if let Some(svc) = self
                    .services
                    .iter_mut()
                    .find(|s| s.proto == t.proto && s.vip == t.dst && s.port == t.dport)
                {
                    // a persistent service sends a client back to the server it had, as long as
                    // its template lives (IPVS persistence templates: client address ->
                    // real server, refreshed by every packet of the client's connections)
                    let tkey = (svc.proto, svc.vip, svc.port, t.src);
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
                    let Some(k) = kept.or_else(|| svc.pick(t.src, t.sport)) else {
                        self.ct.discard(id);
                        self.stats.dropped += 1;
                        return self.dropped(
                            Some(path),
                            o.deciding_rule,
                            info,
                            "no real server available",
                        );
                    };
                    let d = &svc.dests[k];
                    if d.forward != ipvs::Forward::Nat {
                        self.ct.discard(id);
                        self.stats.dropped += 1;
                        return self.dropped(
                            Some(path),
                            o.deciding_rule,
                            info,
                            "IPVS direct routing and tunnelling are not supported yet",
                        );
                    }
                    let mut after = t;
                    after.dst = d.addr;
                    after.dport = d.port;
                    let key = (svc.proto, svc.vip, svc.port, d.addr, d.port);
                    if let Some(secs) = svc.persistent {
                        self.persistence
                            .insert(tkey, (d.addr, d.port, now + u64::from(secs) * 1000));
                        // expired templates go when the map has doubled since the last sweep
                        if self.persistence.len() > self.persistence_sweep {
                            self.persistence.retain(|_, v| v.2 > now);
                            self.persistence_sweep = (2 * self.persistence.len()).max(1024);
                        }
                    }
                    self.ct.set_nat(id, after, Manip::Dst);
                    let b = self.binding(key);
                    self.ct.bind_ipvs(id, b);
                    path = PathKind::Forward;
                }
            }
        }
        // a later packet of a connection to a virtual service, accepted by the input rules:
        // IPVS sends it on to its real server (translated below), without the forward rules
        if let Some((id, Dir::Original, _)) = track {
            if path == PathKind::Input && new_entry.is_none() && self.ct.ipvs_binding(id).is_some()
            {
                path = PathKind::Forward;
            }
        }
        let forwarding = path == PathKind::Forward && self.forwards;
        if forwarding && o.packet.ttl <= 1 {
            if let Some(id) = new_entry {
                self.ct.discard(id);
            }
            self.stats.dropped += 1;
            return self.dropped(Some(path), o.deciding_rule, info, "TTL expired in transit");
        }
        if let Some(id) = new_entry {
            if !self.ct.confirm(id, now) {
                self.stats.dropped += 1;
                return self.dropped(Some(path), o.deciding_rule, info, "conntrack table full");
            }
        }
        // the packet passed: write its translation and TTL into the frame
        let mut out = frame.to_vec();
        let ipb = &mut out[l3_at..];
        if let Some((id, dir, _)) = track {
            let _ = nat::apply(&self.ct, id, dir, Manip::Dst, ipb);
            let _ = nat::apply(&self.ct, id, dir, Manip::Src, ipb);
        }
        if let Ok(mut p) = ipv4::Packet::new_checked(&mut *ipb) {
            let mut t = o.packet.ttl;
            if forwarding {
                t -= 1;
            }
            if t != ttl {
                p.set_ttl(t);
            }
        }
        // IPVS traffic counters: in towards the real server, out from it
        if let Some((id, dir, _)) = track {
            if let Some(b) = self.ct.ipvs_binding(id) {
                let (p, vip, vport, _, _) = self.bindings[b as usize];
                if let Some(client) = self.ct.get(id).map(|e| e.tuple[0].src) {
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
                let st = &mut self.binding_stats[b as usize];
                let len = u64::from(ip_len);
                if dir == Dir::Original {
                    st.inpkts += 1;
                    st.inbytes += len;
                } else {
                    st.outpkts += 1;
                    st.outbytes += len;
                }
            }
        }
        self.stats.accepted += 1;
        Decision {
            fate: Fate::Accept,
            path: Some(path),
            deciding_rule: o.deciding_rule,
            ct: info,
            frame: Some(out),
            reason: None,
        }
    }

    fn dropped(
        &self,
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
        }
    }
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
