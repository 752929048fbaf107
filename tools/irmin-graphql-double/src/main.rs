//! irmin-graphql-double: a stand-in for Irmin 3's GraphQL server (the
//! subset pih-bridge uses) over a plain on-disk store.  See README.md.

mod gql;
mod out;
mod store;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use out::error_body;
use store::Store;

const MAX_BODY: usize = 1 << 20;
const MAX_HEAD: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_CONNECTIONS: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const THREAD_STACK: usize = 16 << 20;

const USAGE: &str = "\
usage: irmin-graphql-double --listen ADDR:PORT --root DIR [--read-only] [--log FILE] [--pid-file FILE]

A test double of Irmin 3's GraphQL server (POST /graphql), storing each
value as a plain file under DIR/<branch>/tree/ and a commit log in
DIR/<branch>/commits.

  --listen ADDR:PORT  address to bind (port 0: any free port; the bound
                      address is printed as `listening on ADDR:PORT`)
  --root DIR          store directory (created if missing)
  --read-only         every mutation fails with \"store is read-only\"
  --log FILE          append one line per request to FILE (default: stderr)
  --pid-file FILE     write the process id to FILE once listening
  --help              this text
";

struct Config {
    listen: String,
    root: PathBuf,
    read_only: bool,
    log: Option<PathBuf>,
    pid_file: Option<PathBuf>,
}

fn usage_error(msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "irmin-graphql-double: {msg}\n\n{USAGE}");
    exit(2)
}

fn parse_args() -> Config {
    let mut listen = None;
    let mut root = None;
    let mut read_only = false;
    let mut log = None;
    let mut pid_file = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let Some(a) = a.to_str().map(str::to_string) else {
            usage_error("arguments must be UTF-8");
        };
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> String {
            if let Some(v) = inline.clone() {
                return v;
            }
            match args.next().and_then(|v| v.into_string().ok()) {
                Some(v) => v,
                None => usage_error(&format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--help" | "-h" => {
                let _ = io::stdout().write_all(USAGE.as_bytes());
                exit(0)
            }
            "--listen" => listen = Some(value("--listen")),
            "--root" => root = Some(PathBuf::from(value("--root"))),
            "--log" => log = Some(PathBuf::from(value("--log"))),
            "--pid-file" => pid_file = Some(PathBuf::from(value("--pid-file"))),
            "--read-only" if inline.is_none() => read_only = true,
            _ => usage_error(&format!("unknown argument {a}")),
        }
    }
    let Some(listen) = listen else {
        usage_error("--listen ADDR:PORT is required")
    };
    let Some(root) = root else {
        usage_error("--root DIR is required")
    };
    Config {
        listen,
        root,
        read_only,
        log,
        pid_file,
    }
}

struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    fn line(&self, msg: &str) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{t:.3} {msg}");
        let _ = out.flush();
    }
}

struct State {
    store: Store,
    log: Logger,
    connections: AtomicUsize,
}

fn main() {
    let cfg = parse_args();
    if let Err(e) = fs::create_dir_all(&cfg.root) {
        let _ = writeln!(
            io::stderr(),
            "irmin-graphql-double: cannot create --root {}: {e}",
            cfg.root.display()
        );
        exit(2);
    }
    let log: Box<dyn Write + Send> = match &cfg.log {
        Some(p) => match fs::OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "irmin-graphql-double: cannot open --log {}: {e}",
                    p.display()
                );
                exit(2);
            }
        },
        None => Box::new(io::stderr()),
    };
    let addrs: Vec<SocketAddr> = match std::net::ToSocketAddrs::to_socket_addrs(cfg.listen.as_str())
    {
        Ok(a) => a.collect(),
        Err(e) => usage_error(&format!("bad --listen {}: {e}", cfg.listen)),
    };
    let listener = match TcpListener::bind(&addrs[..]) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "irmin-graphql-double: cannot listen on {}: {e}",
                cfg.listen
            );
            exit(1);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| cfg.listen.clone());
    if let Some(p) = &cfg.pid_file {
        if let Err(e) = fs::write(p, format!("{}\n", std::process::id())) {
            let _ = writeln!(
                io::stderr(),
                "irmin-graphql-double: cannot write --pid-file {}: {e}",
                p.display()
            );
            exit(1);
        }
    }
    {
        let mut so = io::stdout();
        let _ = writeln!(so, "listening on {local}");
        let _ = so.flush();
    }
    let state = Arc::new(State {
        store: Store::new(cfg.root.clone(), cfg.read_only),
        log: Logger {
            out: Mutex::new(log),
        },
        connections: AtomicUsize::new(0),
    });
    state.log.line(&format!(
        "listening on {local} root={} read_only={}",
        cfg.root.display(),
        cfg.read_only
    ));

    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                state.log.line(&format!("accept failed: {e}"));
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        if state.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            state.connections.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = write_response(&mut s, 503, &error_body("too many connections"), true, &[]);
            state
                .log
                .line(&format!("{peer} refused: too many connections -> 503"));
            continue;
        }
        let st = state.clone();
        let spawned = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                serve(&st, stream, &peer);
                st.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            state.connections.fetch_sub(1, Ordering::SeqCst);
            state.log.line(&format!("cannot spawn a thread: {e}"));
        }
    }
}

struct Request {
    method: String,
    target: String,
    close: bool,
    graphql_ct: bool,
    body: Vec<u8>,
}

/// A request that cannot be served; the connection is closed afterwards.
struct HttpError {
    status: u16,
    msg: String,
}

fn herr(status: u16, msg: impl Into<String>) -> HttpError {
    HttpError {
        status,
        msg: msg.into(),
    }
}

fn read_line(r: &mut BufReader<TcpStream>, budget: &mut u64) -> Result<Option<Vec<u8>>, HttpError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget)
        .read_until(b'\n', &mut line)
        .map_err(|e| herr(400, format!("read error: {e}")))?;
    *budget -= n as u64;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        if *budget == 0 {
            return Err(herr(431, "request head too large"));
        }
        return Err(herr(
            400,
            "connection closed in the middle of the request head",
        ));
    }
    while line.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads one request.  `Ok(None)`: the client closed the connection
/// cleanly (or idled out) between requests.
fn read_request(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD;
    // Request line (tolerating blank lines before it).
    let line = loop {
        match read_line(r, &mut budget) {
            Ok(None) => return Ok(None),
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Err(e) if e.status == 400 && budget == MAX_HEAD => return Ok(None), // idle timeout / reset
            Err(e) => return Err(e),
        }
    };
    let line = String::from_utf8_lossy(&line).into_owned();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(herr(400, "malformed request line"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(herr(400, "unsupported HTTP version")),
    };
    let mut close = http10;
    let mut content_length: Option<usize> = None;
    let mut graphql_ct = false;
    let mut expect_continue = false;
    let mut chunked = false;
    let mut headers = 0;
    loop {
        let Some(h) = read_line(r, &mut budget)? else {
            return Err(herr(
                400,
                "connection closed in the middle of the request head",
            ));
        };
        if h.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(herr(431, "too many headers"));
        }
        let h = String::from_utf8_lossy(&h);
        let Some((name, value)) = h.split_once(':') else {
            return Err(herr(400, "malformed header"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n: usize = value.parse().map_err(|_| herr(400, "bad Content-Length"))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(herr(400, "conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => chunked = true,
            "connection" => {
                for tok in value.split(',') {
                    match tok.trim().to_ascii_lowercase().as_str() {
                        "close" => close = true,
                        "keep-alive" => close = false,
                        _ => {}
                    }
                }
            }
            "content-type" => {
                graphql_ct = value
                    .to_ascii_lowercase()
                    .starts_with("application/graphql")
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    if chunked {
        return Err(herr(
            411,
            "chunked request bodies are not supported: send Content-Length",
        ));
    }
    let len = content_length.unwrap_or(0);
    if len > MAX_BODY {
        return Err(herr(
            413,
            format!("request body larger than {MAX_BODY} bytes"),
        ));
    }
    if expect_continue && len > 0 {
        let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| herr(400, format!("short request body: {e}")))?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        close,
        graphql_ct,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn write_response(
    w: &mut TcpStream,
    status: u16,
    body: &str,
    close: bool,
    extra: &[&str],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason(status),
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut buf = head.into_bytes();
    buf.extend_from_slice(body.as_bytes());
    w.write_all(&buf)?;
    w.flush()
}

fn serve(state: &State, stream: TcpStream, peer: &str) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(rd) = stream.try_clone() else { return };
    let mut reader = BufReader::new(rd);
    let mut w = stream;
    loop {
        let req = match read_request(&mut reader, &mut w) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = write_response(&mut w, e.status, &error_body(&e.msg), true, &[]);
                state
                    .log
                    .line(&format!("{peer} bad request: {} -> {}", e.msg, e.status));
                linger_close(&mut w, &mut reader);
                return;
            }
        };
        let path = req.target.split('?').next().unwrap_or("");
        let (status, body, note, extra): (u16, String, String, &[&str]) = if path != "/graphql" {
            (
                404,
                error_body(&format!("no such path {path}: use /graphql")),
                String::new(),
                &[],
            )
        } else if req.method != "POST" {
            (
                405,
                error_body("use POST /graphql"),
                String::new(),
                &["Allow: POST"],
            )
        } else {
            let r = gql::handle(&state.store, &req.body, req.graphql_ct);
            let s = &r.summary;
            let note = format!(
                " {} {}{}",
                if s.op.is_empty() { "-" } else { &s.op },
                if s.fields.is_empty() {
                    "-".to_string()
                } else {
                    s.fields.join(",")
                },
                match (&s.first_error, s.errors) {
                    (Some(m), n) => format!(" errors={n} ({})", m.replace('\n', " ")),
                    _ => String::new(),
                }
            );
            (r.status, r.body, note, &[])
        };
        state.log.line(&format!(
            "{peer} {} {}{note} -> {status}",
            req.method, req.target
        ));
        if write_response(&mut w, status, &body, req.close, extra).is_err() || req.close {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// After an error answer: stop writing, then drain what the client still
/// sends (briefly), so that closing does not reset the connection before
/// the client has read the answer.
fn linger_close(w: &mut TcpStream, r: &mut BufReader<TcpStream>) {
    let _ = w.shutdown(Shutdown::Write);
    let _ = w.set_read_timeout(Some(Duration::from_millis(200)));
    let start = Instant::now();
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0usize;
    while start.elapsed() < Duration::from_secs(2) && total < 64 * MAX_BODY {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}
