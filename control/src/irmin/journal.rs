//! The journal of rule changes waiting to reach Irmin: bounded, in order,
//! with one retry [`Backoff`] and the counters `/health` and `/stats`
//! show.
//!
//! ```text
//!  record ──push──> [ seq 7 | seq 8 | seq 9 ] ──> head (the only one in flight)
//!                      ^ committed: popped, counters, backoff reset
//!                      failed attempt: backoff 0.5 s, 1 s, 2 s, … 30 s
//! ```
//!
//! Entries leave only from the head, once committed (or settled as a
//! conflict), so the store sees changes in the order the bridge made them.
//! The ring is allocated once by [`Journal::new`]; a push never allocates.
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

use alloc::collections::VecDeque;
use core::fmt;

use super::doc::{encode, DocBuf};
use super::reply::{msg, Msg};
use crate::rules::Rule;

/// First retry delay after a failed attempt.
pub const BACKOFF_FIRST_MS: u64 = 500;
/// Longest retry delay.
pub const BACKOFF_MAX_MS: u64 = 30_000;
const NS_PER_MS: u64 = 1_000_000;

/// What a change does to a rule's document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new rule: the path must be absent.
    Insert,
    /// A rule's TTL changed: the document is replaced.
    Update,
    /// A rule went (deleted or expired): the document is removed.
    Remove,
}

impl ChangeKind {
    /// `insert`, `update` or `remove`.
    pub const fn name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Remove => "remove",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One change of one rule's document: `old` is what the store should hold
/// before (`None`: absent), `new` what it should hold after (`None`:
/// removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: u32,
    pub old: Option<DocBuf>,
    pub new: Option<DocBuf>,
    pub kind: ChangeKind,
}

impl Change {
    /// `rule` was added.
    pub fn insert(rule: &Rule) -> Change {
        Change {
            id: rule.id,
            old: None,
            new: Some(encode(rule)),
            kind: ChangeKind::Insert,
        }
    }

    /// `before` became `after` (same id; a new deadline).
    pub fn update(before: &Rule, after: &Rule) -> Change {
        Change {
            id: after.id,
            old: Some(encode(before)),
            new: Some(encode(after)),
            kind: ChangeKind::Update,
        }
    }

    /// `rule` went.
    pub fn remove(rule: &Rule) -> Change {
        Change {
            id: rule.id,
            old: Some(encode(rule)),
            new: None,
            kind: ChangeKind::Remove,
        }
    }
}

/// The journal has no room: the change was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JournalFull;

impl fmt::Display for JournalFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("persistence journal full")
    }
}

impl core::error::Error for JournalFull {}

/// Retry timing: after a failure wait 0.5 s, then 1 s, 2 s, … up to 30 s;
/// a success makes the next attempt due at once and starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next_delay_ms: u64,
    next_attempt_ns: u64,
    failing: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub const fn new() -> Self {
        Backoff {
            next_delay_ms: BACKOFF_FIRST_MS,
            next_attempt_ns: 0,
            failing: false,
        }
    }

    /// An attempt failed at `now_ns`: the next one is due after the
    /// returned delay (ms).
    pub fn fail(&mut self, now_ns: u64) -> u64 {
        let delay = self.next_delay_ms;
        self.next_attempt_ns = now_ns.saturating_add(delay.saturating_mul(NS_PER_MS));
        self.next_delay_ms = delay.saturating_mul(2).min(BACKOFF_MAX_MS);
        self.failing = true;
        delay
    }

    /// An attempt succeeded: the next one is due now.
    pub fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// Whether an attempt may start at `now_ns`.
    pub fn is_due(&self, now_ns: u64) -> bool {
        now_ns >= self.next_attempt_ns
    }

    /// When the next attempt may start (0: at once).
    pub fn next_attempt_ns(&self) -> u64 {
        self.next_attempt_ns
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing
    }
}

/// The bounded journal, with counters.
#[derive(Debug)]
pub struct Journal {
    entries: VecDeque<(u64, Change)>,
    capacity: usize,
    next_seq: u64,
    backoff: Backoff,
    failures: u64,
    conflicts: u64,
    last_error: Option<(Msg, u64)>,
}

impl Journal {
    /// An empty journal for up to `capacity` pending changes (allocated
    /// here, once).
    pub fn new(capacity: usize) -> Self {
        Journal {
            entries: VecDeque::with_capacity(capacity),
            capacity,
            next_seq: 1,
            backoff: Backoff::new(),
            failures: 0,
            conflicts: 0,
            last_error: None,
        }
    }

    /// Queues a change; its sequence number (1 and up, in push order).
    pub fn push(&mut self, change: Change) -> Result<u64, JournalFull> {
        if self.entries.len() >= self.capacity {
            return Err(JournalFull);
        }
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        self.entries.push_back((seq, change));
        Ok(seq)
    }

    /// The oldest pending change.
    pub fn head(&self) -> Option<(u64, &Change)> {
        self.entries.front().map(|(s, c)| (*s, c))
    }

    /// The pending changes, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Change)> + '_ {
        self.entries.iter().map(|(s, c)| (*s, c))
    }

    /// The head is committed (or settled): drops it (which counts it, see
    /// [`Self::committed`]) and resets the backoff.
    pub fn commit_head(&mut self) -> Option<(u64, Change)> {
        let head = self.entries.pop_front()?;
        self.backoff.reset();
        Some(head)
    }

    /// An attempt succeeded without settling the head (a step on the way,
    /// or the restore): resets the backoff.
    pub fn succeed(&mut self) {
        self.backoff.reset();
    }

    /// An attempt failed at `now_ns` for `reason`: counts it, keeps the
    /// text, and returns the delay (ms) before the next attempt.
    pub fn fail(&mut self, now_ns: u64, reason: &str) -> u64 {
        self.fail_msg(now_ns, msg(reason))
    }

    /// [`Self::fail`] with a ready [`Msg`].
    pub fn fail_msg(&mut self, now_ns: u64, reason: Msg) -> u64 {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some((reason, now_ns));
        self.backoff.fail(now_ns)
    }

    /// Counts a conflict with another writer.
    pub fn conflict(&mut self) {
        self.conflicts = self.conflicts.saturating_add(1);
    }

    /// Whether an attempt may start at `now_ns`.
    pub fn is_due(&self, now_ns: u64) -> bool {
        self.backoff.is_due(now_ns)
    }

    /// When the next attempt may start (0: at once).
    pub fn next_attempt_ns(&self) -> u64 {
        self.backoff.next_attempt_ns()
    }

    /// Whether the last attempt failed (and none succeeded since).
    pub fn is_retrying(&self) -> bool {
        self.backoff.is_failing()
    }

    /// Whether the change pushed as `seq` has left the journal.
    pub fn is_committed(&self, seq: u64) -> bool {
        let first_pending = self.head().map_or(self.next_seq, |(s, _)| s);
        seq != 0 && seq < first_pending
    }

    /// Pending changes (the backlog).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// Changes committed so far: every change recorded (seqs `1..next_seq`)
    /// that has left the journal, which happens only by committing.
    pub fn committed(&self) -> u64 {
        let recorded = self.next_seq.saturating_sub(1);
        recorded.saturating_sub(self.entries.len() as u64)
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Conflicts with other writers so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// The last failure's text.
    pub fn last_error(&self) -> Option<&Msg> {
        self.last_error.as_ref().map(|(m, _)| m)
    }

    /// When the last failure happened (monotonic ns).
    pub fn last_error_at_ns(&self) -> Option<u64> {
        self.last_error.as_ref().map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Proto, RuleSpec};
    use core::net::Ipv4Addr;

    pub(crate) fn rule(id: u32) -> Rule {
        Rule {
            id,
            spec: RuleSpec {
                client: Ipv4Addr::new(203, 0, 113, 9),
                int_addr: Ipv4Addr::new(192, 168, 252, 10),
                int_port: 22,
                proto: Proto::Tcp,
            },
            ext_port: 18000 + id as u16,
            expires_ns: None,
            expires_unix: None,
        }
    }

    #[test]
    fn changes() {
        let r = rule(3);
        let mut r2 = r;
        r2.expires_unix = Some(1_800_000_000);
        let c = Change::insert(&r);
        assert_eq!((c.id, c.kind, c.old.is_none()), (3, ChangeKind::Insert, true));
        assert_eq!(c.new.as_deref(), Some(encode(&r).as_str()));
        let c = Change::update(&r, &r2);
        assert_eq!(c.kind, ChangeKind::Update);
        assert_eq!(c.old, Some(encode(&r)));
        assert_eq!(c.new, Some(encode(&r2)));
        let c = Change::remove(&r2);
        assert_eq!((c.kind, c.new), (ChangeKind::Remove, None));
        assert_eq!(c.old, Some(encode(&r2)));
        assert_eq!(ChangeKind::Update.to_string(), "update");
    }

    #[test]
    fn order_and_bounds() {
        let mut j = Journal::new(3);
        assert_eq!(j.capacity(), 3);
        assert!(j.is_empty() && !j.is_full());
        assert!(!j.is_committed(0) && !j.is_committed(1));
        let cap = j.entries.capacity();
        for id in 1..=3 {
            assert_eq!(j.push(Change::insert(&rule(id))), Ok(u64::from(id)));
        }
        assert!(j.is_full());
        assert_eq!(j.push(Change::insert(&rule(9))), Err(JournalFull));
        assert_eq!(j.len(), 3);
        assert_eq!(j.head().unwrap().0, 1);
        assert!(!j.is_committed(1));
        let (seq, c) = j.commit_head().unwrap();
        assert_eq!((seq, c.id), (1, 1));
        assert!(j.is_committed(1) && !j.is_committed(2));
        assert_eq!(j.push(Change::remove(&rule(1))), Ok(4));
        // Wrapped around without reallocating.
        assert_eq!(j.entries.capacity(), cap);
        assert_eq!(
            j.iter().map(|(s, c)| (s, c.id, c.kind)).collect::<std::vec::Vec<_>>(),
            [(2, 2, ChangeKind::Insert), (3, 3, ChangeKind::Insert), (4, 1, ChangeKind::Remove)]
        );
        while j.commit_head().is_some() {}
        assert_eq!(j.committed(), 4);
        assert!(j.is_committed(4) && !j.is_committed(5));
        assert!(j.commit_head().is_none());
        assert_eq!(j.committed(), 4);
        let mut z = Journal::new(0);
        assert_eq!(z.push(Change::insert(&rule(1))), Err(JournalFull));
        assert_eq!(JournalFull.to_string(), "persistence journal full");
    }

    #[test]
    fn backoff_sequence() {
        let mut j = Journal::new(1);
        assert!(j.is_due(0) && !j.is_retrying());
        let mut now = 1_000_000_000u64;
        let mut delays = std::vec::Vec::new();
        for _ in 0..10 {
            let d = j.fail(now, "connection refused");
            assert_eq!(j.next_attempt_ns(), now + d * 1_000_000);
            assert!(!j.is_due(now + d * 1_000_000 - 1));
            assert!(j.is_due(now + d * 1_000_000));
            delays.push(d);
            now += d * 1_000_000;
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        assert!(j.is_retrying());
        assert_eq!(j.failures(), 10);
        assert_eq!(j.last_error().unwrap().as_str(), "connection refused");
        assert!(j.last_error_at_ns().is_some());
        j.push(Change::insert(&rule(1))).unwrap();
        j.commit_head();
        assert!(j.is_due(0) && !j.is_retrying());
        assert_eq!(j.fail(now, "again"), 500);
        j.succeed();
        assert_eq!(j.fail(now, "again"), 500);
        // Saturates at the end of time.
        assert_eq!(j.fail(u64::MAX - 5, "x"), 1000);
        assert_eq!(j.next_attempt_ns(), u64::MAX);
        j.conflict();
        assert_eq!(j.conflicts(), 1);
    }
}
