//! The fwc datapath: a userspace netfilter (hook pipeline, connection tracking, NAT, IPVS)
//! around the JIT-compiled classifier, and its packet sources. Each module is usable and
//! tested on its own:
//! - [`wire`]: zero-copy packet views and parsed representations, checksums;
//! - [`conntrack`]: the connection table and the TCP/UDP/ICMP trackers;
//! - [`nat`]: NAT tuple choice and packet translation through conntrack;
//! - [`ipvs`]: virtual services, their schedulers, IPVS's own connection table;
//! - [`datapath`]: one frame through the hooks (tables, conntrack, NAT, registered
//!   functions, IPVS forwarding);
//! - [`pcap`]: reading and writing capture files;
//! - [`log`]: the kernel's packet log and audit lines;
//! - [`nfqueue`]: NFQUEUE over raw netlink, with batched verdicts;
//! - [`live`]: the NFQUEUE workers, the kernel's routes and this host's addresses;
//! - [`afpacket`]: the AF_PACKET router;
//! - [`control`]: the control socket (`fwc conntrack`, `fwc ipvs`, `fwc list`, reload).

pub mod afpacket;
pub mod conntrack;
pub mod control;
pub mod datapath;
pub mod ipvs;
pub mod live;
pub mod log;
pub mod nat;
pub mod nfqueue;
pub mod pcap;
pub mod wire;
