//! UDP datagrams (RFC 768). A zero checksum means "none" and is left alone by rewrites.

use super::{be, checksum, ipv4, Error, Result};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct Datagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// The header must be there and its length field between 8 and the data.
    pub fn new_checked(buf: T) -> Result<Datagram<T>> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be::u16(b, 4));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Datagram { buf })
    }
    pub fn src_port(&self) -> u16 {
        be::u16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be::u16(self.buf.as_ref(), 2)
    }
    pub fn len(&self) -> u16 {
        be::u16(self.buf.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be::u16(self.buf.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
    /// True for a correct checksum, and for none (zero).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || checksum::transport(
                src,
                dst,
                ipv4::PROTO_UDP,
                &self.buf.as_ref()[..usize::from(self.len())],
            ) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
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
    pub fn update_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        if self.checksum() == 0 {
            return;
        }
        let hc = nonzero(checksum::update32(
            self.checksum(),
            u32::from(old),
            u32::from(new),
        ));
        be::set_u16(self.buf.as_mut(), 6, hc);
    }
    fn update(&mut self, old: u16, new: u16) {
        if self.checksum() == 0 {
            return;
        }
        let hc = nonzero(checksum::update16(self.checksum(), old, new));
        be::set_u16(self.buf.as_mut(), 6, hc);
    }
}

/// A computed UDP checksum of zero is sent as 0xffff (zero means "no checksum").
fn nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(
        d: &Datagram<T>,
        addrs: Option<(Ipv4Addr, Ipv4Addr)>,
    ) -> Result<Repr> {
        if let Some((s, t)) = addrs {
            if !d.verify_checksum(s, t) {
                return Err(Error::Checksum);
            }
        }
        Ok(Repr {
            src_port: d.src_port(),
            dst_port: d.dst_port(),
            payload_len: d.payload().len(),
        })
    }

    /// Writes the header at the start of `buf` (the payload follows) with its checksum.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<()> {
        let len = HEADER_LEN + self.payload_len;
        if buf.len() < len {
            return Err(Error::Truncated);
        }
        let l16 = u16::try_from(len).map_err(|_| Error::Malformed)?;
        let buf = &mut buf[..len];
        be::set_u16(buf, 0, self.src_port);
        be::set_u16(buf, 2, self.dst_port);
        be::set_u16(buf, 4, l16);
        be::set_u16(buf, 6, 0);
        let c = nonzero(checksum::transport(src, dst, ipv4::PROTO_UDP, buf));
        be::set_u16(buf, 6, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rewrites_and_checksum_none() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(198, 51, 100, 53));
        let r = Repr {
            src_port: 5353,
            dst_port: 53,
            payload_len: 3,
        };
        let mut b = vec![0u8; 11];
        b[8..].copy_from_slice(b"abc");
        r.emit(&mut b, s, d).unwrap();
        let mut g = Datagram::new_checked(&mut b[..]).unwrap();
        assert!(g.verify_checksum(s, d));
        g.set_dst_port(5300);
        g.update_for_addr(d, Ipv4Addr::new(10, 0, 0, 53));
        assert!(g.verify_checksum(s, Ipv4Addr::new(10, 0, 0, 53)));
        // no checksum: stays none across rewrites
        b[6] = 0;
        b[7] = 0;
        let mut g = Datagram::new_checked(&mut b[..]).unwrap();
        g.set_src_port(1);
        assert_eq!(g.checksum(), 0);
        assert!(g.verify_checksum(s, d));
    }

    #[test]
    fn length_field_is_checked() {
        let mut b = [0u8; 12];
        b[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert!(Datagram::new_checked(&b[..]).is_ok());
        assert_eq!(
            Datagram::new_checked(&b[..11]).unwrap_err(),
            Error::Truncated
        );
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Datagram::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    }
}
