//! The fwc datapath: hook pipeline, connection tracking, NAT and IPVS (issue 4).
//!
//! Built so far: [`wire`], the packet formats every later stage reads and rewrites.

pub mod conntrack;
pub mod ipvs;
pub mod nat;
pub mod wire;
