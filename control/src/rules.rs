//! The gatekeeper rules as the management API knows them: a fixed-capacity
//! store over storage the caller provides, kept in id order.
//!
//! A rule lets one external client (`ip`, any source port) reach one
//! internal endpoint (`dst_ip:dst_port`) through one external port of the
//! bridge, for TCP or UDP, optionally until a deadline. Rules are unique
//! by (client, internal endpoint, protocol) and by (protocol, external
//! port). Ids are assigned in increasing order from 1 and never reused
//! while the bridge runs.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

use core::fmt;
use core::net::Ipv4Addr;

/// Nanoseconds per second, for the `u64` monotonic clock.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The protocol of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Inverse of [`Proto::name`], ASCII case-insensitive.
    pub fn from_name(s: &str) -> Option<Proto> {
        if s.eq_ignore_ascii_case("tcp") {
            Some(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Some(Proto::Udp)
        } else {
            None
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Proto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What a rule allows: `client` (any port) to `int_addr:int_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    pub client: Ipv4Addr,
    pub int_addr: Ipv4Addr,
    pub int_port: u16,
    pub proto: Proto,
}

/// A rule in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// 1 and up; 0 marks an unused slot.
    pub id: u32,
    pub spec: RuleSpec,
    /// The external port on the bridge's external address.
    pub ext_port: u16,
    /// Deadline on the kernel's monotonic clock, if the rule has a TTL.
    pub expires_ns: Option<u64>,
    /// The same deadline in Unix seconds, as persisted (a restarted bridge
    /// has a new monotonic clock); `None` without a TTL or a wall clock.
    pub expires_unix: Option<u64>,
}

impl Rule {
    /// An unused slot (to initialise storage).
    pub const EMPTY: Rule = Rule {
        id: 0,
        spec: RuleSpec {
            client: Ipv4Addr::UNSPECIFIED,
            int_addr: Ipv4Addr::UNSPECIFIED,
            int_port: 0,
            proto: Proto::Tcp,
        },
        ext_port: 0,
        expires_ns: None,
        expires_unix: None,
    };

    /// Whole seconds left (rounded up), `None` without a TTL.
    pub fn expires_in(&self, now_ns: u64) -> Option<u64> {
        self.expires_ns.map(|e| {
            let left = e.saturating_sub(now_ns);
            left.div_ceil(NS_PER_SEC)
        })
    }

    /// Whether the rule's deadline has passed.
    pub fn is_expired(&self, now_ns: u64) -> bool {
        self.expires_ns.is_some_and(|e| e <= now_ns)
    }
}

impl Default for Rule {
    fn default() -> Self {
        Rule::EMPTY
    }
}

/// The store has no free slot, or no id left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreFull;

/// Why [`RuleStore::restore`] refused a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestoreError {
    /// No free slot.
    Full,
    /// Id 0 or `u32::MAX`.
    InvalidId,
    /// A rule with this id is already there.
    DuplicateId,
    /// A rule for the same client, endpoint and protocol is already there.
    DuplicateSpec,
    /// A rule already holds this protocol and external port.
    DuplicatePort,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestoreError::Full => "rule table full",
            RestoreError::InvalidId => "invalid rule id",
            RestoreError::DuplicateId => "another rule has this id",
            RestoreError::DuplicateSpec => "another rule has the same client, endpoint and protocol",
            RestoreError::DuplicatePort => "another rule holds this external port",
        })
    }
}

/// Rules in id order, in caller-provided slots (their number is the
/// capacity: the configuration's `rules=`).
pub struct RuleStore<'a> {
    slots: &'a mut [Rule],
    len: usize,
    next_id: u32,
}

impl fmt::Debug for RuleStore<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleStore")
            .field("len", &self.len)
            .field("capacity", &self.slots.len())
            .field("next_id", &self.next_id)
            .finish()
    }
}

impl<'a> RuleStore<'a> {
    /// An empty store over `slots` (their contents are ignored).
    pub fn new(slots: &'a mut [Rule]) -> Self {
        RuleStore {
            slots,
            len: 0,
            next_id: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.slots.len()
    }

    /// The rules, in id order.
    pub fn as_slice(&self) -> &[Rule] {
        self.slots.get(..self.len).unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.as_slice().iter()
    }

    /// The rule with this id.
    pub fn get(&self, id: u32) -> Option<&Rule> {
        self.index_of_id(id).and_then(|i| self.slots.get(i))
    }

    /// The rule for this client, endpoint and protocol.
    pub fn find_spec(&self, spec: &RuleSpec) -> Option<&Rule> {
        self.iter().find(|r| r.spec == *spec)
    }

    /// The rule on this external port.
    pub fn find_port(&self, proto: Proto, ext_port: u16) -> Option<&Rule> {
        self.iter()
            .find(|r| r.spec.proto == proto && r.ext_port == ext_port)
    }

    fn index_of_id(&self, id: u32) -> Option<usize> {
        self.as_slice().binary_search_by_key(&id, |r| r.id).ok()
    }

    /// The id the next [`Self::push`] will assign.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Adds a rule with a new id (returned).
    pub fn push(
        &mut self,
        spec: RuleSpec,
        ext_port: u16,
        expires_ns: Option<u64>,
        expires_unix: Option<u64>,
    ) -> Result<u32, StoreFull> {
        let id = self.next_id;
        let next = id.checked_add(1).ok_or(StoreFull)?;
        let slot = self.slots.get_mut(self.len).ok_or(StoreFull)?;
        *slot = Rule {
            id,
            spec,
            ext_port,
            expires_ns,
            expires_unix,
        };
        self.len = self.len.saturating_add(1);
        self.next_id = next;
        Ok(id)
    }

    /// Puts back a rule read from the persistent store, keeping its id
    /// (ids assigned later continue above the highest one restored).
    pub fn restore(&mut self, rule: Rule) -> Result<(), RestoreError> {
        if rule.id == 0 || rule.id == u32::MAX {
            return Err(RestoreError::InvalidId);
        }
        if self.get(rule.id).is_some() {
            return Err(RestoreError::DuplicateId);
        }
        if self.find_spec(&rule.spec).is_some() {
            return Err(RestoreError::DuplicateSpec);
        }
        if self.find_port(rule.spec.proto, rule.ext_port).is_some() {
            return Err(RestoreError::DuplicatePort);
        }
        self.insert_restored(rule)
    }

    /// [`Self::restore`] without the (linear) duplicate checks of the spec
    /// and port, for a caller that made them already.
    pub(crate) fn insert_restored(&mut self, rule: Rule) -> Result<(), RestoreError> {
        if rule.id == 0 || rule.id == u32::MAX {
            return Err(RestoreError::InvalidId);
        }
        if self.is_full() {
            return Err(RestoreError::Full);
        }
        let at = self.as_slice().partition_point(|r| r.id < rule.id);
        if self.as_slice().get(at).is_some_and(|r| r.id == rule.id) {
            return Err(RestoreError::DuplicateId);
        }
        if at < self.len {
            self.slots.copy_within(at..self.len, at.saturating_add(1));
        }
        let slot = self.slots.get_mut(at).ok_or(RestoreError::Full)?;
        *slot = rule;
        self.len = self.len.saturating_add(1);
        if rule.id >= self.next_id {
            self.next_id = rule.id.saturating_add(1);
        }
        Ok(())
    }

    /// Makes ids up to `id` unavailable to [`Self::push`] (ids the
    /// persistent store uses for documents that could not be restored).
    pub fn skip_ids_through(&mut self, id: u32) {
        if id >= self.next_id {
            self.next_id = id.saturating_add(1);
        }
    }

    /// Changes a rule's deadline; whether it exists.
    pub fn set_expiry(
        &mut self,
        id: u32,
        expires_ns: Option<u64>,
        expires_unix: Option<u64>,
    ) -> bool {
        match self.index_of_id(id).and_then(|i| self.slots.get_mut(i)) {
            Some(r) => {
                r.expires_ns = expires_ns;
                r.expires_unix = expires_unix;
                true
            }
            None => false,
        }
    }

    /// Removes the rule with this id and returns it.
    pub fn remove(&mut self, id: u32) -> Option<Rule> {
        let i = self.index_of_id(id)?;
        let rule = *self.slots.get(i)?;
        let after = i.saturating_add(1);
        if after < self.len {
            self.slots.copy_within(after..self.len, i);
        }
        self.len = self.len.saturating_sub(1);
        Some(rule)
    }

    /// Removes, in one pass, up to `max` rules for which `remove` returns
    /// true (it is called on rules in id order until `max` were removed);
    /// returns how many went.
    pub fn remove_where(&mut self, max: usize, mut remove: impl FnMut(&Rule) -> bool) -> usize {
        let mut kept = 0usize;
        let mut removed = 0usize;
        for i in 0..self.len {
            let Some(rule) = self.slots.get(i).copied() else {
                break;
            };
            if removed < max && remove(&rule) {
                removed = removed.saturating_add(1);
                continue;
            }
            if kept != i {
                if let Some(dst) = self.slots.get_mut(kept) {
                    *dst = rule;
                }
            }
            kept = kept.saturating_add(1);
        }
        self.len = kept;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: u8) -> RuleSpec {
        RuleSpec {
            client: Ipv4Addr::new(203, 0, 113, n),
            int_addr: Ipv4Addr::new(192, 168, 252, 10),
            int_port: 22,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn push_find_remove() {
        let mut slots = [Rule::EMPTY; 4];
        let mut s = RuleStore::new(&mut slots);
        assert!(s.is_empty());
        for n in 1..=4 {
            assert_eq!(
                s.push(spec(n), 40000 + u16::from(n), None, None),
                Ok(u32::from(n))
            );
        }
        assert!(s.is_full());
        assert_eq!(s.push(spec(9), 1, None, None), Err(StoreFull));
        assert_eq!(s.find_spec(&spec(3)).unwrap().id, 3);
        assert_eq!(s.find_port(Proto::Tcp, 40002).unwrap().id, 2);
        assert_eq!(s.find_port(Proto::Udp, 40002), None);
        assert_eq!(s.remove(2).unwrap().ext_port, 40002);
        assert_eq!(s.remove(2), None);
        assert_eq!(
            s.iter().map(|r| r.id).collect::<std::vec::Vec<_>>(),
            [1, 3, 4]
        );
        assert_eq!(s.push(spec(2), 40002, Some(5), Some(1_800_000_005)), Ok(5));
        assert_eq!(s.get(5).unwrap().expires_ns, Some(5));
        assert!(s.set_expiry(5, None, None));
        assert!(!s.set_expiry(2, None, None));
        assert_eq!(s.get(5).unwrap().expires_ns, None);
        assert_eq!(s.get(0), None);
    }

    #[test]
    fn remove_where_bounded() {
        let mut slots = [Rule::EMPTY; 10];
        let mut s = RuleStore::new(&mut slots);
        for n in 0..10 {
            s.push(spec(n), 100 + u16::from(n), Some(u64::from(n)), Some(u64::from(n)))
                .unwrap();
        }
        assert_eq!(s.remove_where(3, |r| r.is_expired(6)), 3);
        assert_eq!(
            s.iter().map(|r| r.id).collect::<std::vec::Vec<_>>(),
            [4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(s.remove_where(100, |r| r.is_expired(6)), 4);
        assert_eq!(
            s.iter().map(|r| r.id).collect::<std::vec::Vec<_>>(),
            [8, 9, 10]
        );
        assert_eq!(s.get(9).unwrap().ext_port, 108);
    }

    #[test]
    fn ids_exhausted() {
        let mut slots = [Rule::EMPTY; 2];
        let mut s = RuleStore::new(&mut slots);
        s.next_id = u32::MAX;
        assert_eq!(s.push(spec(1), 1, None, None), Err(StoreFull));
        assert!(s.is_empty());
    }

    #[test]
    fn expiry_rounding() {
        let mut r = Rule::EMPTY;
        assert_eq!(r.expires_in(5), None);
        assert!(!r.is_expired(u64::MAX));
        r.expires_ns = Some(10 * NS_PER_SEC);
        assert_eq!(r.expires_in(0), Some(10));
        assert_eq!(r.expires_in(1), Some(10));
        assert_eq!(r.expires_in(NS_PER_SEC), Some(9));
        assert_eq!(r.expires_in(20 * NS_PER_SEC), Some(0));
        assert!(r.is_expired(10 * NS_PER_SEC));
        assert!(!r.is_expired(10 * NS_PER_SEC - 1));
        assert_eq!(Proto::from_name("UDP"), Some(Proto::Udp));
        assert_eq!(Proto::from_name("icmp"), None);
    }
}
