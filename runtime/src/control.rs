//! The control socket of a running datapath: a Unix stream socket (mode 0600) on which
//! `fwc conntrack`, `fwc ipvs` and `fwc reload` ask a live `fwc run` for its tables or give
//! it a new program.
//!
//! The protocol is one request per connection: the client writes one line, the datapath
//! answers with a status line (`ok` or `error MESSAGE`) followed by the body and closes.
//! Requests are served between packets, on the datapath's own thread, so an answer is a
//! consistent snapshot and a reload swaps the program between two packets: every packet sees
//! the old rules or the new ones, never a mix.

use crate::datapath::Datapath;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `fwc run` listens and the other commands connect unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fwc.sock";

/// The longest request line accepted.
const MAX_REQUEST: u64 = 4096;

/// A request, as sent on the wire (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `conntrack -L`: the connection table
    ConntrackList,
    /// `conntrack -C`: the number of connections
    ConntrackCount,
    /// `conntrack -F`: delete every connection
    ConntrackFlush,
    /// `ipvsadm -L -n`
    IpvsList,
    /// `ipvsadm -L -n --stats`
    IpvsStats,
    /// `ipvsadm -L -n --rate`
    IpvsRate,
    /// `ipvsadm -L -c -n`
    IpvsConnections,
    /// the rules with their counters (`iptables -L -v -x`), with rule numbers or not
    List { line_numbers: bool },
    /// the rules' counters as JSON, the profile `fwc build --profile` reads
    Counters,
    /// compile this file (source or artefact) and swap it in
    Reload(PathBuf),
    /// `fwc rules ARGS`: an iptables-style command on the running rule set
    Rules(Vec<String>),
    /// `fwc save`: the running rule set as fw source
    Save,
}

impl Request {
    pub fn to_line(&self) -> String {
        match self {
            Request::ConntrackList => "conntrack -L".into(),
            Request::ConntrackCount => "conntrack -C".into(),
            Request::ConntrackFlush => "conntrack -F".into(),
            Request::IpvsList => "ipvs -L -n".into(),
            Request::IpvsStats => "ipvs -L -n --stats".into(),
            Request::IpvsRate => "ipvs -L -n --rate".into(),
            Request::IpvsConnections => "ipvs -L -c -n".into(),
            Request::List {
                line_numbers: false,
            } => "list".into(),
            Request::List { line_numbers: true } => "list --line-numbers".into(),
            Request::Counters => "counters --json".into(),
            Request::Reload(p) => format!("reload {}", p.display()),
            // arguments may hold spaces and quotes: tab-separated (a tab or newline in one
            // is refused by the client)
            Request::Rules(args) => format!("rules\t{}", args.join("\t")),
            Request::Save => "save".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        let line = line.trim_end_matches(['\r', '\n']);
        Some(match line {
            "conntrack -L" => Request::ConntrackList,
            "conntrack -C" => Request::ConntrackCount,
            "conntrack -F" => Request::ConntrackFlush,
            "ipvs -L -n" => Request::IpvsList,
            "ipvs -L -n --stats" => Request::IpvsStats,
            "ipvs -L -n --rate" => Request::IpvsRate,
            "ipvs -L -c -n" => Request::IpvsConnections,
            "list" => Request::List {
                line_numbers: false,
            },
            "list --line-numbers" => Request::List { line_numbers: true },
            "counters --json" => Request::Counters,
            "save" => Request::Save,
            _ if line.starts_with("rules\t") => Request::Rules(
                line["rules\t".len()..]
                    .split('\t')
                    .map(str::to_string)
                    .collect(),
            ),
            _ => Request::Reload(PathBuf::from(line.strip_prefix("reload ")?)),
        })
    }
}

/// The answer to a request: success and the text to print, or the error.
pub type Reply = Result<String, String>;

/// What the datapath's owner does for the requests about its program: compile a file for
/// `reload`, and, when it keeps the rule set's source, edit it (`fwc rules`) and give it back
/// (`fwc save`). A closure that compiles a file is enough for the first alone.
pub trait Rules {
    /// Compiles `path` (source or artefact) into a program to swap in.
    fn reload(&mut self, path: &Path) -> Result<fwc_jit::JitProgram, String>;
    /// `fwc rules ARGS`; a changed rule set is swapped into `dp` before the reply.
    fn command(&mut self, _dp: &mut Datapath, _args: &[String]) -> Reply {
        Err(
            "this datapath keeps no rule-set source to edit (it was started from an artefact)"
                .into(),
        )
    }
    /// `fwc save`: the running rule set as fw source.
    fn save(&self) -> Reply {
        Err("this datapath keeps no rule-set source (it was started from an artefact)".into())
    }
}

impl<F: FnMut(&Path) -> Result<fwc_jit::JitProgram, String>> Rules for F {
    fn reload(&mut self, path: &Path) -> Result<fwc_jit::JitProgram, String> {
        self(path)
    }
}

/// The listening side, owned by the datapath's loop.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Control {
    /// Listens on `path` with mode 0600. A socket file left behind by a datapath that is gone
    /// is replaced; one that a running datapath still answers on is an error.
    pub fn bind(path: &Path) -> io::Result<Control> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "`{}` is in use by another running datapath (give another --socket)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves every request waiting, without blocking when there is none. `now` is the
    /// datapath's clock (ms); `rules` compiles files and edits the rule set.
    pub fn poll(&mut self, dp: &mut Datapath, now: u64, rules: &mut dyn Rules) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            // a client that stalls cannot hold the datapath for long
            let _ = serve(stream, |req| handle(req, dp, now, rules));
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, mut f: impl FnMut(Request) -> Reply) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match Request::parse(&line) {
        Some(r) => f(r),
        None => Err(format!("unknown request `{}`", line.trim_end())),
    };
    let mut w = io::BufWriter::new(&stream);
    match reply {
        Ok(body) => {
            w.write_all(b"ok\n")?;
            w.write_all(body.as_bytes())?;
        }
        Err(msg) => writeln!(w, "error {}", msg.replace('\n', " "))?,
    }
    w.flush()
}

/// Answers one request against the datapath.
pub fn handle(req: Request, dp: &mut Datapath, now: u64, rules: &mut dyn Rules) -> Reply {
    match req {
        Request::ConntrackList => {
            let list = dp.ct.list(now);
            let n = list.lines().count();
            Ok(format!(
                "{list}conntrack v1.4.7 (conntrack-tools): {n} flow entries have been shown.\n"
            ))
        }
        Request::ConntrackCount => Ok(format!("{}\n", dp.ct.len())),
        Request::ConntrackFlush => {
            dp.ct.flush();
            Ok(
                "conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied.\n"
                    .into(),
            )
        }
        Request::IpvsList => Ok(dp.ipvs_listing()),
        Request::IpvsStats => Ok(dp.ipvs_stats_listing()),
        Request::IpvsRate => Ok(dp.ipvs_rates_listing()),
        Request::IpvsConnections => Ok(dp.ipvs_connections_listing()),
        Request::List { line_numbers } => Ok(list_rules(dp, line_numbers)),
        Request::Counters => Ok(counters_json(dp)),
        Request::Reload(path) => {
            let jit = rules.reload(&path)?;
            dp.replace_program(jit);
            Ok(String::new())
        }
        Request::Rules(args) => rules.command(dp, &args),
        Request::Save => rules.save(),
    }
}

/// The base chains and the subchains with their rules and counters, as `iptables -L -v -x`
/// shows them: per chain a header, then one line per rule with its packets and bytes, the
/// rule in the IR's text form and its source location.
pub fn list_rules(dp: &Datapath, line_numbers: bool) -> String {
    list_chains(dp, line_numbers, true, None).unwrap_or_default()
}

/// `fwc rules -L [CHAIN] [--line-numbers] [-v]`: as `fwc list`, for one chain (`filter/input`
/// or a subchain's name, every instance of it) or all, counters only with `verbose`.
pub fn list_chains(dp: &Datapath, line_numbers: bool, verbose: bool, chain: Option<&str>) -> Reply {
    use fwc_compiler::ir::{rule_text, ChainKind, Policy};
    use std::fmt::Write as _;
    let p = dp.program();
    let counters = dp.rule_counters();
    let policies = dp.policy_counters();
    let mut out = String::new();
    let mut shown = 0;
    for (i, c) in p.chains.iter().enumerate() {
        if chain.is_some_and(|want| want != c.display_name() && want != c.name) {
            continue;
        }
        if shown > 0 {
            out.push('\n');
        }
        shown += 1;
        match &c.kind {
            ChainKind::Base { policy, .. } => {
                let policy = match policy {
                    Policy::Accept => "accept",
                    Policy::Drop => "drop",
                };
                let (pk, by) = policies.get(i).copied().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "Chain {} (policy {policy} {pk} packets, {by} bytes)",
                    c.display_name()
                );
            }
            ChainKind::Sub { .. } => {
                let _ = writeln!(out, "Chain {}", c.display_name());
            }
        }
        let num = if line_numbers { "num  " } else { "" };
        if verbose {
            let _ = writeln!(out, "{num}{:>10} {:>12}  rule", "pkts", "bytes");
        } else {
            let _ = writeln!(out, "{num}rule");
        }
        for (k, r) in c.rules.iter().enumerate() {
            let (pk, by) = counters.get(r.id.0 as usize).copied().unwrap_or_default();
            let num = if line_numbers {
                format!("{:<5}", k + 1)
            } else {
                String::new()
            };
            let counts = if verbose {
                format!("{pk:>10} {by:>12}  ")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{num}{counts}{}  # {}",
                rule_text(p, r),
                p.rule_location(r.id)
            );
        }
    }
    match chain {
        Some(c) if shown == 0 => Err(format!("no chain `{c}`")),
        _ => Ok(out),
    }
}

/// The rules' counters as JSON: `{"rules":[{"location":"FILE:LINE","chain":...,"packets":N,
/// "bytes":N},...]}`, which `fwc build --profile` reads back.
pub fn counters_json(dp: &Datapath) -> String {
    let p = dp.program();
    let counters = dp.rule_counters();
    let rules: Vec<serde_json::Value> = p
        .chains
        .iter()
        .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
        .map(|(c, r)| {
            let (packets, bytes) = counters.get(r.id.0 as usize).copied().unwrap_or_default();
            serde_json::json!({
                "location": p.rule_location(r.id),
                "chain": c.display_name(),
                "packets": packets,
                "bytes": bytes,
            })
        })
        .collect();
    format!("{}\n", serde_json::json!({ "rules": rules }))
}

/// The client side: sends `req` to the datapath listening on `socket` and returns its reply.
pub fn request(socket: &Path, req: &Request) -> io::Result<Reply> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot connect to `{}`: {e} (is `fwc run` serving there?)",
                socket.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    writeln!(s, "{}", req.to_line())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (status, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    if status == "ok" {
        Ok(Ok(body.to_string()))
    } else if let Some(msg) = status.strip_prefix("error ") {
        Ok(Err(msg.to_string()))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the datapath's answer is not understood",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::ConntrackList,
            Request::ConntrackCount,
            Request::ConntrackFlush,
            Request::IpvsList,
            Request::IpvsStats,
            Request::IpvsRate,
            Request::IpvsConnections,
            Request::List { line_numbers: true },
            Request::List {
                line_numbers: false,
            },
            Request::Counters,
            Request::Reload(PathBuf::from("/etc/fwc/host.fw")),
        ] {
            assert_eq!(Request::parse(&(r.to_line() + "\n")), Some(r));
        }
        assert_eq!(Request::parse("conntrack -X\n"), None);
    }
}
