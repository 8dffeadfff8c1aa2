//! AF_PACKET mode: fwc as a userspace router between interfaces.
//!
//! A raw packet socket per interface receives every frame the interface sees (copies: the
//! kernel still gets them too). Each IPv4 frame runs the datapath's whole path; a packet it
//! forwards leaves by the interface of the kernel's route to its (translated) destination,
//! with that interface's MAC address as source and the next hop's (from the kernel's
//! neighbour table, `/proc/net/arp`) as destination.
//!
//! The kernel must not handle the same IP packets itself: with `net.ipv4.ip_forward=0` it
//! does not forward them, but it would still answer them (host-unreachable errors for
//! packets it will not forward, resets for replies to connections masqueraded behind its
//! own address), so its IP input on the served interfaces is dropped too
//! (`iptables -t raw -A PREROUTING -i IF -j DROP`; AF_PACKET sees frames before that).
//! ARP stays the kernel's: it answers for its addresses and resolves next hops.

use crate::datapath::{Datapath, Link};
use crate::live::Routes;
use fwc_compiler::interp::{Fate, PathKind};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `ETH_P_ALL` in network byte order, as `socket` and `sockaddr_ll` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// One interface's raw socket.
pub struct Port {
    pub name: String,
    pub mac: [u8; 6],
    fd: OwnedFd,
}

fn sys_file(name: &str, what: &str) -> io::Result<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{what}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("interface `{name}`: {e}")))
}

impl Port {
    /// Opens a packet socket bound to interface `name`.
    pub fn open(name: &str) -> io::Result<Port> {
        let index: i32 = sys_file(name, "ifindex")?
            .parse()
            .map_err(|_| io::Error::other(format!("interface `{name}`: bad ifindex")))?;
        let mut mac = [0u8; 6];
        let text = sys_file(name, "address")?;
        for (m, h) in mac.iter_mut().zip(text.split(':')) {
            *m = u8::from_str_radix(h, 16)
                .map_err(|_| io::Error::other(format!("interface `{name}`: bad address")))?;
        }
        // SAFETY: plain socket(2) call; the result is checked before it is used.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a socket we just opened and own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is a valid value of the type.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = index;
        // SAFETY: `sll` is a sockaddr_ll and the length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let on: libc::c_int = 1;
        // SAFETY: `on` is a c_int, as PACKET_AUXDATA takes, and the length is its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Port {
            name: name.to_string(),
            mac,
            fd,
        })
    }

    /// The next frame received (not one this host sent), if any is waiting: its length, and
    /// whether its transport checksum is still to be computed (`TP_STATUS_CSUMNOTREADY`: a
    /// frame from a local sender or a virtual interface with checksum offload).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
        loop {
            // SAFETY: an all-zero sockaddr_ll is a valid value of the type.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // room for one control message holding a tpacket_auxdata (u64s keep it aligned)
            let mut control = [0u64; 8];
            // SAFETY: an all-zero msghdr is a valid value of the type; its pointers are set
            // below to live buffers of the lengths given.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: `msg` describes `from`, `buf` (through `iov`) and `control`, all alive
            // and writable for the lengths it gives.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue; // our own (or the kernel's) transmissions
            }
            let mut partial = false;
            // SAFETY: the CMSG_* macros walk the control buffer the kernel filled in, within
            // `msg.msg_controllen`; a PACKET_AUXDATA message carries a tpacket_auxdata, read
            // unaligned.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux = std::ptr::read_unaligned(
                            libc::CMSG_DATA(c) as *const libc::tpacket_auxdata
                        );
                        partial = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            return Ok(Some((n as usize, partial)));
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is readable for its length; the socket is bound to its interface.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Completes the transport checksum of a forwarded frame that arrived with a partial one
/// (checksum offload: the pseudo-header only, the rest left to the card, which a packet
/// socket would send as it is). Only frames the kernel flags so are completed: a packet
/// that arrived with a wrong checksum leaves with it, as from a kernel router.
fn finish_checksum(frame: &mut [u8]) {
    use crate::wire::{checksum, ipv4};
    let Some(ipb) = frame.get_mut(14..) else {
        return;
    };
    let Ok(mut ip) = ipv4::Packet::new_checked(&mut *ipb) else {
        return;
    };
    if ip.frag_offset() != 0 || ip.more_frags() {
        return;
    }
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let seg = ip.payload_mut();
    let at = match proto {
        ipv4::PROTO_TCP if seg.len() >= 20 => 16,
        ipv4::PROTO_UDP if seg.len() >= 8 => 6,
        _ => return,
    };
    seg[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = checksum::transport(src, dst, proto, seg);
    if proto == ipv4::PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The kernel's neighbour table (`/proc/net/arp`): complete entries only, on the ports
/// served, keyed by port index.
fn neighbours(ports: &[Port]) -> HashMap<(usize, Ipv4Addr), [u8; 6]> {
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip: Ipv4Addr = f.first()?.parse().ok()?;
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None; // incomplete
            }
            let mut mac = [0u8; 6];
            for (m, h) in mac.iter_mut().zip(f.get(3)?.split(':')) {
                *m = u8::from_str_radix(h, 16).ok()?;
            }
            let dev = f.get(5)?;
            let port = ports.iter().position(|p| p.name == *dev)?;
            Some(((port, ip), mac))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RouterStats {
    pub frames: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// left to the kernel: for this host, or not IPv4
    pub local: u64,
    /// forwarded packets whose next hop's address never resolved
    pub unresolved: u64,
}

/// A forwarded frame waiting for its next hop's MAC address.
struct Pending {
    port: usize,
    next_hop: Ipv4Addr,
    frame: Vec<u8>,
    until: Instant,
}

/// Routes frames between `ports` through the datapath until `stop` is set. `routes` is the
/// kernel's routing table; `between` runs between frames.
pub fn run_router(
    dp: &mut Datapath,
    ports: &[Port],
    routes: &Routes,
    stop: &AtomicBool,
    between: &mut dyn FnMut(&mut Datapath, u64),
) -> io::Result<RouterStats> {
    let start = Instant::now();
    let mut stats = RouterStats::default();
    let mut buf = vec![0u8; 65_536];
    let mut arp = neighbours(ports);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // a datagram to a next hop that is not in the neighbour table makes the kernel resolve it
    let prod = UdpSocket::bind("0.0.0.0:0")?;
    let mut fds: Vec<libc::pollfd> = ports
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_millis() as u64;
        between(dp, now);
        if !pending.is_empty() {
            arp = neighbours(ports);
            let t = Instant::now();
            let mut keep = VecDeque::new();
            while let Some(p) = pending.pop_front() {
                let key = (p.port, p.next_hop);
                if let Some(mac) = arp.get(&key) {
                    let mut f = p.frame;
                    f[..6].copy_from_slice(mac);
                    ports[p.port].send(&f)?;
                    stats.forwarded += 1;
                } else if p.until > t {
                    keep.push_back(p);
                } else {
                    stats.unresolved += 1;
                }
            }
            pending = keep;
        }
        let timeout = if pending.is_empty() { 10 } else { 2 };
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, port) in ports.iter().enumerate() {
            if fds[i].revents & libc::POLLIN == 0 {
                continue;
            }
            while let Some((n, partial)) = port.recv(&mut buf)? {
                stats.frames += 1;
                let frame = &buf[..n];
                // ARP and other frames that are not IPv4 are the kernel's
                if n < 14 || frame[12..14] != [0x08, 0x00] {
                    stats.local += 1;
                    continue;
                }
                // a frame addressed to another station's MAC is not ours to route
                if frame[..6] != port.mac && frame[0] & 1 == 0 {
                    continue;
                }
                let now = start.elapsed().as_millis() as u64;
                let d = dp.process(now, Link::Ethernet, frame, Some(&port.name), None);
                match (d.fate, d.path, d.frame) {
                    (Fate::Accept, Some(PathKind::Forward), Some(mut out)) => {
                        // IPVS direct routing: to the real server's MAC, the packet unchanged
                        let dst = d
                            .next_hop
                            .unwrap_or_else(|| Ipv4Addr::new(out[30], out[31], out[32], out[33]));
                        let Some((ifc, hop)) = routes.next_hop(dst) else {
                            stats.dropped += 1;
                            continue;
                        };
                        let Some(k) = ports.iter().position(|p| p.name == ifc) else {
                            stats.dropped += 1; // a route out of an interface not served
                            continue;
                        };
                        out[6..12].copy_from_slice(&ports[k].mac);
                        if partial {
                            finish_checksum(&mut out);
                        }
                        let key = (k, hop);
                        if !arp.contains_key(&key) {
                            arp = neighbours(ports);
                        }
                        match arp.get(&key) {
                            Some(mac) => {
                                out[..6].copy_from_slice(mac);
                                ports[k].send(&out)?;
                                stats.forwarded += 1;
                            }
                            None if pending.len() < 256 => {
                                let _ = prod.send_to(&[0], (hop, 9));
                                pending.push_back(Pending {
                                    port: k,
                                    next_hop: hop,
                                    frame: out,
                                    until: Instant::now() + Duration::from_secs(1),
                                });
                            }
                            None => stats.unresolved += 1,
                        }
                    }
                    (Fate::Accept, _, _) => stats.local += 1,
                    _ => stats.dropped += 1,
                }
            }
        }
    }
    Ok(stats)
}
