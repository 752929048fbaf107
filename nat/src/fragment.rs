//! A small bounded cache of the translation decided for the first fragment
//! of a datagram, so that its later fragments (which carry no transport
//! header) follow it.
//!
//! Entries are keyed by the datagram's identity as received (source,
//! destination, identification, protocol) and the direction, and hold the
//! address to write: the external address for outbound datagrams, the
//! internal host for inbound ones. They live for a short while (the
//! reassembly window); when the cache is full the entry closest to its end
//! is replaced. A later fragment that finds nothing is dropped by the
//! caller, as is one that arrives before its first fragment.

use core::net::Ipv4Addr;

use crate::NS_PER_SEC;

/// The default number of entries.
pub const DEFAULT_ENTRIES: usize = 64;
/// The default entry lifetime: 10 s.
pub const DEFAULT_LIFETIME_NS: u64 = 10 * NS_PER_SEC;

/// Which way a datagram crosses the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From an internal host to the outside.
    Outbound,
    /// From the outside to the external address.
    Inbound,
}

/// A datagram's identity as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub direction: Direction,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
    pub protocol: u8,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragmentKey,
    addr: Ipv4Addr,
    expires: u64,
}

/// The fragment cache. `N` entries, no allocation.
#[derive(Debug, Clone)]
pub struct FragmentCache<const N: usize = DEFAULT_ENTRIES> {
    entries: [Option<Entry>; N],
    lifetime: u64,
    evicted: u64,
}

impl<const N: usize> FragmentCache<N> {
    /// An empty cache whose entries live `lifetime_ns`.
    pub const fn new(lifetime_ns: u64) -> Self {
        FragmentCache {
            entries: [None; N],
            lifetime: lifetime_ns,
            evicted: 0,
        }
    }

    /// Remembers that later fragments of `key` get `addr`; refreshes an
    /// existing entry. A full cache replaces its oldest entry.
    pub fn insert(&mut self, now: u64, key: FragmentKey, addr: Ipv4Addr) {
        let expires = now.saturating_add(self.lifetime);
        let mut victim: Option<usize> = None;
        let mut victim_expires = u64::MAX;
        for (i, slot) in self.entries.iter().enumerate() {
            match slot {
                Some(e) if e.key == key => {
                    victim = Some(i);
                    break;
                }
                Some(e) if e.expires > now => {
                    if e.expires < victim_expires {
                        victim_expires = e.expires;
                        victim = Some(i);
                    }
                }
                // Free or expired: as good as it gets.
                _ => {
                    victim_expires = 0;
                    victim = Some(i);
                }
            }
        }
        let Some(i) = victim else {
            return;
        };
        if let Some(slot) = self.entries.get_mut(i) {
            if slot.is_some_and(|e| e.key != key && e.expires > now) {
                self.evicted = self.evicted.wrapping_add(1);
            }
            *slot = Some(Entry { key, addr, expires });
        }
    }

    /// The address for a later fragment of `key`, if its first fragment
    /// was seen recently.
    pub fn lookup(&self, now: u64, key: &FragmentKey) -> Option<Ipv4Addr> {
        self.entries
            .iter()
            .flatten()
            .find(|e| e.key == *key && e.expires > now)
            .map(|e| e.addr)
    }

    /// Live entries.
    pub fn len(&self, now: u64) -> usize {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.expires > now)
            .count()
    }

    pub fn is_empty(&self, now: u64) -> bool {
        self.len(now) == 0
    }

    /// Live entries replaced to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn clear(&mut self) {
        self.entries = [None; N];
    }
}

impl<const N: usize> Default for FragmentCache<N> {
    fn default() -> Self {
        Self::new(DEFAULT_LIFETIME_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragmentKey {
        FragmentKey {
            direction: Direction::Inbound,
            src: Ipv4Addr::new(203, 0, 113, 9),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            ident,
            protocol: 17,
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 252, 7);

    #[test]
    fn insert_lookup_expire() {
        let mut c: FragmentCache<4> = FragmentCache::new(10);
        assert!(c.lookup(0, &key(1)).is_none());
        c.insert(0, key(1), A);
        assert_eq!(c.lookup(9, &key(1)), Some(A));
        assert_eq!(c.len(9), 1);
        assert!(c.lookup(10, &key(1)).is_none());
        assert!(c.is_empty(10));
        let mut other = key(1);
        other.direction = Direction::Outbound;
        assert!(c.lookup(0, &other).is_none());
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut c: FragmentCache<4> = FragmentCache::new(100);
        for i in 0..4u16 {
            c.insert(u64::from(i), key(i), A);
        }
        assert_eq!(c.len(4), 4);
        c.insert(5, key(99), A);
        assert_eq!(c.len(5), 4);
        assert_eq!(c.evicted(), 1);
        assert!(c.lookup(5, &key(0)).is_none(), "oldest replaced");
        assert!(c.lookup(5, &key(1)).is_some());
        assert!(c.lookup(5, &key(99)).is_some());
        // Refreshing an existing key does not take another slot.
        c.insert(6, key(99), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(c.len(6), 4);
        assert_eq!(c.lookup(6, &key(99)), Some(Ipv4Addr::new(1, 2, 3, 4)));
        // Expired entries are reused before live ones are evicted.
        c.insert(102, key(200), A);
        assert_eq!(c.evicted(), 1);
        c.clear();
        assert!(c.is_empty(0));
    }
}
