//! The management API: routing, rule semantics and JSON answers,
//! independent of the network stack and of the NAT.
//!
//! ```text
//!   kernel (per TCP connection)                 control
//!   ───────────────────────────                 ───────
//!   bytes ──> http::RequestReader::feed ── Ready ──> Api::respond(now, gw, &reader, out)
//!                                                      │ auth::Verifier (401/503)
//!                                                      │ router (404/405)
//!                                                      │ json bodies (400)
//!                                                      │ RuleStore <──> Gateway (the NAT)
//!   send out[..n], close <──────────────────────── n ──┘
//!   every second:                                    Api::expire(now_ns, gw)
//! ```
//!
//! - `POST /insert`, `POST /remove`, `GET /rules[?offset=&limit=]`,
//!   `GET|DELETE /rules/<id>`, `GET /stats`, `GET /health`; the shapes
//!   and statuses are in `docs/API.md`.
//! - Every response is JSON, carries `X-Pih-Api: 1` and closes the
//!   connection. Errors are `{"error": "...", "field": "..."}`, `field`
//!   only when one is at fault.
//! - A change is never half-applied: a rule enters the [`RuleStore`] only
//!   after the [`Gateway`] installed it (and is taken out of the gateway
//!   again if the store cannot take it), and leaves the store only after
//!   the gateway removed it.
//! - Time: [`Now::mono_ns`] is the kernel's monotonic clock (nanoseconds
//!   since boot: uptime, rule TTLs, the `now_ns` given to the gateway);
//!   [`Now::unix_s`] is the wall clock, for request timestamps only (see
//!   [`crate::auth`]).
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

use alloc::collections::BTreeSet;
use core::fmt::{self, Write as _};
use core::net::Ipv4Addr;

use heapless::Vec;
use serde::{Serialize, Serializer};

use crate::auth::{self, AuthError, Verifier};
use crate::config::{Config, Role};
use crate::http::{
    self, ExtraHeaders, HttpError, Method, Request, RequestReader, SliceWriter, Status, BODY_OFFSET,
};
use crate::json::{self, field_name, BodyError, FieldName};
use crate::rules::{Proto, RestoreError, Rule, RuleSpec, RuleStore, NS_PER_SEC};

/// The version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Recommended size of the response buffer handed to [`Api::respond`]
/// (`GET /rules` fills it with as many rules as fit, about 100 per KiB).
pub const RESPONSE_BUF: usize = 16 * 1024;
/// Rules removed at most by one [`Api::expire`] call (removing a rule
/// scans the flow table).
pub const EXPIRE_BATCH: usize = 64;
/// Vifs in a [`StatsSnapshot`].
pub const MAX_VIFS: usize = 8;

// ---------------------------------------------------------------------------
// The gateway: what the API drives
// ---------------------------------------------------------------------------

/// Why the gateway refused a rule change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleError {
    /// The requested external port is in use, cooling or reserved (409).
    PortBusy,
    /// No external port is available (503).
    NoPort,
    /// The gateway's rule capacity is reached (503).
    Full,
    /// No rule on that port (removal).
    NotFound,
    /// The internal address is not a host of the internal network, or the
    /// rule is otherwise impossible (400, field `dst_ip`).
    Unsupported,
}

/// The data plane as seen by the API; the kernel implements it over
/// `pih_nat::translate::Nat`, along these lines:
///
/// ```ignore
/// fn insert_rule(&mut self, now_ns: u64, r: &RuleSpec, requested: Option<u16>)
///     -> Result<u16, RuleError>
/// {
///     let p = protocol(r.proto); // Proto::Tcp -> Protocol::Tcp, Udp -> Udp
///     let port = match requested {
///         Some(port) => port,
///         None => self.nat.table_mut().reserve_any_port(now_ns, p).ok_or(RuleError::NoPort)?,
///     };
///     match self.nat.insert_static(now_ns, p, port, r.client, r.int_addr, r.int_port) {
///         Ok(()) => Ok(port),
///         Err(e) => {
///             if requested.is_none() {
///                 self.nat.table_mut().release_port(now_ns, p, port); // undo
///             }
///             Err(match e {
///                 StaticError::PortBusy => RuleError::PortBusy,
///                 StaticError::Full => RuleError::Full,
///                 StaticError::Unsupported => RuleError::Unsupported,
///                 StaticError::NotFound => RuleError::NotFound,
///             })
///         }
///     }
/// }
///
/// fn remove_rule(&mut self, now_ns: u64, proto: Proto, ext_port: u16)
///     -> Result<usize, RuleError>
/// {
///     self.nat.remove_static(now_ns, protocol(proto), ext_port)
///         .map_err(|_| RuleError::NotFound)
/// }
/// ```
///
/// and `stats` copies the vif counters, `Nat::counters()` and
/// `Nat::table().stats()` into the snapshot.
pub trait Gateway {
    /// Installs `rule` (clients at `rule.client`, any source port, may
    /// reach `rule.int_addr:rule.int_port` through the returned external
    /// port). `requested_port` must be used if given, else any free port
    /// is chosen. On error nothing may have changed.
    fn insert_rule(
        &mut self,
        now_ns: u64,
        rule: &RuleSpec,
        requested_port: Option<u16>,
    ) -> Result<u16, RuleError>;

    /// Removes the rule on `(proto, ext_port)` and every flow opened under
    /// it; returns how many flows went. [`RuleError::NotFound`] if there is
    /// none.
    fn remove_rule(&mut self, now_ns: u64, proto: Proto, ext_port: u16)
        -> Result<usize, RuleError>;

    /// Fills in the counters (`out` starts as `StatsSnapshot::default()`).
    fn stats(&self, out: &mut StatsSnapshot);

    /// Makes `ext_port` available to a rule restored from the persistent
    /// store, which must get exactly that port back: a dynamic mapping that
    /// took it meanwhile is dropped (with its flows, returned). A port held
    /// by another rule stays as it is (`insert_rule` then refuses).
    fn claim_port(&mut self, now_ns: u64, proto: Proto, ext_port: u16) -> usize {
        let _ = (now_ns, proto, ext_port);
        0
    }
}

// ---------------------------------------------------------------------------
// Persistence: where rule changes go after they took effect
// ---------------------------------------------------------------------------

/// A change the API made to the rules, to be persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleChange<'a> {
    /// A new rule.
    Insert(&'a Rule),
    /// The same rule with a new deadline (an insert of an existing rule).
    Update { before: &'a Rule, after: &'a Rule },
    /// A rule removed (by request or because its TTL ran out).
    Remove(&'a Rule),
}

/// How persistence is doing, for `/health` and `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PersistStatus {
    /// `off` (no `irmin=`), `restoring` (reading the rules back at boot),
    /// `ok` (nothing waiting or the last attempt worked) or `retrying`.
    pub state: &'static str,
    /// Changes waiting to be committed.
    pub backlog: u64,
    /// Most changes that can wait.
    pub capacity: u64,
    /// Changes committed since boot.
    pub committed: u64,
    /// Failed attempts since boot.
    pub failures: u64,
    /// Documents another writer had changed.
    pub conflicts: u64,
    /// The last failure, if any.
    #[serde(serialize_with = "serialize_opt_str")]
    pub last_error: Option<heapless::String<160>>,
    /// When the next attempt is due, if one is waiting.
    pub retry_in_ms: Option<u64>,
}

fn serialize_opt_str<S: Serializer>(
    v: &Option<heapless::String<160>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(m) => s.serialize_some(m.as_str()),
        None => s.serialize_none(),
    }
}

/// The journal of rule changes on their way to the persistent store (the
/// kernel's Irmin client). Changes take effect in the gateway first; the
/// log only has to remember them until they are committed.
pub trait ChangeLog {
    /// Whether `n` more changes can be recorded now. The API refuses a
    /// change (503) rather than apply one it cannot record.
    fn has_room(&self, n: usize) -> bool;
    /// Records a change; its ticket, or `None` if changes are not persisted.
    fn record(&mut self, change: RuleChange<'_>) -> Option<u64>;
    /// Whether the change with this ticket is committed.
    fn is_committed(&self, ticket: u64) -> bool;
    /// The ticket of the latest uncommitted change to rule `id`, if any.
    fn pending_for(&self, id: u32) -> Option<u64>;
    /// Whether the rules are still being read back (the API answers 503,
    /// except `/health`).
    fn is_restoring(&self) -> bool;
    /// For `/health` and `/stats`.
    fn status(&self) -> PersistStatus;
}

/// No persistence: nothing is recorded, every answer says
/// `"persisted": false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoPersistence;

impl ChangeLog for NoPersistence {
    fn has_room(&self, _n: usize) -> bool {
        true
    }
    fn record(&mut self, _change: RuleChange<'_>) -> Option<u64> {
        None
    }
    fn is_committed(&self, _ticket: u64) -> bool {
        false
    }
    fn pending_for(&self, _id: u32) -> Option<u64> {
        None
    }
    fn is_restoring(&self) -> bool {
        false
    }
    fn status(&self) -> PersistStatus {
        PersistStatus {
            state: "off",
            ..PersistStatus::default()
        }
    }
}

/// The answer to a request: ready to send, or waiting for the change it
/// made to be committed (then [`Api::finish`] writes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The whole HTTP response is in `out[..n]`.
    Ready(usize),
    /// The change took effect; the answer says whether it is persisted.
    Await(Pending),
}

/// An answer held back until its change is committed (or the caller gives
/// up waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The [`ChangeLog`] ticket to wait for.
    pub ticket: u64,
    body: PendingBody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingBody {
    Insert(InsertAnswer),
    Remove(RemoveAnswer),
}

/// Why a rule read back from the persistent store was not reinstalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreRefused {
    /// Its deadline passed while the bridge was down (its document is
    /// removed).
    Expired,
    /// The rule store refused it (duplicate, full).
    Store(crate::rules::RestoreError),
    /// The gateway refused it (port busy, table full, an internal address
    /// outside the internal network).
    Gateway(RuleError),
    /// `ip` or `dst_ip` (named) is not a unicast address: the API would
    /// not have accepted it either.
    NotUnicast(&'static str),
}

impl fmt::Display for RestoreRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreRefused::Expired => f.write_str("its TTL ran out while the bridge was down"),
            RestoreRefused::Store(e) => write!(f, "{e}"),
            RestoreRefused::Gateway(e) => write!(f, "the data plane refused it ({e:?})"),
            RestoreRefused::NotUnicast(field) => write!(f, "{field} is not a unicast address"),
        }
    }
}

/// Counters of one vif.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VifStats {
    pub devid: u32,
    #[serde(serialize_with = "serialize_role")]
    pub role: Role,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_drops: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_drops: u64,
}

fn serialize_role<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.name())
}

/// Translation table and NAT counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NatStats {
    /// Live flows.
    pub flows_active: u64,
    /// Flow table capacity.
    pub flows_capacity: u64,
    /// Flows opened since boot.
    pub flows_created: u64,
    /// Flows that timed out.
    pub flows_expired: u64,
    /// Flows removed with their rule.
    pub flows_removed: u64,
    /// New flows refused: table full.
    pub refused_full: u64,
    /// New flows refused: no external port.
    pub refused_no_port: u64,
    /// Packets translated outbound / inbound.
    pub forwarded_out: u64,
    pub forwarded_in: u64,
    /// Packets dropped by the NAT, all reasons.
    pub dropped: u64,
}

/// What `GET /stats` reports, filled by [`Gateway::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub vifs: Vec<VifStats, MAX_VIFS>,
    pub nat: NatStats,
}

/// The clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds since boot.
    pub mono_ns: u64,
    /// Unix seconds, if the bridge has a wall clock
    /// ([`auth::plausible_unix`] filters an unset one).
    pub unix_s: Option<u64>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: Status,
    pub message: &'static str,
    pub field: Option<FieldName>,
    /// For 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: Status, message: &'static str) -> Self {
        ApiError {
            status,
            message,
            field: None,
            allow: None,
        }
    }

    fn field(status: Status, message: &'static str, field: &str) -> Self {
        ApiError {
            field: Some(field_name(field)),
            ..ApiError::new(status, message)
        }
    }

    fn method(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(Status::MethodNotAllowed, "method not allowed")
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError {
            status: Status::BadRequest,
            message: e.message,
            field: e.field,
            allow: None,
        }
    }
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        ApiError {
            field: e.field().map(field_name),
            ..ApiError::new(e.status(), e.message())
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = if e.is_unavailable() {
            Status::ServiceUnavailable
        } else {
            Status::Unauthorized
        };
        ApiError::field(status, e.message(), "Authorization")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " ({field})")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

const MSG_NO_RULE: &str = "no such rule";
const MSG_PORT_BUSY: &str = "external port busy";
const MSG_OTHER_PORT: &str = "rule exists with another external port";
const MSG_RULES_FULL: &str = "rule table full";
const MSG_NO_PORT: &str = "no external port available";
const MSG_NOT_INTERNAL: &str = "not a host of the internal network";
const MSG_NOT_UNICAST: &str = "not a unicast address";
const MSG_GATEWAY: &str = "the data plane refused the change";
const MSG_RESTORING: &str = "restoring rules from the persistent store";
const MSG_BACKLOG: &str = "persistence backlog full";

/// The ticket of an answer whose change is not persisted at all.
pub const NO_TICKET: u64 = u64::MAX;

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct InsertAnswer {
    ip: Ipv4Addr,
    port: u16,
    id: u32,
    persisted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct RemoveAnswer {
    removed: bool,
    id: u32,
    flows: u64,
    persisted: bool,
}

#[derive(Serialize)]
struct RuleAnswer {
    id: u32,
    ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    dst_port: u16,
    proto: Proto,
    port: u16,
    expires_in: Option<u64>,
}

impl RuleAnswer {
    fn new(r: &Rule, now_ns: u64) -> Self {
        RuleAnswer {
            id: r.id,
            ip: r.spec.client,
            dst_ip: r.spec.int_addr,
            dst_port: r.spec.int_port,
            proto: r.spec.proto,
            port: r.ext_port,
            expires_in: r.expires_in(now_ns),
        }
    }
}

#[derive(Serialize)]
struct RuleCounts {
    count: u64,
    capacity: u64,
}

#[derive(Serialize)]
struct StatsAnswer<'a> {
    vifs: &'a [VifStats],
    nat: &'a NatStats,
    rules: RuleCounts,
    persistence: &'a PersistStatus,
    uptime_s: u64,
}

#[derive(Serialize)]
struct HealthAnswer<'a> {
    status: &'static str,
    version: &'static str,
    uptime_s: u64,
    persistence: &'a PersistStatus,
}

/// Space kept free for the end of a `GET /rules` answer.
const RULES_TRAILER: usize = 64;
/// Longest JSON of one rule.
const RULE_JSON_MAX: usize = 192;

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

/// What the API is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiConfig<'k> {
    /// The bridge's external address (answered by `/insert`).
    pub external: Ipv4Addr,
    /// The shared secret.
    pub key: Option<&'k [u8]>,
    /// Whether requests must be signed.
    pub auth: bool,
}

impl<'k> ApiConfig<'k> {
    /// From the boot configuration.
    pub fn from_config(c: &'k Config) -> Self {
        ApiConfig {
            external: c.ext.addr,
            key: c.key.as_deref(),
            auth: c.auth,
        }
    }
}

/// The management API: rules, authentication state, routing. About 50 KiB
/// (the replay cache): keep it in a static or a box, not on a small stack.
pub struct Api<'r> {
    rules: RuleStore<'r>,
    verifier: Verifier,
    external: Ipv4Addr,
}

impl fmt::Debug for Api<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("rules", &self.rules)
            .field("verifier", &self.verifier)
            .field("external", &self.external)
            .finish()
    }
}

impl<'r> Api<'r> {
    /// `storage` holds the rules: its length is the rule capacity (the
    /// configuration's `rules=`).
    pub fn new(config: &ApiConfig<'_>, storage: &'r mut [Rule]) -> Self {
        Api {
            rules: RuleStore::new(storage),
            verifier: Verifier::new(config.key, config.auth),
            external: config.external,
        }
    }

    pub fn rules(&self) -> &RuleStore<'r> {
        &self.rules
    }

    /// Answers the request held by `reader` (call once it said
    /// [`http::Progress::Ready`]; before that the answer is a 400), without
    /// persistence (answers say `"persisted": false`). Writes the whole
    /// HTTP response at the start of `out` and returns its length; 0 only
    /// if `out` cannot hold even an error answer (it always can with
    /// [`http::MIN_RESPONSE_BUF`] bytes; use [`RESPONSE_BUF`]). Then close
    /// the connection.
    pub fn respond<G: Gateway + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        reader: &RequestReader,
        out: &mut [u8],
    ) -> usize {
        self.respond_to(now, gw, reader.outcome(), out)
    }

    /// [`Self::respond`] for a request already parsed (or its error).
    pub fn respond_to<G: Gateway + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        request: Result<Request<'_>, HttpError>,
        out: &mut [u8],
    ) -> usize {
        match self.answer(now, gw, &mut NoPersistence, request, out) {
            Answer::Ready(n) => n,
            Answer::Await(p) => self.finish(&p, false, out),
        }
    }

    /// Answers a request, recording rule changes in `log`. A change that
    /// took effect gives [`Answer::Await`]: send [`Self::finish`]'s answer
    /// once `log.is_committed(ticket)` or when tired of waiting.
    pub fn answer<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        request: Result<Request<'_>, HttpError>,
        out: &mut [u8],
    ) -> Answer {
        let Some(body) = out.get_mut(BODY_OFFSET..) else {
            return Answer::Ready(0);
        };
        let mut w = SliceWriter::new(body);
        let (status, extra) = match self.route(now, gw, log, request, &mut w) {
            Ok(Some(p)) => return Answer::Await(p),
            Ok(None) if !w.overflowed() => (Status::Ok, ExtraHeaders::default()),
            Ok(None) => {
                w.truncate(0);
                let e = ApiError::new(Status::InternalError, "response too large");
                write_error(&mut w, &e)
            }
            Err(e) => {
                w.truncate(0);
                write_error(&mut w, &e)
            }
        };
        let len = w.len();
        Answer::Ready(http::finish_response(out, status, extra, len))
    }

    /// Writes the held-back answer `p` (200, with `"persisted"`) at the
    /// start of `out`; its length.
    pub fn finish(&self, p: &Pending, persisted: bool, out: &mut [u8]) -> usize {
        let Some(body) = out.get_mut(BODY_OFFSET..) else {
            return 0;
        };
        let mut w = SliceWriter::new(body);
        match p.body {
            PendingBody::Insert(a) => put_json(&mut w, &InsertAnswer { persisted, ..a }),
            PendingBody::Remove(a) => put_json(&mut w, &RemoveAnswer { persisted, ..a }),
        }
        let len = w.len();
        http::finish_response(out, Status::Ok, ExtraHeaders::default(), len)
    }

    /// Answers one request given as raw bytes (tests, fuzzing, simple
    /// servers): the same as feeding them to a [`RequestReader`].
    pub fn handle_bytes<G: Gateway + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        raw: &[u8],
        out: &mut [u8],
    ) -> usize {
        self.respond_to(now, gw, http::parse_request(raw), out)
    }

    /// Removes up to [`EXPIRE_BATCH`] rules whose TTL has run out (their
    /// flows go with them). Call it every second or so. A rule the gateway
    /// refuses to remove stays and is tried again next time. Returns how
    /// many rules went.
    pub fn expire<G: Gateway + ?Sized>(&mut self, now_ns: u64, gw: &mut G) -> usize {
        self.expire_logged(now_ns, gw, &mut NoPersistence)
    }

    /// [`Self::expire`], recording each removal in `log` (a rule stays
    /// while the log is full).
    pub fn expire_logged<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now_ns: u64,
        gw: &mut G,
        log: &mut L,
    ) -> usize {
        self.rules.remove_where(EXPIRE_BATCH, |r| {
            let gone = r.is_expired(now_ns)
                && log.has_room(1)
                && matches!(
                    gw.remove_rule(now_ns, r.spec.proto, r.ext_port),
                    Ok(_) | Err(RuleError::NotFound)
                );
            if gone {
                log.record(RuleChange::Remove(r));
            }
            gone
        })
    }

    /// Keeps new rules off ids up to `id` (the store has a document there
    /// that was not restored: a new rule must not overwrite it).
    pub fn skip_ids_through(&mut self, id: u32) {
        self.rules.skip_ids_through(id);
    }

    /// Reinstalls a rule read back from the persistent store, with its id
    /// and external port. Its deadline is recomputed from the wall clock;
    /// one that passed while the bridge was down is not installed and its
    /// removal is recorded in `log`.
    pub fn restore<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        rule: &Rule,
    ) -> Result<(), RestoreRefused> {
        let mut outcome = Ok(());
        self.restore_all(now, gw, log, core::slice::from_ref(rule), |_, r| {
            outcome = r;
        });
        outcome
    }

    /// [`Self::restore`] for every rule of `rules`, in id order, calling
    /// `each` with each rule's outcome. O(n log n) in all (the duplicate
    /// checks use ordered sets), so a store of tens of thousands of rules
    /// comes back quickly.
    pub fn restore_all<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        rules: &[Rule],
        mut each: impl FnMut(&Rule, Result<(), RestoreRefused>),
    ) {
        let mut order: alloc::vec::Vec<&Rule> = rules.iter().collect();
        order.sort_by_key(|r| r.id);
        let mut specs: BTreeSet<SpecKey> = self.rules.iter().map(|r| spec_key(&r.spec)).collect();
        let mut ports: BTreeSet<(Proto, u16)> = self
            .rules
            .iter()
            .map(|r| (r.spec.proto, r.ext_port))
            .collect();
        for r in order {
            let outcome = self.restore_one(now, gw, log, r, &mut specs, &mut ports);
            each(r, outcome);
        }
    }

    fn restore_one<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        rule: &Rule,
        specs: &mut BTreeSet<SpecKey>,
        ports: &mut BTreeSet<(Proto, u16)>,
    ) -> Result<(), RestoreRefused> {
        let mut rule = *rule;
        rule.expires_ns = None;
        if let (Some(at), Some(unix)) = (rule.expires_unix, now.unix_s) {
            if at <= unix {
                log.record(RuleChange::Remove(&rule));
                return Err(RestoreRefused::Expired);
            }
            let left = at.saturating_sub(unix).saturating_mul(NS_PER_SEC);
            rule.expires_ns = Some(now.mono_ns.saturating_add(left));
        }
        // Checked before the gateway is touched, so a refusal changes nothing.
        if !is_unicast(rule.spec.client) {
            return Err(RestoreRefused::NotUnicast("ip"));
        }
        if !is_unicast(rule.spec.int_addr) {
            return Err(RestoreRefused::NotUnicast("dst_ip"));
        }
        if rule.id == 0 || rule.id == u32::MAX {
            return Err(RestoreRefused::Store(RestoreError::InvalidId));
        }
        if self.rules.get(rule.id).is_some() {
            return Err(RestoreRefused::Store(RestoreError::DuplicateId));
        }
        let spec = spec_key(&rule.spec);
        if specs.contains(&spec) {
            return Err(RestoreRefused::Store(RestoreError::DuplicateSpec));
        }
        let port_key = (rule.spec.proto, rule.ext_port);
        if ports.contains(&port_key) {
            return Err(RestoreRefused::Store(RestoreError::DuplicatePort));
        }
        if self.rules.is_full() {
            return Err(RestoreRefused::Store(RestoreError::Full));
        }
        gw.claim_port(now.mono_ns, rule.spec.proto, rule.ext_port);
        let port = gw
            .insert_rule(now.mono_ns, &rule.spec, Some(rule.ext_port))
            .map_err(RestoreRefused::Gateway)?;
        if let Err(e) = self.rules.insert_restored(rule) {
            let _ = gw.remove_rule(now.mono_ns, rule.spec.proto, port);
            return Err(RestoreRefused::Store(e));
        }
        specs.insert(spec);
        ports.insert(port_key);
        Ok(())
    }

    /// The earliest rule deadline, if any rule has a TTL.
    pub fn next_expiry(&self) -> Option<u64> {
        self.rules.iter().filter_map(|r| r.expires_ns).min()
    }

    fn route<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        request: Result<Request<'_>, HttpError>,
        w: &mut SliceWriter<'_>,
    ) -> Result<Option<Pending>, ApiError> {
        let req = request?;
        self.verifier.check(
            now.unix_s,
            req.method.as_str(),
            req.target,
            req.authorization,
            req.body,
        )?;
        if let Some(v) = req.api_version {
            if http::trim(v) != b"1" {
                return Err(ApiError::field(
                    Status::BadRequest,
                    "unsupported API version",
                    "X-Pih-Api",
                ));
            }
        }
        if req.path == "/health" {
            allow(req.method, Method::Get, "GET")?;
            let persistence = log.status();
            let status = if log.is_restoring() {
                "restoring"
            } else if persistence.state == "retrying" {
                "degraded"
            } else {
                "ok"
            };
            put_json(
                w,
                &HealthAnswer {
                    status,
                    version: VERSION,
                    uptime_s: now.mono_ns / NS_PER_SEC,
                    persistence: &persistence,
                },
            );
            return Ok(None);
        }
        if log.is_restoring() {
            return Err(ApiError::new(Status::ServiceUnavailable, MSG_RESTORING));
        }
        match req.path {
            "/insert" => {
                allow(req.method, Method::Post, "POST")?;
                self.insert(now, gw, log, req.body, w)
            }
            "/remove" => {
                allow(req.method, Method::Post, "POST")?;
                self.remove(now, gw, log, req.body)
            }
            "/rules" => {
                allow(req.method, Method::Get, "GET")?;
                self.list(now, req.query, w).map(|()| None)
            }
            "/stats" => {
                allow(req.method, Method::Get, "GET")?;
                self.stats(now, gw, log, w).map(|()| None)
            }
            p => match p.strip_prefix("/rules/") {
                Some(id) => {
                    if !matches!(req.method, Method::Get | Method::Delete) {
                        return Err(ApiError::method("GET, DELETE"));
                    }
                    let id = parse_u32(id).ok_or_else(|| {
                        ApiError::field(Status::BadRequest, "invalid rule id", "id")
                    })?;
                    if req.method == Method::Get {
                        let r = self
                            .rules
                            .get(id)
                            .ok_or(ApiError::new(Status::NotFound, MSG_NO_RULE))?;
                        put_json(w, &RuleAnswer::new(r, now.mono_ns));
                        Ok(None)
                    } else {
                        let r = *self
                            .rules
                            .get(id)
                            .ok_or(ApiError::new(Status::NotFound, MSG_NO_RULE))?;
                        self.remove_rule(now, gw, log, &r).map(Some)
                    }
                }
                None => Err(ApiError::new(Status::NotFound, "no such endpoint")),
            },
        }
    }

    fn insert<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        body: &[u8],
        w: &mut SliceWriter<'_>,
    ) -> Result<Option<Pending>, ApiError> {
        let ins = json::parse_insert(body)?;
        let spec = ins.spec;
        if !is_unicast(spec.client) {
            return Err(ApiError::field(Status::BadRequest, MSG_NOT_UNICAST, "ip"));
        }
        if !is_unicast(spec.int_addr) {
            return Err(ApiError::field(
                Status::BadRequest,
                MSG_NOT_UNICAST,
                "dst_ip",
            ));
        }
        let expires = ins.ttl_s.map(|t| {
            now.mono_ns
                .saturating_add(u64::from(t).saturating_mul(NS_PER_SEC))
        });
        let expires_unix = ins
            .ttl_s
            .and_then(|t| now.unix_s.map(|u| u.saturating_add(u64::from(t))));
        // The same rule again: same port, same id; the TTL is the new one.
        if let Some(existing) = self.rules.find_spec(&spec).copied() {
            if ins.port.is_some_and(|p| p != existing.ext_port) {
                return Err(ApiError::field(Status::Conflict, MSG_OTHER_PORT, "port"));
            }
            let answer = InsertAnswer {
                ip: self.external,
                port: existing.ext_port,
                id: existing.id,
                persisted: false,
            };
            let after = Rule {
                expires_ns: expires,
                expires_unix,
                ..existing
            };
            // Only the persisted deadline matters to the store.
            let ticket = if after.expires_unix == existing.expires_unix {
                match log.pending_for(existing.id) {
                    Some(t) => Some(t),
                    None => {
                        self.rules.set_expiry(existing.id, expires, expires_unix);
                        let persisted = log.status().state != "off";
                        put_json(w, &InsertAnswer { persisted, ..answer });
                        return Ok(None);
                    }
                }
            } else {
                if !log.has_room(1) {
                    return Err(ApiError::new(Status::ServiceUnavailable, MSG_BACKLOG));
                }
                log.record(RuleChange::Update {
                    before: &existing,
                    after: &after,
                })
            };
            self.rules.set_expiry(existing.id, expires, expires_unix);
            return Ok(Some(Pending {
                ticket: ticket.unwrap_or(NO_TICKET),
                body: PendingBody::Insert(answer),
            }));
        }
        if let Some(p) = ins.port {
            if self.rules.find_port(spec.proto, p).is_some() {
                return Err(ApiError::field(Status::Conflict, MSG_PORT_BUSY, "port"));
            }
        }
        if self.rules.is_full() || self.rules.next_id() == u32::MAX {
            return Err(ApiError::new(Status::ServiceUnavailable, MSG_RULES_FULL));
        }
        if !log.has_room(1) {
            return Err(ApiError::new(Status::ServiceUnavailable, MSG_BACKLOG));
        }
        let port = gw
            .insert_rule(now.mono_ns, &spec, ins.port)
            .map_err(|e| match e {
                RuleError::PortBusy if ins.port.is_some() => {
                    ApiError::field(Status::Conflict, MSG_PORT_BUSY, "port")
                }
                RuleError::PortBusy | RuleError::NoPort => {
                    ApiError::new(Status::ServiceUnavailable, MSG_NO_PORT)
                }
                RuleError::Full => ApiError::new(Status::ServiceUnavailable, MSG_RULES_FULL),
                RuleError::Unsupported => {
                    ApiError::field(Status::BadRequest, MSG_NOT_INTERNAL, "dst_ip")
                }
                RuleError::NotFound => ApiError::new(Status::InternalError, MSG_GATEWAY),
            })?;
        match self.rules.push(spec, port, expires, expires_unix) {
            Ok(id) => {
                let ticket = self
                    .rules
                    .get(id)
                    .and_then(|r| log.record(RuleChange::Insert(r)));
                let answer = InsertAnswer {
                    ip: self.external,
                    port,
                    id,
                    persisted: false,
                };
                Ok(Some(Pending {
                    ticket: ticket.unwrap_or(NO_TICKET),
                    body: PendingBody::Insert(answer),
                }))
            }
            Err(_) => {
                // Checked above; roll back all the same.
                let _ = gw.remove_rule(now.mono_ns, spec.proto, port);
                Err(ApiError::new(Status::ServiceUnavailable, MSG_RULES_FULL))
            }
        }
    }

    fn remove<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        body: &[u8],
    ) -> Result<Option<Pending>, ApiError> {
        let rm = json::parse_remove(body)?;
        let rule = *self
            .rules
            .find_spec(&rm.spec)
            .ok_or(ApiError::new(Status::NotFound, MSG_NO_RULE))?;
        self.remove_rule(now, gw, log, &rule).map(Some)
    }

    /// Takes a rule out of the gateway, then out of the store.
    fn remove_rule<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &mut self,
        now: Now,
        gw: &mut G,
        log: &mut L,
        rule: &Rule,
    ) -> Result<Pending, ApiError> {
        if !log.has_room(1) {
            return Err(ApiError::new(Status::ServiceUnavailable, MSG_BACKLOG));
        }
        let flows = match gw.remove_rule(now.mono_ns, rule.spec.proto, rule.ext_port) {
            Ok(n) => n,
            // Already gone from the data plane: just forget it.
            Err(RuleError::NotFound) => 0,
            Err(_) => return Err(ApiError::new(Status::InternalError, MSG_GATEWAY)),
        };
        self.rules.remove(rule.id);
        let ticket = log.record(RuleChange::Remove(rule));
        Ok(Pending {
            ticket: ticket.unwrap_or(NO_TICKET),
            body: PendingBody::Remove(RemoveAnswer {
                removed: true,
                id: rule.id,
                flows: flows as u64,
                persisted: false,
            }),
        })
    }

    fn list(&self, now: Now, query: Option<&str>, w: &mut SliceWriter<'_>) -> Result<(), ApiError> {
        let (offset, limit) = parse_paging(query)?;
        let all = self.rules.as_slice();
        let total = all.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let _ = write!(w, "{{\"total\":{total},\"offset\":{offset},\"rules\":[");
        let mut count = 0usize;
        let mut one = [0u8; RULE_JSON_MAX];
        for r in all.get(start..).unwrap_or(&[]) {
            if count >= limit {
                break;
            }
            let Ok(n) = serde_json_core::to_slice(&RuleAnswer::new(r, now.mono_ns), &mut one)
            else {
                break;
            };
            let need = n.saturating_add(1).saturating_add(RULES_TRAILER);
            if w.remaining() < need {
                break;
            }
            if count > 0 {
                w.push(b",");
            }
            w.push(one.get(..n).unwrap_or(&[]));
            count = count.saturating_add(1);
        }
        let next = start.saturating_add(count);
        if count == 0 && next < total && limit > 0 {
            return Err(ApiError::new(
                Status::InternalError,
                "response buffer too small",
            ));
        }
        let _ = write!(w, "],\"count\":{count},\"next_offset\":");
        if next < total {
            let _ = write!(w, "{next}}}");
        } else {
            let _ = write!(w, "null}}");
        }
        Ok(())
    }

    fn stats<G: Gateway + ?Sized, L: ChangeLog + ?Sized>(
        &self,
        now: Now,
        gw: &G,
        log: &L,
        w: &mut SliceWriter<'_>,
    ) -> Result<(), ApiError> {
        let persistence = log.status();
        let mut snap = StatsSnapshot::default();
        gw.stats(&mut snap);
        put_json(
            w,
            &StatsAnswer {
                vifs: &snap.vifs,
                nat: &snap.nat,
                rules: RuleCounts {
                    count: self.rules.len() as u64,
                    capacity: self.rules.capacity() as u64,
                },
                persistence: &persistence,
                uptime_s: now.mono_ns / NS_PER_SEC,
            },
        );
        Ok(())
    }
}

/// A rule's identity for duplicate checks: client, internal endpoint,
/// protocol.
type SpecKey = (u32, u32, u16, Proto);

fn spec_key(s: &RuleSpec) -> SpecKey {
    (u32::from(s.client), u32::from(s.int_addr), s.int_port, s.proto)
}

fn allow(method: Method<'_>, expected: Method<'_>, allow: &'static str) -> Result<(), ApiError> {
    if method == expected {
        Ok(())
    } else {
        Err(ApiError::method(allow))
    }
}

/// Whether `a` can be a host of a rule: not 0/8, loopback, multicast,
/// reserved or broadcast.
fn is_unicast(a: Ipv4Addr) -> bool {
    !matches!(a.octets()[0], 0 | 127 | 224..=255)
}

fn parse_u32(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse().ok()
}

/// `offset=` and `limit=` (both optional, `limit` at least 1).
fn parse_paging(query: Option<&str>) -> Result<(u32, Option<u32>), ApiError> {
    let mut offset = None;
    let mut limit = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "offset" => &mut offset,
            "limit" => &mut limit,
            _ => {
                return Err(ApiError::field(
                    Status::BadRequest,
                    "unknown query parameter",
                    k,
                ))
            }
        };
        let n = parse_u32(v)
            .filter(|&n| k != "limit" || n > 0)
            .ok_or_else(|| ApiError::field(Status::BadRequest, "expected a number", k))?;
        if slot.replace(n).is_some() {
            return Err(ApiError::field(
                Status::BadRequest,
                "duplicate query parameter",
                k,
            ));
        }
    }
    Ok((offset.unwrap_or(0), limit))
}

fn put_json<T: Serialize>(w: &mut SliceWriter<'_>, value: &T) {
    if !json::write_json(w, value) {
        // The caller answers 500.
        w.set_overflow();
    }
}

fn write_error(w: &mut SliceWriter<'_>, e: &ApiError) -> (Status, ExtraHeaders<'static>) {
    let body = ErrorBody {
        error: e.message,
        field: e.field.as_deref(),
    };
    if !json::write_json(w, &body) {
        w.truncate(0);
        let _ = w.push(br#"{"error":"internal error"}"#);
    }
    let extra = ExtraHeaders {
        allow: e.allow,
        www_authenticate: (e.status == Status::Unauthorized).then_some(auth::SCHEME),
    };
    (e.status, extra)
}

// ---------------------------------------------------------------------------
// A gateway for tests, fuzzing and pihctl's end-to-end test
// ---------------------------------------------------------------------------

/// An in-memory [`Gateway`] (feature `mock`, and in this crate's tests).
#[cfg(any(test, feature = "mock"))]
pub mod mock {
    use core::net::Ipv4Addr;
    use core::ops::RangeInclusive;

    use heapless::Vec;

    use super::{Gateway, RuleError, StatsSnapshot, VifStats};
    use crate::config::{Ipv4Cidr, Role};
    use crate::rules::{Proto, RuleSpec};

    /// Most rules the mock holds.
    pub const MOCK_RULES: usize = 4096;

    /// One installed rule.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Installed {
        pub spec: RuleSpec,
        pub port: u16,
        /// Flows "opened" under it (what removal reports).
        pub flows: usize,
    }

    /// Ports from `ports`, rules up to `capacity`, internal addresses from
    /// `internal`; `busy` ports are held by "dynamic mappings".
    #[derive(Clone, Debug)]
    pub struct MockGateway {
        pub internal: Ipv4Cidr,
        pub ports: RangeInclusive<u16>,
        pub capacity: usize,
        pub busy: Vec<(Proto, u16), 16>,
        pub installed: Vec<Installed, MOCK_RULES>,
        /// Every removal fails with this, if set.
        pub fail_remove: Option<RuleError>,
        /// Flows each new rule pretends to have.
        pub flows_per_rule: usize,
        pub inserts: u64,
        pub removes: u64,
    }

    impl Default for MockGateway {
        fn default() -> Self {
            Self::new()
        }
    }

    impl MockGateway {
        /// Internal network 192.168.252.1/24, ports 40000..=40999, 4096
        /// rules.
        pub fn new() -> Self {
            MockGateway {
                internal: Ipv4Cidr {
                    addr: Ipv4Addr::new(192, 168, 252, 1),
                    prefix_len: 24,
                },
                ports: 40000..=40999,
                capacity: MOCK_RULES,
                busy: Vec::new(),
                installed: Vec::new(),
                fail_remove: None,
                flows_per_rule: 0,
                inserts: 0,
                removes: 0,
            }
        }

        fn taken(&self, proto: Proto, port: u16) -> bool {
            self.busy.contains(&(proto, port))
                || self
                    .installed
                    .iter()
                    .any(|i| i.spec.proto == proto && i.port == port)
        }

        /// The rule on a port.
        pub fn get(&self, proto: Proto, port: u16) -> Option<&Installed> {
            self.installed
                .iter()
                .find(|i| i.spec.proto == proto && i.port == port)
        }
    }

    impl Gateway for MockGateway {
        fn insert_rule(
            &mut self,
            _now_ns: u64,
            rule: &RuleSpec,
            requested_port: Option<u16>,
        ) -> Result<u16, RuleError> {
            let net = self.internal;
            let a = rule.int_addr;
            if !net.contains(a) || a == net.addr || a == net.network() || a == net.broadcast() {
                return Err(RuleError::Unsupported);
            }
            if self.installed.len() >= self.capacity {
                return Err(RuleError::Full);
            }
            let port = match requested_port {
                Some(0) => return Err(RuleError::Unsupported),
                Some(p) if self.taken(rule.proto, p) => return Err(RuleError::PortBusy),
                Some(p) => p,
                None => self
                    .ports
                    .clone()
                    .find(|&p| p != 0 && !self.taken(rule.proto, p))
                    .ok_or(RuleError::NoPort)?,
            };
            self.installed
                .push(Installed {
                    spec: *rule,
                    port,
                    flows: self.flows_per_rule,
                })
                .map_err(|_| RuleError::Full)?;
            self.inserts = self.inserts.wrapping_add(1);
            Ok(port)
        }

        fn remove_rule(
            &mut self,
            _now_ns: u64,
            proto: Proto,
            ext_port: u16,
        ) -> Result<usize, RuleError> {
            if let Some(e) = self.fail_remove {
                return Err(e);
            }
            let i = self
                .installed
                .iter()
                .position(|i| i.spec.proto == proto && i.port == ext_port)
                .ok_or(RuleError::NotFound)?;
            let gone = self.installed.swap_remove(i);
            self.removes = self.removes.wrapping_add(1);
            Ok(gone.flows)
        }

        fn stats(&self, out: &mut StatsSnapshot) {
            for (devid, role) in Role::ALL.into_iter().enumerate() {
                let n = devid as u64;
                let _ = out.vifs.push(VifStats {
                    devid: devid as u32,
                    role,
                    rx_packets: n.wrapping_add(100),
                    rx_bytes: n.wrapping_add(10_000),
                    rx_drops: n,
                    tx_packets: n.wrapping_add(200),
                    tx_bytes: n.wrapping_add(20_000),
                    tx_drops: 0,
                });
            }
            out.nat.flows_active = self
                .installed
                .iter()
                .fold(0u64, |a, i| a.wrapping_add(i.flows as u64));
            out.nat.flows_capacity = 65536;
            out.nat.flows_created = self.inserts;
        }
    }
}

#[cfg(test)]
mod tests;
