//! Packet log lines as the kernel writes them: the `LOG` target / nft `log` statement
//! (`nf_log_syslog.c`: `IN= OUT= MAC= SRC= DST= LEN= TOS= PREC= TTL= ID= ... PROTO= ...`)
//! and the `AUDIT` target (an `audit` record's `mark= saddr= daddr= proto=`). The packet is
//! read through the checked `wire` views: a truncated header is logged as the kernel does
//! (`INCOMPLETE [N bytes]`), never read past its end.

use crate::wire::{icmp, ipv4, tcp, udp};
use std::fmt::Write as _;

/// The text the kernel logs for a packet: `prefix`, its interfaces, the Ethernet header
/// when the packet came with one (`mac`: the 14 bytes), then its IPv4 and transport
/// headers, and its mark when set. Ends with a space, as the kernel's.
pub fn log_line(
    prefix: &str,
    iif: Option<&str>,
    oif: Option<&str>,
    mac: Option<&[u8]>,
    ip: &[u8],
    mark: u32,
) -> String {
    let mut s = format!(
        "{prefix}IN={} OUT={} ",
        iif.unwrap_or(""),
        oif.unwrap_or("")
    );
    if let (Some(m), Some(_)) = (mac, iif) {
        let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(s, "MAC={} ", hex.join(":"));
    }
    let Ok(p) = ipv4::Packet::new_checked(ip) else {
        let _ = write!(s, "TRUNCATED ");
        return s;
    };
    let tos = p.dscp_ecn();
    let _ = write!(
        s,
        "SRC={} DST={} LEN={} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={} ",
        p.src(),
        p.dst(),
        p.total_len(),
        tos & 0x1e,
        tos & 0xe0,
        p.ttl(),
        p.ident()
    );
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    for (bit, name) in [(0x8000, "CE"), (0x4000, "DF"), (0x2000, "MF")] {
        if frag & bit != 0 {
            let _ = write!(s, "{name} ");
        }
    }
    if p.frag_offset() != 0 {
        let _ = write!(s, "FRAG:{} ", p.frag_offset());
    }
    let l4 = p.payload();
    match p.protocol() {
        ipv4::PROTO_TCP => {
            s.push_str("PROTO=TCP ");
            if p.frag_offset() != 0 {
                return with_mark(s, mark);
            }
            match tcp::Segment::new_checked(l4) {
                Ok(t) => {
                    let _ = write!(
                        s,
                        "SPT={} DPT={} WINDOW={} RES=0x{:02x} ",
                        t.src_port(),
                        t.dst_port(),
                        t.window(),
                        (u16::from_be_bytes([l4[12], l4[13]]) >> 6) & 0x0f
                    );
                    let f = l4[13];
                    for (bit, name) in [
                        (0x80, "CWR"),
                        (0x40, "ECE"),
                        (0x20, "URG"),
                        (0x10, "ACK"),
                        (0x08, "PSH"),
                        (0x04, "RST"),
                        (0x02, "SYN"),
                        (0x01, "FIN"),
                    ] {
                        if f & bit != 0 {
                            let _ = write!(s, "{name} ");
                        }
                    }
                    let _ = write!(s, "URGP={} ", u16::from_be_bytes([l4[18], l4[19]]));
                }
                Err(_) => {
                    let _ = write!(s, "INCOMPLETE [{} bytes] ", l4.len());
                }
            }
        }
        ipv4::PROTO_UDP => {
            s.push_str("PROTO=UDP ");
            if p.frag_offset() != 0 {
                return with_mark(s, mark);
            }
            match udp::Datagram::new_checked(l4) {
                Ok(u) => {
                    let _ = write!(
                        s,
                        "SPT={} DPT={} LEN={} ",
                        u.src_port(),
                        u.dst_port(),
                        u.len()
                    );
                }
                Err(_) => {
                    let _ = write!(s, "INCOMPLETE [{} bytes] ", l4.len());
                }
            }
        }
        ipv4::PROTO_ICMP => {
            s.push_str("PROTO=ICMP ");
            if p.frag_offset() != 0 {
                return with_mark(s, mark);
            }
            match icmp::Message::new_checked(l4) {
                Ok(m) => {
                    let _ = write!(s, "TYPE={} CODE={} ", m.msg_type(), m.code());
                    if matches!(m.msg_type(), 0 | 8) {
                        let _ = write!(s, "ID={} SEQ={} ", m.echo_ident(), m.echo_seq());
                    }
                }
                Err(_) => {
                    let _ = write!(s, "INCOMPLETE [{} bytes] ", l4.len());
                }
            }
        }
        other => {
            let _ = write!(s, "PROTO={other} ");
        }
    }
    with_mark(s, mark)
}

fn with_mark(mut s: String, mark: u32) -> String {
    if mark != 0 {
        let _ = write!(s, "MARK=0x{mark:x} ");
    }
    s
}

/// An `audit` record of a packet (type NETFILTER_PKT): its mark, addresses and protocol.
pub fn audit_line(ip: &[u8], mark: u32) -> String {
    match ipv4::Packet::new_checked(ip) {
        Ok(p) => format!(
            "NETFILTER_PKT mark={mark:#x} saddr={} daddr={} proto={}",
            p.src(),
            p.dst(),
            p.protocol()
        ),
        Err(_) => format!("NETFILTER_PKT mark={mark:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn lines_match_the_kernel_format_and_truncation_is_reported() {
        let a = Ipv4Addr::new(192, 0, 2, 2);
        let b = Ipv4Addr::new(198, 51, 100, 2);
        let r = tcp::Repr {
            src_port: 40000,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: tcp::flags::SYN,
            window: 64240,
            payload_len: 0,
        };
        let pkt =
            ipv4::Repr::packet(a, b, ipv4::PROTO_TCP, 20, |buf, s, d| r.emit(buf, s, d)).unwrap();
        assert_eq!(
            log_line("fw-in: ", Some("eth0"), Some("eth1"), None, &pkt, 0),
            "fw-in: IN=eth0 OUT=eth1 SRC=192.0.2.2 DST=198.51.100.2 LEN=40 TOS=0x00 \
             PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=40000 DPT=80 WINDOW=64240 RES=0x00 SYN \
             URGP=0 "
        );
        // for this host (no output interface), with its Ethernet header and a mark
        let mac = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
        let l = log_line("", Some("eth0"), None, Some(&mac), &pkt, 7);
        assert!(
            l.starts_with("IN=eth0 OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC="),
            "{l}"
        );
        assert!(l.ends_with("URGP=0 MARK=0x7 "), "{l}");
        // a transport header cut short
        let mut cut = pkt[..30].to_vec();
        cut[3] = 30; // total length 30
        assert!(
            log_line("", None, None, None, &cut, 0).ends_with("PROTO=TCP INCOMPLETE [10 bytes] ")
        );
        assert_eq!(
            audit_line(&pkt, 0),
            "NETFILTER_PKT mark=0x0 saddr=192.0.2.2 daddr=198.51.100.2 proto=6"
        );
    }
}
