//! Types of fw values, the values themselves, and the tables of well-known names.

use crate::ir::{Elem, Field};
use std::fmt;
use std::net::Ipv4Addr;

/// The static type of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Ip,
    Prefix,
    IpRange,
    /// an integer literal: fits `port`, `mark`, `proto`... checked by value where used
    Int,
    /// an integer range literal (`1024-65535`)
    IntRange,
    Float,
    Str,
    Rate,
    /// a bare name: an interface, a protocol, an ICMP type...
    Name,
    Port,
    PortRange,
    Proto,
    Iface,
    Mark,
    /// a set mixing names and numbers (`{ tcp, 47 }`, `{ echo-request, 13 }`)
    NameOrInt,
    Set(Box<Ty>),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Ip => f.write_str("ip"),
            Ty::Prefix => f.write_str("prefix"),
            Ty::IpRange => f.write_str("iprange"),
            Ty::Int => f.write_str("integer"),
            Ty::IntRange => f.write_str("integer range"),
            Ty::Float => f.write_str("decimal number"),
            Ty::Str => f.write_str("string"),
            Ty::Rate => f.write_str("rate"),
            Ty::Name => f.write_str("name"),
            Ty::Port => f.write_str("port"),
            Ty::PortRange => f.write_str("portrange"),
            Ty::Proto => f.write_str("proto"),
            Ty::Iface => f.write_str("iface"),
            Ty::Mark => f.write_str("mark"),
            Ty::NameOrInt => f.write_str("name or number"),
            Ty::Set(t) => write!(f, "set<{}>", t.set_elem_name()),
        }
    }
}

impl Ty {
    fn set_elem_name(&self) -> String {
        match self {
            Ty::Ip | Ty::Prefix | Ty::IpRange => "ip".into(),
            Ty::Int | Ty::IntRange => "int".into(),
            Ty::Name => "name".into(),
            t => t.to_string(),
        }
    }

    /// The family elements join within inside a set.
    pub fn family(&self) -> Option<Family> {
        Some(match self {
            Ty::Ip | Ty::Prefix | Ty::IpRange => Family::Addr,
            Ty::Int | Ty::IntRange | Ty::Port | Ty::PortRange | Ty::Mark | Ty::Proto => Family::Int,
            Ty::Name | Ty::Iface => Family::Name,
            Ty::Str => Family::Str,
            Ty::Float => Family::Float,
            Ty::Rate => Family::Rate,
            Ty::NameOrInt => Family::NameOrInt,
            Ty::Set(_) => return None,
        })
    }

    /// Parses a declared parameter type name (`set<..>` is handled by the caller).
    pub fn from_name(s: &str) -> Option<Ty> {
        Some(match s {
            "ip" => Ty::Ip,
            "prefix" => Ty::Prefix,
            "iprange" => Ty::IpRange,
            "port" => Ty::Port,
            "portrange" => Ty::PortRange,
            "proto" => Ty::Proto,
            "iface" => Ty::Iface,
            "mark" => Ty::Mark,
            "string" => Ty::Str,
            "rate" => Ty::Rate,
            _ => return None,
        })
    }

    /// Can a value of type `actual` be passed where `self` (a declared type) is expected?
    pub fn accepts(&self, actual: &Ty) -> bool {
        use Ty::*;
        match (self, actual) {
            (a, b) if a == b => true,
            (Prefix, Ip) => true,
            (Port, Int) => true,
            (PortRange, Int | IntRange | Port) => true,
            (Proto, Int | Name) => true,
            (Iface, Name | Str) => true,
            (Mark, Int) => true,
            (Set(d), Set(a)) => match (&**d, &**a) {
                // a set of addresses holds addresses in any form
                (Ip | Prefix | IpRange, Ip | Prefix | IpRange) => true,
                (Port | PortRange, Int | IntRange | Port | PortRange) => true,
                (Mark, Int | IntRange | Mark) => true,
                (d, a) => d.accepts(a),
            },
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Addr,
    Int,
    Name,
    Str,
    Float,
    Rate,
    NameOrInt,
}

impl Family {
    /// Families that may share a set: names and numbers (protocols, ICMP types).
    pub fn join(self, o: Family) -> Option<Family> {
        use Family::*;
        match (self, o) {
            (a, b) if a == b => Some(a),
            // interface names, bare or quoted
            (Name, Str) | (Str, Name) => Some(Name),
            (Name | Int | NameOrInt, Name | Int | NameOrInt) => Some(NameOrInt),
            _ => None,
        }
    }

    /// The element type a set of this family gets.
    pub fn set_elem(self) -> Ty {
        match self {
            Family::Addr => Ty::Ip,
            Family::Int => Ty::Int,
            Family::Name => Ty::Name,
            Family::Str => Ty::Str,
            Family::Float => Ty::Float,
            Family::Rate => Ty::Rate,
            Family::NameOrInt => Ty::NameOrInt,
        }
    }
}

/// A compile-time value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Ip(u32),
    Prefix(u32, u8),
    IpRange(u32, u32),
    Int(u64),
    IntRange(u64, u64),
    Float(f64),
    Str(String),
    /// count per `secs`
    Rate(u64, u64),
    Name(String),
    Set(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Ip(a) => write!(f, "{}", Ipv4Addr::from(*a)),
            Value::Prefix(a, l) => write!(f, "{}/{}", Ipv4Addr::from(*a), l),
            Value::IpRange(a, b) => write!(f, "{}-{}", Ipv4Addr::from(*a), Ipv4Addr::from(*b)),
            Value::Int(i) => write!(f, "{i}"),
            Value::IntRange(a, b) => write!(f, "{a}-{b}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Rate(n, s) => write!(f, "{n}/{}", rate_unit_name(*s)),
            Value::Name(n) => f.write_str(n),
            Value::Set(v) => {
                f.write_str("{ ")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

impl Value {
    /// Flattens nested sets (a set define spliced into a set).
    pub fn flatten_into(&self, out: &mut Vec<Value>) {
        match self {
            Value::Set(v) => v.iter().for_each(|x| x.flatten_into(out)),
            other => out.push(other.clone()),
        }
    }

    /// The IR constants for a numeric field. Names must already be validated.
    pub fn elems(&self, field: Field) -> Vec<Elem> {
        let mut flat = Vec::new();
        self.flatten_into(&mut flat);
        flat.iter()
            .filter_map(|v| match v {
                Value::Ip(a) => Some(Elem::Exact(*a)),
                Value::Prefix(a, l) => {
                    if *l >= 32 {
                        Some(Elem::Exact(*a))
                    } else {
                        Some(Elem::Prefix(a & crate::ir::prefix_mask(*l), *l))
                    }
                }
                Value::IpRange(a, b) => Some(if a == b {
                    Elem::Exact(*a)
                } else {
                    Elem::Range(*a, *b)
                }),
                Value::Int(i) => Some(Elem::Exact(*i as u32)),
                Value::IntRange(a, b) => Some(if a == b {
                    Elem::Exact(*a as u32)
                } else {
                    Elem::Range(*a as u32, *b as u32)
                }),
                Value::Name(n) => match field {
                    Field::Proto => proto_number(n).map(|p| Elem::Exact(p.into())),
                    Field::IcmpType => icmp_type_number(n).map(|p| Elem::Exact(p.into())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

pub const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("sctp", 132),
    ("udplite", 136),
];

pub fn proto_number(s: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
}

pub fn proto_name(p: u8) -> Option<&'static str> {
    PROTOCOLS.iter().find(|(_, n)| *n == p).map(|(s, _)| *s)
}

pub const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

pub fn icmp_type_number(s: &str) -> Option<u8> {
    ICMP_TYPES.iter().find(|(n, _)| *n == s).map(|(_, p)| *p)
}

pub fn icmp_type_name(t: u8) -> Option<&'static str> {
    ICMP_TYPES.iter().find(|(_, n)| *n == t).map(|(s, _)| *s)
}

/// `reject with icmp NAME` codes (destination unreachable), nft and iptables spellings.
pub const REJECT_CODES: &[(&str, u8)] = &[
    ("net-unreachable", 0),
    ("host-unreachable", 1),
    ("prot-unreachable", 2),
    ("proto-unreachable", 2),
    ("port-unreachable", 3),
    ("net-prohibited", 9),
    ("host-prohibited", 10),
    ("admin-prohibited", 13),
];

pub fn reject_code(s: &str) -> Option<u8> {
    let s = s.strip_prefix("icmp-").unwrap_or(s);
    REJECT_CODES.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
}

pub fn log_level(s: &str) -> Option<u8> {
    let s = match s {
        "warning" => "warn",
        "error" => "err",
        "emergency" => "emerg",
        "critical" => "crit",
        o => o,
    };
    crate::ir::LOG_LEVELS
        .iter()
        .position(|l| *l == s)
        .map(|p| p as u8)
}

pub fn rate_unit(s: &str) -> Option<u64> {
    Some(match s {
        "second" | "seconds" | "sec" | "s" => 1,
        "minute" | "minutes" | "min" | "m" => 60,
        "hour" | "hours" | "h" => 3600,
        "day" | "days" | "d" => 86400,
        _ => return None,
    })
}

pub fn rate_unit_name(secs: u64) -> &'static str {
    match secs {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        _ => "day",
    }
}

pub const SCHEDULERS: &[&str] = &["rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh"];

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment), for
/// "did you mean" hints: `tpc` is one edit from `tcp`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The closest candidate within a third of the name's length.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_accept_literals() {
        assert!(Ty::Port.accepts(&Ty::Int));
        assert!(Ty::Set(Box::new(Ty::Ip)).accepts(&Ty::Set(Box::new(Ty::Prefix))));
        assert!(Ty::Set(Box::new(Ty::Port)).accepts(&Ty::Set(Box::new(Ty::Int))));
        assert!(!Ty::Set(Box::new(Ty::Port)).accepts(&Ty::Set(Box::new(Ty::Ip))));
        assert!(!Ty::Ip.accepts(&Ty::Prefix));
        assert_eq!(Ty::Set(Box::new(Ty::Ip)).to_string(), "set<ip>");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("admin", ["admins", "web"]), Some("admins"));
        assert_eq!(suggest("zzz", ["admins", "web"]), None);
        assert_eq!(suggest("tpc", ["tcp", "udp"]), Some("tcp"));
        assert_eq!(suggest("akc", ["ack", "syn"]), Some("ack"));
    }

    #[test]
    fn prefix_elems_drop_host_bits() {
        assert_eq!(
            Value::Prefix(0x0a01_0203, 8).elems(Field::Saddr),
            vec![Elem::Prefix(0x0a00_0000, 8)]
        );
    }
}
