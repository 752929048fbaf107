//! TCP server (one poll loop, thousands of connections) and clients (one
//! thread per connection in flight).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::TcpClients;
use crate::proto;
use crate::sys;

// ---------------------------------------------------------------- server

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// The client closed its side, or we answered ERR: close once `out`
    /// is written.
    closing: bool,
    last: Instant,
}

impl Conn {
    fn pending(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Reads what is there and queues the answers. Ok(false): drop it now.
    fn on_readable(&mut self, reply_len: usize) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closing = true;
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        while let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
            match std::str::from_utf8(&line)
                .map_err(|_| proto::ProtoError("request is not UTF-8".into()))
                .and_then(proto::parse_request)
            {
                Ok(token) => {
                    let r = proto::reply(token, self.peer, reply_len);
                    self.queue(&r);
                }
                Err(e) => {
                    self.queue(&proto::error_reply(&e.0));
                    self.closing = true;
                    self.inbuf.clear();
                    break;
                }
            }
        }
        if self.inbuf.len() > proto::MAX_REQUEST_LINE {
            self.queue(&proto::error_reply("request line too long"));
            self.closing = true;
            self.inbuf.clear();
        }
        self.last = Instant::now();
        self.flush()
    }

    fn queue(&mut self, bytes: &[u8]) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Writes what it can. Ok(false): drop it now (done or broken).
    fn flush(&mut self) -> bool {
        while self.pending() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return false,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        !self.closing
    }
}

/// Serves `listener` until `stop` is set: every request line is answered
/// with `reply_len` payload bytes; connections idle for `idle` are
/// dropped. `log` gets `peer IP` once for each distinct client address.
pub fn serve(
    listener: TcpListener,
    reply_len: usize,
    idle: Duration,
    stop: &AtomicBool,
    mut log: impl FnMut(&str),
) -> io::Result<()> {
    let _ = sys::set_backlog(listener.as_raw_fd(), 8192);
    listener.set_nonblocking(true)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut pfds: Vec<sys::PollFd> = Vec::new();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut accept_error_logged = false;
    while !stop.load(Ordering::Relaxed) {
        pfds.clear();
        pfds.push(sys::PollFd {
            fd: listener.as_raw_fd(),
            events: sys::POLLIN,
            revents: 0,
        });
        for c in &conns {
            let events = if c.pending() {
                sys::POLLOUT
            } else {
                sys::POLLIN
            };
            pfds.push(sys::PollFd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        sys::poll_fds(&mut pfds, 200)?;
        let now = Instant::now();
        let mut keep = Vec::with_capacity(conns.len());
        for (c, p) in conns.iter_mut().zip(&pfds[1..]) {
            let alive = if p.revents & sys::POLLNVAL != 0 {
                false
            } else if p.revents & sys::POLLOUT != 0 {
                c.last = now;
                c.flush()
            } else if p.revents & (sys::POLLIN | sys::POLLERR | sys::POLLHUP) != 0 {
                c.on_readable(reply_len)
            } else {
                now.duration_since(c.last) < idle
            };
            keep.push(alive);
        }
        let mut k = keep.into_iter();
        conns.retain(|_| k.next().unwrap_or(true));

        if pfds[0].revents & sys::POLLIN != 0 {
            for _ in 0..1024 {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        accept_error_logged = false;
                        if seen.insert(peer.ip()) {
                            log(&format!("peer {}", peer.ip()));
                        }
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        conns.push(Conn {
                            stream,
                            peer,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            out_pos: 0,
                            closing: false,
                            last: now,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and friends: say so once, retry later.
                        if !accept_error_logged {
                            log(&format!("accept: {e}"));
                            accept_error_logged = true;
                        }
                        thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

// --------------------------------------------------------------- clients

/// What became of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Connection refused (an RST answered the SYN).
    Refused(String),
    /// No answer in time (connect or read).
    Timeout(String),
    /// Anything else: reset later, closed early, bad reply, unreachable...
    Failed(String),
}

fn classify(e: &io::Error, what: &str) -> Outcome {
    let msg = format!("{what}: {e}");
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused(msg),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout(msg),
        _ => Outcome::Failed(msg),
    }
}

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub refused: u64,
    pub timeout: u64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Timeout(_) => self.timeout += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.refused + self.timeout
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} failed={} refused={} timeout={}",
            self.ok, self.failed, self.refused, self.timeout
        )
    }
}

/// The result of a tcp-clients run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    /// Outcomes of the first exchange of every connection.
    pub first_round: Counts,
    /// Most connections open at the same time.
    pub open_max: u64,
    pub elapsed: Duration,
    /// Client addresses the server reported.
    pub peers: BTreeSet<IpAddr>,
    /// Distinct error messages and how often each happened.
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    /// The summary line.
    pub fn line(&self) -> String {
        let peers: Vec<String> = self.peers.iter().map(|p| p.to_string()).collect();
        format!(
            "{} open_max={} elapsed_ms={} peers={}",
            self.counts,
            self.open_max,
            self.elapsed.as_millis(),
            if peers.is_empty() {
                "-".to_string()
            } else {
                peers.join(",")
            }
        )
    }

    /// Success as the exit status should report it.
    pub fn passed(&self, expect_ok: Option<u64>) -> bool {
        let c = &self.counts;
        match expect_ok {
            None => c.failed + c.refused + c.timeout == 0,
            Some(n) => c.ok == n && c.failed == 0 && c.refused == 0,
        }
    }
}

struct Shared<'a> {
    o: &'a TcpClients,
    next: AtomicU64,
    finished: AtomicU64,
    counts: Mutex<Counts>,
    first: Mutex<Counts>,
    open: AtomicU64,
    open_max: AtomicU64,
    peers: Mutex<BTreeSet<IpAddr>>,
    errors: Mutex<BTreeMap<String, u64>>,
    barrier: Option<Barrier>,
}

impl Shared<'_> {
    fn first_round_done(&self, o: &Outcome) {
        let mut f = self.first.lock().unwrap();
        f.add(o);
        if f.total() == self.o.count {
            if let Some(path) = &self.o.ready {
                if let Err(e) = write_atomically(path, &format!("{}\n", *f)) {
                    eprintln!("tcp-clients: cannot write {}: {e}", path.display());
                }
            }
        }
    }

    fn record(&self, o: &Outcome) {
        self.counts.lock().unwrap().add(o);
        if let Outcome::Failed(m) | Outcome::Refused(m) | Outcome::Timeout(m) = o {
            *self.errors.lock().unwrap().entry(m.clone()).or_insert(0) += 1;
        }
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard<'a>(&'a AtomicU64);

impl<'a> OpenGuard<'a> {
    fn new(sh: &'a Shared<'_>) -> Self {
        let n = sh.open.fetch_add(1, Ordering::SeqCst) + 1;
        sh.open_max.fetch_max(n, Ordering::SeqCst);
        OpenGuard(&sh.open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn send(s: &TcpStream, token: &str) -> Result<(), Outcome> {
    let mut w = s;
    w.write_all(proto::request(token).as_bytes())
        .map_err(|e| classify(&e, "send"))
}

fn receive(r: &mut BufReader<&TcpStream>, token: &str, sh: &Shared<'_>) -> Result<(), Outcome> {
    let mut line = Vec::new();
    let limit = (proto::MAX_PAYLOAD + 200) as u64;
    r.by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| classify(&e, "read"))?;
    if line.last() != Some(&b'\n') {
        return Err(Outcome::Failed(if line.is_empty() {
            "connection closed before the reply".into()
        } else if line.len() as u64 >= limit {
            "reply too long".into()
        } else {
            "connection closed in the middle of the reply".into()
        }));
    }
    let text =
        std::str::from_utf8(&line).map_err(|_| Outcome::Failed("reply is not UTF-8".into()))?;
    let reply = proto::parse_reply(text).map_err(|e| Outcome::Failed(format!("reply: {e}")))?;
    if reply.token != token {
        return Err(Outcome::Failed(format!(
            "reply for token {} instead of {token}",
            reply.token
        )));
    }
    sh.peers.lock().unwrap().insert(reply.peer.ip());
    Ok(())
}

fn wait_gate(o: &TcpClients) -> Result<(), Outcome> {
    match &o.gate {
        None => {
            if o.gap_ms > 0 {
                thread::sleep(Duration::from_millis(o.gap_ms));
            }
            Ok(())
        }
        Some(gate) => {
            let end = Instant::now() + Duration::from_millis(o.gate_timeout_ms);
            while !gate.exists() {
                if Instant::now() >= end {
                    return Err(Outcome::Failed(format!(
                        "gate {} did not appear within {} ms",
                        gate.display(),
                        o.gate_timeout_ms
                    )));
                }
                thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    }
}

fn connection(id: u64, sh: &Shared<'_>) -> Outcome {
    let o = sh.o;
    let t = Duration::from_millis(o.timeout_ms);
    let token = |round: u64| format!("c{id}.r{round}");
    let conn = TcpStream::connect_timeout(&o.connect, t)
        .map_err(|e| classify(&e, "connect"))
        .and_then(|s| {
            s.set_read_timeout(Some(t))
                .map_err(|e| classify(&e, "setsockopt"))?;
            s.set_write_timeout(Some(t))
                .map_err(|e| classify(&e, "setsockopt"))?;
            let _ = s.set_nodelay(true);
            send(&s, &token(1))?;
            Ok(s)
        });
    let guard = conn.as_ref().ok().map(|_| OpenGuard::new(sh));
    if let Some(b) = &sh.barrier {
        b.wait();
    }
    let first = conn.and_then(|s| {
        if o.hold_ms > 0 {
            thread::sleep(Duration::from_millis(o.hold_ms));
        }
        let mut r = BufReader::new(&s);
        receive(&mut r, &token(1), sh)?;
        // Anything already buffered would belong to no request.
        drop(r);
        Ok(s)
    });
    sh.first_round_done(first.as_ref().err().unwrap_or(&Outcome::Ok));
    let s = match first {
        Ok(s) => s,
        Err(out) => return out,
    };
    let mut r = BufReader::new(&s);
    for round in 2..=o.rounds {
        let step = wait_gate(o)
            .and_then(|()| send(&s, &token(round)))
            .and_then(|()| receive(&mut r, &token(round), sh));
        if let Err(out) = step {
            return out;
        }
    }
    drop(r);
    drop(s);
    drop(guard);
    Outcome::Ok
}

/// Runs the clients; `progress` gets a line every ~10 s (for slow runs).
pub fn run_clients(o: &TcpClients, mut progress: impl FnMut(&str)) -> Summary {
    let start = Instant::now();
    let sh = Shared {
        o,
        next: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        counts: Mutex::new(Counts::default()),
        first: Mutex::new(Counts::default()),
        open: AtomicU64::new(0),
        open_max: AtomicU64::new(0),
        peers: Mutex::new(BTreeSet::new()),
        errors: Mutex::new(BTreeMap::new()),
        barrier: o.together.then(|| Barrier::new(o.concurrency as usize)),
    };
    let worker = |sh: &Shared<'_>| loop {
        let id = sh.next.fetch_add(1, Ordering::SeqCst);
        if id >= sh.o.count {
            break;
        }
        let out = connection(id, sh);
        sh.record(&out);
    };
    thread::scope(|scope| {
        let mut spawned = 0u64;
        for i in 0..o.concurrency {
            let sh = &sh;
            let r = thread::Builder::new()
                .name(format!("conn{i}"))
                .stack_size(128 * 1024)
                .spawn_scoped(scope, move || worker(sh));
            match r {
                Ok(_) => spawned += 1,
                Err(e) => {
                    progress(&format!(
                        "cannot start thread {i} of {}: {e}",
                        o.concurrency
                    ));
                    if o.together {
                        // The barrier would wait for it forever.
                        eprintln!("tcp-clients: --together needs {} threads", o.concurrency);
                        std::process::exit(3);
                    }
                    break;
                }
            }
        }
        if spawned == 0 {
            worker(&sh);
        }
        let mut last = Instant::now();
        while sh.finished.load(Ordering::Relaxed) < o.count {
            thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= Duration::from_secs(10) {
                last = Instant::now();
                progress(&format!(
                    "progress: {:.0} s, finished {}/{}, open {} (max {}), {}",
                    start.elapsed().as_secs_f64(),
                    sh.finished.load(Ordering::Relaxed),
                    o.count,
                    sh.open.load(Ordering::Relaxed),
                    sh.open_max.load(Ordering::Relaxed),
                    *sh.counts.lock().unwrap()
                ));
            }
        }
    });
    let summary = Summary {
        counts: *sh.counts.lock().unwrap(),
        first_round: *sh.first.lock().unwrap(),
        open_max: sh.open_max.load(Ordering::SeqCst),
        elapsed: start.elapsed(),
        peers: std::mem::take(&mut *sh.peers.lock().unwrap()),
        errors: std::mem::take(&mut *sh.errors.lock().unwrap()),
    };
    summary
}
