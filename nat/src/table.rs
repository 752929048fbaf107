//! The translation table: flows, endpoint-independent mappings, external
//! port allocation and expiry, in storage allocated once.
//!
//! ```text
//!            outbound index                       inbound index
//!   (proto, int ip:port, remote ip:port)    (proto, ext port, remote ip:port)
//!                 │                                    │
//!                 └──────────────> flows[i] <──────────┘      (capacity N, 32 bytes each)
//!                                   │  mapping
//!                                   v
//!          mappings[m]: (proto, int ip:port) -> ext port, refcount     (EIM, RFC 4787 REQ-1)
//!                                   ^
//!          ports[proto][ext port]: mapping in use | cooling deadline
//!          reserved[proto]: bitmap of ports held by gatekeeper rules
//! ```
//!
//! - **Flows** are the sessions: one per (protocol, internal ip:port,
//!   remote ip:port), where the "port" of an ICMP echo flow is its
//!   identifier and its remote port is zero. Each flow sits in two chained
//!   hash indexes (outbound and inbound keys), so lookups are O(1) in both
//!   directions. Inbound packets pass only when their remote ip:port has a
//!   flow: address-and-port-dependent filtering.
//! - **Mappings** give endpoint-independent mapping: every flow of an
//!   internal ip:port shares one external port while any of them lives (a
//!   reference count). When the last flow goes, the port *cools* for
//!   [`Timeouts::port_cooldown`] before it can be handed out again.
//!   *Static* mappings (gatekeeper rules, [`TranslationTable::insert_static`])
//!   map an external port to an internal endpoint for one client address;
//!   inbound packets from that client open flows under them.
//! - **Ports** come from a configurable range, visited in a fixed random
//!   permutation (a random start and a random stride coprime to the range
//!   size), skipping ports in use, cooling, or reserved by the caller
//!   ([`TranslationTable::reserve_port`]). An allocation examines at most
//!   1024 ports.
//! - **Expiry** is lazy: a packet only rewrites its flow's deadline. A timer
//!   wheel of 8192 one-second slots (a flow is filed under a time at or
//!   before its deadline) finds the flows to check; a flow found still alive
//!   is refiled under its current deadline. [`TranslationTable::expire`]
//!   does bounded work per call; when the table is full, opening a flow
//!   first runs the wheel up to now (bounded too) to reclaim expired flows,
//!   then refuses (counted in [`TableStats::refused_full`]). Live flows are
//!   never evicted, so established TCP connections survive any flood of
//!   new ones. Lookups treat a flow past its deadline as gone.
//!
//! Hashing is keyed (a 64x64->128-bit multiply folded to 64 bits, with
//! keys derived from the seed given to the constructor), so remote parties
//! cannot aim collisions at one chain without knowing the key.
//!
//! Time is the crate's `u64` nanoseconds; the table keeps whole seconds.
//! Nothing allocates after [`TranslationTable::new`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use core::ops::RangeInclusive;

use crate::wire::{IpProtocol, TcpPacket};
use crate::NS_PER_SEC;

/// "No entry" in the index chains and lists.
const NIL: u32 = u32::MAX;
/// The largest accepted flow capacity.
pub const MAX_CAPACITY: usize = 1 << 24;
/// The largest accepted number of static mappings.
pub const MAX_STATIC: usize = 1 << 20;
/// The default flow capacity.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// The default number of static mappings (gatekeeper rules).
pub const DEFAULT_STATIC_CAPACITY: usize = 4096;
/// Timer wheel slots (one second each; a power of two).
const WHEEL_SLOTS: u32 = 8192;
const WHEEL_MASK: u32 = WHEEL_SLOTS - 1;
/// Ports examined at most by one allocation.
const PORT_PROBES: u32 = 1024;
/// Flows examined at most when the table is full and a flow is to be
/// opened (on top of skipping up to a wheel revolution of empty slots).
pub const RECLAIM_BUDGET: usize = 256;
/// Port-state word: a mapping index with this bit, else a cooling deadline.
const IN_USE: u32 = 1 << 31;

/// Ports per protocol.
const PORTS: usize = 1 << 16;

const FIN: u8 = TcpPacket::<&[u8]>::FIN;
const SYN: u8 = TcpPacket::<&[u8]>::SYN;
const RST: u8 = TcpPacket::<&[u8]>::RST;
const ACK: u8 = TcpPacket::<&[u8]>::ACK;

// Flow states (low nibble of `Flow::state`).
const ST_UDP: u8 = 0;
const ST_ICMP: u8 = 1;
const ST_SYN_SENT: u8 = 2;
const ST_SYN_RECV: u8 = 3;
const ST_ESTABLISHED: u8 = 4;
const ST_FIN_IN: u8 = 5;
const ST_FIN_OUT: u8 = 6;
const ST_TIME_WAIT: u8 = 7;
const ST_CLOSED: u8 = 8;
const N_STATES: usize = 9;
const STATE_MASK: u8 = 0x0f;
/// State bit: the flow was opened from outside (under a static mapping).
const OPENED_OUTSIDE: u8 = 0x80;

/// The protocols the table translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP queries (echo): the identifier plays the port.
    Icmp,
}

impl Protocol {
    pub const COUNT: usize = 3;
    pub const ALL: [Protocol; Protocol::COUNT] = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp];

    /// Index for per-protocol arrays (`Tcp` 0, `Udp` 1, `Icmp` 2).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Non-zero tag stored in flows and mappings (zero marks a free slot).
    const fn tag(self) -> u8 {
        match self {
            Protocol::Tcp => 1,
            Protocol::Udp => 2,
            Protocol::Icmp => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Protocol::Tcp),
            2 => Some(Protocol::Udp),
            3 => Some(Protocol::Icmp),
            _ => None,
        }
    }

    /// The table protocol of an IPv4 protocol number, if it has one.
    pub fn from_ip(p: IpProtocol) -> Option<Self> {
        match p {
            IpProtocol::Tcp => Some(Protocol::Tcp),
            IpProtocol::Udp => Some(Protocol::Udp),
            IpProtocol::Icmp => Some(Protocol::Icmp),
            IpProtocol::Unknown(_) => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

impl From<Protocol> for IpProtocol {
    fn from(p: Protocol) -> IpProtocol {
        match p {
            Protocol::Tcp => IpProtocol::Tcp,
            Protocol::Udp => IpProtocol::Udp,
            Protocol::Icmp => IpProtocol::Icmp,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Idle timeouts, in seconds (each at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP opening: SYN seen (SYN_SENT), SYN+ACK seen (SYN_RECV). 120 s.
    pub tcp_syn: u32,
    /// TCP established: 7440 s (RFC 5382 REQ-5: at least 2 h 4 min).
    pub tcp_established: u32,
    /// TCP closing, FIN seen from one side (FIN_WAIT / CLOSE_WAIT). 120 s.
    pub tcp_closing: u32,
    /// TCP FIN seen from both sides (TIME_WAIT). 120 s.
    pub tcp_time_wait: u32,
    /// TCP after a RST. 10 s.
    pub tcp_rst: u32,
    /// UDP: 120 s (RFC 4787 REQ-5: at least 2 min).
    pub udp: u32,
    /// ICMP queries: 30 s.
    pub icmp: u32,
    /// How long a released external port stays unused: 120 s.
    pub port_cooldown: u32,
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        tcp_syn: 120,
        tcp_established: 7440,
        tcp_closing: 120,
        tcp_time_wait: 120,
        tcp_rst: 10,
        udp: 120,
        icmp: 30,
        port_cooldown: 120,
    };

    fn by_state(&self) -> [u32; N_STATES] {
        let mut t = [0u32; N_STATES];
        for (state, slot) in t.iter_mut().enumerate() {
            *slot = match state as u8 {
                ST_UDP => self.udp,
                ST_ICMP => self.icmp,
                ST_SYN_SENT | ST_SYN_RECV => self.tcp_syn,
                ST_ESTABLISHED => self.tcp_established,
                ST_FIN_IN | ST_FIN_OUT => self.tcp_closing,
                ST_TIME_WAIT => self.tcp_time_wait,
                _ => self.tcp_rst,
            }
            .max(1);
        }
        t
    }

    fn all(&self) -> [u32; 8] {
        [
            self.tcp_syn,
            self.tcp_established,
            self.tcp_closing,
            self.tcp_time_wait,
            self.tcp_rst,
            self.udp,
            self.icmp,
            self.port_cooldown,
        ]
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::DEFAULT
    }
}

/// What the table is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Maximum number of flows (1..=[`MAX_CAPACITY`]); default 65,536.
    pub capacity: usize,
    /// Maximum number of static mappings (0..=[`MAX_STATIC`]); default 4096.
    pub static_capacity: usize,
    /// External ports for dynamic mappings (and ICMP identifiers); default
    /// 1024..=65535. Port 0 is never used.
    pub ports: RangeInclusive<u16>,
    pub timeouts: Timeouts,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            capacity: DEFAULT_CAPACITY,
            static_capacity: DEFAULT_STATIC_CAPACITY,
            ports: 1024..=65535,
            timeouts: Timeouts::DEFAULT,
        }
    }
}

/// Why a table cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigError {
    /// A capacity of zero, or above the maximum.
    BadCapacity,
    /// An empty port range, or one starting at port 0.
    BadPortRange,
    /// A timeout of zero, or one above 2^31 s.
    BadTimeout,
    /// The storage could not be allocated.
    OutOfMemory,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::BadCapacity => "flow or rule capacity out of range",
            ConfigError::BadPortRange => "empty port range or port 0 in it",
            ConfigError::BadTimeout => "timeout of zero or too large",
            ConfigError::OutOfMemory => "not enough memory for the translation table",
        })
    }
}

impl core::error::Error for ConfigError {}

/// Why a packet found no flow (each is counted somewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Miss {
    /// No flow, and this packet may not open one (TCP other than a bare
    /// SYN; an inbound packet of a kind that never opens flows).
    NoFlow,
    /// Inbound, to an external port with no mapping.
    NoMapping,
    /// Inbound, to a mapped port, from a remote ip:port without a flow
    /// there (address-and-port-dependent filtering).
    Filtered,
    /// Full of live flows: the new flow is refused.
    TableFull,
    /// No external port available (all in use, cooling or reserved).
    NoPort,
    /// A flow opened under a static mapping would duplicate the outbound
    /// key of an existing flow.
    Conflict,
}

/// Why a static mapping cannot be inserted or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaticError {
    /// ICMP, or port 0.
    Unsupported,
    /// The external port is held by a dynamic mapping, is cooling, or
    /// already has a static mapping.
    PortBusy,
    /// As many static mappings as configured exist already.
    Full,
    /// No static mapping on that port.
    NotFound,
}

impl fmt::Display for StaticError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StaticError::Unsupported => "unsupported protocol or port",
            StaticError::PortBusy => "external port busy",
            StaticError::Full => "static mapping capacity reached",
            StaticError::NotFound => "no such static mapping",
        })
    }
}

/// The state of a TCP flow as tracked by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The opening SYN has been seen.
    SynSent,
    /// The SYN+ACK (or a simultaneous-open SYN) has been seen.
    SynReceived,
    Established,
    /// A FIN from the internal side only.
    FinFromInside,
    /// A FIN from the external side only.
    FinFromOutside,
    /// FINs from both sides.
    TimeWait,
    /// After a RST.
    Closed,
}

impl TcpState {
    fn from_state(state: u8) -> Option<Self> {
        Some(match state & STATE_MASK {
            ST_SYN_SENT => TcpState::SynSent,
            ST_SYN_RECV => TcpState::SynReceived,
            ST_ESTABLISHED => TcpState::Established,
            ST_FIN_IN => TcpState::FinFromInside,
            ST_FIN_OUT => TcpState::FinFromOutside,
            ST_TIME_WAIT => TcpState::TimeWait,
            ST_CLOSED => TcpState::Closed,
            _ => return None,
        })
    }
}

/// The outbound key of a flow: what an internal host's packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutboundKey {
    pub protocol: Protocol,
    pub int_addr: Ipv4Addr,
    /// Source port, or the ICMP echo identifier.
    pub int_port: u16,
    pub remote_addr: Ipv4Addr,
    /// Destination port, zero for ICMP.
    pub remote_port: u16,
}

/// The inbound key of a flow: what a reply from outside carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundKey {
    pub protocol: Protocol,
    /// Destination port on the external address, or the ICMP identifier.
    pub ext_port: u16,
    pub remote_addr: Ipv4Addr,
    /// Source port, zero for ICMP.
    pub remote_port: u16,
}

/// A flow's slot, valid until the flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(u32);

/// A copy of one flow, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub id: FlowId,
    pub protocol: Protocol,
    pub int_addr: Ipv4Addr,
    pub int_port: u16,
    pub ext_port: u16,
    pub remote_addr: Ipv4Addr,
    pub remote_port: u16,
    /// `None` for UDP and ICMP.
    pub tcp_state: Option<TcpState>,
    /// Whether it was opened from outside, under a static mapping.
    pub opened_outside: bool,
    /// Deadline, in whole seconds of the caller's clock.
    pub expires_s: u32,
}

/// A static mapping (gatekeeper rule), for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticMapping {
    pub protocol: Protocol,
    pub ext_port: u16,
    pub client_addr: Ipv4Addr,
    pub int_addr: Ipv4Addr,
    pub int_port: u16,
    /// Live flows under it.
    pub flows: u32,
}

/// Table statistics. Counters wrap at `u64::MAX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Live flows, by [`Protocol::index`].
    pub active: [u64; Protocol::COUNT],
    /// Dynamic mappings (internal endpoints with a live flow).
    pub mappings: u64,
    pub static_mappings: u64,
    /// Ports reserved by the caller (static mappings included).
    pub reserved_ports: u64,
    /// Flows opened.
    pub created: u64,
    /// Flows that reached their deadline.
    pub expired: u64,
    /// Flows removed with their static mapping.
    pub removed: u64,
    /// New flows refused because the table was full of live flows.
    pub refused_full: u64,
    /// New flows refused for want of an external port.
    pub refused_no_port: u64,
    /// New flows under a static mapping refused as duplicates.
    pub refused_conflict: u64,
    /// Inbound packets to an unmapped port, or that may not open a flow.
    pub inbound_no_match: u64,
    /// Inbound packets to a mapped port from a remote without a flow.
    pub inbound_filtered: u64,
    /// Outbound packets without a flow that may not open one.
    pub outbound_no_flow: u64,
}

impl TableStats {
    /// Live flows of all protocols.
    pub fn active_total(&self) -> u64 {
        self.active.iter().fold(0u64, |a, &n| a.wrapping_add(n))
    }
}

/// 32 bytes, aligned so that a flow never straddles two cache lines.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Flow {
    int_ip: u32,
    remote_ip: u32,
    int_port: u16,
    remote_port: u16,
    ext_port: u16,
    /// [`Protocol::tag`], 0 when free.
    proto: u8,
    state: u8,
    /// Whole seconds; the flow is live while `now < expires`.
    expires: u32,
    /// Next flow in the outbound chain, or in the free list.
    next_out: u32,
    next_in: u32,
    mapping: u32,
}

/// Timer wheel links of a flow (kept apart: the packet path never needs
/// them).
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// The time whose slot the flow is filed under (at or before its
    /// deadline).
    sched: u32,
}

/// 24 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Mapping {
    int_ip: u32,
    /// The one client allowed in, for static mappings.
    client_ip: u32,
    int_port: u16,
    ext_port: u16,
    /// [`Protocol::tag`], 0 when free.
    proto: u8,
    is_static: bool,
    /// Live flows under this mapping.
    refs: u32,
    /// Next mapping in the index chain (dynamic) or the free list.
    next: u32,
}

#[inline]
fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}

#[inline]
fn drop_one(c: &mut u64) {
    *c = c.saturating_sub(1);
}

/// Whole seconds of a nanosecond clock (saturating at `u32::MAX`, 136
/// years).
#[inline(always)]
pub fn secs(now_ns: u64) -> u32 {
    u32::try_from(now_ns.wrapping_div(NS_PER_SEC)).unwrap_or(u32::MAX)
}

/// 64x64 -> 128-bit multiply, folded.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// SplitMix64, to spread the caller's seed into keys.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let r = a.checked_rem(b).unwrap_or(0);
        a = b;
        b = r;
    }
    a
}

/// Storage of `len` copies of `value`, allocated once.
fn boxed<T: Clone>(value: T, len: usize) -> Result<Box<[T]>, ConfigError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| ConfigError::OutOfMemory)?;
    v.resize(len, value);
    Ok(v.into_boxed_slice())
}

/// Unlinks flow `i` from the hash chain starting at `heads[bucket]`, whose
/// links are the field `link` selects (`next_out` or `next_in`).
#[inline(always)]
fn unlink_flow(
    flows: &mut [Flow],
    heads: &mut [u32],
    bucket: usize,
    i: u32,
    link: fn(&mut Flow) -> &mut u32,
) {
    let mut prev = NIL;
    let mut cur = heads.get(bucket).copied().unwrap_or(NIL);
    while let Some(c) = flows.get_mut(cur as usize) {
        let next = *link(c);
        if cur == i {
            match flows.get_mut(prev as usize) {
                Some(p) => *link(p) = next,
                None => {
                    if let Some(h) = heads.get_mut(bucket) {
                        *h = next;
                    }
                }
            }
            return;
        }
        prev = cur;
        cur = next;
    }
}

/// Whether a packet with these TCP flags may open a flow: a bare SYN for
/// TCP, anything for UDP and ICMP (the caller passes 0 flags for them).
#[inline]
fn may_open(proto: Protocol, flags: u8) -> bool {
    match proto {
        Protocol::Tcp => flags & (SYN | ACK | RST | FIN) == SYN,
        Protocol::Udp | Protocol::Icmp => true,
    }
}

/// The TCP state after a packet with `flags`, from the internal side when
/// `from_inside`.
fn tcp_next(state: u8, from_inside: bool, flags: u8) -> u8 {
    let outside_opened = state & OPENED_OUTSIDE != 0;
    let from_initiator = from_inside != outside_opened;
    let st = state & STATE_MASK;
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    let fin = flags & FIN != 0;
    let fin_state = if from_inside { ST_FIN_IN } else { ST_FIN_OUT };
    let next = if flags & RST != 0 {
        ST_CLOSED
    } else {
        match st {
            ST_SYN_SENT if syn && !from_initiator => ST_SYN_RECV,
            ST_SYN_SENT | ST_SYN_RECV | ST_ESTABLISHED if fin => fin_state,
            ST_SYN_RECV if ack && !syn => ST_ESTABLISHED,
            ST_FIN_IN if fin && !from_inside => ST_TIME_WAIT,
            ST_FIN_OUT if fin && from_inside => ST_TIME_WAIT,
            ST_TIME_WAIT | ST_CLOSED if syn && !ack && from_initiator => ST_SYN_SENT,
            other => other,
        }
    };
    next | (state & OPENED_OUTSIDE)
}

/// The translation table. See the [module documentation](self).
pub struct TranslationTable {
    flows: Box<[Flow]>,
    links: Box<[Link]>,
    out_heads: Box<[u32]>,
    in_heads: Box<[u32]>,
    flow_mask: u32,
    free_flows: u32,
    len: usize,

    mappings: Box<[Mapping]>,
    map_heads: Box<[u32]>,
    map_mask: u32,
    free_mappings: u32,
    static_capacity: usize,

    /// Per protocol and port: `IN_USE | mapping`, or a cooling deadline.
    ports: Box<[u32]>,
    /// Per protocol, a bitmap of reserved ports.
    reserved: Box<[u64]>,
    port_lo: u16,
    port_span: u32,
    port_stride: u32,
    /// Next offset (from `port_lo`) to try, per protocol.
    port_cursor: [u32; Protocol::COUNT],

    wheel: Box<[u32]>,
    /// The next second whose slot the wheel processes.
    wheel_time: u32,

    timeouts: Timeouts,
    tmo: [u32; N_STATES],
    /// Hash keys: outbound, inbound, mapping.
    keys: [u64; 6],
    stats: TableStats,
}

impl fmt::Debug for TranslationTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranslationTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TranslationTable {
    /// Builds a table, allocating all its storage. `seed` (boot-time
    /// randomness) keys the hashes and picks where port allocation starts.
    ///
    /// Memory: 44 bytes per flow (plus 8 of index heads, their count
    /// rounded up to a power of two), 24 per mapping slot (flows plus
    /// static capacity, plus 4 of index head) and 840 KiB of per-port state
    /// and timer wheel: 6.15 MiB for 65,536 flows and 4096 rules.
    pub fn new(config: &TableConfig, seed: [u64; 4]) -> Result<Self, ConfigError> {
        let capacity = config.capacity;
        if capacity == 0 || capacity > MAX_CAPACITY || config.static_capacity > MAX_STATIC {
            return Err(ConfigError::BadCapacity);
        }
        let (lo, hi) = (*config.ports.start(), *config.ports.end());
        if lo == 0 || lo > hi {
            return Err(ConfigError::BadPortRange);
        }
        if config.timeouts.all().iter().any(|&t| t == 0 || t >= IN_USE) {
            return Err(ConfigError::BadTimeout);
        }
        let mapping_capacity = capacity.saturating_add(config.static_capacity);
        let flow_buckets = capacity
            .checked_next_power_of_two()
            .ok_or(ConfigError::BadCapacity)?;
        let map_buckets = mapping_capacity
            .checked_next_power_of_two()
            .ok_or(ConfigError::BadCapacity)?;

        let mut flows = boxed(Flow::default(), capacity)?;
        let links = boxed(
            Link {
                prev: NIL,
                next: NIL,
                sched: 0,
            },
            capacity,
        )?;
        let mut mappings = boxed(Mapping::default(), mapping_capacity)?;
        // Free lists in index order.
        for (i, f) in flows.iter_mut().enumerate() {
            f.next_out = u32::try_from(i.wrapping_add(1))
                .ok()
                .filter(|&n| (n as usize) < capacity)
                .unwrap_or(NIL);
            f.next_in = NIL;
        }
        for (i, m) in mappings.iter_mut().enumerate() {
            m.next = u32::try_from(i.wrapping_add(1))
                .ok()
                .filter(|&n| (n as usize) < mapping_capacity)
                .unwrap_or(NIL);
        }

        let mut rng = seed.iter().fold(0x6a09_e667_f3bc_c908u64, |acc, &s| {
            mum(acc ^ s, 0x9e37_79b9_7f4a_7c15) ^ s
        });
        let mut keys = [0u64; 6];
        for k in &mut keys {
            *k = splitmix(&mut rng);
        }
        let port_span = u32::from(hi).wrapping_sub(u32::from(lo)).wrapping_add(1);
        let mut stride = (splitmix(&mut rng) as u32)
            .checked_rem(port_span)
            .unwrap_or(0)
            | 1;
        while gcd(stride, port_span) != 1 {
            stride = stride.wrapping_add(1);
        }
        let stride = stride.checked_rem(port_span).unwrap_or(0).max(1);
        let mut port_cursor = [0u32; Protocol::COUNT];
        for c in &mut port_cursor {
            *c = (splitmix(&mut rng) as u32)
                .checked_rem(port_span)
                .unwrap_or(0);
        }

        Ok(TranslationTable {
            flows,
            links,
            out_heads: boxed(NIL, flow_buckets)?,
            in_heads: boxed(NIL, flow_buckets)?,
            flow_mask: u32::try_from(flow_buckets.wrapping_sub(1))
                .map_err(|_| ConfigError::BadCapacity)?,
            free_flows: 0,
            len: 0,
            mappings,
            map_heads: boxed(NIL, map_buckets)?,
            map_mask: u32::try_from(map_buckets.wrapping_sub(1))
                .map_err(|_| ConfigError::BadCapacity)?,
            free_mappings: 0,
            static_capacity: config.static_capacity,
            ports: boxed(0u32, PORTS.wrapping_mul(Protocol::COUNT))?,
            reserved: boxed(0u64, (PORTS / 64).wrapping_mul(Protocol::COUNT))?,
            port_lo: lo,
            port_span,
            port_stride: stride,
            port_cursor,
            wheel: boxed(NIL, WHEEL_SLOTS as usize)?,
            wheel_time: 0,
            timeouts: config.timeouts,
            tmo: config.timeouts.by_state(),
            keys,
            stats: TableStats::default(),
        })
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// Live (or not yet reclaimed) flows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The external port range.
    pub fn port_range(&self) -> RangeInclusive<u16> {
        let hi = u32::from(self.port_lo)
            .wrapping_add(self.port_span)
            .wrapping_sub(1);
        self.port_lo..=u16::try_from(hi).unwrap_or(u16::MAX)
    }

    // ------------------------------------------------------------ hashing

    #[inline(always)]
    fn out_bucket(
        &self,
        tag: u8,
        int_ip: u32,
        int_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> usize {
        let a = (u64::from(int_ip) << 32) | u64::from(remote_ip);
        let b = (u64::from(int_port) << 32) | (u64::from(remote_port) << 16) | u64::from(tag);
        let [k0, k1, ..] = self.keys;
        (mum(a ^ k0, b ^ k1) as u32 & self.flow_mask) as usize
    }

    #[inline(always)]
    fn in_bucket(&self, tag: u8, ext_port: u16, remote_ip: u32, remote_port: u16) -> usize {
        let a = (u64::from(remote_ip) << 32) | (u64::from(ext_port) << 16) | u64::from(remote_port);
        let [_, _, k2, k3, ..] = self.keys;
        (mum(a ^ k2, u64::from(tag) ^ k3) as u32 & self.flow_mask) as usize
    }

    #[inline]
    fn map_bucket(&self, tag: u8, int_ip: u32, int_port: u16) -> usize {
        let a = (u64::from(int_ip) << 32) | (u64::from(int_port) << 8) | u64::from(tag);
        let [.., k4, k5] = self.keys;
        (mum(a ^ k4, k5 | 1) as u32 & self.map_mask) as usize
    }

    // ------------------------------------------------------------ lookups

    #[inline(always)]
    fn find_out(
        &self,
        bucket: usize,
        tag: u8,
        int_ip: u32,
        int_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> u32 {
        let mut i = self.out_heads.get(bucket).copied().unwrap_or(NIL);
        while let Some(f) = self.flows.get(i as usize) {
            if f.int_ip == int_ip
                && f.remote_ip == remote_ip
                && f.int_port == int_port
                && f.remote_port == remote_port
                && f.proto == tag
            {
                return i;
            }
            i = f.next_out;
        }
        NIL
    }

    #[inline(always)]
    fn find_in(
        &self,
        bucket: usize,
        tag: u8,
        ext_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> u32 {
        let mut i = self.in_heads.get(bucket).copied().unwrap_or(NIL);
        while let Some(f) = self.flows.get(i as usize) {
            if f.remote_ip == remote_ip
                && f.ext_port == ext_port
                && f.remote_port == remote_port
                && f.proto == tag
            {
                return i;
            }
            i = f.next_in;
        }
        NIL
    }

    fn find_mapping(&self, tag: u8, int_ip: u32, int_port: u16) -> u32 {
        let mut i = self
            .map_heads
            .get(self.map_bucket(tag, int_ip, int_port))
            .copied()
            .unwrap_or(NIL);
        while let Some(m) = self.mappings.get(i as usize) {
            if m.int_ip == int_ip && m.int_port == int_port && m.proto == tag {
                return i;
            }
            i = m.next;
        }
        NIL
    }

    #[inline]
    fn port_slot(p: Protocol, port: u16) -> usize {
        (p.index() << 16) | usize::from(port)
    }

    #[inline]
    fn port_state(&self, p: Protocol, port: u16) -> u32 {
        self.ports
            .get(Self::port_slot(p, port))
            .copied()
            .unwrap_or(IN_USE)
    }

    fn set_port_state(&mut self, p: Protocol, port: u16, value: u32) {
        if let Some(s) = self.ports.get_mut(Self::port_slot(p, port)) {
            *s = value;
        }
    }

    /// The flow of an outbound key, live at `now_ns`.
    pub fn find_outbound(&self, now_ns: u64, key: &OutboundKey) -> Option<FlowId> {
        let (tag, int_ip, remote_ip) = (
            key.protocol.tag(),
            u32::from(key.int_addr),
            u32::from(key.remote_addr),
        );
        let b = self.out_bucket(tag, int_ip, key.int_port, remote_ip, key.remote_port);
        let i = self.find_out(b, tag, int_ip, key.int_port, remote_ip, key.remote_port);
        self.live(i, secs(now_ns))
    }

    /// The flow of an inbound key, live at `now_ns`.
    pub fn find_inbound(&self, now_ns: u64, key: &InboundKey) -> Option<FlowId> {
        let (tag, remote_ip) = (key.protocol.tag(), u32::from(key.remote_addr));
        let b = self.in_bucket(tag, key.ext_port, remote_ip, key.remote_port);
        let i = self.find_in(b, tag, key.ext_port, remote_ip, key.remote_port);
        self.live(i, secs(now_ns))
    }

    fn live(&self, i: u32, now: u32) -> Option<FlowId> {
        self.flows
            .get(i as usize)
            .filter(|f| f.proto != 0 && now < f.expires)
            .map(|_| FlowId(i))
    }

    /// A copy of a flow (`None` once it has gone).
    pub fn flow(&self, id: FlowId) -> Option<FlowInfo> {
        let f = self.flows.get(id.0 as usize)?;
        let protocol = Protocol::from_tag(f.proto)?;
        Some(FlowInfo {
            id,
            protocol,
            int_addr: Ipv4Addr::from(f.int_ip),
            int_port: f.int_port,
            ext_port: f.ext_port,
            remote_addr: Ipv4Addr::from(f.remote_ip),
            remote_port: f.remote_port,
            tcp_state: if protocol == Protocol::Tcp {
                TcpState::from_state(f.state)
            } else {
                None
            },
            opened_outside: f.state & OPENED_OUTSIDE != 0,
            expires_s: f.expires,
        })
    }

    /// Every flow in the table (expired ones not yet reclaimed included).
    pub fn iter(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        (0..self.flows.len()).filter_map(|i| self.flow(FlowId(i as u32)))
    }

    /// The external port of the dynamic mapping of an internal endpoint.
    pub fn mapping_port(
        &self,
        protocol: Protocol,
        int_addr: Ipv4Addr,
        int_port: u16,
    ) -> Option<u16> {
        let i = self.find_mapping(protocol.tag(), u32::from(int_addr), int_port);
        self.mappings.get(i as usize).map(|m| m.ext_port)
    }

    /// The static mapping on an external port.
    pub fn static_mapping(&self, protocol: Protocol, ext_port: u16) -> Option<StaticMapping> {
        let s = self.port_state(protocol, ext_port);
        if s & IN_USE == 0 {
            return None;
        }
        let m = self.mappings.get((s & !IN_USE) as usize)?;
        m.is_static.then_some(StaticMapping {
            protocol,
            ext_port,
            client_addr: Ipv4Addr::from(m.client_ip),
            int_addr: Ipv4Addr::from(m.int_ip),
            int_port: m.int_port,
            flows: m.refs,
        })
    }

    // -------------------------------------------------------- warming

    /// The head of the outbound chain a key hashes to (a plain load, for
    /// batches: see [`crate::translate::Nat::outbound_batch`]).
    #[inline]
    pub(crate) fn out_chain_head(
        &self,
        tag: u8,
        int_ip: u32,
        int_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> u32 {
        let b = self.out_bucket(tag, int_ip, int_port, remote_ip, remote_port);
        self.out_heads.get(b).copied().unwrap_or(NIL)
    }

    /// The head of the inbound chain a key hashes to.
    #[inline]
    pub(crate) fn in_chain_head(
        &self,
        tag: u8,
        ext_port: u16,
        remote_ip: u32,
        remote_port: u16,
    ) -> u32 {
        let b = self.in_bucket(tag, ext_port, remote_ip, remote_port);
        self.in_heads.get(b).copied().unwrap_or(NIL)
    }

    /// Loads a word of flow `i` (to bring it into the cache).
    #[inline]
    pub(crate) fn touch_flow(&self, i: u32) -> u32 {
        self.flows.get(i as usize).map_or(0, |f| f.int_ip)
    }

    /// The protocol tag of the table, for [`Self::out_chain_head`].
    #[inline]
    pub(crate) const fn tag_of(p: Protocol) -> u8 {
        p.tag()
    }

    // -------------------------------------------------------- packet path

    /// An outbound packet (internal host -> outside) with `key` and, for
    /// TCP, `tcp_flags` (0 otherwise): refreshes its live flow, or opens
    /// one when the packet may (TCP: a bare SYN). Returns the external port
    /// (or ICMP identifier) to write as the source.
    #[inline(always)]
    pub fn outbound(&mut self, now_ns: u64, key: &OutboundKey, tcp_flags: u8) -> Result<u16, Miss> {
        let now = secs(now_ns);
        let tag = key.protocol.tag();
        let (int_ip, remote_ip) = (u32::from(key.int_addr), u32::from(key.remote_addr));
        let b = self.out_bucket(tag, int_ip, key.int_port, remote_ip, key.remote_port);
        let i = self.find_out(b, tag, int_ip, key.int_port, remote_ip, key.remote_port);
        if self.refresh(i, now, true, tcp_flags) {
            if let Some(f) = self.flows.get(i as usize) {
                return Ok(f.ext_port);
            }
        }
        if !may_open(key.protocol, tcp_flags) {
            bump(&mut self.stats.outbound_no_flow);
            return Err(Miss::NoFlow);
        }
        self.open_outbound(now, key, b)
    }

    /// An inbound packet (outside -> the external address) with `key` and
    /// TCP flags: refreshes its live flow, or opens one under a static
    /// mapping for its client. Returns the internal address and port (or
    /// ICMP identifier) to write as the destination.
    #[inline(always)]
    pub fn inbound(
        &mut self,
        now_ns: u64,
        key: &InboundKey,
        tcp_flags: u8,
    ) -> Result<(Ipv4Addr, u16), Miss> {
        let now = secs(now_ns);
        let tag = key.protocol.tag();
        let remote_ip = u32::from(key.remote_addr);
        let b = self.in_bucket(tag, key.ext_port, remote_ip, key.remote_port);
        let i = self.find_in(b, tag, key.ext_port, remote_ip, key.remote_port);
        if self.refresh(i, now, false, tcp_flags) {
            if let Some(f) = self.flows.get(i as usize) {
                return Ok((Ipv4Addr::from(f.int_ip), f.int_port));
            }
        }
        self.inbound_miss(now, key, tcp_flags)
    }

    #[cold]
    fn inbound_miss(
        &mut self,
        now: u32,
        key: &InboundKey,
        tcp_flags: u8,
    ) -> Result<(Ipv4Addr, u16), Miss> {
        let remote_ip = u32::from(key.remote_addr);
        let s = self.port_state(key.protocol, key.ext_port);
        let mapping = self
            .mappings
            .get((s & !IN_USE) as usize)
            .filter(|_| s & IN_USE != 0)
            .copied();
        match mapping {
            Some(m) if m.is_static && m.client_ip == remote_ip => {
                if key.protocol == Protocol::Icmp || !may_open(key.protocol, tcp_flags) {
                    bump(&mut self.stats.inbound_no_match);
                    return Err(Miss::NoFlow);
                }
                self.open_static(now, key, s & !IN_USE, m)
            }
            Some(_) => {
                bump(&mut self.stats.inbound_filtered);
                Err(Miss::Filtered)
            }
            None => {
                bump(&mut self.stats.inbound_no_match);
                Err(Miss::NoMapping)
            }
        }
    }

    /// The external port of the live flow of an outbound key, without
    /// refreshing it (for ICMP errors, RFC 5508: they do not keep flows
    /// alive).
    pub fn peek_outbound(&self, now_ns: u64, key: &OutboundKey) -> Option<u16> {
        let id = self.find_outbound(now_ns, key)?;
        self.flows.get(id.0 as usize).map(|f| f.ext_port)
    }

    /// The internal endpoint of the live flow of an inbound key, without
    /// refreshing it.
    pub fn peek_inbound(&self, now_ns: u64, key: &InboundKey) -> Option<(Ipv4Addr, u16)> {
        let id = self.find_inbound(now_ns, key)?;
        self.flows
            .get(id.0 as usize)
            .map(|f| (Ipv4Addr::from(f.int_ip), f.int_port))
    }

    /// Refreshes flow `i` for a packet (TCP state, deadline). Returns
    /// whether it is a live flow; an expired one is reclaimed.
    #[inline(always)]
    fn refresh(&mut self, i: u32, now: u32, from_inside: bool, flags: u8) -> bool {
        let Some(f) = self.flows.get_mut(i as usize) else {
            return false;
        };
        if now >= f.expires {
            self.reclaim(i, now);
            return false;
        }
        let old = f.state;
        if f.proto == Protocol::Tcp.tag()
            && !(old == ST_ESTABLISHED && flags & (SYN | FIN | RST) == 0)
        {
            f.state = tcp_next(old, from_inside, flags);
        }
        let state = f.state;
        let t = self
            .tmo
            .get(usize::from(state & STATE_MASK))
            .copied()
            .unwrap_or(1);
        let expires = now.saturating_add(t);
        f.expires = expires;
        if state != old {
            self.state_changed(i, expires);
        }
        true
    }

    /// After a state change: a shorter timeout (closing, RST) refiles the
    /// flow earlier on the wheel.
    #[cold]
    fn state_changed(&mut self, i: u32, expires: u32) {
        if self
            .links
            .get(i as usize)
            .is_some_and(|l| expires < l.sched)
        {
            self.wheel_unlink(i);
            self.wheel_link(i, expires);
        }
    }

    /// Frees an expired flow.
    fn reclaim(&mut self, i: u32, now: u32) {
        if self.free_flow(i, now) {
            bump(&mut self.stats.expired);
        }
    }

    /// Takes a free flow slot, reclaiming expired flows first when there is
    /// none.
    fn take_flow(&mut self, now: u32) -> Result<u32, Miss> {
        if self.free_flows == NIL {
            self.run_wheel(now, RECLAIM_BUDGET);
        }
        let i = self.free_flows;
        match self.flows.get(i as usize) {
            Some(f) => {
                self.free_flows = f.next_out;
                Ok(i)
            }
            None => {
                bump(&mut self.stats.refused_full);
                Err(Miss::TableFull)
            }
        }
    }

    /// Returns an untouched slot from [`Self::take_flow`].
    fn untake_flow(&mut self, i: u32) {
        let head = self.free_flows;
        if let Some(f) = self.flows.get_mut(i as usize) {
            f.next_out = head;
            self.free_flows = i;
        }
    }

    #[cold]
    fn open_outbound(
        &mut self,
        now: u32,
        key: &OutboundKey,
        out_bucket: usize,
    ) -> Result<u16, Miss> {
        let i = self.take_flow(now)?;
        let (int_ip, remote_ip) = (u32::from(key.int_addr), u32::from(key.remote_addr));
        let m = match self.acquire_mapping(now, key.protocol, int_ip, key.int_port) {
            Ok(m) => m,
            Err(e) => {
                self.untake_flow(i);
                return Err(e);
            }
        };
        let ext_port = self.mappings.get(m as usize).map_or(0, |m| m.ext_port);
        let state = match key.protocol {
            Protocol::Tcp => ST_SYN_SENT,
            Protocol::Udp => ST_UDP,
            Protocol::Icmp => ST_ICMP,
        };
        self.install(
            i,
            Flow {
                int_ip,
                remote_ip,
                int_port: key.int_port,
                remote_port: key.remote_port,
                ext_port,
                proto: key.protocol.tag(),
                state,
                expires: 0,
                next_out: NIL,
                next_in: NIL,
                mapping: m,
            },
            now,
            out_bucket,
        );
        Ok(ext_port)
    }

    #[cold]
    fn open_static(
        &mut self,
        now: u32,
        key: &InboundKey,
        m: u32,
        mapping: Mapping,
    ) -> Result<(Ipv4Addr, u16), Miss> {
        let tag = key.protocol.tag();
        let remote_ip = u32::from(key.remote_addr);
        let ob = self.out_bucket(
            tag,
            mapping.int_ip,
            mapping.int_port,
            remote_ip,
            key.remote_port,
        );
        let existing = self.find_out(
            ob,
            tag,
            mapping.int_ip,
            mapping.int_port,
            remote_ip,
            key.remote_port,
        );
        if existing != NIL {
            // Reclaim it if it is merely expired; a live one conflicts.
            if self
                .flows
                .get(existing as usize)
                .is_some_and(|f| now >= f.expires)
            {
                self.reclaim(existing, now);
            } else {
                bump(&mut self.stats.refused_conflict);
                return Err(Miss::Conflict);
            }
        }
        let i = self.take_flow(now)?;
        // Reclaiming may have freed nothing of ours: the static mapping
        // holds no reference that can drop to zero and go.
        if let Some(mm) = self.mappings.get_mut(m as usize) {
            mm.refs = mm.refs.wrapping_add(1);
        }
        let state = match key.protocol {
            Protocol::Tcp => ST_SYN_SENT | OPENED_OUTSIDE,
            Protocol::Udp => ST_UDP | OPENED_OUTSIDE,
            Protocol::Icmp => ST_ICMP | OPENED_OUTSIDE,
        };
        self.install(
            i,
            Flow {
                int_ip: mapping.int_ip,
                remote_ip,
                int_port: mapping.int_port,
                remote_port: key.remote_port,
                ext_port: key.ext_port,
                proto: tag,
                state,
                expires: 0,
                next_out: NIL,
                next_in: NIL,
                mapping: m,
            },
            now,
            ob,
        );
        Ok((Ipv4Addr::from(mapping.int_ip), mapping.int_port))
    }

    /// Writes flow `i` and links it into both indexes and the wheel.
    fn install(&mut self, i: u32, mut flow: Flow, now: u32, out_bucket: usize) {
        let t = self
            .tmo
            .get(usize::from(flow.state & STATE_MASK))
            .copied()
            .unwrap_or(1);
        flow.expires = now.saturating_add(t);
        let ib = self.in_bucket(flow.proto, flow.ext_port, flow.remote_ip, flow.remote_port);
        flow.next_out = self.out_heads.get(out_bucket).copied().unwrap_or(NIL);
        flow.next_in = self.in_heads.get(ib).copied().unwrap_or(NIL);
        let Some(slot) = self.flows.get_mut(i as usize) else {
            return;
        };
        *slot = flow;
        if let Some(h) = self.out_heads.get_mut(out_bucket) {
            *h = i;
        }
        if let Some(h) = self.in_heads.get_mut(ib) {
            *h = i;
        }
        self.wheel_link(i, flow.expires);
        self.len = self.len.wrapping_add(1);
        if let Some(p) = Protocol::from_tag(flow.proto) {
            if let Some(a) = self.stats.active.get_mut(p.index()) {
                bump(a);
            }
        }
        bump(&mut self.stats.created);
    }

    /// Unlinks flow `i` from everything, drops its mapping reference, and
    /// puts it on the free list. Returns whether there was a flow.
    fn free_flow(&mut self, i: u32, now: u32) -> bool {
        let Some(f) = self.flows.get(i as usize).copied() else {
            return false;
        };
        if f.proto == 0 {
            return false;
        }
        let ob = self.out_bucket(f.proto, f.int_ip, f.int_port, f.remote_ip, f.remote_port);
        unlink_flow(&mut self.flows, &mut self.out_heads, ob, i, |c| {
            &mut c.next_out
        });
        let ib = self.in_bucket(f.proto, f.ext_port, f.remote_ip, f.remote_port);
        unlink_flow(&mut self.flows, &mut self.in_heads, ib, i, |c| {
            &mut c.next_in
        });
        self.wheel_unlink(i);
        self.release_mapping(f.mapping, now);
        let head = self.free_flows;
        if let Some(slot) = self.flows.get_mut(i as usize) {
            *slot = Flow {
                next_out: head,
                next_in: NIL,
                ..Flow::default()
            };
            self.free_flows = i;
        }
        self.len = self.len.saturating_sub(1);
        if let Some(p) = Protocol::from_tag(f.proto) {
            if let Some(a) = self.stats.active.get_mut(p.index()) {
                drop_one(a);
            }
        }
        true
    }

    // ----------------------------------------------------------- mappings

    fn acquire_mapping(
        &mut self,
        now: u32,
        p: Protocol,
        int_ip: u32,
        int_port: u16,
    ) -> Result<u32, Miss> {
        let tag = p.tag();
        let found = self.find_mapping(tag, int_ip, int_port);
        if let Some(m) = self.mappings.get_mut(found as usize) {
            m.refs = m.refs.wrapping_add(1);
            return Ok(found);
        }
        let m = self.free_mappings;
        let Some(next_free) = self.mappings.get(m as usize).map(|m| m.next) else {
            // Cannot happen: there are as many mapping slots as flows plus
            // static mappings.
            bump(&mut self.stats.refused_full);
            return Err(Miss::TableFull);
        };
        let Some(ext_port) = self.alloc_port(p, now) else {
            bump(&mut self.stats.refused_no_port);
            return Err(Miss::NoPort);
        };
        self.free_mappings = next_free;
        let b = self.map_bucket(tag, int_ip, int_port);
        let head = self.map_heads.get(b).copied().unwrap_or(NIL);
        if let Some(slot) = self.mappings.get_mut(m as usize) {
            *slot = Mapping {
                int_ip,
                client_ip: 0,
                int_port,
                ext_port,
                proto: tag,
                is_static: false,
                refs: 1,
                next: head,
            };
        }
        if let Some(h) = self.map_heads.get_mut(b) {
            *h = m;
        }
        self.set_port_state(p, ext_port, IN_USE | m);
        bump(&mut self.stats.mappings);
        Ok(m)
    }

    /// Drops one flow's reference to mapping `m`; a dynamic mapping left
    /// without flows goes, and its port starts cooling.
    fn release_mapping(&mut self, m: u32, now: u32) {
        let Some(mm) = self.mappings.get_mut(m as usize) else {
            return;
        };
        mm.refs = mm.refs.saturating_sub(1);
        if mm.refs > 0 || mm.is_static || mm.proto == 0 {
            return;
        }
        let map = *mm;
        let b = self.map_bucket(map.proto, map.int_ip, map.int_port);
        let mut prev = NIL;
        let mut cur = self.map_heads.get(b).copied().unwrap_or(NIL);
        while let Some(c) = self.mappings.get(cur as usize) {
            let next = c.next;
            if cur == m {
                match self.mappings.get_mut(prev as usize) {
                    Some(p) => p.next = next,
                    None => {
                        if let Some(h) = self.map_heads.get_mut(b) {
                            *h = next;
                        }
                    }
                }
                break;
            }
            prev = cur;
            cur = next;
        }
        if let Some(p) = Protocol::from_tag(map.proto) {
            self.cool_port(p, map.ext_port, now);
        }
        self.free_mapping(m);
        drop_one(&mut self.stats.mappings);
    }

    fn free_mapping(&mut self, m: u32) {
        let head = self.free_mappings;
        if let Some(slot) = self.mappings.get_mut(m as usize) {
            *slot = Mapping {
                next: head,
                ..Mapping::default()
            };
            self.free_mappings = m;
        }
    }

    fn cool_port(&mut self, p: Protocol, port: u16, now: u32) {
        let until = now
            .saturating_add(self.timeouts.port_cooldown)
            .min(IN_USE.wrapping_sub(1));
        self.set_port_state(p, port, until);
    }

    // -------------------------------------------------------------- ports

    fn is_reserved_raw(&self, p: Protocol, port: u16) -> bool {
        let word = (p.index() << 10) | usize::from(port >> 6);
        self.reserved
            .get(word)
            .is_some_and(|w| w & (1u64 << (port & 63)) != 0)
    }

    fn set_reserved(&mut self, p: Protocol, port: u16, on: bool) {
        let word = (p.index() << 10) | usize::from(port >> 6);
        if let Some(w) = self.reserved.get_mut(word) {
            let bit = 1u64 << (port & 63);
            let was = *w & bit != 0;
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
            if on && !was {
                bump(&mut self.stats.reserved_ports);
            } else if !on && was {
                drop_one(&mut self.stats.reserved_ports);
            }
        }
    }

    /// Whether a port is free for a new dynamic mapping or a reservation:
    /// not reserved, not in use, not cooling.
    fn port_available(&self, p: Protocol, port: u16, now: u32) -> bool {
        let s = self.port_state(p, port);
        port != 0 && s & IN_USE == 0 && s <= now && !self.is_reserved_raw(p, port)
    }

    /// The next available port of the range, examining at most
    /// [`PORT_PROBES`] ports.
    fn alloc_port(&mut self, p: Protocol, now: u32) -> Option<u16> {
        let cursor = self.port_cursor.get(p.index()).copied()?;
        let mut off = cursor;
        let mut found = None;
        for _ in 0..self.port_span.min(PORT_PROBES) {
            let port = u16::try_from(u32::from(self.port_lo).wrapping_add(off)).unwrap_or(0);
            off = off
                .wrapping_add(self.port_stride)
                .checked_rem(self.port_span)
                .unwrap_or(0);
            if self.port_available(p, port, now) {
                found = Some(port);
                break;
            }
        }
        if let Some(c) = self.port_cursor.get_mut(p.index()) {
            *c = off;
        }
        found
    }

    /// Whether the caller holds `port` (see [`Self::reserve_port`]).
    pub fn is_reserved(&self, protocol: Protocol, port: u16) -> bool {
        self.is_reserved_raw(protocol, port)
    }

    /// Reserves an external port for the caller (a gatekeeper rule): no
    /// dynamic mapping will take it until [`Self::release_port`]. Fails
    /// (`false`) for port 0, a port already reserved, in use by a mapping,
    /// or still cooling.
    pub fn reserve_port(&mut self, now_ns: u64, protocol: Protocol, port: u16) -> bool {
        if !self.port_available(protocol, port, secs(now_ns)) {
            return false;
        }
        self.set_reserved(protocol, port, true);
        true
    }

    /// Reserves some available port of the range (the same allocator as
    /// dynamic mappings).
    pub fn reserve_any_port(&mut self, now_ns: u64, protocol: Protocol) -> Option<u16> {
        let port = self.alloc_port(protocol, secs(now_ns))?;
        self.set_reserved(protocol, port, true);
        Some(port)
    }

    /// Gives back a reserved port that has no static mapping; it cools
    /// before any reuse. Returns whether it was reserved (and free of
    /// static mappings).
    pub fn release_port(&mut self, now_ns: u64, protocol: Protocol, port: u16) -> bool {
        if !self.is_reserved_raw(protocol, port) || self.port_state(protocol, port) & IN_USE != 0 {
            return false;
        }
        self.set_reserved(protocol, port, false);
        self.cool_port(protocol, port, secs(now_ns));
        true
    }

    // ----------------------------------------------------- static mappings

    /// Installs a static mapping (a gatekeeper rule): packets from
    /// `client` (any port) to external `ext_port` open flows to
    /// `int_addr:int_port`, whose replies leave from `ext_port`. The port
    /// is reserved if it is not already (it may have been reserved by the
    /// caller beforehand); it must not be in use or cooling.
    pub fn insert_static(
        &mut self,
        now_ns: u64,
        protocol: Protocol,
        ext_port: u16,
        client: Ipv4Addr,
        int_addr: Ipv4Addr,
        int_port: u16,
    ) -> Result<(), StaticError> {
        if protocol == Protocol::Icmp || ext_port == 0 {
            return Err(StaticError::Unsupported);
        }
        let now = secs(now_ns);
        let s = self.port_state(protocol, ext_port);
        let reserved = self.is_reserved_raw(protocol, ext_port);
        if s & IN_USE != 0 || (!reserved && s > now) {
            return Err(StaticError::PortBusy);
        }
        if self.stats.static_mappings >= self.static_capacity as u64 {
            return Err(StaticError::Full);
        }
        let m = self.free_mappings;
        let Some(next_free) = self.mappings.get(m as usize).map(|m| m.next) else {
            return Err(StaticError::Full);
        };
        self.free_mappings = next_free;
        if let Some(slot) = self.mappings.get_mut(m as usize) {
            *slot = Mapping {
                int_ip: u32::from(int_addr),
                client_ip: u32::from(client),
                int_port,
                ext_port,
                proto: protocol.tag(),
                is_static: true,
                refs: 0,
                next: NIL,
            };
        }
        self.set_reserved(protocol, ext_port, true);
        self.set_port_state(protocol, ext_port, IN_USE | m);
        bump(&mut self.stats.static_mappings);
        Ok(())
    }

    /// Removes the static mapping on `ext_port` and every flow opened
    /// under it (from then on their packets find nothing), releases the
    /// port reservation and lets the port cool. Returns the number of flows
    /// removed. This scans the whole flow array (a management operation,
    /// not the packet path).
    pub fn remove_static(
        &mut self,
        now_ns: u64,
        protocol: Protocol,
        ext_port: u16,
    ) -> Result<usize, StaticError> {
        let now = secs(now_ns);
        let s = self.port_state(protocol, ext_port);
        let m = s & !IN_USE;
        if s & IN_USE == 0 || !self.mappings.get(m as usize).is_some_and(|mm| mm.is_static) {
            return Err(StaticError::NotFound);
        }
        let removed = self.free_flows_of(m, now);
        self.free_mapping(m);
        self.set_reserved(protocol, ext_port, false);
        self.cool_port(protocol, ext_port, now);
        drop_one(&mut self.stats.static_mappings);
        Ok(removed)
    }

    /// Frees `ext_port` for a static mapping that must have exactly this
    /// port (a rule restored from the persistent store, whose port a
    /// dynamic mapping took while the rules were being read back): drops
    /// the dynamic mapping holding it, with every flow under it (their
    /// packets find nothing from then on), and ends the port's cooling.
    /// Returns the number of flows removed. `PortBusy` for a port that is
    /// reserved or held by a static mapping. A management operation: it
    /// scans the flow array.
    pub fn evict_port(
        &mut self,
        now_ns: u64,
        protocol: Protocol,
        ext_port: u16,
    ) -> Result<usize, StaticError> {
        if protocol == Protocol::Icmp || ext_port == 0 {
            return Err(StaticError::Unsupported);
        }
        if self.is_reserved_raw(protocol, ext_port) {
            return Err(StaticError::PortBusy);
        }
        let now = secs(now_ns);
        let s = self.port_state(protocol, ext_port);
        let mut removed = 0usize;
        if s & IN_USE != 0 {
            let m = s & !IN_USE;
            match self.mappings.get(m as usize) {
                Some(mm) if !mm.is_static => {}
                _ => return Err(StaticError::PortBusy),
            }
            // The mapping goes with its last flow (release_mapping).
            removed = self.free_flows_of(m, now);
        }
        self.set_port_state(protocol, ext_port, 0);
        Ok(removed)
    }

    /// Frees every flow under mapping `m` (counted as removed); returns how
    /// many. Scans the whole flow array: management operations only.
    fn free_flows_of(&mut self, m: u32, now: u32) -> usize {
        let mut removed = 0usize;
        for i in 0..self.flows.len() {
            let hit = self
                .flows
                .get(i)
                .is_some_and(|f| f.proto != 0 && f.mapping == m);
            if hit && self.free_flow(i as u32, now) {
                removed = removed.wrapping_add(1);
                bump(&mut self.stats.removed);
            }
        }
        removed
    }

    // -------------------------------------------------------------- expiry

    fn wheel_link(&mut self, i: u32, sched: u32) {
        let slot = (sched & WHEEL_MASK) as usize;
        let head = self.wheel.get(slot).copied().unwrap_or(NIL);
        if let Some(l) = self.links.get_mut(i as usize) {
            *l = Link {
                prev: NIL,
                next: head,
                sched,
            };
        } else {
            return;
        }
        if let Some(h) = self.links.get_mut(head as usize) {
            h.prev = i;
        }
        if let Some(w) = self.wheel.get_mut(slot) {
            *w = i;
        }
    }

    fn wheel_unlink(&mut self, i: u32) {
        let Some(l) = self.links.get(i as usize).copied() else {
            return;
        };
        match self.links.get_mut(l.prev as usize) {
            Some(p) => p.next = l.next,
            None => {
                let slot = (l.sched & WHEEL_MASK) as usize;
                if let Some(w) = self.wheel.get_mut(slot) {
                    if *w == i {
                        *w = l.next;
                    }
                }
            }
        }
        if let Some(n) = self.links.get_mut(l.next as usize) {
            n.prev = l.prev;
        }
        if let Some(l) = self.links.get_mut(i as usize) {
            l.prev = NIL;
            l.next = NIL;
        }
    }

    /// Runs the wheel up to `now`: examines at most `budget` flows (and
    /// skips at most one revolution of empty slots). Returns the flows
    /// freed.
    fn run_wheel(&mut self, now: u32, budget: usize) -> usize {
        // Far behind: one revolution from now covers every slot.
        if now > self.wheel_time && now.wrapping_sub(self.wheel_time) >= WHEEL_SLOTS {
            self.wheel_time = now.wrapping_sub(WHEEL_SLOTS.wrapping_sub(1));
        }
        let mut flows_left = budget;
        let mut slots_left = WHEEL_SLOTS;
        let mut freed = 0usize;
        while self.wheel_time <= now && flows_left > 0 && slots_left > 0 {
            let slot = (self.wheel_time & WHEEL_MASK) as usize;
            let head = self.wheel.get(slot).copied().unwrap_or(NIL);
            let Some(expires) = self.flows.get(head as usize).map(|f| f.expires) else {
                slots_left = slots_left.wrapping_sub(1);
                if self.wheel_time == u32::MAX {
                    break;
                }
                self.wheel_time = self.wheel_time.wrapping_add(1);
                continue;
            };
            flows_left = flows_left.wrapping_sub(1);
            if expires <= now {
                self.reclaim(head, now);
                freed = freed.wrapping_add(1);
            } else {
                // Still alive: refile under its deadline, or as far as one
                // revolution allows (never under the current slot).
                let lo = self.wheel_time.saturating_add(1);
                let hi = self.wheel_time.saturating_add(WHEEL_SLOTS.wrapping_sub(1));
                let t = expires.max(lo).min(hi);
                self.wheel_unlink(head);
                self.wheel_link(head, t);
            }
        }
        freed
    }

    /// Periodic housekeeping: reclaims flows whose deadline has passed, up
    /// to `budget` flows examined (and at most one revolution of empty
    /// one-second slots skipped). Returns the flows freed. Call it every
    /// second or so with a budget of a few thousand; the table stays
    /// correct whatever the schedule, since lookups check deadlines.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        self.run_wheel(secs(now_ns), budget)
    }
}

#[cfg(test)]
mod tests;
