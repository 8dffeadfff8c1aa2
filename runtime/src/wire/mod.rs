//! Packet formats, smoltcp style: a zero-copy view `Xxx<T: AsRef<[u8]>>` over a buffer, made
//! with `new_checked` (which verifies that every field the accessors read lies inside the
//! buffer), and a parsed `XxxRepr` with `parse` and `emit`.
//!
//! Nothing here reads out of bounds: a view is only made after its length checks, accessors
//! index within the checked lengths, and every error is a value ([`Error`]).

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

use std::fmt;

/// Why a buffer is not a valid packet of the expected format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// shorter than the format's fixed header, or than a length field says
    Truncated,
    /// a field holds a value the format forbids (version, header length, ...)
    Malformed,
    /// the checksum does not verify
    Checksum,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
            Error::Checksum => "bad checksum",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Big-endian reads and writes on slices whose bounds the caller has checked.
pub(crate) mod be {
    pub fn u16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    pub fn u32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}
