//! Classic pcap files (the libpcap format): reading and writing, microsecond or nanosecond
//! timestamps, either byte order, Ethernet or raw-IP link types. A truncated or damaged file
//! is an error value, never a panic.

use std::io::{self, Read, Write};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// nanoseconds since the epoch
    pub ts_ns: u64,
    /// length on the wire (may exceed `data.len()` when the capture was cut)
    pub orig_len: u32,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub enum PcapError {
    Io(io::Error),
    /// not a pcap file (unknown magic number)
    NotPcap,
    /// the file ends inside a header or a packet
    Truncated,
    /// a record claims more bytes than the snap length allows
    Oversized(u32),
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "{e}"),
            PcapError::NotPcap => f.write_str("not a pcap file (unknown magic number)"),
            PcapError::Truncated => f.write_str("the pcap file ends in the middle of a record"),
            PcapError::Oversized(n) => write!(
                f,
                "a pcap record claims {n} bytes, more than the file's snap length"
            ),
        }
    }
}

impl std::error::Error for PcapError {}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> PcapError {
        PcapError::Io(e)
    }
}

/// Reads records one by one.
pub struct Reader<R: Read> {
    r: R,
    swap: bool,
    nanos: bool,
    pub linktype: u32,
    pub snaplen: u32,
}

/// Fills `buf` or reports how far it got: Ok(false) for a clean end before any byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, PcapError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => return Err(PcapError::Truncated),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

impl<R: Read> Reader<R> {
    pub fn new(mut r: R) -> Result<Reader<R>, PcapError> {
        let mut h = [0u8; 24];
        if !read_full(&mut r, &mut h)? {
            return Err(PcapError::Truncated);
        }
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swap, nanos) = match magic {
            MAGIC_US => (false, false),
            MAGIC_NS => (false, true),
            m if m.swap_bytes() == MAGIC_US => (true, false),
            m if m.swap_bytes() == MAGIC_NS => (true, true),
            _ => return Err(PcapError::NotPcap),
        };
        let u32_at = |i: usize| {
            let v = u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            if swap {
                v.swap_bytes()
            } else {
                v
            }
        };
        Ok(Reader {
            snaplen: u32_at(16),
            linktype: u32_at(20),
            r,
            swap,
            nanos,
        })
    }

    /// The next record, `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        if !read_full(&mut self.r, &mut h)? {
            return Ok(None);
        }
        let u = |i: usize| {
            let v = u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            if self.swap {
                v.swap_bytes()
            } else {
                v
            }
        };
        let (sec, frac, incl, orig) = (u(0), u(4), u(8), u(12));
        // a generous bound: some writers put 0 or a small value in the snap length
        if incl > self.snaplen.max(262_144) {
            return Err(PcapError::Oversized(incl));
        }
        let mut data = vec![0u8; incl as usize];
        if !read_full(&mut self.r, &mut data)? && incl > 0 {
            return Err(PcapError::Truncated);
        }
        let ts_ns =
            u64::from(sec) * 1_000_000_000 + u64::from(frac) * if self.nanos { 1 } else { 1000 };
        Ok(Some(Record {
            ts_ns,
            orig_len: orig,
            data,
        }))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, PcapError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Writes a microsecond-resolution little-endian pcap file.
pub struct Writer<W: Write> {
    w: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut w: W, linktype: u32) -> io::Result<Writer<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_US.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&262_144u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        w.write_all(&h)?;
        Ok(Writer { w })
    }

    pub fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        let sec = (ts_ns / 1_000_000_000) as u32;
        let usec = ((ts_ns % 1_000_000_000) / 1000) as u32;
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?;
        self.w.write_all(&sec.to_le_bytes())?;
        self.w.write_all(&usec.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let mut w = Writer::new(Vec::new(), LINKTYPE_ETHERNET).unwrap();
        w.write(1_500_000_123_000, &[1, 2, 3]).unwrap();
        w.write(1_500_000_124_000, &[]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.linktype, LINKTYPE_ETHERNET);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.ts_ns, a.data.as_slice()),
            (1_500_000_123_000, &[1u8, 2, 3][..])
        );
        assert_eq!(r.next_record().unwrap().unwrap().data.len(), 0);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn big_endian_and_nanosecond_files() {
        let mut h = vec![];
        h.extend_from_slice(&MAGIC_NS.to_be_bytes());
        h.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&65535u32.to_be_bytes());
        h.extend_from_slice(&LINKTYPE_RAW.to_be_bytes());
        for v in [7u32, 9, 2, 2] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h.extend_from_slice(&[0xaa, 0xbb]);
        let recs: Vec<Record> = Reader::new(&h[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            recs,
            vec![Record {
                ts_ns: 7_000_000_009,
                orig_len: 2,
                data: vec![0xaa, 0xbb]
            }]
        );
    }

    #[test]
    fn damaged_files_are_errors() {
        let mut w = Writer::new(Vec::new(), LINKTYPE_RAW).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let bytes = w.finish().unwrap();
        assert!(matches!(
            Reader::new(&b"not a pcap file at all.."[..]),
            Err(PcapError::NotPcap)
        ));
        assert!(matches!(
            Reader::new(&bytes[..10]),
            Err(PcapError::Truncated)
        ));
        for cut in 25..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]).unwrap();
            assert!(
                matches!(r.next_record(), Err(PcapError::Truncated)),
                "cut at {cut}"
            );
        }
        let mut huge = bytes.clone();
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Reader::new(&huge[..]).unwrap().next_record(),
            Err(PcapError::Oversized(_))
        ));
    }
}
