//! UDP echo server and request/response client.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::UdpPing;
use crate::proto;

/// Answers PING datagrams on `sock` until `stop` is set. `log` gets
/// `peer IP` once for each distinct source address of any datagram.
pub fn echo(sock: UdpSocket, stop: &AtomicBool, mut log: impl FnMut(&str)) -> io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error for an earlier answer: nothing to do.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        if seen.insert(peer.ip()) {
            log(&format!("peer {}", peer.ip()));
        }
        if let Ok((nonce, seq)) = proto::parse_udp_request(&buf[..n]) {
            let _ = sock.send_to(&proto::udp_reply(nonce, seq, peer), peer);
        }
    }
    Ok(())
}

/// The result of a udp-ping run.
#[derive(Debug, Clone, Default)]
pub struct PingSummary {
    pub ok: u64,
    pub lost: u64,
    pub refused: u64,
    pub elapsed: Duration,
    /// Source addresses the server reported.
    pub peers: BTreeSet<SocketAddr>,
}

impl PingSummary {
    pub fn line(&self) -> String {
        let peers: Vec<String> = self.peers.iter().map(|p| p.to_string()).collect();
        format!(
            "ok={} lost={} refused={} elapsed_ms={} peers={}",
            self.ok,
            self.lost,
            self.refused,
            self.elapsed.as_millis(),
            if peers.is_empty() {
                "-".to_string()
            } else {
                peers.join(",")
            }
        )
    }

    pub fn passed(&self, count: u64, expect_ok: Option<u64>) -> bool {
        match expect_ok {
            None => self.ok == count,
            Some(n) => self.ok == n && self.refused == 0,
        }
    }
}

enum Wait {
    Ok(SocketAddr),
    Lost,
    Refused,
}

fn wait_reply(sock: &UdpSocket, nonce: u64, seq: u64, timeout: Duration) -> io::Result<Wait> {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(Wait::Lost);
        }
        sock.set_read_timeout(Some(end - now))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                if let Ok((n_, s_, peer)) = proto::parse_udp_reply(&buf[..n]) {
                    if n_ == nonce && s_ == seq {
                        return Ok(Wait::Ok(peer));
                    }
                }
                // A late answer to an earlier request, or noise: keep waiting.
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Wait::Lost)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Wait::Refused),
            Err(e) => return Err(e),
        }
    }
}

/// Sends `count` requests one after the other and waits for each echo.
pub fn ping(o: &UdpPing) -> io::Result<PingSummary> {
    let start = Instant::now();
    let any: SocketAddr = if o.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    let bind = o.bind.unwrap_or(any);
    let sock = UdpSocket::bind(bind)?;
    sock.connect(o.to)?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let timeout = Duration::from_millis(o.timeout_ms);
    let mut s = PingSummary::default();
    for seq in 0..o.count {
        if seq > 0 && o.interval_ms > 0 {
            thread::sleep(Duration::from_millis(o.interval_ms));
        }
        let sent = sock.send(&proto::udp_request(nonce, seq));
        let w = match sent {
            // A pending ICMP error from an earlier datagram shows up here.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Wait::Refused,
            Err(e) => return Err(e),
            Ok(_) => wait_reply(&sock, nonce, seq, timeout)?,
        };
        match w {
            Wait::Ok(peer) => {
                s.ok += 1;
                s.peers.insert(peer);
            }
            Wait::Lost => s.lost += 1,
            Wait::Refused => s.refused += 1,
        }
    }
    s.elapsed = start.elapsed();
    Ok(s)
}
