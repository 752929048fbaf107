//! Source NAT on IPv4 packets, in place: [`Nat::outbound`] for packets of
//! internal hosts, [`Nat::inbound`] for packets to the external address.
//!
//! ```text
//!  internal vif ── IPv4 ──> Nat::outbound ── Forward: src = ext:P ──> external vif
//!  external vif <── Forward: dst = int:p ── Nat::inbound <── IPv4 to ext:P ──
//!                         other verdicts: Drop(reason) (silent, counted),
//!                         TimeExceeded / NeedFrag (the caller answers with ICMP)
//! ```
//!
//! - TCP and UDP: source (outbound) or destination (inbound) address and
//!   port rewritten; ICMP echo: the identifier plays the port. The IPv4,
//!   TCP, UDP and ICMP checksums are updated incrementally (RFC 1624); a
//!   UDP checksum of zero (none) stays zero. TTL is decremented.
//! - ICMP errors (destination unreachable, time exceeded, parameter
//!   problem) are translated per RFC 5508: inbound ones quoting a packet
//!   that left through a flow go to the internal host with the quoted
//!   header translated back (address, port, quoted IPv4 checksum, quoted
//!   transport checksum when it is within the quoted bytes); outbound ones
//!   from internal hosts about packets that came in through a flow go out
//!   with the quoted header translated to the external side. The outer
//!   ICMP checksum must verify; it is recomputed after the rewrite. ICMP
//!   errors never refresh flows.
//! - Fragments: the first fragment is translated like a whole packet and
//!   its decision remembered in a [`FragmentCache`]; later fragments get
//!   the same address rewrite, or are dropped when no first fragment was
//!   seen ([`DropReason::FragmentNoFirst`]). Nothing is ever fragmented
//!   here: a packet too big for the next link is dropped, with
//!   [`Verdict::NeedFrag`] when DF is set.
//! - Inbound packets that match nothing, and packets of internal hosts to
//!   the external address, are dropped silently and counted.
//!
//! The packet handed over starts at the IPv4 header; bytes beyond its
//! total length (Ethernet padding) are ignored. Nothing allocates and
//! nothing panics, whatever the bytes.

use core::fmt;
use core::net::Ipv4Addr;

use crate::checksum;
use crate::fragment::{Direction, FragmentCache, FragmentKey, DEFAULT_LIFETIME_NS};
use crate::host::Ipv4Cidr;
use crate::table::{
    ConfigError, InboundKey, Miss, OutboundKey, Protocol, StaticError, TableConfig,
    TranslationTable,
};
use crate::wire::{read, read_u16, read_u8, write_u16, IcmpErrorPacket, IpProtocol, Ipv4Packet};

/// Flows examined per [`Nat::expire`] call.
pub const EXPIRE_BUDGET: usize = 4096;

/// Packets whose table lookups [`Nat::outbound_batch`] and
/// [`Nat::inbound_batch`] start together.
pub const BATCH: usize = 32;

const TCP_MIN_HEADER: usize = 20;
const TCP_CHECKSUM_AT: usize = 16;
const UDP_HEADER: usize = 8;
const UDP_CHECKSUM_AT: usize = 6;
const ICMP_HEADER: usize = 8;
const ICMP_CHECKSUM_AT: usize = 2;
const ICMP_IDENT_AT: usize = 4;
const TCP_FLAGS_AT: usize = 13;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// What the NAT is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The bridge's external address: the source of everything that goes
    /// out.
    pub external: Ipv4Addr,
    /// The internal subnet (its address is the bridge's internal address).
    pub internal: Ipv4Cidr,
    pub table: TableConfig,
    /// MTU of the external link (outbound packets larger are dropped).
    pub external_mtu: u16,
    /// MTU of the internal link.
    pub internal_mtu: u16,
    /// How long the decision for a first fragment is remembered.
    pub fragment_lifetime_ns: u64,
}

impl NatConfig {
    /// The defaults: a 65,536-flow table, ports 1024..=65535, MTUs of
    /// 1500, 10 s fragment lifetime.
    pub fn new(external: Ipv4Addr, internal: Ipv4Cidr) -> Self {
        NatConfig {
            external,
            internal,
            table: TableConfig::default(),
            external_mtu: 1500,
            internal_mtu: 1500,
            fragment_lifetime_ns: DEFAULT_LIFETIME_NS,
        }
    }
}

/// What to do with a packet after [`Nat::outbound`] or [`Nat::inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Rewritten in place: send it on (outbound: out of the external vif
    /// towards its destination; inbound: out of the internal vif to its new
    /// destination).
    Forward,
    /// Drop it (silently); counted under the reason.
    Drop(DropReason),
    /// Its TTL ran out: the caller sends ICMP time exceeded (code 0) to its
    /// source, quoting it. The packet is untouched.
    TimeExceeded,
    /// Larger than the next link's MTU with DF set: the caller sends ICMP
    /// fragmentation needed with this MTU to its source. The packet is
    /// untouched.
    NeedFrag { mtu: u16 },
}

/// Why the NAT dropped a packet (each has a counter in [`NatCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Headers truncated or inconsistent (also a TCP fragment at offset 8,
    /// RFC 1858, and a first fragment too short for its ports).
    Malformed,
    /// Outbound, from a source outside the internal subnet.
    NotInternal,
    /// Outbound, to the bridge's own external address.
    ToSelf,
    /// Outbound to a broadcast, multicast, loopback, unspecified or
    /// internal address; inbound from an internal one.
    Martian,
    /// Inbound, not to the external address.
    NotForUs,
    /// A protocol or ICMP type that is not translated (ICMP queries other
    /// than echo, redirects, fragmented ICMP errors, ...).
    Unsupported,
    /// Inbound (or an ICMP error) matching no flow or mapping.
    NoMapping,
    /// Inbound to a mapped port from a remote without a flow there
    /// (address-and-port-dependent filtering).
    Filtered,
    /// No flow, and this packet may not open one (TCP other than a SYN).
    NoFlow,
    /// A new flow refused: the table is full of live flows.
    TableFull,
    /// A new flow refused: no external port available.
    NoPort,
    /// A new flow under a static mapping refused as a duplicate.
    Conflict,
    /// A later fragment whose first fragment was not seen.
    FragmentNoFirst,
    /// Larger than the next link's MTU, without DF (nothing is fragmented
    /// here), or a packet that must not cause an ICMP error.
    TooBig,
    /// An ICMP error whose checksum does not verify.
    BadChecksum,
    /// TTL ran out on a packet that must not cause an ICMP error (a later
    /// fragment, an ICMP error).
    TtlExpired,
}

impl DropReason {
    pub const COUNT: usize = 16;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Malformed,
        DropReason::NotInternal,
        DropReason::ToSelf,
        DropReason::Martian,
        DropReason::NotForUs,
        DropReason::Unsupported,
        DropReason::NoMapping,
        DropReason::Filtered,
        DropReason::NoFlow,
        DropReason::TableFull,
        DropReason::NoPort,
        DropReason::Conflict,
        DropReason::FragmentNoFirst,
        DropReason::TooBig,
        DropReason::BadChecksum,
        DropReason::TtlExpired,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name (for statistics output).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotInternal => "not_internal",
            DropReason::ToSelf => "to_self",
            DropReason::Martian => "martian",
            DropReason::NotForUs => "not_for_us",
            DropReason::Unsupported => "unsupported",
            DropReason::NoMapping => "no_mapping",
            DropReason::Filtered => "filtered",
            DropReason::NoFlow => "no_flow",
            DropReason::TableFull => "table_full",
            DropReason::NoPort => "no_port",
            DropReason::Conflict => "conflict",
            DropReason::FragmentNoFirst => "fragment_no_first",
            DropReason::TooBig => "too_big",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::TtlExpired => "ttl_expired",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Miss> for DropReason {
    fn from(m: Miss) -> Self {
        match m {
            Miss::NoFlow => DropReason::NoFlow,
            Miss::NoMapping => DropReason::NoMapping,
            Miss::Filtered => DropReason::Filtered,
            Miss::TableFull => DropReason::TableFull,
            Miss::NoPort => DropReason::NoPort,
            Miss::Conflict => DropReason::Conflict,
        }
    }
}

/// NAT statistics. Every counter wraps at `u64::MAX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Outbound packets forwarded (all kinds).
    pub outbound: u64,
    /// Inbound packets forwarded (all kinds).
    pub inbound: u64,
    /// ICMP errors translated, by direction.
    pub icmp_errors_out: u64,
    pub icmp_errors_in: u64,
    /// Later fragments forwarded through the fragment cache.
    pub fragments_out: u64,
    pub fragments_in: u64,
    /// [`Verdict::TimeExceeded`] returned.
    pub time_exceeded: u64,
    /// [`Verdict::NeedFrag`] returned.
    pub need_frag: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl NatCounters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, &d| a.wrapping_add(d))
    }
}

#[inline]
fn bump(c: &mut u64) {
    *c = c.wrapping_add(1);
}

/// Whether an IPv4 address can never be a unicast peer: 0.0.0.0/8,
/// loopback, multicast, reserved and broadcast.
#[inline]
fn is_martian(ip: Ipv4Addr) -> bool {
    matches!(ip.octets()[0], 0 | 127 | 224..=255)
}

/// The internal subnet, as masks for the packet path.
#[derive(Debug, Clone, Copy)]
struct Subnet {
    mask: u32,
    network: u32,
    broadcast: u32,
    /// The bridge's own internal address.
    own: u32,
    /// /31 and /32 have no network and broadcast addresses.
    tiny: bool,
}

impl Subnet {
    fn new(cidr: Ipv4Cidr) -> Self {
        Subnet {
            mask: u32::from(cidr.netmask()),
            network: u32::from(cidr.network()),
            broadcast: u32::from(cidr.broadcast()),
            own: u32::from(cidr.addr()),
            tiny: cidr.prefix_len() >= 31,
        }
    }

    #[inline]
    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.network
    }

    /// Whether `ip` is an internal host other than the bridge.
    #[inline]
    fn is_other_host(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip & self.mask == self.network
            && ip != self.own
            && (self.tiny || (ip != self.network && ip != self.broadcast))
    }
}

/// Whether the transport bytes `l4` of a protocol `proto` packet are an
/// ICMP error (about which no ICMP error may be sent).
fn is_icmp_error(proto: IpProtocol, l4: &[u8]) -> bool {
    proto == IpProtocol::Icmp && matches!(read_u8(l4, 0), 3 | 4 | 5 | 11 | 12)
}

/// The RFC 1624 term (`~m + m'`) of a 16-bit word changing from `old` to
/// `new`, to be added up with others and applied by [`adjust`].
#[inline(always)]
fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old).wrapping_add(u32::from(new))
}

/// [`delta16`] of a 32-bit field (an address): its two words.
#[inline(always)]
fn delta32(old: u32, new: u32) -> u32 {
    delta16((old >> 16) as u16, (new >> 16) as u16).wrapping_add(delta16(old as u16, new as u16))
}

/// RFC 1624 equation 3, `HC' = ~(~HC + sum(~m + m'))`, for several
/// rewritten words at once: `delta` adds up at most seven [`delta16`]
/// terms. Equivalent to applying [`checksum::update`] word by word (the
/// unit tests check it against it and against full recomputation), with a
/// single fold: the packet path rewrites an address and a port or TTL per
/// checksum, and this is its hottest arithmetic.
#[inline(always)]
fn adjust(checksum: u16, delta: u32) -> u16 {
    let s = u32::from(!checksum).wrapping_add(delta);
    let s = (s & 0xffff).wrapping_add(s >> 16);
    let s = (s & 0xffff).wrapping_add(s >> 16);
    !(s as u16)
}

/// Decrements the TTL of the IPv4 header at the start of `packet` and
/// rewrites its source (`src`) or destination address from `old` to
/// `new`, updating the header checksum.
#[inline(always)]
fn rewrite_ip(packet: &mut [u8], src: bool, old: Ipv4Addr, new: Ipv4Addr) {
    let Some(h) = packet.first_chunk_mut::<20>() else {
        return;
    };
    let [ttl, proto] = [h[8], h[9]];
    let new_ttl = ttl.saturating_sub(1);
    let delta = delta16(
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([new_ttl, proto]),
    )
    .wrapping_add(delta32(u32::from(old), u32::from(new)));
    let c = adjust(u16::from_be_bytes([h[10], h[11]]), delta);
    h[8] = new_ttl;
    h[10..12].copy_from_slice(&c.to_be_bytes());
    if src {
        h[12..16].copy_from_slice(&new.octets());
    } else {
        h[16..20].copy_from_slice(&new.octets());
    }
}

/// How a transport checksum reacts to a rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sum {
    /// TCP: pseudo-header and header; always present.
    Tcp,
    /// UDP: pseudo-header and header; zero means none (and stays zero).
    Udp,
    /// ICMP: no pseudo-header.
    Icmp,
}

impl Sum {
    const fn at(self) -> usize {
        match self {
            Sum::Tcp => TCP_CHECKSUM_AT,
            Sum::Udp => UDP_CHECKSUM_AT,
            Sum::Icmp => ICMP_CHECKSUM_AT,
        }
    }
}

/// Rewrites the 16-bit field at `port_at` of the transport bytes `l4` to
/// `new_port`, and updates the checksum for it and for the pseudo-header
/// address change `old_addr -> new_addr`. A checksum beyond the end of
/// `l4` (a truncated header quoted by an ICMP error) is left alone.
#[inline(always)]
fn rewrite_l4(
    l4: &mut [u8],
    port_at: usize,
    new_port: u16,
    sum: Sum,
    old_addr: Ipv4Addr,
    new_addr: Ipv4Addr,
) {
    let old_port = read_u16(l4, port_at);
    write_u16(l4, port_at, new_port);
    let at = sum.at();
    let Some(field) = l4.get_mut(at..).and_then(|b| b.first_chunk_mut::<2>()) else {
        return;
    };
    let c = u16::from_be_bytes(*field);
    if sum == Sum::Udp && c == 0 {
        return;
    }
    let mut delta = delta16(old_port, new_port);
    if sum != Sum::Icmp {
        delta = delta.wrapping_add(delta32(u32::from(old_addr), u32::from(new_addr)));
    }
    let mut c = adjust(c, delta);
    if sum == Sum::Udp && c == 0 {
        c = 0xffff;
    }
    *field = c.to_be_bytes();
}

/// The checked view of the ICMP error in `packet` (header `h`), in either
/// direction; the verdict when it cannot be translated: a fragment, a
/// malformed message, a bad checksum, or a quoted later fragment (whose
/// ports are not there).
fn icmp_error_view<'a>(
    packet: &'a mut [u8],
    h: &Header,
) -> Result<IcmpErrorPacket<&'a mut [u8]>, Verdict> {
    if h.more_frags {
        return Err(Verdict::Drop(DropReason::Unsupported));
    }
    let Some(l4) = packet.get_mut(h.header_len..h.total_len) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    let Ok(err) = IcmpErrorPacket::new_checked(l4) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    if !err.verify_checksum() {
        return Err(Verdict::Drop(DropReason::BadChecksum));
    }
    if err.quoted_is_later_fragment() {
        return Err(Verdict::Drop(DropReason::NoMapping));
    }
    Ok(err)
}

/// Header fields of a packet, read once.
#[derive(Clone, Copy)]
struct Header {
    header_len: usize,
    total_len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: IpProtocol,
    ident: u16,
    frag_offset: u16,
    more_frags: bool,
    dont_frag: bool,
}

impl Header {
    /// The fields of a packet that passes [`Ipv4Packet::new_checked`].
    #[inline(always)]
    fn parse(packet: &[u8]) -> Option<Header> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        // Read the fixed header in one go (the view's getters check the
        // bounds field by field).
        let h = packet.first_chunk::<20>()?;
        let flags = u16::from_be_bytes([h[6], h[7]]);
        Some(Header {
            header_len: usize::from(ip.header_len()),
            total_len: usize::from(u16::from_be_bytes([h[2], h[3]])),
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            ttl: h[8],
            proto: IpProtocol::from(h[9]),
            ident: u16::from_be_bytes([h[4], h[5]]),
            frag_offset: (flags & 0x1fff) << 3,
            more_frags: flags & 0x2000 != 0,
            dont_frag: flags & 0x4000 != 0,
        })
    }

    fn fragment_key(&self, direction: Direction) -> FragmentKey {
        FragmentKey {
            direction,
            src: self.src,
            dst: self.dst,
            ident: self.ident,
            protocol: u8::from(self.proto),
        }
    }
}

/// The source NAT. See the [module documentation](self).
pub struct Nat {
    table: TranslationTable,
    fragments: FragmentCache,
    external: Ipv4Addr,
    internal: Ipv4Cidr,
    subnet: Subnet,
    external_mtu: u16,
    internal_mtu: u16,
    counters: NatCounters,
}

impl fmt::Debug for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nat")
            .field("external", &self.external)
            .field("internal", &self.internal)
            .field("table", &self.table)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Nat {
    /// Builds the NAT and allocates its table (the only allocation).
    /// `seed` must be boot-time randomness: it keys the table's hashes and
    /// places the port allocator.
    pub fn new(config: &NatConfig, seed: [u64; 4]) -> Result<Self, ConfigError> {
        Ok(Nat {
            table: TranslationTable::new(&config.table, seed)?,
            fragments: FragmentCache::new(config.fragment_lifetime_ns),
            external: config.external,
            internal: config.internal,
            subnet: Subnet::new(config.internal),
            external_mtu: config.external_mtu,
            internal_mtu: config.internal_mtu,
            counters: NatCounters::default(),
        })
    }

    pub fn external(&self) -> Ipv4Addr {
        self.external
    }

    pub fn internal(&self) -> Ipv4Cidr {
        self.internal
    }

    pub fn table(&self) -> &TranslationTable {
        &self.table
    }

    /// The table, e.g. to reserve ports or install static mappings.
    pub fn table_mut(&mut self) -> &mut TranslationTable {
        &mut self.table
    }

    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    pub fn fragments(&self) -> &FragmentCache {
        &self.fragments
    }

    /// Periodic housekeeping (every second or so): reclaims expired flows,
    /// a bounded amount of work. Returns the flows freed.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        self.table.expire(now_ns, EXPIRE_BUDGET)
    }

    /// Installs a gatekeeper rule: `client` may reach `int_addr:int_port`
    /// through external port `ext_port` (see
    /// [`TranslationTable::insert_static`]).
    pub fn insert_static(
        &mut self,
        now_ns: u64,
        protocol: Protocol,
        ext_port: u16,
        client: Ipv4Addr,
        int_addr: Ipv4Addr,
        int_port: u16,
    ) -> Result<(), StaticError> {
        if !self.subnet.is_other_host(int_addr) {
            return Err(StaticError::Unsupported);
        }
        self.table
            .insert_static(now_ns, protocol, ext_port, client, int_addr, int_port)
    }

    /// Removes a gatekeeper rule and every flow under it; returns how many
    /// flows went.
    pub fn remove_static(
        &mut self,
        now_ns: u64,
        protocol: Protocol,
        ext_port: u16,
    ) -> Result<usize, StaticError> {
        self.table.remove_static(now_ns, protocol, ext_port)
    }

    fn count(&mut self, verdict: Verdict, outbound: bool) {
        match verdict {
            Verdict::Forward => bump(if outbound {
                &mut self.counters.outbound
            } else {
                &mut self.counters.inbound
            }),
            Verdict::Drop(r) => {
                if let Some(c) = self.counters.drops.get_mut(r.index()) {
                    bump(c);
                }
            }
            Verdict::TimeExceeded => bump(&mut self.counters.time_exceeded),
            Verdict::NeedFrag { .. } => bump(&mut self.counters.need_frag),
        }
    }

    // ------------------------------------------------------------ batches

    /// Translates a batch of packets from internal hosts: `verdicts[i]` is
    /// the verdict for `packets[i]`, exactly as [`Nat::outbound`] would
    /// give it called on each in turn. Faster on a large table: the table
    /// lookups of [`BATCH`] packets at a time are started (plain loads that
    /// only warm the caches) before the first one is translated, so their
    /// cache misses overlap instead of adding up. Returns the number of
    /// packets handled (the shorter of the two slices).
    pub fn outbound_batch<T: AsMut<[u8]>>(
        &mut self,
        now_ns: u64,
        packets: &mut [T],
        verdicts: &mut [Verdict],
    ) -> usize {
        self.batch(now_ns, packets, verdicts, true)
    }

    /// [`Nat::inbound`] for a batch of packets, like
    /// [`Nat::outbound_batch`].
    pub fn inbound_batch<T: AsMut<[u8]>>(
        &mut self,
        now_ns: u64,
        packets: &mut [T],
        verdicts: &mut [Verdict],
    ) -> usize {
        self.batch(now_ns, packets, verdicts, false)
    }

    fn batch<T: AsMut<[u8]>>(
        &mut self,
        now_ns: u64,
        packets: &mut [T],
        verdicts: &mut [Verdict],
        outbound: bool,
    ) -> usize {
        let n = packets.len().min(verdicts.len());
        let (packets, verdicts) = (packets.iter_mut().take(n), verdicts.iter_mut().take(n));
        let mut packets = packets.peekable();
        let mut verdicts = verdicts;
        while packets.peek().is_some() {
            // Start this batch's lookups: chain heads, then the flows they
            // point to, each load independent of the others.
            let mut heads = [u32::MAX; BATCH];
            let mut chunk: [Option<&mut T>; BATCH] = Default::default();
            for (slot, head) in chunk.iter_mut().zip(heads.iter_mut()) {
                let Some(p) = packets.next() else {
                    break;
                };
                *head = self.chain_head(p.as_mut(), outbound);
                *slot = Some(p);
            }
            let warm = heads
                .iter()
                .fold(0u32, |acc, &h| acc ^ self.table.touch_flow(h));
            core::hint::black_box(warm);
            for (p, v) in chunk.into_iter().flatten().zip(&mut verdicts) {
                *v = if outbound {
                    self.outbound(now_ns, p.as_mut())
                } else {
                    self.inbound(now_ns, p.as_mut())
                };
            }
        }
        n
    }

    /// The head of the chain the lookup for `packet` will start from (no
    /// validation: a wrong guess only warms the wrong line).
    #[inline]
    fn chain_head(&self, packet: &[u8], outbound: bool) -> u32 {
        let hl = usize::from(read_u8(packet, 0) & 0x0f).wrapping_mul(4);
        let proto = IpProtocol::from(read_u8(packet, 9));
        let src = u32::from_be_bytes(read(packet, 12));
        let dst = u32::from_be_bytes(read(packet, 16));
        let (p, a, b) = match proto {
            IpProtocol::Tcp => (
                Protocol::Tcp,
                read_u16(packet, hl),
                read_u16(packet, hl.wrapping_add(2)),
            ),
            IpProtocol::Udp => (
                Protocol::Udp,
                read_u16(packet, hl),
                read_u16(packet, hl.wrapping_add(2)),
            ),
            IpProtocol::Icmp => {
                let id = read_u16(packet, hl.wrapping_add(ICMP_IDENT_AT));
                (Protocol::Icmp, id, id)
            }
            IpProtocol::Unknown(_) => return u32::MAX,
        };
        let tag = TranslationTable::tag_of(p);
        if outbound {
            let remote_port = if p == Protocol::Icmp { 0 } else { b };
            self.table.out_chain_head(tag, src, a, dst, remote_port)
        } else {
            let remote_port = if p == Protocol::Icmp { 0 } else { a };
            self.table.in_chain_head(tag, b, src, remote_port)
        }
    }

    // ----------------------------------------------------------- outbound

    /// Translates a packet from an internal host (the IPv4 packet, header
    /// checksum already validated) in place.
    pub fn outbound(&mut self, now_ns: u64, packet: &mut [u8]) -> Verdict {
        let v = self.outbound_inner(now_ns, packet);
        self.count(v, true);
        v
    }

    #[inline(always)]
    fn outbound_inner(&mut self, now: u64, packet: &mut [u8]) -> Verdict {
        let Some(h) = Header::parse(packet) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if !self.subnet.is_other_host(h.src) {
            return Verdict::Drop(DropReason::NotInternal);
        }
        if h.dst == self.external {
            return Verdict::Drop(DropReason::ToSelf);
        }
        if is_martian(h.dst) || self.subnet.contains(h.dst) {
            return Verdict::Drop(DropReason::Martian);
        }
        let later_fragment = h.frag_offset != 0;
        if h.ttl <= 1 || h.total_len > usize::from(self.external_mtu) {
            let l4 = packet.get(h.header_len..h.total_len).unwrap_or(&[]);
            let quiet = later_fragment || is_icmp_error(h.proto, l4);
            return if h.ttl <= 1 {
                if quiet {
                    Verdict::Drop(DropReason::TtlExpired)
                } else {
                    Verdict::TimeExceeded
                }
            } else if h.dont_frag && !quiet {
                Verdict::NeedFrag {
                    mtu: self.external_mtu,
                }
            } else {
                Verdict::Drop(DropReason::TooBig)
            };
        }
        if later_fragment {
            return self.later_fragment(now, packet, &h, Direction::Outbound);
        }
        let v = match h.proto {
            IpProtocol::Tcp => self.outbound_ports(now, packet, &h, Protocol::Tcp),
            IpProtocol::Udp => self.outbound_ports(now, packet, &h, Protocol::Udp),
            IpProtocol::Icmp => self.outbound_icmp(now, packet, &h),
            IpProtocol::Unknown(_) => Verdict::Drop(DropReason::Unsupported),
        };
        if v == Verdict::Forward && h.more_frags {
            self.fragments
                .insert(now, h.fragment_key(Direction::Outbound), self.external);
        }
        v
    }

    #[inline(always)]
    fn outbound_ports(&mut self, now: u64, packet: &mut [u8], h: &Header, p: Protocol) -> Verdict {
        let (min, sum) = match p {
            Protocol::Tcp => (TCP_MIN_HEADER, Sum::Tcp),
            _ => (UDP_HEADER, Sum::Udp),
        };
        let Some(l4) = packet.get_mut(h.header_len..h.total_len) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if l4.len() < min {
            return Verdict::Drop(DropReason::Malformed);
        }
        let flags = if p == Protocol::Tcp {
            read_u8(l4, TCP_FLAGS_AT)
        } else {
            0
        };
        let key = OutboundKey {
            protocol: p,
            int_addr: h.src,
            int_port: read_u16(l4, 0),
            remote_addr: h.dst,
            remote_port: read_u16(l4, 2),
        };
        let ext_port = match self.table.outbound(now, &key, flags) {
            Ok(port) => port,
            Err(m) => return Verdict::Drop(m.into()),
        };
        rewrite_l4(l4, 0, ext_port, sum, h.src, self.external);
        rewrite_ip(packet, true, h.src, self.external);
        Verdict::Forward
    }

    fn outbound_icmp(&mut self, now: u64, packet: &mut [u8], h: &Header) -> Verdict {
        let Some(l4) = packet.get_mut(h.header_len..h.total_len) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if l4.len() < ICMP_HEADER {
            return Verdict::Drop(DropReason::Malformed);
        }
        match read_u8(l4, 0) {
            ICMP_ECHO_REQUEST => {
                let key = OutboundKey {
                    protocol: Protocol::Icmp,
                    int_addr: h.src,
                    int_port: read_u16(l4, ICMP_IDENT_AT),
                    remote_addr: h.dst,
                    remote_port: 0,
                };
                let ext_id = match self.table.outbound(now, &key, 0) {
                    Ok(id) => id,
                    Err(m) => return Verdict::Drop(m.into()),
                };
                rewrite_l4(l4, ICMP_IDENT_AT, ext_id, Sum::Icmp, h.src, self.external);
                rewrite_ip(packet, true, h.src, self.external);
                Verdict::Forward
            }
            3 | 11 | 12 => {
                let v = self.outbound_icmp_error(now, packet, h);
                if v == Verdict::Forward {
                    bump(&mut self.counters.icmp_errors_out);
                }
                v
            }
            _ => Verdict::Drop(DropReason::Unsupported),
        }
    }

    /// An ICMP error from an internal host about a packet that came in
    /// through a flow: the quoted packet (remote -> int:p) becomes
    /// remote -> ext:P.
    fn outbound_icmp_error(&mut self, now: u64, packet: &mut [u8], h: &Header) -> Verdict {
        let mut err = match icmp_error_view(packet, h) {
            Ok(e) => e,
            Err(v) => return v,
        };
        let q_src = err.quoted_src_addr();
        let q_dst = err.quoted_dst_addr();
        let Some(p) = Protocol::from_ip(err.quoted_protocol()) else {
            return Verdict::Drop(DropReason::NoMapping);
        };
        let t = err.quoted_transport();
        let (key, port_at, sum) = match p {
            Protocol::Tcp | Protocol::Udp => (
                OutboundKey {
                    protocol: p,
                    int_addr: q_dst,
                    int_port: read_u16(t, 2),
                    remote_addr: q_src,
                    remote_port: read_u16(t, 0),
                },
                2,
                if p == Protocol::Tcp {
                    Sum::Tcp
                } else {
                    Sum::Udp
                },
            ),
            Protocol::Icmp => {
                // Only an echo reply that went in can be quoted back.
                if read_u8(t, 0) != ICMP_ECHO_REPLY {
                    return Verdict::Drop(DropReason::NoMapping);
                }
                (
                    OutboundKey {
                        protocol: Protocol::Icmp,
                        int_addr: q_dst,
                        int_port: read_u16(t, ICMP_IDENT_AT),
                        remote_addr: q_src,
                        remote_port: 0,
                    },
                    ICMP_IDENT_AT,
                    Sum::Icmp,
                )
            }
        };
        let Some(ext_port) = self.table.peek_outbound(now, &key) else {
            return Verdict::Drop(DropReason::NoMapping);
        };
        rewrite_l4(
            err.quoted_transport_mut(),
            port_at,
            ext_port,
            sum,
            q_dst,
            self.external,
        );
        {
            let mut q = err.quoted_packet_mut();
            let c = checksum::update_addr(q.checksum(), q_dst, self.external);
            q.set_dst_addr(self.external);
            q.set_checksum(c);
        }
        err.fill_checksum();
        rewrite_ip(packet, true, h.src, self.external);
        Verdict::Forward
    }

    // ------------------------------------------------------------ inbound

    /// Translates a packet received on the external address (the IPv4
    /// packet, header checksum already validated) in place.
    pub fn inbound(&mut self, now_ns: u64, packet: &mut [u8]) -> Verdict {
        let v = self.inbound_inner(now_ns, packet);
        self.count(v, false);
        v
    }

    #[inline(always)]
    fn inbound_inner(&mut self, now: u64, packet: &mut [u8]) -> Verdict {
        let Some(h) = Header::parse(packet) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if h.dst != self.external {
            return Verdict::Drop(DropReason::NotForUs);
        }
        if self.subnet.contains(h.src) || is_martian(h.src) {
            return Verdict::Drop(DropReason::Martian);
        }
        if h.frag_offset != 0 {
            return self.later_fragment(now, packet, &h, Direction::Inbound);
        }
        let v = match h.proto {
            IpProtocol::Tcp => self.inbound_ports(now, packet, &h, Protocol::Tcp),
            IpProtocol::Udp => self.inbound_ports(now, packet, &h, Protocol::Udp),
            IpProtocol::Icmp => self.inbound_icmp(now, packet, &h),
            IpProtocol::Unknown(_) => Verdict::Drop(DropReason::Unsupported),
        };
        if v == Verdict::Forward && h.more_frags {
            let to = Ipv4Packet::new_unchecked(&*packet).dst_addr();
            self.fragments
                .insert(now, h.fragment_key(Direction::Inbound), to);
        }
        v
    }

    /// The verdict for an inbound packet of a live flow whose TTL ran out
    /// or that is too big for the internal link; `None` when neither.
    #[inline(always)]
    fn inbound_limits(&self, h: &Header, quiet: bool) -> Option<Verdict> {
        if h.ttl <= 1 {
            Some(if quiet {
                Verdict::Drop(DropReason::TtlExpired)
            } else {
                Verdict::TimeExceeded
            })
        } else if h.total_len > usize::from(self.internal_mtu) {
            Some(if h.dont_frag && !quiet {
                Verdict::NeedFrag {
                    mtu: self.internal_mtu,
                }
            } else {
                Verdict::Drop(DropReason::TooBig)
            })
        } else {
            None
        }
    }

    #[inline(always)]
    fn inbound_ports(&mut self, now: u64, packet: &mut [u8], h: &Header, p: Protocol) -> Verdict {
        let (min, sum) = match p {
            Protocol::Tcp => (TCP_MIN_HEADER, Sum::Tcp),
            _ => (UDP_HEADER, Sum::Udp),
        };
        let Some(l4) = packet.get_mut(h.header_len..h.total_len) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if l4.len() < min {
            return Verdict::Drop(DropReason::Malformed);
        }
        let key = InboundKey {
            protocol: p,
            ext_port: read_u16(l4, 2),
            remote_addr: h.src,
            remote_port: read_u16(l4, 0),
        };
        if let Some(v) = self.inbound_limits(h, false) {
            // Only a packet of a live flow learns that it went nowhere.
            return match self.table.peek_inbound(now, &key) {
                Some(_) => v,
                None => Verdict::Drop(DropReason::NoMapping),
            };
        }
        let flags = if p == Protocol::Tcp {
            read_u8(l4, TCP_FLAGS_AT)
        } else {
            0
        };
        let (int_addr, int_port) = match self.table.inbound(now, &key, flags) {
            Ok(to) => to,
            Err(m) => return Verdict::Drop(m.into()),
        };
        rewrite_l4(l4, 2, int_port, sum, h.dst, int_addr);
        rewrite_ip(packet, false, h.dst, int_addr);
        Verdict::Forward
    }

    fn inbound_icmp(&mut self, now: u64, packet: &mut [u8], h: &Header) -> Verdict {
        let Some(l4) = packet.get_mut(h.header_len..h.total_len) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if l4.len() < ICMP_HEADER {
            return Verdict::Drop(DropReason::Malformed);
        }
        match read_u8(l4, 0) {
            ICMP_ECHO_REPLY => {
                let key = InboundKey {
                    protocol: Protocol::Icmp,
                    ext_port: read_u16(l4, ICMP_IDENT_AT),
                    remote_addr: h.src,
                    remote_port: 0,
                };
                if let Some(v) = self.inbound_limits(h, false) {
                    return match self.table.peek_inbound(now, &key) {
                        Some(_) => v,
                        None => Verdict::Drop(DropReason::NoMapping),
                    };
                }
                let (int_addr, int_id) = match self.table.inbound(now, &key, 0) {
                    Ok(to) => to,
                    Err(m) => return Verdict::Drop(m.into()),
                };
                rewrite_l4(l4, ICMP_IDENT_AT, int_id, Sum::Icmp, h.dst, int_addr);
                rewrite_ip(packet, false, h.dst, int_addr);
                Verdict::Forward
            }
            3 | 11 | 12 => {
                let v = self.inbound_icmp_error(now, packet, h);
                if v == Verdict::Forward {
                    bump(&mut self.counters.icmp_errors_in);
                }
                v
            }
            _ => Verdict::Drop(DropReason::Unsupported),
        }
    }

    /// An ICMP error about a packet that left through a flow: the quoted
    /// packet (ext:P -> remote) becomes int:p -> remote, and the error goes
    /// to the internal host.
    fn inbound_icmp_error(&mut self, now: u64, packet: &mut [u8], h: &Header) -> Verdict {
        let mut err = match icmp_error_view(packet, h) {
            Ok(e) => e,
            Err(v) => return v,
        };
        let q_src = err.quoted_src_addr();
        let q_dst = err.quoted_dst_addr();
        if q_src != self.external {
            return Verdict::Drop(DropReason::NoMapping);
        }
        let Some(p) = Protocol::from_ip(err.quoted_protocol()) else {
            return Verdict::Drop(DropReason::NoMapping);
        };
        let t = err.quoted_transport();
        let (key, port_at, sum) = match p {
            Protocol::Tcp | Protocol::Udp => (
                InboundKey {
                    protocol: p,
                    ext_port: read_u16(t, 0),
                    remote_addr: q_dst,
                    remote_port: read_u16(t, 2),
                },
                0,
                if p == Protocol::Tcp {
                    Sum::Tcp
                } else {
                    Sum::Udp
                },
            ),
            Protocol::Icmp => {
                // Only an echo request that went out can be quoted back.
                if read_u8(t, 0) != ICMP_ECHO_REQUEST {
                    return Verdict::Drop(DropReason::NoMapping);
                }
                (
                    InboundKey {
                        protocol: Protocol::Icmp,
                        ext_port: read_u16(t, ICMP_IDENT_AT),
                        remote_addr: q_dst,
                        remote_port: 0,
                    },
                    ICMP_IDENT_AT,
                    Sum::Icmp,
                )
            }
        };
        let Some((int_addr, int_port)) = self.table.peek_inbound(now, &key) else {
            return Verdict::Drop(DropReason::NoMapping);
        };
        if let Some(v) = self.inbound_limits(h, true) {
            return v;
        }
        rewrite_l4(
            err.quoted_transport_mut(),
            port_at,
            int_port,
            sum,
            q_src,
            int_addr,
        );
        {
            let mut q = err.quoted_packet_mut();
            let c = checksum::update_addr(q.checksum(), q_src, int_addr);
            q.set_src_addr(int_addr);
            q.set_checksum(c);
        }
        err.fill_checksum();
        rewrite_ip(packet, false, h.dst, int_addr);
        Verdict::Forward
    }

    // ---------------------------------------------------------- fragments

    /// A fragment other than the first: rewritten like its first fragment,
    /// if that was seen.
    fn later_fragment(
        &mut self,
        now: u64,
        packet: &mut [u8],
        h: &Header,
        dir: Direction,
    ) -> Verdict {
        if h.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let mtu = match dir {
            Direction::Outbound => self.external_mtu,
            Direction::Inbound => self.internal_mtu,
        };
        if h.total_len > usize::from(mtu) {
            return Verdict::Drop(DropReason::TooBig);
        }
        // RFC 1858: a TCP fragment at offset 8 could overwrite the flags.
        if h.proto == IpProtocol::Tcp && h.frag_offset < 16 {
            return Verdict::Drop(DropReason::Malformed);
        }
        let Some(to) = self.fragments.lookup(now, &h.fragment_key(dir)) else {
            return Verdict::Drop(DropReason::FragmentNoFirst);
        };
        match dir {
            Direction::Outbound => {
                rewrite_ip(packet, true, h.src, to);
                bump(&mut self.counters.fragments_out);
            }
            Direction::Inbound => {
                rewrite_ip(packet, false, h.dst, to);
                bump(&mut self.counters.fragments_in);
            }
        }
        Verdict::Forward
    }
}

#[cfg(test)]
mod tests;
