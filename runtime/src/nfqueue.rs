//! NFQUEUE over raw netlink (`nfnetlink_queue`): one socket per queue, packets drained in
//! batches without blocking, and a batch's verdicts sent in one datagram, runs of equal
//! plain verdicts folded into one `NFQNL_MSG_VERDICT_BATCH`.
//!
//! Message layout (`linux/netfilter/nfnetlink_queue.h`): a 16-byte `nlmsghdr`, a 4-byte
//! `nfgenmsg` (family, version, queue number big-endian), then attributes (`nlattr`: length
//! and type in host order, payload padded to 4 bytes, numbers inside big-endian). Every
//! read of a received message is bounds-checked: a short or malformed message is skipped.
//!
//! `unsafe` here is the socket FFI only (socket, bind, setsockopt, send, recv, poll), each
//! block with its SAFETY comment.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;

const SOL_NETLINK: i32 = 270;
const NETLINK_NO_ENOBUFS: i32 = 5;

/// The most packets drained in one batch.
pub const BATCH: usize = 64;

/// A netfilter verdict for a queued packet (`NF_*`, with the queue number of `NF_QUEUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    /// to another queue; `bypass`: accepted when nobody listens there
    Queue {
        num: u16,
        bypass: bool,
    },
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Queue { num, bypass } => {
                (u32::from(num) << 16) | if bypass { 0x8000 } else { 0 } | 3
            }
        }
    }
}

/// One queued packet of a batch: its id, interfaces and where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub id: u32,
    pub indev: u32,
    pub outdev: u32,
    at: usize,
    len: usize,
}

/// A packet's verdict, and the bytes to put in its place when they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub verdict: Verdict,
    pub payload: Option<Vec<u8>>,
}

/// An NFQUEUE queue bound on its own netlink socket.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    /// one received datagram
    rx: Vec<u8>,
    /// the payloads of the current batch, back to back
    arena: Vec<u8>,
    batch: Vec<Queued>,
    /// the verdict datagram being built
    tx: Vec<u8>,
}

impl Queue {
    /// Binds queue `num`: whole packets copied (up to 65535 bytes), at most `max_len`
    /// waiting in the kernel; with `fail_open` the kernel accepts packets the queue has no
    /// room for instead of dropping them.
    pub fn open(num: u16, fail_open: bool, max_len: u32) -> io::Result<Queue> {
        // SAFETY: plain socket(2) call; the returned descriptor is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid (port 0: the kernel assigns one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a sockaddr_nl of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut q = Queue {
            fd,
            num,
            seq: 0,
            rx: vec![0; 70 * 1024],
            arena: Vec::new(),
            batch: Vec::new(),
            tx: Vec::new(),
        };
        // a full receive buffer loses packets (the kernel drops or, fail-open, accepts
        // them); it must not also fail our receive with ENOBUFS
        q.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)?;
        if q.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20)
            .is_err()
        {
            q.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20)?;
        }
        q.config(&cmd(NFQNL_CFG_CMD_BIND))?;
        let mut params = Vec::new();
        params.extend_from_slice(&0xffffu32.to_be_bytes());
        params.push(NFQNL_COPY_PACKET);
        q.config_attr(NFQA_CFG_PARAMS, &params)?;
        q.config_attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())?;
        let flags = if fail_open { NFQA_CFG_F_FAIL_OPEN } else { 0 };
        let mut body = Vec::new();
        put_attr(
            &mut body,
            NFQA_CFG_MASK,
            &NFQA_CFG_F_FAIL_OPEN.to_be_bytes(),
        );
        put_attr(&mut body, NFQA_CFG_FLAGS, &flags.to_be_bytes());
        q.config(&body)?;
        Ok(q)
    }

    pub fn num(&self) -> u16 {
        self.num
    }

    fn setsockopt(&self, level: i32, name: i32, v: i32) -> io::Result<()> {
        // SAFETY: `v` is an int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&v as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn config_attr(&mut self, ty: u16, value: &[u8]) -> io::Result<()> {
        let mut body = Vec::new();
        put_attr(&mut body, ty, value);
        self.config(&body)
    }

    /// Sends a configuration message (its attributes in `attrs`) and waits for its ack.
    fn config(&mut self, attrs: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Vec::new();
        put_msg(
            &mut m,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            self.num,
            attrs,
        );
        self.send(&m)?;
        loop {
            let n = self.recv(true)?;
            for (ty, seq, body) in messages(&self.rx[..n]) {
                if ty == NLMSG_ERROR && seq == self.seq {
                    let errno = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EPROTO);
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
            }
        }
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: a connected-less send on a netlink socket bound above; `m` is readable for
        // its length. The kernel is the default destination of a netlink socket.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `rx`; with `block` false, `Ok(0)` when none is waiting.
    fn recv(&mut self, block: bool) -> io::Result<usize> {
        let flags = if block { 0 } else { libc::MSG_DONTWAIT };
        loop {
            // SAFETY: `rx` is writable for its length.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                    flags,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock if !block => return Ok(0),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for a packet.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(60_000) as i32) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(r > 0)
    }

    /// Drains up to [`BATCH`] waiting packets without blocking (none when the queue is
    /// empty).
    pub fn recv_batch(&mut self) -> io::Result<&[Queued]> {
        self.batch.clear();
        self.arena.clear();
        while self.batch.len() < BATCH {
            let n = self.recv(false)?;
            if n == 0 {
                break;
            }
            let Queue {
                rx, arena, batch, ..
            } = self;
            for (ty, _, body) in messages(&rx[..n]) {
                if ty != (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) {
                    continue; // errors of earlier verdicts, others' messages
                }
                if let Some((id, indev, outdev, payload)) = parse_packet(body) {
                    batch.push(Queued {
                        id,
                        indev,
                        outdev,
                        at: arena.len(),
                        len: payload.len(),
                    });
                    arena.extend_from_slice(payload);
                }
            }
        }
        Ok(&self.batch)
    }

    /// The packets of the current batch.
    pub fn batch(&self) -> &[Queued] {
        &self.batch
    }

    /// The bytes of a packet of the current batch.
    pub fn payload(&self, p: &Queued) -> &[u8] {
        &self.arena[p.at..p.at + p.len]
    }

    /// Sends the verdicts of the current batch, in its order, in one datagram.
    pub fn answer(&mut self, answers: &[Answer]) -> io::Result<()> {
        self.tx.clear();
        let ids: Vec<u32> = self.batch.iter().map(|p| p.id).collect();
        build_verdicts(&mut self.tx, self.num, &ids, answers);
        if self.tx.is_empty() {
            return Ok(());
        }
        let tx = std::mem::take(&mut self.tx);
        let r = self.send(&tx);
        self.tx = tx;
        r
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let mut m = Vec::new();
        put_msg(
            &mut m,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST,
            0,
            self.num,
            &cmd(NFQNL_CFG_CMD_UNBIND),
        );
        let _ = self.send(&m);
    }
}

/// The verdict messages for packets `ids` (in the order received), answered by `answers`:
/// a run of plain verdicts (payload unchanged) that are equal becomes one batch verdict for
/// the run's last id (the kernel applies it to every packet of the queue up to that id);
/// a changed payload goes in a verdict of its own.
pub fn build_verdicts(out: &mut Vec<u8>, queue: u16, ids: &[u32], answers: &[Answer]) {
    let mut run: Option<(Verdict, u32, usize)> = None;
    let flush = |out: &mut Vec<u8>, run: &mut Option<(Verdict, u32, usize)>| {
        if let Some((v, id, n)) = run.take() {
            let ty = if n > 1 {
                NFQNL_MSG_VERDICT_BATCH
            } else {
                NFQNL_MSG_VERDICT
            };
            put_msg(out, ty, NLM_F_REQUEST, 0, queue, &verdict_attr(v, id));
        }
    };
    for (&id, a) in ids.iter().zip(answers) {
        match (&a.payload, run) {
            (None, Some((v, _, n))) if v == a.verdict => run = Some((v, id, n + 1)),
            (None, _) => {
                flush(out, &mut run);
                run = Some((a.verdict, id, 1));
            }
            (Some(bytes), _) => {
                flush(out, &mut run);
                let mut attrs = verdict_attr(a.verdict, id);
                put_attr(&mut attrs, NFQA_PAYLOAD, bytes);
                put_msg(out, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, queue, &attrs);
            }
        }
    }
    flush(out, &mut run);
}

fn verdict_attr(v: Verdict, id: u32) -> Vec<u8> {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&v.code().to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    let mut a = Vec::with_capacity(12);
    put_attr(&mut a, NFQA_VERDICT_HDR, &hdr);
    a
}

fn cmd(command: u8) -> Vec<u8> {
    let mut a = Vec::new();
    // struct nfqnl_msg_config_cmd { command, pad, pf (unused since Linux 3.8) }
    put_attr(&mut a, NFQA_CFG_CMD, &[command, 0, 0, 0]);
    a
}

fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (align4(len) - len), 0);
}

fn put_msg(out: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16, attrs: &[u8]) {
    let len = NLMSG_HDRLEN + NFGEN_HDRLEN + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | msg).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, the queue number
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&queue.to_be_bytes());
    out.extend_from_slice(attrs);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The netlink messages of a datagram: (type, sequence number, body after the `nlmsghdr`).
/// Stops at the first message whose length does not fit.
pub fn messages(d: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = ne_u32(d, at)? as usize;
        if len < NLMSG_HDRLEN || at + len > d.len() {
            return None;
        }
        let ty = ne_u16(d, at + 4)?;
        let seq = ne_u32(d, at + 8)?;
        let body = &d[at + NLMSG_HDRLEN..at + len];
        at += align4(len);
        Some((ty, seq, body))
    })
}

/// The attributes of a message body after its `nfgenmsg`: (type without its flag bits,
/// value).
fn attributes(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = NFGEN_HDRLEN;
    std::iter::from_fn(move || {
        let len = usize::from(ne_u16(body, at)?);
        if len < 4 || at + len > body.len() {
            return None;
        }
        let ty = ne_u16(body, at + 2)? & 0x3fff;
        let v = &body[at + 4..at + len];
        at += align4(len);
        Some((ty, v))
    })
}

/// A packet message's (packet id, input and output interface indices, payload); `None`
/// without a packet header or payload.
pub fn parse_packet(body: &[u8]) -> Option<(u32, u32, u32, &[u8])> {
    let (mut id, mut indev, mut outdev, mut payload) = (None, 0, 0, None);
    for (ty, v) in attributes(body) {
        match ty {
            NFQA_PACKET_HDR => id = be_u32(v),
            NFQA_IFINDEX_INDEV => indev = be_u32(v).unwrap_or(0),
            NFQA_IFINDEX_OUTDEV => outdev = be_u32(v).unwrap_or(0),
            NFQA_PAYLOAD => payload = Some(v),
            _ => {}
        }
    }
    Some((id?, indev, outdev, payload?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message as the kernel sends it.
    fn packet_msg(id: u32, indev: u32, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 0]); // hw protocol, hook
        put_attr(&mut attrs, NFQA_PACKET_HDR, &hdr);
        put_attr(&mut attrs, NFQA_IFINDEX_INDEV, &indev.to_be_bytes());
        put_attr(&mut attrs, NFQA_PAYLOAD, payload);
        let mut m = Vec::new();
        put_msg(&mut m, NFQNL_MSG_PACKET, 0, 0, 7, &attrs);
        m
    }

    #[test]
    fn packet_messages_parse_and_malformed_ones_are_skipped() {
        let mut d = packet_msg(41, 3, b"abcde");
        d.extend(packet_msg(42, 4, b"xy"));
        let got: Vec<_> = messages(&d)
            .filter_map(|(ty, _, body)| {
                assert_eq!(ty, NFNL_SUBSYS_QUEUE << 8);
                parse_packet(body)
            })
            .collect();
        assert_eq!(got, [(41, 3, 0, &b"abcde"[..]), (42, 4, 0, &b"xy"[..])]);
        // every truncation of the datagram parses to fewer packets, never panics
        for cut in 0..d.len() {
            let n = messages(&d[..cut])
                .filter_map(|(_, _, b)| parse_packet(b))
                .count();
            assert!(n <= 1 || cut == d.len());
        }
        // an attribute claiming more than the message holds ends the attributes
        let mut bad = packet_msg(43, 1, b"zz");
        bad[20] = 0xff;
        assert_eq!(
            messages(&bad)
                .filter_map(|(_, _, b)| parse_packet(b))
                .count(),
            0
        );
    }

    fn plain(v: Verdict) -> Answer {
        Answer {
            verdict: v,
            payload: None,
        }
    }

    /// (message type, verdict code, id, payload length) of each verdict message.
    fn decode(d: &[u8]) -> Vec<(u16, u32, u32, usize)> {
        messages(d)
            .map(|(ty, _, body)| {
                let mut v = (ty & 0xff, 0, 0, 0);
                for (t, val) in attributes(body) {
                    match t {
                        NFQA_VERDICT_HDR => {
                            v.1 = be_u32(val).unwrap();
                            v.2 = be_u32(&val[4..]).unwrap();
                        }
                        NFQA_PAYLOAD => v.3 = val.len(),
                        _ => {}
                    }
                }
                v
            })
            .collect()
    }

    #[test]
    fn runs_of_equal_plain_verdicts_become_one_batch_verdict() {
        let ids = [10, 11, 12, 13, 14, 15, 16];
        let answers = [
            plain(Verdict::Accept),
            plain(Verdict::Accept),
            plain(Verdict::Accept),
            plain(Verdict::Drop),
            Answer {
                verdict: Verdict::Accept,
                payload: Some(vec![1, 2, 3]),
            },
            plain(Verdict::Queue {
                num: 2,
                bypass: true,
            }),
            plain(Verdict::Accept),
        ];
        let mut out = Vec::new();
        build_verdicts(&mut out, 7, &ids, &answers);
        assert_eq!(
            decode(&out),
            [
                (NFQNL_MSG_VERDICT_BATCH, 1, 12, 0),
                (NFQNL_MSG_VERDICT, 0, 13, 0),
                (NFQNL_MSG_VERDICT, 1, 14, 3),
                (NFQNL_MSG_VERDICT, 2 << 16 | 0x8000 | 3, 15, 0),
                (NFQNL_MSG_VERDICT, 1, 16, 0),
            ]
        );
        // every message is addressed to the queue
        for (_, _, body) in messages(&out) {
            assert_eq!(&body[2..4], &7u16.to_be_bytes());
        }
    }
}
