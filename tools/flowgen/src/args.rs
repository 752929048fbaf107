//! Command-line parsing (no crates): `flowgen <subcommand> [--opt VALUE]...`.
//! Options take `--name VALUE` or `--name=VALUE`; flags take no value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::proto::MAX_PAYLOAD;

pub const USAGE: &str = "\
usage: flowgen <command> [options]

  tcp-server --listen IP:PORT [--reply BYTES] [--idle-ms MS]
      Serves many connections at once (one poll loop). Answers every
      request line `REQ <token>` with `OK <token> <peer> <len> <payload>`
      (<peer> = the client address it saw, BYTES payload bytes, default 16)
      until the client closes. Prints `listening on IP:PORT`, then
      `peer IP` once for each distinct client address.

  tcp-clients --connect IP:PORT [--count N] [--concurrency C] [--hold-ms MS]
              [--timeout-ms T] [--rounds R] [--gap-ms MS] [--gate FILE]
              [--ready FILE] [--gate-timeout-ms MS] [--together]
              [--expect-ok N] [--quiet]
      Opens N connections (default 1), at most C at a time (default N).
      Each sends a request, waits MS ms (default 0), reads and verifies the
      answer; then R-1 more exchanges (default R = 1), each after GAP ms or,
      with --gate, once FILE exists. --ready FILE is written (with the
      first-round counts) when every connection finished its first
      exchange. --together (needs C = N): every connection is opened
      before any of them reads its answer. T (default 10000) bounds the
      connect and every read. Prints
        ok=N failed=N refused=N timeout=N open_max=N elapsed_ms=N peers=IP,...
      refused = RST (connection refused), timeout = no answer in time,
      failed = anything else. Exit 0 if all succeeded; with --expect-ok N,
      exit 0 if exactly N succeeded and every other one timed out.

  udp-echo --listen IP:PORT
      Answers `PING <nonce> <seq>` with `ECHO <nonce> <seq> <peer>`.
      Prints `listening on IP:PORT`, then `peer IP` once for each distinct
      source address of any datagram.

  udp-ping --to IP:PORT [--bind IP:PORT] [--count N] [--interval-ms MS]
           [--timeout-ms T] [--expect-ok N]
      Sends N requests (default 10) one after the other, each waiting T ms
      (default 2000) for its echo, from one socket (bound to --bind, or to
      an ephemeral port). Prints
        ok=N lost=N refused=N elapsed_ms=N peers=IP:PORT,...
      (refused = an ICMP port unreachable came back). Exit 0 if all were
      answered; with --expect-ok N, if exactly N were and none refused.
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    TcpServer(TcpServer),
    TcpClients(TcpClients),
    UdpEcho(UdpEcho),
    UdpPing(UdpPing),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServer {
    pub listen: SocketAddr,
    pub reply: usize,
    pub idle_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClients {
    pub connect: SocketAddr,
    pub count: u64,
    pub concurrency: u64,
    pub hold_ms: u64,
    pub timeout_ms: u64,
    pub rounds: u64,
    pub gap_ms: u64,
    pub gate: Option<PathBuf>,
    pub gate_timeout_ms: u64,
    pub ready: Option<PathBuf>,
    pub together: bool,
    pub expect_ok: Option<u64>,
    pub quiet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEcho {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPing {
    pub to: SocketAddr,
    pub bind: Option<SocketAddr>,
    pub count: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub expect_ok: Option<u64>,
}

/// Options of one subcommand: name -> value ("" for flags).
struct Opts {
    cmd: &'static str,
    map: BTreeMap<String, String>,
}

impl Opts {
    /// Splits `args` into options, accepting only `valued` names (which take
    /// a value) and `flags` (which do not).
    fn parse(
        cmd: &'static str,
        args: &[String],
        valued: &[&str],
        flags: &[&str],
    ) -> Result<Opts, String> {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(body) = a.strip_prefix("--") else {
                return Err(format!("{cmd}: unexpected argument '{a}'"));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let value = if valued.contains(&name) {
                match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("{cmd}: --{name} needs a value"))?,
                }
            } else if flags.contains(&name) {
                if inline.is_some() {
                    return Err(format!("{cmd}: --{name} takes no value"));
                }
                String::new()
            } else {
                return Err(format!("{cmd}: unknown option --{name}"));
            };
            if map.insert(name.to_string(), value).is_some() {
                return Err(format!("{cmd}: --{name} given twice"));
            }
        }
        Ok(Opts { cmd, map })
    }

    fn flag(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn addr(&self, name: &str) -> Result<Option<SocketAddr>, String> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{}: --{name}: '{v}' is not IP:PORT", self.cmd)),
        }
    }

    fn need_addr(&self, name: &str) -> Result<SocketAddr, String> {
        self.addr(name)?
            .ok_or_else(|| format!("{}: --{name} IP:PORT is required", self.cmd))
    }

    fn num(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
        let Some(v) = self.map.get(name) else {
            return Ok(None);
        };
        let n: u64 = v
            .parse()
            .map_err(|_| format!("{}: --{name}: '{v}' is not a number", self.cmd))?;
        if n < min || n > max {
            return Err(format!(
                "{}: --{name}: {n} is not in {min}..={max}",
                self.cmd
            ));
        }
        Ok(Some(n))
    }

    fn path(&self, name: &str) -> Result<Option<PathBuf>, String> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Err(format!("{}: --{name}: empty path", self.cmd)),
            Some(v) => Ok(Some(PathBuf::from(v))),
        }
    }
}

/// A day, the longest any duration option may be.
const MAX_MS: u64 = 86_400_000;
/// Most connections one tcp-clients run opens.
pub const MAX_COUNT: u64 = 1_000_000;
/// Most connections in flight at once (one thread each).
pub const MAX_CONCURRENCY: u64 = 30_000;

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "tcp-server" => {
            let o = Opts::parse("tcp-server", rest, &["listen", "reply", "idle-ms"], &[])?;
            Ok(Command::TcpServer(TcpServer {
                listen: o.need_addr("listen")?,
                reply: o.num("reply", 0, MAX_PAYLOAD as u64)?.unwrap_or(16) as usize,
                idle_ms: o.num("idle-ms", 1, MAX_MS)?.unwrap_or(600_000),
            }))
        }
        "tcp-clients" => {
            let o = Opts::parse(
                "tcp-clients",
                rest,
                &[
                    "connect",
                    "count",
                    "concurrency",
                    "hold-ms",
                    "timeout-ms",
                    "rounds",
                    "gap-ms",
                    "gate",
                    "gate-timeout-ms",
                    "ready",
                    "expect-ok",
                ],
                &["together", "quiet"],
            )?;
            let count = o.num("count", 1, MAX_COUNT)?.unwrap_or(1);
            let concurrency = o
                .num("concurrency", 1, MAX_CONCURRENCY)?
                .unwrap_or(count.min(MAX_CONCURRENCY))
                .min(count);
            let together = o.flag("together");
            if together && concurrency != count {
                return Err(format!(
                    "tcp-clients: --together needs --concurrency = --count ({concurrency} != {count})"
                ));
            }
            let expect_ok = o.num("expect-ok", 0, MAX_COUNT)?;
            if let Some(e) = expect_ok {
                if e > count {
                    return Err(format!(
                        "tcp-clients: --expect-ok {e} is more than --count {count}"
                    ));
                }
            }
            let rounds = o.num("rounds", 1, 1_000_000)?.unwrap_or(1);
            let gate = o.path("gate")?;
            if gate.is_some() && o.map.contains_key("gap-ms") {
                return Err("tcp-clients: --gate and --gap-ms exclude each other".into());
            }
            Ok(Command::TcpClients(TcpClients {
                connect: o.need_addr("connect")?,
                count,
                concurrency,
                hold_ms: o.num("hold-ms", 0, MAX_MS)?.unwrap_or(0),
                timeout_ms: o.num("timeout-ms", 1, MAX_MS)?.unwrap_or(10_000),
                rounds,
                gap_ms: o.num("gap-ms", 0, MAX_MS)?.unwrap_or(0),
                gate,
                gate_timeout_ms: o.num("gate-timeout-ms", 1, MAX_MS)?.unwrap_or(600_000),
                ready: o.path("ready")?,
                together,
                expect_ok,
                quiet: o.flag("quiet"),
            }))
        }
        "udp-echo" => {
            let o = Opts::parse("udp-echo", rest, &["listen"], &[])?;
            Ok(Command::UdpEcho(UdpEcho {
                listen: o.need_addr("listen")?,
            }))
        }
        "udp-ping" => {
            let o = Opts::parse(
                "udp-ping",
                rest,
                &[
                    "to",
                    "bind",
                    "count",
                    "interval-ms",
                    "timeout-ms",
                    "expect-ok",
                ],
                &[],
            )?;
            let count = o.num("count", 1, MAX_COUNT)?.unwrap_or(10);
            let expect_ok = o.num("expect-ok", 0, MAX_COUNT)?;
            if let Some(e) = expect_ok {
                if e > count {
                    return Err(format!(
                        "udp-ping: --expect-ok {e} is more than --count {count}"
                    ));
                }
            }
            let to = o.need_addr("to")?;
            let bind = o.addr("bind")?;
            if bind.is_some_and(|b| b.is_ipv4() != to.is_ipv4()) {
                return Err("udp-ping: --bind and --to must be of the same address family".into());
            }
            Ok(Command::UdpPing(UdpPing {
                to,
                bind,
                count,
                interval_ms: o.num("interval-ms", 0, MAX_MS)?.unwrap_or(0),
                timeout_ms: o.num("timeout-ms", 1, MAX_MS)?.unwrap_or(2000),
                expect_ok,
            }))
        }
        other => Err(format!("unknown command '{other}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    fn clients(s: &str) -> TcpClients {
        match p(s) {
            Ok(Command::TcpClients(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn server() {
        let Ok(Command::TcpServer(s)) = p("tcp-server --listen 10.0.0.1:80") else {
            panic!()
        };
        assert_eq!(
            s,
            TcpServer {
                listen: "10.0.0.1:80".parse().unwrap(),
                reply: 16,
                idle_ms: 600_000
            }
        );
        let Ok(Command::TcpServer(s)) = p("tcp-server --listen=0.0.0.0:9 --reply 0 --idle-ms=5")
        else {
            panic!()
        };
        assert_eq!((s.reply, s.idle_ms), (0, 5));
        assert!(p("tcp-server")
            .unwrap_err()
            .contains("--listen IP:PORT is required"));
        assert!(p("tcp-server --listen 10.0.0.1")
            .unwrap_err()
            .contains("not IP:PORT"));
        assert!(p("tcp-server --listen 1.2.3.4:5 --reply 2000000")
            .unwrap_err()
            .contains("not in"));
        assert!(p("tcp-server --listen")
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn clients_defaults() {
        let c = clients("tcp-clients --connect 10.0.0.1:80");
        assert_eq!(
            c,
            TcpClients {
                connect: "10.0.0.1:80".parse().unwrap(),
                count: 1,
                concurrency: 1,
                hold_ms: 0,
                timeout_ms: 10_000,
                rounds: 1,
                gap_ms: 0,
                gate: None,
                gate_timeout_ms: 600_000,
                ready: None,
                together: false,
                expect_ok: None,
                quiet: false,
            }
        );
        // Concurrency defaults to the count and never exceeds it.
        assert_eq!(
            clients("tcp-clients --connect 1.2.3.4:5 --count 2000").concurrency,
            2000
        );
        assert_eq!(
            clients("tcp-clients --connect 1.2.3.4:5 --count 5 --concurrency 9").concurrency,
            5
        );
        assert_eq!(
            clients("tcp-clients --connect 1.2.3.4:5 --count 50 --concurrency 9").concurrency,
            9
        );
    }

    #[test]
    fn clients_all_options() {
        let c = clients(
            "tcp-clients --connect 10.0.0.1:80 --count 64 --concurrency 64 --hold-ms 500 \
             --timeout-ms 3000 --rounds 2 --gate /tmp/g --gate-timeout-ms 9000 --ready /tmp/r \
             --together --expect-ok 60 --quiet",
        );
        assert_eq!(
            (c.count, c.concurrency, c.hold_ms, c.timeout_ms, c.rounds),
            (64, 64, 500, 3000, 2)
        );
        assert_eq!(c.gate.as_deref(), Some(std::path::Path::new("/tmp/g")));
        assert_eq!(c.ready.as_deref(), Some(std::path::Path::new("/tmp/r")));
        assert_eq!(
            (c.gate_timeout_ms, c.together, c.expect_ok, c.quiet),
            (9000, true, Some(60), true)
        );
    }

    #[test]
    fn clients_errors() {
        let e = |s: &str| p(s).unwrap_err();
        assert!(e("tcp-clients --count 3").contains("--connect IP:PORT is required"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --count 0").contains("not in 1..="));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --count x").contains("not a number"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --count -1").contains("not a number"));
        assert!(
            e("tcp-clients --connect 1.2.3.4:5 --count 4 --concurrency 2 --together")
                .contains("--together needs")
        );
        assert!(e("tcp-clients --connect 1.2.3.4:5 --count 4 --expect-ok 5").contains("more than"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --gate f --gap-ms 3").contains("exclude"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --together=1").contains("takes no value"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --bogus 1").contains("unknown option --bogus"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --count 1 --count 2").contains("given twice"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 stray").contains("unexpected argument"));
        assert!(e("tcp-clients --connect 1.2.3.4:5 --ready=").contains("empty path"));
    }

    #[test]
    fn udp() {
        let Ok(Command::UdpEcho(u)) = p("udp-echo --listen 10.0.0.1:5353") else {
            panic!()
        };
        assert_eq!(u.listen, "10.0.0.1:5353".parse().unwrap());
        let Ok(Command::UdpPing(u)) = p("udp-ping --to 10.0.0.1:5353") else {
            panic!()
        };
        assert_eq!(
            (u.count, u.interval_ms, u.timeout_ms, u.expect_ok),
            (10, 0, 2000, None)
        );
        assert_eq!(u.bind, None);
        let Ok(Command::UdpPing(u)) = p("udp-ping --to 10.0.0.1:5353 --bind 10.0.0.3:6000") else {
            panic!()
        };
        assert_eq!(u.bind, Some("10.0.0.3:6000".parse().unwrap()));
        assert!(p("udp-ping --to 10.0.0.1:5 --bind [::1]:6")
            .unwrap_err()
            .contains("family"));
        let Ok(Command::UdpPing(u)) = p(
            "udp-ping --to 10.0.0.1:5353 --count 3 --interval-ms 7 --timeout-ms 9 --expect-ok 0",
        ) else {
            panic!()
        };
        assert_eq!(
            (u.count, u.interval_ms, u.timeout_ms, u.expect_ok),
            (3, 7, 9, Some(0))
        );
        assert!(p("udp-ping --to 1.2.3.4:5 --count 2 --expect-ok 3")
            .unwrap_err()
            .contains("more than"));
        assert!(p("udp-echo --listen 1.2.3.4:5 --reply 3")
            .unwrap_err()
            .contains("unknown option"));
    }

    #[test]
    fn commands() {
        assert_eq!(p("--help"), Ok(Command::Help));
        assert_eq!(p("help"), Ok(Command::Help));
        assert!(p("").unwrap_err().contains("no command"));
        assert!(p("tcp-serve --listen 1.2.3.4:5")
            .unwrap_err()
            .contains("unknown command"));
    }
}
