//! TCP segments (RFC 9293): header, options kept as bytes, checksum with the pseudo-header.

use super::{be, checksum, ipv4, Error, Result};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Segment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    /// The whole header must be there: the fixed 20 bytes and the options the data offset
    /// announces.
    pub fn new_checked(buf: T) -> Result<Segment<T>> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Segment { buf })
    }
    pub fn src_port(&self) -> u16 {
        be::u16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be::u16(self.buf.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be::u32(self.buf.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be::u32(self.buf.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    /// FIN SYN RST PSH ACK URG (the low six bits of byte 13)
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13] & 0x3f
    }
    pub fn window(&self) -> u16 {
        be::u16(self.buf.as_ref(), 14)
    }
    pub fn checksum(&self) -> u16 {
        be::u16(self.buf.as_ref(), 16)
    }
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::transport(src, dst, ipv4::PROTO_TCP, self.buf.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Rewrites a port, updating the checksum incrementally.
    pub fn set_src_port(&mut self, p: u16) {
        let old = self.src_port();
        be::set_u16(self.buf.as_mut(), 0, p);
        self.update(old, p);
    }
    pub fn set_dst_port(&mut self, p: u16) {
        let old = self.dst_port();
        be::set_u16(self.buf.as_mut(), 2, p);
        self.update(old, p);
    }
    /// Accounts in the checksum for an address of the pseudo-header changing (NAT).
    pub fn update_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let hc = checksum::update32(self.checksum(), u32::from(old), u32::from(new));
        be::set_u16(self.buf.as_mut(), 16, hc);
    }
    fn update(&mut self, old: u16, new: u16) {
        let hc = checksum::update16(self.checksum(), old, new);
        be::set_u16(self.buf.as_mut(), 16, hc);
    }
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        be::set_u16(self.buf.as_mut(), 16, 0);
        let c = checksum::transport(src, dst, ipv4::PROTO_TCP, self.buf.as_ref());
        be::set_u16(self.buf.as_mut(), 16, c);
    }
}

/// A parsed TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(
        s: &Segment<T>,
        addrs: Option<(Ipv4Addr, Ipv4Addr)>,
    ) -> Result<Repr> {
        if let Some((src, dst)) = addrs {
            if !s.verify_checksum(src, dst) {
                return Err(Error::Checksum);
            }
        }
        Ok(Repr {
            src_port: s.src_port(),
            dst_port: s.dst_port(),
            seq: s.seq(),
            ack: s.ack(),
            flags: s.flags(),
            window: s.window(),
            payload_len: s.payload().len(),
        })
    }

    /// Writes a 20-byte header (no options) at the start of `buf`, whose remaining bytes are
    /// the payload, and the checksum over both.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<()> {
        if buf.len() < MIN_HEADER_LEN + self.payload_len {
            return Err(Error::Truncated);
        }
        let buf = &mut buf[..MIN_HEADER_LEN + self.payload_len];
        be::set_u16(buf, 0, self.src_port);
        be::set_u16(buf, 2, self.dst_port);
        be::set_u32(buf, 4, self.seq);
        be::set_u32(buf, 8, self.ack);
        buf[12] = 0x50;
        buf[13] = self.flags & 0x3f;
        be::set_u16(buf, 14, self.window);
        be::set_u16(buf, 16, 0);
        be::set_u16(buf, 18, 0);
        let c = checksum::transport(src, dst, ipv4::PROTO_TCP, buf);
        be::set_u16(buf, 16, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const D: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    #[test]
    fn round_trip_checksum_and_nat_rewrites() {
        let r = Repr {
            src_port: 40000,
            dst_port: 443,
            seq: 1,
            ack: 0,
            flags: flags::SYN,
            window: 64240,
            payload_len: 5,
        };
        let mut b = vec![0u8; 25];
        b[20..].copy_from_slice(b"hello");
        r.emit(&mut b, S, D).unwrap();
        let s = Segment::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&s, Some((S, D))).unwrap(), r);
        assert_eq!(s.payload(), b"hello");
        // source NAT: address and port, incrementally
        let new = Ipv4Addr::new(203, 0, 113, 9);
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        s.set_src_port(1024);
        s.update_for_addr(S, new);
        assert!(s.verify_checksum(new, D));
        assert!(!s.verify_checksum(S, D));
    }

    #[test]
    fn truncated_and_malformed_headers() {
        let mut b = [0u8; 24];
        b[12] = 0x60; // 24-byte header
        assert!(Segment::new_checked(&b[..]).is_ok());
        assert_eq!(
            Segment::new_checked(&b[..23]).unwrap_err(),
            Error::Truncated
        );
        b[12] = 0x40; // 16 bytes: below the minimum
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(Segment::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
    }
}
