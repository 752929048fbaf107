//! The persister: a sans-io state machine that keeps Irmin in step with
//! the bridge's rule table. The kernel owns the TCP connection; this only
//! says which request to send next and digests the replies.
//!
//! ```text
//!             poll ─> list request                      on_reply ─> Event::Restored
//!  Restoring ───────────────────────────────────────────────────────────> Running
//!     │ failure: back off, list again                   take_restored(): rules to reinstall
//!
//!  Running, for the journal's head change (old ─> new):
//!
//!   Write: test_and_set(test: old, set: new)
//!     ├─ committed ─────────────────────────────────────────> done (pop head)
//!     ├─ resolver error ─> Verify: get(path)
//!     │                      ├─ == new ─────────────────────> done (an earlier reply was lost)
//!     │                      ├─ == old ─> back off, Write again (some other failure)
//!     │                      └─ other (another writer):  conflict counted
//!     │                           ├─ new is Some ─> Overwrite: set(new) ─> done
//!     │                           └─ new is None ─> leave their document ─> done
//!     └─ HTTP/transport/garbage ─> back off, same step again
//! ```
//!
//! Exactly one exchange is in flight at a time; each ends with
//! [`Persister::on_reply`] or [`Persister::on_transport_error`]. Changes
//! reach the store in the order they were recorded, and none is ever
//! dropped for an error: a failing store means a growing backlog, which
//! [`Persister::status`] reports.
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

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::doc::{decode, id_from_path, rule_path, rules_dir};
use super::journal::{Change, ChangeKind, Journal, JournalFull};
use super::reply::{msg_fmt, parse_get, parse_list, parse_write, Hash, Msg, WriteOutcome};
use super::request::{self, Info};
use crate::config::IrminEndpoint;
/// The persister's state for `/health` and `/stats` (the API's type).
pub use crate::api::PersistStatus;
use crate::rules::Rule;

/// Largest reply body accepted for the restore listing, by default
/// (enough for 4,096 rules: see [`list_max_body`]).
pub const LIST_MAX_BODY: usize = 2 * 1024 * 1024;
/// Bytes of the restore listing per stored rule, at most: the document
/// (JSON-escaped inside the reply) and its path.
pub const LIST_BYTES_PER_RULE: usize = 400;

/// The listing limit for a bridge holding up to `rules` rules (the
/// store may hold a few more: invalid documents are listed too).
pub fn list_max_body(rules: usize) -> usize {
    rules
        .saturating_add(256)
        .saturating_mul(LIST_BYTES_PER_RULE)
        .max(LIST_MAX_BODY)
}
/// Largest reply body accepted for the other requests.
pub const REPLY_MAX_BODY: usize = 64 * 1024;
/// How long the kernel should let an exchange run (connect, send, read)
/// before giving up on it with [`Persister::on_transport_error`].
pub const EXCHANGE_TIMEOUT_NS: u64 = 10_000_000_000;
/// Longest commit author kept.
pub const AUTHOR_LEN: usize = 64;

/// What an exchange is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// The listing of `<prefix>/rules` at start-up.
    Restore,
    /// `test_and_set` of the head change.
    Write,
    /// `get` of the head change's path after a resolver error.
    Verify,
    /// `set` of the head change's new document after a conflict.
    Overwrite,
}

impl ExchangeKind {
    pub const fn name(self) -> &'static str {
        match self {
            ExchangeKind::Restore => "restore",
            ExchangeKind::Write => "write",
            ExchangeKind::Verify => "verify",
            ExchangeKind::Overwrite => "overwrite",
        }
    }
}

/// One request to send on a new connection to the endpoint; read the
/// reply with a [`super::ResponseReader`] of `max_body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub kind: ExchangeKind,
    /// The complete HTTP request.
    pub request: Vec<u8>,
    /// The reply body limit for this request.
    pub max_body: usize,
}

/// What the store held at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Valid rule documents, in id order (`expires_ns: None`; their ids
    /// match their paths).
    pub rules: Vec<Rule>,
    /// Entries under `<prefix>/rules` that are not valid rule documents:
    /// `(path, reason)`. They stay in the store untouched.
    pub invalid: Vec<(String, String)>,
}

/// What happened, for the kernel's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The restore listing arrived ([`Persister::take_restored`]).
    Restored { count: usize, invalid: usize },
    /// The change recorded as `seq` is in the store.
    Committed { id: u32, seq: u64, hash: Option<Hash> },
    /// A `test_and_set` failed in the resolver; the path is read next to
    /// find out why.
    Verifying { id: u32, seq: u64, reason: Msg },
    /// Another writer changed the rule's document; `what` says what the
    /// persister does about it.
    Conflict { id: u32, seq: u64, what: &'static str },
    /// An attempt failed; the same step is retried after `in_ms`.
    Retrying { reason: Msg, in_ms: u64 },
    /// Nothing happened: a reply or error arrived with no exchange in
    /// flight (ignored).
    Nothing,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Restored { count, invalid } => {
                write!(f, "restored {count} rules, {invalid} invalid entries")
            }
            Event::Committed { id, seq, hash } => {
                write!(f, "rule {id}: change {seq} committed")?;
                match hash {
                    Some(h) => write!(f, " ({h})"),
                    None => Ok(()),
                }
            }
            Event::Verifying { id, seq, reason } => {
                write!(f, "rule {id}: change {seq} refused ({reason}), reading it back")
            }
            Event::Conflict { id, seq, what } => {
                write!(f, "rule {id}: change {seq} conflicts with another writer: {what}")
            }
            Event::Retrying { reason, in_ms } => write!(f, "{reason}; retry in {in_ms} ms"),
            Event::Nothing => f.write_str("reply with no request in flight (ignored)"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Restoring,
    Running,
}

/// The persistence state machine (see the module docs).
#[derive(Debug)]
pub struct Persister {
    endpoint: IrminEndpoint,
    author: heapless::String<AUTHOR_LEN>,
    journal: Journal,
    phase: Phase,
    /// The next step for the journal's head.
    step: ExchangeKind,
    /// The exchange in flight, and the change's seq (0 for the restore).
    in_flight: Option<(ExchangeKind, u64)>,
    /// The resolver error that sent the head to Verify.
    refusal: Option<Msg>,
    restored: Option<Restored>,
    /// The latest time seen (for [`Self::status`]).
    now_ns: u64,
    /// The reply limit of the restore listing.
    list_max_body: usize,
}

impl Persister {
    /// A persister for `endpoint`, committing as `author` (the bridge's
    /// name, cut to [`AUTHOR_LEN`] bytes), with a journal of
    /// `capacity` changes. It starts by restoring.
    pub fn new(endpoint: &IrminEndpoint, author: &str, capacity: usize) -> Self {
        Persister {
            endpoint: endpoint.clone(),
            author: super::reply::cut(author),
            journal: Journal::new(capacity),
            phase: Phase::Restoring,
            step: ExchangeKind::Write,
            in_flight: None,
            refusal: None,
            restored: None,
            now_ns: 0,
            list_max_body: LIST_MAX_BODY,
        }
    }

    /// Sets the restore listing's reply limit (see [`list_max_body`]).
    pub fn set_list_max_body(&mut self, bytes: usize) {
        self.list_max_body = bytes;
    }

    /// Whether the restore listing has not arrived yet.
    pub fn is_restoring(&self) -> bool {
        self.phase == Phase::Restoring
    }

    /// Starts running without restoring (nothing to reinstall).
    pub fn skip_restore(&mut self) {
        if self.phase == Phase::Restoring {
            self.phase = Phase::Running;
            if self.in_flight.is_some_and(|(k, _)| k == ExchangeKind::Restore) {
                self.in_flight = None;
            }
            self.journal.succeed();
        }
    }

    /// What the restore found, once (after [`Event::Restored`]).
    pub fn take_restored(&mut self) -> Option<Restored> {
        self.restored.take()
    }

    /// Queues a change of the rule table; its sequence number. Changes
    /// recorded while restoring wait for the restore to finish.
    pub fn record(&mut self, change: Change) -> Result<u64, JournalFull> {
        self.journal.push(change)
    }

    /// How many more changes can be recorded now.
    pub fn room(&self) -> usize {
        self.journal.capacity().saturating_sub(self.journal.len())
    }

    /// The sequence number of the latest pending change to rule `id`.
    pub fn pending_for(&self, id: u32) -> Option<u64> {
        self.journal
            .iter()
            .filter(|(_, c)| c.id == id)
            .last()
            .map(|(seq, _)| seq)
    }

    /// Whether the change recorded as `seq` is in the store (or settled as
    /// a conflict).
    pub fn is_committed(&self, seq: u64) -> bool {
        self.journal.is_committed(seq)
    }

    /// The journal (pending changes and counters).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Whether an exchange is in flight.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When [`Self::poll`] will next have something to send (monotonic ns;
    /// at or before now: at once), `None` while an exchange is in flight
    /// or nothing is pending.
    pub fn next_poll_ns(&self) -> Option<u64> {
        if self.in_flight.is_some() {
            return None;
        }
        match self.phase {
            Phase::Restoring => Some(self.journal.next_attempt_ns()),
            Phase::Running if self.journal.is_empty() => None,
            Phase::Running => Some(self.journal.next_attempt_ns()),
        }
    }

    /// The next exchange to run, if one is due and none is in flight.
    pub fn poll(&mut self, now_ns: u64) -> Option<Exchange> {
        self.now_ns = self.now_ns.max(now_ns);
        if self.in_flight.is_some() || !self.journal.is_due(now_ns) {
            return None;
        }
        let mut out = Vec::new();
        let ep = &self.endpoint;
        let (kind, seq, max_body) = match self.phase {
            Phase::Restoring => {
                request::list(&mut out, ep, &rules_dir(&ep.prefix));
                (ExchangeKind::Restore, 0, self.list_max_body)
            }
            Phase::Running => {
                let (seq, change) = self.journal.head()?;
                let path = rule_path(&ep.prefix, change.id);
                let kind = self.step;
                match kind {
                    ExchangeKind::Verify => request::get(&mut out, ep, &path),
                    ExchangeKind::Overwrite => match change.new.as_deref() {
                        Some(new) => {
                            let message = describe(change, true);
                            let info = Info {
                                author: &self.author,
                                message: &message,
                            };
                            request::set(&mut out, ep, &path, new, info);
                        }
                        // Not reached (Overwrite is only chosen with a new
                        // document); a test_and_set is a safe fallback.
                        None => self.write_request(&mut out, change, &path),
                    },
                    ExchangeKind::Write | ExchangeKind::Restore => {
                        self.write_request(&mut out, change, &path)
                    }
                }
                (kind, seq, REPLY_MAX_BODY)
            }
        };
        self.in_flight = Some((kind, seq));
        Some(Exchange {
            kind,
            request: out,
            max_body,
        })
    }

    fn write_request(&self, out: &mut Vec<u8>, change: &Change, path: &str) {
        let message = describe(change, false);
        let info = Info {
            author: &self.author,
            message: &message,
        };
        request::test_and_set(
            out,
            &self.endpoint,
            path,
            change.old.as_deref(),
            change.new.as_deref(),
            info,
        );
    }

    /// The exchange in flight failed below HTTP (connect refused, reset,
    /// timeout, unreadable response): back off and retry the same step.
    pub fn on_transport_error(&mut self, now_ns: u64, reason: &str) -> Event {
        self.now_ns = self.now_ns.max(now_ns);
        let what = self.in_flight.take();
        let (kind, id) = match what {
            Some((ExchangeKind::Restore, _)) => (ExchangeKind::Restore, None),
            Some((k, _)) => (k, self.journal.head().map(|(_, c)| c.id)),
            None => return Event::Nothing,
        };
        self.retry(now_ns, kind, id, format_args!("{reason}"))
    }

    /// The exchange in flight got a complete HTTP response.
    pub fn on_reply(&mut self, now_ns: u64, status: u16, body: &[u8]) -> Event {
        self.now_ns = self.now_ns.max(now_ns);
        let Some((kind, seq)) = self.in_flight.take() else {
            return Event::Nothing;
        };
        if kind == ExchangeKind::Restore {
            return match parse_list(status, body) {
                Ok(entries) => {
                    let restored = self.restore_from(entries);
                    let event = Event::Restored {
                        count: restored.rules.len(),
                        invalid: restored.invalid.len(),
                    };
                    self.restored = Some(restored);
                    self.phase = Phase::Running;
                    self.step = ExchangeKind::Write;
                    self.journal.succeed();
                    event
                }
                Err(e) => self.retry(now_ns, kind, None, format_args!("{e}")),
            };
        }
        let Some((head_seq, change)) = self.journal.head() else {
            return Event::Nothing;
        };
        if head_seq != seq {
            return Event::Nothing;
        }
        let id = change.id;
        match kind {
            ExchangeKind::Write | ExchangeKind::Overwrite => {
                let field = if kind == ExchangeKind::Write {
                    "test_and_set"
                } else {
                    "set"
                };
                match parse_write(status, body, field) {
                    Ok(WriteOutcome::Committed { hash }) => self.settle(seq, id, hash),
                    Ok(WriteOutcome::ResolverError(reason)) if kind == ExchangeKind::Write => {
                        self.step = ExchangeKind::Verify;
                        self.refusal = Some(reason.clone());
                        Event::Verifying { id, seq, reason }
                    }
                    Ok(WriteOutcome::ResolverError(reason)) => {
                        self.retry(now_ns, kind, Some(id), format_args!("{reason}"))
                    }
                    Ok(WriteOutcome::Rejected { status, message }) => self.retry(
                        now_ns,
                        kind,
                        Some(id),
                        format_args!("HTTP {status}: {message}"),
                    ),
                    Err(e) => self.retry(now_ns, kind, Some(id), format_args!("{e}")),
                }
            }
            ExchangeKind::Verify => match parse_get(status, body) {
                Err(e) => self.retry(now_ns, kind, Some(id), format_args!("{e}")),
                Ok(current) => {
                    let current = current.as_deref();
                    if current == change.new.as_deref() {
                        // An earlier attempt did commit; its reply was lost.
                        self.settle(seq, id, None)
                    } else if current == change.old.as_deref() {
                        // The store is as expected: the refusal was about
                        // something else. Try the write again, later.
                        self.step = ExchangeKind::Write;
                        let reason = self.refusal.take().unwrap_or_default();
                        self.retry(
                            now_ns,
                            ExchangeKind::Write,
                            Some(id),
                            format_args!("refused: {reason}"),
                        )
                    } else if change.new.is_some() {
                        self.journal.conflict();
                        self.step = ExchangeKind::Overwrite;
                        Event::Conflict {
                            id,
                            seq,
                            what: "overwriting their document with the bridge's rule",
                        }
                    } else {
                        self.journal.conflict();
                        let _ = self.journal.commit_head();
                        self.step = ExchangeKind::Write;
                        self.refusal = None;
                        Event::Conflict {
                            id,
                            seq,
                            what: "rule removed here, their document left in place",
                        }
                    }
                }
            },
            ExchangeKind::Restore => Event::Nothing,
        }
    }

    fn settle(&mut self, seq: u64, id: u32, hash: Option<Hash>) -> Event {
        let _ = self.journal.commit_head();
        self.step = ExchangeKind::Write;
        self.refusal = None;
        Event::Committed { id, seq, hash }
    }

    fn retry(
        &mut self,
        now_ns: u64,
        kind: ExchangeKind,
        id: Option<u32>,
        reason: fmt::Arguments<'_>,
    ) -> Event {
        let reason = match id {
            Some(id) => msg_fmt(format_args!("{} rule {id}: {reason}", kind.name())),
            None => msg_fmt(format_args!("{}: {reason}", kind.name())),
        };
        let in_ms = self.journal.fail_msg(now_ns, reason.clone());
        Event::Retrying { reason, in_ms }
    }

    fn restore_from(&self, entries: Vec<(String, String)>) -> Restored {
        let prefix = &self.endpoint.prefix;
        let mut restored = Restored::default();
        for (path, value) in entries {
            let Some(id) = id_from_path(prefix, &path) else {
                restored
                    .invalid
                    .push((path, "not a rule path (<prefix>/rules/<id>)".to_string()));
                continue;
            };
            match decode(&value) {
                Err(e) => restored.invalid.push((path, e.to_string())),
                Ok(rule) if rule.id != id => {
                    let reason = alloc::format!("document id {} does not match the path", rule.id);
                    restored.invalid.push((path, reason));
                }
                Ok(rule) => restored.rules.push(rule),
            }
        }
        restored.rules.sort_by_key(|r| r.id);
        restored
    }

    /// The state for `/health` and `/stats`, as of the latest time passed
    /// to [`Self::poll`], [`Self::on_reply`] or
    /// [`Self::on_transport_error`].
    pub fn status(&self) -> PersistStatus {
        self.status_at(self.now_ns)
    }

    /// The state for `/health` and `/stats` at `now_ns`: `state` is
    /// `restoring`, `retrying` (the last attempt failed) or `ok`;
    /// `retry_in_ms` is set while retrying (0: due or in flight).
    pub fn status_at(&self, now_ns: u64) -> PersistStatus {
        let retrying = self.journal.is_retrying();
        let state = match self.phase {
            Phase::Restoring => "restoring",
            Phase::Running if retrying => "retrying",
            Phase::Running => "ok",
        };
        let retry_in_ms = retrying.then(|| {
            if self.in_flight.is_some() {
                0
            } else {
                self.journal
                    .next_attempt_ns()
                    .saturating_sub(now_ns)
                    .div_ceil(1_000_000)
            }
        });
        PersistStatus {
            state,
            backlog: self.journal.len() as u64,
            capacity: self.journal.capacity() as u64,
            committed: self.journal.committed(),
            failures: self.journal.failures(),
            conflicts: self.journal.conflicts(),
            last_error: self.journal.last_error().cloned(),
            retry_in_ms,
        }
    }
}

/// The commit message for `change`: `insert rule 3: tcp 203.0.113.9 ->
/// 192.168.252.10:22 via port 18407`.
fn describe(change: &Change, overwrite: bool) -> String {
    use core::fmt::Write as _;
    let mut out = String::new();
    let _ = write!(out, "{} rule {}", change.kind, change.id);
    if overwrite {
        out.push_str(" (overwriting a conflicting document)");
    }
    let doc = match change.kind {
        ChangeKind::Remove => change.old.as_deref(),
        ChangeKind::Insert | ChangeKind::Update => change.new.as_deref(),
    };
    if let Some(rule) = doc.and_then(|d| decode(d).ok()) {
        let _ = write!(
            out,
            ": {} {} -> {}:{} via port {}",
            rule.spec.proto, rule.spec.client, rule.spec.int_addr, rule.spec.int_port, rule.ext_port
        );
        if change.kind == ChangeKind::Update {
            match rule.expires_unix {
                Some(t) => {
                    let _ = write!(out, ", expires at {t}");
                }
                None => out.push_str(", no expiry"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
