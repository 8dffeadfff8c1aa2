//! `fwc`: the command line. A thin layer over `fwc-compiler`: argument parsing, reading
//! files, choosing renderers and exit codes.
//!
//! Exit codes: 0 success; 1 the program has errors (or a test failed, or warnings were
//! denied); 2 the invocation was wrong or an input could not be read.

mod lsp;
use clap::{Parser, Subcommand, ValueEnum};
use fwc_compiler::check::Checked;
use fwc_compiler::diag::{self, Diagnostic, Severity};
use fwc_compiler::interp::{self, FreshOracle, Outcome};
use fwc_compiler::ir::{self, Program};
use fwc_compiler::source::SourceMap;
use fwc_compiler::{artefact, testrun, Compilation};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fwc",
    version,
    about = "The fw firewall language: check, build, test and explain rule sets"
)]
struct Cli {
    /// When to colour diagnostics
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// How to print diagnostics: for people, or one JSON object per line
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Make a lint (a warning or note code, or `warnings` for all warnings) an error; repeatable, or comma-separated
    #[arg(long, global = true, value_name = "CODE", value_delimiter = ',')]
    deny: Vec<String>,
    /// Silence a lint (a warning or note code); repeatable, or comma-separated
    #[arg(long, global = true, value_name = "CODE", value_delimiter = ',')]
    allow: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    /// one JSON object per diagnostic, on standard error
    Json,
    /// one SARIF 2.1.0 log on standard output (`check`, `build`)
    Sarif,
    /// `test`: the report as JUnit XML on standard output
    Junit,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
enum Emit {
    /// the versioned artefact the runtime loads
    Artefact,
    /// the typed IR as text (after optimization)
    Ir,
    /// the Cranelift IR of the JIT classifier, function by function
    Clif,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
enum ImportFrom {
    /// `iptables-save` output (also `iptables-restore` input)
    IptablesSave,
}

#[derive(Copy, Clone, ValueEnum, PartialEq, Eq)]
enum ExportTarget {
    /// an `iptables-restore` script
    Iptables,
    /// an `nft -f` script (tables `fwc_<table>`)
    Nft,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a program: syntax, names, types, legality; warnings for dead rules
    Check {
        file: PathBuf,
        /// Exit 1 on warnings too
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Check and compile a program into an artefact (or print its IR)
    Build {
        file: PathBuf,
        /// Output file (default: FILE with the extension .fwo; `-` for stdout)
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// What to write
        #[arg(long, value_enum, default_value_t = Emit::Artefact)]
        emit: Emit,
        /// Per-rule hit counts (`{"rules": [{"location": "FILE:LINE", "packets": N}]}`) to order
        /// rules by
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Skip the optimizer (dead and redundant rule removal, rule ordering)
        #[arg(long)]
        no_opt: bool,
    },
    /// Run the program's `test` blocks through the reference interpreter
    Test { file: PathBuf },
    /// Run the datapath: conntrack, NAT and the compiled rules over packets
    Run {
        /// A `.fw` program or a `fwc build` artefact
        rules: PathBuf,
        /// Replay a capture (Ethernet or raw IP), offline and deterministic
        #[arg(
            long,
            conflicts_with_all = ["nfqueue", "afpacket"],
            required_unless_present_any = ["nfqueue", "afpacket"],
            requires = "out"
        )]
        pcap: Option<PathBuf>,
        /// Where accepted packets go, rewritten, in order (with --pcap)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Serve these NFQUEUE queue numbers (iptables ... -j NFQUEUE --queue-num N)
        #[arg(long, value_delimiter = ',')]
        nfqueue: Vec<u16>,
        /// Route between these interfaces over AF_PACKET (with the kernel's ip_forward off)
        #[arg(long, value_delimiter = ',', conflicts_with = "nfqueue")]
        afpacket: Vec<String>,
        /// With --nfqueue: let the kernel accept packets when the queue is full
        #[arg(long)]
        fail_open: bool,
        /// With --nfqueue or --afpacket: stop after this many seconds (default: until SIGINT or SIGTERM)
        #[arg(long)]
        duration: Option<u64>,
        /// This host's addresses: packets to them take the input path, the rest forward (live default: its interfaces' addresses)
        #[arg(long, value_delimiter = ',')]
        local: Vec<std::net::Ipv4Addr>,
        /// The input interface every packet of the capture is taken to arrive on
        #[arg(long)]
        iif: Option<String>,
        /// The output interface forwarded packets leave by
        #[arg(long)]
        oif: Option<String>,
        /// Print the connection table at the end, as `conntrack -L` does
        #[arg(long)]
        conntrack: bool,
        /// A conntrack setting by its Linux sysctl name, e.g. `nf_conntrack_max=262144` or `net.netfilter.nf_conntrack_tcp_timeout_established=3600` (repeatable)
        #[arg(long = "sysctl", value_name = "KEY=VALUE")]
        sysctls: Vec<String>,
        /// Print the virtual services at the end, as `ipvsadm -L -n` does
        #[arg(long)]
        ipvs: bool,
        /// With --nfqueue or --afpacket: the control socket `fwc conntrack`, `fwc ipvs`, `fwc list`, `fwc counters` and `fwc reload` use
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// A language server over standard input and output, for editors
    Lsp,
    /// Format programs in the one canonical layout (comments kept), in place
    Fmt {
        /// Only report the files that would change (exit 1 if any), writing nothing
        #[arg(long)]
        check: bool,
        /// The files
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Translate an `iptables-save` dump into an fw program
    Import {
        /// The input's format
        #[arg(long, value_enum, default_value_t = ImportFrom::IptablesSave)]
        from: ImportFrom,
        file: PathBuf,
        /// Output file (default: standard output)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the program as a kernel rule set: an `iptables-restore` or `nft -f` script
    Export {
        /// The kernel front end to write for
        #[arg(long, value_enum, default_value_t = ExportTarget::Iptables)]
        target: ExportTarget,
        file: PathBuf,
        /// Output file (default: standard output)
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// nft: a counter on every rule (iptables rules always count)
        #[arg(long)]
        counters: bool,
    },
    /// The packets whose verdict or rewrite changes between two programs (exit 1 if any)
    Diff {
        /// The program as it was
        old: PathBuf,
        /// The program as it is to be
        new: PathBuf,
        /// Most changes to report
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
    /// Ask a running datapath for its connections, as the `conntrack` tool does
    Conntrack {
        /// List the connections (the default)
        #[arg(short = 'L', long = "dump", group = "op")]
        list: bool,
        /// Print the number of connections
        #[arg(short = 'C', long = "count", group = "op")]
        count: bool,
        /// Delete every connection
        #[arg(short = 'F', long = "flush", group = "op")]
        flush: bool,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask a running datapath for its virtual services, as `ipvsadm -L -n` does
    Ipvs {
        /// List the virtual services and their real servers
        #[arg(short = 'L', long = "list")]
        list: bool,
        /// Numeric addresses and ports (always the case)
        #[arg(short = 'n', long = "numeric")]
        numeric: bool,
        /// The connections, with their states and timers (`ipvsadm -L -c -n`)
        #[arg(short = 'c', long = "connection", conflicts_with_all = ["stats", "rate"])]
        connection: bool,
        /// Connections, packets and bytes per service and real server
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Connections, packets and bytes per second per service and real server, estimated as the kernel does (2-second steps, weight 1/4)
        #[arg(long)]
        rate: bool,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// List a running datapath's rules with their packet and byte counters
    List {
        /// Number the rules of each chain
        #[arg(long)]
        line_numbers: bool,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print a running datapath's rule counters as JSON, the profile `fwc build --profile` reads
    Counters {
        /// JSON (the only format; accepted for scripts that say so)
        #[arg(long)]
        json: bool,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Give a running datapath a new program; its connections and their NAT are kept
    Reload {
        /// A `.fw` program or a `fwc build` artefact
        file: PathBuf,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// iptables-style commands on a running datapath's rule set, rules in fw syntax:
    /// `-A/-I/-D/-R/-C CHAIN ...`, `-F/-L/-S [CHAIN]`, `-N/-X/-E`, `-P CHAIN POLICY`,
    /// `-t TABLE` (default filter); each change is checked, compiled and swapped in
    #[command(allow_hyphen_values = true)]
    Rules {
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The command, as for iptables (e.g. `-A input 'tcp dport 22 accept'`)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a running datapath's rule set as fw source
    Save {
        /// Output file (default: standard output)
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The running datapath's control socket
        #[arg(long, default_value = fwc_runtime::control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Show the verdict for one packet and every rule it hits
    Explain {
        /// A `.fw` program or a `fwc build` artefact
        file: PathBuf,
        /// `PATH PROTO SRC[:PORT] -> DST[:PORT] [iif IF] [oif IF] [ct state S] [mark N] [type T] [flags F]`
        query: String,
    },
}

struct Out {
    color: bool,
    format: Format,
    /// `--deny` / `--allow`
    levels: diag::Levels,
}

impl Out {
    fn diags(&self, diags: &[Diagnostic], sm: &SourceMap) {
        let stderr = std::io::stderr();
        let mut e = std::io::BufWriter::new(stderr.lock());
        let mut human = diag::HumanRenderer::new(sm, self.color);
        if self.format == Format::Sarif {
            // one log for the whole compilation, on standard output
            println!(
                "{}",
                diag::render_sarif(diags, sm, env!("CARGO_PKG_VERSION"))
            );
            return;
        }
        for d in diags {
            let text = match self.format {
                // `test --format junit` reports diagnostics as a person reads them (SARIF
                // returned above)
                Format::Human | Format::Junit | Format::Sarif => human.render(d),
                Format::Json => format!("{}\n", diag::render_json(d, sm)),
            };
            let _ = e.write_all(text.as_bytes());
        }
        let _ = e.flush();
    }

    fn summary(&self, c: &Compilation) {
        if !matches!(self.format, Format::Human | Format::Junit) {
            return;
        }
        let errors = c
            .diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = c.warning_count();
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        if errors > 0 {
            eprintln!(
                "error: could not compile `{}` due to {}{}",
                c.loaded
                    .sm
                    .files()
                    .next()
                    .map(|(_, f)| f.name.as_str())
                    .unwrap_or("?"),
                plural(errors, "error"),
                if warnings > 0 {
                    format!("; {} emitted", plural(warnings, "warning"))
                } else {
                    String::new()
                }
            );
        } else if warnings > 0 {
            eprintln!("warning: {} emitted", plural(warnings, "warning"));
        }
    }

    fn error(&self, msg: &str) {
        match self.format {
            Format::Human | Format::Sarif | Format::Junit => eprintln!("error: {msg}"),
            Format::Json => eprintln!(
                "{}",
                serde_json::json!({"severity": "error", "message": msg})
            ),
        }
    }
}

fn compile(out: &Out, file: &Path) -> Result<Compilation, ExitCode> {
    match fwc_compiler::compile_path(file) {
        Ok(mut c) => {
            out.levels.apply(&mut c.diags);
            out.diags(&c.diags, &c.loaded.sm);
            out.summary(&c);
            Ok(c)
        }
        Err(e) => {
            out.error(&e);
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    // deeply nested input must give a diagnostic, not a stack overflow: run on a thread with
    // a large stack (reserved, not committed, until used), as rustc does
    match std::thread::Builder::new()
        .name("fwc".into())
        .stack_size(256 << 20)
        .spawn(real_main)
    {
        Ok(h) => h.join().unwrap_or(ExitCode::from(101)),
        Err(_) => real_main(),
    }
}

fn real_main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let levels = diag::Levels {
        deny: cli.deny,
        allow: cli.allow,
    };
    if let Err(e) = levels.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let fits = match cli.format {
        Format::Sarif => matches!(cli.cmd, Cmd::Check { .. } | Cmd::Build { .. }),
        Format::Junit => matches!(cli.cmd, Cmd::Test { .. }),
        Format::Human | Format::Json => true,
    };
    if !fits {
        eprintln!(
            "error: --format {} is for {}",
            if cli.format == Format::Sarif {
                "sarif"
            } else {
                "junit"
            },
            if cli.format == Format::Sarif {
                "`fwc check` and `fwc build`"
            } else {
                "`fwc test`"
            }
        );
        return ExitCode::from(2);
    }
    let out = Out {
        color,
        format: cli.format,
        levels,
    };
    match cli.cmd {
        Cmd::Check {
            file,
            deny_warnings,
        } => cmd_check(&out, &file, deny_warnings),
        Cmd::Build {
            file,
            output,
            emit,
            profile,
            no_opt,
        } => cmd_build(&out, &file, output, emit, profile, no_opt),
        Cmd::Test { file } => cmd_test(&out, &file),
        Cmd::Explain { file, query } => cmd_explain(&out, &file, &query),
        Cmd::Run {
            rules,
            pcap,
            out: dest,
            nfqueue,
            afpacket,
            fail_open,
            duration,
            local,
            iif,
            oif,
            conntrack,
            sysctls,
            ipvs,
            socket,
        } => {
            let mut ct = fwc_runtime::conntrack::Config::default();
            for s in &sysctls {
                if let Err(e) = ct.set(s) {
                    out.error(&format!("--sysctl: {e}"));
                    return ExitCode::from(2);
                }
            }
            let host = Host {
                local,
                conntrack: ct,
            };
            match (pcap, dest) {
                (Some(pcap), Some(dest)) => cmd_run(
                    &out,
                    &rules,
                    &pcap,
                    &dest,
                    host,
                    (iif, oif),
                    (conntrack, ipvs),
                ),
                _ => cmd_run_live(
                    &out,
                    &rules,
                    &if afpacket.is_empty() {
                        LiveSource::Nfqueue(nfqueue)
                    } else {
                        LiveSource::AfPacket(afpacket)
                    },
                    (fail_open, duration),
                    host,
                    (conntrack, ipvs),
                    &socket,
                ),
            }
        }
        Cmd::Import { from, file, output } => cmd_import(&out, from, &file, output.as_deref()),
        Cmd::Export {
            target,
            file,
            output,
            counters,
        } => cmd_export(&out, target, &file, output.as_deref(), counters),
        Cmd::Diff { old, new, max } => cmd_diff(&out, &old, &new, max),
        Cmd::Fmt { check, files } => cmd_fmt(&out, check, &files),
        Cmd::Lsp => match lsp::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                out.error(&format!("lsp: {e}"));
                ExitCode::from(1)
            }
        },
        Cmd::Conntrack {
            list: _,
            count,
            flush,
            socket,
        } => {
            use fwc_runtime::control::Request;
            let req = if count {
                Request::ConntrackCount
            } else if flush {
                Request::ConntrackFlush
            } else {
                Request::ConntrackList
            };
            cmd_control(&out, &socket, &req)
        }
        Cmd::Ipvs {
            list: _,
            numeric: _,
            connection,
            stats,
            rate,
            socket,
        } => cmd_control(
            &out,
            &socket,
            &if connection {
                fwc_runtime::control::Request::IpvsConnections
            } else if stats {
                fwc_runtime::control::Request::IpvsStats
            } else if rate {
                fwc_runtime::control::Request::IpvsRate
            } else {
                fwc_runtime::control::Request::IpvsList
            },
        ),
        Cmd::Reload { file, socket } => cmd_reload(&out, &file, &socket),
        Cmd::Rules { socket, args } => {
            if args.iter().any(|a| a.contains(['\t', '\n'])) {
                out.error("a tab or a line break in an argument");
                return ExitCode::from(2);
            }
            cmd_control(&out, &socket, &fwc_runtime::control::Request::Rules(args))
        }
        Cmd::Save { output, socket } => {
            match fwc_runtime::control::request(&socket, &fwc_runtime::control::Request::Save) {
                Ok(Ok(text)) => write_output(&out, &text, output.as_deref()),
                Ok(Err(msg)) => {
                    out.error(&msg);
                    ExitCode::from(1)
                }
                Err(e) => {
                    out.error(&format!("cannot reach `{}`: {e}", socket.display()));
                    ExitCode::from(2)
                }
            }
        }
        Cmd::List {
            line_numbers,
            socket,
        } => cmd_control(
            &out,
            &socket,
            &fwc_runtime::control::Request::List { line_numbers },
        ),
        Cmd::Counters { json: _, socket } => {
            cmd_control(&out, &socket, &fwc_runtime::control::Request::Counters)
        }
    }
}

fn cmd_check(out: &Out, file: &Path, deny_warnings: bool) -> ExitCode {
    if let Some(code) = refuse_artefact(out, file, "check") {
        return code;
    }
    let c = match compile(out, file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if c.has_errors() || (deny_warnings && c.warning_count() > 0) {
        if deny_warnings && !c.has_errors() && out.format == Format::Human {
            eprintln!("error: warnings are denied (--deny-warnings)");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn checked_or_exit(c: &Compilation) -> Option<&Checked> {
    if c.has_errors() {
        None
    } else {
        c.checked.as_ref()
    }
}

fn cmd_build(
    out: &Out,
    file: &Path,
    output: Option<PathBuf>,
    emit: Emit,
    profile: Option<PathBuf>,
    no_opt: bool,
) -> ExitCode {
    if is_artefact_file(file) {
        out.error(&format!(
            "`{}` is already a built artefact; build takes a `.fw` source file",
            file.display()
        ));
        return ExitCode::from(2);
    }
    let c = match compile(out, file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if c.has_errors() {
        return ExitCode::from(1);
    }
    // the program is all that is needed from here: free the sources and syntax trees first
    // (a 100K-rule program's AST is most of the build's memory)
    let Some(checked) = c.checked else {
        return ExitCode::from(1);
    };
    let mut program = checked.program;
    let profile = match profile.map(|p| {
        std::fs::read_to_string(&p)
            .map_err(|e| format!("cannot read `{}`: {e}", p.display()))
            .and_then(|t| fwc_compiler::opt::Profile::parse(&t))
    }) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            out.error(&e);
            return ExitCode::from(2);
        }
    };
    let report = if no_opt {
        None
    } else {
        Some(fwc_compiler::opt::optimize(&mut program, profile.as_ref()))
    };
    let dest = match (output, emit) {
        (Some(p), _) => p,
        (None, Emit::Ir | Emit::Clif) => PathBuf::from("-"),
        (None, Emit::Artefact) => file.with_extension("fwo"),
    };
    let bytes = match emit {
        Emit::Ir => ir::print(&program).into_bytes(),
        // streamed straight to the file: no second copy of a large program in memory
        Emit::Artefact if dest.as_os_str() != "-" => Vec::new(),
        Emit::Artefact => artefact::write(&program),
        Emit::Clif => {
            let opts = fwc_jit::Options {
                keep_clif: true,
                ..fwc_jit::Options::default()
            };
            match fwc_jit::JitProgram::compile(&program, opts) {
                Ok(j) => j.clif().unwrap_or_default().as_bytes().to_vec(),
                Err(e) => {
                    out.error(&e.to_string());
                    return ExitCode::from(1);
                }
            }
        }
    };
    let written = if dest.as_os_str() == "-" {
        let _ = std::io::stdout().write_all(&bytes);
        Ok(())
    } else if emit == Emit::Artefact {
        std::fs::File::create(&dest)
            .and_then(|f| artefact::write_to(&program, std::io::BufWriter::new(f)))
    } else {
        std::fs::write(&dest, &bytes)
    };
    if let Err(e) = written {
        out.error(&format!("cannot write `{}`: {e}", dest.display()));
        return ExitCode::from(2);
    }
    if out.format == Format::Human {
        let n = |k: usize, w: &str| format!("{k} {w}{}", if k == 1 { "" } else { "s" });
        let kept: usize = program.chains.iter().map(|c| c.rules.len()).sum();
        if dest.as_os_str() != "-" {
            eprintln!(
                "built `{}`: {}, {} ({} in the source), {}",
                dest.display(),
                n(program.chains.len(), "chain"),
                n(kept, "rule"),
                program.rule_count(),
                n(program.services.len(), "service")
            );
        }
        if let Some(r) = report {
            eprintln!(
                "optimized: {} removed as dead, {} as redundant, {} reordered by {}",
                r.dead_removed,
                r.redundant_removed,
                n(r.swaps, "swap"),
                if profile.is_some() {
                    "the profile"
                } else {
                    "a static estimate"
                }
            );
        }
    }
    ExitCode::SUCCESS
}

/// Is this a build artefact (or meant as one) rather than fw source? True for our header, for
/// the `.fwo` extension, and for content that is not UTF-8 text (so that a foreign binary gets
/// "not an fwc artefact" rather than a page of lexer errors).
fn is_artefact_file(p: &Path) -> bool {
    if p.extension().is_some_and(|e| e == "fwo") {
        return true;
    }
    match std::fs::read(p) {
        Ok(bytes) => artefact::is_artefact(&bytes) || std::str::from_utf8(&bytes).is_err(),
        Err(_) => false,
    }
}

/// `check`, `test` and `build` take source; say so clearly when given an artefact.
fn refuse_artefact(out: &Out, file: &Path, cmd: &str) -> Option<ExitCode> {
    if is_artefact_file(file) {
        out.error(&format!(
            "`{}` is a build artefact or not fw source: `fwc {cmd}` takes a `.fw` file",
            file.display()
        ));
        return Some(ExitCode::from(2));
    }
    None
}

/// Source line of a rule, when the source is at hand.
fn rule_text(p: &Program, sm: Option<&SourceMap>, id: ir::RuleId) -> String {
    let loc = p.rule_locs[id.0 as usize];
    if let Some(sm) = sm {
        if (loc.file as usize) < sm.len() {
            let f = sm.get(fwc_grammar::ast::FileId(loc.file));
            if let Some(t) = f.text.get(loc.start as usize..loc.end as usize) {
                // one line: comments dropped, whitespace folded
                return t
                    .lines()
                    .map(strip_comment)
                    .flat_map(str::split_whitespace)
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
    }
    // no source: the rule as the IR has it
    for c in &p.chains {
        if let Some(r) = c.rules.iter().find(|r| r.id == id) {
            let mut parts: Vec<String> = r.preds.iter().map(ir::fmt_pred).collect();
            parts.extend(r.stmts.iter().map(|s| ir::fmt_stmt(p, s)));
            return format!("{};", parts.join(" "));
        }
    }
    String::new()
}

/// A line without its `#` comment (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

fn print_trace(w: &mut impl Write, p: &Program, sm: Option<&SourceMap>, o: &Outcome, indent: &str) {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for s in &o.trace {
        let chain = p.chain(s.chain).display_name();
        let (loc, text) = match s.rule {
            Some(r) => (p.rule_location(r), rule_text(p, sm, r)),
            None => (String::new(), String::new()),
        };
        rows.push([
            format!("{:<11} {}", s.hook.name(), chain),
            loc,
            text,
            s.action.clone(),
        ]);
    }
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    for r in rows {
        if r[2].is_empty() {
            let _ = writeln!(w, "{indent}{:<w0$}  {:<w1$}  {}", r[0], r[1], r[3]);
        } else {
            let _ = writeln!(
                w,
                "{indent}{:<w0$}  {:<w1$}  {}  => {}",
                r[0], r[1], r[2], r[3]
            );
        }
    }
}

/// A counterexample as a `test` line (it can be pasted into a `test` block), or in words
/// when a test line cannot say it.
fn describe_counterexample(cx: &fwc_compiler::prove::Counterexample) -> String {
    match &cx.test_line {
        Some(t) => t.clone(),
        None => format!(
            "{} {} (no transport header) => {}",
            cx.path.name(),
            cx.packet,
            cx.outcome.fate.name()
        ),
    }
}

/// One line of a `test` or `assert` block as `fwc test` reports it.
struct Case {
    /// `test "NAME"` / `assert "NAME"`
    label: String,
    /// `FILE:LINE`
    at: String,
    /// what the report line says after `...` when it passed
    ok: &'static str,
    /// why it failed (one line), and the failure section (the line, what happened, trace)
    failure: Option<(String, String)>,
    /// ` (not proven)` after FAILED
    suffix: &'static str,
}

fn cmd_test(out: &Out, file: &Path) -> ExitCode {
    if let Some(code) = refuse_artefact(out, file, "test") {
        return code;
    }
    let c = match compile(out, file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(checked) = checked_or_exit(&c) else {
        return ExitCode::from(1);
    };
    let sm = &c.loaded.sm;
    let mut cases: Vec<Case> = Vec::new();
    let trace = |o: &fwc_compiler::interp::Outcome| {
        let mut b: Vec<u8> = Vec::new();
        print_trace(&mut b, &checked.program, Some(sm), o, "    ");
        String::from_utf8_lossy(&b).into_owned()
    };
    for r in testrun::run_tests(checked) {
        let f = sm.get(r.case.span.file);
        let (l, col) = f.line_col(r.case.span.start as usize);
        let failure = (!r.passed).then(|| {
            let why = r.failure.clone().unwrap_or_else(|| "failed".into());
            let mut d = format!(
                "---- {:?} at {}:{l}:{col}\n  {}\n  {why}\n",
                r.case.block,
                f.name,
                f.line_text(l).trim()
            );
            if let Some(o) = &r.outcome {
                d.push_str("  trace:\n");
                d.push_str(&trace(o));
            }
            (why, d)
        });
        cases.push(Case {
            label: format!("test {:?}", r.case.block),
            at: format!("{}:{l}", f.name),
            ok: "ok",
            failure,
            suffix: "",
        });
    }
    // every assert line proven over every packet, or refuted by one
    let mut assert_diags: Vec<Diagnostic> = Vec::new();
    for a in &checked.asserts {
        for line in &a.lines {
            let f = sm.get(line.span.file);
            let (l, col) = f.line_col(line.span.start as usize);
            let mut case = Case {
                label: format!("assert {:?}", a.name),
                at: format!("{}:{l}", f.name),
                ok: "ok (proven)",
                failure: None,
                suffix: "",
            };
            match fwc_compiler::prove::prove(&checked.program, line) {
                fwc_compiler::prove::Proof::Holds { .. } => {}
                fwc_compiler::prove::Proof::Fails(cx) => {
                    let example = describe_counterexample(&cx);
                    let mut d =
                        Diagnostic::error("FW0071", format!("assert {:?} does not hold", a.name))
                            .primary(line.span, "a packet contradicts this line")
                            .note(format!("counterexample: {example}"));
                    for (rule, hit) in &cx.coins {
                        d = d.note(format!(
                            "with `statistic`/`limit` at {} {}",
                            checked.program.rule_location(*rule),
                            if *hit { "matching" } else { "not matching" }
                        ));
                    }
                    assert_diags.push(d);
                    let mut s = format!(
                        "---- assert {:?} at {}:{l}:{col}\n  {}\n  counterexample: {example}\n  trace:\n",
                        a.name,
                        f.name,
                        f.line_text(l).trim()
                    );
                    if cx.outcome.trace.is_empty() {
                        s.push_str("    (no chain on its path: every hook lets it through)\n");
                    }
                    s.push_str(&trace(&cx.outcome));
                    case.failure = Some((format!("counterexample: {example}"), s));
                }
                fwc_compiler::prove::Proof::Unknown(why) => {
                    assert_diags.push(
                        Diagnostic::error(
                            "FW0072",
                            format!("assert {:?} could not be proven", a.name),
                        )
                        .primary(line.span, "neither proven nor refuted")
                        .note(why.clone()),
                    );
                    let s = format!(
                        "---- assert {:?} at {}:{l}:{col}\n  {}\n  not proven: {why}\n",
                        a.name,
                        f.name,
                        f.line_text(l).trim()
                    );
                    case.failure = Some((format!("not proven: {why}"), s));
                    case.suffix = " (not proven)";
                }
            }
            cases.push(case);
        }
    }
    let failed = cases.iter().filter(|c| c.failure.is_some()).count();
    let total = cases.len();
    out.diags(&assert_diags, sm);
    let report = if out.format == Format::Junit {
        junit(file, &cases)
    } else {
        let mut w = format!(
            "running {total} test{} from {}\n",
            if total == 1 { "" } else { "s" },
            file.display()
        );
        for c in &cases {
            let verdict = match &c.failure {
                None => c.ok.to_string(),
                Some(_) => format!("FAILED{}", c.suffix),
            };
            w.push_str(&format!("{} {} ... {verdict}\n", c.label, c.at));
        }
        if failed > 0 {
            w.push_str("\nfailures:\n");
            for c in &cases {
                if let Some((_, d)) = &c.failure {
                    w.push('\n');
                    w.push_str(d);
                }
            }
        }
        w.push_str(&format!("\n{} passed, {failed} failed\n", total - failed));
        w
    };
    let _ = std::io::stdout().write_all(report.as_bytes());
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The `fwc test` report as JUnit XML: one `testsuite` for the file, a `testcase` per test
/// or assert line (classname `test.NAME` / `assert.NAME`, name `FILE:LINE`), a `failure`
/// with the reason and the failure section.
fn junit(file: &Path, cases: &[Case]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failed = cases.iter().filter(|c| c.failure.is_some()).count();
    let name = esc(&file.display().to_string());
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fwc test\" tests=\"{}\" failures=\"{failed}\" errors=\"0\">\n  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\">\n",
        cases.len(),
        cases.len()
    );
    for c in cases {
        let (kind, block) = c.label.split_once(' ').unwrap_or(("test", &c.label));
        let class = format!("{kind}.{}", block.trim_matches('"'));
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\"",
            esc(&class),
            esc(&c.at)
        ));
        match &c.failure {
            None => x.push_str("/>\n"),
            Some((why, details)) => x.push_str(&format!(
                ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    </testcase>\n",
                esc(why),
                esc(details)
            )),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// `fwc fmt [--check] FILE...`: the canonical layout, written back (or, with `--check`,
/// the files that would change, listed, with exit status 1).
fn cmd_fmt(out: &Out, check: bool, files: &[PathBuf]) -> ExitCode {
    let mut changed = 0;
    let mut failed = false;
    for f in files {
        let src = match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => {
                out.error(&format!("cannot read `{}`: {e}", f.display()));
                return ExitCode::from(2);
            }
        };
        let formatted = match fwc_compiler::fmt::format(&src) {
            Ok(t) => t,
            Err(e) => {
                // the syntax errors, as `fwc check` gives them
                let loaded = fwc_compiler::loader::load_text(
                    f,
                    src.clone(),
                    &fwc_compiler::loader::DiskFiles,
                );
                out.diags(&loaded.diags, &loaded.sm);
                out.error(&format!("`{}` not formatted: {e}", f.display()));
                failed = true;
                continue;
            }
        };
        if formatted == src {
            continue;
        }
        changed += 1;
        if check {
            println!("would reformat {}", f.display());
        } else if let Err(e) = std::fs::write(f, &formatted) {
            out.error(&format!("cannot write `{}`: {e}", f.display()));
            return ExitCode::from(2);
        }
    }
    if failed || (check && changed > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `fwc diff OLD NEW`: every region of packets the two programs treat differently (fate, or
/// the addresses, ports and mark a packet leaves with), with one example packet each.
fn write_output(out: &Out, text: &str, output: Option<&Path>) -> ExitCode {
    match output {
        None => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                out.error(&format!("cannot write `{}`: {e}", p.display()));
                ExitCode::from(2)
            }
        },
    }
}

fn cmd_import(out: &Out, from: ImportFrom, file: &Path, output: Option<&Path>) -> ExitCode {
    let ImportFrom::IptablesSave = from;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            out.error(&format!("cannot read `{}`: {e}", file.display()));
            return ExitCode::from(2);
        }
    };
    let name = file.display().to_string();
    let fw = match fwc_compiler::import::import(&text, &name) {
        Ok(fw) => fw,
        Err(errs) => {
            for e in &errs {
                out.error(&format!("{name}:{}: {}", e.line, e.message));
            }
            return ExitCode::from(1);
        }
    };
    let fw = fwc_compiler::fmt::format(&fw).unwrap_or(fw);
    // the translation must be a program fw accepts: check it as `fwc check` would
    let c = fwc_compiler::compile_source(&name, &fw, &fwc_compiler::loader::DiskFiles);
    if c.has_errors() {
        out.error(&format!(
            "internal error: the translation of `{name}` does not check; please report it"
        ));
        out.diags(&c.diags, &c.loaded.sm);
        return ExitCode::from(1);
    }
    write_output(out, &fw, output)
}

fn cmd_export(
    out: &Out,
    target: ExportTarget,
    file: &Path,
    output: Option<&Path>,
    counters: bool,
) -> ExitCode {
    let c = match compile(out, file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(checked) = checked_or_exit(&c) else {
        return ExitCode::from(1);
    };
    let t = match target {
        ExportTarget::Iptables => fwc_compiler::export::Target::Iptables,
        ExportTarget::Nft => fwc_compiler::export::Target::Nft,
    };
    let text = match fwc_compiler::export::export_with(&checked.program, t, counters) {
        Ok(x) => x.text,
        Err(errs) => {
            for e in &errs {
                out.error(&format!("cannot export: {}", e.message));
            }
            return ExitCode::from(1);
        }
    };
    write_output(out, &text, output)
}

fn cmd_diff(out: &Out, old: &Path, new: &Path, max: usize) -> ExitCode {
    let mut programs = Vec::new();
    for f in [old, new] {
        let c = match compile(out, f) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let Some(checked) = checked_or_exit(&c) else {
            out.error(&format!("cannot compare: `{}` has errors", f.display()));
            return ExitCode::from(2);
        };
        programs.push(checked.program.clone());
    }
    let changes = match fwc_compiler::prove::diff(&programs[0], &programs[1], max) {
        Ok(c) => c,
        Err(e) => {
            out.error(&format!("the programs could not be compared: {e}"));
            return ExitCode::from(2);
        }
    };
    let side = |p: &fwc_compiler::ir::Program, o: &fwc_compiler::interp::Outcome| {
        let by = o
            .deciding_rule
            .map(|r| p.rule_location(r))
            .unwrap_or_else(|| "a policy, or no rule".into());
        let pk = &o.packet;
        let a = |x: u32| std::net::Ipv4Addr::from(x);
        let leaves = if o.fate == fwc_compiler::interp::Fate::Accept {
            format!(
                " as {}:{} -> {}:{}{}",
                a(pk.saddr),
                pk.sport,
                a(pk.daddr),
                pk.dport,
                if pk.mark != 0 {
                    format!(" mark {:#x}", pk.mark)
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        };
        (o.fate.name(), leaves, by)
    };
    let mut w = String::new();
    for c in &changes {
        let (of, oa, ob) = side(&programs[0], &c.old);
        let (nf, na, nb) = side(&programs[1], &c.new);
        let example = fwc_compiler::prove::test_line(c.path, &c.example, &c.old.fate)
            .map(|t| t.split(" =>").next().unwrap_or("").to_string())
            .unwrap_or_else(|| format!("{} {} (no transport header)", c.path.name(), c.example));
        if out.format == Format::Json {
            w.push_str(&format!(
                "{}\n",
                serde_json::json!({
                    "path": c.path.name(),
                    "region": c.region,
                    "example": example,
                    "old": {"fate": of, "leaves": oa.trim(), "by": ob},
                    "new": {"fate": nf, "leaves": na.trim(), "by": nb},
                })
            ));
        } else {
            w.push_str(&format!(
                "{} {}: {of}{oa} -> {nf}{na}\n    e.g. {example}\n    old: {of} by {ob}\n    new: {nf} by {nb}\n",
                c.path.name(),
                c.region
            ));
        }
    }
    if out.format != Format::Json {
        w.push_str(&match changes.len() {
            0 => "no packet changes fate or rewrite\n".to_string(),
            n if n >= max => format!("{n} changes (the first {max}: --max for more)\n"),
            n => format!("{n} change{}\n", if n == 1 { "" } else { "s" }),
        });
    }
    let _ = std::io::stdout().write_all(w.as_bytes());
    if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn cmd_explain(out: &Out, file: &Path, query: &str) -> ExitCode {
    // an artefact has no source: load the program and explain against it
    let (program, comp) = if is_artefact_file(file) {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                out.error(&format!("cannot read `{}`: {e}", file.display()));
                return ExitCode::from(2);
            }
        };
        match artefact::read(&bytes) {
            Ok(p) => (p, None),
            Err(e) => {
                out.error(&format!("`{}`: {e}", file.display()));
                return ExitCode::from(1);
            }
        }
    } else {
        let c = match compile(out, file) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let Some(checked) = checked_or_exit(&c) else {
            return ExitCode::from(1);
        };
        (checked.program.clone(), Some(c))
    };
    // parse the query as a file of its own so that its errors point into it
    let mut qsm = comp
        .as_ref()
        .map(|c| c.loaded.sm.clone())
        .unwrap_or_default();
    let qid = qsm.add("<query>".into(), None, query.to_string());
    let q = match fwc_grammar::parse_packet_query(query, qid) {
        Ok(q) => q,
        Err(errs) => {
            let diags: Vec<Diagnostic> = errs
                .iter()
                .map(|e| fwc_compiler::loader::syntax_diagnostic(e, qid, &qsm))
                .collect();
            out.diags(&diags, &qsm);
            return ExitCode::from(2);
        }
    };
    let lowered = match &comp {
        Some(c) => {
            let mut loaded = fwc_compiler::loader::Loaded {
                sm: qsm.clone(),
                files: c.loaded.files.clone(),
                diags: vec![],
                root: c.loaded.root,
            };
            loaded.sm = qsm.clone();
            fwc_compiler::check::lower_query(&loaded, &q)
        }
        None => {
            let loaded = fwc_compiler::loader::Loaded {
                sm: qsm.clone(),
                files: vec![],
                diags: vec![],
                root: None,
            };
            fwc_compiler::check::lower_query(&loaded, &q)
        }
    };
    let (path, pkt) = match lowered {
        Ok(x) => x,
        Err(diags) => {
            out.diags(&diags, &qsm);
            return ExitCode::from(2);
        }
    };
    let o = match interp::run(&program, path, &pkt, &mut FreshOracle) {
        Ok(o) => o,
        Err(e) => {
            out.error(&e.to_string());
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let _ = writeln!(w, "{} {}", path.name(), pkt);
    print_trace(
        &mut w,
        &program,
        comp.as_ref().map(|c| &c.loaded.sm),
        &o,
        "  ",
    );
    let _ = writeln!(w, "verdict: {}", o.fate.name());
    if o.packet != pkt {
        let _ = writeln!(w, "leaves as: {}", o.packet);
    }
    ExitCode::SUCCESS
}

/// Loads a program from source or an artefact (clear errors for a stale or foreign one).
fn load_program(out: &Out, file: &Path) -> Result<Program, ExitCode> {
    if is_artefact_file(file) {
        let bytes = std::fs::read(file).map_err(|e| {
            out.error(&format!("cannot read `{}`: {e}", file.display()));
            ExitCode::from(2)
        })?;
        return artefact::read(&bytes).map_err(|e| {
            out.error(&format!("`{}`: {e}", file.display()));
            ExitCode::from(1)
        });
    }
    let c = compile(out, file)?;
    match c.checked {
        Some(ch) if !c.diags.iter().any(|d| d.severity == Severity::Error) => {
            let mut p = ch.program;
            fwc_compiler::opt::optimize(&mut p, None);
            Ok(p)
        }
        _ => Err(ExitCode::from(1)),
    }
}

/// Sends one request to a running datapath and prints its answer.
fn cmd_control(out: &Out, socket: &Path, req: &fwc_runtime::control::Request) -> ExitCode {
    match fwc_runtime::control::request(socket, req) {
        Ok(Ok(body)) => {
            // `conntrack` prints its closing line on standard error
            let (table, tail) = match body.rfind("conntrack v1.4.7") {
                Some(i) => body.split_at(i),
                None => (body.as_str(), ""),
            };
            print!("{table}");
            eprint!("{tail}");
            ExitCode::SUCCESS
        }
        Ok(Err(msg)) => {
            out.error(&msg);
            ExitCode::from(1)
        }
        Err(e) => {
            out.error(&e.to_string());
            ExitCode::from(2)
        }
    }
}

/// `fwc reload FILE`: checks FILE here (so its diagnostics are the user's), then has the
/// datapath load it.
fn cmd_reload(out: &Out, file: &Path, socket: &Path) -> ExitCode {
    if let Err(code) = load_jit(out, file) {
        return code;
    }
    let file = match std::fs::canonicalize(file) {
        Ok(f) => f,
        Err(e) => {
            out.error(&format!("cannot read `{}`: {e}", file.display()));
            return ExitCode::from(2);
        }
    };
    let code = cmd_control(
        out,
        socket,
        &fwc_runtime::control::Request::Reload(file.clone()),
    );
    if code == ExitCode::SUCCESS && out.format == Format::Human {
        eprintln!("reloaded `{}`", file.display());
    }
    code
}

/// Loads RULES (source or artefact) and compiles it with the JIT.
fn load_jit(out: &Out, rules: &Path) -> Result<fwc_jit::JitProgram, ExitCode> {
    let program = load_program(out, rules)?;
    fwc_jit::JitProgram::compile(&program, fwc_jit::Options::default()).map_err(|e| {
        out.error(&e.to_string());
        ExitCode::from(1)
    })
}

/// What a datapath is told about the host it runs on.
struct Host {
    /// its addresses (`--local`)
    local: Vec<std::net::Ipv4Addr>,
    /// conntrack's settings (`--sysctl`)
    conntrack: fwc_runtime::conntrack::Config,
}

fn cmd_run(
    out: &Out,
    rules: &Path,
    pcap_in: &Path,
    dest: &Path,
    host: Host,
    (iif, oif): (Option<String>, Option<String>),
    (list_conntrack, list_ipvs): (bool, bool),
) -> ExitCode {
    use fwc_runtime::datapath::{Datapath, Link};
    use fwc_runtime::pcap;
    let jit = match load_jit(out, rules) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let reader = match std::fs::File::open(pcap_in)
        .map_err(pcap::PcapError::from)
        .and_then(|f| pcap::Reader::new(std::io::BufReader::new(f)))
    {
        Ok(r) => r,
        Err(e) => {
            out.error(&format!("`{}`: {e}", pcap_in.display()));
            return ExitCode::from(2);
        }
    };
    let link = match reader.linktype {
        pcap::LINKTYPE_ETHERNET => Link::Ethernet,
        pcap::LINKTYPE_RAW => Link::RawIp,
        other => {
            out.error(&format!(
                "`{}`: link type {other} is not supported (Ethernet or raw IP)",
                pcap_in.display()
            ));
            return ExitCode::from(2);
        }
    };
    let writer = std::fs::File::create(dest)
        .and_then(|f| pcap::Writer::new(std::io::BufWriter::new(f), reader.linktype));
    let mut writer = match writer {
        Ok(w) => w,
        Err(e) => {
            out.error(&format!("cannot write `{}`: {e}", dest.display()));
            return ExitCode::from(2);
        }
    };
    let mut dp = Datapath::new(
        jit,
        fwc_runtime::conntrack::Table::new(host.conntrack),
        host.local,
    );
    // `log` and `audit` lines go to standard error, as the kernel's go to its log
    dp.set_log(Box::new(|l| eprintln!("{l}")));
    let mut first_ts = None;
    let mut last_ms = 0;
    for rec in reader {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                out.error(&format!("`{}`: {e}", pcap_in.display()));
                return ExitCode::from(1);
            }
        };
        let t0 = *first_ts.get_or_insert(rec.ts_ns);
        let now_ms = (rec.ts_ns.saturating_sub(t0)) / 1_000_000;
        last_ms = now_ms;
        let d = dp.process(now_ms, link, &rec.data, iif.as_deref(), oif.as_deref());
        if let Some(frame) = d.frame {
            if let Err(e) = writer.write(rec.ts_ns, &frame) {
                out.error(&format!("cannot write `{}`: {e}", dest.display()));
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = writer.finish() {
        out.error(&format!("cannot write `{}`: {e}", dest.display()));
        return ExitCode::from(2);
    }
    let s = dp.stats;
    if out.format == Format::Human {
        eprintln!(
            "{} frames: {} accepted, {} dropped, {} rejected, {} queued ({} malformed, {} not IPv4); {} connections tracked",
            s.frames, s.accepted, s.dropped, s.rejected, s.queued, s.malformed, s.not_ip, dp.ct.len()
        );
    }
    if list_ipvs {
        print!("{}", dp.ipvs_listing());
    }
    if list_conntrack {
        print!("{}", dp.ct.list(last_ms));
        eprintln!(
            "conntrack v1.4.7 (conntrack-tools): {} flow entries have been shown.",
            dp.ct.len()
        );
    }
    ExitCode::SUCCESS
}

/// The running rule set for the control socket: reloads, and, when the datapath was started
/// from a `.fw` file, its source for `fwc rules` and `fwc save`.
struct LiveRules<'a> {
    out: &'a Out,
    doc: Option<fwc_compiler::edit::Document>,
}

impl LiveRules<'_> {
    fn source_of(path: &Path) -> Option<fwc_compiler::edit::Document> {
        if is_artefact_file(path) {
            return None;
        }
        std::fs::read_to_string(path)
            .ok()
            .map(|text| fwc_compiler::edit::Document {
                path: path.to_path_buf(),
                text,
            })
    }

    /// Checks and compiles a new text of the rule set, as `fwc run` does a file.
    fn compile_text(&self, path: &Path, text: &str) -> Result<fwc_jit::JitProgram, String> {
        let c = fwc_compiler::compile_source(
            &path.to_string_lossy(),
            text,
            &fwc_compiler::loader::DiskFiles,
        );
        let errors: Vec<String> = c
            .diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| {
                let at = d
                    .primary_span()
                    .map(|s| format!("{}: ", c.loaded.sm.location(s)))
                    .unwrap_or_default();
                format!("{at}{} {}", d.code, d.message)
            })
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "the rule set would not check, nothing changed: {}",
                errors.join("; ")
            ));
        }
        let mut p = c.checked.ok_or("the rule set would not check")?.program;
        fwc_compiler::opt::optimize(&mut p, None);
        fwc_jit::JitProgram::compile(&p, fwc_jit::Options::default()).map_err(|e| e.to_string())
    }
}

impl fwc_runtime::control::Rules for LiveRules<'_> {
    fn reload(&mut self, path: &Path) -> Result<fwc_jit::JitProgram, String> {
        let jit = load_jit(self.out, path).map_err(|_| {
            format!(
                "`{}` did not compile; the datapath keeps its program",
                path.display()
            )
        })?;
        self.doc = Self::source_of(path);
        Ok(jit)
    }

    fn command(
        &mut self,
        dp: &mut fwc_runtime::datapath::Datapath,
        args: &[String],
    ) -> fwc_runtime::control::Reply {
        use fwc_compiler::edit::Command;
        let cmd = fwc_compiler::edit::parse_command(args)?;
        if let Command::List {
            chain,
            line_numbers,
            verbose,
        } = &cmd
        {
            return match &self.doc {
                Some(doc) => Ok(list_source(
                    dp,
                    doc,
                    doc.chains(chain.as_ref(), &table_of(args))?,
                    *line_numbers,
                    *verbose,
                )),
                // an artefact: the running program's rules, as it runs them
                None => fwc_runtime::control::list_chains(
                    dp,
                    *line_numbers,
                    *verbose,
                    chain.as_ref().map(|c| c.display()).as_deref(),
                ),
            };
        }
        let doc = self.doc.as_ref().ok_or(
            "this datapath keeps no rule-set source to edit (it was started from an artefact)",
        )?;
        match &cmd {
            Command::Show(c, table) => doc.show(c.as_ref(), table),
            Command::Check(c, spec) => {
                if doc.contains(c, spec)? {
                    Ok(String::new())
                } else {
                    Err("Bad rule (does a matching rule exist in that chain?)".into())
                }
            }
            _ => {
                let text = doc.apply(&cmd)?;
                let jit = self.compile_text(&doc.path, &text)?;
                dp.replace_program(jit);
                if let Some(d) = self.doc.as_mut() {
                    d.text = text;
                }
                Ok(String::new())
            }
        }
    }

    fn save(&self) -> fwc_runtime::control::Reply {
        self.doc.as_ref().map(|d| d.text.clone()).ok_or_else(|| {
            "this datapath keeps no rule-set source (it was started from an artefact)".into()
        })
    }
}

/// The table a `fwc rules` command names (`-t`), filter when none.
fn table_of(args: &[String]) -> String {
    args.iter()
        .position(|a| a == "-t" || a == "--table")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "filter".into())
}

/// `fwc rules -L`: the rule set's chains as written, numbered as `-D`/`-I`/`-R` count, with
/// the packets and bytes the running program counted for each rule (by its source line;
/// the optimizer may have removed a dead rule, which then shows 0) and each policy.
fn list_source(
    dp: &fwc_runtime::datapath::Datapath,
    doc: &fwc_compiler::edit::Document,
    chains: Vec<fwc_compiler::edit::ChainView>,
    line_numbers: bool,
    verbose: bool,
) -> String {
    use std::fmt::Write as _;
    let p = dp.program();
    let root = doc.path.to_string_lossy();
    let rules = dp.rule_counters();
    let mut by_line: std::collections::HashMap<u32, (u64, u64)> = Default::default();
    for (id, loc) in p.rule_locs.iter().enumerate() {
        if p.files.get(loc.file as usize).map(String::as_str) == Some(&*root) {
            let (pk, by) = rules.get(id).copied().unwrap_or_default();
            let e = by_line.entry(loc.line).or_default();
            e.0 += pk;
            e.1 += by;
        }
    }
    let policies = dp.policy_counters();
    let mut out = String::new();
    for (k, c) in chains.iter().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        if c.base {
            let (pk, by) = p
                .chains
                .iter()
                .position(|x| x.display_name() == c.name)
                .and_then(|i| policies.get(i).copied())
                .unwrap_or_default();
            let policy = c.policy.as_deref().unwrap_or("accept");
            if verbose {
                let _ = writeln!(
                    out,
                    "Chain {} (policy {policy} {pk} packets, {by} bytes)",
                    c.name
                );
            } else {
                let _ = writeln!(out, "Chain {} (policy {policy})", c.name);
            }
        } else {
            let _ = writeln!(out, "Chain {}", c.name);
        }
        let num = if line_numbers { "num  " } else { "" };
        if verbose {
            let _ = writeln!(out, "{num}{:>10} {:>12}  rule", "pkts", "bytes");
        } else {
            let _ = writeln!(out, "{num}rule");
        }
        for (i, (line, text)) in c.rules.iter().enumerate() {
            let num = if line_numbers {
                format!("{:<5}", i + 1)
            } else {
                String::new()
            };
            let counts = if verbose {
                let (pk, by) = by_line.get(line).copied().unwrap_or_default();
                format!("{pk:>10} {by:>12}  ")
            } else {
                String::new()
            };
            let _ = writeln!(out, "{num}{counts}{text};  # {root}:{line}");
        }
    }
    out
}

/// Where a live datapath gets its packets.
enum LiveSource {
    /// NFQUEUE queue numbers
    Nfqueue(Vec<u16>),
    /// interfaces to route between over AF_PACKET
    AfPacket(Vec<String>),
}

fn cmd_run_live(
    out: &Out,
    rules: &Path,
    source: &LiveSource,
    (fail_open, duration): (bool, Option<u64>),
    host: Host,
    (list_conntrack, list_ipvs): (bool, bool),
    socket: &Path,
) -> ExitCode {
    use fwc_runtime::live;
    let jit = match load_jit(out, rules) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let mut local = host.local;
    if local.is_empty() {
        local = match live::local_addresses() {
            Ok(l) => l,
            Err(e) => {
                out.error(&format!("cannot list this host's addresses: {e}"));
                return ExitCode::from(2);
            }
        };
    }
    let routes = live::Routes::from_proc().unwrap_or_default();
    let mut dp = fwc_runtime::datapath::Datapath::new(
        jit,
        fwc_runtime::conntrack::Table::new(host.conntrack),
        local,
    );
    dp.set_log(Box::new(|l| eprintln!("{l}")));
    // under NFQUEUE the kernel routes queued packets and decrements their TTL itself; over
    // AF_PACKET fwc forwards. Either way the kernel's routes give a forwarded packet its
    // output interface.
    dp.forwards = matches!(source, LiveSource::AfPacket(_));
    // a queue fwc does not handle is the kernel's to serve under NFQUEUE; over AF_PACKET
    // nothing listens on it
    dp.queues_outside = matches!(source, LiveSource::Nfqueue(_));
    dp.routes = Some(routes.clone());
    let ports = match source {
        LiveSource::AfPacket(ifs) => {
            match ifs
                .iter()
                .map(|i| fwc_runtime::afpacket::Port::open(i))
                .collect::<std::io::Result<Vec<_>>>()
            {
                Ok(p) => p,
                Err(e) => {
                    out.error(&format!(
                        "AF_PACKET: {e} (is fwc running as root, on existing interfaces?)"
                    ));
                    return ExitCode::from(1);
                }
            }
        }
        LiveSource::Nfqueue(_) => Vec::new(),
    };
    let mut control = match fwc_runtime::control::Control::bind(socket) {
        Ok(c) => c,
        Err(e) => {
            out.error(&format!("cannot listen on `{}`: {e}", socket.display()));
            return ExitCode::from(2);
        }
    };
    let rules_path = rules.to_path_buf();
    let mut live_rules = LiveRules {
        out,
        doc: LiveRules::source_of(rules),
    };
    let mut last_poll = u64::MAX;
    let mut between = |dp: &mut fwc_runtime::datapath::Datapath, now: u64| {
        // the clock goes on without packets: IPVS's rates decay
        dp.advance(now);
        if live::RELOAD.swap(false, std::sync::atomic::Ordering::Relaxed) {
            use fwc_runtime::control::Rules as _;
            match live_rules.reload(&rules_path) {
                Ok(jit) => {
                    dp.replace_program(jit);
                    if out.format == Format::Human {
                        eprintln!("reloaded `{}`", rules_path.display());
                    }
                }
                Err(e) => out.error(&e),
            }
        }
        // the socket is looked at once a millisecond, not before every packet
        if now != last_poll {
            last_poll = now;
            control.poll(dp, now, &mut live_rules);
        }
    };
    live::stop_on_signals();
    if let Some(secs) = duration {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            live::STOP.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let result = match source {
        LiveSource::Nfqueue(queues) => {
            if out.format == Format::Human {
                eprintln!(
                    "serving NFQUEUE {:?}{}",
                    queues,
                    if fail_open { " (fail-open)" } else { "" }
                );
            }
            live::run_nfqueue(&mut dp, queues, fail_open, &live::STOP, &mut between)
                .map(|s| {
                    let per_queue: Vec<String> = s
                        .per_queue
                        .iter()
                        .map(|(q, n)| format!("queue {q}: {n}"))
                        .collect();
                    format!(
                        "{} packets ({}): {} accepted ({} rewritten), {} dropped",
                        s.packets,
                        per_queue.join(", "),
                        s.accepted,
                        s.modified,
                        s.dropped
                    )
                })
                .map_err(|e| {
                    format!(
                        "NFQUEUE: {e} (is fwc running as root, with nfnetlink_queue available?)"
                    )
                })
        }
        LiveSource::AfPacket(ifs) => {
            if out.format == Format::Human {
                eprintln!("routing between {}", ifs.join(", "));
            }
            fwc_runtime::afpacket::run_router(&mut dp, &ports, &routes, &live::STOP, &mut between)
                .map(|s| {
                    format!(
                        "{} frames: {} forwarded, {} dropped, {} left to the kernel, {} unresolved",
                        s.frames, s.forwarded, s.dropped, s.local, s.unresolved
                    )
                })
                .map_err(|e| format!("AF_PACKET: {e}"))
        }
    };
    match result {
        Ok(summary) => {
            if out.format == Format::Human {
                eprintln!("{summary}; {} connections tracked", dp.ct.len());
            }
        }
        Err(e) => {
            out.error(&e);
            return ExitCode::from(1);
        }
    }
    if list_ipvs {
        print!("{}", dp.ipvs_listing());
    }
    if list_conntrack {
        print!("{}", dp.ct.list(0));
    }
    ExitCode::SUCCESS
}
