//! The fwc datapath: hook pipeline, connection tracking, NAT and IPVS.
//!
//! Not built yet (issue 4). Until then the reference interpreter in `fwc-compiler` is the only
//! executor of compiled programs; this crate exists so that the workspace layout is stable.
