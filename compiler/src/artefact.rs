//! The build artefact: a checked program, versioned, that the runtime loads.
//!
//! Layout: one header line `fwc-artefact <format> <compiler-version>\n`, then the IR as JSON.
//! A file without the header is foreign; a different format or compiler version is stale and
//! must be rebuilt (the IR carries no stability promise across versions).

use crate::ir::Program;
use serde::{Deserialize, Serialize};

/// Bumped whenever the IR's shape or meaning changes.
pub const IR_VERSION: u32 = 1;
pub const MAGIC: &str = "fwc-artefact";

#[derive(Deserialize)]
struct Body {
    program: Program,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    program: &'a Program,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtefactError {
    /// not an fwc artefact at all
    Foreign,
    /// built by another version of fwc
    Stale { format: String, compiler: String },
    /// header fine, body damaged
    Corrupt(String),
}

impl std::fmt::Display for ArtefactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtefactError::Foreign => write!(f, "not an fwc artefact (no `{MAGIC}` header); pass a `.fw` file or the output of `fwc build`"),
            ArtefactError::Stale { format, compiler } => write!(
                f,
                "stale artefact: built by fwc {compiler} (format {format}), this is fwc {} (format {IR_VERSION}); rebuild it with `fwc build`",
                env!("CARGO_PKG_VERSION")
            ),
            ArtefactError::Corrupt(e) => write!(f, "damaged artefact: {e}; rebuild it with `fwc build`"),
        }
    }
}

pub fn header() -> String {
    format!("{MAGIC} {IR_VERSION} {}\n", env!("CARGO_PKG_VERSION"))
}

pub fn write(p: &Program) -> Vec<u8> {
    let mut out = Vec::new();
    // writing plain data into memory cannot fail
    let _ = write_to(p, &mut out);
    out
}

/// Streams the artefact to `w`.
pub fn write_to(p: &Program, mut w: impl std::io::Write) -> std::io::Result<()> {
    w.write_all(header().as_bytes())?;
    serde_json::to_writer(&mut w, &BodyRef { program: p })?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Does this look like an artefact (rather than `.fw` source)?
pub fn is_artefact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC.as_bytes())
}

pub fn read(bytes: &[u8]) -> Result<Program, ArtefactError> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(ArtefactError::Foreign)?;
    let head = std::str::from_utf8(&bytes[..nl]).map_err(|_| ArtefactError::Foreign)?;
    let mut parts = head.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(ArtefactError::Foreign);
    }
    let format = parts.next().unwrap_or("").to_string();
    let compiler = parts.next().unwrap_or("").to_string();
    if format != IR_VERSION.to_string() || compiler != env!("CARGO_PKG_VERSION") {
        return Err(ArtefactError::Stale { format, compiler });
    }
    let body: Body = serde_json::from_slice(&bytes[nl + 1..])
        .map_err(|e| ArtefactError::Corrupt(e.to_string()))?;
    let errs = crate::ir::verify(&body.program);
    if !errs.is_empty() {
        return Err(ArtefactError::Corrupt(format!(
            "IR verification failed: {}",
            errs.join("; ")
        )));
    }
    Ok(body.program)
}
