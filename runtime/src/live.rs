//! Live packet sources and the host facts they need: NFQUEUE (a worker per queue over
//! [`crate::nfqueue`]'s netlink sockets), the kernel's IPv4 routes (`/proc/net/route`), this host's addresses and
//! interface names (libc FFI).

use crate::datapath::{Datapath, Link};
use crate::nfqueue;
use fwc_compiler::interp::Fate;
use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The kernel's IPv4 routing table: the output interface (and gateway) of a destination.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// (destination, mask, interface, gateway or 0), longest mask first
    routes: Vec<(u32, u32, String, u32)>,
    /// each interface's addresses, the first its preferred source
    pub sources: Vec<(String, Ipv4Addr)>,
}

impl Routes {
    /// Parses `/proc/net/route` (addresses in host byte order of a little-endian dump).
    pub fn parse(text: &str) -> Routes {
        let mut routes: Vec<(u32, u32, String, u32)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
                let gw = u32::from_str_radix(f.get(2)?, 16).ok()?;
                let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
                // the file prints the network-order bytes read as a little-endian integer
                let ne = |v: u32| u32::from_be_bytes(v.to_le_bytes());
                Some((ne(dest), ne(mask), f.first()?.to_string(), ne(gw)))
            })
            .collect();
        routes.sort_by_key(|(_, m, _, _)| std::cmp::Reverse(m.count_ones()));
        Routes {
            routes,
            sources: Vec::new(),
        }
    }

    /// The kernel's routes, with this host's interface addresses as sources.
    pub fn from_proc() -> io::Result<Routes> {
        let mut r = Routes::parse(&std::fs::read_to_string("/proc/net/route")?);
        r.sources = interface_addresses()?;
        Ok(r)
    }

    /// The address a packet this host sends to `a` leaves from: the first address of the
    /// interface it leaves by.
    pub fn source(&self, a: Ipv4Addr) -> Option<Ipv4Addr> {
        let oif = self.lookup(a)?;
        self.sources.iter().find(|(i, _)| i == oif).map(|(_, s)| *s)
    }

    /// The interface a packet to `a` leaves by (longest prefix match).
    pub fn lookup(&self, a: Ipv4Addr) -> Option<&str> {
        self.next_hop(a).map(|(i, _)| i)
    }

    /// The interface a packet to `a` leaves by and the address of its next hop: the route's
    /// gateway, or `a` itself on a directly connected network.
    pub fn next_hop(&self, a: Ipv4Addr) -> Option<(&str, Ipv4Addr)> {
        let n = u32::from(a);
        self.routes
            .iter()
            .find(|(d, m, _, _)| n & m == *d)
            .map(|(_, _, i, g)| (i.as_str(), if *g == 0 { a } else { Ipv4Addr::from(*g) }))
    }
}

/// The name of an interface index (`if_indextoname`).
pub fn ifname(index: u32) -> Option<String> {
    if index == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; on success it holds a
    // NUL-terminated name, on failure the call returns NULL and `buf` is not read.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname succeeded, so `buf` holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// This host's IPv4 addresses (`getifaddrs`).
pub fn local_addresses() -> io::Result<Vec<Ipv4Addr>> {
    Ok(interface_addresses()?.into_iter().map(|(_, a)| a).collect())
}

/// This host's IPv4 addresses with their interfaces' names (`getifaddrs`).
pub fn interface_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `head` on success; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: `ifa_name` of a getifaddrs node is a NUL-terminated string.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                out.push((
                    name.to_string_lossy().into_owned(),
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                ));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once, after its last use.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Set by SIGINT and SIGTERM once [`stop_on_signals`] installed the handler.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Set by SIGHUP once [`stop_on_signals`] installed the handler: reload the program.
pub static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// Makes SIGINT and SIGTERM set [`STOP`] (so that a live run ends cleanly: queues unbound,
/// statistics printed) and SIGHUP set [`RELOAD`].
pub fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is an `extern "C"` function that only stores to an atomic,
        // which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

#[derive(Debug, Clone, Default)]
pub struct NfqStats {
    pub packets: u64,
    /// (queue, packets served) for each queue
    pub per_queue: Vec<(u16, u64)>,
    pub accepted: u64,
    pub dropped: u64,
    pub modified: u64,
}

/// What a packet handler decides for one queued packet.
pub enum QueueVerdict {
    Accept,
    /// accept with these bytes instead of the packet's
    AcceptModified(Vec<u8>),
    Drop,
    /// hand to another queue (`bypass`: accepted when nobody listens there)
    Queue {
        num: u16,
        bypass: bool,
    },
}

impl From<QueueVerdict> for nfqueue::Answer {
    fn from(v: QueueVerdict) -> nfqueue::Answer {
        let (verdict, payload) = match v {
            QueueVerdict::Accept => (nfqueue::Verdict::Accept, None),
            QueueVerdict::AcceptModified(b) => (nfqueue::Verdict::Accept, Some(b)),
            QueueVerdict::Drop => (nfqueue::Verdict::Drop, None),
            QueueVerdict::Queue { num, bypass } => (nfqueue::Verdict::Queue { num, bypass }, None),
        };
        nfqueue::Answer { verdict, payload }
    }
}

/// A batch of queued packets: (bytes, input interface index, output interface index).
pub type QueuedBatch<'a> = [(&'a [u8], u32, u32)];

/// Serves NFQUEUE queues until `stop` is set: one worker thread per queue, each on its own
/// netlink socket, draining up to [`nfqueue::BATCH`] waiting packets at a time, handing
/// them to `handle` together (which pushes one verdict per packet, in order) and sending
/// their verdicts in one datagram (runs of equal plain verdicts as one batch verdict). An
/// idle worker sleeps in `poll`. `between` runs on the calling thread about every
/// millisecond until the workers end. Returns the packets each queue served; a worker's
/// error stops the others and is returned.
pub fn serve_queues(
    queues: &[u16],
    fail_open: bool,
    stop: &AtomicBool,
    handle: &(dyn Fn(&QueuedBatch<'_>, &mut Vec<QueueVerdict>) + Sync),
    between: &mut dyn FnMut(),
) -> io::Result<Vec<(u16, u64)>> {
    let failed = AtomicBool::new(false);
    let done = |failed: &AtomicBool| stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        let workers: Vec<_> = queues
            .iter()
            .map(|&num| {
                let failed = &failed;
                s.spawn(move || -> io::Result<u64> {
                    let r = serve_one(num, fail_open, &|| done(failed), handle);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        while !done(&failed) && !workers.iter().all(|w| w.is_finished()) {
            between();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut served = Vec::new();
        let mut err = None;
        for (w, &num) in workers.into_iter().zip(queues) {
            match w.join() {
                Ok(Ok(n)) => served.push((num, n)),
                Ok(Err(e)) => err = err.or(Some(e)),
                Err(_) => err = err.or(Some(io::Error::other("an NFQUEUE worker panicked"))),
            }
        }
        err.map_or(Ok(served), Err)
    })
}

/// One queue's worker.
fn serve_one(
    num: u16,
    fail_open: bool,
    done: &dyn Fn() -> bool,
    handle: &(dyn Fn(&QueuedBatch<'_>, &mut Vec<QueueVerdict>) + Sync),
) -> io::Result<u64> {
    let mut q = nfqueue::Queue::open(num, fail_open, 4096)?;
    let mut served = 0u64;
    let mut verdicts = Vec::with_capacity(nfqueue::BATCH);
    let mut answers: Vec<nfqueue::Answer> = Vec::with_capacity(nfqueue::BATCH);
    while !done() {
        if q.recv_batch()?.is_empty() {
            q.wait(Duration::from_millis(20))?;
            continue;
        }
        {
            let batch: Vec<(&[u8], u32, u32)> = q
                .batch()
                .iter()
                .map(|p| (q.payload(p), p.indev, p.outdev))
                .collect();
            verdicts.clear();
            handle(&batch, &mut verdicts);
            served += batch.len() as u64;
            // a handler that answered too few: the rest are accepted as they are
            verdicts.resize_with(batch.len(), || QueueVerdict::Accept);
        }
        answers.clear();
        answers.extend(verdicts.drain(..).map(nfqueue::Answer::from));
        q.answer(&answers)?;
    }
    Ok(served)
}

/// Interface names by index, looked up once (`if_indextoname` is a system call).
#[derive(Default)]
struct IfNames(std::collections::HashMap<u32, Option<String>>);

impl IfNames {
    fn learn(&mut self, index: u32) {
        self.0.entry(index).or_insert_with(|| ifname(index));
    }
    fn get(&self, index: u32) -> Option<&str> {
        self.0.get(&index).and_then(|n| n.as_deref())
    }
}

/// Serves NFQUEUE queues until `stop` is set: each queued IPv4 packet goes through the
/// datapath and gets its verdict (with the rewritten payload when NAT changed it). One
/// worker thread per queue; they share the datapath (one batch at a time holds it). With
/// `fail_open` the kernel accepts packets when a queue is full instead of dropping them.
///
/// `between` runs about every millisecond with the datapath and its clock (ms): the caller
/// serves its control socket and reloads there.
pub fn run_nfqueue(
    dp: &mut Datapath,
    queues: &[u16],
    fail_open: bool,
    stop: &AtomicBool,
    between: &mut dyn FnMut(&mut Datapath, u64),
) -> io::Result<NfqStats> {
    let start = Instant::now();
    let shared = std::sync::Mutex::new((dp, NfqStats::default(), IfNames::default()));
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let handle = |batch: &QueuedBatch<'_>, out: &mut Vec<QueueVerdict>| {
        let mut g = lock();
        let (dp, stats, names) = &mut *g;
        for &(payload, indev, outdev) in batch {
            // queued before routing, a packet has no output interface yet: the datapath's
            // routing (`Datapath::routes`) gives it one after prerouting
            names.learn(indev);
            names.learn(outdev);
            let now = start.elapsed().as_millis() as u64;
            let d = dp.process(
                now,
                Link::RawIp,
                payload,
                names.get(indev),
                names.get(outdev),
            );
            out.push(match (d.fate, d.frame) {
                // a verdict cannot name a next hop: IPVS direct routing needs `--afpacket`
                (Fate::Accept, Some(_)) if d.next_hop.is_some() => {
                    stats.dropped += 1;
                    QueueVerdict::Drop
                }
                (Fate::Accept, Some(frame)) => {
                    stats.accepted += 1;
                    if frame != payload {
                        stats.modified += 1;
                        QueueVerdict::AcceptModified(frame)
                    } else {
                        QueueVerdict::Accept
                    }
                }
                (Fate::Queue { num, bypass }, _) => QueueVerdict::Queue { num, bypass },
                _ => {
                    stats.dropped += 1;
                    QueueVerdict::Drop
                }
            });
        }
    };
    let mut tick = || between(lock().0, start.elapsed().as_millis() as u64);
    let per_queue = serve_queues(queues, fail_open, stop, &handle, &mut tick)?;
    let mut stats = shared.into_inner().unwrap_or_else(|e| e.into_inner()).1;
    stats.packets = per_queue.iter().map(|q| q.1).sum();
    stats.per_queue = per_queue;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_from_proc_format() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth1\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth2\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = Routes::parse(text);
        assert_eq!(r.lookup(Ipv4Addr::new(10, 0, 0, 7)), Some("eth1"));
        assert_eq!(r.lookup(Ipv4Addr::new(192, 168, 100, 3)), Some("eth2"));
        assert_eq!(r.lookup(Ipv4Addr::new(8, 8, 8, 8)), Some("eth0"));
        assert_eq!(
            r.next_hop(Ipv4Addr::new(8, 8, 8, 8)),
            Some(("eth0", Ipv4Addr::new(10, 0, 2, 1)))
        );
        assert_eq!(
            r.next_hop(Ipv4Addr::new(10, 0, 0, 7)),
            Some(("eth1", Ipv4Addr::new(10, 0, 0, 7)))
        );
    }

    #[test]
    fn this_host_has_a_loopback_address_and_interface_one_is_named() {
        assert!(local_addresses().unwrap().contains(&Ipv4Addr::LOCALHOST));
        assert!(ifname(1).is_some(), "interface 1 (lo) has a name");
        assert_eq!(ifname(0), None);
    }
}
