//! `pihctl`: the operator's client of the pih-bridge management API.
//!
//! ```text
//! pihctl [--bridge IP:PORT] [--key HEX | --key-file FILE] [--json] [--timeout S] COMMAND
//!   insert CLIENT_IP INTERNAL_IP:PORT [--proto tcp|udp] [--port P] [--ttl S]
//!   remove CLIENT_IP INTERNAL_IP:PORT [--proto tcp|udp]
//!   rm ID
//!   list
//!   stats
//!   health
//! ```
//!
//! The bridge address comes from `--bridge` or `PIH_BRIDGE`; the key (hex,
//! the same as the bridge's `key=`) from `--key`, `--key-file` or
//! `PIH_KEY`. Without a key, requests go unsigned (for a bridge with
//! `auth=off`). Requests are signed with [`pih_control::auth`], the very
//! code the bridge verifies with.
//!
//! Exit codes: [`EXIT_OK`] 0, [`EXIT_API`] 1 (the bridge answered with an
//! error), [`EXIT_USAGE`] 2, [`EXIT_CONNECTION`] 3 (no connection, timeout,
//! or an answer that is not the API's).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pih_control::auth;
use pih_control::config::{MAX_KEY_LEN, MIN_KEY_HEX_DIGITS};
use pih_control::rules::Proto;
use serde_json::{json, Value};

pub const EXIT_OK: i32 = 0;
pub const EXIT_API: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_CONNECTION: i32 = 3;

/// Largest response accepted.
const MAX_RESPONSE: u64 = 4 << 20;
/// Default connect and read timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub const USAGE: &str = "\
usage: pihctl [OPTIONS] COMMAND [ARGS]

commands:
  insert CLIENT_IP INTERNAL_IP:PORT [--proto tcp|udp] [--port P] [--ttl S]
                         let CLIENT_IP reach INTERNAL_IP:PORT; prints the
                         external address and port to connect to
  remove CLIENT_IP INTERNAL_IP:PORT [--proto tcp|udp]
                         remove that rule and cut its sessions
  rm ID                  remove rule ID
  list                   list the rules
  stats                  interface, NAT and rule counters
  health                 is the bridge up; its version and uptime

options:
  --bridge IP:PORT       the bridge's management address (or PIH_BRIDGE)
  --key HEX              shared secret, as in the bridge's key= (or PIH_KEY)
  --key-file FILE        read the hex secret from FILE
  --json                 print the bridge's JSON answer instead of a table
  --timeout S            connect/read timeout in seconds (default 10)
  -h, --help             this help
  -V, --version          pihctl's version

exit codes: 0 ok, 1 the bridge refused (error printed), 2 usage,
            3 connection failure or unexpected answer
";

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

/// Options that apply to every command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub bridge: String,
    pub key: Option<Vec<u8>>,
    pub json: bool,
    pub timeout: Duration,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Insert {
        client: Ipv4Addr,
        internal: SocketAddrV4,
        proto: Proto,
        port: Option<u16>,
        ttl: Option<u32>,
    },
    Remove {
        client: Ipv4Addr,
        internal: SocketAddrV4,
        proto: Proto,
    },
    Rm {
        id: u32,
    },
    List,
    Stats,
    Health,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    Run(Global, Command),
    Help,
    Version,
}

/// A command-line mistake (exit code 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Parses the arguments (without the program name). Options may come
/// before or after the command; `--opt=value` works too. `env` looks up
/// environment variables (`PIH_BRIDGE`, `PIH_KEY`).
pub fn parse_args(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, UsageError> {
    let mut bridge = None;
    let mut key_hex: Option<(String, &str)> = None;
    let mut key_file = None;
    let mut json = false;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut proto = None;
    let mut port = None;
    let mut ttl = None;
    let mut positional: Vec<&str> = Vec::new();

    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, UsageError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs {what}"))),
            }
        };
        match name {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--json" => json = true,
            "--bridge" => bridge = Some(value("an address, IP:PORT")?),
            "--key" => key_hex = Some((value("a hex key")?, "--key")),
            "--key-file" => key_file = Some(value("a file name")?),
            "--timeout" => {
                let v = value("seconds")?;
                let s: u64 = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0 && s <= 3600)
                    .ok_or_else(|| usage(format!("--timeout: invalid seconds {v:?}")))?;
                timeout = Duration::from_secs(s);
            }
            "--proto" => {
                let v = value("tcp or udp")?;
                proto =
                    Some(Proto::from_name(&v).ok_or_else(|| {
                        usage(format!("--proto: expected tcp or udp, not {v:?}"))
                    })?);
            }
            "--port" => {
                let v = value("a port")?;
                port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| usage(format!("--port: invalid port {v:?}")))?,
                );
            }
            "--ttl" => {
                let v = value("seconds")?;
                ttl = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|&t| t > 0)
                        .ok_or_else(|| usage(format!("--ttl: invalid seconds {v:?}")))?,
                );
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(format!("unknown option {s}")))
            }
            _ => positional.push(arg),
        }
    }

    let Some((&cmd, rest)) = positional.split_first() else {
        return Err(usage("no command given"));
    };
    let only_for = |what: &str, given: bool, allowed: bool| {
        if given && !allowed {
            Err(usage(format!("{what} does not apply to {cmd}")))
        } else {
            Ok(())
        }
    };
    let is_insert = cmd == "insert";
    only_for("--proto", proto.is_some(), is_insert || cmd == "remove")?;
    only_for("--port", port.is_some(), is_insert)?;
    only_for("--ttl", ttl.is_some(), is_insert)?;
    let arity = |n: usize, shape: &str| {
        if rest.len() == n {
            Ok(())
        } else {
            Err(usage(format!("usage: pihctl {cmd} {shape}")))
        }
    };
    let command = match cmd {
        "insert" | "remove" => {
            arity(2, "CLIENT_IP INTERNAL_IP:PORT")?;
            let client = parse_ip(rest[0])?;
            let internal = parse_endpoint(rest[1])?;
            let proto = proto.unwrap_or_default();
            if is_insert {
                Command::Insert {
                    client,
                    internal,
                    proto,
                    port,
                    ttl,
                }
            } else {
                Command::Remove {
                    client,
                    internal,
                    proto,
                }
            }
        }
        "rm" => {
            arity(1, "ID")?;
            let id = rest[0]
                .parse::<u32>()
                .ok()
                .filter(|&id| id > 0)
                .ok_or_else(|| usage(format!("invalid rule id {:?}", rest[0])))?;
            Command::Rm { id }
        }
        "list" | "stats" | "health" => {
            arity(0, "")?;
            match cmd {
                "list" => Command::List,
                "stats" => Command::Stats,
                _ => Command::Health,
            }
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    };

    let bridge = bridge
        .or_else(|| env("PIH_BRIDGE").filter(|s| !s.is_empty()))
        .ok_or_else(|| usage("no bridge address: give --bridge IP:PORT or set PIH_BRIDGE"))?;
    let key = match (key_hex, key_file) {
        (Some(_), Some(_)) => return Err(usage("give --key or --key-file, not both")),
        (Some((hex, origin)), None) => Some(parse_key(&hex, origin)?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("--key-file {path}: {e}")))?;
            Some(parse_key(text.trim(), &format!("key file {path}"))?)
        }
        (None, None) => match env("PIH_KEY").filter(|s| !s.trim().is_empty()) {
            Some(hex) => Some(parse_key(hex.trim(), "PIH_KEY")?),
            None => None,
        },
    };
    Ok(Invocation::Run(
        Global {
            bridge,
            key,
            json,
            timeout,
        },
        command,
    ))
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, UsageError> {
    s.parse()
        .map_err(|_| usage(format!("invalid IPv4 address {s:?}")))
}

fn parse_endpoint(s: &str) -> Result<SocketAddrV4, UsageError> {
    let e: SocketAddrV4 = s.parse().map_err(|_| {
        usage(format!(
            "invalid endpoint {s:?} (expected INTERNAL_IP:PORT)"
        ))
    })?;
    if e.port() == 0 {
        return Err(usage(format!("invalid endpoint {s:?}: port 0")));
    }
    Ok(e)
}

/// Decodes a hex key as the bridge's `key=` takes it (32..=128 digits).
pub fn parse_key(hex: &str, origin: &str) -> Result<Vec<u8>, UsageError> {
    let digits = hex.len();
    if !digits.is_multiple_of(2) || !(MIN_KEY_HEX_DIGITS..=2 * MAX_KEY_LEN).contains(&digits) {
        return Err(usage(format!(
            "{origin}: key has {digits} characters (expected an even number of hex digits, \
             {MIN_KEY_HEX_DIGITS}..={})",
            2 * MAX_KEY_LEN
        )));
    }
    let mut key = vec![0u8; digits / 2];
    auth::decode_hex(hex, &mut key).ok_or_else(|| usage(format!("{origin}: key is not hex")))?;
    Ok(key)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// The bytes of a request, signed with `key` at `ts` if there is a key.
pub fn build_request(
    host: &str,
    key: Option<&[u8]>,
    ts: u64,
    method: &str,
    target: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pihctl/{}\r\n\
         Accept: application/json\r\nX-Pih-Api: 1\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(key) = key {
        let a = auth::authorization(key, method, target, ts, body);
        let _ = write!(head, "Authorization: {a}\r\n");
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response from the bridge.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub json: Value,
}

/// Why there is no response (exit code 3).
#[derive(Debug)]
pub struct ConnectionError(pub String);

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a whole response (the connection is read to its end).
pub fn parse_response(raw: &[u8]) -> Result<Response, ConnectionError> {
    let bad = |why: &str| ConnectionError(format!("unexpected answer from the bridge: {why}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no HTTP head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad("no status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status: u16 = code.parse().map_err(|_| bad("bad status code"))?;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                );
            }
        }
    }
    let rest = &raw[split + 4..];
    let body = match length {
        Some(n) if n <= rest.len() => &rest[..n],
        Some(_) => return Err(bad("truncated body")),
        None => rest,
    };
    let body = String::from_utf8(body.to_vec()).map_err(|_| bad("body is not UTF-8"))?;
    let json: Value = serde_json::from_str(&body).map_err(|_| bad("body is not JSON"))?;
    Ok(Response { status, body, json })
}

/// A connection to the bridge.
pub struct Client {
    addrs: Vec<SocketAddr>,
    host: String,
    key: Option<Vec<u8>>,
    timeout: Duration,
}

impl Client {
    pub fn new(g: &Global) -> Result<Client, ConnectionError> {
        let addrs: Vec<SocketAddr> = g
            .bridge
            .to_socket_addrs()
            .map_err(|e| ConnectionError(format!("bridge address {}: {e}", g.bridge)))?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectionError(format!(
                "bridge address {}: no address",
                g.bridge
            )));
        }
        Ok(Client {
            addrs,
            host: g.bridge.clone(),
            key: g.key.clone(),
            timeout: g.timeout,
        })
    }

    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, ConnectionError> {
        let mut last = None;
        for addr in &self.addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(mut s) => {
                    let io = |e: io::Error| ConnectionError(format!("{addr}: {e}"));
                    s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                    s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                    s.write_all(request).map_err(io)?;
                    let mut raw = Vec::new();
                    s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
                    return Ok(raw);
                }
                Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(ConnectionError(last.unwrap_or_else(|| "no address".into())))
    }

    /// Sends one request and reads the answer. A signed request refused
    /// as a replay (an identical one went out within the same second) is
    /// signed again a second later, once.
    pub fn call(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Response, ConnectionError> {
        let mut retried = false;
        loop {
            let ts = unix_now();
            let req = build_request(&self.host, self.key.as_deref(), ts, method, target, body);
            let resp = parse_response(&self.exchange(&req)?)?;
            let replayed = resp.status == 401 && resp.json["error"] == "replayed request";
            if replayed && self.key.is_some() && !retried {
                retried = true;
                std::thread::sleep(until_next_second());
                continue;
            }
            return Ok(resp);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn until_next_second() -> Duration {
    let sub = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_nanos(u64::from(1_000_000_000 - sub.min(999_999_999)) + 1_000_000)
}

// ---------------------------------------------------------------------------
// Running a command
// ---------------------------------------------------------------------------

/// Runs pihctl: `args` without the program name. Returns the exit code.
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (global, command) = match parse_args(args, env) {
        Ok(Invocation::Run(g, c)) => (g, c),
        Ok(Invocation::Help) => {
            let _ = out.write_all(USAGE.as_bytes());
            return EXIT_OK;
        }
        Ok(Invocation::Version) => {
            let _ = writeln!(out, "pihctl {}", env!("CARGO_PKG_VERSION"));
            return EXIT_OK;
        }
        Err(e) => {
            let _ = writeln!(err, "pihctl: {e}\n(pihctl --help for usage)");
            return EXIT_USAGE;
        }
    };
    match execute(&global, &command, out) {
        Ok(()) => EXIT_OK,
        Err(Failure::Api(resp)) => {
            if global.json {
                let _ = writeln!(out, "{}", resp.body);
            }
            let msg = resp.json["error"].as_str().unwrap_or("error");
            let mut line = format!("pihctl: {} {}: {msg}", resp.status, reason(resp.status));
            if let Some(field) = resp.json["field"].as_str() {
                let _ = write!(line, " (field: {field})");
            }
            if resp.status == 401 && global.key.is_none() {
                line.push_str("\n(no key given: --key, --key-file or PIH_KEY)");
            }
            let _ = writeln!(err, "{line}");
            EXIT_API
        }
        Err(Failure::Connection(e)) => {
            let _ = writeln!(err, "pihctl: {e}");
            EXIT_CONNECTION
        }
    }
}

enum Failure {
    Api(Response),
    Connection(ConnectionError),
}

impl From<ConnectionError> for Failure {
    fn from(e: ConnectionError) -> Self {
        Failure::Connection(e)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A 200 answer, else the failure.
fn ok(resp: Response) -> Result<Response, Failure> {
    if resp.status == 200 {
        Ok(resp)
    } else {
        Err(Failure::Api(resp))
    }
}

fn unexpected(what: &str) -> Failure {
    Failure::Connection(ConnectionError(format!(
        "unexpected answer from the bridge: {what}"
    )))
}

fn execute(g: &Global, command: &Command, out: &mut dyn Write) -> Result<(), Failure> {
    let client = Client::new(g)?;
    let print_json = |out: &mut dyn Write, r: &Response| {
        let _ = writeln!(out, "{}", r.body);
    };
    match command {
        Command::Insert {
            client: c,
            internal,
            proto,
            port,
            ttl,
        } => {
            let mut body = json!({
                "ip": c.to_string(),
                "dst_ip": internal.ip().to_string(),
                "dst_port": internal.port(),
            });
            if *proto != Proto::Tcp {
                body["proto"] = json!(proto.name());
            }
            if let Some(p) = port {
                body["port"] = json!(p);
            }
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let r = ok(client.call("POST", "/insert", body.to_string().as_bytes())?)?;
            if g.json {
                print_json(out, &r);
            } else {
                let (Some(ip), Some(p), Some(id)) = (
                    r.json["ip"].as_str(),
                    r.json["port"].as_u64(),
                    r.json["id"].as_u64(),
                ) else {
                    return Err(unexpected("insert answer without ip, port or id"));
                };
                let ttl = ttl.map_or(String::new(), |t| format!(", expires in {t}s"));
                let _ = writeln!(
                    out,
                    "rule {id}: {c} -> {ip}:{p} -> {internal} ({proto}{ttl}){}",
                    persisted_note(&r.json)
                );
            }
        }
        Command::Remove {
            client: c,
            internal,
            proto,
        } => {
            let mut body = json!({
                "src_ip": c.to_string(),
                "dst_ip": internal.ip().to_string(),
                "dst_port": internal.port(),
            });
            if *proto != Proto::Tcp {
                body["proto"] = json!(proto.name());
            }
            let r = ok(client.call("POST", "/remove", body.to_string().as_bytes())?)?;
            print_removed(g, out, &r);
        }
        Command::Rm { id } => {
            let r = ok(client.call("DELETE", &format!("/rules/{id}"), b"")?)?;
            print_removed(g, out, &r);
        }
        Command::List => {
            let rules = list_all(&client)?;
            if g.json {
                let _ = writeln!(out, "{}", json!({"total": rules.len(), "rules": rules}));
            } else {
                let _ = out.write_all(rules_table(&rules).as_bytes());
            }
        }
        Command::Stats => {
            let r = ok(client.call("GET", "/stats", b"")?)?;
            if g.json {
                print_json(out, &r);
            } else {
                let _ = out.write_all(stats_text(&r.json).as_bytes());
            }
        }
        Command::Health => {
            let r = ok(client.call("GET", "/health", b"")?)?;
            if g.json {
                print_json(out, &r);
            } else {
                let _ = writeln!(
                    out,
                    "{}: pih-bridge {}, up {}",
                    r.json["status"].as_str().unwrap_or("?"),
                    r.json["version"].as_str().unwrap_or("?"),
                    duration(r.json["uptime_s"].as_u64().unwrap_or(0))
                );
                if r.json["persistence"].is_object() {
                    let _ = writeln!(out, "persistence: {}", persistence_text(&r.json["persistence"]));
                }
            }
        }
    }
    Ok(())
}

fn print_removed(g: &Global, out: &mut dyn Write, r: &Response) {
    if g.json {
        let _ = writeln!(out, "{}", r.body);
    } else {
        let flows = r.json["flows"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "removed rule {} ({flows} flow{}){}",
            r.json["id"],
            if flows == 1 { "" } else { "s" },
            persisted_note(&r.json)
        );
    }
}

/// How a change answer's `persisted` reads in a sentence.
fn persisted_note(v: &Value) -> &'static str {
    match v["persisted"].as_bool() {
        Some(true) => ", persisted",
        Some(false) => ", not persisted yet",
        None => "",
    }
}

/// The `persistence` object of `/health` or `/stats` in one line.
fn persistence_text(p: &Value) -> String {
    let state = p["state"].as_str().unwrap_or("?");
    if state == "off" {
        return "off (rules in memory only)".to_string();
    }
    let mut s = format!(
        "{state}, backlog {} of {}, {} committed, {} failed attempts, {} conflicts",
        cell(&p["backlog"]),
        cell(&p["capacity"]),
        cell(&p["committed"]),
        cell(&p["failures"]),
        cell(&p["conflicts"])
    );
    if let Some(e) = p["last_error"].as_str() {
        s.push_str(&format!("; last error: {e}"));
    }
    if let Some(ms) = p["retry_in_ms"].as_u64() {
        s.push_str(&format!("; next attempt in {ms} ms"));
    }
    s
}

/// Every rule, following `next_offset` from page to page.
fn list_all(client: &Client) -> Result<Vec<Value>, Failure> {
    let mut rules = Vec::new();
    let mut offset = 0u64;
    loop {
        let target = if offset == 0 {
            "/rules".to_string()
        } else {
            format!("/rules?offset={offset}")
        };
        let r = ok(client.call("GET", &target, b"")?)?;
        let page = r.json["rules"]
            .as_array()
            .ok_or_else(|| unexpected("rules answer without a list"))?;
        rules.extend(page.iter().cloned());
        match r.json["next_offset"].as_u64() {
            Some(next) if next > offset => offset = next,
            Some(_) => return Err(unexpected("paging does not advance")),
            None => return Ok(rules),
        }
    }
}

/// `3d 4h 5m 6s`, leading zero units left out.
pub fn duration(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The rules as a table.
pub fn rules_table(rules: &[Value]) -> String {
    if rules.is_empty() {
        return "no rules\n".into();
    }
    let mut rows = vec![["ID", "CLIENT", "PROTO", "PORT", "INTERNAL", "EXPIRES"]
        .map(String::from)
        .to_vec()];
    for r in rules {
        rows.push(vec![
            cell(&r["id"]),
            cell(&r["ip"]),
            cell(&r["proto"]),
            cell(&r["port"]),
            format!("{}:{}", cell(&r["dst_ip"]), cell(&r["dst_port"])),
            r["expires_in"]
                .as_u64()
                .map_or("never".into(), |s| format!("in {}", duration(s))),
        ]);
    }
    let mut s = table(&rows);
    let _ = writeln!(
        s,
        "{} rule{}",
        rules.len(),
        if rules.len() == 1 { "" } else { "s" }
    );
    s
}

/// The statistics as text.
pub fn stats_text(v: &Value) -> String {
    let mut rows = vec![[
        "VIF",
        "ROLE",
        "RX PACKETS",
        "RX BYTES",
        "RX DROPS",
        "TX PACKETS",
        "TX BYTES",
        "TX DROPS",
    ]
    .map(String::from)
    .to_vec()];
    for vif in v["vifs"].as_array().map_or(&[][..], Vec::as_slice) {
        rows.push(
            [
                "devid",
                "role",
                "rx_packets",
                "rx_bytes",
                "rx_drops",
                "tx_packets",
                "tx_bytes",
                "tx_drops",
            ]
            .iter()
            .map(|k| cell(&vif[*k]))
            .collect(),
        );
    }
    let mut s = table(&rows);
    let nat = &v["nat"];
    let n = |k: &str| cell(&nat[k]);
    let _ = writeln!(
        s,
        "\nflows     {} active of {}; {} created, {} expired, {} removed with their rule",
        n("flows_active"),
        n("flows_capacity"),
        n("flows_created"),
        n("flows_expired"),
        n("flows_removed")
    );
    let _ = writeln!(
        s,
        "refused   {} table full, {} no port",
        n("refused_full"),
        n("refused_no_port")
    );
    if v["persistence"].is_object() {
        let _ = writeln!(s, "persist   {}", persistence_text(&v["persistence"]));
    }
    let _ = writeln!(
        s,
        "packets   {} out, {} in translated; {} dropped",
        n("forwarded_out"),
        n("forwarded_in"),
        n("dropped")
    );
    let _ = writeln!(
        s,
        "rules     {} of {}",
        cell(&v["rules"]["count"]),
        cell(&v["rules"]["capacity"])
    );
    let _ = writeln!(
        s,
        "uptime    {}",
        duration(v["uptime_s"].as_u64().unwrap_or(0))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff";

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(s: &str) -> Result<Invocation, UsageError> {
        parse_args(&args(s), &no_env)
    }

    fn run_of(s: &str) -> (Global, Command) {
        match parse(s).unwrap() {
            Invocation::Run(g, c) => (g, c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn insert_arguments() {
        let (g, c) = run_of(&format!(
            "--bridge 10.0.1.3:8080 --key {KEY} insert 203.0.113.7 192.168.252.10:22"
        ));
        assert_eq!(g.bridge, "10.0.1.3:8080");
        assert_eq!(g.key.as_deref().map(<[u8]>::len), Some(16));
        assert!(!g.json);
        assert_eq!(
            c,
            Command::Insert {
                client: "203.0.113.7".parse().unwrap(),
                internal: "192.168.252.10:22".parse().unwrap(),
                proto: Proto::Tcp,
                port: None,
                ttl: None
            }
        );
        // Options after the command, --opt=value.
        let (g, c) = run_of(
            "insert 1.2.3.4 10.0.0.9:53 --proto=udp --port 4000 --ttl=60 --json --bridge=h:1",
        );
        assert!(g.json);
        assert_eq!(g.key, None);
        assert_eq!(
            c,
            Command::Insert {
                client: "1.2.3.4".parse().unwrap(),
                internal: "10.0.0.9:53".parse().unwrap(),
                proto: Proto::Udp,
                port: Some(4000),
                ttl: Some(60)
            }
        );
    }

    #[test]
    fn other_commands() {
        let b = "--bridge x:1";
        assert_eq!(
            run_of(&format!("{b} remove 1.2.3.4 10.0.0.9:53 --proto udp")).1,
            Command::Remove {
                client: "1.2.3.4".parse().unwrap(),
                internal: "10.0.0.9:53".parse().unwrap(),
                proto: Proto::Udp
            }
        );
        assert_eq!(run_of(&format!("{b} rm 7")).1, Command::Rm { id: 7 });
        assert_eq!(run_of(&format!("{b} list")).1, Command::List);
        assert_eq!(run_of(&format!("{b} stats")).1, Command::Stats);
        assert_eq!(
            run_of(&format!("{b} health --timeout 2")).0.timeout,
            Duration::from_secs(2)
        );
        assert_eq!(parse("--help").unwrap(), Invocation::Help);
        assert_eq!(parse("list -h").unwrap(), Invocation::Help);
        assert_eq!(parse("-V").unwrap(), Invocation::Version);
    }

    #[test]
    fn usage_errors() {
        let b = "--bridge x:1";
        for bad in [
            "",
            "--bridge x:1",
            "list",
            "frobnicate --bridge x:1",
            "--bridge x:1 insert 1.2.3.4",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:0",
            "--bridge x:1 insert 1.2.3 10.0.0.1:22",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 extra",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 --proto icmp",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 --port 0",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 --port 65536",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 --ttl 0",
            "--bridge x:1 insert 1.2.3.4 10.0.0.1:22 --ttl",
            "--bridge x:1 remove 1.2.3.4 10.0.0.1:22 --port 5",
            "--bridge x:1 list --ttl 5",
            "--bridge x:1 rm",
            "--bridge x:1 rm 0",
            "--bridge x:1 rm x",
            "--bridge x:1 list --frob",
            "--bridge x:1 list --key 0011",
            "--bridge x:1 list --key zz112233445566778899aabbccddeeff",
            "--bridge x:1 list --timeout 0",
            "--bridge x:1 list --key-file /nonexistent/key",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = parse(&format!("{b} list --key {KEY} --key-file f")).unwrap_err();
        assert!(e.0.contains("not both"), "{e}");
        let e = parse("list").unwrap_err();
        assert!(e.0.contains("PIH_BRIDGE"), "{e}");
    }

    #[test]
    fn environment_and_key_file() {
        let env = |k: &str| match k {
            "PIH_BRIDGE" => Some("10.0.1.3:8080".to_string()),
            "PIH_KEY" => Some(format!(" {KEY}\n")),
            _ => None,
        };
        match parse_args(&args("list"), &env).unwrap() {
            Invocation::Run(g, _) => {
                assert_eq!(g.bridge, "10.0.1.3:8080");
                assert_eq!(g.key.unwrap()[1], 0x11);
            }
            other => panic!("{other:?}"),
        }
        // Flags win over the environment.
        let other_key = "ff".repeat(20);
        match parse_args(&args(&format!("list --bridge y:2 --key {other_key}")), &env).unwrap() {
            Invocation::Run(g, _) => {
                assert_eq!(g.bridge, "y:2");
                assert_eq!(g.key.unwrap(), vec![0xff; 20]);
            }
            other => panic!("{other:?}"),
        }
        let dir = std::env::temp_dir().join(format!("pihctl-key-{}", std::process::id()));
        std::fs::write(&dir, format!("{KEY}\n")).unwrap();
        match parse(&format!("--bridge x:1 list --key-file {}", dir.display())).unwrap() {
            Invocation::Run(g, _) => assert_eq!(g.key.unwrap().len(), 16),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn request_bytes_and_signature() {
        let key = parse_key(KEY, "test").unwrap();
        let body = br#"{"ip":"203.0.113.7","dst_ip":"192.168.252.10","dst_port":22}"#;
        let req = build_request("b:1", Some(&key), 1_700_000_000, "POST", "/insert", body);
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /insert HTTP/1.1\r\nHost: b:1\r\n"));
        // The documented example signature.
        assert!(text.contains(
            "\r\nAuthorization: PIH-HMAC-SHA256 ts=1700000000,\
             sig=fe3cb1bc8c1c559642a91885eaa27c7e009119c2cd22f7c75ab04b724fa93d84\r\n"
        ));
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n\r\n", body.len())));
        assert!(text.ends_with(std::str::from_utf8(body).unwrap()));
        let unsigned =
            String::from_utf8(build_request("b:1", None, 5, "GET", "/health", b"")).unwrap();
        assert!(!unsigned.contains("Authorization"));
        assert!(unsigned.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn response_parsing() {
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 41\r\n\r\n{\"error\":\"external port busy\",\"field\":\"p\"}",
        );
        assert!(r.is_err()); // 42 bytes of body, 41 announced: not JSON
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\ncontent-length: 42\r\n\r\n{\"error\":\"external port busy\",\"field\":\"p\"}",
        )
        .unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.json["field"], "p");
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\n\r\nnot json",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(3 * 3600 + 5), "3h 0m 5s");
        assert_eq!(duration(86_400 * 2 + 1), "2d 0h 0m 1s");
        let t = rules_table(&[
            json!({"id": 1, "ip": "203.0.113.7", "dst_ip": "192.168.252.10", "dst_port": 22,
                   "proto": "tcp", "port": 40000, "expires_in": null}),
            json!({"id": 12, "ip": "1.2.3.4", "dst_ip": "192.168.252.9", "dst_port": 53,
                   "proto": "udp", "port": 40001, "expires_in": 90}),
        ]);
        assert_eq!(
            t,
            "ID  CLIENT       PROTO  PORT   INTERNAL           EXPIRES\n\
             1   203.0.113.7  tcp    40000  192.168.252.10:22  never\n\
             12  1.2.3.4      udp    40001  192.168.252.9:53   in 1m 30s\n\
             2 rules\n"
        );
        assert_eq!(rules_table(&[]), "no rules\n");
    }
}
