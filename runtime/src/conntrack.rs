//! Connection tracking, after Linux's nf_conntrack (see `../shared/SEMANTICS.md` §1).
//!
//! * An entry holds the ORIGINAL tuple (from the first packet) and the REPLY tuple (its
//!   inverse); both index one hash table of `buckets` chains, so a packet finds its entry in
//!   either direction.
//! * [`Table::track`] classifies a packet (NEW, ESTABLISHED, RELATED, their reply variants, or
//!   INVALID) and runs the protocol tracker; a new entry is *unconfirmed* until
//!   [`Table::confirm`] inserts it (the end of the input or postrouting path), so a packet
//!   dropped earlier leaves nothing behind.
//! * TCP follows `tcp_conntracks` (the state table), with the flag-validity check, window
//!   tracking (seq/ack within the windows seen), SYN-reopen of TIME_WAIT/CLOSE entries and
//!   mid-stream pickup when `tcp_loose`; UDP is unreplied then stream; ICMP echo is tracked
//!   by id; ICMP errors are RELATED to the flow they quote.
//! * The table is bounded (`max`): a new entry over the limit evicts a non-ASSURED entry from
//!   the first of up to 8 buckets that has one, else the packet is dropped.
//! * Entries expire at their deadline; a timer heap finds them without scanning the table.

use crate::wire::{icmp, ipv4, tcp, udp};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

/// A connection's identity in one direction. For ICMP, `sport` is the echo id and `dport`
/// holds type << 8 | code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// ICMP request types and their replies (ICMP `invmap`).
fn icmp_inverse(t: u8) -> Option<u8> {
    Some(match t {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        15 => 16,
        16 => 15,
        17 => 18,
        18 => 17,
        _ => return None,
    })
}

impl Tuple {
    /// The tuple of the other direction (`None` for an ICMP type without a partner).
    pub fn invert(&self) -> Option<Tuple> {
        if self.proto == ipv4::PROTO_ICMP {
            let (t, c) = ((self.dport >> 8) as u8, self.dport as u8);
            return Some(Tuple {
                src: self.dst,
                dst: self.src,
                proto: self.proto,
                sport: self.sport,
                dport: u16::from(icmp_inverse(t)?) << 8 | u16::from(c),
            });
        }
        Some(Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Original,
    Reply,
}

/// What conntrack says of a packet (`ctinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtInfo {
    New,
    Established,
    Related,
    EstablishedReply,
    RelatedReply,
    Invalid,
}

impl CtInfo {
    /// The `ct state` bit a rule sees (reply variants share their base state's bit).
    pub fn state_bit(self) -> u8 {
        use fwc_compiler::ir::ct;
        match self {
            CtInfo::New => ct::NEW,
            CtInfo::Established | CtInfo::EstablishedReply => ct::ESTABLISHED,
            CtInfo::Related | CtInfo::RelatedReply => ct::RELATED,
            CtInfo::Invalid => ct::INVALID,
        }
    }
}

/// TCP conntrack states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }
}
use TcpState::TimeWait;

/// Timeouts in seconds (Linux defaults, SEMANTICS §1.3).
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_established: u64,
    pub tcp_fin_wait: u64,
    pub tcp_close_wait: u64,
    pub tcp_last_ack: u64,
    pub tcp_time_wait: u64,
    pub tcp_close: u64,
    pub tcp_unacknowledged: u64,
    pub udp: u64,
    pub udp_stream: u64,
    pub icmp: u64,
    pub generic: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_unacknowledged: 300,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

impl Timeouts {
    fn tcp(&self, s: TcpState) -> u64 {
        match s {
            TcpState::None | TcpState::SynSent | TcpState::SynSent2 => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// most entries (`nf_conntrack_max`); 0 = unbounded
    pub max: usize,
    /// hash chains (`nf_conntrack_buckets`)
    pub buckets: usize,
    /// pick up TCP connections from a bare ACK (`nf_conntrack_tcp_loose`, default on)
    pub tcp_loose: bool,
    /// accept segments outside the windows (`nf_conntrack_tcp_be_liberal`)
    pub tcp_be_liberal: bool,
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max: 65536,
            buckets: 16384,
            tcp_loose: true,
            tcp_be_liberal: false,
            timeouts: Timeouts::default(),
        }
    }
}

/// The timeouts by their Linux sysctl names.
type TimeoutField = fn(&mut Timeouts) -> &mut u64;
const TIMEOUT_KEYS: [(&str, TimeoutField); 13] = [
    ("nf_conntrack_tcp_timeout_syn_sent", |t| &mut t.tcp_syn_sent),
    ("nf_conntrack_tcp_timeout_syn_recv", |t| &mut t.tcp_syn_recv),
    ("nf_conntrack_tcp_timeout_established", |t| {
        &mut t.tcp_established
    }),
    ("nf_conntrack_tcp_timeout_fin_wait", |t| &mut t.tcp_fin_wait),
    ("nf_conntrack_tcp_timeout_close_wait", |t| {
        &mut t.tcp_close_wait
    }),
    ("nf_conntrack_tcp_timeout_last_ack", |t| &mut t.tcp_last_ack),
    ("nf_conntrack_tcp_timeout_time_wait", |t| {
        &mut t.tcp_time_wait
    }),
    ("nf_conntrack_tcp_timeout_close", |t| &mut t.tcp_close),
    ("nf_conntrack_tcp_timeout_unacknowledged", |t| {
        &mut t.tcp_unacknowledged
    }),
    ("nf_conntrack_udp_timeout", |t| &mut t.udp),
    ("nf_conntrack_udp_timeout_stream", |t| &mut t.udp_stream),
    ("nf_conntrack_icmp_timeout", |t| &mut t.icmp),
    ("nf_conntrack_generic_timeout", |t| &mut t.generic),
];

impl Config {
    /// The settings by their Linux sysctl names (`net.netfilter.` may be left out).
    pub fn keys() -> impl Iterator<Item = &'static str> {
        [
            "nf_conntrack_max",
            "nf_conntrack_buckets",
            "nf_conntrack_tcp_loose",
            "nf_conntrack_tcp_be_liberal",
        ]
        .into_iter()
        .chain(TIMEOUT_KEYS.iter().map(|(k, _)| *k))
    }

    /// Sets one setting from `KEY=VALUE`, the key a Linux sysctl name (`keys`, with or
    /// without `net.netfilter.`), the value a decimal number (seconds for timeouts, 0 or 1
    /// for the switches).
    pub fn set(&mut self, setting: &str) -> Result<(), String> {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("`{setting}` is not KEY=VALUE"))?;
        let key = key.trim();
        let key = key.strip_prefix("net.netfilter.").unwrap_or(key);
        let n: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("`{value}` is not a number (for {key})"))?;
        let switch = |n: u64| match n {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(format!("{key} is 0 or 1, not {n}")),
        };
        match key {
            "nf_conntrack_max" => self.max = n as usize,
            "nf_conntrack_buckets" if n == 0 => return Err(format!("{key} must be at least 1")),
            "nf_conntrack_buckets" => self.buckets = n as usize,
            "nf_conntrack_tcp_loose" => self.tcp_loose = switch(n)?,
            "nf_conntrack_tcp_be_liberal" => self.tcp_be_liberal = switch(n)?,
            _ => match TIMEOUT_KEYS.iter().find(|(k, _)| *k == key) {
                Some((_, field)) => *field(&mut self.timeouts) = n,
                None => {
                    let stem = key.trim_start_matches("nf_conntrack_");
                    let near: Vec<&str> = Config::keys().filter(|k| k.contains(stem)).collect();
                    return Err(format!(
                        "unknown conntrack setting `{key}` ({}: {})",
                        if near.is_empty() {
                            "known"
                        } else {
                            "did you mean"
                        },
                        if near.is_empty() {
                            Config::keys().collect::<Vec<_>>().join(", ")
                        } else {
                            near.join(", ")
                        }
                    ));
                }
            },
        }
        Ok(())
    }
}

/// A 64-bit mixer (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One direction's TCP window state (after Guido van Rooij).
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    end: u32,
    maxend: u32,
    maxwin: u32,
    scale: u8,
    /// seen in this direction yet
    init: bool,
}

const STATUS_SEEN_REPLY: u8 = 1;
const STATUS_ASSURED: u8 = 2;
const STATUS_CONFIRMED: u8 = 4;

/// `Entry::nat` bits: which manipulations were set up.
pub const NAT_SRC: u8 = 1;
pub const NAT_DST: u8 = 2;

/// A connection.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tuple: [Tuple; 2],
    status: u8,
    /// `NAT_SRC` / `NAT_DST`
    pub nat: u8,
    pub tcp: TcpState,
    win: [Window; 2],
    /// a FIN or RST seen (for SYN reopening)
    closing: bool,
    /// created from a bare ACK (mid-stream pickup)
    picked_up: bool,
    /// ms
    pub expires: u64,
    pub created: u64,
    /// the deadline of this entry's live timer in the heap (`u64::MAX`: none)
    timer: u64,
    pub mark: u32,
    /// hash chain links of the two tuples: `index << 1 | direction`, or `NIL`
    next: [u32; 2],
}

/// Set in a binding (`Table::ipvs`) while the connection counts in its real server's
/// ActiveConn.
const IPVS_ACTIVE: u32 = 1 << 31;

/// A change in the connection counts of an IPVS real server, for the datapath to apply
/// (`Table::take_ipvs_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsEvent {
    /// the binding id given to [`Table::bind_ipvs`]
    pub binding: u32,
    /// change of ActiveConn
    pub active: i32,
    /// change of InActConn
    pub inactive: i32,
    /// a new connection (counted in the server's Conns)
    pub opened: bool,
}

const NIL: u32 = u32::MAX;

impl Entry {
    pub fn assured(&self) -> bool {
        self.status & STATUS_ASSURED != 0
    }
    pub fn seen_reply(&self) -> bool {
        self.status & STATUS_SEEN_REPLY != 0
    }
    pub fn confirmed(&self) -> bool {
        self.status & STATUS_CONFIRMED != 0
    }
}

/// An entry's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId(u32);

/// The result of tracking one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub info: CtInfo,
    /// the entry the packet belongs to (unconfirmed for NEW until [`Table::confirm`])
    pub entry: Option<EntryId>,
    /// conntrack itself drops the packet (table full)
    pub drop: bool,
}

impl Track {
    fn invalid() -> Track {
        Track {
            info: CtInfo::Invalid,
            entry: None,
            drop: false,
        }
    }
}

/// Counters, as `conntrack -S` shows some of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub found: u64,
    pub new: u64,
    pub invalid: u64,
    pub early_drop: u64,
    pub drop: u64,
    pub expired: u64,
}

pub struct Table {
    cfg: Config,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// heads of the hash chains of confirmed entries' tuples (links `index << 1 | dir`)
    buckets: Vec<u32>,
    count: usize,
    /// (deadline, entry): one live timer per entry, at `Entry::timer`
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// random keys of the bucket hash (so that chains cannot be predicted from outside)
    key: (u64, u64),
    pub stats: Stats,
    /// IPVS connection count changes not yet taken by the datapath
    ipvs_events: Vec<IpvsEvent>,
    /// entry index -> the IPVS real server it is bound to (`bind_ipvs`), with
    /// [`IPVS_ACTIVE`] set while it counts as active: kept beside the entries, so that
    /// connections without IPVS pay nothing for it
    ipvs: std::collections::HashMap<u32, u32>,
}

/// seq comparisons modulo 2^32
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

const MAX_ACK_WINDOW: u32 = 66_000;

/// Segment index into the state table: SYN, SYN/ACK, FIN, ACK, RST, NONE.
fn tcp_index(flags: u8) -> usize {
    use tcp::flags::*;
    if flags & RST != 0 {
        4
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            1
        } else {
            0
        }
    } else if flags & FIN != 0 {
        2
    } else if flags & ACK != 0 {
        3
    } else {
        5
    }
}

/// The flag combinations a TCP segment may carry (PSH, ECE, CWR ignored).
fn tcp_flags_valid(flags: u8) -> bool {
    use tcp::flags::*;
    let f = flags & !(PSH | 0xc0);
    matches!(
        f,
        x if x == SYN || x == SYN | URG || x == SYN | ACK || x == RST || x == RST | ACK
            || x == FIN | ACK || x == FIN | ACK | URG || x == ACK || x == ACK | URG
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    To(TcpState),
    Ignore,
    Invalid,
}

/// `tcp_conntracks[dir][index][state]` (SEMANTICS §1.2); states ordered NO SS SR ES FW CW LA
/// TW CL S2.
fn tcp_next(dir: Dir, index: usize, s: TcpState) -> Next {
    use Next::{Ignore as IG, Invalid as IV};
    use TcpState::*;
    let t = |s: TcpState| Next::To(s);
    // the table's columns follow the enum's declaration order
    let i = s as usize;
    let row: [Next; 10] = match (dir, index) {
        (Dir::Original, 0) => [
            t(SynSent),
            t(SynSent),
            IG,
            IG,
            IG,
            IG,
            IG,
            t(SynSent),
            t(SynSent),
            t(SynSent2),
        ],
        (Dir::Original, 1) => [IV, IV, t(SynRecv), IV, IV, IV, IV, IV, IV, t(SynRecv)],
        (Dir::Original, 2) => [
            IV,
            IV,
            t(FinWait),
            t(FinWait),
            t(LastAck),
            t(LastAck),
            t(LastAck),
            t(TimeWait),
            t(Close),
            IV,
        ],
        (Dir::Original, 3) => [
            t(Established),
            IV,
            t(Established),
            t(Established),
            t(CloseWait),
            t(CloseWait),
            t(TimeWait),
            t(TimeWait),
            t(Close),
            IV,
        ],
        (Dir::Reply, 0) => [
            IV,
            t(SynSent2),
            IV,
            IV,
            IV,
            IV,
            IV,
            t(SynSent),
            IV,
            t(SynSent2),
        ],
        (Dir::Reply, 1) => [IV, t(SynRecv), IG, IG, IG, IG, IG, IG, IG, t(SynRecv)],
        (Dir::Reply, 2) => [
            IV,
            IV,
            t(FinWait),
            t(FinWait),
            t(LastAck),
            t(LastAck),
            t(LastAck),
            t(TimeWait),
            t(Close),
            IV,
        ],
        (Dir::Reply, 3) => [
            IV,
            IG,
            t(SynRecv),
            t(Established),
            t(CloseWait),
            t(CloseWait),
            t(TimeWait),
            t(TimeWait),
            t(Close),
            IG,
        ],
        (_, 4) => [
            IV,
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
        ],
        _ => [IV; 10],
    };
    row[i]
}

/// What the trackers need to know of a packet.
#[derive(Debug, Clone, Copy)]
struct L4 {
    tuple: Tuple,
    tcp: Option<TcpSeg>,
}

#[derive(Debug, Clone, Copy)]
struct TcpSeg {
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    len: u32,
    wscale: Option<u8>,
}

fn wscale_option(opts: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(opts[i + 2].min(14));
                }
                i += len;
            }
        }
    }
    None
}

/// The tuple of a transport header inside `ip` (`None` when it cannot be read).
fn transport_tuple(ip: &ipv4::Packet<&[u8]>, quoted: bool) -> Option<(Tuple, Option<TcpSeg>)> {
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let p = ip.payload();
    let base = |sport, dport| Tuple {
        src,
        dst,
        proto,
        sport,
        dport,
    };
    match proto {
        ipv4::PROTO_TCP if quoted => (p.len() >= 4).then(|| {
            (
                base(
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                ),
                None,
            )
        }),
        ipv4::PROTO_UDP if quoted => (p.len() >= 4).then(|| {
            (
                base(
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                ),
                None,
            )
        }),
        ipv4::PROTO_TCP => {
            let s = tcp::Segment::new_checked(p).ok()?;
            let len = s.payload().len() as u32;
            let seg = TcpSeg {
                seq: s.seq(),
                ack: s.ack(),
                flags: s.flags(),
                win: s.window(),
                len,
                wscale: if s.flags() & tcp::flags::SYN != 0 {
                    wscale_option(s.options())
                } else {
                    None
                },
            };
            Some((base(s.src_port(), s.dst_port()), Some(seg)))
        }
        ipv4::PROTO_UDP => {
            let d = udp::Datagram::new_checked(p).ok()?;
            Some((base(d.src_port(), d.dst_port()), None))
        }
        ipv4::PROTO_ICMP => {
            let m = icmp::Message::new_checked(p).ok()?;
            Some((
                base(
                    m.echo_ident(),
                    u16::from(m.msg_type()) << 8 | u16::from(m.code()),
                ),
                None,
            ))
        }
        _ => Some((base(0, 0), None)),
    }
}

impl Table {
    pub fn new(cfg: Config) -> Table {
        let buckets = cfg.buckets.max(1);
        Table {
            cfg,
            entries: Vec::new(),
            free: Vec::new(),
            buckets: vec![NIL; buckets],
            count: 0,
            timers: BinaryHeap::new(),
            key: {
                use std::hash::BuildHasher;
                let r = std::collections::hash_map::RandomState::new();
                (r.hash_one(1u8), r.hash_one(2u8))
            },
            stats: Stats::default(),
            ipvs_events: Vec::new(),
            ipvs: std::collections::HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Confirmed entries.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn bucket(&self, t: &Tuple) -> usize {
        let a = u64::from(u32::from(t.src)) << 32 | u64::from(u32::from(t.dst));
        let b = u64::from(t.sport) << 32 | u64::from(t.dport) << 8 | u64::from(t.proto);
        let h = mix(a ^ self.key.0).wrapping_add(mix(b ^ self.key.1));
        (h % self.buckets.len() as u64) as usize
    }

    fn find(&self, t: &Tuple) -> Option<(u32, Dir)> {
        let mut link = self.buckets[self.bucket(t)];
        while link != NIL {
            let (i, d) = (link >> 1, (link & 1) as usize);
            let e = self.entries[i as usize].as_ref()?;
            if e.tuple[d] == *t {
                return Some((i, if d == 0 { Dir::Original } else { Dir::Reply }));
            }
            link = e.next[d];
        }
        None
    }

    /// Unlinks entry `idx`'s tuple of direction `d` from its chain.
    fn unlink(&mut self, idx: u32, d: usize) {
        let Some(t) = self.entries[idx as usize].as_ref().map(|e| e.tuple[d]) else {
            return;
        };
        let b = self.bucket(&t);
        let me = idx << 1 | d as u32;
        let after = self.entries[idx as usize]
            .as_ref()
            .map(|e| e.next[d])
            .unwrap_or(NIL);
        if self.buckets[b] == me {
            self.buckets[b] = after;
            return;
        }
        let mut link = self.buckets[b];
        while link != NIL {
            let (i, dd) = ((link >> 1) as usize, (link & 1) as usize);
            let Some(e) = self.entries[i].as_mut() else {
                return;
            };
            if e.next[dd] == me {
                e.next[dd] = after;
                return;
            }
            link = e.next[dd];
        }
    }

    pub fn get(&self, id: EntryId) -> Option<&Entry> {
        self.entries.get(id.0 as usize).and_then(|e| e.as_ref())
    }

    /// Is this tuple some confirmed entry's, in either direction? (A NAT candidate whose
    /// inverse is in use would make replies ambiguous.)
    pub fn in_use(&self, t: &Tuple) -> bool {
        self.find(t).is_some()
    }

    /// Sets the reply tuple of an unconfirmed entry: NAT decided that the original
    /// direction's packets will look like `after`, so replies come back as its inverse.
    pub fn set_nat(&mut self, id: EntryId, after: Tuple, manip: crate::nat::Manip) -> bool {
        let Some(inv) = after.invert() else {
            return false;
        };
        match self.get_mut(id) {
            Some(e) if !e.confirmed() => {
                e.tuple[1] = inv;
                e.nat |= match manip {
                    crate::nat::Manip::Src => NAT_SRC,
                    crate::nat::Manip::Dst => NAT_DST,
                };
                true
            }
            _ => false,
        }
    }

    pub fn get_mut(&mut self, id: EntryId) -> Option<&mut Entry> {
        self.entries.get_mut(id.0 as usize).and_then(|e| e.as_mut())
    }

    /// Removes entries whose deadline has passed. Each entry has one live timer in a heap,
    /// at its earliest deadline; a refreshed entry is simply re-armed when its timer comes
    /// up, so a packet costs no heap operation unless it shortens the deadline.
    pub fn expire(&mut self, now: u64) {
        while let Some(Reverse((when, idx))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let (expires, live) = match &self.entries[idx as usize] {
                Some(e) if e.timer == when && e.confirmed() => (e.expires, true),
                _ => (0, false), // a stale timer (entry gone, or re-armed earlier)
            };
            if !live {
                continue;
            }
            if expires <= now {
                self.remove(idx);
                self.stats.expired += 1;
            } else if let Some(e) = self.entries[idx as usize].as_mut() {
                e.timer = expires;
                self.timers.push(Reverse((expires, idx)));
            }
        }
    }

    fn remove(&mut self, idx: u32) {
        let confirmed = self.entries[idx as usize]
            .as_ref()
            .is_some_and(Entry::confirmed);
        if confirmed {
            if let Some(tag) = self.ipvs.remove(&idx) {
                self.ipvs_unbound(tag);
            }
            self.unlink(idx, 0);
            self.unlink(idx, 1);
            self.count -= 1;
        }
        self.ipvs.remove(&idx);
        if self.entries[idx as usize].take().is_some() {
            self.free.push(idx);
        }
    }

    fn set_timeout(&mut self, idx: u32, now: u64, secs: u64) {
        let Some(e) = self.entries[idx as usize].as_mut() else {
            return;
        };
        e.expires = now + secs * 1000;
        // only an earlier deadline needs a new timer; a later one re-arms when it fires
        if e.confirmed() && e.expires < e.timer {
            e.timer = e.expires;
            self.timers.push(Reverse((e.expires, idx)));
        }
    }

    /// A confirmed entry bound to a real server goes: its count drops.
    fn ipvs_unbound(&mut self, tag: u32) {
        let active = tag & IPVS_ACTIVE != 0;
        self.ipvs_events.push(IpvsEvent {
            binding: tag & !IPVS_ACTIVE,
            active: -i32::from(active),
            inactive: -i32::from(!active),
            opened: false,
        });
    }

    /// Binds an unconfirmed entry to an IPVS real server (`binding`, below 2^31): once
    /// confirmed it counts in that server's InActConn, in ActiveConn while its TCP state is
    /// ESTABLISHED, and leaves the counts when the entry goes (as `ip_vs_bind_dest` and the
    /// IPVS state table do).
    pub fn bind_ipvs(&mut self, id: EntryId, binding: u32) {
        if matches!(self.entries.get(id.0 as usize), Some(Some(e)) if !e.confirmed()) {
            self.ipvs.insert(id.0, binding & !IPVS_ACTIVE);
        }
    }

    /// The IPVS binding of an entry, if it has one (`bind_ipvs`).
    pub fn ipvs_binding(&self, id: EntryId) -> Option<u32> {
        if self.ipvs.is_empty() {
            return None;
        }
        self.ipvs.get(&id.0).map(|t| t & !IPVS_ACTIVE)
    }

    /// The confirmed entries bound to IPVS real servers, with their bindings.
    pub fn ipvs_entries(&self) -> impl Iterator<Item = (&Entry, u32)> + '_ {
        self.ipvs.iter().filter_map(|(&i, &tag)| {
            let e = self.entries.get(i as usize)?.as_ref()?;
            e.confirmed().then_some((e, tag & !IPVS_ACTIVE))
        })
    }

    /// The IPVS count changes since the last call, in order.
    pub fn take_ipvs_events(&mut self) -> Vec<IpvsEvent> {
        std::mem::take(&mut self.ipvs_events)
    }

    /// An entry's TCP state changed: an IPVS connection becomes active on reaching
    /// ESTABLISHED and inactive on leaving it.
    fn ipvs_state(&mut self, idx: u32) {
        if self.ipvs.is_empty() {
            return;
        }
        let Some(e) = self.entries[idx as usize].as_ref() else {
            return;
        };
        if !e.confirmed() {
            return;
        }
        let est = e.tcp == TcpState::Established;
        let Some(tag) = self.ipvs.get_mut(&idx) else {
            return;
        };
        if est != (*tag & IPVS_ACTIVE != 0) {
            *tag ^= IPVS_ACTIVE;
            let d = if est { 1 } else { -1 };
            self.ipvs_events.push(IpvsEvent {
                binding: *tag & !IPVS_ACTIVE,
                active: d,
                inactive: -d,
                opened: false,
            });
        }
    }

    /// Deletes every entry (`conntrack -F`).
    pub fn flush(&mut self) {
        let bound: Vec<(u32, u32)> = self.ipvs.drain().collect();
        for (idx, tag) in bound {
            if matches!(self.entries.get(idx as usize), Some(Some(e)) if e.confirmed()) {
                self.ipvs_unbound(tag);
            }
        }
        self.entries.clear();
        self.free.clear();
        self.buckets.iter_mut().for_each(|b| *b = NIL);
        self.timers.clear();
        self.count = 0;
    }

    /// Tracks one IPv4 packet (`bytes` from the IP header on) at time `now` (ms).
    pub fn track(&mut self, now: u64, bytes: &[u8]) -> Track {
        self.expire(now);
        let Ok(ip) = ipv4::Packet::new_checked(bytes) else {
            self.stats.invalid += 1;
            return Track::invalid();
        };
        // later fragments carry no transport header: they follow their first fragment in the
        // kernel after defragmentation; here they are invalid
        if ip.frag_offset() != 0 {
            self.stats.invalid += 1;
            return Track::invalid();
        }
        let Some((tuple, seg)) = transport_tuple(&ip, false) else {
            self.stats.invalid += 1;
            return Track::invalid();
        };
        // ICMP errors: RELATED to the flow they quote
        if tuple.proto == ipv4::PROTO_ICMP {
            let t = (tuple.dport >> 8) as u8;
            if icmp::is_error(t) {
                return self.track_icmp_error(&ip);
            }
        }
        let l4 = L4 { tuple, tcp: seg };
        match self.find(&tuple) {
            Some((idx, dir)) => {
                let t = self.track_existing(now, idx, dir, &l4);
                self.ipvs_state(idx);
                t
            }
            None => self.track_new(now, &l4),
        }
    }

    fn track_icmp_error(&mut self, ip: &ipv4::Packet<&[u8]>) -> Track {
        let Ok(m) = icmp::Message::new_checked(ip.payload()) else {
            return Track::invalid();
        };
        if m.msg_type() > 18 {
            return Track::invalid();
        }
        let Some(Ok(q)) = m.quoted() else {
            self.stats.invalid += 1;
            return Track::invalid();
        };
        let Some((quoted, _)) = transport_tuple(&q, true) else {
            self.stats.invalid += 1;
            return Track::invalid();
        };
        // the quoted packet went the other way: its inverse is what this error travels as
        let Some(inv) = quoted.invert() else {
            return Track::invalid();
        };
        match self.find(&inv) {
            // the outer destination must be the flow's endpoint (anti-spoofing)
            Some((idx, dir))
                if self.entries[idx as usize]
                    .as_ref()
                    .is_some_and(|e| e.tuple[dir as usize].dst == ip.dst()) =>
            {
                self.stats.found += 1;
                Track {
                    info: if dir == Dir::Original {
                        CtInfo::Related
                    } else {
                        CtInfo::RelatedReply
                    },
                    entry: Some(EntryId(idx)),
                    drop: false,
                }
            }
            _ => {
                self.stats.invalid += 1;
                Track::invalid()
            }
        }
    }

    fn track_new(&mut self, now: u64, l4: &L4) -> Track {
        let t = l4.tuple;
        let Some(reply) = t.invert() else {
            // an ICMP type that has no reply cannot start a connection
            self.stats.invalid += 1;
            return Track::invalid();
        };
        let mut tcp_state = TcpState::None;
        let mut win = [Window::default(); 2];
        if let Some(s) = l4.tcp {
            if !tcp_flags_valid(s.flags) {
                self.stats.invalid += 1;
                return Track::invalid();
            }
            match tcp_index(s.flags) {
                0 => {
                    tcp_state = TcpState::SynSent;
                    let end = s.seq.wrapping_add(s.len).wrapping_add(1);
                    win[0] = Window {
                        end,
                        maxend: end,
                        maxwin: u32::from(s.win).max(1),
                        scale: s.wscale.unwrap_or(0),
                        init: true,
                    };
                }
                3 if self.cfg.tcp_loose => {
                    // picked up mid-stream: liberal windows until both sides are seen
                    tcp_state = TcpState::Established;
                    let end = s.seq.wrapping_add(s.len);
                    win[0] = Window {
                        end,
                        maxend: end.wrapping_add(u32::from(s.win)),
                        maxwin: u32::from(s.win).max(1),
                        scale: 0,
                        init: true,
                    };
                }
                _ => {
                    self.stats.invalid += 1;
                    return Track::invalid();
                }
            }
        } else if t.proto == ipv4::PROTO_ICMP && !matches!((t.dport >> 8) as u8, 8 | 13 | 15 | 17) {
            // only requests create entries
            self.stats.invalid += 1;
            return Track::invalid();
        }
        let idx = self.alloc(Entry {
            tuple: [t, reply],
            status: 0,
            nat: 0,
            tcp: tcp_state,
            win,
            closing: false,
            picked_up: tcp_state == TcpState::Established,
            expires: 0,
            created: now,
            timer: u64::MAX,
            mark: 0,
            next: [NIL; 2],
        });
        let secs = self.initial_timeout(t.proto, tcp_state);
        self.set_timeout(idx, now, secs);
        self.stats.new += 1;
        Track {
            info: CtInfo::New,
            entry: Some(EntryId(idx)),
            drop: false,
        }
    }

    fn initial_timeout(&self, proto: u8, s: TcpState) -> u64 {
        let to = &self.cfg.timeouts;
        match proto {
            ipv4::PROTO_TCP if s == TcpState::Established => to.tcp_unacknowledged,
            ipv4::PROTO_TCP => to.tcp(s),
            ipv4::PROTO_UDP => to.udp,
            ipv4::PROTO_ICMP => to.icmp,
            _ => to.generic,
        }
    }

    fn alloc(&mut self, e: Entry) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(e);
                i
            }
            None => {
                self.entries.push(Some(e));
                (self.entries.len() - 1) as u32
            }
        }
    }

    /// Inserts a NEW packet's entry once the packet has passed its path. Returns false (and
    /// the packet must be dropped) when the table is full and no entry could be evicted, or
    /// when another packet created the same connection meanwhile.
    pub fn confirm(&mut self, id: EntryId, now: u64) -> bool {
        let Some(e) = self.entries.get(id.0 as usize).and_then(|e| e.as_ref()) else {
            return false;
        };
        if e.confirmed() {
            return true;
        }
        let tuples = e.tuple;
        if tuples.iter().any(|t| self.find(t).is_some()) {
            self.discard(id);
            self.stats.drop += 1;
            return false;
        }
        if self.cfg.max > 0 && self.count >= self.cfg.max && !self.early_drop(&tuples[0]) {
            self.discard(id);
            self.stats.drop += 1;
            return false;
        }
        let idx = id.0;
        let bs: Vec<usize> = tuples.iter().map(|t| self.bucket(t)).collect();
        for (d, b) in bs.iter().enumerate() {
            let old = self.buckets[*b];
            if let Some(e) = self.entries[idx as usize].as_mut() {
                e.next[d] = old;
            }
            self.buckets[*b] = idx << 1 | d as u32;
        }
        self.count += 1;
        if let Some(e) = self.entries[idx as usize].as_mut() {
            e.status |= STATUS_CONFIRMED;
            e.timer = e.expires;
            let when = e.expires;
            self.timers.push(Reverse((when, idx)));
        }
        if let Some(&binding) = self.ipvs.get(&idx) {
            self.ipvs_events.push(IpvsEvent {
                binding,
                active: 0,
                inactive: 1,
                opened: true,
            });
        }
        let _ = now;
        self.ipvs_state(idx);
        true
    }

    /// Forgets an unconfirmed entry (its packet was dropped).
    pub fn discard(&mut self, id: EntryId) {
        if matches!(self.entries.get(id.0 as usize), Some(Some(e)) if !e.confirmed()) {
            self.ipvs.remove(&id.0);
            self.entries[id.0 as usize] = None;
            self.free.push(id.0);
        }
    }

    /// Evicts one non-ASSURED entry from the first of up to 8 buckets, starting at the new
    /// flow's bucket, that has one (`early_drop`).
    fn early_drop(&mut self, t: &Tuple) -> bool {
        let start = self.bucket(t);
        let n = self.buckets.len();
        for k in 0..8.min(n) {
            let b = (start + k) % n;
            let mut victim = None;
            let mut link = self.buckets[b];
            while link != NIL {
                let (i, d) = (link >> 1, (link & 1) as usize);
                let Some(e) = self.entries[i as usize].as_ref() else {
                    break;
                };
                if !e.assured() {
                    victim = Some(i);
                    break;
                }
                link = e.next[d];
            }
            if let Some(v) = victim {
                self.remove(v);
                self.stats.early_drop += 1;
                return true;
            }
        }
        false
    }

    fn track_existing(&mut self, now: u64, idx: u32, dir: Dir, l4: &L4) -> Track {
        let proto = l4.tuple.proto;
        let seen_reply = self.entries[idx as usize]
            .as_ref()
            .is_some_and(Entry::seen_reply);
        let info = match dir {
            Dir::Reply => CtInfo::EstablishedReply,
            Dir::Original if seen_reply => CtInfo::Established,
            Dir::Original => CtInfo::New,
        };
        let to = self.cfg.timeouts.clone();
        let timeout = match proto {
            ipv4::PROTO_TCP => match self.tcp_packet(now, idx, dir, l4) {
                Ok(Some(secs)) => secs,
                Ok(None) => {
                    // ignored: accepted without touching the state or the timer
                    self.stats.found += 1;
                    return Track {
                        info,
                        entry: Some(EntryId(idx)),
                        drop: false,
                    };
                }
                Err(Reopen) => {
                    // a SYN on a closed connection: the old entry goes, the SYN starts anew
                    self.remove(idx);
                    return self.track_new(now, l4);
                }
            },
            ipv4::PROTO_UDP => {
                let e = self.entries[idx as usize].as_mut().expect("live entry");
                if dir == Dir::Reply {
                    e.status |= STATUS_SEEN_REPLY;
                }
                if e.seen_reply() && now.saturating_sub(e.created) >= 2000 {
                    e.status |= STATUS_ASSURED;
                    to.udp_stream
                } else {
                    to.udp
                }
            }
            ipv4::PROTO_ICMP => {
                let e = self.entries[idx as usize].as_mut().expect("live entry");
                if dir == Dir::Reply {
                    e.status |= STATUS_SEEN_REPLY;
                }
                to.icmp
            }
            _ => {
                let e = self.entries[idx as usize].as_mut().expect("live entry");
                if dir == Dir::Reply {
                    e.status |= STATUS_SEEN_REPLY;
                }
                to.generic
            }
        };
        if self.entries[idx as usize].is_none() {
            return Track::invalid();
        }
        if timeout == u64::MAX {
            self.stats.invalid += 1;
            return Track::invalid();
        }
        self.set_timeout(idx, now, timeout);
        self.stats.found += 1;
        Track {
            info,
            entry: Some(EntryId(idx)),
            drop: false,
        }
    }

    /// The TCP tracker: Ok(Some(timeout)), Ok(None) for an ignored segment, Err(Reopen) for a
    /// SYN that replaces a closed connection; an invalid segment is Ok(Some(u64::MAX)).
    fn tcp_packet(
        &mut self,
        _now: u64,
        idx: u32,
        dir: Dir,
        l4: &L4,
    ) -> Result<Option<u64>, Reopen> {
        const INVALID: Result<Option<u64>, Reopen> = Ok(Some(u64::MAX));
        let Some(s) = l4.tcp else { return INVALID };
        if !tcp_flags_valid(s.flags) {
            return INVALID;
        }
        let liberal = self.cfg.tcp_be_liberal;
        let to = self.cfg.timeouts.clone();
        let e = self.entries[idx as usize].as_mut().expect("live entry");
        let index = tcp_index(s.flags);
        let old = e.tcp;
        let next = tcp_next(dir, index, old);
        if index == 0
            && matches!(old, TcpState::TimeWait | TcpState::Close)
            && matches!(next, Next::To(TcpState::SynSent))
            && e.closing
        {
            return Err(Reopen);
        }
        let new = match next {
            Next::Invalid => return INVALID,
            Next::Ignore => return Ok(None),
            Next::To(n) => n,
        };
        // window tracking
        let d = dir as usize;
        let (snd, rcv) = if d == 0 {
            let (a, b) = e.win.split_at_mut(1);
            (&mut a[0], &mut b[0])
        } else {
            let (a, b) = e.win.split_at_mut(1);
            (&mut b[0], &mut a[0])
        };
        let syn_fin = u32::from(s.flags & (tcp::flags::SYN | tcp::flags::FIN) != 0);
        let end = s.seq.wrapping_add(s.len).wrapping_add(syn_fin);
        let win = u32::from(s.win)
            << if s.flags & tcp::flags::SYN != 0 {
                0
            } else {
                snd.scale
            };
        if !snd.init {
            // first segment in this direction (the SYN/ACK, or a picked-up peer)
            *snd = Window {
                end,
                maxend: end,
                maxwin: win.max(1),
                scale: s.wscale.unwrap_or(0),
                init: true,
            };
            if s.flags & tcp::flags::ACK != 0 {
                rcv.maxend = rcv.maxend.max(s.ack.wrapping_add(win));
            }
        } else {
            let ack = if s.flags & tcp::flags::ACK != 0 {
                s.ack
            } else {
                rcv.end
            };
            let ok = !before(snd.maxend, s.seq)
                && !before(end, snd.end.wrapping_sub(rcv.maxwin.max(1)))
                && (!rcv.init
                    || (!after(ack, rcv.end)
                        && !before(ack, rcv.end.wrapping_sub(snd.maxwin.max(MAX_ACK_WINDOW)))));
            if !ok && !liberal && s.flags & tcp::flags::RST == 0 {
                return INVALID;
            }
            if after(end, snd.end) {
                snd.end = end;
            }
            if win > snd.maxwin {
                snd.maxwin = win;
            }
            if s.flags & tcp::flags::ACK != 0 && after(ack.wrapping_add(win), rcv.maxend) {
                rcv.maxend = ack.wrapping_add(win);
            }
        }
        if s.flags & (tcp::flags::FIN | tcp::flags::RST) != 0 {
            e.closing = true;
        }
        if dir == Dir::Reply {
            e.status |= STATUS_SEEN_REPLY;
        }
        // the handshake's third ACK (or a picked-up connection answered) makes it ASSURED
        if (old == TcpState::SynRecv && new == TcpState::Established)
            || (e.picked_up && dir == Dir::Reply)
        {
            e.status |= STATUS_ASSURED;
        }
        e.tcp = new;
        let mut secs = to.tcp(new);
        if !e.seen_reply() && new == TcpState::Established {
            secs = secs.min(to.tcp_unacknowledged);
        }
        Ok(Some(secs))
    }

    /// The entries in `conntrack -L` format, one per line, most recent first.
    pub fn list(&self, now: u64) -> String {
        let mut live: Vec<(usize, &Entry)> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .filter(|(_, e)| e.confirmed())
            .collect();
        live.sort_by_key(|(i, e)| Reverse((e.created, *i)));
        let mut out = String::new();
        for (_, e) in live {
            let _ = writeln!(out, "{}", ListLine { e, now });
        }
        out
    }
}

/// `Err` of the TCP tracker: the segment reopens a closed connection.
#[derive(Debug)]
struct Reopen;

struct ListLine<'a> {
    e: &'a Entry,
    now: u64,
}

impl fmt::Display for ListLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.e;
        let o = &e.tuple[0];
        let name = match o.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            _ => "unknown",
        };
        write!(
            f,
            "{:<8} {} {}",
            name,
            o.proto,
            e.expires.saturating_sub(self.now) / 1000
        )?;
        if o.proto == 6 {
            write!(f, " {}", e.tcp.name())?;
        }
        let tuple = |f: &mut fmt::Formatter<'_>, t: &Tuple| -> fmt::Result {
            write!(f, " src={} dst={}", t.src, t.dst)?;
            match t.proto {
                6 | 17 => write!(f, " sport={} dport={}", t.sport, t.dport),
                1 => write!(
                    f,
                    " type={} code={} id={}",
                    t.dport >> 8,
                    t.dport & 0xff,
                    t.sport
                ),
                _ => Ok(()),
            }
        };
        tuple(f, o)?;
        if !e.seen_reply() {
            f.write_str(" [UNREPLIED]")?;
        }
        tuple(f, &e.tuple[1])?;
        if e.assured() {
            f.write_str(" [ASSURED]")?;
        }
        write!(f, " mark={} use=1", e.mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{icmp, ipv4, tcp, udp};
    use tcp::flags::*;

    const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

    fn ip(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        ipv4::Repr::packet(src, dst, proto, l4.len(), |b, _, _| {
            b.copy_from_slice(l4);
            Ok(())
        })
        .unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_pkt(
        src: Ipv4Addr,
        sp: u16,
        dst: Ipv4Addr,
        dp: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        len: usize,
    ) -> Vec<u8> {
        let r = tcp::Repr {
            src_port: sp,
            dst_port: dp,
            seq,
            ack,
            flags,
            window: 65535,
            payload_len: len,
        };
        ipv4::Repr::packet(src, dst, ipv4::PROTO_TCP, 20 + len, |b, s, d| {
            r.emit(b, s, d)
        })
        .unwrap()
    }

    fn udp_pkt(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
        let mut l4 = vec![0u8; 12];
        udp::Repr {
            src_port: sp,
            dst_port: dp,
            payload_len: 4,
        }
        .emit(&mut l4, src, dst)
        .unwrap();
        ip(src, dst, ipv4::PROTO_UDP, &l4)
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, ident: u16) -> Vec<u8> {
        let mut l4 = vec![0u8; 8];
        let r = if request {
            icmp::Repr::EchoRequest {
                ident,
                seq: 1,
                data_len: 0,
            }
        } else {
            icmp::Repr::EchoReply {
                ident,
                seq: 1,
                data_len: 0,
            }
        };
        r.emit(&mut l4).unwrap();
        ip(src, dst, ipv4::PROTO_ICMP, &l4)
    }

    /// Tracks and confirms like a datapath that accepts every packet.
    fn step(t: &mut Table, now: u64, p: &[u8]) -> Track {
        let tr = t.track(now, p);
        if let (CtInfo::New, Some(id)) = (tr.info, tr.entry) {
            assert!(t.confirm(id, now), "confirm");
        }
        tr
    }

    fn state(t: &Table, tr: Track) -> TcpState {
        t.get(tr.entry.unwrap()).unwrap().tcp
    }

    #[test]
    fn a_tcp_connection_from_handshake_to_time_wait() {
        let mut t = Table::new(Config::default());
        let syn = step(&mut t, 0, &tcp_pkt(C, 40000, S, 80, 100, 0, SYN, 0));
        assert_eq!((syn.info, state(&t, syn)), (CtInfo::New, TcpState::SynSent));
        let synack = step(
            &mut t,
            10,
            &tcp_pkt(S, 80, C, 40000, 5000, 101, SYN | ACK, 0),
        );
        assert_eq!(
            (synack.info, state(&t, synack)),
            (CtInfo::EstablishedReply, TcpState::SynRecv)
        );
        let ack = step(&mut t, 20, &tcp_pkt(C, 40000, S, 80, 101, 5001, ACK, 0));
        assert_eq!(
            (ack.info, state(&t, ack)),
            (CtInfo::Established, TcpState::Established)
        );
        assert!(t.get(ack.entry.unwrap()).unwrap().assured());
        let data = step(
            &mut t,
            30,
            &tcp_pkt(C, 40000, S, 80, 101, 5001, ACK | PSH, 100),
        );
        assert_eq!(data.info, CtInfo::Established);
        let reply = step(&mut t, 40, &tcp_pkt(S, 80, C, 40000, 5001, 201, ACK, 1000));
        assert_eq!(reply.info, CtInfo::EstablishedReply);
        let line = t.list(40);
        assert!(line.starts_with("tcp      6 432000 ESTABLISHED src=192.0.2.10 dst=198.51.100.20 sport=40000 dport=80 src=198.51.100.20 dst=192.0.2.10 sport=80 dport=40000 [ASSURED] mark=0 use=1"), "{line}");
        let fin = step(
            &mut t,
            50,
            &tcp_pkt(C, 40000, S, 80, 201, 6001, FIN | ACK, 0),
        );
        assert_eq!(state(&t, fin), TcpState::FinWait);
        let ack2 = step(&mut t, 60, &tcp_pkt(S, 80, C, 40000, 6001, 202, ACK, 0));
        assert_eq!(state(&t, ack2), TcpState::CloseWait);
        let fin2 = step(
            &mut t,
            70,
            &tcp_pkt(S, 80, C, 40000, 6001, 202, FIN | ACK, 0),
        );
        assert_eq!(state(&t, fin2), TcpState::LastAck);
        let last = step(&mut t, 80, &tcp_pkt(C, 40000, S, 80, 202, 6002, ACK, 0));
        assert_eq!(state(&t, last), TcpState::TimeWait);
        assert_eq!(t.get(last.entry.unwrap()).unwrap().expires, 80 + 120_000);
        // TIME_WAIT expires after 120 s, without any packet scanning the table
        t.expire(80 + 119_999);
        assert_eq!(t.len(), 1);
        t.expire(80 + 120_000);
        assert_eq!(t.len(), 0);
        assert_eq!(t.stats.expired, 1);
    }

    #[test]
    fn rst_closes_and_a_new_syn_reopens() {
        let mut t = Table::new(Config::default());
        step(&mut t, 0, &tcp_pkt(C, 1, S, 22, 1, 0, SYN, 0));
        step(&mut t, 1, &tcp_pkt(S, 22, C, 1, 9, 2, SYN | ACK, 0));
        let rst = step(&mut t, 2, &tcp_pkt(S, 22, C, 1, 10, 2, RST, 0));
        assert_eq!(state(&t, rst), TcpState::Close);
        assert_eq!(t.get(rst.entry.unwrap()).unwrap().expires, 2 + 10_000);
        let again = step(&mut t, 3, &tcp_pkt(C, 1, S, 22, 77, 0, SYN, 0));
        assert_eq!(
            again.info,
            CtInfo::New,
            "a SYN on a closed connection starts a new one"
        );
        assert_eq!(state(&t, again), TcpState::SynSent);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn out_of_window_and_bad_flags_are_invalid() {
        let mut t = Table::new(Config::default());
        step(&mut t, 0, &tcp_pkt(C, 5, S, 80, 1000, 0, SYN, 0));
        step(&mut t, 1, &tcp_pkt(S, 80, C, 5, 9000, 1001, SYN | ACK, 0));
        step(&mut t, 2, &tcp_pkt(C, 5, S, 80, 1001, 9001, ACK, 0));
        // a segment far beyond what the receiver has advertised
        let far = t.track(3, &tcp_pkt(C, 5, S, 80, 1001 + 10_000_000, 9001, ACK, 10));
        assert_eq!(far.info, CtInfo::Invalid);
        // acknowledging data never sent
        let ack = t.track(4, &tcp_pkt(C, 5, S, 80, 1001, 9001 + 5_000_000, ACK, 0));
        assert_eq!(ack.info, CtInfo::Invalid);
        // the connection itself is unharmed
        let ok = t.track(5, &tcp_pkt(C, 5, S, 80, 1001, 9001, ACK, 10));
        assert_eq!(ok.info, CtInfo::Established);
        // SYN and FIN together
        let x = t.track(6, &tcp_pkt(C, 6, S, 80, 1, 0, SYN | FIN, 0));
        assert_eq!(x.info, CtInfo::Invalid);
        // liberal tracking accepts the far segment
        let mut l = Table::new(Config {
            tcp_be_liberal: true,
            ..Config::default()
        });
        step(&mut l, 0, &tcp_pkt(C, 5, S, 80, 1000, 0, SYN, 0));
        step(&mut l, 1, &tcp_pkt(S, 80, C, 5, 9000, 1001, SYN | ACK, 0));
        assert_ne!(
            l.track(3, &tcp_pkt(C, 5, S, 80, 1001 + 10_000_000, 9001, ACK, 10))
                .info,
            CtInfo::Invalid
        );
    }

    #[test]
    fn mid_stream_pickup_only_when_loose() {
        let mut t = Table::new(Config::default());
        let a = step(&mut t, 0, &tcp_pkt(C, 7, S, 443, 500, 900, ACK, 10));
        assert_eq!((a.info, state(&t, a)), (CtInfo::New, TcpState::Established));
        assert_eq!(
            t.get(a.entry.unwrap()).unwrap().expires,
            300_000,
            "capped until answered"
        );
        let r = step(&mut t, 1, &tcp_pkt(S, 443, C, 7, 900, 510, ACK, 0));
        assert_eq!(r.info, CtInfo::EstablishedReply);
        assert!(t.get(r.entry.unwrap()).unwrap().assured());
        let mut strict = Table::new(Config {
            tcp_loose: false,
            ..Config::default()
        });
        assert_eq!(
            strict
                .track(0, &tcp_pkt(C, 7, S, 443, 500, 900, ACK, 10))
                .info,
            CtInfo::Invalid
        );
        // FIN, RST and SYN/ACK never create an entry
        for f in [FIN | ACK, RST, SYN | ACK] {
            assert_eq!(
                t.track(2, &tcp_pkt(C, 8, S, 443, 1, 1, f, 0)).info,
                CtInfo::Invalid
            );
        }
    }

    #[test]
    fn udp_unreplied_then_stream_and_assured() {
        let mut t = Table::new(Config::default());
        let q = step(&mut t, 0, &udp_pkt(C, 5353, S, 53));
        assert_eq!(q.info, CtInfo::New);
        assert_eq!(t.get(q.entry.unwrap()).unwrap().expires, 30_000);
        assert!(t.list(0).contains("[UNREPLIED]"));
        let r = step(&mut t, 500, &udp_pkt(S, 53, C, 5353));
        assert_eq!(r.info, CtInfo::EstablishedReply);
        assert_eq!(
            t.get(r.entry.unwrap()).unwrap().expires,
            500 + 30_000,
            "replied, but younger than 2 s"
        );
        let more = step(&mut t, 2500, &udp_pkt(C, 5353, S, 53));
        assert_eq!(more.info, CtInfo::Established);
        let e = t.get(more.entry.unwrap()).unwrap();
        assert_eq!(e.expires, 2500 + 120_000);
        assert!(e.assured());
    }

    #[test]
    fn icmp_echo_by_id_and_errors_as_related() {
        let mut t = Table::new(Config::default());
        let req = step(&mut t, 0, &echo(C, S, true, 42));
        assert_eq!(req.info, CtInfo::New);
        assert_eq!(
            step(&mut t, 1, &echo(S, C, false, 42)).info,
            CtInfo::EstablishedReply
        );
        assert_eq!(
            t.track(2, &echo(S, C, false, 43)).info,
            CtInfo::Invalid,
            "a reply nobody asked for"
        );
        assert!(t.list(2).contains("type=8 code=0 id=42"));
        // a port unreachable from the server, quoting the client's UDP datagram
        let flow = udp_pkt(C, 5000, S, 53);
        step(&mut t, 3, &flow);
        let mut l4 = vec![0u8; 8 + 28];
        l4[0] = icmp::DEST_UNREACHABLE;
        l4[1] = 3;
        l4[8..].copy_from_slice(&flow[..28]);
        icmp::Message::new_checked(&mut l4[..])
            .unwrap()
            .fill_checksum();
        let err = t.track(4, &ip(S, C, ipv4::PROTO_ICMP, &l4));
        assert_eq!(err.info, CtInfo::RelatedReply);
        // the same error sent to someone else is a spoof
        let spoof = t.track(
            5,
            &ip(S, Ipv4Addr::new(203, 0, 113, 1), ipv4::PROTO_ICMP, &l4),
        );
        assert_eq!(spoof.info, CtInfo::Invalid);
        // an error about a flow that does not exist
        let mut other = l4.clone();
        other[8 + 20] ^= 0xff; // another source port
        assert_eq!(
            t.track(6, &ip(S, C, ipv4::PROTO_ICMP, &other)).info,
            CtInfo::Invalid
        );
    }

    #[test]
    fn a_full_table_evicts_a_non_assured_entry_or_drops() {
        let mut t = Table::new(Config {
            max: 2,
            buckets: 1,
            ..Config::default()
        });
        step(&mut t, 0, &udp_pkt(C, 1, S, 53));
        step(&mut t, 0, &udp_pkt(C, 2, S, 53));
        assert_eq!(t.len(), 2);
        let third = t.track(1, &udp_pkt(C, 3, S, 53));
        assert!(
            t.confirm(third.entry.unwrap(), 1),
            "a non-assured entry makes room"
        );
        assert_eq!((t.len(), t.stats.early_drop), (2, 1));
        // fill with assured TCP connections: nothing can go, the new flow is dropped
        let mut a = Table::new(Config {
            max: 1,
            buckets: 1,
            ..Config::default()
        });
        step(&mut a, 0, &tcp_pkt(C, 10, S, 80, 1, 0, SYN, 0));
        step(&mut a, 1, &tcp_pkt(S, 80, C, 10, 7, 2, SYN | ACK, 0));
        step(&mut a, 2, &tcp_pkt(C, 10, S, 80, 2, 8, ACK, 0));
        let n = a.track(3, &udp_pkt(C, 9, S, 53));
        assert!(!a.confirm(n.entry.unwrap(), 3));
        assert_eq!((a.len(), a.stats.drop), (1, 1));
        // a dropped NEW packet leaves nothing behind
        let d = a.track(4, &udp_pkt(C, 11, S, 53));
        a.discard(d.entry.unwrap());
        assert_eq!(a.len(), 1);
        a.flush();
        assert!(a.is_empty());
    }

    #[test]
    fn truncated_and_fragmented_packets_are_invalid() {
        let mut t = Table::new(Config::default());
        let p = tcp_pkt(C, 1, S, 2, 1, 0, SYN, 0);
        for n in [0, 10, 20, 30, p.len() - 1] {
            assert_eq!(t.track(0, &p[..n]).info, CtInfo::Invalid, "length {n}");
        }
        let mut frag = udp_pkt(C, 1, S, 2);
        frag[6] = 0x00;
        frag[7] = 0x10; // offset 128 bytes
        let mut f = ipv4::Packet::new_checked(&mut frag[..]).unwrap();
        f.fill_checksum();
        assert_eq!(t.track(0, &frag).info, CtInfo::Invalid);
    }
}
