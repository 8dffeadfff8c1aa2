//! IPVS virtual services and their schedulers, as the kernel defines them
//! (`net/netfilter/ipvs/ip_vs_<name>.c`, SEMANTICS §4.2), and `ipvsadm -L -n` output.
//!
//! A destination is *eligible* when its weight is above zero and it is not overloaded.
//! Overhead (lc, wlc) is `active × 256 + inactive`; ratios are compared by
//! cross-multiplication, ties going to the earlier destination.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// `-m`, shown as Masq
    Nat,
    /// `-g`, shown as Route
    Dr,
    /// `-i`, shown as Tunnel
    Tunnel,
}

impl Forward {
    pub fn name(self) -> &'static str {
        match self {
            Forward::Nat => "Masq",
            Forward::Dr => "Route",
            Forward::Tunnel => "Tunnel",
        }
    }
}

/// A real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub forward: Forward,
    pub active: u32,
    pub inactive: u32,
    pub overloaded: bool,
}

impl Dest {
    pub fn new(addr: Ipv4Addr, port: u16, weight: u32) -> Dest {
        Dest {
            addr,
            port,
            weight,
            forward: Forward::Nat,
            active: 0,
            inactive: 0,
            overloaded: false,
        }
    }
    fn eligible(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }
    fn overhead(&self) -> u64 {
        u64::from(self.active) * 256 + u64::from(self.inactive)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The kernel's `hash_32` (golden-ratio multiply, top bits).
fn hash_32(v: u32, bits: u32) -> u32 {
    v.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

/// The default Maglev table size (a prime).
pub const MH_TAB_SIZE: usize = 4093;

/// A scheduler with its state.
#[derive(Debug, Clone)]
pub enum Scheduler {
    Rr {
        last: Option<usize>,
    },
    Wrr {
        cl: Option<usize>,
        cw: i64,
    },
    Lc,
    Wlc,
    Sed,
    Nq,
    /// source hashing: bucket -> destination index
    Sh {
        table: Vec<Option<usize>>,
    },
    /// destination hashing
    Dh {
        table: Vec<Option<usize>>,
    },
    /// Maglev hashing: slot -> destination index
    Mh {
        table: Vec<Option<usize>>,
    },
}

impl Scheduler {
    /// The scheduler of this name, set up for `dests`.
    pub fn new(name: &str, dests: &[Dest]) -> Option<Scheduler> {
        let mut s = match name {
            "rr" => Scheduler::Rr { last: None },
            "wrr" => Scheduler::Wrr { cl: None, cw: 0 },
            "lc" => Scheduler::Lc,
            "wlc" => Scheduler::Wlc,
            "sed" => Scheduler::Sed,
            "nq" => Scheduler::Nq,
            "sh" => Scheduler::Sh { table: vec![] },
            "dh" => Scheduler::Dh { table: vec![] },
            "mh" => Scheduler::Mh { table: vec![] },
            _ => return None,
        };
        s.update(dests);
        Some(s)
    }

    /// Recomputes the scheduler's tables after the destinations changed.
    pub fn update(&mut self, dests: &[Dest]) {
        match self {
            Scheduler::Wrr { cl, cw } => {
                *cl = None;
                *cw = wrr_max(dests);
            }
            Scheduler::Sh { table } => *table = hash_table(dests, true),
            Scheduler::Dh { table } => *table = hash_table(dests, false),
            Scheduler::Mh { table } => *table = maglev(dests, MH_TAB_SIZE),
            _ => {}
        }
    }

    /// Picks a destination for a new connection from `client` to `daddr`.
    pub fn schedule(
        &mut self,
        dests: &[Dest],
        client: Ipv4Addr,
        client_port: u16,
        daddr: Ipv4Addr,
    ) -> Option<usize> {
        let _ = client_port;
        let n = dests.len();
        if n == 0 {
            return None;
        }
        match self {
            Scheduler::Rr { last } => {
                let start = last.map(|l| l + 1).unwrap_or(0);
                let pick = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| dests[i].eligible())?;
                *last = Some(pick);
                Some(pick)
            }
            Scheduler::Wrr { cl, cw } => {
                let mw = wrr_max(dests);
                if mw <= 0 {
                    return None;
                }
                let g = i64::from(
                    dests
                        .iter()
                        .filter(|d| d.weight > 0)
                        .map(|d| d.weight)
                        .fold(0, gcd)
                        .max(1),
                );
                // at most one full cycle of weights over every destination
                let mut i = *cl;
                for _ in 0..(n * (mw as usize / g as usize + 2)) {
                    let next = i.map(|x| x + 1).unwrap_or(0);
                    if next >= n {
                        // back at the list head: lower the current weight
                        *cw -= g;
                        if *cw <= 0 {
                            *cw = mw;
                        }
                        i = None;
                        continue;
                    }
                    i = Some(next);
                    let d = &dests[next];
                    if !d.overloaded && i64::from(d.weight) >= *cw && d.weight > 0 {
                        *cl = Some(next);
                        return Some(next);
                    }
                }
                None
            }
            Scheduler::Lc => least(dests, |d| (d.overhead(), 1)),
            Scheduler::Wlc => least(dests, |d| (d.overhead(), u64::from(d.weight))),
            Scheduler::Sed => least(dests, |d| (u64::from(d.active) + 1, u64::from(d.weight))),
            Scheduler::Nq => match dests.iter().position(|d| d.eligible() && d.active == 0) {
                Some(i) => Some(i),
                None => least(dests, |d| (u64::from(d.active) + 1, u64::from(d.weight))),
            },
            Scheduler::Sh { table } => available(
                dests,
                table[(hash_32(u32::from(client), TAB_BITS) as usize) % TAB_SIZE],
            ),
            Scheduler::Dh { table } => available(
                dests,
                table[(hash_32(u32::from(daddr), TAB_BITS) as usize) % TAB_SIZE],
            ),
            Scheduler::Mh { table } => {
                let slot = (mix(u64::from(u32::from(client))) % table.len().max(1) as u64) as usize;
                available(dests, table.get(slot).copied().flatten())
            }
        }
    }
}

fn available(dests: &[Dest], i: Option<usize>) -> Option<usize> {
    i.filter(|&i| dests.get(i).is_some_and(Dest::eligible))
}

fn wrr_max(dests: &[Dest]) -> i64 {
    let g = dests
        .iter()
        .filter(|d| d.weight > 0)
        .map(|d| d.weight)
        .fold(0, gcd)
        .max(1);
    let max = dests.iter().map(|d| d.weight).max().unwrap_or(0);
    if max == 0 {
        0
    } else {
        i64::from(max) - i64::from(g - 1)
    }
}

/// The eligible destination with the least `num/den` (ties: the first), as the kernel's loops
/// do: A beats B when num_A × den_B < num_B × den_A.
fn least(dests: &[Dest], ratio: impl Fn(&Dest) -> (u64, u64)) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.eligible() {
            continue;
        }
        let (n, w) = ratio(d);
        match best {
            None => best = Some((i, n, w)),
            Some((_, bn, bw))
                if u128::from(n) * u128::from(bw) < u128::from(bn) * u128::from(w) =>
            {
                best = Some((i, n, w))
            }
            _ => {}
        }
    }
    best.map(|b| b.0)
}

/// sh/dh tables: 256 buckets filled in destination order, each destination taking `weight`
/// consecutive buckets (sh) or one (dh) per turn.
fn hash_table(dests: &[Dest], weighted: bool) -> Vec<Option<usize>> {
    let live: Vec<usize> = (0..dests.len()).filter(|&i| dests[i].weight > 0).collect();
    if live.is_empty() {
        return vec![None; TAB_SIZE];
    }
    let mut out = Vec::with_capacity(TAB_SIZE);
    let (mut k, mut count) = (0usize, 0u32);
    while out.len() < TAB_SIZE {
        let i = live[k % live.len()];
        out.push(Some(i));
        count += 1;
        if !weighted || count >= dests[i].weight {
            k += 1;
            count = 0;
        }
    }
    out
}

/// A 64-bit mixer (splitmix64's finaliser): fixed, so tables are the same on every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Maglev population (Eisenbud et al. §3.4): each destination walks its permutation
/// (offset + j·skip mod M) and takes the first empty slot on its turn; a destination gets
/// `weight / gcd` turns per round, so weights set shares and a weight change of one
/// destination does not reshuffle the others' preference lists.
pub fn maglev(dests: &[Dest], m: usize) -> Vec<Option<usize>> {
    let live: Vec<usize> = (0..dests.len()).filter(|&i| dests[i].weight > 0).collect();
    let mut table = vec![None; m];
    if live.is_empty() || m < 2 {
        return table;
    }
    let g = live.iter().map(|&i| dests[i].weight).fold(0, gcd).max(1);
    let key = |d: &Dest| (u64::from(u32::from(d.addr)) << 16) | u64::from(d.port);
    let perm: Vec<(u64, u64)> = live
        .iter()
        .map(|&i| {
            let k = key(&dests[i]);
            (
                mix(k ^ 0x5eed_0001) % m as u64,
                mix(k ^ 0x5eed_0002) % (m as u64 - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut filled = 0;
    'rounds: loop {
        for (j, &i) in live.iter().enumerate() {
            for _ in 0..(dests[i].weight / g) {
                let (offset, skip) = perm[j];
                let mut c = (offset + next[j] * skip) % m as u64;
                while table[c as usize].is_some() {
                    next[j] += 1;
                    c = (offset + next[j] * skip) % m as u64;
                }
                table[c as usize] = Some(i);
                next[j] += 1;
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
            }
        }
    }
    table
}

/// A virtual service.
#[derive(Debug, Clone)]
pub struct Service {
    pub proto: u8,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub scheduler_name: String,
    pub scheduler: Scheduler,
    pub persistent: Option<u32>,
    pub dests: Vec<Dest>,
}

impl Service {
    pub fn new(
        proto: u8,
        vip: Ipv4Addr,
        port: u16,
        scheduler: &str,
        dests: Vec<Dest>,
    ) -> Option<Service> {
        Some(Service {
            proto,
            vip,
            port,
            scheduler_name: scheduler.to_string(),
            scheduler: Scheduler::new(scheduler, &dests)?,
            persistent: None,
            dests,
        })
    }

    /// Schedules a new connection; the chosen destination counts it as inactive until it is
    /// established (TCP), as IPVS does.
    pub fn schedule(&mut self, client: Ipv4Addr, client_port: u16) -> Option<usize> {
        let i = self.pick(client, client_port)?;
        self.dests[i].inactive += 1;
        Some(i)
    }

    /// Chooses the real server for a new connection without counting it: for a caller that
    /// keeps the counts itself (the datapath counts a connection once conntrack confirms
    /// it, and follows its state).
    pub fn pick(&mut self, client: Ipv4Addr, client_port: u16) -> Option<usize> {
        self.scheduler
            .schedule(&self.dests, client, client_port, self.vip)
    }
}

/// Traffic counters of a real server (and, summed, of a service), as `ipvsadm --stats`
/// shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
}

/// ipvsadm's `print_largenum`: 9 columns, scaled by thousands from 10^8 on.
fn largenum(i: u64) -> String {
    match i {
        0..100_000_000 => format!("{i:9}"),
        100_000_000..1_000_000_000 => format!("{:8}K", i / 1_000),
        1_000_000_000..100_000_000_000 => format!("{:8}M", i / 1_000_000),
        100_000_000_000..100_000_000_000_000 => format!("{:8}G", i / 1_000_000_000),
        _ => format!("{:8}T", i / 1_000_000_000_000),
    }
}

/// Linux's rate estimator (`ip_vs_est.c`): every 2 seconds the counters' growth, turned
/// into a per-second rate in fixed point (connections and packets × 2^10, bytes × 2^5),
/// moves the average a quarter of the way (`avg += (rate - avg) >> 2`); read back rounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimator {
    last: Stats,
    avg: [i64; 5],
}

/// How often the estimators move on, in ms.
pub const ESTIMATOR_PERIOD: u64 = 2000;

impl Estimator {
    /// One 2-second step with the counters as they are now.
    pub fn tick(&mut self, now: &Stats) {
        let cur = now.columns();
        let last = self.last.columns();
        for (k, avg) in self.avg.iter_mut().enumerate() {
            // conns and packets: per 2 s << 9 = per s << 10; bytes: << 4 = per s << 5
            let shift = if k < 3 { 9 } else { 4 };
            let rate = (cur[k].wrapping_sub(last[k]) << shift) as i64;
            *avg += (rate - *avg) >> 2;
        }
        self.last = *now;
    }

    /// The rates: connections, packets in, packets out per second, bytes in, bytes out per
    /// second.
    pub fn rates(&self) -> [u64; 5] {
        let mut r = [0; 5];
        for (k, v) in r.iter_mut().enumerate() {
            let a = self.avg[k].max(0) as u64;
            *v = if k < 3 {
                (a + 0x1ff) >> 10
            } else {
                (a + 0xf) >> 5
            };
        }
        r
    }
}

impl Stats {
    fn columns(&self) -> [u64; 5] {
        [
            self.conns,
            self.inpkts,
            self.outpkts,
            self.inbytes,
            self.outbytes,
        ]
    }
}

/// `ipvsadm -L -n --stats` for these services; `stats` gives each real server's counters,
/// and a service's are their sums.
pub fn list_stats(
    services: &[Service],
    table_size: usize,
    stats: impl Fn(&Service, &Dest) -> Stats,
) -> String {
    list_columns(
        services,
        table_size,
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        |s, d| match d {
            Some(d) => stats(s, d).columns(),
            None => {
                let mut total = Stats::default();
                s.dests.iter().for_each(|d| total.add(&stats(s, d)));
                total.columns()
            }
        },
    )
}

/// `ipvsadm -L -n --rate` for these services; `rates` gives a service's (no real server)
/// or a real server's rates.
pub fn list_rates(
    services: &[Service],
    table_size: usize,
    rates: impl Fn(&Service, Option<&Dest>) -> [u64; 5],
) -> String {
    list_columns(
        services,
        table_size,
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
        rates,
    )
}

/// ipvsadm's five-number listings: a header, then per service its line and its real
/// servers', each number by `print_largenum`.
fn list_columns(
    services: &[Service],
    table_size: usize,
    labels: [&str; 5],
    values: impl Fn(&Service, Option<&Dest>) -> [u64; 5],
) -> String {
    let [a, b, c, d, e] = labels;
    let mut out = format!(
        "IP Virtual Server version 1.2.1 (size={table_size})\n{:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}\n  -> RemoteAddress:Port\n",
        "Prot LocalAddress:Port"
    );
    let row = |out: &mut String, v: [u64; 5]| {
        for n in v {
            out.push_str(&largenum(n));
        }
        out.push('\n');
    };
    for s in services {
        let _ = write!(
            out,
            "{:<33}",
            format!("{}  {}:{}", proto_name(s.proto), s.vip, s.port)
        );
        row(&mut out, values(s, None));
        for d in &s.dests {
            let _ = write!(out, "  -> {:<28}", format!("{}:{}", d.addr, d.port));
            row(&mut out, values(s, Some(d)));
        }
    }
    out
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        _ => "SCTP",
    }
}

/// One line of `ipvsadm -L -c -n`: protocol, seconds left, state, client, virtual address,
/// real server.
pub fn conn_line(
    proto: u8,
    expires_in_s: u64,
    state: &str,
    client: (std::net::Ipv4Addr, u16),
    virt: (std::net::Ipv4Addr, u16),
    real: (std::net::Ipv4Addr, u16),
) -> String {
    let at = |(a, p): (std::net::Ipv4Addr, u16)| format!("{a}:{p}");
    let (c, v, r) = (at(client), at(virt), at(real));
    format!(
        "{:<3} {:02}:{:02}  {state:<11} {c:<18} {v:<18} {r}\n",
        proto_name(proto),
        expires_in_s / 60,
        expires_in_s % 60,
    )
}

/// The header of `ipvsadm -L -c -n`.
pub const CONN_HEADER: &str =
    "IPVS connection entries\npro expire state       source             virtual            destination\n";

/// `ipvsadm -L -n` for these services.
pub fn list(services: &[Service], table_size: usize) -> String {
    let mut out = format!(
        "IP Virtual Server version 1.2.1 (size={table_size})\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
    for s in services {
        let proto = proto_name(s.proto);
        let _ = write!(out, "{proto}  {}:{} {}", s.vip, s.port, s.scheduler_name);
        if let Some(t) = s.persistent {
            let _ = write!(out, " persistent {t}");
        }
        out.push('\n');
        for d in &s.dests {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                format!("{}:{}", d.addr, d.port),
                d.forward.name(),
                d.weight,
                d.active,
                d.inactive
            );
        }
    }
    out
}

/// IPVS's own TCP states (`ip_vs_proto_tcp.c`), for connections it forwards by direct
/// routing or tunnelling, whose replies it never sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    None,
    Established,
    SynSent,
    SynRecv,
    FinWait,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    SynAck,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            None => "NONE",
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait => "FIN_WAIT",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            SynAck => "SYNACK",
        }
    }

    /// The kernel's default timeout in this state, in seconds (`tcp_timeouts`).
    pub fn timeout(self) -> u64 {
        use TcpState::*;
        match self {
            None => 2,
            Established => 15 * 60,
            SynSent | FinWait | TimeWait | Listen | SynAck => 2 * 60,
            SynRecv | CloseWait => 60,
            Close => 10,
            LastAck => 30,
        }
    }

    /// The next state after a packet from the client with `flags` (TCP flag bits), by the
    /// INPUT-ONLY table: the director sees one direction of these connections. The flag
    /// that picks the row: RST, else SYN, else FIN, else ACK; none changes nothing.
    pub fn next_input_only(self, flags: u8) -> TcpState {
        use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};
        use TcpState::*;
        // the INPUT-ONLY rows of `tcp_states`; columns are the current state
        #[rustfmt::skip]
        const T: [[TcpState; 11]; 4] = [
            //       sNO      sES          sSS          sSR          sFW      sTW       sCL      sCW        sLA      sLI     sSA
            /*syn*/ [SynRecv, Established, Established, SynRecv,     SynRecv, SynRecv,  SynRecv, SynRecv,   SynRecv, SynRecv, SynRecv],
            /*fin*/ [Close,   FinWait,     SynSent,     TimeWait,    FinWait, TimeWait, Close,   CloseWait, LastAck, Listen, TimeWait],
            /*ack*/ [Close,   Established, SynSent,     Established, FinWait, TimeWait, Close,   CloseWait, Close,   Listen, Established],
            /*rst*/ [Close,   Close,       Close,       SynRecv,     Close,   Close,    Close,   Close,     LastAck, Listen, Close],
        ];
        let row = if flags & RST != 0 {
            3
        } else if flags & SYN != 0 {
            0
        } else if flags & FIN != 0 {
            1
        } else if flags & ACK != 0 {
            2
        } else {
            return self;
        };
        T[row][self as usize]
    }
}

/// The UDP (and other non-TCP) timeout of an IPVS connection, in seconds.
pub const UDP_TIMEOUT: u64 = 5 * 60;

/// A connection IPVS forwards without conntrack: client (protocol, address, port) to a
/// virtual service (address, port).
pub type ConnKey = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// the datapath's binding (service and real server) of this connection
    pub binding: u32,
    /// how it goes to its real server, as chosen when it opened (a reload keeps it)
    pub forward: Forward,
    pub state: TcpState,
    /// when it expires, in ms
    pub expires: u64,
}

impl Conn {
    /// Counted among the real server's active connections (else inactive), as
    /// `IP_VS_CONN_F_INACTIVE` says: a TCP connection in ESTABLISHED; never a UDP one.
    pub fn active(&self, proto: u8) -> bool {
        proto == 6 && self.state == TcpState::Established
    }
}

/// IPVS's connection table for direct routing and tunnelling (`ip_vs_conn_tab`): looked up
/// by the client's tuple, refreshed by each packet, expired by a sweep once per second of
/// packet time (not per packet).
#[derive(Debug, Default)]
pub struct Conns {
    map: std::collections::HashMap<ConnKey, Conn>,
    next_sweep: u64,
}

/// A change in a binding's (active, inactive) counts.
pub type CountChange = (u32, i32, i32);

impl Conns {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live connection of `key` at `now`, after a packet with TCP `flags` (0 for other
    /// protocols): its state moved on and its timer restarted. Count changes go to `changes`.
    pub fn touch(
        &mut self,
        key: ConnKey,
        now: u64,
        flags: u8,
        changes: &mut Vec<CountChange>,
    ) -> Option<Conn> {
        let c = self.map.get_mut(&key)?;
        if c.expires <= now {
            let c = self.map.remove(&key)?;
            changes.push(uncount(&c, key.0));
            return None;
        }
        let before = c.active(key.0);
        if key.0 == 6 {
            c.state = c.state.next_input_only(flags);
            c.expires = now + c.state.timeout() * 1000;
        } else {
            c.expires = now + UDP_TIMEOUT * 1000;
        }
        let after = c.active(key.0);
        if before != after {
            let d = if after { 1 } else { -1 };
            changes.push((c.binding, d, -d));
        }
        Some(*c)
    }

    /// A new connection from its first packet (TCP `flags`).
    pub fn open(
        &mut self,
        key: ConnKey,
        binding: u32,
        forward: Forward,
        now: u64,
        flags: u8,
        changes: &mut Vec<CountChange>,
    ) -> Conn {
        if let Some(old) = self.map.remove(&key) {
            changes.push(uncount(&old, key.0));
        }
        let (state, secs) = if key.0 == 6 {
            let s = TcpState::None.next_input_only(flags);
            (s, s.timeout())
        } else {
            (TcpState::None, UDP_TIMEOUT)
        };
        let c = Conn {
            binding,
            forward,
            state,
            expires: now + secs * 1000,
        };
        let a = i32::from(c.active(key.0));
        changes.push((binding, a, 1 - a));
        self.map.insert(key, c);
        c
    }

    /// Removes the connections expired at `now`, at most once per second of packet time
    /// unless `force`d.
    pub fn sweep(&mut self, now: u64, force: bool, changes: &mut Vec<CountChange>) {
        if !force && now < self.next_sweep {
            return;
        }
        self.next_sweep = now + 1000;
        self.map.retain(|k, c| {
            let keep = c.expires > now;
            if !keep {
                changes.push(uncount(c, k.0));
            }
            keep
        });
    }

    /// Every connection, sorted by key (`ipvsadm -L -c`).
    pub fn entries(&self) -> Vec<(ConnKey, Conn)> {
        let mut v: Vec<_> = self.map.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

fn uncount(c: &Conn, proto: u8) -> CountChange {
    if c.active(proto) {
        (c.binding, -1, 0)
    } else {
        (c.binding, 0, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(weights: &[u32]) -> Vec<Dest> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Dest::new(Ipv4Addr::new(10, 0, 1, 1 + i as u8), 80, w))
            .collect()
    }

    fn run(name: &str, d: &mut [Dest], n: usize) -> Vec<usize> {
        let mut s = Scheduler::new(name, d).unwrap();
        (0..n)
            .map(|k| {
                s.schedule(
                    d,
                    Ipv4Addr::new(192, 0, 2, k as u8),
                    1000,
                    Ipv4Addr::new(198, 51, 100, 10),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn stats_listing_matches_ipvsadm() {
        let s = Service::new(
            6,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
            "wlc",
            vec![Dest::new(Ipv4Addr::new(10, 244, 1, 23), 8080, 1)],
        )
        .unwrap();
        let l = list_stats(&[s], 4096, |_, _| Stats {
            conns: 169,
            inpkts: 1211,
            outpkts: 1100,
            inbytes: 199_557,
            outbytes: 650_000,
        });
        assert_eq!(
            l,
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\nTCP  10.0.0.100:80                     169     1211     1100   199557   650000\n  -> 10.244.1.23:8080                  169     1211     1100   199557   650000\n"
        );
        assert_eq!(largenum(99_999_999), " 99999999");
        assert_eq!(largenum(123_456_789), "  123456K");
        assert_eq!(largenum(5_000_000_000), "    5000M");
    }

    #[test]
    fn rr_cycles_and_skips_quiesced() {
        let mut d = dests(&[1, 1, 1]);
        assert_eq!(run("rr", &mut d, 5), vec![0, 1, 2, 0, 1]);
        d[1].weight = 0;
        assert_eq!(run("rr", &mut d, 4), vec![0, 2, 0, 2]);
    }

    #[test]
    fn wrr_follows_the_kernel_sequence() {
        // weights 4, 3, 2: gcd 1, mw 4; cw 4: A; cw 3: A B; cw 2: A B C; cw 1: A B C
        let mut d = dests(&[4, 3, 2]);
        assert_eq!(run("wrr", &mut d, 9), vec![0, 0, 1, 0, 1, 2, 0, 1, 2]);
        // weights 4, 2: gcd 2, mw 3: cw 3: A; cw 1: A B
        let mut d = dests(&[4, 2]);
        assert_eq!(run("wrr", &mut d, 6), vec![0, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn least_connection_schedulers() {
        let mut d = dests(&[1, 1, 1]);
        d[0].active = 2;
        d[1].active = 1;
        d[2].inactive = 200; // overheads 512, 256, 200
        assert_eq!(run("lc", &mut d.clone(), 1), vec![2]);
        d[2].inactive = 600;
        assert_eq!(run("lc", &mut d.clone(), 1), vec![1]);
        // wlc: overhead / weight; the heavier server wins with more connections
        let mut w = dests(&[1, 3]);
        w[0].active = 1; // 256 / 1
        w[1].active = 2; // 512 / 3
        assert_eq!(run("wlc", &mut w.clone(), 1), vec![1]);
        // sed: (active + 1) / weight; nq: an idle server first
        let mut s = dests(&[1, 2]);
        s[0].active = 0;
        s[1].active = 1; // sed: 1/1 vs 2/2: tie -> first
        assert_eq!(run("sed", &mut s.clone(), 1), vec![0]);
        let mut q = dests(&[5, 1]);
        q[0].active = 3;
        assert_eq!(
            run("nq", &mut q, 1),
            vec![1],
            "the idle server, whatever its weight"
        );
    }

    #[test]
    fn source_hashing_is_sticky_and_weighted() {
        let mut d = dests(&[2, 1]);
        let t = hash_table(&d, true);
        assert_eq!(
            &t[..6],
            &[Some(0), Some(0), Some(1), Some(0), Some(0), Some(1)]
        );
        let mut s = Scheduler::new("sh", &d).unwrap();
        let c = Ipv4Addr::new(203, 0, 113, 5);
        let a = s.schedule(&d, c, 1, Ipv4Addr::UNSPECIFIED);
        for _ in 0..5 {
            assert_eq!(s.schedule(&d, c, 2, Ipv4Addr::UNSPECIFIED), a);
        }
        // its bucket's server quiesced: no fallback, no server
        d[a.unwrap()].weight = 0;
        assert_eq!(s.schedule(&d, c, 1, Ipv4Addr::UNSPECIFIED), None);
    }

    #[test]
    fn maglev_balances_and_moves_about_one_nth_when_a_server_goes() {
        let n = 5;
        let d = dests(&vec![1; n]);
        let t = maglev(&d, MH_TAB_SIZE);
        let mut share = vec![0usize; n];
        for s in t.iter().flatten() {
            share[*s] += 1;
        }
        let (lo, hi) = (MH_TAB_SIZE / n, MH_TAB_SIZE.div_ceil(n));
        assert!(share.iter().all(|&c| c >= lo && c <= hi), "{share:?}");
        // remove the third server: its slots move, and few others do
        let mut fewer = d.clone();
        fewer.remove(2);
        let t2 = maglev(&fewer, MH_TAB_SIZE);
        let name = |tab: &[Option<usize>], ds: &[Dest], i: usize| tab[i].map(|k| ds[k].addr);
        let moved = (0..MH_TAB_SIZE)
            .filter(|&i| name(&t, &d, i) != name(&t2, &fewer, i))
            .count();
        let frac = moved as f64 / MH_TAB_SIZE as f64;
        assert!(
            (0.19..0.30).contains(&frac),
            "moved {frac:.3} of slots; about 1/{n} expected"
        );
        // weights set shares
        let w = maglev(&dests(&[3, 1]), MH_TAB_SIZE);
        let a = w.iter().filter(|s| **s == Some(0)).count() as f64 / MH_TAB_SIZE as f64;
        assert!((a - 0.75).abs() < 0.01, "{a}");
    }

    #[test]
    fn ipvsadm_listing() {
        let mut s = Service::new(
            6,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
            "wlc",
            vec![Dest::new(Ipv4Addr::new(10, 244, 1, 23), 8080, 1)],
        )
        .unwrap();
        s.persistent = Some(300);
        s.dests[0].active = 3;
        s.dests[0].inactive = 12;
        let l = list(&[s], 4096);
        assert_eq!(
            l,
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  10.0.0.100:80 wlc persistent 300\n  -> 10.244.1.23:8080             Masq    1      3          12        \n"
        );
    }

    /// A direct-routing connection's states by hand from the INPUT-ONLY table, with the
    /// counts they give: SYN -> SYN_RECV (inactive), ACK -> ESTABLISHED (active),
    /// FIN -> FIN_WAIT, ACK -> FIN_WAIT, RST -> CLOSE; expiry by the state's timeout.
    #[test]
    fn input_only_states_and_timers() {
        use crate::wire::tcp::flags::{ACK, FIN, RST, SYN};
        use TcpState::*;
        let mut s = None;
        let mut seen = vec![];
        for f in [SYN, ACK, ACK, FIN | ACK, ACK, RST | ACK, SYN] {
            s = s.next_input_only(f);
            seen.push(s);
        }
        assert_eq!(
            seen,
            [
                SynRecv,
                Established,
                Established,
                FinWait,
                FinWait,
                Close,
                SynRecv
            ]
        );
        // an ACK that opens nothing closes; no flag changes nothing
        assert_eq!(None.next_input_only(ACK), Close);
        assert_eq!(Established.next_input_only(0), Established);

        let a = Ipv4Addr::new(192, 0, 2, 1);
        let v = Ipv4Addr::new(198, 51, 100, 1);
        let key = (6, a, 1000, v, 80);
        let mut conns = Conns::default();
        let mut ch = vec![];
        let c = conns.open(key, 7, Forward::Dr, 0, SYN, &mut ch);
        assert_eq!((c.state, c.expires), (SynRecv, 60_000));
        assert_eq!(ch, [(7, 0, 1)], "a new connection counts inactive");
        ch.clear();
        let c = conns.touch(key, 1000, ACK, &mut ch).unwrap();
        assert_eq!((c.state, c.expires), (Established, 1000 + 900_000));
        assert_eq!(ch, [(7, 1, -1)], "established: inactive to active");
        ch.clear();
        // past its timer it is gone, and uncounted
        assert!(conns.touch(key, 901_000, ACK, &mut ch).is_none());
        assert_eq!(ch, [(7, -1, 0)]);
        assert!(conns.is_empty());
        // UDP: five minutes, never active
        let u = (17, a, 53, v, 53);
        conns.open(u, 2, Forward::Tunnel, 0, 0, &mut ch);
        ch.clear();
        conns.sweep(299_999, true, &mut ch);
        assert_eq!(conns.len(), 1);
        conns.sweep(300_000, true, &mut ch);
        assert_eq!((conns.len(), ch), (0, vec![(2, 0, -1)]));
    }

    /// The kernel's estimator by hand: 100 packets of 100 bytes a second in, one new
    /// connection a second. Rate per 2 s step << 9 (packets) or << 4 (bytes), the average
    /// moving a quarter of the way, read back rounded: 25, 44, 58 packets/s; 2500, 4375,
    /// 5781 bytes/s; connections 256, 448, 592 / 1024 per second: 0, 0, 1.
    #[test]
    fn rate_estimator_follows_the_kernel() {
        let mut e = Estimator::default();
        let mut st = Stats::default();
        let mut seen = vec![];
        for _ in 0..3 {
            st.conns += 2;
            st.inpkts += 200;
            st.inbytes += 20_000;
            e.tick(&st);
            seen.push(e.rates());
        }
        assert_eq!(
            seen,
            [
                [0, 25, 0, 2500, 0],
                [0, 44, 0, 4375, 0],
                [1, 58, 0, 5781, 0]
            ]
        );
        // constant traffic converges to its rate; none decays to 0
        for _ in 0..60 {
            st.conns += 2;
            st.inpkts += 200;
            st.inbytes += 20_000;
            e.tick(&st);
        }
        assert_eq!(e.rates(), [1, 100, 0, 10_000, 0]);
        for _ in 0..60 {
            e.tick(&st);
        }
        assert_eq!(e.rates(), [0; 5]);
    }

    #[test]
    fn rate_and_connection_listings_match_ipvsadm() {
        let mut svc = Service::new(
            6,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
            "rr",
            vec![Dest::new(Ipv4Addr::new(10, 0, 0, 2), 80, 1)],
        )
        .unwrap();
        svc.dests[0].forward = Forward::Dr;
        let l = list_rates(&[svc], 4096, |_, d| {
            if d.is_none() {
                [3, 250, 0, 30_000, 0]
            } else {
                [3, 250, 0, 123_456_789, 0]
            }
        });
        assert_eq!(
            l,
            concat!(
                "IP Virtual Server version 1.2.1 (size=4096)\n",
                "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n",
                "  -> RemoteAddress:Port\n",
                "TCP  10.0.0.100:80                       3      250        0    30000        0\n",
                "  -> 10.0.0.2:80                         3      250        0  123456K        0\n",
            )
        );
        let c = conn_line(
            6,
            899,
            "ESTABLISHED",
            (Ipv4Addr::new(192, 0, 2, 10), 51234),
            (Ipv4Addr::new(10, 0, 0, 100), 80),
            (Ipv4Addr::new(10, 0, 0, 2), 80),
        );
        assert_eq!(
            format!("{CONN_HEADER}{c}"),
            "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 192.0.2.10:51234   10.0.0.100:80      10.0.0.2:80\n"
        );
    }
}
