//! The management plane: an smoltcp stack on the management vif serving
//! the gatekeeper API over TCP (bounded connections, request size and idle
//! time). The HTTP/JSON logic itself is `pih_control`'s; this module moves
//! bytes between netfront, smoltcp and that logic.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

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

/// What serves one complete request: the API (issue 5).
pub trait Service {
    /// Given the bytes received so far on a connection, returns the
    /// length of the response written into `out` once the request is
    /// complete (or malformed), `None` while more bytes are needed.
    fn serve(&mut self, now_ns: u64, request: &[u8], out: &mut [u8]) -> Option<usize>;
}

struct Conn {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
    last_active: u64,
}

pub struct Mgmt {
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
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
            conns.push(Conn { handle, request: Vec::with_capacity(MAX_REQUEST), answered: false, last_active: now_ns });
        }
        Mgmt { iface, sockets, conns, port, response: vec![0u8; TX_BUFFER], connections_served: 0, connections_timed_out: 0 }
    }

    /// Feeds one received frame (or none, for timers) through the stack
    /// and serves whatever requests became complete.
    pub fn poll(&mut self, now_ns: u64, frame: Option<&[u8]>, rings: &mut Rings, service: &mut impl Service) {
        let mut dev = Frames { rx: frame, rings };
        self.iface.poll(instant(now_ns), &mut dev, &mut self.sockets);
        let mut sent = false;
        for c in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
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
                if let Some(n) = service.serve(now_ns, &c.request, &mut self.response) {
                    let _ = s.send_slice(&self.response[..n]);
                    s.close();
                    c.answered = true;
                    sent = true;
                    self.connections_served += 1;
                }
            }
            if s.is_active() && now_ns.saturating_sub(c.last_active) > IDLE_NS {
                s.abort();
                self.connections_timed_out += 1;
            }
            if !s.is_open() {
                // Closed (or aborted): back to listening for the next one.
                c.request.clear();
                c.answered = false;
                c.last_active = now_ns;
                let _ = s.listen(self.port);
            } else if s.state() == tcp::State::Listen {
                c.last_active = now_ns;
            }
        }
        if sent {
            let mut dev = Frames { rx: None, rings: dev.rings };
            self.iface.poll(instant(now_ns), &mut dev, &mut self.sockets);
        }
    }
}
