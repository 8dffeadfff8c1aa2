//! IPv4 headers (RFC 791): options kept as bytes, fragments flagged.

use super::{be, checksum, Error, Result};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A full packet: version 4, header length between 20 bytes and the data, total length
    /// between the header and the data (bytes past it are ignored, as the kernel trims them).
    pub fn new_checked(buf: T) -> Result<Packet<T>> {
        let p = Packet::new_header_checked(buf)?;
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(Error::Malformed);
        }
        if total > p.buf.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Only the header: for the datagram quoted inside an ICMP error, whose payload is cut
    /// after 8 bytes. `payload()` then returns what is there.
    pub fn new_header_checked(buf: T) -> Result<Packet<T>> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buf })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn total_len(&self) -> u16 {
        be::u16(self.buf.as_ref(), 2)
    }
    pub fn ident(&self) -> u16 {
        be::u16(self.buf.as_ref(), 4)
    }
    pub fn dont_frag(&self) -> bool {
        be::u16(self.buf.as_ref(), 6) & FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        be::u16(self.buf.as_ref(), 6) & FLAG_MF != 0
    }
    /// in 8-byte units
    pub fn frag_offset(&self) -> u16 {
        be::u16(self.buf.as_ref(), 6) & 0x1fff
    }
    /// Part of a fragmented datagram (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be::u16(self.buf.as_ref(), 10)
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32(self.buf.as_ref(), 12))
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be::u32(self.buf.as_ref(), 16))
    }
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buf.as_ref()[..self.header_len()])) == 0xffff
    }
    /// The payload, up to the total length (or the data's end, for a quoted header).
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let end = usize::from(self.total_len()).clamp(self.header_len(), b.len());
        &b[self.header_len()..end]
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = be::u16(self.buf.as_ref(), 8);
        self.buf.as_mut()[8] = ttl;
        let new = be::u16(self.buf.as_ref(), 8);
        self.update_checksum16(old, new);
    }
    /// Rewrites the source address, updating the header checksum incrementally.
    pub fn set_src(&mut self, a: Ipv4Addr) {
        let old = be::u32(self.buf.as_ref(), 12);
        be::set_u32(self.buf.as_mut(), 12, u32::from(a));
        let hc = checksum::update32(self.checksum(), old, u32::from(a));
        be::set_u16(self.buf.as_mut(), 10, hc);
    }
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        let old = be::u32(self.buf.as_ref(), 16);
        be::set_u32(self.buf.as_mut(), 16, u32::from(a));
        let hc = checksum::update32(self.checksum(), old, u32::from(a));
        be::set_u16(self.buf.as_mut(), 10, hc);
    }
    fn update_checksum16(&mut self, old: u16, new: u16) {
        let hc = checksum::update16(self.checksum(), old, new);
        be::set_u16(self.buf.as_mut(), 10, hc);
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        be::set_u16(self.buf.as_mut(), 10, 0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        be::set_u16(self.buf.as_mut(), 10, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let len = self.buf.as_ref().len();
        let end = usize::from(self.total_len()).clamp(hl, len);
        &mut self.buf.as_mut()[hl..end]
    }
}

/// A parsed IPv4 header (without options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub payload_len: usize,
}

impl Repr {
    /// Parses a checked packet; with `verify` a bad header checksum is an error.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, verify: bool) -> Result<Repr> {
        if verify && !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            payload_len: p.payload().len(),
        })
    }

    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    pub fn total_len(&self) -> usize {
        MIN_HEADER_LEN + self.payload_len
    }

    /// A whole packet from `src` to `dst` (TTL 64, don't-fragment, ident 0): this header
    /// followed by `l4`, which `emit_l4` fills in (it gets the transport bytes, zeroed, and
    /// the addresses, as the transport `Repr::emit`s take them). For tests, benchmarks and
    /// tools that make packets.
    pub fn packet(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        l4_len: usize,
        emit_l4: impl FnOnce(&mut [u8], Ipv4Addr, Ipv4Addr) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let r = Repr {
            src,
            dst,
            protocol,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            payload_len: l4_len,
        };
        let mut b = vec![0u8; r.total_len()];
        r.emit(&mut b)?;
        emit_l4(&mut b[MIN_HEADER_LEN..], src, dst)?;
        Ok(b)
    }

    /// Writes a 20-byte header with a correct checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = u16::try_from(self.total_len()).map_err(|_| Error::Malformed)?;
        buf[0] = 0x45;
        buf[1] = 0;
        be::set_u16(buf, 2, total);
        be::set_u16(buf, 4, self.ident);
        be::set_u16(buf, 6, if self.dont_frag { FLAG_DF } else { 0 });
        buf[8] = self.ttl;
        buf[9] = self.protocol;
        be::set_u16(buf, 10, 0);
        be::set_u32(buf, 12, u32::from(self.src));
        be::set_u32(buf, 16, u32::from(self.dst));
        let c = checksum::checksum(&buf[..MIN_HEADER_LEN]);
        be::set_u16(buf, 10, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let r = Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            protocol: PROTO_UDP,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
            payload_len: 8,
        };
        let mut b = vec![0u8; r.total_len()];
        r.emit(&mut b).unwrap();
        b
    }

    #[test]
    fn emit_parse_round_trip_with_valid_checksum() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        let r = Repr::parse(&p, true).unwrap();
        assert_eq!(r.src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.payload_len, 8);
        assert!(!p.is_fragment());
        assert!(p.dont_frag());
    }

    #[test]
    fn every_truncation_and_bad_field_is_an_error() {
        let b = sample();
        for n in 0..b.len() {
            assert!(Packet::new_checked(&b[..n]).is_err(), "length {n}");
        }
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), Error::Malformed);
        let mut short_hl = b.clone();
        short_hl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&short_hl[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long_total = b.clone();
        long_total[3] += 1;
        assert_eq!(
            Packet::new_checked(&long_total[..]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = b.clone();
        bad[8] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(Repr::parse(&p, true).unwrap_err(), Error::Checksum);
    }

    #[test]
    fn rewrites_keep_the_checksum_valid() {
        let mut b = sample();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_src(Ipv4Addr::new(203, 0, 113, 77));
        p.set_dst(Ipv4Addr::new(10, 9, 8, 7));
        p.set_ttl(3);
        assert!(p.verify_checksum());
        let mut again = b.clone();
        let mut q = Packet::new_checked(&mut again[..]).unwrap();
        q.fill_checksum();
        assert_eq!(
            q.checksum(),
            Packet::new_checked(&b[..]).unwrap().checksum()
        );
    }

    #[test]
    fn fragments_and_options() {
        let mut b = [0u8; 28];
        b[0] = 0x46; // 24-byte header: 4 bytes of options
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[6] = 0x20; // MF
        b[20] = 1; // NOP option
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && p.more_frags() && p.frag_offset() == 0);
        assert_eq!(p.options(), &[1, 0, 0, 0]);
        assert_eq!(p.payload().len(), 4);
    }
}
