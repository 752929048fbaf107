//! IPv4 neighbor resolution state: the ARP cache and the frames waiting for
//! it.
//!
//! Both structures have a capacity fixed at compile time (const generics)
//! and never allocate. Time is the caller's `u64` nanosecond clock.

use core::net::Ipv4Addr;

use heapless::Vec;

use crate::wire::EthernetAddress;
use crate::NS_PER_SEC;

/// How long a resolved entry lives without being confirmed again.
pub const NEIGHBOR_LIFETIME_NS: u64 = 60 * NS_PER_SEC;
/// At most one ARP request per address per this interval.
pub const ARP_REQUEST_INTERVAL_NS: u64 = NS_PER_SEC;
/// An entry used for sending this close to its expiry asks for a refresh
/// (the interface then sends a unicast ARP request while still using it).
pub const REFRESH_WINDOW_NS: u64 = 5 * NS_PER_SEC;
/// Frames wait this long for their next hop to resolve, then are dropped.
pub const RESOLUTION_TIMEOUT_NS: u64 = 3 * NS_PER_SEC;
/// The largest frame the pending queue stores: 1500-byte MTU plus the
/// Ethernet header.
pub const MAX_FRAME_LEN: usize = 1514;

#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: Ipv4Addr,
    mac: EthernetAddress,
    expires_at: u64,
    last_used: u64,
}

#[derive(Debug, Clone, Copy)]
struct Request {
    ip: Ipv4Addr,
    sent_at: u64,
}

/// A cache hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: EthernetAddress,
    /// The entry expires within [`REFRESH_WINDOW_NS`]: time to re-ARP.
    pub refresh_due: bool,
}

/// A fixed-capacity IPv4 -> Ethernet cache with per-entry expiry, eviction
/// of the least recently used entry when full, and a per-address rate limit
/// for ARP requests.
///
/// Entries are kept unordered in a small vector: lookups scan only the live
/// entries, which for a bridge means a gateway and a handful of hosts.
#[derive(Debug, Clone)]
pub struct NeighborCache<const N: usize = 64> {
    entries: Vec<Entry, N>,
    requests: Vec<Request, N>,
    lifetime: u64,
}

impl<const N: usize> Default for NeighborCache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> NeighborCache<N> {
    /// An empty cache with the default 60 s lifetime.
    pub const fn new() -> Self {
        Self::with_lifetime(NEIGHBOR_LIFETIME_NS)
    }

    /// An empty cache whose entries live `lifetime_ns`.
    pub const fn with_lifetime(lifetime_ns: u64) -> Self {
        NeighborCache {
            entries: Vec::new(),
            requests: Vec::new(),
            lifetime: lifetime_ns,
        }
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of entries stored (expired ones included until they are
    /// looked up, purged or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, ip: Ipv4Addr) -> Option<usize> {
        self.entries.iter().position(|e| e.ip == ip)
    }

    fn entry_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.ip == ip)
    }

    /// The MAC of `ip` if known and not expired; marks the entry used. An
    /// expired entry is removed.
    pub fn lookup(&mut self, ip: Ipv4Addr, now: u64) -> Option<Neighbor> {
        let pos = self.position(ip)?;
        let entry = self.entries.get_mut(pos)?;
        if now >= entry.expires_at {
            self.entries.swap_remove(pos);
            return None;
        }
        entry.last_used = now;
        Some(Neighbor {
            mac: entry.mac,
            refresh_due: entry.expires_at.saturating_sub(now) <= REFRESH_WINDOW_NS,
        })
    }

    /// Like [`NeighborCache::lookup`] without touching the entry.
    pub fn peek(&self, ip: Ipv4Addr, now: u64) -> Option<EthernetAddress> {
        self.entries
            .iter()
            .find(|e| e.ip == ip && now < e.expires_at)
            .map(|e| e.mac)
    }

    /// Inserts or replaces the entry for `ip`, valid for a full lifetime.
    /// When the cache is full, an expired entry or else the least recently
    /// used one makes room.
    pub fn fill(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: u64) {
        let expires_at = now.saturating_add(self.lifetime);
        // A resolved address no longer needs its request record.
        self.requests.retain(|r| r.ip != ip);
        if let Some(e) = self.entry_mut(ip) {
            e.mac = mac;
            e.expires_at = expires_at;
            e.last_used = now;
            return;
        }
        let entry = Entry {
            ip,
            mac,
            expires_at,
            last_used: now,
        };
        if self.entries.is_full() {
            self.purge(now);
        }
        if self.entries.is_full() {
            let lru = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            if let Some(i) = lru {
                self.entries.swap_remove(i);
            }
        }
        // Cannot fail after the eviction above (unless N is 0).
        let _ = self.entries.push(entry);
    }

    /// RFC 826's "merge": if `ip` is already known, records `mac` for it
    /// and renews it. Returns whether an entry existed.
    pub fn update_existing(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: u64) -> bool {
        if self.position(ip).is_some() {
            self.fill(ip, mac, now);
            true
        } else {
            false
        }
    }

    /// Traffic from `ip` arrived from `mac`: renews the entry if it holds
    /// that same MAC (it never changes a MAC: ARP does). Returns whether the
    /// entry was renewed.
    pub fn confirm(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: u64) -> bool {
        let lifetime = self.lifetime;
        match self.entry_mut(ip) {
            Some(e) if e.mac == mac => {
                e.expires_at = now.saturating_add(lifetime);
                true
            }
            _ => false,
        }
    }

    /// Forgets `ip`. Returns whether it was known.
    pub fn remove(&mut self, ip: Ipv4Addr) -> bool {
        match self.position(ip) {
            Some(pos) => {
                self.entries.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// Drops every expired entry.
    pub fn purge(&mut self, now: u64) {
        self.entries.retain(|e| now < e.expires_at);
    }

    /// Forgets everything, request records included.
    pub fn flush(&mut self) {
        self.entries.clear();
        self.requests.clear();
    }

    /// The live entries: `(ip, mac, expires_at)`.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, EthernetAddress, u64)> + '_ {
        self.entries.iter().map(|e| (e.ip, e.mac, e.expires_at))
    }

    /// The ARP request rate limit: returns `true` (and records a request
    /// sent now) when no request for `ip` was recorded in the last
    /// [`ARP_REQUEST_INTERVAL_NS`]; `false` otherwise.
    pub fn request_allowed(&mut self, ip: Ipv4Addr, now: u64) -> bool {
        if let Some(r) = self.requests.iter_mut().find(|r| r.ip == ip) {
            let recent = now >= r.sent_at && now.wrapping_sub(r.sent_at) < ARP_REQUEST_INTERVAL_NS;
            if recent {
                return false;
            }
            r.sent_at = now;
            return true;
        }
        let record = Request { ip, sent_at: now };
        if self.requests.is_full() {
            let oldest = self
                .requests
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.sent_at)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                self.requests.swap_remove(i);
            }
        }
        let _ = self.requests.push(record);
        true
    }

    /// When [`NeighborCache::request_allowed`] will next allow a request
    /// for `ip` (`None`: it already does).
    pub fn next_request_at(&self, ip: Ipv4Addr, now: u64) -> Option<u64> {
        self.requests
            .iter()
            .find(|r| r.ip == ip)
            .map(|r| r.sent_at.saturating_add(ARP_REQUEST_INTERVAL_NS))
            .filter(|&t| t > now)
    }
}

/// One stored frame.
#[derive(Clone)]
struct Slot {
    used: bool,
    len: usize,
    next_hop: Ipv4Addr,
    /// When resolution of `next_hop` started (the first frame queued for it).
    since: u64,
    /// Queue order.
    seq: u64,
    data: [u8; MAX_FRAME_LEN],
}

impl Slot {
    const EMPTY: Slot = Slot {
        used: false,
        len: 0,
        next_hop: Ipv4Addr::UNSPECIFIED,
        since: 0,
        seq: 0,
        data: [0; MAX_FRAME_LEN],
    };
}

/// What [`PendingQueue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored in a free slot.
    Queued,
    /// Stored after dropping the oldest frame (counted as an overflow).
    QueuedDroppingOldest,
    /// Nothing stored: the builder wrote no frame (returned 0 or more than
    /// [`MAX_FRAME_LEN`]). If the queue was full, the oldest frame is gone
    /// all the same.
    Nothing,
}

/// A bounded queue of frames waiting for their next hop's MAC, stored in
/// fixed arrays (`N` frames of up to [`MAX_FRAME_LEN`] bytes).
///
/// When full, a new frame replaces the oldest one. Frames whose next hop
/// has been unresolved for [`RESOLUTION_TIMEOUT_NS`] are dropped by
/// [`PendingQueue::expire`]. Both kinds of loss are counted.
#[derive(Clone)]
pub struct PendingQueue<const N: usize = 16> {
    slots: [Slot; N],
    used: usize,
    next_seq: u64,
    timeout: u64,
    dropped_overflow: u64,
    dropped_timeout: u64,
}

/// A summary: the frames themselves are not printed.
impl<const N: usize> core::fmt::Debug for PendingQueue<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingQueue")
            .field("len", &self.used)
            .field("capacity", &N)
            .field("timeout", &self.timeout)
            .field("dropped_overflow", &self.dropped_overflow)
            .field("dropped_timeout", &self.dropped_timeout)
            .finish()
    }
}

impl<const N: usize> Default for PendingQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PendingQueue<N> {
    /// An empty queue with the default 3 s resolution timeout.
    pub const fn new() -> Self {
        Self::with_timeout(RESOLUTION_TIMEOUT_NS)
    }

    pub const fn with_timeout(timeout_ns: u64) -> Self {
        PendingQueue {
            slots: [Slot::EMPTY; N],
            used: 0,
            next_seq: 0,
            timeout: timeout_ns,
            dropped_overflow: 0,
            dropped_timeout: 0,
        }
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Frames dropped to make room, since creation.
    pub fn dropped_overflow(&self) -> u64 {
        self.dropped_overflow
    }

    /// Frames dropped because their next hop did not resolve in time.
    pub fn dropped_timeout(&self) -> u64 {
        self.dropped_timeout
    }

    fn free(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            if s.used {
                s.used = false;
                s.len = 0;
                self.used = self.used.saturating_sub(1);
            }
        }
    }

    /// Queues a frame for `next_hop`: `build` writes it into a
    /// [`MAX_FRAME_LEN`]-byte buffer and returns its length.
    pub fn enqueue<F>(&mut self, next_hop: Ipv4Addr, now: u64, build: F) -> Enqueued
    where
        F: FnOnce(&mut [u8]) -> usize,
    {
        // Resolution of this next hop may already be under way.
        let since = self
            .slots
            .iter()
            .filter(|s| s.used && s.next_hop == next_hop)
            .map(|s| s.since)
            .min()
            .unwrap_or(now);
        let mut evicted = false;
        let index = match self.slots.iter().position(|s| !s.used) {
            Some(i) => i,
            None => {
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.seq)
                    .map(|(i, _)| i);
                let Some(i) = oldest else {
                    return Enqueued::Nothing; // N == 0
                };
                self.free(i);
                self.dropped_overflow = self.dropped_overflow.wrapping_add(1);
                evicted = true;
                i
            }
        };
        let seq = self.next_seq;
        let Some(slot) = self.slots.get_mut(index) else {
            return Enqueued::Nothing;
        };
        let len = build(&mut slot.data);
        if len == 0 || len > MAX_FRAME_LEN {
            return Enqueued::Nothing;
        }
        slot.used = true;
        slot.len = len;
        slot.next_hop = next_hop;
        slot.since = since;
        slot.seq = seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.used = self.used.saturating_add(1);
        if evicted {
            Enqueued::QueuedDroppingOldest
        } else {
            Enqueued::Queued
        }
    }

    /// Queues a copy of `frame` (see [`PendingQueue::enqueue`]).
    pub fn push(&mut self, next_hop: Ipv4Addr, now: u64, frame: &[u8]) -> Enqueued {
        self.enqueue(next_hop, now, |buf| match buf.get_mut(..frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                frame.len()
            }
            None => 0,
        })
    }

    /// Whether frames wait for `next_hop`.
    pub fn is_waiting_for(&self, next_hop: Ipv4Addr) -> bool {
        self.slots.iter().any(|s| s.used && s.next_hop == next_hop)
    }

    /// The next hops that frames wait for (one item per frame: an address
    /// may repeat).
    pub fn waiting(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.slots.iter().filter(|s| s.used).map(|s| s.next_hop)
    }

    /// Removes the frames waiting for `next_hop` and hands each, oldest
    /// first and writable (to fill in the destination MAC), to `each`.
    /// Returns how many were released.
    pub fn release<F>(&mut self, next_hop: Ipv4Addr, mut each: F) -> usize
    where
        F: FnMut(&mut [u8]),
    {
        let mut released = 0usize;
        while let Some(i) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used && s.next_hop == next_hop)
            .min_by_key(|(_, s)| s.seq)
            .map(|(i, _)| i)
        {
            if let Some(slot) = self.slots.get_mut(i) {
                let len = slot.len;
                if let Some(frame) = slot.data.get_mut(..len) {
                    each(frame);
                }
            }
            self.free(i);
            released = released.saturating_add(1);
        }
        released
    }

    /// Drops the frames whose next hop has been unresolved for the
    /// timeout. Returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut dropped = 0usize;
        for i in 0..N {
            let stale = self
                .slots
                .get(i)
                .is_some_and(|s| s.used && now.saturating_sub(s.since) >= self.timeout);
            if stale {
                self.free(i);
                dropped = dropped.saturating_add(1);
            }
        }
        self.dropped_timeout = self.dropped_timeout.wrapping_add(dropped as u64);
        dropped
    }

    /// When the next frame times out, if any waits.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.used)
            .map(|s| s.since.saturating_add(self.timeout))
            .min()
    }

    /// Drops everything (not counted).
    pub fn clear(&mut self) {
        for i in 0..N {
            self.free(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_SEC;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn mac(last: u8) -> EthernetAddress {
        EthernetAddress::new(0x00, 0x16, 0x3e, 0, 0, last)
    }

    #[test]
    fn fill_and_lookup() {
        let mut c: NeighborCache<4> = NeighborCache::new();
        assert!(c.is_empty());
        assert_eq!(c.lookup(ip(1), 0), None);
        c.fill(ip(1), mac(1), 0);
        assert_eq!(
            c.lookup(ip(1), S),
            Some(Neighbor {
                mac: mac(1),
                refresh_due: false
            })
        );
        assert_eq!(c.peek(ip(1), S), Some(mac(1)));
        c.fill(ip(1), mac(9), 2 * S);
        assert_eq!(c.lookup(ip(1), 3 * S).map(|n| n.mac), Some(mac(9)));
        assert_eq!(c.len(), 1);
        assert_eq!(c.capacity(), 4);
        assert!(c.remove(ip(1)));
        assert!(!c.remove(ip(1)));
    }

    #[test]
    fn expiry() {
        let mut c: NeighborCache<4> = NeighborCache::new();
        c.fill(ip(1), mac(1), 10 * S);
        assert!(c.lookup(ip(1), 10 * S + NEIGHBOR_LIFETIME_NS - 1).is_some());
        assert_eq!(c.peek(ip(1), 10 * S + NEIGHBOR_LIFETIME_NS), None);
        assert_eq!(c.lookup(ip(1), 10 * S + NEIGHBOR_LIFETIME_NS), None);
        assert!(c.is_empty(), "expired entry is removed on lookup");
    }

    #[test]
    fn refresh_due_near_expiry() {
        let mut c: NeighborCache<4> = NeighborCache::new();
        c.fill(ip(1), mac(1), 0);
        let early = c.lookup(ip(1), 50 * S).unwrap();
        assert!(!early.refresh_due);
        let late = c.lookup(ip(1), 56 * S).unwrap();
        assert!(late.refresh_due);
    }

    #[test]
    fn confirm_renews_only_same_mac() {
        let mut c: NeighborCache<4> = NeighborCache::new();
        c.fill(ip(1), mac(1), 0);
        assert!(!c.confirm(ip(1), mac(2), 50 * S));
        assert!(c.confirm(ip(1), mac(1), 50 * S));
        assert!(!c.confirm(ip(2), mac(2), 50 * S));
        assert_eq!(c.lookup(ip(1), 100 * S).map(|n| n.mac), Some(mac(1)));
        assert_eq!(c.lookup(ip(1), 110 * S), None);
    }

    #[test]
    fn update_existing_is_merge_only() {
        let mut c: NeighborCache<4> = NeighborCache::new();
        assert!(!c.update_existing(ip(1), mac(1), 0));
        assert!(c.is_empty());
        c.fill(ip(1), mac(1), 0);
        assert!(c.update_existing(ip(1), mac(2), S));
        assert_eq!(c.peek(ip(1), S), Some(mac(2)));
    }

    #[test]
    fn eviction_prefers_expired_then_lru() {
        let mut c = NeighborCache::<3>::with_lifetime(10 * S);
        c.fill(ip(1), mac(1), 0);
        c.fill(ip(2), mac(2), 5 * S);
        c.fill(ip(3), mac(3), 6 * S);
        // ip(1) expired at 10 s: it goes first, although ip(2) is used less.
        c.lookup(ip(3), 11 * S);
        c.fill(ip(4), mac(4), 12 * S);
        assert_eq!(c.len(), 3);
        assert_eq!(c.peek(ip(1), 12 * S), None);
        // Now full of live entries: the least recently used (ip(2)) goes.
        c.lookup(ip(3), 13 * S);
        c.lookup(ip(4), 13 * S);
        c.fill(ip(5), mac(5), 14 * S);
        assert_eq!(c.peek(ip(2), 14 * S), None);
        for n in [3, 4, 5] {
            assert_eq!(c.peek(ip(n), 14 * S), Some(mac(n)));
        }
        assert_eq!(c.iter().count(), 3);
        c.flush();
        assert!(c.is_empty());
    }

    #[test]
    fn request_rate_limit() {
        let mut c: NeighborCache<2> = NeighborCache::new();
        assert!(c.request_allowed(ip(1), 0));
        assert!(!c.request_allowed(ip(1), 1));
        assert!(!c.request_allowed(ip(1), S - 1));
        assert_eq!(c.next_request_at(ip(1), S - 1), Some(S));
        assert!(c.request_allowed(ip(2), S - 1), "per address");
        assert!(c.request_allowed(ip(1), S));
        assert!(!c.request_allowed(ip(1), S + S / 2));
        assert!(c.request_allowed(ip(1), 2 * S));
        assert_eq!(c.next_request_at(ip(3), 0), None);
        // Full record table: the oldest record is replaced.
        assert!(c.request_allowed(ip(3), 2 * S));
        assert!(!c.request_allowed(ip(3), 2 * S + 1));
        // Resolution clears the record.
        c.fill(ip(3), mac(3), 2 * S + 2);
        assert!(c.request_allowed(ip(3), 2 * S + 3));
    }

    #[test]
    fn zero_capacity_cache_is_inert() {
        let mut c: NeighborCache<0> = NeighborCache::new();
        c.fill(ip(1), mac(1), 0);
        assert_eq!(c.lookup(ip(1), 0), None);
        assert!(c.request_allowed(ip(1), 0));
        let mut q: PendingQueue<0> = PendingQueue::new();
        assert_eq!(q.push(ip(1), 0, &[1, 2, 3]), Enqueued::Nothing);
    }

    fn frame(tag: u8, len: usize) -> std::vec::Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn queue_and_release_in_order() {
        let mut q: PendingQueue<4> = PendingQueue::new();
        assert_eq!(q.push(ip(1), 0, &frame(1, 60)), Enqueued::Queued);
        assert_eq!(q.push(ip(2), 0, &frame(2, 70)), Enqueued::Queued);
        assert_eq!(q.push(ip(1), 1, &frame(3, MAX_FRAME_LEN)), Enqueued::Queued);
        assert_eq!(q.len(), 3);
        assert!(q.is_waiting_for(ip(1)));
        let mut seen = std::vec::Vec::new();
        let n = q.release(ip(1), |f| {
            seen.push((f[0], f.len()));
            f[0] = 0xee;
        });
        assert_eq!(n, 2);
        assert_eq!(seen, [(1, 60), (3, MAX_FRAME_LEN)]);
        assert_eq!(q.len(), 1);
        assert!(!q.is_waiting_for(ip(1)));
        assert_eq!(q.waiting().collect::<std::vec::Vec<_>>(), [ip(2)]);
        assert_eq!(q.release(ip(1), |_| panic!("nothing left")), 0);
    }

    #[test]
    fn oversized_or_empty_frames_are_refused() {
        let mut q: PendingQueue<2> = PendingQueue::new();
        assert_eq!(
            q.push(ip(1), 0, &frame(1, MAX_FRAME_LEN + 1)),
            Enqueued::Nothing
        );
        assert_eq!(q.push(ip(1), 0, &[]), Enqueued::Nothing);
        assert_eq!(
            q.enqueue(ip(1), 0, |_| MAX_FRAME_LEN + 1),
            Enqueued::Nothing
        );
        assert!(q.is_empty());
    }

    #[test]
    fn overflow_drops_oldest() {
        let mut q: PendingQueue<16> = PendingQueue::new();
        for i in 0..16u8 {
            assert_eq!(
                q.push(ip(i % 3), u64::from(i), &frame(i, 100)),
                Enqueued::Queued
            );
        }
        assert_eq!(
            q.push(ip(7), 100, &frame(16, 100)),
            Enqueued::QueuedDroppingOldest
        );
        assert_eq!(
            q.push(ip(7), 101, &frame(17, 100)),
            Enqueued::QueuedDroppingOldest
        );
        assert_eq!(q.dropped_overflow(), 2);
        assert_eq!(q.len(), 16);
        let mut tags = std::vec::Vec::new();
        for a in [0, 1, 2, 7] {
            q.release(ip(a), |f| tags.push(f[0]));
        }
        tags.sort();
        assert_eq!(
            tags,
            (2..18).collect::<std::vec::Vec<u8>>(),
            "frames 0 and 1 were dropped"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn resolution_timeout_counts_from_first_frame() {
        let mut q: PendingQueue<4> = PendingQueue::new();
        q.push(ip(1), 0, &frame(1, 60));
        q.push(ip(1), 2 * S, &frame(2, 60));
        q.push(ip(2), 2 * S, &frame(3, 60));
        assert_eq!(q.next_deadline(), Some(3 * S));
        assert_eq!(q.expire(3 * S - 1), 0);
        // Resolution of ip(1) started at 0: both its frames go at 3 s.
        assert_eq!(q.expire(3 * S), 2);
        assert_eq!(q.dropped_timeout(), 2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_deadline(), Some(5 * S));
        assert_eq!(q.expire(5 * S), 1);
        assert_eq!(q.next_deadline(), None);
        // A new frame for ip(1) starts a new resolution.
        q.push(ip(1), 10 * S, &frame(4, 60));
        assert_eq!(q.next_deadline(), Some(13 * S));
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.dropped_timeout(), 3);
    }
}
