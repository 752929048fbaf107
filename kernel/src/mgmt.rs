//! The management plane: an smoltcp stack on the management vif serving
//! the gatekeeper API over TCP (bounded connections, request size and idle
//! time) and carrying the bridge's own HTTP exchanges with the Irmin
//! server (one at a time, [`IrminClient`]). The HTTP/JSON logic itself is
//! `pih_control`'s; this module moves bytes between netfront, smoltcp and
//! that logic.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use core::net::SocketAddrV4;

use pih_control::api::{Answer, Pending};
use pih_control::irmin::response::{Progress as ReplyProgress, ResponseReader};
use pih_control::irmin::EXCHANGE_TIMEOUT_NS;
use pih_drivers::netfront_xs::Rings;

/// Concurrent API connections; more wait in the peer's SYN backlog.
pub const MAX_CONNECTIONS: usize = 4;
/// A request (head and body) larger than this gets 413.
pub const MAX_REQUEST: usize = 8192;
const TX_BUFFER: usize = 16384;
/// A connection silent for this long is dropped.
const IDLE_NS: u64 = 10_000_000_000;
const MTU: usize = 1514;

/// One received frame lent to smoltcp, plus the tx ring it may answer on.
struct Frames<'a> {
    rx: Option<&'a [u8]>,
    rings: &'a mut Rings,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut Rings);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Management traffic is light: build in a scratch buffer, then copy
        // into a granted tx page. If the ring is full the frame is lost and
        // TCP retransmits.
        let mut scratch = [0u8; MTU];
        let n = len.min(MTU);
        let r = f(&mut scratch[..n]);
        let _ = self.0.transmit(n.max(1), |buf| {
            let m = n.min(buf.len());
            buf[..m].copy_from_slice(&scratch[..m]);
            m
        });
        r
    }
}

impl Device for Frames<'_> {
    type RxToken<'b> = Rx<'b> where Self: 'b;
    type TxToken<'b> = Tx<'b> where Self: 'b;

    fn receive(&mut self, _t: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let frame = self.rx.take()?;
        Some((Rx(frame), Tx(self.rings)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.rings))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(8);
        // No offloads: netback gives us complete checksums
        // (feature-no-csum-offload) and expects complete ones.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = Checksum::Both;
        cs.tcp = Checksum::Both;
        caps.checksum = cs;
        caps
    }
}

/// What serves one complete request: the API.
pub trait Service {
    /// Given the bytes received so far on a connection, answers once the
    /// request is complete (or malformed); `None` while more bytes are
    /// needed.
    fn serve(&mut self, now_ns: u64, request: &[u8], out: &mut [u8]) -> Option<Answer>;

    /// The response to a held-back answer (written into `out`), or `None`
    /// to keep waiting. `since_ns`: when the request was answered.
    fn resolve(&mut self, now_ns: u64, pending: &Pending, since_ns: u64, out: &mut [u8]) -> Option<usize>;
}

struct Conn {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
    pending: Option<(Pending, u64)>,
    last_active: u64,
}

const CLIENT_RX: usize = 32768;
const CLIENT_TX: usize = 8192;
/// Local ports for our connections to Irmin (rotating, so a new
/// connection never meets the TIME-WAIT of the previous one at the server).
const CLIENT_PORTS: core::ops::Range<u16> = 49152..65000;

/// What became of an exchange with the Irmin server.
pub enum Exchanged {
    Reply { status: u16, body: Vec<u8> },
    Failed(&'static str),
}

/// One HTTP exchange at a time with the Irmin server: connect, send the
/// request, read the reply until it is complete or the server closes.
struct IrminClient {
    handle: SocketHandle,
    busy: bool,
    request: Vec<u8>,
    sent: usize,
    reader: ResponseReader,
    deadline: u64,
    next_port: u16,
    outcome: Option<Exchanged>,
}

impl IrminClient {
    fn fail(&mut self, s: &mut tcp::Socket<'_>, why: &'static str) {
        s.abort();
        self.busy = false;
        self.outcome = Some(Exchanged::Failed(why));
    }

    fn progress(&mut self, now_ns: u64, s: &mut tcp::Socket<'_>) -> bool {
        if !self.busy {
            return false;
        }
        let mut sent = false;
        if s.may_send() && self.sent < self.request.len() {
            match s.send_slice(&self.request[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    sent = n > 0;
                }
                Err(_) => {
                    self.fail(s, "connection lost while sending");
                    return true;
                }
            }
        }
        let mut buf = [0u8; 2048];
        while s.can_recv() {
            match s.recv_slice(&mut buf) {
                Ok(0) => break,
                Ok(n) => match self.reader.feed(&buf[..n]) {
                    Ok(ReplyProgress::Complete) => {
                        s.close();
                        self.complete();
                        return true;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        self.fail(s, "malformed HTTP reply");
                        return true;
                    }
                },
                Err(_) => break,
            }
        }
        match s.state() {
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing => {
                // The server closed: a reply delimited by the end of the
                // connection is complete now, anything else is truncated.
                if self.sent == 0 && s.state() == tcp::State::Closed {
                    self.fail(s, "connection refused or timed out");
                } else if self.reader.finish_eof().is_ok() {
                    s.close();
                    self.complete();
                } else {
                    self.fail(s, "connection closed before the reply was complete");
                }
                return true;
            }
            _ => {}
        }
        if now_ns >= self.deadline {
            self.fail(s, "no complete reply in time");
            return true;
        }
        sent
    }

    fn complete(&mut self) {
        self.busy = false;
        let status = self.reader.status().unwrap_or(0);
        self.outcome = Some(Exchanged::Reply { status, body: self.reader.take_body() });
    }
}

pub struct Mgmt {
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    client: IrminClient,
    port: u16,
    response: Vec<u8>,
    pub connections_served: u64,
    pub connections_timed_out: u64,
}

fn instant(now_ns: u64) -> Instant {
    Instant::from_micros((now_ns / 1000) as i64)
}

impl Mgmt {
    pub fn new(mac: [u8; 6], addr: core::net::Ipv4Addr, prefix_len: u8, port: u16, rings: &mut Rings, now_ns: u64) -> Mgmt {
        let mut dev = Frames { rx: None, rings };
        let config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let mut iface = Interface::new(config, &mut dev, instant(now_ns));
        let o = addr.octets();
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3])), prefix_len));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut conns = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let rx = tcp::SocketBuffer::new(vec![0u8; MAX_REQUEST]);
            let tx = tcp::SocketBuffer::new(vec![0u8; TX_BUFFER]);
            let mut s = tcp::Socket::new(rx, tx);
            let _ = s.listen(port);
            s.set_timeout(Some(Duration::from_secs(20)));
            let handle = sockets.add(s);
            conns.push(Conn { handle, request: Vec::with_capacity(MAX_REQUEST), answered: false, pending: None, last_active: now_ns });
        }
        let mut c = tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; CLIENT_RX]), tcp::SocketBuffer::new(vec![0u8; CLIENT_TX]));
        c.set_timeout(Some(Duration::from_secs(5)));
        let client = IrminClient {
            handle: sockets.add(c),
            busy: false,
            request: Vec::new(),
            sent: 0,
            reader: ResponseReader::new(0),
            deadline: 0,
            next_port: CLIENT_PORTS.start + (now_ns % 4096) as u16,
            outcome: None,
        };
        Mgmt { iface, sockets, conns, client, port, response: vec![0u8; TX_BUFFER], connections_served: 0, connections_timed_out: 0 }
    }

    /// Whether an exchange with Irmin may start.
    pub fn client_idle(&self) -> bool {
        !self.client.busy && self.client.outcome.is_none()
    }

    /// Starts an exchange: connects to `server` and sends `request` (a
    /// reply body over `max_body` bytes is an error); the
    /// outcome comes from [`Self::take_exchanged`] after later polls.
    pub fn start_exchange(&mut self, now_ns: u64, server: SocketAddrV4, request: Vec<u8>, max_body: usize) {
        let c = &mut self.client;
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        s.abort();
        let port = c.next_port;
        c.next_port = if port + 1 >= CLIENT_PORTS.end { CLIENT_PORTS.start } else { port + 1 };
        let o = server.ip().octets();
        let remote = (IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3])), server.port());
        c.request = request;
        c.sent = 0;
        c.reader = ResponseReader::new(max_body);
        c.deadline = now_ns + EXCHANGE_TIMEOUT_NS;
        match s.connect(self.iface.context(), remote, port) {
            Ok(()) => c.busy = true,
            Err(_) => c.outcome = Some(Exchanged::Failed("cannot open a connection")),
        }
    }

    /// The outcome of the last exchange, once it has one.
    pub fn take_exchanged(&mut self) -> Option<Exchanged> {
        self.client.outcome.take()
    }

    /// Feeds one received frame (or none, for timers) through the stack
    /// and serves whatever requests became complete.
    pub fn poll(&mut self, now_ns: u64, frame: Option<&[u8]>, rings: &mut Rings, service: &mut impl Service) {
        let mut dev = Frames { rx: frame, rings };
        self.iface.poll(instant(now_ns), &mut dev, &mut self.sockets);
        let mut sent = false;
        for c in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            let mut reply = None;
            if s.can_recv() && !c.answered {
                let room = MAX_REQUEST - c.request.len();
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.recv_slice(&mut buf[..room.min(1024)]) {
                    if n == 0 {
                        break;
                    }
                    c.request.extend_from_slice(&buf[..n]);
                    c.last_active = now_ns;
                    if c.request.len() >= MAX_REQUEST {
                        break;
                    }
                }
                match service.serve(now_ns, &c.request, &mut self.response) {
                    Some(Answer::Ready(n)) => reply = Some(n),
                    Some(Answer::Await(p)) => c.pending = Some((p, now_ns)),
                    None => {}
                }
                c.answered = reply.is_some() || c.pending.is_some();
            }
            if let Some((p, since)) = c.pending {
                reply = service.resolve(now_ns, &p, since, &mut self.response);
                if reply.is_some() {
                    c.pending = None;
                    c.last_active = now_ns;
                }
            }
            if let Some(n) = reply {
                let _ = s.send_slice(&self.response[..n]);
                s.close();
                sent = true;
                self.connections_served += 1;
            }
            if c.pending.is_none() && s.is_active() && now_ns.saturating_sub(c.last_active) > IDLE_NS {
                s.abort();
                self.connections_timed_out += 1;
            }
            if !s.is_open() {
                // Closed (or aborted): back to listening for the next one.
                c.request.clear();
                c.answered = false;
                c.pending = None;
                c.last_active = now_ns;
                let _ = s.listen(self.port);
            } else if s.state() == tcp::State::Listen {
                c.last_active = now_ns;
            }
        }
        let cs = self.sockets.get_mut::<tcp::Socket>(self.client.handle);
        sent |= self.client.progress(now_ns, cs);
        if sent {
            let mut dev = Frames { rx: None, rings: dev.rings };
            self.iface.poll(instant(now_ns), &mut dev, &mut self.sockets);
        }
    }
}
