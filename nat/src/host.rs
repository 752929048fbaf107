//! The bridge's own presence on one vif: its MAC and IPv4 address, ARP,
//! ping, next-hop resolution for the frames it sends, and the
//! classification of every other frame for the forwarding path.
//!
//! ```text
//!  rx frame ──> Interface::process ──> Consumed   (ARP, echo to us: answered via tx)
//!                                  ├─> Local      (IPv4 to our address: the NAT's inbound path)
//!                                  ├─> Forward    (IPv4 unicast to another address: routing/NAT)
//!                                  └─> Dropped(reason)   (counted)
//!  send_ipv4(dst, build) ──> next hop known? ──> tx
//!                                      └─ no ──> pending queue + ARP request
//!  poll(now) ──> ARP retries (1/s per address), pending timeouts (3 s)
//! ```
//!
//! The interface owns no buffers but its [`PendingQueue`]: replies are
//! written straight into transmit buffers lent by a [`Transmit`]
//! implementation (a free netfront tx slot in the kernel, a `Vec` in tests).

use core::fmt;
use core::net::Ipv4Addr;

use heapless::Vec;

use crate::neighbor::{Enqueued, NeighborCache, PendingQueue, MAX_FRAME_LEN};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, IcmpPacket,
    IcmpType, IpProtocol, Ipv4Packet, WireError,
};

/// TTL of the packets the interface originates.
pub const DEFAULT_TTL: u8 = 64;

const ETH_HEADER_LEN: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
const IPV4_HEADER_LEN: usize = Ipv4Packet::<&[u8]>::MIN_HEADER_LEN;
const ARP_FRAME_LEN: usize = ETH_HEADER_LEN + ArpPacket::<&[u8]>::LEN;

/// An IPv4 address with the prefix length of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// `None` when `prefix_len` exceeds 32.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 32 {
            None
        } else {
            Some(Ipv4Cidr { addr, prefix_len })
        }
    }

    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32u32.saturating_sub(u32::from(self.prefix_len)))
            .unwrap_or(0)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether `ip` can be a host of the subnet: inside it, and neither its
    /// network nor its broadcast address (except in /31 and /32).
    pub fn is_host_addr(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip)
            && (self.prefix_len >= 31 || (ip != self.network() && ip != self.broadcast()))
    }

    /// Whether `ip` is the directed broadcast address of the subnet.
    pub fn is_subnet_broadcast(&self, ip: Ipv4Addr) -> bool {
        self.prefix_len < 31 && ip == self.broadcast()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a frame was dropped (each has a counter in [`Counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Truncated or inconsistent headers, invalid source addresses.
    Malformed,
    /// An IPv4 header or ICMP checksum that does not verify.
    BadChecksum,
    /// Not addressed to this interface: another MAC (a flooded frame),
    /// an ARP for another address, IPv4 broadcast or multicast.
    NotForUs,
    /// Neither IPv4 nor ARP: IPv6, 802.1Q/802.1ad tagged frames, 802.3...
    UnsupportedEthertype,
    /// ARP for other hardware/protocol types, unknown ARP operations.
    Unsupported,
    /// A queued frame dropped to make room for a newer one.
    PendingOverflow,
    /// A queued frame whose next hop did not resolve within 3 s.
    PendingTimeout,
    /// A packet to send with no route (off-link and no gateway, multicast).
    NoRoute,
    /// A frame to send found no transmit buffer (or it was too short).
    TxUnavailable,
}

impl DropReason {
    pub const COUNT: usize = 9;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NotForUs,
        DropReason::UnsupportedEthertype,
        DropReason::Unsupported,
        DropReason::PendingOverflow,
        DropReason::PendingTimeout,
        DropReason::NoRoute,
        DropReason::TxUnavailable,
    ];

    /// The index of this reason's counter.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name (for statistics output).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NotForUs => "not_for_us",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::Unsupported => "unsupported",
            DropReason::PendingOverflow => "pending_overflow",
            DropReason::PendingTimeout => "pending_timeout",
            DropReason::NoRoute => "no_route",
            DropReason::TxUnavailable => "tx_unavailable",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated | WireError::Malformed => DropReason::Malformed,
            WireError::Unsupported => DropReason::Unsupported,
            WireError::BadChecksum => DropReason::BadChecksum,
        }
    }
}

/// What [`Interface::process`] did with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Handled by the interface (ARP, echo request to us; any answer has
    /// been handed to the transmitter).
    Consumed,
    /// An IPv4 packet for this interface's own address that the interface
    /// does not handle itself (TCP, UDP, ICMP other than echo requests,
    /// fragments): the NAT's inbound path. The frame is Ethernet II + IPv4
    /// with a valid header checksum; the packet is
    /// `frame[14..14 + total_len]`.
    Local,
    /// A unicast IPv4 packet for another address, received in a frame
    /// addressed to our MAC: for the forwarding path. Same guarantees as
    /// `Local`.
    Forward,
    /// Dropped, and counted under the reason.
    Dropped(DropReason),
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::Consumed => f.write_str("consumed"),
            Disposition::Local => f.write_str("local"),
            Disposition::Forward => f.write_str("forward"),
            Disposition::Dropped(r) => write!(f, "dropped ({r})"),
        }
    }
}

/// The outcome of [`Interface::send_ipv4`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// Handed to the transmitter.
    Sent,
    /// Waiting in the pending queue for the next hop's MAC (an ARP request
    /// went out unless one did in the last second).
    Queued,
    /// The builder wrote nothing (returned 0 or more than it was given).
    Empty,
    /// Dropped, and counted under the reason.
    Dropped(DropReason),
}

/// Where a packet goes on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Limited or directed broadcast: `ff:ff:ff:ff:ff:ff`.
    Broadcast,
    /// This neighbor (the destination itself or the gateway).
    Neighbor(Ipv4Addr),
}

/// Per-interface statistics. Every counter wraps at `u64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counters {
    /// Frames given to [`Interface::process`].
    pub rx_frames: u64,
    /// Frames handed to the transmitter.
    pub tx_frames: u64,
    pub arp_requests_in: u64,
    pub arp_replies_in: u64,
    pub arp_requests_out: u64,
    pub arp_replies_out: u64,
    /// ARP packets from another station claiming our address.
    pub arp_conflicts: u64,
    pub icmp_echo_in: u64,
    pub icmp_echo_out: u64,
    /// Frames classified [`Disposition::Forward`].
    pub forward: u64,
    /// Frames classified [`Disposition::Local`].
    pub local: u64,
    /// Queued frames sent after their next hop resolved.
    pub pending_released: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl Counters {
    pub const fn new() -> Self {
        Counters {
            rx_frames: 0,
            tx_frames: 0,
            arp_requests_in: 0,
            arp_replies_in: 0,
            arp_requests_out: 0,
            arp_replies_out: 0,
            arp_conflicts: 0,
            icmp_echo_in: 0,
            icmp_echo_out: 0,
            forward: 0,
            local: 0,
            pending_released: 0,
            drops: [0; DropReason::COUNT],
        }
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, &d| a.wrapping_add(d))
    }

    fn count_drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            bump(c);
        }
    }
}

#[inline]
fn bump(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// Something that sends frames: a transmit ring in the kernel, a `Vec` in
/// tests.
pub trait Transmit {
    /// Sends one frame. The implementation lends `build` a writable buffer
    /// (for full-size frames, at least [`MAX_FRAME_LEN`] bytes: a free tx
    /// slot); `build` writes the frame at its start and returns its length,
    /// 0 meaning "nothing to send" (a buffer too short, say). The
    /// implementation then sends that many bytes.
    ///
    /// Returns whether a frame was handed to the device: `false` when no
    /// buffer was free (`build` is then not called) or `build` returned 0.
    fn transmit<F>(&mut self, build: F) -> bool
    where
        F: FnOnce(&mut [u8]) -> usize;
}

impl<T: Transmit> Transmit for &mut T {
    fn transmit<F>(&mut self, build: F) -> bool
    where
        F: FnOnce(&mut [u8]) -> usize,
    {
        (**self).transmit(build)
    }
}

/// A closure as a [`Transmit`]: it receives the frame builder, runs it on
/// a buffer it owns, sends the result and says whether it did:
///
/// ```
/// # use pih_nat::host::{Transmit, TxFn};
/// let mut sent = 0;
/// {
///     let mut tx = TxFn::new(|build: &mut dyn FnMut(&mut [u8]) -> usize| {
///         let mut buf = [0u8; 1514]; // a free tx slot, in the kernel
///         let len = build(&mut buf);
///         sent += len; // transmit buf[..len]
///         len > 0
///     });
///     assert!(tx.transmit(|b| { b[..3].copy_from_slice(b"abc"); 3 }));
/// }
/// assert_eq!(sent, 3);
/// ```
pub struct TxFn<F>(F);

impl<F> TxFn<F>
where
    F: FnMut(&mut dyn FnMut(&mut [u8]) -> usize) -> bool,
{
    pub fn new(f: F) -> Self {
        TxFn(f)
    }
}

impl<F> Transmit for TxFn<F>
where
    F: FnMut(&mut dyn FnMut(&mut [u8]) -> usize) -> bool,
{
    fn transmit<B>(&mut self, build: B) -> bool
    where
        B: FnOnce(&mut [u8]) -> usize,
    {
        let mut build = Some(build);
        (self.0)(&mut |buf: &mut [u8]| build.take().map_or(0, |b| b(buf)))
    }
}

/// Copies `src` into `dst` when both have the same length.
fn copy_exact(dst: &mut [u8], src: &[u8]) -> bool {
    if dst.len() == src.len() {
        dst.copy_from_slice(src);
        true
    } else {
        false
    }
}

/// Writes an ARP frame into `buf`; returns its length or 0.
fn emit_arp(
    buf: &mut [u8],
    eth_src: EthernetAddress,
    eth_dst: EthernetAddress,
    arp: &ArpRepr,
) -> usize {
    let Some(buf) = buf.get_mut(..ARP_FRAME_LEN) else {
        return 0;
    };
    let mut eth = EthernetFrame::new_unchecked(buf);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(eth_src);
    eth.set_ethertype(EtherType::Arp);
    arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    ARP_FRAME_LEN
}

/// Writes an Ethernet header and lets `build` write the IPv4 packet after
/// it (into at most 1500 bytes). Returns the frame length or 0.
fn emit_ipv4_frame<F>(
    buf: &mut [u8],
    eth_src: EthernetAddress,
    eth_dst: EthernetAddress,
    build: F,
) -> usize
where
    F: FnOnce(&mut [u8]) -> usize,
{
    let end = buf.len().min(MAX_FRAME_LEN);
    let Some(payload) = buf.get_mut(ETH_HEADER_LEN..end) else {
        return 0;
    };
    let room = payload.len();
    let n = build(payload);
    if n == 0 || n > room {
        return 0;
    }
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(eth_src);
    eth.set_ethertype(EtherType::Ipv4);
    ETH_HEADER_LEN.saturating_add(n)
}

/// The fields of an IPv4 header without options that the interface emits.
struct Ipv4Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    total_len: u16,
    ident: u16,
    ttl: u8,
}

impl Ipv4Header {
    fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, ip: &mut Ipv4Packet<T>) {
        ip.set_version(4);
        ip.set_header_len(IPV4_HEADER_LEN as u8);
        ip.set_dscp(0);
        ip.set_ecn(0);
        ip.set_total_len(self.total_len);
        ip.set_ident(self.ident);
        ip.clear_flags();
        ip.set_ttl(self.ttl);
        ip.set_protocol(self.protocol);
        ip.set_src_addr(self.src);
        ip.set_dst_addr(self.dst);
        ip.fill_checksum();
    }
}

/// The bridge's presence on one vif.
///
/// `NEIGHBORS` is the ARP cache capacity, `PENDING` the number of frames
/// that can wait for resolution (each takes [`MAX_FRAME_LEN`] bytes inside
/// the interface). With the defaults, name the type when creating it:
/// `let iface: Interface = Interface::new(mac, cidr, gateway);`.
#[derive(Debug, Clone)]
pub struct Interface<const NEIGHBORS: usize = 64, const PENDING: usize = 16> {
    mac: EthernetAddress,
    cidr: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    neighbors: NeighborCache<NEIGHBORS>,
    pending: PendingQueue<PENDING>,
    counters: Counters,
    ident: u16,
}

impl<const NEIGHBORS: usize, const PENDING: usize> Interface<NEIGHBORS, PENDING> {
    /// An interface with address `cidr.addr()` on subnet `cidr`, reaching
    /// off-link destinations through `gateway` (if any).
    pub const fn new(mac: EthernetAddress, cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Self {
        Interface {
            mac,
            cidr,
            gateway,
            neighbors: NeighborCache::new(),
            pending: PendingQueue::new(),
            counters: Counters::new(),
            ident: 0,
        }
    }

    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Our IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.cidr.addr()
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.gateway = gateway;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn neighbors(&self) -> &NeighborCache<NEIGHBORS> {
        &self.neighbors
    }

    /// The ARP cache, e.g. to install static entries or flush it.
    pub fn neighbors_mut(&mut self) -> &mut NeighborCache<NEIGHBORS> {
        &mut self.neighbors
    }

    pub fn pending(&self) -> &PendingQueue<PENDING> {
        &self.pending
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    // ----------------------------------------------------------------- rx

    /// Handles one received frame: answers ARP and echo requests for our
    /// address through `tx`, learns neighbors, releases frames waiting for
    /// a newly resolved neighbor, and classifies everything else. Drops are
    /// counted here. Never panics, whatever the bytes.
    pub fn process<T: Transmit>(&mut self, now: u64, frame: &[u8], tx: &mut T) -> Disposition {
        bump(&mut self.counters.rx_frames);
        self.expire_pending(now);
        let disposition = self.receive(now, frame, tx);
        match disposition {
            Disposition::Dropped(reason) => self.counters.count_drop(reason),
            Disposition::Forward => bump(&mut self.counters.forward),
            Disposition::Local => bump(&mut self.counters.local),
            Disposition::Consumed => {}
        }
        disposition
    }

    fn receive<T: Transmit>(&mut self, now: u64, frame: &[u8], tx: &mut T) -> Disposition {
        let eth = match EthernetFrame::new_checked(frame) {
            Ok(eth) => eth,
            Err(e) => return Disposition::Dropped(e.into()),
        };
        let eth_dst = eth.dst_addr();
        if eth_dst != self.mac && !eth_dst.is_broadcast() {
            return Disposition::Dropped(DropReason::NotForUs);
        }
        let eth_src = eth.src_addr();
        if !eth_src.is_unicast() {
            return Disposition::Dropped(DropReason::Malformed);
        }
        if eth_src == self.mac {
            // Our own frame, looped back.
            return Disposition::Dropped(DropReason::NotForUs);
        }
        match eth.ethertype() {
            EtherType::Arp => self.receive_arp(now, eth.payload(), tx),
            EtherType::Ipv4 => self.receive_ipv4(now, eth_dst, eth_src, eth.payload(), tx),
            _ => Disposition::Dropped(DropReason::UnsupportedEthertype),
        }
    }

    fn receive_arp<T: Transmit>(&mut self, now: u64, payload: &[u8], tx: &mut T) -> Disposition {
        let arp = match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
            Ok(arp) => arp,
            Err(e) => return Disposition::Dropped(e.into()),
        };
        match arp.operation {
            ArpOperation::Request => bump(&mut self.counters.arp_requests_in),
            ArpOperation::Reply => bump(&mut self.counters.arp_replies_in),
            ArpOperation::Unknown(_) => return Disposition::Dropped(DropReason::Unsupported),
        }
        let sha = arp.source_hardware_addr;
        let spa = arp.source_protocol_addr;
        if !sha.is_unicast() {
            return Disposition::Dropped(DropReason::Malformed);
        }
        let our_ip = self.ip();
        if spa == our_ip {
            // Another station uses (or probes with) our address.
            bump(&mut self.counters.arp_conflicts);
            return Disposition::Consumed;
        }
        let for_us = arp.target_protocol_addr == our_ip;

        // RFC 826: refresh a known sender whoever the target is; learn a new
        // one only from packets addressed to us, and only a plausible host
        // of our subnet. A probe (sender 0.0.0.0) teaches nothing.
        let mut learned = false;
        if !spa.is_unspecified() {
            learned = self.neighbors.update_existing(spa, sha, now);
            if !learned && for_us && self.cidr.is_host_addr(spa) {
                self.neighbors.fill(spa, sha, now);
                learned = true;
            }
        }
        if learned {
            self.release_pending(spa, sha, tx);
        }

        if for_us && arp.operation == ArpOperation::Request {
            // Also answers address probes (RFC 5227): target 0.0.0.0 then.
            let reply = ArpRepr {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.mac,
                source_protocol_addr: our_ip,
                target_hardware_addr: sha,
                target_protocol_addr: spa,
            };
            if self.send_arp(sha, &reply, tx) {
                bump(&mut self.counters.arp_replies_out);
            }
            return Disposition::Consumed;
        }
        if for_us || learned {
            Disposition::Consumed
        } else {
            Disposition::Dropped(DropReason::NotForUs)
        }
    }

    fn receive_ipv4<T: Transmit>(
        &mut self,
        now: u64,
        eth_dst: EthernetAddress,
        eth_src: EthernetAddress,
        payload: &[u8],
        tx: &mut T,
    ) -> Disposition {
        let ip = match Ipv4Packet::new_checked(payload) {
            Ok(ip) => ip,
            Err(e) => return Disposition::Dropped(e.into()),
        };
        if !ip.verify_checksum() {
            return Disposition::Dropped(DropReason::BadChecksum);
        }
        let src = ip.src_addr();
        let dst = ip.dst_addr();
        let our_ip = self.ip();
        // Martian sources (RFC 1812 5.3.7), and our own address.
        if src.is_broadcast()
            || src.is_multicast()
            || src.is_unspecified()
            || src.is_loopback()
            || src == our_ip
            || self.cidr.is_subnet_broadcast(src)
        {
            return Disposition::Dropped(DropReason::Malformed);
        }

        if dst == our_ip {
            self.glean(now, src, eth_src, tx);
            if ip.protocol() == IpProtocol::Icmp && !ip.is_fragment() {
                let icmp = match IcmpPacket::new_checked(ip.payload()) {
                    Ok(icmp) => icmp,
                    Err(e) => return Disposition::Dropped(e.into()),
                };
                if !icmp.verify_checksum() {
                    return Disposition::Dropped(DropReason::BadChecksum);
                }
                if icmp.msg_type() == IcmpType::EchoRequest {
                    bump(&mut self.counters.icmp_echo_in);
                    if self.reply_echo(eth_src, src, icmp.as_ref(), tx) {
                        bump(&mut self.counters.icmp_echo_out);
                    }
                    return Disposition::Consumed;
                }
            }
            return Disposition::Local;
        }

        // RFC 1812 5.3.4: no forwarding of link-layer broadcasts; no
        // broadcast or multicast forwarding at all.
        if eth_dst.is_broadcast()
            || dst.is_broadcast()
            || dst.is_multicast()
            || dst.is_unspecified()
            || dst.is_loopback()
            || self.cidr.is_subnet_broadcast(dst)
        {
            return Disposition::Dropped(DropReason::NotForUs);
        }
        Disposition::Forward
    }

    /// Learns the sender of a packet addressed to us from its frame when it
    /// is a host of our subnet (a known entry is only renewed if the MAC
    /// matches: ARP alone changes a MAC).
    fn glean<T: Transmit>(&mut self, now: u64, src: Ipv4Addr, mac: EthernetAddress, tx: &mut T) {
        if !self.cidr.is_host_addr(src) {
            return;
        }
        if self.neighbors.peek(src, now).is_some() {
            self.neighbors.confirm(src, mac, now);
        } else {
            self.neighbors.fill(src, mac, now);
            self.release_pending(src, mac, tx);
        }
    }

    /// Answers the echo request `message` (a whole, verified ICMP message)
    /// from `requester` at `eth_dst`.
    fn reply_echo<T: Transmit>(
        &mut self,
        eth_dst: EthernetAddress,
        requester: Ipv4Addr,
        message: &[u8],
        tx: &mut T,
    ) -> bool {
        let Some(ip_len) = message.len().checked_add(IPV4_HEADER_LEN) else {
            return false;
        };
        let Ok(total_len) = u16::try_from(ip_len) else {
            return false;
        };
        let frame_len = ip_len.saturating_add(ETH_HEADER_LEN);
        let header = Ipv4Header {
            src: self.ip(),
            dst: requester,
            protocol: IpProtocol::Icmp,
            total_len,
            ident: self.next_ident(),
            ttl: DEFAULT_TTL,
        };
        let mac = self.mac;
        let sent = tx.transmit(|buf| {
            let Some(buf) = buf.get_mut(..frame_len) else {
                return 0;
            };
            let mut eth = EthernetFrame::new_unchecked(buf);
            eth.set_dst_addr(eth_dst);
            eth.set_src_addr(mac);
            eth.set_ethertype(EtherType::Ipv4);
            let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
            header.emit(&mut ip);
            let body = ip.payload_mut();
            if !copy_exact(body, message) {
                return 0;
            }
            let mut reply = IcmpPacket::new_unchecked(body);
            reply.set_msg_type(IcmpType::EchoReply);
            reply.set_msg_code(0);
            reply.fill_checksum();
            frame_len
        });
        self.count_tx(sent)
    }

    // ----------------------------------------------------------------- tx

    fn count_tx(&mut self, sent: bool) -> bool {
        if sent {
            bump(&mut self.counters.tx_frames);
        } else {
            self.counters.count_drop(DropReason::TxUnavailable);
        }
        sent
    }

    fn send_arp<T: Transmit>(
        &mut self,
        eth_dst: EthernetAddress,
        arp: &ArpRepr,
        tx: &mut T,
    ) -> bool {
        let mac = self.mac;
        let sent = tx.transmit(|buf| emit_arp(buf, mac, eth_dst, arp));
        self.count_tx(sent)
    }

    /// Sends an ARP request for `target`: broadcast, or unicast to `known`
    /// (a refresh of an entry about to expire).
    fn send_arp_request<T: Transmit>(
        &mut self,
        target: Ipv4Addr,
        known: Option<EthernetAddress>,
        tx: &mut T,
    ) {
        let request = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: self.ip(),
            target_hardware_addr: known.unwrap_or(EthernetAddress::UNSPECIFIED),
            target_protocol_addr: target,
        };
        if self.send_arp(known.unwrap_or(EthernetAddress::BROADCAST), &request, tx) {
            bump(&mut self.counters.arp_requests_out);
        }
    }

    /// Broadcasts a gratuitous ARP request for our own address (at boot, so
    /// that neighbors and switches learn the bridge's MAC). Returns whether
    /// it was sent.
    pub fn announce<T: Transmit>(&mut self, tx: &mut T) -> bool {
        let our_ip = self.ip();
        let arp = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: our_ip,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: our_ip,
        };
        let sent = self.send_arp(EthernetAddress::BROADCAST, &arp, tx);
        if sent {
            bump(&mut self.counters.arp_requests_out);
        }
        sent
    }

    /// The link-level next hop towards `dst`: `None` for our own address,
    /// the unspecified address, multicast, a subnet's network address, or
    /// an off-link destination without a gateway.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<NextHop> {
        if dst.is_broadcast() || self.cidr.is_subnet_broadcast(dst) {
            return Some(NextHop::Broadcast);
        }
        if dst.is_multicast() || dst.is_unspecified() || dst == self.ip() {
            return None;
        }
        if self.cidr.contains(dst) {
            return self
                .cidr
                .is_host_addr(dst)
                .then_some(NextHop::Neighbor(dst));
        }
        self.gateway.map(NextHop::Neighbor)
    }

    /// The MAC of a neighbor if known; asks for a refresh when it is about
    /// to expire.
    fn neighbor_mac<T: Transmit>(
        &mut self,
        now: u64,
        hop: Ipv4Addr,
        tx: &mut T,
    ) -> Option<EthernetAddress> {
        let n = self.neighbors.lookup(hop, now)?;
        if n.refresh_due && self.neighbors.request_allowed(hop, now) {
            self.send_arp_request(hop, Some(n.mac), tx);
        }
        Some(n.mac)
    }

    /// The destination MAC for a packet to `dst`, for a forwarding path that
    /// rewrites frames in place. When the next hop is unknown, sends an ARP
    /// request (at most one per second per address) and returns `None`: the
    /// caller may then queue a copy with [`Interface::send_ipv4`].
    pub fn resolve<T: Transmit>(
        &mut self,
        now: u64,
        dst: Ipv4Addr,
        tx: &mut T,
    ) -> Option<EthernetAddress> {
        match self.next_hop(dst)? {
            NextHop::Broadcast => Some(EthernetAddress::BROADCAST),
            NextHop::Neighbor(hop) => {
                let mac = self.neighbor_mac(now, hop, tx);
                if mac.is_none() && self.neighbors.request_allowed(hop, now) {
                    self.send_arp_request(hop, None, tx);
                }
                mac
            }
        }
    }

    /// Sends an IPv4 packet that the bridge originates (or forwards) to
    /// `dst`: `build` writes the whole packet, header and checksums
    /// included, into the buffer it is given (at most 1500 bytes) and
    /// returns its length. The interface adds the Ethernet header for the
    /// next hop (on-link: `dst` itself; otherwise the gateway). With the
    /// next hop's MAC unknown, the frame waits in the pending queue and an
    /// ARP request goes out; the frame leaves when the reply arrives, or is
    /// dropped after 3 s.
    pub fn send_ipv4<T, F>(&mut self, now: u64, dst: Ipv4Addr, tx: &mut T, build: F) -> SendStatus
    where
        T: Transmit,
        F: FnOnce(&mut [u8]) -> usize,
    {
        self.expire_pending(now);
        let status = self.send_ipv4_inner(now, dst, tx, build);
        if let SendStatus::Dropped(reason) = status {
            self.counters.count_drop(reason);
        }
        status
    }

    fn send_ipv4_inner<T, F>(&mut self, now: u64, dst: Ipv4Addr, tx: &mut T, build: F) -> SendStatus
    where
        T: Transmit,
        F: FnOnce(&mut [u8]) -> usize,
    {
        let our_mac = self.mac;
        let eth_dst = match self.next_hop(dst) {
            None => return SendStatus::Dropped(DropReason::NoRoute),
            Some(NextHop::Broadcast) => EthernetAddress::BROADCAST,
            Some(NextHop::Neighbor(hop)) => match self.neighbor_mac(now, hop, tx) {
                Some(mac) => mac,
                None => {
                    let queued = self.pending.enqueue(hop, now, |slot| {
                        emit_ipv4_frame(slot, our_mac, EthernetAddress::UNSPECIFIED, build)
                    });
                    if queued == Enqueued::Nothing {
                        return SendStatus::Empty;
                    }
                    if queued == Enqueued::QueuedDroppingOldest {
                        self.counters.count_drop(DropReason::PendingOverflow);
                    }
                    if self.neighbors.request_allowed(hop, now) {
                        self.send_arp_request(hop, None, tx);
                    }
                    return SendStatus::Queued;
                }
            },
        };
        let mut built = None;
        let sent = tx.transmit(|buf| {
            let n = emit_ipv4_frame(buf, our_mac, eth_dst, build);
            built = Some(n);
            n
        });
        match (sent, built) {
            (true, _) => {
                bump(&mut self.counters.tx_frames);
                SendStatus::Sent
            }
            (false, Some(0)) => SendStatus::Empty,
            (false, _) => SendStatus::Dropped(DropReason::TxUnavailable),
        }
    }

    /// Sends the frames waiting for `ip`, now known to be at `mac`.
    fn release_pending<T: Transmit>(&mut self, ip: Ipv4Addr, mac: EthernetAddress, tx: &mut T) {
        if self.pending.is_empty() {
            return;
        }
        let counters = &mut self.counters;
        self.pending.release(ip, |frame| {
            EthernetFrame::new_unchecked(&mut *frame).set_dst_addr(mac);
            let frame: &[u8] = frame;
            let sent = tx.transmit(|buf| match buf.get_mut(..frame.len()) {
                Some(dst) => {
                    dst.copy_from_slice(frame);
                    frame.len()
                }
                None => 0,
            });
            if sent {
                bump(&mut counters.tx_frames);
                bump(&mut counters.pending_released);
            } else {
                counters.count_drop(DropReason::TxUnavailable);
            }
        });
    }

    fn expire_pending(&mut self, now: u64) {
        if self.pending.is_empty() {
            return;
        }
        let expired = self.pending.expire(now);
        if let Some(c) = self
            .counters
            .drops
            .get_mut(DropReason::PendingTimeout.index())
        {
            *c = c.wrapping_add(expired as u64);
        }
    }

    // ------------------------------------------------------------- timers

    /// Timer work: drops frames whose next hop did not resolve in time and
    /// repeats ARP requests (once per second per address) for the others.
    /// Call it at [`Interface::poll_at`] or more often.
    pub fn poll<T: Transmit>(&mut self, now: u64, tx: &mut T) {
        self.expire_pending(now);
        let mut hops: Vec<Ipv4Addr, PENDING> = Vec::new();
        for hop in self.pending.waiting() {
            if !hops.contains(&hop) {
                let _ = hops.push(hop);
            }
        }
        for hop in hops {
            if self.neighbors.request_allowed(hop, now) {
                self.send_arp_request(hop, None, tx);
            }
        }
    }

    /// When [`Interface::poll`] next has work: `None` while no frame waits.
    pub fn poll_at(&self, now: u64) -> Option<u64> {
        let mut at = self.pending.next_deadline()?;
        for hop in self.pending.waiting() {
            at = at.min(self.neighbors.next_request_at(hop, now).unwrap_or(now));
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests;
