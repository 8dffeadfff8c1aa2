//! ICMPv4 (RFC 792): echo, and the error messages that quote the datagram that caused them.

use super::{be, checksum, ipv4, Error, Result};

pub const HEADER_LEN: usize = 8;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;

/// Is this type an error message (which quotes an IP header and 8 bytes of its payload)?
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
    )
}

#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    pub fn new_checked(buf: T) -> Result<Message<T>> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Message { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be::u16(self.buf.as_ref(), 2)
    }
    /// Echo identifier (bytes 4-5 of an echo request or reply).
    pub fn echo_ident(&self) -> u16 {
        be::u16(self.buf.as_ref(), 4)
    }
    pub fn echo_seq(&self) -> u16 {
        be::u16(self.buf.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buf.as_ref())) == 0xffff
    }
    /// The quoted datagram of an error message: its IP header (checked) and what follows
    /// (usually the first 8 bytes of its transport header). `None` for other types.
    pub fn quoted(&self) -> Option<Result<ipv4::Packet<&[u8]>>> {
        if !is_error(self.msg_type()) {
            return None;
        }
        Some(ipv4::Packet::new_header_checked(self.payload()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// Rewrites the echo identifier (ICMP NAT), updating the checksum incrementally.
    pub fn set_echo_ident(&mut self, id: u16) {
        let old = self.echo_ident();
        be::set_u16(self.buf.as_mut(), 4, id);
        let hc = checksum::update16(self.checksum(), old, id);
        be::set_u16(self.buf.as_mut(), 2, hc);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
    /// Recomputes the checksum over the whole message (after the quoted header was
    /// rewritten, as NAT does for errors).
    pub fn fill_checksum(&mut self) {
        be::set_u16(self.buf.as_mut(), 2, 0);
        let c = checksum::checksum(self.buf.as_ref());
        be::set_u16(self.buf.as_mut(), 2, c);
    }
}

/// A parsed ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    EchoRequest {
        ident: u16,
        seq: u16,
        data_len: usize,
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data_len: usize,
    },
    /// an error message; the quoted datagram is read through [`Message::quoted`]
    Error {
        msg_type: u8,
        code: u8,
    },
    Other {
        msg_type: u8,
        code: u8,
    },
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(m: &Message<T>, verify: bool) -> Result<Repr> {
        if verify && !m.verify_checksum() {
            return Err(Error::Checksum);
        }
        let (t, c) = (m.msg_type(), m.code());
        Ok(match t {
            ECHO_REQUEST => Repr::EchoRequest {
                ident: m.echo_ident(),
                seq: m.echo_seq(),
                data_len: m.payload().len(),
            },
            ECHO_REPLY => Repr::EchoReply {
                ident: m.echo_ident(),
                seq: m.echo_seq(),
                data_len: m.payload().len(),
            },
            t if is_error(t) => Repr::Error {
                msg_type: t,
                code: c,
            },
            t => Repr::Other {
                msg_type: t,
                code: c,
            },
        })
    }

    /// Writes an echo message header (the data follows in `buf`) with its checksum.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let (t, ident, seq, len) = match *self {
            Repr::EchoRequest {
                ident,
                seq,
                data_len,
            } => (ECHO_REQUEST, ident, seq, data_len),
            Repr::EchoReply {
                ident,
                seq,
                data_len,
            } => (ECHO_REPLY, ident, seq, data_len),
            _ => return Err(Error::Malformed),
        };
        if buf.len() < HEADER_LEN + len {
            return Err(Error::Truncated);
        }
        let buf = &mut buf[..HEADER_LEN + len];
        buf[0] = t;
        buf[1] = 0;
        be::set_u16(buf, 2, 0);
        be::set_u16(buf, 4, ident);
        be::set_u16(buf, 6, seq);
        let c = checksum::checksum(buf);
        be::set_u16(buf, 2, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn echo_round_trip_and_ident_rewrite() {
        let r = Repr::EchoRequest {
            ident: 0x4242,
            seq: 7,
            data_len: 4,
        };
        let mut b = vec![0u8; 12];
        b[8..].copy_from_slice(b"ping");
        r.emit(&mut b).unwrap();
        let m = Message::new_checked(&b[..]).unwrap();
        assert!(m.verify_checksum());
        assert_eq!(Repr::parse(&m, true).unwrap(), r);
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.set_echo_ident(9);
        assert!(m.verify_checksum());
        assert_eq!(m.echo_ident(), 9);
    }

    #[test]
    fn an_error_quotes_the_offending_header() {
        // port unreachable for a UDP datagram 10.0.0.2:5353 -> 198.51.100.53:53
        let inner = ipv4::Repr {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(198, 51, 100, 53),
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            payload_len: 100, // the original was longer than what is quoted
        };
        let mut b = [0u8; HEADER_LEN + 20 + 8];
        b[0] = DEST_UNREACHABLE;
        b[1] = 3;
        inner.emit(&mut b[HEADER_LEN..]).unwrap();
        b[HEADER_LEN + 20..HEADER_LEN + 22].copy_from_slice(&5353u16.to_be_bytes());
        b[HEADER_LEN + 22..HEADER_LEN + 24].copy_from_slice(&53u16.to_be_bytes());
        let mut m = Message::new_checked(&mut b[..]).unwrap();
        m.fill_checksum();
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&m, true).unwrap(),
            Repr::Error {
                msg_type: 3,
                code: 3
            }
        );
        let q = m.quoted().unwrap().unwrap();
        assert_eq!(q.src(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(q.payload().len(), 8, "only 8 bytes are quoted");
        assert_eq!(be::u16(q.payload(), 2), 53);
        // a quote cut inside the IP header is reported
        let m = Message::new_checked(&b[..HEADER_LEN + 12]).unwrap();
        assert_eq!(m.quoted().unwrap().unwrap_err(), Error::Truncated);
        assert!(Message::new_checked(&b[..7]).is_err());
    }
}
