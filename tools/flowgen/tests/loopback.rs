//! flowgen's servers and clients against each other on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flowgen::args::{self, TcpClients, UdpPing};
use flowgen::{proto, tcp, udp};

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

fn tcp_server(reply: usize, idle: Duration) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (s, lg) = (stop.clone(), log.clone());
    let handle = thread::spawn(move || {
        tcp::serve(l, reply, idle, &s, |m| {
            lg.lock().unwrap().push(m.to_string())
        })
        .unwrap()
    });
    Server {
        addr,
        stop,
        log,
        handle: Some(handle),
    }
}

fn udp_server() -> Server {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (s, lg) = (stop.clone(), log.clone());
    let handle = thread::spawn(move || {
        udp::echo(sock, &s, |m| lg.lock().unwrap().push(m.to_string())).unwrap()
    });
    Server {
        addr,
        stop,
        log,
        handle: Some(handle),
    }
}

fn clients(connect: SocketAddr, count: u64) -> TcpClients {
    match args::parse(&[
        "tcp-clients".into(),
        "--connect".into(),
        connect.to_string(),
    ])
    .unwrap()
    {
        args::Command::TcpClients(mut c) => {
            c.count = count;
            c.concurrency = count;
            c.timeout_ms = 5000;
            c
        }
        _ => unreachable!(),
    }
}

fn tmp_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("flowgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn many_concurrent_connections() {
    let srv = tcp_server(100, Duration::from_secs(60));
    let mut o = clients(srv.addr, 300);
    o.together = true;
    o.hold_ms = 50;
    let s = tcp::run_clients(&o, |_| {});
    assert_eq!(
        s.counts,
        tcp::Counts {
            ok: 300,
            ..Default::default()
        },
        "{:?}",
        s.errors
    );
    assert_eq!(s.open_max, 300, "--together: all open at once");
    assert!(s.passed(None));
    assert_eq!(
        s.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
    assert!(s
        .line()
        .starts_with("ok=300 failed=0 refused=0 timeout=0 open_max=300 "));
    assert!(s.line().ends_with(" peers=127.0.0.1"));
    assert_eq!(
        *srv.log.lock().unwrap(),
        ["peer 127.0.0.1"],
        "each peer logged once"
    );
}

#[test]
fn limited_concurrency() {
    let srv = tcp_server(0, Duration::from_secs(60));
    let mut o = clients(srv.addr, 40);
    o.concurrency = 4;
    o.hold_ms = 20;
    let s = tcp::run_clients(&o, |_| {});
    assert_eq!(s.counts.ok, 40, "{:?}", s.errors);
    assert!(
        s.open_max <= 4 && s.open_max >= 1,
        "open_max {}",
        s.open_max
    );
}

#[test]
fn rounds_with_ready_file_and_gate() {
    let srv = tcp_server(10, Duration::from_secs(60));
    let ready = tmp_path("ready");
    let gate = tmp_path("gate");
    let mut o = clients(srv.addr, 8);
    o.rounds = 3;
    o.ready = Some(ready.clone());
    o.gate = Some(gate.clone());
    let (r2, g2) = (ready.clone(), gate.clone());
    let opener = thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(20);
        while !r2.exists() {
            assert!(Instant::now() < end, "ready file never written");
            thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&r2).unwrap();
        // Held open while the gate is shut.
        thread::sleep(Duration::from_millis(200));
        std::fs::write(&g2, "").unwrap();
        text
    });
    let s = tcp::run_clients(&o, |_| {});
    let ready_text = opener.join().unwrap();
    assert_eq!(ready_text, "ok=8 failed=0 refused=0 timeout=0\n");
    assert_eq!(s.counts.ok, 8, "{:?}", s.errors);
    assert_eq!(s.first_round.ok, 8);
    assert_eq!(s.open_max, 8);
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&gate);
}

#[test]
fn gate_that_never_opens_fails() {
    let srv = tcp_server(0, Duration::from_secs(60));
    let mut o = clients(srv.addr, 2);
    o.rounds = 2;
    o.gate = Some(tmp_path("never"));
    o.gate_timeout_ms = 100;
    let s = tcp::run_clients(&o, |_| {});
    assert_eq!(s.first_round.ok, 2);
    assert_eq!(s.counts.failed, 2);
    assert!(s.errors.keys().next().unwrap().contains("did not appear"));
}

#[test]
fn refused_is_told_apart() {
    // A port nobody listens on: the kernel answers the SYN with an RST.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut o = clients(port, 3);
    o.expect_ok = Some(0);
    let s = tcp::run_clients(&o, |_| {});
    assert_eq!(
        s.counts,
        tcp::Counts {
            refused: 3,
            ..Default::default()
        }
    );
    assert!(!s.passed(None));
    assert!(!s.passed(Some(0)), "refused is not a silent drop");
}

#[test]
fn timeout_is_told_apart() {
    // Accepted by the kernel (backlog) but never answered.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = clients(mute.local_addr().unwrap(), 2);
    o.timeout_ms = 300;
    let s = tcp::run_clients(&o, |_| {});
    assert_eq!(
        s.counts,
        tcp::Counts {
            timeout: 2,
            ..Default::default()
        }
    );
    assert!(s.passed(Some(0)));
    assert!(!s.passed(Some(1)));
    assert!(!s.passed(None));
    drop(mute);
}

#[test]
fn bad_reply_fails() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        s.write_all(b"OK c0.r1 1.2.3.4:5 3 abX\n").unwrap();
    });
    let s = tcp::run_clients(&clients(addr, 1), |_| {});
    h.join().unwrap();
    assert_eq!(s.counts.failed, 1);
    assert!(
        s.errors.keys().next().unwrap().contains("corrupt"),
        "{:?}",
        s.errors
    );
}

#[test]
fn server_answers_every_line_and_rejects_garbage() {
    let srv = tcp_server(5, Duration::from_secs(60));
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = c.local_addr().unwrap();
    // Two pipelined requests in one segment, then garbage.
    c.write_all(b"REQ a\nREQ b\nGET / HTTP/1.0\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all:?}");
    assert_eq!(
        proto::parse_reply(lines[0]).unwrap(),
        proto::Reply {
            token: "a".into(),
            peer: me,
            len: 5
        }
    );
    assert_eq!(proto::parse_reply(lines[1]).unwrap().token, "b");
    assert!(lines[2].starts_with("ERR "), "{all:?}");
    // An over-long line without a newline is refused too.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[b'x'; 1000]).unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert_eq!(all, "ERR request line too long\n");
}

#[test]
fn server_drops_idle_connections() {
    let srv = tcp_server(5, Duration::from_millis(200));
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap(), 0, "closed by the server");
}

fn ping_opts(to: SocketAddr, count: u64) -> UdpPing {
    UdpPing {
        to,
        bind: None,
        count,
        interval_ms: 0,
        timeout_ms: 1000,
        expect_ok: None,
    }
}

#[test]
fn udp_ping_echo() {
    let srv = udp_server();
    let s = udp::ping(&ping_opts(srv.addr, 20)).unwrap();
    assert_eq!((s.ok, s.lost, s.refused), (20, 0, 0));
    assert_eq!(s.peers.len(), 1, "one socket, one source address");
    assert_eq!(s.peers.iter().next().unwrap().ip().to_string(), "127.0.0.1");
    assert!(s.passed(20, None));
    assert!(s.line().starts_with("ok=20 lost=0 refused=0 "));
    assert_eq!(*srv.log.lock().unwrap(), ["peer 127.0.0.1"]);
    // From a given source port, which the server reports.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut o = ping_opts(srv.addr, 2);
    o.bind = Some(port);
    let s = udp::ping(&o).unwrap();
    assert_eq!(s.ok, 2);
    assert_eq!(s.peers.iter().collect::<Vec<_>>(), [&port]);
}

#[test]
fn udp_lost_and_refused() {
    // Bound but mute: lost.
    let mute = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut o = ping_opts(mute.local_addr().unwrap(), 2);
    o.timeout_ms = 200;
    let s = udp::ping(&o).unwrap();
    assert_eq!((s.ok, s.lost, s.refused), (0, 2, 0));
    assert!(s.passed(2, Some(0)));
    assert!(!s.passed(2, None));
    // Nobody there: ICMP port unreachable, refused.
    let gone = mute.local_addr().unwrap();
    drop(mute);
    let mut o = ping_opts(gone, 2);
    o.timeout_ms = 500;
    let s = udp::ping(&o).unwrap();
    assert_eq!((s.ok, s.refused), (0, 2), "{}", s.line());
    assert!(!s.passed(2, Some(0)));
}

/// The binary end to end: a server process and a client process.
#[test]
fn binary_end_to_end() {
    let exe = env!("CARGO_BIN_EXE_flowgen");
    let out = Command::new(exe).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command"));
    let out = Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("tcp-clients"));

    let mut server = Command::new(exe)
        .args(["tcp-server", "--listen", "127.0.0.1:0", "--reply", "64"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    let out = Command::new(exe)
        .args([
            "tcp-clients",
            "--connect",
            &addr,
            "--count",
            "50",
            "--together",
            "--hold-ms",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok=50 failed=0 refused=0 timeout=0 open_max=50 "),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("peers=127.0.0.1"), "{stdout}");
    // --expect-ok that does not match fails.
    let out = Command::new(exe)
        .args([
            "tcp-clients",
            "--connect",
            &addr,
            "--count",
            "2",
            "--expect-ok",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines.next().unwrap().unwrap(), "peer 127.0.0.1");
    server.kill().unwrap();
    server.wait().unwrap();

    let mut echo = Command::new(exe)
        .args(["udp-echo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(echo.stdout.take().unwrap()).lines();
    let addr = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let out = Command::new(exe)
        .args(["udp-ping", "--to", &addr, "--count", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok=5 lost=0 refused=0 "), "{stdout}");
    assert!(stdout.contains("peers=127.0.0.1:"), "{stdout}");
    assert_eq!(lines.next().unwrap().unwrap(), "peer 127.0.0.1");
    echo.kill().unwrap();
    echo.wait().unwrap();
}
