//! The fwc datapath: hook pipeline, connection tracking, NAT and IPVS (issue 4).
//!
//! Built so far, each usable and tested on its own:
//! - [`wire`]: zero-copy packet views and parsed representations, checksums;
//! - [`conntrack`]: the connection table and the TCP/UDP/ICMP trackers;
//! - [`nat`]: NAT tuple choice and packet translation through conntrack;
//! - [`ipvs`]: virtual services and their schedulers;
//! - [`pcap`]: reading and writing capture files.
//!
//! Still to come: the hook pipeline that runs the compiled program (the JIT) between these,
//! and the packet sources (NFQUEUE, AF_PACKET, pcap replay) with the control socket.

pub mod afpacket;
pub mod conntrack;
pub mod control;
pub mod datapath;
pub mod ipvs;
pub mod live;
pub mod nat;
pub mod pcap;
pub mod wire;
